/* tape_cache: a small least-recently-used map from op tapes to opaque handles.
 *
 * A backend that records a step as an op tape (op_tape.h) and turns it into something
 * replayable (a CUDA graph executable) keeps the results here, keyed by the whole tape:
 * find returns a handle only for a tape equal, op for op and byte for byte, to the one
 * it was put with, so a replay can never run a step other than the recorded one. The
 * cache copies the tapes it keeps, holds at most `cap` entries, and hands every handle
 * it drops (evicted, cleared) to the release function it was made with.
 */
#ifndef CV_TAPE_CACHE_H
#define CV_TAPE_CACHE_H

#include <stdint.h>

#include "op_tape.h"

#define CV_TAPE_CACHE_MAX 64

typedef void (*cv_tape_release)(void *ctx, void *handle);

typedef struct cv_tape_cache_entry {
    cv_op_tape tape;
    void *handle;
    uint64_t last_use;
} cv_tape_cache_entry;

typedef struct cv_tape_cache {
    cv_tape_cache_entry e[CV_TAPE_CACHE_MAX];
    int n, cap;
    uint64_t clock;
    cv_tape_release release;
    void *ctx;
} cv_tape_cache;

/* cap is clamped to 1..CV_TAPE_CACHE_MAX. */
void cv_tape_cache_init(cv_tape_cache *c, int cap, cv_tape_release release, void *ctx);
/* The handle put with a tape equal to t (now the most recently used), or NULL. */
void *cv_tape_cache_find(cv_tape_cache *c, const cv_op_tape *t);
/* Keeps a copy of t with handle, first dropping the least recently used entry when the
 * cache is full. The tape must not be in the cache yet. CV_ENOMEM: nothing changed, and
 * the handle is still the caller's. */
cv_status cv_tape_cache_put(cv_tape_cache *c, const cv_op_tape *t, void *handle, cv_error *err);
/* Releases every handle and empties the cache (it stays usable). */
void cv_tape_cache_clear(cv_tape_cache *c);
int cv_tape_cache_size(const cv_tape_cache *c);

#endif
