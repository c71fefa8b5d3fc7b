#include "health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc_message.h"
#include "timing.h"

#define MAX_SERVICES 32
#define MAX_NAME 128

typedef struct watcher {
    cv_health *owner;
    cv_rpc_call *call;
    char service[MAX_NAME];
    atomic_int want; /* latest status for this watcher's service */
    int sent;        /* last status sent; -1 before the first message */
    atomic_int closing;  /* the client went away: end at once */
    atomic_int ending;   /* the server stops: send the last status, then end */
    atomic_int ended;    /* produce returned FINISH */
    struct watcher *next;
} watcher;

struct cv_health {
    pthread_mutex_t mu;
    char names[MAX_SERVICES][MAX_NAME];
    cv_health_status status[MAX_SERVICES];
    int n;
    watcher *watchers;
};

static int find_locked(const cv_health *h, const char *service) {
    for (int i = 0; i < h->n; i++)
        if (strcmp(h->names[i], service) == 0) return i;
    return -1;
}

cv_status cv_health_new(cv_health **out, cv_error *err) {
    cv_health *h = calloc(1, sizeof *h);
    if (!h) return cv_errorf(err, CV_ENOMEM, "health: out of memory");
    pthread_mutex_init(&h->mu, NULL);
    *out = h;
    return CV_OK;
}

void cv_health_free(cv_health *h) {
    if (!h) return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}

cv_status cv_health_set(cv_health *h, const char *service, cv_health_status st, cv_error *err) {
    if (strlen(service) >= MAX_NAME)
        return cv_errorf(err, CV_EINVAL, "health: service name longer than %d bytes", MAX_NAME - 1);
    pthread_mutex_lock(&h->mu);
    int i = find_locked(h, service);
    if (i < 0) {
        if (h->n == MAX_SERVICES) {
            pthread_mutex_unlock(&h->mu);
            return cv_errorf(err, CV_ERANGE, "health: more than %d service names", MAX_SERVICES);
        }
        i = h->n++;
        strcpy(h->names[i], service);
    }
    h->status[i] = st;
    for (watcher *w = h->watchers; w; w = w->next) {
        if (strcmp(w->service, service) != 0) continue;
        atomic_store(&w->want, (int)st);
        cv_rpc_stream_wake(w->call);
    }
    pthread_mutex_unlock(&h->mu);
    return CV_OK;
}

cv_health_status cv_health_get(cv_health *h, const char *service) {
    pthread_mutex_lock(&h->mu);
    int i = find_locked(h, service);
    cv_health_status st = i < 0 ? CV_HEALTH_SERVICE_UNKNOWN : h->status[i];
    pthread_mutex_unlock(&h->mu);
    return st;
}

int cv_health_watchers(cv_health *h) {
    pthread_mutex_lock(&h->mu);
    int n = 0;
    for (watcher *w = h->watchers; w; w = w->next) n++;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static uint8_t *pack_response(cv_health_status st, size_t *len) {
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    *len = grpc__health__v1__health_check_response__get_packed_size(&resp);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) grpc__health__v1__health_check_response__pack(&resp, buf);
    return buf;
}

/* Returns 0 and the service name, or -1 after answering INVALID_ARGUMENT (malformed,
 * a service name with invalid UTF-8 or a NUL, as every request's text: rpc_message.h). */
static int parse_request(cv_rpc_call *call, const uint8_t *req, size_t len, char *name) {
    Grpc__Health__V1__HealthCheckRequest *r =
        cv_rpc_unpack_request(&grpc__health__v1__health_check_request__descriptor, call, req, len);
    if (!r) return -1;
    size_t n = strlen(r->service);
    if (n < MAX_NAME) memcpy(name, r->service, n + 1);
    cv_rpc_free_request(&r->base);
    if (n >= MAX_NAME) {
        char msg[96];
        snprintf(msg, sizeof msg, "service: %zu bytes, at most %d", n, MAX_NAME - 1);
        cv_rpc_reply(call, CV_RPC_INVALID_ARGUMENT, msg, NULL, 0);
        return -1;
    }
    return 0;
}

static void on_check(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_health *h = ctx;
    char name[MAX_NAME];
    if (parse_request(call, req, len, name) != 0) return;
    cv_health_status st = cv_health_get(h, name);
    if (st == CV_HEALTH_SERVICE_UNKNOWN) {
        cv_rpc_reply(call, CV_RPC_NOT_FOUND, "unknown service", NULL, 0);
        return;
    }
    size_t n;
    uint8_t *buf = pack_response(st, &n);
    if (!buf) {
        cv_rpc_reply(call, CV_RPC_INTERNAL, "out of memory", NULL, 0);
        return;
    }
    cv_rpc_reply(call, CV_RPC_OK, NULL, buf, n);
    free(buf);
}

static cv_rpc_produce watch_produce(void *ctx, uint8_t **msg, size_t *len, int *more,
                                    cv_rpc_code *code, const char **status_msg) {
    watcher *w = ctx;
    (void)more;
    if (atomic_load(&w->closing)) {
        *code = CV_RPC_CANCELLED;
        *status_msg = "watch cancelled";
        return CV_RPC_FINISH;
    }
    int want = atomic_load(&w->want);
    if (want == w->sent) {
        if (!atomic_load(&w->ending)) return CV_RPC_NOTHING;
        *code = CV_RPC_UNAVAILABLE;
        *status_msg = "server shutting down";
        atomic_store(&w->ended, 1);
        return CV_RPC_FINISH;
    }
    *msg = pack_response((cv_health_status)want, len);
    if (!*msg) {
        *code = CV_RPC_INTERNAL;
        *status_msg = "out of memory";
        return CV_RPC_FINISH;
    }
    w->sent = want;
    return CV_RPC_MESSAGE;
}

/* Whoever unlinks a watcher (a cancel, or the end of a shutdown) releases its call. */
static int unlink_locked(cv_health *h, watcher *w) {
    for (watcher **p = &h->watchers; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            return 1;
        }
    }
    return 0;
}

static void watch_cancel(void *ctx) {
    watcher *w = ctx;
    cv_health *h = w->owner;
    pthread_mutex_lock(&h->mu);
    int mine = unlink_locked(h, w);
    pthread_mutex_unlock(&h->mu);
    if (!mine) return;
    atomic_store(&w->closing, 1);
    cv_rpc_stream_wake(w->call);
    cv_rpc_call_release(w->call);
}

void cv_health_shutdown(cv_health *h, double timeout_s) {
    pthread_mutex_lock(&h->mu);
    for (watcher *w = h->watchers; w; w = w->next) {
        atomic_store(&w->ending, 1);
        cv_rpc_stream_wake(w->call);
    }
    pthread_mutex_unlock(&h->mu);
    double start = cv_seconds();
    for (;;) {
        /* Release the calls of watchers that sent their last status. */
        pthread_mutex_lock(&h->mu);
        watcher *done = NULL;
        for (watcher *w = h->watchers; w; w = w->next)
            if (atomic_load(&w->ended)) done = w;
        if (done) unlink_locked(h, done);
        int left = h->watchers != NULL;
        pthread_mutex_unlock(&h->mu);
        if (done) {
            cv_rpc_call_release(done->call);
            continue;
        }
        if (!left || cv_seconds() - start > timeout_s) return;
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
}

static void watch_done(void *ctx) { free(ctx); }

static const cv_rpc_stream_ops watch_ops = {watch_produce, watch_cancel, watch_done};

static void on_watch(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_health *h = ctx;
    watcher *w = calloc(1, sizeof *w);
    if (!w) {
        cv_rpc_reply(call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    if (parse_request(call, req, len, w->service) != 0) {
        free(w);
        return;
    }
    w->owner = h;
    w->call = call;
    w->sent = -1;
    pthread_mutex_lock(&h->mu);
    int i = find_locked(h, w->service);
    atomic_init(&w->want, i < 0 ? (int)CV_HEALTH_SERVICE_UNKNOWN : (int)h->status[i]);
    w->next = h->watchers;
    h->watchers = w;
    pthread_mutex_unlock(&h->mu);
    cv_rpc_stream_start(call, &watch_ops, w);
}

cv_status cv_health_register(cv_health *h, cv_rpc_server *srv, cv_error *err) {
    static const cv_rpc_method_def methods[] = {
        {"/grpc.health.v1.Health/Check", on_check},
        {"/grpc.health.v1.Health/Watch", on_watch},
    };
    return cv_rpc_register_all(srv, methods, 2, h, err);
}
