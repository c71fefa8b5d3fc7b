#include "admin_service.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "trace.h"
#include "corvid/v1/admin.pb-c.h"
#include "response_cache.h"
#include "rpc_message.h"

#define DEFAULT_WINDOW_S 60

struct cv_admin {
    cv_router *router;
    cv_audit *audit;
    char server_id[128];
    atomic_int waiters;     /* threads holding a call until an operation ends */
    cv_rc *rc;              /* NULL: no response cache */
};

static cv_rpc_code code_of(cv_status st) {
    switch (st) {
    case CV_EBUSY: return CV_RPC_ABORTED;
    case CV_ENOTFOUND: return CV_RPC_NOT_FOUND;
    case CV_EINVAL: return CV_RPC_INVALID_ARGUMENT;
    case CV_ERANGE: return CV_RPC_FAILED_PRECONDITION;
    case CV_EUNAVAILABLE: return CV_RPC_UNAVAILABLE;
    case CV_ENOMEM: return CV_RPC_RESOURCE_EXHAUSTED;
    /* Refused by the server's policy (model_sources, model_dirs): its configuration, not
     * the caller's credentials, decides; PERMISSION_DENIED would point at the token. */
    case CV_EPERM: return CV_RPC_FAILED_PRECONDITION;
    case CV_ECANCELLED: return CV_RPC_CANCELLED;
    default: return CV_RPC_INTERNAL;
    }
}

/* One admin_action line: who asked for what, and whether it was accepted; and the
 * operation as a span (from t0, when the call arrived) of the caller's trace. */
static void audit(cv_admin *a, cv_rpc_call *call, uint64_t t0, cv_status st, const cv_error *err, const char *fmt,
                  ...) __attribute__((format(printf, 6, 7)));
static void audit(cv_admin *a, cv_rpc_call *call, uint64_t t0, cv_status st, const cv_error *err, const char *fmt,
                  ...) {
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (st != CV_OK && n >= 0 && (size_t)n < sizeof detail)
        snprintf(detail + n, sizeof detail - (size_t)n, ": %s", err->msg);
    const char *method = cv_rpc_method(call), *tp = cv_rpc_metadata(call, "traceparent");
    cv_trace_ctx parent, ctx;
    cv_trace_begin(tp, tp ? strlen(tp) : 0, &parent);
    cv_span *span = cv_span_start(&parent, method + (method[0] == '/'), CV_SPAN_SERVER, t0, &ctx);
    cv_span_set_str(span, "rpc.system", "grpc");
    cv_span_set_str(span, "corvid.admin.action", detail);
    if (st != CV_OK) cv_span_set_error(span, err->msg);
    cv_span_end(span, 0);
    if (!a->audit) return;
    char trace_id[33];
    cv_trace_id_hex(&ctx, trace_id);
    const char *subject = cv_rpc_subject(call);
    cv_audit_entry e = {CV_AUDIT_ADMIN_ACTION, *subject ? subject : NULL, cv_rpc_peer(call), method,
                        st == CV_OK ? "ok" : cv_status_name(st), detail, trace_id};
    cv_audit_write(a->audit, &e, NULL);
}

/* Storage for one SlotStatus message built from a snapshot entry. */
typedef struct slot_msg {
    Corvid__V1__SlotStatus s;
    Corvid__V1__CodeCount total[CV_STATS_CODES], window[CV_STATS_CODES];
    Corvid__V1__CodeCount *total_p[CV_STATS_CODES], *window_p[CV_STATS_CODES];
    Corvid__V1__Histogram ttft, latency;
    double bounds[CV_STATS_BUCKETS];
    uint64_t ttft_counts[CV_STATS_BUCKETS + 1], latency_counts[CV_STATS_BUCKETS + 1];
} slot_msg;

static void fill_hist(Corvid__V1__Histogram *h, const cv_hist *src, double *bounds, uint64_t *counts) {
    corvid__v1__histogram__init(h);
    memcpy(bounds, cv_stats_bounds(), sizeof(double) * CV_STATS_BUCKETS);
    uint64_t cum = 0;
    for (int i = 0; i <= CV_STATS_BUCKETS; i++) counts[i] = cum += src->counts[i];
    h->n_bounds = CV_STATS_BUCKETS;
    h->bounds = bounds;
    h->n_counts = CV_STATS_BUCKETS + 1;
    h->counts = counts;
    h->count = src->count;
    h->sum = src->sum;
}

static size_t fill_codes(Corvid__V1__CodeCount *cc, Corvid__V1__CodeCount **pp, const uint64_t *req) {
    size_t n = 0;
    for (int c = 0; c < CV_STATS_CODES; c++) {
        if (!req[c]) continue;
        corvid__v1__code_count__init(&cc[n]);
        cc[n].code = c;
        cc[n].count = req[c];
        pp[n] = &cc[n];
        n++;
    }
    return n;
}

static void fill_slot(slot_msg *m, cv_slot_info *in, int window_s) {
    Corvid__V1__SlotStatus *s = &m->s;
    corvid__v1__slot_status__init(s);
    s->version = in->version;
    s->state = (Corvid__V1__SlotState)in->state;
    s->weight = in->weight;
    s->in_flight = (uint32_t)in->in_flight;
    s->n_requests_total = fill_codes(m->total, m->total_p, in->total.requests);
    s->requests_total = m->total_p;
    s->n_requests_window = fill_codes(m->window, m->window_p, in->window.requests);
    s->requests_window = m->window_p;
    fill_hist(&m->ttft, &in->window.ttft, m->bounds, m->ttft_counts);
    fill_hist(&m->latency, &in->window.latency, m->bounds, m->latency_counts);
    s->ttft_seconds = &m->ttft;
    s->latency_seconds = &m->latency;
    s->tokens_generated = in->total.tokens;
    s->message = in->message;
    s->uri = in->uri;
    s->sha256 = in->sha256;
    s->window_seconds = (uint32_t)window_s;
    s->load_seconds = (float)in->load_seconds;
    s->fault_error_rate = in->fault_error_rate;
}

/* Replies with the current status of one version; one that is gone (after an unload)
 * answers with state UNSPECIFIED and the message "unloaded". */
static void reply_slot(cv_admin *a, cv_rpc_call *call, const char *version) {
    cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
    int n = cv_router_snapshot(a->router, DEFAULT_WINDOW_S, info);
    for (int i = 0; i < n; i++) {
        if (strcmp(info[i].version, version) != 0) continue;
        slot_msg m;
        fill_slot(&m, &info[i], DEFAULT_WINDOW_S);
        cv_rpc_reply_message(call, &m.s.base);
        return;
    }
    Corvid__V1__SlotStatus gone = CORVID__V1__SLOT_STATUS__INIT;
    gone.version = (char *)version;
    gone.message = "unloaded";
    cv_rpc_reply_message(call, &gone.base);
}

typedef struct waiter {
    cv_admin *a;
    cv_rpc_call *call;
    char version[128];
} waiter;

static void *wait_then_reply(void *arg) {
    waiter *w = arg;
    cv_router_wait_idle(w->a->router);
    reply_slot(w->a, w->call, w->version);
    cv_rpc_call_release(w->call);
    atomic_fetch_sub(&w->a->waiters, 1);
    free(w);
    return NULL;
}

/* Answers now, or from a thread once the running operation ends. */
static void reply_after(cv_admin *a, cv_rpc_call *call, const char *version, int wait) {
    waiter *w = wait ? calloc(1, sizeof *w) : NULL;
    pthread_t t;
    pthread_attr_t attr;
    if (!w) {
        if (wait) cv_rpc_reply(call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        else reply_slot(a, call, version);
        return;
    }
    w->a = a;
    w->call = call;
    snprintf(w->version, sizeof w->version, "%s", version);
    cv_rpc_hold(call);
    atomic_fetch_add(&a->waiters, 1);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, wait_then_reply, w) != 0) {
        atomic_fetch_sub(&a->waiters, 1);
        cv_rpc_reply(call, CV_RPC_RESOURCE_EXHAUSTED, "cannot start a thread", NULL, 0);
        cv_rpc_call_release(call);
        free(w);
    }
    pthread_attr_destroy(&attr);
}

/* Requests are unpacked like Inference's (rpc_message.h): malformed bytes, invalid
 * UTF-8 or a NUL in a version, URI or sha256 are answered INVALID_ARGUMENT naming the
 * field, and the handler returns. */
static void on_load(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_admin *a = ctx;
    uint64_t t0 = cv_trace_now_ns();
    Corvid__V1__LoadModelRequest *r =
        cv_rpc_unpack_request(&corvid__v1__load_model_request__descriptor, call, req, len);
    if (!r) return;
    cv_error err = {0};
    cv_status st = cv_router_load(a->router, r->version, r->uri, r->sha256, 0, &err);
    audit(a, call, t0, st, &err, "load version=%.100s uri=%.400s sha256=%.64s", r->version, r->uri, r->sha256);
    if (st != CV_OK) cv_rpc_reply(call, code_of(st), err.msg, NULL, 0);
    else reply_after(a, call, r->version, r->wait);
    cv_rpc_free_request(&r->base);
}

static void on_unload(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_admin *a = ctx;
    uint64_t t0 = cv_trace_now_ns();
    Corvid__V1__UnloadModelRequest *r =
        cv_rpc_unpack_request(&corvid__v1__unload_model_request__descriptor, call, req, len);
    if (!r) return;
    cv_error err = {0};
    cv_status st = cv_router_unload(a->router, r->version, 0, &err);
    audit(a, call, t0, st, &err, "unload version=%.100s", r->version);
    if (st != CV_OK) cv_rpc_reply(call, code_of(st), err.msg, NULL, 0);
    else reply_after(a, call, r->version, r->wait);
    cv_rpc_free_request(&r->base);
}

static void reply_status(cv_admin *a, cv_rpc_call *call, int window_s) {
    cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
    slot_msg *m = calloc(CV_ROUTER_MAX_VERSIONS, sizeof *m);
    if (!m) {
        cv_rpc_reply(call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    int n = cv_router_snapshot(a->router, window_s, info);
    Corvid__V1__SlotStatus *slots[CV_ROUTER_MAX_VERSIONS];
    Corvid__V1__GetStatusResponse resp = CORVID__V1__GET_STATUS_RESPONSE__INIT;
    for (int i = 0; i < n; i++) {
        fill_slot(&m[i], &info[i], window_s);
        slots[i] = &m[i].s;
        if (info[i].has_engine) {
            resp.kv_blocks_used += (uint32_t)info[i].engine.kv_blocks_used;
            resp.kv_blocks_total += (uint32_t)info[i].engine.kv_blocks_total;
            resp.queue_depth += (uint32_t)info[i].engine.waiting;
            resp.running_sequences += (uint32_t)info[i].engine.running;
        }
    }
    resp.n_slots = (size_t)n;
    resp.slots = slots;
    resp.server_id = a->server_id;
    Corvid__V1__ResponseCacheStatus rcs = CORVID__V1__RESPONSE_CACHE_STATUS__INIT;
    if (a->rc) {
        cv_rc_stats s;
        cv_rc_stats_get(a->rc, &s);
        rcs.backend = (char *)cv_rc_backend_name(s.backend);
        rcs.lookups = s.lookups;
        rcs.hits = s.hits;
        rcs.stores = s.stores;
        rcs.errors = s.errors;
        rcs.bytes = s.bytes;
        rcs.hit_rate = s.lookups ? (double)s.hits / (double)s.lookups : 0;
        resp.response_cache = &rcs;
    }
    cv_rpc_reply_message(call, &resp.base);
    free(m);
}

static void on_status(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_admin *a = ctx;
    Corvid__V1__GetStatusRequest *r =
        cv_rpc_unpack_request(&corvid__v1__get_status_request__descriptor, call, req, len);
    if (!r) return;
    int window = r->window_seconds ? (int)r->window_seconds : DEFAULT_WINDOW_S;
    cv_rpc_free_request(&r->base);
    if (window > CV_STATS_WINDOW_MAX) {
        char msg[100];
        snprintf(msg, sizeof msg, "window_seconds %d is above %d", window, CV_STATS_WINDOW_MAX);
        cv_rpc_reply(call, CV_RPC_INVALID_ARGUMENT, msg, NULL, 0);
        return;
    }
    reply_status(a, call, window);
}

static void on_traffic(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_admin *a = ctx;
    uint64_t t0 = cv_trace_now_ns();
    Corvid__V1__SetTrafficRequest *r =
        cv_rpc_unpack_request(&corvid__v1__set_traffic_request__descriptor, call, req, len);
    if (!r) return;
    const char *versions[CV_ROUTER_MAX_VERSIONS];
    uint32_t weights[CV_ROUTER_MAX_VERSIONS];
    cv_error err = {0};
    cv_status st = CV_OK;
    if (r->n_weights > CV_ROUTER_MAX_VERSIONS) {
        st = cv_errorf(&err, CV_EINVAL, "weights: %zu entries, at most %d", r->n_weights, CV_ROUTER_MAX_VERSIONS);
    } else {
        for (size_t i = 0; i < r->n_weights; i++) {
            versions[i] = r->weights[i]->version;
            weights[i] = r->weights[i]->weight;
        }
        st = cv_router_set_traffic(a->router, versions, weights, (int)r->n_weights, &err);
    }
    char what[600] = "traffic";
    for (size_t i = 0, n = strlen(what); i < r->n_weights && i < CV_ROUTER_MAX_VERSIONS && n < sizeof what - 80; i++)
        n += (size_t)snprintf(what + n, sizeof what - n, " %.60s=%u", r->weights[i]->version, r->weights[i]->weight);
    audit(a, call, t0, st, &err, "%s", what);
    cv_rpc_free_request(&r->base);
    if (st != CV_OK) cv_rpc_reply(call, code_of(st), err.msg, NULL, 0);
    else reply_status(a, call, DEFAULT_WINDOW_S);
}

static void on_fault(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_admin *a = ctx;
    Corvid__V1__SetFaultInjectionRequest *r =
        cv_rpc_unpack_request(&corvid__v1__set_fault_injection_request__descriptor, call, req, len);
    if (!r) return;
#ifdef CORVID_TESTING
    uint64_t t0 = cv_trace_now_ns();
    cv_error err = {0};
    cv_status st = cv_router_set_fault(a->router, r->version, r->error_rate, &err);
    audit(a, call, t0, st, &err, "fault version=%.100s error_rate=%g", r->version, r->error_rate);
    if (st != CV_OK) cv_rpc_reply(call, code_of(st), err.msg, NULL, 0);
    else reply_slot(a, call, r->version);
#else
    (void)a;
    cv_rpc_reply(call, CV_RPC_FAILED_PRECONDITION,
                 "fault injection exists only in builds made with CORVID_TESTING", NULL, 0);
#endif
    cv_rpc_free_request(&r->base);
}

void cv_admin_set_response_cache(cv_admin *a, cv_rc *rc) { a->rc = rc; }

cv_status cv_admin_new(cv_router *router, const char *server_id, cv_audit *audit, cv_admin **out,
                       cv_error *err) {
    cv_admin *a = calloc(1, sizeof *a);
    if (!a) return cv_errorf(err, CV_ENOMEM, "admin service: out of memory");
    a->router = router;
    a->audit = audit;
    snprintf(a->server_id, sizeof a->server_id, "%s", server_id ? server_id : "");
    atomic_init(&a->waiters, 0);
    *out = a;
    return CV_OK;
}

cv_status cv_admin_register(cv_admin *a, cv_rpc_server *srv, cv_error *err) {
    static const cv_rpc_method_def methods[] = {
        {"/corvid.v1.Admin/LoadModel", on_load},
        {"/corvid.v1.Admin/SetTraffic", on_traffic},
        {"/corvid.v1.Admin/UnloadModel", on_unload},
        {"/corvid.v1.Admin/GetStatus", on_status},
        {"/corvid.v1.Admin/SetFaultInjection", on_fault},
    };
    return cv_rpc_register_all(srv, methods, sizeof methods / sizeof methods[0], a, err);
}

void cv_admin_free(cv_admin *a) {
    if (!a) return;
    /* Waiters end once the router's operation does (the router stops before this). */
    while (atomic_load(&a->waiters) > 0) usleep(1000);
    free(a);
}
