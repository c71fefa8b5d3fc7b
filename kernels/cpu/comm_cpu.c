#include "comm_cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Ranks reach a reduction within microseconds of each other when each has a core: a
 * waiter pauses for a while, then sleeps, so that on a machine with fewer free cores
 * than ranks the rank still computing gets the core. How long it pauses adapts: a wait
 * that ended in sleep halves the next spin (the ranks are sharing cores: spinning only
 * delays the others), one that ended while spinning doubles it, within these bounds. */
#define SPIN_MIN 64
#define SPIN_MAX 16384

/* Slices are whole cache lines of floats, so two ranks never write one line. */
#define SLICE_ALIGN 16

typedef struct cpu_comm {
    cv_comm base;
    float **bufs;            /* published by each rank before the first barrier */
    int64_t *ns;
    _Atomic int bar_count;
    _Atomic unsigned bar_gen;
    _Atomic int sleepers;    /* ranks blocked on cv (or about to be) */
    _Atomic unsigned spin;   /* pauses before sleeping, SPIN_MIN..SPIN_MAX */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} cpu_comm;

/* Reusable: the last rank to arrive resets the count before it opens the barrier by
 * moving the generation on, so a rank that races into the next barrier counts anew.
 * A sleeper registers before it rechecks the generation under the mutex, and the
 * opener looks for sleepers after moving the generation on: either the sleeper sees
 * the new generation, or the opener sees it and broadcasts under the same mutex. */
static void barrier(cpu_comm *c) {
    unsigned g = atomic_load(&c->bar_gen);
    if (atomic_fetch_add(&c->bar_count, 1) == c->base.size - 1) {
        atomic_store(&c->bar_count, 0);
        atomic_fetch_add(&c->bar_gen, 1);
        if (atomic_load(&c->sleepers) > 0) {
            pthread_mutex_lock(&c->mu);
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
        }
        return;
    }
    const unsigned limit = atomic_load_explicit(&c->spin, memory_order_relaxed);
    for (unsigned spins = 0; spins < limit; spins++) {
        if (atomic_load(&c->bar_gen) != g) {
            if (limit < SPIN_MAX) atomic_store_explicit(&c->spin, 2 * limit, memory_order_relaxed);
            return;
        }
        cpu_relax();
    }
    if (limit > SPIN_MIN) atomic_store_explicit(&c->spin, limit / 2, memory_order_relaxed);
    pthread_mutex_lock(&c->mu);
    atomic_fetch_add(&c->sleepers, 1);
    while (atomic_load(&c->bar_gen) == g) pthread_cond_wait(&c->cv, &c->mu);
    atomic_fetch_sub(&c->sleepers, 1);
    pthread_mutex_unlock(&c->mu);
}

static cv_status cpu_allreduce_sum(cv_comm *base, int rank, float *buf, int64_t n, cv_error *err) {
    cpu_comm *c = (cpu_comm *)base;
    const int size = base->size;
    if (size == 1) return CV_OK;
    c->bufs[rank] = buf;
    c->ns[rank] = n;
    barrier(c);
    int differ = -1;
    for (int r = 0; r < size; r++)
        if (c->ns[r] != c->ns[0]) differ = r;
    const int64_t n0 = c->ns[0], nd = differ >= 0 ? c->ns[differ] : n;
    if (differ < 0) {
        int64_t lo, hi;
        cv_split_range(n, SLICE_ALIGN, rank, size, &lo, &hi);
        float *acc = c->bufs[0];
        for (int r = 1; r < size; r++) {
            const float *b = c->bufs[r];
            for (int64_t i = lo; i < hi; i++) acc[i] += b[i];
        }
        for (int r = 1; r < size; r++) {
            float *b = c->bufs[r];
            for (int64_t i = lo; i < hi; i++) b[i] = acc[i];
        }
    }
    /* No rank returns (and publishes its next buffer) while another still reads these. */
    barrier(c);
    if (differ >= 0)
        return cv_errorf(err, CV_EINVAL, "comm cpu: allreduce of %lld floats on rank 0 but %lld on rank %d",
                         (long long)n0, (long long)nd, differ);
    return CV_OK;
}

static void cpu_destroy(cv_comm *base) {
    cpu_comm *c = (cpu_comm *)base;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->bufs);
    free(c->ns);
    free(c);
}

static const cv_comm_ops cpu_comm_ops = {
    .destroy = cpu_destroy,
    .allreduce_sum = cpu_allreduce_sum,
};

cv_status cv_comm_cpu_create(int size, cv_comm **out, cv_error *err) {
    *out = NULL;
    if (size < 1 || size > CV_COMM_CPU_MAX_RANKS)
        return cv_errorf(err, CV_EINVAL, "comm cpu: %d ranks (need 1..%d)", size, CV_COMM_CPU_MAX_RANKS);
    cpu_comm *c = calloc(1, sizeof *c);
    if (!c) return cv_errorf(err, CV_ENOMEM, "comm cpu: out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->bufs = calloc((size_t)size, sizeof *c->bufs);
    c->ns = calloc((size_t)size, sizeof *c->ns);
    if (!c->bufs || !c->ns) {
        cpu_destroy(&c->base);
        return cv_errorf(err, CV_ENOMEM, "comm cpu: out of memory");
    }
    c->base = (cv_comm){.ops = &cpu_comm_ops, .size = size, .name = "cpu"};
    atomic_init(&c->spin, SPIN_MAX);
    *out = &c->base;
    return CV_OK;
}
