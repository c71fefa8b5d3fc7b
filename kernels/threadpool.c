#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* About 0.3 ms of pause instructions: longer than the gap between two ops of a decode
 * step, short enough not to burn a shared core when the engine goes idle. */
#define SPIN_LIMIT 8192

typedef struct worker {
    cv_threadpool *pool;
    int ith;
} worker;

struct cv_threadpool {
    int n;
    pthread_t *threads;   /* n - 1 workers; the caller is thread 0 */
    worker *workers;
    int started;          /* workers successfully created */

    cv_task_fn fn;
    void *ctx;
    _Atomic unsigned gen;     /* bumped once per task (and to stop) */
    _Atomic int pending;      /* workers still inside the current task */
    _Atomic int sleepers;
    _Atomic int stop;

    _Atomic int bar_count;
    _Atomic unsigned bar_gen;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Spins, then yields: the machine may have fewer free cores than the pool has threads. */
static void wait_relax(unsigned *spins) {
    if (++*spins < SPIN_LIMIT) cpu_relax();
    else sched_yield();
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cv_threadpool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g, spins = 0;
        while ((g = atomic_load(&pool->gen)) == seen) {
            if (++spins < SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            /* Dekker-style handshake with run(): we announce ourselves as a sleeper and
             * then re-check gen; run() bumps gen and then checks for sleepers. */
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->gen) == seen) pthread_cond_wait(&pool->cv, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&pool->stop)) break;
        pool->fn(pool->ctx, w->ith, pool->n);
        atomic_fetch_sub(&pool->pending, 1);
    }
    return NULL;
}

static void wake_all(cv_threadpool *pool) {
    atomic_fetch_add(&pool->gen, 1);
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
    wake_all(pool);
    for (int i = 0; i < pool->started; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->threads);
    free(pool->workers);
    free(pool);
}

int cv_threadpool_size(const cv_threadpool *pool) { return pool->n; }

void cv_threadpool_run(cv_threadpool *pool, cv_task_fn fn, void *ctx) {
    if (pool->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store(&pool->pending, pool->n - 1);
    wake_all(pool);
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
