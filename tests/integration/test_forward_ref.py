"""Synthetic F32 models of each architecture: corvid's logits vs an independent float64
numpy forward pass (refmodel.py), relative error < 1e-4 at every position of a prompt
(prefill) and of greedy generation (decode). Fresh random weights each run. Also:
malformed models (unknown architecture, missing tensor, unsupported type, wrong
shape, phi3's long-rope factors without the short ones, a short fused QKV) are
refused with one clear line and exit status 1."""
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
    # Llama 3 rope scaling: head dim 16 spans all three wavelength bands of 16..64.
    ("llama3-rope-keys", "llama", dict(dim=64, n_heads=4, n_kv=2, ffn=96,
                                       rope_scaling=(8, 1, 4, 64))),
    ("llama3-rope-freqs", "llama", dict(dim=64, n_heads=4, n_kv=2, ffn=96, rope_freqs=True)),
    ("qwen2-bias", "qwen2", dict(dim=64, n_heads=4, n_kv=2, ffn=128, rope_base=1e6)),
    # Mistral: a llama file with a window; every layer slides over 4 of the 14 positions.
    ("mistral-swa", "llama", dict(dim=64, n_heads=4, n_kv=2, ffn=96, n_layers=2, swa=4)),
    # Phi-3: fused QKV and gate-up; 12 of 16 head dims rotated (Phi-4-mini's partial rope);
    # long-rope factors and attention factor, short ones at --ctx 32 (the original
    # context), long ones at --ctx 64.
    ("phi3-short", "phi3", dict(dim=64, n_heads=4, n_kv=2, ffn=96, n_rot=12,
                                longrope=(32, 1.19))),
    ("phi3-long", "phi3", dict(dim=64, n_heads=4, n_kv=2, ffn=96, n_rot=12, longrope=(32, 1.19)),
     64),
    # 7 layers: layers 0-4 and 6 slide over a 5-token window, layer 5 is global;
    # head_dim 32 != dim / n_heads as in the real Gemma 3 270M.
    ("gemma3-swa", "gemma3", dict(dim=64, n_heads=4, n_kv=1, head_dim=32, ffn=128,
                                  n_layers=7, window=5, rope_base=1e6, tied=True)),
    ("gemma3-qpa-scalar", "gemma3", dict(dim=64, n_heads=2, n_kv=2, head_dim=32, ffn=64,
                                         n_layers=2, window=3, tied=True,
                                         query_pre_attn_scalar=80)),
    # head_dim 32 != dim / n_heads, as in the real Qwen3 models
    ("qwen3-qknorm", "qwen3", dict(dim=64, n_heads=4, n_kv=2, head_dim=32, ffn=128, rope_base=1e6,
                                   tied=True)),
    # 8 experts, 3 per token: the 9 prompt rows of the prefill spread over most of them
    ("qwen3moe-experts", "qwen3moe", dict(dim=64, n_heads=4, n_kv=2, head_dim=32, ffn=128,
                                          rope_base=1e6, n_expert=8, n_used=3, ffn_exp=48)),
]


def run_case(name, arch, opts, rng, tmp, n_ctx=32):
    kvs, tensors = refmodel.make_model(arch, rng, **opts)
    path = os.path.join(tmp, name + ".gguf")
    refmodel.write_gguf(path, kvs, tensors)
    n_vocab = len(kvs["tokenizer.ggml.tokens"])
    prompt = [1] + [int(x) for x in rng.integers(3, n_vocab, 8)]
    n_gen = 6
    dump = os.path.join(tmp, name + ".logits")
    cmd = [os.path.join(BIN, "corvid-run"), "-m", path, "--prompt-ids",
           ",".join(map(str, prompt)), "-n", str(n_gen), "--temp", "0", "--kv-type", "f32",
           "--json", "--dump-logits", dump, "-t", "2", "--ctx", str(n_ctx)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        print(f"FAIL {name}: corvid-run exit {r.returncode}: {r.stderr.strip()}")
        return False
    out = json.loads(r.stdout)
    got = np.fromfile(dump, dtype=np.float32).reshape(-1, n_vocab)
    seq = prompt + out["tokens"]
    ref = refmodel.forward(kvs, tensors, seq, n_ctx)
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


def bad_file_cases(rng, tmp):
    """Files corvid-run must refuse with one clear line and exit status 1."""
    kvs, t = refmodel.make_model("llama", rng, dim=32, n_heads=4, n_kv=2, ffn=64)
    cases = []
    k2 = {("mamba" + k[5:] if k.startswith("llama.") else k): v for k, v in kvs.items()}
    k2["general.architecture"] = "mamba"
    cases.append(("unknown architecture", k2, t, "general.architecture = 'mamba' is not supported"))
    t2 = {k: v for k, v in t.items() if k != "blk.1.ffn_up.weight"}
    cases.append(("missing tensor", kvs, t2, "blk.1.ffn_up.weight is missing"))
    t3 = dict(t)
    # Q4_1 (type 3) is a valid GGUF type that corvid does not compute with.
    t3["blk.0.attn_k.weight"] = ([32, 16], 3, b"\0" * (16 * 20))
    cases.append(("unsupported tensor type", kvs, t3, "blk.0.attn_k.weight has type Q4_1"))
    t4 = dict(t)
    t4["blk.0.attn_q.weight"] = t["blk.0.attn_q.weight"][:, :16]
    cases.append(("wrong tensor shape", kvs, t4, "blk.0.attn_q.weight has shape [16, 32]"))
    kp, tp = refmodel.make_model("phi3", rng, dim=32, n_heads=4, n_kv=2, ffn=64, longrope=(16, 1.1))
    tp2 = {k: v for k, v in tp.items() if k != "rope_factors_short.weight"}
    cases.append(("phi3 long-rope factors alone", kp, tp2, "rope_factors_short.weight is missing"))
    tp3 = dict(tp)
    tp3["blk.0.attn_qkv.weight"] = tp["blk.0.attn_qkv.weight"][:48]
    cases.append(("phi3 fused QKV too short", kp, tp3, "blk.0.attn_qkv.weight has shape [32, 48]"))
    ok_all = True
    for name, k, tt, msg in cases:
        path = os.path.join(tmp, "bad.gguf")
        refmodel.write_gguf(path, k, tt)
        r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", path, "-p", "hi", "-n", "2"],
                           capture_output=True, text=True, timeout=60)
        ok = r.returncode == 1 and msg in r.stderr and r.stderr.count("\n") == 1
        ok_all &= ok
        print(f"{'ok  ' if ok else 'FAIL'} refused: {name}: {r.stderr.strip()}")
    return ok_all


def main():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, opts, *ctx in CASES:
            if run_case(name, arch, opts, rng, tmp, *ctx):
                passed += 1
            else:
                failed += 1
        if bad_file_cases(rng, tmp):
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
