/* cpu_profile: where a CPU backend's time goes, per op. Internal to kernels/.
 *
 * With CORVID_PROFILE=1 in the environment the CPU backend swaps its ops table for
 * this one, which times every compute op (matmuls by weight type and batch class, with
 * the weight bytes they streamed) and the gaps between ops (the runtime's own code
 * between them: the per-step fixed cost), and at destroy prints one JSON line on
 * stderr: {"profile":{"total_ms","gap_ms","pool_wait_ms" (the calling thread waiting
 * for the others inside matmuls and parallel ops), "ops":{NAME:{ms,calls,share,
 * weight_gbs}}}}. Divide by the steps run for per-step figures. The sums are
 * process-wide; one profiled backend at a time gives clean figures.
 */
#ifndef CV_CPU_PROFILE_H
#define CV_CPU_PROFILE_H

#include "backend.h"

int cv_cpu_profile_enabled(void);
/* The profiling table over inner (kept; its entries are called through). */
const cv_backend_ops *cv_cpu_profile_ops(const cv_backend_ops *inner);
void cv_cpu_profile_report(double pool_wait_s);

#endif
