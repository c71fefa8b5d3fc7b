/* Scalar reference kernels of the CPU backend: plain loops in the order the maths is
 * written, accumulating in float (double for the sums where it is free), so that the
 * fast kernels have something unambiguous to be compared with. */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

float cv_silu_ref(float x) { return x / (1.0f + expf(-x)); }

/* ggml_gelu's tanh approximation. */
float cv_gelu_tanh_ref(float x) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

void cv_rope_angles(const cv_rope_params *p, int32_t pos, float *cs) {
    const double ms = p->mscale != 0 ? p->mscale : 1.0;
    for (int32_t i = 0; i < p->n_rot / 2; i++) {
        double theta = (double)pos * p->freq_scale * pow(p->freq_base, -2.0 * i / p->n_rot);
        if (p->freq_factors) theta /= p->freq_factors[i];
        if (p->ext_factor != 0) {
            const double mix = cv_rope_yarn_mix(p, i);
            theta = theta * (1 - mix) + theta / p->freq_scale * mix;
        }
        cs[2 * i] = (float)(cos(theta) * ms);
        cs[2 * i + 1] = (float)(sin(theta) * ms);
    }
}

static void rmsnorm_row(const float *x, const float *w, float *y, int32_t dim, float eps, float add_one) {
    double ss = 0;
    for (int32_t i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / dim + eps));
    for (int32_t i = 0; i < dim; i++) y[i] = x[i] * r * (w[i] + add_one);
}

static void softmax_row(float *x, int32_t n) {
    float m = -INFINITY;
    for (int32_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int32_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (int32_t i = 0; i < n; i++) x[i] *= inv;
}

static void glu(cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = (kind == CV_GLU_GEGLU ? cv_gelu_tanh_ref(gate[i]) : cv_silu_ref(gate[i])) * up[i];
}

static void add(const float *a, const float *b, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void scale(float *x, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static void axpy(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void softcap(float *x, float c, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = c * tanhf(x[i] / c);
}

static void rope_token(cv_rope_mode mode, int32_t n_rot, const float *cs, float *x, int32_t n_heads,
                       int32_t head_dim) {
    for (int32_t h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int32_t i = 0; i < n_rot / 2; i++) {
            int32_t a = mode == CV_ROPE_NEOX ? i : 2 * i;
            int32_t b = mode == CV_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
            float c = cs[2 * i], s = cs[2 * i + 1];
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

static void kv_put(cv_type type, const float *src, void *dst, int32_t n) {
    if (type == CV_TYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    for (int32_t i = 0; i < n; i++) d[i] = cv_fp32_to_fp16(src[i]);
}

/* Pointer to the slot of position p for KV head g in pool base. */
static const void *kv_slot(const cv_kv_layer *kv, const void *base, const cv_attn_row *row, int32_t p,
                           int32_t g) {
    int64_t block = row->block_table[p / kv->block_size];
    int64_t idx = ((block * kv->block_size + p % kv->block_size) * kv->n_kv_heads + g) * kv->head_dim;
    size_t esz = kv->type == CV_TYPE_F32 ? 4 : 2;
    return (const char *)base + idx * esz;
}

static float kv_get(cv_type type, const void *slot, int32_t d) {
    return type == CV_TYPE_F32 ? ((const float *)slot)[d] : cv_fp16_to_fp32(((const uint16_t *)slot)[d]);
}

static float score(const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *row, int32_t pos,
                   int32_t g, const float *q) {
    const void *k = kv_slot(kv, kv->k, row, pos, g);
    float s = 0;
    for (int32_t d = 0; d < kv->head_dim; d++) s += q[d] * kv_get(kv->type, k, d);
    s *= p->scale;
    if (p->softcap > 0) s = p->softcap * tanhf(s / p->softcap);
    return s;
}

/* Three passes over the positions (max, sum, weighted V) so that it needs no buffer. */
static void attn_group(const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *row, int32_t g,
                       int32_t h0, int32_t n_group, const float *q, float *out) {
    const int32_t hd = kv->head_dim, vd = cv_kv_v_dim(kv);
    for (int32_t h = h0; h < h0 + n_group; h++) {
        const float *qh = q + (int64_t)h * hd;
        float *oh = out + (int64_t)h * vd;
        float m = -INFINITY;
        for (int32_t t = row->lo; t <= row->pos; t++) {
            float s = score(p, kv, row, t, g, qh);
            m = s > m ? s : m;
        }
        double sum = 0;
        for (int32_t t = row->lo; t <= row->pos; t++) sum += expf(score(p, kv, row, t, g, qh) - m);
        for (int32_t d = 0; d < vd; d++) oh[d] = 0;
        for (int32_t t = row->lo; t <= row->pos; t++) {
            float w = (float)(expf(score(p, kv, row, t, g, qh) - m) / sum);
            const void *v = kv_slot(kv, kv->v, row, t, g);
            for (int32_t d = 0; d < vd; d++) oh[d] += w * kv_get(kv->type, v, d);
        }
    }
}

const cv_cpu_kernels cv_cpu_kernels_ref = {
    .name = "scalar",
    .rmsnorm_row = rmsnorm_row,
    .softmax_row = softmax_row,
    .glu = glu,
    .add = add,
    .scale = scale,
    .axpy = axpy,
    .softcap = softcap,
    .rope_token = rope_token,
    .kv_put = kv_put,
    .attn_group = attn_group,
};
