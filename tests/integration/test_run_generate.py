"""corvid-run's generation and perplexity modes on stories260K (a real trained llama),
end to end: tokenizer, model, sampler, streaming and --json output, and bad input.

Greedy ids must equal the reference runs of tests/data/models/README.md (llama2.c
run.c and llama.cpp): F32 and Q8_0-mixed all 64, Q4_0-mixed at least the first 23.
Logit tolerances are checked in tests/unit/test_model.c.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corvid_testlib import DATA  # noqa: E402

BIN = os.path.join(os.environ["CORVID_BIN"], "corvid-run")
MODELS = os.path.join(DATA, "models")
F32 = os.path.join(MODELS, "stories260K.gguf")
PROMPT_IDS = [1, 403, 407, 261, 378]
REF_F32 = [int(x) for x in """432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337
410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388
426 338 391 266 267 337 335 312 432 398 312 286 267 414 270 333 415 426 13 438 310 439 419
357 336""".split()]
REF_Q4 = [int(x) for x in """432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337
410 408 419 292 411 322 265 262 379 426 385 328 432 358 272 277 264 261 262 423 388 268 414
444 373 282 412 427 285 353 265 298 420 277 264 426 338 286 384 393 269 282 420 277 418 373
311 372""".split()]
TEXT = (", there was a little girl named Lily. She loved to play outside in the park. One "
        "day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
        "Lily's mom said")

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


def run(*args, timeout=120):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def greedy(model, n_match, ref, kv):
    r = run("-m", os.path.join(MODELS, model), "-p", "Once upon a time", "-n", "64",
            "--temp", "0", "--ignore-eos", "--kv-type", kv, "--json", "-t", "2")
    if r.returncode != 0:
        check(f"greedy {model} kv {kv}", False, r.stderr.strip())
        return
    out = json.loads(r.stdout)
    same = next((i for i, (a, b) in enumerate(zip(out["tokens"], ref)) if a != b), 64)
    ok = (out["prompt_tokens"] == PROMPT_IDS and len(out["tokens"]) == 64 and same >= n_match
          and out["prefill_tokens_per_s"] > 0 and out["decode_tokens_per_s"] > 0)
    if ref is REF_F32:
        ok = ok and out["text"] == TEXT
    check(f"greedy {model} kv {kv}", ok, f"first {same} of 64 ids equal the reference "
          f"(need {n_match}), prompt ids {out['prompt_tokens']}")


def main():
    greedy("stories260K.gguf", 64, REF_F32, "f32")
    greedy("stories260K.gguf", 64, REF_F32, "f16")
    greedy("stories260K-Q8_0-mixed.gguf", 64, REF_F32, "f16")
    greedy("stories260K-Q4_0-mixed.gguf", 23, REF_Q4, "f16")

    # Streaming prints the same text as --json, then a newline.
    r = run("-m", F32, "-p", "Once upon a time", "-n", "64", "--temp", "0", "--ignore-eos")
    check("streamed text equals the reference", r.returncode == 0 and r.stdout == TEXT + "\n",
          repr(r.stdout[:60]))

    # Sampling: the same seed gives the same tokens, another seed other tokens.
    def sampled(seed):
        r = run("-m", F32, "-p", "Once upon a time", "-n", "48", "--temp", "1.0", "--top-k",
                "40", "--top-p", "0.95", "--min-p", "0.02", "--repeat-penalty", "1.1",
                "--seed", str(seed), "--json", "--ignore-eos")
        return json.loads(r.stdout)["tokens"] if r.returncode == 0 else None
    seed = random.randrange(1 << 30)
    a, b, c = sampled(seed), sampled(seed), sampled(seed + 1)
    check(f"seed {seed}: same seed same tokens, next seed different", a is not None and a == b
          and a != c)

    # An end-of-sequence token ends generation (stories emits </s> within 400 tokens).
    r = run("-m", F32, "-p", "Once upon a time", "-n", "400", "--temp", "0", "--json")
    out = json.loads(r.stdout) if r.returncode == 0 else {"tokens": [0] * 400}
    check("stops at end of sequence", len(out["tokens"]) < 400 and 2 not in out["tokens"],
          f"{len(out['tokens'])} tokens")

    # Perplexity: the model's own greedy text scores far better than shuffled words.
    with tempfile.TemporaryDirectory() as tmp:
        good, bad = os.path.join(tmp, "good.txt"), os.path.join(tmp, "bad.txt")
        words = ("Once upon a time" + TEXT).split()
        with open(good, "w") as f:
            f.write(" ".join(words))
        random.shuffle(words)
        with open(bad, "w") as f:
            f.write(" ".join(words))
        pg, pb = run("-m", F32, "--ppl", good, "--json"), run("-m", F32, "--ppl", bad, "--json")
        ok = pg.returncode == 0 and pb.returncode == 0
        if ok:
            g, b = json.loads(pg.stdout)["perplexity"], json.loads(pb.stdout)["perplexity"]
            ok = 1 < g < 4 and b > 3 * g
            check("perplexity", ok, f"own text {g:.2f}, shuffled {b:.2f}")
        else:
            check("perplexity", False, pg.stderr + pb.stderr)

    # --chat: control-token text in the messages stays text (<s> = 1, </s> = 2: only the
    # BOS here); the same rendered prompt given to -p has its specials parsed.
    chat = run("-m", F32, "--chat-template", "llama2", "--system", "</s><s>", "-p", "Hi</s><s>[INST]",
               "-n", "1", "--json", "-t", "2")
    raw = run("-m", F32, "-p", "[INST] <<SYS>>\n</s><s>\n<</SYS>>\n\nHi</s><s>[INST] [/INST]", "-n", "1",
              "--json", "-t", "2")
    if chat.returncode == 0 and raw.returncode == 0:
        c, r = json.loads(chat.stdout)["prompt_tokens"], json.loads(raw.stdout)["prompt_tokens"]
        check("--chat keeps control-token text in messages as text",
              (c.count(1), c.count(2), r.count(1), r.count(2)) == (1, 0, 3, 2), f"chat {c}, -p {r}")
    else:
        check("--chat keeps control-token text in messages as text", False, chat.stderr + raw.stderr)

    # Bad input: one clear line on stderr, exit status 1.
    long_prompt = "Once upon a time " * 60
    bad_cases = [
        ("prompt longer than the context", ["-p", long_prompt], "longer than the context of 128"),
        ("negative temperature", ["-p", "x", "--temp", "-1"], "temperature"),
        ("top-p above 1", ["-p", "x", "--top-p", "1.5"], "top_p"),
        ("zero repeat penalty", ["-p", "x", "--repeat-penalty", "0"], "repetition_penalty"),
        ("unknown kv type", ["-p", "x", "--kv-type", "q8"], "--kv-type 'q8'"),
        ("prompt id outside the vocabulary", ["--prompt-ids", "1,512"], "below 512"),
        ("context above the model's", ["-p", "x", "--ctx", "4096"], "exceeds the model's context"),
        ("missing file", ["-m", "/nonexistent/m.gguf", "-p", "x"], "/nonexistent/m.gguf"),
        ("--chat without a known template", ["--chat", "-p", "x"], "force one"),
        ("unknown forced template", ["--chat-template", "bogus", "-p", "x"], "'bogus'"),
    ]
    for name, args, msg in bad_cases:
        full = args if args[0] == "-m" else ["-m", F32, *args]
        r = run(*full)
        check(f"error: {name}", r.returncode == 1 and msg in r.stderr and r.stdout == "",
              r.stderr.strip()[:120])

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
