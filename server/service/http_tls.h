/* http_tls: the HTTPS credentials of the HTTP API, for libmicrohttpd's GnuTLS.
 *
 * Same files and same guarantees as the gRPC listener (tls_files.h): the certificate
 * chain and key are served through a GnuTLS retrieve callback that re-checks the files
 * on handshakes (stat at most once a second), so a rotated pair is served without a
 * restart while a half-written or mismatched one is logged and the old pair kept.
 * With a client CA (mTLS) the daemon asks every client for a certificate and
 * cv_http_tls_client_ok admits a connection only when its chain verifies against the
 * CA files as they are now (rotated CAs apply to the next request) and is meant for
 * client authentication; the HTTP layer answers the others 401 before any handler runs.
 *
 * GnuTLS's callback carries no user pointer, so one cv_http_tls is active per process
 * (a second cv_http_tls_start fails). Replaced credentials stay allocated until
 * cv_http_tls_free: a handshake on the daemon thread may still hold them, and rotations
 * are rare (a few KB each).
 */
#ifndef CV_HTTP_TLS_H
#define CV_HTTP_TLS_H

#include <stddef.h>

#include "cv_error.h"
#include "tls_files.h"

typedef struct cv_http_tls cv_http_tls;
struct MHD_Connection;
struct MHD_OptionItem;

cv_status cv_http_tls_new(const cv_tls_paths *paths, cv_http_tls **out, cv_error *err);
/* Fills the daemon's TLS options into items (at least CV_HTTP_TLS_OPTIONS entries, ending
 * with MHD_OPTION_END) and makes t the process's active credentials. */
#define CV_HTTP_TLS_OPTIONS 3
cv_status cv_http_tls_start(cv_http_tls *t, struct MHD_OptionItem *items, cv_error *err);
/* 1: the connection may go on (no mTLS, or a client certificate that verifies); 0: why
 * says what is wrong with the client's certificate. */
int cv_http_tls_client_ok(cv_http_tls *t, struct MHD_Connection *c, char *why, size_t cap);
void cv_http_tls_free(cv_http_tls *t);

#endif
