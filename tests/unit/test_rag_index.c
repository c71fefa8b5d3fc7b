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
#include "rag_index.h"
#include "tokenizer.h"
#include "../support/test_tmpdir.h"
#include "../support/test_data.h"

static unsigned seed;
static char dir[64];

typedef struct fx {
    cv_rag_analyzer *an;
    cv_rag_builder *b;
    cv_rag_index *ix;
    cv_rag_searcher *s;
    char path[128];
} fx;

static const struct { const char *id, *title, *text; } docs[] = {
    {"tar", "tar manual", "The tar program saves many files together into a single archive. "
                          "Use -z to filter the archive through gzip."},
    {"grep", "grep manual", "grep searches for patterns in each file and prints matching lines."},
    {"poem", "静夜思", "床前明月光，疑是地上霜。举头望明月，低头思故乡。"},
    {"kb", "知识库", "知识库检索使用BM25算法对文档打分，中文按双字切分。"},
    {"fruit", "", "apple banana"},
};

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(cv_rag_analyzer_create(NULL, 0, &f->an, NULL), CV_OK);
    assert_int_equal(cv_rag_builder_create(NULL, f->an, &f->b, NULL), CV_OK);
    snprintf(f->path, sizeof f->path, "%s/kb.idx", dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    cv_rag_searcher_free(f->s);
    cv_rag_index_close(f->ix);
    cv_rag_builder_free(f->b);
    cv_rag_analyzer_free(f->an);
    unlink(f->path);
    free(f);
    return 0;
}

static void add_docs(fx *f) {
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        assert_int_equal(cv_rag_builder_add(f->b, docs[i].id, docs[i].title, NULL, docs[i].text,
                                            strlen(docs[i].text), NULL),
                         CV_OK);
}

static void write_open(fx *f) {
    cv_error e = {0};
    if (cv_rag_builder_write(f->b, f->path, &e)) fail_msg("write: %s", e.msg);
    if (cv_rag_index_open(f->path, CV_RAG_VERIFY_CRC, &f->ix, &e)) fail_msg("open: %s", e.msg);
    assert_int_equal(cv_rag_searcher_create(f->ix, &f->s, NULL), CV_OK);
}

static size_t search(fx *f, const char *q, cv_rag_hit *hits, size_t k, uint32_t per_doc) {
    cv_rag_search_opts o = {-1, -1, per_doc};
    size_t n = 99;
    assert_int_equal(cv_rag_search(f->s, &o, q, strlen(q), hits, k, &n, NULL), CV_OK);
    for (size_t i = 1; i < n; i++) assert_true(hits[i - 1].score >= hits[i].score);
    return n;
}

static void expect_top(fx *f, const char *q, const char *id) {
    cv_rag_hit h[5];
    size_t n = search(f, q, h, 5, 1);
    assert_true(n >= 1);
    cv_rag_doc d;
    cv_rag_index_doc(f->ix, h[0].doc, &d);
    if (d.id.len != strlen(id) || memcmp(d.id.ptr, id, d.id.len) != 0)
        fail_msg("query \"%s\": top hit %.*s, want %s", q, (int)d.id.len, d.id.ptr, id);
}

static void test_build_open_search_english_and_chinese(void **state) {
    fx *f = *state;
    add_docs(f);
    write_open(f);
    cv_rag_index_info info;
    cv_rag_index_info_get(f->ix, &info);
    assert_int_equal(info.n_docs, 5);
    assert_int_equal(info.n_chunks, 5);
    assert_true(fabs(info.k1 - 1.2) < 1e-12 && fabs(info.b - 0.75) < 1e-12);
    expect_top(f, "How do I compress an archive with gzip?", "tar");
    expect_top(f, "print lines matching a pattern", "grep");
    expect_top(f, "明月光是谁写的", "poem");
    expect_top(f, "静夜思", "poem"); /* title terms are indexed with every chunk */
    expect_top(f, "中文文档怎么打分", "kb");
    cv_rag_hit h[5];
    assert_int_equal(search(f, "zebra 斑马", h, 5, 0), 0);
    assert_int_equal(search(f, "", h, 5, 0), 0);
    assert_int_equal(search(f, "archive", h, 0, 0), 0);
}

static void test_bm25_matches_independent_formula(void **state) {
    fx *f = *state;
    const char *texts[] = {"apple banana", "apple apple cherry", "durian"};
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%d", i);
        assert_int_equal(cv_rag_builder_add(f->b, id, NULL, NULL, texts[i], strlen(texts[i]), NULL), CV_OK);
    }
    write_open(f);
    cv_rag_hit h[3];
    assert_int_equal(search(f, "apple", h, 3, 0), 2);
    double N = 3, df = 2, avg = 6.0 / 3, k1 = 1.2, b = 0.75;
    double idf = log(1 + (N - df + 0.5) / (df + 0.5));
    double s1 = idf * 2 * (k1 + 1) / (2 + k1 * (1 - b + b * 3 / avg)); /* d1: tf 2, len 3 */
    double s0 = idf * 1 * (k1 + 1) / (1 + k1 * (1 - b + b * 2 / avg)); /* d0: tf 1, len 2 */
    assert_int_equal(h[0].doc, 1);
    assert_int_equal(h[1].doc, 0);
    assert_true(fabs(h[0].score - s1) < 1e-5 && fabs(h[1].score - s0) < 1e-5);
    /* per-search k1/b override: b = 0 removes length normalisation */
    cv_rag_search_opts o = {1.2, 0, 0};
    size_t n;
    assert_int_equal(cv_rag_search(f->s, &o, "apple", 5, h, 3, &n, NULL), CV_OK);
    assert_true(fabs(h[1].score - idf * 2.2 / 2.2) < 1e-5);
    o.b = 2;
    cv_error e = {0};
    assert_int_equal(cv_rag_search(f->s, &o, "apple", 5, h, 3, &n, &e), CV_ERANGE);
}

static void test_chunks_cover_text_with_overlap(void **state) {
    fx *f = *state;
    cv_rag_builder_free(f->b);
    cv_rag_build_opts o = {.chunk_chars = 100, .overlap_chars = 20, .k1 = 1.2, .b = 0.75};
    assert_int_equal(cv_rag_builder_create(&o, f->an, &f->b, NULL), CV_OK);
    /* unique words (so that a chunk's position in the text is unambiguous), some CJK */
    char text[20000];
    size_t n = 0;
    int words = 300 + rand() % 300;
    for (int i = 0; i < words; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, i % 7 == 3 ? "词%04d。" : "w%04d ", i);
    assert_int_equal(cv_rag_builder_add(f->b, "long", "t", NULL, text, n, NULL), CV_OK);
    write_open(f);
    cv_rag_doc d;
    cv_rag_index_doc(f->ix, 0, &d);
    assert_true(d.n_chunks > 5);
    size_t prev_end = 0;
    for (uint32_t k = 0; k < d.n_chunks; k++) {
        cv_rag_chunk c;
        cv_rag_index_chunk(f->ix, d.first_chunk + k, &c);
        assert_int_equal(c.ordinal, k);
        size_t cps = 0;
        for (size_t i = 0; i < c.text.len; i++) cps += ((uint8_t)c.text.ptr[i] & 0xC0) != 0x80;
        assert_true(cps <= 100 && cps > 0);
        if (k + 1 < d.n_chunks) assert_true(cps >= 80); /* cut in the last fifth */
        char *hit = memmem(text, n, c.text.ptr, c.text.len);
        assert_non_null(hit);
        size_t start = (size_t)(hit - text);
        if (k == 0) assert_int_equal(start, 0);
        else assert_true(start < prev_end && start > prev_end - 40); /* overlap, no gap */
        prev_end = start + c.text.len;
    }
    assert_int_equal(prev_end, n);
    printf("seed %u: %d words, %u chunks\n", seed, words, d.n_chunks);
}

static size_t count_tokens(void *user, const char *text, size_t len) {
    size_t n = 0;
    cv_tok_encode(user, text, len, 0, NULL, 0, &n, NULL);
    return n;
}

static void test_chunks_limited_in_tokens(void **state) {
    fx *f = *state;
    char model[512];
    cv_test_data(model, sizeof model, "models/stories260K.gguf");
    cv_gguf *g = NULL;
    cv_tok *tok = NULL;
    cv_error e = {0};
    if (cv_gguf_open(model, &g, &e) || cv_tok_load(g, &tok, &e)) fail_msg("%s", e.msg);
    cv_gguf_close(g);
    cv_rag_builder_free(f->b);
    uint32_t max_tokens = 20 + (uint32_t)(rand() % 30);
    cv_rag_build_opts o = {.chunk_chars = 400, .overlap_chars = 30, .k1 = 1.2, .b = 0.75,
                           .measure = count_tokens, .measure_user = tok, .max_units = max_tokens};
    assert_int_equal(cv_rag_builder_create(&o, f->an, &f->b, NULL), CV_OK);
    char text[8000];
    size_t n = 0;
    static const char *const words[] = {"Lily", "went", "to", "the", "park", "and", "saw", "a",
                                        "big", "dog.", "小狗", "很", "开心。"};
    while (n < 6000) n += (size_t)snprintf(text + n, sizeof text - n, "%s ", words[rand() % 13]);
    assert_int_equal(cv_rag_builder_add(f->b, "story", NULL, NULL, text, n, NULL), CV_OK);
    write_open(f);
    cv_rag_doc d;
    cv_rag_index_doc(f->ix, 0, &d);
    size_t covered = 0;
    for (uint32_t k = 0; k < d.n_chunks; k++) {
        cv_rag_chunk c;
        cv_rag_index_chunk(f->ix, d.first_chunk + k, &c);
        size_t t = count_tokens(tok, c.text.ptr, c.text.len);
        if (t > max_tokens) fail_msg("chunk %u: %zu tokens > %u (seed %u)", k, t, max_tokens, seed);
        covered += c.text.len;
    }
    assert_true(covered >= n); /* overlapping chunks cover the whole text */
    assert_true(d.n_chunks > n / 400);
    o.max_units = 4;
    cv_rag_builder *b2 = NULL;
    assert_int_equal(cv_rag_builder_create(&o, f->an, &b2, &e), CV_ERANGE);
    cv_tok_free(tok);
}

static void test_replace_copy_and_invalid_utf8(void **state) {
    fx *f = *state;
    add_docs(f);
    const char *newer = "grep was replaced: ripgrep is faster \xff\xfe here";
    assert_int_equal(cv_rag_builder_add(f->b, "grep", "grep v2", "http://g", newer, strlen(newer), NULL), CV_OK);
    assert_int_equal(cv_rag_builder_n_docs(f->b), 5);
    cv_error e = {0};
    assert_int_equal(cv_rag_builder_add(f->b, "", NULL, NULL, "x", 1, &e), CV_EINVAL);
    assert_int_equal(cv_rag_builder_add(f->b, "bad\xff", NULL, NULL, "x", 1, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "UTF-8"));
    write_open(f);
    cv_rag_hit h[5];
    assert_int_equal(search(f, "matching lines", h, 5, 0), 0);
    expect_top(f, "ripgrep", "grep");
    search(f, "ripgrep", h, 1, 0);
    cv_rag_chunk c;
    cv_rag_index_chunk(f->ix, h[0].chunk, &c);
    assert_non_null(memmem(c.text.ptr, c.text.len, "\xEF\xBF\xBD\xEF\xBF\xBD here", 11));

    /* a copy through a new builder gives the same index contents and answers */
    cv_rag_builder *b2 = NULL;
    char p2[160];
    snprintf(p2, sizeof p2, "%s/copy.idx", dir);
    assert_int_equal(cv_rag_builder_create(NULL, cv_rag_index_analyzer(f->ix), &b2, NULL), CV_OK);
    assert_int_equal(cv_rag_index_copy_into(f->ix, b2, NULL), CV_OK);
    const char *extra = "brand new document about volcanoes";
    assert_int_equal(cv_rag_builder_add(b2, "new", NULL, NULL, extra, strlen(extra), NULL), CV_OK);
    assert_int_equal(cv_rag_builder_write(b2, p2, NULL), CV_OK);
    cv_rag_builder_free(b2);
    cv_rag_index *ix2 = NULL;
    assert_int_equal(cv_rag_index_open(p2, CV_RAG_VERIFY_CRC, &ix2, NULL), CV_OK);
    cv_rag_index_info i1, i2;
    cv_rag_index_info_get(f->ix, &i1);
    cv_rag_index_info_get(ix2, &i2);
    assert_int_equal(i2.n_docs, i1.n_docs + 1);
    assert_int_equal(i2.n_chunks, i1.n_chunks + 1);
    cv_rag_doc d;
    cv_rag_index_doc(ix2, 4, &d); /* the replacement went to the end */
    assert_int_equal(d.url.len, 8);
    assert_memory_equal(d.url.ptr, "http://g", 8);
    cv_rag_index_close(ix2);
    unlink(p2);
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *d = malloc(*n);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, *n, fp), *n);
    fclose(fp);
    return d;
}

static void try_open_and_search(const unsigned char *d, size_t n, unsigned flags, int *opened) {
    cv_rag_index *ix = NULL;
    cv_error e = {0};
    cv_status st = cv_rag_index_open_mem(d, n, flags, &ix, &e);
    if (st) {
        assert_true(st == CV_EFORMAT || st == CV_EUNSUPPORTED);
        assert_true(strlen(e.msg) > 0);
        return;
    }
    (*opened)++;
    cv_rag_searcher *s = NULL;
    assert_int_equal(cv_rag_searcher_create(ix, &s, NULL), CV_OK);
    cv_rag_hit h[4];
    size_t k;
    assert_int_equal(cv_rag_search(s, NULL, "archive 明月 grep apple", 24, h, 4, &k, NULL), CV_OK);
    cv_rag_searcher_free(s);
    cv_rag_index_close(ix);
}

static void test_hostile_files_are_errors_not_crashes(void **state) {
    fx *f = *state;
    add_docs(f);
    write_open(f);
    size_t n;
    unsigned char *orig = read_all(f->path, &n), *d = malloc(n);
    assert_non_null(d);
    int opened = 0;
    try_open_and_search(orig, n, CV_RAG_VERIFY_CRC, &opened);
    assert_int_equal(opened, 1);
    for (size_t len = 0; len < n; len += 1 + len / 8) { /* truncations */
        opened = 0;
        try_open_and_search(orig, len, 0, &opened);
        assert_int_equal(opened, 0);
    }
    int crc_caught = 0, flips = 3000;
    for (int r = 0; r < flips; r++) { /* random corruption, mostly in the structures */
        memcpy(d, orig, n);
        int m = 1 + rand() % 4;
        for (int k = 0; k < m; k++) {
            size_t at = rand() % 2 ? (size_t)rand() % (n < 512 ? n : 512) : (size_t)rand() % n;
            d[at] = rand() % 3 ? (unsigned char)(rand() % 256) : (unsigned char)(d[at] ^ 0x80);
        }
        if (memcmp(d, orig, n) == 0) continue;
        opened = 0;
        try_open_and_search(d, n, 0, &opened);
        int opened_crc = 0;
        try_open_and_search(d, n, CV_RAG_VERIFY_CRC, &opened_crc);
        crc_caught += opened && !opened_crc;
    }
    /* a change inside chunk text passes the structural checks, but not the CRC */
    memcpy(d, orig, n);
    unsigned char *t = memmem(d, n, "single archive", 14);
    assert_non_null(t);
    t[rand() % 14] ^= 0x20;
    opened = 0;
    try_open_and_search(d, n, 0, &opened);
    assert_int_equal(opened, 1);
    opened = 0;
    try_open_and_search(d, n, CV_RAG_VERIFY_CRC, &opened);
    assert_int_equal(opened, 0);

    cv_error e = {0};
    cv_rag_index *ix = NULL;
    memcpy(d, orig, n);
    d[0] = 'X';
    assert_int_equal(cv_rag_index_open_mem(d, n, 0, &ix, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "magic"));
    memcpy(d, orig, n);
    d[8] = 9;
    assert_int_equal(cv_rag_index_open_mem(d, n, 0, &ix, &e), CV_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "version 9"));
    assert_int_equal(cv_rag_index_open("/nonexistent/kb.idx", 0, &ix, &e), CV_ENOTFOUND);
    printf("seed %u: %d flips, %d opened without CRC but caught by CRC\n", seed, flips, crc_caught);
    free(orig);
    free(d);
}

int main(void) {
    seed = (unsigned)time(NULL);
    printf("test_rag_index seed %u\n", seed);
    srand(seed);
    if (cv_test_tmpdir(dir, sizeof dir, "rag")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_build_open_search_english_and_chinese, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bm25_matches_independent_formula, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunks_cover_text_with_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunks_limited_in_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_copy_and_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_files_are_errors_not_crashes, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
