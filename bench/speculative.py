#!/usr/bin/python3
"""bench/speculative.py: single-stream decode speed with and without speculative decoding.

  bench/speculative.py [--model FILE] [--draft-model FILE] [--runs 3] [--max-tokens 160] [--threads N]

One stream at a time, greedy, through gRPC Chat to corvid-server started with
`--speculative 1` and with `--speculative 0` (alternated run by run, so that a change in
machine load hits both). Two workloads:
  grounded    answers that quote the passages they are given (the retrieved context a
              RAG prompt carries: prompt lookup drafts from it) and code edits that
              rewrite a given function;
  ungrounded  open questions with nothing to copy from.
Decode tokens/s is client-side, per request: (completion tokens - 1) / (last chunk -
first chunk), so prefill (the same with and without speculation) is left out; a
workload's figure is the sum of its tokens over the sum of its decode times, and the
JSON gives the median over the runs. Greedy tokens must be the same with and without
speculation (the JSON says whether they were, per prompt). Drafted and accepted tokens
come from the server's /metrics.

Default model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M from `make models`. --draft-model adds
a draft model to the speculating server. Prints one JSON object; each run's figures go
to stderr with the host's load average (the host may be shared: run timing under
`flock /tmp/corvid-bench.lock`).
"""
import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
from corvid_testlib import BIN, QWEN, TMP, free_port, proto_modules  # noqa: E402
from benchlib import Proc, load, wait_log  # noqa: E402

PASSAGES = (
    "[1] The Orinoco crossing is a cable-stayed bridge over the Orinoco River in Venezuela. It opened on "
    "13 November 2006, carries four lanes of road traffic and a single railway line, and has a main span "
    "of 300 metres between its two towers, each 120 metres tall.\n"
    "[2] Construction of the crossing began in 2001 and was carried out by a consortium led by Odebrecht. "
    "The total cost was about 1.2 billion US dollars, and the bridge links the cities of Ciudad Guayana "
    "and Soledad.\n"
    "[3] A third bridge over the Orinoco, planned between Caicara del Orinoco and Cabruta, was started in "
    "2006; its completion has been delayed several times because of funding problems.\n")
FUNCTION = '''def moving_average(values, window):
    result = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            result.append(total / window)
    return result
'''
FUNCTION2 = '''def parse_config(path):
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings
'''
GROUNDED = [
    [{"role": "system", "content": "Answer only from the passages below and quote the sentences you use, "
                                   "citing them as [n].\n\n" + PASSAGES},
     {"role": "user", "content": "When did the Orinoco crossing open, what does it carry, and how long is "
                                 "its main span? Quote the passages."}],
    [{"role": "system", "content": "Answer only from the passages below and quote the sentences you use, "
                                   "citing them as [n].\n\n" + PASSAGES},
     {"role": "user", "content": "Who built the Orinoco crossing, when did construction start and what did "
                                 "it cost? Quote the passages word for word."}],
    [{"role": "user", "content": "Rewrite this function so that it raises ValueError when window is not "
                                 "positive, and add type hints. Keep everything else the same and output "
                                 "only the code.\n\n```python\n" + FUNCTION + "```"}],
    [{"role": "user", "content": "Rewrite this function to skip lines without an '=' instead of failing. "
                                 "Keep everything else as it is and output only the whole function.\n\n"
                                 "```python\n" + FUNCTION2 + "```"}],
]
UNGROUNDED = [
    [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a "
                                 "bottle."}],
    [{"role": "user", "content": "Explain how a hash table handles collisions, with an example."}],
    [{"role": "user", "content": "Write a Python function that checks whether a string is a palindrome, "
                                 "ignoring case and punctuation."}],
    [{"role": "user", "content": "What are the main causes of inflation? Answer in a few paragraphs."}],
]


def spec_metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {}
    for line in text.splitlines():
        for name in ("corvid_spec_drafted_tokens_total", "corvid_spec_accepted_tokens_total"):
            if line.startswith(name + "{"):
                drafter = line.split('drafter="')[1].split('"')[0]
                key = "%s_%s" % (name.split("_")[2], drafter)
                got[key] = got.get(key, 0) + float(line.split()[-1])
    return got


def serve(args, spec, workloads):
    import grpc
    pb = proto_modules()[0]
    port, mport = free_port(), free_port()
    argv = [os.path.join(BIN, "corvid-server"), "--listen", "127.0.0.1:%d" % port, "--model", args.model,
            "--metrics-listen", "127.0.0.1:%d" % mport, "--max-running", "4", "--threads", str(args.threads),
            "--prefix-cache", "0", "--speculative", str(spec)]
    if spec and args.draft_model:
        argv += ["--draft-model", args.draft_model]
    srv = Proc(argv, os.path.join(TMP, "spec-bench-%d.log" % spec))
    try:
        wait_log(srv, b'"model ready"')
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        rpc = ch.unary_stream("/corvid.v1.Inference/Chat", request_serializer=pb.ChatRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        out = {}
        for name, convs in workloads.items():
            before = spec_metrics("http://127.0.0.1:%d" % mport)
            tokens, seconds, ids = 0, 0.0, []
            for conv in convs:
                req = pb.ChatRequest(messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in conv],
                                     sampling=pb.SamplingParams(temperature=0, max_tokens=args.max_tokens))
                got, first, last = [], None, None
                for msg in rpc(req, timeout=600):
                    if msg.WhichOneof("kind") == "chunk" and msg.chunk.token_ids:
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        got.extend(msg.chunk.token_ids)
                if len(got) > 1:
                    tokens += len(got) - 1
                    seconds += last - first
                ids.append(got)
            after = spec_metrics("http://127.0.0.1:%d" % mport)
            out[name] = {"tok_s": tokens / seconds if seconds else 0.0, "tokens": tokens, "ids": ids,
                         "spec": {k: after[k] - before.get(k, 0) for k in after}}
        return out
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=QWEN)
    ap.add_argument("--draft-model", default="")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit("%s: not found (run `make models`)" % args.model)
    workloads = {"grounded": GROUNDED, "ungrounded": UNGROUNDED}
    runs = {0: [], 1: []}
    loads = [load()]
    for r in range(args.runs):
        for spec in ((0, 1) if r % 2 == 0 else (1, 0)):
            res = serve(args, spec, workloads)
            runs[spec].append(res)
            print("run %d speculative %d: %s (load %s)" % (
                r, spec, {k: "%.1f tok/s" % v["tok_s"] for k, v in res.items()}, load()), file=sys.stderr)
        loads.append(load())
    summary = {"model": os.path.basename(args.model), "draft_model": os.path.basename(args.draft_model) or None,
               "runs": args.runs, "max_tokens": args.max_tokens, "threads": args.threads, "load": loads}
    for name in workloads:
        base = statistics.median(x[name]["tok_s"] for x in runs[0])
        spec = statistics.median(x[name]["tok_s"] for x in runs[1])
        same = [a == b for a, b in zip(runs[0][0][name]["ids"], runs[1][0][name]["ids"])]
        same_all = all(x[name]["ids"] == runs[0][0][name]["ids"] for x in runs[0] + runs[1])
        summary[name] = {"tok_s_base": round(base, 2), "tok_s_spec": round(spec, 2),
                         "speedup": round(spec / base, 3) if base else None,
                         "tokens": runs[1][0][name]["tokens"], "identical_per_prompt": same,
                         "identical_all_runs": same_all, "spec_counts": runs[1][0][name]["spec"]}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
