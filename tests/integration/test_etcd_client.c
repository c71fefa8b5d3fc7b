/* The etcd client against a real etcd started on free loopback ports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../support/etcd_proc.h"
#include "etcd.h"

static cv_test_etcd *const g_etcd = &cv_test_etcd_shared;
static cv_etcd *g_c;
static char g_prefix[64];

static cv_etcd *open_client(const char *endpoints, int timeout_ms) {
    cv_etcd_config cfg = {.endpoints = endpoints, .timeout_ms = timeout_ms,
                          .attempt_timeout_ms = timeout_ms / 2};
    cv_etcd *c = NULL;
    cv_error e = {0};
    if (cv_etcd_open(&cfg, &c, &e)) fail_msg("cv_etcd_open: %s", e.msg);
    return c;
}

static int setup(void **state) {
    if (cv_test_etcd_group_setup(state)) return -1;
    snprintf(g_prefix, sizeof g_prefix, "/t%08x/", (unsigned)rand());
    g_c = open_client(g_etcd->url, 4000);
    return 0;
}

static int teardown(void **state) {
    cv_etcd_close(g_c);
    return cv_test_etcd_group_teardown(state);
}

static void key(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s%s", g_prefix, name); }

static void test_put_get_range_prefix(void **state) {
    (void)state;
    cv_error e = {0};
    char k[128];
    /* Values are random bytes, NUL included, to check the base64 round trip. */
    char vals[5][33];
    int64_t last_rev = 0;
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 33; j++) vals[i][j] = (char)(rand() & 0xff);
        snprintf(k, sizeof k, "%sr/%d", g_prefix, i);
        cv_etcd_header h;
        assert_int_equal(cv_etcd_put(g_c, k, vals[i], 33, 0, &h, &e), CV_OK);
        assert_true(h.revision > last_rev);
        last_rev = h.revision;
    }
    key(k, sizeof k, "r/");
    cv_etcd_range_req req = {.key = k, .prefix = true};
    cv_etcd_range_result r;
    assert_int_equal(cv_etcd_range(g_c, &req, &r, &e), CV_OK);
    assert_int_equal(r.n_kvs, 5);
    assert_int_equal(r.count, 5);
    assert_true(r.header.revision >= last_rev);
    for (int i = 0; i < 5; i++) {
        char want[128];
        snprintf(want, sizeof want, "%sr/%d", g_prefix, i);
        assert_string_equal(r.kvs[i].key, want);
        assert_int_equal(r.kvs[i].value_len, 33);
        assert_memory_equal(r.kvs[i].value, vals[i], 33);
        assert_int_equal(r.kvs[i].version, 1);
        assert_int_equal(r.kvs[i].create_revision, r.kvs[i].mod_revision);
    }
    cv_etcd_range_result_free(&r);

    req.limit = 2;
    assert_int_equal(cv_etcd_range(g_c, &req, &r, &e), CV_OK);
    assert_int_equal(r.n_kvs, 2);
    assert_int_equal(r.count, 5);
    assert_true(r.more);
    cv_etcd_range_result_free(&r);

    cv_etcd_kv kv;
    snprintf(k, sizeof k, "%sr/3", g_prefix);
    assert_int_equal(cv_etcd_get(g_c, k, &kv, NULL, &e), CV_OK);
    assert_memory_equal(kv.value, vals[3], 33);
    cv_etcd_kv_free(&kv);
    key(k, sizeof k, "absent");
    assert_int_equal(cv_etcd_get(g_c, k, &kv, NULL, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, k));
}

static void test_delete_key_and_prefix(void **state) {
    (void)state;
    cv_error e = {0};
    char k[128];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof k, "%sd/%d", g_prefix, i);
        assert_int_equal(cv_etcd_put(g_c, k, "x", 1, 0, NULL, &e), CV_OK);
    }
    int64_t n = -1;
    snprintf(k, sizeof k, "%sd/0", g_prefix);
    assert_int_equal(cv_etcd_delete(g_c, k, false, &n, NULL, &e), CV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(cv_etcd_delete(g_c, k, false, &n, NULL, &e), CV_OK);
    assert_int_equal(n, 0); /* the gateway omits "deleted": 0 */
    key(k, sizeof k, "d/");
    assert_int_equal(cv_etcd_delete(g_c, k, true, &n, NULL, &e), CV_OK);
    assert_int_equal(n, 3);
}

static void test_txn_compares_and_branches(void **state) {
    (void)state;
    cv_error e = {0};
    char k[128], other[128];
    key(k, sizeof k, "txn/leader");
    key(other, sizeof other, "txn/other");
    cv_etcd_cmp absent = {.key = k, .target = CV_ETCD_CMP_CREATE, .result = CV_ETCD_EQUAL, .number = 0};
    cv_etcd_op put = {.type = CV_ETCD_OP_PUT, .key = k, .value = "a", .value_len = 1};
    cv_etcd_op get = {.type = CV_ETCD_OP_RANGE, .key = k};
    cv_etcd_txn_result t;
    assert_int_equal(cv_etcd_txn(g_c, &absent, 1, &put, 1, &get, 1, &t, &e), CV_OK);
    assert_true(t.succeeded);
    assert_int_equal(t.n_results, 1);
    assert_int_equal(t.results[0].type, CV_ETCD_OP_PUT);
    int64_t created = t.header.revision;
    cv_etcd_txn_result_free(&t);

    /* Second try: the failure branch reads the holder. */
    put.value = "b";
    assert_int_equal(cv_etcd_txn(g_c, &absent, 1, &put, 1, &get, 1, &t, &e), CV_OK);
    assert_false(t.succeeded);
    assert_int_equal(t.n_results, 1);
    assert_int_equal(t.results[0].range.n_kvs, 1);
    assert_string_equal(t.results[0].range.kvs[0].value, "a");
    assert_int_equal(t.results[0].range.kvs[0].create_revision, created);
    cv_etcd_txn_result_free(&t);

    /* Several compares (create revision fence, value, version, mod) and three op kinds. */
    cv_etcd_cmp fence[] = {
        {.key = k, .target = CV_ETCD_CMP_CREATE, .result = CV_ETCD_EQUAL, .number = created},
        {.key = k, .target = CV_ETCD_CMP_VALUE, .result = CV_ETCD_EQUAL, .value = "a", .value_len = 1},
        {.key = k, .target = CV_ETCD_CMP_VERSION, .result = CV_ETCD_LESS, .number = 2},
        {.key = k, .target = CV_ETCD_CMP_MOD, .result = CV_ETCD_GREATER, .number = created - 1},
    };
    cv_etcd_op ops[] = {
        {.type = CV_ETCD_OP_PUT, .key = other, .value = "w", .value_len = 1},
        {.type = CV_ETCD_OP_RANGE, .key = k},
        {.type = CV_ETCD_OP_DELETE, .key = k},
    };
    assert_int_equal(cv_etcd_txn(g_c, fence, 4, ops, 3, NULL, 0, &t, &e), CV_OK);
    assert_true(t.succeeded);
    assert_int_equal(t.n_results, 3);
    assert_int_equal(t.results[1].range.n_kvs, 1);
    assert_int_equal(t.results[2].deleted, 1);
    cv_etcd_txn_result_free(&t);

    /* The fence no longer holds: nothing is written, the empty failure branch runs. */
    assert_int_equal(cv_etcd_txn(g_c, fence, 1, ops, 1, NULL, 0, &t, &e), CV_OK);
    assert_false(t.succeeded);
    assert_int_equal(t.n_results, 0);
    cv_etcd_txn_result_free(&t);

    /* Two ops on one key: etcd's own error comes through with its HTTP status. */
    cv_etcd_op dup[] = {put, put};
    assert_int_equal(cv_etcd_txn(g_c, NULL, 0, dup, 2, NULL, 0, &t, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "HTTP 400"));
    assert_non_null(strstr(e.msg, "duplicate key"));
    assert_non_null(strstr(e.msg, g_etcd->url));
}

static void test_lease_lifecycle(void **state) {
    (void)state;
    cv_error e = {0};
    int64_t id = 0, ttl = 0;
    assert_int_equal(cv_etcd_lease_grant(g_c, 30, &id, &ttl, &e), CV_OK);
    assert_true(id != 0);
    assert_int_equal(ttl, 30);
    char k[128];
    key(k, sizeof k, "leased");
    assert_int_equal(cv_etcd_put(g_c, k, "v", 1, id, NULL, &e), CV_OK);
    cv_etcd_kv kv;
    assert_int_equal(cv_etcd_get(g_c, k, &kv, NULL, &e), CV_OK);
    assert_int_equal(kv.lease, id);
    cv_etcd_kv_free(&kv);
    assert_int_equal(cv_etcd_lease_keepalive(g_c, id, &ttl, &e), CV_OK);
    assert_true(ttl > 0 && ttl <= 30);
    assert_int_equal(cv_etcd_lease_revoke(g_c, id, &e), CV_OK);
    assert_int_equal(cv_etcd_get(g_c, k, &kv, NULL, &e), CV_ENOTFOUND);
    assert_int_equal(cv_etcd_lease_keepalive(g_c, id, &ttl, &e), CV_ENOTFOUND);
    assert_int_equal(cv_etcd_lease_revoke(g_c, id, &e), CV_ENOTFOUND);
    assert_non_null(strstr(e.msg, "lease not found"));
}

static void test_gateway_error_is_precise(void **state) {
    (void)state;
    cv_error e = {0};
    char k[128];
    key(k, sizeof k, "future");
    cv_etcd_range_req req = {.key = k, .revision = INT64_C(1) << 40};
    cv_etcd_range_result r;
    assert_int_equal(cv_etcd_range(g_c, &req, &r, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "HTTP 400"));
    assert_non_null(strstr(e.msg, "future revision"));
    assert_non_null(strstr(e.msg, g_etcd->url));
    assert_non_null(strstr(e.msg, k));
}

static void test_failover_to_second_endpoint(void **state) {
    (void)state;
    char eps[256];
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,%s", cv_test_free_port(), g_etcd->url);
    cv_etcd *c = open_client(eps, 3000);
    assert_int_equal(cv_etcd_preferred(c), 0);
    cv_error e = {0};
    char k[128];
    key(k, sizeof k, "failover");
    assert_int_equal(cv_etcd_put(c, k, "1", 1, 0, NULL, &e), CV_OK);
    assert_int_equal(cv_etcd_preferred(c), 1);
    cv_etcd_kv kv;
    assert_int_equal(cv_etcd_get(c, k, &kv, NULL, &e), CV_OK);
    assert_string_equal(kv.value, "1");
    cv_etcd_kv_free(&kv);
    cv_etcd_close(c);
}

static void test_dead_endpoints_fail_within_timeout(void **state) {
    (void)state;
    char eps[256];
    int p1 = cv_test_free_port(), p2 = cv_test_free_port();
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d, http://127.0.0.1:%d/", p1, p2);
    cv_etcd *c = open_client(eps, 800);
    cv_error e = {0};
    cv_etcd_range_req req = {.key = "/x"};
    cv_etcd_range_result r;
    int64_t t0 = cv_test_now_ms();
    assert_int_equal(cv_etcd_range(c, &req, &r, &e), CV_EUNAVAILABLE);
    int64_t took = cv_test_now_ms() - t0;
    fprintf(stderr, "dead endpoints: %s (after %lld ms)\n", e.msg, (long long)took);
    assert_true(took <= 800 + 1000); /* slack for a loaded machine */
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d:", p1);
    assert_non_null(strstr(e.msg, u));
    snprintf(u, sizeof u, "http://127.0.0.1:%d:", p2);
    assert_non_null(strstr(e.msg, u));
    assert_non_null(strstr(e.msg, "no endpoint answered within 800 ms"));
    /* A write is refused as promptly: a refused connection never carried it. */
    assert_int_equal(cv_etcd_put(c, "/x", "1", 1, 0, NULL, &e), CV_EUNAVAILABLE);
    cv_etcd_close(c);
}

static void test_hung_etcd_times_out(void **state) {
    (void)state;
    cv_etcd *c = open_client(g_etcd->url, 1000);
    cv_error e = {0};
    /* Warm the connection: a write on a reused connection that times out may have
     * been applied, so it must be reported, not retried. */
    assert_int_equal(cv_etcd_put(c, "/hung", "0", 1, 0, NULL, &e), CV_OK);
    cv_test_etcd_pause(g_etcd, true);
    int64_t t0 = cv_test_now_ms();
    cv_status st = cv_etcd_put(c, "/hung", "1", 1, 0, NULL, &e);
    int64_t took = cv_test_now_ms() - t0;
    cv_test_etcd_pause(g_etcd, false);
    fprintf(stderr, "hung etcd: %s (after %lld ms)\n", e.msg, (long long)took);
    assert_int_equal(st, CV_ETIMEOUT);
    assert_non_null(strstr(e.msg, "Operation timed out"));
    assert_null(strstr(e.msg, "attempts")); /* one attempt, not retried */
    assert_non_null(strstr(e.msg, g_etcd->url));
    assert_true(took <= 1000 + 1000); /* slack for a loaded machine */
    /* A read is retried until the call's deadline instead. */
    cv_test_etcd_pause(g_etcd, true);
    cv_etcd_range_req req = {.key = "/hung"};
    cv_etcd_range_result r;
    t0 = cv_test_now_ms();
    st = cv_etcd_range(c, &req, &r, &e);
    took = cv_test_now_ms() - t0;
    cv_test_etcd_pause(g_etcd, false);
    fprintf(stderr, "hung etcd, read: %s (after %lld ms)\n", e.msg, (long long)took);
    assert_int_equal(st, CV_ETIMEOUT);
    assert_non_null(strstr(e.msg, "no endpoint answered within 1000 ms"));
    assert_true(took <= 1000 + 1000);
    cv_etcd_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_range_prefix),
        cmocka_unit_test(test_delete_key_and_prefix),
        cmocka_unit_test(test_txn_compares_and_branches),
        cmocka_unit_test(test_lease_lifecycle),
        cmocka_unit_test(test_gateway_error_is_precise),
        cmocka_unit_test(test_failover_to_second_endpoint),
        cmocka_unit_test(test_dead_endpoints_fail_within_timeout),
        cmocka_unit_test(test_hung_etcd_times_out),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
