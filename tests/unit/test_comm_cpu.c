#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/test_rng.h"
#include "comm_cpu.h"

static uint64_t g_seed;

/* Values of mixed sign and magnitude, so that the order of the additions shows. */
static float rand_float(cv_test_rng *s) {
    uint64_t r = cv_test_rng_next(s);
    float u = (float)(r >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
    return u * (float)(1 << (r & 15));
}

typedef struct job {
    cv_comm *comm;
    int rank, rounds;
    int64_t n;
    const float *in;        /* [rounds][size][n] */
    const float *want;      /* [rounds][n]: the serial sum in rank order */
    float *buf;
    int64_t mismatches;
    cv_status status;
} job;

static void *rank_main(void *arg) {
    job *j = arg;
    const int size = j->comm->size;
    for (int r = 0; r < j->rounds; r++) {
        memcpy(j->buf, j->in + ((size_t)r * (size_t)size + (size_t)j->rank) * (size_t)j->n,
               (size_t)j->n * sizeof(float));
        cv_error e = {0};
        cv_status s = j->comm->ops->allreduce_sum(j->comm, j->rank, j->buf, j->n, &e);
        if (s) {
            j->status = s;
            return NULL;
        }
        /* Bitwise: every rank must hold exactly the rank-ordered sum. */
        if (memcmp(j->buf, j->want + (size_t)r * (size_t)j->n, (size_t)j->n * sizeof(float)))
            j->mismatches++;
    }
    return NULL;
}

static void run_case(int size, int64_t n, int rounds) {
    cv_test_rng st = cv_test_rng_new(g_seed ^ ((uint64_t)size << 48) ^ ((uint64_t)n << 8) ^ (uint64_t)rounds);
    const size_t per_round = (size_t)size * (size_t)n;
    float *in = malloc((size_t)rounds * per_round * sizeof *in);
    float *want = malloc((size_t)rounds * (size_t)n * sizeof *want);
    assert_non_null(in);
    assert_non_null(want);
    for (size_t i = 0; i < (size_t)rounds * per_round; i++) in[i] = rand_float(&st);
    for (int r = 0; r < rounds; r++)
        for (int64_t i = 0; i < n; i++) {
            float s = in[(size_t)r * per_round + (size_t)i];
            for (int k = 1; k < size; k++) s += in[(size_t)r * per_round + (size_t)k * (size_t)n + (size_t)i];
            want[(size_t)r * (size_t)n + (size_t)i] = s;
        }

    cv_comm *comm;
    cv_error e = {0};
    assert_int_equal(cv_comm_cpu_create(size, &comm, &e), CV_OK);
    assert_int_equal(comm->size, size);
    job jobs[4];
    pthread_t th[4];
    for (int k = 0; k < size; k++) {
        jobs[k] = (job){.comm = comm, .rank = k, .rounds = rounds, .n = n, .in = in, .want = want,
                        .buf = malloc((size_t)n * sizeof(float))};
        assert_non_null(jobs[k].buf);
    }
    for (int k = 1; k < size; k++) assert_int_equal(pthread_create(&th[k], NULL, rank_main, &jobs[k]), 0);
    rank_main(&jobs[0]);
    for (int k = 1; k < size; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < size; k++) {
        if (jobs[k].status || jobs[k].mismatches)
            fail_msg("seed %llu: %d ranks, n %lld: rank %d status %d, %lld of %d rounds differ from the serial sum",
                     (unsigned long long)g_seed, size, (long long)n, k, jobs[k].status,
                     (long long)jobs[k].mismatches, rounds);
        free(jobs[k].buf);
    }
    cv_comm_destroy(comm);
    free(in);
    free(want);
}

static void test_matches_serial_sum(void **state) {
    (void)state;
    const int64_t sizes[] = {1, 2, 3, 15, 16, 17, 31, 33, 257, 1001, 100003};
    for (int size = 1; size <= 4; size++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            run_case(size, sizes[i], sizes[i] > 10000 ? 4 : 20);
}

/* Many back-to-back reductions: the barrier must be reusable without a rank lapping
 * another (a fast rank overwriting its published buffer while a slow one still reads). */
static void test_many_consecutive(void **state) {
    (void)state;
    for (int size = 2; size <= 4; size++) run_case(size, 67, 400);
}

static void *mismatch_rank(void *arg) {
    job *j = arg;
    cv_error e = {0};
    j->status = j->comm->ops->allreduce_sum(j->comm, j->rank, j->buf, j->n, &e);
    if (j->rank == 0 && j->status) assert_non_null(strstr(e.msg, "on rank 1"));
    return NULL;
}

static void test_mismatched_lengths_fail_everywhere(void **state) {
    (void)state;
    cv_comm *comm;
    assert_int_equal(cv_comm_cpu_create(2, &comm, NULL), CV_OK);
    float a[8] = {1}, b[8] = {2};
    job j0 = {.comm = comm, .rank = 0, .n = 8, .buf = a}, j1 = {.comm = comm, .rank = 1, .n = 5, .buf = b};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, mismatch_rank, &j1), 0);
    mismatch_rank(&j0);
    pthread_join(t, NULL);
    assert_int_equal(j0.status, CV_EINVAL);
    assert_int_equal(j1.status, CV_EINVAL);
    assert_true(a[0] == 1 && b[0] == 2); /* untouched */
    /* The comm is still usable afterwards. */
    j1.n = 8;
    assert_int_equal(pthread_create(&t, NULL, mismatch_rank, &j1), 0);
    mismatch_rank(&j0);
    pthread_join(t, NULL);
    assert_int_equal(j0.status, CV_OK);
    assert_true(a[0] == 3 && b[0] == 3);
    cv_comm_destroy(comm);
}

static void test_rank_count_checked(void **state) {
    (void)state;
    cv_comm *comm = (cv_comm *)1;
    cv_error e = {0};
    assert_int_equal(cv_comm_cpu_create(0, &comm, &e), CV_EINVAL);
    assert_null(comm);
    assert_non_null(strstr(e.msg, "0 ranks"));
    assert_int_equal(cv_comm_cpu_create(CV_COMM_CPU_MAX_RANKS + 1, &comm, &e), CV_EINVAL);
    assert_int_equal(cv_comm_cpu_create(1, &comm, &e), CV_OK);
    assert_string_equal(comm->name, "cpu");
    cv_comm_destroy(comm);
}

int main(void) {
    g_seed = cv_test_seed("test_comm_cpu");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_serial_sum),
        cmocka_unit_test(test_many_consecutive),
        cmocka_unit_test(test_mismatched_lengths_fail_everywhere),
        cmocka_unit_test(test_rank_count_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
