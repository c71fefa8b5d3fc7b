#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rag_prompt.h"
#include "utf8.h"

static unsigned seed;

/* One "token" per code point: easy to reason about, and a cut inside a multi-byte
 * character would show up as invalid UTF-8. */
static size_t count_cps(void *user, const char *text, size_t len) {
    (void)user;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)text[i] & 0xC0) != 0x80;
    return n;
}

static cv_rag_passage passage(const char *id, const char *text, float score) {
    return (cv_rag_passage){"kb:t", id, "", "", text, strlen(text), score, 0, 0};
}

static void test_all_fit_numbered_in_order(void **state) {
    (void)state;
    cv_rag_passage p[2] = {passage("a", "alpha text", 3), passage("b", "beta text", 1)};
    cv_rag_context c;
    cv_error e = {0};
    assert_int_equal(cv_rag_context_build(p, 2, 1000, count_cps, NULL, &c, &e), CV_OK);
    assert_string_equal(c.text, "[1] a: alpha text\n\n[2] b: beta text");
    assert_int_equal(c.n_kept, 2);
    assert_int_equal(c.kept[0], 0);
    assert_int_equal(c.kept[1], 1);
    assert_int_equal(c.tokens, count_cps(NULL, c.text, strlen(c.text)));
    /* Generate: a completion frame that ends where the answer starts. */
    char *g = cv_rag_prompt_generate(&c, "why?", 0);
    const char *head = "Documents:\n[1] a: alpha text\n\n[2] b: beta text\n\nAnswer the question using only";
    assert_true(!strncmp(g, head, strlen(head)));
    assert_non_null(strstr(g, CV_RAG_NOT_IN_DOCS_EN "\n\nQuestion: why?\nAnswer:"));
    assert_int_equal(strlen(strstr(g, "Answer:")), strlen("Answer:"));
    /* Chat: the instruction, the documents, then the question last (the user turn). */
    char *u = cv_rag_prompt_user(&c, "why?", 0);
    const char *lead = "Answer the question using only the documents.";
    assert_true(!strncmp(u, lead, strlen(lead)));
    const char *tail = "reply exactly: " CV_RAG_NOT_IN_DOCS_EN
                       "\n\nDocuments:\n[1] a: alpha text\n\n[2] b: beta text\n\nQuestion: why?";
    assert_non_null(strstr(u, tail));
    assert_int_equal(strlen(strstr(u, tail)), strlen(tail));
    assert_null(strstr(u, "[1]\"")); /* not asked to cite: the model answered the marker alone */
    free(g);
    free(u);
    /* The compact frame (small windows): no instruction. */
    g = cv_rag_prompt_generate(&c, "why?", 1);
    assert_string_equal(g, "Documents:\n[1] a: alpha text\n\n[2] b: beta text\n\nQuestion: why?\nAnswer:");
    u = cv_rag_prompt_user(&c, "why?", 1);
    assert_string_equal(u, "Documents:\n[1] a: alpha text\n\n[2] b: beta text\n\nQuestion: why?");
    free(g);
    free(u);
    /* A Chinese question gets the Chinese frame. */
    u = cv_rag_prompt_user(&c, "为什么？", 0);
    assert_true(!strncmp(u, "只根据资料回答问题。", strlen("只根据资料回答问题。")));
    assert_non_null(strstr(u, CV_RAG_NOT_IN_DOCS_ZH "\n\n资料:\n[1] a: alpha text"));
    assert_non_null(strstr(u, "\n\n问题: 为什么？"));
    free(u);
    cv_rag_context_free(&c);
}

static void test_title_used_when_present(void **state) {
    (void)state;
    cv_rag_passage p = {"web", "", "Weather", "http://w", "sunny", 5, 0, 0, 0};
    cv_rag_context c;
    assert_int_equal(cv_rag_context_build(&p, 1, 1000, count_cps, NULL, &c, NULL), CV_OK);
    assert_string_equal(c.text, "[1] Weather: sunny");
    cv_rag_context_free(&c);
}

static void test_lowest_ranked_dropped_and_cut_on_characters(void **state) {
    (void)state;
    /* 30 CJK characters (3 bytes each) after a 6-code-point header. */
    char zh[128] = "";
    for (int i = 0; i < 30; i++) strcat(zh, "知");
    cv_rag_passage p[3] = {passage("a", "short", 9), passage("b", zh, 5), passage("c", "never", 1)};
    cv_rag_context c;
    /* "[1] a: short" = 12; seam "\n\n" 2; "[2] b: " = 7: 36 leaves 15 characters. */
    assert_int_equal(cv_rag_context_build(p, 3, 36, count_cps, NULL, &c, NULL), CV_OK);
    assert_int_equal(c.n_kept, 2);
    assert_int_equal(c.tokens, 36);
    assert_true(cv_utf8_valid(c.text, strlen(c.text)));
    assert_non_null(strstr(c.text, "\n\n[2] b: 知知知知知知知知知知知知知知知"));
    assert_null(strstr(c.text, "知知知知知知知知知知知知知知知知"));
    assert_null(strstr(c.text, "never"));
    cv_rag_context_free(&c);
    /* Less than CV_RAG_PROMPT_MIN_CUT left: the passage is dropped, not cut. */
    assert_int_equal(cv_rag_context_build(p, 3, 12 + 2 + CV_RAG_PROMPT_MIN_CUT - 1, count_cps,
                                          NULL, &c, NULL), CV_OK);
    assert_int_equal(c.n_kept, 1);
    cv_rag_context_free(&c);
}

static void test_nothing_fits(void **state) {
    (void)state;
    cv_rag_passage p = passage("a", "a text", 1);
    cv_rag_context c;
    assert_int_equal(cv_rag_context_build(&p, 1, 3, count_cps, NULL, &c, NULL), CV_OK);
    assert_int_equal(c.n_kept, 0);
    assert_string_equal(c.text, "");
    assert_int_equal(c.tokens, 0);
    cv_rag_context_free(&c);
}

/* A measure that charges one extra token per "\n\n" seam in the whole text: the
 * block-by-block count underestimates; the result must still respect the budget. */
static size_t count_with_seams(void *user, const char *text, size_t len) {
    size_t n = count_cps(user, text, len);
    for (size_t i = 0; i + 1 < len; i++) n += text[i] == '\n' && text[i + 1] == '\n';
    return n;
}

static void random_text(char *buf, size_t cap) {
    static const char *const pieces[] = {"a", "bc", " ", "é", "知识", "库", "😀", "\n"};
    size_t len = 0, n = (size_t)(rand() % 60);
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = pieces[rand() % 8];
        if (len + strlen(s) + 1 >= cap) break;
        strcat(buf, s);
        len += strlen(s);
    }
}

static void test_random_budgets(void **state) {
    (void)state;
    char texts[8][256];
    for (int round = 0; round < 500; round++) {
        size_t n = 1 + (size_t)(rand() % 8);
        cv_rag_passage p[8];
        for (size_t i = 0; i < n; i++) {
            random_text(texts[i], sizeof texts[i]);
            p[i] = passage("d", texts[i], (float)(n - i));
        }
        size_t budget = (size_t)(rand() % 200);
        cv_rag_measure_fn m = rand() % 2 ? count_cps : count_with_seams;
        cv_rag_context c;
        assert_int_equal(cv_rag_context_build(p, n, budget, m, NULL, &c, NULL), CV_OK);
        if (c.tokens > budget) fail_msg("seed %u round %d: %zu tokens > budget %zu", seed, round, c.tokens, budget);
        if (!cv_utf8_valid(c.text, strlen(c.text))) fail_msg("seed %u round %d: invalid UTF-8", seed, round);
        for (size_t i = 0; i < c.n_kept; i++)
            if (c.kept[i] != i) fail_msg("seed %u round %d: kept[%zu] = %zu: not a prefix of the ranking", seed,
                                         round, i, c.kept[i]);
        cv_rag_context_free(&c);
    }
}

int main(void) {
    seed = (unsigned)time(NULL);
    printf("test_rag_prompt seed %u\n", seed);
    srand(seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_fit_numbered_in_order),
        cmocka_unit_test(test_title_used_when_present),
        cmocka_unit_test(test_lowest_ranked_dropped_and_cut_on_characters),
        cmocka_unit_test(test_nothing_fits),
        cmocka_unit_test(test_random_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
