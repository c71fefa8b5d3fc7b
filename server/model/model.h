/* model: transformer architectures read from GGUF, and their forward pass.
 *
 * cv_model_load reads the hyperparameters of a `llama`, `qwen2`, `gemma3`, `phi3`,
 * `qwen3`, `qwen3moe` or `deepseek2` file,
 * checks every tensor the architecture needs (present, supported type, exact shape),
 * hands the weights to a backend (which may use the file's mapping in place: the
 * cv_gguf must outlive the model) and allocates all scratch for batches of up to
 * max_batch tokens. cv_model_forward then runs one step for a batch of tokens that may
 * mix sequences (prefill chunks and decode steps alike), writing K/V into a paged
 * cv_kv_cache and returning logits for the rows that ask for them. It never allocates.
 *
 * Every computation goes through the backend's ops table, so the same forward pass
 * runs on any backend.
 *
 * A mixture-of-experts layer (qwen3moe) routes on the host (moe.h): the router's logits
 * come back from the backend, each token gets its top-k experts, and each expert that
 * some token of the step chose runs once on all its tokens' rows (gathered), adding its
 * weighted outputs into theirs (scatter_add_rows). So a step reads only the experts in
 * use, each once, and a decode step of one token about the active parameters.
 *
 * deepseek2 (multi-head latent attention, MLA) keeps only the compressed latent and
 * the decoupled rope key per token in the cache (kv_lora + n_rot elements, one pool:
 * the values are the latent, kv_cache.h's k_only), and always runs the absorbed form:
 * each query head's nope part goes through its attn_k_b into latent space, attention
 * runs as multi-query over the latents (keys [latent | rope], values the latent), and
 * each head's latent output goes through its attn_v_b before attn_output. Prefill
 * uses the same form: the cache has no decompressed K/V to read, and decompressing
 * every cached position per step would cost more than the wider dot products. The leading dense layers, the shared experts (added to the
 * routed ones) and the router's V3 options (sigmoid, groups, selection bias, scale,
 * norm) follow llama.cpp; YaRN scales the rope and the attention (its mscale).
 *
 * Tensor parallelism (Megatron style): a model loaded with tp_size N > 1 is rank
 * tp_rank's shard. It holds heads [r*H/N, (r+1)*H/N) of Q (and K/V by kv heads, with
 * their qwen2 biases) and rows [r*F/N, (r+1)*F/N) of ffn gate/up (of every expert's,
 * F its expert_feed_forward_length, in a mixture; the router is whole, so every rank
 * routes alike); attn_output and ffn_down take the matching input columns, and the
 * partial outputs are summed across
 * the ranks through tp_comm right after each of them. Embeddings and norms (gemma3's
 * per-head QK-norm included) are whole on every rank; the output head is split by
 * vocabulary, each rank writing its block of every logits row. Column splits of a quantized weight must fall on its block
 * boundaries: a shape that cannot be split is refused at load, naming the tensor. On
 * the CPU a shard's column shares are copied into memory of their own (row slices stay
 * views of the file).
 * The N ranks' forward calls must run concurrently (one thread each: tp.h), on one
 * cv_kv_cache made with n_ranks = N; cv_model_hparams describes the whole model.
 */
#ifndef CV_MODEL_H
#define CV_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "comm.h"
#include "cv_error.h"
#include "gguf.h"
#include "kv_cache.h"

typedef enum cv_arch {
    CV_ARCH_LLAMA = 0,   /* Llama 2/3, TinyLlama, DeepSeek-R1-Distill-Llama */
    CV_ARCH_QWEN2 = 1,   /* Qwen2.5, DeepSeek-R1-Distill-Qwen: QKV bias, NeoX rope */
    CV_ARCH_GEMMA3 = 2,  /* GeGLU, QK-norm, sandwich norms, sliding-window layers */
    CV_ARCH_PHI3 = 3,    /* Phi-3/4: fused QKV and gate-up, NeoX (partial) rope, long-rope */
    CV_ARCH_QWEN3 = 4,   /* Qwen3 dense: QK-norm, no QKV bias, NeoX rope */
    CV_ARCH_QWEN3MOE = 5, /* Qwen3 MoE: qwen3 attention, softmax top-k experts (normalised), none shared */
    CV_ARCH_DEEPSEEK2 = 6 /* DeepSeek V2/V3: multi-head latent attention, shared + routed experts, YaRN */
} cv_arch;

typedef struct cv_hparams {
    cv_arch arch;
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t dim;             /* embedding length */
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;        /* attention.key_length (= value_length) */
    int32_t ffn_dim;
    int32_t n_rot;           /* rope.dimension_count */
    float rms_eps;
    float rope_base;         /* global layers */
    float rope_base_local;   /* gemma3 sliding-window layers */
    float rope_freq_scale;   /* 1 / rope.scaling.factor for linear scaling */
    float rope_mscale;       /* phi3 rope.scaling.attn_factor (1: none) */
    int32_t n_ctx_orig;      /* rope.scaling.original_context_length (default n_ctx_train):
                                phi3 uses its long-rope factors when a sequence may be
                                longer (the KV cache's max_seq_len), as llama.cpp does */
    cv_rope_mode rope_mode;
    int32_t sliding_window;  /* 0: none; llama (Mistral): every layer slides */
    int32_t swa_period;      /* gemma3: every swa_period-th layer is global */
    float attn_scale;        /* multiplies q.k */
    float embd_scale;        /* multiplies the token embedding (1 unless gemma3) */
    float final_softcap;     /* 0: none */
    int tied_output;         /* output projection is token_embd */
    int32_t n_expert;        /* mixture of experts: experts per layer (0: dense) */
    int32_t n_expert_used;   /* experts per token */
    int32_t ffn_exp_dim;     /* an expert's ffn rows (expert_feed_forward_length) */
    /* deepseek2's multi-head latent attention. The cache holds per token one "kv head"
     * of head_dim = kv_lora + n_rot: the normed latent, then the roped key part; its
     * values are the latent (v_dim kv_lora). A query head is qk_nope + n_rot wide, a
     * value head v_head (the *_length_mla keys). */
    int32_t q_lora;          /* attention.q_lora_rank; 0: attn_q projects directly (V2-Lite) */
    int32_t kv_lora;         /* attention.kv_lora_rank */
    int32_t qk_nope;         /* key_length_mla - n_rot */
    int32_t v_head;          /* value_length_mla */
    int32_t n_dense_lead;    /* leading_dense_block_count: dense ffn layers before the mixture */
    int32_t n_expert_shared; /* expert_shared_count: one fused shared ffn of n * ffn_exp_dim rows */
    int32_t n_expert_groups, n_group_used;  /* group-limited routing (V3); 0: none */
    int expert_sigmoid;      /* expert_gating_func 2 (V3); else softmax */
    int expert_norm;         /* expert_weights_norm */
    float expert_scale;      /* expert_weights_scale (0: none) */
    float rope_ext_factor;   /* YaRN (rope.scaling.type yarn): 1, else 0 */
    float rope_yarn_lo, rope_yarn_hi;  /* its correction dims */
} cv_hparams;

typedef struct cv_model_opts {
    int32_t max_batch;       /* tokens per forward call (prefill chunk) */
    int32_t max_logits;      /* rows per call that may ask for logits (<= max_batch) */
    int32_t tp_rank;         /* this shard, 0..tp_size-1 */
    int32_t tp_size;         /* tensor-parallel ranks (0 or 1: the whole model) */
    cv_comm *tp_comm;        /* their all-reduce; needed when tp_size > 1 */
} cv_model_opts;

typedef struct cv_model cv_model;

cv_status cv_model_load(cv_backend *be, const cv_gguf *g, const cv_model_opts *opts,
                        cv_model **out, cv_error *err);
void cv_model_free(cv_model *m);

const cv_hparams *cv_model_hparams(const cv_model *m);
const cv_model_opts *cv_model_options(const cv_model *m);
const char *cv_arch_name(cv_arch a);
/* Bytes of weights one forward step of one token reads (every matmul weight once, of a
 * mixture's experts only the n_expert_used a token takes, plus one embedding row): the
 * numerator of the decode roofline on active bytes. */
uint64_t cv_model_weight_bytes(const cv_model *m);
/* Bytes of weights copied into the model's own memory: a CPU shard's column shares of
 * attn_output and ffn_down, packed into rows. 0 at tp 1, where every weight is used in
 * place (from the file's mapping, on the CPU). */
uint64_t cv_model_copied_bytes(const cv_model *m);
/* A KV cache configuration for this model: n_ctx positions per sequence (0 = the
 * training context), max_seqs sequences, all of whose positions fit at once, in the
 * memory of the model's backend. Sliding-window layers (gemma3) are named with their
 * window and max_step = max_batch, so they get a ring of window + max_batch - 1
 * positions per sequence when that is shorter than n_ctx (kv_cache.h); set window to
 * 0 to keep every position in every layer. n_blocks is cv_kv_blocks_for(n_ctx) per
 * sequence: a caller that changes the config recomputes it. For a shard: this rank's
 * kv heads, one rank (tp.h fills in the others). */
cv_kv_config cv_model_kv_config(const cv_model *m, int32_t n_ctx, int32_t max_seqs,
                                cv_type kv_type);

/* One forward step. Row i feeds token tokens[i] at position pos[i] of KV sequence
 * seq[i]; the caller has reserved those positions (cv_kv_reserve), and positions
 * 0..pos[i]-1 of that sequence were fed by earlier steps or earlier rows of this one.
 * With a sliding ring, the cache's sliding layers, window and max_step must match the
 * model (what cv_model_kv_config gives): otherwise CV_EINVAL, naming the difference.
 * The rows with want_logits[i] != 0 (only the last row when want_logits is NULL; at
 * most max_logits rows) get logits, written in row order to logits[n_out][n_vocab]
 * in host memory (a shard writes its block of columns of those rows: all ranks get the
 * same `logits`, host memory their threads share). Tokens outside the
 * vocabulary are a CV_EINVAL error; a batch is checked before the first all-reduce, so
 * every shard of a bad batch fails alike. */
typedef struct cv_batch {
    int32_t n;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const uint8_t *want_logits;  /* NULL: only the last row */
} cv_batch;

cv_status cv_model_forward(cv_model *m, cv_kv_cache *kv, const cv_batch *b, float *logits,
                           cv_error *err);

#endif
