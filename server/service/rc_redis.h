/* rc_redis: the response cache's Redis backend (response_cache.h): GET and SET EX of
 * one key over hiredis, each call within a deadline.
 *
 * A call connects (non-blocking connect bounded by the deadline) or reuses an idle
 * connection, writes with the socket's send timeout set to what is left, and polls
 * for the reply until the deadline: a Redis that is down, refuses, or accepts and
 * never answers costs one deadline and an error, never more. A connection that failed
 * or timed out is closed (its reply might still arrive); healthy ones are kept for
 * the next call, a few at most. Safe to call from many threads.
 */
#ifndef CV_RC_REDIS_H
#define CV_RC_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_rc_redis cv_rc_redis;

/* addr: "HOST:PORT" (checked here, nothing is connected yet). */
cv_status cv_rc_redis_new(const char *addr, unsigned timeout_ms, cv_rc_redis **out, cv_error *err);
/* CV_OK with *val malloc'd (*val NULL: no such key), else CV_ETIMEOUT / CV_EUNAVAILABLE
 * / CV_EIO with the reason. */
cv_status cv_rc_redis_get(cv_rc_redis *r, const char *key, uint8_t **val, size_t *len, cv_error *err);
/* SET key val EX ttl_s (ttl_s 0: no expiry). */
cv_status cv_rc_redis_set(cv_rc_redis *r, const char *key, const uint8_t *val, size_t len, unsigned ttl_s,
                          cv_error *err);
void cv_rc_redis_free(cv_rc_redis *r);

#endif
