#!/usr/bin/env python3
"""Mints a compact JWS for integration tests (standard library + the openssl command).

  mint_jwt.py --alg HS256|RS256|ES256 --key FILE [--kid KID] [--ttl SECONDS] CLAIMS_JSON

--key: the HS256 secret file (its bytes, as gen.sh writes jwt-hs256.secret) or a PEM
private key (jwt-rs256.key, jwt-es256.key). --ttl adds iat=now and exp=now+ttl unless
the claims set them. --alg may also be anything else (e.g. "none") to make an
unsigned token, for negative tests. Prints the token on stdout.
"""
import argparse, base64, hashlib, hmac, json, subprocess, sys, time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der):
    """ECDSA-Sig-Value (SEQUENCE of two INTEGERs) -> 64-byte r||s, as JWS wants."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alg", required=True)
    ap.add_argument("--key")
    ap.add_argument("--kid")
    ap.add_argument("--ttl", type=int)
    ap.add_argument("claims")
    a = ap.parse_args()
    claims = json.loads(a.claims)
    if a.ttl is not None:
        now = int(time.time())
        claims.setdefault("iat", now)
        claims.setdefault("exp", now + a.ttl)
    header = {"alg": a.alg, "typ": "JWT"}
    if a.kid:
        header["kid"] = a.kid
    signing_input = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if a.alg == "HS256":
        sig = hmac.new(open(a.key, "rb").read(), signing_input, hashlib.sha256).digest()
    elif a.alg in ("RS256", "ES256"):
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", a.key], input=signing_input,
                             capture_output=True, check=True).stdout
        if a.alg == "ES256":
            sig = der_to_raw(sig)
    else:
        sig = b""
    print(signing_input.decode() + "." + b64(sig))


if __name__ == "__main__":
    sys.exit(main())
