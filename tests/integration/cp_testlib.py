"""A corvid-controlplane for Python integration tests, with its HTTP endpoint.

    cp = ControlPlane("cp-a", {"etcd": etcd.url, "servers": [...]})   # metrics on a free port
    cp.metrics()                 # {(name, (("label", "value"), ...)): value}
    cp.value("corvid_controlplane_leader")
    cp.http("/readyz")           # (HTTP status, body)
    cp.wait(lambda: ..., 10, "what")
    cp.log(); cp.stop()          # SIGTERM (resigns the lease; must exit 0), SIGKILL after 10 s

The process is only ever signalled by its own PID; it dies with the test
(corvid_testlib.spawn).
"""
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

from corvid_testlib import BIN, TMP, free_port, spawn

CP = os.path.join(BIN, "corvid-controlplane")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


class ControlPlane:
    def __init__(self, name, cfg, env=None):
        self.name = name
        self.port = free_port()
        cfg = dict(cfg, id=name, metrics_listen="127.0.0.1:%d" % self.port)
        self.config = os.path.join(TMP, name + ".json")
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        self.log_path = os.path.join(TMP, name + ".log")
        log = open(self.log_path, "ab")
        self.proc = spawn([CP, "run", "--config", self.config], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait(lambda: self.http("/healthz")[0] == 200, 10, "%s /healthz" % name)

    def http(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metrics(self):
        status, text = self.http("/metrics")
        assert status == 200, (status, text)
        return parse_metrics(text)

    def value(self, name, **labels):
        """The sample's value, None when absent."""
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited %d while waiting for %s:\n%s" % (
                    self.name, self.proc.returncode, what, self.log()))
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError("%s: %s not within %ss; log:\n%s" % (self.name, what, timeout, self.log()[-3000:]))

    def stop(self):
        """SIGTERM: it resigns and must exit 0 (a sanitizer report would make it fail)."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.returncode == 0, "%s exited %d:\n%s" % (self.name, self.proc.returncode, self.log()[-3000:])


def cli(etcd_url, *args):
    r = subprocess.run([CP] + list(args) + ["--etcd", etcd_url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout
