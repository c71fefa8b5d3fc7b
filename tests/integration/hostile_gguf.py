"""Hostile variants of stories260K.gguf, one per class of broken file, for the probe
suite (test_probes_gguf.py). Each case is (name, make, field): make() returns the
file's bytes, field is what the refusal must name (a key, a tensor, a header part),
as the GGUF file spells it."""
import math
import struct

from gguf_edit import ARR, F32, I32, STR, U32, U64, Gguf, pack_str, pack_value

Q4_0 = 2  # ggml type ids
GGML_I32 = 26


def cases(path):
    """The hostile files made from the good GGUF at path."""
    base = Gguf(path)
    good = base.to_bytes()
    kv_start = 24
    kv_end = kv_start + len(base.kv_bytes())
    ti_end = kv_end + len(base.tensor_bytes())

    def edit(fn):
        def make():
            g = Gguf(path)
            fn(g)
            return g.to_bytes()
        return make

    def raw(fn):
        return lambda: fn(bytearray(good))

    def set_tensor(name, i, v):
        def fn(g):
            g.tensor(name)[i] = v
        return fn

    def first_key_len(b):
        struct.pack_into("<Q", b, kv_start, 1 << 40)
        return bytes(b)

    def value_len(key, n):
        def fn(g):
            for kv in g.kvs:
                if kv[0] == key:
                    kv[2] = struct.pack("<Q", n) + kv[2][8:]
        return fn

    def array_count(key, n):
        def fn(g):
            for kv in g.kvs:
                if kv[0] == key:
                    kv[2] = kv[2][:4] + struct.pack("<Q", n) + kv[2][12:]
        return fn

    def nested(depth):
        def fn(g):
            v = (F32, [0.5])
            raw_v = pack_value(ARR, v)
            for _ in range(depth):
                raw_v = struct.pack("<IQ", ARR, 1) + raw_v
            g.set_raw("tokenizer.ggml.scores", ARR, raw_v)
        return fn

    def dup_key(g):
        g.kvs.append(list(next(kv for kv in g.kvs if kv[0] == "general.architecture")))

    def dup_tensor(g):
        g.tensors[4][0] = g.tensors[3][0]

    def drop_tensor(name):
        def fn(g):
            g.tensors = [t for t in g.tensors if t[0] != name]
        return fn

    def bad_key_name(name):
        def fn(g):
            g.kvs.insert(0, [name, U32, struct.pack("<I", 1)])
        return fn

    def key_bytes(b):
        # "general.name" as the 6th key: its first letter becomes an invalid UTF-8 byte.
        i = bytes(b).find(pack_str("general.name"))
        b[i + 8] = 0xFF
        return bytes(b)

    def more_tokens(n):
        def fn(g):
            toks = g.get("tokenizer.ggml.tokens")[1] + ["tok%d" % i for i in range(n)]
            g.set("tokenizer.ggml.tokens", ARR, (STR, toks))
            g.set("tokenizer.ggml.scores", ARR, (F32, [0.0] * len(toks)))
            g.set("tokenizer.ggml.token_type", ARR, (I32, [1] * len(toks)))
        return fn

    def short_scores(g):
        g.set("tokenizer.ggml.scores", ARR, (F32, [0.0] * 100))

    def bad_token_type(g):
        tt = g.get("tokenizer.ggml.token_type")[1]
        tt[10] = 99
        g.set("tokenizer.ggml.token_type", ARR, (I32, tt))

    def u32(key, v):
        return edit(lambda g: g.set(key, U32, v))

    def f32(key, v):
        return edit(lambda g: g.set(key, F32, v))

    def string(key, v):
        return edit(lambda g: g.set(key, STR, v))

    def n_tensors(n):
        def fn(g):
            g.n_tensors = n
        return fn

    def n_kv(n):
        def fn(g):
            g.n_kv = n
        return fn

    q = "blk.0.attn_q.weight"
    k = "blk.0.attn_k.weight"
    eps = "llama.attention.layer_norm_rms_epsilon"
    return [
        # ---- header ----
        ("truncated header", lambda: good[:13], "header"),
        ("version 1", edit(lambda g: setattr(g, "version", 1)), "version"),
        ("big-endian version", edit(lambda g: setattr(g, "version", 0x03000000)), "big-endian"),
        ("absurd kv count", edit(n_kv(1 << 62)), "kv count"),
        ("absurd tensor count", edit(n_tensors((1 << 64) - 1)), "tensor count"),
        ("kv count one too many", edit(n_kv(len(base.kvs) + 1)), "tensor 0"),
        # ---- key/value section ----
        ("truncated in the kv section", lambda: good[:(kv_start + kv_end) // 2], "truncated"),
        ("key length past the end", raw(first_key_len), "key"),
        ("string value length past the end", edit(value_len("general.name", 1 << 40)), "general.name"),
        ("array count past the end", edit(array_count("tokenizer.ggml.tokens", 1 << 40)), "tokenizer.ggml.tokens"),
        ("unknown value type 13", edit(lambda g: g.set_raw("general.name", 13, b"\0" * 8)), "general.name"),
        ("value type 0xffffffff", edit(lambda g: g.set_raw("general.name", 0xFFFFFFFF, b"")), "general.name"),
        ("arrays nested 100 deep", edit(nested(100)), "tokenizer.ggml.scores"),
        ("array of arrays for the vocabulary", edit(lambda g: g.set_raw(
            "tokenizer.ggml.tokens", ARR, struct.pack("<IQ", ARR, 1) + pack_value(ARR, (STR, ["a"])))),
         "tokenizer.ggml.tokens"),
        ("head count as a string", string("llama.attention.head_count", "8"), "llama.attention.head_count"),
        ("duplicate key", edit(dup_key), "general.architecture"),
        ("empty key", edit(bad_key_name("")), "key"),
        ("key with invalid UTF-8", raw(key_bytes), "key"),
        ("alignment 0", edit(lambda g: g.set("general.alignment", U32, 0)), "general.alignment"),
        ("alignment 48", edit(lambda g: g.set("general.alignment", U32, 48)), "general.alignment"),
        ("alignment as f32", edit(lambda g: g.set("general.alignment", F32, 32.0)), "general.alignment"),
        # ---- tensor infos ----
        ("truncated in the tensor infos", lambda: good[:(kv_end + ti_end) // 2], "tensor"),
        ("5 dimensions", edit(set_tensor(q, 1, [64, 64, 1, 1, 1])), q),
        ("a zero dimension", edit(set_tensor(q, 1, [64, 0])), q),
        ("dimensions overflow 64 bits", edit(set_tensor(q, 1, [1 << 32, 1 << 32])), q),
        ("byte size overflows", edit(set_tensor(q, 1, [1 << 31, 1 << 31])), q),
        ("unknown tensor type 99", edit(set_tensor(q, 2, 99)), q),
        ("tensor name length past the end", raw(lambda b: bytes(
            b[:kv_end] + struct.pack("<Q", 1 << 40) + b[kv_end + 8:])), "tensor"),
        ("offset past the end of the file", edit(set_tensor(q, 3, 1 << 40)), q),
        ("misaligned offset", edit(set_tensor(q, 3, base.tensor(q)[3] + 4)), q),
        ("overlapping tensors", edit(set_tensor(k, 3, base.tensor(q)[3])), k),
        ("duplicate tensor name", edit(dup_tensor), q),
        # ---- the model on top ----
        ("missing output_norm.weight", edit(drop_tensor("output_norm.weight")), "output_norm.weight"),
        ("missing blk.4.ffn_down.weight", edit(drop_tensor("blk.4.ffn_down.weight")), "blk.4.ffn_down.weight"),
        ("wrong shape for a role", edit(set_tensor(q, 1, [64, 32])), q),
        ("quantized norm", edit(lambda g: g.tensor("output_norm.weight").__setitem__(2, Q4_0)),
         "output_norm.weight"),
        ("integer embeddings", edit(set_tensor("token_embd.weight", 2, GGML_I32)), "token_embd.weight"),
        ("vocabulary larger than the embeddings", edit(more_tokens(100000)), "token_embd.weight"),
        ("scores shorter than the vocabulary", edit(short_scores), "tokenizer.ggml.scores"),
        ("token type 99", edit(bad_token_type), "tokenizer.ggml.token_type"),
        ("bos id out of the vocabulary", u32("tokenizer.ggml.bos_token_id", 1000000), "tokenizer.ggml.bos_token_id"),
        ("unknown tokenizer model", string("tokenizer.ggml.model", "foo"), "tokenizer.ggml.model"),
        ("unknown architecture", string("general.architecture", "mamba"), "general.architecture"),
        ("rms epsilon NaN", f32(eps, math.nan), eps),
        ("rms epsilon infinite", f32(eps, math.inf), eps),
        ("rms epsilon negative", f32(eps, -1e-5), eps),
        ("rope base NaN", f32("llama.rope.freq_base", math.nan), "llama.rope.freq_base"),
        ("rope base zero", f32("llama.rope.freq_base", 0.0), "llama.rope.freq_base"),
        ("zero heads", u32("llama.attention.head_count", 0), "llama.attention.head_count"),
        ("zero kv heads", u32("llama.attention.head_count_kv", 0), "llama.attention.head_count_kv"),
        ("heads do not divide the embedding", edit(lambda g: (g.set("llama.attention.head_count", U32, 6),
                                                              g.set("llama.attention.head_count_kv", U32, 3))),
         "llama.attention.head_count"),
        ("kv heads do not divide the heads", u32("llama.attention.head_count_kv", 3),
         "llama.attention.head_count_kv"),
        ("zero layers", u32("llama.block_count", 0), "llama.block_count"),
        ("a million layers", u32("llama.block_count", 1000000), "llama.block_count"),
        ("zero context", u32("llama.context_length", 0), "llama.context_length"),
        ("embedding length unlike the tensors", u32("llama.embedding_length", 128), "token_embd.weight"),
        ("ffn length unlike the tensors", u32("llama.feed_forward_length", 100), "blk.0.ffn_down.weight"),
        ("rope dimensions 0", u32("llama.rope.dimension_count", 0), "llama.rope.dimension_count"),
        ("rope dimensions above the head", u32("llama.rope.dimension_count", 64), "llama.rope.dimension_count"),
        ("odd rope dimensions", u32("llama.rope.dimension_count", 7), "llama.rope.dimension_count"),
        ("unknown rope scaling", string("llama.rope.scaling.type", "yarn2"), "llama.rope.scaling.type"),
        ("u64 head count above 2^32", edit(lambda g: g.set("llama.attention.head_count", U64, 1 << 33)),
         "llama.attention.head_count = 8589934592"),
        ("key length 0", u32("llama.attention.key_length", 0), "key_length 0"),
    ]
