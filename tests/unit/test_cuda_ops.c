/* Every op of the CUDA backend against the CPU backend (the reference semantics) on
 * fresh random data, with the device outputs poisoned (NaN bytes) before each op, so
 * an op that writes nothing cannot pass; then CUDA graphs: graph steps of plain ops,
 * and whole decode steps of two models (stories260K from tests/data, odd widths
 * and F32; a synthetic Q4_K_M llama) replayed from graphs against the same steps run
 * op by op (bit for bit) and on the CPU (within a budget), across a step where a block
 * table grows. Needs a CUDA build and a GPU: without a CUDA build, or with no device
 * (no GPU: cudaErrorNoDevice, or no usable driver: cudaErrorInsufficientDriver), the
 * GPU cases print a SKIP line naming which and are not registered, and what runs
 * checks that the backend refuses to start with that message. CORVID_TEST_SEED=N
 * replays a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_backend.h"
#include "cuda_backend.h"
#include "generate.h"
#include "gguf.h"
#include "kv_cache.h"
#include "model.h"
#include "quant.h"
#include "synthetic.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"
#include "../support/test_data.h"

static cv_test_rng g_rng;
static cv_backend *g_cpu, *g_gpu;

static float frand(float a) {
    return (float)((double)(cv_test_rng_next(&g_rng) >> 11) / 9007199254740992.0 * 2 - 1) * a;
}

static float *fill(int64_t n, float a) {
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < n; i++) x[i] = frand(a);
    return x;
}

/* ---- device helpers ---- */

static void *to_dev(const void *host, size_t bytes) {
    void *d = NULL;
    cv_error err = {0};
    if (g_gpu->ops->alloc(g_gpu, bytes, &d, &err) || g_gpu->ops->upload(g_gpu, d, host, bytes, &err))
        fail_msg("device copy of %zu bytes: %s", bytes, err.msg);
    return d;
}

/* A device buffer of n floats, every byte 0xFF (a NaN in every element). */
static float *poisoned(int64_t n) {
    size_t bytes = (size_t)n * sizeof(float);
    unsigned char *h = malloc(bytes);
    assert_non_null(h);
    memset(h, 0xFF, bytes);
    float *d = to_dev(h, bytes);
    free(h);
    return d;
}

static float *from_dev(const float *d, int64_t n) {
    float *h = malloc((size_t)n * sizeof *h);
    assert_non_null(h);
    cv_error err = {0};
    if (g_gpu->ops->synchronize(g_gpu, &err) ||
        g_gpu->ops->download(g_gpu, h, d, (size_t)n * sizeof *h, &err))
        fail_msg("device op or download failed: %s", err.msg);
    return h;
}

static void dfree(void *d) { g_gpu->ops->free(g_gpu, d); }

/* max |got - want| <= budget * max(1, max |want|), and no NaN anywhere. */
static void assert_close(const float *got, const float *want, int64_t n, double budget, const char *what) {
    double scale = 1, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e, at = i;
    }
    if (!(worst <= budget * scale))
        fail_msg("%s: element %lld is %.8g, CPU says %.8g (error %.3g, budget %.3g x %.3g)", what, (long long)at,
                 got[at], want[at], worst, budget, scale);
}

/* ---- matmul and get_rows, per weight format ---- */

typedef struct fmt {
    cv_type type;
    double budget_small, budget_gemm; /* relative error vs the CPU dequantization */
} fmt;

/* The small-batch kernel dequantizes exactly and sums in float; the cuBLAS path rounds
 * weights and activations to FP16 (BF16 keeps BF16 with its 8-bit mantissa). */
static const fmt FORMATS[] = {
    {CV_TYPE_F32, 1e-5, 1e-5}, {CV_TYPE_F16, 1e-5, 4e-3},  {CV_TYPE_BF16, 1e-5, 3e-2},
    {CV_TYPE_Q4_0, 1e-5, 4e-3}, {CV_TYPE_Q5_0, 1e-5, 4e-3}, {CV_TYPE_Q8_0, 1e-5, 4e-3},
    {CV_TYPE_Q4_K, 1e-5, 4e-3}, {CV_TYPE_Q5_K, 1e-5, 4e-3}, {CV_TYPE_Q6_K, 1e-5, 4e-3},
};

static void check_matmul_type(const fmt *f, int64_t cols) {
    const int64_t rows = 72;
    const int32_t batches[] = {1, 3, 8, 16, 17, 40};
    const cv_type_info *ti = cv_type_get(f->type);
    size_t rb = cv_type_row_bytes(f->type, cols);
    float *wf = fill(rows * cols, 1.0f), *wd = malloc(sizeof(float) * rows * cols);
    unsigned char *wq = malloc(rb * rows);
    assert_true(wd && wq);
    for (int64_t r = 0; r < rows; r++) {
        cv_quantize_row(f->type, wf + r * cols, wq + r * rb, cols);
        cv_dequantize_row(f->type, wq + r * rb, wd + r * cols, cols);
    }
    cv_tensor host = {f->type, rows, cols, rb, wq, CV_DEVICE_CPU, 0}, w;
    cv_error err = {0};
    if (g_gpu->ops->weight_load(g_gpu, &host, &w, &err)) fail_msg("weight_load %s: %s", ti->name, err.msg);
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        int32_t n = batches[bi];
        float *x = fill(n * cols, 1.0f), *want = malloc(sizeof(float) * n * rows);
        assert_non_null(want);
        for (int32_t b = 0; b < n; b++)
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int64_t c = 0; c < cols; c++) s += (double)wd[r * cols + c] * x[b * cols + c];
                want[b * rows + r] = (float)s;
            }
        float *dx = to_dev(x, sizeof(float) * n * cols), *dy = poisoned(n * rows);
        g_gpu->ops->matmul(g_gpu, &w, dx, dy, n);
        float *got = from_dev(dy, n * rows);
        char what[64];
        snprintf(what, sizeof what, "matmul %s %lldx%lld B=%d", ti->name, (long long)rows, (long long)cols, n);
        assert_close(got, want, n * rows, n > CV_CUDA_SMALL_BATCH ? f->budget_gemm : f->budget_small, what);
        free(got), free(x), free(want), dfree(dx), dfree(dy);
    }
    /* get_rows: the embedding lookup of a few ids, repeated ones too */
    const int32_t ids[] = {5, 0, 71, 5, 33};
    const int32_t n = 5;
    int32_t *dids = to_dev(ids, sizeof ids);
    float *dout = poisoned(n * cols);
    g_gpu->ops->get_rows(g_gpu, &w, dids, n, dout);
    float *got = from_dev(dout, n * cols);
    for (int32_t i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "get_rows %s id %d", ti->name, ids[i]);
        assert_close(got + i * cols, wd + ids[i] * cols, cols, 1e-6, what);
    }
    free(got), dfree(dids), dfree(dout);
    g_gpu->ops->weight_release(g_gpu, &w);
    free(wf), free(wd), free(wq);
}

/* Float weights also at an odd width (stories260K's ffn_down is 172 wide), which the
 * kernels read element by element. */
static void test_matmul_and_get_rows(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++) {
        check_matmul_type(&FORMATS[i], 512);
        if (cv_type_get(FORMATS[i].type)->block_elems == 1) check_matmul_type(&FORMATS[i], 172);
    }
}

/* MLA's per-head matmul (strided slices of [tokens][heads][width]) against exact sums,
 * for a float and a block type, one token and many; the strided copy against the CPU. */
static void test_matmul_heads_copy_rows(void **state) {
    (void)state;
    const int32_t H = 4, R = 64, C = 64, xs = 96, ys = 80;
    const cv_type types[] = {CV_TYPE_F32, CV_TYPE_Q8_0};
    const int32_t batches[] = {1, 11};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const size_t rb = cv_type_row_bytes(types[ti], C);
        float *wf = fill((int64_t)H * R * C, 1.0f);
        unsigned char *wq = malloc(rb * (size_t)(H * R));
        assert_non_null(wq);
        for (int64_t r = 0; r < (int64_t)H * R; r++) {
            cv_quantize_row(types[ti], wf + r * C, wq + r * rb, C);
            cv_dequantize_row(types[ti], wq + r * rb, wf + r * C, C);
        }
        cv_tensor host = {types[ti], (int64_t)H * R, C, rb, wq, CV_DEVICE_CPU, 0}, dw;
        cv_error err = {0};
        if (g_gpu->ops->weight_load(g_gpu, &host, &dw, &err)) fail_msg("weight_load: %s", err.msg);
        for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
            const int32_t n = batches[bi];
            float *x = fill((int64_t)n * H * xs, 1.0f), *want = calloc((size_t)n * H * ys, sizeof(float));
            assert_non_null(want);
            float *dx = to_dev(x, sizeof(float) * n * H * xs), *dy = to_dev(want, sizeof(float) * n * H * ys);
            /* exact sums of the dequantized weights (the CPU would round Q8_0 activations) */
            for (int32_t t = 0; t < n; t++)
                for (int32_t h = 0; h < H; h++)
                    for (int32_t r = 0; r < R; r++) {
                        double acc = 0;
                        for (int32_t c = 0; c < C; c++)
                            acc += (double)wf[((int64_t)h * R + r) * C + c] * x[((int64_t)t * H + h) * xs + c];
                        want[((int64_t)t * H + h) * ys + r] = (float)acc;
                    }
            g_gpu->ops->matmul_heads(g_gpu, &dw, H, dx, xs, dy, ys, n);
            float *got = from_dev(dy, (int64_t)n * H * ys);
            assert_close(got, want, (int64_t)n * H * ys, 1e-5, "matmul_heads");
            /* the rope part of each head's row into the tail of a wider row */
            g_cpu->ops->copy_rows(g_cpu, x + C, xs, want + R, ys, 16, (int64_t)n * H);
            g_gpu->ops->copy_rows(g_gpu, dx + C, xs, dy + R, ys, 16, (int64_t)n * H);
            free(got);
            got = from_dev(dy, (int64_t)n * H * ys);
            assert_close(got, want, (int64_t)n * H * ys, 0, "copy_rows");
            free(got), free(x), free(want), dfree(dx), dfree(dy);
        }
        g_gpu->ops->weight_release(g_gpu, &dw);
        free(wf), free(wq);
    }
}

/* ---- row and element-wise ops against the CPU backend ---- */

static void test_rmsnorm_softmax(void **state) {
    (void)state;
    const int32_t n_rows = 7, dim = 640;
    for (int add_one = 0; add_one <= 1; add_one++) {
        float *x = fill(n_rows * dim, 3.0f), *w = fill(dim, 1.0f), *want = malloc(sizeof(float) * n_rows * dim);
        assert_non_null(want);
        g_cpu->ops->rmsnorm(g_cpu, x, w, want, n_rows, dim, 1e-5f, add_one);
        float *dx = to_dev(x, sizeof(float) * n_rows * dim), *dw = to_dev(w, sizeof(float) * dim);
        float *dy = poisoned(n_rows * dim);
        g_gpu->ops->rmsnorm(g_gpu, dx, dw, dy, n_rows, dim, 1e-5f, add_one);
        float *got = from_dev(dy, n_rows * dim);
        assert_close(got, want, n_rows * dim, 1e-5, "rmsnorm");
        free(got);
        /* in place, as the model does for QK-norm */
        g_gpu->ops->rmsnorm(g_gpu, dx, dw, dx, n_rows, dim, 1e-5f, add_one);
        got = from_dev(dx, n_rows * dim);
        assert_close(got, want, n_rows * dim, 1e-5, "rmsnorm in place");
        free(got);
        /* softmax of the same rows, scaled up so that the max subtraction matters */
        for (int64_t i = 0; i < n_rows * dim; i++) x[i] *= 20;
        float *dsm = to_dev(x, sizeof(float) * n_rows * dim);
        g_cpu->ops->softmax(g_cpu, x, n_rows, dim);
        g_gpu->ops->softmax(g_gpu, dsm, n_rows, dim);
        got = from_dev(dsm, n_rows * dim);
        assert_close(got, x, n_rows * dim, 1e-5, "softmax");
        free(got), free(x), free(w), free(want), dfree(dx), dfree(dw), dfree(dy), dfree(dsm);
    }
}

static void test_rope(void **state) {
    (void)state;
    const int32_t n_tokens = 5, n_heads = 4, head_dim = 64, n = n_tokens * n_heads * head_dim;
    const int32_t pos[] = {0, 1, 17, 300, 4095};
    float *ff = fill(head_dim / 2, 1.0f);
    for (int i = 0; i < head_dim / 2; i++) ff[i] = 1.0f + fabsf(ff[i]) * 7;
    float *dff = to_dev(ff, sizeof(float) * head_dim / 2);
    int32_t *dpos = to_dev(pos, sizeof pos);
    for (int mode = 0; mode < 2; mode++)
        for (int n_rot = 32; n_rot <= head_dim; n_rot += 32)
            for (int with_ff = 0; with_ff <= 2; with_ff++) {
                /* With factors, also Phi-3's attention factor on cos and sin; 2: YaRN's mix
                 * (ramp over pairs 2..9) instead, as deepseek2 turns. */
                cv_rope_params hp = {mode ? CV_ROPE_NEOX : CV_ROPE_NORM, n_rot, 10000.0f, 0.5f,
                                     with_ff == 1 ? ff : NULL, with_ff ? 1.19f : 0, with_ff == 2 ? 1.0f : 0, 2, 9};
                cv_rope_params dp = hp;
                dp.freq_factors = with_ff == 1 ? dff : NULL;
                float *x = fill(n, 2.0f);
                float *dx = to_dev(x, sizeof(float) * n);
                g_cpu->ops->rope(g_cpu, &hp, x, n_tokens, n_heads, head_dim, pos);
                g_gpu->ops->rope(g_gpu, &dp, dx, n_tokens, n_heads, head_dim, dpos);
                float *got = from_dev(dx, n);
                assert_close(got, x, n, 1e-5, mode ? "rope neox" : "rope norm");
                free(got), free(x), dfree(dx);
            }
    free(ff), dfree(dff), dfree(dpos);
}

static void test_elementwise(void **state) {
    (void)state;
    const int64_t n = 100003;
    float *a = fill(n, 6.0f), *b = fill(n, 2.0f), *want = malloc(sizeof(float) * n);
    assert_non_null(want);
    float *da = to_dev(a, sizeof(float) * n), *db = to_dev(b, sizeof(float) * n);
    for (int kind = 0; kind <= 1; kind++) {
        float *dout = poisoned(n);
        g_cpu->ops->glu(g_cpu, (cv_glu_kind)kind, a, b, want, n);
        g_gpu->ops->glu(g_gpu, (cv_glu_kind)kind, da, db, dout, n);
        float *got = from_dev(dout, n);
        assert_close(got, want, n, 1e-5, kind ? "geglu" : "swiglu");
        free(got), dfree(dout);
    }
    float *dout = poisoned(n);
    g_cpu->ops->add(g_cpu, a, b, want, n);
    g_gpu->ops->add(g_gpu, da, db, dout, n);
    float *got = from_dev(dout, n);
    assert_close(got, want, n, 1e-7, "add");
    free(got);
    /* scale, softcap and bias in place on the sum */
    memcpy(a, want, sizeof(float) * n);
    g_cpu->ops->scale(g_cpu, a, 0.37f, n);
    g_gpu->ops->scale(g_gpu, dout, 0.37f, n);
    g_cpu->ops->softcap(g_cpu, a, 1.5f, n);
    g_gpu->ops->softcap(g_gpu, dout, 1.5f, n);
    const int32_t width = 1001, n_rows = (int32_t)(n / width);
    float *bias = fill(width, 1.0f), *dbias = to_dev(bias, sizeof(float) * width);
    g_cpu->ops->add_bias(g_cpu, a, bias, n_rows, width);
    g_gpu->ops->add_bias(g_gpu, dout, dbias, n_rows, width);
    got = from_dev(dout, n);
    assert_close(got, a, n, 1e-6, "scale, softcap, add_bias");
    free(got), free(a), free(b), free(want), free(bias), dfree(da), dfree(db), dfree(dout), dfree(dbias);
}

/* ---- paged KV cache ---- */

/* Three sequences over shuffled blocks, each with a history and a chunk of new tokens
 * (a prefill of 20, a decode of 1, a chunk of 3); both backends store and attend the
 * same data, and the device pools must equal the host pools byte for byte. */
/* vd > 0: multi-head latent attention's one pool (v == k, values the first vd of each
 * key, kv_store without V). */
static void check_attention(cv_type kvt, int32_t n_heads, int32_t n_kv, int32_t hd, int32_t window, float softcap,
                            int32_t vd) {
    enum { NSEQ = 3, BS = 16, NBLK = 40 };
    const int32_t hist[NSEQ] = {0, 37, 70}, fresh[NSEQ] = {20, 1, 3};
    int32_t tables[NSEQ][NBLK], perm[NBLK];
    for (int i = 0; i < NBLK; i++) perm[i] = i;
    for (int i = NBLK - 1; i > 0; i--) {
        int j = (int)(cv_test_rng_next(&g_rng) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int used = 0;
    for (int s = 0; s < NSEQ; s++)
        for (int b = 0; b < (hist[s] + fresh[s] + BS - 1) / BS; b++) tables[s][b] = perm[used++];
    int32_t *dtables = to_dev(tables, sizeof tables);
    size_t esz = kvt == CV_TYPE_F32 ? 4 : 2, width = (size_t)n_kv * hd, pool = NBLK * BS * width * esz;
    cv_kv_layer hkv = {calloc(pool, 1), vd ? NULL : calloc(pool, 1), kvt, BS, n_kv, hd, vd};
    if (vd) hkv.v = hkv.k;
    assert_true(hkv.k && hkv.v);
    cv_kv_layer dkv = hkv;
    dkv.k = to_dev(hkv.k, pool), dkv.v = vd ? dkv.k : to_dev(hkv.v, pool);
    int32_t total = 0, maxlen = 0;
    for (int s = 0; s < NSEQ; s++) total += fresh[s], maxlen = hist[s] > maxlen ? hist[s] : maxlen;
    cv_attn_row *hrows = calloc((size_t)total, sizeof *hrows), *drows_h = calloc((size_t)total, sizeof *drows_h);
    cv_attn_row *hist_rows = calloc((size_t)maxlen + 1, sizeof *hist_rows);
    assert_true(hrows && drows_h && hist_rows);
    for (int s = 0, i = 0; s < NSEQ; s++) {
        /* the history goes in through both backends' kv_store */
        if (hist[s]) {
            float *k = fill((int64_t)hist[s] * width, 1.0f), *v = fill((int64_t)hist[s] * width, 1.0f);
            for (int32_t t = 0; t < hist[s]; t++) hist_rows[t] = (cv_attn_row){tables[s], t, 0};
            g_cpu->ops->kv_store(g_cpu, &hkv, hist_rows, hist[s], k, vd ? NULL : v);
            for (int32_t t = 0; t < hist[s]; t++) hist_rows[t].block_table = dtables + s * NBLK;
            cv_attn_row *dh = to_dev(hist_rows, sizeof *hist_rows * hist[s]);
            float *dk = to_dev(k, sizeof(float) * hist[s] * width), *dv = to_dev(v, sizeof(float) * hist[s] * width);
            g_gpu->ops->kv_store(g_gpu, &dkv, dh, hist[s], dk, vd ? NULL : dv);
            free(from_dev(dk, 1));
            free(k), free(v), dfree(dh), dfree(dk), dfree(dv);
        }
        for (int32_t t = 0; t < fresh[s]; t++, i++) {
            int32_t pos = hist[s] + t;
            hrows[i] = (cv_attn_row){tables[s], pos, window && pos - window + 1 > 0 ? pos - window + 1 : 0};
            drows_h[i] = hrows[i];
            drows_h[i].block_table = dtables + s * NBLK;
        }
    }
    cv_attn_row *drows = to_dev(drows_h, sizeof *drows_h * total);
    float *k = fill((int64_t)total * width, 1.0f), *v = fill((int64_t)total * width, 1.0f);
    float *dk = to_dev(k, sizeof(float) * total * width), *dv = to_dev(v, sizeof(float) * total * width);
    g_cpu->ops->kv_store(g_cpu, &hkv, hrows, total, k, vd ? NULL : v);
    g_gpu->ops->kv_store(g_gpu, &dkv, drows, total, dk, vd ? NULL : dv);
    for (int which = 0; which < (vd ? 1 : 2); which++) {
        unsigned char *got = malloc(pool);
        cv_error err = {0};
        assert_non_null(got);
        if (g_gpu->ops->download(g_gpu, got, which ? dkv.v : dkv.k, pool, &err)) fail_msg("%s", err.msg);
        if (memcmp(got, which ? hkv.v : hkv.k, pool) != 0)
            fail_msg("kv_store (%s pool, %s): device pool differs from the CPU's", which ? "V" : "K",
                     kvt == CV_TYPE_F16 ? "F16" : "F32");
        free(got);
    }
    cv_attn_params ap = {n_heads, 1.0f / sqrtf((float)hd), softcap};
    int64_t qw = (int64_t)n_heads * hd, ow = (int64_t)n_heads * (vd ? vd : hd);
    float *q = fill(total * qw, 1.5f), *want = malloc(sizeof(float) * total * ow);
    assert_non_null(want);
    float *dq = to_dev(q, sizeof(float) * total * qw), *dout = poisoned(total * ow);
    g_cpu->ops->attention(g_cpu, &ap, &hkv, hrows, total, q, want);
    g_gpu->ops->attention(g_gpu, &ap, &dkv, drows, total, dq, dout);
    float *got = from_dev(dout, total * ow);
    char what[96];
    snprintf(what, sizeof what, "attention %s heads %d/%d dim %d/%d window %d softcap %g",
             kvt == CV_TYPE_F16 ? "F16" : "F32", n_heads, n_kv, hd, vd ? vd : hd, window, softcap);
    assert_close(got, want, total * ow, 2e-5, what);
    free(got), free(q), free(want), free(k), free(v), free(hkv.k), free(hrows), free(drows_h), free(hist_rows);
    if (!vd) free(hkv.v), dfree(dkv.v);
    dfree(dq), dfree(dout), dfree(dk), dfree(dv), dfree(drows), dfree(dtables), dfree(dkv.k);
}

static void test_attention(void **state) {
    (void)state;
    check_attention(CV_TYPE_F16, 8, 2, 64, 0, 0, 0);
    check_attention(CV_TYPE_F32, 8, 8, 128, 0, 0, 0);
    check_attention(CV_TYPE_F16, 4, 1, 256, 16, 50.0f, 0);
    check_attention(CV_TYPE_F32, 6, 3, 8, 0, 0, 0); /* stories260K's head_dim */
    check_attention(CV_TYPE_F16, 16, 1, 576, 0, 0, 512); /* DeepSeek V2/V3's latent + rope key */
    check_attention(CV_TYPE_F32, 4, 1, 288, 0, 0, 256); /* deepseek2-tiny's */
}

/* A launch that cannot run is reported at synchronize with where and what. */
static void test_error_surfaces_at_synchronize(void **state) {
    (void)state;
    cv_kv_layer kv = {NULL, NULL, CV_TYPE_F16, 16, 1, 1024, 0};
    cv_attn_params ap = {1, 1.0f, 0};
    g_gpu->ops->attention(g_gpu, &ap, &kv, NULL, 1, NULL, NULL);
    cv_error err = {0};
    assert_int_not_equal(g_gpu->ops->synchronize(g_gpu, &err), CV_OK);
    printf("reported: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cuda_attention.cu"));
    assert_non_null(strstr(err.msg, "head_dim"));
    assert_int_equal(g_gpu->ops->synchronize(g_gpu, &err), CV_OK);
}

/* ---- CUDA graphs ---- */

static cv_cuda_graph_stats graph_stats(cv_backend *be) {
    cv_cuda_graph_stats st = {0};
    cv_error err = {0};
    if (cv_cuda_graph_stats_get(be, &st, &err)) fail_msg("%s", err.msg);
    return st;
}

/* Graph steps of plain ops with new data uploaded before each: the first runs op by op,
 * the second is captured, the third replays; a step with one argument changed by value
 * is a new step, not a replay; an upload in the middle of a step keeps call order. */
static void test_graph_steps(void **state) {
    (void)state;
    const int64_t n = 40009;
    cv_error err = {0};
    if (cv_cuda_graphs_enable(g_gpu, 1, &err)) fail_msg("%s", err.msg);
    float *da = poisoned(n), *db = poisoned(n), *dout = poisoned(n);
    const cv_backend_ops *op = g_gpu->ops;
    const cv_cuda_graph_stats st0 = graph_stats(g_gpu);
    const float scales[] = {0.25f, 0.25f, 0.25f, 0.5f, 0.25f, 0.5f};
    for (int step = 0; step < 6; step++) {
        float *a = fill(n, 4.0f), *b = fill(n, 4.0f), *want = malloc(sizeof(float) * n);
        assert_non_null(want);
        if (op->upload(g_gpu, da, a, sizeof(float) * n, &err) || op->upload(g_gpu, db, b, sizeof(float) * n, &err))
            fail_msg("%s", err.msg);
        op->graph_begin(g_gpu);
        op->add(g_gpu, da, db, dout, n);
        op->scale(g_gpu, dout, scales[step], n);
        op->softcap(g_gpu, dout, 1.5f, n);
        op->graph_end(g_gpu);
        g_cpu->ops->add(g_cpu, a, b, want, n);
        g_cpu->ops->scale(g_cpu, want, scales[step], n);
        g_cpu->ops->softcap(g_cpu, want, 1.5f, n);
        float *got = from_dev(dout, n);
        char what[64];
        snprintf(what, sizeof what, "graph step %d (scale %g)", step, scales[step]);
        assert_close(got, want, n, 1e-6, what);
        free(got), free(a), free(b), free(want);
    }
    cv_cuda_graph_stats st = graph_stats(g_gpu);
    printf("graph steps: %lld captured, %lld replayed, %lld op by op\n", (long long)(st.captures - st0.captures),
           (long long)(st.replays - st0.replays), (long long)(st.eager - st0.eager));
    /* scale 0.25: first sight, capture, replay, -, replay; scale 0.5: first sight, capture */
    assert_int_equal(st.captures - st0.captures, 2);
    assert_int_equal(st.replays - st0.replays, 2);
    assert_int_equal(st.eager - st0.eager, 2);
    assert_true(st.enabled);

    /* an upload between two ops of a step lands between them */
    float *a = fill(n, 1.0f), *b = fill(n, 1.0f), *b2 = fill(n, 1.0f), *want = malloc(sizeof(float) * n);
    assert_non_null(want);
    if (op->upload(g_gpu, da, a, sizeof(float) * n, &err) || op->upload(g_gpu, db, b, sizeof(float) * n, &err))
        fail_msg("%s", err.msg);
    op->graph_begin(g_gpu);
    op->add(g_gpu, da, db, dout, n);
    if (op->upload(g_gpu, db, b2, sizeof(float) * n, &err)) fail_msg("%s", err.msg);
    op->add(g_gpu, dout, db, dout, n);
    op->graph_end(g_gpu);
    for (int64_t i = 0; i < n; i++) want[i] = a[i] + b[i] + b2[i];
    float *got = from_dev(dout, n);
    assert_close(got, want, n, 1e-6, "upload inside a graph step");
    assert_int_equal(graph_stats(g_gpu).eager - st.eager, 1);
    free(got), free(a), free(b), free(b2), free(want), dfree(da), dfree(db), dfree(dout);
}

/* One model on one backend with its own KV cache. */
typedef struct side {
    const char *name;
    cv_backend *be;
    cv_model *m;
    cv_kv_cache *kv;
    float *logits;
} side;

enum { GRAPH_SEQS = 20, GRAPH_CTX = 64 };

static void side_load(side *s, const char *name, cv_backend *be, const cv_gguf *g) {
    cv_error err = {0};
    s->name = name;
    s->be = be;
    cv_model_opts mo = {.max_batch = 64, .max_logits = GRAPH_SEQS};
    if (cv_model_load(be, g, &mo, &s->m, &err)) fail_msg("%s: %s", name, err.msg);
    cv_kv_config kc = cv_model_kv_config(s->m, GRAPH_CTX, GRAPH_SEQS, CV_TYPE_F16);
    if (cv_kv_create(&kc, &s->kv, &err)) fail_msg("%s: %s", name, err.msg);
    s->logits = malloc(sizeof(float) * GRAPH_SEQS * (size_t)cv_model_hparams(s->m)->n_vocab);
    assert_non_null(s->logits);
}

static void side_free(side *s) {
    cv_kv_free(s->kv);
    cv_model_free(s->m);
    free(s->logits);
}

/* Reserves the rows' positions and runs the batch on the three sides. */
static void step3(side *sides, const cv_batch *b) {
    cv_error err = {0};
    for (int k = 0; k < 3; k++) {
        for (int32_t i = 0; i < b->n; i++)
            if (cv_kv_reserve(sides[k].kv, b->seq[i], b->pos[i] + 1, &err)) fail_msg("%s", err.msg);
        if (cv_model_forward(sides[k].m, sides[k].kv, b, sides[k].logits, &err))
            fail_msg("%s: forward of %d rows: %s", sides[k].name, b->n, err.msg);
    }
}

/* Decode steps with graphs (sides[0]) against the same steps op by op (sides[1], bit for
 * bit while B <= CV_CUDA_SMALL_BATCH, where no cuBLAS is involved) and on the CPU
 * (sides[2], within cpu_budget of the logits' scale). Phases of B = 3, 2, 3 again and
 * 20 sequences: each new B runs op by op once, is captured once, then replays; B = 3
 * comes back to its cached graph. Sequences 0 and 1 cross a block boundary (position 16)
 * during replays, so the graphs must read the block tables the cache grew. */
static void check_graph_decode(const char *what, const char *path, double cpu_budget) {
    cv_gguf *g = NULL;
    cv_backend *eager = NULL;
    cv_error err = {0};
    if (cv_gguf_open(path, &g, &err)) fail_msg("%s: %s", path, err.msg);
    cv_cuda_options eo = {.no_graphs = 1};
    if (cv_cuda_backend_create(&eo, &eager, &err)) fail_msg("%s", err.msg);
    if (cv_cuda_graphs_enable(g_gpu, 1, &err)) fail_msg("%s", err.msg);
    side sides[3];
    side_load(&sides[0], "cuda graphs", g_gpu, g);
    side_load(&sides[1], "cuda op by op", eager, g);
    side_load(&sides[2], "cpu", g_cpu, g);
    const int32_t nv = cv_model_hparams(sides[0].m)->n_vocab;
    int32_t pos[GRAPH_SEQS], tok[GRAPH_SEQS], seq[GRAPH_SEQS], ptok[16], ppos[16], pseq[16];
    uint8_t want[GRAPH_SEQS];
    memset(want, 1, sizeof want);
    /* prompts: 14 and 15 tokens for sequences 0 and 1, 2..12 for the others (never 1,
     * which would be a graph step of its own) */
    for (int32_t s = 0; s < GRAPH_SEQS; s++) {
        const int32_t len = s < 2 ? 14 + s : 2 + (int32_t)(cv_test_rng_next(&g_rng) % 11);
        for (int32_t i = 0; i < len; i++) {
            ptok[i] = 3 + (int32_t)(cv_test_rng_next(&g_rng) % (uint64_t)(nv - 3));
            ppos[i] = i, pseq[i] = s;
        }
        const cv_batch b = {.n = len, .tokens = ptok, .pos = ppos, .seq = pseq, .want_logits = NULL};
        step3(sides, &b);
        tok[s] = cv_argmax(sides[1].logits, nv);
        pos[s] = len;
        seq[s] = s;
    }
    const cv_cuda_graph_stats st0 = graph_stats(g_gpu);
    const struct { int32_t b, steps; } phases[] = {{3, 8}, {2, 3}, {3, 3}, {GRAPH_SEQS, 3}};
    int grew_on_replay = 0;
    for (size_t ph = 0; ph < sizeof phases / sizeof *phases; ph++) {
        const int32_t B = phases[ph].b;
        for (int32_t st = 0; st < phases[ph].steps; st++) {
            const int32_t cap0 = cv_kv_capacity(sides[0].kv, 0), cap1 = cv_kv_capacity(sides[0].kv, 1);
            const int64_t replays = graph_stats(g_gpu).replays;
            const cv_batch b = {.n = B, .tokens = tok, .pos = pos, .seq = seq, .want_logits = want};
            step3(sides, &b);
            const int grew = cv_kv_capacity(sides[0].kv, 0) != cap0 || cv_kv_capacity(sides[0].kv, 1) != cap1;
            if (grew && graph_stats(g_gpu).replays == replays + 1) grew_on_replay++;
            char label[128];
            snprintf(label, sizeof label, "%s: decode B=%d step %d, graphs vs op by op", what, B, st);
            if (B <= CV_CUDA_SMALL_BATCH) {
                if (memcmp(sides[0].logits, sides[1].logits, sizeof(float) * (size_t)B * nv))
                    assert_close(sides[0].logits, sides[1].logits, (int64_t)B * nv, 0, label);
            } else {
                assert_close(sides[0].logits, sides[1].logits, (int64_t)B * nv, 1e-5, label);
            }
            snprintf(label, sizeof label, "%s: decode B=%d step %d, graphs vs CPU", what, B, st);
            assert_close(sides[0].logits, sides[2].logits, (int64_t)B * nv, cpu_budget, label);
            for (int32_t i = 0; i < B; i++) {
                tok[i] = cv_argmax(sides[1].logits + (size_t)i * nv, nv);
                pos[i]++;
            }
        }
    }
    const cv_cuda_graph_stats st = graph_stats(g_gpu), est = graph_stats(eager);
    printf("%s: decode graphs: %lld captured, %lld replayed, %lld op by op, %d cached; a block table grew "
           "during %d replay(s)\n",
           what, (long long)(st.captures - st0.captures), (long long)(st.replays - st0.replays),
           (long long)(st.eager - st0.eager), st.cached, grew_on_replay);
    assert_true(st.enabled);
    assert_int_equal(st.captures - st0.captures, 3);
    assert_int_equal(st.replays - st0.replays, 6 + 1 + 3 + 1);
    assert_int_equal(st.eager - st0.eager, 3);
    assert_true(grew_on_replay >= 1);
    assert_false(est.enabled);
    assert_int_equal(est.captures + est.replays, 0);
    for (int k = 0; k < 3; k++) side_free(&sides[k]);
    cv_backend_destroy(eager);
    cv_gguf_close(g);
}

static void test_graph_decode(void **state) {
    (void)state;
    char path[4096], dir[256];
    cv_test_data(path, sizeof path, "models/stories260K.gguf");
    check_graph_decode("stories260K", path, 1e-3);
    if (cv_test_tmpdir(dir, sizeof dir, "cuda-graphs")) fail_msg("cannot make a temporary directory");
    snprintf(path, sizeof path, "%s/tiny-q4km.gguf", dir);
    cv_synth_opts so = {.recipe = CV_QRECIPE_Q4_K_M, .seed = cv_test_rng_next(&g_rng), .n_threads = 1};
    cv_error err = {0};
    if (cv_synth_write(cv_synth_find("tiny"), &so, path, &err)) fail_msg("%s", err.msg);
    check_graph_decode("synthetic tiny Q4_K_M", path, 3e-2);
    cv_test_rmtree(dir);
}

/* ---- NCCL: one thread per rank, as a tensor-parallel model runs ---- */

enum { NCCL_N = 4099 };

typedef struct rank_job {
    cv_comm *comm;
    cv_backend *be;
    int rank;
    const float *x;
    float *got;
    cv_error err;
    cv_status st;
} rank_job;

/* Rank r contributes (r + 1) * x. */
static void *rank_main(void *arg) {
    rank_job *j = arg;
    float *h = malloc(sizeof(float) * NCCL_N), *d = NULL;
    if (!h) return NULL;
    for (int i = 0; i < NCCL_N; i++) h[i] = (float)(j->rank + 1) * j->x[i];
    const size_t bytes = sizeof(float) * NCCL_N;
    if (!(j->st = j->be->ops->alloc(j->be, bytes, (void **)&d, &j->err)) &&
        !(j->st = j->be->ops->upload(j->be, d, h, bytes, &j->err)) &&
        !(j->st = j->comm->ops->allreduce_sum(j->comm, j->rank, d, NCCL_N, &j->err)) &&
        !(j->st = j->be->ops->synchronize(j->be, &j->err)))
        j->st = j->be->ops->download(j->be, j->got, d, bytes, &j->err);
    j->be->ops->free(j->be, d);
    free(h);
    return NULL;
}

static void test_nccl_allreduce(void **state) {
    (void)state;
    int n_dev = 0;
    cv_error err = {0};
    assert_int_equal(cv_cuda_device_count(&n_dev, &err), CV_OK);
    const int n = n_dev < 4 ? n_dev : 4;
    cv_backend *bes[4] = {0};
    rank_job jobs[4];
    pthread_t th[4];
    float *x = fill(NCCL_N, 1.0f);
    for (int r = 0; r < n; r++) {
        cv_cuda_options o = {.device = r};
        if (cv_cuda_backend_create(&o, &bes[r], &err)) fail_msg("device %d: %s", r, err.msg);
    }
    cv_comm *comm = NULL;
    if (cv_comm_nccl_create(bes, n, &comm, &err)) fail_msg("%s", err.msg);
    printf("nccl all-reduce over %d rank(s)\n", n);
    for (int r = 0; r < n; r++) {
        jobs[r] = (rank_job){.comm = comm, .be = bes[r], .rank = r, .x = x, .got = malloc(sizeof(float) * NCCL_N)};
        assert_non_null(jobs[r].got);
        assert_int_equal(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
    }
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
    float *want = malloc(sizeof(float) * NCCL_N);
    assert_non_null(want);
    for (int i = 0; i < NCCL_N; i++) want[i] = x[i] * (float)(n * (n + 1) / 2);
    for (int r = 0; r < n; r++) {
        if (jobs[r].st) fail_msg("rank %d: %s", r, jobs[r].err.msg);
        assert_close(jobs[r].got, want, NCCL_N, 1e-6, "nccl all-reduce");
        free(jobs[r].got);
    }
    cv_comm_destroy(comm);
    for (int r = 0; r < n; r++) cv_backend_destroy(bes[r]);
    free(x), free(want);
}

/* ---- without a GPU ---- */

static void test_refuses_without_device(void **state) {
    (void)state;
    cv_backend *be = (cv_backend *)&be;
    cv_error err = {0};
    assert_int_equal(cv_cuda_backend_create(NULL, &be, &err), CV_EUNAVAILABLE);
    assert_null(be);
    printf("cv_cuda_backend_create: %s\n", err.msg);
    if (cv_cuda_compiled())
        assert_non_null(strstr(err.msg, "no CUDA device"));
    else
        assert_non_null(strstr(err.msg, "make CUDA=1"));
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_cuda_ops"));
    int n_dev = 0;
    cv_error err = {0};
    if (cv_cuda_device_count(&n_dev, &err) != CV_OK) {
        printf("SKIP: %s: GPU cases not run\n", cv_cuda_compiled() ? err.msg : "CUDA not compiled in (make CUDA=1)");
        const struct CMUnitTest none[] = {cmocka_unit_test(test_refuses_without_device)};
        return cmocka_run_group_tests_name("cuda_ops (no device)", none, NULL, NULL);
    }
    if (cv_cpu_backend_create(&(cv_cpu_options){.n_threads = 1, .force_scalar = 1}, &g_cpu, &err) ||
        cv_cuda_backend_create(NULL, &g_gpu, &err)) {
        fprintf(stderr, "test_cuda_ops: %s\n", err.msg);
        return 1;
    }
    printf("test_cuda_ops: %d CUDA device(s), testing device 0\n", n_dev);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_and_get_rows),
        cmocka_unit_test(test_matmul_heads_copy_rows),
        cmocka_unit_test(test_rmsnorm_softmax),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_error_surfaces_at_synchronize),
        cmocka_unit_test(test_graph_steps),
        cmocka_unit_test(test_graph_decode),
        cmocka_unit_test(test_nccl_allreduce),
    };
    int failed = cmocka_run_group_tests_name("cuda_ops", tests, NULL, NULL);
    cv_backend_destroy(g_gpu);
    cv_backend_destroy(g_cpu);
    return failed;
}
