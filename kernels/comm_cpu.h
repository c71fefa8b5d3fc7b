/* comm_cpu: a host cv_comm (comm.h) for ranks that are threads of one process.
 *
 * Each rank's buffer is host memory of its own; allreduce_sum publishes the buffers,
 * meets the other ranks at a reusable barrier, then every rank sums one slice of the
 * elements for all of them and writes the result into every buffer, and a second
 * barrier ends the call. Each element is summed in rank order 0, 1, ..., size-1 by
 * exactly one thread, so the result is bit-identical on every rank and from run to
 * run: greedy decoding stays reproducible. Waiting ranks spin briefly, then sleep.
 * Ranks that pass different n all get CV_EINVAL. Nothing is allocated after create.
 */
#ifndef CV_COMM_CPU_H
#define CV_COMM_CPU_H

#include "comm.h"

/* Most ranks one CPU comm joins. */
#define CV_COMM_CPU_MAX_RANKS 64

cv_status cv_comm_cpu_create(int size, cv_comm **out, cv_error *err);

#endif
