/* Tokens -> syntax tree, with jinja2's grammar and operator precedence (lowest first):
 * x if c else y, or, and, not, comparisons (chains as `a < b and b < c`), + -, ~,
 * * / // %, **, unary - +, then primary with .attr [index] [a:b:c] (call) and the
 * filter/test suffixes | name(...) and `is [not] name`. Statements: if/elif/else,
 * for ... in ... [if ...] / else, set (name, ns.attr, a, b unpacking, block form),
 * macro, break, continue, filter blocks, and HF's generation block; any other tag is
 * refused by name. An unknown filter or test is refused when it runs, as jinja2 does
 * inside a conditional block (templates guard optional filters that way). */
#include <stdio.h>
#include <string.h>

#include "jinja_int.h"

#define MAX_NEST 200

typedef struct ps {
    jarena *a;
    const jtoken *t;
    size_t n, i;
    int depth;
    cv_error *err;
    cv_status st;
} ps;

static const jtoken *cur(ps *p) { return &p->t[p->i]; }

static void *failp(ps *p, cv_status code, const char *fmt, const char *arg) {
    if (p->st == CV_OK) {
        char what[200];
        snprintf(what, sizeof what, fmt, arg);
        p->st = cv_errorf(p->err, code, "chat template line %d: %s", cur(p)->line, what);
    }
    return NULL;
}

static bool is_name(const jtoken *t, const char *s) {
    return t->k == TK_NAME && t->len == strlen(s) && memcmp(t->p, s, t->len) == 0;
}
static bool is_op(const jtoken *t, const char *s) {
    return t->k == TK_OP && t->len == strlen(s) && memcmp(t->p, s, t->len) == 0;
}
static bool accept_op(ps *p, const char *s) {
    if (!is_op(cur(p), s)) return false;
    p->i++;
    return true;
}
static bool accept_name(ps *p, const char *s) {
    if (!is_name(cur(p), s)) return false;
    p->i++;
    return true;
}

/* A short printable form of the current token for messages. */
static const char *tok_text(ps *p) {
    static __thread char buf[48];
    const jtoken *t = cur(p);
    switch (t->k) {
    case TK_NAME:
    case TK_OP: snprintf(buf, sizeof buf, "'%.*s'", (int)(t->len > 32 ? 32 : t->len), t->p); break;
    case TK_STRING: return "a string";
    case TK_INT:
    case TK_FLOAT: return "a number";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_END: return "'%}'";
    case TK_EOF: return "the end of the template";
    default: return "template text";
    }
    return buf;
}

static bool expect_op(ps *p, const char *s) {
    if (accept_op(p, s)) return true;
    char want[16];
    snprintf(want, sizeof want, "'%s'", s);
    if (p->st == CV_OK) {
        p->st = cv_errorf(p->err, CV_EFORMAT, "chat template line %d: expected %s, found %s", cur(p)->line,
                          want, tok_text(p));
    }
    return false;
}

static jnode *node(ps *p, jnk k) {
    jnode *n = ja_alloc(p->a, sizeof *n);
    if (!n) return failp(p, CV_ENOMEM, "out of memory%s", "");
    n->k = k;
    n->line = cur(p)->line;
    return n;
}

static const char *name_dup(ps *p, const jtoken *t) {
    char *s = ja_alloc(p->a, t->len + 1);
    if (!s) return failp(p, CV_ENOMEM, "out of memory%s", "");
    memcpy(s, t->p, t->len);
    return s;
}

static const char *expect_name(ps *p) {
    if (cur(p)->k != TK_NAME) return failp(p, CV_EFORMAT, "expected a name, found %s", tok_text(p));
    return name_dup(p, &p->t[p->i++]);
}

/* Growable arrays of child nodes during parsing. */
typedef struct nvec {
    jnode **v;
    const char **kw;
    size_t n, cap;
} nvec;

static bool nv_push(ps *p, nvec *v, jnode *x, const char *kw) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 4;
        jnode **nv = ja_alloc(p->a, cap * sizeof *nv);
        const char **nk = ja_alloc(p->a, cap * sizeof *nk);
        if (!nv || !nk) return failp(p, CV_ENOMEM, "out of memory%s", ""), false;
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv), memcpy(nk, v->kw, v->n * sizeof *nk);
        v->v = nv;
        v->kw = nk;
        v->cap = cap;
    }
    v->v[v->n] = x;
    v->kw[v->n++] = kw;
    return true;
}

static jnode *expr(ps *p);
static jnode *or_expr(ps *p);
static jnode *unary(ps *p, bool with_filter);
static jnode *primary(ps *p);
static jnode *postfix(ps *p, jnode *x);

/* (a, b=c, ...) after the '(' was seen; fills n->args/kw/nargs. */
static bool call_args(ps *p, jnode *n) {
    nvec v = {0};
    while (!is_op(cur(p), ")")) {
        if (is_op(cur(p), "*") || is_op(cur(p), "**"))
            return failp(p, CV_EUNSUPPORTED, "unsupported construct: %s in a call's arguments", "*args/**kwargs"), false;
        const char *kw = NULL;
        if (cur(p)->k == TK_NAME && is_op(&p->t[p->i + 1], "=")) {
            if (!(kw = expect_name(p))) return false;
            p->i++;
        } else if (v.n && v.kw[v.n - 1]) {
            return failp(p, CV_EFORMAT, "a positional argument after a keyword argument%s", ""), false;
        }
        jnode *x = expr(p);
        if (!x || !nv_push(p, &v, x, kw)) return false;
        if (!accept_op(p, ",")) break;
    }
    if (!expect_op(p, ")")) return false;
    n->args = v.v;
    n->kw = v.kw;
    n->nargs = v.n;
    return true;
}

static jnode *literal(ps *p, jv v) {
    jnode *n = node(p, E_LIT);
    if (n) n->lit = v;
    return n;
}

static jnode *primary(ps *p) {
    const jtoken *t = cur(p);
    if (++p->depth > MAX_NEST) return failp(p, CV_ERANGE, "expressions nested over %s deep", "200");
    jnode *n = NULL;
    if (t->k == TK_NAME) {
        if (is_name(t, "true") || is_name(t, "True")) n = literal(p, jv_bool(true));
        else if (is_name(t, "false") || is_name(t, "False")) n = literal(p, jv_bool(false));
        else if (is_name(t, "none") || is_name(t, "None")) n = literal(p, jv_none());
        else if ((n = node(p, E_NAME)) && !(n->name = name_dup(p, t))) n = NULL;
        p->i++;
    } else if (t->k == TK_STRING) {
        /* adjacent literals concatenate */
        size_t len = 0, j = p->i;
        for (; p->t[j].k == TK_STRING; j++) len += p->t[j].len;
        char *s = ja_alloc(p->a, len + 1);
        if (!s) return failp(p, CV_ENOMEM, "out of memory%s", "");
        len = 0;
        for (; p->i < j; p->i++) memcpy(s + len, p->t[p->i].p, p->t[p->i].len), len += p->t[p->i].len;
        n = literal(p, jv_str((jstr){s, NULL, len}));
    } else if (t->k == TK_INT || t->k == TK_FLOAT) {
        n = literal(p, t->k == TK_INT ? jv_int(t->i) : jv_float(t->f));
        p->i++;
    } else if (is_op(t, "(")) {
        p->i++;
        if (accept_op(p, ")")) {
            n = node(p, E_TUPLE);
        } else {
            jnode *x = expr(p);
            if (!x) return NULL;
            if (is_op(cur(p), ",")) {
                nvec v = {0};
                if (!nv_push(p, &v, x, NULL)) return NULL;
                while (accept_op(p, ",") && !is_op(cur(p), ")")) {
                    if (!(x = expr(p)) || !nv_push(p, &v, x, NULL)) return NULL;
                }
                if (!(n = node(p, E_TUPLE))) return NULL;
                n->args = v.v;
                n->nargs = v.n;
            } else n = x;
            if (!expect_op(p, ")")) return NULL;
        }
    } else if (is_op(t, "[") || is_op(t, "{")) {
        bool dict = is_op(t, "{");
        const char *close = dict ? "}" : "]";
        p->i++;
        nvec v = {0};
        while (!is_op(cur(p), close)) {
            jnode *x = expr(p);
            if (!x || !nv_push(p, &v, x, NULL)) return NULL;
            if (dict) {
                if (!expect_op(p, ":") || !(x = expr(p)) || !nv_push(p, &v, x, NULL)) return NULL;
            }
            if (!accept_op(p, ",")) break;
        }
        if (!expect_op(p, close) || !(n = node(p, dict ? E_DICT : E_LIST))) return NULL;
        n->args = v.v;
        n->nargs = v.n;
    } else {
        return failp(p, CV_EFORMAT, "expected an expression, found %s", tok_text(p));
    }
    p->depth--;
    return n;
}

static jnode *subscript(ps *p, jnode *obj) {
    jnode *part[3] = {NULL, NULL, NULL};
    int k = 0;
    bool slice = false;
    for (;;) {
        if (!is_op(cur(p), ":") && !is_op(cur(p), "]")) {
            if (!(part[k] = expr(p))) return NULL;
        }
        if (k < 2 && accept_op(p, ":")) {
            slice = true;
            k++;
            continue;
        }
        break;
    }
    if (!expect_op(p, "]")) return NULL;
    jnode *n = node(p, slice ? E_SLICE : E_INDEX);
    if (!n) return NULL;
    n->a = obj;
    if (slice) {
        if (!(n->args = ja_alloc(p->a, 3 * sizeof *n->args))) return failp(p, CV_ENOMEM, "out of memory%s", "");
        memcpy(n->args, part, sizeof part);
        n->nargs = 3;
    } else {
        if (!part[0]) return failp(p, CV_EFORMAT, "an empty subscript%s", "");
        n->b = part[0];
    }
    return n;
}

/* x(args) after the '(' was seen. */
static jnode *call(ps *p, jnode *x) {
    jnode *n = node(p, E_CALL);
    if (!n) return NULL;
    n->a = x;
    return call_args(p, n) ? n : NULL;
}

static jnode *postfix(ps *p, jnode *x) {
    while (x) {
        if (accept_op(p, ".")) {
            jnode *n = node(p, E_ATTR);
            if (!n) return NULL;
            n->a = x;
            if (cur(p)->k == TK_INT) { /* x.0 is x[0] */
                n->k = E_INDEX;
                if (!(n->b = literal(p, jv_int(cur(p)->i)))) return NULL;
                p->i++;
            } else if (!(n->name = expect_name(p))) return NULL;
            x = n;
        } else if (accept_op(p, "[")) {
            x = subscript(p, x);
        } else if (accept_op(p, "(")) {
            x = call(p, x);
        } else break;
    }
    return x;
}

/* name(.name)* [ (args) ] for filters and tests. */
static bool dotted_name(ps *p, jnode *n) {
    const char *s = expect_name(p);
    if (!s) return false;
    if (is_op(cur(p), ".")) return failp(p, CV_EUNSUPPORTED, "unsupported construct: the dotted filter or test name '%s.'", s), false;
    n->name = s;
    return true;
}

static jnode *filter_expr(ps *p, jnode *x) {
    while (x) {
        if (accept_op(p, "|")) {
            jnode *n = node(p, E_FILTER);
            if (!n || !dotted_name(p, n)) return NULL;
            n->a = x;
            if (accept_op(p, "(") && !call_args(p, n)) return NULL;
            x = n;
        } else if (accept_name(p, "is")) {
            jnode *n = node(p, E_TEST);
            if (!n) return NULL;
            n->op = accept_name(p, "not");
            if (!dotted_name(p, n)) return NULL;
            n->a = x;
            const jtoken *t = cur(p);
            if (accept_op(p, "(")) {
                if (!call_args(p, n)) return NULL;
            } else if ((t->k == TK_NAME || t->k == TK_STRING || t->k == TK_INT || t->k == TK_FLOAT ||
                        is_op(t, "[") || is_op(t, "{") || is_op(t, "(")) &&
                       !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
                jnode *arg = postfix(p, primary(p));
                if (!arg) return NULL;
                if (!(n->args = ja_alloc(p->a, sizeof *n->args)) || !(n->kw = ja_alloc(p->a, sizeof *n->kw)))
                    return failp(p, CV_ENOMEM, "out of memory%s", "");
                n->args[0] = arg;
                n->nargs = 1;
            }
            x = n;
        } else if (accept_op(p, "(")) {
            x = call(p, x);
        } else break;
    }
    return x;
}

static jnode *unary(ps *p, bool with_filter) {
    if (++p->depth > MAX_NEST) return failp(p, CV_ERANGE, "expressions nested over %s deep", "200");
    jnode *x;
    if (is_op(cur(p), "-") || is_op(cur(p), "+")) {
        jnode *n = node(p, is_op(cur(p), "-") ? E_NEG : E_POS);
        p->i++;
        if (!n || !(n->a = unary(p, false))) return NULL;
        x = n;
    } else x = primary(p);
    x = postfix(p, x);
    if (with_filter) x = filter_expr(p, x);
    p->depth--;
    return x;
}

static jnode *binary(ps *p, int op, jnode *a, jnode *b) {
    if (!a || !b) return NULL;
    jnode *n = node(p, E_BIN);
    if (!n) return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *pow_expr(ps *p) {
    jnode *x = unary(p, true);
    while (x && accept_op(p, "**")) x = binary(p, OP_POW, x, unary(p, true));
    return x;
}

static jnode *math2(ps *p) {
    jnode *x = pow_expr(p);
    for (;;) {
        int op = is_op(cur(p), "*") ? OP_MUL : is_op(cur(p), "/") ? OP_DIV : is_op(cur(p), "//") ? OP_FDIV
               : is_op(cur(p), "%") ? OP_MOD : 0;
        if (!x || !op) return x;
        p->i++;
        x = binary(p, op, x, pow_expr(p));
    }
}

static jnode *concat(ps *p) {
    jnode *x = math2(p);
    while (x && accept_op(p, "~")) x = binary(p, OP_CAT, x, math2(p));
    return x;
}

static jnode *math1(ps *p) {
    jnode *x = concat(p);
    for (;;) {
        int op = is_op(cur(p), "+") ? OP_ADD : is_op(cur(p), "-") ? OP_SUB : 0;
        if (!x || !op) return x;
        p->i++;
        x = binary(p, op, x, concat(p));
    }
}

static jnode *compare(ps *p) {
    jnode *x = math1(p), *all = NULL, *left = x;
    for (;;) {
        const jtoken *t = cur(p);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT : is_op(t, "<=") ? OP_LE
               : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE : is_name(t, "in") ? OP_IN : 0;
        if (!op && is_name(t, "not") && is_name(&p->t[p->i + 1], "in")) {
            op = OP_NOTIN;
            p->i++;
        }
        if (!left || !op) break;
        p->i++;
        jnode *right = math1(p), *c = node(p, E_CMP);
        if (!right || !c) return NULL;
        c->op = op;
        c->a = left;
        c->b = right;
        if (all) {
            jnode *and = node(p, E_AND);
            if (!and) return NULL;
            and->a = all;
            and->b = c;
            all = and;
        } else all = c;
        left = right;
    }
    return all ? all : x;
}

static jnode *not_expr(ps *p) {
    if (is_name(cur(p), "not")) {
        jnode *n = node(p, E_NOT);
        p->i++;
        if (++p->depth > MAX_NEST) return failp(p, CV_ERANGE, "expressions nested over %s deep", "200");
        if (!n || !(n->a = not_expr(p))) return NULL;
        p->depth--;
        return n;
    }
    return compare(p);
}

static jnode *logic(ps *p, jnk k, const char *word, jnode *(*sub)(ps *)) {
    jnode *x = sub(p);
    while (x && accept_name(p, word)) {
        jnode *n = node(p, k);
        if (!n) return NULL;
        n->a = x;
        if (!(n->b = sub(p))) return NULL;
        x = n;
    }
    return x;
}

static jnode *and_expr(ps *p) { return logic(p, E_AND, "and", not_expr); }
static jnode *or_expr(ps *p) { return logic(p, E_OR, "or", and_expr); }

static jnode *cond_expr(ps *p, bool allow_cond) {
    jnode *x = or_expr(p);
    while (allow_cond && x && accept_name(p, "if")) {
        jnode *n = node(p, E_COND);
        if (!n) return NULL;
        n->a = x;
        if (!(n->b = or_expr(p))) return NULL;
        if (accept_name(p, "else") && !(n->c = cond_expr(p, true))) return NULL;
        x = n;
    }
    return x;
}

static jnode *expr(ps *p) {
    if (++p->depth > MAX_NEST) return failp(p, CV_ERANGE, "expressions nested over %s deep", "200");
    jnode *x = cond_expr(p, true);
    p->depth--;
    return x;
}

/* ---- statements ---- */

static bool block_end(ps *p) {
    if (cur(p)->k == TK_BLOCK_END) {
        p->i++;
        return true;
    }
    failp(p, CV_EFORMAT, "expected '%%}', found %s", tok_text(p));
    return false;
}

static jnode *body(ps *p, const char *const *ends, const char **which);

/* One or more names separated by commas (for and set targets). */
static bool targets(ps *p, jnode *n, bool allow_attr) {
    nvec v = {0};
    do {
        jnode *t = node(p, E_NAME);
        if (!t || !(t->name = expect_name(p))) return false;
        if (allow_attr && accept_op(p, ".")) {
            jnode *a = node(p, E_ATTR);
            if (!a || !(a->name = expect_name(p))) return false;
            a->a = t;
            t = a;
        }
        if (!nv_push(p, &v, t, NULL)) return false;
    } while (accept_op(p, ","));
    n->args = v.v;
    n->nargs = v.n;
    return true;
}

static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_ENDIF[] = {"endif", NULL};
static const char *const END_FOR[] = {"else", "endfor", NULL};
static const char *const END_ENDFOR[] = {"endfor", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_MACRO[] = {"endmacro", NULL};
static const char *const END_FILTER[] = {"endfilter", NULL};
static const char *const END_GEN[] = {"endgeneration", NULL};

static jnode *if_stmt(ps *p) {
    jnode *n = node(p, N_IF);
    const char *which;
    if (!n || !(n->a = expr(p)) || !block_end(p)) return NULL;
    n->body = body(p, END_IF, &which);
    if (p->st != CV_OK) return NULL;
    if (strcmp(which, "elif") == 0) {
        if (!(n->else_ = if_stmt(p))) return NULL;
    } else if (strcmp(which, "else") == 0) {
        if (!block_end(p)) return NULL;
        n->else_ = body(p, END_ENDIF, &which);
        if (p->st != CV_OK || !block_end(p)) return NULL;
    } else if (!block_end(p)) return NULL;
    return n;
}

static jnode *for_stmt(ps *p) {
    jnode *n = node(p, N_FOR);
    const char *which;
    if (!n || !targets(p, n, false)) return NULL;
    if (!accept_name(p, "in")) return failp(p, CV_EFORMAT, "expected 'in', found %s", tok_text(p));
    if (!(n->a = cond_expr(p, false))) return NULL;
    if (accept_name(p, "if") && !(n->b = expr(p))) return NULL;
    if (is_name(cur(p), "recursive")) return failp(p, CV_EUNSUPPORTED, "unsupported construct: %s", "recursive for loops");
    if (!block_end(p)) return NULL;
    n->body = body(p, END_FOR, &which);
    if (p->st != CV_OK) return NULL;
    if (strcmp(which, "else") == 0) {
        if (!block_end(p)) return NULL;
        n->else_ = body(p, END_ENDFOR, &which);
        if (p->st != CV_OK) return NULL;
    }
    return block_end(p) ? n : NULL;
}

static jnode *set_stmt(ps *p) {
    jnode *n = node(p, N_SET);
    const char *which;
    if (!n || !targets(p, n, true)) return NULL;
    if (accept_op(p, "=")) {
        jnode *x = expr(p);
        if (x && is_op(cur(p), ",")) { /* set a, b = 1, 2 */
            nvec v = {0};
            if (!nv_push(p, &v, x, NULL)) return NULL;
            while (accept_op(p, ",")) {
                if (!(x = expr(p)) || !nv_push(p, &v, x, NULL)) return NULL;
            }
            if (!(x = node(p, E_TUPLE))) return NULL;
            x->args = v.v;
            x->nargs = v.n;
        }
        if (!(n->b = x) || !block_end(p)) return NULL;
        return n;
    }
    if (n->nargs != 1 || n->args[0]->k != E_NAME)
        return failp(p, CV_EUNSUPPORTED, "unsupported construct: %s", "a block set of anything but one name");
    if (is_op(cur(p), "|")) return failp(p, CV_EUNSUPPORTED, "unsupported construct: %s", "a filtered block set");
    if (!block_end(p)) return NULL;
    n->k = N_SETBLOCK;
    n->body = body(p, END_SET, &which);
    return p->st == CV_OK && block_end(p) ? n : NULL;
}

static jnode *macro_stmt(ps *p) {
    jnode *n = node(p, N_MACRO);
    const char *which;
    if (!n || !(n->name = expect_name(p)) || !expect_op(p, "(")) return NULL;
    nvec params = {0}, defs = {0};
    while (!is_op(cur(p), ")")) {
        jnode *t = node(p, E_NAME), *d = NULL;
        if (!t || !(t->name = expect_name(p))) return NULL;
        if (accept_op(p, "=") && !(d = expr(p))) return NULL;
        if (!d && defs.n && defs.v[defs.n - 1])
            return failp(p, CV_EFORMAT, "macro parameter '%s' without a default after one with a default", t->name);
        if (!nv_push(p, &params, t, NULL) || !nv_push(p, &defs, d, NULL)) return NULL;
        if (!accept_op(p, ",")) break;
    }
    if (!expect_op(p, ")") || !block_end(p)) return NULL;
    n->args = params.v;
    n->defs = defs.v;
    n->nargs = params.n;
    n->body = body(p, END_MACRO, &which);
    return p->st == CV_OK && block_end(p) ? n : NULL;
}

static jnode *filter_stmt(ps *p) {
    jnode *n = node(p, N_FILTERBLOCK), *f = node(p, E_FILTER);
    const char *which;
    if (!n || !f || !dotted_name(p, f)) return NULL;
    if (accept_op(p, "(") && !call_args(p, f)) return NULL;
    if (is_op(cur(p), "|")) return failp(p, CV_EUNSUPPORTED, "unsupported construct: %s", "a chain of filters in a filter block");
    if (!block_end(p)) return NULL;
    n->a = f;
    n->body = body(p, END_FILTER, &which);
    return p->st == CV_OK && block_end(p) ? n : NULL;
}

/* The statement after "{% name": NULL with p->st set on error; *end set when the
 * tag is one of ends (left for the caller). */
static jnode *statement(ps *p, const char *const *ends, const char **end) {
    const jtoken *t = cur(p);
    if (t->k != TK_NAME) return failp(p, CV_EFORMAT, "expected a statement name, found %s", tok_text(p));
    for (size_t i = 0; ends && ends[i]; i++)
        if (is_name(t, ends[i])) {
            p->i++;
            *end = ends[i];
            return NULL;
        }
    p->i++;
    const char *which;
    if (is_name(t, "if")) return if_stmt(p);
    if (is_name(t, "for")) return for_stmt(p);
    if (is_name(t, "set")) return set_stmt(p);
    if (is_name(t, "macro")) return macro_stmt(p);
    if (is_name(t, "filter")) return filter_stmt(p);
    if (is_name(t, "break") || is_name(t, "continue")) {
        jnode *n = node(p, is_name(t, "break") ? N_BREAK : N_CONTINUE);
        return n && block_end(p) ? n : NULL;
    }
    if (is_name(t, "generation")) { /* HF's assistant-mask marker: renders its body */
        jnode *n = node(p, N_IF);
        if (!n || !block_end(p)) return NULL;
        n->body = body(p, END_GEN, &which);
        return p->st == CV_OK && block_end(p) ? n : NULL;
    }
    p->i--;
    static const char *const ends_known[] = {"elif", "else", "endif", "endfor", "endset", "endmacro",
                                             "endfilter", "endgeneration", NULL};
    for (size_t i = 0; ends_known[i]; i++)
        if (is_name(t, ends_known[i])) return failp(p, CV_EFORMAT, "'%s' without its opening tag", ends_known[i]);
    char what[64];
    snprintf(what, sizeof what, "%.*s", (int)(t->len > 40 ? 40 : t->len), t->p);
    return failp(p, CV_EUNSUPPORTED, "unsupported construct: the '%s' tag", what);
}

static jnode *body(ps *p, const char *const *ends, const char **which) {
    jnode *head = NULL, **tail = &head;
    *which = NULL;
    if (++p->depth > MAX_NEST) return failp(p, CV_ERANGE, "blocks nested over %s deep", "200");
    for (;;) {
        const jtoken *t = cur(p);
        jnode *n = NULL;
        if (t->k == TK_EOF) {
            if (ends) {
                size_t k = 0;
                while (ends[k + 1]) k++; /* the closing tag is listed last */
                return failp(p, CV_EFORMAT, "the template ends inside a block: '%s' missing", ends[k]);
            }
            break;
        }
        if (t->k == TK_TEXT) {
            if ((n = node(p, N_TEXT))) n->lit = jv_str((jstr){t->p, NULL, t->len});
            p->i++;
        } else if (t->k == TK_VAR_BEGIN) {
            p->i++;
            if ((n = node(p, N_OUT)) && (n->a = expr(p)) && cur(p)->k != TK_VAR_END)
                return failp(p, CV_EFORMAT, "expected '}}', found %s", tok_text(p));
            p->i++;
        } else if (t->k == TK_BLOCK_BEGIN) {
            p->i++;
            n = statement(p, ends, which);
            if (*which) {
                p->depth--;
                return head;
            }
        } else return failp(p, CV_EFORMAT, "unexpected %s", tok_text(p));
        if (!n || p->st != CV_OK) return NULL;
        *tail = n;
        tail = &n->next;
    }
    p->depth--;
    return head;
}

cv_status jparse(jarena *a, const jtoken *toks, size_t n, jnode **root, cv_error *err) {
    ps p = {a, toks, n, 0, 0, err, CV_OK};
    const char *which;
    *root = body(&p, NULL, &which);
    return p.st;
}
