/* The client's pure parts: endpoint lists, backoff bounds, gRPC code mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"

static void test_endpoint_lists(void **state) {
    (void)state;
    cv_etcd *c;
    cv_error e = {0};
    cv_etcd_config cfg = {.endpoints = " http://a:1/, https://b:2 ,,http://c:3"};
    assert_int_equal(cv_etcd_open(&cfg, &c, &e), CV_OK);
    assert_int_equal(cv_etcd_endpoint_count(c), 3);
    assert_string_equal(cv_etcd_endpoint(c, 0), "http://a:1");
    assert_string_equal(cv_etcd_endpoint(c, 1), "https://b:2");
    assert_string_equal(cv_etcd_endpoint(c, 2), "http://c:3");
    assert_int_equal(cv_etcd_get_config(c)->timeout_ms, 5000);
    cv_etcd_set_preferred(c, 4);
    assert_int_equal(cv_etcd_preferred(c), 1);
    cv_etcd_close(c);
    cfg.endpoints = "http://a:1,a:2";
    assert_int_equal(cv_etcd_open(&cfg, &c, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "\"a:2\""));
    cfg.endpoints = " , ";
    assert_int_equal(cv_etcd_open(&cfg, &c, &e), CV_EINVAL);
    char many[40 * 20] = "";
    for (int i = 0; i <= CV_ETCD_MAX_ENDPOINTS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "http://h%d:1,", i);
    cfg.endpoints = many;
    assert_int_equal(cv_etcd_open(&cfg, &c, &e), CV_ERANGE);
}

static void test_backoff_is_bounded_jitter(void **state) {
    (void)state;
    cv_etcd_config cfg = {.backoff_base_ms = 25, .backoff_max_ms = 1000};
    uint64_t rng = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    fprintf(stderr, "seed %llu\n", (unsigned long long)rng);
    for (unsigned round = 0; round < 40; round++) {
        int cap = round < 6 ? 25 << round : 1000;
        if (cap > 1000) cap = 1000;
        int lo = cap, hi = 0;
        for (int i = 0; i < 2000; i++) {
            int d = cv_etcd_backoff_ms(&cfg, round, &rng);
            assert_in_range(d, 0, cap);
            if (d < lo) lo = d;
            if (d > hi) hi = d;
        }
        /* Full jitter spreads over the whole window. */
        assert_true(lo <= cap / 10);
        assert_true(hi >= cap - cap / 10);
    }
}

static void test_grpc_codes(void **state) {
    (void)state;
    assert_int_equal(cv_etcd_grpc_status(0), CV_OK);
    assert_int_equal(cv_etcd_grpc_status(5), CV_ENOTFOUND);
    assert_int_equal(cv_etcd_grpc_status(11), CV_ERANGE);
    assert_int_equal(cv_etcd_grpc_status(14), CV_EUNAVAILABLE);
    assert_int_equal(cv_etcd_grpc_status(4), CV_ETIMEOUT);
    assert_int_equal(cv_etcd_grpc_status(16), CV_EAUTH);
    assert_int_equal(cv_etcd_grpc_status(99), CV_EIO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_lists),
        cmocka_unit_test(test_backoff_is_bounded_jitter),
        cmocka_unit_test(test_grpc_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
