/* rpc_server: the one module that talks to gRPC C core.
 *
 * Services register handlers by full method path ("/pkg.Service/Method") and never
 * see a gRPC type: a handler gets the request bytes and a cv_rpc_call, and answers
 * either at once (cv_rpc_reply, unary) or later as a stream (cv_rpc_stream_start).
 *
 * Streams are pull-based so that a slow reader never stalls a producer: the service
 * keeps its own pending data and calls cv_rpc_stream_wake() from any thread; whenever
 * no message is in flight the server calls the stream's produce() to build the next
 * one from everything pending (so pending output coalesces into fewer messages), and
 * finishes the call when produce() says so. One message is in flight at a time.
 *
 * cv_rpc_stream_start gives the service a hold on the call: the service may call
 * cv_rpc_stream_wake until it calls cv_rpc_call_release (once, after its last wake).
 * A client cancel, disconnect or deadline calls the stream's on_cancel() once (from
 * the completion-queue thread, no lock held); done() runs exactly once, when neither
 * the server nor the service holds the call: only then may the service free ctx. Unknown methods get UNIMPLEMENTED and
 * an empty or oversized request INVALID_ARGUMENT / RESOURCE_EXHAUSTED before any
 * handler runs.
 */
#ifndef CV_RPC_SERVER_H
#define CV_RPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

/* gRPC status codes, numerically equal to grpc_status_code. */
typedef enum cv_rpc_code {
    CV_RPC_OK = 0, CV_RPC_CANCELLED = 1, CV_RPC_UNKNOWN = 2, CV_RPC_INVALID_ARGUMENT = 3,
    CV_RPC_DEADLINE_EXCEEDED = 4, CV_RPC_NOT_FOUND = 5, CV_RPC_ALREADY_EXISTS = 6,
    CV_RPC_PERMISSION_DENIED = 7, CV_RPC_RESOURCE_EXHAUSTED = 8,
    CV_RPC_FAILED_PRECONDITION = 9, CV_RPC_ABORTED = 10, CV_RPC_OUT_OF_RANGE = 11,
    CV_RPC_UNIMPLEMENTED = 12, CV_RPC_INTERNAL = 13, CV_RPC_UNAVAILABLE = 14,
    CV_RPC_DATA_LOSS = 15, CV_RPC_UNAUTHENTICATED = 16
} cv_rpc_code;

typedef struct cv_rpc_server cv_rpc_server;
typedef struct cv_rpc_call cv_rpc_call;

/* Runs on the completion-queue thread: must not block. The call stays valid until
 * it is answered (cv_rpc_reply) or its stream's done() has run. */
typedef void (*cv_rpc_handler)(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len);

typedef enum cv_rpc_produce {
    CV_RPC_NOTHING,  /* nothing pending now: wait for the next wake */
    CV_RPC_MESSAGE,  /* *msg (malloc'd, taken over by the server) is the next message */
    CV_RPC_FINISH    /* send *code / *status_msg (owned by the service) and end; a *msg
                        set too (malloc'd, taken over) goes out first, in the same batch */
} cv_rpc_produce;

typedef struct cv_rpc_stream_ops {
    /* more_queued: the service has more to send after this message (lets gRPC batch writes). */
    cv_rpc_produce (*produce)(void *ctx, uint8_t **msg, size_t *len, int *more_queued,
                              cv_rpc_code *code, const char **status_msg);
    void (*on_cancel)(void *ctx);
    void (*done)(void *ctx);
} cv_rpc_stream_ops;

typedef struct cv_auth cv_auth;
typedef struct cv_tls_files cv_tls_files;

typedef struct cv_rpc_config {
    const char *listen;          /* "127.0.0.1:50051"; port 0 picks a free one */
    size_t max_request_bytes;    /* 0: 4 MiB */
    int max_concurrent_streams;  /* 0: gRPC's default */
    /* TLS on `listen` when set (the server takes it over); the files are re-checked at
     * most once a second on handshakes, and new valid ones are served without a restart. */
    cv_tls_files *tls;
    int require_client_cert;     /* mTLS: clients must present a certificate the CA signed */
    /* With TLS: a plaintext port that serves only grpc.health.v1 (Kubernetes probes). */
    const char *health_listen;
    cv_auth *auth;               /* checked on every call before its handler; NULL: none */
    /* Output woken with cv_rpc_stream_wake_batched is sent in rounds at most this often
     * (ms), from a sender thread; 0: at once, on the waking thread. A round carries
     * everything a stream produced since the last one, so a fast producer costs one
     * message per round instead of one per token. */
    int flush_interval_ms;
    /* A connection gets GOAWAY after max_connection_age_ms (gRPC adds +-10% jitter), then
     * its streams have grace_ms to finish; 0: no limit. Clients that resolve a name then
     * reconnect, re-resolve, and spread over the replicas behind it. */
    int max_connection_age_ms, max_connection_age_grace_ms;
} cv_rpc_config;

cv_status cv_rpc_server_new(const cv_rpc_config *cfg, cv_rpc_server **out, cv_error *err);
/* Register before cv_rpc_server_start. */
cv_status cv_rpc_register(cv_rpc_server *s, const char *method, cv_rpc_handler h, void *ctx,
                          cv_error *err);
typedef struct cv_rpc_method_def {
    const char *path;
    cv_rpc_handler handler;
} cv_rpc_method_def;
/* Registers a service's methods, all with the same ctx. */
cv_status cv_rpc_register_all(cv_rpc_server *s, const cv_rpc_method_def *methods, size_t n, void *ctx,
                              cv_error *err);
/* Binds, starts the completion-queue thread; *port receives the bound port. */
cv_status cv_rpc_server_start(cv_rpc_server *s, int *port, cv_error *err);
/* New calls are refused from now on (UNAVAILABLE), except grpc.health.v1 calls, which
 * are still answered (a drain sets NOT_SERVING first); in-flight ones continue. */
void cv_rpc_server_stop_accepting(cv_rpc_server *s);
/* Number of calls not yet finished. */
int cv_rpc_server_active_calls(cv_rpc_server *s);
/* The verified token subject of a call ("" without one). */
const char *cv_rpc_subject(const cv_rpc_call *call);
/* Cancels what is left, waits (at most 5 s) for streams to be released, frees everything. */
void cv_rpc_server_free(cv_rpc_server *s);

/* Unary answer: message (may be NULL for an error status) and status together. */
void cv_rpc_reply(cv_rpc_call *call, cv_rpc_code code, const char *status_msg,
                  const uint8_t *msg, size_t len);
/* Turn the call into a server stream driven by ops (see the top comment). */
void cv_rpc_stream_start(cv_rpc_call *call, const cv_rpc_stream_ops *ops, void *ctx);
/* For a unary answer that comes later from another thread: keeps the call alive until
 * cv_rpc_call_release (after the cv_rpc_reply). Call from the handler. */
void cv_rpc_hold(cv_rpc_call *call);
/* Thread-safe: there may be something to send; send it now (and keep sending until
 * produce() has nothing): a stream's first output, its end, rare events. */
void cv_rpc_stream_wake(cv_rpc_call *call);
/* Thread-safe: there may be something to send; it may wait for the next round (see
 * flush_interval_ms), so a producer's hot path never packs or writes. */
void cv_rpc_stream_wake_batched(cv_rpc_call *call);
/* The service's last touch of a stream call (see the top comment). */
void cv_rpc_call_release(cv_rpc_call *call);

/* Thread-safe: the client cancelled, disconnected or passed its deadline (work for a
 * held unary call may be skipped: its answer would go nowhere). */
int cv_rpc_cancelled(cv_rpc_call *call);

/* Request metadata value for key (lower-case), NUL-terminated copy; NULL if absent. */
const char *cv_rpc_metadata(const cv_rpc_call *call, const char *key);
const char *cv_rpc_peer(const cv_rpc_call *call);
const char *cv_rpc_method(const cv_rpc_call *call);
/* Seconds until the client's deadline (negative when past); a large value when none. */
double cv_rpc_deadline_left(const cv_rpc_call *call);

#endif
