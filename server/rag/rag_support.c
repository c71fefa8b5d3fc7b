#include "rag_support.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rag_analyzer.h"
#include "rag_coverage.h"
#include "utf8.h"

#define TERM 64

static atomic_uint_fast64_t verdicts[CV_RAG_SUPPORT_N];

/* ---- a set of terms: words, numbers (digit strings), CJK characters ---- */

typedef struct tset {
    char (*t)[TERM];
    size_t n, cap;
} tset;

static int is_number(const char *t) { return t[0] >= '0' && t[0] <= '9'; }

static int held_by(const char *a, const char *b) {
    if (!strcmp(a, b)) return 1;
    /* words only: a number or a CJK character is itself or nothing */
    unsigned char c = (unsigned char)a[0], d = (unsigned char)b[0];
    if (is_number(a) || is_number(b) || c >= 0xE0 || d >= 0xE0) return 0;
    /* a short word and itself with an ending left ("use" / "us(ed)" stems to "used") */
    size_t la = strlen(a), lb = strlen(b), k = 0;
    while (a[k] && a[k] == b[k]) k++;
    if (k >= 3 && k == (la < lb ? la : lb) && (la > lb ? la : lb) - k <= 2) return 1;
    return cv_rag_similar_word(a, b);
}

static int tset_holds(const tset *s, const char *t) {
    for (size_t i = 0; i < s->n; i++)
        if (held_by(t, s->t[i])) return 1;
    return 0;
}

static int tset_add(tset *s, const char *t, size_t len) {
    if (len == 0 || len >= TERM) return 0;
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->t[i]) == len && !memcmp(s->t[i], t, len)) return 0;
    if (s->n == s->cap) {
        size_t c = s->cap ? 2 * s->cap : 16;
        void *p = realloc(s->t, c * sizeof *s->t);
        if (!p) return -1;
        s->t = p;
        s->cap = c;
    }
    memcpy(s->t[s->n], t, len);
    s->t[s->n++][len] = 0;
    return 0;
}

static int tset_merge(tset *s, const tset *o) {
    for (size_t i = 0; i < o->n; i++)
        if (tset_add(s, o->t[i], strlen(o->t[i]))) return -1;
    return 0;
}

/* ---- the walk: text into numbers, words and CJK characters ---- */

typedef enum tkind { T_NUM, T_WORD, T_CJK } tkind;
typedef int (*tok_fn)(void *user, tkind k, const char *s, size_t n, size_t at, size_t end);

static int cn_digit(uint32_t c) {
    static const uint32_t d[] = {0x3007 /*〇*/, 0x96F6 /*零*/, 0x4E00 /*一*/, 0x4E8C /*二*/, 0x4E09 /*三*/,
                                 0x56DB /*四*/, 0x4E94 /*五*/, 0x516D /*六*/, 0x4E03 /*七*/, 0x516B /*八*/,
                                 0x4E5D /*九*/, 0x4E24 /*两*/};
    static const int v[] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2};
    for (size_t i = 0; i < sizeof d / sizeof *d; i++)
        if (c == d[i]) return v[i];
    return -1;
}

/* 十 百 千 (a section's units) and 万 亿 (whole sections) */
static double cn_unit(uint32_t c, int *big) {
    *big = 0;
    if (c == 0x5341) return 10;
    if (c == 0x767E) return 100;
    if (c == 0x5343) return 1000;
    *big = 1;
    if (c == 0x4E07) return 1e4;
    if (c == 0x4EBF) return 1e8;
    return 0;
}

static int is_digit(uint32_t c) { return c >= '0' && c <= '9'; }

static int decode(const char *s, size_t len, size_t i, uint32_t *c) {
    if (i >= len) return 0;
    int k = cv_utf8_decode((const uint8_t *)s + i, len - i, c);
    if (k <= 0) {
        *c = 0xFFFD;
        return 1;
    }
    return k;
}

/* ASCII digits at s[i]: thousands separators ("1,340") and a decimal part ("4.5"). */
static size_t ascii_number(const char *s, size_t len, size_t i, double *v) {
    char buf[64];
    size_t n = 0, j = i;
    int dot = 0;
    while (j < len && n + 1 < sizeof buf) {
        unsigned char c = (unsigned char)s[j];
        if (is_digit(c)) {
            buf[n++] = s[j++];
        } else if (c == ',' && !dot && j + 3 < len && is_digit((unsigned char)s[j + 1]) &&
                   is_digit((unsigned char)s[j + 2]) && is_digit((unsigned char)s[j + 3]) &&
                   (j + 4 >= len || !is_digit((unsigned char)s[j + 4]))) {
            j++;
        } else if (c == '.' && !dot && j + 1 < len && is_digit((unsigned char)s[j + 1])) {
            dot = 1;
            buf[n++] = s[j++];
        } else {
            break;
        }
    }
    while (j < len && is_digit((unsigned char)s[j])) j++; /* past 63 digits: not read */
    buf[n] = 0;
    *v = strtod(buf, NULL);
    return j;
}

/* A number from s[i]: ASCII digits, Chinese numerals, or both with Chinese units
 * (二千四百, 4.5万, 4万5千). Returns the end, or i when none starts here. */
static size_t number_at(const char *s, size_t len, size_t i, char *out, size_t cap) {
    double total = 0, section = 0, digit = 0;
    int have_digit = 0, units = 0, cn_digits = 0, ascii = 0, decimal = 0;
    /* Digits without units, as written: 二〇一五 and 2〇一五 are 2015, 1,340 is 1340 (a
     * longer run than fits is cut: still digits) */
    char plain[64];
    size_t np = 0, j = i;
    while (j < len) {
        uint32_t c;
        int k = decode(s, len, j, &c);
        int big, d = cn_digit(c);
        double u = cn_unit(c, &big);
        if (is_digit(c)) {
            if (have_digit) break; /* a second number */
            size_t e = ascii_number(s, len, j, &digit);
            for (size_t x = j; x < e; x++) {
                if (s[x] == '.') decimal = 1;
                if (is_digit((unsigned char)s[x]) && np < sizeof plain - 1) plain[np++] = s[x];
            }
            j = e;
            have_digit = ascii = 1;
            continue;
        }
        if (d >= 0) {
            if (ascii && !units && decimal) break; /* "4.5五": two numbers */
            if (np < sizeof plain - 1) plain[np++] = (char)('0' + d);
            digit = d;
            have_digit = 1;
            cn_digits++;
        } else if (u > 0 && (j > i || c == 0x5341 /*十*/)) {
            units = 1;
            if (!big) {
                section += (have_digit ? digit : 1) * u;
            } else {
                total += (section + (have_digit ? digit : 0)) * u;
                section = 0;
            }
            digit = 0;
            have_digit = 0;
        } else if (c == 0x70B9 /*点*/ && cn_digits && !units && !ascii) {
            /* 四点五: a decimal point between Chinese digits */
            uint32_t c2;
            size_t f = j + (size_t)k;
            double frac = 0, scale = 0.1;
            int kf;
            while ((kf = decode(s, len, f, &c2)) > 0 && cn_digit(c2) >= 0) {
                frac += cn_digit(c2) * scale;
                scale /= 10;
                f += (size_t)kf;
            }
            if (f == j + (size_t)k) break;
            digit += frac;
            decimal = 1;
            j = f;
            break;
        } else {
            break;
        }
        j += (size_t)k;
    }
    if (j == i) return i;
    if (!units && !decimal && np) {
        plain[np] = 0;
        const char *p = plain;
        while (p[0] == '0' && p[1]) p++;
        snprintf(out, cap, "%s", p);
        return j;
    }
    double v = total + section + (have_digit ? digit : 0);
    /* fixed notation, never an exponent; a fraction without trailing zeros */
    int n = snprintf(out, cap, v == floor(v) ? "%.0f" : "%.6f", v);
    if (n > 0 && (size_t)n < cap && strchr(out, '.')) {
        while (n > 0 && out[n - 1] == '0') out[--n] = 0;
        if (n > 0 && out[n - 1] == '.') out[--n] = 0;
    }
    return j;
}

static const char *const number_words[] = {
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"};
static const char *const tens_words[] = {"thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};

static int number_word(const char *w, char *out, size_t cap) {
    for (size_t i = 0; i < sizeof number_words / sizeof *number_words; i++)
        if (!strcmp(w, number_words[i])) return snprintf(out, cap, "%zu", i), 1;
    for (size_t i = 0; i < sizeof tens_words / sizeof *tens_words; i++)
        if (!strcmp(w, tens_words[i])) return snprintf(out, cap, "%zu", 30 + 10 * i), 1;
    return 0;
}

/* Letters of a word: ASCII letters and any code point that is neither CJK nor
 * punctuation or a symbol (accented letters: "Tromsø"). */
static int word_cp(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (cv_rag_is_cjk_cp(c) || c == 0xFFFD) return 0;
    return !(c < 0xC0 || (c >= 0x2000 && c <= 0x2BFF) || (c >= 0x3000 && c <= 0x303F) ||
             (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
             (c >= 0xFF5B && c <= 0xFF65));
}

static int walk(const char *s, size_t len, tok_fn fn, void *user) {
    char num[64], w[TERM];
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int k = decode(s, len, i, &c);
        if (is_digit(c) || cn_digit(c) >= 0 || c == 0x5341 /*十*/) {
            size_t e = number_at(s, len, i, num, sizeof num);
            if (e > i) {
                if (fn(user, T_NUM, num, strlen(num), i, e)) return -1;
                i = e;
                continue;
            }
        }
        if (word_cp(c)) {
            size_t n = 0, j = i;
            while (j < len) {
                uint32_t d;
                int kd = decode(s, len, j, &d);
                if (!word_cp(d)) break;
                if (n + (size_t)kd < TERM) {
                    for (int b = 0; b < kd; b++) {
                        char ch = s[j + (size_t)b];
                        w[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
                    }
                }
                j += (size_t)kd;
            }
            w[n] = 0;
            int r = number_word(w, num, sizeof num) ? fn(user, T_NUM, num, strlen(num), i, j)
                                                     : fn(user, T_WORD, w, n, i, j);
            if (r) return -1;
            i = j;
            continue;
        }
        if (cv_rag_is_cjk_cp(c) && fn(user, T_CJK, s + i, (size_t)k, i, i + (size_t)k)) return -1;
        i += (size_t)k;
    }
    return 0;
}

typedef struct numbers_ctx {
    cv_rag_number_fn fn;
    void *user;
} numbers_ctx;

static int numbers_cb(void *user, tkind k, const char *s, size_t n, size_t at, size_t end) {
    (void)at, (void)end;
    numbers_ctx *c = user;
    if (k == T_NUM) c->fn(c->user, s, n);
    return 0;
}

void cv_rag_numbers(const char *text, size_t len, cv_rag_number_fn fn, void *user) {
    numbers_ctx c = {fn, user};
    walk(text, len, numbers_cb, &c);
}

/* ---- terms ---- */

/* Past forms of common irregular verbs, to their base: "Who wrote ..." over "was
 * written by". */
static const char *const irregular[][3] = {
    {"write", "wrote", "written"}, {"begin", "began", "begun"},  {"build", "built", ""},
    {"make", "made", ""},          {"win", "won", ""},           {"hold", "held", ""},
    {"find", "found", ""},         {"take", "took", "taken"},    {"give", "gave", "given"},
    {"run", "ran", ""},            {"go", "went", "gone"},       {"sell", "sold", ""},
    {"buy", "bought", ""},         {"lead", "led", ""},          {"keep", "kept", ""},
    {"grow", "grew", "grown"},     {"draw", "drew", "drawn"},    {"rise", "rose", "risen"},
    {"fall", "fell", "fallen"},    {"tell", "told", ""},         {"say", "said", ""},
    {"see", "saw", "seen"},        {"come", "came", ""},         {"become", "became", ""},
    {"bring", "brought", ""},      {"choose", "chose", "chosen"}, {"speak", "spoke", "spoken"},
    {"fly", "flew", "flown"},      {"know", "knew", "known"},    {"teach", "taught", ""},
    {"pay", "paid", ""},
};

/* The word's base: an irregular past form's verb, else less -ing, -ed, -s ("takes"
 * and "take" are one; "used" and "use" meet in held_by). */
static void stem(char *w) {
    for (size_t i = 0; i < sizeof irregular / sizeof *irregular; i++)
        if ((!strcmp(w, irregular[i][1]) || (irregular[i][2][0] && !strcmp(w, irregular[i][2])))) {
            strcpy(w, irregular[i][0]);
            return;
        }
    static const char *const suffixes[] = {"ing", "ed", "s"};
    size_t n = strlen(w);
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k + 2 && !strcmp(w + n - k, suffixes[i])) {
            w[n - k] = 0;
            return;
        }
    }
}

static int stopword(const char *w) {
    size_t n;
    const char *const *sw = cv_rag_default_stopwords(&n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(w, sw[i])) return 1;
    return 0;
}

/* "the heaviest parcel": a superlative names the kind of answer, as "how heavy" does. */
static int superlative(const char *w) {
    size_t n = strlen(w);
    return n > 6 && !strcmp(w + n - 3, "est");
}

typedef struct terms_ctx {
    tset *out;
    int question;        /* leave out what shapes the question (rag_support.h) */
    int after_which;     /* the previous word was which / what / whose */
    size_t form_end;     /* end of a CJK 多/几/哪: the character right after names the kind of answer */
    size_t skip_end;     /* end of a 时 starting 时间/时候: it and the next are the kind of answer */
    const char *text;
    size_t len;
} terms_ctx;

static int terms_cb(void *user, tkind k, const char *s, size_t n, size_t at, size_t end) {
    terms_ctx *c = user;
    char t[TERM];
    if (n >= TERM) return 0;
    memcpy(t, s, n);
    t[n] = 0;
    if (k == T_NUM) {
        if (c->question && at == c->form_end) { /* 哪一年, 几个: the kind of answer */
            c->form_end = end;
            return 0;
        }
        return tset_add(c->out, t, n);
    }
    if (k == T_WORD) {
        int after = c->after_which;
        c->after_which = !strcmp(t, "which") || !strcmp(t, "what") || !strcmp(t, "whose");
        if (stopword(t) || (c->question && (after || cv_rag_question_word(t) || superlative(t)))) return 0;
        stem(t);
        return tset_add(c->out, t, strlen(t));
    }
    /* CJK */
    int kind_of_answer = c->question && (at == c->form_end || at == c->skip_end);
    c->form_end = c->skip_end = SIZE_MAX;
    if (c->question && (!strcmp(t, "多") || !strcmp(t, "几") || !strcmp(t, "哪"))) c->form_end = end;
    if (c->question && !strcmp(t, "时") &&
        (end + 3 <= c->len && (!memcmp(c->text + end, "间", 3) || !memcmp(c->text + end, "候", 3)))) {
        c->skip_end = end;
        return 0;
    }
    if (kind_of_answer || cv_rag_question_char(t)) return 0;
    return tset_add(c->out, t, n);
}

static int terms(const char *text, size_t len, int question, tset *out) {
    terms_ctx c = {out, question, 0, SIZE_MAX, SIZE_MAX, text, len};
    return walk(text, len, terms_cb, &c);
}

/* ---- the support object ---- */

/* Parts of a question asked together: "How heavy is X, and how long does Y take?",
 * "X是多少？Y需要多长时间？". */
#define MAX_PARTS 8

struct cv_rag_support {
    tset question;   /* every term of the question */
    tset key[MAX_PARTS]; /* each part's key terms */
    size_t n_parts;
    tset *sentences; /* each passage sentence's terms with its passage's title's */
    tset *own;       /* each passage sentence's own terms (what a copy of it holds) */
    size_t n_sentences;
    char *q;         /* the question */
    char *text;      /* the passages' texts, one a line */
    int zh;
};

void cv_rag_support_free(cv_rag_support *s) {
    if (!s) return;
    free(s->question.t);
    for (size_t i = 0; i < MAX_PARTS; i++) free(s->key[i].t);
    for (size_t i = 0; i < s->n_sentences; i++) free(s->sentences[i].t), free(s->own[i].t);
    free(s->sentences);
    free(s->own);
    free(s->q);
    free(s->text);
    free(s);
}

/* Where the sentence starting at i ends (after its end mark), or len. */
static size_t sentence_end(const char *s, size_t len, size_t i) {
    while (i < len) {
        uint32_t c;
        int k = decode(s, len, i, &c);
        size_t next = i + (size_t)k;
        if (c == '\n' || c == '!' || c == '?' || c == ';' || c == 0x3002 || c == 0xFF01 || c == 0xFF1F ||
            c == 0xFF1B)
            return next;
        /* a full stop: followed by a space or the end (not "4.5", not ".orx") */
        if (c == '.' && (next == len || s[next] == ' ' || s[next] == '\n')) return next;
        i = next;
    }
    return len;
}

static int add_passage(cv_rag_support *s, const cv_rag_passage *p) {
    tset title = {0};
    int rc = -1;
    const char *t = p->title && p->title[0] ? p->title : "";
    if (terms(t, strlen(t), 0, &title)) goto out;
    for (size_t i = 0; i < p->len;) {
        size_t e = sentence_end(p->text, p->len, i);
        void *q = realloc(s->sentences, (s->n_sentences + 1) * sizeof *s->sentences);
        if (!q) goto out;
        s->sentences = q;
        if (!(q = realloc(s->own, (s->n_sentences + 1) * sizeof *s->own))) goto out;
        s->own = q;
        tset *st = &s->sentences[s->n_sentences], *own = &s->own[s->n_sentences];
        *st = *own = (tset){0};
        s->n_sentences++;
        if (terms(p->text + i, e - i, 0, own) || tset_merge(st, own) || tset_merge(st, &title)) goto out;
        i = e;
    }
    rc = 0;
out:
    free(title.t);
    return rc;
}

/* Where the part of q starting at i ends (*next: where the next starts): before
 * ", and how/what/..." or " and how/what/...", after ';', '?', '？', '；' with text
 * after them; else at the end. */
static size_t part_end(const char *q, size_t len, size_t i, size_t *next) {
    static const char *const wh[] = {"how ", "what ", "when ", "where ", "who ", "which ", "whose ", "why "};
    for (size_t j = i; j < len; j++) {
        size_t mark = q[j] == ';' || q[j] == '?'                                                ? 1
                      : len - j >= 3 && (!memcmp(q + j, "？", 3) || !memcmp(q + j, "；", 3)) ? 3
                                                                                               : 0;
        if (mark && j + mark < len) return *next = j + mark;
        if (q[j] != ',' && q[j] != ' ') continue;
        size_t at = j + (q[j] == ',');
        if (len - at <= 5 || strncasecmp(q + at, " and ", 5)) continue;
        for (size_t k = 0; k < sizeof wh / sizeof *wh; k++)
            if (len - at - 5 > strlen(wh[k]) && !strncasecmp(q + at + 5, wh[k], strlen(wh[k]))) {
                *next = at + 5;
                return j;
            }
    }
    return *next = len;
}

cv_rag_support *cv_rag_support_new(const char *question, const cv_rag_passage *p, const size_t *kept,
                                   size_t n_kept) {
    cv_rag_support *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    size_t ql = strlen(question);
    s->zh = cv_rag_is_cjk_text(question, ql);
    if (terms(question, ql, 0, &s->question)) goto err;
    for (size_t i = 0, next; i < ql; i = next) {
        /* the last slot takes the rest */
        size_t e = s->n_parts == MAX_PARTS - 1 ? (next = ql) : part_end(question, ql, i, &next);
        tset *k = &s->key[s->n_parts];
        if (terms(question + i, e - i, 1, k)) goto err;
        if (k->n) s->n_parts++; /* "..., and when?": a part with no key term asks nothing to check */
    }
    size_t tl = 0;
    for (size_t i = 0; i < n_kept; i++) tl += p[kept[i]].len + 1;
    if (!(s->q = strdup(question)) || !(s->text = malloc(tl + 1))) goto err;
    s->text[0] = 0;
    for (size_t i = 0, at = 0; i < n_kept; i++) {
        const cv_rag_passage *pp = &p[kept[i]];
        if (add_passage(s, pp)) goto err;
        memcpy(s->text + at, pp->text, pp->len);
        at += pp->len;
        s->text[at++] = '\n';
        s->text[at] = 0;
    }
    return s;
err:
    cv_rag_support_free(s);
    return NULL;
}

const char *cv_rag_support_refusal(const cv_rag_support *s) {
    return s->zh ? CV_RAG_NOT_IN_DOCS_ZH : CV_RAG_NOT_IN_DOCS_EN;
}

static cv_rag_support_verdict verdict(cv_rag_support_verdict v, char *why, size_t cap, const char *what,
                                      const char *term) {
    if (why && cap) snprintf(why, cap, "%s%s", what, term);
    return v;
}

/* The passage sentences the terms of fresh come from, marked in support: the one
 * holding most of them, then the one holding most of the rest, ... (a word common to
 * many sentences must not make them all support the answer). Returns how many. */
static size_t cover(const cv_rag_support *s, const tset *fresh, unsigned char *left, unsigned char *support) {
    size_t n_left = fresh->n, n_support = 0;
    memset(left, 1, fresh->n);
    memset(support, 0, s->n_sentences);
    while (n_left) {
        size_t best = 0, best_j = 0;
        for (size_t j = 0; j < s->n_sentences; j++) {
            size_t h = 0;
            for (size_t i = 0; i < fresh->n; i++)
                h += left[i] && !support[j] && tset_holds(&s->sentences[j], fresh->t[i]);
            if (h > best) best = h, best_j = j;
        }
        if (!best) break;
        support[best_j] = 1;
        n_support++;
        for (size_t i = 0; i < fresh->n; i++)
            if (left[i] && tset_holds(&s->sentences[best_j], fresh->t[i])) left[i] = 0, n_left--;
    }
    return n_support;
}

/* NULL when some part of the question has all its key terms in the marked sentences
 * (a right answer to one part of two is an answer); else the first part's first
 * missing key term. */
static const char *missing_key(const cv_rag_support *s, const unsigned char *support) {
    const char *missing = NULL;
    for (size_t p = 0; p < s->n_parts; p++) {
        const char *m = NULL;
        for (size_t i = 0; i < s->key[p].n && !m; i++) {
            size_t j = 0;
            while (j < s->n_sentences && !(support[j] && tset_holds(&s->sentences[j], s->key[p].t[i]))) j++;
            if (j == s->n_sentences) m = s->key[p].t[i];
        }
        if (!m) return NULL;
        if (!missing) missing = m;
    }
    return missing;
}

/* The terms of text[0..len) that the question does not hold, into fresh. */
static int fresh_terms(const cv_rag_support *s, const char *text, size_t len, tset *all, tset *fresh) {
    if (terms(text, len, 0, all)) return -1;
    for (size_t i = 0; i < all->n; i++)
        if (!tset_holds(&s->question, all->t[i]) && tset_add(fresh, all->t[i], strlen(all->t[i]))) return -1;
    return 0;
}

/* An answer's sentence: text[at..end) */
typedef struct span {
    size_t at, end;
    tset all, fresh;
    int keep;
} span;

static void spans_free(span *sp, size_t n) {
    for (size_t i = 0; sp && i < n; i++) free(sp[i].all.t), free(sp[i].fresh.t);
    free(sp);
}

/* The answer's sentences with terms, their terms and new terms; -1 out of memory. */
static int answer_spans(const cv_rag_support *s, const char *a, size_t len, span **out, size_t *n) {
    *out = NULL;
    *n = 0;
    for (size_t i = 0; i < len;) {
        size_t e = sentence_end(a, len, i);
        span sp = {i, e, {0}, {0}, 0};
        if (fresh_terms(s, a + i, e - i, &sp.all, &sp.fresh)) goto err;
        i = e;
        if (!sp.all.n) continue; /* "-", a line break */
        void *p = realloc(*out, (*n + 1) * sizeof **out);
        if (!p) {
            free(sp.all.t), free(sp.fresh.t);
            goto err;
        }
        *out = p;
        (*out)[(*n)++] = sp;
        continue;
    err:
        free(sp.all.t), free(sp.fresh.t);
        spans_free(*out, *n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* How many passage sentences the answer's sentences copy: an answer sentence holding
 * CV_RAG_COPY_SHARE of a passage sentence's own terms (at least CV_RAG_COPY_MIN of
 * them) copies it, word for word or nearly (Gemma 3 270M drops a 是). */
#define CV_RAG_COPY_MIN 4
#define CV_RAG_COPY_SHARE 0.8
static size_t copied(const cv_rag_support *s, const span *sp, size_t n) {
    size_t c = 0;
    for (size_t j = 0; j < s->n_sentences; j++) {
        const tset *own = &s->own[j];
        if (own->n < CV_RAG_COPY_MIN) continue;
        for (size_t i = 0; i < n; i++) {
            size_t h = 0;
            for (size_t t = 0; t < own->n; t++) h += tset_holds(&sp[i].all, own->t[t]);
            if (h >= CV_RAG_COPY_SHARE * (double)own->n) {
                c++;
                break;
            }
        }
    }
    return c;
}

/* 1 when the answer has two CJK characters side by side that the question does not
 * have side by side and a passage does: a word of the passage made of the question's
 * characters ("澜江" to "青澜大桥横跨哪条江？"), new although each character is not. */
static int passage_pair(const cv_rag_support *s, const char *a, size_t len) {
    size_t prev = SIZE_MAX; /* start of the previous character when it is CJK */
    size_t ql = strlen(s->q), tl = strlen(s->text);
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int k = decode(a, len, i, &c);
        if (!cv_rag_is_cjk_cp(c)) {
            prev = SIZE_MAX;
        } else {
            if (prev != SIZE_MAX) {
                size_t n = i + (size_t)k - prev;
                if (!memmem(s->q, ql, a + prev, n) && memmem(s->text, tl, a + prev, n))
                    return 1;
            }
            prev = i;
        }
        i += (size_t)k;
    }
    return 0;
}

/* The verdict; with spans (may be NULL) the answer's sentences when they were judged
 * one by one (a passage handed back), each marked keep when it answers. */
static cv_rag_support_verdict judge(const cv_rag_support *s, const char *answer, size_t len, char *why, size_t cap,
                                    span **spans, size_t *n_spans) {
    if (why && cap) why[0] = 0;
    if (spans) *spans = NULL, *n_spans = 0;
    while (len && (*answer == ' ' || *answer == '\n' || *answer == '\t')) answer++, len--;
    static const char *const refusals[] = {CV_RAG_NOT_IN_DOCS_EN, CV_RAG_NOT_IN_DOCS_ZH};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(refusals[i]) - 1; /* without its full stop */
        if (len >= n && !memcmp(answer, refusals[i], n)) return CV_RAG_SUPPORTED;
    }
    tset all = {0}, fresh = {0};
    span *sp = NULL;
    size_t n_sp = 0;
    unsigned char *support = s->n_sentences ? calloc(s->n_sentences, 1) : NULL, *left = NULL;
    cv_rag_support_verdict v = CV_RAG_SUPPORTED;
    if ((s->n_sentences && !support) || fresh_terms(s, answer, len, &all, &fresh)) goto out; /* out of memory: not judged */
    /* invented numbers; 0 and 1 stand for articles as often as numbers (一种, 第一) */
    for (size_t i = 0; i < fresh.n; i++) {
        if (!is_number(fresh.t[i]) || !strcmp(fresh.t[i], "0") || !strcmp(fresh.t[i], "1")) continue;
        size_t j = 0;
        while (j < s->n_sentences && !tset_holds(&s->sentences[j], fresh.t[i])) j++;
        if (j == s->n_sentences) {
            v = verdict(CV_RAG_INVENTED_NUMBER, why, cap, "invented ", fresh.t[i]);
            goto out;
        }
    }
    if (!fresh.n) {
        /* Nothing the question lacks: the question said back ("镜月湖里的银鳞鱼多长吗？").
         * A word or two of it is a pick ("Ilse Marwick" to "Ilse Marwick or Tom Bell?"). */
        if (2 * all.n >= s->question.n && all.n && !passage_pair(s, answer, len))
            v = verdict(CV_RAG_QUESTION_ECHO, why, cap, "no new term", "");
        goto out;
    }
    if (!(left = malloc(fresh.n))) goto out;
    if (answer_spans(s, answer, len, &sp, &n_sp)) goto out;
    if (n_sp >= 2 && copied(s, sp, n_sp) >= 2) {
        /* The passage handed back: each sentence judged alone, those that answer kept. */
        size_t kept = 0;
        for (size_t i = 0; i < n_sp; i++) {
            unsigned char *l = sp[i].fresh.n ? malloc(sp[i].fresh.n) : NULL;
            if (sp[i].fresh.n && !l) goto out;
            sp[i].keep = sp[i].fresh.n && cover(s, &sp[i].fresh, l, support) && !missing_key(s, support);
            free(l);
            kept += (size_t)sp[i].keep;
        }
        if (!kept) v = verdict(CV_RAG_PASSAGE_ECHO, why, cap, "no sentence answers", "");
        else if (kept < n_sp) v = verdict(CV_RAG_TRIMMED, why, cap, "sentences kept: ", kept == 1 ? "1" : "2+");
        if (spans) *spans = sp, *n_spans = n_sp, sp = NULL;
        goto out;
    }
    if (!cover(s, &fresh, left, support)) {
        v = verdict(CV_RAG_UNSUPPORTED, why, cap, "no passage sentence holds ", fresh.t[0]);
        goto out;
    }
    const char *missing = missing_key(s, support);
    if (missing) v = verdict(CV_RAG_OFF_QUESTION, why, cap, "missing ", missing);
out:
    spans_free(sp, n_sp);
    free(all.t);
    free(fresh.t);
    free(support);
    free(left);
    return v;
}

cv_rag_support_verdict cv_rag_support_check(const cv_rag_support *s, const char *answer, size_t len, char *why,
                                            size_t cap) {
    return judge(s, answer, len, why, cap, NULL, NULL);
}

size_t cv_rag_support_trim(const cv_rag_support *s, char *answer, size_t len) {
    span *sp;
    size_t n_sp, out = 0;
    size_t skip = 0;
    while (skip < len && (answer[skip] == ' ' || answer[skip] == '\n' || answer[skip] == '\t')) skip++;
    if (judge(s, answer, len, NULL, 0, &sp, &n_sp) != CV_RAG_TRIMMED) {
        spans_free(sp, n_sp);
        return len;
    }
    /* spans are offsets past the leading blanks judge skipped */
    for (size_t i = 0; i < n_sp; i++) {
        if (!sp[i].keep) continue;
        size_t at = skip + sp[i].at, end = skip + sp[i].end;
        if (!out)
            while (at < end && (answer[at] == ' ' || answer[at] == '\n' || answer[at] == '\t')) at++;
        memmove(answer + out, answer + at, end - at);
        out += end - at;
    }
    spans_free(sp, n_sp);
    return out;
}

void cv_rag_support_count(cv_rag_support_verdict v) {
    if ((unsigned)v < CV_RAG_SUPPORT_N) atomic_fetch_add(&verdicts[v], 1);
}

void cv_rag_support_counts(uint64_t out[CV_RAG_SUPPORT_N]) {
    for (int i = 0; i < CV_RAG_SUPPORT_N; i++) out[i] = atomic_load(&verdicts[i]);
}

const char *cv_rag_support_verdict_name(cv_rag_support_verdict v) {
    static const char *const names[CV_RAG_SUPPORT_N] = {"supported",     "invented_number", "unsupported",
                                                        "off_question",  "question_echo",   "passage_echo",
                                                        "trimmed"};
    return (unsigned)v < CV_RAG_SUPPORT_N ? names[v] : "";
}
