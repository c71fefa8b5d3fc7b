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

INLINE void tile_q4_K(const int RN, const uint8_t *const rp[8], int rm, const uint8_t *act, size_t astride,
                      int64_t nb, float *y, int64_t ldy) {
    __m256 acc[RN_MAX];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t wo = (size_t)b * sizeof(cv_block_q4_K);
        const uint8_t *ab = act + (size_t)b * sizeof(cv_block_q8_K);
        __m256i h[4], s03, s47, m03, m47;
        head8(rp, wo, h);
        K4_SCALES(h[1], h[2], h[3], s03, s47, m03, m47);
        __m256 dw, dmw;
        halves8(h[0], &dw, &dmw);
        __m256i sumi[RN_MAX];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) sumi[t] = _mm256_setzero_si256();
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
            const uint8_t *at = ab + t * astride;
            __m256i summ = _mm256_setzero_si256();
            _Pragma("GCC unroll 8")
            for (int j = 0; j < 8; j++)
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(pick8(j < 4 ? m03 : m47, K_PICK(j % 4, -1, j % 4, -1)),
                                                                group4(at + A_BSUMS, j)));
            float da;
            memcpy(&da, at, sizeof da);
            const __m256 d8 = _mm256_set1_ps(da);
            const __m256 r = _mm256_sub_ps(_mm256_mul_ps(_mm256_mul_ps(d8, dw), _mm256_cvtepi32_ps(sumi[t])),
                                           _mm256_mul_ps(_mm256_mul_ps(d8, dmw), _mm256_cvtepi32_ps(summ)));
            acc[t] = _mm256_add_ps(acc[t], r);
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) store8(y + t * ldy, acc[t], rm);
}

/* Q6_K's signed scales as int16 pairs: the bytes go to the high halves, then shift down. */
INLINE __m256i q6_scale_pair(__m256i h, int b0, int b1) {
    return _mm256_srai_epi16(pick8(h, K_PICK(-1, b0, -1, b1)), 8);
}

INLINE void tile_q6_K(const int RN, const uint8_t *const rp[8], int rm, const uint8_t *act, size_t astride,
                      int64_t nb, float *y, int64_t ldy) {
    __m256 acc[RN_MAX];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t wo = (size_t)b * sizeof(cv_block_q6_K);
        const uint8_t *ab = act + (size_t)b * sizeof(cv_block_q8_K);
        __m256i h[4];
        head8(rp, wo + offsetof(cv_block_q6_K, scales), h);
        uint16_t hd[8];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < 8; r++) memcpy(&hd[r], rp[r] + wo + offsetof(cv_block_q6_K, d), sizeof hd[r]);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hd));
        __m256i sumi[RN_MAX];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) sumi[t] = _mm256_setzero_si256();
        _Pragma("GCC unroll 2")
        for (int hh = 0; hh < 2; hh++) {
            __m256i qh[8];
            rows8_dwords(rp, wo + offsetof(cv_block_q6_K, qh) + 32 * (size_t)hh, qh);
            /* runs 0 and 2 share their ql bytes, as do runs 1 and 3 */
            __m256i l[8];
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
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(s0, sc),
                                                                             _mm256_madd_epi16(s1, sc)));
                    }
                }
            }
        }
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) {
            const uint8_t *at = ab + t * astride;
            __m256i off = _mm256_setzero_si256();
            _Pragma("GCC unroll 8")
            for (int i = 0; i < 8; i++)
                off = _mm256_add_epi32(off, _mm256_madd_epi16(q6_scale_pair(h[i / 2], 2 * (i % 2), 2 * (i % 2) + 1),
                                                              group4(at + A_BSUMS, i)));
            const __m256i s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(off, 5));
            float da;
            memcpy(&da, at, sizeof da);
            acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(da), dw), _mm256_cvtepi32_ps(s)));
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) store8(y + t * ldy, acc[t], rm);
}

INLINE void tile_any(const int kind, int rn, const uint8_t *const rp[8], int rm, const uint8_t *act, size_t as,
                     int64_t nb, float *y, int64_t ldy) {
#define TILE(RN) kind == W_Q4_K ? tile_q4_K(RN, rp, rm, act, as, nb, y, ldy) : tile_q6_K(RN, rp, rm, act, as, nb, y, ldy)
    switch (rn) {
    case 4: TILE(4); break;
    case 3: TILE(3); break;
    case 2: TILE(2); break;
    default: TILE(1); break;
    }
#undef TILE
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
            tile_any(kind, n - t < RN_MAX ? n - t : RN_MAX, rp, rm, A + (size_t)t * act_stride, act_stride, nb,
                     y + (int64_t)t * ldy + r, ldy);
    }
}

static void rows_q4_K(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    rows_kind(W_Q4_K, w, r0, r1, act, act_stride, n, y, ldy);
}

static void rows_q6_K(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    rows_kind(W_Q6_K, w, r0, r1, act, act_stride, n, y, ldy);
}

const cv_matmul_kernel cv_matmul_avx2_q4_K = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, rows_q4_K};
const cv_matmul_kernel cv_matmul_avx2_q6_K = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, rows_q6_K};
