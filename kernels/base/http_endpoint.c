#include "http_endpoint.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct cv_http {
    struct MHD_Daemon *d;
    cv_http_callbacks cb;
};

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *type, char *body,
                               enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version, (void)upload, (void)upload_size, (void)state;
    cv_http *h = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond(c, 405, "text/plain", "method not allowed\n", MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics") == 0) {
        char *text = h->cb.metrics(h->cb.ctx);
        if (!text) return respond(c, 500, "text/plain", "out of memory\n", MHD_RESPMEM_PERSISTENT);
        return respond(c, 200, "text/plain; version=0.0.4", text, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0) return respond(c, 200, "text/plain", "ok\n", MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/readyz") == 0) {
        if (h->cb.ready(h->cb.ctx)) return respond(c, 200, "text/plain", "ready\n", MHD_RESPMEM_PERSISTENT);
        return respond(c, 503, "text/plain", "not ready\n", MHD_RESPMEM_PERSISTENT);
    }
    return respond(c, 404, "text/plain", "not found: try /metrics, /healthz or /readyz\n", MHD_RESPMEM_PERSISTENT);
}

/* "HOST:PORT" or "[V6]:PORT" into a socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len) {
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']') return -1;
        host[n - 1] = 0;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1) return -1;
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
        *len = sizeof *a;
    }
    return 0;
}

cv_status cv_http_check_addr(const char *addr, cv_error *err) {
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_addr(addr, &ss, &sl) != 0)
        return cv_errorf(err, CV_EINVAL, "metrics_listen: \"%s\" is not IPv4:PORT or [IPv6]:PORT", addr);
    return CV_OK;
}

cv_status cv_http_start(const char *addr, const cv_http_callbacks *cb, cv_http **out, int *port,
                        cv_error *err) {
    struct sockaddr_storage ss;
    socklen_t sl;
    cv_status st = cv_http_check_addr(addr, err);
    if (st) return st;
    parse_addr(addr, &ss, &sl);
    cv_http *h = calloc(1, sizeof *h);
    if (!h) return cv_errorf(err, CV_ENOMEM, "metrics endpoint: out of memory");
    h->cb = *cb;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return cv_errorf(err, CV_EIO, "metrics endpoint: cannot listen on %s (address in use?)", addr);
    }
    if (port) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
        *port = info ? info->port : 0;
    }
    *out = h;
    return CV_OK;
}

void cv_http_stop(cv_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}
