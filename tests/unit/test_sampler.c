#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/test_rng.h"
#include "sampler.h"

/* Test data comes from this generator, seeded fresh each run (printed). */
static uint64_t g_seed;
static cv_test_rng g_rng;

static uint64_t rnd(void) { return cv_test_rng_next(&g_rng); }

static float rnd_logit(void) { return (float)((double)(rnd() >> 11) * 0x1.0p-53 * 20.0 - 10.0); }

static float *random_logits(int32_t n) {
    float *l = malloc((size_t)n * sizeof *l);
    assert_non_null(l);
    for (int32_t i = 0; i < n; i++) l[i] = rnd_logit();
    return l;
}

static cv_sampler_params plain(float temperature) {
    cv_sampler_params p;
    cv_sampler_params_default(&p);
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static cv_sampler *make(const cv_sampler_params *p, int32_t n_vocab) {
    cv_sampler *s = NULL;
    cv_error e = {0};
    assert_int_equal(cv_sampler_new(p, n_vocab, &s, &e), CV_OK);
    return s;
}

/* Token ids sorted best first (logit desc, id asc), the sampler's own order. */
static const float *g_sort_logits;
static int by_logit_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sort_logits[x] != g_sort_logits[y]) return g_sort_logits[x] > g_sort_logits[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

static int32_t *rank_tokens(const float *logits, int32_t n) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    assert_non_null(ids);
    for (int32_t i = 0; i < n; i++) ids[i] = i;
    g_sort_logits = logits;
    qsort(ids, (size_t)n, sizeof *ids, by_logit_desc);
    return ids;
}

static void expect_invalid(cv_sampler_params p, const char *field, const char *value) {
    cv_error e = {0};
    cv_sampler *s = NULL;
    assert_int_equal(cv_sampler_new(&p, 100, &s, &e), CV_EINVAL);
    assert_null(s);
    if (!strstr(e.msg, field) || !strstr(e.msg, value)) fail_msg("message '%s' lacks '%s' or '%s'", e.msg, field, value);
}

/* The defaults are the named constants; "off" turns every stage off; both are valid. */
static void test_defaults_and_off(void **state) {
    (void)state;
    cv_sampler_params p;
    cv_sampler_params_default(&p);
    assert_true(p.temperature == (float)CV_SAMPLER_DEFAULT_TEMPERATURE && p.temperature == 0.8f);
    assert_int_equal(p.top_k, CV_SAMPLER_DEFAULT_TOP_K);
    assert_true(p.top_p == (float)CV_SAMPLER_DEFAULT_TOP_P && p.min_p == (float)CV_SAMPLER_DEFAULT_MIN_P);
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, CV_SAMPLER_DEFAULT_REPEAT_LAST_N);
    assert_int_equal(cv_sampler_params_validate(&p, NULL), CV_OK);
    cv_sampler_params_off(&p);
    assert_true(p.temperature == 0.0f && p.top_k == 0 && p.top_p == 1.0f && p.min_p == 0.0f);
    assert_true(p.repeat_penalty == 1.0f && !p.logprobs && p.top_logprobs == 0 && p.seed == 0);
    assert_int_equal(p.repeat_last_n, CV_SAMPLER_DEFAULT_REPEAT_LAST_N);
    assert_int_equal(cv_sampler_params_validate(&p, NULL), CV_OK);
    assert_string_equal(CV_SAMPLER_STR(CV_SAMPLER_DEFAULT_TEMPERATURE), "0.8");
}

static void test_validation_names_field_and_value(void **state) {
    (void)state;
    cv_sampler_params p = plain(1.0f);
    p.temperature = -0.5f;
    expect_invalid(p, "temperature", "-0.5");
    p = plain(NAN);
    expect_invalid(p, "temperature", "nan");
    p = plain(1.0f);
    p.top_p = 0.0f;
    expect_invalid(p, "top_p", "0");
    p.top_p = 1.5f;
    expect_invalid(p, "top_p", "1.5");
    p = plain(1.0f);
    p.top_k = -3;
    expect_invalid(p, "top_k", "-3");
    p = plain(1.0f);
    p.min_p = 1.25f;
    expect_invalid(p, "min_p", "1.25");
    p.min_p = -0.1f;
    expect_invalid(p, "min_p", "-0.1");
    p = plain(1.0f);
    p.repeat_penalty = 0.0f;
    expect_invalid(p, "repetition_penalty", "0");
    p.repeat_penalty = -1.0f;
    expect_invalid(p, "repetition_penalty", "-1");
    p = plain(1.0f);
    p.repeat_last_n = -1;
    expect_invalid(p, "repetition_window", "-1");
    p = plain(1.0f);
    p.top_logprobs = 21;
    expect_invalid(p, "logprobs 21", "21");
    /* NaN and infinities are "not a number", never "negative" or "outside". */
    p = plain(1.0f);
    p.top_p = NAN;
    expect_invalid(p, "top_p nan", "is not a number");
    p = plain(INFINITY);
    expect_invalid(p, "temperature inf", "is not a number");
    p = plain(1.0f);
    p.min_p = -INFINITY;
    expect_invalid(p, "min_p -inf", "is not a number");
    p = plain(1.0f);
    p.repeat_penalty = NAN;
    expect_invalid(p, "repetition_penalty nan", "is not a number");

    cv_error e = {0};
    cv_sampler *s = NULL;
    p = plain(1.0f);
    assert_int_equal(cv_sampler_new(&p, 0, &s, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "vocabulary size 0"));
    cv_sampler_params_default(&p);
    assert_int_equal(cv_sampler_params_validate(&p, &e), CV_OK);
}

static void test_greedy_is_argmax_lowest_id_on_ties(void **state) {
    (void)state;
    const int32_t n = 5000;
    float *l = random_logits(n);
    cv_sampler_params p = plain(0.0f);
    p.top_k = 3; /* irrelevant when greedy */
    cv_sampler *s = make(&p, n);
    int32_t *rank = rank_tokens(l, n);
    for (int i = 0; i < 5; i++) assert_int_equal(cv_sampler_sample(s, l, NULL), rank[0]);
    l[17] = l[rank[0]];
    l[4000] = l[rank[0]];
    assert_int_equal(cv_sampler_sample(s, l, NULL), rank[0] < 17 ? rank[0] : 17);
    int32_t id;
    float prob;
    assert_int_equal(cv_sampler_candidates(s, l, &id, &prob, 1), 1);
    assert_true(prob == 1.0f);
    free(rank);
    free(l);
    cv_sampler_free(s);
}

static void test_top_k_never_leaves_the_k_best(void **state) {
    (void)state;
    const int32_t n = 3000, k = 7;
    float *l = random_logits(n);
    int32_t *rank = rank_tokens(l, n);
    cv_sampler_params p = plain(3.0f); /* hot, so that all k get drawn */
    p.top_k = k;
    p.seed = g_seed;
    cv_sampler *s = make(&p, n);
    int hits[7] = {0};
    for (int i = 0; i < 20000; i++) {
        int32_t t = cv_sampler_sample(s, l, NULL);
        int j = 0;
        while (j < k && rank[j] != t) j++;
        if (j == k) fail_msg("token %d is not among the %d best", t, k);
        hits[j]++;
    }
    for (int j = 0; j < k; j++) assert_true(hits[j] > 0);
    int32_t ids[8];
    float probs[8];
    assert_int_equal(cv_sampler_candidates(s, l, ids, probs, 8), k);
    assert_int_equal(ids[0], rank[0]);
    for (int j = 0; j < k; j++) {
        int found = 0;
        for (int i = 0; i < k; i++) found += ids[i] == rank[j];
        assert_int_equal(found, 1);
    }
    free(rank);
    free(l);
    cv_sampler_free(s);
}

/* The nucleus is the shortest best-first prefix whose mass reaches top_p, with
 * the mass computed over the top-k survivors. */
static void check_top_p_minimal(const float *l, int32_t n, int32_t top_k, float top_p) {
    cv_sampler_params p = plain(1.0f);
    p.top_k = top_k;
    p.top_p = top_p;
    cv_sampler *s = make(&p, n);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    float *probs = malloc((size_t)n * sizeof *probs);
    assert_true(ids && probs);
    int32_t got = cv_sampler_candidates(s, l, ids, probs, n);
    int32_t *rank = rank_tokens(l, n);
    int32_t pool = top_k > 0 && top_k < n ? top_k : n;
    double z = 0.0;
    for (int32_t i = 0; i < pool; i++) z += exp((double)l[rank[i]] - l[rank[0]]);
    /* The set must be exactly the best `got` tokens. */
    char *in = calloc((size_t)n, 1);
    assert_non_null(in);
    for (int32_t i = 0; i < got; i++) in[ids[i]] = 1;
    double cum = 0.0, before_last = 0.0;
    for (int32_t i = 0; i < got; i++) {
        if (!in[rank[i]]) fail_msg("rank %d (token %d) missing from a nucleus of %d", i, rank[i], got);
        before_last = cum;
        cum += exp((double)l[rank[i]] - l[rank[0]]) / z;
    }
    free(in);
    /* Weights are floats in the sampler: allow their rounding at the boundary. */
    if (cum < top_p - 1e-6) fail_msg("nucleus of %d holds %.12f < top_p %g", got, cum, top_p);
    if (got > 1 && before_last >= top_p + 1e-6)
        fail_msg("nucleus of %d is not minimal: %d tokens already hold %.12f", got, got - 1, before_last);
    double psum = 0.0;
    for (int32_t i = 0; i < got; i++) psum += probs[i];
    assert_true(fabs(psum - 1.0) < 1e-4);
    free(rank);
    free(ids);
    free(probs);
    cv_sampler_free(s);
}

static void test_top_p_set_is_minimal(void **state) {
    (void)state;
    const int32_t n = 4096;
    float *l = random_logits(n);
    check_top_p_minimal(l, n, 0, 0.9f);
    check_top_p_minimal(l, n, 0, 0.3f);
    check_top_p_minimal(l, n, 50, 0.8f);
    for (int32_t i = 0; i < n; i++) l[i] *= 0.01f; /* nearly flat: a big nucleus */
    check_top_p_minimal(l, n, 0, 0.95f);
    free(l);
}

static void test_min_p_threshold(void **state) {
    (void)state;
    const int32_t n = 2000;
    float *l = random_logits(n);
    cv_sampler_params p = plain(0.7f);
    p.min_p = 0.05f;
    cv_sampler *s = make(&p, n);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    float *probs = malloc((size_t)n * sizeof *probs);
    char *in = calloc((size_t)n, 1);
    assert_true(ids && probs && in);
    int32_t got = cv_sampler_candidates(s, l, ids, probs, n);
    for (int32_t i = 0; i < got; i++) in[ids[i]] = 1;
    float max = l[0];
    for (int32_t i = 1; i < n; i++) max = fmaxf(max, l[i]);
    const double thr = max + log(0.05);
    for (int32_t i = 0; i < n; i++) {
        if (fabs(l[i] - thr) < 1e-4) continue; /* too close to call in float */
        if ((l[i] > thr) != (in[i] == 1))
            fail_msg("token %d (logit %g, threshold %g) %s", i, l[i], thr,
                     in[i] ? "kept" : "dropped");
    }
    free(in);
    free(ids);
    free(probs);
    free(l);
    cv_sampler_free(s);
}

/* 400k draws from a known distribution: each count must lie within 6 standard
 * deviations of its expectation (a false alarm about once in 10^8 runs) and the
 * chi-square statistic (3 degrees of freedom) below 50 (p < 1e-10). */
static void check_distribution(float temperature, const double *expect) {
    const int32_t n = 4;
    const float logits[4] = {logf(0.5f), logf(0.25f), logf(0.15f), logf(0.1f)};
    cv_sampler_params p = plain(temperature);
    p.seed = g_seed;
    cv_sampler *s = make(&p, n);
    const int draws = 400000;
    long count[4] = {0};
    for (int i = 0; i < draws; i++) count[cv_sampler_sample(s, logits, NULL)]++;
    double chi2 = 0.0;
    for (int t = 0; t < n; t++) {
        double mean = draws * expect[t], sd = sqrt(draws * expect[t] * (1 - expect[t]));
        if (fabs(count[t] - mean) > 6 * sd)
            fail_msg("T=%g token %d drawn %ld times, expected %.0f +- %.0f", temperature, t,
                     count[t], mean, 6 * sd);
        chi2 += (count[t] - mean) * (count[t] - mean) / mean;
    }
    if (chi2 > 50.0) fail_msg("T=%g chi-square %.1f", temperature, chi2);
    cv_sampler_free(s);
}

static void test_draws_follow_the_tempered_distribution(void **state) {
    (void)state;
    const double t1[4] = {0.5, 0.25, 0.15, 0.1};
    check_distribution(1.0f, t1);
    /* T = 2: p^(1/2), renormalised. */
    double t2[4], z = 0.0;
    for (int i = 0; i < 4; i++) z += t2[i] = sqrt(t1[i]);
    for (int i = 0; i < 4; i++) t2[i] /= z;
    check_distribution(2.0f, t2);
}

static void draw_sequence(uint64_t seed, const float *l, int32_t n, int32_t *out, int count) {
    cv_sampler_params p = plain(1.0f);
    p.seed = seed;
    cv_sampler *s = make(&p, n);
    for (int i = 0; i < count; i++) out[i] = cv_sampler_sample(s, l + (size_t)(i % 3) * n, NULL);
    cv_sampler_free(s);
}

static void test_seed_determinism(void **state) {
    (void)state;
    const int32_t n = 1000;
    float *l = random_logits(3 * n);
    for (int32_t i = 0; i < 3 * n; i++) l[i] *= 0.2f; /* flat enough that draws vary */
    int32_t a[64], b[64], c[64];
    draw_sequence(g_seed, l, n, a, 64);
    draw_sequence(g_seed, l, n, b, 64);
    draw_sequence(g_seed + 1, l, n, c, 64);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    free(l);
}

typedef struct thread_job {
    const float *logits;
    int32_t n;
    uint64_t seed;
    int32_t out[256];
} thread_job;

static void *thread_draw(void *arg) {
    thread_job *j = arg;
    draw_sequence(j->seed, j->logits, j->n, j->out, 256);
    return NULL;
}

/* Samplers share nothing: drawing on two threads at once gives each the tokens it
 * gives alone. */
static void test_samplers_on_threads_are_independent(void **state) {
    (void)state;
    const int32_t n = 2000;
    float *l = random_logits(3 * n);
    thread_job jobs[2] = {{.logits = l, .n = n, .seed = g_seed},
                          {.logits = l, .n = n, .seed = g_seed ^ 0x5555}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, thread_draw, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        int32_t alone[256];
        draw_sequence(jobs[i].seed, l, n, alone, 256);
        assert_memory_equal(alone, jobs[i].out, sizeof alone);
    }
    free(l);
}

/* Pins the generator and the order in which the draw walks the candidates, so that
 * a change of either, or a platform that draws differently, is caught: same seed +
 * same logits = these tokens. */
static void test_pinned_tokens_for_a_fixed_seed(void **state) {
    (void)state;
    const int32_t n = 64;
    float l[64];
    for (int32_t i = 0; i < n; i++) l[i] = (float)((i * 37) % 64) / 16.0f;
    cv_sampler_params p = plain(1.0f);
    p.seed = 20261128;
    p.top_k = 16;
    p.top_p = 0.9f;
    cv_sampler *s = make(&p, n);
    int32_t got[12];
    for (int i = 0; i < 12; i++) got[i] = cv_sampler_sample(s, l, NULL);
    const int32_t want[12] = {55, 5, 38, 17, 12, 62, 12, 17, 55, 10, 57, 62};
    assert_memory_equal(got, want, sizeof want);
    cv_sampler_reset(s); /* reset replays the same stream */
    for (int i = 0; i < 12; i++) assert_int_equal(cv_sampler_sample(s, l, NULL), want[i]);
    cv_sampler_free(s);
}

static void test_repetition_penalty_llama_cpp_semantics(void **state) {
    (void)state;
    const float l[4] = {2.0f, -1.0f, 0.5f, 3.0f};
    cv_sampler_params p = plain(1.0f);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    cv_sampler *s = make(&p, 4);
    cv_error e = {0};
    /* Token 3 falls out of the 3-token window; token 1 counts once. */
    const int32_t hist[4] = {3, 0, 1, 1};
    assert_int_equal(cv_sampler_accept(s, hist, 4, &e), CV_OK);
    int32_t ids[4];
    float probs[4];
    assert_int_equal(cv_sampler_candidates(s, l, ids, probs, 4), 4);
    const float pen[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    double z = 0.0;
    for (int i = 0; i < 4; i++) z += exp(pen[i]);
    for (int i = 0; i < 4; i++) assert_float_equal(probs[i], exp(pen[ids[i]]) / z, 1e-6);
    assert_int_equal(ids[0], 3);
    const int32_t bad = 4;
    assert_int_equal(cv_sampler_accept(s, &bad, 1, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "id 4, outside [0, 4)"));
    cv_sampler_free(s);

    /* Greedy sees the penalty too, and its own choices enter the history. */
    const float two[2] = {2.0f, 1.5f};
    p = plain(0.0f);
    p.repeat_penalty = 2.0f;
    s = make(&p, 2);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 0);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 1);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 0); /* both penalised: 1.0 vs 0.75 */
    cv_sampler_free(s);
}

/* OpenAI's penalties: presence once per distinct token of the window, frequency per
 * occurrence, both subtracted after the repetition penalty's division. */
static void test_presence_and_frequency_penalties(void **state) {
    (void)state;
    const float l[4] = {2.0f, -1.0f, 0.5f, 3.0f};
    cv_sampler_params p = plain(1.0f);
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.25f;
    p.frequency_penalty = 0.5f;
    p.repeat_last_n = 3;
    cv_sampler *s = make(&p, 4);
    cv_error e = {0};
    const int32_t hist[4] = {3, 0, 1, 1}; /* token 3 is out of the window */
    assert_int_equal(cv_sampler_accept(s, hist, 4, &e), CV_OK);
    int32_t ids[4];
    float probs[4];
    assert_int_equal(cv_sampler_candidates(s, l, ids, probs, 4), 4);
    const float pen[4] = {2.0f / 2 - 0.25f - 0.5f, -1.0f * 2 - 0.25f - 2 * 0.5f, 0.5f, 3.0f};
    double z = 0.0;
    for (int i = 0; i < 4; i++) z += exp(pen[i]);
    for (int i = 0; i < 4; i++) assert_float_equal(probs[i], exp(pen[ids[i]]) / z, 1e-6);
    cv_sampler_free(s);

    /* Greedy: token 0 (1.0) loses to token 1 (0.9) after two occurrences at 0.06 each,
     * not after one; presence alone moves it once. */
    const float two[2] = {1.0f, 0.9f};
    p = plain(0.0f);
    p.frequency_penalty = 0.06f;
    s = make(&p, 2);
    const int32_t zero = 0;
    assert_int_equal(cv_sampler_accept(s, &zero, 1, &e), CV_OK);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 0);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 1);
    cv_sampler_free(s);
    p = plain(0.0f);
    p.presence_penalty = 0.2f;
    s = make(&p, 2);
    assert_int_equal(cv_sampler_accept(s, &zero, 1, &e), CV_OK);
    assert_int_equal(cv_sampler_sample(s, two, NULL), 1);
    cv_sampler_free(s);

    p = plain(0.0f);
    p.presence_penalty = 2.5f;
    assert_int_equal(cv_sampler_params_validate(&p, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "presence_penalty 2.5 is outside [-2, 2]"));
    p.presence_penalty = 0;
    p.frequency_penalty = NAN;
    assert_int_equal(cv_sampler_params_validate(&p, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "frequency_penalty"));
}

static void test_logprobs_are_the_models_log_softmax(void **state) {
    (void)state;
    const int32_t n = 3000;
    float *l = random_logits(n);
    cv_sampler_params p = plain(0.9f);
    p.top_k = 20;
    p.top_logprobs = 5;
    p.seed = g_seed;
    cv_sampler *s = make(&p, n);
    int32_t *rank = rank_tokens(l, n);
    double max = l[rank[0]], sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp(l[i] - max);
    const double lse = max + log(sum);
    for (int k = 0; k < 10; k++) {
        cv_sample out;
        int32_t t = cv_sampler_sample(s, l, &out);
        assert_int_equal(out.token, t);
        assert_float_equal(out.logprob, l[t] - lse, 1e-4);
        assert_int_equal(out.n_top, 5);
        for (int j = 0; j < 5; j++) {
            assert_int_equal(out.top[j].token, rank[j]);
            assert_float_equal(out.top[j].logprob, l[rank[j]] - lse, 1e-4);
        }
    }
    cv_sampler_free(s);
    p.logprobs = false;
    p.top_logprobs = 0;
    s = make(&p, n);
    cv_sample out;
    cv_sampler_sample(s, l, &out);
    assert_int_equal(out.n_top, 0);
    assert_true(out.logprob == 0.0f);
    free(rank);
    free(l);
    cv_sampler_free(s);
}

static void test_non_finite_logits(void **state) {
    (void)state;
    float l[5] = {NAN, 1.0f, NAN, 0.5f, -INFINITY};
    cv_sampler_params p = plain(1.0f);
    p.seed = g_seed;
    cv_sampler *s = make(&p, 5);
    for (int i = 0; i < 200; i++) {
        int32_t t = cv_sampler_sample(s, l, NULL);
        assert_true(t == 1 || t == 3);
    }
    l[2] = INFINITY;
    assert_int_equal(cv_sampler_sample(s, l, NULL), 2);
    const float none[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(cv_sampler_sample(s, none, NULL), 0);
    cv_sampler_free(s);
}

/* A Gemma-sized vocabulary through the default pipeline and through pure
 * sampling: every draw stays inside the candidate set the parameters define. */
static void test_large_vocabulary(void **state) {
    (void)state;
    const int32_t n = 262144;
    float *l = random_logits(n);
    int32_t *rank = rank_tokens(l, n);
    char *top40 = calloc((size_t)n, 1);
    assert_non_null(top40);
    for (int i = 0; i < 40; i++) top40[rank[i]] = 1;
    cv_sampler_params p;
    cv_sampler_params_default(&p);
    p.seed = g_seed;
    cv_sampler *s = make(&p, n);
    for (int i = 0; i < 20; i++) assert_true(top40[cv_sampler_sample(s, l, NULL)]);
    cv_sampler_free(s);
    p = plain(1.0f);
    p.seed = g_seed;
    s = make(&p, n);
    for (int i = 0; i < 5; i++) {
        int32_t t = cv_sampler_sample(s, l, NULL);
        assert_true(t >= 0 && t < n);
    }
    cv_sampler_free(s);
    free(top40);
    free(rank);
    free(l);
}

/* A mask leaves only its tokens: greedy takes the best allowed one, draws (with top-k,
 * top-p and min-p, which see only allowed tokens) never leave the mask, and an allowed
 * token's share of the draws follows its probability among the allowed ones. */
static void test_masked_sampling(void **state) {
    (void)state;
    const int32_t n = 300;
    float *l = random_logits(n);
    uint64_t allow[5] = {0};
    for (int32_t i = 0; i < n; i += 7) allow[i >> 6] |= 1ULL << (i & 63);
    int32_t best = -1;
    for (int32_t i = 0; i < n; i += 7)
        if (best < 0 || l[i] > l[best]) best = i;
    cv_sampler_params p = plain(0.0f);
    cv_sampler *s = make(&p, n);
    assert_int_equal(cv_sampler_sample_masked(s, l, allow, NULL), best);
    cv_sampler_free(s);
    p = plain(1.0f);
    p.top_k = 5;
    p.top_p = 0.9f;
    p.min_p = 0.01f;
    p.repeat_penalty = 1.1f;
    s = make(&p, n);
    for (int k = 0; k < 2000; k++) {
        int32_t t = cv_sampler_sample_masked(s, l, allow, NULL);
        assert_true(allow[t >> 6] >> (t & 63) & 1);
    }
    cv_sampler_free(s);
    /* Two allowed tokens with logits 0 and ln 3: draws 1:3. */
    for (int32_t i = 0; i < n; i++) l[i] = 5.0f;
    memset(allow, 0, sizeof allow);
    l[10] = 0.0f;
    l[250] = logf(3.0f);
    allow[0] = 1ULL << 10;
    allow[250 >> 6] = 1ULL << (250 & 63);
    p = plain(1.0f);
    s = make(&p, n);
    int hits = 0;
    for (int k = 0; k < 8000; k++) hits += cv_sampler_sample_masked(s, l, allow, NULL) == 250;
    assert_true(hits > 5700 && hits < 6300); /* 6000 expected; sd ~39 */
    cv_sampler_free(s);
    free(l);
}

/* ---- speculative verification (cv_sampler_verify) ---- */

#define SPEC_N 6
#define SPEC_DRAWS 200000
/* Chi-square above this with at most 5 degrees of freedom: p < 1e-6. */
#define SPEC_CHI2_LIMIT 35.9

/* Chi-square of counts against the distribution p over the tokens p gives mass; a
 * token without mass that was drawn fails at once. */
static double spec_chi2(const long *count, const double *p, const char *what) {
    double chi2 = 0.0;
    for (int t = 0; t < SPEC_N; t++) {
        if (p[t] == 0.0) {
            if (count[t]) fail_msg("%s: token %d has no mass but was drawn %ld times", what, t, count[t]);
            continue;
        }
        const double mean = SPEC_DRAWS * p[t];
        chi2 += (count[t] - mean) * (count[t] - mean) / mean;
    }
    return chi2;
}

/* The target: temperature 0.9 and top-k 5 over six tokens, so one token (5) has no mass. */
static const float spec_target[SPEC_N] = {1.2f, 0.4f, 0.9f, -0.3f, 0.1f, -2.0f};
/* The draft model's logits: another distribution over all six. */
static const float spec_draft[SPEC_N] = {0.1f, 1.0f, 0.2f, 0.5f, -1.0f, 0.8f};

static cv_sampler_params spec_params(uint64_t seed) {
    cv_sampler_params sp = plain(0.9f);
    sp.top_k = 5;
    sp.seed = seed;
    return sp;
}

/* The target distribution p, dense. */
static void spec_target_probs(double *p) {
    cv_sampler_params sp = spec_params(0);
    cv_sampler *s = make(&sp, SPEC_N);
    int32_t ids[SPEC_N];
    float probs[SPEC_N];
    int32_t n = cv_sampler_candidates(s, spec_target, ids, probs, SPEC_N);
    memset(p, 0, sizeof(double) * SPEC_N);
    for (int32_t i = 0; i < n; i++) p[ids[i]] = probs[i];
    cv_sampler_free(s);
}

/* A deliberately wrong rule, to show the test can fail: on rejection it draws from p
 * itself instead of max(0, p - q), which over-weights the tokens q favours. */
static int32_t wrong_verify(const double *p, const float *q, int32_t d, cv_test_rng *rng) {
    double u = (double)(cv_test_rng_next(rng) >> 11) * 0x1.0p-53;
    if (q[d] > 0 && u * q[d] < p[d]) return d;
    u = (double)(cv_test_rng_next(rng) >> 11) * 0x1.0p-53;
    double acc = 0.0;
    for (int32_t t = 0; t < SPEC_N; t++)
        if ((acc += p[t]) > u && p[t] > 0) return t;
    return 0;
}

/* 200k rounds with a fixed seed: the draft model proposes d ~ q (cv_sampler_draft_probs
 * on its logits, the same pipeline), the target verifies. The kept tokens must follow p
 * (chi-square), the drafts q, and the share kept sum(min(p, q)); the wrong rule above,
 * fed the same drafts, must fail the same chi-square. */
static void test_verify_keeps_the_target_distribution(void **state) {
    (void)state;
    double p[SPEC_N];
    spec_target_probs(p);
    cv_sampler_params sp = spec_params(1234);
    cv_sampler *s = make(&sp, SPEC_N);
    cv_test_rng rng = cv_test_rng_new(99);
    float q[SPEC_N];
    double qd[SPEC_N] = {0}, overlap = 0.0;
    long kept[SPEC_N] = {0}, drafted[SPEC_N] = {0}, wrong[SPEC_N] = {0}, accepted = 0;
    for (int i = 0; i < SPEC_DRAWS; i++) {
        int32_t d = cv_sampler_draft_probs(s, spec_draft, q);
        int32_t t = cv_sampler_verify(s, spec_target, NULL, d, q, NULL);
        drafted[d]++;
        kept[t]++;
        accepted += t == d;
        wrong[wrong_verify(p, q, d, &rng)]++;
    }
    for (int t = 0; t < SPEC_N; t++) {
        qd[t] = q[t];
        overlap += p[t] < qd[t] ? p[t] : qd[t];
    }
    double c_kept = spec_chi2(kept, p, "kept"), c_draft = spec_chi2(drafted, qd, "drafted");
    double c_wrong = spec_chi2(wrong, p, "wrong rule");
    double rate = (double)accepted / SPEC_DRAWS, sd = sqrt(overlap * (1 - overlap) / SPEC_DRAWS);
    printf("verify: chi-square kept %.1f, drafted %.1f, wrong rule %.1f (limit %.1f); kept %.4f of drafts, "
           "sum min(p, q) %.4f\n", c_kept, c_draft, c_wrong, SPEC_CHI2_LIMIT, rate, overlap);
    assert_true(c_kept < SPEC_CHI2_LIMIT);
    assert_true(c_draft < SPEC_CHI2_LIMIT);
    assert_true(c_wrong > SPEC_CHI2_LIMIT);
    assert_true(fabs(rate - overlap) < 6 * sd);
    cv_sampler_free(s);
}

/* Prompt lookup's point mass (q NULL), on a token with mass and on one top-k removed:
 * the kept tokens follow p, the draft is kept with probability p(d), and the tokens are
 * those of cv_sampler_sample on the same seed, draw for draw. */
static void test_verify_point_mass_is_the_ordinary_draw(void **state) {
    (void)state;
    double p[SPEC_N];
    spec_target_probs(p);
    const int32_t drafts[2] = {2, 5};
    for (int k = 0; k < 2; k++) {
        cv_sampler_params sp = spec_params(77);
        cv_sampler *s = make(&sp, SPEC_N), *plain_s = make(&sp, SPEC_N);
        long kept[SPEC_N] = {0}, accepted = 0;
        for (int i = 0; i < SPEC_DRAWS; i++) {
            int32_t t = cv_sampler_verify(s, spec_target, NULL, drafts[k], NULL, NULL);
            assert_int_equal(t, cv_sampler_sample(plain_s, spec_target, NULL));
            kept[t]++;
            accepted += t == drafts[k];
        }
        double c = spec_chi2(kept, p, "point mass"), pd = p[drafts[k]];
        double rate = (double)accepted / SPEC_DRAWS, sd = sqrt(pd * (1 - pd) / SPEC_DRAWS);
        printf("point mass on %d: chi-square %.1f, kept %.4f, p(d) %.4f\n", drafts[k], c, rate, pd);
        assert_true(c < SPEC_CHI2_LIMIT);
        assert_true(fabs(rate - pd) <= 6 * sd);
        cv_sampler_free(s);
        cv_sampler_free(plain_s);
    }
}

/* Greedy: the argmax whatever the draft, the draft kept only when it is the argmax. */
static void test_verify_greedy(void **state) {
    (void)state;
    cv_sampler_params sp = plain(0.0f);
    cv_sampler *s = make(&sp, SPEC_N);
    float q[SPEC_N];
    for (int32_t d = 0; d < SPEC_N; d++) {
        assert_int_equal(cv_sampler_verify(s, spec_target, NULL, d, NULL, NULL), 0);
        assert_int_equal(cv_sampler_draft_probs(s, spec_draft, q), 1);
        assert_true(q[1] == 1.0f && q[0] == 0.0f);
        assert_int_equal(cv_sampler_verify(s, spec_target, NULL, d, q, NULL), 0);
    }
    cv_sampler_free(s);
}

int main(void) {
    g_seed = cv_test_seed("test_sampler");
    g_rng = cv_test_rng_new(g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_off),
        cmocka_unit_test(test_validation_names_field_and_value),
        cmocka_unit_test(test_greedy_is_argmax_lowest_id_on_ties),
        cmocka_unit_test(test_top_k_never_leaves_the_k_best),
        cmocka_unit_test(test_top_p_set_is_minimal),
        cmocka_unit_test(test_min_p_threshold),
        cmocka_unit_test(test_draws_follow_the_tempered_distribution),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_samplers_on_threads_are_independent),
        cmocka_unit_test(test_pinned_tokens_for_a_fixed_seed),
        cmocka_unit_test(test_repetition_penalty_llama_cpp_semantics),
        cmocka_unit_test(test_presence_and_frequency_penalties),
        cmocka_unit_test(test_logprobs_are_the_models_log_softmax),
        cmocka_unit_test(test_non_finite_logits),
        cmocka_unit_test(test_large_vocabulary),
        cmocka_unit_test(test_masked_sampling),
        cmocka_unit_test(test_verify_keeps_the_target_distribution),
        cmocka_unit_test(test_verify_point_mass_is_the_ordinary_draw),
        cmocka_unit_test(test_verify_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
