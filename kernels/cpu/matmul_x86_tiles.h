/* matmul_x86_tiles: what the F16/BF16 and Q5_0 AVX-512 tiles (matmul_f16_avx512.c,
 * matmul_q5_avx512.c) share with the rest of the x86 matmul: their kernel tables, which
 * cv_matmul_avx512_for hands out, and the last steps of quant_avx2.c's float dot.
 * Internal to kernels/; include only from files compiled with AVX2 enabled.
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

#endif
