/* otlp_export: the process's span exporter, OTLP/HTTP with JSON bodies (libcurl).
 *
 * Ended spans (trace.h) go into a bounded queue; one exporter thread of its own sends
 * them in batches (at most batch_spans a POST, at least every flush_ms). Nothing on the
 * serving path ever waits for the network: a span that finds the queue full is dropped
 * and counted, and so are the spans of a batch the collector did not accept (after one
 * try: a trace is not worth holding memory for). Until cv_otlp_start runs, and after
 * cv_otlp_stop, no span is recorded at all.
 */
#ifndef CV_OTLP_EXPORT_H
#define CV_OTLP_EXPORT_H

#include <stdint.h>

#include "cv_error.h"
#include "trace.h"

typedef struct cv_otlp_config {
    const char *endpoint;       /* "http://collector:4318/v1/traces" */
    const char *service_name;   /* resource attribute service.name */
    const char *instance_id;    /* service.instance.id; NULL: none */
    unsigned queue_spans;       /* 0: 4096 */
    unsigned batch_spans;       /* 0: 512 */
    unsigned flush_ms;          /* 0: 1000 */
    unsigned timeout_ms;        /* per POST; 0: 5000 */
} cv_otlp_config;

/* Starts the exporter thread; spans are recorded from now on. */
cv_status cv_otlp_start(const cv_otlp_config *c, cv_error *err);
/* Sends what is queued (one try per batch), stops the thread; spans are no longer recorded. */
void cv_otlp_stop(void);
/* Whether spans are being recorded (trace.c asks before allocating one). */
int cv_otlp_running(void);
/* Takes over an ended span: queued, or dropped and counted. */
void cv_otlp_submit(cv_span *s);

typedef struct cv_otlp_counts {
    uint64_t exported;          /* spans the collector accepted */
    uint64_t dropped_queue_full;
    uint64_t dropped_export_failed;
} cv_otlp_counts;
void cv_otlp_get_counts(cv_otlp_counts *out);

#endif
