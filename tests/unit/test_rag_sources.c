#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rag_sources.h"

static cv_rag_sources *parse(const char *json) {
    cv_rag_sources *s = NULL;
    cv_error e = {0};
    if (cv_rag_sources_parse(json, strlen(json), &s, &e)) fail_msg("parse: %s", e.msg);
    return s;
}

static void expect_parse_error(const char *json, const char *needle) {
    cv_rag_sources *s = NULL;
    cv_error e = {0};
    assert_int_equal(cv_rag_sources_parse(json, strlen(json), &s, &e), CV_EINVAL);
    if (!strstr(e.msg, needle)) fail_msg("error \"%s\" lacks \"%s\"", e.msg, needle);
}

static void test_config_defaults_and_errors(void **state) {
    (void)state;
    cv_rag_sources *s = parse("{\"sources\":[{\"name\":\"a\",\"url\":\"http://h/?q={query}\",\"text\":\"\"}]}");
    assert_int_equal(cv_rag_sources_count(s), 1);
    assert_int_equal(cv_rag_sources_budget_ms(s), 500);
    cv_rag_sources_free(s);
    expect_parse_error("[1]", "must be a JSON object");
    expect_parse_error("{\"sources\":[], \"extra\":1}", "unknown key \"extra\"");
    expect_parse_error("{\"sources\":[{\"name\":\"a b\",\"url\":\"http://h/{query}\",\"text\":\"/t\"}]}", "\"name\"");
    expect_parse_error("{\"sources\":[{\"name\":\"a\",\"url\":\"ftp://h/{query}\",\"text\":\"/t\"}]}", "http(s)");
    expect_parse_error("{\"sources\":[{\"name\":\"a\",\"url\":\"http://h/{query}\"}]}", "\"text\" (a JSON pointer) is required");
    expect_parse_error("{\"sources\":[{\"name\":\"a\",\"url\":\"http://h/{query}\",\"text\":\"/t\",\"max_bytes\":0}]}", "max_bytes");
    expect_parse_error("{\"sources\":[{\"name\":\"a\",\"url\":\"http://h/{query}\",\"text\":\"/t\",\"headers\":{\"A:B\":\"c\"}}]}", "header");
    expect_parse_error("{\"budget_ms\":\"fast\",\"sources\":[]}", "budget_ms");
    expect_parse_error("{\"sources\":", "invalid JSON");
}

static void test_body_extraction_with_json_pointers(void **state) {
    (void)state;
    cv_rag_sources *s = parse(
        "{\"sources\":[{\"name\":\"w\",\"url\":\"http://h/{query}\",\"items\":\"/data/hits\","
        "\"text\":\"/a~1b\",\"title\":\"/meta/0\",\"link\":\"/m~0n\",\"max_results\":2}]}");
    const char *body = "{\"data\":{\"hits\":["
                       "{\"a/b\":\"first\",\"meta\":[\"T1\"],\"m~n\":\"http://1\"},"
                       "{\"a/b\":42},"
                       "{\"a/b\":\"second\",\"meta\":{\"0\":\"x\"}},"
                       "{\"a/b\":\"third\"}]}}";
    cv_rag_source_hits h = {0};
    assert_int_equal(cv_rag_sources_parse_body(s, 0, body, strlen(body), &h, NULL), CV_OK);
    assert_int_equal(h.n, 2); /* the number is skipped; max_results stops at two */
    assert_string_equal(h.v[0].source, "w");
    assert_string_equal(h.v[0].text, "first");
    assert_string_equal(h.v[0].title, "T1");
    assert_string_equal(h.v[0].link, "http://1");
    assert_string_equal(h.v[1].text, "second");
    assert_string_equal(h.v[1].title, "x"); /* "/meta/0" in an object is the key "0" */
    assert_null(h.v[1].link);
    cv_rag_source_hits_free(&h);

    cv_error e = {0};
    const char *bad[] = {"not json", "{\"data\":{\"hits\":[]}}", "{\"data\":7}", "[]", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cv_rag_sources_parse_body(s, 0, bad[i], strlen(bad[i]), &h, &e), CV_EFORMAT);
        assert_int_equal(h.n, 0);
    }
    assert_int_equal(cv_rag_sources_parse_body(s, 1, "{}", 2, &h, &e), CV_EINVAL);
    cv_rag_sources_free(s);
}

static void test_fetch_without_sources_and_without_pii(void **state) {
    (void)state;
    cv_rag_sources *s = parse("{\"sources\":[]}");
    cv_pii *p = NULL;
    assert_int_equal(cv_pii_create(CV_PII_PLACEHOLDER, &p, NULL), CV_OK);
    cv_rag_source_hits h = {0};
    assert_int_equal(cv_rag_sources_fetch(s, p, "anything", 0, NULL, NULL, NULL, &h, NULL), CV_OK);
    assert_int_equal(h.n, 0);
    cv_error e = {0};
    assert_int_equal(cv_rag_sources_fetch(s, NULL, "q", 0, NULL, NULL, NULL, &h, &e), CV_EINVAL);
    cv_pii_free(p);
    cv_rag_sources_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_and_errors),
        cmocka_unit_test(test_body_extraction_with_json_pointers),
        cmocka_unit_test(test_fetch_without_sources_and_without_pii),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
