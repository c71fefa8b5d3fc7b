/* rag_request: the retrieval step of one Generate or Chat request, on a thread of its
 * own, from the request's options to the prompt ids the model runs on.
 *
 * The job: take the question (a Generate's prompt; a Chat's last "user" message),
 * work out the context budget, retrieve and assemble (rag_service.h), log one line,
 * and build the prompt ids with the context (rag_prompt.h for the templates). Then
 * `done` is called once, on the job's thread, with either an error, the configured
 * default answer (the model must not run) or the prompt ids and the citations.
 *
 * The budget: the context gets what the model's window leaves after the prompt without
 * context and room to answer (the request's max_tokens, at most a quarter of the
 * window), and never more than the service's max_context_tokens (cv_rag_context_budget).
 *
 * The boundary: this layer sees neither the tokenizer nor the chat templates (the text
 * layer) nor the engine. The caller hands the model over as callbacks (cv_rag_model):
 * count the tokens of a piece of text, encode a Generate prompt, encode chat messages
 * through the request's template. Everything above the tokens stays here: which
 * message is the question, the Generate frame, the framed last user turn of a Chat.
 * The alternative, letting this layer use the text layer,
 * would pull GGUF and the kernels into everything that links rag (corvid-index, the
 * index tests) for what three function pointers say; cv_rag_service_run already takes
 * its token count the same way.
 *
 * Nothing here knows about gRPC or protobuf: the caller translates its request into a
 * cv_rag_request and the result back into its messages and status codes (cv_status
 * says what kind of failure it is).
 *
 * Jobs at once are bounded by the runner (live sources block their thread for up to
 * their budget); past the bound, start fails with CV_EBUSY and nothing runs.
 */
#ifndef CV_RAG_REQUEST_H
#define CV_RAG_REQUEST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "rag_service.h"

/* Retrievals running at once, by default. */
#define CV_RAG_MAX_JOBS 64

typedef struct cv_rag_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* NUL-terminated */
} cv_rag_msg;

/* The model a request runs on, as callbacks (all with `user`). */
typedef struct cv_rag_model {
    cv_rag_measure_fn count_tokens; /* tokens of text, no special tokens */
    /* A Generate prompt's ids (with the request's own special-token handling). */
    cv_status (*encode_prompt)(void *user, const char *text, int32_t **ids, size_t *n_ids,
                               cv_error *err);
    /* Chat messages' ids through the request's chat template. */
    cv_status (*encode_chat)(void *user, const cv_rag_msg *msgs, size_t n, int32_t **ids,
                             size_t *n_ids, cv_error *err);
    void *user;
    size_t n_ctx;        /* the model's window, in tokens */
} cv_rag_model;

/* One request. Everything it points to must stay valid until `done` returns. */
typedef struct cv_rag_request {
    const char *request_id;      /* for the log line */
    const cv_trace_ctx *trace;   /* the request's trace: the retrieval is a span under it; NULL: none */
    const char *prompt;          /* Generate: the prompt (and question); NULL for Chat */
    const cv_rag_msg *messages;  /* Chat: the conversation */
    size_t n_messages;
    size_t max_tokens;           /* the answer's room; 0: a quarter of the window */
    /* The request's options; question and max_context_tokens are filled in here. */
    cv_rag_query options;
    cv_rag_model model;
} cv_rag_request;

/* What a job came to. Exactly one of: status != CV_OK (error says why), default_answer
 * (answer this, do not run the model), or ids (the prompt with the context). */
typedef struct cv_rag_result {
    cv_status status;
    const char *error;
    const char *default_answer;
    const cv_rag_outcome *outcome; /* passages, and ctx.kept: the citations in order
                                    * (NULL when status != CV_OK) */
    const int32_t *ids;
    size_t n_ids;
    const char *extra_stop;        /* a stop string to add to the request's, or NULL */
    const char *question;          /* what was asked (a Generate's prompt, a Chat's last user message) */
} cv_rag_result;

/* Called once per started job, on its thread; the result is valid during the call. */
typedef void (*cv_rag_done_fn)(void *user, const cv_rag_result *r);

/* The retrieval itself; cv_rag_service_run unless a runner is given another. */
typedef cv_status (*cv_rag_retrieve_fn)(void *user, const cv_rag_query *q, cv_rag_measure_fn measure,
                                        void *measure_user, cv_rag_outcome *out, cv_error *err);

typedef struct cv_rag_runner_config {
    cv_rag_service *service;     /* retrieves through cv_rag_service_run */
    cv_rag_retrieve_fn retrieve; /* non-NULL: retrieves through this (with retrieve_user) instead */
    void *retrieve_user;
    int max_jobs;                /* 0: CV_RAG_MAX_JOBS */
    void (*log)(void *user, const char *line); /* one JSON line per retrieval; NULL: stderr */
    void *log_user;
} cv_rag_runner_config;

/* Starts jobs and counts them. Plain struct: embed it, no allocation, nothing to free
 * (but it must outlive its jobs). */
typedef struct cv_rag_runner {
    cv_rag_runner_config cfg;
    atomic_int jobs;
} cv_rag_runner;

void cv_rag_runner_init(cv_rag_runner *r, const cv_rag_runner_config *cfg);
/* Jobs started whose thread has not finished yet. */
int cv_rag_runner_jobs(cv_rag_runner *r);

/* Starts the job on a detached thread; `done` is called iff this returns CV_OK.
 * CV_EBUSY when max_jobs are running (or no thread could start), CV_ENOMEM. The request
 * is copied (not what it points to). */
cv_status cv_rag_request_start(cv_rag_runner *r, const cv_rag_request *req, cv_rag_done_fn done,
                               void *user, cv_error *err);

/* The same job on the calling thread (the runner's count is not touched). */
void cv_rag_request_run(cv_rag_runner *r, const cv_rag_request *req, cv_rag_done_fn done,
                        void *user);

/* The context budget: what n_ctx leaves after a prompt of n_bare tokens without context
 * and the answer's room (max_tokens, at most n_ctx / 4; 0: n_ctx / 4); at least 1. */
size_t cv_rag_context_budget(size_t n_ctx, size_t n_bare, size_t max_tokens);

#endif
