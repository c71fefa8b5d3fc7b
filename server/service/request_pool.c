#include "request_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct job {
    cv_request_job_fn fn;
    void *user;
    struct job *next;
} job;

typedef struct queue {
    job *head, *tail;
    int n;
} queue;

typedef struct worker_arg {
    cv_request_pool *pool;
    int takes_large;
} worker_arg;

struct cv_request_pool {
    cv_request_pool_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queue small, large;
    int stop;
    int started;       /* workers to join */
    pthread_t *threads;
    worker_arg *args;
};

static void push(queue *q, job *j) {
    j->next = NULL;
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    q->n++;
}

static job *pop(queue *q) {
    job *j = q->head;
    if (!j) return NULL;
    q->head = j->next;
    if (!q->head) q->tail = NULL;
    q->n--;
    return j;
}

static void *worker(void *arg) {
    const worker_arg *a = arg;
    cv_request_pool *p = a->pool;
    if (a->takes_large && p->cfg.nice) {
        /* Per thread on Linux; raising niceness needs no privilege. Best effort. */
        id_t tid = (id_t)syscall(SYS_gettid);
        (void)setpriority(PRIO_PROCESS, tid, getpriority(PRIO_PROCESS, tid) + p->cfg.nice);
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* Small jobs first, then large ones if this worker takes them. */
        job *j;
        while (!(j = pop(&p->small)) && !(a->takes_large && (j = pop(&p->large))) && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!j) break; /* stopping, and nothing this worker takes is left */
        pthread_mutex_unlock(&p->mu);
        j->fn(j->user);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cv_status cv_request_pool_new(const cv_request_pool_config *cfg, cv_request_pool **out, cv_error *err) {
    if (cfg->threads < 1 || cfg->max_queued < 1)
        return cv_errorf(err, CV_EINVAL, "request pool: %d threads and %d queued jobs (each must be >= 1)",
                         cfg->threads, cfg->max_queued);
    cv_request_pool *p = calloc(1, sizeof *p);
    if (!p) return cv_errorf(err, CV_ENOMEM, "request pool: out of memory");
    p->cfg = *cfg;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)cfg->threads, sizeof *p->threads);
    p->args = calloc((size_t)cfg->threads, sizeof *p->args);
    if (!p->threads || !p->args) {
        cv_errorf(err, CV_ENOMEM, "request pool: out of memory");
        goto err;
    }
    for (; p->started < cfg->threads; p->started++) {
        /* Worker 0 stays for small jobs when there are others for the large ones. */
        p->args[p->started] = (worker_arg){p, p->started > 0 || cfg->threads == 1};
        if (pthread_create(&p->threads[p->started], NULL, worker, &p->args[p->started]) != 0) {
            cv_errorf(err, CV_ENOMEM, "request pool: cannot start worker %d of %d", p->started + 1, cfg->threads);
            goto err;
        }
    }
    *out = p;
    return CV_OK;
err:
    cv_request_pool_free(p);
    return err ? err->code : CV_ENOMEM;
}

cv_status cv_request_pool_submit(cv_request_pool *p, cv_request_job_fn fn, void *user, size_t cost,
                                 cv_error *err) {
    int large = cost >= p->cfg.large_cost;
    job *j = malloc(sizeof *j);
    if (!j) return cv_errorf(err, CV_ENOMEM, "request pool: out of memory");
    *j = (job){fn, user, NULL};
    pthread_mutex_lock(&p->mu);
    queue *q = large ? &p->large : &p->small;
    if (q->n >= p->cfg.max_queued) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return cv_errorf(err, CV_EBUSY, "%d %s requests are waiting to be tokenized (request_queue); retry later",
                         p->cfg.max_queued, large ? "large" : "small");
    }
    push(q, j);
    /* All: a waiting worker that does not take large jobs must not swallow the wake-up. */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return CV_OK;
}

int cv_request_pool_queued(cv_request_pool *p) {
    pthread_mutex_lock(&p->mu);
    int n = p->small.n + p->large.n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void cv_request_pool_free(cv_request_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->args);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
