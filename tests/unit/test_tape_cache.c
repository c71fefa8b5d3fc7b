/* tape_cache: finds a handle only for an equal tape, keeps copies of the tapes, drops
 * the least recently used entry when full, and releases every handle it drops exactly
 * once. Tapes are random ops (random bytes in every field) drawn fresh each run;
 * CORVID_TEST_SEED=N replays one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "tape_cache.h"
#include "../support/test_rng.h"

static cv_test_rng g_rng;

/* released[h] counts the releases of handle h (handles are small integers). */
enum { MAX_HANDLES = 256 };
static int released[MAX_HANDLES];

static void release(void *ctx, void *handle) {
    assert_ptr_equal(ctx, released);
    uintptr_t h = (uintptr_t)handle;
    assert_true(h > 0 && h < MAX_HANDLES);
    released[h]++;
}

static void *handle(uintptr_t h) { return (void *)h; }

/* A tape of n ops with random bytes. */
static cv_op_tape random_tape(int n) {
    cv_op_tape t = {0};
    cv_error err = {0};
    for (int i = 0; i < n; i++) {
        cv_op op;
        unsigned char *b = (unsigned char *)&op;
        for (size_t j = 0; j < sizeof op; j++) b[j] = (unsigned char)cv_test_rng_next(&g_rng);
        if (cv_op_tape_push(&t, &op, &err)) fail_msg("%s", err.msg);
    }
    return t;
}

/* A tape with the ops of t, op by op (with flip >= 0: one bit of op `flip` flipped). */
static cv_op_tape copy_of(const cv_op_tape *t, int n, int flip) {
    cv_op_tape c = {0};
    cv_error err = {0};
    for (int i = 0; i < n; i++) {
        cv_op op = t->ops[i];
        if (i == flip) ((unsigned char *)&op)[cv_test_rng_next(&g_rng) % sizeof op] ^= 0x10;
        if (cv_op_tape_push(&c, &op, &err)) fail_msg("%s", err.msg);
    }
    return c;
}

static void test_find_needs_an_equal_tape(void **state) {
    (void)state;
    memset(released, 0, sizeof released);
    cv_tape_cache c;
    cv_tape_cache_init(&c, 4, release, released);
    cv_op_tape a = random_tape(300), b = random_tape(300);
    cv_error err = {0};
    assert_null(cv_tape_cache_find(&c, &a));
    assert_int_equal(cv_tape_cache_put(&c, &a, handle(1), &err), CV_OK);
    assert_ptr_equal(cv_tape_cache_find(&c, &a), handle(1));
    assert_null(cv_tape_cache_find(&c, &b));
    /* the same ops pushed again: found */
    cv_op_tape same = copy_of(&a, a.n, -1);
    assert_ptr_equal(cv_tape_cache_find(&c, &same), handle(1));
    /* one flipped bit in any op, or one op less: another tape */
    cv_op_tape flipped = copy_of(&a, a.n, (int)(cv_test_rng_next(&g_rng) % (uint64_t)a.n));
    cv_op_tape prefix = copy_of(&a, a.n - 1, -1);
    assert_null(cv_tape_cache_find(&c, &flipped));
    assert_null(cv_tape_cache_find(&c, &prefix));
    /* the cache keeps its own copy: scribbling over the tape it was given changes nothing */
    memset(a.ops, 0, (size_t)a.n * sizeof *a.ops);
    assert_null(cv_tape_cache_find(&c, &a));
    assert_ptr_equal(cv_tape_cache_find(&c, &same), handle(1));
    assert_int_equal(released[1], 0);
    cv_tape_cache_clear(&c);
    assert_int_equal(released[1], 1);
    assert_int_equal(cv_tape_cache_size(&c), 0);
    assert_null(cv_tape_cache_find(&c, &same));
    cv_op_tape_free(&a), cv_op_tape_free(&b), cv_op_tape_free(&same), cv_op_tape_free(&flipped);
    cv_op_tape_free(&prefix);
}

static void test_least_recently_used_goes_first(void **state) {
    (void)state;
    memset(released, 0, sizeof released);
    enum { CAP = 5, TOTAL = 40 };
    cv_tape_cache c;
    cv_tape_cache_init(&c, CAP, release, released);
    cv_op_tape tapes[TOTAL];
    uint64_t last_use[TOTAL] = {0}, clock = 0;
    int held[TOTAL] = {0};
    cv_error err = {0};
    for (int i = 0; i < TOTAL; i++) {
        tapes[i] = random_tape(1 + (int)(cv_test_rng_next(&g_rng) % 40));
        /* touch a few held entries at random, as replays do */
        for (int k = 0; k < 3; k++) {
            int j = (int)(cv_test_rng_next(&g_rng) % (uint64_t)(i ? i : 1));
            if (i && held[j]) {
                assert_ptr_equal(cv_tape_cache_find(&c, &tapes[j]), handle((uintptr_t)j + 1));
                last_use[j] = ++clock;
            }
        }
        int want_evicted = -1;
        if (cv_tape_cache_size(&c) == CAP)
            for (int j = 0; j < i; j++)
                if (held[j] && (want_evicted < 0 || last_use[j] < last_use[want_evicted])) want_evicted = j;
        assert_int_equal(cv_tape_cache_put(&c, &tapes[i], handle((uintptr_t)i + 1), &err), CV_OK);
        held[i] = 1;
        last_use[i] = ++clock;
        if (want_evicted >= 0) {
            held[want_evicted] = 0;
            assert_int_equal(released[want_evicted + 1], 1);
            assert_null(cv_tape_cache_find(&c, &tapes[want_evicted]));
        }
        assert_int_equal(cv_tape_cache_size(&c), i + 1 < CAP ? i + 1 : CAP);
    }
    for (int j = 0; j < TOTAL; j++)
        if (held[j]) assert_int_equal(released[j + 1], 0);
    cv_tape_cache_clear(&c);
    for (int j = 0; j < TOTAL; j++) {
        assert_int_equal(released[j + 1], 1);
        cv_op_tape_free(&tapes[j]);
    }
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_tape_cache"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_needs_an_equal_tape),
        cmocka_unit_test(test_least_recently_used_goes_first),
    };
    return cmocka_run_group_tests_name("tape_cache", tests, NULL, NULL);
}
