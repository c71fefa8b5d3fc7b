#include "cp_config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cv_cp_config_defaults(cv_cp_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->prefix, sizeof cfg->prefix, "/corvid");
    char host[64] = "cp";
    gethostname(host, sizeof host - 1);
    snprintf(cfg->id, sizeof cfg->id, "%s:%d", host, (int)getpid());
    cfg->dns_refresh_ms = 10000;
    cfg->poll_ms = 500;
    cfg->election_ttl_s = 10;
    cfg->admin_timeout_ms = 2000;
    cfg->stage_deadline_s = 300;
    cfg->observe_deadline_s = 600;
    cfg->unmeasurable_deadline_s = 60;
    cfg->shift_deadline_s = 60;
    cfg->keep_previous_s = 300;
    snprintf(cfg->smoke_prompt, sizeof cfg->smoke_prompt, "Hello");
    cfg->smoke_tokens = 4;
    cv_rollout_spec *d = &cfg->defaults;
    d->steps[0] = 10, d->steps[1] = 50, d->steps[2] = 100;
    d->n_steps = 3;
    d->max_error_rate = 0.05;
    d->max_p99_ttft_ms = 0;
    d->window_ms = 60000;
    d->min_requests = 50;
    d->failure_limit = 2;
}

static cv_status str_field(json_t *v, const char *key, char *dst, size_t cap, cv_error *err) {
    if (!json_is_string(v)) return cv_errorf(err, CV_EFORMAT, "\"%s\" must be a string", key);
    if (json_string_length(v) == 0 || json_string_length(v) >= cap)
        return cv_errorf(err, CV_ERANGE, "\"%s\" is %zu bytes, allowed 1..%zu", key,
                         json_string_length(v), cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return CV_OK;
}

static cv_status int_field(json_t *v, const char *key, int lo, int hi, int *dst, cv_error *err) {
    if (!json_is_integer(v)) return cv_errorf(err, CV_EFORMAT, "\"%s\" must be an integer", key);
    json_int_t k = json_integer_value(v);
    if (k < lo || k > hi)
        return cv_errorf(err, CV_ERANGE, "\"%s\" is %lld, allowed %d..%d", key, (long long)k, lo, hi);
    *dst = (int)k;
    return CV_OK;
}

static cv_status servers_field(json_t *v, cv_cp_config *cfg, cv_error *err) {
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > CV_CP_MAX_SERVERS)
        return cv_errorf(err, CV_EFORMAT, "\"servers\" must be an array of 1..%d \"host:port\"",
                         CV_CP_MAX_SERVERS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || !strchr(json_string_value(e), ':') || json_string_length(e) > 255)
            return cv_errorf(err, CV_EFORMAT, "\"servers\"[%zu] must be a \"host:port\" string", i);
        if (!(cfg->servers[cfg->n_servers] = strdup(json_string_value(e))))
            return cv_errorf(err, CV_ENOMEM, "out of memory");
        cfg->n_servers++;
    }
    return CV_OK;
}

static cv_status dns_field(json_t *v, cv_cp_config *cfg, cv_error *err) {
    if (!json_is_object(v)) return cv_errorf(err, CV_EFORMAT, "\"dns\" must be an object");
    const char *key;
    json_t *f;
    cv_status st = CV_OK;
    json_object_foreach(v, key, f) {
        if (strcmp(key, "name") == 0)
            st = str_field(f, "dns.name", cfg->dns_name, sizeof cfg->dns_name, err);
        else if (strcmp(key, "port") == 0)
            st = int_field(f, "dns.port", 1, 65535, &cfg->dns_port, err);
        else if (strcmp(key, "refresh_ms") == 0)
            st = int_field(f, "dns.refresh_ms", 100, 3600000, &cfg->dns_refresh_ms, err);
        else
            st = cv_errorf(err, CV_EFORMAT, "unknown key \"dns.%s\"", key);
        if (st) return st;
    }
    if (!cfg->dns_name[0] || !cfg->dns_port)
        return cv_errorf(err, CV_EFORMAT, "\"dns\" needs \"name\" and \"port\"");
    return CV_OK;
}

/* String keys: the name as written in messages, the field and its capacity. */
typedef struct str_key {
    const char *name;
    size_t offset, cap;
} str_key;

#define STR_KEY(name, field) {name, offsetof(cv_cp_config, field), sizeof(((cv_cp_config *)0)->field)}

static const str_key str_keys[] = {
    STR_KEY("etcd", etcd),
    STR_KEY("prefix", prefix),
    STR_KEY("id", id),
    STR_KEY("smoke_prompt", smoke_prompt),
    STR_KEY("metrics_listen", metrics_listen),
    STR_KEY("otlp_endpoint", otlp_endpoint),
    STR_KEY("server_token_file", token_file),
    STR_KEY("server_token_env", token_env),
};

static const str_key tls_keys[] = {
    STR_KEY("server_tls.ca", tls_ca),
    STR_KEY("server_tls.cert", tls_cert),
    STR_KEY("server_tls.key", tls_key),
    STR_KEY("server_tls.server_name", tls_server_name),
};

/* CV_ENOTFOUND (err untouched) when `name` is none of the n keys. */
static cv_status str_key_field(const str_key *keys, size_t n, const char *name, json_t *v,
                               cv_cp_config *cfg, cv_error *err) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, keys[i].name) == 0)
            return str_field(v, name, (char *)cfg + keys[i].offset, keys[i].cap, err);
    return CV_ENOTFOUND;
}

static cv_status tls_field(json_t *v, cv_cp_config *cfg, cv_error *err) {
    if (!json_is_object(v)) return cv_errorf(err, CV_EFORMAT, "\"server_tls\" must be an object");
    const char *key;
    json_t *f;
    json_object_foreach(v, key, f) {
        char name[64];
        snprintf(name, sizeof name, "server_tls.%.40s", key);
        cv_status st = str_key_field(tls_keys, sizeof tls_keys / sizeof tls_keys[0], name, f, cfg, err);
        if (st == CV_ENOTFOUND) return cv_errorf(err, CV_EFORMAT, "unknown key \"%s\"", name);
        if (st) return st;
    }
    if (!cfg->tls_ca[0])
        return cv_errorf(err, CV_EFORMAT, "\"server_tls\" needs \"ca\" (the CA that signed the servers)");
    if (!cfg->tls_cert[0] != !cfg->tls_key[0])
        return cv_errorf(err, CV_EFORMAT, "\"server_tls\": \"cert\" and \"key\" go together (mTLS)");
    return CV_OK;
}

typedef struct int_key {
    const char *name;
    int lo, hi;
    size_t offset;
} int_key;

static const int_key int_keys[] = {
    {"poll_ms", 10, 600000, offsetof(cv_cp_config, poll_ms)},
    {"election_ttl_s", 2, 3600, offsetof(cv_cp_config, election_ttl_s)},
    {"admin_timeout_ms", 10, 600000, offsetof(cv_cp_config, admin_timeout_ms)},
    {"stage_deadline_s", 1, 86400, offsetof(cv_cp_config, stage_deadline_s)},
    {"shift_deadline_s", 1, 86400, offsetof(cv_cp_config, shift_deadline_s)},
    {"observe_deadline_s", 1, 86400, offsetof(cv_cp_config, observe_deadline_s)},
    {"unmeasurable_deadline_s", 1, 86400, offsetof(cv_cp_config, unmeasurable_deadline_s)},
    {"keep_previous_s", 0, 86400 * 30, offsetof(cv_cp_config, keep_previous_s)},
    {"smoke_tokens", 1, 1024, offsetof(cv_cp_config, smoke_tokens)},
};

static cv_status field(const char *key, json_t *v, cv_cp_config *cfg, cv_error *err) {
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++)
        if (strcmp(key, int_keys[i].name) == 0)
            return int_field(v, key, int_keys[i].lo, int_keys[i].hi,
                             (int *)((char *)cfg + int_keys[i].offset), err);
    cv_status st = str_key_field(str_keys, sizeof str_keys / sizeof str_keys[0], key, v, cfg, err);
    if (st != CV_ENOTFOUND) return st;
    if (strcmp(key, "server_tls") == 0) return tls_field(v, cfg, err);
    if (strcmp(key, "servers") == 0) return servers_field(v, cfg, err);
    if (strcmp(key, "dns") == 0) return dns_field(v, cfg, err);
    if (strcmp(key, "defaults") == 0) {
        if (!json_is_object(v)) return cv_errorf(err, CV_EFORMAT, "\"defaults\" must be an object");
        st = cv_rollout_spec_fields(v, &cfg->defaults, err);
        return st ? cv_error_wrap(err, "defaults") : CV_OK;
    }
    return cv_errorf(err, CV_EFORMAT, "unknown key \"%s\"", key);
}

cv_status cv_cp_config_parse(const char *text, size_t len, cv_cp_config *cfg, cv_error *err) {
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return cv_errorf(err, CV_EFORMAT, "config: line %d: %s", je.line, je.text);
    cv_status st = CV_OK;
    if (!json_is_object(o)) st = cv_errorf(err, CV_EFORMAT, "not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (st) break;
        st = field(key, v, cfg, err);
    }
    if (!st && json_object_get(o, "defaults") && json_object_get(json_object_get(o, "defaults"), "id"))
        st = cv_errorf(err, CV_EFORMAT, "\"defaults\" cannot hold \"id\"");
    if (!st && (cfg->n_servers > 0) == (cfg->dns_name[0] != 0))
        st = cv_errorf(err, CV_EFORMAT, "exactly one of \"servers\" and \"dns\" is required");
    if (!st && cfg->token_file[0] && cfg->token_env[0])
        st = cv_errorf(err, CV_EFORMAT,
                       "\"server_token_file\" and \"server_token_env\" both set: choose one");
    json_decref(o);
    return st ? cv_error_wrap(err, "config") : CV_OK;
}

cv_status cv_cp_config_load(const char *path, cv_cp_config *cfg, cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, CV_EIO, "config %s: cannot open", path);
    char *buf = malloc(1 << 20);
    if (!buf) {
        fclose(f);
        return cv_errorf(err, CV_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, (1 << 20), f);
    bool too_big = n == (1 << 20);
    fclose(f);
    cv_status st = too_big ? cv_errorf(err, CV_ERANGE, "config %s: larger than 1 MiB", path)
                           : cv_cp_config_parse(buf, n, cfg, err);
    free(buf);
    return st;
}

void cv_cp_config_free(cv_cp_config *cfg) {
    for (size_t i = 0; i < cfg->n_servers; i++) free(cfg->servers[i]);
    cfg->n_servers = 0;
}
