/* Every fast (AVX2) kernel of the CPU backend against the scalar reference on fresh
 * random data, and the reference against independent float64 computations. The seed
 * is printed; CORVID_TEST_SEED=N replays a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_backend.h"
#include "quant.h"
#include "quant_blocks.h"
#include "../support/test_rng.h"

/* Tolerances, relative to max(1, |reference|) unless said otherwise. The fast kernels
 * differ from the reference by summation order, float (not double) sums, and exp/tanh
 * approximations accurate to a few ulp. */
#define TOL_MATMUL 2e-4      /* fast vs reference, relative to sqrt(cols) */
#define TOL_MATMUL_F64 1e-5  /* reference vs float64, relative to sqrt(cols) and |y| */
#define TOL_RMSNORM 2e-6
#define TOL_ROPE 1e-6
#define TOL_SOFTMAX 2e-6
#define TOL_GLU 1e-6
#define TOL_SOFTCAP 2e-6
#define TOL_ATTENTION 2e-5   /* fast (online softmax) vs reference (three passes) */
#define TOL_F64 1e-5         /* any reference vs its float64 formula, absolute */

static cv_test_rng g_rng;

static uint64_t rnd(void) { return cv_test_rng_next(&g_rng); }

/* Uniform in [-a, a). */
static float frand(float a) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2 - 1) * a; }

static float *fill(int64_t n, float a) {
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = frand(a);
    return x;
}

static cv_backend *make(int scalar, int threads) {
    cv_backend *be = NULL;
    cv_cpu_options o = {.n_threads = threads, .force_scalar = scalar};
    cv_error err = {0};
    assert_int_equal(cv_cpu_backend_create(&o, &be, &err), CV_OK);
    return be;
}

/* The fast backend where the CPU has AVX2; elsewhere the comparisons still run, as the
 * reference against itself with another thread count. */
typedef struct pair {
    cv_backend *ref, *fast;
} pair;

static int setup(void **state) {
    pair *p = malloc(sizeof *p);
    if (!p) return -1;
    p->ref = make(1, 1);
    p->fast = make(0, 2);
    *state = p;
    return 0;
}

static int teardown(void **state) {
    pair *p = *state;
    cv_backend_destroy(p->ref);
    cv_backend_destroy(p->fast);
    free(p);
    return 0;
}

/* |a - b| <= tol * max(1, |b|) elementwise; prints the first offender. */
static void assert_close(const float *a, const float *b, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), lim = tol * fmax(1.0, fabs((double)b[i]));
        if (!(d <= lim)) {
            fail_msg("%s: element %lld: fast %.9g vs reference %.9g (tolerance %.3g)", what, (long long)i, a[i], b[i], tol);
        }
    }
}

/* ---- matmul ------------------------------------------------------------------------ */

typedef struct wmat {
    cv_tensor t;
    void *data;
} wmat;

static wmat make_weight(cv_type type, int64_t rows, int64_t cols) {
    wmat w;
    size_t rb = cv_type_row_bytes(type, cols);
    w.data = malloc(rb * (size_t)rows);
    assert_non_null(w.data);
    float *row = fill(cols, 1.0f);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) row[c] = frand(1.0f);
        cv_quantize_row(type, row, (char *)w.data + r * rb, cols);
    }
    free(row);
    w.t = (cv_tensor){type, rows, cols, rb, w.data, CV_DEVICE_CPU, 0};
    return w;
}

/* Tolerance relative to the output scale sqrt(cols) (entries are sums of cols products
 * of values in [-1, 1]). The fast kernels may sum in another order and, for Q4_0/Q8_0,
 * carry the activation scale in float rather than rounded to F16. */
static void check_matmul(pair *p, cv_type type, int64_t rows, int64_t cols, int32_t n) {
    wmat w = make_weight(type, rows, cols);
    cv_tensor wr, wf;
    cv_error err = {0};
    assert_int_equal(p->ref->ops->weight_load(p->ref, &w.t, &wr, &err), CV_OK);
    assert_int_equal(p->fast->ops->weight_load(p->fast, &w.t, &wf, &err), CV_OK);
    float *x = fill((int64_t)n * cols, 1.0f);
    float *yr = calloc((size_t)n * rows, sizeof *yr), *yf = calloc((size_t)n * rows, sizeof *yf);
    assert_true(yr && yf);
    cv_quant_force_scalar(1);
    p->ref->ops->matmul(p->ref, &wr, x, yr, n);
    cv_quant_force_scalar(0);
    p->fast->ops->matmul(p->fast, &wf, x, yf, n);
    double scale = sqrt((double)cols);
    double tol = TOL_MATMUL;
    for (int64_t i = 0; i < (int64_t)n * rows; i++) {
        if (!(fabs((double)yf[i] - yr[i]) <= tol * scale))
            fail_msg("matmul %s %lldx%lld n=%d: y[%lld] fast %.7g vs reference %.7g", cv_type_get(type)->name,
                     (long long)rows, (long long)cols, n, (long long)i, yf[i], yr[i]);
    }
    /* The reference against float64 over dequantized weights and activations. */
    cv_type vt = cv_type_vec_dot_type(type);
    float *wrow = malloc((size_t)cols * sizeof *wrow), *arow = malloc((size_t)cols * sizeof *arow);
    void *aq = malloc(cv_type_row_bytes(vt, cols) + 64);
    assert_true(wrow && arow && aq);
    for (int32_t t = 0; t < n; t += (n > 4 ? n / 3 : 1)) {
        if (vt == CV_TYPE_F32) {
            memcpy(arow, x + (int64_t)t * cols, (size_t)cols * sizeof *arow);
        } else {
            cv_quantize_row(vt, x + (int64_t)t * cols, aq, cols);
            cv_dequantize_row(vt, aq, arow, cols);
        }
        for (int64_t r = 0; r < rows; r += 7) {
            cv_dequantize_row(type, (char *)w.data + r * w.t.row_stride, wrow, cols);
            double s = 0;
            for (int64_t c = 0; c < cols; c++) s += (double)wrow[c] * arow[c];
            if (!(fabs(s - yr[(int64_t)t * rows + r]) <= TOL_MATMUL_F64 * (scale + fabs(s))))
                fail_msg("matmul reference %s: y[%d][%lld] = %.7g, float64 says %.7g", cv_type_get(type)->name, t,
                         (long long)r, yr[(int64_t)t * rows + r], s);
        }
    }
    free(wrow);
    free(arow);
    free(aq);
    free(x);
    free(yr);
    free(yf);
    free(w.data);
}

static void test_matmul_fast_matches_reference(void **state) {
    pair *p = *state;
    const cv_type types[] = {CV_TYPE_Q4_0, CV_TYPE_Q8_0, CV_TYPE_F32, CV_TYPE_F16, CV_TYPE_BF16, CV_TYPE_Q5_0, CV_TYPE_Q4_K, CV_TYPE_Q6_K};
    const int32_t ns[] = {1, 2, 5, 16, 37};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) check_matmul(p, types[i], 53, 256, ns[j]);
    check_matmul(p, CV_TYPE_Q4_0, 130, 2048, 3);
    check_matmul(p, CV_TYPE_Q8_0, 67, 1024, 70);
}

/* Thread counts 1..4 must give bit-identical results: each output is computed by
 * exactly one thread in a fixed order, whatever the split. */
static void test_matmul_thread_count_invariant(void **state) {
    (void)state;
    const cv_type types[] = {CV_TYPE_Q4_0, CV_TYPE_Q8_0, CV_TYPE_F16};
    /* n = 3: every thread converts the activations itself; n = 9: they share it. */
    for (size_t k = 0; k < 2 * sizeof types / sizeof types[0]; k++) {
        int64_t rows = 100, cols = 512;
        int32_t n = k % 2 ? 9 : 3;
        wmat w = make_weight(types[k / 2], rows, cols);
        float *x = fill(n * cols, 2.0f);
        float *y[4];
        for (int th = 1; th <= 4; th++) {
            cv_backend *be = make(0, th);
            cv_tensor t;
            assert_int_equal(be->ops->weight_load(be, &w.t, &t, NULL), CV_OK);
            y[th - 1] = calloc((size_t)n * rows, sizeof(float));
            assert_non_null(y[th - 1]);
            be->ops->matmul(be, &t, x, y[th - 1], n);
            cv_backend_destroy(be);
        }
        for (int th = 2; th <= 4; th++) assert_memory_equal(y[0], y[th - 1], (size_t)n * rows * sizeof(float));
        for (int th = 0; th < 4; th++) free(y[th]);
        free(x);
        free(w.data);
    }
}

/* The AVX-512 VNNI tiles give the AVX2 tiles' bits for every shape: full 16-row tiles,
 * row tails, token counts around the 16-token tile, one token; Q8_0 weights include
 * -128, the byte the unsigned flip must still get right. */
static void test_matmul_avx512_bit_identical_to_avx2(void **state) {
    (void)state;
    if (!cv_cpu_has_avx512vnni()) {
        printf("SKIP: this CPU has no AVX-512 VNNI: its tiles cannot run here\n");
        return;
    }
    cv_backend *a2 = NULL, *a5 = NULL;
    cv_cpu_options o2 = {.n_threads = 2, .no_avx512 = 1}, o5 = {.n_threads = 2};
    assert_int_equal(cv_cpu_backend_create(&o2, &a2, NULL), CV_OK);
    assert_int_equal(cv_cpu_backend_create(&o5, &a5, NULL), CV_OK);
    assert_string_equal(a5->name, "cpu-avx512");
    const cv_type types[] = {CV_TYPE_Q4_0, CV_TYPE_Q8_0};
    const int64_t shapes[][2] = {{16, 32}, {53, 256}, {130, 2048}, {256, 96}};
    const int32_t ns[] = {1, 2, 3, 15, 16, 17, 33, 40};
    for (size_t i = 0; i < 2; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            wmat w = make_weight(types[i], rows, cols);
            if (types[i] == CV_TYPE_Q8_0) /* every 5th row starts with quants of -128 */
                for (int64_t r = 0; r < rows; r += 5) memset((char *)w.data + r * w.t.row_stride + 2, 0x80, 7);
            cv_tensor t2, t5;
            assert_int_equal(a2->ops->weight_load(a2, &w.t, &t2, NULL), CV_OK);
            assert_int_equal(a5->ops->weight_load(a5, &w.t, &t5, NULL), CV_OK);
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
                int32_t n = ns[j];
                float *x = fill((int64_t)n * cols, 1.5f);
                float *y2 = calloc((size_t)n * rows, sizeof *y2), *y5 = calloc((size_t)n * rows, sizeof *y5);
                assert_true(y2 && y5);
                a2->ops->matmul(a2, &t2, x, y2, n);
                a5->ops->matmul(a5, &t5, x, y5, n);
                for (int64_t k = 0; k < (int64_t)n * rows; k++)
                    if (memcmp(&y2[k], &y5[k], sizeof(float)))
                        fail_msg("%s %lldx%lld n=%d: y[%lld] avx512 %.9g vs avx2 %.9g", cv_type_get(types[i])->name,
                                 (long long)rows, (long long)cols, n, (long long)k, y5[k], y2[k]);
                free(x);
                free(y2);
                free(y5);
            }
            free(w.data);
        }
    cv_backend_destroy(a2);
    cv_backend_destroy(a5);
}

/* K-quant weights of random bytes (every level, scale and min the format can hold),
 * with extreme super-block scales (the largest half, a subnormal, zero, negative ones;
 * Q4_K's d and dmin drawn apart) and every third row saturated: all levels, scales and
 * mins at their maximum (Q6_K's signed scales at +127 or -128). */
static wmat make_k_weight(cv_type type, int64_t rows, int64_t cols) {
    static const uint16_t halves[] = {0x7BFF, 0x0001, 0x0000, 0x8400, 0x3C00, 0x1A3F, 0xA955, 0x2E66};
    wmat w;
    size_t rb = cv_type_row_bytes(type, cols), bb = cv_type_get(type)->block_bytes;
    w.data = malloc(rb * (size_t)rows);
    assert_non_null(w.data);
    uint8_t *d = w.data;
    for (size_t i = 0; i < rb * (size_t)rows; i++) d[i] = (uint8_t)rnd();
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < cols / 256; b++) {
            uint8_t *blk = d + r * rb + b * bb;
            int q6 = type == CV_TYPE_Q6_K;
            if (r % 3 == 2) memset(blk, 0xFF, bb);
            if (q6 && r % 3 == 2) /* Q6_K's scales are signed: alternate both extremes */
                memset(blk + offsetof(cv_block_q6_K, scales), (r / 3) % 2 ? 0x80 : 0x7F, sizeof(((cv_block_q6_K *)0)->scales));
            uint16_t h[2] = {halves[rnd() % 8], halves[rnd() % 8]};
            memcpy(blk + (q6 ? offsetof(cv_block_q6_K, d) : offsetof(cv_block_q4_K, d)), h, q6 ? 2 : 4);
        }
    w.t = (cv_tensor){type, rows, cols, rb, w.data, CV_DEVICE_CPU, 0};
    return w;
}

/* The Q4_K and Q6_K tiles (AVX2, and AVX-512 VNNI where the CPU has it) sum the same
 * integers as the scalar reference dot and take its float steps, so every output must
 * be bit-identical to the reference: row tails of every size, tokens 1..17 and past
 * the tiles, several thread counts. Activations include an all-zero row and spikes. */
static void test_matmul_k_quants_bit_identical_to_reference(void **state) {
    pair *p = *state;
    cv_backend *be[3] = {p->fast, NULL, NULL};
    cv_cpu_options o2 = {.n_threads = 3, .no_avx512 = 1}, o1 = {.n_threads = 1};
    assert_int_equal(cv_cpu_backend_create(&o2, &be[1], NULL), CV_OK);
    assert_int_equal(cv_cpu_backend_create(&o1, &be[2], NULL), CV_OK);
    const cv_type types[] = {CV_TYPE_Q4_K, CV_TYPE_Q6_K};
    const int64_t shapes[][2] = {{1, 256}, {7, 512}, {16, 256}, {29, 768}, {53, 256}, {130, 2048}};
    const int32_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33};
    for (size_t i = 0; i < 2; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            wmat w = make_k_weight(types[i], rows, cols);
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
                int32_t n = ns[j];
                if (rows * n > 20000 && n != 17) continue; /* the big shape: one batch is enough */
                float *x = fill((int64_t)n * cols, 1.5f);
                if (n > 2) {
                    memset(x + cols, 0, (size_t)cols * sizeof *x);
                    x[2 * cols + 5] = 900.0f;
                    x[2 * cols + cols - 1] = -3000.0f;
                }
                float *yr = calloc((size_t)n * rows, sizeof *yr), *yf = calloc((size_t)n * rows, sizeof *yf);
                assert_true(yr && yf);
                cv_tensor t;
                assert_int_equal(p->ref->ops->weight_load(p->ref, &w.t, &t, NULL), CV_OK);
                cv_quant_force_scalar(1);
                p->ref->ops->matmul(p->ref, &t, x, yr, n);
                cv_quant_force_scalar(0);
                for (int b = 0; b < 3; b++) {
                    assert_int_equal(be[b]->ops->weight_load(be[b], &w.t, &t, NULL), CV_OK);
                    memset(yf, 0xAB, (size_t)n * rows * sizeof *yf);
                    be[b]->ops->matmul(be[b], &t, x, yf, n);
                    for (int64_t k = 0; k < (int64_t)n * rows; k++)
                        if (memcmp(&yf[k], &yr[k], sizeof(float)))
                            fail_msg("%s %s %lldx%lld n=%d: y[%lld] = %.9g, reference %.9g", be[b]->name,
                                     cv_type_get(types[i])->name, (long long)rows, (long long)cols, n, (long long)k,
                                     yf[k], yr[k]);
                }
                free(x);
                free(yr);
                free(yf);
            }
            free(w.data);
        }
    cv_backend_destroy(be[1]);
    cv_backend_destroy(be[2]);
}

/* A scratch too small for all tokens makes the matmul run in token chunks. */
static void test_matmul_chunks_when_scratch_is_small(void **state) {
    pair *p = *state;
    cv_backend *small = NULL;
    cv_cpu_options o = {.n_threads = 2, .scratch_bytes = 4096};
    assert_int_equal(cv_cpu_backend_create(&o, &small, NULL), CV_OK);
    wmat w = make_weight(CV_TYPE_Q8_0, 40, 1024);
    float *x = fill(20 * 1024, 1.0f);
    float *ya = calloc(20 * 40, sizeof(float)), *yb = calloc(20 * 40, sizeof(float));
    cv_tensor t1, t2;
    assert_int_equal(small->ops->weight_load(small, &w.t, &t1, NULL), CV_OK);
    assert_int_equal(p->fast->ops->weight_load(p->fast, &w.t, &t2, NULL), CV_OK);
    small->ops->matmul(small, &t1, x, ya, 20);
    p->fast->ops->matmul(p->fast, &t2, x, yb, 20);
    assert_memory_equal(ya, yb, 20 * 40 * sizeof(float));
    /* A row that cannot fit the scratch at all is refused at load. */
    wmat big = make_weight(CV_TYPE_Q8_0, 1, 8192);
    cv_error err = {0};
    assert_int_equal(small->ops->weight_load(small, &big.t, &t1, &err), CV_ERANGE);
    assert_non_null(strstr(err.msg, "8192"));
    free(big.data);
    free(x);
    free(ya);
    free(yb);
    free(w.data);
    cv_backend_destroy(small);
}

static void test_weight_load_rejects_bad_shapes(void **state) {
    pair *p = *state;
    char buf[64];
    cv_tensor out, t = {CV_TYPE_Q4_0, 1, 48, 64, buf, CV_DEVICE_CPU, 0};
    cv_error err = {0};
    assert_int_equal(p->fast->ops->weight_load(p->fast, &t, &out, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "48"));
    t.cols = 64;
    t.row_stride = 20;
    assert_int_equal(p->fast->ops->weight_load(p->fast, &t, &out, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "row_stride 20"));
    t.type = (cv_type)39;
    assert_int_equal(p->fast->ops->weight_load(p->fast, &t, &out, &err), CV_EUNSUPPORTED);
}

static void test_get_rows_dequantizes(void **state) {
    pair *p = *state;
    wmat w = make_weight(CV_TYPE_Q4_0, 10, 64);
    int32_t ids[3] = {7, 0, 7};
    float out[3 * 64], want[64];
    p->fast->ops->get_rows(p->fast, &w.t, ids, 3, out);
    for (int i = 0; i < 3; i++) {
        cv_dequantize_row(CV_TYPE_Q4_0, (char *)w.data + ids[i] * w.t.row_stride, want, 64);
        assert_memory_equal(out + i * 64, want, sizeof want);
    }
    free(w.data);
}

/* ---- element-wise and row ops ------------------------------------------------------ */

static void test_rmsnorm(void **state) {
    pair *p = *state;
    const int32_t dims[] = {7, 64, 2048, 2051};
    for (size_t k = 0; k < 4; k++) {
        int32_t dim = dims[k], rows = 5;
        float *x = fill(rows * dim, 3.0f), *w = fill(dim, 1.0f);
        float *a = malloc(sizeof(float) * rows * dim), *b = malloc(sizeof(float) * rows * dim);
        for (int add_one = 0; add_one <= 1; add_one++) {
            p->ref->ops->rmsnorm(p->ref, x, w, a, rows, dim, 1e-6f, add_one);
            memcpy(b, x, sizeof(float) * rows * dim);
            p->fast->ops->rmsnorm(p->fast, b, w, b, rows, dim, 1e-6f, add_one); /* in place */
            assert_close(b, a, rows * dim, TOL_RMSNORM, "rmsnorm");
            double ss = 0;
            for (int32_t i = 0; i < dim; i++) ss += (double)x[i] * x[i];
            double r = 1 / sqrt(ss / dim + 1e-6);
            for (int32_t i = 0; i < dim; i++)
                assert_true(fabs(a[i] - x[i] * r * (w[i] + add_one)) <= TOL_F64 * fmax(1, fabs(a[i])));
        }
        free(x);
        free(w);
        free(a);
        free(b);
    }
}

static void test_rope(void **state) {
    pair *p = *state;
    float factors[64];
    for (int i = 0; i < 64; i++) factors[i] = 1.0f + (float)i / 8;
    const cv_rope_mode modes[] = {CV_ROPE_NORM, CV_ROPE_NEOX};
    const int32_t n_rots[] = {128, 64, 40, 6};
    for (int m = 0; m < 2; m++)
        for (int r = 0; r < 4; r++)
            for (int f = 0; f < 3; f++) {
                /* f 1: frequency factors; f 2: and Phi-3's attention factor on cos and sin. */
                int32_t nt = 4, nh = 3, hd = 128;
                const double ms = f == 2 ? 1.25 : 1.0;
                cv_rope_params rp = {modes[m], n_rots[r], 10000.0f, 0.5f, f ? factors : NULL, f == 2 ? 1.25f : 0, 0, 0, 0};
                int32_t pos[4] = {0, 1, 77, 4095};
                float *x = fill(nt * nh * hd, 2.0f);
                float *a = malloc(sizeof(float) * nt * nh * hd), *b = malloc(sizeof(float) * nt * nh * hd);
                memcpy(a, x, sizeof(float) * nt * nh * hd);
                memcpy(b, x, sizeof(float) * nt * nh * hd);
                p->ref->ops->rope(p->ref, &rp, a, nt, nh, hd, pos);
                p->fast->ops->rope(p->fast, &rp, b, nt, nh, hd, pos);
                assert_close(b, a, nt * nh * hd, TOL_ROPE, "rope");
                /* Position 0 only scales by the attention factor (the identity without
                 * one); dims past n_rot pass through, unscaled. */
                for (int32_t d = 0; d < nh * hd; d++)
                    assert_true(fabs(a[d] - (d % hd < n_rots[r] ? ms : 1.0) * x[d]) <= TOL_F64 * fmax(1, fabs(a[d])));
                for (int32_t t = 0; t < nt; t++)
                    for (int32_t h = 0; h < nh; h++)
                        for (int32_t d = n_rots[r]; d < hd; d++)
                            assert_true(a[(t * nh + h) * hd + d] == x[(t * nh + h) * hd + d]);
                /* Independent check of one pair: token 2, head 1, pair i. */
                int i = n_rots[r] / 2 - 1;
                double th = 77.0 * 0.5 * pow(10000.0, -2.0 * i / n_rots[r]) / (f ? factors[i] : 1.0);
                int ia = modes[m] == CV_ROPE_NEOX ? i : 2 * i, ib = modes[m] == CV_ROPE_NEOX ? i + n_rots[r] / 2 : 2 * i + 1;
                const float *src = x + (2 * nh + 1) * hd, *dst = a + (2 * nh + 1) * hd;
                assert_true(fabs(dst[ia] - ms * (src[ia] * cos(th) - src[ib] * sin(th))) < TOL_F64);
                assert_true(fabs(dst[ib] - ms * (src[ia] * sin(th) + src[ib] * cos(th))) < TOL_F64);
                free(x);
                free(a);
                free(b);
            }
}

static void test_softmax(void **state) {
    pair *p = *state;
    const int32_t ns[] = {1, 9, 100, 32000};
    for (int k = 0; k < 4; k++) {
        int32_t n = ns[k];
        float *a = fill(3 * n, 20.0f), *b = malloc(sizeof(float) * 3 * n);
        memcpy(b, a, sizeof(float) * 3 * n);
        p->ref->ops->softmax(p->ref, a, 3, n);
        p->fast->ops->softmax(p->fast, b, 3, n);
        assert_close(b, a, 3 * n, TOL_SOFTMAX, "softmax");
        double s = 0;
        for (int32_t i = 0; i < n; i++) s += a[i];
        assert_true(fabs(s - 1) < TOL_F64);
        free(a);
        free(b);
    }
}

static void test_glu_and_elementwise(void **state) {
    pair *p = *state;
    int64_t n = 100003; /* over the parallel threshold, and a ragged tail */
    float *g = fill(n, 12.0f), *u = fill(n, 2.0f), *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    for (int kind = 0; kind <= 1; kind++) {
        p->ref->ops->glu(p->ref, (cv_glu_kind)kind, g, u, a, n);
        memcpy(b, g, sizeof(float) * n);
        p->fast->ops->glu(p->fast, (cv_glu_kind)kind, b, u, b, n); /* out aliases gate */
        assert_close(b, a, n, TOL_GLU, kind ? "geglu" : "swiglu");
    }
    /* Known values: silu(1) = 1 / (1 + e^-1); gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)). */
    float one = 1, x1 = 1, y;
    p->ref->ops->glu(p->ref, CV_GLU_SWIGLU, &x1, &one, &y, 1);
    assert_true(fabs(y - 0.7310585786) < TOL_GLU);
    p->ref->ops->glu(p->ref, CV_GLU_GEGLU, &x1, &one, &y, 1);
    assert_true(fabs(y - 0.5 * (1 + tanh(0.7978845608 * 1.044715))) < TOL_GLU);

    p->ref->ops->add(p->ref, g, u, a, n);
    memcpy(b, g, sizeof(float) * n);
    p->fast->ops->add(p->fast, b, u, b, n);
    assert_memory_equal(a, b, sizeof(float) * n);
    for (int64_t i = 0; i < n; i += 1000) assert_true(a[i] == g[i] + u[i]);

    memcpy(a, g, sizeof(float) * n);
    memcpy(b, g, sizeof(float) * n);
    p->ref->ops->scale(p->ref, a, 0.37f, n);
    p->fast->ops->scale(p->fast, b, 0.37f, n);
    assert_memory_equal(a, b, sizeof(float) * n);

    /* scatter_add_rows: rows 0..2 of u, weighted, into rows 3, 0, 5 of 7 rows of 1003
     * (a ragged tail); the same bits as y += w * x in float, on both sets */
    const int32_t ids[3] = {3, 0, 5}, dim = 1003;
    const float w3[3] = {0.25f, -1.5f, 0.7f};
    memcpy(a, g, sizeof(float) * 7 * dim);
    memcpy(b, g, sizeof(float) * 7 * dim);
    p->ref->ops->scatter_add_rows(p->ref, u, ids, w3, 3, dim, a);
    p->fast->ops->scatter_add_rows(p->fast, u, ids, w3, 3, dim, b);
    assert_memory_equal(a, b, sizeof(float) * 7 * dim);
    for (int32_t i = 0; i < 3; i++)
        for (int32_t j = 0; j < dim; j += 97) {
            float want = g[ids[i] * dim + j] + w3[i] * u[i * dim + j];
            assert_true(a[ids[i] * dim + j] == want);
        }
    assert_memory_equal(a + 1 * dim, g + 1 * dim, sizeof(float) * 2 * dim); /* rows 1, 2 untouched */

    memcpy(a, g, sizeof(float) * n);
    memcpy(b, g, sizeof(float) * n);
    p->ref->ops->softcap(p->ref, a, 5.0f, n);
    p->fast->ops->softcap(p->fast, b, 5.0f, n);
    assert_close(b, a, n, TOL_SOFTCAP, "softcap");
    for (int64_t i = 0; i < n; i++) assert_true(fabsf(a[i]) <= 5.0f);
    free(g);
    free(u);
    free(a);
    free(b);
}

static void test_add_bias(void **state) {
    pair *p = *state;
    float *x = fill(3 * 33, 1.0f), *bias = fill(33, 1.0f), *a = malloc(sizeof(float) * 99);
    memcpy(a, x, sizeof(float) * 99);
    p->fast->ops->add_bias(p->fast, a, bias, 3, 33);
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 33; j++) assert_true(a[r * 33 + j] == x[r * 33 + j] + bias[j]);
    free(x);
    free(bias);
    free(a);
}

/* ---- paged KV and attention -------------------------------------------------------- */

/* Several sequences in one batch over shuffled blocks: each sequence has a history
 * stored first, then a chunk of new tokens stored and attended causally. The result
 * is checked against float64 attention over contiguous copies of each sequence's K and
 * V (so the paged addressing is checked too), and fast against reference. */
static void check_attention(pair *p, cv_type kvt, int32_t n_heads, int32_t n_kv, int32_t hd, int32_t window,
                            float softcap) {
    enum { NSEQ = 3, BS = 16, NBLK = 40 };
    const int32_t hist[NSEQ] = {0, 37, 70}, fresh[NSEQ] = {20, 1, 3};
    int32_t tables[NSEQ][NBLK];
    int32_t perm[NBLK];
    for (int i = 0; i < NBLK; i++) perm[i] = i;
    for (int i = NBLK - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int used = 0;
    for (int s = 0; s < NSEQ; s++) {
        int nb = (hist[s] + fresh[s] + BS - 1) / BS;
        for (int b = 0; b < nb; b++) tables[s][b] = perm[used++];
    }
    assert_true(used <= NBLK);
    size_t esz = kvt == CV_TYPE_F32 ? 4 : 2, width = (size_t)n_kv * hd;
    cv_kv_layer kv = {calloc(NBLK * BS * width, esz), calloc(NBLK * BS * width, esz), kvt, BS, n_kv, hd, 0};
    assert_true(kv.k && kv.v);
    /* Contiguous float copies of what the cache holds, rounded like the pool. */
    float *kc[NSEQ], *vc[NSEQ];
    int32_t total = 0;
    for (int s = 0; s < NSEQ; s++) total += fresh[s];
    cv_attn_row *rows = calloc((size_t)total, sizeof *rows);
    float *k = fill((int64_t)total * width, 1.0f), *v = fill((int64_t)total * width, 1.0f);
    int32_t i = 0;
    for (int s = 0; s < NSEQ; s++) {
        int32_t len = hist[s] + fresh[s];
        kc[s] = fill((int64_t)len * width, 1.0f);
        vc[s] = fill((int64_t)len * width, 1.0f);
        cv_attn_row hrow[128];
        for (int32_t t = 0; t < hist[s]; t++) hrow[t] = (cv_attn_row){tables[s], t, 0};
        if (hist[s]) p->ref->ops->kv_store(p->ref, &kv, hrow, hist[s], kc[s], vc[s]);
        for (int32_t t = 0; t < fresh[s]; t++, i++) {
            int32_t pos = hist[s] + t;
            rows[i] = (cv_attn_row){tables[s], pos, window && pos - window + 1 > 0 ? pos - window + 1 : 0};
            memcpy(kc[s] + (int64_t)pos * width, k + (int64_t)i * width, width * sizeof(float));
            memcpy(vc[s] + (int64_t)pos * width, v + (int64_t)i * width, width * sizeof(float));
        }
        if (kvt == CV_TYPE_F16)
            for (int64_t j = 0; j < (int64_t)len * (int64_t)width; j++) {
                kc[s][j] = cv_fp16_to_fp32(cv_fp32_to_fp16(kc[s][j]));
                vc[s][j] = cv_fp16_to_fp32(cv_fp32_to_fp16(vc[s][j]));
            }
    }
    /* The fast backend stores the new tokens: its conversion must match the reference. */
    p->fast->ops->kv_store(p->fast, &kv, rows, total, k, v);
    cv_attn_params ap = {n_heads, 1.0f / sqrtf((float)hd), softcap};
    int64_t qw = (int64_t)n_heads * hd;
    float *q = fill(total * qw, 1.5f), *oa = malloc(sizeof(float) * total * qw), *ob = malloc(sizeof(float) * total * qw);
    p->ref->ops->attention(p->ref, &ap, &kv, rows, total, q, oa);
    p->fast->ops->attention(p->fast, &ap, &kv, rows, total, q, ob);
    assert_close(ob, oa, total * qw, TOL_ATTENTION, "attention fast vs reference");
    i = 0;
    int32_t group = n_heads / n_kv;
    double sc[128];
    for (int s = 0; s < NSEQ; s++)
        for (int32_t t = 0; t < fresh[s]; t++, i++) {
            const cv_attn_row *r = &rows[i];
            for (int32_t h = 0; h < n_heads; h++) {
                const float *qh = q + i * qw + h * hd;
                int32_t g = h / group;
                double mx = -INFINITY, sum = 0;
                for (int32_t pp = r->lo; pp <= r->pos; pp++) {
                    double d = 0;
                    for (int32_t e = 0; e < hd; e++) d += (double)qh[e] * kc[s][pp * width + g * hd + e];
                    d *= ap.scale;
                    if (softcap > 0) d = softcap * tanh(d / softcap);
                    sc[pp - r->lo] = d;
                    mx = fmax(mx, d);
                }
                for (int32_t pp = r->lo; pp <= r->pos; pp++) sum += exp(sc[pp - r->lo] - mx);
                for (int32_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int32_t pp = r->lo; pp <= r->pos; pp++)
                        o += exp(sc[pp - r->lo] - mx) / sum * vc[s][pp * width + g * hd + e];
                    if (!(fabs(o - oa[i * qw + h * hd + e]) < TOL_F64))
                        fail_msg("attention reference: token %d head %d dim %d: %.7g, float64 says %.7g", i, h, e,
                                 oa[i * qw + h * hd + e], o);
                }
            }
        }
    for (int s = 0; s < NSEQ; s++) {
        free(kc[s]);
        free(vc[s]);
    }
    free(kv.k);
    free(kv.v);
    free(rows);
    free(k);
    free(v);
    free(q);
    free(oa);
    free(ob);
}

static void test_attention_paged(void **state) {
    pair *p = *state;
    check_attention(p, CV_TYPE_F16, 8, 2, 64, 0, 0);
    check_attention(p, CV_TYPE_F32, 8, 2, 64, 0, 0);
    check_attention(p, CV_TYPE_F16, 4, 4, 20, 0, 0);        /* MHA, head_dim not a multiple of 8 */
    check_attention(p, CV_TYPE_F16, 14, 2, 64, 0, 0);       /* group of 7 */
    check_attention(p, CV_TYPE_F16, 36, 2, 16, 0, 0);       /* group of 18: split in parts */
    check_attention(p, CV_TYPE_F32, 8, 1, 32, 10, 0);       /* sliding window */
    check_attention(p, CV_TYPE_F16, 4, 2, 32, 0, 0.5f);     /* softcap that bites */
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_cpu_ops"));
    printf("test_cpu_ops: fast path %s\n", cv_cpu_has_avx2() ? "avx2" : "none on this CPU (reference vs reference)");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fast_matches_reference),
        cmocka_unit_test(test_matmul_thread_count_invariant),
        cmocka_unit_test(test_matmul_avx512_bit_identical_to_avx2),
        cmocka_unit_test(test_matmul_k_quants_bit_identical_to_reference),
        cmocka_unit_test(test_matmul_chunks_when_scratch_is_small),
        cmocka_unit_test(test_weight_load_rejects_bad_shapes),
        cmocka_unit_test(test_get_rows_dequantizes),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_glu_and_elementwise),
        cmocka_unit_test(test_add_bias),
        cmocka_unit_test(test_attention_paged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
