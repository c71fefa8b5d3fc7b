#include "rag_guard.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rag_prompt.h"
#include "utf8.h"

/* Words kept for the n-gram check; an answer past this is long enough that the check
 * (quadratic in words) stops rather than costs. */
#define MAX_WORDS 4096
/* A marker's digits at most ("[123]"): a longer bracket is text. */
#define MAX_MARKER_DIGITS 3

static atomic_uint_fast64_t trips_total[CV_RAG_GUARD_N_TRIPS];
static atomic_uint_fast64_t removed_total;

typedef struct word {
    size_t start, len; /* in buf */
    int cjk;
} word;

struct cv_rag_guard {
    size_t n_passages;
    int line_end;
    cv_rag_guard_trip trip;
    char *buf;              /* the answer so far, markers out of range removed */
    size_t len, cap, sent;  /* sent: bytes returned by take */
    size_t open;            /* where a possible marker starts ('['), or SIZE_MAX */
    size_t marker_end;      /* end of the last marker, or SIZE_MAX */
    size_t run, run_cut;    /* markers in the current run; where the run's first ends */
    size_t hold;            /* run_cut while only gaps and markers follow it: held back
                             * so that a run can still be cut there; else SIZE_MAX */
    int text_seen;          /* a non-space byte was accepted */
    word *words;
    size_t n_words, word_start;
    int in_word;
    cv_rag_support *support; /* non-NULL: hold everything, judge it at the end */
};

cv_rag_guard *cv_rag_guard_new(size_t n_passages, int line_end) {
    cv_rag_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->n_passages = n_passages;
    g->line_end = line_end;
    g->open = g->marker_end = g->hold = SIZE_MAX;
    return g;
}

void cv_rag_guard_free(cv_rag_guard *g) {
    if (!g) return;
    free(g->buf);
    free(g->words);
    cv_rag_support_free(g->support);
    free(g);
}

static int is_ascii_alnum(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* What may separate the markers of a run: spaces and list punctuation. */
static int is_run_gap(uint32_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == ',' || c == ';' || c == '.' || c == 0x3001 /* 、 */ ||
           c == 0xFF0C /* ， */ || c == 0xFF1B /* ； */ || c == 0x3002 /* 。 */;
}

/* Ends the answer at cut (never before what went out already). */
static cv_rag_guard_trip trip(cv_rag_guard *g, cv_rag_guard_trip t, size_t cut) {
    while (cut > 0 && (g->buf[cut - 1] == ' ' || g->buf[cut - 1] == '\n')) cut--;
    if (cut < g->sent) cut = g->sent; /* what went out stays out */
    g->len = cut;
    g->open = g->hold = SIZE_MAX;
    g->trip = t;
    atomic_fetch_add(&trips_total[t], 1);
    return t;
}

static int words_equal(const cv_rag_guard *g, size_t a, size_t b, size_t n) {
    for (size_t k = 0; k < n; k++) {
        const word *x = &g->words[a + k], *y = &g->words[b + k];
        if (x->len != y->len || memcmp(g->buf + x->start, g->buf + y->start, x->len)) return 0;
    }
    return 1;
}

/* The n-gram ending with the newest word, against the earlier ones: on its
 * CV_RAG_GUARD_REPEATS-th occurrence the text is cut where the second starts.
 * Overlapping occurrences count: a loop shorter than the n-gram ("1. 1. 1. 1.",
 * "采摘时间：采摘时间：", Gemma 3 270M on bench-rag-qa) repeats within it, and counted
 * apart the guard let it run to max_tokens. An n-gram with a CJK character is CV_RAG_GUARD_NGRAM_CJK
 * long (a character is a word), one without is CV_RAG_GUARD_NGRAM words. */
static cv_rag_guard_trip check_loop(cv_rag_guard *g) {
    static const size_t sizes[2] = {CV_RAG_GUARD_NGRAM, CV_RAG_GUARD_NGRAM_CJK};
    size_t nw = g->n_words;
    for (int s = 0; s < 2; s++) {
        size_t n = sizes[s];
        if (nw < n) continue;
        size_t last = nw - n, seen = 1, second = last;
        int cjk = 0;
        for (size_t k = last; k < nw; k++) cjk |= g->words[k].cjk;
        if (cjk != (s == 1)) continue;
        for (size_t i = 0; i < last; i++)
            if (words_equal(g, i, last, n) && ++seen == 3) second = i;
        if (seen >= CV_RAG_GUARD_REPEATS) return trip(g, CV_RAG_GUARD_TRIP_LOOP, g->words[second].start);
    }
    return CV_RAG_GUARD_OK;
}

static cv_rag_guard_trip end_word(cv_rag_guard *g, size_t end, int cjk) {
    if (g->n_words == MAX_WORDS) return CV_RAG_GUARD_OK;
    g->words[g->n_words++] = (word){g->word_start, end - g->word_start, cjk};
    return check_loop(g);
}

/* A marker "[digits]" ends at g->len (the ']' is in buf). */
static cv_rag_guard_trip marker(cv_rag_guard *g) {
    size_t start = g->open, n = 0;
    g->open = SIZE_MAX;
    for (size_t i = start + 1; i + 1 < g->len; i++) n = n * 10 + (size_t)(g->buf[i] - '0');
    int gap_only = g->marker_end != SIZE_MAX;
    for (size_t i = gap_only ? g->marker_end : 0; gap_only && i < start;) {
        uint32_t c;
        int k = cv_utf8_decode((const uint8_t *)g->buf + i, start - i, &c);
        if (k <= 0 || !is_run_gap(c)) gap_only = 0;
        i += k > 0 ? (size_t)k : 1;
    }
    if (n == 0 || n > g->n_passages) {
        g->len = start; /* removed */
        atomic_fetch_add(&removed_total, 1);
    }
    if (gap_only) {
        g->run++;
    } else {
        g->run = 1;
        g->run_cut = g->hold = g->len;
    }
    g->marker_end = g->len;
    if (g->run >= CV_RAG_GUARD_MARKER_RUN) return trip(g, CV_RAG_GUARD_TRIP_MARKERS, g->run_cut);
    return CV_RAG_GUARD_OK;
}

static int reserve(cv_rag_guard *g, size_t extra) {
    if (!g->words && !(g->words = malloc(sizeof *g->words * MAX_WORDS))) return -1;
    if (g->len + extra <= g->cap) return 0;
    size_t c = g->cap ? g->cap : 256;
    while (c < g->len + extra) c *= 2;
    char *p = realloc(g->buf, c);
    if (!p) return -1;
    g->buf = p;
    g->cap = c;
    return 0;
}

/* One code point c (its k bytes at s) into buf. */
static cv_rag_guard_trip accept(cv_rag_guard *g, const char *s, int k, uint32_t c) {
    cv_rag_guard_trip t = CV_RAG_GUARD_OK;
    if (g->line_end && c == '\n' && g->text_seen) return trip(g, CV_RAG_GUARD_TRIP_LINE, g->len);
    int alnum = is_ascii_alnum(c) && !(g->open != SIZE_MAX && c >= '0' && c <= '9');
    if (g->in_word && !alnum && (t = end_word(g, g->len, 0)) != CV_RAG_GUARD_OK) return t;
    if (alnum && !g->in_word) g->word_start = g->len;
    g->in_word = alnum;
    if (g->open != SIZE_MAX && !(c >= '0' && c <= '9' && g->len - g->open <= MAX_MARKER_DIGITS) &&
        !(c == ']' && g->len - g->open > 1))
        g->open = SIZE_MAX; /* not a marker after all: plain text */
    if (c == '[') g->open = g->len;
    if (g->open == SIZE_MAX && !is_run_gap(c)) g->hold = SIZE_MAX; /* text after the marker: no run */
    memcpy(g->buf + g->len, s, (size_t)k);
    g->len += (size_t)k;
    if (c != ' ' && c != '\n' && c != '\t') g->text_seen = 1;
    if (c == ']' && g->open != SIZE_MAX) return marker(g);
    if (cv_rag_is_cjk_cp(c)) {
        g->word_start = g->len - (size_t)k;
        return end_word(g, g->len, 1);
    }
    return CV_RAG_GUARD_OK;
}

cv_rag_guard_trip cv_rag_guard_feed(cv_rag_guard *g, const char *text, size_t len) {
    if (g->trip) return g->trip;
    if (reserve(g, len + 1)) return CV_RAG_GUARD_NOMEM;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int k = cv_utf8_decode((const uint8_t *)text + i, len - i, &c);
        if (k <= 0) { /* an invalid byte goes through, as a separator */
            k = 1;
            c = 0xFFFD;
        }
        cv_rag_guard_trip t = accept(g, text + i, k, c);
        if (t) return t;
        i += (size_t)k;
    }
    return CV_RAG_GUARD_OK;
}

void cv_rag_guard_set_support(cv_rag_guard *g, cv_rag_support *s) {
    cv_rag_support_free(g->support);
    g->support = s;
}

void cv_rag_guard_take(cv_rag_guard *g, const char **text, size_t *len) {
    if (g->support) {
        *text = "";
        *len = 0;
        return;
    }
    size_t upto = g->open != SIZE_MAX ? g->open : g->len;
    if (g->hold < upto) upto = g->hold;
    if (upto < g->sent) upto = g->sent;
    *text = g->buf ? g->buf + g->sent : "";
    *len = upto - g->sent;
    g->sent = upto;
}

void cv_rag_guard_finish(cv_rag_guard *g, const char **text, size_t *len) {
    g->open = g->hold = SIZE_MAX;
    if (g->support) {
        cv_rag_support_verdict v = cv_rag_support_check(g->support, g->buf ? g->buf : "", g->len, NULL, 0);
        cv_rag_support_count(v);
        const char *r = cv_rag_support_refusal(g->support);
        size_t n = strlen(r);
        if (v == CV_RAG_TRIMMED) {
            g->len = cv_rag_support_trim(g->support, g->buf, g->len);
        } else if (v != CV_RAG_SUPPORTED && (n <= g->cap || !reserve(g, n))) { /* no memory: the answer stays */
            memcpy(g->buf, r, n);
            g->len = n;
        }
        cv_rag_support_free(g->support);
        g->support = NULL;
    }
    cv_rag_guard_take(g, text, len);
}

void cv_rag_guard_counts(uint64_t trips[CV_RAG_GUARD_N_TRIPS], uint64_t *markers_removed) {
    for (int i = 0; i < CV_RAG_GUARD_N_TRIPS; i++) trips[i] = atomic_load(&trips_total[i]);
    *markers_removed = atomic_load(&removed_total);
}

const char *cv_rag_guard_trip_name(cv_rag_guard_trip t) {
    static const char *const names[CV_RAG_GUARD_N_TRIPS] = {"", "markers", "loop", "line"};
    return (unsigned)t < CV_RAG_GUARD_N_TRIPS ? names[t] : "";
}
