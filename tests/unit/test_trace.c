/* trace and otlp_export: traceparent parsing (valid, malformed, future versions), ids
 * and sampling, and the exporter against a real loopback HTTP listener: the JSON body it
 * POSTs, and spans dropped when the queue is full or the collector fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "otlp_export.h"
#include "trace.h"

static const char k_valid[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static int parse(const char *s, cv_trace_ctx *c) { return cv_traceparent_parse(s, strlen(s), c); }

static void test_parse_valid(void **state) {
    (void)state;
    cv_trace_ctx c;
    assert_int_equal(parse(k_valid, &c), 0);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.trace_id[15], 0x36);
    assert_int_equal(c.span_id[0], 0x00);
    assert_int_equal(c.span_id[7], 0xb7);
    assert_int_equal(c.sampled, 1);
    char out[CV_TRACEPARENT_LEN + 1], id[33];
    cv_traceparent_format(&c, out);
    assert_string_equal(out, k_valid);
    cv_trace_id_hex(&c, id);
    assert_string_equal(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    assert_int_equal(c.sampled, 0);
    /* Flags other than sampled are ignored; blanks around a header value are allowed. */
    assert_int_equal(parse(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff\t", &c), 0);
    assert_int_equal(c.sampled, 1);
    /* A later version may carry more fields; its first ones are read as version 00's. */
    assert_int_equal(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", &c), 0);
    assert_int_equal(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c), 0);
}

static void test_parse_invalid(void **state) {
    (void)state;
    static const char *bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",       /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",      /* 00 with more */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       /* version ff */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",      /* no '-' after */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",       /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       /* zero span id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    };
    cv_trace_ctx c, before;
    memset(&c, 0x5a, sizeof c);
    before = c;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &c) != 0) continue;
        fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_memory_equal(&c, &before, sizeof c); /* untouched on failure */
    /* The length given is the end, whatever follows it. */
    assert_int_not_equal(cv_traceparent_parse(k_valid, CV_TRACEPARENT_LEN - 1, &c), 0);
}

static void test_begin_and_sampling(void **state) {
    (void)state;
    cv_trace_ctx a, b;
    cv_trace_set_ratio(1);
    cv_trace_begin(NULL, 0, &a);
    cv_trace_begin("garbage", 7, &b); /* malformed: a new trace, not an error */
    assert_int_equal(a.sampled, 1);
    assert_memory_not_equal(a.trace_id, b.trace_id, 16);
    static const uint8_t zero[8];
    assert_memory_equal(a.span_id, zero, 8); /* a root: no parent span */
    /* The parent's decision wins over the ratio, both ways. */
    cv_trace_set_ratio(0);
    cv_trace_begin(k_valid, strlen(k_valid), &a);
    assert_int_equal(a.sampled, 1);
    cv_trace_begin(NULL, 0, &a);
    assert_int_equal(a.sampled, 0);
    cv_trace_set_ratio(0.25);
    int sampled = 0, n = 4000;
    for (int i = 0; i < n; i++) {
        cv_trace_begin(NULL, 0, &a);
        sampled += a.sampled;
    }
    /* Binomial(4000, 0.25): mean 1000, sd 27; 200 is over 7 sd. */
    assert_in_range(sampled, 800, 1200);
    cv_trace_set_ratio(1);
}

static void test_span_child_ids(void **state) {
    (void)state;
    cv_trace_ctx root, child;
    cv_trace_begin(k_valid, strlen(k_valid), &root);
    /* No exporter runs: nothing is recorded, but the child context is still made. */
    assert_null(cv_span_start(&root, "x", CV_SPAN_SERVER, 0, &child));
    assert_memory_equal(child.trace_id, root.trace_id, 16);
    assert_memory_not_equal(child.span_id, root.span_id, 8);
    cv_span_set_str(NULL, "k", "v");
    cv_span_end(NULL, 0);
}

/* ---- a one-connection-at-a-time HTTP listener ---- */
typedef struct collector {
    int fd, port;
    int status;               /* answered to each POST; 0: accept, then hang until closed */
    pthread_t thread;
    pthread_mutex_t mu;
    char bodies[8][65536];
    int n_bodies, accepted;
} collector;

static void *collect(void *arg) {
    collector *c = arg;
    for (;;) {
        int s = accept(c->fd, NULL, NULL);
        if (s < 0) return NULL;
        pthread_mutex_lock(&c->mu);
        c->accepted++;
        pthread_mutex_unlock(&c->mu);
        char buf[65536];
        size_t n = 0;
        long want = -1;
        for (;;) {
            ssize_t r = read(s, buf + n, sizeof buf - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
            buf[n] = 0;
            char *end = strstr(buf, "\r\n\r\n");
            char *cl = strcasestr(buf, "content-length:");
            if (end && cl && want < 0) want = (end + 4 - buf) + strtol(cl + 15, NULL, 10);
            if (want >= 0 && (long)n >= want) break;
        }
        if (!c->status) { /* hang: the exporter's timeout ends it */
            char sink[256];
            while (read(s, sink, sizeof sink) > 0) {
            }
            close(s);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        char *body = strstr(buf, "\r\n\r\n");
        if (body && c->n_bodies < 8) snprintf(c->bodies[c->n_bodies++], sizeof c->bodies[0], "%s", body + 4);
        pthread_mutex_unlock(&c->mu);
        char resp[128];
        int len = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                           c->status);
        if (write(s, resp, (size_t)len) < 0) {
        }
        close(s);
    }
}

static void collector_start(collector *c, int status) {
    memset(c, 0, sizeof *c);
    c->status = status;
    pthread_mutex_init(&c->mu, NULL);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->fd, 8), 0);
    getsockname(c->fd, (struct sockaddr *)&a, &l);
    c->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&c->thread, NULL, collect, c), 0);
}

static void collector_stop(collector *c) {
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mu);
}

static void test_export_json(void **state) {
    (void)state;
    collector *c = malloc(sizeof *c);
    collector_start(c, 200);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", c->port);
    cv_otlp_config oc = {.endpoint = url, .service_name = "test-svc", .flush_ms = 50};
    assert_int_equal(cv_otlp_start(&oc, NULL), CV_OK);
    cv_otlp_counts before;
    cv_otlp_get_counts(&before);
    cv_trace_ctx root, child;
    cv_trace_begin(k_valid, strlen(k_valid), &root);
    cv_span *s = cv_span_start(&root, "request", CV_SPAN_SERVER, 1000, &child);
    assert_non_null(s);
    cv_span *k = cv_span_start(&child, "decode", CV_SPAN_INTERNAL, 1500, NULL);
    cv_span_set_int(k, "gen_ai.usage.output_tokens", 7);
    cv_span_set_str_array(k, "gen_ai.response.finish_reasons", "stop");
    cv_span_set_error(k, "boom");
    cv_span_end(k, 1800);
    cv_span_set_str(s, "gen_ai.request.model", "m\"1");
    cv_span_set_double(s, "x", 0.5);
    cv_span_end(s, 2000);
    cv_otlp_stop(); /* flushes */
    cv_otlp_counts after;
    cv_otlp_get_counts(&after);
    assert_int_equal(after.exported - before.exported, 2);
    collector_stop(c);
    /* Both spans in one or two POSTs; find them by name. */
    json_t *req = NULL, *dec = NULL;
    for (int b = 0; b < c->n_bodies; b++) {
        json_t *o = json_loads(c->bodies[b], 0, NULL);
        assert_non_null(o);
        json_t *rs = json_array_get(json_object_get(o, "resourceSpans"), 0);
        json_t *svc = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
        assert_string_equal(json_string_value(json_object_get(json_object_get(svc, "value"), "stringValue")),
                            "test-svc");
        json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
        size_t i;
        json_t *sp;
        json_array_foreach(spans, i, sp) {
            const char *name = json_string_value(json_object_get(sp, "name"));
            if (!strcmp(name, "request")) req = json_incref(sp);
            if (!strcmp(name, "decode")) dec = json_incref(sp);
        }
        json_decref(o);
    }
    assert_non_null(req);
    assert_non_null(dec);
    assert_string_equal(json_string_value(json_object_get(req, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(req, "parentSpanId")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(dec, "parentSpanId")),
                        json_string_value(json_object_get(req, "spanId")));
    assert_int_equal(json_integer_value(json_object_get(req, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(req, "startTimeUnixNano")), "1000");
    assert_string_equal(json_string_value(json_object_get(req, "endTimeUnixNano")), "2000");
    json_t *attr = json_array_get(json_object_get(req, "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(attr, "key")), "gen_ai.request.model");
    assert_string_equal(json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")), "m\"1");
    attr = json_array_get(json_object_get(dec, "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(attr, "value"), "intValue")), "7");
    attr = json_array_get(json_object_get(dec, "attributes"), 1);
    json_t *arr = json_object_get(json_object_get(json_object_get(attr, "value"), "arrayValue"), "values");
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "stringValue")), "stop");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(dec, "status"), "code")), 2);
    json_decref(req);
    json_decref(dec);
    free(c);
}

static void test_drops_counted(void **state) {
    (void)state;
    collector *c = malloc(sizeof *c);
    collector_start(c, 0); /* accepts and never answers */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", c->port);
    cv_otlp_config oc = {.endpoint = url, .queue_spans = 2, .batch_spans = 1, .flush_ms = 10, .timeout_ms = 1500};
    assert_int_equal(cv_otlp_start(&oc, NULL), CV_OK);
    cv_otlp_counts before, after;
    cv_otlp_get_counts(&before);
    cv_trace_ctx root;
    cv_trace_begin(k_valid, strlen(k_valid), &root);
    cv_span_end(cv_span_start(&root, "first", CV_SPAN_INTERNAL, 0, NULL), 0);
    /* Wait until the exporter holds the first span in a POST that hangs. */
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&c->mu);
        int a = c->accepted;
        pthread_mutex_unlock(&c->mu);
        if (a) break;
        usleep(10000);
    }
    for (int i = 0; i < 3; i++) cv_span_end(cv_span_start(&root, "more", CV_SPAN_INTERNAL, 0, NULL), 0);
    cv_otlp_get_counts(&after);
    assert_int_equal(after.dropped_queue_full - before.dropped_queue_full, 1); /* queue of 2 */
    cv_otlp_stop(); /* each hung POST times out: failed, counted */
    cv_otlp_get_counts(&after);
    assert_int_equal(after.dropped_export_failed - before.dropped_export_failed, 3);
    assert_int_equal(after.exported, before.exported);
    collector_stop(c);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_begin_and_sampling),
        cmocka_unit_test(test_span_child_ids),
        cmocka_unit_test(test_export_json),
        cmocka_unit_test(test_drops_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
