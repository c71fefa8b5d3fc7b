/* cv_comm over NCCL for the CUDA backends of one process: one communicator per rank
 * from ncclCommInitAll, each all-reduce enqueued on its rank backend's stream. */
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
extern "C" {
#include "comm.h"
}

#define NCCL_MAX_RANKS 16

typedef struct nccl_comm {
    cv_comm base;
    ncclComm_t comms[NCCL_MAX_RANKS];
    cuda_backend *ranks[NCCL_MAX_RANKS];
} nccl_comm;

static void nccl_destroy(cv_comm *c) {
    nccl_comm *nc = (nccl_comm *)c;
    for (int r = 0; r < c->size; r++)
        if (nc->comms[r]) ncclCommDestroy(nc->comms[r]);
    free(nc);
}

static cv_status nccl_allreduce_sum(cv_comm *c, int rank, float *buf, int64_t n, cv_error *err) {
    nccl_comm *nc = (nccl_comm *)c;
    if (rank < 0 || rank >= c->size)
        return cv_errorf(err, CV_EINVAL, "nccl: rank %d outside 0..%d", rank, c->size - 1);
    cuda_backend *cb = nc->ranks[rank];
    cudaError_t dev = cudaSetDevice(cb->device);
    if (dev != cudaSuccess)
        return cv_errorf(err, CV_EIO, "nccl: cudaSetDevice(%d) for rank %d: %s", cb->device, rank,
                         cudaGetErrorString(dev));
    cv_cuda_graph_flush(cb); /* the ops recorded so far of a graph step come first */
    ncclResult_t rc = ncclAllReduce(buf, buf, (size_t)n, ncclFloat, ncclSum, nc->comms[rank], cb->stream);
    if (rc != ncclSuccess)
        return cv_errorf(err, CV_EIO, "nccl: ncclAllReduce of %lld floats on rank %d (device %d): %s", (long long)n,
                         rank, cb->device, ncclGetErrorString(rc));
    return CV_OK;
}

static const cv_comm_ops nccl_ops = {nccl_destroy, nccl_allreduce_sum};

extern "C" cv_status cv_comm_nccl_create(cv_backend *const *ranks, int n, cv_comm **out, cv_error *err) {
    *out = NULL;
    if (n < 1 || n > NCCL_MAX_RANKS) return cv_errorf(err, CV_ERANGE, "nccl: %d ranks (1..%d)", n, NCCL_MAX_RANKS);
    int devs[NCCL_MAX_RANKS];
    for (int r = 0; r < n; r++) {
        if (!ranks[r] || ranks[r]->device != CV_DEVICE_CUDA)
            return cv_errorf(err, CV_EINVAL, "nccl: rank %d is not a CUDA backend", r);
        devs[r] = ((cuda_backend *)ranks[r])->device;
        for (int q = 0; q < r; q++)
            if (devs[q] == devs[r])
                return cv_errorf(err, CV_EINVAL, "nccl: ranks %d and %d both use device %d", q, r, devs[r]);
    }
    nccl_comm *nc = (nccl_comm *)calloc(1, sizeof *nc);
    if (!nc) return cv_errorf(err, CV_ENOMEM, "nccl: out of memory");
    nc->base.ops = &nccl_ops;
    nc->base.size = n;
    nc->base.name = "nccl";
    for (int r = 0; r < n; r++) nc->ranks[r] = (cuda_backend *)ranks[r];
    ncclResult_t rc = ncclCommInitAll(nc->comms, n, devs);
    if (rc != ncclSuccess) {
        memset(nc->comms, 0, sizeof nc->comms);
        nccl_destroy(&nc->base);
        return cv_errorf(err, CV_EIO, "nccl: ncclCommInitAll over %d device%s: %s", n, n == 1 ? "" : "s",
                         ncclGetErrorString(rc));
    }
    *out = &nc->base;
    return CV_OK;
}
