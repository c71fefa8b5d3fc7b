#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rag_analyzer.h"

static unsigned seed;

typedef struct terms {
    char buf[4096];
    size_t len, n;
} terms;

/* Joins the terms with '|' so that expectations read as one string. */
static void collect(void *user, const char *t, size_t n) {
    terms *ts = user;
    assert_true(n > 0 && n <= CV_RAG_MAX_TERM);
    if (ts->len + n + 2 >= sizeof ts->buf) return;
    if (ts->n++) ts->buf[ts->len++] = '|';
    memcpy(ts->buf + ts->len, t, n);
    ts->len += n;
    ts->buf[ts->len] = 0;
}

static void expect_terms(const cv_rag_analyzer *a, const char *text, const char *want) {
    terms ts = {{0}, 0, 0};
    cv_rag_analyze(a, text, strlen(text), collect, &ts);
    if (strcmp(ts.buf, want) != 0) fail_msg("analyze(\"%s\") = \"%s\", want \"%s\"", text, ts.buf, want);
}

static int setup(void **state) {
    cv_rag_analyzer *a = NULL;
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &a, NULL), CV_OK);
    *state = a;
    return 0;
}

static int teardown(void **state) {
    cv_rag_analyzer_free(*state);
    return 0;
}

static void test_words_fold_case_width_and_accents(void **state) {
    const cv_rag_analyzer *a = *state;
    expect_terms(a, "The Quick-Brown fox's DOG", "quick|brown|fox|s|dog");
    expect_terms(a, "Ｃａｆé ÉCOLE Straße", "cafe|ecole|strasse");
    expect_terms(a, "ｘ１２３ v2.5 ipv6", "x123|v2|5|ipv6");
    expect_terms(a, "Москва ΑΘΗΝΑ", "москва|αθηνα");
    expect_terms(a, "  ...!!  ", "");
}

static void test_cjk_bigrams_and_unigrams(void **state) {
    const cv_rag_analyzer *a = *state;
    expect_terms(a, "知识库", "知识|识库");
    expect_terms(a, "书", "书");
    expect_terms(a, "用BM25检索文档", "用|bm25|检索|索文|文档");
    expect_terms(a, "日本語のテキスト", "日本|本語|語の|のテ|テキ|キス|スト");
    expect_terms(a, "한국어", "한국|국어");
    /* CJK punctuation separates runs */
    expect_terms(a, "明月，故乡。", "明月|故乡");
}

static void test_stopwords_english_and_chinese(void **state) {
    const cv_rag_analyzer *a = *state;
    expect_terms(a, "what is the meaning of this", "meaning");
    /* single-character stopwords split runs; two-character ones are dropped */
    expect_terms(a, "李白的诗", "李白|诗");
    expect_terms(a, "什么是知识库", "知识|识库");
    expect_terms(a, "《静夜思》的作者是谁", "静夜|夜思|作者");

    const char *custom[] = {"Fox", "狐狸"};
    cv_rag_analyzer *c = NULL;
    assert_int_equal(cv_rag_analyzer_create(custom, 2, &c, NULL), CV_OK);
    expect_terms(c, "the FOX 狐狸跳", "the|狸跳"); /* a stopword bigram is dropped */
    size_t n;
    const char *const *w = cv_rag_analyzer_stopwords(c, &n);
    assert_int_equal(n, 2);
    assert_string_equal(w[0], "fox");
    cv_rag_analyzer_free(c);

    cv_rag_analyzer *none = NULL;
    assert_int_equal(cv_rag_analyzer_create(custom, 0, &none, NULL), CV_OK);
    expect_terms(none, "the 的", "the|的");
    cv_rag_analyzer_free(none);

    const char *bad[] = {"ok", "\xff"};
    cv_error e = {0};
    assert_int_equal(cv_rag_analyzer_create(bad, 2, &c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "stopword 1"));
}

static void test_long_terms_are_cut_at_code_point_boundary(void **state) {
    const cv_rag_analyzer *a = *state;
    char text[400];
    size_t n = 0;
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(text + n, sizeof text - n, "é");
    terms ts = {{0}, 0, 0};
    cv_rag_analyze(a, text, n, collect, &ts);
    assert_int_equal(ts.n, 1);
    assert_int_equal(ts.len, CV_RAG_MAX_TERM); /* 64 one-byte 'e' after stripping accents */
    memcpy(text, "ab\xD0\x96\xD0", 5);
    ts = (terms){{0}, 0, 0};
    cv_rag_analyze(a, text, 5, collect, &ts);
    assert_string_equal(ts.buf, "abж");
}

static void test_random_bytes_never_break_invariants(void **state) {
    const cv_rag_analyzer *a = *state;
    unsigned char buf[1024];
    for (int r = 0; r < 300; r++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        for (size_t i = 0; i < n; i++) {
            int pick = rand() % 4;
            buf[i] = pick == 0 ? (unsigned char)(rand() % 256)
                               : pick == 1 ? (unsigned char)("aZ9 ,"[rand() % 5])
                                           : (unsigned char)"\xe4\xb8\xad\xe6\x96\x87"[rand() % 6];
        }
        terms ts = {{0}, 0, 0};
        cv_rag_analyze(a, (const char *)buf, n, collect, &ts); /* collect asserts 0 < len <= max */
        /* every term is valid UTF-8 */
        assert_int_equal(cv_rag_utf8_check(ts.buf, ts.len), ts.len);
    }
    printf("seed %u\n", seed);
}

static void test_utf8_check(void **state) {
    (void)state;
    assert_int_equal(cv_rag_utf8_check("abc", 3), 3);
    assert_int_equal(cv_rag_utf8_check("a\xe4\xb8\xad", 4), 4);
    assert_int_equal(cv_rag_utf8_check("a\xe4\xb8", 3), 1);
    assert_int_equal(cv_rag_utf8_check("ab\xc0\xaf", 4), 2); /* overlong */
    assert_int_equal(cv_rag_utf8_check("\xed\xa0\x80", 3), 0); /* surrogate */
}

int main(void) {
    seed = (unsigned)time(NULL);
    printf("test_rag_analyzer seed %u\n", seed);
    srand(seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_words_fold_case_width_and_accents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cjk_bigrams_and_unigrams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopwords_english_and_chinese, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_terms_are_cut_at_code_point_boundary, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_random_bytes_never_break_invariants, setup, teardown),
        cmocka_unit_test(test_utf8_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
