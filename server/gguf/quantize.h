/* quantize: rewrite a GGUF model with its weights in another tensor type.
 *
 * A recipe names the file's target (general.file_type as llama.cpp numbers it) and
 * picks a type per tensor (cv_qrecipe_pick):
 *  - 1-D tensors (norms, biases), tensors not named *.weight and a mixture's router
 *    (ffn_gate_inp.weight) stay F32;
 *  - pure recipes (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) give every other tensor
 *    their type;
 *  - Q4_K_M gives Q6_K to output.weight (token_embd.weight when the model has no
 *    output.weight, i.e. tied embeddings) and to attn_v.weight and ffn_down.weight
 *    (ffn_down_exps.weight in a mixture) of the layers llama.cpp's use_more_bits(i, n) selects (i < n/8, i >= 7n/8, or
 *    (i - n/8) % 3 == 2: about half of them, weighted to the ends); Q4_K elsewhere;
 *  - a row length that is not a multiple of the type's block falls back like
 *    llama.cpp (Q4_K -> Q5_0, Q6_K -> Q8_0), and to F32 when it does not divide into
 *    32-element blocks either (a note names the tensor).
 * Every key/value is copied; general.file_type and general.quantization_version are
 * set. Quantized input is dequantized first. Output is the reference quantizers'
 * bytes, so llama-quantize (without an imatrix) writes the same tensors.
 */
#ifndef CV_QUANTIZE_H
#define CV_QUANTIZE_H

#include <stdint.h>
#include <stdio.h>

#include "cv_error.h"
#include "gguf.h"
#include "quant.h"

typedef enum cv_qrecipe {
    CV_QRECIPE_F32,
    CV_QRECIPE_F16,
    CV_QRECIPE_BF16,
    CV_QRECIPE_Q8_0,
    CV_QRECIPE_Q4_0,
    CV_QRECIPE_Q4_K,
    CV_QRECIPE_Q6_K,
    CV_QRECIPE_Q4_K_M,
    CV_QRECIPE_COUNT
} cv_qrecipe;

typedef struct cv_qrecipe_info {
    const char *name;    /* "Q4_K_M", ... */
    cv_type base;        /* the type most weights get */
    uint32_t file_type;  /* general.file_type (llama.cpp's LLAMA_FTYPE_MOSTLY_*) */
} cv_qrecipe_info;

const cv_qrecipe_info *cv_qrecipe_get(cv_qrecipe r);
/* Case-insensitive name; the error lists the valid names. */
cv_status cv_qrecipe_parse(const char *name, cv_qrecipe *out, cv_error *err);

/* Type for one tensor. n_layers is the model's block count; has_output says whether
 * it has an output.weight. When the type differs from the recipe's choice because
 * the rows do not divide into blocks, *note (if not NULL) says why; else NULL. */
cv_type cv_qrecipe_pick(cv_qrecipe r, const char *name, uint32_t n_dims, const int64_t *ne,
                        int n_layers, int has_output, const char **note);

/* Convert n_rows rows of n_per_row elements from src_type to dst_type (through F32;
 * rows are independent, so the bytes do not depend on the thread count). */
cv_status cv_convert_rows(cv_type src_type, const void *src, cv_type dst_type, void *dst,
                          int64_t n_per_row, int64_t n_rows, int n_threads, cv_error *err);

typedef struct cv_quantize_opts {
    int n_threads;  /* <= 0: one per online CPU */
    FILE *log;      /* notes and a summary; NULL for silence */
} cv_quantize_opts;

cv_status cv_quantize_model(const char *in_path, const char *out_path, cv_qrecipe r,
                            const cv_quantize_opts *opts, cv_error *err);

#endif
