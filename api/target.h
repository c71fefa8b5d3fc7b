/* target: a server address as the user writes it, turned into a gRPC target.
 *
 * Accepted: "HOST:PORT" (one server), "dns:///NAME:PORT" or "dns://RESOLVER/NAME:PORT"
 * (every address the name resolves to, re-resolved when connections drop), gRPC's
 * "ipv4:A:P,B:P" / "ipv6:[A]:P,..." lists, and a bare list of IP literals
 * "A:P,B:P" (all IPv4 or all [IPv6]) which becomes the matching ipv4:/ipv6: target.
 * The channel balances round-robin over whatever the target names (rpc_client.c).
 */
#ifndef CV_CLIENT_TARGET_H
#define CV_CLIENT_TARGET_H

#include <stddef.h>

#include "corvid/client.h"

/* Writes the gRPC target for addr into out (cap bytes); -1 with err on a malformed list. */
int cv_target_resolve(const char *addr, char *out, size_t cap, corvid_error *err);

#endif
