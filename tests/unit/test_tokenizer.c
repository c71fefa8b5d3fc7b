/* tokenizer: llama.cpp's vocabularies and their reference ids (tests/data/vocab),
 * the committed vectors made by Hugging Face tokenizers for every pre-tokenizer, the
 * pre-tokenizers' words against Python's regex module (tests/data/tokenizer),
 * stories260K's prompt, special tokens, decode round trips on random text, the
 * streaming decoder, and bad metadata. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "tok_internal.h"
#include "tokenizer.h"
#include "utf8.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"
#include "../support/test_data.h"

#define VOCAB_SEP "\n__ggml_vocab_test__\n"

static uint64_t g_seed;
static cv_test_rng g_rng;

static size_t rnd(size_t n) { return (size_t)(cv_test_rng_next(&g_rng) % n); }

static char *path_in(const char *dir, const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Writes w to a temporary file (then removed), frees w and opens the result. */
static cv_status write_and_open(cv_gguf_writer *w, cv_gguf **g, cv_error *e) {
    char tmp[4096];
    int fd = cv_test_tmpfile(tmp, sizeof tmp, "tok");
    assert_true(fd >= 0);
    close(fd);
    cv_error we = {0};
    if (cv_gguf_write(w, tmp, &we) != CV_OK) fail_msg("writing %s: %s", tmp, we.msg);
    cv_gguf_writer_free(w);
    cv_status st = cv_gguf_open(tmp, g, e);
    unlink(tmp);
    return st;
}

/* Opens a GGUF, optionally with tokenizer.ggml.pre replaced (through the GGUF
 * writer), and loads its tokenizer. */
static cv_tok *load_tok(const char *path, const char *pre) {
    cv_error e = {0};
    cv_gguf *g;
    cv_tok *t;
    if (cv_gguf_open(path, &g, &e) != CV_OK) fail_msg("%s: %s", path, e.msg);
    if (pre) {
        cv_gguf_writer *w = cv_gguf_writer_new();
        assert_non_null(w);
        assert_int_equal(cv_gguf_set_str(w, "tokenizer.ggml.pre", pre, &e), CV_OK);
        assert_int_equal(cv_gguf_copy_kvs(w, g, &e), CV_OK);
        cv_gguf_close(g);
        if (write_and_open(w, &g, &e) != CV_OK) fail_msg("%s with pre %s: %s", path, pre, e.msg);
    }
    if (cv_tok_load(g, &t, &e) != CV_OK) fail_msg("%s: %s", path, e.msg);
    cv_gguf_close(g);
    return t;
}

static size_t encode(const cv_tok *t, const char *s, size_t len, unsigned flags, int32_t *ids,
                     size_t cap) {
    cv_error e = {0};
    size_t n;
    if (cv_tok_encode(t, s, len, flags, ids, cap, &n, &e) != CV_OK) fail_msg("encode: %s", e.msg);
    return n;
}

static void ids_to_str(const int32_t *ids, size_t n, char *out, size_t cap) {
    size_t w = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && w + 16 < cap; i++) w += (size_t)snprintf(out + w, cap - w, " %d", ids[i]);
}

/* Whether the vocabulary has a token for every byte of s (Falcon's lacks a few
 * control bytes, which no text can then round-trip through). */
static int has_byte_tokens(const cv_tok *t, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (t->byte_tok[(uint8_t)s[i]] < 0) return 0;
    return 1;
}

/* Encodes every input of inp (separated by VOCAB_SEP) and compares with the
 * lines of out (leading '#' lines skipped); checks decode(encode(x)) == x too
 * where the vocabulary has every byte of x. */
static void check_vectors(const cv_tok *t, const char *inp, const char *inp_path,
                          const char *out_path) {
    size_t no;
    char *out = slurp(out_path, &no);
    char *o = out;
    while (*o == '#') o = strchr(o, '\n') + 1;
    size_t cap = 1 << 16, cases = 0, bad = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *got = malloc(cap * 8), *dec = malloc(cap);
    assert_true(ids && got && dec);
    for (const char *p = inp, *q; (q = strstr(p, VOCAB_SEP)) != NULL; p = q + strlen(VOCAB_SEP)) {
        char *eol = strchr(o, '\n');
        assert_non_null(eol);
        *eol = 0;
        size_t len = (size_t)(q - p);
        size_t n = encode(t, p, len, 0, ids, cap);
        ids_to_str(ids, n, got, cap * 8);
        if (strcmp(got, o) != 0) {
            print_message("%s case %zu '%.*s'\n  expected:%s\n  got:     %s\n", inp_path, cases,
                          (int)len, p, o, got);
            bad++;
        }
        cv_error e = {0};
        size_t dl;
        assert_int_equal(cv_tok_decode(t, ids, n, CV_TOK_STRIP_SPACE, dec, cap, &dl, &e), CV_OK);
        if (has_byte_tokens(t, p, len) && (dl != len || memcmp(dec, p, len) != 0)) {
            print_message("%s case %zu does not round-trip: '%.*s'\n", inp_path, cases, (int)dl, dec);
            bad++;
        }
        o = eol + 1;
        cases++;
    }
    print_message("%s vs %s: %zu cases\n", inp_path, out_path, cases);
    assert_true(cases > 0);
    assert_int_equal(bad, 0);
    free(ids), free(got), free(dec), free(out);
}

/* Random text from a pool of ASCII, accented, CJK, emoji, odd spaces and a few
 * invalid bytes; decode(encode(x)) must give x back byte for byte. The invalid
 * bytes avoid C0, C1 and F5..FF, which never occur in UTF-8: deepseek-llm has
 * no byte tokens for them (their aliases are user-defined tokens like "ÿ"). */
static size_t random_text(char *buf, size_t max) {
    static const char *const pool[] = {
        "a", "b", "Z", " ", "  ", "\t", "\n", "\r\n", "'s", "'RE", "1", "42", "!", ".", "é",
        "ß", "Ω", "ж", "我", "世界", "한", "テ", "😀", "👍🏽", "\xC2\xA0", "\xE3\x80\x80",
        "\xCC\x81", "\xF4\x90", "\xC3", "\xE4\xBD", "\x80", "<", ">", "<s", "[PAD", "\x00",
    };
    size_t n = 0, k = rnd(30);
    for (size_t i = 0; i < k; i++) {
        const char *s = pool[rnd(sizeof pool / sizeof pool[0])];
        size_t l = strlen(s) ? strlen(s) : 1; /* "\x00" is one NUL byte */
        if (n + l > max) break;
        memcpy(buf + n, s, l);
        n += l;
    }
    return n;
}

static const char *hex(const char *s, size_t n, char *out, size_t cap) {
    size_t w = 0;
    for (size_t i = 0; i < n && w + 4 < cap; i++) w += (size_t)snprintf(out + w, cap - w, "%02x ", (uint8_t)s[i]);
    out[w] = 0;
    return out;
}

static void check_roundtrip(const cv_tok *t, const char *vocab_name) {
    char text[256], dec[1024];
    int32_t ids[512];
    for (int it = 0; it < 2000; it++) {
        size_t len = random_text(text, sizeof text);
        size_t n = encode(t, text, len, 0, ids, 512), dl;
        cv_error e = {0};
        assert_int_equal(cv_tok_decode(t, ids, n, CV_TOK_STRIP_SPACE, dec, sizeof dec, &dl, &e), CV_OK);
        if (dl != len || memcmp(dec, text, len) != 0) {
            char a[1024], b[1024];
            fail_msg("%s (seed %llu, iteration %d): %s decodes as %s", vocab_name,
                     (unsigned long long)g_seed, it, hex(text, len, a, sizeof a),
                     hex(dec, dl, b, sizeof b));
        }
    }
}

static void check_llamacpp_vocab(const char *name) {
    char vocab[4096], inp[4096], out[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab/ggml-vocab-%s.gguf", cv_test_data_dir(), name);
    snprintf(inp, sizeof inp, "%s/vocab/ggml-vocab-%s.gguf.inp", cv_test_data_dir(), name);
    snprintf(out, sizeof out, "%s/vocab/ggml-vocab-%s.gguf.out", cv_test_data_dir(), name);
    cv_tok *t = load_tok(vocab, NULL);
    size_t ni;
    char *text = slurp(inp, &ni);
    check_vectors(t, text, inp, out);
    free(text);
    check_roundtrip(t, name);
    cv_tok_free(t);
}

static void test_llamacpp_vocabs(void **state) {
    (void)state;
    check_llamacpp_vocab("llama-spm");
    check_llamacpp_vocab("gpt-2");
    check_llamacpp_vocab("deepseek-llm");
    check_llamacpp_vocab("deepseek-coder");
    check_llamacpp_vocab("falcon");
    check_llamacpp_vocab("starcoder");
    check_llamacpp_vocab("qwen2");
    /* llama.cpp's inputs, ids by the models' own tokenizers (make_vocab.py) */
    check_llamacpp_vocab("tekken");
    check_llamacpp_vocab("deepseek-v3");
}

/* tests/data/tokenizer's inputs: bpe-inputs.inp, then split-inputs.inp when both. */
static char *committed_inputs(int both) {
    char path[4096];
    size_t n1, n2 = 0;
    char *a = slurp(cv_test_data(path, sizeof path, "tokenizer/bpe-inputs.inp"), &n1);
    if (!both) return a;
    char *b = slurp(cv_test_data(path, sizeof path, "tokenizer/split-inputs.inp"), &n2);
    char *all = malloc(n1 + n2 + 1);
    assert_non_null(all);
    memcpy(all, a, n1);
    memcpy(all + n1, b, n2 + 1);
    free(a), free(b);
    return all;
}

/* Vectors made by tokenizers with a pre-tokenizer over one of the vocabularies in
 * tests/data/vocab (see the header of each .out file): Llama 3 and Qwen3.5 have no
 * vocabulary file of their own there and borrow one; the others add inputs llama.cpp's
 * vectors lack. */
static void test_committed_vectors(void **state) {
    (void)state;
    static const struct {
        const char *name, *vocab, *pre;
    } sets[] = {
        {"llama3", "ggml-vocab-deepseek-llm.gguf", "llama3"},
        {"qwen2", "ggml-vocab-deepseek-llm.gguf", "qwen2"},
        {"qwen2-gpt2vocab", "ggml-vocab-gpt-2.gguf", "qwen2"},
        {"gpt2-extra", "ggml-vocab-gpt-2.gguf", "gpt-2"},
        {"deepseek-llm-extra", "ggml-vocab-deepseek-llm.gguf", "deepseek-llm"},
        {"deepseek-coder-extra", "ggml-vocab-deepseek-coder.gguf", "deepseek-coder"},
        {"falcon-extra", "ggml-vocab-falcon.gguf", "falcon"},
        {"smollm-starcodervocab", "ggml-vocab-starcoder.gguf", "smollm"},
        {"qwen2-extra", "ggml-vocab-qwen2.gguf", "qwen2"},
        {"qwen35-qwen2vocab", "ggml-vocab-qwen2.gguf", "qwen35"},
    };
    char *inputs = committed_inputs(0);
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char vpath[4096], out[4096];
        snprintf(vpath, sizeof vpath, "%s/vocab/%s", cv_test_data_dir(), sets[i].vocab);
        snprintf(out, sizeof out, "%s/tokenizer/%s.out", cv_test_data_dir(), sets[i].name);
        cv_tok *t = load_tok(vpath, sets[i].pre);
        assert_string_equal(cv_tok_pre_name(t), sets[i].pre);
        check_vectors(t, inputs, "tokenizer/bpe-inputs.inp", out);
        cv_tok_free(t);
    }
    free(inputs);
    /* Real vocabularies with the ids their model's own tokenizer gives, on the split
     * inputs too (vocab/make_vocab.py): tekken by tiktoken over Mistral's file,
     * deepseek-v3 by tokenizers running DeepSeek V4's tokenizer.json. */
    inputs = committed_inputs(1);
    static const char *const own[] = {"tekken", "deepseek-v3"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        char rel[256], vpath[4096], out[4096];
        snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", own[i]);
        cv_tok *t = load_tok(cv_test_data(vpath, sizeof vpath, rel), NULL);
        assert_string_equal(cv_tok_pre_name(t), own[i]);
        snprintf(rel, sizeof rel, "tokenizer/%s.out", own[i]);
        check_vectors(t, inputs, "tokenizer/bpe-inputs.inp + split-inputs.inp",
                      cv_test_data(out, sizeof out, rel));
        cv_tok_free(t);
    }
    free(inputs);
}

static void test_stories260k_prompt(void **state) {
    (void)state;
    cv_tok *t = load_tok(path_in(cv_test_data_dir(), "models/stories260K.gguf"), NULL);
    assert_string_equal(cv_tok_kind_name(t), "spm");
    assert_int_equal(cv_tok_n_vocab(t), 512);
    assert_int_equal(cv_tok_bos(t), 1);
    assert_int_equal(cv_tok_eos(t), 2);
    assert_true(cv_tok_is_eog(t, 2));
    assert_false(cv_tok_is_eog(t, 1));
    int32_t ids[32];
    const char *text = "Once upon a time";
    size_t n = encode(t, text, strlen(text), CV_TOK_ADD_SPECIAL, ids, 32);
    const int32_t want[] = {1, 403, 407, 261, 378};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    char out[64];
    size_t len;
    cv_error e = {0};
    assert_int_equal(cv_tok_decode(t, ids, n, CV_TOK_STRIP_SPACE, out, sizeof out, &len, &e), CV_OK);
    assert_int_equal(len, strlen(text));
    assert_memory_equal(out, text, len);
    /* Too little room: the needed count comes back with CV_ERANGE. */
    assert_int_equal(cv_tok_encode(t, text, strlen(text), CV_TOK_ADD_SPECIAL, ids, 2, &n, &e), CV_ERANGE);
    assert_int_equal(n, 5);
    assert_int_equal(cv_tok_decode(t, ids, 5, 0, out, 3, &len, &e), CV_ERANGE);
    assert_int_equal(len, strlen(text) + 1);
    int32_t bad = 512;
    assert_int_equal(cv_tok_decode(t, &bad, 1, 0, out, sizeof out, &len, &e), CV_EINVAL);
    cv_tok_free(t);
}

static void test_special_tokens(void **state) {
    (void)state;
    char path[4096];
    int32_t ids[64];
    size_t n;
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", cv_test_data_dir());
    cv_tok *spm = load_tok(path, NULL);
    const char *s = "<s>Hi</s>";
    /* Parsed: control tokens; SPM adds its space after a special token. */
    n = encode(spm, s, strlen(s), CV_TOK_PARSE_SPECIAL, ids, 64);
    assert_true(n >= 3);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[n - 1], 2);
    /* Not parsed: plain text, no control id anywhere. */
    n = encode(spm, s, strlen(s), 0, ids, 64);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] != 1 && ids[i] != 2);
    /* BOS from add_bos_token; empty text gives only BOS. */
    n = encode(spm, "", 0, CV_TOK_ADD_SPECIAL, ids, 64);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    n = encode(spm, "", 0, 0, ids, 64);
    assert_int_equal(n, 0);
    /* Control tokens render only on request. */
    const char *p;
    size_t len;
    cv_error e = {0};
    assert_int_equal(cv_tok_piece(spm, 1, 0, &p, &len, &e), CV_OK);
    assert_int_equal(len, 0);
    assert_int_equal(cv_tok_piece(spm, 1, CV_TOK_RENDER_SPECIAL, &p, &len, &e), CV_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "<s>", 3);
    cv_tok_free(spm);

    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-gpt-2.gguf", cv_test_data_dir());
    cv_tok *gpt2 = load_tok(path, NULL);
    s = "a<|endoftext|>b";
    n = encode(gpt2, s, strlen(s), CV_TOK_PARSE_SPECIAL, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 50256);
    n = encode(gpt2, s, strlen(s), 0, ids, 64);
    assert_true(n > 3);
    assert_true(cv_tok_is_eog(gpt2, 50256));
    /* GPT-2 adds no BOS by default. */
    assert_false(cv_tok_adds_bos(gpt2));
    assert_int_equal(encode(gpt2, "a", 1, CV_TOK_ADD_SPECIAL, ids, 64), 1);
    cv_tok_free(gpt2);

    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-deepseek-llm.gguf", cv_test_data_dir());
    cv_tok *ds = load_tok(path, NULL);
    /* User-defined tokens are matched whether or not specials are parsed,
     * leftmost-longest ([PAD100200] over a shorter [PAD10020] prefix). */
    s = "x[PAD100200]y";
    int32_t pad = cv_tok_find(ds, "[PAD100200]", 11);
    assert_int_equal(pad, 100200);
    n = encode(ds, s, strlen(s), 0, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], pad);
    assert_int_equal(cv_tok_token_type(ds, pad), CV_TOK_TYPE_USER_DEFINED);
    assert_int_equal(encode(ds, "x", 1, CV_TOK_ADD_SPECIAL, ids, 64), 2);
    assert_int_equal(ids[0], 100000);
    assert_true(cv_tok_is_eog(ds, 100001));
    cv_tok_free(ds);
}

static size_t encode_plain(const cv_tok *t, const char *s, unsigned flags, const cv_tok_span *sp,
                           size_t n_sp, int32_t *ids, size_t cap) {
    cv_error e = {0};
    size_t n;
    if (cv_tok_encode_plain(t, s, strlen(s), flags, sp, n_sp, ids, cap, &n, &e) != CV_OK)
        fail_msg("encode_plain: %s", e.msg);
    return n;
}

static int count_id(const int32_t *ids, size_t n, int32_t id) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

/* Control tokens are matched only where their whole text lies outside the plain
 * spans; everything else is encoded as by cv_tok_encode. */
static void test_plain_spans(void **state) {
    (void)state;
    char path[4096];
    int32_t ids[64], ref[64];
    cv_error e = {0};
    size_t n, nr;
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-gpt-2.gguf", cv_test_data_dir());
    cv_tok *gpt2 = load_tok(path, NULL);
    const char *s = "a<|endoftext|>b<|endoftext|>c"; /* the tokens at 1..14 and 15..28 */
    const unsigned P = CV_TOK_PARSE_SPECIAL;
    nr = encode(gpt2, s, strlen(s), P, ref, 64);
    assert_int_equal(count_id(ref, nr, 50256), 2);
    /* No spans, spans around plain text only, empty spans: the same ids. */
    const cv_tok_span around[] = {{0, 1}, {14, 1}, {15, 0}, {28, 1}};
    n = encode_plain(gpt2, s, P, around, 4, ids, 64);
    assert_int_equal(n, nr);
    assert_memory_equal(ids, ref, n * sizeof *ids);
    n = encode_plain(gpt2, s, P, (const cv_tok_span[]){{1, 0}, {29, 0}}, 2, ids, 64);
    assert_memory_equal(ids, ref, nr * sizeof *ids);
    /* A span over the first token, over one byte of it, or from inside it past its
     * end: that one becomes text, the other stays a token. */
    const cv_tok_span cut[][1] = {{{1, 13}}, {{7, 1}}, {{13, 2}}, {{0, 2}}};
    for (size_t i = 0; i < 4; i++) {
        n = encode_plain(gpt2, s, P, cut[i], 1, ids, 64);
        if (count_id(ids, n, 50256) != 1) fail_msg("span %zu: %d control tokens", i, count_id(ids, n, 50256));
        assert_true(n > nr);
        char out[64];
        size_t len;
        assert_int_equal(cv_tok_decode(gpt2, ids, n, CV_TOK_RENDER_SPECIAL, out, sizeof out, &len, &e), CV_OK);
        assert_int_equal(len, strlen(s));
        assert_memory_equal(out, s, len);
    }
    /* Without CV_TOK_PARSE_SPECIAL the spans change nothing: no control token anywhere. */
    nr = encode(gpt2, s, strlen(s), 0, ref, 64);
    n = encode_plain(gpt2, s, 0, cut[0], 1, ids, 64);
    assert_int_equal(n, nr);
    assert_memory_equal(ids, ref, n * sizeof *ids);
    assert_int_equal(count_id(ids, n, 50256), 0);
    /* Spans out of order, overlapping or past the end are refused. */
    const cv_tok_span bad[][2] = {{{5, 2}, {2, 1}}, {{2, 4}, {5, 1}}, {{20, 10}, {30, 0}}, {{0, 0}, {30, 0}}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(cv_tok_encode_plain(gpt2, s, strlen(s), P, bad[i], 2, ids, 64, &n, &e), CV_EINVAL);
        assert_non_null(strstr(e.msg, "spans must be sorted and disjoint"));
    }
    cv_tok_free(gpt2);

    /* SPM: the leading space after a control token stays where it was. */
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", cv_test_data_dir());
    cv_tok *spm = load_tok(path, NULL);
    s = "<s>Hi</s> there</s>";
    nr = encode(spm, s, strlen(s), P, ref, 64);
    n = encode_plain(spm, s, P, (const cv_tok_span[]){{3, 2}, {9, 6}}, 2, ids, 64);
    assert_int_equal(n, nr);
    assert_memory_equal(ids, ref, n * sizeof *ids);
    n = encode_plain(spm, s, P, (const cv_tok_span[]){{3, 6}}, 1, ids, 64);
    assert_int_equal(count_id(ids, n, 2), 1);
    assert_int_equal(count_id(ids, n, 1), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[n - 1], 2);
    cv_tok_free(spm);

    /* User-defined tokens are matched inside spans too, as without CV_TOK_PARSE_SPECIAL. */
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-deepseek-llm.gguf", cv_test_data_dir());
    cv_tok *ds = load_tok(path, NULL);
    s = "x[PAD100200]y";
    n = encode_plain(ds, s, P, (const cv_tok_span[]){{0, strlen(s)}}, 1, ids, 64);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 100200);
    cv_tok_free(ds);
}

static void test_stream_decoder(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", cv_test_data_dir());
    cv_tok *t = load_tok(path, NULL);
    const char *text = "Hi 😀 你好 \xF0\x9F\xA6\x9C!";
    int32_t ids[64];
    size_t n = encode(t, text, strlen(text), CV_TOK_ADD_SPECIAL, ids, 64);
    cv_tok_stream *s;
    cv_error e = {0};
    assert_int_equal(cv_tok_stream_new(t, CV_TOK_STRIP_SPACE, &s, &e), CV_OK);
    char all[256];
    size_t w = 0, held_back = 0;
    for (size_t i = 0; i < n; i++) {
        const char *chunk;
        size_t len;
        assert_int_equal(cv_tok_stream_feed(s, ids[i], &chunk, &len, &e), CV_OK);
        assert_true(cv_utf8_valid(chunk, len));
        if (len == 0 && i > 0) held_back++;
        memcpy(all + w, chunk, len);
        w += len;
    }
    /* The emoji and the parrot fall back to byte tokens: some feeds held bytes back. */
    assert_true(held_back >= 3);
    const char *tail;
    size_t tl;
    cv_tok_stream_flush(s, &tail, &tl);
    assert_int_equal(tl, 0);
    assert_int_equal(w, strlen(text));
    assert_memory_equal(all, text, w);

    /* An incomplete character at the end becomes U+FFFD at flush; a broken one
     * at once, and the byte that broke it passes through. */
    int32_t f0 = cv_tok_find(t, "<0xF0>", 6), x41 = cv_tok_find(t, "<0x41>", 6);
    assert_true(f0 >= 0 && x41 >= 0);
    const char *chunk;
    size_t len;
    assert_int_equal(cv_tok_stream_feed(s, f0, &chunk, &len, &e), CV_OK);
    assert_int_equal(len, 0);
    cv_tok_stream_flush(s, &chunk, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(chunk, "\xEF\xBF\xBD", 3);
    assert_int_equal(cv_tok_stream_feed(s, f0, &chunk, &len, &e), CV_OK);
    assert_int_equal(cv_tok_stream_feed(s, x41, &chunk, &len, &e), CV_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(chunk, "\xEF\xBF\xBD" "A", 4);
    assert_int_equal(cv_tok_stream_feed(s, -1, &chunk, &len, &e), CV_EINVAL);
    cv_tok_stream_free(s);
    cv_tok_free(t);
}

/* ---- hand-made vocabularies through the GGUF writer ---- */

typedef struct spec {
    const char *model;      /* NULL: no tokenizer.ggml.model */
    const char *pre;
    const char *const *tokens;
    uint64_t n;
    const float *scores;    /* n_scores entries */
    uint64_t n_scores;
    const int32_t *types;
    uint64_t n_types;
    const char *const *merges;
    uint64_t n_merges;
} spec;

static cv_status load_spec(const spec *sp, cv_tok **t, cv_error *e) {
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_non_null(w);
    cv_error we = {0};
    assert_int_equal(cv_gguf_set_str(w, "general.architecture", "llama", &we), CV_OK);
    if (sp->model) assert_int_equal(cv_gguf_set_str(w, "tokenizer.ggml.model", sp->model, &we), CV_OK);
    if (sp->pre) assert_int_equal(cv_gguf_set_str(w, "tokenizer.ggml.pre", sp->pre, &we), CV_OK);
    assert_int_equal(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", sp->tokens, sp->n, &we), CV_OK);
    if (sp->scores)
        assert_int_equal(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, sp->scores,
                                         sp->n_scores, &we), CV_OK);
    if (sp->types)
        assert_int_equal(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, sp->types,
                                         sp->n_types, &we), CV_OK);
    if (sp->merges)
        assert_int_equal(cv_gguf_set_str_arr(w, "tokenizer.ggml.merges", sp->merges, sp->n_merges, &we),
                         CV_OK);
    cv_gguf *g;
    *t = NULL;
    /* The reader checks some tokenizer metadata itself (array lengths). */
    cv_status st = write_and_open(w, &g, e);
    if (st != CV_OK) return st;
    st = cv_tok_load(g, t, e);
    cv_gguf_close(g);
    return st;
}

static const char *const k_tiny_tokens[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b",
                                            "\xE2\x96\x81" "a", "ab", "\xE2\x96\x81" "ab", "<0x62>"};
static const float k_tiny_scores[] = {0, 0, 0, -1, -2, -2, -1.5f, -0.5f, -0.1f, 0};
static const int32_t k_tiny_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};

static void test_tiny_spm(void **state) {
    (void)state;
    spec sp = {"llama", NULL, k_tiny_tokens, 10, k_tiny_scores, 10, k_tiny_types, 10, NULL, 0};
    cv_tok *t;
    cv_error e = {0};
    assert_int_equal(load_spec(&sp, &t, &e), CV_OK);
    int32_t ids[16];
    /* "ab" -> "▁ab" (the highest-scoring merge path). */
    size_t n = encode(t, "ab", 2, CV_TOK_ADD_SPECIAL, ids, 16);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 8);
    /* "c" has no piece and no byte token: <unk>. "b" alone is a piece, and the
     * <0x62> byte token is never produced by merging text. */
    n = encode(t, "c", 1, 0, ids, 16);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 0);
    n = encode(t, "b", 1, 0, ids, 16);
    assert_int_equal(ids[n - 1], 5);
    /* The byte token decodes to its byte. */
    const char *p;
    size_t len;
    assert_int_equal(cv_tok_piece(t, 9, 0, &p, &len, &e), CV_OK);
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'b');
    cv_tok_free(t);
}

/* The words of every pre-tokenizer rule set on the committed inputs, against those
 * Python's regex module gives with the rule set's regexes (tests/data/tokenizer/
 * gen_splits.py: bpe-inputs.inp then split-inputs.inp, one line of word byte lengths
 * per input). The splitter is reached through a tokenizer loaded with that
 * tokenizer.ggml.pre, so the name's mapping is checked too. */
static void test_pretok_splits(void **state) {
    (void)state;
    static const char *const names[] = {
        "gpt-2", "llama3", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder",
        "deepseek-v3", "falcon", "smollm", "tekken",
    };
    static const char *const tokens[] = {"a"};
    char path[4096];
    size_t no;
    char *inp = committed_inputs(1), *got = malloc(1 << 16);
    assert_non_null(got);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        spec sp = {"gpt2", names[i], tokens, 1, NULL, 0, NULL, 0, NULL, 0};
        cv_tok *t;
        cv_error e = {0};
        if (load_spec(&sp, &t, &e) != CV_OK) fail_msg("pre %s: %s", names[i], e.msg);
        assert_string_equal(cv_tok_pre_name(t), names[i]);
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizer/splits-%s.out", names[i]);
        char *out = slurp(cv_test_data(path, sizeof path, rel), &no), *o = out;
        while (*o == '#') o = strchr(o, '\n') + 1;
        size_t cases = 0, bad = 0;
        for (char *p = inp, *q; (q = strstr(p, VOCAB_SEP)) != NULL; p = q + strlen(VOCAB_SEP)) {
            char *eol = strchr(o, '\n');
            assert_non_null(eol);
            *eol = 0;
            tok_words w;
            assert_int_equal(tok_pretok_split(t->pre, p, (size_t)(q - p), &w, &e), CV_OK);
            size_t k = 0;
            got[0] = 0;
            for (size_t j = 0; j < w.n_words && k + 24 < (1 << 16); j++)
                k += (size_t)snprintf(got + k, (1 << 16) - k, "%s%zu", j ? " " : "",
                                      w.bounds[j + 1] - w.bounds[j]);
            free(w.bounds);
            if (strcmp(got, o) != 0) {
                print_message("%s case %zu '%.*s'\n  expected: %s\n  got:      %s\n", names[i],
                              cases, (int)(q - p), p, o, got);
                bad++;
            }
            o = eol + 1;
            cases++;
        }
        print_message("splits-%s: %zu cases\n", names[i], cases);
        assert_true(cases > 400);
        assert_int_equal(bad, 0);
        free(out);
        cv_tok_free(t);
    }
    free(inp), free(got);
}

static void test_bad_metadata(void **state) {
    (void)state;
    cv_tok *t = NULL;
    cv_error e = {0};
    spec sp = {NULL, NULL, k_tiny_tokens, 10, NULL, 0, NULL, 0, NULL, 0};
    assert_int_equal(load_spec(&sp, &t, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "tokenizer.ggml.model"));
    sp.model = "t5";
    assert_int_equal(load_spec(&sp, &t, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "'t5'"));
    sp.model = "gpt2";
    sp.pre = "mystery";
    assert_int_equal(load_spec(&sp, &t, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "'mystery'"));
    sp.model = "llama";
    sp.pre = NULL;
    sp.scores = k_tiny_scores;
    sp.n_scores = 9;
    assert_int_equal(load_spec(&sp, &t, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "tokenizer.ggml.scores"));
    sp.n_scores = 10;
    const int32_t bad_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 9};
    sp.types = bad_types;
    sp.n_types = 10;
    assert_int_equal(load_spec(&sp, &t, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "token_type[9] = 9"));
    sp.model = "gpt2";
    sp.types = NULL;
    const char *const merges[] = {"a b", "ab"};
    sp.merges = merges;
    sp.n_merges = 2;
    assert_int_equal(load_spec(&sp, &t, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "merges[1]"));
    assert_null(t);
}

int main(void) {
    g_seed = cv_test_seed("test_tokenizer");
    g_rng = cv_test_rng_new(g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llamacpp_vocabs),
        cmocka_unit_test(test_committed_vectors),
        cmocka_unit_test(test_stories260k_prompt),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_plain_spans),
        cmocka_unit_test(test_stream_decoder),
        cmocka_unit_test(test_tiny_spm),
        cmocka_unit_test(test_pretok_splits),
        cmocka_unit_test(test_bad_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
