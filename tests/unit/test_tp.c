/* The tensor-parallel runner (server/tp.c) on the CPU: sharded ranks must compute the
 * whole model's logits for llama, qwen2 (QKV bias) and gemma3 (QK-norm, sliding window,
 * sandwich norms) synthetic models, through prefill, mixed and decode batches of two
 * sequences; shapes that cannot split are refused naming the tensor, the dimension
 * and tp. Synthetic models are written to a temp dir; stories260K comes from
 * tests/data.
 *
 * The bound: the row-parallel projections add their partial sums per rank, then across
 * ranks, so F32 weights give float rounding (~1e-6 here). With Q8_0/Q4_0 weights the
 * activations are quantized to Q8_0 blocks first: a last-bit difference usually rounds
 * away (the logits are then bit-identical), but one that lands on a rounding boundary
 * moves a quantum, about 0.01 in these random models' logits. A missing or misplaced
 * all-reduce, a wrong shard or head mapping gives 0.4 and more. */
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
#include "cuda_backend.h"
#include "gguf.h"
#include "kv_cache.h"
#include "synthetic.h"
#include "tp.h"
#include "../support/test_data.h"

static char g_dir[160];
static uint64_t g_seed;

static void synth_path(const char *shape, cv_qrecipe recipe, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s-%d.gguf", g_dir, shape, (int)recipe);
    if (access(out, R_OK) == 0) return;
    cv_synth_opts o = {.recipe = recipe, .seed = 7, .n_threads = 1};
    cv_error e = {0};
    if (cv_synth_write(cv_synth_find(shape), &o, out, &e)) fail_msg("%s: %s", shape, e.msg);
}

typedef cv_test_run run;

enum { MAX_ROWS = 32, N_SEQ = 2 };

static cv_status open_run(const char *path, int tp, run *r, cv_error *e) {
    memset(r, 0, sizeof *r);
    cv_tp_config tc = {.device = CV_DEVICE_CPU, .tp = tp, .threads = 2};
    cv_model_opts mo = {.max_batch = MAX_ROWS, .max_logits = MAX_ROWS};
    cv_status st = cv_gguf_open(path, &r->g, e);
    if (!st) st = cv_tp_load(&tc, r->g, &mo, &r->tp, e);
    if (!st) {
        cv_kv_config kc = cv_tp_kv_config(r->tp, 64, N_SEQ, CV_TYPE_F32);
        st = cv_kv_create(&kc, &r->kv, e);
    }
    return st;
}

/* One batch: rows[i] = (seq, pos, token), every row wants logits. */
typedef cv_test_rows step;

/* A prefill of sequence 0, then sequence 0 decoding while sequence 1 prefills (one
 * batch), then both decoding, past gemma3's sliding window of 8. */
static int build_steps(int32_t n_vocab, step *steps) {
    cv_test_rng st = cv_test_rng_new(g_seed);
    int32_t len[N_SEQ] = {0, 0};
    int n = 0;
    const int32_t plan[][N_SEQ] = {{12, 0}, {1, 10}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    for (size_t k = 0; k < sizeof plan / sizeof plan[0]; k++, n++) {
        steps[n].n = 0;
        for (int32_t q = 0; q < N_SEQ; q++)
            for (int32_t i = 0; i < plan[k][q]; i++) {
                int32_t row = steps[n].n++;
                steps[n].seq[row] = q;
                steps[n].pos[row] = len[q]++;
                steps[n].tok[row] = (int32_t)(cv_test_rng_next(&st) % (uint64_t)n_vocab);
            }
    }
    return n;
}

/* Largest |difference| allowed, relative to the largest |logit| (at least 1). */
#define TOL_F32 1e-4
#define TOL_QUANT 0.05

static void logits_match(const char *shape, cv_qrecipe recipe, int tp) {
    char path[512];
    synth_path(shape, recipe, path, sizeof path);
    run whole, split;
    cv_error e = {0};
    if (open_run(path, 1, &whole, &e)) fail_msg("%s tp 1: %s", shape, e.msg);
    if (open_run(path, tp, &split, &e)) fail_msg("%s tp %d: %s", shape, tp, e.msg);
    assert_int_equal(cv_tp_size(split.tp), tp);
    assert_int_equal(cv_tp_threads(split.tp), tp > 2 ? tp : 2); /* at least one per rank */
    /* Each rank holds its share of the weights: together, the whole model's matrices,
     * plus the embedding row every rank reads and the output head (replicated). */
    assert_true(cv_tp_weight_bytes(split.tp) > cv_tp_weight_bytes(whole.tp));
    /* tp 1 reads every weight in place from the mapping; the shards pack their column
     * shares of attn_output and ffn_down (on the CPU), and nothing else. */
    assert_int_equal(cv_tp_copied_bytes(whole.tp), 0);
    const cv_hparams *hp = cv_model_hparams(cv_tp_model(whole.tp));
    cv_type wo = cv_gguf_find_tensor(whole.g, "blk.0.attn_output.weight")->type;
    cv_type wd = cv_gguf_find_tensor(whole.g, "blk.0.ffn_down.weight")->type;
    uint64_t shares = (uint64_t)hp->n_layers * ((uint64_t)hp->dim * cv_type_row_bytes(wo, hp->n_heads * hp->head_dim) +
                                                (uint64_t)hp->dim * cv_type_row_bytes(wd, hp->ffn_dim));
    assert_int_equal(cv_tp_copied_bytes(split.tp), shares);
    const int32_t n_vocab = cv_model_hparams(cv_tp_model(whole.tp))->n_vocab;
    step steps[8];
    int n_steps = build_steps(n_vocab, steps);
    float *a = malloc(sizeof(float) * MAX_ROWS * (size_t)n_vocab);
    float *b = malloc(sizeof(float) * MAX_ROWS * (size_t)n_vocab);
    assert_non_null(a);
    assert_non_null(b);
    double worst = 0, scale = 0;
    for (int k = 0; k < n_steps; k++) {
        cv_test_forward(&whole, &steps[k], a);
        cv_test_forward(&split, &steps[k], b);
        for (size_t i = 0; i < (size_t)steps[k].n * (size_t)n_vocab; i++) {
            double d = fabs((double)a[i] - b[i]);
            if (!(d <= worst)) worst = d; /* NaN too */
            if (fabs(a[i]) > scale) scale = fabs(a[i]);
        }
    }
    printf("%s %s: tp %d vs tp 1: max |logit difference| %.3g (largest |logit| %.3g)\n", shape,
           cv_qrecipe_get(recipe)->name, tp, worst, scale);
    assert_true(scale > 0.1);
    const double tol = recipe == CV_QRECIPE_F32 ? TOL_F32 : TOL_QUANT;
    if (!(worst <= tol * (scale > 1 ? scale : 1)))
        fail_msg("seed %llu: %s tp %d logits differ by %g", (unsigned long long)g_seed, shape, tp, worst);
    free(a);
    free(b);
    cv_test_run_close(&split);
    cv_test_run_close(&whole);
}

static void test_llama_tp2(void **s) { (void)s; logits_match("tp-llama", CV_QRECIPE_F32, 2); }
static void test_llama_tp4(void **s) { (void)s; logits_match("tp-llama", CV_QRECIPE_F32, 4); }
static void test_qwen2_tp2(void **s) { (void)s; logits_match("tp-qwen2", CV_QRECIPE_F32, 2); }
static void test_gemma3_tp2(void **s) { (void)s; logits_match("tp-gemma3", CV_QRECIPE_F32, 2); }
/* Tied embeddings: each rank's block of the vocabulary comes from token_embd itself. */
static void test_qwen2_tied_tp2(void **s) { (void)s; logits_match("tiny-qwen2", CV_QRECIPE_F32, 2); }
static void test_llama_q4_0_tp4(void **s) { (void)s; logits_match("tp-llama", CV_QRECIPE_Q4_0, 4); }
static void test_gemma3_q8_0_tp2(void **s) { (void)s; logits_match("tp-gemma3", CV_QRECIPE_Q8_0, 2); }

static void expect_refused(const char *path, int tp, cv_status code, const char *const *parts) {
    run r;
    cv_error e = {0};
    assert_int_equal(open_run(path, tp, &r, &e), code);
    for (; *parts; parts++)
        if (!strstr(e.msg, *parts)) fail_msg("tp %d: '%s' lacks '%s'", tp, e.msg, *parts);
    cv_test_run_close(&r);
}

static void test_unsplittable_shapes_are_refused(void **s) {
    (void)s;
    char f32[512], q8[512];
    cv_test_data(f32, sizeof f32, "models/stories260K.gguf");
    cv_test_data(q8, sizeof q8, "models/stories260K-Q8_0-mixed.gguf");
    /* 8 heads over 3 ranks; 4 kv heads over 8; 64 Q8_0 columns over 4 ranks are 16 each. */
    expect_refused(f32, 3, CV_EUNSUPPORTED,
                   (const char *[]){"tp 3", "blk.0.attn_q.weight", "llama.attention.head_count = 8", NULL});
    expect_refused(f32, 8, CV_EUNSUPPORTED,
                   (const char *[]){"tp 8", "blk.0.attn_k.weight", "head_count_kv = 4", NULL});
    expect_refused(q8, 4, CV_EUNSUPPORTED,
                   (const char *[]){"tp 4", "blk.0.attn_output.weight", "64 input columns", "16 per rank",
                                    "Q8_0 block of 32", NULL});
    expect_refused(f32, 9, CV_EINVAL, (const char *[]){"tp 9", "1..8", NULL});
    char path[512];
    synth_path("tp-llama", CV_QRECIPE_F32, path, sizeof path);
    run r;
    cv_error e = {0};
    cv_tp_config tc = {.device = CV_DEVICE_CUDA, .tp = 2};
    cv_model_opts mo = {.max_batch = 4, .max_logits = 1};
    assert_int_equal(cv_gguf_open(path, &r.g, &e), CV_OK);
    if (!cv_cuda_compiled()) {
        assert_int_equal(cv_tp_load(&tc, r.g, &mo, &r.tp, &e), CV_EUNAVAILABLE);
        assert_null(r.tp);
        assert_non_null(strstr(e.msg, "make CUDA=1"));
    }
    cv_gguf_close(r.g);
}

/* A bad batch is refused by every rank before the first all-reduce (no rank is left
 * waiting for the others), with rank 0's message, and the runner stays usable. */
static void test_bad_batch_fails_on_every_rank(void **s) {
    (void)s;
    char path[512];
    synth_path("tp-llama", CV_QRECIPE_F32, path, sizeof path);
    run r;
    cv_error e = {0};
    if (open_run(path, 4, &r, &e)) fail_msg("%s", e.msg);
    float *logits = malloc(sizeof(float) * 512);
    assert_non_null(logits);
    int32_t tok = 512, pos = 0, seq = 0;
    cv_batch b = {.n = 1, .tokens = &tok, .pos = &pos, .seq = &seq};
    assert_int_equal(cv_kv_reserve(r.kv, 0, 1, &e), CV_OK);
    assert_int_equal(cv_tp_forward(r.tp, r.kv, &b, logits, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "token 512 of row 0 outside the vocabulary of 512"));
    pos = 40; /* not reserved */
    tok = 7;
    assert_int_equal(cv_tp_forward(r.tp, r.kv, &b, logits, &e), CV_ERANGE);
    pos = 0;
    assert_int_equal(cv_tp_forward(r.tp, r.kv, &b, logits, &e), CV_OK);
    free(logits);
    cv_test_run_close(&r);
}

/* Threads split between ranks: 2 over 4 ranks still gives each one a thread. */
static void test_thread_budget_split(void **s) {
    (void)s;
    char path[512];
    synth_path("tp-llama", CV_QRECIPE_F32, path, sizeof path);
    cv_gguf *g;
    cv_error e = {0};
    assert_int_equal(cv_gguf_open(path, &g, &e), CV_OK);
    const struct { int tp, threads, want; } cases[] = {{2, 4, 4}, {4, 2, 4}, {2, 3, 2}, {1, 2, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cv_tp_config tc = {.device = CV_DEVICE_CPU, .tp = cases[i].tp, .threads = cases[i].threads};
        cv_model_opts mo = {.max_batch = 4, .max_logits = 1};
        cv_tp *tp;
        assert_int_equal(cv_tp_load(&tc, g, &mo, &tp, &e), CV_OK);
        assert_int_equal(cv_tp_threads(tp), cases[i].want);
        for (int r = 0; r < cases[i].tp; r++) assert_non_null(cv_tp_backend(tp, r));
        assert_null(cv_tp_backend(tp, cases[i].tp));
        cv_tp_free(tp);
    }
    cv_gguf_close(g);
}

static int teardown(void **s) {
    (void)s;
    return cv_test_rmtree(g_dir);
}

static int setup(void **s) {
    (void)s;
    return cv_test_tmpdir(g_dir, sizeof g_dir, "test-tp");
}

int main(void) {
    g_seed = cv_test_seed("test_tp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_tp2),
        cmocka_unit_test(test_llama_tp4),
        cmocka_unit_test(test_qwen2_tp2),
        cmocka_unit_test(test_gemma3_tp2),
        cmocka_unit_test(test_qwen2_tied_tp2),
        cmocka_unit_test(test_llama_q4_0_tp4),
        cmocka_unit_test(test_gemma3_q8_0_tp2),
        cmocka_unit_test(test_unsplittable_shapes_are_refused),
        cmocka_unit_test(test_bad_batch_fails_on_every_rank),
        cmocka_unit_test(test_thread_budget_split),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
