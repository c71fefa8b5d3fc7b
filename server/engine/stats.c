#include "stats.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "timing.h"

/* Seconds: from 5 ms (a token on a small model) to a minute (a long generation). */
static const double bounds[CV_STATS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1, 2.5, 5, 10, 20, 30, 60};

typedef struct second {
    int64_t t;               /* the second this bucket holds; stale when older than the window */
    cv_stats_view v;
} second;

struct cv_stats {
    pthread_mutex_t mu;
    cv_stats_view total;
    cv_stats_view by_protocol[CV_STATS_PROTOCOLS];
    second ring[CV_STATS_WINDOW_MAX];
};

const double *cv_stats_bounds(void) { return bounds; }

cv_stats *cv_stats_new(void) {
    cv_stats *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    for (int i = 0; i < CV_STATS_WINDOW_MAX; i++) s->ring[i].t = -1;
    return s;
}

void cv_stats_free(cv_stats *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void hist_add(cv_hist *h, double v) {
    int b = 0;
    while (b < CV_STATS_BUCKETS && v > bounds[b]) b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
}

static void hist_merge(cv_hist *dst, const cv_hist *src) {
    for (int i = 0; i <= CV_STATS_BUCKETS; i++) dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
}

/* The bucket of the current second, reset if it held an older one. Lock held. */
static cv_stats_view *current(cv_stats *s) {
    int64_t t = (int64_t)cv_seconds();
    second *sec = &s->ring[t % CV_STATS_WINDOW_MAX];
    if (sec->t != t) {
        memset(&sec->v, 0, sizeof sec->v);
        sec->t = t;
    }
    return &sec->v;
}

static int protocol_index(int p) { return p >= 0 && p < CV_STATS_PROTOCOLS ? p : 0; }

void cv_stats_request(cv_stats *s, int protocol, const cv_stats_outcome *o) {
    int code = o->code >= 0 && o->code < CV_STATS_CODES ? o->code : 2; /* UNKNOWN */
    int finish = o->finish > 0 && o->finish < CV_STATS_FINISH ? o->finish : 0;
    pthread_mutex_lock(&s->mu);
    cv_stats_view *views[3] = {&s->total, current(s), &s->by_protocol[protocol_index(protocol)]};
    for (int i = 0; i < 3; i++) {
        views[i]->requests[code]++;
        views[i]->finish[finish]++;
        if (o->queue_s > 0) hist_add(&views[i]->queue, o->queue_s);
        if (o->ttft_s > 0) hist_add(&views[i]->ttft, o->ttft_s);
        hist_add(&views[i]->latency, o->total_s);
        views[i]->tokens += o->tokens;
        views[i]->prompt_tokens += o->prompt_tokens;
    }
    pthread_mutex_unlock(&s->mu);
}

void cv_stats_inter_token(cv_stats *s, int protocol, double gap_s) {
    pthread_mutex_lock(&s->mu);
    hist_add(&s->total.inter_token, gap_s);
    hist_add(&s->by_protocol[protocol_index(protocol)].inter_token, gap_s);
    hist_add(&current(s)->inter_token, gap_s);
    pthread_mutex_unlock(&s->mu);
}

void cv_stats_totals(cv_stats *s, cv_stats_view *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->total;
    pthread_mutex_unlock(&s->mu);
}

void cv_stats_protocol_totals(cv_stats *s, int protocol, cv_stats_view *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->by_protocol[protocol_index(protocol)];
    pthread_mutex_unlock(&s->mu);
}

void cv_stats_window(cv_stats *s, int seconds, cv_stats_view *out) {
    if (seconds < 1) seconds = 1;
    if (seconds > CV_STATS_WINDOW_MAX) seconds = CV_STATS_WINDOW_MAX;
    memset(out, 0, sizeof *out);
    int64_t now = (int64_t)cv_seconds();
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < CV_STATS_WINDOW_MAX; i++) {
        const second *sec = &s->ring[i];
        if (sec->t < 0 || sec->t <= now - seconds) continue;
        for (int c = 0; c < CV_STATS_CODES; c++) out->requests[c] += sec->v.requests[c];
        for (int f = 0; f < CV_STATS_FINISH; f++) out->finish[f] += sec->v.finish[f];
        hist_merge(&out->ttft, &sec->v.ttft);
        hist_merge(&out->latency, &sec->v.latency);
        hist_merge(&out->inter_token, &sec->v.inter_token);
        hist_merge(&out->queue, &sec->v.queue);
        out->tokens += sec->v.tokens;
        out->prompt_tokens += sec->v.prompt_tokens;
    }
    pthread_mutex_unlock(&s->mu);
}
