#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A candidate token. The order "better" (logit desc, then id asc) is total, so every
 * selection and sort below has exactly one correct answer: that is what makes the
 * draws reproducible, whatever the algorithm's internal order of comparisons. */
typedef struct cand {
    float logit;
    float w;    /* exp(logit - best logit), filled for top-p and the draw */
    int32_t id;
} cand;

struct cv_sampler {
    cv_sampler_params p;
    int32_t n_vocab;
    cand *cand;       /* n_vocab: the working copy of the logits */
    uint8_t *seen;    /* n_vocab bits: tokens penalised in the current step */
    int32_t *hist;    /* ring buffer of the last repeat_last_n tokens */
    int32_t hist_cap, hist_len, hist_pos;
    uint64_t rng[4];  /* xoshiro256** state */
};

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static void rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);
}

/* ---- parameters ---- */

void cv_sampler_params_off(cv_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = CV_SAMPLER_DEFAULT_REPEAT_LAST_N;
}

void cv_sampler_params_default(cv_sampler_params *p) {
    cv_sampler_params_off(p);
    p->temperature = (float)CV_SAMPLER_DEFAULT_TEMPERATURE;
    p->top_k = CV_SAMPLER_DEFAULT_TOP_K;
    p->top_p = (float)CV_SAMPLER_DEFAULT_TOP_P;
    p->min_p = (float)CV_SAMPLER_DEFAULT_MIN_P;
}

cv_status cv_sampler_params_validate(const cv_sampler_params *p, cv_error *err) {
    /* Names as the API (SamplingParams in inference.proto) spells them. */
    static const struct {
        const char *name;
        size_t off;
    } floats[] = {
        {"temperature", offsetof(cv_sampler_params, temperature)},
        {"top_p", offsetof(cv_sampler_params, top_p)},
        {"min_p", offsetof(cv_sampler_params, min_p)},
        {"repetition_penalty", offsetof(cv_sampler_params, repeat_penalty)},
        {"presence_penalty", offsetof(cv_sampler_params, presence_penalty)},
        {"frequency_penalty", offsetof(cv_sampler_params, frequency_penalty)},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        float v = *(const float *)(const void *)((const char *)p + floats[i].off);
        if (!isfinite(v))
            return cv_errorf(err, CV_EINVAL, "%s %g is not a number: NaN and infinities are refused",
                             floats[i].name, (double)v);
    }
    if (!(p->temperature >= 0.0f))
        return cv_errorf(err, CV_EINVAL,
                         "temperature %g is invalid: use 0 for greedy or a finite positive value",
                         (double)p->temperature);
    if (p->top_k < 0)
        return cv_errorf(err, CV_EINVAL, "top_k %d is negative: use 0 to disable it",
                         (int)p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return cv_errorf(err, CV_EINVAL, "top_p %g is outside (0, 1]: use 1 to disable it",
                         (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return cv_errorf(err, CV_EINVAL, "min_p %g is outside [0, 1]: use 0 to disable it",
                         (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f))
        return cv_errorf(err, CV_EINVAL,
                         "repetition_penalty %g must be a finite value > 0: use 1 to disable it",
                         (double)p->repeat_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return cv_errorf(err, CV_EINVAL, "presence_penalty %g is outside [-2, 2]: use 0 to disable it",
                         (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return cv_errorf(err, CV_EINVAL, "frequency_penalty %g is outside [-2, 2]: use 0 to disable it",
                         (double)p->frequency_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > CV_SAMPLER_MAX_REPEAT_LAST_N)
        return cv_errorf(err, CV_EINVAL, "repetition_window %d is outside [0, %d]",
                         (int)p->repeat_last_n, CV_SAMPLER_MAX_REPEAT_LAST_N);
    if (p->top_logprobs < 0 || p->top_logprobs > CV_SAMPLER_MAX_TOP_LOGPROBS)
        return cv_errorf(err, CV_EINVAL, "logprobs %d is outside [0, %d]",
                         (int)p->top_logprobs, CV_SAMPLER_MAX_TOP_LOGPROBS);
    return CV_OK;
}

/* ---- life cycle ---- */

cv_status cv_sampler_new(const cv_sampler_params *p, int32_t n_vocab, cv_sampler **out,
                         cv_error *err) {
    *out = NULL;
    cv_status st = cv_sampler_params_validate(p, err);
    if (st != CV_OK) return st;
    if (n_vocab <= 0)
        return cv_errorf(err, CV_EINVAL, "sampler vocabulary size %d must be positive",
                         (int)n_vocab);
    cv_sampler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist_cap = p->repeat_last_n > 0 ? p->repeat_last_n : 1;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->seen = calloc(((size_t)n_vocab + 7) / 8, 1);
    s->hist = malloc((size_t)s->hist_cap * sizeof *s->hist);
    if (!s->cand || !s->seen || !s->hist) goto oom;
    cv_sampler_reset(s);
    *out = s;
    return CV_OK;
oom:
    cv_sampler_free(s);
    return cv_errorf(err, CV_ENOMEM, "sampler scratch for a vocabulary of %d tokens",
                     (int)n_vocab);
}

void cv_sampler_free(cv_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->seen);
    free(s->hist);
    free(s);
}

void cv_sampler_reset(cv_sampler *s) {
    s->hist_len = 0;
    s->hist_pos = 0;
    rng_seed(s->rng, s->p.seed);
}

static void hist_push(cv_sampler *s, int32_t token) {
    if (s->p.repeat_last_n == 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->hist_cap;
    if (s->hist_len < s->hist_cap) s->hist_len++;
}

cv_status cv_sampler_accept(cv_sampler *s, const int32_t *tokens, size_t n, cv_error *err) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->n_vocab)
            return cv_errorf(err, CV_ERANGE, "token %zu of %zu is id %d, outside [0, %d)", i, n,
                             (int)tokens[i], (int)s->n_vocab);
    for (size_t i = 0; i < n; i++) hist_push(s, tokens[i]);
    return CV_OK;
}

/* ---- selection ---- */

static inline int better(cand a, cand b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static inline void swap_cand(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Quickselect step on c[lo..hi) (hi - lo >= 2): a median-of-three pivot ends at the
 * returned index, the better candidates before it, the worse after it. */
static size_t partition(cand *c, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (better(c[mid], c[lo])) swap_cand(&c[mid], &c[lo]);
    if (better(c[hi - 1], c[lo])) swap_cand(&c[hi - 1], &c[lo]);
    if (better(c[hi - 1], c[mid])) swap_cand(&c[hi - 1], &c[mid]);
    swap_cand(&c[mid], &c[hi - 1]);
    const cand pivot = c[hi - 1];
    size_t store = lo;
    for (size_t i = lo; i + 1 < hi; i++)
        if (better(c[i], pivot)) swap_cand(&c[i], &c[store++]);
    swap_cand(&c[store], &c[hi - 1]);
    return store;
}

/* Rearranges c[0..n) so that c[0..k) are the k best, in no particular order:
 * O(n) on average. */
static void select_best(cand *c, size_t n, size_t k) {
    if (k == 0 || k >= n) return;
    size_t lo = 0, hi = n;
    while (lo + 1 < hi) {
        size_t store = partition(c, lo, hi);
        if (store == k || store + 1 == k) return;
        if (k < store) hi = store;
        else lo = store + 1;
    }
}

/* Moves the best of c[0..n) to c[0]: one linear pass. */
static void best_first(cand *c, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (better(c[i], c[b])) b = i;
    swap_cand(&c[0], &c[b]);
}

/* Moves the shortest best-first prefix whose weight reaches target to c[0..return),
 * in no particular order: quickselect that steers by mass instead of by count, so
 * a flat distribution with a huge nucleus costs O(n), not a sort. Needs the total
 * weight of c[0..n) to reach target. */
static size_t select_mass(cand *c, size_t n, double target) {
    size_t lo = 0, hi = n;
    double acc = 0.0; /* weight of c[0..lo), each better than all of c[lo..n) */
    /* Invariant: acc < target and the answer lies in [lo + 1, hi]. */
    for (;;) {
        if (hi - lo == 1) return hi;
        size_t store = partition(c, lo, hi);
        double left = 0.0;
        for (size_t i = lo; i < store; i++) left += c[i].w;
        const float pivot_w = c[store].w;
        if (acc + left >= target) {
            hi = store;
        } else if (acc + left + pivot_w >= target) {
            return store + 1;
        } else {
            acc += left + pivot_w;
            lo = store + 1;
        }
    }
}

/* Non-finite logits would poison the softmax: NaN counts as impossible, +inf as
 * the largest float. */
static inline float sane(float x) {
    if (isnan(x)) return -INFINITY;
    return x > FLT_MAX ? FLT_MAX : x;
}

/* Whether some penalty would change a logit now. */
static int has_penalty(const cv_sampler *s) {
    return s->hist_len > 0 &&
           (s->p.repeat_penalty != 1.0f || s->p.presence_penalty != 0.0f || s->p.frequency_penalty != 0.0f);
}

static inline int allowed(const uint64_t *allow, int32_t i) {
    return !allow || (int)(allow[i >> 6] >> (i & 63) & 1);
}

static void load_logits(cv_sampler *s, const float *logits, const uint64_t *allow) {
    for (int32_t i = 0; i < s->n_vocab; i++) {
        s->cand[i].logit = allowed(allow, i) ? sane(logits[i]) : -INFINITY;
        s->cand[i].id = i;
    }
    if (!has_penalty(s)) return;
    /* Each distinct token of the window gets the repetition and presence penalties
     * once (llama.cpp semantics), the frequency penalty once per occurrence. */
    const float pen = s->p.repeat_penalty, pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
    for (int32_t i = 0; i < s->hist_len; i++) {
        int32_t t = s->hist[i];
        if (s->seen[t >> 3] & (1u << (t & 7))) continue;
        s->seen[t >> 3] |= (uint8_t)(1u << (t & 7));
        float *l = &s->cand[t].logit;
        *l = (*l > 0.0f ? *l / pen : *l * pen) - pres;
    }
    for (int32_t i = 0; i < s->hist_len; i++) {
        s->cand[s->hist[i]].logit -= freq;
        s->seen[s->hist[i] >> 3] = 0;
    }
}

/* Runs penalty, top-k, top-p and min-p: afterwards s->cand[0..return) is the
 * candidate set and s->cand[0] is its best token. */
static size_t truncate_candidates(cv_sampler *s, const float *logits, const uint64_t *allow) {
    load_logits(s, logits, allow);
    cand *c = s->cand;
    size_t n = (size_t)s->n_vocab;
    if (s->p.temperature == 0.0f) {
        best_first(c, n);
        return 1;
    }
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) {
        n = (size_t)s->p.top_k;
        select_best(c, (size_t)s->n_vocab, n);
    }
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    if (n == 1 || max == -INFINITY) {
        best_first(c, n);
        return 1;
    }
    if (s->p.top_p < 1.0f) {
        double z = 0.0;
        for (size_t i = 0; i < n; i++) z += c[i].w = expf(c[i].logit - max);
        const double target = (double)s->p.top_p * z;
        if (target < z) n = select_mass(c, n, target);
    }
    if (s->p.min_p > 0.0f) {
        const float thr = max + logf(s->p.min_p);
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
            if (c[i].logit >= thr) swap_cand(&c[i], &c[j++]);
        n = j;
    }
    best_first(c, n); /* temper() scales by the best logit */
    return n;
}

/* Unnormalised probabilities after temperature, into c[].w; returns their sum. */
static double temper(cand *c, size_t n, float temperature) {
    const float max = c[0].logit, inv_t = 1.0f / temperature;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += c[i].w = expf((c[i].logit - max) * inv_t);
    return total;
}

int32_t cv_sampler_candidates(cv_sampler *s, const float *logits, int32_t *ids, float *probs,
                              int32_t cap) {
    size_t n = truncate_candidates(s, logits, NULL);
    cand *c = s->cand;
    double total = n == 1 ? (c[0].w = 1.0f) : temper(c, n, s->p.temperature);
    for (size_t i = 0; i < n && (int64_t)i < cap; i++) {
        ids[i] = c[i].id;
        probs[i] = (float)(c[i].w / total);
    }
    return (int32_t)n;
}

/* ---- logprobs ---- */

static void fill_logprobs(const cv_sampler *s, const float *logits, cv_sample *out) {
    const int32_t n = s->n_vocab, want = s->p.top_logprobs;
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (sane(logits[i]) > max) max = sane(logits[i]);
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)sane(logits[i]) - max);
    const double lse = max + log(sum);
    out->logprob = (float)(sane(logits[out->token]) - lse);
    /* Top alternatives by insertion into a short best-first list. */
    cand top[CV_SAMPLER_MAX_TOP_LOGPROBS];
    int32_t k = 0;
    for (int32_t i = 0; i < n && want > 0; i++) {
        cand x = {.logit = sane(logits[i]), .id = i};
        if (k == want && !better(x, top[k - 1])) continue;
        int32_t j = k < want ? k++ : k - 1;
        while (j > 0 && better(x, top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = x;
    }
    out->n_top = k;
    for (int32_t i = 0; i < k; i++) {
        out->top[i].token = top[i].id;
        out->top[i].logprob = (float)(top[i].logit - lse);
    }
}

/* Greedy without a penalty to apply needs no working copy: one read-only pass. */
static int32_t plain_argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    float bv = sane(logits[0]);
    for (int32_t i = 1; i < n; i++) {
        float v = sane(logits[i]);
        if (v > bv) bv = v, best = i;
    }
    return best;
}

/* The same over the allowed tokens only. */
static int32_t masked_argmax(const float *logits, int32_t n, const uint64_t *allow) {
    int32_t best = -1;
    float bv = -INFINITY;
    for (int32_t w = 0; w * 64 < n; w++) {
        for (uint64_t bits = allow[w]; bits; bits &= bits - 1) {
            int32_t i = w * 64 + __builtin_ctzll(bits);
            if (i >= n) break;
            float v = sane(logits[i]);
            if (best < 0 || v > bv) bv = v, best = i;
        }
    }
    return best < 0 ? 0 : best;
}

/* The end of every draw: the token joins the history, out gets it and its logprobs. */
static int32_t chosen(cv_sampler *s, const float *logits, int32_t token, cv_sample *out) {
    hist_push(s, token);
    if (out) {
        memset(out, 0, sizeof *out);
        out->token = token;
        if (s->p.logprobs || s->p.top_logprobs > 0) fill_logprobs(s, logits, out);
    }
    return token;
}

int32_t cv_sampler_sample(cv_sampler *s, const float *logits, cv_sample *out) {
    return cv_sampler_sample_masked(s, logits, NULL, out);
}

int32_t cv_sampler_sample_masked(cv_sampler *s, const float *logits, const uint64_t *allow, cv_sample *out) {
    int32_t token;
    if (s->p.temperature == 0.0f && !has_penalty(s)) {
        token = allow ? masked_argmax(logits, s->n_vocab, allow) : plain_argmax(logits, s->n_vocab);
        goto chosen;
    }
    size_t n = truncate_candidates(s, logits, allow);
    cand *c = s->cand;
    token = c[0].id;
    if (n > 1) {
        double total = temper(c, n, s->p.temperature);
        double u = rng_uniform(s->rng) * total, acc = 0.0;
        for (size_t i = 0; i < n; i++) {
            if (c[i].w <= 0.0f) continue;
            token = c[i].id;
            acc += c[i].w;
            if (acc > u) break;
        }
    }
chosen:
    return chosen(s, logits, token, out);
}

int32_t cv_sampler_verify(cv_sampler *s, const float *logits, const uint64_t *allow, int32_t draft,
                          const float *q_probs, cv_sample *out) {
    /* A point mass, or greedy: the ordinary draw (see sampler.h). */
    if (!q_probs || (s->p.temperature == 0.0f && !has_penalty(s)))
        return cv_sampler_sample_masked(s, logits, allow, out);
    size_t n = truncate_candidates(s, logits, allow);
    cand *c = s->cand;
    int32_t token = c[0].id;
    if (n > 1) {
        const double total = temper(c, n, s->p.temperature);
        double pd = 0.0;
        for (size_t i = 0; i < n; i++)
            if (c[i].id == draft) pd = c[i].w / total;
        const double qd = draft >= 0 && draft < s->n_vocab ? q_probs[draft] : 0.0;
        if (qd > 0.0 && rng_uniform(s->rng) * qd < pd) return chosen(s, logits, draft, out);
        /* Rejected: one draw from max(0, p - q), normalised. Tokens outside the
         * candidates have p = 0 and so no residual. */
        double mass = 0.0;
        for (size_t i = 0; i < n; i++) {
            const double r = c[i].w / total - q_probs[c[i].id];
            if (r > 0.0) mass += r;
        }
        const int use_p = !(mass > 0.0); /* p == q up to rounding: p itself */
        double u = rng_uniform(s->rng) * (use_p ? 1.0 : mass), acc = 0.0;
        for (size_t i = 0; i < n; i++) {
            const double r = c[i].w / total - (use_p ? 0.0 : q_probs[c[i].id]);
            if (r <= 0.0) continue;
            token = c[i].id;
            acc += r;
            if (acc > u) break;
        }
    }
    return chosen(s, logits, token, out);
}

int32_t cv_sampler_draft_probs(cv_sampler *s, const float *logits, float *q_probs) {
    memset(q_probs, 0, sizeof *q_probs * (size_t)s->n_vocab);
    int32_t token;
    if (s->p.temperature == 0.0f && !has_penalty(s)) {
        token = plain_argmax(logits, s->n_vocab);
        q_probs[token] = 1.0f;
        return token;
    }
    size_t n = truncate_candidates(s, logits, NULL);
    cand *c = s->cand;
    token = c[0].id;
    if (n == 1) {
        q_probs[token] = 1.0f;
        return token;
    }
    const double total = temper(c, n, s->p.temperature);
    for (size_t i = 0; i < n; i++) q_probs[c[i].id] = (float)(c[i].w / total);
    /* The draw uses the stored (float) q, so that q_probs describes it exactly. */
    double u = rng_uniform(s->rng), acc = 0.0, sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += q_probs[c[i].id];
    u *= sum;
    for (size_t i = 0; i < n; i++) {
        if (q_probs[c[i].id] <= 0.0f) continue;
        token = c[i].id;
        acc += q_probs[c[i].id];
        if (acc > u) break;
    }
    return token;
}
