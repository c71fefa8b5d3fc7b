#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "engine.h"
#include "rag_service.h"
#include "tp.h"

typedef enum { K_STR, K_INT, K_LONG, K_DOUBLE } key_kind;

/* One table drives the JSON keys, the flags and their limits. */
typedef struct key_spec {
    const char *json;   /* key in the config file */
    const char *flag;   /* --flag */
    key_kind kind;
    size_t off;
    size_t size;        /* buffer size for strings */
    double min, max;
} key_spec;

#define STR(j, f, m) {j, f, K_STR, offsetof(cv_config, m), sizeof(((cv_config *)0)->m), 0, 0}
#define NUM(j, f, k, m, lo, hi) {j, f, k, offsetof(cv_config, m), 0, lo, hi}

static const key_spec keys[] = {
    STR("listen", "--listen", listen),
    STR("metrics_listen", "--metrics-listen", metrics_listen),
    STR("model", "--model", model),
    STR("model_version", "--model-version", model_version),
    NUM("threads", "--threads", K_INT, threads, 0, 256),
    STR("device", "--device", device),
    NUM("tp", "--tp", K_INT, tp, 1, CV_TP_MAX),
    NUM("max_running", "--max-running", K_INT, max_running, 1, 4096),
    NUM("max_waiting", "--max-waiting", K_INT, max_waiting, 0, 1000000),
    NUM("kv_block_tokens", "--kv-block-tokens", K_INT, kv_block_tokens, 1, 4096),
    NUM("max_batch_tokens", "--max-batch-tokens", K_INT, max_batch_tokens, 1, 65536),
    NUM("n_ctx", "--ctx", K_INT, n_ctx, 0, 1 << 24),
    STR("kv_type", "--kv-type", kv_type),
    NUM("kv_swa_full_cache", "--kv-swa-full-cache", K_INT, kv_swa_full_cache, 0, 1),
    NUM("kv_memory_mb", "--kv-memory-mb", K_LONG, kv_memory_mb, 1, 1 << 24),
    NUM("max_tokens_default", "--max-tokens-default", K_INT, max_tokens_default, 1, 1 << 20),
    NUM("drain_timeout_s", "--drain-timeout", K_DOUBLE, drain_timeout_s, 0, 86400),
    NUM("stream_flush_ms", "--stream-flush-ms", K_INT, stream_flush_ms, 0, 1000),
    STR("model_cache_dir", "--model-cache-dir", model_cache_dir),
    STR("auth_config", "--auth-config", auth_config),
    STR("tls_cert", "--tls-cert", tls_cert),
    STR("tls_key", "--tls-key", tls_key),
    STR("tls_client_ca", "--tls-client-ca", tls_client_ca),
    STR("health_listen", "--health-listen", health_listen),
    NUM("max_download_mb", "--max-download-mb", K_DOUBLE, max_download_mb, 0.001, 1 << 24),
    STR("rag_knowledge_bases", "--rag-kb", rag_knowledge_bases),
    STR("rag_sources", "--rag-sources", rag_sources),
    NUM("rag_top_k", "--rag-top-k", K_INT, rag_top_k, 1, CV_RAG_MAX_TOP_K),
    NUM("rag_min_score", "--rag-min-score", K_DOUBLE, rag_min_score, 0, 1e6),
    STR("rag_policy", "--rag-policy", rag_policy),
    STR("rag_default_answer", "--rag-default-answer", rag_default_answer),
    STR("rag_default_answer_zh", "--rag-default-answer-zh", rag_default_answer_zh),
    NUM("rag_max_context_tokens", "--rag-max-context-tokens", K_INT, rag_max_context_tokens, 16, 1 << 20),
};
#define N_KEYS (sizeof keys / sizeof keys[0])

void cv_config_defaults(cv_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->listen, "127.0.0.1:50051");
    strcpy(c->device, "cpu");
    c->tp = 1;
    /* The engine's defaults, but for more sequences at once. */
    cv_engine_config e;
    cv_engine_config_default(&e);
    c->max_running = 64;
    c->max_waiting = e.max_waiting;
    c->kv_block_tokens = e.kv_block_tokens;
    c->max_batch_tokens = e.max_batch_tokens;
    strcpy(c->kv_type, "f16");
    c->kv_memory_mb = 512;
    c->max_tokens_default = e.max_tokens_default;
    c->drain_timeout_s = 30;
    c->stream_flush_ms = 5;
    c->max_download_mb = 64 << 10;
    c->rag_top_k = 4;
    c->rag_min_score = 1.0;
    strcpy(c->rag_policy, "refuse");
    strcpy(c->rag_default_answer, "No relevant data found.");
    strcpy(c->rag_default_answer_zh, "未找到相关数据。");
    c->rag_max_context_tokens = 1024;
}

static cv_status set_str(cv_config *c, const key_spec *k, const char *where, const char *v,
                         cv_error *err) {
    if (strlen(v) >= k->size)
        return cv_errorf(err, CV_ERANGE, "%s: value is %zu bytes, the limit is %zu", where,
                         strlen(v), k->size - 1);
    strcpy((char *)c + k->off, v);
    return CV_OK;
}

static cv_status set_num(cv_config *c, const key_spec *k, const char *where, double v,
                         cv_error *err) {
    if (!(v >= k->min && v <= k->max))
        return cv_errorf(err, CV_ERANGE, "%s: %g is outside [%g, %g]", where, v, k->min, k->max);
    if (k->kind != K_DOUBLE && v != (double)(long)v)
        return cv_errorf(err, CV_EINVAL, "%s: %g is not a whole number", where, v);
    char *p = (char *)c + k->off;
    if (k->kind == K_INT) *(int *)p = (int)v;
    else if (k->kind == K_LONG) *(long *)p = (long)v;
    else *(double *)p = v;
    return CV_OK;
}

cv_status cv_config_load_file(cv_config *c, const char *path, cv_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cv_errorf(err, CV_EFORMAT, "config %s: line %d column %d: %s", path, jerr.line,
                         jerr.column, jerr.text);
    cv_status st = CV_OK;
    if (!json_is_object(root)) {
        st = cv_errorf(err, CV_EFORMAT, "config %s: the top level must be a JSON object", path);
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        const key_spec *k = NULL;
        for (size_t i = 0; i < N_KEYS; i++)
            if (strcmp(keys[i].json, name) == 0) k = &keys[i];
        char where[300];
        snprintf(where, sizeof where, "config %s: key \"%.200s\"", path, name);
        if (!k) {
            st = cv_errorf(err, CV_EINVAL, "%s is not a known setting", where);
            goto out;
        }
        if (k->kind == K_STR) {
            if (!json_is_string(v)) {
                st = cv_errorf(err, CV_EINVAL, "%s must be a string", where);
                goto out;
            }
            st = set_str(c, k, where, json_string_value(v), err);
        } else {
            if (!json_is_number(v)) {
                st = cv_errorf(err, CV_EINVAL, "%s must be a number", where);
                goto out;
            }
            st = set_num(c, k, where, json_number_value(v), err);
        }
        if (st != CV_OK) goto out;
    }
out:
    json_decref(root);
    return st;
}

cv_status cv_config_parse_args(cv_config *c, int argc, char **argv, int *check_only, cv_error *err) {
    *check_only = 0;
    /* --config is applied first so that flags override the file wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) return cv_errorf(err, CV_EINVAL, "--config needs a file name");
            cv_status st = cv_config_load_file(c, argv[++i], err);
            if (st != CV_OK) return st;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strcmp(a, "--check-config") == 0) {
            *check_only = 1;
            continue;
        }
        const key_spec *k = NULL;
        for (size_t j = 0; j < N_KEYS; j++)
            if (strcmp(keys[j].flag, a) == 0) k = &keys[j];
        if (!k) return cv_errorf(err, CV_EINVAL, "unknown option %s (see --help)", a);
        if (i + 1 >= argc) return cv_errorf(err, CV_EINVAL, "%s needs a value", a);
        const char *v = argv[++i];
        cv_status st;
        if (k->kind == K_STR) {
            st = set_str(c, k, a, v, err);
        } else {
            char *end;
            errno = 0;
            double d = strtod(v, &end);
            if (errno || end == v || *end)
                return cv_errorf(err, CV_EINVAL, "%s: \"%s\" is not a number", a, v);
            st = set_num(c, k, a, d, err);
        }
        if (st != CV_OK) return st;
    }
    return CV_OK;
}

cv_status cv_config_validate(const cv_config *c, cv_error *err) {
    if (!c->listen[0]) return cv_errorf(err, CV_EINVAL, "listen: an address is required");
    if (!strchr(c->listen, ':'))
        return cv_errorf(err, CV_EINVAL, "listen: \"%s\" has no port (want HOST:PORT)", c->listen);
    if (strcmp(c->device, "cpu") != 0 && strcmp(c->device, "cuda") != 0)
        return cv_errorf(err, CV_EINVAL, "device: \"%s\" is neither cpu nor cuda", c->device);
    if (strcmp(c->device, "cuda") == 0 && !cv_cuda_compiled())
        return cv_errorf(err, CV_EUNSUPPORTED, "device: this corvid-server was built without CUDA (make CUDA=1)");
    if (strcmp(c->kv_type, "f16") != 0 && strcmp(c->kv_type, "f32") != 0)
        return cv_errorf(err, CV_EINVAL, "kv_type: \"%s\" is neither f16 nor f32", c->kv_type);
    if (c->max_batch_tokens < c->max_running)
        return cv_errorf(err, CV_EINVAL,
                         "max_batch_tokens (%d) must be at least max_running (%d): every running "
                         "sequence needs a row in each step",
                         c->max_batch_tokens, c->max_running);
    if (!c->tls_cert[0] != !c->tls_key[0])
        return cv_errorf(err, CV_EINVAL, "tls_cert and tls_key go together: give both or neither");
    if (c->tls_client_ca[0] && !c->tls_cert[0])
        return cv_errorf(err, CV_EINVAL, "tls_client_ca (mTLS) needs tls_cert and tls_key");
    if (c->health_listen[0] && !c->tls_cert[0])
        return cv_errorf(err, CV_EINVAL, "health_listen is the plaintext probe port beside a TLS listen: "
                         "without TLS, probe the listen address");
    if (strcmp(c->rag_policy, "refuse") != 0 && strcmp(c->rag_policy, "answer") != 0)
        return cv_errorf(err, CV_EINVAL, "rag_policy: \"%s\" is neither refuse nor answer", c->rag_policy);
    if (c->metrics_listen[0] && strcmp(c->metrics_listen, c->listen) == 0)
        return cv_errorf(err, CV_EINVAL, "metrics_listen and listen are both %s", c->listen);
    return CV_OK;
}
