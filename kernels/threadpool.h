/* threadpool: a persistent pool of worker threads that run one task at a time.
 *
 * cv_threadpool_run(pool, fn, ctx) calls fn(ctx, i, n) once on each of the pool's n
 * threads (the caller is thread 0) and returns when all calls have returned. Workers
 * spin for a short while after a task, so the next op of a decode step starts at once,
 * then sleep on a condition variable. Nothing is allocated after create. Tasks split
 * their work by (i, n) and may call cv_threadpool_barrier to separate two phases.
 * One caller at a time: a pool is driven by one thread (its backend's).
 */
#ifndef CV_THREADPOOL_H
#define CV_THREADPOOL_H

#include <stdint.h>

#include "cv_error.h"

typedef struct cv_threadpool cv_threadpool;
typedef void (*cv_task_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means one per online CPU. */
cv_status cv_threadpool_create(int n_threads, cv_threadpool **out, cv_error *err);
void cv_threadpool_destroy(cv_threadpool *pool);
int cv_threadpool_size(const cv_threadpool *pool);

void cv_threadpool_run(cv_threadpool *pool, cv_task_fn fn, void *ctx);
/* Called by every thread of a running task: returns once all of them have reached it. */
void cv_threadpool_barrier(cv_threadpool *pool);

/* Splits [0, n) into nth parts: part ith is [*lo, *hi), sizes differ by at most one
 * `align` unit (every bound but n is a multiple of align). */
void cv_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi);

#endif
