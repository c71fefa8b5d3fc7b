/* jinja_int: what the interpreter's modules share (see jinja.h for the contract).
 *   jinja_value.c   values, the per-render arena, strings that carry a data mark per
 *                   byte, equality/order/truth, str() and repr(), tojson, JSON input
 *   jinja_lex.c     template text -> tokens (whitespace control, trim/lstrip_blocks)
 *   jinja_parse.c   tokens -> syntax tree
 *   jinja_render.c  the tree walk: statements, expressions, scopes, limits
 *   jinja_builtins.c filters, tests, string/dict/list methods, global functions
 */
#ifndef CV_JINJA_INT_H
#define CV_JINJA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

/* ---- arena: every value of one render (or the tree of one parse) ---- */
typedef struct jchunk jchunk;
typedef struct jarena {
    jchunk *head;
    size_t used, limit; /* bytes handed out; limit 0: none */
} jarena;
void *ja_alloc(jarena *a, size_t n); /* zeroed; NULL past the limit or out of memory */
void ja_free(jarena *a);

/* ---- values ---- */
typedef enum { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC } jtype;

/* A string: t[i] != 0 where byte i came from data; t NULL when no byte did. */
typedef struct jstr {
    const char *p;
    const uint8_t *t;
    size_t len;
} jstr;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;

typedef struct jv {
    jtype t;
    bool safe; /* a str that is Markup (|safe, |escape): `+` escapes the other side */
    union {
        bool b;
        int64_t i;
        double f;
        jstr s;
        jlist *l;
        jdict *d;
        jfunc *fn;
    } u;
} jv;

struct jlist {
    jv *v;
    size_t n, cap;
    bool tuple; /* repr() as (a, b) */
    bool gen;   /* a generator (map, select, reverse... results): truthy even when
                   empty; no len(), no index, not JSON, never printed; iterating
                   consumes it (items from pos on are left) */
    size_t pos;
};
struct jdict {
    jv *k, *v;
    size_t n, cap;
    bool ns; /* a namespace(): attributes may be set */
};

struct jnode;
struct jframe;
typedef enum { JF_GLOBAL, JF_MACRO, JF_METHOD, JF_CYCLE } jfkind;
struct jfunc {
    jfkind kind;
    const char *name;           /* global or method name */
    const struct jnode *macro;
    struct jframe *closure;     /* where the macro was defined */
    jv self;                    /* a method's object; loop.cycle's items */
};

static inline jv jv_undef(void) { return (jv){.t = JV_UNDEF}; }
static inline jv jv_none(void) { return (jv){.t = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.t = JV_BOOL, .u.b = b}; }
static inline jv jv_int(int64_t i) { return (jv){.t = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.t = JV_FLOAT, .u.f = f}; }
static inline jv jv_str(jstr s) { return (jv){.t = JV_STR, .u.s = s}; }

/* A growable byte buffer with the data marks (malloc'd, bounded). */
typedef struct jbuf {
    char *p;
    uint8_t *t;
    size_t len, cap, max;
    bool any_data, over; /* over: max or memory exceeded, contents cut */
} jbuf;
void jb_put(jbuf *b, const char *s, size_t n, bool data);
void jb_puts(jbuf *b, const char *s); /* template text */
void jb_str(jbuf *b, jstr s);
void jb_free(jbuf *b);
/* The buffer's contents as an arena string (NULL p on failure). */
bool jb_take(jbuf *b, jarena *a, jstr *out);

jstr js_lit(const char *s);                               /* static template text */
bool js_new(jarena *a, const char *p, size_t n, const uint8_t *t, jstr *out); /* copies */
bool js_sub(jarena *a, jstr s, size_t off, size_t n, jstr *out); /* no copy of p */
bool js_eq(jstr a, const char *lit);
int js_cmp(jstr a, jstr b);

jlist *jl_new(jarena *a, size_t cap);
bool jl_push(jarena *a, jlist *l, jv v);
jdict *jd_new(jarena *a);
bool jd_set(jarena *a, jdict *d, jv k, jv v);
jv *jd_get(const jdict *d, jv k);  /* NULL if absent */
jv *jd_gets(const jdict *d, const char *k);

bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
/* Python's ordering for numbers, strings and lists: 0 on success, -1 when the types
 * do not order (*cmp unset). */
int jv_order(jv a, jv b, int *cmp);
const char *jv_type_name(jv v);

/* str(v) and repr(v) written to b (data marks follow the strings they came from). */
void jv_write_str(jbuf *b, jv v);
void jv_write_repr(jbuf *b, jv v);
/* json.dumps(v, ensure_ascii, indent, separators, sort_keys) as HF's tojson does
 * (ensure_ascii false by default there): indent < 0 for none; item_sep/key_sep NULL for Python's defaults. Returns
 * false for a value JSON cannot hold (names its type in *bad). */
bool jv_write_json(jbuf *b, jv v, bool ascii, int indent, const char *item_sep, const char *key_sep,
                   bool sort_keys, const char **bad);
/* Python float repr. */
void jv_fmt_float(double f, char *buf, size_t cap);

/* JSON text -> value; strings marked as data when data. Depth-bounded. */
bool jv_from_json(jarena *a, const char *json, bool data, jv *out, const char **why);

/* UTF-8: number of code points; byte offset of code point i (clamped to len). */
size_t ju_count(const char *p, size_t len);
size_t ju_offset(const char *p, size_t len, size_t cp);
/* Writes cp as UTF-8 at o (1 to 4 bytes); returns the length. */
size_t ju_put(char *o, unsigned cp);

/* ---- tokens and tree ---- */
typedef enum {
    TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP, TK_EOF
} jtk;

typedef struct jtoken {
    jtk k;
    int line;
    const char *p; /* TK_TEXT/TK_STRING: the unescaped bytes; TK_NAME/TK_OP: the text */
    size_t len;
    int64_t i;
    double f;
} jtoken;

/* The template after newline normalisation -> tokens in the arena. */
cv_status jlex(jarena *a, const char *src, size_t len, jtoken **toks, size_t *n, cv_error *err);

typedef enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_FILTERBLOCK,
    /* expressions */
    E_LIT, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT,
    E_BIN, E_AND, E_OR, E_CMP, E_COND, E_LIST, E_TUPLE, E_DICT
} jnk;

/* Binary and comparison operators (jnode.op). */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

typedef struct jnode {
    jnk k;
    int line;
    int op;                 /* operator; E_TEST: negated */
    jv lit;                 /* E_LIT, N_TEXT */
    const char *name;       /* E_NAME, E_ATTR, filter/test/macro name */
    struct jnode *a, *b, *c;
    struct jnode **args;    /* call/filter/test arguments; list/tuple/dict items
                               (dict: key, value, key, value ...); N_FOR/N_SET targets;
                               N_MACRO: parameters (E_NAME) */
    const char **kw;        /* per argument: keyword name or NULL; N_MACRO: unused */
    struct jnode **defs;    /* N_MACRO: per parameter, default or NULL */
    size_t nargs;
    struct jnode *body, *else_; /* statement lists */
    struct jnode *next;
} jnode;

struct cv_jinja {
    jarena a;
    jnode *root;
};

cv_status jparse(jarena *a, const jtoken *toks, size_t n, jnode **root, cv_error *err);

/* ---- rendering ---- */
typedef struct jframe {
    struct jframe *parent;
    const char **names;
    jv *vals;
    size_t n, cap;
} jframe;

typedef struct jrender {
    jarena a;
    const cv_jinja_limits *lim;
    jbuf *out;
    jframe *globals, *scope; /* the render's variables; the innermost frame */
    uint64_t steps;
    int depth;
    cv_error *err;
    cv_status st; /* CV_OK until the first error */
} jrender;

/* Records the first error (line, then the message) and returns false. */
bool jfail(jrender *r, int line, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool jstep(jrender *r, int line, uint64_t n);
bool jmem(jrender *r, int line, const void *p); /* false (with an error) when p is NULL */

/* Evaluated call arguments. */
typedef struct jargs {
    jv *v;
    const char **kw;
    size_t n;
} jargs;
/* The argument at position pos or with keyword name; `dflt` when neither. */
jv jarg(const jargs *a, size_t pos, const char *name, jv dflt);

bool jfilter(jrender *r, const jnode *n, const char *name, jv v, const jargs *args, jv *out);
bool jtest(jrender *r, const jnode *n, const char *name, jv v, const jargs *args, bool *out);
bool jcall_method(jrender *r, const jnode *n, jv self, const char *name, const jargs *args, jv *out);
bool jcall_global(jrender *r, const jnode *n, const char *name, const jargs *args, jv *out);
bool jhas_method(jv self, const char *name);
bool jis_global(const char *name);
bool jhas_filter(const char *name);
bool jhas_test(const char *name);
/* Markup's escape of s (& < > " ' as entities). */
bool jescape(jrender *r, int line, jstr s, jstr *out);
/* The items of a generator not yet consumed; consumes them. */
jlist *jgen_take(jrender *r, jlist *g);
/* Calls a macro or other function value. */
bool jcall(jrender *r, const jnode *n, jv fn, const jargs *args, jv *out);
/* v[key] / v.key as Jinja's sandbox resolves it (undefined when absent). */
jv jgetitem(jrender *r, jv v, jv key);

#endif
