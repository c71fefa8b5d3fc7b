#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "cv_error.h"

static void test_errorf_fills_code_and_message(void **state) {
    (void)state;
    cv_error e = {0};
    assert_int_equal(cv_errorf(&e, CV_EFORMAT, "field %s at offset %d", "n_dims", 24), CV_EFORMAT);
    assert_int_equal(e.code, CV_EFORMAT);
    assert_string_equal(e.msg, "field n_dims at offset 24");
    cv_error_wrap(&e, "loading %s", "m.gguf");
    assert_string_equal(e.msg, "loading m.gguf: field n_dims at offset 24");
    assert_int_equal(cv_errorf(NULL, CV_EIO, "ignored"), CV_EIO);
}

static void test_long_message_is_truncated_not_overflowed(void **state) {
    (void)state;
    cv_error e = {0};
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cv_errorf(&e, CV_EINVAL, "%s", big);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    assert_string_equal(cv_status_name(CV_ENOTFOUND), "not found");
    assert_string_equal(cv_status_name((cv_status)999), "unknown error");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errorf_fills_code_and_message),
        cmocka_unit_test(test_long_message_is_truncated_not_overflowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
