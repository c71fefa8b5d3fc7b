#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "membw.h"

static void test_median(void **state) {
    (void)state;
    double odd[] = {5, 1, 3}, even[] = {4, 1, 3, 2}, one[] = {7};
    assert_true(cv_median(odd, 3) == 3);
    assert_true(cv_median(even, 4) == 2.5);
    assert_true(cv_median(one, 1) == 7);
}

static void test_probes_report_a_bandwidth(void **state) {
    (void)state;
    cv_threadpool *pool;
    cv_error err = {0};
    assert_int_equal(cv_threadpool_create(2, &pool, &err), CV_OK);
    double r = 0, t = 0;
    assert_int_equal(cv_membw_read(pool, 8 << 20, 3, &r, &err), CV_OK);
    assert_int_equal(cv_membw_triad(pool, 8 << 20, 3, &t, &err), CV_OK);
    /* Any machine moves 8 MiB at more than 10 MB/s and less than 10 TB/s. */
    assert_true(r > 0.01 && r < 1e4);
    assert_true(t > 0.01 && t < 1e4);
    assert_int_equal(cv_membw_read(pool, 8 << 20, 0, &r, &err), CV_ERANGE);
    assert_non_null(strstr(err.msg, "0 runs"));
    assert_int_equal(cv_membw_triad(pool, 100, 3, &r, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "100 bytes"));
    cv_threadpool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median),
        cmocka_unit_test(test_probes_report_a_bandwidth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
