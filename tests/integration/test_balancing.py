"""Connection balancing: libcorvid_client (through bench-load and corvidctl) spreads calls
round-robin over every server behind one name and over a static address list, and a
server that leaves is dropped without a failed request.

Three real corvid-servers listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (same port), and
the name is answered by a small DNS server this test runs on loopback (dns_testlib),
reached through gRPC's `dns://127.0.0.1:PORT/NAME:PORT` authority. Which server served
how many requests comes from each server's own corvid_requests_total."""
import json
import os
import re
import subprocess
import threading
import time
import urllib.request

from corvid_testlib import BIN, DATA, Checks, Server, free_port, spawn
from dns_testlib import DnsServer

MODEL = os.path.join(DATA, "models", "stories260K.gguf")
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
NAME = "corvid.balancing.test"
N = 300


def served(metrics_addr):
    """Requests this server finished with OK, from its /metrics."""
    with urllib.request.urlopen("http://%s/metrics" % metrics_addr, timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(r'^corvid_requests_total\{[^}]*code="OK"[^}]*\} (\S+)$', text, re.M))


def bench(addr, *args):
    argv = [os.path.join(BIN, "bench-load"), "--addr", addr, "--concurrency", "4", "--max-tokens", "4",
            "--timeout", "30"] + list(args)
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, errs = p.communicate(timeout=120)
    assert out.strip(), "bench-load printed nothing (rc %d): %s" % (p.returncode, errs)
    return json.loads(out)


class Fleet:
    def __init__(self):
        self.port = free_port()
        self.mport = free_port()
        self.servers = []
        for h in HOSTS:
            self.servers.append(Server("--model", MODEL, "--metrics-listen", "%s:%d" % (h, self.mport),
                                       "--drain-timeout", "10", host=h, port=self.port))
        self.metrics = ["%s:%d" % (h, self.mport) for h in HOSTS]
        self.dns = DnsServer({NAME: HOSTS})
        self.dns_target = "dns://127.0.0.1:%d/%s:%d" % (self.dns.port, NAME, self.port)
        self.list_target = ",".join("%s:%d" % (h, self.port) for h in HOSTS)

    def counts(self):
        return [served(m) if s.proc.poll() is None else None for m, s in zip(self.metrics, self.servers)]

    def stop(self):
        for s in self.servers:
            s.stop()
        self.dns.close()


def spread(fleet, target):
    before = fleet.counts()
    r = bench(target, "--requests", str(N))
    assert r["requests_ok"] == N and r["requests_failed"] == 0, r
    got = [a - b for a, b in zip(fleet.counts(), before)]
    assert sum(got) == N, (got, r)
    # Within 20% of an even share, each of the three.
    for host, n in zip(HOSTS, got):
        assert abs(n - N / 3) <= 0.2 * N / 3, "uneven spread %s: %s served %d" % (got, host, n)
    print("     spread over %s: %s" % (target, [int(n) for n in got]))


def dns_resolution(fleet):
    assert fleet.dns.queries(NAME) >= 1, "the client never asked the test's DNS server"


def corvidctl(fleet):
    before = fleet.counts()
    for target in (fleet.dns_target, fleet.list_target) * 3:
        p = subprocess.run([os.path.join(BIN, "corvidctl"), "generate", "-a", target, "-p", "Once", "-n", "2"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (target, p.returncode, p.stdout, p.stderr)
    got = [a - b for a, b in zip(fleet.counts(), before)]
    assert sum(got) == 6, got


def bad_list():
    for addr, needle in (("127.0.0.1:1,example.com:2", "is not IP:PORT"),
                         ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6")):
        p = subprocess.run([os.path.join(BIN, "corvidctl"), "health", "-a", addr],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and needle in p.stderr, (addr, p.returncode, p.stderr)


def leave(fleet):
    """A run over the name; mid-way the third server leaves the DNS answer and gets SIGTERM
    (it drains: in-flight calls finish, new ones are answered UNAVAILABLE until it exits).
    Not one request may fail, and the other two keep serving."""
    result = {}

    def run():
        result["r"] = bench(fleet.dns_target, "--duration", "8")

    t = threading.Thread(target=run)
    t.start()
    time.sleep(2.5)
    fleet.dns.set(NAME, HOSTS[:2])
    gone = fleet.servers[2]
    gone.terminate()
    gone.wait(30)
    after_leave = fleet.counts()[:2]
    t.join(120)
    r = result["r"]
    assert r["requests_failed"] == 0, r
    assert r["requests_ok"] > 50, r
    later = fleet.counts()[:2]
    assert all(b > a for a, b in zip(after_leave, later)), \
        "the two servers left did not keep serving: %s -> %s" % (after_leave, later)
    print("     %d requests, none failed; the two servers left served %s after the third exited" %
          (r["requests_ok"], [int(b - a) for a, b in zip(after_leave, later)]))


def main():
    checks = Checks()
    fleet = Fleet()
    try:
        checks.run("300 requests over dns://127.0.0.1:PORT/NAME spread within 20% over 3 servers",
                   spread, fleet, fleet.dns_target)
        checks.run("the name was resolved by the test's DNS server (the authority is honoured)",
                   dns_resolution, fleet)
        checks.run("300 requests over a static address list spread within 20%", spread, fleet,
                   fleet.list_target)
        checks.run("corvidctl accepts dns:/// targets and address lists", corvidctl, fleet)
        checks.run("corvidctl: an address list with a name or mixed families is refused clearly", bad_list)
        checks.run("a server that leaves (DNS and SIGTERM) is dropped without a failed request", leave, fleet)
    finally:
        fleet.stop()
    checks.finish()


if __name__ == "__main__":
    main()
