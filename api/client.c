#include <stdlib.h>
#include <string.h>

#include "corvid/client.h"
#include "corvid/v1/inference.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_status.h"
#include "rpc_client.h"

struct corvid_client {
    cv_rpcc_channel *ch;
};

struct corvid_stream {
    cv_rpcc_call *call;
    Corvid__V1__GenerateResponse *cur;  /* the message the last event points into */
    corvid_citation *citations;
};

const char *corvid_code_name(int code) {
    return code == CORVID_CLIENT_ERROR ? "CLIENT_ERROR" : cv_grpc_status_name(code);
}

cv_rpcc_channel *cv_client_channel(corvid_client *c) { return c->ch; }

int corvid_client_new(const corvid_client_options *opt, corvid_client **out, corvid_error *err) {
    corvid_client *c = calloc(1, sizeof *c);
    if (!c) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    if (cv_rpcc_channel_new(opt, &c->ch, err) != 0) {
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void corvid_client_free(corvid_client *c) {
    if (!c) return;
    cv_rpcc_channel_free(c->ch);
    free(c);
}

/* Packs m and starts a call; the packed bytes are freed here. */
static int start_packed(corvid_client *c, const char *method, const ProtobufCMessage *m,
                        cv_rpcc_call **call, corvid_error *err) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    protobuf_c_message_pack(m, buf);
    int r = cv_rpcc_start(c->ch, method, buf, n, call, err);
    free(buf);
    return r;
}

static int unary_packed(corvid_client *c, const char *method, const ProtobufCMessage *m,
                        uint8_t **resp, size_t *resp_len, corvid_error *err) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    protobuf_c_message_pack(m, buf);
    int r = cv_rpcc_unary(c->ch, method, buf, n, resp, resp_len, err);
    free(buf);
    return r;
}

/* The proto message borrows from s (no copies): it lives only while packing. */
static void sampling_to_proto(const corvid_sampling *s, Corvid__V1__SamplingParams *p,
                              Corvid__V1__UInt64Value *seed) {
    corvid__v1__sampling_params__init(p);
    p->temperature = s->temperature;
    p->top_k = s->top_k;
    p->top_p = s->top_p;
    p->min_p = s->min_p;
    p->repetition_penalty = s->repetition_penalty;
    if (s->has_seed) {
        corvid__v1__uint64_value__init(seed);
        seed->value = s->seed;
        p->seed = seed;
    }
    p->max_tokens = s->max_tokens;
    p->n_stop = s->n_stop;
    p->stop = (char **)s->stop;
    p->logprobs = s->logprobs;
    p->ignore_eos = s->ignore_eos;
}

static char *str_or_empty(const char *s) { return (char *)(s ? s : ""); }

/* NULL when RAG is off; borrows from o like sampling_to_proto. */
static Corvid__V1__RagOptions *rag_to_proto(const corvid_rag_options *o, Corvid__V1__RagOptions *p) {
    if (!o->enable) return NULL;
    corvid__v1__rag_options__init(p);
    p->enable = 1;
    p->knowledge_base = str_or_empty(o->knowledge_base);
    p->top_k = o->top_k;
    p->min_score = o->min_score;
    p->n_sources = o->n_sources;
    p->sources = (char **)o->sources;
    p->policy = str_or_empty(o->policy);
    return p;
}

static int open_stream(corvid_client *c, const char *method, const ProtobufCMessage *m,
                       corvid_stream **out, corvid_error *err) {
    corvid_stream *s = calloc(1, sizeof *s);
    if (!s) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    if (start_packed(c, method, m, &s->call, err) != 0) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int corvid_generate(corvid_client *c, const corvid_generate_params *p, corvid_stream **out,
                    corvid_error *err) {
    Corvid__V1__GenerateRequest r = CORVID__V1__GENERATE_REQUEST__INIT;
    Corvid__V1__SamplingParams sp;
    Corvid__V1__UInt64Value seed;
    sampling_to_proto(&p->sampling, &sp, &seed);
    r.prompt = str_or_empty(p->prompt);
    r.model = str_or_empty(p->model);
    r.model_version = str_or_empty(p->model_version);
    r.request_id = str_or_empty(p->request_id);
    r.raw = p->raw;
    r.sampling = &sp;
    Corvid__V1__RagOptions rag;
    r.rag = rag_to_proto(&p->rag, &rag);
    return open_stream(c, "/corvid.v1.Inference/Generate", &r.base, out, err);
}

int corvid_chat(corvid_client *c, const corvid_chat_params *p, corvid_stream **out, corvid_error *err) {
    Corvid__V1__ChatRequest r = CORVID__V1__CHAT_REQUEST__INIT;
    Corvid__V1__SamplingParams sp;
    Corvid__V1__UInt64Value seed;
    sampling_to_proto(&p->sampling, &sp, &seed);
    Corvid__V1__ChatMessage *msgs = calloc(p->n_messages ? p->n_messages : 1, sizeof *msgs);
    Corvid__V1__ChatMessage **ptrs = calloc(p->n_messages ? p->n_messages : 1, sizeof *ptrs);
    if (!msgs || !ptrs) {
        free(msgs);
        free(ptrs);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    }
    for (size_t i = 0; i < p->n_messages; i++) {
        corvid__v1__chat_message__init(&msgs[i]);
        msgs[i].role = str_or_empty(p->messages[i].role);
        msgs[i].content = str_or_empty(p->messages[i].content);
        ptrs[i] = &msgs[i];
    }
    r.n_messages = p->n_messages;
    r.messages = ptrs;
    r.model = str_or_empty(p->model);
    r.model_version = str_or_empty(p->model_version);
    r.request_id = str_or_empty(p->request_id);
    r.chat_template = str_or_empty(p->chat_template);
    r.sampling = &sp;
    Corvid__V1__RagOptions rag;
    r.rag = rag_to_proto(&p->rag, &rag);
    int rc = open_stream(c, "/corvid.v1.Inference/Chat", &r.base, out, err);
    free(msgs);
    free(ptrs);
    return rc;
}

static const char *finish_name(Corvid__V1__FinishReason r) {
    switch (r) {
    case CORVID__V1__FINISH_REASON__FINISH_REASON_STOP: return "stop";
    case CORVID__V1__FINISH_REASON__FINISH_REASON_LENGTH: return "length";
    case CORVID__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return "cancelled";
    case CORVID__V1__FINISH_REASON__FINISH_REASON_ERROR: return "error";
    default: return "unspecified";
    }
}

int corvid_stream_next(corvid_stream *s, corvid_event *ev, corvid_error *err) {
    if (s->cur) corvid__v1__generate_response__free_unpacked(s->cur, NULL);
    s->cur = NULL;
    free(s->citations);
    s->citations = NULL;
    uint8_t *msg;
    size_t len;
    int r = cv_rpcc_next(s->call, &msg, &len, err);
    if (r != 1) return r;
    s->cur = corvid__v1__generate_response__unpack(NULL, len, msg);
    free(msg);
    if (!s->cur) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed GenerateResponse from the server");
    memset(ev, 0, sizeof *ev);
    Corvid__V1__GenerateResponse *m = s->cur;
    switch (m->kind_case) {
    case CORVID__V1__GENERATE_RESPONSE__KIND_CHUNK:
        ev->kind = CORVID_EVENT_CHUNK;
        ev->text = m->chunk->text;
        ev->text_len = strlen(m->chunk->text);
        ev->token_ids = m->chunk->token_ids;
        ev->n_token_ids = m->chunk->n_token_ids;
        return 1;
    case CORVID__V1__GENERATE_RESPONSE__KIND_CONTEXT: {
        ev->kind = CORVID_EVENT_CONTEXT;
        size_t n = m->context->n_citations;
        s->citations = calloc(n ? n : 1, sizeof *s->citations);
        if (!s->citations) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const Corvid__V1__Citation *c = m->context->citations[i];
            s->citations[i] = (corvid_citation){c->source, c->document_id, c->title, c->url, c->score};
        }
        ev->citations = s->citations;
        ev->n_citations = n;
        return 1;
    }
    case CORVID__V1__GENERATE_RESPONSE__KIND_FINAL: {
        const Corvid__V1__Final *f = m->final;
        ev->kind = CORVID_EVENT_FINAL;
        ev->final.finish_reason = finish_name(f->finish_reason);
        if (f->usage) {
            ev->final.prompt_tokens = f->usage->prompt_tokens;
            ev->final.completion_tokens = f->usage->completion_tokens;
            ev->final.context_tokens = f->usage->context_tokens;
        }
        ev->final.model_version = f->model_version;
        ev->final.ttft_ms = f->time_to_first_token_ms;
        ev->final.total_ms = f->total_ms;
        ev->final.error = f->error;
        ev->final.stop_string = f->stop_string;
        ev->final.request_id = f->request_id;
        ev->final.seed = f->seed;
        ev->final.default_answer = f->default_answer;
        return 1;
    }
    default:
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "response message of an unknown kind");
    }
}

void corvid_stream_cancel(corvid_stream *s) { cv_rpcc_cancel(s->call); }

void corvid_stream_free(corvid_stream *s) {
    if (!s) return;
    if (s->cur) corvid__v1__generate_response__free_unpacked(s->cur, NULL);
    free(s->citations);
    cv_rpcc_free(s->call);
    free(s);
}

int corvid_tokenize(corvid_client *c, const char *model, const char *text, int raw, int32_t **ids,
                    size_t *n_ids, corvid_error *err) {
    corvid_tokenize_params p = {.text = text, .model = model, .raw = raw};
    return corvid_tokenize_with(c, &p, ids, n_ids, err);
}

int corvid_tokenize_with(corvid_client *c, const corvid_tokenize_params *p, int32_t **ids, size_t *n_ids,
                         corvid_error *err) {
    Corvid__V1__TokenizeRequest r = CORVID__V1__TOKENIZE_REQUEST__INIT;
    r.model = str_or_empty(p->model);
    r.model_version = str_or_empty(p->model_version);
    r.text = str_or_empty(p->text);
    r.raw = p->raw;
    r.parse_special = p->parse_special;
    uint8_t *resp;
    size_t len;
    if (unary_packed(c, "/corvid.v1.Inference/Tokenize", &r.base, &resp, &len, err) != 0) return -1;
    Corvid__V1__TokenizeResponse *t = corvid__v1__tokenize_response__unpack(NULL, len, resp);
    free(resp);
    if (!t) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed TokenizeResponse from the server");
    *ids = malloc(sizeof **ids * (t->n_ids ? t->n_ids : 1));
    if (*ids) memcpy(*ids, t->ids, sizeof **ids * t->n_ids);
    *n_ids = t->n_ids;
    corvid__v1__tokenize_response__free_unpacked(t, NULL);
    return *ids ? 0 : cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
}

static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

int corvid_list_models(corvid_client *c, corvid_model_info **models, size_t *n, corvid_error *err) {
    Corvid__V1__ListModelsRequest r = CORVID__V1__LIST_MODELS_REQUEST__INIT;
    uint8_t *resp;
    size_t len;
    if (unary_packed(c, "/corvid.v1.Inference/ListModels", &r.base, &resp, &len, err) != 0) return -1;
    Corvid__V1__ListModelsResponse *l = corvid__v1__list_models_response__unpack(NULL, len, resp);
    free(resp);
    if (!l) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed ListModelsResponse from the server");
    *models = calloc(l->n_models ? l->n_models : 1, sizeof **models);
    if (!*models) {
        corvid__v1__list_models_response__free_unpacked(l, NULL);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    }
    for (size_t i = 0; i < l->n_models; i++) {
        const Corvid__V1__ModelInfo *m = l->models[i];
        corvid_model_info *o = &(*models)[i];
        copy_str(o->name, sizeof o->name, m->name);
        copy_str(o->version, sizeof o->version, m->version);
        copy_str(o->architecture, sizeof o->architecture, m->architecture);
        copy_str(o->state, sizeof o->state, m->state);
        copy_str(o->chat_template, sizeof o->chat_template, m->chat_template);
        o->context_length = m->context_length;
        o->vocab_size = m->vocab_size;
        o->traffic_weight = m->traffic_weight;
    }
    *n = l->n_models;
    corvid__v1__list_models_response__free_unpacked(l, NULL);
    return 0;
}

int corvid_health(corvid_client *c, const char *service, int *serving, corvid_error *err) {
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = str_or_empty(service);
    uint8_t *resp;
    size_t len;
    if (unary_packed(c, "/grpc.health.v1.Health/Check", &r.base, &resp, &len, err) != 0) return -1;
    Grpc__Health__V1__HealthCheckResponse *h = grpc__health__v1__health_check_response__unpack(NULL, len, resp);
    free(resp);
    if (!h) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed HealthCheckResponse from the server");
    *serving = h->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc__health__v1__health_check_response__free_unpacked(h, NULL);
    return 0;
}
