/* BPE pre-tokenizers: the split regexes of the supported models, written as
 * hand-made matchers over Unicode categories (libutf8proc). Each matcher gives
 * what the model's regex gives under Oniguruma's leftmost, backtracking search
 * (what Hugging Face tokenizers runs): a rule finds the leftmost match at or after
 * a position, the text between matches becomes a word of its own, and a chain of
 * rules (deepseek-llm) splits the words of the previous rule further.
 *
 * \s is Unicode White_Space, \p{L} the L* categories, \p{N} the N* categories.
 * Bytes that are not valid UTF-8 count as "other" (neither letter, number nor
 * space), so any input splits and round-trips.
 */
#include <stdlib.h>
#include <utf8proc.h>

#include "tok_internal.h"
#include "utf8.h"

enum { U_LETTER = 1, U_NUMBER = 2, U_SPACE = 4 };

typedef struct unit {
    uint32_t cp;   /* 0xFFFFFFFF for an invalid byte */
    size_t off;    /* byte offset in the fragment */
    uint8_t cls;
} unit;

#define NOT_A_CP 0xFFFFFFFFu

typedef struct range {
    uint32_t lo, hi;
} range;

static int in_ranges(uint32_t cp, const range *r, size_t n) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Unicode White_Space (what \s matches in Oniguruma and Rust regex). */
static const range k_space[] = {
    {0x09, 0x0D}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
    {0x3000, 0x3000},
};

static uint8_t classify(uint32_t cp) {
    if (cp == NOT_A_CP) return 0;
    if (in_ranges(cp, k_space, sizeof k_space / sizeof k_space[0])) return U_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return U_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return U_NUMBER;
    default:
        return 0;
    }
}

/* ---- the deepseek-llm character classes (ranges copied from its regexes) ---- */

/* \s?[A-Za-zµÀ-ÖØ-öø-ƺ...]+ : the cased letters of several scripts. */
static const range k_ds_letters[] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6},
    {0x00D8, 0x00F6}, {0x00F8, 0x01BA}, {0x01BC, 0x01BF}, {0x01C4, 0x0293},
    {0x0295, 0x02AF}, {0x0370, 0x0373}, {0x0376, 0x0377}, {0x037B, 0x037D},
    {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A}, {0x038C, 0x038C},
    {0x038E, 0x03A1}, {0x03A3, 0x03F5}, {0x03F7, 0x0481}, {0x048A, 0x052F},
    {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115},
    {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D},
    {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

/* \s?[!-/:-~！-／：-～‘-‟　-。]+ : ASCII and full-width punctuation, quotes. */
static const range k_ds_punct[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002},
    {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};

/* [一-龥ࠀ-一가-퟿]+ : CJK ideographs and everything from U+0800 up to them, Hangul. */
static const range k_ds_cjk[] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

#define N_RANGES(a) (sizeof(a) / sizeof((a)[0]))

/* ---- rules ---- */

typedef enum rule {
    R_GPT2,
    R_LLAMA3,
    R_QWEN2,
    R_DS_NEWLINE,
    R_DS_LETTERS,
    R_DS_PUNCT,
    R_DS_TRAILING_SPACE,
    R_DS_CJK,
    R_DS_DIGITS,
} rule;

static int is_cr_lf(const unit *u) { return u->cp == '\r' || u->cp == '\n'; }
static int is_other(const unit *u) { return (u->cls & (U_LETTER | U_NUMBER | U_SPACE)) == 0; }

static size_t run_of(const unit *u, size_t p, size_t end, uint8_t cls) {
    while (p < end && (u[p].cls & cls)) p++;
    return p;
}

static size_t run_other(const unit *u, size_t p, size_t end) {
    while (p < end && is_other(&u[p])) p++;
    return p;
}

/* \s+(?!\S)|\s+ at p (u[p] is a space): a run followed by more text leaves its
 * last space to the next word, so " word" stays together. */
static size_t match_space_run(const unit *u, size_t p, size_t end) {
    size_t e = run_of(u, p, end, U_SPACE);
    if (e < end && e - p > 1) return e - 1;
    return e;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive when fold is set. Returns the end or p. */
static size_t match_contraction(const unit *u, size_t p, size_t end, int fold) {
    if (u[p].cp != '\'' || p + 1 >= end) return p;
    uint32_t a = u[p + 1].cp, b = p + 2 < end ? u[p + 2].cp : 0;
    if (fold) {
        if (a < 128) a = (uint32_t)utf8proc_tolower((utf8proc_int32_t)a);
        if (b < 128) b = (uint32_t)utf8proc_tolower((utf8proc_int32_t)b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return p + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return p + 3;
    return p;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const unit *u, size_t p, size_t end) {
    size_t e = match_contraction(u, p, end, 0);
    if (e > p) return e;
    size_t s = (u[p].cp == ' ' && p + 1 < end) ? p + 1 : p;
    if (u[s].cls & U_LETTER) return run_of(u, s, end, U_LETTER);
    if (u[s].cls & U_NUMBER) return run_of(u, s, end, U_NUMBER);
    if (is_other(&u[s])) return run_other(u, s, end);
    if (u[p].cls & U_SPACE) return match_space_run(u, p, end);
    return p + 1;
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const unit *u, size_t p, size_t end, size_t max_digits) {
    size_t e = match_contraction(u, p, end, 1);
    if (e > p) return e;
    if (u[p].cls & U_LETTER) return run_of(u, p + 1, end, U_LETTER);
    if (!is_cr_lf(&u[p]) && !(u[p].cls & U_NUMBER) && p + 1 < end && (u[p + 1].cls & U_LETTER))
        return run_of(u, p + 2, end, U_LETTER);
    if (u[p].cls & U_NUMBER) {
        e = p + 1;
        while (e < end && e - p < max_digits && (u[e].cls & U_NUMBER)) e++;
        return e;
    }
    size_t s = (u[p].cp == ' ' && p + 1 < end && is_other(&u[p + 1])) ? p + 1 : p;
    if (is_other(&u[s])) {
        e = run_other(u, s, end);
        while (e < end && is_cr_lf(&u[e])) e++;
        return e;
    }
    /* u[p] is a space: \s*[\r\n]+ ends at the run's last CR/LF, if it has one. */
    size_t run_end = run_of(u, p, end, U_SPACE), last_crlf = 0;
    for (size_t i = p; i < run_end; i++)
        if (is_cr_lf(&u[i])) last_crlf = i + 1;
    if (last_crlf) return last_crlf;
    return match_space_run(u, p, end);
}

/* \s?[class]+ : finds the leftmost match at or after p. */
static int find_space_class(const unit *u, size_t p, size_t end, const range *r, size_t nr,
                            size_t *ms, size_t *me) {
    for (; p < end; p++) {
        size_t s;
        if ((u[p].cls & U_SPACE) && p + 1 < end && in_ranges(u[p + 1].cp, r, nr)) s = p + 1;
        else if (in_ranges(u[p].cp, r, nr)) s = p;
        else continue;
        size_t e = s + 1;
        while (e < end && in_ranges(u[e].cp, r, nr)) e++;
        *ms = p;
        *me = e;
        return 1;
    }
    return 0;
}

static int find_class(const unit *u, size_t p, size_t end, const range *r, size_t nr,
                      size_t *ms, size_t *me) {
    for (; p < end; p++) {
        if (!in_ranges(u[p].cp, r, nr)) continue;
        size_t e = p + 1;
        while (e < end && in_ranges(u[e].cp, r, nr)) e++;
        *ms = p;
        *me = e;
        return 1;
    }
    return 0;
}

/* Leftmost match of rule r in u[p..end): [*ms, *me), never empty. */
static int find_rule(rule r, const unit *u, size_t p, size_t end, size_t *ms, size_t *me) {
    if (p >= end) return 0;
    switch (r) {
    case R_GPT2:
        *ms = p;
        *me = match_gpt2(u, p, end);
        return 1;
    case R_LLAMA3:
    case R_QWEN2:
        *ms = p;
        *me = match_llama3(u, p, end, r == R_LLAMA3 ? 3 : 1);
        return 1;
    case R_DS_NEWLINE:
        for (; p < end; p++) {
            if (is_cr_lf(&u[p])) {
                *ms = p;
                *me = p + 1;
                return 1;
            }
        }
        return 0;
    case R_DS_LETTERS:
        return find_space_class(u, p, end, k_ds_letters, N_RANGES(k_ds_letters), ms, me);
    case R_DS_PUNCT:
        return find_space_class(u, p, end, k_ds_punct, N_RANGES(k_ds_punct), ms, me);
    case R_DS_TRAILING_SPACE: {
        /* \s+$: the leftmost start is that of the whole trailing run. */
        size_t s = end;
        while (s > p && (u[s - 1].cls & U_SPACE)) s--;
        if (s == end) return 0;
        *ms = s;
        *me = end;
        return 1;
    }
    case R_DS_CJK:
        return find_class(u, p, end, k_ds_cjk, N_RANGES(k_ds_cjk), ms, me);
    case R_DS_DIGITS:
        for (; p < end; p++) {
            if (u[p].cls & U_NUMBER) {
                *ms = p;
                *me = run_of(u, p + 1, end, U_NUMBER);
                return 1;
            }
        }
        return 0;
    }
    return 0;
}

static const rule k_chain_gpt2[] = {R_GPT2};
static const rule k_chain_llama3[] = {R_LLAMA3};
static const rule k_chain_qwen2[] = {R_QWEN2};
static const rule k_chain_deepseek_llm[] = {
    R_DS_NEWLINE, R_DS_LETTERS, R_DS_PUNCT, R_DS_TRAILING_SPACE, R_DS_CJK, R_DS_DIGITS,
};

/* Splits every segment of `in` (unit indices: segment i is [in[i], in[i+1])) by
 * rule r into `out`; returns the new segment count. out has room for n_units + 1. */
static size_t split_by(rule r, const unit *u, const size_t *in, size_t n_in, size_t *out) {
    size_t n_out = 0;
    out[0] = in[0];
    for (size_t i = 0; i < n_in; i++) {
        size_t p = in[i], end = in[i + 1], ms, me;
        while (p < end && find_rule(r, u, p, end, &ms, &me)) {
            if (ms > p) out[++n_out] = ms;
            out[++n_out] = me;
            p = me;
        }
        if (p < end) out[++n_out] = end;
    }
    return n_out;
}

cv_status tok_pretok_split(tok_pre pre, const char *text, size_t len, tok_words *w,
                           cv_error *err) {
    const rule *chain;
    size_t n_rules;
    switch (pre) {
    case TOK_PRE_GPT2: chain = k_chain_gpt2; n_rules = N_RANGES(k_chain_gpt2); break;
    case TOK_PRE_LLAMA3: chain = k_chain_llama3; n_rules = N_RANGES(k_chain_llama3); break;
    case TOK_PRE_QWEN2: chain = k_chain_qwen2; n_rules = N_RANGES(k_chain_qwen2); break;
    case TOK_PRE_DEEPSEEK_LLM:
        chain = k_chain_deepseek_llm;
        n_rules = N_RANGES(k_chain_deepseek_llm);
        break;
    default:
        return cv_errorf(err, CV_EINTERNAL, "pre-tokenizer %d has no rules", (int)pre);
    }
    w->bounds = NULL;
    w->n_words = 0;
    unit *u = malloc((len + 1) * sizeof *u);
    size_t *a = malloc((len + 2) * sizeof *a);
    size_t *b = malloc((len + 2) * sizeof *b);
    if (!u || !a || !b) {
        free(u), free(a), free(b);
        return cv_errorf(err, CV_ENOMEM, "pre-tokenizing %zu bytes: out of memory", len);
    }
    size_t nu = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = cv_utf8_decode((const uint8_t *)text + i, len - i, &cp);
        if (l == 0) {
            cp = NOT_A_CP;
            l = 1;
        }
        u[nu].cp = cp;
        u[nu].off = i;
        u[nu].cls = classify(cp);
        nu++;
        i += (size_t)l;
    }
    u[nu].off = len;
    size_t n = 0;
    a[0] = 0;
    if (nu > 0) {
        a[1] = nu;
        n = 1;
    }
    for (size_t k = 0; k < n_rules && n > 0; k++) {
        n = split_by(chain[k], u, a, n, b);
        size_t *tmp = a;
        a = b;
        b = tmp;
    }
    /* Unit indices to byte offsets, in place. */
    for (size_t i = 0; i <= n; i++) a[i] = u[a[i]].off;
    free(u);
    free(b);
    w->bounds = a;
    w->n_words = n;
    return CV_OK;
}
