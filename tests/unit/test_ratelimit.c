#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "../support/test_rng.h"

static cv_test_rng rng;
static uint64_t now_ns = 1000000000000ULL;
static uint64_t fake_clock(void *ctx) {
    (void)ctx;
    return __atomic_load_n(&now_ns, __ATOMIC_RELAXED);
}
static void advance_ms(double ms) { now_ns += (uint64_t)(ms * 1e6 + 0.5); }

static cv_ratelimit *limiter(double rate, double burst, size_t max_keys) {
    cv_ratelimit_config cfg = {rate, burst, max_keys, fake_clock, NULL};
    cv_ratelimit *r = NULL;
    cv_error e = {0};
    if (cv_ratelimit_new(&cfg, &r, &e) != CV_OK) fail_msg("%s", e.msg);
    return r;
}

static void test_burst_then_refill(void **state) {
    (void)state;
    cv_ratelimit *r = limiter(2, 3, 0);
    double retry = -1;
    for (int i = 0; i < 3; i++) assert_true(cv_ratelimit_take(r, "alice", &retry));
    assert_false(cv_ratelimit_take(r, "alice", &retry));
    assert_float_equal(retry, 0.5, 1e-9);
    advance_ms(250);
    assert_false(cv_ratelimit_take(r, "alice", &retry));
    assert_float_equal(retry, 0.25, 1e-6);
    advance_ms(250);
    assert_true(cv_ratelimit_take(r, "alice", &retry));
    assert_false(cv_ratelimit_take(r, "alice", &retry));
    assert_float_equal(retry, 0.5, 1e-6);
    /* A long idle refills to burst, not beyond. */
    advance_ms(100000);
    for (int i = 0; i < 3; i++) assert_true(cv_ratelimit_take(r, "alice", NULL));
    assert_false(cv_ratelimit_take(r, "alice", NULL));
    /* Keys are independent. */
    assert_true(cv_ratelimit_take(r, "bob", NULL));
    assert_int_equal(cv_ratelimit_size(r), 2);
    cv_ratelimit_free(r);
}

static void test_fractional_rate(void **state) {
    (void)state;
    cv_ratelimit *r = limiter(0.1, 1, 0); /* one call per 10 s */
    double retry;
    assert_true(cv_ratelimit_take(r, "k", &retry));
    assert_false(cv_ratelimit_take(r, "k", &retry));
    assert_float_equal(retry, 10.0, 1e-9);
    advance_ms(9999);
    assert_false(cv_ratelimit_take(r, "k", &retry));
    assert_float_equal(retry, 0.001, 1e-6);
    advance_ms(1);
    assert_true(cv_ratelimit_take(r, "k", &retry));
    cv_ratelimit_free(r);
}

static void test_lru_eviction_is_bounded(void **state) {
    (void)state;
    cv_ratelimit *r = limiter(1, 2, 4);
    char key[16];
    for (int k = 0; k < 4; k++) {
        snprintf(key, sizeof key, "k%d", k);
        assert_true(cv_ratelimit_take(r, key, NULL));
        assert_true(cv_ratelimit_take(r, key, NULL));
        assert_false(cv_ratelimit_take(r, key, NULL));
    }
    assert_false(cv_ratelimit_take(r, "k0", NULL)); /* k0 becomes the newest */
    assert_true(cv_ratelimit_take(r, "k4", NULL));  /* evicts k1, the oldest */
    assert_int_equal(cv_ratelimit_size(r), 4);
    assert_true(cv_ratelimit_take(r, "k1", NULL));  /* forgotten: a full bucket again */
    assert_false(cv_ratelimit_take(r, "k0", NULL)); /* remembered: still empty */
    assert_false(cv_ratelimit_take(r, "k3", NULL)); /* remembered: still empty */
    /* Many more keys than slots: the size stays bounded. */
    for (int k = 0; k < 1000; k++) {
        snprintf(key, sizeof key, "x%d", k);
        assert_true(cv_ratelimit_take(r, key, NULL));
    }
    assert_int_equal(cv_ratelimit_size(r), 4);
    cv_ratelimit_free(r);
}

static void test_long_keys_are_cut(void **state) {
    (void)state;
    cv_ratelimit *r = limiter(1, 1, 0);
    char a[400], b[400];
    memset(a, 'a', sizeof a - 1);
    a[sizeof a - 1] = 0;
    memcpy(b, a, sizeof b);
    b[350] = 'b'; /* differs only beyond the key limit */
    assert_true(cv_ratelimit_take(r, a, NULL));
    assert_false(cv_ratelimit_take(r, b, NULL));
    b[100] = 'b';
    assert_true(cv_ratelimit_take(r, b, NULL));
    cv_ratelimit_free(r);
}

/* Random rates and bursts, requests at random gaps: the count allowed over T seconds
 * never exceeds burst + rate*T, and with requests denser than the refill it reaches
 * at least burst + floor(rate*T) - 1 (what the bucket refills while still full at the
 * start is lost, less than one token). */
static void test_random_schedule_bounds(void **state) {
    (void)state;
    for (int it = 0; it < 50; it++) {
        double rate = 0.5 + (double)(cv_test_rng_next(&rng) % 2000) / 100.0;
        /* burst >= 2: with 1, refill arriving while the bucket is full is lost. */
        double burst = 2 + (double)(cv_test_rng_next(&rng) % 20);
        cv_ratelimit *r = limiter(rate, burst, 8);
        double gap_ms_max = 1000.0 / rate / 2, t_ms = 0;
        int allowed = 0;
        for (int k = 0; k < 400; k++) {
            double gap = gap_ms_max * (double)(cv_test_rng_next(&rng) % 1000) / 1000.0;
            if (k) { advance_ms(gap); t_ms += gap; }
            allowed += cv_ratelimit_take(r, "s", NULL);
        }
        double t = t_ms / 1000.0;
        if (allowed > burst + rate * t + 1e-6 || allowed < burst + (int)(rate * t) - 1)
            fail_msg("rate %g burst %g over %g s: %d allowed", rate, burst, t, allowed);
        cv_ratelimit_free(r);
    }
}

static cv_ratelimit *shared;
static int allowed_total;
static void *hammer(void *arg) {
    (void)arg;
    int n = 0;
    for (int i = 0; i < 5000; i++) {
        char key[8];
        snprintf(key, sizeof key, "t%d", i % 3);
        n += cv_ratelimit_take(shared, key, NULL);
    }
    __atomic_add_fetch(&allowed_total, n, __ATOMIC_RELAXED);
    return NULL;
}

/* Four threads with the clock frozen: exactly burst tokens per key are handed out. */
static void test_threads_share_buckets(void **state) {
    (void)state;
    shared = limiter(1000, 100, 16);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(allowed_total, 300);
    cv_ratelimit_free(shared);
}

static void test_bad_config(void **state) {
    (void)state;
    cv_ratelimit *r = NULL;
    cv_error e = {0};
    cv_ratelimit_config c = {0, 10, 0, NULL, NULL};
    assert_int_equal(cv_ratelimit_new(&c, &r, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "per_second 0 must be in (0, 1e9]"));
    c.per_second = 5;
    c.burst = 0.5;
    assert_int_equal(cv_ratelimit_new(&c, &r, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "burst 0.5 must be in [1, 1e9]"));
    c.burst = 1;
    c.max_keys = (size_t)1 << 30;
    assert_int_equal(cv_ratelimit_new(&c, &r, &e), CV_ERANGE);
    /* The real clock works too. */
    c.max_keys = 0;
    assert_int_equal(cv_ratelimit_new(&c, &r, &e), CV_OK);
    assert_true(cv_ratelimit_take(r, "a", NULL));
    cv_ratelimit_free(r);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_ratelimit"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_fractional_rate),
        cmocka_unit_test(test_lru_eviction_is_bounded),
        cmocka_unit_test(test_long_keys_are_cut),
        cmocka_unit_test(test_random_schedule_bounds),
        cmocka_unit_test(test_threads_share_buckets),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
