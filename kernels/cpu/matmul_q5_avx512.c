/* AVX-512 VNNI matmul tiles for Q5_0 weights (the 640- and 896-wide rows of Gemma 3
 * and Qwen2.5 Q4_K_M files, which cannot take K-quants), for any number of tokens.
 *
 * A tile is 16 weight rows x up to 16 tokens over the x86 activation rows of
 * matmul_x86.h (Q8_0 bytes, float scales, 16 x the block sums). Block b of the 16 rows
 * is gathered so that 32-bit lane j belongs to row j: one vpgatherdd per 4 bytes of
 * nibbles (4 of them), split into low and high nibbles, gives V[k] with the levels of
 * elements 4k..4k+3 (k < 4) or 16 + 4(k - 4).. (k >= 4); the fifth bit comes from the
 * gathered qh word, spread to bytes with a shuffle and a byte test, added as 16 under
 * the mask. One vpdpbusd per k with the token's activation bytes broadcast adds row j's
 * 4 products into lane j; the weights' offset of 16 comes off as 16 x sum(a). Rows
 * past the end of a tail tile gather the last row again and are not stored, so every
 * row count takes the same path. One token goes row by row (rows1) with the same sums
 * and float steps.
 *
 * Float steps per output are the scalar reference's (quant.c's dot_q32): blocks in
 * order, s += (float)sumi * (d_w * d_a) as a product then a sum (no FMA), so every
 * output is bit-identical to the reference (not to quant's AVX2 row dot, which uses two
 * accumulators and FMA: this kernel must serve every batch size on a host).
 */
#include <stddef.h>

#include "matmul.h"
#include "matmul_x86_tiles.h"

#define RN_MAX 16

/* Levels (0..31) of block at base + idx[j] for the 16 rows (see the top comment). */
INLINE void block16(const uint8_t *base, __m512i idx, __m512i v[8], __m512 *dw) {
    const __m512i hd = _mm512_i32gather_epi32(idx, base, 1); /* d, then qh bytes 0-1 */
    const __m512i qh = _mm512_i32gather_epi32(idx, base + 2, 1);
    *dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd));
    const __m512i low4 = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(16);
    /* byte 0 of each dword, for vpshufb (which indexes within 128-bit lanes) */
    const __m512i dword0 = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0);
    _Pragma("GCC unroll 4")
    for (int g = 0; g < 4; g++) {
        const __m512i p = _mm512_i32gather_epi32(idx, base + 6 + 4 * g, 1);
        v[g] = _mm512_and_si512(p, low4);
        v[g + 4] = _mm512_and_si512(_mm512_srli_epi32(p, 4), low4);
    }
    /* Element e's fifth bit is bit e of qh: for V[k] the bits 4k'..4k'+3 of qh's byte
     * (4k') / 8, where k' = k (k < 4) or 4 + k (k >= 4, elements 16 + 4(k - 4)..). */
    _Pragma("GCC unroll 8")
    for (int k = 0; k < 8; k++) {
        const int e = k < 4 ? 4 * k : 16 + 4 * (k - 4), byte = e / 8;
        const __m512i spread = _mm512_shuffle_epi8(qh, _mm512_add_epi8(_mm512_set1_epi32(byte * 0x01010101), dword0));
        const __m512i bits = _mm512_set1_epi32(e % 8 ? (int32_t)0x80402010 : 0x08040201);
        v[k] = _mm512_mask_add_epi8(v[k], _mm512_test_epi8_mask(spread, bits), v[k], sixteen);
    }
}

INLINE void tile16(const int RN, const uint8_t *w, __m512i idx, __mmask16 live, const uint8_t *pf,
                   const uint8_t *act, size_t astride, int64_t nb, float *y, int64_t ldy) {
    const size_t blk = sizeof(cv_block_q5_0);
    __m512 acc[RN_MAX];
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        /* The next tile's 16 rows are one contiguous stretch: stream it in at the pace
         * this tile reads its own. */
        for (size_t o = 0; o < 16 * blk; o += 64) _mm_prefetch((const char *)pf + b * 16 * blk + o, _MM_HINT_T0);
        __m512i v[8];
        __m512 dw;
        block16(w + b * blk, idx, v, &dw);
        _Pragma("GCC unroll 16")
        for (int t = 0; t < RN; t++) acc[t] = vnni_block_step(0, acc[t], v, dw, act + t * astride, nb, b);
    }
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) _mm512_mask_storeu_ps(y + t * ldy, live, acc[t]);
}

INLINE void tile16_any(int rn, const uint8_t *w, __m512i idx, __mmask16 live, const uint8_t *pf, const uint8_t *act,
                       size_t as, int64_t nb, float *y, int64_t ldy) {
    switch (rn) {
#define CASE(N) case N: tile16(N, w, idx, live, pf, act, as, nb, y, ldy); break;
    CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
    CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
#undef CASE
    default: tile16(1, w, idx, live, pf, act, as, nb, y, ldy); break;
    }
}

/* The 32 levels (0..31) of a Q5_0 block in element order: nibbles, plus 16 where bit j
 * of qh is set. */
INLINE __m256i q5_levels32(const uint8_t *blk) {
    uint32_t h;
    memcpy(&h, blk + offsetof(cv_block_q5_0, qh), sizeof h);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)h), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(16));
    return _mm256_or_si256(q4_levels(blk + offsetof(cv_block_q5_0, qs) - 2), high);
}

/* One block of one row against the token (a block past the last 8): the exact integer
 * sum, offset removed. */
INLINE int32_t block_sum1(const uint8_t *blk, __m256i a, int32_t off) {
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q5_levels32(blk), a), _mm256_set1_epi16(1));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    return _mm_cvtsi128_si32(h) - off;
}

/* One token streams each weight once: gathering 16 rows then costs more than it saves
 * (896 x 896: 0.08 ms against 0.05 for quant's row dot). Row by row instead, 8 blocks
 * at a time: their 8 exact integer sums reduced together into one vector, the 8
 * products (float)sumi x (d_w x d_a) in one, then added to the row's sum one by one in
 * block order: the tile's float steps exactly. */
static void rows1(const cv_tensor *w, int64_t r0, int64_t r1, const uint8_t *act, float *y) {
    const int64_t nb = w->cols / 32;
    const float *ad = (const float *)(act + q8_part(nb));
    const int32_t *off = (const int32_t *)(ad + nb);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + r * w->row_stride;
        float s = 0;
        int64_t b = 0;
        for (; b + 8 <= nb; b += 8) {
            __m256i p[8];
            uint16_t dd[8];
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) {
                const uint8_t *blk = row + (b + k) * sizeof(cv_block_q5_0);
                const __m256i a = _mm256_loadu_si256((const __m256i *)(act + (b + k) * sizeof(cv_block_q8_0) + 2));
                p[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(q5_levels32(blk), a), ones);
                memcpy(&dd[k], blk, sizeof dd[k]);
            }
            /* lane k of h0123 / h4567 halves: block k's partial sums; added: its sum */
            const __m256i h0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
            const __m256i h4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
            __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                                           _mm256_permute2x128_si256(h0123, h4567, 0x31));
            sum = _mm256_sub_epi32(sum, _mm256_loadu_si256((const __m256i *)(off + b)));
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dd));
            float prod[8];
            _mm256_storeu_ps(prod, _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_loadu_ps(ad + b))));
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) s += prod[k];
        }
        for (; b < nb; b++) {
            const uint8_t *blk = row + b * sizeof(cv_block_q5_0);
            const __m256i a = _mm256_loadu_si256((const __m256i *)(act + b * sizeof(cv_block_q8_0) + 2));
            uint16_t d;
            memcpy(&d, blk, sizeof d);
            s += (float)block_sum1(blk, a, off[b]) * (_cvtsh_ss(d) * ad[b]);
        }
        y[r] = s;
    }
}

static void rows_q5_0(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    const int64_t nb = w->cols / 32;
    const size_t ws = w->row_stride;
    const uint8_t *A = act, *W = w->data;
    if (n == 1) {
        rows1(w, r0, r1, A, y);
        return;
    }
    for (int64_t r = r0; r < r1; r += 16) {
        const int live = r1 - r < 16 ? (int)(r1 - r) : 16;
        int32_t off[16];
        for (int i = 0; i < 16; i++) off[i] = (int32_t)((size_t)(i < live ? i : live - 1) * ws);
        const __m512i idx = _mm512_loadu_si512(off);
        /* the next tile's rows, or this tile's again at the end */
        const uint8_t *pf = W + (r + 16 < r1 ? r + 16 : r) * ws;
        for (int32_t t = 0; t < n; t += RN_MAX)
            tile16_any(n - t < RN_MAX ? n - t : RN_MAX, W + r * ws, idx, (__mmask16)((1u << live) - 1), pf,
                       A + (size_t)t * act_stride, act_stride, nb, y + (int64_t)t * ldy + r, ldy);
    }
}

const cv_matmul_kernel cv_matmul_avx512_q5_0 = {cv_matmul_x86_act_bytes, cv_matmul_x86_act_convert, rows_q5_0};
