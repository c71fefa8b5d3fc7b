/* openai_service: the OpenAI-compatible API over http_server and the router's slots.
 *
 * POST /v1/chat/completions and /v1/completions: the body is parsed and checked by
 * openai_request.h, the request goes to a slot like a gRPC one (infer_core.h: `model`
 * names a version, which pins it, or the model, which is routed by the traffic
 * weights; corvid.model_version pins too), the chat template or the tokenizer makes
 * the prompt ids, and the engine runs it. Without `stream` the answer is one JSON
 * object once the engine is done; with `stream: true` it is Server-Sent Events:
 * chat.completion.chunk (the role in the first delta) or text_completion objects, the
 * last one with finish_reason, a usage chunk when stream_options.include_usage, then
 * `data: [DONE]`. A failure in the middle of a stream sends `data: {"error": {...}}`
 * and ends the stream (no [DONE]). A client that falls more than 1 MiB behind is cut
 * off (the connection closes), a client that goes away cancels its sequence.
 *
 * With "corvid": {"rag": {...}} (gRPC's RagOptions) retrieval runs first, as for gRPC:
 * the answer carries "citations" (the whole object's field, or the first SSE event, a
 * chunk with no choices), and when nothing is found the configured default answer is
 * returned without running the model.
 *
 * GET /v1/models lists the served model names (routed) and versions (pinned);
 * GET /v1/models/{id} one of them (404 model_not_found otherwise).
 *
 * Statuses: 400 bad request (param names the field), 401 / 403 / 429 from the auth
 * policy, 404 unknown model, 429 queue full (Retry-After: 1), 503 draining or nothing
 * serving, 500 engine failure. Every finished request is counted in its slot's stats
 * and logged as one JSON line with "protocol":"http".
 */
#ifndef CV_OPENAI_SERVICE_H
#define CV_OPENAI_SERVICE_H

#include "http_server.h"
#include "router.h"

typedef struct cv_oai_service cv_oai_service;

/* max_prompt_bytes as gRPC's (inference_service.h): 0 for the default. Requests are
 * parsed, rendered and tokenized on pool (request_pool.h, shared with gRPC; a full pool
 * is 429), or on the HTTP thread when pool is NULL. */
typedef struct cv_request_pool cv_request_pool;
/* rag: the retrieval runner of corvid.rag requests (gRPC's, cv_infer_rag); one without
 * a service refuses them (400, as gRPC's FAILED_PRECONDITION). */
typedef struct cv_rag_runner cv_rag_runner;
/* rc: the response cache gRPC's requests use too (response_cache.h), or NULL; a hit's
 * usage says "cached": true, and so does the last chunk of a stream. */
typedef struct cv_rc cv_rc;
cv_status cv_oai_service_new(cv_router *router, cv_request_pool *pool, cv_rag_runner *rag, cv_rc *rc,
                             size_t max_prompt_bytes, cv_oai_service **out, cv_error *err);
/* Adds the /v1/ routes; the service must outlive the server's requests. */
cv_status cv_oai_service_register(cv_oai_service *o, cv_hs *hs, cv_error *err);
void cv_oai_service_free(cv_oai_service *o);

#endif
