/* cuda_internal: what the CUDA backend's translation units share (not public).
 *
 * The backend object, the error recording of every CUDA / cuBLAS call, and the
 * launchers each .cu file provides to cuda_backend.cu. Launchers enqueue on the
 * backend's stream and record a failed launch; they never block.
 */
#ifndef CV_CUDA_INTERNAL_H
#define CV_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* The C headers use C11's _Static_assert; C++ spells it static_assert. */
#ifndef _Static_assert
#define _Static_assert static_assert
#endif
extern "C" {
#include "cuda_backend.h"
#include "op_tape.h"
#include "quant_blocks.h"
#include "tape_cache.h"
}

/* Graphs kept per backend: a few batch sizes of decode, each with and without logits. */
#define CV_CUDA_GRAPHS 32
/* Tapes seen once (a graph is captured the second time a tape comes). */
#define CV_CUDA_GRAPH_SEEN 64

/* Where a backend is between graph_begin and graph_end. */
enum { CUDA_STEP_NONE = 0, CUDA_STEP_RECORDING, CUDA_STEP_UNRECORDED };

typedef struct cuda_backend {
    cv_backend base;
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    /* FP16/BF16 copies for the cuBLAS path: a dequantized weight, converted activations. */
    void *gemm_w;
    size_t gemm_w_bytes;
    void *gemm_x;
    size_t gemm_x_bytes;
    int32_t max_gemm_rows;
    /* cuBLAS's workspace, ours so that graph capture never makes cuBLAS allocate. */
    void *cublas_ws;
    /* CUDA graphs of steps (cuda_graph.cu): the step's ops are recorded on tape and run at
     * graph_end, from a cached graph, as a new capture, or op by op. */
    int step;                 /* CUDA_STEP_* */
    cv_op_tape tape;
    cv_tape_cache graphs;
    uint64_t seen[CV_CUDA_GRAPH_SEEN]; /* hashes of tapes run once without a graph */
    int n_seen;
    cv_cuda_graph_stats gstats;
    /* First failure since the last synchronize. */
    int failed;
    cv_error err;
} cuda_backend;

/* Records the first failure; returns 1 when rc is a failure. */
int cv_cuda_fail(cuda_backend *cb, const char *file, int line, const char *call, const char *what);
int cv_cuda_check_rt(cuda_backend *cb, cudaError_t rc, const char *file, int line, const char *call);
int cv_cuda_check_blas(cuda_backend *cb, cublasStatus_t rc, const char *file, int line, const char *call);

#define CUDA_CHECK(cb, call) cv_cuda_check_rt((cb), (call), __FILE__, __LINE__, #call)
#define CUBLAS_CHECK(cb, call) cv_cuda_check_blas((cb), (call), __FILE__, __LINE__, #call)
/* After a kernel launch: the launch error (bad configuration, no kernel image). */
#define CUDA_LAUNCHED(cb, name) cv_cuda_check_rt((cb), cudaGetLastError(), __FILE__, __LINE__, name)

/* Blocks of 256 threads covering n items, capped for grid-stride loops. */
static inline unsigned cv_cuda_blocks(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

/* The compute ops that launch at once (cuda_backend.cu); the backend's own table
 * records them instead while a step is recorded. */
extern const cv_backend_ops cv_cuda_eager_ops;

/* cuda_graph.cu */
void cv_cuda_graph_init(cuda_backend *cb, int on, const char *off_reason);
void cv_cuda_graph_destroy(cuda_backend *cb);
/* An op of the backend's table: recorded during a step, else launched. */
void cv_cuda_graph_submit(cuda_backend *cb, const cv_op *op);
/* Before any stream work that is not an op: runs a step recorded so far op by op and
 * leaves the rest of the step unrecorded, so that stream order stays call order. */
void cv_cuda_graph_flush(cuda_backend *cb);
/* Drops every graph (they name buffers that are about to be freed). */
void cv_cuda_graph_invalidate(cuda_backend *cb);
void cv_cuda_graph_begin(cv_backend *be);
void cv_cuda_graph_end(cv_backend *be);

/* cuda_matmul.cu */
int cv_cuda_type_ok(cv_type t);
void cv_cuda_matmul(cuda_backend *cb, const cv_tensor *w, const float *x, float *y, int32_t n);
void cv_cuda_get_rows(cuda_backend *cb, const cv_tensor *t, const int32_t *ids, int32_t n, float *out);
/* Bytes of the FP16/BF16/F32 copy of w the cuBLAS path needs (0 for F32 weights). */
size_t cv_cuda_gemm_w_bytes(const cv_tensor *w);
void cv_cuda_matmul_heads(cuda_backend *cb, const cv_tensor *w, int32_t n_heads, const float *x, int32_t x_stride,
                          float *y, int32_t y_stride, int32_t n);

/* cuda_ops.cu */
void cv_cuda_rmsnorm(cuda_backend *cb, const float *x, const float *w, float *y, int32_t n_rows,
                     int32_t dim, float eps, int add_one);
void cv_cuda_rope(cuda_backend *cb, const cv_rope_params *p, float *x, int32_t n_tokens, int32_t n_heads,
                  int32_t head_dim, const int32_t *pos);
void cv_cuda_softmax(cuda_backend *cb, float *x, int32_t n_rows, int32_t n);
void cv_cuda_glu(cuda_backend *cb, cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n);
void cv_cuda_add(cuda_backend *cb, const float *a, const float *b, float *out, int64_t n);
void cv_cuda_scale(cuda_backend *cb, float *x, float s, int64_t n);
void cv_cuda_softcap(cuda_backend *cb, float *x, float c, int64_t n);
void cv_cuda_add_bias(cuda_backend *cb, float *x, const float *bias, int32_t n_rows, int32_t n);
void cv_cuda_scatter_add_rows(cuda_backend *cb, const float *src, const int32_t *ids, const float *w, int32_t n,
                              int32_t dim, float *dst);
void cv_cuda_copy_rows(cuda_backend *cb, const float *src, int32_t src_stride, float *dst, int32_t dst_stride,
                       int32_t width, int64_t n_rows);

/* cuda_attention.cu */
/* MLA's cache "head" is its latent and rope key: 512 + 64 for DeepSeek V2/V3 */
#define CV_CUDA_MAX_HEAD_DIM 576
void cv_cuda_kv_store(cuda_backend *cb, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n,
                      const float *k, const float *v);
void cv_cuda_attention(cuda_backend *cb, const cv_attn_params *p, const cv_kv_layer *kv,
                       const cv_attn_row *rows, int32_t n, const float *q, float *out);

#endif
