"""corvid-controlplane drives a corvid-server that wants TLS with client certificates
(mTLS) and JWT bearer tokens: with the right CA, certificate and an admin token it
probes the server and rolls a version out; with another CA, without a token, or with
a server name the certificate does not carry, every call fails with a logged reason
that says what to check, counted in corvid_controlplane_server_errors_total by status.
The token never reaches the log. A token file that is missing stops start-up.
Rotation without a restart: a token file replaced by rename or by the Kubernetes `..data`
symlink swap, and TLS files swapped the same way, are picked up within seconds (a
revoked token stops being presented: the connections are remade); a new version that
does not load is refused once, logged with its file and counted, and the last good
credentials stay in use.
Keys and certificates are made fresh by tests/data/auth/gen.sh, tokens by mint_jwt.py."""
import hashlib
import json
import os
import subprocess
import sys
import time

from corvid_testlib import DATA, ROOT, TMP, Checks, Server
from cp_testlib import CP, ControlPlane, cli
from etcd_testlib import Etcd

F32 = os.path.join(DATA, "models", "stories260K.gguf")
Q8 = os.path.join(DATA, "models", "stories260K-Q8_0-mixed.gguf")
AUTH = os.path.join(ROOT, "tests", "data", "auth")
KEYS = os.path.join(TMP, "keys")
MODEL = "stories"


def k(name):
    return os.path.join(KEYS, name)


MINTED = []  # every token made here: none may reach a log


def mint(scope, key="jwt-hs256.secret"):
    """A JWT signed with `key` (another secret than the server's: a revoked token)."""
    claims = {"sub": "corvid-controlplane", "iss": "https://idp.test", "aud": "corvid", "scope": scope}
    r = subprocess.run([sys.executable, os.path.join(AUTH, "mint_jwt.py"), "--alg", "HS256", "--key",
                        k(key), "--kid", "hs", "--ttl", "600", json.dumps(claims)],
                       capture_output=True, text=True, check=True)
    MINTED.append(r.stdout.strip())
    return MINTED[-1]


def put(path, text):
    """A new version of a file as a script or cert-manager writes it: aside, then rename."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


class SecretVolume:
    """A Kubernetes Secret mounted as a volume: NAME -> ..data/NAME, ..data -> ..vN; a new
    version is a new directory and an atomic rename of a new ..data link over the old."""

    def __init__(self, name, files):
        self.dir = os.path.join(TMP, name)
        os.makedirs(self.dir)
        self.n = 0
        self.update(files)
        for f in files:
            os.symlink(os.path.join("..data", f), os.path.join(self.dir, f))

    def update(self, files):
        self.n += 1
        version = "..v%d" % self.n
        os.makedirs(os.path.join(self.dir, version))
        for f, text in files.items():
            with open(os.path.join(self.dir, version, f), "w") as out:
                out.write(text)
        os.symlink(version, os.path.join(self.dir, "..data_tmp"))
        os.rename(os.path.join(self.dir, "..data_tmp"), os.path.join(self.dir, "..data"))

    def path(self, f):
        return os.path.join(self.dir, f)


class World:
    def __init__(self):
        subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), KEYS], check=True, capture_output=True)
        with open(k("revoked.secret"), "w") as f:
            f.write(os.urandom(32).hex())
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


def errors(cp, code):
    return cp.value("corvid_controlplane_server_errors_total", code=code) or 0


def healthy(cp):
    return cp.value("corvid_controlplane_servers_healthy") == 1


def token_rotated_by_rename(w):
    path = os.path.join(TMP, "rotated-token")
    put(path, mint("inference") + "\n")  # the server refuses it: no admin scope
    cp = w.cp("cp-rename", server_tls=w.tls, server_token_file=path)
    cp.wait(lambda: errors(cp, "PERMISSION_DENIED") >= 1, 20, "PERMISSION_DENIED counted")
    assert cp.value("corvid_controlplane_servers_healthy") == 0
    put(path, mint("admin") + "\n")
    cp.wait(lambda: healthy(cp), 10, "the server answering with the new token")
    assert cp.value("corvid_controlplane_creds_reloads_total") == 1
    assert cp.value("corvid_controlplane_creds_last_reload_successful") == 1
    assert "credentials: reloaded (server_token_file changed)" in cp.log(), cp.log()
    cp.stop()


def token_rotated_by_symlink_swap(w):
    vol = SecretVolume("token-secret", {"token": w.token + "\n"})
    cp = w.cp("cp-k8s-token", server_tls=w.tls, server_token_file=vol.path("token"))
    cp.wait(lambda: healthy(cp), 20, "the server answering")
    loaded = cp.value("corvid_controlplane_creds_loaded_timestamp_seconds")
    assert abs(loaded - time.time()) < 60, loaded
    # The token is revoked (signed with a key the server no longer trusts): once the new
    # one is in place, the old one must not be presented any more, on any connection.
    vol.update({"token": mint("admin", key="revoked.secret")})
    cp.wait(lambda: errors(cp, "UNAUTHENTICATED") >= 1 and not healthy(cp), 10, "the revoked token refused")
    vol.update({"token": mint("admin inference")})
    cp.wait(lambda: healthy(cp), 10, "the server answering with the third token")
    assert cp.value("corvid_controlplane_creds_reloads_total") == 2
    assert cp.value("corvid_controlplane_creds_loaded_timestamp_seconds") > loaded
    cp.stop()


def bad_token_file_keeps_the_good_one(w):
    path = os.path.join(TMP, "keep-token")
    put(path, w.token)
    cp = w.cp("cp-bad-file", server_tls=w.tls, server_token_file=path)
    cp.wait(lambda: healthy(cp), 20, "the server answering")
    refusals = lambda: [x for x in cp.log().splitlines() if "credentials:" in x and path in x]  # noqa: E731
    for n, text in enumerate(["\n", "two words\n"], 1):
        put(path, text)
        cp.wait(lambda: cp.value("corvid_controlplane_creds_reload_errors_total") == n, 10, "version %d refused" % n)
        assert cp.value("corvid_controlplane_creds_last_reload_successful") == 0
    time.sleep(1.5)  # more looks at the files and probes: each bad version counted once
    assert cp.value("corvid_controlplane_creds_reload_errors_total") == 2
    lines = refusals()
    assert len(lines) == 2, lines
    assert "is empty" in lines[0] and "still presenting the last good credentials" in lines[0], lines[0]
    assert "is not a printable character" in lines[1], lines[1]
    assert healthy(cp) and errors(cp, "UNAUTHENTICATED") == 0, cp.log()
    assert cp.value("corvid_controlplane_creds_reloads_total") == 0
    put(path, mint("admin"))
    cp.wait(lambda: cp.value("corvid_controlplane_creds_reloads_total") == 1, 10, "the good version loaded")
    assert cp.value("corvid_controlplane_creds_last_reload_successful") == 1
    cp.wait(lambda: healthy(cp), 10, "the server answering")
    cp.stop()
    print("  %s" % refusals()[0][:240])


def tls_files_rotated(w):
    pem = lambda name: open(k(name)).read()  # noqa: E731
    good = {"ca.crt": pem("ca.pem"), "tls.crt": pem("client.pem"), "tls.key": pem("client.key")}
    vol = SecretVolume("tls-secret", dict(good, **{"ca.crt": pem("other-ca.pem")}))
    tls = {"ca": vol.path("ca.crt"), "cert": vol.path("tls.crt"), "key": vol.path("tls.key")}
    cp = w.cp("cp-k8s-tls", server_tls=tls, server_token_file=w.token_file)
    cp.wait(lambda: errors(cp, "UNAVAILABLE") >= 1, 20, "the server's certificate refused")
    assert cp.value("corvid_controlplane_servers_healthy") == 0
    vol.update(good)  # the right CA
    cp.wait(lambda: healthy(cp), 10, "the server answering with the new CA")
    # A CA file that holds a key: refused, the working set stays.
    vol.update(dict(good, **{"ca.crt": pem("client.key")}))
    cp.wait(lambda: cp.value("corvid_controlplane_creds_reload_errors_total") == 1, 10, "the bad CA refused")
    assert "server_tls.ca %s: no PEM CERTIFICATE block" % vol.path("ca.crt") in cp.log(), cp.log()
    time.sleep(0.5)
    assert healthy(cp)
    # A client certificate from a CA the server does not trust: presented at once.
    before = errors(cp, "UNAVAILABLE")
    vol.update(dict(good, **{"tls.crt": pem("other-client.pem"), "tls.key": pem("other-client.key")}))
    cp.wait(lambda: errors(cp, "UNAVAILABLE") > before and not healthy(cp), 10, "the new client certificate used")
    assert cp.value("corvid_controlplane_creds_reloads_total") == 2
    assert "reloaded (server_tls.ca, server_tls.cert, server_tls.key changed)" in cp.log(), cp.log()
    cp.stop()


def token_never_logged(w):
    for cp in w.cps:
        for token in MINTED:
            assert token not in cp.log(), cp.name
            assert token.split(".")[2] not in cp.log(), cp.name


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
        c.run("a token file replaced by rename: the new token is used, no restart", token_rotated_by_rename, w)
        c.run("a Secret's ..data symlink swap: a revoked token stops being presented", token_rotated_by_symlink_swap,
              w)
        c.run("a bad token file: refused once per version, counted, the old token kept",
              bad_token_file_keeps_the_good_one, w)
        c.run("CA and client certificate swapped in a Secret volume: used; a bad CA file kept out",
              tls_files_rotated, w)
        c.run("no token reaches the log", token_never_logged, w)
    finally:
        w.close()
    c.run("a missing token file stops start-up, naming the file", missing_token_file_stops_start)
    c.finish()


main()
