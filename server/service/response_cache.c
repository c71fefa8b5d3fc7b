#include "response_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "rc_redis.h"
#include "timing.h"

/* ---- the key ---- */

cv_status cv_rc_backend_parse(const char *s, cv_rc_backend *out, cv_error *err) {
    if (!strcmp(s, "off")) *out = CV_RC_OFF;
    else if (!strcmp(s, "memory")) *out = CV_RC_MEMORY;
    else if (!strcmp(s, "redis")) *out = CV_RC_REDIS;
    else return cv_errorf(err, CV_EINVAL, "response_cache: \"%s\" is none of off, memory, redis", s);
    return CV_OK;
}

const char *cv_rc_backend_name(cv_rc_backend b) {
    return b == CV_RC_MEMORY ? "memory" : b == CV_RC_REDIS ? "redis" : "off";
}

/* Every field goes in with its length or as a fixed-size number, so that no two
 * different requests hash the same bytes. */
static void h_bytes(EVP_MD_CTX *h, const void *p, size_t n) {
    uint64_t len = n;
    EVP_DigestUpdate(h, &len, sizeof len);
    if (n) EVP_DigestUpdate(h, p, n);
}
static void h_str(EVP_MD_CTX *h, const char *s) { h_bytes(h, s ? s : "", s ? strlen(s) : 0); }
static void h_u64(EVP_MD_CTX *h, uint64_t v) { EVP_DigestUpdate(h, &v, sizeof v); }
static void h_f32(EVP_MD_CTX *h, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    h_u64(h, u);
}

/* The kept passages, in citation order: a knowledge-base chunk by its index's checksum
 * and chunk id, a live result by its source, document, URL and text. Sets *live. */
static void h_rag(EVP_MD_CTX *h, const cv_rag_outcome *o, int *live) {
    *live = 0;
    h_u64(h, o ? o->ctx.n_kept : 0);
    for (size_t i = 0; o && i < o->ctx.n_kept; i++) {
        const cv_rag_passage *p = &o->passages[o->ctx.kept[i]];
        h_str(h, p->source);
        if (p->source && !strncmp(p->source, "kb:", 3)) {
            h_u64(h, p->kb_checksum);
            h_u64(h, p->chunk);
        } else {
            *live = 1;
            h_str(h, p->doc_id);
            h_str(h, p->url);
            h_bytes(h, p->text, p->len);
        }
    }
}

/* ---- the memory backend: a hash table of entries on an LRU list ---- */

typedef struct mem_entry {
    struct mem_entry *next_hash, *prev, *next; /* prev: more recently used */
    uint8_t digest[CV_RC_DIGEST];
    double expires;                            /* 0: never */
    size_t len;
    uint8_t blob[];
} mem_entry;

typedef struct mem_store {
    mem_entry **buckets;
    size_t n_buckets, n_entries, bytes, max_bytes;
    mem_entry *head, *tail;                    /* head: most recently used */
} mem_store;

static size_t entry_cost(size_t len) { return sizeof(mem_entry) + len + sizeof(mem_entry *); }

static size_t bucket_of(const mem_store *m, const uint8_t *digest) {
    uint64_t v;
    memcpy(&v, digest, sizeof v);
    return (size_t)(v & (m->n_buckets - 1));
}

static void lru_unlink(mem_store *m, mem_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else m->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(mem_store *m, mem_entry *e) {
    e->prev = NULL;
    e->next = m->head;
    if (m->head) m->head->prev = e;
    m->head = e;
    if (!m->tail) m->tail = e;
}

static mem_entry **find_slot(mem_store *m, const uint8_t *digest) {
    mem_entry **p = &m->buckets[bucket_of(m, digest)];
    while (*p && memcmp((*p)->digest, digest, CV_RC_DIGEST)) p = &(*p)->next_hash;
    return p;
}

static void mem_remove(mem_store *m, mem_entry *e) {
    mem_entry **p = find_slot(m, e->digest);
    *p = e->next_hash;
    lru_unlink(m, e);
    m->n_entries--;
    m->bytes -= entry_cost(e->len);
    free(e);
}

/* Doubles the table when entries outnumber buckets (it never shrinks). */
static void mem_grow(mem_store *m) {
    if (m->n_entries < m->n_buckets) return;
    size_t n = m->n_buckets * 2;
    mem_entry **b = calloc(n, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    mem_entry **old = m->buckets;
    size_t n_old = m->n_buckets;
    m->buckets = b;
    m->n_buckets = n;
    for (size_t i = 0; i < n_old; i++)
        for (mem_entry *e = old[i], *next; e; e = next) {
            next = e->next_hash;
            size_t k = bucket_of(m, e->digest);
            e->next_hash = b[k];
            b[k] = e;
        }
    free(old);
}

static int mem_put(mem_store *m, const uint8_t *digest, const uint8_t *blob, size_t len, double expires) {
    size_t cost = entry_cost(len);
    if (cost > m->max_bytes) return -1;
    mem_entry *old = *find_slot(m, digest);
    if (old) mem_remove(m, old);
    while (m->bytes + cost > m->max_bytes && m->tail) mem_remove(m, m->tail);
    mem_entry *e = malloc(sizeof *e + len);
    if (!e) return -1;
    memcpy(e->digest, digest, CV_RC_DIGEST);
    e->expires = expires;
    e->len = len;
    memcpy(e->blob, blob, len);
    mem_entry **p = &m->buckets[bucket_of(m, digest)];
    e->next_hash = *p;
    *p = e;
    lru_push(m, e);
    m->n_entries++;
    m->bytes += cost;
    mem_grow(m);
    return 0;
}

/* A copy of the entry's bytes (malloc'd), or NULL for a miss (an expired entry goes). */
static uint8_t *mem_get(mem_store *m, const uint8_t *digest, size_t *len) {
    mem_entry *e = *find_slot(m, digest);
    if (!e) return NULL;
    if (e->expires && cv_seconds() >= e->expires) {
        mem_remove(m, e);
        return NULL;
    }
    lru_unlink(m, e);
    lru_push(m, e);
    uint8_t *b = malloc(e->len);
    if (b) memcpy(b, e->blob, e->len);
    *len = e->len;
    return b;
}

/* ---- the cache ---- */

typedef struct store_job {
    struct store_job *next;
    char key[80];
    size_t len;
    uint8_t blob[];
} store_job;

#define WRITER_MAX_QUEUED 256

struct cv_rc {
    cv_rc_config cfg;
    pthread_mutex_t mu;        /* memory store; redis: the writer's queue */
    mem_store mem;
    cv_rc_redis *redis;
    pthread_cond_t cv;
    pthread_t writer;
    int writer_started, stopping;
    store_job *q_head, *q_tail;
    size_t n_queued;
    _Atomic uint64_t lookups, hits, stores, errors, redis_bytes;
    pthread_mutex_t log_mu;    /* the error log's throttle */
    double last_log;
    uint64_t errors_logged;
};

static void redis_key(const uint8_t *digest, char out[80]) {
    memcpy(out, "corvid:rc:", 10);
    for (int i = 0; i < CV_RC_DIGEST; i++) snprintf(out + 10 + 2 * i, 3, "%02x", digest[i]);
}

/* Counts every error; logs one line at most every LOG_EVERY_S seconds (a Redis that is
 * down fails every request), saying how many went unlogged since the last. */
#define LOG_EVERY_S 10.0

static void count_error(cv_rc *rc, const char *what, const cv_error *e) {
    uint64_t n = atomic_fetch_add(&rc->errors, 1) + 1;
    double now = cv_seconds();
    pthread_mutex_lock(&rc->log_mu);
    int log = rc->last_log == 0 || now - rc->last_log >= LOG_EVERY_S;
    uint64_t since = n - rc->errors_logged;
    if (log) {
        rc->last_log = now;
        rc->errors_logged = n;
    }
    pthread_mutex_unlock(&rc->log_mu);
    if (!log) return;
    char msg[64];
    snprintf(msg, sizeof msg, "response cache %s failed", what);
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "level", "warn", "msg", msg, "error", e->msg, "errors_since_last_line",
                          (json_int_t)since);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(o);
}

static void *writer_main(void *arg) {
    cv_rc *rc = arg;
    pthread_mutex_lock(&rc->mu);
    for (;;) {
        while (!rc->q_head && !rc->stopping) pthread_cond_wait(&rc->cv, &rc->mu);
        store_job *j = rc->q_head;
        if (!j) break;
        rc->q_head = j->next;
        if (!rc->q_head) rc->q_tail = NULL;
        rc->n_queued--;
        pthread_mutex_unlock(&rc->mu);
        cv_error err = {0};
        if (cv_rc_redis_set(rc->redis, j->key, j->blob, j->len, rc->cfg.ttl_s, &err) == CV_OK) {
            atomic_fetch_add(&rc->stores, 1);
            atomic_fetch_add(&rc->redis_bytes, j->len);
        } else {
            count_error(rc, "store", &err);
        }
        free(j);
        pthread_mutex_lock(&rc->mu);
    }
    pthread_mutex_unlock(&rc->mu);
    return NULL;
}

cv_status cv_rc_new(const cv_rc_config *cfg, cv_rc **out, cv_error *err) {
    *out = NULL;
    if (cfg->backend == CV_RC_OFF) return CV_OK;
    cv_rc *rc = calloc(1, sizeof *rc);
    if (!rc) return cv_errorf(err, CV_ENOMEM, "response cache: out of memory");
    rc->cfg = *cfg;
    rc->cfg.redis = NULL; /* the caller's string; rc_redis keeps its own copy */
    pthread_mutex_init(&rc->mu, NULL);
    pthread_mutex_init(&rc->log_mu, NULL);
    pthread_cond_init(&rc->cv, NULL);
    if (cfg->backend == CV_RC_MEMORY) {
        rc->mem.n_buckets = 1024;
        rc->mem.max_bytes = cfg->max_bytes;
        if (!(rc->mem.buckets = calloc(rc->mem.n_buckets, sizeof *rc->mem.buckets))) {
            cv_rc_free(rc);
            return cv_errorf(err, CV_ENOMEM, "response cache: out of memory");
        }
    } else {
        cv_status st = cv_rc_redis_new(cfg->redis ? cfg->redis : "", cfg->timeout_ms, &rc->redis, err);
        if (st != CV_OK) {
            cv_rc_free(rc);
            return st;
        }
        if (pthread_create(&rc->writer, NULL, writer_main, rc) != 0) {
            cv_rc_free(rc);
            return cv_errorf(err, CV_ENOMEM, "response cache: cannot start the Redis writer thread");
        }
        rc->writer_started = 1;
    }
    *out = rc;
    return CV_OK;
}

void cv_rc_free(cv_rc *rc) {
    if (!rc) return;
    if (rc->writer_started) {
        pthread_mutex_lock(&rc->mu);
        rc->stopping = 1;
        pthread_cond_signal(&rc->cv);
        pthread_mutex_unlock(&rc->mu);
        pthread_join(rc->writer, NULL); /* what was queued is written first */
    }
    cv_rc_redis_free(rc->redis);
    while (rc->mem.head) mem_remove(&rc->mem, rc->mem.head);
    free(rc->mem.buckets);
    pthread_cond_destroy(&rc->cv);
    pthread_mutex_destroy(&rc->log_mu);
    pthread_mutex_destroy(&rc->mu);
    free(rc);
}

int cv_rc_key_of(const cv_rc *rc, const cv_rc_query *q, cv_rc_key *key) {
    const cv_engine_request *er = q->er;
    const cv_sampler_params *sp = &er->sampling;
    int greedy = sp->temperature == 0;
    if (!rc || (!greedy && !q->explicit_seed) || sp->logprobs || sp->top_logprobs) return 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h || !EVP_DigestInit_ex(h, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(h);
        return 0;
    }
    h_str(h, "corvid response cache 1");
    h_str(h, q->version);
    h_str(h, rc->cfg.per_subject ? q->subject : "");
    h_bytes(h, er->prompt, sizeof *er->prompt * (size_t)er->n_prompt);
    h_f32(h, sp->temperature);
    h_u64(h, (uint64_t)(int64_t)sp->top_k);
    h_f32(h, sp->top_p);
    h_f32(h, sp->min_p);
    h_f32(h, sp->repeat_penalty);
    h_u64(h, (uint64_t)(int64_t)sp->repeat_last_n);
    h_f32(h, sp->presence_penalty);
    h_f32(h, sp->frequency_penalty);
    h_u64(h, greedy ? 0 : sp->seed); /* greedy ignores the seed: every greedy request shares */
    h_u64(h, (uint64_t)(int64_t)er->max_tokens);
    h_u64(h, (uint64_t)er->ignore_eos);
    h_u64(h, (uint64_t)er->render_special); /* control tokens as text: other chunks */
    h_u64(h, (uint64_t)er->n_stop);
    for (int32_t i = 0; i < er->n_stop; i++) h_str(h, er->stop[i]);
    h_str(h, er->grammar); /* constrained decoding: "" and NULL are both none */
    h_u64(h, q->guard_passages);
    h_u64(h, (uint64_t)q->guard_line_end);
    h_u64(h, (uint64_t)q->guard_check);
    int live;
    h_rag(h, q->rag, &live);
    unsigned n = 0;
    int ok = EVP_DigestFinal_ex(h, key->digest, &n) && n == CV_RC_DIGEST;
    EVP_MD_CTX_free(h);
    return ok && (!live || rc->cfg.live_sources);
}

int cv_rc_lookup(cv_rc *rc, const cv_rc_key *key, int32_t n_prompt, int32_t n_vocab, cv_rc_entry *out) {
    atomic_fetch_add(&rc->lookups, 1);
    uint8_t *blob = NULL;
    size_t len = 0;
    cv_error err = {0};
    if (rc->redis) {
        char k[80];
        redis_key(key->digest, k);
        if (cv_rc_redis_get(rc->redis, k, &blob, &len, &err) != CV_OK) {
            count_error(rc, "lookup", &err);
            return 0;
        }
    } else {
        pthread_mutex_lock(&rc->mu);
        blob = mem_get(&rc->mem, key->digest, &len);
        pthread_mutex_unlock(&rc->mu);
    }
    if (!blob) return 0;
    cv_status st = cv_rc_entry_decode(blob, len, key->digest, n_prompt, n_vocab, out, &err);
    free(blob);
    if (st != CV_OK) {
        count_error(rc, "lookup", &err);
        return 0;
    }
    atomic_fetch_add(&rc->hits, 1);
    return 1;
}

struct cv_rc_rec {
    cv_rc *rc;
    cv_rc_key key;
    cv_rc_writer w;
};

cv_rc_rec *cv_rc_rec_new(cv_rc *rc, const cv_rc_key *key) {
    cv_rc_rec *r = rc ? calloc(1, sizeof *r) : NULL;
    if (r) {
        r->rc = rc;
        r->key = *key;
    }
    return r;
}

void cv_rc_rec_chunk(cv_rc_rec *r, const char *text, size_t len, const int32_t *ids, int32_t n_ids) {
    if (r) cv_rc_writer_chunk(&r->w, text, len, ids, n_ids);
}

/* Queues a Redis store for the writer thread; 0 when queued. */
static int enqueue(cv_rc *rc, const uint8_t *digest, const uint8_t *blob, size_t len) {
    store_job *j = malloc(sizeof *j + len);
    if (!j) return -1;
    j->next = NULL;
    redis_key(digest, j->key);
    j->len = len;
    memcpy(j->blob, blob, len);
    pthread_mutex_lock(&rc->mu);
    int full = rc->n_queued >= WRITER_MAX_QUEUED;
    if (!full) {
        if (rc->q_tail) rc->q_tail->next = j;
        else rc->q_head = j;
        rc->q_tail = j;
        rc->n_queued++;
        pthread_cond_signal(&rc->cv);
    }
    pthread_mutex_unlock(&rc->mu);
    if (full) free(j);
    return full ? -1 : 0;
}

void cv_rc_rec_final(cv_rc_rec *r, const cv_engine_final *f) {
    if (!r) return;
    cv_rc *rc = r->rc;
    size_t len = 0;
    uint8_t *blob = cv_rc_writer_finish(&r->w, r->key.digest, f, &len);
    if (blob && rc->redis) {
        if (enqueue(rc, r->key.digest, blob, len) != 0)
            count_error(rc, "store", &(cv_error){CV_EBUSY, "the Redis writer's queue is full"});
    } else if (blob) {
        pthread_mutex_lock(&rc->mu);
        int st = mem_put(&rc->mem, r->key.digest, blob, len, rc->cfg.ttl_s ? cv_seconds() + rc->cfg.ttl_s : 0);
        pthread_mutex_unlock(&rc->mu);
        if (st == 0) atomic_fetch_add(&rc->stores, 1);
    }
    free(blob);
    free(r);
}

void cv_rc_rec_free(cv_rc_rec *r) {
    if (!r) return;
    cv_rc_writer_free(&r->w);
    free(r);
}

void cv_rc_stats_get(cv_rc *rc, cv_rc_stats *out) {
    memset(out, 0, sizeof *out);
    if (!rc) return;
    out->backend = rc->cfg.backend;
    out->lookups = atomic_load(&rc->lookups);
    out->hits = atomic_load(&rc->hits);
    out->stores = atomic_load(&rc->stores);
    out->errors = atomic_load(&rc->errors);
    pthread_mutex_lock(&rc->mu);
    out->bytes = rc->redis ? atomic_load(&rc->redis_bytes) : rc->mem.bytes;
    out->entries = rc->mem.n_entries;
    pthread_mutex_unlock(&rc->mu);
}

char *cv_rc_metrics(cv_rc *rc) {
    if (!rc) return strdup("");
    cv_rc_stats s;
    cv_rc_stats_get(rc, &s);
    const char *b = cv_rc_backend_name(s.backend);
    char *out = NULL;
    if (asprintf(&out,
                 "# HELP corvid_response_cache_lookups_total Response-cache lookups of deterministic requests.\n"
                 "# TYPE corvid_response_cache_lookups_total counter\n"
                 "corvid_response_cache_lookups_total{backend=\"%s\"} %llu\n"
                 "# HELP corvid_response_cache_hits_total Lookups answered from the response cache.\n"
                 "# TYPE corvid_response_cache_hits_total counter\n"
                 "corvid_response_cache_hits_total{backend=\"%s\"} %llu\n"
                 "# HELP corvid_response_cache_stores_total Answers stored in the response cache.\n"
                 "# TYPE corvid_response_cache_stores_total counter\n"
                 "corvid_response_cache_stores_total{backend=\"%s\"} %llu\n"
                 "# HELP corvid_response_cache_errors_total Backend failures, timeouts and rejected entries "
                 "(each one a miss, never a failed request).\n"
                 "# TYPE corvid_response_cache_errors_total counter\n"
                 "corvid_response_cache_errors_total{backend=\"%s\"} %llu\n"
                 "# HELP corvid_response_cache_bytes Memory: bytes held now; redis: bytes written.\n"
                 "# TYPE corvid_response_cache_bytes gauge\n"
                 "corvid_response_cache_bytes{backend=\"%s\"} %llu\n"
                 "# HELP corvid_response_cache_entries Entries held in memory.\n"
                 "# TYPE corvid_response_cache_entries gauge\n"
                 "corvid_response_cache_entries{backend=\"%s\"} %llu\n",
                 b, (unsigned long long)s.lookups, b, (unsigned long long)s.hits, b, (unsigned long long)s.stores, b,
                 (unsigned long long)s.errors, b, (unsigned long long)s.bytes, b,
                 (unsigned long long)s.entries) < 0)
        return NULL;
    return out;
}
