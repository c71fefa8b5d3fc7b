/* moe: top-k routing and the per-expert plan (see moe.h). */
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cv_status cv_moe_router_check(const cv_moe_router *r, cv_error *err) {
    if (r->n_expert < 1 || r->n_expert > CV_MOE_MAX_EXPERTS)
        return cv_errorf(err, CV_ERANGE, "moe: %d experts (need 1..%d)", r->n_expert, CV_MOE_MAX_EXPERTS);
    if (r->n_used < 1 || r->n_used > r->n_expert)
        return cv_errorf(err, CV_ERANGE, "moe: %d experts per token of %d (need 1..%d)", r->n_used, r->n_expert,
                         r->n_expert);
    if (r->n_groups > 1 && (r->n_expert % r->n_groups || r->n_group_used < 1 || r->n_group_used > r->n_groups ||
                            r->n_group_used * (r->n_expert / r->n_groups) < r->n_used))
        return cv_errorf(err, CV_ERANGE, "moe: %d expert groups, %d used, do not fit %d experts with %d per token",
                         r->n_groups, r->n_group_used, r->n_expert, r->n_used);
    return CV_OK;
}

cv_status cv_moe_plan_init(cv_moe_plan *p, const cv_moe_router *r, int32_t max_tokens, cv_error *err) {
    memset(p, 0, sizeof *p);
    cv_status s = cv_moe_router_check(r, err);
    if (s) return s;
    const size_t pairs = (size_t)max_tokens * (size_t)r->n_used;
    p->max_tokens = max_tokens;
    p->off = malloc(((size_t)r->n_expert + 1) * sizeof *p->off);
    p->rows = malloc(pairs * sizeof *p->rows);
    p->weights = malloc(pairs * sizeof *p->weights);
    p->chosen = malloc(pairs * sizeof *p->chosen);
    p->chosen_w = malloc(pairs * sizeof *p->chosen_w);
    p->scores = malloc((size_t)r->n_expert * 2 * sizeof *p->scores);
    if (!p->off || !p->rows || !p->weights || !p->chosen || !p->chosen_w || !p->scores) {
        cv_moe_plan_free(p);
        return cv_errorf(err, CV_ENOMEM, "moe: out of memory for a plan of %d tokens", max_tokens);
    }
    return CV_OK;
}

void cv_moe_plan_free(cv_moe_plan *p) {
    free(p->off);
    free(p->rows);
    free(p->weights);
    free(p->chosen);
    free(p->chosen_w);
    free(p->scores);
    memset(p, 0, sizeof *p);
}

/* Index of the largest of x[0..n) not yet taken (taken[i] != 0), lowest on a tie. */
static int32_t best_free(const float *x, const uint8_t *taken, int32_t n) {
    int32_t b = -1;
    for (int32_t i = 0; i < n; i++)
        if (!taken[i] && (b < 0 || x[i] > x[b])) b = i;
    return b;
}

/* One token: its experts into ids[0..k) and weights into w[0..k). */
static void route_one(const cv_moe_router *r, const float *logit, float *score, float *sel, int32_t *ids,
                      float *w) {
    const int32_t E = r->n_expert, k = r->n_used;
    if (r->scoring == CV_MOE_SIGMOID) {
        for (int32_t e = 0; e < E; e++) score[e] = 1.0f / (1.0f + expf(-logit[e]));
    } else {
        float mx = logit[0], sum = 0;
        for (int32_t e = 1; e < E; e++) mx = logit[e] > mx ? logit[e] : mx;
        for (int32_t e = 0; e < E; e++) sum += score[e] = expf(logit[e] - mx);
        for (int32_t e = 0; e < E; e++) score[e] /= sum;
    }
    for (int32_t e = 0; e < E; e++) sel[e] = score[e] + (r->bias ? r->bias[e] : 0.0f);
    uint8_t taken[CV_MOE_MAX_EXPERTS];
    memset(taken, 0, (size_t)E);
    if (r->n_groups > 1) {
        /* rank groups by the sum of their two best; mask (take) the experts of the rest */
        const int32_t G = r->n_groups, per = E / G;
        float gscore[CV_MOE_MAX_EXPERTS];
        uint8_t gtaken[CV_MOE_MAX_EXPERTS] = {0};
        for (int32_t g = 0; g < G; g++) {
            const float *s = sel + (size_t)g * per;
            int32_t a = 0;
            for (int32_t i = 1; i < per; i++) a = s[i] > s[a] ? i : a;
            float second = -INFINITY;
            for (int32_t i = 0; i < per; i++)
                if (i != a && s[i] > second) second = s[i];
            gscore[g] = s[a] + (per > 1 ? second : 0.0f);
        }
        uint8_t keep[CV_MOE_MAX_EXPERTS] = {0};
        for (int32_t j = 0; j < r->n_group_used; j++) {
            const int32_t g = best_free(gscore, gtaken, G);
            gtaken[g] = keep[g] = 1;
        }
        for (int32_t e = 0; e < E; e++) taken[e] = !keep[e / per];
    }
    float sum = 0;
    for (int32_t j = 0; j < k; j++) {
        const int32_t e = best_free(sel, taken, E);
        taken[e] = 1;
        ids[j] = e;
        sum += w[j] = score[e];
    }
    const float div = r->norm ? (sum > 6.103515625e-5f ? sum : 6.103515625e-5f) : 1.0f;
    const float mul = r->scale != 0.0f ? r->scale : 1.0f;
    for (int32_t j = 0; j < k; j++) w[j] = w[j] / div * mul;
}

void cv_moe_route(const cv_moe_router *r, const float *logits, int32_t n, cv_moe_plan *p) {
    const int32_t E = r->n_expert, k = r->n_used;
    memset(p->off, 0, ((size_t)E + 1) * sizeof *p->off);
    for (int32_t t = 0; t < n; t++) {
        route_one(r, logits + (size_t)t * E, p->scores, p->scores + E, p->chosen + (size_t)t * k,
                  p->chosen_w + (size_t)t * k);
        for (int32_t j = 0; j < k; j++) p->off[p->chosen[(size_t)t * k + j] + 1]++;
    }
    for (int32_t e = 0; e < E; e++) p->off[e + 1] += p->off[e];
    /* counting sort by expert; tokens stay in ascending order within an expert */
    int32_t fill[CV_MOE_MAX_EXPERTS];
    memcpy(fill, p->off, (size_t)E * sizeof *fill);
    for (int32_t t = 0; t < n; t++)
        for (int32_t j = 0; j < k; j++) {
            const int32_t e = p->chosen[(size_t)t * k + j], at = fill[e]++;
            p->rows[at] = t;
            p->weights[at] = p->chosen_w[(size_t)t * k + j];
        }
}
