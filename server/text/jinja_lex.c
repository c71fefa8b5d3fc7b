/* Template text -> tokens, as jinja2's lexer does with Hugging Face's settings:
 * newlines normalised to \n and one trailing newline dropped (keep_trailing_newline
 * off); trim_blocks drops the newline right after a block or comment tag; lstrip_blocks
 * drops the spaces and tabs before one that starts its line; "{%-" / "-%}" (and the
 * {{ }} and {# #} forms) strip all whitespace on that side; "{%+" / "+%}" keep it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_int.h"

typedef struct lx {
    jarena *a;
    const char *s;
    size_t n, pos;
    int line;
    jtoken *v;
    size_t nt, cap;
    cv_error *err;
} lx;

static bool emit(lx *l, jtoken t) {
    if (l->nt == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        jtoken *v = ja_alloc(l->a, cap * sizeof *v);
        if (!v) return cv_errorf(l->err, CV_ENOMEM, "chat template: out of memory lexing"), false;
        if (l->nt) memcpy(v, l->v, l->nt * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->nt++] = t;
    return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int count_lines(const char *p, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] == '\n';
    return k;
}

static cv_status fail(lx *l, cv_status code, const char *what) {
    return cv_errorf(l->err, code, "chat template line %d: %s", l->line, what);
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A string literal's body with Python's unicode-escape rules (what jinja2 applies):
 * unknown escapes stay as written. */
static cv_status unescape(lx *l, const char *p, size_t n, jtoken *t) {
    char *o = ja_alloc(l->a, n + 1);
    if (!o) return fail(l, CV_ENOMEM, "out of memory");
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 == n) {
            o[w++] = p[i];
            continue;
        }
        char e = p[++i];
        int digits = 0;
        switch (e) {
        case '\n': break;
        case '\\': o[w++] = '\\'; break;
        case '\'': o[w++] = '\''; break;
        case '"': o[w++] = '"'; break;
        case 'a': o[w++] = '\a'; break;
        case 'b': o[w++] = '\b'; break;
        case 'f': o[w++] = '\f'; break;
        case 'n': o[w++] = '\n'; break;
        case 'r': o[w++] = '\r'; break;
        case 't': o[w++] = '\t'; break;
        case 'v': o[w++] = '\v'; break;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        case 'N': return fail(l, CV_EUNSUPPORTED, "unsupported construct: a \\N{...} escape");
        default:
            if (e >= '0' && e <= '7') {
                unsigned v = 0;
                int k = 0;
                for (; k < 3 && i < n && p[i] >= '0' && p[i] <= '7'; k++, i++) v = v * 8 + (unsigned)(p[i] - '0');
                i--;
                w += ju_put(o + w, v);
            } else {
                o[w++] = '\\';
                o[w++] = e;
            }
        }
        if (digits) {
            unsigned v = 0;
            for (int k = 0; k < digits; k++) {
                int h = i + 1 + (size_t)k < n ? hexval(p[i + 1 + k]) : -1;
                if (h < 0) return fail(l, CV_EFORMAT, "a truncated \\x, \\u or \\U escape");
                v = v * 16 + (unsigned)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v < 0xE000))
                return fail(l, CV_EUNSUPPORTED, "unsupported construct: an escape of a surrogate or beyond U+10FFFF");
            i += (size_t)digits;
            w += ju_put(o + w, v); /* never longer than the escape */
        }
    }
    t->p = o;
    t->len = w;
    return CV_OK;
}

static const char *const ops2[] = {"//", "**", "==", "!=", ">=", "<="};
static const char ops1[] = "+-/*%~[](){}<>=.:|,";

/* Tokens inside a tag, up to and including its end. */
static cv_status lex_tag(lx *l, bool block, bool *line_starting) {
    int depth = 0;
    for (;;) {
        while (l->pos < l->n && is_space(l->s[l->pos])) l->line += l->s[l->pos++] == '\n';
        if (l->pos >= l->n) return fail(l, CV_EFORMAT, block ? "a '{%' tag never closed" : "a '{{' never closed");
        const char *s = l->s + l->pos;
        size_t left = l->n - l->pos;
        if (depth == 0) {
            const char *end = block ? "%}" : "}}";
            char sign = (s[0] == '-' || (block && s[0] == '+')) && left >= 3 && memcmp(s + 1, end, 2) == 0 ? s[0] : 0;
            if (sign || (left >= 2 && memcmp(s, end, 2) == 0)) {
                if (!emit(l, (jtoken){block ? TK_BLOCK_END : TK_VAR_END, l->line, NULL, 0, 0, 0}))
                    return CV_ENOMEM;
                l->pos += sign ? 3 : 2;
                size_t from = l->pos;
                if (sign == '-')
                    while (l->pos < l->n && is_space(l->s[l->pos])) l->pos++;
                else if (block && !sign && l->pos < l->n && l->s[l->pos] == '\n')
                    l->pos++;
                l->line += count_lines(l->s + from, l->pos - from);
                *line_starting = l->pos > from && l->s[l->pos - 1] == '\n';
                return CV_OK;
            }
        }
        jtoken t = {.line = l->line, .p = s};
        if (is_alpha(s[0])) {
            size_t k = 1;
            while (k < left && (is_alpha(s[k]) || is_digit(s[k]))) k++;
            t.k = TK_NAME;
            t.len = k;
            l->pos += k;
        } else if (is_digit(s[0])) {
            char num[64];
            size_t k = 0, w = 0;
            bool flt = false;
            while (k < left && (is_digit(s[k]) || s[k] == '_')) k++;
            if (k + 1 < left && s[k] == '.' && is_digit(s[k + 1])) {
                flt = true;
                k++;
                while (k < left && (is_digit(s[k]) || s[k] == '_')) k++;
            }
            if (k < left && (s[k] == 'e' || s[k] == 'E')) {
                size_t e = k + 1;
                if (e < left && (s[e] == '+' || s[e] == '-')) e++;
                if (e < left && is_digit(s[e])) {
                    flt = true;
                    k = e;
                    while (k < left && (is_digit(s[k]) || s[k] == '_')) k++;
                }
            }
            for (size_t i = 0; i < k && w + 1 < sizeof num; i++)
                if (s[i] != '_') num[w++] = s[i];
            num[w] = 0;
            if (k >= sizeof num) return fail(l, CV_EUNSUPPORTED, "unsupported construct: a number literal over 63 characters");
            t.k = flt ? TK_FLOAT : TK_INT;
            if (flt) t.f = strtod(num, NULL);
            else {
                errno = 0;
                t.i = strtoll(num, NULL, 10);
                if (errno) return fail(l, CV_EUNSUPPORTED, "unsupported construct: an integer literal beyond 64 bits");
            }
            t.len = k;
            l->pos += k;
        } else if (s[0] == '\'' || s[0] == '"') {
            size_t k = 1;
            while (k < left && s[k] != s[0]) k += s[k] == '\\' ? 2 : 1;
            if (k >= left) return fail(l, CV_EFORMAT, "a string literal never closed");
            t.k = TK_STRING;
            cv_status st = unescape(l, s + 1, k - 1, &t);
            if (st != CV_OK) return st;
            l->line += count_lines(s, k);
            l->pos += k + 1;
        } else {
            t.k = TK_OP;
            for (size_t i = 0; i < sizeof ops2 / sizeof *ops2 && !t.len; i++)
                if (left >= 2 && memcmp(s, ops2[i], 2) == 0) t.len = 2;
            if (!t.len && strchr(ops1, s[0])) t.len = 1;
            if (!t.len) {
                char what[64];
                snprintf(what, sizeof what, "unexpected character '%c' in a tag", s[0]);
                return fail(l, CV_EFORMAT, what);
            }
            if (t.len == 1 && strchr("([{", s[0])) depth++;
            if (t.len == 1 && strchr(")]}", s[0]) && depth > 0) depth--;
            l->pos += t.len;
        }
        if (!emit(l, t)) return CV_ENOMEM;
    }
}

cv_status jlex(jarena *a, const char *src, size_t len, jtoken **toks, size_t *n, cv_error *err) {
    /* newlines normalised, one trailing newline dropped */
    char *s = ja_alloc(a, len + 1);
    if (!s) return cv_errorf(err, CV_ENOMEM, "chat template: out of memory (%zu bytes)", len);
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[w++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else s[w++] = src[i];
    }
    if (w && s[w - 1] == '\n') w--;
    lx l = {a, s, w, 0, 1, NULL, 0, 0, err};
    bool line_starting = true;
    while (l.pos < l.n) {
        size_t q = l.pos;
        while (q + 1 < l.n && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#'))) q++;
        if (q + 1 >= l.n) q = l.n;
        size_t tl = q - l.pos;
        char kind = q < l.n ? s[q + 1] : 0;
        char sign = q + 2 < l.n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        if (kind && sign == '-') {
            while (tl && is_space(s[l.pos + tl - 1])) tl--;
        } else if (kind && sign != '+' && kind != '{') {
            size_t lp = tl;
            while (lp && s[l.pos + lp - 1] != '\n') lp--;
            bool ws = lp < tl;
            for (size_t i = lp; i < tl && ws; i++) ws = is_space(s[l.pos + i]);
            if ((lp > 0 || line_starting) && ws) tl = lp;
        }
        if (tl && !emit(&l, (jtoken){TK_TEXT, l.line, s + l.pos, tl, 0, 0})) return CV_ENOMEM;
        l.line += count_lines(s + l.pos, q - l.pos);
        if (!kind) break;
        l.pos = q + 2 + (sign ? 1 : 0);
        cv_status st;
        if (kind == '#') {
            const char *e = memmem(s + l.pos, l.n - l.pos, "#}", 2);
            if (!e) return fail(&l, CV_EFORMAT, "a '{#' comment never closed");
            size_t end = (size_t)(e - s);
            bool strip = end > l.pos && s[end - 1] == '-';
            l.line += count_lines(s + l.pos, end - l.pos);
            l.pos = end + 2;
            size_t from = l.pos;
            if (strip)
                while (l.pos < l.n && is_space(s[l.pos])) l.pos++;
            else if (l.pos < l.n && s[l.pos] == '\n')
                l.pos++;
            l.line += count_lines(s + from, l.pos - from);
            line_starting = l.pos > from && s[l.pos - 1] == '\n';
            continue;
        }
        bool block = kind == '%';
        if (!emit(&l, (jtoken){block ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, l.line, NULL, 0, 0, 0}))
            return CV_ENOMEM;
        if ((st = lex_tag(&l, block, &line_starting)) != CV_OK) return st;
    }
    if (!emit(&l, (jtoken){TK_EOF, l.line, NULL, 0, 0, 0})) return CV_ENOMEM;
    *toks = l.v;
    *n = l.nt;
    return CV_OK;
}
