/* cmocka_filter: runs only the test cases named by $CMOCKA_TEST_FILTER.
 *
 * Every cmocka binary is linked with this object and -Wl,--wrap=_cmocka_run_group_tests
 * (the function the cmocka_run_group_tests macros call), so no test's main() changes.
 * CMOCKA_TEST_FILTER is a comma-separated list of fnmatch(3) globs matched against the
 * whole case name ("test_cancel*,*_stream_*"); unset or empty, every case runs. A group
 * with no matching case returns 0 at once, without running its group setup (which may
 * start etcd or load a model) and without printing anything, so that tests/run.sh can
 * tell it did not take part. cmocka 1.1's own cmocka_set_test_filter() would still run
 * the group setup and takes one pattern only.
 */
#include <fnmatch.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

int __real__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);
int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);

static int matches(const char *filter, const char *name) {
    char glob[512];
    for (const char *p = filter; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof glob) {
            memcpy(glob, p, n);
            glob[n] = 0;
            if (fnmatch(glob, name, 0) == 0) return 1;
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown) {
    const char *filter = getenv("CMOCKA_TEST_FILTER");
    if (!filter || !*filter)
        return __real__cmocka_run_group_tests(group_name, tests, num_tests, group_setup, group_teardown);
    struct CMUnitTest *kept = calloc(num_tests ? num_tests : 1, sizeof *kept);
    if (!kept) {
        fprintf(stderr, "cmocka_filter: out of memory\n");
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < num_tests; i++)
        if (tests[i].name && matches(filter, tests[i].name)) kept[n++] = tests[i];
    int rc = n ? __real__cmocka_run_group_tests(group_name, kept, n, group_setup, group_teardown) : 0;
    free(kept);
    return rc;
}
