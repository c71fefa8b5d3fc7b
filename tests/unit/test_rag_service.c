#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rag_index.h"
#include "rag_service.h"
#include "../support/test_tmpdir.h"

static char dir[200];
static char kb_path[256], kb2_path[256], spec[600];

static size_t count_bytes(void *user, const char *text, size_t len) {
    (void)user;
    (void)text;
    return len;
}

static void write_index(const char *path, const char *const *docs, size_t n) {
    cv_rag_analyzer *a;
    cv_rag_builder *b;
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &a, NULL), CV_OK);
    assert_int_equal(cv_rag_builder_create(NULL, a, &b, NULL), CV_OK);
    for (size_t i = 0; i < n; i += 3)
        assert_int_equal(cv_rag_builder_add(b, docs[i], docs[i + 1], "", docs[i + 2], strlen(docs[i + 2]), NULL), CV_OK);
    assert_int_equal(cv_rag_builder_write(b, path, NULL), CV_OK);
    cv_rag_builder_free(b);
    cv_rag_analyzer_free(a);
}

static int setup(void **state) {
    (void)state;
    if (cv_test_tmpdir(dir, sizeof dir, "rag-service")) return -1;
    static const char *const docs[] = {
        "mascot", "Project mascot", "The corvid project's mascot is a raven named Quill.",
        "kv", "KV cache", "The paged KV cache keeps keys and values in blocks.",
        "tea", "龙井茶", "龙井茶产自杭州西湖。",
    };
    static const char *const other[] = {"x", "", "ravens are clever birds"};
    snprintf(kb_path, sizeof kb_path, "%s/docs.cvidx", dir);
    snprintf(kb2_path, sizeof kb2_path, "%s/other.cvidx", dir);
    write_index(kb_path, docs, 9);
    write_index(kb2_path, other, 3);
    snprintf(spec, sizeof spec, "docs=%s,other=%s", kb_path, kb2_path);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(kb_path);
    unlink(kb2_path);
    rmdir(dir);
    return 0;
}

static cv_rag_settings settings(void) {
    return (cv_rag_settings){spec, NULL, 4, 0.5f, "refuse", "No relevant data found.", "未找到相关数据。", 1000,
                             NULL, NULL, 1, 0, 0};
}

static cv_rag_service *service(void) {
    cv_rag_settings s = settings();
    cv_rag_service *svc = NULL;
    cv_error e = {0};
    if (cv_rag_service_new(&s, &svc, &e) != CV_OK) fail_msg("service: %s", e.msg);
    return svc;
}

static void expect_new_error(cv_rag_settings s, const char *needle) {
    cv_rag_service *svc = NULL;
    cv_error e = {0};
    assert_int_not_equal(cv_rag_service_new(&s, &svc, &e), CV_OK);
    assert_null(svc);
    if (!strstr(e.msg, needle)) fail_msg("error \"%s\" lacks \"%s\"", e.msg, needle);
}

static void test_settings_checked(void **state) {
    (void)state;
    cv_rag_settings s = settings();
    s.knowledge_bases = "docs";
    expect_new_error(s, "NAME=PATH");
    s.knowledge_bases = "a b=/x";
    expect_new_error(s, "NAME=PATH");
    char twice[600];
    snprintf(twice, sizeof twice, "d=%s,d=%s", kb_path, kb_path);
    s.knowledge_bases = twice;
    expect_new_error(s, "named twice");
    s.knowledge_bases = "d=/nonexistent/x.cvidx";
    expect_new_error(s, "knowledge base \"d\" (/nonexistent/x.cvidx)");
    s = settings();
    s.policy = "maybe";
    expect_new_error(s, "rag_policy");
    s = settings();
    s.top_k = 21;
    expect_new_error(s, "rag_top_k");
    s = settings();
    s.knowledge_bases = "";
    expect_new_error(s, "neither");
    s = settings();
    s.sources_path = "/nonexistent/sources.json";
    expect_new_error(s, "rag_sources");
}

static void test_retrieves_and_assembles(void **state) {
    (void)state;
    cv_rag_service *svc = service();
    cv_rag_query q = {.question = "What is the corvid mascot called?"};
    cv_rag_outcome o;
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_null(o.default_answer);
    assert_true(o.n_passages >= 1);
    assert_string_equal(o.passages[0].source, "kb:docs");
    assert_string_equal(o.passages[0].doc_id, "mascot");
    assert_string_equal(o.passages[0].title, "Project mascot");
    assert_true(o.passages[0].score >= 0.5f);
    for (size_t i = 1; i < o.n_passages; i++) assert_true(o.passages[i].score <= o.passages[i - 1].score);
    assert_true(o.ctx.n_kept == o.n_passages);
    assert_non_null(strstr(o.ctx.text, "[1] Project mascot: The corvid project's mascot is a raven"));
    assert_int_equal(o.ctx.tokens, strlen(o.ctx.text));
    cv_rag_outcome_free(&o);
    /* Another knowledge base by name; top_k 1. */
    q = (cv_rag_query){.question = "ravens", .knowledge_base = "other", .top_k = 1, .min_score = 0.01f};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_int_equal(o.n_passages, 1);
    assert_string_equal(o.passages[0].source, "kb:other");
    assert_string_equal(o.ctx.text, "[1] x: ravens are clever birds");
    cv_rag_outcome_free(&o);
    /* A lower budget from the caller wins. */
    q = (cv_rag_query){.question = "mascot", .max_context_tokens = 20};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_true(o.ctx.tokens <= 20);
    cv_rag_outcome_free(&o);
    cv_rag_service_free(svc);
}

static void test_default_answer_by_script_and_policy(void **state) {
    (void)state;
    cv_rag_service *svc = service();
    cv_rag_outcome o;
    cv_rag_query q = {.question = "completely unrelated words"};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_string_equal(o.default_answer, "No relevant data found.");
    assert_int_equal(o.ctx.n_kept, 0);
    cv_rag_outcome_free(&o);
    q.question = "今天天气怎么样";
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_string_equal(o.default_answer, "未找到相关数据。");
    cv_rag_outcome_free(&o);
    /* A match below min_score counts as nothing; policy answer runs anyway. */
    q = (cv_rag_query){.question = "corvid mascot", .min_score = 1000};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_non_null(o.default_answer);
    cv_rag_outcome_free(&o);
    q.policy = "answer";
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_null(o.default_answer);
    assert_int_equal(o.n_passages, 0);
    assert_string_equal(o.ctx.text, "");
    cv_rag_outcome_free(&o);
    cv_rag_service_free(svc);
    /* Only one answer configured: it serves both scripts. */
    cv_rag_settings s = settings();
    s.default_answer_zh = "";
    assert_int_equal(cv_rag_service_new(&s, &svc, NULL), CV_OK);
    q = (cv_rag_query){.question = "天气"};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, NULL), CV_OK);
    assert_string_equal(o.default_answer, "No relevant data found.");
    cv_rag_outcome_free(&o);
    cv_rag_service_free(svc);
}

static void expect_run_error(cv_rag_service *svc, cv_rag_query q, const char *needle) {
    cv_rag_outcome o;
    cv_error e = {0};
    assert_int_equal(cv_rag_service_run(svc, &q, count_bytes, NULL, &o, &e), CV_EINVAL);
    if (!strstr(e.msg, needle)) fail_msg("error \"%s\" lacks \"%s\"", e.msg, needle);
}

static void test_request_limits(void **state) {
    (void)state;
    cv_rag_service *svc = service();
    const char *src[] = {"web"};
    expect_run_error(svc, (cv_rag_query){.question = "q", .top_k = 21}, "rag.top_k: 21");
    expect_run_error(svc, (cv_rag_query){.question = "q", .knowledge_base = "nope"}, "rag.knowledge_base");
    expect_run_error(svc, (cv_rag_query){.question = "q", .min_score = -1}, "rag.min_score");
    expect_run_error(svc, (cv_rag_query){.question = "q", .policy = "x"}, "rag.policy");
    expect_run_error(svc, (cv_rag_query){.question = "q", .sources = src, .n_sources = 1}, "rag.sources");
    expect_run_error(svc, (cv_rag_query){.question = ""}, "question is empty");
    cv_rag_service_free(svc);
}

static void test_cjk_detection(void **state) {
    (void)state;
    assert_false(cv_rag_is_cjk_text("hello, world", 12));
    assert_false(cv_rag_is_cjk_text("café über", strlen("café über")));
    assert_true(cv_rag_is_cjk_text("what is 知识库", strlen("what is 知识库")));
    assert_true(cv_rag_is_cjk_text("カタカナ", strlen("カタカナ")));
    assert_true(cv_rag_is_cjk_text("한국어", strlen("한국어")));
    assert_false(cv_rag_is_cjk_text("\xff\xfe", 2));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_checked),
        cmocka_unit_test(test_retrieves_and_assembles),
        cmocka_unit_test(test_default_answer_by_script_and_policy),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_cjk_detection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
