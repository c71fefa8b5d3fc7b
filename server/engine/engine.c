#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"
#include "kv_cache.h"
#include "stop.h"
#include "timing.h"

/* Grammar automata kept per engine, and the size past which one is rebuilt for new
 * requests (a grammar with unbounded nesting keeps growing its tables). */
#define ENGINE_GRAMMARS 16
#define ENGINE_GRAMMAR_BYTES ((size_t)64 << 20)

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
    float *logits;          /* [max_running][n_vocab] */

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
}

static void seq_free(seq *s) {
    if (!s) return;
    cv_sampler_free(s->sampler);
    cv_gmatch_free(s->gmatch);
    cv_tok_stream_free(s->detok);
    cv_stop_free(s->stop);
    for (int32_t i = 0; i < s->n_stop; i++) free(s->stop_strs[i]);
    free(s->stop_strs);
    free(s->tokens);
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

/* ---- the step ---- */

/* Frees the youngest running sequence's blocks and queues it first for recompute. */
static void preempt_youngest(cv_engine *e) {
    int32_t victim = -1;
    for (int32_t i = 0; i < e->cfg.max_running; i++) {
        seq *s = e->running[i];
        if (s && (victim < 0 || s->admitted > e->running[victim]->admitted)) victim = i;
    }
    seq *s = e->running[victim];
    slot_release(e, victim);
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
            int32_t chunk = s->n_tokens - s->n_fed;
            if (chunk > budget) chunk = budget;
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
            e->b_tokens[rows] = s->tokens[p];
            e->b_pos[rows] = p;
            e->b_seq[rows] = s->kv_seq;
            e->b_want[rows] = (p == s->n_tokens - 1);
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
        int32_t rows = stopping ? 0 : plan_batch_locked(e);
        pthread_mutex_unlock(&e->mu);

        for (seq *s = cancelled, *nx; s; s = nx) {
            nx = s->next;
            end(s, CV_FINISH_CANCELLED, NULL, NULL);
            finish(s);
            seq_free(s);
        }
        if (stopping) break;
        if (rows == 0) continue;

        cv_batch b = {rows, e->b_tokens, e->b_pos, e->b_seq, e->b_want};
        cv_error err = {0};
        cv_status st = cv_tp_forward(e->tp, e->kv, &b, e->logits, &err);

        pthread_mutex_lock(&e->mu);
        e->stats.steps++;
        e->stats.last_batch_rows = rows;
        for (int32_t i = 0; i < e->cfg.max_running && st == CV_OK; i++)
            if (e->running[i] && e->b_chunk[i])
                cv_kv_publish(e->kv, e->running[i]->kv_seq, e->running[i]->tokens,
                              e->running[i]->n_fed + e->b_chunk[i]);
        pthread_mutex_unlock(&e->mu);

        int32_t out_row = 0;
        for (int32_t r = 0; r < rows; r++) {
            seq *s = e->b_owner[r];
            s->n_fed++;
            if (!e->b_want[r]) continue;
            int done;
            if (st != CV_OK) {
                end(s, CV_FINISH_ERROR, NULL, err.msg);
                done = 1;
            } else {
                cv_sample smp;
                done = sample(s, e->logits + (size_t)out_row * e->n_vocab, &smp);
                out_row++;
                if (!done) {
                    if (s->t_first_token == 0) s->t_first_token = cv_seconds();
                    s->tokens[s->n_tokens++] = smp.token;
                    s->n_generated++;
                    done = on_token(e, s, &smp);
                }
            }
            if (done) {
                pthread_mutex_lock(&e->mu);
                for (int32_t i = 0; i < e->cfg.max_running; i++)
                    if (e->running[i] == s) slot_release(e, i);
                e->stats.tokens_generated += (uint64_t)s->n_generated;
                pthread_mutex_unlock(&e->mu);
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

cv_status cv_engine_new(cv_tp *tp, const cv_tok *tok, const cv_engine_config *cfg,
                        cv_engine **out, cv_error *err) {
    const cv_model *m = cv_tp_model(tp);
    const cv_model_opts *mo = cv_model_options(m);
    const cv_hparams *hp = cv_model_hparams(m);
    if (cfg->max_running < 1 || cfg->max_batch_tokens < 1 || cfg->kv_block_tokens < 1 ||
        cfg->max_waiting < 0)
        return cv_errorf(err, CV_EINVAL, "engine: max_running, max_batch_tokens and "
                         "kv_block_tokens must be at least 1");
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
    e->running = calloc((size_t)R, sizeof *e->running);
    e->free_kv = malloc(sizeof *e->free_kv * (size_t)R);
    e->b_tokens = malloc(sizeof(int32_t) * (size_t)B);
    e->b_pos = malloc(sizeof(int32_t) * (size_t)B);
    e->b_seq = malloc(sizeof(int32_t) * (size_t)B);
    e->b_want = malloc((size_t)B);
    e->b_owner = malloc(sizeof(seq *) * (size_t)B);
    e->b_chunk = malloc(sizeof(int32_t) * (size_t)R);
    e->logits = malloc(sizeof(float) * (size_t)R * (size_t)e->n_vocab);
    if (!e->running || !e->free_kv || !e->b_tokens || !e->b_pos || !e->b_seq || !e->b_want ||
        !e->b_owner || !e->b_chunk || !e->logits) {
        st = cv_errorf(err, CV_ENOMEM, "engine: out of memory for step buffers");
        goto err;
    }
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
 * one (not grown past ENGINE_GRAMMAR_BYTES), else compiled (outside the lock) and
 * cached in place of the least recently used. */
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
