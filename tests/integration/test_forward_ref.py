"""Synthetic F32 models of each architecture: corvid's logits vs an independent float64
numpy forward pass (refmodel.py), relative error < 1e-4 at every position of a prompt
(prefill) and of greedy generation (decode). Fresh random weights each run."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refmodel  # noqa: E402

BIN = os.environ["CORVID_BIN"]
TOL = 1e-4

CASES = [
    # name, arch, make_model options
    ("llama-gqa", "llama", dict(dim=64, n_heads=8, n_kv=2, ffn=176, n_layers=3)),
    ("llama-tied-mha", "llama", dict(dim=48, n_heads=4, n_kv=4, ffn=64, tied=True)),
    ("qwen2-bias", "qwen2", dict(dim=64, n_heads=4, n_kv=2, ffn=128, rope_base=1e6)),
    # 7 layers: layers 0-4 and 6 slide over a 5-token window, layer 5 is global;
    # head_dim 32 != dim / n_heads as in the real Gemma 3 270M.
    ("gemma3-swa", "gemma3", dict(dim=64, n_heads=4, n_kv=1, head_dim=32, ffn=128,
                                  n_layers=7, window=5, rope_base=1e6, tied=True)),
]


def run_case(name, arch, opts, rng, tmp):
    kvs, tensors = refmodel.make_model(arch, rng, **opts)
    path = os.path.join(tmp, name + ".gguf")
    refmodel.write_gguf(path, kvs, tensors)
    n_vocab = len(kvs["tokenizer.ggml.tokens"])
    prompt = [1] + [int(x) for x in rng.integers(3, n_vocab, 8)]
    n_gen = 6
    dump = os.path.join(tmp, name + ".logits")
    cmd = [os.path.join(BIN, "corvid-run"), "-m", path, "--prompt-ids",
           ",".join(map(str, prompt)), "-n", str(n_gen), "--temp", "0", "--kv-type", "f32",
           "--json", "--dump-logits", dump, "-t", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        print(f"FAIL {name}: corvid-run exit {r.returncode}: {r.stderr.strip()}")
        return False
    out = json.loads(r.stdout)
    got = np.fromfile(dump, dtype=np.float32).reshape(-1, n_vocab)
    seq = prompt + out["tokens"]
    ref = refmodel.forward(kvs, tensors, seq)
    # corvid dumps every prompt row, then one row per decoded token.
    want = ref[: len(prompt) + n_gen - 1]
    if got.shape != want.shape:
        print(f"FAIL {name}: {got.shape[0]} logit rows, expected {want.shape[0]}")
        return False
    rel = np.abs(got - want).max(axis=1) / np.abs(want).max(axis=1)
    ok = rel.max() < TOL
    # Greedy tokens must be the reference argmax wherever the top-2 margin is clear.
    for k, tok in enumerate(out["tokens"]):
        row = ref[len(prompt) - 1 + k]
        top = np.sort(row)[-2:]
        if top[1] - top[0] > 1e-3 and tok != int(row.argmax()):
            print(f"FAIL {name}: generated token {k} = {tok}, reference argmax {row.argmax()}")
            ok = False
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max relative error {rel.max():.2e} over "
          f"{len(rel)} positions (limit {TOL:g})")
    return ok


def main():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, opts in CASES:
            if run_case(name, arch, opts, rng, tmp):
                passed += 1
            else:
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
