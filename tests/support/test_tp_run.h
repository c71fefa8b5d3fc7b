/* test_tp_run: a model loaded through cv_tp beside its KV cache, and one forward pass
 * over rows (seq, pos, token) that all want logits, for the cmocka tests that compare
 * runs of one model under different sharding or cache layouts (test_tp,
 * test_model_swa). Header-only; include after <cmocka.h>.
 *
 * cv_test_forward reserves each row's position first, then runs the pass; any error
 * fails the running test with its message.
 */
#ifndef CV_TEST_TP_RUN_H
#define CV_TEST_TP_RUN_H

#include <stdint.h>
#include <string.h>

#include "gguf.h"
#include "kv_cache.h"
#include "tp.h"

#define CV_TEST_MAX_ROWS 32

typedef struct cv_test_run {
    cv_gguf *g;
    cv_tp *tp;
    cv_kv_cache *kv;
} cv_test_run;

typedef struct cv_test_rows {
    int32_t n;
    int32_t seq[CV_TEST_MAX_ROWS], pos[CV_TEST_MAX_ROWS], tok[CV_TEST_MAX_ROWS];
} cv_test_rows;

static inline void cv_test_run_close(cv_test_run *r) {
    cv_kv_free(r->kv);
    cv_tp_free(r->tp);
    cv_gguf_close(r->g);
}

static inline void cv_test_forward(cv_test_run *r, const cv_test_rows *b, float *logits) {
    cv_error e = {0};
    uint8_t want[CV_TEST_MAX_ROWS];
    memset(want, 1, sizeof want);
    assert_true(b->n <= CV_TEST_MAX_ROWS);
    for (int32_t i = 0; i < b->n; i++)
        if (cv_kv_reserve(r->kv, b->seq[i], b->pos[i] + 1, &e)) fail_msg("reserve: %s", e.msg);
    cv_batch cb = {.n = b->n, .tokens = b->tok, .pos = b->pos, .seq = b->seq, .want_logits = want};
    if (cv_tp_forward(r->tp, r->kv, &cb, logits, &e)) fail_msg("forward: %s", e.msg);
}

#endif
