/* cpu_backend: the CPU implementation of the backend ops table (backend.h).
 *
 * It owns a persistent thread pool and one scratch buffer (the converted activations
 * of matmul), both made at create: no op allocates. Kernels are the AVX2/FMA/F16C set
 * when the CPU has those features (with AVX-512 VNNI matmul tiles for Q4_0 and Q8_0
 * where it has those too), else the scalar reference; force_scalar pins the reference
 * and no_avx512 the AVX2 tiles (tests compare them). Weights are used in place: weight_load makes a
 * view, so a memory-mapped file must outlive the tensors made from it.
 */
#ifndef CV_CPU_BACKEND_H
#define CV_CPU_BACKEND_H

#include <stddef.h>

#include "backend.h"
#include "cpu_features.h"

typedef struct cv_cpu_options {
    int n_threads;        /* <= 0: one per online CPU */
    int force_scalar;     /* 1: reference kernels even where AVX2 is available */
    int no_avx512;        /* 1: AVX2 matmul tiles even where AVX-512 VNNI is available */
    size_t scratch_bytes; /* 0: 16 MiB; bounds one converted activation row (weight_load checks) */
    int repack_weights;   /* 1: weight_load may hand back a weight in a layout of the backend's,
                           * in memory it owns (weight_release frees it), where timing on this
                           * CPU says that is faster (kernels/cpu/matmul_dispatch.h) */
} cv_cpu_options;

/* opt may be NULL for the defaults. */
cv_status cv_cpu_backend_create(const cv_cpu_options *opt, cv_backend **out, cv_error *err);
int cv_cpu_backend_threads(const cv_backend *be);

#endif
