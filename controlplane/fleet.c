#include "fleet.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cv_fleet {
    const cv_cp_config *cfg;
    const cv_server_creds *creds;
    cv_fleet_server **servers;
    size_t n;
    int64_t next_resolve_ms;
};

static void server_free(cv_fleet_server *s) {
    if (!s) return;
    corvid_client_free(s->client);
    corvid_server_status_free(&s->status);
    free(s);
}

/* The client copies what it needs from creds: they may go once it is made. */
static cv_status client_new(const cv_fleet *f, const cv_server_creds *creds, const char *addr,
                            corvid_client **out, cv_error *err) {
    corvid_client_options opt = {.addr = addr, .timeout_s = f->cfg->admin_timeout_ms / 1e3};
    cv_server_creds_apply(creds, &opt);
    corvid_error ce;
    if (corvid_client_new(&opt, out, &ce) != 0)
        return cv_errorf(err, CV_EINVAL, "server %s: %s", addr, ce.message);
    return CV_OK;
}

static cv_status server_new(const cv_fleet *f, const char *addr, cv_fleet_server **out,
                            cv_error *err) {
    cv_fleet_server *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "out of memory");
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    cv_status st = client_new(f, f->creds, s->addr, &s->client, err);
    if (st) {
        free(s);
        return st;
    }
    snprintf(s->error, sizeof s->error, "not probed yet");
    *out = s;
    return CV_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void cv_fleet_addrs_free(char **addrs, size_t n) {
    for (size_t i = 0; i < n; i++) free(addrs[i]);
    free(addrs);
}

cv_status cv_fleet_resolve(const char *name, int port, char ***addrs, size_t *n, cv_error *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    *addrs = NULL;
    *n = 0;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) return cv_errorf(err, CV_ENOTFOUND, "resolving %s: %s", name, gai_strerror(rc));
    size_t cap = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) cap++;
    char **out = calloc(cap ? cap : 1, sizeof *out);
    cv_status st = out ? CV_OK : cv_errorf(err, CV_ENOMEM, "out of memory");
    for (struct addrinfo *a = res; !st && a; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 16];
        const void *src = a->ai_family == AF_INET6
                              ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                              : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
        if (!inet_ntop(a->ai_family, src, ip, sizeof ip)) continue;
        snprintf(buf, sizeof buf, a->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
        if (!(out[*n] = strdup(buf))) st = cv_errorf(err, CV_ENOMEM, "out of memory");
        else (*n)++;
    }
    freeaddrinfo(res);
    if (st) {
        cv_fleet_addrs_free(out, *n);
        *n = 0;
        return st;
    }
    qsort(out, *n, sizeof *out, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (k && strcmp(out[k - 1], out[i]) == 0) free(out[i]);
        else out[k++] = out[i];
    }
    *n = k;
    *addrs = out;
    return CV_OK;
}

/* Makes the fleet exactly `addrs`, keeping the servers already known. */
static cv_status set_members(cv_fleet *f, char *const *addrs, size_t n, bool *changed,
                             cv_error *err) {
    cv_fleet_server **next = calloc(n ? n : 1, sizeof *next);
    if (!next) return cv_errorf(err, CV_ENOMEM, "out of memory");
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < f->n; j++) {
            if (f->servers[j] && strcmp(f->servers[j]->addr, addrs[i]) == 0) {
                next[i] = f->servers[j];
                f->servers[j] = NULL;
                kept++;
                break;
            }
        }
        if (next[i]) continue;
        cv_status st = server_new(f, addrs[i], &next[i], err);
        if (st) {
            for (size_t k = 0; k < i; k++) server_free(next[k]); /* old ones already moved */
            free(next);
            return st;
        }
    }
    *changed = kept != f->n || kept != n;
    for (size_t j = 0; j < f->n; j++) server_free(f->servers[j]);
    free(f->servers);
    f->servers = next;
    f->n = n;
    return CV_OK;
}

cv_status cv_fleet_open(const cv_cp_config *cfg, const cv_server_creds *creds, cv_fleet **out,
                        cv_error *err) {
    cv_fleet *f = calloc(1, sizeof *f);
    if (!f) return cv_errorf(err, CV_ENOMEM, "out of memory");
    f->cfg = cfg;
    f->creds = creds;
    bool changed;
    /* A DNS fleet starts empty: its first cv_fleet_refresh resolves it, so a name
     * without records yet (no ready pods) delays the fleet instead of failing start. */
    cv_status st = set_members(f, cfg->servers, cfg->n_servers, &changed, err);
    if (st) {
        cv_fleet_close(f);
        return st;
    }
    *out = f;
    return CV_OK;
}

cv_status cv_fleet_set_creds(cv_fleet *f, const cv_server_creds *creds, cv_error *err) {
    corvid_client **fresh = calloc(f->n ? f->n : 1, sizeof *fresh);
    if (!fresh) return cv_errorf(err, CV_ENOMEM, "out of memory");
    cv_status st = CV_OK;
    for (size_t i = 0; i < f->n && !st; i++)
        st = client_new(f, creds, f->servers[i]->addr, &fresh[i], err);
    for (size_t i = 0; i < f->n; i++) {
        corvid_client *drop = st ? fresh[i] : f->servers[i]->client;
        if (!st) f->servers[i]->client = fresh[i];
        corvid_client_free(drop);
    }
    free(fresh);
    if (!st) f->creds = creds;
    return st;
}

void cv_fleet_close(cv_fleet *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) server_free(f->servers[i]);
    free(f->servers);
    free(f);
}

cv_status cv_fleet_refresh(cv_fleet *f, int64_t now_ms, bool *changed, cv_error *err) {
    *changed = false;
    if (!f->cfg->dns_name[0] || now_ms < f->next_resolve_ms) return CV_OK;
    f->next_resolve_ms = now_ms + f->cfg->dns_refresh_ms;
    char **addrs;
    size_t n;
    cv_status st = cv_fleet_resolve(f->cfg->dns_name, f->cfg->dns_port, &addrs, &n, err);
    if (st) return st;
    st = set_members(f, addrs, n, changed, err);
    cv_fleet_addrs_free(addrs, n);
    return st;
}

typedef struct probe_job {
    cv_fleet_server *server;
    uint32_t window_s;
} probe_job;

static void *probe_one(void *arg) {
    probe_job *job = arg;
    cv_fleet_server *s = job->server;
    corvid_error ce;
    char before[sizeof s->error];
    memcpy(before, s->error, sizeof before);
    corvid_server_status_free(&s->status);
    memset(&s->status, 0, sizeof s->status);
    s->reachable = corvid_admin_status(s->client, job->window_s, &s->status, &ce) == 0;
    if (!s->reachable) {
        s->error_code = ce.code;
        snprintf(s->error, sizeof s->error, "%s: %.480s", corvid_code_name(ce.code), ce.message);
        corvid_server_status_free(&s->status);
        memset(&s->status, 0, sizeof s->status);
    } else {
        s->error[0] = 0;
        s->error_code = CORVID_OK;
    }
    s->changed = strcmp(before, s->error) != 0;
    return NULL;
}

void cv_fleet_probe(cv_fleet *f, uint32_t window_s) {
    size_t n = f->n ? f->n : 1;
    pthread_t *th = calloc(n, sizeof *th);
    probe_job *jobs = calloc(n, sizeof *jobs);
    bool *started = calloc(n, sizeof *started);
    for (size_t i = 0; i < f->n; i++) {
        probe_job one = {f->servers[i], window_s};
        /* Without memory for threads, probe one after the other. */
        if (!th || !jobs || !started) {
            probe_one(&one);
            continue;
        }
        jobs[i] = one;
        started[i] = pthread_create(&th[i], NULL, probe_one, &jobs[i]) == 0;
        if (!started[i]) probe_one(&jobs[i]);
    }
    for (size_t i = 0; i < f->n; i++)
        if (started && started[i]) pthread_join(th[i], NULL);
    free(th);
    free(jobs);
    free(started);
}

size_t cv_fleet_count(const cv_fleet *f) { return f->n; }
cv_fleet_server *cv_fleet_at(cv_fleet *f, size_t i) { return i < f->n ? f->servers[i] : NULL; }

const corvid_slot_status *cv_fleet_slot(const cv_fleet_server *s, const char *version) {
    if (!s->reachable) return NULL;
    for (size_t i = 0; i < s->status.n_slots; i++)
        if (strcmp(s->status.slots[i].version, version) == 0) return &s->status.slots[i];
    return NULL;
}
