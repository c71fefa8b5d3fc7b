#include "inference_service.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "corvid/v1/inference.pb-c.h"
#include "grammar.h"
#include "grpc_status.h"
#include "infer_core.h"
#include "json_schema.h"
#include "rag_request.h"
#include "request_pool.h"
#include "rpc_message.h"
#include "stop.h"
#include "tool_choice.h"
#include "timing.h"

struct cv_infer {
    cv_router *router;
    cv_infer_options opt;
    cv_request_pool *pool;   /* tokenizing and chat rendering, off the completion-queue thread */
    atomic_int in_flight;
    cv_rag_runner rag;       /* no service: requests asking for RAG get FAILED_PRECONDITION */
};

/* ---- one response stream ---- */

typedef struct gen_stream {
    cv_infer *inf;
    cv_slot *slot;
    cv_rpc_call *call;
    cv_engine *engine;
    uint64_t engine_id;
    pthread_mutex_t mu;
    cv_core_out out;         /* output not yet sent, coalesced: the engine appends, produce() drains */
    cv_rpc_code fail_code;   /* the request was refused at submit: only a status goes out */
    int client_gone;         /* cancelled, disconnected or past its deadline */
    uint8_t *context_msg;    /* the RAG Context message, sent before anything else */
    size_t context_len;
    uint32_t context_tokens;
    int default_answer;      /* the configured answer went out instead of the model's */
    char request_id[128];
    uint64_t seed;
    int render_special;      /* the tool-call syntax's markers are control tokens */
    cv_core_trace trace;
    const char *tool_grammar; /* a required tool call's constraint (the request's, until submit) */
} gen_stream;

static void stream_free(gen_stream *g) {
    pthread_mutex_destroy(&g->mu);
    cv_core_out_free(&g->out);
    free(g->context_msg);
    free(g);
}

/* Engine thread: append and wake the sender. */
static void sink_chunk(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n_ids,
                       const cv_sample *samples) {
    gen_stream *g = ctx;
    int first = cv_core_out_token(&g->out, g->slot->stats, CV_CORE_GRPC, n_ids);
    pthread_mutex_lock(&g->mu);
    int overflow = cv_core_out_engine_chunk(&g->out, text, len, ids, n_ids, samples);
    pthread_mutex_unlock(&g->mu);
    if (overflow) cv_engine_cancel(g->engine, g->engine_id);
    if (first) cv_rpc_stream_wake(g->call);
    else cv_rpc_stream_wake_batched(g->call);
}

static void sink_final(void *ctx, const cv_engine_final *f) {
    gen_stream *g = ctx;
    pthread_mutex_lock(&g->mu);
    cv_core_out_final(&g->out, f);
    pthread_mutex_unlock(&g->mu);
    cv_rpc_stream_wake(g->call);
    cv_rpc_call_release(g->call); /* the engine never calls us again */
}

static uint8_t *pack_response(Corvid__V1__GenerateResponse *r, size_t *len) {
    *len = corvid__v1__generate_response__get_packed_size(r);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) corvid__v1__generate_response__pack(r, buf);
    return buf;
}

static uint8_t *pack_chunk_locked(gen_stream *g, size_t *len) {
    Corvid__V1__Chunk chunk = CORVID__V1__CHUNK__INIT;
    chunk.text = g->out.text ? g->out.text : "";
    chunk.reasoning_text = g->out.reasoning ? g->out.reasoning : "";
    chunk.n_token_ids = g->out.n_ids;
    chunk.token_ids = g->out.ids;
    Corvid__V1__ToolCall *calls = calloc(g->out.n_calls ? g->out.n_calls : 1, sizeof *calls);
    Corvid__V1__ToolCall **callp = calloc(g->out.n_calls ? g->out.n_calls : 1, sizeof *callp);
    if (!calls || !callp) {
        free(calls);
        free(callp);
        return NULL;
    }
    /* Each call's news as a delta: its first one carries the id and name; the pieces
     * of an index joined are its arguments (the pointers stay valid until consumed). */
    size_t n_calls = 0;
    for (size_t i = 0; i < g->out.n_calls; i++) {
        cv_core_call *c = &g->out.calls[i];
        if (!cv_core_call_pending(c)) continue;
        Corvid__V1__ToolCall *t = &calls[n_calls];
        corvid__v1__tool_call__init(t);
        t->index = (uint32_t)c->index;
        if (!c->head_sent) {
            t->id = c->id;
            t->name = c->name;
        }
        c->args[c->args_len] = 0;
        t->arguments = c->args + c->sent;
        cv_core_call_sent(c);
        callp[n_calls++] = t;
    }
    chunk.n_tool_calls = n_calls;
    chunk.tool_calls = callp;
    Corvid__V1__Logprobs *lp = NULL, **lpp = NULL;
    Corvid__V1__TokenLogprob *tl = NULL;
    uint8_t *buf = NULL;
    if (g->out.want_samples && g->out.n_ids) {
        size_t n_top = 0;
        for (size_t i = 0; i < g->out.n_ids; i++) n_top += (size_t)g->out.samples[i].n_top;
        lp = calloc(g->out.n_ids, sizeof *lp);
        lpp = calloc(g->out.n_ids, sizeof *lpp);
        tl = calloc(g->out.n_ids + n_top, sizeof *tl);
        Corvid__V1__TokenLogprob **tops = calloc(n_top ? n_top : 1, sizeof *tops);
        if (!lp || !lpp || !tl || !tops) {
            free(tops);
            goto out;
        }
        size_t t = 0, k = 0;
        for (size_t i = 0; i < g->out.n_ids; i++) {
            const cv_sample *s = &g->out.samples[i];
            corvid__v1__logprobs__init(&lp[i]);
            corvid__v1__token_logprob__init(&tl[t]);
            tl[t].id = s->token;
            tl[t].logprob = s->logprob;
            lp[i].chosen = &tl[t++];
            lp[i].top = tops + k;
            lp[i].n_top = (size_t)s->n_top;
            for (int32_t j = 0; j < s->n_top; j++) {
                corvid__v1__token_logprob__init(&tl[t]);
                tl[t].id = s->top[j].token;
                tl[t].logprob = s->top[j].logprob;
                tops[k++] = &tl[t++];
            }
            lpp[i] = &lp[i];
        }
        chunk.n_logprobs = g->out.n_ids;
        chunk.logprobs = lpp;
        Corvid__V1__GenerateResponse r = CORVID__V1__GENERATE_RESPONSE__INIT;
        r.kind_case = CORVID__V1__GENERATE_RESPONSE__KIND_CHUNK;
        r.chunk = &chunk;
        buf = pack_response(&r, len);
        free(tops);
    } else {
        Corvid__V1__GenerateResponse r = CORVID__V1__GENERATE_RESPONSE__INIT;
        r.kind_case = CORVID__V1__GENERATE_RESPONSE__KIND_CHUNK;
        r.chunk = &chunk;
        buf = pack_response(&r, len);
    }
out:
    free(lp);
    free(lpp);
    free(tl);
    free(calls);
    free(callp);
    cv_core_out_consumed(&g->out);
    return buf;
}

static uint8_t *pack_final_locked(gen_stream *g, size_t *len) {
    static const Corvid__V1__FinishReason reasons[] = {
        [CV_FINISH_STOP] = CORVID__V1__FINISH_REASON__FINISH_REASON_STOP,
        [CV_FINISH_LENGTH] = CORVID__V1__FINISH_REASON__FINISH_REASON_LENGTH,
        [CV_FINISH_CANCELLED] = CORVID__V1__FINISH_REASON__FINISH_REASON_CANCELLED,
        [CV_FINISH_ERROR] = CORVID__V1__FINISH_REASON__FINISH_REASON_ERROR,
    };
    Corvid__V1__Usage usage = CORVID__V1__USAGE__INIT;
    usage.prompt_tokens = (uint32_t)g->out.final.prompt_tokens;
    usage.completion_tokens = (uint32_t)g->out.final.completion_tokens;
    usage.context_tokens = g->context_tokens;
    Corvid__V1__Final fin = CORVID__V1__FINAL__INIT;
    fin.finish_reason = cv_core_out_called(&g->out) ? CORVID__V1__FINISH_REASON__FINISH_REASON_TOOL_CALLS
                                                    : reasons[g->out.final.reason];
    fin.usage = &usage;
    fin.model_version = g->slot->version;
    fin.time_to_first_token_ms = (float)(g->out.final.ttft_s * 1e3);
    fin.total_ms = (float)(g->out.final.total_s * 1e3);
    fin.error = g->out.error;
    fin.request_id = g->request_id;
    fin.seed = g->seed;
    fin.stop_string = g->out.stop_string;
    fin.default_answer = g->default_answer;
    fin.cached = g->out.cached;
    Corvid__V1__GenerateResponse r = CORVID__V1__GENERATE_RESPONSE__INIT;
    r.kind_case = CORVID__V1__GENERATE_RESPONSE__KIND_FINAL;
    r.final = &fin;
    return pack_response(&r, len);
}

static cv_rpc_produce gen_produce(void *ctx, uint8_t **msg, size_t *len, int *more,
                                  cv_rpc_code *code, const char **status_msg) {
    gen_stream *g = ctx;
    cv_rpc_produce p = CV_RPC_NOTHING;
    *code = CV_RPC_OK;
    pthread_mutex_lock(&g->mu);
    if (g->fail_code != CV_RPC_OK) {
        *code = g->fail_code;
        *status_msg = g->out.error;
        p = CV_RPC_FINISH;
    } else if (g->context_msg) {
        *msg = g->context_msg;
        *len = g->context_len;
        g->context_msg = NULL;
        *more = 1;
        p = CV_RPC_MESSAGE;
    } else if (g->out.overflow) {
        /* Wait for the engine's final (it was cancelled) before ending the call. */
        if (g->out.have_final) {
            *code = CV_RPC_RESOURCE_EXHAUSTED;
            *status_msg = "client reads too slowly: more than 1 MiB of output pending";
            p = CV_RPC_FINISH;
        }
    } else if (g->out.text_len || g->out.reasoning_len || g->out.n_ids || cv_core_out_calls_pending(&g->out)) {
        *msg = pack_chunk_locked(g, len);
        *more = g->out.have_final;
        p = *msg ? CV_RPC_MESSAGE : CV_RPC_NOTHING;
    } else if (g->out.have_final) {
        /* The final message goes out with the status, in one batch. */
        *msg = pack_final_locked(g, len);
        if (!*msg) {
            *code = CV_RPC_RESOURCE_EXHAUSTED;
            *status_msg = "out of memory packing the final message";
        } else switch (g->out.final.reason) {
        case CV_FINISH_ERROR:
            *code = CV_RPC_INTERNAL;
            *status_msg = g->out.error;
            break;
        case CV_FINISH_CANCELLED:
            *code = CV_RPC_CANCELLED;
            *status_msg = "cancelled";
            break;
        default:
            *code = CV_RPC_OK;
            break;
        }
        p = CV_RPC_FINISH;
    }
    if (p == CV_RPC_FINISH) {
        /* Once per stream: produce is never called again after FINISH. */
        int ran = g->fail_code == CV_RPC_OK;
        cv_core_record(g->slot->stats, CV_CORE_GRPC, *code, ran ? &g->out : NULL);
        cv_core_log_request(CV_CORE_GRPC, g->request_id, g->trace.trace_id, g->slot->version, *code,
                            ran ? &g->out.final : NULL, *status_msg);
        cv_core_trace_end(&g->trace, g->request_id, g->slot->version, *code, ran ? &g->out.final : NULL, *status_msg);
    }
    pthread_mutex_unlock(&g->mu);
    return p;
}

static void gen_cancel(void *ctx) {
    gen_stream *g = ctx;
    cv_core_client_gone(&g->mu, &g->client_gone, g->engine, &g->engine_id);
}

static void gen_done(void *ctx) {
    gen_stream *g = ctx;
    /* Ended without a status of ours (the client went first): the span ends here. */
    cv_core_trace_end(&g->trace, g->request_id, g->slot->version, CV_RPC_CANCELLED, NULL, "client went away");
    cv_router_release(g->inf->router, g->slot);
    atomic_fetch_sub(&g->inf->in_flight, 1);
    stream_free(g);
}

static const cv_rpc_stream_ops gen_ops = {gen_produce, gen_cancel, gen_done};

/* ---- request handling ---- */

/* A proto uint32 as the int32 the engine takes: a value too large stays too large (the
 * engine's range check names it) instead of wrapping to a negative one. */
static int32_t as_i32(uint32_t v) { return v > INT32_MAX ? INT32_MAX : (int32_t)v; }

/* Proto sampling to the sampler's parameters: a field at 0 keeps the sampler's "off"
 * value (cv_sampler_params_off) or the server's default. The ranges are checked once,
 * by the engine's submit (cv_sampler_params_validate). */
static void sampling_from_proto(const Corvid__V1__SamplingParams *p, cv_sampler_params *sp,
                                int32_t *max_tokens, int *ignore_eos, uint64_t *seed) {
    cv_sampler_params_off(sp);
    *max_tokens = 0;
    *ignore_eos = 0;
    *seed = cv_core_random_seed();
    if (p) {
        sp->temperature = p->temperature;
        sp->top_k = p->top_k;
        if (p->top_p != 0) sp->top_p = p->top_p;
        sp->min_p = p->min_p;
        if (p->repetition_penalty != 0) sp->repeat_penalty = p->repetition_penalty;
        if (p->repetition_window) sp->repeat_last_n = as_i32(p->repetition_window);
        if (p->seed) *seed = p->seed->value;
        if (p->logprobs) {
            sp->logprobs = true;
            sp->top_logprobs = as_i32(p->logprobs);
        }
        *max_tokens = as_i32(p->max_tokens);
        *ignore_eos = p->ignore_eos;
    }
    sp->seed = *seed;
}

/* The request's output constraint as GBNF (malloc'd into *gbnf; NULL when there is
 * none): its grammar as given, or compiled from json_schema / json_object. Refusals
 * name the field ("sampling.json_schema: json_schema: minimum at / is not supported"). */
static cv_status grammar_from_proto(const Corvid__V1__SamplingParams *p, char **gbnf, cv_error *err) {
    *gbnf = NULL;
    if (!p) return CV_OK;
    int given = (p->grammar && p->grammar[0]) + (p->json_schema && p->json_schema[0]) + (p->json_object != 0);
    if (given > 1)
        return cv_errorf(err, CV_EINVAL, "sampling: grammar, json_schema and json_object are exclusive (%d given)", given);
    cv_error e = {0};
    const char *field = "grammar";
    cv_status st = CV_OK;
    if (p->grammar && p->grammar[0]) {
        if ((st = cv_grammar_check(p->grammar, strlen(p->grammar), &e)) == CV_OK && !(*gbnf = strdup(p->grammar)))
            st = cv_errorf(&e, CV_ENOMEM, "out of memory");
    } else if (p->json_schema && p->json_schema[0]) {
        field = "json_schema";
        st = cv_json_schema_gbnf_text(p->json_schema, strlen(p->json_schema), NULL, gbnf, &e);
    } else if (p->json_object) {
        static const char object[] = "{\"type\":\"object\"}";
        field = "json_object";
        st = cv_json_schema_gbnf_text(object, sizeof object - 1, NULL, gbnf, &e);
    }
    if (st != CV_OK) return cv_errorf(err, st == CV_ENOMEM ? CV_ENOMEM : CV_EINVAL, "sampling.%s: %s", field, e.msg);
    return CV_OK;
}

/* The request's sampling, checked by the engine's own rule (cv_sampler_params_validate)
 * but before any work and with the API's path ("sampling.top_p ..."). A uint32 that the
 * sampler's int32 cannot hold is refused here with the value the client sent, never
 * wrapped ("-1") or clamped. */
static cv_status check_sampling(const Corvid__V1__SamplingParams *p, cv_error *err) {
    if (!p) return CV_OK;
    if (p->repetition_window > CV_SAMPLER_MAX_REPEAT_LAST_N)
        return cv_errorf(err, CV_EINVAL, "sampling.repetition_window %" PRIu32 " is outside [0, %d]",
                         p->repetition_window, CV_SAMPLER_MAX_REPEAT_LAST_N);
    if (p->logprobs > CV_SAMPLER_MAX_TOP_LOGPROBS)
        return cv_errorf(err, CV_EINVAL, "sampling.logprobs %" PRIu32 " is outside [0, %d]", p->logprobs,
                         CV_SAMPLER_MAX_TOP_LOGPROBS);
    cv_sampler_params sp;
    int32_t max_tokens;
    int ignore_eos;
    uint64_t seed;
    sampling_from_proto(p, &sp, &max_tokens, &ignore_eos, &seed);
    cv_error e = {0};
    if (cv_sampler_params_validate(&sp, &e) != CV_OK ||
        cv_stop_check((const char *const *)p->stop, p->n_stop, &e) != CV_OK)
        return cv_errorf(err, CV_EINVAL, "sampling.%s", e.msg);
    char *gbnf;
    cv_status st = grammar_from_proto(p, &gbnf, err);
    free(gbnf);
    return st;
}

/* Answers an error for a request that holds a slot, counts it there and lets the slot go. */
static void refuse(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const char *request_id, cv_rpc_code code,
                   const char *msg) {
    cv_core_record(slot->stats, CV_CORE_GRPC, code, NULL);
    cv_core_log_request(CV_CORE_GRPC, request_id, NULL, slot->version, code, NULL, msg);
    cv_rpc_reply(call, code, msg, NULL, 0);
    cv_router_release(inf->router, slot);
}

/* The slot a request runs on (to be released), or NULL after answering the error. */
static cv_slot *pick_slot(cv_infer *inf, cv_rpc_call *call, const char *model, const char *version,
                          const char *request_id) {
    char msg[512];
    cv_slot *s;
    cv_rpc_code code = cv_core_acquire(inf->router, model, version, request_id, &s, msg, sizeof msg);
    if (code != CV_RPC_OK) cv_rpc_reply(call, code, msg, NULL, 0);
    return s;
}

#ifdef CORVID_TESTING
/* Fails the request on purpose at the version's configured rate (tests of rollback). */
static int injected_fault(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const char *request_id) {
    float rate = cv_router_fault_rate(inf->router, slot);
    if (rate <= 0 || (float)cv_core_random_seed() / 18446744073709551616.0f >= rate) return 0;
    refuse(inf, slot, call, request_id, CV_RPC_INTERNAL, "injected fault (CORVID_TESTING build)");
    return 1;
}
#else
static int injected_fault(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const char *request_id) {
    (void)inf, (void)slot, (void)call, (void)request_id;
    return 0;
}
#endif

static cv_status check_prompt_size(const cv_infer *inf, const cv_slot *slot, const char *field, size_t bytes,
                                   cv_error *err) {
    return cv_core_check_prompt_size(inf->opt.max_prompt_bytes, slot, field, bytes, err);
}

/* The bytes of a request's messages as max_prompt_bytes counts them. */
static size_t messages_bytes(Corvid__V1__ChatMessage *const *m, size_t n) {
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += cv_rpc_pb_strlen(m[i]->role) + cv_rpc_pb_strlen(m[i]->content);
    return bytes;
}

/* Turns the call into a response stream that waits for output; NULL after answering
 * the error. */
static gen_stream *stream_open(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const char *request_id) {
    gen_stream *g = calloc(1, sizeof *g);
    if (!g) {
        refuse(inf, slot, call, request_id, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->inf = inf;
    g->slot = slot;
    g->call = call;
    g->engine = slot->engine;
    /* Every stream has an id for logs and the final message; clients may bring their own. */
    if (request_id && *request_id) snprintf(g->request_id, sizeof g->request_id, "%s", request_id);
    else snprintf(g->request_id, sizeof g->request_id, "req-%016llx", (unsigned long long)cv_core_random_seed());
    const char *method = cv_rpc_method(call);
    size_t mlen = strlen(method);
    cv_core_trace_begin(&g->trace, cv_rpc_metadata(call, "traceparent"), method + (method[0] == '/'), CV_CORE_GRPC,
                        mlen >= 5 && !strcmp(method + mlen - 5, "/Chat") ? "chat" : "text_completion");
    atomic_fetch_add(&inf->in_flight, 1);
    cv_rpc_stream_start(call, &gen_ops, g);
    return g;
}

/* Ends an open stream with an error status before anything was sent. */
static void stream_fail(gen_stream *g, cv_rpc_code code, const char *msg) {
    pthread_mutex_lock(&g->mu);
    snprintf(g->out.error, sizeof g->out.error, "%s", msg);
    g->fail_code = code;
    pthread_mutex_unlock(&g->mu);
    cv_rpc_stream_wake(g->call);
    cv_rpc_call_release(g->call);
}

/* Submits a tokenized prompt to the engine, whose sink feeds the open stream, unless
 * the response cache answers it. extra_stop (may be NULL) is a stop string added to
 * the request's; rag: the retrieval that built the prompt, or NULL. */
static void stream_submit(gen_stream *g, const int32_t *prompt, size_t n_prompt,
                          const Corvid__V1__SamplingParams *sp, const char *extra_stop,
                          const cv_rag_outcome *rag) {
    cv_error err = {0};
    cv_engine_request r = {.prompt = prompt, .n_prompt = (int32_t)n_prompt};
    sampling_from_proto(sp, &r.sampling, &r.max_tokens, &r.ignore_eos, &g->seed);
    g->out.want_samples = r.sampling.logprobs;
    size_t n_stop = sp ? sp->n_stop : 0;
    const char **stop = calloc(n_stop + 1, sizeof *stop);
    char *gbnf = NULL;
    if (!stop || grammar_from_proto(sp, &gbnf, &err) != CV_OK) {
        free(stop);
        stream_fail(g, err.code == CV_EINVAL ? CV_RPC_INVALID_ARGUMENT : CV_RPC_RESOURCE_EXHAUSTED,
                    err.msg[0] ? err.msg : "out of memory");
        return;
    }
    r.grammar = g->tool_grammar ? g->tool_grammar : gbnf;
    for (size_t i = 0; i < n_stop; i++) stop[i] = sp->stop[i];
    if (extra_stop) stop[n_stop++] = extra_stop;
    r.stop = stop;
    r.n_stop = (int32_t)n_stop;
    r.render_special = g->render_special;
    cv_engine_sink sink = {sink_chunk, sink_final, g};
    cv_core_trace_submit(&g->trace, g->slot->name, &r);
    const cv_rc_query q = {.version = g->slot->version, .er = &r, .explicit_seed = sp && sp->seed,
                           .subject = cv_rpc_subject(g->call), .guard_passages = g->out.guard_passages,
                           .guard_line_end = g->out.guard_line_end,
                           .guard_check = g->out.guard_check, .rag = rag};
    if (cv_core_cache(g->inf->opt.response_cache, &q, cv_tok_n_vocab(g->slot->tok), &g->mu, &g->out, &sink)) {
        free(stop);
        free(gbnf);
        return;
    }
    pthread_mutex_lock(&g->mu);
    cv_status st = cv_engine_submit(g->engine, &r, &sink, &g->engine_id, &err);
    int gone = g->client_gone;
    pthread_mutex_unlock(&g->mu);
    free(stop);
    free(gbnf);
    if (st == CV_OK && gone) cv_engine_cancel(g->engine, g->engine_id);
    /* Nothing was queued: the submit error becomes the call's status. */
    if (st != CV_OK) stream_fail(g, cv_core_code_of(st), err.msg);
}

/* The template options of a Chat or Tokenize request (its tools and template
 * variables, NULL or "" for none), with the generation prompt. */
static cv_chat_opts chat_opts(const char *tools, const char *kwargs) {
    return (cv_chat_opts){.add_generation_prompt = true, .tools = tools && tools[0] ? tools : NULL,
                          .extra = kwargs[0] ? kwargs : NULL};
}

/* A request's messages as the chat format takes them (malloc'd; NULL: out of memory). */
static cv_chat_msg *chat_msgs(Corvid__V1__ChatMessage *const *m, size_t n) {
    cv_chat_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    for (size_t i = 0; msgs && i < n; i++)
        msgs[i] = (cv_chat_msg){.role = m[i]->role, .content = m[i]->content,
                                .tool_calls = m[i]->tool_calls[0] ? m[i]->tool_calls : NULL,
                                .tool_call_id = m[i]->tool_call_id[0] ? m[i]->tool_call_id : NULL,
                                .name = m[i]->name[0] ? m[i]->name : NULL};
    return msgs;
}

/* The prompt ids of a request's chat messages (see cv_chat_format_encode). */
static cv_status encode_messages(const cv_tok *tok, const cv_chat_format *fmt,
                                 Corvid__V1__ChatMessage *const *m, size_t n, const cv_chat_opts *o,
                                 unsigned flags, int32_t **ids, size_t *n_ids, cv_error *err) {
    cv_chat_msg *msgs = chat_msgs(m, n);
    if (!msgs) return cv_errorf(err, CV_ENOMEM, "out of memory");
    cv_status st = cv_chat_format_encode(tok, fmt, msgs, n, o, flags, ids, n_ids, err);
    free(msgs);
    return st;
}

/* cv_chat_format_check on a request's messages. */
static cv_status check_messages(const cv_chat_format *fmt, Corvid__V1__ChatMessage *const *m, size_t n,
                                const cv_chat_opts *o, cv_error *err) {
    cv_chat_msg *msgs = chat_msgs(m, n);
    if (!msgs) return cv_errorf(err, CV_ENOMEM, "out of memory");
    cv_status st = cv_chat_format_check(fmt, msgs, n, o, err);
    free(msgs);
    return st;
}

/* A Generate or Chat request: exactly one of gen / chat, the chat template it gets
 * and its tools. */
typedef struct infer_req {
    Corvid__V1__GenerateRequest *gen;
    Corvid__V1__ChatRequest *chat;
    const cv_chat_format *fmt;
    cv_tool_plan tools;
} infer_req;

static const Corvid__V1__SamplingParams *req_sampling(const infer_req *r) {
    return r->gen ? r->gen->sampling : r->chat->sampling;
}

static void req_free(infer_req *r) {
    if (r->gen) cv_rpc_free_request(&r->gen->base);
    if (r->chat) cv_rpc_free_request(&r->chat->base);
    cv_tool_plan_free(&r->tools);
    r->gen = NULL;
    r->chat = NULL;
}

/* How a Chat's answer is cut up: think-block text goes to Chunk.reasoning_text unless
 * it asks for it inline, tool calls to Chunk.tool_calls. -1 when out of memory. */
static int answer_setup(gen_stream *g, const infer_req *r, const int32_t *prompt, size_t n) {
    if (r->chat && !r->chat->reasoning_inline) cv_core_out_split(&g->out, cv_think_prompt_opens(g->slot->tok, prompt, n));
    g->render_special = cv_tool_syntax_needs_markers(r->tools.syntax);
    g->tool_grammar = r->tools.grammar;
    if (r->tools.syntax != CV_TOOL_SYNTAX_NONE && cv_core_out_tools(&g->out, r->tools.syntax, r->tools.max_calls))
        return -1;
    return 0;
}

/* ---- retrieval-augmented requests: rag_request.h does the work; here the protobuf
 * request becomes a cv_rag_request and the result becomes stream messages ---- */

/* One RAG request while its retrieval runs. */
typedef struct rag_job {
    gen_stream *g;
    infer_req req;       /* owned */
    cv_rag_msg *msgs;    /* chat's messages, for the rag layer */
    double t0;
} rag_job;

/* The model as the rag layer sees it (user: the job). */
static size_t rag_count_tokens(void *user, const char *text, size_t len) {
    const rag_job *j = user;
    return cv_core_count_tokens(j->g->slot->tok, text, len);
}

static cv_status rag_encode_prompt(void *user, const char *text, int32_t **ids, size_t *n_ids, cv_error *err) {
    const rag_job *j = user;
    return cv_core_tokenize(j->g->slot->tok, text, j->req.gen->raw ? 0 : CV_TOK_ADD_SPECIAL, ids, n_ids, err);
}

static cv_status rag_encode_chat(void *user, const cv_rag_msg *m, size_t n, int32_t **ids, size_t *n_ids,
                                 cv_error *err) {
    const rag_job *j = user;
    cv_chat_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs) return cv_errorf(err, CV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) msgs[i] = (cv_chat_msg){.role = m[i].role, .content = m[i].content};
    const cv_chat_opts o = chat_opts(j->req.tools.template_tools, j->req.chat->chat_template_kwargs);
    cv_status st = cv_chat_format_encode(j->g->slot->tok, j->req.fmt, msgs, n, &o, CV_TOK_ADD_SPECIAL, ids, n_ids, err);
    free(msgs);
    return st;
}

/* The Context message listing the kept passages in citation order. */
static cv_status pack_context(gen_stream *g, const cv_rag_outcome *o) {
    size_t n = o->ctx.n_kept;
    Corvid__V1__Citation *c = calloc(n, sizeof *c);
    Corvid__V1__Citation **cp = calloc(n, sizeof *cp);
    cv_status st = CV_ENOMEM;
    if (!c || !cp) goto out;
    for (size_t i = 0; i < n; i++) {
        const cv_rag_passage *p = &o->passages[o->ctx.kept[i]];
        corvid__v1__citation__init(&c[i]);
        c[i].source = (char *)p->source;
        c[i].document_id = (char *)p->doc_id;
        c[i].title = (char *)p->title;
        c[i].url = (char *)p->url;
        c[i].score = p->score;
        cp[i] = &c[i];
    }
    Corvid__V1__Context ctx = CORVID__V1__CONTEXT__INIT;
    ctx.n_citations = n;
    ctx.citations = cp;
    Corvid__V1__GenerateResponse r = CORVID__V1__GENERATE_RESPONSE__INIT;
    r.kind_case = CORVID__V1__GENERATE_RESPONSE__KIND_CONTEXT;
    r.context = &ctx;
    g->context_msg = pack_response(&r, &g->context_len);
    if (g->context_msg) st = CV_OK;
out:
    free(c);
    free(cp);
    return st;
}

/* Streams the configured answer as one chunk and a Final, without the model. */
static void stream_default_answer(gen_stream *g, const char *answer, double t0) {
    size_t len = strlen(answer);
    pthread_mutex_lock(&g->mu);
    if (cv_core_out_append(&g->out, answer, len, NULL, 0, NULL) == 0) {
        g->out.final.reason = CV_FINISH_STOP;
    } else {
        snprintf(g->out.error, sizeof g->out.error, "out of memory");
        g->out.final.reason = CV_FINISH_ERROR;
    }
    g->out.final.total_s = cv_seconds() - t0;
    g->default_answer = 1;
    g->out.have_final = 1;
    pthread_mutex_unlock(&g->mu);
    cv_rpc_stream_wake(g->call);
    cv_rpc_call_release(g->call);
}

/* The job's end (on its thread): the result into the stream, then the request is freed. */
static void rag_done(void *user, const cv_rag_result *r) {
    rag_job *j = user;
    gen_stream *g = j->g;
    if (r->status != CV_OK) {
        stream_fail(g, cv_core_code_of(r->status), r->error);
    } else if (r->default_answer) {
        stream_default_answer(g, r->default_answer, j->t0);
    } else if (r->outcome->ctx.n_kept && pack_context(g, r->outcome) != CV_OK) {
        stream_fail(g, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
    } else if (cv_rag_service_guard(g->inf->rag.cfg.service) &&
               cv_core_out_guard(&g->out, r, j->req.gen && r->outcome->ctx.n_kept,
                                 cv_rag_service_check_answers(g->inf->rag.cfg.service))) {
        stream_fail(g, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
    } else if (answer_setup(g, &j->req, r->ids, r->n_ids)) {
        stream_fail(g, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        g->context_tokens = (uint32_t)r->outcome->ctx.tokens;
        stream_submit(g, r->ids, r->n_ids, req_sampling(&j->req), r->extra_stop, r->outcome);
    }
    req_free(&j->req);
    free(j->msgs);
    free(j);
}

/* Takes the request over (the job frees it) and answers through a stream once
 * retrieval is done. Returns 0 when the job owns the request. */
static int rag_start(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const infer_req *r) {
    const char *rid = r->gen ? r->gen->request_id : r->chat->request_id;
    if (!inf->rag.cfg.service) {
        refuse(inf, slot, call, rid, CV_RPC_FAILED_PRECONDITION,
               "rag: this server has no knowledge base or live source configured "
               "(rag_knowledge_bases, rag_sources)");
        return -1;
    }
    size_t n_msgs = r->chat ? r->chat->n_messages : 0;
    rag_job *j = malloc(sizeof *j);
    cv_rag_msg *msgs = calloc(n_msgs ? n_msgs : 1, sizeof *msgs);
    if (!j || !msgs) {
        free(j);
        free(msgs);
        refuse(inf, slot, call, rid, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *j = (rag_job){.req = *r, .msgs = msgs, .t0 = cv_seconds()};
    for (size_t i = 0; i < n_msgs; i++)
        msgs[i] = (cv_rag_msg){r->chat->messages[i]->role, r->chat->messages[i]->content};
    if (!(j->g = stream_open(inf, slot, call, rid))) {
        free(msgs);
        free(j);
        return -1;
    }
    const Corvid__V1__RagOptions *ro = r->gen ? r->gen->rag : r->chat->rag;
    const Corvid__V1__SamplingParams *sp = req_sampling(r);
    cv_rag_request req = {
        .request_id = j->g->request_id,
        .trace = &j->g->trace.ctx,
        .prompt = r->gen ? r->gen->prompt : NULL,
        .messages = msgs,
        .n_messages = n_msgs,
        .max_tokens = sp ? sp->max_tokens : 0,
        .options = {.knowledge_base = ro->knowledge_base, .top_k = ro->top_k, .min_score = ro->min_score,
                    .sources = (const char *const *)ro->sources, .n_sources = ro->n_sources,
                    .policy = ro->policy},
        .model = {rag_count_tokens, rag_encode_prompt, rag_encode_chat, j,
                  (size_t)cv_engine_n_ctx(slot->engine)},
    };
    cv_error err = {0};
    cv_status st = cv_rag_request_start(&inf->rag, &req, rag_done, j, &err);
    if (st != CV_OK) {
        stream_fail(j->g, cv_core_code_of(st), err.msg);
        free(msgs);
        free(j);
        return -1;
    }
    return 0;
}

/* ---- tokenizing on the request pool: the same shape as a retrieval job (the stream
 * is open and holds the call while the job runs; the job submits or fails it from the
 * pool's thread), without the retrieval ---- */

typedef struct prep_job {
    gen_stream *g;
    infer_req req; /* owned */
} prep_job;

/* On a pool worker: the prompt's ids (the chat template rendered first), then the engine. */
static void prep_run(void *user) {
    prep_job *j = user;
    gen_stream *g = j->g;
    pthread_mutex_lock(&g->mu);
    int gone = g->client_gone;
    pthread_mutex_unlock(&g->mu);
    int32_t *ids = NULL;
    size_t n = 0;
    cv_error err = {0};
    cv_status st = CV_OK;
    if (gone) { /* cancelled, disconnected or past its deadline while queued: no work, no one to tell */
        stream_fail(g, CV_RPC_CANCELLED, "cancelled while waiting to be tokenized");
        goto out;
    }
    if (j->req.gen)
        st = cv_core_tokenize(g->slot->tok, j->req.gen->prompt, j->req.gen->raw ? 0 : CV_TOK_ADD_SPECIAL, &ids, &n, &err);
    else {
        const cv_chat_opts o = chat_opts(j->req.tools.template_tools, j->req.chat->chat_template_kwargs);
        st = encode_messages(g->slot->tok, j->req.fmt, j->req.chat->messages, j->req.chat->n_messages, &o,
                             CV_TOK_ADD_SPECIAL, &ids, &n, &err);
    }
    if (st != CV_OK) stream_fail(g, cv_core_code_of(st), err.msg);
    else if (answer_setup(g, &j->req, ids, n)) stream_fail(g, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
    else stream_submit(g, ids, n, req_sampling(&j->req), NULL, NULL);
out:
    free(ids);
    req_free(&j->req);
    free(j);
}

/* Opens the stream and queues the request (bytes: its prompt's) on the pool. 0 when
 * the job took the request over; otherwise the call was answered and it is the
 * caller's to free. */
static int prep_start(cv_infer *inf, cv_slot *slot, cv_rpc_call *call, const infer_req *r, size_t bytes) {
    const char *rid = r->gen ? r->gen->request_id : r->chat->request_id;
    prep_job *j = malloc(sizeof *j);
    if (!j) {
        refuse(inf, slot, call, rid, CV_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    *j = (prep_job){.req = *r};
    if (!(j->g = stream_open(inf, slot, call, rid))) {
        free(j);
        return -1;
    }
    gen_stream *g = j->g;
    cv_error err = {0};
    if (cv_request_pool_submit(inf->pool, prep_run, j, bytes, &err) != CV_OK) {
        free(j);
        stream_fail(g, cv_core_code_of(err.code), err.msg);
        return -1;
    }
    return 0;
}

/* Generate and Chat once unpacked: validated, then handed to the request pool (which
 * tokenizes and submits) or to a retrieval job. The request is freed here unless the
 * job took it. */
static void serve(cv_infer *inf, cv_rpc_call *call, infer_req r) {
    const char *model = r.gen ? r.gen->model : r.chat->model;
    const char *version = r.gen ? r.gen->model_version : r.chat->model_version;
    const char *rid = r.gen ? r.gen->request_id : r.chat->request_id;
    const Corvid__V1__RagOptions *ro = r.gen ? r.gen->rag : r.chat->rag;
    cv_error err = {0};
    cv_slot *slot = pick_slot(inf, call, model, version, rid);
    if (!slot || injected_fault(inf, slot, call, rid)) goto out;
    size_t bytes = r.gen ? cv_rpc_pb_strlen(r.gen->prompt) : messages_bytes(r.chat->messages, r.chat->n_messages);
    if (check_prompt_size(inf, slot, r.gen ? "prompt" : "messages", bytes, &err) != CV_OK) {
        refuse(inf, slot, call, rid, CV_RPC_INVALID_ARGUMENT, err.msg);
        goto out;
    }
    if (r.gen && !r.gen->prompt[0]) {
        refuse(inf, slot, call, rid, CV_RPC_INVALID_ARGUMENT, "prompt: must not be empty");
        goto out;
    }
    if (check_sampling(req_sampling(&r), &err) != CV_OK) {
        refuse(inf, slot, call, rid, CV_RPC_INVALID_ARGUMENT, err.msg);
        goto out;
    }
    cv_rpc_code code = r.chat ? cv_core_chat_format(slot, r.chat->chat_template, &r.fmt, &err) : CV_RPC_OK;
    if (code != CV_RPC_OK) {
        refuse(inf, slot, call, rid, code, err.msg);
        goto out;
    }
    /* Roles and their order, on the messages as sent (a RAG request adds a system
     * message later, which would shift the indices the errors name). */
    if (r.chat && cv_tool_plan_make(r.fmt, r.chat->tools, r.chat->tool_choice, r.chat->tool_choice_function,
                                    !r.chat->single_tool_call, &r.tools, &err) != CV_OK) {
        refuse(inf, slot, call, rid, cv_core_code_of(err.code), err.msg);
        goto out;
    }
    const Corvid__V1__SamplingParams *sp = req_sampling(&r);
    if (r.tools.grammar && sp &&
        ((sp->grammar && sp->grammar[0]) || (sp->json_schema && sp->json_schema[0]) || sp->json_object)) {
        refuse(inf, slot, call, rid, CV_RPC_INVALID_ARGUMENT,
               "sampling: grammar, json_schema and json_object do not go with a required tool call (tool_choice), "
               "which is constrained already");
        goto out;
    }
    const cv_chat_opts chat_o =
        r.chat ? chat_opts(r.tools.template_tools, r.chat->chat_template_kwargs) : (cv_chat_opts){0};
    if (r.chat && check_messages(r.fmt, r.chat->messages, r.chat->n_messages, &chat_o, &err) != CV_OK) {
        refuse(inf, slot, call, rid, cv_core_code_of(err.code), err.msg);
        goto out;
    }
    if (ro && ro->enable ? rag_start(inf, slot, call, &r) == 0 : prep_start(inf, slot, call, &r, bytes) == 0)
        r = (infer_req){0}; /* the job owns it now */
out:
    req_free(&r);
}

/* Every request of this service is unpacked by cv_rpc_unpack_request, and only there
 * are its text fields (prompt, messages[i].content and role, sampling.stop[i], text,
 * rag.*, ...) checked, for UTF-8 and NUL in one pass (rpc_message.h says how and why);
 * NULL after it answered INVALID_ARGUMENT. */

static void on_generate(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    Corvid__V1__GenerateRequest *r = cv_rpc_unpack_request(&corvid__v1__generate_request__descriptor, call, req, len);
    if (r) serve(ctx, call, (infer_req){.gen = r});
}

static void on_chat(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    Corvid__V1__ChatRequest *r = cv_rpc_unpack_request(&corvid__v1__chat_request__descriptor, call, req, len);
    if (r) serve(ctx, call, (infer_req){.chat = r});
}

/* A Tokenize call held while the pool tokenizes it. */
typedef struct tok_job {
    cv_infer *inf;
    cv_rpc_call *call; /* held */
    cv_slot *slot;     /* acquired */
    Corvid__V1__TokenizeRequest *r; /* owned */
    unsigned flags;
    const cv_chat_format *fmt; /* with messages */
} tok_job;

/* The ids and pieces of a checked request, as the call's answer. */
static void tokenize_reply(const tok_job *j) {
    const cv_tok *tok = j->slot->tok;
    const Corvid__V1__TokenizeRequest *r = j->r;
    int32_t *ids = NULL;
    size_t n = 0;
    char **pieces = NULL;
    cv_error err = {0};
    const cv_chat_opts o = chat_opts(r->tools, r->chat_template_kwargs);
    cv_status st = r->n_messages ? encode_messages(tok, j->fmt, r->messages, r->n_messages, &o, j->flags, &ids, &n, &err)
                                 : cv_core_tokenize(tok, r->text, j->flags, &ids, &n, &err);
    if (st != CV_OK) {
        cv_rpc_reply(j->call, cv_core_code_of(st), err.msg, NULL, 0);
        goto out;
    }
    pieces = calloc(n ? n : 1, sizeof *pieces);
    if (!pieces) {
        cv_rpc_reply(j->call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t plen;
        if (cv_tok_piece(tok, ids[i], CV_TOK_RENDER_SPECIAL, &p, &plen, &err) != CV_OK) plen = 0;
        pieces[i] = strndup(plen ? p : "", plen);
        if (!pieces[i]) {
            cv_rpc_reply(j->call, CV_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
            goto out;
        }
    }
    Corvid__V1__TokenizeResponse resp = CORVID__V1__TOKENIZE_RESPONSE__INIT;
    resp.n_ids = n;
    resp.ids = ids;
    resp.n_pieces = n;
    resp.pieces = pieces;
    resp.model_version = j->slot->version;
    cv_rpc_reply_message(j->call, &resp.base);
out:
    for (size_t i = 0; pieces && i < n; i++) free(pieces[i]);
    free(pieces);
    free(ids);
}

/* On a pool worker; a call whose client went away while queued gets no work. */
static void tok_run(void *user) {
    tok_job *j = user;
    if (!cv_rpc_cancelled(j->call)) tokenize_reply(j);
    cv_router_release(j->inf->router, j->slot);
    cv_rpc_free_request(&j->r->base);
    cv_rpc_call_release(j->call);
    free(j);
}

/* Checked here (cheap, and the errors need no tokenizer), tokenized on the pool. */
static void on_tokenize(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_infer *inf = ctx;
    Corvid__V1__TokenizeRequest *r = cv_rpc_unpack_request(&corvid__v1__tokenize_request__descriptor, call, req, len);
    if (!r) return;
    tok_job *j = NULL;
    cv_error err = {0};
    cv_rpc_code code = CV_RPC_INVALID_ARGUMENT;
    const cv_chat_format *fmt = NULL;
    cv_slot *slot = pick_slot(inf, call, r->model, r->model_version, NULL);
    if (!slot) goto out;
    size_t bytes = r->n_messages ? messages_bytes(r->messages, r->n_messages) : cv_rpc_pb_strlen(r->text);
    if (check_prompt_size(inf, slot, r->n_messages ? "messages" : "text", bytes, &err) != CV_OK) goto fail;
    if (r->n_messages && (r->text[0] || r->parse_special)) {
        cv_errorf(&err, CV_EINVAL, "messages: tokenized as Chat would, so text and parse_special must be unset");
        goto fail;
    }
    if (!r->n_messages && (r->chat_template[0] || r->tools[0] || r->chat_template_kwargs[0])) {
        cv_errorf(&err, CV_EINVAL, "%s: only with messages",
                  r->chat_template[0] ? "chat_template" : r->tools[0] ? "tools" : "chat_template_kwargs");
        goto fail;
    }
    if (r->n_messages && (code = cv_core_chat_format(slot, r->chat_template, &fmt, &err)) != CV_RPC_OK) goto fail;
    if (!(j = malloc(sizeof *j))) {
        code = CV_RPC_RESOURCE_EXHAUSTED;
        cv_errorf(&err, CV_ENOMEM, "out of memory");
        goto fail;
    }
    *j = (tok_job){inf, call, slot, r, (r->raw ? 0 : CV_TOK_ADD_SPECIAL) | (r->parse_special ? CV_TOK_PARSE_SPECIAL : 0),
                   fmt};
    cv_rpc_hold(call);
    if (cv_request_pool_submit(inf->pool, tok_run, j, bytes, &err) == CV_OK) return; /* tok_run owns it all */
    cv_rpc_call_release(call);
    free(j);
    code = cv_core_code_of(err.code);
fail:
    cv_rpc_reply(call, code, err.msg, NULL, 0);
    cv_router_release(inf->router, slot);
out:
    cv_rpc_free_request(&r->base);
}

static void on_list_models(void *ctx, cv_rpc_call *call, const uint8_t *req, size_t len) {
    cv_infer *inf = ctx;
    Corvid__V1__ListModelsRequest *r =
        cv_rpc_unpack_request(&corvid__v1__list_models_request__descriptor, call, req, len);
    if (!r) return;
    cv_rpc_free_request(&r->base);
    cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
    int n = cv_router_snapshot(inf->router, 1, info);
    Corvid__V1__ModelInfo mi[CV_ROUTER_MAX_VERSIONS], *list[CV_ROUTER_MAX_VERSIONS];
    for (int i = 0; i < n; i++) {
        corvid__v1__model_info__init(&mi[i]);
        mi[i].name = info[i].name;
        mi[i].version = info[i].version;
        mi[i].architecture = info[i].architecture;
        mi[i].context_length = (uint32_t)info[i].n_ctx;
        mi[i].vocab_size = (uint32_t)info[i].n_vocab;
        mi[i].state = (char *)cv_slot_state_name(info[i].state);
        mi[i].chat_template = info[i].chat_template;
        mi[i].traffic_weight = info[i].weight;
        list[i] = &mi[i];
    }
    Corvid__V1__ListModelsResponse resp = CORVID__V1__LIST_MODELS_RESPONSE__INIT;
    resp.n_models = (size_t)n;
    resp.models = list;
    cv_rpc_reply_message(call, &resp.base);
}

cv_status cv_infer_new(cv_router *router, const cv_infer_options *opt, cv_infer **out, cv_error *err) {
    cv_infer *inf = calloc(1, sizeof *inf);
    if (!inf) return cv_errorf(err, CV_ENOMEM, "inference service: out of memory");
    inf->router = router;
    inf->opt = *opt;
    atomic_init(&inf->in_flight, 0);
    cv_rag_runner_init(&inf->rag, &(cv_rag_runner_config){0});
    cv_request_pool_config pc = {.threads = opt->request_threads ? opt->request_threads : CV_INFER_REQUEST_THREADS,
                                 .max_queued = opt->request_queue ? opt->request_queue : CV_INFER_REQUEST_QUEUE,
                                 .large_cost = CV_INFER_LARGE_PROMPT_BYTES,
                                 .nice = CV_INFER_REQUEST_NICE};
    cv_status st = cv_request_pool_new(&pc, &inf->pool, err);
    if (st != CV_OK) {
        free(inf);
        return st;
    }
    *out = inf;
    return CV_OK;
}

cv_status cv_infer_register(cv_infer *inf, cv_rpc_server *srv, cv_error *err) {
    static const cv_rpc_method_def methods[] = {
        {"/corvid.v1.Inference/Generate", on_generate},
        {"/corvid.v1.Inference/Chat", on_chat},
        {"/corvid.v1.Inference/Tokenize", on_tokenize},
        {"/corvid.v1.Inference/ListModels", on_list_models},
    };
    return cv_rpc_register_all(srv, methods, sizeof methods / sizeof methods[0], inf, err);
}

void cv_infer_set_rag(cv_infer *inf, cv_rag_service *rag) {
    cv_rag_runner_init(&inf->rag, &(cv_rag_runner_config){.service = rag});
}

cv_request_pool *cv_infer_pool(cv_infer *inf) { return inf->pool; }

cv_rag_runner *cv_infer_rag(cv_infer *inf) { return &inf->rag; }

int cv_infer_in_flight(cv_infer *inf) { return atomic_load(&inf->in_flight); }

void cv_infer_free(cv_infer *inf) {
    if (!inf) return;
    cv_request_pool_free(inf->pool);
    free(inf);
}
