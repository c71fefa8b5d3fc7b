#!/usr/bin/env python3
"""Generates the BPE pre-tokenizer test vectors in this folder.

Expected ids come from Hugging Face `tokenizers` (an independent implementation):
a byte-level BPE built from the tokens and merges of a vocabulary GGUF in ../vocab, with the
pre-tokenizer a model's tokenizer.json names (Split on its regex, "isolated", then
ByteLevel without its own regex). The corvid unit test loads the same GGUF with
tokenizer.ggml.pre replaced by the pre-tokenizer's name and must give the same ids.
The tests do not need Python; rerun this only to change the vectors:

  pip install --target ~/.cache/corvid/py tokenizers gguf
  PYTHONPATH=~/.cache/corvid/py python3 tests/data/tokenizer/gen_vectors.py [VOCAB_DIR]

VOCAB_DIR defaults to tests/data/vocab.

Output: bpe-inputs.inp (the inputs, separated by lines __ggml_vocab_test__ as in
llama.cpp's vocab tests) and per config NAME.out: '#' header lines naming the source,
then the ids of each input on one line, without BOS.
"""
import os
import random
import sys

import tokenizers
from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from pretok_regexes import RULES

SEP = "\n__ggml_vocab_test__\n"

# Vocabularies stand in for models that have none here (Llama 3, Qwen3.5): BPE never
# merges across the pre-tokenizer's words, so the ids still show where the words end.
# ignore_merges as llama.cpp sets it for the name. (tekken and deepseek-v3 have their
# own vocabularies, and their own tokenizers' ids: ../vocab/make_vocab.py.)
CONFIGS = [
    ("llama3", "ggml-vocab-deepseek-llm.gguf", "llama3", True),
    ("qwen2", "ggml-vocab-deepseek-llm.gguf", "qwen2", False),
    ("qwen2-gpt2vocab", "ggml-vocab-gpt-2.gguf", "qwen2", False),
    ("gpt2-extra", "ggml-vocab-gpt-2.gguf", "gpt-2", False),
    ("deepseek-llm-extra", "ggml-vocab-deepseek-llm.gguf", "deepseek-llm", False),
    ("deepseek-coder-extra", "ggml-vocab-deepseek-coder.gguf", "deepseek-coder", False),
    ("falcon-extra", "ggml-vocab-falcon.gguf", "falcon", False),
    ("smollm-starcodervocab", "ggml-vocab-starcoder.gguf", "smollm", False),
    ("qwen2-extra", "ggml-vocab-qwen2.gguf", "qwen2", False),
    ("qwen35-qwen2vocab", "ggml-vocab-qwen2.gguf", "qwen35", False),
]

FIXED = [
    "Hello world",
    " Hello world",
    "Hello, y'all! How're you doing? I'm fine, we've been here, they'll see, he'd go.",
    "IT'S THE CAT'S. WE'RE HERE. SHE'LL 'VE 'D 'M 'T",
    "'sound 'tree 'rerun 'verb 'mild 'llama 'door",
    "don't' 's' ''s '''",
    "1234567",
    "12 345 6789 0",
    "3.14159 and 2,718,281 or -42",
    "v1.2.3-rc4",
    "我爱北京天安门。你好，世界！",
    "日本語のテキストとカタカナ、한국어 텍스트",
    "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 👍🏽",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "tab\tseparated\t\tvalues",
    "line one\nline two\n\nline four\n\n\n",
    "windows\r\nline\r\n\r\nends",
    " \n \n  \n",
    "\n\n\n",
    "   ",
    " ",
    "\t",
    "!!!\n\n???",
    "end.\n",
    "x = [1, 2, 3]; // comment\n\tif (x) { return y; }",
    "def f(a, b):\n    return a ** 2 + b\n",
    "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم",
    "हिन्दी पाठ और संख्या १२३४",
    "١٢٣ ٤٥٦٧ and ²³ and ½ and Ⅻ",
    "non\u00a0breaking\u00a0space and ideographic\u3000space",
    "next\u0085line and line\u2028sep and para\u2029sep",
    "file\u001cgroup\u001drecord\u001eunit\u001f",
    "ca\u0301fe\u0301 combining marks",
    "ǅungla ᾼ ﬁ ligatures and ℌ",
    "μ µ K K Ω Ω",
    "ＦＵＬＬ ｗｉｄｔｈ　ｔｅｘｔ！？",
    "“quoted” ‘single’ «guillemets» — dash … ellipsis",
    "$100 + 5% = €105 @home #tag ^_^ ~ok~ |pipe|",
    "a\u200bzero\u200bwidth",
    "emoji👍after and before👍word",
    "x" * 300,
    "ab " * 50,
    "9" * 40,
]

# Random strings over a pool covering every class the rules distinguish.
POOL = (list("abcXYZ'sStTrReEvVmMlLdD 0123456789 \t\n\r.,!?-_()[]{}\"/\\") +
        list("éßñÄΩжЖ我的世界한글テスト٣²½Ⅻ\u00a0\u3000\u2028\u0085\u0301\u200b") +
        ["😀", "👍🏽", "🚀", "́"])


def random_inputs(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def read_vocab(path):
    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab[t] = i  # last id wins for a repeated text, as in corvid and llama.cpp
    return vocab, merges


def build(vocab, merges, regexes, ignore_merges):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    splits = [pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False) for rx in regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def main():
    out_dir = os.path.dirname(os.path.abspath(__file__))
    vocab_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(out_dir, "..", "vocab")
    inputs = FIXED + random_inputs(150, 20261128)
    with open(os.path.join(out_dir, "bpe-inputs.inp"), "w", encoding="utf-8", newline="") as f:
        for s in inputs:
            f.write(s + SEP)
    for name, vfile, pre, ignore in CONFIGS:
        regexes = RULES[pre]
        vocab, merges = read_vocab(os.path.join(vocab_dir, vfile))
        tok = build(vocab, merges, regexes, ignore)
        with open(os.path.join(out_dir, name + ".out"), "w", encoding="utf-8", newline="") as f:
            f.write(f"# generator: tests/data/tokenizer/gen_vectors.py, tokenizers {tokenizers.__version__}\n")
            f.write(f"# inputs: bpe-inputs.inp; vocab: {vfile} (tokens, merges)\n")
            f.write(f"# pre: {pre}\n")
            for rx in regexes:
                f.write(f"# split: {rx}\n")
            f.write(f"# then ByteLevel(use_regex=False); ignore_merges={ignore}\n")
            for s in inputs:
                ids = tok.encode(s, add_special_tokens=False).ids
                f.write("".join(f" {i}" for i in ids) + "\n")
        print(f"{name}: {len(inputs)} inputs")


if __name__ == "__main__":
    main()
