#include "tp.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "comm_cpu.h"
#include "cpu_backend.h"
#include "cuda_backend.h"

typedef struct tp_rank {
    cv_tp *tp;
    int id;
    cv_backend *be;
    cv_model *m;
    pthread_t thread;
    int started;
    cv_status st;       /* of the last step (workers) */
    cv_error err;
} tp_rank;

struct cv_tp {
    int n;
    tp_rank ranks[CV_TP_MAX];
    cv_comm *comm;      /* NULL when n == 1 */

    /* The step in flight: published under mu, then gen moves on; each worker runs it
     * once and the last one to finish signals `done`. */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned gen;
    int pending;
    int stopping;
    cv_kv_cache *kv;
    const cv_batch *batch;
    float *logits;
};

static void *rank_main(void *arg) {
    tp_rank *r = arg;
    cv_tp *tp = r->tp;
    unsigned seen = 0;
    pthread_mutex_lock(&tp->mu);
    for (;;) {
        while (tp->gen == seen && !tp->stopping) pthread_cond_wait(&tp->go, &tp->mu);
        if (tp->stopping) break;
        seen = tp->gen;
        cv_kv_cache *kv = tp->kv;
        const cv_batch *b = tp->batch;
        float *logits = tp->logits;
        pthread_mutex_unlock(&tp->mu);
        r->st = cv_model_forward(r->m, kv, b, logits, &r->err);
        pthread_mutex_lock(&tp->mu);
        if (--tp->pending == 0) pthread_cond_signal(&tp->done);
    }
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

static cv_status open_backend(const cv_tp_config *c, int rank, int threads, cv_backend **be,
                              cv_error *err) {
    cv_status st;
    if (c->device == CV_DEVICE_CUDA) {
        cv_cuda_options co = {.device = rank};
        st = cv_cuda_backend_create(&co, be, err);
    } else {
        cv_cpu_options co = {.n_threads = threads, .repack_weights = 1};
        st = cv_cpu_backend_create(&co, be, err);
    }
    return st ? cv_error_wrap(err, "tp rank %d", rank) : CV_OK;
}

cv_status cv_tp_load(const cv_tp_config *c, const cv_gguf *g, const cv_model_opts *mo, cv_tp **out,
                     cv_error *err) {
    *out = NULL;
    const int n = c->tp ? c->tp : 1;
    if (n < 1 || n > CV_TP_MAX) return cv_errorf(err, CV_EINVAL, "tp %d (need 1..%d)", c->tp, CV_TP_MAX);
    if (c->device != CV_DEVICE_CPU && c->device != CV_DEVICE_CUDA)
        return cv_errorf(err, CV_EINVAL, "tp: device %d is neither cpu nor cuda", (int)c->device);
    cv_tp *tp = calloc(1, sizeof *tp);
    if (!tp) return cv_errorf(err, CV_ENOMEM, "tp: out of memory");
    tp->n = n;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->go, NULL);
    pthread_cond_init(&tp->done, NULL);
    int total = c->threads > 0 ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int per_rank = total / n > 0 ? total / n : 1;
    cv_status st;
    cv_backend *bes[CV_TP_MAX];
    for (int r = 0; r < n; r++) {
        tp->ranks[r] = (tp_rank){.tp = tp, .id = r};
        if ((st = open_backend(c, r, per_rank, &tp->ranks[r].be, err))) goto err;
        bes[r] = tp->ranks[r].be;
    }
    if (n > 1) {
        st = c->device == CV_DEVICE_CUDA ? cv_comm_nccl_create(bes, n, &tp->comm, err)
                                         : cv_comm_cpu_create(n, &tp->comm, err);
        if (st) goto err;
    }
    for (int r = 0; r < n; r++) {
        cv_model_opts o = *mo;
        o.tp_rank = r;
        o.tp_size = n;
        o.tp_comm = tp->comm;
        if ((st = cv_model_load(tp->ranks[r].be, g, &o, &tp->ranks[r].m, err))) goto err;
    }
    for (int r = 1; r < n; r++) {
        if (pthread_create(&tp->ranks[r].thread, NULL, rank_main, &tp->ranks[r])) {
            st = cv_errorf(err, CV_ENOMEM, "tp: cannot start the thread of rank %d", r);
            goto err;
        }
        tp->ranks[r].started = 1;
    }
    *out = tp;
    return CV_OK;
err:
    cv_tp_free(tp);
    return st;
}

void cv_tp_free(cv_tp *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    tp->stopping = 1;
    pthread_cond_broadcast(&tp->go);
    pthread_mutex_unlock(&tp->mu);
    for (int r = 0; r < tp->n; r++)
        if (tp->ranks[r].started) pthread_join(tp->ranks[r].thread, NULL);
    for (int r = 0; r < tp->n; r++) cv_model_free(tp->ranks[r].m);
    cv_comm_destroy(tp->comm);
    for (int r = 0; r < tp->n; r++) cv_backend_destroy(tp->ranks[r].be);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->go);
    pthread_cond_destroy(&tp->done);
    free(tp);
}

int cv_tp_size(const cv_tp *tp) { return tp->n; }
cv_model *cv_tp_model(const cv_tp *tp) { return tp->ranks[0].m; }

cv_backend *cv_tp_backend(const cv_tp *tp, int rank) {
    return rank >= 0 && rank < tp->n ? tp->ranks[rank].be : NULL;
}

int cv_tp_threads(const cv_tp *tp) {
    int sum = 0;
    for (int r = 0; r < tp->n; r++)
        if (tp->ranks[r].be->device == CV_DEVICE_CPU) sum += cv_cpu_backend_threads(tp->ranks[r].be);
    return sum;
}

static uint64_t sum_over_ranks(const cv_tp *tp, uint64_t (*per_rank)(const cv_model *)) {
    uint64_t sum = 0;
    for (int r = 0; r < tp->n; r++) sum += per_rank(tp->ranks[r].m);
    return sum;
}

uint64_t cv_tp_weight_bytes(const cv_tp *tp) { return sum_over_ranks(tp, cv_model_weight_bytes); }
uint64_t cv_tp_copied_bytes(const cv_tp *tp) { return sum_over_ranks(tp, cv_model_copied_bytes); }

cv_kv_config cv_tp_kv_config(const cv_tp *tp, int32_t n_ctx, int32_t max_seqs, cv_type kv_type) {
    cv_kv_config kc = cv_model_kv_config(tp->ranks[0].m, n_ctx, max_seqs, kv_type);
    kc.n_ranks = tp->n;
    for (int r = 0; r < tp->n; r++) kc.backends[r] = tp->ranks[r].be;
    return kc;
}

cv_status cv_tp_forward(cv_tp *tp, cv_kv_cache *kv, const cv_batch *b, float *logits, cv_error *err) {
    if (tp->n == 1) return cv_model_forward(tp->ranks[0].m, kv, b, logits, err);
    pthread_mutex_lock(&tp->mu);
    tp->kv = kv;
    tp->batch = b;
    tp->logits = logits;
    tp->pending = tp->n - 1;
    tp->gen++;
    pthread_cond_broadcast(&tp->go);
    pthread_mutex_unlock(&tp->mu);
    cv_status st = cv_model_forward(tp->ranks[0].m, kv, b, logits, err);
    pthread_mutex_lock(&tp->mu);
    while (tp->pending > 0) pthread_cond_wait(&tp->done, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
    for (int r = 1; r < tp->n && st == CV_OK; r++)
        if (tp->ranks[r].st) {
            st = tp->ranks[r].st;
            if (err) *err = tp->ranks[r].err;
            cv_error_wrap(err, "tp rank %d", r);
        }
    return st;
}
