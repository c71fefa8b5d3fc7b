/* request_pool: every job runs once, a full queue refuses at once, a large job never
 * holds up a small one (worker 0 stays for them), and free runs what is queued. The
 * server-side proof (health and streams while megabyte prompts are tokenized) is
 * tests/integration/test_server_hol.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "request_pool.h"

/* A job that counts its runs and, when gated, waits until the test opens the gate. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    int entered;
} gate;

static gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
static atomic_int runs;

static void count_job(void *user) {
    (void)user;
    atomic_fetch_add(&runs, 1);
}

static void gated_job(void *user) {
    (void)user;
    pthread_mutex_lock(&g.mu);
    g.entered++;
    pthread_cond_broadcast(&g.cv);
    while (!g.open) pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    atomic_fetch_add(&runs, 1);
}

static void gate_reset(void) {
    pthread_mutex_lock(&g.mu);
    g.open = 0;
    g.entered = 0;
    pthread_mutex_unlock(&g.mu);
    atomic_store(&runs, 0);
}

static void gate_wait_entered(int n) {
    pthread_mutex_lock(&g.mu);
    while (g.entered < n) pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
}

static void gate_open(void) {
    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static void wait_runs(int n) {
    while (atomic_load(&runs) < n) sched_yield();
}

static void test_every_job_runs_once(void **state) {
    (void)state;
    gate_reset();
    cv_request_pool *p;
    cv_error err = {0};
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){3, 1000, 100, 0}, &p, &err), CV_OK);
    for (int i = 0; i < 500; i++)
        assert_int_equal(cv_request_pool_submit(p, count_job, NULL, (size_t)(i % 2) * 100, &err), CV_OK);
    cv_request_pool_free(p); /* runs what is still queued */
    assert_int_equal(atomic_load(&runs), 500);
}

static void test_small_jobs_pass_a_stuck_large_one(void **state) {
    (void)state;
    gate_reset();
    cv_request_pool *p;
    cv_error err = {0};
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){2, 16, 100, 5}, &p, &err), CV_OK);
    /* The one large-job worker is stuck; the second large job waits for it. */
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 100, &err), CV_OK);
    gate_wait_entered(1);
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 1000, &err), CV_OK);
    /* Small jobs still run, on worker 0. */
    for (int i = 0; i < 10; i++) assert_int_equal(cv_request_pool_submit(p, count_job, NULL, 99, &err), CV_OK);
    wait_runs(10);
    assert_int_equal(cv_request_pool_queued(p), 1);
    gate_open();
    wait_runs(12);
    cv_request_pool_free(p);
}

static void test_full_queue_refuses_at_once(void **state) {
    (void)state;
    gate_reset();
    cv_request_pool *p;
    cv_error err = {0};
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){2, 2, 100, 0}, &p, &err), CV_OK);
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 500, &err), CV_OK); /* running */
    gate_wait_entered(1);
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 500, &err), CV_OK); /* queued 1 */
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 500, &err), CV_OK); /* queued 2 */
    assert_int_equal(cv_request_pool_submit(p, gated_job, NULL, 500, &err), CV_EBUSY);
    assert_non_null(strstr(err.msg, "2 large requests are waiting"));
    assert_non_null(strstr(err.msg, "request_queue"));
    /* The small class has a queue of its own. */
    assert_int_equal(cv_request_pool_submit(p, count_job, NULL, 1, &err), CV_OK);
    wait_runs(1);
    gate_open();
    cv_request_pool_free(p);
    assert_int_equal(atomic_load(&runs), 4); /* 3 gated + 1 small; the refused one never ran */
}

static void test_one_worker_takes_both(void **state) {
    (void)state;
    gate_reset();
    cv_request_pool *p;
    cv_error err = {0};
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){1, 8, 100, 0}, &p, &err), CV_OK);
    assert_int_equal(cv_request_pool_submit(p, count_job, NULL, 100, &err), CV_OK);
    assert_int_equal(cv_request_pool_submit(p, count_job, NULL, 0, &err), CV_OK);
    wait_runs(2);
    cv_request_pool_free(p);
}

static void test_bad_config(void **state) {
    (void)state;
    cv_request_pool *p = NULL;
    cv_error err = {0};
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){0, 8, 100, 0}, &p, &err), CV_EINVAL);
    assert_non_null(strstr(err.msg, "0 threads"));
    assert_int_equal(cv_request_pool_new(&(cv_request_pool_config){2, 0, 100, 0}, &p, &err), CV_EINVAL);
    assert_null(p);
    cv_request_pool_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_job_runs_once),
        cmocka_unit_test(test_small_jobs_pass_a_stuck_large_one),
        cmocka_unit_test(test_full_queue_refuses_at_once),
        cmocka_unit_test(test_one_worker_takes_both),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
