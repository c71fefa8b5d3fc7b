#!/usr/bin/python3
"""bench/prefix-cache.py: the shared-prefix workload, with and without the prefix cache.

  bench/prefix-cache.py [--model FILE] [--requests 64] [--concurrency 8] [--system-tokens 1000]
                        [--question-tokens 50] [--max-tokens 16] [--runs 1] [--threads N]

N requests share one system prompt of about --system-tokens tokens and each adds its own
question of about --question-tokens, laid out as a chat turn (system, user, assistant
headers in plain text, so that both servers get the same text); C client threads send
them back to back, greedy, through gRPC Generate to corvid-server started with
`--prefix-cache 1` and with `--prefix-cache 0` (alternated run by run, so that a change
in machine load hits both). TTFT is client-side, submit to the first token. The prefill
tokens each server computed come from its metrics: corvid_prefix_cache_queries_total -
corvid_prefix_cache_hits_total over the run.

Without --model, a synthetic tinyllama-1.1b Q4_0 (`corvid-quantize --synthetic`, seed 7)
is written to a temporary directory first.

LLAMA_SERVER names llama.cpp's llama-server binary (built outside the project): the same
prompts then go to it as /completion requests with cache_prompt on (its prompt cache:
one per slot, --parallel C slots), its prefill counted from each answer's
timings.prompt_n. Without it the JSON has no llamacpp fields.

Prints one JSON object: medians over the runs, and the ratios (each run's figures go to
stderr as they come, with the host's load average before and after: the host may be
shared, and a ratio measured under a changing load says less).
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
# Server processes die with this script (PR_SET_PDEATHSIG) and on its signals.
from corvid_testlib import BIN, TMP, free_port, proto_modules  # noqa: E402
from benchlib import Proc, load, pct, run_clients, wait_for, wait_log  # noqa: E402

WORDS = ("order refund shipping parcel account password invoice delivery address warranty return policy "
         "customer payment card store branch opening hours exchange receipt discount voucher member points "
         "subscription cancel upgrade plan device repair appointment agent support ticket escalation").split()


# ---- corvid ----

def corvid_metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {}
    for line in text.splitlines():
        for name in ("corvid_prefix_cache_queries_total", "corvid_prefix_cache_hits_total"):
            if line.startswith(name + "{"):
                got[name] = got.get(name, 0) + float(line.split()[-1])
    return got


def corvid_run(model, prompts, args, cache, tmp):
    import grpc
    pb = proto_modules()[0]
    port, mport = free_port(), free_port()
    log = os.path.join(tmp, "corvid-%d.log" % cache)
    srv = Proc([os.path.join(BIN, "corvid-server"), "--listen", "127.0.0.1:%d" % port, "--model", model,
                "--metrics-listen", "127.0.0.1:%d" % mport, "--max-running", str(args.concurrency),
                "--prefix-cache", str(cache), "--threads", str(args.threads),
                "--ctx", str(args.ctx)], log)
    try:
        wait_log(srv, b'"model ready"')
        url = "http://127.0.0.1:%d" % mport
        before = corvid_metrics(url)
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)

        def one(prompt):
            t0 = time.time()
            first = None
            req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=args.max_tokens,
                                                                               temperature=0, ignore_eos=True))
            for msg in rpc(req, timeout=3600):
                if first is None and msg.WhichOneof("kind") == "chunk" and msg.chunk.token_ids:
                    first = time.time() - t0
            return first, None

        load_before = load()
        res, elapsed = run_clients(args.concurrency, prompts, one)
        after = corvid_metrics(url)
        ch.close()
        q = after["corvid_prefix_cache_queries_total"] - before["corvid_prefix_cache_queries_total"]
        h = after["corvid_prefix_cache_hits_total"] - before["corvid_prefix_cache_hits_total"]
        return {"ttft_ms_p50": 1e3 * pct([r[0] for r in res], 0.5), "ttft_ms_p90": 1e3 * pct([r[0] for r in res], 0.9),
                "elapsed_s": elapsed, "prefill_tokens": q - h, "prompt_tokens_looked_up": q, "cache_hit_tokens": h,
                "load_before": load_before, "load_after": load()}
    finally:
        srv.stop()


def count_tokens(model, text):
    """Prompt tokens of text under model's tokenizer (corvid-run, BOS included)."""
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", model, "-p", text, "-n", "1", "--json", "-t", "1"],
                       capture_output=True, text=True, check=True)
    return len(json.loads(r.stdout)["prompt_tokens"])


# ---- llama.cpp ----

def llama_run(server, model, prompts, args, tmp):
    port = free_port()
    ctx_per_slot = args.ctx
    srv = Proc([server, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads),
                "-np", str(args.concurrency), "-c", str(ctx_per_slot * args.concurrency)],
               os.path.join(tmp, "llama-server.log"))

    def healthy():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        ok = c.getresponse().status == 200
        c.close()
        return ok or srv.p.poll() is not None

    try:
        wait_for(healthy, "llama-server")
        if srv.p.poll() is not None:
            raise RuntimeError("llama-server exited: see %s" % os.path.join(tmp, "llama-server.log"))

        def one(prompt):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
            body = json.dumps({"prompt": prompt, "n_predict": args.max_tokens, "temperature": 0, "stream": True,
                               "cache_prompt": True, "ignore_eos": True})
            t0 = time.time()
            c.request("POST", "/completion", body, {"Content-Type": "application/json"})
            resp = c.getresponse()
            first, prefill = None, None
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                ev = json.loads(line[6:])
                if first is None and ev.get("content"):
                    first = time.time() - t0
                if ev.get("stop"):
                    prefill = ev.get("timings", {}).get("prompt_n")
            c.close()
            return first, prefill

        load_before = load()
        res, elapsed = run_clients(args.concurrency, prompts, one)
        return {"load_before": load_before, "load_after": load(),
                "ttft_ms_p50": 1e3 * pct([r[0] for r in res if r[0]], 0.5),
                "ttft_ms_p90": 1e3 * pct([r[0] for r in res if r[0]], 0.9), "elapsed_s": elapsed,
                "prefill_tokens": sum(r[1] or 0 for r in res)}
    finally:
        srv.stop()


def build_prompts(model, args):
    """System prompt and questions of about the asked token counts (calibrated once)."""
    rnd = random.Random(1)
    words = lambda n: " ".join(rnd.choice(WORDS) for _ in range(n))
    per_word = (count_tokens(model, words(200)) - 1) / 200.0
    system = "You are the customer service assistant of a large store. " + words(int(args.system_tokens / per_word))
    prompts = ["<|system|>\n%s\n<|user|>\nQuestion %d: %s?\n<|assistant|>\n" % (
        system, i, words(int(args.question_tokens / per_word))) for i in range(args.requests)]
    return prompts, count_tokens(model, prompts[0])


def median_of(runs):
    """Medians of the numbers; the loads of every run, in order."""
    return {k: statistics.median(r[k] for r in runs) if not isinstance(runs[0][k], str) else [r[k] for r in runs]
            for k in runs[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--question-tokens", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    tmp = TMP
    try:
        model = args.model
        if not model:
            model = os.path.join(tmp, "tinyllama-1.1b-q4_0.gguf")
            subprocess.run([os.path.join(BIN, "corvid-quantize"), "--synthetic", "tinyllama-1.1b", "--type", "Q4_0",
                            "--seed", "7", model], check=True, stdout=subprocess.DEVNULL)
        prompts, prompt_tokens = build_prompts(model, args)
        args.ctx = prompt_tokens + args.max_tokens + 64
        llama = os.environ.get("LLAMA_SERVER")
        if llama and not os.access(llama, os.X_OK):
            sys.exit("prefix-cache: LLAMA_SERVER=%s is not an executable" % llama)
        if not llama:
            print("prefix-cache: LLAMA_SERVER is not set: no llama.cpp comparison", file=sys.stderr)
        on, off, peer = [], [], []
        for r in range(args.runs):
            for cache in ((1, 0) if r % 2 == 0 else (0, 1)):
                (on if cache else off).append(corvid_run(model, prompts, args, cache, tmp))
                print("run %d, corvid prefix_cache %d: %s" % (r, cache, json.dumps((on if cache else off)[-1])),
                      file=sys.stderr, flush=True)
            if llama:
                peer.append(llama_run(llama, model, prompts, args, tmp))
                print("run %d, llama.cpp: %s" % (r, json.dumps(peer[-1])), file=sys.stderr, flush=True)
        out = {"model": os.path.basename(model), "requests": args.requests, "concurrency": args.concurrency,
               "prompt_tokens": prompt_tokens, "system_tokens_asked": args.system_tokens,
               "question_tokens_asked": args.question_tokens, "max_tokens": args.max_tokens, "runs": args.runs,
               "threads": args.threads, "corvid_prefix_cache": median_of(on), "corvid_no_cache": median_of(off)}
        out["ttft_p50_no_cache_over_cache"] = out["corvid_no_cache"]["ttft_ms_p50"] / out["corvid_prefix_cache"]["ttft_ms_p50"]
        out["prefill_tokens_no_cache_over_cache"] = (out["corvid_no_cache"]["prefill_tokens"] /
                                                     max(1, out["corvid_prefix_cache"]["prefill_tokens"]))
        if peer:
            out["llamacpp"] = median_of(peer)
            out["ttft_p50_llamacpp_over_corvid_cache"] = out["llamacpp"]["ttft_ms_p50"] / out["corvid_prefix_cache"]["ttft_ms_p50"]
        print(json.dumps(out))
    finally:
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
