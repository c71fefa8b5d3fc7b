"""The audit log of a real corvid-server under unauthenticated load (issue 17.5).

Four grpcio clients without a valid token hammer Generate for a few seconds; the audit
log must hold one auth_failure line per client address and reason per interval with a
count, the counts adding up exactly to the refusals the clients saw (the last interval
written at SIGTERM), and stay a few kilobytes. Admin actions, which are written one
line each, rotate the file by size (audit_max_mb, audit_keep). The subject of an
e-mail-shaped JWT is masked in the subject field as in the detail."""
import glob
import json
import os
import subprocess
import sys
import threading
import time

import grpc

from corvid_testlib import DATA, ROOT, TMP, Checks, Server, proto_modules

pb, admin_pb, _ = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
SECRET = os.path.join(TMP, "hs256.secret")
AUDIT = os.path.join(TMP, "audit.jsonl")
HAMMER_S = 3.0
INTERVAL_S = 1.0

# What each client sends, and the reason the audit line must give for it.
ATTEMPTS = [("no_token", None),
            ("bad_scheme", "Basic b3BzOnB3"),
            ("invalid_token", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"),
            ("no_token", "Bearer ")]


def mint(claims):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "data", "auth", "mint_jwt.py"), "--alg", "HS256",
                        "--key", SECRET, "--ttl", "600", json.dumps(claims)],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def audit_lines():
    """Every line of the audit log and its rotated files, oldest file first."""
    files = sorted(glob.glob(AUDIT + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1])) + [AUDIT]
    out = []
    for p in files:
        if os.path.exists(p):
            with open(p) as f:
                out += [json.loads(line) for line in f]
    return out


def audit_bytes():
    return sum(os.path.getsize(p) for p in glob.glob(AUDIT + "*"))


def hammer(addr, stop, counts, lock, idx):
    """Sends the idx-th kind of attempt until stop; counts what came back refused."""
    reason, header = ATTEMPTS[idx % len(ATTEMPTS)]
    md = [("authorization", header)] if header is not None else None
    n = 0
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        req = pb.GenerateRequest(prompt="Once", sampling=pb.SamplingParams(max_tokens=1))
        while not stop.is_set():
            try:
                list(gen(req, metadata=md, timeout=10))
                raise AssertionError("an attempt without a valid token was served")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (e.code(), e.details())
                n += 1
    with lock:
        counts[reason] = counts.get(reason, 0) + n


def hammered_log_stays_small(srv):
    stop, lock, counts = threading.Event(), threading.Lock(), {}
    threads = [threading.Thread(target=hammer, args=(srv.addr, stop, counts, lock, i)) for i in range(4)]
    t0 = time.time()
    for t in threads:
        t.start()
    time.sleep(HAMMER_S)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    srv.terminate()  # the last interval's counts are written at shutdown
    assert srv.wait(30) == 0, srv.output()[-2000:]
    fails = [e for e in audit_lines() if e["event"] == "auth_failure"]
    total = sum(counts.values())
    print("  %d refusals in %.1f s -> %d auth_failure lines, audit files %d bytes" %
          (total, elapsed, len(fails), audit_bytes()))
    assert total > 200, counts  # enough load for the check to mean something
    got = {}
    for e in fails:
        assert e["peer"] == "127.0.0.1" and e["outcome"] == "UNAUTHENTICATED", e
        assert e["first"] <= e["last"] and e["count"] >= 1, e
        got[e["reason"]] = got.get(e["reason"], 0) + e["count"]
    assert got == counts, (got, counts)
    # At most one line per reason per interval (plus the interval cut at shutdown).
    intervals = int(elapsed / INTERVAL_S) + 3
    assert len(fails) <= intervals * len(counts), (len(fails), intervals)
    assert len(fails) < total / 20, (len(fails), total)
    assert audit_bytes() < 64 * 1024, audit_bytes()


def rotation_and_subject(srv):
    """Admin actions are one line each: 150 of them through a 10 KB bound with 2 kept
    files leave PATH, PATH.1 and PATH.2, each under the bound, the newest lines whole."""
    tok = mint({"sub": "jane.doe@example.com", "scope": "admin inference"})
    md = [("authorization", "Bearer " + tok)]
    with grpc.insecure_channel(srv.addr) as ch:
        m = ch.unary_unary("/corvid.v1.Admin/SetTraffic", request_serializer=admin_pb.SetTrafficRequest.SerializeToString,
                           response_deserializer=admin_pb.GetStatusResponse.FromString)
        for i in range(150):
            m(admin_pb.SetTrafficRequest(weights=[admin_pb.TrafficWeight(version="stories260K", weight=i + 1)]),
              metadata=md, timeout=10)
    sizes = {p: os.path.getsize(p) for p in glob.glob(AUDIT + "*")}
    assert sorted(sizes) == [AUDIT, AUDIT + ".1", AUDIT + ".2"], sizes
    bound = int(0.01 * 1048576)
    assert all(s <= bound for s in sizes.values()), sizes
    acts = [e for e in audit_lines() if e["event"] == "admin_action"]
    weights = [int(e["detail"].rsplit("=", 1)[1]) for e in acts]
    assert weights == list(range(151 - len(weights), 151)) and len(weights) > 20, weights[:5]
    text = "".join(open(p).read() for p in sizes)
    assert "jane.doe" not in text, "an e-mail subject reached the audit log in the clear"
    assert all(e["subject"] == "j*******@example.com" for e in acts), acts[-1]


def write_policy(path, **extra):
    policy = {"jwt": {"keys": [{"alg": "HS256", "secret_file": SECRET}]},
              "audit_log": AUDIT, "audit_interval_s": INTERVAL_S}
    policy.update(extra)
    with open(path, "w") as f:
        json.dump(policy, f)


def main():
    with open(SECRET, "wb") as f:
        f.write(os.urandom(48).hex().encode())
    c = Checks()
    policy = os.path.join(TMP, "policy.json")
    write_policy(policy)
    srv = Server("--model", MODEL, "--threads", "1", "--auth-config", policy)
    try:
        c.run("4 unauthenticated clients for %g s: one counted line per reason and interval" % HAMMER_S,
              hammered_log_stays_small, srv)
    finally:
        srv.stop()
    for p in glob.glob(AUDIT + "*"):
        os.unlink(p)
    write_policy(policy, audit_max_mb=0.01, audit_keep=2)
    srv = Server("--model", MODEL, "--threads", "1", "--auth-config", policy)
    try:
        c.run("admin lines rotate at audit_max_mb keeping audit_keep files; e-mail subject masked",
              rotation_and_subject, srv)
    finally:
        srv.stop()
    c.finish()


main()
