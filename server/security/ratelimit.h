/* ratelimit: a token bucket per key (a JWT subject, or a client IP when there is none).
 *
 * Each key's bucket holds up to `burst` tokens and refills at `per_second`; a call
 * takes one token or is refused with the time until the next one, for the
 * RESOURCE_EXHAUSTED message. Memory is bounded: at most max_keys buckets live in one
 * fixed table; a new key beyond that evicts the least recently used one (a key idle
 * for burst/per_second seconds has a full bucket, so evicting it loses nothing; a
 * busier victim restarts with a full bucket, the price of the bound). Keys longer
 * than CV_RATELIMIT_KEY_MAX bytes are cut to that length. Thread-safe (one mutex).
 */
#ifndef CV_RATELIMIT_H
#define CV_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

#define CV_RATELIMIT_KEY_MAX 320 /* room for "sub:" + a 255-byte JWT subject */

/* Monotonic time in nanoseconds. */
typedef uint64_t (*cv_ratelimit_clock)(void *ctx);

typedef struct cv_ratelimit_config {
    double per_second;        /* refill rate, > 0 */
    double burst;             /* bucket size, >= 1 */
    size_t max_keys;          /* 0: 10000 */
    cv_ratelimit_clock now;   /* NULL: CLOCK_MONOTONIC */
    void *clock_ctx;
} cv_ratelimit_config;

typedef struct cv_ratelimit cv_ratelimit;

cv_status cv_ratelimit_new(const cv_ratelimit_config *cfg, cv_ratelimit **out, cv_error *err);
void cv_ratelimit_free(cv_ratelimit *r);
/* 1: a token was taken. 0: the bucket is empty; *retry_after_s (may be NULL) gets
 * the seconds until it holds a whole token again. */
int cv_ratelimit_take(cv_ratelimit *r, const char *key, double *retry_after_s);
/* Buckets currently held (at most max_keys). */
size_t cv_ratelimit_size(cv_ratelimit *r);

#endif
