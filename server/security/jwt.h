/* jwt: verifies compact JWS bearer tokens (RFC 7515/7519) against pinned keys.
 *
 * Each key carries the one algorithm it may verify (HS256, RS256 or ES256): the
 * token's "alg" header must equal it, so "none", a downgrade or the HS256-with-the-
 * RSA-public-key confusion can never pass. A token with a "kid" header is checked
 * against that key only; without "kid", against every key pinned to the header's alg.
 *
 * Order (nothing in the payload is trusted before its signature is): sizes, three
 * strict base64url parts (no padding, no stray bits), header JSON, key choice,
 * signature, then claims: exp (required unless disabled) and nbf with a leeway, iss,
 * aud (string or array), sub (required), scopes from "scope" (space-separated) or
 * "scp"/"scopes" (array, or a space-separated string).
 *
 * Every failure is a cv_error (CV_EAUTH, or CV_EFORMAT for a malformed token) whose
 * message says what was wrong and never contains the token; values quoted from a
 * token (kid, iss, aud) are cut to 64 bytes with non-printable bytes replaced.
 * A configured verifier is read-only: cv_jwt_verify is safe from many threads.
 */
#ifndef CV_JWT_H
#define CV_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

#define CV_JWT_MAX_TOKEN 8192   /* bytes of the compact form */
#define CV_JWT_MAX_SUBJECT 255  /* bytes of "sub" */
#define CV_JWT_MIN_HMAC_KEY 32  /* RFC 7518 3.2: a key at least as long as the hash */
#define CV_JWT_MIN_RSA_BITS 2048

typedef enum cv_jwt_alg { CV_JWT_HS256, CV_JWT_RS256, CV_JWT_ES256 } cv_jwt_alg;

/* Scopes the server knows; others in a token are ignored. */
enum { CV_SCOPE_INFERENCE = 1u << 0, CV_SCOPE_ADMIN = 1u << 1 };

typedef struct cv_jwt_verifier cv_jwt_verifier;

typedef struct cv_jwt_claims {
    char subject[CV_JWT_MAX_SUBJECT + 1];
    unsigned scopes;  /* CV_SCOPE_* bits */
    int64_t exp;      /* 0 when the token has none */
} cv_jwt_claims;

/* Unix time in seconds. */
typedef int64_t (*cv_jwt_clock)(void *ctx);

cv_status cv_jwt_verifier_new(cv_jwt_verifier **out, cv_error *err);
void cv_jwt_verifier_free(cv_jwt_verifier *v);

/* kid may be NULL (a key for tokens without "kid"); kids are unique. */
cv_status cv_jwt_add_hmac_key(cv_jwt_verifier *v, const char *kid, const uint8_t *secret,
                              size_t len, cv_error *err);
/* A PEM "PUBLIC KEY" (SubjectPublicKeyInfo): RSA of at least 2048 bits for RS256,
 * EC P-256 for ES256. A key of the wrong type for alg is an error here, not later. */
cv_status cv_jwt_add_pem_key(cv_jwt_verifier *v, const char *kid, cv_jwt_alg alg,
                             const char *pem, size_t len, cv_error *err);
/* NULL: any issuer. */
cv_status cv_jwt_set_issuer(cv_jwt_verifier *v, const char *iss, cv_error *err);
/* Accepted audiences; with none added, "aud" is not checked. */
cv_status cv_jwt_add_audience(cv_jwt_verifier *v, const char *aud, cv_error *err);
void cv_jwt_set_leeway(cv_jwt_verifier *v, int64_t seconds);
void cv_jwt_set_require_exp(cv_jwt_verifier *v, int require);
/* Default: time(NULL). */
void cv_jwt_set_clock(cv_jwt_verifier *v, cv_jwt_clock now, void *ctx);
size_t cv_jwt_key_count(const cv_jwt_verifier *v);

cv_status cv_jwt_verify(const cv_jwt_verifier *v, const char *token, size_t len,
                        cv_jwt_claims *out, cv_error *err);

/* "HS256" -> CV_JWT_HS256; -1 for anything else (including "none"). */
int cv_jwt_alg_parse(const char *name);
const char *cv_jwt_alg_name(cv_jwt_alg alg);

#endif
