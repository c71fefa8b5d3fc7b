/* comm: the collective between the ranks of a tensor-parallel model.
 *
 * A cv_comm joins `size` ranks of one process; rank r drives one backend from its own
 * thread. Between two ops, every rank calls allreduce_sum with a buffer of n floats in
 * its own backend's memory (the same n on every rank); afterwards each buffer holds the
 * element-wise sum over the ranks. On a device backend the reduction is enqueued in
 * order with the rank's ops (it has happened for any later op of that backend, and a
 * failure may surface at the backend's synchronize); a host implementation returns when
 * the sum is in place. Implementations: NCCL (cv_comm_nccl_create, cuda_backend.h) and
 * host threads (cv_comm_cpu_create, comm_cpu.h).
 */
#ifndef CV_COMM_H
#define CV_COMM_H

#include <stdint.h>

#include "cv_error.h"

typedef struct cv_comm cv_comm;

typedef struct cv_comm_ops {
    void (*destroy)(cv_comm *c);
    cv_status (*allreduce_sum)(cv_comm *c, int rank, float *buf, int64_t n, cv_error *err);
} cv_comm_ops;

struct cv_comm {
    const cv_comm_ops *ops;
    int size;           /* number of ranks */
    const char *name;   /* "nccl", ... */
};

static inline void cv_comm_destroy(cv_comm *c) {
    if (c) c->ops->destroy(c);
}

#endif
