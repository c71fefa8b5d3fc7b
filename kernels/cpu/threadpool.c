#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* A few hundred microseconds of pause instructions: longer than the gap between two
 * ops of a decode step, short enough not to burn a shared core when the engine idles. */
#define SPIN_LIMIT 8192

enum { MODE_RUN, MODE_FOR };

typedef struct worker {
    cv_threadpool *pool;
    int ith;
} worker;

/* Dispatch protocol. The task description (mode, fn, ctx) is published seqlock-style:
 * the caller makes gen odd, writes it, makes gen even; a worker reads it between two
 * equal even readings of gen.
 *  - MODE_RUN: the caller waits until every worker has run the task (pending == 0),
 *    so no new task can be published under a worker that has not seen this one.
 *  - MODE_FOR: items are claimed by compare-and-swap on `ticket` = (n_items << 32 |
 *    next item); a claim succeeds only on the current task's ticket, and its fn/ctx
 *    are read after the claim, when they cannot change (the task is not done while
 *    the claimed item is not). A worker that wakes late finds the ticket exhausted and
 *    goes back to waiting: the caller never waits for it. */
struct cv_threadpool {
    int n;
    pthread_t *threads;   /* n - 1 workers; the caller is thread 0 */
    worker *workers;
    int started;          /* workers successfully created */

    _Atomic unsigned gen;
    _Atomic int mode;
    _Atomic(void *) fn;   /* cv_task_fn or cv_item_fn, by mode */
    _Atomic(void *) ctx;
    _Atomic int pending;  /* MODE_RUN: workers still inside the task */
    _Atomic uint64_t ticket;
    _Atomic int64_t done; /* MODE_FOR: items finished */
    _Atomic int sleepers;
    _Atomic int stop;

    _Atomic int bar_count;
    _Atomic unsigned bar_gen;

    int profile;          /* measure the caller's waits (cv_threadpool_profile) */
    double wait_s;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Spins, then yields: the machine may have fewer free cores than the pool has threads. */
static void wait_relax(unsigned *spins) {
    if (++*spins < SPIN_LIMIT) cpu_relax();
    else sched_yield();
}

/* Claims the next item of the current MODE_FOR task; -1 when there is none. */
static int64_t claim(cv_threadpool *pool) {
    uint64_t t = atomic_load(&pool->ticket);
    while ((t & 0xFFFFFFFFu) < (t >> 32)) {
        if (atomic_compare_exchange_weak(&pool->ticket, &t, t + 1)) return (int64_t)(t & 0xFFFFFFFFu);
    }
    return -1;
}

static void do_items(cv_threadpool *pool, int ith) {
    int64_t item;
    while ((item = claim(pool)) >= 0) {
        cv_item_fn fn = (cv_item_fn)atomic_load(&pool->fn);
        fn(atomic_load(&pool->ctx), item, ith);
        atomic_fetch_add(&pool->done, 1);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cv_threadpool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g, spins = 0;
        while ((g = atomic_load(&pool->gen)) == seen || (g & 1)) {
            if (++spins < SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            /* Dekker-style handshake with publish(): we count ourselves as a sleeper
             * and then re-check gen; publish() bumps gen and then checks for sleepers. */
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->gen) == seen) pthread_cond_wait(&pool->cv, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        int mode = atomic_load(&pool->mode);
        void *fn = atomic_load(&pool->fn), *ctx = atomic_load(&pool->ctx);
        if (atomic_load(&pool->gen) != g) continue; /* torn read: a newer task came */
        seen = g;
        if (atomic_load(&pool->stop)) break;
        if (mode == MODE_FOR) {
            do_items(pool, w->ith);
        } else {
            ((cv_task_fn)fn)(ctx, w->ith, pool->n);
            atomic_fetch_sub(&pool->pending, 1);
        }
    }
    return NULL;
}

static void publish(cv_threadpool *pool, int mode, void *fn, void *ctx) {
    atomic_fetch_add(&pool->gen, 1); /* odd: being written */
    atomic_store(&pool->mode, mode);
    atomic_store(&pool->fn, fn);
    atomic_store(&pool->ctx, ctx);
    atomic_fetch_add(&pool->gen, 1); /* even: published */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
    }
}

cv_status cv_threadpool_create(int n_threads, cv_threadpool **out, cv_error *err) {
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 1024)
        return cv_errorf(err, CV_ERANGE, "thread pool: %d threads requested, at most 1024", n_threads);
    cv_threadpool *pool = calloc(1, sizeof *pool);
    if (!pool) return cv_errorf(err, CV_ENOMEM, "thread pool: out of memory");
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    if (n_threads > 1) {
        pool->threads = calloc((size_t)n_threads - 1, sizeof *pool->threads);
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->threads || !pool->workers) {
            cv_errorf(err, CV_ENOMEM, "thread pool: out of memory for %d threads", n_threads);
            goto err;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            pool->workers[i] = (worker){pool, i + 1};
            int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]);
            if (rc != 0) {
                cv_errorf(err, CV_EINTERNAL, "thread pool: creating thread %d of %d: %s", i + 1,
                          n_threads, strerror(rc));
                goto err;
            }
            pool->started++;
        }
    }
    *out = pool;
    return CV_OK;
err:
    cv_threadpool_destroy(pool);
    return err ? err->code : CV_EINTERNAL;
}

void cv_threadpool_destroy(cv_threadpool *pool) {
    if (!pool) return;
    atomic_store(&pool->stop, 1);
    publish(pool, MODE_RUN, NULL, NULL);
    for (int i = 0; i < pool->started; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

int cv_threadpool_size(const cv_threadpool *pool) { return pool->n; }

void cv_threadpool_for(cv_threadpool *pool, cv_item_fn fn, void *ctx, int64_t n_items) {
    if (n_items <= 0) return;
    if (pool->n == 1 || n_items == 1) {
        for (int64_t i = 0; i < n_items; i++) fn(ctx, i, 0);
        return;
    }
    /* fn and ctx are in place before the ticket makes any item claimable. */
    atomic_store(&pool->fn, (void *)fn);
    atomic_store(&pool->ctx, ctx);
    atomic_store(&pool->done, 0);
    atomic_store(&pool->ticket, (uint64_t)n_items << 32);
    publish(pool, MODE_FOR, (void *)fn, ctx);
    do_items(pool, 0);
    unsigned spins = 0;
    struct timespec t0, t1;
    if (pool->profile) clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&pool->done) < n_items) wait_relax(&spins);
    if (pool->profile) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pool->wait_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
}

void cv_threadpool_profile(cv_threadpool *pool, int on) { pool->profile = on; }

double cv_threadpool_wait_seconds(const cv_threadpool *pool) { return pool->wait_s; }

void cv_threadpool_run(cv_threadpool *pool, cv_task_fn fn, void *ctx) {
    if (pool->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    atomic_store(&pool->pending, pool->n - 1);
    publish(pool, MODE_RUN, (void *)fn, ctx);
    fn(ctx, 0, pool->n);
    unsigned spins = 0;
    while (atomic_load(&pool->pending) > 0) wait_relax(&spins);
}

void cv_threadpool_barrier(cv_threadpool *pool) {
    if (pool->n == 1) return;
    unsigned g = atomic_load(&pool->bar_gen);
    if (atomic_fetch_add(&pool->bar_count, 1) == pool->n - 1) {
        atomic_store(&pool->bar_count, 0);
        atomic_fetch_add(&pool->bar_gen, 1);
        return;
    }
    unsigned spins = 0;
    while (atomic_load(&pool->bar_gen) == g) wait_relax(&spins);
}

void cv_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t units = (n + align - 1) / align;
    int64_t base = units / nth, rem = units % nth;
    int64_t u0 = ith * base + (ith < rem ? ith : rem);
    int64_t u1 = u0 + base + (ith < rem ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}
