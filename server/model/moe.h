/* moe: routing a batch of tokens to a mixture of experts, grouped by expert.
 *
 * cv_moe_route turns router logits (host memory, [n][n_expert]) into each token's
 * n_used experts and their weights, as llama.cpp's build_moe_ffn does:
 *   scores  = softmax over all experts (Qwen3-MoE, DeepSeek V2) or sigmoid (V3);
 *   choice  = top n_used by score + bias (bias: V3's selection-only term, NULL for none),
 *             within the n_group_used best groups (a group's rank: the sum of its two best
 *             biased scores) when the experts are cut into n_groups > 1 groups;
 *   weights = the chosen experts' unbiased scores, divided by their sum when norm is set
 *             (the sum clamped at 2^-14, as llama.cpp does), times scale (0 or 1: none).
 * Ties go to the lower expert id. The plan then lists the (token row, weight) pairs
 * expert by expert: expert e's are rows[off[e] .. off[e + 1]) in ascending token order,
 * so the forward pass runs each used expert once on all its tokens (its weights stream
 * once per step), skips the unused ones, and a token's sum runs in expert order whatever
 * else is in the batch (same bits at any batch size).
 * Shared experts and dense first layers are the model's business, not the router's.
 */
#ifndef CV_MOE_H
#define CV_MOE_H

#include <stdint.h>

#include "cv_error.h"

typedef enum cv_moe_scoring {
    CV_MOE_SOFTMAX = 0,
    CV_MOE_SIGMOID = 1
} cv_moe_scoring;

typedef struct cv_moe_router {
    cv_moe_scoring scoring;
    int32_t n_expert;       /* 1..CV_MOE_MAX_EXPERTS */
    int32_t n_used;         /* experts per token, 1..n_expert */
    int32_t n_groups;       /* 0 or 1: no groups; else divides n_expert */
    int32_t n_group_used;   /* groups a token may choose from, 1..n_groups */
    const float *bias;      /* [n_expert] selection bias (host), or NULL */
    int norm;               /* normalise the chosen weights to sum 1 */
    float scale;            /* multiplies the weights; 0 or 1: none */
} cv_moe_router;

#define CV_MOE_MAX_EXPERTS 1024

typedef struct cv_moe_plan {
    int32_t max_tokens;
    int32_t *off;           /* [n_expert + 1] */
    int32_t *rows;          /* [max_tokens * n_used]: token rows, expert by expert */
    float *weights;         /* [max_tokens * n_used]: their weights */
    /* scratch */
    int32_t *chosen;        /* [max_tokens * n_used] */
    float *chosen_w;        /* [max_tokens * n_used] */
    float *scores;          /* [n_expert * 2] */
} cv_moe_plan;

/* Checks the router's counts (a clear CV_ERANGE naming the bad one). */
cv_status cv_moe_router_check(const cv_moe_router *r, cv_error *err);
cv_status cv_moe_plan_init(cv_moe_plan *p, const cv_moe_router *r, int32_t max_tokens, cv_error *err);
void cv_moe_plan_free(cv_moe_plan *p);
/* n <= max_tokens rows of logits. */
void cv_moe_route(const cv_moe_router *r, const float *logits, int32_t n, cv_moe_plan *p);

#endif
