#include "openai_request.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar.h"
#include "json_error.h"
#include "json_schema.h"
#include "text_field.h"
#include "utf8.h"

/* What the request's strings point into. */
typedef struct parsed {
    json_t *doc;
    char **joined;  /* content part arrays joined into one text, one per message */
    size_t n_joined;
    char *grammar;  /* compiled from response_format */
    char **dumped;  /* JSON texts made from the request: tools, each message's tool_calls */
    size_t n_dumped;
} parsed;

static cv_status fail(cv_oai_error *err, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static cv_status fail(cv_oai_error *err, const char *param, const char *fmt, ...) {
    snprintf(err->param, sizeof err->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return CV_EINVAL;
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE: case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static cv_status wrong_type(cv_oai_error *err, const char *param, const char *want, const json_t *v) {
    if (!v) return fail(err, param, "%s: required (%s)", param, want);
    return fail(err, param, "%s: expected %s, got %s", param, want, type_name(v));
}

/* A text field: a string of acceptable text (text_field.h). */
static cv_status get_text(const json_t *v, const char *param, const char **out, cv_oai_error *err) {
    if (!json_is_string(v)) return wrong_type(err, param, "a string", v);
    char msg[sizeof err->message];
    if (cv_text_field_check(json_string_value(v), json_string_length(v), param, msg, sizeof msg) != 0)
        return fail(err, param, "%s", msg);
    *out = json_string_value(v);
    return CV_OK;
}

static cv_status get_number(const json_t *v, const char *param, double lo, double hi, int lo_open, float *out,
                            cv_oai_error *err) {
    if (!json_is_number(v)) return wrong_type(err, param, "a number", v);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        return fail(err, param, "%s: %g is outside %s%g, %g]", param, d, lo_open ? "(" : "[", lo, hi);
    *out = (float)d;
    return CV_OK;
}

static cv_status get_int(const json_t *v, const char *param, json_int_t lo, json_int_t hi, json_int_t *out,
                         cv_oai_error *err) {
    if (!json_is_integer(v)) return wrong_type(err, param, "an integer", v);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return fail(err, param, "%s: %lld is outside [%lld, %lld]", param, (long long)i, (long long)lo,
                    (long long)hi);
    *out = i;
    return CV_OK;
}

static cv_status get_bool(const json_t *v, const char *param, int *out, cv_oai_error *err) {
    if (!json_is_boolean(v)) return wrong_type(err, param, "a boolean", v);
    *out = json_is_true(v);
    return CV_OK;
}

/* The member, or NULL when absent or null. */
static json_t *member(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

/* A message's content: a string, or text parts joined (kept in p). */
static cv_status message_content(parsed *p, const json_t *c, size_t i, const char **out, cv_oai_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (json_is_string(c)) return get_text(c, param, out, err);
    if (!json_is_array(c)) return wrong_type(err, param, "a string or an array of text parts", c);
    size_t total = 0, k;
    json_t *part;
    json_array_foreach(c, k, part) {
        char pp[96];
        snprintf(pp, sizeof pp, "%s[%zu]", param, k);
        if (!json_is_object(part)) return wrong_type(err, pp, "an object", part);
        json_t *type = json_object_get(part, "type");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return fail(err, pp, "%s.type: only \"text\" parts are supported", pp);
        char tp[112];
        snprintf(tp, sizeof tp, "%s.text", pp);
        const char *t;
        if (get_text(json_object_get(part, "text"), tp, &t, err) != CV_OK) return CV_EINVAL;
        total += strlen(t);
    }
    char *joined = malloc(total + 1);
    if (!joined) return fail(err, param, "%s: out of memory", param);
    p->joined[p->n_joined++] = joined;
    size_t at = 0;
    json_array_foreach(c, k, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        size_t n = strlen(t);
        memcpy(joined + at, t, n);
        at += n;
    }
    joined[at] = 0;
    *out = joined;
    return CV_OK;
}

/* v as JSON text that lives with the request; v is taken. */
static const char *dump(parsed *p, json_t *v, const char *param, cv_oai_error *err) {
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) {
        fail(err, param, "%s: out of memory", param);
        return NULL;
    }
    p->dumped[p->n_dumped++] = s;
    return s;
}

/* An assistant's tool_calls as the templates read them (Hugging Face's form):
 * function.arguments an object where OpenAI sends it as a JSON string. */
static cv_status message_tool_calls(parsed *p, const json_t *calls, size_t i, const char **out, cv_oai_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
    if (!json_is_array(calls)) return wrong_type(err, param, "an array", calls);
    json_t *hf = json_deep_copy(calls);
    size_t k;
    json_t *c;
    json_array_foreach(hf, k, c) {
        char cp[96];
        snprintf(cp, sizeof cp, "%s[%zu].function", param, k);
        json_t *fn = json_object_get(c, "function");
        const json_t *name = json_object_get(fn, "name");
        if (!json_is_object(fn) || !json_is_string(name)) {
            json_decref(hf);
            return fail(err, cp, "%s: expected an object with a string name", cp);
        }
        json_t *args = json_object_get(fn, "arguments");
        json_t *obj = json_is_string(args) ? json_loads(json_string_value(args), 0, NULL) : NULL;
        if (json_is_object(obj)) json_object_set(fn, "arguments", obj);
        json_decref(obj);
    }
    return (*out = dump(p, hf, param, err)) ? CV_OK : CV_EINVAL;
}

/* tools as JSON text (tool_choice.h checks its shape); tool_choice: a word or
 * {"type": "function", "function": {"name": ...}}. */
static cv_status parse_tools(parsed *p, const json_t *o, cv_oai_request *r, cv_oai_error *err) {
    const json_t *v;
    if ((v = member(o, "tools"))) {
        if (!json_is_array(v)) return wrong_type(err, "tools", "an array", v);
        if (json_array_size(v) && !(r->tools = dump(p, json_incref((json_t *)v), "tools", err))) return CV_EINVAL;
    }
    if ((v = member(o, "tool_choice"))) {
        if (json_is_object(v)) {
            const json_t *fn = json_object_get(v, "function");
            if (get_text(json_object_get(fn, "name"), "tool_choice.function.name", &r->tool_function, err) != CV_OK)
                return CV_EINVAL;
        } else if (get_text(v, "tool_choice", &r->tool_choice, err) != CV_OK) {
            return CV_EINVAL;
        }
    }
    if ((v = member(o, "parallel_tool_calls")) &&
        get_bool(v, "parallel_tool_calls", &r->parallel_tool_calls, err) != CV_OK)
        return CV_EINVAL;
    return CV_OK;
}

static cv_status parse_messages(parsed *p, const json_t *msgs, cv_oai_request *r, cv_oai_error *err) {
    if (!msgs) return fail(err, "messages", "messages: required");
    if (!json_is_array(msgs)) return wrong_type(err, "messages", "an array", msgs);
    size_t n = json_array_size(msgs);
    if (n == 0) return fail(err, "messages", "messages: must not be empty");
    r->messages = calloc(n, sizeof *r->messages);
    p->joined = calloc(n, sizeof *p->joined);
    p->dumped = calloc(n + 1, sizeof *p->dumped);
    if (!r->messages || !p->joined || !p->dumped) return fail(err, "messages", "messages: out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(msgs, i);
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) return wrong_type(err, param, "an object", m);
        snprintf(param, sizeof param, "messages[%zu].role", i);
        const char *role;
        if (get_text(json_object_get(m, "role"), param, &role, err) != CV_OK) return CV_EINVAL;
        if (strcmp(role, "developer") == 0) role = "system";
        else if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
                 strcmp(role, "tool") != 0)
            return fail(err, param, "%s: '%.32s' is not a role: use system, developer, user, assistant or tool",
                        param, role);
        const json_t *c = member(m, "content");
        const char *content = "";
        if (c) {
            if (message_content(p, c, i, &content, err) != CV_OK) return CV_EINVAL;
        } else if (strcmp(role, "assistant") != 0) {
            /* An assistant turn that only called tools has no content; others must. */
            snprintf(param, sizeof param, "messages[%zu].content", i);
            return fail(err, param, "%s: required", param);
        }
        r->messages[i] = (cv_chat_msg){.role = role, .content = content};
        const json_t *v;
        if (strcmp(role, "assistant") == 0 && (v = member(m, "tool_calls")) && json_array_size(v) &&
            message_tool_calls(p, v, i, &r->messages[i].tool_calls, err) != CV_OK)
            return CV_EINVAL;
        if (strcmp(role, "tool") == 0) {
            snprintf(param, sizeof param, "messages[%zu].tool_call_id", i);
            if ((v = member(m, "tool_call_id")) && get_text(v, param, &r->messages[i].tool_call_id, err) != CV_OK)
                return CV_EINVAL;
            snprintf(param, sizeof param, "messages[%zu].name", i);
            if ((v = member(m, "name")) && get_text(v, param, &r->messages[i].name, err) != CV_OK) return CV_EINVAL;
        }
        r->n_messages++;
    }
    return CV_OK;
}

static cv_status parse_prompt(const json_t *v, cv_oai_request *r, cv_oai_error *err) {
    if (!v) return fail(err, "prompt", "prompt: required");
    if (json_is_array(v)) {
        if (json_array_size(v) != 1)
            return fail(err, "prompt", "prompt: only one prompt per request is supported (got %zu)",
                        json_array_size(v));
        return get_text(json_array_get(v, 0), "prompt[0]", &r->prompt, err);
    }
    if (!json_is_string(v)) return wrong_type(err, "prompt", "a string or an array of one string", v);
    return get_text(v, "prompt", &r->prompt, err);
}

static cv_status parse_stop(const json_t *v, cv_oai_request *r, cv_oai_error *err) {
    if (json_is_string(v)) {
        r->n_stop = 1;
        return get_text(v, "stop", &r->stop[0], err);
    }
    if (!json_is_array(v)) return wrong_type(err, "stop", "a string or an array of strings", v);
    if (json_array_size(v) > CV_OAI_MAX_STOP)
        return fail(err, "stop", "stop: at most %d sequences (got %zu)", CV_OAI_MAX_STOP, json_array_size(v));
    for (size_t i = 0; i < json_array_size(v); i++) {
        char param[32];
        snprintf(param, sizeof param, "stop[%zu]", i);
        if (get_text(json_array_get(v, i), param, &r->stop[i], err) != CV_OK) return CV_EINVAL;
        if (!r->stop[i][0]) return fail(err, param, "%s: must not be empty", param);
        r->n_stop++;
    }
    return CV_OK;
}

static cv_status parse_logprobs(const json_t *o, cv_oai_request *r, cv_oai_error *err) {
    const json_t *lp = member(o, "logprobs"), *top = member(o, "top_logprobs");
    json_int_t i = 0;
    if (r->kind == CV_OAI_COMPLETION) {
        /* Completions: logprobs is the number of alternatives (0 = the chosen token only). */
        if (lp) {
            if (get_int(lp, "logprobs", 0, CV_OAI_MAX_LOGPROBS, &i, err) != CV_OK) return CV_EINVAL;
            r->logprobs = 1;
            r->top_logprobs = (int32_t)i;
        }
        return CV_OK;
    }
    if (lp && get_bool(lp, "logprobs", &r->logprobs, err) != CV_OK) return CV_EINVAL;
    if (top) {
        if (get_int(top, "top_logprobs", 0, CV_OAI_MAX_LOGPROBS, &i, err) != CV_OK) return CV_EINVAL;
        if (!r->logprobs) return fail(err, "top_logprobs", "top_logprobs: needs logprobs: true");
        r->top_logprobs = (int32_t)i;
    }
    return CV_OK;
}

/* corvid.rag: gRPC's RagOptions as JSON. */
static cv_status parse_rag(const json_t *x, cv_oai_request *r, cv_oai_error *err) {
    if (!json_is_object(x)) return wrong_type(err, "corvid.rag", "an object", x);
    const json_t *v;
    json_int_t i;
    r->rag = 1;
    if ((v = member(x, "enable")) && get_bool(v, "corvid.rag.enable", &r->rag, err) != CV_OK) return CV_EINVAL;
    if ((v = member(x, "knowledge_base")) &&
        get_text(v, "corvid.rag.knowledge_base", &r->rag_knowledge_base, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "policy")) && get_text(v, "corvid.rag.policy", &r->rag_policy, err) != CV_OK) return CV_EINVAL;
    if ((v = member(x, "top_k"))) {
        if (get_int(v, "corvid.rag.top_k", 0, 20, &i, err) != CV_OK) return CV_EINVAL;
        r->rag_top_k = (uint32_t)i;
    }
    if ((v = member(x, "min_score")) && get_number(v, "corvid.rag.min_score", 0, 1e9, 0, &r->rag_min_score, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "sources"))) {
        if (!json_is_array(v)) return wrong_type(err, "corvid.rag.sources", "an array of strings", v);
        if (json_array_size(v) > CV_OAI_MAX_RAG_SOURCES)
            return fail(err, "corvid.rag.sources", "corvid.rag.sources: at most %d (got %zu)", CV_OAI_MAX_RAG_SOURCES,
                        json_array_size(v));
        for (size_t k = 0; k < json_array_size(v); k++) {
            char param[48];
            snprintf(param, sizeof param, "corvid.rag.sources[%zu]", k);
            if (get_text(json_array_get(v, k), param, &r->rag_sources[k], err) != CV_OK) return CV_EINVAL;
            r->n_rag_sources++;
        }
    }
    return CV_OK;
}

/* response_format: text (nothing), json_object (any object) or json_schema (its
 * "schema", any JSON value when absent; "strict" is accepted and always holds), into
 * GBNF for the engine. */
static cv_status parse_response_format(parsed *p, const json_t *f, cv_oai_request *r, cv_oai_error *err) {
    if (!json_is_object(f)) return wrong_type(err, "response_format", "an object", f);
    const char *type;
    if (get_text(json_object_get(f, "type"), "response_format.type", &type, err) != CV_OK) return CV_EINVAL;
    json_t *schema = NULL;
    const char *param = "response_format";
    if (!strcmp(type, "json_object")) {
        schema = json_pack("{s:s}", "type", "object");
    } else if (!strcmp(type, "json_schema")) {
        const json_t *js = member(f, "json_schema"), *strict;
        if (!json_is_object(js)) return wrong_type(err, "response_format.json_schema", "an object", js);
        if ((strict = member(js, "strict")) && !json_is_boolean(strict))
            return wrong_type(err, "response_format.json_schema.strict", "a boolean", strict);
        const json_t *sch = member(js, "schema");
        schema = sch ? json_incref((json_t *)sch) : json_true();
        param = "response_format.json_schema.schema";
    } else if (strcmp(type, "text") != 0) {
        return fail(err, "response_format.type", "response_format.type: '%.32s' is not text, json_object or json_schema",
                    type);
    }
    if (!schema) return strcmp(type, "text") ? fail(err, "", "out of memory") : CV_OK;
    cv_error e = {0};
    cv_status st = cv_json_schema_gbnf(schema, NULL, &p->grammar, &e);
    json_decref(schema);
    if (st != CV_OK) return fail(err, param, "%s: %s", param, e.msg);
    r->grammar = p->grammar;
    return CV_OK;
}

/* corvid's own options, beside OpenAI's. */
static cv_status parse_extension(const json_t *x, cv_oai_request *r, cv_oai_error *err) {
    if (!json_is_object(x)) return wrong_type(err, "corvid", "an object", x);
    const json_t *v;
    json_int_t i;
    if ((v = member(x, "model_version")) && get_text(v, "corvid.model_version", &r->model_version, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "ignore_eos")) && get_bool(v, "corvid.ignore_eos", &r->ignore_eos, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "top_k"))) {
        if (get_int(v, "corvid.top_k", 0, INT32_MAX, &i, err) != CV_OK) return CV_EINVAL;
        r->top_k = (int32_t)i;
    }
    if ((v = member(x, "min_p")) && get_number(v, "corvid.min_p", 0, 1, 0, &r->min_p, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "repetition_penalty")) &&
        get_number(v, "corvid.repetition_penalty", 0, 1e6, 1, &r->repetition_penalty, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(x, "rag")) && parse_rag(v, r, err) != CV_OK) return CV_EINVAL;
    if ((v = member(x, "grammar"))) {
        cv_error e = {0};
        if (r->grammar) return fail(err, "corvid.grammar", "corvid.grammar: give either a grammar or a response_format, not both");
        if (get_text(v, "corvid.grammar", &r->grammar, err) != CV_OK) return CV_EINVAL;
        if (cv_grammar_check(r->grammar, strlen(r->grammar), &e) != CV_OK)
            return fail(err, "corvid.grammar", "corvid.grammar: %s", e.msg);
    }
    return CV_OK;
}

/* Invalid UTF-8 anywhere in the body, before JSON parsing (whose message would quote
 * the bad bytes); raw NUL bytes are left to the JSON parser, which refuses them. */
static cv_status check_body(const char *body, size_t len, cv_oai_error *err) {
    size_t at = 0;
    while (at < len) {
        size_t off;
        cv_utf8_verdict v = cv_utf8_check(body + at, len - at, &off);
        if (v == CV_UTF8_OK) break;
        if (v == CV_UTF8_INVALID) return fail(err, "", "request body: not valid UTF-8 at byte %zu", at + off);
        at += off + 1;
    }
    return CV_OK;
}

cv_status cv_oai_parse(cv_oai_kind kind, const char *body, size_t len, cv_oai_request *r, cv_oai_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    r->kind = kind;
    r->model = r->model_version = r->user = r->rag_knowledge_base = r->rag_policy = "";
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    r->repetition_penalty = 1.0f;
    r->parallel_tool_calls = 1;
    r->tool_choice = r->tool_function = "";
    parsed *p = calloc(1, sizeof *p);
    if (!p) return fail(err, "", "out of memory");
    r->priv = p;
    if (check_body(body, len, err) != CV_OK) return CV_EINVAL;
    json_error_t je;
    p->doc = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    if (!p->doc) return fail(err, "", "malformed JSON at byte %d: %s", je.position, cv_json_error_text(&je));
    const json_t *o = p->doc, *v;
    if (!json_is_object(o)) return fail(err, "", "the request body must be a JSON object, got %s", type_name(o));
    json_int_t i;
    if ((v = member(o, "model")) && get_text(v, "model", &r->model, err) != CV_OK) return CV_EINVAL;
    if (kind == CV_OAI_CHAT ? parse_messages(p, member(o, "messages"), r, err) != CV_OK ||
                                  parse_tools(p, o, r, err) != CV_OK
                            : parse_prompt(member(o, "prompt"), r, err) != CV_OK)
        return CV_EINVAL;
    static const char *const max_keys[] = {"max_tokens", "max_completion_tokens"};
    for (size_t k = 0; k < 2; k++) {
        if (!(v = member(o, max_keys[k]))) continue;
        if (get_int(v, max_keys[k], 1, INT32_MAX, &i, err) != CV_OK) return CV_EINVAL;
        r->max_tokens = (int32_t)i;
    }
    if ((v = member(o, "temperature")) && get_number(v, "temperature", 0, 2, 0, &r->temperature, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(o, "top_p")) && get_number(v, "top_p", 0, 1, 1, &r->top_p, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "presence_penalty")) &&
        get_number(v, "presence_penalty", -2, 2, 0, &r->presence_penalty, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(o, "frequency_penalty")) &&
        get_number(v, "frequency_penalty", -2, 2, 0, &r->frequency_penalty, err) != CV_OK)
        return CV_EINVAL;
    if ((v = member(o, "stop")) && parse_stop(v, r, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "seed"))) {
        if (!json_is_integer(v)) return wrong_type(err, "seed", "an integer", v);
        r->has_seed = 1;
        r->seed = (uint64_t)json_integer_value(v);
    }
    if (parse_logprobs(o, r, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "user")) && get_text(v, "user", &r->user, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "n"))) {
        if (!json_is_integer(v)) return wrong_type(err, "n", "an integer", v);
        if (json_integer_value(v) != 1)
            return fail(err, "n", "n: only 1 choice per request is supported (got %lld)",
                        (long long)json_integer_value(v));
    }
    if ((v = member(o, "stream")) && get_bool(v, "stream", &r->stream, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "stream_options"))) {
        if (!json_is_object(v)) return wrong_type(err, "stream_options", "an object", v);
        const json_t *u = member(v, "include_usage");
        if (u && get_bool(u, "stream_options.include_usage", &r->include_usage, err) != CV_OK) return CV_EINVAL;
    }
    if ((v = member(o, "reasoning_format"))) {
        const char *f;
        if (get_text(v, "reasoning_format", &f, err) != CV_OK) return CV_EINVAL;
        if (strcmp(f, "none") != 0 && strcmp(f, "deepseek") != 0)
            return fail(err, "reasoning_format", "reasoning_format: '%.32s' is neither deepseek nor none", f);
        r->reasoning_inline = strcmp(f, "none") == 0;
    }
    if ((v = member(o, "response_format")) && parse_response_format(p, v, r, err) != CV_OK) return CV_EINVAL;
    if ((v = member(o, "corvid")) && parse_extension(v, r, err) != CV_OK) return CV_EINVAL;
    return CV_OK;
}

void cv_oai_request_free(cv_oai_request *r) {
    parsed *p = r->priv;
    if (p) {
        for (size_t i = 0; i < p->n_joined; i++) free(p->joined[i]);
        free(p->joined);
        for (size_t i = 0; i < p->n_dumped; i++) free(p->dumped[i]);
        free(p->dumped);
        json_decref(p->doc);
        free(p->grammar);
        free(p);
    }
    free(r->messages);
    memset(r, 0, sizeof *r);
}
