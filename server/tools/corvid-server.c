/* corvid-server: serves models over gRPC.
 *
 * Start-up: config (file, then flags), the gRPC server with the health service, then
 * the model. SIGTERM/SIGINT drain: health goes NOT_SERVING, new calls are refused
 * with UNAVAILABLE, in-flight calls get drain_timeout to finish, then the rest are
 * cancelled and the process exits 0. SIGUSR1 (the chart's preStop) only turns readiness
 * off (Inference health NOT_SERVING, /readyz 503) while calls are still served, so that
 * endpoints drop the pod before SIGTERM refuses new calls.
 */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin_service.h"
#include "audit.h"
#include "auth.h"
#include "chat_page.h"
#include "cli.h"
#include "config.h"
#include "health.h"
#include "http_endpoint.h"
#include "otlp_export.h"
#include "http_server.h"
#include "inference_service.h"
#include "metrics.h"
#include "openai_service.h"
#include "rag_service.h"
#include "response_cache.h"
#include "rpc_server.h"
#include "router.h"
#include "tls_files.h"
#include "timing.h"

static const char *const service_names[] = {"", "corvid.v1.Inference", "corvid.v1.Admin"};
#define N_SERVICES (sizeof service_names / sizeof service_names[0])

static void usage(FILE *f) { cv_config_usage(f); }

/* Live-source requests go to the audit trail when there is one (set before serving),
 * else to the structured log on stderr. */
static void rag_audit(void *user, const char *line) {
    cv_audit *a = *(cv_audit **)user;
    json_t *j = a ? json_loads(line, 0, NULL) : NULL;
    if (!j) {
        fprintf(stderr, "%s\n", line);
        return;
    }
    cv_audit_entry e = {CV_AUDIT_EXTERNAL_REQUEST, NULL, NULL, json_string_value(json_object_get(j, "url")),
                        json_string_value(json_object_get(j, "outcome")), line,
                        json_string_value(json_object_get(j, "trace_id"))};
    cv_error err = {0};
    if (cv_audit_write(a, &e, &err) != CV_OK) fprintf(stderr, "%s\n", line);
    json_decref(j);
}

static void audit_model_load(void *ctx, const char *uri, int ready, const char *detail) {
    cv_audit_entry e = {CV_AUDIT_MODEL_LOAD, NULL, NULL, uri, ready ? "ready" : "failed", detail, NULL};
    cv_audit_write(ctx, &e, NULL);
}

/* The knowledge bases and sources of the config, opened and checked; NULL when none. */
static cv_status open_rag(const cv_config *c, cv_audit **audit, cv_rag_service **out, cv_error *err) {
    *out = NULL;
    if (!c->rag_knowledge_bases[0] && !c->rag_sources[0]) return CV_OK;
    cv_rag_settings s = {c->rag_knowledge_bases, c->rag_sources, (uint32_t)c->rag_top_k,
                         (float)c->rag_min_score, c->rag_policy, c->rag_default_answer,
                         c->rag_default_answer_zh, (size_t)c->rag_max_context_tokens, rag_audit, audit,
                         c->rag_guard, c->rag_min_coverage, c->rag_check_answers};
    return cv_rag_service_new(&s, out, err);
}

/* What the HTTP endpoint's thread reads while main changes it. */
typedef struct server {
    cv_health *health;
    cv_router *router;
    cv_gpu_metrics *gpu;     /* NULL without NVML */
    cv_hs *api;              /* the HTTP API, NULL when off */
    atomic_int unready;      /* SIGUSR1: readiness off, calls still served */
    cv_rc *rc;               /* the response cache, NULL when off */
    atomic_int draining;
} server;

static char *render_metrics(void *ctx) {
    server *s = ctx;
    cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
    cv_metrics_slot m[CV_ROUTER_MAX_VERSIONS];
    int n = cv_router_snapshot(s->router, 1, info);
    for (int i = 0; i < n; i++) {
        int draining = atomic_load(&s->draining) || info[i].state == CV_SLOT_DRAINING;
        m[i] = (cv_metrics_slot){info[i].version, draining ? "draining" : cv_slot_state_name(info[i].state),
                                 info[i].weight, info[i].by_protocol, info[i].has_engine ? &info[i].engine : NULL};
    }
    cv_gpu_sample gpus[CV_GPU_MAX];
    int n_gpus = s->gpu ? cv_gpu_metrics_read(s->gpu, gpus) : 0;
    cv_metrics_http http[128];
    size_t n_http = cv_hs_counts(s->api, http, sizeof http / sizeof http[0]);
    char *text = cv_metrics_render(m, (size_t)n, gpus, n_gpus, s->api ? http : NULL, n_http);
    char *rc = cv_rc_metrics(s->rc), *all = NULL;
    if (text && rc && asprintf(&all, "%s%s", text, rc) < 0) all = NULL;
    free(text);
    free(rc);
    return all;
}

static int is_ready(void *ctx) {
    server *s = ctx;
    return !atomic_load(&s->draining) && !atomic_load(&s->unready) && cv_router_serving(s->router);
}

/* Waits for in-flight calls (Watch streams excepted) and HTTP requests to end, at most
 * timeout_s. */
static int drain(cv_rpc_server *srv, cv_hs *api, cv_health *h, cv_router *r, double timeout_s) {
    double end = cv_seconds() + timeout_s;
    while (cv_router_in_flight(r) > 0 || cv_rpc_server_active_calls(srv) - cv_health_watchers(h) > 0 ||
           cv_hs_active(api) > 0) {
        if (cv_seconds() > end) return -1;
        usleep(20 * 1000);
    }
    return 0;
}

int main(int argc, char **argv) {
    cv_config cfg;
    cv_error err = {0};
    cv_config_cmdline cl;
    cv_config_defaults(&cfg);
    cv_status parsed = cv_config_parse_args(&cfg, argc, argv, &cl, &err);
    if (cl.help) cv_cli_help(usage);
    if (cl.usage_error) cv_cli_usage_error("corvid-server", usage, "%s", err.msg);
    if (parsed != CV_OK || cv_config_validate(&cfg, &err) != CV_OK || cv_config_check_files(&cfg, &err) != CV_OK) {
        fprintf(stderr, "corvid-server: %s\n", err.msg);
        return 1;
    }
    int check_only = cl.check_only;
    cv_rag_service *rag = NULL;
    cv_audit *rag_audit_log = NULL; /* filled in once the auth config is loaded */
    if (open_rag(&cfg, &rag_audit_log, &rag, &err) != CV_OK) {
        fprintf(stderr, "corvid-server: %s\n", err.msg);
        return 1;
    }
    if (check_only) {
        cv_rag_service_free(rag);
        printf("config ok\n");
        return 0;
    }

    /* Signals are taken by sigwait in main, so every thread started after this blocks them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    cv_rpc_server *srv = NULL;
    cv_health *health = NULL;
    cv_router *router = NULL;
    cv_infer *inf = NULL;
    cv_admin *admin = NULL;
    cv_http *http = NULL;
    cv_hs *api = NULL;
    cv_oai_service *oai = NULL;
    cv_pii *pii = NULL;
    cv_auth *auth = NULL;
    server state = {0};
    int rc = 1, port = 0;
    cv_rpc_config rcfg = {.listen = cfg.listen, .health_listen = cfg.health_listen,
                          .flush_interval_ms = cfg.stream_flush_ms,
                          .max_connection_age_ms = (int)(cfg.max_connection_age_s * 1000),
                          .max_connection_age_grace_ms = (int)(cfg.max_connection_age_grace_s * 1000),
                          .require_client_cert = cfg.tls_client_ca[0] != 0};
    /* Logs and the audit trail get partial masks (138****5678): readable, not leaking. */
    if (cv_pii_create(CV_PII_PARTIAL, &pii, &err) != CV_OK) goto out;
    if (cfg.auth_config[0]) {
        cv_auth_options ao = {.pii = pii};
        if (cv_auth_load_file(cfg.auth_config, &ao, &auth, &err) != CV_OK) goto out;
        rcfg.auth = auth;
    }
    if (cfg.tls_cert[0]) {
        cv_tls_paths tp = {cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca[0] ? cfg.tls_client_ca : NULL};
        if (cv_tls_files_load(&tp, &rcfg.tls, &err) != CV_OK) goto out;
    }
    cv_router_options ro = {.slot = {.threads = cfg.threads, .tp = cfg.tp,
                                     .device = strcmp(cfg.device, "cuda") ? CV_DEVICE_CPU : CV_DEVICE_CUDA},
                            .max_download_bytes = (uint64_t)(cfg.max_download_mb * 1048576.0)};
    cv_audit *audit = auth ? cv_auth_audit(auth) : NULL;
    if (audit) {
        ro.on_load = audit_model_load;
        ro.on_load_ctx = audit;
    }
    snprintf(ro.cache_dir, sizeof ro.cache_dir, "%s", cfg.model_cache_dir);
    cv_config_model_dirs(&cfg, ro.model_dirs, sizeof ro.model_dirs);
    snprintf(ro.model_sources, sizeof ro.model_sources, "%s", cfg.model_sources);
    ro.stop_wait_s = cfg.drain_timeout_s > 0 ? cfg.drain_timeout_s : 1;
    cv_engine_config_default(&ro.slot.engine);
    ro.slot.engine.max_running = cfg.max_running;
    ro.slot.engine.max_waiting = cfg.max_waiting;
    ro.slot.engine.max_batch_tokens = cfg.max_batch_tokens;
    ro.slot.engine.n_ctx = cfg.n_ctx;
    ro.slot.engine.kv_block_tokens = cfg.kv_block_tokens;
    ro.slot.engine.kv_bytes = (size_t)cfg.kv_memory_mb << 20;
    ro.slot.engine.kv_type = strcmp(cfg.kv_type, "f32") == 0 ? CV_TYPE_F32 : CV_TYPE_F16;
    ro.slot.engine.kv_swa_full_cache = cfg.kv_swa_full_cache;
    ro.slot.engine.prefix_cache = cfg.prefix_cache;
    ro.slot.engine.spec = cfg.speculative;
    ro.slot.engine.spec_max_draft = cfg.spec_max_draft;
    ro.slot.engine.spec_max_batch = cfg.spec_max_batch;
    ro.slot.engine.spec_ngram = cfg.spec_ngram;
    snprintf(ro.slot.draft_model, sizeof ro.slot.draft_model, "%s", cfg.draft_model);
    ro.slot.engine.max_tokens_default = cfg.max_tokens_default;
    cv_rc_config rcc = {.max_bytes = (size_t)cfg.response_cache_mb << 20, .redis = cfg.response_cache_redis,
                        .ttl_s = (unsigned)cfg.response_cache_ttl_s,
                        .timeout_ms = (unsigned)cfg.response_cache_timeout_ms,
                        .per_subject = strcmp(cfg.response_cache_scope, "subject") == 0,
                        .live_sources = cfg.response_cache_live_sources};
    if (cv_rc_backend_parse(cfg.response_cache, &rcc.backend, &err) != CV_OK ||
        cv_rc_new(&rcc, &state.rc, &err) != CV_OK)
        goto out;
    cv_infer_options io = {.max_prompt_bytes = (size_t)cfg.max_prompt_bytes, .request_threads = cfg.request_threads,
                           .request_queue = cfg.request_queue, .response_cache = state.rc};
    if (cv_health_new(&health, &err) != CV_OK || cv_router_new(&ro, &router, &err) != CV_OK ||
        cv_infer_new(router, &io, &inf, &err) != CV_OK || cv_admin_new(router, cfg.listen, audit, &admin, &err) != CV_OK)
        goto out;
    if (cfg.otlp_endpoint[0]) {
        cv_trace_set_ratio(cfg.trace_sample_ratio);
        cv_otlp_config oc = {.endpoint = cfg.otlp_endpoint, .service_name = "corvid-server",
                             .instance_id = cfg.listen, .queue_spans = (unsigned)cfg.otlp_queue_spans};
        if (cv_otlp_start(&oc, &err) != CV_OK) goto out;
    }
    cv_status created = cv_rpc_server_new(&rcfg, &srv, &err);
    rcfg.tls = NULL; /* the rpc server owns the TLS files from here, even when it failed */
    if (created != CV_OK || cv_health_register(health, srv, &err) != CV_OK ||
        cv_infer_register(inf, srv, &err) != CV_OK || cv_admin_register(admin, srv, &err) != CV_OK)
        goto out;
    cv_admin_set_response_cache(admin, state.rc);
    rag_audit_log = audit;
    cv_infer_set_rag(inf, rag);
    state.health = health;
    state.router = router;
    for (size_t i = 0; i < N_SERVICES; i++)
        if (cv_health_set(health, service_names[i], CV_HEALTH_NOT_SERVING, &err) != CV_OK) goto out;
    if (cfg.http_listen[0]) {
        /* The OpenAI-compatible API: same router, auth and TLS files as gRPC; the chat page at /. */
        cv_hs_config hc = {.listen = cfg.http_listen, .tls_cert = cfg.tls_cert, .tls_key = cfg.tls_key,
                          .tls_client_ca = cfg.tls_client_ca, .auth = auth};
        int hport = 0;
        if (cv_oai_service_new(router, cv_infer_pool(inf), cv_infer_rag(inf), state.rc,
                               (size_t)cfg.max_prompt_bytes, &oai, &err) != CV_OK || cv_hs_new(&hc, &api, &err) != CV_OK ||
            cv_oai_service_register(oai, api, &err) != CV_OK || cv_chat_page_register(api, &err) != CV_OK ||
            cv_hs_start(api, &hport, &err) != CV_OK)
            goto out;
        fprintf(stderr, "{\"msg\":\"http api listening\",\"addr\":\"%s\",\"port\":%d,\"tls\":%s}\n",
                cfg.http_listen, hport, cfg.tls_cert[0] ? "true" : "false");
        state.api = api; /* before the metrics thread starts reading it */
    }
    if (cfg.metrics_listen[0]) {
        cv_error gerr = {0};
        if (cv_gpu_metrics_open(&state.gpu, &gerr) != CV_OK)
            fprintf(stderr, "{\"level\":\"info\",\"msg\":\"%s\"}\n", gerr.msg);
        cv_http_callbacks cb = {render_metrics, is_ready, &state};
        int mport = 0;
        if (cv_http_start(cfg.metrics_listen, &cb, &http, &mport, &err) != CV_OK) goto out;
        fprintf(stderr, "{\"msg\":\"metrics listening\",\"addr\":\"%s\",\"port\":%d}\n",
                cfg.metrics_listen, mport);
    }
    if (cv_rpc_server_start(srv, &port, &err) != CV_OK) goto out;
    /* Live and administrable at once; Inference serves once a version takes traffic. */
    cv_health_set(health, "", CV_HEALTH_SERVING, &err);
    cv_health_set(health, "corvid.v1.Admin", CV_HEALTH_SERVING, &err);
    fprintf(stderr, "{\"msg\":\"listening\",\"addr\":\"%s\",\"port\":%d}\n", cfg.listen, port);
    if (cfg.model[0]) {
        double t0 = cv_seconds();
        char version[128];
        if (cfg.model_version[0]) snprintf(version, sizeof version, "%s", cfg.model_version);
        else cv_slot_default_version(cfg.model, version, sizeof version);
        if (cv_router_load(router, version, cfg.model, NULL, 1, &err) != CV_OK) goto out;
        cv_slot_info info[CV_ROUTER_MAX_VERSIONS];
        int n = cv_router_snapshot(router, 1, info);
        if (n != 1 || info[0].state != CV_SLOT_READY) {
            cv_errorf(&err, CV_EFORMAT, "%s", n ? info[0].message : "model vanished while loading");
            goto out;
        }
        fprintf(stderr, "{\"msg\":\"model ready\",\"version\":\"%s\",\"path\":\"%s\",\"device\":\"%s\",\"tp\":%d,"
                "\"load_s\":%.3f}\n", version, cfg.model, cfg.device, cfg.tp, cv_seconds() - t0);
    }

    /* Until a signal: keep the Inference health in step with what the router serves. */
    int sig = 0;
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;) {
        cv_health_set(health, "corvid.v1.Inference", is_ready(&state) ? CV_HEALTH_SERVING : CV_HEALTH_NOT_SERVING,
                      &err);
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGHUP) {
            /* Log rotation: the audit file is reopened; TLS files are picked up by themselves. */
            if (audit && cv_audit_reopen(audit, &err) != CV_OK)
                fprintf(stderr, "{\"msg\":\"audit log reopen failed\",\"error\":\"%s\"}\n", err.msg);
            continue;
        }
        if (sig == SIGUSR1) {
            if (!atomic_exchange(&state.unready, 1))
                fprintf(stderr, "{\"msg\":\"not ready (SIGUSR1): calls are still served until SIGTERM\"}\n");
            continue;
        }
        if (sig > 0) break;
    }
    fprintf(stderr, "{\"msg\":\"draining\",\"signal\":%d,\"timeout_s\":%g}\n", sig,
            cfg.drain_timeout_s);
    atomic_store(&state.draining, 1);
    cv_router_cancel(router); /* a running load stops now; no new operation starts */
    for (size_t i = 0; i < N_SERVICES; i++)
        cv_health_set(health, service_names[i], CV_HEALTH_NOT_SERVING, &err);
    cv_rpc_server_stop_accepting(srv);
    cv_hs_stop_accepting(api);
    if (drain(srv, api, health, router, cfg.drain_timeout_s) != 0)
        fprintf(stderr, "{\"msg\":\"drain timeout: cancelling the remaining calls\"}\n");
    cv_health_shutdown(health, 2);
    rc = 0;
out:
    if (rc) fprintf(stderr, "corvid-server: %s\n", err.msg);
    /* The engine goes first: streams still running get their final (cancelled) event and
     * release their calls, which lets the rpc server shut down without waiting. */
    cv_http_stop(http);
    cv_gpu_metrics_close(state.gpu);
    cv_router_stop(router);
    cv_hs_free(api);
    cv_oai_service_free(oai);
    cv_rpc_server_free(srv);
    cv_admin_free(admin);
    cv_infer_free(inf);
    cv_rag_service_free(rag);
    cv_router_free(router);
    cv_rc_free(state.rc); /* after the engines: their last answers may still be stored */
    cv_health_free(health);
    cv_tls_files_free(rcfg.tls);
    cv_auth_free(auth);
    cv_pii_free(pii);
    cv_otlp_stop(); /* last: the spans of the requests that just ended go out too */
    if (!rc) fprintf(stderr, "{\"msg\":\"stopped\"}\n");
    return rc;
}
