#include "audit_tally.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define ADDR_MAX 64
#define REASON_MAX 32
#define SUBJECT_MAX 256
#define METHOD_MAX 128
#define OUTCOME_MAX 32
#define PEER_MAX 128
#define DETAIL_MAX 384

typedef struct key_slot {
    char addr[ADDR_MAX], reason[REASON_MAX], subject[SUBJECT_MAX];
    /* The first attempt of the interval. */
    char method[METHOD_MAX], outcome[OUTCOME_MAX], peer[PEER_MAX], detail[DETAIL_MAX];
    int has_subject, has_method, has_outcome, has_detail;
    unsigned long long count;
    double first, last;
} key_slot;

typedef struct table {
    key_slot *slots;  /* max_keys, filled in order */
    int32_t *index;   /* cap entries: a slot number or -1 */
    unsigned n;
    unsigned long long overflow;
    double overflow_first, overflow_last;
} table;

struct cv_audit_tally {
    cv_audit *audit;
    unsigned max_keys, cap;  /* cap: a power of two >= 2 max_keys */
    uint64_t seed;
    double interval_s;
    pthread_mutex_t mu;        /* the counting table and stop */
    pthread_mutex_t flush_mu;  /* one flush at a time */
    pthread_cond_t wake;
    int stop, started;
    table tables[2];
    int cur;                   /* the table counting now */
    pthread_t thread;
};

static double now_realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* FNV-1a over the three parts (with separators), from a random seed, so that nobody
 * can choose addresses that pile up in one probe run. */
static uint64_t hash_key(uint64_t seed, const char *addr, const char *reason, const char *subject) {
    uint64_t h = 14695981039346656037ull ^ seed;
    const char *parts[3] = {addr, reason, subject};
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void reset(table *tb, unsigned cap) {
    memset(tb->index, 0xff, cap * sizeof *tb->index);
    tb->n = 0;
    tb->overflow = 0;
}

/* s cut to cap - 1 bytes into dst; whether s was given. */
static int copy_cut(char *dst, size_t cap, const char *s) {
    snprintf(dst, cap, "%s", s ? s : "");
    return s != NULL;
}

void cv_audit_tally_add(cv_audit_tally *t, const char *addr, const char *reason,
                        const cv_audit_entry *first) {
    char a[ADDR_MAX], r[REASON_MAX], s[SUBJECT_MAX];
    copy_cut(a, sizeof a, addr);
    copy_cut(r, sizeof r, reason);
    copy_cut(s, sizeof s, first->subject);
    uint64_t h = hash_key(t->seed, a, r, s);
    double now = now_realtime();
    pthread_mutex_lock(&t->mu);
    table *tb = &t->tables[t->cur];
    unsigned i = (unsigned)h & (t->cap - 1);
    while (tb->index[i] >= 0) {
        key_slot *k = &tb->slots[tb->index[i]];
        if (!strcmp(k->addr, a) && !strcmp(k->reason, r) && !strcmp(k->subject, s)) {
            k->count++;
            k->last = now;
            goto out;
        }
        i = (i + 1) & (t->cap - 1);
    }
    if (tb->n == t->max_keys) {
        if (!tb->overflow) tb->overflow_first = now;
        tb->overflow++;
        tb->overflow_last = now;
        goto out;
    }
    key_slot *k = &tb->slots[tb->n];
    tb->index[i] = (int32_t)tb->n++;
    memcpy(k->addr, a, sizeof a);
    memcpy(k->reason, r, sizeof r);
    memcpy(k->subject, s, sizeof s);
    k->has_subject = first->subject != NULL;
    k->has_method = copy_cut(k->method, sizeof k->method, first->method);
    k->has_outcome = copy_cut(k->outcome, sizeof k->outcome, first->outcome);
    copy_cut(k->peer, sizeof k->peer, first->peer);
    k->has_detail = copy_cut(k->detail, sizeof k->detail, first->detail);
    k->count = 1;
    k->first = k->last = now;
out:
    pthread_mutex_unlock(&t->mu);
}

static void write_table(cv_audit_tally *t, table *tb) {
    for (unsigned i = 0; i < tb->n; i++) {
        const key_slot *k = &tb->slots[i];
        cv_audit_entry e = {CV_AUDIT_AUTH_FAILURE, k->has_subject ? k->subject : NULL, k->addr,
                            k->has_method ? k->method : NULL, k->has_outcome ? k->outcome : NULL,
                            k->has_detail ? k->detail : NULL, NULL};
        cv_audit_count c = {k->reason, k->count, k->first, k->last};
        cv_audit_write_count(t->audit, &e, &c, NULL);
    }
    if (tb->overflow) {
        char detail[160];
        snprintf(detail, sizeof detail,
                 "failures of clients beyond the %u counted one by one in this interval", t->max_keys);
        cv_audit_entry e = {CV_AUDIT_AUTH_FAILURE, NULL, "(other clients)", NULL, NULL, detail, NULL};
        cv_audit_count c = {"table_full", tb->overflow, tb->overflow_first, tb->overflow_last};
        cv_audit_write_count(t->audit, &e, &c, NULL);
    }
}

void cv_audit_tally_flush(cv_audit_tally *t) {
    pthread_mutex_lock(&t->flush_mu);
    pthread_mutex_lock(&t->mu);
    table *done = &t->tables[t->cur];
    t->cur ^= 1; /* the other one was emptied by the previous flush */
    pthread_mutex_unlock(&t->mu);
    write_table(t, done);
    reset(done, t->cap);
    pthread_mutex_unlock(&t->flush_mu);
}

static void *run(void *arg) {
    cv_audit_tally *t = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        double s = (double)next.tv_sec + (double)next.tv_nsec * 1e-9 + t->interval_s;
        next.tv_sec = (time_t)s;
        next.tv_nsec = (long)((s - (double)next.tv_sec) * 1e9);
        while (!t->stop && pthread_cond_timedwait(&t->wake, &t->mu, &next) != ETIMEDOUT) {}
        if (t->stop) break;
        pthread_mutex_unlock(&t->mu);
        cv_audit_tally_flush(t);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

cv_status cv_audit_tally_new(cv_audit *audit, const cv_audit_tally_config *c, cv_audit_tally **out,
                             cv_error *err) {
    if (!(c->interval_s > 0) || c->max_keys < 1 || c->max_keys > (1u << 24))
        return cv_errorf(err, CV_EINVAL, "audit tally: interval %g s and %u keys are out of range",
                         c->interval_s, c->max_keys);
    cv_audit_tally *t = calloc(1, sizeof *t);
    if (!t) return cv_errorf(err, CV_ENOMEM, "audit tally: out of memory");
    t->audit = audit;
    t->max_keys = c->max_keys;
    t->interval_s = c->interval_s;
    for (t->cap = 2; t->cap < 2 * c->max_keys; t->cap *= 2) {}
    if (getrandom(&t->seed, sizeof t->seed, 0) != (ssize_t)sizeof t->seed) t->seed = (uint64_t)now_realtime();
    for (int i = 0; i < 2; i++) {
        t->tables[i].slots = malloc(c->max_keys * sizeof(key_slot));
        t->tables[i].index = malloc(t->cap * sizeof(int32_t));
        if (!t->tables[i].slots || !t->tables[i].index) goto nomem;
        reset(&t->tables[i], t->cap);
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->flush_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, run, t) != 0) {
        cv_audit_tally_free(t);
        return cv_errorf(err, CV_ENOMEM, "audit tally: cannot start its thread");
    }
    t->started = 1;
    *out = t;
    return CV_OK;
nomem:
    for (int i = 0; i < 2; i++) free(t->tables[i].slots), free(t->tables[i].index);
    free(t);
    return cv_errorf(err, CV_ENOMEM, "audit tally: out of memory for %u keys", c->max_keys);
}

void cv_audit_tally_free(cv_audit_tally *t) {
    if (!t) return;
    if (t->started) {
        pthread_mutex_lock(&t->mu);
        t->stop = 1;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    cv_audit_tally_flush(t);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->flush_mu);
    for (int i = 0; i < 2; i++) free(t->tables[i].slots), free(t->tables[i].index);
    free(t);
}
