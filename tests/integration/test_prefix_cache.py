"""Prefix caching through corvid-server: requests that share a long prefix give the same
greedy tokens with `--prefix-cache 1` (the default) as with `--prefix-cache 0`, on
stories260K, Gemma 3 270M (with --kv-swa-full-cache 1: its sliding-window rings keep no
prefixes, which tests/unit/test_engine.c checks) and Qwen2.5 0.5B, and /metrics counts what was looked
up and found. The real models are a visible SKIP when `make models` has not run.
"""
import os
import sys
import threading
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from corvid_testlib import DATA, GEMMA, QWEN, Checks, Server, free_port, have_model, proto_modules

pb, _, _ = proto_modules()
STORIES = os.path.join(DATA, "models", "stories260K.gguf")
PREFIX = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
          "with her friends. Every morning she took her red ball and her little dog Max to the big tree "
          "near the pond, where the ducks swam and the birds sang.")
QUESTIONS = [" One day,", " Lily saw a big", " Max ran to the"]
N = 8


def generate(addr, prompt, out):
    with grpc.insecure_channel(addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=N, temperature=0,
                                                                           ignore_eos=True))
        for msg in rpc(req, timeout=300):
            if msg.WhichOneof("kind") == "chunk":
                out.extend(msg.chunk.token_ids)


def workload(addr):
    """The first prompt alone (its blocks get cached), then all of them at once."""
    first = []
    generate(addr, PREFIX + QUESTIONS[0], first)
    outs = [[] for _ in QUESTIONS]
    threads = [threading.Thread(target=generate, args=(addr, PREFIX + q, o)) for q, o in zip(QUESTIONS, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [first] + outs


def prefix_metrics(url, version):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    got = {}
    for name in ("corvid_prefix_cache_queries", "corvid_prefix_cache_hits", "corvid_prefix_cache_evictions",
                 "corvid_prefix_cache_blocks"):
        got[name] = next(s.value for s in fams[name].samples if s.labels.get("version") == version)
    return got


def serve(model, *flags):
    mport = free_port()
    srv = Server("--model", model, "--threads", "2", "--metrics-listen", "127.0.0.1:%d" % mport, *flags,
                 ready_timeout=120)
    try:
        outs = workload(srv.addr)
        version = os.path.basename(model)[:-len(".gguf")]
        return outs, prefix_metrics("http://127.0.0.1:%d" % mport, version)
    finally:
        srv.stop()


def same_tokens(model, cached_flags=()):
    want, off = serve(model, "--prefix-cache", "0")
    # Off: every prompt token is a miss (queries - hits = prefill computed either way).
    assert off["corvid_prefix_cache_queries"] >= 4 * 50 and off["corvid_prefix_cache_hits"] == 0, off
    assert off["corvid_prefix_cache_blocks"] == 0, off
    assert all(len(o) == N for o in want), [len(o) for o in want]
    got, on = serve(model, *cached_flags)
    for i, (a, b) in enumerate(zip(got, want)):
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        assert a == b, "request %d: first difference at token %s" % (i, same)
    print("  %s %s: %d of %d prompt tokens found cached, %d blocks cached" % (
        os.path.basename(model), " ".join(cached_flags), on["corvid_prefix_cache_hits"],
        on["corvid_prefix_cache_queries"], on["corvid_prefix_cache_blocks"]))
    # 4 requests of the ~50-token prefix: all but the first find most of it.
    assert on["corvid_prefix_cache_hits"] >= 3 * 32, on
    assert on["corvid_prefix_cache_blocks"] > 0, on


def main():
    c = Checks()
    c.run("stories260K: same tokens with and without the prefix cache, hits counted", same_tokens, STORIES)
    if have_model(GEMMA, "Gemma 3 270M prefix cache checks"):
        c.run("Gemma 3 270M --kv-swa-full-cache 1: same tokens with the prefix cache", same_tokens, GEMMA,
              ("--kv-swa-full-cache", "1"))
    if have_model(QWEN, "Qwen2.5 0.5B prefix cache checks"):
        c.run("Qwen2.5-Coder 0.5B: same tokens with and without the prefix cache", same_tokens, QWEN)
    c.finish()


if __name__ == "__main__":
    sys.exit(main())
