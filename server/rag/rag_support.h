/* rag_support: whether a RAG answer is supported by the passages it was given, as an
 * answer to the question asked (issue 21, items 3 and 4).
 *
 * Retrieval and the coverage check (rag_coverage.h) judge the passages before the
 * model runs; a question whose only unanswered term is one word ("how many tram stops
 * are on the bridge" over a passage about its "tram line" and "four lanes") passes
 * them, and the 0.5B Qwen answers "The bridge carries four tram stops.". This check
 * judges the answer after it is generated:
 *   - terms: numbers (ASCII digits with thousands separators and decimals, English
 *     number words up to ninety, Chinese numerals and Arabic digits with Chinese
 *     units: 二千四百, 4.5万, normalised to digits), words (ASCII case folded, stopwords
 *     out, a light stem: -s, -es, -ed, -ing, and the past forms of common irregular
 *     verbs), CJK characters (function characters out);
 *   - the answer's new terms: those the question does not hold;
 *   - a number among them that no passage sentence holds is invented
 *     (CV_RAG_INVENTED_NUMBER);
 *   - the supporting sentences: of the passage sentences (split at . ! ? ; 。 ！ ？ ；
 *     and line breaks; a '.' only before a space or the end), each with its passage's
 *     title (the subject a pronoun stands for), the one holding most of the new terms,
 *     then the one holding most of the rest, and so on (a word common to many
 *     sentences must not make them all support the answer). None: CV_RAG_UNSUPPORTED;
 *   - the question's key terms (its terms less the words that only shape a question
 *     or name the kind of answer: rag_coverage's lists, the word after which/what/
 *     whose, superlatives, the character after 多/几/哪, 时间/时候) must all be held by
 *     the supporting sentences; one missing: the answer comes from a sentence about
 *     something else (CV_RAG_OFF_QUESTION). A question of several parts (", and
 *     how ...", "？...？") needs one part held whole: a right answer to one of two
 *     parts is an answer.
 *   - no new term at all, but half or more of the question's terms: the question said
 *     back (Gemma 3 270M: "镜月湖里的银鳞鱼多长吗？"; CV_RAG_QUESTION_ECHO). Fewer of
 *     them is a pick from the question ("Ilse Marwick" to "... Ilse Marwick or Tom
 *     Bell?"), and so is a pair of CJK characters side by side that the question does
 *     not have and a passage does (a CJK term is one character: "澜江" is new to
 *     "...横跨哪条江？" although 澜 and 江 are not): supported;
 *   - an answer whose sentences copy two or more passage sentences (each holding
 *     CV_RAG_COPY_SHARE of a passage sentence's own terms: word for word or nearly)
 *     hands the passage back (issue 21): its sentences are judged one by one as above,
 *     and those that answer are kept (CV_RAG_TRIMMED, cv_rag_support_trim), none:
 *     CV_RAG_PASSAGE_ECHO. A passage sentence that happens to hold a key term of the
 *     question no longer makes a copy of the whole passage an answer.
 * An answer that is the not-in-the-documents sentence (rag_prompt.h) is supported.
 * A lexical check: a question worded with other words than its passage ("wrote" /
 * "written" is handled, a synonym is not) refuses an answer that was right, and an
 * answer that mixes up two facts of one sentence passes.
 *
 * Immutable after creation; check may be called from any thread.
 */
#ifndef CV_RAG_SUPPORT_H
#define CV_RAG_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "rag_prompt.h"

typedef enum cv_rag_support_verdict {
    CV_RAG_SUPPORTED = 0,
    CV_RAG_INVENTED_NUMBER,
    CV_RAG_UNSUPPORTED,
    CV_RAG_OFF_QUESTION,
    CV_RAG_QUESTION_ECHO,
    CV_RAG_PASSAGE_ECHO,
    CV_RAG_TRIMMED, /* supported once the sentences that do not answer are dropped */
    CV_RAG_SUPPORT_N
} cv_rag_support_verdict;

typedef struct cv_rag_support cv_rag_support;

/* The passages p[kept[i]] for i < n_kept (the ones the model was given) and the
 * question, copied; NULL when out of memory. */
cv_rag_support *cv_rag_support_new(const char *question, const cv_rag_passage *p, const size_t *kept,
                                   size_t n_kept);
void cv_rag_support_free(cv_rag_support *s);

/* The verdict on answer[0..len); why (may be NULL) gets the term that decided it
 * ("invented 192", "missing stops"), NUL-terminated within cap. */
cv_rag_support_verdict cv_rag_support_check(const cv_rag_support *s, const char *answer, size_t len, char *why,
                                             size_t cap);
/* For CV_RAG_TRIMMED: moves the answer's sentences that answer to the front of
 * answer (in order, leading blanks out) and returns their length; any other verdict
 * leaves answer as it is and returns len. */
size_t cv_rag_support_trim(const cv_rag_support *s, char *answer, size_t len);
/* The reply that replaces an answer not supported: CV_RAG_NOT_IN_DOCS_* in the
 * question's language. */
const char *cv_rag_support_refusal(const cv_rag_support *s);

/* Process-wide: answers judged, by verdict, since start (for the metrics). */
void cv_rag_support_count(cv_rag_support_verdict v);
void cv_rag_support_counts(uint64_t out[CV_RAG_SUPPORT_N]);
/* "supported", "invented_number", "unsupported", "off_question", "question_echo",
 * "passage_echo", "trimmed". */
const char *cv_rag_support_verdict_name(cv_rag_support_verdict v);

/* The numbers of text[0..len) in order, as digit strings ("1340", "4.5", "45000";
 * no sign, no leading zeros but "0"). Exposed for the tests and the fuzz target. */
typedef void (*cv_rag_number_fn)(void *user, const char *num, size_t len);
void cv_rag_numbers(const char *text, size_t len, cv_rag_number_fn fn, void *user);

#endif
