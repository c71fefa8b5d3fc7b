/* Row and element-wise ops of the CUDA backend: RMSNorm, RoPE, softmax, GLU, add,
 * scale, softcap, bias. Same maths as the CPU reference (cpu_ops.c); sums are in
 * float in a different order, so results agree within float rounding. */
#include <math.h>

#include "cuda_internal.h"

#define ROW_THREADS 256

/* Sum (or max) over the block; every thread gets the result. */
template <bool MAX>
__device__ float block_reduce(float v) {
    __shared__ float part[ROW_THREADS / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, u) : v + u;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); /* part may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = part[0];
    for (int i = 1; i < ROW_THREADS / 32; i++) v = MAX ? fmaxf(v, part[i]) : v + part[i];
    return v;
}

__global__ void rmsnorm_kernel(const float *x, const float *w, float *y, int dim, float eps, float add_one) {
    const float *xr = x + (int64_t)blockIdx.x * dim;
    float *yr = y + (int64_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) ss += xr[i] * xr[i];
    ss = block_reduce<false>(ss);
    const float r = rsqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) yr[i] = xr[i] * r * (w[i] + add_one);
}

void cv_cuda_rmsnorm(cuda_backend *cb, const float *x, const float *w, float *y, int32_t n_rows, int32_t dim,
                     float eps, int add_one) {
    if (n_rows <= 0) return;
    rmsnorm_kernel<<<(unsigned)n_rows, ROW_THREADS, 0, cb->stream>>>(x, w, y, dim, eps, add_one ? 1.f : 0.f);
    CUDA_LAUNCHED(cb, "rmsnorm_kernel");
}

/* One block per (token, head); the angle in double as the reference computes it. */
__global__ void rope_kernel(cv_rope_params p, float *x, int n_heads, int head_dim, const int32_t *pos) {
    const int t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
    float *v = x + ((int64_t)t * n_heads + h) * head_dim;
    const double ms = p.mscale != 0 ? p.mscale : 1.0;
    for (int i = threadIdx.x; i < p.n_rot / 2; i += blockDim.x) {
        double theta = (double)pos[t] * p.freq_scale * pow((double)p.freq_base, -2.0 * i / p.n_rot);
        if (p.freq_factors) theta /= p.freq_factors[i];
        if (p.ext_factor != 0.f) {
            const double mix = cv_rope_yarn_mix(&p, i);
            theta = theta * (1 - mix) + theta / p.freq_scale * mix;
        }
        const float c = (float)(cos(theta) * ms), s = (float)(sin(theta) * ms);
        const int a = p.mode == CV_ROPE_NEOX ? i : 2 * i;
        const int b = p.mode == CV_ROPE_NEOX ? i + p.n_rot / 2 : 2 * i + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

void cv_cuda_rope(cuda_backend *cb, const cv_rope_params *p, float *x, int32_t n_tokens, int32_t n_heads,
                  int32_t head_dim, const int32_t *pos) {
    if (n_tokens <= 0 || n_heads <= 0) return;
    rope_kernel<<<(unsigned)(n_tokens * n_heads), 64, 0, cb->stream>>>(*p, x, n_heads, head_dim, pos);
    CUDA_LAUNCHED(cb, "rope_kernel");
}

__global__ void softmax_kernel(float *x, int n) {
    float *r = x + (int64_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += ROW_THREADS) m = fmaxf(m, r[i]);
    m = block_reduce<true>(m);
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += ROW_THREADS) {
        const float e = expf(r[i] - m);
        r[i] = e;
        s += e;
    }
    s = block_reduce<false>(s);
    const float inv = 1.f / s;
    for (int i = threadIdx.x; i < n; i += ROW_THREADS) r[i] *= inv;
}

void cv_cuda_softmax(cuda_backend *cb, float *x, int32_t n_rows, int32_t n) {
    if (n_rows <= 0) return;
    softmax_kernel<<<(unsigned)n_rows, ROW_THREADS, 0, cb->stream>>>(x, n);
    CUDA_LAUNCHED(cb, "softmax_kernel");
}

/* ---- element-wise ---- */

enum ew_op { EW_SWIGLU, EW_GEGLU, EW_ADD, EW_SCALE, EW_SOFTCAP };

template <int OP>
__global__ void ew_kernel(const float *a, const float *b, float *out, float s, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float r;
        if (OP == EW_SWIGLU) {
            const float g = a[i];
            r = g / (1.f + expf(-g)) * b[i];
        } else if (OP == EW_GEGLU) {
            const float g = a[i];
            r = 0.5f * g * (1.f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * b[i];
        } else if (OP == EW_ADD) {
            r = a[i] + b[i];
        } else if (OP == EW_SCALE) {
            r = out[i] * s;
        } else {
            r = s * tanhf(out[i] / s);
        }
        out[i] = r;
    }
}

template <int OP>
static void ew(cuda_backend *cb, const float *a, const float *b, float *out, float s, int64_t n, const char *name) {
    if (n <= 0) return;
    ew_kernel<OP><<<cv_cuda_blocks(n), 256, 0, cb->stream>>>(a, b, out, s, n);
    CUDA_LAUNCHED(cb, name);
}

void cv_cuda_glu(cuda_backend *cb, cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    if (kind == CV_GLU_GEGLU) ew<EW_GEGLU>(cb, gate, up, out, 0.f, n, "geglu_kernel");
    else ew<EW_SWIGLU>(cb, gate, up, out, 0.f, n, "swiglu_kernel");
}
void cv_cuda_add(cuda_backend *cb, const float *a, const float *b, float *out, int64_t n) {
    ew<EW_ADD>(cb, a, b, out, 0.f, n, "add_kernel");
}
void cv_cuda_scale(cuda_backend *cb, float *x, float s, int64_t n) {
    ew<EW_SCALE>(cb, NULL, NULL, x, s, n, "scale_kernel");
}
void cv_cuda_softcap(cuda_backend *cb, float *x, float c, int64_t n) {
    ew<EW_SOFTCAP>(cb, NULL, NULL, x, c, n, "softcap_kernel");
}

__global__ void add_bias_kernel(float *x, const float *bias, int64_t total, int n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += bias[i % n];
}

void cv_cuda_add_bias(cuda_backend *cb, float *x, const float *bias, int32_t n_rows, int32_t n) {
    const int64_t total = (int64_t)n_rows * n;
    if (total <= 0) return;
    add_bias_kernel<<<cv_cuda_blocks(total), 256, 0, cb->stream>>>(x, bias, total, n);
    CUDA_LAUNCHED(cb, "add_bias_kernel");
}

/* The ids of one call are distinct (one expert's tokens), so no two threads add into
 * one element: plain adds, no atomics. */
__global__ void scatter_add_rows_kernel(const float *src, const int32_t *ids, const float *w, int64_t total,
                                        int dim, float *dst) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / dim, j = i % dim;
        dst[(int64_t)ids[r] * dim + j] += w[r] * src[i];
    }
}

void cv_cuda_scatter_add_rows(cuda_backend *cb, const float *src, const int32_t *ids, const float *w, int32_t n,
                              int32_t dim, float *dst) {
    const int64_t total = (int64_t)n * dim;
    if (total <= 0) return;
    scatter_add_rows_kernel<<<cv_cuda_blocks(total), 256, 0, cb->stream>>>(src, ids, w, total, dim, dst);
    CUDA_LAUNCHED(cb, "scatter_add_rows_kernel");
}

/* dst[r * ds + j] = src[r * ss + j]: a strided copy, one thread per element. */
__global__ void copy_rows_kernel(const float *src, int ss, float *dst, int ds, int width, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / width;
        const int c = (int)(i % width);
        dst[r * ds + c] = src[r * ss + c];
    }
}

void cv_cuda_copy_rows(cuda_backend *cb, const float *src, int32_t src_stride, float *dst, int32_t dst_stride,
                       int32_t width, int64_t n_rows) {
    const int64_t total = n_rows * width;
    if (total <= 0) return;
    copy_rows_kernel<<<cv_cuda_blocks(total), 256, 0, cb->stream>>>(src, src_stride, dst, dst_stride, width, total);
    CUDA_LAUNCHED(cb, "copy_rows_kernel");
}
