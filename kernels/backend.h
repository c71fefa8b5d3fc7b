/* backend: the compute interface between the model runtime and a device.
 *
 * A backend (kernels/cpu, kernels/cuda) is an object with one ops table. The runtime gets its
 * memory and its weights onto the device through the table and then calls ops in order;
 * ops on one backend run in call order, so a later op sees an earlier op's results.
 * Every pointer an op takes is memory of that backend (host memory for the CPU backend,
 * device memory for CUDA), including the small int arrays (ids, positions, block
 * tables). Ops cannot fail: their arguments are the caller's contract (shapes below),
 * and a device error surfaces at the next synchronize. Ops never allocate.
 *
 * Layout conventions: activations are dense row-major F32, one row per token of the
 * batch ("B rows"). A weight W is [rows][cols] with cols = its input features (GGUF
 * ne[0]), so matmul computes Y[B][rows] = X[B][cols] . W^T. Outputs may alias inputs
 * only where an op says so.
 *
 * Tensor parallelism keeps this shape: a shard of a weight is a cv_tensor view
 * (a row range, or a column range through row_stride), each rank owns one backend, and
 * the sharded model calls a cv_comm all-reduce on backend buffers between two ops.
 */
#ifndef CV_BACKEND_H
#define CV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "quant.h"

typedef enum cv_device {
    CV_DEVICE_CPU = 0,
    CV_DEVICE_CUDA = 1
} cv_device;

/* A 2-D tensor (weight or table): row r starts at data + r * row_stride bytes and holds
 * cols elements of type in GGUF's block layout (cols a multiple of the block size).
 * A backend may hand back a weight from weight_load in a layout of its own (layout != 0,
 * its memory then owned by the backend until weight_release): the runtime must then
 * reach its bytes only through the backend's ops (matmul, get_rows). */
typedef struct cv_tensor {
    cv_type type;
    int64_t rows;
    int64_t cols;
    size_t row_stride;  /* bytes; >= cv_type_row_bytes(type, cols) */
    void *data;         /* memory of `device` */
    cv_device device;
    int layout;         /* 0: rows as above; else the backend's (CPU: repack.h) */
} cv_tensor;

/* weight_load's host tensor with this layout keeps the rows (a table read only by
 * get_rows, which a backend layout would make resident whole); otherwise host layout 0. */
#define CV_LAYOUT_KEEP_ROWS (-1)

/* Most weights one matmul_multi call takes. */
#define CV_MATMUL_MULTI_MAX 4

/* One layer of a paged KV cache. Each pool holds n_blocks blocks of block_size token
 * slots; a slot holds n_kv_heads * head_dim elements. Element (block b, slot s, head h,
 * dim d) of a pool is at index ((b * block_size + s) * n_kv_heads + h) * head_dim + d.
 * A head's key is its head_dim elements of k; its value is the first v_dim of its
 * elements of v (v_dim 0: head_dim). Multi-head latent attention keeps one pool: v == k,
 * each slot's key is [latent | rope part] and its value the latent prefix (v_dim). */
typedef struct cv_kv_layer {
    void *k, *v;
    cv_type type;       /* CV_TYPE_F16 (default) or CV_TYPE_F32 */
    int32_t block_size;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t v_dim;      /* 0 or head_dim: a full value; less: the prefix of each slot */
} cv_kv_layer;

/* The width of a layer's values (v_dim, or head_dim when 0). */
static inline int32_t cv_kv_v_dim(const cv_kv_layer *kv) { return kv->v_dim ? kv->v_dim : kv->head_dim; }

/* One token (query row) of a batch that may mix several sequences. Position p of the
 * token's sequence lives in block block_table[p / block_size], slot p % block_size.
 * Attention sees positions lo..pos inclusive (lo = 0, or pos - window + 1 for a sliding
 * window layer); kv_store writes the token's own K and V at pos. */
typedef struct cv_attn_row {
    const int32_t *block_table;
    int32_t pos;
    int32_t lo;
} cv_attn_row;

typedef struct cv_attn_params {
    int32_t n_heads;    /* query heads, a multiple of the layer's n_kv_heads (GQA) */
    float scale;        /* multiplies q.k, usually 1/sqrt(head_dim) */
    float softcap;      /* > 0: score = softcap * tanh(score / softcap); 0: none */
} cv_attn_params;

/* Values are ggml's rope modes. */
typedef enum cv_rope_mode {
    CV_ROPE_NORM = 0,   /* rotates pairs (2i, 2i+1): llama */
    CV_ROPE_NEOX = 2    /* rotates pairs (i, i + n_rot/2): qwen2, gemma3 */
} cv_rope_mode;

/* Pair i (0 <= i < n_rot/2) turns by
 *   theta_i = pos * freq_scale * freq_base^(-2i / n_rot) / freq_factors[i]
 * (freq_factors NULL = all 1; Llama 3 rope scaling ships them as rope_freqs.weight,
 * Phi-3's long-rope as rope_factors_long/short.weight) and is then multiplied by
 * mscale (cos and sin both, as ggml's attn_factor: 0 reads as 1).
 * YaRN (ext_factor > 0): with e_i = pos * freq_base^(-2i / n_rot) / freq_factors[i] and
 *   mix_i = ext_factor * (1 - clamp((i - yarn_lo) / max(0.001, yarn_hi - yarn_lo), 0, 1)),
 * theta_i = freq_scale * e_i * (1 - mix_i) + e_i * mix_i (the high frequencies keep
 * their angle, the low ones are interpolated), as ggml's rope_yarn; its magnitude
 * correction is the caller's, folded into mscale.
 * Dimensions n_rot..head_dim-1 pass through unchanged, unscaled. */
typedef struct cv_rope_params {
    cv_rope_mode mode;
    int32_t n_rot;      /* even, <= head_dim */
    float freq_base;
    float freq_scale;   /* 1 for none */
    const float *freq_factors;
    float mscale;       /* Phi-3 long-rope attention factor; 0 or 1 for none */
    float ext_factor;   /* YaRN's extrapolation mix; 0: none */
    float yarn_lo, yarn_hi;  /* YaRN's correction dims (ggml_rope_yarn_corr_dims) */
} cv_rope_params;

/* YaRN's mix of pair i (0: interpolated, ext_factor: extrapolated), shared by the
 * backends (CUDA's kernels too) so that they turn alike. */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline float cv_rope_yarn_mix(const cv_rope_params *p, int32_t i) {
    const float span = p->yarn_hi - p->yarn_lo > 0.001f ? p->yarn_hi - p->yarn_lo : 0.001f;
    float y = ((float)i - p->yarn_lo) / span;
    y = y < 0 ? 0 : y > 1 ? 1 : y;
    return (1 - y) * p->ext_factor;
}

typedef enum cv_glu_kind {
    CV_GLU_SWIGLU = 0,  /* silu(gate) * up */
    CV_GLU_GEGLU = 1    /* gelu(gate) * up, tanh approximation (as ggml_gelu) */
} cv_glu_kind;

typedef struct cv_backend cv_backend;

typedef struct cv_backend_ops {
    void (*destroy)(cv_backend *be);

    /* Memory. alloc returns memory aligned to at least 64 bytes. */
    cv_status (*alloc)(cv_backend *be, size_t bytes, void **out, cv_error *err);
    void (*free)(cv_backend *be, void *p);
    cv_status (*upload)(cv_backend *be, void *dst, const void *src, size_t bytes, cv_error *err);
    cv_status (*download)(cv_backend *be, void *dst, const void *src, size_t bytes, cv_error *err);
    /* Waits for every op issued so far; reports a device error if one happened. */
    cv_status (*synchronize)(cv_backend *be, cv_error *err);

    /* Makes a weight usable by the ops from a host tensor (for example a view into a
     * memory-mapped GGUF that must outlive `out` on the CPU backend, which may use it in
     * place). The layout of out->data is the backend's own: only ops read it.
     * weight_release frees what weight_load made. */
    cv_status (*weight_load)(cv_backend *be, const cv_tensor *host, cv_tensor *out, cv_error *err);
    void (*weight_release)(cv_backend *be, cv_tensor *t);

    /* y[n][w->rows] = x[n][w->cols] . w^T, n >= 1. Activations are converted once to the
     * weight's vec_dot type; each weight row is read once per call. y must not alias x. */
    void (*matmul)(cv_backend *be, const cv_tensor *w, const float *x, float *y, int32_t n);
    /* y[i] = x . w[i]^T as matmul does, for i < count <= CV_MATMUL_MULTI_MAX weights of
     * x's width: the matmuls that read one input as one op (the CPU backend converts x
     * once and runs them in one parallel region). Outputs are bit-identical to count
     * matmul calls. Optional: NULL means one matmul per weight (cv_matmul_multi does
     * that). No y[i] may alias x or another y. */
    void (*matmul_multi)(cv_backend *be, int32_t count, const cv_tensor *const *w, const float *x,
                         float *const *y, int32_t n);
    /* out[i][:] = row ids[i] of table, dequantized to F32 (embedding lookup). */
    void (*get_rows)(cv_backend *be, const cv_tensor *table, const int32_t *ids, int32_t n, float *out);

    /* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * (w + add_one), rows of dim elements;
     * add_one is 1 for Gemma's (1 + w) weights, else 0. y may alias x. */
    void (*rmsnorm)(cv_backend *be, const float *x, const float *w, float *y,
                    int32_t n_rows, int32_t dim, float eps, int add_one);
    /* In place on x[n_tokens][n_heads][head_dim], token t at position pos[t]. */
    void (*rope)(cv_backend *be, const cv_rope_params *p, float *x, int32_t n_tokens,
                 int32_t n_heads, int32_t head_dim, const int32_t *pos);
    /* In place, each of n_rows rows of n elements. */
    void (*softmax)(cv_backend *be, float *x, int32_t n_rows, int32_t n);
    /* out[i] = act(gate[i]) * up[i] for i < n; out may alias gate or up. */
    void (*glu)(cv_backend *be, cv_glu_kind kind, const float *gate, const float *up,
                float *out, int64_t n);
    /* out[i] = a[i] + b[i]; out may alias a or b. */
    void (*add)(cv_backend *be, const float *a, const float *b, float *out, int64_t n);
    /* x[i] *= s. */
    void (*scale)(cv_backend *be, float *x, float s, int64_t n);
    /* x[i] = c * tanh(x[i] / c). */
    void (*softcap)(cv_backend *be, float *x, float c, int64_t n);
    /* x[r][j] += bias[j] for each of n_rows rows of n elements. */
    void (*add_bias)(cv_backend *be, float *x, const float *bias, int32_t n_rows, int32_t n);
    /* dst[ids[i]][j] += w[i] * src[i][j] for i < n, j < dim: one expert's outputs into
     * its tokens' rows (a mixture of experts). The ids of one call are distinct. */
    void (*scatter_add_rows)(cv_backend *be, const float *src, const int32_t *ids, const float *w,
                             int32_t n, int32_t dim, float *dst);
    /* Per-head matmul: w stacks n_heads matrices of R = w->rows / n_heads rows each (head
     * h: rows h*R .. h*R+R-1, as a 3-D GGUF tensor [cols, R, n_heads]), and
     *   y[(t * n_heads + h) * y_stride + r] = W_h[r] . x[(t * n_heads + h) * x_stride ..]
     * for t < n, h < n_heads, r < R (x_stride >= w->cols, y_stride >= R, in floats): a
     * head's part of each row of a [n][n_heads][..] activation (MLA's absorbed
     * projections). y must not alias x. */
    void (*matmul_heads)(cv_backend *be, const cv_tensor *w, int32_t n_heads, const float *x,
                         int32_t x_stride, float *y, int32_t y_stride, int32_t n);
    /* dst[r * dst_stride + j] = src[r * src_stride + j] for r < n_rows, j < width: a
     * strided copy between buffers that do not overlap. */
    void (*copy_rows)(cv_backend *be, const float *src, int32_t src_stride, float *dst,
                      int32_t dst_stride, int32_t width, int64_t n_rows);

    /* Writes k[i] and v[i] (each n_kv_heads * head_dim F32) into the slot of rows[i].pos,
     * converted to the pool type, for i < n. v NULL: only k (a layer whose values are
     * the prefix of its keys, v == k). */
    void (*kv_store)(cv_backend *be, const cv_kv_layer *kv, const cv_attn_row *rows,
                     int32_t n, const float *k, const float *v);
    /* out[i][h] = sum over positions p in rows[i].lo..pos of softmax_p(score) * V[p][g],
     * score = capped(scale * q[i][h] . K[p][g]), g = h / (n_heads / n_kv_heads).
     * q is [n][n_heads * head_dim], out [n][n_heads * v_dim]; out must not alias q. */
    void (*attention)(cv_backend *be, const cv_attn_params *p, const cv_kv_layer *kv,
                      const cv_attn_row *rows, int32_t n, const float *q, float *out);

    /* Optional (NULL where a backend has none): the ops called between graph_begin and
     * graph_end form one step that the backend may record once (a CUDA graph) and
     * replay whenever a later step calls the same ops with the same arguments, pointers
     * and values alike. So a step's changing inputs (token ids, positions, attention
     * rows) must reach the ops through buffers filled before graph_begin, not as
     * values. Any other call of the table in between (upload, synchronize, ...) first
     * runs the ops so far, and the rest of the step runs unrecorded: always correct,
     * only slower. Errors surface at the next synchronize, as for ops. */
    void (*graph_begin)(cv_backend *be);
    void (*graph_end)(cv_backend *be);
} cv_backend_ops;

struct cv_backend {
    const cv_backend_ops *ops;
    cv_device device;
    const char *name;   /* "cpu-avx2", "cpu-scalar", "cuda", ... */
};

static inline void cv_backend_destroy(cv_backend *be) {
    if (be) be->ops->destroy(be);
}

/* The matmuls of one input through be's matmul_multi, or one matmul each without it. */
static inline void cv_matmul_multi(cv_backend *be, int32_t count, const cv_tensor *const *w, const float *x,
                                   float *const *y, int32_t n) {
    if (be->ops->matmul_multi && count <= CV_MATMUL_MULTI_MAX) {
        be->ops->matmul_multi(be, count, w, x, y, n);
        return;
    }
    for (int32_t i = 0; i < count; i++) be->ops->matmul(be, w[i], x, y[i], n);
}

#endif
