/* AVX-512 VNNI matmul tiles for Q4_0, Q8_0 and Q5_0 weights (Q5_0's file rows go to
 * matmul_q5_avx512.c), in the file's
 * rows or in the x16 layout (repack.h), where a block of 16 rows is already V below and
 * costs a few loads: the fast path of batch-1 decode. For any number of tokens (one
 * token too: decode is compute-bound on a core that reads 24 GB/s, and the transposed
 * tile needs a third of the AVX2 tile's instructions per block); row tails go to the
 * AVX2 kernels.
 *
 * A tile is 16 weight rows x up to RN tokens. Block b of the 16 rows is turned into 8
 * vectors V[k] whose 32-bit lane j holds bytes 4k..4k+3 of row j's 32 weights, as
 * unsigned bytes: Q4_0 levels 0..15 as they are, Q8_0 bytes + 128. One vpdpbusd per k
 * with the token's activation bytes 4k..4k+3 broadcast adds row j's 4 products into
 * lane j, so 8 instructions give the 16 rows' block sums with nothing to reduce; the
 * bias of the unsigned weights comes off as k x sum(a) (matmul_x86.h). Unpacking and
 * transposing a block is paid once for RN tokens (Q4_0 transposes the packed bytes,
 * 4 dwords a row, with two rounds of permutes, and splits nibbles afterwards). The
 * next tile's rows are prefetched as this one reads its own: without that, batched
 * decode of a 1B model takes twice as long.
 *
 * The integer block sums are exact, and the float steps per output (convert, times
 * weight scale x activation scale, FMA into the running sum, blocks in order) are the
 * AVX2 tiles' own, so every output is bit-identical to the AVX2 kernel's: the choice of
 * kernel, like the thread count or the batch, never changes a result. Q5_0, which has
 * no AVX2 tile, keeps the scalar reference's steps instead (product, then sum), as
 * matmul_q5_avx512.c does.
 */
#include "matmul.h"
#include "matmul_x86_tiles.h"

#include "repack.h"

enum { W_Q4_0, W_Q8_0, W_Q5_0 };

/* Tokens per tile: 8 weight vectors + RN accumulators + a few temporaries fit the 32
 * zmm registers. */
#define RN_MAX 16

/* Block b of 16 rows as V[0..7] (see the top comment); packed: the group's block in
 * the x16 layout (repack.h), whose words are V's lanes already. */
INLINE void block16(const int kind, const int packed, const uint8_t *w, size_t ws, __m512i v[8]) {
    if (packed) {
        const uint8_t *words = w + 32;
        if (kind == W_Q5_0) {
            /* Word 0 is qh (bit e: the fifth bit of element e), words 1..4 the nibbles
             * as Q4_0's. V[k] byte b is element 4k + b: its fifth bit is bit 4(k % 2)
             * + b of qh's byte k / 2, spread to the byte by a shuffle and a bit test. */
            const __m512i qh = _mm512_loadu_si512(words), low4 = _mm512_set1_epi8(0x0F), c16 = _mm512_set1_epi8(0x10);
            _Pragma("GCC unroll 4")
            for (int g = 0; g < 4; g++) {
                const __m512i p = _mm512_loadu_si512(words + 64 * (g + 1));
                v[g] = _mm512_and_si512(p, low4);
                v[g + 4] = _mm512_and_si512(_mm512_srli_epi32(p, 4), low4);
            }
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) {
                const __m512i spread = _mm512_shuffle_epi8(qh, _mm512_set4_epi32(0x0C0C0C0C + (k / 2) * 0x01010101,
                                                                                 0x08080808 + (k / 2) * 0x01010101,
                                                                                 0x04040404 + (k / 2) * 0x01010101,
                                                                                 (k / 2) * 0x01010101));
                const __mmask64 hi = _mm512_test_epi8_mask(spread, _mm512_set1_epi32((int)(0x08040201u << (4 * (k % 2)))));
                v[k] = _mm512_mask_add_epi8(v[k], hi, v[k], c16);
            }
            return;
        }
        if (kind == W_Q8_0) {
            _Pragma("GCC unroll 8")
            for (int k = 0; k < 8; k++) v[k] = _mm512_loadu_si512(words + 64 * k);
            return;
        }
        const __m512i low4 = _mm512_set1_epi8(0x0F);
        _Pragma("GCC unroll 4")
        for (int g = 0; g < 4; g++) {
            const __m512i p = _mm512_loadu_si512(words + 64 * g);
            v[g] = _mm512_and_si512(p, low4);
            v[g + 4] = _mm512_and_si512(_mm512_srli_epi32(p, 4), low4);
        }
        return;
    }
    if (kind == W_Q4_0) {
        /* Transpose the packed bytes (4 dwords a row) first, then split the nibbles:
         * dword g holds the levels of elements 4g..4g+3 (low) and 16+4g.. (high). */
        __m512i z[4];
        _Pragma("GCC unroll 4")
        for (int q = 0; q < 4; q++) {
            const uint8_t *r = w + 4 * q * ws + 2;
            __m512i t = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)r));
            t = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(r + ws)), 1);
            t = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(r + 2 * ws)), 2);
            z[q] = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(r + 3 * ws)), 3);
        }
        /* z[q] lane 4i+g = dword g of row 4q+i. Gather dwords g, g+1 of 8 rows, then
         * join the two row halves. */
        const __m512i g01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
        const __m512i g23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
        const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        const __m512i hi = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
        __m512i a01 = _mm512_permutex2var_epi32(z[0], g01, z[1]), a23 = _mm512_permutex2var_epi32(z[0], g23, z[1]);
        __m512i b01 = _mm512_permutex2var_epi32(z[2], g01, z[3]), b23 = _mm512_permutex2var_epi32(z[2], g23, z[3]);
        __m512i p[4] = {_mm512_permutex2var_epi32(a01, lo, b01), _mm512_permutex2var_epi32(a01, hi, b01),
                        _mm512_permutex2var_epi32(a23, lo, b23), _mm512_permutex2var_epi32(a23, hi, b23)};
        const __m512i low4 = _mm512_set1_epi8(0x0F);
        _Pragma("GCC unroll 4")
        for (int g = 0; g < 4; g++) {
            v[g] = _mm512_and_si512(p[g], low4);
            v[g + 4] = _mm512_and_si512(_mm512_srli_epi32(p[g], 4), low4);
        }
        return;
    }
    __m256i lo[8], hi[8];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < 8; r++) {
        lo[r] = _mm256_loadu_si256((const __m256i *)(w + r * ws + 2));
        hi[r] = _mm256_loadu_si256((const __m256i *)(w + (r + 8) * ws + 2));
    }
    transpose8(lo);
    transpose8(hi);
    _Pragma("GCC unroll 8")
    for (int k = 0; k < 8; k++)
        v[k] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo[k]), hi[k], 1),
                                _mm512_set1_epi8((char)0x80));
}

INLINE void tile16(const int kind, const int packed, const int RN, const uint8_t *w, size_t ws, const uint8_t *end,
                   const uint8_t *act,
                   size_t astride, int64_t nb, float *y, int64_t ldy) {
    const size_t blk = kind == W_Q4_0 ? sizeof(cv_block_q4_0) : kind == W_Q5_0 ? sizeof(cv_block_q5_0)
                                                                               : sizeof(cv_block_q8_0);
    /* File rows: the next tile's 16 rows are one contiguous stretch: stream it in at
     * the pace this tile reads its own. x16: the stream ahead (matmul_x86.h). */
    const uint8_t *pf = w + 16 * ws;
    __m512 acc[RN_MAX];
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (packed) x16_prefetch(w + (b * 16 * blk) + X16_AHEAD, 16 * blk, end);
        else
            for (size_t o = 0; o < 16 * blk; o += 64) _mm_prefetch((const char *)pf + b * 16 * blk + o, _MM_HINT_T0);
        __m512i v[8];
        __m512 dw;
        if (packed) {
            const uint8_t *g = w + b * 16 * blk;
            block16(kind, 1, g, ws, v);
            dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        } else {
            block16(kind, 0, w + b * blk, ws, v);
            uint16_t h[16];
            _Pragma("GCC unroll 16")
            for (int r = 0; r < 16; r++) memcpy(&h[r], w + r * ws + b * blk, sizeof h[r]);
            dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
        }
        /* Q5_0 keeps the scalar reference's product-then-sum (matmul_q5_avx512.c) */
        _Pragma("GCC unroll 16")
        for (int t = 0; t < RN; t++) acc[t] = vnni_block_step(kind != W_Q5_0, acc[t], v, dw, act + t * astride, nb, b);
    }
    _Pragma("GCC unroll 16")
    for (int t = 0; t < RN; t++) _mm512_storeu_ps(y + t * ldy, acc[t]);
}

INLINE void tile16_any(const int kind, const int packed, int rn, const uint8_t *w, size_t ws, const uint8_t *end,
                       const uint8_t *act,
                       size_t as, int64_t nb, float *y, int64_t ldy) {
    switch (rn) {
#define CASE(N) case N: tile16(kind, packed, N, w, ws, end, act, as, nb, y, ldy); break;
    CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
    CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
#undef CASE
    default: tile16(kind, packed, 1, w, ws, end, act, as, nb, y, ldy); break;
    }
}

/* r0 is a multiple of 16 for x16 weights (cv_matmul_run's items are): the group of rows
 * r..r+15 starts at row r's old offset, and the tail rows are plain rows. Q5_0 has no
 * transposing tile here: file rows take matmul_q5_avx512.c's gathering one. */
INLINE void rows_kind(const int kind, const int packed, const cv_tensor *w, int64_t r0, int64_t r1, const void *act,
                      size_t act_stride, int32_t n, float *y, int64_t ldy) {
    /* Q5_0's rows are matmul_q5_avx512.c's: the AVX2 row dot sums in another order */
    const cv_matmul_kernel *base = kind == W_Q5_0 ? &cv_matmul_avx512_q5_0 : cv_matmul_avx2_for(w->type);
    const int64_t nb = w->cols / 32;
    const size_t ws = w->row_stride;
    const uint8_t *A = act, *W = w->data;
    int64_t r = r0;
    const uint8_t *end = W + r1 * ws;
    if (packed) x16_prefetch(W + r0 * ws, X16_AHEAD, end);
    /* 16 rows (18..34 bytes x cols / 32 each) stay in L1 while every token passes. */
    for (; (kind != W_Q5_0 || packed) && r + 16 <= r1; r += 16)
        for (int32_t t = 0; t < n; t += RN_MAX)
            tile16_any(kind, packed, n - t < RN_MAX ? n - t : RN_MAX, W + r * ws, ws, end, A + (size_t)t * act_stride,
                       act_stride, nb, y + (int64_t)t * ldy + r, ldy);
    if (r < r1) {
        base->rows(w, r, r1, act, act_stride, n, y, ldy);
    }
}

/* One entry for the formats: the tensor says which tile to instantiate. */
static void rows_vnni(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    const int x16 = w->layout == CV_CPU_LAYOUT_X16;
    if (w->type == CV_TYPE_Q4_0) {
        if (x16) rows_kind(W_Q4_0, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else rows_kind(W_Q4_0, 0, w, r0, r1, act, act_stride, n, y, ldy);
    } else if (w->type == CV_TYPE_Q5_0) {
        if (x16) rows_kind(W_Q5_0, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else cv_matmul_avx512_q5_0.rows(w, r0, r1, act, act_stride, n, y, ldy);
    } else {
        if (x16) rows_kind(W_Q8_0, 1, w, r0, r1, act, act_stride, n, y, ldy);
        else rows_kind(W_Q8_0, 0, w, r0, r1, act, act_stride, n, y, ldy);
    }
}

/* Same activation layout as the AVX2 kernels (the tails and n = 1 run there). */
static const cv_matmul_kernel k_vnni = {cv_matmul_x86_act_bytes, cv_matmul_x86_act_convert, rows_vnni};

const cv_matmul_kernel *cv_matmul_avx512_for(cv_type wtype) {
    switch (wtype) {
    case CV_TYPE_Q4_0: case CV_TYPE_Q5_0: case CV_TYPE_Q8_0: return &k_vnni;
    case CV_TYPE_Q4_K: case CV_TYPE_Q5_K: case CV_TYPE_Q6_K: return &cv_matmul_avx512_k; /* Q5_K: x16 only */
    case CV_TYPE_F16: case CV_TYPE_BF16: return &cv_matmul_avx512_f16; /* matmul_f16_avx512.c */
    default: return NULL;
    }
}
