"""A throwaway etcd for Python integration tests (the twin of tests/support/etcd_proc.c).

    etcd = Etcd()            # free loopback ports, temp data dir, waits for /health
    etcd.call("/v3/kv/put", {"key": b64("k"), "value": b64("v")})
    etcd.pause(); etcd.resume()          # SIGSTOP / SIGCONT
    etcd.kill(); etcd.launch()           # restart on the same data dir and ports
    etcd.destroy()                       # kill by PID, remove the data dir

$CORVID_ETCD_BIN overrides the "etcd" binary on PATH. The process is only ever
signalled by its own PID; it dies with the test (corvid_testlib.spawn).
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

from corvid_testlib import TMP, free_port, spawn


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s).decode("utf-8", "replace")


class Etcd:
    def __init__(self, ready_timeout=15):
        self.dir = os.path.join(TMP, "etcd-%d" % free_port())
        os.makedirs(self.dir)
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client_port
        self.ready_timeout = ready_timeout
        self.proc = None
        self.launch()

    def launch(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = spawn(
            [os.environ.get("CORVID_ETCD_BIN") or "etcd", "--name", "n",
             "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "n=" + peer], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited %d; log in %s" % (self.proc.returncode, self.dir))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=0.5) as r:
                    if json.load(r).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("etcd at %s not healthy in %ds; log in %s" % (self.url, self.ready_timeout, self.dir))

    def call(self, path, body, timeout=5):
        """POSTs a JSON body; returns (HTTP status, decoded JSON or raw text)."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait()

    def destroy(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
