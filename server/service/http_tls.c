#include "http_tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timing.h"

#define MAX_CHAIN 16

/* One loaded set: what GnuTLS serves and what client chains are verified against. */
typedef struct creds {
    gnutls_pcert_st chain[MAX_CHAIN];
    unsigned n_chain;
    gnutls_privkey_t key;
    gnutls_x509_trust_list_t trust;  /* NULL without a client CA */
    struct creds *older;             /* replaced sets, freed with the server (see header) */
} creds;

struct cv_http_tls {
    pthread_mutex_t mu;
    cv_tls_files *files;
    creds *cur;
    char *first_ca;  /* the CA at start: names the acceptable issuers in the handshake */
};

static _Atomic(cv_http_tls *) active;

static void creds_free(creds *c) {
    while (c) {
        creds *older = c->older;
        for (unsigned i = 0; i < c->n_chain; i++) gnutls_pcert_deinit(&c->chain[i]);
        if (c->key) gnutls_privkey_deinit(c->key);
        if (c->trust) gnutls_x509_trust_list_deinit(c->trust, 1);
        free(c);
        c = older;
    }
}

static gnutls_datum_t datum(const char *pem) { return (gnutls_datum_t){(unsigned char *)pem, (unsigned)strlen(pem)}; }

/* tls_files has already checked that the PEM parses and the key matches; GnuTLS can
 * still refuse what OpenSSL took (an unsupported key type), hence the messages. */
static creds *creds_from(const cv_tls_files *f, cv_error *err) {
    creds *c = calloc(1, sizeof *c);
    if (!c) {
        cv_errorf(err, CV_ENOMEM, "tls: out of memory");
        return NULL;
    }
    gnutls_datum_t d = datum(cv_tls_files_cert_pem(f));
    c->n_chain = MAX_CHAIN;
    int rc = gnutls_pcert_list_import_x509_raw(c->chain, &c->n_chain, &d, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        c->n_chain = 0;
        cv_errorf(err, CV_EINVAL, "tls_cert: GnuTLS cannot use the chain (at most %d certificates): %s", MAX_CHAIN,
                  gnutls_strerror(rc));
        goto err;
    }
    d = datum(cv_tls_files_key_pem(f));
    if ((rc = gnutls_privkey_init(&c->key)) < 0 ||
        (rc = gnutls_privkey_import_x509_raw(c->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        cv_errorf(err, CV_EINVAL, "tls_key: GnuTLS cannot use the key: %s", gnutls_strerror(rc));
        goto err;
    }
    const char *ca = cv_tls_files_ca_pem(f);
    if (ca) {
        d = datum(ca);
        if ((rc = gnutls_x509_trust_list_init(&c->trust, 0)) < 0 ||
            (rc = gnutls_x509_trust_list_add_trust_mem(c->trust, &d, NULL, GNUTLS_X509_FMT_PEM, 0, 0)) <= 0) {
            cv_errorf(err, CV_EINVAL, "tls_client_ca: GnuTLS finds no usable CA certificate: %s",
                      gnutls_strerror(rc < 0 ? rc : GNUTLS_E_NO_CERTIFICATE_FOUND));
            goto err;
        }
    }
    return c;
err:
    creds_free(c);
    return NULL;
}

cv_status cv_http_tls_new(const cv_tls_paths *paths, cv_http_tls **out, cv_error *err) {
    cv_http_tls *t = calloc(1, sizeof *t);
    if (!t) return cv_errorf(err, CV_ENOMEM, "tls: out of memory");
    pthread_mutex_init(&t->mu, NULL);
    if (cv_tls_files_load(paths, &t->files, err) != CV_OK || !(t->cur = creds_from(t->files, err))) goto err;
    if (cv_tls_files_ca_pem(t->files) && !(t->first_ca = strdup(cv_tls_files_ca_pem(t->files)))) {
        cv_errorf(err, CV_ENOMEM, "tls: out of memory");
        goto err;
    }
    *out = t;
    return CV_OK;
err:
    cv_http_tls_free(t);
    return err->code;
}

/* Runs on handshakes (MHD's daemon thread): serve the newest valid files. */
static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *privkey) {
    (void)session, (void)req_ca_rdn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    cv_http_tls *t = atomic_load(&active);
    if (!t) return -1;
    pthread_mutex_lock(&t->mu);
    cv_tls_files *fresh = NULL;
    cv_error err = {0};
    creds *c = NULL;
    if (cv_tls_files_check(t->files, cv_seconds(), 1.0, &fresh, &err) != CV_OK || (fresh && !(c = creds_from(fresh, &err)))) {
        fprintf(stderr, "{\"msg\":\"TLS files changed but are not usable; serving the old ones\",\"error\":\"%s\"}\n",
                err.msg);
        cv_tls_files_free(fresh);
    } else if (fresh) {
        cv_tls_files_free(t->files);
        t->files = fresh;
        c->older = t->cur;
        t->cur = c;
    }
    *pcert = t->cur->chain;
    *pcert_length = t->cur->n_chain;
    *privkey = t->cur->key;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

cv_status cv_http_tls_start(cv_http_tls *t, struct MHD_OptionItem *items, cv_error *err) {
    cv_http_tls *none = NULL;
    if (!atomic_compare_exchange_strong(&active, &none, t))
        return cv_errorf(err, CV_EINVAL, "http_listen: one HTTPS listener per process");
    int n = 0;
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve};
    /* Setting a trust store is what makes MHD ask clients for a certificate. */
    if (t->first_ca) items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, t->first_ca};
    items[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return CV_OK;
}

static int verify_chain(gnutls_x509_trust_list_t trust, const gnutls_datum_t *der, unsigned n, char *why,
                        size_t cap) {
    gnutls_x509_crt_t crts[MAX_CHAIN] = {0};
    unsigned got = 0, status = 0;
    int ok = 0;
    if (n > MAX_CHAIN) {
        snprintf(why, cap, "client certificate chain of %u certificates is longer than %d", n, MAX_CHAIN);
        return 0;
    }
    for (; got < n; got++)
        if (gnutls_x509_crt_init(&crts[got]) < 0 || gnutls_x509_crt_import(crts[got], &der[got], GNUTLS_X509_FMT_DER) < 0) {
            snprintf(why, cap, "client certificate %u does not parse", got);
            got++;
            goto out;
        }
    gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
    int rc = gnutls_x509_trust_list_verify_crt2(trust, crts, n, &purpose, 1, 0, &status, NULL);
    if (rc < 0) {
        snprintf(why, cap, "client certificate not verified: %s", gnutls_strerror(rc));
    } else if (status) {
        gnutls_datum_t text = {0};
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
        snprintf(why, cap, "client certificate refused: %s", text.data ? (char *)text.data : "not trusted");
        gnutls_free(text.data);
    } else {
        ok = 1;
    }
out:
    for (unsigned i = 0; i < got; i++)
        if (crts[i]) gnutls_x509_crt_deinit(crts[i]);
    return ok;
}

int cv_http_tls_client_ok(cv_http_tls *t, struct MHD_Connection *c, char *why, size_t cap) {
    if (!t || !t->first_ca) return 1;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t session = ci ? (gnutls_session_t)ci->tls_session : NULL;
    unsigned n = 0;
    const gnutls_datum_t *der = session ? gnutls_certificate_get_peers(session, &n) : NULL;
    if (!der || n == 0) {
        snprintf(why, cap, "this server requires a client certificate (mTLS)");
        return 0;
    }
    pthread_mutex_lock(&t->mu);
    int ok = verify_chain(t->cur->trust, der, n, why, cap);
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void cv_http_tls_free(cv_http_tls *t) {
    if (!t) return;
    cv_http_tls *self = t;
    atomic_compare_exchange_strong(&active, &self, NULL);
    creds_free(t->cur);
    cv_tls_files_free(t->files);
    free(t->first_ca);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
