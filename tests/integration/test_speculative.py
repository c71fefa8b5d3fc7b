"""Speculative decoding through corvid-server: greedy tokens with `--speculative 1`
(prompt lookup, and a draft model with --draft-model) are the tokens of
`--speculative 0`, for concurrent streams, on stories260K, Gemma 3 270M (sliding-window
rings rolled back) and Qwen2.5-Coder 0.5B (with a two-layer synthetic draft model that
carries Qwen's vocabulary: corvid-quantize --synthetic tiny-qwen2 --vocab-from), and
/metrics counts drafted and accepted tokens by drafter. A draft model with another
vocabulary stops the server at start with a message naming the first differing token.
The real models are a visible SKIP when `make models` has not run.
"""
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from corvid_testlib import DATA, GEMMA, QWEN, Checks, Server, free_port, have_model, proto_modules

pb, _, _ = proto_modules()
BIN = os.environ["CORVID_BIN"]
STORIES = os.path.join(DATA, "models", "stories260K.gguf")
# Text the answers copy: a story to continue, a passage to quote, a function to rewrite.
STORY = ["Once upon a time, there was a little girl named Lily. She loved to play outside. Once upon a time,",
         "Tom had a red ball. Tom had a red ball. Tom had a",
         "The sun was hot. The little dog ran to the park.",
         "Lily and Ben"]
GROUNDED = [
    "Passage: The Orinoco crossing opened in 2006 and carries four road lanes over the river near Ciudad "
    "Guayana.\nQuestion: When did the Orinoco crossing open and what does it carry? Quote the passage.\nAnswer: "
    "The passage says: \"The Orinoco crossing",
    "def add(a, b):\n    return a + b\n\n# The same function with type hints:\ndef add(",
]


def generate(addr, prompt, n, out, temperature=0.0):
    with grpc.insecure_channel(addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        sp = pb.SamplingParams(max_tokens=n, temperature=temperature, ignore_eos=True)
        if temperature:
            sp.top_k, sp.top_p = 40, 0.95
            sp.seed.value = 11
        req = pb.GenerateRequest(prompt=prompt, sampling=sp)
        for msg in rpc(req, timeout=300):
            if msg.WhichOneof("kind") == "chunk":
                out.extend(msg.chunk.token_ids)


def concurrent(addr, prompts, n, temperature=0.0):
    outs = [[] for _ in prompts]
    threads = [threading.Thread(target=generate, args=(addr, p, n, o, temperature)) for p, o in zip(prompts, outs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def spec_metrics(url, version):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    got = {}
    for name in ("corvid_spec_drafted_tokens", "corvid_spec_accepted_tokens"):
        for s in fams[name].samples:
            if s.labels.get("version") == version:
                got[(name[len("corvid_spec_"):-len("_tokens")], s.labels["drafter"])] = s.value
    return got


def serve(model, prompts, n, *flags, temperature=0.0):
    mport = free_port()
    # Sampled: one stream at a time. Which requests share a step changes the last bits of
    # some logits (so a seeded draw, with or without speculation) but not greedy tokens.
    running = "1" if temperature else "8"
    srv = Server("--model", model, "--threads", "2", "--max-running", running, "--metrics-listen",
                 "127.0.0.1:%d" % mport, *flags, ready_timeout=120)
    try:
        outs = concurrent(srv.addr, prompts, n, temperature)
        return outs, spec_metrics("http://127.0.0.1:%d" % mport, os.path.basename(model)[:-len(".gguf")])
    finally:
        srv.stop()


def same_tokens(model, prompts, n, drafter, *flags, temperature=0.0):
    want, off = serve(model, prompts, n, "--speculative", "0", temperature=temperature)
    assert all(len(o) == n for o in want), [len(o) for o in want]
    assert sum(off.values()) == 0, off
    got, on = serve(model, prompts, n, "--speculative", "1", *flags, temperature=temperature)
    for i, (a, b) in enumerate(zip(got, want)):
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        assert a == b, "request %d: first difference at token %s" % (i, same)
    print("  %s %s: %s" % (os.path.basename(model), " ".join(flags), on))
    assert on[("drafted", drafter)] > 0, on
    assert on[("accepted", drafter)] <= on[("drafted", drafter)], on
    return on


def lookup_accepts(model, prompts, n):
    on = same_tokens(model, prompts, n, "lookup")
    assert on[("accepted", "lookup")] > 0, on


def seeded_lookup(model, prompts, n):
    """Sampled with a seed, one stream at a time, with lookup: the same streams again.
    (Against --speculative 0 they match only where rows verified in one batch get the
    bits single rows get; test_engine checks that where it holds.)"""
    first, on = serve(model, prompts, n, "--speculative", "1", temperature=0.8)
    again, _ = serve(model, prompts, n, "--speculative", "1", temperature=0.8)
    assert all(len(o) == n for o in first), [len(o) for o in first]
    assert first == again, [a == b for a, b in zip(first, again)]
    assert on[("drafted", "lookup")] > 0, on


def self_draft(model, prompts, n):
    """The model as its own draft (lookup asks for 8-token matches): every draft is kept."""
    on = same_tokens(model, prompts, n, "draft_model", "--draft-model", model, "--spec-ngram", "8")
    assert on[("accepted", "draft_model")] == on[("drafted", "draft_model")], on


def synthetic_draft(model, prompts, n, tmp):
    path = os.path.join(tmp, "draft.gguf")
    subprocess.run([os.path.join(BIN, "corvid-quantize"), "--synthetic", "tiny-qwen2", "--type", "Q8_0",
                    "--vocab-from", model, path], check=True, capture_output=True, timeout=120)
    same_tokens(model, prompts, n, "draft_model", "--draft-model", path, "--spec-ngram", "8")


def foreign_vocabulary(tmp):
    path = os.path.join(tmp, "foreign.gguf")
    subprocess.run([os.path.join(BIN, "corvid-quantize"), "--synthetic", "tiny", "--type", "F32", path],
                   check=True, capture_output=True, timeout=120)
    r = subprocess.run([os.path.join(BIN, "corvid-server"), "--model", STORIES, "--draft-model", path,
                        "--listen", "127.0.0.1:%d" % free_port(), "--threads", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r
    assert "draft model" in r.stderr and "vocabulary" in r.stderr, r.stderr
    print("  " + r.stderr.strip().splitlines()[-1])


def main():
    c = Checks()
    with tempfile.TemporaryDirectory(prefix="corvid-spec-") as tmp:
        c.run("stories260K: lookup keeps the greedy tokens of 4 concurrent streams", lookup_accepts, STORIES,
              STORY, 64)
        c.run("stories260K: seeded sampled streams repeat with lookup", seeded_lookup, STORIES, STORY, 64)
        c.run("stories260K: the model as its own draft keeps the tokens, every draft kept", self_draft, STORIES,
              STORY, 64)
        c.run("a draft model with another vocabulary is refused at start", foreign_vocabulary, tmp)
        if have_model(GEMMA, "Gemma 3 270M speculative checks"):
            c.run("Gemma 3 270M: lookup keeps the greedy tokens (sliding-window rings)", lookup_accepts, GEMMA,
                  GROUNDED, 24)
        if have_model(QWEN, "Qwen2.5-Coder 0.5B speculative checks"):
            c.run("Qwen2.5-Coder 0.5B: lookup keeps the greedy tokens", lookup_accepts, QWEN, GROUNDED, 24)
            c.run("Qwen2.5-Coder 0.5B: a 2-layer synthetic draft with its vocabulary keeps the tokens",
                  synthetic_draft, QWEN, GROUNDED, 12, tmp)
    c.finish()


if __name__ == "__main__":
    sys.exit(main())
