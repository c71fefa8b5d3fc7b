/* quant_avx2: the AVX2/FMA/F16C kernels behind quant.h (internal to kernels/).
 *
 * Only call these when the CPU has avx2, fma and f16c (quant.c checks). Each
 * dot_rows kernel has cv_vec_dot_rows' contract for its weight type; each
 * quantize kernel produces exactly the bytes of the scalar reference.
 */
#ifndef CV_QUANT_AVX2_H
#define CV_QUANT_AVX2_H

#include <stddef.h>
#include <stdint.h>

typedef void (*cv_dot_rows_fn)(int64_t n, const void *w_row, const void *act,
                               size_t act_stride, int n_act, float *out);

void cv_avx2_dot_rows_f32(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_f16(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_bf16(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q4_0(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q5_0(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q8_0(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q4_K(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q5_K(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);
void cv_avx2_dot_rows_q6_K(int64_t n, const void *w, const void *act, size_t stride, int n_act, float *out);

void cv_avx2_quantize_row_q8_0(const float *src, void *dst, int64_t n);
void cv_avx2_quantize_row_q8_K(const float *src, void *dst, int64_t n);

#endif
