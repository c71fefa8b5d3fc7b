/* quant_blocks: the on-disk block layouts of GGUF's quantized tensor types.
 *
 * Byte-for-byte the structs ggml writes: a row of n elements is n / CV_QK_* blocks
 * laid end to end, little-endian, no padding (each size is checked below). Scales
 * named d/dmin are IEEE half floats stored as raw uint16_t bits (cv_fp16_to_fp32).
 * Q8_K is only an activation format (the vec_dot type of the K-quants): its d is a
 * float and bsums holds the sum of each group of 16 quants.
 */
#ifndef CV_QUANT_BLOCKS_H
#define CV_QUANT_BLOCKS_H

#include <stdint.h>

#define CV_QK4_0 32
#define CV_QK5_0 32
#define CV_QK8_0 32
#define CV_QK_K 256
/* Packed 6-bit scales and mins of Q4_K/Q5_K: 8 scales + 8 mins in 12 bytes. */
#define CV_K_SCALE_SIZE 12

typedef struct cv_block_q4_0 {
    uint16_t d;                 /* scale; value = d * (q - 8) */
    uint8_t qs[CV_QK4_0 / 2];   /* element j in the low nibble of qs[j], j+16 in the high */
} cv_block_q4_0;
_Static_assert(sizeof(cv_block_q4_0) == 2 + CV_QK4_0 / 2, "Q4_0 block is 18 bytes");

typedef struct cv_block_q5_0 {
    uint16_t d;                 /* value = d * (q - 16), q 5 bits */
    uint8_t qh[4];              /* bit j = 5th bit of element j (little-endian uint32) */
    uint8_t qs[CV_QK5_0 / 2];   /* low 4 bits, nibbles as in Q4_0 */
} cv_block_q5_0;
_Static_assert(sizeof(cv_block_q5_0) == 2 + 4 + CV_QK5_0 / 2, "Q5_0 block is 22 bytes");

typedef struct cv_block_q8_0 {
    uint16_t d;                 /* value = d * q */
    int8_t qs[CV_QK8_0];
} cv_block_q8_0;
_Static_assert(sizeof(cv_block_q8_0) == 2 + CV_QK8_0, "Q8_0 block is 34 bytes");

/* 8 sub-blocks of 32: value = d * sc[j] * q - dmin * m[j], sc/m 6 bits. */
typedef struct cv_block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[CV_K_SCALE_SIZE];
    uint8_t qs[CV_QK_K / 2];    /* 64-element chunks: 32 low nibbles then 32 high */
} cv_block_q4_K;
_Static_assert(sizeof(cv_block_q4_K) == 4 + CV_K_SCALE_SIZE + CV_QK_K / 2, "Q4_K block is 144 bytes");

/* As Q4_K with a fifth bit per element in qh (bit 2i / 2i+1 for chunk i). */
typedef struct cv_block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[CV_K_SCALE_SIZE];
    uint8_t qh[CV_QK_K / 8];
    uint8_t qs[CV_QK_K / 2];
} cv_block_q5_K;
_Static_assert(sizeof(cv_block_q5_K) == 4 + CV_K_SCALE_SIZE + CV_QK_K / 8 + CV_QK_K / 2,
               "Q5_K block is 176 bytes");

/* 16 sub-blocks of 16: value = d * scales[j] * (q - 32), q 6 bits split ql/qh. */
typedef struct cv_block_q6_K {
    uint8_t ql[CV_QK_K / 2];
    uint8_t qh[CV_QK_K / 4];
    int8_t scales[CV_QK_K / 16];
    uint16_t d;
} cv_block_q6_K;
_Static_assert(sizeof(cv_block_q6_K) == CV_QK_K / 2 + CV_QK_K / 4 + CV_QK_K / 16 + 2,
               "Q6_K block is 210 bytes");

typedef struct cv_block_q8_K {
    float d;
    int8_t qs[CV_QK_K];
    int16_t bsums[CV_QK_K / 16];
} cv_block_q8_K;
_Static_assert(sizeof(cv_block_q8_K) == 4 + CV_QK_K + CV_QK_K / 16 * 2, "Q8_K block is 292 bytes");

#endif
