/* AVX2/FMA/F16C kernels of the CPU backend (compiled with -mavx2 -mfma -mf16c; used
 * only when the CPU has them). Same contracts as the reference in cpu_ops.c; exp and
 * tanh are polynomial/rational approximations accurate to a few ulp. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_ops.h"

/* ---- vector math ---------------------------------------------------------------- */

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for exactness), a degree-6
 * polynomial for e^r and 2^n built in the exponent bits. Inputs are clamped to the
 * range where the result is a finite normal or 0. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-86.5f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n may be 128 at the top of the range: scale by 2^(n-1) twice. */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126)), 23);
    return _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_set1_ps(2.0f));
}

/* tanh as a rational function of degree 13/6 (Eigen's float coefficients), clamped
 * where it rounds to +-1. */
static inline __m256 tanh256(__m256 x) {
    const __m256 lim = _mm256_set1_ps(7.90531110763549805f);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));
    return _mm256_div_ps(p, q);
}

/* x * sigmoid(k x') with x' = x for silu and the GELU polynomial for gelu: both are
 * x / (1 + e^-z). */
static inline __m256 silu256(__m256 x) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). */
static inline __m256 gelu256(__m256 x) {
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 u = _mm256_mul_ps(x, _mm256_fmadd_ps(x2, _mm256_set1_ps(0.044715f), _mm256_set1_ps(1.0f)));
    __m256 e = exp256(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f * 0.7978845608028654f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* ---- row kernels ---------------------------------------------------------------- */

static void rmsnorm_row(const float *x, const float *w, float *y, int32_t dim, float eps, float add_one) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    float ss = hsum(_mm256_add_ps(a0, a1));
    for (; i < dim; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / dim + eps);
    __m256 vr = _mm256_set1_ps(r), one = _mm256_set1_ps(add_one);
    for (i = 0; i + 8 <= dim; i += 8) {
        __m256 ww = _mm256_add_ps(_mm256_loadu_ps(w + i), one);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), ww));
    }
    for (; i < dim; i++) y[i] = x[i] * r * (w[i] + add_one);
}

static void softmax_row(float *x, int32_t n) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float m = hmax(vm);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 vs = _mm256_setzero_ps();
    vm = _mm256_set1_ps(m);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = hsum(vs);
    for (; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1.0f / s;
}

static void glu(cv_glu_kind kind, const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
    if (kind == CV_GLU_GEGLU) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(gelu256(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
        for (; i < n; i++) out[i] = cv_gelu_tanh_ref(gate[i]) * up[i];
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(silu256(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
        for (; i < n; i++) out[i] = cv_silu_ref(gate[i]) * up[i];
    }
}

static void add(const float *a, const float *b, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) out[i] = a[i] + b[i];
}

static void scale(float *x, float s, int64_t n) {
    __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
    for (; i < n; i++) x[i] *= s;
}

static void axpy(float a, const float *x, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

static void softcap(float *x, float c, int64_t n) {
    __m256 vc = _mm256_set1_ps(c), inv = _mm256_set1_ps(1.0f / c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(vc, tanh256(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv))));
    for (; i < n; i++) x[i] = c * tanhf(x[i] / c);
}

static void rope_token(cv_rope_mode mode, int32_t n_rot, const float *cs, float *x, int32_t n_heads,
                       int32_t head_dim) {
    int32_t half = n_rot / 2;
    if (mode == CV_ROPE_NEOX) {
        float c[CV_ROPE_MAX_ROT / 2], s[CV_ROPE_MAX_ROT / 2];
        for (int32_t i = 0; i < half; i++) {
            c[i] = cs[2 * i];
            s[i] = cs[2 * i + 1];
        }
        for (int32_t h = 0; h < n_heads; h++) {
            float *a = x + (int64_t)h * head_dim, *b = a + half;
            int32_t i = 0;
            for (; i + 8 <= half; i += 8) {
                __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
                __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
                _mm256_storeu_ps(a + i, _mm256_fmsub_ps(va, vc, _mm256_mul_ps(vb, vs)));
                _mm256_storeu_ps(b + i, _mm256_fmadd_ps(va, vs, _mm256_mul_ps(vb, vc)));
            }
            for (; i < half; i++) {
                float x0 = a[i], x1 = b[i];
                a[i] = x0 * c[i] - x1 * s[i];
                b[i] = x0 * s[i] + x1 * c[i];
            }
        }
        return;
    }
    for (int32_t h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        int32_t i = 0;
        /* Lanes hold (x0, x1) pairs; fmaddsub gives x0 c - x1 s in even lanes and
         * x1 c + x0 s in odd ones. */
        for (; i + 8 <= n_rot; i += 8) {
            __m256 vx = _mm256_loadu_ps(v + i), vcs = _mm256_loadu_ps(cs + i);
            __m256 vc = _mm256_moveldup_ps(vcs), vs = _mm256_movehdup_ps(vcs);
            __m256 sw = _mm256_permute_ps(vx, 0xB1);
            _mm256_storeu_ps(v + i, _mm256_fmaddsub_ps(vx, vc, _mm256_mul_ps(sw, vs)));
        }
        for (; i < n_rot; i += 2) {
            float x0 = v[i], x1 = v[i + 1], c = cs[i], s = cs[i + 1];
            v[i] = x0 * c - x1 * s;
            v[i + 1] = x0 * s + x1 * c;
        }
    }
}

static void kv_put(cv_type type, const float *src, void *dst, int32_t n) {
    if (type == CV_TYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = cv_fp32_to_fp16(src[i]);
}

/* ---- attention ------------------------------------------------------------------ */

/* Positions are visited in chunks: scores of a chunk for every head of the group, then
 * an online softmax (running max m and sum l, earlier output rescaled when m grows),
 * so no buffer depends on the context length. */
#define ATTN_CHUNK 64

static inline __m256 load8(cv_type t, const void *base, int32_t d) {
    if (t == CV_TYPE_F32) return _mm256_loadu_ps((const float *)base + d);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + d)));
}

static inline float load1(cv_type t, const void *base, int32_t d) {
    return t == CV_TYPE_F32 ? ((const float *)base)[d] : cv_fp16_to_fp32(((const uint16_t *)base)[d]);
}

/* Scores of nk (1, 2) consecutive keys ks[0..nk) against nj (1..4) heads' queries, into
 * sc[j * ATTN_CHUNK + i] (the caller's sc[j0 + j][t + i]): 8 lanes of partial sums per
 * head and key over the key's whole 8-lane pieces (each query piece loaded once for
 * both keys), their sum, the scalar tail, times scale. */
static inline __attribute__((always_inline)) void score_heads(const int nj, const int nk, cv_type type,
                                                              const void *const *ks, int32_t hd,
                                                              const float *const *qh, float scale_, float *sc) {
    const int32_t hd8 = hd & ~7;
    __m256 acc[2][4], kk[2];
#pragma GCC unroll 2 /* -O2 would keep acc in memory */
    for (int i = 0; i < nk; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) acc[i][j] = _mm256_setzero_ps();
    for (int32_t d = 0; d < hd8; d += 8) {
#pragma GCC unroll 2
        for (int i = 0; i < nk; i++) kk[i] = load8(type, ks[i], d);
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            __m256 qq = _mm256_loadu_ps(qh[j] + d);
#pragma GCC unroll 2
            for (int i = 0; i < nk; i++) acc[i][j] = _mm256_fmadd_ps(qq, kk[i], acc[i][j]);
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < nk; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            float s = hsum(acc[i][j]);
            for (int32_t d = hd8; d < hd; d++) s += qh[j][d] * load1(type, ks[i], d);
            sc[j * ATTN_CHUNK + i] = s * scale_;
        }
}

/* Lanes d0 .. d0 + 8 np - 1 of nj (1..4) heads' outputs: oh[j] += sc[j][t] * value t
 * over the chunk's cn positions, the sums in registers (nj x np <= 8 of them), each
 * piece of a value converted once for all nj heads. Per head and lane: the same
 * multiply-adds in the same order as a head alone. */
static inline __attribute__((always_inline)) void add_values(const int nj, const int np, cv_type type,
                                                             const void *const *vs, int32_t cn,
                                                             const float (*sc)[ATTN_CHUNK], float *const *oh,
                                                             int32_t d0) {
    __m256 o[4][4], v[4];
#pragma GCC unroll 4
    for (int j = 0; j < nj; j++)
#pragma GCC unroll 4
        for (int i = 0; i < np; i++) o[j][i] = _mm256_loadu_ps(oh[j] + d0 + 8 * i);
    for (int32_t t = 0; t < cn; t++) {
#pragma GCC unroll 4
        for (int i = 0; i < np; i++) v[i] = load8(type, vs[t], d0 + 8 * i);
#pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            __m256 w = _mm256_set1_ps(sc[j][t]);
#pragma GCC unroll 4
            for (int i = 0; i < np; i++) o[j][i] = _mm256_fmadd_ps(w, v[i], o[j][i]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nj; j++)
#pragma GCC unroll 4
        for (int i = 0; i < np; i++) _mm256_storeu_ps(oh[j] + d0 + 8 * i, o[j][i]);
}

static void attn_group(const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *row, int32_t g,
                       int32_t h0, int32_t n_group, const float *q, float *out) {
    const int32_t hd = kv->head_dim, vd = cv_kv_v_dim(kv), vd8 = vd & ~7;
    const size_t esz = kv->type == CV_TYPE_F32 ? 4 : 2;
    const size_t slot_bytes = (size_t)kv->n_kv_heads * hd * esz;
    const char *kbase = (const char *)kv->k + (size_t)g * hd * esz;
    const char *vbase = (const char *)kv->v + (size_t)g * hd * esz;
    float sc[CV_ATTN_MAX_GROUP][ATTN_CHUNK];
    float m[CV_ATTN_MAX_GROUP], l[CV_ATTN_MAX_GROUP];
    const float *qh[CV_ATTN_MAX_GROUP];
    float *oh[CV_ATTN_MAX_GROUP];
    for (int32_t j = 0; j < n_group; j++) {
        qh[j] = q + (int64_t)(h0 + j) * hd;
        oh[j] = out + (int64_t)(h0 + j) * vd;
        memset(oh[j], 0, (size_t)vd * sizeof(float));
        m[j] = -INFINITY;
        l[j] = 0;
    }
    for (int32_t p0 = row->lo; p0 <= row->pos; p0 += ATTN_CHUNK) {
        int32_t cn = row->pos + 1 - p0 < ATTN_CHUNK ? row->pos + 1 - p0 : ATTN_CHUNK;
        const void *ks[ATTN_CHUNK], *vs[ATTN_CHUNK];
        for (int32_t t = 0; t < cn; t++) {
            int32_t pp = p0 + t;
            size_t slot = (size_t)row->block_table[pp / kv->block_size] * kv->block_size + pp % kv->block_size;
            ks[t] = kbase + slot * slot_bytes;
            vs[t] = vbase + slot * slot_bytes;
        }
        /* Paged slots are scattered: ask for all of the chunk's keys and values at once,
         * so that their misses overlap instead of each load waiting on its own. */
        for (int32_t t = 0; t < cn; t++)
            for (size_t o = 0; o < (size_t)hd * esz; o += 64) {
                _mm_prefetch((const char *)ks[t] + o, _MM_HINT_T0);
                if (vs[t] != ks[t] && o < (size_t)vd * esz) _mm_prefetch((const char *)vs[t] + o, _MM_HINT_T0);
            }
        /* Two keys and up to four heads at a time: each converted piece of a key serves
         * the heads, each loaded piece of a query both keys. The counts are constants
         * in each call, so that the sums stay in registers. */
        for (int32_t t = 0; t < cn; t += 2) {
            const int two = t + 1 < cn;
            for (int32_t j0 = 0; j0 < n_group; j0 += 4) {
                int32_t nj = n_group - j0 < 4 ? n_group - j0 : 4;
                float *o = &sc[j0][t];
                if (two) switch (nj) {
                    case 4: score_heads(4, 2, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    case 3: score_heads(3, 2, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    case 2: score_heads(2, 2, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    default: score_heads(1, 2, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    }
                else switch (nj) {
                    case 4: score_heads(4, 1, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    case 3: score_heads(3, 1, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    case 2: score_heads(2, 1, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    default: score_heads(1, 1, kv->type, ks + t, hd, qh + j0, p->scale, o); break;
                    }
            }
        }
        for (int32_t j = 0; j < n_group; j++) {
            float *s = sc[j];
            if (p->softcap > 0) {
                int32_t t = 0;
                __m256 vc = _mm256_set1_ps(p->softcap), inv = _mm256_set1_ps(1.0f / p->softcap);
                for (; t + 8 <= cn; t += 8)
                    _mm256_storeu_ps(s + t, _mm256_mul_ps(vc, tanh256(_mm256_mul_ps(_mm256_loadu_ps(s + t), inv))));
                for (; t < cn; t++) s[t] = p->softcap * tanhf(s[t] / p->softcap);
            }
            float cmax = m[j];
            for (int32_t t = 0; t < cn; t++) cmax = s[t] > cmax ? s[t] : cmax;
            if (cmax > m[j]) {
                float corr = m[j] == -INFINITY ? 0.0f : expf(m[j] - cmax);
                l[j] *= corr;
                if (corr != 1.0f) scale(oh[j], corr, vd);
                m[j] = cmax;
            }
            __m256 vm = _mm256_set1_ps(m[j]), vsum = _mm256_setzero_ps();
            int32_t t = 0;
            for (; t + 8 <= cn; t += 8) {
                __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
                _mm256_storeu_ps(s + t, e);
                vsum = _mm256_add_ps(vsum, e);
            }
            float sum = hsum(vsum);
            for (; t < cn; t++) {
                s[t] = expf(s[t] - m[j]);
                sum += s[t];
            }
            l[j] += sum;
        }
        /* The outputs stay in registers across the chunk's positions, 32 lanes of up to 2
         * heads or 16 of up to 4 at a time, so that each piece of a value is converted
         * once for them. */
        int32_t d0 = 0;
        if (n_group <= 2) {
            for (; d0 + 32 <= vd8; d0 += 32) {
                if (n_group == 2) add_values(2, 4, kv->type, vs, cn, sc, oh, d0);
                else add_values(1, 4, kv->type, vs, cn, sc, oh, d0);
            }
        } else {
            for (int32_t j0 = 0; j0 < n_group; j0 += 4) {
                int32_t nj = n_group - j0 < 4 ? n_group - j0 : 4;
                for (d0 = 0; d0 + 16 <= vd8; d0 += 16) switch (nj) {
                    case 4: add_values(4, 2, kv->type, vs, cn, sc + j0, oh + j0, d0); break;
                    case 3: add_values(3, 2, kv->type, vs, cn, sc + j0, oh + j0, d0); break;
                    case 2: add_values(2, 2, kv->type, vs, cn, sc + j0, oh + j0, d0); break;
                    default: add_values(1, 2, kv->type, vs, cn, sc + j0, oh + j0, d0); break;
                    }
            }
        }
        for (; d0 < vd8; d0 += 8)
            for (int32_t j = 0; j < n_group; j++) {
                __m256 o = _mm256_loadu_ps(oh[j] + d0);
                for (int32_t t = 0; t < cn; t++)
                    o = _mm256_fmadd_ps(_mm256_set1_ps(sc[j][t]), load8(kv->type, vs[t], d0), o);
                _mm256_storeu_ps(oh[j] + d0, o);
            }
        for (int32_t t = 0; t < cn; t++) {
            for (int32_t d = vd8; d < vd; d++) {
                float vv = load1(kv->type, vs[t], d);
                for (int32_t j = 0; j < n_group; j++) oh[j][d] += sc[j][t] * vv;
            }
        }
    }
    for (int32_t j = 0; j < n_group; j++) scale(oh[j], 1.0f / l[j], vd);
}

const cv_cpu_kernels cv_cpu_kernels_avx2 = {
    .name = "avx2",
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
