/* GGUF reader and writer: hostile files (one test per class of damage), round trips
 * of every value and tensor type, and the real files under tests/data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "../support/test_tmpdir.h"
#include "../support/test_data.h"

static uint64_t rng_state;

static uint64_t rnd(void) {  /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- raw byte builder, for files the writer refuses to produce ---- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb *b, const char *s) { bb_u64(b, strlen(s)); bb_put(b, s, strlen(s)); }
static void bb_header(bb *b, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, 3);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, CV_GGUF_UINT32);
    bb_u32(b, v);
}
static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}
static void bb_pad(bb *b, size_t align) {
    static const uint8_t z[64];
    while (b->n % align) bb_put(b, z, 1);
}
static void bb_zeros(bb *b, size_t n) {
    static const uint8_t z[256];
    while (n) {
        size_t c = n < sizeof z ? n : sizeof z;
        bb_put(b, z, c);
        n -= c;
    }
}

static size_t scalar_size(cv_gguf_vtype t) {
    switch (t) {
    case CV_GGUF_UINT8: case CV_GGUF_INT8: case CV_GGUF_BOOL: return 1;
    case CV_GGUF_UINT16: case CV_GGUF_INT16: return 2;
    case CV_GGUF_UINT32: case CV_GGUF_INT32: case CV_GGUF_FLOAT32: return 4;
    default: return 8;
    }
}

/* ---- expectations ---- */

/* Opening must fail with CV_EFORMAT, a message naming `field`, and the byte offset;
 * the same bytes through a file must fail the same way and name the path. */
static void expect_bad(const void *buf, size_t len, const char *field) {
    cv_gguf *g = (cv_gguf *)1;
    cv_error e = {0};
    assert_int_equal(cv_gguf_open_memory(buf, len, &g, &e), CV_EFORMAT);
    assert_null(g);
    if (!strstr(e.msg, field) || !strstr(e.msg, "at byte "))
        fail_msg("message \"%s\" does not name \"%s\" and a byte offset", e.msg, field);

    char path[4096];
    int fd = cv_test_tmpfile(path, sizeof path, "gguf");
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
    cv_error e2 = {0};
    assert_int_equal(cv_gguf_open(path, &g, &e2), CV_EFORMAT);
    assert_null(g);
    assert_non_null(strstr(e2.msg, path));
    assert_non_null(strstr(e2.msg, e.msg));
    unlink(path);
}

static cv_gguf *open_ok(const void *buf, size_t len) {
    cv_gguf *g = NULL;
    cv_error e = {0};
    if (cv_gguf_open_memory(buf, len, &g, &e)) fail_msg("open failed: %s", e.msg);
    return g;
}

static void ok(cv_status s, const cv_error *e) {
    if (s) fail_msg("status %d: %s", s, e->msg);
}

/* A small valid file: vocabulary of 4, two F32 tensors. */
static void build_small(uint8_t **buf, size_t *len) {
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "a"};
    static const float scores[] = {0, 0, 0, -1.5f};
    static const int32_t types[] = {2, 3, 3, 1};
    static float w1[8 * 2], w2[8];
    cv_error e = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_non_null(w);
    ok(cv_gguf_set_str(w, "general.architecture", "llama", &e), &e);
    ok(cv_gguf_set_u32(w, "llama.block_count", 1, &e), &e);
    ok(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, 4, &e), &e);
    ok(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, 4, &e), &e);
    ok(cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, 4, &e), &e);
    ok(cv_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1, &e), &e);
    ok(cv_gguf_add_tensor(w, "a", CV_TYPE_F32, 2, (const int64_t[]){8, 2}, w1, &e), &e);
    ok(cv_gguf_add_tensor(w, "b", CV_TYPE_F32, 1, (const int64_t[]){8}, w2, &e), &e);
    ok(cv_gguf_write_memory(w, buf, len, &e), &e);
    cv_gguf_writer_free(w);
}

/* Offset of the first occurrence of `needle` (a key or name) in the file. */
static size_t find_bytes(const uint8_t *buf, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(buf + i, needle, n)) return i;
    fail_msg("'%s' not in the file", needle);
    return 0;
}

static void patch_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void patch_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- header ---- */

static void test_bad_magic(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    /* Bytes that cannot be printed as text and a secret-looking start: the message says
     * "not a GGUF file" and never shows them, in any form. */
    memcpy(buf, "\x01s3k", 4);
    expect_bad(buf, len, "not a GGUF file");
    cv_gguf *g = NULL;
    cv_error e = {0};
    assert_int_equal(cv_gguf_open_memory(buf, len, &g, &e), CV_EFORMAT);
    assert_null(strstr(e.msg, "s3k"));
    assert_null(strstr(e.msg, "73 33 6b"));
    assert_null(strstr(e.msg, "01"));
    assert_int_equal(cv_gguf_open_memory("GX", 2, &g, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "not a GGUF file"));
    assert_int_equal(cv_gguf_open_memory("GG", 2, &g, &e), CV_EFORMAT); /* a GGUF cut short */
    assert_non_null(strstr(e.msg, "truncated"));
    free(buf);
}

static void test_bad_version(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    static const uint32_t bad[] = {0, 1, 4, 0x03000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        patch_u32(buf + 4, bad[i]);
        expect_bad(buf, len, "version");
    }
    patch_u32(buf + 4, 2);  /* same layout as 3: accepted */
    cv_gguf *g = open_ok(buf, len);
    assert_int_equal(cv_gguf_version(g), 2);
    cv_gguf_close(g);
    free(buf);
}

static void test_truncated_anywhere(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    cv_gguf *g = open_ok(buf, len);
    cv_gguf_close(g);
    expect_bad(buf, 0, "truncated");
    expect_bad(buf, 23, "header");
    /* Every shorter prefix cuts a field or the last tensor's data. A fresh copy each
     * time, so that ASan sees any read past the cut. */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        cv_error e = {0};
        assert_int_equal(cv_gguf_open_memory(copy, cut, &g, &e), CV_EFORMAT);
        assert_non_null(strstr(e.msg, "at byte"));
        free(copy);
    }
    free(buf);
}

static void test_counts_beyond_file(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    patch_u64(buf + 16, UINT64_MAX / 2);
    expect_bad(buf, len, "kv count");
    patch_u64(buf + 16, 6);
    patch_u64(buf + 8, (uint64_t)1 << 40);
    expect_bad(buf, len, "tensor count");
    patch_u64(buf + 8, UINT64_MAX);
    expect_bad(buf, len, "tensor count");
    free(buf);
}

/* ---- key/values ---- */

static void test_string_length_beyond_file(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    size_t key = find_bytes(buf, len, "general.architecture");
    patch_u64(buf + key - 8, UINT64_MAX - 3);
    expect_bad(buf, len, "key length");
    patch_u64(buf + key - 8, 20);
    size_t val = key + 20 + 4;  /* the value's length follows the type */
    patch_u64(buf + val, len);
    expect_bad(buf, len, "string value length");
    patch_u64(buf + val, 5);
    size_t tok = find_bytes(buf, len, "<unk>");
    patch_u64(buf + tok - 8, 1u << 30);
    expect_bad(buf, len, "kv 2 'tokenizer.ggml.tokens' element [0]");
    free(buf);
}

static void test_array_length_beyond_file(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    build_small(&buf, &len);
    size_t key = find_bytes(buf, len, "tokenizer.ggml.scores");
    size_t n_at = key + strlen("tokenizer.ggml.scores") + 4 + 4;
    patch_u64(buf + n_at, UINT64_MAX / 4 + 1);  /* * 4 bytes wraps to a small size */
    expect_bad(buf, len, "array length");
    patch_u64(buf + n_at, len);
    expect_bad(buf, len, "'tokenizer.ggml.scores'");
    free(buf);
}

static void test_unknown_value_type(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 0, 1);
    bb_str(&b, "x");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_bad(b.p, b.n, "value type 13");
    /* an array whose element type is unknown */
    b.n = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "x");
    bb_u32(&b, CV_GGUF_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    expect_bad(b.p, b.n, "array element type 99");
    free(b.p);
}

static void test_nesting_too_deep(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, CV_GGUF_ARRAY);
    for (int d = 0; d < 9; d++) { bb_u32(&b, CV_GGUF_ARRAY); bb_u64(&b, 1); }
    bb_u32(&b, CV_GGUF_UINT8);
    bb_u64(&b, 1);
    bb_put(&b, "\x01", 1);
    expect_bad(b.p, b.n, "nested deeper");
    free(b.p);
}

static void test_duplicate_key(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 0, 3);
    bb_kv_u32(&b, "a.b", 1);
    bb_kv_u32(&b, "c", 2);
    bb_kv_u32(&b, "a.b", 3);
    expect_bad(b.p, b.n, "kv 2 'a.b': duplicate key");
    free(b.p);
}

/* Each known key stored with a type it must not have. */
static void test_wrong_type_for_known_key(void **state) {
    (void)state;
    static const struct { const char *key; cv_gguf_vtype type; } cases[] = {
        {"general.architecture", CV_GGUF_UINT32},
        {"general.alignment", CV_GGUF_INT32},
        {"general.alignment", CV_GGUF_UINT64},
        {"llama.context_length", CV_GGUF_FLOAT32},
        {"llama.block_count", CV_GGUF_STRING},
        {"qwen2.embedding_length", CV_GGUF_BOOL},
        {"llama.attention.head_count_kv", CV_GGUF_FLOAT64},
        {"llama.attention.layer_norm_rms_epsilon", CV_GGUF_FLOAT64},
        {"gemma3.rope.freq_base", CV_GGUF_UINT32},
        {"tokenizer.ggml.bos_token_id", CV_GGUF_FLOAT32},
        {"tokenizer.ggml.eot_token_id", CV_GGUF_STRING},
        {"tokenizer.ggml.add_bos_token", CV_GGUF_UINT8},
        {"tokenizer.ggml.model", CV_GGUF_INT32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bb b = {0};
        bb_header(&b, 0, 1);
        bb_str(&b, cases[i].key);
        bb_u32(&b, cases[i].type);
        if (cases[i].type == CV_GGUF_STRING) bb_str(&b, "1");
        else bb_put(&b, "\x01\0\0\0\0\0\0\0", scalar_size(cases[i].type));
        char want[128];
        snprintf(want, sizeof want, "'%s': value type %s, expected", cases[i].key,
                 cv_gguf_vtype_name(cases[i].type));
        expect_bad(b.p, b.n, want);
        free(b.p);
    }
}

static void test_wrong_array_types_for_tokenizer(void **state) {
    (void)state;
    static const struct { const char *key; cv_gguf_vtype elem; } cases[] = {
        {"tokenizer.ggml.tokens", CV_GGUF_INT32},
        {"tokenizer.ggml.merges", CV_GGUF_UINT8},
        {"tokenizer.ggml.scores", CV_GGUF_FLOAT64},
        {"tokenizer.ggml.token_type", CV_GGUF_UINT32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bb b = {0};
        bb_header(&b, 0, 1);
        bb_str(&b, cases[i].key);
        bb_u32(&b, CV_GGUF_ARRAY);
        bb_u32(&b, cases[i].elem);
        bb_u64(&b, 0);
        char want[128];
        snprintf(want, sizeof want, "'%s': value type ARRAY of %s, expected ARRAY of",
                 cases[i].key, cv_gguf_vtype_name(cases[i].elem));
        expect_bad(b.p, b.n, want);
        free(b.p);
    }
    /* A string where an array is expected. */
    bb b = {0};
    bb_header(&b, 0, 1);
    bb_str(&b, "tokenizer.ggml.tokens");
    bb_u32(&b, CV_GGUF_STRING);
    bb_str(&b, "abc");
    expect_bad(b.p, b.n, "value type STRING, expected ARRAY of STRING");
    free(b.p);
}

static void test_negative_count(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 0, 1);
    bb_str(&b, "llama.block_count");
    bb_u32(&b, CV_GGUF_INT32);
    bb_u32(&b, (uint32_t)-5);
    expect_bad(b.p, b.n, "'llama.block_count': value -5 is negative");
    free(b.p);
}

static void test_scores_length_differs_from_vocab(void **state) {
    (void)state;
    uint8_t *buf; size_t len;
    static const char *const toks[] = {"a", "b", "c"};
    static const float scores[] = {0, 0};
    cv_error e = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    ok(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, 3, &e), &e);
    ok(cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, 2, &e), &e);
    ok(cv_gguf_write_memory(w, &buf, &len, &e), &e);
    expect_bad(buf, len, "'tokenizer.ggml.scores': 2 elements, tokenizer.ggml.tokens has 3");
    free(buf);
    cv_gguf_writer_free(w);
}

static void test_token_id_outside_vocab(void **state) {
    (void)state;
    static const char *const keys[] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.eot_token_id",
    };
    static const char *const toks[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cv_error e = {0};
        uint8_t *buf; size_t len;
        cv_gguf_writer *w = cv_gguf_writer_new();
        ok(cv_gguf_set_u32(w, keys[i], 4, &e), &e);   /* one past the end */
        ok(cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", toks, 4, &e), &e);
        ok(cv_gguf_write_memory(w, &buf, &len, &e), &e);
        char want[128];
        snprintf(want, sizeof want, "'%s': token id 4 is outside the vocabulary", keys[i]);
        expect_bad(buf, len, want);
        free(buf);
        /* 3 is inside; -1 (as i32) and 0xffffffff (as u32) mean "no such token" */
        ok(cv_gguf_set_u32(w, keys[i], 3, &e), &e);
        ok(cv_gguf_set_i32(w, "tokenizer.ggml.mask_token_id", -1, &e), &e);
        ok(cv_gguf_set_u32(w, "tokenizer.ggml.cls_token_id", UINT32_MAX, &e), &e);
        ok(cv_gguf_write_memory(w, &buf, &len, &e), &e);
        cv_gguf *g = open_ok(buf, len);
        assert_int_equal(cv_gguf_get_token_id(g, keys[i]), 3);
        assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.mask_token_id"), -1);
        assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.cls_token_id"), -1);
        assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.absent_token_id"), -1);
        cv_gguf_close(g);
        free(buf);
        /* other negative ids are rejected */
        ok(cv_gguf_set_i32(w, "tokenizer.ggml.mask_token_id", -2, &e), &e);
        ok(cv_gguf_write_memory(w, &buf, &len, &e), &e);
        expect_bad(buf, len, "'tokenizer.ggml.mask_token_id': value -2 is negative");
        free(buf);
        cv_gguf_writer_free(w);
    }
}

static void test_bad_alignment(void **state) {
    (void)state;
    static const uint32_t bad[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb b = {0};
        bb_header(&b, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad[i]);
        char want[96];
        snprintf(want, sizeof want, "'general.alignment': alignment %u is not a power of two",
                 bad[i]);
        expect_bad(b.p, b.n, want);
        free(b.p);
    }
    /* The writer refuses to write such a file at all. */
    cv_error e = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    uint8_t *buf; size_t len;
    ok(cv_gguf_set_u32(w, "general.alignment", 24, &e), &e);
    assert_int_equal(cv_gguf_write_memory(w, &buf, &len, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "general.alignment 24"));
    cv_gguf_writer_free(w);
}

/* ---- tensors ---- */

/* One tensor info with the given shape/type/offset and `data` bytes of data. */
static void one_tensor(bb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset, size_t data) {
    b->n = 0;
    bb_header(b, 1, 0);
    bb_tensor(b, "t", n_dims, ne, type, offset);
    bb_pad(b, 32);
    bb_zeros(b, data);
}

static void test_n_dims_out_of_range(void **state) {
    (void)state;
    bb b = {0};
    const uint64_t ne[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, 5, ne, CV_TYPE_F32, 0, 32);
    expect_bad(b.p, b.n, "tensor 0 't': n_dims 5 outside 1..4");
    one_tensor(&b, 0, ne, CV_TYPE_F32, 0, 32);
    expect_bad(b.p, b.n, "n_dims 0");
    one_tensor(&b, 4, ne, CV_TYPE_F32, 0, 32);
    cv_gguf *g = open_ok(b.p, b.n);
    cv_gguf_close(g);
    free(b.p);
}

static void test_zero_dimension(void **state) {
    (void)state;
    bb b = {0};
    one_tensor(&b, 3, (const uint64_t[]){4, 0, 2}, CV_TYPE_F32, 0, 64);
    expect_bad(b.p, b.n, "ne[1] is 0");
    free(b.p);
}

static void test_dimension_product_overflow(void **state) {
    (void)state;
    bb b = {0};
    one_tensor(&b, 2, (const uint64_t[]){1ull << 32, 1ull << 32}, CV_TYPE_F32, 0, 64);
    expect_bad(b.p, b.n, "ne[1] = 4294967296 makes the element count overflow");
    one_tensor(&b, 1, (const uint64_t[]){1ull << 63}, CV_TYPE_F32, 0, 64);
    expect_bad(b.p, b.n, "ne[0] = 9223372036854775808");
    free(b.p);
}

static void test_data_size_overflow(void **state) {
    (void)state;
    bb b = {0};
    /* 2^62 elements fit int64; 4 bytes each is 2^64. */
    one_tensor(&b, 2, (const uint64_t[]){1ull << 31, 1ull << 31}, CV_TYPE_F32, 0, 64);
    expect_bad(b.p, b.n, "data size of 4611686018427387904 elements of F32");
    /* 2^64 - 4 bytes fits, but padding it to 32 wraps. */
    one_tensor(&b, 1, (const uint64_t[]){(1ull << 62) - 1}, CV_TYPE_F32, 0, 64);
    expect_bad(b.p, b.n, "(with alignment padding) overflows");
    free(b.p);
}

static void test_unknown_tensor_type(void **state) {
    (void)state;
    bb b = {0};
    static const uint32_t bad[] = {4, 5, 31, 37, 1000, UINT32_MAX};  /* ids ggml retired or never used */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        one_tensor(&b, 1, (const uint64_t[]){256}, bad[i], 0, 1024);
        char want[64];
        snprintf(want, sizeof want, "type %u is not a known tensor type", bad[i]);
        expect_bad(b.p, b.n, want);
    }
    free(b.p);
}

static void test_row_not_multiple_of_block(void **state) {
    (void)state;
    bb b = {0};
    one_tensor(&b, 2, (const uint64_t[]){48, 2}, CV_TYPE_Q8_0, 0, 1024);
    expect_bad(b.p, b.n, "ne[0] = 48 is not a multiple of the Q8_0 block size 32");
    one_tensor(&b, 1, (const uint64_t[]){128}, CV_TYPE_Q4_K, 0, 1024);
    expect_bad(b.p, b.n, "block size 256");
    one_tensor(&b, 2, (const uint64_t[]){64, 3}, CV_TYPE_Q8_0, 0, 3 * 68);
    cv_gguf *g = open_ok(b.p, b.n);
    assert_int_equal(cv_gguf_tensor_at(g, 0)->nbytes, 3 * 68);
    cv_gguf_close(g);
    free(b.p);
}

static void test_tensor_data_outside_file(void **state) {
    (void)state;
    bb b = {0};
    one_tensor(&b, 1, (const uint64_t[]){8}, CV_TYPE_F32, 0, 31);  /* one byte short */
    expect_bad(b.p, b.n, "tensor 0 't': data [0, +32) lies outside");
    one_tensor(&b, 1, (const uint64_t[]){8}, CV_TYPE_F32, 64, 64);
    expect_bad(b.p, b.n, "data [64, +32) lies outside");
    one_tensor(&b, 1, (const uint64_t[]){8}, CV_TYPE_F32, UINT64_MAX - 31, 64);
    expect_bad(b.p, b.n, "lies outside");
    one_tensor(&b, 1, (const uint64_t[]){8}, CV_TYPE_F32, 0, 32);
    cv_gguf *g = open_ok(b.p, b.n);
    cv_gguf_close(g);
    free(b.p);
}

static void test_unaligned_tensor_offset(void **state) {
    (void)state;
    bb b = {0};
    one_tensor(&b, 1, (const uint64_t[]){8}, CV_TYPE_F32, 4, 64);
    expect_bad(b.p, b.n, "offset 4 is not a multiple of the alignment 32");
    free(b.p);
}

static void test_overlapping_tensors(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 3, 0);
    bb_tensor(&b, "x", 1, (const uint64_t[]){16}, CV_TYPE_F32, 64);   /* [64, 128) */
    bb_tensor(&b, "y", 1, (const uint64_t[]){8}, CV_TYPE_F32, 0);     /* [0, 32) */
    bb_tensor(&b, "z", 1, (const uint64_t[]){8}, CV_TYPE_F32, 96);    /* inside x */
    bb_pad(&b, 32);
    bb_zeros(&b, 256);
    expect_bad(b.p, b.n, "tensor 2 'z': data at offset 96 overlaps tensor 0 'x' [64, 128)");
    free(b.p);
}

static void test_duplicate_tensor_name(void **state) {
    (void)state;
    bb b = {0};
    bb_header(&b, 2, 0);
    bb_tensor(&b, "w", 1, (const uint64_t[]){8}, CV_TYPE_F32, 0);
    bb_tensor(&b, "w", 1, (const uint64_t[]){8}, CV_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_bad(b.p, b.n, "tensor 1 'w': duplicate tensor name");
    /* the writer refuses it too */
    cv_error e = {0};
    float d[8] = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    ok(cv_gguf_add_tensor(w, "w", CV_TYPE_F32, 1, (const int64_t[]){8}, d, &e), &e);
    assert_int_equal(cv_gguf_add_tensor(w, "w", CV_TYPE_F32, 1, (const int64_t[]){8}, d, &e),
                     CV_EINVAL);
    assert_non_null(strstr(e.msg, "duplicate tensor name 'w'"));
    cv_gguf_writer_free(w);
    free(b.p);
}

static void test_hostile_names_are_printed_safely(void **state) {
    (void)state;
    bb b = {0};
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    name[3] = '\n';
    name[4] = '\x1b';
    bb_header(&b, 0, 2);
    bb_kv_u32(&b, name, 1);
    bb_kv_u32(&b, name, 1);
    cv_gguf *g;
    cv_error e = {0};
    assert_int_equal(cv_gguf_open_memory(b.p, b.n, &g, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "'nnn??nnn"));
    assert_non_null(strstr(e.msg, "...': duplicate key"));
    for (const char *c = e.msg; *c; c++) assert_true(*c >= 0x20 && *c < 0x7f);
    free(b.p);
}

/* ---- round trips ---- */

static void random_bytes(void *p, size_t n) {
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)rnd();
}

static const cv_gguf_vtype scalar_types[] = {
    CV_GGUF_UINT8, CV_GGUF_INT8, CV_GGUF_UINT16, CV_GGUF_INT16, CV_GGUF_UINT32,
    CV_GGUF_INT32, CV_GGUF_FLOAT32, CV_GGUF_BOOL, CV_GGUF_UINT64, CV_GGUF_INT64,
    CV_GGUF_FLOAT64,
};
#define N_SCALAR (sizeof scalar_types / sizeof scalar_types[0])

/* A raw file holding nested arrays: [[1,2],[3]] of u16, [["a"],[],["bc","d"]], and an
 * array of arrays of arrays of i8. The writer has no setter for these: they reach it
 * through cv_gguf_copy_kvs. */
static void build_nested(bb *b) {
    bb_header(b, 0, 3);
    bb_str(b, "nest.u16");
    bb_u32(b, CV_GGUF_ARRAY);
    bb_u32(b, CV_GGUF_ARRAY); bb_u64(b, 2);
    bb_u32(b, CV_GGUF_UINT16); bb_u64(b, 2); bb_put(b, "\x01\x00\x02\x00", 4);
    bb_u32(b, CV_GGUF_UINT16); bb_u64(b, 1); bb_put(b, "\x03\x00", 2);
    bb_str(b, "nest.str");
    bb_u32(b, CV_GGUF_ARRAY);
    bb_u32(b, CV_GGUF_ARRAY); bb_u64(b, 3);
    bb_u32(b, CV_GGUF_STRING); bb_u64(b, 1); bb_str(b, "a");
    bb_u32(b, CV_GGUF_STRING); bb_u64(b, 0);
    bb_u32(b, CV_GGUF_STRING); bb_u64(b, 2); bb_str(b, "bc"); bb_str(b, "d");
    bb_str(b, "nest.deep");
    bb_u32(b, CV_GGUF_ARRAY);
    bb_u32(b, CV_GGUF_ARRAY); bb_u64(b, 1);
    bb_u32(b, CV_GGUF_ARRAY); bb_u64(b, 2);
    bb_u32(b, CV_GGUF_INT8); bb_u64(b, 1); bb_put(b, "\xff", 1);
    bb_u32(b, CV_GGUF_INT8); bb_u64(b, 2); bb_put(b, "\x05\x80", 2);
}

static void check_nested(const cv_gguf *g) {
    cv_gguf_arr a, s, t;
    assert_true(cv_gguf_get_arr(g, "nest.u16", &a));
    assert_int_equal(a.type, CV_GGUF_ARRAY);
    assert_int_equal(a.n, 2);
    assert_true(cv_gguf_arr_sub(&a, 0, &s));
    assert_int_equal(s.type, CV_GGUF_UINT16);
    assert_int_equal(s.n, 2);
    assert_int_equal(cv_gguf_arr_i64(&s, 0), 1);
    assert_int_equal(cv_gguf_arr_i64(&s, 1), 2);
    assert_true(cv_gguf_arr_sub(&a, 1, &s));
    assert_int_equal(s.n, 1);
    assert_true(cv_gguf_arr_f64(&s, 0) == 3.0);
    assert_false(cv_gguf_arr_sub(&a, 2, &s));

    assert_true(cv_gguf_get_arr(g, "nest.str", &a));
    assert_int_equal(a.n, 3);
    assert_true(cv_gguf_arr_sub(&a, 2, &s));
    cv_str x = cv_gguf_arr_str(&s, 0);
    assert_int_equal(x.len, 2);
    assert_memory_equal(x.ptr, "bc", 2);
    x = cv_gguf_arr_str(&s, 1);
    assert_int_equal(x.len, 1);
    assert_memory_equal(x.ptr, "d", 1);
    assert_true(cv_gguf_arr_sub(&a, 1, &s));
    assert_int_equal(s.n, 0);
    assert_null(cv_gguf_arr_str(&s, 0).ptr);
    assert_true(cv_gguf_arr_sub(&a, 0, &s));
    assert_memory_equal(cv_gguf_arr_str(&s, 0).ptr, "a", 1);

    assert_true(cv_gguf_get_arr(g, "nest.deep", &a));
    assert_true(cv_gguf_arr_sub(&a, 0, &s));
    assert_int_equal(s.n, 2);
    assert_true(cv_gguf_arr_sub(&s, 1, &t));
    assert_int_equal(t.type, CV_GGUF_INT8);
    assert_int_equal(cv_gguf_arr_i64(&t, 0), 5);
    assert_int_equal(cv_gguf_arr_i64(&t, 1), -128);
    assert_true(cv_gguf_arr_sub(&s, 0, &t));
    assert_int_equal(cv_gguf_arr_i64(&t, 0), -1);
}

typedef struct rt_tensor {
    char name[32];
    cv_type type;
    uint32_t n_dims;
    int64_t ne[4];
    uint8_t *data;
    uint64_t nbytes;
} rt_tensor;

static void test_round_trip_every_type(void **state) {
    (void)state;
    cv_error e = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_non_null(w);
    uint32_t align = 1u << (rnd() % 4 + 3);  /* 8..64 */
    ok(cv_gguf_set_u32(w, "general.alignment", align, &e), &e);

    /* every scalar type, twice with fresh random values (the second replaces) */
    uint8_t scal[N_SCALAR][8];
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < N_SCALAR; i++) {
            char key[32];
            snprintf(key, sizeof key, "s.%s", cv_gguf_vtype_name(scalar_types[i]));
            random_bytes(scal[i], 8);
            if (scalar_types[i] == CV_GGUF_BOOL) scal[i][0] &= 1;
            ok(cv_gguf_set_scalar(w, key, scalar_types[i], scal[i], &e), &e);
        }
    /* arrays of every scalar type, random lengths including 0 */
    uint8_t *arrs[N_SCALAR];
    uint64_t arr_n[N_SCALAR];
    for (size_t i = 0; i < N_SCALAR; i++) {
        char key[32];
        snprintf(key, sizeof key, "a.%s", cv_gguf_vtype_name(scalar_types[i]));
        arr_n[i] = i == 0 ? 0 : rnd() % 50;
        arrs[i] = malloc(arr_n[i] * scalar_size(scalar_types[i]) + 1);
        random_bytes(arrs[i], arr_n[i] * scalar_size(scalar_types[i]));
        if (scalar_types[i] == CV_GGUF_BOOL)
            for (uint64_t k = 0; k < arr_n[i]; k++) arrs[i][k] &= 1;
        ok(cv_gguf_set_arr(w, key, scalar_types[i], arrs[i], arr_n[i], &e), &e);
    }
    const char *strs[] = {"", "hello", "\xe2\x96\x81world", "with\0nul"};
    ok(cv_gguf_set_str_arr(w, "a.STRING", strs, 4, &e), &e);
    ok(cv_gguf_set_str_arr(w, "a.empty", NULL, 0, &e), &e);
    ok(cv_gguf_set_str(w, "s.STRING", "a value", &e), &e);
    ok(cv_gguf_set_str(w, "s.empty", "", &e), &e);
    /* nested arrays, via copy_kvs from a hand-made file */
    bb nb = {0};
    build_nested(&nb);
    cv_gguf *nested = open_ok(nb.p, nb.n);
    check_nested(nested);
    ok(cv_gguf_copy_kvs(w, nested, &e), &e);

    /* every tensor type, random shapes and bytes */
    rt_tensor ts[CV_TYPE_COUNT];
    size_t nt = 0;
    for (uint32_t t = 0; t < CV_TYPE_COUNT; t++) {
        const cv_type_info *ti = cv_type_get(t);
        if (!ti) continue;
        rt_tensor *r = &ts[nt++];
        snprintf(r->name, sizeof r->name, "t.%s", ti->name);
        r->type = (cv_type)t;
        r->n_dims = 1 + (uint32_t)(rnd() % 4);
        for (uint32_t d = 0; d < 4; d++) r->ne[d] = 1;
        r->ne[0] = (int64_t)(ti->block_elems * (1 + rnd() % 3));
        for (uint32_t d = 1; d < r->n_dims; d++) r->ne[d] = 1 + (int64_t)(rnd() % 3);
        r->nbytes = cv_gguf_tensor_bytes(r->type, r->n_dims, r->ne);
        assert_true(r->nbytes > 0);
        r->data = malloc(r->nbytes);
        random_bytes(r->data, r->nbytes);
        ok(cv_gguf_add_tensor(w, r->name, r->type, r->n_dims, r->ne, r->data, &e), &e);
    }
    assert_true(nt >= 15);

    uint8_t *buf; size_t len;
    ok(cv_gguf_write_memory(w, &buf, &len, &e), &e);
    cv_gguf *g = open_ok(buf, len);

    assert_int_equal(cv_gguf_alignment(g), align);
    assert_int_equal(cv_gguf_data_offset(g) % align, 0);
    assert_int_equal(cv_gguf_n_kv(g), 1 + 2 * N_SCALAR + 4 + 3);
    assert_int_equal(cv_gguf_kv_type(g, 0), CV_GGUF_UINT32);
    for (size_t i = 0; i < N_SCALAR; i++) {
        char key[32];
        snprintf(key, sizeof key, "s.%s", cv_gguf_vtype_name(scalar_types[i]));
        int64_t k = cv_gguf_find_key(g, key);
        assert_int_equal(k, 1 + (int64_t)i);  /* replaced in place: order kept */
        assert_int_equal(cv_gguf_kv_type(g, k), scalar_types[i]);
        uint64_t rl;
        const void *raw = cv_gguf_kv_raw(g, k, &rl);
        assert_int_equal(rl, scalar_size(scalar_types[i]));
        assert_memory_equal(raw, scal[i], rl);
        snprintf(key, sizeof key, "a.%s", cv_gguf_vtype_name(scalar_types[i]));
        cv_gguf_arr a;
        assert_true(cv_gguf_get_arr(g, key, &a));
        assert_int_equal(a.type, scalar_types[i]);
        assert_int_equal(a.n, arr_n[i]);
        if (arr_n[i]) assert_memory_equal(a.data, arrs[i], arr_n[i] * scalar_size(scalar_types[i]));
        free(arrs[i]);
    }
    /* typed accessors and their conversions */
    int32_t i32; memcpy(&i32, scal[5], 4);
    uint32_t u32; memcpy(&u32, scal[4], 4);
    float f32; memcpy(&f32, scal[6], 4);
    uint16_t u16; memcpy(&u16, scal[2], 2);
    assert_int_equal(cv_gguf_get_i64(g, "s.INT32", 7), i32);
    assert_int_equal(cv_gguf_get_u32(g, "s.UINT32", 7), u32);
    assert_int_equal(cv_gguf_get_u64(g, "s.UINT16", 7), u16);
    assert_int_equal(cv_gguf_get_u32(g, "s.INT32", 7), i32 >= 0 ? (uint32_t)i32 : 7);
    assert_int_equal(cv_gguf_get_bool(g, "s.BOOL", 7), scal[7][0]);
    if (f32 == f32) assert_true(cv_gguf_get_f32(g, "s.FLOAT32", 0) == f32);
    assert_int_equal(cv_gguf_get_u32(g, "s.STRING", 9), 9);
    assert_int_equal(cv_gguf_get_bool(g, "absent", 5), 5);
    assert_true(cv_gguf_get_f32(g, "s.INT32", 2.5f) == 2.5f);
    cv_str s = cv_gguf_get_str(g, "s.STRING");
    assert_int_equal(s.len, 7);
    assert_memory_equal(s.ptr, "a value", 7);
    assert_int_equal(cv_gguf_get_str(g, "s.empty").len, 0);
    assert_non_null(cv_gguf_get_str(g, "s.empty").ptr);
    assert_null(cv_gguf_get_str(g, "s.UINT8").ptr);
    cv_gguf_arr a;
    assert_true(cv_gguf_get_arr(g, "a.STRING", &a));
    assert_int_equal(a.n, 4);
    for (uint64_t i = 0; i < 4; i++) {
        cv_str x = cv_gguf_arr_str(&a, i);
        assert_int_equal(x.len, strlen(strs[i]));
        assert_memory_equal(x.ptr, strs[i], x.len);
    }
    assert_true(cv_gguf_get_arr(g, "a.empty", &a));
    assert_int_equal(a.n, 0);
    assert_false(cv_gguf_get_arr(g, "s.STRING", &a));
    check_nested(g);

    assert_int_equal(cv_gguf_n_tensors(g), (int64_t)nt);
    for (size_t i = 0; i < nt; i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, (int64_t)i);
        assert_ptr_equal(t, cv_gguf_find_tensor(g, ts[i].name));
        assert_int_equal(t->type, ts[i].type);
        assert_int_equal(t->n_dims, ts[i].n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], ts[i].ne[d]);
        assert_int_equal(t->nbytes, ts[i].nbytes);
        assert_int_equal(((const uint8_t *)t->data - buf) % align, 0);
        assert_memory_equal(t->data, ts[i].data, t->nbytes);
    }
    assert_null(cv_gguf_find_tensor(g, "t.none"));
    assert_null(cv_gguf_tensor_at(g, (int64_t)nt));

    /* write(read(x)) reproduces the file byte for byte */
    cv_gguf_writer *w2 = cv_gguf_writer_new();
    ok(cv_gguf_copy_kvs(w2, g, &e), &e);
    for (int64_t i = 0; i < cv_gguf_n_tensors(g); i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        ok(cv_gguf_add_tensor(w2, name, t->type, t->n_dims, t->ne, t->data, &e), &e);
    }
    char path[4096];
    int fd = cv_test_tmpfile(path, sizeof path, "gguf-rt");
    assert_true(fd >= 0);
    close(fd);
    ok(cv_gguf_write(w2, path, &e), &e);
    cv_gguf *g2;
    ok(cv_gguf_open(path, &g2, &e), &e);
    assert_int_equal(cv_gguf_file_size(g2), len);
    const cv_gguf_tensor *t0 = cv_gguf_tensor_at(g2, 0);
    assert_memory_equal((const uint8_t *)t0->data - cv_gguf_data_offset(g2), buf, len);
    cv_gguf_close(g2);
    unlink(path);

    cv_gguf_writer_free(w2);
    cv_gguf_close(g);
    cv_gguf_close(nested);
    free(nb.p);
    free(buf);
    for (size_t i = 0; i < nt; i++) free(ts[i].data);
    cv_gguf_writer_free(w);
}

static void test_writer_rejects_bad_tensors(void **state) {
    (void)state;
    cv_error e = {0};
    float d[64] = {0};
    cv_gguf_writer *w = cv_gguf_writer_new();
    assert_int_equal(cv_gguf_add_tensor(w, "q", CV_TYPE_Q8_0, 1, (const int64_t[]){40}, d, &e),
                     CV_EINVAL);
    assert_int_equal(cv_gguf_add_tensor(w, "z", CV_TYPE_F32, 2, (const int64_t[]){4, 0}, d, &e),
                     CV_EINVAL);
    assert_int_equal(cv_gguf_add_tensor(w, "u", (cv_type)5, 1, (const int64_t[]){4}, d, &e),
                     CV_EINVAL);
    assert_int_equal(cv_gguf_add_tensor(w, "n", CV_TYPE_F32, 5, (const int64_t[]){1, 1, 1, 1, 1}, d, &e),
                     CV_EINVAL);
    char longname[80];
    memset(longname, 'x', 64);
    longname[64] = 0;
    assert_int_equal(cv_gguf_add_tensor(w, longname, CV_TYPE_F32, 1, (const int64_t[]){4}, d, &e),
                     CV_EINVAL);
    assert_non_null(strstr(e.msg, "at most 63"));
    assert_int_equal(cv_gguf_set_scalar(w, "k", CV_GGUF_STRING, d, &e), CV_EINVAL);
    assert_int_equal(cv_gguf_set_arr(w, "k", CV_GGUF_ARRAY, d, 1, &e), CV_EINVAL);
    /* a failed write to an unwritable path reports it and leaves nothing */
    assert_int_equal(cv_gguf_write(w, "/nonexistent-dir/x.gguf", &e), CV_EIO);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x.gguf"));
    cv_gguf_writer_free(w);
}

static void test_open_errors(void **state) {
    (void)state;
    cv_gguf *g;
    cv_error e = {0};
    assert_int_equal(cv_gguf_open("/nonexistent/m.gguf", &g, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/m.gguf"));
    assert_int_equal(cv_gguf_open("/tmp", &g, &e), CV_EINVAL);
    char path[4096];
    int fd = cv_test_tmpfile(path, sizeof path, "gguf-empty");
    close(fd);
    assert_int_equal(cv_gguf_open(path, &g, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "header needs 24 bytes, the file has 0"));
    unlink(path);
}

/* ---- real files ---- */

static char *data_path(const char *rel) {
    const char *root = cv_test_data_dir();
    char *p = malloc(strlen(root) + strlen(rel) + 2);
    sprintf(p, "%s/%s", root, rel);
    return p;
}

static cv_str str_or_fail(cv_str s) {
    assert_non_null(s.ptr);
    return s;
}

static void test_real_stories260k(void **state) {
    (void)state;
    char *path = data_path("models/stories260K.gguf");
    cv_gguf *g;
    cv_error e = {0};
    ok(cv_gguf_open(path, &g, &e), &e);
    cv_str arch = str_or_fail(cv_gguf_get_str(g, "general.architecture"));
    assert_int_equal(arch.len, 5);
    assert_memory_equal(arch.ptr, "llama", 5);
    assert_int_equal(cv_gguf_version(g), 3);
    assert_int_equal(cv_gguf_alignment(g), 32);
    assert_int_equal(cv_gguf_get_u32(g, "llama.block_count", 0), 5);
    assert_int_equal(cv_gguf_get_u32(g, "llama.embedding_length", 0), 64);
    assert_int_equal(cv_gguf_get_u32(g, "llama.feed_forward_length", 0), 172);
    assert_int_equal(cv_gguf_get_u32(g, "llama.attention.head_count", 0), 8);
    assert_int_equal(cv_gguf_get_u32(g, "llama.attention.head_count_kv", 0), 4);
    assert_int_equal(cv_gguf_get_u32(g, "llama.context_length", 0), 128);
    assert_int_equal(cv_gguf_get_u32(g, "llama.rope.dimension_count", 0), 8);
    assert_float_equal(cv_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", 0), 1e-5, 1e-12);
    assert_float_equal(cv_gguf_get_f32(g, "llama.rope.freq_base", 10000.0f), 10000.0, 0);
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.eos_token_id"), 2);
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.seperator_token_id"), -1);
    cv_gguf_arr toks, scores;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks));
    assert_int_equal(toks.n, 512);
    cv_str t1 = cv_gguf_arr_str(&toks, 1);
    assert_int_equal(t1.len, 3);
    assert_memory_equal(t1.ptr, "<s>", 3);
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.scores", &scores));
    assert_int_equal(scores.type, CV_GGUF_FLOAT32);
    assert_int_equal(scores.n, 512);
    assert_int_equal(cv_gguf_n_tensors(g), 3 + 5 * 9);
    const cv_gguf_tensor *emb = cv_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(emb);
    assert_int_equal(emb->type, CV_TYPE_F32);
    assert_int_equal(emb->n_dims, 2);
    assert_int_equal(emb->ne[0], 64);
    assert_int_equal(emb->ne[1], 512);
    assert_int_equal(emb->nbytes, 64 * 512 * 4);
    const cv_gguf_tensor *down = cv_gguf_find_tensor(g, "blk.4.ffn_down.weight");
    assert_non_null(down);
    assert_int_equal(down->ne[0], 172);
    assert_int_equal(down->ne[1], 64);
    /* Every tensor's weights are finite numbers: the data pointers are right. */
    for (int64_t i = 0; i < cv_gguf_n_tensors(g); i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        const float *f = t->data;
        for (uint64_t k = 0; k < t->nbytes / 4; k++) assert_true(isfinite(f[k]));
    }
    /* Cut anywhere before the end of the first tensor's data: always refused. */
    uint64_t cut_end = cv_gguf_data_offset(g) + 64;
    uint8_t *copy = malloc(cut_end);
    memcpy(copy, (const uint8_t *)emb->data - cv_gguf_data_offset(g), cut_end);
    for (uint64_t cut = 0; cut < cut_end; cut += 1 + rnd() % 7) {
        cv_gguf *h;
        assert_int_equal(cv_gguf_open_memory(copy, cut, &h, &e), CV_EFORMAT);
    }
    free(copy);
    cv_gguf_close(g);
    free(path);

    /* The mixed-quant variants: Q8_0 for most weights, F32 for the 172-wide ffn_down. */
    path = data_path("models/stories260K-Q8_0-mixed.gguf");
    ok(cv_gguf_open(path, &g, &e), &e);
    assert_int_equal(cv_gguf_get_u32(g, "general.file_type", 0), 7);
    assert_int_equal(cv_gguf_find_tensor(g, "token_embd.weight")->type, CV_TYPE_Q8_0);
    assert_int_equal(cv_gguf_find_tensor(g, "token_embd.weight")->nbytes, 512 * 2 * 34);
    assert_int_equal(cv_gguf_find_tensor(g, "blk.0.ffn_down.weight")->type, CV_TYPE_F32);
    cv_gguf_close(g);
    free(path);
}

static void test_real_vocab_only(void **state) {
    (void)state;
    char *path = data_path("vocab/ggml-vocab-llama-spm.gguf");
    cv_gguf *g;
    cv_error e = {0};
    ok(cv_gguf_open(path, &g, &e), &e);
    assert_int_equal(cv_gguf_n_tensors(g), 0);
    cv_gguf_arr toks, types;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks));
    assert_int_equal(toks.n, 32000);
    cv_str t2 = cv_gguf_arr_str(&toks, 2);
    assert_int_equal(t2.len, 4);
    assert_memory_equal(t2.ptr, "</s>", 4);
    cv_str last = cv_gguf_arr_str(&toks, 31999);
    assert_true(last.len > 0);
    assert_null(cv_gguf_arr_str(&toks, 32000).ptr);
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types));
    assert_int_equal(cv_gguf_arr_i64(&types, 0), 2);  /* <unk> is UNKNOWN */
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.unknown_token_id"), 0);
    assert_int_equal(cv_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", -1), 1);
    cv_gguf_close(g);
    free(path);

    path = data_path("vocab/ggml-vocab-gpt-2.gguf");
    ok(cv_gguf_open(path, &g, &e), &e);
    cv_gguf_arr merges;
    assert_true(cv_gguf_get_arr(g, "tokenizer.ggml.merges", &merges));
    assert_int_equal(merges.n, 50000);
    assert_int_equal(cv_gguf_get_token_id(g, "tokenizer.ggml.eos_token_id"), 50256);
    cv_gguf_close(g);
    free(path);
}

int main(void) {
    const char *seed_env = getenv("CORVID_TEST_SEED");
    rng_state = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    printf("test_gguf: seed %llu (set CORVID_TEST_SEED to repeat)\n", (unsigned long long)rng_state);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_truncated_anywhere),
        cmocka_unit_test(test_counts_beyond_file),
        cmocka_unit_test(test_string_length_beyond_file),
        cmocka_unit_test(test_array_length_beyond_file),
        cmocka_unit_test(test_unknown_value_type),
        cmocka_unit_test(test_nesting_too_deep),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_wrong_type_for_known_key),
        cmocka_unit_test(test_wrong_array_types_for_tokenizer),
        cmocka_unit_test(test_negative_count),
        cmocka_unit_test(test_scores_length_differs_from_vocab),
        cmocka_unit_test(test_token_id_outside_vocab),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_n_dims_out_of_range),
        cmocka_unit_test(test_zero_dimension),
        cmocka_unit_test(test_dimension_product_overflow),
        cmocka_unit_test(test_data_size_overflow),
        cmocka_unit_test(test_unknown_tensor_type),
        cmocka_unit_test(test_row_not_multiple_of_block),
        cmocka_unit_test(test_tensor_data_outside_file),
        cmocka_unit_test(test_unaligned_tensor_offset),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_duplicate_tensor_name),
        cmocka_unit_test(test_hostile_names_are_printed_safely),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_writer_rejects_bad_tensors),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_real_stories260k),
        cmocka_unit_test(test_real_vocab_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
