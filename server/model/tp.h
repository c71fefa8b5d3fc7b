/* tp: the tensor-parallel runner, what runs a model on 1..CV_TP_MAX ranks.
 *
 * A cv_tp owns the ranks' backends (CPU: the thread budget split between them; CUDA:
 * device r for rank r), their cv_comm (host threads, or NCCL across GPUs), one shard
 * model per rank loaded from one cv_gguf (model.h says what a shard holds) and a
 * worker thread for every rank but 0. cv_tp_forward runs one step on every rank
 * (rank 0 on the caller's thread); each writes its block of the vocabulary into the
 * caller's logits.
 *
 * Design: callers (engine, generate, corvid-run, the benchmarks) hold a cv_tp where
 * they held a backend and a model, and keep their one cv_kv_cache: cv_tp_kv_config
 * makes it with a pool set per rank under shared block tables, so the scheduler's
 * reserve/release/preempt logic is unchanged and every rank's block tables are the
 * same by construction. The sharded forward is the model's own forward with shard
 * bounds and two all-reduces, not a second copy. With tp = 1 there is no comm and no
 * thread: cv_tp_forward is a direct cv_model_forward on the caller's thread.
 * One caller at a time drives a cv_tp (the engine's thread).
 */
#ifndef CV_TP_H
#define CV_TP_H

#include <stdint.h>

#include "backend.h"
#include "cv_error.h"
#include "gguf.h"
#include "kv_cache.h"
#include "model.h"

#define CV_TP_MAX CV_KV_MAX_RANKS

typedef struct cv_tp_config {
    cv_device device;   /* CV_DEVICE_CPU or CV_DEVICE_CUDA (a CUDA build only) */
    int tp;             /* ranks, 1..CV_TP_MAX (0: 1) */
    int threads;        /* CPU: threads in all, split evenly between the ranks (<= 0: one
                         * per online CPU); each rank gets at least one */
} cv_tp_config;

typedef struct cv_tp cv_tp;

/* The gguf must outlive the runner. mo's tp_* fields are the runner's to fill. */
cv_status cv_tp_load(const cv_tp_config *c, const cv_gguf *g, const cv_model_opts *mo, cv_tp **out,
                     cv_error *err);
void cv_tp_free(cv_tp *tp);

int cv_tp_size(const cv_tp *tp);
/* Rank 0's model: the whole model's hyperparameters and the load options. */
cv_model *cv_tp_model(const cv_tp *tp);
cv_backend *cv_tp_backend(const cv_tp *tp, int rank);
/* Total CPU threads of the ranks' backends (0 on CUDA). */
int cv_tp_threads(const cv_tp *tp);
/* Bytes of weights one forward step reads, summed over the ranks. */
uint64_t cv_tp_weight_bytes(const cv_tp *tp);
/* cv_model_copied_bytes summed over the ranks: 0 at tp 1. */
uint64_t cv_tp_copied_bytes(const cv_tp *tp);

/* cv_model_kv_config for every rank: each rank's kv heads in its backend's memory. */
cv_kv_config cv_tp_kv_config(const cv_tp *tp, int32_t n_ctx, int32_t max_seqs, cv_type kv_type);

/* cv_model_forward on every rank with a cache made from cv_tp_kv_config; logits as
 * there, whole rows. The first failing rank's error is reported, rank 0's first. */
cv_status cv_tp_forward(cv_tp *tp, cv_kv_cache *kv, const cv_batch *b, float *logits, cv_error *err);

#endif
