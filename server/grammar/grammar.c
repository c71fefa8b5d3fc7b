#include "grammar.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_util.h"
#include "utf8.h"

/* ---- the builder: rules as lists of alternatives, byte sets interned ---- */

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec;

typedef struct brule {
    const char *name;   /* into the text; NULL for generated rules */
    size_t name_len;
    ivec *alts;
    size_t n_alts, cap_alts;
    bool defined;
    const char *first_use;
} brule;

typedef struct builder {
    brule *rules;
    size_t n_rules, cap_rules;
    int32_t *names;     /* open addressing over named rules: rule id + 1, 0 = empty */
    size_t names_cap;
    uint64_t (*sets)[4];
    size_t n_sets, cap_sets;
    int32_t *set_index; /* open addressing over sets: set id + 1 */
    size_t set_cap;
    cv_gtoken *toks;    /* token terminals (few: a linear search interns them) */
    size_t n_toks, cap_toks;
    size_t n_el;
    const char *text, *end, *p;
    cv_error *err;
    cv_status st;       /* first failure; parsing stops at once */
} builder;


static void where(const builder *b, const char *at, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (const char *q = b->text; q < at && q < b->end; q++) {
        if (*q == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

static bool failf(builder *b, cv_status code, const char *at, const char *what) {
    if (b->st != CV_OK) return false;
    int line, col;
    where(b, at, &line, &col);
    b->st = cv_errorf(b->err, code, "grammar line %d column %d: %s", line, col, what);
    return false;
}

static bool oom(builder *b) {
    if (b->st == CV_OK) b->st = cv_errorf(b->err, CV_ENOMEM, "grammar: out of memory");
    return false;
}

static bool push(builder *b, ivec *v, int32_t x) {
    if (++b->n_el > CV_GRAMMAR_MAX_ELEMENTS)
        return failf(b, CV_ERANGE, b->p, "the grammar compiles to more than 1048576 elements");
    if (!cv_gu_grow((void **)&v->v, &v->cap, v->n + 1, sizeof *v->v)) return oom(b);
    v->v[v->n++] = x;
    return true;
}

static bool push_all(builder *b, ivec *v, const int32_t *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!push(b, v, x[i])) return false;
    return true;
}


static bool rehash_sets(builder *b, size_t cap) {
    int32_t *t = calloc(cap, sizeof *t);
    if (!t) return oom(b);
    for (size_t i = 0; i < b->n_sets; i++) {
        const uint64_t *s = b->sets[i];
        size_t h = cv_gu_mix(s[0] ^ cv_gu_mix(s[1] ^ cv_gu_mix(s[2] ^ cv_gu_mix(s[3])))) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = (int32_t)i + 1;
    }
    free(b->set_index);
    b->set_index = t;
    b->set_cap = cap;
    return true;
}

/* The id of a byte set, added when new; -1 after a failure. */
static int32_t intern_set(builder *b, const uint64_t s[4]) {
    if ((b->n_sets + 1) * 2 > b->set_cap && !rehash_sets(b, b->set_cap ? b->set_cap * 2 : 64)) return -1;
    size_t h = cv_gu_mix(s[0] ^ cv_gu_mix(s[1] ^ cv_gu_mix(s[2] ^ cv_gu_mix(s[3])))) & (b->set_cap - 1);
    for (; b->set_index[h]; h = (h + 1) & (b->set_cap - 1))
        if (!memcmp(b->sets[b->set_index[h] - 1], s, 4 * sizeof *s)) return b->set_index[h] - 1;
    if (!cv_gu_grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, sizeof *b->sets)) return oom(b), -1;
    memcpy(b->sets[b->n_sets], s, 4 * sizeof *s);
    b->set_index[h] = (int32_t)++b->n_sets;
    return (int32_t)b->n_sets - 1;
}

static int32_t byte_range_set(builder *b, unsigned lo, unsigned hi) {
    uint64_t s[4] = {0};
    for (unsigned c = lo; c <= hi; c++) s[c >> 6] |= 1ULL << (c & 63);
    return intern_set(b, s);
}

static int32_t new_rule(builder *b) {
    if (b->n_rules >= (size_t)CV_GRAMMAR_MAX_ELEMENTS)
        return failf(b, CV_ERANGE, b->p, "the grammar has more than 1048576 rules"), -1;
    if (!cv_gu_grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules)) return oom(b), -1;
    memset(&b->rules[b->n_rules], 0, sizeof *b->rules);
    return (int32_t)b->n_rules++;
}

static ivec *new_alt(builder *b, int32_t r) {
    brule *R = &b->rules[r];
    if (!cv_gu_grow((void **)&R->alts, &R->cap_alts, R->n_alts + 1, sizeof *R->alts)) return oom(b), NULL;
    memset(&R->alts[R->n_alts], 0, sizeof *R->alts);
    return &R->alts[R->n_alts++];
}

static size_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return (size_t)cv_gu_mix(h);
}

/* The rule with this name, created (undefined) on first use; -1 after a failure. */
static int32_t named_rule(builder *b, const char *name, size_t len) {
    if ((b->n_rules + 1) * 2 > b->names_cap) {
        size_t cap = b->names_cap ? b->names_cap * 2 : 64;
        int32_t *t = calloc(cap, sizeof *t);
        if (!t) return oom(b), -1;
        for (size_t i = 0; i < b->names_cap; i++) {
            if (!b->names[i]) continue;
            const brule *R = &b->rules[b->names[i] - 1];
            size_t h = name_hash(R->name, R->name_len) & (cap - 1);
            while (t[h]) h = (h + 1) & (cap - 1);
            t[h] = b->names[i];
        }
        free(b->names);
        b->names = t;
        b->names_cap = cap;
    }
    size_t h = name_hash(name, len) & (b->names_cap - 1);
    for (; b->names[h]; h = (h + 1) & (b->names_cap - 1)) {
        const brule *R = &b->rules[b->names[h] - 1];
        if (R->name_len == len && !memcmp(R->name, name, len)) return b->names[h] - 1;
    }
    int32_t r = new_rule(b);
    if (r < 0) return -1;
    b->rules[r].name = name;
    b->rules[r].name_len = len;
    b->rules[r].first_use = name;
    b->names[h] = r + 1;
    return r;
}

/* ---- characters and classes ---- */

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class at b->p (an escape or a UTF-8 character). */
static bool parse_char(builder *b, uint32_t *cp) {
    const char *at = b->p;
    if (b->p >= b->end) return failf(b, CV_EINVAL, at, "unexpected end of text in a literal or class");
    if (*b->p != '\\') {
        int n = cv_utf8_decode((const uint8_t *)b->p, (size_t)(b->end - b->p), cp);
        if (n == 0) return failf(b, CV_EINVAL, at, "invalid UTF-8");
        b->p += n;
        return true;
    }
    if (++b->p >= b->end) return failf(b, CV_EINVAL, at, "unfinished escape");
    char c = *b->p++;
    int digits = 0;
    switch (c) {
    case 'n': *cp = '\n'; return true;
    case 'r': *cp = '\r'; return true;
    case 't': *cp = '\t'; return true;
    case '\\': case '"': case '[': case ']': case '-': case '/': case '^': *cp = (uint32_t)c; return true;
    case 'x': digits = 2; break;
    case 'u': digits = 4; break;
    case 'U': digits = 8; break;
    default: return failf(b, CV_EINVAL, at, "unknown escape (use \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH)");
    }
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = b->p < b->end ? hexval(*b->p) : -1;
        if (h < 0) return failf(b, CV_EINVAL, at, "escape needs more hex digits");
        v = v * 16 + (uint32_t)h;
        b->p++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return failf(b, CV_EINVAL, at, "escape is not a Unicode scalar value");
    *cp = v;
    return true;
}

static bool push_cp(builder *b, ivec *alt, uint32_t cp) {
    char u[4];
    int n = cv_utf8_encode(cp, u);
    for (int i = 0; i < n; i++) {
        int32_t s = byte_range_set(b, (uint8_t)u[i], (uint8_t)u[i]);
        if (s < 0 || !push(b, alt, s)) return false;
    }
    return true;
}

/* Appends to alt the byte sets of the UTF-8 sequences for [lo, hi] (scalar values of
 * one encoded length): splits until every byte position is one contiguous range. */
static bool utf8_seqs(builder *b, int32_t rule, uint32_t lo, uint32_t hi) {
    static const uint32_t max_of_len[] = {0x7F, 0x7FF, 0xFFFF};
    for (int i = 0; i < 3; i++)
        if (lo <= max_of_len[i] && hi > max_of_len[i])
            return utf8_seqs(b, rule, lo, max_of_len[i]) && utf8_seqs(b, rule, max_of_len[i] + 1, hi);
    char l[4], h[4];
    int n = cv_utf8_encode(lo, l);
    cv_utf8_encode(hi, h);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) == (hi & ~m)) continue;
        if (lo & m) return utf8_seqs(b, rule, lo, lo | m) && utf8_seqs(b, rule, (lo | m) + 1, hi);
        if ((hi & m) != m) return utf8_seqs(b, rule, lo, (hi & ~m) - 1) && utf8_seqs(b, rule, hi & ~m, hi);
    }
    ivec *alt = new_alt(b, rule);
    if (!alt) return false;
    for (int i = 0; i < n; i++) {
        int32_t s = byte_range_set(b, (uint8_t)l[i], (uint8_t)h[i]);
        if (s < 0 || !push(b, alt, s)) return false;
    }
    return true;
}

/* A class of code point ranges into alt: one byte set when it is all ASCII, else a
 * generated rule whose alternatives are the ASCII set and the UTF-8 sequences. */
static bool push_class(builder *b, ivec *alt, cv_cprange *r, size_t n, bool negated, const char *at) {
    cv_cprange *out = malloc((n + 1) * sizeof *out);
    if (!out) return oom(b);
    size_t k = cv_cpranges_normalize(r, n, negated, out);
    uint64_t ascii[4] = {0};
    bool any_ascii = false, any_multi = false;
    for (size_t i = 0; i < k; i++) {
        for (uint32_t c = out[i].lo; c <= out[i].hi && c < 0x80; c++) ascii[c >> 6] |= 1ULL << (c & 63), any_ascii = true;
        if (out[i].hi >= 0x80) any_multi = true;
    }
    bool ok = false;
    if (!any_ascii && !any_multi) {
        failf(b, CV_EINVAL, at, "character class matches nothing");
    } else if (!any_multi) {
        int32_t s = intern_set(b, ascii);
        ok = s >= 0 && push(b, alt, s);
    } else {
        int32_t rule = new_rule(b);
        ivec *a = rule < 0 ? NULL : any_ascii ? new_alt(b, rule) : NULL;
        int32_t s = any_ascii && a ? intern_set(b, ascii) : 0;
        ok = rule >= 0 && (!any_ascii || (a && s >= 0 && push(b, a, s)));
        for (size_t i = 0; ok && i < k; i++) {
            uint32_t lo = out[i].lo < 0x80 ? 0x80 : out[i].lo, hi = out[i].hi;
            if (lo > hi) continue;
            if (lo < 0xD800 && hi > 0xDFFF) ok = utf8_seqs(b, rule, lo, 0xD7FF) && utf8_seqs(b, rule, 0xE000, hi);
            else if (lo >= 0xD800 && hi <= 0xDFFF) continue;
            else if (lo >= 0xD800 && lo <= 0xDFFF) ok = utf8_seqs(b, rule, 0xE000, hi);
            else if (hi >= 0xD800 && hi <= 0xDFFF) ok = utf8_seqs(b, rule, lo, 0xD7FF);
            else ok = utf8_seqs(b, rule, lo, hi);
        }
        ok = ok && push(b, alt, CV_GEL_REF(rule));
    }
    free(out);
    return ok;
}

static bool parse_class(builder *b, ivec *alt) {
    const char *at = b->p++;
    bool negated = b->p < b->end && *b->p == '^';
    if (negated) b->p++;
    cv_cprange *r = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    while (ok) {
        if (b->p >= b->end) {
            ok = failf(b, CV_EINVAL, at, "unterminated character class");
            break;
        }
        if (*b->p == ']') {
            b->p++;
            break;
        }
        uint32_t lo, hi;
        ok = parse_char(b, &lo);
        hi = lo;
        if (ok && b->p + 1 < b->end && b->p[0] == '-' && b->p[1] != ']') {
            b->p++;
            ok = parse_char(b, &hi);
            if (ok && hi < lo) ok = failf(b, CV_EINVAL, at, "character range is reversed");
        }
        if (ok && !cv_gu_grow((void **)&r, &cap, n + 1, sizeof *r)) ok = oom(b);
        if (ok) r[n++] = (cv_cprange){lo, hi};
    }
    ok = ok && push_class(b, alt, r, n, negated, at);
    free(r);
    return ok;
}

/* ---- repetition ---- */

/* Replaces alt[from..) (one symbol, x) by x{min,max} (max < 0: unbounded). */
static bool repeat(builder *b, ivec *alt, size_t from, long min, long max) {
    size_t len = alt->n - from;
    int32_t *x = malloc((len ? len : 1) * sizeof *x);
    if (!x) return oom(b);
    if (len) memcpy(x, alt->v + from, len * sizeof *x);
    alt->n = from;
    bool ok = true;
    for (long i = 0; ok && i < min; i++) ok = push_all(b, alt, x, len);
    int32_t tail = -1;
    if (ok && max < 0) {
        /* tail ::= x tail | (empty): right recursion, which the matcher runs in constant
         * stack depth (the reference is the last element of its alternative). */
        tail = new_rule(b);
        ivec *a = tail < 0 ? NULL : new_alt(b, tail);
        ok = a && push_all(b, a, x, len) && push(b, a, CV_GEL_REF(tail)) && new_alt(b, tail);
    }
    for (long i = min; ok && i < max; i++) {
        /* r_k ::= x r_(k-1) | (empty), nested so that at most max - min more come. */
        int32_t r = new_rule(b);
        ivec *a = r < 0 ? NULL : new_alt(b, r);
        ok = a && push_all(b, a, x, len) && (tail < 0 || push(b, a, CV_GEL_REF(tail))) && new_alt(b, r);
        tail = r;
    }
    if (ok && tail >= 0) ok = push(b, alt, CV_GEL_REF(tail));
    free(x);
    return ok;
}

static bool parse_count(builder *b, long *v) {
    if (b->p >= b->end || *b->p < '0' || *b->p > '9') return failf(b, CV_EINVAL, b->p, "expected a number in {}");
    *v = 0;
    while (b->p < b->end && *b->p >= '0' && *b->p <= '9') {
        *v = *v * 10 + (*b->p++ - '0');
        if (*v > CV_GRAMMAR_MAX_REPEAT) return failf(b, CV_ERANGE, b->p, "repetition count over 1024");
    }
    return true;
}

static void skip_space(builder *b, bool newline_ok) {
    while (b->p < b->end) {
        char c = *b->p;
        if (c == ' ' || c == '\t' || c == '\r' || (newline_ok && c == '\n')) {
            b->p++;
        } else if (c == '#') {
            while (b->p < b->end && *b->p != '\n') b->p++;
        } else {
            break;
        }
    }
}

static bool parse_braces(builder *b, ivec *alt, size_t from) {
    const char *at = b->p++;
    long min, max;
    skip_space(b, false);
    if (!parse_count(b, &min)) return false;
    skip_space(b, false);
    max = min;
    if (b->p < b->end && *b->p == ',') {
        b->p++;
        skip_space(b, false);
        max = -1;
        if (b->p < b->end && *b->p != '}' && !parse_count(b, &max)) return false;
        skip_space(b, false);
    }
    if (b->p >= b->end || *b->p != '}') return failf(b, CV_EINVAL, at, "expected } after the repetition count");
    b->p++;
    if (max >= 0 && max < min) return failf(b, CV_EINVAL, at, "repetition {m,n} with n < m");
    return repeat(b, alt, from, min, max);
}

/* ---- token terminals ---- */

/* The index of token terminal (id, text), added when new; -1 after a failure. */
static int32_t intern_token(builder *b, int32_t id, const char *text, size_t len) {
    for (size_t i = 0; i < b->n_toks; i++)
        if (b->toks[i].id == id && b->toks[i].len == len && (!len || !memcmp(b->toks[i].text, text, len)))
            return (int32_t)i;
    if (b->n_toks >= (1u << 20)) return failf(b, CV_ERANGE, b->p, "more than 1048576 token terminals"), -1;
    if (!cv_gu_grow((void **)&b->toks, &b->cap_toks, b->n_toks + 1, sizeof *b->toks)) return oom(b), -1;
    cv_gtoken *t = &b->toks[b->n_toks];
    *t = (cv_gtoken){id, NULL, len};
    if (text && !(t->text = malloc(len + 1))) return oom(b), -1;
    if (text) {
        memcpy(t->text, text, len);
        t->text[len] = 0;
    }
    return (int32_t)b->n_toks++;
}

/* <[N]>, <TEXT> or <"TEXT"> at b->p into alt. */
static bool parse_token(builder *b, ivec *alt) {
    const char *at = b->p;
    char text[CV_GRAMMAR_MAX_TOKEN_TEXT];
    size_t len = 0;
    int32_t id = -1;
    if (b->end - b->p >= 2 && b->p[1] == '[') {
        b->p += 2;
        long v = 0;
        const char *digits = b->p;
        while (b->p < b->end && *b->p >= '0' && *b->p <= '9' && v <= INT32_MAX) v = v * 10 + (*b->p++ - '0');
        if (b->p == digits || v > INT32_MAX) return failf(b, CV_EINVAL, at, "<[...]> needs a token id (0 to 2147483647)");
        if (b->end - b->p < 2 || b->p[0] != ']' || b->p[1] != '>') return failf(b, CV_EINVAL, at, "expected ]> after the token id");
        b->p += 2;
        id = (int32_t)v;
    } else if (b->end - b->p >= 2 && b->p[1] == '"') {
        b->p += 2;
        while (b->p < b->end && *b->p != '"') {
            uint32_t cp;
            char u[4];
            if (!parse_char(b, &cp)) return false;
            int n = cv_utf8_encode(cp, u);
            if (len + (size_t)n >= sizeof text) return failf(b, CV_ERANGE, at, "token text over 255 bytes");
            memcpy(text + len, u, (size_t)n);
            len += (size_t)n;
        }
        if (b->end - b->p < 2 || b->p[1] != '>') return failf(b, CV_EINVAL, at, "expected \"> after the token text");
        b->p += 2;
    } else {
        const char *gt = memchr(b->p, '>', (size_t)(b->end - b->p));
        const char *nl = memchr(b->p, '\n', (size_t)(b->end - b->p));
        if (!gt || (nl && nl < gt)) return failf(b, CV_EINVAL, at, "unterminated token <...>");
        len = (size_t)(gt - b->p) + 1;
        if (len >= sizeof text) return failf(b, CV_ERANGE, at, "token text over 255 bytes");
        memcpy(text, b->p, len);
        b->p = gt + 1;
    }
    if (id < 0 && len == 0) return failf(b, CV_EINVAL, at, "empty token text");
    int32_t k = intern_token(b, id, id < 0 ? text : NULL, id < 0 ? len : 0);
    return k >= 0 && push(b, alt, CV_GEL_TOKEN(k));
}

/* ---- rules ---- */

static bool parse_alternates(builder *b, int32_t rule, bool nested, int depth);

static bool parse_sequence(builder *b, ivec *alt, bool nested, int depth) {
    size_t sym = (size_t)-1; /* start of the last symbol, for a postfix operator */
    for (;;) {
        skip_space(b, nested);
        if (b->p >= b->end) return true;
        const char *at = b->p;
        char c = *b->p;
        if (c == '"') {
            sym = alt->n;
            b->p++;
            while (b->p < b->end && *b->p != '"') {
                uint32_t cp;
                if (!parse_char(b, &cp) || !push_cp(b, alt, cp)) return false;
            }
            if (b->p >= b->end) return failf(b, CV_EINVAL, at, "unterminated string literal");
            b->p++;
        } else if (c == '[') {
            sym = alt->n;
            if (!parse_class(b, alt)) return false;
        } else if (c == '<') {
            sym = alt->n;
            if (!parse_token(b, alt)) return false;
        } else if (c == '.') {
            sym = alt->n;
            b->p++;
            if (!push_class(b, alt, NULL, 0, true, at)) return false;
        } else if (is_name_char(c)) {
            sym = alt->n;
            while (b->p < b->end && is_name_char(*b->p)) b->p++;
            int32_t r = named_rule(b, at, (size_t)(b->p - at));
            if (r < 0 || !push(b, alt, CV_GEL_REF(r))) return false;
        } else if (c == '(') {
            if (depth > 64) return failf(b, CV_ERANGE, at, "groups nested deeper than 64");
            sym = alt->n;
            b->p++;
            int32_t r = new_rule(b);
            if (r < 0 || !parse_alternates(b, r, true, depth + 1)) return false;
            skip_space(b, true);
            if (b->p >= b->end || *b->p != ')') return failf(b, CV_EINVAL, at, "unclosed (");
            b->p++;
            if (!push(b, alt, CV_GEL_REF(r))) return false;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (sym == (size_t)-1) return failf(b, CV_EINVAL, at, "a repetition operator needs something before it");
            bool ok = c == '{' ? parse_braces(b, alt, sym)
                               : (b->p++, repeat(b, alt, sym, c == '+', c == '?' ? 1 : -1));
            if (!ok) return false;
            sym = (size_t)-1;
        } else {
            return true;
        }
    }
}

static bool parse_alternates(builder *b, int32_t rule, bool nested, int depth) {
    for (;;) {
        ivec *alt = new_alt(b, rule);
        if (!alt) return false;
        ivec seq = {0};
        bool ok = parse_sequence(b, &seq, nested, depth);
        /* new_alt may have moved the rule's array while the sequence added rules. */
        b->rules[rule].alts[b->rules[rule].n_alts - 1] = seq;
        if (!ok) return false;
        if (b->p < b->end && *b->p == '|') {
            b->p++;
            skip_space(b, true);
            continue;
        }
        return true;
    }
}

static bool parse_rules(builder *b) {
    skip_space(b, true);
    while (b->p < b->end) {
        const char *name = b->p;
        while (b->p < b->end && is_name_char(*b->p)) b->p++;
        if (b->p == name) return failf(b, CV_EINVAL, name, "expected a rule name");
        size_t len = (size_t)(b->p - name);
        skip_space(b, false);
        if (b->end - b->p < 3 || memcmp(b->p, "::=", 3) != 0) return failf(b, CV_EINVAL, b->p, "expected ::=");
        b->p += 3;
        skip_space(b, true);
        int32_t r = named_rule(b, name, len);
        if (r < 0) return false;
        if (b->rules[r].defined) return failf(b, CV_EINVAL, name, "rule defined twice");
        b->rules[r].defined = true;
        if (!parse_alternates(b, r, false, 0)) return false;
        skip_space(b, false);
        if (b->p < b->end && *b->p != '\n') return failf(b, CV_EINVAL, b->p, "unexpected character");
        skip_space(b, true);
    }
    return true;
}

/* ---- checks and the compiled form ---- */

/* Left recursion would make the matcher expand forever: refused. A rule calls another
 * "on the left" when the callee comes after only nullable elements. Iterative DFS
 * (a hostile grammar can chain a million rules). */
static bool check_left_recursion(builder *b) {
    size_t n = b->n_rules;
    bool *nullable = calloc(n, sizeof *nullable);
    uint8_t *color = calloc(n, 1);
    struct frame {
        int32_t rule;
        size_t alt, el;
    } *stack = malloc(n * sizeof *stack);
    bool ok = nullable && color && stack;
    if (!ok) oom(b);
    for (bool changed = ok; changed;) {
        changed = false;
        for (size_t r = 0; r < n; r++) {
            if (nullable[r]) continue;
            for (size_t a = 0; a < b->rules[r].n_alts && !nullable[r]; a++) {
                const ivec *alt = &b->rules[r].alts[a];
                size_t i = 0;
                while (i < alt->n && CV_GEL_IS_REF(alt->v[i]) && nullable[CV_GEL_RULE(alt->v[i])]) i++;
                if (i == alt->n) nullable[r] = changed = true;
            }
        }
    }
    for (size_t root = 0; ok && root < n; root++) {
        if (color[root]) continue;
        size_t sp = 0;
        stack[sp++] = (struct frame){(int32_t)root, 0, 0};
        color[root] = 1;
        while (ok && sp) {
            struct frame *f = &stack[sp - 1];
            const brule *R = &b->rules[f->rule];
            if (f->alt >= R->n_alts) {
                color[f->rule] = 2;
                sp--;
                continue;
            }
            const ivec *alt = &R->alts[f->alt];
            if (f->el >= alt->n || !CV_GEL_IS_REF(alt->v[f->el])) {
                f->alt++, f->el = 0;
                continue;
            }
            int32_t callee = CV_GEL_RULE(alt->v[f->el]);
            if (nullable[callee]) f->el++;
            else f->alt++, f->el = 0;
            if (color[callee] == 1) {
                /* Blame the innermost named rule on the cycle (groups and repetitions
                 * compile to unnamed ones). */
                const brule *blame = NULL;
                for (size_t i = sp; i-- > 0 && !blame;) {
                    if (b->rules[stack[i].rule].name) blame = &b->rules[stack[i].rule];
                    if (stack[i].rule == callee) break;
                }
                char msg[200];
                snprintf(msg, sizeof msg, "left recursion in rule '%.*s': it can reach itself without "
                         "consuming a character", blame ? (int)(blame->name_len > 64 ? 64 : blame->name_len) : 1,
                         blame ? blame->name : "?");
                ok = failf(b, CV_EINVAL, blame ? blame->name : b->text, msg);
            } else if (!color[callee]) {
                color[callee] = 1;
                stack[sp++] = (struct frame){callee, 0, 0};
            }
        }
    }
    free(nullable);
    free(color);
    free(stack);
    return ok;
}

static bool finish(builder *b, cv_grammar *g) {
    for (size_t r = 0; r < b->n_rules; r++) {
        const brule *R = &b->rules[r];
        if (R->name && !R->defined) {
            char msg[160];
            snprintf(msg, sizeof msg, "rule '%.*s' is used but not defined", (int)(R->name_len > 64 ? 64 : R->name_len), R->name);
            return failf(b, CV_EINVAL, R->first_use, msg);
        }
    }
    int32_t root = -1;
    for (size_t r = 0; r < b->n_rules; r++)
        if (b->rules[r].name && b->rules[r].name_len == 4 && !memcmp(b->rules[r].name, "root", 4)) root = (int32_t)r;
    if (root < 0) return failf(b, CV_EINVAL, b->end, "no rule named root");
    if (!check_left_recursion(b)) return false;
    size_t n_alts = 0;
    for (size_t r = 0; r < b->n_rules; r++) n_alts += b->rules[r].n_alts;
    g->el = malloc((b->n_el + n_alts) * sizeof *g->el);
    g->alt = malloc((n_alts ? n_alts : 1) * sizeof *g->alt);
    g->rule_alt = malloc((b->n_rules + 1) * sizeof *g->rule_alt);
    if (!g->el || !g->alt || !g->rule_alt) return oom(b);
    size_t ne = 0, na = 0;
    for (size_t r = 0; r < b->n_rules; r++) {
        g->rule_alt[r] = (int32_t)na;
        for (size_t a = 0; a < b->rules[r].n_alts; a++) {
            const ivec *alt = &b->rules[r].alts[a];
            g->alt[na++] = (int32_t)ne;
            if (alt->n) memcpy(g->el + ne, alt->v, alt->n * sizeof *alt->v);
            ne += alt->n;
            g->el[ne++] = CV_GEL_END;
        }
    }
    g->rule_alt[b->n_rules] = (int32_t)na;
    g->n_el = (int32_t)ne;
    g->n_rules = (int32_t)b->n_rules;
    g->root = root;
    g->sets = b->sets;
    g->n_sets = (int32_t)b->n_sets;
    b->sets = NULL;
    g->toks = b->toks;
    g->n_toks = (int32_t)b->n_toks;
    b->toks = NULL;
    b->n_toks = 0;
    return true;
}

cv_status cv_grammar_parse(const char *text, size_t len, cv_grammar **out, cv_error *err) {
    *out = NULL;
    if (len > CV_GRAMMAR_MAX_TEXT)
        return cv_errorf(err, CV_ERANGE, "grammar: %zu bytes of text, the limit is %u", len, CV_GRAMMAR_MAX_TEXT);
    builder b = {.text = text, .end = text + len, .p = text, .err = err};
    cv_grammar *g = calloc(1, sizeof *g);
    if (!g) oom(&b);
    else if (parse_rules(&b) && finish(&b, g)) *out = g;
    for (size_t r = 0; r < b.n_rules; r++) {
        for (size_t a = 0; a < b.rules[r].n_alts; a++) free(b.rules[r].alts[a].v);
        free(b.rules[r].alts);
    }
    free(b.rules);
    free(b.names);
    free(b.sets);
    free(b.set_index);
    for (size_t i = 0; i < b.n_toks; i++) free(b.toks[i].text);
    free(b.toks);
    if (!*out) cv_grammar_free(g);
    return b.st;
}

void cv_grammar_free(cv_grammar *g) {
    if (!g) return;
    free(g->el);
    free(g->alt);
    free(g->rule_alt);
    free(g->sets);
    for (int32_t i = 0; i < g->n_toks; i++) free(g->toks[i].text);
    free(g->toks);
    free(g);
}

cv_status cv_grammar_check(const char *text, size_t len, cv_error *err) {
    cv_grammar *g;
    cv_status st = cv_grammar_parse(text, len, &g, err);
    cv_grammar_free(g);
    return st;
}
