#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "auth.h"
#include "http_endpoint.h"
#include "http_tls.h"
#include "metrics.h"

#define MAX_ROUTES 16
#define MAX_COUNTS 128  /* (endpoint, status) pairs counted; a handful in practice */

typedef struct route {
    char method[8];
    char path[64];
    char label[80];  /* the endpoint label of the metrics: the path, "{id}" for a prefix */
    int prefix, auth;
    cv_hs_handler h;
    void *ctx;
} route;

struct cv_hs {
    struct MHD_Daemon *d;
    cv_hs_config cfg;
    char listen[256];
    cv_http_tls *tls;  /* NULL: plain HTTP */
    route routes[MAX_ROUTES];
    int n_routes;
    atomic_int draining;
    atomic_int active;
    /* the hang-up watcher (see the header) */
    int ep, stop_fd;
    pthread_t watcher;
    int watcher_started;
    pthread_mutex_t wmu;
    cv_hs_req **watched;
    size_t n_watched, cap_watched;
    uint64_t next_watch_id;
    /* answered requests by endpoint (route index, MAX_ROUTES: other) and status */
    pthread_mutex_t cmu;
    struct {
        int route, status;
        uint64_t count;
    } counts[MAX_COUNTS];
    size_t n_counts;
};

typedef enum { MODE_NONE, MODE_HOLD, MODE_STREAM } req_mode;

struct cv_hs_req {
    cv_hs *s;
    struct MHD_Connection *c;  /* NULL once MHD is done with the request */
    pthread_mutex_t mu;
    int refs;                  /* the transport's, and the service's while it holds it */
    char method[8];
    char *path;
    char peer[80];
    char subject[CV_JWT_MAX_SUBJECT + 1];
    char *body;
    size_t body_len, body_cap;
    const route *route;
    int reading;               /* the body is being read: the handler has not run yet */
    int status;                /* of the answer queued (0: none yet), for the counts */
    int answered;              /* a response was queued (or the stream started) */
    struct MHD_Response *pending;
    unsigned pending_status;
    req_mode mode;
    const cv_hs_stream_ops *ops;
    void *ctx;
    int suspended, woken, stream_end, stream_abort, cancel_sent;
    cv_hs_buf out;
    int fd;
    uint64_t watch_id;
};

/* ---- small helpers ---- */

int cv_hs_buf_append(cv_hs_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 1024;
        while (c < b->len + n + 1) c *= 2;
        char *d = realloc(b->data, c);
        if (!d) return -1;
        b->data = d;
        b->cap = c;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

char *cv_hs_error_json(int status, const char *message, const char *param, const char *code) {
    json_t *o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", message ? message : "", "type",
                          error_type(status), "param", param && *param ? json_string(param) : json_null(),
                          "code", code && *code ? json_string(code) : json_null());
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void req_unref(cv_hs_req *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    if (r->ops && r->ops->done) r->ops->done(r->ctx);
    if (r->pending) MHD_destroy_response(r->pending);
    pthread_mutex_destroy(&r->mu);
    free(r->out.data);
    free(r->body);
    free(r->path);
    free(r);
}

/* ---- the hang-up watcher ---- */

static void watch(cv_hs_req *r) {
    cv_hs *s = r->s;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return;
    pthread_mutex_lock(&s->wmu);
    if (r->watch_id) goto out; /* a held request that became a stream: watched already */
    if (s->n_watched == s->cap_watched) {
        size_t c = s->cap_watched ? s->cap_watched * 2 : 64;
        cv_hs_req **w = realloc(s->watched, c * sizeof *w);
        if (!w) goto out; /* unwatched: a hang-up is then seen at the next write */
        s->watched = w;
        s->cap_watched = c;
    }
    r->fd = ci->connect_fd;
    r->watch_id = ++s->next_watch_id;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = r->watch_id};
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, r->fd, &ev) != 0) {
        r->watch_id = 0;
        goto out;
    }
    s->watched[s->n_watched++] = r;
out:
    pthread_mutex_unlock(&s->wmu);
}

/* Called before MHD closes the socket (request completed), so the fd is still ours. */
static void unwatch(cv_hs_req *r) {
    cv_hs *s = r->s;
    pthread_mutex_lock(&s->wmu);
    for (size_t i = 0; i < s->n_watched; i++) {
        if (s->watched[i] != r) continue;
        s->watched[i] = s->watched[--s->n_watched];
        epoll_ctl(s->ep, EPOLL_CTL_DEL, r->fd, NULL);
        break;
    }
    r->watch_id = 0;
    pthread_mutex_unlock(&s->wmu);
}

/* on_cancel once, from whichever side notices first. */
static void cancel_once(cv_hs_req *r) {
    pthread_mutex_lock(&r->mu);
    int fire = r->mode != MODE_NONE && !r->cancel_sent && r->ops && r->ops->on_cancel;
    r->cancel_sent = 1;
    pthread_mutex_unlock(&r->mu);
    if (fire) r->ops->on_cancel(r->ctx);
}

static void *watcher_main(void *arg) {
    cv_hs *s = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(s->ep, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return NULL;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) return NULL; /* cv_hs_free */
            pthread_mutex_lock(&s->wmu);
            /* The request stays alive while it is in the table (unwatch takes wmu). */
            for (size_t k = 0; k < s->n_watched; k++) {
                cv_hs_req *r = s->watched[k];
                if (r->watch_id != evs[i].data.u64) continue;
                s->watched[k] = s->watched[--s->n_watched];
                epoll_ctl(s->ep, EPOLL_CTL_DEL, r->fd, NULL);
                r->watch_id = 0;
                cancel_once(r);
                break;
            }
            pthread_mutex_unlock(&s->wmu);
        }
    }
}

/* ---- answers ---- */

static struct MHD_Response *make_response(const char *content_type, char *body, size_t len, double retry_after_s) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (retry_after_s > 0) {
        char ra[32];
        snprintf(ra, sizeof ra, "%.0f", ceil(retry_after_s));
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    return resp;
}

/* Stores the answer for the daemon thread to queue (and resumes a held request). */
static void set_pending(cv_hs_req *r, int status, struct MHD_Response *resp) {
    pthread_mutex_lock(&r->mu);
    if (!r->pending && resp) {
        r->pending = resp;
        r->pending_status = (unsigned)status;
        resp = NULL;
    }
    if (r->suspended && r->c) {
        r->suspended = 0;
        MHD_resume_connection(r->c);
    }
    pthread_mutex_unlock(&r->mu);
    if (resp) MHD_destroy_response(resp);
}

void cv_hs_reply(cv_hs_req *r, int status, const char *content_type, char *body, size_t len, double retry_after_s) {
    set_pending(r, status, make_response(content_type, body, len, retry_after_s));
}

void cv_hs_reply_static(cv_hs_req *r, int status, const char *content_type, const void *body, size_t len,
                        const char *const headers[][2]) {
    /* PERSISTENT: MHD sends from body as it is (the cast: MHD's API is not const). */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", content_type);
        for (size_t i = 0; headers && headers[i][0]; i++) MHD_add_response_header(resp, headers[i][0], headers[i][1]);
    }
    set_pending(r, status, resp);
}

void cv_hs_reply_error(cv_hs_req *r, int status, const char *message, const char *param, const char *code,
                       double retry_after_s) {
    char *body = cv_hs_error_json(status, message, param, code);
    if (!body) body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
    cv_hs_reply(r, body ? status : 500, "application/json", body, body ? strlen(body) : 0, retry_after_s);
}

void cv_hs_stream_start(cv_hs_req *r, const char *content_type, const cv_hs_stream_ops *ops, void *ctx) {
    (void)content_type; /* text/event-stream: the only stream this API has */
    pthread_mutex_lock(&r->mu);
    if (r->mode == MODE_NONE) r->refs++; /* a held request is held already */
    r->mode = MODE_STREAM;
    r->ops = ops;
    r->ctx = ctx;
    if (r->suspended && r->c) { /* held and waiting: the daemon starts the stream */
        r->suspended = 0;
        MHD_resume_connection(r->c);
    }
    pthread_mutex_unlock(&r->mu);
}

void cv_hs_hold(cv_hs_req *r, const cv_hs_stream_ops *ops, void *ctx) {
    pthread_mutex_lock(&r->mu);
    r->mode = MODE_HOLD;
    r->ops = ops;
    r->ctx = ctx;
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void cv_hs_wake(cv_hs_req *r) {
    pthread_mutex_lock(&r->mu);
    r->woken = 1;
    if (r->suspended && r->c) {
        r->suspended = 0;
        MHD_resume_connection(r->c);
    }
    pthread_mutex_unlock(&r->mu);
}

void cv_hs_retain(cv_hs_req *r) {
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
}

void cv_hs_release(cv_hs_req *r) { req_unref(r); }

const char *cv_hs_method(const cv_hs_req *r) { return r->method; }
const char *cv_hs_path(const cv_hs_req *r) { return r->path; }
const char *cv_hs_peer(const cv_hs_req *r) { return r->peer; }
const char *cv_hs_subject(const cv_hs_req *r) { return r->subject; }
const char *cv_hs_body(const cv_hs_req *r, size_t *len) {
    *len = r->body_len;
    return r->body ? r->body : "";
}
const char *cv_hs_header(cv_hs_req *r, const char *name) {
    return r->c ? MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name) : NULL;
}

/* ---- the daemon's callbacks ---- */

/* The stream's body: what produce() formatted, suspending when there is nothing. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    cv_hs_req *r = cls;
    ssize_t ret;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        cv_hs_buf *b = &r->out;
        if (b->sent < b->len) {
            size_t n = b->len - b->sent < max ? b->len - b->sent : max;
            memcpy(buf, b->data + b->sent, n);
            b->sent += n;
            if (b->sent == b->len) b->sent = b->len = 0;
            ret = (ssize_t)n;
            break;
        }
        if (r->stream_abort) {
            ret = MHD_CONTENT_READER_END_WITH_ERROR;
            break;
        }
        if (r->stream_end) {
            ret = MHD_CONTENT_READER_END_OF_STREAM;
            break;
        }
        r->woken = 0;
        cv_hs_produce p = r->ops->produce(r->ctx, b);
        if (p == CV_HS_END) r->stream_end = 1;
        else if (p == CV_HS_ABORT) r->stream_abort = 1;
        if (p == CV_HS_NOTHING && !r->woken) {
            /* Resumed by the next cv_hs_wake. */
            r->suspended = 1;
            MHD_suspend_connection(r->c);
            ret = 0;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *c, cv_hs_req *r, int status, const char *msg,
                                   const char *code, double retry_after_s) {
    r->answered = 1;
    r->status = status;
    char *body = cv_hs_error_json(status, msg, NULL, code);
    if (!body) return MHD_NO;
    struct MHD_Response *resp = make_response("application/json", body, strlen(body), retry_after_s);
    if (!resp) return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static const route *find_route(cv_hs *s, const char *method, const char *path, int *path_known) {
    *path_known = 0;
    for (int i = 0; i < s->n_routes; i++) {
        const route *rt = &s->routes[i];
        int match = rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) == 0 && path[strlen(rt->path)]
                               : strcmp(path, rt->path) == 0;
        if (!match) continue;
        *path_known = 1;
        if (strcmp(method, rt->method) == 0 || (strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0))
            return rt;
    }
    return NULL;
}

static void peer_of(struct MHD_Connection *c, char *out, size_t cap) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char a[INET6_ADDRSTRLEN] = "?";
    snprintf(out, cap, "unknown");
    if (!ci || !ci->client_addr) return;
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)ci->client_addr;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        snprintf(out, cap, "ipv4:%s:%u", a, ntohs(in->sin_port));
    } else if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        inet_ntop(AF_INET6, &in->sin6_addr, a, sizeof a);
        snprintf(out, cap, "ipv6:[%s]:%u", a, ntohs(in->sin6_port));
    }
}

/* The first call for a request: everything that can be refused before the body. */
static enum MHD_Result first_call(cv_hs *s, struct MHD_Connection *c, cv_hs_req *r) {
    char why[256];
    if (!cv_http_tls_client_ok(s->tls, c, why, sizeof why))
        return queue_error(c, r, 401, why, "invalid_client_certificate", 0);
    int known;
    r->route = find_route(s, r->method, r->path, &known);
    if (!r->route) {
        char msg[200];
        snprintf(msg, sizeof msg, known ? "method %s is not allowed on %.100s" : "no such endpoint: %.100s",
                 known ? r->method : r->path, r->path);
        return queue_error(c, r, known ? 405 : 404, msg, known ? "method_not_allowed" : "not_found", 0);
    }
    if (atomic_load(&s->draining))
        return queue_error(c, r, 503, "the server is shutting down (draining): retry on another replica",
                           "draining", 1);
    if (strcmp(r->method, "POST") == 0) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (*end || n > s->cfg.max_body_bytes) {
                char msg[200];
                snprintf(msg, sizeof msg, "request body of %.30s bytes is larger than the limit of %zu bytes", cl,
                         s->cfg.max_body_bytes);
                return queue_error(c, r, 413, msg, "request_too_large", 0);
            }
        }
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        size_t n = ct ? strcspn(ct, "; \t") : 0;
        if (!ct || n != 16 || strncasecmp(ct, "application/json", 16) != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "Content-Type must be application/json (got %.60s)", ct ? ct : "none");
            return queue_error(c, r, 415, msg, "unsupported_media_type", 0);
        }
    }
    r->reading = 1;
    return MHD_YES;
}

static enum MHD_Result run_handler(cv_hs *s, struct MHD_Connection *c, cv_hs_req *r) {
    r->reading = 0;
    if (r->route->auth && s->cfg.auth) {
        cv_auth_result res;
        const char *authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        cv_auth_verdict v = cv_auth_check(s->cfg.auth, r->path, authz, r->peer, &res);
        if (v != CV_AUTH_ALLOW) {
            int status = v == CV_AUTH_UNAUTHENTICATED ? 401 : v == CV_AUTH_DENIED ? 403 : 429;
            return queue_error(c, r, status, res.message,
                               v == CV_AUTH_UNAUTHENTICATED ? "invalid_api_key"
                               : v == CV_AUTH_DENIED        ? "permission_denied"
                                                            : "rate_limit_exceeded",
                               v == CV_AUTH_RATE_LIMITED ? (res.retry_after_s > 0 ? res.retry_after_s : 1) : 0);
        }
        snprintf(r->subject, sizeof r->subject, "%s", res.subject);
    }
    r->route->h(r->route->ctx, r);
    return MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version;
    cv_hs *s = cls;
    cv_hs_req *r = *state;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        pthread_mutex_init(&r->mu, NULL);
        r->s = s;
        r->c = c;
        r->refs = 1;
        r->fd = -1;
        snprintf(r->method, sizeof r->method, "%s", method);
        r->path = strdup(url);
        peer_of(c, r->peer, sizeof r->peer);
        *state = r;
        atomic_fetch_add(&s->active, 1);
        if (!r->path) return MHD_NO;
        return first_call(s, c, r);
    }
    if (r->answered) {
        *upload_size = 0; /* a refusal was queued: the rest of the body is dropped */
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->body_len + *upload_size > s->cfg.max_body_bytes) return MHD_NO; /* a chunked body too large */
        if (r->body_len + *upload_size + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + *upload_size + 1) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload, *upload_size);
        r->body_len += *upload_size;
        r->body[r->body_len] = 0;
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->reading && run_handler(s, c, r) != MHD_YES) return MHD_NO;
    if (r->answered) return MHD_YES;
    /* After the handler, or resumed: a stored answer goes out, a stream starts, a held
     * request waits suspended. */
    enum MHD_Result ok = MHD_YES;
    int do_watch = 0;
    pthread_mutex_lock(&r->mu);
    if (r->pending) {
        ok = MHD_queue_response(c, r->pending_status, r->pending);
        r->status = (int)r->pending_status;
        MHD_destroy_response(r->pending);
        r->pending = NULL;
        r->answered = 1;
    } else if (r->mode == MODE_STREAM) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, read_stream, r, NULL);
        if (resp) {
            MHD_add_response_header(resp, "Content-Type", "text/event-stream");
            MHD_add_response_header(resp, "Cache-Control", "no-cache");
            MHD_add_response_header(resp, "X-Accel-Buffering", "no");
            ok = MHD_queue_response(c, 200, resp);
            MHD_destroy_response(resp);
            r->status = 200;
        } else {
            ok = MHD_NO;
        }
        r->answered = 1;
        do_watch = ok == MHD_YES;
    } else if (r->mode == MODE_HOLD) {
        do_watch = !r->watch_id;
        r->suspended = 1;
        MHD_suspend_connection(c);
    } else {
        ok = MHD_NO; /* the handler answered nothing: a bug; close rather than hang */
    }
    pthread_mutex_unlock(&r->mu);
    /* After unlocking: the watcher takes wmu, then a request's mu. */
    if (do_watch) watch(r);
    return ok;
}

static void count_answer(cv_hs *s, int route, int status) {
    pthread_mutex_lock(&s->cmu);
    size_t i = 0;
    while (i < s->n_counts && (s->counts[i].route != route || s->counts[i].status != status)) i++;
    if (i == s->n_counts && i < MAX_COUNTS) {
        s->counts[i].route = route;
        s->counts[i].status = status;
        s->counts[i].count = 0;
        s->n_counts++;
    }
    if (i < s->n_counts) s->counts[i].count++;
    pthread_mutex_unlock(&s->cmu);
}

size_t cv_hs_counts(cv_hs *s, cv_metrics_http *out, size_t cap) {
    if (!s) return 0;
    pthread_mutex_lock(&s->cmu);
    size_t n = 0;
    for (; n < s->n_counts && n < cap; n++) {
        int rt = s->counts[n].route;
        out[n] = (cv_metrics_http){rt < s->n_routes ? s->routes[rt].label : "other", s->counts[n].status,
                                   s->counts[n].count};
    }
    pthread_mutex_unlock(&s->cmu);
    return n;
}

static void completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode toe) {
    (void)c;
    cv_hs *s = cls;
    cv_hs_req *r = *state;
    if (!r) return;
    *state = NULL;
    unwatch(r);
    pthread_mutex_lock(&r->mu);
    r->c = NULL;
    int gone = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->stream_end;
    pthread_mutex_unlock(&r->mu);
    if (gone) cancel_once(r);
    if (r->status) count_answer(s, r->route ? (int)(r->route - s->routes) : MAX_ROUTES, r->status);
    atomic_fetch_sub(&s->active, 1);
    req_unref(r);
}

/* ---- life cycle ---- */

cv_status cv_hs_new(const cv_hs_config *cfg, cv_hs **out, cv_error *err) {
    cv_status st = cv_http_check_addr(cfg->listen, err);
    if (st != CV_OK) return cv_errorf(err, st, "http_listen: \"%s\" is not IPv4:PORT or [IPv6]:PORT", cfg->listen);
    cv_hs *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "http server: out of memory");
    s->cfg = *cfg;
    snprintf(s->listen, sizeof s->listen, "%s", cfg->listen);
    s->cfg.listen = s->listen;
    if (!s->cfg.max_body_bytes) s->cfg.max_body_bytes = 4u << 20;
    if (!s->cfg.max_connections) s->cfg.max_connections = 1024;
    if (!s->cfg.idle_timeout_s) s->cfg.idle_timeout_s = 120;
    s->ep = s->stop_fd = -1;
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    if (cfg->tls_cert && cfg->tls_cert[0]) {
        cv_tls_paths paths = {cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca && cfg->tls_client_ca[0] ? cfg->tls_client_ca : NULL};
        if (cv_http_tls_new(&paths, &s->tls, err) != CV_OK) {
            cv_hs_free(s);
            return err->code;
        }
    }
    *out = s;
    return CV_OK;
}

cv_status cv_hs_route(cv_hs *s, const char *method, const char *path, int prefix, int auth, cv_hs_handler h,
                      void *ctx, cv_error *err) {
    if (s->n_routes == MAX_ROUTES || strlen(path) >= sizeof s->routes[0].path)
        return cv_errorf(err, CV_EINVAL, "http server: cannot add route %s %s", method, path);
    route *rt = &s->routes[s->n_routes++];
    snprintf(rt->method, sizeof rt->method, "%s", method);
    snprintf(rt->path, sizeof rt->path, "%s", path);
    snprintf(rt->label, sizeof rt->label, "%s%s", path, prefix ? "{id}" : "");
    rt->prefix = prefix;
    rt->auth = auth;
    rt->h = h;
    rt->ctx = ctx;
    return CV_OK;
}

static int addr_of(const char *addr, struct sockaddr_storage *ss) {
    char host[128];
    const char *colon = strrchr(addr, ':');
    size_t n = (size_t)(colon - addr);
    memset(ss, 0, sizeof *ss);
    if (n >= sizeof host) return -1;
    memcpy(host, addr, n);
    host[n] = 0;
    int port = atoi(colon + 1);
    if (host[0] == '[') {
        host[n - 1] = 0;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        return inet_pton(AF_INET6, host + 1, &a->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

cv_status cv_hs_start(cv_hs *s, int *port, cv_error *err) {
    struct sockaddr_storage ss;
    if (addr_of(s->listen, &ss) != 0) return cv_errorf(err, CV_EINVAL, "http_listen: bad address %s", s->listen);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (s->ep < 0 || s->stop_fd < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->stop_fd, &ev) != 0)
        return cv_errorf(err, CV_EIO, "http server: epoll: %s", strerror(errno));
    if (pthread_create(&s->watcher, NULL, watcher_main, s) != 0)
        return cv_errorf(err, CV_EIO, "http server: cannot start the watcher thread");
    s->watcher_started = 1;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_OptionItem tls[CV_HTTP_TLS_OPTIONS] = {{MHD_OPTION_END, 0, NULL}};
    if (s->tls) {
        flags |= MHD_USE_TLS;
        if (cv_http_tls_start(s->tls, tls, err) != CV_OK) return err->code;
    }
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, access_handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                            s->cfg.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
                            MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!s->d) return cv_errorf(err, CV_EIO, "http_listen: cannot listen on %s (address in use?)", s->listen);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (port) *port = info ? info->port : 0;
    return CV_OK;
}

void cv_hs_stop_accepting(cv_hs *s) {
    if (s) atomic_store(&s->draining, 1);
}

int cv_hs_active(cv_hs *s) { return s ? atomic_load(&s->active) : 0; }

void cv_hs_free(cv_hs *s) {
    if (!s) return;
    if (s->d) {
        /* Streams end once their engines have sent the final events (the router stops
         * first); give their last bytes a moment to go out. */
        for (int i = 0; i < 500 && atomic_load(&s->active) > 0; i++) usleep(10 * 1000);
        MHD_stop_daemon(s->d);
    }
    if (s->watcher_started) {
        uint64_t one = 1;
        if (write(s->stop_fd, &one, sizeof one) == (ssize_t)sizeof one) pthread_join(s->watcher, NULL);
    }
    if (s->ep >= 0) close(s->ep);
    if (s->stop_fd >= 0) close(s->stop_fd);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->cmu);
    free(s->watched);
    cv_http_tls_free(s->tls);
    free(s);
}
