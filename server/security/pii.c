#include "pii.h"

#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_CN_ID, KIND_PHONE, KIND_EMAIL, KIND_CARD, KIND_PATTERN };

static const char *const kind_placeholder[] = {"[CN_ID]", "[PHONE]", "[EMAIL]", "[CARD]"};

typedef struct pattern {
    char placeholder[40];
    regex_t re;
} pattern;

struct cv_pii {
    cv_pii_style style;
    pattern *pats;
    size_t n_pats;
};

typedef struct span {
    size_t start, end;
    int kind;
    size_t pat; /* pattern index when kind == KIND_PATTERN */
} span;

typedef struct span_list {
    span *v;
    size_t n, cap;
} span_list;

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int digit_at(const char *s, size_t n, size_t i) { return i < n && is_digit(s[i]); }

cv_status cv_pii_create(cv_pii_style style, cv_pii **out, cv_error *err) {
    if (style != CV_PII_PLACEHOLDER && style != CV_PII_PARTIAL)
        return cv_errorf(err, CV_EINVAL, "pii: unknown masking style %d", (int)style);
    cv_pii *p = calloc(1, sizeof *p);
    if (!p) return cv_errorf(err, CV_ENOMEM, "pii: out of memory");
    p->style = style;
    *out = p;
    return CV_OK;
}

void cv_pii_free(cv_pii *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_pats; i++) regfree(&p->pats[i].re);
    free(p->pats);
    free(p);
}

cv_status cv_pii_add_pattern(cv_pii *p, const char *name, const char *regex, cv_error *err) {
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > 32)
        return cv_errorf(err, CV_EINVAL, "pii pattern name '%s': length %zu, must be 1..32",
                         name ? name : "", nl);
    for (size_t i = 0; i < nl; i++)
        if (!(is_digit(name[i]) || (name[i] >= 'A' && name[i] <= 'Z') || name[i] == '_'))
            return cv_errorf(err, CV_EINVAL,
                             "pii pattern name '%s': character %zu is not in [A-Z0-9_]", name, i);
    pattern *grown = realloc(p->pats, (p->n_pats + 1) * sizeof *grown);
    if (!grown) return cv_errorf(err, CV_ENOMEM, "pii: out of memory");
    p->pats = grown;
    pattern *pt = &p->pats[p->n_pats];
    int rc = regcomp(&pt->re, regex, REG_EXTENDED);
    if (rc != 0) {
        char why[128];
        regerror(rc, &pt->re, why, sizeof why);
        return cv_errorf(err, CV_EINVAL, "pii pattern %s: bad regex '%s': %s", name, regex, why);
    }
    snprintf(pt->placeholder, sizeof pt->placeholder, "[%s]", name);
    p->n_pats++;
    return CV_OK;
}

int cv_pii_luhn_ok(const char *digits, size_t n) {
    unsigned sum = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned d = (unsigned)(digits[n - 1 - k] - '0');
        if (k & 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    return n > 0 && sum % 10 == 0;
}

static int cn_province_ok(int code) {
    static const int codes[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36,
                                37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62,
                                63, 64, 65, 71, 81, 82, 83, 91};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i] == code) return 1;
    return 0;
}

static int num(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

int cv_pii_cn_id_ok(const char *s) {
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
    for (int i = 0; i < 17; i++)
        if (!is_digit(s[i])) return 0;
    char last = s[17] == 'x' ? 'X' : s[17];
    if (!is_digit(last) && last != 'X') return 0;
    if (!cn_province_ok(num(s, 2))) return 0;
    int y = num(s + 6, 4), m = num(s + 10, 2), d = num(s + 12, 2);
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || y > 2099 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m == 2 && d == 29 && !leap) return 0;
    int sum = 0;
    for (int i = 0; i < 17; i++) sum += (s[i] - '0') * w[i];
    return check[sum % 11] == last;
}

/* Matchers: each returns the match length at s[i] (0 = none). The caller guarantees
 * s[i-1] is not a digit. */

static size_t match_cn_id(const char *s, size_t n, size_t i) {
    if (i + 18 > n) return 0;
    if (i + 18 < n && (is_digit(s[i + 18]) || s[i + 18] == 'X' || s[i + 18] == 'x')) return 0;
    return cv_pii_cn_id_ok(s + i) ? 18 : 0;
}

static size_t match_mobile_body(const char *s, size_t n, size_t i) {
    if (!(digit_at(s, n, i) && s[i] == '1' && digit_at(s, n, i + 1) && s[i + 1] >= '3')) return 0;
    size_t j = i, got = 0;
    /* plain 11 digits, or 3-4-4 with the same separator twice */
    while (got < 11 && digit_at(s, n, j)) j++, got++;
    if (got == 11) return digit_at(s, n, j) ? 0 : j - i;
    if (got != 3 || j >= n || (s[j] != ' ' && s[j] != '-')) return 0;
    char sep = s[j];
    for (int g = 0; g < 2; g++) {
        if (j >= n || s[j] != sep) return 0;
        j++;
        for (int k = 0; k < 4; k++, j++)
            if (!digit_at(s, n, j)) return 0;
    }
    return digit_at(s, n, j) ? 0 : j - i;
}

static size_t match_phone(const char *s, size_t n, size_t i) {
    static const char *const prefixes[] = {"(+86)", "+86", "0086", "86", ""};
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        size_t pl = strlen(prefixes[p]);
        if (i + pl > n || memcmp(s + i, prefixes[p], pl) != 0) continue;
        size_t j = i + pl;
        if (pl && j < n && (s[j] == ' ' || s[j] == '-')) j++;
        size_t m = match_mobile_body(s, n, j);
        if (m) return j + m - i;
    }
    return 0;
}

static size_t match_card(const char *s, size_t n, size_t i) {
    char digits[19];
    size_t nd = 0, j = i, best = 0;
    for (int group = 0;; group++) {
        size_t g = 0;
        while (digit_at(s, n, j + g)) g++;
        if (group == 0 && g >= 13) /* a plain run: all of it or nothing */
            return g <= 19 && cv_pii_luhn_ok(s + j, g) ? g : 0;
        if (nd + g > 19) break;
        memcpy(digits + nd, s + j, g);
        nd += g;
        j += g;
        if (nd >= 13 && cv_pii_luhn_ok(digits, nd)) best = j - i;
        if (g != 4) break;
        if (j + 1 < n && (s[j] == ' ' || s[j] == '-') && is_digit(s[j + 1])) j++;
        else break;
    }
    return best;
}

static int email_local_char(char c) {
    return is_digit(c) || is_alpha(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static size_t match_email(const char *s, size_t n, size_t i) {
    if (s[i] == '.' || (i > 0 && email_local_char(s[i - 1]))) return 0;
    size_t j = i;
    while (j < n && email_local_char(s[j])) j++;
    if (j == i || j >= n || s[j] != '@') return 0;
    j++;
    size_t end = 0, labels = 0;
    for (;;) {
        size_t l = j;
        while (j < n && (is_digit(s[j]) || is_alpha(s[j]) || s[j] == '-')) j++;
        if (j == l) break;
        labels++;
        int alpha_tld = j - l >= 2;
        for (size_t k = l; k < j && alpha_tld; k++) alpha_tld = is_alpha(s[k]);
        if (labels >= 2 && alpha_tld) end = j;
        if (j + 1 < n && s[j] == '.' && (is_alpha(s[j + 1]) || is_digit(s[j + 1]))) j++;
        else break;
    }
    return end ? end - i : 0;
}

static cv_status push_span(span_list *l, size_t start, size_t end, int kind, size_t pat,
                           cv_error *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        span *v = realloc(l->v, cap * sizeof *v);
        if (!v) return cv_errorf(err, CV_ENOMEM, "pii: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (span){start, end, kind, pat};
    return CV_OK;
}

static cv_status find_builtin(const char *s, size_t n, span_list *l, cv_error *err) {
    size_t i = 0;
    while (i < n) {
        size_t m = 0;
        int kind = 0;
        int digit_start = (is_digit(s[i]) || s[i] == '+' || s[i] == '(') &&
                          (i == 0 || !is_digit(s[i - 1]));
        if (digit_start) {
            if ((m = match_cn_id(s, n, i))) kind = KIND_CN_ID;
            else if ((m = match_phone(s, n, i))) kind = KIND_PHONE;
            else if ((m = match_card(s, n, i))) kind = KIND_CARD;
        }
        if (!m && (m = match_email(s, n, i))) kind = KIND_EMAIL;
        if (m) {
            cv_status st = push_span(l, i, i + m, kind, 0, err);
            if (st) return st;
            i += m;
        } else if (is_digit(s[i])) {
            while (i < n && is_digit(s[i])) i++; /* never start inside a digit run */
        } else {
            i++;
        }
    }
    return CV_OK;
}

static cv_status find_patterns(const cv_pii *p, const char *s, size_t n, span_list *l,
                               cv_error *err) {
    if (!p->n_pats) return CV_OK;
    char *z = malloc(n + 1);
    if (!z) return cv_errorf(err, CV_ENOMEM, "pii: out of memory");
    memcpy(z, s, n);
    z[n] = 0;
    cv_status st = CV_OK;
    for (size_t k = 0; k < p->n_pats && !st; k++) {
        size_t off = 0;
        regmatch_t m;
        while (off <= n && regexec(&p->pats[k].re, z + off, 1, &m, off ? REG_NOTBOL : 0) == 0) {
            size_t a = off + (size_t)m.rm_so, b = off + (size_t)m.rm_eo;
            if (b > a && (st = push_span(l, a, b, KIND_PATTERN, k, err))) break;
            off = b > a ? b : a + 1;
        }
    }
    free(z);
    return st;
}

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end > y->end ? -1 : 1;
    return 0;
}

/* Writes the partial mask of s[0..m) of the given kind into o (room for m bytes). */
static void partial_mask(const char *s, size_t m, int kind, char *o) {
    memcpy(o, s, m);
    if (kind == KIND_EMAIL) {
        size_t at = 0;
        while (s[at] != '@') at++;
        for (size_t k = 1; k < at; k++) o[k] = '*';
        return;
    }
    /* Digits only: keep the first `head` and last 4 digits, separators as they are;
     * a phone's country prefix (86 / 0086) is kept too. */
    size_t nd = 0;
    for (size_t k = 0; k < m; k++) nd += is_digit(s[k]) || s[k] == 'X' || s[k] == 'x';
    size_t skip = kind == KIND_PHONE && nd > 11 ? nd - 11 : 0;
    size_t head = (kind == KIND_CARD ? 0 : 3) + skip, total = nd, seen = 0;
    for (size_t k = 0; k < m; k++) {
        if (!(is_digit(s[k]) || s[k] == 'X' || s[k] == 'x')) continue;
        if (seen >= head && seen + 4 < total) o[k] = '*';
        seen++;
    }
}

cv_status cv_pii_mask(const cv_pii *p, const char *text, size_t len, char **out,
                      size_t *n_masked, cv_error *err) {
    span_list l = {0};
    char *o = NULL;
    cv_status st = find_builtin(text, len, &l, err);
    if (!st) st = find_patterns(p, text, len, &l, err);
    if (st) goto err;
    if (l.n) qsort(l.v, l.n, sizeof *l.v, span_cmp);

    /* Placeholders are at most 34 bytes; the output never exceeds len + 34 per span. */
    size_t cap = len + 1 + l.n * 34, w = 0, r = 0, used = 0;
    o = malloc(cap);
    if (!o) {
        st = cv_errorf(err, CV_ENOMEM, "pii: out of memory for %zu bytes", cap);
        goto err;
    }
    for (size_t k = 0; k < l.n; k++) {
        const span *sp = &l.v[k];
        if (sp->start < r) continue; /* overlaps a span already masked */
        memcpy(o + w, text + r, sp->start - r);
        w += sp->start - r;
        size_t m = sp->end - sp->start;
        if (sp->kind != KIND_PATTERN && p->style == CV_PII_PARTIAL) {
            partial_mask(text + sp->start, m, sp->kind, o + w);
            w += m;
        } else {
            const char *ph = sp->kind == KIND_PATTERN ? p->pats[sp->pat].placeholder
                                                      : kind_placeholder[sp->kind];
            size_t pl = strlen(ph);
            memcpy(o + w, ph, pl);
            w += pl;
        }
        r = sp->end;
        used++;
    }
    memcpy(o + w, text + r, len - r);
    w += len - r;
    o[w] = 0;
    free(l.v);
    *out = o;
    if (n_masked) *n_masked = used;
    return CV_OK;
err:
    free(l.v);
    free(o);
    return st;
}
