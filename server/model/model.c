#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rope_factors.h"
#include "moe.h"
#include "threadpool.h"

typedef struct cv_layer {
    float *attn_norm, *ffn_norm;
    float *post_attn_norm, *post_ffn_norm;  /* gemma3 sandwich norms, else NULL */
    float *q_norm, *k_norm;                 /* gemma3 / qwen3 per-head QK-norm, else NULL */
    float *bq, *bk, *bv;                    /* qwen2 biases, else NULL */
    cv_tensor wq, wk, wv, wo;
    cv_tensor gate, up, down;               /* a dense ffn (data NULL in a mixture layer) */
    cv_tensor router;                       /* a mixture layer: ffn_gate_inp (data NULL if dense) */
    cv_tensor *exp_gate, *exp_up, *exp_down;  /* [n_expert] views of the 3-D expert tensors */
    float *h_exp_bias;                      /* deepseek2 V3: exp_probs_b (host; routing is on the host), or NULL */
    cv_tensor sh_gate, sh_up, sh_down;      /* deepseek2: the shared experts' ffn (data NULL if none) */
    /* deepseek2 MLA: wq is attn_q or attn_q_b (after attn_q_a and its norm) */
    cv_tensor wq_a, wkv_a, wk_b, wv_b;
    float *q_a_norm, *kv_a_norm;
    int sliding;                            /* attends to a sliding window */
    cv_rope_params rope;
} cv_layer;

struct cv_model {
    cv_backend *be;
    cv_hparams hp;
    cv_model_opts opts;
    /* This shard: rank of n_ranks, and its share of the heads and ffn rows (all of
     * them when n_ranks is 1). */
    int32_t rank, n_ranks;
    int32_t n_heads, n_kv_heads, ffn_dim, ffn_exp_dim, ffn_sh_dim;
    int32_t vocab_lo, vocab_n;              /* its block of the vocabulary (logits columns) */
    cv_glu_kind glu;
    cv_tensor tok_embd, output;
    float *output_norm;
    float *rope_factors;                    /* llama3 (or phi3 short) frequency factors, or NULL */
    float *rope_long;                       /* phi3 long-rope factors, or NULL */
    cv_layer *layers;
    uint8_t *sliding;                       /* per layer: its `sliding` flag (kv config) */
    uint64_t weight_bytes;
    uint64_t copied_bytes;   /* weights packed into the model's own memory */
    const cv_gguf *loading;  /* the file being loaded (its pages are dropped once copied) */
    int keep_rows;           /* the tensor being loaded must stay in the file's rows */
    /* Backend vectors allocated at load (norms, biases, scratch), freed at the end. */
    void **allocs;
    int n_allocs, cap_allocs;
    /* Scratch, backend memory, sized for max_batch rows (logit rows: max_logits). */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *xo, *logits;
    int32_t *d_tokens, *d_pos, *d_out_rows;
    cv_attn_row *d_rows, *d_rows_swa;
    /* Host staging of the same small arrays. */
    int32_t *h_out_rows;
    cv_attn_row *h_rows, *h_rows_swa;
    /* A mixture: the router and its plan (host), router logits (backend and host), one
     * expert's gathered inputs and outputs, the layer's summed output, and the plan's
     * pairs in backend memory. */
    cv_moe_router moe;
    cv_moe_plan plan;
    float *router_logits, *h_router_logits, *xe, *ye, *xm, *d_moe_w;
    int32_t *d_moe_rows;
    /* MLA: q_a rows, the latent alone, the absorbed queries [latent | rope] per head,
     * and the heads' values after attn_v_b. */
    float *qa, *lat, *qm, *vo;
};

const char *cv_arch_name(cv_arch a) {
    switch (a) {
    case CV_ARCH_LLAMA: return "llama";
    case CV_ARCH_QWEN2: return "qwen2";
    case CV_ARCH_GEMMA3: return "gemma3";
    case CV_ARCH_PHI3: return "phi3";
    case CV_ARCH_QWEN3: return "qwen3";
    case CV_ARCH_QWEN3MOE: return "qwen3moe";
    case CV_ARCH_DEEPSEEK2: return "deepseek2";
    }
    return "unknown";
}

const cv_hparams *cv_model_hparams(const cv_model *m) { return &m->hp; }
const cv_model_opts *cv_model_options(const cv_model *m) { return &m->opts; }
uint64_t cv_model_weight_bytes(const cv_model *m) { return m->weight_bytes; }
uint64_t cv_model_copied_bytes(const cv_model *m) { return m->copied_bytes; }

/* ---- hyperparameters ---- */

static const char *arch_key(char *buf, size_t n, const cv_hparams *hp, const char *suffix) {
    snprintf(buf, n, "%s.%s", cv_arch_name(hp->arch), suffix);
    return buf;
}

/* A mixture: expert_count, expert_used_count, and expert_feed_forward_length (without
 * it, feed_forward_length / experts used, as llama.cpp falls back). */
static cv_status read_moe_hparams(const cv_gguf *g, cv_hparams *hp, cv_error *err) {
    char k[128];
    uint64_t e = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "expert_count"), 0);
    if (e < 1 || e > CV_MOE_MAX_EXPERTS)
        return cv_errorf(err, e ? CV_ERANGE : CV_ENOTFOUND, "model: %s = %llu (need 1..%d)", k,
                         (unsigned long long)e, CV_MOE_MAX_EXPERTS);
    uint64_t used = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "expert_used_count"), 0);
    if (used < 1 || used > e)
        return cv_errorf(err, used ? CV_ERANGE : CV_ENOTFOUND, "model: %s = %llu (need 1..%llu)", k,
                         (unsigned long long)used, (unsigned long long)e);
    uint64_t ff = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "expert_feed_forward_length"),
                                  (uint64_t)hp->ffn_dim / used);
    if (ff < 1 || ff > (1u << 22))
        return cv_errorf(err, CV_ERANGE, "model: %s = %llu (need 1..%u)", k, (unsigned long long)ff, 1u << 22);
    hp->n_expert = (int32_t)e;
    hp->n_expert_used = (int32_t)used;
    hp->ffn_exp_dim = (int32_t)ff;
    return CV_OK;
}

/* deepseek2's mixture (read_moe_hparams, then the shared experts, the dense lead, the
 * router's options) and its YaRN rope and attention scale, as llama.cpp computes them
 * (llama-context.cpp and the deepseek2 graph): with L = ln(factor) and a yarn_log_multiplier
 * key of value y (the converter writes 0.1 * mscale_all_dim), the rope turns with YaRN's
 * mix (ext_factor 1, beta_fast 32, beta_slow 1: llama.cpp ignores the file's yarn_* keys
 * for this architecture) and magnitude a (the file's rope.scaling.attn_factor, times
 * 1 + 0.1 L when y is absent), and q.k is scaled by (a * (1 + y L))^2 / sqrt(qk_nope +
 * rope): the whole mscale^2 of DeepSeek's reference lands on the scores. */
static cv_status read_deepseek2_hparams(const cv_gguf *g, cv_hparams *hp, cv_error *err) {
    char k[128];
    cv_status s = read_moe_hparams(g, hp, err);
    if (s) return s;
    const struct { const char *key; int32_t *dst; uint32_t max; } ints[] = {
        {"leading_dense_block_count", &hp->n_dense_lead, (uint32_t)hp->n_layers},
        {"expert_shared_count", &hp->n_expert_shared, 64},
        {"expert_group_count", &hp->n_expert_groups, (uint32_t)hp->n_expert},
        {"expert_group_used_count", &hp->n_group_used, (uint32_t)hp->n_expert},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint64_t v = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, ints[i].key), 0);
        if (v > ints[i].max)
            return cv_errorf(err, CV_ERANGE, "model: %s = %llu (need 0..%u)", k, (unsigned long long)v, ints[i].max);
        *ints[i].dst = (int32_t)v;
    }
    if (hp->n_expert_groups > 1 && (hp->n_expert % hp->n_expert_groups || hp->n_group_used < 1 ||
                                    hp->n_group_used > hp->n_expert_groups))
        return cv_errorf(err, CV_ERANGE, "model: %s.expert_group_count %d / expert_group_used_count %d do not "
                         "cut %d experts", cv_arch_name(hp->arch), hp->n_expert_groups, hp->n_group_used, hp->n_expert);
    uint64_t gf = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "expert_gating_func"), 0);
    if (gf > 2)
        return cv_errorf(err, CV_EUNSUPPORTED, "model: %s = %llu is not supported (1 softmax, 2 sigmoid)", k,
                         (unsigned long long)gf);
    hp->expert_sigmoid = gf == 2;
    hp->expert_norm = cv_gguf_get_bool(g, arch_key(k, sizeof k, hp, "expert_weights_norm"), 0);
    hp->expert_scale = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "expert_weights_scale"), 0.0f);
    if (!(hp->expert_scale >= 0 && hp->expert_scale < 1000))
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need 0..1000)", k, hp->expert_scale);
    const float y = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.yarn_log_multiplier"), 0.0f);
    if (!(y >= 0 && y < 10))
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need 0..10)", k, y);
    const float L = logf(1.0f / hp->rope_freq_scale);
    if (hp->rope_ext_factor != 0) {
        if (y == 0) hp->rope_mscale *= 1.0f + 0.1f * L;
        /* ggml_rope_yarn_corr_dims with beta_fast 32, beta_slow 1 */
        const float n = (float)hp->n_rot, two_ln_base = 2 * logf(hp->rope_base);
        const float lo = floorf(n * logf((float)hp->n_ctx_orig / (32 * 2 * (float)M_PI)) / two_ln_base);
        const float hi = ceilf(n * logf((float)hp->n_ctx_orig / (1 * 2 * (float)M_PI)) / two_ln_base);
        hp->rope_yarn_lo = lo > 0 ? lo : 0;
        hp->rope_yarn_hi = hi < n - 1 ? hi : n - 1;
    }
    const float mscale = hp->rope_mscale * (1.0f + y * L);
    hp->attn_scale = mscale * mscale / sqrtf((float)(hp->qk_nope + hp->n_rot));
    return CV_OK;
}

/* The head size (key_length = value_length, or embedding / heads) and the rotated part. */
static cv_status read_head_size(const cv_gguf *g, cv_hparams *hp, cv_error *err) {
    char k[128];
    /* Without key_length the head size is embedding / heads, which must then be whole. */
    uint64_t hd = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "attention.key_length"), UINT64_MAX);
    if (hd == UINT64_MAX && hp->dim % hp->n_heads)
        return cv_errorf(err, CV_ERANGE, "model: %s.attention.head_count = %d does not divide "
                         "embedding_length %d (and %s is absent)", cv_arch_name(hp->arch), hp->n_heads,
                         hp->dim, k);
    if (hd == UINT64_MAX) hd = (uint64_t)(hp->dim / hp->n_heads);
    uint64_t hdv = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "attention.value_length"), hd);
    if (hd == 0 || hd > 1024 || hd % 2 || hdv != hd)
        return cv_errorf(err, CV_ERANGE,
                         "model: head size key_length %llu / value_length %llu (need equal, even, <= 1024)",
                         (unsigned long long)hd, (unsigned long long)hdv);
    hp->head_dim = (int32_t)hd;
    uint64_t rot = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "rope.dimension_count"), hd);
    if (rot == 0 || rot > hd || rot % 2)
        return cv_errorf(err, CV_ERANGE, "model: %s = %llu (need even, <= head size %llu)", k,
                         (unsigned long long)rot, (unsigned long long)hd);
    hp->n_rot = (int32_t)rot;
    return CV_OK;
}

/* deepseek2: MLA files (llama.cpp's converter since the split attn_k_b / attn_v_b) give
 * key_length = kv_lora_rank + rope part and value_length = kv_lora_rank (the cache's
 * one "head"), the query and value heads in key_length_mla / value_length_mla, and one
 * kv head. Older files with a fused attn_kv_b and no *_mla keys are refused. */
static cv_status read_mla_sizes(const cv_gguf *g, cv_hparams *hp, cv_error *err) {
    char k[128];
    const struct { const char *key; int32_t *dst; uint32_t lo, max; } ints[] = {
        {"attention.kv_lora_rank", &hp->kv_lora, 1, 1u << 16},
        {"rope.dimension_count", &hp->n_rot, 2, 1024},
        {"attention.key_length_mla", &hp->qk_nope, 3, 2048},
        {"attention.value_length_mla", &hp->v_head, 1, 1024},
        {"attention.key_length", &hp->head_dim, 3, 1u << 16},
        {"attention.q_lora_rank", &hp->q_lora, 0, 1u << 16},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint64_t v = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, ints[i].key), 0);
        if (v < ints[i].lo || v > ints[i].max)
            return cv_errorf(err, v ? CV_ERANGE : CV_ENOTFOUND, "model: %s = %llu (need %u..%u)%s", k,
                             (unsigned long long)v, ints[i].lo, ints[i].max,
                             v ? "" : "; a deepseek2 file without the MLA keys (fused attn_kv_b) is not supported");
        *ints[i].dst = (int32_t)v;
    }
    uint64_t vl = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "attention.value_length"), 0);
    if (hp->n_rot % 2 || hp->qk_nope <= hp->n_rot || hp->head_dim != hp->kv_lora + hp->n_rot ||
        vl != (uint64_t)hp->kv_lora || hp->n_kv_heads != 1)
        return cv_errorf(err, CV_ERANGE,
                         "model: deepseek2 sizes do not fit multi-head latent attention: key_length %d, "
                         "value_length %llu, kv_lora_rank %d, rope.dimension_count %d (even, below "
                         "key_length_mla %d), head_count_kv %d (need key_length = kv_lora_rank + rope, "
                         "value_length = kv_lora_rank, one kv head)",
                         hp->head_dim, (unsigned long long)vl, hp->kv_lora, hp->n_rot, hp->qk_nope,
                         hp->n_kv_heads);
    hp->qk_nope -= hp->n_rot;
    return CV_OK;
}

static cv_status read_hparams(const cv_gguf *g, cv_hparams *hp, cv_error *err) {
    char k[128];
    memset(hp, 0, sizeof *hp);
    cv_str a = cv_gguf_get_str(g, "general.architecture");
    if (!a.ptr) return cv_errorf(err, CV_ENOTFOUND, "model: general.architecture is missing");
    if (a.len == 5 && !memcmp(a.ptr, "llama", 5)) hp->arch = CV_ARCH_LLAMA;
    else if (a.len == 5 && !memcmp(a.ptr, "qwen2", 5)) hp->arch = CV_ARCH_QWEN2;
    else if (a.len == 6 && !memcmp(a.ptr, "gemma3", 6)) hp->arch = CV_ARCH_GEMMA3;
    else if (a.len == 4 && !memcmp(a.ptr, "phi3", 4)) hp->arch = CV_ARCH_PHI3;
    else if (a.len == 5 && !memcmp(a.ptr, "qwen3", 5)) hp->arch = CV_ARCH_QWEN3;
    else if (a.len == 8 && !memcmp(a.ptr, "qwen3moe", 8)) hp->arch = CV_ARCH_QWEN3MOE;
    else if (a.len == 9 && !memcmp(a.ptr, "deepseek2", 9)) hp->arch = CV_ARCH_DEEPSEEK2;
    else
        return cv_errorf(err, CV_EUNSUPPORTED,
                         "model: general.architecture = '%.*s' is not supported (llama, qwen2, gemma3, "
                         "phi3, qwen3, qwen3moe, deepseek2)",
                         (int)(a.len > 64 ? 64 : a.len), a.ptr);

    /* Required integers: absent reads as 0 and fails the range check below. The
     * limits are far above any real model; shapes are checked against the tensors. */
    const struct { const char *key; int32_t *dst; uint32_t max; } ints[] = {
        {"context_length", &hp->n_ctx_train, 1u << 24},
        {"embedding_length", &hp->dim, 1u << 20},
        {"block_count", &hp->n_layers, 4096},
        {"feed_forward_length", &hp->ffn_dim, 1u << 22},
        {"attention.head_count", &hp->n_heads, 4096},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        /* Read as 64 bits: a UINT64 above 2^32 is reported as it is, not as 0. */
        uint64_t v = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, ints[i].key), 0);
        if (v == 0 || v > ints[i].max)
            return cv_errorf(err, v ? CV_ERANGE : CV_ENOTFOUND, "model: %s = %llu (need 1..%u)",
                             k, (unsigned long long)v, ints[i].max);
        *ints[i].dst = (int32_t)v;
    }
    uint64_t kvh = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "attention.head_count_kv"),
                                   (uint64_t)hp->n_heads);
    if (kvh == 0 || kvh > (uint64_t)hp->n_heads || hp->n_heads % (int32_t)kvh)
        return cv_errorf(err, CV_ERANGE, "model: %s = %llu does not divide head_count %d", k,
                         (unsigned long long)kvh, hp->n_heads);
    hp->n_kv_heads = (int32_t)kvh;
    cv_status s = hp->arch == CV_ARCH_DEEPSEEK2 ? read_mla_sizes(g, hp, err) : read_head_size(g, hp, err);
    if (s) return s;
    hp->rms_eps = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "attention.layer_norm_rms_epsilon"),
                                  1e-5f);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need 0 < eps < 1)", k, hp->rms_eps);
    hp->rope_base = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.freq_base"), 10000.0f);
    if (!(hp->rope_base > 1))
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need > 1)", k, hp->rope_base);
    hp->rope_base_local = hp->rope_base;
    hp->rope_freq_scale = 1.0f;
    /* llama3 and longrope scale by frequency factors (tensors, or llama3's keys: load_weights). */
    cv_str st = cv_gguf_get_str(g, arch_key(k, sizeof k, hp, "rope.scaling.type"));
    if (st.ptr && !(st.len == 4 && !memcmp(st.ptr, "none", 4))) {
        float f = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.factor"), 1.0f);
        const int ds2 = hp->arch == CV_ARCH_DEEPSEEK2;
        if (ds2 && st.len == 4 && !memcmp(st.ptr, "yarn", 4) && f >= 1) {
            hp->rope_freq_scale = 1.0f / f;
            hp->rope_ext_factor = 1.0f;
        } else if (!ds2 && st.len == 6 && !memcmp(st.ptr, "linear", 6) && f >= 1) {
            hp->rope_freq_scale = 1.0f / f;
        } else if (ds2 || (!(st.len == 6 && !memcmp(st.ptr, "llama3", 6)) &&
                           !(hp->arch == CV_ARCH_PHI3 && st.len == 8 && !memcmp(st.ptr, "longrope", 8)))) {
            return cv_errorf(err, CV_EUNSUPPORTED,
                             "model: %s.rope.scaling.type = '%.*s' (factor %g) is not supported "
                             "(%s)", cv_arch_name(hp->arch),
                             (int)(st.len > 32 ? 32 : st.len), st.ptr, f,
                             ds2 ? "yarn with a factor >= 1 for deepseek2"
                                 : "linear, llama3; longrope for phi3; yarn for deepseek2");
        }
    }
    /* ggml's attn_factor: multiplies cos and sin (Phi-3's long-rope files set it). */
    hp->rope_mscale = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.attn_factor"), 1.0f);
    if (!(hp->rope_mscale > 0 && hp->rope_mscale < 16))
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need 0 < factor < 16)", k, hp->rope_mscale);
    uint64_t orig = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "rope.scaling.original_context_length"),
                                    (uint64_t)hp->n_ctx_train);
    if (orig == 0 || orig > (1u << 24))
        return cv_errorf(err, CV_ERANGE, "model: %s = %llu (need 1..%u)", k, (unsigned long long)orig, 1u << 24);
    hp->n_ctx_orig = (int32_t)orig;
    hp->rope_mode = hp->arch == CV_ARCH_LLAMA || hp->arch == CV_ARCH_DEEPSEEK2 ? CV_ROPE_NORM : CV_ROPE_NEOX;
    /* Mistral's llama files may set a window, which every layer then uses. (phi3 files
     * set one too, which llama.cpp ignores for lack of a per-layer pattern in the
     * converters, and so do we: results then match it.) */
    if (hp->arch == CV_ARCH_LLAMA) {
        uint64_t w = cv_gguf_get_u64(g, arch_key(k, sizeof k, hp, "attention.sliding_window"), 0);
        if (w > (1u << 24))
            return cv_errorf(err, CV_ERANGE, "model: %s = %llu (limit %u)", k, (unsigned long long)w, 1u << 24);
        hp->sliding_window = w < (uint64_t)hp->n_ctx_train ? (int32_t)w : 0;
    }
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;
    hp->final_softcap = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "final_logit_softcapping"), 0.0f);
    if (hp->final_softcap < 0)
        return cv_errorf(err, CV_ERANGE, "model: %s = %g (need >= 0)", k, hp->final_softcap);

    if (hp->arch == CV_ARCH_GEMMA3) {
        /* Gemma 3: five local layers (rope base 10k, sliding window) per global one. */
        hp->sliding_window = (int32_t)cv_gguf_get_u32(
            g, arch_key(k, sizeof k, hp, "attention.sliding_window"), 0);
        if (hp->sliding_window <= 0)
            return cv_errorf(err, CV_ENOTFOUND, "model: %s is missing or 0", k);
        /* An array of per-layer flags is read in load_weights. */
        hp->swa_period = (int32_t)cv_gguf_get_u32(
            g, arch_key(k, sizeof k, hp, "attention.sliding_window_pattern"), 6);
        if (hp->swa_period < 1)
            return cv_errorf(err, CV_ERANGE, "model: %s = %d (need >= 1)", k, hp->swa_period);
        hp->rope_base_local = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.freq_base_swa"), 10000.0f);
        if (!(hp->rope_base_local > 1))
            return cv_errorf(err, CV_ERANGE, "model: %s = %g (need > 1)", k, hp->rope_base_local);
        hp->embd_scale = sqrtf((float)hp->dim);
        /* q.k is scaled by 1/sqrt(query_pre_attn_scalar): the head size, except for the
         * 27B model (62 layers), whose scalar is dim / heads (as llama.cpp has it). */
        float qpa = hp->n_layers == 62 ? (float)hp->dim / (float)hp->n_heads : (float)hp->head_dim;
        qpa = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "attention.query_pre_attn_scalar"), qpa);
        if (!(qpa > 0))
            return cv_errorf(err, CV_ERANGE, "model: %s = %g (need > 0)", k, qpa);
        hp->attn_scale = 1.0f / sqrtf(qpa);
    }
    if (hp->arch == CV_ARCH_QWEN3MOE) return read_moe_hparams(g, hp, err);
    if (hp->arch == CV_ARCH_DEEPSEEK2) return read_deepseek2_hparams(g, hp, err);
    return CV_OK;
}

/* Llama 3 frequency factors from the rope.scaling.* keys (defaults: Llama 3.1's). */
static void llama3_rope_factors(const cv_gguf *g, const cv_hparams *hp, float *out) {
    char k[128];
    const cv_llama3_rope r = {
        .factor = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.factor"), 8.0f),
        .low_freq_factor = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.low_freq_factor"), 1.0f),
        .high_freq_factor = cv_gguf_get_f32(g, arch_key(k, sizeof k, hp, "rope.scaling.high_freq_factor"), 4.0f),
        .original_context = (float)cv_gguf_get_u32(
            g, arch_key(k, sizeof k, hp, "rope.scaling.original_context_length"), 8192)};
    cv_llama3_rope_factors(&r, hp->rope_base, hp->n_rot, out);
}

/* ---- tensors ---- */

static cv_status track(cv_model *m, void *p, cv_error *err) {
    if (m->n_allocs == m->cap_allocs) {
        int cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
        void **a = realloc(m->allocs, (size_t)cap * sizeof *a);
        if (!a) {
            m->be->ops->free(m->be, p);
            return cv_errorf(err, CV_ENOMEM, "model: out of memory");
        }
        m->allocs = a;
        m->cap_allocs = cap;
    }
    m->allocs[m->n_allocs++] = p;
    return CV_OK;
}

static cv_status alloc_scratch(cv_model *m, void **out, size_t bytes, cv_error *err) {
    cv_status s = m->be->ops->alloc(m->be, bytes, out, err);
    if (s) return cv_error_wrap(err, "model: scratch of %zu bytes", bytes);
    return track(m, *out, err);
}

/* The tensor `name` with exactly ne0 x ne1 x ne2 elements (ne2 == 0: a matrix; ne1 ==
 * 0 too: a vector of ne0). */
static cv_status find3(const cv_gguf *g, const char *name, int64_t ne0, int64_t ne1, int64_t ne2,
                       const cv_gguf_tensor **out, cv_error *err) {
    const cv_gguf_tensor *t = cv_gguf_find_tensor(g, name);
    *out = t;
    if (!t) return cv_errorf(err, CV_ENOTFOUND, "model: tensor %s is missing", name);
    const uint32_t want_dims = ne2 ? 3 : ne1 ? 2 : 1;
    if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1) || (ne2 && t->ne[2] != ne2)) {
        if (want_dims == 3 || t->n_dims == 3)
            return cv_errorf(err, CV_EFORMAT,
                             "model: tensor %s has shape [%lld, %lld, %lld] (%u dims), expected [%lld, %lld, %lld]",
                             name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], t->n_dims,
                             (long long)ne0, (long long)(ne1 ? ne1 : 1), (long long)(ne2 ? ne2 : 1));
        return cv_errorf(err, CV_EFORMAT,
                         "model: tensor %s has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                         name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                         (long long)ne0, (long long)(ne1 ? ne1 : 1));
    }
    const cv_type_info *ti = cv_type_get(t->type);
    if (!ti || !ti->supported)
        return cv_errorf(err, CV_EUNSUPPORTED, "model: tensor %s has type %s (%u), not supported",
                         name, ti && ti->name ? ti->name : "unknown", (unsigned)t->type);
    return CV_OK;
}

static cv_status find(const cv_gguf *g, const char *name, int64_t ne0, int64_t ne1,
                      const cv_gguf_tensor **out, cv_error *err) {
    return find3(g, name, ne0, ne1, 0, out, err);
}

/* Which part of a weight a shard holds: all of it, its block of rows (the outputs of
 * a column-parallel projection, or of a vector; cv_split_range's blocks, even where
 * plan_shard checked the count divides) or of columns (the inputs of a row-parallel
 * one). */
typedef enum split { WHOLE, ROWS, COLS } split;

/* A column share as a view would make the CPU kernels stream every other piece of each
 * row (and prefetch the other ranks' pieces): on the CPU it is copied into rows of its
 * own. Other backends pack rows as they upload. */
static cv_status pack_rows(cv_model *m, cv_tensor *host, cv_error *err) {
    const size_t rb = cv_type_row_bytes(host->type, host->cols);
    /* Whole rows (tp 1) are used in place in the file's mapping, never copied. */
    if (m->be->device != CV_DEVICE_CPU || rb == host->row_stride) return CV_OK;
    void *packed;
    cv_status s = alloc_scratch(m, &packed, rb * (size_t)host->rows, err);
    if (s) return s;
    for (int64_t r = 0; r < host->rows; r++)
        memcpy((char *)packed + (size_t)r * rb, (const char *)host->data + (size_t)r * host->row_stride, rb);
    host->data = packed;
    host->row_stride = rb;
    m->copied_bytes += rb * (size_t)host->rows;
    return CV_OK;
}

/* Rows [first, first + rows) of the checked tensor t: one projection of a fused one
 * (attn_qkv, phi3's gate-up ffn_up), an expert of a 3-D one, or all of it. */
static cv_status load_slice(cv_model *m, const cv_gguf_tensor *t, const char *name, int64_t cols, int64_t first,
                            int64_t rows, split sp, cv_tensor *out, cv_error *err) {
    cv_status s;
    cv_tensor host = {.type = t->type, .rows = rows, .cols = cols,
                      .row_stride = cv_type_row_bytes(t->type, cols),
                      .data = (void *)t->data, .device = CV_DEVICE_CPU};
    if (host.row_stride == 0)
        return cv_errorf(err, CV_EFORMAT, "model: tensor %s: row of %lld is not whole %s blocks",
                         name, (long long)cols, cv_type_get(t->type)->name);
    host.data = (char *)host.data + (size_t)first * host.row_stride;
    if (sp == ROWS) {
        int64_t lo, hi;
        cv_split_range(rows, 1, m->rank, m->n_ranks, &lo, &hi);
        host.rows = hi - lo;
        host.data = (char *)host.data + (size_t)lo * host.row_stride;
    } else if (sp == COLS) {
        const cv_type_info *ti = cv_type_get(t->type);
        host.cols = cols / m->n_ranks;
        if (cols % m->n_ranks || host.cols % ti->block_elems)
            return cv_errorf(err, CV_EUNSUPPORTED,
                             "model: tp %d cannot split %s: its %lld input columns give %lld per "
                             "rank, not a multiple of the %s block of %u",
                             m->n_ranks, name, (long long)cols, (long long)host.cols, ti->name,
                             ti->block_elems);
        host.data = (char *)host.data + cv_type_row_bytes(t->type, m->rank * host.cols);
        if ((s = pack_rows(m, &host, err))) return s;
    }
    /* A table read only by get_rows stays in the file's rows (a backend layout would
     * make all of it resident for the few rows a step reads), and so does a weight
     * matmul_heads slices by heads (a backend layout need not split at a head). */
    if (m->keep_rows) host.layout = CV_LAYOUT_KEEP_ROWS;
    s = m->be->ops->weight_load(m->be, &host, out, err);
    if (s) return cv_error_wrap(err, "model: loading %s", name);
    /* The backend copied it (into a layout of its own): the file's pages need not stay
     * resident, or the weights would be in memory twice. */
    if (out->data != host.data && m->loading)
        cv_gguf_drop_pages(m->loading, host.data, host.row_stride * (size_t)host.rows);
    return CV_OK;
}

/* Rows [first, first + rows) of the tensor `name` of cols x all_rows. */
static cv_status load_matrix_part(cv_model *m, const cv_gguf *g, const char *name, int64_t cols,
                                  int64_t all_rows, int64_t first, int64_t rows, split sp,
                                  cv_tensor *out, cv_error *err) {
    const cv_gguf_tensor *t;
    cv_status s = find(g, name, cols, all_rows, &t, err);
    return s ? s : load_slice(m, t, name, cols, first, rows, sp, out, err);
}

static cv_status load_matrix(cv_model *m, const cv_gguf *g, const char *name, int64_t cols,
                             int64_t rows, split sp, cv_tensor *out, cv_error *err) {
    const cv_gguf_tensor *t;
    cv_status s = find(g, name, cols, rows, &t, err);
    return s ? s : load_slice(m, t, name, cols, 0, rows, sp, out, err);
}

/* The n_expert matrices of a 3-D expert tensor [cols, rows, n_expert], each as its own
 * weight (a view of the file on the CPU), into out[0..n_expert). */
static cv_status load_experts(cv_model *m, const cv_gguf *g, const char *name, int64_t cols, int64_t rows,
                              split sp, cv_tensor **out, cv_error *err) {
    const int32_t E = m->hp.n_expert;
    const cv_gguf_tensor *t;
    cv_status s = find3(g, name, cols, rows, E, &t, err);
    if (s) return s;
    if (!(*out = calloc((size_t)E, sizeof **out))) return cv_errorf(err, CV_ENOMEM, "model: out of memory for %s", name);
    for (int32_t e = 0; e < E; e++)
        if ((s = load_slice(m, t, name, cols, (int64_t)e * rows, rows, sp, &(*out)[e], err)))
            return cv_error_wrap(err, "expert %d", e);
    return CV_OK;
}

/* A vector (norm weight, bias, frequency factors) as F32 in backend memory. `optional`:
 * an absent tensor gives NULL. */
static cv_status load_vector(cv_model *m, const cv_gguf *g, const char *name, int64_t n,
                             split sp, int optional, float **out, cv_error *err) {
    *out = NULL;
    if (optional && !cv_gguf_find_tensor(g, name)) return CV_OK;
    const cv_gguf_tensor *t;
    cv_status s = find(g, name, n, 0, &t, err);
    if (s) return s;
    if (t->type != CV_TYPE_F32 && t->type != CV_TYPE_F16 && t->type != CV_TYPE_BF16)
        return cv_errorf(err, CV_EUNSUPPORTED, "model: vector %s has type %s, expected a float type",
                         name, cv_type_get(t->type)->name);
    float *host = malloc((size_t)n * sizeof *host);
    if (!host) return cv_errorf(err, CV_ENOMEM, "model: out of memory for %s", name);
    cv_dequantize_row(t->type, t->data, host, n);
    int64_t first = 0, end = n;
    if (sp == ROWS) cv_split_range(n, 1, m->rank, m->n_ranks, &first, &end);
    const int64_t part = end - first;
    void *dev;
    s = alloc_scratch(m, &dev, (size_t)part * sizeof(float), err);
    if (!s) s = m->be->ops->upload(m->be, dev, host + first, (size_t)part * sizeof(float), err);
    free(host);
    if (s) return s;
    *out = dev;
    return CV_OK;
}

/* Layer il's Q, K and V projections: row blocks of one fused attn_qkv.weight when the
 * file has it (phi3; llama.cpp accepts it for llama too), else the three tensors. */
static cv_status load_qkv(cv_model *m, const cv_gguf *g, int32_t il, cv_tensor *wq, cv_tensor *wk,
                          cv_tensor *wv, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const int64_t dim = hp->dim, qd = (int64_t)hp->n_heads * hp->head_dim,
                  kvd = (int64_t)hp->n_kv_heads * hp->head_dim;
    char n[96];
    snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", il);
    cv_status s;
    if (cv_gguf_find_tensor(g, n)) {
        const int64_t all = qd + 2 * kvd;
        if ((s = load_matrix_part(m, g, n, dim, all, 0, qd, ROWS, wq, err)) ||
            (s = load_matrix_part(m, g, n, dim, all, qd, kvd, ROWS, wk, err)))
            return s;
        return load_matrix_part(m, g, n, dim, all, qd + kvd, kvd, ROWS, wv, err);
    }
    const struct { const char *what; int64_t rows; cv_tensor *out; } p[] = {
        {"attn_q.weight", qd, wq}, {"attn_k.weight", kvd, wk}, {"attn_v.weight", kvd, wv}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "blk.%d.%s", il, p[i].what);
        if ((s = load_matrix(m, g, n, dim, p[i].rows, ROWS, p[i].out, err))) return s;
    }
    return CV_OK;
}

/* A 3-D tensor [cols, rows, n_heads] of per-head matrices (attn_k_b, attn_v_b) as one
 * weight of n_heads * rows rows for matmul_heads; a shard holds its heads' block. */
static cv_status load_heads(cv_model *m, const cv_gguf *g, const char *name, int64_t cols, int64_t rows,
                            cv_tensor *out, cv_error *err) {
    const cv_gguf_tensor *t;
    cv_status s = find3(g, name, cols, rows, m->hp.n_heads, &t, err);
    if (s) return s;
    m->keep_rows = 1;
    s = load_slice(m, t, name, cols, 0, rows * m->hp.n_heads, ROWS, out, err);
    m->keep_rows = 0;
    return s;
}

/* Layer il's multi-head latent attention (model.h): the query path (attn_q_a, its norm
 * and attn_q_b, or attn_q), the latent and rope key (attn_kv_a_mqa, attn_kv_a_norm),
 * the per-head absorbed projections and attn_output. */
static cv_status load_mla(cv_model *m, const cv_gguf *g, int32_t il, cv_layer *L, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const int64_t dim = hp->dim, H = hp->n_heads, hq = hp->qk_nope + hp->n_rot, R = hp->kv_lora;
    char n[96];
    cv_status s;
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d.%s", il, suffix), n)
    if (hp->q_lora ? (s = load_matrix(m, g, NAME("attn_q_a.weight"), dim, hp->q_lora, WHOLE, &L->wq_a, err)) ||
                         (s = load_vector(m, g, NAME("attn_q_a_norm.weight"), hp->q_lora, WHOLE, 0, &L->q_a_norm, err)) ||
                         (s = load_matrix(m, g, NAME("attn_q_b.weight"), hp->q_lora, H * hq, ROWS, &L->wq, err))
                   : (s = load_matrix(m, g, NAME("attn_q.weight"), dim, H * hq, ROWS, &L->wq, err)))
        return s;
    if ((s = load_matrix(m, g, NAME("attn_kv_a_mqa.weight"), dim, R + hp->n_rot, WHOLE, &L->wkv_a, err)) ||
        (s = load_vector(m, g, NAME("attn_kv_a_norm.weight"), R, WHOLE, 0, &L->kv_a_norm, err)) ||
        (s = load_heads(m, g, NAME("attn_k_b.weight"), hp->qk_nope, R, &L->wk_b, err)) ||
        (s = load_heads(m, g, NAME("attn_v_b.weight"), R, hp->v_head, &L->wv_b, err)))
        return s;
    return load_matrix(m, g, NAME("attn_output.weight"), H * hp->v_head, dim, COLS, &L->wo, err);
#undef NAME
}

/* A deepseek2 mixture layer's extras: the selection bias (exp_probs_b, V3; to the host)
 * and the shared experts' fused ffn of n_expert_shared * expert_feed_forward_length rows. */
static cv_status load_ds2_moe_extras(cv_model *m, const cv_gguf *g, int32_t il, cv_layer *L, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const int64_t dim = hp->dim, fs = (int64_t)hp->n_expert_shared * hp->ffn_exp_dim;
    char n[96];
    cv_status s;
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d.%s", il, suffix), n)
    const cv_gguf_tensor *t = cv_gguf_find_tensor(g, NAME("exp_probs_b.bias"));
    if (t) {
        if ((s = find(g, n, hp->n_expert, 0, &t, err))) return s;
        if (t->type != CV_TYPE_F32 && t->type != CV_TYPE_F16 && t->type != CV_TYPE_BF16)
            return cv_errorf(err, CV_EUNSUPPORTED, "model: vector %s has type %s, expected a float type", n,
                             cv_type_get(t->type)->name);
        if (!(L->h_exp_bias = malloc((size_t)hp->n_expert * sizeof(float))))
            return cv_errorf(err, CV_ENOMEM, "model: out of memory for %s", n);
        cv_dequantize_row(t->type, t->data, L->h_exp_bias, hp->n_expert);
    }
    if (!fs) return CV_OK;
    if ((s = load_matrix(m, g, NAME("ffn_gate_shexp.weight"), dim, fs, ROWS, &L->sh_gate, err)) ||
        (s = load_matrix(m, g, NAME("ffn_up_shexp.weight"), dim, fs, ROWS, &L->sh_up, err)))
        return s;
    return load_matrix(m, g, NAME("ffn_down_shexp.weight"), fs, dim, COLS, &L->sh_down, err);
#undef NAME
}

/* Bytes of a weight's rows (0 for an absent one). */
static uint64_t tensor_bytes(const cv_tensor *t) {
    return t->data ? (uint64_t)t->rows * cv_type_row_bytes(t->type, t->cols) : 0;
}

static cv_status load_weights(cv_model *m, const cv_gguf *g, cv_error *err) {
    cv_hparams *hp = &m->hp;
    const int64_t dim = hp->dim, qd = (int64_t)hp->n_heads * hp->head_dim,
                  kvd = (int64_t)hp->n_kv_heads * hp->head_dim, ffn = hp->ffn_dim;
    const cv_gguf_tensor *te = cv_gguf_find_tensor(g, "token_embd.weight");
    if (!te) return cv_errorf(err, CV_ENOTFOUND, "model: tensor token_embd.weight is missing");
    if (te->ne[1] <= 0 || te->ne[1] > (1 << 24))
        return cv_errorf(err, CV_ERANGE, "model: vocabulary of %lld tokens (limit %d)",
                         (long long)te->ne[1], 1 << 24);
    hp->n_vocab = (int32_t)te->ne[1];
    /* The tokenizer must not make ids the embedding has no row for (fewer tokens than
     * rows is fine: real models pad the embedding). */
    cv_gguf_arr toks;
    if (cv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) && toks.n > (uint64_t)hp->n_vocab)
        return cv_errorf(err, CV_ERANGE, "model: tokenizer.ggml.tokens has %llu tokens, token_embd.weight "
                         "only %d rows", (unsigned long long)toks.n, hp->n_vocab);
    hp->tied_output = cv_gguf_find_tensor(g, "output.weight") == NULL;
    m->keep_rows = !hp->tied_output;
    cv_status s = load_matrix(m, g, "token_embd.weight", dim, hp->n_vocab, WHOLE, &m->tok_embd, err);
    m->keep_rows = 0;
    if (s) return s;
    int64_t vlo, vhi;
    cv_split_range(hp->n_vocab, 1, m->rank, m->n_ranks, &vlo, &vhi);
    m->vocab_lo = (int32_t)vlo;
    m->vocab_n = (int32_t)(vhi - vlo);
    /* The output projection: this shard's block of the vocabulary, of the embedding
     * itself when they are tied (shared outright when the model is whole). */
    if (hp->tied_output && m->n_ranks == 1) m->output = m->tok_embd;
    else if ((s = load_matrix(m, g, hp->tied_output ? "token_embd.weight" : "output.weight", dim,
                              hp->n_vocab, ROWS, &m->output, err)))
        return s;
    if ((s = load_vector(m, g, "output_norm.weight", dim, WHOLE, 0, &m->output_norm, err))) return s;

    if ((s = load_vector(m, g, "rope_freqs.weight", hp->n_rot / 2, WHOLE, 1, &m->rope_factors, err)))
        return s;
    cv_str st = cv_gguf_get_str(g, "llama.rope.scaling.type");
    if (!m->rope_factors && hp->arch == CV_ARCH_LLAMA && st.len == 6 && !memcmp(st.ptr, "llama3", 6)) {
        float host[512]; /* n_rot <= head_dim <= 1024 */
        llama3_rope_factors(g, hp, host);
        void *dev;
        size_t bytes = (size_t)(hp->n_rot / 2) * sizeof(float);
        if ((s = alloc_scratch(m, &dev, bytes, err))) return s;
        if ((s = m->be->ops->upload(m->be, dev, host, bytes, err))) return s;
        m->rope_factors = dev;
    }
    /* phi3 long-rope: short factors up to the original context, long ones beyond it
     * (cv_model_forward picks by the cache's sequence length). Both or neither. */
    if (hp->arch == CV_ARCH_PHI3) {
        if ((s = load_vector(m, g, "rope_factors_short.weight", hp->n_rot / 2, WHOLE, 1, &m->rope_factors, err)) ||
            (s = load_vector(m, g, "rope_factors_long.weight", hp->n_rot / 2, WHOLE, 1, &m->rope_long, err)))
            return s;
        if (!m->rope_factors != !m->rope_long)
            return cv_errorf(err, CV_ENOTFOUND, "model: tensor rope_factors_%s.weight is missing (the file has "
                             "rope_factors_%s.weight)", m->rope_long ? "short" : "long",
                             m->rope_long ? "long" : "short");
    }

    /* gemma3: which layers slide, as flags per layer or as a period (see read_hparams). */
    cv_gguf_arr swa_flags = {0};
    if (hp->arch == CV_ARCH_GEMMA3 &&
        cv_gguf_get_arr(g, "gemma3.attention.sliding_window_pattern", &swa_flags) &&
        swa_flags.n != (uint64_t)hp->n_layers)
        return cv_errorf(err, CV_EFORMAT,
                         "model: gemma3.attention.sliding_window_pattern has %llu flags for %d layers",
                         (unsigned long long)swa_flags.n, hp->n_layers);
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    m->sliding = calloc((size_t)hp->n_layers, 1);
    if (!m->layers || !m->sliding) return cv_errorf(err, CV_ENOMEM, "model: out of memory");
    m->weight_bytes = cv_type_row_bytes(m->tok_embd.type, dim);
    const int gemma = hp->arch == CV_ARCH_GEMMA3;
    const int qk_norm = hp->arch == CV_ARCH_QWEN3 || hp->arch == CV_ARCH_QWEN3MOE;
    const int moe_model = hp->n_expert > 0;
    const int64_t fe = hp->ffn_exp_dim;
    for (int32_t il = 0; il < hp->n_layers; il++) {
        cv_layer *L = &m->layers[il];
        char n[96];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d.%s", il, suffix), n)
        if ((s = load_vector(m, g, NAME("attn_norm.weight"), dim, WHOLE, 0, &L->attn_norm, err)) ||
            (s = load_vector(m, g, NAME("ffn_norm.weight"), dim, WHOLE, 0, &L->ffn_norm, err)))
            return s;
        if (hp->arch == CV_ARCH_DEEPSEEK2 ? (s = load_mla(m, g, il, L, err))
                                          : (s = load_qkv(m, g, il, &L->wq, &L->wk, &L->wv, err)) ||
                                                (s = load_matrix(m, g, NAME("attn_output.weight"), qd, dim, COLS,
                                                                 &L->wo, err)))
            return s;
        /* deepseek2's first layers are dense */
        const int moe = moe_model && il >= hp->n_dense_lead;
        if (moe && hp->arch == CV_ARCH_DEEPSEEK2 && (s = load_ds2_moe_extras(m, g, il, L, err))) return s;
        if (moe &&
            ((s = load_matrix(m, g, NAME("ffn_gate_inp.weight"), dim, hp->n_expert, WHOLE, &L->router, err)) ||
             (s = load_experts(m, g, NAME("ffn_gate_exps.weight"), dim, fe, ROWS, &L->exp_gate, err)) ||
             (s = load_experts(m, g, NAME("ffn_up_exps.weight"), dim, fe, ROWS, &L->exp_up, err)) ||
             (s = load_experts(m, g, NAME("ffn_down_exps.weight"), fe, dim, COLS, &L->exp_down, err))))
            return s;
        if (!moe && (s = load_matrix(m, g, NAME("ffn_down.weight"), ffn, dim, COLS, &L->down, err)))
            return s;
        /* phi3 fuses gate and up into ffn_up: gate rows first, as ggml_swiglu splits it. */
        if (!moe && hp->arch == CV_ARCH_PHI3
                ? (s = load_matrix_part(m, g, NAME("ffn_up.weight"), dim, 2 * ffn, 0, ffn, ROWS, &L->gate, err)) ||
                  (s = load_matrix_part(m, g, NAME("ffn_up.weight"), dim, 2 * ffn, ffn, ffn, ROWS, &L->up, err))
                : !moe && ((s = load_matrix(m, g, NAME("ffn_gate.weight"), dim, ffn, ROWS, &L->gate, err)) ||
                           (s = load_matrix(m, g, NAME("ffn_up.weight"), dim, ffn, ROWS, &L->up, err))))
            return s;
        if (hp->arch == CV_ARCH_QWEN2 &&
            ((s = load_vector(m, g, NAME("attn_q.bias"), qd, ROWS, 0, &L->bq, err)) ||
             (s = load_vector(m, g, NAME("attn_k.bias"), kvd, ROWS, 0, &L->bk, err)) ||
             (s = load_vector(m, g, NAME("attn_v.bias"), kvd, ROWS, 0, &L->bv, err))))
            return s;
        if ((gemma || qk_norm) &&
            ((s = load_vector(m, g, NAME("attn_q_norm.weight"), hp->head_dim, WHOLE, 0, &L->q_norm, err)) ||
             (s = load_vector(m, g, NAME("attn_k_norm.weight"), hp->head_dim, WHOLE, 0, &L->k_norm, err))))
            return s;
        if (gemma &&
            ((s = load_vector(m, g, NAME("post_attention_norm.weight"), dim, WHOLE, 0,
                              &L->post_attn_norm, err)) ||
             (s = load_vector(m, g, NAME("post_ffw_norm.weight"), dim, WHOLE, 0, &L->post_ffn_norm, err))))
            return s;
#undef NAME
        L->sliding = gemma ? (swa_flags.n ? cv_gguf_arr_i64(&swa_flags, (uint64_t)il) != 0
                                          : (il + 1) % hp->swa_period != 0)
                           : hp->sliding_window > 0;
        m->sliding[il] = (uint8_t)L->sliding;
        L->rope = (cv_rope_params){
            .mode = hp->rope_mode, .n_rot = hp->n_rot,
            .freq_base = gemma && L->sliding ? hp->rope_base_local : hp->rope_base,
            .freq_scale = gemma && L->sliding ? 1.0f : hp->rope_freq_scale,
            .freq_factors = m->rope_factors, .mscale = hp->rope_mscale, .ext_factor = hp->rope_ext_factor,
            .yarn_lo = hp->rope_yarn_lo, .yarn_hi = hp->rope_yarn_hi};
        const cv_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down, &L->router,
                                 &L->wq_a, &L->wkv_a, &L->wk_b, &L->wv_b, &L->sh_gate, &L->sh_up, &L->sh_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            m->weight_bytes += tensor_bytes(ws[i]);
        /* A token reads n_expert_used experts (their sizes are equal). */
        if (moe)
            m->weight_bytes += (uint64_t)hp->n_expert_used *
                               (tensor_bytes(&L->exp_gate[0]) + tensor_bytes(&L->exp_up[0]) + tensor_bytes(&L->exp_down[0]));
    }
    m->weight_bytes += tensor_bytes(&m->output);
    return CV_OK;
}

/* The router and its plan, and the mixture's scratch: an expert gets each token of a
 * step at most once, so its gathered rows fit in max_batch. */
static cv_status alloc_moe(cv_model *m, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const size_t B = (size_t)m->opts.max_batch, E = (size_t)hp->n_expert, f = sizeof(float);
    const size_t pairs = B * (size_t)hp->n_expert_used;
    /* qwen3moe: softmax, normalised. deepseek2: the file's options (the bias is per
     * layer: moe_ffn points the router at it). */
    const int ds2 = hp->arch == CV_ARCH_DEEPSEEK2;
    m->moe = (cv_moe_router){.scoring = hp->expert_sigmoid ? CV_MOE_SIGMOID : CV_MOE_SOFTMAX,
                             .n_expert = hp->n_expert, .n_used = hp->n_expert_used,
                             .n_groups = hp->n_expert_groups, .n_group_used = hp->n_group_used,
                             .norm = ds2 ? hp->expert_norm : 1, .scale = hp->expert_scale};
    cv_status st = cv_moe_plan_init(&m->plan, &m->moe, m->opts.max_batch, err);
    if (st) return st;
    struct { void **p; size_t bytes; } s[] = {
        {(void **)&m->router_logits, B * E * f},
        {(void **)&m->xe, B * (size_t)hp->dim * f},
        {(void **)&m->ye, B * (size_t)hp->dim * f},
        {(void **)&m->xm, B * (size_t)hp->dim * f},
        {(void **)&m->d_moe_w, pairs * f},
        {(void **)&m->d_moe_rows, pairs * sizeof(int32_t)},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        if ((st = alloc_scratch(m, s[i].p, s[i].bytes, err))) return st;
    /* xm is cleared by scaling with 0 each layer: it must never hold a NaN, so it
     * starts as zeros. */
    float *zeros = calloc(B * (size_t)hp->dim, f);
    m->h_router_logits = malloc(B * E * f);
    if (!zeros || !m->h_router_logits) {
        free(zeros);
        return cv_errorf(err, CV_ENOMEM, "model: out of memory for the mixture's scratch");
    }
    st = m->be->ops->upload(m->be, m->xm, zeros, B * (size_t)hp->dim * f, err);
    free(zeros);
    return st;
}

static cv_status alloc_all_scratch(cv_model *m, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const size_t B = (size_t)m->opts.max_batch, O = (size_t)m->opts.max_logits, f = sizeof(float);
    const int mla = hp->arch == CV_ARCH_DEEPSEEK2;
    const size_t H = (size_t)m->n_heads;
    /* MLA: q holds the heads' nope + rope parts, k the latent and rope key of each row,
     * att each head's latent output (kv_lora wide), v its value after attn_v_b. */
    const size_t qd = H * (size_t)(mla ? hp->qk_nope + hp->n_rot : hp->head_dim);
    const size_t kvd = (size_t)m->n_kv_heads * (size_t)hp->head_dim;
    const size_t vd = mla ? H * (size_t)hp->v_head : kvd;
    const size_t attd = mla ? H * (size_t)hp->kv_lora : qd;
    int32_t ffn_rows = m->ffn_dim > m->ffn_exp_dim ? m->ffn_dim : m->ffn_exp_dim;
    if (m->ffn_sh_dim > ffn_rows) ffn_rows = m->ffn_sh_dim;
    const size_t mla_qa = mla ? (size_t)hp->q_lora : 0, mla_lat = mla ? (size_t)hp->kv_lora : 0,
                 mla_qm = mla ? H * (size_t)hp->head_dim : 0, mla_vo = mla ? vd : 0;
    struct { void **p; size_t bytes; } s[] = {
        {(void **)&m->qa, B * mla_qa * f},
        {(void **)&m->lat, B * mla_lat * f},
        {(void **)&m->qm, B * mla_qm * f},
        {(void **)&m->vo, B * mla_vo * f},
        {(void **)&m->x, B * (size_t)hp->dim * f},
        {(void **)&m->xb, B * (size_t)hp->dim * f},
        {(void **)&m->q, B * qd * f},
        {(void **)&m->k, B * kvd * f},
        {(void **)&m->v, B * kvd * f},
        {(void **)&m->att, B * attd * f},
        {(void **)&m->hb, B * (size_t)ffn_rows * f},
        {(void **)&m->hb2, B * (size_t)ffn_rows * f},
        {(void **)&m->xo, O * (size_t)hp->dim * f},
        {(void **)&m->logits, O * (size_t)m->vocab_n * f},
        {(void **)&m->d_tokens, B * sizeof(int32_t)},
        {(void **)&m->d_pos, B * sizeof(int32_t)},
        {(void **)&m->d_out_rows, O * sizeof(int32_t)},
        {(void **)&m->d_rows, B * sizeof(cv_attn_row)},
        {(void **)&m->d_rows_swa, B * sizeof(cv_attn_row)},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        cv_status st = alloc_scratch(m, s[i].p, s[i].bytes, err);
        if (st) return st;
    }
    m->h_out_rows = malloc(O * sizeof *m->h_out_rows);
    m->h_rows = malloc(B * sizeof *m->h_rows);
    m->h_rows_swa = malloc(B * sizeof *m->h_rows_swa);
    if (!m->h_out_rows || !m->h_rows || !m->h_rows_swa)
        return cv_errorf(err, CV_ENOMEM, "model: out of memory for batch staging");
    return hp->n_expert ? alloc_moe(m, err) : CV_OK;
}

/* This rank's share of the heads and ffn rows; refuses a count that does not divide,
 * naming the first tensor it would split (columns are checked per tensor at load). */
static cv_status plan_shard(cv_model *m, cv_error *err) {
    const cv_hparams *hp = &m->hp;
    const int32_t n = m->opts.tp_size > 1 ? m->opts.tp_size : 1;
    if (m->opts.tp_rank < 0 || m->opts.tp_rank >= n ||
        (n > 1 && (!m->opts.tp_comm || m->opts.tp_comm->size != n)))
        return cv_errorf(err, CV_EINVAL, "model: tp rank %d of %d, comm of %d ranks", m->opts.tp_rank,
                         n, m->opts.tp_comm ? m->opts.tp_comm->size : 0);
    const int moe = hp->n_expert > 0, mla = hp->arch == CV_ARCH_DEEPSEEK2;
    /* deepseek2: every rank keeps the whole latent (its one kv head); it splits the query
     * heads, the dense lead layers' ffn, the experts' and the shared experts' rows. */
    const int dense = !moe || hp->n_dense_lead > 0;
    const int32_t fs = hp->n_expert_shared * hp->ffn_exp_dim;
    const struct { const char *tensor, *key; int32_t count; } dims[] = {
        {mla ? "attn_q_b.weight" : "attn_q.weight", "attention.head_count", hp->n_heads},
        {"attn_k.weight", "attention.head_count_kv", mla ? n : hp->n_kv_heads},
        {moe ? "ffn_gate_exps.weight" : "ffn_gate.weight",
         moe ? "expert_feed_forward_length" : "feed_forward_length", moe ? hp->ffn_exp_dim : hp->ffn_dim},
        {"ffn_gate.weight", "feed_forward_length", dense ? hp->ffn_dim : n},
        {"ffn_gate_shexp.weight", "expert_shared_count * expert_feed_forward_length", fs ? fs : n},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].count % n)
            return cv_errorf(err, CV_EUNSUPPORTED,
                             "model: tp %d cannot split blk.0.%s: %s.%s = %d is not divisible by %d",
                             n, dims[i].tensor, cv_arch_name(hp->arch), dims[i].key, dims[i].count, n);
    m->rank = m->opts.tp_rank;
    m->n_ranks = n;
    m->n_heads = hp->n_heads / n;
    m->n_kv_heads = mla ? 1 : hp->n_kv_heads / n;
    m->ffn_dim = dense ? hp->ffn_dim / n : 0;
    m->ffn_exp_dim = hp->ffn_exp_dim / n;
    m->ffn_sh_dim = fs / n;
    return CV_OK;
}

cv_status cv_model_load(cv_backend *be, const cv_gguf *g, const cv_model_opts *opts,
                        cv_model **out, cv_error *err) {
    *out = NULL;
    if (opts->max_batch < 1 || opts->max_batch > 65536 || opts->max_logits < 1 ||
        opts->max_logits > opts->max_batch)
        return cv_errorf(err, CV_EINVAL, "model: max_batch %d / max_logits %d (need 1 <= logits <= batch <= 65536)",
                         opts->max_batch, opts->max_logits);
    cv_model *m = calloc(1, sizeof *m);
    if (!m) return cv_errorf(err, CV_ENOMEM, "model: out of memory");
    m->be = be;
    m->opts = *opts;
    cv_status s = read_hparams(g, &m->hp, err);
    if (!s) s = plan_shard(m, err);
    m->loading = g;
    if (!s) s = load_weights(m, g, err);
    m->loading = NULL;
    if (!s) s = alloc_all_scratch(m, err);
    if (s) {
        cv_model_free(m);
        return s;
    }
    m->glu = m->hp.arch == CV_ARCH_GEMMA3 ? CV_GLU_GEGLU : CV_GLU_SWIGLU;
    *out = m;
    return CV_OK;
}

void cv_model_free(cv_model *m) {
    if (!m) return;
    cv_backend *be = m->be;
    if (m->layers) {
        for (int32_t il = 0; il < m->hp.n_layers; il++) {
            cv_layer *L = &m->layers[il];
            cv_tensor *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down, &L->router,
                               &L->wq_a, &L->wkv_a, &L->wk_b, &L->wv_b, &L->sh_gate, &L->sh_up, &L->sh_down};
            for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
                if (ws[i]->data) be->ops->weight_release(be, ws[i]);
            free(L->h_exp_bias);
            cv_tensor *exps[] = {L->exp_gate, L->exp_up, L->exp_down};
            for (size_t i = 0; i < sizeof exps / sizeof exps[0]; i++) {
                for (int32_t e = 0; exps[i] && e < m->hp.n_expert; e++)
                    if (exps[i][e].data) be->ops->weight_release(be, &exps[i][e]);
                free(exps[i]);
            }
        }
        free(m->layers);
    }
    free(m->sliding);
    if (m->output.data && m->output.data != m->tok_embd.data) be->ops->weight_release(be, &m->output);
    if (m->tok_embd.data) be->ops->weight_release(be, &m->tok_embd);
    for (int i = 0; i < m->n_allocs; i++) be->ops->free(be, m->allocs[i]);
    free(m->allocs);
    free(m->h_out_rows);
    free(m->h_rows);
    free(m->h_rows_swa);
    free(m->h_router_logits);
    cv_moe_plan_free(&m->plan);
    free(m);
}

cv_kv_config cv_model_kv_config(const cv_model *m, int32_t n_ctx, int32_t max_seqs,
                                cv_type kv_type) {
    if (n_ctx <= 0) n_ctx = m->hp.n_ctx_train;
    /* Sliding layers get a ring long enough for the window plus one forward call's rows
     * of one sequence (at most max_batch). */
    cv_kv_config kc = {.n_layers = m->hp.n_layers, .n_kv_heads = m->n_kv_heads,
                       .head_dim = m->hp.head_dim, .block_size = 16, .max_seqs = max_seqs,
                       .max_seq_len = n_ctx, .type = kv_type, .n_ranks = 1,
                       .backends = {m->be}, .sliding = m->sliding,
                       .window = m->hp.sliding_window, .max_step = m->opts.max_batch,
                       .k_only = m->hp.arch == CV_ARCH_DEEPSEEK2, .v_dim = m->hp.kv_lora};
    kc.n_blocks = cv_kv_blocks_for(&kc, n_ctx) * max_seqs;
    return kc;
}

/* ---- forward ---- */

/* Checks a batch against the model and the cache and fills the attention rows. */
static cv_status prepare_batch(cv_model *m, const cv_kv_cache *kv, const cv_batch *b,
                               int32_t *n_out, cv_error *err) {
    const cv_kv_config *kc = cv_kv_config_of(kv);
    if (kc->n_layers != m->hp.n_layers || kc->n_kv_heads != m->n_kv_heads ||
        kc->head_dim != m->hp.head_dim || kc->n_ranks != m->n_ranks ||
        !kc->k_only != (m->hp.arch != CV_ARCH_DEEPSEEK2) || (kc->k_only && kc->v_dim != m->hp.kv_lora))
        return cv_errorf(err, CV_EINVAL, "model: kv cache shape does not match the model");
    /* With a ring, the cache's sliding layers must be exactly the model's (their rows
     * read the ring's table), its window at least the model's, and the ring must outlast
     * the rows one call may add to a sequence. */
    if (cv_kv_ring_blocks(kc)) {
        for (int32_t il = 0; il < m->hp.n_layers; il++)
            if ((cv_kv_layer_group(kv, il) == CV_KV_SLIDING) != m->sliding[il])
                return cv_errorf(err, CV_EINVAL, "model: kv cache %s layer %d in its sliding-window "
                                 "ring; the model's layer %d %s", m->sliding[il] ? "does not keep" : "keeps",
                                 il, il, m->sliding[il] ? "slides" : "reads every position");
        if (kc->window < m->hp.sliding_window || kc->max_step < m->opts.max_batch)
            return cv_errorf(err, CV_EINVAL,
                             "model: kv cache ring holds a window of %d for steps of %d rows; the "
                             "model needs a window of %d and steps of %d rows",
                             kc->window, kc->max_step, m->hp.sliding_window, m->opts.max_batch);
    }
    if (b->n < 1 || b->n > m->opts.max_batch)
        return cv_errorf(err, CV_ERANGE, "model: batch of %d rows (limit %d)", b->n,
                         m->opts.max_batch);
    int32_t no = 0;
    for (int32_t i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->hp.n_vocab)
            return cv_errorf(err, CV_EINVAL, "model: token %d of row %d outside the vocabulary of %d",
                             b->tokens[i], i, m->hp.n_vocab);
        const int32_t *table = cv_kv_device_table(kv, m->rank, CV_KV_FULL, b->seq[i]);
        if (!table || b->pos[i] < 0 || b->pos[i] >= cv_kv_capacity(kv, b->seq[i]))
            return cv_errorf(err, CV_ERANGE,
                             "model: row %d: position %d of sequence %d is not reserved in the kv cache",
                             i, b->pos[i], b->seq[i]);
        m->h_rows[i] = (cv_attn_row){.block_table = table, .pos = b->pos[i], .lo = 0};
        /* Sliding layers read their group's table: the ring, or the full table. */
        m->h_rows_swa[i] = (cv_attn_row){
            .block_table = cv_kv_device_table(kv, m->rank, CV_KV_SLIDING, b->seq[i]), .pos = b->pos[i]};
        if (m->hp.sliding_window && b->pos[i] >= m->hp.sliding_window)
            m->h_rows_swa[i].lo = b->pos[i] - m->hp.sliding_window + 1;
        if (b->want_logits ? b->want_logits[i] != 0 : i == b->n - 1) {
            if (no == m->opts.max_logits)
                return cv_errorf(err, CV_ERANGE, "model: more than %d rows want logits",
                                 m->opts.max_logits);
            m->h_out_rows[no++] = i;
        }
    }
    *n_out = no;
    return CV_OK;
}

/* Each row's block of logits into its place in the caller's rows (one copy when the
 * block is the whole row). */
static cv_status download_logits(cv_model *m, float *logits, int32_t n_out, cv_error *err) {
    const size_t V = (size_t)m->hp.n_vocab, part = (size_t)m->vocab_n;
    if (part == V) return m->be->ops->download(m->be, logits, m->logits, (size_t)n_out * V * sizeof(float), err);
    cv_status s = CV_OK;
    for (int32_t i = 0; i < n_out && !s; i++)
        s = m->be->ops->download(m->be, logits + (size_t)i * V + (size_t)m->vocab_lo, m->logits + (size_t)i * part,
                                 part * sizeof(float), err);
    return s;
}

/* Sums x[0..n) over the ranks of a sharded model (nothing to do for a whole one). */
static cv_status allreduce(cv_model *m, float *x, int64_t n, cv_error *err) {
    if (m->n_ranks == 1) return CV_OK;
    return m->opts.tp_comm->ops->allreduce_sum(m->opts.tp_comm, m->rank, x, n, err);
}

/* The mixture of a layer on the n normed rows in xb, into xm: route on the host (the
 * router's logits come back, the plan goes out), then each expert that some token chose
 * runs once on its tokens' rows, gathered, and adds its weighted outputs into theirs. */
static cv_status moe_ffn(cv_model *m, const cv_layer *L, int32_t n, cv_error *err) {
    cv_backend *be = m->be;
    const cv_backend_ops *op = be->ops;
    const int32_t dim = m->hp.dim, E = m->hp.n_expert, k = m->hp.n_expert_used, fe = m->ffn_exp_dim;
    op->matmul(be, &L->router, m->xb, m->router_logits, n);
    cv_status s = op->download(be, m->h_router_logits, m->router_logits, (size_t)n * (size_t)E * sizeof(float), err);
    if (s) return s;
    m->moe.bias = L->h_exp_bias;
    cv_moe_route(&m->moe, m->h_router_logits, n, &m->plan);
    const size_t pairs = (size_t)n * (size_t)k;
    if ((s = op->upload(be, m->d_moe_rows, m->plan.rows, pairs * sizeof(int32_t), err)) ||
        (s = op->upload(be, m->d_moe_w, m->plan.weights, pairs * sizeof(float), err)))
        return s;
    const cv_tensor xs = {.type = CV_TYPE_F32, .rows = n, .cols = dim, .row_stride = (size_t)dim * sizeof(float),
                          .data = m->xb, .device = be->device};
    op->scale(be, m->xm, 0.0f, (int64_t)n * dim);
    for (int32_t e = 0; e < E; e++) {
        const int32_t lo = m->plan.off[e], c = m->plan.off[e + 1] - lo;
        if (!c) continue;
        op->get_rows(be, &xs, m->d_moe_rows + lo, c, m->xe);
        op->matmul(be, &L->exp_gate[e], m->xe, m->hb, c);
        op->matmul(be, &L->exp_up[e], m->xe, m->hb2, c);
        op->glu(be, CV_GLU_SWIGLU, m->hb, m->hb2, m->hb, (int64_t)c * fe);
        op->matmul(be, &L->exp_down[e], m->hb, m->ye, c);
        op->scatter_add_rows(be, m->ye, m->d_moe_rows + lo, m->d_moe_w + lo, c, dim, m->xm);
    }
    /* deepseek2's shared experts: one ffn on every row, added to the routed sum */
    if (L->sh_gate.data) {
        op->matmul(be, &L->sh_gate, m->xb, m->hb, n);
        op->matmul(be, &L->sh_up, m->xb, m->hb2, n);
        op->glu(be, CV_GLU_SWIGLU, m->hb, m->hb2, m->hb, (int64_t)n * m->ffn_sh_dim);
        op->matmul(be, &L->sh_down, m->hb, m->ye, n);
        op->add(be, m->xm, m->ye, m->xm, (int64_t)n * dim);
    }
    return CV_OK;
}

/* Multi-head latent attention, absorbed (model.h), from the normed rows in xb into xb:
 *   q  = attn_q(xb), or attn_q_b(norm(attn_q_a(xb)))    [n][H][qk_nope | rope]
 *   k  = attn_kv_a_mqa(xb)                               [n][latent | rope]
 *   the rope key turns, the latent is normed; k goes to the cache (values: its latent)
 *   qm = [attn_k_b_h(q_nope_h) | turned q_rope_h]        [n][H][latent | rope]
 *   att = attention(qm) over the cached [latent | rope]   [n][H][latent]
 *   xb = attn_output(attn_v_b_h(att_h))                   [n][H * v_head] -> [n][dim] */
static void mla_attention(cv_model *m, const cv_layer *L, const cv_kv_layer *kl, const cv_attn_row *rows,
                          int32_t n, const cv_attn_params *ap) {
    cv_backend *be = m->be;
    const cv_backend_ops *op = be->ops;
    const cv_hparams *hp = &m->hp;
    const int32_t H = m->n_heads, R = hp->kv_lora, rot = hp->n_rot, nope = hp->qk_nope, hq = nope + rot,
                  kw = R + rot;
    if (L->wq_a.data) {
        op->matmul(be, &L->wq_a, m->xb, m->qa, n);
        op->rmsnorm(be, m->qa, L->q_a_norm, m->qa, n, hp->q_lora, hp->rms_eps, 0);
        op->matmul(be, &L->wq, m->qa, m->q, n);
    } else {
        op->matmul(be, &L->wq, m->xb, m->q, n);
    }
    op->matmul(be, &L->wkv_a, m->xb, m->k, n);
    op->rope(be, &L->rope, m->k + R, n, 1, kw, m->d_pos);
    op->copy_rows(be, m->k, kw, m->lat, R, R, n);
    op->rmsnorm(be, m->lat, L->kv_a_norm, m->lat, n, R, hp->rms_eps, 0);
    op->copy_rows(be, m->lat, R, m->k, kw, R, n);
    op->kv_store(be, kl, rows, n, m->k, NULL);
    op->matmul_heads(be, &L->wk_b, H, m->q, hq, m->qm, kw, n);
    op->copy_rows(be, m->q + nope, hq, m->qm + R, kw, rot, (int64_t)n * H);
    op->rope(be, &L->rope, m->qm + R, n, H, kw, m->d_pos);
    op->attention(be, ap, kl, rows, n, m->qm, m->att);
    op->matmul_heads(be, &L->wv_b, H, m->att, R, m->vo, hp->v_head, n);
    op->matmul(be, &L->wo, m->vo, m->xb, n);
}

cv_status cv_model_forward(cv_model *m, cv_kv_cache *kv, const cv_batch *b, float *logits,
                           cv_error *err) {
    int32_t n_out = 0;
    cv_status s = prepare_batch(m, kv, b, &n_out, err);
    if (s) return s;
    cv_backend *be = m->be;
    const cv_backend_ops *op = be->ops;
    const cv_hparams *hp = &m->hp;
    /* Head and ffn counts are this shard's (the whole model's when not sharded). */
    const int32_t n = b->n, dim = hp->dim, hd = hp->head_dim;
    const int32_t n_heads = m->n_heads, n_kv_heads = m->n_kv_heads;
    const int32_t qd = n_heads * hd, kvd = n_kv_heads * hd;
    if ((s = op->upload(be, m->d_tokens, b->tokens, (size_t)n * sizeof(int32_t), err)) ||
        (s = op->upload(be, m->d_pos, b->pos, (size_t)n * sizeof(int32_t), err)) ||
        (s = op->upload(be, m->d_rows, m->h_rows, (size_t)n * sizeof(cv_attn_row), err)) ||
        (s = op->upload(be, m->d_rows_swa, m->h_rows_swa, (size_t)n * sizeof(cv_attn_row), err)) ||
        (s = op->upload(be, m->d_out_rows, m->h_out_rows, (size_t)n_out * sizeof(int32_t), err)))
        return s;
    const cv_attn_params ap = {.n_heads = n_heads, .scale = hp->attn_scale, .softcap = 0};
    const cv_kv_config *kc = cv_kv_config_of(kv);
    /* phi3 long-rope: llama.cpp picks the long factors for a context longer than the
     * original one, for every position alike. */
    const int long_rope = m->rope_long && kc->max_seq_len > hp->n_ctx_orig;

    /* A decode step (every row wants logits) may run as one recorded graph: all it reads
     * that changes from step to step is in the buffers uploaded above. */
    const int graph = op->graph_begin && n_out == n;
    if (graph) op->graph_begin(be);
    op->get_rows(be, &m->tok_embd, m->d_tokens, n, m->x);
    if (hp->embd_scale != 1.0f) op->scale(be, m->x, hp->embd_scale, (int64_t)n * dim);

    for (int32_t il = 0; il < hp->n_layers; il++) {
        const cv_layer *L = &m->layers[il];
        const cv_kv_layer kl = {.k = cv_kv_k_pool(kv, m->rank, il), .v = cv_kv_v_pool(kv, m->rank, il),
                                .type = kc->type, .block_size = kc->block_size,
                                .n_kv_heads = kc->n_kv_heads, .head_dim = kc->head_dim,
                                .v_dim = kc->k_only ? kc->v_dim : 0};
        const cv_attn_row *rows = L->sliding ? m->d_rows_swa : m->d_rows;

        /* attention */
        op->rmsnorm(be, m->x, L->attn_norm, m->xb, n, dim, hp->rms_eps, 0);
        if (L->wkv_a.data) {
            mla_attention(m, L, &kl, rows, n, &ap);
        } else {
        const cv_tensor *qkv[] = {&L->wq, &L->wk, &L->wv};
        float *const qkv_out[] = {m->q, m->k, m->v};
        cv_matmul_multi(be, 3, qkv, m->xb, qkv_out, n);
        if (L->bq) {
            op->add_bias(be, m->q, L->bq, n, qd);
            op->add_bias(be, m->k, L->bk, n, kvd);
            op->add_bias(be, m->v, L->bv, n, kvd);
        }
        if (L->q_norm) {
            op->rmsnorm(be, m->q, L->q_norm, m->q, n * n_heads, hd, hp->rms_eps, 0);
            op->rmsnorm(be, m->k, L->k_norm, m->k, n * n_kv_heads, hd, hp->rms_eps, 0);
        }
        cv_rope_params rp = L->rope;
        if (long_rope) rp.freq_factors = m->rope_long;
        op->rope(be, &rp, m->q, n, n_heads, hd, m->d_pos);
        op->rope(be, &rp, m->k, n, n_kv_heads, hd, m->d_pos);
        op->kv_store(be, &kl, rows, n, m->k, m->v);
        op->attention(be, &ap, &kl, rows, n, m->q, m->att);
        op->matmul(be, &L->wo, m->att, m->xb, n);
        }
        if ((s = allreduce(m, m->xb, (int64_t)n * dim, err))) return s;
        if (L->post_attn_norm)
            op->rmsnorm(be, m->xb, L->post_attn_norm, m->xb, n, dim, hp->rms_eps, 0);
        op->add(be, m->x, m->xb, m->x, (int64_t)n * dim);

        /* feed-forward: dense, or the mixture's experts into xm */
        op->rmsnorm(be, m->x, L->ffn_norm, m->xb, n, dim, hp->rms_eps, 0);
        float *ffn_out = m->xb;
        if (L->router.data) {
            if ((s = moe_ffn(m, L, n, err))) return s;
            ffn_out = m->xm;
        } else {
            const cv_tensor *gate_up[] = {&L->gate, &L->up};
            float *const gate_up_out[] = {m->hb, m->hb2};
            cv_matmul_multi(be, 2, gate_up, m->xb, gate_up_out, n);
            op->glu(be, m->glu, m->hb, m->hb2, m->hb, (int64_t)n * m->ffn_dim);
            op->matmul(be, &L->down, m->hb, m->xb, n);
        }
        if ((s = allreduce(m, ffn_out, (int64_t)n * dim, err))) return s;
        if (L->post_ffn_norm)
            op->rmsnorm(be, ffn_out, L->post_ffn_norm, ffn_out, n, dim, hp->rms_eps, 0);
        op->add(be, m->x, ffn_out, m->x, (int64_t)n * dim);
    }

    if (n_out > 0) {
        /* Only the rows that want logits go through the (large) output projection. */
        const cv_tensor xs = {.type = CV_TYPE_F32, .rows = n, .cols = dim,
                              .row_stride = (size_t)dim * sizeof(float), .data = m->x,
                              .device = be->device};
        op->get_rows(be, &xs, m->d_out_rows, n_out, m->xo);
        op->rmsnorm(be, m->xo, m->output_norm, m->xo, n_out, dim, hp->rms_eps, 0);
        op->matmul(be, &m->output, m->xo, m->logits, n_out);
        if (hp->final_softcap > 0)
            op->softcap(be, m->logits, hp->final_softcap, (int64_t)n_out * m->vocab_n);
    }
    if (graph) op->graph_end(be);
    if (n_out > 0 && (s = download_logits(m, logits, n_out, err))) return s;
    return op->synchronize(be, err);
}
