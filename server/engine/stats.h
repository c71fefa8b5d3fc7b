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
/* Finish reasons: the engine's cv_finish values (1-4), 0 for a request that never ran,
 * and tool_calls (an answer that stopped after calling tools; the engine says stop). */
#define CV_STATS_FINISH_TOOL_CALLS 5
#define CV_STATS_FINISH 6

typedef struct cv_hist {
    uint64_t counts[CV_STATS_BUCKETS + 1]; /* per bucket (not cumulative); last is +Inf */
    uint64_t count;
    double sum;
} cv_hist;

typedef struct cv_stats_view {
    uint64_t requests[CV_STATS_CODES];
    uint64_t finish[CV_STATS_FINISH];
    cv_hist ttft, latency, inter_token, queue;
    uint64_t tokens, prompt_tokens;
} cv_stats_view;

/* One finished request. A request refused before the engine saw it has finish 0 and
 * no times or tokens. */
typedef struct cv_stats_outcome {
    int code;                /* gRPC status */
    int finish;              /* the engine's cv_finish, CV_STATS_FINISH_TOOL_CALLS, or 0: never ran */
    double queue_s;          /* submit to first scheduled; <= 0: never scheduled */
    double ttft_s;           /* <= 0: no token was produced */
    double total_s;
    uint32_t prompt_tokens, tokens;
} cv_stats_outcome;

typedef struct cv_stats cv_stats;

cv_stats *cv_stats_new(void);
void cv_stats_free(cv_stats *s);

/* The upper bounds of the histogram buckets, ascending (CV_STATS_BUCKETS of them). */
const double *cv_stats_bounds(void);

/* protocol in [0, CV_STATS_PROTOCOLS). */
void cv_stats_request(cv_stats *s, int protocol, const cv_stats_outcome *o);
void cv_stats_inter_token(cv_stats *s, int protocol, double gap_s);

void cv_stats_totals(cv_stats *s, cv_stats_view *out);
/* The lifetime totals of one protocol's requests. */
void cv_stats_protocol_totals(cv_stats *s, int protocol, cv_stats_view *out);
/* The last `seconds` seconds (clamped to 1..CV_STATS_WINDOW_MAX), now included. */
void cv_stats_window(cv_stats *s, int seconds, cv_stats_view *out);

#endif
