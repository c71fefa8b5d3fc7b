#!/usr/bin/env python3
"""Record llama.cpp's greedy ids and logits on a synthetic corvid model, as reference data.

Run by hand (never by CI) when a reference case is added or the synthetic writer changes;
CI only reads what it writes (tests/integration/test_llama_ref.py):

  LLAMA_CPP_DIR=/path/to/llama.cpp [LLAMA_CPP_COMMIT=34af94cd9ab2] \\
    tests/tools/record_llama_ref.py --synthetic qwen3-tiny --type F32 [--seed 0] \\
    [--name qwen3-tiny-f32] [--prompt TEXT]... [--n-gen 32] [--logit-rows 12]

LLAMA_CPP_DIR is a llama.cpp checkout built with cmake into its build/ folder (libllama
and libggml* under build/bin or build/src, build/ggml/src). The script writes the model
with build/bin/corvid-quantize (CORVID_BIN overrides the folder) into a temp dir,
compiles tests/tools/llama_ref.c against the peer, runs it, and writes into
tests/data/llama-ref/: NAME.json (the llama.cpp commit, how to rebuild the model and its
sha256, per prompt: text, llama.cpp's prompt ids, 32 greedy ids, each step's top-2 gap
and largest |logit|, logit row count) and NAME.logits.f32 (each prompt's first rows of logits, raw float32, prompts one
after another). The model file itself is not stored: the test rebuilds it (the
synthetic writer is deterministic) and checks the sha256.
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_PROMPTS = ["Once upon a time", "The capital of France is", "def fib(n): return"]


def die(msg):
    print("record_llama_ref: " + msg, file=sys.stderr)
    sys.exit(1)


def peer_commit(peer):
    c = os.environ.get("LLAMA_CPP_COMMIT")
    if c:
        return c
    r = subprocess.run(["git", "-C", peer, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if r.returncode:
        die(f"{peer} is not a git checkout: set LLAMA_CPP_COMMIT to the commit it was built from")
    return r.stdout.strip()


def build_tool(peer, tmp):
    libs = {}
    for name in ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"):
        hits = sorted(glob.glob(os.path.join(peer, "build", "**", name), recursive=True))
        if name in ("libllama.so", "libggml.so", "libggml-base.so") and not hits:
            die(f"no {name} under {peer}/build: build llama.cpp there with cmake first")
        if hits:
            libs[name] = os.path.dirname(hits[0])
    exe = os.path.join(tmp, "llama_ref")
    cmd = ["gcc", "-O2", "-std=c11", "-o", exe, os.path.join(HERE, "llama_ref.c"),
           "-I" + os.path.join(peer, "include"), "-I" + os.path.join(peer, "ggml", "include")]
    for d in sorted(set(libs.values())):
        cmd += ["-L" + d, "-Wl,-rpath," + d]
    cmd += ["-lllama", "-lggml", "-lggml-base", "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        die("compiling llama_ref.c failed:\n" + r.stderr)
    return exe


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", required=True, help="corvid-quantize shape")
    ap.add_argument("--type", required=True, help="corvid-quantize type (F32, Q8_0, Q4_K_M, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="case name (default SHAPE-type, lowercase)")
    ap.add_argument("--prompt", action="append", help="prompt text (default: three built-in prompts)")
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--logit-rows", type=int, default=12, help="logit rows kept per prompt")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "data", "llama-ref"))
    a = ap.parse_args()
    peer = os.environ.get("LLAMA_CPP_DIR")
    if not peer or not os.path.isdir(os.path.join(peer, "include")):
        die("set LLAMA_CPP_DIR to a llama.cpp checkout built with cmake into its build/ folder")
    name = a.name or f"{a.synthetic}-{a.type}".lower()
    prompts = a.prompt or DEFAULT_PROMPTS
    corvid_bin = os.environ.get("CORVID_BIN", os.path.join(ROOT, "build", "bin"))
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, name + ".gguf")
        quantize = [os.path.join(corvid_bin, "corvid-quantize"), "--synthetic", a.synthetic, "--type", a.type,
                    "--seed", str(a.seed)]
        r = subprocess.run(quantize + [model], capture_output=True, text=True)
        if r.returncode:
            die("corvid-quantize failed: " + r.stderr.strip())
        with open(model, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        exe = build_tool(peer, tmp)
        prefix = os.path.join(tmp, "logits")
        r = subprocess.run([exe, model, str(a.n_gen), str(a.logit_rows), prefix] + prompts,
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            die(f"llama_ref failed (exit {r.returncode}): {r.stderr.strip()}")
        got = json.loads(r.stdout)
        os.makedirs(a.out_dir, exist_ok=True)
        with open(os.path.join(a.out_dir, name + ".logits.f32"), "wb") as out:
            for i in range(len(prompts)):
                with open(f"{prefix}.{i}.f32", "rb") as f:
                    out.write(f.read())
    ref = {
        "llama_cpp_commit": peer_commit(peer),
        "model": {"synthetic": a.synthetic, "type": a.type, "seed": a.seed, "sha256": sha},
        "settings": "llama.cpp CPU, F32 KV cache, no flash attention; prompt decoded in one batch, "
                    "then greedy one token at a time, EOS not special",
        "n_vocab": got["n_vocab"],
        "prompts": got["prompts"],
    }
    with open(os.path.join(a.out_dir, name + ".json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(prompts)} prompts, llama.cpp {ref['llama_cpp_commit']}, greedy[0] "
          f"{got['prompts'][0]['greedy'][:8]}...")


if __name__ == "__main__":
    main()
