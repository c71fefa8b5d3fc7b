/* Leader election against a real etcd: two contenders, fencing, step-down when the
 * lease is revoked, resignation, and hand-over when the leader's process is killed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/etcd_proc.h"
#include "election.h"
#include "etcd.h"

#define TTL_S 2
#define HANDOVER_LIMIT_MS (TTL_S * 1000 + 2000)

static cv_test_etcd *const g_etcd = &cv_test_etcd_shared;

static cv_etcd *client(void) {
    cv_etcd_config cfg = {.endpoints = g_etcd->url, .timeout_ms = 2000, .attempt_timeout_ms = 1000};
    cv_etcd *c = NULL;
    cv_error e = {0};
    if (cv_etcd_open(&cfg, &c, &e)) return NULL;
    return c;
}

static cv_election *contender(cv_etcd *c, const char *prefix, const char *id) {
    cv_election_config cfg = {.prefix = prefix, .id = id, .ttl_s = TTL_S, .poll_ms = 200};
    cv_election *el = NULL;
    cv_error e = {0};
    if (cv_election_start(c, &cfg, &el, &e)) fail_msg("election start: %s", e.msg);
    return el;
}

static void wait_state(cv_election *el, bool leader, int ms) {
    cv_error e = {0};
    if (cv_election_wait(el, leader, ms, &e)) fail_msg("%s", e.msg);
}

static void test_fenced_leader_steps_down_when_lease_revoked(void **state) {
    (void)state;
    char prefix[64], leader_key[96], status_key[96];
    snprintf(prefix, sizeof prefix, "/e%08x", (unsigned)rand());
    snprintf(leader_key, sizeof leader_key, "%s/controlplane/leader", prefix);
    snprintf(status_key, sizeof status_key, "%s/models/m/status", prefix);
    cv_etcd *admin = client(), *ca = client(), *cb = client();
    assert_non_null(admin);
    assert_non_null(ca);
    assert_non_null(cb);
    cv_election *a = contender(ca, prefix, "A");
    wait_state(a, true, 5000);
    cv_election *b = contender(cb, prefix, "B");
    cv_test_sleep_ms(600);
    cv_election_status sa, sb;
    cv_election_get_status(b, &sb);
    assert_false(sb.leader);
    assert_string_equal(sb.holder, "A");
    cv_election_get_status(a, &sa);
    assert_true(sa.leader);
    assert_int_equal(sa.terms, 1);

    /* The fence is the leader key's create_revision; writes carry it. */
    cv_error e = {0};
    cv_etcd_kv kv;
    assert_int_equal(cv_etcd_get(admin, leader_key, &kv, NULL, &e), CV_OK);
    assert_int_equal(kv.create_revision, sa.fence);
    assert_int_equal(kv.lease, sa.lease);
    assert_string_equal(kv.value, "A");
    cv_etcd_kv_free(&kv);
    assert_int_equal(cv_election_put(a, status_key, "a1", 2, NULL, &e), CV_OK);
    cv_etcd_cmp fence_b;
    assert_int_equal(cv_election_fence(b, &fence_b, &e), CV_EPERM);
    assert_int_equal(cv_election_put(b, status_key, "b0", 2, NULL, &e), CV_EPERM);

    /* Revoke A's lease behind its back: its next keepalive finds it gone. */
    int64_t t0 = cv_test_now_ms();
    assert_int_equal(cv_etcd_lease_revoke(admin, sa.lease, &e), CV_OK);
    wait_state(a, false, TTL_S * 1000 / 3 + 1500);
    int64_t stepped = cv_test_now_ms() - t0;
    wait_state(b, true, HANDOVER_LIMIT_MS);
    int64_t handed = cv_test_now_ms() - t0;
    fprintf(stderr, "lease revoked: A stepped down after %lld ms, B leader after %lld ms\n",
            (long long)stepped, (long long)handed);
    cv_election_get_status(b, &sb);
    assert_true(sb.fence > sa.fence);

    /* A stale leader's fence is refused by etcd itself. */
    cv_etcd_cmp stale = {.key = leader_key, .target = CV_ETCD_CMP_CREATE, .result = CV_ETCD_EQUAL,
                         .number = sa.fence};
    cv_etcd_op put = {.type = CV_ETCD_OP_PUT, .key = status_key, .value = "stale", .value_len = 5};
    cv_etcd_txn_result r;
    assert_int_equal(cv_etcd_txn(admin, &stale, 1, &put, 1, NULL, 0, &r, &e), CV_OK);
    assert_false(r.succeeded);
    cv_etcd_txn_result_free(&r);
    assert_int_equal(cv_election_put(a, status_key, "a2", 2, NULL, &e), CV_EPERM);
    assert_int_equal(cv_election_put(b, status_key, "b1", 2, NULL, &e), CV_OK);
    assert_int_equal(cv_etcd_get(admin, status_key, &kv, NULL, &e), CV_OK);
    assert_string_equal(kv.value, "b1");
    cv_etcd_kv_free(&kv);

    /* B resigns: its key goes with its lease at once, and A (once done sitting out
     * the TTL after its own step-down) leads again. */
    cv_election_stop(b);
    cv_status got = cv_etcd_get(admin, leader_key, &kv, NULL, &e);
    if (got == CV_OK) {
        assert_string_equal(kv.value, "A");
        cv_etcd_kv_free(&kv);
    } else {
        assert_int_equal(got, CV_ENOTFOUND);
    }
    wait_state(a, true, 3 * TTL_S * 1000);
    cv_election_get_status(a, &sa);
    assert_int_equal(sa.terms, 2);
    cv_election_stop(a);
    assert_int_equal(cv_etcd_get(admin, leader_key, &kv, NULL, &e), CV_ENOTFOUND);
    cv_etcd_close(admin);
    cv_etcd_close(ca);
    cv_etcd_close(cb);
}

static void test_leader_unsure_of_its_lease_stops_leading(void **state) {
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/u%08x", (unsigned)rand());
    cv_etcd *c = client();
    assert_non_null(c);
    cv_election *a = contender(c, prefix, "A");
    wait_state(a, true, 5000);
    /* etcd hangs: renewals get no answer, so A cannot know its lease still holds. */
    cv_test_etcd_pause(g_etcd, true);
    int64_t t0 = cv_test_now_ms();
    cv_election_status st;
    cv_etcd_cmp fence;
    cv_error e = {0};
    do {
        cv_test_sleep_ms(20);
        cv_election_get_status(a, &st);
    } while (st.leader && cv_test_now_ms() - t0 < TTL_S * 1000);
    int64_t ms = cv_test_now_ms() - t0;
    assert_int_equal(cv_election_fence(a, &fence, &e), CV_EPERM);
    cv_test_etcd_pause(g_etcd, false);
    fprintf(stderr, "etcd hung: leader stopped leading after %lld ms (TTL %d s)\n", (long long)ms, TTL_S);
    assert_false(st.leader);
    /* Leadership lapses 2/3 of the TTL after the last renewal: before etcd could
     * expire the lease and let another contender in. */
    assert_true(ms < TTL_S * 1000);
    wait_state(a, true, 10000); /* and is won back once etcd answers */
    cv_election_stop(a);
    cv_etcd_close(c);
}

/* The child contender: leads, reports its fence on fd, then waits to be killed. */
static void child_contender(const char *prefix, int fd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    cv_etcd *c = client();
    cv_election_config cfg = {.prefix = prefix, .id = "P1", .ttl_s = TTL_S, .poll_ms = 200};
    cv_election *el = NULL;
    cv_error e = {0};
    char msg[64] = "E";
    if (c && cv_election_start(c, &cfg, &el, &e) == CV_OK && cv_election_wait(el, true, 10000, &e) == CV_OK) {
        cv_election_status st;
        cv_election_get_status(el, &st);
        snprintf(msg, sizeof msg, "L%" PRId64 "\n", st.fence);
    }
    (void)!write(fd, msg, strlen(msg));
    for (;;) pause();
}

/* The child contender of the running test; killed by the teardown if an assertion
 * left it running (it also dies with this process: PR_SET_PDEATHSIG). */
static pid_t g_child;

static void kill_child(void) {
    if (g_child <= 0) return;
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
    g_child = 0;
}

static int teardown_child(void **state) {
    (void)state;
    kill_child();
    return 0;
}

static void test_killed_leader_process_hands_over(void **state) {
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "/k%08x", (unsigned)rand());
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* No thread runs in this process here, so the child may use curl freely. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child_contender(prefix, p[1]);
    }
    g_child = pid;
    close(p[1]);
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    char msg[64] = {0};
    assert_int_equal(poll(&pfd, 1, 15000), 1);
    assert_true(read(p[0], msg, sizeof msg - 1) > 0);
    close(p[0]);
    int64_t child_fence = 0;
    if (sscanf(msg, "L%" SCNd64, &child_fence) != 1) {
        kill_child();
        fail_msg("child contender did not lead: %s", msg);
    }

    cv_etcd *c = client();
    assert_non_null(c);
    cv_election *b = contender(c, prefix, "B");
    cv_test_sleep_ms(700);
    cv_election_status sb;
    cv_election_get_status(b, &sb);
    assert_false(sb.leader);
    assert_string_equal(sb.holder, "P1");

    kill_child();
    int64_t t0 = cv_test_now_ms();
    wait_state(b, true, HANDOVER_LIMIT_MS + 1000);
    int64_t ms = cv_test_now_ms() - t0;
    fprintf(stderr, "leader process killed: hand-over after %lld ms (TTL %d s, limit %d ms)\n",
            (long long)ms, TTL_S, HANDOVER_LIMIT_MS);
    assert_true(ms <= HANDOVER_LIMIT_MS);
    cv_election_get_status(b, &sb);
    assert_true(sb.fence > child_fence);
    cv_election_stop(b);
    cv_etcd_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_killed_leader_process_hands_over, teardown_child),
        cmocka_unit_test(test_fenced_leader_steps_down_when_lease_revoked),
        cmocka_unit_test(test_leader_unsure_of_its_lease_stops_leading),
    };
    return cmocka_run_group_tests(tests, cv_test_etcd_group_setup, cv_test_etcd_group_teardown);
}
