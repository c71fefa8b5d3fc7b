/* engine: one loaded model version with its scheduler and paged KV cache.
 *
 * cv_engine_submit queues a request (already tokenized) and returns at once; the
 * engine's own thread runs continuous batching: every step decodes one token for
 * each running sequence and feeds prompt chunks of admitted ones (chunked prefill)
 * in one batched forward pass of at most max_batch_tokens rows. KV blocks are taken
 * as sequences grow (a sliding-window model's local layers take only a ring of them
 * per sequence, from the same budget: kv_cache.h); when they run out, the youngest
 * running sequence is preempted (its blocks freed, its prompt plus the tokens it
 * already produced recomputed later), so the oldest always make progress.
 *
 * Prefix caching (prefix_cache, on by default; kv_cache.h): a sequence admitted (or
 * re-admitted after preemption) first maps the longest run of cached full blocks that
 * matches its tokens, leaving at least its last token to compute, and prefills only
 * the rest; after every step the blocks it filled become shareable. Sequences sharing
 * a prefix while both run hold the same blocks; blocks no sequence holds stay cached
 * until the budget needs them. The chain is seeded with prefix_salt (the slot passes
 * its version) and the model's K/V-deciding settings. Not with sliding-window rings
 * (kv_swa_full_cache makes such a model cacheable).
 *
 * Output goes to the request's sink on the engine thread: text chunks (complete UTF-8
 * characters, stop strings held back while a partial match is pending) with their
 * token ids, then exactly one final event. A sink must never block. After the final
 * event the engine never touches the sink again.
 *
 * Speculative decoding (spec, on by default): while at most spec_max_batch sequences
 * run, a decoding sequence may append up to spec_max_draft drafted tokens to its row;
 * the target verifies them in the same batched forward pass (one logits row per
 * position) and keeps the longest prefix its own sampler agrees with plus one token of
 * its own (cv_sampler_verify: greedy output is the non-speculative output, sampled
 * output keeps the sampler's distribution). Drafters: prompt lookup (the most recent
 * earlier occurrence of the longest suffix of at least spec_ngram tokens, anywhere in
 * prompt and output: RAG passages and code being edited are copied) and, when no
 * lookup matches, a draft model (`draft`, same vocabulary). Positions past the accepted
 * ones are rolled back (cv_kv_truncate: blocks wholly past them return to the pool) and
 * only verified positions are published to the prefix cache. The draft length is chosen
 * per step and sequence to maximise the step's expected tokens per second: a sequence
 * whose drafter agreed with the target on a share alpha of drafted tokens (decayed
 * counts; lookup's prediction is also scored on steps that did not speculate) yields
 * (1 - alpha^(k+1)) / (1 - alpha) tokens for k drafted, and a step of R rows costs
 * a + b R seconds, a and b fitted to the measured times of recent steps (plus the draft
 * model's measured step time per drafted position); k = 0 when nothing pays. A sampled
 * sequence's lookup drafts are sized with the prior cost (a row costs 5% of a one-row
 * step) instead: batch widths that follow timing would make a seeded stream depend on
 * load (rows verified together can differ from single rows in the last bits of F32
 * logits). Sequences with a grammar do not speculate (their matcher cannot step back).
 *
 * Submit, cancel and stats are thread-safe. A cancelled request ends within one step
 * with finish reason CANCELLED and its KV blocks are returned.
 */
#ifndef CV_ENGINE_H
#define CV_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "grammar_match.h"
#include "model.h"
#include "tp.h"
#include "sampler.h"
#include "tokenizer.h"

#define CV_ENGINE_DEFAULT_CTX 4096
/* Tokens a request generates when it says 0 (the server's max_tokens_default). */
#define CV_ENGINE_MAX_TOKENS_DEFAULT 256

typedef struct cv_engine_config {
    int32_t max_running;       /* sequences decoded together */
    int32_t max_waiting;       /* queued beyond running; more is CV_EBUSY */
    int32_t max_batch_tokens;  /* rows per forward pass (decode rows + prefill chunks) */
    int32_t n_ctx;             /* positions per sequence; 0 = the training context, at most
                                  CV_ENGINE_DEFAULT_CTX; never more than the training context */
    int32_t kv_block_tokens;   /* token slots per KV block */
    size_t kv_bytes;           /* KV cache budget; 0 = enough for every running sequence
                                  at n_ctx */
    cv_type kv_type;           /* CV_TYPE_F16 (default) or CV_TYPE_F32 */
    int kv_swa_full_cache;     /* sliding-window layers keep every position instead of a
                                  ring (an escape hatch and a baseline: kv_cache.h) */
    int32_t max_tokens_default; /* for requests that say 0; <= 0: CV_ENGINE_MAX_TOKENS_DEFAULT */
    int prefix_cache;          /* share cached prefix blocks (above); default 1 */
    uint64_t prefix_salt;      /* the model version's part of the prefix hash chain */
    /* Speculative decoding (above). */
    int spec;                  /* 1 (default): draft and verify; 0: off */
    int32_t spec_max_draft;    /* tokens drafted per sequence and step, 1..CV_ENGINE_SPEC_MAX_DRAFT */
    int32_t spec_max_batch;    /* speculate only while at most this many sequences run */
    int32_t spec_ngram;        /* prompt lookup: shortest suffix matched, 1..CV_ENGINE_SPEC_MAX_NGRAM */
    cv_tp *draft;              /* a draft model's runner (borrowed; NULL: prompt lookup only), loaded
                                  with max_batch >= max_batch_tokens and max_logits >= spec_max_batch;
                                  its vocabulary must be the target's (the slot checks) */
} cv_engine_config;

#define CV_ENGINE_SPEC_MAX_DRAFT 16
#define CV_ENGINE_SPEC_MAX_NGRAM 8

/* Drafters, as the stats and metrics count them. */
typedef enum cv_spec_drafter { CV_SPEC_LOOKUP = 0, CV_SPEC_DRAFT_MODEL = 1, CV_SPEC_DRAFTERS = 2 } cv_spec_drafter;
const char *cv_spec_drafter_name(cv_spec_drafter d); /* "lookup", "draft_model" */

typedef enum cv_finish {
    CV_FINISH_STOP = 1,        /* end-of-generation token or a stop string */
    CV_FINISH_LENGTH = 2,      /* max_tokens or the context is full */
    CV_FINISH_CANCELLED = 3,
    CV_FINISH_ERROR = 4
} cv_finish;

typedef struct cv_engine_request {
    const int32_t *prompt;
    int32_t n_prompt;
    cv_sampler_params sampling;
    int32_t max_tokens;        /* 0: the engine's default */
    const char *const *stop;   /* stop strings, copied at submit */
    int32_t n_stop;
    int ignore_eos;
    /* Constrained decoding: GBNF text (grammar.h; json_schema.h builds it from a JSON
     * schema), compiled at submit; every token is drawn among those the grammar allows
     * and an end token only once the text is complete. NULL or "": unconstrained. */
    const char *grammar;
    int render_special;        /* control tokens come out as their text (tool-call markers) */
} cv_engine_request;

typedef struct cv_engine_final {
    cv_finish reason;
    int32_t prompt_tokens;
    int32_t completion_tokens;
    double queue_s;            /* submit to first scheduled */
    double ttft_s;             /* submit to first token */
    double total_s;            /* submit to final */
    const char *stop_string;   /* the one that matched, or NULL */
    const char *error;         /* with CV_FINISH_ERROR */
} cv_engine_final;

typedef struct cv_engine_sink {
    /* text[0..len) may be empty when only held-back ids arrive; samples (one per id)
     * is non-NULL when logprobs were asked for. */
    void (*on_chunk)(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                     const cv_sample *samples);
    void (*on_final)(void *ctx, const cv_engine_final *f);
    void *ctx;
} cv_engine_sink;

typedef struct cv_engine_stats {
    int32_t running, waiting;
    /* KV memory blocks (kv_cache.h): each holds block_size positions of every layer,
     * or, with sliding-window rings, of every sliding layer or of several blocks of
     * the global layers; a block partly used counts as used. */
    int32_t kv_blocks_used, kv_blocks_total;
    int32_t last_batch_rows;   /* rows of the most recent forward pass */
    uint64_t steps;
    uint64_t preemptions;
    uint64_t tokens_generated;
    /* Prefix cache: tokens of admitted sequences looked up and found (a preempted one
     * counts again when re-admitted; with the cache off every token is a miss, so
     * queries - hits is the prefill computed either way), blocks in the index (held or
     * not), blocks evicted from it; prefix_cache: on. */
    uint64_t prefix_queries, prefix_hits, prefix_evictions;
    int32_t prefix_blocks;
    int prefix_cache;
    /* Speculative decoding: tokens drafted and of those accepted, by drafter. */
    uint64_t spec_drafted[CV_SPEC_DRAFTERS], spec_accepted[CV_SPEC_DRAFTERS];
} cv_engine_stats;

typedef struct cv_engine cv_engine;

void cv_engine_config_default(cv_engine_config *c);
/* Logits rows a model must be loaded for (cv_model_opts.max_logits) to serve this config
 * with speculation: max_running, plus spec_max_batch * spec_max_draft when spec is on,
 * at most max_batch_tokens. A model loaded for fewer drafts fewer tokens. */
int32_t cv_engine_logits_rows(const cv_engine_config *c);
/* The engine borrows the model's runner and tok (they must outlive it) and starts its
 * thread, the only one that drives tp. */
cv_status cv_engine_new(cv_tp *tp, const cv_tok *tok, const cv_engine_config *cfg,
                        cv_engine **out, cv_error *err);
/* Cancels everything still queued or running (their final events arrive), stops the
 * thread and frees the KV cache. */
void cv_engine_free(cv_engine *e);

/* CV_EINVAL for a prompt that does not fit the context (naming both lengths), bad
 * sampling values or a grammar that does not compile (its message); CV_EBUSY when the queue is full (naming the limits). */
cv_status cv_engine_submit(cv_engine *e, const cv_engine_request *r, const cv_engine_sink *sink,
                           uint64_t *id, cv_error *err);
/* No-op for an id that already finished. */
void cv_engine_cancel(cv_engine *e, uint64_t id);
void cv_engine_get_stats(cv_engine *e, cv_engine_stats *st);
int32_t cv_engine_n_ctx(const cv_engine *e);

#endif
