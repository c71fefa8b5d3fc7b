#!/usr/bin/env python3
"""Makes ggml-vocab-tekken.gguf and its expected ids from Mistral's tekken tokenizer.

Source: tekken_240718.json (Mistral NeMo's tokenizer, 2024-07-18) as the PyPI package
mistral-common (Apache-2.0) ships it in mistral_common/data/. Mistral's own tokenizer
(mistral_common's Tekkenizer) is tiktoken over the file's ranks and pattern, its first
1000 ids special tokens and the ranks after them, the first 131072 - 1000 ranks kept;
this script does the same to make the expected ids (an independent implementation:
tiktoken's Rust BPE and fancy-regex), and writes the vocabulary as a byte-level BPE
GGUF the way llama.cpp's conversion of the model's tokenizer.json has it: each rank's
bytes as GPT-2 printable aliases, merges made from the ranks (every split of a token
into two tokens, ordered by the token's rank, then by the halves' ranks, as Hugging
Face's tiktoken conversion orders them), tokenizer.ggml.pre = tekken.

  pip download --no-deps mistral-common==1.13.1   # then unzip the json from the wheel
  pip install --target DIR tiktoken gguf
  PYTHONPATH=DIR python3 tests/data/vocab/make_tekken_vocab.py tekken_240718.json

Writes, beside this script: ggml-vocab-tekken.gguf, ggml-vocab-tekken.gguf.inp (a copy
of ggml-vocab-gpt-2.gguf.inp, llama.cpp's inputs) and .out, and
../tokenizer/tekken.out (ids of bpe-inputs.inp then split-inputs.inp), all without BOS.
"""
import base64
import json
import os
import shutil
import sys

import gguf
import tiktoken

SEP = "\n__ggml_vocab_test__\n"
# Mistral's names for the first special ids (mistral_common's Tekkenizer, for files
# of version v3 without a special_tokens list); <SPECIAL_n> fill the rest.
SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]",
            "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]",
            "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"]


def byte_aliases():
    """GPT-2's bytes_to_unicode."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) +
            list(range(0xAE, 0x100)))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def read_inputs(path):
    with open(path, encoding="utf-8", newline="") as f:
        parts = f.read().split(SEP)
    assert parts[-1] == ""
    return parts[:-1]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(sys.argv[1], encoding="utf-8") as f:
        model = json.load(f)
    cfg = model["config"]
    n_special = cfg["default_num_special_tokens"]
    n_inner = cfg["default_vocab_size"] - n_special
    ranks = {}
    for v in model["vocab"][:n_inner]:
        ranks[base64.b64decode(v["token_bytes"])] = v["rank"]
    enc = tiktoken.Encoding(name="tekken", pat_str=cfg["pattern"], mergeable_ranks=ranks,
                            special_tokens={})

    alias = byte_aliases()

    def text(b):
        return "".join(alias[x] for x in b)

    by_rank = sorted(ranks, key=ranks.get)
    merges = []
    for tok in by_rank:
        local = [(tok[:i], tok[i:]) for i in range(1, len(tok))
                 if tok[:i] in ranks and tok[i:] in ranks]
        local.sort(key=lambda p: (ranks[p[0]], ranks[p[1]]))
        merges += ["%s %s" % (text(l), text(r)) for l, r in local]
    specials = SPECIALS + ["<SPECIAL_%d>" % i for i in range(len(SPECIALS), n_special)]
    tokens = specials + [text(b) for b in by_rank]
    types = [gguf.TokenType.CONTROL] * n_special + [gguf.TokenType.NORMAL] * len(by_rank)

    out = os.path.join(here, "ggml-vocab-tekken.gguf")
    w = gguf.GGUFWriter(out, arch="llama")
    w.add_name("Mistral NeMo tekken 240718")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("tekken")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    def ids(s):  # as llama.cpp's .out files write them: " id" each
        return "".join(" %d" % (t + n_special) for t in enc.encode_ordinary(s))

    inp = os.path.join(here, "ggml-vocab-tekken.gguf.inp")
    shutil.copyfile(os.path.join(here, "ggml-vocab-gpt-2.gguf.inp"), inp)
    with open(out + ".out", "w", encoding="utf-8") as f:
        for s in read_inputs(inp):
            f.write(ids(s) + "\n")
    tok_dir = os.path.join(here, "..", "tokenizer")
    inputs = (read_inputs(os.path.join(tok_dir, "bpe-inputs.inp")) +
              read_inputs(os.path.join(tok_dir, "split-inputs.inp")))
    with open(os.path.join(tok_dir, "tekken.out"), "w", encoding="utf-8") as f:
        f.write("# generator: tests/data/vocab/make_tekken_vocab.py, tiktoken %s\n"
                % tiktoken.__version__)
        f.write("# inputs: bpe-inputs.inp, then split-inputs.inp; vocab: ggml-vocab-tekken.gguf\n")
        for s in inputs:
            f.write(ids(s) + "\n")
    print("%d tokens, %d merges, %d + %d inputs" % (len(tokens), len(merges), 46, len(inputs)))


if __name__ == "__main__":
    main()
