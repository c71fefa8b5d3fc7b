/* Fuzzes the control plane's JSON parsers: the config file, and the rollout spec and
 * status that come out of etcd (written by anyone with access to it).
 *
 * The first byte picks the parser; the rest is its input. A status that parses must
 * encode back and parse to the same struct; a spec that parses must have valid steps;
 * a config that parses holds TLS material only with its CA, a client certificate only
 * with its key, and at most one token source.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cp_config.h"
#include "rollout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    cv_cp_config cfg;
    cv_cp_config_defaults(&cfg);
    switch (data[0] % 3) {
    case 0:
        if (cv_cp_config_parse(text, len, &cfg, NULL) != CV_OK) break;
        if ((cfg.tls_cert[0] || cfg.tls_key[0] || cfg.tls_server_name[0]) && !cfg.tls_ca[0]) abort();
        if (!cfg.tls_cert[0] != !cfg.tls_key[0] || (cfg.token_file[0] && cfg.token_env[0])) abort();
        break;
    case 1: {
        cv_rollout_spec spec;
        if (cv_rollout_spec_parse(text, len, &cfg.defaults, &spec, NULL) == CV_OK) {
            if (spec.n_steps < 1 || spec.n_steps > CV_ROLLOUT_MAX_STEPS ||
                spec.steps[spec.n_steps - 1] != 100)
                abort();
        }
        break;
    }
    default: {
        cv_rollout_status a, b;
        if (cv_rollout_status_parse(text, len, &a, NULL) != CV_OK) break;
        char *json = cv_rollout_status_json(&a);
        if (!json) break;
        if (cv_rollout_status_parse(json, strlen(json), &b, NULL) != CV_OK ||
            memcmp(&a, &b, sizeof a) != 0)
            abort();
        free(json);
        break;
    }
    }
    cv_cp_config_free(&cfg);
    return 0;
}
