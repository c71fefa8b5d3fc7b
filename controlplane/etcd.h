/* cv_etcd: an etcd v3 client over the JSON gateway (libcurl + jansson).
 *
 * Contract:
 * - Endpoints are "http://host:port[,http://host:port...]". A call starts at the
 *   endpoint that answered last and moves to the next one when a connection fails;
 *   the endpoint that answers becomes the preferred one.
 * - cfg.timeout_ms bounds a whole call: every attempt, failover and backoff sleep.
 *   One HTTP exchange is bounded by cfg.attempt_timeout_ms, so a hung endpoint
 *   (accepting but silent) still leaves time for the next one.
 * - Reads and lease keepalives are retried on any transport failure or a retryable
 *   gRPC code (Unavailable, DeadlineExceeded), with exponential backoff and full
 *   jitter. Writes (put, delete, txn, grant, revoke) are retried only when the
 *   request certainly never left (connection refused, name not resolved): a write
 *   that may have been applied is reported, never repeated behind the caller's back.
 * - Keys are NUL-terminated strings; values are (pointer, length) byte strings.
 *   Every call returns parsed structs with the response header; results belong to
 *   the caller and are released with the matching _free function.
 * - A failure fills cv_error with the call, the endpoint, the HTTP status and the
 *   gateway's own error message. gRPC codes map onto cv_status (NotFound ->
 *   CV_ENOTFOUND, OutOfRange (compacted revision) -> CV_ERANGE, Unavailable ->
 *   CV_EUNAVAILABLE, ...); an exhausted deadline is CV_ETIMEOUT or CV_EUNAVAILABLE.
 * - A client may be shared by threads: each call borrows its own curl handle.
 */
#ifndef CV_ETCD_H
#define CV_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_etcd cv_etcd;

typedef struct cv_etcd_config {
    const char *endpoints;  /* comma-separated base URLs, at most CV_ETCD_MAX_ENDPOINTS */
    int timeout_ms;         /* whole call, retries included (default 5000) */
    int attempt_timeout_ms; /* one HTTP exchange (default 2000) */
    int connect_timeout_ms; /* one TCP connect (default 500) */
    int backoff_base_ms;    /* first retry delay (default 25), doubled each round */
    int backoff_max_ms;     /* cap of the retry delay (default 1000) */
    size_t max_response;    /* largest response body accepted (default 64 MiB) */
} cv_etcd_config;

#define CV_ETCD_MAX_ENDPOINTS 16

typedef struct cv_etcd_header {
    int64_t revision;
    int64_t raft_term;
    uint64_t cluster_id;
    uint64_t member_id;
} cv_etcd_header;

typedef struct cv_etcd_kv {
    char *key; /* NUL-terminated (keys may still hold NUL bytes: use key_len) */
    size_t key_len;
    char *value; /* NUL-terminated copy of the bytes, value_len long */
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} cv_etcd_kv;

typedef struct cv_etcd_range_result {
    cv_etcd_header header;
    cv_etcd_kv *kvs;
    size_t n_kvs;
    int64_t count; /* keys in the range (may exceed n_kvs with a limit) */
    bool more;
} cv_etcd_range_result;

typedef struct cv_etcd_range_req {
    const char *key;
    bool prefix;      /* every key starting with key */
    int64_t limit;    /* 0: no limit */
    int64_t revision; /* 0: latest */
} cv_etcd_range_req;

typedef enum cv_etcd_cmp_target {
    CV_ETCD_CMP_VERSION,
    CV_ETCD_CMP_CREATE,
    CV_ETCD_CMP_MOD,
    CV_ETCD_CMP_VALUE,
} cv_etcd_cmp_target;

typedef enum cv_etcd_cmp_result {
    CV_ETCD_EQUAL,
    CV_ETCD_GREATER,
    CV_ETCD_LESS,
    CV_ETCD_NOT_EQUAL,
} cv_etcd_cmp_result;

typedef struct cv_etcd_cmp {
    const char *key;
    cv_etcd_cmp_target target;
    cv_etcd_cmp_result result;
    int64_t number; /* VERSION, CREATE, MOD */
    const char *value; /* VALUE */
    size_t value_len;
} cv_etcd_cmp;

typedef enum cv_etcd_op_type {
    CV_ETCD_OP_RANGE,
    CV_ETCD_OP_PUT,
    CV_ETCD_OP_DELETE,
} cv_etcd_op_type;

typedef struct cv_etcd_op {
    cv_etcd_op_type type;
    const char *key;
    bool prefix; /* RANGE, DELETE */
    const char *value; /* PUT */
    size_t value_len;
    int64_t lease; /* PUT, 0: none */
} cv_etcd_op;

typedef struct cv_etcd_op_result {
    cv_etcd_op_type type;
    cv_etcd_range_result range; /* RANGE */
    int64_t deleted;            /* DELETE */
} cv_etcd_op_result;

typedef struct cv_etcd_txn_result {
    cv_etcd_header header;
    bool succeeded;
    cv_etcd_op_result *results; /* one per op of the branch taken */
    size_t n_results;
} cv_etcd_txn_result;

cv_status cv_etcd_open(const cv_etcd_config *cfg, cv_etcd **out, cv_error *err);
void cv_etcd_close(cv_etcd *c);

cv_status cv_etcd_range(cv_etcd *c, const cv_etcd_range_req *req, cv_etcd_range_result *out,
                        cv_error *err);
/* One key; CV_ENOTFOUND when absent. */
cv_status cv_etcd_get(cv_etcd *c, const char *key, cv_etcd_kv *out, cv_etcd_header *header,
                      cv_error *err);
cv_status cv_etcd_put(cv_etcd *c, const char *key, const char *value, size_t value_len,
                      int64_t lease, cv_etcd_header *header, cv_error *err);
cv_status cv_etcd_delete(cv_etcd *c, const char *key, bool prefix, int64_t *deleted,
                         cv_etcd_header *header, cv_error *err);
cv_status cv_etcd_txn(cv_etcd *c, const cv_etcd_cmp *cmps, size_t n_cmps,
                      const cv_etcd_op *success, size_t n_success, const cv_etcd_op *failure,
                      size_t n_failure, cv_etcd_txn_result *out, cv_error *err);
/* Physically compacts the history up to revision (the test suite uses it). */
cv_status cv_etcd_compact(cv_etcd *c, int64_t revision, cv_error *err);

cv_status cv_etcd_lease_grant(cv_etcd *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                              cv_error *err);
/* Renews once. A lease that expired or was revoked is CV_ENOTFOUND. */
cv_status cv_etcd_lease_keepalive(cv_etcd *c, int64_t id, int64_t *ttl, cv_error *err);
cv_status cv_etcd_lease_revoke(cv_etcd *c, int64_t id, cv_error *err);

/* Calls (of any thread) that ended in an error: no endpoint answered in time, or
 * etcd answered with an error status. A compare that fails in a txn is no error. */
uint64_t cv_etcd_failed_calls(cv_etcd *c);

void cv_etcd_kv_free(cv_etcd_kv *kv);
void cv_etcd_range_result_free(cv_etcd_range_result *r);
void cv_etcd_txn_result_free(cv_etcd_txn_result *r);

/* For the watch module, which holds its own streaming connections. */
size_t cv_etcd_endpoint_count(const cv_etcd *c);
const char *cv_etcd_endpoint(const cv_etcd *c, size_t i);
size_t cv_etcd_preferred(const cv_etcd *c);
void cv_etcd_set_preferred(cv_etcd *c, size_t i);
const cv_etcd_config *cv_etcd_get_config(const cv_etcd *c);
/* Full-jitter delay for retry round `round` (0-based): uniform in [0, min(max, base*2^round)]. */
int cv_etcd_backoff_ms(const cv_etcd_config *cfg, unsigned round, uint64_t *rng);
/* Maps a gRPC status code (as the gateway reports it) onto a cv_status. */
cv_status cv_etcd_grpc_status(int grpc_code);

#endif
