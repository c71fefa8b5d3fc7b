/* cv_fleet: the corvid-servers a control plane drives, from its config.
 *
 * A static list of host:port, or a DNS name whose A/AAAA records (a Kubernetes
 * headless Service) are re-resolved every dns_refresh_ms: addresses that appear join
 * the fleet, addresses that vanish leave it. A failed resolution keeps the last
 * membership (a DNS outage must not empty the fleet). A DNS fleet is empty until
 * its first cv_fleet_refresh.
 *
 * cv_fleet_probe calls Admin.GetStatus on every server in parallel, each bounded by
 * admin_timeout_ms; a server that does not answer is unreachable until it does.
 * Every client presents the same credentials (TLS CA, client certificate, token);
 * cv_fleet_set_creds replaces every client, closing the connections made with the old
 * set, so a revoked token or certificate is not presented again.
 * Servers are owned by the fleet; pointers stay valid until the next refresh.
 */
#ifndef CV_FLEET_H
#define CV_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include "corvid/client.h"
#include "cp_config.h"
#include "server_creds.h"

typedef struct cv_fleet_server {
    char addr[288];
    corvid_client *client;
    bool reachable;
    char error[512];             /* why the last probe failed */
    int error_code;              /* its status code (corvid/client.h) */
    bool changed;                /* the last probe changed reachable or error (worth a log) */
    corvid_server_status status; /* the last probe's answer, when reachable */
} cv_fleet_server;

typedef struct cv_fleet cv_fleet;

/* cfg must outlive the fleet; creds must stay until cv_fleet_set_creds replaces them
 * (servers that join later get clients made from them). */
cv_status cv_fleet_open(const cv_cp_config *cfg, const cv_server_creds *creds, cv_fleet **out,
                        cv_error *err);
/* A new client for every server, made from creds; all or nothing: on failure the old
 * clients and credentials stay. Not while a cv_fleet_probe runs. */
cv_status cv_fleet_set_creds(cv_fleet *f, const cv_server_creds *creds, cv_error *err);
void cv_fleet_close(cv_fleet *f);
/* Re-resolves the DNS name when due; *changed says whether membership moved. */
cv_status cv_fleet_refresh(cv_fleet *f, int64_t now_ms, bool *changed, cv_error *err);
/* GetStatus on every server in parallel over a window of window_s seconds. */
void cv_fleet_probe(cv_fleet *f, uint32_t window_s);
size_t cv_fleet_count(const cv_fleet *f);
cv_fleet_server *cv_fleet_at(cv_fleet *f, size_t i);
/* The slot of `version` in a probed server's status, NULL when absent. */
const corvid_slot_status *cv_fleet_slot(const cv_fleet_server *s, const char *version);
/* Resolves name:port into "ip:port" strings ("[v6]:port"), sorted, duplicates dropped.
 * *addrs is malloc'd, each string too: cv_fleet_addrs_free. */
cv_status cv_fleet_resolve(const char *name, int port, char ***addrs, size_t *n, cv_error *err);
void cv_fleet_addrs_free(char **addrs, size_t n);

#endif
