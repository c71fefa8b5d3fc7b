#!/usr/bin/env python3
"""structured-output: JSON-schema-constrained decoding on a real model, measured.

    bench/structured-output.py [--model GGUF] [--n 200] [--pairs 20] [--concurrency 4]
                               [--max-tokens 400] [--threads T]

Starts corvid-server (build/bin, or $CORVID_BIN) on a free loopback port and, through
gRPC Chat with SamplingParams.json_schema:
  1. validity: N generations at temperature 1.0 (seed i, the server's other defaults)
     round-robin over five schemas (nested objects, enums, arrays, $ref, anyOf, a
     pattern, a format), CONCURRENCY at a time; each output is validated with Python's
     jsonschema (Draft 2020-12) against its schema; finish reasons counted. Progress
     (one line per generation and per pair) goes to stderr.
  2. speed: PAIRS sequential pairs, each one constrained and one unconstrained request
     of the same prompt and length (ignore_eos, max_tokens = the constrained output's
     tokens), alternating which goes first; decode tokens/s per request from the
     server's own timings ((completion_tokens - 1) / (total - time to first token)).
     Reported: medians and the ratio of medians, with the median of per-pair ratios.
  3. compile time and mask cost off the decode loop: bench-grammar on each schema with
     one of the texts phase 1 produced.
Prints one JSON object (with `uptime`'s load average: the host may be shared).
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from corvid_testlib import BIN, QWEN, TMP, Server, proto_modules  # noqa: E402

import grpc  # noqa: E402
import jsonschema  # noqa: E402

pb = proto_modules()[0]

S = {"type": "string"}
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": dict(S, maxLength=40), "age": {"type": "integer"},
            "role": {"enum": ["engineer", "artist", "pilot", "teacher"]},
            "address": {"type": "object", "properties": {"city": dict(S, maxLength=30),
                                                         "zip": dict(S, pattern="^[0-9]{5}$")},
                        "required": ["city", "zip"], "additionalProperties": False},
            "skills": {"type": "array", "items": dict(S, maxLength=24), "minItems": 1, "maxItems": 4}},
        "required": ["name", "age", "role", "address", "skills"], "additionalProperties": False},
    "order": {
        "type": "object",
        "properties": {
            "order_id": dict(S, pattern="^ORD-[0-9]{4}$"),
            "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                "type": "object", "properties": {"sku": dict(S, maxLength=12), "qty": {"type": "integer"},
                                                 "size": {"enum": ["S", "M", "L"]}},
                "required": ["sku", "qty", "size"], "additionalProperties": False}},
            "express": {"type": "boolean"}},
        "required": ["order_id", "items", "express"], "additionalProperties": False},
    "event": {
        "type": "object",
        "properties": {
            "title": dict(S, maxLength=40), "date": dict(S, format="date"),
            "attendees": {"type": "array", "items": dict(S, maxLength=20), "maxItems": 4},
            "location": {"type": "object", "properties": {
                "city": dict(S, maxLength=30), "country": {"enum": ["FR", "DE", "JP", "US", "BR"]}},
                "required": ["city", "country"], "additionalProperties": False}},
        "required": ["title", "date", "attendees", "location"], "additionalProperties": False},
    "config": {
        "type": "object",
        "properties": {
            "service": {"enum": ["api", "worker", "scheduler"]}, "replicas": {"type": "integer"},
            "limits": {"type": "object", "properties": {"cpu": {"type": "number"}, "memory_mb": {"type": "integer"}},
                       "required": ["cpu", "memory_mb"], "additionalProperties": False},
            "features": {"type": "array", "items": {"enum": ["cache", "tracing", "tls", "metrics"]}, "maxItems": 4},
            "debug": {"type": "boolean"}},
        "required": ["service", "replicas", "limits", "features", "debug"], "additionalProperties": False},
    "recipe": {
        "type": "object",
        "$defs": {"ingredient": {"type": "object", "properties": {
            "item": dict(S, maxLength=24), "amount": {"type": "number"}, "unit": {"enum": ["g", "ml", "piece"]}},
            "required": ["item", "amount", "unit"], "additionalProperties": False}},
        "properties": {
            "name": dict(S, maxLength=40),
            "ingredients": {"type": "array", "items": {"$ref": "#/$defs/ingredient"}, "minItems": 1, "maxItems": 5},
            "vegetarian": {"type": "boolean"},
            "notes": {"anyOf": [dict(S, maxLength=60), {"type": "null"}]}},
        "required": ["name", "ingredients", "vegetarian", "notes"], "additionalProperties": False},
}
ASK = {"person": "Describe a fictional person.", "order": "Write a sample shop order.",
       "event": "Describe an upcoming event.", "config": "Write a deployment config for a service.",
       "recipe": "Give me a simple recipe."}


def chat(stub, name, seed, max_tokens, constrained=True, ignore_eos=False):
    sp = pb.SamplingParams(temperature=1.0, max_tokens=max_tokens, ignore_eos=ignore_eos)
    sp.seed.value = seed
    if constrained:
        sp.json_schema = json.dumps(SCHEMAS[name])
    req = pb.ChatRequest(messages=[pb.ChatMessage(role="system", content="You answer with JSON only."),
                                   pb.ChatMessage(role="user", content=ASK[name])], sampling=sp)
    text, final = [], None
    for r in stub(req, timeout=7200):  # a loaded host can take long; the server bounds work
        if r.HasField("chunk"):
            text.append(r.chunk.text)
        elif r.HasField("final"):
            final = r.final
    return "".join(text), final


def decode_rate(final):
    n = final.usage.completion_tokens
    span = (final.total_ms - final.time_to_first_token_ms) / 1000.0
    return (n - 1) / span if n > 1 and span > 0 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=QWEN)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    args = ["--model", a.model, "--max-running", str(max(4, a.concurrency))]
    if a.threads:
        args += ["--threads", str(a.threads)]
    srv = Server(*args, ready_timeout=300)
    out = {"model": os.path.basename(a.model), "load_before": os.getloadavg()}
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            stub = ch.unary_stream("/corvid.v1.Inference/Chat", request_serializer=pb.ChatRequest.SerializeToString,
                                   response_deserializer=pb.GenerateResponse.FromString)
            names = list(SCHEMAS)
            # 1. validity
            t0 = time.time()

            def one(i):
                name = names[i % len(names)]
                text, final = chat(stub, name, i + 1, a.max_tokens)
                try:
                    jsonschema.Draft202012Validator(SCHEMAS[name]).validate(json.loads(text))
                    err = None
                except (ValueError, jsonschema.ValidationError) as e:
                    err = str(e)[:200]
                print("gen %d %s tokens=%d %s" % (i, name, final.usage.completion_tokens, "valid" if err is None else
                                                   "INVALID " + err[:80]), file=sys.stderr, flush=True)
                return name, text, final, err

            with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
                results = list(pool.map(one, range(a.n)))
            valid = sum(1 for r in results if r[3] is None)
            reasons = {}
            for r in results:
                k = pb.FinishReason.Name(r[2].finish_reason)
                reasons[k] = reasons.get(k, 0) + 1
            out["validity"] = {
                "generations": a.n, "valid": valid, "schemas": len(names), "temperature": 1.0,
                "finish_reasons": reasons, "seconds": round(time.time() - t0, 1),
                "completion_tokens_median": statistics.median(r[2].usage.completion_tokens for r in results),
                "invalid_examples": [{"schema": r[0], "error": r[3], "text": r[1][:300]} for r in results if r[3]][:5]}
            # 2. speed, alternated
            with_s, without_s, ratios = [], [], []
            last_len = 64
            for p in range(a.pairs):
                name = names[p % len(names)]
                seed = 1000 + p
                if p % 2 == 0:
                    _, fc = chat(stub, name, seed, a.max_tokens)
                    last_len = fc.usage.completion_tokens
                    _, fu = chat(stub, name, seed, last_len, constrained=False, ignore_eos=True)
                else:
                    _, fu = chat(stub, name, seed, last_len, constrained=False, ignore_eos=True)
                    _, fc = chat(stub, name, seed, a.max_tokens)
                    last_len = fc.usage.completion_tokens
                rc, ru = decode_rate(fc), decode_rate(fu)
                print("pair %d %s with=%s without=%s tok/s" % (p, name, rc, ru), file=sys.stderr, flush=True)
                if rc and ru:
                    with_s.append(rc)
                    without_s.append(ru)
                    ratios.append(rc / ru)
            out["decode_tokens_per_s"] = {
                "pairs": len(ratios), "with_schema_median": statistics.median(with_s),
                "without_schema_median": statistics.median(without_s),
                "ratio_of_medians": statistics.median(with_s) / statistics.median(without_s),
                "median_pair_ratio": statistics.median(ratios)}
    finally:
        srv.stop()
    # 3. compile time and mask cost: one produced text per schema
    tmp = tempfile.mkdtemp(prefix="bench-grammar-", dir=TMP)
    cmd = [os.path.join(BIN, "bench-grammar"), "-m", a.model]
    for name in names:
        sample = next((r for r in results if r[0] == name and r[3] is None), None)
        if not sample:
            continue
        sp, tp = os.path.join(tmp, name + ".schema.json"), os.path.join(tmp, name + ".json")
        with open(sp, "w") as f:
            json.dump(SCHEMAS[name], f)
        with open(tp, "w") as f:
            f.write(sample[1])
        cmd += ["--schema", sp, "--text", tp]
    g = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    out["compile_ms_median_by_schema"] = {os.path.basename(s["schema"]).split(".")[0]: s["compile_ms"]
                                          for s in g["schemas"]}
    out["mask"] = {"vocab_build_ms": g["vocab_build_ms"], "sample_ms": g["sample_ms"],
                   "per_schema": [{k: s[k] for k in ("tokens", "mask_cold_ms", "mask_warm_ms", "masks_computed",
                                                     "configurations")} for s in g["schemas"]]}
    out["load_after"] = os.getloadavg()
    out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
