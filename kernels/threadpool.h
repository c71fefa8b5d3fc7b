/* threadpool: a persistent pool of worker threads that run one task at a time.
 *
 * Two ways to hand out work, both returning when all of it is done:
 *  - cv_threadpool_for(pool, fn, ctx, n): items 0..n-1 are claimed one at a time by
 *    whichever threads are running (the caller included), fn(ctx, item, ith) once per
 *    item. It never waits for a thread that has not started: on a machine with fewer
 *    free cores than threads the caller simply does more of the items. ith (0 for the
 *    caller) lets an item use per-thread scratch; no two threads share an ith.
 *  - cv_threadpool_run(pool, fn, ctx): fn(ctx, i, n) once on each of the n threads,
 *    for work split by (i, n); tasks may call cv_threadpool_barrier between phases.
 * Workers spin for a short while after a task, so the next op of a decode step starts
 * at once, then sleep on a condition variable. Nothing is allocated after create. One
 * caller at a time: a pool is driven by one thread (its backend's).
 */
#ifndef CV_THREADPOOL_H
#define CV_THREADPOOL_H

#include <stdint.h>

#include "cv_error.h"

typedef struct cv_threadpool cv_threadpool;
typedef void (*cv_task_fn)(void *ctx, int ith, int nth);
typedef void (*cv_item_fn)(void *ctx, int64_t item, int ith);

/* Most items one cv_threadpool_for call takes. */
#define CV_THREADPOOL_MAX_ITEMS ((int64_t)1 << 31)

/* n_threads <= 0 means one per online CPU. */
cv_status cv_threadpool_create(int n_threads, cv_threadpool **out, cv_error *err);
void cv_threadpool_destroy(cv_threadpool *pool);
int cv_threadpool_size(const cv_threadpool *pool);

void cv_threadpool_for(cv_threadpool *pool, cv_item_fn fn, void *ctx, int64_t n_items);

void cv_threadpool_run(cv_threadpool *pool, cv_task_fn fn, void *ctx);
/* Called by every thread of a running cv_threadpool_run task: returns once all of them
 * have reached it. */
void cv_threadpool_barrier(cv_threadpool *pool);

/* With on, cv_threadpool_for sums the seconds its caller waits for the other threads
 * after running out of items (their imbalance and wake-up, read by the profile). */
void cv_threadpool_profile(cv_threadpool *pool, int on);
double cv_threadpool_wait_seconds(const cv_threadpool *pool);

/* Splits [0, n) into nth parts: part ith is [*lo, *hi), sizes differ by at most one
 * `align` unit (every bound but n is a multiple of align). */
void cv_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi);

#endif
