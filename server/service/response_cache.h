/* response_cache: answers of deterministic requests, kept and replayed.
 *
 * A request is deterministic when it is greedy (temperature 0) or names its seed, and
 * asks for no logprobs. Its key is a SHA-256 of everything its tokens depend on: the
 * model version, the exact prompt token ids (after the chat template and any RAG
 * context), every sampling parameter (the seed only when not greedy), max_tokens,
 * ignore_eos, render_special, the stop strings, the grammar of constrained decoding, the output filters that can end it early (rag_guard),
 * whether the answer is judged against its passages (rag_check_answers: it may be
 * replaced, trimmed or held back whole),
 * the RAG context's identity (each kept passage's knowledge-base checksum and chunk
 * id, or a live source's document), and with scope "subject" the caller's JWT
 * subject. An answer whose passages came from a live source is cached only when the
 * operator allows it (live_sources): those answer today's news. A new field of
 * cv_engine_request that changes the tokens or their text must join the key
 * (cv_rc_key_of), or a hit would answer with another request's output.
 *
 * Only answers that end normally (stop or length) are stored, as the engine's stream
 * of chunks (rc_entry.h); a hit replays that stream through the request's own sink,
 * so both protocols send the same messages as after a model run.
 *
 * Backends: memory (an LRU within max_bytes, entries older than ttl_s dropped) or
 * Redis (SET EX ttl_s, shared by every replica; rc_redis.h). A Redis error or timeout
 * is a miss for that request and a counted error, never a failed request; stores go
 * to Redis from a writer thread, so the engine thread never waits on the network (a
 * full queue drops the store, counted as an error). Everything read back is checked
 * (rc_entry.h) before it is replayed.
 */
#ifndef CV_RESPONSE_CACHE_H
#define CV_RESPONSE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "engine.h"
#include "rag_service.h"
#include "rc_entry.h"

typedef enum cv_rc_backend { CV_RC_OFF = 0, CV_RC_MEMORY, CV_RC_REDIS } cv_rc_backend;

typedef struct cv_rc_config {
    cv_rc_backend backend;
    size_t max_bytes;          /* memory: the LRU's budget (entries and their bookkeeping) */
    const char *redis;         /* redis: "HOST:PORT" */
    unsigned ttl_s;            /* 0: entries never expire (memory: only the LRU evicts) */
    unsigned timeout_ms;       /* redis: deadline of one GET or SET, connect included */
    int per_subject;           /* 1: a JWT subject sees only its own answers */
    int live_sources;          /* 1: answers that used live RAG sources are cached too */
} cv_rc_config;

/* Parses "off", "memory" or "redis". */
cv_status cv_rc_backend_parse(const char *s, cv_rc_backend *out, cv_error *err);
const char *cv_rc_backend_name(cv_rc_backend b);

typedef struct cv_rc cv_rc;

/* NULL *out for backend off. */
cv_status cv_rc_new(const cv_rc_config *cfg, cv_rc **out, cv_error *err);
void cv_rc_free(cv_rc *rc);

/* What identifies a request's answer. */
typedef struct cv_rc_query {
    const char *version;
    const cv_engine_request *er;   /* prompt, sampling, max_tokens, stop (all of them), ignore_eos, grammar */
    int explicit_seed;             /* the client named the seed */
    const char *subject;           /* the verified JWT subject, "" or NULL without */
    uint32_t guard_passages;       /* rag_guard on: passages it knows + 1; 0: off */
    int guard_line_end;
    int guard_check;               /* rag_check_answers applied to this answer */
    const cv_rag_outcome *rag;     /* the retrieval that built the prompt, or NULL */
} cv_rc_query;

typedef struct cv_rc_key {
    uint8_t digest[CV_RC_DIGEST];
} cv_rc_key;

/* 1 with *key when the request's answer may be cached, else 0. */
int cv_rc_key_of(const cv_rc *rc, const cv_rc_query *q, cv_rc_key *key);

/* A stored answer for key, checked against the request (n_prompt, n_vocab): 1 with
 * *out (cv_rc_entry_free it); 0 for a miss, an error (counted) or an entry that failed
 * the checks (counted). Blocks up to the Redis deadline. */
int cv_rc_lookup(cv_rc *rc, const cv_rc_key *key, int32_t n_prompt, int32_t n_vocab, cv_rc_entry *out);

/* Records one running request's answer; cv_rc_rec_final stores it when it ended
 * normally and frees the recorder either way. */
typedef struct cv_rc_rec cv_rc_rec;
cv_rc_rec *cv_rc_rec_new(cv_rc *rc, const cv_rc_key *key);
void cv_rc_rec_chunk(cv_rc_rec *r, const char *text, size_t len, const int32_t *ids, int32_t n_ids);
void cv_rc_rec_final(cv_rc_rec *r, const cv_engine_final *f);
void cv_rc_rec_free(cv_rc_rec *r);

typedef struct cv_rc_stats {
    cv_rc_backend backend;
    uint64_t lookups, hits, stores, errors;
    uint64_t bytes;        /* memory: held now; redis: written in all */
    uint64_t entries;      /* memory: held now; redis: 0 */
} cv_rc_stats;

void cv_rc_stats_get(cv_rc *rc, cv_rc_stats *out);
/* The corvid_response_cache_* series in Prometheus text (malloc'd), "" for NULL rc. */
char *cv_rc_metrics(cv_rc *rc);

#endif
