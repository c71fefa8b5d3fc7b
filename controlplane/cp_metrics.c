#include "cp_metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corvid/client.h"

/* Status codes 0..CORVID_CODES-1, then one bucket for errors on the client's side. */
#define CODE_BUCKETS (CORVID_CODES + 1)

typedef struct model_entry {
    char name[CV_ROLLOUT_NAME];
    bool listed; /* has a rollout key now */
    cv_rollout_phase phase;
    uint64_t events[CV_CP_ROLLOUT_EVENTS];
} model_entry;

/* Scalars are atomics (a scrape may see one update and not the next, as with any
 * scrape); the model table takes the mutex. */
struct cv_cp_metrics {
    atomic_bool leader, ready;
    atomic_uint_fast64_t etcd_failed;
    atomic_size_t discovered;
    atomic_long healthy;
    atomic_uint_fast64_t server_errors[CODE_BUCKETS];
    atomic_uint_fast64_t creds_reloads, creds_errors;
    atomic_int_fast64_t creds_loaded_ms;
    atomic_bool creds_ok;
    pthread_mutex_t mu;
    model_entry models[CV_CP_METRICS_MODELS];
    size_t n_models;
};

cv_status cv_cp_metrics_new(cv_cp_metrics **out, cv_error *err) {
    cv_cp_metrics *m = calloc(1, sizeof *m);
    if (!m) return cv_errorf(err, CV_ENOMEM, "metrics: out of memory");
    pthread_mutex_init(&m->mu, NULL);
    atomic_store(&m->healthy, -1);
    atomic_store(&m->creds_ok, true); /* nothing refused yet */
    *out = m;
    return CV_OK;
}

void cv_cp_metrics_free(cv_cp_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* The entry of `model`, added when new; NULL when the table is full. Under mu. */
static model_entry *entry(cv_cp_metrics *m, const char *model) {
    for (size_t i = 0; i < m->n_models; i++)
        if (strcmp(m->models[i].name, model) == 0) return &m->models[i];
    if (m->n_models == CV_CP_METRICS_MODELS) return NULL;
    model_entry *e = &m->models[m->n_models++];
    snprintf(e->name, sizeof e->name, "%s", model);
    return e;
}

void cv_cp_metrics_set_leader(cv_cp_metrics *m, bool leader) { atomic_store(&m->leader, leader); }

void cv_cp_metrics_set_etcd(cv_cp_metrics *m, bool reached, uint64_t failed_calls) {
    atomic_store(&m->ready, reached);
    atomic_store(&m->etcd_failed, failed_calls);
}

void cv_cp_metrics_set_phases(cv_cp_metrics *m, const char *const *models,
                              const cv_rollout_phase *phases, size_t n) {
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_models; i++) m->models[i].listed = false;
    for (size_t i = 0; i < n; i++) {
        model_entry *e = entry(m, models[i]);
        if (!e) continue;
        e->listed = true;
        e->phase = phases[i];
    }
    pthread_mutex_unlock(&m->mu);
}

void cv_cp_metrics_count_rollout(cv_cp_metrics *m, const char *model, cv_cp_rollout_event ev) {
    pthread_mutex_lock(&m->mu);
    model_entry *e = entry(m, model);
    if (e && ev < CV_CP_ROLLOUT_EVENTS) e->events[ev]++;
    pthread_mutex_unlock(&m->mu);
}

void cv_cp_metrics_set_fleet(cv_cp_metrics *m, size_t discovered, long healthy) {
    atomic_store(&m->discovered, discovered);
    atomic_store(&m->healthy, healthy);
}

void cv_cp_metrics_count_server_error(cv_cp_metrics *m, int code) {
    atomic_fetch_add(&m->server_errors[code >= 0 && code < CORVID_CODES ? code : CORVID_CODES], 1);
}

void cv_cp_metrics_set_creds(cv_cp_metrics *m, uint64_t reloads, uint64_t errors,
                             int64_t loaded_unix_ms, bool last_ok) {
    atomic_store(&m->creds_reloads, reloads);
    atomic_store(&m->creds_errors, errors);
    atomic_store(&m->creds_loaded_ms, loaded_unix_ms);
    atomic_store(&m->creds_ok, last_ok);
}

bool cv_cp_metrics_ready(cv_cp_metrics *m) { return atomic_load(&m->ready); }

/* A label value as the text format wants it: backslash, quote and newline escaped.
 * Model names come from etcd keys, which anyone with write access may choose. */
static void label(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') fputc('\\', f), fputc(*s, f);
        else if (*s == '\n') fputs("\\n", f);
        else fputc(*s, f);
    }
}

static void header(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void model_counter(FILE *f, const cv_cp_metrics *m, const char *name, const char *help,
                          cv_cp_rollout_event ev) {
    header(f, name, "counter", help);
    for (size_t i = 0; i < m->n_models; i++) {
        fputs(name, f);
        fputs("{model=\"", f);
        label(f, m->models[i].name);
        fprintf(f, "\"} %llu\n", (unsigned long long)m->models[i].events[ev]);
    }
}

static void render_locked(FILE *f, cv_cp_metrics *m) {
    header(f, "corvid_controlplane_leader", "gauge", "1 while this replica holds the leader lease.");
    fprintf(f, "corvid_controlplane_leader %d\n", atomic_load(&m->leader) ? 1 : 0);
    header(f, "corvid_controlplane_etcd_reachable", "gauge", "1 when etcd answered the last read.");
    fprintf(f, "corvid_controlplane_etcd_reachable %d\n", atomic_load(&m->ready) ? 1 : 0);
    header(f, "corvid_controlplane_etcd_errors_total", "counter",
           "etcd requests that failed (no endpoint answered in time, or an error status).");
    fprintf(f, "corvid_controlplane_etcd_errors_total %llu\n",
            (unsigned long long)atomic_load(&m->etcd_failed));
    header(f, "corvid_rollout_phase", "gauge",
           "1 for the current phase of each model's rollout (read from etcd), 0 for the others.");
    for (size_t i = 0; i < m->n_models; i++) {
        if (!m->models[i].listed) continue;
        for (int p = CV_PHASE_NONE; p <= CV_PHASE_FAILED; p++) {
            fputs("corvid_rollout_phase{model=\"", f);
            label(f, m->models[i].name);
            fprintf(f, "\",phase=\"%s\"} %d\n", cv_rollout_phase_name((cv_rollout_phase)p),
                    m->models[i].phase == (cv_rollout_phase)p);
        }
    }
    model_counter(f, m, "corvid_controlplane_rollouts_started_total",
                  "Rollouts this replica started staging, as leader.", CV_CP_ROLLOUT_STARTED);
    model_counter(f, m, "corvid_controlplane_rollouts_completed_total",
                  "Rollouts this replica promoted, as leader.", CV_CP_ROLLOUT_COMPLETED);
    model_counter(f, m, "corvid_controlplane_rollouts_rolled_back_total",
                  "Rollouts this replica finished rolling back, as leader.", CV_CP_ROLLOUT_ROLLED_BACK);
    header(f, "corvid_controlplane_servers_discovered", "gauge",
           "corvid-servers in the fleet (static list or DNS records).");
    fprintf(f, "corvid_controlplane_servers_discovered %zu\n", atomic_load(&m->discovered));
    long healthy = atomic_load(&m->healthy);
    if (healthy >= 0) {
        header(f, "corvid_controlplane_servers_healthy", "gauge",
               "Servers that answered the leader's last Admin.GetStatus probe.");
        fprintf(f, "corvid_controlplane_servers_healthy %ld\n", healthy);
    }
    header(f, "corvid_controlplane_creds_reloads_total", "counter",
           "Server credential sets (TLS files, token file) reloaded after a file changed.");
    fprintf(f, "corvid_controlplane_creds_reloads_total %llu\n",
            (unsigned long long)atomic_load(&m->creds_reloads));
    header(f, "corvid_controlplane_creds_reload_errors_total", "counter",
           "Changed credential files refused (unreadable, wrong PEM kind, bad token); "
           "the last good set stays in use.");
    fprintf(f, "corvid_controlplane_creds_reload_errors_total %llu\n",
            (unsigned long long)atomic_load(&m->creds_errors));
    header(f, "corvid_controlplane_creds_last_reload_successful", "gauge",
           "0 while the newest credential files on disk are refused ones.");
    fprintf(f, "corvid_controlplane_creds_last_reload_successful %d\n", atomic_load(&m->creds_ok) ? 1 : 0);
    header(f, "corvid_controlplane_creds_loaded_timestamp_seconds", "gauge",
           "When the server credentials in use were read (Unix time).");
    fprintf(f, "corvid_controlplane_creds_loaded_timestamp_seconds %.3f\n",
            (double)atomic_load(&m->creds_loaded_ms) / 1e3);
    header(f, "corvid_controlplane_server_errors_total", "counter",
           "Admin calls to servers that failed, by gRPC status (CLIENT_ERROR: on this side).");
    for (int c = 0; c < CODE_BUCKETS; c++) {
        uint64_t n = atomic_load(&m->server_errors[c]);
        if (n)
            fprintf(f, "corvid_controlplane_server_errors_total{code=\"%s\"} %llu\n",
                    corvid_code_name(c < CORVID_CODES ? c : CORVID_CLIENT_ERROR), (unsigned long long)n);
    }
}

char *cv_cp_metrics_render(cv_cp_metrics *m) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    pthread_mutex_lock(&m->mu);
    render_locked(f, m);
    pthread_mutex_unlock(&m->mu);
    if (ferror(f)) {
        fclose(f);
        free(text);
        return NULL;
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
