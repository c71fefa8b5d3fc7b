/* Filters, tests, methods and globals: jinja2 3.1's filters and tests, Python's str,
 * dict and list methods (what the sandbox lets a template call: nothing that mutates),
 * and Hugging Face's globals raise_exception and strftime_now. Strings keep their
 * data marks: a result's bytes are marked when the bytes they came from were. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "jinja_int.h"

#define FAIL(...) jfail(r, n->line, CV_EINVAL, __VA_ARGS__)
#define MEM(p) jmem(r, n->line, (p))

static const char *const FILTERS[] = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
    "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
    "string", "sum", "title", "tojson", "trim", "unique", "upper", NULL};
static const char *const TESTS[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge",
    "gt", "in", "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none", "number", "odd",
    "sameas", "sequence", "string", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=", NULL};
static const char *const GLOBALS[] = {"range", "namespace", "raise_exception", "strftime_now", "dict", NULL};
static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
    "capitalize", "replace", "find", "rfind", "count", "join", "splitlines", "isdigit", "isalpha",
    "isalnum", "isspace", "islower", "isupper", "format", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", NULL};
static const char *const LIST_METHODS[] = {"index", "count", NULL};

static bool in_table(const char *const *t, const char *name) {
    for (; *t; t++)
        if (strcmp(*t, name) == 0) return true;
    return false;
}

bool jhas_filter(const char *name) { return in_table(FILTERS, name); }
bool jhas_test(const char *name) { return in_table(TESTS, name); }
bool jis_global(const char *name) { return in_table(GLOBALS, name); }

bool jhas_method(jv self, const char *name) {
    if (self.t == JV_STR) return in_table(STR_METHODS, name);
    if (self.t == JV_DICT) return !self.u.d->ns && in_table(DICT_METHODS, name);
    if (self.t == JV_LIST) return in_table(LIST_METHODS, name);
    return false;
}

/* ---- helpers ---- */

static bool take(jrender *r, const jnode *n, jbuf *b, jv *out) {
    jstr s;
    bool ok = !b->over && jb_take(b, &r->a, &s);
    bool over = b->over;
    jb_free(b);
    if (!ok) return over ? jfail(r, n->line, CV_ERANGE, "a string over %zu bytes", r->lim->max_output) : MEM(NULL);
    *out = jv_str(s);
    return true;
}

static jbuf newbuf(jrender *r) { return (jbuf){.max = r->lim->max_output}; }

/* str(v) as a string value (a str is itself). */
static bool to_str(jrender *r, const jnode *n, jv v, jstr *out) {
    if (v.t == JV_LIST && v.u.l->gen) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: a generator as text");
    if (v.t == JV_STR) {
        *out = v.u.s;
        return true;
    }
    jbuf b = newbuf(r);
    jv_write_str(&b, v);
    jv s;
    if (!take(r, n, &b, &s)) return false;
    *out = s.u.s;
    return true;
}

static bool need_str(jrender *r, const jnode *n, jv v, const char *what, jstr *out) {
    if (v.t != JV_STR) return FAIL("%s: expected a string, got %s", what, jv_type_name(v));
    *out = v.u.s;
    return true;
}

static jv mklist(jrender *r, size_t cap) {
    jlist *l = jl_new(&r->a, cap);
    return l ? (jv){.t = JV_LIST, .u.l = l} : jv_undef();
}

static bool push(jrender *r, const jnode *n, jv l, jv v) { return MEM(jl_push(&r->a, l.u.l, v) ? l.u.l : NULL); }

static jv tuple2(jrender *r, jv a, jv b) {
    jv t = mklist(r, 2);
    if (t.t != JV_LIST) return t;
    t.u.l->tuple = true;
    jl_push(&r->a, t.u.l, a);
    jl_push(&r->a, t.u.l, b);
    return t;
}

static size_t py_len(jv v) {
    switch (v.t) {
    case JV_STR: return ju_count(v.u.s.p, v.u.s.len);
    case JV_LIST: return v.u.l->n;
    case JV_DICT: return v.u.d->n;
    default: return 0;
    }
}

/* The items of an iterable as a list (dict: keys; str: characters). */
static bool as_list(jrender *r, const jnode *n, jv v, jlist **out) {
    if (v.t == JV_LIST && v.u.l->gen) return MEM(*out = jgen_take(r, v.u.l));
    if (v.t == JV_LIST) {
        *out = v.u.l;
        return true;
    }
    jv l = mklist(r, py_len(v) + 1);
    if (!MEM(l.u.l)) return false;
    if (v.t == JV_DICT) {
        for (size_t i = 0; i < v.u.d->n; i++) jl_push(&r->a, l.u.l, v.u.d->k[i]);
    } else if (v.t == JV_STR) {
        size_t k = ju_count(v.u.s.p, v.u.s.len);
        for (size_t i = 0; i < k; i++) jl_push(&r->a, l.u.l, jgetitem(r, v, jv_int((int64_t)i)));
    } else if (v.t != JV_UNDEF) {
        return FAIL("'%s' object is not iterable", jv_type_name(v));
    }
    *out = l.u.l;
    return jstep(r, n->line, l.u.l->n);
}

/* One code point at p (len left); its length in *k. Invalid bytes read as themselves. */
static int32_t cp_at(const char *p, size_t len, size_t *k) {
    int32_t cp;
    utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)p, (utf8proc_ssize_t)len, &cp);
    if (m <= 0) {
        *k = 1;
        return (unsigned char)*p;
    }
    *k = (size_t)m;
    return cp;
}

/* Python's str.isspace() for one code point. */
static bool py_space(int32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Previous code point's start before offset i. */
static size_t cp_back(const char *p, size_t i) {
    do i--;
    while (i > 0 && ((unsigned char)p[i] & 0xC0) == 0x80);
    return i;
}

static bool in_chars(jstr chars, int32_t c) {
    for (size_t i = 0; i < chars.len;) {
        size_t k;
        if (cp_at(chars.p + i, chars.len - i, &k) == c) return true;
        i += k;
    }
    return false;
}

/* str.strip/lstrip/rstrip: chars NULL for whitespace. */
static jstr strip(jstr s, const jstr *chars, bool left, bool right) {
    size_t a = 0, b = s.len;
    while (left && a < b) {
        size_t k;
        int32_t c = cp_at(s.p + a, b - a, &k);
        if (chars ? !in_chars(*chars, c) : !py_space(c)) break;
        a += k;
    }
    while (right && b > a) {
        size_t j = cp_back(s.p, b), k;
        int32_t c = cp_at(s.p + j, b - j, &k);
        if (chars ? !in_chars(*chars, c) : !py_space(c)) break;
        b = j;
    }
    return (jstr){s.p + a, s.t ? s.t + a : NULL, b - a};
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE_PY, CASE_TITLE_JINJA, CASE_CAPITALIZE } casing;

static bool cased(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static bool jinja_word_break(int32_t c) {
    return py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
}

static bool recase(jrender *r, const jnode *n, jstr s, casing how, jv *out) {
    jbuf b = newbuf(r);
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s.len;) {
        size_t k;
        int32_t c = cp_at(s.p + i, s.len - i, &k), m;
        switch (how) {
        case CASE_UPPER: m = utf8proc_toupper(c); break;
        case CASE_LOWER: m = utf8proc_tolower(c); break;
        case CASE_CAPITALIZE: m = first ? utf8proc_totitle(c) : utf8proc_tolower(c); break;
        case CASE_TITLE_PY: m = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c); break;
        default: m = prev_cased ? utf8proc_tolower(c) : utf8proc_toupper(c); break;
        }
        prev_cased = how == CASE_TITLE_JINJA ? !jinja_word_break(c) : cased(c);
        first = false;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t w = c == m ? 0 : utf8proc_encode_char(m, enc);
        if (w > 0) jb_put(&b, (const char *)enc, (size_t)w, s.t && s.t[i]);
        else jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, k});
        i += k;
    }
    return take(r, n, &b, out);
}

/* Python's str.replace(old, new, count). */
static bool replace(jrender *r, const jnode *n, jstr s, jstr old, jstr new_, int64_t count, jv *out) {
    jbuf b = newbuf(r);
    size_t i = 0;
    if (old.len == 0) { /* inserts before every character and at the end */
        for (; i <= s.len && count != 0; count--) {
            jb_str(&b, new_);
            if (i == s.len) {
                i++;
                break;
            }
            size_t k;
            cp_at(s.p + i, s.len - i, &k);
            jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, k});
            i += k;
        }
        if (i < s.len) jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, s.len - i});
        return take(r, n, &b, out);
    }
    while (count != 0) {
        const char *hit = memmem(s.p + i, s.len - i, old.p, old.len);
        if (!hit) break;
        size_t h = (size_t)(hit - s.p);
        jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, h - i});
        jb_str(&b, new_);
        i = h + old.len;
        count--;
        if (!jstep(r, n->line, 1)) return jb_free(&b), false;
    }
    jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, s.len - i});
    return take(r, n, &b, out);
}

/* Python's str.split(sep, maxsplit) (sep NULL: runs of whitespace); from the right
 * for rsplit. */
static bool split(jrender *r, const jnode *n, jstr s, const jstr *sep, int64_t maxsplit, bool from_right,
                  jv *out) {
    jv l = mklist(r, 4);
    if (!MEM(l.u.l)) return false;
    if (sep && sep->len == 0) return FAIL("split: empty separator");
    if (!sep) {
        /* collect words left to right, then merge for maxsplit from the right */
        size_t i = 0;
        jv words = mklist(r, 4);
        if (!MEM(words.u.l)) return false;
        while (i < s.len) {
            size_t k;
            while (i < s.len && py_space(cp_at(s.p + i, s.len - i, &k))) i += k;
            if (i >= s.len) break;
            size_t a = i;
            while (i < s.len && !py_space(cp_at(s.p + i, s.len - i, &k))) i += k;
            if (!push(r, n, words, jv_str((jstr){s.p + a, s.t ? s.t + a : NULL, i - a})) || !jstep(r, n->line, 1))
                return false;
        }
        size_t nw = words.u.l->n;
        if (maxsplit < 0 || (uint64_t)maxsplit + 1 >= nw) {
            *out = words;
            return true;
        }
        /* the unsplit rest keeps its inner whitespace: slice the original */
        jv *w = words.u.l->v;
        if (!from_right) {
            for (int64_t k = 0; k < maxsplit; k++) push(r, n, l, w[k]);
            jstr rest = w[maxsplit].u.s;
            size_t a = (size_t)(rest.p - s.p);
            jstr tail = strip((jstr){s.p + a, s.t ? s.t + a : NULL, s.len - a}, NULL, false, true);
            push(r, n, l, jv_str(tail));
        } else {
            jstr lastkept = w[nw - (size_t)maxsplit - 1].u.s;
            size_t b = (size_t)(lastkept.p - s.p) + lastkept.len;
            push(r, n, l, jv_str(strip((jstr){s.p, s.t, b}, NULL, true, false)));
            for (size_t k = nw - (size_t)maxsplit; k < nw; k++) push(r, n, l, w[k]);
        }
        *out = l;
        return true;
    }
    if (!from_right) {
        size_t i = 0;
        for (;;) {
            const char *hit = maxsplit != 0 ? memmem(s.p + i, s.len - i, sep->p, sep->len) : NULL;
            size_t h = hit ? (size_t)(hit - s.p) : s.len;
            if (!push(r, n, l, jv_str((jstr){s.p + i, s.t ? s.t + i : NULL, h - i})) || !jstep(r, n->line, 1))
                return false;
            if (!hit) break;
            i = h + sep->len;
            if (maxsplit > 0) maxsplit--;
        }
    } else {
        size_t end = s.len;
        jv rev = mklist(r, 4);
        if (!MEM(rev.u.l)) return false;
        for (;;) {
            const char *hit = NULL;
            if (maxsplit != 0)
                for (size_t j = end; j >= sep->len && !hit; j--)
                    if (memcmp(s.p + j - sep->len, sep->p, sep->len) == 0) hit = s.p + j - sep->len;
            size_t h = hit ? (size_t)(hit - s.p) + sep->len : 0;
            if (!push(r, n, rev, jv_str((jstr){s.p + h, s.t ? s.t + h : NULL, end - h})) || !jstep(r, n->line, 1))
                return false;
            if (!hit) break;
            end = h - sep->len;
            if (maxsplit > 0) maxsplit--;
        }
        for (size_t k = rev.u.l->n; k-- > 0;) push(r, n, l, rev.u.l->v[k]);
    }
    *out = l;
    return true;
}

/* "a.b.c" attribute paths of selectattr/map/sort. */
static jv get_path(jrender *r, jv v, jstr path) {
    size_t i = 0;
    while (i <= path.len && v.t != JV_UNDEF) {
        const char *dot = memchr(path.p + i, '.', path.len - i);
        size_t e = dot ? (size_t)(dot - path.p) : path.len;
        jstr part = {path.p + i, NULL, e - i};
        bool digits = part.len > 0;
        for (size_t k = 0; k < part.len; k++) digits &= part.p[k] >= '0' && part.p[k] <= '9';
        jv key = digits ? jv_int(strtoll(part.p, NULL, 10)) : jv_str(part);
        if (digits && v.t == JV_DICT) key = jv_str(part);
        v = jgetitem(r, v, key);
        i = e + 1;
    }
    return v;
}

/* Arguments from position `from` on, as a test's or filter's own arguments. */
static jargs rest_args(const jargs *a, size_t from) {
    size_t k = 0, i = 0;
    for (; i < a->n && k < from; i++) k += a->kw[i] == NULL;
    if (k < from || i == a->n) return (jargs){NULL, NULL, 0};
    return (jargs){a->v + i, a->kw + i, a->n - i};
}

/* select/reject/selectattr/rejectattr. */
/* A list result marked as the generator jinja2 returns. */
static bool gen_out(jv l, jv *out) {
    l.u.l->gen = true;
    *out = l;
    return true;
}

static bool select_items(jrender *r, const jnode *n, jv seq, const jargs *a, bool attr, bool keep, jv *out) {
    jlist *items;
    if (!jv_truthy(seq)) seq = jv_undef(); /* jinja2: `if value:` before iterating */
    if (!as_list(r, n, seq, &items)) return false;
    jv path = jv_undef();
    size_t at = 0;
    if (attr) {
        path = jarg(a, at++, NULL, jv_undef());
        if (path.t != JV_STR) return FAIL("%s: the attribute name must be a string", n->name);
    }
    jv test = jarg(a, at, NULL, jv_undef());
    if (test.t != JV_UNDEF && test.t != JV_STR) return FAIL("%s: the test name must be a string", n->name);
    char tname[32] = "";
    if (test.t == JV_STR) {
        if (test.u.s.len >= sizeof tname) return FAIL("%s: no test '%.*s'", n->name, (int)test.u.s.len, test.u.s.p);
        memcpy(tname, test.u.s.p, test.u.s.len);
        tname[test.u.s.len] = 0;
        if (!jhas_test(tname))
            return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the test '%s'", tname);
    }
    jargs targs = rest_args(a, at + 1);
    jv l = mklist(r, items->n + 1);
    if (!MEM(l.u.l)) return false;
    for (size_t i = 0; i < items->n; i++) {
        jv v = attr ? get_path(r, items->v[i], path.u.s) : items->v[i];
        bool ok;
        if (tname[0]) {
            if (!jtest(r, n, tname, v, &targs, &ok)) return false;
        } else ok = jv_truthy(v);
        if (ok == keep && !push(r, n, l, items->v[i])) return false;
    }
    return jstep(r, n->line, items->n) && gen_out(l, out);
}

static bool map_items(jrender *r, const jnode *n, jv seq, const jargs *a, jv *out) {
    jlist *items;
    if (!jv_truthy(seq)) seq = jv_undef();
    if (!as_list(r, n, seq, &items)) return false;
    jv attribute = jarg(a, 99, "attribute", jv_undef()), dflt = jarg(a, 99, "default", jv_undef());
    jv l = mklist(r, items->n + 1);
    if (!MEM(l.u.l)) return false;
    if (attribute.t == JV_STR) {
        for (size_t i = 0; i < items->n; i++) {
            jv v = get_path(r, items->v[i], attribute.u.s);
            if (v.t == JV_UNDEF) v = dflt;
            if (!push(r, n, l, v)) return false;
        }
    } else {
        jv f = jarg(a, 0, NULL, jv_undef());
        if (f.t != JV_STR || f.u.s.len >= 32) return FAIL("map: name a filter or give attribute=");
        char fname[32];
        memcpy(fname, f.u.s.p, f.u.s.len);
        fname[f.u.s.len] = 0;
        if (!jhas_filter(fname)) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the filter '%s'", fname);
        jargs fargs = rest_args(a, 1);
        for (size_t i = 0; i < items->n; i++) {
            jv v;
            jnode fake = *n;
            fake.name = fname;
            if (!jfilter(r, &fake, fname, items->v[i], &fargs, &v) || !push(r, n, l, v)) return false;
        }
    }
    return jstep(r, n->line, items->n) && gen_out(l, out);
}

/* Sort keys: strings lowered unless case_sensitive (jinja2's ignore_case). */
typedef struct sort_ctx {
    jrender *r;
    const jnode *n;
    bool ci, failed;
} sort_ctx;

static jv sort_key(sort_ctx *c, jv v) {
    if (!c->ci || v.t != JV_STR) return v;
    jv out;
    if (!recase(c->r, c->n, v.u.s, CASE_LOWER, &out)) c->failed = true;
    return c->failed ? v : out;
}

static bool sort_pairs(sort_ctx *c, jv *keys, jv *vals, size_t n, bool reverse) {
    for (size_t i = 0; i < n; i++) keys[i] = sort_key(c, keys[i]);
    /* stable insertion sort: template lists are short */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0; j--) {
            int cmp;
            if (jv_order(keys[j - 1], keys[j], &cmp) != 0)
                return jfail(c->r, c->n->line, CV_EINVAL, "cannot sort '%s' against '%s'", jv_type_name(keys[j - 1]),
                             jv_type_name(keys[j]));
            if (reverse ? cmp >= 0 : cmp <= 0) break;
            jv t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            t = vals[j];
            vals[j] = vals[j - 1];
            vals[j - 1] = t;
        }
    return !c->failed;
}

static bool do_sort(jrender *r, const jnode *n, jv seq, const jargs *a, bool dictsort, jv *out) {
    bool reverse = jv_truthy(jarg(a, dictsort ? 2 : 0, "reverse", jv_bool(false)));
    bool cs = jv_truthy(jarg(a, dictsort ? 0 : 1, "case_sensitive", jv_bool(false)));
    sort_ctx c = {r, n, !cs, false};
    jlist *items;
    if (dictsort) {
        if (seq.t != JV_DICT) return FAIL("dictsort: expected a dict, got %s", jv_type_name(seq));
        jv by = jarg(a, 1, "by", jv_str(js_lit("key")));
        bool by_value = by.t == JV_STR && js_eq(by.u.s, "value");
        if (by.t != JV_STR || (!by_value && !js_eq(by.u.s, "key"))) return FAIL("dictsort: by must be 'key' or 'value'");
        size_t k = seq.u.d->n;
        jv *keys = ja_alloc(&r->a, (k + 1) * sizeof *keys), *vals = ja_alloc(&r->a, (k + 1) * sizeof *vals);
        if (!MEM(keys) || !MEM(vals)) return false;
        for (size_t i = 0; i < k; i++) {
            keys[i] = by_value ? seq.u.d->v[i] : seq.u.d->k[i];
            vals[i] = tuple2(r, seq.u.d->k[i], seq.u.d->v[i]);
            if (!MEM(vals[i].t == JV_LIST ? vals : NULL)) return false;
        }
        if (!jstep(r, n->line, k * k / 8 + k) || !sort_pairs(&c, keys, vals, k, reverse)) return false;
        jv l = mklist(r, k + 1);
        if (!MEM(l.u.l)) return false;
        for (size_t i = 0; i < k; i++) jl_push(&r->a, l.u.l, vals[i]);
        *out = l;
        return true;
    }
    if (!as_list(r, n, seq, &items)) return false;
    jv attribute = jarg(a, 2, "attribute", jv_undef());
    size_t k = items->n;
    jv *keys = ja_alloc(&r->a, (k + 1) * sizeof *keys), *vals = ja_alloc(&r->a, (k + 1) * sizeof *vals);
    if (!MEM(keys) || !MEM(vals)) return false;
    for (size_t i = 0; i < k; i++) {
        vals[i] = items->v[i];
        keys[i] = attribute.t == JV_STR ? get_path(r, vals[i], attribute.u.s) : vals[i];
    }
    if (!jstep(r, n->line, k * k / 8 + k) || !sort_pairs(&c, keys, vals, k, reverse)) return false;
    jv l = mklist(r, k + 1);
    if (!MEM(l.u.l)) return false;
    for (size_t i = 0; i < k; i++) jl_push(&r->a, l.u.l, vals[i]);
    *out = l;
    return true;
}

static bool tojson(jrender *r, const jnode *n, jv v, const jargs *a, jv *out) {
    jv ind = jarg(a, 1, "indent", jv_none()), seps = jarg(a, 2, "separators", jv_none());
    jv ensure_ascii = jarg(a, 0, "ensure_ascii", jv_bool(false));
    bool sort = jv_truthy(jarg(a, 3, "sort_keys", jv_bool(false)));
    int indent = -1;
    if (ind.t == JV_INT) indent = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : (int)ind.u.i;
    else if (ind.t != JV_NONE) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: a tojson indent that is not an int");
    char sep[2][16] = {"", ""};
    const char *item_sep = NULL, *key_sep = NULL;
    if (seps.t == JV_LIST && seps.u.l->n == 2) {
        for (int k = 0; k < 2; k++) {
            jv s = seps.u.l->v[k];
            if (s.t != JV_STR || s.u.s.len >= sizeof sep[k]) return FAIL("tojson: separators must be two short strings");
            memcpy(sep[k], s.u.s.p, s.u.s.len);
        }
        item_sep = sep[0];
        key_sep = sep[1];
    } else if (seps.t != JV_NONE) return FAIL("tojson: separators must be two short strings");
    jbuf b = newbuf(r);
    const char *bad = "";
    if (!jv_write_json(&b, v, jv_truthy(ensure_ascii), indent, item_sep, key_sep, sort, &bad)) {
        jb_free(&b);
        return FAIL("tojson: Object of type %s is not JSON serializable", bad);
    }
    return take(r, n, &b, out);
}

static bool indent(jrender *r, const jnode *n, jstr s, const jargs *a, jv *out) {
    jv w = jarg(a, 0, "width", jv_int(4));
    bool first = jv_truthy(jarg(a, 1, "first", jv_bool(false))), blank = jv_truthy(jarg(a, 2, "blank", jv_bool(false)));
    jstr pad;
    char spaces[65];
    if (w.t == JV_STR) pad = w.u.s;
    else if (w.t == JV_INT && w.u.i >= 0 && w.u.i <= 64) {
        memset(spaces, ' ', (size_t)w.u.i);
        pad = (jstr){spaces, NULL, (size_t)w.u.i};
    } else return FAIL("indent: width must be a string or an int from 0 to 64");
    jbuf b = newbuf(r);
    if (first) jb_str(&b, pad);
    /* s + "\n" split into lines: every line after the first is padded (blank lines
     * only with blank=true) */
    size_t i = 0;
    bool line0 = true;
    while (i < s.len) {
        const char *nl = memchr(s.p + i, '\n', s.len - i);
        size_t e = nl ? (size_t)(nl - s.p) : s.len;
        if (!line0) {
            jb_puts(&b, "\n");
            if (blank || e > i) jb_str(&b, pad);
        }
        jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, e - i});
        line0 = false;
        i = e + 1;
        if (!nl) break;
    }
    return take(r, n, &b, out);
}

bool jescape(jrender *r, int line, jstr s, jstr *out) {
    jbuf b = newbuf(r);
    for (size_t i = 0; i < s.len; i++) {
        const char *e = s.p[i] == '&' ? "&amp;" : s.p[i] == '<' ? "&lt;" : s.p[i] == '>' ? "&gt;"
                      : s.p[i] == '"' ? "&#34;" : s.p[i] == '\'' ? "&#39;" : NULL;
        if (e) jb_put(&b, e, strlen(e), s.t && s.t[i]);
        else jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, 1});
    }
    bool ok = !b.over && jb_take(&b, &r->a, out), over = b.over;
    jb_free(&b);
    if (!ok) return over ? jfail(r, line, CV_ERANGE, "a string over %zu bytes", r->lim->max_output) : jmem(r, line, NULL);
    return true;
}

jlist *jgen_take(jrender *r, jlist *g) {
    jlist *l = jl_new(&r->a, g->n - g->pos + 1);
    if (!l) return NULL;
    for (size_t i = g->pos; i < g->n; i++) jl_push(&r->a, l, g->v[i]);
    g->pos = g->n;
    return l;
}

static bool join(jrender *r, const jnode *n, jv seq, const jargs *a, jv *out) {
    jlist *items;
    jv d = jarg(a, 0, "d", jv_str(js_lit(""))), attribute = jarg(a, 1, "attribute", jv_undef());
    jstr sep;
    if (!as_list(r, n, seq, &items) || !to_str(r, n, d, &sep)) return false;
    jbuf b = newbuf(r);
    for (size_t i = 0; i < items->n; i++) {
        if (i) jb_str(&b, sep);
        jv v = attribute.t == JV_STR ? get_path(r, items->v[i], attribute.u.s) : items->v[i];
        jv_write_str(&b, v);
    }
    return take(r, n, &b, out);
}

static bool minmax(jrender *r, const jnode *n, jv seq, const jargs *a, bool max, jv *out) {
    jlist *items;
    if (!as_list(r, n, seq, &items)) return false;
    bool cs = jv_truthy(jarg(a, 0, "case_sensitive", jv_bool(false)));
    jv attribute = jarg(a, 1, "attribute", jv_undef());
    sort_ctx c = {r, n, !cs, false};
    *out = jv_undef();
    jv best_key = jv_undef();
    for (size_t i = 0; i < items->n; i++) {
        jv key = sort_key(&c, attribute.t == JV_STR ? get_path(r, items->v[i], attribute.u.s) : items->v[i]);
        int cmp = 0;
        if (i && jv_order(key, best_key, &cmp) != 0) return FAIL("cannot compare '%s' and '%s'", jv_type_name(key), jv_type_name(best_key));
        if (i == 0 || (max ? cmp > 0 : cmp < 0)) {
            best_key = key;
            *out = items->v[i];
        }
    }
    return !c.failed;
}

static bool unique(jrender *r, const jnode *n, jv seq, const jargs *a, jv *out) {
    jlist *items;
    if (!as_list(r, n, seq, &items)) return false;
    bool cs = jv_truthy(jarg(a, 0, "case_sensitive", jv_bool(false)));
    jv attribute = jarg(a, 1, "attribute", jv_undef());
    sort_ctx c = {r, n, !cs, false};
    jv l = mklist(r, items->n + 1), seen = mklist(r, items->n + 1);
    if (!MEM(l.u.l) || !MEM(seen.u.l)) return false;
    for (size_t i = 0; i < items->n; i++) {
        jv key = sort_key(&c, attribute.t == JV_STR ? get_path(r, items->v[i], attribute.u.s) : items->v[i]);
        bool dup = false;
        for (size_t k = 0; k < seen.u.l->n && !dup; k++) dup = jv_equal(seen.u.l->v[k], key);
        if (!dup && (!push(r, n, seen, key) || !push(r, n, l, items->v[i]))) return false;
    }
    return !c.failed && jstep(r, n->line, items->n * items->n / 8) && gen_out(l, out);
}

/* int()/float() of a value as the filters do it: the default when it does not parse. */
static bool to_number(jv v, bool want_int, jv dflt, jv *out) {
    if (v.t == JV_INT || v.t == JV_BOOL) *out = want_int ? jv_int(v.t == JV_INT ? v.u.i : v.u.b) : jv_float(v.t == JV_INT ? (double)v.u.i : v.u.b);
    else if (v.t == JV_FLOAT) *out = want_int ? (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18 ? jv_int((int64_t)v.u.f) : dflt) : v;
    else if (v.t == JV_STR) {
        char buf[64];
        jstr s = strip(v.u.s, NULL, true, true);
        if (s.len == 0 || s.len >= sizeof buf) {
            *out = dflt;
            return true;
        }
        memcpy(buf, s.p, s.len);
        buf[s.len] = 0;
        char *end;
        if (want_int) {
            long long x = strtoll(buf, &end, 10);
            if (*end) {
                double f = strtod(buf, &end);
                *out = *end || !isfinite(f) ? dflt : jv_int((int64_t)f);
            } else *out = jv_int(x);
        } else {
            double f = strtod(buf, &end);
            *out = *end ? dflt : jv_float(f);
        }
    } else *out = dflt;
    return true;
}

bool jfilter(jrender *r, const jnode *n, const char *name, jv v, const jargs *a, jv *out) {
    jstr s;
    if (!jhas_filter(name)) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the filter '%s'", name);
    if (!jstep(r, n->line, 1)) return false;
    if (strcmp(name, "default") == 0 || strcmp(name, "d") == 0) {
        bool boolean = jv_truthy(jarg(a, 1, "boolean", jv_bool(false)));
        *out = v.t == JV_UNDEF || (boolean && !jv_truthy(v)) ? jarg(a, 0, "default_value", jv_str(js_lit(""))) : v;
        return true;
    }
    if (strcmp(name, "length") == 0 || strcmp(name, "count") == 0) {
        if ((v.t != JV_STR && v.t != JV_LIST && v.t != JV_DICT && v.t != JV_UNDEF) || (v.t == JV_LIST && v.u.l->gen))
            return FAIL("object of type '%s' has no len()", jv_type_name(v));
        if (v.t != JV_STR && v.t != JV_LIST && v.t != JV_DICT && v.t != JV_UNDEF)
            return FAIL("object of type '%s' has no len()", jv_type_name(v));
        *out = jv_int((int64_t)py_len(v));
        return true;
    }
    if (strcmp(name, "tojson") == 0) return tojson(r, n, v, a, out);
    if (strcmp(name, "items") == 0) {
        if (v.t == JV_UNDEF) {
            *out = mklist(r, 1);
            return MEM(out->u.l);
        }
        if (v.t != JV_DICT) return FAIL("items: expected a mapping, got %s", jv_type_name(v));
        jv l = mklist(r, v.u.d->n + 1);
        if (!MEM(l.u.l)) return false;
        for (size_t i = 0; i < v.u.d->n; i++) {
            jv t = tuple2(r, v.u.d->k[i], v.u.d->v[i]);
            if (!MEM(t.t == JV_LIST ? &t : NULL) || !push(r, n, l, t)) return false;
        }
        return gen_out(l, out);
    }
    if (strcmp(name, "join") == 0) return join(r, n, v, a, out);
    if (strcmp(name, "selectattr") == 0 || strcmp(name, "rejectattr") == 0)
        return select_items(r, n, v, a, true, name[0] == 's', out);
    if (strcmp(name, "select") == 0 || strcmp(name, "reject") == 0)
        return select_items(r, n, v, a, false, name[0] == 's', out);
    if (strcmp(name, "map") == 0) return map_items(r, n, v, a, out);
    if (strcmp(name, "sort") == 0) return do_sort(r, n, v, a, false, out);
    if (strcmp(name, "dictsort") == 0) return do_sort(r, n, v, a, true, out);
    if (strcmp(name, "unique") == 0) return unique(r, n, v, a, out);
    if (strcmp(name, "min") == 0 || strcmp(name, "max") == 0) return minmax(r, n, v, a, name[1] == 'a', out);
    if (strcmp(name, "list") == 0) {
        jlist *items;
        if (!as_list(r, n, v, &items)) return false;
        jv l = mklist(r, items->n + 1);
        if (!MEM(l.u.l)) return false;
        for (size_t i = 0; i < items->n; i++) jl_push(&r->a, l.u.l, items->v[i]);
        *out = l;
        return true;
    }
    if (strcmp(name, "first") == 0 || strcmp(name, "last") == 0) {
        jlist *items;
        if (name[0] == 'l' && v.t == JV_LIST && v.u.l->gen) return FAIL("'generator' object is not reversible");
        if (!as_list(r, n, v, &items)) return false;
        *out = items->n == 0 ? jv_undef() : items->v[name[0] == 'f' ? 0 : items->n - 1];
        return true;
    }
    if (strcmp(name, "reverse") == 0) {
        if (v.t == JV_STR) {
            jv rev;
            jbuf b = newbuf(r);
            size_t k = ju_count(v.u.s.p, v.u.s.len);
            for (size_t i = k; i-- > 0;) {
                jv c = jgetitem(r, v, jv_int((int64_t)i));
                jb_str(&b, c.u.s);
            }
            if (!take(r, n, &b, &rev)) return false;
            *out = rev;
            return true;
        }
        jlist *items;
        if (!as_list(r, n, v, &items)) return false;
        jv l = mklist(r, items->n + 1);
        if (!MEM(l.u.l)) return false;
        if (v.t == JV_LIST && v.u.l->gen) return FAIL("'generator' object is not reversible");
        for (size_t i = items->n; i-- > 0;) jl_push(&r->a, l.u.l, items->v[i]);
        return gen_out(l, out);
    }
    if (strcmp(name, "sum") == 0) {
        jlist *items;
        if (!as_list(r, n, v, &items)) return false;
        jv attribute = jarg(a, 0, "attribute", jv_undef()), acc = jarg(a, 1, "start", jv_int(0));
        for (size_t i = 0; i < items->n; i++) {
            jv x = attribute.t == JV_STR ? get_path(r, items->v[i], attribute.u.s) : items->v[i];
            if (!(acc.t == JV_INT || acc.t == JV_FLOAT) || !(x.t == JV_INT || x.t == JV_FLOAT || x.t == JV_BOOL))
                return FAIL("sum: unsupported operand types '%s' and '%s'", jv_type_name(acc), jv_type_name(x));
            if (acc.t == JV_INT && x.t != JV_FLOAT) {
                int64_t y = x.t == JV_INT ? x.u.i : x.u.b;
                if (__builtin_add_overflow(acc.u.i, y, &acc.u.i))
                    return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: an integer beyond 64 bits");
            } else acc = jv_float((acc.t == JV_FLOAT ? acc.u.f : (double)acc.u.i) + (x.t == JV_FLOAT ? x.u.f : x.t == JV_INT ? (double)x.u.i : x.u.b));
        }
        *out = acc;
        return true;
    }
    if (strcmp(name, "abs") == 0) {
        if (v.t == JV_INT) *out = v.u.i == INT64_MIN ? jv_float(9223372036854775808.0) : jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        else if (v.t == JV_FLOAT) *out = jv_float(fabs(v.u.f));
        else if (v.t == JV_BOOL) *out = jv_int(v.u.b);
        else return FAIL("bad operand type for abs(): '%s'", jv_type_name(v));
        return true;
    }
    if (strcmp(name, "round") == 0) {
        jv prec = jarg(a, 0, "precision", jv_int(0)), method = jarg(a, 1, "method", jv_str(js_lit("common")));
        if (v.t != JV_INT && v.t != JV_FLOAT && v.t != JV_BOOL) return FAIL("round: expected a number, got %s", jv_type_name(v));
        if (prec.t != JV_INT || prec.u.i < 0 || prec.u.i > 15) return FAIL("round: precision must be an int from 0 to 15");
        double x = v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b, m = pow(10, (double)prec.u.i);
        if (method.t != JV_STR) return FAIL("round: method must be common, ceil or floor");
        if (js_eq(method.u.s, "common")) *out = jv_float(round(x * m) / m);
        else if (js_eq(method.u.s, "ceil")) *out = jv_float(ceil(x * m) / m);
        else if (js_eq(method.u.s, "floor")) *out = jv_float(floor(x * m) / m);
        else return FAIL("round: method must be common, ceil or floor");
        return true;
    }
    if (strcmp(name, "int") == 0 || strcmp(name, "float") == 0) {
        bool want_int = name[0] == 'i';
        if (want_int && jarg(a, 1, "base", jv_int(10)).u.i != 10)
            return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: int with a base other than 10");
        return to_number(v, want_int, jarg(a, 0, "default", want_int ? jv_int(0) : jv_float(0)), out);
    }
    /* the string filters */
    if (!to_str(r, n, v, &s)) return false;
    if (strcmp(name, "string") == 0 || strcmp(name, "safe") == 0) {
        *out = jv_str(s);
        out->safe = name[1] == 'a' || v.safe;
        return true;
    }
    if (strcmp(name, "trim") == 0) {
        jv chars = jarg(a, 0, "chars", jv_none());
        if (chars.t != JV_NONE && chars.t != JV_STR) return FAIL("trim: chars must be a string");
        *out = jv_str(strip(s, chars.t == JV_STR ? &chars.u.s : NULL, true, true));
        return true;
    }
    if (strcmp(name, "upper") == 0) return recase(r, n, s, CASE_UPPER, out);
    if (strcmp(name, "lower") == 0) return recase(r, n, s, CASE_LOWER, out);
    if (strcmp(name, "capitalize") == 0) return recase(r, n, s, CASE_CAPITALIZE, out);
    if (strcmp(name, "title") == 0) return recase(r, n, s, CASE_TITLE_JINJA, out);
    if (strcmp(name, "replace") == 0) {
        jstr old, new_;
        jv count = jarg(a, 2, "count", jv_none());
        if (!to_str(r, n, jarg(a, 0, "old", jv_undef()), &old) || !to_str(r, n, jarg(a, 1, "new", jv_undef()), &new_))
            return false;
        if (count.t != JV_NONE && count.t != JV_INT) return FAIL("replace: count must be an int");
        return replace(r, n, s, old, new_, count.t == JV_INT ? count.u.i : -1, out);
    }
    if (strcmp(name, "indent") == 0) return indent(r, n, s, a, out);
    if (strcmp(name, "escape") == 0 || strcmp(name, "e") == 0) {
        if (!v.safe && !jescape(r, n->line, s, &s)) return false;
        *out = jv_str(s);
        out->safe = true;
        return true;
    }
    return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the filter '%s'", name);
}

/* ---- tests ---- */

bool jtest(jrender *r, const jnode *n, const char *name, jv v, const jargs *a, bool *out) {
    jv x = jarg(a, 0, NULL, jv_undef());
    if (!jhas_test(name)) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the test '%s'", name);
    if (strcmp(name, "defined") == 0) *out = v.t != JV_UNDEF;
    else if (strcmp(name, "undefined") == 0) *out = v.t == JV_UNDEF;
    else if (strcmp(name, "none") == 0) *out = v.t == JV_NONE;
    else if (strcmp(name, "boolean") == 0) *out = v.t == JV_BOOL;
    else if (strcmp(name, "true") == 0) *out = v.t == JV_BOOL && v.u.b;
    else if (strcmp(name, "false") == 0) *out = v.t == JV_BOOL && !v.u.b;
    else if (strcmp(name, "integer") == 0) *out = v.t == JV_INT;
    else if (strcmp(name, "float") == 0) *out = v.t == JV_FLOAT;
    else if (strcmp(name, "number") == 0) *out = v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
    else if (strcmp(name, "string") == 0) *out = v.t == JV_STR;
    else if (strcmp(name, "mapping") == 0) *out = v.t == JV_DICT && !v.u.d->ns;
    else if (strcmp(name, "iterable") == 0 || strcmp(name, "sequence") == 0)
        *out = v.t == JV_STR || (v.t == JV_LIST && (name[0] == 'i' || !v.u.l->gen)) || (v.t == JV_DICT && !v.u.d->ns) ||
               v.t == JV_UNDEF;
    else if (strcmp(name, "callable") == 0) *out = v.t == JV_FUNC;
    else if (strcmp(name, "sameas") == 0) {
        if (v.t == JV_LIST || v.t == JV_DICT || v.t == JV_FUNC) *out = v.t == x.t && v.u.l == x.u.l;
        else if (v.t == JV_STR) *out = false; /* identity of strings is an implementation detail */
        else *out = v.t == x.t && jv_equal(v, x);
    } else if (strcmp(name, "odd") == 0 || strcmp(name, "even") == 0 || strcmp(name, "divisibleby") == 0) {
        if (v.t != JV_INT) return FAIL("the test '%s' needs an integer, got %s", name, jv_type_name(v));
        int64_t d = name[0] == 'd' ? (x.t == JV_INT ? x.u.i : 0) : 2;
        if (d == 0) return FAIL("divisibleby: needs a nonzero integer");
        int64_t m = d == -1 ? 0 : v.u.i % d;
        *out = name[0] == 'o' ? m != 0 : m == 0;
    } else if (strcmp(name, "in") == 0) {
        if (x.t == JV_STR) {
            if (v.t != JV_STR) return FAIL("'in <string>' requires a string on the left");
            *out = v.u.s.len == 0 || memmem(x.u.s.p, x.u.s.len, v.u.s.p, v.u.s.len) != NULL;
            return true;
        }
        if (x.t == JV_LIST) {
            *out = false;
            for (size_t i = 0; i < x.u.l->n && !*out; i++) *out = jv_equal(v, x.u.l->v[i]);
            return true;
        }
        if (x.t == JV_DICT) {
            *out = jd_get(x.u.d, v) != NULL;
            return true;
        }
        return FAIL("the test 'in' needs a container, got %s", jv_type_name(x));
    } else if (strcmp(name, "eq") == 0 || strcmp(name, "equalto") == 0 || strcmp(name, "==") == 0) *out = jv_equal(v, x);
    else if (strcmp(name, "ne") == 0 || strcmp(name, "!=") == 0) *out = !jv_equal(v, x);
    else if (strcmp(name, "lower") == 0 || strcmp(name, "upper") == 0) {
        jstr s;
        if (!to_str(r, n, v, &s)) return false;
        bool any = false, ok = true, up = name[0] == 'u';
        for (size_t i = 0; i < s.len && ok;) {
            size_t k;
            int32_t c = cp_at(s.p + i, s.len - i, &k);
            if (cased(c)) {
                any = true;
                ok = up ? utf8proc_tolower(c) == c && utf8proc_category(c) != UTF8PROC_CATEGORY_LT ? false : utf8proc_toupper(c) == c
                        : utf8proc_toupper(c) == c && utf8proc_category(c) != UTF8PROC_CATEGORY_LT ? false : utf8proc_tolower(c) == c;
            }
            i += k;
        }
        *out = any && ok;
    } else {
        /* lt le gt ge and their symbols */
        int cmp;
        if (jv_order(v, x, &cmp) != 0) return FAIL("'%s' cannot be compared with '%s'", jv_type_name(v), jv_type_name(x));
        if (strcmp(name, "lt") == 0 || strcmp(name, "<") == 0) *out = cmp < 0;
        else if (strcmp(name, "le") == 0 || strcmp(name, "<=") == 0) *out = cmp <= 0;
        else if (strcmp(name, "gt") == 0 || strcmp(name, ">") == 0) *out = cmp > 0;
        else if (strcmp(name, "ge") == 0 || strcmp(name, ">=") == 0) *out = cmp >= 0;
        else return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the test '%s'", name);
    }
    return true;
}

/* ---- methods ---- */

/* str.format with {} {0} {name} fields and {{ }}; format specs and conversions are refused. */
static bool format(jrender *r, const jnode *n, jstr s, const jargs *a, jv *out) {
    jbuf b = newbuf(r);
    size_t auto_i = 0;
    bool manual = false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if ((c == '{' || c == '}') && i + 1 < s.len && s.p[i + 1] == c) {
            jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, 1});
            i++;
            continue;
        }
        if (c == '}') return jb_free(&b), FAIL("format: single '}' in the format string");
        if (c != '{') {
            jb_str(&b, (jstr){s.p + i, s.t ? s.t + i : NULL, 1});
            continue;
        }
        const char *close = memchr(s.p + i, '}', s.len - i);
        if (!close) return jb_free(&b), FAIL("format: single '{' in the format string");
        size_t e = (size_t)(close - s.p), fl = e - i - 1;
        const char *f = s.p + i + 1;
        if (memchr(f, ':', fl) || memchr(f, '!', fl) || memchr(f, '.', fl) || memchr(f, '[', fl))
            return jb_free(&b), jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: a format spec or field path in str.format");
        jv v;
        bool numbered = fl > 0 && f[0] >= '0' && f[0] <= '9';
        if ((fl == 0 && manual) || (numbered && auto_i))
            return jb_free(&b), FAIL("format: cannot switch from %s", manual
                                     ? "manual field specification to automatic field numbering"
                                     : "automatic field numbering to manual field specification");
        manual |= numbered;
        if (fl == 0) v = jarg(a, auto_i++, NULL, jv_undef());
        else if (numbered) v = jarg(a, (size_t)strtoul(f, NULL, 10), NULL, jv_undef());
        else {
            char key[64];
            if (fl >= sizeof key) return jb_free(&b), FAIL("format: field name too long");
            memcpy(key, f, fl);
            key[fl] = 0;
            v = jarg(a, 999, key, jv_undef());
        }
        if (v.t == JV_UNDEF) return jb_free(&b), FAIL("format: no argument for field '{%.*s}'", (int)fl, f);
        jv_write_str(&b, v);
        i = e;
    }
    return take(r, n, &b, out);
}

static bool starts_ends(jrender *r, const jnode *n, jstr s, jv pre, bool ends, bool *out) {
    if (pre.t == JV_LIST) {
        *out = false;
        for (size_t i = 0; i < pre.u.l->n && !*out; i++)
            if (!starts_ends(r, n, s, pre.u.l->v[i], ends, out)) return false;
        return true;
    }
    if (pre.t != JV_STR) return FAIL("%s: expected a string or a tuple of strings, got %s", ends ? "endswith" : "startswith", jv_type_name(pre));
    jstr p = pre.u.s;
    *out = p.len <= s.len && memcmp(ends ? s.p + s.len - p.len : s.p, p.p, p.len) == 0;
    return true;
}

static bool str_method(jrender *r, const jnode *n, jstr s, const char *name, const jargs *a, jv *out) {
    jv x = jarg(a, 0, NULL, jv_none()), y = jarg(a, 1, NULL, jv_none());
    jstr xs = {"", NULL, 0};
    if (strcmp(name, "strip") == 0 || strcmp(name, "lstrip") == 0 || strcmp(name, "rstrip") == 0) {
        if (x.t != JV_NONE && x.t != JV_STR) return FAIL("%s: chars must be a string or None", name);
        *out = jv_str(strip(s, x.t == JV_STR ? &x.u.s : NULL, name[0] != 'r', name[0] != 'l'));
        return true;
    }
    if (strcmp(name, "split") == 0 || strcmp(name, "rsplit") == 0) {
        x = jarg(a, 0, "sep", jv_none());
        y = jarg(a, 1, "maxsplit", jv_int(-1));
        if ((x.t != JV_NONE && x.t != JV_STR) || y.t != JV_INT) return FAIL("%s: bad arguments", name);
        return split(r, n, s, x.t == JV_STR ? &x.u.s : NULL, y.u.i, name[0] == 'r', out);
    }
    if (strcmp(name, "startswith") == 0 || strcmp(name, "endswith") == 0) {
        bool res;
        if (!starts_ends(r, n, s, x, name[0] == 'e', &res)) return false;
        *out = jv_bool(res);
        return true;
    }
    if (strcmp(name, "upper") == 0) return recase(r, n, s, CASE_UPPER, out);
    if (strcmp(name, "lower") == 0) return recase(r, n, s, CASE_LOWER, out);
    if (strcmp(name, "title") == 0) return recase(r, n, s, CASE_TITLE_PY, out);
    if (strcmp(name, "capitalize") == 0) return recase(r, n, s, CASE_CAPITALIZE, out);
    if (strcmp(name, "replace") == 0) {
        jv count = jarg(a, 2, NULL, jv_int(-1));
        if (x.t != JV_STR || y.t != JV_STR || count.t != JV_INT) return FAIL("replace: expected (str, str[, int])");
        return replace(r, n, s, x.u.s, y.u.s, count.u.i, out);
    }
    if (strcmp(name, "find") == 0 || strcmp(name, "rfind") == 0 || strcmp(name, "count") == 0) {
        if (!need_str(r, n, x, name, &xs)) return false;
        if (a->n > 1) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: str.%s with start/end", name);
        int64_t found = -1, count = 0;
        for (size_t i = 0; i + xs.len <= s.len;) {
            if (memcmp(s.p + i, xs.p, xs.len) == 0) {
                if (found < 0 || name[0] == 'r') found = (int64_t)ju_count(s.p, i);
                count++;
                if (name[0] == 'f') break;
                i += xs.len ? xs.len : 1;
            } else i++;
        }
        *out = jv_int(name[0] == 'c' ? count : found);
        return true;
    }
    if (strcmp(name, "join") == 0) {
        jv sep = jv_str(s);
        const char *no_kw = NULL;
        jargs ja = {&sep, &no_kw, 1};
        return join(r, n, x, &ja, out);
    }
    if (strcmp(name, "splitlines") == 0) {
        jv l = mklist(r, 4);
        if (!MEM(l.u.l)) return false;
        size_t i = 0;
        while (i < s.len) {
            size_t e = i;
            while (e < s.len && s.p[e] != '\n' && s.p[e] != '\r') e++;
            if (!push(r, n, l, jv_str((jstr){s.p + i, s.t ? s.t + i : NULL, e - i}))) return false;
            if (e < s.len && s.p[e] == '\r' && e + 1 < s.len && s.p[e + 1] == '\n') e++;
            i = e + 1;
        }
        *out = l;
        return true;
    }
    if (strncmp(name, "is", 2) == 0) {
        bool all = s.len > 0, any_cased = false, cased_ok = true;
        for (size_t i = 0; i < s.len;) {
            size_t k;
            int32_t c = cp_at(s.p + i, s.len - i, &k);
            utf8proc_category_t cat = utf8proc_category(c);
            bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
            bool digit = cat == UTF8PROC_CATEGORY_ND;
            if (strcmp(name, "isdigit") == 0) all &= digit;
            else if (strcmp(name, "isalpha") == 0) all &= letter;
            else if (strcmp(name, "isalnum") == 0) all &= letter || digit || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
            else if (strcmp(name, "isspace") == 0) all &= py_space(c);
            else if (cased(c)) {
                any_cased = true;
                cased_ok &= strcmp(name, "islower") == 0 ? cat == UTF8PROC_CATEGORY_LL : cat == UTF8PROC_CATEGORY_LU;
            }
            i += k;
        }
        *out = jv_bool(strcmp(name, "islower") == 0 || strcmp(name, "isupper") == 0 ? any_cased && cased_ok : all);
        return true;
    }
    if (strcmp(name, "format") == 0) return format(r, n, s, a, out);
    return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: str.%s", name);
}

bool jcall_method(jrender *r, const jnode *n, jv self, const char *name, const jargs *a, jv *out) {
    if (!jstep(r, n->line, 1)) return false;
    if (self.t == JV_STR) return str_method(r, n, self.u.s, name, a, out);
    if (self.t == JV_DICT) {
        const jdict *d = self.u.d;
        if (strcmp(name, "get") == 0) {
            jv *v = jd_get(d, jarg(a, 0, NULL, jv_undef()));
            *out = v ? *v : jarg(a, 1, NULL, jv_none());
            return true;
        }
        jv l = mklist(r, d->n + 1);
        if (!MEM(l.u.l)) return false;
        for (size_t i = 0; i < d->n; i++) {
            jv item = name[0] == 'k' ? d->k[i] : name[0] == 'v' ? d->v[i] : tuple2(r, d->k[i], d->v[i]);
            if (!MEM(item.t == JV_UNDEF ? NULL : l.u.l) || !push(r, n, l, item)) return false;
        }
        *out = l;
        return jstep(r, n->line, d->n);
    }
    if (self.t == JV_LIST) {
        jv x = jarg(a, 0, NULL, jv_undef());
        int64_t count = 0, idx = -1;
        for (size_t i = 0; i < self.u.l->n; i++)
            if (jv_equal(self.u.l->v[i], x)) {
                if (idx < 0) idx = (int64_t)i;
                count++;
            }
        if (name[0] == 'i' && idx < 0) return FAIL("list.index(x): x not in list");
        *out = jv_int(name[0] == 'i' ? idx : count);
        return jstep(r, n->line, self.u.l->n);
    }
    return FAIL("'%s' object has no method '%s'", jv_type_name(self), name);
}

/* ---- globals ---- */

bool jcall_global(jrender *r, const jnode *n, const char *name, const jargs *a, jv *out) {
    if (strcmp(name, "raise_exception") == 0) {
        jstr msg;
        if (!to_str(r, n, jarg(a, 0, "message", jv_str(js_lit(""))), &msg)) return false;
        return jfail(r, n->line, CV_EINVAL, "the template raised: %.*s", (int)(msg.len > 300 ? 300 : msg.len), msg.p);
    }
    if (strcmp(name, "strftime_now") == 0) {
        jv f = jarg(a, 0, "format", jv_undef());
        if (f.t != JV_STR || f.u.s.len > 200) return FAIL("strftime_now: expected a format string");
        char fmt[201], buf[8192];
        memcpy(fmt, f.u.s.p, f.u.s.len);
        fmt[f.u.s.len] = 0;
        time_t now = r->lim->now ? r->lim->now : time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = fmt[0] ? strftime(buf, sizeof buf, fmt, &tm) : 0;
        jstr s;
        if (!MEM(js_new(&r->a, buf, k, NULL, &s) ? &s : NULL)) return false;
        *out = jv_str(s);
        return true;
    }
    if (strcmp(name, "range") == 0) {
        int64_t lo = 0, hi, step = 1;
        size_t k = 0;
        for (size_t i = 0; i < a->n; i++) {
            if (a->kw[i] || a->v[i].t != JV_INT) return FAIL("range: arguments must be integers");
            k++;
        }
        if (k == 0 || k > 3) return FAIL("range: expected 1 to 3 arguments");
        if (k == 1) hi = a->v[0].u.i;
        else lo = a->v[0].u.i, hi = a->v[1].u.i;
        if (k == 3) step = a->v[2].u.i;
        if (step == 0) return FAIL("range: step must not be zero");
        double count = step > 0 ? ceil(((double)hi - (double)lo) / (double)step) : ceil(((double)lo - (double)hi) / (double)-step);
        if (count < 0) count = 0;
        if (count > (double)r->lim->max_steps) return jstep(r, n->line, r->lim->max_steps + 1);
        if (!jstep(r, n->line, (uint64_t)count)) return false;
        jv l = mklist(r, (size_t)count + 1);
        if (!MEM(l.u.l)) return false;
        for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) jl_push(&r->a, l.u.l, jv_int(i));
        *out = l;
        return true;
    }
    /* namespace(...) and dict(...): keyword arguments (and a dict to start from) */
    jdict *d = jd_new(&r->a);
    if (!MEM(d)) return false;
    d->ns = name[0] == 'n';
    for (size_t i = 0; i < a->n; i++) {
        if (!a->kw[i]) {
            if (a->v[i].t != JV_DICT || i > 0) return FAIL("%s: expected keyword arguments or one mapping", name);
            for (size_t k = 0; k < a->v[i].u.d->n; k++)
                if (!MEM(jd_set(&r->a, d, a->v[i].u.d->k[k], a->v[i].u.d->v[k]) ? d : NULL)) return false;
            continue;
        }
        if (!MEM(jd_set(&r->a, d, jv_str(js_lit(a->kw[i])), a->v[i]) ? d : NULL)) return false;
    }
    *out = (jv){.t = JV_DICT, .u.d = d};
    return true;
}
