#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "analysis.h"
#include "../support/test_rng.h"

static cv_test_rng rng;
static const char *const names[] = {"a:1", "b:2", "c:3"};

/* A histogram with bounds 50 ms..1 s in 50 ms steps and `n` observations at `ms`. */
static void fill_ttft(corvid_histogram *h, double ms, uint64_t n) {
    memset(h, 0, sizeof *h);
    h->n_bounds = 20;
    for (size_t i = 0; i < h->n_bounds; i++) h->bounds[i] = 0.05 * (double)(i + 1);
    for (size_t i = 0; i <= h->n_bounds; i++)
        h->counts[i] = (i == h->n_bounds || ms / 1e3 <= h->bounds[i]) ? n : 0;
    h->count = n;
    h->sum = n * ms / 1e3;
}

static void test_server_fault_codes(void **state) {
    (void)state;
    const int faults[] = {CORVID_UNKNOWN, CORVID_DEADLINE_EXCEEDED, CORVID_RESOURCE_EXHAUSTED,
                          CORVID_INTERNAL, CORVID_UNAVAILABLE, 15};
    int n_faults = 0;
    for (int c = 0; c < CORVID_CODES; c++) n_faults += cv_analysis_is_server_fault(c);
    assert_int_equal(n_faults, 6);
    for (size_t i = 0; i < 6; i++) assert_true(cv_analysis_is_server_fault(faults[i]));
    assert_false(cv_analysis_is_server_fault(CORVID_OK));
    assert_false(cv_analysis_is_server_fault(CORVID_CANCELLED));
    assert_false(cv_analysis_is_server_fault(CORVID_INVALID_ARGUMENT));
}

static void test_error_rate_over_servers(void **state) {
    (void)state;
    cv_analysis_thresholds th = {.max_error_rate = 0.05, .min_requests = 10};
    for (int round = 0; round < 100; round++) {
        corvid_slot_status s[3];
        const corvid_slot_status *p[3];
        bool up[3] = {true, true, true};
        uint64_t answered = 0, errors = 0;
        memset(s, 0, sizeof s);
        for (int i = 0; i < 3; i++) {
            for (int c = 0; c < CORVID_CODES; c++) {
                uint64_t k = cv_test_rng_next(&rng) % (c == 0 ? 500 : 8);
                s[i].requests_window[c] = k;
                if (c != CORVID_CANCELLED) answered += k;
                if (cv_analysis_is_server_fault(c)) errors += k;
            }
            p[i] = &s[i];
        }
        if (cv_test_rng_next(&rng) % 4 == 0) { /* a server without the slot counts as zero */
            for (int c = 0; c < CORVID_CODES; c++) {
                if (c != CORVID_CANCELLED) answered -= s[2].requests_window[c];
                if (cv_analysis_is_server_fault(c)) errors -= s[2].requests_window[c];
            }
            p[2] = NULL;
        }
        cv_analysis_result r;
        cv_analysis_judge(p, names, up, 3, &th, &r);
        assert_int_equal(r.requests, answered);
        assert_int_equal(r.errors, errors);
        assert_float_equal(r.error_rate, answered ? (double)errors / (double)answered : 0, 1e-12);
        if (answered < th.min_requests) assert_int_equal(r.verdict, CV_VERDICT_INCONCLUSIVE);
        else assert_int_equal(r.verdict, r.error_rate > 0.05 ? CV_VERDICT_FAIL : CV_VERDICT_PASS);
    }
}

static void test_cancelled_is_not_an_error(void **state) {
    (void)state;
    corvid_slot_status s;
    memset(&s, 0, sizeof s);
    s.requests_window[CORVID_OK] = 90;
    s.requests_window[CORVID_CANCELLED] = 500;
    s.requests_window[CORVID_INVALID_ARGUMENT] = 10;
    const corvid_slot_status *p = &s;
    bool up = true;
    cv_analysis_thresholds th = {.max_error_rate = 0.01, .min_requests = 100};
    cv_analysis_result r;
    cv_analysis_judge(&p, names, &up, 1, &th, &r);
    assert_int_equal(r.verdict, CV_VERDICT_PASS);
    assert_int_equal(r.requests, 100);
    assert_int_equal(r.errors, 0);
    s.requests_window[CORVID_INTERNAL] = 2;
    cv_analysis_judge(&p, names, &up, 1, &th, &r);
    assert_int_equal(r.verdict, CV_VERDICT_FAIL);
    assert_non_null(strstr(r.message, "above max_error_rate 0.0100"));
    th.min_requests = 103;
    cv_analysis_judge(&p, names, &up, 1, &th, &r);
    assert_int_equal(r.verdict, CV_VERDICT_INCONCLUSIVE);
    assert_non_null(strstr(r.message, "102 answered requests in the window, 103 needed"));
}

static void test_p99_merged_and_judged(void **state) {
    (void)state;
    corvid_slot_status s[2];
    memset(s, 0, sizeof s);
    uint64_t fast = 1000 + cv_test_rng_next(&rng) % 1000;
    s[0].requests_window[0] = fast;
    s[1].requests_window[0] = fast / 200; /* under 1% of the whole: the p99 stays fast */
    fill_ttft(&s[0].ttft_seconds, 20, fast);
    fill_ttft(&s[1].ttft_seconds, 900, fast / 200);
    const corvid_slot_status *p[2] = {&s[0], &s[1]};
    bool up[2] = {true, true};
    cv_analysis_thresholds th = {.max_error_rate = 0.05, .max_p99_ttft_ms = 100, .min_requests = 1};
    cv_analysis_result r;
    cv_analysis_judge(p, names, up, 2, &th, &r);
    assert_true(r.p99_ttft_ms > 0 && r.p99_ttft_ms <= 50.0 + 1e-9);
    assert_int_equal(r.verdict, CV_VERDICT_PASS);
    s[1].requests_window[0] = fast;
    fill_ttft(&s[1].ttft_seconds, 900, fast);
    cv_analysis_judge(p, names, up, 2, &th, &r);
    assert_true(r.p99_ttft_ms > 850 && r.p99_ttft_ms <= 900 + 1e-9);
    assert_int_equal(r.verdict, CV_VERDICT_FAIL);
    assert_non_null(strstr(r.message, "p99 TTFT"));
    /* Bounds that differ cannot be merged: the worst server's p99 is taken. */
    s[1].ttft_seconds.bounds[0] = 0.005;
    cv_analysis_judge(p, names, up, 2, &th, &r);
    assert_true(r.p99_ttft_ms > 850 && r.p99_ttft_ms <= 900 + 1e-9);
    th.max_p99_ttft_ms = 0; /* not judged */
    cv_analysis_judge(p, names, up, 2, &th, &r);
    assert_int_equal(r.verdict, CV_VERDICT_PASS);
}

static void test_unreachable_is_unmeasurable(void **state) {
    (void)state;
    corvid_slot_status s;
    memset(&s, 0, sizeof s);
    s.requests_window[CORVID_INTERNAL] = 1000;
    const corvid_slot_status *p[2] = {&s, NULL};
    bool up[2] = {true, false};
    cv_analysis_thresholds th = {.max_error_rate = 0.05, .min_requests = 1};
    cv_analysis_result r;
    cv_analysis_judge(p, names, up, 2, &th, &r);
    assert_int_equal(r.verdict, CV_VERDICT_UNMEASURABLE);
    assert_non_null(strstr(r.message, "b:2"));
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_analysis"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_fault_codes),
        cmocka_unit_test(test_error_rate_over_servers),
        cmocka_unit_test(test_cancelled_is_not_an_error),
        cmocka_unit_test(test_p99_merged_and_judged),
        cmocka_unit_test(test_unreachable_is_unmeasurable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
