/* cv_cp_config: the control plane's JSON configuration, checked strictly.
 *
 * {
 *   "etcd": "http://127.0.0.1:2379[,...]",   endpoints (the CLI's --etcd overrides)
 *   "prefix": "/corvid",                      key prefix
 *   "id": "cp-1",                             election id (default host:pid)
 *   "servers": ["127.0.0.1:50051", ...],      a static list, or
 *   "dns": {"name": "corvid.ns.svc", "port": 50051, "refresh_ms": 10000},
 *   "poll_ms": 500,                           reconcile timer (also on every etcd event)
 *   "election_ttl_s": 10,
 *   "admin_timeout_ms": 2000,                 one Admin call
 *   "stage_deadline_s": 300, "observe_deadline_s": 600, "unmeasurable_deadline_s": 60,
 *   "shift_deadline_s": 60,
 *   "keep_previous_s": 300,                   old version stays loaded after promotion
 *   "smoke_prompt": "Hello", "smoke_tokens": 4,
 *   "metrics_listen": "0.0.0.0:9465",         /metrics, /healthz, /readyz (off when absent)
 *   "otlp_endpoint": "http://otel:4318/v1/traces",  each rollout a trace, its phases spans (off when absent)
 *   "server_tls": {"ca": "ca.pem",            TLS to the servers' Admin API (off when
 *                  "cert": "c.pem", "key": "c.key",   absent); cert+key: mTLS;
 *                  "server_name": "corvid.ns.svc"},   name checked in their certificate
 *                                             (default: the address's host)
 *   "server_token_file": "/run/token",        bearer token (admin scope) for the servers,
 *   "server_token_env": "CORVID_TOKEN",       from a file or an environment variable
 *   "defaults": {rollout fields, see rollout.h: strategy, steps, max_error_rate,
 *                max_p99_ttft_ms, window_ms, min_requests, failure_limit}
 * }
 * Unknown keys, wrong types and out-of-range values are refused with the key named.
 * Exactly one of "servers" and "dns" is required; at most one token source. Parsing
 * reads no file: server_creds.h loads the TLS material and the token at start, and
 * again when the files change.
 */
#ifndef CV_CP_CONFIG_H
#define CV_CP_CONFIG_H

#include <stddef.h>

#include "cv_error.h"
#include "rollout.h"

#define CV_CP_MAX_SERVERS 64

typedef struct cv_cp_config {
    char etcd[1024];
    char prefix[128];
    char id[128];
    char *servers[CV_CP_MAX_SERVERS]; /* static list (n_servers > 0) */
    size_t n_servers;
    char dns_name[256]; /* or a DNS name ("" when static) */
    int dns_port;
    int dns_refresh_ms;
    int poll_ms;
    int election_ttl_s;
    int admin_timeout_ms;
    int stage_deadline_s, shift_deadline_s, observe_deadline_s, unmeasurable_deadline_s;
    int keep_previous_s;
    char smoke_prompt[256];
    int smoke_tokens;
    char metrics_listen[128]; /* "" when off */
    char otlp_endpoint[512];  /* OTLP/HTTP traces URL: rollout steps as spans; "" when off */
    char tls_ca[512], tls_cert[512], tls_key[512], tls_server_name[256]; /* tls_ca "": plaintext */
    char token_file[512], token_env[128];                                   /* both "": none */
    cv_rollout_spec defaults;
} cv_cp_config;

/* Fills every field with its default (no servers). */
void cv_cp_config_defaults(cv_cp_config *cfg);
/* Parses text (len bytes) over the defaults. */
cv_status cv_cp_config_parse(const char *text, size_t len, cv_cp_config *cfg, cv_error *err);
cv_status cv_cp_config_load(const char *path, cv_cp_config *cfg, cv_error *err);
void cv_cp_config_free(cv_cp_config *cfg);

#endif
