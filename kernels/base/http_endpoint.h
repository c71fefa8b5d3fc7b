/* http_endpoint: the plain-HTTP side of corvid-server and corvid-controlplane
 * (libmicrohttpd): /metrics in Prometheus text, /healthz (alive) and /readyz (what
 * "ready" means is the caller's: a model serving, etcd reached). Handlers run on MHD's
 * own thread and only call the given callbacks, which must be thread-safe.
 * It lives in the base library, beside cv_error, because both binaries link it and
 * neither may depend on the other's library.
 */
#ifndef CV_HTTP_ENDPOINT_H
#define CV_HTTP_ENDPOINT_H

#include "cv_error.h"

typedef struct cv_http_callbacks {
    char *(*metrics)(void *ctx);   /* malloc'd exposition text, NULL on failure */
    int (*ready)(void *ctx);       /* 1 when ready for traffic */
    void *ctx;
} cv_http_callbacks;

typedef struct cv_http cv_http;

/* Whether addr is "HOST:PORT" as cv_http_start takes it (for config checks). */
cv_status cv_http_check_addr(const char *addr, cv_error *err);
/* addr is "HOST:PORT" (IPv4 or [IPv6]); port 0 picks one, reported in *port. */
cv_status cv_http_start(const char *addr, const cv_http_callbacks *cb, cv_http **out, int *port,
                        cv_error *err);
void cv_http_stop(cv_http *h);

#endif
