#include "target.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "rpc_client.h"

/* One "IP:PORT" (or "[IPv6]:PORT") of a bare list; 4 or 6 for its family, 0 if malformed. */
static int entry_family(const char *s, size_t n) {
    char host[64];
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':') colon = s + i;
    if (!colon || colon == s || (size_t)(s + n - colon) < 2 || (size_t)(s + n - colon) > 6) return 0;
    for (const char *p = colon + 1; p < s + n; p++)
        if (*p < '0' || *p > '9') return 0;
    size_t hl = (size_t)(colon - s);
    int v6 = s[0] == '[';
    if (v6 && (hl < 3 || s[hl - 1] != ']')) return 0;
    if (v6) s++, hl -= 2;
    if (hl >= sizeof host) return 0;
    memcpy(host, s, hl);
    host[hl] = 0;
    unsigned char buf[16];
    return inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) == 1 ? (v6 ? 6 : 4) : 0;
}

int cv_target_resolve(const char *addr, char *out, size_t cap, corvid_error *err) {
    /* A scheme ("dns:", "ipv4:", "unix:") or a single address goes to gRPC unchanged. */
    if (!strchr(addr, ',') || strstr(addr, ":/") || !strncmp(addr, "ipv4:", 5) || !strncmp(addr, "ipv6:", 5)) {
        if ((size_t)snprintf(out, cap, "%s", addr) >= cap)
            return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "server address is too long (%zu bytes)", strlen(addr));
        return 0;
    }
    int family = 0;
    for (const char *p = addr;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int f = entry_family(p, n);
        if (!f)
            return cv_rpcc_fail(err, CORVID_CLIENT_ERROR,
                                "address list \"%.200s\": \"%.*s\" is not IP:PORT (names need dns:///NAME:PORT)",
                                addr, (int)(n > 100 ? 100 : n), p);
        if (family && f != family)
            return cv_rpcc_fail(err, CORVID_CLIENT_ERROR,
                                "address list \"%.200s\" mixes IPv4 and IPv6 addresses", addr);
        family = f;
        if (!end) break;
        p = end + 1;
    }
    if ((size_t)snprintf(out, cap, "ipv%d:%s", family, addr) >= cap)
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "server address list is too long (%zu bytes)", strlen(addr));
    return 0;
}
