#include "infer_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include "grpc_status.h"
#include "timing.h"

/* getrandom: one syscall per request, where opening /dev/urandom took three. */
uint64_t cv_core_random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = 0;
    return s ? s : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
}

void cv_core_client_gone(pthread_mutex_t *mu, int *client_gone, cv_engine *engine, const uint64_t *engine_id) {
    pthread_mutex_lock(mu);
    *client_gone = 1;
    uint64_t id = *engine_id;
    pthread_mutex_unlock(mu);
    if (id) cv_engine_cancel(engine, id);
}

cv_rpc_code cv_core_code_of(cv_status st) {
    switch (st) {
    case CV_EINVAL: case CV_ERANGE: case CV_EFORMAT: return CV_RPC_INVALID_ARGUMENT;
    case CV_EBUSY: case CV_ENOMEM: return CV_RPC_RESOURCE_EXHAUSTED;
    case CV_EUNAVAILABLE: return CV_RPC_UNAVAILABLE;
    case CV_ENOTFOUND: return CV_RPC_NOT_FOUND;
    case CV_ETIMEOUT: return CV_RPC_DEADLINE_EXCEEDED;
    case CV_EAUTH: return CV_RPC_UNAUTHENTICATED;
    case CV_EPERM: return CV_RPC_PERMISSION_DENIED;
    default: return CV_RPC_INTERNAL;
    }
}

int cv_core_http_status(cv_rpc_code code) {
    switch (code) {
    case CV_RPC_OK: return 200;
    case CV_RPC_INVALID_ARGUMENT: case CV_RPC_OUT_OF_RANGE: case CV_RPC_FAILED_PRECONDITION: return 400;
    case CV_RPC_UNAUTHENTICATED: return 401;
    case CV_RPC_PERMISSION_DENIED: return 403;
    case CV_RPC_NOT_FOUND: return 404;
    case CV_RPC_ALREADY_EXISTS: case CV_RPC_ABORTED: return 409;
    case CV_RPC_RESOURCE_EXHAUSTED: return 429;
    case CV_RPC_CANCELLED: return 499;
    case CV_RPC_UNIMPLEMENTED: return 501;
    case CV_RPC_UNAVAILABLE: return 503;
    case CV_RPC_DEADLINE_EXCEEDED: return 504;
    default: return 500;
    }
}

cv_rpc_code cv_core_acquire(cv_router *r, const char *model, const char *version, const char *request_id,
                            cv_slot **out, char *msg, size_t cap) {
    cv_error err = {0};
    cv_slot *s;
    *out = NULL;
    cv_status st = cv_router_acquire(r, request_id, version, &s, &err);
    if (st != CV_OK) {
        snprintf(msg, cap, "%s", err.msg);
        return cv_core_code_of(st);
    }
    if (model && *model && strcmp(model, s->name) != 0 && strcmp(model, s->version) != 0) {
        snprintf(msg, cap, "model \"%.100s\" is not served here (this server serves \"%.100s\")", model, s->name);
        cv_router_release(r, s);
        return CV_RPC_NOT_FOUND;
    }
    *out = s;
    return CV_RPC_OK;
}

cv_status cv_core_check_prompt_size(size_t max_prompt_bytes, const cv_slot *slot, const char *field, size_t bytes,
                                    cv_error *err) {
    size_t ctx = (size_t)cv_engine_n_ctx(slot->engine);
    size_t limit = max_prompt_bytes ? max_prompt_bytes : ctx * CV_INFER_PROMPT_BYTES_PER_TOKEN;
    if (bytes <= limit) return CV_OK;
    if (max_prompt_bytes)
        return cv_errorf(err, CV_EINVAL, "%s: %zu bytes is over max_prompt_bytes (%zu)", field, bytes, limit);
    return cv_errorf(err, CV_EINVAL,
                     "%s: %zu bytes is over max_prompt_bytes (%zu: the model's context of %zu tokens x %d bytes)",
                     field, bytes, limit, ctx, CV_INFER_PROMPT_BYTES_PER_TOKEN);
}

size_t cv_core_count_tokens(const cv_tok *tok, const char *text, size_t len) {
    int32_t *ids = malloc(sizeof *ids * CV_TOK_MAX_IDS(len));
    size_t n = 0;
    if (!ids || cv_tok_encode(tok, text, len, 0, ids, CV_TOK_MAX_IDS(len), &n, NULL) != CV_OK) n = (size_t)-1 / 2;
    free(ids);
    return n;
}

cv_status cv_core_tokenize(const cv_tok *tok, const char *text, unsigned flags, int32_t **ids, size_t *n,
                           cv_error *err) {
    size_t len = strlen(text), cap = CV_TOK_MAX_IDS(len);
    *ids = malloc(sizeof **ids * cap);
    if (!*ids) return cv_errorf(err, CV_ENOMEM, "out of memory tokenizing %zu bytes", len);
    cv_status st = cv_tok_encode(tok, text, len, flags, *ids, cap, n, err);
    if (st != CV_OK) {
        free(*ids);
        *ids = NULL;
    }
    return st;
}

cv_rpc_code cv_core_chat_format(const cv_slot *slot, const char *name, const cv_chat_format **fmt, cv_error *err) {
    *fmt = slot->chat;
    if (name && name[0]) {
        cv_error e = {0};
        cv_chat_family fam;
        if (cv_chat_family_from_name(name, &fam, &e) == CV_OK) {
            *fmt = cv_chat_format_family(fam);
            return CV_RPC_OK;
        }
        cv_errorf(err, e.code, "chat_template: %s", e.msg);
        return CV_RPC_INVALID_ARGUMENT;
    }
    if (slot->chat) return CV_RPC_OK;
    cv_errorf(err, CV_EUNSUPPORTED,
              "chat_template: the model's file names no known chat template; name one "
              "(llama2, llama3, chatml, qwen2, deepseek-r1, gemma). %s", slot->chat_error);
    return CV_RPC_FAILED_PRECONDITION;
}

const char *cv_core_protocol_name(cv_core_protocol p) { return p == CV_CORE_HTTP ? "http" : "grpc"; }

void cv_core_record(cv_stats *stats, cv_core_protocol proto, cv_rpc_code code, const cv_core_out *out) {
    cv_stats_outcome o = {.code = (int)code};
    if (out) {
        const cv_engine_final *f = &out->final;
        o.finish = cv_core_out_called(out) ? CV_STATS_FINISH_TOOL_CALLS : (int)f->reason;
        o.queue_s = f->queue_s;
        o.ttft_s = f->ttft_s;
        o.total_s = f->total_s;
        o.prompt_tokens = f->prompt_tokens > 0 ? (uint32_t)f->prompt_tokens : 0;
        o.tokens = f->completion_tokens > 0 ? (uint32_t)f->completion_tokens : 0;
    }
    cv_stats_request(stats, (int)proto, &o);
}

void cv_core_log_request(cv_core_protocol proto, const char *request_id, const char *trace_id, const char *version,
                         cv_rpc_code code, const cv_engine_final *f, const char *error) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "level", code == CV_RPC_OK ? "info" : "warn", "msg",
                          "request", "request_id", request_id, "version", version, "protocol",
                          cv_core_protocol_name(proto), "code", cv_grpc_status_name((int)code));
    if (!o) return;
    if (trace_id && *trace_id) json_object_set_new(o, "trace_id", json_string(trace_id));
    if (f) {
        json_object_set_new(o, "prompt_tokens", json_integer(f->prompt_tokens));
        json_object_set_new(o, "completion_tokens", json_integer(f->completion_tokens));
        json_object_set_new(o, "ttft_ms", json_real(f->ttft_s * 1e3));
        json_object_set_new(o, "total_ms", json_real(f->total_s * 1e3));
    }
    if (error && *error) json_object_set_new(o, "error", json_string(error));
    char *line = json_dumps(o, JSON_COMPACT);
    if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(o);
}

/* ---- tracing ---- */

void cv_core_trace_begin(cv_core_trace *t, const char *traceparent, const char *name, cv_core_protocol proto,
                         const char *operation) {
    cv_trace_ctx parent;
    cv_trace_begin(traceparent, traceparent ? strlen(traceparent) : 0, &parent);
    t->span = cv_span_start(&parent, name, CV_SPAN_SERVER, 0, &t->ctx);
    t->submit_ns = 0;
    cv_trace_id_hex(&t->ctx, t->trace_id);
    cv_span_set_str(t->span, "gen_ai.operation.name", operation);
    cv_span_set_str(t->span, "gen_ai.system", "corvid");
    cv_span_set_str(t->span, proto == CV_CORE_HTTP ? "http.request.method" : "rpc.system",
                    proto == CV_CORE_HTTP ? "POST" : "grpc");
}

static const char *finish_reason(cv_finish f) {
    switch (f) {
    case CV_FINISH_STOP: return "stop";
    case CV_FINISH_LENGTH: return "length";
    case CV_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

/* A phase of the engine, [from, to) seconds after the submit. */
static void engine_phase(const cv_core_trace *t, const char *name, double from, double to, int32_t tokens,
                         const char *tokens_key) {
    if (to < from) return;
    cv_span *s = cv_span_start(&t->ctx, name, CV_SPAN_INTERNAL, t->submit_ns + (uint64_t)(from * 1e9), NULL);
    if (tokens_key) cv_span_set_int(s, tokens_key, tokens);
    cv_span_end(s, t->submit_ns + (uint64_t)(to * 1e9));
}

void cv_core_trace_submit(cv_core_trace *t, const char *model, const cv_engine_request *er) {
    t->submit_ns = cv_trace_now_ns();
    cv_span *s = t->span;
    cv_span_set_str(s, "gen_ai.request.model", model);
    cv_span_set_int(s, "gen_ai.request.max_tokens", er->max_tokens);
    cv_span_set_double(s, "gen_ai.request.temperature", er->sampling.temperature);
    cv_span_set_double(s, "gen_ai.request.top_p", er->sampling.top_p);
    cv_span_set_int(s, "gen_ai.request.top_k", er->sampling.top_k);
    cv_span_set_int(s, "gen_ai.request.seed", (int64_t)er->sampling.seed);
}

void cv_core_trace_end(cv_core_trace *t, const char *request_id, const char *version, cv_rpc_code code,
                       const cv_engine_final *f, const char *error) {
    cv_span *s = t->span;
    if (!s) return;
    t->span = NULL;
    cv_span_set_str(s, "gen_ai.response.id", request_id);
    cv_span_set_str(s, "gen_ai.response.model", version);
    if (f && t->submit_ns) {
        cv_span_set_int(s, "gen_ai.usage.input_tokens", f->prompt_tokens);
        cv_span_set_int(s, "gen_ai.usage.output_tokens", f->completion_tokens);
        cv_span_set_str_array(s, "gen_ai.response.finish_reasons", finish_reason(f->reason));
        /* No first token (cancelled in the queue, or an error): the phases it reached. */
        double started = f->queue_s > 0 ? f->queue_s : f->total_s;
        double first = f->ttft_s > 0 ? f->ttft_s : f->total_s;
        engine_phase(t, "queue", 0, started, 0, NULL);
        engine_phase(t, "prefill", started, first, f->prompt_tokens, "gen_ai.usage.input_tokens");
        if (f->ttft_s > 0) engine_phase(t, "decode", first, f->total_s, f->completion_tokens, "gen_ai.usage.output_tokens");
    }
    cv_span_set_str(s, "rpc.grpc.status_code_name", cv_grpc_status_name((int)code));
    if (code != CV_RPC_OK) cv_span_set_error(s, error && *error ? error : cv_grpc_status_name((int)code));
    cv_span_end(s, 0);
}

/* ---- pending output ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int cv_core_out_token(cv_core_out *o, cv_stats *stats, cv_core_protocol proto, int32_t n_ids) {
    int first = o->t_last_token == 0;
    if (n_ids) {
        double t = cv_seconds();
        if (o->t_last_token > 0) cv_stats_inter_token(stats, (int)proto, t - o->t_last_token);
        o->t_last_token = t;
    }
    return first;
}

void cv_core_out_split(cv_core_out *o, int starts_inside) {
    o->split = 1;
    cv_think_init(&o->think, starts_inside);
}

/* Answer text into text (room was made for what append brings; a tool parser may
 * hand on more, a call that did not parse: room is made for that here). */
static void text_put(void *ctx, const char *s, size_t n) {
    cv_core_out *o = ctx;
    if (grow((void **)&o->text, &o->text_cap, o->text_len + n + 1, 1)) {
        o->overflow = 1;
        return;
    }
    memcpy(o->text + o->text_len, s, n);
    o->text_len += n;
    o->text[o->text_len] = 0;
}

static void call_begin(void *ctx, const char *name) {
    cv_core_out *o = ctx;
    cv_core_call *c = NULL;
    if (!grow((void **)&o->calls, &o->calls_cap, o->n_calls + 1, sizeof *o->calls)) c = &o->calls[o->n_calls];
    if (!c || !(c->name = strdup(name)) || !(c->args = calloc(1, 1))) {
        if (c) free(c->name);
        o->overflow = 1;
        return;
    }
    c->args_len = 0;
    c->args_cap = 1;
    c->sent = 0;
    c->head_sent = c->done = 0;
    c->index = o->calls_total++;
    snprintf(c->id, sizeof c->id, "call_%016llx", (unsigned long long)cv_core_random_seed());
    o->n_calls++;
}

/* The parser's events come in order: the last call is the one being written. */
static void call_args(void *ctx, const char *s, size_t n) {
    cv_core_out *o = ctx;
    if (o->overflow || !o->n_calls) return;
    cv_core_call *c = &o->calls[o->n_calls - 1];
    if (grow((void **)&c->args, &c->args_cap, c->args_len + n + 1, 1)) {
        o->overflow = 1;
        return;
    }
    memcpy(c->args + c->args_len, s, n);
    c->args_len += n;
    c->args[c->args_len] = 0;
}

static void call_end(void *ctx, int complete) {
    cv_core_out *o = ctx;
    (void)complete; /* an incomplete call keeps what was written, as OpenAI's API does */
    if (!o->overflow && o->n_calls) o->calls[o->n_calls - 1].done = 1;
}

int cv_core_call_pending(const cv_core_call *c) { return !c->head_sent || c->sent < c->args_len; }

void cv_core_call_sent(cv_core_call *c) {
    c->head_sent = 1;
    c->sent = c->args_len;
}

int cv_core_out_calls_pending(const cv_core_out *o) {
    for (size_t i = 0; i < o->n_calls; i++)
        if (cv_core_call_pending(&o->calls[i])) return 1;
    return 0;
}

/* The answer's text: through the tool-call parser when there is one. */
static void answer(cv_core_out *o, const char *s, size_t n) {
    if (!o->tools) text_put(o, s, n);
    else if (cv_tool_parser_feed(o->tools, s, n) != CV_OK) o->overflow = 1;
}

/* The splitter's output into text or reasoning (room was made for all of it). */
static void split_emit(void *ctx, int reasoning, const char *s, size_t n) {
    cv_core_out *o = ctx;
    if (!reasoning) {
        answer(o, s, n);
        return;
    }
    memcpy(o->reasoning + o->reasoning_len, s, n);
    o->reasoning_len += n;
    o->reasoning[o->reasoning_len] = 0;
}

int cv_core_out_tools(cv_core_out *o, cv_tool_syntax s, size_t max_calls) {
    cv_tool_sink sink = {text_put, call_begin, call_args, call_end, o};
    return cv_tool_parser_new(s, max_calls, 0, &sink, &o->tools, NULL) == CV_OK ? 0 : -1;
}

int cv_core_out_called(const cv_core_out *o) { return o->calls_total && o->final.reason == CV_FINISH_STOP; }

int cv_core_out_guard(cv_core_out *o, const cv_rag_result *r, int line_end, int check) {
    const cv_rag_outcome *oc = r->outcome;
    size_t n_passages = oc ? oc->ctx.n_kept : 0;
    o->guard_passages = (uint32_t)n_passages + 1;
    o->guard_line_end = line_end;
    o->guard_check = check && n_passages;
    if (!(o->guard = cv_rag_guard_new(n_passages, line_end))) return -1;
    if (check && n_passages) {
        cv_rag_support *s = cv_rag_support_new(r->question ? r->question : "", oc->passages, oc->ctx.kept, n_passages);
        if (!s) return -1;
        cv_rag_guard_set_support(o->guard, s);
    }
    return 0;
}

int cv_core_out_engine_chunk(cv_core_out *o, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                             const cv_sample *samples) {
    cv_rc_rec_chunk(o->rec, text, len, ids, n_ids);
    return cv_core_out_append(o, text, len, ids, n_ids, samples);
}

int cv_core_out_append(cv_core_out *o, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                       const cv_sample *samples) {
    if (o->overflow) return 1;
    if (o->guard) {
        if (o->guard_trip) return 1;
        cv_rag_guard_trip t = cv_rag_guard_feed(o->guard, text, len);
        if (t == CV_RAG_GUARD_NOMEM) return o->overflow = 1;
        cv_rag_guard_take(o->guard, &text, &len);
        if (t != CV_RAG_GUARD_OK) o->guard_trip = t;
    }
    if (o->text_len + o->reasoning_len + len > CV_INFER_MAX_PENDING) return o->overflow = 1;
    size_t ids_cap_before = o->ids_cap;
    /* Held marker bytes may come out with this piece: room for them too. */
    size_t room = len + sizeof o->think.hold + 1;
    if (grow((void **)&o->text, &o->text_cap, o->text_len + room, 1) ||
        (o->split && grow((void **)&o->reasoning, &o->reasoning_cap, o->reasoning_len + room, 1)) ||
        grow((void **)&o->ids, &o->ids_cap, o->n_ids + (size_t)n_ids, sizeof *o->ids))
        return o->overflow = 1;
    o->text[o->text_len] = 0; /* text and reasoning are C strings even when nothing is added */
    if (o->split) o->reasoning[o->reasoning_len] = 0;
    if (o->want_samples) {
        size_t cap = ids_cap_before;
        if (grow((void **)&o->samples, &cap, o->ids_cap, sizeof *o->samples)) return o->overflow = 1;
    }
    if (o->split) cv_think_feed(&o->think, text, len, split_emit, o);
    else answer(o, text, len);
    if (n_ids) memcpy(o->ids + o->n_ids, ids, sizeof *ids * (size_t)n_ids);
    if (n_ids && o->want_samples && samples) memcpy(o->samples + o->n_ids, samples, sizeof *samples * (size_t)n_ids);
    o->n_ids += (size_t)n_ids;
    return o->overflow || o->guard_trip != CV_RAG_GUARD_OK;
}

void cv_core_out_final(cv_core_out *o, const cv_engine_final *f) {
    if (o->guard) { /* what the guard held back ("... [1") */
        const char *rest;
        size_t n;
        cv_rag_guard *g = o->guard;
        cv_rag_guard_finish(g, &rest, &n);
        o->guard = NULL;
        if (n) cv_core_out_append(o, rest, n, NULL, 0, NULL);
        o->guard = g;
    }
    if (o->split && o->think.n_hold && cv_core_out_append(o, "", 0, NULL, 0, NULL) == 0)
        cv_think_flush(&o->think, split_emit, o);
    if (o->tools && cv_tool_parser_finish(o->tools) != CV_OK) o->overflow = 1;
    o->final = *f;
    /* The guard's cancel is the answer's end. */
    if (o->guard_trip && f->reason == CV_FINISH_CANCELLED && !o->overflow) o->final.reason = CV_FINISH_STOP;
    snprintf(o->stop_string, sizeof o->stop_string, "%s", f->stop_string ? f->stop_string : "");
    snprintf(o->error, sizeof o->error, "%s", f->error ? f->error : "");
    o->final.stop_string = o->stop_string[0] ? o->stop_string : NULL;
    o->final.error = o->error[0] ? o->error : NULL;
    o->have_final = 1;
    if (o->rec && !o->overflow) cv_rc_rec_final(o->rec, &o->final); /* stores only a normal end */
    else cv_rc_rec_free(o->rec);
    o->rec = NULL;
}

int cv_core_cache(cv_rc *rc, const cv_rc_query *q, int32_t n_vocab, pthread_mutex_t *mu, cv_core_out *o,
                  const cv_engine_sink *sink) {
    cv_rc_key key;
    if (!rc || !cv_rc_key_of(rc, q, &key)) return 0;
    double t0 = cv_seconds();
    cv_rc_entry e;
    if (!cv_rc_lookup(rc, &key, q->er->n_prompt, n_vocab, &e)) {
        o->rec = cv_rc_rec_new(rc, &key);
        return 0;
    }
    pthread_mutex_lock(mu);
    o->cached = 1;
    pthread_mutex_unlock(mu);
    for (size_t i = 0; i < e.n_chunks; i++)
        sink->on_chunk(sink->ctx, e.chunks[i].text, e.chunks[i].len, e.chunks[i].ids, e.chunks[i].n_ids, NULL);
    cv_engine_final f = {.reason = e.reason, .prompt_tokens = e.prompt_tokens,
                         .completion_tokens = e.completion_tokens,
                         .stop_string = e.stop_string[0] ? e.stop_string : NULL};
    f.ttft_s = f.total_s = cv_seconds() - t0;
    sink->on_final(sink->ctx, &f);
    cv_rc_entry_free(&e);
    return 1;
}

static void call_free(cv_core_call *c) {
    free(c->name);
    free(c->args);
}

static void calls_free(cv_core_out *o) {
    for (size_t i = 0; i < o->n_calls; i++) call_free(&o->calls[i]);
    o->n_calls = 0;
}

void cv_core_out_consumed(cv_core_out *o) {
    size_t k = 0;
    for (size_t i = 0; i < o->n_calls; i++) {
        if (o->calls[i].done && !cv_core_call_pending(&o->calls[i])) call_free(&o->calls[i]);
        else o->calls[k++] = o->calls[i];
    }
    o->n_calls = k;
    o->text_len = o->reasoning_len = 0;
    o->n_ids = 0;
    if (o->text) o->text[0] = 0;
    if (o->reasoning) o->reasoning[0] = 0;
}

void cv_core_out_free(cv_core_out *o) {
    cv_rag_guard_free(o->guard);
    calls_free(o);
    free(o->calls);
    cv_tool_parser_free(o->tools);
    cv_rc_rec_free(o->rec);
    free(o->text);
    free(o->ids);
    free(o->samples);
    free(o->reasoning);
    memset(o, 0, sizeof *o);
}
