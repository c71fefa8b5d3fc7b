/* model with a sliding-window ring (kv_cache.h): Gemma 3's local layers keep only a
 * ring of blocks per sequence. On a synthetic Gemma 3 model (window 8, one sliding and
 * one global layer, blocks of 16) the logits must be bit-identical to those of the
 * cache that keeps every position, through random batches of several sequences whose
 * prefill chunks (up to 24 rows) are longer than the window, rings that wrap many
 * times, and sequences released and recomputed (what preemption does); tp 2 with rings
 * must match tp 1 within test_tp's tolerance. A long sequence must hold fewer bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"
#include "../support/test_tp_run.h"
#include "gguf.h"
#include "kv_cache.h"
#include "synthetic.h"
#include "tp.h"

enum { MAX_ROWS = 24, N_SEQ = 3, CTX = 256, WINDOW = 8, BLOCK = 16 };

static char g_dir[160];
static char g_model[256];
static uint64_t g_seed;

typedef cv_test_run run;
typedef cv_test_rows batch;

/* ring: the model's own kv config (a ring for the sliding layer); else every position. */
static void open_run(int tp, int ring, run *r) {
    memset(r, 0, sizeof *r);
    cv_error e = {0};
    cv_tp_config tc = {.device = CV_DEVICE_CPU, .tp = tp, .threads = 2};
    cv_model_opts mo = {.max_batch = MAX_ROWS, .max_logits = MAX_ROWS};
    if (cv_gguf_open(g_model, &r->g, &e) || cv_tp_load(&tc, r->g, &mo, &r->tp, &e)) fail_msg("%s", e.msg);
    assert_int_equal(cv_model_hparams(cv_tp_model(r->tp))->sliding_window, WINDOW);
    cv_kv_config kc = cv_tp_kv_config(r->tp, CTX, N_SEQ, CV_TYPE_F16);
    if (!ring) {
        kc.window = 0;
        kc.n_blocks = cv_kv_blocks_for(&kc, CTX) * N_SEQ;
    }
    /* (window 8 + 24 rows - 1) positions: 2 blocks of 16, wrapping 8 times in 256. */
    assert_int_equal(cv_kv_ring_blocks(&kc), ring ? 2 : 0);
    if (cv_kv_create(&kc, &r->kv, &e)) fail_msg("%s", e.msg);
    assert_int_equal(cv_kv_layer_group(r->kv, 0), ring ? CV_KV_SLIDING : CV_KV_FULL);
    assert_int_equal(cv_kv_layer_group(r->kv, 1), CV_KV_FULL);
}

/* Random steps over N_SEQ sequences until each has CTX positions: every step gives
 * each sequence a chunk of 0..MAX_ROWS rows within the batch's MAX_ROWS; now and then
 * a sequence is released in every run and fed again from position 0. Calls `step`
 * with each batch, which compares the runs. */
typedef void (*step_fn)(run *runs, int n_runs, const batch *b, float **logits, int32_t n_vocab);

static void drive(run *runs, int n_runs, step_fn step) {
    const int32_t n_vocab = cv_model_hparams(cv_tp_model(runs[0].tp))->n_vocab;
    cv_test_rng rng = cv_test_rng_new(g_seed);
    int32_t tokens[N_SEQ][CTX], len[N_SEQ] = {0};
    for (int32_t q = 0; q < N_SEQ; q++)
        for (int32_t p = 0; p < CTX; p++) tokens[q][p] = (int32_t)(cv_test_rng_next(&rng) % (uint64_t)n_vocab);
    float *logits[4];
    for (int i = 0; i < n_runs; i++) assert_non_null(logits[i] = malloc(sizeof(float) * MAX_ROWS * (size_t)n_vocab));
    int recomputed = 0;
    for (int steps = 0;; steps++) {
        batch b = {0};
        for (int32_t q = 0; q < N_SEQ; q++) {
            int32_t room = MAX_ROWS - b.n, left = CTX - len[q];
            int32_t k = (int32_t)(cv_test_rng_next(&rng) % (uint64_t)(room + 1));
            if (k > left) k = left;
            for (int32_t i = 0; i < k; i++, b.n++) {
                b.seq[b.n] = q;
                b.pos[b.n] = len[q];
                b.tok[b.n] = tokens[q][len[q]++];
            }
        }
        if (b.n) step(runs, n_runs, &b, logits, n_vocab);
        if (len[0] == CTX && len[1] == CTX && len[2] == CTX) break;
        /* Preemption: a sequence past a few rings' worth loses its blocks, starts over. */
        int32_t victim = (int32_t)(cv_test_rng_next(&rng) % N_SEQ);
        if (recomputed < 3 && len[victim] > 3 * 2 * BLOCK && cv_test_rng_next(&rng) % 8 == 0) {
            for (int i = 0; i < n_runs; i++) cv_kv_release(runs[i].kv, victim);
            len[victim] = 0;
            recomputed++;
        }
        assert_true(steps < 10000);
    }
    for (int i = 0; i < n_runs; i++) free(logits[i]);
}

static void step_identical(run *runs, int n_runs, const batch *b, float **logits, int32_t n_vocab) {
    for (int i = 0; i < n_runs; i++) cv_test_forward(&runs[i], b, logits[i]);
    for (int32_t r = 0; r < b->n; r++)
        if (memcmp(logits[0] + (size_t)r * n_vocab, logits[1] + (size_t)r * n_vocab, sizeof(float) * (size_t)n_vocab))
            fail_msg("seed %llu: sequence %d position %d: ring and full cache logits differ",
                     (unsigned long long)g_seed, b->seq[r], b->pos[r]);
}

static void test_ring_logits_equal_full_cache(void **s) {
    (void)s;
    run runs[2];
    open_run(1, 1, &runs[0]);
    open_run(1, 0, &runs[1]);
    drive(runs, 2, step_identical);
    /* A sequence of CTX positions: the global layer holds all 16 blocks either way, the
     * sliding layer 2 blocks instead of 16. */
    const cv_kv_config *kc = cv_kv_config_of(runs[1].kv);
    const size_t per_block = 2 * (size_t)kc->n_kv_heads * (size_t)kc->head_dim * 2 * BLOCK; /* K+V, f16 */
    for (int32_t q = 0; q < N_SEQ; q++) {
        assert_int_equal(cv_kv_capacity(runs[0].kv, q), CTX);
        assert_int_equal(cv_kv_seq_bytes(runs[1].kv, q), 2 * 16 * per_block);
        assert_int_equal(cv_kv_seq_bytes(runs[0].kv, q), (16 + 2) * per_block);
    }
    /* Memory blocks of one layer: the cache was made for exactly three such sequences. */
    assert_int_equal(cv_kv_config_of(runs[0].kv)->n_blocks, N_SEQ * (16 + 2));
    assert_int_equal(cv_kv_free_blocks(runs[0].kv), 0);
    for (int32_t q = 0; q < N_SEQ; q++) cv_kv_release(runs[0].kv, q);
    assert_int_equal(cv_kv_free_blocks(runs[0].kv), N_SEQ * (16 + 2));
    cv_test_run_close(&runs[0]);
    cv_test_run_close(&runs[1]);
}

static double g_worst, g_scale;

static void step_close(run *runs, int n_runs, const batch *b, float **logits, int32_t n_vocab) {
    for (int i = 0; i < n_runs; i++) cv_test_forward(&runs[i], b, logits[i]);
    for (size_t i = 0; i < (size_t)b->n * (size_t)n_vocab; i++) {
        double d = fabs((double)logits[0][i] - logits[1][i]);
        if (!(d <= g_worst)) g_worst = d; /* NaN too */
        if (fabs(logits[0][i]) > g_scale) g_scale = fabs(logits[0][i]);
    }
}

/* Each rank keeps its heads' ring in pools of its own under the shared tables. */
static void test_tp2_ring_matches_tp1_full_cache(void **s) {
    (void)s;
    run runs[2];
    open_run(1, 0, &runs[0]);
    open_run(2, 1, &runs[1]);
    g_worst = g_scale = 0;
    drive(runs, 2, step_close);
    printf("tp 2 ring vs tp 1 full: max |logit difference| %.3g (largest |logit| %.3g)\n", g_worst, g_scale);
    assert_true(g_scale > 0.1);
    if (!(g_worst <= 1e-4 * (g_scale > 1 ? g_scale : 1)))
        fail_msg("seed %llu: logits differ by %g", (unsigned long long)g_seed, g_worst);
    cv_test_run_close(&runs[0]);
    cv_test_run_close(&runs[1]);
}

/* A cache whose ring does not fit the model is refused, naming both sides. */
static void test_mismatched_ring_is_refused(void **s) {
    (void)s;
    run r;
    open_run(1, 1, &r);
    cv_kv_free(r.kv);
    cv_kv_config kc = cv_tp_kv_config(r.tp, CTX, N_SEQ, CV_TYPE_F16);
    kc.max_step = MAX_ROWS - 8; /* rows of one call could overwrite what they read */
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&kc, &r.kv, &e), CV_OK);
    batch b = {.n = 1, .seq = {0}, .pos = {0}, .tok = {1}};
    float *logits = malloc(sizeof(float) * (size_t)cv_model_hparams(cv_tp_model(r.tp))->n_vocab);
    assert_int_equal(cv_kv_reserve(r.kv, 0, 1, &e), CV_OK);
    cv_batch cb = {.n = b.n, .tokens = b.tok, .pos = b.pos, .seq = b.seq};
    assert_int_equal(cv_tp_forward(r.tp, r.kv, &cb, logits, &e), CV_EINVAL);
    printf("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "window of 8 for steps of 16 rows"));
    assert_non_null(strstr(e.msg, "steps of 24 rows"));
    cv_kv_free(r.kv);
    uint8_t wrong[2] = {0, 1}; /* the global layer in the ring */
    kc.max_step = MAX_ROWS;
    kc.sliding = wrong;
    assert_int_equal(cv_kv_create(&kc, &r.kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(r.kv, 0, 1, &e), CV_OK);
    assert_int_equal(cv_tp_forward(r.tp, r.kv, &cb, logits, &e), CV_EINVAL);
    printf("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "does not keep layer 0"));
    free(logits);
    cv_test_run_close(&r);
}

static int setup(void **s) {
    (void)s;
    if (cv_test_tmpdir(g_dir, sizeof g_dir, "test-model-swa")) return -1;
    snprintf(g_model, sizeof g_model, "%s/gemma3.gguf", g_dir);
    cv_synth_opts o = {.recipe = CV_QRECIPE_F32, .seed = 11, .n_threads = 1};
    cv_error e = {0};
    if (cv_synth_write(cv_synth_find("tp-gemma3"), &o, g_model, &e)) {
        printf("synthetic model: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **s) {
    (void)s;
    return cv_test_rmtree(g_dir);
}

int main(void) {
    g_seed = cv_test_seed("test_model_swa");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_logits_equal_full_cache),
        cmocka_unit_test(test_tp2_ring_matches_tp1_full_cache),
        cmocka_unit_test(test_mismatched_ring_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
