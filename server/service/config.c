#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda_backend.h"
#include "engine.h"
#include "inference_service.h"
#include "json_error.h"
#include "http_endpoint.h"
#include "rag_coverage.h"
#include "rag_service.h"
#include "response_cache.h"
#include "tp.h"

typedef enum { K_STR, K_INT, K_LONG, K_DOUBLE } key_kind;

/* One table drives the JSON keys, the flags, their limits and the usage text. */
typedef struct key_spec {
    const char *json;   /* key in the config file */
    const char *flag;   /* --flag */
    key_kind kind;
    size_t off;
    size_t size;        /* buffer size for strings */
    double min, max;
    const char *value;  /* the flag's value in the usage ("HOST:PORT") */
    const char *help;
    const char *dflt;   /* the default in words; NULL: cv_config_defaults' value */
} key_spec;

#define QUOTE_(x) #x
#define QUOTE(x) QUOTE_(x) /* a macro's value in a help text */
#define STR(j, f, m, v, h, d) {j, f, K_STR, offsetof(cv_config, m), sizeof(((cv_config *)0)->m), 0, 0, v, h, d}
#define NUM(j, f, k, m, lo, hi, v, h, d) {j, f, k, offsetof(cv_config, m), 0, lo, hi, v, h, d}

static const key_spec keys[] = {
    STR("listen", "--listen", listen, "HOST:PORT", "gRPC address", NULL),
    STR("metrics_listen", "--metrics-listen", metrics_listen, "HOST:PORT",
        "HTTP /metrics, /healthz and /readyz", "off"),
    STR("http_listen", "--http-listen", http_listen, "HOST:PORT",
        "OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models); HTTPS with tls_cert",
        "off"),
    STR("model", "--model", model, "PATH", "GGUF file loaded at start", "none"),
    STR("model_version", "--model-version", model_version, "NAME", "the version name of --model",
        "the file name"),
    NUM("threads", "--threads", K_INT, threads, 0, 256, "N",
        "CPU threads of the compute pool (with --tp, split between the ranks)", "one per core"),
    STR("device", "--device", device, "cpu|cuda", "where the model runs (cuda needs a make CUDA=1 build)", NULL),
    NUM("tp", "--tp", K_INT, tp, 1, CV_TP_MAX, "N",
        "tensor-parallel ranks, 1..8 (on cuda rank r is GPU r)", NULL),
    NUM("max_running", "--max-running", K_INT, max_running, 1, 4096, "N", "sequences batched together", NULL),
    NUM("max_waiting", "--max-waiting", K_INT, max_waiting, 0, 1000000, "N",
        "requests queued beyond them (more: RESOURCE_EXHAUSTED)", NULL),
    NUM("kv_block_tokens", "--kv-block-tokens", K_INT, kv_block_tokens, 1, 4096, "N",
        "positions per KV cache block", NULL),
    NUM("max_batch_tokens", "--max-batch-tokens", K_INT, max_batch_tokens, 1, 65536, "N",
        "rows of one forward pass (decode rows + prefill chunks)", NULL),
    NUM("n_ctx", "--ctx", K_INT, n_ctx, 0, 1 << 24, "N", "positions per sequence",
        "the model's training context, at most 4096"),
    STR("kv_type", "--kv-type", kv_type, "f16|f32", "KV cache element type", NULL),
    NUM("kv_swa_full_cache", "--kv-swa-full-cache", K_INT, kv_swa_full_cache, 0, 1, "0|1",
        "1: sliding-window layers keep every position instead of a ring", NULL),
    NUM("prefix_cache", "--prefix-cache", K_INT, prefix_cache, 0, 1, "0|1",
        "1: requests reuse the KV blocks of cached prompt prefixes (not with sliding-window rings)", NULL),
    NUM("speculative", "--speculative", K_INT, speculative, 0, 1, "0|1",
        "1: speculative decoding: drafted tokens (prompt lookup, and the draft model when one is set) "
        "verified in one batched pass; greedy output unchanged, sampled output keeps its distribution", NULL),
    NUM("spec_max_draft", "--spec-max-draft", K_INT, spec_max_draft, 1, CV_ENGINE_SPEC_MAX_DRAFT, "N",
        "most tokens drafted per sequence and step (the engine drafts fewer when its measured acceptance "
        "and step cost say they do not pay)", NULL),
    NUM("spec_max_batch", "--spec-max-batch", K_INT, spec_max_batch, 1, 4096, "N",
        "speculate only while at most N sequences run (larger batches are already compute-bound)", NULL),
    NUM("spec_ngram", "--spec-ngram", K_INT, spec_ngram, 1, CV_ENGINE_SPEC_MAX_NGRAM, "N",
        "prompt lookup drafts what followed the latest earlier occurrence of the last N or more tokens", NULL),
    STR("draft_model", "--draft-model", draft_model, "PATH",
        "GGUF draft model for speculative decoding: a smaller model with the same vocabulary (checked at load), "
        "used when prompt lookup finds nothing; every loaded version uses it", "none"),
    NUM("kv_memory_mb", "--kv-memory-mb", K_LONG, kv_memory_mb, 1, 1 << 24, "MB",
        "KV cache budget (all ranks together)", NULL),
    NUM("max_tokens_default", "--max-tokens-default", K_INT, max_tokens_default, 1, 1 << 20, "N",
        "tokens generated when a request says 0", NULL),
    NUM("max_prompt_bytes", "--max-prompt-bytes", K_LONG, max_prompt_bytes, 0, 1 << 30, "BYTES",
        "largest prompt (Generate prompt, Chat messages' roles and contents, Tokenize text), refused with "
        "INVALID_ARGUMENT before any tokenizing; 0: the model's context x " QUOTE(CV_INFER_PROMPT_BYTES_PER_TOKEN)
        " bytes, a bound no real text reaches (about 4 bytes a token in English, 3 in code and CJK); gRPC "
        "refuses a request over 4 MiB before either",
        "0: the context x " QUOTE(CV_INFER_PROMPT_BYTES_PER_TOKEN)),
    NUM("request_threads", "--request-threads", K_INT, request_threads, 1, 64, "N",
        "workers that tokenize prompts and render chat templates, off the gRPC thread; prompts of "
        QUOTE(CV_INFER_LARGE_PROMPT_BYTES) " bytes and more use at most N - 1 of them, so short requests "
        "never wait behind a long one", NULL),
    NUM("request_queue", "--request-queue", K_INT, request_queue, 1, 1 << 20, "N",
        "short and long requests waiting for those workers, each (more: RESOURCE_EXHAUSTED)", NULL),
    NUM("drain_timeout_s", "--drain-timeout", K_DOUBLE, drain_timeout_s, 0, 86400, "SECONDS",
        "on SIGTERM, how long in-flight streams may finish", NULL),
    NUM("max_connection_age_s", "--max-connection-age", K_DOUBLE, max_connection_age_s, 0, 2e6, "SECONDS",
        "a gRPC connection is asked to close (GOAWAY) after this long, +-10%, so that clients "
        "re-resolve the name and spread over replicas added since; 0: never", NULL),
    NUM("max_connection_age_grace_s", "--max-connection-age-grace", K_DOUBLE, max_connection_age_grace_s, 0, 2e6,
        "SECONDS", "after that GOAWAY, how long the connection's open streams may still run; 0: no limit", NULL),
    STR("otlp_endpoint", "--otlp-endpoint", otlp_endpoint, "URL",
        "OpenTelemetry traces go here over OTLP/HTTP (JSON), e.g. http://otel-collector:4318/v1/traces",
        "none: no tracing"),
    NUM("trace_sample_ratio", "--trace-sample-ratio", K_DOUBLE, trace_sample_ratio, 0, 1, "R",
        "share of new traces recorded; a request whose traceparent says sampled (or not) is followed", NULL),
    NUM("otlp_queue_spans", "--otlp-queue-spans", K_INT, otlp_queue_spans, 1, 1 << 20, "N",
        "ended spans waiting for the exporter thread; more are dropped (corvid_trace_spans_dropped_total)", NULL),
    NUM("stream_flush_ms", "--stream-flush-ms", K_INT, stream_flush_ms, 0, 1000, "MS",
        "a stream's tokens after the first go out in rounds at most this often (0: each at once)", NULL),
    STR("model_cache_dir", "--model-cache-dir", model_cache_dir, "DIR",
        "where Admin.LoadModel downloads http(s) URIs", "none: downloads refused"),
    STR("auth_config", "--auth-config", auth_config, "FILE",
        "access policy: JWT keys, allowlist, rate limit, audit log", "none: no checks"),
    STR("tls_cert", "--tls-cert", tls_cert, "FILE", "PEM certificate chain: TLS on --listen (with --tls-key)",
        "none"),
    STR("tls_key", "--tls-key", tls_key, "FILE", "PEM private key of --tls-cert", "none"),
    STR("tls_client_ca", "--tls-client-ca", tls_client_ca, "FILE",
        "PEM CA: clients must present a certificate it signed (mTLS)", "none"),
    STR("health_listen", "--health-listen", health_listen, "HOST:PORT",
        "with TLS: a plaintext port serving only gRPC health", "none"),
    NUM("max_download_mb", "--max-download-mb", K_DOUBLE, max_download_mb, 0.001, 1 << 24, "MB",
        "largest model file a download may bring", NULL),
    STR("model_dirs", "--model-dirs", model_dirs, "DIR[,DIR...]",
        "local files Admin.LoadModel may open lie under one of these (after resolving symlinks and ..)",
        "the model cache dir and the directory of --model"),
    STR("model_sources", "--model-sources", model_sources, "PREFIX[,PREFIX...]",
        "URL prefixes Admin.LoadModel may download from (redirects must match too)",
        "none: remote loads refused"),
    STR("rag_knowledge_bases", "--rag-kb", rag_knowledge_bases, "NAME=PATH[,NAME=PATH...]",
        "RAG knowledge bases (corvid-index files); the first is the default", "none"),
    STR("rag_sources", "--rag-sources", rag_sources, "FILE", "RAG live HTTP sources config", "none"),
    NUM("rag_top_k", "--rag-top-k", K_INT, rag_top_k, 1, CV_RAG_MAX_TOP_K, "K", "chunks retrieved when a request says 0",
        NULL),
    NUM("rag_min_score", "--rag-min-score", K_DOUBLE, rag_min_score, 0, 1e6, "S",
        "BM25 score a chunk must reach when a request says 0", NULL),
    STR("rag_policy", "--rag-policy", rag_policy, "refuse|answer",
        "when nothing relevant is found: the default answer (refuse) or the model (answer)", NULL),
    STR("rag_default_answer", "--rag-default-answer", rag_default_answer, "TEXT",
        "the default answer", NULL),
    STR("rag_default_answer_zh", "--rag-default-answer-zh", rag_default_answer_zh, "TEXT",
        "the default answer to CJK questions", NULL),
    NUM("rag_max_context_tokens", "--rag-max-context-tokens", K_INT, rag_max_context_tokens, 16, 1 << 20, "N",
        "retrieved context budget in model tokens (also capped by the model's window)", NULL),
    NUM("rag_guard", "--rag-guard", K_INT, rag_guard, 0, 1, "0|1",
        "1: a RAG answer looping on citation markers or phrases ends with finish reason stop", NULL),
    NUM("rag_check_answers", "--rag-check-answers", K_INT, rag_check_answers, 0, 1, "0|1",
        "1 (with rag_guard): a RAG answer is held until complete and replaced by \"The documents do not say.\" "
        "when it states a number no passage given holds or comes from passage sentences that lack a key term of "
        "the question", NULL),
    NUM("rag_min_coverage", "--rag-min-coverage", K_DOUBLE, rag_min_coverage, 0, 1, "C",
        "share of the question's key terms the passages must hold, else the default answer (0: off)", NULL),
    STR("response_cache", "--response-cache", response_cache, "off|memory|redis",
        "answers of deterministic requests (temperature 0 or a seed, no logprobs) replayed from an in-process "
        "LRU or a Redis shared by the replicas", NULL),
    NUM("response_cache_mb", "--response-cache-mb", K_LONG, response_cache_mb, 1, 1 << 20, "MB",
        "memory: the LRU's budget", NULL),
    STR("response_cache_redis", "--response-cache-redis", response_cache_redis, "HOST:PORT",
        "redis: the server (no TLS, no AUTH: a private network address)", "none"),
    NUM("response_cache_ttl_s", "--response-cache-ttl", K_INT, response_cache_ttl_s, 0, 1 << 30, "SECONDS",
        "how long an answer is kept (0: until evicted)", NULL),
    NUM("response_cache_timeout_ms", "--response-cache-timeout-ms", K_INT, response_cache_timeout_ms, 1, 10000, "MS",
        "redis: deadline of one lookup or store, connect included; past it the request runs the model and an "
        "error is counted", NULL),
    STR("response_cache_scope", "--response-cache-scope", response_cache_scope, "shared|subject",
        "subject: a JWT subject is answered only from its own cached answers", NULL),
    NUM("response_cache_live_sources", "--response-cache-live-sources", K_INT, response_cache_live_sources, 0, 1,
        "0|1", "1: RAG answers that used live sources are cached too (they may change by the minute)", NULL),
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
    c->prefix_cache = e.prefix_cache;
    c->speculative = e.spec;
    c->spec_max_draft = e.spec_max_draft;
    c->spec_max_batch = e.spec_max_batch;
    c->spec_ngram = e.spec_ngram;
    c->request_threads = CV_INFER_REQUEST_THREADS;
    c->request_queue = CV_INFER_REQUEST_QUEUE;
    c->drain_timeout_s = 30;
    c->stream_flush_ms = 5;
    c->max_connection_age_s = 300;
    c->max_connection_age_grace_s = 600;
    c->trace_sample_ratio = 1;
    c->otlp_queue_spans = 4096;
    c->max_download_mb = 64 << 10;
    c->rag_top_k = 4;
    c->rag_min_score = 1.0;
    strcpy(c->rag_policy, "refuse");
    strcpy(c->rag_default_answer, "No relevant data found.");
    strcpy(c->rag_default_answer_zh, "未找到相关数据。");
    c->rag_max_context_tokens = 1024;
    c->rag_guard = 1;
    c->rag_check_answers = 1;
    c->rag_min_coverage = CV_RAG_MIN_COVERAGE_DEFAULT;
    strcpy(c->response_cache, "off");
    c->response_cache_mb = 256;
    c->response_cache_ttl_s = 3600;
    c->response_cache_timeout_ms = 50;
    strcpy(c->response_cache_scope, "shared");
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
                         jerr.column, cv_json_error_text(&jerr));
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

static const key_spec *find_flag(const char *flag) {
    for (size_t j = 0; j < N_KEYS; j++)
        if (strcmp(keys[j].flag, flag) == 0) return &keys[j];
    return NULL;
}

cv_status cv_config_parse_args(cv_config *c, int argc, char **argv, cv_config_cmdline *cl, cv_error *err) {
    memset(cl, 0, sizeof *cl);
    /* The command line's shape first: --help wins, and a typo is found before any file is read. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cl->help = 1;
            return CV_OK;
        }
        if (strcmp(a, "--check-config") == 0) continue;
        if (strcmp(a, "--config") != 0 && !find_flag(a)) {
            cl->usage_error = 1;
            return cv_errorf(err, CV_EINVAL, "unknown option %s", a);
        }
        if (i + 1 >= argc) {
            cl->usage_error = 1;
            return cv_errorf(err, CV_EINVAL, "%s needs a value", a);
        }
        i++;
    }
    /* --config is applied first so that flags override the file wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            cv_status st = cv_config_load_file(c, argv[++i], err);
            if (st != CV_OK) return st;
        } else if (strcmp(argv[i], "--check-config") != 0) {
            i++;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check-config") == 0) {
            cl->check_only = 1;
            continue;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--config") == 0) continue;
        const key_spec *k = find_flag(a);
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

/* A regular file this process can read, or an error naming the key and the path. */
static cv_status check_readable(const char *key, const char *path, cv_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cv_errorf(err, CV_ENOTFOUND, "%s: cannot read %s: %s", key, path, strerror(errno));
    struct stat st;
    int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular) return cv_errorf(err, CV_EINVAL, "%s: %s is not a regular file", key, path);
    return CV_OK;
}

cv_status cv_config_check_files(const cv_config *c, cv_error *err) {
    /* A model given as a URL is refused (or fetched) by the load itself. */
    if (c->model[0] && (!strstr(c->model, "://") || strncmp(c->model, "file://", 7) == 0)) {
        cv_status st = check_readable("model", strncmp(c->model, "file://", 7) == 0 ? c->model + 7 : c->model, err);
        if (st != CV_OK) return st;
    }
    const struct { const char *key, *path; } files[] = {
        {"draft_model", c->draft_model},
        {"auth_config", c->auth_config},
        {"tls_cert", c->tls_cert},
        {"tls_key", c->tls_key},
        {"tls_client_ca", c->tls_client_ca},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!files[i].path[0]) continue;
        cv_status st = check_readable(files[i].key, files[i].path, err);
        if (st != CV_OK) return st;
    }
    return CV_OK;
}

void cv_config_model_dirs(const cv_config *c, char *out, size_t cap) {
    if (c->model_dirs[0]) {
        snprintf(out, cap, "%s", c->model_dirs);
        return;
    }
    size_t n = 0;
    out[0] = 0;
    if (c->model_cache_dir[0]) n = (size_t)snprintf(out, cap, "%s", c->model_cache_dir);
    char real[PATH_MAX];
    if (c->model[0] && realpath(c->model, real)) {
        char *slash = strrchr(real, '/');
        if (slash == real) slash[1] = 0;
        else if (slash) *slash = 0;
        if (n < cap) snprintf(out + n, cap - n, "%s%s", n ? "," : "", real);
    }
}

void cv_config_usage(FILE *f) {
    cv_config d;
    cv_config_defaults(&d);
    fprintf(f, "usage: corvid-server [--config FILE] [--check-config] [--FLAG VALUE]...\n"
               "       corvid-server --model m.gguf [--listen 127.0.0.1:50051] [--metrics-listen 127.0.0.1:9464]\n"
               "Every setting is a key of the JSON file given by --config and a flag; flags win.\n"
               "  --config FILE\n"
               "      the settings file: a JSON object of the keys below\n"
               "  --check-config\n"
               "      check the settings and that the files they name can be read, then exit\n"
               "  -h, --help\n"
               "      this text\n"
               "settings: --flag VALUE (config key, default)\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &keys[i];
        char dflt[600];
        const char *p = (const char *)&d + k->off;
        if (k->dflt) snprintf(dflt, sizeof dflt, "%s", k->dflt);
        else if (k->kind == K_STR) snprintf(dflt, sizeof dflt, strchr(p, ' ') ? "\"%s\"" : "%s", p);
        else if (k->kind == K_INT) snprintf(dflt, sizeof dflt, "%d", *(const int *)p);
        else if (k->kind == K_LONG) snprintf(dflt, sizeof dflt, "%ld", *(const long *)p);
        else snprintf(dflt, sizeof dflt, "%g", *(const double *)p);
        fprintf(f, "  %s %s  (%s, default %s)\n      %s\n", k->flag, k->value, k->json, dflt, k->help);
    }
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
    /* Each model_sources prefix is an http(s) URL with a host: "example.com" alone would
     * never match, and "http://" alone would allow every host. */
    for (const char *p = c->model_sources; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) p++, n--;
        size_t scheme = strncmp(p, "http://", 7) == 0 ? 7 : strncmp(p, "https://", 8) == 0 ? 8 : 0;
        if (n && (!scheme || n <= scheme || p[scheme] == '/' || p[scheme] == ':'))
            return cv_errorf(err, CV_EINVAL,
                             "model_sources: \"%.*s\" is not an http:// or https:// URL prefix with a host",
                             (int)(n > 200 ? 200 : n), p);
        if (!end) break;
        p = end + 1;
    }
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
    if (c->otlp_endpoint[0] && strncmp(c->otlp_endpoint, "http://", 7) && strncmp(c->otlp_endpoint, "https://", 8))
        return cv_errorf(err, CV_EINVAL, "otlp_endpoint: \"%s\" is not an http:// or https:// URL", c->otlp_endpoint);
    cv_rc_backend rcb;
    if (cv_rc_backend_parse(c->response_cache, &rcb, err) != CV_OK) return err->code;
    if (rcb == CV_RC_REDIS && !c->response_cache_redis[0])
        return cv_errorf(err, CV_EINVAL, "response_cache redis needs response_cache_redis (HOST:PORT)");
    if (strcmp(c->response_cache_scope, "shared") != 0 && strcmp(c->response_cache_scope, "subject") != 0)
        return cv_errorf(err, CV_EINVAL, "response_cache_scope: \"%s\" is neither shared nor subject",
                         c->response_cache_scope);
    if (c->metrics_listen[0] && strcmp(c->metrics_listen, c->listen) == 0)
        return cv_errorf(err, CV_EINVAL, "metrics_listen and listen are both %s", c->listen);
    if (c->http_listen[0]) {
        cv_error e = {0};
        if (cv_http_check_addr(c->http_listen, &e) != CV_OK)
            return cv_errorf(err, CV_EINVAL, "http_listen: \"%s\" is not IPv4:PORT or [IPv6]:PORT", c->http_listen);
        if (strcmp(c->http_listen, c->listen) == 0 || strcmp(c->http_listen, c->metrics_listen) == 0)
            return cv_errorf(err, CV_EINVAL, "http_listen %s is also the address of listen or metrics_listen",
                             c->http_listen);
    }
    return CV_OK;
}
