"""Shared helpers for corvid's Python integration tests (run with /usr/bin/python3).

Generates the protobuf modules from proto/ into a temp dir with protoc, starts our
binaries on free loopback ports, and counts checks so each test file ends with the
runner's "N passed, N failed" line.

Every long-lived process a test starts (corvid-server, etcd, corvid-controlplane, a
load generator) goes through spawn(): it dies with the thread that started it
(PR_SET_PDEATHSIG, SIGKILL), is killed when the test exits with an exception, and on
SIGTERM, SIGINT or SIGHUP the test kills them all and exits at once (128 + signal).
"""
import atexit
import fnmatch
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("CORVID_BIN", os.path.join(ROOT, "build", "bin"))
# The committed fixtures (tests/data: stories260K, vocabularies; see the READMEs there).
DATA = os.path.abspath(os.environ.get("CORVID_DATA") or os.path.join(ROOT, "tests", "data"))
# The real models `make models` downloads.
MODELS = os.environ.get("CORVID_MODELS", os.path.expanduser("~/.cache/corvid/models"))
GEMMA = os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf")
QWEN = os.path.join(MODELS, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
TMP = tempfile.mkdtemp(prefix="corvid-it-")

_children = []


def spawn(argv, **kwargs):
    """subprocess.Popen for a process that must not outlive the test (see the top).
    setpriv sets the death signal and execs argv (same pid). Not preexec_fn: that makes
    Popen fork() a process whose gRPC threads hold locks, and a test hung in it."""
    proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--"] + list(argv), **kwargs)
    _children.append(proc)
    return proc


def kill_children():
    """SIGKILLs and reaps every spawn()ed process still running (SIGCONT first: a
    stopped one would not die before it is continued)."""
    for p in _children:
        if p.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    p.send_signal(sig)
                except OSError:
                    pass
    for p in _children:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    _children[:] = [p for p in _children if p.poll() is None]


def _on_signal(signum, frame):
    kill_children()
    print("%s: killed by signal %d; its processes are stopped" % (os.path.basename(sys.argv[0]), signum),
          flush=True)
    shutil.rmtree(TMP, ignore_errors=True)
    os._exit(128 + signum)


def _on_uncaught(kind, value, tb):
    # Before the interpreter waits for non-daemon threads, which may be blocked on a server.
    kill_children()
    _excepthook(kind, value, tb)


atexit.register(kill_children)
_excepthook = sys.excepthook
sys.excepthook = _on_uncaught
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def proto_modules():
    """Compiles proto/ with protoc --python_out and makes the modules importable."""
    out = os.path.join(TMP, "py")
    if not os.path.isdir(out):
        os.makedirs(out)
        proto = os.path.join(ROOT, "proto")
        subprocess.run(["protoc", "--python_out=" + out, "-I" + proto,
                        os.path.join(proto, "corvid/v1/inference.proto"),
                        os.path.join(proto, "corvid/v1/admin.proto")], check=True)
        # Generated as a top-level module: a package named grpc would shadow grpcio.
        health = os.path.join(proto, "grpc/health/v1")
        subprocess.run(["protoc", "--python_out=" + out, "-I" + health, os.path.join(health, "health.proto")],
                       check=True)
        sys.path.insert(0, out)
    from corvid.v1 import inference_pb2, admin_pb2  # noqa: F401
    import health_pb2  # noqa: F401
    return inference_pb2, admin_pb2, health_pb2


def have_model(path, what):
    """True when the real model `make models` fetches is at path; otherwise prints a
    visible SKIP line for what, naming the command that fetches it."""
    if os.path.exists(path):
        return True
    print("SKIP %s: %s not found (run `make models`)" % (what, path))
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """corvid-server on a free loopback port; stopped by PID."""

    def __init__(self, *args, ready_timeout=60, binary=None, host="127.0.0.1", port=None):
        self.port = port or free_port()
        self.addr = "%s:%d" % (host, self.port)
        self.log_path = os.path.join(TMP, "server-%s-%d.log" % (host, self.port))
        self.log = open(self.log_path, "wb")
        self.proc = spawn([binary or os.path.join(BIN, "corvid-server"), "--listen", self.addr] + list(args),
                          stdout=self.log, stderr=subprocess.STDOUT)
        # With a model, ready means the model is loaded; without, that gRPC listens.
        marker = '"model ready"' if "--model" in args else '"listening"'
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("corvid-server exited %d:\n%s" % (self.proc.returncode, self.output()))
            if marker in self.output():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("corvid-server not ready in %ds:\n%s" % (ready_timeout, self.output()))

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def sha256_file(path):
    """The hex sha256 of a file, as Admin.LoadModel and the etcd version keys want it."""
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expect_status(fn, code, *needles):
    """Calls fn, which must fail with gRPC status code and a message holding every needle;
    returns the RpcError."""
    import grpc
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        for n in needles:
            assert n in e.details(), (n, e.details())
        return e
    raise AssertionError("expected %s" % code)


class Admin:
    """A grpcio client of corvid.v1.Admin: each method is one unary call with a deadline."""

    def __init__(self, addr):
        import grpc
        self.grpc = grpc
        self.pb = proto_modules()[1]
        self.ch = grpc.insecure_channel(addr)

    def call(self, method, req, resp_type, timeout=60):
        m = self.ch.unary_unary("/corvid.v1.Admin/" + method, request_serializer=type(req).SerializeToString,
                                response_deserializer=resp_type.FromString)
        return m(req, timeout=timeout)

    def load(self, version, uri, sha="", wait=True, timeout=60):
        return self.call("LoadModel", self.pb.LoadModelRequest(version=version, uri=uri, sha256=sha, wait=wait),
                         self.pb.SlotStatus, timeout)

    def unload(self, version):
        return self.call("UnloadModel", self.pb.UnloadModelRequest(version=version, wait=True), self.pb.SlotStatus)

    def traffic(self, **weights):
        req = self.pb.SetTrafficRequest(weights=[self.pb.TrafficWeight(version=v, weight=w)
                                                 for v, w in weights.items()])
        return self.call("SetTraffic", req, self.pb.GetStatusResponse)

    def status(self, window=60):
        return self.call("GetStatus", self.pb.GetStatusRequest(window_seconds=window), self.pb.GetStatusResponse)

    def slots(self):
        return {s.version: s for s in self.status().slots}

    def slot(self, version):
        return self.slots()[version]

    def refused(self, version, uri, sha=""):
        """The RpcError of a load that must fail."""
        try:
            self.load(version, uri, sha)
        except self.grpc.RpcError as e:
            return e
        raise AssertionError("load of %s accepted" % uri)


class Checks:
    """Runs named check functions; prints one line each and the closing count.

    $CORVID_SKIP_CHECKS, comma-separated fnmatch globs, names checks to leave out (each
    printed as SKIP, counted neither way): `make tsan` skips the ones that time the
    server, which an instrumented build is too slow for."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skip = [g for g in os.environ.get("CORVID_SKIP_CHECKS", "").split(",") if g]

    def run(self, name, fn, *args):
        if any(fnmatch.fnmatchcase(name, g) for g in self.skip):
            print("SKIP %s ($CORVID_SKIP_CHECKS)" % name)
            sys.stdout.flush()
            return
        t0 = time.time()
        try:
            fn(*args)
        except Exception:  # a failed check must not stop the others
            self.failed += 1
            print("FAIL %s (%.2fs)" % (name, time.time() - t0))
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print("ok   %s (%.2fs)" % (name, time.time() - t0))
        sys.stdout.flush()

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)
