"""corvid-controlplane's HTTP endpoint against a real etcd and a real corvid-server:
/healthz, /readyz (ready once etcd answered; not while etcd is stopped) and /metrics
(leader, fleet, corvid_rollout_phase following a rollout phase by phase, the rollout
counters, etcd errors), on the leader and on a follower."""
import os
import time

from corvid_testlib import DATA, TMP, Checks, Server, sha256_file as sha256
from cp_testlib import ControlPlane, cli
from etcd_testlib import Etcd

F32 = os.path.join(DATA, "models", "stories260K.gguf")
Q8 = os.path.join(DATA, "models", "stories260K-Q8_0-mixed.gguf")
MODEL = "stories"
PHASES = ["none", "staging", "shifting", "observing", "promoted", "rolling_back", "rolled_back", "paused", "failed"]


class World:
    def __init__(self):
        self.etcd = Etcd()
        self.server = Server("--model", F32, "--model-version", "v1", "--model-cache-dir", os.path.join(TMP, "cache"))
        self.cfg = {"etcd": self.etcd.url, "servers": [self.server.addr], "poll_ms": 200, "election_ttl_s": 3,
                    "admin_timeout_ms": 1000, "stage_deadline_s": 30, "keep_previous_s": 1,
                    "smoke_prompt": "Once upon a time"}
        self.leader = ControlPlane("cp-a", self.cfg)
        self.follower = None

    def close(self):
        for cp in (self.leader, self.follower):
            if cp:
                cp.stop()
        self.server.stop()
        self.etcd.destroy()


def current_phase(cp):
    """The phase whose sample is 1 for MODEL; checks the others are 0."""
    m = cp.metrics()
    ones = [p for p in PHASES if m.get(("corvid_rollout_phase", (("model", MODEL), ("phase", p)))) == 1]
    zeros = [p for p in PHASES if m.get(("corvid_rollout_phase", (("model", MODEL), ("phase", p)))) == 0]
    if not ones and not zeros:
        return None  # no rollout key yet
    assert len(ones) == 1 and len(zeros) == len(PHASES) - 1, (ones, zeros)
    return ones[0]


def leader_ready(w):
    cp = w.leader
    assert cp.http("/healthz") == (200, "ok\n")
    cp.wait(lambda: cp.http("/readyz")[0] == 200, 10, "/readyz 200")
    cp.wait(lambda: cp.value("corvid_controlplane_leader") == 1, 10, "leadership")
    cp.wait(lambda: cp.value("corvid_controlplane_servers_healthy") == 1, 10, "one healthy server")
    assert cp.value("corvid_controlplane_servers_discovered") == 1
    assert cp.http("/nope")[0] == 404
    status, text = cp.http("/metrics")
    assert "# TYPE corvid_rollout_phase gauge" in text and "# TYPE corvid_controlplane_etcd_errors_total counter" in text
    assert current_phase(cp) is None  # no model has a rollout yet


def watch_phases(cp, until, timeout, before=None):
    """Scrapes every 30 ms; returns the phases seen, in order, until one in `until`,
    from the first that differs from `before` (the last rollout's end)."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = current_phase(cp)
        if p and (seen[-1] != p if seen else p != before):
            seen.append(p)
        if seen and seen[-1] in until:
            return seen
        time.sleep(0.03)
    raise AssertionError("phases %s, never %s; log:\n%s" % (seen, until, cp.log()[-3000:]))


def rollout_moves_phase(w):
    cp = w.leader
    cli(w.etcd.url, "version", "add", MODEL, "v2", "--uri", Q8, "--sha256", sha256(Q8))
    cli(w.etcd.url, "rollout", "start", MODEL, "v2", "--strategy", "bluegreen", "--min-requests", "0",
        "--window", "1500ms")
    seen = watch_phases(cp, ["promoted", "rolled_back", "failed"], 60)
    print("  phases seen on /metrics: %s" % " -> ".join(seen))
    assert seen[-1] == "promoted", seen
    assert [p for p in seen if p in ("staging", "shifting", "observing")], seen
    assert "observing" in seen, seen  # lasts the 1.5 s window: scraped for sure
    assert cp.value("corvid_controlplane_rollouts_started_total", model=MODEL) == 1
    assert cp.value("corvid_controlplane_rollouts_completed_total", model=MODEL) == 1
    assert cp.value("corvid_controlplane_rollouts_rolled_back_total", model=MODEL) == 0
    # A version whose digest is wrong: staged, refused by the server, rolled back.
    cli(w.etcd.url, "version", "add", MODEL, "v3", "--uri", F32, "--sha256", "0" * 64)
    cli(w.etcd.url, "rollout", "start", MODEL, "v3", "--strategy", "bluegreen")
    seen = watch_phases(cp, ["rolled_back", "promoted", "failed"], 60, before="promoted")
    print("  phases seen on /metrics: %s" % " -> ".join(seen))
    assert seen[-1] == "rolled_back", seen
    assert cp.value("corvid_controlplane_rollouts_started_total", model=MODEL) == 2
    assert cp.value("corvid_controlplane_rollouts_completed_total", model=MODEL) == 1
    assert cp.value("corvid_controlplane_rollouts_rolled_back_total", model=MODEL) == 1
    assert cp.value("corvid_controlplane_server_errors_total", code="UNAVAILABLE") is None, cp.metrics()


def follower_reports_phase(w):
    w.follower = ControlPlane("cp-b", w.cfg)
    f = w.follower
    f.wait(lambda: f.http("/readyz")[0] == 200, 10, "follower /readyz 200")
    f.wait(lambda: current_phase(f) == "rolled_back", 10, "the follower reading the phase")
    assert f.value("corvid_controlplane_leader") == 0
    assert w.leader.value("corvid_controlplane_leader") == 1
    assert f.value("corvid_controlplane_servers_discovered") == 1
    assert f.value("corvid_controlplane_servers_healthy") is None  # it probes nothing
    assert f.value("corvid_controlplane_rollouts_started_total", model=MODEL) == 0


def readyz_follows_etcd(w):
    cp = w.leader
    before = cp.value("corvid_controlplane_etcd_errors_total")
    w.etcd.pause()
    t0 = time.time()
    try:
        cp.wait(lambda: cp.http("/readyz")[0] == 503, 15, "/readyz 503 with etcd stopped")
        print("  /readyz 503 %.1f s after etcd stopped" % (time.time() - t0))
        assert cp.http("/healthz")[0] == 200  # alive: restarting it would not bring etcd back
        cp.wait(lambda: cp.value("corvid_controlplane_etcd_errors_total") > before, 10, "etcd errors counted")
        assert cp.value("corvid_controlplane_etcd_reachable") == 0
    finally:
        w.etcd.resume()
    cp.wait(lambda: cp.http("/readyz")[0] == 200, 15, "/readyz 200 once etcd is back")
    assert cp.value("corvid_controlplane_etcd_reachable") == 1


def main():
    c = Checks()
    w = World()
    try:
        c.run("/healthz, /readyz, leader and fleet gauges", leader_ready, w)
        c.run("corvid_rollout_phase follows a rollout; started/completed/rolled back counted", rollout_moves_phase, w)
        c.run("a follower reports the phase from etcd, no fleet health, no counts", follower_reports_phase, w)
        c.run("/readyz fails while etcd is stopped, and recovers", readyz_follows_etcd, w)
    finally:
        w.close()
    c.finish()


main()
