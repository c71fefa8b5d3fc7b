#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_tally.h"
#include "timing.h"
#include "../support/test_tmpdir.h"

static char dir[200];

/* Every line of the file as JSON objects (an empty array when there is no file). */
static json_t *read_lines(const char *path) {
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");
    if (!f) return arr;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!json_is_object(j)) fail_msg("not a JSON object: %s", line);
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}

static const char *str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static long long num(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* An audit log DIR/name (into path) with a tally of interval_s and max_keys over it. */
static cv_audit_tally *new_tally(const char *name, double interval_s, unsigned max_keys, char *path, size_t cap,
                                 cv_audit **log) {
    snprintf(path, cap, "%s/%s", dir, name);
    cv_error e = {0};
    assert_int_equal(cv_audit_open(path, log, &e), CV_OK);
    cv_audit_tally *t = NULL;
    cv_audit_tally_config c = {interval_s, max_keys};
    assert_int_equal(cv_audit_tally_new(*log, &c, &t, &e), CV_OK);
    return t;
}

static void fail_from(cv_audit_tally *t, const char *addr, const char *reason, const char *subject,
                      const char *detail) {
    char peer[96];
    snprintf(peer, sizeof peer, "ipv4:%s:%d", addr, 40000 + (int)(random() % 20000));
    cv_audit_entry e = {CV_AUDIT_AUTH_FAILURE, subject, peer, "/corvid.v1.Admin/GetStatus",
                        "UNAUTHENTICATED", detail, NULL};
    cv_audit_tally_add(t, addr, reason, &e);
}

typedef struct hammer_arg {
    cv_audit_tally *t;
    int id;
} hammer_arg;

/* 1000 attempts: client 10.0.0.(id % 3) with reasons alternating. */
static void *hammer(void *p) {
    hammer_arg *h = p;
    char addr[32];
    snprintf(addr, sizeof addr, "10.0.0.%d", h->id % 3);
    for (int i = 0; i < 1000; i++)
        fail_from(h->t, addr, i % 2 ? "invalid_token" : "no_token", NULL,
                  i % 2 ? "invalid token" : "no token");
    return NULL;
}

/* Six threads, three addresses, two reasons: six lines, one per key, whose counts add
 * up to every attempt; nothing is written before the flush. */
static void test_counts_per_key(void **state) {
    (void)state;
    char path[320];
    cv_audit *a = NULL;
    cv_audit_tally *t = new_tally("keys.log", 3600, 64, path, sizeof path, &a);
    pthread_t th[6];
    hammer_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (hammer_arg){t, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    fail_from(t, "10.0.0.9", "missing_scope", "ops", "needs scope admin");
    json_t *none = read_lines(path);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    cv_audit_tally_flush(t);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 7);
    long long total = 0;
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) {
        assert_string_equal(str(l, "event"), "auth_failure");
        assert_string_equal(str(l, "method"), "/corvid.v1.Admin/GetStatus");
        assert_string_equal(str(l, "outcome"), "UNAUTHENTICATED");
        assert_true(strcmp(str(l, "first"), str(l, "last")) <= 0);
        const char *r = str(l, "reason");
        if (i < 6) {
            /* Each address had two threads, 500 attempts of each reason per thread. */
            assert_int_equal(num(l, "count"), 1000);
            assert_string_equal(str(l, "detail"), strcmp(r, "no_token") ? "invalid token" : "no token");
            assert_null(json_object_get(l, "subject"));
            assert_int_equal(strncmp(str(l, "peer"), "10.0.0.", 7), 0);
        } else {
            assert_string_equal(r, "missing_scope");
            assert_string_equal(str(l, "subject"), "ops");
            assert_string_equal(str(l, "peer"), "10.0.0.9");
            assert_int_equal(num(l, "count"), 1);
        }
        total += num(l, "count");
    }
    assert_int_equal(total, 6001);
    json_decref(lines);

    /* A new interval starts from zero; an empty one writes nothing. */
    cv_audit_tally_flush(t);
    fail_from(t, "10.0.0.1", "no_token", NULL, "again");
    cv_audit_tally_free(t); /* writes what is left */
    lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 8);
    json_t *last = json_array_get(lines, 7);
    assert_int_equal(num(last, "count"), 1);
    assert_string_equal(str(last, "detail"), "again");
    json_decref(lines);
    cv_audit_close(a);
}

/* The same address with another subject or reason is another key; a subject of a
 * verified token is part of the key, not only of the line. */
static void test_key_parts(void **state) {
    (void)state;
    char path[320];
    cv_audit *a = NULL;
    cv_audit_tally *t = new_tally("parts.log", 3600, 16, path, sizeof path, &a);
    fail_from(t, "::1", "missing_scope", "alice", "a");
    fail_from(t, "::1", "missing_scope", "bob", "b");
    fail_from(t, "::1", "missing_scope", "alice", "a2");
    fail_from(t, "::1", "invalid_token", NULL, "c");
    fail_from(t, "::2", "invalid_token", NULL, "d");
    cv_audit_tally_free(t);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 4);
    assert_string_equal(str(json_array_get(lines, 0), "subject"), "alice");
    assert_int_equal(num(json_array_get(lines, 0), "count"), 2);
    assert_string_equal(str(json_array_get(lines, 0), "detail"), "a"); /* the first attempt's */
    assert_string_equal(str(json_array_get(lines, 1), "subject"), "bob");
    assert_string_equal(str(json_array_get(lines, 3), "peer"), "::2");
    json_decref(lines);
    cv_audit_close(a);
}

/* 5000 distinct addresses into 8 keys: 8 lines and one "(other clients)" line that
 * counts the rest; every attempt is counted once. */
static void test_bounded_table(void **state) {
    (void)state;
    char path[320];
    cv_audit *a = NULL;
    cv_audit_tally *t = new_tally("flood.log", 3600, 8, path, sizeof path, &a);
    char addr[64];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 5000; i++) {
            snprintf(addr, sizeof addr, "2001:db8::%x", i);
            fail_from(t, addr, "no_token", NULL, "no token");
        }
    cv_audit_tally_flush(t);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), 9);
    for (int i = 0; i < 8; i++) {
        json_t *l = json_array_get(lines, (size_t)i);
        snprintf(addr, sizeof addr, "2001:db8::%x", i);
        assert_string_equal(str(l, "peer"), addr);
        assert_int_equal(num(l, "count"), 2);
    }
    json_t *rest = json_array_get(lines, 8);
    assert_string_equal(str(rest, "peer"), "(other clients)");
    assert_string_equal(str(rest, "reason"), "table_full");
    assert_int_equal(num(rest, "count"), 2 * (5000 - 8));
    json_decref(lines);
    cv_audit_tally_free(t);
    cv_audit_close(a);
}

/* Without an explicit flush the thread writes the interval's counts once it ends. */
static void test_thread_flushes_each_interval(void **state) {
    (void)state;
    char path[320];
    cv_audit *a = NULL;
    cv_audit_tally *t = new_tally("timed.log", 0.2, 16, path, sizeof path, &a);
    for (int i = 0; i < 50; i++) fail_from(t, "192.0.2.1", "bad_scheme", NULL, "Basic");
    /* All 50 show up (in one line, or two if an interval ended amid the loop). */
    double end = cv_seconds() + 20;
    long long total = 0;
    size_t n = 0;
    while (total < 50 && cv_seconds() < end) {
        usleep(20 * 1000);
        json_t *lines = read_lines(path);
        n = json_array_size(lines);
        total = 0;
        for (size_t i = 0; i < n; i++) total += num(json_array_get(lines, i), "count");
        json_decref(lines);
    }
    assert_int_equal(total, 50);
    assert_true(n >= 1 && n <= 2);
    cv_audit_tally_free(t);
    json_t *lines = read_lines(path);
    assert_int_equal(json_array_size(lines), n); /* nothing new: nothing more written */
    json_decref(lines);
    cv_audit_close(a);
}

static void test_bad_config(void **state) {
    (void)state;
    cv_audit_tally *t = NULL;
    cv_error e = {0};
    cv_audit_tally_config zero = {0, 8}, nokeys = {1, 0};
    assert_int_equal(cv_audit_tally_new(NULL, &zero, &t, &e), CV_EINVAL);
    assert_int_equal(cv_audit_tally_new(NULL, &nokeys, &t, &e), CV_EINVAL);
    assert_null(t);
}

static int teardown_dir(void **state) {
    (void)state;
    return cv_test_rmtree(dir);
}

int main(void) {
    if (cv_test_tmpdir(dir, sizeof dir, "audit-tally") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_per_key),
        cmocka_unit_test(test_key_parts),
        cmocka_unit_test(test_bounded_table),
        cmocka_unit_test(test_thread_flushes_each_interval),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_dir);
}
