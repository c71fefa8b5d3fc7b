/* corvid client: the C API for corvid-server over gRPC.
 *
 * A corvid_client is one channel to a server, or to several balanced round-robin
 * (optionally TLS, optionally with a bearer token); it is thread-safe and may be shared. A generate or chat call returns
 * a corvid_stream that one thread iterates with corvid_stream_next: optional context
 * (citations), text chunks as the server produces them, then the final event.
 *
 * Every function that can fail returns 0 on success and -1 on failure, and fills a
 * corvid_error with the gRPC status code (CORVID_* below, or CORVID_CLIENT_ERROR for a
 * local problem) and the server's or the library's message.
 */
#ifndef CORVID_CLIENT_H
#define CORVID_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gRPC status codes as they arrive; CORVID_CLIENT_ERROR for errors on this side. */
enum {
    CORVID_OK = 0, CORVID_CANCELLED = 1, CORVID_UNKNOWN = 2, CORVID_INVALID_ARGUMENT = 3,
    CORVID_DEADLINE_EXCEEDED = 4, CORVID_NOT_FOUND = 5, CORVID_PERMISSION_DENIED = 7,
    CORVID_RESOURCE_EXHAUSTED = 8, CORVID_FAILED_PRECONDITION = 9, CORVID_UNIMPLEMENTED = 12,
    CORVID_INTERNAL = 13, CORVID_UNAVAILABLE = 14, CORVID_UNAUTHENTICATED = 16,
    CORVID_CLIENT_ERROR = 100
};

typedef struct corvid_error {
    int code;
    char message[512];
} corvid_error;

/* The name of a status code ("RESOURCE_EXHAUSTED"). */
const char *corvid_code_name(int code);

/* Calls this thread starts from now on carry this W3C traceparent
 * ("00-<trace id>-<span id>-<flags>") as gRPC metadata, so the server's spans join the
 * caller's trace; NULL or "" for none. Per thread, like OpenTelemetry's context. */
void corvid_trace_context(const char *traceparent);

typedef struct corvid_client_options {
    /* "127.0.0.1:50051"; several servers: "dns:///NAME:PORT" (every address of the
     * name, re-resolved when connections drop; "dns://RESOLVER:53/NAME:PORT" asks that
     * DNS server) or a list of IP literals "10.0.0.1:50051,10.0.0.2:50051". Calls go
     * round-robin over the addresses; a call a draining server refuses (UNAVAILABLE,
     * before any work) is sent again to the next one, at most twice. */
    const char *addr;
    /* TLS when root_certs_pem is set; mTLS when the client pair is set too. PEM text. */
    const char *root_certs_pem;
    const char *client_cert_pem;
    const char *client_key_pem;
    const char *bearer_token;    /* sent as "authorization: Bearer ..." when set */
    double timeout_s;            /* per call; 0 = none */
    /* TLS: the name the server's certificate must carry, when addr's host is not it
     * (an address from a DNS lookup: pod IPs behind a Service's certificate). */
    const char *tls_server_name;
} corvid_client_options;

typedef struct corvid_client corvid_client;

int corvid_client_new(const corvid_client_options *opt, corvid_client **out, corvid_error *err);
void corvid_client_free(corvid_client *c);

typedef struct corvid_sampling {
    float temperature;           /* 0: greedy */
    int32_t top_k;               /* 0: off */
    float top_p;                 /* 0 or 1: off */
    float min_p;                 /* 0: off */
    float repetition_penalty;    /* 0 or 1: off */
    int has_seed;
    uint64_t seed;
    uint32_t max_tokens;         /* 0: server default */
    const char *const *stop;
    size_t n_stop;
    uint32_t logprobs;           /* alternatives per token; 0: none */
    int ignore_eos;
} corvid_sampling;

/* Retrieval-augmented generation: the server retrieves context from its knowledge base
 * and live sources, streams the citations first (CORVID_EVENT_CONTEXT), and answers
 * from the context, or sends its configured default answer without running the model
 * (final.default_answer) when nothing relevant is found and the policy is "refuse".
 * Zero / NULL fields take the server's defaults. */
typedef struct corvid_rag_options {
    int enable;
    const char *knowledge_base;  /* by name; NULL: the server's default */
    uint32_t top_k;              /* chunks retrieved (server limit 20) */
    float min_score;             /* BM25 score a chunk must reach */
    const char *const *sources;  /* live sources by name; none: all configured */
    size_t n_sources;
    const char *policy;          /* "refuse" or "answer" */
} corvid_rag_options;

typedef struct corvid_generate_params {
    const char *prompt;
    const char *model;           /* NULL: the server's */
    const char *model_version;   /* NULL: routed by traffic weight */
    const char *request_id;
    corvid_sampling sampling;
    int raw;                     /* no BOS/EOS added */
    corvid_rag_options rag;
} corvid_generate_params;

typedef struct corvid_chat_message {
    const char *role;            /* "system", "user", "assistant" */
    const char *content;
} corvid_chat_message;

typedef struct corvid_chat_params {
    const corvid_chat_message *messages;
    size_t n_messages;
    const char *model;
    const char *model_version;
    const char *request_id;
    const char *chat_template;   /* NULL: the model's */
    corvid_sampling sampling;
    corvid_rag_options rag;      /* the question is the last user message */
} corvid_chat_params;

typedef enum corvid_event_kind {
    CORVID_EVENT_CONTEXT = 1,
    CORVID_EVENT_CHUNK = 2,
    CORVID_EVENT_FINAL = 3
} corvid_event_kind;

typedef struct corvid_citation {
    const char *source, *document_id, *title, *url;
    float score;
} corvid_citation;

typedef struct corvid_final {
    const char *finish_reason;   /* "stop", "length", "cancelled", "error" */
    uint32_t prompt_tokens, completion_tokens, context_tokens;
    const char *model_version;
    float ttft_ms, total_ms;
    const char *error;
    const char *stop_string;
    const char *request_id;
    uint64_t seed;
    int default_answer;
} corvid_final;

/* Pointers stay valid until the next corvid_stream_next or corvid_stream_free. */
typedef struct corvid_event {
    corvid_event_kind kind;
    const char *text;            /* CHUNK: UTF-8 delta (NUL-terminated) */
    size_t text_len;
    const int32_t *token_ids;
    size_t n_token_ids;
    const corvid_citation *citations; /* CONTEXT */
    size_t n_citations;
    corvid_final final;          /* FINAL */
} corvid_event;

typedef struct corvid_stream corvid_stream;

int corvid_generate(corvid_client *c, const corvid_generate_params *p, corvid_stream **out,
                    corvid_error *err);
int corvid_chat(corvid_client *c, const corvid_chat_params *p, corvid_stream **out,
                corvid_error *err);
/* 1: *ev holds the next event; 0: the stream ended with status OK; -1: it ended with an
 * error status (err says which), or broke. */
int corvid_stream_next(corvid_stream *s, corvid_event *ev, corvid_error *err);
/* Asks the server to stop; corvid_stream_next then ends with CANCELLED. */
void corvid_stream_cancel(corvid_stream *s);
void corvid_stream_free(corvid_stream *s);

typedef struct corvid_tokenize_params {
    const char *text;
    const char *model;           /* NULL: the server's */
    const char *model_version;   /* NULL: routed by traffic weight; unknown: NOT_FOUND */
    int raw;                     /* no BOS/EOS added */
    int parse_special;           /* control-token text in text becomes control tokens */
} corvid_tokenize_params;

/* *ids is malloc'd: free() it. */
int corvid_tokenize_with(corvid_client *c, const corvid_tokenize_params *p, int32_t **ids, size_t *n_ids,
                         corvid_error *err);
/* corvid_tokenize_with without a version or parse_special. */
int corvid_tokenize(corvid_client *c, const char *model, const char *text, int raw,
                    int32_t **ids, size_t *n_ids, corvid_error *err);

typedef struct corvid_model_info {
    char name[128], version[128], architecture[32], state[16], chat_template[64];
    uint32_t context_length, vocab_size, traffic_weight;
} corvid_model_info;

/* *models is malloc'd: free() it. */
int corvid_list_models(corvid_client *c, corvid_model_info **models, size_t *n, corvid_error *err);

/* *serving is 1 when the server reports SERVING for `service` ("" = the whole server). */
int corvid_health(corvid_client *c, const char *service, int *serving, corvid_error *err);

/* ---- Admin (needs the admin scope) ---- */

#define CORVID_MAX_BUCKETS 32
#define CORVID_CODES 17

/* Cumulative buckets: counts[i] = observations <= bounds[i]; counts[n_bounds] = all. */
typedef struct corvid_histogram {
    size_t n_bounds;
    double bounds[CORVID_MAX_BUCKETS];
    uint64_t counts[CORVID_MAX_BUCKETS + 1];
    uint64_t count;
    double sum;
} corvid_histogram;

typedef struct corvid_slot_status {
    char version[128], state[16], message[512], uri[1024], sha256[65];
    uint32_t weight, in_flight, window_seconds;
    uint64_t requests_total[CORVID_CODES];   /* since load, by gRPC status code */
    uint64_t requests_window[CORVID_CODES];  /* over the window */
    corvid_histogram ttft_seconds, latency_seconds; /* over the window */
    uint64_t tokens_generated;
    float load_seconds, fault_error_rate;
} corvid_slot_status;

typedef struct corvid_server_status {
    char server_id[128];
    uint32_t kv_blocks_used, kv_blocks_total, queue_depth, running_sequences;
    size_t n_slots;
    corvid_slot_status *slots;   /* malloc'd: corvid_server_status_free */
} corvid_server_status;

/* The value below which a share q (0..1) of a histogram's observations fall,
 * interpolated inside the bucket; 0 for an empty histogram. */
double corvid_histogram_quantile(const corvid_histogram *h, double q);

/* out (may be NULL) receives the slot after the call (loading, or its end with wait). */
int corvid_admin_load(corvid_client *c, const char *version, const char *uri, const char *sha256,
                      int wait, corvid_slot_status *out, corvid_error *err);
int corvid_admin_unload(corvid_client *c, const char *version, int wait, corvid_slot_status *out,
                        corvid_error *err);
/* Versions not named get weight 0. */
int corvid_admin_set_traffic(corvid_client *c, const char *const *versions, const uint32_t *weights,
                             size_t n, corvid_error *err);
/* window_seconds 0: the server's default (60). */
int corvid_admin_status(corvid_client *c, uint32_t window_seconds, corvid_server_status *out,
                        corvid_error *err);
void corvid_server_status_free(corvid_server_status *s);
/* Servers built with CORVID_TESTING only: fail a share of the version's requests. */
int corvid_admin_set_fault(corvid_client *c, const char *version, float error_rate, corvid_error *err);

#ifdef __cplusplus
}
#endif

#endif
