"""What the Python benches share: server processes on loopback stopped by PID (spawn:
they die with the bench), waiting for them, percentiles and the host's load."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from corvid_testlib import spawn  # noqa: E402


def pct(xs, q):
    """The q-quantile of xs (nearest rank); None when empty."""
    xs = sorted(xs)
    return xs[int(q * (len(xs) - 1) + 0.5)] if xs else None


def load():
    """`uptime`'s load averages (1, 5, 15 min): every figure goes out with the load it was measured under."""
    return " ".join("%.2f" % x for x in os.getloadavg())


class Proc:
    """A server process on loopback, its output in log, stopped by PID."""

    def __init__(self, argv, log):
        self.log_path = log
        self.log = open(log, "wb")
        self.p = spawn(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


def wait_for(pred, what, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("%s not ready in %d s" % (what, timeout))


def wait_log(proc, marker, timeout=600):
    """Until marker (bytes) is in proc's log; an exit before is an error with the log's tail."""
    wait_for(lambda: marker in open(proc.log_path, "rb").read() or proc.p.poll() is not None, proc.log_path, timeout)
    if proc.p.poll() is not None:
        raise RuntimeError("%s exited:\n%s" % (proc.log_path, open(proc.log_path).read()[-2000:]))


def run_clients(n_threads, prompts, one):
    """one(prompt) -> a result; n_threads threads take prompts in order, back to back.
    (results in the order they ended, elapsed seconds)."""
    lock, out, nxt = threading.Lock(), [], [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(prompts):
                return
            r = one(prompts[i])
            with lock:
                out.append(r)

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.time() - t0
