/* BPE pre-tokenizers: the split regexes of the supported models, written as
 * hand-made matchers over Unicode categories (libutf8proc). Each matcher gives
 * what the model's regex gives under Oniguruma's leftmost, backtracking search
 * (what Hugging Face tokenizers runs): a rule finds the leftmost match at or after
 * a position, the text between matches becomes a word of its own, and a chain of
 * rules (a Sequence of Split pre-tokenizers in tokenizer.json) splits the words of
 * the previous rule further; a rule never looks past the end of its word.
 *
 * \s is Unicode White_Space, \p{L} the L* categories, \p{N} N*, \p{M} M*, \p{P}
 * P*, \p{S} S*. Bytes that are not valid UTF-8 count as "other" (no class), so
 * any input splits and round-trips.
 */
#include <stdlib.h>
#include <utf8proc.h>

#include "tok_internal.h"
#include "utf8.h"

/* Unit classes. White_Space characters get U_SPACE alone; UPPER (Lu, Lt) and
 * LOWER (Ll) come with U_LETTER, which alone means Lm or Lo. */
enum {
    U_LETTER = 1, U_NUMBER = 2, U_SPACE = 4, U_MARK = 8,
    U_PUNCT = 16, U_SYMBOL = 32, U_UPPER = 64, U_LOWER = 128,
};

typedef struct unit {
    uint32_t cp;   /* NOT_A_CP for an invalid byte */
    size_t off;    /* byte offset in the fragment */
    uint8_t cls;
} unit;

#define NOT_A_CP 0xFFFFFFFFu

typedef struct range {
    uint32_t lo, hi;
} range;

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

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
    if (in_ranges(cp, k_space, N_OF(k_space))) return U_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LT: return U_LETTER | U_UPPER;
    case UTF8PROC_CATEGORY_LL: return U_LETTER | U_LOWER;
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: return U_LETTER;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
        return U_MARK;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return U_NUMBER;
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return U_PUNCT;
    case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC: case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
        return U_SYMBOL;
    default:
        return 0;
    }
}

/* ---- code point classes the regexes spell out (ranges copied from them) ---- */

/* deepseek-llm's \s?[A-Za-zµÀ-ÖØ-öø-ƺ...]+ : the cased letters of several scripts. */
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

/* deepseek-llm's \s?[!-/:-~！-／：-～‘-‟　-。]+ : ASCII and full-width punctuation, quotes. */
static const range k_ds_punct[] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002},
    {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};

/* deepseek-llm and -coder's [一-龥ࠀ-一가-퟿]+ : CJK ideographs and everything from
 * U+0800 up to them, Hangul. */
static const range k_ds_cjk[] = {{0x0800, 0x9FA5}, {0xAC00, 0xD7FF}};

/* deepseek-v3's [一-龥぀-ゟ゠-ヿ]+ : CJK ideographs, hiragana, katakana. */
static const range k_ds3_cjk[] = {{0x3040, 0x309F}, {0x30A0, 0x30FF}, {0x4E00, 0x9FA5}};

static const range k_cr_lf[] = {{0x0A, 0x0A}, {0x0D, 0x0D}};
static const range k_ascii_digits[] = {{0x30, 0x39}};

/* ASCII punctuation that Unicode files as symbols ($+<=>^`|~): falcon's
 * [\p{P}\$\+<=>\^~\|`] is Hugging Face's Punctuation pre-tokenizer, which takes
 * all of ASCII's punctuation. */
static const range k_ascii_symbols[] = {
    {0x24, 0x24}, {0x2B, 0x2B}, {0x3C, 0x3E}, {0x5E, 0x5E}, {0x60, 0x60}, {0x7C, 0x7C},
    {0x7E, 0x7E},
};

/* ---- matchers: each gives the end of the match at p, or p when there is none ---- */

typedef struct rule rule;
typedef size_t (*match_fn)(const rule *r, const unit *u, size_t p, size_t end);

struct rule {
    match_fn match;
    /* Class runs (match_class_run): \s?[class]{min,max}, the class being the units
     * of classes cls plus the code points cps; min 0 counts as 1, max 0 = unbounded. */
    uint8_t cls, space_prefix, min, max;
    const range *cps;
    size_t n_cps;
};

static int is_cr_lf(const unit *u) { return u->cp == '\r' || u->cp == '\n'; }

/* Not one of the classes in mask, nor a space. */
static int is_other(const unit *u, uint8_t mask) { return (u->cls & (mask | U_SPACE)) == 0; }

static size_t run_of(const unit *u, size_t p, size_t end, uint8_t cls) {
    while (p < end && (u[p].cls & cls)) p++;
    return p;
}

static size_t run_other(const unit *u, size_t p, size_t end, uint8_t mask) {
    while (p < end && is_other(&u[p], mask)) p++;
    return p;
}

static size_t run_cr_lf(const unit *u, size_t p, size_t end) {
    while (p < end && is_cr_lf(&u[p])) p++;
    return p;
}

static int in_class(const rule *r, const unit *u) {
    return (u->cls & r->cls) || (r->n_cps && in_ranges(u->cp, r->cps, r->n_cps));
}

static size_t match_class_run(const rule *r, const unit *u, size_t p, size_t end) {
    size_t s = p;
    /* \s? is greedy: it takes the space when the class follows it. */
    if (r->space_prefix && (u[p].cls & U_SPACE) && p + 1 < end && in_class(r, &u[p + 1])) s = p + 1;
    size_t e = s;
    while (e < end && (r->max == 0 || e - s < r->max) && in_class(r, &u[e])) e++;
    return e > s && e - s >= r->min ? e : p;
}

/* \s+(?!\S)|\s+ at p (u[p] is a space): a run followed by more text leaves its
 * last space to the next word, so " word" stays together. */
static size_t match_space_run(const unit *u, size_t p, size_t end) {
    size_t e = run_of(u, p, end, U_SPACE);
    if (e < end && e - p > 1) return e - 1;
    return e;
}

/* \s*[\r\n]+|\s+(?!\S)|\s+ at p (u[p] is a space): \s*[\r\n]+ ends at the run's
 * last CR/LF, if it has one. */
static size_t match_space_lines(const unit *u, size_t p, size_t end) {
    size_t run_end = run_of(u, p, end, U_SPACE), last_crlf = 0;
    for (size_t i = p; i < run_end; i++)
        if (is_cr_lf(&u[i])) last_crlf = i + 1;
    if (last_crlf) return last_crlf;
    return match_space_run(u, p, end);
}

/* (?i:x) folds case as Unicode's simple case folding does: for these letters the
 * ASCII capitals, and U+017F (long s) for s. */
static uint32_t fold_case(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
    return c == 0x17F ? 's' : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive when fold is set. */
static size_t match_contraction(const unit *u, size_t p, size_t end, int fold) {
    if (u[p].cp != '\'' || p + 1 >= end) return p;
    uint32_t a = u[p + 1].cp, b = p + 2 < end ? u[p + 2].cp : 0;
    if (fold) {
        a = fold_case(a);
        b = fold_case(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return p + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return p + 3;
    return p;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Without its last \s+ (falcon, starcoder), a lone space before a non-space is
 * left unmatched, a word of its own all the same. */
static size_t match_gpt2(const rule *r, const unit *u, size_t p, size_t end) {
    (void)r;
    size_t e = match_contraction(u, p, end, 0);
    if (e > p) return e;
    size_t s = (u[p].cp == ' ' && p + 1 < end) ? p + 1 : p;
    if (u[s].cls & U_LETTER) return run_of(u, s, end, U_LETTER);
    if (u[s].cls & U_NUMBER) return run_of(u, s, end, U_NUMBER);
    if (is_other(&u[s], U_LETTER | U_NUMBER)) return run_other(u, s, end, U_LETTER | U_NUMBER);
    return match_space_run(u, p, end);
}

/* Llama 3 (W = \p{L}, D = 3), Qwen2 (\p{L}, 1) and Qwen3.5 ([\p{L}\p{M}], 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?W+|\p{N}{1,D}|
 *  ?[^\s W \p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * The rule's cls is W and its max D. */
static size_t match_llama3(const rule *r, const unit *u, size_t p, size_t end) {
    size_t e = match_contraction(u, p, end, 1);
    if (e > p) return e;
    uint8_t w = r->cls;
    if (u[p].cls & w) return run_of(u, p + 1, end, w);
    if (!is_cr_lf(&u[p]) && !(u[p].cls & (U_LETTER | U_NUMBER)) && p + 1 < end && (u[p + 1].cls & w))
        return run_of(u, p + 2, end, w);
    if (u[p].cls & U_NUMBER) {
        e = p + 1;
        while (e < end && e - p < r->max && (u[e].cls & U_NUMBER)) e++;
        return e;
    }
    uint8_t word = w | U_NUMBER;
    size_t s = (u[p].cp == ' ' && p + 1 < end && is_other(&u[p + 1], word)) ? p + 1 : p;
    if (is_other(&u[s], word)) return run_cr_lf(u, run_other(u, s, end, word), end);
    return match_space_lines(u, p, end);
}

static int is_ascii_letter(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static int is_ascii_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
}

/* DeepSeek V3's last rule:
 * [!-/:-@[-`{-~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+
 * Numbers and other units before no letter match nothing (they are words of
 * their own: the rule before it split digits off already). */
static size_t match_deepseek_v3(const rule *r, const unit *u, size_t p, size_t end) {
    (void)r;
    const uint8_t lm = U_LETTER | U_MARK, ps = U_PUNCT | U_SYMBOL;
    if (is_ascii_punct(u[p].cp) && p + 1 < end && is_ascii_letter(u[p + 1].cp)) {
        size_t e = p + 2;
        while (e < end && is_ascii_letter(u[e].cp)) e++;
        return e;
    }
    if (u[p].cls & lm) return run_of(u, p + 1, end, lm);
    if (!is_cr_lf(&u[p]) && !(u[p].cls & (U_LETTER | ps)) && p + 1 < end && (u[p + 1].cls & lm))
        return run_of(u, p + 2, end, lm);
    size_t s = (u[p].cp == ' ' && p + 1 < end && (u[p + 1].cls & ps)) ? p + 1 : p;
    if (u[s].cls & ps) return run_cr_lf(u, run_of(u, s, end, ps), end);
    if (u[p].cls & U_SPACE) return match_space_lines(u, p, end);
    return p;
}

/* Tekken's case classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}]. */
static int is_upperish(const unit *u) {
    return ((u->cls & U_LETTER) && !(u->cls & U_LOWER)) || (u->cls & U_MARK);
}
static int is_lowerish(const unit *u) {
    return ((u->cls & U_LETTER) && !(u->cls & U_UPPER)) || (u->cls & U_MARK);
}

static size_t run_lowerish(const unit *u, size_t p, size_t end) {
    while (p < end && is_lowerish(&u[p])) p++;
    return p;
}

/* UP*LO+ from s, UP and LO overlapping: the greedy UP* gives back units until one
 * that LO takes, so LO+ starts at the last LO unit of the UP run (or just after the
 * run). Returns s when there is none. */
static size_t tekken_cased(const unit *u, size_t s, size_t end) {
    size_t k = s;
    while (k < end && is_upperish(&u[k])) k++;
    for (;; k--) {
        if (k < end && is_lowerish(&u[k])) return run_lowerish(u, k + 1, end);
        if (k == s) return s;
    }
}

/* UP+LO* from s, or s. */
static size_t tekken_capitals(const unit *u, size_t s, size_t end) {
    if (s >= end || !is_upperish(&u[s])) return s;
    size_t k = s;
    while (k < end && is_upperish(&u[k])) k++;
    return run_lowerish(u, k, end);
}

/* Tekken (Mistral Nemo and later):
 * [^\r\n\p{L}\p{N}]?UP*LO+|[^\r\n\p{L}\p{N}]?UP+LO*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+
 * Each alternative with the optional first unit is tried with it, then without. */
static size_t match_tekken(const rule *r, const unit *u, size_t p, size_t end) {
    (void)r;
    int pre = !is_cr_lf(&u[p]) && !(u[p].cls & (U_LETTER | U_NUMBER));
    size_t (*const alts[2])(const unit *, size_t, size_t) = {tekken_cased, tekken_capitals};
    for (int a = 0; a < 2; a++) {
        size_t e;
        if (pre && p + 1 < end && (e = alts[a](u, p + 1, end)) > p + 1) return e;
        if ((e = alts[a](u, p, end)) > p) return e;
    }
    if (u[p].cls & U_NUMBER) return p + 1;
    const uint8_t word = U_LETTER | U_NUMBER;
    size_t s = (u[p].cp == ' ' && p + 1 < end && is_other(&u[p + 1], word)) ? p + 1 : p;
    if (is_other(&u[s], word)) {
        size_t e = run_other(u, s, end, word);
        while (e < end && (is_cr_lf(&u[e]) || u[e].cp == '/')) e++;
        return e;
    }
    return match_space_lines(u, p, end);
}

/* ---- the rules ---- */

static const rule r_gpt2 = {.match = match_gpt2};
static const rule r_llama3 = {.match = match_llama3, .cls = U_LETTER, .max = 3};
static const rule r_qwen2 = {.match = match_llama3, .cls = U_LETTER, .max = 1};
static const rule r_qwen35 = {.match = match_llama3, .cls = U_LETTER | U_MARK, .max = 1};
static const rule r_deepseek_v3 = {.match = match_deepseek_v3};
static const rule r_tekken = {.match = match_tekken};

#define CLASS_RUN(...) {.match = match_class_run, __VA_ARGS__}
#define CPS(a) .cps = (a), .n_cps = N_OF(a)

static const rule r_cr_lf = CLASS_RUN(CPS(k_cr_lf), .max = 1);                  /* [\r\n] */
static const rule r_number = CLASS_RUN(.cls = U_NUMBER, .max = 1);              /* \p{N} */
static const rule r_numbers3 = CLASS_RUN(.cls = U_NUMBER, .max = 3);            /* \p{N}{1,3} */
static const rule r_numbers = CLASS_RUN(.cls = U_NUMBER);                       /* \p{N}+ */
static const rule r_sp_letters = CLASS_RUN(.cls = U_LETTER, .space_prefix = 1); /* \s?\p{L}+ */
static const rule r_sp_punct = CLASS_RUN(.cls = U_PUNCT, .space_prefix = 1);    /* \s?\p{P}+ */
static const rule r_ds_letters = CLASS_RUN(CPS(k_ds_letters), .space_prefix = 1);
static const rule r_ds_punct = CLASS_RUN(CPS(k_ds_punct), .space_prefix = 1);
static const rule r_ds_cjk = CLASS_RUN(CPS(k_ds_cjk));
static const rule r_ds3_cjk = CLASS_RUN(CPS(k_ds3_cjk));
static const rule r_falcon_punct = CLASS_RUN(.cls = U_PUNCT, CPS(k_ascii_symbols));
static const rule r_ascii_digits3 = CLASS_RUN(CPS(k_ascii_digits), .min = 3, .max = 3);
/* deepseek-llm's \s+$ has its own search (below): it matches only a word's end. */
static const rule r_trailing_space = {.match = NULL};

/* The chains, one per tok_pre, in the order tokenizer.json applies them. */
static const rule *const k_chain_gpt2[] = {&r_gpt2};
static const rule *const k_chain_llama3[] = {&r_llama3};
static const rule *const k_chain_qwen2[] = {&r_qwen2};
static const rule *const k_chain_qwen35[] = {&r_qwen35};
static const rule *const k_chain_deepseek_llm[] = {
    &r_cr_lf, &r_ds_letters, &r_ds_punct, &r_trailing_space, &r_ds_cjk, &r_numbers,
};
static const rule *const k_chain_deepseek_coder[] = {
    &r_cr_lf, &r_sp_letters, &r_sp_punct, &r_ds_cjk, &r_number,
};
static const rule *const k_chain_deepseek_v3[] = {&r_numbers3, &r_ds3_cjk, &r_deepseek_v3};
static const rule *const k_chain_falcon[] = {&r_falcon_punct, &r_gpt2, &r_ascii_digits3};
static const rule *const k_chain_smollm[] = {&r_number, &r_gpt2};
static const rule *const k_chain_tekken[] = {&r_tekken};

/* Leftmost match of r in u[p..end): [*ms, *me), never empty. */
static int find_rule(const rule *r, const unit *u, size_t p, size_t end, size_t *ms, size_t *me) {
    if (r == &r_trailing_space) {
        size_t s = end;
        while (s > p && (u[s - 1].cls & U_SPACE)) s--;
        if (s == end) return 0;
        *ms = s;
        *me = end;
        return 1;
    }
    for (; p < end; p++) {
        size_t e = r->match(r, u, p, end);
        if (e > p) {
            *ms = p;
            *me = e;
            return 1;
        }
    }
    return 0;
}

/* Splits every segment of `in` (unit indices: segment i is [in[i], in[i+1])) by
 * rule r into `out`; returns the new segment count. out has room for n_units + 1. */
static size_t split_by(const rule *r, const unit *u, const size_t *in, size_t n_in, size_t *out) {
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
#define CHAIN(c) chain = (c), n_rules = N_OF(c)
    const rule *const *chain;
    size_t n_rules;
    switch (pre) {
    case TOK_PRE_GPT2: CHAIN(k_chain_gpt2); break;
    case TOK_PRE_LLAMA3: CHAIN(k_chain_llama3); break;
    case TOK_PRE_QWEN2: CHAIN(k_chain_qwen2); break;
    case TOK_PRE_QWEN35: CHAIN(k_chain_qwen35); break;
    case TOK_PRE_DEEPSEEK_LLM: CHAIN(k_chain_deepseek_llm); break;
    case TOK_PRE_DEEPSEEK_CODER: CHAIN(k_chain_deepseek_coder); break;
    case TOK_PRE_DEEPSEEK_V3: CHAIN(k_chain_deepseek_v3); break;
    case TOK_PRE_FALCON: CHAIN(k_chain_falcon); break;
    case TOK_PRE_SMOLLM: CHAIN(k_chain_smollm); break;
    case TOK_PRE_TEKKEN: CHAIN(k_chain_tekken); break;
    default:
        return cv_errorf(err, CV_EINTERNAL, "pre-tokenizer %d has no rules", (int)pre);
    }
#undef CHAIN
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
