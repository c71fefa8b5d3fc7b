/* Values of the Jinja interpreter: see jinja_int.h. Python's semantics are the
 * reference (str(), repr(), ==, <, json.dumps), since that is what jinja2 runs. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_int.h"

/* ---- arena ---- */

struct jchunk {
    jchunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && a->used + n > a->limit) return NULL;
    jchunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

void ja_free(jarena *a) {
    for (jchunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- buffers ---- */

void jb_put(jbuf *b, const char *s, size_t n, bool data) {
    if (b->over || n == 0) return;
    if (b->len + n > b->max) {
        b->over = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->over = true;
            return;
        }
        b->p = p;
        uint8_t *t = realloc(b->t, cap);
        if (!t) {
            b->over = true;
            return;
        }
        b->t = t;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    memset(b->t + b->len, data, n);
    b->any_data |= data;
    b->len += n;
    b->p[b->len] = 0;
}

void jb_puts(jbuf *b, const char *s) { jb_put(b, s, strlen(s), false); }

void jb_str(jbuf *b, jstr s) {
    if (!s.t) {
        jb_put(b, s.p, s.len, false);
        return;
    }
    /* runs of equal marks */
    for (size_t i = 0; i < s.len;) {
        size_t j = i;
        while (j < s.len && !s.t[j] == !s.t[i]) j++;
        jb_put(b, s.p + i, j - i, s.t[i] != 0);
        i = j;
    }
}

void jb_free(jbuf *b) {
    free(b->p);
    free(b->t);
    memset(b, 0, sizeof *b);
}

bool jb_take(jbuf *b, jarena *a, jstr *out) {
    return js_new(a, b->p ? b->p : "", b->len, b->any_data ? b->t : NULL, out);
}

/* ---- strings ---- */

jstr js_lit(const char *s) { return (jstr){s, NULL, strlen(s)}; }

bool js_new(jarena *a, const char *p, size_t n, const uint8_t *t, jstr *out) {
    char *q = ja_alloc(a, n + 1);
    if (!q) return false;
    memcpy(q, p, n);
    uint8_t *tq = NULL;
    if (t) {
        for (size_t i = 0; i < n && !tq; i++)
            if (t[i]) tq = (uint8_t *)1;
        if (tq) {
            if (!(tq = ja_alloc(a, n))) return false;
            memcpy(tq, t, n);
        }
    }
    *out = (jstr){q, tq, n};
    return true;
}

bool js_sub(jarena *a, jstr s, size_t off, size_t n, jstr *out) {
    (void)a;
    *out = (jstr){s.p + off, s.t ? s.t + off : NULL, n};
    return true;
}

bool js_eq(jstr a, const char *lit) { return a.len == strlen(lit) && memcmp(a.p, lit, a.len) == 0; }

int js_cmp(jstr a, jstr b) {
    size_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.p, b.p, n);
    if (c) return c < 0 ? -1 : 1;
    return a.len < b.len ? -1 : a.len > b.len;
}

size_t ju_count(const char *p, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)p[i] & 0xC0) != 0x80;
    return n;
}

size_t ju_offset(const char *p, size_t len, size_t cp) {
    size_t i = 0;
    while (i < len && cp > 0) {
        i++;
        while (i < len && ((unsigned char)p[i] & 0xC0) == 0x80) i++;
        cp--;
    }
    return i;
}

/* ---- lists and dicts ---- */

jlist *jl_new(jarena *a, size_t cap) {
    jlist *l = ja_alloc(a, sizeof *l);
    if (!l) return NULL;
    l->cap = cap ? cap : 4;
    if (!(l->v = ja_alloc(a, l->cap * sizeof *l->v))) return NULL;
    return l;
}

bool jl_push(jarena *a, jlist *l, jv v) {
    if (l->n == l->cap) {
        jv *nv = ja_alloc(a, 2 * l->cap * sizeof *nv);
        if (!nv) return false;
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
    return true;
}

jdict *jd_new(jarena *a) {
    jdict *d = ja_alloc(a, sizeof *d);
    if (!d) return NULL;
    d->cap = 4;
    d->k = ja_alloc(a, d->cap * sizeof *d->k);
    d->v = ja_alloc(a, d->cap * sizeof *d->v);
    return d->k && d->v ? d : NULL;
}

jv *jd_get(const jdict *d, jv k) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) return &d->v[i];
    return NULL;
}

jv *jd_gets(const jdict *d, const char *k) {
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && js_eq(d->k[i].u.s, k)) return &d->v[i];
    return NULL;
}

bool jd_set(jarena *a, jdict *d, jv k, jv v) {
    jv *old = jd_get(d, k);
    if (old) {
        *old = v;
        return true;
    }
    if (d->n == d->cap) {
        jv *nk = ja_alloc(a, 2 * d->cap * sizeof *nk), *nv = ja_alloc(a, 2 * d->cap * sizeof *nv);
        if (!nk || !nv) return false;
        memcpy(nk, d->k, d->n * sizeof *nk);
        memcpy(nv, d->v, d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return true;
}

/* ---- truth, equality, order ---- */

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.len != 0;
    case JV_LIST: return v.u.l->gen || v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    case JV_FUNC: return true;
    }
    return false;
}

static bool is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double num(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b; }

bool jv_equal(jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return (a.t == JV_INT ? a.u.i : a.u.b) == (b.t == JV_INT ? b.u.i : b.u.b);
        return num(a) == num(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s.len == b.u.s.len && memcmp(a.u.s.p, b.u.s.p, a.u.s.len) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv *o = jd_get(b.u.d, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o)) return false;
        }
        return true;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

int jv_order(jv a, jv b, int *cmp) {
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
            *cmp = x < y ? -1 : x > y;
        } else {
            double x = num(a), y = num(b);
            *cmp = x < y ? -1 : x > y;
        }
        return 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        *cmp = js_cmp(a.u.s, b.u.s); /* UTF-8 byte order is code point order */
        return 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return jv_order(a.u.l->v[i], b.u.l->v[i], cmp);
        }
        *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return 0;
    }
    return -1;
}

const char *jv_type_name(jv v) {
    static const char *const names[] = {"Undefined", "NoneType", "bool", "int", "float",
                                        "str", "list", "dict", "function"};
    if (v.t == JV_LIST && v.u.l->tuple) return "tuple";
    if (v.t == JV_LIST && v.u.l->gen) return "generator";
    if (v.t == JV_DICT && v.u.d->ns) return "Namespace";
    return names[v.t];
}

/* ---- str / repr ---- */

void jv_fmt_float(double f, char *buf, size_t cap) {
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    /* the shortest digits that read back as f, then Python's layout of them */
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    char digits[20];
    size_t nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp = atoi(q + 1);
    char *o = buf;
    size_t left = cap;
#define OUT(...) do { int w_ = snprintf(o, left, __VA_ARGS__); if (w_ < 0 || (size_t)w_ >= left) return; o += w_; left -= (size_t)w_; } while (0)
    if (neg) OUT("-");
    if (exp < -4 || exp >= 16) {
        OUT("%c", digits[0]);
        if (nd > 1) OUT(".%.*s", (int)nd - 1, digits + 1);
        OUT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        OUT("0.");
        for (int i = -1; i > exp; i--) OUT("0");
        OUT("%.*s", (int)nd, digits);
    } else {
        for (int i = 0; i <= exp; i++) OUT("%c", (size_t)i < nd ? digits[i] : '0');
        OUT(".");
        if ((size_t)exp + 1 < nd) OUT("%.*s", (int)(nd - (size_t)exp - 1), digits + exp + 1);
        else OUT("0");
    }
#undef OUT
}

static void write_num(jbuf *b, jv v) {
    char tmp[64];
    if (v.t == JV_INT) snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
    else jv_fmt_float(v.u.f, tmp, sizeof tmp);
    jb_puts(b, tmp);
}

/* Python's repr of a str: quotes chosen as Python does, escapes for the quote,
 * backslash and control characters. */
static void write_str_repr(jbuf *b, jstr s) {
    bool sq = memchr(s.p, '\'', s.len) != NULL, dq = memchr(s.p, '"', s.len) != NULL;
    char quote = sq && !dq ? '"' : '\'';
    jb_put(b, &quote, 1, false);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        bool d = s.t && s.t[i];
        char esc[8];
        if (c == (unsigned char)quote || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            jb_put(b, esc, 2, d);
        } else if (c == '\n') jb_put(b, "\\n", 2, d);
        else if (c == '\r') jb_put(b, "\\r", 2, d);
        else if (c == '\t') jb_put(b, "\\t", 2, d);
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            jb_put(b, esc, 4, d);
        } else jb_put(b, (const char *)&s.p[i], 1, d);
    }
    jb_put(b, &quote, 1, false);
}

void jv_write_repr(jbuf *b, jv v) {
    switch (v.t) {
    case JV_STR: write_str_repr(b, v.u.s); return;
    case JV_LIST:
        jb_puts(b, v.u.l->tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(b, ", ");
            jv_write_repr(b, v.u.l->v[i]);
        }
        jb_puts(b, v.u.l->tuple ? (v.u.l->n == 1 ? ",)" : ")") : "]");
        return;
    case JV_DICT:
        if (v.u.d->ns) {
            jb_puts(b, "<Namespace ");
        }
        jb_puts(b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jb_puts(b, ", ");
            jv_write_repr(b, v.u.d->k[i]);
            jb_puts(b, ": ");
            jv_write_repr(b, v.u.d->v[i]);
        }
        jb_puts(b, v.u.d->ns ? "}>" : "}");
        return;
    default: jv_write_str(b, v);
    }
}

void jv_write_str(jbuf *b, jv v) {
    switch (v.t) {
    case JV_UNDEF: return;
    case JV_NONE: jb_puts(b, "None"); return;
    case JV_BOOL: jb_puts(b, v.u.b ? "True" : "False"); return;
    case JV_INT:
    case JV_FLOAT: write_num(b, v); return;
    case JV_STR: jb_str(b, v.u.s); return;
    case JV_FUNC: jb_puts(b, "<function "), jb_puts(b, v.u.fn->name ? v.u.fn->name : "?"), jb_puts(b, ">"); return;
    default: jv_write_repr(b, v);
    }
}

/* ---- JSON out ---- */

/* The code point of the UTF-8 sequence at p (its length in *k); a stray byte is
 * itself. */
static unsigned utf8_at(const unsigned char *p, size_t left, size_t *k) {
    unsigned c = p[0];
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (n > left) n = 1;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) n = 1;
    *k = n;
    if (n == 1) return c;
    unsigned cp = c & (0x3F >> (n - 1));
    for (size_t i = 1; i < n; i++) cp = cp << 6 | (p[i] & 0x3F);
    return cp;
}

static void json_string(jbuf *b, jstr s, bool ascii) {
    jb_puts(b, "\"");
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        bool d = s.t && s.t[i];
        char esc[16];
        if (ascii && c >= 0x80) { /* ensure_ascii: one \u escape, two (a surrogate pair) above U+FFFF */
            size_t k;
            unsigned cp = utf8_at((const unsigned char *)s.p + i, s.len - i, &k);
            int w = cp > 0xFFFF ? snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
                                           0xDC00 + ((cp - 0x10000) & 0x3FF))
                                : snprintf(esc, sizeof esc, "\\u%04x", cp);
            jb_put(b, esc, (size_t)w, d);
            i += k - 1;
            continue;
        }
        switch (c) {
        case '"': jb_put(b, "\\\"", 2, d); break;
        case '\\': jb_put(b, "\\\\", 2, d); break;
        case '\n': jb_put(b, "\\n", 2, d); break;
        case '\r': jb_put(b, "\\r", 2, d); break;
        case '\t': jb_put(b, "\\t", 2, d); break;
        case '\b': jb_put(b, "\\b", 2, d); break;
        case '\f': jb_put(b, "\\f", 2, d); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                jb_put(b, esc, 6, d);
            } else jb_put(b, (const char *)&s.p[i], 1, d);
        }
    }
    jb_puts(b, "\"");
}

static void json_newline(jbuf *b, int indent, int level) {
    jb_puts(b, "\n");
    for (int i = 0; i < indent * level; i++) jb_puts(b, " ");
}

typedef struct json_opts {
    bool ascii;
    int indent;
    const char *item_sep, *key_sep;
    bool sort_keys;
    const char **bad;
} json_opts;

static bool json_value(jbuf *b, jv v, const json_opts *o, int level) {
    if (level > 256) {
        *o->bad = "a value nested over 256 deep";
        return false;
    }
    switch (v.t) {
    case JV_NONE: jb_puts(b, "null"); return true;
    case JV_BOOL: jb_puts(b, v.u.b ? "true" : "false"); return true;
    case JV_INT: write_num(b, v); return true;
    case JV_FLOAT:
        if (isnan(v.u.f)) jb_puts(b, "NaN");
        else if (isinf(v.u.f)) jb_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else write_num(b, v);
        return true;
    case JV_STR: json_string(b, v.u.s, o->ascii); return true;
    case JV_LIST:
        if (v.u.l->gen) break;
        if (v.u.l->n == 0) {
            jb_puts(b, "[]");
            return true;
        }
        jb_puts(b, "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(b, o->item_sep);
            if (o->indent >= 0) json_newline(b, o->indent, level + 1);
            if (!json_value(b, v.u.l->v[i], o, level + 1)) return false;
        }
        if (o->indent >= 0) json_newline(b, o->indent, level);
        jb_puts(b, "]");
        return true;
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (d->ns) break;
        if (d->n == 0) {
            jb_puts(b, "{}");
            return true;
        }
        size_t order[d->n > 0 ? d->n : 1];
        for (size_t i = 0; i < d->n; i++) order[i] = i;
        for (size_t i = 0; i < d->n; i++) {
            jv k = d->k[i];
            if (k.t != JV_STR && k.t != JV_INT && k.t != JV_FLOAT && k.t != JV_BOOL && k.t != JV_NONE) {
                *o->bad = "a dict key that is not a str, int, float, bool or None";
                return false;
            }
        }
        if (o->sort_keys) /* insertion sort: dicts here are small */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0; j--) {
                    int c;
                    if (jv_order(d->k[order[j - 1]], d->k[order[j]], &c) != 0) {
                        *o->bad = "dict keys of types that do not sort";
                        return false;
                    }
                    if (c <= 0) break;
                    size_t t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        jb_puts(b, "{");
        for (size_t i = 0; i < d->n; i++) {
            jv k = d->k[order[i]];
            if (i) jb_puts(b, o->item_sep);
            if (o->indent >= 0) json_newline(b, o->indent, level + 1);
            if (k.t == JV_STR) json_string(b, k.u.s, o->ascii);
            else {
                /* json.dumps writes non-string keys as their JSON text, quoted */
                jbuf kb = {.max = 64};
                json_value(&kb, k, o, level + 1);
                json_string(b, (jstr){kb.p ? kb.p : "", NULL, kb.len}, o->ascii);
                jb_free(&kb);
            }
            jb_puts(b, o->key_sep);
            if (!json_value(b, d->v[order[i]], o, level + 1)) return false;
        }
        if (o->indent >= 0) json_newline(b, o->indent, level);
        jb_puts(b, "}");
        return true;
    }
    default: break;
    }
    *o->bad = jv_type_name(v);
    return false;
}

bool jv_write_json(jbuf *b, jv v, bool ascii, int indent, const char *item_sep, const char *key_sep,
                   bool sort_keys, const char **bad) {
    json_opts o = {ascii, indent, item_sep ? item_sep : indent >= 0 ? "," : ", ", key_sep ? key_sep : ": ",
                   sort_keys, bad};
    return json_value(b, v, &o, 0);
}

/* ---- JSON in ---- */

typedef struct jin {
    jarena *a;
    const char *p;
    bool data;
    const char *why;
    int depth;
} jin;

static void skip_ws(jin *j) {
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r') j->p++;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

size_t ju_put(char *o, unsigned cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
               o[2] = (char)(0x80 | (cp & 0x3F)), 3;
    return o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
           o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F)), 4;
}

static bool json_str_in(jin *j, jstr *out) {
    const char *s = ++j->p; /* after the quote */
    size_t n = 0;
    while (s[n] && s[n] != '"') n += s[n] == '\\' && s[n + 1] ? 2 : 1;
    if (s[n] != '"') return j->why = "an unterminated string", false;
    char *o = ja_alloc(j->a, n + 1);
    if (!o) return j->why = "out of memory", false;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) return j->why = "a control character in a string", false;
        if (c != '\\') {
            o[w++] = (char)c;
            continue;
        }
        char e = s[++i];
        switch (e) {
        case '"': case '\\': case '/': o[w++] = e; break;
        case 'n': o[w++] = '\n'; break;
        case 't': o[w++] = '\t'; break;
        case 'r': o[w++] = '\r'; break;
        case 'b': o[w++] = '\b'; break;
        case 'f': o[w++] = '\f'; break;
        case 'u': {
            int cp = i + 4 < n + 1 ? hex4(s + i + 1) : -1;
            if (cp < 0) return j->why = "a bad \\u escape", false;
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[i + 1] == '\\' && s[i + 2] == 'u') {
                int lo = hex4(s + i + 3);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) return j->why = "a lone surrogate", false;
            w += ju_put(o + w, (unsigned)cp); /* never longer than the escape */
            break;
        }
        default: return j->why = "a bad escape", false;
        }
    }
    j->p = s + n + 1;
    uint8_t *t = NULL;
    if (j->data && w) {
        if (!(t = ja_alloc(j->a, w))) return j->why = "out of memory", false;
        memset(t, 1, w);
    }
    *out = (jstr){o, t, w};
    return true;
}

static bool json_in(jin *j, jv *out) {
    if (++j->depth > 200) return j->why = "nesting over 200 deep", false;
    skip_ws(j);
    bool ok = true;
    char c = *j->p;
    if (c == '{' || c == '[') {
        j->p++;
        jdict *d = c == '{' ? jd_new(j->a) : NULL;
        jlist *l = c == '[' ? jl_new(j->a, 4) : NULL;
        if (!d && !l) return j->why = "out of memory", false;
        skip_ws(j);
        char close = c == '{' ? '}' : ']';
        if (*j->p == close) j->p++;
        else
            for (;;) {
                jv k = jv_none(), v;
                if (d) {
                    skip_ws(j);
                    if (*j->p != '"') return j->why = "an object key that is not a string", false;
                    if (!json_str_in(j, &k.u.s)) return false;
                    k.t = JV_STR;
                    skip_ws(j);
                    if (*j->p++ != ':') return j->why = "a missing ':'", false;
                }
                if (!json_in(j, &v)) return false;
                if (d ? !jd_set(j->a, d, k, v) : !jl_push(j->a, l, v))
                    return j->why = "out of memory", false;
                skip_ws(j);
                if (*j->p == ',') {
                    j->p++;
                    continue;
                }
                if (*j->p++ != close) return j->why = "a missing ',' or closing bracket", false;
                break;
            }
        *out = d ? (jv){.t = JV_DICT, .u.d = d} : (jv){.t = JV_LIST, .u.l = l};
    } else if (c == '"') {
        *out = jv_none();
        out->t = JV_STR;
        ok = json_str_in(j, &out->u.s);
    } else if (strncmp(j->p, "true", 4) == 0) *out = jv_bool(true), j->p += 4;
    else if (strncmp(j->p, "false", 5) == 0) *out = jv_bool(false), j->p += 5;
    else if (strncmp(j->p, "null", 4) == 0) *out = jv_none(), j->p += 4;
    else if (c == '-' || (c >= '0' && c <= '9')) {
        const char *s = j->p;
        bool flt = false;
        if (*s == '-') s++;
        if (*s < '0' || *s > '9') return j->why = "a bad number", false;
        while (*s >= '0' && *s <= '9') s++;
        if (*s == '.' || *s == 'e' || *s == 'E') flt = true;
        char *end;
        if (flt) *out = jv_float(strtod(j->p, &end));
        else {
            long long v = strtoll(j->p, &end, 10);
            if ((v == LLONG_MAX || v == LLONG_MIN) && end - j->p > 18) *out = jv_float(strtod(j->p, &end));
            else *out = jv_int(v);
        }
        j->p = end;
    } else return j->why = "an unexpected character", false;
    j->depth--;
    return ok;
}

bool jv_from_json(jarena *a, const char *json, bool data, jv *out, const char **why) {
    jin j = {a, json, data, NULL, 0};
    if (!json_in(&j, out)) {
        *why = j.why;
        return false;
    }
    skip_ws(&j);
    if (*j.p) {
        *why = "text after the value";
        return false;
    }
    return true;
}

bool cv_jinja_json_valid(const char *json, const char **why) {
    jarena a = {.limit = 64u << 20};
    jv v;
    bool ok = jv_from_json(&a, json, false, &v, why);
    ja_free(&a);
    return ok;
}
