/* matmul_x86: building blocks shared by the AVX2 and AVX-512 matmul tiles, and the
 * layout of a converted activation row, which both read. Internal to kernels/; include
 * only from files compiled with AVX2 enabled.
 *
 * A converted row of cols = 32 * nb activations is: nb Q8_0 blocks (the reference
 * quantizer's bytes), padded to 32 bytes; nb float scales; nb int32 offsets, k x the
 * sum of the block's quants, where k is the bias the unsigned weight bytes carry
 * (8 for Q4_0 levels, 128 for Q8_0 bytes flipped to unsigned), so that
 * dot(w, a) = dot(w + k, a) - k * sum(a) exactly in integers.
 */
#ifndef CV_MATMUL_X86_H
#define CV_MATMUL_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "quant_blocks.h"

/* The converted row's bytes and the conversion (matmul_avx2.c), for both kernels. */
size_t cv_matmul_x86_act_bytes(cv_type wtype, int64_t cols);
void cv_matmul_x86_act_convert(cv_type wtype, const float *x, void *act, int64_t cols);

#define INLINE static inline __attribute__((always_inline))

INLINE size_t q8_part(int64_t nb) { return ((size_t)nb * sizeof(cv_block_q8_0) + 31) & ~(size_t)31; }

/* The 32 levels 0..15 of a Q4_0 block, in element order (low nibbles, then high). */
INLINE __m256i q4_levels(const uint8_t *blk) {
    __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2));
    return _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1),
                            _mm256_set1_epi8(0x0F));
}

/* 8 x 8 transpose of 32-bit lanes: afterwards v[k] holds lane k of the old v[0..7]. */
INLINE void transpose8(__m256i v[8]) {
    __m256i a0 = _mm256_unpacklo_epi32(v[0], v[1]), a1 = _mm256_unpackhi_epi32(v[0], v[1]);
    __m256i a2 = _mm256_unpacklo_epi32(v[2], v[3]), a3 = _mm256_unpackhi_epi32(v[2], v[3]);
    __m256i a4 = _mm256_unpacklo_epi32(v[4], v[5]), a5 = _mm256_unpackhi_epi32(v[4], v[5]);
    __m256i a6 = _mm256_unpacklo_epi32(v[6], v[7]), a7 = _mm256_unpackhi_epi32(v[6], v[7]);
    __m256i b0 = _mm256_unpacklo_epi64(a0, a2), b1 = _mm256_unpackhi_epi64(a0, a2);
    __m256i b2 = _mm256_unpacklo_epi64(a1, a3), b3 = _mm256_unpackhi_epi64(a1, a3);
    __m256i b4 = _mm256_unpacklo_epi64(a4, a6), b5 = _mm256_unpackhi_epi64(a4, a6);
    __m256i b6 = _mm256_unpacklo_epi64(a5, a7), b7 = _mm256_unpackhi_epi64(a5, a7);
    v[0] = _mm256_permute2x128_si256(b0, b4, 0x20);
    v[1] = _mm256_permute2x128_si256(b1, b5, 0x20);
    v[2] = _mm256_permute2x128_si256(b2, b6, 0x20);
    v[3] = _mm256_permute2x128_si256(b3, b7, 0x20);
    v[4] = _mm256_permute2x128_si256(b0, b4, 0x31);
    v[5] = _mm256_permute2x128_si256(b1, b5, 0x31);
    v[6] = _mm256_permute2x128_si256(b2, b6, 0x31);
    v[7] = _mm256_permute2x128_si256(b3, b7, 0x31);
}

/* Activation bytes 4k..4k+3 in every 32-bit lane. */
INLINE __m256i group4(const uint8_t *qs, int k) {
    int32_t v;
    memcpy(&v, qs + 4 * k, 4);
    return _mm256_set1_epi32(v);
}

#endif
