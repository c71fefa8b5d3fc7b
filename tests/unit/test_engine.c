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

static cv_slot_options options(int max_running, int max_waiting, int batch, size_t kv_bytes, int block) {
    cv_slot_options so = {.threads = 2};
    cv_engine_config_default(&so.engine);
    so.engine.max_running = max_running;
    so.engine.max_waiting = max_waiting;
    so.engine.max_batch_tokens = batch;
    so.engine.kv_bytes = kv_bytes;
    so.engine.kv_block_tokens = block;
    return so;
}

static cv_slot *load_opts(const char *path, const cv_slot_options *so) {
    cv_slot *s = NULL;
    cv_error err = {0};
    if (cv_slot_load(path, NULL, so, NULL, &s, &err) != CV_OK) fail_msg("load: %s", err.msg);
    return s;
}

static cv_slot *load_file(const char *path, int max_running, int max_waiting, int batch, size_t kv_bytes,
                          int block) {
    cv_slot_options so = options(max_running, max_waiting, batch, kv_bytes, block);
    return load_opts(path, &so);
}

static cv_slot *load(int max_running, int max_waiting, int batch, size_t kv_bytes) {
    return load_file(model_path(), max_running, max_waiting, batch, kv_bytes, 4);
}

static const char *prompts[] = {"Once upon a time", "The little dog", "Lily and Ben",
                                "One day, a bird", "Tom had a red ball", "The sun was"};
#define N_PROMPTS (int)(sizeof prompts / sizeof prompts[0])

/* sampling NULL: greedy. */
static void submit_sampled(cv_slot *s, const char *prompt, int n, const cv_sampler_params *sampling, result *r,
                           uint64_t *id) {
    int32_t ids[128];
    size_t n_ids;
    cv_error err = {0};
    assert_int_equal(cv_tok_encode(s->tok, prompt, strlen(prompt), CV_TOK_ADD_SPECIAL, ids, 128, &n_ids, &err), CV_OK);
    cv_engine_request req = {.prompt = ids, .n_prompt = (int32_t)n_ids, .max_tokens = n, .ignore_eos = 1};
    if (sampling) req.sampling = *sampling;
    else cv_sampler_params_off(&req.sampling);
    cv_engine_sink sink = {on_chunk, on_final, r};
    if (cv_engine_submit(s->engine, &req, &sink, id, &err) != CV_OK) fail_msg("submit: %s", err.msg);
}

static void submit(cv_slot *s, const char *prompt, int n, result *r, uint64_t *id) {
    submit_sampled(s, prompt, n, NULL, r, id);
}

/* Greedy outputs of each of the n_p prompts run alone, one at a time. */
static void reference_of(cv_slot *s, const char *const *p, int n_p, int n, result *ref) {
    for (int i = 0; i < n_p; i++) {
        result_init(&ref[i]);
        submit(s, p[i], n, &ref[i], NULL);
        result_wait(&ref[i]);
        assert_int_equal(ref[i].n_ids, n);
    }
}

/* All prompts `copies` times at once: every output must be its reference's. */
static void check_equals_of(cv_slot *batched, const char *const *p, int n_p, const result *ref, int n,
                            int copies) {
    result *r = calloc((size_t)(n_p * copies), sizeof *r);
    for (int i = 0; i < n_p * copies; i++) {
        result_init(&r[i]);
        submit(batched, p[i % n_p], n, &r[i], NULL);
    }
    for (int i = 0; i < n_p * copies; i++) {
        result_wait(&r[i]);
        assert_int_equal(r[i].final.reason, CV_FINISH_LENGTH);
        assert_int_equal(r[i].n_ids, n);
        assert_memory_equal(r[i].ids, ref[i % n_p].ids, sizeof(int32_t) * (size_t)n);
        assert_int_equal(r[i].text_len, ref[i % n_p].text_len);
    }
    free(r);
}

static void reference(cv_slot *s, int n, result *ref) { reference_of(s, prompts, N_PROMPTS, n, ref); }

static void check_batched_equals(cv_slot *batched, const result *ref, int n, int copies) {
    check_equals_of(batched, prompts, N_PROMPTS, ref, n, copies);
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

/* ---- prefix caching ---- */

#define PREFIX "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends."
static const char *const shared[] = {PREFIX " One day,", PREFIX " Lily saw a big dog", PREFIX " She had a red ball",
                                     PREFIX " The sun was hot and", PREFIX " Her mom said", PREFIX " They ran to"};
#define N_SHARED (int)(sizeof shared / sizeof shared[0])
#define GEN 60
/* stories260K's KV per position: K+V x 5 layers x 4 kv heads x head dim 8 x f16 */
#define BLOCK_BYTES (4 * 2 * 5 * 4 * 8 * 2)

static const char *const stories[] = {"models/stories260K.gguf", "models/stories260K-Q8_0-mixed.gguf",
                                      "models/stories260K-Q4_0-mixed.gguf"};

static cv_slot *load_cached(const char *path, int prefix_cache, int max_running, int batch, size_t kv_bytes, int tp) {
    cv_slot_options so = options(max_running, 64, batch, kv_bytes, 4);
    so.engine.prefix_cache = prefix_cache;
    so.tp = tp;
    return load_opts(path, &so);
}

static cv_engine_stats stats_of(cv_slot *s) {
    cv_engine_stats st;
    cv_engine_get_stats(s->engine, &st);
    return st;
}

/* The shared-prefix prompts' greedy tokens, one at a time without the cache. */
static void shared_reference(const char *path, result *ref) {
    cv_slot *solo = load_cached(path, 0, 1, 512, 0, 1);
    reference_of(solo, shared, N_SHARED, GEN, ref);
    cv_engine_stats st = stats_of(solo);
    assert_false(st.prefix_cache);
    assert_true(st.prefix_queries >= (uint64_t)(N_SHARED * 40)); /* counted, all missed */
    assert_int_equal(st.prefix_hits, 0);
    cv_slot_free(solo);
}

/* One prompt alone; returns the prefix-cache hits its admission added. */
static uint64_t run_alone(cv_slot *s, const char *prompt, const result *want) {
    const uint64_t before = stats_of(s).prefix_hits;
    result r;
    result_init(&r);
    submit(s, prompt, GEN, &r, NULL);
    result_wait(&r);
    assert_int_equal(r.n_ids, GEN);
    assert_memory_equal(r.ids, want->ids, sizeof(int32_t) * GEN);
    return stats_of(s).prefix_hits - before;
}

/* body(path, name, its shared-prefix references) for each stories260K file. */
static void each_stories_file(void (*body)(const char *path, const char *name, const result *ref)) {
    for (size_t f = 0; f < sizeof stories / sizeof stories[0]; f++) {
        char path[1024];
        cv_test_data(path, sizeof path, stories[f]);
        result ref[N_SHARED];
        shared_reference(path, ref);
        body(path, stories[f], ref);
    }
}

/* Greedy tokens with the cache are those without, for each stories260K file: a second
 * sequence maps the blocks that a running one published (both then run on them), an
 * identical prompt maps every whole block but the one with its last token, and many
 * sequences sharing the prefix in 4 slots, their prompts in chunks of 16 rows, on one
 * rank and on two (tensor parallel: the ranks share one set of tables). */
static void prefix_cache_keeps_greedy_tokens(const char *path, const char *name, const result *ref) {
    cv_slot *s = load_cached(path, 1, 4, 16, 0, 1);
    assert_true(stats_of(s).prefix_cache);
    result r1, r2;
    result_init(&r1);
    result_init(&r2);
    r1.chunk_delay_us = 2000; /* >= 120 ms for its 60 tokens: still running below */
    submit(s, shared[1], GEN, &r1, NULL);
    pthread_mutex_lock(&r1.mu);
    while (r1.n_ids < 1) pthread_cond_wait(&r1.cv, &r1.mu);
    pthread_mutex_unlock(&r1.mu);
    assert_int_equal(stats_of(s).prefix_hits, 0);
    submit(s, shared[2], GEN, &r2, NULL);
    pthread_mutex_lock(&r2.mu);
    while (r2.n_ids < 1) pthread_cond_wait(&r2.cv, &r2.mu);
    pthread_mutex_unlock(&r2.mu);
    pthread_mutex_lock(&r1.mu);
    assert_false(r1.done);
    pthread_mutex_unlock(&r1.mu);
    result_wait(&r1);
    result_wait(&r2);
    assert_memory_equal(r1.ids, ref[1].ids, sizeof(int32_t) * GEN);
    assert_memory_equal(r2.ids, ref[2].ids, sizeof(int32_t) * GEN);
    cv_engine_stats st = stats_of(s);
    printf("%s: the second of two running sequences found %llu of %llu tokens cached\n", name,
           (unsigned long long)st.prefix_hits, (unsigned long long)st.prefix_queries);
    assert_true(st.prefix_hits >= 32); /* the prefix is 40 tokens: 8 whole blocks at least */
    run_alone(s, shared[0], &ref[0]);
    const int32_t n0 = ref[0].final.prompt_tokens;
    assert_int_equal(run_alone(s, shared[0], &ref[0]), (n0 - 1) / 4 * 4);
    check_equals_of(s, shared, N_SHARED, ref, GEN, 2);
    assert_int_equal(stats_of(s).kv_blocks_used, 0);
    cv_slot_free(s);
    s = load_cached(path, 1, 4, 16, 0, 2);
    check_equals_of(s, shared, N_SHARED, ref, GEN, 2);
    assert_true(stats_of(s).prefix_hits >= 32 * (2 * N_SHARED - 4));
    cv_slot_free(s);
}

static void test_prefix_cache_keeps_greedy_tokens(void **state) {
    (void)state;
    each_stories_file(prefix_cache_keeps_greedy_tokens);
}

/* A cache of exactly one context (32 blocks of 4): a prefix's cached blocks are all
 * evicted by a sequence that needs every block, then recomputed with the same tokens,
 * then found again. */
static void prefix_cache_evicts_and_recomputes(const char *path, const char *name, const result *ref) {
    const int32_t n0 = ref[0].final.prompt_tokens;
    cv_slot *s = load_cached(path, 1, 1, 64, 32 * BLOCK_BYTES, 1);
    assert_int_equal(stats_of(s).kv_blocks_total, 32);
    assert_int_equal(run_alone(s, shared[0], &ref[0]), 0);
    cv_engine_stats st = stats_of(s);
    assert_true(st.prefix_blocks >= (n0 + GEN - 1) / 4 - 1);
    assert_int_equal(st.prefix_evictions, 0);
    result fill;
    result_init(&fill);
    submit(s, "The little dog", 200, &fill, NULL); /* runs to the context's end: 128 positions */
    result_wait(&fill);
    assert_int_equal(fill.final.prompt_tokens + fill.final.completion_tokens, 128);
    cv_engine_stats after = stats_of(s);
    printf("%s: %d cached blocks, %llu evicted by a sequence of the whole context\n", name, st.prefix_blocks,
           (unsigned long long)after.prefix_evictions);
    assert_true(after.prefix_evictions >= (uint64_t)st.prefix_blocks);
    assert_int_equal(run_alone(s, shared[0], &ref[0]), 0); /* nothing left: recomputed */
    assert_int_equal(run_alone(s, shared[0], &ref[0]), (n0 - 1) / 4 * 4);
    cv_slot_free(s);
}

static void test_prefix_cache_evicts_and_recomputes(void **state) {
    (void)state;
    each_stories_file(prefix_cache_evicts_and_recomputes);
}

/* 12 sequences sharing the prefix in room for 60 blocks (about two of them): blocks
 * run out, and the youngest, whose prefix blocks the oldest holds too, is preempted
 * and later recomputed from what is still cached. The tokens must not change. */
static void prefix_cache_preempts_shared_sequences(const char *path, const char *name, const result *ref) {
    cv_slot *s = load_cached(path, 1, 12, 64, 60 * BLOCK_BYTES, 1);
    check_equals_of(s, shared, N_SHARED, ref, GEN, 2);
    cv_engine_stats st = stats_of(s);
    printf("%s, 12 sequences in 60 blocks: %llu preemptions, %llu of %llu tokens cached, %llu evictions\n",
           name, (unsigned long long)st.preemptions, (unsigned long long)st.prefix_hits,
           (unsigned long long)st.prefix_queries, (unsigned long long)st.prefix_evictions);
    assert_true(st.preemptions > 0);
    assert_true(st.prefix_hits >= 32 * 11);
    assert_int_equal(st.kv_blocks_used, 0);
    cv_slot_free(s);
}

static void test_prefix_cache_preempts_shared_sequences(void **state) {
    (void)state;
    each_stories_file(prefix_cache_preempts_shared_sequences);
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

/* The synthetic Gemma 3 (window 8, blocks of 16): with sliding-window rings the cache
 * keeps no prefixes (asked for, it stays off); with every position kept
 * (kv_swa_full_cache) it shares them, and the sliding layers' window masks then read
 * shared blocks. The tokens are those of the model alone without the cache. */
static void test_prefix_cache_with_sliding_window_layers(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/gemma3-prefix.gguf", g_dir);
    cv_synth_opts o = {.recipe = CV_QRECIPE_F32, .seed = 5, .n_threads = 1};
    cv_error err = {0};
    if (cv_synth_write(cv_synth_find("tp-gemma3"), &o, path, &err)) fail_msg("%s", err.msg);
    enum { N = 100 };
    cv_slot_options so = options(1, 64, 512, 0, 16);
    so.engine.prefix_cache = 0;
    cv_slot *s = load_opts(path, &so);
    result ref[N_SHARED];
    reference_of(s, shared, N_SHARED, N, ref);
    cv_slot_free(s);
    so = options(12, 64, 25, 0, 16);
    s = load_opts(path, &so);
    assert_false(stats_of(s).prefix_cache); /* rings: off */
    check_equals_of(s, shared, N_SHARED, ref, N, 1);
    cv_slot_free(s);
    so = options(4, 64, 25, 0, 16);
    so.engine.kv_swa_full_cache = 1;
    s = load_opts(path, &so);
    assert_true(stats_of(s).prefix_cache);
    check_equals_of(s, shared, N_SHARED, ref, N, 2);
    cv_engine_stats st = stats_of(s);
    printf("gemma3 synthetic, every position kept: %llu of %llu tokens cached\n",
           (unsigned long long)st.prefix_hits, (unsigned long long)st.prefix_queries);
    assert_true(st.prefix_hits >= 16 * (2 * N_SHARED - 4));
    cv_slot_free(s);
}

/* ---- speculative decoding ---- */

/* stories260K (blocks of 4, batches of 64) with speculation on or off, speculating
 * with up to max_running sequences, prompt lookup from suffixes of at least `ngram`
 * tokens, and `draft` (NULL: none) as the draft model. */
static cv_slot *load_spec(const char *path, int spec, int max_running, size_t kv_bytes, int ngram, const char *draft) {
    cv_slot_options so = options(max_running, 64, 64, kv_bytes, 4);
    so.engine.spec = spec;
    so.engine.spec_max_batch = max_running;
    so.engine.spec_ngram = ngram;
    if (draft) snprintf(so.draft_model, sizeof so.draft_model, "%s", draft);
    return load_opts(path, &so);
}

static void spec_report(cv_slot *s, const char *what, cv_spec_drafter d) {
    cv_engine_stats st = stats_of(s);
    printf("%s: %llu of %llu drafted tokens accepted (%s), %llu steps for %llu tokens, %llu preemptions\n", what,
           (unsigned long long)st.spec_accepted[d], (unsigned long long)st.spec_drafted[d], cv_spec_drafter_name(d),
           (unsigned long long)st.steps, (unsigned long long)st.tokens_generated,
           (unsigned long long)st.preemptions);
    assert_true(st.spec_accepted[d] > 0);
    assert_true(st.spec_accepted[d] <= st.spec_drafted[d]);
    assert_int_equal(st.kv_blocks_used, 0);
}

/* Greedy tokens with speculation are the tokens without it: one stream at a time,
 * six concurrent streams, twelve that preempt each other, and with a draft model (the
 * same file, prompt lookup asking for 8-token matches so that the model drafts). */
static void test_speculation_keeps_greedy_tokens(void **state) {
    (void)state;
    enum { N = 100 };
    cv_slot *off = load_spec(model_path(), 0, 1, 0, 2, NULL);
    result ref[N_PROMPTS];
    reference(off, N, ref);
    cv_engine_stats st = stats_of(off);
    assert_int_equal(st.spec_drafted[CV_SPEC_LOOKUP] + st.spec_drafted[CV_SPEC_DRAFT_MODEL], 0);
    cv_slot_free(off);

    cv_slot *s = load_spec(model_path(), 1, 1, 0, 2, NULL);
    check_batched_equals(s, ref, N, 1);
    spec_report(s, "lookup, one stream", CV_SPEC_LOOKUP);
    assert_true(stats_of(s).steps < (uint64_t)(N_PROMPTS * N)); /* fewer steps than tokens */
    cv_slot_free(s);

    s = load_spec(model_path(), 1, N_PROMPTS, 0, 2, NULL);
    check_batched_equals(s, ref, N, 1);
    spec_report(s, "lookup, six streams", CV_SPEC_LOOKUP);
    cv_slot_free(s);

    size_t per_token = 2 * 5 * 4 * 8 * 2; /* as test_preemption_recomputes_the_same_tokens */
    s = load_spec(model_path(), 1, 12, per_token * 128 * 5 / 2, 2, NULL);
    check_batched_equals(s, ref, N, 2);
    spec_report(s, "lookup, twelve streams in 80 blocks", CV_SPEC_LOOKUP);
    assert_true(stats_of(s).preemptions > 0);
    cv_slot_free(s);

    s = load_spec(model_path(), 1, 2, 0, 8, model_path());
    check_batched_equals(s, ref, N, 1);
    spec_report(s, "draft model, two streams", CV_SPEC_DRAFT_MODEL);
    cv_slot_free(s);
}

/* Gemma 3 synthetic with a window of 8 and blocks of 16, batches of 25: each sliding
 * layer's ring (2 blocks) wraps while drafts are written into it and rolled back, with
 * single-token lookup matches so that most steps draft. Greedy tokens unchanged. */
static void test_speculation_with_sliding_window_rings(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/gemma3-spec.gguf", g_dir);
    cv_synth_opts o = {.recipe = CV_QRECIPE_F32, .seed = 5, .n_threads = 1};
    cv_error err = {0};
    if (cv_synth_write(cv_synth_find("tp-gemma3"), &o, path, &err)) fail_msg("%s", err.msg);
    enum { N = 200 };
    cv_slot_options so = options(4, 64, 25, 0, 16);
    so.engine.spec = 0;
    cv_slot *off = load_opts(path, &so);
    result ref[N_PROMPTS];
    reference(off, N, ref);
    cv_slot_free(off);
    so.engine.spec = 1;
    so.engine.spec_ngram = 1;
    cv_slot *on = load_opts(path, &so);
    check_batched_equals(on, ref, N, 1);
    spec_report(on, "gemma3 synthetic, window 8", CV_SPEC_LOOKUP);
    cv_slot_free(on);
}

/* Sampled tokens: with prompt lookup, the same seed gives the same tokens run after run
 * (lookup's draft sizes for sampled sequences do not depend on timing: engine.h). Not
 * necessarily those of the run without speculation: the draw is the ordinary one
 * (sampler.h), but rows verified in one batch may get other last bits in their logits
 * than single rows (F32 paths). With the model as its own draft, q equals p and at
 * least 90% of drafted tokens are kept. (The rejection rule's distribution is tested
 * statistically in test_sampler.) */
static void test_speculation_sampled(void **state) {
    (void)state;
    enum { N = 80 };
    cv_sampler_params sp;
    cv_sampler_params_default(&sp);
    sp.seed = 7;
    result r[N_PROMPTS], again[N_PROMPTS];
    cv_slot *on = load_spec(model_path(), 1, 1, 0, 2, NULL);
    for (int i = 0; i < N_PROMPTS; i++) {
        result_init(&r[i]);
        result_init(&again[i]);
        submit_sampled(on, prompts[i], N, &sp, &r[i], NULL);
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        result_wait(&r[i]);
        submit_sampled(on, prompts[i], N, &sp, &again[i], NULL);
    }
    for (int i = 0; i < N_PROMPTS; i++) {
        result_wait(&again[i]);
        assert_int_equal(r[i].n_ids, N);
        assert_memory_equal(again[i].ids, r[i].ids, sizeof(int32_t) * N);
    }
    spec_report(on, "lookup, sampled", CV_SPEC_LOOKUP);
    cv_slot_free(on);

    cv_slot *self = load_spec(model_path(), 1, 1, 0, 8, model_path());
    for (int i = 0; i < N_PROMPTS; i++) {
        result_init(&r[i]);
        submit_sampled(self, prompts[i], N, &sp, &r[i], NULL);
    }
    for (int i = 0; i < N_PROMPTS; i++) result_wait(&r[i]);
    spec_report(self, "draft model = model, sampled", CV_SPEC_DRAFT_MODEL);
    cv_engine_stats st = stats_of(self);
    assert_true(st.spec_accepted[CV_SPEC_DRAFT_MODEL] * 10 >= st.spec_drafted[CV_SPEC_DRAFT_MODEL] * 9);
    cv_slot_free(self);
}

/* A draft model with another vocabulary is refused at load, naming the first token
 * that differs; bad speculation settings are refused with their values. */
static void test_speculation_refuses_bad_setups(void **state) {
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/gemma3-draft.gguf", g_dir);
    cv_synth_opts o = {.recipe = CV_QRECIPE_F32, .seed = 5, .n_threads = 1};
    cv_error err = {0};
    if (cv_synth_write(cv_synth_find("tp-gemma3"), &o, path, &err)) fail_msg("%s", err.msg);
    cv_slot_options so = options(1, 8, 64, 0, 4);
    snprintf(so.draft_model, sizeof so.draft_model, "%s", path);
    cv_slot *s = NULL;
    assert_int_not_equal(cv_slot_load(model_path(), NULL, &so, NULL, &s, &err), CV_OK);
    printf("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "draft model"));
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_null(s);
    so = options(1, 8, 64, 0, 4);
    so.engine.spec_max_draft = CV_ENGINE_SPEC_MAX_DRAFT + 1;
    assert_int_equal(cv_slot_load(model_path(), NULL, &so, NULL, &s, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "spec_max_draft 17"));
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
        cmocka_unit_test(test_prefix_cache_keeps_greedy_tokens),
        cmocka_unit_test(test_prefix_cache_evicts_and_recomputes),
        cmocka_unit_test(test_prefix_cache_preempts_shared_sequences),
        cmocka_unit_test(test_prefix_cache_with_sliding_window_layers),
        cmocka_unit_test(test_speculation_keeps_greedy_tokens),
        cmocka_unit_test(test_speculation_with_sliding_window_rings),
        cmocka_unit_test(test_speculation_sampled),
        cmocka_unit_test(test_speculation_refuses_bad_setups),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
