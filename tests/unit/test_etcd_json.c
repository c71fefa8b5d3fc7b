/* The gateway encodings: base64 round trips and rejects, int64 strings, prefix ranges. */
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

#include "etcd_json.h"

static void test_base64_round_trip_random_bytes(void **state) {
    (void)state;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "seed %u\n", seed);
    srand(seed);
    for (size_t len = 0; len < 70; len++) {
        char data[70];
        for (size_t i = 0; i < len; i++) data[i] = (char)(rand() & 0xff);
        json_t *o = json_object();
        assert_int_equal(cv_etcd_json_set_b64(o, "v", data, len), CV_OK);
        char *out;
        size_t n;
        cv_error e = {0};
        assert_int_equal(cv_etcd_json_b64(o, "v", &out, &n, &e), CV_OK);
        assert_int_equal(n, len);
        assert_memory_equal(out, data, len);
        assert_int_equal(out[n], 0);
        free(out);
        json_decref(o);
    }
}

static cv_status b64(const char *json, char **out, size_t *n, cv_error *e) {
    json_t *o = json_loads(json, 0, NULL);
    assert_non_null(o);
    cv_status st = cv_etcd_json_b64(o, "v", out, n, e);
    json_decref(o);
    return st;
}

static void test_base64_rejects(void **state) {
    (void)state;
    char *out;
    size_t n;
    cv_error e = {0};
    assert_int_equal(b64("{}", &out, &n, &e), CV_OK); /* omitted: empty */
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(b64("{\"v\":\"Zm9\"}", &out, &n, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "multiple of 4"));
    assert_int_equal(b64("{\"v\":\"Zm 9\"}", &out, &n, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "byte 0x20 at 2"));
    assert_int_equal(b64("{\"v\":\"Z=9v\"}", &out, &n, &e), CV_EFORMAT);
    assert_int_equal(b64("{\"v\":7}", &out, &n, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "an integer"));
    assert_int_equal(b64("{\"v\":\"Zg==\"}", &out, &n, &e), CV_OK);
    assert_int_equal(n, 1);
    assert_string_equal(out, "f");
    free(out);
}

static void test_int64_fields(void **state) {
    (void)state;
    json_t *o = json_loads("{\"a\":\"9223372036854775807\",\"b\":-3,\"c\":\"9223372036854775808\","
                           "\"d\":\"12 \",\"e\":\"\",\"f\":true}", 0, NULL);
    int64_t v;
    cv_error e = {0};
    assert_int_equal(cv_etcd_json_i64(o, "a", &v, &e), CV_OK);
    assert_int_equal(v, INT64_MAX);
    assert_int_equal(cv_etcd_json_i64(o, "b", &v, &e), CV_OK);
    assert_int_equal(v, -3);
    assert_int_equal(cv_etcd_json_i64(o, "absent", &v, &e), CV_OK);
    assert_int_equal(v, 0);
    assert_int_equal(cv_etcd_json_i64(o, "c", &v, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "\"c\""));
    assert_int_equal(cv_etcd_json_i64(o, "d", &v, &e), CV_EFORMAT);
    assert_int_equal(cv_etcd_json_i64(o, "e", &v, &e), CV_EFORMAT);
    assert_int_equal(cv_etcd_json_i64(o, "f", &v, &e), CV_EFORMAT);
    json_decref(o);
    cv_etcd_header h;
    o = json_loads("{\"header\":{\"cluster_id\":\"13458989633860879742\",\"revision\":\"5\"}}", 0, NULL);
    assert_int_equal(cv_etcd_json_header(o, &h, &e), CV_OK);
    assert_true(h.cluster_id == UINT64_C(13458989633860879742));
    assert_int_equal(h.revision, 5);
    assert_int_equal(h.raft_term, 0);
    json_decref(o);
}

static void range_end(const char *key, char *out, size_t *n) {
    json_t *o = json_object();
    assert_int_equal(cv_etcd_json_set_range(o, key, true), CV_OK);
    char *end;
    cv_error e = {0};
    assert_int_equal(cv_etcd_json_b64(o, "range_end", &end, n, &e), CV_OK);
    memcpy(out, end, *n);
    free(end);
    json_decref(o);
}

static void test_prefix_range_end(void **state) {
    (void)state;
    char out[16];
    size_t n;
    range_end("/corvid/", out, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(out, "/corvid0", 8);
    range_end("a\xff\xff", out, &n);
    assert_int_equal(n, 1);
    assert_memory_equal(out, "b", 1);
    range_end("\xff", out, &n); /* every key from "\xff" on */
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 0);
    json_t *o = json_object();
    assert_int_equal(cv_etcd_json_set_range(o, "k", false), CV_OK);
    assert_null(json_object_get(o, "range_end"));
    json_decref(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_round_trip_random_bytes),
        cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_int64_fields),
        cmocka_unit_test(test_prefix_range_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
