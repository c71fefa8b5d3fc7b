/* tls_files: the PEM material of a TLS listener (certificate chain, private key,
 * optional client CA for mTLS), read and checked together, and noticed when it
 * changes on disk so that gRPC can take new certificates without a restart.
 *
 * Loading checks what a handshake would otherwise find too late: the chain parses,
 * the key parses and belongs to the first certificate, the CA file holds at least one
 * certificate. cv_tls_files_check is cheap enough for gRPC's per-handshake
 * certificate-config fetcher: it stat()s the files (at most once per min_interval_s)
 * and reads them only when inode, size or mtime moved; new content (SHA-256 differs)
 * that passes the checks comes back as a new cv_tls_files, while a half-written or
 * mismatched set is an error and the caller keeps serving the old one.
 * The PEM strings are NUL-terminated, as grpc_ssl_server_certificate_config_create
 * wants them; the key is wiped when freed.
 */
#ifndef CV_TLS_FILES_H
#define CV_TLS_FILES_H

#include <stdint.h>
#include <time.h>

#include "cv_error.h"

typedef struct cv_tls_paths {
    const char *cert;  /* PEM chain, leaf first */
    const char *key;   /* PEM private key */
    const char *ca;    /* PEM CA bundle for client certificates; NULL: no mTLS */
} cv_tls_paths;

typedef struct cv_tls_files cv_tls_files;

cv_status cv_tls_files_load(const cv_tls_paths *paths, cv_tls_files **out, cv_error *err);
void cv_tls_files_free(cv_tls_files *t);

/* Unchanged: CV_OK and *fresh = NULL. Changed and valid: CV_OK and *fresh, loaded
 * from the same paths (the caller swaps it in and frees the old one). Changed but not
 * valid: an error naming the file. now_s: a monotonic clock in seconds (for the
 * min_interval_s throttle; 0 disables it). Not thread-safe on one t (the stat cache
 * is updated): hold a mutex around it in the fetcher callback. */
cv_status cv_tls_files_check(cv_tls_files *t, double now_s, double min_interval_s,
                             cv_tls_files **fresh, cv_error *err);

const char *cv_tls_files_cert_pem(const cv_tls_files *t);
const char *cv_tls_files_key_pem(const cv_tls_files *t);
const char *cv_tls_files_ca_pem(const cv_tls_files *t);  /* NULL without a CA */
/* The leaf certificate's notAfter (Unix time), for an expiry metric. */
int64_t cv_tls_files_not_after(const cv_tls_files *t);

#endif
