/* key -> mod_revision: only newer revisions apply, tombstones hold, growth keeps all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd_revmap.h"

static bool advance(cv_etcd_revmap *m, const char *k, int64_t rev) {
    bool applied;
    cv_error e = {0};
    assert_int_equal(cv_etcd_revmap_advance(m, k, strlen(k), rev, &applied, &e), CV_OK);
    return applied;
}

static void test_only_newer_applies(void **state) {
    (void)state;
    cv_etcd_revmap m = {0};
    assert_int_equal(cv_etcd_revmap_get(&m, "a", 1), 0);
    assert_true(advance(&m, "a", 5));
    assert_false(advance(&m, "a", 5));
    assert_false(advance(&m, "a", 4));
    assert_true(advance(&m, "a", 9));
    assert_true(advance(&m, "b", 1));
    assert_int_equal(cv_etcd_revmap_get(&m, "a", 1), 9);
    /* Keys are byte strings: "a\0x" is not "a". */
    bool applied;
    cv_error e = {0};
    assert_int_equal(cv_etcd_revmap_advance(&m, "a\0x", 3, 2, &applied, &e), CV_OK);
    assert_true(applied);
    assert_int_equal(cv_etcd_revmap_get(&m, "a\0x", 3), 2);
    cv_etcd_revmap_clear(&m);
    assert_int_equal(cv_etcd_revmap_get(&m, "a", 1), 0);
    assert_true(advance(&m, "a", 1));
    cv_etcd_revmap_free(&m);
}

static void test_many_keys_against_a_model(void **state) {
    (void)state;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "seed %u\n", seed);
    srand(seed);
    enum { KEYS = 3000 };
    static int64_t model[KEYS];
    memset(model, 0, sizeof model);
    cv_etcd_revmap m = {0};
    for (int i = 0; i < 40000; i++) {
        int k = rand() % KEYS;
        int64_t rev = rand() % 1000 + 1;
        char key[16];
        snprintf(key, sizeof key, "/k/%d", k);
        assert_int_equal(advance(&m, key, rev), rev > model[k]);
        if (rev > model[k]) model[k] = rev;
    }
    for (int k = 0; k < KEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "/k/%d", k);
        assert_int_equal(cv_etcd_revmap_get(&m, key, strlen(key)), model[k]);
    }
    cv_etcd_revmap_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_newer_applies),
        cmocka_unit_test(test_many_keys_against_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
