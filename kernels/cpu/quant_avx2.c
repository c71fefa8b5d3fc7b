/* quant_avx2: AVX2/FMA/F16C dot products and activation quantizers.
 *
 * Integer kernels multiply unsigned weight levels by signed int8 activations with
 * maddubs (no saturation is possible for valid blocks) and remove the weight
 * offset through the activation sums: dot(q - o, a) = dot(q, a) - o * sum(a).
 * Each kernel takes the number of activation rows as a compile-time constant
 * (always-inlined, instantiated for 1..4 rows) so one pass over the weight row
 * feeds every activation row; a row's accumulation order does not depend on how
 * many rows share the pass, so multi-row results equal single-row ones bit for bit.
 * Two accumulators per row (even and odd blocks) hide the FMA latency.
 */
#include "quant_avx2.h"

#include <immintrin.h>
#include <string.h>

#include "quant.h"
#include "quant_blocks.h"

#define INLINE static inline __attribute__((always_inline))
/* Row and chunk loops must be unrolled so that accumulators live in registers. */
#define UNROLL _Pragma("GCC unroll 8")

/* Emit the exported n_act-rows entry point over kernel(..., R rows (1..4), out, kind). */
#define DEFINE_DOT_ROWS(name, kernel, kind)                                                \
    void name(int64_t n, const void *w, const void *act, size_t stride, int n_act,         \
              float *out) {                                                                \
        const uint8_t *a = act;                                                            \
        for (; n_act >= 4; n_act -= 4, a += 4 * stride, out += 4)                          \
            kernel(n, w, a, stride, 4, out, kind);                                         \
        if (n_act == 3) kernel(n, w, a, stride, 3, out, kind);                             \
        else if (n_act == 2) kernel(n, w, a, stride, 2, out, kind);                        \
        else if (n_act == 1) kernel(n, w, a, stride, 1, out, kind);                        \
    }

INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float hsum_ps128(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* A half scale broadcast to 8 floats (broadcast load + one conversion). */
INLINE __m256 h2f8(const uint16_t *h) { return _mm256_cvtph_ps(_mm_set1_epi16((short)*h)); }

/* int16 pair sums -> 8 float sums of 4 products each */
INLINE __m256 pairs_to_ps(__m256i p16) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* 16 bytes of nibbles -> 32 levels: the low nibbles (elements 0..15), then the high. */
INLINE __m256i nibbles_32(const uint8_t *p) {
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

INLINE const void *act_row(const uint8_t *act, size_t stride, int r) { return act + (size_t)r * stride; }

/* ---- float weights (F32, F16, BF16) against F32 activations ---- */

enum { W_F32, W_F16, W_BF16 };

INLINE __m256 load_w8(const void *w, int64_t i, int kind) {
    if (kind == W_F32) return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (kind == W_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load_w1(const void *w, int64_t i, int kind) {
    if (kind == W_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return kind == W_F16 ? h2f(h) : cv_bf16_to_fp32(h);
}

INLINE void float_rows(int64_t n, const void *w, const uint8_t *act, size_t stride, const int R,
                       float *out, int kind) {
    __m256 acc[4][2];
    float tail[4] = {0};
    UNROLL for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = load_w8(w, i, kind), w1 = load_w8(w, i + 8, kind);
        UNROLL for (int r = 0; r < R; r++) {
            const float *a = act_row(act, stride, r);
            acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a + i), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a + i + 8), acc[r][1]);
        }
    }
    for (; i < n; i++) {
        const float wi = load_w1(w, i, kind);
        UNROLL for (int r = 0; r < R; r++) tail[r] += wi * ((const float *)act_row(act, stride, r))[i];
    }
    UNROLL for (int r = 0; r < R; r++) out[r] = hsum_ps(_mm256_add_ps(acc[r][0], acc[r][1])) + tail[r];
}

DEFINE_DOT_ROWS(cv_avx2_dot_rows_f32, float_rows, W_F32)
DEFINE_DOT_ROWS(cv_avx2_dot_rows_f16, float_rows, W_F16)
DEFINE_DOT_ROWS(cv_avx2_dot_rows_bf16, float_rows, W_BF16)

/* ---- 32-element blocks (Q4_0, Q5_0, Q8_0) against Q8_0 activations ---- */

enum { W_Q4_0, W_Q5_0, W_Q8_0 };

/* Five-bit high parts of a Q5_0 block: 0x10 in byte j when bit j of qh is set. */
INLINE __m256i q5_0_high(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)h),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

/* Accumulate block i of the weight row into acc[r][u] for each activation row. */
INLINE void q32_block(const void *w, int64_t i, const uint8_t *act, size_t stride, const int R,
                      __m256 acc[4][2], int u, int kind) {
    __m256i q;
    __m256 dx;
    if (kind == W_Q4_0) {
        const cv_block_q4_0 *x = (const cv_block_q4_0 *)w + i;
        q = nibbles_32(x->qs);
        dx = h2f8(&x->d);
    } else if (kind == W_Q5_0) {
        const cv_block_q5_0 *x = (const cv_block_q5_0 *)w + i;
        q = _mm256_or_si256(nibbles_32(x->qs), q5_0_high(x->qh));
        dx = h2f8(&x->d);
    } else {
        const cv_block_q8_0 *x = (const cv_block_q8_0 *)w + i;
        q = _mm256_loadu_si256((const __m256i *)x->qs);
        dx = h2f8(&x->d);
    }
    /* Q8_0 is signed: move its sign onto the activations, maddubs |q| * +-a */
    const __m256i uq = kind == W_Q8_0 ? _mm256_abs_epi8(q) : q;
    const __m256i offset = _mm256_set1_epi8(kind == W_Q4_0 ? 8 : 16);
    UNROLL for (int r = 0; r < R; r++) {
        const cv_block_q8_0 *y = (const cv_block_q8_0 *)act_row(act, stride, r) + i;
        const __m256i a = _mm256_loadu_si256((const __m256i *)y->qs);
        __m256i p;
        if (kind == W_Q8_0)
            p = _mm256_maddubs_epi16(uq, _mm256_sign_epi8(a, q));
        else
            p = _mm256_sub_epi16(_mm256_maddubs_epi16(uq, a), _mm256_maddubs_epi16(offset, a));
        acc[r][u] = _mm256_fmadd_ps(_mm256_mul_ps(dx, h2f8(&y->d)), pairs_to_ps(p), acc[r][u]);
    }
}

INLINE void q32_rows(int64_t n, const void *w, const uint8_t *act, size_t stride, const int R,
                     float *out, int kind) {
    const int64_t nb = n / 32;
    __m256 acc[4][2];
    UNROLL for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        q32_block(w, i, act, stride, R, acc, 0, kind);
        q32_block(w, i + 1, act, stride, R, acc, 1, kind);
    }
    if (i < nb) q32_block(w, i, act, stride, R, acc, 0, kind);
    UNROLL for (int r = 0; r < R; r++) out[r] = hsum_ps(_mm256_add_ps(acc[r][0], acc[r][1]));
}

DEFINE_DOT_ROWS(cv_avx2_dot_rows_q4_0, q32_rows, W_Q4_0)
DEFINE_DOT_ROWS(cv_avx2_dot_rows_q5_0, q32_rows, W_Q5_0)
DEFINE_DOT_ROWS(cv_avx2_dot_rows_q8_0, q32_rows, W_Q8_0)

/* ---- K-quants against Q8_K activations ---- */

/* Unpack Q4_K/Q5_K's 12 scale bytes: 16-bit scales 0..7 then mins 0..7. */
INLINE __m256i k4_scales_mins(const uint8_t *scales) {
    uint32_t u[4];
    memcpy(u, scales, 12);
    const uint32_t m6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, hi2 = 0x03030303;
    u[3] = ((u[2] >> 4) & lo4) | (((u[1] >> 6) & hi2) << 4);  /* mins 4..7 */
    const uint32_t mins03 = u[1] & m6;
    u[1] = (u[2] & lo4) | (((u[0] >> 6) & hi2) << 4);         /* scales 4..7 */
    u[2] = mins03;
    u[0] &= m6;                                               /* scales 0..3 */
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)u));
}

/* 16-bit element k of each 128-bit lane broadcast across that lane. */
INLINE __m256i bcast16(__m256i v, int k) {
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)(((2 * k + 1) << 8) | (2 * k))));
}

INLINE void k4_rows(int64_t n, const void *w, const uint8_t *act, size_t stride, const int R,
                    float *out, int has_high) {
    const size_t bytes = has_high ? sizeof(cv_block_q5_K) : sizeof(cv_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4];
    __m128 accm[4];
    UNROLL for (int r = 0; r < R; r++) {
        acc[r] = _mm256_setzero_ps();
        accm[r] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        const cv_block_q4_K *x4 = (const void *)((const uint8_t *)w + i * bytes);
        const cv_block_q5_K *x5 = (const void *)x4;
        const uint8_t *qs = has_high ? x5->qs : x4->qs;
        const __m256i sm = k4_scales_mins(x4->scales);
        const __m128i mins = _mm256_extracti128_si256(sm, 1);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        const float dx = h2f(x4->d), dmx = h2f(x4->dmin);
        __m256i sumi[4];
        UNROLL for (int r = 0; r < R; r++) {
            const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
            /* sums of activations per 32-element sub-block, times the mins */
            const __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m128 pm = _mm_cvtepi32_ps(_mm_madd_epi16(mins, s32));
            accm[r] = _mm_fmadd_ps(_mm_set1_ps(-y->d * dmx), pm, accm[r]);
            sumi[r] = _mm256_setzero_si256();
        }
        const __m256i hb = has_high ? _mm256_loadu_si256((const __m256i *)x5->qh) : _mm256_setzero_si256();
        UNROLL for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (has_high) {
                const __m256i blo = _mm256_set1_epi8((char)(1 << (2 * c)));
                const __m256i bhi = _mm256_set1_epi8((char)(2 << (2 * c)));
                const __m256i b4 = _mm256_set1_epi8(0x10);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, blo), blo), b4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bhi), bhi), b4));
            }
            const __m256i sc_lo = bcast16(scales, 2 * c), sc_hi = bcast16(scales, 2 * c + 1);
            UNROLL for (int r = 0; r < R; r++) {
                const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
                const __m256i a_lo = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c));
                const __m256i a_hi = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c + 32));
                const __m256i p_lo = _mm256_madd_epi16(sc_lo, _mm256_maddubs_epi16(lo, a_lo));
                const __m256i p_hi = _mm256_madd_epi16(sc_hi, _mm256_maddubs_epi16(hi, a_hi));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        UNROLL for (int r = 0; r < R; r++) {
            const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dx), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]) + hsum_ps128(accm[r]);
}

DEFINE_DOT_ROWS(cv_avx2_dot_rows_q4_K, k4_rows, 0)
DEFINE_DOT_ROWS(cv_avx2_dot_rows_q5_K, k4_rows, 1)

INLINE void q6_K_rows(int64_t n, const void *w, const uint8_t *act, size_t stride, const int R,
                      float *out, int unused) {
    (void)unused;
    const cv_block_q6_K *x = w;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4];
    UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)x[i].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m256i sumi[4];
        UNROLL for (int r = 0; r < R; r++) {
            /* the -32 offset: 32 * sum_g scale_g * (sum of the group's activations) */
            const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
            const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y->bsums));
            sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
        }
        UNROLL for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x[i].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x[i].qh + 32 * h));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8((char)0xC0)), 2));
            UNROLL for (int k = 0; k < 4; k++) {
                /* scales of groups 8h+2k (low lane) and 8h+2k+1 (high lane) */
                const int g = 8 * h + 2 * k;
                const __m128i pick = _mm_set_epi64x((long long)(0x0101010101010101ULL * (unsigned)(g + 1)),
                                                    (long long)(0x0101010101010101ULL * (unsigned)g));
                const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
                UNROLL for (int r = 0; r < R; r++) {
                    const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
                    const __m256i a = _mm256_loadu_si256((const __m256i *)(y->qs + 128 * h + 32 * k));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q[k], a)));
                }
            }
        }
        const float dx = h2f(x[i].d);
        UNROLL for (int r = 0; r < R; r++) {
            const cv_block_q8_K *y = (const cv_block_q8_K *)act_row(act, stride, r) + i;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dx), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]);
}
DEFINE_DOT_ROWS(cv_avx2_dot_rows_q6_K, q6_K_rows, 0)

/* ---- activation quantizers (same bytes as the reference) ---- */

INLINE __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

INLINE float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Four vectors of 8 integer-valued int32 -> 32 int8 in element order (saturating). */
INLINE __m256i pack_32xi8(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* The reference's clamp127: [-127, 127], NaN -> 0. */
INLINE __m256 clamp127(__m256 v) {
    const __m256 c = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
    return _mm256_and_ps(c, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
}

/* roundf(): round half away from zero. */
INLINE __m256i roundf_epi32(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 away = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    const __m256 half = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(half, away)));
}

void cv_avx2_quantize_row_q8_0(const float *src, void *dst, int64_t n) {
    cv_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / CV_QK8_0; i++) {
        const float *x = src + 32 * i;
        __m256 v[4];
        UNROLL for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                                 _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3]))));
        const float d = amax / 127;
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        y[i].d = cv_fp32_to_fp16(d);
        __m256i q[4];
        UNROLL for (int k = 0; k < 4; k++) q[k] = roundf_epi32(clamp127(_mm256_mul_ps(v[k], id)));
        _mm256_storeu_si256((__m256i *)y[i].qs, pack_32xi8(q[0], q[1], q[2], q[3]));
    }
}

void cv_avx2_quantize_row_q8_K(const float *src, void *dst, int64_t n) {
    cv_block_q8_K *y = dst;
    for (int64_t i = 0; i < n / CV_QK_K; i++) {
        const float *x = src + CV_QK_K * i;
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + 8 * k)));
        const float amax = hmax_ps(m);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* the reference keeps the sign of the first element of largest magnitude */
        float max = 0;
        for (int k = 0; k < 32; k++) {
            const int hit = _mm256_movemask_ps(
                _mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + 8 * k)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hit) {
                max = x[8 * k + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 mul = _mm256_set1_ps(iscale);
        int64_t sums[16];
        for (int c = 0; c < 8; c++) {
            __m256i q[4];
            UNROLL for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(clamp127(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * c + 8 * k), mul)));
            const __m256i p = pack_32xi8(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * c), p);
            /* byte sums: sad of the bytes biased to unsigned, 4 sums of 8 */
            const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(p, _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256());
            int64_t s8[4];
            _mm256_storeu_si256((__m256i *)s8, s);
            sums[2 * c] = s8[0] + s8[1] - 16 * 128;
            sums[2 * c + 1] = s8[2] + s8[3] - 16 * 128;
        }
        for (int g = 0; g < 16; g++) y[i].bsums[g] = (int16_t)sums[g];
        y[i].d = 1 / iscale;
    }
}
