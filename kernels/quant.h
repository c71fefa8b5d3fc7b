/* quant: tensor element types, bit-exact with GGUF/ggml block layouts.
 *
 * Each quantized format is a plain block struct (see quant_blocks.h) with a static
 * size check. For every type there is a scalar reference (de)quantizer and a dot
 * product of one weight row with activations already converted to the type's
 * "vec_dot type" (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_K for the K-quants, F32 for float
 * types). The fast path (AVX2/FMA/F16C) is chosen at run time from the CPU's
 * features; cv_quant_force_scalar() pins the reference path for tests.
 *
 * Reference quantizers produce the same bytes as ggml's reference quantizers
 * (quantize_row_*_ref: the ones llama-quantize uses without an importance matrix).
 * The fast paths are bit-identical to the reference for conversions and equal to it
 * within float rounding (summation order) for dot products.
 */
#ifndef CV_QUANT_H
#define CV_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Values are ggml's type ids as stored in GGUF tensor infos. */
typedef enum cv_type {
    CV_TYPE_F32 = 0,
    CV_TYPE_F16 = 1,
    CV_TYPE_Q4_0 = 2,
    CV_TYPE_Q4_1 = 3,
    CV_TYPE_Q5_0 = 6,
    CV_TYPE_Q5_1 = 7,
    CV_TYPE_Q8_0 = 8,
    CV_TYPE_Q8_1 = 9,
    CV_TYPE_Q2_K = 10,
    CV_TYPE_Q3_K = 11,
    CV_TYPE_Q4_K = 12,
    CV_TYPE_Q5_K = 13,
    CV_TYPE_Q6_K = 14,
    CV_TYPE_Q8_K = 15,
    CV_TYPE_BF16 = 30,
    CV_TYPE_COUNT = 43    /* table size: ids up to ggml's Q2_0 (42) have names/sizes */
} cv_type;

typedef struct cv_type_info {
    const char *name;      /* "Q4_0", ...; NULL for ids that are not known */
    uint32_t block_elems;  /* elements per block (1 for float types) */
    uint32_t block_bytes;  /* bytes per block */
    int supported;         /* corvid can dequantize and dot it */
} cv_type_info;

/* NULL when t is outside the table or not a known type. */
const cv_type_info *cv_type_get(uint32_t t);
/* Bytes for n elements of a row; 0 when n is not a multiple of the block size. */
size_t cv_type_row_bytes(cv_type t, int64_t n);
/* Type the activations are converted to before cv_vec_dot with weights of type t. */
cv_type cv_type_vec_dot_type(cv_type t);

/* Reference conversions of one row of n elements (n a multiple of the block size;
 * for a type that is not supported nothing is written). Any bytes may be
 * dequantized (hostile scales give inf/NaN, never undefined behaviour). */
void cv_dequantize_row(cv_type t, const void *src, float *dst, int64_t n);
void cv_quantize_row(cv_type t, const float *src, void *dst, int64_t n);

/* Fast-path conversion of activations into the vec_dot type: the reference's bytes
 * for finite input. Activation levels stay within [-127, 127] (a block whose scale
 * underflows is clamped there), which the AVX2 dots rely on; Q8_K's bsums are
 * filled and used by the K-quant dots. */
void cv_quantize_row_act(cv_type vec_dot_type, const float *src, void *dst, int64_t n);

/* dot(w_row[0..n), act[0..n)) where w_row has type t and act has cv_type_vec_dot_type(t)
 * as cv_quantize_row(_act) writes it. Both paths sum the integer products exactly
 * and differ only in float rounding (order of the additions). 0 for unsupported
 * types. */
float cv_vec_dot(cv_type t, int64_t n, const void *w_row, const void *act);

/* cv_vec_dot by the scalar reference whatever the CPU: for the tails of kernels that
 * keep the reference's float steps (slow; a few rows at most). */
float cv_vec_dot_scalar(cv_type t, int64_t n, const void *w_row, const void *act);

/* One weight row against n_act activation rows (act_stride bytes apart, each in the
 * vec_dot type): out[r] = dot(w_row, act + r * act_stride). The weight row is read
 * once per CV_VEC_DOT_ROWS activation rows, which is what batched decode needs (each
 * weight byte streamed from memory once per batch, not once per sequence). out[r] is
 * bit-identical to cv_vec_dot on the same row, on either path. */
#define CV_VEC_DOT_ROWS 4
void cv_vec_dot_rows(cv_type t, int64_t n, const void *w_row, const void *act,
                     size_t act_stride, int n_act, float *out);

/* Force the scalar reference kernels (1) or restore the run-time choice (0). */
void cv_quant_force_scalar(int on);
/* "avx2" or "scalar": the path cv_vec_dot takes now. */
const char *cv_quant_path(void);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float cv_fp16_to_fp32(uint16_t h);
uint16_t cv_fp32_to_fp16(float f);
float cv_bf16_to_fp32(uint16_t h);
uint16_t cv_fp32_to_bf16(float f);

#endif
