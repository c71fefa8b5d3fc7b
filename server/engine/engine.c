#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"
#include "generate.h"
#include "kv_cache.h"
#include "stop.h"
#include "timing.h"

/* Grammar automata kept per engine, and the size past which one is rebuilt for new
 * requests (a grammar with unbounded nesting keeps growing its tables). */
#define ENGINE_GRAMMARS 16
#define ENGINE_GRAMMAR_BYTES ((size_t)64 << 20)

/* Speculation: weight of the older counts of a drafter's hits and misses (per step) and
 * of older step times in the cost fit; steps of more rows than SPEC_FIT_ROWS (long
 * prefill chunks) are left out of the fit. Before the fit has seen two different batch
 * sizes, a row costs SPEC_PRIOR_ROW of a one-row step. */
#define SPEC_DECAY 0.9
#define SPEC_FIT_DECAY 0.97
#define SPEC_FIT_ROWS 64
#define SPEC_PRIOR_ROW 0.05

typedef struct seq {
    uint64_t id;
    int32_t *tokens;        /* prompt, then every generated token */
    int32_t n_tokens;
    int32_t n_prompt;
    int32_t n_fed;          /* tokens whose K/V sit in the cache: positions 0..n_fed-1 */
    int32_t n_shared;       /* of those, mapped from the prefix cache when last admitted */
    int32_t n_generated;
    int32_t max_tokens;
    int32_t kv_seq;         /* -1 while waiting */
    int ignore_eos;
    uint64_t admitted;      /* admission order: the largest is the youngest */
    cv_sampler *sampler;
    cv_gmatch *gmatch;      /* constrained decoding; NULL when unconstrained */
    cv_tok_stream *detok;
    cv_stop *stop;
    char **stop_strs;       /* copies, to name the one that matched */
    int32_t n_stop;
    cv_engine_sink sink;
    int want_samples;
    atomic_int cancelled;
    cv_finish end;          /* set when the sequence has ended; 0 while it runs */
    const char *end_stop;
    char end_error[sizeof(((cv_error *)0)->msg)];
    double t_submit, t_scheduled, t_first_token;
    struct seq *next;       /* waiting queue */
    /* Speculative decoding (engine.h). */
    int spec_ok;            /* may speculate: speculation on, no grammar */
    int sampled;            /* temperature > 0 */
    int32_t draft[CV_ENGINE_SPEC_MAX_DRAFT];
    int32_t n_draft;        /* drafted for this step (verified by its rows) */
    cv_spec_drafter drafter;
    int32_t want_model;     /* draft model positions wanted this step */
    int32_t n_dfed;         /* positions in the draft model's cache */
    float *q;               /* [spec_max_draft][vocab]: the draft model's distributions
                               (sampled requests with a draft model; NULL otherwise) */
    int32_t shadow;         /* lookup's guess for the next token on a step that did not
                               speculate, scored after the draw; -1: none */
    double hit[CV_SPEC_DRAFTERS], miss[CV_SPEC_DRAFTERS]; /* decayed counts */
} seq;

struct cv_engine {
    cv_tp *tp;
    const cv_tok *tok;
    cv_engine_config cfg;
    int32_t n_vocab;
    cv_kv_cache *kv;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;

    seq *wait_head, *wait_tail;
    int32_t n_waiting;
    seq **running;          /* max_running slots, NULL when free */
    int32_t n_running;
    int32_t *free_kv;       /* free KV sequence ids */
    int32_t n_free_kv;
    uint64_t next_id, admit_counter;
    cv_engine_stats stats;

    /* Step scratch, sized at creation: the step loop never allocates. */
    int32_t *b_tokens, *b_pos, *b_seq;
    uint8_t *b_want;
    seq **b_owner;          /* per row */
    int32_t *b_chunk;       /* per running slot: rows fed this step */
    float *logits;          /* [max_running + spec_rows][n_vocab] */

    /* Speculation: logits rows for drafted positions, the step cost fit (decayed sums
     * of 1, R, R^2, t, R t over recent steps of R rows taking t seconds) and the draft
     * model's (borrowed) runner, its cache (sequence ids as the target's) and step
     * scratch. */
    int32_t spec_rows;
    double fit[5];
    double draft_step_s;    /* decayed mean seconds of one draft step; 0: none yet */
    cv_tp *draft;
    cv_kv_cache *dkv;
    int32_t d_vocab;        /* the draft model's logits row */
    int32_t *d_tokens, *d_pos, *d_seq;
    uint8_t *d_want;
    seq **d_owner;
    float *d_logits;        /* [spec_max_batch][d_vocab] */

    /* Constrained decoding: the vocabulary as a byte trie, built by the first
     * constrained request (most servers never need it), and the automata of recent
     * grammars by their text, so that a schema used again is neither compiled nor
     * walked again (grammar_match.h). Under gram_mu; the automata themselves are only
     * advanced on the engine thread. */
    pthread_mutex_t gram_mu;
    cv_gvocab *gvocab;
    struct gram_entry {
        char *text;
        cv_gdfa *dfa;
        uint64_t used;
    } gram[ENGINE_GRAMMARS];
    uint64_t gram_clock;
};

void cv_engine_config_default(cv_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->max_running = 16;
    c->max_waiting = 256;
    c->max_batch_tokens = 256;
    c->kv_block_tokens = 16;
    c->kv_type = CV_TYPE_F16;
    c->max_tokens_default = CV_ENGINE_MAX_TOKENS_DEFAULT;
    c->prefix_cache = 1;
    c->spec = 1;
    c->spec_max_draft = 8;
    c->spec_max_batch = 4;
    c->spec_ngram = 2;
}

int32_t cv_engine_logits_rows(const cv_engine_config *c) {
    int64_t rows = c->max_running + (c->spec ? (int64_t)c->spec_max_batch * c->spec_max_draft : 0);
    return (int32_t)(rows < c->max_batch_tokens ? rows : c->max_batch_tokens);
}

const char *cv_spec_drafter_name(cv_spec_drafter d) { return d == CV_SPEC_LOOKUP ? "lookup" : "draft_model"; }

static void seq_free(seq *s) {
    if (!s) return;
    cv_sampler_free(s->sampler);
    cv_gmatch_free(s->gmatch);
    cv_tok_stream_free(s->detok);
    cv_stop_free(s->stop);
    for (int32_t i = 0; i < s->n_stop; i++) free(s->stop_strs[i]);
    free(s->stop_strs);
    free(s->tokens);
    free(s->q);
    free(s);
}

/* ---- queue and slots (engine mutex held) ---- */

static void wait_push(cv_engine *e, seq *s, int front) {
    s->next = NULL;
    if (!e->wait_head) {
        e->wait_head = e->wait_tail = s;
    } else if (front) {
        s->next = e->wait_head;
        e->wait_head = s;
    } else {
        e->wait_tail->next = s;
        e->wait_tail = s;
    }
    e->n_waiting++;
}

static seq *wait_pop(cv_engine *e) {
    seq *s = e->wait_head;
    if (!s) return NULL;
    e->wait_head = s->next;
    if (!e->wait_head) e->wait_tail = NULL;
    e->n_waiting--;
    s->next = NULL;
    return s;
}

static void wait_remove(cv_engine *e, seq *s) {
    seq **p = &e->wait_head, *prev = NULL;
    while (*p && *p != s) {
        prev = *p;
        p = &(*p)->next;
    }
    if (!*p) return;
    *p = s->next;
    if (e->wait_tail == s) e->wait_tail = prev;
    e->n_waiting--;
}

static void slot_release(cv_engine *e, int32_t slot) {
    seq *s = e->running[slot];
    cv_kv_release(e->kv, s->kv_seq);
    if (e->dkv) cv_kv_release(e->dkv, s->kv_seq);
    s->n_dfed = 0;
    s->n_draft = 0;
    e->free_kv[e->n_free_kv++] = s->kv_seq;
    s->kv_seq = -1;
    e->running[slot] = NULL;
    e->n_running--;
}

/* ---- output (engine thread, no lock held) ---- */

static void end(seq *s, cv_finish reason, const char *stop_string, const char *error) {
    s->end = reason;
    s->end_stop = stop_string;
    if (error) snprintf(s->end_error, sizeof s->end_error, "%s", error);
}

/* The final event; the sequence holds no KV blocks by now. */
static void finish(seq *s) {
    cv_engine_final f = {
        .reason = s->end,
        .prompt_tokens = s->n_prompt,
        .completion_tokens = s->n_generated,
        .queue_s = s->t_scheduled > 0 ? s->t_scheduled - s->t_submit : 0,
        .ttft_s = s->t_first_token > 0 ? s->t_first_token - s->t_submit : 0,
        .total_s = cv_seconds() - s->t_submit,
        .stop_string = s->end_stop,
        .error = s->end == CV_FINISH_ERROR ? s->end_error : NULL,
    };
    s->sink.on_final(s->sink.ctx, &f);
}

/* Flushes held-back text (an incomplete character, a partial stop match that can no
 * longer complete) as a last chunk. */
static void flush_text(seq *s) {
    const char *t;
    size_t n;
    cv_stop_out o;
    cv_tok_stream_flush(s->detok, &t, &n);
    if (n && cv_stop_feed(s->stop, t, n, &o, NULL) == CV_OK && o.len)
        s->sink.on_chunk(s->sink.ctx, o.text, o.len, NULL, 0, NULL);
    o = cv_stop_flush(s->stop);
    if (o.len) s->sink.on_chunk(s->sink.ctx, o.text, o.len, NULL, 0, NULL);
}

/* Handles one generated token; returns 1 when the sequence has ended (see end()). */
static int on_token(const cv_engine *e, seq *s, const cv_sample *smp) {
    int32_t id = smp->token;
    const cv_sample *samples = s->want_samples ? smp : NULL;
    if (!s->ignore_eos && cv_tok_is_eog(e->tok, id)) {
        flush_text(s);
        s->sink.on_chunk(s->sink.ctx, "", 0, &id, 1, samples);
        end(s, CV_FINISH_STOP, NULL, NULL);
        return 1;
    }
    const char *text;
    size_t len;
    cv_error err = {0};
    if (cv_tok_stream_feed(s->detok, id, &text, &len, &err) != CV_OK) {
        end(s, CV_FINISH_ERROR, NULL, err.msg);
        return 1;
    }
    cv_stop_out o;
    if (cv_stop_feed(s->stop, text, len, &o, &err) != CV_OK) {
        end(s, CV_FINISH_ERROR, NULL, err.msg);
        return 1;
    }
    s->sink.on_chunk(s->sink.ctx, o.text, o.len, &id, 1, samples);
    if (o.stopped) {
        end(s, CV_FINISH_STOP, s->stop_strs[o.which], NULL);
        return 1;
    }
    if (s->n_generated >= s->max_tokens || s->n_tokens >= e->cfg.n_ctx) {
        flush_text(s);
        end(s, CV_FINISH_LENGTH, NULL, NULL);
        return 1;
    }
    return 0;
}

/* Draws the next token, among those the grammar allows when there is one; returns 1
 * when the sequence has ended with an error instead (see end()). */
static int sample(seq *s, const float *logits, cv_sample *smp) {
    if (!s->gmatch) {
        cv_sampler_sample(s->sampler, logits, smp);
        return 0;
    }
    const uint64_t *allow;
    cv_error err = {0};
    if (cv_gmatch_mask(s->gmatch, &allow, &err) != CV_OK ||
        cv_gmatch_accept_token(s->gmatch, cv_sampler_sample_masked(s->sampler, logits, allow, smp), &err) != CV_OK) {
        end(s, CV_FINISH_ERROR, NULL, err.msg);
        return 1;
    }
    return 0;
}

/* ---- speculative decoding (engine thread; engine.h says what and why) ---- */

/* Share of drafted tokens the target agreed with, from decayed counts with one hit and
 * one miss of prior (0.5 before anything is known). */
static double spec_alpha(const seq *s, cv_spec_drafter d) {
    return (s->hit[d] + 1.0) / (s->hit[d] + s->miss[d] + 2.0);
}

static void spec_count(seq *s, cv_spec_drafter d, double hits, double misses) {
    s->hit[d] = s->hit[d] * SPEC_DECAY + hits;
    s->miss[d] = s->miss[d] * SPEC_DECAY + misses;
}

/* A step of `rows` rows took `t` seconds: into the cost fit. */
static void spec_observe(cv_engine *e, int32_t rows, double t) {
    if (rows > SPEC_FIT_ROWS) return;
    const double r = rows, x[5] = {1.0, r, r * r, t, r * t};
    for (int i = 0; i < 5; i++) e->fit[i] = e->fit[i] * SPEC_FIT_DECAY + x[i];
}

/* Expected seconds of a step of `rows` rows: a + b rows from the fit, with b at
 * SPEC_PRIOR_ROW of a row's mean cost while the fit cannot tell (one batch size seen)
 * and kept within [0.2%, 200%] of it (noise on a busy host). Relative values are what
 * matter: with no step seen yet, or !measured, it answers the prior in units of one
 * row. A sampled sequence's lookup drafts are sized by the prior: with the measured
 * cost, how many rows a step had would depend on timing, and rows verified in one
 * batch may differ from single rows in the last bits of their logits (F32 paths), so
 * a seeded stream would not repeat. */
static double spec_step_cost(const cv_engine *e, int32_t rows, int measured) {
    const double w = e->fit[0];
    if (w < 1e-9 || !measured) return 1.0 + SPEC_PRIOR_ROW * (rows - 1);
    const double rm = e->fit[1] / w, tm = e->fit[3] / w, var = e->fit[2] / w - rm * rm;
    const double per_row = tm / rm;
    double b = var > 0.25 ? (e->fit[4] / w - rm * tm) / var : SPEC_PRIOR_ROW * per_row;
    if (b < 0.002 * per_row) b = 0.002 * per_row;
    if (b > 2.0 * per_row) b = 2.0 * per_row;
    double a = tm - b * rm;
    if (a < 0.1 * tm) a = 0.1 * tm;
    return a + b * rows;
}

/* Prompt lookup: the most recent earlier occurrence of the longest suffix of
 * s->tokens (at least min_n and at most CV_ENGINE_SPEC_MAX_NGRAM tokens long); copies
 * up to cap of the tokens that followed it into out and returns how many. */
static int32_t spec_lookup(const seq *s, int32_t min_n, int32_t cap, int32_t *out) {
    const int32_t *t = s->tokens, n = s->n_tokens;
    int32_t best = -1, best_len = min_n - 1;
    /* i: the last token of a candidate occurrence; its continuation starts at i + 1. */
    for (int32_t i = n - 2; i >= 0 && best_len < CV_ENGINE_SPEC_MAX_NGRAM; i--) {
        int32_t len = 0;
        while (len < CV_ENGINE_SPEC_MAX_NGRAM && len <= i && t[i - len] == t[n - 1 - len]) len++;
        if (len > best_len) best_len = len, best = i;
    }
    if (best < 0) return 0;
    int32_t c = n - 1 - best;
    if (c > cap) c = cap;
    memcpy(out, t + best + 1, sizeof *out * (size_t)c);
    return c;
}

/* The draft model's proposal for position j of s's draft, from its logits row. */
static int32_t spec_draft_token(const cv_engine *e, seq *s, const float *row, int32_t j) {
    if (s->q) return cv_sampler_draft_probs(s->sampler, row, s->q + (size_t)j * (size_t)cv_tok_n_vocab(e->tok));
    return cv_argmax(row, cv_tok_n_vocab(e->tok));
}

/* Runs the draft model for the sequences with want_model > 0: first everything they
 * hold that it has not seen (chunks of at most max_batch_tokens rows; the newest
 * token's row gives the first draft), then one step per further drafted position,
 * all such sequences in each. Fills draft / n_draft; a sequence whose draft cache is
 * full, or all of them when a forward fails, drafts nothing (its draft cache emptied). */
static void spec_run_draft(cv_engine *e) {
    const int32_t R = e->cfg.max_running, B = e->cfg.max_batch_tokens;
    int32_t most = 0;
    for (int32_t i = 0; i < R; i++) {
        seq *s = e->running[i];
        if (!s || !s->want_model) continue;
        if (cv_kv_reserve(e->dkv, s->kv_seq, s->n_tokens + s->want_model - 1, NULL) != CV_OK) {
            cv_kv_release(e->dkv, s->kv_seq);
            s->n_dfed = 0;
            s->want_model = 0;
            continue;
        }
        if (s->want_model > most) most = s->want_model;
    }
    cv_error err = {0};
    for (int32_t j = 0; j < most; j++) {
        for (;;) { /* j == 0: catch-up chunks until every sequence has its first draft */
            int32_t rows = 0, timed = 1;
            for (int32_t i = 0; i < R && rows < B; i++) {
                seq *s = e->running[i];
                if (!s || s->want_model <= j || s->n_draft > j) continue;
                const int32_t end = s->n_tokens + j; /* positions fed once this row is */
                int32_t chunk = end - s->n_dfed;
                if (chunk > B - rows) chunk = B - rows;
                if (chunk > 1) timed = 0;
                for (int32_t k = 0; k < chunk; k++) {
                    const int32_t p = s->n_dfed + k;
                    e->d_tokens[rows] = p < s->n_tokens ? s->tokens[p] : s->draft[p - s->n_tokens];
                    e->d_pos[rows] = p;
                    e->d_seq[rows] = s->kv_seq;
                    e->d_want[rows] = p == end - 1;
                    e->d_owner[rows] = s;
                    rows++;
                }
            }
            if (rows == 0) break;
            cv_batch b = {rows, e->d_tokens, e->d_pos, e->d_seq, e->d_want};
            const double t0 = cv_seconds();
            if (cv_tp_forward(e->draft, e->dkv, &b, e->d_logits, &err) != CV_OK) {
                for (int32_t i = 0; i < R; i++) {
                    seq *s = e->running[i];
                    if (!s || !s->want_model) continue;
                    cv_kv_release(e->dkv, s->kv_seq);
                    s->n_dfed = s->n_draft = s->want_model = 0;
                }
                return;
            }
            if (timed) {
                const double t = cv_seconds() - t0;
                e->draft_step_s = e->draft_step_s > 0 ? 0.8 * e->draft_step_s + 0.2 * t : t;
            }
            int32_t out_row = 0;
            for (int32_t r = 0; r < rows; r++) {
                seq *s = e->d_owner[r];
                s->n_dfed++;
                if (!e->d_want[r]) continue;
                s->draft[j] = spec_draft_token(e, s, e->d_logits + (size_t)out_row++ * (size_t)e->d_vocab, j);
                s->n_draft = j + 1;
            }
        }
    }
    for (int32_t i = 0; i < R; i++)
        if (e->running[i] && e->running[i]->want_model) e->running[i]->drafter = CV_SPEC_DRAFT_MODEL;
}

/* Chooses this step's drafts (engine.h: the rule) and runs the drafters. */
static void spec_draft(cv_engine *e) {
    const int32_t R = e->cfg.max_running;
    int32_t decoders = 0, rows = 0;
    for (int32_t i = 0; i < R; i++) {
        seq *s = e->running[i];
        if (!s) continue;
        s->n_draft = s->want_model = 0;
        s->shadow = -1;
        const int32_t unfed = s->n_tokens - s->n_fed;
        decoders += unfed == 1;
        rows += unfed;
    }
    if (!e->cfg.spec || e->spec_rows == 0 || e->n_running > e->cfg.spec_max_batch) return;
    if (rows > e->cfg.max_batch_tokens) rows = e->cfg.max_batch_tokens;
    int32_t spare = e->cfg.max_batch_tokens - rows;
    if (spare > e->spec_rows) spare = e->spec_rows;
    double tokens = decoders, draft_steps = 0;
    int32_t extra = 0, model = 0;
    for (int32_t i = 0; i < R && spare > 0; i++) {
        seq *s = e->running[i];
        if (!s || !s->spec_ok || s->n_tokens - s->n_fed != 1) continue;
        int32_t room = e->cfg.spec_max_draft;
        if (room > s->max_tokens - s->n_generated - 1) room = s->max_tokens - s->n_generated - 1;
        if (room > e->cfg.n_ctx - s->n_tokens - 1) room = e->cfg.n_ctx - s->n_tokens - 1;
        if (room > spare) room = spare;
        if (room <= 0) continue;
        int32_t avail = spec_lookup(s, e->cfg.spec_ngram, room, s->draft);
        cv_spec_drafter d = CV_SPEC_LOOKUP;
        if (avail == 0) {
            if (!e->draft) continue;
            d = CV_SPEC_DRAFT_MODEL;
            avail = room;
        }
        const double alpha = spec_alpha(s, d);
        const int measured = !s->sampled || d == CV_SPEC_DRAFT_MODEL;
        const double draft_s = measured ? e->draft_step_s : 0.0;
        double best = tokens / (spec_step_cost(e, rows + extra, measured) + draft_steps * draft_s), gain = 0;
        int32_t k_best = 0;
        double yield = 0, power = 1;
        for (int32_t k = 1; k <= avail; k++) {
            power *= alpha;
            yield += power; /* alpha + ... + alpha^k: tokens beyond the one a step gives */
            const double steps = d == CV_SPEC_DRAFT_MODEL && k > draft_steps ? k : draft_steps;
            const double v = (tokens + yield) / (spec_step_cost(e, rows + extra + k, measured) + steps * draft_s);
            if (v > best) best = v, k_best = k, gain = yield;
        }
        if (k_best == 0) {
            if (d == CV_SPEC_LOOKUP) s->shadow = s->draft[0];
            continue;
        }
        tokens += gain;
        extra += k_best;
        spare -= k_best;
        s->drafter = d;
        if (d == CV_SPEC_LOOKUP) {
            s->n_draft = k_best;
        } else {
            s->want_model = k_best;
            if (k_best > draft_steps) draft_steps = k_best;
            model = 1;
        }
    }
    if (model) spec_run_draft(e);
}

/* The rows of a sequence that speculated: row j's logits choose the token after
 * position n_fed + j, which is kept; the next row was fed draft[j], so it counts only
 * while the choice equals draft[j] (cv_sampler_verify). Returns 1 when the sequence
 * ended (see end()); *accepted: drafted tokens the target agreed with. */
static int spec_verify(cv_engine *e, seq *s, const float *logits, int32_t *accepted) {
    const int32_t k = s->n_draft, V = cv_tok_n_vocab(e->tok);
    int32_t m = 0, done = 0;
    for (int32_t j = 0; j <= k && !done; j++) {
        cv_sample smp;
        const int32_t d = j < k ? s->draft[j] : -1;
        const float *q = j < k && s->drafter == CV_SPEC_DRAFT_MODEL && s->q ? s->q + (size_t)j * (size_t)V : NULL;
        const int32_t t = cv_sampler_verify(s->sampler, logits + (size_t)j * (size_t)e->n_vocab, NULL, d, q, &smp);
        s->n_fed++;
        if (s->t_first_token == 0) s->t_first_token = cv_seconds();
        s->tokens[s->n_tokens++] = t;
        s->n_generated++;
        done = on_token(e, s, &smp);
        if (t != d) break;
        m++;
    }
    spec_count(s, s->drafter, m, m < k);
    *accepted = m;
    return done;
}

/* ---- the step ---- */

/* Frees the youngest running sequence's blocks and queues it first for recompute. */
static void preempt_youngest(cv_engine *e) {
    int32_t victim = -1;
    for (int32_t i = 0; i < e->cfg.max_running; i++) {
        seq *s = e->running[i];
        if (s && (victim < 0 || s->admitted > e->running[victim]->admitted)) victim = i;
    }
    seq *s = e->running[victim];
    slot_release(e, victim); /* its drafts too */
    s->n_fed = 0;
    wait_push(e, s, 1);
    e->stats.preemptions++;
}

/* Cancellations and admissions; returns the number of running sequences. Collects
 * sequences to finish as cancelled into *done (linked through next). */
static int32_t schedule_locked(cv_engine *e, seq **done) {
    for (int32_t i = 0; i < e->cfg.max_running; i++) {
        seq *s = e->running[i];
        if (s && atomic_load(&s->cancelled)) {
            slot_release(e, i);
            s->next = *done;
            *done = s;
        }
    }
    for (seq *s = e->wait_head, *nx; s; s = nx) {
        nx = s->next;
        if (atomic_load(&s->cancelled)) {
            wait_remove(e, s);
            s->next = *done;
            *done = s;
        }
    }
    while (e->n_running < e->cfg.max_running && e->wait_head) {
        seq *s = wait_pop(e);
        int32_t slot = 0;
        while (e->running[slot]) slot++;
        s->kv_seq = e->free_kv[--e->n_free_kv];
        s->admitted = ++e->admit_counter;
        if (s->t_scheduled == 0) s->t_scheduled = cv_seconds();
        e->running[slot] = s;
        e->n_running++;
        /* Off, or a table that cannot reach the device (hit stays 0): fed in full. */
        int32_t hit;
        (void)cv_kv_share_prefix(e->kv, s->kv_seq, s->tokens, s->n_tokens - 1, &hit, NULL);
        s->n_fed = s->n_shared = hit;
        e->stats.prefix_queries += (uint64_t)s->n_tokens;
        e->stats.prefix_hits += (uint64_t)hit;
    }
    return e->n_running;
}

/* A sequence about to feed its first own token maps its prefix again: sequences ahead
 * of it may have published more of it since its admission (eight requests admitted
 * at once with one system prompt compute it once, not eight times). Its table holds
 * only shared blocks, which stay cached between the release and the lookup. */
static void reshare(cv_engine *e, seq *s) {
    int32_t hit;
    cv_kv_release(e->kv, s->kv_seq);
    (void)cv_kv_share_prefix(e->kv, s->kv_seq, s->tokens, s->n_tokens - 1, &hit, NULL);
    e->stats.prefix_hits += (uint64_t)hit - (uint64_t)s->n_shared;
    s->n_fed = s->n_shared = hit;
}

/* Plans the rows of one forward pass: decode rows first (one per sequence that has
 * only its last token to feed), then prompt chunks in admission order. Reserves KV,
 * preempting the youngest when blocks run out. Returns the number of rows. */
static int32_t plan_batch_locked(cv_engine *e) {
    int32_t budget = e->cfg.max_batch_tokens, rows = 0;
    memset(e->b_chunk, 0, sizeof *e->b_chunk * (size_t)e->cfg.max_running);
    for (int pass = 0; pass < 2; pass++) {
        for (;;) {
            /* pass 0: decoders in any order; pass 1: prefills, oldest first */
            int32_t pick = -1;
            for (int32_t i = 0; i < e->cfg.max_running; i++) {
                seq *s = e->running[i];
                if (!s || e->b_chunk[i]) continue;
                int32_t unfed = s->n_tokens - s->n_fed;
                if ((pass == 0) != (unfed == 1)) continue;
                if (pick < 0 || s->admitted < e->running[pick]->admitted) pick = i;
            }
            if (pick < 0 || budget == 0) break;
            seq *s = e->running[pick];
            if (pass == 1 && s->n_fed == s->n_shared && cv_kv_config_of(e->kv)->prefix_cache) reshare(e, s);
            int32_t chunk = s->n_tokens - s->n_fed + s->n_draft; /* drafts: decoders only */
            if (chunk > budget) chunk = budget;
            if (s->n_draft >= chunk) s->n_draft = chunk - 1;
            while (cv_kv_reserve(e->kv, s->kv_seq, s->n_fed + chunk, NULL) == CV_EBUSY) {
                preempt_youngest(e);
                if (!e->running[pick]) break; /* it was the youngest itself */
            }
            if (!e->running[pick]) continue;
            e->b_chunk[pick] = chunk;
            budget -= chunk;
        }
    }
    /* Rows in slot order; a sequence's rows are contiguous, its last row wants logits
     * only when the chunk reaches its newest token. */
    for (int32_t i = 0; i < e->cfg.max_running; i++) {
        seq *s = e->running[i];
        if (!s || !e->b_chunk[i]) continue;
        for (int32_t k = 0; k < e->b_chunk[i]; k++) {
            int32_t p = s->n_fed + k;
            e->b_tokens[rows] = p < s->n_tokens ? s->tokens[p] : s->draft[p - s->n_tokens];
            e->b_pos[rows] = p;
            e->b_seq[rows] = s->kv_seq;
            e->b_want[rows] = p >= s->n_tokens - 1; /* a speculating decoder's every row */
            e->b_owner[rows] = s;
            rows++;
        }
    }
    return rows;
}

static void *engine_loop(void *arg) {
    cv_engine *e = arg;
    for (;;) {
        seq *cancelled = NULL;
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && schedule_locked(e, &cancelled) == 0 && !cancelled)
            pthread_cond_wait(&e->cv, &e->mu);
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);

        for (seq *s = cancelled, *nx; s; s = nx) {
            nx = s->next;
            end(s, CV_FINISH_CANCELLED, NULL, NULL);
            finish(s);
            seq_free(s);
        }
        if (stopping) break;
        /* Drafting runs unlocked: only this thread changes running[] and the sequences. */
        spec_draft(e);
        pthread_mutex_lock(&e->mu);
        int32_t rows = plan_batch_locked(e);
        pthread_mutex_unlock(&e->mu);
        if (rows == 0) continue;

        cv_batch b = {rows, e->b_tokens, e->b_pos, e->b_seq, e->b_want};
        cv_error err = {0};
        const double t0 = cv_seconds();
        cv_status st = cv_tp_forward(e->tp, e->kv, &b, e->logits, &err);
        if (st == CV_OK) spec_observe(e, rows, cv_seconds() - t0);

        pthread_mutex_lock(&e->mu);
        e->stats.steps++;
        e->stats.last_batch_rows = rows;
        pthread_mutex_unlock(&e->mu);

        /* Each sequence's rows are contiguous; the last wants logits when the chunk
         * reaches its newest token, every one when it speculates. */
        int32_t out_row = 0;
        for (int32_t r = 0, n; r < rows; r += n) {
            seq *s = e->b_owner[r];
            for (n = 1; r + n < rows && e->b_owner[r + n] == s; n++) {}
            int done = 0, spec = s->n_draft > 0;
            int32_t accepted = 0;
            if (st != CV_OK) {
                s->n_fed += n;
                if (e->b_want[r + n - 1]) {
                    end(s, CV_FINISH_ERROR, NULL, err.msg);
                    done = 1;
                }
            } else if (spec) {
                done = spec_verify(e, s, e->logits + (size_t)out_row * e->n_vocab, &accepted);
                out_row += n;
            } else {
                s->n_fed += n;
                if (e->b_want[r + n - 1]) {
                    cv_sample smp;
                    done = sample(s, e->logits + (size_t)out_row * e->n_vocab, &smp);
                    out_row++;
                    if (!done) {
                        if (s->t_first_token == 0) s->t_first_token = cv_seconds();
                        s->tokens[s->n_tokens++] = smp.token;
                        s->n_generated++;
                        if (s->shadow >= 0) spec_count(s, CV_SPEC_LOOKUP, smp.token == s->shadow, smp.token != s->shadow);
                        done = on_token(e, s, &smp);
                    }
                }
            }
            pthread_mutex_lock(&e->mu);
            /* Only verified positions: a rejected draft never names a cached block. */
            if (st == CV_OK) cv_kv_publish(e->kv, s->kv_seq, s->tokens, s->n_fed);
            if (spec) {
                cv_kv_truncate(e->kv, s->kv_seq, s->n_fed);
                e->stats.spec_drafted[s->drafter] += (uint64_t)s->n_draft;
                e->stats.spec_accepted[s->drafter] += (uint64_t)accepted;
                s->n_draft = 0;
                if (e->dkv && s->n_dfed > s->n_fed) {
                    s->n_dfed = s->n_fed;
                    cv_kv_truncate(e->dkv, s->kv_seq, s->n_dfed);
                }
            }
            if (done) {
                for (int32_t i = 0; i < e->cfg.max_running; i++)
                    if (e->running[i] == s) slot_release(e, i);
                e->stats.tokens_generated += (uint64_t)s->n_generated;
            }
            pthread_mutex_unlock(&e->mu);
            if (done) {
                finish(s);
                seq_free(s);
            }
        }
    }
    /* Stopping: whatever is left ends as cancelled. */
    pthread_mutex_lock(&e->mu);
    seq *left = NULL;
    for (int32_t i = 0; i < e->cfg.max_running; i++) {
        seq *s = e->running[i];
        if (!s) continue;
        slot_release(e, i);
        s->next = left;
        left = s;
    }
    while (e->wait_head) {
        seq *s = wait_pop(e);
        s->next = left;
        left = s;
    }
    pthread_mutex_unlock(&e->mu);
    for (seq *s = left, *nx; s; s = nx) {
        nx = s->next;
        end(s, CV_FINISH_CANCELLED, NULL, NULL);
        finish(s);
        seq_free(s);
    }
    return NULL;
}

/* ---- public ---- */

/* The start of the prefix hash chain: the slot's salt and everything that decides a
 * block's K/V besides its tokens. */
static uint64_t prefix_seed(const cv_engine_config *c, const cv_hparams *hp, const cv_kv_config *kc) {
    const double key[] = {(double)hp->arch, hp->n_layers, hp->n_kv_heads, hp->head_dim, hp->n_rot,
                          (double)hp->rope_mode, hp->rope_base, hp->rope_base_local, hp->rope_freq_scale,
                          hp->sliding_window, kc->window, (double)kc->type, kc->block_size};
    return cv_bpool_hash_bytes(c->prefix_salt, key, sizeof key);
}

/* Everything cv_engine_new allocates, for its error path and cv_engine_free. */
static void free_parts(cv_engine *e) {
    for (int i = 0; i < ENGINE_GRAMMARS; i++) {
        free(e->gram[i].text);
        cv_gdfa_unref(e->gram[i].dfa);
    }
    cv_gvocab_free(e->gvocab);
    cv_kv_free(e->kv);
    cv_kv_free(e->dkv);
    free(e->d_tokens);
    free(e->d_pos);
    free(e->d_seq);
    free(e->d_want);
    free(e->d_owner);
    free(e->d_logits);
    free(e->running);
    free(e->free_kv);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_want);
    free(e->b_owner);
    free(e->b_chunk);
    free(e->logits);
    free(e);
}

/* The draft model's cache (its own positions for every target sequence id, no prefix
 * sharing: it is rebuilt from the target's tokens whenever it falls behind) and step
 * scratch. Sized for spec_max_batch full-length sequences: the only ones that draft. */
static cv_status draft_cache(cv_engine *e, cv_error *err) {
    const int32_t R = e->cfg.max_running, B = e->cfg.max_batch_tokens;
    e->draft = e->cfg.draft;
    e->d_vocab = cv_model_hparams(cv_tp_model(e->draft))->n_vocab;
    cv_kv_config kc = cv_tp_kv_config(e->draft, e->cfg.n_ctx, R, e->cfg.kv_type);
    kc.block_size = e->cfg.kv_block_tokens;
    kc.max_seq_len = (e->cfg.n_ctx + kc.block_size - 1) / kc.block_size * kc.block_size;
    kc.prefix_cache = 0;
    int32_t seqs = e->cfg.spec_max_batch < R ? e->cfg.spec_max_batch : R;
    kc.n_blocks = cv_kv_blocks_for(&kc, kc.max_seq_len) * seqs;
    cv_status st = cv_kv_create(&kc, &e->dkv, err);
    if (st != CV_OK) return cv_error_wrap(err, "engine: the draft model's KV cache");
    e->d_tokens = malloc(sizeof(int32_t) * (size_t)B);
    e->d_pos = malloc(sizeof(int32_t) * (size_t)B);
    e->d_seq = malloc(sizeof(int32_t) * (size_t)B);
    e->d_want = malloc((size_t)B);
    e->d_owner = malloc(sizeof(seq *) * (size_t)B);
    e->d_logits = malloc(sizeof(float) * (size_t)seqs * (size_t)e->d_vocab);
    if (!e->d_tokens || !e->d_pos || !e->d_seq || !e->d_want || !e->d_owner || !e->d_logits)
        return cv_errorf(err, CV_ENOMEM, "engine: out of memory for draft step buffers");
    return CV_OK;
}

cv_status cv_engine_new(cv_tp *tp, const cv_tok *tok, const cv_engine_config *cfg,
                        cv_engine **out, cv_error *err) {
    const cv_model *m = cv_tp_model(tp);
    const cv_model_opts *mo = cv_model_options(m);
    const cv_hparams *hp = cv_model_hparams(m);
    if (cfg->max_running < 1 || cfg->max_batch_tokens < 1 || cfg->kv_block_tokens < 1 ||
        cfg->max_waiting < 0)
        return cv_errorf(err, CV_EINVAL, "engine: max_running, max_batch_tokens and "
                         "kv_block_tokens must be at least 1");
    if (cfg->spec && (cfg->spec_max_draft < 1 || cfg->spec_max_draft > CV_ENGINE_SPEC_MAX_DRAFT ||
                      cfg->spec_max_batch < 1 || cfg->spec_ngram < 1 || cfg->spec_ngram > CV_ENGINE_SPEC_MAX_NGRAM))
        return cv_errorf(err, CV_EINVAL,
                         "engine: spec_max_draft %d must be in 1..%d, spec_max_batch %d at least 1, spec_ngram %d "
                         "in 1..%d",
                         cfg->spec_max_draft, CV_ENGINE_SPEC_MAX_DRAFT, cfg->spec_max_batch, cfg->spec_ngram,
                         CV_ENGINE_SPEC_MAX_NGRAM);
    if (cfg->spec && cfg->draft) {
        const cv_model_opts *dmo = cv_model_options(cv_tp_model(cfg->draft));
        const cv_hparams *dh = cv_model_hparams(cv_tp_model(cfg->draft));
        const int32_t seqs = cfg->spec_max_batch < cfg->max_running ? cfg->spec_max_batch : cfg->max_running;
        if (dmo->max_batch < cfg->max_batch_tokens || dmo->max_logits < seqs)
            return cv_errorf(err, CV_EINVAL,
                             "engine: the draft model was loaded for batches of %d rows with %d logits rows; "
                             "the engine needs %d and %d",
                             dmo->max_batch, dmo->max_logits, cfg->max_batch_tokens, seqs);
        if (cv_tok_n_vocab(tok) > dh->n_vocab)
            return cv_errorf(err, CV_EFORMAT, "engine: tokenizer has %d tokens, the draft model's output %d",
                             cv_tok_n_vocab(tok), dh->n_vocab);
    }
    if (mo->max_batch < cfg->max_batch_tokens || mo->max_logits < cfg->max_running)
        return cv_errorf(err, CV_EINVAL,
                         "engine: the model was loaded for batches of %d rows with %d logits "
                         "rows; the engine needs %d and %d",
                         mo->max_batch, mo->max_logits, cfg->max_batch_tokens, cfg->max_running);
    if (cv_tok_n_vocab(tok) > hp->n_vocab)
        return cv_errorf(err, CV_EFORMAT, "engine: tokenizer has %d tokens, the model's output %d",
                         cv_tok_n_vocab(tok), hp->n_vocab);

    cv_engine *e = calloc(1, sizeof *e);
    if (!e) return cv_errorf(err, CV_ENOMEM, "engine: out of memory");
    e->tp = tp;
    e->tok = tok;
    e->cfg = *cfg;
    e->n_vocab = hp->n_vocab;
    /* Unset: the training context, capped so that a default KV budget holds a few full
     * sequences of a long-context model (32k positions each would take gigabytes). */
    if (e->cfg.n_ctx <= 0) e->cfg.n_ctx = hp->n_ctx_train < CV_ENGINE_DEFAULT_CTX ? hp->n_ctx_train : CV_ENGINE_DEFAULT_CTX;
    if (e->cfg.n_ctx > hp->n_ctx_train) e->cfg.n_ctx = hp->n_ctx_train;
    if (e->cfg.max_tokens_default <= 0) e->cfg.max_tokens_default = CV_ENGINE_MAX_TOKENS_DEFAULT;

    cv_kv_config kc = cv_tp_kv_config(tp, e->cfg.n_ctx, e->cfg.max_running, e->cfg.kv_type);
    kc.block_size = e->cfg.kv_block_tokens;
    kc.max_seq_len = (e->cfg.n_ctx + kc.block_size - 1) / kc.block_size * kc.block_size;
    if (e->cfg.kv_swa_full_cache) kc.window = 0;
    kc.prefix_cache = e->cfg.prefix_cache;
    kc.prefix_seed = prefix_seed(&e->cfg, hp, &kc);
    /* Memory blocks for every running sequence at n_ctx, or what the budget holds (both
     * layer groups share them: kv_cache.h). */
    const int32_t blocks_per_seq = cv_kv_blocks_for(&kc, kc.max_seq_len);
    const size_t per_block = cv_kv_block_bytes(&kc);
    int64_t want = (int64_t)blocks_per_seq * e->cfg.max_running;
    int64_t budget = e->cfg.kv_bytes ? (int64_t)(e->cfg.kv_bytes / per_block) : want;
    if (budget < blocks_per_seq) {
        cv_errorf(err, CV_EINVAL,
                  "engine: a KV budget of %zu bytes holds %lld blocks of %d tokens; one "
                  "sequence of %d positions needs %d blocks (%zu bytes)",
                  e->cfg.kv_bytes, (long long)budget, kc.block_size, e->cfg.n_ctx,
                  blocks_per_seq, (size_t)blocks_per_seq * per_block);
        free(e);
        return CV_EINVAL;
    }
    kc.n_blocks = (int32_t)(budget < want ? budget : want);
    cv_status st = cv_kv_create(&kc, &e->kv, err);
    if (st != CV_OK) {
        free(e);
        return st;
    }
    int32_t R = e->cfg.max_running, B = e->cfg.max_batch_tokens;
    /* Logits rows past one per running sequence carry drafted positions. */
    e->spec_rows = e->cfg.spec ? mo->max_logits - R : 0;
    if (e->spec_rows > e->cfg.spec_max_batch * e->cfg.spec_max_draft) e->spec_rows = e->cfg.spec_max_batch * e->cfg.spec_max_draft;
    e->running = calloc((size_t)R, sizeof *e->running);
    e->free_kv = malloc(sizeof *e->free_kv * (size_t)R);
    e->b_tokens = malloc(sizeof(int32_t) * (size_t)B);
    e->b_pos = malloc(sizeof(int32_t) * (size_t)B);
    e->b_seq = malloc(sizeof(int32_t) * (size_t)B);
    e->b_want = malloc((size_t)B);
    e->b_owner = malloc(sizeof(seq *) * (size_t)B);
    e->b_chunk = malloc(sizeof(int32_t) * (size_t)R);
    e->logits = malloc(sizeof(float) * (size_t)(R + e->spec_rows) * (size_t)e->n_vocab);
    if (!e->running || !e->free_kv || !e->b_tokens || !e->b_pos || !e->b_seq || !e->b_want ||
        !e->b_owner || !e->b_chunk || !e->logits) {
        st = cv_errorf(err, CV_ENOMEM, "engine: out of memory for step buffers");
        goto err;
    }
    if (e->cfg.spec && e->cfg.draft && (st = draft_cache(e, err)) != CV_OK) goto err;
    for (int32_t i = 0; i < R; i++) e->free_kv[i] = R - 1 - i;
    e->n_free_kv = R;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->gram_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->thread, NULL, engine_loop, e) != 0) {
        pthread_mutex_destroy(&e->mu);
        pthread_mutex_destroy(&e->gram_mu);
        pthread_cond_destroy(&e->cv);
        st = cv_errorf(err, CV_ENOMEM, "engine: cannot start its thread");
        goto err;
    }
    *out = e;
    return CV_OK;
err:
    free_parts(e);
    return st;
}

void cv_engine_free(cv_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->gram_mu);
    pthread_cond_destroy(&e->cv);
    free_parts(e);
}

/* The vocabulary trie, built on first use (gram_mu held); control tokens by their text
 * for a grammar's token terminals. */
static cv_status grammar_vocab(cv_engine *e, cv_error *err) {
    if (e->gvocab) return CV_OK;
    int32_t n = cv_tok_n_vocab(e->tok);
    const char **pieces = malloc((size_t)n * sizeof *pieces), **texts = malloc((size_t)n * sizeof *texts);
    size_t *lens = malloc((size_t)n * sizeof *lens), *text_lens = malloc((size_t)n * sizeof *text_lens);
    uint8_t *ends = malloc((size_t)n);
    cv_status st = CV_OK;
    if (!pieces || !lens || !ends || !texts || !text_lens)
        st = cv_errorf(err, CV_ENOMEM, "engine: out of memory for the grammar vocabulary");
    for (int32_t i = 0; st == CV_OK && i < n; i++) {
        st = cv_tok_piece(e->tok, i, 0, &pieces[i], &lens[i], err);
        if (st == CV_OK) st = cv_tok_piece(e->tok, i, CV_TOK_RENDER_SPECIAL, &texts[i], &text_lens[i], err);
        ends[i] = (uint8_t)(cv_tok_is_eog(e->tok, i) != 0);
    }
    if (st == CV_OK) st = cv_gvocab_new(n, pieces, lens, ends, texts, text_lens, &e->gvocab, err);
    free(pieces);
    free(lens);
    free(texts);
    free(text_lens);
    free(ends);
    return st;
}

/* A matcher for grammar text: from the cached automaton of the same text when there is
 * one (not grown past ENGINE_GRAMMAR_BYTES), else compiled and its masks precomputed
 * (outside the lock, on the caller's thread) and cached in place of the least recently
 * used. */
static cv_status grammar_matcher(cv_engine *e, const char *text, cv_gmatch **out, cv_error *err) {
    pthread_mutex_lock(&e->gram_mu);
    cv_status st = grammar_vocab(e, err);
    for (int i = 0; st == CV_OK && i < ENGINE_GRAMMARS; i++) {
        struct gram_entry *g = &e->gram[i];
        if (!g->text || strcmp(g->text, text) != 0 || cv_gdfa_bytes(g->dfa) > ENGINE_GRAMMAR_BYTES) continue;
        g->used = ++e->gram_clock;
        st = cv_gmatch_start(g->dfa, out, err);
        pthread_mutex_unlock(&e->gram_mu);
        return st;
    }
    const cv_gvocab *vocab = e->gvocab; /* immutable once built */
    pthread_mutex_unlock(&e->gram_mu);
    if (st != CV_OK) return st;
    cv_grammar *g;
    cv_gdfa *d;
    char *copy = strdup(text);
    if (!copy) return cv_errorf(err, CV_ENOMEM, "engine: out of memory for a grammar");
    if ((st = cv_grammar_parse(text, strlen(text), &g, err)) != CV_OK || (st = cv_gdfa_new(g, vocab, &d, err)) != CV_OK) {
        free(copy);
        return st;
    }
    /* the masks it will need, here on the submitting thread rather than in a step */
    st = cv_gdfa_precompute(d, CV_GDFA_PRECOMPUTE_MASKS, CV_GDFA_PRECOMPUTE_SECONDS, CV_GDFA_PRECOMPUTE_CHEAP, err);
    if (st != CV_OK) {
        cv_gdfa_unref(d);
        free(copy);
        return st;
    }
    st = cv_gmatch_start(d, out, err);
    pthread_mutex_lock(&e->gram_mu);
    struct gram_entry *victim = &e->gram[0];
    for (int i = 1; i < ENGINE_GRAMMARS; i++)
        if (e->gram[i].used < victim->used) victim = &e->gram[i];
    free(victim->text);
    cv_gdfa_unref(victim->dfa);
    *victim = (struct gram_entry){copy, d, ++e->gram_clock};
    pthread_mutex_unlock(&e->gram_mu);
    return st;
}

int32_t cv_engine_n_ctx(const cv_engine *e) { return e->cfg.n_ctx; }

cv_status cv_engine_submit(cv_engine *e, const cv_engine_request *r, const cv_engine_sink *sink,
                           uint64_t *id, cv_error *err) {
    if (r->n_prompt < 1) return cv_errorf(err, CV_EINVAL, "the prompt is empty");
    if (r->n_prompt >= e->cfg.n_ctx)
        return cv_errorf(err, CV_EINVAL,
                         "the prompt is %d tokens; the context holds %d, leaving no room to "
                         "generate",
                         r->n_prompt, e->cfg.n_ctx);
    if (r->max_tokens < 0) return cv_errorf(err, CV_EINVAL, "max_tokens %d is negative", r->max_tokens);
    cv_status st = cv_sampler_params_validate(&r->sampling, err);
    if (st != CV_OK) return st;
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->n_vocab)
            return cv_errorf(err, CV_EINVAL, "prompt token %d at index %d is outside the vocabulary (%d)",
                             r->prompt[i], i, e->n_vocab);

    seq *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "engine: out of memory");
    s->max_tokens = r->max_tokens ? r->max_tokens : e->cfg.max_tokens_default;
    /* Room for the prompt and every token it may generate within the context (compared
     * first: n_prompt + max_tokens may not fit in an int32). */
    int32_t cap = s->max_tokens < e->cfg.n_ctx - r->n_prompt ? r->n_prompt + s->max_tokens : e->cfg.n_ctx;
    s->tokens = malloc(sizeof(int32_t) * (size_t)cap);
    if (!s->tokens) goto oom;
    memcpy(s->tokens, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    s->n_tokens = s->n_prompt = r->n_prompt;
    s->kv_seq = -1;
    s->ignore_eos = r->ignore_eos;
    s->sink = *sink;
    s->want_samples = r->sampling.logprobs || r->sampling.top_logprobs > 0;
    /* The sampler sees the first cv_tok_n_vocab logits of each row: a model whose
     * embedding is padded past the tokenizer (Qwen2.5) never yields an id without text. */
    if ((st = cv_sampler_new(&r->sampling, cv_tok_n_vocab(e->tok), &s->sampler, err)) != CV_OK) goto err;
    if ((st = cv_sampler_accept(s->sampler, r->prompt, (size_t)r->n_prompt, err)) != CV_OK) goto err;
    if (r->grammar && r->grammar[0] && (st = grammar_matcher(e, r->grammar, &s->gmatch, err)) != CV_OK) goto err;
    s->spec_ok = e->cfg.spec && !s->gmatch;
    s->sampled = r->sampling.temperature > 0.0f;
    s->shadow = -1;
    if (s->spec_ok && e->draft && r->sampling.temperature > 0.0f &&
        !(s->q = malloc(sizeof(float) * (size_t)e->cfg.spec_max_draft * (size_t)cv_tok_n_vocab(e->tok))))
        goto oom;
    if ((st = cv_tok_stream_new(e->tok, r->render_special ? CV_TOK_RENDER_SPECIAL : 0, &s->detok, err)) != CV_OK) goto err;
    if ((st = cv_stop_new(r->stop, (size_t)r->n_stop, &s->stop, err)) != CV_OK) goto err;
    if (r->n_stop > 0) {
        s->stop_strs = calloc((size_t)r->n_stop, sizeof *s->stop_strs);
        if (!s->stop_strs) goto oom;
        for (; s->n_stop < r->n_stop; s->n_stop++)
            if (!(s->stop_strs[s->n_stop] = strdup(r->stop[s->n_stop]))) goto oom;
    }
    atomic_init(&s->cancelled, 0);
    s->t_submit = cv_seconds();

    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        st = cv_errorf(err, CV_EUNAVAILABLE, "the engine is shutting down");
        goto err;
    }
    int32_t free_slots = e->cfg.max_running - e->n_running;
    if (e->n_waiting - free_slots >= e->cfg.max_waiting) {
        int32_t running = e->n_running, waiting = e->n_waiting;
        pthread_mutex_unlock(&e->mu);
        st = cv_errorf(err, CV_EBUSY,
                       "server busy: %d requests running (max_running %d) and %d waiting "
                       "(max_waiting %d)",
                       running, e->cfg.max_running, waiting, e->cfg.max_waiting);
        goto err;
    }
    s->id = ++e->next_id;
    wait_push(e, s, 0);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (id) *id = s->id;
    return CV_OK;
oom:
    st = cv_errorf(err, CV_ENOMEM, "engine: out of memory");
err:
    seq_free(s);
    return st;
}

void cv_engine_cancel(cv_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    for (int32_t i = 0; i < e->cfg.max_running; i++)
        if (e->running[i] && e->running[i]->id == id) atomic_store(&e->running[i]->cancelled, 1);
    for (seq *s = e->wait_head; s; s = s->next)
        if (s->id == id) atomic_store(&s->cancelled, 1);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void cv_engine_get_stats(cv_engine *e, cv_engine_stats *st) {
    pthread_mutex_lock(&e->mu);
    *st = e->stats;
    st->running = e->n_running;
    st->waiting = e->n_waiting;
    st->kv_blocks_total = cv_kv_config_of(e->kv)->n_blocks;
    st->kv_blocks_used = st->kv_blocks_total - cv_kv_free_blocks(e->kv);
    st->prefix_blocks = cv_kv_cached_blocks(e->kv);
    st->prefix_evictions = cv_kv_evictions(e->kv);
    st->prefix_cache = cv_kv_config_of(e->kv)->prefix_cache;
    pthread_mutex_unlock(&e->mu);
}
