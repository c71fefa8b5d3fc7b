/* infer_core: what the gRPC Inference service and the OpenAI HTTP service share on the
 * way from a request to the engine: the slot a request runs on, its prompt ids, the
 * status a failure maps to, the request log line, and the pending output of a running
 * request (what the engine produced and the client has not been sent yet).
 *
 * Statuses are gRPC codes (cv_rpc_code) because gRPC was first; the HTTP service maps
 * them to HTTP statuses with cv_core_http_status. Nothing here knows a wire format.
 */
#ifndef CV_INFER_CORE_H
#define CV_INFER_CORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_format.h"
#include "engine.h"
#include "router.h"
#include "rpc_server.h"
#include "rag_guard.h"
#include "rag_request.h"
#include "response_cache.h"
#include "think_split.h"
#include "tool_calls.h"
#include "trace.h"

/* What a request came over: the index of its figures in stats.h (CV_STATS_PROTOCOLS)
 * and the "protocol" label and log field. */
typedef enum cv_core_protocol { CV_CORE_GRPC = 0, CV_CORE_HTTP = 1 } cv_core_protocol;
const char *cv_core_protocol_name(cv_core_protocol p);

/* A fresh non-zero seed (getrandom). */
uint64_t cv_core_random_seed(void);
/* A request's client went away (either protocol): marks it gone under mu and cancels its
 * engine sequence if one was submitted. The cancel runs outside mu, because the engine's
 * sink takes mu. */
void cv_core_client_gone(pthread_mutex_t *mu, int *client_gone, cv_engine *engine, const uint64_t *engine_id);
/* The status a failed call of the layers below maps to. */
cv_rpc_code cv_core_code_of(cv_status st);
/* The HTTP status of a gRPC code (400, 401, 403, 404, 429, 503, 504, 500, ...). */
int cv_core_http_status(cv_rpc_code code);

/* The slot a request runs on: the version named (pinned), else one picked by traffic
 * weight (sticky per request_id); model, when set, must name the slot's model or its
 * version. CV_RPC_OK with *out acquired (cv_router_release it), else the code with
 * the message in msg. */
cv_rpc_code cv_core_acquire(cv_router *r, const char *model, const char *version, const char *request_id,
                            cv_slot **out, char *msg, size_t cap);

/* The default prompt bound in bytes per token of the model's context: about 8x what
 * real text takes (English about 4 bytes a token, code and CJK about 3), so a prompt
 * over it could never fit the context whatever the tokenizer; it only stops work that
 * would be thrown away. */
#define CV_INFER_PROMPT_BYTES_PER_TOKEN 32

/* max_prompt_bytes (0: the slot's context x CV_INFER_PROMPT_BYTES_PER_TOKEN) for a
 * request on slot, on the bytes as sent (field: the API's name for them), before any
 * tokenizing: CV_OK or CV_EINVAL with both numbers. */
cv_status cv_core_check_prompt_size(size_t max_prompt_bytes, const cv_slot *slot, const char *field, size_t bytes,
                                    cv_error *err);

/* Tokens of text[0..len) without special tokens (RAG's measure of a passage); out of
 * memory counts as too long (a huge number), so the passage is left out. */
size_t cv_core_count_tokens(const cv_tok *tok, const char *text, size_t len);

/* text tokenized into a malloc'd array. */
cv_status cv_core_tokenize(const cv_tok *tok, const char *text, unsigned flags, int32_t **ids, size_t *n,
                           cv_error *err);
/* The chat template a request gets: the built-in one it names (name "" or NULL for
 * none), else the model's own (chat_format.h). CV_RPC_OK, or the status and the message
 * in err (naming chat_template). */
cv_rpc_code cv_core_chat_format(const cv_slot *slot, const char *name, const cv_chat_format **fmt, cv_error *err);


/* One JSON line per finished request on stderr: its id, trace id (NULL: none), version,
 * protocol, status (gRPC name), counts and times when it ran (f may be NULL), and the error. */
void cv_core_log_request(cv_core_protocol proto, const char *request_id, const char *trace_id, const char *version,
                         cv_rpc_code code, const cv_engine_final *f, const char *error);

/* ---- one request's trace (trace.h): the request span and, at its end, the engine's
 * phases as its children, with OpenTelemetry's gen_ai.* attribute names ---- */
typedef struct cv_core_trace {
    cv_trace_ctx ctx;        /* under the request span: retrieval and engine phases hang here */
    cv_span *span;           /* the request span; NULL when not recorded */
    uint64_t submit_ns;      /* the prompt went to the engine; 0: it never did */
    char trace_id[33];       /* for the log line and the audit trail */
} cv_core_trace;

/* Starts the request span (name: "corvid.v1.Inference/Chat", "POST /v1/completions")
 * under traceparent (NULL or malformed: a new trace); operation is gen_ai.operation.name
 * ("chat", "text_completion"). */
void cv_core_trace_begin(cv_core_trace *t, const char *traceparent, const char *name, cv_core_protocol proto,
                         const char *operation);
/* The prompt goes to the engine now: notes the time and the request's model and sampling. */
void cv_core_trace_submit(cv_core_trace *t, const char *model, const cv_engine_request *er);
/* Ends the request span (once): usage and status, and when the engine ran the request
 * (f after a submit) its queue wait, prefill and decode as child spans. */
void cv_core_trace_end(cv_core_trace *t, const char *request_id, const char *version, cv_rpc_code code,
                       const cv_engine_final *f, const char *error);

/* A tool call parsed out of the answer (tool_calls.h), with the id a tool message
 * answers. Its arguments grow as the model writes them; a stream hands on the head
 * (id, name) once and then each new piece. */
typedef struct cv_core_call {
    size_t index;            /* 0, 1, ... in the answer */
    char id[32];             /* "call_" and 16 hex digits */
    char *name;
    char *args;              /* so far (NUL-terminated); a JSON object once done */
    size_t args_len, args_cap;
    size_t sent;             /* bytes of args handed on (cv_core_call_sent) */
    int head_sent;           /* id and name handed on */
    int done;                /* the call is over: no more arguments come */
} cv_core_call;

/* ---- pending output of one request: the engine appends, the protocol drains ----
 * The owner serializes access with its own lock; cv_core_out_token is the exception:
 * it runs on the engine thread only, before the lock is taken. */
typedef struct cv_core_out {
    char *text;
    size_t text_len, text_cap;
    int32_t *ids;
    size_t n_ids, ids_cap;
    cv_sample *samples;      /* parallel to ids when want_samples */
    int want_samples;
    int overflow;            /* more than CV_INFER_MAX_PENDING bytes waited: cancel */
    /* With split (cv_core_out_split): think-block text goes to reasoning, not text. */
    int split;
    cv_think_split think;
    char *reasoning;
    size_t reasoning_len, reasoning_cap;
    int have_final;
    cv_engine_final final;   /* stop_string and error point into the arrays below */
    char stop_string[256];
    char error[512];
    double t_last_token;     /* engine thread only */
    /* A RAG answer's text passes rag_guard.h; a trip ends the answer (append returns 1:
     * cancel) and the final says stop. Later chunks are dropped; the ids of the chunk
     * it cut in stay. */
    cv_rag_guard *guard;
    cv_rag_guard_trip guard_trip;
    /* With cv_core_out_tools: the answer's text (not its reasoning) passes the parser;
     * its calls wait in calls until consumed (a call still being written, or with
     * pieces not yet handed on, stays). */
    cv_tool_parser *tools;
    cv_core_call *calls;
    size_t n_calls, calls_cap, calls_total;
    uint32_t guard_passages;  /* what the guard was made with, for the response cache's key */
    int guard_line_end;
    int guard_check;          /* 1: the answer is judged against the passages (rag_support.h) */
    /* The response cache (response_cache.h): the recorder of an answer it may store
     * (engine thread only), or cached: the answer is a replayed one. */
    cv_rc_rec *rec;
    int cached;
} cv_core_out;

#define CV_INFER_MAX_PENDING (1u << 20)

/* Engine thread, for n_ids new tokens: records the inter-token gap in stats; returns 1
 * for the request's first token (which goes out at once: it is the TTFT). */
int cv_core_out_token(cv_core_out *o, cv_stats *stats, cv_core_protocol proto, int32_t n_ids);
/* The engine's chunk: recorded for the response cache, then cv_core_out_append. */
int cv_core_out_engine_chunk(cv_core_out *o, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                             const cv_sample *samples);
/* Appends a chunk; returns 1 when the client has fallen too far behind (or memory ran
 * out): the owner cancels the engine request then. */
int cv_core_out_append(cv_core_out *o, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                       const cv_sample *samples);
/* The request's end; an answer being recorded is stored when it ended normally. */
void cv_core_out_final(cv_core_out *o, const cv_engine_final *f);
/* Puts the answer of a retrieval r through a guard (rag_guard.h) that ends it at a line
 * break when line_end, and with check judges it against the passages given
 * (rag_support.h); -1 when out of memory. */
int cv_core_out_guard(cv_core_out *o, const cv_rag_result *r, int line_end, int check);
/* A chat of a reasoning model: from now on text between the think markers goes to
 * reasoning (think_split.h); starts_inside when the prompt opened the block. */
void cv_core_out_split(cv_core_out *o, int starts_inside);
/* A chat with tools: from now on tool calls are cut out of the answer (tool_calls.h;
 * max_calls 0: any number); -1 when out of memory. */
int cv_core_out_tools(cv_core_out *o, cv_tool_syntax s, size_t max_calls);
/* A call with something not yet handed on (its head or a piece of its arguments). */
int cv_core_call_pending(const cv_core_call *c);
/* Everything of c so far was handed on. */
void cv_core_call_sent(cv_core_call *c);
/* Some call is pending. */
int cv_core_out_calls_pending(const cv_core_out *o);
/* The answer stopped after calling tools: finish reason tool_calls (after the final). */
int cv_core_out_called(const cv_core_out *o);
/* Counts a finished request in the slot's stats: its code, and when it ran (o non-NULL,
 * after its final) how it finished (tool_calls as the API says), its times and token
 * counts. */
void cv_core_record(cv_stats *stats, cv_core_protocol proto, cv_rpc_code code, const cv_core_out *o);
/* The response cache's turn, just before a request goes to the engine (q: what its
 * answer depends on; mu: the owner's lock of o). A hit replays the stored answer
 * through sink exactly as the engine would call it (its chunks, then a final, with
 * o->cached set) and returns 1: the request is answered and the engine never sees
 * it. Otherwise 0, with o->rec set when the answer is to be stored; rc NULL (no cache)
 * or a request that may not be cached is 0 at once. */
int cv_core_cache(cv_rc *rc, const cv_rc_query *q, int32_t n_vocab, pthread_mutex_t *mu, cv_core_out *o,
                  const cv_engine_sink *sink);
/* Text, ids and calls taken: empties the pending output (text stays NUL-terminated);
 * the caller marked what it handed on of each call (cv_core_call_sent), and a call
 * that is over and wholly handed on is dropped. */
void cv_core_out_consumed(cv_core_out *o);
void cv_core_out_free(cv_core_out *o);

#endif
