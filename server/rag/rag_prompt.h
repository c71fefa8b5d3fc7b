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
 *   [1] TITLE: TEXT
 *
 *   [2] ...
 * TITLE falls back to the document id. No source name and no line of its own for the
 * title: with "[1] TITLE (SOURCE)" on a line, Qwen2.5-0.5B answered that line (issue 21).
 * The source and URL reach the client in the Context message instead.
 *
 * The frame around it is in the question's language (English, or Chinese when the
 * question has a CJK character), with an instruction to answer in one short sentence
 * that states the answer, from the documents only, and otherwise to say
 * CV_RAG_NOT_IN_DOCS_*:
 *   Chat (cv_rag_prompt_user; it replaces the content of the last user message):
 *     <instruction>\n\nDocuments:\n<block>\n\nQuestion: Q
 *   Generate (cv_rag_prompt_generate; a completion frame that ends where the answer
 *   starts):
 *     Documents:\n<block>\n\n<instruction>\n\nQuestion: Q\nAnswer:
 *   (资料: / 问题: / 回答: for Chinese). A model going on past its answer starts a new
 *   line; CV_RAG_GENERATE_STOP and the guard's line end (rag_guard.h) stop it there.
 * Why the instruction first in a Chat: after the question, the 0.5B Qwen replied the
 * not-in-the-documents sentence to 9 of 45 answerable bench-rag-qa questions whose
 * passage held the answer; with the question last, right before the answer, it
 * answered them.
 * Why the user turn for every chat family: the question must come right before the
 * answer, after the passages (in a system message the 0.5B Qwen answered the passage
 * header or repeated the passage, measured by bench-rag-qa); Gemma's template has no
 * system role (the system text joins the first user turn anyway); DeepSeek-R1's model
 * card asks for every instruction in the user turn. llama2 and llama3 are unmeasured
 * and take the same rule. Passages quoting control tokens still cannot open a turn:
 * cv_chat_encode never parses them in message content.
 * With no passage (policy "answer" and nothing found) there is no frame: the request
 * runs on its own prompt or messages. A window so small that the instruction would
 * leave the passages less than CV_RAG_COMPACT_BELOW tokens (stories260K's 128) gets the
 * compact frame: the same without the instruction.
 */
#ifndef CV_RAG_PROMPT_H
#define CV_RAG_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "rag_index.h" /* cv_rag_measure_fn */

#define CV_RAG_PROMPT_MIN_CUT 16
#define CV_RAG_COMPACT_BELOW 64
#define CV_RAG_GENERATE_STOP "\nQuestion:"
#define CV_RAG_NOT_IN_DOCS_EN "The documents do not say."
#define CV_RAG_NOT_IN_DOCS_ZH "资料中没有提到。"

typedef struct cv_rag_passage {
    const char *source;   /* "kb:<name>" or a live source's name */
    const char *doc_id, *title, *url; /* NUL-terminated; title/url may be "" */
    const char *text;
    size_t len;
    float score;
    /* A knowledge-base chunk's identity (the response cache's key): its index's
     * checksum and chunk id; 0 for live results. */
    uint32_t kb_checksum, chunk;
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

/* The Chat user turn for question (the last user message); malloc'd, NULL when out
 * of memory. compact: without the instruction (see CV_RAG_COMPACT_BELOW). */
char *cv_rag_prompt_user(const cv_rag_context *c, const char *question, int compact);
/* The whole Generate prompt for question; malloc'd. */
char *cv_rag_prompt_generate(const cv_rag_context *c, const char *question, int compact);

/* 1 when text has a Han, kana or Hangul character (chooses the frame's language and
 * the default answer). */
int cv_rag_is_cjk_text(const char *text, size_t len);
/* 1 for a Han, kana or Hangul code point. */
int cv_rag_is_cjk_cp(uint32_t cp);

#endif
