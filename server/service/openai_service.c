#include "openai_service.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "infer_core.h"
#include "openai_request.h"
#include "rag_request.h"
#include "request_pool.h"
#include "tool_choice.h"
#include "utf8.h"

struct cv_oai_service {
    cv_router *router;
    cv_rag_runner *rag;     /* retrieval for corvid.rag requests; no service: refused */
    cv_request_pool *pool;  /* NULL: the work runs on the HTTP thread */
    cv_rc *rc;              /* the response cache, or NULL */
    size_t max_prompt_bytes;
    long started;  /* "created" of the models: when this server started */
};

/* ---- one completion request ---- */

typedef struct job {
    cv_oai_service *svc;
    cv_slot *slot;
    cv_engine *engine;
    uint64_t engine_id;
    cv_hs_req *req;
    pthread_mutex_t mu;
    cv_core_out out;
    int client_gone;
    cv_oai_kind kind;
    int stream, include_usage;
    int sent_role;        /* chat streams: the first delta carries the role */
    int ended;            /* the stream's last event was formatted */
    size_t text_offset;   /* completions logprobs: bytes of text before the next token */
    long created;
    char id[48];          /* chatcmpl-... / cmpl-... */
    char request_id[128];
    cv_oai_request oreq;  /* the parsed body (its texts live until the job ends) */
    cv_rag_msg *rag_msgs; /* a RAG chat's messages for the rag layer */
    const cv_chat_format *fmt; /* chat: the template */
    cv_tool_plan tools;   /* chat: its tools, how calls are parsed */
    json_t *citations;    /* RAG: the kept passages, in citation order; NULL without */
    cv_core_trace trace;
} job;

static void job_free(job *j) {
    pthread_mutex_destroy(&j->mu);
    cv_core_out_free(&j->out);
    cv_oai_request_free(&j->oreq);
    cv_tool_plan_free(&j->tools);
    free(j->rag_msgs);
    json_decref(j->citations);
    free(j);
}

static const char *finish_name(cv_finish f) {
    switch (f) {
    case CV_FINISH_STOP: return "stop";
    case CV_FINISH_LENGTH: return "length";
    case CV_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

/* The answer's finish_reason: tool_calls when it stopped after calling tools. */
static const char *finish_of(const cv_core_out *o) {
    return cv_core_out_called(o) ? "tool_calls" : finish_name(o->final.reason);
}

/* The status the request ends with (for stats and the log). */
static cv_rpc_code final_code(const cv_core_out *o) {
    switch (o->final.reason) {
    case CV_FINISH_ERROR: return CV_RPC_INTERNAL;
    case CV_FINISH_CANCELLED: return CV_RPC_CANCELLED;
    default: return o->overflow ? CV_RPC_RESOURCE_EXHAUSTED : CV_RPC_OK;
    }
}

/* Once per request, when its answer is complete. */
static void record(job *j) {
    const cv_engine_final *f = &j->out.final;
    cv_rpc_code code = final_code(&j->out);
    cv_core_record(j->slot->stats, CV_CORE_HTTP, code, &j->out);
    const char *error = code == CV_RPC_RESOURCE_EXHAUSTED ? "client reads too slowly: more than 1 MiB pending"
                                                          : j->out.error;
    cv_core_log_request(CV_CORE_HTTP, j->request_id, j->trace.trace_id, j->slot->version, code, f, error);
    cv_core_trace_end(&j->trace, j->request_id, j->slot->version, code, f, error);
}

/* A token's text as JSON wants it (valid UTF-8: a piece that cuts a character gets
 * U+FFFD) and its raw bytes. */
static json_t *token_text(const cv_tok *tok, int32_t id, json_t **bytes) {
    const char *p = "";
    size_t n = 0;
    if (cv_tok_piece(tok, id, CV_TOK_RENDER_SPECIAL, &p, &n, NULL) != CV_OK) n = 0;
    size_t m;
    char *fixed = cv_utf8_repaired(p, n, &m);
    json_t *s = fixed ? json_stringn(fixed, m) : NULL;
    free(fixed);
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(*bytes, json_integer((unsigned char)p[i]));
    }
    return s ? s : json_string("");
}

/* Chat logprobs: {"content":[{"token","logprob","bytes","top_logprobs":[...]}]}. */
static json_t *chat_logprobs(const cv_tok *tok, const cv_sample *smp, size_t n) {
    json_t *content = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *b, *tops = json_array();
        json_t *t = token_text(tok, smp[i].token, &b);
        for (int32_t k = 0; k < smp[i].n_top; k++) {
            json_t *tb, *tt = token_text(tok, smp[i].top[k].token, &tb);
            json_array_append_new(tops, json_pack("{s:o,s:f,s:o}", "token", tt, "logprob",
                                                  (double)smp[i].top[k].logprob, "bytes", tb));
        }
        json_array_append_new(content, json_pack("{s:o,s:f,s:o,s:o}", "token", t, "logprob", (double)smp[i].logprob,
                                                 "bytes", b, "top_logprobs", tops));
    }
    return json_pack("{s:o}", "content", content);
}

/* Completions logprobs: {"tokens","token_logprobs","top_logprobs","text_offset"}. */
static json_t *completion_logprobs(const cv_tok *tok, const cv_sample *smp, size_t n, size_t *text_offset) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *t = token_text(tok, smp[i].token, NULL);
        json_array_append_new(offs, json_integer((json_int_t)*text_offset));
        *text_offset += strlen(json_string_value(t));
        json_array_append_new(tokens, t);
        json_array_append_new(lps, json_real(smp[i].logprob));
        json_t *top = json_object();
        for (int32_t k = 0; k < smp[i].n_top; k++) {
            json_t *tt = token_text(tok, smp[i].top[k].token, NULL);
            json_object_set_new(top, json_string_value(tt), json_real(smp[i].top[k].logprob));
            json_decref(tt);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *usage_json(const cv_core_out *o) {
    const cv_engine_final *f = &o->final;
    json_t *u = json_pack("{s:i,s:i,s:i}", "prompt_tokens", (json_int_t)f->prompt_tokens, "completion_tokens",
                          (json_int_t)f->completion_tokens, "total_tokens",
                          (json_int_t)f->prompt_tokens + f->completion_tokens);
    if (o->cached) json_object_set_new(u, "cached", json_true());
    return u;
}

/* The envelope every object of a request shares. */
static json_t *envelope(const job *j, const char *object) {
    return json_pack("{s:s,s:s,s:i,s:s,s:n}", "id", j->id, "object", object, "created", (json_int_t)j->created,
                     "model", j->slot->version, "system_fingerprint");
}

/* ---- streaming: SSE events formatted on the HTTP thread from what is pending ---- */

static int emit(cv_hs_buf *b, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    int rc = !s || cv_hs_buf_append(b, "data: ", 6) || cv_hs_buf_append(b, s, strlen(s)) ||
             cv_hs_buf_append(b, "\n\n", 2);
    free(s);
    return rc ? -1 : 0;
}

/* One chunk object: chat delta or completion text, with logprobs and finish_reason. */
static json_t *stream_chunk(job *j, json_t *delta_or_text, json_t *logprobs, const char *finish) {
    json_t *choice = json_pack("{s:i,s:o,s:o}", "index", 0, "logprobs", logprobs ? logprobs : json_null(),
                               "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(choice, j->kind == CV_OAI_CHAT ? "delta" : "text", delta_or_text);
    json_t *o = envelope(j, j->kind == CV_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (j->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

static json_t *text_value(job *j, const char *text, size_t len, int role) {
    if (j->kind == CV_OAI_COMPLETION) return json_stringn(text, len);
    json_t *d = json_pack("{s:s%}", "content", text, len);
    if (role) json_object_set_new(d, "role", json_string("assistant"));
    return d;
}

/* A call's new deltas: id, type and name with empty arguments first, then what came
 * of its arguments since the last event. */
static int emit_call(job *j, cv_hs_buf *b, cv_core_call *c) {
    int fail = 0;
    if (!c->head_sent) {
        json_t *head = json_pack("{s:i,s:s,s:s,s:{s:s,s:s}}", "index", (json_int_t)c->index, "id", c->id, "type",
                                 "function", "function", "name", c->name, "arguments", "");
        fail |= emit(b, stream_chunk(j, json_pack("{s:[o]}", "tool_calls", head), NULL, NULL));
    }
    if (c->sent < c->args_len) {
        json_t *piece = json_pack("{s:i,s:{s:s%}}", "index", (json_int_t)c->index, "function", "arguments",
                                  c->args + c->sent, c->args_len - c->sent);
        fail |= emit(b, stream_chunk(j, json_pack("{s:[o]}", "tool_calls", piece), NULL, NULL));
    }
    cv_core_call_sent(c);
    return fail;
}

static cv_hs_produce stream_produce(void *ctx, cv_hs_buf *b) {
    job *j = ctx;
    cv_hs_produce p = CV_HS_NOTHING;
    int fail = 0;
    pthread_mutex_lock(&j->mu);
    cv_core_out *o = &j->out;
    const cv_tok *tok = j->slot->tok;
    if (j->ended) goto out;
    if (o->overflow) {
        /* The client does not read: cut it off once the engine let go. */
        if (o->have_final) {
            record(j);
            j->ended = 1;
            p = CV_HS_ABORT;
        }
        goto out;
    }
    if (j->citations && !j->sent_role) {
        json_t *c = envelope(j, j->kind == CV_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(c, "choices", json_array());
        json_object_set(c, "citations", j->citations);
        fail |= emit(b, c);
        p = CV_HS_DATA;
    }
    if (!j->sent_role) {
        if (j->kind == CV_OAI_CHAT) fail |= emit(b, stream_chunk(j, text_value(j, "", 0, 1), NULL, NULL));
        j->sent_role = 1;
        p = CV_HS_DATA;
    }
    if (o->reasoning_len) {
        fail |= emit(b, stream_chunk(j, json_pack("{s:s%}", "reasoning_content", o->reasoning, o->reasoning_len),
                                     NULL, NULL));
        p = CV_HS_DATA;
    }
    if (o->text_len || (o->n_ids && o->want_samples)) {
        json_t *lp = NULL;
        if (o->want_samples && o->n_ids)
            lp = j->kind == CV_OAI_CHAT ? chat_logprobs(tok, o->samples, o->n_ids)
                                        : completion_logprobs(tok, o->samples, o->n_ids, &j->text_offset);
        fail |= emit(b, stream_chunk(j, text_value(j, o->text ? o->text : "", o->text_len, 0), lp, NULL));
        p = CV_HS_DATA;
    }
    for (size_t i = 0; i < o->n_calls; i++) {
        if (!cv_core_call_pending(&o->calls[i])) continue;
        fail |= emit_call(j, b, &o->calls[i]);
        p = CV_HS_DATA;
    }
    cv_core_out_consumed(o);
    if (o->have_final) {
        if (o->final.reason == CV_FINISH_STOP || o->final.reason == CV_FINISH_LENGTH) {
            json_t *last = stream_chunk(j, j->kind == CV_OAI_CHAT ? json_object() : json_string(""), NULL,
                                        finish_of(o));
            if (o->cached) json_object_set_new(last, "cached", json_true());
            fail |= emit(b, last);
            if (j->include_usage) {
                json_t *u = envelope(j, j->kind == CV_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
                json_object_set_new(u, "choices", json_array());
                json_object_set_new(u, "usage", usage_json(o));
                fail |= emit(b, u);
            }
            fail |= cv_hs_buf_append(b, "data: [DONE]\n\n", 14);
        } else {
            /* Mid-stream failure (or cancelled by a shutdown): an error event ends it. */
            const char *msg = o->final.reason == CV_FINISH_CANCELLED ? "generation cancelled" : o->error;
            char *e = cv_hs_error_json(500, msg[0] ? msg : "generation failed", NULL, finish_name(o->final.reason));
            fail |= !e || cv_hs_buf_append(b, "data: ", 6) || cv_hs_buf_append(b, e, strlen(e)) ||
                    cv_hs_buf_append(b, "\n\n", 2);
            free(e);
        }
        record(j);
        j->ended = 1;
        p = CV_HS_END;
    }
    if (fail) p = CV_HS_ABORT; /* out of memory formatting: the stream cannot go on */
out:
    pthread_mutex_unlock(&j->mu);
    return p;
}

static void job_cancel(void *ctx) {
    job *j = ctx;
    cv_core_client_gone(&j->mu, &j->client_gone, j->engine, &j->engine_id);
}

static void job_done(void *ctx) {
    job *j = ctx;
    /* Still open: the client went away before the answer was complete. */
    cv_core_trace_end(&j->trace, j->request_id, j->slot ? j->slot->version : "",
                      j->client_gone ? CV_RPC_CANCELLED : CV_RPC_INVALID_ARGUMENT, NULL,
                      j->client_gone ? "client went away" : "refused before routing");
    if (j->slot) cv_router_release(j->svc->router, j->slot);
    job_free(j);
}

static const cv_hs_stream_ops job_ops = {stream_produce, job_cancel, job_done};

/* ---- the engine's sink ---- */

static void sink_chunk(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                       const cv_sample *samples) {
    job *j = ctx;
    cv_core_out_token(&j->out, j->slot->stats, CV_CORE_HTTP, n_ids);
    pthread_mutex_lock(&j->mu);
    int overflow = cv_core_out_engine_chunk(&j->out, text, len, ids, n_ids, samples);
    pthread_mutex_unlock(&j->mu);
    if (overflow) cv_engine_cancel(j->engine, j->engine_id);
    if (j->stream) cv_hs_wake(j->req);
}

/* The whole answer of a request without stream (engine thread, at its final). */
static void reply_whole(job *j) {
    cv_core_out *o = &j->out;
    if (o->final.reason == CV_FINISH_ERROR || o->final.reason == CV_FINISH_CANCELLED || o->overflow) {
        int status = o->overflow ? 500 : o->final.reason == CV_FINISH_CANCELLED ? 499 : 500;
        cv_hs_reply_error(j->req, status,
                          o->overflow ? "the answer outgrew the 1 MiB a request may hold"
                                      : o->error[0] ? o->error : "generation cancelled",
                          NULL, finish_name(o->final.reason), 0);
        return;
    }
    const cv_tok *tok = j->slot->tok;
    json_t *lp = NULL;
    size_t off = 0;
    if (o->want_samples)
        lp = j->kind == CV_OAI_CHAT ? chat_logprobs(tok, o->samples, o->n_ids)
                                    : completion_logprobs(tok, o->samples, o->n_ids, &off);
    json_t *choice = json_pack("{s:i,s:o,s:s}", "index", 0, "logprobs", lp ? lp : json_null(), "finish_reason",
                               finish_of(o));
    const char *text = o->text ? o->text : "";
    if (j->kind == CV_OAI_CHAT) {
        json_t *m = json_pack("{s:s,s:s%}", "role", "assistant", "content", text, o->text_len);
        if (o->n_calls) {
            json_t *calls = json_array();
            for (size_t i = 0; i < o->n_calls; i++)
                json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", o->calls[i].id, "type",
                                                       "function", "function", "name", o->calls[i].name,
                                                       "arguments", o->calls[i].args));
            json_object_set_new(m, "tool_calls", calls);
            if (!o->text_len) json_object_set_new(m, "content", json_null());
        }
        if (o->reasoning_len)
            json_object_set_new(m, "reasoning_content", json_stringn(o->reasoning, o->reasoning_len));
        json_object_set_new(choice, "message", m);
    }
    else
        json_object_set_new(choice, "text", json_stringn(text, o->text_len));
    json_t *r = envelope(j, j->kind == CV_OAI_CHAT ? "chat.completion" : "text_completion");
    json_object_set_new(r, "choices", json_pack("[o]", choice));
    json_object_set_new(r, "usage", usage_json(o));
    if (j->citations) json_object_set(r, "citations", j->citations);
    char *body = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (body) cv_hs_reply(j->req, 200, "application/json", body, strlen(body), 0);
    else cv_hs_reply_error(j->req, 500, "out of memory building the answer", NULL, NULL, 0);
}

static void sink_final(void *ctx, const cv_engine_final *f) {
    job *j = ctx;
    pthread_mutex_lock(&j->mu);
    cv_core_out_final(&j->out, f);
    pthread_mutex_unlock(&j->mu);
    if (j->stream) {
        cv_hs_wake(j->req);
    } else {
        /* Nothing else reads the output of a held request: no lock needed from here. */
        record(j);
        reply_whole(j);
    }
    cv_hs_release(j->req); /* the engine never calls us again */
}

/* ---- requests ---- */

/* The slot for the request's model: a version pins it, a model name is routed. */
static cv_rpc_code pick_slot(cv_oai_service *svc, const cv_oai_request *r, const char *rid, cv_slot **slot, char *msg,
                             size_t cap) {
    if (r->model_version[0]) return cv_core_acquire(svc->router, r->model, r->model_version, rid, slot, msg, cap);
    if (r->model[0]) {
        cv_rpc_code code = cv_core_acquire(svc->router, NULL, r->model, rid, slot, msg, cap);
        if (code != CV_RPC_NOT_FOUND) return code;
    }
    return cv_core_acquire(svc->router, r->model, NULL, rid, slot, msg, cap);
}

static void refuse(job *j, cv_slot *slot, cv_rpc_code code, const char *msg, const char *param) {
    int status = cv_core_http_status(code);
    cv_core_trace_end(&j->trace, j->request_id, slot ? slot->version : "", code, NULL, msg);
    if (slot) {
        cv_core_record(slot->stats, CV_CORE_HTTP, code, NULL);
        cv_core_log_request(CV_CORE_HTTP, j->request_id, j->trace.trace_id, slot->version, code, NULL, msg);
        cv_router_release(j->svc->router, slot);
    }
    cv_hs_req *req = j->req;
    const char *ecode = code == CV_RPC_NOT_FOUND ? "model_not_found"
                        : code == CV_RPC_RESOURCE_EXHAUSTED ? "queue_full"
                        : code == CV_RPC_UNAVAILABLE ? "unavailable" : NULL;
    cv_hs_reply_error(req, status, msg, param, ecode, code == CV_RPC_RESOURCE_EXHAUSTED ? 1 : 0);
}

static void fill_engine_request(const cv_oai_request *r, cv_engine_request *er) {
    cv_sampler_params_off(&er->sampling);
    cv_sampler_params *sp = &er->sampling;
    sp->temperature = r->temperature;
    sp->top_p = r->top_p;
    sp->top_k = r->top_k;
    sp->min_p = r->min_p;
    sp->repeat_penalty = r->repetition_penalty;
    sp->presence_penalty = r->presence_penalty;
    sp->frequency_penalty = r->frequency_penalty;
    sp->seed = r->has_seed ? r->seed : cv_core_random_seed();
    sp->logprobs = r->logprobs != 0;
    sp->top_logprobs = r->top_logprobs;
    er->max_tokens = r->max_tokens;
    er->stop = r->stop;
    er->n_stop = (int32_t)r->n_stop;
    er->ignore_eos = r->ignore_eos;
    er->grammar = r->grammar;
}

/* The prompt ids to the engine (extra_stop: one more stop string, or NULL; rag: the
 * retrieval that built them, or NULL), unless the response cache answers them; the
 * refusal when the engine does not take it. Ends the worker's (or retrieval's) hold
 * either way. */
static void submit(job *j, const int32_t *ids, size_t n_ids, const char *extra_stop, const cv_rag_outcome *rag) {
    cv_oai_request *r = &j->oreq;
    cv_slot *slot = j->slot;
    cv_hs_req *req = j->req;
    cv_error err = {0};
    j->engine = slot->engine;
    j->stream = r->stream;
    j->include_usage = r->include_usage;
    j->created = (long)time(NULL);
    snprintf(j->id, sizeof j->id, "%s-%016llx", j->kind == CV_OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)cv_core_random_seed());
    cv_engine_request er = {.prompt = ids, .n_prompt = (int32_t)n_ids};
    fill_engine_request(r, &er);
    er.render_special = cv_tool_syntax_needs_markers(j->tools.syntax);
    if (j->tools.grammar) er.grammar = j->tools.grammar;
    const char *stops[CV_OAI_MAX_STOP + 1];
    memcpy(stops, r->stop, sizeof r->stop);
    if (extra_stop) stops[er.n_stop++] = extra_stop;
    er.stop = stops;
    j->out.want_samples = er.sampling.logprobs;
    if (j->kind == CV_OAI_CHAT && !r->reasoning_inline)
        cv_core_out_split(&j->out, cv_think_prompt_opens(slot->tok, ids, n_ids));
    if (j->tools.syntax != CV_TOOL_SYNTAX_NONE && cv_core_out_tools(&j->out, j->tools.syntax, j->tools.max_calls)) {
        j->slot = NULL;
        refuse(j, slot, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        cv_hs_release(req);
        return;
    }
    cv_engine_sink sink = {sink_chunk, sink_final, j};
    cv_core_trace_submit(&j->trace, slot->name, &er);
    cv_hs_retain(req); /* the engine's hold, which sink_final ends */
    const cv_rc_query q = {.version = slot->version, .er = &er, .explicit_seed = r->has_seed,
                           .subject = cv_hs_subject(req), .guard_passages = j->out.guard_passages,
                           .guard_line_end = j->out.guard_line_end,
                           .guard_check = j->out.guard_check, .rag = rag};
    if (cv_core_cache(j->svc->rc, &q, cv_tok_n_vocab(slot->tok), &j->mu, &j->out, &sink)) {
        /* Answered as the engine would have (sink_final ended that hold). */
        if (r->stream) cv_hs_stream_start(req, "text/event-stream", &job_ops, j);
        cv_hs_release(req);
        return;
    }
    pthread_mutex_lock(&j->mu);
    cv_status st = cv_engine_submit(j->engine, &er, &sink, &j->engine_id, &err);
    uint64_t id = j->engine_id;
    int gone = j->client_gone;
    pthread_mutex_unlock(&j->mu);
    if (st != CV_OK) {
        /* Nothing was queued: the refusal is the answer. CV_EINVAL here is the prompt
         * against the context (the sampling was checked). */
        cv_hs_release(req);
        j->ended = 1;
        j->slot = NULL;
        refuse(j, slot, cv_core_code_of(st), err.msg,
               st == CV_EINVAL ? (j->kind == CV_OAI_CHAT ? "messages" : "prompt") : NULL);
    } else {
        if (gone) cv_engine_cancel(j->engine, id);
        if (r->stream) cv_hs_stream_start(req, "text/event-stream", &job_ops, j);
    }
    cv_hs_release(req); /* this worker's hold; the last one frees the job (job_done) */
}

/* ---- corvid.rag: retrieval (rag_request.h) before the engine, as gRPC's ---- */

static size_t rag_count_tokens(void *user, const char *text, size_t len) {
    const job *j = user;
    return cv_core_count_tokens(j->slot->tok, text, len);
}

static cv_status rag_encode_prompt(void *user, const char *text, int32_t **ids, size_t *n_ids, cv_error *err) {
    const job *j = user;
    return cv_core_tokenize(j->slot->tok, text, CV_TOK_ADD_SPECIAL, ids, n_ids, err);
}

static cv_status rag_encode_chat(void *user, const cv_rag_msg *m, size_t n, int32_t **ids, size_t *n_ids,
                                 cv_error *err) {
    const job *j = user;
    /* cv_rag_msg and cv_chat_msg are the same two strings. */
    cv_chat_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs) return cv_errorf(err, CV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) msgs[i] = (cv_chat_msg){.role = m[i].role, .content = m[i].content};
    const cv_chat_opts opts = {.add_generation_prompt = true, .tools = j->tools.template_tools};
    cv_status st = cv_chat_format_encode(j->slot->tok, j->fmt, msgs, n, &opts, CV_TOK_ADD_SPECIAL, ids, n_ids, err);
    free(msgs);
    return st;
}

static json_t *citations_json(const cv_rag_outcome *o) {
    json_t *a = json_array();
    for (size_t i = 0; i < o->ctx.n_kept; i++) {
        const cv_rag_passage *p = &o->passages[o->ctx.kept[i]];
        json_array_append_new(a, json_pack("{s:i,s:s,s:s,s:s,s:s,s:f}", "index", (json_int_t)i + 1, "source",
                                           p->source ? p->source : "", "document_id", p->doc_id ? p->doc_id : "",
                                           "title", p->title ? p->title : "", "url", p->url ? p->url : "",
                                           "score", (double)p->score));
    }
    return a;
}

/* The retrieval's end, on its thread: the engine, the default answer or the refusal. */
static void rag_done(void *user, const cv_rag_result *res) {
    job *j = user;
    if (res->status != CV_OK) {
        cv_slot *slot = j->slot;
        j->slot = NULL;
        refuse(j, slot, cv_core_code_of(res->status), res->error, NULL);
        cv_hs_release(j->req);
        return;
    }
    if (res->outcome && res->outcome->ctx.n_kept) j->citations = citations_json(res->outcome);
    size_t kept = res->outcome ? res->outcome->ctx.n_kept : 0;
    if (!res->default_answer && cv_rag_service_guard(j->svc->rag->cfg.service) &&
        cv_core_out_guard(&j->out, res, j->kind != CV_OAI_CHAT && kept,
                          cv_rag_service_check_answers(j->svc->rag->cfg.service))) {
        cv_slot *slot = j->slot;
        j->slot = NULL;
        refuse(j, slot, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        cv_hs_release(j->req);
        return;
    }
    if (!res->default_answer) { /* through the guard (rag_guard.h), as gRPC's */
        submit(j, res->ids, res->n_ids, res->extra_stop, res->outcome);
        return;
    }
    /* The configured answer, without the model: one text chunk and a stop. */
    cv_engine_final f = {.reason = CV_FINISH_STOP};
    j->engine = NULL;
    j->stream = j->oreq.stream;
    j->include_usage = j->oreq.include_usage;
    j->created = (long)time(NULL);
    snprintf(j->id, sizeof j->id, "%s-%016llx", j->kind == CV_OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)cv_core_random_seed());
    pthread_mutex_lock(&j->mu);
    cv_core_out_append(&j->out, res->default_answer, strlen(res->default_answer), NULL, 0, NULL);
    pthread_mutex_unlock(&j->mu);
    if (j->stream) cv_hs_stream_start(j->req, "text/event-stream", &job_ops, j);
    cv_hs_retain(j->req); /* sink_final ends it, as after an engine run */
    sink_final(j, &f);
    cv_hs_release(j->req);
}

/* Takes the request to a retrieval thread; 0 when it went (rag_done ends the hold). */
static int rag_start(job *j) {
    cv_oai_request *r = &j->oreq;
    cv_oai_service *svc = j->svc;
    cv_error err = {0};
    if (!svc->rag || !svc->rag->cfg.service) {
        cv_slot *slot = j->slot;
        j->slot = NULL;
        refuse(j, slot, CV_RPC_FAILED_PRECONDITION,
               "corvid.rag: this server has no knowledge base or live source configured "
               "(rag_knowledge_bases, rag_sources)", "corvid.rag");
        return -1;
    }
    if (r->n_messages && !(j->rag_msgs = calloc(r->n_messages, sizeof *j->rag_msgs))) {
        cv_slot *slot = j->slot;
        j->slot = NULL;
        refuse(j, slot, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return -1;
    }
    for (size_t i = 0; i < r->n_messages; i++) j->rag_msgs[i] = (cv_rag_msg){r->messages[i].role, r->messages[i].content};
    cv_rag_request q = {
        .request_id = j->request_id,
        .trace = &j->trace.ctx,
        .prompt = j->kind == CV_OAI_COMPLETION ? r->prompt : NULL,
        .messages = j->rag_msgs,
        .n_messages = r->n_messages,
        .max_tokens = (size_t)r->max_tokens,
        .options = {.knowledge_base = r->rag_knowledge_base, .top_k = r->rag_top_k, .min_score = r->rag_min_score,
                    .sources = r->rag_sources, .n_sources = r->n_rag_sources, .policy = r->rag_policy},
        .model = {rag_count_tokens, rag_encode_prompt, rag_encode_chat, j, (size_t)cv_engine_n_ctx(j->slot->engine)},
    };
    cv_status st = cv_rag_request_start(svc->rag, &q, rag_done, j, &err);
    if (st != CV_OK) {
        cv_slot *slot = j->slot;
        j->slot = NULL;
        refuse(j, slot, cv_core_code_of(st), err.msg, "corvid.rag");
        return -1;
    }
    return 0;
}

/* The built-in templates know three roles: a tool result is the user's turn, and the
 * calls it answers are left out. */
static void builtin_roles(cv_oai_request *r) {
    for (size_t i = 0; i < r->n_messages; i++) {
        cv_chat_msg *m = &r->messages[i];
        if (strcmp(m->role, "tool") == 0) m->role = "user";
        m->tool_calls = m->tool_call_id = m->name = NULL;
    }
}

/* On a request pool worker (or the HTTP thread without a pool): parse, route, render
 * and tokenize, then submit; the request was held by start_completion. */
static void serve_completion(void *user) {
    job *j = user;
    cv_oai_service *svc = j->svc;
    cv_hs_req *req = j->req;
    cv_oai_kind kind = j->kind;
    const char *rid = j->request_id;
    size_t len;
    const char *body = cv_hs_body(req, &len);
    cv_oai_request *r = &j->oreq;
    cv_oai_error perr;
    cv_slot *slot = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char msg[512];
    cv_error err = {0};
    pthread_mutex_lock(&j->mu);
    int gone = j->client_gone;
    pthread_mutex_unlock(&j->mu);
    cv_status st = cv_oai_parse(kind, body, len, r, &perr);
    if (gone) { /* went away while queued: no work, no one to tell */
        cv_hs_reply_error(req, 499, "client went away", NULL, NULL, 0);
        goto release;
    }
    if (st != CV_OK) {
        cv_hs_reply_error(req, 400, perr.message, perr.param, "invalid_request", 0);
        goto release;
    }
    cv_rpc_code code = pick_slot(svc, r, rid, &slot, msg, sizeof msg);
    if (code != CV_RPC_OK) {
        refuse(j, NULL, code, msg, code == CV_RPC_NOT_FOUND ? "model" : NULL);
        goto release;
    }
    const char *field = kind == CV_OAI_CHAT ? "messages" : "prompt";
    size_t bytes = 0;
    for (size_t i = 0; i < r->n_messages; i++) bytes += strlen(r->messages[i].role) + strlen(r->messages[i].content);
    if (kind == CV_OAI_COMPLETION) bytes = strlen(r->prompt);
    if (cv_core_check_prompt_size(svc->max_prompt_bytes, slot, field, bytes, &err) != CV_OK) {
        refuse(j, slot, CV_RPC_INVALID_ARGUMENT, err.msg, field);
        goto release;
    }
    if (kind == CV_OAI_CHAT) {
        code = cv_core_chat_format(slot, NULL, &j->fmt, &err);
        if (code != CV_RPC_OK) {
            refuse(j, slot, code, err.msg, field);
            goto release;
        }
        if (strcmp(cv_chat_format_name(j->fmt), "jinja") != 0) builtin_roles(r);
        st = cv_tool_plan_make(j->fmt, r->tools, r->tool_choice, r->tool_function, r->parallel_tool_calls,
                               &j->tools, &err);
        if (st != CV_OK) {
            refuse(j, slot, cv_core_code_of(st), err.msg, j->tools.param[0] ? j->tools.param : NULL);
            goto release;
        }
        if (j->tools.grammar && r->grammar) {
            refuse(j, slot, CV_RPC_INVALID_ARGUMENT,
                   "response_format: a required tool call is constrained already (tool_choice)", "response_format");
            goto release;
        }
        const cv_chat_opts opts = {.add_generation_prompt = true, .tools = j->tools.template_tools};
        st = cv_chat_format_check(j->fmt, r->messages, r->n_messages, &opts, &err);
        if (st != CV_OK) {
            refuse(j, slot, cv_core_code_of(st), err.msg, field);
            goto release;
        }
    }
    j->slot = slot; /* job_done releases it from here on */
    if (r->rag) {
        if (rag_start(j) != 0) goto release;
        return; /* rag_done ends this worker's hold */
    }
    const cv_chat_opts opts = {.add_generation_prompt = true, .tools = j->tools.template_tools};
    st = kind == CV_OAI_CHAT ? cv_chat_format_encode(slot->tok, j->fmt, r->messages, r->n_messages, &opts,
                                                     CV_TOK_ADD_SPECIAL, &ids, &n_ids, &err)
                             : cv_core_tokenize(slot->tok, r->prompt, CV_TOK_ADD_SPECIAL, &ids, &n_ids, &err);
    if (st != CV_OK) {
        j->slot = NULL;
        refuse(j, slot, cv_core_code_of(st), err.msg, field);
        goto release;
    }
    submit(j, ids, n_ids, NULL, NULL);
    free(ids);
    return;
release:
    cv_hs_release(req); /* this worker's hold; the last one frees the job (job_done) */
}

/* On the HTTP thread: the request is held and its work queued on the request pool, so
 * that a large body never stalls the other connections. */
static void start_completion(cv_oai_service *svc, cv_hs_req *req, cv_oai_kind kind) {
    job *j = calloc(1, sizeof *j);
    if (!j) {
        cv_hs_reply_error(req, 429, "out of memory", NULL, "queue_full", 1);
        return;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->svc = svc;
    j->req = req;
    j->kind = kind;
    const char *hrid = cv_hs_header(req, "X-Request-Id");
    if (hrid && *hrid && strlen(hrid) < sizeof j->request_id) snprintf(j->request_id, sizeof j->request_id, "%s", hrid);
    else snprintf(j->request_id, sizeof j->request_id, "req-%016llx", (unsigned long long)cv_core_random_seed());
    cv_core_trace_begin(&j->trace, cv_hs_header(req, "traceparent"),
                        kind == CV_OAI_CHAT ? "POST /v1/chat/completions" : "POST /v1/completions", CV_CORE_HTTP,
                        kind == CV_OAI_CHAT ? "chat" : "text_completion");
    cv_hs_hold(req, &job_ops, j);
    size_t len;
    cv_hs_body(req, &len);
    cv_error err = {0};
    if (!svc->pool) {
        serve_completion(j);
    } else if (cv_request_pool_submit(svc->pool, serve_completion, j, len, &err) != CV_OK) {
        cv_hs_reply_error(req, 429, err.msg, NULL, "queue_full", 1);
        cv_hs_release(req);
    }
}

/* ---- models ---- */

static json_t *model_object(cv_oai_service *svc, const char *id, const char *kind, const cv_slot_info *in) {
    json_t *x = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "kind", kind, "model", in->name, "version", in->version,
                          "state", cv_slot_state_name(in->state), "traffic_weight", (json_int_t)in->weight,
                          "context_length", (json_int_t)in->n_ctx);
    return json_pack("{s:s,s:s,s:i,s:s,s:o}", "id", id, "object", "model", "created", (json_int_t)svc->started,
                     "owned_by", "corvid", "corvid", x);
}

/* Every served model name (routed), then every version (pinned). */
static json_t *models_list(cv_oai_service *svc, const char *only) {
    cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
    int n = cv_router_snapshot(svc->router, 1, info);
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int k = 0; k < i; k++) dup |= strcmp(info[k].name, info[i].name) == 0;
        if (!dup && info[i].name[0] && (!only || strcmp(only, info[i].name) == 0))
            json_array_append_new(data, model_object(svc, info[i].name, "model", &info[i]));
    }
    for (int i = 0; i < n; i++)
        if (!only || strcmp(only, info[i].version) == 0)
            json_array_append_new(data, model_object(svc, info[i].version, "version", &info[i]));
    return data;
}

static void reply_json(cv_hs_req *req, json_t *o) {
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body) cv_hs_reply(req, 200, "application/json", body, strlen(body), 0);
    else cv_hs_reply_error(req, 500, "out of memory", NULL, NULL, 0);
}

static void on_models(void *ctx, cv_hs_req *req) {
    reply_json(req, json_pack("{s:s,s:o}", "object", "list", "data", models_list(ctx, NULL)));
}

static void on_model(void *ctx, cv_hs_req *req) {
    const char *id = cv_hs_path(req) + strlen("/v1/models/");
    json_t *found = models_list(ctx, id);
    if (json_array_size(found) == 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "model \"%.200s\" is not served here", id);
        cv_hs_reply_error(req, 404, msg, "model", "model_not_found", 0);
        json_decref(found);
        return;
    }
    json_t *m = json_incref(json_array_get(found, 0));
    json_decref(found);
    reply_json(req, m);
}

static void on_chat(void *ctx, cv_hs_req *req) { start_completion(ctx, req, CV_OAI_CHAT); }
static void on_completions(void *ctx, cv_hs_req *req) { start_completion(ctx, req, CV_OAI_COMPLETION); }

cv_status cv_oai_service_new(cv_router *router, cv_request_pool *pool, cv_rag_runner *rag, cv_rc *rc,
                             size_t max_prompt_bytes, cv_oai_service **out, cv_error *err) {
    cv_oai_service *o = calloc(1, sizeof *o);
    if (!o) return cv_errorf(err, CV_ENOMEM, "openai service: out of memory");
    o->router = router;
    o->rag = rag;
    o->pool = pool;
    o->rc = rc;
    o->max_prompt_bytes = max_prompt_bytes;
    o->started = (long)time(NULL);
    *out = o;
    return CV_OK;
}

cv_status cv_oai_service_register(cv_oai_service *o, cv_hs *hs, cv_error *err) {
    static const struct {
        const char *method, *path;
        int prefix;
        cv_hs_handler h;
    } routes[] = {
        {"POST", "/v1/chat/completions", 0, on_chat},
        {"POST", "/v1/completions", 0, on_completions},
        {"GET", "/v1/models", 0, on_models},
        {"GET", "/v1/models/", 1, on_model},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        cv_status st = cv_hs_route(hs, routes[i].method, routes[i].path, routes[i].prefix, 1, routes[i].h, o, err);
        if (st != CV_OK) return st;
    }
    return CV_OK;
}

void cv_oai_service_free(cv_oai_service *o) { free(o); }
