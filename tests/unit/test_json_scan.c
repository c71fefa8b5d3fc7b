/* json_scan: byte by byte, the same verdict as a JSON parser (jansson) on objects and
 * arrays, valid and not; the value is complete exactly at its last byte; a refused
 * byte leaves the state as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include <jansson.h>

#include "json_scan.h"

/* Where the scan of s stops: the index of the byte that completed it, or of the byte
 * it refused (*bad set), or strlen(s) when it wants more. */
static size_t scan(const char *s, int *bad) {
    cv_jscan js;
    cv_jscan_init(&js);
    *bad = 0;
    for (size_t i = 0; s[i]; i++) {
        cv_jscan_r r = cv_jscan_feed(&js, (uint8_t)s[i]);
        if (r == CV_JSCAN_DONE) return i;
        if (r == CV_JSCAN_BAD) return *bad = 1, i;
    }
    return strlen(s);
}

static void test_agrees_with_jansson(void **state) {
    (void)state;
    static const char *const docs[] = {
        "{}", "[]", "{\"a\": 1}", " {\"a\" : [1, 2.5, -0, 1e5, 1E-2, 0.5e+3, true, false, null, \"x\"]}",
        "{\"s\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}", "[[[[{}]]], {\"a\": {\"b\": []}}]",
        "{\"\xc3\xa9\": \"\xe2\x82\xac\"}", "{\"a\": 1,}", "{\"a\" 1}", "{a: 1}", "[1 2]", "[01]", "[1.]",
        "[-]", "[1e]", "[.5]", "[tru]", "[nul]", "{\"a\": \"\\x\"}", "{\"a\": \"\\u12G4\"}", "[\"a\nb\"]",
        "{\"a\": 1]", "[1}", "{,}", "[,1]", "{\"a\": }", "[+1]", "[--1]", "[1.5.5]",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        int bad;
        size_t at = scan(docs[i], &bad);
        json_t *j = json_loads(docs[i], 0, NULL);
        int valid = j != NULL;
        json_decref(j);
        if (valid != (!bad && at + 1 == strlen(docs[i])))
            fail_msg("'%s': jansson says %svalid, the scan stopped at %zu (%s)", docs[i], valid ? "" : "in", at,
                     bad ? "refused" : "complete or wanting more");
    }
}

static void test_cut_short_and_refusal_keeps_state(void **state) {
    (void)state;
    int bad;
    assert_int_equal(scan("{\"a\": [1, 2", &bad), strlen("{\"a\": [1, 2"));
    assert_false(bad);
    cv_jscan js;
    cv_jscan_init(&js);
    const char *s = "{\"a\": 12";
    for (size_t i = 0; s[i]; i++) assert_int_equal(cv_jscan_feed(&js, (uint8_t)s[i]), CV_JSCAN_MORE);
    assert_int_equal(cv_jscan_feed(&js, 'x'), CV_JSCAN_BAD);
    assert_int_equal(cv_jscan_feed(&js, '3'), CV_JSCAN_MORE);
    assert_int_equal(cv_jscan_feed(&js, '}'), CV_JSCAN_DONE);
    assert_int_equal(cv_jscan_feed(&js, ' '), CV_JSCAN_BAD);
    /* after a member: the rest of the object */
    cv_jscan_init_after_member(&js);
    s = ", \"id\": \"x\"}";
    for (size_t i = 0; s[i + 1]; i++) assert_int_equal(cv_jscan_feed(&js, (uint8_t)s[i]), CV_JSCAN_MORE);
    assert_int_equal(cv_jscan_feed(&js, '}'), CV_JSCAN_DONE);
    /* nesting is bounded */
    cv_jscan_init(&js);
    for (int i = 0; i < CV_JSCAN_DEPTH; i++) assert_int_equal(cv_jscan_feed(&js, '['), CV_JSCAN_MORE);
    assert_int_equal(cv_jscan_feed(&js, '['), CV_JSCAN_BAD);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_jansson),
        cmocka_unit_test(test_cut_short_and_refusal_keeps_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
