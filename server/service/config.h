/* config: corvid-server's settings from a JSON file, then command-line flags.
 *
 * Every key is checked: an unknown key, a wrong type or a value out of range is an
 * error naming the key (a typo in a config must not silently fall back to a default).
 * Flags override the file. cv_config_defaults gives the values used when neither says.
 */
#ifndef CV_CONFIG_H
#define CV_CONFIG_H

#include <stdio.h>

#include "cv_error.h"

typedef struct cv_config {
    char listen[256];          /* gRPC address, "127.0.0.1:50051" */
    char metrics_listen[256];  /* "" = no HTTP metrics endpoint */
    char http_listen[256];     /* "" = no OpenAI-compatible HTTP API */
    char model[1024];          /* GGUF path; "" = start with no model */
    char model_version[128];   /* "" = the model file's base name */
    int threads;               /* 0 = number of cores; split between the tp ranks */
    char device[8];            /* "cpu" or "cuda" (a CUDA build only) */
    int tp;                    /* tensor-parallel ranks, 1..8 (cuda: GPUs 0..tp-1) */
    int max_running;           /* sequences decoded together */
    int max_waiting;           /* queued requests beyond which RESOURCE_EXHAUSTED */
    int kv_block_tokens;       /* tokens per KV block */
    int max_batch_tokens;      /* rows per forward pass: decode rows + prefill chunks */
    int n_ctx;                 /* positions per sequence; 0 = the model's training context, at most 4096 */
    char kv_type[8];           /* "f16" or "f32" */
    int kv_swa_full_cache;     /* 1: sliding-window layers keep every position (no ring) */
    int prefix_cache;          /* 1: share cached KV blocks of common prompt prefixes */
    int speculative;           /* 1: speculative decoding (engine.h) */
    int spec_max_draft;        /* tokens drafted per sequence and step */
    int spec_max_batch;        /* speculate only while at most this many sequences run */
    int spec_ngram;            /* prompt lookup's shortest matched suffix */
    char draft_model[1024];    /* GGUF path of a draft model with the model's vocabulary; "" = none */
    long kv_memory_mb;         /* KV cache budget */
    int max_tokens_default;    /* when a request says 0 */
    long max_prompt_bytes;     /* prompt / messages / Tokenize text, checked before tokenizing;
                                * 0 = the model's context x CV_INFER_PROMPT_BYTES_PER_TOKEN */
    int request_threads;       /* workers that tokenize and render chat templates */
    int request_queue;         /* requests waiting for them, per class (small, large) */
    double drain_timeout_s;    /* SIGTERM: how long in-flight streams may take */
    int stream_flush_ms;       /* streams' output goes out in rounds at most this often */
    double max_connection_age_s;       /* a gRPC connection gets GOAWAY after this (+-10%), so
                                        * clients re-resolve and spread over new replicas; 0: never */
    double max_connection_age_grace_s; /* after that GOAWAY, how long its streams may finish */
    char otlp_endpoint[1024];  /* OTLP/HTTP traces URL ("http://collector:4318/v1/traces"); "" = no tracing */
    double trace_sample_ratio; /* share of new traces recorded (a caller's sampled flag wins) */
    int otlp_queue_spans;      /* spans waiting for the exporter; more are dropped and counted */
    char auth_config[1024];    /* JSON access policy (auth.h); "" = no checks */
    char tls_cert[1024];       /* PEM chain: TLS on listen when set, with tls_key */
    char tls_key[1024];
    char tls_client_ca[1024];  /* PEM CA: clients must present a certificate it signed (mTLS) */
    char health_listen[256];   /* with TLS: plaintext port serving only grpc.health.v1 */
    char model_cache_dir[1024];/* where Admin.LoadModel downloads URLs; "" = downloads refused */
    double max_download_mb;    /* largest model file a download may bring */
    char model_dirs[4096];     /* "DIR[,DIR...]": Admin loads of local files must lie under one;
                                * "" = model_cache_dir and the directory of model */
    char model_sources[4096];  /* "PREFIX[,PREFIX...]": URLs Admin loads may download; "" = none */
    /* RAG (rag_service.h); on when a knowledge base or a sources file is set */
    char rag_knowledge_bases[4096]; /* "NAME=PATH[,NAME=PATH...]", the first is the default */
    char rag_sources[1024];    /* live sources config file (rag_sources.h) */
    int rag_top_k;             /* chunks retrieved when a request says 0 */
    double rag_min_score;      /* BM25 score a chunk must reach when a request says 0 */
    char rag_policy[16];       /* "refuse" or "answer" */
    char rag_default_answer[512];    /* below the threshold, non-CJK questions */
    char rag_default_answer_zh[512]; /* below the threshold, CJK questions */
    int rag_max_context_tokens;      /* retrieved context budget, model tokens */
    int rag_guard;                   /* 1: end degenerate RAG answers (rag_guard.h) */
    int rag_check_answers;           /* 1: judge RAG answers against the passages (rag_support.h) */
    double rag_min_coverage;         /* share of the question's terms the passages must hold */
    /* The response cache (response_cache.h) */
    char response_cache[8];          /* "off", "memory" or "redis" */
    long response_cache_mb;          /* memory: LRU budget */
    char response_cache_redis[256];  /* redis: HOST:PORT */
    int response_cache_ttl_s;        /* 0: no expiry */
    int response_cache_timeout_ms;   /* redis: deadline of one call */
    char response_cache_scope[8];    /* "shared" or "subject" */
    int response_cache_live_sources; /* 1: cache answers built on live RAG sources too */
} cv_config;

/* What the command line asked besides settings. */
typedef struct cv_config_cmdline {
    int check_only;  /* --check-config */
    int help;        /* --help or -h: nothing was applied */
    int usage_error; /* the error is the command line's shape (an unknown flag, a flag
                      * without its value), not a value */
} cv_config_cmdline;

void cv_config_defaults(cv_config *c);
/* Reads and validates a JSON object file on top of c. */
cv_status cv_config_load_file(cv_config *c, const char *path, cv_error *err);
/* Applies --config FILE, then the --flag VALUE pairs (so flags win wherever they
 * stand); argv[0] is skipped. Unknown flags and flags without a value are errors
 * (cl->usage_error), found before any file is read. */
cv_status cv_config_parse_args(cv_config *c, int argc, char **argv, cv_config_cmdline *cl, cv_error *err);
/* Cross-field checks after everything is applied. */
cv_status cv_config_validate(const cv_config *c, cv_error *err);
/* The files the settings name (model, auth_config, tls_cert, tls_key, tls_client_ca)
 * are regular files this process can read; the error names the key and the path. */
cv_status cv_config_check_files(const cv_config *c, cv_error *err);
/* The directories local model files may come from: model_dirs, or by default
 * model_cache_dir and the directory of model (resolved), comma-separated. */
void cv_config_model_dirs(const cv_config *c, char *out, size_t cap);
/* corvid-server's usage: every flag with its key, its default and what it does, from
 * the same table the parser uses. */
void cv_config_usage(FILE *f);

#endif
