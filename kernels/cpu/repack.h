/* repack: the 16-row interleaved weight layout (CV_CPU_LAYOUT_X16) that the AVX-512
 * VNNI kernels read without transposing anything. Internal to kernels/.
 *
 * A weight of `rows` rows keeps its size and its row offsets: rows are taken in groups
 * of 16 (the first rows / 16 * 16 of them), and the group of rows r..r+15 occupies the
 * bytes those rows occupied before, r * rb .. (r + 16) * rb (rb = the type's row bytes);
 * the tail rows (rows % 16) stay as they were. Inside a group, block b of the 16 rows
 * takes the 16 * block_bytes at 16 * b * block_bytes: first the block's half-float
 * fields (d, dmin) of the 16 rows, 32 bytes per field, row j at 2 * j; then the rest of
 * the block (its body) as 4-byte words, 64 bytes per word, row j's word k at 64 * k +
 * 4 * j, so that one 64-byte load is the vector "word k of each of the 16 rows" a
 * vpdpbusd wants. Q8_0 bodies are stored + 128 (unsigned), the form the kernel dots.
 * Q4_0, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K can be repacked (their bodies are whole words).
 */
#ifndef CV_REPACK_H
#define CV_REPACK_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

/* Layouts of cv_tensor.layout on the CPU backend. */
enum { CV_CPU_LAYOUT_ROWS = 0, CV_CPU_LAYOUT_X16 = 1 };

int cv_repack_x16_supported(cv_type t);

/* dst (rows * rb bytes) = src's rows (stride src_stride >= rb) in the x16 layout. */
void cv_repack_x16(cv_type t, int64_t rows, int64_t cols, const void *src, size_t src_stride, void *dst);

/* Row r of an x16 weight of `rows` rows back in the file's block layout (rb bytes). */
void cv_repack_x16_row(cv_type t, int64_t rows, int64_t cols, const void *data, int64_t r, void *out);

#endif
