/* corvid-controlplane: runs the control plane, or edits and reads its keys in etcd.
 *
 *   corvid-controlplane run --config FILE [--metrics-listen HOST:PORT]
 *   corvid-controlplane --check-config --config FILE   (parse and check; no etcd, no
 *       files it names are read: those are read by run)
 *   corvid-controlplane version add MODEL VERSION --uri U --sha256 H [--notes TEXT]
 *   corvid-controlplane rollout start MODEL VERSION [--strategy bluegreen|canary]
 *       [--steps 10,50,100] [--max-error-rate 0.05] [--max-p99-ttft-ms 500]
 *       [--window 60s] [--min-requests 50] [--failure-limit 2]
 *   corvid-controlplane rollout status MODEL [--json]
 *   corvid-controlplane rollout promote|abort|pause|resume MODEL
 * Every subcommand takes --etcd URL[,URL...] and --prefix P, or reads both from
 * --config FILE. Exit status: 0 done, 1 refused or failed, 2 a wrong command line
 * (named, with the usage: cli.h); --help, -h and help [COMMAND] print the usage.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "controller.h"
#include "cp_config.h"
#include "cp_metrics.h"
#include "etcd.h"
#include "http_endpoint.h"
#include "otlp_export.h"
#include "rollout.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

typedef struct opts {
    const char *words[4]; /* positional words after the subcommand */
    size_t n_words;
    const char *etcd, *prefix, *config, *uri, *sha256, *notes, *strategy, *steps;
    const char *max_error_rate, *max_p99, *window, *min_requests, *failure_limit;
    const char *metrics_listen;
    bool json, check_config;
} opts;

/* The command whose usage is printed ("run", "version", "rollout"); NULL: all. */
static const char *g_command;

static const struct {
    const char *name, *text;
} k_usage[] = {
    {"run",
     "usage: corvid-controlplane run --config FILE [--metrics-listen HOST:PORT]\n"
     "       corvid-controlplane --check-config --config FILE [--metrics-listen HOST:PORT]\n"
     "  run: watch etcd, elect a leader, roll model versions out to the servers\n"
     "  --check-config           check the config and exit (contacts no etcd, reads none\n"
     "                           of the files it names)\n"
     "  --metrics-listen HOST:PORT\n"
     "                           /metrics, /healthz and /readyz (over the config's metrics_listen)\n"},
    {"version",
     "usage: corvid-controlplane version add MODEL VERSION --uri URI [--sha256 HEX] [--notes TEXT]\n"
     "  registers a version of MODEL: where it is, the sha256 the servers check, notes\n"},
    {"rollout",
     "usage: corvid-controlplane rollout start MODEL VERSION [--strategy bluegreen|canary]\n"
     "           [--steps 10,50,100] [--max-error-rate R] [--max-p99-ttft-ms MS]\n"
     "           [--window 60s] [--min-requests N] [--failure-limit N]\n"
     "       corvid-controlplane rollout status MODEL [--json]\n"
     "       corvid-controlplane rollout promote|abort|pause|resume MODEL\n"
     "  --strategy S             bluegreen (all traffic at once) or canary (implied by --steps)\n"
     "  --steps 10,50,100        canary traffic percentages, each watched for one window\n"
     "  --max-error-rate R       share of server-fault answers that fails a window, 0..1\n"
     "  --max-p99-ttft-ms MS     p99 time to first token that fails a window (0: not judged)\n"
     "  --window D               how long each step is watched (60s, 1500ms, 2m)\n"
     "  --min-requests N         answered requests before a window is judged\n"
     "  --failure-limit N        consecutive failing windows that roll back\n"
     "  --json                   status: the status key as stored\n"
     "  (the config's \"defaults\" fill what a rollout does not say)\n"},
};

static void usage(FILE *f) {
    if (!g_command)
        fputs("usage: corvid-controlplane run|version|rollout ... [options]\n"
              "       corvid-controlplane help [COMMAND]      (or corvid-controlplane [COMMAND] --help)\n",
              f);
    for (size_t i = 0; i < sizeof k_usage / sizeof k_usage[0]; i++) {
        if (g_command && strcmp(g_command, k_usage[i].name) != 0) continue;
        if (!g_command) fputc('\n', f);
        fputs(k_usage[i].text, f);
    }
    if (!g_command) fputc('\n', f);
    fputs("every command:\n"
          "  --config FILE            the control plane's config (JSON; etcd and prefix from it)\n"
          "  --etcd URL[,URL...]      etcd endpoints (over the config's)\n"
          "  --prefix P               key prefix in etcd (default /corvid)\n"
          "  -h, --help               this text\n"
          "Exit status: 0 done, 1 refused or failed, 2 a wrong command line.\n",
          f);
}

#define USAGE_ERROR(...) cv_cli_usage_error("corvid-controlplane", usage, __VA_ARGS__)

static void parse_args(int argc, char **argv, int first, const char *cmd, opts *o) {
    /* scope: the command an option belongs to; NULL: every command. */
    static const struct {
        const char *name;
        size_t offset;
        const char *scope;
    } valued[] = {
        {"--etcd", offsetof(opts, etcd), NULL},
        {"--prefix", offsetof(opts, prefix), NULL},
        {"--config", offsetof(opts, config), NULL},
        {"--uri", offsetof(opts, uri), "version"},
        {"--sha256", offsetof(opts, sha256), "version"},
        {"--notes", offsetof(opts, notes), "version"},
        {"--strategy", offsetof(opts, strategy), "rollout"},
        {"--steps", offsetof(opts, steps), "rollout"},
        {"--max-error-rate", offsetof(opts, max_error_rate), "rollout"},
        {"--max-p99-ttft-ms", offsetof(opts, max_p99), "rollout"},
        {"--window", offsetof(opts, window), "rollout"},
        {"--min-requests", offsetof(opts, min_requests), "rollout"},
        {"--failure-limit", offsetof(opts, failure_limit), "rollout"},
        {"--metrics-listen", offsetof(opts, metrics_listen), "run"},
    };
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        if (strcmp(a, "--json") == 0) {
            if (strcmp(cmd, "rollout") != 0) USAGE_ERROR("--json is an option of rollout status");
            o->json = true;
            continue;
        }
        if (strcmp(a, "--check-config") == 0) {
            if (cmd[0] && strcmp(cmd, "run") != 0) USAGE_ERROR("--check-config takes no command but run");
            o->check_config = true;
            continue;
        }
        if (a[0] != '-') {
            if (o->n_words == sizeof o->words / sizeof o->words[0]) USAGE_ERROR("unexpected argument '%s'", a);
            o->words[o->n_words++] = a;
            continue;
        }
        size_t k = 0;
        while (k < sizeof valued / sizeof valued[0] && strcmp(valued[k].name, a) != 0) k++;
        if (k == sizeof valued / sizeof valued[0]) USAGE_ERROR("unknown option %s", a);
        /* run's options also apply to --check-config, which takes no command. */
        const char *scope = valued[k].scope;
        if (scope && strcmp(scope, cmd) != 0 && !(!cmd[0] && !strcmp(scope, "run")))
            USAGE_ERROR("%s is not an option of %s", a, cmd[0] ? cmd : "--check-config");
        if (i + 1 >= argc) USAGE_ERROR("%s needs a value", a);
        *(const char **)((char *)o + valued[k].offset) = argv[++i];
    }
}

/* The words and options each command needs, checked before anything is read. */
static void check_command(const char *cmd, const opts *o) {
    static const char *const rollout_subs[] = {"start", "status", "promote", "abort", "pause", "resume"};
    const size_t n_subs = sizeof rollout_subs / sizeof rollout_subs[0];
    if (!cmd[0] || !strcmp(cmd, "run")) {
        if (!cmd[0] && !o->check_config) USAGE_ERROR("a command is required");
        if (!o->config) USAGE_ERROR("%s needs --config FILE", cmd[0] ? cmd : "--check-config");
        if (o->n_words) USAGE_ERROR("unexpected argument '%s'", o->words[0]);
    } else if (!strcmp(cmd, "version")) {
        if (o->n_words == 0 || strcmp(o->words[0], "add") != 0) USAGE_ERROR("version needs add MODEL VERSION");
        if (o->n_words != 3) USAGE_ERROR("version add needs MODEL and VERSION");
        if (!o->uri) USAGE_ERROR("version add needs --uri");
    } else {
        size_t k = 0;
        while (o->n_words && k < n_subs && strcmp(rollout_subs[k], o->words[0]) != 0) k++;
        if (!o->n_words || k == n_subs) USAGE_ERROR("rollout needs start, status, promote, abort, pause or resume");
        size_t want = k == 0 ? 3 : 2;
        if (o->n_words != want) USAGE_ERROR("rollout %s needs %s", o->words[0], want == 3 ? "MODEL and VERSION" : "one MODEL");
    }
}

/* Endpoints and prefix: flags over the config file. */
static int settings(const opts *o, cv_cp_config *cfg) {
    cv_error err;
    cv_cp_config_defaults(cfg);
    if (o->config && cv_cp_config_load(o->config, cfg, &err) != CV_OK) {
        fprintf(stderr, "corvid-controlplane: %s\n", err.msg);
        return 1;
    }
    if (o->etcd) snprintf(cfg->etcd, sizeof cfg->etcd, "%s", o->etcd);
    if (o->prefix) snprintf(cfg->prefix, sizeof cfg->prefix, "%s", o->prefix);
    if (o->metrics_listen)
        snprintf(cfg->metrics_listen, sizeof cfg->metrics_listen, "%s", o->metrics_listen);
    if (!cfg->etcd[0]) {
        cv_cp_config_free(cfg);
        USAGE_ERROR("no etcd endpoints (--etcd or the config's \"etcd\")");
    }
    return 0;
}

static int fail(const cv_error *err) {
    fprintf(stderr, "corvid-controlplane: %s\n", err->msg);
    return 1;
}

static int open_etcd(const cv_cp_config *cfg, cv_etcd **c) {
    cv_error err;
    cv_etcd_config ec = {.endpoints = cfg->etcd};
    return cv_etcd_open(&ec, c, &err) == CV_OK ? 0 : fail(&err);
}

static void model_key(char *buf, size_t cap, const cv_cp_config *cfg, const char *model,
                      const char *leaf) {
    snprintf(buf, cap, "%s/models/%s/%s", cfg->prefix, model, leaf);
}

static int put_json(cv_etcd *c, const char *key, json_t *o) {
    cv_error err;
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!text) return fprintf(stderr, "corvid-controlplane: out of memory\n"), 1;
    cv_status st = cv_etcd_put(c, key, text, strlen(text), 0, NULL, &err);
    free(text);
    return st == CV_OK ? 0 : fail(&err);
}

static int version_add(const cv_cp_config *cfg, cv_etcd *c, const opts *o) {
    char key[512];
    snprintf(key, sizeof key, "%s/models/%s/versions/%s", cfg->prefix, o->words[1], o->words[2]);
    json_t *v = json_pack("{ssssss}", "uri", o->uri, "sha256", o->sha256 ? o->sha256 : "", "notes",
                          o->notes ? o->notes : "");
    if (put_json(c, key, v)) return 1;
    printf("%s %s registered\n", o->words[1], o->words[2]);
    return 0;
}

/* "60s", "1500ms", "2m" or plain seconds -> milliseconds; -1 when malformed. */
static long duration_ms(const char *s) {
    char *end;
    double v = strtod(s, &end);
    double scale = strcmp(end, "ms") == 0 ? 1 : strcmp(end, "m") == 0 ? 60000
                   : (strcmp(end, "s") == 0 || !*end) ? 1000 : -1;
    if (end == s || scale < 0 || !(v > 0) || v * scale > 86400e3) return -1;
    return (long)(v * scale);
}

static int set_number(json_t *o, const char *flag, const char *text, bool integer) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end) {
        fprintf(stderr, "corvid-controlplane: %s: \"%s\" is not a number\n", flag, text);
        return 2;
    }
    json_object_set_new(o, flag + 2, integer ? json_integer((json_int_t)v) : json_real(v));
    return 0;
}

static int rollout_start(const cv_cp_config *cfg, cv_etcd *c, const opts *o) {
    cv_error err;
    char key[512];
    snprintf(key, sizeof key, "%s/models/%s/versions/%s", cfg->prefix, o->words[1], o->words[2]);
    cv_etcd_kv kv;
    if (cv_etcd_get(c, key, &kv, NULL, &err) != CV_OK) {
        if (err.code == CV_ENOTFOUND)
            fprintf(stderr, "corvid-controlplane: %s %s is not registered (version add first)\n",
                    o->words[1], o->words[2]);
        else
            fail(&err);
        return 1;
    }
    cv_etcd_kv_free(&kv);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char id[64];
    snprintf(id, sizeof id, "%lld-%ld", (long long)ts.tv_sec, ts.tv_nsec ^ (long)getpid());
    json_t *r = json_pack("{ssss}", "id", id, "target", o->words[2]);
    int rc = 0;
    if (o->strategy) json_object_set_new(r, "strategy", json_string(o->strategy));
    if (o->steps) {
        int steps[CV_ROLLOUT_MAX_STEPS];
        size_t n;
        if (cv_rollout_steps_parse(o->steps, steps, &n, &err) != CV_OK) rc = fail(&err);
        json_t *a = json_array();
        for (size_t i = 0; !rc && i < n; i++) json_array_append_new(a, json_integer(steps[i]));
        json_object_set_new(r, "steps", a);
        if (!o->strategy) json_object_set_new(r, "strategy", json_string("canary"));
    }
    if (o->window) {
        long ms = duration_ms(o->window);
        if (ms < 100) {
            fprintf(stderr, "corvid-controlplane: --window: \"%s\" (e.g. 60s, 1500ms, 2m; >= 100ms)\n",
                    o->window);
            rc = 2;
        }
        json_object_set_new(r, "window_ms", json_integer(ms));
    }
    if (!rc && o->max_error_rate) rc = set_number(r, "--max_error_rate", o->max_error_rate, false);
    if (!rc && o->max_p99) rc = set_number(r, "--max_p99_ttft_ms", o->max_p99, false);
    if (!rc && o->min_requests) rc = set_number(r, "--min_requests", o->min_requests, true);
    if (!rc && o->failure_limit) rc = set_number(r, "--failure_limit", o->failure_limit, true);
    /* Checked here as the controller will read it, so a typo fails now, not later. */
    char *text = rc ? NULL : json_dumps(r, JSON_COMPACT);
    cv_rollout_spec spec;
    if (text && cv_rollout_spec_parse(text, strlen(text), &cfg->defaults, &spec, &err) != CV_OK)
        rc = fail(&err);
    free(text);
    if (rc) {
        json_decref(r);
        return rc;
    }
    model_key(key, sizeof key, cfg, o->words[1], "rollout");
    if (put_json(c, key, r)) return 1;
    printf("rollout %s of %s %s started\n", id, o->words[1], o->words[2]);
    return 0;
}

/* Sets one flag of the rollout key, compare-and-swap on its mod_revision. */
static int rollout_command(const cv_cp_config *cfg, cv_etcd *c, const char *model,
                           const char *field, bool value) {
    char key[512];
    cv_error err;
    model_key(key, sizeof key, cfg, model, "rollout");
    for (int attempt = 0; attempt < 5; attempt++) {
        cv_etcd_kv kv;
        if (cv_etcd_get(c, key, &kv, NULL, &err) != CV_OK) {
            if (err.code == CV_ENOTFOUND)
                fprintf(stderr, "corvid-controlplane: %s has no rollout\n", model);
            return err.code == CV_ENOTFOUND ? 1 : fail(&err);
        }
        json_t *o = json_loadb(kv.value, kv.value_len, 0, NULL);
        int64_t rev = kv.mod_revision;
        cv_etcd_kv_free(&kv);
        if (!json_is_object(o)) {
            json_decref(o);
            fprintf(stderr, "corvid-controlplane: %s is not a JSON object\n", key);
            return 1;
        }
        json_object_set_new(o, field, json_boolean(value));
        char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        if (!text) return 1;
        cv_etcd_cmp cmp = {.key = key, .target = CV_ETCD_CMP_MOD, .result = CV_ETCD_EQUAL, .number = rev};
        cv_etcd_op put = {.type = CV_ETCD_OP_PUT, .key = key, .value = text, .value_len = strlen(text)};
        cv_etcd_txn_result tr;
        cv_status st = cv_etcd_txn(c, &cmp, 1, &put, 1, NULL, 0, &tr, &err);
        free(text);
        if (st != CV_OK) return fail(&err);
        bool ok = tr.succeeded;
        cv_etcd_txn_result_free(&tr);
        if (ok) {
            printf("%s: %s=%s\n", model, field, value ? "true" : "false");
            return 0;
        }
    }
    fprintf(stderr, "corvid-controlplane: %s kept changing under us; try again\n", key);
    return 1;
}

static int rollout_status(const cv_cp_config *cfg, cv_etcd *c, const opts *o) {
    char key[512];
    cv_error err;
    cv_etcd_kv kv;
    model_key(key, sizeof key, cfg, o->words[1], "status");
    if (cv_etcd_get(c, key, &kv, NULL, &err) != CV_OK) {
        if (err.code == CV_ENOTFOUND) fprintf(stderr, "corvid-controlplane: %s has no status yet\n", o->words[1]);
        return err.code == CV_ENOTFOUND ? 1 : fail(&err);
    }
    cv_rollout_status st;
    cv_status rc = cv_rollout_status_parse(kv.value, kv.value_len, &st, &err);
    if (rc == CV_OK && o->json) printf("%s\n", kv.value);
    cv_etcd_kv_free(&kv);
    if (rc != CV_OK) return fail(&err);
    if (o->json) return 0;
    printf("model       %s\nphase       %s\nactive      %s\ncandidate   %s\ntraffic     %d%%\n"
           "message     %s\nhistory\n",
           o->words[1], cv_rollout_phase_name(st.phase), st.active[0] ? st.active : "-",
           st.candidate[0] ? st.candidate : "-", st.traffic, st.message);
    for (size_t i = 0; i < st.n_history; i++) {
        time_t t = (time_t)(st.history[i].at_ms / 1000);
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%H:%M:%S", &tm);
        printf("  %s.%03d  %-12s %s\n", when, (int)(st.history[i].at_ms % 1000),
               cv_rollout_phase_name(st.history[i].phase), st.history[i].message);
    }
    return 0;
}

static char *render_metrics(void *ctx) { return cv_cp_metrics_render(ctx); }
static int is_ready(void *ctx) { return cv_cp_metrics_ready(ctx); }

/* What run would refuse, found without etcd: the endpoints' and the listener's syntax. */
static int check_config(const cv_cp_config *cfg) {
    cv_error err;
    cv_etcd *c = NULL;
    cv_etcd_config ec = {.endpoints = cfg->etcd};
    if (cv_etcd_open(&ec, &c, &err) != CV_OK) return fail(&err);
    cv_etcd_close(c);
    if (cfg->metrics_listen[0] && cv_http_check_addr(cfg->metrics_listen, &err) != CV_OK) return fail(&err);
    printf("config ok\n");
    return 0;
}

static int run(cv_cp_config *cfg) {
    cv_error err;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    cv_cp_metrics *metrics = NULL;
    cv_http *http = NULL;
    if (cv_cp_metrics_new(&metrics, &err) != CV_OK) return fail(&err);
    cv_otlp_config oc = {.endpoint = cfg->otlp_endpoint, .service_name = "corvid-controlplane", .instance_id = cfg->id};
    if (cfg->otlp_endpoint[0] && cv_otlp_start(&oc, &err) != CV_OK) {
        cv_cp_metrics_free(metrics);
        return fail(&err);
    }
    if (cfg->metrics_listen[0]) {
        cv_http_callbacks cb = {render_metrics, is_ready, metrics};
        int port = 0;
        if (cv_http_start(cfg->metrics_listen, &cb, &http, &port, &err) != CV_OK) {
            cv_cp_metrics_free(metrics);
            return fail(&err);
        }
        fprintf(stderr, "corvid-controlplane: metrics on http://%s (port %d): /metrics /healthz /readyz\n",
                cfg->metrics_listen, port);
    }
    fprintf(stderr, "corvid-controlplane: %s running, etcd %s, %zu static servers%s%s%s%s\n", cfg->id,
            cfg->etcd, cfg->n_servers, cfg->dns_name[0] ? ", dns " : "", cfg->dns_name,
            cfg->tls_ca[0] ? ", TLS to servers" : "",
            cfg->token_file[0] || cfg->token_env[0] ? ", bearer token" : "");
    int rc = cv_controller_run(cfg, metrics, &stop_flag, &err) == CV_OK ? 0 : fail(&err);
    cv_http_stop(http);
    cv_cp_metrics_free(metrics);
    cv_otlp_stop();
    return rc;
}

int main(int argc, char **argv) {
    static const char *const commands[] = {"run", "version", "rollout"};
    if (argc < 2) USAGE_ERROR("a command is required");
    if (cv_cli_is_help(argv[1])) cv_cli_help(usage);
    if (!strcmp(argv[1], "help")) {
        for (size_t k = 0; argc == 3 && k < sizeof commands / sizeof commands[0]; k++)
            if (!strcmp(argv[2], commands[k])) g_command = commands[k];
        if (argc == 3 && !g_command) USAGE_ERROR("unknown command \"%s\"", argv[2]);
        if (argc > 3) USAGE_ERROR("help takes at most one command");
        cv_cli_help(usage);
    }
    /* Options may come first only for --check-config, which takes no subcommand. */
    const char *cmd = argv[1][0] == '-' ? "" : argv[1];
    for (size_t k = 0; cmd[0] && k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(cmd, commands[k])) g_command = commands[k];
    if (cmd[0] && !g_command) USAGE_ERROR("unknown command \"%s\"", cmd);
    opts o = {0};
    parse_args(argc, argv, cmd[0] ? 2 : 1, cmd, &o);
    check_command(cmd, &o);
    cv_cp_config cfg;
    int rc = settings(&o, &cfg);
    if (rc) return rc;
    if (o.check_config || strcmp(cmd, "run") == 0) {
        rc = o.check_config ? check_config(&cfg) : run(&cfg);
        cv_cp_config_free(&cfg);
        return rc;
    }
    cv_etcd *c = NULL;
    rc = open_etcd(&cfg, &c);
    if (rc) {
        cv_cp_config_free(&cfg);
        return rc;
    }
    const char *sub = o.words[0];
    if (strcmp(cmd, "version") == 0) rc = version_add(&cfg, c, &o);
    else if (strcmp(sub, "start") == 0) rc = rollout_start(&cfg, c, &o);
    else if (strcmp(sub, "status") == 0) rc = rollout_status(&cfg, c, &o);
    else if (strcmp(sub, "promote") == 0) rc = rollout_command(&cfg, c, o.words[1], "promote", true);
    else if (strcmp(sub, "abort") == 0) rc = rollout_command(&cfg, c, o.words[1], "abort", true);
    else if (strcmp(sub, "pause") == 0) rc = rollout_command(&cfg, c, o.words[1], "paused", true);
    else rc = rollout_command(&cfg, c, o.words[1], "paused", false);
    cv_etcd_close(c);
    cv_cp_config_free(&cfg);
    return rc;
}
