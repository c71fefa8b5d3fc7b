/* Quantized weights on the device: per-format dequantization of groups of 8
 * elements, the small-batch matrix-vector kernel, embedding lookup, and the cuBLAS
 * path (weight dequantized to FP16, activations converted, cublasGemmEx, FP32
 * accumulation) for batches above CV_CUDA_SMALL_BATCH rows. Block layouts are
 * quant_blocks.h's, read in place. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_internal.h"

/* ---- dequantization: 8 consecutive elements g*8 .. g*8+7 of one row ---- */

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* Q4_K/Q5_K's 6-bit scale and min of sub-block j. */
__device__ __forceinline__ void k4_scale_min(int j, const uint8_t *q, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

template <int T>
__device__ __forceinline__ void dequant8(const uint8_t *row, int64_t g, float *v) {
    if (T == CV_TYPE_F32) {
        const float4 *p = (const float4 *)(row + g * 32);
        float4 a = p[0], b = p[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else if (T == CV_TYPE_F16 || T == CV_TYPE_BF16) {
        uint4 u = *(const uint4 *)(row + g * 16);
        const uint16_t *h = (const uint16_t *)&u;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = T == CV_TYPE_F16 ? h2f(h[i]) : bf2f(h[i]);
    } else if (T == CV_TYPE_Q4_0 || T == CV_TYPE_Q5_0) {
        /* group j of a block: j < 2 low nibbles of qs[8j..], else high nibbles of qs[8(j-2)..] */
        const int j = (int)(g & 3);
        const int lo = (j & 1) * 8, shift = (j >> 1) * 4;
        if (T == CV_TYPE_Q4_0) {
            const cv_block_q4_0 *b = (const cv_block_q4_0 *)row + g / 4;
            const float d = h2f(b->d);
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] = d * (float)(((b->qs[lo + i] >> shift) & 0xF) - 8);
        } else {
            const cv_block_q5_0 *b = (const cv_block_q5_0 *)row + g / 4;
            const float d = h2f(b->d);
            const uint32_t qh = b->qh[0] | (b->qh[1] << 8) | (b->qh[2] << 16) | ((uint32_t)b->qh[3] << 24);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                int q = ((b->qs[lo + i] >> shift) & 0xF) | (((qh >> (8 * j + i)) & 1) << 4);
                v[i] = d * (float)(q - 16);
            }
        }
    } else if (T == CV_TYPE_Q8_0) {
        const cv_block_q8_0 *b = (const cv_block_q8_0 *)row + g / 4;
        const float d = h2f(b->d);
        const int o = (int)(g & 3) * 8;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * (float)b->qs[o + i];
    } else if (T == CV_TYPE_Q4_K || T == CV_TYPE_Q5_K) {
        /* element e of a block: chunk c = e/64; the first 32 low nibbles of qs[32c..], the
         * next 32 high nibbles; sub-block e/32; Q5_K's 5th bit is bit e/32 of qh[e%32] */
        const int e = (int)(g & 31) * 8;
        const int c = e / 64, hi = (e / 32) & 1, l = e % 32;
        const uint8_t *qs, *scales;
        float d, dmin;
        const uint8_t *qh = NULL;
        if (T == CV_TYPE_Q4_K) {
            const cv_block_q4_K *b = (const cv_block_q4_K *)row + g / 32;
            qs = b->qs, scales = b->scales, d = h2f(b->d), dmin = h2f(b->dmin);
        } else {
            const cv_block_q5_K *b = (const cv_block_q5_K *)row + g / 32;
            qs = b->qs, scales = b->scales, qh = b->qh, d = h2f(b->d), dmin = h2f(b->dmin);
        }
        float sc, m;
        k4_scale_min(e / 32, scales, &sc, &m);
        const float ds = d * sc, dm = dmin * m;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int q = (qs[32 * c + l + i] >> (4 * hi)) & 0xF;
            if (T == CV_TYPE_Q5_K) q |= ((qh[l + i] >> (e / 32)) & 1) << 4;
            v[i] = ds * (float)q - dm;
        }
    } else if (T == CV_TYPE_Q6_K) {
        /* element e: half h = e/128, quarter t = (e%128)/32, l = e%32: low 4 bits in
         * ql[64h + l + 32(t&1)] (high nibble when t >= 2), 2 high bits (2t) of qh[32h + l],
         * scale scales[8h + l/16 + 2t] */
        const cv_block_q6_K *b = (const cv_block_q6_K *)row + g / 32;
        const int e = (int)(g & 31) * 8;
        const int h = e / 128, t = (e % 128) / 32, l = e % 32;
        const float ds = h2f(b->d) * (float)b->scales[8 * h + l / 16 + 2 * t];
        const uint8_t *ql = b->ql + 64 * h + 32 * (t & 1) + l, *qh = b->qh + 32 * h + l;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int q = ((ql[i] >> (4 * (t >> 1))) & 0xF) | (((qh[i] >> (2 * t)) & 3) << 4);
            v[i] = ds * (float)(q - 32);
        }
    }
}

/* Element c of a row of a float type (F32, F16, BF16), for rows that are not made of
 * aligned groups of 8 (an odd width, a column view). */
template <int T>
__device__ __forceinline__ float elem(const uint8_t *row, int64_t c) {
    if (T == CV_TYPE_F32) return ((const float *)row)[c];
    const uint16_t h = ((const uint16_t *)row)[c];
    return T == CV_TYPE_F16 ? h2f(h) : bf2f(h);
}

template <int T>
constexpr bool float_type() {
    return T == CV_TYPE_F32 || T == CV_TYPE_F16 || T == CV_TYPE_BF16;
}

/* Whether w's rows can be read as aligned groups of 8 (dequant8): always for the block
 * types (blocks of 32 or 256, read bytewise), and for float types whose rows are whole
 * 16-byte-aligned groups; activations then have rows of a multiple of 8 floats too. */
static bool grouped(const cv_tensor *w) {
    const cv_type_info *ti = cv_type_get(w->type);
    if (ti && ti->block_elems > 1) return true;
    return w->cols % 8 == 0 && w->row_stride % 16 == 0 && (uintptr_t)w->data % 16 == 0;
}

/* Calls f.template operator()<T>() for the run-time type t. */
#define CV_CUDA_TYPES(X) X(CV_TYPE_F32) X(CV_TYPE_F16) X(CV_TYPE_BF16) X(CV_TYPE_Q4_0) X(CV_TYPE_Q5_0) \
    X(CV_TYPE_Q8_0) X(CV_TYPE_Q4_K) X(CV_TYPE_Q5_K) X(CV_TYPE_Q6_K)

int cv_cuda_type_ok(cv_type t) {
#define X(T) if (t == T) return 1;
    CV_CUDA_TYPES(X)
#undef X
    return 0;
}

/* ---- small batch: y[b][r] = x[b] . w[r] for b < n <= CV_CUDA_SMALL_BATCH ---- */

#define MV_WARPS 4

/* One warp per weight row; each lane dequantizes groups of 8 and applies them to every
 * activation row, so the weight is read once for the whole batch. NB is the batch the
 * accumulators are sized for: 1 (decode of one sequence, no per-row predicates) or
 * CV_CUDA_SMALL_BATCH. ELEM (float types whose rows are not grouped()) reads one
 * element at a time instead. */
template <int T, int NB, bool ELEM>
__global__ void __launch_bounds__(MV_WARPS * 32)
matvec_kernel(const uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols, const float *x, float *y, int n) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const uint8_t *wr = w + r * row_bytes;
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.f;
    if constexpr (ELEM) {
        for (int64_t c = lane; c < cols; c += 32) {
            const float v = elem<T>(wr, c);
#pragma unroll
            for (int b = 0; b < NB; b++)
                if (NB == 1 || b < n) acc[b] += v * x[b * cols + c];
        }
    } else {
        for (int64_t g = lane; g < cols / 8; g += 32) {
            float v[8];
            dequant8<T>(wr, g, v);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (NB == 1 || b < n) {
                    const float4 *xp = (const float4 *)(x + b * cols + g * 8);
                    float4 a = __ldg(xp), c = __ldg(xp + 1);
                    acc[b] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * c.x + v[5] * c.y +
                              v[6] * c.z + v[7] * c.w;
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (NB == 1 || b < n) {
            float s = acc[b];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0) y[b * rows + r] = s;
        }
    }
}

/* ---- per-head matmul (MLA's absorbed projections): head h of every token ---- */

#define MH_TOKENS 8

/* One warp per weight row (of all heads' stacked rows); the row's dequantized groups
 * are applied to MH_TOKENS tokens' slices at a time, read with their strides. */
template <int T, bool ELEM>
__global__ void __launch_bounds__(MV_WARPS * 32)
matmul_heads_kernel(const uint8_t *w, size_t row_bytes, int64_t rows_per_head, int64_t cols, int n_heads,
                    const float *x, int x_stride, float *y, int y_stride, int n) {
    const int lane = threadIdx.x & 31;
    const int64_t gr = (int64_t)blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (gr >= rows_per_head * n_heads) return;
    const int h = (int)(gr / rows_per_head);
    const int64_t r = gr % rows_per_head;
    const uint8_t *wr = w + gr * row_bytes;
    for (int t0 = 0; t0 < n; t0 += MH_TOKENS) {
        float acc[MH_TOKENS];
#pragma unroll
        for (int b = 0; b < MH_TOKENS; b++) acc[b] = 0.f;
        if constexpr (ELEM) {
            for (int64_t c = lane; c < cols; c += 32) {
                const float v = elem<T>(wr, c);
#pragma unroll
                for (int b = 0; b < MH_TOKENS; b++)
                    if (t0 + b < n) acc[b] += v * x[((int64_t)(t0 + b) * n_heads + h) * x_stride + c];
            }
        } else {
            for (int64_t g = lane; g < cols / 8; g += 32) {
                float v[8];
                dequant8<T>(wr, g, v);
#pragma unroll
                for (int b = 0; b < MH_TOKENS; b++) {
                    if (t0 + b >= n) continue;
                    const float *xp = x + ((int64_t)(t0 + b) * n_heads + h) * x_stride + g * 8;
#pragma unroll
                    for (int j = 0; j < 8; j++) acc[b] += v[j] * xp[j];
                }
            }
        }
#pragma unroll
        for (int b = 0; b < MH_TOKENS; b++) {
            if (t0 + b >= n) continue;
            float s = acc[b];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0) y[((int64_t)(t0 + b) * n_heads + h) * y_stride + r] = s;
        }
    }
}

template <int T>
static void launch_matmul_heads(cuda_backend *cb, const cv_tensor *w, int32_t n_heads, const float *x,
                                int32_t x_stride, float *y, int32_t y_stride, int32_t n) {
    const unsigned blocks = (unsigned)((w->rows + MV_WARPS - 1) / MV_WARPS);
    const uint8_t *wd = (const uint8_t *)w->data;
    if (float_type<T>() && !grouped(w))
        matmul_heads_kernel<T, true><<<blocks, MV_WARPS * 32, 0, cb->stream>>>(
            wd, w->row_stride, w->rows / n_heads, w->cols, n_heads, x, x_stride, y, y_stride, n);
    else
        matmul_heads_kernel<T, false><<<blocks, MV_WARPS * 32, 0, cb->stream>>>(
            wd, w->row_stride, w->rows / n_heads, w->cols, n_heads, x, x_stride, y, y_stride, n);
    CUDA_LAUNCHED(cb, "matmul_heads_kernel");
}

void cv_cuda_matmul_heads(cuda_backend *cb, const cv_tensor *w, int32_t n_heads, const float *x, int32_t x_stride,
                          float *y, int32_t y_stride, int32_t n) {
    if (n <= 0 || n_heads <= 0) return;
    switch (w->type) {
#define X(T) case T: launch_matmul_heads<T>(cb, w, n_heads, x, x_stride, y, y_stride, n); break;
        CV_CUDA_TYPES(X)
#undef X
    default: cv_cuda_fail(cb, __FILE__, __LINE__, "matmul_heads", "weight type not supported");
    }
}

/* ---- embedding lookup ---- */

template <int T>
__global__ void get_rows_kernel(const uint8_t *t, size_t stride, int64_t cols, const int32_t *ids, float *out) {
    const uint8_t *row = t + (int64_t)ids[blockIdx.x] * stride;
    float *o = out + (int64_t)blockIdx.x * cols;
    for (int64_t g = threadIdx.x; g < cols / 8; g += blockDim.x) {
        float v[8];
        dequant8<T>(row, g, v);
#pragma unroll
        for (int i = 0; i < 8; i++) o[g * 8 + i] = v[i];
    }
}

template <int T>
__global__ void get_rows_elem_kernel(const uint8_t *t, size_t stride, int64_t cols, const int32_t *ids, float *out) {
    const uint8_t *row = t + (int64_t)ids[blockIdx.x] * stride;
    float *o = out + (int64_t)blockIdx.x * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = elem<T>(row, c);
}

/* ---- cuBLAS path ---- */

template <int T, typename H>
__global__ void dequant_kernel(const uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols, H *out) {
    const int64_t groups = rows * (cols / 8);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < groups; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / (cols / 8), g = i % (cols / 8);
        float v[8];
        dequant8<T>(w + r * row_bytes, g, v);
#pragma unroll
        for (int k = 0; k < 8; k++) out[r * cols + g * 8 + k] = (H)v[k];
    }
}

template <typename H>
__global__ void convert_kernel(const float *x, H *out, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = (H)x[i];
}

/* BF16 weights keep BF16 (FP16 could overflow them); everything else goes to FP16. */
static bool gemm_bf16(cv_type t) { return t == CV_TYPE_BF16; }

size_t cv_cuda_gemm_w_bytes(const cv_tensor *w) {
    if (w->type == CV_TYPE_F32 || w->type == CV_TYPE_F16 || w->type == CV_TYPE_BF16) return 0;
    return (size_t)w->rows * (size_t)w->cols * 2;
}

template <int T, bool ELEM>
static void launch_matvec_as(cuda_backend *cb, const cv_tensor *w, const float *x, float *y, int32_t n) {
    const unsigned blocks = (unsigned)((w->rows + MV_WARPS - 1) / MV_WARPS);
    const uint8_t *wd = (const uint8_t *)w->data;
    if (n == 1)
        matvec_kernel<T, 1, ELEM><<<blocks, MV_WARPS * 32, 0, cb->stream>>>(wd, w->row_stride, w->rows, w->cols, x, y,
                                                                           n);
    else
        matvec_kernel<T, CV_CUDA_SMALL_BATCH, ELEM><<<blocks, MV_WARPS * 32, 0, cb->stream>>>(
            wd, w->row_stride, w->rows, w->cols, x, y, n);
    CUDA_LAUNCHED(cb, "matvec_kernel");
}

template <int T>
static void launch_matvec(cuda_backend *cb, const cv_tensor *w, const float *x, float *y, int32_t n) {
    /* the grouped kernel reads activations as float4: their rows must start 16-byte aligned */
    const bool aligned = grouped(w) && (uintptr_t)x % 16 == 0;
    if constexpr (float_type<T>()) {
        if (!aligned) {
            launch_matvec_as<T, true>(cb, w, x, y, n);
            return;
        }
    } else if (!aligned) {
        cv_cuda_fail(cb, __FILE__, __LINE__, "matmul", "activations of a quantized weight not 16-byte aligned");
        return;
    }
    launch_matvec_as<T, false>(cb, w, x, y, n);
}

template <int T, typename H>
static void launch_dequant(cuda_backend *cb, const cv_tensor *w, H *out) {
    dequant_kernel<T, H><<<cv_cuda_blocks(w->rows * (w->cols / 8)), 256, 0, cb->stream>>>(
        (const uint8_t *)w->data, w->row_stride, w->rows, w->cols, out);
    CUDA_LAUNCHED(cb, "dequant_kernel");
}

/* y^T (rows x n, column-major) = W (row-major rows x cols, i.e. column-major cols x rows,
 * transposed) . x^T (column-major cols x n). */
static void gemm(cuda_backend *cb, const cv_tensor *w, const float *x, float *y, int32_t n) {
    const cv_type t = w->type;
    const void *A = w->data;
    cudaDataType at = CUDA_R_32F;
    /* float weights are read in place, rows row_stride apart; the others dequantized packed */
    int lda = (int)(w->row_stride / (t == CV_TYPE_F32 ? 4 : 2));
    if (t == CV_TYPE_F16) at = CUDA_R_16F;
    else if (t == CV_TYPE_BF16) at = CUDA_R_16BF;
    else if (t != CV_TYPE_F32) {
        at = CUDA_R_16F;
        A = cb->gemm_w;
        lda = (int)w->cols;
        switch (t) {
#define X(T) case T: launch_dequant<T, __half>(cb, w, (__half *)cb->gemm_w); break;
            CV_CUDA_TYPES(X)
#undef X
        default: break;
        }
    }
    const float one = 1.f, zero = 0.f;
    for (int32_t b0 = 0; b0 < n; b0 += cb->max_gemm_rows) {
        const int32_t nb = n - b0 < cb->max_gemm_rows ? n - b0 : cb->max_gemm_rows;
        const float *xb = x + (int64_t)b0 * w->cols;
        const void *B = xb;
        cudaDataType bt = CUDA_R_32F;
        if (at != CUDA_R_32F) {
            bt = at;
            int64_t ne = (int64_t)nb * w->cols;
            if (gemm_bf16(t))
                convert_kernel<__nv_bfloat16><<<cv_cuda_blocks(ne), 256, 0, cb->stream>>>(
                    xb, (__nv_bfloat16 *)cb->gemm_x, ne);
            else
                convert_kernel<__half><<<cv_cuda_blocks(ne), 256, 0, cb->stream>>>(xb, (__half *)cb->gemm_x, ne);
            CUDA_LAUNCHED(cb, "convert_kernel");
            B = cb->gemm_x;
        }
        CUBLAS_CHECK(cb, cublasGemmEx(cb->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, nb, (int)w->cols, &one, A,
                                      at, lda, B, bt, (int)w->cols, &zero, y + (int64_t)b0 * w->rows,
                                      CUDA_R_32F, (int)w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

void cv_cuda_matmul(cuda_backend *cb, const cv_tensor *w, const float *x, float *y, int32_t n) {
    if (n <= 0) return;
    if (n > CV_CUDA_SMALL_BATCH) {
        gemm(cb, w, x, y, n);
        return;
    }
    switch (w->type) {
#define X(T) case T: launch_matvec<T>(cb, w, x, y, n); break;
        CV_CUDA_TYPES(X)
#undef X
    default: cv_cuda_fail(cb, __FILE__, __LINE__, "matmul", "weight type not supported");
    }
}

template <int T>
static void launch_get_rows(cuda_backend *cb, const cv_tensor *t, const int32_t *ids, int32_t n, float *out) {
    const uint8_t *td = (const uint8_t *)t->data;
    if constexpr (float_type<T>()) {
        if (!grouped(t)) {
            get_rows_elem_kernel<T><<<(unsigned)n, 128, 0, cb->stream>>>(td, t->row_stride, t->cols, ids, out);
            CUDA_LAUNCHED(cb, "get_rows_elem_kernel");
            return;
        }
    }
    get_rows_kernel<T><<<(unsigned)n, 128, 0, cb->stream>>>(td, t->row_stride, t->cols, ids, out);
    CUDA_LAUNCHED(cb, "get_rows_kernel");
}

void cv_cuda_get_rows(cuda_backend *cb, const cv_tensor *t, const int32_t *ids, int32_t n, float *out) {
    if (n <= 0) return;
    switch (t->type) {
#define X(T) case T: launch_get_rows<T>(cb, t, ids, n, out); break;
        CV_CUDA_TYPES(X)
#undef X
    default: cv_cuda_fail(cb, __FILE__, __LINE__, "get_rows", "table type not supported");
    }
}
