#include "rag_coverage.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define MAX_TERMS 64

/* Words that shape a question rather than name what it asks about, and the kind of
 * answer it wants ("on which day of the week": the passage says "on Tuesdays"). */
static const char *const question_words[] = {"often", "many", "much", "long", "far", "old", "big",
                                             "large", "kind", "type", "name", "named", "called",
                                             "day", "week", "month", "year", "date", "time"};
/* CJK characters of function words and question forms (多少, 几, 哪, 多久, ...). */
static const char question_chars[] = "的了是在和与及也都就而或吗呢吧啊之其这那个着把被让给为于从对向以请问我你他她它谁"
                                     "多少几哪何么什怎样久有";

typedef struct terms {
    char t[MAX_TERMS][CV_RAG_MAX_TERM];
    size_t n;
} terms;

static void add_term(void *user, const char *t, size_t len) {
    terms *ts = user;
    if (ts->n == MAX_TERMS || len >= CV_RAG_MAX_TERM) return;
    memcpy(ts->t[ts->n], t, len);
    ts->t[ts->n][len] = 0;
    for (size_t i = 0; i < ts->n; i++)
        if (!strcmp(ts->t[i], ts->t[ts->n])) return;
    ts->n++;
}

int cv_rag_question_word(const char *word) {
    for (size_t k = 0; k < sizeof question_words / sizeof *question_words; k++)
        if (!strcmp(word, question_words[k])) return 1;
    return 0;
}

int cv_rag_question_char(const char *ch) { return ch[0] && strstr(question_chars, ch) != NULL; }

int cv_rag_similar_word(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), k = 0;
    while (a[k] && a[k] == b[k]) k++;
    if (k == la && k == lb) return 1;
    size_t longer = la > lb ? la : lb;
    return k >= 4 && k + 3 >= longer;
}

typedef struct held {
    const terms *q;
    unsigned char *hit;
} held;

static void mark(void *user, const char *t, size_t len) {
    held *h = user;
    char w[CV_RAG_MAX_TERM];
    if (len >= sizeof w) return;
    memcpy(w, t, len);
    w[len] = 0;
    for (size_t i = 0; i < h->q->n; i++)
        if (!h->hit[i] && cv_rag_similar_word(h->q->t[i], w)) h->hit[i] = 1;
}

double cv_rag_coverage(const cv_rag_analyzer *a, const char *question, const cv_rag_passage *p, size_t n) {
    terms *q = calloc(1, sizeof *q);
    if (!q) return 1;
    /* per key term: held by some passage (title or text), and by some title */
    size_t total = 0, covered = 0, asked = 0, asked_held = 0;
    /* words: the analyzer's non-CJK terms */
    terms *all = calloc(1, sizeof *all);
    if (!all) {
        free(q);
        return 1;
    }
    cv_rag_analyze(a, question, strlen(question), add_term, all);
    for (size_t i = 0; i < all->n; i++) {
        uint32_t c;
        if (cv_utf8_decode((const uint8_t *)all->t[i], strlen(all->t[i]), &c) > 0 && cv_rag_is_cjk_cp(c)) continue;
        if (!cv_rag_question_word(all->t[i])) add_term(q, all->t[i], strlen(all->t[i]));
    }
    unsigned char hit[MAX_TERMS] = {0}, titled[MAX_TERMS] = {0};
    held h = {q, hit}, ht = {q, titled};
    for (size_t i = 0; i < n; i++) {
        cv_rag_analyze(a, p[i].title, strlen(p[i].title), mark, &h);
        cv_rag_analyze(a, p[i].title, strlen(p[i].title), mark, &ht);
        cv_rag_analyze(a, p[i].text, p[i].len, mark, &h);
    }
    total += q->n;
    for (size_t i = 0; i < q->n; i++) {
        covered += hit[i];
        asked += !titled[i];
        asked_held += !titled[i] && hit[i];
    }
    /* CJK: each distinct key character, looked for in the passages' bytes */
    const uint8_t *s = (const uint8_t *)question;
    size_t len = strlen(question);
    char seen[MAX_TERMS][4];
    size_t n_seen = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int k = cv_utf8_decode(s + i, len - i, &c);
        if (k <= 0) {
            i++;
            continue;
        }
        char ch[5] = {0};
        memcpy(ch, s + i, (size_t)k);
        i += (size_t)k;
        if (!cv_rag_is_cjk_cp(c) || cv_rag_question_char(ch) || n_seen == MAX_TERMS) continue;
        int dup = 0;
        for (size_t j = 0; j < n_seen; j++) dup |= !memcmp(seen[j], ch, 4);
        if (dup) continue;
        memcpy(seen[n_seen++], ch, 4);
        total++;
        int found = 0, in_title = 0;
        for (size_t j = 0; j < n && !found; j++) {
            char *text = strndup(p[j].text, p[j].len);
            found = !text || strstr(text, ch); /* out of memory: counted as held */
            free(text);
        }
        for (size_t j = 0; j < n && !in_title; j++) in_title = strstr(p[j].title, ch) != NULL;
        found |= in_title;
        covered += found;
        asked += !in_title;
        asked_held += !in_title && found;
    }
    free(q);
    free(all);
    /* The passages name what the question is about (their titles) and hold none of
     * what it asks about it: nothing to answer from, whatever the share. */
    if (asked && !asked_held) return 0;
    return total ? (double)covered / (double)total : 1;
}
