"""The response cache through a real corvid-server on stories260K: greedy answers are the
same tokens with and without it over gRPC and HTTP (stream and whole), a hit replays the
same message shapes with `cached` set, requests that are not deterministic are never
looked up, scope "subject" keeps JWT subjects apart, and the counters reach /metrics and
Admin.GetStatus. With a real Redis 7 (Debian's redis-server, started here on a free
loopback port in a temp dir and stopped by PID): two servers share answers, entries
carry the TTL and expire, a corrupted entry is refused and counted, a Redis killed
mid-test and a Redis that never answers (a socket that accepts and stays silent) cost
a counted error and the deadline, never a failed request."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from corvid_testlib import DATA, ROOT, TMP, Admin, Checks, Server, free_port, proto_modules, spawn

pb = proto_modules()[0]
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
AUTH = os.path.join(ROOT, "tests", "data", "auth")
PROMPTS = ["Once upon a time", "The little dog", "Lily and Max went to the park"]
N = 24


class Corvid:
    """corvid-server with gRPC, the HTTP API and /metrics on free ports."""

    def __init__(self, *args):
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.srv = Server("--model", MODEL, "--http-listen", "127.0.0.1:%d" % self.http_port,
                          "--metrics-listen", "127.0.0.1:%d" % self.metrics_port, *args)
        self.addr = self.srv.addr

    def generate(self, prompt, n=N, token=None, **sampling):
        """(messages, token ids, text, final) of one Generate stream."""
        with grpc.insecure_channel(self.addr) as ch:
            gen = ch.unary_stream("/corvid.v1.Inference/Generate",
                                  request_serializer=pb.GenerateRequest.SerializeToString,
                                  response_deserializer=pb.GenerateResponse.FromString)
            sp = pb.SamplingParams(max_tokens=n, **sampling)
            md = [("authorization", "Bearer " + token)] if token else None
            msgs = list(gen(pb.GenerateRequest(prompt=prompt, sampling=sp), timeout=60, metadata=md))
        ids = [i for m in msgs if m.WhichOneof("kind") == "chunk" for i in m.chunk.token_ids]
        text = "".join(m.chunk.text for m in msgs if m.WhichOneof("kind") == "chunk")
        assert msgs[-1].WhichOneof("kind") == "final", msgs
        return msgs, ids, text, msgs[-1].final

    def post(self, body, token=None):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        c.request("POST", "/v1/completions", body=json.dumps(body), headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        assert r.status == 200, (r.status, raw)
        return json.loads(raw)

    def stream(self, body):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.status
        events = [json.loads(l[6:]) for l in (x.decode().strip() for x in r) if l.startswith("data: {")]
        c.close()
        return events

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        return {k: fams["corvid_response_cache_" + k].samples[0].value
                for k in ("lookups", "hits", "stores", "errors", "bytes", "entries")}

    def stop(self):
        self.srv.stop()


class Redis:
    """Debian's redis-server on a free loopback port, in a temp dir, stopped by PID."""

    def __init__(self):
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed (apt-get install redis-server; make deps lists it)"
        self.port = free_port()
        self.dir = os.path.join(TMP, "redis-%d" % self.port)
        os.makedirs(self.dir)
        self.proc = spawn([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                           "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.cmd("PING") == "PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING in 20 s")

    def cmd(self, *args):
        """One command over RESP; the reply as str, int, bytes, list or None."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")

            def read():
                line = f.readline()[:-2]
                kind, rest = line[:1], line[1:]
                if kind == b"+":
                    return rest.decode()
                if kind == b"-":
                    raise RuntimeError(rest.decode())
                if kind == b":":
                    return int(rest)
                if kind == b"$":
                    n = int(rest)
                    return None if n < 0 else f.read(n + 2)[:-2]
                if kind == b"*":
                    return [read() for _ in range(int(rest))]
                raise RuntimeError("bad RESP %r" % line)
            return read()

    def keys(self):
        return sorted(k.decode() for k in self.cmd("KEYS", "corvid:rc:*"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(fn, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("no %s in %d s" % (what, timeout))


# ---- memory backend ----

def same_tokens_grpc(ref, mem):
    for p in PROMPTS:
        _, want, want_text, _ = ref.generate(p)
        assert len(want) == N, want
        _, miss, miss_text, f1 = mem.generate(p)
        _, hit, hit_text, f2 = mem.generate(p)
        assert (miss, miss_text) == (want, want_text), (p, miss, want)
        assert (hit, hit_text) == (want, want_text), (p, hit, want)
        assert not f1.cached and f2.cached, (f1, f2)


def same_tokens_http(ref, mem):
    for p in PROMPTS:
        p += " and"  # not asked over gRPC before (the protocols share answers: see the next check)
        body = {"prompt": p, "max_tokens": N, "temperature": 0}
        want = ref.post(body)
        miss, hit = mem.post(body), mem.post(body)
        assert miss["choices"][0]["text"] == want["choices"][0]["text"], (miss, want)
        assert hit["choices"][0]["text"] == want["choices"][0]["text"], (hit, want)
        assert "cached" not in miss["usage"] and hit["usage"]["cached"] is True, (miss, hit)
        assert {k: v for k, v in hit["usage"].items() if k != "cached"} == miss["usage"], (miss, hit)
        assert hit["choices"][0]["finish_reason"] == miss["choices"][0]["finish_reason"] == "length"
        # A stream of the same request is answered from the cache too, in the stream's shape.
        ev = mem.stream(dict(body, stream_options={"include_usage": True}))
        assert "".join(e["choices"][0]["text"] for e in ev if e["choices"]) == want["choices"][0]["text"]
        last = [e for e in ev if e["choices"]][-1]
        assert last["choices"][0]["finish_reason"] == "length" and last["cached"] is True, last
        assert ev[-1]["usage"]["cached"] is True and ev[-1]["usage"]["completion_tokens"] == N, ev[-1]


def protocols_share_answers(mem):
    """Both protocols build the same engine request from a greedy prompt: one key."""
    _, _, text, _ = mem.generate(PROMPTS[0])
    r = mem.post({"prompt": PROMPTS[0], "max_tokens": N, "temperature": 0})
    assert r["usage"]["cached"] is True and r["choices"][0]["text"] == text, r


def hit_replays_shapes(mem):
    """A stop string: the hit ends the same way and names it; kinds and usage match."""
    p = "Once upon a time, there was a"
    m1, ids1, _, f1 = mem.generate(p, n=64, stop=["."])
    m2, ids2, _, f2 = mem.generate(p, n=64, stop=["."])
    assert f1.stop_string == "." and f2.stop_string == ".", (f1, f2)
    assert ids1 == ids2
    assert [m.WhichOneof("kind") for m in m2][-1] == "final"
    assert all(m.WhichOneof("kind") == "chunk" for m in m2[:-1]) and len(m2) >= 2
    for f in ("finish_reason", "model_version", "stop_string"):
        assert getattr(f1, f) == getattr(f2, f), f
    assert (f1.usage.prompt_tokens, f1.usage.completion_tokens) == (f2.usage.prompt_tokens, f2.usage.completion_tokens)
    assert f2.cached and f2.request_id and f2.request_id != f1.request_id


def only_deterministic_requests(mem):
    before = mem.metrics()
    mem.generate(PROMPTS[0], temperature=0.9)                # sampled, seed drawn by the server
    mem.generate(PROMPTS[0], logprobs=2)                     # greedy but with logprobs
    assert mem.metrics()["lookups"] == before["lookups"]
    seed = pb.SamplingParams().seed.__class__(value=1234)
    _, a, _, fa = mem.generate(PROMPTS[0], temperature=0.9, seed=seed)
    _, b, _, fb = mem.generate(PROMPTS[0], temperature=0.9, seed=seed)
    assert a == b and not fa.cached and fb.cached and fb.seed == 1234, (fa, fb)
    assert mem.metrics()["lookups"] == before["lookups"] + 2


def grammar_is_part_of_the_key(mem):
    """A constrained request is not answered with the unconstrained answer (stored above)."""
    gbnf = 'root ::= [a-z ]+'
    _, free_ids, _, f0 = mem.generate(PROMPTS[0])
    assert f0.cached
    _, ids, text, f1 = mem.generate(PROMPTS[0], grammar=gbnf)
    _, ids2, text2, f2 = mem.generate(PROMPTS[0], grammar=gbnf)
    assert not f1.cached and f2.cached and (ids, text) == (ids2, text2), (f1, f2)
    assert all(c.islower() or c == " " for c in text) and ids != free_ids, text


def counters_and_status(mem):
    m = mem.metrics()
    st = Admin(mem.addr).status().response_cache
    assert st.backend == "memory" and st.lookups == m["lookups"] and st.hits == m["hits"], (st, m)
    assert m["hits"] >= 8 and m["stores"] >= 7 and m["errors"] == 0 and m["entries"] == m["stores"], m
    assert m["bytes"] > 0
    assert abs(st.hit_rate - m["hits"] / m["lookups"]) < 1e-9, st


def per_subject_scope(keys):
    policy = os.path.join(TMP, "rc-auth.json")
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256", "secret_file": os.path.join(keys, "jwt-hs256.secret")}],
                           "issuer": "https://idp.test", "audience": "corvid"}}, f)

    def tok(sub):
        r = subprocess.run([sys.executable, os.path.join(AUTH, "mint_jwt.py"), "--alg", "HS256", "--key",
                            os.path.join(keys, "jwt-hs256.secret"), "--kid", "hs", "--ttl", "300",
                            json.dumps({"sub": sub, "iss": "https://idp.test", "aud": "corvid",
                                        "scope": "inference"})], capture_output=True, text=True, check=True)
        return r.stdout.strip()
    alice, bob = tok("alice"), tok("bob")
    srv = Corvid("--auth-config", policy, "--response-cache", "memory", "--response-cache-scope", "subject")
    try:
        assert not srv.generate(PROMPTS[0], token=alice)[3].cached
        assert not srv.generate(PROMPTS[0], token=bob)[3].cached      # bob does not see alice's answer
        assert srv.generate(PROMPTS[0], token=alice)[3].cached
        body = {"prompt": PROMPTS[1], "max_tokens": N, "temperature": 0}
        assert srv.post(body, token=bob)["usage"].get("cached") is None
        assert srv.post(body, token=bob)["usage"]["cached"] is True
        assert srv.post(body, token=alice)["usage"].get("cached") is None
        assert srv.generate(PROMPTS[1], token=alice)[3].cached
    finally:
        srv.stop()


# ---- Redis ----

def redis_corvid(rds, *flags):
    """A server on rds (emptied first) and the ids and key of PROMPTS[0] once stored."""
    rds.cmd("FLUSHALL")
    srv = Corvid("--response-cache", "redis", "--response-cache-redis", "127.0.0.1:%d" % rds.port, *flags)
    try:
        _, ids, _, f = srv.generate(PROMPTS[0])
        assert not f.cached
        return srv, ids, wait_for(lambda: rds.keys(), "stored key")[0]
    except Exception:
        srv.stop()
        raise


def redis_shared_by_replicas(ref, rds):
    a = Corvid("--response-cache", "redis", "--response-cache-redis", "127.0.0.1:%d" % rds.port)
    b = Corvid("--response-cache", "redis", "--response-cache-redis", "127.0.0.1:%d" % rds.port)
    try:
        _, want, _, _ = ref.generate(PROMPTS[1])
        _, ids, _, f = a.generate(PROMPTS[1])
        assert ids == want and not f.cached
        wait_for(lambda: len(rds.keys()) == 1, "stored key")
        ttl = rds.cmd("TTL", rds.keys()[0])
        assert 3500 < ttl <= 3600, ttl  # response_cache_ttl_s's default
        _, ids, _, f = b.generate(PROMPTS[1])
        assert ids == want and f.cached, f
        body = {"prompt": PROMPTS[1], "max_tokens": N, "temperature": 0}
        hit = b.post(body)  # what a stored over gRPC answers b's HTTP request
        assert hit["usage"]["cached"] is True and hit["choices"][0]["text"] == ref.post(body)["choices"][0]["text"]
        assert len(rds.keys()) == 1
        mb = b.metrics()
        assert mb["lookups"] == 2 and mb["hits"] == 2 and mb["stores"] == 0 and mb["errors"] == 0, mb
        ma = a.metrics()
        assert ma["lookups"] == 1 and ma["hits"] == 0 and ma["stores"] == 1 and ma["bytes"] > 0, ma
        st = Admin(b.addr).status().response_cache
        assert st.backend == "redis" and abs(st.hit_rate - 1) < 1e-9, st
    finally:
        a.stop()
        b.stop()


def redis_ttl_expires(ref, rds):
    srv, want, key = redis_corvid(rds, "--response-cache-ttl", "1")
    try:
        assert rds.cmd("PTTL", key) <= 1000
        assert srv.generate(PROMPTS[0])[3].cached
        wait_for(lambda: not rds.keys(), "expiry", timeout=5)
        _, ids, _, f = srv.generate(PROMPTS[0])
        assert not f.cached and ids == want == ref.generate(PROMPTS[0])[1]
        m = srv.metrics()
        assert m["lookups"] == 3 and m["hits"] == 1, m
    finally:
        srv.stop()


def corrupt_entry_refused(ref, rds):
    srv, want, key = redis_corvid(rds)
    try:
        good = rds.cmd("GET", key)
        bad = [b"garbage", good[:-3],                                  # not an entry; truncated
               good[:-4] + (100000).to_bytes(4, "little"),            # last token id outside the vocabulary
               good[:60] + b"\xff" + good[61:]]                        # text that is not UTF-8
        for i, v in enumerate(bad):
            rds.cmd("SET", key, v)
            _, ids, _, f = srv.generate(PROMPTS[0])
            assert not f.cached and ids == want, (i, f)
            assert srv.metrics()["errors"] >= i + 1
        assert srv.metrics()["hits"] == 0
    finally:
        srv.stop()


def redis_killed_mid_test(ref, rds):
    srv, _, _ = redis_corvid(rds)
    try:
        assert srv.generate(PROMPTS[0])[3].cached
        rds.stop()  # SIGKILL: no goodbye to the idle connections
        _, want, _, _ = ref.generate(PROMPTS[0])
        for _ in range(3):
            _, ids, _, f = srv.generate(PROMPTS[0])
            assert ids == want and not f.cached, f
        body = {"prompt": PROMPTS[0], "max_tokens": N, "temperature": 0}
        r = srv.post(body)
        assert r["choices"][0]["text"] == ref.post(body)["choices"][0]["text"] and "cached" not in r["usage"]
        # Each of the 4 lookups failed, and so did each store (on the writer thread).
        m = wait_for(lambda: (lambda m: m if m["errors"] >= 8 else None)(srv.metrics()), "8 errors")
        assert m["hits"] == 1, m
    finally:
        srv.stop()


def silent_redis_deadline(ref):
    """A socket that accepts and never answers: each lookup waits its 300 ms, no longer."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    held, stop = [], threading.Event()

    def accept():
        lst.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(lst.accept()[0])
            except socket.timeout:
                pass
    t = threading.Thread(target=accept)
    t.start()
    srv = Corvid("--response-cache", "redis", "--response-cache-redis", "127.0.0.1:%d" % lst.getsockname()[1],
                 "--response-cache-timeout-ms", "300")
    try:
        _, want, _, _ = ref.generate(PROMPTS[1])
        for _ in range(3):
            t0 = time.time()
            _, ids, _, f = srv.generate(PROMPTS[1])
            dt = time.time() - t0
            assert ids == want and not f.cached
            assert 0.3 <= dt < 10, dt  # the lookup's deadline, not a hang (generous: shared host)
        m = wait_for(lambda: (lambda m: m if m["errors"] >= 6 else None)(srv.metrics()), "6 errors")
        assert m["lookups"] == 3 and m["hits"] == 0, m
        assert held, "the fake Redis was never connected to"
    finally:
        srv.stop()
        stop.set()
        t.join()
        for s in held:
            s.close()
        lst.close()


def main():
    c = Checks()
    keys = os.path.join(TMP, "keys")
    subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), keys], check=True, capture_output=True)
    ref = Corvid()
    mem = Corvid("--response-cache", "memory")
    try:
        c.run("greedy gRPC tokens: the same with and without the cache, miss then hit", same_tokens_grpc, ref, mem)
        c.run("greedy HTTP text: the same with and without the cache, whole and stream", same_tokens_http, ref, mem)
        c.run("an answer stored over gRPC is a hit over HTTP", protocols_share_answers, mem)
        c.run("a hit replays the stream's shape: chunks, final, stop string, usage", hit_replays_shapes, mem)
        c.run("only deterministic requests are looked up (greedy or seeded, no logprobs)",
              only_deterministic_requests, mem)
        c.run("the grammar of constrained decoding is part of the key", grammar_is_part_of_the_key, mem)
        c.run("/metrics and Admin.GetStatus: lookups, hits, stores, bytes, hit rate", counters_and_status, mem)
        c.run("scope subject: JWT subjects do not share answers", per_subject_scope, keys)
        rds = Redis()
        try:
            c.run("redis: two servers share answers; TTL set", redis_shared_by_replicas, ref, rds)
            c.run("redis: entries expire after response_cache_ttl_s", redis_ttl_expires, ref, rds)
            c.run("redis: corrupted entries are refused and counted", corrupt_entry_refused, ref, rds)
            c.run("redis killed mid-test: requests succeed, errors counted", redis_killed_mid_test, ref, rds)
        finally:
            rds.stop()
        c.run("a Redis that never answers: the deadline holds, requests succeed", silent_redis_deadline, ref)
    finally:
        ref.stop()
        mem.stop()
    c.finish()


if __name__ == "__main__":
    sys.exit(main())
