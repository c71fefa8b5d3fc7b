"""corvid-controlplane drives a corvid-server that wants TLS with client certificates
(mTLS) and JWT bearer tokens: with the right CA, certificate and an admin token it
probes the server and rolls a version out; with another CA, without a token, or with
a server name the certificate does not carry, every call fails with a logged reason
that says what to check, counted in corvid_controlplane_server_errors_total by status.
The token never reaches the log. A token file that is missing stops start-up.
Keys and certificates are made fresh by tests/data/auth/gen.sh, tokens by mint_jwt.py."""
import hashlib
import json
import os
import subprocess
import sys

from corvid_testlib import ROOT, SHARED, TMP, Checks, Server
from cp_testlib import CP, ControlPlane, cli
from etcd_testlib import Etcd

F32 = os.path.join(SHARED, "models", "stories260K.gguf")
Q8 = os.path.join(SHARED, "models", "stories260K-Q8_0-mixed.gguf")
AUTH = os.path.join(ROOT, "tests", "data", "auth")
KEYS = os.path.join(TMP, "keys")
MODEL = "stories"


def k(name):
    return os.path.join(KEYS, name)


def mint(scope):
    claims = {"sub": "corvid-controlplane", "iss": "https://idp.test", "aud": "corvid", "scope": scope}
    r = subprocess.run([sys.executable, os.path.join(AUTH, "mint_jwt.py"), "--alg", "HS256", "--key",
                        k("jwt-hs256.secret"), "--kid", "hs", "--ttl", "600", json.dumps(claims)],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


class World:
    def __init__(self):
        subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), KEYS], check=True, capture_output=True)
        policy = os.path.join(TMP, "policy.json")
        with open(policy, "w") as f:
            json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256", "secret_file": k("jwt-hs256.secret")}],
                               "issuer": "https://idp.test", "audience": "corvid"}}, f)
        self.token = mint("admin inference")
        self.token_file = os.path.join(TMP, "token")
        with open(self.token_file, "w") as f:
            f.write(self.token + "\n")  # as a Kubernetes Secret mounted as a file often has it
        self.etcd = Etcd()
        self.server = Server("--model", F32, "--model-version", "v1", "--model-cache-dir", os.path.join(TMP, "cache"),
                             "--tls-cert", k("server.pem"), "--tls-key", k("server.key"), "--tls-client-ca",
                             k("ca.pem"), "--auth-config", policy)
        self.base = {"etcd": self.etcd.url, "servers": [self.server.addr], "poll_ms": 200, "election_ttl_s": 3,
                     "admin_timeout_ms": 2000, "stage_deadline_s": 30, "keep_previous_s": 1,
                     "smoke_prompt": "Once upon a time"}
        self.tls = {"ca": k("ca.pem"), "cert": k("client.pem"), "key": k("client.key")}
        self.cps = []

    def cp(self, name, **cfg):
        cp = ControlPlane(name, dict(self.base, **cfg))
        self.cps.append(cp)
        return cp

    def close(self):
        for cp in self.cps:
            cp.stop()
        self.server.stop()
        self.etcd.destroy()


def good_credentials_roll_out(w):
    cp = w.cp("cp-good", server_tls=w.tls, server_token_file=w.token_file)
    cp.wait(lambda: cp.value("corvid_controlplane_servers_healthy") == 1, 20, "the server answering over mTLS")
    sha = hashlib.sha256(open(Q8, "rb").read()).hexdigest()
    cli(w.etcd.url, "version", "add", MODEL, "v2", "--uri", Q8, "--sha256", sha)
    cli(w.etcd.url, "rollout", "start", MODEL, "v2", "--strategy", "bluegreen", "--min-requests", "0",
        "--window", "500ms")
    phase = lambda p: cp.value("corvid_rollout_phase", model=MODEL, phase=p) == 1  # noqa: E731
    cp.wait(lambda: phase("promoted") or phase("rolled_back"), 60, "the rollout ending")
    assert phase("promoted"), cp.log()[-3000:]
    assert cp.value("corvid_controlplane_rollouts_completed_total", model=MODEL) == 1
    assert "TLS to servers, bearer token" in cp.log(), cp.log()
    assert cp.value("corvid_controlplane_server_errors_total", code="UNAUTHENTICATED") is None
    cp.stop()  # resigns: the next control plane leads at once


def refused(w, name, code, needles, **cfg):
    cp = w.cp(name, **cfg)
    cp.wait(lambda: (cp.value("corvid_controlplane_server_errors_total", code=code) or 0) >= 2, 20,
            "%s counted" % code)
    assert cp.value("corvid_controlplane_servers_healthy") == 0
    log = cp.log()
    line = [x for x in log.splitlines() if "GetStatus" in x]
    assert line, log
    for n in needles:
        assert n in line[0], (n, line[0])
    # Logged once per change, not on every failed probe.
    assert len(line) == 1, line
    cp.stop()
    print("  %s: %s" % (name, line[0][:240]))
    return log


def wrong_ca(w):
    refused(w, "cp-wrong-ca", "UNAVAILABLE", ["UNAVAILABLE", "check server_tls"],
            server_tls=dict(w.tls, ca=k("other-ca.pem")), server_token_file=w.token_file)


def no_token(w):
    refused(w, "cp-no-token", "UNAUTHENTICATED", ["UNAUTHENTICATED", "set server_token_file or server_token_env"],
            server_tls=w.tls)


def inference_only_token(w):
    env = dict(os.environ, CP_TEST_TOKEN=mint("inference"))
    cp = ControlPlane("cp-weak-token", dict(w.base, server_tls=w.tls, server_token_env="CP_TEST_TOKEN"), env=env)
    w.cps.append(cp)
    cp.wait(lambda: (cp.value("corvid_controlplane_server_errors_total", code="PERMISSION_DENIED") or 0) >= 1, 20,
            "PERMISSION_DENIED counted")
    assert "the token needs the admin scope" in cp.log(), cp.log()
    cp.stop()


def wrong_server_name(w):
    refused(w, "cp-wrong-name", "UNAVAILABLE", ["UNAVAILABLE"],
            server_tls=dict(w.tls, server_name="not-this-server.test"), server_token_file=w.token_file)


def token_never_logged(w):
    for cp in w.cps:
        assert w.token not in cp.log(), cp.name
        assert w.token.split(".")[2] not in cp.log(), cp.name


def missing_token_file_stops_start():
    cfg = os.path.join(TMP, "cp-missing.json")
    with open(cfg, "w") as f:
        json.dump({"etcd": "http://127.0.0.1:1", "servers": ["127.0.0.1:1"],
                   "server_token_file": os.path.join(TMP, "no-such-token")}, f)
    r = subprocess.run([CP, "run", "--config", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "server_token_file" in r.stderr and "no-such-token" in r.stderr, r.stderr


def main():
    c = Checks()
    w = World()
    try:
        c.run("mTLS + admin token: probes answer, a rollout is promoted", good_credentials_roll_out, w)
        c.run("another CA: UNAVAILABLE, logged with what to check, counted", wrong_ca, w)
        c.run("no token: UNAUTHENTICATED, logged with what to set, counted", no_token, w)
        c.run("a token without the admin scope (from an env var): PERMISSION_DENIED", inference_only_token, w)
        c.run("server_name the certificate does not carry: refused", wrong_server_name, w)
        c.run("the token never reaches the log", token_never_logged, w)
    finally:
        w.close()
    c.run("a missing token file stops start-up, naming the file", missing_token_file_stops_start)
    c.finish()


main()
