/* matmul_x86: building blocks shared by the AVX2 and AVX-512 matmul tiles, and the
 * layout of a converted activation row, which both read. Internal to kernels/; include
 * only from files compiled with AVX2 enabled.
 *
 * A converted row of cols = 32 * nb activations is: nb Q8_0 blocks (the reference
 * quantizer's bytes), padded to 32 bytes; nb float scales; nb int32 offsets, k x the
 * sum of the block's quants, where k is the bias the unsigned weight bytes carry
 * (8 for Q4_0 levels, 16 for Q5_0 levels, 128 for Q8_0 bytes flipped to unsigned), so that
 * dot(w, a) = dot(w + k, a) - k * sum(a) exactly in integers.
 */
#ifndef CV_MATMUL_X86_H
#define CV_MATMUL_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "matmul.h"
#include "quant_blocks.h"

/* The converted row's bytes and the conversion (matmul_avx2.c), for both kernels. */
size_t cv_matmul_x86_act_bytes(cv_type wtype, int64_t cols);
void cv_matmul_x86_act_convert(cv_type wtype, const float *x, void *act, int64_t cols);

/* The Q4_K and Q6_K tiles (matmul_k_avx2.c, matmul_k_avx512.c), which
 * cv_matmul_avx2_for and cv_matmul_avx512_for hand out. */
extern const cv_matmul_kernel cv_matmul_avx2_k, cv_matmul_avx512_k;

#define INLINE static inline __attribute__((always_inline))

/* An x16 weight (repack.h) is read as one contiguous stream per work item. Its tiles
 * prefetch X16_AHEAD bytes ahead of their loads into L2 (T2 hint), up to the end of
 * the item: measured on Zen 4 at batch 1 from DRAM (one thread), Q6_K 8 -> 20 GB/s and
 * Q4_K 15 -> 25 GB/s against prefetching the next group's rows into L1 (they evicted
 * the rows being read) or none (the hardware prefetcher loses Q6_K's stream); 4 and 16
 * KiB ahead, or into L1, were slower. */
#define X16_AHEAD 8192

INLINE void x16_prefetch(const uint8_t *at, size_t bytes, const uint8_t *end) {
    for (size_t o = 0; o < bytes && (uintptr_t)at + o < (uintptr_t)end; o += 64)
        _mm_prefetch((const char *)at + o, _MM_HINT_T2);
}

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

/* ---- K-quant tiles (matmul_k_avx2.c, matmul_k_avx512.c) ----
 * Both take quant's Q8_K activation rows as they are and transpose 8 or 16 weight rows
 * in registers so that lane j of every vector belongs to row j. The byte-level steps
 * below are written with GCC's vector operators, which work on __m256i and __m512i
 * alike: each masks its result to bits that stay inside one byte, so the 64-bit lanes
 * the operators shift in cannot leak between bytes. */

/* The low and the high nibble of every byte (Q4_K quants, Q6_K low bits). */
#define K_LO4(v) ((v) & 0x0F0F0F0F0F0F0F0FLL)
#define K_HI4(v) (((v) >> 4) & 0x0F0F0F0F0F0F0F0FLL)

/* Q4_K/Q5_K's 12 packed scale bytes, as dwords u0, u1, u2 of each lane's row, to
 * bytes: s03/m03 hold scales/mins 0..3 and s47/m47 scales/mins 4..7 of the row, byte i
 * of a dword for index i (quant.c's k4_get_scale_min). */
#define K4_SCALES(u0, u1, u2, s03, s47, m03, m47)                                          \
    do {                                                                                   \
        const long long m6_ = 0x3F3F3F3F3F3F3F3FLL, hi2_ = 0x0303030303030303LL;           \
        (s03) = (u0) & m6_;                                                                \
        (m03) = (u1) & m6_;                                                                \
        (s47) = K_LO4(u2) | ((((u0) >> 6) & hi2_) << 4);                                   \
        (m47) = K_HI4(u2) | ((((u1) >> 6) & hi2_) << 4);                                   \
    } while (0)

/* The 6-bit level m (0..3) of Q6_K's 32-element run from the low bits (lq: ql bytes of
 * runs 0 and 2, or 1 and 3) and the high bits (qh, 2 bits per run). */
#define Q6_LEVELS(lq, qh, m)                                                               \
    (((m) < 2 ? K_LO4(lq) : K_HI4(lq)) |                                                   \
     (((m) == 0 ? (qh) << 4 : (m) == 1 ? (qh) << 2 : (m) == 2 ? (qh) : (qh) >> 2) & 0x3030303030303030LL))

/* A byte-shuffle control that picks, in every dword, the bytes b0..b3 of that dword
 * (index -1: a zero byte); as one int32 pattern per dword, for _mm256/_mm512_shuffle_epi8. */
#define K_PICK_B(b) ((uint32_t)((b) < 0 ? 0x80 : (b)))
#define K_PICK(b0, b1, b2, b3) \
    ((int32_t)(K_PICK_B(b0) | K_PICK_B(b1) << 8 | K_PICK_B(b2) << 16 | K_PICK_B(b3) << 24))

INLINE __m256i pick8(__m256i v, int32_t pattern) {
    const __m256i base = _mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8,
                                          8, 8, 8, 12, 12, 12, 12);
    /* 0x80 (K_PICK's -1) keeps its top bit after adding at most 12: a zero byte. */
    return _mm256_shuffle_epi8(v, _mm256_add_epi8(_mm256_set1_epi32(pattern), base));
}

/* Dwords 0..3 of the 16 bytes at rp[j] + off, for 8 rows: h[g] lane j = dword g of row j. */
INLINE void head8(const uint8_t *const rp[8], size_t off, __m256i h[4]) {
    __m256i v[4];
    _Pragma("GCC unroll 4")
    for (int i = 0; i < 4; i++)
        v[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(rp[i] + off))),
                                       _mm_loadu_si128((const __m128i *)(rp[i + 4] + off)), 1);
    __m256i a0 = _mm256_unpacklo_epi32(v[0], v[1]), a1 = _mm256_unpackhi_epi32(v[0], v[1]);
    __m256i a2 = _mm256_unpacklo_epi32(v[2], v[3]), a3 = _mm256_unpackhi_epi32(v[2], v[3]);
    h[0] = _mm256_unpacklo_epi64(a0, a2);
    h[1] = _mm256_unpackhi_epi64(a0, a2);
    h[2] = _mm256_unpacklo_epi64(a1, a3);
    h[3] = _mm256_unpackhi_epi64(a1, a3);
}

/* Activation bytes 4k..4k+3 in every 32-bit lane. */
INLINE __m256i group4(const uint8_t *qs, int k) {
    int32_t v;
    memcpy(&v, qs + 4 * k, 4);
    return _mm256_set1_epi32(v);
}

#endif
