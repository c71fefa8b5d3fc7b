#include "slot.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

void cv_slot_default_version(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    /* Only the extension goes: "tinyllama-1.1b-q4_0.gguf" is version "tinyllama-1.1b-q4_0". */
    if (n > 5 && strcmp(b + n - 5, ".gguf") == 0) n -= 5;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

typedef struct warmup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    cv_finish reason;
    char error[sizeof(((cv_error *)0)->msg)];
} warmup;

static void warm_chunk(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n,
                       const cv_sample *samples) {
    (void)ctx, (void)text, (void)len, (void)ids, (void)n, (void)samples;
}

static void warm_final(void *ctx, const cv_engine_final *f) {
    warmup *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->reason = f->reason;
    if (f->error) snprintf(w->error, sizeof w->error, "%s", f->error);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One short generation before the slot takes traffic: it pages the weights in, starts
 * the thread pool and proves the model runs, so the first client sees neither the cost
 * nor a broken file. */
static cv_status warm_up(cv_slot *s, cv_error *err) {
    int32_t prompt[2] = {cv_tok_bos(s->tok) >= 0 ? cv_tok_bos(s->tok) : 0, 0};
    cv_engine_request r = {.prompt = prompt, .n_prompt = 2, .max_tokens = 2, .ignore_eos = 1};
    cv_sampler_params_off(&r.sampling);
    warmup w = {.reason = CV_FINISH_ERROR};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    cv_engine_sink sink = {warm_chunk, warm_final, &w};
    cv_status st = cv_engine_submit(s->engine, &r, &sink, NULL, err);
    if (st == CV_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        if (w.reason != CV_FINISH_LENGTH)
            st = cv_errorf(err, CV_EINTERNAL, "warm-up generation failed: %s", w.error);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return st;
}

/* A draft model must propose the target's token ids: the same number of tokens, each
 * with the same bytes (control tokens' text included). */
static cv_status same_vocab(const cv_tok *target, const cv_tok *draft, const char *path, cv_error *err) {
    const int32_t n = cv_tok_n_vocab(target), nd = cv_tok_n_vocab(draft);
    if (n != nd)
        return cv_errorf(err, CV_EINVAL,
                         "draft model %s has %d tokens, the model %d: a draft model must share the model's vocabulary",
                         path, nd, n);
    for (int32_t i = 0; i < n; i++) {
        const char *a, *b;
        size_t la, lb;
        cv_status st;
        if ((st = cv_tok_piece(target, i, CV_TOK_RENDER_SPECIAL, &a, &la, err)) != CV_OK ||
            (st = cv_tok_piece(draft, i, CV_TOK_RENDER_SPECIAL, &b, &lb, err)) != CV_OK)
            return st;
        if (la != lb || memcmp(a, b, la) != 0)
            return cv_errorf(err, CV_EINVAL,
                             "draft model %s: token %d is \"%.*s\" there and \"%.*s\" in the model: a draft model "
                             "must share the model's vocabulary",
                             path, i, (int)(lb < 40 ? lb : 40), b, (int)(la < 40 ? la : 40), a);
    }
    if (cv_tok_eos(target) != cv_tok_eos(draft) || cv_tok_bos(target) != cv_tok_bos(draft))
        return cv_errorf(err, CV_EINVAL, "draft model %s: its BOS/EOS ids (%d/%d) are not the model's (%d/%d)", path,
                         cv_tok_bos(draft), cv_tok_eos(draft), cv_tok_bos(target), cv_tok_eos(target));
    return CV_OK;
}

/* Opens the draft model, checks its vocabulary and loads it for the engine's drafts. */
static cv_status load_draft(cv_slot *s, const cv_slot_options *opt, cv_engine_config *ec, cv_error *err) {
    cv_tok *dtok = NULL;
    cv_status st;
    if ((st = cv_gguf_open(opt->draft_model, &s->draft_gguf, err)) != CV_OK ||
        (st = cv_tok_load(s->draft_gguf, &dtok, err)) != CV_OK) {
        cv_error_wrap(err, "draft model %s", opt->draft_model);
        goto err;
    }
    if ((st = same_vocab(s->tok, dtok, opt->draft_model, err)) != CV_OK) goto err;
    cv_tp_config tc = {.device = opt->device, .tp = 1, .threads = opt->threads};
    int32_t logits = ec->spec_max_batch < ec->max_running ? ec->spec_max_batch : ec->max_running;
    if (logits > ec->max_batch_tokens) logits = ec->max_batch_tokens;
    cv_model_opts mo = {.max_batch = ec->max_batch_tokens, .max_logits = logits};
    if ((st = cv_tp_load(&tc, s->draft_gguf, &mo, &s->draft_tp, err)) != CV_OK) {
        cv_error_wrap(err, "draft model %s", opt->draft_model);
        goto err;
    }
    ec->draft = s->draft_tp;
err:
    cv_tok_free(dtok);
    return st;
}

cv_status cv_slot_load(const char *path, const char *version, const cv_slot_options *opt,
                       cv_stats *stats, cv_slot **out, cv_error *err) {
    cv_slot *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "loading %s: out of memory", path);
    cv_status st;
    snprintf(s->path, sizeof s->path, "%s", path);
    s->stats = stats;
    if (version && *version) snprintf(s->version, sizeof s->version, "%s", version);
    else cv_slot_default_version(path, s->version, sizeof s->version);

    if ((st = cv_gguf_open(path, &s->gguf, err)) != CV_OK) goto err;
    cv_str name = cv_gguf_get_str(s->gguf, "general.name");
    if (name.ptr && name.len)
        snprintf(s->name, sizeof s->name, "%.*s", (int)(name.len < 127 ? name.len : 127), name.ptr);
    else cv_slot_default_version(path, s->name, sizeof s->name);
    if ((st = cv_tok_load(s->gguf, &s->tok, err)) != CV_OK) goto err;
    /* A model without a usable template still serves Generate; Chat then needs the
     * request to name a built-in one. */
    cv_error ce = {0};
    if (cv_chat_format_load(s->gguf, s->tok, &s->chat, s->chat_error, sizeof s->chat_error, &ce) != CV_OK) {
        if (ce.code == CV_ENOMEM) {
            st = cv_errorf(err, CV_ENOMEM, "%s", ce.msg);
            goto err;
        }
        memcpy(s->chat_error, ce.msg, sizeof s->chat_error);
    }
    if (s->chat_error[0]) fprintf(stderr, "corvid: %s: %s\n", s->version, s->chat_error);
    cv_tp_config tc = {.device = opt->device, .tp = opt->tp, .threads = opt->threads};
    cv_model_opts mo = {.max_batch = opt->engine.max_batch_tokens,
                        .max_logits = cv_engine_logits_rows(&opt->engine)};
    if ((st = cv_tp_load(&tc, s->gguf, &mo, &s->tp, err)) != CV_OK) goto err;
    /* Cached prefixes are named with the version and the file (kv_cache.h). */
    cv_engine_config ec = opt->engine;
    ec.prefix_salt = cv_bpool_hash_bytes(cv_bpool_hash_bytes(ec.prefix_salt, s->version, strlen(s->version)),
                                         s->path, strlen(s->path));
    if (ec.spec && opt->draft_model[0] && (st = load_draft(s, opt, &ec, err)) != CV_OK) goto err;
    if ((st = cv_engine_new(s->tp, s->tok, &ec, &s->engine, err)) != CV_OK) goto err;
    if ((st = warm_up(s, err)) != CV_OK) goto err;
    *out = s;
    return CV_OK;
err:
    cv_error_wrap(err, "loading %s", path);
    cv_slot_free(s);
    return st;
}

void cv_slot_stop(cv_slot *s) {
    if (!s) return;
    cv_engine_free(s->engine);
    s->engine = NULL;
}

void cv_slot_free(cv_slot *s) {
    if (!s) return;
    cv_slot_stop(s);
    cv_tp_free(s->tp);
    cv_tp_free(s->draft_tp);
    cv_gguf_close(s->draft_gguf);
    cv_chat_format_free(s->chat);
    cv_tok_free(s->tok);
    cv_gguf_close(s->gguf);
    free(s);
}
