/* libFuzzer target for the RAG answer checks on untrusted text: the guard on model
 * output (rag_guard.h) and question coverage on a request's question (rag_coverage.h).
 * Input: a byte of settings (passages given, line end), then the text, fed to the
 * guard in pieces whose lengths come from the text's own bytes. Checks: what goes out
 * is never more than what came in, a trip stays tripped, and coverage is in [0, 1].
 * The answer check (rag_support.h) parses model output too: the text is judged as an
 * answer over a passage, and as the question and the passage; every number it reads
 * is digits with at most one point. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rag_coverage.h"
#include "rag_guard.h"
#include "rag_support.h"

static void number_ok(void *user, const char *num, size_t len) {
    (void)user;
    size_t dots = 0;
    if (!len) abort();
    for (size_t i = 0; i < len; i++) {
        if (num[i] == '.') dots++;
        else if (num[i] < '0' || num[i] > '9') abort();
    }
    if (dots > 1) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    cv_rag_guard *g = cv_rag_guard_new(data[0] & 7, data[0] >> 7);
    if (!g) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1, out = 0, pos = 0;
    cv_rag_guard_trip tripped = CV_RAG_GUARD_OK;
    while (pos < len) {
        size_t n = 1 + (uint8_t)text[pos] % 7;
        if (n > len - pos) n = len - pos;
        cv_rag_guard_trip t = cv_rag_guard_feed(g, text + pos, n);
        if (tripped && t != tripped) abort();
        if (t > 0) tripped = t;
        const char *o;
        size_t k;
        cv_rag_guard_take(g, &o, &k);
        out += k;
        pos += n;
    }
    const char *o;
    size_t k;
    cv_rag_guard_finish(g, &o, &k);
    out += k;
    if (out > len) abort();
    cv_rag_guard_free(g);

    cv_rag_numbers(text, len, number_ok, NULL);
    char *t = strndup(text, len);
    if (t) {
        cv_rag_passage p = {"kb:f", "d", "Quorn-7 heat pump", "",
                            "云雾岭白茶 二千四百米. Its compressor must be serviced every 18 months. The unit weighs 212 kg "
                            "and uses propane.",
                            0, 1, 0, 0};
        p.len = strlen(p.text);
        const size_t kept[] = {0};
        cv_rag_support *s = cv_rag_support_new("How often is the Quorn-7 serviced?", &p, kept, 1);
        if (s && cv_rag_support_check(s, text, len, NULL, 0) >= CV_RAG_SUPPORT_N) abort();
        /* trimming a passage handed back: in place, never longer (t ends at a NUL of the input) */
        size_t tl = strlen(t);
        if (s && cv_rag_support_trim(s, t, tl) > tl) abort();
        memcpy(t, text, tl);
        cv_rag_support_free(s);
        cv_rag_passage q = {"kb:f", "d", "", "", t, strlen(t), 1, 0, 0}; /* t ends at a NUL of the input */
        s = cv_rag_support_new(t, &q, kept, 1);
        char why[32];
        const char *answer = "It is 2,400 metres; 二〇一五年.";
        if (s && cv_rag_support_check(s, answer, strlen(answer), why, sizeof why) >= CV_RAG_SUPPORT_N) abort();
        cv_rag_support_free(s);
    }
    free(t);

    cv_rag_analyzer *a;
    if (cv_rag_analyzer_create(NULL, 0, &a, NULL) != CV_OK) return 0;
    char *q = strndup(text, len);
    if (q) {
        cv_rag_passage p = {"kb:f", "d", "The Quorn-7", "", "云雾岭白茶 serviced every 18 months", 40, 1, 0, 0};
        p.len = strlen(p.text);
        double c = cv_rag_coverage(a, q, &p, 1);
        if (!(c >= 0 && c <= 1)) abort();
    }
    free(q);
    cv_rag_analyzer_free(a);
    return 0;
}
