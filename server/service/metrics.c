#include "metrics.h"

#include "otlp_export.h"

#include "grpc_status.h"
#include "infer_core.h"
#include "rag_guard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void histogram(buf *b, const char *name, const char *help, const cv_metrics_slot *slots,
                      size_t n, size_t off) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const double *bounds = cv_stats_bounds();
    for (size_t i = 0; i < n; i++) {
        for (int p = 0; slots[i].by_protocol && p < CV_STATS_PROTOCOLS; p++) {
            const cv_hist *h = (const cv_hist *)((const char *)&slots[i].by_protocol[p] + off);
            const char *v = slots[i].version, *pn = cv_core_protocol_name((cv_core_protocol)p);
            uint64_t cum = 0;
            for (int k = 0; k < CV_STATS_BUCKETS; k++) {
                cum += h->counts[k];
                put(b, "%s_bucket{version=\"%s\",protocol=\"%s\",le=\"%g\"} %llu\n", name, v, pn, bounds[k],
                    (unsigned long long)cum);
            }
            put(b, "%s_bucket{version=\"%s\",protocol=\"%s\",le=\"+Inf\"} %llu\n", name, v, pn,
                (unsigned long long)h->count);
            put(b, "%s_sum{version=\"%s\",protocol=\"%s\"} %.9g\n", name, v, pn, h->sum);
            put(b, "%s_count{version=\"%s\",protocol=\"%s\"} %llu\n", name, v, pn, (unsigned long long)h->count);
        }
    }
}

/* One sample per slot that has an engine, read from its engine stats: an int32 gauge,
 * or a uint64 counter. */
static void engine_series(buf *b, const char *name, const char *help, int counter,
                          const cv_metrics_slot *slots, size_t n, size_t off) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, counter ? "counter" : "gauge");
    for (size_t i = 0; i < n; i++) {
        if (!slots[i].engine) continue;
        const char *field = (const char *)slots[i].engine + off;
        put(b, "%s{version=\"%s\"} %lld\n", name, slots[i].version,
            counter ? (long long)*(const uint64_t *)field : (long long)*(const int32_t *)field);
    }
}

/* One uint64 counter of the per-protocol views per slot and protocol. */
static void protocol_counter(buf *b, const char *name, const char *help, const cv_metrics_slot *slots, size_t n,
                             size_t off) {
    put(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n; i++)
        for (int p = 0; slots[i].by_protocol && p < CV_STATS_PROTOCOLS; p++)
            put(b, "%s{version=\"%s\",protocol=\"%s\"} %llu\n", name, slots[i].version,
                cv_core_protocol_name((cv_core_protocol)p),
                (unsigned long long)*(const uint64_t *)((const char *)&slots[i].by_protocol[p] + off));
}

static void engine_gauge(buf *b, const char *name, const char *help, const cv_metrics_slot *slots,
                         size_t n, size_t off) {
    engine_series(b, name, help, 0, slots, n, off);
}

char *cv_metrics_render(const cv_metrics_slot *slots, size_t n, const cv_gpu_sample *gpus, int n_gpus,
                        const cv_metrics_http *http, size_t n_http) {
    buf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    put(&b, "# HELP corvid_requests_total Finished requests by model version, protocol (grpc, http) and gRPC "
            "status.\n# TYPE corvid_requests_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int p = 0; slots[i].by_protocol && p < CV_STATS_PROTOCOLS; p++)
            for (int c = 0; c < CV_STATS_CODES; c++)
                if (slots[i].by_protocol[p].requests[c] || c == 0)
                    put(&b, "corvid_requests_total{version=\"%s\",protocol=\"%s\",code=\"%s\"} %llu\n",
                        slots[i].version, cv_core_protocol_name((cv_core_protocol)p), cv_grpc_status_name(c),
                        (unsigned long long)slots[i].by_protocol[p].requests[c]);
    histogram(&b, "corvid_time_to_first_token_seconds", "Submit to first generated token.", slots, n,
              offsetof(cv_stats_view, ttft));
    histogram(&b, "corvid_inter_token_latency_seconds", "Gap between consecutive tokens of a stream.",
              slots, n, offsetof(cv_stats_view, inter_token));
    histogram(&b, "corvid_request_duration_seconds", "Submit to final message.", slots, n,
              offsetof(cv_stats_view, latency));
    histogram(&b, "corvid_queue_time_seconds", "Submit to first scheduled (requests that were scheduled).",
              slots, n, offsetof(cv_stats_view, queue));
    protocol_counter(&b, "corvid_generated_tokens_total", "Tokens generated.", slots, n,
                     offsetof(cv_stats_view, tokens));
    protocol_counter(&b, "corvid_prompt_tokens_total", "Prompt tokens of the requests that ran.", slots, n,
                     offsetof(cv_stats_view, prompt_tokens));
    /* Indexed as stats.h's finish; "refused": the engine never saw the request. */
    static const char *const reasons[CV_STATS_FINISH] = {"refused", "stop", "length", "cancelled", "error",
                                                         "tool_calls"};
    put(&b, "# HELP corvid_finish_reasons_total Finished requests by how they ended: stop, length, tool_calls, "
            "cancelled, error, or refused before they ran.\n# TYPE corvid_finish_reasons_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int p = 0; slots[i].by_protocol && p < CV_STATS_PROTOCOLS; p++)
            for (int f = 0; f < CV_STATS_FINISH; f++)
                put(&b, "corvid_finish_reasons_total{version=\"%s\",protocol=\"%s\",reason=\"%s\"} %llu\n",
                    slots[i].version, cv_core_protocol_name((cv_core_protocol)p), reasons[f],
                    (unsigned long long)slots[i].by_protocol[p].finish[f]);
    uint64_t trips[CV_RAG_GUARD_N_TRIPS], removed;
    cv_rag_guard_counts(trips, &removed);
    put(&b, "# HELP corvid_rag_guard_stops_total RAG answers the guard ended with finish reason stop, by what it saw.\n"
            "# TYPE corvid_rag_guard_stops_total counter\n");
    for (int t = CV_RAG_GUARD_OK + 1; t < CV_RAG_GUARD_N_TRIPS; t++)
        put(&b, "corvid_rag_guard_stops_total{reason=\"%s\"} %llu\n", cv_rag_guard_trip_name((cv_rag_guard_trip)t),
            (unsigned long long)trips[t]);
    put(&b, "# HELP corvid_rag_citations_removed_total Citation markers naming no passage given, cut from answers.\n"
            "# TYPE corvid_rag_citations_removed_total counter\n");
    put(&b, "corvid_rag_citations_removed_total %llu\n", (unsigned long long)removed);
    uint64_t verdicts[CV_RAG_SUPPORT_N];
    cv_rag_support_counts(verdicts);
    put(&b, "# HELP corvid_rag_answer_checks_total RAG answers judged against the passages given (rag_check_answers); "
            "all but supported were replaced by the not-in-the-documents reply.\n"
            "# TYPE corvid_rag_answer_checks_total counter\n");
    for (int v = 0; v < CV_RAG_SUPPORT_N; v++)
        put(&b, "corvid_rag_answer_checks_total{verdict=\"%s\"} %llu\n",
            cv_rag_support_verdict_name((cv_rag_support_verdict)v), (unsigned long long)verdicts[v]);
    engine_gauge(&b, "corvid_queue_depth", "Requests waiting for a batch slot.", slots, n,
                 offsetof(cv_engine_stats, waiting));
    engine_gauge(&b, "corvid_running_sequences", "Sequences decoded in every step.", slots, n,
                 offsetof(cv_engine_stats, running));
    engine_gauge(&b, "corvid_kv_blocks_used", "KV cache blocks held by sequences.", slots, n,
                 offsetof(cv_engine_stats, kv_blocks_used));
    engine_gauge(&b, "corvid_kv_blocks_total", "KV cache blocks in all.", slots, n,
                 offsetof(cv_engine_stats, kv_blocks_total));
    /* The share autoscalers and alerts compare with a threshold (blocks_used/blocks_total). */
    put(&b, "# HELP corvid_kv_cache_usage_ratio KV cache blocks held by sequences over blocks in all (0-1).\n"
            "# TYPE corvid_kv_cache_usage_ratio gauge\n");
    for (size_t i = 0; i < n; i++)
        if (slots[i].engine && slots[i].engine->kv_blocks_total > 0)
            put(&b, "corvid_kv_cache_usage_ratio{version=\"%s\"} %.6g\n", slots[i].version,
                (double)slots[i].engine->kv_blocks_used / slots[i].engine->kv_blocks_total);
    engine_gauge(&b, "corvid_batch_size", "Rows of the most recent forward pass.", slots, n,
                 offsetof(cv_engine_stats, last_batch_rows));
    engine_series(&b, "corvid_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache "
                  "(a preempted sequence's again when re-admitted; all misses when it is off).", 1, slots, n,
                  offsetof(cv_engine_stats, prefix_queries));
    engine_series(&b, "corvid_prefix_cache_hits_total", "Looked-up tokens found cached: not prefilled "
                  "again.", 1, slots, n, offsetof(cv_engine_stats, prefix_hits));
    engine_series(&b, "corvid_prefix_cache_evictions_total", "Cached KV blocks evicted for their memory.", 1,
                  slots, n, offsetof(cv_engine_stats, prefix_evictions));
    engine_gauge(&b, "corvid_prefix_cache_blocks", "KV blocks in the prefix cache, held by sequences or not.",
                 slots, n, offsetof(cv_engine_stats, prefix_blocks));
    /* Speculative decoding, by drafter (engine.h). */
    static const struct {
        const char *name, *help;
        size_t off;
    } spec[] = {
        {"corvid_spec_drafted_tokens_total", "Tokens drafted for speculative decoding, by drafter.",
         offsetof(cv_engine_stats, spec_drafted)},
        {"corvid_spec_accepted_tokens_total", "Drafted tokens the model agreed with (kept), by drafter.",
         offsetof(cv_engine_stats, spec_accepted)},
    };
    for (size_t k = 0; k < sizeof spec / sizeof spec[0]; k++) {
        put(&b, "# HELP %s %s\n# TYPE %s counter\n", spec[k].name, spec[k].help, spec[k].name);
        for (size_t i = 0; i < n; i++)
            for (int d = 0; slots[i].engine && d < CV_SPEC_DRAFTERS; d++)
                put(&b, "%s{version=\"%s\",drafter=\"%s\"} %llu\n", spec[k].name, slots[i].version,
                    cv_spec_drafter_name((cv_spec_drafter)d),
                    (unsigned long long)((const uint64_t *)((const char *)slots[i].engine + spec[k].off))[d]);
    }
    put(&b, "# HELP corvid_slot_traffic_weight Routing weight of new requests.\n"
            "# TYPE corvid_slot_traffic_weight gauge\n");
    for (size_t i = 0; i < n; i++)
        put(&b, "corvid_slot_traffic_weight{version=\"%s\"} %u\n", slots[i].version, slots[i].weight);
    put(&b, "# HELP corvid_slot_state 1 for the state each model version is in.\n"
            "# TYPE corvid_slot_state gauge\n");
    static const char *const states[] = {"loading", "ready", "failed", "draining"};
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++)
            put(&b, "corvid_slot_state{version=\"%s\",state=\"%s\"} %d\n", slots[i].version, states[k],
                strcmp(slots[i].state, states[k]) == 0);
    if (n_gpus > 0) {
        put(&b, "# HELP corvid_gpu_utilization_ratio GPU busy share over NVML's sample period.\n"
                "# TYPE corvid_gpu_utilization_ratio gauge\n");
        for (int i = 0; i < n_gpus; i++)
            put(&b, "corvid_gpu_utilization_ratio{gpu=\"%u\"} %.2f\n", gpus[i].index, gpus[i].utilization);
        put(&b, "# HELP corvid_gpu_memory_used_bytes GPU memory in use.\n# TYPE corvid_gpu_memory_used_bytes gauge\n");
        for (int i = 0; i < n_gpus; i++)
            put(&b, "corvid_gpu_memory_used_bytes{gpu=\"%u\"} %llu\n", gpus[i].index,
                (unsigned long long)gpus[i].memory_used);
        put(&b, "# HELP corvid_gpu_memory_total_bytes GPU memory in all.\n# TYPE corvid_gpu_memory_total_bytes gauge\n");
        for (int i = 0; i < n_gpus; i++)
            put(&b, "corvid_gpu_memory_total_bytes{gpu=\"%u\"} %llu\n", gpus[i].index,
                (unsigned long long)gpus[i].memory_total);
    }
    if (http) {
        put(&b, "# HELP corvid_http_requests_total Requests the HTTP API answered, by endpoint and HTTP status.\n"
                "# TYPE corvid_http_requests_total counter\n");
        for (size_t i = 0; i < n_http; i++)
            put(&b, "corvid_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", http[i].endpoint,
                http[i].status, (unsigned long long)http[i].count);
    }
    cv_otlp_counts t;
    cv_otlp_get_counts(&t);
    put(&b, "# HELP corvid_trace_spans_exported_total Spans the OTLP collector accepted.\n"
            "# TYPE corvid_trace_spans_exported_total counter\n"
            "corvid_trace_spans_exported_total %llu\n"
            "# HELP corvid_trace_spans_dropped_total Spans dropped: the exporter's queue was full, or the "
            "collector did not accept their batch.\n"
            "# TYPE corvid_trace_spans_dropped_total counter\n"
            "corvid_trace_spans_dropped_total{reason=\"queue_full\"} %llu\n"
            "corvid_trace_spans_dropped_total{reason=\"export_failed\"} %llu\n",
        (unsigned long long)t.exported, (unsigned long long)t.dropped_queue_full,
        (unsigned long long)t.dropped_export_failed);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
