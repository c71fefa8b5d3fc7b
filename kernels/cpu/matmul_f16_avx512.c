/* AVX-512 matmul tiles for F16 and BF16 weights against the F32 activation rows as
 * they are (no conversion): a register-blocked GEMM for prefill and batched decode.
 *
 * The float dot of quant's AVX2 kernel (quant_avx2.c, cv_matmul_ref's rows) keeps 16
 * partial sums per output, lane l summing the elements i = l mod 16 with one FMA each
 * in order, adds the two 8-lane halves, reduces them with a fixed tree and adds the
 * elements past the last full 16 (summed one by one from 0). This tile keeps exactly
 * those 16 partial sums in one zmm per (row, token) and finishes them with the same
 * steps (matmul_x86.h's float_finish), so every output is bit-identical to the AVX2
 * row dot: batch size, tile shape and thread count never change a result.
 *
 * A tile is RM = 4 weight rows x RN = 6 tokens: 24 accumulators, 4 converted weight
 * vectors and one activation vector of the 32 zmm registers; per 16 elements 4 weight
 * conversions and 6 activation loads feed 24 FMAs. Tokens are the outer loop, so one
 * block of 6 activation rows stays in L1/L2 while the item's weight rows pass under it.
 * F16 converts with vcvtph2ps, BF16 with a zero-extend and a shift (exact both).
 * One token goes to the row dot itself. Measured on one Zen 4 core (thread CPU time):
 * 96 GFLOP/s at 2048 x 2048 x 128 tokens, against 38 for the row dot.
 *
 * Not done: an AVX2 twin (a first one, 3 rows x 4 tokens in two passes over the
 * halves, ran no faster than the row dot: its working set missed L1), and BF16 through
 * AVX512-BF16's vdpbf16ps, which would need BF16 activations and so change results.
 */
#include "matmul.h"
#include "matmul_x86_tiles.h"

#define RM_MAX 4
#define RN_MAX 6

INLINE __m512 load_w16(const int kind, const uint8_t *row, int64_t i) {
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)(const void *)row + i));
    if (kind == CV_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void tile(const int kind, const int RM, const int RN, const uint8_t *w, size_t ws, const float *x,
                 int64_t xs, int64_t cols, float *y, int64_t ldy) {
    __m512 acc[RM_MAX][RN_MAX];
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RM; r++)
        _Pragma("GCC unroll 6")
        for (int t = 0; t < RN; t++) acc[r][t] = _mm512_setzero_ps();
    const int64_t full = cols & ~(int64_t)15;
    for (int64_t i = 0; i < full; i += 16) {
        __m512 wv[RM_MAX];
        _Pragma("GCC unroll 4")
        for (int r = 0; r < RM; r++) wv[r] = load_w16(kind, w + r * ws, i);
        _Pragma("GCC unroll 6")
        for (int t = 0; t < RN; t++) {
            const __m512 a = _mm512_loadu_ps(x + t * xs + i);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < RM; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], a, acc[r][t]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int r = 0; r < RM; r++)
        _Pragma("GCC unroll 6")
        for (int t = 0; t < RN; t++) {
            const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(acc[r][t]),
                                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][t]), 1)));
            y[t * ldy + r] = float_finish(kind, half, w + r * ws, x + t * xs, full, cols);
        }
}

INLINE void tile_any(const int kind, int rm, int rn, const uint8_t *w, size_t ws, const float *x, int64_t xs,
                     int64_t cols, float *y, int64_t ldy) {
#define TILE_RN(RM)                                                              \
    switch (rn) {                                                                \
    case 6: tile(kind, RM, 6, w, ws, x, xs, cols, y, ldy); break;                \
    case 5: tile(kind, RM, 5, w, ws, x, xs, cols, y, ldy); break;                \
    case 4: tile(kind, RM, 4, w, ws, x, xs, cols, y, ldy); break;                \
    case 3: tile(kind, RM, 3, w, ws, x, xs, cols, y, ldy); break;                \
    case 2: tile(kind, RM, 2, w, ws, x, xs, cols, y, ldy); break;                \
    default: tile(kind, RM, 1, w, ws, x, xs, cols, y, ldy); break;               \
    }
    switch (rm) {
    case 4: TILE_RN(4) break;
    case 3: TILE_RN(3) break;
    case 2: TILE_RN(2) break;
    default: TILE_RN(1) break;
    }
#undef TILE_RN
}

INLINE void rows_kind(const int kind, const cv_tensor *w, int64_t r0, int64_t r1, const void *act,
                      size_t act_stride, int32_t n, float *y, int64_t ldy) {
    const int64_t xs = (int64_t)(act_stride / sizeof(float));
    const uint8_t *W = w->data;
    for (int32_t t = 0; t < n; t += RN_MAX) {
        const int rn = n - t < RN_MAX ? n - t : RN_MAX;
        for (int64_t r = r0; r < r1; r += RM_MAX) {
            const int rm = r1 - r < RM_MAX ? (int)(r1 - r) : RM_MAX;
            tile_any(kind, rm, rn, W + r * w->row_stride, w->row_stride, (const float *)act + t * xs, xs, w->cols,
                     y + (int64_t)t * ldy + r, ldy);
        }
    }
}

static void rows_f16(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride, int32_t n,
                     float *y, int64_t ldy) {
    /* One token streams the weights once whatever the tile: the row dot, which reads
     * them in order, is faster there (measured 0.93 vs 1.48 ms for 5632 x 2048). */
    if (n == 1) {
        cv_matmul_ref.rows(w, r0, r1, act, act_stride, n, y, ldy);
        return;
    }
    if (w->type == CV_TYPE_F16) rows_kind(CV_TYPE_F16, w, r0, r1, act, act_stride, n, y, ldy);
    else rows_kind(CV_TYPE_BF16, w, r0, r1, act, act_stride, n, y, ldy);
}

const cv_matmul_kernel cv_matmul_avx512_f16 = {cv_matmul_vec_dot_act_bytes, cv_matmul_vec_dot_act_convert, rows_f16};
