#!/usr/bin/env python3
"""Writes a vocabulary-only GGUF (no tensors) from a model GGUF, as llama.cpp's
ggml-vocab-*.gguf files are: general.architecture, general.name and the tokenizer.*
keys, each copied byte for byte (tokenizer.chat_template left out: no tokenizer test
reads it). Used once per file in this folder; see README.md for which.

usage: extract_vocab.py MODEL.gguf OUT.gguf
"""
import struct
import sys

KEEP = ("general.architecture", "general.name")
DROP = ("tokenizer.chat_template",)
# Sizes of the fixed-size GGUF value types (8 = string, 9 = array).
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(buf, off, vtype):
    """Offset just past one value of vtype starting at off."""
    if vtype == 8:
        (n,) = struct.unpack_from("<Q", buf, off)
        return off + 8 + n
    if vtype == 9:
        etype, n = struct.unpack_from("<IQ", buf, off)
        off += 12
        if etype in FIXED:
            return off + n * FIXED[etype]
        for _ in range(n):
            off = skip_value(buf, off, etype)
        return off
    return off + FIXED[vtype]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        buf = f.read()
    magic, version, _n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
    if magic != 0x46554747 or version != 3:
        sys.exit("%s: not a GGUF v3 file" % src)
    off, kept = 24, []
    for _ in range(n_kv):
        start = off
        (klen,) = struct.unpack_from("<Q", buf, off)
        key = buf[off + 8:off + 8 + klen].decode("utf-8")
        off += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, off)
        off = skip_value(buf, off + 4, vtype)
        if (key in KEEP or key.startswith("tokenizer.")) and key not in DROP:
            kept.append(buf[start:off])
    with open(dst, "wb") as f:
        f.write(struct.pack("<IIQQ", magic, version, 0, len(kept)))
        for kv in kept:
            f.write(kv)
        # No tensor infos and no data: pad to the default alignment (32).
        f.write(b"\0" * (-f.tell() % 32))


if __name__ == "__main__":
    main()
