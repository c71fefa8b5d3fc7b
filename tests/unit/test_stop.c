#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/test_rng.h"
#include "stop.h"

static cv_test_rng g_rng;

static uint64_t rnd(void) { return cv_test_rng_next(&g_rng); }

static cv_stop *make(const char *const *stops, size_t n) {
    cv_stop *s = NULL;
    cv_error e = {0};
    if (cv_stop_new(stops, n, &s, &e) != CV_OK) fail_msg("cv_stop_new: %s", e.msg);
    return s;
}

/* Feeds the pieces, collecting everything emitted (flushing at the end unless a
 * stop came) into got; returns the index of the stop string or -1. */
typedef struct run {
    char got[4096];
    size_t len;
    int which;
    int chunks_cut_utf8; /* emitted chunks that ended inside a character */
} run;

static int ends_inside_char(const char *t, size_t len) {
    size_t i = len;
    size_t back = 0;
    while (i > 0 && back < 4 && ((unsigned char)t[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return back > 0;
    unsigned char b = (unsigned char)t[i - 1];
    size_t need = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    return back + 1 < need;
}

static void take(run *r, cv_stop_out o) {
    assert_true(r->len + o.len <= sizeof r->got);
    memcpy(r->got + r->len, o.text, o.len);
    r->len += o.len;
    if (o.len && ends_inside_char(o.text, o.len)) r->chunks_cut_utf8++;
    if (o.stopped) r->which = o.which;
}

static run feed_pieces(cv_stop *s, const char *const *pieces, size_t n) {
    run r = {.which = -1};
    cv_error e = {0};
    for (size_t i = 0; i < n && r.which < 0; i++) {
        cv_stop_out o;
        assert_int_equal(cv_stop_feed(s, pieces[i], strlen(pieces[i]), &o, &e), CV_OK);
        take(&r, o);
    }
    if (r.which < 0) take(&r, cv_stop_flush(s));
    r.got[r.len] = 0;
    return r;
}

static void test_match_spanning_pieces(void **state) {
    (void)state;
    const char *stops[] = {"</answer>", "\n\nUser:"};
    cv_stop *s = make(stops, 2);
    const char *pieces[] = {"The result is 4", "2.</", "ans", "wer", "> ignored"};
    cv_stop_out o;
    cv_error e = {0};
    assert_int_equal(cv_stop_feed(s, pieces[0], strlen(pieces[0]), &o, &e), CV_OK);
    assert_int_equal(o.len, 15);
    assert_false(o.stopped);
    assert_int_equal(cv_stop_feed(s, pieces[1], strlen(pieces[1]), &o, &e), CV_OK);
    assert_int_equal(o.len, 2); /* "2." out, "</" held */
    assert_memory_equal(o.text, "2.", 2);
    assert_int_equal(cv_stop_feed(s, pieces[2], 3, &o, &e), CV_OK);
    assert_int_equal(o.len, 0);
    assert_int_equal(cv_stop_feed(s, pieces[3], 3, &o, &e), CV_OK);
    assert_int_equal(o.len, 0);
    assert_int_equal(cv_stop_feed(s, pieces[4], strlen(pieces[4]), &o, &e), CV_OK);
    assert_true(o.stopped);
    assert_int_equal(o.which, 0);
    assert_int_equal(o.len, 0);
    /* After a stop nothing more comes out. */
    assert_int_equal(cv_stop_feed(s, "more", 4, &o, &e), CV_OK);
    assert_true(o.stopped);
    assert_int_equal(o.len, 0);
    assert_int_equal(cv_stop_flush(s).len, 0);

    cv_stop_reset(s);
    run r = feed_pieces(s, pieces, 5);
    assert_string_equal(r.got, "The result is 42.");
    assert_int_equal(r.which, 0);
    cv_stop_free(s);
}

static void test_false_partial_starts_are_released(void **state) {
    (void)state;
    const char *stops[] = {"<|end|>"};
    cv_stop *s = make(stops, 1);
    const char *pieces[] = {"a <|", "en", "x", "d|> <", "<|e", "nd", "|>tail"};
    run r = feed_pieces(s, pieces, 7);
    assert_string_equal(r.got, "a <|enxd|> <");
    assert_int_equal(r.which, 0);
    cv_stop_reset(s);
    const char *no_stop[] = {"x<|en", "d"};
    r = feed_pieces(s, no_stop, 2);
    assert_string_equal(r.got, "x<|end"); /* held text comes out at the flush */
    assert_int_equal(r.which, -1);
    cv_stop_free(s);
}

static void test_overlapping_prefixes(void **state) {
    (void)state;
    const char *stops[] = {"aab"};
    cv_stop *s = make(stops, 1);
    const char *pieces[] = {"a", "a", "a", "b"};
    run r = feed_pieces(s, pieces, 4);
    assert_string_equal(r.got, "a");
    assert_int_equal(r.which, 0);
    cv_stop_free(s);
}

static void test_first_to_complete_wins(void **state) {
    (void)state;
    const char *stops[] = {"abc", "b", "xbcd", "bc"};
    cv_stop *s = make(stops, 4);
    const char *whole[] = {"zabcd"};
    run r = feed_pieces(s, whole, 1);
    assert_string_equal(r.got, "za"); /* "b" ends first */
    assert_int_equal(r.which, 1);
    cv_stop_free(s);
    const char *tie[] = {"cd", "bcd"};
    s = make(tie, 2);
    const char *in[] = {"abcde"};
    r = feed_pieces(s, in, 1);
    assert_string_equal(r.got, "a"); /* same end: the longer one */
    assert_int_equal(r.which, 1);
    cv_stop_free(s);
}

static void test_utf8_is_never_cut(void **state) {
    (void)state;
    /* "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80, split byte by byte. */
    const char *text = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80!";
    cv_stop *s = make(NULL, 0);
    run r = {.which = -1};
    cv_error e = {0};
    for (size_t i = 0; text[i]; i++) {
        cv_stop_out o;
        assert_int_equal(cv_stop_feed(s, text + i, 1, &o, &e), CV_OK);
        take(&r, o);
    }
    take(&r, cv_stop_flush(s));
    assert_int_equal(r.chunks_cut_utf8, 0);
    assert_memory_equal(r.got, text, strlen(text));
    cv_stop_free(s);

    /* A stop string that starts with a multi-byte character. */
    const char *stops[] = {"\xE2\x82\xAC!"};
    s = make(stops, 1);
    const char *pieces[] = {"1 \xE2\x82", "\xAC 2 \xE2", "\x82\xAC", "!x"};
    r = feed_pieces(s, pieces, 4);
    assert_string_equal(r.got, "1 \xE2\x82\xAC 2 ");
    assert_int_equal(r.chunks_cut_utf8, 0);
    cv_stop_free(s);
}

static void test_invalid_stop_strings(void **state) {
    (void)state;
    cv_stop *s = NULL;
    cv_error e = {0};
    const char *empty[] = {"ok", ""};
    assert_int_equal(cv_stop_new(empty, 2, &s, &e), CV_EINVAL);
    assert_string_equal(e.msg, "stop[1] is empty");
    const char *bad[] = {"ab\xC3"};
    assert_int_equal(cv_stop_new(bad, 1, &s, &e), CV_EINVAL);
    assert_string_equal(e.msg, "stop[0] is not valid UTF-8 (byte 2)");
    char big[CV_STOP_MAX_LEN + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *long_one[] = {big};
    assert_int_equal(cv_stop_new(long_one, 1, &s, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "257 bytes long, at most 256"));
    const char *many[CV_STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= CV_STOP_MAX_STRINGS; i++) many[i] = "x";
    assert_int_equal(cv_stop_new(many, CV_STOP_MAX_STRINGS + 1, &s, &e), CV_EINVAL);
    assert_null(s);
    assert_string_equal(e.msg, "stop: 17 strings given, at most 16 allowed");
    assert_int_equal(cv_stop_check(many, CV_STOP_MAX_STRINGS, &e), CV_OK);
}

/* Random texts over a small alphabet (so that stops and near-misses are common),
 * cut into random pieces: the output must equal the text up to the first stop to
 * complete, whatever the cuts, and each chunk must end on a character boundary. */
static void test_random_cuts_give_the_same_result(void **state) {
    (void)state;
    static const char *const alphabet[] = {"a", "b", "c", "\xC3\xA9", "\xE2\x82\xAC", " "};
    const char *stops[] = {"abc", "ca", "bb\xC3\xA9", "\xE2\x82\xAC\xE2\x82\xAC"};
    cv_stop *s = make(stops, 4);
    for (int iter = 0; iter < 2000; iter++) {
        char text[256];
        size_t tl = 0;
        int nsym = 1 + (int)(rnd() % 40);
        for (int i = 0; i < nsym; i++) {
            const char *sym = alphabet[rnd() % 6];
            memcpy(text + tl, sym, strlen(sym));
            tl += strlen(sym);
        }
        text[tl] = 0;
        /* Reference: earliest end, then longest. */
        size_t best_end = SIZE_MAX, best_len = 0;
        int best = -1;
        for (int i = 0; i < 4; i++) {
            const char *p = strstr(text, stops[i]);
            if (!p) continue;
            size_t l = strlen(stops[i]), end = (size_t)(p - text) + l;
            if (end < best_end || (end == best_end && l > best_len)) best_end = end, best_len = l, best = i;
        }
        size_t want_len = best < 0 ? tl : best_end - best_len;

        cv_stop_reset(s);
        run r = {.which = -1};
        cv_error e = {0};
        size_t pos = 0;
        while (pos < tl && r.which < 0) {
            size_t cut = 1 + (size_t)(rnd() % 7);
            if (cut > tl - pos) cut = tl - pos;
            cv_stop_out o;
            assert_int_equal(cv_stop_feed(s, text + pos, cut, &o, &e), CV_OK);
            take(&r, o);
            pos += cut;
        }
        if (r.which < 0) take(&r, cv_stop_flush(s));
        if (r.which != best || r.len != want_len || memcmp(r.got, text, want_len) != 0)
            fail_msg("text '%s': got stop %d and %zu bytes, want stop %d and %zu bytes", text,
                     r.which, r.len, best, want_len);
        assert_int_equal(r.chunks_cut_utf8, 0);
    }
    cv_stop_free(s);
}

static void test_long_piece_grows_the_buffer(void **state) {
    (void)state;
    const char *stops[] = {"STOP"};
    cv_stop *s = make(stops, 1);
    char *big = malloc(100001);
    assert_non_null(big);
    memset(big, 'x', 100000);
    memcpy(big + 99990, "STOP", 4);
    big[100000] = 0;
    cv_stop_out o;
    cv_error e = {0};
    assert_int_equal(cv_stop_feed(s, big, 100000, &o, &e), CV_OK);
    assert_true(o.stopped);
    assert_int_equal(o.len, 99990);
    free(big);
    cv_stop_free(s);
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_stop"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_spanning_pieces),
        cmocka_unit_test(test_false_partial_starts_are_released),
        cmocka_unit_test(test_overlapping_prefixes),
        cmocka_unit_test(test_first_to_complete_wins),
        cmocka_unit_test(test_utf8_is_never_cut),
        cmocka_unit_test(test_invalid_stop_strings),
        cmocka_unit_test(test_random_cuts_give_the_same_result),
        cmocka_unit_test(test_long_piece_grows_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
