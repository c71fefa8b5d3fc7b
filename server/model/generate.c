#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "timing.h"

/* The scalar loop below is the definition. Its compare chain through x[best] takes
 * ~0.5 ms over a 262k vocabulary, a few percent of a small model's decode step, so the
 * blocks go first through four independent lanes (SSE2, x86-64's baseline): each lane
 * keeps the first index of its largest value (a NaN never wins a compare), and the
 * largest lane wins, the lowest index among equals; with x[0] not NaN that is the
 * loop's answer on the blocks, and the loop finishes the tail from it. */
int32_t cv_argmax(const float *x, int32_t n) {
    int32_t best = 0, i = 1;
#if defined(__SSE2__)
    if (n >= 8 && x[0] == x[0]) {
        __m128 bv = _mm_set1_ps(-INFINITY);
        __m128i bi = _mm_set1_epi32(-1), idx = _mm_setr_epi32(0, 1, 2, 3);
        const __m128i four = _mm_set1_epi32(4);
        for (i = 0; i + 4 <= n; i += 4) {
            __m128 v = _mm_loadu_ps(x + i), gt = _mm_cmpgt_ps(v, bv);
            __m128i g = _mm_castps_si128(gt);
            bv = _mm_or_ps(_mm_and_ps(gt, v), _mm_andnot_ps(gt, bv));
            bi = _mm_or_si128(_mm_and_si128(g, idx), _mm_andnot_si128(g, bi));
            idx = _mm_add_epi32(idx, four);
        }
        float lv[4];
        int32_t li[4];
        _mm_storeu_ps(lv, bv);
        _mm_storeu_si128((__m128i *)li, bi);
        for (int j = 0; j < 4; j++)
            if (li[j] >= 0 && (lv[j] > x[best] || (lv[j] == x[best] && li[j] < best))) best = li[j];
    }
#endif
    for (; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct gen_buf {
    int32_t *tokens, *pos, *seq;
    uint8_t *want;
    float *logits;
} gen_buf;

static void gen_buf_free(gen_buf *b) {
    free(b->tokens);
    free(b->pos);
    free(b->seq);
    free(b->want);
    free(b->logits);
}

static cv_status pick(const cv_gen_callbacks *cb, float *row, int32_t n_vocab, int32_t *tok,
                      cv_error *err) {
    if (cb->on_logits) cb->on_logits(cb->ctx, row, n_vocab);
    *tok = cb->sample ? cb->sample(cb->ctx, row, n_vocab) : cv_argmax(row, n_vocab);
    if (*tok < 0 || *tok >= n_vocab)
        return cv_errorf(err, CV_EINVAL, "generate: sampler returned token %d (vocabulary %d)",
                         *tok, n_vocab);
    return CV_OK;
}

cv_status cv_generate(cv_tp *tp, cv_kv_cache *kv, const int32_t *prompt, int32_t n_prompt,
                      const cv_gen_params *p, const cv_gen_callbacks *cb, cv_gen_stats *st,
                      cv_error *err) {
    const cv_model_opts *mo = cv_model_options(cv_tp_model(tp));
    const int32_t n_vocab = cv_model_hparams(cv_tp_model(tp))->n_vocab;
    const int32_t n_ctx = cv_kv_config_of(kv)->max_seq_len;
    memset(st, 0, sizeof *st);
    st->n_prompt = n_prompt;
    if (n_prompt < 1) return cv_errorf(err, CV_EINVAL, "generate: empty prompt");
    if (n_prompt > n_ctx)
        return cv_errorf(err, CV_ERANGE, "generate: prompt of %d tokens is longer than the context of %d",
                         n_prompt, n_ctx);
    if (p->n_predict < 0) return cv_errorf(err, CV_EINVAL, "generate: n_predict %d < 0", p->n_predict);

    const int32_t chunk = p->all_logits ? mo->max_logits : mo->max_batch;
    gen_buf b = {
        .tokens = malloc((size_t)chunk * sizeof(int32_t)),
        .pos = malloc((size_t)chunk * sizeof(int32_t)),
        .seq = malloc((size_t)chunk * sizeof(int32_t)),
        .want = malloc((size_t)chunk),
        .logits = malloc((size_t)(p->all_logits ? chunk : 1) * (size_t)n_vocab * sizeof(float)),
    };
    cv_status s = CV_OK;
    if (!b.tokens || !b.pos || !b.seq || !b.want || !b.logits) {
        s = cv_errorf(err, CV_ENOMEM, "generate: out of memory");
        goto out;
    }
    if ((s = cv_kv_reserve(kv, p->seq, n_prompt, err))) goto out;

    /* Prefill: the last row of the last chunk gives the first token's logits. */
    double t0 = cv_seconds();
    int32_t tok = -1;
    for (int32_t at = 0; at < n_prompt; at += chunk) {
        int32_t n = n_prompt - at < chunk ? n_prompt - at : chunk;
        for (int32_t i = 0; i < n; i++) {
            b.tokens[i] = prompt[at + i];
            b.pos[i] = at + i;
            b.seq[i] = p->seq;
            b.want[i] = p->all_logits || at + i == n_prompt - 1;
        }
        cv_batch batch = {.n = n, .tokens = b.tokens, .pos = b.pos, .seq = b.seq, .want_logits = b.want};
        if ((s = cv_tp_forward(tp, kv, &batch, b.logits, err))) goto out;
        if (p->all_logits && cb->on_logits) {
            /* Every row but the prompt's last is only observed; the last one is sampled. */
            int32_t observed = at + n == n_prompt ? n - 1 : n;
            for (int32_t i = 0; i < observed; i++)
                cb->on_logits(cb->ctx, b.logits + (size_t)i * (size_t)n_vocab, n_vocab);
        }
        if (at + n == n_prompt && p->n_predict > 0) {
            float *last = b.logits + (size_t)(p->all_logits ? n - 1 : 0) * (size_t)n_vocab;
            if ((s = pick(cb, last, n_vocab, &tok, err))) goto out;
        } else if (at + n == n_prompt && p->all_logits && cb->on_logits) {
            cb->on_logits(cb->ctx, b.logits + (size_t)(n - 1) * (size_t)n_vocab, n_vocab);
        }
    }
    double t1 = cv_seconds();
    st->prefill_s = t1 - t0;

    /* Decode: feed each token back until n_predict, a stop, or a full context. */
    for (int32_t pos = n_prompt; p->n_predict > 0;) {
        st->n_generated++;
        if (cb->on_token && cb->on_token(cb->ctx, tok)) break;
        if (st->n_generated == p->n_predict || pos == n_ctx) break;
        if ((s = cv_kv_reserve(kv, p->seq, pos + 1, err))) goto out;
        b.tokens[0] = tok;
        b.pos[0] = pos++;
        b.seq[0] = p->seq;
        cv_batch batch = {.n = 1, .tokens = b.tokens, .pos = b.pos, .seq = b.seq, .want_logits = NULL};
        if ((s = cv_tp_forward(tp, kv, &batch, b.logits, err))) goto out;
        if ((s = pick(cb, b.logits, n_vocab, &tok, err))) goto out;
    }
    st->decode_s = cv_seconds() - t1;
out:
    cv_kv_release(kv, p->seq);
    gen_buf_free(&b);
    return s;
}
