/* metrics: the Prometheus text exposition of the server's figures.
 *
 * Rendering reads a snapshot of every slot (its stats, engine gauges, routing weight
 * and state); nothing here keeps state of its own. Metric names and labels are a
 * contract with dashboards and alert rules (charts/): change them only with those.
 */
#ifndef CV_METRICS_H
#define CV_METRICS_H

#include <stddef.h>

#include "engine.h"
#include "gpu_metrics.h"
#include "stats.h"

typedef struct cv_metrics_slot {
    const char *version;
    const char *state;           /* loading, ready, failed, draining */
    unsigned weight;
    /* Since load, one view per protocol (CV_STATS_PROTOCOLS, in cv_core_protocol
     * order); NULL for a version that never loaded. */
    const cv_stats_view *by_protocol;
    const cv_engine_stats *engine; /* NULL when the slot has no engine */
} cv_metrics_slot;

/* Requests the HTTP API answered, by endpoint and status (http_server.h counts them). */
typedef struct cv_metrics_http {
    const char *endpoint;  /* the route ("/v1/models/{id}"), or "other" */
    int status;
    uint64_t count;
} cv_metrics_http;

/* The exposition as a malloc'd NUL-terminated string; NULL when out of memory. GPU
 * gauges are written only for the samples given (none without NVML); the HTTP series
 * only when the API is on (http non-NULL). */
char *cv_metrics_render(const cv_metrics_slot *slots, size_t n, const cv_gpu_sample *gpus, int n_gpus,
                        const cv_metrics_http *http, size_t n_http);

#endif
