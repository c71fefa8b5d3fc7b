/* utf8: strict decoding edge cases, encoding, and the streaming repairer fed in
 * random splits (seeded, printed) against a one-shot reference. */
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

#include "utf8.h"
#include "../support/test_rng.h"

static uint64_t g_seed;
static cv_test_rng g_rng;

static size_t rnd(size_t n) { return (size_t)(cv_test_rng_next(&g_rng) % n); }

static void test_decode_edges(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t n;
        int len;
        uint32_t cp;
    } cases[] = {
        {"A", 1, 1, 'A'},
        {"\xC2\x80", 2, 2, 0x80},
        {"\xDF\xBF", 2, 2, 0x7FF},
        {"\xE0\xA0\x80", 3, 3, 0x800},
        {"\xED\x9F\xBF", 3, 3, 0xD7FF},
        {"\xEF\xBF\xBD", 3, 3, 0xFFFD},
        {"\xF0\x90\x80\x80", 4, 4, 0x10000},
        {"\xF4\x8F\xBF\xBF", 4, 4, 0x10FFFF},
        {"\xC0\x80", 2, 0, 0},          /* overlong NUL */
        {"\xC1\xBF", 2, 0, 0},          /* overlong */
        {"\xE0\x9F\xBF", 3, 0, 0},      /* overlong 3-byte */
        {"\xED\xA0\x80", 3, 0, 0},      /* surrogate */
        {"\xF0\x8F\xBF\xBF", 4, 0, 0},  /* overlong 4-byte */
        {"\xF4\x90\x80\x80", 4, 0, 0},  /* above U+10FFFF */
        {"\xF5\x80\x80\x80", 4, 0, 0},
        {"\x80", 1, 0, 0},              /* lone continuation */
        {"\xE4\xBD", 2, 0, 0},          /* truncated */
        {"\xE4\x41\xA0", 3, 0, 0},      /* bad continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t cp = 0;
        int len = cv_utf8_decode((const uint8_t *)cases[i].s, cases[i].n, &cp);
        if (len != cases[i].len) fail_msg("case %zu: length %d, expected %d", i, len, cases[i].len);
        if (len) assert_int_equal(cp, cases[i].cp);
        assert_int_equal(cv_utf8_valid(cases[i].s, cases[i].n), len == (int)cases[i].n);
    }
    assert_int_equal(cv_utf8_decode((const uint8_t *)"", 0, &(uint32_t){0}), 0);
}

static void test_encode_roundtrip(void **state) {
    (void)state;
    char buf[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x3000 ? 1 : 97)) {
        int len = cv_utf8_encode(cp, buf);
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            assert_int_equal(len, 0);
            continue;
        }
        uint32_t back;
        assert_true(len >= 1 && len <= 4);
        assert_int_equal(cv_utf8_decode((const uint8_t *)buf, (size_t)len, &back), len);
        assert_int_equal(back, cp);
    }
    assert_int_equal(cv_utf8_encode(0x110000, buf), 0);
}

/* Reference: the whole input in one feed plus a flush. */
static size_t repair_at_once(const char *in, size_t n, char *out) {
    cv_utf8_stream s;
    cv_utf8_stream_init(&s);
    size_t w = cv_utf8_stream_feed(&s, in, n, out);
    return w + cv_utf8_stream_flush(&s, out + w);
}

static void test_stream_known(void **state) {
    (void)state;
    char out[64];
    /* Valid text passes unchanged; each maximal invalid subpart is one U+FFFD. */
    size_t n = repair_at_once("a\xE4\xBD\xA0z", 6, out);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "a\xE4\xBD\xA0z", 6);
    n = repair_at_once("\xE4\xBD" "A", 3, out);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\xEF\xBF\xBD" "A", 4);
    n = repair_at_once("\x80\x80", 2, out);
    assert_int_equal(n, 6);
    n = repair_at_once("\xED\xA0\x80", 3, out); /* surrogate: three subparts */
    assert_int_equal(n, 9);
    n = repair_at_once("\xF0\x9F\x98", 3, out); /* truncated at the end: flushed as one */
    assert_int_equal(n, 3);
    assert_memory_equal(out, "\xEF\xBF\xBD", 3);
}

static void test_stream_random_splits(void **state) {
    (void)state;
    static const char *const pool[] = {"a", " ", "é", "我", "😀", "\xF0\x9F", "\x80", "\xFF",
                                       "\xE4\xBD", "\xC3", "\xED\xA0\x80", "\xF4\x90"};
    char in[128], ref[512], got[512];
    for (int it = 0; it < 5000; it++) {
        size_t n = 0;
        while (n < 100) {
            const char *p = pool[rnd(sizeof pool / sizeof pool[0])];
            memcpy(in + n, p, strlen(p));
            n += strlen(p);
        }
        size_t rn = repair_at_once(in, n, ref);
        assert_true(cv_utf8_valid(ref, rn));
        cv_utf8_stream s;
        cv_utf8_stream_init(&s);
        size_t w = 0;
        for (size_t i = 0; i < n;) {
            size_t k = 1 + rnd(5);
            if (k > n - i) k = n - i;
            size_t m = cv_utf8_stream_feed(&s, in + i, k, got + w);
            assert_true(m <= CV_UTF8_STREAM_BOUND(k));
            /* Every chunk on its own is valid: no half characters. */
            if (!cv_utf8_valid(got + w, m)) fail_msg("seed %llu, iteration %d: invalid chunk", (unsigned long long)g_seed, it);
            w += m;
            i += k;
        }
        w += cv_utf8_stream_flush(&s, got + w);
        if (w != rn || memcmp(got, ref, rn) != 0)
            fail_msg("seed %llu, iteration %d: split feeding differs from one feed", (unsigned long long)g_seed, it);
    }
}

/* cv_utf8_check: the five malformed patterns a request may carry, and NUL, each at a
 * known offset after valid text (multi-byte included), with the verdict and offset. */
static void test_check(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t n;
        cv_utf8_verdict v;
        size_t off;
    } cases[] = {
        {"", 0, CV_UTF8_OK, 0},
        {"h\xC3\xA9llo \xF0\x9F\x99\x82", 11, CV_UTF8_OK, 11},
        {"ab\x80" "cd", 5, CV_UTF8_INVALID, 2},               /* lone continuation byte */
        {"\xC3\xA9\xE2\x82", 4, CV_UTF8_INVALID, 2},        /* truncated at the end */
        {"a\xE2\x82z", 4, CV_UTF8_INVALID, 1},             /* truncated before ASCII */
        {"abc\xC0\xAF", 5, CV_UTF8_INVALID, 3},            /* overlong '/' */
        {"a\xE0\x80\xAF", 4, CV_UTF8_INVALID, 1},         /* overlong 3-byte */
        {"xy\xED\xA0\x80", 5, CV_UTF8_INVALID, 2},        /* surrogate U+D800 */
        {"\xED\xBF\xBF", 3, CV_UTF8_INVALID, 0},          /* surrogate U+DFFF */
        {"1234\xF4\x90\x80\x80", 8, CV_UTF8_INVALID, 4}, /* U+110000 */
        {"\xF5\x80\x80\x80", 4, CV_UTF8_INVALID, 0},     /* lead above F4 */
        {"\xFF", 1, CV_UTF8_INVALID, 0},
        {"ab\0cd", 5, CV_UTF8_NUL, 2},                    /* NUL inside */
        {"\0", 1, CV_UTF8_NUL, 0},
        {"\xC3\xA9\0", 3, CV_UTF8_NUL, 2},
        {"a\0\x80", 3, CV_UTF8_NUL, 1},                   /* the first problem wins */
        {"a\x80\0", 3, CV_UTF8_INVALID, 1},
        {"\xC0\x80", 2, CV_UTF8_INVALID, 0},               /* overlong NUL is not NUL */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t off = 12345;
        cv_utf8_verdict v = cv_utf8_check(cases[i].s, cases[i].n, &off);
        if (v != cases[i].v || off != cases[i].off)
            fail_msg("case %zu: verdict %d offset %zu, want %d at %zu", i, (int)v, off, (int)cases[i].v,
                     cases[i].off);
        assert_int_equal(cv_utf8_check(cases[i].s, cases[i].n, NULL), cases[i].v);
        /* Agrees with cv_utf8_valid (NUL is valid UTF-8, so a NUL verdict tells nothing). */
        if (v != CV_UTF8_NUL) assert_int_equal(cv_utf8_valid(cases[i].s, cases[i].n), v == CV_UTF8_OK);
    }
}

/* The scan takes ASCII 8 bytes at a time: a problem at every offset around the word
 * boundaries is still found at its byte, and a valid character between runs is passed. */
static void test_check_long_ascii_runs(void **state) {
    (void)state;
    char buf[48];
    for (size_t at = 0; at + 2 <= sizeof buf; at++) {
        memset(buf, 'a', sizeof buf);
        buf[at] = '\0';
        size_t off = 0;
        assert_int_equal(cv_utf8_check(buf, sizeof buf, &off), CV_UTF8_NUL);
        assert_int_equal(off, at);
        assert_true(cv_utf8_valid(buf, sizeof buf));
        buf[at] = (char)0x80;
        assert_int_equal(cv_utf8_check(buf, sizeof buf, &off), CV_UTF8_INVALID);
        assert_int_equal(off, at);
        assert_false(cv_utf8_valid(buf, sizeof buf));
        buf[at] = (char)0xC3; /* é, then ASCII again */
        buf[at + 1] = (char)0xA9;
        assert_int_equal(cv_utf8_check(buf, sizeof buf, &off), CV_UTF8_OK);
        assert_int_equal(off, sizeof buf);
    }
}

int main(void) {
    g_seed = cv_test_seed("test_utf8");
    g_rng = cv_test_rng_new(g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_edges),
        cmocka_unit_test(test_encode_roundtrip),
        cmocka_unit_test(test_stream_known),
        cmocka_unit_test(test_stream_random_splits),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_check_long_ascii_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
