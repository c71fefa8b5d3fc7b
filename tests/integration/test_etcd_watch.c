/* The etcd watch against a real etcd: 1,000 puts across a SIGSTOP and a kill and
 * restart, a compaction while the watcher is cut off, and the caller's wait API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../support/etcd_proc.h"
#include "etcd.h"
#include "etcd_watch.h"

#define N_PUTS 1000
#define N_KEYS 20
#define PER_KEY (N_PUTS / N_KEYS)

static cv_test_etcd *const g_etcd = &cv_test_etcd_shared;

static cv_etcd *open_client(const char *endpoints) {
    cv_etcd_config cfg = {.endpoints = endpoints, .timeout_ms = 3000, .attempt_timeout_ms = 1000};
    cv_etcd *c = NULL;
    cv_error e = {0};
    if (cv_etcd_open(&cfg, &c, &e)) fail_msg("cv_etcd_open: %s", e.msg);
    return c;
}

static cv_etcd_watch *start_watch(cv_etcd *c, const char *prefix, int idle_ms) {
    cv_etcd_watch_config wc = {.prefix = prefix, .idle_timeout_ms = idle_ms};
    cv_etcd_watch *w = NULL;
    cv_error e = {0};
    if (cv_etcd_watch_start(c, &wc, &w, &e)) fail_msg("watch start: %s", e.msg);
    return w;
}

static void next_event(cv_etcd_watch *w, int timeout_ms, cv_etcd_watch_event *ev) {
    cv_error e = {0};
    cv_status st = cv_etcd_watch_next(w, timeout_ms, ev, &e);
    if (st) fail_msg("watch next: %s", e.msg);
}

/* ---- 1,000 puts while etcd is stopped, continued, killed and restarted ----
 * A thread puts; the main thread consumes events and plays chaos (etcd must be
 * launched from the main thread, see etcd_proc.h). */

typedef struct putter {
    cv_etcd *c;
    const char *prefix;
    atomic_int done;
    int retries;
    int64_t ms, last_rev;
    int64_t rev[N_PUTS]; /* revision of put i */
    bool ok;
} putter;

/* Puts until acknowledged, exactly once. A put whose fate is unknown (a timeout)
 * may still land later, even after a retry, so each put is a txn conditioned on the
 * key's mod_revision being the one of our previous put: of two copies at most one
 * applies, and a failed compare means ours already did (values are distinct). */
static int64_t put_exactly_once(cv_etcd *c, const char *key, const char *val, int64_t prev,
                                int *retries) {
    cv_etcd_cmp cmp = {.key = key, .target = CV_ETCD_CMP_MOD, .result = CV_ETCD_EQUAL, .number = prev};
    cv_etcd_op op = {.type = CV_ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val)};
    cv_etcd_op get = {.type = CV_ETCD_OP_RANGE, .key = key};
    for (;; (*retries)++) {
        cv_error e = {0};
        cv_etcd_txn_result r;
        if (cv_etcd_txn(c, &cmp, 1, &op, 1, &get, 1, &r, &e) != CV_OK) {
            cv_test_sleep_ms(20);
            continue;
        }
        int64_t rev = r.header.revision;
        if (!r.succeeded) {
            const cv_etcd_range_result *cur = &r.results[0].range;
            rev = cur->n_kvs && strcmp(cur->kvs[0].value, val) == 0 ? cur->kvs[0].mod_revision : -1;
        }
        cv_etcd_txn_result_free(&r);
        return rev; /* -1: someone else wrote the key */
    }
}

static void *putter_main(void *arg) {
    putter *p = arg;
    int64_t t0 = cv_test_now_ms();
    p->ok = true;
    for (int i = 0; i < N_PUTS; i++) {
        char key[96], val[32];
        snprintf(key, sizeof key, "%skey%02d", p->prefix, i % N_KEYS);
        snprintf(val, sizeof val, "k%d-%d", i % N_KEYS, i);
        p->rev[i] = put_exactly_once(p->c, key, val, i < N_KEYS ? 0 : p->rev[i - N_KEYS], &p->retries);
        if (p->rev[i] < 0 || (i && p->rev[i] <= p->rev[i - 1])) {
            p->ok = false;
            p->rev[i] = INT64_MAX; /* the consumer gives up waiting for it after 20 s */
        }
        p->last_rev = p->rev[i];
        atomic_store(&p->done, i + 1);
    }
    p->ms = cv_test_now_ms() - t0;
    return NULL;
}

typedef struct consumer {
    cv_etcd_watch *w;
    size_t prefix_len;
    int put_no[N_KEYS][PER_KEY * 2]; /* the put number each applied value came from */
    int64_t rev[N_KEYS][PER_KEY * 2];
    int n[N_KEYS], total;
    int64_t seen_rev;
} consumer;

/* Applies events for up to ms, or until revision `upto` has been seen. */
static void consume_for(consumer *c, int ms, int64_t upto) {
    int64_t end = cv_test_now_ms() + ms;
    for (int64_t left; (left = end - cv_test_now_ms()) > 0 && c->seen_rev < upto;) {
        cv_etcd_watch_event ev;
        cv_error e = {0};
        if (cv_etcd_watch_next(c->w, (int)left, &ev, &e) != CV_OK) return;
        assert_int_equal(ev.kind, CV_ETCD_WATCH_PUT);
        int k, i;
        assert_int_equal(sscanf(ev.kv.key + c->prefix_len, "key%d", &k), 1);
        assert_int_equal(sscanf(ev.kv.value, "k%*d-%d", &i), 1);
        assert_true(k >= 0 && k < N_KEYS && c->n[k] < PER_KEY * 2);
        c->put_no[k][c->n[k]] = i;
        c->rev[k][c->n[k]++] = ev.revision;
        c->total++;
        if (ev.revision > c->seen_rev) c->seen_rev = ev.revision;
        cv_etcd_watch_event_free(&ev);
    }
}

static void consume_until_puts(consumer *c, putter *p, int n) {
    while (atomic_load(&p->done) < n) consume_for(c, 10, INT64_MAX);
}

static void test_thousand_puts_survive_stop_and_restart(void **state) {
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/w%08x/", (unsigned)rand());
    cv_etcd *pc = open_client(g_etcd->url);
    cv_etcd *wc = open_client(g_etcd->url);
    static consumer con;
    memset(&con, 0, sizeof con);
    con.w = start_watch(wc, prefix, 1500);
    con.prefix_len = strlen(prefix);
    cv_etcd_watch_event ev;
    next_event(con.w, 5000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_RESYNC);
    assert_int_equal(ev.n_kvs, 0);
    cv_etcd_watch_event_free(&ev);

    static putter put;
    memset(&put, 0, sizeof put);
    put.c = pc;
    put.prefix = prefix;
    int64_t t0 = cv_test_now_ms();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, putter_main, &put), 0);

    consume_until_puts(&con, &put, N_PUTS / 4);
    int64_t t = cv_test_now_ms();
    cv_test_etcd_pause(g_etcd, true);
    consume_for(&con, 2500, INT64_MAX); /* longer than the watcher's idle timeout: it reconnects meanwhile */
    cv_test_etcd_pause(g_etcd, false);
    int64_t stop_ms = cv_test_now_ms() - t;

    consume_until_puts(&con, &put, N_PUTS * 3 / 5);
    t = cv_test_now_ms();
    cv_test_etcd_kill(g_etcd, SIGKILL);
    consume_for(&con, 300, INT64_MAX);
    cv_error e = {0};
    cv_status launched = cv_test_etcd_launch(g_etcd, true, &e);
    int64_t restart_ms = cv_test_now_ms() - t;
    if (launched) fail_msg("restarting etcd: %s", e.msg);

    consume_until_puts(&con, &put, N_PUTS);
    pthread_join(th, NULL);
    while (con.seen_rev < put.last_rev) {
        int before = con.total;
        consume_for(&con, 20000, put.last_rev);
        if (con.total == before) fail_msg("no event for 20 s, last seen revision %lld of %lld",
                                          (long long)con.seen_rev, (long long)put.last_rev);
    }
    int64_t total_ms = cv_test_now_ms() - t0;
    assert_true(put.ok);

    /* Exactly the puts, in order, each once: nothing lost, nothing doubled. */
    for (int k = 0; k < N_KEYS; k++) {
        assert_int_equal(con.n[k], PER_KEY);
        for (int j = 0; j < PER_KEY; j++) {
            int i = j * N_KEYS + k;
            assert_int_equal(con.put_no[k][j], i);
            assert_int_equal(con.rev[k][j], put.rev[i]);
            if (j) assert_true(con.rev[k][j] > con.rev[k][j - 1]);
        }
    }
    assert_int_equal(con.total, N_PUTS);
    /* Revisions are unique across keys too. */
    static int64_t all[N_PUTS];
    int n = 0;
    for (int k = 0; k < N_KEYS; k++)
        for (int j = 0; j < PER_KEY; j++) all[n++] = con.rev[k][j];
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) assert_true(all[i] != all[j]);

    cv_etcd_watch_stats st;
    cv_etcd_watch_get_stats(con.w, &st);
    fprintf(stderr,
            "1000 puts: %lld ms of puts, %lld ms until the last event; etcd stopped %lld ms, "
            "killed+restarted in %lld ms; %d put retries; watch: %llu streams, %llu reconnects, "
            "%llu resyncs, %llu duplicates dropped; last stream end: %s\n",
            (long long)put.ms, (long long)total_ms, (long long)stop_ms, (long long)restart_ms,
            put.retries, (unsigned long long)st.streams, (unsigned long long)st.reconnects,
            (unsigned long long)st.resyncs, (unsigned long long)st.duplicates, st.last_error);
    assert_true(st.reconnects >= 1); /* the kill broke the stream */
    assert_int_equal(st.resyncs, 1);  /* no compaction: resumed by revision only */
    assert_int_equal(st.events, N_PUTS);
    cv_etcd_watch_stop(con.w);
    cv_etcd_close(wc);
    cv_etcd_close(pc);
}

/* ---- compaction while the watcher is cut off ---- */

static void put(cv_etcd *c, const char *prefix, const char *name, const char *val, int64_t *rev) {
    char key[96];
    cv_error e = {0};
    cv_etcd_header h;
    snprintf(key, sizeof key, "%s%s", prefix, name);
    if (cv_etcd_put(c, key, val, strlen(val), 0, &h, &e)) fail_msg("put %s: %s", key, e.msg);
    if (rev) *rev = h.revision;
}

static void test_compaction_while_cut_off_resyncs(void **state) {
    (void)state;
    char prefix[64], key[96];
    snprintf(prefix, sizeof prefix, "/c%08x/", (unsigned)rand());
    cv_etcd *admin = open_client(g_etcd->alt_url);
    cv_etcd *wc = open_client(g_etcd->url);
    cv_etcd_watch *w = start_watch(wc, prefix, 0);
    cv_etcd_watch_event ev;
    next_event(w, 5000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_RESYNC);
    cv_etcd_watch_event_free(&ev);
    put(admin, prefix, "a", "a1", NULL);
    put(admin, prefix, "b", "b1", NULL);
    put(admin, prefix, "c", "c1", NULL);
    for (int i = 0; i < 3; i++) {
        next_event(w, 5000, &ev);
        assert_int_equal(ev.kind, CV_ETCD_WATCH_PUT);
        cv_etcd_watch_event_free(&ev);
    }

    /* Serve only the admin URL: the watcher loses its stream and cannot come back. */
    cv_error e = {0};
    cv_test_etcd_kill(g_etcd, SIGTERM);
    if (cv_test_etcd_launch(g_etcd, false, &e)) fail_msg("relaunch: %s", e.msg);
    int64_t rev;
    put(admin, prefix, "a", "a2", NULL);
    snprintf(key, sizeof key, "%sb", prefix);
    assert_int_equal(cv_etcd_delete(admin, key, false, NULL, NULL, &e), CV_OK);
    put(admin, prefix, "d", "d1", NULL);
    put(admin, prefix, "a", "a3", &rev);
    assert_int_equal(cv_etcd_compact(admin, rev, &e), CV_OK);
    cv_test_etcd_kill(g_etcd, SIGTERM);
    if (cv_test_etcd_launch(g_etcd, true, &e)) fail_msg("relaunch: %s", e.msg);

    /* The history the watcher asks for is gone: it gets the full state instead. */
    next_event(w, 10000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_RESYNC);
    assert_true(ev.revision >= rev);
    assert_int_equal(ev.n_kvs, 3);
    const char *want[3][2] = {{"a", "a3"}, {"c", "c1"}, {"d", "d1"}};
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "%s%s", prefix, want[i][0]);
        assert_string_equal(ev.kvs[i].key, key);
        assert_string_equal(ev.kvs[i].value, want[i][1]);
    }
    cv_etcd_watch_event_free(&ev);
    /* And it watches on from there. */
    put(admin, prefix, "e", "e1", &rev);
    next_event(w, 5000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_PUT);
    assert_int_equal(ev.revision, rev);
    assert_string_equal(ev.kv.value, "e1");
    cv_etcd_watch_event_free(&ev);
    snprintf(key, sizeof key, "%se", prefix);
    assert_int_equal(cv_etcd_delete(admin, key, false, NULL, NULL, &e), CV_OK);
    next_event(w, 5000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_DELETE);
    assert_string_equal(ev.kv.key, key);
    cv_etcd_watch_event_free(&ev);

    cv_etcd_watch_stats st;
    cv_etcd_watch_get_stats(w, &st);
    fprintf(stderr, "compaction: %llu compaction cancels, %llu resyncs, %llu reconnects\n",
            (unsigned long long)st.compactions, (unsigned long long)st.resyncs,
            (unsigned long long)st.reconnects);
    assert_int_equal(st.compactions, 1);
    assert_int_equal(st.resyncs, 2);
    cv_etcd_watch_stop(w);
    cv_etcd_close(wc);
    cv_etcd_close(admin);
}

/* ---- the caller's side: a timeout, and an fd to poll ---- */

static void test_next_timeout_and_pollable_fd(void **state) {
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/p%08x/", (unsigned)rand());
    cv_etcd *c = open_client(g_etcd->url);
    cv_etcd_watch *w = start_watch(c, prefix, 0);
    struct pollfd pfd = {.fd = cv_etcd_watch_fd(w), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    cv_etcd_watch_event ev;
    next_event(w, 0, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_RESYNC);
    cv_etcd_watch_event_free(&ev);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    cv_error e = {0};
    assert_int_equal(cv_etcd_watch_next(w, 100, &ev, &e), CV_ETIMEOUT);
    assert_non_null(strstr(e.msg, prefix));
    int64_t rev;
    put(c, prefix, "x", "1", &rev);
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    next_event(w, 0, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_PUT);
    assert_int_equal(ev.revision, rev);
    cv_etcd_watch_event_free(&ev);
    assert_int_equal(poll(&pfd, 1, 0), 0);
    /* Events left in the queue are freed by stop. */
    put(c, prefix, "y", "2", NULL);
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    cv_etcd_watch_stop(w);
    cv_etcd_close(c);
}

static void test_stream_fails_over_to_a_live_endpoint(void **state) {
    (void)state;
    char prefix[64], eps[160];
    snprintf(prefix, sizeof prefix, "/f%08x/", (unsigned)rand());
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,%s", cv_test_free_port(), g_etcd->url);
    cv_etcd *live = open_client(g_etcd->url), *c = open_client(eps);
    int64_t rev;
    put(live, prefix, "before", "0", &rev);
    /* From a revision, without the initial range: the stream itself must find the
     * live endpoint, starting with the dead one. */
    cv_etcd_watch_config wc = {.prefix = prefix, .start_revision = rev + 1};
    cv_etcd_watch *w = NULL;
    cv_error e = {0};
    assert_int_equal(cv_etcd_watch_start(c, &wc, &w, &e), CV_OK);
    put(live, prefix, "after", "1", &rev);
    cv_etcd_watch_event ev;
    next_event(w, 5000, &ev);
    assert_int_equal(ev.kind, CV_ETCD_WATCH_PUT);
    assert_int_equal(ev.revision, rev);
    assert_string_equal(ev.kv.value, "1");
    cv_etcd_watch_event_free(&ev);
    cv_etcd_watch_stats st;
    cv_etcd_watch_get_stats(w, &st);
    assert_int_equal(st.resyncs, 0);
    assert_int_equal(st.streams, 1);
    assert_true(st.reconnects >= 1);
    assert_int_equal(cv_etcd_preferred(c), 1);
    cv_etcd_watch_stop(w);
    cv_etcd_close(c);
    cv_etcd_close(live);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_timeout_and_pollable_fd),
        cmocka_unit_test(test_thousand_puts_survive_stop_and_restart),
        cmocka_unit_test(test_compaction_while_cut_off_resyncs),
        cmocka_unit_test(test_stream_fails_over_to_a_live_endpoint),
    };
    return cmocka_run_group_tests(tests, cv_test_etcd_group_setup, cv_test_etcd_group_teardown);
}
