/* matmul: the CPU backend's Y[n][rows] = X[n][cols] . W^T over its thread pool.
 *
 * Activations are converted once per call into the scratch buffer (in the format the
 * kernel dots with; for n <= 4 each thread converts them itself, which saves a second
 * dispatch), then the weight rows are handed out in items of 16..128 rows, claimed
 * dynamically by the threads; each item's rows are read once, dotted with all n
 * activation rows while in cache (in tiles of rows x tokens). If the scratch is too
 * small for all n converted rows, the tokens are processed in chunks that fit. Every
 * output is computed the same way whichever thread takes its item, so results do not
 * depend on the thread count. Internal to kernels/.
 */
#ifndef CV_MATMUL_H
#define CV_MATMUL_H

#include <stdint.h>

#include "backend.h"
#include "threadpool.h"

typedef struct cv_matmul_kernel {
    /* Bytes of one converted activation row of cols elements; 0: the kernel dots with
     * the F32 rows as they are. */
    size_t (*act_row_bytes)(cv_type wtype, int64_t cols);
    void (*convert)(cv_type wtype, const float *x, void *act, int64_t cols);
    /* y[t * ldy + r] = dot(row r of w, act row t) for r0 <= r < r1, t < n. */
    void (*rows)(const cv_tensor *w, int64_t r0, int64_t r1, const void *act, size_t act_stride,
                 int32_t n, float *y, int64_t ldy);
} cv_matmul_kernel;

/* Activations in quant's vec_dot type of wtype (cv_quantize_row_act), as cv_matmul_ref
 * and the K-quant tiles take them. */
size_t cv_matmul_vec_dot_act_bytes(cv_type wtype, int64_t cols);
void cv_matmul_vec_dot_act_convert(cv_type wtype, const float *x, void *act, int64_t cols);

/* Row by row over quant's cv_vec_dot_rows, for every supported type: the reference
 * when quant is forced scalar, quant's AVX2 dots otherwise. */
extern const cv_matmul_kernel cv_matmul_ref;
/* NULL when the AVX2 kernels do not cover the type. */
const cv_matmul_kernel *cv_matmul_avx2_for(cv_type wtype);
/* AVX-512 VNNI, bit-identical to the AVX2 kernels; NULL when it does not cover the
 * type. Only where cv_cpu_has_avx512vnni(). */
const cv_matmul_kernel *cv_matmul_avx512_for(cv_type wtype);

void cv_matmul_run(cv_threadpool *pool, const cv_matmul_kernel *k, void *scratch, size_t scratch_bytes,
                   const cv_tensor *w, const float *x, float *y, int32_t n);
/* The same with token t's x row at x + t * ldx and its y row at y + t * ldy (floats;
 * ldx >= cols, ldy >= rows): one head's rows of a [tokens][heads][width] activation. */
void cv_matmul_run_strided(cv_threadpool *pool, const cv_matmul_kernel *k, void *scratch, size_t scratch_bytes,
                           const cv_tensor *w, const float *x, int64_t ldx, float *y, int64_t ldy, int32_t n);

/* y[i] = x . w[i]^T with kernel k[i], for i < count (<= CV_MATMUL_MULTI_MAX), all w[i]
 * of x's width: the matmuls that read one input (Q, K, V; gate, up) in one parallel
 * region, so the threads meet once instead of once per weight, and each thread
 * converts x once per activation format instead of once per weight. Every output is
 * bit-identical to cv_matmul_run's. Decode batches (n <= 4) only; larger ones run the
 * weights one after another. */
void cv_matmul_run_multi(cv_threadpool *pool, int count, const cv_matmul_kernel *const *k, void *scratch,
                         size_t scratch_bytes, const cv_tensor *const *w, const float *x, float *const *y,
                         int32_t n);

#endif
