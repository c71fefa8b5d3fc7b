/* request_pool: a few threads that prepare requests (tokenizing, chat-template
 * rendering) so that the completion-queue thread never does work that grows with a
 * request's size: health checks, Admin calls and the sends of running streams are
 * answered while a multi-megabyte prompt is tokenized.
 *
 * Jobs come in two classes by the caller's measure of their work (cost, e.g. prompt
 * bytes): small jobs are taken first, and with two or more workers, worker 0 takes only
 * small ones, so a short request waits behind short ones only, never behind a
 * multi-megabyte prompt. The workers that take large jobs (cost >= large_cost) run at
 * nice +nice: preparing a new long prompt yields the CPU to the engine's decoding of
 * running streams. Each class waits in a FIFO of at most max_queued jobs; past that,
 * submit fails at once with CV_EBUSY and the job does not run (the caller answers
 * RESOURCE_EXHAUSTED).
 *
 * Every submitted job runs exactly once, on a worker: free runs what is still queued,
 * then joins (submit must not race with it). A job that no longer matters (its client went away)
 * is for the job itself to notice: the pool does not cancel.
 */
#ifndef CV_REQUEST_POOL_H
#define CV_REQUEST_POOL_H

#include <stddef.h>

#include "cv_error.h"

typedef struct cv_request_pool cv_request_pool;
typedef void (*cv_request_job_fn)(void *user);

typedef struct cv_request_pool_config {
    int threads;       /* workers, >= 1 */
    int max_queued;    /* jobs waiting per class, >= 1 */
    size_t large_cost; /* a job of at least this cost is large */
    int nice;          /* added to the niceness of the workers that take large jobs */
} cv_request_pool_config;

cv_status cv_request_pool_new(const cv_request_pool_config *cfg, cv_request_pool **out, cv_error *err);
/* Queues fn(user); CV_EBUSY (the message says which queue and its bound) when full,
 * CV_ENOMEM; fn runs iff this returns CV_OK. Thread-safe. */
cv_status cv_request_pool_submit(cv_request_pool *p, cv_request_job_fn fn, void *user, size_t cost,
                                 cv_error *err);
/* Jobs waiting (both classes); the unit test watches the queue with it. */
int cv_request_pool_queued(cv_request_pool *p);
/* Runs what is queued, then joins the workers. NULL is fine. */
void cv_request_pool_free(cv_request_pool *p);

#endif
