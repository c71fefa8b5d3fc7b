/* inference_service: corvid.v1.Inference over rpc_server and the router's model slots.
 *
 * Generate and Chat validate the request (INVALID_ARGUMENT naming the field; a prompt
 * over max_prompt_bytes before any tokenizing), open the response stream, and hand the
 * request to the request pool (request_pool.h), whose worker renders the chat template,
 * tokenizes and submits to the slot's engine; Tokenize is answered from the pool too, so
 * the completion-queue thread never does work that grows with a prompt. A full pool
 * queue is RESOURCE_EXHAUSTED at once; a request whose client goes away while queued
 * is dropped untokenized when a worker reaches it (everything it held freed then).
 *
 * The response stream is the engine's output: text chunks, coalesced while the client
 * is slower than generation, then one Final. A client that falls more than
 * CV_INFER_MAX_PENDING bytes behind is cut off with RESOURCE_EXHAUSTED so that memory
 * per stream stays bounded. A client cancel, deadline
 * or disconnect cancels the engine request within one step.
 *
 * With rag.enable the request's retrieval step runs on a thread of its own
 * (rag_request.h: the budget, the prompt with the context, the bound on jobs at once);
 * its stream starts with a Context message listing the citations, or carries the
 * configured default answer with no model run (Final.default_answer). A RAG Generate
 * also stops at "\nQuestion:", where a base model would go on with a question of its
 * own after the template's "Answer:".
 *
 * Mid-stream failures send a Final with FINISH_REASON_ERROR and the message, then the
 * gRPC status INTERNAL, so both stream readers and status counters see them.
 */
#ifndef CV_INFERENCE_SERVICE_H
#define CV_INFERENCE_SERVICE_H

#include "infer_core.h"
#include "rpc_server.h"
#include "rag_service.h"
#include "router.h"

/* The request pool: its defaults; a prompt of this many bytes or more is a large job
 * (tokenizing it may take milliseconds to seconds); workers' nice increment. */
#define CV_INFER_REQUEST_THREADS 2
#define CV_INFER_REQUEST_QUEUE 64
#define CV_INFER_LARGE_PROMPT_BYTES 16384
#define CV_INFER_REQUEST_NICE 10

typedef struct cv_infer_options {
    /* A Generate prompt, a Chat's messages (roles and contents together) or a Tokenize
     * text longer than this is refused with INVALID_ARGUMENT naming the field and both
     * numbers, on the bytes as sent and before any tokenizing; 0: the slot's context
     * x CV_INFER_PROMPT_BYTES_PER_TOKEN (infer_core.h). */
    size_t max_prompt_bytes;
    int request_threads;  /* request pool workers (request_pool.h); 0: CV_INFER_REQUEST_THREADS */
    int request_queue;    /* requests waiting per class; 0: CV_INFER_REQUEST_QUEUE */
    cv_rc *response_cache; /* answers of deterministic requests (response_cache.h); NULL: none */
} cv_infer_options;

typedef struct cv_infer cv_infer;

/* Requests are routed by the router, which must outlive the service's streams. */
cv_status cv_infer_new(cv_router *router, const cv_infer_options *opt, cv_infer **out, cv_error *err);
cv_status cv_infer_register(cv_infer *inf, cv_rpc_server *srv, cv_error *err);
/* Retrieval for requests with rag.enable (see rag_service.h); without one they get
 * FAILED_PRECONDITION. The service must outlive the streams (set before serving). */
void cv_infer_set_rag(cv_infer *inf, cv_rag_service *rag);
/* The request pool, for the HTTP API's requests too (openai_service.h). */
typedef struct cv_request_pool cv_request_pool;
cv_request_pool *cv_infer_pool(cv_infer *inf);
/* The retrieval runner (rag_request.h; no service when RAG is not configured), for the
 * HTTP API's requests too. */
typedef struct cv_rag_runner cv_rag_runner;
cv_rag_runner *cv_infer_rag(cv_infer *inf);
/* Streams not yet finished (what a drain waits for). */
int cv_infer_in_flight(cv_infer *inf);
/* After the rpc server and the slot's engine are gone. */
void cv_infer_free(cv_infer *inf);

#endif
