/* engine: continuous batching over the real stories260K model. Greedy tokens must not
 * depend on batching, chunking or preemption; cancel must return KV blocks; limits must
 * refuse with the numbers in the message. A synthetic Gemma 3 model (window 8) checks
 * the same with sliding-window rings against a cache that keeps every position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/test_tmpdir.h"
#include "slot.h"
#include "synthetic.h"
#include "../support/test_data.h"

#define MAX_OUT 256

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t ids[MAX_OUT];
    int n_ids;
    char text[4096];
    size_t text_len;
    int done;
    cv_engine_final final;
    useconds_t chunk_delay_us; /* a slow consumer: stretches a generation so a cancel lands */
} result;

static void on_chunk(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n,
                     const cv_sample *samples) {
    (void)samples;
    result *r = ctx;
    pthread_mutex_lock(&r->mu);
    for (int32_t i = 0; i < n && r->n_ids < MAX_OUT; i++) r->ids[r->n_ids++] = ids[i];
    if (r->text_len + len < sizeof r->text) {
        memcpy(r->text + r->text_len, text, len);
        r->text_len += len;
    }
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->chunk_delay_us) usleep(r->chunk_delay_us);
}

static void on_final(void *ctx, const cv_engine_final *f) {
    result *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->final = *f;
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void result_init(result *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void result_wait(result *r) {
    pthread_mutex_lock(&r->mu);
    while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static const char *model_path(void) {
    static char path[1024];
    return cv_test_data(path, sizeof path, "models/stories260K.gguf");
}

static char g_dir[160];

static cv_slot *load_file(const char *path, int max_running, int max_waiting, int batch, size_t kv_bytes,
                          int block) {
    cv_slot_options so = {.threads = 2};
    cv_engine_config_default(&so.engine);
    so.engine.max_running = max_running;
    so.engine.max_waiting = max_waiting;
    so.engine.max_batch_tokens = batch;
    so.engine.kv_bytes = kv_bytes;
    so.engine.kv_block_tokens = block;
    cv_slot *s = NULL;
    cv_error err = {0};
    if (cv_slot_load(path, NULL, &so, NULL, &s, &err) != CV_OK) fail_msg("load: %s", err.msg);
    return s;
}

static cv_slot *load(int max_running, int max_waiting, int batch, size_t kv_bytes) {
    return load_file(model_path(), max_running, max_waiting, batch, kv_bytes, 4);
}

static const char *prompts[] = {"Once upon a time", "The little dog", "Lily and Ben",
                                "One day, a bird", "Tom had a red ball", "The sun was"};
#define N_PROMPTS (int)(sizeof prompts / sizeof prompts[0])

static void submit(cv_slot *s, const char *prompt, int n, result *r, uint64_t *id) {
    int32_t ids[64];
    size_t n_ids;
    cv_error err = {0};
    assert_int_equal(cv_tok_encode(s->tok, prompt, strlen(prompt), CV_TOK_ADD_SPECIAL, ids, 64, &n_ids, &err), CV_OK);
    cv_engine_request req = {.prompt = ids, .n_prompt = (int32_t)n_ids, .max_tokens = n, .ignore_eos = 1};
    req.sampling.top_p = 1;
    req.sampling.repeat_penalty = 1;
    cv_engine_sink sink = {on_chunk, on_final, r};
    if (cv_engine_submit(s->engine, &req, &sink, id, &err) != CV_OK) fail_msg("submit: %s", err.msg);
}

/* Greedy outputs of each prompt run alone, one at a time. */
static void reference(cv_slot *s, int n, result *ref) {
    for (int i = 0; i < N_PROMPTS; i++) {
        result_init(&ref[i]);
        submit(s, prompts[i], n, &ref[i], NULL);
        result_wait(&ref[i]);
        assert_int_equal(ref[i].n_ids, n);
    }
}

static void check_batched_equals(cv_slot *batched, const result *ref, int n, int copies) {
    result *r = calloc((size_t)(N_PROMPTS * copies), sizeof *r);
    for (int i = 0; i < N_PROMPTS * copies; i++) {
        result_init(&r[i]);
        submit(batched, prompts[i % N_PROMPTS], n, &r[i], NULL);
    }
    for (int i = 0; i < N_PROMPTS * copies; i++) {
        result_wait(&r[i]);
        assert_int_equal(r[i].final.reason, CV_FINISH_LENGTH);
        assert_int_equal(r[i].n_ids, n);
        assert_memory_equal(r[i].ids, ref[i % N_PROMPTS].ids, sizeof(int32_t) * (size_t)n);
        assert_int_equal(r[i].text_len, ref[i % N_PROMPTS].text_len);
    }
    free(r);
}

static void test_batching_does_not_change_greedy_tokens(void **state) {
    (void)state;
    cv_slot *solo = load(1, 64, 512, 0);
    result ref[N_PROMPTS];
    reference(solo, 40, ref);
    cv_slot_free(solo);
    /* 18 sequences at once, prompts cut into 7-row chunks across steps. */
    cv_slot *batched = load(18, 64, 25, 0);
    check_batched_equals(batched, ref, 40, 3);
    cv_engine_stats st;
    cv_engine_get_stats(batched->engine, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_true(st.last_batch_rows >= 1);
    cv_slot_free(batched);
}

static void test_preemption_recomputes_the_same_tokens(void **state) {
    (void)state;
    cv_slot *solo = load(1, 64, 512, 0);
    result ref[N_PROMPTS];
    reference(solo, 100, ref);
    /* Room for 2.5 full contexts (80 blocks) while 12 sequences grow to ~105 positions
     * (27 blocks each): blocks run out however the submissions interleave with steps.
     * K+V x 5 layers x 4 kv heads x head dim 8 x 2 bytes (f16) per position. */
    size_t per_token = 2 * 5 * 4 * 8 * 2;
    cv_slot_free(solo);
    cv_slot *tight = load(12, 64, 64, per_token * 128 * 5 / 2);
    check_batched_equals(tight, ref, 100, 2);
    cv_engine_stats st;
    cv_engine_get_stats(tight->engine, &st);
    assert_true(st.preemptions > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    cv_slot_free(tight);
}

static void test_cancel_returns_blocks(void **state) {
    (void)state;
    cv_slot *s = load(4, 8, 64, 0);
    result r;
    result_init(&r);
    /* 2 ms per chunk makes the 100 tokens take at least 200 ms however fast the model
     * is, so the cancel below lands mid-generation even on a loaded machine. */
    r.chunk_delay_us = 2000;
    uint64_t id;
    submit(s, "Once upon a time", 100, &r, &id);
    pthread_mutex_lock(&r.mu);
    while (r.n_ids < 3 && !r.done) pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    cv_engine_stats st;
    cv_engine_get_stats(s->engine, &st);
    assert_true(st.kv_blocks_used > 0);
    cv_engine_cancel(s->engine, id);
    result_wait(&r);
    assert_int_equal(r.final.reason, CV_FINISH_CANCELLED);
    assert_true(r.n_ids < 100);
    cv_engine_get_stats(s->engine, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.running, 0);
    cv_slot_free(s);
}

static void test_limits_are_refused_with_numbers(void **state) {
    (void)state;
    cv_slot *s = load(1, 1, 64, 0);
    cv_error err = {0};
    int32_t big[200];
    for (int i = 0; i < 200; i++) big[i] = 300;
    cv_engine_request req = {.prompt = big, .n_prompt = 200};
    req.sampling.top_p = 1;
    req.sampling.repeat_penalty = 1;
    result r[3];
    cv_engine_sink sink = {on_chunk, on_final, &r[0]};
    assert_int_equal(cv_engine_submit(s->engine, &req, &sink, NULL, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "200 tokens"));
    assert_non_null(strstr(err.msg, "holds 128"));
    req.n_prompt = 4;
    big[2] = 512;
    assert_int_equal(cv_engine_submit(s->engine, &req, &sink, NULL, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    req.sampling.top_p = 2;
    big[2] = 300;
    assert_int_equal(cv_engine_submit(s->engine, &req, &sink, NULL, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "top_p"));
    /* One running, one waiting: the third is refused. */
    req.sampling.top_p = 1;
    req.max_tokens = 120;
    req.ignore_eos = 1;
    int refused = 0;
    for (int i = 0; i < 3; i++) {
        result_init(&r[i]);
        sink.ctx = &r[i];
        if (cv_engine_submit(s->engine, &req, &sink, NULL, &err) == CV_EBUSY) {
            refused++;
            r[i].done = 1;
            assert_non_null(strstr(err.msg, "max_running 1"));
            assert_non_null(strstr(err.msg, "max_waiting 1"));
        }
    }
    assert_true(refused >= 1);
    for (int i = 0; i < 3; i++) result_wait(&r[i]);
    /* max_tokens at INT32_MAX: the context is the limit (prompt + max_tokens overflowed
     * an int32 when the sequence was sized). */
    req.max_tokens = INT32_MAX;
    result_init(&r[0]);
    sink.ctx = &r[0];
    assert_int_equal(cv_engine_submit(s->engine, &req, &sink, NULL, &err), CV_OK);
    result_wait(&r[0]);
    assert_int_equal(r[0].final.reason, CV_FINISH_LENGTH);
    assert_int_equal(r[0].final.prompt_tokens + r[0].final.completion_tokens, 128);
    cv_slot_free(s);
}

/* Gemma 3 with a window of 8 and blocks of 16: alone with batches of 512 rows the ring
 * (8 + 511 positions) would outgrow the 256-position context, so every layer keeps
 * every position; with batches of 25 rows each sequence's sliding layer keeps a ring
 * of 2 blocks that wraps 6 times in 200 tokens, while prompt chunks outgrow the window
 * and 12 sequences preempt each other. The greedy tokens must be the same. */
static void test_sliding_window_rings_keep_greedy_tokens(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/gemma3.gguf", g_dir);
    cv_synth_opts o = {.recipe = CV_QRECIPE_F32, .seed = 5, .n_threads = 1};
    cv_error err = {0};
    if (cv_synth_write(cv_synth_find("tp-gemma3"), &o, path, &err)) fail_msg("%s", err.msg);
    enum { N = 200 };
    cv_slot *solo = load_file(path, 1, 64, 512, 0, 16);
    result ref[N_PROMPTS];
    reference(solo, N, ref);
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= ref[0].ids[j] == ref[0].ids[i];
        distinct += !seen;
    }
    printf("gemma3 synthetic: %d distinct tokens in the first reference's %d\n", distinct, N);
    cv_engine_stats st;
    cv_engine_get_stats(solo->engine, &st);
    assert_int_equal(st.kv_blocks_total, 16); /* no ring: one group, 256 positions */
    cv_slot_free(solo);
    /* A memory block holds 16 positions of one layer (the sliding and the global layer
     * draw from the same ones): 4 kv heads x 32 dims x K+V x f16 each. 48 of them hold
     * three sequences of 200 positions (13 global blocks and a ring of 2 each). */
    const size_t per_block = 16 * 2 * 4 * 32 * 2;
    cv_slot *tight = load_file(path, 12, 64, 25, 48 * per_block, 16);
    cv_engine_get_stats(tight->engine, &st);
    assert_int_equal(st.kv_blocks_total, 48); /* without rings: 24 blocks of both layers */
    check_batched_equals(tight, ref, N, 2);
    cv_engine_get_stats(tight->engine, &st);
    printf("gemma3 synthetic, 12 sequences in 48 blocks: %llu preemptions\n", (unsigned long long)st.preemptions);
    assert_true(st.preemptions > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    cv_slot_free(tight);
    /* Too small for one whole sequence (16 global blocks and a ring of 2): refused. */
    cv_slot_options so = {.threads = 2};
    cv_engine_config_default(&so.engine);
    so.engine.max_batch_tokens = 25;
    so.engine.kv_block_tokens = 16;
    so.engine.kv_bytes = 17 * per_block;
    cv_slot *s = NULL;
    assert_int_equal(cv_slot_load(path, NULL, &so, NULL, &s, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "one sequence of 256 positions needs 18 blocks"));
}

static int setup(void **state) {
    (void)state;
    return cv_test_tmpdir(g_dir, sizeof g_dir, "test-engine");
}

static int teardown(void **state) {
    (void)state;
    return cv_test_rmtree(g_dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batching_does_not_change_greedy_tokens),
        cmocka_unit_test(test_preemption_recomputes_the_same_tokens),
        cmocka_unit_test(test_cancel_returns_blocks),
        cmocka_unit_test(test_limits_are_refused_with_numbers),
        cmocka_unit_test(test_sliding_window_rings_keep_greedy_tokens),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
