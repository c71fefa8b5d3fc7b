/* membw: memory bandwidth probes, the roofline that decode speed is judged against.
 *
 * cv_membw_read: a read-only sum over a fresh buffer of `bytes` (make it far larger
 * than the last-level cache), split across the pool's threads. cv_membw_triad:
 * a[i] = b[i] + s * c[i] over three arrays of bytes / 3, counted as three arrays of
 * traffic (as STREAM does; the stores bypass the cache). Both report the median GB/s
 * (1e9 bytes/s) of `runs` timed passes after one untimed pass.
 */
#ifndef CV_MEMBW_H
#define CV_MEMBW_H

#include <stddef.h>

#include "cv_error.h"
#include "threadpool.h"
#include "timing.h"

#define CV_MEMBW_MAX_RUNS 64

cv_status cv_membw_read(cv_threadpool *pool, size_t bytes, int runs, double *gbps, cv_error *err);
cv_status cv_membw_triad(cv_threadpool *pool, size_t bytes, int runs, double *gbps, cv_error *err);

#endif
