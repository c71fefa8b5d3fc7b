#include "server_creds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
