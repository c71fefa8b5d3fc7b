/* allowlist: which client IP addresses may call the server (CIDR rules, v4 and v6).
 *
 * Rules are "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). A rule
 * with bits set beyond its prefix ("10.0.0.1/8") is refused as a likely typo. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address a.b.c.d, both as a
 * peer and as a rule (::ffff:0:0/96 and longer), so v4 rules cover clients reaching a
 * dual-stack listener. An empty list allows everyone.
 *
 * Peers are the strings gRPC core reports: "ipv4:127.0.0.1:5000", and for IPv6
 * "ipv6:[::1]:5000" or, as core 1.51 writes it, percent-encoded "ipv6:%5B::1%5D:5000"
 * (a zone "%25eth0" is ignored). Anything else (unix sockets included) is an error
 * naming the form, which an allowlist with rules treats as denied.
 * A built list is read-only: cv_allowlist_allows is safe from many threads.
 */
#ifndef CV_ALLOWLIST_H
#define CV_ALLOWLIST_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_ip {
    int family;     /* 4 or 6; a v4-mapped v6 address is stored as 4 */
    uint8_t a[16];  /* network order; v4 in a[0..4) */
} cv_ip;

/* A gRPC peer string to its address (the port is checked and dropped). */
cv_status cv_ip_parse_peer(const char *peer, cv_ip *out, cv_error *err);
/* Text form for messages and logs ("10.1.2.3", "2001:db8::1"). */
void cv_ip_format(const cv_ip *ip, char buf[64]);

typedef struct cv_allowlist cv_allowlist;

cv_status cv_allowlist_new(cv_allowlist **out, cv_error *err);
void cv_allowlist_free(cv_allowlist *a);
cv_status cv_allowlist_add(cv_allowlist *a, const char *cidr, cv_error *err);
size_t cv_allowlist_count(const cv_allowlist *a);
/* 1 when an empty list or some rule covers ip. */
int cv_allowlist_allows(const cv_allowlist *a, const cv_ip *ip);

#endif
