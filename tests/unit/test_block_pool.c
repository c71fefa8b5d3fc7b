/* block_pool: reference counts, the hash-chain index and LRU eviction, checked against
 * what block_pool.h promises, and a random workload against a plain model of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

#define BS 4

static cv_bpool *pool(int32_t n) {
    cv_bpool *p;
    cv_error e = {0};
    assert_int_equal(cv_bpool_create(n, BS, &p, &e), CV_OK);
    return p;
}

static void test_chain_hash_depends_on_every_token_and_the_parent(void **state) {
    (void)state;
    const int32_t a[BS] = {1, 2, 3, 4}, b[BS] = {1, 2, 3, 5}, c[BS] = {2, 1, 3, 4};
    const uint64_t h = cv_bpool_chain(7, a, BS);
    assert_true(h == cv_bpool_chain(7, a, BS));
    assert_true(h != cv_bpool_chain(8, a, BS));
    assert_true(h != cv_bpool_chain(7, b, BS));
    assert_true(h != cv_bpool_chain(7, c, BS)); /* order counts */
    assert_true(cv_bpool_chain(7, a, 3) != h);
    assert_true(cv_bpool_hash_bytes(1, "v1", 2) != cv_bpool_hash_bytes(1, "v2", 2));
    assert_true(cv_bpool_hash_bytes(1, "v1", 2) != cv_bpool_hash_bytes(2, "v1", 2));
}

static void test_take_hands_out_low_blocks_first_then_runs_out(void **state) {
    (void)state;
    cv_bpool *p = pool(3);
    assert_int_equal(cv_bpool_available(p), 3);
    for (int32_t b = 0; b < 3; b++) assert_int_equal(cv_bpool_take(p), b);
    assert_int_equal(cv_bpool_take(p), -1);
    assert_int_equal(cv_bpool_available(p), 0);
    cv_bpool_unref(p, 1); /* never published: straight back to the free stack */
    assert_int_equal(cv_bpool_available(p), 1);
    assert_int_equal(cv_bpool_take(p), 1);
    assert_int_equal(cv_bpool_evictions(p), 0);
    cv_bpool_free(p);
    cv_error e = {0};
    assert_int_equal(cv_bpool_create(0, BS, &p, &e), CV_EINVAL);
    assert_null(p);
}

static void test_find_matches_hash_parent_and_tokens(void **state) {
    (void)state;
    cv_bpool *p = pool(4);
    const int32_t t[BS] = {9, 8, 7, 6}, u[BS] = {9, 8, 7, 5};
    const int32_t b = cv_bpool_take(p);
    const uint64_t h = cv_bpool_chain(1, t, BS);
    assert_int_equal(cv_bpool_find(p, h, 1, t), -1);
    assert_int_equal(cv_bpool_publish(p, b, h, 1, t), 1);
    assert_int_equal(cv_bpool_cached(p), 1);
    assert_int_equal(cv_bpool_find(p, h, 1, t), b);
    /* The same hash with other tokens or another parent (a collision) is no match. */
    assert_int_equal(cv_bpool_find(p, h, 1, u), -1);
    assert_int_equal(cv_bpool_find(p, h, 2, t), -1);
    /* A second block with a known hash stays private; publishing twice changes nothing. */
    const int32_t dup = cv_bpool_take(p);
    assert_int_equal(cv_bpool_publish(p, dup, h, 1, t), 0);
    assert_int_equal(cv_bpool_publish(p, b, cv_bpool_chain(1, u, BS), 1, u), 0);
    assert_int_equal(cv_bpool_cached(p), 1);
    cv_bpool_unref(p, dup);
    assert_int_equal(cv_bpool_take(p), dup); /* it went back to the free stack */
    cv_bpool_free(p);
}

static void test_refcounts_keep_shared_blocks_until_the_last_user(void **state) {
    (void)state;
    cv_bpool *p = pool(2);
    const int32_t t[BS] = {1, 1, 1, 1};
    const uint64_t h = cv_bpool_chain(0, t, BS);
    const int32_t b = cv_bpool_take(p);
    cv_bpool_publish(p, b, h, 0, t);
    cv_bpool_ref(p, b); /* a second sequence shares it */
    assert_int_equal(cv_bpool_refs(p, b), 2);
    cv_bpool_unref(p, b);
    assert_int_equal(cv_bpool_refs(p, b), 1);
    assert_int_equal(cv_bpool_available(p), 1);
    cv_bpool_unref(p, b); /* unused, cached: available but still found */
    assert_int_equal(cv_bpool_available(p), 2);
    assert_int_equal(cv_bpool_find(p, h, 0, t), b);
    cv_bpool_ref(p, b); /* taken back from the LRU list */
    assert_int_equal(cv_bpool_available(p), 1);
    assert_int_equal(cv_bpool_take(p), 1 - b); /* the free one, not the cached one */
    assert_int_equal(cv_bpool_take(p), -1);
    assert_int_equal(cv_bpool_evictions(p), 0);
    cv_bpool_free(p);
}

static void test_eviction_takes_the_least_recently_released(void **state) {
    (void)state;
    cv_bpool *p = pool(3);
    int32_t t[3][BS];
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < BS; k++) t[i][k] = 10 * i + k;
        h[i] = cv_bpool_chain(0, t[i], BS);
        assert_int_equal(cv_bpool_take(p), i);
        cv_bpool_publish(p, i, h[i], 0, t[i]);
    }
    cv_bpool_unref(p, 2);
    cv_bpool_unref(p, 0);
    cv_bpool_unref(p, 1); /* LRU order: 2, 0, 1 */
    cv_bpool_ref(p, 0);   /* in use again: out of the LRU list */
    cv_bpool_unref(p, 0); /* now the most recent: 2, 1, 0 */
    assert_int_equal(cv_bpool_take(p), 2);
    assert_int_equal(cv_bpool_find(p, h[2], 0, t[2]), -1);
    assert_int_equal(cv_bpool_take(p), 1);
    assert_int_equal(cv_bpool_evictions(p), 2);
    assert_int_equal(cv_bpool_cached(p), 1);
    assert_int_equal(cv_bpool_find(p, h[0], 0, t[0]), 0);
    assert_int_equal(cv_bpool_take(p), 0);
    assert_int_equal(cv_bpool_take(p), -1);
    assert_int_equal(cv_bpool_cached(p), 0);
    cv_bpool_free(p);
}

/* Random take/ref/unref/publish/find on 64 blocks with tokens from a tiny alphabet, so
 * probe runs collide and eviction shifts entries: the pool must agree with a plain
 * model (refs, cached contents, LRU order) after every operation. */
static void test_random_workload_matches_a_model(void **state) {
    (void)state;
    enum { N = 64, OPS = 20000 };
    cv_bpool *p = pool(N);
    int32_t ref[N] = {0}, cached[N] = {0}, tok[N][BS];
    uint64_t hash[N], stamp[N] = {0}, clock = 0;
    uint64_t evictions = 0;
    srand(11);
    for (int op = 0; op < OPS; op++) {
        static const int kinds[10] = {0, 0, 0, 1, 2, 2, 2, 3, 3, 3};
        const int kind = kinds[rand() % 10];
        const int32_t b = rand() % N;
        if (kind == 0) {
            int32_t avail = 0, oldest = -1;
            for (int32_t i = 0; i < N; i++) {
                avail += ref[i] == 0;
                if (ref[i] == 0 && cached[i] && (oldest < 0 || stamp[i] < stamp[oldest])) oldest = i;
            }
            int any_free = 0;
            for (int32_t i = 0; i < N; i++) any_free |= ref[i] == 0 && !cached[i];
            assert_int_equal(cv_bpool_available(p), avail);
            const int32_t got = cv_bpool_take(p);
            if (!avail) {
                assert_int_equal(got, -1);
                continue;
            }
            assert_true(got >= 0 && ref[got] == 0);
            if (!any_free) { /* only cached blocks left: the least recent goes */
                assert_int_equal(got, oldest);
                cached[got] = 0;
                evictions++;
            } else {
                assert_false(cached[got]);
            }
            ref[got] = 1;
        } else if (kind == 1 && (ref[b] > 0 || cached[b])) {
            cv_bpool_ref(p, b);
            ref[b]++;
        } else if (kind == 2 && ref[b] > 0) {
            cv_bpool_unref(p, b);
            if (--ref[b] == 0) stamp[b] = ++clock;
        } else if (kind == 3 && ref[b] > 0) {
            int32_t t[BS];
            for (int k = 0; k < BS; k++) t[k] = rand() % 3;
            const uint64_t h = cv_bpool_chain(0, t, BS);
            int known = cached[b];
            for (int32_t i = 0; i < N; i++) known |= cached[i] && hash[i] == h;
            assert_int_equal(cv_bpool_publish(p, b, h, 0, t), !known);
            if (!known) {
                cached[b] = 1;
                hash[b] = h;
                memcpy(tok[b], t, sizeof t);
            }
        }
        for (int32_t i = 0; i < N; i++) {
            assert_int_equal(cv_bpool_refs(p, i), ref[i]);
            if (cached[i]) assert_int_equal(cv_bpool_find(p, hash[i], 0, tok[i]), i);
        }
    }
    assert_int_equal(cv_bpool_evictions(p), evictions);
    printf("%llu evictions\n", (unsigned long long)evictions);
    assert_true(evictions > 100);
    cv_bpool_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_hash_depends_on_every_token_and_the_parent),
        cmocka_unit_test(test_take_hands_out_low_blocks_first_then_runs_out),
        cmocka_unit_test(test_find_matches_hash_parent_and_tokens),
        cmocka_unit_test(test_refcounts_keep_shared_blocks_until_the_last_user),
        cmocka_unit_test(test_eviction_takes_the_least_recently_released),
        cmocka_unit_test(test_random_workload_matches_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
