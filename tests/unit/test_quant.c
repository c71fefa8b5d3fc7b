/* Tests for kernels/quant: layouts, conversions, reference quantizers (against
 * hashes of ggml's output), error bounds, and the AVX2 paths against the reference.
 * Random data is drawn fresh each run from a printed seed (CORVID_TEST_SEED=N
 * reproduces a run). */
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

#include "quant.h"
#include "quant_blocks.h"

static uint64_t g_rng;

static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

static float nrand(void) {
    return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()));
}

/* Weight-like data of several shapes: gaussian, heavy outliers, one-signed, zero blocks. */
static void fill(float *x, int64_t n, int kind) {
    for (int64_t i = 0; i < n; i++) {
        float v = nrand();
        if (kind == 1 && urand() < 0.01) v *= 40;
        if (kind == 2) v = fabsf(v) + 0.3f;
        if (kind == 3 && (i / 256) % 3 == 1) v = 0;
        x[i] = v * 0.02f;
    }
}

static const cv_type k_dot_types[] = {CV_TYPE_F32, CV_TYPE_F16, CV_TYPE_BF16, CV_TYPE_Q4_0, CV_TYPE_Q5_0,
                                      CV_TYPE_Q8_0, CV_TYPE_Q4_K, CV_TYPE_Q5_K, CV_TYPE_Q6_K, CV_TYPE_Q8_K};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- type table ---- */

static void test_type_table(void **state) {
    (void)state;
    const struct { cv_type t; const char *name; uint32_t be, bb; } want[] = {
        {CV_TYPE_F32, "F32", 1, 4},      {CV_TYPE_F16, "F16", 1, 2},      {CV_TYPE_BF16, "BF16", 1, 2},
        {CV_TYPE_Q4_0, "Q4_0", 32, 18},  {CV_TYPE_Q5_0, "Q5_0", 32, 22},  {CV_TYPE_Q8_0, "Q8_0", 32, 34},
        {CV_TYPE_Q4_K, "Q4_K", 256, 144}, {CV_TYPE_Q5_K, "Q5_K", 256, 176}, {CV_TYPE_Q6_K, "Q6_K", 256, 210},
        {CV_TYPE_Q8_K, "Q8_K", 256, 292},
    };
    for (size_t i = 0; i < N_OF(want); i++) {
        const cv_type_info *ti = cv_type_get(want[i].t);
        assert_non_null(ti);
        assert_string_equal(ti->name, want[i].name);
        assert_int_equal(ti->block_elems, want[i].be);
        assert_int_equal(ti->block_bytes, want[i].bb);
        assert_true(ti->supported);
    }
    /* known to GGUF but not computed by corvid: named, sized, unsupported */
    assert_string_equal(cv_type_get(CV_TYPE_Q3_K)->name, "Q3_K");
    assert_int_equal(cv_type_get(CV_TYPE_Q3_K)->block_bytes, 110);
    assert_false(cv_type_get(CV_TYPE_Q4_1)->supported);
    assert_null(cv_type_get(4));   /* removed Q4_2 */
    assert_null(cv_type_get(31));
    assert_null(cv_type_get(CV_TYPE_COUNT));
    assert_null(cv_type_get(0xffffffffu));

    assert_int_equal(cv_type_row_bytes(CV_TYPE_Q4_0, 64), 36);
    assert_int_equal(cv_type_row_bytes(CV_TYPE_Q4_0, 172), 0);  /* not a multiple of 32 */
    assert_int_equal(cv_type_row_bytes(CV_TYPE_Q6_K, 512), 420);
    assert_int_equal(cv_type_row_bytes(CV_TYPE_F16, 7), 14);
    assert_int_equal(cv_type_row_bytes(CV_TYPE_F32, -1), 0);
    assert_int_equal(cv_type_row_bytes((cv_type)4, 32), 0);

    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_Q4_0), CV_TYPE_Q8_0);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_Q5_0), CV_TYPE_Q8_0);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_Q8_0), CV_TYPE_Q8_0);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_Q4_K), CV_TYPE_Q8_K);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_Q6_K), CV_TYPE_Q8_K);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_F16), CV_TYPE_F32);
    assert_int_equal(cv_type_vec_dot_type(CV_TYPE_BF16), CV_TYPE_F32);
}

/* ---- half and bfloat16 ---- */

static void test_fp16_exhaustive_and_special(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = cv_fp16_to_fp32((uint16_t)h);
        const uint16_t h16 = (uint16_t)h;
        _Float16 ref;
        memcpy(&ref, &h16, 2);
        if (f != f) {
            assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
            assert_int_equal(cv_fp32_to_fp16(f) & 0x7c00, 0x7c00);
            assert_true(cv_fp32_to_fp16(f) & 0x3ff);
            continue;
        }
        assert_true(f == (float)ref);
        assert_int_equal(cv_fp32_to_fp16(f), h);  /* exact round trip, -0 and subnormals too */
    }
    assert_int_equal(cv_fp32_to_fp16(65504.f), 0x7bff);
    assert_int_equal(cv_fp32_to_fp16(65519.996f), 0x7bff);
    assert_int_equal(cv_fp32_to_fp16(65520.f), 0x7c00);  /* the tie rounds to even: infinity */
    assert_int_equal(cv_fp32_to_fp16(INFINITY), 0x7c00);
    assert_int_equal(cv_fp32_to_fp16(-INFINITY), 0xfc00);
    assert_int_equal(cv_fp32_to_fp16(0x1p-24f), 0x0001);
    assert_int_equal(cv_fp32_to_fp16(0x1p-25f), 0x0000);           /* tie to even: zero */
    assert_int_equal(cv_fp32_to_fp16(0x1.000002p-25f), 0x0001);
    assert_int_equal(cv_fp32_to_fp16(0x1.8p-24f), 0x0002);         /* 1.5 ulp: tie to even */
    assert_int_equal(cv_fp32_to_fp16(-0x1p-14f), 0x8400);          /* smallest normal */
    assert_int_equal(cv_fp32_to_fp16(0x1.ff8p-15f), 0x03ff);       /* largest subnormal */
    assert_int_equal(cv_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00);    /* tie, even stays */
    assert_int_equal(cv_fp32_to_fp16(1.0f + 0x1.8p-10f), 0x3c02);  /* tie, odd rounds up */
    assert_int_equal(cv_fp32_to_fp16(NAN) & 0x7e00, 0x7e00);
    assert_true(isinf(cv_fp16_to_fp32(0xfc00)) && cv_fp16_to_fp32(0xfc00) < 0);
}

static void test_fp16_random_matches_compiler(void **state) {
    (void)state;
    for (int i = 0; i < 2000000; i++) {
        /* all bit patterns, and a dense sample of the half range and its edges */
        uint32_t u = (uint32_t)rnd();
        if (i & 1) u = (u & 0x80000000u) | (0x33000000u + (u & 0x7fffffffu) % (0x47800000u - 0x33000000u));
        const float f = u2f(u);
        if (f != f) continue;
        const _Float16 h = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        assert_int_equal(cv_fp32_to_fp16(f), hb);
    }
}

static void test_bf16_round_trip_and_rounding(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = cv_bf16_to_fp32((uint16_t)h);
        assert_int_equal(f2u(f), h << 16);
        if (f != f) {
            assert_true(cv_fp32_to_bf16(f) & 0x40);  /* quiet */
            assert_int_equal(cv_fp32_to_bf16(f) & 0x7f80, 0x7f80);
        } else {
            assert_int_equal(cv_fp32_to_bf16(f), h);
        }
    }
    for (int i = 0; i < 1000000; i++) {
        const uint32_t u = (uint32_t)rnd();
        const float f = u2f(u);
        if (f != f) continue;
        /* nearest of the two neighbours, ties to the even one */
        const uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u, rem = u & 0xffffu;
        uint32_t want = rem < 0x8000 ? lo : rem > 0x8000 ? hi : ((lo >> 16) & 1 ? hi : lo);
        assert_int_equal(cv_fp32_to_bf16(f), want >> 16);
    }
    assert_int_equal(cv_fp32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(cv_fp32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(cv_fp32_to_bf16(0x1p-130f), 0x0008);  /* subnormals are kept */
}

/* ---- layouts: hand-made blocks decode to the documented values ---- */

static void test_block_layouts(void **state) {
    (void)state;
    float y[256];
    cv_block_q4_0 b4 = {.d = 0x3c00};  /* 1.0 */
    for (int j = 0; j < 16; j++) b4.qs[j] = (uint8_t)(j | (15 - j) << 4);
    cv_dequantize_row(CV_TYPE_Q4_0, &b4, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == j - 8);
        assert_true(y[j + 16] == 7 - j);
    }

    cv_block_q5_0 b5 = {.d = 0x4000, .qh = {0x01, 0, 0, 0x80}};  /* 2.0; bits 0 and 31 */
    memset(b5.qs, 0, sizeof b5.qs);
    cv_dequantize_row(CV_TYPE_Q5_0, &b5, y, 32);
    assert_true(y[0] == 0.f && y[1] == -32.f && y[15] == -32.f && y[16] == -32.f && y[31] == 0.f);

    /* Q4_K: sub-block 5 has scale 33 (split 4+2 bits) and min 18; d = 1, dmin = 0.5 */
    cv_block_q4_K k4;
    memset(&k4, 0, sizeof k4);
    k4.d = 0x3c00;
    k4.dmin = 0x3800;
    k4.scales[9] = (33 & 0xF) | ((18 & 0xF) << 4);
    k4.scales[1] |= (33 >> 4) << 6;
    k4.scales[5] |= (18 >> 4) << 6;
    k4.qs[64 + 3] = 0x70;  /* chunk 2 (sub-blocks 4, 5): element 32+3 of the chunk = 7 */
    cv_dequantize_row(CV_TYPE_Q4_K, &k4, y, 256);
    assert_true(y[160 + 3] == 33.f * 7 - 9.f);
    assert_true(y[160 + 4] == -9.f);
    assert_true(y[128 + 3] == 0.f);

    /* Q6_K: element 200 = chunk 1, quarter 2, l = 8: ql high nibble, qh bits 4-5 */
    cv_block_q6_K k6;
    memset(&k6, 0, sizeof k6);
    k6.d = 0x3c00;
    for (int g = 0; g < 16; g++) k6.scales[g] = (int8_t)(g - 8);
    k6.ql[64 + 8] = 0x50;
    k6.qh[32 + 8] = 0x30;
    cv_dequantize_row(CV_TYPE_Q6_K, &k6, y, 256);
    assert_true(y[200] == (200 / 16 - 8) * ((0x5 | 0x30) - 32));
    assert_true(y[199] == (199 / 16 - 8) * -32.f);
}

/* ---- reference quantizers: same bytes as ggml's ---- */

/* FNV-1a hashes of ggml's quantize_row_*_ref output for golden_input(), computed
 * with ggml d99724f2 (x86-64, gcc -O2). */
#define GOLDEN_N 4096
static void golden_input(float *x) {
    uint32_t r = 12345;
    for (int i = 0; i < GOLDEN_N; i++) {
        r ^= r << 13;
        r ^= r >> 17;
        r ^= r << 5;
        const float u = (float)((int32_t)(r >> 8) - 8388608) * (1.0f / 8388608);
        const int blk = i / 256;
        x[i] = blk == 3 ? 0.0f : blk == 5 ? u * u + 0.25f : u * (float)(1 + blk % 4) * 0.01f;
    }
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void test_reference_matches_ggml_bytes(void **state) {
    (void)state;
    const struct { cv_type t; uint64_t h; } want[] = {
        {CV_TYPE_Q4_0, 0x52ca07b9139d345cull}, {CV_TYPE_Q5_0, 0x80f9b28448b57247ull},
        {CV_TYPE_Q8_0, 0x9fc1ae35bc02436aull}, {CV_TYPE_Q4_K, 0xf1cbd2600dbc07d5ull},
        {CV_TYPE_Q5_K, 0x03bc74975473ae1aull}, {CV_TYPE_Q6_K, 0x47fc7bbf96689ffcull},
        {CV_TYPE_Q8_K, 0x3054cc10732fd1d9ull},
    };
    static float x[GOLDEN_N];
    golden_input(x);
    for (size_t i = 0; i < N_OF(want); i++) {
        const size_t rb = cv_type_row_bytes(want[i].t, GOLDEN_N);
        uint8_t *q = xmalloc(rb);
        cv_quantize_row(want[i].t, x, q, GOLDEN_N);
        if (fnv1a(q, rb) != want[i].h) fail_msg("%s: bytes differ from ggml's", cv_type_get(want[i].t)->name);
        free(q);
    }
}

/* ---- quantize -> dequantize error ---- */

/* Bounds on RMS(dequant(quant(x)) - x) / RMS(x): for gaussian-like weights (also
 * one-signed and with zero blocks), and for weights with 1% outliers 40x larger,
 * which cost the formats with few scales per element the most. About 1.3x (1.5x
 * with outliers) what the formats reach; the float ones are 2^-11 and 2^-8 per
 * element. */
static double error_bound(cv_type t, int outliers) {
    switch (t) {
    case CV_TYPE_F16: return 3e-4;
    case CV_TYPE_BF16: return 2.5e-3;
    case CV_TYPE_Q8_0: return outliers ? 0.018 : 0.008;
    case CV_TYPE_Q8_K: return outliers ? 0.045 : 0.009;
    case CV_TYPE_Q6_K: return outliers ? 0.05 : 0.023;
    case CV_TYPE_Q5_0: return outliers ? 0.11 : 0.055;
    case CV_TYPE_Q5_K: return outliers ? 0.075 : 0.045;
    case CV_TYPE_Q4_0: return outliers ? 0.14 : 0.11;
    case CV_TYPE_Q4_K: return outliers ? 0.12 : 0.09;
    default: return 0;
    }
}

static void test_quantize_error_bounds(void **state) {
    (void)state;
    const int64_t n = 256 * 64;
    float *x = xmalloc(n * 4), *y = xmalloc(n * 4);
    uint8_t *q = xmalloc(n * 4);
    const cv_type types[] = {CV_TYPE_F16, CV_TYPE_BF16, CV_TYPE_Q4_0, CV_TYPE_Q5_0, CV_TYPE_Q8_0,
                             CV_TYPE_Q4_K, CV_TYPE_Q5_K, CV_TYPE_Q6_K, CV_TYPE_Q8_K};
    for (int kind = 0; kind < 4; kind++) {
        fill(x, n, kind);
        for (size_t i = 0; i < N_OF(types); i++) {
            cv_quantize_row(types[i], x, q, n);
            cv_dequantize_row(types[i], q, y, n);
            double e2 = 0, x2 = 0;
            for (int64_t j = 0; j < n; j++) {
                e2 += (double)(y[j] - x[j]) * (y[j] - x[j]);
                x2 += (double)x[j] * x[j];
            }
            const double rel = sqrt(e2 / x2);
            const double bound = error_bound(types[i], kind == 1);
            print_message("  %-5s data %d: relative RMS error %.4f (bound %.4f)\n",
                          cv_type_get(types[i])->name, kind, rel, bound);
            assert_true(rel <= bound);
            if (kind == 3) {  /* zero blocks stay exactly zero */
                for (int64_t j = 256; j < 512; j++) assert_true(y[j] == 0.f);
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

/* ---- dot products ---- */

static size_t act_bytes(cv_type t, int64_t n) { return cv_type_row_bytes(cv_type_vec_dot_type(t), n); }

/* The dot of the dequantized rows in double, and the sum of |products| (scale of
 * the rounding error). */
static double dot_dequant(cv_type t, int64_t n, const void *w, const void *a, double *abs_sum) {
    float *wf = xmalloc(n * 4), *af = xmalloc(n * 4);
    cv_dequantize_row(t, w, wf, n);
    cv_dequantize_row(cv_type_vec_dot_type(t), a, af, n);
    double s = 0, sa = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)wf[i] * af[i];
        sa += fabs((double)wf[i] * af[i]);
    }
    free(wf);
    free(af);
    *abs_sum = sa;
    return s;
}

/* Float summation-order tolerance for dots, relative to sum |w_i a_i|. */
#define DOT_TOL 2e-5

static int64_t dot_len(cv_type t, int pick) {
    const int64_t be = cv_type_get(t)->block_elems;
    if (be == 1) return 1 + (int64_t)(rnd() % 3000);  /* any length, tails included */
    const int64_t blocks[] = {1, 2, 3, 7, 64, 11 + (int64_t)(rnd() % 60)};
    return be * blocks[pick % 6];
}

static void test_dot_reference_and_avx2(void **state) {
    (void)state;
    cv_quant_force_scalar(0);
    const int have_avx2 = strcmp(cv_quant_path(), "avx2") == 0;
    print_message("  fast path: %s\n", cv_quant_path());
    for (size_t ti = 0; ti < N_OF(k_dot_types); ti++) {
        const cv_type t = k_dot_types[ti], at = cv_type_vec_dot_type(t);
        for (int pick = 0; pick < 12; pick++) {
            const int64_t n = dot_len(t, pick);
            float *x = xmalloc(n * 4), *a = xmalloc(n * 4);
            fill(x, n, pick % 4);
            fill(a, n, 1);
            for (int64_t i = 0; i < n; i++) a[i] *= 50;  /* activation-sized values */
            void *wq = xmalloc(cv_type_row_bytes(t, n)), *aq = xmalloc(act_bytes(t, n));
            cv_quantize_row(t, x, wq, n);
            cv_quantize_row(at, a, aq, n);
            double abs_sum;
            const double exact = dot_dequant(t, n, wq, aq, &abs_sum);
            cv_quant_force_scalar(1);
            const float ref = cv_vec_dot(t, n, wq, aq);
            cv_quant_force_scalar(0);
            const float fast = cv_vec_dot(t, n, wq, aq);
            const double tol = DOT_TOL * abs_sum + 1e-30;
            if (fabs(ref - exact) > tol || fabs(fast - exact) > tol)
                fail_msg("%s n=%lld: scalar %.9g avx2 %.9g exact %.9g (tol %.3g)", cv_type_get(t)->name,
                         (long long)n, ref, fast, exact, tol);
            free(x);
            free(a);
            free(wq);
            free(aq);
        }
    }
    assert_true(have_avx2 || !__builtin_cpu_supports("avx2"));
}

static void test_dot_rows_equal_single_dots(void **state) {
    (void)state;
    for (int scalar = 0; scalar < 2; scalar++) {
        cv_quant_force_scalar(scalar);
        for (size_t ti = 0; ti < N_OF(k_dot_types); ti++) {
            const cv_type t = k_dot_types[ti], at = cv_type_vec_dot_type(t);
            const int64_t n = dot_len(t, 5);
            const int rows = 9;
            const size_t ab = act_bytes(t, n), stride = ab + 64;  /* rows need not be packed */
            float *x = xmalloc(n * 4), *out = xmalloc(rows * 4);
            void *wq = xmalloc(cv_type_row_bytes(t, n));
            uint8_t *aq = xmalloc(stride * rows);
            fill(x, n, 0);
            cv_quantize_row(t, x, wq, n);
            for (int r = 0; r < rows; r++) {
                fill(x, n, r % 4);
                cv_quantize_row(at, x, aq + r * stride, n);
            }
            for (int k = 1; k <= rows; k++) {
                cv_vec_dot_rows(t, n, wq, aq, stride, k, out);
                for (int r = 0; r < k; r++) {
                    const float single = cv_vec_dot(t, n, wq, aq + r * stride);
                    if (f2u(out[r]) != f2u(single))
                        fail_msg("%s %s rows=%d r=%d: %.9g vs single %.9g", cv_quant_path(),
                                 cv_type_get(t)->name, k, r, out[r], single);
                }
            }
            free(x);
            free(out);
            free(wq);
            free(aq);
        }
    }
    cv_quant_force_scalar(0);
}

/* ---- activation quantizers: fast path = reference bytes ---- */

static void test_quantize_act_matches_reference(void **state) {
    (void)state;
    const cv_type types[] = {CV_TYPE_F32, CV_TYPE_Q8_0, CV_TYPE_Q8_K};
    const int64_t n = 256 * 24;
    float *x = xmalloc(n * 4);
    uint8_t *ref = xmalloc(n * 4), *fast = xmalloc(n * 4);
    for (int kind = 0; kind < 7; kind++) {
        fill(x, n, kind % 4);
        if (kind == 4) {  /* exact .5 ties after scaling: a block max of 127 makes id = 1 */
            for (int64_t i = 0; i < n; i++) x[i] = (float)((int)(rnd() % 254) - 127) + 0.5f * (i % 2);
            for (int64_t i = 0; i < n; i += 32) x[i] = (i / 32) % 2 ? 127.f : -127.f;
        }
        if (kind == 5) {  /* the largest magnitude appears with both signs */
            for (int64_t i = 0; i < n; i += 16) x[i] = (i / 16) % 2 ? 3.f : -3.f;
        }
        if (kind == 6) {  /* subnormal blocks: 1/scale overflows, levels must stay in +-127 */
            for (int64_t i = 0; i < n; i++) x[i] = (float)((int)(rnd() % 201) - 100) * 0x1p-140f;
        }
        for (size_t i = 0; i < N_OF(types); i++) {
            const size_t rb = cv_type_row_bytes(types[i], n);
            memset(ref, 0xa5, rb);
            memset(fast, 0x5a, rb);
            cv_quantize_row(types[i], x, ref, n);
            cv_quantize_row_act(types[i], x, fast, n);
            if (memcmp(ref, fast, rb)) fail_msg("%s data %d: fast activation bytes differ", cv_type_get(types[i])->name, kind);
            if (types[i] == CV_TYPE_Q8_0) {
                for (int64_t b = 0; b < n / 32; b++)
                    for (int j = 0; j < 32; j++) assert_true(((const cv_block_q8_0 *)ref)[b].qs[j] != -128);
            }
        }
    }
    free(x);
    free(ref);
    free(fast);
}

static int setup_seed(void **state) {
    (void)state;
    const char *s = getenv("CORVID_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    printf("test_quant: seed %llu (CORVID_TEST_SEED to repeat)\n", (unsigned long long)seed);
    g_rng = seed * 2654435761u + 0x9e3779b97f4a7c15ull;
    if (!g_rng) g_rng = 1;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_fp16_exhaustive_and_special),
        cmocka_unit_test(test_fp16_random_matches_compiler),
        cmocka_unit_test(test_bf16_round_trip_and_rounding),
        cmocka_unit_test(test_block_layouts),
        cmocka_unit_test(test_reference_matches_ggml_bytes),
        cmocka_unit_test(test_quantize_error_bounds),
        cmocka_unit_test(test_dot_reference_and_avx2),
        cmocka_unit_test(test_dot_rows_equal_single_dots),
        cmocka_unit_test(test_quantize_act_matches_reference),
    };
    return cmocka_run_group_tests(tests, setup_seed, NULL);
}
