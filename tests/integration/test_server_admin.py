"""Model slots and the Admin API on a real corvid-server (built with CORVID_TESTING).

Two versions whose greedy outputs differ (stories260K F32 and its Q4_0 file, which
departs from F32 at generated token 23) are swapped ten times under load: bench-load
(our C client, concurrency 16) and a Python grpcio client that checks every stream's
tokens against the output of the version its final message names. Failed loads of
every kind must leave the serving version untouched."""
import json
import os
import shutil
import subprocess
import threading
import time

import grpc

from corvid_testlib import BIN, DATA, TMP, Admin, Checks, Server, proto_modules, spawn, sha256_file as sha256

pb, admin_pb, _ = proto_modules()
F32 = os.path.join(DATA, "models", "stories260K.gguf")
Q4 = os.path.join(DATA, "models", "stories260K-Q4_0-mixed.gguf")
TESTING_BIN = os.environ.get("CORVID_TESTING_BIN", os.path.join(os.path.dirname(BIN), "testing", "bin"))
PROMPT = "Once upon a time"
N = 40


def greedy(addr, prompt=PROMPT, n=N):
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        ids, final = [], None
        for m in gen(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=n, ignore_eos=True)),
                     timeout=60):
            if m.WhichOneof("kind") == "chunk":
                ids += list(m.chunk.token_ids)
            elif m.WhichOneof("kind") == "final":
                final = m.final
        return ids, final.model_version


def reference(path):
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", path, "-p", PROMPT, "-n", str(N), "--temp", "0",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["tokens"]


def swaps_under_load(srv, adm, report):
    refs = {"v1": reference(F32), "v2": reference(Q4)}
    assert refs["v1"] != refs["v2"], "the two versions must be told apart by their tokens"
    st = adm.load("v2", Q4, sha256(Q4))
    assert st.state == admin_pb.SLOT_STATE_READY, st
    load = spawn([os.path.join(BIN, "bench-load"), "--addr", srv.addr, "--concurrency", "16",
                  "--duration", "8", "--max-tokens", "24", "--ignore-eos"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, bad, seen = threading.Event(), [], {"v1": 0, "v2": 0}

    def checker():
        while not stop.is_set():
            try:
                ids, version = greedy(srv.addr)
                seen[version] += 1
                if ids != refs[version]:
                    bad.append((version, ids))
            except Exception as e:  # any failure is a failed request
                bad.append(repr(e))

    checkers = [threading.Thread(target=checker) for _ in range(2)]
    for t in checkers:
        t.start()
    rpc_ms = []
    for i in range(10):
        time.sleep(0.6)
        t0 = time.time()
        adm.traffic(**({"v1": 0, "v2": 100} if i % 2 == 0 else {"v1": 100, "v2": 0}))
        rpc_ms.append((time.time() - t0) * 1e3)
    out, err = load.communicate(timeout=60)
    stop.set()
    for t in checkers:
        t.join(60)
    res = json.loads(out)
    report.update(requests=res["requests_ok"] + res["requests_failed"], failed=res["requests_failed"],
                  checked=sum(seen.values()), swap_rpc_ms_median=sorted(rpc_ms)[len(rpc_ms) // 2])
    print("swap figures:", json.dumps(report))
    assert res["requests_failed"] == 0, res
    assert not bad, bad[:3]
    assert seen["v1"] > 0 and seen["v2"] > 0, seen


def failed_loads_change_nothing(srv, adm):
    corrupt = os.path.join(TMP, "corrupt.gguf")
    with open(F32, "rb") as f:
        data = f.read()
    with open(corrupt, "wb") as f:
        f.write(data[: len(data) // 3])
    before = adm.status()
    # corrupt.gguf lies in TMP, one of the server's model_dirs: a GGUF-looking file gets
    # the reader's precise error there.
    cases = [("wrong-sha", F32, "0" * 64, "sha256 is"),
             ("corrupt", corrupt, "", "corrupt.gguf"),
             ("missing", "/nonexistent/model.gguf", "", "outside model_dirs"),
             ("unreachable", "http://127.0.0.1:9/model.gguf", sha256(F32), "download failed: cannot connect")]
    errors = []

    def traffic_meanwhile():
        for _ in range(6):
            try:
                greedy(srv.addr, n=8)
            except Exception as e:  # a failed load must not fail a request
                errors.append(repr(e))

    t = threading.Thread(target=traffic_meanwhile)
    t.start()
    for version, uri, sha, needle in cases:
        st = adm.load(version, uri, sha)
        assert st.state == admin_pb.SLOT_STATE_FAILED, (version, st)
        assert needle in st.message, (version, st.message)
        assert "HTTP" not in st.message and "127.0.0.1:9" not in st.message, st.message
    t.join(60)
    assert not errors, errors
    after = {s.version: s for s in adm.status().slots}
    for s in before.slots:
        assert after[s.version].state == s.state and after[s.version].weight == s.weight, (s, after[s.version])
    # A failed version cannot take traffic, and unloading forgets it.
    try:
        adm.traffic(v1=50, corrupt=50)
        raise AssertionError("traffic to a failed version accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "failed" in e.details(), e.details()
    for version, _, _, _ in cases:
        adm.unload(version)
    assert sorted(s.version for s in adm.status().slots) == sorted(s.version for s in before.slots)


class Files(threading.Thread):
    """A local HTTP server for model downloads; records the Range headers it sees."""

    def __init__(self, root, delay=0.0):
        import http.server
        import functools
        ranges = self.ranges = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_head(self):
                time.sleep(delay)
                ranges.append(self.headers.get("Range"))
                rng = self.headers.get("Range")
                if not rng:
                    return super().send_head()
                start = int(rng.split("=")[1].split("-")[0])
                path = self.translate_path(self.path)
                f = open(path, "rb")
                size = os.fstat(f.fileno()).st_size
                f.seek(start)
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                return f

            def copyfile(self, src, dst):
                try:
                    super().copyfile(src, dst)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the size-limit test hangs up on purpose

            def log_message(self, *a):
                pass

        super().__init__(daemon=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=root))
        self.url = "http://127.0.0.1:%d/" % self.httpd.server_address[1]

    def run(self):
        self.httpd.serve_forever()


def downloads_resume_and_limit(srv, adm, cache):
    root = os.path.join(TMP, "www")
    os.makedirs(root, exist_ok=True)
    shutil.copy(Q4, os.path.join(root, "q4.gguf"))
    files = Files(root)
    files.start()
    sha = sha256(Q4)
    # Half a file left by an interrupted download: only the rest is fetched.
    with open(Q4, "rb") as f, open(os.path.join(cache, sha + ".gguf.part"), "wb") as part:
        part.write(f.read()[:100000])
    st = adm.load("dl", files.url + "q4.gguf", sha)
    assert st.state == admin_pb.SLOT_STATE_READY, st.message
    assert files.ranges == ["bytes=100000-"], files.ranges
    assert sha256(os.path.join(cache, sha + ".gguf")) == sha
    adm.unload("dl")
    try:
        adm.load("nosha", files.url + "q4.gguf")
        raise AssertionError("a download without sha256 was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in e.details(), e.details()
    files.httpd.shutdown()


def download_size_limit():
    cache = os.path.join(TMP, "cache-small")
    srv = Server("--model", F32, "--model-cache-dir", cache, "--max-download-mb", "0.5",
                 "--model-sources", "http://127.0.0.1:")
    root = os.path.join(TMP, "www2")
    os.makedirs(root, exist_ok=True)
    shutil.copy(F32, os.path.join(root, "f32.gguf"))
    shutil.copy(Q4, os.path.join(root, "q4.gguf"))
    files = Files(root)
    files.start()
    try:
        adm = Admin(srv.addr)
        st = adm.load("big", files.url + "f32.gguf", sha256(F32))
        assert st.state == admin_pb.SLOT_STATE_FAILED and "limit of 524288 bytes" in st.message, st.message
        # A download cut by the cap leaves nothing to resume.
        assert os.listdir(cache) == [], os.listdir(cache)
        st = adm.load("small", files.url + "q4.gguf", sha256(Q4))
        assert st.state == admin_pb.SLOT_STATE_READY, st.message
    finally:
        files.httpd.shutdown()
        srv.stop()


def serialized_and_unload_drains(srv, adm, cache):
    # A load in progress (a download the server answers after 2 s) makes another
    # operation wait its turn with a clear answer.
    root = os.path.join(TMP, "www-slow")
    os.makedirs(root, exist_ok=True)
    shutil.copy(F32, os.path.join(root, "f32.gguf"))
    slow = Files(root, delay=2.0)
    slow.start()
    adm.load("v3", slow.url + "f32.gguf", sha256(F32), wait=False)
    try:
        adm.load("v4", F32, wait=False)
        raise AssertionError("second operation accepted while one runs")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ABORTED and "v3" in e.details(), e.details()
    deadline = time.time() + 30
    while adm.slot("v3").state == admin_pb.SLOT_STATE_LOADING and time.time() < deadline:
        time.sleep(0.05)
    assert adm.slot("v3").state == admin_pb.SLOT_STATE_READY, adm.slot("v3").message
    slow.httpd.shutdown()
    # Unload a version with a stream in flight: the stream finishes on it.
    adm.traffic(v3=100)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=greedy(srv.addr, n=100)))
    t.start()
    time.sleep(0.05)
    adm.traffic(v1=100)
    st = adm.unload("v3")
    t.join(60)
    assert st.message == "unloaded", st
    assert out["r"][1] == "v3" and len(out["r"][0]) == 100, out


def window_counts_and_faults(srv, adm):
    adm.traffic(v1=100)
    adm.call("SetFaultInjection", admin_pb.SetFaultInjectionRequest(version="v1", error_rate=1.0), admin_pb.SlotStatus)
    try:
        greedy(srv.addr, n=4)
        raise AssertionError("injected fault did not fail the request")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INTERNAL and "injected" in e.details()
    adm.call("SetFaultInjection", admin_pb.SetFaultInjectionRequest(version="v1", error_rate=0.0), admin_pb.SlotStatus)
    greedy(srv.addr, n=4)
    s = adm.slot("v1")
    codes = {c.code: c.count for c in s.requests_window}
    assert codes.get(13, 0) >= 1 and codes.get(0, 0) >= 1, codes
    assert s.ttft_seconds.count >= 1 and len(s.ttft_seconds.counts) == len(s.ttft_seconds.bounds) + 1
    assert s.ttft_seconds.counts[-1] == s.ttft_seconds.count


def corvidctl_admin(srv, adm):
    ctl = os.path.join(BIN, "corvidctl")

    def run(*args):
        r = subprocess.run([ctl, "admin"] + list(args) + ["-a", srv.addr], capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = run("load", "--version", "v5", "--uri", Q4, "--sha256", sha256(Q4), "--wait")
    assert rc == 0 and "v5: ready" in out, (rc, out, err)
    rc, out, err = run("traffic", "v1=90", "v5=10")
    assert rc == 0 and "v5" in out, (rc, out, err)
    rc, out, err = run("status", "--json")
    assert rc == 0, err
    slots = {s["version"]: s for s in json.loads(out)["slots"]}
    assert slots["v1"]["weight"] == 90 and slots["v5"]["weight"] == 10 and slots["v5"]["state"] == "ready", slots
    assert {s["state"] for s in slots.values()} <= {"loading", "ready", "failed", "draining"}
    rc, out, err = run("load", "--version", "v6", "--uri", "/nonexistent.gguf", "--wait")
    assert rc == 1 and "v6: failed" in out, (rc, out, err)
    rc, out, err = run("unload", "--version", "v5", "--wait")
    assert rc == 0 and "unloaded" in out, (rc, out, err)
    rc, out, err = run("unload", "--version", "v6")
    rc, out, err = run("traffic", "nope=1")
    assert rc == 1 and "NOT_FOUND" in err, (rc, out, err)
    adm.traffic(v1=100)


def main():
    c = Checks()
    report = {}
    cache = os.path.join(TMP, "cache")
    os.makedirs(cache)
    srv = Server("--model", F32, "--model-version", "v1", "--max-running", "24", "--max-waiting", "64",
                 "--model-cache-dir", cache, "--model-dirs", os.path.dirname(F32) + "," + TMP,
                 "--model-sources", "http://127.0.0.1:", binary=os.path.join(TESTING_BIN, "corvid-server"))
    adm = Admin(srv.addr)
    try:
        c.run("ten swaps under load: zero failures, tokens match the named version", swaps_under_load, srv, adm,
              report)
        c.run("failed loads (sha256, corrupt, missing, unreachable) change nothing", failed_loads_change_nothing,
              srv, adm)
        c.run("downloads: sha256 required, resumed from a partial file", downloads_resume_and_limit, srv, adm, cache)
        c.run("operations are serialized; unload drains in-flight streams", serialized_and_unload_drains, srv, adm,
              cache)
        c.run("window counters and fault injection", window_counts_and_faults, srv, adm)
        c.run("corvidctl admin load/traffic/status/unload", corvidctl_admin, srv, adm)
    finally:
        srv.terminate()
        srv.wait(30)
        srv.stop()
    c.run("downloads over the size limit fail the load", download_size_limit)
    shutil.rmtree(TMP, ignore_errors=True)
    c.finish()


main()
