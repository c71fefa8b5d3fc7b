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

SEP = "\n__ggml_vocab_test__\n"

# The regexes as the models' tokenizer.json files write them.
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# deepseek-llm's chain. Its letter class lists these ranges (the cased letters of
# several scripts); written here as code points because several of its characters
# change under Unicode normalisation when copied as text.
DS_LETTER_RANGES = [
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA),
    (0x1BC, 0x1BF), (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377),
    (0x37B, 0x37D), (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C),
    (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556),
    (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113),
    (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128),
    (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149),
    (0x214E, 0x214E), (0x2183, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787),
    (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
]
DS_LETTERS = "\\s?[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in DS_LETTER_RANGES) + "]+"
DEEPSEEK_LLM = [r"[\r\n]", DS_LETTERS, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$",
                "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"]

# (name, vocab file, value for tokenizer.ggml.pre, regexes applied in turn, ignore_merges)
CONFIGS = [
    ("llama3", "ggml-vocab-deepseek-llm.gguf", "llama3", [LLAMA3], True),
    ("qwen2", "ggml-vocab-deepseek-llm.gguf", "qwen2", [QWEN2], False),
    ("qwen2-gpt2vocab", "ggml-vocab-gpt-2.gguf", "qwen2", [QWEN2], False),
    ("gpt2-extra", "ggml-vocab-gpt-2.gguf", "gpt-2", [GPT2], False),
    ("deepseek-llm-extra", "ggml-vocab-deepseek-llm.gguf", "deepseek-llm", DEEPSEEK_LLM, False),
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
    for name, vfile, pre, regexes, ignore in CONFIGS:
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
