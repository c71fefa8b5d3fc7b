/* generate: the single-sequence generation loop (prefill in chunks, then one token per
 * step) over a model's runner (tp.h) and its KV cache, as used by corvid-run and the
 * benchmarks.
 *
 * Token choice, streaming and stopping are the caller's, through callbacks, so the
 * loop knows nothing about samplers, stop strings or output formats. The host logits
 * buffer is allocated once per call; the decode loop itself never allocates.
 */
#ifndef CV_GENERATE_H
#define CV_GENERATE_H

#include <stdint.h>

#include "cv_error.h"
#include "kv_cache.h"
#include "model.h"
#include "tp.h"

typedef struct cv_gen_callbacks {
    /* Picks the next token from a logits row; NULL = greedy argmax. A negative return
     * stops generation with CV_EINVAL (the callback fills nothing: say why yourself). */
    int32_t (*sample)(void *ctx, float *logits, int32_t n_vocab);
    /* Sees each logits row before sampling: every prompt row when all_logits, then the
     * row each generated token is chosen from. May be NULL. */
    void (*on_logits)(void *ctx, const float *logits, int32_t n_vocab);
    /* Receives each generated token; nonzero stops (end of sequence, stop string). */
    int (*on_token)(void *ctx, int32_t token);
    void *ctx;
} cv_gen_callbacks;

typedef struct cv_gen_params {
    int32_t n_predict;     /* tokens to generate at most (0: prompt only) */
    int32_t seq;           /* KV sequence to use; released when the call ends */
    int all_logits;        /* logits for every prompt position (perplexity, tests) */
} cv_gen_params;

typedef struct cv_gen_stats {
    int32_t n_prompt;
    int32_t n_generated;
    double prefill_s;      /* wall time of the prompt's forward passes */
    double decode_s;       /* wall time of the generation steps */
} cv_gen_stats;

/* Runs prompt[0..n_prompt) then generates. Fails with CV_ERANGE when the prompt does
 * not fit the cache's per-sequence context; generation stops early (no error) when
 * the context is full. */
cv_status cv_generate(cv_tp *tp, cv_kv_cache *kv, const int32_t *prompt, int32_t n_prompt,
                      const cv_gen_params *p, const cv_gen_callbacks *cb, cv_gen_stats *st,
                      cv_error *err);

int32_t cv_argmax(const float *x, int32_t n);

#endif
