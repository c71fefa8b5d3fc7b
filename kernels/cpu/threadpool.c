#include "threadpool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
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
/* A thread waiting for the others inside a task spins this long before it sleeps: about
 * the imbalance of one decode matmul's last items. */
#define WAIT_SPINS 4096

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
    _Atomic uint32_t pending; /* MODE_RUN: workers still inside the task */
    _Atomic uint64_t ticket;
    _Atomic uint32_t done;    /* MODE_FOR: items finished */
    _Atomic int sleepers;
    _Atomic int stop;
    _Atomic int caller_parked; /* the caller sleeps on done or pending */

    _Atomic uint32_t bar_count;
    _Atomic uint32_t bar_gen;
    _Atomic int bar_parked;    /* threads asleep on bar_gen */

    int profile;          /* measure the caller's waits (cv_threadpool_profile) */
    double wait_s;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Waiting inside a task (the caller for the last items, a barrier for the last thread):
 * spin a little, then sleep on a futex until whoever completes the wait wakes us.
 * Never sched_yield(): on a shared machine a yield hands the core to any runnable task
 * (even a SCHED_IDLE one), which then keeps it until the next scheduler tick, for every
 * barrier of a decode step; a sleeper is woken (and preempts such a task) the moment
 * the wait ends, and the core it leaves idle can pull over a thread of ours that was
 * preempted elsewhere.
 *
 * Handshake (all seq_cst): the waiter counts itself in *parked, re-reads the word, and
 * sleeps only while it still holds the value it read; the completer changes the word,
 * then reads *parked and wakes. Either the waiter sees the new value, or the completer
 * sees the waiter counted (and FUTEX_WAIT returns at once if the word already moved). */
static void futex_wait(_Atomic uint32_t *word, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Returns once *word != val. */
static void await_change(_Atomic uint32_t *word, uint32_t val, _Atomic int *parked) {
    for (int spins = 0; spins < WAIT_SPINS; spins++) {
        if (atomic_load(word) != val) return;
        cpu_relax();
    }
    atomic_fetch_add(parked, 1);
    while (atomic_load(word) == val) futex_wait(word, val);
    atomic_fetch_sub(parked, 1);
}

/* Returns once *word == target (the word only moves towards it). */
static void await_value(_Atomic uint32_t *word, uint32_t target, _Atomic int *parked) {
    uint32_t v;
    while ((v = atomic_load(word)) != target) await_change(word, v, parked);
}

static void wake_parked(_Atomic uint32_t *word, _Atomic int *parked) {
    if (atomic_load(parked) > 0) futex_wake_all(word);
}

/* Claims the next item of the current MODE_FOR task, and its item count into *n; -1
 * when there is none. */
static int64_t claim(cv_threadpool *pool, uint32_t *n) {
    uint64_t t = atomic_load(&pool->ticket);
    while ((t & 0xFFFFFFFFu) < (t >> 32)) {
        if (atomic_compare_exchange_weak(&pool->ticket, &t, t + 1)) {
            *n = (uint32_t)(t >> 32);
            return (int64_t)(t & 0xFFFFFFFFu);
        }
    }
    return -1;
}

static void do_items(cv_threadpool *pool, int ith) {
    int64_t item;
    uint32_t n;
    while ((item = claim(pool, &n)) >= 0) {
        cv_item_fn fn = (cv_item_fn)atomic_load(&pool->fn);
        fn(atomic_load(&pool->ctx), item, ith);
        /* The last item's finisher wakes a caller asleep in cv_threadpool_for. */
        if (atomic_fetch_add(&pool->done, 1) + 1 == n) wake_parked(&pool->done, &pool->caller_parked);
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
            if (atomic_fetch_sub(&pool->pending, 1) == 1) wake_parked(&pool->pending, &pool->caller_parked);
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
    struct timespec t0, t1;
    if (pool->profile) clock_gettime(CLOCK_MONOTONIC, &t0);
    await_value(&pool->done, (uint32_t)n_items, &pool->caller_parked);
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
    atomic_store(&pool->pending, (uint32_t)pool->n - 1);
    publish(pool, MODE_RUN, (void *)fn, ctx);
    fn(ctx, 0, pool->n);
    await_value(&pool->pending, 0, &pool->caller_parked);
}

void cv_threadpool_barrier(cv_threadpool *pool) {
    if (pool->n == 1) return;
    uint32_t g = atomic_load(&pool->bar_gen);
    if (atomic_fetch_add(&pool->bar_count, 1) == (uint32_t)pool->n - 1) {
        atomic_store(&pool->bar_count, 0);
        atomic_fetch_add(&pool->bar_gen, 1);
        wake_parked(&pool->bar_gen, &pool->bar_parked);
        return;
    }
    await_change(&pool->bar_gen, g, &pool->bar_parked);
}

void cv_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t units = (n + align - 1) / align;
    int64_t base = units / nth, rem = units % nth;
    int64_t u0 = ith * base + (ith < rem ? ith : rem);
    int64_t u1 = u0 + base + (ith < rem ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}
