#include "otlp_export.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One exporter per process: spans come from every layer (service, rag, control plane)
 * without a handle threaded through each of them. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    cv_span **ring;
    unsigned cap, head, n;
    int stop;
    char *endpoint;
    json_t *resource;
    unsigned batch, flush_ms, timeout_ms;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static atomic_int g_running;
static _Atomic uint64_t g_exported, g_dropped_full, g_dropped_failed;

int cv_otlp_running(void) { return atomic_load(&g_running); }

void cv_otlp_get_counts(cv_otlp_counts *out) {
    out->exported = atomic_load(&g_exported);
    out->dropped_queue_full = atomic_load(&g_dropped_full);
    out->dropped_export_failed = atomic_load(&g_dropped_failed);
}

void cv_otlp_submit(cv_span *s) {
    if (!s) return;
    pthread_mutex_lock(&g.mu);
    int queued = atomic_load(&g_running) && g.n < g.cap;
    if (queued) {
        g.ring[(g.head + g.n) % g.cap] = s;
        if (++g.n == g.batch) pthread_cond_signal(&g.cv);
    }
    pthread_mutex_unlock(&g.mu);
    if (!queued) {
        if (atomic_load(&g_running)) atomic_fetch_add(&g_dropped_full, 1);
        cv_span_free(s);
    }
}

/* OTLP/JSON: ids are hex (not base64 as protobuf's JSON mapping would have them), 64-bit
 * integers are strings, enums are numbers. */
static json_t *span_json(const cv_span *s) {
    char tid[33], sid[17], pid[17], start[24], end[24];
    cv_trace_hex(s->trace_id, 16, tid);
    cv_trace_hex(s->span_id, 8, sid);
    cv_trace_hex(s->parent_id, 8, pid);
    snprintf(start, sizeof start, "%llu", (unsigned long long)s->start_ns);
    snprintf(end, sizeof end, "%llu", (unsigned long long)s->end_ns);
    json_t *attrs = json_array();
    for (size_t i = 0; i < s->n_attrs; i++) {
        const cv_span_attr *a = &s->attrs[i];
        json_t *v;
        if (a->type == CV_ATTR_STR) {
            v = json_pack("{s:s}", "stringValue", a->s);
        } else if (a->type == CV_ATTR_STR_ARRAY) {
            v = json_pack("{s:{s:[{s:s}]}}", "arrayValue", "values", "stringValue", a->s);
        } else if (a->type == CV_ATTR_INT) {
            char num[24];
            snprintf(num, sizeof num, "%lld", (long long)a->i);
            v = json_pack("{s:s}", "intValue", num);
        } else {
            v = json_pack("{s:f}", "doubleValue", a->d);
        }
        json_array_append_new(attrs, json_pack("{s:s,s:o}", "key", a->key, "value", v));
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:o}", "traceId", tid, "spanId", sid, "name", s->name, "kind",
                          (int)s->kind, "startTimeUnixNano", start, "endTimeUnixNano", end, "attributes", attrs);
    if (!o) return NULL;
    if (memcmp(s->parent_id, "\0\0\0\0\0\0\0\0", 8)) json_object_set_new(o, "parentSpanId", json_string(pid));
    if (s->error)
        json_object_set_new(o, "status", json_pack("{s:i,s:s}", "code", 2, "message",
                                                   s->status_message ? s->status_message : ""));
    return o;
}

static size_t discard(char *p, size_t size, size_t n, void *user) {
    (void)p;
    (void)user;
    return size * n;
}

/* One POST of spans[0..n); frees them. */
static void export_batch(CURL *curl, cv_span **spans, unsigned n) {
    json_t *list = json_array();
    for (unsigned i = 0; i < n; i++) json_array_append_new(list, span_json(spans[i]));
    json_t *req = json_pack("{s:[{s:O,s:[{s:{s:s},s:o}]}]}", "resourceSpans", "resource", g.resource, "scopeSpans",
                            "scope", "name", "corvid", "spans", list);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    long status = 0;
    if (body && curl) {
        struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_URL, g.endpoint);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)g.timeout_ms);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
        if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdr);
    }
    free(body);
    if (status >= 200 && status < 300) atomic_fetch_add(&g_exported, n);
    else atomic_fetch_add(&g_dropped_failed, n);
    for (unsigned i = 0; i < n; i++) cv_span_free(spans[i]);
}

static void *exporter(void *arg) {
    (void)arg;
    CURL *curl = curl_easy_init();
    cv_span **batch = malloc(sizeof *batch * g.batch);
    pthread_mutex_lock(&g.mu);
    for (;;) {
        if (!g.stop && g.n < g.batch) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += g.flush_ms / 1000;
            until.tv_nsec += (long)(g.flush_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            while (!g.stop && g.n < g.batch && pthread_cond_timedwait(&g.cv, &g.mu, &until) != ETIMEDOUT) {
            }
        }
        unsigned n = 0;
        while (batch && n < g.batch && g.n) {
            batch[n++] = g.ring[g.head];
            g.head = (g.head + 1) % g.cap;
            g.n--;
        }
        int stop = g.stop;
        pthread_mutex_unlock(&g.mu);
        if (n) export_batch(curl, batch, n);
        pthread_mutex_lock(&g.mu);
        if (stop && !g.n) break;
    }
    pthread_mutex_unlock(&g.mu);
    free(batch);
    curl_easy_cleanup(curl);
    return NULL;
}

static void release_state(void) {
    free(g.ring);
    free(g.endpoint);
    json_decref(g.resource);
    g.ring = NULL;
    g.endpoint = NULL;
    g.resource = NULL;
}

cv_status cv_otlp_start(const cv_otlp_config *c, cv_error *err) {
    if (atomic_load(&g_running)) return cv_errorf(err, CV_EINVAL, "otlp exporter: already running");
    if (!c->endpoint || (strncmp(c->endpoint, "http://", 7) && strncmp(c->endpoint, "https://", 8)))
        return cv_errorf(err, CV_EINVAL, "otlp endpoint \"%s\" is not an http:// or https:// URL",
                         c->endpoint ? c->endpoint : "");
    g.cap = c->queue_spans ? c->queue_spans : 4096;
    g.batch = c->batch_spans ? c->batch_spans : 512;
    if (g.batch > g.cap) g.batch = g.cap;
    g.flush_ms = c->flush_ms ? c->flush_ms : 1000;
    g.timeout_ms = c->timeout_ms ? c->timeout_ms : 5000;
    g.ring = calloc(g.cap, sizeof *g.ring);
    g.endpoint = strdup(c->endpoint);
    g.resource = json_pack("{s:[{s:s,s:{s:s}}]}", "attributes", "key", "service.name", "value", "stringValue",
                           c->service_name ? c->service_name : "corvid");
    if (g.resource && c->instance_id)
        json_array_append_new(json_object_get(g.resource, "attributes"),
                              json_pack("{s:s,s:{s:s}}", "key", "service.instance.id", "value", "stringValue",
                                        c->instance_id));
    if (!g.ring || !g.endpoint || !g.resource) {
        cv_errorf(err, CV_ENOMEM, "otlp exporter: out of memory");
        goto err;
    }
    g.head = g.n = 0;
    g.stop = 0;
    atomic_store(&g_running, 1);
    if (pthread_create(&g.thread, NULL, exporter, NULL) != 0) {
        atomic_store(&g_running, 0);
        cv_errorf(err, CV_ENOMEM, "otlp exporter: cannot start its thread");
        goto err;
    }
    return CV_OK;
err:
    release_state();
    return err ? err->code : CV_ENOMEM;
}

void cv_otlp_stop(void) {
    if (!atomic_load(&g_running)) return;
    pthread_mutex_lock(&g.mu);
    atomic_store(&g_running, 0); /* under mu: no span is queued after the thread's last look */
    g.stop = 1;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    release_state();
}
