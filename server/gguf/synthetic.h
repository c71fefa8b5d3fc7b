/* synthetic: random-weight GGUF models with the shapes of real ones.
 *
 * For benchmarks and tests that need a model of a real size (bandwidth, batching,
 * tensor parallelism) without its weights. The file is what llama.cpp's converter
 * writes for that architecture: the same tensor names and shapes (token_embd.weight,
 * blk.N.attn_q.weight [+ .bias for qwen2], ..., output_norm.weight, output.weight
 * unless embeddings are tied; phi3's fused attn_qkv and gate-up ffn_up; qwen3's
 * attn_q_norm / attn_k_norm; a mixture of experts as qwen3moe's ffn_gate_inp [embd,
 * experts] and the 3-D ffn_{gate,up,down}_exps [.., .., experts] instead of
 * ffn_gate/up/down; deepseek2's attn_q_a / attn_q_a_norm / attn_q_b or attn_q,
 * attn_kv_a_mqa, attn_kv_a_norm, attn_k_b, attn_v_b, its dense lead layers, shared
 * experts ffn_*_shexp and exp_probs_b.bias), the same metadata keys (<arch>.context_length, <arch>.expert_count, ...),
 * tensor types chosen by a quantize recipe (cv_qrecipe_pick). Weights are
 * approximately normal with standard deviation 0.02 (a sum of four uniforms), norms
 * are 1.0, so activations stay in a sane range through all layers.
 *
 * The tokenizer is copied from another GGUF file (every tokenizer.* key; the model's
 * vocabulary size becomes that file's) or made up: a SentencePiece-style "llama"
 * vocabulary of the shape's size with <unk> <s> </s>, the 256 byte tokens, then
 * pieces with and without the word-start mark: single characters, then lowercase
 * strings of growing length, scored by that order (score -k for piece k), so text
 * tokenizes into real pieces with byte fallback for the rest; a phi3 file's last id is
 * Phi-3's control token <|endoftext|> (llama.cpp's loader requires it of a model named
 * phi3). The output is a function of (shape, recipe, seed, vocab file):
 * the same bytes on every run and for any thread count.
 */
#ifndef CV_SYNTHETIC_H
#define CV_SYNTHETIC_H

#include <stdint.h>
#include <stdio.h>

#include "cv_error.h"
#include "quantize.h"

typedef struct cv_synth_shape {
    const char *name;   /* "tinyllama-1.1b", ... */
    const char *arch;   /* general.architecture: llama, qwen2, gemma3, phi3, qwen3, qwen3moe, deepseek2 */
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_base, rms_eps;
    int qkv_bias;       /* attn_q/k/v biases (qwen2) */
    int tied;           /* no output.weight: token_embd.weight is the output matrix */
    uint32_t n_rot;     /* rope.dimension_count; 0: the whole head (phi3 may rotate part) */
    uint32_t swa;       /* llama: attention.sliding_window (Mistral); 0: none */
    /* Rope scaling from rope_orig_ctx on (0: none). llama: Llama 3.1's, as
     * rope_freqs.weight with this factor and low/high frequency factors 1 and 4. phi3:
     * long-rope, rope_factors_short/long.weight (made up, short near 1, long growing
     * to rope_factor) and rope.scaling.attn_factor as its converter computes it. */
    uint32_t rope_orig_ctx;
    float rope_factor;
    uint32_t head_dim;  /* attention.key_length; 0: n_embd / n_head */
    int qk_norm;        /* per-head attn_q_norm / attn_k_norm (qwen3; gemma3 has them anyway) */
    uint32_t n_expert, n_expert_used, n_ff_exp;  /* mixture of experts; n_expert 0: dense */
    /* deepseek2 (multi-head latent attention, as llama.cpp's converter writes it: MQA of
     * one kv head, key_length kv_lora + n_rot, attn_k_b / attn_v_b split): q_lora 0 is
     * V2-Lite's attn_q; n_rot is the rope part, qk_nope and v_head the heads' other
     * sizes. The mixture: n_dense_lead dense layers first, n_shared shared experts,
     * sigmoid scoring with exp_probs_b biases and groups (V3) or softmax; weights scale
     * and norm. rope_factor with rope_orig_ctx: YaRN with yarn_log_mul. */
    uint32_t q_lora, kv_lora, qk_nope, v_head, n_dense_lead, n_shared, n_groups, n_group_used;
    int sigmoid, expert_norm;
    float expert_scale, yarn_log_mul;
} cv_synth_shape;

/* The built-in shapes, by name; NULL when unknown. */
const cv_synth_shape *cv_synth_find(const char *name);
/* The i-th built-in shape, NULL past the last (for listings). */
const cv_synth_shape *cv_synth_at(int i);

typedef struct cv_synth_opts {
    cv_qrecipe recipe;
    uint64_t seed;
    const char *vocab_from;  /* GGUF file whose tokenizer.* keys are copied; NULL: made up */
    int n_threads;           /* <= 0: one per online CPU */
    FILE *log;               /* notes; NULL for silence */
    uint32_t n_layers;       /* > 0: this many layers instead of the shape's (a reduced-depth
                              * file of a real shape, for benchmarks that must fit in memory) */
} cv_synth_opts;

cv_status cv_synth_write(const cv_synth_shape *shape, const cv_synth_opts *opts, const char *out_path,
                         cv_error *err);

#endif
