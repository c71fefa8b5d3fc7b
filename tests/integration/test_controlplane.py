"""corvid-controlplane end to end: etcd, two corvid-servers (CORVID_TESTING build), two
control planes (leader election) and bench-load against both servers throughout.

Scenarios run one after the other on the same fleet, each from the state the previous
one left: (a) a good version rolls out blue-green, (b) a version whose sha256 is wrong
is rolled back, (c) a canary with 20% injected errors is rolled back by the analysis,
(d) etcd is restarted mid-rollout, (e) the leader is killed mid-rollout, (f) a server
is killed mid-rollout. Each prints its timings; the last line gathers them."""
import json
import os
import shutil
import subprocess
import threading
import time

import grpc

import corvid_testlib
from corvid_testlib import BIN, DATA, TMP, Checks, Server, proto_modules, spawn, sha256_file as sha256
from etcd_testlib import Etcd, b64, unb64
from otlp_testlib import Receiver

_, admin_pb, _ = proto_modules()
F32 = os.path.join(DATA, "models", "stories260K.gguf")
Q8 = os.path.join(DATA, "models", "stories260K-Q8_0-mixed.gguf")
Q4 = os.path.join(DATA, "models", "stories260K-Q4_0-mixed.gguf")
TESTING_BIN = os.environ.get("CORVID_TESTING_BIN", os.path.join(os.path.dirname(BIN), "testing", "bin"))
CP = os.path.join(BIN, "corvid-controlplane")
POLL_MS, WINDOW_MS, TTL_S, UNMEASURABLE_S = 250, 1500, 3, 4
MODEL = "stories"


class Load(threading.Thread):
    """bench-load against one server in back-to-back 2 s runs until stopped."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr, self.stop_ev = addr, threading.Event()
        self.ok = self.failed = 0
        self.by_status = {}
        self.runs = []  # (start, end, failed) of every finished run

    def run(self):
        while not self.stop_ev.is_set():
            t0 = time.time()
            r = subprocess.run([os.path.join(BIN, "bench-load"), "--addr", self.addr, "--concurrency", "3",
                                "--duration", "2", "--max-tokens", "8", "--ignore-eos"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or not r.stdout.strip():
                if self.stop_ev.is_set():
                    break
                self.failed += 1  # the whole run failed (its server is down)
                self.runs.append((t0, time.time(), 1))
                time.sleep(0.2)
                continue
            res = json.loads(r.stdout)
            self.ok += res["requests_ok"]
            self.failed += res["requests_failed"]
            self.runs.append((t0, time.time(), res["requests_failed"]))
            for k, v in res.get("by_status", {}).items():
                self.by_status[k] = self.by_status.get(k, 0) + v

    def counts(self):
        return self.ok, self.failed

    def finish(self):
        self.stop_ev.set()
        self.join(30)


class Fleet:
    def __init__(self):
        self.etcd = Etcd()
        # Traces: the control planes record every rollout; the servers only what comes with
        # a sampled traceparent (the control plane's Admin calls), not bench-load's calls.
        self.otlp = Receiver()
        cache = os.path.join(TMP, "cache")
        self.servers = [Server("--model", F32, "--model-version", "v1", "--model-cache-dir", cache + str(i),
                               "--max-running", "16", "--max-waiting", "64",
                               "--otlp-endpoint", self.otlp.url, "--trace-sample-ratio", "0",
                               binary=os.path.join(TESTING_BIN, "corvid-server")) for i in range(2)]
        self.cps = {}
        for name in ("cp-a", "cp-b"):
            self.start_cp(name)
        self.loads = [Load(s.addr) for s in self.servers]
        for ld in self.loads:
            ld.start()

    def start_cp(self, name):
        cfg = {"etcd": self.etcd.url, "id": name, "servers": [s.addr for s in self.servers],
               "poll_ms": POLL_MS, "election_ttl_s": TTL_S, "admin_timeout_ms": 1000,
               "stage_deadline_s": 30, "shift_deadline_s": 10, "observe_deadline_s": 15,
               "unmeasurable_deadline_s": UNMEASURABLE_S, "keep_previous_s": 1,
               "smoke_prompt": "Once upon a time", "otlp_endpoint": self.otlp.url,
               "defaults": {"window_ms": WINDOW_MS, "min_requests": 10, "failure_limit": 2,
                            "max_error_rate": 0.05}}
        path = os.path.join(TMP, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        log = open(os.path.join(TMP, name + ".log"), "ab")
        self.cps[name] = spawn([CP, "run", "--config", path], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def cli(self, *args):
        r = subprocess.run([CP] + list(args) + ["--etcd", self.etcd.url], capture_output=True, text=True,
                           timeout=30)
        return r.returncode, r.stdout, r.stderr

    def get(self, key):
        st, body = self.etcd.call("/v3/kv/range", {"key": b64("/corvid/" + key)})
        kvs = body.get("kvs") if isinstance(body, dict) else None
        return unb64(kvs[0]["value"]) if kvs else None

    def status(self):
        text = self.get("models/%s/status" % MODEL)
        return json.loads(text) if text else {}

    def wait_phase(self, phases, timeout, since_id=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status()
            if st.get("phase") in phases and (since_id is None or st.get("id") == since_id):
                return st
            time.sleep(0.05)
        raise AssertionError("phase %s not reached in %ss; status %s" % (phases, timeout, self.status()))

    def start(self, version, *opts):
        rc, out, err = self.cli("rollout", "start", MODEL, version, *opts)
        assert rc == 0, (out, err)
        return out.split()[1]  # "rollout ID of ..."

    def admin(self, i, method, req, resp):
        with grpc.insecure_channel(self.servers[i].addr) as ch:
            m = ch.unary_unary("/corvid.v1.Admin/" + method, request_serializer=type(req).SerializeToString,
                               response_deserializer=resp.FromString)
            return m(req, timeout=10)

    def slots(self, i):
        st = self.admin(i, "GetStatus", admin_pb.GetStatusRequest(window_seconds=1), admin_pb.GetStatusResponse)
        return {s.version: s for s in st.slots}

    def traffic(self, i):
        return {v: s.weight for v, s in self.slots(i).items() if s.weight}

    def failed_between(self, t0, t1):
        """Failed requests of the load runs overlapping [t0, t1], once they have ended."""
        live = [ld for ld in self.loads if ld.is_alive()]
        deadline = time.time() + 10
        while time.time() < deadline and any(not ld.runs or ld.runs[-1][1] < t1 for ld in live):
            time.sleep(0.05)
        return sum(f for ld in self.loads for (a, b, f) in ld.runs if a <= t1 and b >= t0)

    def leader(self):
        return self.get("controlplane/leader")

    def close(self):
        for ld in self.loads:
            ld.finish()
        for p in self.cps.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for s in self.servers:
            s.stop()
        self.etcd.destroy()
        self.otlp.close()


def register(fl, version, path, sha=None):
    rc, out, err = fl.cli("version", "add", MODEL, version, "--uri", path, "--sha256", sha or sha256(path))
    assert rc == 0, (out, err)


def bluegreen_good(fl, report):
    register(fl, "v2", Q8)
    t0 = time.time()
    rid = fl.start("v2", "--strategy", "bluegreen")
    report["a_rollout_id"] = rid
    st = fl.wait_phase(["promoted"], 30, rid)
    report["a_rollout_to_100_s"] = round(time.time() - t0, 2)
    assert st["active"] == "v2" and st["traffic"] == 100, st
    for i in range(2):
        assert fl.traffic(i) == {"v2": 100}, fl.traffic(i)
    # keep_previous (1 s) then the old version is unloaded everywhere.
    deadline = time.time() + 10
    while time.time() < deadline and any("v1" in fl.slots(i) for i in range(2)):
        time.sleep(0.1)
    assert all("v1" not in fl.slots(i) for i in range(2)), [list(fl.slots(i)) for i in range(2)]
    report["a_failed_requests"] = fl.failed_between(t0, time.time())
    assert report["a_failed_requests"] == 0, [ld.by_status for ld in fl.loads]
    rc, out, err = fl.cli("rollout", "status", MODEL)
    assert rc == 0 and "promoted" in out and "v2" in out, (out, err)


def rollout_traced(fl, report):
    """(a) as one trace: the root span from staging to promotion, each phase a span under
    it, and the servers' Admin spans (the calls that carried the rollout out) under it too."""
    rid = report["a_rollout_id"]
    roots = fl.otlp.wait(lambda s: s["name"] == "rollout " + MODEL and s["attrs"].get("corvid.rollout.id") == rid)
    assert len(roots) == 1, roots
    root = roots[0]
    assert root["service"] == "corvid-controlplane" and "parentSpanId" not in root, root
    assert root["attrs"]["corvid.rollout.outcome"] == "promoted" and root["attrs"]["corvid.rollout.candidate"] == "v2", \
        root["attrs"]
    spans = fl.otlp.trace(root["traceId"])
    phases = sorted((int(s["startTimeUnixNano"]), s["name"]) for s in spans if s["name"].startswith("rollout."))
    assert [n for _, n in phases][:1] == ["rollout.staging"] and len(phases) >= 2, phases
    admin = {s["name"] for s in spans if s["service"] == "corvid-server"}
    assert {"corvid.v1.Admin/LoadModel", "corvid.v1.Admin/SetTraffic"} <= admin, admin
    lo, hi = int(root["startTimeUnixNano"]), int(root["endTimeUnixNano"])
    for s in spans:
        if s is root:
            continue
        assert s.get("parentSpanId") == root["spanId"], s
        # The servers' Admin spans come after; the unload after keep_previous may follow it.
        if s["service"] == "corvid-controlplane":
            assert lo <= int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"]) <= hi, (s, lo, hi)
    print("     rollout %s: trace %s, %d spans (%s; Admin on servers: %s)" % (
        rid, root["traceId"], len(spans), ", ".join(n for _, n in phases), ", ".join(sorted(admin))))


def wrong_sha_rolled_back(fl, report):
    register(fl, "v3", F32, "0" * 64)
    t0 = time.time()
    rid = fl.start("v3")
    st = fl.wait_phase(["rolled_back"], 30, rid)
    report["b_rollback_s"] = round(time.time() - t0, 2)
    assert "sha256" in st["message"] and "v3" in st["message"], st["message"]
    assert st["active"] == "v2", st
    for i in range(2):
        assert fl.traffic(i) == {"v2": 100}, fl.traffic(i)
    version = json.loads(fl.get("models/%s/versions/v3" % MODEL))
    assert "sha256" in version.get("failed", ""), version
    rc, out, err = fl.cli("rollout", "status", MODEL, "--json")
    assert rc == 0 and json.loads(out)["phase"] == "rolled_back", (out, err)
    report["b_failed_requests"] = fl.failed_between(t0, time.time())
    assert report["b_failed_requests"] == 0, [ld.by_status for ld in fl.loads]


def injected_errors_rolled_back(fl, report):
    register(fl, "v4", Q4)
    rid = fl.start("v4", "--steps", "50,100", "--max-error-rate", "0.05")
    fl.wait_phase(["shifting", "observing"], 30, rid)
    for i in range(2):
        fl.admin(i, "SetFaultInjection", admin_pb.SetFaultInjectionRequest(version="v4", error_rate=0.2),
                 admin_pb.SlotStatus)
    t_breach = time.time()
    st = fl.wait_phase(["rolled_back"], 30, rid)
    restored = time.time()
    report["c_rollback_after_breach_s"] = round(restored - t_breach, 2)
    report["c_failed_requests_during_breach"] = fl.failed_between(t_breach, restored)
    assert "error rate" in st["message"], st["message"]
    # window + one poll interval, plus the second consecutive judgement and the
    # 50 ms this test polls at.
    limit = (WINDOW_MS + 2 * POLL_MS + 300) / 1e3
    assert restored - t_breach <= limit, (restored - t_breach, limit)
    for i in range(2):
        assert fl.traffic(i) == {"v2": 100}, fl.traffic(i)


def etcd_restart_mid_rollout(fl, report):
    register(fl, "v5", F32)
    t0 = time.time()
    rid = fl.start("v5", "--steps", "50,100")
    fl.wait_phase(["observing"], 30, rid)
    fl.etcd.kill()
    time.sleep(1.0)
    fl.etcd.launch()
    st = fl.wait_phase(["promoted"], 40, rid)
    report["d_rollout_with_etcd_restart_s"] = round(time.time() - t0, 2)
    assert st["active"] == "v5", st
    for i in range(2):
        assert fl.traffic(i) == {"v5": 100}, fl.traffic(i)


def leader_killed_mid_rollout(fl, report):
    register(fl, "v6", Q8)
    t0 = time.time()
    rid = fl.start("v6", "--steps", "50,100")
    fl.wait_phase(["observing"], 30, rid)
    leader = fl.leader()
    assert leader in fl.cps, leader
    fl.cps[leader].kill()
    fl.cps[leader].wait()
    t_kill = time.time()
    st = fl.wait_phase(["promoted"], 40, rid)
    report["e_leader_killed_to_promoted_s"] = round(time.time() - t_kill, 2)
    report["e_rollout_s"] = round(time.time() - t0, 2)
    assert fl.leader() not in (None, leader), fl.leader()
    assert st["active"] == "v6", st
    fl.start_cp(leader)  # back as a follower for what follows


def server_killed_mid_rollout(fl, report):
    register(fl, "v7", F32)
    rid = fl.start("v7", "--steps", "50,100", "--window", "6s")
    fl.wait_phase(["observing"], 30, rid)
    fl.loads[1].finish()
    fl.servers[1].stop()
    t_kill = time.time()
    held = fl.wait_phase(["observing"], 5, rid)
    st = fl.wait_phase(["rolled_back"], UNMEASURABLE_S + 10, rid)
    report["f_abort_after_kill_s"] = round(time.time() - t_kill, 2)
    assert "unreachable" in st["message"] and fl.servers[1].addr in st["message"], st["message"]
    assert time.time() - t_kill >= UNMEASURABLE_S - 0.5, "aborted before the deadline"
    assert held["phase"] == "observing"
    assert fl.traffic(0) == {"v6": 100}, fl.traffic(0)
    deadline = time.time() + 5
    while time.time() < deadline and "v7" in fl.slots(0):
        time.sleep(0.1)
    assert "v7" not in fl.slots(0), list(fl.slots(0))


def server_rejoins(fl, report):
    # The killed server comes back on its address with only v1: the leader loads the
    # active version there and gives it the traffic.
    addr = fl.servers[1].addr
    pick = corvid_testlib.free_port
    corvid_testlib.free_port = lambda: int(addr.rsplit(":", 1)[1])
    try:
        fl.servers[1] = Server("--model", F32, "--model-version", "v1", "--model-cache-dir",
                               os.path.join(TMP, "cache-rejoin"), binary=os.path.join(TESTING_BIN, "corvid-server"))
    finally:
        corvid_testlib.free_port = pick
    t0 = time.time()
    deadline = t0 + 20
    while time.time() < deadline and fl.traffic(1) != {"v6": 100}:
        time.sleep(0.05)
    report["h_rejoin_to_active_s"] = round(time.time() - t0, 2)
    assert fl.traffic(1) == {"v6": 100}, fl.traffic(1)
    assert fl.status()["phase"] == "rolled_back"


def wait_traffic(fl, i, want, timeout=5):
    """The leader writes a decision to etcd before it reaches the servers: wait for them."""
    deadline = time.time() + timeout
    while time.time() < deadline and fl.traffic(i) != want:
        time.sleep(0.05)
    got = fl.traffic(i)
    assert got == want, (i, got, want)


def operator_commands(fl, report):
    register(fl, "v8", Q8)
    rid = fl.start("v8", "--steps", "10,50,100", "--window", "30s")
    fl.wait_phase(["observing"], 30, rid)
    rc, out, err = fl.cli("rollout", "pause", MODEL)
    assert rc == 0, err
    st = fl.wait_phase(["paused"], 5, rid)
    assert st["traffic"] == 10, st
    wait_traffic(fl, 0, {"v6": 90, "v8": 10})
    rc, out, err = fl.cli("rollout", "resume", MODEL)
    assert rc == 0, err
    fl.wait_phase(["observing"], 5, rid)
    t0 = time.time()
    rc, out, err = fl.cli("rollout", "promote", MODEL)
    assert rc == 0, err
    st = fl.wait_phase(["promoted"], 5, rid)
    report["g_promote_command_s"] = round(time.time() - t0, 2)
    assert "operator" in st["message"] and st["active"] == "v8", st
    for i in range(2):
        wait_traffic(fl, i, {"v8": 100})
    register(fl, "v9", F32)
    rid = fl.start("v9", "--steps", "10,100", "--window", "30s")
    fl.wait_phase(["observing"], 30, rid)
    rc, out, err = fl.cli("rollout", "abort", MODEL)
    assert rc == 0, err
    st = fl.wait_phase(["rolled_back"], 5, rid)
    assert "aborted by the operator" in st["message"], st
    for i in range(2):
        wait_traffic(fl, i, {"v8": 100})
    rc, out, err = fl.cli("rollout", "start", MODEL, "nope")
    assert rc == 1 and "not registered" in err, (rc, err)


def main():
    c = Checks()
    report = {}
    fl = Fleet()
    try:
        c.run("(a) blue-green: good version to 100%, old unloaded, zero failed requests", bluegreen_good, fl,
              report)
        c.run("(a) traced: one trace, phases and the servers' Admin calls under its root", rollout_traced, fl, report)
        c.run("(b) wrong sha256: rolled back, status says why, zero failed requests", wrong_sha_rolled_back,
              fl, report)
        c.run("(c) canary with 20% injected errors: rolled back within window + poll", injected_errors_rolled_back,
              fl, report)
        c.run("(d) etcd restarted mid-rollout: completes", etcd_restart_mid_rollout, fl, report)
        c.run("(e) leader killed mid-rollout: the other resumes and completes", leader_killed_mid_rollout, fl,
              report)
        c.run("(f) server killed mid-rollout: holds, then rolls back at the deadline", server_killed_mid_rollout,
              fl, report)
        c.run("a server that rejoins is brought to the active version", server_rejoins, fl, report)
        c.run("pause, resume, promote and abort from the CLI", operator_commands, fl, report)
    finally:
        fl.close()
        for name in ("cp-a", "cp-b"):
            path = os.path.join(TMP, name + ".log")
            if c.failed and os.path.exists(path):
                print("--- %s log (tail)" % name)
                with open(path) as f:
                    print("".join(f.readlines()[-30:]))
    print("controlplane timings:", json.dumps(report, sort_keys=True))
    if not c.failed:
        shutil.rmtree(TMP, ignore_errors=True)
    c.finish()


main()
