/* The watch stream parser: framing across arbitrary chunk splits, decoding of the
 * gateway's objects, and its limits on hostile input. */
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

#include "etcd_stream.h"

/* Three objects as etcd 3.4 writes them: created, a batch of historical events
 * (a PUT without "type", a DELETE), then a compaction cancel. "Zm9v" is "foo". */
static const char STREAM[] =
    "{\"result\":{\"header\":{\"cluster_id\":\"7801232528081817440\",\"member_id\":\"13458989633860879742\","
    "\"revision\":\"7\",\"raft_term\":\"2\"},\"created\":true}}\n"
    "{\"result\":{\"header\":{\"revision\":\"7\"},\"events\":[{\"kv\":{\"key\":\"Zm9v\","
    "\"create_revision\":\"2\",\"mod_revision\":\"6\",\"version\":\"4\",\"value\":\"djM=\"}},"
    "{\"type\":\"DELETE\",\"kv\":{\"key\":\"Zm9v\",\"mod_revision\":\"7\"}}]}}\n"
    "{\"result\":{\"header\":{\"raft_term\":\"2\"},\"canceled\":true,\"compact_revision\":\"6\","
    "\"cancel_reason\":\"mvcc: required revision has been compacted\"}}\n";

typedef struct seen {
    int n;
    bool created[8], canceled[8];
    int64_t revision[8], compact[8];
    int n_events[8];
    char summary[512];
    cv_status fail_at_3;
} seen;

static cv_status record(void *ud, cv_etcd_watch_msg *m, cv_error *err) {
    seen *s = ud;
    if (s->n == 3 && s->fail_at_3) return cv_errorf(err, s->fail_at_3, "callback refused");
    int i = s->n++;
    s->created[i] = m->created;
    s->canceled[i] = m->canceled;
    s->revision[i] = m->header.revision;
    s->compact[i] = m->compact_revision;
    s->n_events[i] = (int)m->n_events;
    for (size_t j = 0; j < m->n_events; j++) {
        size_t len = strlen(s->summary);
        snprintf(s->summary + len, sizeof s->summary - len, "%s %s=%s@%lld;",
                 m->events[j].type == CV_ETCD_EVENT_PUT ? "PUT" : "DEL", m->events[j].kv.key,
                 m->events[j].kv.value, (long long)m->events[j].kv.mod_revision);
    }
    return CV_OK;
}

static void check_stream(const seen *s) {
    assert_int_equal(s->n, 3);
    assert_true(s->created[0]);
    assert_int_equal(s->revision[0], 7);
    assert_int_equal(s->n_events[1], 2);
    assert_string_equal(s->summary, "PUT foo=v3@6;DEL foo=@7;");
    assert_true(s->canceled[2]);
    assert_int_equal(s->compact[2], 6);
    assert_int_equal(s->revision[2], 0); /* omitted: zero */
}

static void test_every_two_way_split(void **state) {
    (void)state;
    size_t n = strlen(STREAM);
    for (size_t cut = 0; cut <= n; cut++) {
        seen s = {0};
        cv_etcd_stream st;
        cv_error e = {0};
        cv_etcd_stream_init(&st, 0, record, &s);
        assert_int_equal(cv_etcd_stream_feed(&st, STREAM, cut, &e), CV_OK);
        assert_int_equal(cv_etcd_stream_feed(&st, STREAM + cut, n - cut, &e), CV_OK);
        check_stream(&s);
        cv_etcd_stream_free(&st);
    }
}

static void test_random_chunking(void **state) {
    (void)state;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "seed %u\n", seed);
    srand(seed);
    size_t n = strlen(STREAM);
    for (int round = 0; round < 200; round++) {
        seen s = {0};
        cv_etcd_stream st;
        cv_error e = {0};
        cv_etcd_stream_init(&st, 0, record, &s);
        for (size_t i = 0; i < n;) {
            size_t k = 1 + (size_t)rand() % 40;
            if (k > n - i) k = n - i;
            assert_int_equal(cv_etcd_stream_feed(&st, STREAM + i, k, &e), CV_OK);
            i += k;
        }
        check_stream(&s);
        cv_etcd_stream_free(&st);
    }
}

static void test_objects_without_newlines_and_braces_in_strings(void **state) {
    (void)state;
    /* Braces and escaped quotes inside strings must not confuse the framer. */
    const char *in = "{\"result\":{\"canceled\":true,\"cancel_reason\":\"a}\\\"{b\"}}"
                     "  {\"result\":{\"created\":true}}";
    seen s = {0};
    cv_etcd_stream st;
    cv_error e = {0};
    cv_etcd_stream_init(&st, 0, record, &s);
    assert_int_equal(cv_etcd_stream_feed(&st, in, strlen(in), &e), CV_OK);
    assert_int_equal(s.n, 2);
    assert_true(s.canceled[0]);
    assert_true(s.created[1]);
    cv_etcd_stream_free(&st);
}

static cv_status feed_all(const char *in, size_t max_object, cv_error *e) {
    seen s = {0};
    cv_etcd_stream st;
    cv_etcd_stream_init(&st, max_object, record, &s);
    cv_status rc = cv_etcd_stream_feed(&st, in, strlen(in), e);
    /* A failed stream stays failed. */
    cv_error again = {0};
    if (rc) assert_int_equal(cv_etcd_stream_feed(&st, "{}", 2, &again), rc);
    cv_etcd_stream_free(&st);
    return rc;
}

static void test_gateway_errors_map_to_status(void **state) {
    (void)state;
    cv_error e = {0};
    assert_int_equal(feed_all("{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}", 0, &e),
                     CV_EUNAVAILABLE);
    assert_non_null(strstr(e.msg, "etcdserver: no leader"));
    assert_int_equal(feed_all("{\"error\":\"unexpected EOF\",\"message\":\"unexpected EOF\",\"code\":3}", 0, &e),
                     CV_EINVAL);
    assert_non_null(strstr(e.msg, "unexpected EOF (gRPC code 3)"));
}

static void test_hostile_input_is_refused(void **state) {
    (void)state;
    cv_error e = {0};
    assert_int_equal(feed_all("garbage", 0, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "byte 0x67 at offset 0"));
    assert_int_equal(feed_all("{\"result\":{}}\n]", 0, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "offset 14"));
    assert_int_equal(feed_all("{\"result\":{\"created\":tru}}", 0, &e), CV_EFORMAT);
    assert_int_equal(feed_all("{\"nothing\":1}", 0, &e), CV_EFORMAT);
    assert_int_equal(feed_all("{\"result\":{\"header\":{\"revision\":\"12x\"}}}", 0, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "revision"));
    assert_int_equal(feed_all("{\"result\":{\"events\":[{\"kv\":{\"key\":\"Zm9v\"}}]}}", 0, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "mod_revision 0"));
    assert_int_equal(feed_all("{\"result\":{\"events\":[{\"type\":\"MOVE\",\"kv\":{}}]}}", 0, &e), CV_EFORMAT);
    assert_int_equal(feed_all("{\"result\":{\"events\":[{\"kv\":{\"key\":\"Z!9v\",\"mod_revision\":\"3\"}}]}}", 0, &e),
                     CV_EFORMAT);
    assert_non_null(strstr(e.msg, "not base64"));
    /* Limits: object size and nesting depth. */
    char big[300];
    memset(big, ' ', sizeof big);
    memcpy(big, "{\"result\":{\"cancel_reason\":\"", 28);
    big[sizeof big - 4] = '"';
    big[sizeof big - 3] = '}';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = 0;
    assert_int_equal(feed_all(big, 400, &e), CV_OK);
    assert_int_equal(feed_all(big, 200, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "200 byte limit"));
    char deep[2 * CV_ETCD_STREAM_MAX_DEPTH + 8];
    size_t n = 0;
    for (int i = 0; i <= CV_ETCD_STREAM_MAX_DEPTH; i++) deep[n++] = i ? '[' : '{';
    deep[n] = 0;
    assert_int_equal(feed_all(deep, 0, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "nesting"));
}

static void test_callback_error_stops_the_feed(void **state) {
    (void)state;
    seen s = {.fail_at_3 = CV_ECANCELLED};
    cv_etcd_stream st;
    cv_error e = {0};
    cv_etcd_stream_init(&st, 0, record, &s);
    char twice[2 * sizeof STREAM];
    snprintf(twice, sizeof twice, "%s%s", STREAM, STREAM);
    assert_int_equal(cv_etcd_stream_feed(&st, twice, strlen(twice), &e), CV_ECANCELLED);
    assert_int_equal(s.n, 3);
    /* A reset (new connection) starts afresh, even mid-object. */
    cv_etcd_stream_reset(&st);
    s.fail_at_3 = CV_OK;
    s.n = 0;
    s.summary[0] = 0;
    assert_int_equal(cv_etcd_stream_feed(&st, STREAM, 10, &e), CV_OK);
    cv_etcd_stream_reset(&st);
    assert_int_equal(cv_etcd_stream_feed(&st, STREAM, strlen(STREAM), &e), CV_OK);
    check_stream(&s);
    cv_etcd_stream_free(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_two_way_split),
        cmocka_unit_test(test_random_chunking),
        cmocka_unit_test(test_objects_without_newlines_and_braces_in_strings),
        cmocka_unit_test(test_gateway_errors_map_to_status),
        cmocka_unit_test(test_hostile_input_is_refused),
        cmocka_unit_test(test_callback_error_stops_the_feed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
