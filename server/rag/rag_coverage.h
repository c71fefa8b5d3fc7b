/* rag_coverage: whether the passages retrieved for a question can answer it, by its
 * key terms (issue 21, item 4).
 *
 * BM25 finds a passage about the right thing for a question the passage cannot answer
 * ("the boiling point of the Quorn-7 glycol": Quorn-7 and glycol are there, a boiling
 * point is not), and a small model asked anyway invents one. Coverage is the share of
 * the question's key terms that some passage (title or text) holds:
 *   - words (the index's analyzer: case folded, stopwords out), less the words that
 *     only shape a question ("often", "many", "long", ...) or name the kind of answer
 *     ("day", "year", "time", ...: "which day" is answered "on Tuesdays"); a passage word holds a
 *     question word when they are equal or share a prefix of at least 4 bytes that
 *     leaves at most 3 bytes of the longer one ("serviced"/"service", "takes"/"take");
 *   - CJK: single characters, not the analyzer's bigrams (a question's bigrams straddle
 *     its words: "采摘什么时候" gives "摘什", which no passage holds), less function and
 *     question characters (的, 是, 多, 少, 几, 哪, ...).
 * Coverage is 0 when the passages hold none of the key terms that their titles do
 * not: they name what the question is about and nothing of what it asks ("the price
 * of the Zephyr-9 delivery drone": the title holds all but "price", and no text does;
 * 4 of 5 terms, and the 0.5B Qwen answered "costs 72 km/h").
 * The service refuses below its min_coverage as it does below min_score. A lexical
 * check: a paraphrase the passage words differently lowers coverage, and a question
 * whose only unknown is a word the passage has by chance ("the current principal" when
 * the passage names the first one) passes.
 */
#ifndef CV_RAG_COVERAGE_H
#define CV_RAG_COVERAGE_H

#include <stddef.h>

#include "rag_analyzer.h"
#include "rag_prompt.h"

/* The default for rag_min_coverage. */
#define CV_RAG_MIN_COVERAGE_DEFAULT 0.7

/* The lists the check uses, shared with rag_support.h: a word (case folded) that only
 * shapes a question or names the kind of answer; a CJK character (its UTF-8 bytes,
 * NUL-terminated) of a function word or question form; two words that count as one
 * (equal, or a shared prefix of at least 4 bytes leaving at most 3 of the longer). */
int cv_rag_question_word(const char *word);
int cv_rag_question_char(const char *ch);
int cv_rag_similar_word(const char *a, const char *b);

/* Share of question's key terms held by p[0..n) in [0, 1]; 1 when the question has
 * none (nothing to check). Out of memory counts as covered (the check is skipped). */
double cv_rag_coverage(const cv_rag_analyzer *a, const char *question, const cv_rag_passage *p, size_t n);

#endif
