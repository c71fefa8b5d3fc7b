"""Real GGUF models through corvid-run: Gemma 3 270M (Q4_K_M: Q4_K, Q6_K, Q5_0, Q8_0)
and Qwen2.5-Coder 0.5B Instruct (Q4_K_M), fetched by `make models` into
$CORVID_MODELS. A model that is not there is a visible SKIP, not a pass.

The Gemma 3 270M file is the pretrained model (no chat template, general.name has no
"it"): it answers a plain question prompt and continues patterns, but does not follow
chat turns; the chat check runs on Qwen2.5's instruct model. Pinned greedy tokens
were chosen where every top-1 over top-2 logit margin is at least 0.3, so that
kernel-level rounding changes (seen up to about 0.1 here) cannot flip them.
"""
import json
import os
import subprocess
import sys

BIN = os.path.join(os.environ["CORVID_BIN"], "corvid-run")
MODELS = os.environ.get("CORVID_MODELS", os.path.expanduser("~/.cache/corvid/models"))
GEMMA = os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf")
QWEN = os.path.join(MODELS, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")

results = []
skipped = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


def run_json(model, *args):
    r = subprocess.run([BIN, "-m", model, "--temp", "0", "--json", "-t", "2", *args],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return json.loads(r.stdout), ""


def pinned(name, model, prompt, want_prompt, want):
    out, err = run_json(model, "-p", prompt, "-n", str(len(want)))
    ok = out is not None and out["prompt_tokens"] == want_prompt and out["tokens"] == want
    check(f"{name}: pinned greedy tokens", ok,
          err or f"prompt {out['prompt_tokens']} -> {out['tokens']} {out['text']!r}")


def answers(name, model, args, needle):
    out, err = run_json(model, *args)
    ok = out is not None and needle in out["text"]
    check(f"{name}: answers", ok, err or repr(out["text"][:80]))


def main():
    if os.path.exists(GEMMA):
        pinned("gemma3", GEMMA, "Monday, Tuesday, Wednesday,", [2, 49381, 236764, 9863, 236764, 10119, 236764],
               [9853, 236764, 7672, 236764, 8224, 236764, 8174, 236764, 532, 8492, 236764, 9863,
                236764, 10119, 236764, 9853])
        answers("gemma3", GEMMA, ["-p", "Question: What is the capital of France?\nAnswer:", "-n", "4"],
                "Paris")
    else:
        skipped.append(GEMMA)
    if os.path.exists(QWEN):
        pinned("qwen2", QWEN, "def fibonacci(n):", [750, 75698, 1445, 1648],
               [198, 262, 421, 308, 2651, 220, 15, 510, 286, 470, 330, 7928, 1946, 698, 262, 4409])
        answers("qwen2 --chat", QWEN, ["--chat", "-p", "What is the capital of France?", "-n", "32"],
                "Paris")
        # The chat turn ends on <|im_end|>, well before the token limit.
        out, err = run_json(QWEN, "--chat", "-p", "Say hello.", "-n", "64")
        check("qwen2 --chat: stops at the end of its turn", out is not None and len(out["tokens"]) < 64,
              err or f"{len(out['tokens'])} tokens: {out['text']!r}")
    else:
        skipped.append(QWEN)
    for path in skipped:
        print(f"SKIP {os.path.basename(path)}: not in {MODELS} (run `make models`)")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
