/* moe: the router's choices and weights for each scoring mode (softmax + norm as
 * Qwen3-MoE, sigmoid + selection bias + groups as DeepSeek V3), worked out by hand from
 * moe.h's definitions, and the plan's grouping by expert. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "moe.h"

static cv_moe_plan plan_for(const cv_moe_router *r, int32_t max_tokens) {
    cv_moe_plan p;
    cv_error e = {0};
    assert_int_equal(cv_moe_plan_init(&p, r, max_tokens, &e), CV_OK);
    return p;
}

static void test_softmax_top2_normalised_and_grouped_by_expert(void **state) {
    (void)state;
    const cv_moe_router r = {.scoring = CV_MOE_SOFTMAX, .n_expert = 4, .n_used = 2, .norm = 1};
    /* token 0 picks 3 then 2, token 1 picks 0 then 3, token 2 picks 1 then 3 */
    const float logits[3 * 4] = {0, 1, 2, 3, 2, -1, 0, 1, 0, 5, -2, 1};
    cv_moe_plan p = plan_for(&r, 3);
    cv_moe_route(&r, logits, 3, &p);
    const int32_t off[5] = {0, 1, 2, 3, 6};
    assert_memory_equal(p.off, off, sizeof off);
    /* expert 3 holds tokens 0, 1, 2 in order */
    const int32_t rows[6] = {1, 2, 0, 0, 1, 2};
    assert_memory_equal(p.rows, rows, sizeof rows);
    /* token 0: softmax weights of experts 3 and 2 renormalised = e^3 / (e^3 + e^2), ... */
    const float w3 = expf(3) / (expf(3) + expf(2)), w2 = expf(2) / (expf(3) + expf(2));
    assert_true(fabsf(p.weights[2] - w2) < 1e-6f);
    assert_true(fabsf(p.weights[3] - w3) < 1e-6f);
    const float w0 = expf(2) / (expf(2) + expf(1));
    assert_true(fabsf(p.weights[0] - w0) < 1e-6f);
    cv_moe_plan_free(&p);
}

static void test_sigmoid_bias_chooses_but_does_not_weigh(void **state) {
    (void)state;
    const float bias[4] = {0, 0, 0, 1};
    const cv_moe_router r = {.scoring = CV_MOE_SIGMOID, .n_expert = 4, .n_used = 1, .bias = bias,
                             .scale = 2.5f};
    const float logits[4] = {3, 0, 0, 0};  /* sigmoid(3) = 0.953 < sigmoid(0) + 1 */
    cv_moe_plan p = plan_for(&r, 1);
    cv_moe_route(&r, logits, 1, &p);
    assert_int_equal(p.off[3], 0);
    assert_int_equal(p.off[4], 1);
    assert_true(fabsf(p.weights[0] - 0.5f * 2.5f) < 1e-6f);  /* unbiased sigmoid(0), scaled */
    cv_moe_plan_free(&p);
}

static void test_groups_limit_the_choice(void **state) {
    (void)state;
    /* 4 groups of 2; group scores (sum of the two): 1.1, 1.6, 0.2, 1.5: with one group,
     * both choices come from group 1 although expert 6 has the single best logit. */
    const cv_moe_router r = {.scoring = CV_MOE_SIGMOID, .n_expert = 8, .n_used = 2, .n_groups = 4,
                             .n_group_used = 1};
    const float sel[8] = {0.6f, 0.5f, 0.8f, 0.8f, 0.1f, 0.1f, 0.9f, 0.6f};
    float logits[8];
    for (int i = 0; i < 8; i++) logits[i] = logf(sel[i] / (1 - sel[i]));  /* sigmoid^-1 */
    cv_moe_plan p = plan_for(&r, 1);
    cv_moe_route(&r, logits, 1, &p);
    for (int e = 0; e < 8; e++) assert_int_equal(p.off[e + 1] - p.off[e], e == 2 || e == 3);
    cv_moe_plan_free(&p);
}

static void test_bad_counts_refused(void **state) {
    (void)state;
    cv_error e = {0};
    const cv_moe_router used = {.n_expert = 4, .n_used = 5};
    assert_int_equal(cv_moe_router_check(&used, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "5 experts per token of 4"));
    const cv_moe_router groups = {.n_expert = 8, .n_used = 4, .n_groups = 4, .n_group_used = 1};
    assert_int_equal(cv_moe_router_check(&groups, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "4 expert groups, 1 used"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_top2_normalised_and_grouped_by_expert),
        cmocka_unit_test(test_sigmoid_bias_chooses_but_does_not_weigh),
        cmocka_unit_test(test_groups_limit_the_choice),
        cmocka_unit_test(test_bad_counts_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
