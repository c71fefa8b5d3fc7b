/* bench-swap: how fast corvid-controlplane swaps versions, and how fast it backs out.
 *
 *   bench-swap [--runs N] [--window-ms W] [--poll-ms P] [--concurrency C]
 *
 * Starts its own etcd (PATH or $CORVID_ETCD_BIN), two corvid-servers from
 * $CORVID_TESTING_BIN (fault injection) serving stories260K from $CORVID_DATA/models
 * (default tests/data, run from the repository root), and
 * corvid-controlplane from $CORVID_BIN, in a temp dir, on free loopback ports; C client
 * threads per server generate 8 tokens at a time throughout. Each run:
 *  - rollout: a good version blue-green; time from the rollout key's write to every
 *    server at 100% on it, and the failed client requests meanwhile;
 *  - rollback: a canary (50,100) whose candidate gets 20% injected errors once traffic
 *    reaches it; time from the injection (the breach) to every server back at 100% on
 *    the active version, and the failed requests meanwhile (the injected ones).
 * Prints one JSON object: medians over the runs, with ratios against the model's load
 * time (rollout) and against window + poll, the bound the analysis promises (rollback).
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <ftw.h>

#include "cli.h"
#include "corvid/client.h"
#include "etcd.h"
#include "rollout.h"
#include "timing.h"

extern char **environ;

#define N_SERVERS 2
#define MAX_RUNS 32

static char tmpdir[256];
static pid_t children[8];
static size_t n_children;
static atomic_long ok_count, failed_count;
static atomic_int stop_load;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Starts argv with stdout and stderr into tmpdir/log; remembered for cleanup. */
static pid_t spawn(char *const argv[], const char *log) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, log);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "bench-swap: cannot start %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    children[n_children++] = pid;
    return pid;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void cleanup(void) {
    for (size_t i = n_children; i-- > 0;) kill(children[i], SIGTERM);
    for (size_t i = n_children; i-- > 0;) waitpid(children[i], NULL, 0);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct loader {
    corvid_client *client;
    pthread_t thread;
} loader;

static void *load_loop(void *arg) {
    loader *l = arg;
    corvid_generate_params p = {.prompt = "Once upon a time"};
    p.sampling.max_tokens = 8;
    p.sampling.ignore_eos = 1;
    while (!atomic_load(&stop_load)) {
        corvid_stream *s;
        corvid_error e;
        corvid_event ev;
        int rc = corvid_generate(l->client, &p, &s, &e);
        if (rc == 0) {
            while ((rc = corvid_stream_next(s, &ev, &e)) == 1) {}
            corvid_stream_free(s);
        }
        atomic_fetch_add(rc == 0 ? &ok_count : &failed_count, 1);
    }
    return NULL;
}

typedef struct bench {
    cv_etcd *etcd;
    corvid_client *admin[N_SERVERS];
    char addr[N_SERVERS][64];
    const char *data; /* the fixture folder: stories260K is under its models/ */
    int window_ms, poll_ms;
} bench;

static int put(bench *b, const char *key, json_t *o) {
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    cv_error err;
    int rc = text && cv_etcd_put(b->etcd, key, text, strlen(text), 0, NULL, &err) == CV_OK ? 0 : -1;
    if (rc) fprintf(stderr, "bench-swap: put %s: %s\n", key, text ? err.msg : "out of memory");
    free(text);
    return rc;
}

static int sha256_file(const char *path, char out[65]) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    int ok = p && fscanf(p, "%64s", out) == 1;
    if (p) pclose(p);
    return ok ? 0 : -1;
}

static int register_version(bench *b, const char *version, const char *file) {
    char path[512], sha[65], key[256];
    snprintf(path, sizeof path, "%s/models/%s", b->data, file);
    if (sha256_file(path, sha)) return -1;
    snprintf(key, sizeof key, "/corvid/models/bench/versions/%s", version);
    return put(b, key, json_pack("{ssss}", "uri", path, "sha256", sha));
}

static int start_rollout(bench *b, const char *id, const char *version, bool canary) {
    json_t *o = json_pack("{sssssssi}", "id", id, "target", version, "strategy",
                          canary ? "canary" : "bluegreen", "window_ms", b->window_ms);
    if (canary) json_object_set_new(o, "steps", json_pack("[ii]", 50, 100));
    return put(b, "/corvid/models/bench/rollout", o);
}

/* Whether every server gives `version` all the traffic. */
static bool all_on(bench *b, const char *version, double *load_s) {
    for (int i = 0; i < N_SERVERS; i++) {
        corvid_server_status st;
        corvid_error e;
        if (corvid_admin_status(b->admin[i], 1, &st, &e) != 0) return false;
        bool on = false;
        for (size_t k = 0; k < st.n_slots; k++) {
            if (strcmp(st.slots[k].version, version) != 0) continue;
            on = st.slots[k].weight == 100;
            if (load_s && st.slots[k].load_seconds > *load_s) *load_s = st.slots[k].load_seconds;
        }
        corvid_server_status_free(&st);
        if (!on) return false;
    }
    return true;
}

static int wait_phase(bench *b, const char *id, cv_rollout_phase want, double timeout_s,
                      cv_rollout_status *out) {
    double end = cv_seconds() + timeout_s;
    while (cv_seconds() < end) {
        cv_etcd_kv kv;
        if (cv_etcd_get(b->etcd, "/corvid/models/bench/status", &kv, NULL, NULL) == CV_OK) {
            cv_status rc = cv_rollout_status_parse(kv.value, kv.value_len, out, NULL);
            cv_etcd_kv_free(&kv);
            if (rc == CV_OK && strcmp(out->id, id) == 0 && out->phase == want) return 0;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "bench-swap: rollout %s did not reach %s in %.0f s\n", id,
            cv_rollout_phase_name(want), timeout_s);
    return -1;
}

static int wait_all_on(bench *b, const char *version, double timeout_s, double *load_s) {
    double end = cv_seconds() + timeout_s;
    while (cv_seconds() < end) {
        if (all_on(b, version, load_s)) return 0;
        sleep_ms(5);
    }
    fprintf(stderr, "bench-swap: %s not at 100%% everywhere in %.0f s\n", version, timeout_s);
    return -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One good rollout and one rolled back; fills the run's figures. */
static int one_run(bench *b, int run, const char **active, double *to100, double *fail_to100,
                   double *back, double *fail_back, double *load_s) {
    static char names[2 * MAX_RUNS][16];
    char *good = names[2 * run], *bad = names[2 * run + 1], id[32];
    cv_rollout_status st;
    snprintf(good, 16, "g%d", run);
    snprintf(bad, 16, "b%d", run);
    if (register_version(b, good, run % 2 ? "stories260K.gguf" : "stories260K-Q8_0-mixed.gguf") ||
        register_version(b, bad, "stories260K-Q4_0-mixed.gguf"))
        return -1;
    snprintf(id, sizeof id, "good-%d", run);
    long f0 = atomic_load(&failed_count);
    double t0 = cv_seconds();
    if (start_rollout(b, id, good, false) || wait_all_on(b, good, 60, load_s)) return -1;
    *to100 = (cv_seconds() - t0) * 1e3;
    *fail_to100 = (double)(atomic_load(&failed_count) - f0);
    if (wait_phase(b, id, CV_PHASE_PROMOTED, 60, &st)) return -1;
    *active = good;

    snprintf(id, sizeof id, "bad-%d", run);
    if (start_rollout(b, id, bad, true) || wait_phase(b, id, CV_PHASE_OBSERVING, 60, &st)) return -1;
    for (int i = 0; i < N_SERVERS; i++) {
        corvid_error e;
        if (corvid_admin_set_fault(b->admin[i], bad, 0.2f, &e) != 0) {
            fprintf(stderr, "bench-swap: fault injection on %s: %s\n", b->addr[i], e.message);
            return -1;
        }
    }
    f0 = atomic_load(&failed_count);
    t0 = cv_seconds();
    if (wait_all_on(b, good, 60, NULL)) return -1;
    *back = (cv_seconds() - t0) * 1e3;
    *fail_back = (double)(atomic_load(&failed_count) - f0);
    return wait_phase(b, id, CV_PHASE_ROLLED_BACK, 30, &st);
}

static int wait_ready(bench *b) {
    double end = cv_seconds() + 60;
    for (int i = 0; i < N_SERVERS; i++) {
        int serving = 0;
        corvid_error e;
        while (!serving && cv_seconds() < end)
            if (corvid_health(b->admin[i], "", &serving, &e) != 0 || !serving) sleep_ms(50);
        if (!serving) return -1;
    }
    while (cv_seconds() < end) {
        cv_etcd_kv kv;
        if (cv_etcd_get(b->etcd, "/corvid/controlplane/leader", &kv, NULL, NULL) == CV_OK) {
            cv_etcd_kv_free(&kv);
            return 0;
        }
        sleep_ms(50);
    }
    return -1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench-swap [--runs N] [--window-ms W] [--poll-ms P] [--concurrency C]\n"
            "  corvid-controlplane's time to roll a version out and to roll a failing one back, with\n"
            "  its own etcd and two corvid-servers on stories260K under client load; one JSON object\n"
            "  on stdout. Needs CORVID_TESTING_BIN and CORVID_BIN; stories260K from $CORVID_DATA/models\n"
            "  (default tests/data, from the repository root; make test sets all three)\n"
            "  --runs N             rollouts and rollbacks, 1..%d (default 3)\n"
            "  --window-ms W        the rollout window, at least 100 (default 1500)\n"
            "  --poll-ms P          the control plane's poll, at least 10 (default 250)\n"
            "  --concurrency C      client threads per server, 1..64 (default 3)\n"
            "  -h, --help           this text\n",
            MAX_RUNS);
}

int main(int argc, char **argv) {
    int runs = 3, conc = 3;
    bench b = {.window_ms = 1500, .poll_ms = 250};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        static const struct {
            const char *name;
            long lo, hi;
        } k[] = {{"--runs", 1, MAX_RUNS}, {"--window-ms", 100, 3600000}, {"--poll-ms", 10, 3600000}, {"--concurrency", 1, 64}};
        size_t w = 0;
        while (w < sizeof k / sizeof k[0] && strcmp(k[w].name, a) != 0) w++;
        if (w == sizeof k / sizeof k[0])
            cv_cli_usage_error("bench-swap", usage, a[0] == '-' ? "unknown option %s" : "unexpected argument '%s'", a);
        if (i + 1 >= argc) cv_cli_usage_error("bench-swap", usage, "%s needs a value", a);
        long v;
        if (cv_cli_int("bench-swap", a, argv[++i], k[w].lo, k[w].hi, &v)) return CV_CLI_EXIT_USAGE;
        if (w == 0) runs = (int)v;
        else if (w == 1) b.window_ms = (int)v;
        else if (w == 2) b.poll_ms = (int)v;
        else conc = (int)v;
    }
    const char *testing = getenv("CORVID_TESTING_BIN"), *bin = getenv("CORVID_BIN");
    const char *data = getenv("CORVID_DATA");
    /* Absolute: the path goes into etcd and on to the servers. */
    if (!(b.data = realpath(data && *data ? data : "tests/data", NULL))) {
        fprintf(stderr, "bench-swap: no fixture folder %s (set CORVID_DATA, or run from the repository root)\n",
                data && *data ? data : "tests/data");
        return 2;
    }
    if (!testing || !bin || runs < 1 || runs > MAX_RUNS || conc < 1 || conc > 64 ||
        b.window_ms < 100 || b.poll_ms < 10) {
        fprintf(stderr, "bench-swap: needs CORVID_TESTING_BIN and CORVID_BIN; "
                        "runs 1..%d, concurrency 1..64, window >= 100 ms, poll >= 10 ms\n", MAX_RUNS);
        return 2;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bench-swap-XXXXXX");
    if (!mkdtemp(tmpdir)) return perror("bench-swap: mkdtemp"), 1;
    atexit(cleanup);

    char etcd_url[64], peer_url[64], datadir[300], f32[512], server_bin[512], cp_bin[512];
    snprintf(etcd_url, sizeof etcd_url, "http://127.0.0.1:%d", free_port());
    snprintf(peer_url, sizeof peer_url, "http://127.0.0.1:%d", free_port());
    snprintf(datadir, sizeof datadir, "%s/etcd", tmpdir);
    char cluster[80];
    snprintf(cluster, sizeof cluster, "n=%s", peer_url);
    const char *etcd_bin = getenv("CORVID_ETCD_BIN") ? getenv("CORVID_ETCD_BIN") : "etcd";
    char *etcd_argv[] = {(char *)etcd_bin, "--name", "n", "--data-dir", datadir,
                         "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                         "--initial-cluster", cluster, NULL};
    if (spawn(etcd_argv, "etcd.log") < 0) return 1;
    snprintf(f32, sizeof f32, "%s/models/stories260K.gguf", b.data);
    snprintf(server_bin, sizeof server_bin, "%s/corvid-server", testing);
    snprintf(cp_bin, sizeof cp_bin, "%s/corvid-controlplane", bin);
    json_t *servers = json_array();
    for (int i = 0; i < N_SERVERS; i++) {
        char cache[300], log[32];
        snprintf(b.addr[i], sizeof b.addr[i], "127.0.0.1:%d", free_port());
        snprintf(cache, sizeof cache, "%s/cache%d", tmpdir, i);
        snprintf(log, sizeof log, "server%d.log", i);
        char *argv_s[] = {server_bin, "--listen", b.addr[i], "--model", f32, "--model-version", "v1",
                          "--model-cache-dir", cache, "--max-running", "16", "--max-waiting", "64", NULL};
        if (spawn(argv_s, log) < 0) return 1;
        json_array_append_new(servers, json_string(b.addr[i]));
        corvid_client_options opt = {.addr = b.addr[i], .timeout_s = 10};
        corvid_error e;
        if (corvid_client_new(&opt, &b.admin[i], &e) != 0) return fprintf(stderr, "bench-swap: %s\n", e.message), 1;
    }
    char cfg_path[300];
    snprintf(cfg_path, sizeof cfg_path, "%s/cp.json", tmpdir);
    json_t *cfg = json_pack("{sssssosisisisisisisis{sisisi}}", "etcd", etcd_url, "id", "bench",
                            "servers", servers, "poll_ms", b.poll_ms, "election_ttl_s", 5,
                            "admin_timeout_ms", 1000, "stage_deadline_s", 60, "observe_deadline_s", 60,
                            "unmeasurable_deadline_s", 10, "keep_previous_s", 0, "defaults",
                            "min_requests", 10, "failure_limit", 2, "window_ms", b.window_ms);
    if (!cfg || json_dump_file(cfg, cfg_path, 0) != 0) return fprintf(stderr, "bench-swap: config\n"), 1;
    json_decref(cfg);
    char *cp_argv[] = {cp_bin, "run", "--config", cfg_path, NULL};
    cv_etcd_config ec = {.endpoints = etcd_url, .timeout_ms = 3000};
    cv_error err;
    if (cv_etcd_open(&ec, &b.etcd, &err) != CV_OK) return fprintf(stderr, "bench-swap: %s\n", err.msg), 1;
    sleep_ms(500); /* etcd up before the control plane campaigns */
    if (spawn(cp_argv, "controlplane.log") < 0 || wait_ready(&b))
        return fprintf(stderr, "bench-swap: fleet not ready; logs in %s\n", tmpdir), 1;

    loader *loaders = calloc((size_t)(conc * N_SERVERS), sizeof *loaders);
    for (int i = 0; loaders && i < conc * N_SERVERS; i++) {
        loaders[i].client = b.admin[i % N_SERVERS];
        pthread_create(&loaders[i].thread, NULL, load_loop, &loaders[i]);
    }
    double to100[MAX_RUNS], f100[MAX_RUNS], back[MAX_RUNS], fback[MAX_RUNS], load_s = 0;
    const char *active = "v1";
    int rc = 0;
    for (int r = 0; r < runs && !rc; r++)
        rc = one_run(&b, r, &active, &to100[r], &f100[r], &back[r], &fback[r], &load_s);
    atomic_store(&stop_load, 1);
    for (int i = 0; loaders && i < conc * N_SERVERS; i++) pthread_join(loaders[i].thread, NULL);
    free(loaders);
    if (rc) return fprintf(stderr, "bench-swap: failed; logs kept in %s\n", tmpdir), tmpdir[0] = 0, 1;
    double total_f100 = 0, total_fback = 0;
    for (int r = 0; r < runs; r++) total_f100 += f100[r], total_fback += fback[r];
    double m100 = median(to100, runs), mback = median(back, runs);
    json_t *out = json_pack(
        "{sisisisisfsfsfsfsfsIsI}", "runs", runs, "window_ms", b.window_ms, "poll_ms", b.poll_ms,
        "clients", conc * N_SERVERS, "rollout_to_100_ms_median", m100,
        "rollout_to_100_vs_model_load", load_s > 0 ? m100 / (load_s * 1e3) : 0.0,
        "rollback_after_breach_ms_median", mback,
        "rollback_vs_window_plus_poll", mback / (b.window_ms + b.poll_ms),
        "failed_requests_rollout_per_run", total_f100 / runs,
        "failed_requests_rollback_total", (json_int_t)total_fback, "requests_ok",
        (json_int_t)atomic_load(&ok_count));
    json_dumpf(out, stdout, JSON_SORT_KEYS);
    putchar('\n');
    json_decref(out);
    for (int i = 0; i < N_SERVERS; i++) corvid_client_free(b.admin[i]);
    cv_etcd_close(b.etcd);
    return 0;
}
