/* The tree walk. Scopes as jinja2 has them: the render's variables, then a frame per
 * for-loop iteration and per macro call (a set inside them stays there; namespaces
 * carry values out); if blocks share their enclosing frame. Undefined follows
 * jinja2's default Undefined: falsy, prints as "", iterates as empty, and any
 * attribute, item, call or arithmetic on it is an error. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_int.h"

bool jfail(jrender *r, int line, cv_status code, const char *fmt, ...) {
    if (r->st != CV_OK) return false;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->st = cv_errorf(r->err, code, "chat template line %d: %s", line, msg);
    return false;
}

bool jstep(jrender *r, int line, uint64_t n) {
    r->steps += n;
    if (r->steps <= r->lim->max_steps) return true;
    return jfail(r, line, CV_ERANGE, "over %llu loop iterations, macro calls and filter items",
                 (unsigned long long)r->lim->max_steps);
}

bool jmem(jrender *r, int line, const void *p) {
    if (p) return true;
    return jfail(r, line, CV_ERANGE, "the render needs over %zu bytes of memory", r->lim->max_memory);
}

jv jarg(const jargs *a, size_t pos, const char *name, jv dflt) {
    for (size_t i = 0; i < a->n; i++)
        if (a->kw[i] && name && strcmp(a->kw[i], name) == 0) return a->v[i];
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++)
        if (!a->kw[i] && k++ == pos) return a->v[i];
    return dflt;
}

/* ---- frames ---- */

static jframe *frame_new(jrender *r, jframe *parent) {
    jframe *f = ja_alloc(&r->a, sizeof *f);
    if (f) f->parent = parent;
    return f;
}

static jv *frame_find(jframe *f, const char *name) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->names[i], name) == 0) return &f->vals[i];
    return NULL;
}

static bool frame_set(jrender *r, jframe *f, const char *name, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return true;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        const char **nn = ja_alloc(&r->a, cap * sizeof *nn);
        jv *nv = ja_alloc(&r->a, cap * sizeof *nv);
        if (!nn || !nv) return false;
        if (f->n) memcpy(nn, f->names, f->n * sizeof *nn), memcpy(nv, f->vals, f->n * sizeof *nv);
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
    return true;
}

/* ---- items access ---- */

static jv method_value(jrender *r, jv self, const char *name) {
    jfunc *fn = ja_alloc(&r->a, sizeof *fn);
    if (!fn) return jv_undef();
    fn->kind = JF_METHOD;
    fn->name = name;
    fn->self = self;
    return (jv){.t = JV_FUNC, .u.fn = fn};
}

jv jgetitem(jrender *r, jv v, jv key) {
    if (v.t == JV_DICT) {
        jv *x = jd_get(v.u.d, key);
        return x ? *x : jv_undef();
    }
    if ((v.t == JV_LIST || v.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        if (v.t == JV_LIST) {
            int64_t n = (int64_t)v.u.l->n;
            if (i < 0) i += n;
            return i >= 0 && i < n ? v.u.l->v[i] : jv_undef();
        }
        int64_t n = (int64_t)ju_count(v.u.s.p, v.u.s.len);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return jv_undef();
        size_t a = ju_offset(v.u.s.p, v.u.s.len, (size_t)i), b = ju_offset(v.u.s.p, v.u.s.len, (size_t)i + 1);
        jstr s;
        js_sub(&r->a, v.u.s, a, b - a, &s);
        return jv_str(s);
    }
    return jv_undef();
}

/* Python slice indices for a sequence of n items. */
static bool slice_indices(jrender *r, const jnode *n, jv *parts, int64_t len, int64_t *start, int64_t *stop,
                          int64_t *step) {
    for (int k = 0; k < 3; k++)
        if (parts[k].t != JV_NONE && parts[k].t != JV_UNDEF && parts[k].t != JV_INT)
            return jfail(r, n->line, CV_EINVAL, "slice indices must be integers or None, not %s",
                         jv_type_name(parts[k]));
    *step = parts[2].t == JV_INT ? parts[2].u.i : 1;
    if (*step == 0) return jfail(r, n->line, CV_EINVAL, "slice step cannot be zero");
    bool neg = *step < 0;
    int64_t lo = neg ? -1 : 0, hi = neg ? len - 1 : len;
    for (int k = 0; k < 2; k++) {
        int64_t *dst = k ? stop : start;
        if (parts[k].t != JV_INT) {
            *dst = (k == 0) == neg ? hi : lo;
            continue;
        }
        int64_t x = parts[k].u.i;
        if (x < 0) x += len;
        *dst = x < lo ? lo : x > hi ? hi : x;
    }
    return true;
}

static bool do_slice(jrender *r, const jnode *n, jv v, jv *parts, jv *out) {
    int64_t start, stop, step;
    if (v.t == JV_LIST && v.u.l->gen) return jfail(r, n->line, CV_EINVAL, "'generator' object is not subscriptable");
    if (v.t == JV_LIST) {
        if (!slice_indices(r, n, parts, (int64_t)v.u.l->n, &start, &stop, &step)) return false;
        jlist *l = jl_new(&r->a, 4);
        if (!jmem(r, n->line, l)) return false;
        l->tuple = v.u.l->tuple;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            if (!jmem(r, n->line, jl_push(&r->a, l, v.u.l->v[i]) ? l : NULL)) return false;
        *out = (jv){.t = JV_LIST, .u.l = l};
        return true;
    }
    if (v.t == JV_STR) {
        jstr s = v.u.s;
        int64_t len = (int64_t)ju_count(s.p, s.len);
        if (!slice_indices(r, n, parts, len, &start, &stop, &step)) return false;
        if (step == 1) {
            size_t a = ju_offset(s.p, s.len, (size_t)start), b = start < stop ? ju_offset(s.p, s.len, (size_t)stop) : a;
            jstr o;
            js_sub(&r->a, s, a, b - a, &o);
            *out = jv_str(o);
            return true;
        }
        jbuf b = {.max = s.len};
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            size_t x = ju_offset(s.p, s.len, (size_t)i), y = ju_offset(s.p, s.len, (size_t)i + 1);
            jstr c;
            js_sub(&r->a, s, x, y - x, &c);
            jb_str(&b, c);
        }
        jstr o;
        bool ok = jb_take(&b, &r->a, &o);
        jb_free(&b);
        if (!jmem(r, n->line, ok ? &o : NULL)) return false;
        *out = jv_str(o);
        return true;
    }
    return jfail(r, n->line, CV_EINVAL, "a %s cannot be sliced", jv_type_name(v));
}

/* ---- expressions ---- */

static bool eval(jrender *r, const jnode *n, jv *out);

static bool eval_args(jrender *r, const jnode *n, jargs *a) {
    a->n = n->nargs;
    a->kw = n->kw;
    a->v = ja_alloc(&r->a, (n->nargs ? n->nargs : 1) * sizeof *a->v);
    if (!jmem(r, n->line, a->v)) return false;
    for (size_t i = 0; i < n->nargs; i++)
        if (!eval(r, n->args[i], &a->v[i])) return false;
    return true;
}

static bool str_of(jrender *r, int line, jv v, jstr *out) {
    if (v.t == JV_LIST && v.u.l->gen) return jfail(r, line, CV_EUNSUPPORTED, "unsupported construct: a generator as text");
    if (v.t == JV_STR) {
        *out = v.u.s;
        return true;
    }
    jbuf b = {.max = r->lim->max_output};
    jv_write_str(&b, v);
    bool ok = !b.over && jb_take(&b, &r->a, out);
    jb_free(&b);
    return ok || jfail(r, line, CV_ERANGE, "a string over %zu bytes", r->lim->max_output);
}

static bool concat2(jrender *r, int line, jstr a, jstr b, jv *out) {
    if (a.len + b.len > r->lim->max_output)
        return jfail(r, line, CV_ERANGE, "a string over %zu bytes", r->lim->max_output);
    char *p = ja_alloc(&r->a, a.len + b.len + 1);
    uint8_t *t = a.t || b.t ? ja_alloc(&r->a, a.len + b.len + 1) : NULL;
    if (!jmem(r, line, p) || ((a.t || b.t) && !jmem(r, line, t))) return false;
    memcpy(p, a.p, a.len);
    memcpy(p + a.len, b.p, b.len);
    if (t) {
        if (a.t) memcpy(t, a.t, a.len);
        if (b.t) memcpy(t + a.len, b.t, b.len);
    }
    *out = jv_str((jstr){p, t, a.len + b.len});
    return true;
}

static bool is_number(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static int64_t as_int(jv v) { return v.t == JV_INT ? v.u.i : v.u.b; }
static double as_f(jv v) { return v.t == JV_FLOAT ? v.u.f : (double)as_int(v); }

static const char *op_name(int op) {
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    return op > 0 && op <= OP_CAT ? names[op] : "?";
}

static bool arith(jrender *r, const jnode *n, jv a, jv b, jv *out) {
    int op = n->op;
    if (a.t == JV_UNDEF || b.t == JV_UNDEF)
        return jfail(r, n->line, CV_EINVAL, "an undefined value in '%s'", op_name(op));
    if (op == OP_ADD && a.t == JV_STR && b.t == JV_STR) {
        /* Markup + str escapes the str (and str + Markup) */
        jstr x = a.u.s, y = b.u.s;
        bool safe = a.safe || b.safe;
        if (safe && !a.safe && !jescape(r, n->line, x, &x)) return false;
        if (safe && !b.safe && !jescape(r, n->line, y, &y)) return false;
        if (!concat2(r, n->line, x, y, out)) return false;
        out->safe = safe;
        return true;
    }
    if (op == OP_ADD && a.t == JV_LIST && b.t == JV_LIST) {
        jlist *l = jl_new(&r->a, a.u.l->n + b.u.l->n);
        if (!jmem(r, n->line, l)) return false;
        for (size_t i = 0; i < a.u.l->n; i++) jl_push(&r->a, l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jl_push(&r->a, l, b.u.l->v[i]);
        *out = (jv){.t = JV_LIST, .u.l = l};
        return true;
    }
    if (op == OP_MUL && ((a.t == JV_STR && b.t == JV_INT) || (a.t == JV_INT && b.t == JV_STR))) {
        jstr s = a.t == JV_STR ? a.u.s : b.u.s;
        int64_t k = a.t == JV_INT ? a.u.i : b.u.i;
        if (k < 0) k = 0;
        if (s.len && (uint64_t)k > r->lim->max_output / s.len)
            return jfail(r, n->line, CV_ERANGE, "a string over %zu bytes", r->lim->max_output);
        jbuf bb = {.max = r->lim->max_output};
        for (int64_t i = 0; i < k; i++) jb_str(&bb, s);
        jstr o;
        bool ok = jb_take(&bb, &r->a, &o);
        jb_free(&bb);
        if (!jmem(r, n->line, ok ? &o : NULL)) return false;
        *out = jv_str(o);
        return true;
    }
    if (!is_number(a) || !is_number(b))
        return jfail(r, n->line, CV_EINVAL, "unsupported operand types for %s: '%s' and '%s'", op_name(op),
                     jv_type_name(a), jv_type_name(b));
    bool ints = a.t != JV_FLOAT && b.t != JV_FLOAT;
    int64_t x = ints ? as_int(a) : 0, y = ints ? as_int(b) : 0, z = 0;
    double fx = as_f(a), fy = as_f(b);
    switch (op) {
    case OP_ADD:
    case OP_SUB:
    case OP_MUL:
        if (ints) {
            bool ovf = op == OP_ADD ? __builtin_add_overflow(x, y, &z) : op == OP_SUB ? __builtin_sub_overflow(x, y, &z)
                                                                      : __builtin_mul_overflow(x, y, &z);
            if (ovf) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: an integer beyond 64 bits");
            *out = jv_int(z);
        } else *out = jv_float(op == OP_ADD ? fx + fy : op == OP_SUB ? fx - fy : fx * fy);
        return true;
    case OP_DIV:
        if (fy == 0) return jfail(r, n->line, CV_EINVAL, "division by zero");
        *out = jv_float(fx / fy);
        return true;
    case OP_FDIV:
    case OP_MOD:
        if (ints ? y == 0 : fy == 0) return jfail(r, n->line, CV_EINVAL, "division by zero");
        if (ints) {
            if (x == INT64_MIN && y == -1) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: an integer beyond 64 bits");
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y; /* Python floors */
            *out = jv_int(op == OP_FDIV ? q : m);
        } else {
            double m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            *out = jv_float(op == OP_FDIV ? floor(fx / fy) : m);
        }
        return true;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1;
            for (int64_t i = 0; i < y; i++)
                if (__builtin_mul_overflow(acc, x, &acc) || i > 64)
                    return x == 0 || x == 1 ? (*out = jv_int(x), true)
                                            : jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: an integer beyond 64 bits");
            *out = jv_int(acc);
        } else *out = jv_float(pow(fx, fy));
        return true;
    }
    return jfail(r, n->line, CV_EINTERNAL, "operator %d", op);
}

static bool contains(jrender *r, const jnode *n, jv item, jv seq, bool *out) {
    if (seq.t == JV_STR) {
        if (item.t != JV_STR)
            return jfail(r, n->line, CV_EINVAL, "'in <string>' requires a string on the left, not %s", jv_type_name(item));
        *out = item.u.s.len == 0 || memmem(seq.u.s.p, seq.u.s.len, item.u.s.p, item.u.s.len) != NULL;
        return true;
    }
    if (seq.t == JV_LIST) {
        jlist *l = seq.u.l;
        *out = false;
        for (size_t i = l->gen ? l->pos : 0; i < l->n && !*out; i++) {
            *out = jv_equal(item, l->v[i]);
            if (l->gen) l->pos = i + 1; /* `in` consumes a generator up to the match */
        }
        return true;
    }
    if (seq.t == JV_DICT) {
        *out = jd_get(seq.u.d, item) != NULL;
        return true;
    }
    if (seq.t == JV_UNDEF) {
        *out = false; /* Undefined iterates as empty */
        return true;
    }
    return jfail(r, n->line, CV_EINVAL, "argument of type '%s' is not iterable", jv_type_name(seq));
}

static bool compare(jrender *r, const jnode *n, jv a, jv b, jv *out) {
    bool res = false;
    int c;
    switch (n->op) {
    case OP_EQ: res = jv_equal(a, b); break;
    case OP_NE: res = !jv_equal(a, b); break;
    case OP_IN:
    case OP_NOTIN:
        if (!contains(r, n, a, b, &res)) return false;
        if (n->op == OP_NOTIN) res = !res;
        break;
    default:
        if (jv_order(a, b, &c) != 0)
            return jfail(r, n->line, CV_EINVAL, "'%s' cannot be compared with '%s'", jv_type_name(a), jv_type_name(b));
        res = n->op == OP_LT ? c < 0 : n->op == OP_LE ? c <= 0 : n->op == OP_GT ? c > 0 : c >= 0;
    }
    *out = jv_bool(res);
    return true;
}

static bool call_value(jrender *r, const jnode *n, jv *out) {
    const jnode *callee = n->a;
    jargs args;
    jv self;
    if (callee->k == E_ATTR) {
        if (!eval(r, callee->a, &self)) return false;
        if (self.t != JV_UNDEF && jhas_method(self, callee->name)) {
            if (!eval_args(r, n, &args)) return false;
            return jcall_method(r, n, self, callee->name, &args, out);
        }
    }
    jv fn;
    if (!eval(r, callee, &fn) || !eval_args(r, n, &args)) return false;
    if (fn.t == JV_UNDEF && callee->k == E_NAME)
        return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: the function '%s'", callee->name);
    return jcall(r, n, fn, &args, out);
}

static bool eval(jrender *r, const jnode *n, jv *out) {
    jv a, b;
    switch (n->k) {
    case E_LIT: *out = n->lit; return true;
    case E_NAME: {
        jv *v = frame_find(r->scope, n->name);
        if (v) *out = *v;
        else if (jis_global(n->name)) {
            jfunc *fn = ja_alloc(&r->a, sizeof *fn);
            if (!jmem(r, n->line, fn)) return false;
            fn->kind = JF_GLOBAL;
            fn->name = n->name;
            *out = (jv){.t = JV_FUNC, .u.fn = fn};
        } else *out = jv_undef();
        return true;
    }
    case E_ATTR:
        if (!eval(r, n->a, &a)) return false;
        if (a.t == JV_UNDEF) return jfail(r, n->line, CV_EINVAL, "'%s' of an undefined value", n->name);
        if (jhas_method(a, n->name)) *out = method_value(r, a, n->name);
        else *out = jgetitem(r, a, jv_str(js_lit(n->name)));
        return true;
    case E_INDEX:
        if (!eval(r, n->a, &a) || !eval(r, n->b, &b)) return false;
        if (a.t == JV_UNDEF) return jfail(r, n->line, CV_EINVAL, "an item of an undefined value");
        if (a.t == JV_LIST && a.u.l->gen) return jfail(r, n->line, CV_EINVAL, "'generator' object is not subscriptable");
        *out = jgetitem(r, a, b);
        if (out->t == JV_UNDEF && b.t == JV_STR && jhas_method(a, b.u.s.p) && strlen(b.u.s.p) == b.u.s.len)
            *out = method_value(r, a, b.u.s.p);
        return true;
    case E_SLICE: {
        jv parts[3] = {jv_none(), jv_none(), jv_none()};
        if (!eval(r, n->a, &a)) return false;
        for (int k = 0; k < 3; k++)
            if (n->args[k] && !eval(r, n->args[k], &parts[k])) return false;
        return do_slice(r, n, a, parts, out);
    }
    case E_CALL: return call_value(r, n, out);
    case E_FILTER: {
        jargs args;
        if (!eval(r, n->a, &a) || !eval_args(r, n, &args)) return false;
        return jfilter(r, n, n->name, a, &args, out);
    }
    case E_TEST: {
        jargs args;
        bool res;
        if (!eval(r, n->a, &a) || !eval_args(r, n, &args) || !jtest(r, n, n->name, a, &args, &res)) return false;
        *out = jv_bool(res != (n->op != 0));
        return true;
    }
    case E_NEG:
    case E_POS:
        if (!eval(r, n->a, &a)) return false;
        if (!is_number(a)) return jfail(r, n->line, CV_EINVAL, "bad operand type for unary %s: '%s'", n->k == E_NEG ? "-" : "+", jv_type_name(a));
        if (n->k == E_POS) *out = a.t == JV_BOOL ? jv_int(a.u.b) : a;
        else if (a.t == JV_FLOAT) *out = jv_float(-a.u.f);
        else if (as_int(a) == INT64_MIN) return jfail(r, n->line, CV_EUNSUPPORTED, "unsupported construct: an integer beyond 64 bits");
        else *out = jv_int(-as_int(a));
        return true;
    case E_NOT:
        if (!eval(r, n->a, &a)) return false;
        *out = jv_bool(!jv_truthy(a));
        return true;
    case E_AND:
    case E_OR:
        if (!eval(r, n->a, &a)) return false;
        if (jv_truthy(a) == (n->k == E_OR)) {
            *out = a;
            return true;
        }
        return eval(r, n->b, out);
    case E_CMP:
        if (!eval(r, n->a, &a) || !eval(r, n->b, &b)) return false;
        return compare(r, n, a, b, out);
    case E_COND:
        if (!eval(r, n->b, &b)) return false;
        if (jv_truthy(b)) return eval(r, n->a, out);
        if (n->c) return eval(r, n->c, out);
        *out = jv_undef();
        return true;
    case E_BIN:
        if (!eval(r, n->a, &a) || !eval(r, n->b, &b)) return false;
        if (n->op == OP_CAT) {
            jstr x, y;
            return str_of(r, n->line, a, &x) && str_of(r, n->line, b, &y) && concat2(r, n->line, x, y, out);
        }
        return arith(r, n, a, b, out);
    case E_LIST:
    case E_TUPLE: {
        jlist *l = jl_new(&r->a, n->nargs);
        if (!jmem(r, n->line, l)) return false;
        l->tuple = n->k == E_TUPLE;
        for (size_t i = 0; i < n->nargs; i++) {
            if (!eval(r, n->args[i], &a)) return false;
            jl_push(&r->a, l, a);
        }
        *out = (jv){.t = JV_LIST, .u.l = l};
        return true;
    }
    case E_DICT: {
        jdict *d = jd_new(&r->a);
        if (!jmem(r, n->line, d)) return false;
        for (size_t i = 0; i + 1 < n->nargs; i += 2) {
            if (!eval(r, n->args[i], &a) || !eval(r, n->args[i + 1], &b)) return false;
            if (a.t == JV_LIST || a.t == JV_DICT || a.t == JV_UNDEF)
                return jfail(r, n->line, CV_EINVAL, "unhashable dict key of type '%s'", jv_type_name(a));
            if (!jmem(r, n->line, jd_set(&r->a, d, a, b) ? d : NULL)) return false;
        }
        *out = (jv){.t = JV_DICT, .u.d = d};
        return true;
    }
    default: return jfail(r, n->line, CV_EINTERNAL, "node %d is not an expression", (int)n->k);
    }
}

/* ---- statements ---- */

enum { X_OK, X_BREAK, X_CONTINUE, X_ERR };

static int exec_list(jrender *r, const jnode *n);

static bool write_value(jrender *r, int line, jv v) {
    if (v.t == JV_LIST && v.u.l->gen) return jfail(r, line, CV_EUNSUPPORTED, "unsupported construct: printing a generator");
    jv_write_str(r->out, v);
    if (r->out->over) return jfail(r, line, CV_ERANGE, "output over %zu bytes", r->lim->max_output);
    return true;
}

/* Renders a statement list into a new string (set blocks, macros, filter blocks). */
static bool capture(jrender *r, const jnode *body, int line, jstr *out) {
    jbuf b = {.max = r->lim->max_output}, *saved = r->out;
    r->out = &b;
    int x = exec_list(r, body);
    r->out = saved;
    bool ok = x == X_OK;
    if (x == X_BREAK || x == X_CONTINUE) ok = jfail(r, line, CV_EFORMAT, "break or continue outside a loop");
    if (ok && b.over) ok = jfail(r, line, CV_ERANGE, "output over %zu bytes", r->lim->max_output);
    if (ok) ok = jmem(r, line, jb_take(&b, &r->a, out) ? out : NULL);
    jb_free(&b);
    return ok;
}

static bool assign(jrender *r, const jnode *target, jv v) {
    if (target->k == E_NAME) return jmem(r, target->line, frame_set(r, r->scope, target->name, v) ? r : NULL);
    /* ns.attr */
    jv *ns = frame_find(r->scope, target->a->name);
    if (!ns || ns->t != JV_DICT || !ns->u.d->ns)
        return jfail(r, target->line, CV_EINVAL, "cannot assign attribute '%s' on a non-namespace object", target->name);
    return jmem(r, target->line, jd_set(&r->a, ns->u.d, jv_str(js_lit(target->name)), v) ? r : NULL);
}

static bool assign_targets(jrender *r, const jnode *n, jv v) {
    if (n->nargs == 1) return assign(r, n->args[0], v);
    if (v.t != JV_LIST)
        return jfail(r, n->line, CV_EINVAL, "cannot unpack a %s into %zu names", jv_type_name(v), n->nargs);
    if (v.u.l->n != n->nargs)
        return jfail(r, n->line, CV_EINVAL, "%zu values to unpack into %zu names", v.u.l->n, n->nargs);
    for (size_t i = 0; i < n->nargs; i++)
        if (!assign(r, n->args[i], v.u.l->v[i])) return false;
    return true;
}

/* The items a for loop walks: a list's items, a dict's keys, a string's characters. */
static bool iter_items(jrender *r, const jnode *n, jv v, jlist **out) {
    if (v.t == JV_LIST && v.u.l->gen) return jmem(r, n->line, *out = jgen_take(r, v.u.l));
    if (v.t == JV_LIST) {
        *out = v.u.l;
        return true;
    }
    jlist *l = jl_new(&r->a, 4);
    if (!jmem(r, n->line, l)) return false;
    if (v.t == JV_DICT) {
        for (size_t i = 0; i < v.u.d->n; i++)
            if (!jmem(r, n->line, jl_push(&r->a, l, v.u.d->k[i]) ? l : NULL)) return false;
    } else if (v.t == JV_STR) {
        size_t cps = ju_count(v.u.s.p, v.u.s.len);
        for (size_t i = 0; i < cps; i++)
            if (!jmem(r, n->line, jl_push(&r->a, l, jgetitem(r, v, jv_int((int64_t)i))) ? l : NULL)) return false;
    } else if (v.t != JV_UNDEF) {
        return jfail(r, n->line, CV_EINVAL, "'%s' object is not iterable", jv_type_name(v));
    }
    *out = l;
    return true;
}

static bool loop_set(jrender *r, jdict *d, const char *k, jv v) {
    return jd_set(&r->a, d, jv_str(js_lit(k)), v);
}

static int exec_for(jrender *r, const jnode *n) {
    jv seq;
    jlist *items = NULL;
    if (!eval(r, n->a, &seq) || !iter_items(r, n, seq, &items)) return X_ERR;
    jframe *outer = r->scope;
    if (n->b) { /* for x in xs if cond: loop.* counts the kept items */
        jlist *kept = jl_new(&r->a, items->n);
        if (!jmem(r, n->line, kept)) return X_ERR;
        for (size_t i = 0; i < items->n; i++) {
            jv c;
            jframe *f = frame_new(r, outer);
            if (!jstep(r, n->line, 1) || !jmem(r, n->line, f)) return X_ERR;
            r->scope = f;
            bool ok = assign_targets(r, n, items->v[i]) && eval(r, n->b, &c);
            r->scope = outer;
            if (!ok) return X_ERR;
            if (jv_truthy(c)) jl_push(&r->a, kept, items->v[i]);
        }
        r->scope = outer;
        items = kept;
    }
    int x = X_OK;
    size_t len = items->n;
    /* One frame, loop object and cycle function for all iterations, reset each time:
     * a body's sets do not outlive their iteration (jinja2's scoping), and jinja2's
     * loop is one object advanced in place, so memory does not grow with the count. */
    jframe *f = frame_new(r, outer);
    jdict *loop = jd_new(&r->a);
    jfunc *cyc = ja_alloc(&r->a, sizeof *cyc);
    if (!jmem(r, n->line, f && loop && cyc ? f : NULL)) return X_ERR;
    cyc->kind = JF_CYCLE;
    cyc->name = "cycle";
    for (size_t i = 0; i < len && x != X_ERR; i++) {
        if (!jstep(r, n->line, 1)) return X_ERR;
        f->n = 0;
        cyc->self = jv_int((int64_t)i);
        bool ok = loop_set(r, loop, "index", jv_int((int64_t)i + 1)) && loop_set(r, loop, "index0", jv_int((int64_t)i)) &&
                  loop_set(r, loop, "revindex", jv_int((int64_t)(len - i))) &&
                  loop_set(r, loop, "revindex0", jv_int((int64_t)(len - i - 1))) &&
                  loop_set(r, loop, "first", jv_bool(i == 0)) && loop_set(r, loop, "last", jv_bool(i + 1 == len)) &&
                  loop_set(r, loop, "length", jv_int((int64_t)len)) &&
                  loop_set(r, loop, "previtem", i ? items->v[i - 1] : jv_undef()) &&
                  loop_set(r, loop, "nextitem", i + 1 < len ? items->v[i + 1] : jv_undef()) &&
                  loop_set(r, loop, "depth", jv_int(1)) && loop_set(r, loop, "depth0", jv_int(0)) &&
                  loop_set(r, loop, "cycle", (jv){.t = JV_FUNC, .u.fn = cyc}) &&
                  frame_set(r, f, "loop", (jv){.t = JV_DICT, .u.d = loop});
        if (!jmem(r, n->line, ok ? f : NULL)) return X_ERR;
        r->scope = f;
        if (!assign_targets(r, n, items->v[i])) x = X_ERR;
        else x = exec_list(r, n->body);
        r->scope = outer;
        if (x == X_BREAK) break;
        if (x == X_CONTINUE) x = X_OK;
    }
    if (x == X_ERR) return X_ERR;
    if (len == 0 && n->else_) return exec_list(r, n->else_);
    return X_OK;
}

static int exec_one(jrender *r, const jnode *n) {
    jv v;
    jstr s;
    switch (n->k) {
    case N_TEXT:
        jb_str(r->out, n->lit.u.s);
        return r->out->over ? (jfail(r, n->line, CV_ERANGE, "output over %zu bytes", r->lim->max_output), X_ERR) : X_OK;
    case N_OUT: return eval(r, n->a, &v) && write_value(r, n->line, v) ? X_OK : X_ERR;
    case N_IF:
        if (n->a) {
            if (!eval(r, n->a, &v)) return X_ERR;
            if (!jv_truthy(v)) return n->else_ ? (n->else_->k == N_IF && !n->else_->next && n->else_->a
                                                      ? exec_one(r, n->else_) : exec_list(r, n->else_))
                                               : X_OK;
        }
        return exec_list(r, n->body);
    case N_FOR: return exec_for(r, n);
    case N_SET: return eval(r, n->b, &v) && assign_targets(r, n, v) ? X_OK : X_ERR;
    case N_SETBLOCK: return capture(r, n->body, n->line, &s) && assign(r, n->args[0], jv_str(s)) ? X_OK : X_ERR;
    case N_MACRO: {
        jfunc *fn = ja_alloc(&r->a, sizeof *fn);
        if (!jmem(r, n->line, fn)) return X_ERR;
        fn->kind = JF_MACRO;
        fn->name = n->name;
        fn->macro = n;
        fn->closure = r->scope;
        return frame_set(r, r->scope, n->name, (jv){.t = JV_FUNC, .u.fn = fn}) ? X_OK : (jmem(r, n->line, NULL), X_ERR);
    }
    case N_BREAK: return X_BREAK;
    case N_CONTINUE: return X_CONTINUE;
    case N_FILTERBLOCK: {
        jargs args;
        if (!capture(r, n->body, n->line, &s) || !eval_args(r, n->a, &args) ||
            !jfilter(r, n->a, n->a->name, jv_str(s), &args, &v))
            return X_ERR;
        return write_value(r, n->line, v) ? X_OK : X_ERR;
    }
    default: return jfail(r, n->line, CV_EINTERNAL, "node %d is not a statement", (int)n->k), X_ERR;
    }
}

static int exec_list(jrender *r, const jnode *n) {
    for (; n; n = n->next) {
        int x = exec_one(r, n);
        if (x != X_OK) return x;
    }
    return X_OK;
}

/* ---- calls ---- */

static bool call_macro(jrender *r, const jnode *call, const jfunc *fn, const jargs *a, jv *out) {
    const jnode *m = fn->macro;
    if (!jstep(r, call->line, 1)) return false;
    if (r->depth >= r->lim->max_depth)
        return jfail(r, call->line, CV_ERANGE, "macro calls nested over %d deep", r->lim->max_depth);
    jframe *f = frame_new(r, fn->closure), *saved = r->scope;
    if (!jmem(r, call->line, f)) return false;
    size_t pos = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->kw[i]) {
            size_t k = 0;
            while (k < m->nargs && strcmp(m->args[k]->name, a->kw[i]) != 0) k++;
            if (k == m->nargs)
                return jfail(r, call->line, CV_EINVAL, "macro '%s' has no parameter '%s'", m->name, a->kw[i]);
            if (!frame_set(r, f, m->args[k]->name, a->v[i])) return jmem(r, call->line, NULL);
        } else {
            if (pos >= m->nargs)
                return jfail(r, call->line, CV_EUNSUPPORTED, "unsupported construct: more arguments than macro '%s' takes (varargs)", m->name);
            if (!frame_set(r, f, m->args[pos++]->name, a->v[i])) return jmem(r, call->line, NULL);
        }
    }
    r->scope = f;
    bool ok = true;
    for (size_t k = 0; k < m->nargs && ok; k++) {
        bool given = false;
        for (size_t i = 0; i < f->n && !given; i++) given = strcmp(f->names[i], m->args[k]->name) == 0;
        jv d = jv_undef();
        if (!given && m->defs[k]) ok = eval(r, m->defs[k], &d);
        if (!given && ok) ok = jmem(r, call->line, frame_set(r, f, m->args[k]->name, d) ? f : NULL);
    }
    r->depth++;
    jstr s;
    ok = ok && capture(r, m->body, m->line, &s);
    r->depth--;
    r->scope = saved;
    if (ok) *out = jv_str(s);
    return ok;
}

bool jcall(jrender *r, const jnode *n, jv fn, const jargs *args, jv *out) {
    if (fn.t != JV_FUNC) return jfail(r, n->line, CV_EINVAL, "a '%s' value is not callable", jv_type_name(fn));
    const jfunc *f = fn.u.fn;
    switch (f->kind) {
    case JF_MACRO: return call_macro(r, n, f, args, out);
    case JF_GLOBAL: return jcall_global(r, n, f->name, args, out);
    case JF_METHOD: return jcall_method(r, n, f->self, f->name, args, out);
    case JF_CYCLE: {
        size_t k = 0;
        for (size_t i = 0; i < args->n; i++) k += args->kw[i] == NULL;
        if (k == 0) return jfail(r, n->line, CV_EINVAL, "loop.cycle needs at least one argument");
        *out = jarg(args, (size_t)f->self.u.i % k, NULL, jv_undef());
        return true;
    }
    }
    return false;
}

/* ---- entry points ---- */

cv_jinja_limits cv_jinja_default_limits(void) {
    return (cv_jinja_limits){.max_output = 4u << 20, .max_memory = 64u << 20, .max_steps = 1000000, .max_depth = 32};
}

cv_status cv_jinja_parse(const char *src, size_t len, cv_jinja **out, cv_error *err) {
    *out = NULL;
    cv_jinja *t = calloc(1, sizeof *t);
    if (!t) return cv_errorf(err, CV_ENOMEM, "chat template: out of memory");
    jtoken *toks;
    size_t n;
    cv_status st = jlex(&t->a, src, len, &toks, &n, err);
    if (st == CV_OK) st = jparse(&t->a, toks, n, &t->root, err);
    if (st != CV_OK) {
        cv_jinja_free(t);
        return st;
    }
    *out = t;
    return CV_OK;
}

void cv_jinja_free(cv_jinja *t) {
    if (!t) return;
    ja_free(&t->a);
    free(t);
}

void cv_jinja_out_free(cv_jinja_out *o) {
    free(o->text);
    free(o->data);
    memset(o, 0, sizeof *o);
}

static cv_status finish(jbuf *b, cv_jinja_out *out, cv_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < b->len; i++) n += b->t[i] && (i == 0 || !b->t[i - 1]);
    out->text = malloc(b->len + 1);
    out->data = malloc((n ? n : 1) * sizeof *out->data);
    if (!out->text || !out->data) {
        cv_jinja_out_free(out);
        return cv_errorf(err, CV_ENOMEM, "chat template: out of memory for a %zu-byte prompt", b->len);
    }
    if (b->len) memcpy(out->text, b->p, b->len);
    out->text[b->len] = 0;
    out->len = b->len;
    for (size_t i = 0; i < b->len; i++) {
        if (!b->t[i]) continue;
        if (i == 0 || !b->t[i - 1]) out->data[out->n_data++] = (cv_tok_span){i, 0};
        out->data[out->n_data - 1].len++;
    }
    return CV_OK;
}

cv_status cv_jinja_render(const cv_jinja *t, const cv_jinja_var *vars, size_t n_vars,
                          const cv_jinja_limits *lim, cv_jinja_out *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    cv_jinja_limits dl = cv_jinja_default_limits();
    if (!lim) lim = &dl;
    jbuf b = {.max = lim->max_output};
    jrender r = {.a = {.limit = lim->max_memory}, .lim = lim, .out = &b, .err = err, .st = CV_OK};
    r.globals = r.scope = frame_new(&r, NULL);
    if (!r.globals) {
        r.st = cv_errorf(err, CV_ENOMEM, "chat template: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_vars; i++) {
        jv v;
        const char *why = "", *what = vars[i].name ? vars[i].name : "template variables";
        if (!jv_from_json(&r.a, vars[i].json ? vars[i].json : "", vars[i].data, &v, &why)) {
            r.st = cv_errorf(err, CV_EINVAL, "%s: not JSON the chat template can take: %s", what, why);
            goto done;
        }
        if (!vars[i].name && v.t != JV_DICT) {
            r.st = cv_errorf(err, CV_EINVAL, "%s: not a JSON object", what);
            goto done;
        }
        /* one variable, or each member of the object */
        size_t k = vars[i].name ? 1 : v.u.d->n;
        for (size_t m = 0; m < k; m++) {
            jv key = vars[i].name ? jv_none() : v.u.d->k[m], val = vars[i].name ? v : v.u.d->v[m];
            char *name = (char *)vars[i].name;
            if (!name && (name = ja_alloc(&r.a, key.u.s.len + 1))) memcpy(name, key.u.s.p, key.u.s.len);
            if (!name || (!vars[i].name && memchr(key.u.s.p, 0, key.u.s.len))) {
                r.st = cv_errorf(err, name ? CV_EINVAL : CV_ENOMEM, "%s: a bad variable name", what);
                goto done;
            }
            if (frame_find(r.globals, name)) {
                r.st = cv_errorf(err, CV_EINVAL, "%s: %s given twice", what, name);
                goto done;
            }
            if (!frame_set(&r, r.globals, name, val)) {
                r.st = cv_errorf(err, CV_ENOMEM, "chat template: out of memory");
                goto done;
            }
        }
    }
    int x = exec_list(&r, t->root);
    if (x == X_BREAK || x == X_CONTINUE) jfail(&r, 0, CV_EFORMAT, "break or continue outside a loop");
    if (r.st == CV_OK) r.st = finish(&b, out, err);
done:
    jb_free(&b);
    ja_free(&r.a);
    return r.st;
}
