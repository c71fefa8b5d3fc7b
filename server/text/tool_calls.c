#include "tool_calls.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_scan.h"

#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"

#define MAX_NAME 256
#define FENCE "```json"

/* Where a call region starts and ends in each syntax ("" end: the calls themselves
 * say where they end). */
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

unsigned cv_tool_forms_of_template(const char *t, size_t n) {
    if (!t) return 0;
    return (has(t, n, "[ARGS]") ? CV_TOOL_FORM_ARGS_MARKER : 0) |
           (has(t, n, DS_SEP) && has(t, n, "```json") ? CV_TOOL_FORM_FENCED : 0);
}

/* Inside a call region, what comes next. */
typedef enum rstate {
    R_OPEN,   /* the region's first call (after its marker) */
    R_OBJ,    /* at a call object's '{': name first, then the arguments' '{'? */
    R_WHOLE,  /* a call object written otherwise: held until it closes */
    R_ARGS,   /* a call has begun: its arguments stream */
    R_TAIL,   /* after the arguments, the rest of the call object */
    R_AFTER,  /* a call is over: what the syntax lets follow it */
    R_MNAME,  /* mistral: N[ARGS] */
    R_DSHEAD, /* deepseek: after <call_begin>, up to the arguments */
    R_DSTAIL, /* deepseek: after the arguments, up to <call_end> */
    R_PYCALL, /* llama3: N.call(k=v, ...) */
} rstate;

struct cv_tool_parser {
    cv_tool_syntax syn;
    size_t max_calls, max_bytes, n_calls;
    cv_tool_sink sink;
    int started;     /* content or a call came: a bare call only opens the answer */
    int in_region;   /* buf[0..) is inside a call region */
    int bare;        /* that region has no marker (hermes, llama3: a JSON answer) */
    int fenced;      /* ... in a ```json fence */
    int in_array;    /* mistral: inside [TOOL_CALLS][...] */
    int region_calls; /* calls begun in this region: it can no longer be content */
    int dropped;     /* the current call is past max_calls: not handed on */
    rstate rs;
    size_t pos;      /* bytes of buf scanned in the region */
    size_t whole_at; /* R_WHOLE: where its object starts */
    cv_jscan js;     /* R_ARGS, R_TAIL, R_WHOLE */
    char *buf;       /* not yet handed on */
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

/* Drops buf[0..n). */
static void consume(cv_tool_parser *p, size_t n) {
    memmove(p->buf, p->buf + n, p->len - n + 1);
    p->len -= n;
    p->pos = p->pos > n ? p->pos - n : 0;
}

/* ---- calls out ---- */

static void call_begin(cv_tool_parser *p, const char *name) {
    p->dropped = p->max_calls && p->n_calls >= p->max_calls;
    p->region_calls++;
    p->started = 1;
    p->ws_len = 0; /* the whitespace before a call is no content */
    if (p->dropped) return;
    p->n_calls++;
    p->sink.call_begin(p->sink.ctx, name);
}

static void call_args(cv_tool_parser *p, const char *s, size_t n) {
    if (n && !p->dropped) p->sink.call_args(p->sink.ctx, s, n);
}

static void call_end(cv_tool_parser *p, int complete) {
    if (!p->dropped) p->sink.call_end(p->sink.ctx, complete);
    p->dropped = 0;
}

/* A whole call: begins, its arguments in one piece, ends. */
static cv_status call_whole(cv_tool_parser *p, const char *name, const json_t *args) {
    char *a = json_dumps(args, JSON_COMPACT);
    if (!a) return CV_ENOMEM;
    call_begin(p, name);
    call_args(p, a, strlen(a));
    call_end(p, 1);
    free(a);
    return CV_OK;
}

/* ---- scanning the region: each step says how it went ---- */

typedef enum step {
    ST_MORE, /* need more bytes */
    ST_NEXT, /* progressed: go on */
    ST_FAIL, /* the text is no call (or no more of one) */
    ST_MEM,
} step;

static int starts_at(const cv_tool_parser *p, size_t at, const char *m) {
    size_t n = strlen(m);
    return p->len - at >= n && memcmp(p->buf + at, m, n) == 0;
}

/* Whether buf[at..) could still become m (it is a proper prefix of m). */
static int prefix_of(const cv_tool_parser *p, size_t at, const char *m) {
    size_t n = p->len - at;
    return n < strlen(m) && memcmp(p->buf + at, m, n) == 0;
}

static size_t skip_ws(const cv_tool_parser *p, size_t at) {
    while (at < p->len && is_space(p->buf[at])) at++;
    return at;
}

static int valid_name(const char *s, size_t n) {
    if (n == 0 || n > MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20) return 0;
    return 1;
}

/* A JSON string token at buf[at]: its end past the closing quote in *end; 0: more
 * needed, -1: none there. */
static int string_token(const cv_tool_parser *p, size_t at, size_t *end) {
    if (at >= p->len) return 0;
    if (p->buf[at] != '"') return -1;
    for (size_t i = at + 1; i < p->len; i++) {
        if (p->buf[i] == '\\') i++;
        else if (p->buf[i] == '"') return *end = i + 1, 1;
        if (i - at > MAX_NAME * 6 + 2) return -1;
    }
    return 0;
}

/* buf[*at..) begins with lit (after whitespace): 1 and *at past it; 0 more needed; -1 not. */
static int expect(const cv_tool_parser *p, size_t *at, const char *lit) {
    size_t i = skip_ws(p, *at);
    if (starts_at(p, i, lit)) return *at = i + strlen(lit), 1;
    return prefix_of(p, i, lit) ? 0 : -1;
}

/* Arguments begin at buf[at] ('{'): the call begins, they stream from there. */
static void begin_args(cv_tool_parser *p, const char *name, size_t at) {
    call_begin(p, name);
    consume(p, at);
    p->pos = 0;
    cv_jscan_init(&p->js);
    p->rs = R_ARGS;
}

/* R_OBJ: {"name": "N", "arguments" | "parameters": { */
static step obj_head(cv_tool_parser *p) {
    size_t at = p->pos, name_end;
    int r;
    if ((r = expect(p, &at, "{")) <= 0) return r ? ST_FAIL : ST_MORE;
    size_t obj = skip_ws(p, p->pos);
    if ((r = expect(p, &at, "\"name\"")) <= 0 || (r = expect(p, &at, ":")) <= 0) goto other;
    at = skip_ws(p, at);
    size_t name_at = at;
    if ((r = string_token(p, at, &name_end)) <= 0) goto other;
    at = name_end;
    if ((r = expect(p, &at, ",")) <= 0) goto other;
    size_t key = skip_ws(p, at);
    if (starts_at(p, key, "\"arguments\"")) at = key + 11;
    else if (starts_at(p, key, "\"parameters\"")) at = key + 12;
    else if ((r = prefix_of(p, key, "\"arguments\"") || prefix_of(p, key, "\"parameters\"") ? 0 : -1) <= 0) goto other;
    if ((r = expect(p, &at, ":")) <= 0) goto other;
    at = skip_ws(p, at);
    if (at == p->len) return ST_MORE;
    if (p->buf[at] != '{') {
        r = -1;
        goto other;
    }
    json_t *name = json_loadb(p->buf + name_at, name_end - name_at, JSON_DECODE_ANY, NULL);
    int ok = json_is_string(name) && valid_name(json_string_value(name), json_string_length(name)) &&
             !memchr(json_string_value(name), 0, json_string_length(name));
    if (ok) begin_args(p, json_string_value(name), at);
    json_decref(name);
    return ok ? ST_NEXT : ST_FAIL;
other:
    if (r == 0) return ST_MORE;
    /* not in the usual order: held whole */
    p->pos = p->whole_at = obj;
    cv_jscan_init(&p->js);
    p->rs = R_WHOLE;
    return ST_NEXT;
}

/* R_WHOLE: the object held until it closes, then read as {name, arguments|parameters}. */
static step obj_whole(cv_tool_parser *p) {
    while (p->pos < p->len) {
        cv_jscan_r r = cv_jscan_feed(&p->js, (uint8_t)p->buf[p->pos]);
        if (r == CV_JSCAN_BAD || p->pos - p->whole_at > p->max_bytes) {
            p->pos = p->whole_at;
            return ST_FAIL;
        }
        p->pos++;
        if (r == CV_JSCAN_DONE) goto done;
    }
    return ST_MORE;
done:;
    json_t *o = json_loadb(p->buf + p->whole_at, p->pos - p->whole_at, 0, NULL);
    json_t *name = json_object_get(o, "name"), *args = json_object_get(o, "arguments");
    if (!args) args = json_object_get(o, "parameters");
    json_t *inner = json_is_string(args) ? json_loadb(json_string_value(args), json_string_length(args), 0, NULL)
                                         : json_incref(args);
    step st = ST_FAIL;
    if (json_is_string(name) && valid_name(json_string_value(name), json_string_length(name)) &&
        !memchr(json_string_value(name), 0, json_string_length(name)) && json_is_object(inner))
        st = call_whole(p, json_string_value(name), inner) == CV_OK ? ST_NEXT : ST_MEM;
    json_decref(inner);
    json_decref(o);
    if (st == ST_NEXT) p->rs = R_AFTER;
    else p->pos = p->whole_at;
    return st;
}

/* R_ARGS: every byte the JSON allows goes on at once. */
static step args_stream(cv_tool_parser *p) {
    size_t i = 0;
    cv_jscan_r r = CV_JSCAN_MORE;
    while (i < p->len && r == CV_JSCAN_MORE) {
        r = cv_jscan_feed(&p->js, (uint8_t)p->buf[i]);
        if (r != CV_JSCAN_BAD) i++;
    }
    call_args(p, p->buf, i);
    consume(p, i);
    p->pos = 0;
    if (r == CV_JSCAN_MORE) return ST_MORE;
    call_end(p, r == CV_JSCAN_DONE);
    if (r == CV_JSCAN_BAD) return ST_FAIL;
    p->rs = p->syn == CV_TOOL_SYNTAX_DEEPSEEK ? R_DSTAIL : p->syn == CV_TOOL_SYNTAX_MISTRAL && !p->in_array ? R_AFTER
                                                                                                          : R_TAIL;
    if (p->rs == R_TAIL) cv_jscan_init_after_member(&p->js);
    return ST_NEXT;
}

/* R_TAIL: the call object's other members and its '}'. */
static step obj_tail(cv_tool_parser *p) {
    while (p->pos < p->len) {
        cv_jscan_r r = cv_jscan_feed(&p->js, (uint8_t)p->buf[p->pos]);
        if (r == CV_JSCAN_BAD) return ST_FAIL;
        p->pos++;
        if (r == CV_JSCAN_DONE) {
            p->rs = R_AFTER;
            return ST_NEXT;
        }
    }
    return ST_MORE;
}

/* [*s, *e) without the white space at either end. */
static void trim(const char **s, const char **e) {
    while (*s < *e && is_space(**s)) (*s)++;
    while (*e > *s && is_space((*e)[-1])) (*e)--;
}

/* The arguments of the call named [name, name_end) begin at p->buf[at] if it is their
 * '{' and the name is valid; otherwise the head does not parse. */
static step begin_named(cv_tool_parser *p, const char *name, const char *name_end, size_t at) {
    if (p->buf[at] != '{' || !valid_name(name, (size_t)(name_end - name))) return ST_FAIL;
    char nm[MAX_NAME + 1];
    memcpy(nm, name, (size_t)(name_end - name));
    nm[name_end - name] = 0;
    begin_args(p, nm, at);
    return ST_NEXT;
}

/* R_MNAME: N then [ARGS] (or [CALL_ID]id[ARGS]), then the arguments' '{'. */
static step mistral_name(cv_tool_parser *p) {
    const char *s = p->buf + p->pos, *e = p->buf + p->len;
    const char *a = memmem(s, (size_t)(e - s), "[ARGS]", 6);
    if (!a) return e - s > MAX_NAME + 64 ? ST_FAIL : ST_MORE;
    const char *ne = memmem(s, (size_t)(a - s), "[CALL_ID]", 9);
    if (!ne) ne = a;
    trim(&s, &ne);
    size_t at = skip_ws(p, (size_t)(a - p->buf) + 6);
    if (at == p->len) return ST_MORE;
    return begin_named(p, s, ne, at);
}

/* R_DSHEAD: function<sep>N\n```json\n{  or  N<sep>{ */
static step deepseek_head(cv_tool_parser *p) {
    const char *s = p->buf + p->pos, *e = p->buf + p->len;
    const char *sep = memmem(s, (size_t)(e - s), DS_SEP, strlen(DS_SEP));
    if (!sep) return e - s > MAX_NAME + 64 ? ST_FAIL : ST_MORE;
    const char *name = s, *name_end = sep;
    size_t at = (size_t)(sep - p->buf) + strlen(DS_SEP);
    trim(&name, &name_end);
    if (name_end - name == 8 && memcmp(name, "function", 8) == 0) {
        /* V3 / R1: the name is the line after the separator, then a ```json fence */
        const char *nl = memchr(p->buf + at, '\n', p->len - at);
        if (!nl) return p->len - at > MAX_NAME ? ST_FAIL : ST_MORE;
        name = p->buf + at;
        name_end = nl;
        trim(&name, &name_end);
        at = skip_ws(p, (size_t)(nl - p->buf));
        if (prefix_of(p, at, "```")) return ST_MORE;
        if (starts_at(p, at, "```")) {
            const char *nl2 = memchr(p->buf + at, '\n', p->len - at);
            if (!nl2) return p->len - at > 32 ? ST_FAIL : ST_MORE;
            at = skip_ws(p, (size_t)(nl2 - p->buf));
        }
    } else {
        at = skip_ws(p, at);
    }
    if (at == p->len) return ST_MORE;
    return begin_named(p, name, name_end, at);
}

static step leave(cv_tool_parser *p);

/* R_DSTAIL: the closing fence (V3 / R1) and <call_end>. */
static step deepseek_tail(cv_tool_parser *p) {
    size_t at = p->pos;
    int r = expect(p, &at, "```");
    if (r == 0) return ST_MORE;
    if (r < 0) at = p->pos;
    size_t at2 = at;
    if ((r = expect(p, &at, DS_CALL_END)) > 0) {
        p->pos = at;
        p->rs = R_AFTER;
        return ST_NEXT;
    }
    /* the model closed the calls without closing the call */
    int r2 = expect(p, &at2, DS_CALLS_END);
    if (r2 > 0) p->pos = at2;
    if (r2 > 0) return leave(p);
    return r == 0 || r2 == 0 ? ST_MORE : ST_FAIL;
}

/* ---- Llama's built-in tools: N.call(k="v", n=1, b=True) ---- */

static int ident_char(char c, int first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

/* A Python literal at s (a string, a number, True/False/None) as JSON; *end past it. */
static json_t *py_value(const char *s, const char *e, const char **end) {
    if (s < e && (*s == '"' || *s == '\'')) {
        char q = *s++, *out = malloc((size_t)(e - s) + 1);
        size_t n = 0;
        if (!out) return NULL;
        for (; s < e && *s != q; s++) {
            char c = *s;
            if (c == '\\' && s + 1 < e) {
                c = *++s;
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            }
            out[n++] = c;
        }
        json_t *v = s < e ? json_stringn(out, n) : NULL;
        free(out);
        *end = s + 1;
        return v;
    }
    static const struct {
        const char *py;
        json_t *(*make)(void);
    } words[] = {{"True", json_true}, {"False", json_false}, {"None", json_null}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].py);
        if ((size_t)(e - s) >= n && memcmp(s, words[i].py, n) == 0 && !(s + n < e && ident_char(s[n], 0))) {
            *end = s + n;
            return words[i].make();
        }
    }
    json_error_t je;
    json_t *v = json_loadb(s, (size_t)(e - s), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
    if (v && !json_is_number(v)) {
        json_decref(v);
        return NULL;
    }
    if (v) *end = s + je.position;
    return v;
}

/* R_PYCALL: held until ')' outside a string, then the whole call. */
static step python_call(cv_tool_parser *p) {
    const char *s = p->buf + skip_ws(p, p->pos), *e = p->buf + p->len, *n = s;
    while (n < e && ident_char(*n, n == s)) n++;
    if (n == e) return e - s > MAX_NAME ? ST_FAIL : ST_MORE;
    if (n == s || !valid_name(s, (size_t)(n - s))) return ST_FAIL;
    if ((size_t)(e - n) < 6) return memcmp(n, ".call(", (size_t)(e - n)) == 0 ? ST_MORE : ST_FAIL;
    if (memcmp(n, ".call(", 6) != 0) return ST_FAIL;
    const char *a = n + 6, *close = NULL;
    char q = 0;
    for (const char *c = a; c < e && !close; c++) {
        if (q && *c == '\\') c++;
        else if (q && *c == q) q = 0;
        else if (!q && (*c == '"' || *c == '\'')) q = *c;
        else if (!q && *c == ')') close = c;
    }
    if (!close) return (size_t)(e - a) > p->max_bytes ? ST_FAIL : ST_MORE;
    json_t *args = json_object();
    step st = args ? ST_NEXT : ST_MEM;
    while (st == ST_NEXT) {
        while (a < close && is_space(*a)) a++;
        if (a == close) break;
        const char *k = a;
        while (a < close && ident_char(*a, a == k)) a++;
        const char *ke = a;
        while (a < close && is_space(*a)) a++;
        json_t *v = ke > k && a < close && *a == '=' ? (a++, py_value(a + strspn(a, " \t"), close, &a)) : NULL;
        if (!v || a > close) {
            json_decref(v);
            st = ST_FAIL;
            break;
        }
        char key[MAX_NAME + 1];
        size_t kl = (size_t)(ke - k) > MAX_NAME ? MAX_NAME : (size_t)(ke - k);
        memcpy(key, k, kl);
        key[kl] = 0;
        json_object_set_new(args, key, v);
        while (a < close && is_space(*a)) a++;
        if (a < close && *a == ',') a++;
        else if (a != close) st = ST_FAIL;
    }
    if (st == ST_NEXT) {
        char name[MAX_NAME + 1];
        memcpy(name, s, (size_t)(n - s));
        name[n - s] = 0;
        if (call_whole(p, name, args) != CV_OK) st = ST_MEM;
        p->pos = (size_t)(close - p->buf) + 1;
        p->rs = R_AFTER;
    }
    json_decref(args);
    return st;
}

/* ---- the region's frame ---- */

/* R_OPEN: the first call after the region's marker (or a bare answer's start). */
static step region_open(cv_tool_parser *p) {
    size_t at = skip_ws(p, p->pos);
    if (at == p->len) return ST_MORE;
    if (p->bare && !p->fenced && starts_at(p, at, "```")) {
        if (prefix_of(p, at, FENCE)) return ST_MORE;
        const char *nl = memchr(p->buf + at, '\n', p->len - at);
        if (!nl) return ST_MORE; /* FENCE matched: the tag's line is short */
        p->fenced = 1;
        p->pos = (size_t)(nl - p->buf) + 1;
        return ST_NEXT;
    }
    switch (p->syn) {
    case CV_TOOL_SYNTAX_DEEPSEEK: {
        int r = expect(p, &at, DS_CALL_BEGIN);
        if (r <= 0) return r ? ST_FAIL : ST_MORE;
        p->pos = at;
        p->rs = R_DSHEAD;
        return ST_NEXT;
    }
    case CV_TOOL_SYNTAX_MISTRAL:
        p->pos = at;
        if (p->buf[at] == '[') {
            p->in_array = 1;
            size_t o = skip_ws(p, at + 1);
            if (o == p->len) return ST_MORE;
            if (p->buf[o] != '{') return ST_FAIL;
            p->pos = o;
            p->rs = R_OBJ;
        } else {
            p->rs = R_MNAME;
        }
        return ST_NEXT;
    case CV_TOOL_SYNTAX_LLAMA3:
        p->pos = at;
        p->rs = p->buf[at] == '{' ? R_OBJ : R_PYCALL;
        if (p->rs == R_PYCALL && p->bare) return ST_FAIL;
        return ST_NEXT;
    default:
        if (p->buf[at] != '{') return ST_FAIL;
        p->pos = at;
        p->rs = R_OBJ;
        return ST_NEXT;
    }
}

/* Leaves the region: buf[0..pos) is done with, the rest is scanned as content. */
static step leave(cv_tool_parser *p) {
    consume(p, p->pos);
    p->in_region = p->bare = p->fenced = p->in_array = 0;
    p->region_calls = 0;
    p->pos = 0;
    return ST_NEXT;
}

/* R_AFTER: a call is over; what may follow it in the syntax. */
static step region_after(cv_tool_parser *p) {
    size_t at = p->pos;
    int r;
    switch (p->syn) {
    case CV_TOOL_SYNTAX_HERMES:
        if (p->bare) break;
        if ((r = expect(p, &at, "</tool_call>")) == 0) return ST_MORE;
        if (r > 0) p->pos = at;
        return leave(p);
    case CV_TOOL_SYNTAX_MISTRAL:
        if (p->in_array) {
            if ((r = expect(p, &at, ",")) == 0) return ST_MORE;
            if (r > 0) {
                size_t o = skip_ws(p, at);
                if (o == p->len) return ST_MORE;
                if (p->buf[o] != '{') return leave(p);
                p->pos = o;
                p->rs = R_OBJ;
                return ST_NEXT;
            }
            if ((r = expect(p, &at, "]")) == 0) return ST_MORE;
            if (r < 0) return leave(p);
            p->pos = at;
            p->in_array = 0;
        }
        if ((r = expect(p, &at, "[TOOL_CALLS]")) == 0) return ST_MORE;
        if (r < 0) return leave(p);
        p->pos = at;
        p->rs = R_OPEN;
        return ST_NEXT;
    case CV_TOOL_SYNTAX_DEEPSEEK:
        if ((r = expect(p, &at, DS_CALL_BEGIN)) > 0) {
            p->pos = at;
            p->rs = R_DSHEAD;
            return ST_NEXT;
        }
        if (r == 0) return ST_MORE;
        at = p->pos;
        if ((r = expect(p, &at, DS_CALLS_END)) == 0) return ST_MORE;
        if (r > 0) p->pos = at;
        return leave(p);
    default:
        break;
    }
    /* llama3, and a bare answer: more objects joined by ';', a fence's end */
    size_t o = skip_ws(p, at);
    if (o == p->len) return ST_MORE;
    if (p->buf[o] == ';') o = skip_ws(p, o + 1);
    if (o == p->len) return ST_MORE;
    if (p->buf[o] == '{') {
        p->pos = o;
        p->rs = R_OBJ;
        return ST_NEXT;
    }
    if (p->fenced) {
        if ((r = expect(p, &at, "```")) == 0) return ST_MORE;
        if (r > 0) p->pos = at;
    }
    return leave(p);
}

static step region_step(cv_tool_parser *p) {
    switch (p->rs) {
    case R_OPEN: return region_open(p);
    case R_OBJ: return obj_head(p);
    case R_WHOLE: return obj_whole(p);
    case R_ARGS: return args_stream(p);
    case R_TAIL: return obj_tail(p);
    case R_AFTER: return region_after(p);
    case R_MNAME: return mistral_name(p);
    case R_DSHEAD: return deepseek_head(p);
    case R_DSTAIL: return deepseek_tail(p);
    case R_PYCALL: return python_call(p);
    }
    return ST_FAIL;
}

/* The region is no call (or no more of one). Before any call in it, all its text is
 * content: its marker as such, the rest scanned again; after one, what is left. */
static cv_status region_fail(cv_tool_parser *p) {
    if (p->region_calls) {
        if (p->rs == R_TAIL || p->rs == R_DSTAIL) p->pos = 0; /* the rest of a call's frame */
        leave(p);
        return CV_OK;
    }
    size_t m = p->bare ? 0 : strlen(syntaxes[p->syn].start);
    cv_status st = m ? content(p, p->buf, m) : CV_OK;
    p->pos = m;
    leave(p);
    p->started = 1;
    return st;
}

/* Bytes at the end of buf that could begin marker m. */
static size_t partial_marker(const char *b, size_t n, const char *m) {
    size_t ml = strlen(m);
    for (size_t k = ml - 1 < n ? ml - 1 : n; k > 0; k--)
        if (memcmp(b + n - k, m, k) == 0) return k;
    return 0;
}

/* Outside a region: content up to the next region's start. 1 when a region starts. */
static cv_status text_scan(cv_tool_parser *p, int *region) {
    const char *start = syntaxes[p->syn].start;
    const char *m = memmem(p->buf, p->len, start, strlen(start));
    size_t at = m ? (size_t)(m - p->buf) : SIZE_MAX;
    *region = 0;
    if ((p->syn == CV_TOOL_SYNTAX_LLAMA3 || p->syn == CV_TOOL_SYNTAX_HERMES) && !p->started) {
        /* a bare JSON call (in a fence or not) opens the answer: decided by its first bytes */
        size_t i = skip_ws(p, 0), left = p->len - i;
        if (i == p->len || (left < sizeof FENCE - 1 && memcmp(p->buf + i, FENCE, left) == 0)) return CV_OK;
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
    p->in_region = 1;
    p->rs = R_OPEN;
    p->pos = p->bare ? 0 : strlen(start);
    *region = 1;
    return CV_OK;
}

/* Hands on what buf decides, leaving held what it does not. */
static cv_status drain(cv_tool_parser *p) {
    for (;;) {
        if (!p->in_region) {
            int region;
            cv_status st = text_scan(p, &region);
            if (st != CV_OK || !region) return st;
            continue;
        }
        step s = region_step(p);
        if (s == ST_MEM) return CV_ENOMEM;
        if (s == ST_FAIL || (s == ST_MORE && p->len > p->max_bytes)) {
            cv_status st = region_fail(p);
            if (st != CV_OK) return st;
            continue;
        }
        if (s == ST_MORE) return CV_OK;
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
    if (p->in_region) {
        if (p->rs == R_ARGS) {
            call_end(p, 0);
            p->len = 0;
        } else if (!p->region_calls) {
            /* held whole until now: all of it is content */
            p->pos = 0;
            p->bare = 1; /* no marker to set apart */
            st = region_fail(p);
        } else if (p->rs == R_TAIL || p->rs == R_DSTAIL) {
            p->len = 0;
        } else {
            leave(p); /* what follows the last call */
        }
        p->in_region = 0;
    }
    if (st == CV_OK && p->len) st = content(p, p->buf, p->len);
    p->len = 0;
    if (p->ws_len && !p->n_calls) p->sink.content(p->sink.ctx, p->ws, p->ws_len);
    p->ws_len = 0;
    return st;
}
