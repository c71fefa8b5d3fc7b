#include "etcd_watch.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd_json.h"
#include "etcd_revmap.h"
#include "etcd_stream.h"

#define POLL_MS 200

struct cv_etcd_watch {
    cv_etcd *c;
    char *prefix;
    cv_etcd_watch_config cfg;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    CURLM *multi;

    pthread_mutex_t mu; /* guards the queue, the pipe and stats */
    pthread_cond_t nonempty, nonfull, wake;
    cv_etcd_watch_event *q;
    size_t head, len;
    int pipe_r, pipe_w;
    cv_etcd_watch_stats stats;

    /* Watch thread only. */
    CURL *h;
    cv_etcd_stream stream;
    cv_etcd_revmap held;
    int64_t next_rev;
    bool need_resync, created;
    size_t endpoint; /* of the current stream */
    int64_t last_data_ms;
    uint64_t rng;
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline_in(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void note_error(cv_etcd_watch *w, const char *msg) {
    pthread_mutex_lock(&w->mu);
    snprintf(w->stats.last_error, sizeof w->stats.last_error, "%s", msg);
    pthread_mutex_unlock(&w->mu);
}

/* Queues ev (taking ownership), waiting while the queue is full. */
static cv_status push(cv_etcd_watch *w, cv_etcd_watch_event *ev) {
    pthread_mutex_lock(&w->mu);
    while (w->len == w->cfg.max_queue && !atomic_load(&w->stop)) pthread_cond_wait(&w->nonfull, &w->mu);
    if (atomic_load(&w->stop)) {
        pthread_mutex_unlock(&w->mu);
        cv_etcd_watch_event_free(ev);
        return CV_ECANCELLED;
    }
    if (ev->kind == CV_ETCD_WATCH_RESYNC) w->stats.resyncs++;
    w->q[(w->head + w->len) % w->cfg.max_queue] = *ev;
    memset(ev, 0, sizeof *ev);
    if (w->len++ == 0) {
        char b = 1;
        (void)!write(w->pipe_w, &b, 1);
    }
    pthread_cond_signal(&w->nonempty);
    pthread_mutex_unlock(&w->mu);
    return CV_OK;
}

cv_status cv_etcd_watch_next(cv_etcd_watch *w, int timeout_ms, cv_etcd_watch_event *ev, cv_error *err) {
    memset(ev, 0, sizeof *ev);
    struct timespec dl = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&w->mu);
    while (w->len == 0 && !atomic_load(&w->stop))
        if (pthread_cond_timedwait(&w->nonempty, &w->mu, &dl) == ETIMEDOUT) break;
    if (w->len == 0) {
        bool stopped = atomic_load(&w->stop);
        pthread_mutex_unlock(&w->mu);
        return stopped ? cv_errorf(err, CV_ECANCELLED, "watch of \"%s\" stopped", w->prefix)
                       : cv_errorf(err, CV_ETIMEOUT, "no event on \"%s\" within %d ms", w->prefix,
                                   timeout_ms);
    }
    *ev = w->q[w->head];
    w->head = (w->head + 1) % w->cfg.max_queue;
    if (--w->len == 0) {
        char b[16];
        while (read(w->pipe_r, b, sizeof b) > 0) {
        }
    }
    pthread_cond_signal(&w->nonfull);
    pthread_mutex_unlock(&w->mu);
    return CV_OK;
}

int cv_etcd_watch_fd(const cv_etcd_watch *w) { return w->pipe_r; }

void cv_etcd_watch_get_stats(cv_etcd_watch *w, cv_etcd_watch_stats *out) {
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

void cv_etcd_watch_event_free(cv_etcd_watch_event *ev) {
    if (!ev) return;
    cv_etcd_kv_free(&ev->kv);
    for (size_t i = 0; i < ev->n_kvs; i++) cv_etcd_kv_free(&ev->kvs[i]);
    free(ev->kvs);
    memset(ev, 0, sizeof *ev);
}

/* Sleeps up to ms unless stopped; returns false when stopped. */
static bool pause_ms(cv_etcd_watch *w, int ms) {
    struct timespec dl = deadline_in(ms);
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop))
        if (pthread_cond_timedwait(&w->wake, &w->mu, &dl) == ETIMEDOUT) break;
    pthread_mutex_unlock(&w->mu);
    return !atomic_load(&w->stop);
}

/* Replaces the held state by a full range of the prefix and queues it. */
static cv_status resync(cv_etcd_watch *w, cv_error *err) {
    cv_etcd_range_req req = {.key = w->prefix, .prefix = true};
    cv_etcd_range_result r;
    cv_status st = cv_etcd_range(w->c, &req, &r, err);
    if (st) return cv_error_wrap(err, "watch resync");
    cv_etcd_revmap_clear(&w->held);
    for (size_t i = 0; i < r.n_kvs; i++) {
        bool applied;
        if ((st = cv_etcd_revmap_advance(&w->held, r.kvs[i].key, r.kvs[i].key_len,
                                         r.kvs[i].mod_revision, &applied, err))) {
            cv_etcd_range_result_free(&r);
            return st;
        }
    }
    cv_etcd_watch_event ev = {.kind = CV_ETCD_WATCH_RESYNC, .revision = r.header.revision,
                              .kvs = r.kvs, .n_kvs = r.n_kvs};
    w->next_rev = r.header.revision + 1;
    w->need_resync = false;
    return push(w, &ev);
}

/* One decoded stream object. A non-OK status ends the stream. */
static cv_status on_msg(void *ud, cv_etcd_watch_msg *m, cv_error *err) {
    cv_etcd_watch *w = ud;
    if (m->canceled) {
        if (m->compact_revision > 0) {
            pthread_mutex_lock(&w->mu);
            w->stats.compactions++;
            pthread_mutex_unlock(&w->mu);
            w->need_resync = true;
            return cv_errorf(err, CV_ERANGE, "history compacted up to revision %lld (wanted %lld)",
                             (long long)m->compact_revision, (long long)w->next_rev);
        }
        return cv_errorf(err, CV_EUNAVAILABLE, "watch canceled by etcd: %s",
                         m->cancel_reason ? m->cancel_reason : "no reason given");
    }
    if (m->created) {
        w->created = true;
        cv_etcd_set_preferred(w->c, w->endpoint); /* for the client's calls too */
        pthread_mutex_lock(&w->mu);
        w->stats.streams++;
        pthread_mutex_unlock(&w->mu);
        return CV_OK;
    }
    if (m->n_events == 0) {
        /* A progress notification: every event up to header.revision was sent. */
        if (m->header.revision >= w->next_rev) w->next_rev = m->header.revision + 1;
        return CV_OK;
    }
    for (size_t i = 0; i < m->n_events; i++) {
        cv_etcd_event *e = &m->events[i];
        bool applied;
        cv_status st = cv_etcd_revmap_advance(&w->held, e->kv.key, e->kv.key_len, e->kv.mod_revision,
                                              &applied, err);
        if (st) return st;
        if (e->kv.mod_revision >= w->next_rev) w->next_rev = e->kv.mod_revision + 1;
        pthread_mutex_lock(&w->mu);
        if (applied) w->stats.events++;
        else w->stats.duplicates++;
        w->stats.next_revision = w->next_rev;
        pthread_mutex_unlock(&w->mu);
        if (!applied) continue;
        cv_etcd_watch_event ev = {
            .kind = e->type == CV_ETCD_EVENT_PUT ? CV_ETCD_WATCH_PUT : CV_ETCD_WATCH_DELETE,
            .revision = e->kv.mod_revision, .kv = e->kv};
        memset(&e->kv, 0, sizeof e->kv);
        if ((st = push(w, &ev))) return cv_errorf(err, st, "watch stopped");
    }
    return CV_OK;
}

typedef struct conn {
    cv_etcd_watch *w;
    cv_error err;
    bool failed;
} conn;

static size_t on_data(char *d, size_t sz, size_t nm, void *ud) {
    conn *k = ud;
    k->w->last_data_ms = now_ms();
    if (cv_etcd_stream_feed(&k->w->stream, d, sz * nm, &k->err)) {
        k->failed = true;
        return 0; /* aborts the transfer */
    }
    return sz * nm;
}

static char *watch_body(cv_etcd_watch *w) {
    json_t *root = json_object(), *req = json_object();
    char *body = NULL;
    if (root && req && !cv_etcd_json_set_range(req, w->prefix, true) &&
        !cv_etcd_json_set_i64(req, "start_revision", w->next_rev) &&
        !json_object_set_new(req, "progress_notify", json_true()) &&
        !json_object_set(root, "create_request", req))
        body = json_dumps(root, JSON_COMPACT);
    json_decref(req);
    json_decref(root);
    return body;
}

/* Runs one stream against endpoint idx until it ends; err says why. */
static cv_status run_stream(cv_etcd_watch *w, size_t idx, cv_error *err) {
    char *body = watch_body(w);
    if (!body) return cv_errorf(err, CV_ENOMEM, "watch request");
    const char *base = cv_etcd_endpoint(w->c, idx);
    char url[512];
    snprintf(url, sizeof url, "%s/v3/watch", base);
    conn k = {.w = w};
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    const cv_etcd_config *cc = cv_etcd_get_config(w->c);
    cv_etcd_stream_reset(&w->stream);
    w->created = false;
    w->endpoint = idx;
    curl_easy_reset(w->h);
    curl_easy_setopt(w->h, CURLOPT_URL, url);
    curl_easy_setopt(w->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(w->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(w->h, CURLOPT_CONNECTTIMEOUT_MS, (long)cc->connect_timeout_ms);
    curl_easy_setopt(w->h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(w->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(w->h, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(w->h, CURLOPT_ERRORBUFFER, curl_err);
    cv_status st = CV_OK;
    if (!hdrs || curl_multi_add_handle(w->multi, w->h) != CURLM_OK) {
        st = cv_errorf(err, CV_ENOMEM, "watch %s: cannot start the transfer", base);
        goto out;
    }
    w->last_data_ms = now_ms();
    int running = 1;
    bool idle = false;
    while (running && !atomic_load(&w->stop)) {
        if (curl_multi_perform(w->multi, &running) != CURLM_OK) break;
        if (!running) break;
        if (w->cfg.idle_timeout_ms > 0 && now_ms() - w->last_data_ms > w->cfg.idle_timeout_ms) {
            idle = true;
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, POLL_MS, NULL);
    }
    CURLcode rc = CURLE_OK;
    int left;
    for (CURLMsg *m; (m = curl_multi_info_read(w->multi, &left));)
        if (m->msg == CURLMSG_DONE) rc = m->data.result;
    curl_multi_remove_handle(w->multi, w->h);
    if (atomic_load(&w->stop)) st = cv_errorf(err, CV_ECANCELLED, "watch stopped");
    else if (k.failed) st = cv_errorf(err, k.err.code, "watch %s: %s", base, k.err.msg);
    else if (idle)
        st = cv_errorf(err, CV_ETIMEOUT, "watch %s: no data for %d ms", base, w->cfg.idle_timeout_ms);
    else if (rc != CURLE_OK)
        st = cv_errorf(err, CV_EUNAVAILABLE, "watch %s: %s", base, curl_err[0] ? curl_err : curl_easy_strerror(rc));
    else st = cv_errorf(err, CV_EUNAVAILABLE, "watch %s: stream ended", base);
out:
    curl_slist_free_all(hdrs);
    free(body);
    return st;
}

static void *watch_main(void *arg) {
    cv_etcd_watch *w = arg;
    size_t n = cv_etcd_endpoint_count(w->c), idx = cv_etcd_preferred(w->c);
    unsigned round = 0;
    bool first = true;
    while (!atomic_load(&w->stop)) {
        cv_error e = {0};
        if (w->need_resync) {
            if (resync(w, &e) == CV_OK) continue;
            if (atomic_load(&w->stop)) break;
            note_error(w, e.msg);
            pause_ms(w, cv_etcd_backoff_ms(cv_etcd_get_config(w->c), round++, &w->rng));
            continue;
        }
        if (!first) {
            pthread_mutex_lock(&w->mu);
            w->stats.reconnects++;
            pthread_mutex_unlock(&w->mu);
        }
        first = false;
        run_stream(w, idx, &e);
        if (atomic_load(&w->stop)) break;
        note_error(w, e.msg);
        if (w->need_resync) continue;
        if (w->created) round = 0;
        else idx = (idx + 1) % n;
        pause_ms(w, cv_etcd_backoff_ms(cv_etcd_get_config(w->c), round++, &w->rng));
    }
    return NULL;
}

cv_status cv_etcd_watch_start(cv_etcd *c, const cv_etcd_watch_config *cfg, cv_etcd_watch **out,
                              cv_error *err) {
    *out = NULL;
    if (!cfg->prefix) return cv_errorf(err, CV_EINVAL, "watch: no prefix");
    cv_etcd_watch *w = calloc(1, sizeof *w);
    if (!w) return cv_errorf(err, CV_ENOMEM, "watch");
    w->c = c;
    w->cfg = *cfg;
    if (!w->cfg.max_queue) w->cfg.max_queue = 4096;
    w->pipe_r = w->pipe_w = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->nonempty, &ca);
    pthread_cond_init(&w->nonfull, &ca);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    cv_etcd_stream_init(&w->stream, cfg->max_object, on_msg, w);
    w->next_rev = cfg->start_revision;
    w->need_resync = cfg->start_revision <= 0;
    w->rng = (uint64_t)now_ms() ^ (uintptr_t)w;
    int p[2];
    cv_status st;
    if (!(w->prefix = strdup(cfg->prefix)) || !(w->q = calloc(w->cfg.max_queue, sizeof *w->q)) ||
        !(w->h = curl_easy_init()) || !(w->multi = curl_multi_init())) {
        st = cv_errorf(err, CV_ENOMEM, "watch of \"%.200s\": allocation", cfg->prefix);
        goto fail;
    }
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
        st = cv_errorf(err, CV_EIO, "watch of \"%.200s\": pipe: %s", cfg->prefix, strerror(errno));
        goto fail;
    }
    w->pipe_r = p[0];
    w->pipe_w = p[1];
    int rc = pthread_create(&w->thread, NULL, watch_main, w);
    if (rc) {
        st = cv_errorf(err, CV_EIO, "watch of \"%.200s\": thread: %s", cfg->prefix, strerror(rc));
        goto fail;
    }
    w->started = true;
    *out = w;
    return CV_OK;
fail:
    cv_etcd_watch_stop(w);
    return st;
}

void cv_etcd_watch_stop(cv_etcd_watch *w) {
    if (!w) return;
    atomic_store(&w->stop, true);
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_broadcast(&w->nonfull);
        pthread_cond_broadcast(&w->nonempty);
        pthread_cond_broadcast(&w->wake);
        pthread_mutex_unlock(&w->mu);
        curl_multi_wakeup(w->multi);
        pthread_join(w->thread, NULL);
    }
    for (size_t i = 0; i < w->len; i++) cv_etcd_watch_event_free(&w->q[(w->head + i) % w->cfg.max_queue]);
    free(w->q);
    if (w->multi) curl_multi_cleanup(w->multi);
    if (w->h) curl_easy_cleanup(w->h);
    if (w->pipe_r >= 0) close(w->pipe_r);
    if (w->pipe_w >= 0) close(w->pipe_w);
    cv_etcd_stream_free(&w->stream);
    cv_etcd_revmap_free(&w->held);
    pthread_cond_destroy(&w->nonempty);
    pthread_cond_destroy(&w->nonfull);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w->prefix);
    free(w);
}
