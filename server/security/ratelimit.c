#include "ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NONE (-1)

typedef struct bucket {
    char key[CV_RATELIMIT_KEY_MAX + 1];
    uint64_t hash;
    double tokens;
    uint64_t last_ns;
    int32_t chain;             /* next in the hash chain */
    int32_t newer, older;      /* LRU list */
} bucket;

struct cv_ratelimit {
    pthread_mutex_t mu;
    cv_ratelimit_config cfg;
    bucket *b;
    size_t used;               /* b[0..used) have been handed out */
    int32_t *heads;            /* hash chains */
    uint64_t mask;             /* heads size - 1 */
    uint64_t seed;             /* keeps chain placement unpredictable to clients */
    int32_t newest, oldest;
};

static uint64_t mono_ns(void *ctx) {
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

cv_status cv_ratelimit_new(const cv_ratelimit_config *cfg, cv_ratelimit **out, cv_error *err) {
    if (!(cfg->per_second > 0 && cfg->per_second <= 1e9))
        return cv_errorf(err, CV_ERANGE, "rate limit: per_second %g must be in (0, 1e9]",
                         cfg->per_second);
    if (!(cfg->burst >= 1 && cfg->burst <= 1e9))
        return cv_errorf(err, CV_ERANGE, "rate limit: burst %g must be in [1, 1e9]", cfg->burst);
    size_t cap = cfg->max_keys ? cfg->max_keys : 10000;
    if (cap > 1000000) /* about 350 bytes each */
        return cv_errorf(err, CV_ERANGE, "rate limit: max_keys %zu is above 1000000", cap);
    size_t heads = 1;
    while (heads < 2 * cap) heads <<= 1;
    cv_ratelimit *r = calloc(1, sizeof *r);
    if (!r) return cv_errorf(err, CV_ENOMEM, "rate limit: out of memory");
    r->cfg = *cfg;
    r->cfg.max_keys = cap;
    if (!r->cfg.now) r->cfg.now = mono_ns;
    r->b = malloc(cap * sizeof *r->b);
    r->heads = malloc(heads * sizeof *r->heads);
    if (!r->b || !r->heads) {
        cv_ratelimit_free(r);
        return cv_errorf(err, CV_ENOMEM, "rate limit: out of memory for %zu keys", cap);
    }
    for (size_t i = 0; i < heads; i++) r->heads[i] = NONE;
    r->mask = heads - 1;
    if (getrandom(&r->seed, sizeof r->seed, 0) != (ssize_t)sizeof r->seed)
        r->seed = mono_ns(NULL) ^ (uint64_t)(uintptr_t)r;
    r->newest = r->oldest = NONE;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return CV_OK;
}

void cv_ratelimit_free(cv_ratelimit *r) {
    if (!r) return;
    if (r->b && r->heads) pthread_mutex_destroy(&r->mu);
    free(r->b);
    free(r->heads);
    free(r);
}

/* FNV-1a over a seeded basis; keys are cut like they are stored. */
static uint64_t hash_key(uint64_t seed, const char *k, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

static void lru_unlink(cv_ratelimit *r, int32_t i) {
    bucket *b = &r->b[i];
    if (b->newer != NONE) r->b[b->newer].older = b->older;
    else r->newest = b->older;
    if (b->older != NONE) r->b[b->older].newer = b->newer;
    else r->oldest = b->newer;
}

static void lru_push_newest(cv_ratelimit *r, int32_t i) {
    r->b[i].newer = NONE;
    r->b[i].older = r->newest;
    if (r->newest != NONE) r->b[r->newest].newer = i;
    r->newest = i;
    if (r->oldest == NONE) r->oldest = i;
}

static void chain_remove(cv_ratelimit *r, int32_t i) {
    int32_t *p = &r->heads[r->b[i].hash & r->mask];
    while (*p != i) p = &r->b[*p].chain;
    *p = r->b[i].chain;
}

/* The bucket for key, created full (evicting the oldest if the table is full). */
static bucket *lookup(cv_ratelimit *r, const char *key, uint64_t now) {
    size_t n = strnlen(key, CV_RATELIMIT_KEY_MAX);
    uint64_t h = hash_key(r->seed, key, n);
    for (int32_t i = r->heads[h & r->mask]; i != NONE; i = r->b[i].chain) {
        bucket *b = &r->b[i];
        if (b->hash == h && strncmp(b->key, key, n) == 0 && b->key[n] == 0) {
            lru_unlink(r, i);
            lru_push_newest(r, i);
            return b;
        }
    }
    int32_t i;
    if (r->used < r->cfg.max_keys) {
        i = (int32_t)r->used++;
    } else {
        i = r->oldest;
        lru_unlink(r, i);
        chain_remove(r, i);
    }
    bucket *b = &r->b[i];
    memcpy(b->key, key, n);
    b->key[n] = 0;
    b->hash = h;
    b->tokens = r->cfg.burst;
    b->last_ns = now;
    b->chain = r->heads[h & r->mask];
    r->heads[h & r->mask] = i;
    lru_push_newest(r, i);
    return b;
}

int cv_ratelimit_take(cv_ratelimit *r, const char *key, double *retry_after_s) {
    pthread_mutex_lock(&r->mu);
    uint64_t now = r->cfg.now(r->cfg.clock_ctx);
    bucket *b = lookup(r, key, now);
    if (now > b->last_ns) {
        b->tokens += (double)(now - b->last_ns) * 1e-9 * r->cfg.per_second;
        if (b->tokens > r->cfg.burst) b->tokens = r->cfg.burst;
        b->last_ns = now;
    }
    int ok = b->tokens >= 1.0 - 1e-9; /* refills are sums of doubles: forgive rounding */
    if (ok) b->tokens -= 1.0;
    else if (retry_after_s) *retry_after_s = (1.0 - b->tokens) / r->cfg.per_second;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

size_t cv_ratelimit_size(cv_ratelimit *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->used;
    pthread_mutex_unlock(&r->mu);
    return n;
}
