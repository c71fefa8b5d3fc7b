/* response_cache: which requests are cacheable and what their key depends on, the
 * memory LRU's byte budget and TTL, the entry decoder refusing what it must, and a
 * Redis that is down or never answers costing one deadline and a counted error.
 * The Redis paths here use real sockets (a closed port, a listener that never
 * answers); a real redis-server is exercised by tests/integration/test_response_cache.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "response_cache.h"
#include "timing.h"

#define N_VOCAB 100

static const int32_t PROMPT[] = {1, 5, 9, 12};

static cv_engine_request greedy_request(void) {
    cv_engine_request er = {.prompt = PROMPT, .n_prompt = 4, .max_tokens = 8};
    cv_sampler_params_off(&er.sampling);
    er.sampling.seed = 42;
    return er;
}

static int key_of(cv_rc *rc, const cv_rc_query *q, cv_rc_key *k) { return cv_rc_key_of(rc, q, k); }

static cv_rc *memory_cache(size_t max_bytes, unsigned ttl_s, int per_subject) {
    cv_rc *rc = NULL;
    cv_error err = {0};
    cv_rc_config cfg = {.backend = CV_RC_MEMORY, .max_bytes = max_bytes, .ttl_s = ttl_s, .per_subject = per_subject};
    assert_int_equal(cv_rc_new(&cfg, &rc, &err), CV_OK);
    assert_non_null(rc);
    return rc;
}

static void test_what_is_cacheable(void **state) {
    (void)state;
    cv_rc *rc = memory_cache(1 << 20, 0, 0);
    cv_engine_request er = greedy_request();
    cv_rc_query q = {.version = "v1", .er = &er};
    cv_rc_key a, b;
    assert_true(key_of(rc, &q, &a));
    er.sampling.seed = 7; /* greedy: the seed does not matter */
    assert_true(key_of(rc, &q, &b));
    assert_memory_equal(a.digest, b.digest, CV_RC_DIGEST);
    er.sampling.temperature = 0.8f; /* sampled with a seed the server drew: not deterministic */
    assert_false(key_of(rc, &q, &b));
    q.explicit_seed = 1;
    assert_true(key_of(rc, &q, &a));
    er.sampling.seed = 8;
    assert_true(key_of(rc, &q, &b));
    assert_memory_not_equal(a.digest, b.digest, CV_RC_DIGEST);
    er = greedy_request();
    er.sampling.logprobs = true;
    assert_false(key_of(rc, &q, &b));
    assert_false(key_of(NULL, &q, &b));
    cv_rc_free(rc);
}

/* Each field the answer depends on changes the key. */
static void test_key_fields(void **state) {
    (void)state;
    cv_rc *rc = memory_cache(1 << 20, 0, 0);
    cv_engine_request er = greedy_request();
    cv_rc_query q = {.version = "v1", .er = &er, .subject = "alice"};
    cv_rc_key base, k;
    assert_true(key_of(rc, &q, &base));
#define CHANGED(stmt, restore)                                  \
    do {                                                        \
        stmt;                                                   \
        assert_true(key_of(rc, &q, &k));                        \
        assert_memory_not_equal(base.digest, k.digest, CV_RC_DIGEST); \
        restore;                                                \
    } while (0)
    CHANGED(q.version = "v2", q.version = "v1");
    CHANGED(er.n_prompt = 3, er.n_prompt = 4);
    CHANGED(er.max_tokens = 9, er.max_tokens = 8);
    CHANGED(er.ignore_eos = 1, er.ignore_eos = 0);
    CHANGED(er.render_special = 1, er.render_special = 0);
    CHANGED(er.sampling.repeat_penalty = 1.1f, er.sampling.repeat_penalty = 1);
    CHANGED(er.sampling.top_k = 5, er.sampling.top_k = 0);
    CHANGED(q.guard_passages = 3, q.guard_passages = 0);
    /* rag_check_answers: the same guard, passages and prompt, an answer judged or not */
    q.guard_passages = 3;
    assert_true(key_of(rc, &q, &base));
    CHANGED(q.guard_check = 1, q.guard_check = 0);
    q.guard_passages = 0;
    assert_true(key_of(rc, &q, &base));
    CHANGED(er.grammar = "root ::= \"yes\" | \"no\"", er.grammar = NULL);
    er.grammar = ""; /* no grammar either way */
    assert_true(key_of(rc, &q, &k));
    assert_memory_equal(base.digest, k.digest, CV_RC_DIGEST);
    er.grammar = NULL;
    const char *stops[] = {"\n"};
    CHANGED((er.stop = stops, er.n_stop = 1), (er.stop = NULL, er.n_stop = 0));
    /* Scope shared: the subject is not part of it. */
    q.subject = "bob";
    assert_true(key_of(rc, &q, &k));
    assert_memory_equal(base.digest, k.digest, CV_RC_DIGEST);
    cv_rc_free(rc);
    rc = memory_cache(1 << 20, 0, 1);
    assert_true(key_of(rc, &q, &k));
    q.subject = "alice";
    assert_true(key_of(rc, &q, &base));
    assert_memory_not_equal(base.digest, k.digest, CV_RC_DIGEST);
    cv_rc_free(rc);
}

static void test_rag_identity(void **state) {
    (void)state;
    cv_rc *rc = memory_cache(1 << 20, 0, 0);
    cv_engine_request er = greedy_request();
    cv_rag_passage p[2] = {{.source = "kb:docs", .doc_id = "a", .text = "x", .len = 1, .kb_checksum = 7, .chunk = 3},
                           {.source = "news", .doc_id = "", .url = "https://n.test/1", .text = "y", .len = 1}};
    size_t kept[1] = {0};
    cv_rag_outcome o = {.passages = p, .n_passages = 2, .ctx = {.kept = kept, .n_kept = 1}};
    cv_rc_query q = {.version = "v1", .er = &er, .rag = &o};
    cv_rc_key a, b;
    assert_true(key_of(rc, &q, &a));
    p[0].chunk = 4;
    assert_true(key_of(rc, &q, &b));
    assert_memory_not_equal(a.digest, b.digest, CV_RC_DIGEST);
    p[0].chunk = 3;
    p[0].kb_checksum = 8; /* the knowledge base was rebuilt */
    assert_true(key_of(rc, &q, &b));
    assert_memory_not_equal(a.digest, b.digest, CV_RC_DIGEST);
    kept[0] = 1; /* a live source answered: not cached by default */
    assert_false(key_of(rc, &q, &b));
    cv_rc_free(rc);
    cv_rc_config cfg = {.backend = CV_RC_MEMORY, .max_bytes = 1 << 20, .live_sources = 1};
    cv_error err = {0};
    assert_int_equal(cv_rc_new(&cfg, &rc, &err), CV_OK);
    assert_true(key_of(rc, &q, &b));
    cv_rc_free(rc);
}

/* Stores an answer of n_chunks chunks of text under key. */
static void store(cv_rc *rc, const cv_rc_key *key, int n_chunks, cv_finish reason) {
    cv_rc_rec *r = cv_rc_rec_new(rc, key);
    assert_non_null(r);
    for (int i = 0; i < n_chunks; i++) {
        int32_t id = i % N_VOCAB;
        cv_rc_rec_chunk(r, " word", 5, &id, 1);
    }
    cv_engine_final f = {.reason = reason, .prompt_tokens = 4, .completion_tokens = n_chunks};
    cv_rc_rec_final(r, &f);
}

static int hit(cv_rc *rc, const cv_rc_key *key) {
    cv_rc_entry e;
    if (!cv_rc_lookup(rc, key, 4, N_VOCAB, &e)) return 0;
    cv_rc_entry_free(&e);
    return 1;
}

static void test_round_trip(void **state) {
    (void)state;
    cv_rc *rc = memory_cache(1 << 20, 0, 0);
    cv_rc_key k = {{1}}, other = {{2}};
    assert_false(hit(rc, &k));
    store(rc, &other, 3, CV_FINISH_CANCELLED); /* a cancelled answer is incomplete: never stored */
    assert_false(hit(rc, &other));
    cv_rc_rec *r = cv_rc_rec_new(rc, &k);
    int32_t ids[] = {3, 4};
    cv_rc_rec_chunk(r, "Hello", 5, ids, 2);
    cv_rc_rec_chunk(r, " wörld", 7, ids + 1, 1);
    cv_engine_final f = {.reason = CV_FINISH_STOP, .prompt_tokens = 4, .completion_tokens = 4, .stop_string = "\n"};
    cv_rc_rec_final(r, &f);
    cv_rc_entry e;
    assert_true(cv_rc_lookup(rc, &k, 4, N_VOCAB, &e));
    assert_int_equal(e.reason, CV_FINISH_STOP);
    assert_int_equal(e.completion_tokens, 4);
    assert_string_equal(e.stop_string, "\n");
    assert_int_equal(e.n_chunks, 2);
    assert_int_equal(e.chunks[1].len, 7);
    assert_memory_equal(e.chunks[1].text, " wörld", 7);
    assert_int_equal(e.chunks[0].n_ids, 2);
    assert_int_equal(e.chunks[0].ids[1], 4);
    cv_rc_entry_free(&e);
    /* The same key on a request with another prompt length, or a smaller vocabulary: refused. */
    assert_false(cv_rc_lookup(rc, &k, 5, N_VOCAB, &e));
    assert_false(cv_rc_lookup(rc, &k, 4, 4, &e));
    cv_rc_stats s;
    cv_rc_stats_get(rc, &s);
    assert_int_equal(s.lookups, 5);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.stores, 1);
    assert_int_equal(s.errors, 2);
    assert_int_equal(s.entries, 1);
    char *m = cv_rc_metrics(rc);
    assert_non_null(strstr(m, "corvid_response_cache_hits_total{backend=\"memory\"} 1\n"));
    free(m);
    cv_rc_free(rc);
}

static void test_lru_byte_budget(void **state) {
    (void)state;
    /* Measure one entry's cost, then allow three. */
    cv_rc *rc = memory_cache(1 << 20, 0, 0);
    cv_rc_key k[5];
    for (int i = 0; i < 5; i++) memset(k[i].digest, 'a' + i, CV_RC_DIGEST);
    store(rc, &k[0], 20, CV_FINISH_LENGTH);
    cv_rc_stats s;
    cv_rc_stats_get(rc, &s);
    size_t one = s.bytes;
    cv_rc_free(rc);
    rc = memory_cache(3 * one + one / 2, 0, 0);
    for (int i = 0; i < 3; i++) store(rc, &k[i], 20, CV_FINISH_LENGTH);
    assert_true(hit(rc, &k[0])); /* k[0] is now the most recently used: k[1] goes next */
    store(rc, &k[3], 20, CV_FINISH_LENGTH);
    assert_true(hit(rc, &k[0]));
    assert_false(hit(rc, &k[1]));
    assert_true(hit(rc, &k[2]));
    assert_true(hit(rc, &k[3]));
    cv_rc_stats_get(rc, &s);
    assert_int_equal(s.entries, 3);
    assert_true(s.bytes <= 3 * one + one / 2);
    /* An answer larger than the whole budget is not stored (and evicts nothing). */
    store(rc, &k[4], 2000, CV_FINISH_LENGTH);
    assert_false(hit(rc, &k[4]));
    cv_rc_stats_get(rc, &s);
    assert_int_equal(s.entries, 3);
    cv_rc_free(rc);
}

static void test_ttl(void **state) {
    (void)state;
    cv_rc *rc = memory_cache(1 << 20, 1, 0);
    cv_rc_key k = {{9}};
    store(rc, &k, 2, CV_FINISH_STOP);
    assert_true(hit(rc, &k));
    usleep(1100 * 1000);
    assert_false(hit(rc, &k));
    cv_rc_stats s;
    cv_rc_stats_get(rc, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    cv_rc_free(rc);
}

/* An entry as the writer makes it. */
static uint8_t *entry(const uint8_t *digest, size_t *len) {
    cv_rc_writer w = {0};
    int32_t ids[] = {1, 2, 3};
    cv_rc_writer_chunk(&w, "ab", 2, ids, 2);
    cv_rc_writer_chunk(&w, "c", 1, ids + 2, 1);
    cv_engine_final f = {.reason = CV_FINISH_LENGTH, .prompt_tokens = 4, .completion_tokens = 3};
    return cv_rc_writer_finish(&w, digest, &f, len);
}

static cv_status decode(const uint8_t *b, size_t len, const uint8_t *digest) {
    cv_rc_entry e;
    cv_error err = {0};
    cv_status st = cv_rc_entry_decode(b, len, digest, 4, N_VOCAB, &e, &err);
    if (st == CV_OK) cv_rc_entry_free(&e);
    else assert_non_null(strstr(err.msg, "response cache entry"));
    return st;
}

static void test_decoder_refuses(void **state) {
    (void)state;
    uint8_t digest[CV_RC_DIGEST] = {5}, other[CV_RC_DIGEST] = {6};
    size_t len;
    uint8_t *b = entry(digest, &len);
    assert_int_equal(decode(b, len, digest), CV_OK);
    assert_int_equal(decode(b, len, other), CV_EFORMAT);
    for (size_t n = 0; n < len; n++) assert_int_equal(decode(b, n, digest), CV_EFORMAT); /* every truncation */
    uint8_t *x = malloc(len + 1);
    memcpy(x, b, len);
    x[len] = 0;
    assert_int_equal(decode(x, len + 1, digest), CV_EFORMAT); /* a trailing byte */
    size_t chunk0 = CV_RC_HEADER_BYTES + 4; /* no stop string: the first chunk's text_len */
    struct { size_t off; uint8_t v; } bad[] = {
        {0, 'X'},                        /* magic */
        {4, 2},                          /* format */
        {8 + CV_RC_DIGEST, CV_FINISH_CANCELLED},
        {8 + CV_RC_DIGEST + 1, 5},       /* prompt tokens */
        {8 + CV_RC_DIGEST + 5, 1},       /* completion tokens below the ids' count */
        {chunk0 + 4, 0},                 /* NUL in text */
        {chunk0 + 4, 0xff},              /* not UTF-8 */
        {chunk0 + 4 + 2 + 4, N_VOCAB},   /* a token id outside the vocabulary */
        {chunk0 + 4 + 2 + 4 + 3, 0x80},  /* a negative token id */
        {chunk0, 200},                   /* text_len past the end */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(x, b, len);
        x[bad[i].off] = bad[i].v;
        assert_int_equal(decode(x, len, digest), CV_EFORMAT);
    }
    free(x);
    free(b);
}

/* A loopback port nothing listens on. */
static int closed_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &n), 0);
    close(s);
    return ntohs(a.sin_port);
}

static cv_rc *redis_cache(int port, unsigned timeout_ms) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    cv_rc_config cfg = {.backend = CV_RC_REDIS, .redis = addr, .timeout_ms = timeout_ms, .ttl_s = 60};
    cv_rc *rc = NULL;
    cv_error err = {0};
    assert_int_equal(cv_rc_new(&cfg, &rc, &err), CV_OK);
    return rc;
}

static void test_redis_down_is_a_counted_miss(void **state) {
    (void)state;
    cv_rc *rc = redis_cache(closed_port(), 200);
    cv_rc_key k = {{3}};
    assert_false(hit(rc, &k));
    store(rc, &k, 2, CV_FINISH_STOP); /* queued, fails on the writer thread */
    cv_rc_stats s;
    for (int i = 0; i < 500; i++) {
        cv_rc_stats_get(rc, &s);
        if (s.errors == 2) break;
        usleep(10 * 1000);
    }
    assert_int_equal(s.lookups, 1);
    assert_int_equal(s.errors, 2);
    assert_int_equal(s.stores, 0);
    cv_rc_free(rc);
}

/* A listener that accepts (the kernel's backlog does) and never answers: each call ends
 * at its deadline. */
static void test_redis_silent_deadline(void **state) {
    (void)state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &n), 0);
    cv_rc *rc = redis_cache(ntohs(a.sin_port), 150);
    cv_rc_key k = {{4}};
    for (int i = 0; i < 3; i++) {
        double t0 = cv_seconds();
        assert_false(hit(rc, &k));
        double dt = cv_seconds() - t0;
        assert_true(dt >= 0.14);
        assert_true(dt < 5); /* the deadline, not a hang (generous: the host is shared) */
    }
    cv_rc_stats st;
    cv_rc_stats_get(rc, &st);
    assert_int_equal(st.lookups, 3);
    assert_int_equal(st.errors, 3);
    assert_int_equal(st.hits, 0);
    cv_rc_free(rc);
    close(s);
}

static void test_config_refused(void **state) {
    (void)state;
    cv_rc_backend b;
    cv_error err = {0};
    assert_int_equal(cv_rc_backend_parse("disk", &b, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "off, memory, redis"));
    cv_rc_config cfg = {.backend = CV_RC_REDIS, .redis = "no-port", .timeout_ms = 10};
    cv_rc *rc = NULL;
    assert_int_equal(cv_rc_new(&cfg, &rc, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "HOST:PORT"));
    cfg.backend = CV_RC_OFF;
    assert_int_equal(cv_rc_new(&cfg, &rc, &err), CV_OK);
    assert_null(rc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_what_is_cacheable),
        cmocka_unit_test(test_key_fields),
        cmocka_unit_test(test_rag_identity),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_lru_byte_budget),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_decoder_refuses),
        cmocka_unit_test(test_redis_down_is_a_counted_miss),
        cmocka_unit_test(test_redis_silent_deadline),
        cmocka_unit_test(test_config_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
