#include "rag_analyzer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

struct cv_rag_analyzer {
    char **stop;      /* normalised, distinct */
    size_t n_stop;
    uint32_t *table;  /* open addressing: index + 1 into stop, 0 = empty */
    size_t mask;
};

static const char *const default_stopwords[] = {
    /* English */
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "had",
    "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "me", "my", "no", "not", "of", "on", "or", "our", "she", "should", "so", "such", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "would", "you", "your",
    /* Chinese: single characters also split CJK runs (see the header) */
    "的", "了", "是", "在", "和", "与", "及", "也", "都", "就", "而", "或", "吗", "呢", "吧",
    "啊", "之", "其", "这", "那", "个", "着", "把", "被", "让", "给", "为", "于", "从",
    "对", "向", "以", "请", "问", "我", "你", "他", "她", "它", "谁",
    "什么", "怎么", "怎样", "如何", "哪些", "哪个", "我们", "你们", "他们", "这个", "那个",
    "可以", "一个", "没有", "因为", "所以", "但是", "如果", "是否", "能否", "应该",
};

const char *const *cv_rag_default_stopwords(size_t *n) {
    *n = sizeof default_stopwords / sizeof default_stopwords[0];
    return default_stopwords;
}

const char *const *cv_rag_analyzer_stopwords(const cv_rag_analyzer *a, size_t *n) {
    *n = a->n_stop;
    return (const char *const *)a->stop;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int is_stopword(const cv_rag_analyzer *a, const char *t, size_t n) {
    if (!a->n_stop) return 0;
    for (size_t i = hash_bytes(t, n) & a->mask;; i = (i + 1) & a->mask) {
        uint32_t k = a->table[i];
        if (!k) return 0;
        const char *s = a->stop[k - 1];
        if (strlen(s) == n && memcmp(s, t, n) == 0) return 1;
    }
}

static int is_word_cp(int32_t c) {
    utf8proc_category_t cat = utf8proc_category(c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NO;
}

static int is_cjk_cp(int32_t c) {
    int in_block = (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
                   (c >= 0x20000 && c <= 0x323AF) || (c >= 0xF900 && c <= 0xFAFF) ||
                   (c >= 0x3040 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) ||
                   (c >= 0xAC00 && c <= 0xD7AF);
    return in_block && utf8proc_category(c) <= UTF8PROC_CATEGORY_LO &&
           utf8proc_category(c) >= UTF8PROC_CATEGORY_LU;
}

/* Appends the folded form of c to buf[*n..cap); all or nothing per code point. */
static void fold_cp(int32_t c, char *buf, size_t *n, size_t cap) {
    if (c < 0x80) {
        if (*n < cap) buf[(*n)++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        return;
    }
    utf8proc_int32_t out[8];
    int last_bound = 0;
    utf8proc_ssize_t k = utf8proc_decompose_char(
        c, out, 8, UTF8PROC_DECOMPOSE | UTF8PROC_CASEFOLD | UTF8PROC_COMPAT | UTF8PROC_STRIPMARK,
        &last_bound);
    if (k < 0 || k > 8) { /* no decomposition known: keep the code point */
        out[0] = c;
        k = 1;
    }
    for (utf8proc_ssize_t i = 0; i < k; i++) {
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t m = utf8proc_encode_char(out[i], enc);
        if (*n + (size_t)m > cap) return;
        memcpy(buf + *n, enc, (size_t)m);
        *n += (size_t)m;
    }
}

void cv_rag_analyzer_free(cv_rag_analyzer *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_stop; i++) free(a->stop[i]);
    free(a->stop);
    free(a->table);
    free(a);
}

cv_status cv_rag_analyzer_create(const char *const *stopwords, size_t n,
                                 cv_rag_analyzer **out, cv_error *err) {
    if (!stopwords) stopwords = cv_rag_default_stopwords(&n);
    cv_rag_analyzer *a = calloc(1, sizeof *a);
    size_t cap = 16;
    while (cap < 2 * n + 2) cap *= 2;
    if (!a || !(a->stop = calloc(n ? n : 1, sizeof *a->stop)) ||
        !(a->table = calloc(cap, sizeof *a->table)))
        goto oom;
    a->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const char *w = stopwords[i];
        size_t wl = strlen(w), m = 0;
        char buf[CV_RAG_MAX_TERM];
        for (size_t p = 0; p < wl;) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)w + p,
                                                  (utf8proc_ssize_t)(wl - p), &c);
            if (k < 0) {
                cv_rag_analyzer_free(a);
                return cv_errorf(err, CV_EINVAL, "stopword %zu: invalid UTF-8 at byte %zu", i, p);
            }
            fold_cp(c, buf, &m, sizeof buf);
            p += (size_t)k;
        }
        if (m == 0 || is_stopword(a, buf, m)) continue;
        if (!(a->stop[a->n_stop] = malloc(m + 1))) goto oom;
        memcpy(a->stop[a->n_stop], buf, m);
        a->stop[a->n_stop][m] = 0;
        a->n_stop++;
        size_t h = hash_bytes(buf, m) & a->mask;
        while (a->table[h]) h = (h + 1) & a->mask;
        a->table[h] = (uint32_t)a->n_stop;
    }
    *out = a;
    return CV_OK;
oom:
    cv_rag_analyzer_free(a);
    return cv_errorf(err, CV_ENOMEM, "analyzer: out of memory for %zu stopwords", n);
}

size_t cv_rag_utf8_check(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if ((uint8_t)s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

typedef struct state {
    const cv_rag_analyzer *a;
    cv_rag_term_fn fn;
    void *user;
    char word[CV_RAG_MAX_TERM];
    size_t word_len;
    char prev[4];      /* previous CJK character of the current run */
    size_t prev_len, run;
} state;

static void emit(state *s, const char *t, size_t n) {
    if (!is_stopword(s->a, t, n)) s->fn(s->user, t, n);
}

static void flush_word(state *s) {
    if (s->word_len) emit(s, s->word, s->word_len);
    s->word_len = 0;
}

static void flush_run(state *s) {
    if (s->run == 1) emit(s, s->prev, s->prev_len);
    s->run = 0;
}

static void cjk_char(state *s, const char *bytes, size_t n) {
    if (is_stopword(s->a, bytes, n)) {
        flush_run(s);
        return;
    }
    if (s->run) {
        char bi[8];
        memcpy(bi, s->prev, s->prev_len);
        memcpy(bi + s->prev_len, bytes, n);
        emit(s, bi, s->prev_len + n);
    }
    memcpy(s->prev, bytes, n);
    s->prev_len = n;
    s->run++;
}

void cv_rag_analyze(const cv_rag_analyzer *a, const char *text, size_t len,
                    cv_rag_term_fn fn, void *user) {
    state s = {.a = a, .fn = fn, .user = user};
    const uint8_t *t = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        int32_t c = t[i];
        size_t k = 1;
        if (c >= 0x80) {
            utf8proc_ssize_t r = utf8proc_iterate(t + i, (utf8proc_ssize_t)(len - i), &c);
            if (r < 0) c = -1; /* an invalid byte: a separator */
            else k = (size_t)r;
        }
        if (c < 0x80 ? ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9')
                     : c > 0 && is_word_cp(c) && !is_cjk_cp(c)) {
            flush_run(&s);
            fold_cp(c, s.word, &s.word_len, sizeof s.word);
        } else if (c >= 0x80 && is_cjk_cp(c)) {
            flush_word(&s);
            cjk_char(&s, text + i, k);
        } else {
            flush_word(&s);
            flush_run(&s);
        }
        i += k;
    }
    flush_word(&s);
    flush_run(&s);
}
