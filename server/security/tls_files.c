#include "tls_files.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEM_MAX (1 << 20)

enum { CERT, KEY, CA };
static const char *const roles[] = {"cert", "key", "ca"};

typedef struct tls_file {
    char *path;
    char *pem;  /* NUL-terminated */
    size_t len;
    struct stat st;
    unsigned char sha[32];
} tls_file;

struct cv_tls_files {
    tls_file f[3];
    int n;  /* 2, or 3 with a CA */
    int64_t not_after;
    double last_check;
};

static void file_clear(tls_file *f) {
    if (f->pem) OPENSSL_clear_free(f->pem, f->len + 1);
    free(f->path);
    memset(f, 0, sizeof *f);
}

void cv_tls_files_free(cv_tls_files *t) {
    if (!t) return;
    for (int i = 0; i < 3; i++) file_clear(&t->f[i]);
    free(t);
}

static cv_status read_pem(tls_file *f, const char *path, int role, cv_error *err) {
    if (!(f->path = strdup(path))) return cv_errorf(err, CV_ENOMEM, "tls: out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cv_errorf(err, CV_EIO, "tls %s %s: %s", roles[role], path, strerror(errno));
    cv_status st = CV_OK;
    /* The stat that goes with the bytes is the one of the descriptor they came from. */
    if (fstat(fd, &f->st) != 0) {
        st = cv_errorf(err, CV_EIO, "tls %s %s: %s", roles[role], path, strerror(errno));
    } else if (f->st.st_size > PEM_MAX) {
        st = cv_errorf(err, CV_ERANGE, "tls %s %s: %lld bytes, the limit is %d", roles[role], path,
                       (long long)f->st.st_size, PEM_MAX);
    } else if (!(f->pem = OPENSSL_malloc((size_t)f->st.st_size + 1))) {
        st = cv_errorf(err, CV_ENOMEM, "tls: out of memory");
    } else {
        ssize_t n = 0;
        size_t want = (size_t)f->st.st_size;
        while (f->len < want && (n = read(fd, f->pem + f->len, want - f->len)) > 0) f->len += (size_t)n;
        f->pem[f->len] = 0;
        if (n < 0) st = cv_errorf(err, CV_EIO, "tls %s %s: %s", roles[role], path, strerror(errno));
        else SHA256((const unsigned char *)f->pem, f->len, f->sha);
    }
    close(fd);
    return st;
}

static int no_password(char *buf, int size, int rw, void *u) {
    (void)buf; (void)size; (void)rw; (void)u;
    return -1; /* never prompt on a terminal: encrypted keys are refused */
}

static X509 *first_cert(const tls_file *f, int *count) {
    BIO *b = BIO_new_mem_buf(f->pem, (int)f->len);
    X509 *first = NULL, *x;
    *count = 0;
    while (b && (x = PEM_read_bio_X509(b, NULL, no_password, NULL))) {
        if (!first) first = x;
        else X509_free(x);
        (*count)++;
    }
    BIO_free(b);
    ERR_clear_error();
    return first;
}

static cv_status validate(cv_tls_files *t, cv_error *err) {
    int count = 0;
    X509 *leaf = first_cert(&t->f[CERT], &count);
    if (!leaf)
        return cv_errorf(err, CV_EFORMAT, "tls cert %s: no PEM certificate in it", t->f[CERT].path);
    BIO *b = BIO_new_mem_buf(t->f[KEY].pem, (int)t->f[KEY].len);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, no_password, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    cv_status st = CV_OK;
    if (!key) {
        st = cv_errorf(err, CV_EFORMAT, "tls key %s: not an unencrypted PEM private key",
                       t->f[KEY].path);
    } else if (X509_check_private_key(leaf, key) != 1) {
        st = cv_errorf(err, CV_EINVAL, "tls key %s does not belong to the certificate in %s",
                       t->f[KEY].path, t->f[CERT].path);
    } else {
        struct tm tm;
        t->not_after = ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1 ? (int64_t)timegm(&tm) : 0;
    }
    ERR_clear_error();
    EVP_PKEY_free(key);
    X509_free(leaf);
    if (st == CV_OK && t->n == 3) {
        X509 *ca = first_cert(&t->f[CA], &count);
        if (!ca) st = cv_errorf(err, CV_EFORMAT, "tls ca %s: no PEM certificate in it", t->f[CA].path);
        X509_free(ca);
    }
    return st;
}

cv_status cv_tls_files_load(const cv_tls_paths *paths, cv_tls_files **out, cv_error *err) {
    if (!paths->cert || !paths->key)
        return cv_errorf(err, CV_EINVAL, "tls: a certificate and a key file are both needed");
    cv_tls_files *t = calloc(1, sizeof *t);
    if (!t) return cv_errorf(err, CV_ENOMEM, "tls: out of memory");
    const char *p[3] = {paths->cert, paths->key, paths->ca};
    t->n = paths->ca ? 3 : 2;
    cv_status st = CV_OK;
    for (int i = 0; i < t->n && st == CV_OK; i++) st = read_pem(&t->f[i], p[i], i, err);
    if (st == CV_OK) st = validate(t, err);
    if (st != CV_OK) {
        cv_tls_files_free(t);
        return st;
    }
    *out = t;
    return CV_OK;
}

static int moved(const tls_file *f) {
    struct stat s;
    if (stat(f->path, &s) != 0) return 1;
    return s.st_ino != f->st.st_ino || s.st_dev != f->st.st_dev || s.st_size != f->st.st_size ||
           s.st_mtim.tv_sec != f->st.st_mtim.tv_sec || s.st_mtim.tv_nsec != f->st.st_mtim.tv_nsec;
}

cv_status cv_tls_files_check(cv_tls_files *t, double now_s, double min_interval_s,
                             cv_tls_files **fresh, cv_error *err) {
    *fresh = NULL;
    if (now_s > 0 && t->last_check > 0 && now_s - t->last_check < min_interval_s) return CV_OK;
    t->last_check = now_s;
    int any = 0;
    for (int i = 0; i < t->n; i++) any |= moved(&t->f[i]);
    if (!any) return CV_OK;
    cv_tls_paths p = {t->f[CERT].path, t->f[KEY].path, t->n == 3 ? t->f[CA].path : NULL};
    cv_tls_files *n = NULL;
    cv_status st = cv_tls_files_load(&p, &n, err);
    if (st != CV_OK) return st;
    int same = 1;
    for (int i = 0; i < t->n; i++) same &= memcmp(t->f[i].sha, n->f[i].sha, 32) == 0;
    if (same) { /* touched, not changed: remember the new stat so it is not read again */
        for (int i = 0; i < t->n; i++) t->f[i].st = n->f[i].st;
        cv_tls_files_free(n);
        return CV_OK;
    }
    n->last_check = now_s;
    *fresh = n;
    return CV_OK;
}

const char *cv_tls_files_cert_pem(const cv_tls_files *t) { return t->f[CERT].pem; }
const char *cv_tls_files_key_pem(const cv_tls_files *t) { return t->f[KEY].pem; }
const char *cv_tls_files_ca_pem(const cv_tls_files *t) { return t->n == 3 ? t->f[CA].pem : NULL; }
int64_t cv_tls_files_not_after(const cv_tls_files *t) { return t->not_after; }
