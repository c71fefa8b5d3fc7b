#include "op_tape.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(cv_op) == 10 * sizeof(int32_t) + 3 * sizeof(int64_t) + 8 * sizeof(float) +
                                   6 * sizeof(void *),
               "cv_op has no padding bytes");
_Static_assert(sizeof(cv_op) % sizeof(uint64_t) == 0, "cv_op is a whole number of words");
/* 8 entries for memory and weights, 15 compute ops, the optional matmul_multi (left
 * NULL here: cv_matmul_multi then issues matmuls, which are recorded), graph_begin/end.
 * A new compute op needs a kind, a d_ function and a cv_op_apply case here, or a
 * deferring backend's table would have a NULL in its place. */
_Static_assert(sizeof(cv_backend_ops) == 26 * sizeof(void (*)(void)),
               "cv_backend_ops changed: if a compute op was added, op_tape.c must record it");

/* Slots of the struct arguments: their ints from i[3], their pointers from p[4]. */
static void put_tensor(cv_op *o, const cv_tensor *t) {
    o->i[3] = (int32_t)t->type, o->i[4] = (int32_t)t->device, o->i[5] = t->layout;
    o->l[0] = t->rows, o->l[1] = t->cols, o->l[2] = (int64_t)t->row_stride;
    o->p[4] = t->data;
}

static cv_tensor get_tensor(const cv_op *o) {
    return (cv_tensor){.type = (cv_type)o->i[3], .rows = o->l[0], .cols = o->l[1],
                       .row_stride = (size_t)o->l[2], .data = (void *)o->p[4], .device = (cv_device)o->i[4],
                       .layout = o->i[5]};
}

static void put_kv(cv_op *o, const cv_kv_layer *kv) {
    o->i[3] = (int32_t)kv->type, o->i[4] = kv->block_size, o->i[5] = kv->n_kv_heads, o->i[6] = kv->head_dim;
    o->i[7] = kv->v_dim;
    o->p[4] = kv->k, o->p[5] = kv->v;
}

static cv_kv_layer get_kv(const cv_op *o) {
    return (cv_kv_layer){.k = (void *)o->p[4], .v = (void *)o->p[5], .type = (cv_type)o->i[3],
                         .block_size = o->i[4], .n_kv_heads = o->i[5], .head_dim = o->i[6], .v_dim = o->i[7]};
}

/* ---- ops -> cv_op ---- */

/* A zeroed op of kind k: equal calls give equal bytes. */
static cv_op new_op(cv_op_kind k) {
    cv_op o;
    memset(&o, 0, sizeof o);
    o.kind = (int32_t)k;
    return o;
}

static void sink(cv_backend *be, const cv_op *op) { ((const cv_op_defer_table *)be->ops)->sink(be, op); }

static void d_matmul(cv_backend *be, const cv_tensor *w, const float *x, float *y, int32_t n) {
    cv_op o = new_op(CV_OP_MATMUL);
    put_tensor(&o, w);
    o.p[0] = x, o.p[1] = y, o.i[0] = n;
    sink(be, &o);
}

static void d_get_rows(cv_backend *be, const cv_tensor *table, const int32_t *ids, int32_t n, float *out) {
    cv_op o = new_op(CV_OP_GET_ROWS);
    put_tensor(&o, table);
    o.p[0] = ids, o.i[0] = n, o.p[1] = out;
    sink(be, &o);
}

static void d_rmsnorm(cv_backend *be, const float *x, const float *w, float *y, int32_t n_rows, int32_t dim,
                      float eps, int add_one) {
    cv_op o = new_op(CV_OP_RMSNORM);
    o.p[0] = x, o.p[1] = w, o.p[2] = y, o.i[0] = n_rows, o.i[1] = dim, o.f[0] = eps, o.i[2] = add_one;
    sink(be, &o);
}

static void d_rope(cv_backend *be, const cv_rope_params *p, float *x, int32_t n_tokens, int32_t n_heads,
                   int32_t head_dim, const int32_t *pos) {
    cv_op o = new_op(CV_OP_ROPE);
    o.i[3] = (int32_t)p->mode, o.i[4] = p->n_rot, o.f[1] = p->freq_base, o.f[2] = p->freq_scale;
    o.f[3] = p->mscale, o.p[4] = p->freq_factors;
    o.f[4] = p->ext_factor, o.f[5] = p->yarn_lo, o.f[6] = p->yarn_hi;
    o.p[0] = x, o.i[0] = n_tokens, o.i[1] = n_heads, o.i[2] = head_dim, o.p[1] = pos;
    sink(be, &o);
}

static void d_softmax(cv_backend *be, float *x, int32_t n_rows, int32_t n) {
    cv_op o = new_op(CV_OP_SOFTMAX);
    o.p[0] = x, o.i[0] = n_rows, o.i[1] = n;
    sink(be, &o);
}

static void d_glu(cv_backend *be, cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    cv_op o = new_op(CV_OP_GLU);
    o.i[0] = (int32_t)kind, o.p[0] = gate, o.p[1] = up, o.p[2] = out, o.l[0] = n;
    sink(be, &o);
}

static void d_add(cv_backend *be, const float *a, const float *b, float *out, int64_t n) {
    cv_op o = new_op(CV_OP_ADD);
    o.p[0] = a, o.p[1] = b, o.p[2] = out, o.l[0] = n;
    sink(be, &o);
}

static void d_scale(cv_backend *be, float *x, float s, int64_t n) {
    cv_op o = new_op(CV_OP_SCALE);
    o.p[0] = x, o.f[0] = s, o.l[0] = n;
    sink(be, &o);
}

static void d_softcap(cv_backend *be, float *x, float c, int64_t n) {
    cv_op o = new_op(CV_OP_SOFTCAP);
    o.p[0] = x, o.f[0] = c, o.l[0] = n;
    sink(be, &o);
}

static void d_add_bias(cv_backend *be, float *x, const float *bias, int32_t n_rows, int32_t n) {
    cv_op o = new_op(CV_OP_ADD_BIAS);
    o.p[0] = x, o.p[1] = bias, o.i[0] = n_rows, o.i[1] = n;
    sink(be, &o);
}

static void d_scatter_add_rows(cv_backend *be, const float *src, const int32_t *ids, const float *w, int32_t n,
                               int32_t dim, float *dst) {
    cv_op o = new_op(CV_OP_SCATTER_ADD_ROWS);
    o.p[0] = src, o.p[1] = ids, o.p[2] = w, o.p[3] = dst, o.i[0] = n, o.i[1] = dim;
    sink(be, &o);
}

static void d_matmul_heads(cv_backend *be, const cv_tensor *w, int32_t n_heads, const float *x, int32_t x_stride,
                           float *y, int32_t y_stride, int32_t n) {
    cv_op o = new_op(CV_OP_MATMUL_HEADS);
    put_tensor(&o, w);
    o.p[0] = x, o.p[1] = y, o.i[0] = n, o.i[1] = n_heads, o.i[2] = x_stride, o.i[5] = y_stride;
    sink(be, &o);
}

static void d_copy_rows(cv_backend *be, const float *src, int32_t src_stride, float *dst, int32_t dst_stride,
                        int32_t width, int64_t n_rows) {
    cv_op o = new_op(CV_OP_COPY_ROWS);
    o.p[0] = src, o.p[1] = dst, o.i[0] = src_stride, o.i[1] = dst_stride, o.i[2] = width, o.l[0] = n_rows;
    sink(be, &o);
}

static void d_kv_store(cv_backend *be, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n, const float *k,
                       const float *v) {
    cv_op o = new_op(CV_OP_KV_STORE);
    put_kv(&o, kv);
    o.p[0] = rows, o.i[0] = n, o.p[1] = k, o.p[2] = v;
    sink(be, &o);
}

static void d_attention(cv_backend *be, const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *rows,
                        int32_t n, const float *q, float *out) {
    cv_op o = new_op(CV_OP_ATTENTION);
    put_kv(&o, kv);
    o.i[1] = p->n_heads, o.f[0] = p->scale, o.f[1] = p->softcap;
    o.p[0] = rows, o.i[0] = n, o.p[1] = q, o.p[2] = out;
    sink(be, &o);
}

void cv_op_defer_init(cv_op_defer_table *t, cv_op_sink s) {
    t->sink = s;
    t->ops.matmul = d_matmul;
    t->ops.get_rows = d_get_rows;
    t->ops.rmsnorm = d_rmsnorm;
    t->ops.rope = d_rope;
    t->ops.softmax = d_softmax;
    t->ops.glu = d_glu;
    t->ops.add = d_add;
    t->ops.scale = d_scale;
    t->ops.softcap = d_softcap;
    t->ops.add_bias = d_add_bias;
    t->ops.scatter_add_rows = d_scatter_add_rows;
    t->ops.matmul_heads = d_matmul_heads;
    t->ops.copy_rows = d_copy_rows;
    t->ops.kv_store = d_kv_store;
    t->ops.attention = d_attention;
}

/* ---- cv_op -> ops (the inverse of the d_ functions above) ---- */

void cv_op_apply(const cv_backend_ops *ops, cv_backend *be, const cv_op *o) {
    switch ((cv_op_kind)o->kind) {
    case CV_OP_MATMUL: {
        const cv_tensor w = get_tensor(o);
        ops->matmul(be, &w, o->p[0], (float *)o->p[1], o->i[0]);
        break;
    }
    case CV_OP_GET_ROWS: {
        const cv_tensor t = get_tensor(o);
        ops->get_rows(be, &t, o->p[0], o->i[0], (float *)o->p[1]);
        break;
    }
    case CV_OP_RMSNORM:
        ops->rmsnorm(be, o->p[0], o->p[1], (float *)o->p[2], o->i[0], o->i[1], o->f[0], o->i[2]);
        break;
    case CV_OP_ROPE: {
        const cv_rope_params p = {.mode = (cv_rope_mode)o->i[3], .n_rot = o->i[4], .freq_base = o->f[1],
                                  .freq_scale = o->f[2], .freq_factors = o->p[4], .mscale = o->f[3],
                                  .ext_factor = o->f[4], .yarn_lo = o->f[5], .yarn_hi = o->f[6]};
        ops->rope(be, &p, (float *)o->p[0], o->i[0], o->i[1], o->i[2], o->p[1]);
        break;
    }
    case CV_OP_SOFTMAX: ops->softmax(be, (float *)o->p[0], o->i[0], o->i[1]); break;
    case CV_OP_GLU: ops->glu(be, (cv_glu_kind)o->i[0], o->p[0], o->p[1], (float *)o->p[2], o->l[0]); break;
    case CV_OP_ADD: ops->add(be, o->p[0], o->p[1], (float *)o->p[2], o->l[0]); break;
    case CV_OP_SCALE: ops->scale(be, (float *)o->p[0], o->f[0], o->l[0]); break;
    case CV_OP_SOFTCAP: ops->softcap(be, (float *)o->p[0], o->f[0], o->l[0]); break;
    case CV_OP_ADD_BIAS: ops->add_bias(be, (float *)o->p[0], o->p[1], o->i[0], o->i[1]); break;
    case CV_OP_SCATTER_ADD_ROWS:
        ops->scatter_add_rows(be, o->p[0], o->p[1], o->p[2], o->i[0], o->i[1], (float *)o->p[3]);
        break;
    case CV_OP_MATMUL_HEADS: {
        const cv_tensor w = get_tensor(o);
        ops->matmul_heads(be, &w, o->i[1], o->p[0], o->i[2], (float *)o->p[1], o->i[5], o->i[0]);
        break;
    }
    case CV_OP_COPY_ROWS: ops->copy_rows(be, o->p[0], o->i[0], (float *)o->p[1], o->i[1], o->i[2], o->l[0]); break;
    case CV_OP_KV_STORE: {
        const cv_kv_layer kv = get_kv(o);
        ops->kv_store(be, &kv, o->p[0], o->i[0], o->p[1], o->p[2]);
        break;
    }
    case CV_OP_ATTENTION: {
        const cv_kv_layer kv = get_kv(o);
        const cv_attn_params p = {.n_heads = o->i[1], .scale = o->f[0], .softcap = o->f[1]};
        ops->attention(be, &p, &kv, o->p[0], o->i[0], o->p[1], (float *)o->p[2]);
        break;
    }
    }
}

/* ---- tapes ---- */

/* Mixes the op's bytes (a whole number of 8-byte words) into the running hash. */
static uint64_t mix(uint64_t h, const cv_op *op) {
    uint64_t w[sizeof(cv_op) / sizeof(uint64_t)];
    memcpy(w, op, sizeof w);
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
        h ^= w[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

cv_status cv_op_tape_push(cv_op_tape *t, const cv_op *op, cv_error *err) {
    if (t->n == t->cap) {
        int32_t cap = t->cap ? 2 * t->cap : 256;
        cv_op *ops = cap <= CV_OP_TAPE_MAX ? realloc(t->ops, (size_t)cap * sizeof *ops) : NULL;
        if (!ops) return cv_errorf(err, CV_ENOMEM, "op tape: out of memory for %d ops", cap);
        t->ops = ops;
        t->cap = cap;
    }
    if (t->n == 0) t->hash = 0xcbf29ce484222325ULL;
    memcpy(&t->ops[t->n++], op, sizeof *op);
    t->hash = mix(t->hash, op);
    return CV_OK;
}

void cv_op_tape_clear(cv_op_tape *t) {
    t->n = 0;
    t->hash = 0;
}

void cv_op_tape_free(cv_op_tape *t) {
    free(t->ops);
    memset(t, 0, sizeof *t);
}

int cv_op_tape_equal(const cv_op_tape *a, const cv_op_tape *b) {
    return a->n == b->n && a->hash == b->hash &&
           (a->n == 0 || memcmp(a->ops, b->ops, (size_t)a->n * sizeof *a->ops) == 0);
}

void cv_op_tape_apply(const cv_op_tape *t, const cv_backend_ops *ops, cv_backend *be) {
    for (int32_t i = 0; i < t->n; i++) cv_op_apply(ops, be, &t->ops[i]);
}
