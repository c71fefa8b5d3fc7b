/* cuda_backend: the NVIDIA GPU implementation of the backend ops table (backend.h).
 *
 * One backend drives one device through one CUDA stream, so ops run in call order.
 * Weights stay in their GGUF block layout on the device (one contiguous copy, rows
 * packed); batches of up to CV_CUDA_SMALL_BATCH rows go through the quantized
 * matrix-vector kernels, larger ones dequantize the weight to FP16 (BF16 weights stay
 * BF16, F32 weights F32) and call cublasGemmEx with FP32 accumulation. Every CUDA and
 * cuBLAS call is checked; an op that fails records the first error (file, line, call,
 * CUDA's error string) and synchronize reports it. The KV pools, block tables and
 * attention rows an op reads must be device memory of this backend. Any thread may
 * drive a backend: each call makes its device current for the calling thread.
 *
 * Decode steps run as CUDA graphs (backend.h's graph_begin / graph_end): a step's ops
 * are recorded, the first occurrence of a step runs op by op (a warm-up: module loading
 * and cuBLAS's choices happen outside any capture), the second is captured, and later
 * ones replay the graph; the whole step, every argument included, is the key, so a
 * graph only ever replays the exact step it was made from. CORVID_CUDA_GRAPHS=0 in the
 * environment (or no_graphs) runs every step op by op, for comparison.
 *
 * Built only with `make CUDA=1` (CV_CUDA defined); otherwise these functions exist as
 * inline stubs that report "this build has no CUDA", so callers need no #ifdef.
 * A machine with the toolkit but no GPU (cudaErrorNoDevice, or
 * cudaErrorInsufficientDriver when no driver is loaded) is "no CUDA device".
 */
#ifndef CV_CUDA_BACKEND_H
#define CV_CUDA_BACKEND_H

#include <stddef.h>

#include "backend.h"
#include "comm.h"

#define CV_CUDA_SMALL_BATCH 16
#define CV_CUDA_NOT_BUILT "this build has no CUDA (make CUDA=1)"

typedef struct cv_cuda_options {
    int device;           /* CUDA device ordinal */
    int32_t max_gemm_rows; /* <= 0: 512; rows of one cuBLAS call (larger n is split) */
    int no_graphs;        /* 1: no CUDA graphs (also CORVID_CUDA_GRAPHS=0) */
} cv_cuda_options;

/* What the graphs of one backend did since it was made. */
typedef struct cv_cuda_graph_stats {
    int enabled;          /* graph steps are recorded (not turned off, no capture failed) */
    int cached;           /* graph executables held now */
    int64_t captures;     /* steps captured into a new graph */
    int64_t replays;      /* steps that replayed a graph */
    int64_t eager;        /* graph steps run op by op: first sight, graphs off, or a
                             non-op call in the middle of the step */
    char off_reason[200]; /* why enabled is 0 */
} cv_cuda_graph_stats;

#ifdef __cplusplus
extern "C" {
#endif

#if CV_CUDA
/* 1 in a CUDA build. */
static inline int cv_cuda_compiled(void) { return 1; }
/* Number of usable devices in *n (0 with CV_EUNAVAILABLE and the reason in err when
 * there is none, including a missing driver). */
cv_status cv_cuda_device_count(int *n, cv_error *err);
/* opt may be NULL for device 0 and the defaults. */
cv_status cv_cuda_backend_create(const cv_cuda_options *opt, cv_backend **out, cv_error *err);
/* The graph counters of a CUDA backend (CV_EINVAL for another backend). */
cv_status cv_cuda_graph_stats_get(cv_backend *be, cv_cuda_graph_stats *out, cv_error *err);
/* Turns graphs on (again, also after a failed capture) or off for later steps. */
cv_status cv_cuda_graphs_enable(cv_backend *be, int on, cv_error *err);
/* The ceilings a benchmark is judged against, each the median of reps (1..64) timed
 * runs: device-to-device copy of `bytes` (GB/s counting bytes read plus written), and
 * an FP16 x FP16 -> FP32 cublasGemmEx of m x n x k on random data (TFLOP/s). */
cv_status cv_cuda_copy_bandwidth(int device, size_t bytes, int reps, double *gbps, cv_error *err);
cv_status cv_cuda_gemm_tflops(int device, int m, int n, int k, int reps, double *tflops, cv_error *err);
/* An NCCL cv_comm over n CUDA backends on distinct devices (rank r = ranks[r]), made
 * with ncclCommInitAll: one process, one thread per rank. */
cv_status cv_comm_nccl_create(cv_backend *const *ranks, int n, cv_comm **out, cv_error *err);
#else
static inline int cv_cuda_compiled(void) { return 0; }
static inline cv_status cv_cuda_device_count(int *n, cv_error *err) {
    *n = 0;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_cuda_backend_create(const cv_cuda_options *opt, cv_backend **out,
                                               cv_error *err) {
    (void)opt;
    *out = NULL;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_cuda_graph_stats_get(cv_backend *be, cv_cuda_graph_stats *out, cv_error *err) {
    (void)be, (void)out;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_cuda_graphs_enable(cv_backend *be, int on, cv_error *err) {
    (void)be, (void)on;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_cuda_copy_bandwidth(int device, size_t bytes, int reps, double *gbps, cv_error *err) {
    (void)device, (void)bytes, (void)reps;
    *gbps = 0;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_cuda_gemm_tflops(int device, int m, int n, int k, int reps, double *tflops,
                                            cv_error *err) {
    (void)device, (void)m, (void)n, (void)k, (void)reps;
    *tflops = 0;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
static inline cv_status cv_comm_nccl_create(cv_backend *const *ranks, int n, cv_comm **out, cv_error *err) {
    (void)ranks, (void)n;
    *out = NULL;
    return cv_errorf(err, CV_EUNAVAILABLE, CV_CUDA_NOT_BUILT);
}
#endif

#ifdef __cplusplus
}
#endif

#endif
