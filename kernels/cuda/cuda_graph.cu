/* CUDA graphs of whole steps (backend.h's graph_begin / graph_end).
 *
 * Between graph_begin and graph_end the ops are recorded on a tape (op_tape.h) instead
 * of launched. graph_end then looks the tape up among the cached graphs: an equal tape
 * replays its graph with one cudaGraphLaunch; a tape seen once before is captured
 * (cudaStreamBeginCapture in thread-local mode, so other threads driving other devices
 * are not disturbed), instantiated, cached and launched; a tape never seen runs op by op,
 * which warms up everything that must not happen inside a capture (module loading,
 * cuBLAS's first calls). Nothing in a step allocates (cuBLAS has its own workspace, the
 * staging buffers are sized at weight_load), nothing synchronizes, and any call that
 * would (upload, download, synchronize, memory, NCCL) flushes the tape first.
 *
 * A failed capture turns graphs off for the backend, with the reason in the stats, and
 * the step runs op by op: a missing graph costs time, never a wrong result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static void release_exec(void *ctx, void *handle) {
    cuda_backend *cb = (cuda_backend *)ctx;
    /* An executable still running is freed when it completes. */
    CUDA_CHECK(cb, cudaGraphExecDestroy((cudaGraphExec_t)handle));
}

void cv_cuda_graph_init(cuda_backend *cb, int on, const char *off_reason) {
    cv_tape_cache_init(&cb->graphs, CV_CUDA_GRAPHS, release_exec, cb);
    cb->gstats.enabled = on;
    if (!on) snprintf(cb->gstats.off_reason, sizeof cb->gstats.off_reason, "%s", off_reason);
}

void cv_cuda_graph_destroy(cuda_backend *cb) {
    cv_tape_cache_clear(&cb->graphs);
    cv_op_tape_free(&cb->tape);
}

void cv_cuda_graph_invalidate(cuda_backend *cb) { cv_tape_cache_clear(&cb->graphs); }

void cv_cuda_graph_flush(cuda_backend *cb) {
    if (cb->step != CUDA_STEP_RECORDING) return;
    cb->step = CUDA_STEP_UNRECORDED;
    cv_op_tape_apply(&cb->tape, &cv_cuda_eager_ops, &cb->base);
    cv_op_tape_clear(&cb->tape);
}

void cv_cuda_graph_submit(cuda_backend *cb, const cv_op *op) {
    if (cb->step == CUDA_STEP_RECORDING) {
        if (!cv_op_tape_push(&cb->tape, op, NULL)) return;
        cv_cuda_graph_flush(cb); /* out of host memory for the tape: this step goes op by op */
    }
    cv_op_apply(&cv_cuda_eager_ops, &cb->base, op);
}

void cv_cuda_graph_begin(cv_backend *be) {
    cuda_backend *cb = (cuda_backend *)be;
    CUDA_CHECK(cb, cudaSetDevice(cb->device));
    cv_cuda_graph_flush(cb); /* a step left open: run it, then start afresh */
    cv_op_tape_clear(&cb->tape);
    cb->step = cb->gstats.enabled ? CUDA_STEP_RECORDING : CUDA_STEP_UNRECORDED;
}

/* Records that the tape ran once; 1 if it had already. */
static int seen_before(cuda_backend *cb) {
    const uint64_t key = cb->tape.hash ^ (uint64_t)cb->tape.n;
    for (int i = 0; i < cb->n_seen; i++)
        if (cb->seen[i] == key) return 1;
    if (cb->n_seen == CV_CUDA_GRAPH_SEEN) {
        memmove(cb->seen, cb->seen + 1, sizeof cb->seen - sizeof *cb->seen);
        cb->n_seen--;
    }
    cb->seen[cb->n_seen++] = key;
    return 0;
}

/* Turns graphs off after a failed capture; the caller runs the step op by op. */
static void capture_failed(cuda_backend *cb, const char *call, cudaError_t rc) {
    if (cb->failed)
        snprintf(cb->gstats.off_reason, sizeof cb->gstats.off_reason, "capture failed: %.170s", cb->err.msg);
    else
        snprintf(cb->gstats.off_reason, sizeof cb->gstats.off_reason, "capture failed: %s: %s (%s)", call,
                 cudaGetErrorString(rc), cudaGetErrorName(rc));
    cb->gstats.enabled = 0;
    cb->failed = 0;
    (void)cudaGetLastError(); /* clears the launch error a broken capture leaves behind */
}

/* Captures the tape into a graph executable; 0 after capture_failed. */
static int capture(cuda_backend *cb, cudaGraphExec_t *exec) {
    cudaGraph_t graph = NULL;
    const char *call = "cudaStreamBeginCapture";
    cudaError_t rc = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
    if (rc == cudaSuccess) {
        cv_op_tape_apply(&cb->tape, &cv_cuda_eager_ops, &cb->base);
        call = "cudaStreamEndCapture"; /* always, even after a failed launch: it ends capture mode */
        rc = cudaStreamEndCapture(cb->stream, &graph);
        if (rc == cudaSuccess && !cb->failed) {
            call = "cudaGraphInstantiate";
            rc = cudaGraphInstantiate(exec, graph, 0);
        }
    }
    if (graph) {
        cudaError_t d = cudaGraphDestroy(graph); /* the executable does not need it */
        if (rc == cudaSuccess && d != cudaSuccess) {
            CUDA_CHECK(cb, cudaGraphExecDestroy(*exec));
            call = "cudaGraphDestroy", rc = d;
        }
    }
    if (rc == cudaSuccess && !cb->failed) return 1;
    capture_failed(cb, call, rc);
    return 0;
}

void cv_cuda_graph_end(cv_backend *be) {
    cuda_backend *cb = (cuda_backend *)be;
    CUDA_CHECK(cb, cudaSetDevice(cb->device));
    const int step = cb->step;
    cb->step = CUDA_STEP_NONE;
    if (step != CUDA_STEP_RECORDING) {
        if (step == CUDA_STEP_UNRECORDED) cb->gstats.eager++;
        return;
    }
    cudaGraphExec_t exec = (cudaGraphExec_t)cv_tape_cache_find(&cb->graphs, &cb->tape);
    if (exec) {
        CUDA_CHECK(cb, cudaGraphLaunch(exec, cb->stream));
        cb->gstats.replays++;
    } else if (!cb->failed && seen_before(cb) && capture(cb, &exec)) {
        CUDA_CHECK(cb, cudaGraphLaunch(exec, cb->stream));
        cb->gstats.captures++;
        if (cv_tape_cache_put(&cb->graphs, &cb->tape, exec, NULL)) release_exec(cb, exec);
    } else {
        /* first sight, an earlier failure to report, or a failed capture */
        cv_op_tape_apply(&cb->tape, &cv_cuda_eager_ops, be);
        cb->gstats.eager++;
    }
    cv_op_tape_clear(&cb->tape);
}

static cuda_backend *cuda_of(cv_backend *be, cv_error *err) {
    if (!be || be->device != CV_DEVICE_CUDA) {
        cv_errorf(err, CV_EINVAL, "cuda graphs: %s is not a CUDA backend", be ? be->name : "(null)");
        return NULL;
    }
    return (cuda_backend *)be;
}

extern "C" cv_status cv_cuda_graph_stats_get(cv_backend *be, cv_cuda_graph_stats *out, cv_error *err) {
    cuda_backend *cb = cuda_of(be, err);
    if (!cb) return CV_EINVAL;
    *out = cb->gstats;
    out->cached = cv_tape_cache_size(&cb->graphs);
    return CV_OK;
}

extern "C" cv_status cv_cuda_graphs_enable(cv_backend *be, int on, cv_error *err) {
    cuda_backend *cb = cuda_of(be, err);
    if (!cb) return CV_EINVAL;
    CUDA_CHECK(cb, cudaSetDevice(cb->device));
    cv_cuda_graph_flush(cb);
    cb->gstats.enabled = on != 0;
    snprintf(cb->gstats.off_reason, sizeof cb->gstats.off_reason, "%s", on ? "" : "turned off (cv_cuda_graphs_enable)");
    return CV_OK;
}
