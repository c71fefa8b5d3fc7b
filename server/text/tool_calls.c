#include "tool_calls.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"

#define MAX_NAME 256
#define FENCE "```json"

/* Where a call starts and ends in each syntax ("" end: the end of the output). */
static const struct {
    const char *name, *start, *end;
} syntaxes[] = {
    [CV_TOOL_SYNTAX_NONE] = {"none", NULL, NULL},
    [CV_TOOL_SYNTAX_HERMES] = {"hermes", "<tool_call>", "</tool_call>"},
    [CV_TOOL_SYNTAX_LLAMA3] = {"llama3", "<|python_tag|>", ""},
    [CV_TOOL_SYNTAX_MISTRAL] = {"mistral", "[TOOL_CALLS]", ""},
    [CV_TOOL_SYNTAX_DEEPSEEK] = {"deepseek", DS_CALLS_BEGIN, DS_CALLS_END},
};

const char *cv_tool_syntax_name(cv_tool_syntax s) { return syntaxes[s].name; }

int cv_tool_syntax_needs_markers(cv_tool_syntax s) {
    return s == CV_TOOL_SYNTAX_LLAMA3 || s == CV_TOOL_SYNTAX_MISTRAL || s == CV_TOOL_SYNTAX_DEEPSEEK;
}

static int has(const char *t, size_t n, const char *needle) { return memmem(t, n, needle, strlen(needle)) != NULL; }

cv_tool_syntax cv_tool_syntax_of_template(const char *t, size_t n) {
    if (!t) return CV_TOOL_SYNTAX_NONE;
    if (has(t, n, DS_CALLS_BEGIN)) return CV_TOOL_SYNTAX_DEEPSEEK;
    if (has(t, n, "[TOOL_CALLS]")) return CV_TOOL_SYNTAX_MISTRAL;
    if (has(t, n, "<tool_call>")) return CV_TOOL_SYNTAX_HERMES;
    /* Llama 3.2 asks for the JSON without writing <|python_tag|>. */
    if (has(t, n, "<|python_tag|>") || (has(t, n, "<|start_header_id|>") && has(t, n, "\"parameters\"")))
        return CV_TOOL_SYNTAX_LLAMA3;
    return CV_TOOL_SYNTAX_NONE;
}

struct cv_tool_parser {
    cv_tool_syntax syn;
    size_t max_calls, max_bytes, n_calls;
    cv_tool_sink sink;
    int in_call;     /* buf holds a call from its start marker (or a bare call's start) */
    int bare;        /* that call has no marker: a JSON answer, perhaps in a ```json fence */
    int started;     /* content or a call came: a bare call only opens the answer */
    char *buf;       /* not yet handed on: a possible marker start, or the call */
    size_t len, cap;
    char *ws;        /* whitespace held back from the content */
    size_t ws_len, ws_cap;
};

static int is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static cv_status append(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1) c *= 2;
        char *q = realloc(*b, c);
        if (!q) return CV_ENOMEM;
        *b = q;
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return CV_OK;
}

cv_status cv_tool_parser_new(cv_tool_syntax s, size_t max_calls, size_t max_bytes, const cv_tool_sink *sink,
                             cv_tool_parser **out, cv_error *err) {
    if ((unsigned)s >= sizeof syntaxes / sizeof *syntaxes)
        return cv_errorf(err, CV_EINVAL, "tool calls: no syntax %d", (int)s);
    cv_tool_parser *p = calloc(1, sizeof *p);
    if (!p) return cv_errorf(err, CV_ENOMEM, "tool calls: out of memory");
    p->syn = s;
    p->max_calls = max_calls;
    p->max_bytes = max_bytes ? max_bytes : 256 * 1024;
    p->sink = *sink;
    *out = p;
    return CV_OK;
}

void cv_tool_parser_free(cv_tool_parser *p) {
    if (!p) return;
    free(p->buf);
    free(p->ws);
    free(p);
}

size_t cv_tool_parser_calls(const cv_tool_parser *p) { return p->n_calls; }

/* Content out, trailing whitespace held until more content shows it is not the last. */
static cv_status content(cv_tool_parser *p, const char *s, size_t n) {
    size_t end = n;
    while (end && is_space(s[end - 1])) end--;
    if (end == 0) return append(&p->ws, &p->ws_len, &p->ws_cap, s, n);
    if (p->ws_len) p->sink.content(p->sink.ctx, p->ws, p->ws_len);
    p->ws_len = 0;
    p->sink.content(p->sink.ctx, s, end);
    p->started = 1;
    return append(&p->ws, &p->ws_len, &p->ws_cap, s + end, n - end);
}

/* ---- one call's text into calls: every call of it valid, or none ---- */

static const char *skip_space(const char *s, const char *e) {
    while (s < e && is_space(*s)) s++;
    return s;
}

static const char *trim_end(const char *s, const char *e) {
    while (e > s && is_space(e[-1])) e--;
    return e;
}

/* {name, arguments} onto calls; args_json may be a JSON string holding the object. */
static int add_call(json_t *calls, const char *name, size_t name_len, json_t *args) {
    if (name_len == 0 || name_len > MAX_NAME || memchr(name, 0, name_len)) return -1;
    if (json_is_string(args)) {
        json_t *inner = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
        int rc = json_is_object(inner) ? add_call(calls, name, name_len, inner) : -1;
        json_decref(inner);
        return rc;
    }
    if (!args) args = json_object();
    else json_incref(args);
    if (!json_is_object(args)) {
        json_decref(args);
        return -1;
    }
    json_t *c = json_pack("{s:s%,s:o}", "name", name, name_len, "arguments", args);
    return c ? json_array_append_new(calls, c) : -1;
}

/* A {"name": ..., "arguments" | "parameters": {...}} object. */
static int add_call_object(json_t *calls, const json_t *o) {
    json_t *name = json_object_get(o, "name");
    json_t *args = json_object_get(o, "arguments");
    if (!args) args = json_object_get(o, "parameters");
    if (!json_is_object(o) || !json_is_string(name)) return -1;
    return add_call(calls, json_string_value(name), json_string_length(name), args);
}

/* One JSON value at s (whitespace first allowed), its end in *end. */
static json_t *json_at(const char *s, const char *e, const char **end) {
    json_error_t je;
    s = skip_space(s, e);
    json_t *v = json_loadb(s, (size_t)(e - s), JSON_DISABLE_EOF_CHECK, &je);
    if (v) *end = s + je.position;
    return v;
}

/* hermes: exactly one call object. */
static int parse_hermes(json_t *calls, const char *s, const char *e) {
    const char *end;
    json_t *v = json_at(s, e, &end);
    int rc = v && skip_space(end, e) == e ? add_call_object(calls, v) : -1;
    json_decref(v);
    return rc;
}

/* llama3: call objects joined by ';' (or whitespace). */
static int parse_llama3(json_t *calls, const char *s, const char *e) {
    for (;;) {
        const char *end;
        json_t *v = json_at(s, e, &end);
        int rc = v ? add_call_object(calls, v) : -1;
        json_decref(v);
        if (rc) return -1;
        s = skip_space(end, e);
        if (s < e && *s == ';') s = skip_space(s + 1, e);
        if (s == e) return 0;
    }
}

static const char *find(const char *s, const char *e, const char *needle) {
    return memmem(s, (size_t)(e - s), needle, strlen(needle));
}

static int starts(const char *s, const char *e, const char *prefix) {
    size_t n = strlen(prefix);
    return (size_t)(e - s) >= n && memcmp(s, prefix, n) == 0;
}

/* mistral: a JSON array of call objects, or name[ARGS]{...} per [TOOL_CALLS]. */
static int parse_mistral(json_t *calls, const char *s, const char *e) {
    for (;;) {
        s = skip_space(s, e);
        const char *end;
        if (s < e && *s == '[') {
            json_t *v = json_at(s, e, &end);
            int rc = json_is_array(v) && json_array_size(v) ? 0 : -1;
            for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) rc = add_call_object(calls, json_array_get(v, i));
            json_decref(v);
            if (rc) return -1;
        } else {
            const char *a = find(s, e, "[ARGS]");
            if (!a) return -1;
            const char *name_end = find(s, a, "[CALL_ID]");
            name_end = trim_end(s, name_end ? name_end : a);
            json_t *v = json_at(a + 6, e, &end);
            int rc = json_is_object(v) ? add_call(calls, s, (size_t)(name_end - s), v) : -1;
            json_decref(v);
            if (rc) return -1;
        }
        s = skip_space(end, e);
        if (s == e) return 0;
        if (!starts(s, e, "[TOOL_CALLS]")) return -1;
        s += strlen("[TOOL_CALLS]");
    }
}

/* Cuts a ```json ... ``` fence around [*s, *e) when there is one. */
static void unfence(const char **s, const char **e) {
    const char *a = skip_space(*s, *e), *b = trim_end(a, *e);
    if (!starts(a, b, "```") || b - a < 6 || memcmp(b - 3, "```", 3) != 0) return;
    a += 3;
    while (a < b - 3 && *a != '\n') a++; /* the fence's language tag */
    *s = a;
    *e = b - 3;
}

/* deepseek: <call_begin>kind_or_name<sep>name\n```json{...}``` or args<call_end>, repeated. */
static int parse_deepseek(json_t *calls, const char *s, const char *e) {
    for (;;) {
        s = skip_space(s, e);
        if (s == e) return json_array_size(calls) ? 0 : -1;
        if (!starts(s, e, DS_CALL_BEGIN)) return -1;
        s += strlen(DS_CALL_BEGIN);
        const char *end = find(s, e, DS_CALL_END), *sep = end ? find(s, end, DS_SEP) : NULL;
        if (!sep) return -1;
        const char *name = skip_space(s, sep), *name_end = trim_end(name, sep);
        const char *args = sep + strlen(DS_SEP), *args_end = end;
        if (name_end - name == 8 && memcmp(name, "function", 8) == 0) {
            /* V3 / R1: the name is the first line after the separator */
            const char *nl = memchr(args, '\n', (size_t)(end - args));
            if (!nl) return -1;
            name = skip_space(args, nl);
            name_end = trim_end(name, nl);
            args = nl + 1;
        }
        unfence(&args, &args_end);
        const char *jend;
        json_t *v = json_at(args, args_end, &jend);
        int rc = v && skip_space(jend, args_end) == args_end ? add_call(calls, name, (size_t)(name_end - name), v) : -1;
        json_decref(v);
        if (rc) return -1;
        s = end + strlen(DS_CALL_END);
    }
}

/* buf[0..n): a call's whole text, its start marker (if any) first and its end marker
 * (if written) last. Calls out when it parses, else the text as content. */
static cv_status close_call(cv_tool_parser *p, size_t n, int has_end) {
    const char *s = p->buf, *e = p->buf + n;
    const char *start = syntaxes[p->syn].start, *endm = syntaxes[p->syn].end;
    if (p->bare) unfence(&s, &e);
    else if (starts(s, e, start)) s += strlen(start);
    if (has_end) e -= strlen(endm);
    json_t *calls = json_array();
    int rc = !calls || n > p->max_bytes ? -1
             : p->bare                          ? parse_llama3(calls, s, e)
             : p->syn == CV_TOOL_SYNTAX_HERMES  ? parse_hermes(calls, s, e)
             : p->syn == CV_TOOL_SYNTAX_LLAMA3  ? parse_llama3(calls, s, e)
             : p->syn == CV_TOOL_SYNTAX_MISTRAL ? parse_mistral(calls, s, e)
                                                : parse_deepseek(calls, s, e);
    cv_status st = CV_OK;
    if (rc != 0) {
        st = content(p, p->buf, n);
    } else {
        p->ws_len = 0; /* the whitespace before a call is no content */
        p->started = 1;
        for (size_t i = 0; i < json_array_size(calls); i++) {
            if (p->max_calls && p->n_calls >= p->max_calls) break;
            json_t *c = json_array_get(calls, i);
            char *args = json_dumps(json_object_get(c, "arguments"), JSON_COMPACT);
            if (!args) {
                st = CV_ENOMEM;
                break;
            }
            p->sink.call(p->sink.ctx, json_string_value(json_object_get(c, "name")), args);
            free(args);
            p->n_calls++;
        }
    }
    json_decref(calls);
    p->in_call = p->bare = 0;
    memmove(p->buf, p->buf + n, p->len - n + 1);
    p->len -= n;
    return st;
}

/* Bytes at the end of buf that could begin marker m. */
static size_t partial_marker(const char *b, size_t n, const char *m) {
    size_t ml = strlen(m);
    for (size_t k = ml - 1 < n ? ml - 1 : n; k > 0; k--)
        if (memcmp(b + n - k, m, k) == 0) return k;
    return 0;
}

/* Hands on what buf decides, leaving held what it does not. */
static cv_status drain(cv_tool_parser *p) {
    const char *start = syntaxes[p->syn].start, *endm = syntaxes[p->syn].end;
    for (;;) {
        if (p->in_call) {
            const char *m = endm[0] && !p->bare ? memmem(p->buf, p->len, endm, strlen(endm)) : NULL;
            if (m) {
                cv_status st = close_call(p, (size_t)(m - p->buf) + strlen(endm), 1);
                if (st != CV_OK) return st;
                continue;
            }
            if (p->len <= p->max_bytes) return CV_OK;
            /* too long to be a call: content it is */
            p->in_call = p->bare = 0;
            cv_status st = content(p, p->buf, p->len);
            p->len = 0;
            return st;
        }
        const char *m = memmem(p->buf, p->len, start, strlen(start));
        size_t at = m ? (size_t)(m - p->buf) : SIZE_MAX;
        if ((p->syn == CV_TOOL_SYNTAX_LLAMA3 || p->syn == CV_TOOL_SYNTAX_HERMES) && !p->started) {
            /* a bare JSON call (in a fence or not) is the whole answer: decided by its
             * first bytes */
            size_t i = 0, left;
            while (i < p->len && is_space(p->buf[i])) i++;
            left = p->len - i;
            if (left < sizeof FENCE - 1 && memcmp(p->buf + i, FENCE, left) == 0) return CV_OK;
            if (p->buf[i] == '{' || (left >= sizeof FENCE - 1 && memcmp(p->buf + i, FENCE, sizeof FENCE - 1) == 0)) {
                at = i;
                p->bare = 1;
            }
            p->started = 1;
        }
        size_t n = at != SIZE_MAX ? at : p->len - partial_marker(p->buf, p->len, start);
        cv_status st = n ? content(p, p->buf, n) : CV_OK;
        memmove(p->buf, p->buf + n, p->len - n + 1);
        p->len -= n;
        if (st != CV_OK || at == SIZE_MAX) return st;
        p->in_call = 1;
    }
}

cv_status cv_tool_parser_feed(cv_tool_parser *p, const char *text, size_t len) {
    if (p->syn == CV_TOOL_SYNTAX_NONE) {
        if (len) p->sink.content(p->sink.ctx, text, len);
        return CV_OK;
    }
    if (append(&p->buf, &p->len, &p->cap, text, len) != CV_OK) return CV_ENOMEM;
    return drain(p);
}

cv_status cv_tool_parser_finish(cv_tool_parser *p) {
    cv_status st = CV_OK;
    if (p->in_call && p->len) st = close_call(p, p->len, 0);
    if (st == CV_OK && p->len) st = content(p, p->buf, p->len);
    p->len = 0;
    p->in_call = p->bare = 0;
    if (p->ws_len && !p->n_calls) p->sink.content(p->sink.ctx, p->ws, p->ws_len);
    p->ws_len = 0;
    return st;
}
