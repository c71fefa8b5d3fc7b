#include "router.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_fetch.h"
#include "timing.h"

typedef struct entry {
    int used;
    cv_slot_info info;      /* stats, engine and model fields are filled by snapshots */
    cv_slot *slot;          /* NULL unless ready or draining */
    cv_stats *stats;        /* owned here, lent to the slot */
} entry;

typedef enum { OP_NONE, OP_LOAD, OP_UNLOAD } op_kind;

struct cv_router {
    cv_router_options opt;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* an operation ended, or an in-flight count dropped */
    entry e[CV_ROUTER_MAX_VERSIONS];
    op_kind op;             /* the background operation running, if any */
    char op_version[128];
    int op_thread_live;
    pthread_t op_thread;
    uint64_t rr;            /* round robin for requests without an id */
    int stopping;
    int abandoned;          /* cv_router_stop gave up waiting for the op's thread */
    atomic_int op_cancel;   /* the running load should stop */
};

const char *cv_slot_state_name(cv_slot_state s) {
    switch (s) {
    case CV_SLOT_LOADING: return "loading";
    case CV_SLOT_READY: return "ready";
    case CV_SLOT_FAILED: return "failed";
    case CV_SLOT_DRAINING: return "draining";
    }
    return "unknown";
}

static entry *find_locked(cv_router *r, const char *version) {
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++)
        if (r->e[i].used && strcmp(r->e[i].info.version, version) == 0) return &r->e[i];
    return NULL;
}

static int serving_locked(const cv_router *r) {
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++)
        if (r->e[i].used && r->e[i].info.state == CV_SLOT_READY && r->e[i].info.weight > 0) return 1;
    return 0;
}

static void entry_clear(entry *en) {
    cv_stats_free(en->stats);
    memset(en, 0, sizeof *en);
}

cv_status cv_router_new(const cv_router_options *opt, cv_router **out, cv_error *err) {
    cv_router *r = calloc(1, sizeof *r);
    if (!r) return cv_errorf(err, CV_ENOMEM, "router: out of memory");
    r->opt = *opt;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    *out = r;
    return CV_OK;
}

void cv_router_cancel(cv_router *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    atomic_store(&r->op_cancel, 1);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Waits for the running op to end, at most stop_wait_s; then reaps its thread, or
 * leaves it running (abandoned). */
static void join_op(cv_router *r) {
    double wait_s = r->opt.stop_wait_s > 0 ? r->opt.stop_wait_s : 5.0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)wait_s;
    until.tv_nsec += (long)((wait_s - (double)(time_t)wait_s) * 1e9);
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&r->mu);
    int timed_out = 0;
    while (r->op != OP_NONE && !timed_out)
        timed_out = pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT;
    int live = r->op_thread_live;
    if (r->op != OP_NONE) {
        r->abandoned = 1;
        if (live) pthread_detach(r->op_thread);
        live = 0;
        pthread_cond_broadcast(&r->cv);
    }
    r->op_thread_live = 0;
    pthread_mutex_unlock(&r->mu);
    if (live) pthread_join(r->op_thread, NULL);
}

void cv_router_stop(cv_router *r) {
    if (!r) return;
    cv_router_cancel(r);
    join_op(r);
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++) cv_slot_stop(r->e[i].slot);
}

void cv_router_free(cv_router *r) {
    if (!r) return;
    cv_router_stop(r);
    if (r->abandoned) return; /* its load thread still uses it; the process is ending */
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++) {
        cv_slot_free(r->e[i].slot);
        entry_clear(&r->e[i]);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* ---- requests ---- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* splitmix64's finalizer: consecutive counters spread evenly over the weights. */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

cv_status cv_router_acquire(cv_router *r, const char *request_id, const char *version,
                            cv_slot **out, cv_error *err) {
    pthread_mutex_lock(&r->mu);
    entry *pick = NULL;
    cv_status st = CV_OK;
    if (version && *version) {
        pick = find_locked(r, version);
        if (!pick || pick->info.state != CV_SLOT_READY)
            st = cv_errorf(err, CV_ENOTFOUND, "model version \"%.100s\" is %s", version,
                           pick ? cv_slot_state_name(pick->info.state) : "not loaded");
    } else {
        uint64_t total = 0;
        for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++)
            if (r->e[i].used && r->e[i].info.state == CV_SLOT_READY) total += r->e[i].info.weight;
        if (total == 0) {
            st = cv_errorf(err, CV_EUNAVAILABLE, "no model version is serving traffic");
        } else {
            uint64_t h = request_id && *request_id ? fnv1a(request_id) : mix64(r->rr++);
            uint64_t at = h % total;
            for (int i = 0; i < CV_ROUTER_MAX_VERSIONS && !pick; i++) {
                entry *en = &r->e[i];
                if (!en->used || en->info.state != CV_SLOT_READY) continue;
                if (at < en->info.weight) pick = en;
                else at -= en->info.weight;
            }
        }
    }
    if (st == CV_OK) {
        pick->info.in_flight++;
        *out = pick->slot;
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

void cv_router_release(cv_router *r, cv_slot *s) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++) {
        if (r->e[i].used && r->e[i].slot == s) {
            r->e[i].info.in_flight--;
            pthread_cond_broadcast(&r->cv);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

float cv_router_fault_rate(cv_router *r, const cv_slot *s) {
    float rate = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++)
        if (r->e[i].used && r->e[i].slot == s) rate = r->e[i].info.fault_error_rate;
    pthread_mutex_unlock(&r->mu);
    return rate;
}

int cv_router_serving(cv_router *r) {
    pthread_mutex_lock(&r->mu);
    int s = serving_locked(r);
    pthread_mutex_unlock(&r->mu);
    return s;
}

int32_t cv_router_in_flight(cv_router *r) {
    int32_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++)
        if (r->e[i].used) n += r->e[i].info.in_flight;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- operations ---- */

typedef struct op_args {
    cv_router *r;
    char version[128];
} op_args;

/* Refuses a second operation while one runs. Lock held. */
static cv_status claim_op_locked(cv_router *r, op_kind k, const char *version, cv_error *err) {
    if (r->stopping) return cv_errorf(err, CV_EUNAVAILABLE, "the server is shutting down");
    if (r->op != OP_NONE)
        return cv_errorf(err, CV_EBUSY, "another operation is running: %s of version \"%s\"; retry when it ends",
                         r->op == OP_LOAD ? "load" : "unload", r->op_version);
    r->op = k;
    atomic_store(&r->op_cancel, 0);
    snprintf(r->op_version, sizeof r->op_version, "%s", version);
    return CV_OK;
}

static void end_op(cv_router *r) {
    pthread_mutex_lock(&r->mu);
    r->op = OP_NONE;
    r->op_version[0] = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void *load_thread(void *arg) {
    op_args *a = arg;
    cv_router *r = a->r;
    char uri[1024], sha[65], path[1200];
    pthread_mutex_lock(&r->mu);
    entry *en = find_locked(r, a->version);
    snprintf(uri, sizeof uri, "%s", en->info.uri);
    snprintf(sha, sizeof sha, "%s", en->info.sha256);
    cv_stats *stats = en->stats;
    pthread_mutex_unlock(&r->mu);

    double t0 = cv_seconds();
    cv_error err = {0};
    cv_slot *slot = NULL;
    cv_fetch_opts fo = {.cache_dir = r->opt.cache_dir, .model_dirs = r->opt.model_dirs,
                        .model_sources = r->opt.model_sources, .max_bytes = r->opt.max_download_bytes,
                        .cancel = &r->op_cancel};
    cv_status st = cv_model_fetch(uri, sha, &fo, path, sizeof path, &err);
    if (st == CV_OK && !atomic_load(&r->op_cancel))
        st = cv_slot_load(path, a->version, &r->opt.slot, stats, &slot, &err);

    pthread_mutex_lock(&r->mu);
    en = find_locked(r, a->version);
    en->info.load_seconds = cv_seconds() - t0;
    int forget = atomic_load(&r->op_cancel) && !r->stopping;
    if (forget) {
        /* Unloaded while loading: forget it. */
        snprintf(en->info.message, sizeof en->info.message, "cancelled by an unload");
        en->info.state = CV_SLOT_FAILED;
    } else if (st != CV_OK || r->stopping) {
        en->info.state = CV_SLOT_FAILED;
        snprintf(en->info.message, sizeof en->info.message, "%s",
                 r->stopping ? "the server stopped while loading" : err.msg);
    } else {
        en->slot = slot;
        slot = NULL;
        en->info.state = CV_SLOT_READY;
        /* A server that serves nothing starts serving the first version that loads. */
        if (!serving_locked(r)) en->info.weight = 100;
        snprintf(en->info.message, sizeof en->info.message, "loaded in %.2f s", en->info.load_seconds);
    }
    int ready = en->info.state == CV_SLOT_READY;
    char detail[128 + 65 + 512 + 32];
    snprintf(detail, sizeof detail, "version=%s sha256=%s: %s", a->version, sha[0] ? sha : "-", en->info.message);
    pthread_mutex_unlock(&r->mu);
    if (r->opt.on_load) r->opt.on_load(r->opt.on_load_ctx, uri, ready, detail);
    cv_slot_free(slot);
    if (forget) {
        pthread_mutex_lock(&r->mu);
        if ((en = find_locked(r, a->version))) entry_clear(en);
        pthread_mutex_unlock(&r->mu);
    }
    end_op(r);
    free(a);
    return NULL;
}

static void *unload_thread(void *arg) {
    op_args *a = arg;
    cv_router *r = a->r;
    pthread_mutex_lock(&r->mu);
    entry *en = find_locked(r, a->version);
    while (en->info.in_flight > 0 && !r->stopping) pthread_cond_wait(&r->cv, &r->mu);
    if (r->stopping) {
        /* Streams may still run on it: cv_router_free frees it after they are gone. */
        pthread_mutex_unlock(&r->mu);
        end_op(r);
        free(a);
        return NULL;
    }
    cv_slot *slot = en->slot;
    en->slot = NULL;
    pthread_mutex_unlock(&r->mu);
    cv_slot_free(slot);
    pthread_mutex_lock(&r->mu);
    entry_clear(en);
    pthread_mutex_unlock(&r->mu);
    end_op(r);
    free(a);
    return NULL;
}

/* Starts the op's thread and, with wait, blocks until the op ends. Lock held on entry,
 * released on return. */
static cv_status run_op_locked(cv_router *r, void *(*fn)(void *), const char *version, int wait,
                               cv_error *err) {
    op_args *a = calloc(1, sizeof *a);
    pthread_t t;
    if (!a) goto oom;
    a->r = r;
    snprintf(a->version, sizeof a->version, "%s", version);
    /* The previous op's thread has ended (op is NONE); reap it before starting another. */
    if (r->op_thread_live) {
        pthread_t old = r->op_thread;
        r->op_thread_live = 0;
        pthread_mutex_unlock(&r->mu);
        pthread_join(old, NULL);
        pthread_mutex_lock(&r->mu);
    }
    if (pthread_create(&t, NULL, fn, a) != 0) goto oom;
    r->op_thread = t;
    r->op_thread_live = 1;
    while (wait && r->op != OP_NONE) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return CV_OK;
oom:
    free(a);
    r->op = OP_NONE;
    pthread_mutex_unlock(&r->mu);
    return cv_errorf(err, CV_ENOMEM, "router: cannot start a thread");
}

/* A version name as LoadModel and UnloadModel take it: INVALID_ARGUMENT material. */
static cv_status check_version(const cv_router *r, const char *version, cv_error *err) {
    if (!version || !*version || strlen(version) >= sizeof r->e[0].info.version)
        return cv_errorf(err, CV_EINVAL, "version: a name of 1 to %zu bytes is required",
                         sizeof r->e[0].info.version - 1);
    return CV_OK;
}

cv_status cv_router_load(cv_router *r, const char *version, const char *uri, const char *sha256,
                         int wait, cv_error *err) {
    if (check_version(r, version, err) != CV_OK) return CV_EINVAL;
    if (!uri || !*uri || strlen(uri) >= sizeof r->e[0].info.uri)
        return cv_errorf(err, CV_EINVAL, "uri: a path or URL is required");
    cv_fetch_opts fo = {.cache_dir = r->opt.cache_dir, .model_dirs = r->opt.model_dirs,
                        .model_sources = r->opt.model_sources};
    cv_status st = cv_model_fetch_check(uri, sha256, &fo, err);
    if (st != CV_OK) return st;
    pthread_mutex_lock(&r->mu);
    entry *en = find_locked(r, version);
    if (en && en->info.state != CV_SLOT_FAILED) {
        st = cv_errorf(err, CV_EINVAL, "version \"%s\" is already %s: unload it first", version,
                       cv_slot_state_name(en->info.state));
    } else if (!en) {
        for (int i = 0; i < CV_ROUTER_MAX_VERSIONS && !en; i++)
            if (!r->e[i].used) en = &r->e[i];
        if (!en) st = cv_errorf(err, CV_ERANGE, "this server already holds %d versions: unload one first",
                                CV_ROUTER_MAX_VERSIONS);
    }
    if (st == CV_OK) st = claim_op_locked(r, OP_LOAD, version, err);
    if (st != CV_OK) {
        pthread_mutex_unlock(&r->mu);
        return st;
    }
    cv_stats *stats = en->used ? en->stats : cv_stats_new();
    if (!stats) {
        r->op = OP_NONE;
        pthread_mutex_unlock(&r->mu);
        return cv_errorf(err, CV_ENOMEM, "router: out of memory");
    }
    memset(&en->info, 0, sizeof en->info);
    en->used = 1;
    en->stats = stats;
    snprintf(en->info.version, sizeof en->info.version, "%s", version);
    snprintf(en->info.uri, sizeof en->info.uri, "%s", uri);
    snprintf(en->info.sha256, sizeof en->info.sha256, "%s", sha256 ? sha256 : "");
    en->info.state = CV_SLOT_LOADING;
    snprintf(en->info.message, sizeof en->info.message, "loading %s", uri);
    return run_op_locked(r, load_thread, version, wait, err);
}

cv_status cv_router_unload(cv_router *r, const char *version, int wait, cv_error *err) {
    if (check_version(r, version, err) != CV_OK) return CV_EINVAL;
    pthread_mutex_lock(&r->mu);
    entry *en = find_locked(r, version ? version : "");
    cv_status st = CV_OK;
    if (!en) st = cv_errorf(err, CV_ENOTFOUND, "version \"%.100s\" is not loaded", version ? version : "");
    else if (en->info.state == CV_SLOT_LOADING && r->op == OP_LOAD && strcmp(r->op_version, version) == 0) {
        /* Cancel the load: its thread forgets the version when it stops. */
        atomic_store(&r->op_cancel, 1);
        snprintf(en->info.message, sizeof en->info.message, "cancelling the load");
        while (wait && r->op != OP_NONE && !r->abandoned) pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
        return CV_OK;
    } else if (en->info.state == CV_SLOT_LOADING || en->info.state == CV_SLOT_DRAINING)
        st = cv_errorf(err, CV_EBUSY, "version \"%s\" is %s", version, cv_slot_state_name(en->info.state));
    if (st == CV_OK && en->info.state == CV_SLOT_FAILED) {
        entry_clear(en); /* nothing was loaded: forget it at once */
        pthread_mutex_unlock(&r->mu);
        return CV_OK;
    }
    if (st == CV_OK) st = claim_op_locked(r, OP_UNLOAD, version, err);
    if (st != CV_OK) {
        pthread_mutex_unlock(&r->mu);
        return st;
    }
    en->info.state = CV_SLOT_DRAINING;
    en->info.weight = 0;
    snprintf(en->info.message, sizeof en->info.message, "draining %d in-flight requests", en->info.in_flight);
    return run_op_locked(r, unload_thread, version, wait, err);
}

cv_status cv_router_set_traffic(cv_router *r, const char *const *versions, const uint32_t *weights, int n,
                                cv_error *err) {
    pthread_mutex_lock(&r->mu);
    cv_status st = CV_OK;
    for (int i = 0; i < n && st == CV_OK; i++) {
        entry *en = find_locked(r, versions[i]);
        if (!en) st = cv_errorf(err, CV_ENOTFOUND, "version \"%.100s\" is not loaded", versions[i]);
        else if (weights[i] > 0 && en->info.state != CV_SLOT_READY)
            st = cv_errorf(err, CV_EINVAL, "version \"%s\" is %s: only a ready version can take traffic",
                           versions[i], cv_slot_state_name(en->info.state));
        else if (weights[i] > 1000000)
            st = cv_errorf(err, CV_ERANGE, "weight %u of \"%s\" is above 1000000", weights[i], versions[i]);
    }
    if (st == CV_OK) {
        for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++) r->e[i].info.weight = 0;
        for (int i = 0; i < n; i++) find_locked(r, versions[i])->info.weight = weights[i];
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

void cv_router_wait_idle(cv_router *r) {
    pthread_mutex_lock(&r->mu);
    while (r->op != OP_NONE && !r->abandoned) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

cv_status cv_router_set_fault(cv_router *r, const char *version, float rate, cv_error *err) {
    if (!(rate >= 0 && rate <= 1)) return cv_errorf(err, CV_EINVAL, "error_rate %g is outside [0, 1]", rate);
    pthread_mutex_lock(&r->mu);
    entry *en = find_locked(r, version);
    if (en) en->info.fault_error_rate = rate;
    pthread_mutex_unlock(&r->mu);
    return en ? CV_OK : cv_errorf(err, CV_ENOTFOUND, "version \"%.100s\" is not loaded", version);
}

int cv_router_snapshot(cv_router *r, int window_seconds, cv_slot_info *out) {
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < CV_ROUTER_MAX_VERSIONS; i++) {
        entry *en = &r->e[i];
        if (!en->used) continue;
        out[n] = en->info;
        cv_stats_totals(en->stats, &out[n].total);
        cv_stats_window(en->stats, window_seconds, &out[n].window);
        for (int p = 0; p < CV_STATS_PROTOCOLS; p++) cv_stats_protocol_totals(en->stats, p, &out[n].by_protocol[p]);
        if (en->slot && en->slot->engine) {
            const cv_slot *s = en->slot;
            const cv_hparams *hp = cv_model_hparams(cv_tp_model(s->tp));
            out[n].has_engine = 1;
            cv_engine_get_stats(s->engine, &out[n].engine);
            snprintf(out[n].name, sizeof out[n].name, "%s", s->name);
            snprintf(out[n].architecture, sizeof out[n].architecture, "%s", cv_arch_name(hp->arch));
            snprintf(out[n].chat_template, sizeof out[n].chat_template, "%s",
                     s->chat ? cv_chat_format_name(s->chat) : "");
            out[n].n_ctx = cv_engine_n_ctx(s->engine);
            out[n].n_vocab = hp->n_vocab;
        }
        n++;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
