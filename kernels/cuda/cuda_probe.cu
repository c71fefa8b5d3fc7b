/* The device's own ceilings, measured in the same run as the figures they judge:
 * device-to-device copy bandwidth and cuBLAS FP16 GEMM throughput on random data.
 * Each figure is the median of reps timed repetitions (CUDA events) after one warm-up. */
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.h"

#define PROBE(call)                                                                                   \
    do {                                                                                              \
        cudaError_t rc_ = (call);                                                                     \
        if (rc_ != cudaSuccess) {                                                                     \
            s = cv_errorf(err, CV_EIO, "cuda probe: %s:%d: %s: %s", __FILE__, __LINE__, #call,         \
                          cudaGetErrorString(rc_));                                                   \
            goto out;                                                                                 \
        }                                                                                             \
    } while (0)

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median of the times between consecutive events ev[0..reps]; cudaEventElapsedTime's
 * error if one fails. */
static cudaError_t event_median_ms(cudaEvent_t *ev, int reps, float *ms) {
    float t[64];
    for (int i = 0; i < reps; i++) {
        cudaError_t rc = cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]);
        if (rc != cudaSuccess) return rc;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_float);
    *ms = t[reps / 2];
    return cudaSuccess;
}

__global__ void random_half(__half *x, int64_t n, uint32_t seed) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        x[i] = __float2half((float)(h & 0xFFFF) / 32768.f - 1.f);
    }
}

extern "C" cv_status cv_cuda_copy_bandwidth(int device, size_t bytes, int reps, double *gbps, cv_error *err) {
    cv_status s = CV_OK;
    void *a = NULL, *b = NULL;
    float ms = 0;
    cudaEvent_t ev[65] = {0};
    if (reps < 1 || reps > 64) return cv_errorf(err, CV_EINVAL, "cuda probe: reps %d not in [1, 64]", reps);
    PROBE(cudaSetDevice(device));
    PROBE(cudaMalloc(&a, bytes));
    PROBE(cudaMalloc(&b, bytes));
    PROBE(cudaMemset(a, 1, bytes));
    for (int i = 0; i <= reps; i++) PROBE(cudaEventCreate(&ev[i]));
    PROBE(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    for (int i = 0; i < reps; i++) {
        PROBE(cudaEventRecord(ev[i]));
        PROBE(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice));
    }
    PROBE(cudaEventRecord(ev[reps]));
    PROBE(cudaEventSynchronize(ev[reps]));
    PROBE(event_median_ms(ev, reps, &ms));
    /* bytes read plus bytes written */
    *gbps = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
out:
    for (int i = 0; i <= reps && i < 65; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    cudaFree(a);
    cudaFree(b);
    return s;
}

extern "C" cv_status cv_cuda_gemm_tflops(int device, int m, int n, int k, int reps, double *tflops, cv_error *err) {
    cv_status s = CV_OK;
    __half *a = NULL, *b = NULL;
    float *c = NULL;
    cublasHandle_t h = NULL;
    float ms = 0;
    cudaEvent_t ev[65] = {0};
    const float one = 1.f, zero = 0.f;
    cublasStatus_t bs;
    if (reps < 1 || reps > 64) return cv_errorf(err, CV_EINVAL, "cuda probe: reps %d not in [1, 64]", reps);
    PROBE(cudaSetDevice(device));
    PROBE(cudaMalloc(&a, (size_t)m * k * sizeof *a));
    PROBE(cudaMalloc(&b, (size_t)k * n * sizeof *b));
    PROBE(cudaMalloc(&c, (size_t)m * n * sizeof *c));
    random_half<<<1024, 256>>>(a, (int64_t)m * k, 1u);
    random_half<<<1024, 256>>>(b, (int64_t)k * n, 2u);
    PROBE(cudaGetLastError());
    for (int i = 0; i <= reps; i++) PROBE(cudaEventCreate(&ev[i]));
    if ((bs = cublasCreate(&h)) != CUBLAS_STATUS_SUCCESS) {
        s = cv_errorf(err, CV_EIO, "cuda probe: cublasCreate: %s", cublasGetStatusString(bs));
        goto out;
    }
    for (int i = -1; i < reps; i++) {
        if (i >= 0) PROBE(cudaEventRecord(ev[i]));
        bs = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_16F, k, b, CUDA_R_16F, k, &zero, c,
                          CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            s = cv_errorf(err, CV_EIO, "cuda probe: cublasGemmEx %dx%dx%d: %s", m, n, k, cublasGetStatusString(bs));
            goto out;
        }
    }
    PROBE(cudaEventRecord(ev[reps]));
    PROBE(cudaEventSynchronize(ev[reps]));
    PROBE(event_median_ms(ev, reps, &ms));
    *tflops = 2.0 * m * (double)n * k / (ms * 1e-3) / 1e12;
out:
    for (int i = 0; i <= reps && i < 65; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (h) cublasDestroy(h);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return s;
}
