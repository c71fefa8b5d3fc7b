#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rag_ingest.h"
#include "../support/test_tmpdir.h"

static char dir[64];

static const char *write_file(const char *name, const char *content) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

typedef struct fx {
    cv_rag_analyzer *an;
    cv_rag_builder *b;
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &f->an, NULL), CV_OK);
    assert_int_equal(cv_rag_builder_create(NULL, f->an, &f->b, NULL), CV_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    cv_rag_builder_free(f->b);
    cv_rag_analyzer_free(f->an);
    free(f);
    return 0;
}

/* Writes the builder to a scratch index and opens it. */
static cv_rag_index *build(fx *f) {
    char path[128];
    snprintf(path, sizeof path, "%s/t.idx", dir);
    cv_error e = {0};
    cv_rag_index *ix = NULL;
    if (cv_rag_builder_write(f->b, path, &e) || cv_rag_index_open(path, CV_RAG_VERIFY_CRC, &ix, &e))
        fail_msg("%s", e.msg);
    unlink(path);
    return ix;
}

static void expect_str(cv_rag_strv s, const char *want) {
    if (s.len != strlen(want) || memcmp(s.ptr, want, s.len) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.ptr, want);
}

static void test_txt_md_jsonl(void **state) {
    fx *f = *state;
    size_t n = 0;
    char txt[128], md[128];
    snprintf(txt, sizeof txt, "%s", write_file("notes.txt", "plain text body\n"));
    snprintf(md, sizeof md, "%s", write_file("guide.md", "intro line\n\n##  Setup guide ##\r\nbody\n# Later\n"));
    assert_int_equal(cv_rag_ingest_file(f->b, txt, &n, NULL), CV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(cv_rag_ingest_file(f->b, md, &n, NULL), CV_OK);
    const char *jl = write_file("docs.jsonl",
                                "{\"id\":\"a\",\"title\":\"T\",\"url\":\"http://u\",\"text\":\"alpha\"}\n"
                                "\n   \n"
                                "{\"id\":12,\"text\":\"beta\",\"title\":null}\n"
                                "{\"text\":\"gamma\"}\n");
    assert_int_equal(cv_rag_ingest_file(f->b, jl, &n, NULL), CV_OK);
    assert_int_equal(n, 3);
    cv_rag_index *ix = build(f);
    cv_rag_doc d;
    cv_rag_index_doc(ix, 0, &d);
    expect_str(d.id, txt);
    expect_str(d.title, "notes.txt");
    cv_rag_index_doc(ix, 1, &d);
    expect_str(d.title, "Setup guide");
    cv_rag_index_doc(ix, 2, &d);
    expect_str(d.id, "a");
    expect_str(d.url, "http://u");
    cv_rag_index_doc(ix, 3, &d);
    expect_str(d.id, "12");
    expect_str(d.title, "");
    cv_rag_index_doc(ix, 4, &d);
    expect_str(d.id, "docs.jsonl:5"); /* no id: file name and line */
    cv_rag_index_close(ix);
}

static void test_errors_name_file_line_and_field(void **state) {
    fx *f = *state;
    cv_error e = {0};
    size_t n = 9;
    struct { const char *content, *needle; } cases[] = {
        {"{\"id\":\"a\",\"text\":\"ok\"}\n{\"id\":\"b\"}\n", ":2: field \"text\" is missing"},
        {"{\"text\":\"x\",\"url\":5}\n", ":1: field \"url\" must be a string"},
        {"{\"text\":\"x\",\"id\":[1]}\n", "must be a string or an integer"},
        {"[1,2]\n", ":1: expected a JSON object"},
        {"{\"text\":\"x\"\n", ":1: invalid JSON"},
        {"{\"text\":\"x\",\"text\":\"y\"}\n", ":1: invalid JSON"},
        {"{\"id\":\"a\\u0000z\",\"text\":\"x\"}\n", ":1: invalid JSON"}, /* NUL in a string */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = write_file("bad.jsonl", cases[i].content);
        assert_int_equal(cv_rag_ingest_file(f->b, p, &n, &e), CV_EFORMAT);
        if (!strstr(e.msg, cases[i].needle) || !strstr(e.msg, "bad.jsonl"))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].needle);
    }
    assert_int_equal(cv_rag_ingest_file(f->b, "/nonexistent/x.txt", &n, &e), CV_ENOTFOUND);
    assert_int_equal(cv_rag_ingest_file(f->b, write_file("x.pdf", "%PDF"), &n, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "unknown input type"));
}

int main(void) {
    if (cv_test_tmpdir(dir, sizeof dir, "ingest")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_txt_md_jsonl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_file_line_and_field, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    static const char *const files[] = {"notes.txt", "guide.md", "docs.jsonl", "bad.jsonl", "x.pdf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return rc;
}
