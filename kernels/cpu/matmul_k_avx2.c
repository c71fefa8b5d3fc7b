/* AVX2 matmul tiles for the K-quants of Q4_K_M files: Q4_K and Q6_K weights.
 *
 * Activations are quant's Q8_K rows as cv_quantize_row_act writes them (quants, scale,
 * bsums). A tile is 8 weight rows x up to RN_MAX tokens; in a row tail the missing
 * rows repeat the last one and their lanes are dropped. Each 32-byte stretch of the 8
 * rows' quants is transposed in registers (transpose8), so that lane j belongs to row j
 * and maddubs with 4 activation bytes broadcast leaves row j's products in lane j:
 * nothing is reduced across lanes, and unpacking a super-block is paid once for RN
 * tokens.
 *   Q4_K: a 32-element sub-block is 8 maddubs added in int16 (at most
 *         8 x 2 x 15 x 127 < 2^15), then one madd with the row's 6-bit scale as an
 *         int16 pair widens and scales it; the mins term, sum_j m_j x (sum of the
 *         sub-block's activations), is one madd per sub-block with the bsums.
 *   Q6_K: levels 0..63 unsigned; a 16-element sub-block is two pairs of maddubs
 *         added in int16 (at most 2 x 2 x 63 x 127 < 2^15), each widened by a madd
 *         with the signed scale; the -32 comes off as 32 x sum_g sc_g x bsum_g.
 * The integer sums per super-block are exactly those of quant.c's reference dot, and
 * the float steps per output are the reference's own (Q4_K: s += da*d*sumi -
 * da*dmin*summ; Q6_K: s += da*d*sumi, super-blocks in order, no FMA), so every output
 * is bit-identical to the scalar reference whatever the tile, thread split or batch.
 */
#include <stddef.h>

#include "matmul.h"
#include "matmul_x86.h"

/* Tokens per tile: 8 weight vectors + RN sums + temporaries in 16 ymm registers. */
#define RN_MAX 4

enum { W_Q4_K, W_Q6_K };

#define A_QS offsetof(cv_block_q8_K, qs)
#define A_BSUMS offsetof(cv_block_q8_K, bsums)

INLINE void row_ptrs8(const uint8_t *w, size_t ws, int rm, const uint8_t *rp[8]) {
    for (int r = 0; r < 8; r++) rp[r] = w + (size_t)(r < rm ? r : rm - 1) * ws;
}

/* The 32 bytes at rp[j] + off of the 8 rows, transposed: p[k] lane j = dword k of row j. */
INLINE void rows8_dwords(const uint8_t *const rp[8], size_t off, __m256i p[8]) {
    _Pragma("GCC unroll 8")
    for (int r = 0; r < 8; r++) p[r] = _mm256_loadu_si256((const __m256i *)(rp[r] + off));
    transpose8(p);
}

/* The halves at bytes 0 and 2 of each lane as floats (Q4_K's d and dmin). */
INLINE void halves8(__m256i h0, __m256 *lo, __m256 *hi) {
    const __m256i pl = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12,
                                        13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i l = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(h0, pl), 0x08);
    const __m256i h = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_srli_epi32(h0, 16), pl), 0x08);
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(l));
    *hi = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
}

INLINE void store8(float *y, __m256 v, int rm) {
    if (rm == 8) {
        _mm256_storeu_ps(y, v);
    } else {
        float o[8];
        _mm256_storeu_ps(o, v);
        memcpy(y, o, (size_t)rm * sizeof(float));
    }
}

/* Super-block b (weights at rp[j] + wo, activations at ab + t * astride) of the 8 rows
 * for RN tokens: sumi[t] = sum_j sc_j x (quants . activations) and summ[t] =
 * sum_j m_j x (sub-block sum of the activations), per row; dw, dmw: d and dmin. */
INLINE void sums_q4_K(const int RN, const uint8_t *const rp[8], size_t wo, const uint8_t *ab, size_t astride,
                      __m256i sumi[], __m256i summ[], __m256 *dw, __m256 *dmw) {
    __m256i h[4], s03, s47, m03, m47;
    head8(rp, wo, h);
    K4_SCALES(h[1], h[2], h[3], s03, s47, m03, m47);
    halves8(h[0], dw, dmw);
    _Pragma("GCC unroll 4")
    for (int c = 0; c < 4; c++) {
        __m256i p[8];
        rows8_dwords(rp, wo + offsetof(cv_block_q4_K, qs) + 32 * (size_t)c, p);
        _Pragma("GCC unroll 2")
        for (int half = 0; half < 2; half++) {
            const int j = 2 * c + half;
            const __m256i sc = pick8(j < 4 ? s03 : s47, K_PICK(j % 4, -1, j % 4, -1));
            __m256i v[8];
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) v[k] = half ? K_HI4(p[k]) : K_LO4(p[k]);
            _Pragma("GCC unroll 4")
            for (int t = 0; t < RN; t++) {
                const uint8_t *aq = ab + t * astride + A_QS + 32 * j;
                __m256i s16 = _mm256_maddubs_epi16(v[0], group4(aq, 0));
                _Pragma("GCC unroll 8")
                for (int k = 1; k < 8; k++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(v[k], group4(aq, k)));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s16, sc));
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) {
        const uint8_t *bs = ab + t * astride + A_BSUMS;
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++)
            summ[t] = _mm256_add_epi32(summ[t], _mm256_madd_epi16(pick8(j < 4 ? m03 : m47, K_PICK(j % 4, -1, j % 4, -1)),
                                                                  group4(bs, j)));
    }
}

/* Q6_K's signed scales as int16 pairs: the bytes go to the high halves, then shift down. */
INLINE __m256i q6_scale_pair(__m256i h, int b0, int b1) {
    return _mm256_srai_epi16(pick8(h, K_PICK(-1, b0, -1, b1)), 8);
}

/* The same for Q6_K: sumi[t] = sum_g sc_g x ((levels - 32) . activations); dw: d. */
INLINE void sums_q6_K(const int RN, const uint8_t *const rp[8], size_t wo, const uint8_t *ab, size_t astride,
                      __m256i sumi[], __m256 *dw) {
    __m256i h[4];
    head8(rp, wo + offsetof(cv_block_q6_K, scales), h);
    uint16_t hd[8];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < 8; r++) memcpy(&hd[r], rp[r] + wo + offsetof(cv_block_q6_K, d), sizeof hd[r]);
    *dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hd));
    _Pragma("GCC unroll 2")
    for (int hh = 0; hh < 2; hh++) {
        __m256i qh[8], l[8];
        rows8_dwords(rp, wo + offsetof(cv_block_q6_K, qh) + 32 * (size_t)hh, qh);
        /* runs 0 and 2 share their ql bytes, as do runs 1 and 3 */
        _Pragma("GCC unroll 4")
        for (int mi = 0; mi < 4; mi++) {
            const int m = mi / 2 + 2 * (mi % 2);
            if (m < 2) rows8_dwords(rp, wo + offsetof(cv_block_q6_K, ql) + 64 * (size_t)hh + 32 * (size_t)m, l);
            __m256i v[8];
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) v[k] = Q6_LEVELS(l[k], qh[k], m);
            _Pragma("GCC unroll 2")
            for (int sub = 0; sub < 2; sub++) {
                const int g = 8 * hh + 2 * m + sub;
                const __m256i sc = q6_scale_pair(h[g / 4], g % 4, g % 4);
                const __m256i *vs = v + 4 * sub;
                _Pragma("GCC unroll 4")
                for (int t = 0; t < RN; t++) {
                    const uint8_t *aq = ab + t * astride + A_QS + 128 * hh + 32 * m + 16 * sub;
                    const __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(vs[0], group4(aq, 0)),
                                                        _mm256_maddubs_epi16(vs[1], group4(aq, 1)));
                    const __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(vs[2], group4(aq, 2)),
                                                        _mm256_maddubs_epi16(vs[3], group4(aq, 3)));
                    sumi[t] = _mm256_add_epi32(sumi[t],
                                               _mm256_add_epi32(_mm256_madd_epi16(s0, sc), _mm256_madd_epi16(s1, sc)));
                }
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) {
        const uint8_t *bs = ab + t * astride + A_BSUMS;
        __m256i off = _mm256_setzero_si256();
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 8; i++)
            off = _mm256_add_epi32(off, _mm256_madd_epi16(q6_scale_pair(h[i / 2], 2 * (i % 2), 2 * (i % 2) + 1),
                                                          group4(bs, i)));
        sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(off, 5));
    }
}

/* 8 rows (rm of them stored) x RN tokens, super-blocks in order with the reference's
 * float steps per output. */
INLINE void tile8(const int kind, const int RN, const uint8_t *const rp[8], int rm, const uint8_t *act,
                  size_t astride, int64_t nb, float *y, int64_t ldy) {
    const size_t blk = kind == W_Q4_K ? sizeof(cv_block_q4_K) : sizeof(cv_block_q6_K);
    __m256 acc[RN_MAX];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *ab = act + (size_t)b * sizeof(cv_block_q8_K);
        __m256i sumi[RN_MAX], summ[RN_MAX];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) sumi[t] = summ[t] = _mm256_setzero_si256();
        __m256 dw, dmw = _mm256_setzero_ps();
        if (kind == W_Q4_K) sums_q4_K(RN, rp, (size_t)b * blk, ab, astride, sumi, summ, &dw, &dmw);
        else sums_q6_K(RN, rp, (size_t)b * blk, ab, astride, sumi, &dw);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) {
            float da;
            memcpy(&da, ab + t * astride, sizeof da);
            const __m256 d8 = _mm256_set1_ps(da);
            __m256 r = _mm256_mul_ps(_mm256_mul_ps(d8, dw), _mm256_cvtepi32_ps(sumi[t]));
            if (kind == W_Q4_K) r = _mm256_sub_ps(r, _mm256_mul_ps(_mm256_mul_ps(d8, dmw), _mm256_cvtepi32_ps(summ[t])));
            acc[t] = _mm256_add_ps(acc[t], r);
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) store8(y + t * ldy, acc[t], rm);
}

INLINE void tile8_any(const int kind, int rn, const uint8_t *const rp[8], int rm, const uint8_t *act, size_t as,
                      int64_t nb, float *y, int64_t ldy) {
    switch (rn) {
    case 4: tile8(kind, 4, rp, rm, act, as, nb, y, ldy); break;
    case 3: tile8(kind, 3, rp, rm, act, as, nb, y, ldy); break;
    case 2: tile8(kind, 2, rp, rm, act, as, nb, y, ldy); break;
    default: tile8(kind, 1, rp, rm, act, as, nb, y, ldy); break;
    }
}

INLINE void rows_kind(const int kind, const cv_tensor *w, int64_t r0, int64_t r1, const void *act,
                      size_t act_stride, int32_t n, float *y, int64_t ldy) {
    const int64_t nb = w->cols / CV_QK_K;
    const size_t ws = w->row_stride;
    const uint8_t *A = act, *W = w->data;
    /* 8 rows stay in L1/L2 while every token passes over them. */
    for (int64_t r = r0; r < r1; r += 8) {
        const int rm = r1 - r < 8 ? (int)(r1 - r) : 8;
        const uint8_t *rp[8];
        row_ptrs8(W + r * ws, ws, rm, rp);
        for (int32_t t = 0; t < n; t += RN_MAX)
            tile8_any(kind, n - t < RN_MAX ? n - t : RN_MAX, rp, rm, A + (size_t)t * act_stride, act_stride, nb,
                      y + (int64_t)t * ldy + r, ldy);
    }
}

/* One entry for both formats: the tensor says which tile to instantiate. */
static void rows_k(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                   float *y, int64_t ldy) {
    if (w->type == CV_TYPE_Q4_K) rows_kind(W_Q4_K, w, r0, r1, act, act_stride, n, y, ldy);
    else rows_kind(W_Q6_K, w, r0, r1, act, act_stride, n, y, ldy);
}

const cv_matmul_kernel cv_matmul_avx2_k = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, rows_k};
