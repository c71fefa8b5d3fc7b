#include "cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "cpu_profile.h"
#include "matmul.h"
#include "matmul_dispatch.h"
#include "repack.h"
#include "threadpool.h"

typedef struct cpu_backend {
    cv_backend base;
    cv_threadpool *pool;
    const cv_cpu_kernels *k;
    int fast;
    int vnni;           /* AVX-512 VNNI may run */
    cv_matmul_choice mm[CV_TYPE_COUNT]; /* per weight type: layout and kernels (matmul_dispatch.h) */
    void *scratch;
    size_t scratch_bytes;
    int profile;        /* CORVID_PROFILE: ops timed (cpu_profile.h) */
    /* The angles of the last single-token rope: a decode step rotates q and k of every
     * layer at the same position, mostly with the same parameters. */
    cv_rope_params rope_p;
    int32_t rope_pos, rope_valid;
    float rope_cs[CV_ROPE_MAX_ROT];
} cpu_backend;

static cpu_backend *cpu(cv_backend *be) { return (cpu_backend *)be; }


/* ---- parallel loops ------------------------------------------------------------ */

/* Below this many elements of work an op runs on the calling thread alone: waking the
 * pool costs more than it saves (the vectors of one decode step are mostly smaller). */
#define PAR_MIN_WORK 65536

typedef struct pfor {
    void (*body)(void *ctx, int64_t lo, int64_t hi);
    void *ctx;
    int64_t n, align, parts;
} pfor;

static void pfor_item(void *c, int64_t item, int ith) {
    (void)ith;
    pfor *p = c;
    int64_t lo, hi;
    cv_split_range(p->n, p->align, (int)item, (int)p->parts, &lo, &hi);
    if (hi > lo) p->body(p->ctx, lo, hi);
}

/* body over [0, n) items, each costing about `work` elements, in a few parts per
 * thread (claimed dynamically, so a slow thread is made up for). */
static void parallel_for(cpu_backend *cb, int64_t n, int64_t align, int64_t work,
                         void (*body)(void *, int64_t, int64_t), void *ctx) {
    if (n <= 0) return;
    int nth = cv_threadpool_size(cb->pool);
    if (n * work < PAR_MIN_WORK || nth == 1 || n <= align) {
        body(ctx, 0, n);
        return;
    }
    int64_t units = (n + align - 1) / align;
    pfor p = {body, ctx, n, align, units < 4 * nth ? units : 4 * nth};
    cv_threadpool_for(cb->pool, pfor_item, &p, p.parts);
}

/* ---- memory and weights ------------------------------------------------------- */

static cv_status cpu_alloc(cv_backend *be, size_t bytes, void **out, cv_error *err) {
    (void)be;
    size_t n = (bytes + 63) & ~(size_t)63;
    *out = n ? aligned_alloc(64, n) : NULL;
    if (!*out && bytes) return cv_errorf(err, CV_ENOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    return CV_OK;
}

static void cpu_free(cv_backend *be, void *p) {
    (void)be;
    free(p);
}

static cv_status cpu_copy(cv_backend *be, void *dst, const void *src, size_t bytes, cv_error *err) {
    (void)be;
    (void)err;
    memcpy(dst, src, bytes);
    return CV_OK;
}

static cv_status cpu_synchronize(cv_backend *be, cv_error *err) {
    (void)be;
    (void)err;
    return CV_OK;
}

static const cv_matmul_kernel *mm_kernel(cpu_backend *cb, cv_type t, int32_t n) {
    return (unsigned)t < CV_TYPE_COUNT ? cv_matmul_pick(&cb->mm[t], n) : &cv_matmul_ref;
}

static cv_status cpu_weight_load(cv_backend *be, const cv_tensor *host, cv_tensor *out, cv_error *err) {
    cpu_backend *cb = cpu(be);
    const cv_type_info *ti = cv_type_get(host->type);
    if (!ti || !ti->supported)
        return cv_errorf(err, CV_EUNSUPPORTED, "cpu backend: weight type %d is not supported", (int)host->type);
    if (host->rows <= 0 || host->cols <= 0 || host->cols % ti->block_elems != 0)
        return cv_errorf(err, CV_EINVAL, "cpu backend: weight of %lld x %lld: cols must be a positive multiple of %u (%s)",
                         (long long)host->rows, (long long)host->cols, ti->block_elems, ti->name);
    size_t rb = cv_type_row_bytes(host->type, host->cols);
    if (host->row_stride < rb)
        return cv_errorf(err, CV_EINVAL, "cpu backend: row_stride %zu is less than the %zu bytes of a %s row of %lld",
                         host->row_stride, rb, ti->name, (long long)host->cols);
    size_t act = 0;
    static const int32_t class_n[] = {1, 2, 32}; /* every batch class's kernel */
    for (int i = 0; i < 3; i++) {
        size_t a = mm_kernel(cb, host->type, class_n[i])->act_row_bytes(host->type, host->cols);
        act = a > act ? a : act;
    }
    if (act + 64 > cb->scratch_bytes)
        return cv_errorf(err, CV_ERANGE, "cpu backend: a row of %lld activations needs %zu bytes of scratch, have %zu",
                         (long long)host->cols, act + 64, cb->scratch_bytes);
    if (host->layout != CV_CPU_LAYOUT_ROWS && host->layout != CV_LAYOUT_KEEP_ROWS)
        return cv_errorf(err, CV_EINVAL, "cpu backend: a weight to load must be plain rows (layout %d)", host->layout);
    const int keep = host->layout == CV_LAYOUT_KEEP_ROWS;
    *out = *host;
    out->device = CV_DEVICE_CPU;
    out->layout = CV_CPU_LAYOUT_ROWS;
    /* The layout the type's batch-1 kernel reads, in memory of our own (the caller may
     * then drop the pages of the source: cv_tensor's contract). */
    if (!keep && cb->mm[host->type].layout == CV_CPU_LAYOUT_X16 && host->rows >= 16 && rb <= cb->scratch_bytes) {
        void *d = aligned_alloc(64, (rb * (size_t)host->rows + 63) & ~(size_t)63);
        if (!d) return cv_errorf(err, CV_ENOMEM, "cpu backend: cannot allocate %zu bytes for a repacked weight",
                                 rb * (size_t)host->rows);
        cv_repack_x16(host->type, host->rows, host->cols, host->data, host->row_stride, d);
        out->data = d;
        out->row_stride = rb;
        out->layout = CV_CPU_LAYOUT_X16;
    }
    return CV_OK;
}

static void cpu_weight_release(cv_backend *be, cv_tensor *t) {
    (void)be;
    if (t->layout != CV_CPU_LAYOUT_ROWS) free(t->data);
    memset(t, 0, sizeof *t);
}

/* ---- ops ---------------------------------------------------------------------- */

static void cpu_matmul(cv_backend *be, const cv_tensor *w, const float *x, float *y, int32_t n) {
    cpu_backend *cb = cpu(be);
    cv_matmul_run(cb->pool, mm_kernel(cb, w->type, n), cb->scratch, cb->scratch_bytes, w, x, y, n);
}

static void cpu_matmul_multi(cv_backend *be, int32_t count, const cv_tensor *const *w, const float *x,
                             float *const *y, int32_t n) {
    cpu_backend *cb = cpu(be);
    const cv_matmul_kernel *k[CV_MATMUL_MULTI_MAX];
    for (int32_t i = 0; i < count && i < CV_MATMUL_MULTI_MAX; i++) k[i] = mm_kernel(cb, w[i]->type, n);
    cv_matmul_run_multi(cb->pool, count, k, cb->scratch, cb->scratch_bytes, w, x, y, n);
}

static void cpu_get_rows(cv_backend *be, const cv_tensor *table, const int32_t *ids, int32_t n, float *out) {
    cpu_backend *cb = cpu(be);
    if (table->type == CV_TYPE_F32 && table->layout == CV_CPU_LAYOUT_ROWS) {
        /* activations (a mixture's expert inputs, the rows that want logits): a copy,
         * not quant's element-by-element F32 "dequantization" */
        for (int32_t i = 0; i < n; i++)
            memcpy(out + (int64_t)i * table->cols, (const char *)table->data + (int64_t)ids[i] * table->row_stride,
                   (size_t)table->cols * sizeof(float));
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        const void *row = (const char *)table->data + (int64_t)ids[i] * table->row_stride;
        if (table->layout == CV_CPU_LAYOUT_X16) { /* back to the file's blocks first (the scratch is free) */
            cv_repack_x16_row(table->type, table->rows, table->cols, table->data, ids[i], cb->scratch);
            row = cb->scratch;
        }
        cv_dequantize_row(table->type, row, out + (int64_t)i * table->cols, table->cols);
    }
}

typedef struct rows_ctx {
    const cv_cpu_kernels *k;
    const float *x, *w;
    float *y;
    int32_t dim;
    float eps, add_one;
} rows_ctx;

static void rmsnorm_body(void *c, int64_t lo, int64_t hi) {
    rows_ctx *r = c;
    for (int64_t i = lo; i < hi; i++) r->k->rmsnorm_row(r->x + i * r->dim, r->w, r->y + i * r->dim, r->dim, r->eps, r->add_one);
}

static void cpu_rmsnorm(cv_backend *be, const float *x, const float *w, float *y, int32_t n_rows, int32_t dim,
                        float eps, int add_one) {
    cpu_backend *cb = cpu(be);
    rows_ctx r = {cb->k, x, w, y, dim, eps, add_one ? 1.0f : 0.0f};
    parallel_for(cb, n_rows, 1, dim, rmsnorm_body, &r);
}

static void softmax_body(void *c, int64_t lo, int64_t hi) {
    rows_ctx *r = c;
    for (int64_t i = lo; i < hi; i++) r->k->softmax_row(r->y + i * r->dim, r->dim);
}

static void cpu_softmax(cv_backend *be, float *x, int32_t n_rows, int32_t n) {
    cpu_backend *cb = cpu(be);
    rows_ctx r = {.k = cb->k, .y = x, .dim = n};
    parallel_for(cb, n_rows, 1, n, softmax_body, &r);
}

typedef struct rope_ctx {
    const cv_cpu_kernels *k;
    const cv_rope_params *p;
    float *x;
    int32_t n_heads, head_dim;
    const int32_t *pos;
} rope_ctx;

static void rope_body(void *c, int64_t lo, int64_t hi) {
    rope_ctx *r = c;
    float cs[CV_ROPE_MAX_ROT];
    for (int64_t t = lo; t < hi; t++) {
        cv_rope_angles(r->p, r->pos[t], cs);
        r->k->rope_token(r->p->mode, r->p->n_rot, cs, r->x + t * r->n_heads * r->head_dim, r->n_heads, r->head_dim);
    }
}

/* Whether a and b give the same angles (freq_factors by address: a model's table). */
static int same_rope(const cv_rope_params *a, const cv_rope_params *b) {
    return a->mode == b->mode && a->n_rot == b->n_rot && a->freq_base == b->freq_base &&
           a->freq_scale == b->freq_scale && a->freq_factors == b->freq_factors && a->mscale == b->mscale &&
           a->ext_factor == b->ext_factor && a->yarn_lo == b->yarn_lo && a->yarn_hi == b->yarn_hi;
}

static void cpu_rope(cv_backend *be, const cv_rope_params *p, float *x, int32_t n_tokens, int32_t n_heads,
                     int32_t head_dim, const int32_t *pos) {
    cpu_backend *cb = cpu(be);
    if (n_tokens == 1) { /* decode: the angles of the previous call, if they are these */
        if (!cb->rope_valid || cb->rope_pos != pos[0] || !same_rope(&cb->rope_p, p)) {
            cv_rope_angles(p, pos[0], cb->rope_cs);
            cb->rope_p = *p, cb->rope_pos = pos[0], cb->rope_valid = 1;
        }
        cb->k->rope_token(p->mode, p->n_rot, cb->rope_cs, x, n_heads, head_dim);
        return;
    }
    rope_ctx r = {cb->k, p, x, n_heads, head_dim, pos};
    /* The angles cost a sin and cos per pair: count them as work too. */
    parallel_for(cb, n_tokens, 1, (int64_t)n_heads * head_dim + 32 * p->n_rot, rope_body, &r);
}

typedef struct ew_ctx {
    const cv_cpu_kernels *k;
    int op;
    cv_glu_kind kind;
    const float *a, *b;
    float *out;
    float s;
} ew_ctx;

enum { EW_GLU, EW_ADD, EW_SCALE, EW_SOFTCAP };

static void ew_body(void *c, int64_t lo, int64_t hi) {
    ew_ctx *e = c;
    switch (e->op) {
    case EW_GLU: e->k->glu(e->kind, e->a + lo, e->b + lo, e->out + lo, hi - lo); break;
    case EW_ADD: e->k->add(e->a + lo, e->b + lo, e->out + lo, hi - lo); break;
    case EW_SCALE: e->k->scale(e->out + lo, e->s, hi - lo); break;
    case EW_SOFTCAP: e->k->softcap(e->out + lo, e->s, hi - lo); break;
    }
}

static void cpu_glu(cv_backend *be, cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    cpu_backend *cb = cpu(be);
    ew_ctx e = {cb->k, EW_GLU, kind, gate, up, out, 0};
    parallel_for(cb, n, 64, 8, ew_body, &e);
}

static void cpu_add(cv_backend *be, const float *a, const float *b, float *out, int64_t n) {
    cpu_backend *cb = cpu(be);
    ew_ctx e = {cb->k, EW_ADD, 0, a, b, out, 0};
    parallel_for(cb, n, 64, 1, ew_body, &e);
}

static void cpu_scale(cv_backend *be, float *x, float s, int64_t n) {
    cpu_backend *cb = cpu(be);
    ew_ctx e = {cb->k, EW_SCALE, 0, NULL, NULL, x, s};
    parallel_for(cb, n, 64, 1, ew_body, &e);
}

static void cpu_softcap(cv_backend *be, float *x, float c, int64_t n) {
    cpu_backend *cb = cpu(be);
    ew_ctx e = {cb->k, EW_SOFTCAP, 0, NULL, NULL, x, c};
    parallel_for(cb, n, 64, 8, ew_body, &e);
}

static void cpu_add_bias(cv_backend *be, float *x, const float *bias, int32_t n_rows, int32_t n) {
    cpu_backend *cb = cpu(be);
    for (int32_t r = 0; r < n_rows; r++) cb->k->add(x + (int64_t)r * n, bias, x + (int64_t)r * n, n);
}

static void cpu_scatter_add_rows(cv_backend *be, const float *src, const int32_t *ids, const float *w, int32_t n,
                                 int32_t dim, float *dst) {
    cpu_backend *cb = cpu(be);
    for (int32_t i = 0; i < n; i++) cb->k->axpy(w[i], src + (int64_t)i * dim, dst + (int64_t)ids[i] * dim, dim);
}

/* Head by head, each a strided matmul over the thread pool (a head's matrix is small:
 * the pool splits its rows). */
static void cpu_matmul_heads(cv_backend *be, const cv_tensor *w, int32_t n_heads, const float *x, int32_t x_stride,
                             float *y, int32_t y_stride, int32_t n) {
    cpu_backend *cb = cpu(be);
    const int64_t R = w->rows / n_heads;
    /* A head's rows are a tensor of their own only in the file's rows (the model loads
     * these weights with CV_LAYOUT_KEEP_ROWS); the x16 kernels then read rows too. */
    if (w->layout != CV_CPU_LAYOUT_ROWS) return;
    for (int32_t h = 0; h < n_heads; h++) {
        cv_tensor wh = *w;
        wh.rows = R;
        wh.data = (char *)w->data + (size_t)h * (size_t)R * w->row_stride;
        cv_matmul_run_strided(cb->pool, mm_kernel(cb, w->type, n), cb->scratch, cb->scratch_bytes, &wh,
                              x + (int64_t)h * x_stride, (int64_t)n_heads * x_stride, y + (int64_t)h * y_stride,
                              (int64_t)n_heads * y_stride, n);
    }
}

static void cpu_copy_rows(cv_backend *be, const float *src, int32_t src_stride, float *dst, int32_t dst_stride,
                          int32_t width, int64_t n_rows) {
    (void)be;
    for (int64_t r = 0; r < n_rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)width * sizeof(float));
}

static void cpu_kv_store(cv_backend *be, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n, const float *k,
                         const float *v) {
    cpu_backend *cb = cpu(be);
    int32_t width = kv->n_kv_heads * kv->head_dim;
    size_t esz = kv->type == CV_TYPE_F32 ? 4 : 2;
    for (int32_t i = 0; i < n; i++) {
        int32_t p = rows[i].pos;
        int64_t slot = (int64_t)rows[i].block_table[p / kv->block_size] * kv->block_size + p % kv->block_size;
        cb->k->kv_put(kv->type, k + (int64_t)i * width, (char *)kv->k + slot * width * esz, width);
        if (v) cb->k->kv_put(kv->type, v + (int64_t)i * width, (char *)kv->v + slot * width * esz, width);
    }
}

typedef struct attn_ctx {
    const cv_cpu_kernels *k;
    const cv_attn_params *p;
    const cv_kv_layer *kv;
    const cv_attn_row *rows;
    const float *q;
    float *out;
    int32_t per_token, splits, group;
} attn_ctx;

/* Items are (token, kv head, part of the group); a token's cost grows with its
 * position, and items are claimed dynamically, so the threads stay balanced. */
static void attn_item(void *c, int64_t it, int ith) {
    (void)ith;
    attn_ctx *a = c;
    int64_t width = (int64_t)a->p->n_heads * a->kv->head_dim, vwidth = (int64_t)a->p->n_heads * cv_kv_v_dim(a->kv);
    int32_t t = (int32_t)(it / a->per_token), r = (int32_t)(it % a->per_token);
    int32_t g = r / a->splits, part = r % a->splits;
    int32_t h0 = g * a->group + part * CV_ATTN_MAX_GROUP;
    int32_t ng = a->group - part * CV_ATTN_MAX_GROUP;
    if (ng > CV_ATTN_MAX_GROUP) ng = CV_ATTN_MAX_GROUP;
    a->k->attn_group(a->p, a->kv, &a->rows[t], g, h0, ng, a->q + t * width, a->out + t * vwidth);
}

static void cpu_attention(cv_backend *be, const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *rows,
                          int32_t n, const float *q, float *out) {
    cpu_backend *cb = cpu(be);
    int32_t group = p->n_heads / kv->n_kv_heads;
    int32_t splits = (group + CV_ATTN_MAX_GROUP - 1) / CV_ATTN_MAX_GROUP;
    attn_ctx a = {cb->k, p, kv, rows, q, out, kv->n_kv_heads * splits, splits, group};
    int64_t items = (int64_t)n * a.per_token, work = 0;
    for (int32_t i = 0; i < n && work < PAR_MIN_WORK; i++)
        work += (int64_t)(rows[i].pos - rows[i].lo + 1) * p->n_heads * kv->head_dim;
    if (work < PAR_MIN_WORK) {
        for (int64_t i = 0; i < items; i++) attn_item(&a, i, 0);
        return;
    }
    cv_threadpool_for(cb->pool, attn_item, &a, items);
}

static void cpu_destroy(cv_backend *be) {
    cpu_backend *cb = cpu(be);
    if (cb->profile) cv_cpu_profile_report(cv_threadpool_wait_seconds(cb->pool));
    cv_threadpool_destroy(cb->pool);
    free(cb->scratch);
    free(cb);
}

static const cv_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .weight_load = cpu_weight_load,
    .weight_release = cpu_weight_release,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .softmax = cpu_softmax,
    .glu = cpu_glu,
    .add = cpu_add,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .add_bias = cpu_add_bias,
    .scatter_add_rows = cpu_scatter_add_rows,
    .matmul_heads = cpu_matmul_heads,
    .copy_rows = cpu_copy_rows,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
};

cv_status cv_cpu_backend_create(const cv_cpu_options *opt, cv_backend **out, cv_error *err) {
    static const cv_cpu_options defaults = {0};
    if (!opt) opt = &defaults;
    *out = NULL;
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return cv_errorf(err, CV_ENOMEM, "cpu backend: out of memory");
    cb->fast = !opt->force_scalar && cv_cpu_has_avx2();
    cb->k = cb->fast ? &cv_cpu_kernels_avx2 : &cv_cpu_kernels_ref;
    cb->vnni = cb->fast && !opt->no_avx512 && cv_cpu_has_avx512vnni();
    cv_matmul_limits lim = {opt->force_scalar, opt->no_avx512, opt->repack_weights};
    cv_matmul_choose(&lim, cb->mm);
    cb->base = (cv_backend){&cpu_ops, CV_DEVICE_CPU, cb->vnni ? "cpu-avx512" : cb->fast ? "cpu-avx2" : "cpu-scalar"};
    cb->scratch_bytes = opt->scratch_bytes ? (opt->scratch_bytes + 63) & ~(size_t)63 : (size_t)16 << 20;
    cb->scratch = aligned_alloc(64, cb->scratch_bytes);
    if (!cb->scratch) {
        cv_errorf(err, CV_ENOMEM, "cpu backend: cannot allocate %zu bytes of scratch", cb->scratch_bytes);
        goto err;
    }
    if (cv_threadpool_create(opt->n_threads, &cb->pool, err) != CV_OK) goto err;
    if ((cb->profile = cv_cpu_profile_enabled())) {
        cb->base.ops = cv_cpu_profile_ops(&cpu_ops);
        cv_threadpool_profile(cb->pool, 1);
    }
    *out = &cb->base;
    return CV_OK;
err:
    free(cb->scratch);
    free(cb);
    return err ? err->code : CV_ENOMEM;
}

int cv_cpu_backend_threads(const cv_backend *be) { return cv_threadpool_size(((const cpu_backend *)be)->pool); }
