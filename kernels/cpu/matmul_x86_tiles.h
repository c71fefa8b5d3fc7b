/* matmul_x86_tiles: what the AVX-512 tiles (matmul_avx512.c, matmul_f16_avx512.c,
 * matmul_q5_avx512.c) share: the F16/BF16 and Q5_0 kernel tables, which
 * cv_matmul_avx512_for hands out, the last steps of quant_avx2.c's float dot, and one
 * 16-row block's step for one token in the VNNI tiles.
 * Internal to kernels/; include only from files compiled with AVX-512 VNNI enabled.
 */
#ifndef CV_MATMUL_X86_TILES_H
#define CV_MATMUL_X86_TILES_H

#include "matmul_x86.h"
#include "quant.h"

/* The F16 and BF16 tiles (matmul_f16_avx512.c) and the Q5_0 tiles (matmul_q5_avx512.c). */
extern const cv_matmul_kernel cv_matmul_avx512_f16, cv_matmul_avx512_q5_0;

/* v holds the two 8-lane halves of an output's 16 partial sums already added; reduce it
 * with the dot's tree and add the elements full..cols-1 of the weight row (kind F16 or
 * BF16) and activation row x, summed one by one from 0 (product, then sum: this must
 * be compiled without FMA contraction, as -std=c11 does). */
INLINE float float_finish(const int kind, __m256 v, const uint8_t *wrow, const float *x, int64_t full,
                          int64_t cols) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    const uint16_t *h = (const uint16_t *)(const void *)wrow;
    float tail = 0;
    for (int64_t i = full; i < cols; i++) tail += (kind == CV_TYPE_F16 ? _cvtsh_ss(h[i]) : cv_bf16_to_fp32(h[i])) * x[i];
    return _mm_cvtss_f32(s) + tail;
}

/* Adds block b of 16 rows to one token's 16 outputs acc. v[k] lane j holds row j's
 * unsigned weight bytes 4k..4k+3, dw the rows' scales; arow is the token's activation
 * row of nb blocks (matmul_x86.h). Each row's integer sum is exact, less the bias, then
 * times d_w x d_a: added with an FMA (fma: the Q4_0 / Q8_0 tiles' steps, the AVX2
 * tiles' own) or as a product, then a sum (the scalar reference's, which Q5_0 keeps). */
INLINE __m512 vnni_block_step(const int fma, __m512 acc, const __m512i v[8], __m512 dw, const uint8_t *arow,
                              int64_t nb, int64_t b) {
    const uint8_t *aq = arow + b * sizeof(cv_block_q8_0) + 2;
    const float *ad = (const float *)(arow + q8_part(nb));
    const int32_t *off = (const int32_t *)(ad + nb);
    /* Two chains of 4 (exact integer sums in any order): with few tokens one chain of 8
     * dependent vpdpbusd would be the tile's critical path. */
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    _Pragma("GCC unroll 8")
    for (int k = 0; k < 8; k += 2) {
        int32_t a0, a1;
        memcpy(&a0, aq + 4 * k, 4);
        memcpy(&a1, aq + 4 * k + 4, 4);
        s0 = _mm512_dpbusd_epi32(s0, v[k], _mm512_set1_epi32(a0));
        s1 = _mm512_dpbusd_epi32(s1, v[k + 1], _mm512_set1_epi32(a1));
    }
    const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(off[b])));
    const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(ad[b]));
    return fma ? _mm512_fmadd_ps(sum, scale, acc) : _mm512_add_ps(acc, _mm512_mul_ps(sum, scale));
}

#endif
