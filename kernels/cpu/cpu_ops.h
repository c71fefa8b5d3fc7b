/* cpu_ops: the CPU backend's per-row kernels, in two sets with the same signatures:
 * the scalar reference (cpu_ops.c) and AVX2/FMA/F16C (cpu_ops_avx2.c). cpu_backend.c
 * picks one set at run time and splits the work across its thread pool; tests run
 * both sets on the same data and compare. Internal to kernels/.
 */
#ifndef CV_CPU_OPS_H
#define CV_CPU_OPS_H

#include <stdint.h>

#include "backend.h"

/* Largest GQA group (query heads per KV head) and head_dim the kernels handle in one
 * pass; larger groups are split by the caller. */
#define CV_ATTN_MAX_GROUP 16
#define CV_ROPE_MAX_ROT 1024

typedef struct cv_cpu_kernels {
    const char *name;
    void (*rmsnorm_row)(const float *x, const float *w, float *y, int32_t dim, float eps, float add_one);
    void (*softmax_row)(float *x, int32_t n);
    void (*glu)(cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n);
    void (*add)(const float *a, const float *b, float *out, int64_t n);
    void (*scale)(float *x, float s, int64_t n);
    /* y[i] += a * x[i], the product rounded before the sum (no fused multiply-add): the
     * same bits in both sets. */
    void (*axpy)(float a, const float *x, float *y, int64_t n);
    void (*softcap)(float *x, float c, int64_t n);
    /* Rotates the n_heads heads of one token; cs holds cos, sin interleaved per pair. */
    void (*rope_token)(cv_rope_mode mode, int32_t n_rot, const float *cs, float *x, int32_t n_heads,
                       int32_t head_dim);
    /* Converts n floats to the KV pool type (F16 or F32). */
    void (*kv_put)(cv_type type, const float *src, void *dst, int32_t n);
    /* Attention of query heads h0 .. h0+n_group-1 of one token, all reading KV head g. */
    void (*attn_group)(const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *row,
                       int32_t g, int32_t h0, int32_t n_group, const float *q, float *out);
} cv_cpu_kernels;

extern const cv_cpu_kernels cv_cpu_kernels_ref;
extern const cv_cpu_kernels cv_cpu_kernels_avx2;

/* cos and sin of the n_rot/2 angles of one position, interleaved, into cs[n_rot]. */
void cv_rope_angles(const cv_rope_params *p, int32_t pos, float *cs);

/* Scalar helpers shared by both sets. */
float cv_gelu_tanh_ref(float x);
float cv_silu_ref(float x);

#endif
