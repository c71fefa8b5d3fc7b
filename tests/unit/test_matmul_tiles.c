/* The batched matmul tiles for F16, BF16 and Q5_0 (AVX-512 where the CPU has it)
 * against their references, bit for bit, on fresh random data: every output of every
 * backend (AVX-512, AVX2 only, one thread) must equal the reference's bits for row
 * counts around the tile heights, token counts around the tile widths, and column
 * counts with and without tails. References: for F16/BF16 the row dot that batch-1
 * decode uses (quant's AVX2 float dot, cv_vec_dot); for Q5_0 the scalar reference dot
 * (quant forced scalar). The seed is printed; CORVID_TEST_SEED replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_backend.h"
#include "quant.h"
#include "quant_blocks.h"
#include "../support/test_rng.h"

static cv_test_rng g_rng;

static uint64_t rnd(void) { return cv_test_rng_next(&g_rng); }

/* Uniform in [-a, a). */
static float frand(float a) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2 - 1) * a; }

/* Activations in [-a, a); with n > 2 an all-zero row and two spikes. */
static float *acts(int64_t n, int64_t cols, float a) {
    float *x = malloc((size_t)(n * cols) * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand(a);
    if (n > 2) {
        memset(x + cols, 0, (size_t)cols * sizeof *x);
        x[2 * cols] = 900.0f;
        x[3 * cols - 1] = -3000.0f;
    }
    return x;
}

/* Weights of random bytes. Floats: finite values of every exponent range the format
 * has in a model (F16 also subnormals), some exact zeros and negative zeros. Blocks:
 * every level, scale and min the format can hold, with extreme block scales (largest
 * half, a subnormal, zero, negative ones) and every third row saturated (0xFF). */
static void *make_weight(cv_type type, int64_t rows, int64_t cols, cv_tensor *t) {
    static const uint16_t halves[] = {0x7BFF, 0x0001, 0x0000, 0x8400, 0x3C00, 0x1A3F, 0xA955, 0x2E66};
    const size_t rb = cv_type_row_bytes(type, cols), bb = cv_type_get(type)->block_bytes;
    uint8_t *d = malloc(rb * (size_t)rows);
    assert_non_null(d);
    for (size_t i = 0; i < rb * (size_t)rows; i++) d[i] = (uint8_t)rnd();
    if (type == CV_TYPE_F16 || type == CV_TYPE_BF16) {
        uint16_t *h = (uint16_t *)(void *)d;
        for (size_t i = 0; i < (size_t)(rows * cols); i++) {
            const uint64_t k = rnd() % 16;
            float v = k == 0 ? 0.0f : k == 1 ? -0.0f : frand(k < 8 ? 1.0f : 40.0f);
            if (type == CV_TYPE_F16 && k == 2) v = frand(1e-6f); /* F16 subnormals */
            h[i] = type == CV_TYPE_F16 ? cv_fp32_to_fp16(v) : cv_fp32_to_bf16(v);
        }
    } else {
        for (int64_t r = 0; r < rows; r++)
            for (size_t b = 0; b < rb / bb; b++) {
                uint8_t *blk = d + r * rb + b * bb;
                if (r % 3 == 2) memset(blk, 0xFF, bb);
                uint16_t hv[2] = {halves[rnd() % 8], halves[rnd() % 8]};
                memcpy(blk, hv, type == CV_TYPE_Q5_K ? 4 : 2); /* d (and Q5_K's dmin) lead the block */
            }
    }
    *t = (cv_tensor){type, rows, cols, rb, d, CV_DEVICE_CPU, 0};
    return d;
}

/* The reference outputs y[t * rows + r]. */
static void reference(cv_backend *ref, const cv_tensor *w, const float *x, float *y, int32_t n) {
    if (w->type == CV_TYPE_F16 || w->type == CV_TYPE_BF16) {
        for (int32_t t = 0; t < n; t++)
            for (int64_t r = 0; r < w->rows; r++)
                y[(int64_t)t * w->rows + r] = cv_vec_dot(w->type, w->cols, (const char *)w->data + r * w->row_stride,
                                                         x + (int64_t)t * w->cols);
        return;
    }
    cv_tensor t;
    assert_int_equal(ref->ops->weight_load(ref, w, &t, NULL), CV_OK);
    cv_quant_force_scalar(1);
    ref->ops->matmul(ref, &t, x, y, n);
    cv_quant_force_scalar(0);
}

static void check_type(cv_type type, const int64_t (*shapes)[2], size_t n_shapes) {
    cv_backend *ref = NULL, *be[3] = {NULL, NULL, NULL};
    cv_cpu_options oref = {.n_threads = 1, .force_scalar = 1};
    cv_cpu_options o[3] = {{.n_threads = 2}, {.n_threads = 3, .no_avx512 = 1}, {.n_threads = 1}};
    assert_int_equal(cv_cpu_backend_create(&oref, &ref, NULL), CV_OK);
    for (int b = 0; b < 3; b++) assert_int_equal(cv_cpu_backend_create(&o[b], &be[b], NULL), CV_OK);
    const int32_t ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 16, 17, 33};
    for (size_t s = 0; s < n_shapes; s++) {
        const int64_t rows = shapes[s][0], cols = shapes[s][1];
        cv_tensor w;
        void *wd = make_weight(type, rows, cols, &w);
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
            const int32_t n = ns[j];
            if (rows * cols * n > (int64_t)1 << 24 && n != 17) continue; /* big shapes: one batch is enough */
            float *x = acts(n, cols, 1.5f);
            float *yr = malloc((size_t)(n * rows) * sizeof *yr), *yf = malloc((size_t)(n * rows) * sizeof *yf);
            assert_true(yr && yf);
            reference(ref, &w, x, yr, n);
            for (int b = 0; b < 3; b++) {
                /* Q5_0 has no AVX2 tile: an AVX2-only backend runs quant's row dot, whose
                 * float steps (two accumulators, FMA) are not the scalar reference's. */
                if (type == CV_TYPE_Q5_0 && o[b].no_avx512) continue;
                cv_tensor t;
                assert_int_equal(be[b]->ops->weight_load(be[b], &w, &t, NULL), CV_OK);
                memset(yf, 0xAB, (size_t)(n * rows) * sizeof *yf);
                be[b]->ops->matmul(be[b], &t, x, yf, n);
                for (int64_t k = 0; k < (int64_t)n * rows; k++)
                    if (memcmp(&yf[k], &yr[k], sizeof(float)))
                        fail_msg("%s (%d threads) %s %lldx%lld n=%d: y[%lld] = %.9g, reference %.9g", be[b]->name,
                                 cv_cpu_backend_threads(be[b]), cv_type_get(type)->name, (long long)rows,
                                 (long long)cols, n, (long long)k, yf[k], yr[k]);
            }
            free(x);
            free(yr);
            free(yf);
        }
        free(wd);
    }
    for (int b = 0; b < 3; b++) cv_backend_destroy(be[b]);
    cv_backend_destroy(ref);
}

static void test_f16_bf16_tiles_match_row_dot(void **state) {
    (void)state;
    /* columns: below one vector, tails of 1 and 15, whole vectors; rows around 3, 4, 16 */
    static const int64_t shapes[][2] = {{1, 7}, {5, 17}, {16, 64}, {7, 95}, {29, 256}, {53, 321}, {130, 2048}};
    check_type(CV_TYPE_F16, shapes, sizeof shapes / sizeof shapes[0]);
    check_type(CV_TYPE_BF16, shapes, sizeof shapes / sizeof shapes[0]);
}

static void test_q5_0_tiles_match_scalar_reference(void **state) {
    (void)state;
    /* rows around 16 (tail tiles of 1..15 rows), Gemma's 640 and Qwen's 896 columns */
    static const int64_t shapes[][2] = {{1, 32}, {5, 64}, {16, 640}, {17, 96}, {29, 896}, {53, 320}, {130, 2048}};
    check_type(CV_TYPE_Q5_0, shapes, sizeof shapes / sizeof shapes[0]);
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_matmul_tiles"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_bf16_tiles_match_row_dot),
        cmocka_unit_test(test_q5_0_tiles_match_scalar_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
