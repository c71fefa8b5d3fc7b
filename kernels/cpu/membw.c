#include "membw.h"

#include <emmintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

typedef struct bw_task {
    float *a, *b, *c;
    int64_t n; /* floats per array */
    float sums[64];
} bw_task;

/* SSE2 is enough: one core's loads are far faster than memory either way. */
static void read_task(void *ctx, int ith, int nth) {
    bw_task *t = ctx;
    int64_t lo, hi;
    cv_split_range(t->n, 64, ith, nth, &lo, &hi);
    __m128 s0 = _mm_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = lo; i + 16 <= hi; i += 16) {
        s0 = _mm_add_ps(s0, _mm_load_ps(t->a + i));
        s1 = _mm_add_ps(s1, _mm_load_ps(t->a + i + 4));
        s2 = _mm_add_ps(s2, _mm_load_ps(t->a + i + 8));
        s3 = _mm_add_ps(s3, _mm_load_ps(t->a + i + 12));
    }
    float out[4];
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)));
    t->sums[ith % 64] = out[0] + out[1] + out[2] + out[3]; /* keeps the loads alive */
}

static void triad_task(void *ctx, int ith, int nth) {
    bw_task *t = ctx;
    int64_t lo, hi;
    cv_split_range(t->n, 64, ith, nth, &lo, &hi);
    const __m128 s = _mm_set1_ps(0.5f);
    for (int64_t i = lo; i + 4 <= hi; i += 4)
        _mm_stream_ps(t->a + i, _mm_add_ps(_mm_load_ps(t->b + i), _mm_mul_ps(s, _mm_load_ps(t->c + i))));
    _mm_sfence();
}

/* Every thread touches its own part first, so pages are mapped before timing. */
static void fill_task(void *ctx, int ith, int nth) {
    bw_task *t = ctx;
    int64_t lo, hi;
    cv_split_range(t->n, 64, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        t->a[i] = (float)(i & 1023);
        if (t->b) t->b[i] = t->c[i] = (float)(i & 511);
    }
}

static cv_status measure(cv_threadpool *pool, cv_task_fn fn, bw_task *t, double bytes, int runs, double *gbps,
                         cv_error *err) {
    if (runs < 1 || runs > CV_MEMBW_MAX_RUNS)
        return cv_errorf(err, CV_ERANGE, "membw: %d runs requested, must be 1..%d", runs, CV_MEMBW_MAX_RUNS);
    double v[CV_MEMBW_MAX_RUNS];
    cv_threadpool_run(pool, fill_task, t);
    cv_threadpool_run(pool, fn, t);
    for (int r = 0; r < runs; r++) {
        double t0 = cv_seconds();
        cv_threadpool_run(pool, fn, t);
        v[r] = bytes / (cv_seconds() - t0) / 1e9;
    }
    *gbps = cv_median(v, runs);
    return CV_OK;
}

cv_status cv_membw_read(cv_threadpool *pool, size_t bytes, int runs, double *gbps, cv_error *err) {
    bw_task t = {0};
    if (bytes < 3 * 256) return cv_errorf(err, CV_EINVAL, "membw: a buffer of %zu bytes is too small (at least 768)", bytes);
    bytes &= ~(size_t)255;
    t.n = (int64_t)(bytes / sizeof(float));
    t.a = aligned_alloc(64, bytes);
    if (!t.a) return cv_errorf(err, CV_ENOMEM, "membw: cannot allocate a read buffer of %zu bytes", bytes);
    cv_status s = measure(pool, read_task, &t, (double)bytes, runs, gbps, err);
    free(t.a);
    return s;
}

cv_status cv_membw_triad(cv_threadpool *pool, size_t bytes, int runs, double *gbps, cv_error *err) {
    bw_task t = {0};
    if (bytes < 3 * 256) return cv_errorf(err, CV_EINVAL, "membw: a buffer of %zu bytes is too small (at least 768)", bytes);
    size_t each = bytes / 3 & ~(size_t)255;
    t.n = (int64_t)(each / sizeof(float));
    t.a = aligned_alloc(64, each);
    t.b = aligned_alloc(64, each);
    t.c = aligned_alloc(64, each);
    cv_status s;
    if (!t.a || !t.b || !t.c)
        s = cv_errorf(err, CV_ENOMEM, "membw: cannot allocate three triad arrays of %zu bytes", each);
    else
        s = measure(pool, triad_task, &t, 3.0 * (double)each, runs, gbps, err);
    free(t.a);
    free(t.b);
    free(t.c);
    return s;
}
