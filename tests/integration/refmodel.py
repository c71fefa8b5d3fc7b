"""Independent float64 reference for the corvid forward pass (used by test_forward_ref.py).

A minimal GGUF v3 writer and reader in numpy, and the llama / qwen2 / gemma3 / phi3 /
qwen3 / qwen3moe forward passes written straight from the architectures' definitions, full-sequence and
unbatched, so that nothing here shares code or structure with the C engine.
"""
import struct

import numpy as np

ALIGN = 32
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9


def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(v):
    if isinstance(v, bool):
        return struct.pack("<I?", T_BOOL, v)
    if isinstance(v, int):
        return struct.pack("<Ii", T_I32, v) if v < 0 else struct.pack("<II", T_U32, v)
    if isinstance(v, float):
        return struct.pack("<If", T_F32, v)
    if isinstance(v, str):
        return struct.pack("<I", T_STR) + _str(v)
    if isinstance(v, list):
        if all(isinstance(x, str) for x in v):
            return struct.pack("<IIQ", T_ARR, T_STR, len(v)) + b"".join(_str(x) for x in v)
        if all(isinstance(x, float) for x in v):
            return struct.pack("<IIQ", T_ARR, T_F32, len(v)) + struct.pack("<%df" % len(v), *v)
        return struct.pack("<IIQ", T_ARR, T_I32, len(v)) + struct.pack("<%di" % len(v), *v)
    raise TypeError(type(v))


def write_gguf(path, kvs, tensors):
    """kvs: dict; tensors: dict name -> float32 array (numpy shape = reversed ne), or
    (ne list, ggml type id, raw bytes) for a tensor of another type."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(_str(k) + _value(v) for k, v in kvs.items())
    infos, blobs, off = b"", [], 0
    for name, a in tensors.items():
        if isinstance(a, tuple):
            ne, ttype, blob = a
        else:
            a = np.ascontiguousarray(a, dtype=np.float32)
            ne, ttype, blob = list(reversed(a.shape)), 0, a.tobytes()
        infos += _str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", ttype, off)
        pad = (-len(blob)) % ALIGN
        blobs.append(blob + b"\0" * pad)
        off += len(blob) + pad
    meta = head + infos
    meta += b"\0" * ((-len(meta)) % ALIGN)
    with open(path, "wb") as f:
        f.write(meta + b"".join(blobs))


def llama_vocab(n_vocab):
    """A SentencePiece-style vocab: unk, bos, eos, 256 byte tokens, then filler pieces."""
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    while len(toks) < n_vocab:
        toks.append("\u2581w%d" % len(toks))
        types.append(1)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": toks,
        "tokenizer.ggml.scores": [float(-i) for i in range(n_vocab)],
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


# ---- model definition from hyperparameters ----

def make_model(arch, rng, dim=64, n_layers=2, n_heads=8, n_kv=2, head_dim=None, ffn=96,
               n_vocab=320, ctx=64, window=4, rope_base=10000.0, tied=False, rope_scaling=None,
               rope_freqs=False, query_pre_attn_scalar=None, swa=None, n_rot=None,
               longrope=None, n_expert=0, n_used=0, ffn_exp=0):
    """swa: llama's attention.sliding_window (Mistral: every layer slides). phi3: fused
    attn_qkv and gate-up ffn_up, n_rot rotated dims of each head, longrope = (original
    context, attention factor) with made-up short and long factor tensors."""
    hd = head_dim or dim // n_heads
    p = f"{arch}."
    kvs = {"general.architecture": arch, "general.name": f"synthetic-{arch}"}
    kvs.update({p + "context_length": ctx, p + "embedding_length": dim,
                p + "block_count": n_layers, p + "feed_forward_length": ffn,
                p + "attention.head_count": n_heads, p + "attention.head_count_kv": n_kv,
                p + "attention.layer_norm_rms_epsilon": 1e-6, p + "rope.freq_base": rope_base,
                p + "attention.key_length": hd, p + "attention.value_length": hd})
    if arch == "gemma3":
        kvs[p + "attention.sliding_window"] = window
    if swa:
        kvs[p + "attention.sliding_window"] = swa
    if n_rot:
        kvs[p + "rope.dimension_count"] = n_rot
    if longrope:
        kvs[p + "rope.scaling.original_context_length"] = longrope[0]
        kvs[p + "rope.scaling.attn_factor"] = float(longrope[1])
    if n_expert:
        kvs.update({p + "expert_count": n_expert, p + "expert_used_count": n_used,
                    p + "expert_feed_forward_length": ffn_exp})
    if query_pre_attn_scalar:
        kvs[p + "attention.query_pre_attn_scalar"] = float(query_pre_attn_scalar)
    if rope_scaling:  # (factor, low, high, original context): Llama 3.1 style keys
        kvs[p + "rope.scaling.type"] = "llama3"
        for key, v in zip(("factor", "low_freq_factor", "high_freq_factor"), rope_scaling[:3]):
            kvs[p + "rope.scaling." + key] = float(v)
        kvs[p + "rope.scaling.original_context_length"] = int(rope_scaling[3])
    kvs.update(llama_vocab(n_vocab))

    def w(*shape, s=None):
        return rng.standard_normal(shape).astype(np.float32) * (s or 1 / np.sqrt(shape[-1]))

    def norm(n):
        return (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": w(n_vocab, dim, s=0.5)}
    if rope_freqs:  # explicit per-pair divisors, as converters write for Llama 3
        t["rope_freqs.weight"] = (1 + 7 * rng.random(hd // 2)).astype(np.float32)
    if longrope:
        t["rope_factors_short.weight"] = (1 + 0.5 * rng.random((n_rot or hd) // 2)).astype(np.float32)
        t["rope_factors_long.weight"] = (1 + 15 * rng.random((n_rot or hd) // 2)).astype(np.float32)
    for i in range(n_layers):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = norm(dim)
        if arch == "phi3":
            t[b + "attn_qkv.weight"] = w((n_heads + 2 * n_kv) * hd, dim)
        else:
            t[b + "attn_q.weight"] = w(n_heads * hd, dim)
            t[b + "attn_k.weight"] = w(n_kv * hd, dim)
            t[b + "attn_v.weight"] = w(n_kv * hd, dim)
        if arch == "qwen2":
            for x, n in (("q", n_heads), ("k", n_kv), ("v", n_kv)):
                t[b + f"attn_{x}.bias"] = w(n * hd, s=0.2)
        if arch in ("gemma3", "qwen3", "qwen3moe"):
            t[b + "attn_q_norm.weight"] = norm(hd)
            t[b + "attn_k_norm.weight"] = norm(hd)
        t[b + "attn_output.weight"] = w(dim, n_heads * hd)
        if arch == "gemma3":
            t[b + "post_attention_norm.weight"] = norm(dim)
        t[b + "ffn_norm.weight"] = norm(dim)
        if n_expert:  # 3-D expert tensors: numpy [expert][rows][cols]
            t[b + "ffn_gate_inp.weight"] = w(n_expert, dim, s=1.0)
            t[b + "ffn_gate_exps.weight"] = w(n_expert, ffn_exp, dim)
            t[b + "ffn_up_exps.weight"] = w(n_expert, ffn_exp, dim)
            t[b + "ffn_down_exps.weight"] = w(n_expert, dim, ffn_exp)
        elif arch == "phi3":  # gate rows, then up rows
            t[b + "ffn_up.weight"] = w(2 * ffn, dim)
            t[b + "ffn_down.weight"] = w(dim, ffn)
        else:
            t[b + "ffn_gate.weight"] = w(ffn, dim)
            t[b + "ffn_up.weight"] = w(ffn, dim)
            t[b + "ffn_down.weight"] = w(dim, ffn)
        if arch == "gemma3":
            t[b + "post_ffw_norm.weight"] = norm(dim)
    t["output_norm.weight"] = norm(dim)
    if not tied:
        t["output.weight"] = w(n_vocab, dim)
    return kvs, t


# ---- reference forward pass, float64 ----

def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def llama3_factors(base, hd, factor, low, high, old_ctx):
    """Llama 3.1 rope scaling: wavelength bands kept, slowed by `factor`, or blended."""
    out = []
    for i in range(hd // 2):
        wl = 2 * np.pi * base ** (2.0 * i / hd)
        if wl < old_ctx / high:
            out.append(1.0)
        elif wl > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out)


def rope(x, pos, base, neox, factors=None, n_rot=None, mscale=1.0):
    """x: [heads, hd]; rotates the first n_rot dims (default all); pair i turns by
    pos * base^(-2i/n_rot) / factors[i], its cos and sin multiplied by mscale (Phi-3's
    long-rope attention factor); the other dims pass unchanged."""
    hd = n_rot or x.shape[-1]
    out = x.copy()
    for i in range(hd // 2):
        th = pos * base ** (-2.0 * i / hd) / (1.0 if factors is None else factors[i])
        c, s = mscale * np.cos(th), mscale * np.sin(th)
        a, b = (i, i + hd // 2) if neox else (2 * i, 2 * i + 1)
        out[:, a] = x[:, a] * c - x[:, b] * s
        out[:, b] = x[:, a] * s + x[:, b] * c
    return out


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def moe(T, b, h, k):
    """Qwen3-MoE: softmax over all experts, the k best, weights renormalised to sum 1,
    each token through its experts' SwiGLU, one token at a time."""
    logits = h @ T[b + "ffn_gate_inp.weight"].T
    out = np.zeros_like(h)
    for i in range(len(h)):
        p = np.exp(logits[i] - logits[i].max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:k]
        for e in top:
            g = T[b + "ffn_gate_exps.weight"][e] @ h[i]
            u = T[b + "ffn_up_exps.weight"][e] @ h[i]
            out[i] += p[e] / p[top].sum() * (T[b + "ffn_down_exps.weight"][e] @ (g / (1 + np.exp(-g)) * u))
    return out


def forward(kvs, t, tokens, n_ctx=None):
    """Logits [len(tokens), vocab] for every position, float64. n_ctx: the context the
    run was given (phi3 takes its long factors above the original context)."""
    arch = kvs["general.architecture"]
    p = arch + "."
    T = {k: v.astype(np.float64) for k, v in t.items()}
    dim, nl = kvs[p + "embedding_length"], kvs[p + "block_count"]
    nh, nkv, hd = kvs[p + "attention.head_count"], kvs[p + "attention.head_count_kv"], \
        kvs[p + "attention.key_length"]
    eps, base = kvs[p + "attention.layer_norm_rms_epsilon"], kvs[p + "rope.freq_base"]
    gemma = arch == "gemma3"
    qpa = kvs.get(p + "attention.query_pre_attn_scalar", hd)
    neox = arch in ("qwen2", "gemma3", "phi3", "qwen3", "qwen3moe")
    n = len(tokens)
    n_rot = kvs.get(p + "rope.dimension_count", hd)
    mscale = kvs.get(p + "rope.scaling.attn_factor", 1.0)
    window = kvs.get(p + "attention.sliding_window")
    factors = T.get("rope_freqs.weight")
    if "rope_factors_long.weight" in T:
        orig = kvs[p + "rope.scaling.original_context_length"]
        factors = T["rope_factors_long.weight" if n_ctx > orig else "rope_factors_short.weight"]
    if factors is None and kvs.get(p + "rope.scaling.type") == "llama3":
        factors = llama3_factors(base, hd, kvs[p + "rope.scaling.factor"],
                                 kvs[p + "rope.scaling.low_freq_factor"],
                                 kvs[p + "rope.scaling.high_freq_factor"],
                                 kvs[p + "rope.scaling.original_context_length"])
    x = T["token_embd.weight"][tokens]
    if gemma:
        x = x * np.sqrt(dim)
    for il in range(nl):
        b = f"blk.{il}."
        # gemma3: five sliding-window layers, then one global layer
        # (llama with a window: every layer slides, at the global base)
        local = (gemma and (il + 1) % 6 != 0) or (arch == "llama" and window is not None)
        lbase = 10000.0 if local and gemma else base
        h = rmsnorm(x, T[b + "attn_norm.weight"], eps)
        if arch == "phi3":
            q, k, v = np.split(h @ T[b + "attn_qkv.weight"].T, [nh * hd, (nh + nkv) * hd], axis=1)
        else:
            q = h @ T[b + "attn_q.weight"].T
            k = h @ T[b + "attn_k.weight"].T
            v = h @ T[b + "attn_v.weight"].T
        if b + "attn_q.bias" in T:
            q, k, v = q + T[b + "attn_q.bias"], k + T[b + "attn_k.bias"], v + T[b + "attn_v.bias"]
        q, k, v = q.reshape(n, nh, hd), k.reshape(n, nkv, hd), v.reshape(n, nkv, hd)
        if b + "attn_q_norm.weight" in T:
            q = rmsnorm(q, T[b + "attn_q_norm.weight"], eps)
            k = rmsnorm(k, T[b + "attn_k_norm.weight"], eps)
        q = np.stack([rope(q[i], i, lbase, neox, factors, n_rot, mscale) for i in range(n)])
        k = np.stack([rope(k[i], i, lbase, neox, factors, n_rot, mscale) for i in range(n)])
        att = np.zeros((n, nh, hd))
        for i in range(n):
            lo = max(0, i - window + 1) if local else 0
            for hh in range(nh):
                kh = hh // (nh // nkv)
                s = k[lo:i + 1, kh] @ q[i, hh] / np.sqrt(qpa)
                s = np.exp(s - s.max())
                att[i, hh] = (s / s.sum()) @ v[lo:i + 1, kh]
        o = att.reshape(n, nh * hd) @ T[b + "attn_output.weight"].T
        if gemma:
            o = rmsnorm(o, T[b + "post_attention_norm.weight"], eps)
        x = x + o
        h = rmsnorm(x, T[b + "ffn_norm.weight"], eps)
        if b + "ffn_gate_inp.weight" in T:
            f = moe(T, b, h, kvs[p + "expert_used_count"])
        else:
            if arch == "phi3":
                g, u = np.split(h @ T[b + "ffn_up.weight"].T, 2, axis=1)
            else:
                g, u = h @ T[b + "ffn_gate.weight"].T, h @ T[b + "ffn_up.weight"].T
            a = gelu_tanh(g) * u if gemma else g / (1 + np.exp(-g)) * u
            f = a @ T[b + "ffn_down.weight"].T
        if gemma:
            f = rmsnorm(f, T[b + "post_ffw_norm.weight"], eps)
        x = x + f
    x = rmsnorm(x, T["output_norm.weight"], eps)
    out = T.get("output.weight", T["token_embd.weight"])
    return x @ out.T
