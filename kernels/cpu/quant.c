/* quant: type table, half/bfloat16 conversions, scalar reference kernels and the
 * run-time choice between them and the AVX2 kernels (quant_avx2.c).
 *
 * The quantizers follow ggml's reference algorithms step by step, in the same float
 * operation order, because the goal is identical output bytes: Q4_0/Q5_0/Q8_0 scale
 * by the largest magnitude; Q4_K/Q5_K fit a scale and a min per 32 elements by a
 * weighted least-squares search over candidate scales, then quantize the 8 scales
 * and mins to 6 bits against the block's largest; Q6_K fits a signed scale per 16
 * elements by a search around -32/max, then quantizes the 16 scales to int8.
 * This file must be compiled without FMA contraction (the Makefile's -std=c11 does
 * that) so that a*b+c rounds twice, as in ggml's reference build.
 */
#include "quant.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu_features.h"
#include "quant_avx2.h"
#include "quant_blocks.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- type table ---- */

static const cv_type_info k_types[CV_TYPE_COUNT] = {
    [CV_TYPE_F32] = {"F32", 1, 4, 1},
    [CV_TYPE_F16] = {"F16", 1, 2, 1},
    [CV_TYPE_Q4_0] = {"Q4_0", CV_QK4_0, sizeof(cv_block_q4_0), 1},
    [CV_TYPE_Q4_1] = {"Q4_1", 32, 20, 0},
    [CV_TYPE_Q5_0] = {"Q5_0", CV_QK5_0, sizeof(cv_block_q5_0), 1},
    [CV_TYPE_Q5_1] = {"Q5_1", 32, 24, 0},
    [CV_TYPE_Q8_0] = {"Q8_0", CV_QK8_0, sizeof(cv_block_q8_0), 1},
    [CV_TYPE_Q8_1] = {"Q8_1", 32, 36, 0},
    [CV_TYPE_Q2_K] = {"Q2_K", CV_QK_K, 84, 0},
    [CV_TYPE_Q3_K] = {"Q3_K", CV_QK_K, 110, 0},
    [CV_TYPE_Q4_K] = {"Q4_K", CV_QK_K, sizeof(cv_block_q4_K), 1},
    [CV_TYPE_Q5_K] = {"Q5_K", CV_QK_K, sizeof(cv_block_q5_K), 1},
    [CV_TYPE_Q6_K] = {"Q6_K", CV_QK_K, sizeof(cv_block_q6_K), 1},
    [CV_TYPE_Q8_K] = {"Q8_K", CV_QK_K, sizeof(cv_block_q8_K), 1},
    [16] = {"IQ2_XXS", CV_QK_K, 66, 0},
    [17] = {"IQ2_XS", CV_QK_K, 74, 0},
    [18] = {"IQ3_XXS", CV_QK_K, 98, 0},
    [19] = {"IQ1_S", CV_QK_K, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},
    [21] = {"IQ3_S", CV_QK_K, 110, 0},
    [22] = {"IQ2_S", CV_QK_K, 82, 0},
    [23] = {"IQ4_XS", CV_QK_K, 136, 0},
    [24] = {"I8", 1, 1, 0},
    [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},
    [27] = {"I64", 1, 8, 0},
    [28] = {"F64", 1, 8, 0},
    [29] = {"IQ1_M", CV_QK_K, 56, 0},
    [CV_TYPE_BF16] = {"BF16", 1, 2, 1},
    [34] = {"TQ1_0", CV_QK_K, 54, 0},
    [35] = {"TQ2_0", CV_QK_K, 66, 0},
    [39] = {"MXFP4", 32, 17, 0},
    [40] = {"NVFP4", 64, 36, 0},
    [41] = {"Q1_0", 128, 18, 0},
    [42] = {"Q2_0", 64, 18, 0},
};

const cv_type_info *cv_type_get(uint32_t t) {
    if (t >= CV_TYPE_COUNT || !k_types[t].name) return NULL;
    return &k_types[t];
}

size_t cv_type_row_bytes(cv_type t, int64_t n) {
    const cv_type_info *ti = cv_type_get((uint32_t)t);
    if (!ti || n < 0 || n % ti->block_elems) return 0;
    return (size_t)(n / ti->block_elems) * ti->block_bytes;
}

cv_type cv_type_vec_dot_type(cv_type t) {
    switch (t) {
    case CV_TYPE_Q4_0: case CV_TYPE_Q5_0: case CV_TYPE_Q8_0: return CV_TYPE_Q8_0;
    case CV_TYPE_Q4_K: case CV_TYPE_Q5_K: case CV_TYPE_Q6_K: case CV_TYPE_Q8_K: return CV_TYPE_Q8_K;
    default: return CV_TYPE_F32;
    }
}

/* ---- half and bfloat16 ---- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float cv_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {  /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (exp == 31) {  /* inf, or NaN made quiet (as F16C and ggml do) */
        return f32_from_bits(sign | 0x7f800000u | (mant ? 0x400000u : 0) | (mant << 13));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t cv_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00;          /* NaN: ggml's canonical quiet NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00;         /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {                              /* below 2^-14: half subnormal */
        if (ax <= 0x33000000u) return sign;              /* <= 2^-25 rounds (to even) to 0 */
        uint32_t m = (ax & 0x7fffff) | 0x800000, s = 126 - (ax >> 23);
        uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t h = (ax >> 13) - (112u << 10), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float cv_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t cv_fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64);  /* quiet the NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---- shared pieces of the reference quantizers ---- */

/* Round to nearest, ties to even, as ggml's float-magic nearest_int (|v| < 2^22). */
static int nearest_int(float v) {
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* The activation quantizers' levels stay in [-127, 127] even when a block's scale
 * under- or overflows (subnormal or huge input gives inf or NaN after scaling):
 * NaN becomes 0. This never changes a level for normal input, and keeps -128 out
 * of activations, which the AVX2 sign trick relies on. */
static float clamp127(float v) { return v == v ? MAX(-127.f, MIN(127.f, v)) : 0.f; }

/* (int8_t)v, truncating, as ggml's Q4_0/Q5_0 quantizers convert; NaN (from inf or
 * NaN input) and out-of-range values give 0, which is also what x86 makes of them,
 * instead of undefined behaviour. */
static int8_t trunc_i8(float v) { return v > -129.f && v < 128.f ? (int8_t)v : 0; }

/* Largest-magnitude element with its sign; the first one wins ties. */
static float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

/* Signed scale for n values on the grid [-nmax, nmax-1] minimising the x^2-weighted
 * squared error: start from -nmax/max, try 18 nearby grid sizes, keep the best by
 * the least-squares criterion sumlx^2/suml2. L gets q + nmax. (ggml: make_qx_quants
 * with rmse_type 1.) */
static float fit_signed_scale(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    float max = signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = MAX(-nmax, MIN(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = MAX(-nmax, MIN(nmax - 1, nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + MAX(-nmax, MIN(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Scale and min for 32 values on the grid [0, nmax] (value = scale*q - *neg_min),
 * weighted squared error with weights w: start from the plain min/max fit, then
 * try nstep+1 grid sizes (nmax + rmin + rdelta*k) each followed by a closed-form
 * weighted least-squares refit, keeping the best. (ggml: make_qkx2_quants.) */
static float fit_scale_min(int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, float rmin, float rdelta, int nstep) {
    enum { N = 32 };
    uint8_t Laux[N];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < N; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, N);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_err = 0;
    for (int i = 0; i < N; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        best_err += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < N; i++) {
            int l = MAX(0, MIN(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < N; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best_err) {
            memcpy(L, Laux, N);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* The 8 six-bit scales and mins of Q4_K/Q5_K: j < 4 in the low 6 bits of bytes j
 * and j+4; j >= 4 split as low nibbles in byte j+4 and top 2 bits in bytes j-4 / j. */
static void k4_get_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Fit 8 sub-block (scale, min) pairs, pack them to 6 bits and requantize the 256
 * values to [0, nmax] against the packed scales. Shared by Q4_K and Q5_K. */
static void k4_quantize_superblock(const float *x, int nmax, float rmin, int nstep,
                                   uint16_t *d, uint16_t *dmin, uint8_t *scales, uint8_t *L) {
    float mins[8], sc[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xj[l]);
        sc[j] = fit_scale_min(nmax, xj, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales, 0, CV_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * sc[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = MIN(63, ls);
        lm = MIN(63, lm);
        if (j < 4) {
            scales[j] |= ls;
            scales[j + 4] |= lm;
        } else {
            scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d = cv_fp32_to_fp16(max_scale / 63.f);
    *dmin = cv_fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        k4_get_scale_min(j, scales, &s, &m);
        const float dj = cv_fp16_to_fp32(*d) * s;
        if (!dj) continue;  /* keep the fit's levels, as ggml does */
        const float dm = cv_fp16_to_fp32(*dmin) * m;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)MAX(0, MIN(nmax, nearest_int((x[32 * j + i] + dm) / dj)));
    }
}

/* ---- reference quantizers, one block at a time ---- */

/* Q4_0 and Q5_0: d = max/-2^(bits-1), so the largest magnitude maps to level 0. */
static float q_0_scale(const float *x, float levels, float *id) {
    float amax;
    float d = signed_absmax(x, 32, &amax) / -levels;
    *id = d ? 1.0f / d : 0.0f;
    return d;
}

static void quantize_q4_0(const float *x, cv_block_q4_0 *y) {
    float id, d = q_0_scale(x, 8, &id);
    y->d = cv_fp32_to_fp16(d);
    for (int j = 0; j < 16; j++) {
        /* x*id + 8.5 is in [0.5, 16.5] for finite input; truncation floors it */
        uint8_t lo = (uint8_t)MIN(15, trunc_i8(x[j] * id + 8.5f));
        uint8_t hi = (uint8_t)MIN(15, trunc_i8(x[j + 16] * id + 8.5f));
        y->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void quantize_q5_0(const float *x, cv_block_q5_0 *y) {
    float id, d = q_0_scale(x, 16, &id);
    y->d = cv_fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        uint8_t lo = (uint8_t)MIN(31, trunc_i8(x[j] * id + 16.5f));
        uint8_t hi = (uint8_t)MIN(31, trunc_i8(x[j + 16] * id + 16.5f));
        y->qs[j] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
        qh |= (uint32_t)(lo >> 4) << j;
        qh |= (uint32_t)(hi >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++) y->qh[k] = (uint8_t)(qh >> (8 * k));
}

static void quantize_q8_0(const float *x, cv_block_q8_0 *y) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = MAX(amax, fabsf(x[j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    y->d = cv_fp32_to_fp16(d);
    for (int j = 0; j < 32; j++) y->qs[j] = (int8_t)roundf(clamp127(x[j] * id));
}

static void quantize_q4_K(const float *x, cv_block_q4_K *y) {
    uint8_t L[CV_QK_K];
    k4_quantize_superblock(x, 15, -1.f, 20, &y->d, &y->dmin, y->scales, L);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            y->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

static void quantize_q5_K(const float *x, cv_block_q5_K *y) {
    uint8_t L[CV_QK_K];
    k4_quantize_superblock(x, 31, -0.5f, 15, &y->d, &y->dmin, y->scales, L);
    memset(y->qh, 0, sizeof y->qh);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            uint8_t lo = L[64 * c + l], hi = L[64 * c + 32 + l];
            y->qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            y->qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
        }
    }
}

static void quantize_q6_K(const float *x, cv_block_q6_K *y) {
    int8_t L[CV_QK_K];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = fit_signed_scale(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    memset(y, 0, sizeof *y);
    if (max_abs < 1e-15f) return;
    const float iscale = -128.f / max_scale;
    y->d = cv_fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < 16; ib++) y->scales[ib] = (int8_t)MIN(127, nearest_int(iscale * scales[ib]));
    for (int j = 0; j < 16; j++) {
        const float d = cv_fp16_to_fp32(y->d) * y->scales[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (int8_t)(MAX(-32, MIN(31, nearest_int(x[16 * j + i] / d))) + 32);
    }
    for (int h = 0; h < 2; h++) {
        const int8_t *Lh = L + 128 * h;
        uint8_t *ql = y->ql + 64 * h, *qh = y->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                              ((Lh[l + 96] >> 4) << 6));
        }
    }
}

static void quantize_q8_K(const float *x, cv_block_q8_K *y) {
    float amax;
    const float max = signed_absmax(x, CV_QK_K, &amax);
    memset(y, 0, sizeof *y);
    if (!amax) return;
    /* -127, not -128: the sign of max decides which end may be reached, keep both */
    const float iscale = -127.f / max;
    for (int j = 0; j < CV_QK_K; j++) y->qs[j] = (int8_t)nearest_int(clamp127(iscale * x[j]));
    for (int g = 0; g < 16; g++) {
        int sum = 0;
        for (int i = 0; i < 16; i++) sum += y->qs[16 * g + i];
        y->bsums[g] = (int16_t)sum;
    }
    y->d = 1 / iscale;
}

/* ---- reference dequantizers ---- */

/* Signed levels of a Q4_0, Q5_0 or Q8_0 block; returns its scale. */
static float q32_levels(cv_type t, const void *block, int lv[32]) {
    if (t == CV_TYPE_Q8_0) {
        const cv_block_q8_0 *b = block;
        for (int j = 0; j < 32; j++) lv[j] = b->qs[j];
        return cv_fp16_to_fp32(b->d);
    }
    if (t == CV_TYPE_Q4_0) {
        const cv_block_q4_0 *b = block;
        for (int j = 0; j < 16; j++) {
            lv[j] = (b->qs[j] & 0xF) - 8;
            lv[j + 16] = (b->qs[j] >> 4) - 8;
        }
        return cv_fp16_to_fp32(b->d);
    }
    const cv_block_q5_0 *b = block;
    const uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
                        (uint32_t)b->qh[3] << 24;
    for (int j = 0; j < 16; j++) {
        lv[j] = (int)((b->qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - 16;
        lv[j + 16] = (int)((b->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
    }
    return cv_fp16_to_fp32(b->d);
}

static void dequantize_q32(cv_type t, const void *b, float *y) {
    int lv[32];
    const float d = q32_levels(t, b, lv);
    for (int j = 0; j < 32; j++) y[j] = lv[j] * d;
}

/* Q4_K and Q5_K share the layout of scales and the nibble order; hi (NULL for Q4_K)
 * supplies the fifth bit. */
static void dequantize_k4(uint16_t d16, uint16_t dmin16, const uint8_t *scales,
                          const uint8_t *qs, const uint8_t *qh, float *y) {
    const float d = cv_fp16_to_fp32(d16), dmin = cv_fp16_to_fp32(dmin16);
    for (int c = 0; c < 4; c++) {
        uint8_t s0, m0, s1, m1;
        k4_get_scale_min(2 * c, scales, &s0, &m0);
        k4_get_scale_min(2 * c + 1, scales, &s1, &m1);
        const float d0 = d * s0, mm0 = dmin * m0, d1 = d * s1, mm1 = dmin * m1;
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
            if (qh) {
                lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            y[64 * c + l] = d0 * lo - mm0;
            y[64 * c + 32 + l] = d1 * hi - mm1;
        }
    }
}

/* Level (0..63) of element i of a Q6_K block. */
static int q6_K_level(const cv_block_q6_K *b, int i) {
    const int h = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
    const uint8_t ql = b->ql[64 * h + l + 32 * (quarter & 1)];
    const int low = quarter < 2 ? (ql & 0xF) : (ql >> 4);
    const int high = (b->qh[32 * h + l] >> (2 * quarter)) & 3;
    return low | (high << 4);
}

static void dequantize_q6_K(const cv_block_q6_K *b, float *y) {
    const float d = cv_fp16_to_fp32(b->d);
    for (int i = 0; i < CV_QK_K; i++) y[i] = d * b->scales[i / 16] * (q6_K_level(b, i) - 32);
}

static void dequantize_q8_K(const cv_block_q8_K *b, float *y) {
    for (int j = 0; j < CV_QK_K; j++) y[j] = b->d * b->qs[j];
}

void cv_dequantize_row(cv_type t, const void *src, float *dst, int64_t n) {
    const cv_type_info *ti = cv_type_get((uint32_t)t);
    if (!ti || !ti->supported) return;
    const int64_t nb = n / ti->block_elems;
    for (int64_t i = 0; i < nb; i++) {
        const void *b = (const uint8_t *)src + i * ti->block_bytes;
        float *y = dst + i * ti->block_elems;
        switch (t) {
        case CV_TYPE_F32: memcpy(y, b, 4); break;
        case CV_TYPE_F16: *y = cv_fp16_to_fp32(((const uint16_t *)src)[i]); break;
        case CV_TYPE_BF16: *y = cv_bf16_to_fp32(((const uint16_t *)src)[i]); break;
        case CV_TYPE_Q4_0: case CV_TYPE_Q5_0: case CV_TYPE_Q8_0: dequantize_q32(t, b, y); break;
        case CV_TYPE_Q4_K: {
            const cv_block_q4_K *k = b;
            dequantize_k4(k->d, k->dmin, k->scales, k->qs, NULL, y);
            break;
        }
        case CV_TYPE_Q5_K: {
            const cv_block_q5_K *k = b;
            dequantize_k4(k->d, k->dmin, k->scales, k->qs, k->qh, y);
            break;
        }
        case CV_TYPE_Q6_K: dequantize_q6_K(b, y); break;
        case CV_TYPE_Q8_K: dequantize_q8_K(b, y); break;
        default: return;
        }
    }
}

void cv_quantize_row(cv_type t, const float *src, void *dst, int64_t n) {
    const cv_type_info *ti = cv_type_get((uint32_t)t);
    if (!ti || !ti->supported) return;
    const int64_t nb = n / ti->block_elems;
    for (int64_t i = 0; i < nb; i++) {
        void *b = (uint8_t *)dst + i * ti->block_bytes;
        const float *x = src + i * ti->block_elems;
        switch (t) {
        case CV_TYPE_F32: memcpy(b, x, 4); break;
        case CV_TYPE_F16: ((uint16_t *)dst)[i] = cv_fp32_to_fp16(*x); break;
        case CV_TYPE_BF16: ((uint16_t *)dst)[i] = cv_fp32_to_bf16(*x); break;
        case CV_TYPE_Q4_0: quantize_q4_0(x, b); break;
        case CV_TYPE_Q5_0: quantize_q5_0(x, b); break;
        case CV_TYPE_Q8_0: quantize_q8_0(x, b); break;
        case CV_TYPE_Q4_K: quantize_q4_K(x, b); break;
        case CV_TYPE_Q5_K: quantize_q5_K(x, b); break;
        case CV_TYPE_Q6_K: quantize_q6_K(x, b); break;
        case CV_TYPE_Q8_K: quantize_q8_K(x, b); break;
        default: return;
        }
    }
}

/* ---- reference dot products: exact integer sums per block, float across blocks ---- */

static float dot_floats(cv_type t, int64_t n, const void *w, const void *a) {
    const float *y = a;
    float s = 0;
    for (int64_t i = 0; i < n; i++) {
        const float wi = t == CV_TYPE_F32   ? ((const float *)w)[i]
                         : t == CV_TYPE_F16 ? cv_fp16_to_fp32(((const uint16_t *)w)[i])
                                            : cv_bf16_to_fp32(((const uint16_t *)w)[i]);
        s += wi * y[i];
    }
    return s;
}

static float dot_f32(int64_t n, const void *w, const void *a) { return dot_floats(CV_TYPE_F32, n, w, a); }
static float dot_f16(int64_t n, const void *w, const void *a) { return dot_floats(CV_TYPE_F16, n, w, a); }
static float dot_bf16(int64_t n, const void *w, const void *a) { return dot_floats(CV_TYPE_BF16, n, w, a); }

/* Q4_0, Q5_0, Q8_0 against Q8_0 activations. */
static float dot_q32(cv_type t, int64_t n, const void *w, const void *a) {
    const size_t bytes = k_types[t].block_bytes;
    const cv_block_q8_0 *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        int lv[32], sumi = 0;
        const float d = q32_levels(t, (const uint8_t *)w + i * bytes, lv);
        for (int j = 0; j < 32; j++) sumi += lv[j] * y[i].qs[j];
        s += sumi * (d * cv_fp16_to_fp32(y[i].d));
    }
    return s;
}

static float dot_q4_0(int64_t n, const void *w, const void *a) { return dot_q32(CV_TYPE_Q4_0, n, w, a); }
static float dot_q5_0(int64_t n, const void *w, const void *a) { return dot_q32(CV_TYPE_Q5_0, n, w, a); }
static float dot_q8_0(int64_t n, const void *w, const void *a) { return dot_q32(CV_TYPE_Q8_0, n, w, a); }

/* Q4_K/Q5_K: sum_j d*sc_j*sum(q*a) - dmin*m_j*sum(a), the sums of a from bsums. */
static float dot_k4(int64_t n, const void *w, const void *a, int has_high) {
    const cv_block_q8_K *y = a;
    const size_t bytes = has_high ? sizeof(cv_block_q5_K) : sizeof(cv_block_q4_K);
    float s = 0;
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        const cv_block_q4_K *x4 = (const void *)((const uint8_t *)w + i * bytes);
        const cv_block_q5_K *x5 = (const void *)x4;
        const uint8_t *qs = has_high ? x5->qs : x4->qs;
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            uint8_t s0, m0, s1, m1;
            k4_get_scale_min(2 * c, x4->scales, &s0, &m0);
            k4_get_scale_min(2 * c + 1, x4->scales, &s1, &m1);
            int d0 = 0, d1 = 0;
            for (int l = 0; l < 32; l++) {
                int lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
                if (has_high) {
                    lo |= ((x5->qh[l] >> (2 * c)) & 1) << 4;
                    hi |= ((x5->qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                d0 += lo * y[i].qs[64 * c + l];
                d1 += hi * y[i].qs[64 * c + 32 + l];
            }
            sumi += s0 * d0 + s1 * d1;
            summ += m0 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) +
                    m1 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
        }
        s += y[i].d * cv_fp16_to_fp32(x4->d) * sumi - y[i].d * cv_fp16_to_fp32(x4->dmin) * summ;
    }
    return s;
}

static float dot_q4_K(int64_t n, const void *w, const void *a) { return dot_k4(n, w, a, 0); }
static float dot_q5_K(int64_t n, const void *w, const void *a) { return dot_k4(n, w, a, 1); }

static float dot_q6_K(int64_t n, const void *w, const void *a) {
    const cv_block_q6_K *x = w;
    const cv_block_q8_K *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int dg = 0;
            for (int l = 0; l < 16; l++) dg += (q6_K_level(&x[i], 16 * g + l) - 32) * y[i].qs[16 * g + l];
            sumi += x[i].scales[g] * dg;
        }
        s += y[i].d * cv_fp16_to_fp32(x[i].d) * sumi;
    }
    return s;
}

static float dot_q8_K(int64_t n, const void *w, const void *a) {
    const cv_block_q8_K *x = w, *y = a;
    float s = 0;
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        int sumi = 0;
        for (int j = 0; j < CV_QK_K; j++) sumi += x[i].qs[j] * y[i].qs[j];
        s += x[i].d * y[i].d * sumi;
    }
    return s;
}

/* ---- dispatch ---- */

typedef float (*dot_fn)(int64_t n, const void *w, const void *a);

typedef struct kernels {
    dot_fn dot;              /* scalar reference */
    cv_dot_rows_fn dot_rows; /* AVX2; NULL: use the reference */
} kernels;

static const kernels k_kernels[CV_TYPE_COUNT] = {
    [CV_TYPE_F32] = {dot_f32, cv_avx2_dot_rows_f32},
    [CV_TYPE_F16] = {dot_f16, cv_avx2_dot_rows_f16},
    [CV_TYPE_BF16] = {dot_bf16, cv_avx2_dot_rows_bf16},
    [CV_TYPE_Q4_0] = {dot_q4_0, cv_avx2_dot_rows_q4_0},
    [CV_TYPE_Q5_0] = {dot_q5_0, cv_avx2_dot_rows_q5_0},
    [CV_TYPE_Q8_0] = {dot_q8_0, cv_avx2_dot_rows_q8_0},
    [CV_TYPE_Q4_K] = {dot_q4_K, cv_avx2_dot_rows_q4_K},
    [CV_TYPE_Q5_K] = {dot_q5_K, cv_avx2_dot_rows_q5_K},
    [CV_TYPE_Q6_K] = {dot_q6_K, cv_avx2_dot_rows_q6_K},
    [CV_TYPE_Q8_K] = {dot_q8_K, NULL},
};

static _Atomic int g_force_scalar;
static _Atomic int g_cpu_avx2 = -1;  /* -1: not probed yet */

void cv_quant_force_scalar(int on) { atomic_store_explicit(&g_force_scalar, on, memory_order_relaxed); }

/* cpu_features' answer, probed once: cpuid is far too slow to run per dot product. */
static int cpu_has_avx2(void) {
    int v = atomic_load_explicit(&g_cpu_avx2, memory_order_relaxed);
    if (v < 0) {
        v = cv_cpu_has_avx2();
        atomic_store_explicit(&g_cpu_avx2, v, memory_order_relaxed);
    }
    return v;
}

static int use_avx2(void) {
    return !atomic_load_explicit(&g_force_scalar, memory_order_relaxed) && cpu_has_avx2();
}

const char *cv_quant_path(void) { return use_avx2() ? "avx2" : "scalar"; }

void cv_vec_dot_rows(cv_type t, int64_t n, const void *w_row, const void *act,
                     size_t act_stride, int n_act, float *out) {
    if ((unsigned)t >= CV_TYPE_COUNT || !k_kernels[t].dot) {
        for (int r = 0; r < n_act; r++) out[r] = 0.f;
        return;
    }
    if (k_kernels[t].dot_rows && use_avx2()) {
        k_kernels[t].dot_rows(n, w_row, act, act_stride, n_act, out);
        return;
    }
    for (int r = 0; r < n_act; r++)
        out[r] = k_kernels[t].dot(n, w_row, (const uint8_t *)act + (size_t)r * act_stride);
}

float cv_vec_dot_scalar(cv_type t, int64_t n, const void *w_row, const void *act) {
    return (unsigned)t < CV_TYPE_COUNT && k_kernels[t].dot ? k_kernels[t].dot(n, w_row, act) : 0;
}

float cv_vec_dot(cv_type t, int64_t n, const void *w_row, const void *act) {
    float out;
    cv_vec_dot_rows(t, n, w_row, act, 0, 1, &out);
    return out;
}

void cv_quantize_row_act(cv_type vec_dot_type, const float *src, void *dst, int64_t n) {
    if (use_avx2() && vec_dot_type == CV_TYPE_Q8_0) {
        cv_avx2_quantize_row_q8_0(src, dst, n);
    } else if (use_avx2() && vec_dot_type == CV_TYPE_Q8_K) {
        cv_avx2_quantize_row_q8_K(src, dst, n);
    } else {
        cv_quantize_row(vec_dot_type, src, dst, n);
    }
}
