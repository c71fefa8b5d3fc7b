/* metrics: the Prometheus exposition from figures made up in the test (the live server
 * side is tests/integration/test_server_metrics.py, parsed by prometheus_client). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_slots_histograms_and_gpus(void **state) {
    (void)state;
    cv_stats_view views[2], *v = &views[0]; /* grpc, http */
    memset(views, 0, sizeof views);
    views[1].requests[0] = 4;
    views[1].tokens = 5;
    v->requests[0] = 7;
    v->requests[13] = 2;
    v->ttft.counts[0] = 3;            /* <= 5 ms */
    v->ttft.counts[CV_STATS_BUCKETS] = 1; /* +Inf */
    v->ttft.count = 4;
    v->ttft.sum = 70.5;
    v->tokens = 123;
    v->prompt_tokens = 456;
    v->finish[2] = 6;                 /* length */
    v->finish[0] = 2;                 /* refused */
    v->finish[CV_STATS_FINISH_TOOL_CALLS] = 3;
    v->queue.counts[1] = 2;           /* <= 10 ms */
    v->queue.count = 2;
    v->queue.sum = 0.0125;
    cv_engine_stats es = {.running = 2, .waiting = 5, .kv_blocks_used = 9, .kv_blocks_total = 64, .last_batch_rows = 3};
    cv_metrics_slot slots[2] = {{"v1", "ready", 90, views, &es}, {"v2", "loading", 10, NULL, NULL}};
    cv_gpu_sample gpus[1] = {{0, 0.83, 1000, 8000}};
    cv_metrics_http http[2] = {{"/v1/chat/completions", 200, 11}, {"other", 404, 2}};
    char *text = cv_metrics_render(slots, 2, gpus, 1, http, 2);
    assert_non_null(text);
    const char *want[] = {
        "corvid_requests_total{version=\"v1\",protocol=\"grpc\",code=\"OK\"} 7\n",
        "corvid_requests_total{version=\"v1\",protocol=\"grpc\",code=\"INTERNAL\"} 2\n",
        "corvid_requests_total{version=\"v1\",protocol=\"http\",code=\"OK\"} 4\n",
        "corvid_time_to_first_token_seconds_bucket{version=\"v1\",protocol=\"grpc\",le=\"0.005\"} 3\n",
        "corvid_time_to_first_token_seconds_bucket{version=\"v1\",protocol=\"grpc\",le=\"60\"} 3\n",
        "corvid_time_to_first_token_seconds_bucket{version=\"v1\",protocol=\"grpc\",le=\"+Inf\"} 4\n",
        "corvid_time_to_first_token_seconds_sum{version=\"v1\",protocol=\"grpc\"} 70.5\n",
        "corvid_time_to_first_token_seconds_count{version=\"v1\",protocol=\"http\"} 0\n",
        "corvid_generated_tokens_total{version=\"v1\",protocol=\"grpc\"} 123\n",
        "corvid_generated_tokens_total{version=\"v1\",protocol=\"http\"} 5\n",
        "corvid_prompt_tokens_total{version=\"v1\",protocol=\"grpc\"} 456\n",
        "corvid_prompt_tokens_total{version=\"v1\",protocol=\"http\"} 0\n",
        "corvid_finish_reasons_total{version=\"v1\",protocol=\"grpc\",reason=\"length\"} 6\n",
        "corvid_finish_reasons_total{version=\"v1\",protocol=\"grpc\",reason=\"refused\"} 2\n",
        "corvid_finish_reasons_total{version=\"v1\",protocol=\"grpc\",reason=\"stop\"} 0\n",
        "corvid_finish_reasons_total{version=\"v1\",protocol=\"grpc\",reason=\"tool_calls\"} 3\n",
        "corvid_queue_time_seconds_bucket{version=\"v1\",protocol=\"grpc\",le=\"0.005\"} 0\n",
        "corvid_queue_time_seconds_bucket{version=\"v1\",protocol=\"grpc\",le=\"0.01\"} 2\n",
        "corvid_queue_time_seconds_sum{version=\"v1\",protocol=\"grpc\"} 0.0125\n",
        "corvid_kv_cache_usage_ratio{version=\"v1\"} 0.140625\n",
        "corvid_http_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 11\n",
        "corvid_http_requests_total{endpoint=\"other\",status=\"404\"} 2\n",
        "corvid_queue_depth{version=\"v1\"} 5\n",
        "corvid_kv_blocks_used{version=\"v1\"} 9\n",
        "corvid_slot_traffic_weight{version=\"v2\"} 10\n",
        "corvid_slot_state{version=\"v2\",state=\"loading\"} 1\n",
        "corvid_slot_state{version=\"v2\",state=\"ready\"} 0\n",
        "corvid_gpu_utilization_ratio{gpu=\"0\"} 0.83\n",
        "corvid_gpu_memory_total_bytes{gpu=\"0\"} 8000\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("missing: %s", want[i]);
    /* A version without figures or engine gets no counters or gauges of its own. */
    assert_null(strstr(text, "corvid_requests_total{version=\"v1\",protocol=\"http\",code=\"INTERNAL\""));
    assert_null(strstr(text, "corvid_requests_total{version=\"v2\""));
    assert_null(strstr(text, "corvid_queue_depth{version=\"v2\""));
    assert_null(strstr(text, "corvid_kv_cache_usage_ratio{version=\"v2\""));
    assert_null(strstr(text, "corvid_finish_reasons_total{version=\"v2\""));
    free(text);
    text = cv_metrics_render(slots, 1, NULL, 0, NULL, 0);
    assert_null(strstr(text, "corvid_gpu_"));
    assert_null(strstr(text, "corvid_http_requests_total")); /* the API is off */
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_slots_histograms_and_gpus)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
