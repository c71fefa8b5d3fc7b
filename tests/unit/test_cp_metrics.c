#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corvid/client.h"
#include "cp_metrics.h"
#include "../support/test_rng.h"

static cv_test_rng rng;

/* The value of the sample line that starts with `series` followed by a space; -1 when absent. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

static void test_leader_ready_fleet(void **state) {
    (void)state;
    cv_cp_metrics *m;
    cv_error err;
    assert_int_equal(cv_cp_metrics_new(&m, &err), CV_OK);
    char *t = cv_cp_metrics_render(m);
    assert_non_null(t);
    assert_false(cv_cp_metrics_ready(m)); /* not before etcd answered */
    assert_true(sample(t, "corvid_controlplane_leader") == 0);
    assert_null(strstr(t, "corvid_controlplane_servers_healthy")); /* never probed */
    assert_non_null(strstr(t, "# TYPE corvid_rollout_phase gauge"));
    free(t);
    uint64_t failed = cv_test_rng_next(&rng) % 1000;
    size_t discovered = 1 + cv_test_rng_next(&rng) % 64;
    long healthy = (long)(cv_test_rng_next(&rng) % (discovered + 1));
    cv_cp_metrics_set_leader(m, true);
    cv_cp_metrics_set_etcd(m, true, failed);
    cv_cp_metrics_set_fleet(m, discovered, healthy);
    assert_true(cv_cp_metrics_ready(m));
    t = cv_cp_metrics_render(m);
    assert_true(sample(t, "corvid_controlplane_leader") == 1);
    assert_true(sample(t, "corvid_controlplane_etcd_errors_total") == (double)failed);
    assert_true(sample(t, "corvid_controlplane_servers_discovered") == (double)discovered);
    assert_true(sample(t, "corvid_controlplane_servers_healthy") == (double)healthy);
    free(t);
    /* A follower: no health of its own to report; etcd gone: not ready. */
    cv_cp_metrics_set_fleet(m, discovered, -1);
    cv_cp_metrics_set_etcd(m, false, failed + 1);
    assert_false(cv_cp_metrics_ready(m));
    t = cv_cp_metrics_render(m);
    assert_null(strstr(t, "corvid_controlplane_servers_healthy"));
    assert_true(sample(t, "corvid_controlplane_etcd_reachable") == 0);
    free(t);
    cv_cp_metrics_free(m);
}

static void test_phases_and_counters(void **state) {
    (void)state;
    cv_cp_metrics *m;
    cv_error err;
    assert_int_equal(cv_cp_metrics_new(&m, &err), CV_OK);
    cv_rollout_phase p = (cv_rollout_phase)(1 + cv_test_rng_next(&rng) % CV_PHASE_FAILED);
    const char *models[] = {"llama", "we\"ird\\name"};
    cv_rollout_phase phases[] = {p, CV_PHASE_NONE};
    cv_cp_metrics_set_phases(m, models, phases, 2);
    unsigned started = 1 + (unsigned)(cv_test_rng_next(&rng) % 5);
    for (unsigned i = 0; i < started; i++) cv_cp_metrics_count_rollout(m, "llama", CV_CP_ROLLOUT_STARTED);
    cv_cp_metrics_count_rollout(m, "llama", CV_CP_ROLLOUT_ROLLED_BACK);
    cv_cp_metrics_count_server_error(m, CORVID_UNAUTHENTICATED);
    cv_cp_metrics_count_server_error(m, CORVID_UNAUTHENTICATED);
    cv_cp_metrics_count_server_error(m, CORVID_CLIENT_ERROR);
    char *t = cv_cp_metrics_render(m);
    char series[160];
    for (int q = CV_PHASE_NONE; q <= CV_PHASE_FAILED; q++) {
        snprintf(series, sizeof series, "corvid_rollout_phase{model=\"llama\",phase=\"%s\"}",
                 cv_rollout_phase_name((cv_rollout_phase)q));
        assert_true(sample(t, series) == (q == (int)p ? 1 : 0));
    }
    /* Label values escaped as the text format wants. */
    assert_true(sample(t, "corvid_rollout_phase{model=\"we\\\"ird\\\\name\",phase=\"none\"}") == 1);
    assert_true(sample(t, "corvid_controlplane_rollouts_started_total{model=\"llama\"}") == started);
    assert_true(sample(t, "corvid_controlplane_rollouts_rolled_back_total{model=\"llama\"}") == 1);
    assert_true(sample(t, "corvid_controlplane_rollouts_completed_total{model=\"llama\"}") == 0);
    assert_true(sample(t, "corvid_controlplane_server_errors_total{code=\"UNAUTHENTICATED\"}") == 2);
    assert_true(sample(t, "corvid_controlplane_server_errors_total{code=\"CLIENT_ERROR\"}") == 1);
    assert_true(sample(t, "corvid_controlplane_server_errors_total{code=\"UNAVAILABLE\"}") == -1);
    free(t);
    /* A model whose rollout key went: no phase any more, its counters stay. */
    cv_cp_metrics_set_phases(m, models + 1, phases + 1, 1);
    t = cv_cp_metrics_render(m);
    assert_null(strstr(t, "corvid_rollout_phase{model=\"llama\""));
    assert_true(sample(t, "corvid_controlplane_rollouts_started_total{model=\"llama\"}") == started);
    free(t);
    cv_cp_metrics_free(m);
}

static void test_creds_reloads(void **state) {
    (void)state;
    cv_cp_metrics *m;
    cv_error err;
    assert_int_equal(cv_cp_metrics_new(&m, &err), CV_OK);
    char *t = cv_cp_metrics_render(m);
    assert_true(sample(t, "corvid_controlplane_creds_last_reload_successful") == 1); /* nothing refused */
    assert_true(sample(t, "corvid_controlplane_creds_reload_errors_total") == 0);
    free(t);
    uint64_t reloads = cv_test_rng_next(&rng) % 100, errors = 1 + cv_test_rng_next(&rng) % 100;
    int64_t at_ms = 1700000000000LL + (int64_t)(cv_test_rng_next(&rng) % 100000000) * 10;
    cv_cp_metrics_set_creds(m, reloads, errors, at_ms, false);
    t = cv_cp_metrics_render(m);
    assert_non_null(strstr(t, "# TYPE corvid_controlplane_creds_reloads_total counter"));
    assert_non_null(strstr(t, "# TYPE corvid_controlplane_creds_loaded_timestamp_seconds gauge"));
    assert_true(sample(t, "corvid_controlplane_creds_reloads_total") == (double)reloads);
    assert_true(sample(t, "corvid_controlplane_creds_reload_errors_total") == (double)errors);
    assert_true(sample(t, "corvid_controlplane_creds_last_reload_successful") == 0);
    assert_true(sample(t, "corvid_controlplane_creds_loaded_timestamp_seconds") == (double)at_ms / 1e3);
    free(t);
    cv_cp_metrics_free(m);
}

static void test_model_table_is_bounded(void **state) {
    (void)state;
    cv_cp_metrics *m;
    cv_error err;
    assert_int_equal(cv_cp_metrics_new(&m, &err), CV_OK);
    size_t n = CV_CP_METRICS_MODELS + 1 + cv_test_rng_next(&rng) % 8;
    char(*names)[16] = calloc(n, sizeof *names);
    const char **ptrs = calloc(n, sizeof *ptrs);
    cv_rollout_phase *phases = calloc(n, sizeof *phases);
    assert_non_null(names);
    assert_non_null(ptrs);
    assert_non_null(phases);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "m%zu", i);
        ptrs[i] = names[i];
        phases[i] = CV_PHASE_OBSERVING;
    }
    cv_cp_metrics_set_phases(m, ptrs, phases, n);
    cv_cp_metrics_count_rollout(m, names[n - 1], CV_CP_ROLLOUT_STARTED); /* no room: ignored */
    char *t = cv_cp_metrics_render(m);
    size_t lines = 0;
    for (const char *p = strstr(t, "phase=\"observing\"} 1"); p; p = strstr(p + 1, "phase=\"observing\"} 1"))
        lines++;
    assert_int_equal(lines, CV_CP_METRICS_MODELS);
    char series[64];
    snprintf(series, sizeof series, "corvid_controlplane_rollouts_started_total{model=\"%s\"}", names[n - 1]);
    assert_true(sample(t, series) == -1);
    free(t);
    free(names);
    free(ptrs);
    free(phases);
    cv_cp_metrics_free(m);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_cp_metrics"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leader_ready_fleet),
        cmocka_unit_test(test_phases_and_counters),
        cmocka_unit_test(test_creds_reloads),
        cmocka_unit_test(test_model_table_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
