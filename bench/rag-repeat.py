#!/usr/bin/python3
"""bench/rag-repeat.py: bench-rag-qa's question set asked twice; the second pass's TTFT.

  bench/rag-repeat.py [--model qwen|gemma] [--subset ci|IDS] [--max-tokens 16] [--threads 2]

Builds bench-rag-qa's knowledge base, starts corvid-server on the model three times
(no prefix cache, no response cache; the prefix cache; the prefix cache and
`--response-cache memory`) and asks every question with RAG through gRPC, greedy, one
at a time, then all of them again. The second pass sends the same prompts, so the
prefix cache finds their KV (all but the last block) and the response cache their
whole answer. TTFT is the server's (Final.time_to_first_token_ms). Prints one JSON
object: per configuration each pass's TTFT p50 and p90, the second pass's hits, and the
pass-1 / pass-2 ratio; the host's load average before each pass (the host is shared).
"""
import argparse
import importlib.machinery
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
qa = importlib.machinery.SourceFileLoader("bench_rag_qa", os.path.join(HERE, "bench-rag-qa")).load_module()

from corvid_testlib import MODELS, TMP, Server, proto_modules  # noqa: E402 (bench-rag-qa put it on the path)
from benchlib import load, pct  # noqa: E402

CONFIGS = [("no_cache", ["--prefix-cache", "0"]),
           ("prefix_cache", ["--prefix-cache", "1"]),
           ("prefix_and_response_cache", ["--prefix-cache", "1", "--response-cache", "memory"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen", choices=sorted(qa.MODEL_FILES))
    ap.add_argument("--subset", default=None)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    path = os.path.join(MODELS, qa.MODEL_FILES[a.model])
    if not os.path.exists(path):
        sys.exit("rag-repeat: %s not found (run `make models`)" % path)
    api = qa.MODEL_API[a.model]
    questions = qa.load_questions(a.subset)
    kb = qa.build_index(TMP)
    pb = proto_modules()[0]
    out = {"bench": "rag-repeat", "model": os.path.basename(path), "api": api, "questions": len(questions),
           "max_tokens": a.max_tokens, "threads": a.threads, "configs": {}}
    for name, flags in CONFIGS:
        srv = Server("--model", path, "--rag-kb", "qa=" + kb, "--threads", str(a.threads), *flags, ready_timeout=300)
        try:
            passes = []
            for p in range(2):
                before = load()
                ttft, cached = [], 0
                for q in questions:
                    _, _, fin, _ = qa.ask(srv.addr, pb, q["q"], True, api, a.max_tokens)
                    if not fin.default_answer:  # the configured answer runs no model: no TTFT to compare
                        ttft.append(fin.time_to_first_token_ms)
                        cached += fin.cached
                passes.append({"ttft_ms_p50": statistics.median(ttft), "ttft_ms_p90": pct(ttft, 0.9),
                               "answered_by_model_or_cache": len(ttft), "cached": cached, "load_before": before})
                print("%s pass %d: %s" % (name, p + 1, json.dumps(passes[-1])), file=sys.stderr, flush=True)
            out["configs"][name] = {"pass1": passes[0], "pass2": passes[1],
                                    "ttft_p50_pass1_over_pass2": passes[0]["ttft_ms_p50"] / passes[1]["ttft_ms_p50"]}
        finally:
            srv.stop()
    c = out["configs"]
    out["pass2_ttft_p50_no_cache_over_prefix_cache"] = (c["no_cache"]["pass2"]["ttft_ms_p50"] /
                                                        c["prefix_cache"]["pass2"]["ttft_ms_p50"])
    out["pass2_ttft_p50_no_cache_over_response_cache"] = (c["no_cache"]["pass2"]["ttft_ms_p50"] /
                                                          c["prefix_and_response_cache"]["pass2"]["ttft_ms_p50"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
