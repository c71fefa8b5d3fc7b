/* sampler: picks the next token from a row of logits, one sampler per sequence.
 *
 * Pipeline (llama.cpp's default order): repetition, presence and frequency penalties
 * over the last repeat_last_n tokens -> top-k -> top-p -> min-p -> temperature -> one draw from
 * the sampler's own xoshiro256** stream. temperature 0 is greedy (argmax after the
 * penalty; ties go to the lowest id). Candidates are ordered by (logit desc, id asc)
 * with our own selection and sort, so the same seed and the same logits give the
 * same tokens on every platform (no qsort, no libc rand).
 *
 * A sampler owns all its scratch, sized to the vocabulary at creation: sampling
 * allocates nothing, and there is no global state, so samplers of different
 * sequences may run on different threads at once (one sampler, one thread).
 *
 * Logprobs, when asked for, are the log-softmax of the logits as given (before
 * penalty, truncation and temperature): they describe the model, not the sampler.
 */
#ifndef CV_SAMPLER_H
#define CV_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

#define CV_SAMPLER_MAX_TOP_LOGPROBS 20
#define CV_SAMPLER_MAX_REPEAT_LAST_N (1 << 20)

/* The defaults, named once (cv_sampler_params_default; the server's repeat window;
 * corvid-run's usage text through CV_SAMPLER_STR). Plain literals so that they also
 * read as text. */
#define CV_SAMPLER_DEFAULT_TEMPERATURE 0.8
#define CV_SAMPLER_DEFAULT_TOP_K 40
#define CV_SAMPLER_DEFAULT_TOP_P 0.95
#define CV_SAMPLER_DEFAULT_MIN_P 0.05
#define CV_SAMPLER_DEFAULT_REPEAT_LAST_N 64
#define CV_SAMPLER_STR(x) CV_SAMPLER_STR_(x)
#define CV_SAMPLER_STR_(x) #x

typedef struct cv_sampler_params {
    float temperature;      /* >= 0; 0 = greedy */
    int32_t top_k;          /* >= 0; 0 = off; values above the vocabulary mean off */
    float top_p;            /* (0, 1]; 1 = off */
    float min_p;            /* [0, 1]; 0 = off; relative to the best token's probability */
    float repeat_penalty;   /* > 0; 1 = off; positive logits divided, negative multiplied */
    int32_t repeat_last_n;  /* [0, CV_SAMPLER_MAX_REPEAT_LAST_N]; 0 = off */
    /* [-2, 2]; 0 = off (OpenAI's semantics over the same window): a token seen in the
     * window loses presence_penalty once and frequency_penalty per occurrence, after
     * the repetition penalty, as llama.cpp orders them. */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
    bool logprobs;          /* report the chosen token's logprob */
    int32_t top_logprobs;   /* [0, CV_SAMPLER_MAX_TOP_LOGPROBS] alternatives; > 0 implies logprobs */
} cv_sampler_params;

typedef struct cv_token_logprob {
    int32_t token;
    float logprob;
} cv_token_logprob;

typedef struct cv_sample {
    int32_t token;
    float logprob;      /* of token; 0 when logprobs are off */
    int32_t n_top;      /* entries in top, best first */
    cv_token_logprob top[CV_SAMPLER_MAX_TOP_LOGPROBS];
} cv_sample;

typedef struct cv_sampler cv_sampler;

/* The CV_SAMPLER_DEFAULT_* values (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_last_n 64), repeat_penalty 1 (off), seed 0, no logprobs. */
void cv_sampler_params_default(cv_sampler_params *p);

/* Every stage off: greedy, no top-k/top-p/min-p, repeat_penalty 1, seed 0, no logprobs;
 * repeat_last_n is the default window (it matters once a penalty is set). What a server
 * request gets for the fields it leaves at 0. */
void cv_sampler_params_off(cv_sampler_params *p);

/* The one range check of every field (engine submit and cv_sampler_new call it):
 * CV_EINVAL naming the field as the API's SamplingParams spells it (repetition_penalty,
 * repetition_window, logprobs for repeat_penalty, repeat_last_n, top_logprobs), its
 * value and the allowed range; a NaN or infinite float "is not a number". */
cv_status cv_sampler_params_validate(const cv_sampler_params *p, cv_error *err);

cv_status cv_sampler_new(const cv_sampler_params *p, int32_t n_vocab, cv_sampler **out,
                         cv_error *err);
void cv_sampler_free(cv_sampler *s);

/* Back to the state right after cv_sampler_new: empty history, stream reseeded. */
void cv_sampler_reset(cv_sampler *s);

/* Add tokens to the repetition-penalty history (the prompt, or tokens chosen
 * elsewhere). cv_sampler_sample adds its own choice. CV_ERANGE for an id outside
 * the vocabulary (nothing is added then). */
cv_status cv_sampler_accept(cv_sampler *s, const int32_t *tokens, size_t n, cv_error *err);

/* Choose the next token from n_vocab logits (not modified) and add it to the
 * history. out may be NULL; otherwise it receives the token and, when enabled,
 * the logprobs. */
int32_t cv_sampler_sample(cv_sampler *s, const float *logits, cv_sample *out);

/* cv_sampler_sample over the tokens whose bit is set in allow (n_vocab bits, token i
 * is bit i & 63 of word i >> 6; NULL: all): the others get probability 0 before any
 * other stage, so top-k, top-p and min-p see only allowed tokens (constrained
 * decoding, grammar_match.h). Logprobs still describe the unmasked model. When no
 * allowed token has a finite logit the choice is unspecified: the caller's grammar
 * check refuses it. */
int32_t cv_sampler_sample_masked(cv_sampler *s, const float *logits, const uint64_t *allow, cv_sample *out);

/* Speculative decoding (engine.c): the target's token at a position whose drafted token
 * is `draft`, proposed by a drafter with distribution q (q_probs: n_vocab probabilities
 * from cv_sampler_draft_probs; NULL: a point mass on draft, as prompt lookup proposes).
 * The returned token is distributed exactly as cv_sampler_sample_masked's draw would be
 * (penalties, top-k, top-p, min-p, temperature, the allow mask); the caller accepts the
 * draft when the return equals it, and otherwise keeps the returned token and drops the
 * rest of the draft.
 *  - q a point mass: one ordinary draw from p with one uniform, exactly as
 *    cv_sampler_sample (same stream, same token): the draw equals draft with probability
 *    p(draft), and otherwise is distributed as p without draft, renormalised. That is the
 *    standard rule (accept with min(1, p/q), else draw from max(0, p - q) normalised) for
 *    q = 1 at draft, and on the same logits it draws the token a non-speculative step
 *    would.
 *  - q a distribution: the standard rule: draft is kept with probability
 *    min(1, p(draft) / q(draft)) (one uniform), else one draw (a second uniform) from
 *    max(0, p - q) normalised.
 * Greedy (temperature 0) is the argmax either way. Adds the returned token to the
 * history and fills out (may be NULL) as cv_sampler_sample does. */
int32_t cv_sampler_verify(cv_sampler *s, const float *logits, const uint64_t *allow, int32_t draft,
                          const float *q_probs, cv_sample *out);

/* For a draft model's proposal: writes q, the distribution cv_sampler_sample would draw
 * from on these (draft) logits (n_vocab entries, 0 outside the candidates; the history
 * as it is, without the tokens drafted since), draws one token from it with the
 * sampler's stream and returns it. Adds nothing to the history. Greedy: q is a point
 * mass on the argmax (no draw). */
int32_t cv_sampler_draft_probs(cv_sampler *s, const float *logits, float *q_probs);

/* The distribution the next draw would use, without drawing: writes up to cap
 * candidates (ids and probabilities after penalty, truncation and temperature,
 * summing to 1) and returns how many there are. Consumes no randomness and adds
 * nothing to the history. For tests and diagnostics. */
int32_t cv_sampler_candidates(cv_sampler *s, const float *logits, int32_t *ids, float *probs,
                              int32_t cap);

#endif
