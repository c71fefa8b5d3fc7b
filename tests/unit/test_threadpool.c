#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "threadpool.h"

typedef struct count_ctx {
    _Atomic int calls[8];
    _Atomic int nth_seen;
} count_ctx;

static void count_task(void *c, int ith, int nth) {
    count_ctx *x = c;
    atomic_fetch_add(&x->calls[ith], 1);
    atomic_store(&x->nth_seen, nth);
}

static void test_each_thread_runs_once_per_task(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) {
        cv_threadpool *pool;
        cv_error err = {0};
        assert_int_equal(cv_threadpool_create(n, &pool, &err), CV_OK);
        assert_int_equal(cv_threadpool_size(pool), n);
        count_ctx c;
        memset(&c, 0, sizeof c);
        for (int r = 0; r < 500; r++) cv_threadpool_run(pool, count_task, &c);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c.calls[i]), 500);
        for (int i = n; i < 8; i++) assert_int_equal(atomic_load(&c.calls[i]), 0);
        assert_int_equal(atomic_load(&c.nth_seen), n);
        cv_threadpool_destroy(pool);
    }
}

/* Each thread writes its slot, waits at the barrier, then reads every slot: without a
 * working barrier some reads would see the previous round's values. */
typedef struct bar_ctx {
    cv_threadpool *pool;
    _Atomic int slot[4];
    _Atomic int bad;
    int round;
} bar_ctx;

static void barrier_task(void *c, int ith, int nth) {
    bar_ctx *b = c;
    for (int k = 0; k < 20; k++) {
        int v = b->round * 100 + k;
        atomic_store(&b->slot[ith], v);
        cv_threadpool_barrier(b->pool);
        for (int i = 0; i < nth; i++)
            if (atomic_load(&b->slot[i]) != v) atomic_fetch_add(&b->bad, 1);
        cv_threadpool_barrier(b->pool);
    }
}

static void test_barrier_separates_phases(void **state) {
    (void)state;
    cv_threadpool *pool;
    assert_int_equal(cv_threadpool_create(3, &pool, NULL), CV_OK);
    bar_ctx b;
    memset(&b, 0, sizeof b);
    b.pool = pool;
    for (b.round = 0; b.round < 50; b.round++) cv_threadpool_run(pool, barrier_task, &b);
    assert_int_equal(atomic_load(&b.bad), 0);
    cv_threadpool_destroy(pool);
}

/* Items are each done exactly once, by threads whose ith is in range and never held
 * by two threads at a time, with run() tasks interleaved (a late worker of a for()
 * must neither miss a run() nor claim items of a finished for()). */
typedef struct item_ctx {
    _Atomic int hits[4096];
    _Atomic int busy[8];
    _Atomic int bad;
    int nth;
} item_ctx;

static void item_task(void *c, int64_t item, int ith) {
    item_ctx *x = c;
    if (ith < 0 || ith >= x->nth || atomic_exchange(&x->busy[ith], 1) != 0) atomic_fetch_add(&x->bad, 1);
    atomic_fetch_add(&x->hits[item], 1);
    if (ith >= 0 && ith < x->nth) atomic_store(&x->busy[ith], 0);
}

static void test_for_claims_every_item_once(void **state) {
    (void)state;
    for (int n = 1; n <= 4; n++) {
        cv_threadpool *pool;
        assert_int_equal(cv_threadpool_create(n, &pool, NULL), CV_OK);
        item_ctx *x = calloc(1, sizeof *x);
        assert_non_null(x);
        x->nth = n;
        count_ctx c;
        memset(&c, 0, sizeof c);
        int64_t total = 0;
        for (int r = 0; r < 300; r++) {
            int64_t items = 1 + (r * 37) % 4096;
            cv_threadpool_for(pool, item_task, x, items);
            for (int64_t i = 0; i < items; i++) assert_int_equal(atomic_exchange(&x->hits[i], 0), 1);
            total += items;
            if (r % 3 == 0) cv_threadpool_run(pool, count_task, &c);
        }
        cv_threadpool_for(pool, item_task, x, 0);
        assert_int_equal(atomic_load(&x->bad), 0);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c.calls[i]), 100);
        free(x);
        cv_threadpool_destroy(pool);
    }
}

static void test_split_range_covers_once(void **state) {
    (void)state;
    int64_t ns[] = {0, 1, 7, 16, 17, 100, 1023};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int64_t align = 1; align <= 16; align *= 4)
            for (int nth = 1; nth <= 5; nth++) {
                int64_t next = 0;
                for (int i = 0; i < nth; i++) {
                    int64_t lo, hi;
                    cv_split_range(ns[k], align, i, nth, &lo, &hi);
                    assert_int_equal(lo, next);
                    assert_true(hi >= lo);
                    if (hi < ns[k]) assert_int_equal(hi % align, 0);
                    next = hi;
                }
                assert_int_equal(next, ns[k]);
            }
}

static void test_rejects_absurd_thread_count(void **state) {
    (void)state;
    cv_threadpool *pool = (cv_threadpool *)1;
    cv_error err = {0};
    assert_int_equal(cv_threadpool_create(100000, &pool, &err), CV_ERANGE);
    assert_null(pool);
    assert_non_null(strstr(err.msg, "100000"));
    assert_int_equal(cv_threadpool_create(0, &pool, &err), CV_OK);
    assert_true(cv_threadpool_size(pool) >= 1);
    cv_threadpool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_thread_runs_once_per_task),
        cmocka_unit_test(test_barrier_separates_phases),
        cmocka_unit_test(test_for_claims_every_item_once),
        cmocka_unit_test(test_split_range_covers_once),
        cmocka_unit_test(test_rejects_absurd_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
