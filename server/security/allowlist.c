#include "allowlist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rule {
    cv_ip net;
    int prefix;  /* bits */
} rule;

struct cv_allowlist {
    rule *rules;
    size_t n;
};

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ::ffff:a.b.c.d becomes a.b.c.d; *bits (a prefix length, may be NULL) follows. */
static void unmap(cv_ip *ip, int *bits) {
    if (ip->family != 6 || memcmp(ip->a, v4_mapped, 12) != 0) return;
    if (bits && *bits < 96) return;
    memmove(ip->a, ip->a + 12, 4);
    memset(ip->a + 4, 0, 12);
    ip->family = 4;
    if (bits) *bits -= 96;
}

static int parse_addr(const char *s, cv_ip *out) {
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, s, out->a) == 1) {
        out->family = 4;
        return 1;
    }
    if (inet_pton(AF_INET6, s, out->a) == 1) {
        out->family = 6;
        return 1;
    }
    return 0;
}

void cv_ip_format(const cv_ip *ip, char buf[64]) {
    if (!inet_ntop(ip->family == 4 ? AF_INET : AF_INET6, ip->a, buf, 64)) snprintf(buf, 64, "?");
}

static void peer_excerpt(const char *peer, char buf[104]) {
    size_t k = 0;
    for (; peer[k] && k < 96; k++)
        buf[k] = isprint((unsigned char)peer[k]) ? peer[k] : '?';
    if (peer[k]) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s into out (NUL-terminated); 0 on a bad escape or overflow. */
static int pct_decode(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s; s++) {
        char c = *s;
        if (c == '%') {
            int h = hexval(s[1]), l = h < 0 ? -1 : hexval(s[2]);
            if (l < 0) return 0;
            c = (char)(h << 4 | l);
            s += 2;
        }
        if (c == 0 || o + 1 >= cap) return 0;
        out[o++] = c;
    }
    out[o] = 0;
    return 1;
}

static int valid_port(const char *p) {
    size_t n = strspn(p, "0123456789");
    return n >= 1 && n <= 5 && p[n] == 0 && atoi(p) <= 65535;
}

cv_status cv_ip_parse_peer(const char *peer, cv_ip *out, cv_error *err) {
    char q[104], buf[128];
    peer_excerpt(peer, q);
    if (strncmp(peer, "ipv4:", 5) == 0) {
        const char *colon = strrchr(peer + 5, ':');
        size_t n = colon ? (size_t)(colon - peer - 5) : 0;
        if (!colon || n == 0 || n >= sizeof buf || !valid_port(colon + 1))
            return cv_errorf(err, CV_EFORMAT, "peer '%s' is not ipv4:ADDR:PORT", q);
        memcpy(buf, peer + 5, n);
        buf[n] = 0;
        memset(out, 0, sizeof *out);
        if (inet_pton(AF_INET, buf, out->a) != 1)
            return cv_errorf(err, CV_EFORMAT, "peer '%s': '%s' is not an IPv4 address", q, buf);
        out->family = 4;
        return CV_OK;
    }
    if (strncmp(peer, "ipv6:", 5) == 0) {
        /* Core percent-encodes the URI ("%5B::1%5D"); a raw "[::1]" is taken as is. */
        int raw = peer[5] == '[' && strlen(peer + 5) < sizeof buf;
        if (raw) strcpy(buf, peer + 5);
        if ((!raw && !pct_decode(peer + 5, buf, sizeof buf)) || buf[0] != '[')
            return cv_errorf(err, CV_EFORMAT, "peer '%s' is not ipv6:[ADDR]:PORT", q);
        char *close = strchr(buf, ']');
        if (!close || close[1] != ':' || !valid_port(close + 2))
            return cv_errorf(err, CV_EFORMAT, "peer '%s' is not ipv6:[ADDR]:PORT", q);
        *close = 0;
        char *zone = strchr(buf, '%');
        if (zone) *zone = 0;
        memset(out, 0, sizeof *out);
        if (inet_pton(AF_INET6, buf + 1, out->a) != 1)
            return cv_errorf(err, CV_EFORMAT, "peer '%s': '%s' is not an IPv6 address", q, buf + 1);
        out->family = 6;
        unmap(out, NULL);
        return CV_OK;
    }
    if (strncmp(peer, "unix:", 5) == 0 || strncmp(peer, "unix-abstract:", 14) == 0)
        return cv_errorf(err, CV_EUNSUPPORTED, "peer '%s' is a unix socket: it has no IP address", q);
    return cv_errorf(err, CV_EFORMAT, "peer '%s' is not ipv4:ADDR:PORT or ipv6:[ADDR]:PORT", q);
}

cv_status cv_allowlist_new(cv_allowlist **out, cv_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? CV_OK : cv_errorf(err, CV_ENOMEM, "allowlist: out of memory");
}

void cv_allowlist_free(cv_allowlist *a) {
    if (!a) return;
    free(a->rules);
    free(a);
}

size_t cv_allowlist_count(const cv_allowlist *a) { return a->n; }

/* 1 when the bits of x beyond prefix are all zero. */
static int host_bits_zero(const uint8_t *x, int prefix, int total) {
    for (int b = prefix; b < total; b++)
        if (x[b / 8] & (0x80 >> (b % 8))) return 0;
    return 1;
}

static int prefix_equal(const uint8_t *x, const uint8_t *y, int prefix) {
    int whole = prefix / 8, rest = prefix % 8;
    if (memcmp(x, y, (size_t)whole) != 0) return 0;
    if (!rest) return 1;
    uint8_t m = (uint8_t)(0xff << (8 - rest));
    return (x[whole] & m) == (y[whole] & m);
}

cv_status cv_allowlist_add(cv_allowlist *a, const char *cidr, cv_error *err) {
    char addr[64];
    const char *slash = strchr(cidr, '/');
    size_t n = slash ? (size_t)(slash - cidr) : strlen(cidr);
    if (n == 0 || n >= sizeof addr)
        return cv_errorf(err, CV_EINVAL, "allowlist rule '%.80s' is not ADDR or ADDR/PREFIX", cidr);
    memcpy(addr, cidr, n);
    addr[n] = 0;
    rule r;
    if (!parse_addr(addr, &r.net))
        return cv_errorf(err, CV_EINVAL, "allowlist rule '%.80s': '%s' is not an IPv4 or IPv6 address",
                         cidr, addr);
    int total = r.net.family == 4 ? 32 : 128;
    r.prefix = total;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] || atoi(p) > total)
            return cv_errorf(err, CV_EINVAL, "allowlist rule '%.80s': prefix must be 0..%d", cidr,
                             total);
        r.prefix = atoi(p);
    }
    if (!host_bits_zero(r.net.a, r.prefix, total)) {
        char net[64];
        cv_ip masked = r.net;
        for (int b = r.prefix; b < total; b++) masked.a[b / 8] &= (uint8_t)~(0x80 >> (b % 8));
        cv_ip_format(&masked, net);
        return cv_errorf(err, CV_EINVAL, "allowlist rule '%.80s' has host bits set beyond /%d "
                         "(did you mean %s/%d?)", cidr, r.prefix, net, r.prefix);
    }
    unmap(&r.net, &r.prefix);
    rule *rules = realloc(a->rules, (a->n + 1) * sizeof *rules);
    if (!rules) return cv_errorf(err, CV_ENOMEM, "allowlist: out of memory");
    a->rules = rules;
    a->rules[a->n++] = r;
    return CV_OK;
}

int cv_allowlist_allows(const cv_allowlist *a, const cv_ip *ip) {
    if (a->n == 0) return 1;
    cv_ip x = *ip;
    unmap(&x, NULL);
    for (size_t i = 0; i < a->n; i++)
        if (a->rules[i].net.family == x.family &&
            prefix_equal(a->rules[i].net.a, x.a, a->rules[i].prefix))
            return 1;
    return 0;
}
