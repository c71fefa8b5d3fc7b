/* synthetic: random-weight models of real shapes (see synthetic.h). */
#include "synthetic.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "rope_factors.h"
#include "threadpool.h"

static const cv_synth_shape k_shapes[] = {
    /* name            arch     embd  layer head kv  ff     vocab   ctx    rope   eps  bias tied
     * then the other fields by name */
    {"tiny", "llama", 256, 2, 4, 2, 512, 512, 256, 10000.f, 1e-5f, 0, 0, .n_rot = 0},
    {"tiny-qwen2", "qwen2", 256, 2, 4, 2, 512, 512, 256, 1000000.f, 1e-6f, 1, 1, .n_rot = 0},
    {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.f, 1e-5f, 0, 0, .n_rot = 0},
    {"qwen2-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151936, 32768, 1000000.f, 1e-6f, 1, 1, .n_rot = 0},
    {"llama-7b", "llama", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.f, 1e-5f, 0, 0, .n_rot = 0},
    {"llama3-8b", "llama", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.f, 1e-5f, 0, 0, .n_rot = 0},
    /* Tensor-parallel tests: 8 heads, 4 kv heads and ffn 512 split 2 and 4 ways with
     * every column share a whole number of 32-element blocks. */
    {"tp-llama", "llama", 256, 2, 8, 4, 512, 512, 256, 10000.f, 1e-5f, 0, 0, .n_rot = 0},
    {"tp-qwen2", "qwen2", 256, 2, 8, 4, 512, 512, 256, 1000000.f, 1e-6f, 1, 0, .n_rot = 0},
    {"tp-gemma3", "gemma3", 256, 2, 8, 4, 512, 512, 256, 1000000.f, 1e-6f, 0, 0, .n_rot = 0},
    /* Llama 3.1+ rope scaling. The reduced one's original context of 32 puts its head's
     * 32 frequencies in all three bands (kept, interpolated, slowed by the factor). */
    {"llama3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.f, 1e-5f, 0, 1,
     .rope_orig_ctx = 8192, .rope_factor = 32.f},
    {"tiny-llama3", "llama", 256, 2, 4, 2, 512, 512, 256, 500000.f, 1e-5f, 0, 0,
     .rope_orig_ctx = 32, .rope_factor = 8.f},
    /* Mistral 7B v0.1: every layer slides over 4096 positions; the reduced one over 8. */
    {"mistral-7b", "llama", 4096, 32, 32, 8, 14336, 32000, 32768, 10000.f, 1e-5f, 0, 0, .swa = 4096},
    {"tiny-mistral", "llama", 256, 2, 4, 2, 512, 512, 256, 10000.f, 1e-5f, 0, 0, .swa = 8},
    /* Phi-3 (128k): fused QKV and gate-up, long-rope beyond 4096 positions. The reduced
     * one rotates 48 of its 64 head dimensions (Phi-4-mini's partial rope) and switches to
     * its long factors beyond 64. */
    {"phi-3-mini", "phi3", 3072, 32, 32, 32, 8192, 32064, 131072, 10000.f, 1e-5f, 0, 0,
     .rope_orig_ctx = 4096, .rope_factor = 32.f},
    {"tiny-phi3", "phi3", 256, 2, 4, 2, 512, 512, 256, 10000.f, 1e-5f, 0, 0, .n_rot = 48,
     .rope_orig_ctx = 64, .rope_factor = 4.f},
    /* Tensor parallelism through phi3's fused tensors: their Q, K, V and gate, up blocks
     * split 2 and 4 ways like the tp shapes above. */
    {"tp-phi3", "phi3", 256, 2, 8, 4, 512, 512, 256, 10000.f, 1e-5f, 0, 0, .n_rot = 24,
     .rope_orig_ctx = 64, .rope_factor = 4.f},
    /* Qwen3: head size 128 whatever the width, QK-norm, no biases; the MoE has 128
     * experts of 768, 8 per token, in every layer (its feed_forward_length is unused). */
    {"qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 3072, 151936, 40960, 1000000.f, 1e-6f, 0, 1, .head_dim = 128,
     .qk_norm = 1},
    {"qwen3-30b-a3b", "qwen3moe", 2048, 48, 32, 4, 6144, 151936, 40960, 1000000.f, 1e-6f, 0, 0, .head_dim = 128,
     .qk_norm = 1, .n_expert = 128, .n_expert_used = 8, .n_ff_exp = 768},
    /* Reduced, for the reference tests: rows of 256 so Q4_K_M applies, head size 128 !=
     * embd / heads as in the real models, heads and experts' rows split 2 ways. */
    {"qwen3-tiny", "qwen3", 256, 2, 4, 2, 512, 512, 256, 1000000.f, 1e-6f, 0, 1, .head_dim = 128, .qk_norm = 1},
    {"qwen3moe-tiny", "qwen3moe", 256, 2, 4, 2, 512, 512, 256, 1000000.f, 1e-6f, 0, 0, .head_dim = 128,
     .qk_norm = 1, .n_expert = 8, .n_expert_used = 2, .n_ff_exp = 256},
    /* DeepSeek-V2-Lite: MLA without q_lora (latent 512, rope 64 of 192-wide query heads,
     * values 128), one dense layer, then 64 experts of 1408 (6 per token, softmax, not
     * normalised) beside 2 shared; YaRN x40 from 4096 with mscale_all_dim 0.707. */
    {"deepseek-v2-lite", "deepseek2", 2048, 27, 16, 1, 10944, 102400, 163840, 10000.f, 1e-6f, 0, 0,
     .n_rot = 64, .rope_orig_ctx = 4096, .rope_factor = 40.f, .n_expert = 64, .n_expert_used = 6,
     .n_ff_exp = 1408, .kv_lora = 512, .qk_nope = 128, .v_head = 128, .n_dense_lead = 1, .n_shared = 2,
     .expert_scale = 1.0f, .yarn_log_mul = 0.0707f},
    /* Reduced, every structural feature kept: a dense first layer, MLA, shared and routed
     * experts, YaRN from an original context of 64 (its mix spans pairs 0..5 of the 16).
     * The V3-like one has q_lora and sigmoid routing in 4 groups (2 used) with selection
     * biases, normalised and scaled; the V2-Lite-like one projects queries directly and
     * routes by softmax. Rows of 256 where the tensors allow (Q4_K_M). */
    {"deepseek2-tiny", "deepseek2", 256, 3, 4, 1, 512, 512, 256, 10000.f, 1e-6f, 0, 0, .n_rot = 32,
     .rope_orig_ctx = 64, .rope_factor = 4.f, .n_expert = 8, .n_expert_used = 2, .n_ff_exp = 256,
     .q_lora = 256, .kv_lora = 256, .qk_nope = 64, .v_head = 64, .n_dense_lead = 1, .n_shared = 1,
     .n_groups = 4, .n_group_used = 2, .sigmoid = 1, .expert_norm = 1, .expert_scale = 2.5f,
     .yarn_log_mul = 0.1f},
    {"deepseek2-lite-tiny", "deepseek2", 256, 3, 4, 1, 512, 512, 256, 10000.f, 1e-6f, 0, 0, .n_rot = 32,
     .rope_orig_ctx = 64, .rope_factor = 4.f, .n_expert = 8, .n_expert_used = 2, .n_ff_exp = 256,
     .kv_lora = 256, .qk_nope = 64, .v_head = 64, .n_dense_lead = 1, .n_shared = 2, .expert_scale = 1.0f,
     .yarn_log_mul = 0.0707f},
};
#define N_SHAPES (int)(sizeof k_shapes / sizeof k_shapes[0])

const cv_synth_shape *cv_synth_at(int i) { return i >= 0 && i < N_SHAPES ? &k_shapes[i] : NULL; }

const cv_synth_shape *cv_synth_find(const char *name) {
    for (int i = 0; i < N_SHAPES; i++)
        if (!strcmp(name, k_shapes[i].name)) return &k_shapes[i];
    return NULL;
}

/* ---- deterministic weights ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

enum { FILL_NORMAL, FILL_ONES, FILL_VALUES };

typedef struct gen_job {
    uint64_t seed, tensor;
    int fill;
    const float *values;  /* FILL_VALUES: rows of n */
    cv_type type;
    int64_t n, rows;
    size_t row_bytes;
    uint8_t *dst;
    int failed;
} gen_job;

/* Row r of a tensor depends only on (seed, tensor, r): any split over threads gives
 * the same bytes. Values: (sum of four 16-bit uniforms - mean) / sd * 0.02. */
static void gen_row(const gen_job *j, int64_t r, float *x) {
    if (j->fill == FILL_ONES) {
        for (int64_t i = 0; i < j->n; i++) x[i] = 1.0f;
        return;
    }
    if (j->fill == FILL_VALUES) {
        memcpy(x, j->values + r * j->n, (size_t)j->n * sizeof *x);
        return;
    }
    uint64_t s = j->seed * 0xd1342543de82ef95ull ^ (j->tensor + 1) * 0x9e3779b97f4a7c15ull ^
                 ((uint64_t)r + 1) * 0xc2b2ae3d27d4eb4full;
    const float k = 0.02f / 37837.23f;  /* sd of the sum: sqrt(4 * (65536^2 - 1) / 12) */
    for (int64_t i = 0; i < j->n; i++) {
        const uint64_t u = splitmix64(&s);
        const int32_t sum = (int32_t)((u & 0xffff) + ((u >> 16) & 0xffff) + ((u >> 32) & 0xffff) + (u >> 48));
        x[i] = (float)(sum - 131070) * k;
    }
}

static void gen_task(void *ctx, int ith, int nth) {
    gen_job *j = ctx;
    int64_t lo, hi;
    cv_split_range(j->rows, 1, ith, nth, &lo, &hi);
    if (lo >= hi) return;
    float *x = malloc((size_t)j->n * sizeof(float));
    if (!x) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t r = lo; r < hi; r++) {
        gen_row(j, r, x);
        cv_quantize_row(j->type, x, j->dst + (size_t)r * j->row_bytes, j->n);
    }
    free(x);
}

/* ---- tokenizer ---- */

/* A list of NUL-terminated strings in one allocation. */
typedef struct str_list {
    char **v;
    char *buf;
    uint64_t n;
} str_list;

static void str_list_free(str_list *l) {
    free(l->v);
    free(l->buf);
}

static cv_status str_list_alloc(str_list *l, uint64_t n, size_t bytes, cv_error *err) {
    l->n = n;
    l->v = malloc((n ? n : 1) * sizeof *l->v);
    l->buf = malloc(bytes ? bytes : 1);
    if (!l->v || !l->buf) {
        str_list_free(l);
        return cv_errorf(err, CV_ENOMEM, "no memory for %llu strings", (unsigned long long)n);
    }
    return CV_OK;
}

#define WORD_START "\xe2\x96\x81" /* U+2581, SentencePiece's word-start mark */

/* Pieces after the specials and bytes: the mark, single characters, then lowercase
 * strings of growing length, each as "▁s" then "s". Writes piece k into out (at
 * most 16 bytes with the NUL) and returns its length. */
static size_t spm_piece(uint64_t k, char *out) {
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()";
    const uint64_t n_chars = sizeof chars - 1;
    if (k == 0) return (size_t)snprintf(out, 16, WORD_START);
    k -= 1;
    char s[8];
    size_t len = 1;
    if (k < 2 * n_chars) {
        s[0] = chars[k / 2];
    } else {
        k -= 2 * n_chars;
        uint64_t count = 26 * 26;
        for (len = 2; k >= 2 * count && len < 6; len++) {
            k -= 2 * count;
            count *= 26;
        }
        uint64_t idx = k / 2;
        for (size_t i = len; i-- > 0; idx /= 26) s[i] = (char)('a' + idx % 26);
    }
    s[len] = 0;
    return (size_t)snprintf(out, 16, "%s%s", k % 2 == 0 ? WORD_START : "", s);
}

/* last_special: a control token in the last id (NULL: none); phi3 files get Phi-3's
 * <|endoftext|>, which llama.cpp's vocabulary loader looks up for models named phi3. */
static cv_status write_spm_vocab(cv_gguf_writer *w, uint32_t n_vocab, const char *last_special, cv_error *err) {
    enum { N_SPECIAL = 3, N_BYTES = 256 };
    if (n_vocab < N_SPECIAL + N_BYTES + 1)
        return cv_errorf(err, CV_ERANGE, "vocabulary of %u tokens is too small for the %d byte tokens", n_vocab, N_BYTES);
    str_list l = {0};
    float *scores = malloc((size_t)n_vocab * sizeof *scores);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    cv_status st = str_list_alloc(&l, n_vocab, (size_t)n_vocab * 16, err);
    if (!st && (!scores || !types)) st = cv_errorf(err, CV_ENOMEM, "no memory for a %u-token vocabulary", n_vocab);
    if (st) goto err;
    char *p = l.buf;
    for (uint32_t i = 0; i < n_vocab; i++) {
        l.v[i] = p;
        if (i < N_SPECIAL) {
            static const char *const special[N_SPECIAL] = {"<unk>", "<s>", "</s>"};
            p += snprintf(p, 16, "%s", special[i]) + 1;
            types[i] = i == 0 ? 2 : 3;  /* UNKNOWN, CONTROL */
            scores[i] = 0;
        } else if (last_special && i == n_vocab - 1) {
            p += snprintf(p, 16, "%s", last_special) + 1;
            types[i] = 3;  /* CONTROL */
            scores[i] = 0;
        } else if (i < N_SPECIAL + N_BYTES) {
            p += snprintf(p, 16, "<0x%02X>", i - N_SPECIAL) + 1;
            types[i] = 6;  /* BYTE */
            scores[i] = 0;
        } else {
            p += spm_piece(i - N_SPECIAL - N_BYTES, p) + 1;
            types[i] = 1;  /* NORMAL */
            scores[i] = -(float)(i - N_SPECIAL - N_BYTES);
        }
    }
    if ((st = cv_gguf_set_str(w, "tokenizer.ggml.model", "llama", err)) ||
        (st = cv_gguf_set_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)l.v, n_vocab, err)) ||
        (st = cv_gguf_set_arr(w, "tokenizer.ggml.scores", CV_GGUF_FLOAT32, scores, n_vocab, err)) ||
        (st = cv_gguf_set_arr(w, "tokenizer.ggml.token_type", CV_GGUF_INT32, types, n_vocab, err)) ||
        (st = cv_gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0, err)) ||
        (st = cv_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err)) ||
        (st = cv_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err)) ||
        (st = cv_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1, err)) ||
        (st = cv_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0, err)))
        goto err;
err:
    str_list_free(&l);
    free(scores);
    free(types);
    return st;
}

/* Copy one key/value of src (a string, a scalar or an array of strings or numbers). */
static cv_status copy_kv(cv_gguf_writer *w, const cv_gguf *src, int64_t i, const char *key, cv_error *err) {
    const cv_gguf_vtype t = cv_gguf_kv_type(src, i);
    if (t == CV_GGUF_STRING) {
        const cv_str s = cv_gguf_get_str(src, key);
        char *v = strndup(s.ptr, s.len);
        if (!v) return cv_errorf(err, CV_ENOMEM, "no memory for %s", key);
        const cv_status st = strlen(v) == s.len ? cv_gguf_set_str(w, key, v, err)
                                                : cv_errorf(err, CV_EUNSUPPORTED, "%s holds a NUL byte", key);
        free(v);
        return st;
    }
    if (t != CV_GGUF_ARRAY) {
        uint64_t len;
        const void *raw = cv_gguf_kv_raw(src, i, &len);
        return cv_gguf_set_scalar(w, key, t, raw, err);
    }
    cv_gguf_arr a;
    cv_gguf_get_arr(src, key, &a);
    if (a.type == CV_GGUF_ARRAY) return cv_errorf(err, CV_EUNSUPPORTED, "%s is an array of arrays", key);
    if (a.type != CV_GGUF_STRING) return cv_gguf_set_arr(w, key, a.type, a.data, a.n, err);
    size_t bytes = 0;
    for (uint64_t k = 0; k < a.n; k++) bytes += cv_gguf_arr_str(&a, k).len + 1;
    str_list l = {0};
    cv_status st = str_list_alloc(&l, a.n, bytes, err);
    if (st) return st;
    char *p = l.buf;
    for (uint64_t k = 0; k < a.n && !st; k++) {
        const cv_str s = cv_gguf_arr_str(&a, k);
        if (memchr(s.ptr, 0, s.len)) st = cv_errorf(err, CV_EUNSUPPORTED, "%s[%llu] holds a NUL byte", key, (unsigned long long)k);
        memcpy(p, s.ptr, s.len);
        p[s.len] = 0;
        l.v[k] = p;
        p += s.len + 1;
    }
    if (!st) st = cv_gguf_set_str_arr(w, key, (const char *const *)l.v, a.n, err);
    str_list_free(&l);
    return st;
}

/* Every tokenizer.* key of the file; *n_vocab becomes its token count. */
static cv_status copy_vocab(cv_gguf_writer *w, const char *path, uint32_t *n_vocab, cv_error *err) {
    cv_gguf *g;
    cv_status st = cv_gguf_open(path, &g, err);
    if (st) {
        cv_error_wrap(err, "vocabulary file %s", path);
        return st;
    }
    cv_gguf_arr tokens;
    if (!cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens) || tokens.type != CV_GGUF_STRING || !tokens.n ||
        tokens.n > UINT32_MAX) {
        st = cv_errorf(err, CV_EFORMAT, "vocabulary file %s has no tokenizer.ggml.tokens strings", path);
        goto err;
    }
    *n_vocab = (uint32_t)tokens.n;
    for (int64_t i = 0; i < cv_gguf_n_kv(g); i++) {
        const cv_str k = cv_gguf_kv_key(g, i);
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) || k.len > 200) continue;
        char key[256];
        memcpy(key, k.ptr, k.len);
        key[k.len] = 0;
        if ((st = copy_kv(w, g, i, key, err))) goto err;
    }
err:
    cv_gguf_close(g);
    return st;
}

/* ---- the model ---- */

typedef struct tensor_spec {
    char name[64];
    uint32_t n_dims;
    int64_t ne[3];
    int fill;
    const float *values;  /* FILL_VALUES */
} tensor_spec;

/* ne1 0: a vector; ne2 0: a matrix; else [ne0, ne1, ne2] (one ne1 x ne0 matrix per expert). */
static void spec3(tensor_spec *t, int layer, const char *what, int64_t ne0, int64_t ne1, int64_t ne2, int fill) {
    if (layer >= 0) snprintf(t->name, sizeof t->name, "blk.%d.%s", layer, what);
    else snprintf(t->name, sizeof t->name, "%s", what);
    t->n_dims = ne2 ? 3 : ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->ne[2] = ne2 ? ne2 : 1;
    t->fill = fill;
}

static void spec(tensor_spec *t, int layer, const char *what, int64_t ne0, int64_t ne1, int fill) {
    spec3(t, layer, what, ne0, ne1, 0, fill);
}

static int64_t head_dim_of(const cv_synth_shape *s) { return s->head_dim ? s->head_dim : s->n_embd / s->n_head; }

static uint32_t n_rot_of(const cv_synth_shape *s) { return s->n_rot ? s->n_rot : (uint32_t)head_dim_of(s); }

static int is_mla(const cv_synth_shape *s) { return s->kv_lora > 0; }

/* Frequency factors of the shape's rope scaling: llama's rope_freqs, or phi3's short
 * then long factors (made up: short ones near 1, long ones growing to the factor). */
typedef struct rope_tables {
    float v[3][512];
    int n;  /* tables used */
} rope_tables;

static void make_rope_tables(const cv_synth_shape *s, rope_tables *r) {
    const int32_t half = (int32_t)n_rot_of(s) / 2;
    r->n = 0;
    if (!s->rope_orig_ctx || is_mla(s)) return;  /* deepseek2's YaRN is keys only */
    if (!strcmp(s->arch, "llama")) {
        const cv_llama3_rope l3 = {.factor = s->rope_factor, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                                   .original_context = (float)s->rope_orig_ctx};
        cv_llama3_rope_factors(&l3, s->rope_base, (int32_t)n_rot_of(s), r->v[0]);
        r->n = 1;
    } else if (!strcmp(s->arch, "phi3")) {
        for (int32_t i = 0; i < half; i++) {
            const float x = half > 1 ? (float)i / (float)(half - 1) : 0;
            r->v[0][i] = 1.0f + 0.25f * x;
            r->v[1][i] = 1.0f + (s->rope_factor - 1.0f) * x * x;
        }
        r->n = 2;
    }
}

/* A deepseek2 layer's tensors, as llama.cpp's converter writes them for MLA. */
static int64_t mla_layer_specs(const cv_synth_shape *s, int l, tensor_spec *t) {
    const int64_t H = s->n_head, hq = (int64_t)s->qk_nope + n_rot_of(s), R = s->kv_lora;
    const int64_t fs = (int64_t)s->n_shared * s->n_ff_exp;
    int64_t n = 0;
    if (s->q_lora) {
        spec(&t[n++], l, "attn_q_a.weight", s->n_embd, s->q_lora, FILL_NORMAL);
        spec(&t[n++], l, "attn_q_a_norm.weight", s->q_lora, 0, FILL_ONES);
        spec(&t[n++], l, "attn_q_b.weight", s->q_lora, H * hq, FILL_NORMAL);
    } else {
        spec(&t[n++], l, "attn_q.weight", s->n_embd, H * hq, FILL_NORMAL);
    }
    spec(&t[n++], l, "attn_kv_a_mqa.weight", s->n_embd, R + n_rot_of(s), FILL_NORMAL);
    spec(&t[n++], l, "attn_kv_a_norm.weight", R, 0, FILL_ONES);
    spec3(&t[n++], l, "attn_k_b.weight", s->qk_nope, R, H, FILL_NORMAL);
    spec3(&t[n++], l, "attn_v_b.weight", R, s->v_head, H, FILL_NORMAL);
    spec(&t[n++], l, "attn_output.weight", H * s->v_head, s->n_embd, FILL_NORMAL);
    spec(&t[n++], l, "ffn_norm.weight", s->n_embd, 0, FILL_ONES);
    if ((uint32_t)l < s->n_dense_lead) {
        spec(&t[n++], l, "ffn_gate.weight", s->n_embd, s->n_ff, FILL_NORMAL);
        spec(&t[n++], l, "ffn_up.weight", s->n_embd, s->n_ff, FILL_NORMAL);
        spec(&t[n++], l, "ffn_down.weight", s->n_ff, s->n_embd, FILL_NORMAL);
        return n;
    }
    spec(&t[n++], l, "ffn_gate_inp.weight", s->n_embd, s->n_expert, FILL_NORMAL);
    if (s->sigmoid) spec(&t[n++], l, "exp_probs_b.bias", s->n_expert, 0, FILL_NORMAL);
    spec3(&t[n++], l, "ffn_gate_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, FILL_NORMAL);
    spec3(&t[n++], l, "ffn_down_exps.weight", s->n_ff_exp, s->n_embd, s->n_expert, FILL_NORMAL);
    spec3(&t[n++], l, "ffn_up_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, FILL_NORMAL);
    if (fs) {
        spec(&t[n++], l, "ffn_gate_shexp.weight", s->n_embd, fs, FILL_NORMAL);
        spec(&t[n++], l, "ffn_down_shexp.weight", fs, s->n_embd, FILL_NORMAL);
        spec(&t[n++], l, "ffn_up_shexp.weight", s->n_embd, fs, FILL_NORMAL);
    }
    return n;
}

/* The tensors llama.cpp's converter writes for the shape, in its usual order. */
static int64_t build_specs(const cv_synth_shape *s, uint32_t n_layer, uint32_t n_vocab, const rope_tables *rt,
                           tensor_spec *t) {
    const int64_t hd = head_dim_of(s), q = hd * s->n_head, kv = hd * s->n_head_kv;
    const int gemma = !strcmp(s->arch, "gemma3"), phi3 = !strcmp(s->arch, "phi3");
    int64_t n = 0;
    spec(&t[n++], -1, "token_embd.weight", s->n_embd, n_vocab, FILL_NORMAL);
    static const char *const rope_names[2][2] = {{"rope_freqs.weight", NULL},
                                                 {"rope_factors_short.weight", "rope_factors_long.weight"}};
    for (int i = 0; i < rt->n; i++) {
        spec(&t[n], -1, rope_names[phi3][i], n_rot_of(s) / 2, 0, FILL_VALUES);
        t[n++].values = rt->v[i];
    }
    for (int l = 0; l < (int)n_layer; l++) {
        spec(&t[n++], l, "attn_norm.weight", s->n_embd, 0, FILL_ONES);
        if (is_mla(s)) {
            n += mla_layer_specs(s, l, t + n);
            continue;
        }
        if (phi3) {
            spec(&t[n++], l, "attn_qkv.weight", s->n_embd, q + 2 * kv, FILL_NORMAL);
            spec(&t[n++], l, "attn_output.weight", q, s->n_embd, FILL_NORMAL);
            spec(&t[n++], l, "ffn_norm.weight", s->n_embd, 0, FILL_ONES);
            spec(&t[n++], l, "ffn_up.weight", s->n_embd, 2 * (int64_t)s->n_ff, FILL_NORMAL);
            spec(&t[n++], l, "ffn_down.weight", s->n_ff, s->n_embd, FILL_NORMAL);
            continue;
        }
        spec(&t[n++], l, "attn_q.weight", s->n_embd, q, FILL_NORMAL);
        if (s->qkv_bias) spec(&t[n++], l, "attn_q.bias", q, 0, FILL_NORMAL);
        spec(&t[n++], l, "attn_k.weight", s->n_embd, kv, FILL_NORMAL);
        if (s->qkv_bias) spec(&t[n++], l, "attn_k.bias", kv, 0, FILL_NORMAL);
        spec(&t[n++], l, "attn_v.weight", s->n_embd, kv, FILL_NORMAL);
        if (s->qkv_bias) spec(&t[n++], l, "attn_v.bias", kv, 0, FILL_NORMAL);
        if (gemma || s->qk_norm) {
            spec(&t[n++], l, "attn_q_norm.weight", hd, 0, FILL_ONES);
            spec(&t[n++], l, "attn_k_norm.weight", hd, 0, FILL_ONES);
        }
        spec(&t[n++], l, "attn_output.weight", q, s->n_embd, FILL_NORMAL);
        if (gemma) spec(&t[n++], l, "post_attention_norm.weight", s->n_embd, 0, FILL_ONES);
        spec(&t[n++], l, "ffn_norm.weight", s->n_embd, 0, FILL_ONES);
        if (s->n_expert) {
            spec(&t[n++], l, "ffn_gate_inp.weight", s->n_embd, s->n_expert, FILL_NORMAL);
            spec3(&t[n++], l, "ffn_gate_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, FILL_NORMAL);
            spec3(&t[n++], l, "ffn_down_exps.weight", s->n_ff_exp, s->n_embd, s->n_expert, FILL_NORMAL);
            spec3(&t[n++], l, "ffn_up_exps.weight", s->n_embd, s->n_ff_exp, s->n_expert, FILL_NORMAL);
        } else {
            spec(&t[n++], l, "ffn_gate.weight", s->n_embd, s->n_ff, FILL_NORMAL);
            spec(&t[n++], l, "ffn_up.weight", s->n_embd, s->n_ff, FILL_NORMAL);
            spec(&t[n++], l, "ffn_down.weight", s->n_ff, s->n_embd, FILL_NORMAL);
        }
        if (gemma) spec(&t[n++], l, "post_ffw_norm.weight", s->n_embd, 0, FILL_ONES);
    }
    spec(&t[n++], -1, "output_norm.weight", s->n_embd, 0, FILL_ONES);
    if (!s->tied) spec(&t[n++], -1, "output.weight", s->n_embd, n_vocab, FILL_NORMAL);
    return n;
}

/* deepseek2's keys as llama.cpp's converter writes them (q_lora_rank 0 for none: llama.cpp
 * requires the key unless the model has V2-Lite's 27 layers). */
static cv_status write_mla_hparams(cv_gguf_writer *w, const cv_synth_shape *s, cv_error *err) {
    char key[96];
    cv_status st;
#define ARCH_KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, s->arch), key)
    if ((st = cv_gguf_set_u32(w, ARCH_KEY("leading_dense_block_count"), s->n_dense_lead, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.q_lora_rank"), s->q_lora, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.kv_lora_rank"), s->kv_lora, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.key_length"), s->kv_lora + n_rot_of(s), err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.value_length"), s->kv_lora, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.key_length_mla"), s->qk_nope + n_rot_of(s), err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.value_length_mla"), s->v_head, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("expert_shared_count"), s->n_shared, err)) ||
        (st = cv_gguf_set_f32(w, ARCH_KEY("expert_weights_scale"), s->expert_scale, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("expert_gating_func"), s->sigmoid ? 2 : 1, err)))
        return st;
    if (s->expert_norm && (st = cv_gguf_set_bool(w, ARCH_KEY("expert_weights_norm"), 1, err))) return st;
    if (s->n_groups &&
        ((st = cv_gguf_set_u32(w, ARCH_KEY("expert_group_count"), s->n_groups, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("expert_group_used_count"), s->n_group_used, err))))
        return st;
    if (s->rope_orig_ctx &&
        ((st = cv_gguf_set_str(w, ARCH_KEY("rope.scaling.type"), "yarn", err)) ||
         (st = cv_gguf_set_f32(w, ARCH_KEY("rope.scaling.factor"), s->rope_factor, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("rope.scaling.original_context_length"), s->rope_orig_ctx, err)) ||
         (st = cv_gguf_set_f32(w, ARCH_KEY("rope.scaling.yarn_log_multiplier"), s->yarn_log_mul, err))))
        return st;
#undef ARCH_KEY
    return CV_OK;
}

static cv_status write_hparams(cv_gguf_writer *w, const cv_synth_shape *s, const cv_synth_opts *o,
                               uint32_t n_layer, uint32_t n_vocab, cv_error *err) {
    char key[96], name[128];
    cv_status st;
    snprintf(name, sizeof name, "corvid synthetic %s seed %llu", s->name, (unsigned long long)o->seed);
#define ARCH_KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, s->arch), key)
    if ((st = cv_gguf_set_str(w, "general.architecture", s->arch, err)) ||
        (st = cv_gguf_set_str(w, "general.name", name, err)) ||
        (st = cv_gguf_set_u32(w, "general.file_type", cv_qrecipe_get(o->recipe)->file_type, err)) ||
        (st = cv_gguf_set_u32(w, "general.quantization_version", 2, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("context_length"), s->n_ctx, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("embedding_length"), s->n_embd, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("block_count"), n_layer, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("feed_forward_length"), s->n_ff, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.head_count"), s->n_head, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("attention.head_count_kv"), s->n_head_kv, err)) ||
        (st = cv_gguf_set_f32(w, ARCH_KEY("rope.freq_base"), s->rope_base, err)) ||
        (st = cv_gguf_set_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), s->rms_eps, err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("rope.dimension_count"), n_rot_of(s), err)) ||
        (st = cv_gguf_set_u32(w, ARCH_KEY("vocab_size"), n_vocab, err)))
        return st;
    if (is_mla(s) && (st = write_mla_hparams(w, s, err))) return st;
    if (s->head_dim &&
        ((st = cv_gguf_set_u32(w, ARCH_KEY("attention.key_length"), s->head_dim, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("attention.value_length"), s->head_dim, err))))
        return st;
    if (s->n_expert &&
        ((st = cv_gguf_set_u32(w, ARCH_KEY("expert_count"), s->n_expert, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("expert_used_count"), s->n_expert_used, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("expert_feed_forward_length"), s->n_ff_exp, err))))
        return st;
    /* gemma3: a short window, alternating with global layers, so that both kinds run
     * (and the window slides) within a test's few dozen positions. */
    if (!strcmp(s->arch, "gemma3") &&
        ((st = cv_gguf_set_u32(w, ARCH_KEY("attention.sliding_window"), 8, err)) ||
         (st = cv_gguf_set_u32(w, ARCH_KEY("attention.sliding_window_pattern"), 2, err))))
        return st;
    if (s->swa && (st = cv_gguf_set_u32(w, ARCH_KEY("attention.sliding_window"), s->swa, err))) return st;
    /* phi3 long-rope, as its converter writes it: the original context, and an
     * attention factor of sqrt(1 + ln(scale) / ln(original context)). */
    if (!strcmp(s->arch, "phi3") && s->rope_orig_ctx) {
        const double scale = (double)s->n_ctx / s->rope_orig_ctx;
        const float af = scale > 1 ? (float)sqrt(1 + log(scale) / log((double)s->rope_orig_ctx)) : 1.0f;
        if ((st = cv_gguf_set_u32(w, ARCH_KEY("rope.scaling.original_context_length"), s->rope_orig_ctx, err)) ||
            (st = cv_gguf_set_f32(w, ARCH_KEY("rope.scaling.attn_factor"), af, err)))
            return st;
    }
#undef ARCH_KEY
    return CV_OK;
}

cv_status cv_synth_write(const cv_synth_shape *s, const cv_synth_opts *o, const char *out_path, cv_error *err) {
    if (!cv_qrecipe_get(o->recipe)) return cv_errorf(err, CV_EINVAL, "recipe %d is not a known recipe", (int)o->recipe);
    const uint32_t n_layer = o->n_layers ? o->n_layers : s->n_layer;
    const int64_t max_tensors = 6 + (int64_t)n_layer * 24;
    rope_tables *rt = calloc(1, sizeof *rt);
    tensor_spec *specs = calloc((size_t)max_tensors, sizeof *specs);
    void **bufs = calloc((size_t)max_tensors, sizeof *bufs);
    cv_gguf_writer *w = cv_gguf_writer_new();
    cv_threadpool *pool = NULL;
    int64_t n = 0;
    cv_status st = CV_OK;
    if (!specs || !bufs || !w || !rt) {
        st = cv_errorf(err, CV_ENOMEM, "no memory for a model of %u layers", n_layer);
        goto err;
    }
    uint32_t n_vocab = s->n_vocab;
    /* hparams first, as converters write them; the tokenizer keys after */
    if ((st = write_hparams(w, s, o, n_layer, n_vocab, err))) goto err;
    if (o->vocab_from) {
        if ((st = copy_vocab(w, o->vocab_from, &n_vocab, err))) goto err;
        if (n_vocab != s->n_vocab) {
            if (o->log)
                fprintf(o->log, "synthetic: %s has %u tokens, not %s's %u: the model uses %u\n", o->vocab_from,
                        n_vocab, s->name, s->n_vocab, n_vocab);
            char key[96];
            snprintf(key, sizeof key, "%s.vocab_size", s->arch);
            if ((st = cv_gguf_set_u32(w, key, n_vocab, err))) goto err;
        }
    } else if ((st = write_spm_vocab(w, n_vocab, !strcmp(s->arch, "phi3") ? "<|endoftext|>" : NULL, err))) {
        goto err;
    }
    if ((st = cv_threadpool_create(o->n_threads, &pool, err))) goto err;
    make_rope_tables(s, rt);
    n = build_specs(s, n_layer, n_vocab, rt, specs);
    for (int64_t i = 0; i < n; i++) {
        const tensor_spec *t = &specs[i];
        const char *note;
        const cv_type type = cv_qrecipe_pick(o->recipe, t->name, t->n_dims, t->ne, (int)n_layer, !s->tied, &note);
        if (note && o->log)
            fprintf(o->log, "synthetic: %s (%lld columns) -> %s: %s\n", t->name, (long long)t->ne[0],
                    cv_type_get(type)->name, note);
        gen_job j = {o->seed, (uint64_t)i, t->fill, t->values, type, t->ne[0], t->ne[1] * t->ne[2],
                     cv_type_row_bytes(type, t->ne[0]), NULL, 0};
        const size_t bytes = j.row_bytes * (size_t)j.rows;
        if (!(bufs[i] = j.dst = malloc(bytes))) {
            st = cv_errorf(err, CV_ENOMEM, "no memory for %zu bytes of tensor %s", bytes, t->name);
            goto err;
        }
        cv_threadpool_run(pool, gen_task, &j);
        if (j.failed) {
            st = cv_errorf(err, CV_ENOMEM, "no memory for a row of %lld floats", (long long)j.n);
            goto err;
        }
        if ((st = cv_gguf_add_tensor(w, t->name, type, t->n_dims, t->ne, j.dst, err))) goto err;
    }
    st = cv_gguf_write(w, out_path, err);
err:
    for (int64_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(specs);
    free(rt);
    cv_threadpool_destroy(pool);
    cv_gguf_writer_free(w);
    return st;
}
