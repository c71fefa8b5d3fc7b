/* AVX-512 VNNI matmul tiles for the K-quants of Q4_K_M files: Q4_K and Q6_K weights,
 * in the file's rows or in the x16 layout (repack.h), and Q5_K weights in the x16
 * layout only, for any number of tokens (batch-1 decode too); row tails go to the AVX2
 * tiles (matmul_k_avx2.c), Q5_K's to quant's scalar reference dot (the AVX2 row dot
 * sums in another order).
 *
 * A tile is 16 weight rows x up to 16 tokens over quant's Q8_K activation rows.
 * Each 32-byte stretch of the 16 rows' quants is transposed in registers (rows i and
 * i + 8 share a vector, two rounds of in-lane unpacks, one two-source permute), so
 * that lane j belongs to row j: one vpdpbusd per 4 elements with the token's
 * activation bytes broadcast adds row j's 4 products into lane j, and a sub-block's
 * sum is multiplied by the rows' scales with one vpmulld. Levels are unsigned (Q4_K
 * 0..15, Q5_K 0..31: Q4_K's nibble and a fifth bit from qh, Q6_K 0..63); the mins (Q4_K) and the -32 (Q6_K) come off through the
 * activations' bsums with vpdpwssd. Unpacking a super-block is paid once for RN tokens.
 *
 * The integer sums per super-block are the reference dot's, and the float steps per
 * output are the AVX2 tiles' (the reference's own), so every output is bit-identical
 * to the AVX2 kernel and to the scalar reference.
 */
#include <stddef.h>

#include "matmul.h"
#include "matmul_x86.h"
#include "repack.h"

/* Tokens per tile. With 16 the per-token sums no longer all fit the 32 zmm registers
 * and some live in L1, which costs less than unpacking the weights twice (measured:
 * 5-15% faster than 8 at 16 tokens and in prefill). */
#define RN_MAX 16

enum { W_Q4_K, W_Q5_K, W_Q6_K };

/* Q5_K's fifth bit of sub-block j (bit j of each qh byte) as 16 in every byte. */
#define K5_HIGH(qh, j) (((j) < 4 ? (qh) << (4 - (j)) : (qh) >> ((j) - 4)) & 0x1010101010101010LL)

#define A_QS offsetof(cv_block_q8_K, qs)
#define A_BSUMS offsetof(cv_block_q8_K, bsums)

INLINE __m512i pick16(__m512i v, int32_t pattern) {
    const __m512i base = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0);
    return _mm512_shuffle_epi8(v, _mm512_add_epi8(_mm512_set1_epi32(pattern), base));
}

INLINE __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

INLINE __m512i bcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* The 32 bytes at rp[j] + off of the 16 rows, transposed: v[k] lane j = dword k of row j. */
INLINE void rows16_dwords(const uint8_t *const rp[16], size_t off, __m512i v[8]) {
    __m512i z[8];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < 8; i++)
        z[i] = join(_mm256_loadu_si256((const __m256i *)(rp[i] + off)),
                    _mm256_loadu_si256((const __m256i *)(rp[i + 8] + off)));
    /* z[i] lanes: row i dwords 0-3, 4-7, row i+8 dwords 0-3, 4-7. After the in-lane
     * 4 x 4 transposes, b[g] (g < 4, from z[0..3]) holds dword g / g+4 of rows 0-3 and
     * 8-11, b[g + 4] the same of rows 4-7 and 12-15. */
    __m512i b[8];
    _Pragma("GCC unroll 2")
    for (int q = 0; q < 2; q++) {
        const __m512i *s = z + 4 * q;
        __m512i a0 = _mm512_unpacklo_epi32(s[0], s[1]), a1 = _mm512_unpackhi_epi32(s[0], s[1]);
        __m512i a2 = _mm512_unpacklo_epi32(s[2], s[3]), a3 = _mm512_unpackhi_epi32(s[2], s[3]);
        b[4 * q] = _mm512_unpacklo_epi64(a0, a2);
        b[4 * q + 1] = _mm512_unpackhi_epi64(a0, a2);
        b[4 * q + 2] = _mm512_unpacklo_epi64(a1, a3);
        b[4 * q + 3] = _mm512_unpackhi_epi64(a1, a3);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    _Pragma("GCC unroll 4")
    for (int g = 0; g < 4; g++) {
        v[g] = _mm512_permutex2var_epi64(b[g], lo, b[g + 4]);
        v[g + 4] = _mm512_permutex2var_epi64(b[g], hi, b[g + 4]);
    }
}

/* Words first..first+n-1 of a block in the x16 layout (repack.h) whose body is at
 * `body`: the same vectors rows16_dwords and head16 build, as plain loads. */
INLINE void words16(const uint8_t *body, int first, const int n, __m512i v[]) {
    _Pragma("GCC unroll 8")
    for (int k = 0; k < n; k++) v[k] = _mm512_loadu_si512(body + 64 * (size_t)(first + k));
}

/* Dwords 0..3 of the 16 bytes at rp[j] + off: h[g] lane j = dword g of row j. */
INLINE void head16(const uint8_t *const rp[16], size_t off, __m512i h[4]) {
    __m256i a[4], b[4];
    head8(rp, off, a);
    head8(rp + 8, off, b);
    _Pragma("GCC unroll 4")
    for (int g = 0; g < 4; g++) h[g] = join(a[g], b[g]);
}

/* Super-block b (weights at rp[j] + wo, activations at ab + t * astride) of the 16 rows
 * for RN tokens: sumi[t] = sum_j sc_j x (quants . activations) and summ[t] =
 * sum_j m_j x (sub-block sum of the activations), per row; dw, dmw: d and dmin.
 * q5: Q5_K (x16 only), whose level of sub-block j adds bit j of the element's qh byte
 * as 16. */
INLINE void sums_q4_K(const int RN, const int packed, const int q5, const uint8_t *const rp[16], size_t wo,
                      const uint8_t *ab, size_t astride, __m512i sumi[], __m512i summ[], __m512 *dw, __m512 *dmw) {
    __m512i h[4], s03, s47, m03, m47, qh[8];
    /* x16: d and dmin (32 bytes each), then the words of scales (3), Q5_K's qh (8)
     * and qs (32). */
    const uint8_t *g = rp[0] + 16 * wo, *body = g + 64;
    const int qs_at = q5 ? 11 : 3;
    if (packed) {
        words16(body, 0, 3, h + 1);
        if (q5) words16(body, 3, 8, qh);
        *dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        *dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
    } else {
        head16(rp, wo, h);
        *dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h[0]));
        *dmw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h[0], 16)));
    }
    K4_SCALES(h[1], h[2], h[3], s03, s47, m03, m47);
    _Pragma("GCC unroll 4")
    for (int c = 0; c < 4; c++) {
        __m512i p[8];
        if (packed) words16(body, qs_at + 8 * c, 8, p);
        else rows16_dwords(rp, wo + offsetof(cv_block_q4_K, qs) + 32 * (size_t)c, p);
        _Pragma("GCC unroll 2")
        for (int half = 0; half < 2; half++) {
            const int j = 2 * c + half;
            const __m512i sc = pick16(j < 4 ? s03 : s47, K_PICK(j % 4, -1, -1, -1));
            __m512i v[8];
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) {
                v[k] = half ? K_HI4(p[k]) : K_LO4(p[k]);
                if (q5) v[k] |= K5_HIGH(qh[k], j);
            }
            _Pragma("GCC unroll 16")
            for (int t = 0; t < RN; t++) {
                const uint8_t *aq = ab + t * astride + A_QS + 32 * j;
                /* two chains of 4: exact, and half the dependent latency */
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                _Pragma("GCC unroll 8")
                for (int k = 0; k < 8; k += 2) {
                    s0 = _mm512_dpbusd_epi32(s0, v[k], bcast4(aq + 4 * k));
                    s1 = _mm512_dpbusd_epi32(s1, v[k + 1], bcast4(aq + 4 * k + 4));
                }
                sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
            }
        }
    }
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) {
        const uint8_t *bs = ab + t * astride + A_BSUMS;
        _Pragma("GCC unroll 8")
        for (int j = 0; j < 8; j++)
            summ[t] = _mm512_dpwssd_epi32(summ[t], pick16(j < 4 ? m03 : m47, K_PICK(j % 4, -1, j % 4, -1)),
                                          bcast4(bs + 4 * j));
    }
}

/* Q6_K's signed scales bytes b0, b1 of each dword as int16 pairs. */
INLINE __m512i q6_scale_pair16(__m512i h, int b0, int b1) {
    return _mm512_srai_epi16(pick16(h, K_PICK(-1, b0, -1, b1)), 8);
}

/* The same for Q6_K: sumi[t] = sum_g sc_g x ((levels - 32) . activations); dw: d. */
INLINE void sums_q6_K(const int RN, const int packed, const uint8_t *const rp[16], size_t wo, const uint8_t *ab,
                      size_t astride, __m512i sumi[], __m512 *dw) {
    __m512i h[4];
    /* x16: d (32 bytes), then the words of ql (32), qh (16) and scales (4). */
    const uint8_t *g = rp[0] + 16 * wo, *body = g + 32;
    if (packed) {
        words16(body, 48, 4, h);
        *dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    } else {
        head16(rp, wo + offsetof(cv_block_q6_K, scales), h);
        uint16_t hd[16];
        _Pragma("GCC unroll 16")
        for (int r = 0; r < 16; r++) memcpy(&hd[r], rp[r] + wo + offsetof(cv_block_q6_K, d), sizeof hd[r]);
        *dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)hd));
    }
    _Pragma("GCC unroll 2")
    for (int hh = 0; hh < 2; hh++) {
        __m512i l0[8], l1[8], qh[8];
        if (packed) {
            words16(body, 16 * hh, 8, l0);
            words16(body, 16 * hh + 8, 8, l1);
            words16(body, 32 + 8 * hh, 8, qh);
        } else {
            rows16_dwords(rp, wo + offsetof(cv_block_q6_K, ql) + 64 * (size_t)hh, l0);
            rows16_dwords(rp, wo + offsetof(cv_block_q6_K, ql) + 64 * (size_t)hh + 32, l1);
            rows16_dwords(rp, wo + offsetof(cv_block_q6_K, qh) + 32 * (size_t)hh, qh);
        }
        _Pragma("GCC unroll 4")
        for (int m = 0; m < 4; m++) {
            __m512i v[8];
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) v[k] = Q6_LEVELS(m % 2 ? l1[k] : l0[k], qh[k], m);
            _Pragma("GCC unroll 2")
            for (int sub = 0; sub < 2; sub++) {
                const int g = 8 * hh + 2 * m + sub;
                /* the signed scale of sub-block g as an int32 */
                const __m512i sc = _mm512_srai_epi32(pick16(h[g / 4], K_PICK(-1, -1, -1, g % 4)), 24);
                _Pragma("GCC unroll 16")
                for (int t = 0; t < RN; t++) {
                    const uint8_t *aq = ab + t * astride + A_QS + 128 * hh + 32 * m + 16 * sub;
                    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                    _Pragma("GCC unroll 4")
                    for (int k = 0; k < 4; k += 2) {
                        s0 = _mm512_dpbusd_epi32(s0, v[4 * sub + k], bcast4(aq + 4 * k));
                        s1 = _mm512_dpbusd_epi32(s1, v[4 * sub + k + 1], bcast4(aq + 4 * k + 4));
                    }
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
                }
            }
        }
    }
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) {
        const uint8_t *bs = ab + t * astride + A_BSUMS;
        __m512i off = _mm512_setzero_si512();
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 8; i++)
            off = _mm512_dpwssd_epi32(off, q6_scale_pair16(h[i / 2], 2 * (i % 2), 2 * (i % 2) + 1), bcast4(bs + 4 * i));
        sumi[t] = _mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off, 5));
    }
}

/* 16 rows x RN tokens, super-blocks in order with the AVX2 tiles' float steps. */
INLINE void tile16(const int kind, const int packed, const int RN, const uint8_t *const rp[16], const uint8_t *pf,
                   const uint8_t *end, const uint8_t *act, size_t astride, int64_t nb, float *y, int64_t ldy) {
    const size_t blk = kind == W_Q4_K ? sizeof(cv_block_q4_K) : kind == W_Q5_K ? sizeof(cv_block_q5_K)
                                                                               : sizeof(cv_block_q6_K);
    __m512 acc[RN_MAX];
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        /* File rows: the next tile's 16 rows are one contiguous stretch: stream it in
         * at the pace this tile reads its own. x16: the stream ahead (matmul_x86.h). */
        if (packed) x16_prefetch(rp[0] + (b * 16 * blk) + X16_AHEAD, 16 * blk, end);
        else
            for (size_t o = 0; o < 16 * blk; o += 64) _mm_prefetch((const char *)pf + b * 16 * blk + o, _MM_HINT_T0);
        const uint8_t *ab = act + (size_t)b * sizeof(cv_block_q8_K);
        __m512i sumi[RN_MAX], summ[RN_MAX];
        _Pragma("GCC unroll 16")
        for (int t = 0; t < RN; t++) sumi[t] = summ[t] = _mm512_setzero_si512();
        __m512 dw, dmw = _mm512_setzero_ps();
        if (kind != W_Q6_K)
            sums_q4_K(RN, packed, kind == W_Q5_K, rp, (size_t)b * blk, ab, astride, sumi, summ, &dw, &dmw);
        else sums_q6_K(RN, packed, rp, (size_t)b * blk, ab, astride, sumi, &dw);
        _Pragma("GCC unroll 16")
        for (int t = 0; t < RN; t++) {
            float da;
            memcpy(&da, ab + t * astride, sizeof da);
            const __m512 d16 = _mm512_set1_ps(da);
            __m512 r = _mm512_mul_ps(_mm512_mul_ps(d16, dw), _mm512_cvtepi32_ps(sumi[t]));
            if (kind != W_Q6_K) r = _mm512_sub_ps(r, _mm512_mul_ps(_mm512_mul_ps(d16, dmw), _mm512_cvtepi32_ps(summ[t])));
            acc[t] = _mm512_add_ps(acc[t], r);
        }
    }
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) _mm512_storeu_ps(y + t * ldy, acc[t]);
}

INLINE void tile16_any(const int kind, const int packed, int rn, const uint8_t *const rp[16], const uint8_t *pf,
                       const uint8_t *end, const uint8_t *act, size_t as, int64_t nb, float *y, int64_t ldy) {
    switch (rn) {
#define CASE(N) case N: tile16(kind, packed, N, rp, pf, end, act, as, nb, y, ldy); break;
    CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
    CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
#undef CASE
    default: tile16(kind, packed, 1, rp, pf, end, act, as, nb, y, ldy); break;
    }
}

/* r0 is a multiple of 16 for x16 weights (cv_matmul_run's items are): the group of rows
 * r..r+15 starts at row r's old offset, and the tail rows are plain rows. */
INLINE void rows_kind(const int kind, const int packed, const cv_tensor *w, int64_t r0, int64_t r1, const void *act,
                      size_t act_stride, int32_t n, float *y, int64_t ldy) {
    const int64_t nb = w->cols / CV_QK_K;
    const size_t ws = w->row_stride;
    const uint8_t *A = act, *W = w->data;
    int64_t r = r0;
    const uint8_t *end = W + r1 * ws;
    if (packed) x16_prefetch(W + r0 * ws, X16_AHEAD, end);
    /* 16 rows stay in L1/L2 while every token passes over them. */
    for (; r + 16 <= r1; r += 16) {
        const uint8_t *rp[16];
        for (int i = 0; i < 16; i++) rp[i] = W + (r + i) * ws;
        for (int32_t t = 0; t < n; t += RN_MAX)
            tile16_any(kind, packed, n - t < RN_MAX ? n - t : RN_MAX, rp, W + (r + 16) * ws, end, A + (size_t)t * act_stride,
                       act_stride, nb, y + (int64_t)t * ldy + r, ldy);
    }
    if (r < r1 && kind == W_Q5_K)
        for (int32_t t = 0; t < n; t++)
            for (int64_t i = r; i < r1; i++)
                y[(int64_t)t * ldy + i] = cv_vec_dot_scalar(w->type, w->cols, W + i * ws, A + (size_t)t * act_stride);
    else if (r < r1) cv_matmul_avx2_k.rows(w, r, r1, act, act_stride, n, y, ldy);
}

/* One entry for the formats: the tensor says which tile to instantiate. Q5_K has a
 * tile for the x16 layout only (file rows: quant's row dot). */
static void rows_k(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                   float *y, int64_t ldy) {
    const int x16 = w->layout == CV_CPU_LAYOUT_X16;
    if (w->type == CV_TYPE_Q5_K) {
        if (x16) rows_kind(W_Q5_K, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else cv_matmul_ref.rows(w, r0, r1, act, act_stride, n, y, ldy);
    } else if (w->type == CV_TYPE_Q4_K) {
        if (x16) rows_kind(W_Q4_K, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else rows_kind(W_Q4_K, 0, w, r0, r1, act, act_stride, n, y, ldy);
    } else {
        if (x16) rows_kind(W_Q6_K, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else rows_kind(W_Q6_K, 0, w, r0, r1, act, act_stride, n, y, ldy);
    }
}

const cv_matmul_kernel cv_matmul_avx512_k = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, rows_k};
