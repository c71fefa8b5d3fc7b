#!/usr/bin/python3
"""bench/response-cache.py: frequent questions against the response cache.

  bench/response-cache.py [--model FILE] [--requests 2000] [--questions 500] [--zipf 1.1]
                          [--concurrency 8] [--max-tokens 32] [--threads N] [--seed 1]

--requests greedy Generate calls through gRPC, each one of --questions distinct
questions drawn with Zipf(--zipf) popularity (question k asked with weight 1/k^s, in a
shuffled order fixed by --seed), sent by --concurrency client threads back to back, to
corvid-server three times: without the response cache, with `--response-cache memory`
and with `--response-cache redis` (a redis-server started here on a free loopback port,
REDIS_SERVER or the one on PATH). Latency is client-side, submit to the Final message;
a hit is a Final with cached set.

Prints one JSON object: per backend the hit rate (Finals and the server's counters),
hit and miss latency p50/p99, requests/s; the ratios of requests/s against no cache;
and the host's load average (`uptime`) before each run, since the host is shared.
Without --model, stories260K (tests/data) answers: the point is the cache's own cost,
and a larger model only makes the misses slower (its requests/s ratio grows with it).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from corvid_testlib import BIN, DATA, TMP, free_port, proto_modules  # noqa: E402
from benchlib import Proc, load, pct, run_clients, wait_log  # noqa: E402

TOPICS = ("refund", "delivery", "password", "invoice", "warranty", "store hours", "membership points", "exchange",
          "gift card", "repair", "subscription", "shipping fee", "order status", "address change", "coupon")
ASKS = ("How do I", "Can I", "When can I", "Where do I", "Why can't I", "What happens if I", "Who helps me",
        "Is it possible to")
VERBS = ("get a", "check my", "change my", "cancel my", "use my", "ask about my", "track my", "renew my")


def questions(n):
    out = []
    for i in range(n):
        t, a, v = TOPICS[i % len(TOPICS)], ASKS[(i // len(TOPICS)) % len(ASKS)], VERBS[i // (len(TOPICS) * len(ASKS)) % len(VERBS)]
        out.append("Customer: %s %s %s? (case %d)\nAgent:" % (a, v, t, i))
    return out


def workload(args):
    rnd = random.Random(args.seed)
    qs = questions(args.questions)
    rnd.shuffle(qs)  # popularity rank has nothing to do with the wording
    weights = [1.0 / (k ** args.zipf) for k in range(1, args.questions + 1)]
    return [qs[i] for i in rnd.choices(range(args.questions), weights=weights, k=args.requests)]


def start_redis():
    exe = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        sys.exit("response-cache: no redis-server (apt-get install redis-server, or REDIS_SERVER=PATH)")
    port = free_port()
    d = os.path.join(TMP, "redis")
    os.makedirs(d, exist_ok=True)
    p = Proc([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "", "--appendonly", "no",
              "--daemonize", "no"], os.path.join(d, "redis.log"))
    wait_log(p, b"Ready to accept connections")
    return p, port


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {}
    for line in text.splitlines():
        if line.startswith("corvid_response_cache_"):
            name = line.split("{")[0].replace("corvid_response_cache_", "").replace("_total", "")
            got[name] = float(line.split()[-1])
    return got


def run(model, prompts, args, cache_flags, name):
    import grpc
    pb = proto_modules()[0]
    port, mport = free_port(), free_port()
    srv = Proc([os.path.join(BIN, "corvid-server"), "--listen", "127.0.0.1:%d" % port, "--model", model,
                "--metrics-listen", "127.0.0.1:%d" % mport, "--threads", str(args.threads),
                "--max-running", str(args.concurrency)] + cache_flags, os.path.join(TMP, "corvid-%s.log" % name))
    try:
        wait_log(srv, b'"model ready"')
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        def one(prompt):
            req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=args.max_tokens,
                                                                               temperature=0))
            t0 = time.perf_counter()
            final = None
            for m in rpc(req, timeout=600):
                if m.WhichOneof("kind") == "final":
                    final = m.final
            return time.perf_counter() - t0, final.cached, final.usage.completion_tokens

        before = load()
        out, elapsed = run_clients(args.concurrency, prompts, one)
        m = metrics("http://127.0.0.1:%d" % mport)
        ch.close()
        hits = [d for d, c, _ in out if c]
        misses = [d for d, c, _ in out if not c]
        r = {"requests": len(out), "elapsed_s": elapsed, "requests_per_s": len(out) / elapsed,
             "hit_rate": len(hits) / len(out), "load_before": before, "load_after": load(),
             "completion_tokens": sum(n for _, _, n in out)}
        for label, xs in (("hit", hits), ("miss", misses)):
            r[label + "_latency_ms_p50"] = 1e3 * pct(xs, 0.5) if xs else None
            r[label + "_latency_ms_p99"] = 1e3 * pct(xs, 0.99) if xs else None
        if m:
            r["server_counters"] = {k: m[k] for k in ("lookups", "hits", "stores", "errors", "bytes") if k in m}
        return r
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(DATA, "models", "stories260K.gguf"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--questions", type=int, default=500)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    prompts = workload(args)
    redis, rport = start_redis()
    try:
        res = {"none": run(args.model, prompts, args, [], "none"),
               "memory": run(args.model, prompts, args, ["--response-cache", "memory"], "memory"),
               "redis": run(args.model, prompts, args, ["--response-cache", "redis", "--response-cache-redis",
                                                        "127.0.0.1:%d" % rport], "redis")}
    finally:
        redis.stop()
        subprocess.run(["rm", "-rf", TMP])
    out = {"model": os.path.basename(args.model), "requests": args.requests, "questions": args.questions,
           "distinct_asked": len(set(prompts)), "zipf": args.zipf, "concurrency": args.concurrency,
           "max_tokens": args.max_tokens, "threads": args.threads, "runs": res,
           "requests_per_s_memory_over_none": res["memory"]["requests_per_s"] / res["none"]["requests_per_s"],
           "requests_per_s_redis_over_none": res["redis"]["requests_per_s"] / res["none"]["requests_per_s"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
