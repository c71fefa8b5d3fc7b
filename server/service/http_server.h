/* http_server: the HTTP/1.1 transport of the OpenAI-compatible API (libmicrohttpd).
 *
 * Design: one MHD daemon with one epoll thread serves every connection; a response
 * that waits for the engine suspends its connection (MHD_suspend_connection), so an
 * open stream costs a socket and a small struct, never a thread (256 and more open
 * streams are tested). Streams are pull-based like rpc_server's: the service keeps its
 * pending output and calls cv_hs_wake from any thread; when the connection can take
 * bytes, the daemon thread calls the stream's produce() to format everything pending
 * (a slow reader gets it coalesced into fewer writes). A suspended connection is not
 * polled by MHD, so a watcher thread (one epoll set) watches the sockets of held and
 * streaming requests for a hang-up (EPOLLRDHUP: the client closed or half-closed) and
 * calls on_cancel at once; a write error on a running stream does the same.
 *
 * Before a handler runs: the route must exist (404) and allow the method (405); a
 * body's Content-Length above max_body_bytes is refused with 413 before any of the body
 * is read, and a chunked body that grows past it is cut off (the connection closes);
 * a POST must be Content-Type application/json (415); while draining every request gets
 * 503; then the auth policy is checked with the route's path as the method (auth.h:
 * 401, 403, 429 with Retry-After), the peer as "ipv4:ADDR:PORT" / "ipv6:[ADDR]:PORT".
 * Error bodies are OpenAI error objects (see cv_hs_reply_error).
 *
 * TLS: with cert and key PEM files the daemon speaks HTTPS only (MHD's GnuTLS), with
 * the files re-read when they change (http_tls.h); with a client CA too, every request
 * whose connection has no client certificate that verifies gets 401 before anything else.
 */
#ifndef CV_HTTP_SERVER_H
#define CV_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_hs cv_hs;
typedef struct cv_hs_req cv_hs_req;
typedef struct cv_auth cv_auth;

typedef struct cv_hs_config {
    const char *listen;       /* "HOST:PORT" or "[V6]:PORT"; port 0 picks one */
    const char *tls_cert;     /* PEM files: HTTPS when both are set */
    const char *tls_key;
    const char *tls_client_ca; /* PEM CA bundle: mTLS (with cert and key); NULL or "": none */
    size_t max_body_bytes;    /* 0: 4 MiB */
    cv_auth *auth;            /* NULL: no checks */
    unsigned max_connections; /* 0: 1024 */
    unsigned idle_timeout_s;  /* a connection with no traffic this long is closed; 0: 120 */
} cv_hs_config;

/* Runs on the daemon thread with the whole body read and the checks passed: must not
 * block. It answers with cv_hs_reply* (now or later, see cv_hs_hold) or starts a stream. */
typedef void (*cv_hs_handler)(void *ctx, cv_hs_req *req);

cv_status cv_hs_new(const cv_hs_config *cfg, cv_hs **out, cv_error *err);
/* path: exact, or a prefix when it ends with '/' and prefix is set ("/v1/models/"). method
 * "GET" also answers HEAD. Register before cv_hs_start. auth: 1 to check the policy. */
cv_status cv_hs_route(cv_hs *s, const char *method, const char *path, int prefix, int auth, cv_hs_handler h,
                      void *ctx, cv_error *err);
cv_status cv_hs_start(cv_hs *s, int *port, cv_error *err);
/* From now on every new request gets 503 (draining); open streams continue. */
void cv_hs_stop_accepting(cv_hs *s);
/* Requests read and not yet answered in full. */
int cv_hs_active(cv_hs *s);
/* Answered requests by endpoint and status (for /metrics): up to cap rows, the number
 * written; labels stay valid while s lives. 0 for NULL. */
typedef struct cv_metrics_http cv_metrics_http;
size_t cv_hs_counts(cv_hs *s, cv_metrics_http *out, size_t cap);
/* Waits (at most 5 s) for held and streaming requests to end, then stops. NULL is fine. */
void cv_hs_free(cv_hs *s);

/* ---- one request (valid until answered, or until its stream's done()) ---- */
const char *cv_hs_method(const cv_hs_req *r);
const char *cv_hs_path(const cv_hs_req *r);
const char *cv_hs_body(const cv_hs_req *r, size_t *len);
const char *cv_hs_peer(const cv_hs_req *r);
const char *cv_hs_subject(const cv_hs_req *r);  /* the verified token's subject, "" without one */
/* A request header (case-insensitive name), NULL if absent. Only inside the handler. */
const char *cv_hs_header(cv_hs_req *r, const char *name);

/* The whole answer; body (malloc'd) is taken over. retry_after_s > 0 adds Retry-After.
 * From the handler, or from any thread after cv_hs_hold. */
void cv_hs_reply(cv_hs_req *r, int status, const char *content_type, char *body, size_t len,
                 double retry_after_s);
/* A compiled-in answer (body is not copied and must outlive the server) with extra
 * headers: {name, value} pairs ending with {NULL, NULL} (NULL: none). From the handler. */
void cv_hs_reply_static(cv_hs_req *r, int status, const char *content_type, const void *body, size_t len,
                        const char *const headers[][2]);
/* An OpenAI error object {"error":{"message","type","param","code"}} with status; the
 * type follows the status (invalid_request_error, authentication_error, ...). */
void cv_hs_reply_error(cv_hs_req *r, int status, const char *message, const char *param, const char *code,
                       double retry_after_s);
/* The JSON body of an OpenAI error object (malloc'd; NULL when out of memory). */
char *cv_hs_error_json(int status, const char *message, const char *param, const char *code);

typedef enum cv_hs_produce {
    CV_HS_NOTHING,   /* nothing pending now: wait for the next wake */
    CV_HS_DATA,      /* bytes were appended */
    CV_HS_END,       /* bytes (maybe) appended; the stream ends after them */
    CV_HS_ABORT      /* close the connection now (the client is cut off) */
} cv_hs_produce;

/* A growable byte buffer the stream appends to. */
typedef struct cv_hs_buf {
    char *data;
    size_t len, cap, sent;
} cv_hs_buf;
/* 0, or -1 out of memory. */
int cv_hs_buf_append(cv_hs_buf *b, const char *s, size_t n);

typedef struct cv_hs_stream_ops {
    cv_hs_produce (*produce)(void *ctx, cv_hs_buf *out);  /* daemon thread */
    void (*on_cancel)(void *ctx);  /* once: the client went away before the end (any thread) */
    void (*done)(void *ctx);       /* once, when neither side holds the request: free ctx */
} cv_hs_stream_ops;

/* Turn the request into a chunked streaming response with status 200: from the handler,
 * or from any thread for a request it holds (cv_hs_hold). The service holds the request
 * until cv_hs_release. */
void cv_hs_stream_start(cv_hs_req *r, const char *content_type, const cv_hs_stream_ops *ops, void *ctx);
/* The answer comes later from another thread (cv_hs_reply); on_cancel and done as for a
 * stream (produce unused). From the handler; the service holds it until cv_hs_release. */
void cv_hs_hold(cv_hs_req *r, const cv_hs_stream_ops *ops, void *ctx);
/* Thread-safe: the stream has something to send. */
void cv_hs_wake(cv_hs_req *r);
/* One more hold on a held or streaming request (for a second owner, e.g. the engine's
 * sink beside the worker that submitted): each hold ends with one cv_hs_release. */
void cv_hs_retain(cv_hs_req *r);
/* The end of one of the service's holds; the last one is its last touch. */
void cv_hs_release(cv_hs_req *r);

#endif
