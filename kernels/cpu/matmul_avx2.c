/* AVX2 matmul tiles for Q4_0 and Q8_0 weights (the decode hot path).
 *
 * Activations are converted once per call by cv_quantize_row_act (Q8_0, the same bytes
 * as the reference) into the row layout of matmul_x86.h. A tile is 4 weight rows x RN
 * activation rows:
 * each weight block is unpacked once for RN tokens, each activation block once for 4
 * rows. The integer block sums of the 4 rows are reduced together into one 4-lane
 * vector, so the scale work (weight scale x activation scale, one FMA) is done for 4
 * outputs at a time instead of per output. Q4_0 with several tokens uses tiles of 8
 * rows x 8 tokens instead (tile8_q4_0).
 *   Q4_0: maddubs(level, a) with the unsigned levels 0..15; the offset of 8 comes off
 *         as 8 * sum(a) per block (exact, in integers); the four rows' int16 pair sums
 *         are added in int16 and widened once.
 *   Q8_0: maddubs(|w|, sign(a, w)) (no saturation: |w|, |a| <= 127).
 * Each output sums its blocks in order with the same integer and float steps whatever
 * the tile shape or thread split, so results do not depend on the thread count.
 */
#include "matmul.h"
#include "matmul_x86.h"
#include "quant_blocks.h"

enum { W_Q4_0, W_Q8_0 };

size_t cv_matmul_x86_act_bytes(cv_type wtype, int64_t cols) {
    (void)wtype;
    int64_t nb = cols / 32;
    return q8_part(nb) + (size_t)nb * (sizeof(float) + sizeof(int32_t));
}

void cv_matmul_x86_act_convert(cv_type wtype, const float *x, void *act, int64_t cols) {
    int64_t nb = cols / 32;
    const cv_block_q8_0 *q = act;
    cv_quantize_row_act(CV_TYPE_Q8_0, x, act, cols);
    float *d = (float *)((char *)act + q8_part(nb));
    int32_t *off = (int32_t *)(d + nb);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const int32_t k = wtype == CV_TYPE_Q4_0 ? 8 : wtype == CV_TYPE_Q5_0 ? 16 : 128;
    for (int64_t b = 0; b < nb; b++) {
        d[b] = _cvtsh_ss(q[b].d);
        __m256i a = _mm256_loadu_si256((const __m256i *)q[b].qs);
        __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a), ones16);
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        off[b] = k * _mm_cvtsi128_si32(h);
    }
}

/* The 8-lane int32 sums of four rows -> one int32 per row. */
INLINE __m128i reduce4(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* The same from int16 pair sums, adding in int16 first (one widening instead of four):
 * exact while 8 lanes of a row sum below 2^15, true for Q4_0 (8 x 2 x 15 x 127). */
INLINE __m128i reduce4_i16(__m256i p0, __m256i p1, __m256i p2, __m256i p3, __m256i ones) {
    __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(p0, p1), _mm256_hadd_epi16(p2, p3));
    h = _mm256_madd_epi16(h, ones);
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* Scales of block b of four rows (rows past RM repeat row 0; their lanes are unused). */
INLINE __m128 scales4(const uint8_t *w, size_t ws, int RM, int64_t b, size_t blk) {
    const __m128i idx = _mm_setr_epi32(0, RM > 1 ? (int)ws : 0, RM > 2 ? (int)(2 * ws) : 0, RM > 3 ? (int)(3 * ws) : 0);
    __m128i g = _mm_i32gather_epi32((const int *)(w + b * blk), idx, 1);
    g = _mm_shuffle_epi8(g, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1));
    return _mm_cvtph_ps(g);
}

INLINE void tile(const int kind, const int RM, const int RN, const uint8_t *w, size_t ws, const uint8_t *act,
                 size_t astride, int64_t nb, float *y, int64_t ldy) {
    const size_t blk = kind == W_Q4_0 ? sizeof(cv_block_q4_0) : sizeof(cv_block_q8_0);
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t qpart = q8_part(nb);
    __m128 acc[4];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) acc[t] = _mm_setzero_ps();
    /* Rows are contiguous in memory: while this tile runs, pull in the tile after next
     * (a short 4-row stream that the hardware prefetcher would pick up too late). */
    const uint8_t *pf = w + 2 * 4 * ws;
    const size_t pf_step = (size_t)RM * blk;
    for (int64_t b = 0; b < nb; b++) {
        _mm_prefetch((const char *)pf + b * pf_step, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + b * pf_step + 64, _MM_HINT_T0);
        __m256i wq[4], wa[4];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RM; r++) {
            const uint8_t *blkp = w + r * ws + b * blk;
            if (kind == W_Q4_0) {
                wq[r] = q4_levels(blkp);
            } else {
                wq[r] = _mm256_loadu_si256((const __m256i *)(blkp + 2));
                wa[r] = _mm256_abs_epi8(wq[r]);
            }
        }
        const __m128 dw = scales4(w, ws, RM, b, blk);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < RN; t++) {
            const uint8_t *arow = act + t * astride;
            const __m256i aq = _mm256_loadu_si256((const __m256i *)(arow + b * sizeof(cv_block_q8_0) + 2));
            const float *ad = (const float *)(arow + qpart);
            __m256i p[4];
            _Pragma("GCC unroll 4")
            for (int r = 0; r < 4; r++) {
                if (r >= RM)
                    p[r] = _mm256_setzero_si256();
                else if (kind == W_Q4_0)
                    p[r] = _mm256_maddubs_epi16(wq[r], aq);
                else
                    p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(aq, wq[r])), ones);
            }
            __m128i s = kind == W_Q4_0 ? reduce4_i16(p[0], p[1], p[2], p[3], ones) : reduce4(p[0], p[1], p[2], p[3]);
            if (kind == W_Q4_0) s = _mm_sub_epi32(s, _mm_set1_epi32(((const int32_t *)(ad + nb))[b]));
            acc[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(s), _mm_mul_ps(dw, _mm_set1_ps(ad[b])), acc[t]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < RN; t++) {
        if (RM == 4) {
            _mm_storeu_ps(y + t * ldy, acc[t]);
        } else {
            float o[4];
            _mm_storeu_ps(o, acc[t]);
            memcpy(y + t * ldy, o, (size_t)RM * sizeof(float));
        }
    }
}

/* Q4_0 at n >= 2: 8 rows x RN tokens with the weights transposed in registers, so
 * that each row's sums stay in their own lanes and nothing is reduced horizontally.
 * Block b of each of the 8 rows (32 levels = 8 groups of 4) is transposed into V[k] =
 * group k of rows 0..7; maddubs(V[k], 4 activation bytes of group k broadcast) puts row
 * j's pair sums in int16 lanes 2j, 2j+1; the 8 groups add up in int16 (at most
 * 8 x 2 x 15 x 127 < 2^15) and one madd widens them to one int32 lane per row. The
 * transposition is paid once per block for RN tokens. Same integer sums and the same
 * float steps per output as tile(), so the two tile shapes mix freely. */
INLINE void tile8_q4_0(const int RN, const uint8_t *w, size_t ws, const uint8_t *act, size_t astride, int64_t nb,
                       float *y, int64_t ldy) {
    const size_t blk = sizeof(cv_block_q4_0);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)ws));
    const size_t qpart = q8_part(nb);
    const uint8_t *pf = w + 8 * ws;
    __m256 acc[8];
    _Pragma("GCC unroll 8")
    for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        _mm_prefetch((const char *)pf + b * 8 * blk, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + b * 8 * blk + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + b * 8 * blk + 128, _MM_HINT_T0);
        __m256i v[8];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < 8; r++) {
            v[r] = q4_levels(w + r * ws + b * blk);
        }
        transpose8(v);
        __m256i g = _mm256_i32gather_epi32((const int *)(w + b * blk), idx, 1);
        g = _mm256_shuffle_epi8(g, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4,
                                                    5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1));
        g = _mm256_permute4x64_epi64(g, 0x08);
        const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(g));
        _Pragma("GCC unroll 8")
        for (int t = 0; t < RN; t++) {
            const uint8_t *arow = act + t * astride;
            const uint8_t *aq = arow + b * sizeof(cv_block_q8_0) + 2;
            const float *ad = (const float *)(arow + qpart);
            __m256i s16 = _mm256_maddubs_epi16(v[0], group4(aq, 0));
            _Pragma("GCC unroll 8")
            for (int k = 1; k < 8; k++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(v[k], group4(aq, k)));
            __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(((const int32_t *)(ad + nb))[b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(ad[b])), acc[t]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int t = 0; t < RN; t++) _mm256_storeu_ps(y + t * ldy, acc[t]);
}

INLINE void tile8_any(int rn, const uint8_t *w, size_t ws, const uint8_t *act, size_t as, int64_t nb, float *y,
                      int64_t ldy) {
    switch (rn) {
    case 8: tile8_q4_0(8, w, ws, act, as, nb, y, ldy); break;
    case 7: tile8_q4_0(7, w, ws, act, as, nb, y, ldy); break;
    case 6: tile8_q4_0(6, w, ws, act, as, nb, y, ldy); break;
    case 5: tile8_q4_0(5, w, ws, act, as, nb, y, ldy); break;
    case 4: tile8_q4_0(4, w, ws, act, as, nb, y, ldy); break;
    case 3: tile8_q4_0(3, w, ws, act, as, nb, y, ldy); break;
    case 2: tile8_q4_0(2, w, ws, act, as, nb, y, ldy); break;
    default: tile8_q4_0(1, w, ws, act, as, nb, y, ldy); break;
    }
}

/* Tiles of 4 rows x up to 4 tokens; the rows' tail takes a narrower tile. */
INLINE void tile_any(const int kind, int rm, int rn, const uint8_t *w, size_t ws, const uint8_t *act, size_t as,
                     int64_t nb, float *y, int64_t ldy) {
#define TILE_RN(RM)                                                              \
    switch (rn) {                                                                \
    case 4: tile(kind, RM, 4, w, ws, act, as, nb, y, ldy); break;                \
    case 3: tile(kind, RM, 3, w, ws, act, as, nb, y, ldy); break;                \
    case 2: tile(kind, RM, 2, w, ws, act, as, nb, y, ldy); break;                \
    default: tile(kind, RM, 1, w, ws, act, as, nb, y, ldy); break;               \
    }
    switch (rm) {
    case 4: TILE_RN(4) break;
    case 3: TILE_RN(3) break;
    case 2: TILE_RN(2) break;
    default: TILE_RN(1) break;
    }
#undef TILE_RN
}

/* Rows are taken in blocks that stay in L1/L2 while every token passes over them. */
#define ROW_BLOCK 16

INLINE void rows_kind(const int kind, const cv_tensor *w, int64_t r0, int64_t r1, const void *act,
                      size_t act_stride, int32_t n, float *y, int64_t ldy) {
    const int64_t nb = w->cols / 32;
    const size_t ws = w->row_stride;
    const uint8_t *A = act;
    for (int64_t rb = r0; rb < r1; rb += ROW_BLOCK) {
        int64_t re = rb + ROW_BLOCK < r1 ? rb + ROW_BLOCK : r1;
        const int tstep = kind == W_Q4_0 && n > 1 ? 8 : 4;
        for (int32_t t = 0; t < n; t += tstep) {
            int rn = n - t < tstep ? n - t : tstep;
            int64_t r = rb;
            const uint8_t *wr = (const uint8_t *)w->data;
            if (tstep == 8)
                for (; r + 8 <= re; r += 8)
                    tile8_any(rn, wr + r * ws, ws, A + (size_t)t * act_stride, act_stride, nb, y + (int64_t)t * ldy + r,
                              ldy);
            for (; r < re; r += 4) {
                int rm = re - r < 4 ? (int)(re - r) : 4;
                for (int32_t tt = t; tt < t + rn; tt += 4)
                    tile_any(kind, rm, t + rn - tt < 4 ? t + rn - tt : 4, wr + r * ws, ws, A + (size_t)tt * act_stride,
                             act_stride, nb, y + (int64_t)tt * ldy + r, ldy);
            }
        }
    }
}

static void rows_q4_0(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    rows_kind(W_Q4_0, w, r0, r1, act, act_stride, n, y, ldy);
}

static void rows_q8_0(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                      float *y, int64_t ldy) {
    rows_kind(W_Q8_0, w, r0, r1, act, act_stride, n, y, ldy);
}

static const cv_matmul_kernel k_q4_0 = {cv_matmul_x86_act_bytes, cv_matmul_x86_act_convert, rows_q4_0};
static const cv_matmul_kernel k_q8_0 = {cv_matmul_x86_act_bytes, cv_matmul_x86_act_convert, rows_q8_0};

const cv_matmul_kernel *cv_matmul_avx2_for(cv_type wtype) {
    switch (wtype) {
    case CV_TYPE_Q4_0: return &k_q4_0;
    case CV_TYPE_Q8_0: return &k_q8_0;
    case CV_TYPE_Q4_K: case CV_TYPE_Q6_K: return &cv_matmul_avx2_k;
    default: return NULL;
    }
}
