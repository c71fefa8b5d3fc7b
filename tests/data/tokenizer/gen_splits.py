#!/usr/bin/env python3
"""Generates the pre-tokenizer split vectors in this folder (splits-NAME.out).

The expected words come from Python's `regex` module (an independent backtracking
regex engine, Debian python3-regex) running each pre-tokenizer's regexes
(pretok_regexes.py) with Hugging Face's Split "isolated" behaviour: in each word of
the previous regex, every match becomes a word and so does the text between matches. The corvid unit test
(test_tokenizer.c, test_pretok_splits) splits the same inputs and must give the same
words. The tests do not need Python; rerun this only to change the vectors:

  python3 tests/data/tokenizer/gen_splits.py

Inputs: bpe-inputs.inp, then split-inputs.inp (written here: cases for the classes
the newer rules tell apart, then random strings). Output per pre-tokenizer NAME:
splits-NAME.out, '#' header lines, then per input one line with the UTF-8 byte length
of each word, space-separated.
"""
import os
import random

import regex

from pretok_regexes import RULES

SEP = "\n__ggml_vocab_test__\n"

FIXED = [
    "ÉCOLE normale SUPÉRIEURE",
    "HTTPServer iPhone McDonald's XMLHttpRequest",
    "ǅungla ǈubljana ᾈ Ǆ ǅ ǆ",
    "ÀÉÎõü ΑΒΓαβγ АБВгдЕ",
    "e\u0301 E\u0301 \u0301abc x\u0301\u0301Y \u0301 \u0301\u0301",
    "AbCdEf aBcDeF ABCdef abcDEF",
    "İstanbul ß SS ẞ ŉ",
    "ʰʲ ˆ ǀǁ ª º",
    "नमस्ते दुनिया ค่ะ สวัสดี عَرَبِيّ",
    ".NET (abc) 'hello' #include <stdio.h> $var a.b.c __init__ @user %d",
    "こんにちは世界 カタカナとひらがな ｶﾀｶﾅ 漢字123漢字",
    "①②③ ⅫⅩ ¹²³ ¼½ 0x1F 1,000,000 12345 678 3.14159",
    "x=1,y=22;z<=333 a+b=c ^_^ `code` ~/.bashrc |pipe| $$$",
    "!!!??? —–- «Ω» ±×÷ ©®™ … “quoted” 『括弧』 【注】",
    "abc123def 42abc ٣٤٥ ߀߁ ០១",
    "'s 'S 'ſ 'll 'LL 'Ll 're 'RE 'vE 'd 'D 'm 'M 't 'T 'x ''",
    "'ſtar 'Star 'Done 'Mine 'LLama 'REd 'VEry 'Tree 'ſ1 'S2",
    "\u3000\u3000a a\u00a0\u00a0b \u2000\u2001c d\u202f",
    " \r\n x \n\n y\t\t\n\t z \r\r\n",
    "path/to/file.txt\n/usr/bin/\r\n//comment//\n",
    "tab\t/\tslash\t//\n",
    "😀😀 👍🏽x 🇫🇷 #️⃣ a\u200db \u2060",
    "\u00ad soft\u00adhyphen \ufeffbom \u200e\u200f",
    "mixed日本語English한국어Русский",
]

POOL = (list("abcXYZ'sStTrReEvVmMlLdD 0123456789 \t\n\r.,!?-_()[]{}\"/\\$+<=>^`|~#%&*@") +
        list("éÉßẞñÑÄäΩωжЖǅ我的世界한글テストｶﾀあア٣²½Ⅻ①ʰˆª") +
        list("\u00a0\u3000\u2028\u0085\u0301\u0308\u093f\u200b\u200d\u00ad") +
        list("—–…“”«»©±×÷€£¥") + ["😀", "👍🏽", "🚀", "'ll", "'S", "  ", "\r\n"])


def random_inputs(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def read_inputs(path):
    with open(path, encoding="utf-8", newline="") as f:
        parts = f.read().split(SEP)
    assert parts[-1] == ""
    return parts[:-1]


def split(compiled, text):
    words = [text] if text else []
    for rx in compiled:
        out = []
        for w in words:
            p = 0
            for m in rx.finditer(w):
                assert m.end() > m.start(), (rx.pattern, w)
                if m.start() > p:
                    out.append(w[p:m.start()])
                out.append(m.group())
                p = m.end()
            if p < len(w):
                out.append(w[p:])
        words = out
    assert "".join(words) == text
    return words


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    extra = FIXED + random_inputs(200, 20261207)
    with open(os.path.join(here, "split-inputs.inp"), "w", encoding="utf-8", newline="") as f:
        for s in extra:
            f.write(s + SEP)
    inputs = read_inputs(os.path.join(here, "bpe-inputs.inp")) + extra
    for name, regexes in RULES.items():
        compiled = [regex.compile(rx) for rx in regexes]
        with open(os.path.join(here, "splits-%s.out" % name), "w", encoding="utf-8",
                  newline="") as f:
            f.write("# generator: tests/data/tokenizer/gen_splits.py, regex %s\n" % regex.__version__)
            f.write("# inputs: bpe-inputs.inp, then split-inputs.inp; pre: %s\n" % name)
            for rx in regexes:
                f.write("# split: %s\n" % rx)
            for s in inputs:
                words = split(compiled, s)
                f.write(" ".join(str(len(w.encode("utf-8"))) for w in words) + "\n")
        print("%s: %d inputs" % (name, len(inputs)))


if __name__ == "__main__":
    main()
