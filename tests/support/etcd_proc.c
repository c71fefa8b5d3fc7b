#include "etcd_proc.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 15000

int cv_test_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static size_t sink(char *d, size_t sz, size_t nm, void *ud) {
    size_t n = sz * nm, *got = ud;
    if (*got < 1 && n && strstr(d, "\"health\":\"true\"")) *got = 1;
    return n;
}

static bool healthy(const char *url) {
    char u[128];
    snprintf(u, sizeof u, "%s/health", url);
    CURL *h = curl_easy_init();
    if (!h) return false;
    size_t ok = 0;
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 500L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ok);
    bool up = curl_easy_perform(h) == CURLE_OK && ok;
    curl_easy_cleanup(h);
    return up;
}

static void log_tail(const cv_test_etcd *e, char *out, size_t cap) {
    char path[300];
    snprintf(path, sizeof path, "%s/etcd.log", e->dir);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, n > (long)cap - 1 ? n - ((long)cap - 1) : 0, SEEK_SET);
    size_t got = fread(out, 1, cap - 1, f);
    out[got] = 0;
    fclose(f);
}

cv_status cv_test_etcd_launch(cv_test_etcd *e, bool main, cv_error *err) {
    const char *bin = getenv("CORVID_ETCD_BIN");
    if (!bin || !*bin) bin = "etcd";
    char data[300], logp[300], listen[160], peer[64], cluster[96];
    snprintf(data, sizeof data, "%s/data", e->dir);
    snprintf(logp, sizeof logp, "%s/etcd.log", e->dir);
    snprintf(listen, sizeof listen, main ? "%s,%s" : "%s", main ? e->url : e->alt_url, e->alt_url);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%d", e->peer_port);
    snprintf(cluster, sizeof cluster, "n=%s", peer);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return cv_errorf(err, CV_EIO, "fork for etcd: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp(bin, bin, "--name", "n", "--data-dir", data, "--listen-client-urls", listen,
               "--advertise-client-urls", main ? e->url : e->alt_url, "--listen-peer-urls", peer,
               "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    e->pid = pid;
    const char *probe = main ? e->url : e->alt_url;
    for (int waited = 0; waited < READY_TIMEOUT_MS; waited += 50) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            e->pid = 0;
            char tail[300];
            log_tail(e, tail, sizeof tail);
            return cv_errorf(err, CV_EUNAVAILABLE, "etcd (%s) exited with status %d before serving %s: %s",
                             bin, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                             probe, tail);
        }
        if (healthy(probe)) return CV_OK;
        cv_test_sleep_ms(50);
    }
    cv_test_etcd_kill(e, SIGKILL);
    return cv_errorf(err, CV_ETIMEOUT, "etcd at %s not healthy within %d ms (log %s)", probe,
                     READY_TIMEOUT_MS, logp);
}

cv_status cv_test_etcd_start(cv_test_etcd *e, cv_error *err) {
    memset(e, 0, sizeof *e);
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof e->dir, "%s/corvid-etcd-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(e->dir)) return cv_errorf(err, CV_EIO, "mkdtemp %s: %s", e->dir, strerror(errno));
    e->client_port = cv_test_free_port();
    e->alt_port = cv_test_free_port();
    e->peer_port = cv_test_free_port();
    if (e->client_port < 0 || e->alt_port < 0 || e->peer_port < 0 || e->client_port == e->alt_port ||
        e->alt_port == e->peer_port || e->client_port == e->peer_port)
        return cv_errorf(err, CV_EIO, "no free loopback ports (%d, %d, %d)", e->client_port,
                         e->alt_port, e->peer_port);
    snprintf(e->url, sizeof e->url, "http://127.0.0.1:%d", e->client_port);
    snprintf(e->alt_url, sizeof e->alt_url, "http://127.0.0.1:%d", e->alt_port);
    return cv_test_etcd_launch(e, true, err);
}

cv_test_etcd cv_test_etcd_shared;

int cv_test_etcd_group_setup(void **state) {
    (void)state;
    cv_test_etcd *e = &cv_test_etcd_shared;
    cv_error err = {0};
    if (cv_test_etcd_start(e, &err)) {
        fprintf(stderr, "starting etcd: %s\n", err.msg);
        return -1;
    }
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    fprintf(stderr, "seed %u, etcd %s (pid %d, dir %s)\n", seed, e->url, (int)e->pid, e->dir);
    return 0;
}

int cv_test_etcd_group_teardown(void **state) {
    (void)state;
    cv_test_etcd_destroy(&cv_test_etcd_shared);
    return 0;
}

int64_t cv_test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cv_test_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

void cv_test_etcd_kill(cv_test_etcd *e, int sig) {
    if (e->pid <= 0) return;
    kill(e->pid, SIGCONT); /* a stopped process would not act on SIGTERM */
    kill(e->pid, sig);
    waitpid(e->pid, NULL, 0);
    e->pid = 0;
}

/* Whether every thread of pid is (or none is) in the stopped state. */
static bool threads_stopped(pid_t pid, bool stopped) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return false;
    bool all = true;
    for (struct dirent *de; all && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char stat_path[384], buf[512];
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, de->d_name);
        FILE *f = fopen(stat_path, "r");
        if (!f) continue; /* the thread just exited */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')'); /* the state follows "(comm) " */
        if (rp && rp[1] == ' ') all = (rp[2] == 'T' || rp[2] == 't') == stopped;
    }
    closedir(d);
    return all;
}

void cv_test_etcd_pause(cv_test_etcd *e, bool paused) {
    if (e->pid <= 0) return;
    kill(e->pid, paused ? SIGSTOP : SIGCONT);
    /* kill() returns before the threads stop: a request sent right after could
     * still be answered. Wait (up to 2 s) until the state has really changed. */
    for (int i = 0; i < 400 && !threads_stopped(e->pid, paused); i++) cv_test_sleep_ms(5);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void cv_test_etcd_destroy(cv_test_etcd *e) {
    cv_test_etcd_kill(e, SIGKILL);
    if (e->dir[0]) nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    e->dir[0] = 0;
}
