/* corvid-server: serves models over gRPC.
 *
 * Start-up: config (file, then flags), the gRPC server with the health service, then
 * the model. SIGTERM/SIGINT drain: health goes NOT_SERVING, new calls are refused
 * with UNAVAILABLE, in-flight calls get drain_timeout to finish, then the rest are
 * cancelled and the process exits 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "health.h"
#include "rpc_server.h"

static const char *const service_names[] = {"", "corvid.v1.Inference", "corvid.v1.Admin"};
#define N_SERVICES (sizeof service_names / sizeof service_names[0])

static void usage(void) {
    fprintf(stderr,
            "usage: corvid-server [--config FILE] [--listen HOST:PORT] [--model PATH]\n"
            "                     [--model-version NAME] [--threads N] [--max-running N]\n"
            "                     [--max-waiting N] [--kv-memory-mb N] [--kv-block-tokens N]\n"
            "                     [--max-tokens-default N] [--drain-timeout SECONDS]\n"
            "                     [--metrics-listen HOST:PORT] [--check-config]\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits for in-flight calls (Watch streams excepted) to end, at most timeout_s. */
static int drain(cv_rpc_server *srv, cv_health *h, double timeout_s) {
    double end = now_s() + timeout_s;
    while (cv_rpc_server_active_calls(srv) - cv_health_watchers(h) > 0) {
        if (now_s() > end) return -1;
        usleep(20 * 1000);
    }
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        }
    }
    cv_config cfg;
    cv_error err = {0};
    int check_only = 0;
    cv_config_defaults(&cfg);
    if (cv_config_parse_args(&cfg, argc, argv, &check_only, &err) != CV_OK ||
        cv_config_validate(&cfg, &err) != CV_OK) {
        fprintf(stderr, "corvid-server: %s\n", err.msg);
        return 1;
    }
    if (check_only) {
        printf("config ok\n");
        return 0;
    }

    /* Signals are taken by sigwait in main, so every thread started after this blocks them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    cv_rpc_server *srv = NULL;
    cv_health *health = NULL;
    int rc = 1, port = 0;
    cv_rpc_config rcfg = {.listen = cfg.listen};
    if (cv_health_new(&health, &err) != CV_OK || cv_rpc_server_new(&rcfg, &srv, &err) != CV_OK ||
        cv_health_register(health, srv, &err) != CV_OK)
        goto out;
    for (size_t i = 0; i < N_SERVICES; i++)
        if (cv_health_set(health, service_names[i], CV_HEALTH_NOT_SERVING, &err) != CV_OK) goto out;
    if (cv_rpc_server_start(srv, &port, &err) != CV_OK) goto out;
    /* Inference and Admin stay NOT_SERVING until the serving work wires in the engine. */
    cv_health_set(health, "", CV_HEALTH_SERVING, &err);
    fprintf(stderr, "{\"msg\":\"listening\",\"addr\":\"%s\",\"port\":%d}\n", cfg.listen, port);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "{\"msg\":\"draining\",\"signal\":%d,\"timeout_s\":%g}\n", sig,
            cfg.drain_timeout_s);
    for (size_t i = 0; i < N_SERVICES; i++)
        cv_health_set(health, service_names[i], CV_HEALTH_NOT_SERVING, &err);
    cv_rpc_server_stop_accepting(srv);
    if (drain(srv, health, cfg.drain_timeout_s) != 0)
        fprintf(stderr, "{\"msg\":\"drain timeout: cancelling the remaining calls\"}\n");
    rc = 0;
out:
    if (rc) fprintf(stderr, "corvid-server: %s\n", err.msg);
    cv_rpc_server_free(srv);
    cv_health_free(health);
    if (!rc) fprintf(stderr, "{\"msg\":\"stopped\"}\n");
    return rc;
}
