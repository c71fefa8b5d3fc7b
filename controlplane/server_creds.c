#include "server_creds.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define PEM_MAX (1 << 20)

/* The whole file as a NUL-terminated string; `what` names it in messages. */
static cv_status read_text(const char *path, const char *what, char **out, cv_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, CV_EIO, "%s %s: %s", what, path, strerror(errno));
    char *buf = malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    bool failed = buf && ferror(f);
    fclose(f);
    if (!buf) return cv_errorf(err, CV_ENOMEM, "%s %s: out of memory", what, path);
    if (failed || n > PEM_MAX) {
        free(buf);
        return failed ? cv_errorf(err, CV_EIO, "%s %s: read error", what, path)
                      : cv_errorf(err, CV_ERANGE, "%s %s: larger than %d bytes", what, path, PEM_MAX);
    }
    buf[n] = 0;
    *out = buf;
    return CV_OK;
}

/* A PEM file that must hold a block whose label contains `label`. */
static cv_status read_pem(const char *path, const char *what, const char *label, char **out,
                          cv_error *err) {
    cv_status st = read_text(path, what, out, err);
    if (st) return st;
    char marker[64];
    snprintf(marker, sizeof marker, "-----BEGIN %s", label);
    const char *begin = strstr(*out, "-----BEGIN ");
    bool found = false;
    for (; begin && !found; begin = strstr(begin + 1, "-----BEGIN ")) {
        const char *eol = strstr(begin + 11, "-----");
        found = eol && memmem(begin, (size_t)(eol - begin), label, strlen(label)) != NULL;
    }
    if (found) return CV_OK;
    free(*out);
    *out = NULL;
    return cv_errorf(err, CV_EFORMAT, "%s %s: no PEM %s block in it", what, path, label);
}

/* Trailing whitespace dropped; then one non-empty line of printable ASCII. */
static cv_status check_token(char *tok, const char *where, cv_error *err) {
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        tok[--n] = 0;
    if (n == 0) return cv_errorf(err, CV_EINVAL, "server token from %s is empty", where);
    for (size_t i = 0; i < n; i++)
        if (tok[i] < 0x21 || tok[i] > 0x7e)
            return cv_errorf(err, CV_EFORMAT,
                             "server token from %s: byte %zu is not a printable character "
                             "(a bearer token is one line)", where, i);
    return CV_OK;
}

static cv_status load_token(const cv_cp_config *cfg, char **out, cv_error *err) {
    char where[600];
    if (cfg->token_file[0]) {
        snprintf(where, sizeof where, "file %s", cfg->token_file);
        cv_status st = read_text(cfg->token_file, "server_token_file", out, err);
        return st ? st : check_token(*out, where, err);
    }
    const char *v = getenv(cfg->token_env);
    if (!v) return cv_errorf(err, CV_ENOTFOUND, "server_token_env: $%s is not set", cfg->token_env);
    snprintf(where, sizeof where, "$%s", cfg->token_env);
    if (!(*out = strdup(v))) return cv_errorf(err, CV_ENOMEM, "out of memory");
    return check_token(*out, where, err);
}

cv_status cv_server_creds_load(const cv_cp_config *cfg, cv_server_creds *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    cv_status st = CV_OK;
    if (cfg->tls_ca[0]) {
        st = read_pem(cfg->tls_ca, "server_tls.ca", "CERTIFICATE", &out->ca_pem, err);
        if (!st && cfg->tls_cert[0])
            st = read_pem(cfg->tls_cert, "server_tls.cert", "CERTIFICATE", &out->cert_pem, err);
        if (!st && cfg->tls_key[0])
            st = read_pem(cfg->tls_key, "server_tls.key", "PRIVATE KEY", &out->key_pem, err);
        if (cfg->tls_server_name[0]) out->server_name = cfg->tls_server_name;
    }
    if (!st && (cfg->token_file[0] || cfg->token_env[0])) st = load_token(cfg, &out->token, err);
    if (st) cv_server_creds_free(out);
    return st;
}

void cv_server_creds_apply(const cv_server_creds *c, corvid_client_options *opt) {
    opt->root_certs_pem = c->ca_pem;
    opt->client_cert_pem = c->cert_pem;
    opt->client_key_pem = c->key_pem;
    opt->tls_server_name = c->server_name;
    opt->bearer_token = c->token;
}

static void wipe_free(char *s) {
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

void cv_server_creds_free(cv_server_creds *c) {
    free(c->ca_pem);
    free(c->cert_pem);
    wipe_free(c->key_pem);
    wipe_free(c->token);
    memset(c, 0, sizeof *c);
}

/* What stat() says about a file, enough to notice a new version of it. */
typedef struct file_id {
    int err; /* errno of a failed stat (the file is missing, say); the rest is then 0 */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_id;

typedef struct watched {
    const char *key, *path; /* config key; file (into cfg) */
    file_id seen;           /* at the last load attempt, good or refused */
} watched;

/* An immutable set; creds first, so a cv_server_creds pointer is the snapshot's. */
typedef struct snapshot {
    cv_server_creds creds;
    atomic_int refs;
} snapshot;

struct cv_server_creds_store {
    const cv_cp_config *cfg;
    pthread_mutex_t mu; /* everything below */
    snapshot *current;
    watched files[4];
    size_t n_files;
    int64_t next_check_ms;
    cv_server_creds_stats stats;
};

static void identify(const char *path, file_id *id) {
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(path, &st) != 0) {
        id->err = errno;
        return;
    }
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->size = st.st_size;
    id->mtime = st.st_mtim;
    id->ctime = st.st_ctim;
}

static bool same_time(struct timespec a, struct timespec b) {
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

static bool same_id(const file_id *a, const file_id *b) {
    return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           same_time(a->mtime, b->mtime) && same_time(a->ctime, b->ctime);
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A snapshot read from the files now, holding one reference (the store's). */
static cv_status snapshot_load(const cv_cp_config *cfg, snapshot **out, cv_error *err) {
    snapshot *snap = calloc(1, sizeof *snap);
    if (!snap) return cv_errorf(err, CV_ENOMEM, "out of memory");
    cv_status st = cv_server_creds_load(cfg, &snap->creds, err);
    if (st) {
        free(snap);
        return st;
    }
    atomic_init(&snap->refs, 1);
    *out = snap;
    return CV_OK;
}

void cv_server_creds_release(const cv_server_creds *c) {
    if (!c) return;
    snapshot *snap = (snapshot *)c;
    if (atomic_fetch_sub(&snap->refs, 1) != 1) return;
    cv_server_creds_free(&snap->creds);
    free(snap);
}

cv_status cv_server_creds_store_open(const cv_cp_config *cfg, cv_server_creds_store **out,
                                     cv_error *err) {
    cv_server_creds_store *s = calloc(1, sizeof *s);
    if (!s) return cv_errorf(err, CV_ENOMEM, "out of memory");
    s->cfg = cfg;
    const char *keys[] = {"server_tls.ca", "server_tls.cert", "server_tls.key", "server_token_file"};
    const char *paths[] = {cfg->tls_ca, cfg->tls_ca[0] ? cfg->tls_cert : "",
                           cfg->tls_ca[0] ? cfg->tls_key : "", cfg->token_file};
    for (size_t i = 0; i < 4; i++) {
        if (!paths[i][0]) continue;
        watched *w = &s->files[s->n_files++];
        w->key = keys[i];
        w->path = paths[i];
        identify(w->path, &w->seen); /* before reading: a later write moves it again */
    }
    cv_status st = snapshot_load(cfg, &s->current, err);
    if (st) {
        free(s);
        return st;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->stats.loaded_unix_ms = wall_ms();
    s->stats.last_ok = true;
    *out = s;
    return CV_OK;
}

void cv_server_creds_store_close(cv_server_creds_store *s) {
    if (!s) return;
    cv_server_creds_release(&s->current->creds);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under mu. Notes which files moved since the last attempt, into `moved`. */
static bool files_moved(cv_server_creds_store *s, char *moved, size_t cap) {
    bool any = false;
    size_t len = 0;
    if (cap) moved[0] = 0;
    for (size_t i = 0; i < s->n_files; i++) {
        file_id now;
        identify(s->files[i].path, &now);
        if (same_id(&now, &s->files[i].seen)) continue;
        s->files[i].seen = now;
        if (len < cap)
            len += (size_t)snprintf(moved + len, cap - len, "%s%s", any ? ", " : "", s->files[i].key);
        any = true;
    }
    return any;
}

cv_server_creds_change cv_server_creds_store_refresh(cv_server_creds_store *s, int64_t now_ms,
                                                     int64_t min_interval_ms, char *moved,
                                                     size_t moved_cap, cv_error *err) {
    pthread_mutex_lock(&s->mu);
    cv_server_creds_change change = CV_CREDS_UNCHANGED;
    snapshot *old = NULL, *fresh = NULL;
    if (now_ms < s->next_check_ms || !files_moved(s, moved, moved_cap)) goto out;
    if (snapshot_load(s->cfg, &fresh, err) != CV_OK) {
        s->stats.errors++;
        s->stats.last_ok = false;
        change = CV_CREDS_REFUSED;
        goto out;
    }
    old = s->current;
    s->current = fresh;
    s->stats.reloads++;
    s->stats.loaded_unix_ms = wall_ms();
    s->stats.last_ok = true;
    change = CV_CREDS_RELOADED;
out:
    if (now_ms >= s->next_check_ms) s->next_check_ms = now_ms + min_interval_ms;
    pthread_mutex_unlock(&s->mu);
    if (old) cv_server_creds_release(&old->creds);
    return change;
}

const cv_server_creds *cv_server_creds_store_get(cv_server_creds_store *s) {
    pthread_mutex_lock(&s->mu);
    snapshot *snap = s->current;
    atomic_fetch_add(&snap->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return &snap->creds;
}

void cv_server_creds_store_stats(cv_server_creds_store *s, cv_server_creds_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}
