/* cpu_profile: CORVID_PROFILE=1 times every op of a CPU backend (cpu_profile.h). */
#include "cpu_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "matmul_dispatch.h"

enum {
    S_GET_ROWS = CV_TYPE_COUNT * CV_MM_CLASSES, S_RMSNORM, S_ROPE, S_SOFTMAX, S_GLU, S_ADD, S_SCALE, S_SOFTCAP,
    S_ADD_BIAS, S_SCATTER, S_KV_STORE, S_ATTENTION, S_COUNT
};
static const char *const k_names[] = {"get_rows", "rmsnorm", "rope",     "softmax",  "glu",       "add",
                                      "scale",    "softcap", "add_bias", "scatter",  "kv_store",  "attention"};

/* Process-wide sums (tensor-parallel ranks add up); ops of one backend run on one
 * thread, and several profiled backends at once only blur the figures. */
static struct {
    const cv_backend_ops *inner;
    cv_backend_ops ops;
    double s[S_COUNT], bytes[S_COUNT], gap_s, last_end;
    long calls[S_COUNT];
} g;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The time since the previous op ended (host work between ops: the model's own code,
 * sampling) is the gap; a pause of over 10 ms is idling, not a step's cost. */
static double begin(void) {
    double t = now();
    if (g.last_end > 0 && t - g.last_end < 0.01) g.gap_s += t - g.last_end;
    return t;
}

static void end(int slot, double t0, double bytes) {
    g.last_end = now();
    g.s[slot] += g.last_end - t0;
    g.bytes[slot] += bytes;
    g.calls[slot]++;
}

static void p_matmul(cv_backend *be, const cv_tensor *w, const float *x, float *y, int32_t n) {
    double t0 = begin();
    g.inner->matmul(be, w, x, y, n);
    int slot = ((unsigned)w->type < CV_TYPE_COUNT ? (int)w->type : 0) * CV_MM_CLASSES + cv_matmul_class(n);
    end(slot, t0, (double)w->rows * (double)cv_type_row_bytes(w->type, w->cols));
}

/* One region for all the weights: its time is shared among them by weight bytes. */
static void p_matmul_multi(cv_backend *be, int32_t count, const cv_tensor *const *w, const float *x,
                           float *const *y, int32_t n) {
    double t0 = begin(), total = 0, bytes[CV_MATMUL_MULTI_MAX];
    g.inner->matmul_multi(be, count, w, x, y, n);
    g.last_end = now();
    for (int32_t i = 0; i < count && i < CV_MATMUL_MULTI_MAX; i++)
        total += bytes[i] = (double)w[i]->rows * (double)cv_type_row_bytes(w[i]->type, w[i]->cols);
    for (int32_t i = 0; i < count && i < CV_MATMUL_MULTI_MAX; i++) {
        int slot = ((unsigned)w[i]->type < CV_TYPE_COUNT ? (int)w[i]->type : 0) * CV_MM_CLASSES + cv_matmul_class(n);
        g.s[slot] += (g.last_end - t0) * (total > 0 ? bytes[i] / total : 0);
        g.bytes[slot] += bytes[i];
        g.calls[slot]++;
    }
}

#define WRAP(name, slot, params, args)        \
    static void p_##name params {             \
        double t0 = begin();                  \
        g.inner->name args;                   \
        end(slot, t0, 0);                     \
    }
WRAP(get_rows, S_GET_ROWS, (cv_backend *be, const cv_tensor *t, const int32_t *ids, int32_t n, float *out),
     (be, t, ids, n, out))
WRAP(rmsnorm, S_RMSNORM,
     (cv_backend *be, const float *x, const float *w, float *y, int32_t r, int32_t d, float eps, int one),
     (be, x, w, y, r, d, eps, one))
WRAP(rope, S_ROPE, (cv_backend *be, const cv_rope_params *p, float *x, int32_t nt, int32_t nh, int32_t hd,
                    const int32_t *pos), (be, p, x, nt, nh, hd, pos))
WRAP(softmax, S_SOFTMAX, (cv_backend *be, float *x, int32_t r, int32_t n), (be, x, r, n))
WRAP(glu, S_GLU, (cv_backend *be, cv_glu_kind k, const float *a, const float *b, float *o, int64_t n),
     (be, k, a, b, o, n))
WRAP(add, S_ADD, (cv_backend *be, const float *a, const float *b, float *o, int64_t n), (be, a, b, o, n))
WRAP(scale, S_SCALE, (cv_backend *be, float *x, float s, int64_t n), (be, x, s, n))
WRAP(softcap, S_SOFTCAP, (cv_backend *be, float *x, float c, int64_t n), (be, x, c, n))
WRAP(add_bias, S_ADD_BIAS, (cv_backend *be, float *x, const float *b, int32_t r, int32_t n), (be, x, b, r, n))
WRAP(scatter_add_rows, S_SCATTER,
     (cv_backend *be, const float *s, const int32_t *ids, const float *w, int32_t n, int32_t d, float *o),
     (be, s, ids, w, n, d, o))
WRAP(kv_store, S_KV_STORE,
     (cv_backend *be, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n, const float *k, const float *v),
     (be, kv, rows, n, k, v))
WRAP(attention, S_ATTENTION,
     (cv_backend *be, const cv_attn_params *p, const cv_kv_layer *kv, const cv_attn_row *rows, int32_t n,
      const float *q, float *out),
     (be, p, kv, rows, n, q, out))
#undef WRAP

int cv_cpu_profile_enabled(void) {
    const char *e = getenv("CORVID_PROFILE");
    return e && *e && strcmp(e, "0");
}

const cv_backend_ops *cv_cpu_profile_ops(const cv_backend_ops *inner) {
    g.inner = inner;
    g.ops = *inner;
    g.ops.matmul = p_matmul;
    if (inner->matmul_multi) g.ops.matmul_multi = p_matmul_multi;
    g.ops.get_rows = p_get_rows;
    g.ops.rmsnorm = p_rmsnorm;
    g.ops.rope = p_rope;
    g.ops.softmax = p_softmax;
    g.ops.glu = p_glu;
    g.ops.add = p_add;
    g.ops.scale = p_scale;
    g.ops.softcap = p_softcap;
    g.ops.add_bias = p_add_bias;
    g.ops.scatter_add_rows = p_scatter_add_rows;
    g.ops.kv_store = p_kv_store;
    g.ops.attention = p_attention;
    return &g.ops;
}

void cv_cpu_profile_report(double pool_wait_s) {
    double total = g.gap_s;
    for (int i = 0; i < S_COUNT; i++) total += g.s[i];
    if (total <= 0) return;
    fprintf(stderr, "{\"profile\":{\"total_ms\":%.3f,\"gap_ms\":%.3f,\"pool_wait_ms\":%.3f,\"ops\":{", total * 1e3,
            g.gap_s * 1e3, pool_wait_s * 1e3);
    int first = 1;
    for (int i = 0; i < S_COUNT; i++) {
        if (!g.calls[i]) continue;
        char name[48];
        if (i < S_GET_ROWS) {
            static const char *const cls[CV_MM_CLASSES] = {"b1", "small", "large"};
            snprintf(name, sizeof name, "matmul %s %s", cv_type_get((cv_type)(i / CV_MM_CLASSES))->name,
                     cls[i % CV_MM_CLASSES]);
        } else {
            snprintf(name, sizeof name, "%s", k_names[i - S_GET_ROWS]);
        }
        fprintf(stderr, "%s\"%s\":{\"ms\":%.3f,\"calls\":%ld,\"share\":%.4f", first ? "" : ",", name, g.s[i] * 1e3,
                g.calls[i], g.s[i] / total);
        if (g.bytes[i] > 0) fprintf(stderr, ",\"weight_gbs\":%.2f", g.bytes[i] / g.s[i] / 1e9);
        fprintf(stderr, "}");
        first = 0;
    }
    fprintf(stderr, "}}}\n");
}
