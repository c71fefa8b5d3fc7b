/* rag_prompt: retrieved passages into a model prompt, with citations, within a token
 * budget.
 *
 * Passages arrive best first (the caller ranks them). They are taken in that order
 * while they fit in budget tokens (as counted by `measure`, the model's tokenizer); the
 * first one that does not fit is cut at a UTF-8 character boundary to what still fits
 * (when at least CV_RAG_PROMPT_MIN_CUT tokens are left) and the rest are dropped, so
 * the lowest-ranked passages go first. Kept passages are numbered [1], [2], ... in
 * rank order; the numbers are the citations' order in the response's Context message.
 *
 * The context block (what the budget counts):
 *   [1] TITLE (SOURCE)
 *   TEXT
 *
 *   [2] ...
 * TITLE falls back to the document id. For Generate the prompt is:
 *   Answer using only the context below; cite passages by number, like [1].
 *
 *   Context:
 *   <context block>
 *
 *   Question: QUESTION
 *   Answer:
 * and a base model answering it would go on with a "Question:" of its own:
 * CV_RAG_GENERATE_STOP is the stop string that ends the answer there.
 * For Chat the same instruction and context become a system message (prepended to the
 * chat's own first system message when it has one) and go through the chat template.
 */
#ifndef CV_RAG_PROMPT_H
#define CV_RAG_PROMPT_H

#include <stddef.h>

#include "cv_error.h"
#include "rag_index.h" /* cv_rag_measure_fn */

#define CV_RAG_PROMPT_MIN_CUT 16
#define CV_RAG_GENERATE_STOP "\nQuestion:"

typedef struct cv_rag_passage {
    const char *source;   /* "kb:<name>" or a live source's name */
    const char *doc_id, *title, *url; /* NUL-terminated; title/url may be "" */
    const char *text;
    size_t len;
    float score;
} cv_rag_passage;

typedef struct cv_rag_context {
    char *text;           /* the context block, NUL-terminated (malloc'd) */
    size_t *kept;         /* indices into the passages given, citation order */
    size_t n_kept;
    size_t tokens;        /* measure() of text */
} cv_rag_context;

/* Builds the context block of the passages that fit in budget tokens. */
cv_status cv_rag_context_build(const cv_rag_passage *p, size_t n, size_t budget,
                               cv_rag_measure_fn measure, void *user, cv_rag_context *out,
                               cv_error *err);
void cv_rag_context_free(cv_rag_context *c);

/* The instruction and context (the Chat system message); malloc'd. */
char *cv_rag_prompt_system(const cv_rag_context *c);
/* The whole Generate prompt for question; malloc'd. */
char *cv_rag_prompt_generate(const cv_rag_context *c, const char *question);

#endif
