/* gpu_metrics: GPU utilisation and memory from NVML, loaded at run time.
 *
 * NVML ships with the NVIDIA driver (libnvidia-ml.so.1), not with the toolkit, so it is
 * dlopen'ed: on a machine without the driver cv_gpu_metrics_open says why and the
 * server simply exports no GPU metrics. Reading is thread-safe (NVML is).
 */
#ifndef CV_GPU_METRICS_H
#define CV_GPU_METRICS_H

#include <stdint.h>

#include "cv_error.h"

#define CV_GPU_MAX 16

typedef struct cv_gpu_sample {
    unsigned index;
    double utilization;          /* 0..1 over the driver's last sample period */
    uint64_t memory_used, memory_total;
} cv_gpu_sample;

typedef struct cv_gpu_metrics cv_gpu_metrics;

/* CV_EUNSUPPORTED when NVML or a GPU is not there (the message says which). */
cv_status cv_gpu_metrics_open(cv_gpu_metrics **out, cv_error *err);
void cv_gpu_metrics_close(cv_gpu_metrics *g);
/* Fills up to CV_GPU_MAX samples; returns how many (0 on a read error). */
int cv_gpu_metrics_read(cv_gpu_metrics *g, cv_gpu_sample *out);

#endif
