/* Paged KV cache on the device: kv_store and attention (decode and prefill alike:
 * every query row names its sequence's block table and its visible range). One block
 * of ATT_WARPS warps per (query row, head); each warp walks every ATT_WARPS-th visible
 * position with an online softmax, lanes holding head dimensions lane, lane+32, ...;
 * the warps' partial results are merged at the end. */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda_internal.h"

#define ATT_WARPS 4
/* Head dimensions per lane: 8 covers every head up to 256; MLA's 576-wide latent keys
 * take a second instance with 18, so the others keep their registers. */
#define ATT_DIMS_SMALL 8
#define ATT_DIMS_MLA (CV_CUDA_MAX_HEAD_DIM / 32)

template <bool F16>
__device__ __forceinline__ float kv_get(const void *pool, int64_t i) {
    return F16 ? __half2float(((const __half *)pool)[i]) : ((const float *)pool)[i];
}

__device__ __forceinline__ int64_t slot_of(const cv_attn_row &r, int p, int block_size) {
    return (int64_t)r.block_table[p / block_size] * block_size + p % block_size;
}

template <bool F16>
__global__ void kv_store_kernel(cv_kv_layer kv, const cv_attn_row *rows, const float *k, const float *v) {
    const int width = kv.n_kv_heads * kv.head_dim;
    const cv_attn_row r = rows[blockIdx.x];
    const int64_t base = slot_of(r, r.pos, kv.block_size) * width;
    const float *ks = k + (int64_t)blockIdx.x * width, *vs = v ? v + (int64_t)blockIdx.x * width : NULL;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        if (F16) {
            ((__half *)kv.k)[base + i] = __float2half_rn(ks[i]);
            if (vs) ((__half *)kv.v)[base + i] = __float2half_rn(vs[i]);
        } else {
            ((float *)kv.k)[base + i] = ks[i];
            if (vs) ((float *)kv.v)[base + i] = vs[i];
        }
    }
}

void cv_cuda_kv_store(cuda_backend *cb, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n, const float *k,
                      const float *v) {
    if (n <= 0) return;
    if (kv->type == CV_TYPE_F16) kv_store_kernel<true><<<(unsigned)n, 128, 0, cb->stream>>>(*kv, rows, k, v);
    else kv_store_kernel<false><<<(unsigned)n, 128, 0, cb->stream>>>(*kv, rows, k, v);
    CUDA_LAUNCHED(cb, "kv_store_kernel");
}

template <bool F16, int ATT_DIMS>
__global__ void __launch_bounds__(ATT_WARPS * 32)
attention_kernel(cv_attn_params p, cv_kv_layer kv, const cv_attn_row *rows, const float *q, float *out) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS], sm_acc[ATT_WARPS][ATT_DIMS * 32];
    const int i = blockIdx.x / p.n_heads, h = blockIdx.x % p.n_heads;
    const int hd = kv.head_dim, vd = kv.v_dim ? kv.v_dim : hd, g = h / (p.n_heads / kv.n_kv_heads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const cv_attn_row r = rows[i];
    const float *qh = q + ((int64_t)i * p.n_heads + h) * hd;
    float qv[ATT_DIMS], acc[ATT_DIMS];
#pragma unroll
    for (int j = 0; j < ATT_DIMS; j++) {
        const int d = lane + 32 * j;
        qv[j] = d < hd ? qh[d] : 0.f;
        acc[j] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int t = r.lo + warp; t <= r.pos; t += ATT_WARPS) {
        const int64_t base = (slot_of(r, t, kv.block_size) * kv.n_kv_heads + g) * hd;
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < ATT_DIMS; j++) {
            const int d = lane + 32 * j;
            if (d < hd) s += qv[j] * kv_get<F16>(kv.k, base + d);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= p.scale;
        if (p.softcap > 0.f) s = p.softcap * tanhf(s / p.softcap);
        const float mn = fmaxf(m, s), corr = expf(m - mn), w = expf(s - mn);
        l = l * corr + w;
#pragma unroll
        for (int j = 0; j < ATT_DIMS; j++) {
            const int d = lane + 32 * j;
            acc[j] = acc[j] * corr + (d < vd ? w * kv_get<F16>(kv.v, base + d) : 0.f);
        }
        m = mn;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATT_DIMS; j++) sm_acc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float L = 0.f, f[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = sm_l[w] > 0.f ? expf(sm_m[w] - M) : 0.f;
        L += sm_l[w] * f[w];
    }
    float *oh = out + ((int64_t)i * p.n_heads + h) * vd;
    for (int d = threadIdx.x; d < vd; d += blockDim.x) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) o += sm_acc[w][d] * f[w];
        oh[d] = o / L;
    }
}

void cv_cuda_attention(cuda_backend *cb, const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *rows,
                       int32_t n, const float *q, float *out) {
    if (n <= 0) return;
    if (kv->head_dim > CV_CUDA_MAX_HEAD_DIM || kv->n_kv_heads <= 0 || p->n_heads % kv->n_kv_heads != 0) {
        cv_cuda_fail(cb, __FILE__, __LINE__, "attention",
                     "head_dim above 576 or n_heads not a multiple of n_kv_heads");
        return;
    }
    const unsigned blocks = (unsigned)(n * p->n_heads);
    const bool small = kv->head_dim <= ATT_DIMS_SMALL * 32;
    if (kv->type == CV_TYPE_F16 && small)
        attention_kernel<true, ATT_DIMS_SMALL><<<blocks, ATT_WARPS * 32, 0, cb->stream>>>(*p, *kv, rows, q, out);
    else if (kv->type == CV_TYPE_F16)
        attention_kernel<true, ATT_DIMS_MLA><<<blocks, ATT_WARPS * 32, 0, cb->stream>>>(*p, *kv, rows, q, out);
    else if (small)
        attention_kernel<false, ATT_DIMS_SMALL><<<blocks, ATT_WARPS * 32, 0, cb->stream>>>(*p, *kv, rows, q, out);
    else
        attention_kernel<false, ATT_DIMS_MLA><<<blocks, ATT_WARPS * 32, 0, cb->stream>>>(*p, *kv, rows, q, out);
    CUDA_LAUNCHED(cb, "attention_kernel");
}
