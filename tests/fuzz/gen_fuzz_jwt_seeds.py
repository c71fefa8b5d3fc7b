#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_jwt.c (mode byte + body, see its header)."""
import base64, hashlib, hmac, json, os, sys

KEY = b"fuzz-secret-0123456789abcdefghij"
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fuzz_jwt")
os.makedirs(out, exist_ok=True)

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")

def token(header, payload, key=KEY):
    inp = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
    return inp + b"." + b64(hmac.new(key, inp, hashlib.sha256).digest())

good = {"iss": "iss", "aud": "corvid", "sub": "alice", "exp": 1800000600, "nbf": 1799999990,
        "scope": "inference admin"}
seeds = {
    "tok_valid": b"\0" + token({"alg": "HS256", "kid": "h"}, good),
    "tok_nokid": b"\0" + token({"alg": "HS256"}, dict(good, aud=["x", "corvid"], scp=["admin"])),
    "tok_expired": b"\0" + token({"alg": "HS256"}, dict(good, exp=1700000000)),
    "tok_badsig": b"\0" + token({"alg": "HS256"}, good, b"wrong-key-wrong-key-wrong-key-xx"),
    "tok_none": b"\0" + b64(b'{"alg":"none"}') + b"." + b64(json.dumps(good).encode()) + b".",
    "tok_es256": b"\0" + b64(b'{"alg":"ES256","kid":"e"}') + b"." + b64(json.dumps(good).encode()) + b"." + b64(bytes(64)),
    "claims_valid": b"\1" + json.dumps({"alg": "HS256", "typ": "JWT"}).encode() + b"\n" + json.dumps(good).encode(),
    "claims_scopes": b"\1" + b'{"alg":"HS256"}\n' + json.dumps(dict(good, scopes=["inference"], scp="admin")).encode(),
    "claims_dup": b"\1" + b'{"alg":"HS256"}\n{"sub":"a","sub":"b","exp":1800000600}',
    "claims_nbf": b"\1" + b'{"alg":"HS256"}\n' + json.dumps(dict(good, nbf=1900000000)).encode(),
    "peer_v4": b"\2ipv4:10.1.2.3:5000\n10.0.0.0/8",
    "peer_v6": b"\2ipv6:%5B2001:db8::1%5D:443\n2001:db8::/32",
    "peer_mapped": b"\2ipv6:[::ffff:10.9.9.9]:1\n::ffff:10.0.0.0/104",
    "peer_zone": b"\2ipv6:%5Bfe80::1%25eth0%5D:80\nfe80::/10",
    "config_full": b"\3" + json.dumps({
        "jwt": {"keys": [{"kid": "k", "alg": "HS256", "secret_env": "HOME"},
                         {"alg": "RS256", "public_key_file": "/nonexistent.pem"}],
                "issuer": "i", "audience": ["a"], "leeway_s": 30, "require_exp": True},
        "allowlist": ["10.0.0.0/8", "::1/128"], "rate_limit": {"per_second": 5, "burst": 10},
        "audit_log": "x"}).encode(),
    "config_small": b"\3" + json.dumps({"allowlist": ["0.0.0.0/0"], "rate_limit": {"per_second": 0.5}}).encode(),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
