/* rag_analyzer: turns UTF-8 text into the terms the BM25 index stores and queries.
 *
 * - Words: maximal runs of Unicode letters, digits and combining marks (libutf8proc
 *   categories L*, N*, M*), normalised with NFKC-style compatibility mapping, case
 *   folding and accent stripping ("Ｃａｆé" -> "cafe"); longer than
 *   CV_RAG_MAX_TERM bytes is cut at a code point boundary.
 * - CJK (Han, kana, Hangul syllables): each run of CJK characters becomes its
 *   overlapping character bigrams ("知识库" -> "知识", "识库"); a run of one character is
 *   a unigram.
 * - Stopwords: a term equal to a stopword is dropped; a single CJK character that is a
 *   stopword ("的", "是") also ends the CJK run, so no bigram straddles it. The default
 *   list has common English and Chinese function words; callers may replace it.
 * - Everything else (punctuation, spaces, symbols, invalid UTF-8 bytes) separates terms.
 * The analyzer is immutable after creation and safe to share between threads.
 */
#ifndef CV_RAG_ANALYZER_H
#define CV_RAG_ANALYZER_H

#include <stddef.h>

#include "cv_error.h"

#define CV_RAG_MAX_TERM 64

typedef struct cv_rag_analyzer cv_rag_analyzer;

/* Called once per term, in text order; term is not NUL-terminated. */
typedef void (*cv_rag_term_fn)(void *user, const char *term, size_t len);

/* stopwords == NULL: the built-in list. n == 0 with a non-NULL array: no stopwords.
 * Stopwords are normalised like words (case folding etc.) before use. */
cv_status cv_rag_analyzer_create(const char *const *stopwords, size_t n,
                                 cv_rag_analyzer **out, cv_error *err);
void cv_rag_analyzer_free(cv_rag_analyzer *a);

/* The built-in stopword list (English and Chinese). */
const char *const *cv_rag_default_stopwords(size_t *n);

/* The normalised stopwords in use, for storing next to an index. */
const char *const *cv_rag_analyzer_stopwords(const cv_rag_analyzer *a, size_t *n);

/* Offset of the first byte that is not part of valid UTF-8 in s[0..n), or n. */
size_t cv_rag_utf8_check(const char *s, size_t n);

void cv_rag_analyze(const cv_rag_analyzer *a, const char *text, size_t len,
                    cv_rag_term_fn fn, void *user);

#endif
