/* rag_service: the retrieval step of a Generate or Chat request.
 *
 * Holds the server's knowledge bases (BM25 indexes, memory-mapped and fully validated
 * once at start-up: a bad index fails start-up), its live sources (rag_sources.h) and
 * the defaults. cv_rag_service_run checks a request's options against the limits,
 * searches the knowledge base, fetches the live sources (the outbound query is
 * PII-masked by rag_sources), ranks the passages and assembles the context within the
 * token budget (rag_prompt.h). Ranking: knowledge-base chunks at or above min_score,
 * best score first, then live-source results in config and item order; the budget drops
 * from the end of that list.
 *
 * Coverage: when min_coverage > 0 and the knowledge-base passages hold less than that
 * share of the question's key terms (rag_coverage.h), they are dropped, as if none
 * reached min_score: they are about the question's subject but cannot answer it.
 * Live-source results are not checked (their search answered the question).
 *
 * Policy "refuse" (the default): when no chunk reaches min_score and no live source
 * returned anything, the outcome is the configured default answer and the model must
 * not run. The answer is chosen by the question's script: the Chinese answer when the
 * question has a CJK character (Han, kana, Hangul) and one is configured, else the
 * other one. Policy "answer": the model runs with whatever context there is (maybe none).
 *
 * Thread-safe: run may be called from many threads at once (it blocks for up to the
 * sources' budget: never call it on the gRPC completion-queue thread).
 */
#ifndef CV_RAG_SERVICE_H
#define CV_RAG_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "rag_prompt.h"
#include "rag_sources.h"

#define CV_RAG_MAX_TOP_K 20
#define CV_RAG_MAX_KBS 32

typedef struct cv_rag_settings {
    const char *knowledge_bases; /* "NAME=PATH[,NAME=PATH...]"; the first is the default */
    const char *sources_path;    /* rag_sources.h JSON config; NULL or "": no live sources */
    uint32_t top_k;              /* 1..CV_RAG_MAX_TOP_K */
    float min_score;             /* BM25 score a chunk must reach */
    const char *policy;          /* "refuse" or "answer" */
    const char *default_answer;      /* non-CJK questions */
    const char *default_answer_zh;   /* CJK questions; "" = use default_answer */
    size_t max_context_tokens;   /* context budget in the model's tokens */
    cv_rag_audit_fn audit;       /* one line per outbound request; NULL: none */
    void *audit_user;
    int guard;                   /* 1: requests' answers go through rag_guard.h */
    double min_coverage;         /* rag_coverage.h share the passages must hold; 0: off */
    int check_answers;           /* 1 (with guard): answers are judged by rag_support.h */
} cv_rag_settings;

typedef struct cv_rag_service cv_rag_service;

cv_status cv_rag_service_new(const cv_rag_settings *s, cv_rag_service **out, cv_error *err);
void cv_rag_service_free(cv_rag_service *s);

/* A request's options; zero / NULL / "" fields take the server's defaults. */
typedef struct cv_rag_query {
    const char *question;
    const char *knowledge_base;
    uint32_t top_k;
    float min_score;
    const char *const *sources;  /* by name; none: every configured source */
    size_t n_sources;
    const char *policy;
    size_t max_context_tokens;   /* a lower budget than the server's (the model's room); 0: none */
    const cv_trace_ctx *trace;   /* the retrieval's span: search and fetches hang under it; NULL: none */
} cv_rag_query;

typedef struct cv_rag_outcome {
    cv_rag_passage *passages;    /* ranked; ctx.kept indexes into it */
    size_t n_passages;
    cv_rag_context ctx;
    const char *default_answer;  /* non-NULL: answer this, do not run the model */
    double index_ms, sources_ms, prompt_ms; /* searching / fetching / fitting the budget */
    double coverage;             /* rag_coverage.h of the passages found; 1 when not checked */
    /* storage behind passages */
    char **owned;
    size_t n_owned;
    cv_rag_source_hits hits;
} cv_rag_outcome;

/* CV_EINVAL naming the field for options outside the limits (unknown knowledge base or
 * source, top_k above CV_RAG_MAX_TOP_K, negative min_score, unknown policy). */
cv_status cv_rag_service_run(cv_rag_service *s, const cv_rag_query *q, cv_rag_measure_fn measure,
                             void *measure_user, cv_rag_outcome *out, cv_error *err);
void cv_rag_outcome_free(cv_rag_outcome *o);

/* Whether answers are to go through rag_guard.h (rag_guard), and whether the guard is
 * to judge them with rag_support.h (rag_check_answers, only with the guard). */
int cv_rag_service_guard(const cv_rag_service *s);
int cv_rag_service_check_answers(const cv_rag_service *s);

#endif
