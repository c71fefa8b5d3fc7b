/* router: the model versions one server holds, and which one serves each request.
 *
 * Each version lives in an entry with a state: loading (in the background, while the
 * others keep serving), ready, failed (with the reason; nothing else changed) or
 * draining (no new requests; freed once its in-flight requests end). New requests are
 * routed by traffic weight among ready versions, sticky per request id; a request keeps
 * the slot it acquired until it releases it, so in-flight streams always finish on the
 * version they started on. Load, traffic and unload operations are serialized: while
 * one runs, another is refused with CV_EBUSY and a message naming the running one.
 *
 * A URI is a local path (or file://) under one of model_dirs, or an http(s) URL under
 * one of model_sources, downloaded by libcurl into the cache directory (resumable,
 * size-limited, sha256 required): model_fetch.h has the rules. A sha256, when given, is
 * checked before the file is opened. Loading includes a warm-up generation.
 *
 * A running load can be cancelled: unloading a loading version stops its download (or
 * drops the model once it is opened) and forgets the version; cv_router_cancel and
 * cv_router_stop do the same for shutdown, and cv_router_stop waits at most stop_wait_s
 * for a load that cannot be stopped (the router is then left to the process's exit).
 */
#ifndef CV_ROUTER_H
#define CV_ROUTER_H

#include <stdint.h>

#include "slot.h"
#include "stats.h"

#define CV_ROUTER_MAX_VERSIONS 8

typedef enum cv_slot_state {
    CV_SLOT_LOADING = 1,
    CV_SLOT_READY = 2,
    CV_SLOT_FAILED = 3,
    CV_SLOT_DRAINING = 4
} cv_slot_state;

/* Told every load's outcome (ready or failed) once, off the router's lock; the server
 * writes it to the audit log. uri: what was asked for; detail: version, sha256, reason. */
typedef void (*cv_router_load_hook)(void *ctx, const char *uri, int ready, const char *detail);

typedef struct cv_router_options {
    cv_slot_options slot;
    cv_router_load_hook on_load; /* NULL: nobody is told */
    void *on_load_ctx;
    char cache_dir[1024];        /* downloads land here */
    uint64_t max_download_bytes; /* 0: no limit */
    char model_dirs[4096];       /* comma-separated: local URIs must resolve under one */
    char model_sources[4096];    /* comma-separated URL prefixes; "": no downloads */
    double stop_wait_s;          /* cv_router_stop's wait for a running load; <= 0: 5 s */
} cv_router_options;

typedef struct cv_slot_info {
    char version[128];
    char uri[1024];
    char sha256[65];
    char message[512];           /* why it failed, or what it is doing */
    cv_slot_state state;
    uint32_t weight;
    int32_t in_flight;
    double load_seconds;
    float fault_error_rate;
    cv_stats_view total;         /* since the version was loaded */
    cv_stats_view window;        /* the snapshot's window */
    cv_stats_view by_protocol[CV_STATS_PROTOCOLS]; /* lifetime, per protocol */
    int has_engine;
    cv_engine_stats engine;
    char name[128], architecture[32], chat_template[32];
    int32_t n_ctx, n_vocab;
} cv_slot_info;

typedef struct cv_router cv_router;

cv_status cv_router_new(const cv_router_options *opt, cv_router **out, cv_error *err);
/* Shutdown begins: new operations are refused and a running load is cancelled. */
void cv_router_cancel(cv_router *r);
/* cv_router_cancel, waits for the running operation (at most stop_wait_s), then stops
 * every engine (unfinished requests end as cancelled). */
void cv_router_stop(cv_router *r);
/* Frees everything; a router whose load outlived cv_router_stop is left allocated. */
void cv_router_free(cv_router *r);

/* A ready slot for a new request, its in-flight count taken. version pins one (smoke
 * tests); NULL/"" routes by weight, sticky on request_id. CV_EUNAVAILABLE when nothing
 * can serve, CV_ENOTFOUND for a pinned version that is not ready. */
cv_status cv_router_acquire(cv_router *r, const char *request_id, const char *version,
                            cv_slot **out, cv_error *err);
void cv_router_release(cv_router *r, cv_slot *s);
/* The share of requests a slot should fail on purpose (CORVID_TESTING builds). */
float cv_router_fault_rate(cv_router *r, const cv_slot *s);

cv_status cv_router_load(cv_router *r, const char *version, const char *uri, const char *sha256,
                         int wait, cv_error *err);
/* Weights for the versions named; every other version gets 0. Only ready versions may
 * get a weight above 0. */
cv_status cv_router_set_traffic(cv_router *r, const char *const *versions, const uint32_t *weights,
                                int n, cv_error *err);
/* A ready version drains, then is freed; a loading one is cancelled and forgotten. */
cv_status cv_router_unload(cv_router *r, const char *version, int wait, cv_error *err);
/* Blocks until no load or unload runs (or one was abandoned by cv_router_stop). */
void cv_router_wait_idle(cv_router *r);
cv_status cv_router_set_fault(cv_router *r, const char *version, float rate, cv_error *err);

/* A snapshot of every version (at most CV_ROUTER_MAX_VERSIONS), with request figures
 * over the last window_seconds; returns how many. */
int cv_router_snapshot(cv_router *r, int window_seconds, cv_slot_info *out);
/* 1 when some ready version has weight > 0. */
int cv_router_serving(cv_router *r);
/* Requests in flight on all versions. */
int32_t cv_router_in_flight(cv_router *r);

const char *cv_slot_state_name(cv_slot_state s);

#endif
