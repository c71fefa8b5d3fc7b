/* trace: W3C trace context (traceparent) and spans, for every corvid daemon.
 *
 * A request's context comes from its traceparent header (gRPC metadata or HTTP) or,
 * when that is absent or malformed, is a new trace. Whether its spans are recorded is
 * decided once, at the root: a parent's sampled flag when one came in, else the ratio
 * given to cv_trace_set_ratio, compared with the trace id (OpenTelemetry's
 * TraceIdRatioBased), so every process of a trace decides alike.
 *
 * A span is started as the child of a context and ended once; an ended span goes to the
 * exporter (otlp_export.h), which owns it from then on. Without a running exporter, or
 * in an unsampled trace, cv_span_start returns NULL and every cv_span_* call takes NULL,
 * so callers never test. Times are CLOCK_REALTIME nanoseconds (OTLP's unit); a span can
 * be recorded after the fact with explicit start and end times (engine phases, RAG).
 * Attribute keys must be string literals (kept by pointer); values are copied.
 */
#ifndef CV_TRACE_H
#define CV_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cv_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];  /* the span new children hang under; all zero: a root */
    uint8_t sampled;     /* 1: this trace's spans are recorded */
} cv_trace_ctx;

#define CV_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

/* 0 and *out filled for a valid traceparent (W3C Trace Context level 1: lower-case hex,
 * non-zero ids, version ff refused, a later version may carry more after a '-'); -1
 * otherwise, *out untouched. s need not be NUL-terminated. */
int cv_traceparent_parse(const char *s, size_t n, cv_trace_ctx *out);
/* The traceparent of c (version 00) into out[CV_TRACEPARENT_LEN + 1]. */
void cv_traceparent_format(const cv_trace_ctx *c, char *out);
/* The trace id as 32 lower-case hex digits into out[33]. */
void cv_trace_id_hex(const cv_trace_ctx *c, char *out);
/* p[0..n) as lower-case hex into out[2n + 1]. */
void cv_trace_hex(const uint8_t *p, size_t n, char *out);

/* Share of new traces sampled, 0..1 (default 1). Called once at start-up. */
void cv_trace_set_ratio(double ratio);
/* The context of a request: traceparent (may be NULL or invalid) continued, else a new
 * trace sampled by the ratio. */
void cv_trace_begin(const char *traceparent, size_t len, cv_trace_ctx *out);

uint64_t cv_trace_now_ns(void);

typedef enum cv_span_kind { CV_SPAN_INTERNAL = 1, CV_SPAN_SERVER = 2, CV_SPAN_CLIENT = 3 } cv_span_kind;

typedef struct cv_span cv_span;

/* A new span under parent, started at start_ns (0: now). child (may be NULL) receives
 * the context for the span's own children: the same trace with the new span's id
 * (also when nothing is recorded, so ids still reach logs and outgoing headers). */
cv_span *cv_span_start(const cv_trace_ctx *parent, const char *name, cv_span_kind kind, uint64_t start_ns,
                       cv_trace_ctx *child);
/* The span whose own id is ctx->span_id, fixed in advance (a long operation's root that
 * several processes, or several leaders in turn, refer to), with no parent. */
cv_span *cv_span_start_as(const cv_trace_ctx *ctx, const char *name, cv_span_kind kind, uint64_t start_ns);
void cv_span_set_str(cv_span *s, const char *key, const char *value);
/* A string array attribute of one element (gen_ai.response.finish_reasons is string[]). */
void cv_span_set_str_array(cv_span *s, const char *key, const char *value);
void cv_span_set_int(cv_span *s, const char *key, int64_t value);
void cv_span_set_double(cv_span *s, const char *key, double value);
/* Marks the span failed (OTLP status ERROR) with a message. */
void cv_span_set_error(cv_span *s, const char *message);
/* Ends the span at end_ns (0: now) and hands it to the exporter. */
void cv_span_end(cv_span *s, uint64_t end_ns);

/* ---- for the exporter ---- */
#define CV_SPAN_MAX_ATTRS 16

typedef enum cv_attr_type { CV_ATTR_STR, CV_ATTR_STR_ARRAY, CV_ATTR_INT, CV_ATTR_DOUBLE } cv_attr_type;

typedef struct cv_span_attr {
    const char *key;
    cv_attr_type type;
    char *s;
    int64_t i;
    double d;
} cv_span_attr;

struct cv_span {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    char name[64];
    cv_span_kind kind;
    uint64_t start_ns, end_ns;
    int error;
    char *status_message;
    cv_span_attr attrs[CV_SPAN_MAX_ATTRS];
    size_t n_attrs;
};

void cv_span_free(cv_span *s);

#endif
