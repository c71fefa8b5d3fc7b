#include "rpc_server.h"

#include "auth.h"
#include "timing.h"
#include "tls_files.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Every completion carries one of these; the kind says which batch finished. */
typedef enum { TAG_NEW_CALL, TAG_RECV, TAG_CLOSE, TAG_SEND, TAG_STATUS, TAG_SHUTDOWN } tag_kind;
typedef struct tag { tag_kind kind; cv_rpc_call *call; } tag;

typedef struct method {
    char *path;
    cv_rpc_handler handler;
    void *ctx;
} method;

struct cv_rpc_server {
    cv_rpc_config cfg;
    char *listen;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int started;
    method *methods;
    size_t n_methods;
    pthread_mutex_t tls_mu;     /* the certificate fetcher runs on gRPC's threads */
    int tls_served;             /* a certificate config was handed to gRPC */
    atomic_int accepting;
    atomic_int active;
    atomic_int shutting_down;
    tag shutdown_tag;
    /* Streams woken by producers wait here for the sender thread, so that packing and
     * grpc_call_start_batch never run on a producer's (the engine's) thread. */
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
    cv_rpc_call *wake_head, *wake_tail;
    pthread_t sender;
    int sender_running;  /* under wake_mu; 0 before start and after the sender drained */
    int sender_stop;
};

typedef struct md_pair { char *key, *value; } md_pair;

struct cv_rpc_call {
    cv_rpc_server *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *send_bb;
    int cancelled;
    tag t_new, t_recv, t_close, t_send, t_status;
    pthread_mutex_t mu;
    int refs;          /* pending batches + the service's hold on a stream */
    int send_busy;     /* a SEND_MESSAGE is in flight */
    int finished;      /* status sent or being sent */
    int md_sent;       /* initial metadata went out (with the first message or the status) */
    int urgent;        /* send without waiting for a round until nothing is pending */
    int gone;          /* the close said cancelled (c->cancelled, copied under mu) */
    int wake_queued;   /* on the server's wake list, holding a ref */
    cv_rpc_call *wake_next;
    const cv_rpc_stream_ops *ops;
    void *ctx;
    char *peer, *method;
    char subject[256];
    md_pair *meta;
    size_t n_meta;
};

static void call_unref(cv_rpc_call *c);

static cv_rpc_call *call_alloc(cv_rpc_server *s) {
    cv_rpc_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    pthread_mutex_init(&c->mu, NULL);
    c->t_new = (tag){TAG_NEW_CALL, c};
    c->t_recv = (tag){TAG_RECV, c};
    c->t_close = (tag){TAG_CLOSE, c};
    c->t_send = (tag){TAG_SEND, c};
    c->t_status = (tag){TAG_STATUS, c};
    return c;
}

static void call_free(cv_rpc_call *c) {
    if (c->ops && c->ops->done) c->ops->done(c->ctx);
    if (c->call) {
        grpc_call_unref(c->call);
        atomic_fetch_sub(&c->srv->active, 1);
    }
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    for (size_t i = 0; i < c->n_meta; i++) {
        free(c->meta[i].key);
        free(c->meta[i].value);
    }
    free(c->meta);
    if (c->peer) gpr_free(c->peer);
    free(c->method);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void call_unref(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) call_free(c);
}

static char *slice_dup(grpc_slice s) {
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, GRPC_SLICE_START_PTR(s), n);
    p[n] = 0;
    return p;
}

/* Status batch; called with c->mu held and c->finished still 0. */
/* The response headers go out with the first message or the status, not when the call
 * arrives: a call refused before any message is then a trailers-only response, which a
 * client may send again elsewhere (gRPC retries, e.g. UNAVAILABLE from a draining
 * server); headers sent first would commit the call to this server. */
static size_t initial_md_op(cv_rpc_call *c, grpc_op *op) {
    if (c->md_sent) return 0;
    c->md_sent = 1;
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    return 1;
}

static void send_status_locked(cv_rpc_call *c, cv_rpc_code code, const char *status_msg,
                               const uint8_t *msg, size_t len) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = initial_md_op(c, &ops[0]);
    grpc_slice details = grpc_slice_from_copied_string(status_msg ? status_msg : "");
    if (msg) {
        grpc_slice body = grpc_slice_from_copied_buffer((const char *)msg, len);
        if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb); /* a stream's previous message, sent */
        c->send_bb = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_bb;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n].data.send_status_from_server.status_details = &details;
    n++;
    c->finished = 1;
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_status, NULL) != GRPC_CALL_OK) {
        /* The call is already dead; nothing will complete, so drop the ref here. */
        c->refs--;
    }
    grpc_slice_unref(details);
}

/* Sends the next message of a stream if none is in flight. Called with c->mu held. */
static void pump_locked(cv_rpc_call *c) {
    while (!c->finished && !c->send_busy && c->ops) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int more = 0;
        cv_rpc_code code = CV_RPC_OK;
        const char *status_msg = NULL;
        cv_rpc_produce p = c->ops->produce(c->ctx, &msg, &len, &more, &code, &status_msg);
        if (p == CV_RPC_NOTHING) {
            c->urgent = 0;
            return;
        }
        if (p == CV_RPC_FINISH) {
            send_status_locked(c, code, status_msg, msg, len);
            free(msg);
            return;
        }
        grpc_slice body = grpc_slice_new(msg, len, free);
        if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        size_t n = initial_md_op(c, &ops[0]);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        /* Not with the headers: a batch that holds them completes only once they are
         * written, and a buffered write waits for a later one, which needs this batch
         * done first (a RAG stream's Context message, then nothing until the engine). */
        ops[n].flags = more && !n ? GRPC_WRITE_BUFFER_HINT : 0;
        ops[n].data.send_message.send_message = c->send_bb;
        c->refs++;
        if (grpc_call_start_batch(c->call, ops, n + 1, &c->t_send, NULL) == GRPC_CALL_OK) {
            c->send_busy = 1;
            return;
        }
        c->refs--;
        /* The message is lost with a dead call; keep producing until the service finishes. */
    }
}

/* Pumps a stream taken off the wake list and drops the list's ref. */
static void send_woken(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->wake_queued = 0;
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

void cv_rpc_reply(cv_rpc_call *c, cv_rpc_code code, const char *status_msg,
                  const uint8_t *msg, size_t len) {
    pthread_mutex_lock(&c->mu);
    if (!c->finished) send_status_locked(c, code, status_msg, msg, len);
    pthread_mutex_unlock(&c->mu);
}

void cv_rpc_stream_start(cv_rpc_call *c, const cv_rpc_stream_ops *ops, void *ctx) {
    pthread_mutex_lock(&c->mu);
    c->ops = ops;
    c->ctx = ctx;
    c->refs++; /* the service's hold, released by cv_rpc_call_release */
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void cv_rpc_stream_wake(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->urgent = 1;
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void cv_rpc_stream_wake_batched(cv_rpc_call *c) {
    cv_rpc_server *s = c->srv;
    pthread_mutex_lock(&c->mu);
    if (c->wake_queued || c->finished) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->wake_queued = 1;
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->wake_mu);
    if (s->sender_running) {
        c->wake_next = NULL;
        if (s->wake_tail) s->wake_tail->wake_next = c;
        else s->wake_head = c;
        s->wake_tail = c;
        /* One signal per batch of wakes: the sender takes the whole list at once. */
        if (s->wake_head == c) pthread_cond_signal(&s->wake_cv);
        pthread_mutex_unlock(&s->wake_mu);
        return;
    }
    pthread_mutex_unlock(&s->wake_mu);
    send_woken(c); /* no rounds (interval 0), or the sender already drained: send here */
}

void cv_rpc_call_release(cv_rpc_call *c) { call_unref(c); }

static void *sender_loop(void *arg) {
    cv_rpc_server *s = arg;
    pthread_mutex_lock(&s->wake_mu);
    for (;;) {
        while (!s->wake_head && !s->sender_stop) pthread_cond_wait(&s->wake_cv, &s->wake_mu);
        cv_rpc_call *c = s->wake_head;
        if (!c) break; /* stopping, and nothing left to send */
        s->wake_head = s->wake_tail = NULL;
        pthread_mutex_unlock(&s->wake_mu);
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        while (c) {
            cv_rpc_call *after = c->wake_next;
            send_woken(c);
            c = after;
        }
        pthread_mutex_lock(&s->wake_mu);
        /* Let output pile up until the next round; wakes meanwhile only queue. */
        next.tv_nsec += (long)s->cfg.flush_interval_ms * 1000000L;
        next.tv_sec += next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        while (!s->sender_stop && pthread_cond_timedwait(&s->wake_cv, &s->wake_mu, &next) != ETIMEDOUT) {
        }
    }
    s->sender_running = 0;
    pthread_mutex_unlock(&s->wake_mu);
    return NULL;
}

static void sender_stop(cv_rpc_server *s) {
    pthread_mutex_lock(&s->wake_mu);
    int running = s->sender_running;
    s->sender_stop = 1;
    pthread_cond_signal(&s->wake_cv);
    pthread_mutex_unlock(&s->wake_mu);
    if (running) pthread_join(s->sender, NULL);
}

void cv_rpc_hold(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

const char *cv_rpc_metadata(const cv_rpc_call *c, const char *key) {
    for (size_t i = 0; i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, key) == 0) return c->meta[i].value;
    return NULL;
}

int cv_rpc_cancelled(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int gone = c->gone;
    pthread_mutex_unlock(&c->mu);
    return gone;
}

const char *cv_rpc_peer(const cv_rpc_call *c) { return c->peer ? c->peer : ""; }
const char *cv_rpc_subject(const cv_rpc_call *c) { return c->subject; }
const char *cv_rpc_method(const cv_rpc_call *c) { return c->method ? c->method : ""; }

double cv_rpc_deadline_left(const cv_rpc_call *c) {
    gpr_timespec dl = c->details.deadline;
    if (gpr_time_cmp(dl, gpr_inf_future(dl.clock_type)) == 0) return 1e18;
    gpr_timespec now = gpr_now(dl.clock_type);
    gpr_timespec d = gpr_time_sub(dl, now);
    return (double)d.tv_sec + d.tv_nsec * 1e-9;
}

static int request_next_call(cv_rpc_server *s) {
    cv_rpc_call *c = call_alloc(s);
    if (!c) return -1;
    c->refs = 1; /* the NEW_CALL completion */
    if (grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                 &c->t_new) != GRPC_CALL_OK) {
        call_free(c);
        return -1;
    }
    return 0;
}

static void on_new_call(cv_rpc_call *c, int ok) {
    cv_rpc_server *s = c->srv;
    if (!ok || !c->call) { /* server shutting down */
        c->refs = 0;
        call_free(c);
        return;
    }
    atomic_fetch_add(&s->active, 1);
    if (!atomic_load(&s->shutting_down)) request_next_call(s);

    c->method = slice_dup(c->details.method);
    c->peer = grpc_call_get_peer(c->call);
    c->meta = calloc(c->md.count ? c->md.count : 1, sizeof *c->meta);
    for (size_t i = 0; c->meta && i < c->md.count; i++) {
        c->meta[i].key = slice_dup(c->md.metadata[i].key);
        c->meta[i].value = slice_dup(c->md.metadata[i].value);
        if (c->meta[i].key && c->meta[i].value) c->n_meta++;
        else { free(c->meta[i].key); free(c->meta[i].value); }
    }

    grpc_op recv_op;
    memset(&recv_op, 0, sizeof recv_op);
    recv_op.op = GRPC_OP_RECV_MESSAGE;
    recv_op.data.recv_message.recv_message = &c->recv_bb;
    grpc_op close_op;
    memset(&close_op, 0, sizeof close_op);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->cancelled;

    pthread_mutex_lock(&c->mu);
    c->refs = 2; /* RECV and CLOSE; the NEW_CALL ref is spent */
    int bad = grpc_call_start_batch(c->call, &recv_op, 1, &c->t_recv, NULL) != GRPC_CALL_OK;
    if (bad) c->refs--;
    if (grpc_call_start_batch(c->call, &close_op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
        c->refs--;
    int left = c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) call_free(c);
}

static int is_health(const char *method) { return strncmp(method, "/grpc.health.v1.Health/", 23) == 0; }

/* With TLS configured, a call that arrived without it came in on the health port. */
static int over_tls(cv_rpc_call *c) {
    grpc_auth_context *ctx = grpc_call_auth_context(c->call);
    if (!ctx) return 0;
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, "transport_security_type");
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    int tls = p && p->value_length == 3 && memcmp(p->value, "ssl", 3) == 0;
    grpc_auth_context_release(ctx);
    return tls;
}

static cv_rpc_code auth_code(cv_auth_verdict v) {
    switch (v) {
    case CV_AUTH_ALLOW: return CV_RPC_OK;
    case CV_AUTH_UNAUTHENTICATED: return CV_RPC_UNAUTHENTICATED;
    case CV_AUTH_DENIED: return CV_RPC_PERMISSION_DENIED;
    case CV_AUTH_RATE_LIMITED: return CV_RPC_RESOURCE_EXHAUSTED;
    }
    return CV_RPC_INTERNAL;
}

static void on_recv(cv_rpc_call *c, int ok) {
    cv_rpc_server *s = c->srv;
    cv_auth_result ar;
    if (s->cfg.tls && !is_health(c->method) && !over_tls(c)) {
        cv_rpc_reply(c, CV_RPC_PERMISSION_DENIED, "this port serves only grpc.health.v1: use the TLS port",
                     NULL, 0);
    } else if (s->cfg.auth && cv_auth_check(s->cfg.auth, c->method, cv_rpc_metadata(c, "authorization"),
                                            cv_rpc_peer(c), &ar) != CV_AUTH_ALLOW) {
        /* Before the method lookup: an unauthenticated caller learns nothing about methods. */
        cv_rpc_reply(c, auth_code(ar.verdict), ar.message, NULL, 0);
    } else if (!atomic_load(&s->accepting) && !is_health(c->method)) {
        /* Health stays answered while draining: Check then says NOT_SERVING, as a probe
         * (and the README) expects, instead of failing like every other call. */
        cv_rpc_reply(c, CV_RPC_UNAVAILABLE, "server is draining: retry on another replica", NULL, 0);
    } else if (!ok || !c->recv_bb) {
        cv_rpc_reply(c, CV_RPC_INVALID_ARGUMENT, "request message missing", NULL, 0);
    } else {
        const method *m = NULL;
        for (size_t i = 0; i < s->n_methods; i++)
            if (strcmp(s->methods[i].path, c->method) == 0) m = &s->methods[i];
        if (!m) {
            char msg[300];
            snprintf(msg, sizeof msg, "unknown method %.250s", c->method);
            cv_rpc_reply(c, CV_RPC_UNIMPLEMENTED, msg, NULL, 0);
        } else {
            grpc_byte_buffer_reader r;
            if (!grpc_byte_buffer_reader_init(&r, c->recv_bb)) {
                cv_rpc_reply(c, CV_RPC_INTERNAL, "cannot read request bytes", NULL, 0);
            } else {
                if (s->cfg.auth) snprintf(c->subject, sizeof c->subject, "%s", ar.subject);
                grpc_slice body = grpc_byte_buffer_reader_readall(&r);
                grpc_byte_buffer_reader_destroy(&r);
                m->handler(m->ctx, c, GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body));
                grpc_slice_unref(body);
            }
        }
    }
    call_unref(c);
}

static void on_close(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->gone = c->cancelled;
    int notify = c->cancelled && c->ops && !c->finished;
    pthread_mutex_unlock(&c->mu);
    if (notify && c->ops->on_cancel) c->ops->on_cancel(c->ctx);
    call_unref(c);
}

static void on_send(cv_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->send_busy = 0;
    int later = c->srv->cfg.flush_interval_ms > 0 && !c->urgent;
    if (!later) pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (later) cv_rpc_stream_wake_batched(c); /* the rest goes out with the next round */
    call_unref(c);
}

static void *cq_loop(void *arg) {
    cv_rpc_server *s = arg;
    int shutdown_seen = 0;
    gpr_timespec give_up = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            s->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (shutdown_seen && (atomic_load(&s->active) == 0 ||
                                  gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), give_up) > 0))
                break;
            continue;
        }
        tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW_CALL: on_new_call(t->call, ev.success); break;
        case TAG_RECV: on_recv(t->call, ev.success); break;
        case TAG_CLOSE: on_close(t->call); break;
        case TAG_SEND: on_send(t->call); break;
        case TAG_STATUS: call_unref(t->call); break;
        case TAG_SHUTDOWN:
            shutdown_seen = 1;
            give_up = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(5, GPR_TIMESPAN));
            break;
        }
        if (shutdown_seen && atomic_load(&s->active) == 0) break;
    }
    return NULL;
}

cv_status cv_rpc_server_new(const cv_rpc_config *cfg, cv_rpc_server **out, cv_error *err) {
    cv_rpc_server *s = calloc(1, sizeof *s);
    if (s) s->listen = strdup(cfg->listen ? cfg->listen : "127.0.0.1:50051");
    if (!s || !s->listen) {
        free(s);
        cv_tls_files_free(cfg->tls); /* taken over either way */
        return cv_errorf(err, CV_ENOMEM, "rpc server: out of memory");
    }
    s->cfg = *cfg;
    s->cfg.listen = s->listen;
    pthread_mutex_init(&s->tls_mu, NULL);
    pthread_mutex_init(&s->wake_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!s->cfg.max_request_bytes) s->cfg.max_request_bytes = 4u << 20;
    atomic_init(&s->accepting, 1);
    s->shutdown_tag = (tag){TAG_SHUTDOWN, NULL};
    *out = s;
    return CV_OK;
}

cv_status cv_rpc_register(cv_rpc_server *s, const char *path, cv_rpc_handler h, void *ctx,
                          cv_error *err) {
    method *m = realloc(s->methods, (s->n_methods + 1) * sizeof *m);
    if (!m) return cv_errorf(err, CV_ENOMEM, "rpc server: out of memory");
    s->methods = m;
    m[s->n_methods].path = strdup(path);
    if (!m[s->n_methods].path) return cv_errorf(err, CV_ENOMEM, "rpc server: out of memory");
    m[s->n_methods].handler = h;
    m[s->n_methods].ctx = ctx;
    s->n_methods++;
    return CV_OK;
}

/* gRPC asks on handshakes; new valid files on disk become the served certificates. */
static grpc_ssl_certificate_config_reload_status fetch_certs(void *ctx, grpc_ssl_server_certificate_config **config) {
    cv_rpc_server *s = ctx;
    double now = cv_seconds();
    pthread_mutex_lock(&s->tls_mu);
    cv_tls_files *fresh = NULL;
    cv_error err = {0};
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    if (cv_tls_files_check(s->cfg.tls, now, 1.0, &fresh, &err) != CV_OK) {
        fprintf(stderr, "{\"msg\":\"TLS files changed but are not usable; serving the old ones\",\"error\":\"%s\"}\n",
                err.msg);
        fresh = NULL;
    }
    if (fresh) {
        cv_tls_files_free(s->cfg.tls);
        s->cfg.tls = fresh;
    }
    if (fresh || !s->tls_served) {
        grpc_ssl_pem_key_cert_pair pair = {cv_tls_files_key_pem(s->cfg.tls), cv_tls_files_cert_pem(s->cfg.tls)};
        /* gRPC 1.51 insists on roots even when it asks for no client certificate; the
         * server's own chain stands in there, unused. */
        const char *ca = cv_tls_files_ca_pem(s->cfg.tls);
        *config = grpc_ssl_server_certificate_config_create(ca ? ca : cv_tls_files_cert_pem(s->cfg.tls), &pair, 1);
        s->tls_served = 1;
        st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    }
    pthread_mutex_unlock(&s->tls_mu);
    return st;
}

static int add_port(cv_rpc_server *s, const char *addr, int tls) {
    grpc_server_credentials *creds;
    if (tls) {
        grpc_ssl_server_credentials_options *o = grpc_ssl_server_credentials_create_options_using_config_fetcher(
            s->cfg.require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                       : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch_certs, s);
        creds = grpc_ssl_server_credentials_create_with_options(o);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int bound = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    return bound;
}

cv_status cv_rpc_register_all(cv_rpc_server *s, const cv_rpc_method_def *methods, size_t n, void *ctx,
                              cv_error *err) {
    for (size_t i = 0; i < n; i++) {
        cv_status st = cv_rpc_register(s, methods[i].path, methods[i].handler, ctx, err);
        if (st != CV_OK) return st;
    }
    return CV_OK;
}

cv_status cv_rpc_server_start(cv_rpc_server *s, int *port, cv_error *err) {
    grpc_init();
    grpc_arg args[4];
    size_t n_args = 0;
    const struct { const char *key; int value; } ints[] = {
        {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)s->cfg.max_request_bytes},
        {GRPC_ARG_MAX_CONCURRENT_STREAMS, s->cfg.max_concurrent_streams},
        {GRPC_ARG_MAX_CONNECTION_AGE_MS, s->cfg.max_connection_age_ms},
        {GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, s->cfg.max_connection_age_grace_ms},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (ints[i].value <= 0) continue; /* gRPC's default: no limit */
        args[n_args].type = GRPC_ARG_INTEGER;
        args[n_args].key = (char *)ints[i].key;
        args[n_args].value.integer = ints[i].value;
        n_args++;
    }
    grpc_channel_args chargs = {n_args, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    int bound = add_port(s, s->listen, s->cfg.tls != NULL);
    if (bound <= 0) {
        cv_errorf(err, CV_EIO, "cannot listen on %s (address in use or invalid)", s->listen);
        goto err;
    }
    if (s->cfg.health_listen && *s->cfg.health_listen && add_port(s, s->cfg.health_listen, 0) <= 0) {
        cv_errorf(err, CV_EIO, "cannot listen on %s for health (address in use or invalid)", s->cfg.health_listen);
        goto err;
    }
    grpc_server_start(s->server);
    /* A few outstanding requests let bursts of new calls in without waiting on us. */
    for (int i = 0; i < 8; i++) {
        if (request_next_call(s) != 0) {
            cv_errorf(err, CV_ENOMEM, "rpc server: cannot request calls");
            goto err_started;
        }
    }
    s->sender_running = s->cfg.flush_interval_ms > 0;
    if (s->sender_running && pthread_create(&s->sender, NULL, sender_loop, s) != 0) {
        s->sender_running = 0;
        cv_errorf(err, CV_ENOMEM, "rpc server: cannot start the sender thread");
        goto err_started;
    }
    if (pthread_create(&s->thread, NULL, cq_loop, s) != 0) {
        cv_errorf(err, CV_ENOMEM, "rpc server: cannot start the completion-queue thread");
        goto err_started;
    }
    s->started = 1;
    if (port) *port = bound;
    return CV_OK;

err_started:
    atomic_store(&s->shutting_down, 1);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->server);
    cq_loop(s);
    sender_stop(s);
err:
    grpc_server_destroy(s->server);
    s->server = NULL;
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
    grpc_shutdown();
    return err ? err->code : CV_EIO;
}

void cv_rpc_server_stop_accepting(cv_rpc_server *s) { atomic_store(&s->accepting, 0); }

int cv_rpc_server_active_calls(cv_rpc_server *s) { return atomic_load(&s->active); }

void cv_rpc_server_free(cv_rpc_server *s) {
    if (!s) return;
    if (s->started) {
        atomic_store(&s->shutting_down, 1);
        atomic_store(&s->accepting, 0);
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
        grpc_server_cancel_all_calls(s->server);
        pthread_join(s->thread, NULL);
        sender_stop(s);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
            /* Late completions after the loop ended: release what they hold. */
            tag *t = ev.tag;
            if (t && t->kind != TAG_SHUTDOWN) {
                if (t->kind == TAG_NEW_CALL) on_new_call(t->call, 0);
                else call_unref(t->call);
            }
        }
        grpc_completion_queue_destroy(s->cq);
        grpc_shutdown();
    }
    for (size_t i = 0; i < s->n_methods; i++) free(s->methods[i].path);
    free(s->methods);
    free(s->listen);
    cv_tls_files_free(s->cfg.tls);
    pthread_mutex_destroy(&s->tls_mu);
    pthread_mutex_destroy(&s->wake_mu);
    pthread_cond_destroy(&s->wake_cv);
    free(s);
}
