#include "json_schema.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "grammar_util.h"
#include "utf8.h"

/* ---- a growing string ---- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->len + n + 1) c *= 2;
        char *p = realloc(b->s, c);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = c;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) b->failed = true;
    else sb_add(b, tmp, (size_t)n);
}

/* A GBNF string literal matching bytes s[0..n) exactly. */
static void sb_literal(sbuf *b, const char *s, size_t n) {
    sb_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) sb_printf(b, "\\x%02X", c);
        else sb_add(b, (const char *)&s[i], 1);
    }
    sb_str(b, "\"");
}

/* ---- the compiler ---- */

typedef struct refmemo {
    char *ref;
    char name[96];
} refmemo;

enum { P_WS = 1, P_STRING = 2, P_NUMBER = 4, P_INTEGER = 8, P_VALUE = 16, P_CHAR = 32 };

typedef struct gen {
    sbuf out;
    const char *prefix;
    const json_t *root;
    int n_rules;
    unsigned used;
    refmemo *refs;
    size_t n_refs;
    size_t nodes;
    char path[256];
    cv_error *err;
    cv_status st;
} gen;

static bool fail(gen *g, cv_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(gen *g, cv_status code, const char *fmt, ...) {
    if (g->st != CV_OK) return false;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g->st = cv_errorf(g->err, code, "json_schema: %s at %s", msg, g->path[0] ? g->path : "/");
    return false;
}

static bool unsupported(gen *g, const char *key) {
    return fail(g, CV_EINVAL, "%s is not supported", key);
}

/* Appends "/key" (JSON pointer escaped) to the path; returns the old length. */
static size_t path_push(gen *g, const char *key) {
    size_t old = strlen(g->path), n = old;
    if (n + 2 < sizeof g->path) g->path[n++] = '/';
    for (const char *k = key; *k && n + 3 < sizeof g->path; k++) {
        if (*k == '~' || *k == '/') {
            g->path[n++] = '~';
            g->path[n++] = *k == '~' ? '0' : '1';
        } else {
            g->path[n++] = *k;
        }
    }
    g->path[n] = 0;
    return old;
}

static void path_pop(gen *g, size_t old) { g->path[old] = 0; }

static void new_name(gen *g, char name[96]) { snprintf(name, 96, "%s-%d", g->prefix, ++g->n_rules); }

static void prim(gen *g, sbuf *b, unsigned which, const char *name) {
    g->used |= which;
    sb_printf(b, "%s-%s", g->prefix, name);
}

static void emit_rule(gen *g, const char *name, const sbuf *body) {
    sb_printf(&g->out, "%s ::= ", name);
    sb_add(&g->out, body->s ? body->s : "", body->len);
    sb_str(&g->out, "\n");
    if (body->failed) g->out.failed = true;
    if (g->out.len > CV_GRAMMAR_MAX_TEXT) fail(g, CV_ERANGE, "the grammar exceeds %u bytes", CV_GRAMMAR_MAX_TEXT);
}

static bool schema_rule(gen *g, const json_t *s, int depth, char name[96]);

/* A JSON value's compact text as a literal. */
static bool literal_value(gen *g, sbuf *b, const json_t *v) {
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t) return fail(g, CV_ENOMEM, "out of memory");
    sb_literal(b, t, strlen(t));
    free(t);
    return true;
}

/* ---- strings: patterns and formats ---- */

typedef struct rx {
    gen *g;
    const char *p, *end;
    sbuf *b;
} rx;

typedef struct cset {
    cv_cprange r[64];
    int n;
    bool overflow;
} cset;

static void cset_add(cset *c, uint32_t lo, uint32_t hi) {
    if (c->n == 64) c->overflow = true;
    else c->r[c->n++] = (cv_cprange){lo, hi};
}

static void cset_add_class(cset *c, char k) {
    switch (k) {
    case 'd': cset_add(c, '0', '9'); break;
    case 'w': cset_add(c, '0', '9'), cset_add(c, 'A', 'Z'), cset_add(c, 'a', 'z'), cset_add(c, '_', '_'); break;
    case 's': cset_add(c, ' ', ' '); break; /* tab and newline would need escapes in JSON */
    case 'D': cset_add(c, 0, '0' - 1), cset_add(c, '9' + 1, 0x10FFFF); break;
    case 'W':
        cset_add(c, 0, '0' - 1), cset_add(c, '9' + 1, 'A' - 1), cset_add(c, 'Z' + 1, '_' - 1);
        cset_add(c, '_' + 1, 'a' - 1), cset_add(c, 'z' + 1, 0x10FFFF);
        break;
    case 'S': cset_add(c, 0, ' ' - 1), cset_add(c, ' ' + 1, 0x10FFFF); break;
    }
}


/* Writes the class (negated or not) as a GBNF class of the characters that a JSON
 * string holds unescaped: the others (" \ and controls) are dropped, which narrows
 * what is generated but never lets an invalid string through. */
static bool emit_cset(rx *x, cset *c, bool negated) {
    if (c->overflow) return fail(x->g, CV_ERANGE, "pattern: a character class with more than 64 ranges");
    cv_cprange pos[65];
    int k = (int)cv_cpranges_normalize(c->r, (size_t)c->n, negated, pos);
    static const cv_cprange banned[] = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0x7F, 0x7F}, {0xD800, 0xDFFF}};
    sbuf *b = x->b;
    size_t mark = b->len;
    sb_str(b, "[");
    bool any = false;
    for (int i = 0; i < k; i++) {
        uint32_t lo = pos[i].lo;
        while (lo <= pos[i].hi) {
            /* the largest allowed run starting at lo */
            bool skip = false;
            uint32_t hi = pos[i].hi;
            for (size_t j = 0; j < sizeof banned / sizeof *banned; j++) {
                if (lo >= banned[j].lo && lo <= banned[j].hi) {
                    lo = banned[j].hi + 1;
                    skip = true;
                    break;
                }
                if (banned[j].lo > lo && banned[j].lo - 1 < hi) hi = banned[j].lo - 1;
            }
            if (skip) continue;
            sb_printf(b, "\\U%08X-\\U%08X", lo, hi);
            any = true;
            if (hi == 0x10FFFF) break;
            lo = hi + 1;
        }
    }
    sb_str(b, "]");
    if (!any) {
        b->len = mark;
        return fail(x->g, CV_EINVAL, "pattern: a character class with no character a JSON string holds unescaped");
    }
    return true;
}

/* A literal character of the pattern as the JSON escape or character it is in the
 * string's text. */
static void emit_rx_char(rx *x, uint32_t cp) {
    char u[4];
    switch (cp) {
    case '"': sb_literal(x->b, "\\\"", 2); return;
    case '\\': sb_literal(x->b, "\\\\", 2); return;
    case '\n': sb_literal(x->b, "\\n", 2); return;
    case '\r': sb_literal(x->b, "\\r", 2); return;
    case '\t': sb_literal(x->b, "\\t", 2); return;
    }
    if (cp < 0x20) {
        char esc[8];
        snprintf(esc, sizeof esc, "\\u%04x", cp);
        sb_literal(x->b, esc, 6);
        return;
    }
    sb_literal(x->b, u, (size_t)cv_utf8_encode(cp, u));
}

static bool rx_alt(rx *x, int depth);

static bool rx_codepoint(rx *x, uint32_t *cp) {
    int n = cv_utf8_decode((const uint8_t *)x->p, (size_t)(x->end - x->p), cp);
    if (!n) return fail(x->g, CV_EINVAL, "pattern: invalid UTF-8");
    x->p += n;
    return true;
}

/* An escape after '\' (x->p past it): a class letter into *cls, else a literal. */
static bool rx_escape(rx *x, uint32_t *cp, char *cls) {
    *cls = 0;
    if (x->p >= x->end) return fail(x->g, CV_EINVAL, "pattern: ends with a backslash");
    char c = *x->p++;
    if (strchr("dwsDWS", c)) {
        *cls = c;
        return true;
    }
    if (c == 'n') *cp = '\n';
    else if (c == 't') *cp = '\t';
    else if (c == 'r') *cp = '\r';
    else if (c == 'u') {
        uint32_t v = 0;
        for (int i = 0; i < 4; i++) {
            char h = x->p < x->end ? *x->p++ : 0;
            int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (d < 0) return fail(x->g, CV_EINVAL, "pattern: \\u needs four hex digits");
            v = v * 16 + (uint32_t)d;
        }
        if (v >= 0xD800 && v <= 0xDFFF) return fail(x->g, CV_EINVAL, "pattern: \\u%04X is a surrogate", v);
        *cp = v;
    } else if (strchr(".*+?()[]{}|^$\\/-", c)) {
        *cp = (uint32_t)c;
    } else {
        return fail(x->g, CV_EINVAL, "pattern: the escape \\%c is not supported", c);
    }
    return true;
}

static bool rx_class(rx *x) {
    cset c = {0};
    bool negated = x->p < x->end && *x->p == '^';
    if (negated) x->p++;
    bool first = true;
    for (;;) {
        if (x->p >= x->end) return fail(x->g, CV_EINVAL, "pattern: unterminated [");
        if (*x->p == ']' && !first) {
            x->p++;
            break;
        }
        first = false;
        uint32_t lo, hi;
        char cls = 0;
        if (*x->p == '\\') {
            x->p++;
            if (!rx_escape(x, &lo, &cls)) return false;
        } else if (!rx_codepoint(x, &lo)) {
            return false;
        }
        if (cls) {
            cset_add_class(&c, cls);
            continue;
        }
        hi = lo;
        if (x->p + 1 < x->end && *x->p == '-' && x->p[1] != ']') {
            x->p++;
            if (*x->p == '\\') {
                x->p++;
                if (!rx_escape(x, &hi, &cls)) return false;
                if (cls) return fail(x->g, CV_EINVAL, "pattern: a range cannot end in a class escape");
            } else if (!rx_codepoint(x, &hi)) {
                return false;
            }
            if (hi < lo) return fail(x->g, CV_EINVAL, "pattern: reversed range in a class");
        }
        cset_add(&c, lo, hi);
    }
    return emit_cset(x, &c, negated);
}

static bool rx_count(rx *x, long *v) {
    if (x->p >= x->end || *x->p < '0' || *x->p > '9') return fail(x->g, CV_EINVAL, "pattern: expected a number in {}");
    *v = 0;
    while (x->p < x->end && *x->p >= '0' && *x->p <= '9') {
        *v = *v * 10 + (*x->p++ - '0');
        if (*v > CV_GRAMMAR_MAX_REPEAT) return fail(x->g, CV_ERANGE, "pattern: a repetition count over %d", CV_GRAMMAR_MAX_REPEAT);
    }
    return true;
}

static bool rx_seq(rx *x, int depth) {
    bool empty = true;
    while (x->p < x->end && *x->p != '|' && *x->p != ')') {
        char c = *x->p;
        sb_str(x->b, empty ? "(" : " (");
        empty = false;
        if (c == '(') {
            x->p++;
            if (x->p < x->end && *x->p == '?') {
                if (x->p + 1 < x->end && x->p[1] == ':') x->p += 2;
                else return fail(x->g, CV_EINVAL, "pattern: (? groups other than (?: (lookaround, named groups) are not supported");
            }
            if (depth > 32) return fail(x->g, CV_ERANGE, "pattern: groups nested deeper than 32");
            if (!rx_alt(x, depth + 1)) return false;
            if (x->p >= x->end || *x->p != ')') return fail(x->g, CV_EINVAL, "pattern: unclosed (");
            x->p++;
        } else if (c == '[') {
            x->p++;
            if (!rx_class(x)) return false;
        } else if (c == '.') {
            x->p++;
            cset none = {0};
            if (!emit_cset(x, &none, true)) return false;
        } else if (c == '^' || c == '$') {
            return fail(x->g, CV_EINVAL, "pattern: %c is supported only at the start (^) or the end ($)", c);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            return fail(x->g, CV_EINVAL, "pattern: %c with nothing to repeat", c);
        } else {
            uint32_t cp;
            char cls = 0;
            if (c == '\\') {
                x->p++;
                if (!rx_escape(x, &cp, &cls)) return false;
            } else if (!rx_codepoint(x, &cp)) {
                return false;
            }
            if (cls) {
                cset s = {0};
                cset_add_class(&s, cls);
                if (!emit_cset(x, &s, false)) return false;
            } else {
                emit_rx_char(x, cp);
            }
        }
        sb_str(x->b, ")");
        if (x->p < x->end && (*x->p == '*' || *x->p == '+' || *x->p == '?')) {
            sb_add(x->b, x->p++, 1);
        } else if (x->p < x->end && *x->p == '{') {
            x->p++;
            long lo, hi;
            if (!rx_count(x, &lo)) return false;
            hi = lo;
            if (x->p < x->end && *x->p == ',') {
                x->p++;
                hi = -1;
                if (x->p < x->end && *x->p != '}' && !rx_count(x, &hi)) return false;
            }
            if (x->p >= x->end || *x->p != '}') return fail(x->g, CV_EINVAL, "pattern: expected }");
            x->p++;
            if (hi >= 0 && hi < lo) return fail(x->g, CV_EINVAL, "pattern: {m,n} with n < m");
            if (hi < 0) sb_printf(x->b, "{%ld,}", lo);
            else sb_printf(x->b, "{%ld,%ld}", lo, hi);
        } else {
            continue;
        }
        if (x->p < x->end && *x->p == '?') x->p++; /* lazy: the same strings */
        else if (x->p < x->end && (*x->p == '+' || *x->p == '*' || *x->p == '{'))
            return fail(x->g, CV_EINVAL, "pattern: possessive or doubled quantifiers are not supported");
    }
    if (empty) sb_str(x->b, "\"\"");
    return true;
}

static bool rx_alt(rx *x, int depth) {
    sb_str(x->b, "(");
    if (!rx_seq(x, depth)) return false;
    while (x->p < x->end && *x->p == '|') {
        x->p++;
        sb_str(x->b, " | ");
        if (!rx_seq(x, depth)) return false;
    }
    sb_str(x->b, ")");
    return true;
}

static bool pattern_body(gen *g, sbuf *b, const char *pat, size_t len) {
    if (len > 4096) return fail(g, CV_ERANGE, "pattern: longer than 4096 bytes");
    rx x = {g, pat, pat + len, b};
    if (x.p < x.end && *x.p == '^') x.p++;
    if (x.end > x.p && x.end[-1] == '$' && (x.end - x.p < 2 || x.end[-2] != '\\')) x.end--;
    sb_str(b, "\"\\\"\" ");
    if (!rx_alt(&x, 0)) return false;
    if (x.p != x.end) return fail(g, CV_EINVAL, "pattern: unbalanced )");
    sb_str(b, " \"\\\"\"");
    return true;
}

static bool format_body(gen *g, sbuf *b, const char *f) {
    static const char date[] = "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01])";
    static const char time[] = "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? "
                               "(\"Z\" | [+-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])";
    sb_str(b, "\"\\\"\" ");
    if (!strcmp(f, "date")) sb_str(b, date);
    else if (!strcmp(f, "time")) sb_str(b, time);
    else if (!strcmp(f, "date-time")) sb_printf(b, "%s \"T\" %s", date, time);
    else if (!strcmp(f, "uuid"))
        sb_str(b, "[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}");
    else return fail(g, CV_EINVAL, "format \"%.40s\" is not supported (date, time, date-time, uuid are)", f);
    sb_str(b, " \"\\\"\"");
    return true;
}

static bool get_count(gen *g, const json_t *s, const char *key, long *v) {
    const json_t *x = json_object_get(s, key);
    if (!x) return true;
    if (!json_is_integer(x) || json_integer_value(x) < 0)
        return fail(g, CV_EINVAL, "%s must be a non-negative integer", key);
    if (json_integer_value(x) > CV_GRAMMAR_MAX_REPEAT)
        return fail(g, CV_ERANGE, "%s %lld is over the limit of %d", key, (long long)json_integer_value(x), CV_GRAMMAR_MAX_REPEAT);
    *v = (long)json_integer_value(x);
    return true;
}

static bool string_body(gen *g, sbuf *b, const json_t *s) {
    const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    long lo = 0, hi = -1;
    if (!get_count(g, s, "minLength", &lo) || !get_count(g, s, "maxLength", &hi)) return false;
    bool lengths = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if ((pat != NULL) + (fmt != NULL) + lengths > 1)
        return fail(g, CV_EINVAL, "pattern, format and minLength/maxLength together are not supported");
    if (pat) {
        if (!json_is_string(pat)) return fail(g, CV_EINVAL, "pattern must be a string");
        size_t old = path_push(g, "pattern");
        bool ok = pattern_body(g, b, json_string_value(pat), json_string_length(pat));
        path_pop(g, old);
        return ok;
    }
    if (fmt) {
        if (!json_is_string(fmt)) return fail(g, CV_EINVAL, "format must be a string");
        return format_body(g, b, json_string_value(fmt));
    }
    if (!lengths) {
        prim(g, b, P_STRING, "string");
        return true;
    }
    if (hi >= 0 && hi < lo) return fail(g, CV_EINVAL, "maxLength is below minLength");
    sb_str(b, "\"\\\"\" ");
    prim(g, b, P_CHAR, "char");
    if (hi < 0) sb_printf(b, "{%ld,}", lo);
    else sb_printf(b, "{%ld,%ld}", lo, hi);
    sb_str(b, " \"\\\"\"");
    return true;
}

/* ---- objects and arrays ---- */

static bool object_body(gen *g, sbuf *b, const json_t *s, int depth) {
    const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
                 *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return fail(g, CV_EINVAL, "properties must be an object");
    if (req && !json_is_array(req)) return fail(g, CV_EINVAL, "required must be an array of strings");
    if (addl && !json_is_boolean(addl) && !json_is_object(addl))
        return fail(g, CV_EINVAL, "additionalProperties must be a boolean or a schema");
    size_t n = props ? json_object_size(props) : 0;
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const json_t *r = json_array_get(req, i);
        if (!json_is_string(r)) return fail(g, CV_EINVAL, "required must be an array of strings");
        if (!props || !json_object_get(props, json_string_value(r)))
            return fail(g, CV_EINVAL, "required names \"%.60s\", which is not in properties", json_string_value(r));
    }
    if (n == 0) {
        if (json_is_false(addl)) {
            sb_str(b, "\"{\" ");
            prim(g, b, P_WS, "ws");
            sb_str(b, " \"}\"");
            return true;
        }
        /* A map: string keys, values of the additionalProperties schema (any value
         * when it is absent or true). */
        char val[96];
        if (json_is_object(addl)) {
            size_t old = path_push(g, "additionalProperties");
            bool ok = schema_rule(g, addl, depth + 1, val);
            path_pop(g, old);
            if (!ok) return false;
        } else {
            g->used |= P_VALUE;
            snprintf(val, sizeof val, "%s-value", g->prefix);
        }
        char kv[96];
        new_name(g, kv);
        sbuf body = {0};
        prim(g, &body, P_STRING, "string");
        sb_str(&body, " ");
        prim(g, &body, P_WS, "ws");
        sb_str(&body, " \":\" ");
        prim(g, &body, P_WS, "ws");
        sb_printf(&body, " %s", val);
        emit_rule(g, kv, &body);
        free(body.s);
        sb_str(b, "\"{\" ");
        prim(g, b, P_WS, "ws");
        sb_printf(b, " (%s (\",\" ", kv);
        prim(g, b, P_WS, "ws");
        sb_printf(b, " %s)* ", kv);
        prim(g, b, P_WS, "ws");
        sb_str(b, ")? \"}\"");
        return true;
    }
    /* Properties in order. rest[i]: the members from i on after at least one member;
     * some[i]: from i on, at least one member (so that "{" ws ws "}" never arises). */
    char (*kv)[96] = malloc(n * sizeof *kv), (*rest)[96] = calloc(n + 1, sizeof *rest),
         (*some)[96] = calloc(n + 1, sizeof *some);
    bool *required = calloc(n, sizeof *required);
    bool ok = kv && rest && some && required;
    if (!ok) fail(g, CV_ENOMEM, "out of memory");
    const char *key;
    const json_t *sub;
    size_t i = 0;
    bool any_required = false;
    json_object_foreach((json_t *)props, key, sub) {
        if (!ok) break;
        for (size_t r = 0; req && r < json_array_size(req); r++)
            if (!strcmp(json_string_value(json_array_get(req, r)), key)) required[i] = any_required = true;
        size_t old = path_push(g, "properties"), old2 = path_push(g, key);
        char val[96];
        ok = schema_rule(g, sub, depth + 1, val);
        path_pop(g, old2);
        path_pop(g, old);
        if (!ok) break;
        new_name(g, kv[i]);
        sbuf body = {0};
        json_t *k = json_string(key);
        ok = k && literal_value(g, &body, k);
        json_decref(k);
        sb_str(&body, " ");
        prim(g, &body, P_WS, "ws");
        sb_str(&body, " \":\" ");
        prim(g, &body, P_WS, "ws");
        sb_printf(&body, " %s", val);
        emit_rule(g, kv[i], &body);
        free(body.s);
        i++;
    }
    for (size_t j = n; ok && j-- > 0;) {
        sbuf body = {0};
        new_name(g, rest[j]);
        if (required[j]) sb_str(&body, "\",\" ");
        else sb_str(&body, "(\",\" ");
        prim(g, &body, P_WS, "ws");
        sb_printf(&body, " %s%s%s%s", kv[j], required[j] ? "" : ")?", rest[j + 1][0] ? " " : "", rest[j + 1]);
        emit_rule(g, rest[j], &body);
        body.len = 0;
        new_name(g, some[j]);
        sb_printf(&body, "%s%s%s", kv[j], rest[j + 1][0] ? " " : "", rest[j + 1]);
        if (!required[j] && some[j + 1][0]) sb_printf(&body, " | %s", some[j + 1]);
        emit_rule(g, some[j], &body);
        free(body.s);
    }
    if (ok) {
        sb_str(b, "\"{\" ");
        prim(g, b, P_WS, "ws");
        sb_printf(b, " %s%s ", any_required ? "" : "(", some[0]);
        prim(g, b, P_WS, "ws");
        sb_printf(b, "%s \"}\"", any_required ? "" : ")?");
    }
    free(kv);
    free(rest);
    free(some);
    free(required);
    return ok;
}

static bool array_body(gen *g, sbuf *b, const json_t *s, int depth) {
    const json_t *items = json_object_get(s, "items");
    long lo = 0, hi = -1;
    if (!get_count(g, s, "minItems", &lo) || !get_count(g, s, "maxItems", &hi)) return false;
    if (hi >= 0 && hi < lo) return fail(g, CV_EINVAL, "maxItems is below minItems");
    char item[96];
    if (items) {
        if (json_is_array(items)) return fail(g, CV_EINVAL, "items as an array (tuples) is not supported");
        size_t old = path_push(g, "items");
        bool ok = schema_rule(g, items, depth + 1, item);
        path_pop(g, old);
        if (!ok) return false;
    } else {
        g->used |= P_VALUE;
        snprintf(item, sizeof item, "%s-value", g->prefix);
    }
    sb_str(b, "\"[\" ");
    prim(g, b, P_WS, "ws");
    if (hi == 0) {
        sb_str(b, " \"]\"");
        return true;
    }
    sb_printf(b, " %s%s (\",\" ", lo == 0 ? "(" : "", item);
    prim(g, b, P_WS, "ws");
    long more_lo = lo > 0 ? lo - 1 : 0;
    if (hi < 0) sb_printf(b, " %s){%ld,} ", item, more_lo);
    else sb_printf(b, " %s){%ld,%ld} ", item, more_lo, hi - 1);
    prim(g, b, P_WS, "ws");
    sb_printf(b, "%s \"]\"", lo == 0 ? ")?" : "");
    return true;
}

/* ---- a schema ---- */

static const char *const known_keys[] = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems",
    "maxItems", "anyOf", "pattern", "minLength", "maxLength", "format", "$ref", "$defs", "definitions",
    "title", "description", "examples", "default", "$schema", "$id", "$comment", NULL};

static bool type_body(gen *g, sbuf *b, const json_t *s, const char *t, int depth) {
    if (!strcmp(t, "object")) return object_body(g, b, s, depth);
    if (!strcmp(t, "array")) return array_body(g, b, s, depth);
    if (!strcmp(t, "string")) return string_body(g, b, s);
    if (!strcmp(t, "number")) prim(g, b, P_NUMBER, "number");
    else if (!strcmp(t, "integer")) prim(g, b, P_INTEGER, "integer");
    else if (!strcmp(t, "boolean")) sb_str(b, "(\"true\" | \"false\")");
    else if (!strcmp(t, "null")) sb_str(b, "\"null\"");
    else return fail(g, CV_EINVAL, "type \"%.40s\" is not a JSON schema type", t);
    return true;
}

/* Resolves a local reference ("#", "#/$defs/x", any "#/a/b" pointer). */
static const json_t *resolve(gen *g, const char *ref) {
    if (ref[0] != '#') return fail(g, CV_EINVAL, "$ref \"%.60s\" is not local (only #/... references are)", ref), NULL;
    const json_t *cur = g->root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~' && (p[1] == '0' || p[1] == '1')) c = *++p == '0' ? '~' : '/';
            if (n + 1 < sizeof tok) tok[n++] = c;
        }
        tok[n] = 0;
        if (json_is_object(cur)) cur = json_object_get(cur, tok);
        else if (json_is_array(cur)) {
            char *end;
            unsigned long k = strtoul(tok, &end, 10);
            cur = *tok && !*end ? json_array_get(cur, k) : NULL;
        } else cur = NULL;
        if (!cur) return fail(g, CV_EINVAL, "$ref \"%.60s\" points at nothing", ref), NULL;
    }
    if (*p) return fail(g, CV_EINVAL, "$ref \"%.60s\" is not a JSON pointer", ref), NULL;
    return cur;
}

static bool ref_rule(gen *g, const char *ref, int depth, char name[96]) {
    for (size_t i = 0; i < g->n_refs; i++)
        if (!strcmp(g->refs[i].ref, ref)) {
            memcpy(name, g->refs[i].name, 96);
            return true;
        }
    const json_t *target = resolve(g, ref);
    if (!target) return false;
    refmemo *r = realloc(g->refs, (g->n_refs + 1) * sizeof *r);
    if (!r) return fail(g, CV_ENOMEM, "out of memory");
    g->refs = r;
    r = &g->refs[g->n_refs];
    if (!(r->ref = strdup(ref))) return fail(g, CV_ENOMEM, "out of memory");
    g->n_refs++;
    /* Named before it is compiled, so a recursive reference finds it. */
    new_name(g, name);
    memcpy(r->name, name, 96);
    char inner[96];
    char saved[256];
    memcpy(saved, g->path, sizeof saved);
    snprintf(g->path, sizeof g->path, "%s", ref + 1);
    bool ok = schema_rule(g, target, depth + 1, inner);
    memcpy(g->path, saved, sizeof saved);
    if (!ok) return false;
    sbuf body = {0};
    sb_str(&body, inner);
    emit_rule(g, name, &body);
    free(body.s);
    return true;
}

/* Compiles schema s into a rule; its name into name. */
static bool schema_rule(gen *g, const json_t *s, int depth, char name[96]) {
    if (++g->nodes > CV_JSON_SCHEMA_MAX_NODES)
        return fail(g, CV_ERANGE, "more than %d subschemas", CV_JSON_SCHEMA_MAX_NODES);
    if (depth > CV_JSON_SCHEMA_MAX_DEPTH) return fail(g, CV_ERANGE, "nested deeper than %d", CV_JSON_SCHEMA_MAX_DEPTH);
    if (json_is_true(s)) {
        g->used |= P_VALUE;
        snprintf(name, 96, "%s-value", g->prefix);
        return true;
    }
    if (json_is_false(s)) return fail(g, CV_EINVAL, "the schema false matches nothing");
    if (!json_is_object(s)) return fail(g, CV_EINVAL, "a schema must be an object or a boolean");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)s, key, v) {
        size_t k = 0;
        while (known_keys[k] && strcmp(known_keys[k], key)) k++;
        if (!known_keys[k]) return unsupported(g, key);
    }
    const json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) return fail(g, CV_EINVAL, "$ref must be a string");
        json_object_foreach((json_t *)s, key, v) {
            if (strcmp(key, "$ref") && strcmp(key, "title") && strcmp(key, "description") && strcmp(key, "$defs") &&
                strcmp(key, "definitions") && strcmp(key, "$schema") && strcmp(key, "$id") && strcmp(key, "$comment") &&
                strcmp(key, "examples") && strcmp(key, "default"))
                return fail(g, CV_EINVAL, "%s beside $ref is not supported", key);
        }
        return ref_rule(g, json_string_value(ref), depth, name);
    }
    sbuf body = {0};
    bool ok = true;
    const json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const"),
                 *any = json_object_get(s, "anyOf"), *type = json_object_get(s, "type");
    if (cn) {
        ok = literal_value(g, &body, cn);
    } else if (en) {
        if (!json_is_array(en) || json_array_size(en) == 0) ok = fail(g, CV_EINVAL, "enum must be a non-empty array");
        for (size_t i = 0; ok && i < json_array_size(en); i++) {
            if (i) sb_str(&body, " | ");
            ok = literal_value(g, &body, json_array_get(en, i));
        }
    } else if (any) {
        if (!json_is_array(any) || json_array_size(any) == 0) ok = fail(g, CV_EINVAL, "anyOf must be a non-empty array");
        for (size_t i = 0; ok && i < json_array_size(any); i++) {
            char sub[96], idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            size_t old = path_push(g, "anyOf"), old2 = path_push(g, idx);
            ok = schema_rule(g, json_array_get(any, i), depth + 1, sub);
            path_pop(g, old2);
            path_pop(g, old);
            if (i) sb_str(&body, " | ");
            sb_str(&body, sub);
        }
    } else if (json_is_string(type)) {
        ok = type_body(g, &body, s, json_string_value(type), depth);
    } else if (json_is_array(type)) {
        if (json_array_size(type) == 0) ok = fail(g, CV_EINVAL, "type must not be an empty list");
        for (size_t i = 0; ok && i < json_array_size(type); i++) {
            const json_t *t = json_array_get(type, i);
            if (!json_is_string(t)) {
                ok = fail(g, CV_EINVAL, "type must be a string or a list of strings");
                break;
            }
            sb_str(&body, i ? " | (" : "(");
            ok = type_body(g, &body, s, json_string_value(t), depth);
            sb_str(&body, ")");
        }
    } else if (type) {
        ok = fail(g, CV_EINVAL, "type must be a string or a list of strings");
    } else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
               json_object_get(s, "required")) {
        ok = object_body(g, &body, s, depth);
    } else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
        ok = array_body(g, &body, s, depth);
    } else if (json_object_get(s, "pattern") || json_object_get(s, "format") || json_object_get(s, "minLength") ||
               json_object_get(s, "maxLength")) {
        ok = string_body(g, &body, s);
    } else {
        prim(g, &body, P_VALUE, "value");
    }
    if (ok) {
        new_name(g, name);
        emit_rule(g, name, &body);
    }
    free(body.s);
    return ok && g->st == CV_OK;
}

/* The shared helper rules the schema used. */
static void emit_prims(gen *g) {
    const char *p = g->prefix;
    if (g->used & P_VALUE) g->used |= P_STRING | P_NUMBER | P_WS;
    if (g->used & P_STRING) g->used |= P_CHAR;
    if (g->used & P_WS) sb_printf(&g->out, "%s-ws ::= [ \\t\\n]{0,20}\n", p);
    if (g->used & P_CHAR)
        sb_printf(&g->out, "%s-char ::= [^\"\\\\\\x00-\\x1F\\x7F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n", p);
    if (g->used & P_STRING) sb_printf(&g->out, "%s-string ::= \"\\\"\" %s-char* \"\\\"\"\n", p, p);
    if (g->used & (P_INTEGER | P_NUMBER)) sb_printf(&g->out, "%s-integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n", p);
    if (g->used & P_NUMBER)
        sb_printf(&g->out, "%s-number ::= %s-integer (\".\" [0-9]{1,15})? ([eE] [-+]? [0-9]{1,2})?\n", p, p);
    if (g->used & P_VALUE) {
        sb_printf(&g->out, "%s-value ::= %s-object | %s-array | %s-string | %s-number | \"true\" | \"false\" | \"null\"\n",
                  p, p, p, p, p);
        sb_printf(&g->out, "%s-object ::= \"{\" %s-ws (%s-string %s-ws \":\" %s-ws %s-value (\",\" %s-ws %s-string %s-ws \":\" %s-ws %s-value)* %s-ws)? \"}\"\n",
                  p, p, p, p, p, p, p, p, p, p, p, p);
        sb_printf(&g->out, "%s-array ::= \"[\" %s-ws (%s-value (\",\" %s-ws %s-value)* %s-ws)? \"]\"\n", p, p, p, p, p, p);
    }
}

/* Whether the rules compile; rules under another root name are checked as a caller
 * embeds them, under a root rule that refers to theirs. */
static cv_status check_rules(const sbuf *out, const char *prefix, cv_error *err) {
    if (strcmp(prefix, "root") == 0) return cv_grammar_check(out->s, out->len, err);
    size_t n = strlen(prefix) + 10 + out->len;
    char *text = malloc(n + 1);
    if (!text) return cv_errorf(err, CV_ENOMEM, "out of memory");
    int k = snprintf(text, n + 1, "root ::= %s\n", prefix);
    memcpy(text + k, out->s, out->len);
    cv_status st = cv_grammar_check(text, (size_t)k + out->len, err);
    free(text);
    return st;
}

cv_status cv_json_schema_gbnf(const json_t *schema, const char *root_name, char **gbnf, cv_error *err) {
    *gbnf = NULL;
    const char *prefix = root_name ? root_name : "root";
    size_t plen = strlen(prefix);
    if (plen == 0 || plen > 48 || strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != plen)
        return cv_errorf(err, CV_EINVAL, "json_schema: the rule name \"%.48s\" is not a GBNF name", prefix);
    gen g = {.prefix = prefix, .root = schema, .err = err};
    char top[96];
    if (schema_rule(&g, schema, 0, top)) {
        sb_printf(&g.out, "%s ::= %s\n", prefix, top);
        emit_prims(&g);
        cv_error ge;
        if (g.out.failed) fail(&g, CV_ENOMEM, "out of memory");
        else if (g.out.len > CV_GRAMMAR_MAX_TEXT) fail(&g, CV_ERANGE, "the grammar exceeds %u bytes", CV_GRAMMAR_MAX_TEXT);
        else if (check_rules(&g.out, prefix, &ge) != CV_OK)
            /* Only a $ref that reaches itself without any text between can get here. */
            fail(&g, ge.code, "the schema cannot be compiled (%s)", ge.msg);
    }
    for (size_t i = 0; i < g.n_refs; i++) free(g.refs[i].ref);
    free(g.refs);
    if (g.st != CV_OK) {
        free(g.out.s);
        return g.st;
    }
    *gbnf = g.out.s;
    return CV_OK;
}

cv_status cv_json_schema_gbnf_text(const char *json, size_t len, const char *root_name, char **gbnf,
                                   cv_error *err) {
    *gbnf = NULL;
    json_error_t je;
    json_t *schema = json_loadb(json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!schema)
        return cv_errorf(err, CV_EINVAL, "json_schema: not valid JSON at line %d column %d: %s", je.line, je.column, je.text);
    cv_status st = cv_json_schema_gbnf(schema, root_name, gbnf, err);
    json_decref(schema);
    return st;
}
