/* rag_sources: live HTTP JSON sources for retrieval, fetched concurrently (libcurl multi)
 * under one time budget; every request audited; failures never fatal.
 *
 * Config (JSON; unknown keys are errors, so typos surface at load):
 *   {"budget_ms": 500,                          overall budget (1..60000, default 500)
 *    "sources": [{
 *       "name": "wiki",                         [A-Za-z0-9_.-]{1,64}
 *       "url": "https://api.example/s?q={query}", http(s); every {query} becomes the
 *                                               PII-masked, URL-encoded question
 *       "headers": {"Accept": "application/json"},  no CR/LF anywhere
 *       "items": "/results",                    JSON pointer (RFC 6901) to an array of
 *                                               results; absent: the body is one result
 *                                               (or an array of them)
 *       "text": "/snippet", "title": "/name", "link": "/url",  pointers inside one result;
 *                                               text is required, the others optional
 *       "timeout_ms": 300,                      per source (default: the budget)
 *       "max_bytes": 1048576,                   body size limit (default 1 MiB, max 64 MiB)
 *       "max_results": 5}]}                     per source (default 5, max 100)
 *
 * A source that fails (connection, timeout, budget, HTTP status outside 2xx, body over
 * its limit, body not JSON, nothing at the pointers) contributes no results and one
 * audit line saying why. Results keep config order, then item order.
 * Audit lines are single-line JSON objects:
 *   {"type":"rag_source","source":..,"url":<masked>,"status":<HTTP code or 0>,
 *    "outcome":"ok|error|timeout|budget|http_status|too_large|bad_body",
 *    "bytes":..,"latency_ms":..,"results":..[,"error":..]}
 * The URL is masked again as a whole, so nothing personal in it reaches the audit log;
 * keep API keys in headers (never logged), not in URLs.
 */
#ifndef CV_RAG_SOURCES_H
#define CV_RAG_SOURCES_H

#include <stddef.h>

#include "cv_error.h"
#include "pii.h"
#include "trace.h"

typedef struct cv_rag_sources cv_rag_sources;

cv_status cv_rag_sources_parse(const char *json, size_t len, cv_rag_sources **out, cv_error *err);
void cv_rag_sources_free(cv_rag_sources *s);
size_t cv_rag_sources_count(const cv_rag_sources *s);
unsigned cv_rag_sources_budget_ms(const cv_rag_sources *s);

typedef struct cv_rag_source_hit {
    const char *source; /* the source's name (owned by the config) */
    char *title, *link, *text; /* title/link may be NULL */
} cv_rag_source_hit;

typedef struct cv_rag_source_hits {
    cv_rag_source_hit *v;
    size_t n, cap;
} cv_rag_source_hits;

void cv_rag_source_hits_free(cv_rag_source_hits *h);

/* Called with one audit line (no trailing newline) per external request. */
typedef void (*cv_rag_audit_fn)(void *user, const char *line);

/* Extracts results from one response body of source `index` (exposed for fuzzing and
 * tests). CV_EFORMAT when the body is not JSON or nothing usable is at the pointers. */
cv_status cv_rag_sources_parse_body(const cv_rag_sources *s, size_t index, const char *body,
                                    size_t len, cv_rag_source_hits *out, cv_error *err);

/* Fetches every source for `query` (masked with pii before it is sent) within
 * budget_ms (0: the config's budget). Appends results to *out. Fails only on bad
 * arguments or when memory runs out; source failures are audited, not returned.
 * With trace (NULL: none) each fetch is a span under it, its traceparent goes out with
 * the request, and the audit lines carry "trace_id". */
cv_status cv_rag_sources_fetch(const cv_rag_sources *s, const cv_pii *pii, const char *query,
                               unsigned budget_ms, cv_rag_audit_fn audit, void *audit_user,
                               const cv_trace_ctx *trace, cv_rag_source_hits *out, cv_error *err);

#endif
