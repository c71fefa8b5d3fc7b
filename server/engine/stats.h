/* stats: request figures of one model version, lifetime and over a sliding window.
 *
 * Every finished request is recorded once with its gRPC status code, time to first
 * token and end-to-end latency; inter-token gaps are recorded as they happen. Each
 * figure also counts under the protocol the request came over (lifetime totals only:
 * Prometheus labels them; the window and GetStatus see all protocols together). Totals
 * feed Prometheus (cumulative counters and histograms); a ring of one-second buckets
 * answers "what happened in the last N seconds" (N <= CV_STATS_WINDOW_MAX) so that a
 * control plane can compute error rate and p99 TTFT for a recent window.
 * Thread-safe; recording never allocates.
 */
#ifndef CV_STATS_H
#define CV_STATS_H

#include <stdint.h>

#define CV_STATS_CODES 17        /* gRPC status codes 0..16 */
#define CV_STATS_BUCKETS 14      /* latency histogram bounds, seconds (see cv_stats_bounds) */
#define CV_STATS_WINDOW_MAX 600  /* seconds kept for window queries */
#define CV_STATS_PROTOCOLS 2     /* what a request came over (the service names them: gRPC, HTTP) */

typedef struct cv_hist {
    uint64_t counts[CV_STATS_BUCKETS + 1]; /* per bucket (not cumulative); last is +Inf */
    uint64_t count;
    double sum;
} cv_hist;

typedef struct cv_stats_view {
    uint64_t requests[CV_STATS_CODES];
    cv_hist ttft, latency, inter_token;
    uint64_t tokens;
} cv_stats_view;

typedef struct cv_stats cv_stats;

cv_stats *cv_stats_new(void);
void cv_stats_free(cv_stats *s);

/* The upper bounds of the histogram buckets, ascending (CV_STATS_BUCKETS of them). */
const double *cv_stats_bounds(void);

/* ttft_s < 0 when no token was produced; protocol in [0, CV_STATS_PROTOCOLS). */
void cv_stats_request(cv_stats *s, int protocol, int code, double ttft_s, double total_s, uint32_t tokens);
void cv_stats_inter_token(cv_stats *s, int protocol, double gap_s);

void cv_stats_totals(cv_stats *s, cv_stats_view *out);
/* The lifetime totals of one protocol's requests. */
void cv_stats_protocol_totals(cv_stats *s, int protocol, cv_stats_view *out);
/* The last `seconds` seconds (clamped to 1..CV_STATS_WINDOW_MAX), now included. */
void cv_stats_window(cv_stats *s, int seconds, cv_stats_view *out);

#endif
