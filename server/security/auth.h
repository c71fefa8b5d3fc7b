/* auth: who may call which gRPC method; one check per call, made by the rpc layer.
 *
 * Built from the "auth" JSON section (every key checked; unknown keys are errors):
 *   {"jwt": {"keys": [{"kid": "k1", "alg": "HS256", "secret_file": "/run/secrets/jwt"},
 *                     {"alg": "HS256", "secret_env": "CORVID_JWT_SECRET"},
 *                     {"kid": "idp", "alg": "RS256", "public_key_file": "/etc/corvid/idp.pem"}],
 *            "issuer": "https://idp.example", "audience": "corvid" | ["corvid", ...],
 *            "leeway_s": 30, "require_exp": true},
 *    "allowlist": ["10.0.0.0/8", "::1/128"],
 *    "rate_limit": {"per_second": 5, "burst": 10, "max_subjects": 10000},
 *    "audit_log": "/var/log/corvid/audit.jsonl" | "-" (stderr),
 *    "audit_max_mb": 64, "audit_keep": 4, "audit_interval_s": 10, "audit_max_keys": 1024}
 * Each key has exactly one of secret_file / secret_env (HS256: raw bytes, at least 32,
 * one trailing newline of a file dropped) or public_key_file (RS256/ES256: PEM
 * SubjectPublicKeyInfo). leeway_s: 0..600, default 30. burst defaults to per_second
 * (at least 1). No "jwt": no token needed. No "allowlist" or []: any address. No
 * "rate_limit": unlimited. No "audit_log": failures are not audited.
 * The audit log (audit.h) starts anew past audit_max_mb (0..1048576, fractions
 * allowed; 0: never, rotate it outside and send SIGHUP), keeping audit_keep (0..1000)
 * older files PATH.1..PATH.N: at most (audit_keep + 1) x audit_max_mb on disk. Auth
 * failures are counted per client address, reason and verified subject and written
 * as one line with a count every audit_interval_s (0.1..3600) and at shutdown, at
 * most audit_max_keys (1..1000000) keys an interval plus one line for the rest
 * (audit_tally.h). The audit_* keys need audit_log; none of them rotates stderr.
 *
 * cv_auth_check, in order: /grpc.health.v1.Health/ methods pass untouched (probes);
 * the peer must be in the allowlist (PERMISSION_DENIED); with jwt, the
 * "authorization: Bearer <JWT>" metadata must verify (UNAUTHENTICATED) and carry the
 * method's scope: /corvid.v1.Admin/ needs admin, /corvid.v1.Inference/ needs
 * inference, and so do the OpenAI-compatible HTTP paths (/v1/...), any other method
 * needs admin (deny by default) (PERMISSION_DENIED);
 * then one token from the caller's bucket, keyed by subject, else by client IP
 * (RESOURCE_EXHAUSTED, with the wait). Allowlist and token failures are counted into
 * the audit log as auth_failure lines with reasons not_in_allowlist, not_ip_client,
 * no_token, bad_scheme, invalid_token, missing_scope; rate-limit refusals are not
 * audited (the metrics count them).
 * The names of the verdicts in the comment above are the gRPC codes they map to.
 * Messages never contain the token. Thread-safe; safe on the completion-queue thread
 * (a refusal costs a table lookup, the audit writes happen on the tally's thread).
 */
#ifndef CV_AUTH_H
#define CV_AUTH_H

#include <jansson.h>

#include "audit.h"
#include "jwt.h"
#include "pii.h"
#include "ratelimit.h"

/* What the check decided. The protocol layer maps it to its own status (gRPC
 * UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED, HTTP 401 / 403 / 429), so
 * this layer knows no protocol. */
typedef enum cv_auth_verdict {
    CV_AUTH_ALLOW = 0,
    CV_AUTH_UNAUTHENTICATED,  /* no credentials, or they do not verify */
    CV_AUTH_DENIED,           /* the address or the token's scopes do not admit the call */
    CV_AUTH_RATE_LIMITED      /* the caller's bucket is empty */
} cv_auth_verdict;

/* Defaults of the audit_* keys. */
#define CV_AUTH_AUDIT_MAX_MB 64
#define CV_AUTH_AUDIT_KEEP 4
#define CV_AUTH_AUDIT_INTERVAL_S 10
#define CV_AUTH_AUDIT_MAX_KEYS 1024

typedef struct cv_auth_options {
    cv_jwt_clock wall;        /* NULL: time() */
    cv_ratelimit_clock mono;  /* NULL: CLOCK_MONOTONIC */
    void *clock_ctx;
    const cv_pii *pii;        /* masks audit details; NULL: none */
} cv_auth_options;

typedef struct cv_auth_result {
    cv_auth_verdict verdict;                /* CV_AUTH_ALLOW or the refusal */
    char message[512];                      /* the gRPC status message when refused */
    char subject[CV_JWT_MAX_SUBJECT + 1];   /* "" without a verified token */
    unsigned scopes;                        /* CV_SCOPE_* of the token */
    double retry_after_s;                   /* CV_AUTH_RATE_LIMITED: when a token is back */
} cv_auth_result;

typedef struct cv_auth cv_auth;

/* section NULL: everything off. opt may be NULL. */
cv_status cv_auth_new(const json_t *section, const cv_auth_options *opt, cv_auth **out,
                      cv_error *err);
/* The section from a JSON file holding just that object. */
cv_status cv_auth_load_file(const char *path, const cv_auth_options *opt, cv_auth **out,
                            cv_error *err);
void cv_auth_free(cv_auth *a);

/* authorization: the metadata value or NULL; peer: gRPC's peer string. */
cv_auth_verdict cv_auth_check(cv_auth *a, const char *method, const char *authorization,
                          const char *peer, cv_auth_result *res);

/* The audit log (NULL when none is configured), for admin actions and model loads. */
cv_audit *cv_auth_audit(cv_auth *a);
int cv_auth_requires_token(const cv_auth *a);

#endif
