/* quantize: recipes, per-tensor type choice and the model rewrite (see quantize.h). */
#include "quantize.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "threadpool.h"

static const cv_qrecipe_info k_recipes[CV_QRECIPE_COUNT] = {
    [CV_QRECIPE_F32] = {"F32", CV_TYPE_F32, 0},
    [CV_QRECIPE_F16] = {"F16", CV_TYPE_F16, 1},
    [CV_QRECIPE_BF16] = {"BF16", CV_TYPE_BF16, 32},
    [CV_QRECIPE_Q8_0] = {"Q8_0", CV_TYPE_Q8_0, 7},
    [CV_QRECIPE_Q4_0] = {"Q4_0", CV_TYPE_Q4_0, 2},
    /* llama.cpp has no id for an all-Q4_K file; its Q4_K_S (14) is the nearest */
    [CV_QRECIPE_Q4_K] = {"Q4_K", CV_TYPE_Q4_K, 14},
    [CV_QRECIPE_Q6_K] = {"Q6_K", CV_TYPE_Q6_K, 18},
    [CV_QRECIPE_Q4_K_M] = {"Q4_K_M", CV_TYPE_Q4_K, 15},
};

const cv_qrecipe_info *cv_qrecipe_get(cv_qrecipe r) {
    return (unsigned)r < CV_QRECIPE_COUNT ? &k_recipes[r] : NULL;
}

cv_status cv_qrecipe_parse(const char *name, cv_qrecipe *out, cv_error *err) {
    for (int r = 0; r < CV_QRECIPE_COUNT; r++) {
        if (!strcasecmp(name, k_recipes[r].name)) {
            *out = (cv_qrecipe)r;
            return CV_OK;
        }
    }
    return cv_errorf(err, CV_EINVAL,
                     "unknown type '%s' (expected F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K or Q4_K_M)", name);
}

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* N of "blk.N.", or -1. */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    char *end;
    const long v = strtol(name + 4, &end, 10);
    return end != name + 4 && *end == '.' && v >= 0 && v < INT_MAX ? (int)v : -1;
}

/* llama.cpp's choice of the layers whose attn_v/ffn_down get more bits. */
static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

cv_type cv_qrecipe_pick(cv_qrecipe r, const char *name, uint32_t n_dims, const int64_t *ne,
                        int n_layers, int has_output, const char **note) {
    if (note) *note = NULL;
    /* A mixture's router (ffn_gate_inp) stays F32, as llama.cpp's quantizer keeps it. */
    if (n_dims < 2 || !ends_with(name, ".weight") || ends_with(name, ".ffn_gate_inp.weight") ||
        (unsigned)r >= CV_QRECIPE_COUNT)
        return CV_TYPE_F32;
    cv_type t = k_recipes[r].base;
    if (r == CV_QRECIPE_Q4_K_M) {
        const int is_output = !strcmp(name, "output.weight") ||
                              (!has_output && !strcmp(name, "token_embd.weight"));
        const int layer = layer_of(name);
        const int sensitive = ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight") ||
                              ends_with(name, ".ffn_down_exps.weight");
        if (is_output || (sensitive && layer >= 0 && use_more_bits(layer, n_layers))) t = CV_TYPE_Q6_K;
    }
    const int64_t block = cv_type_get(t)->block_elems;
    if (ne[0] % block == 0) return t;
    const cv_type fallback = t == CV_TYPE_Q4_K ? CV_TYPE_Q5_0 : t == CV_TYPE_Q6_K ? CV_TYPE_Q8_0 : CV_TYPE_F32;
    if (fallback != CV_TYPE_F32 && ne[0] % 32 == 0) {
        if (note) *note = "rows are not a multiple of 256 elements: K-quant replaced as llama.cpp does";
        return fallback;
    }
    if (note) *note = "rows do not divide into quantization blocks: kept in F32";
    return CV_TYPE_F32;
}

/* ---- row conversion over a thread pool ---- */

typedef struct convert_job {
    cv_type st, dt;
    const uint8_t *src;
    uint8_t *dst;
    int64_t n, rows;
    size_t src_rb, dst_rb;
    int failed;  /* a thread could not get its row buffer */
} convert_job;

static void convert_task(void *ctx, int ith, int nth) {
    convert_job *j = ctx;
    int64_t lo, hi;
    cv_split_range(j->rows, 1, ith, nth, &lo, &hi);
    if (lo >= hi) return;
    float *tmp = j->st == CV_TYPE_F32 ? NULL : malloc((size_t)j->n * sizeof(float));
    if (j->st != CV_TYPE_F32 && !tmp) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t r = lo; r < hi; r++) {
        const void *s = j->src + (size_t)r * j->src_rb;
        const float *x = s;
        if (tmp) {
            cv_dequantize_row(j->st, s, tmp, j->n);
            x = tmp;
        }
        cv_quantize_row(j->dt, x, j->dst + (size_t)r * j->dst_rb, j->n);
    }
    free(tmp);
}

cv_status cv_convert_rows(cv_type src_type, const void *src, cv_type dst_type, void *dst,
                          int64_t n_per_row, int64_t n_rows, int n_threads, cv_error *err) {
    const cv_type_info *si = cv_type_get(src_type), *di = cv_type_get(dst_type);
    if (!si || !si->supported || !di || !di->supported)
        return cv_errorf(err, CV_EUNSUPPORTED, "cannot convert %s to %s", si ? si->name : "an unknown type",
                         di ? di->name : "an unknown type");
    convert_job j = {src_type, dst_type, src, dst, n_per_row, n_rows,
                     cv_type_row_bytes(src_type, n_per_row), cv_type_row_bytes(dst_type, n_per_row), 0};
    if (!j.src_rb || !j.dst_rb)
        return cv_errorf(err, CV_EINVAL, "a row of %lld elements does not divide into %s or %s blocks",
                         (long long)n_per_row, si->name, di->name);
    cv_threadpool *pool;
    const cv_status st = cv_threadpool_create(n_threads, &pool, err);
    if (st) return st;
    cv_threadpool_run(pool, convert_task, &j);
    cv_threadpool_destroy(pool);
    if (j.failed) return cv_errorf(err, CV_ENOMEM, "no memory for a conversion buffer of %lld floats", (long long)n_per_row);
    return CV_OK;
}

/* ---- the model rewrite ---- */

static int64_t n_rows_of(const cv_gguf_tensor *t) {
    int64_t rows = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    return rows;
}

static cv_status model_hparams(const cv_gguf *g, int *n_layers, cv_error *err) {
    const cv_str arch = cv_gguf_get_str(g, "general.architecture");
    if (!arch.ptr || arch.len > 64) return cv_errorf(err, CV_EFORMAT, "general.architecture is missing or too long");
    char key[96];
    snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
    const uint32_t n = cv_gguf_get_u32(g, key, 0);
    if (n > 100000) return cv_errorf(err, CV_ERANGE, "%s is %u, more than 100000 layers", key, n);
    *n_layers = (int)n;
    return CV_OK;
}

cv_status cv_quantize_model(const char *in_path, const char *out_path, cv_qrecipe r,
                            const cv_quantize_opts *opts, cv_error *err) {
    const cv_quantize_opts none = {0, NULL};
    if (!opts) opts = &none;
    if (!cv_qrecipe_get(r)) return cv_errorf(err, CV_EINVAL, "recipe %d is not a known recipe", (int)r);
    char *rin = realpath(in_path, NULL), *rout = realpath(out_path, NULL);
    const int same = rin && rout && !strcmp(rin, rout);
    free(rin);
    free(rout);
    if (same) return cv_errorf(err, CV_EINVAL, "output %s is the input file", out_path);

    cv_gguf *g = NULL;
    cv_gguf_writer *w = NULL;
    void **bufs = NULL;
    int64_t nt = 0;
    cv_status st = cv_gguf_open(in_path, &g, err);
    if (st) return st;
    int n_layers = 0;
    if ((st = model_hparams(g, &n_layers, err))) goto err;
    const int has_output = cv_gguf_find_tensor(g, "output.weight") != NULL;
    nt = cv_gguf_n_tensors(g);
    bufs = calloc((size_t)(nt ? nt : 1), sizeof *bufs);
    w = cv_gguf_writer_new();
    if (!bufs || !w) {
        st = cv_errorf(err, CV_ENOMEM, "no memory for a writer of %lld tensors", (long long)nt);
        goto err;
    }
    if ((st = cv_gguf_copy_kvs(w, g, err)) ||
        (st = cv_gguf_set_u32(w, "general.file_type", k_recipes[r].file_type, err)) ||
        (st = cv_gguf_set_u32(w, "general.quantization_version", 2, err)))
        goto err;

    uint64_t bytes_in = 0, bytes_out = 0;
    for (int64_t i = 0; i < nt; i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        char name[256];
        if (t->name.len >= sizeof name) {
            st = cv_errorf(err, CV_ERANGE, "tensor %lld: name of %llu bytes is longer than 255", (long long)i,
                           (unsigned long long)t->name.len);
            goto err;
        }
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = 0;
        const cv_type_info *si = cv_type_get(t->type);
        if (!si || !si->supported) {
            st = cv_errorf(err, CV_EUNSUPPORTED, "tensor %s has type %s, which corvid cannot convert", name,
                           si ? si->name : "unknown");
            goto err;
        }
        const char *note;
        const cv_type dt = cv_qrecipe_pick(r, name, t->n_dims, t->ne, n_layers, has_output, &note);
        if (note && opts->log)
            fprintf(opts->log, "quantize: %s (%lld columns) -> %s: %s\n", name, (long long)t->ne[0],
                    cv_type_get(dt)->name, note);
        const void *data = t->data;
        const int64_t rows = n_rows_of(t);
        const size_t out_bytes = cv_type_row_bytes(dt, t->ne[0]) * (size_t)rows;
        if (dt != t->type) {
            if (!(bufs[i] = malloc(out_bytes ? out_bytes : 1))) {
                st = cv_errorf(err, CV_ENOMEM, "no memory for %zu bytes of tensor %s", out_bytes, name);
                goto err;
            }
            if ((st = cv_convert_rows(t->type, t->data, dt, bufs[i], t->ne[0], rows, opts->n_threads, err))) {
                cv_error_wrap(err, "tensor %s", name);
                goto err;
            }
            data = bufs[i];
        }
        if ((st = cv_gguf_add_tensor(w, name, dt, t->n_dims, t->ne, data, err))) goto err;
        bytes_in += t->nbytes;
        bytes_out += out_bytes;
    }
    if ((st = cv_gguf_write(w, out_path, err))) goto err;
    if (opts->log)
        fprintf(opts->log, "quantize: %lld tensors, %.2f MB -> %.2f MB (%s, general.file_type %u)\n",
                (long long)nt, bytes_in / 1e6, bytes_out / 1e6, k_recipes[r].name, k_recipes[r].file_type);
err:
    for (int64_t i = 0; bufs && i < nt; i++) free(bufs[i]);
    free(bufs);
    cv_gguf_writer_free(w);
    cv_gguf_close(g);
    return st;
}
