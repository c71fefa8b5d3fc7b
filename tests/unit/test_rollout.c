#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollout.h"
#include "../support/test_rng.h"

static cv_test_rng rng;
static const cv_rollout_limits lim = {.stage_ms = 10000, .shift_ms = 5000, .observe_ms = 20000,
                                      .unmeasurable_ms = 3000, .keep_previous_ms = 1000,
                                      .judge_ms = 100};

/* A two-server world the tests move by hand. */
typedef struct world {
    cv_rollout_spec spec;
    cv_rollout_status st;
    cv_rollout_server_obs srv[2];
    cv_analysis_result analysis;
    cv_rollout_obs obs;
} world;

static void world_init(world *w, bool canary) {
    memset(w, 0, sizeof *w);
    snprintf(w->spec.id, sizeof w->spec.id, "r%llu", (unsigned long long)cv_test_rng_next(&rng));
    snprintf(w->spec.target, sizeof w->spec.target, "v2");
    w->spec.canary = canary;
    if (canary) {
        w->spec.steps[0] = 10, w->spec.steps[1] = 50, w->spec.steps[2] = 100;
        w->spec.n_steps = 3;
    } else {
        w->spec.steps[0] = 100;
        w->spec.n_steps = 1;
    }
    w->spec.max_error_rate = 0.05;
    w->spec.window_ms = 2000;
    w->spec.min_requests = 10;
    w->spec.failure_limit = 2;
    w->srv[0] = (cv_rollout_server_obs){.addr = "a:1", .reachable = true};
    w->srv[1] = (cv_rollout_server_obs){.addr = "b:1", .reachable = true};
    w->obs = (cv_rollout_obs){.now_ms = 1000000 + (int64_t)(cv_test_rng_next(&rng) % 100000),
                              .serving = "v1", .target_registered = true, .servers = w->srv,
                              .n_servers = 2};
}

static bool step(world *w, int64_t advance_ms) {
    w->obs.now_ms += advance_ms;
    return cv_rollout_step(&w->spec, &lim, &w->obs, &w->st);
}

static void set_all(world *w, cv_slot_state s, int smoke, bool applied) {
    for (int i = 0; i < 2; i++) {
        w->srv[i].candidate = s;
        w->srv[i].smoke = smoke;
        w->srv[i].weights_applied = applied;
    }
}

static void judge(world *w, cv_verdict v) {
    w->analysis.verdict = v;
    snprintf(w->analysis.message, sizeof w->analysis.message, "verdict %s", cv_verdict_name(v));
    w->obs.analysis = &w->analysis;
}

/* Staged, shifted and observing the first step. */
static void to_observing(world *w) {
    assert_true(step(w, 0));
    assert_int_equal(w->st.phase, CV_PHASE_STAGING);
    set_all(w, CV_SLOT_READY, 1, false);
    assert_true(step(w, 100));
    assert_int_equal(w->st.phase, CV_PHASE_SHIFTING);
    set_all(w, CV_SLOT_READY, 1, true);
    assert_true(step(w, 100));
    assert_int_equal(w->st.phase, CV_PHASE_OBSERVING);
}

static void test_bluegreen_promotes_after_window(void **state) {
    (void)state;
    world w;
    world_init(&w, false);
    assert_true(step(&w, 0));
    assert_int_equal(w.st.phase, CV_PHASE_STAGING);
    assert_string_equal(w.st.active, "v1");
    assert_string_equal(w.st.candidate, "v2");
    cv_rollout_desired d;
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
    assert_int_equal(d.n_load, 2);
    assert_string_equal(d.load[1], "v2");
    assert_int_equal(d.n_weights, 1);
    assert_int_equal(d.weights[0], 100);
    /* Loading on one server, ready on the other: still staging. */
    w.srv[0].candidate = CV_SLOT_LOADING;
    w.srv[1].candidate = CV_SLOT_READY;
    w.srv[1].smoke = 1;
    assert_false(step(&w, 500));
    assert_int_equal(w.st.phase, CV_PHASE_STAGING);
    set_all(&w, CV_SLOT_READY, 1, false);
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_SHIFTING);
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
    assert_int_equal(d.n_weights, 2);
    assert_int_equal(d.weights[0], 0);
    assert_int_equal(d.weights[1], 100);
    assert_false(step(&w, 100)); /* weights not applied yet */
    set_all(&w, CV_SLOT_READY, 1, true);
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    assert_int_equal(w.st.traffic, 100);
    judge(&w, CV_VERDICT_PASS);
    step(&w, 1999);
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    assert_true(step(&w, 1));
    assert_int_equal(w.st.phase, CV_PHASE_PROMOTED);
    assert_string_equal(w.st.active, "v2");
    assert_string_equal(w.st.previous, "v1");
    assert_string_equal(w.st.candidate, "");
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms + 999, &d);
    assert_null(d.unload);
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms + 1000, &d);
    assert_string_equal(d.unload, "v1");
    assert_string_equal(d.weight_versions[0], "v2");
    assert_false(step(&w, 5000)); /* promoted is at rest */
}

static void test_canary_walks_its_steps(void **state) {
    (void)state;
    world w;
    world_init(&w, true);
    to_observing(&w);
    judge(&w, CV_VERDICT_PASS);
    for (size_t s = 0; s < 3; s++) {
        assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
        assert_int_equal(w.st.traffic, w.spec.steps[s]);
        cv_rollout_desired d;
        cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
        assert_int_equal(d.weights[1], w.spec.steps[s]);
        assert_int_equal(d.weights[0], 100 - w.spec.steps[s]);
        assert_true(step(&w, w.spec.window_ms));
        if (s == 2) break;
        assert_int_equal(w.st.phase, CV_PHASE_SHIFTING);
        cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
        assert_int_equal(d.weights[1], w.spec.steps[s + 1]);
        assert_true(step(&w, 10));
    }
    assert_int_equal(w.st.phase, CV_PHASE_PROMOTED);
    assert_true(w.st.n_history >= 7);
}

static void test_load_failure_rolls_back(void **state) {
    (void)state;
    world w;
    world_init(&w, false);
    step(&w, 0);
    w.srv[1].candidate = CV_SLOT_FAILED;
    w.srv[1].candidate_message = "sha256 is abc, expected 000";
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "b:1"));
    assert_non_null(strstr(w.st.message, "sha256 is abc"));
    cv_rollout_desired d;
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
    assert_string_equal(d.unload, "v2");
    assert_int_equal(d.n_weights, 1);
    assert_string_equal(d.weight_versions[0], "v1");
    w.srv[0].weights_applied = true;
    assert_false(step(&w, 100));
    w.srv[1].weights_applied = true;
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLED_BACK);
    assert_string_equal(w.st.active, "v1");
    assert_non_null(strstr(w.st.message, "sha256 is abc"));
    assert_false(step(&w, 100)); /* the same rollout id never restarts */
}

static void test_smoke_failure_rolls_back(void **state) {
    (void)state;
    world w;
    world_init(&w, false);
    step(&w, 0);
    set_all(&w, CV_SLOT_READY, 1, false);
    w.srv[0].smoke = -1;
    w.srv[0].smoke_message = "INTERNAL: boom";
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "smoke prompt failed on a:1: INTERNAL: boom"));
}

static void test_consecutive_failures(void **state) {
    (void)state;
    world w;
    world_init(&w, true);
    to_observing(&w);
    w.spec.failure_limit = 2 + (int)(cv_test_rng_next(&rng) % 3);
    judge(&w, CV_VERDICT_FAIL);
    for (int i = 1; i < w.spec.failure_limit; i++) {
        step(&w, 100);
        assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
        assert_int_equal(w.st.consecutive_failures, i);
    }
    judge(&w, CV_VERDICT_PASS); /* a pass resets the count */
    step(&w, 100);
    assert_int_equal(w.st.consecutive_failures, 0);
    judge(&w, CV_VERDICT_FAIL);
    /* A burst of reconciles (etcd events) within one judge interval counts once. */
    step(&w, 100);
    for (int i = 0; i < 10; i++) step(&w, 1);
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    assert_int_equal(w.st.consecutive_failures, 1);
    for (int i = 1; i < w.spec.failure_limit; i++) step(&w, 100);
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "verdict fail"));
    assert_int_equal(w.st.traffic, 0);
}

static void test_unreachable_holds_then_aborts(void **state) {
    (void)state;
    world w;
    world_init(&w, true);
    to_observing(&w);
    judge(&w, CV_VERDICT_UNMEASURABLE);
    w.srv[1].reachable = false;
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    assert_non_null(strstr(w.st.message, "holding"));
    /* Reachable again: the hold ends, and a later outage starts a fresh clock. */
    w.srv[1].reachable = true;
    judge(&w, CV_VERDICT_INCONCLUSIVE);
    assert_true(step(&w, 2000));
    assert_int_equal(w.st.unmeasurable_since_ms, 0);
    w.srv[1].reachable = false;
    judge(&w, CV_VERDICT_UNMEASURABLE);
    step(&w, 100);
    step(&w, lim.unmeasurable_ms - 1);
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    assert_true(step(&w, 1));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "b:1 unreachable"));
    /* Rolled back once every reachable server has its weights back. */
    w.srv[0].weights_applied = true;
    assert_true(step(&w, 100));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLED_BACK);
}

static void test_deadlines(void **state) {
    (void)state;
    world w;
    world_init(&w, false);
    step(&w, 0);
    w.srv[0].candidate = CV_SLOT_LOADING;
    step(&w, lim.stage_ms - 1);
    assert_int_equal(w.st.phase, CV_PHASE_STAGING);
    step(&w, 1);
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "staging not finished"));

    world_init(&w, false);
    to_observing(&w);
    judge(&w, CV_VERDICT_INCONCLUSIVE);
    step(&w, lim.observe_ms - 1);
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    step(&w, 1);
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "no judgement"));

    world_init(&w, true);
    step(&w, 0);
    set_all(&w, CV_SLOT_READY, 1, false);
    step(&w, 1);
    assert_int_equal(w.st.phase, CV_PHASE_SHIFTING);
    step(&w, lim.shift_ms);
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
}

static void test_operator_commands(void **state) {
    (void)state;
    world w;
    world_init(&w, true);
    to_observing(&w);
    w.spec.paused = true;
    assert_true(step(&w, 10));
    assert_int_equal(w.st.phase, CV_PHASE_PAUSED);
    cv_rollout_desired d;
    cv_rollout_desired_state(&w.spec, &lim, &w.st, w.obs.now_ms, &d);
    assert_int_equal(d.weights[1], 10); /* paused keeps the traffic where it is */
    judge(&w, CV_VERDICT_FAIL);
    assert_false(step(&w, 60000)); /* no judgement, no deadline while paused */
    w.spec.paused = false;
    assert_true(step(&w, 10));
    assert_int_equal(w.st.phase, CV_PHASE_SHIFTING);
    step(&w, 10);
    assert_int_equal(w.st.phase, CV_PHASE_OBSERVING);
    w.spec.promote = true;
    assert_true(step(&w, 10));
    assert_int_equal(w.st.phase, CV_PHASE_PROMOTED);
    assert_non_null(strstr(w.st.message, "operator"));

    world_init(&w, true);
    to_observing(&w);
    w.spec.abort = true;
    assert_true(step(&w, 10));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_non_null(strstr(w.st.message, "aborted by the operator"));
}

static void test_start_rules(void **state) {
    (void)state;
    world w;
    world_init(&w, false);
    w.obs.target_registered = false;
    step(&w, 0);
    assert_int_equal(w.st.phase, CV_PHASE_FAILED);
    assert_non_null(strstr(w.st.message, "not registered"));

    world_init(&w, false);
    w.obs.serving = "";
    step(&w, 0);
    assert_int_equal(w.st.phase, CV_PHASE_FAILED);

    world_init(&w, false);
    w.obs.serving = "v2";
    step(&w, 0);
    assert_int_equal(w.st.phase, CV_PHASE_PROMOTED);

    /* A new rollout id during one in flight rolls the old one back first. */
    world_init(&w, true);
    to_observing(&w);
    snprintf(w.spec.id, sizeof w.spec.id, "newer");
    snprintf(w.spec.target, sizeof w.spec.target, "v3");
    assert_true(step(&w, 10));
    assert_int_equal(w.st.phase, CV_PHASE_ROLLING_BACK);
    assert_string_equal(w.st.candidate, "v2");
    assert_non_null(strstr(w.st.message, "superseded"));
    set_all(&w, CV_SLOT_ABSENT, 0, true);
    step(&w, 10);
    assert_int_equal(w.st.phase, CV_PHASE_ROLLED_BACK);
    step(&w, 10);
    assert_int_equal(w.st.phase, CV_PHASE_STAGING);
    assert_string_equal(w.st.candidate, "v3");
    assert_string_equal(w.st.active, "v1");
}

static void random_name(char *dst, size_t cap) {
    size_t n = 1 + cv_test_rng_next(&rng) % (cap - 1);
    for (size_t i = 0; i < n; i++) dst[i] = (char)(' ' + cv_test_rng_next(&rng) % 95);
    dst[n] = 0;
}

static void test_status_json_round_trip(void **state) {
    (void)state;
    for (int round = 0; round < 50; round++) {
        cv_rollout_status a, b;
        memset(&a, 0, sizeof a);
        random_name(a.id, sizeof a.id);
        random_name(a.active, sizeof a.active);
        random_name(a.candidate, sizeof a.candidate);
        a.phase = (cv_rollout_phase)(cv_test_rng_next(&rng) % 9);
        a.paused_from = CV_PHASE_OBSERVING;
        a.traffic = (int)(cv_test_rng_next(&rng) % 101);
        a.step = (int)(cv_test_rng_next(&rng) % CV_ROLLOUT_MAX_STEPS);
        a.phase_since_ms = (int64_t)(cv_test_rng_next(&rng) % 4000000000000ULL);
        a.judged_ms = (int64_t)(cv_test_rng_next(&rng) % 4000000000000ULL);
        random_name(a.message, sizeof a.message);
        a.n_history = cv_test_rng_next(&rng) % (CV_ROLLOUT_HISTORY + 1);
        for (size_t i = 0; i < a.n_history; i++) {
            a.history[i].at_ms = (int64_t)i;
            a.history[i].phase = CV_PHASE_SHIFTING;
            random_name(a.history[i].message, sizeof a.history[i].message);
        }
        char *json = cv_rollout_status_json(&a);
        assert_non_null(json);
        cv_error err;
        assert_int_equal(cv_rollout_status_parse(json, strlen(json), &b, &err), CV_OK);
        free(json);
        assert_memory_equal(&a, &b, sizeof a);
    }
    cv_error err;
    const char *bad[] = {"[]", "{\"phase\":\"flying\"}", "{\"traffic\":101}", "{\"history\":{}}",
                         "{\"active\":7}", "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_rollout_status st;
        assert_int_not_equal(cv_rollout_status_parse(bad[i], strlen(bad[i]), &st, &err), CV_OK);
        assert_non_null(strstr(err.msg, "status: "));
    }
}

static void test_history_keeps_the_latest(void **state) {
    (void)state;
    world w;
    world_init(&w, true);
    to_observing(&w);
    w.spec.paused = true;
    for (int i = 0; i < 2 * CV_ROLLOUT_HISTORY; i++) {
        w.spec.paused = !w.spec.paused;
        step(&w, 10);
    }
    assert_int_equal(w.st.n_history, CV_ROLLOUT_HISTORY);
    assert_int_equal(w.st.history[CV_ROLLOUT_HISTORY - 1].at_ms, w.obs.now_ms);
    for (size_t i = 1; i < w.st.n_history; i++)
        assert_true(w.st.history[i].at_ms >= w.st.history[i - 1].at_ms);
}

static void test_spec_parse(void **state) {
    (void)state;
    cv_rollout_spec def = {.max_error_rate = 0.05, .window_ms = 60000, .min_requests = 50,
                           .failure_limit = 2, .steps = {10, 50, 100}, .n_steps = 3};
    cv_rollout_spec s;
    cv_error err;
    const char *bg = "{\"id\":\"x\",\"target\":\"v2\"}";
    assert_int_equal(cv_rollout_spec_parse(bg, strlen(bg), &def, &s, &err), CV_OK);
    assert_false(s.canary);
    assert_int_equal(s.n_steps, 1);
    assert_int_equal(s.steps[0], 100);
    assert_int_equal(s.min_requests, 50);
    const char *can = "{\"id\":\"x\",\"target\":\"v2\",\"strategy\":\"canary\",\"steps\":[5,100],"
                      "\"max_error_rate\":0.2,\"window_ms\":1500,\"paused\":true}";
    assert_int_equal(cv_rollout_spec_parse(can, strlen(can), &def, &s, &err), CV_OK);
    assert_true(s.canary && s.paused);
    assert_int_equal(s.n_steps, 2);
    assert_int_equal(s.window_ms, 1500);
    assert_float_equal(s.max_error_rate, 0.2, 1e-12);
    struct {
        const char *text, *needle;
    } bad[] = {
        {"{\"id\":\"x\"}", "\"target\" are required"},
        {"{\"id\":\"x\",\"target\":\"v\",\"colour\":1}", "unknown key \"colour\""},
        {"{\"id\":\"x\",\"target\":\"v\",\"strategy\":\"yolo\"}", "bluegreen or canary"},
        {"{\"id\":\"x\",\"target\":\"v\",\"steps\":[50,40,100]}", "increasing"},
        {"{\"id\":\"x\",\"target\":\"v\",\"steps\":[10,50]}", "must be 100"},
        {"{\"id\":\"x\",\"target\":\"v\",\"max_error_rate\":1.5}", "allowed 0..1"},
        {"{\"id\":\"x\",\"target\":\"v\",\"window_ms\":5}", "window_ms"},
        {"{\"id\":\"x\",\"target\":\"v\",\"paused\":1}", "true or false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(cv_rollout_spec_parse(bad[i].text, strlen(bad[i].text), &def, &s, &err), CV_OK);
        if (!strstr(err.msg, bad[i].needle)) fail_msg("%s: got \"%s\"", bad[i].text, err.msg);
    }
    int steps[CV_ROLLOUT_MAX_STEPS];
    size_t n;
    assert_int_equal(cv_rollout_steps_parse("10,50,100", steps, &n, &err), CV_OK);
    assert_int_equal(n, 3);
    assert_int_equal(steps[1], 50);
    assert_int_not_equal(cv_rollout_steps_parse("10,,100", steps, &n, &err), CV_OK);
    assert_int_not_equal(cv_rollout_steps_parse("10,abc", steps, &n, &err), CV_OK);
    assert_int_not_equal(cv_rollout_steps_parse("0,100", steps, &n, &err), CV_OK);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_rollout"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bluegreen_promotes_after_window),
        cmocka_unit_test(test_canary_walks_its_steps),
        cmocka_unit_test(test_load_failure_rolls_back),
        cmocka_unit_test(test_smoke_failure_rolls_back),
        cmocka_unit_test(test_consecutive_failures),
        cmocka_unit_test(test_unreachable_holds_then_aborts),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_operator_commands),
        cmocka_unit_test(test_start_rules),
        cmocka_unit_test(test_status_json_round_trip),
        cmocka_unit_test(test_history_keeps_the_latest),
        cmocka_unit_test(test_spec_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
