/* tls_files against fresh material from tests/data/auth/gen.sh (run from the repo root,
 * as `make test` does; needs the openssl command). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tls_files.h"
#include "../support/test_tmpdir.h"

static char dir[200];

static const char *at(const char *name) {
    static char buf[4][320];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void copy_file(const char *from, const char *to) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", at(from), at(to));
    assert_int_equal(system(cmd), 0);
}

/* Replaces `to` with a copy of `from` the way secret mounts do: a new file renamed over. */
static void replace_file(const char *from, const char *to) {
    copy_file(from, "tmp.swap");
    assert_int_equal(rename(at("tmp.swap"), at(to)), 0);
}

static cv_tls_files *load(const char *cert, const char *key, const char *ca) {
    cv_tls_paths p = {at(cert), at(key), ca ? at(ca) : NULL};
    cv_tls_files *t = NULL;
    cv_error e = {0};
    if (cv_tls_files_load(&p, &t, &e) != CV_OK) fail_msg("%s", e.msg);
    return t;
}

static void expect_load_error(const char *cert, const char *key, const char *ca, cv_status code,
                              const char *want) {
    cv_tls_paths p = {at(cert), at(key), ca ? at(ca) : NULL};
    cv_tls_files *t = NULL;
    cv_error e = {0};
    cv_status st = cv_tls_files_load(&p, &t, &e);
    if (st != code || !strstr(e.msg, want))
        fail_msg("%s + %s: got %s '%s', want '%s'", cert, key, cv_status_name(st), e.msg, want);
    assert_null(t);
}

static void test_load_valid_sets(void **state) {
    (void)state;
    cv_tls_files *t = load("server.pem", "server.key", "ca.pem");
    assert_true(strncmp(cv_tls_files_cert_pem(t), "-----BEGIN CERTIFICATE-----", 27) == 0);
    assert_non_null(strstr(cv_tls_files_key_pem(t), "PRIVATE KEY-----"));
    assert_non_null(cv_tls_files_ca_pem(t));
    /* gen.sh makes 30-day certificates. */
    int64_t left = cv_tls_files_not_after(t) - (int64_t)time(NULL);
    assert_true(left > 29 * 86400 && left <= 30 * 86400 + 60);
    cv_tls_files_free(t);
    t = load("client.pem", "client.key", NULL);
    assert_null(cv_tls_files_ca_pem(t));
    cv_tls_files_free(t);
}

static void test_bad_sets(void **state) {
    (void)state;
    expect_load_error("server.pem", "client.key", "ca.pem", CV_EINVAL, "does not belong to the certificate");
    expect_load_error("server.pem", "nope.key", NULL, CV_EIO, "nope.key: No such file");
    expect_load_error("server.key", "server.key", NULL, CV_EFORMAT, "no PEM certificate in it");
    expect_load_error("server.pem", "server.pem", NULL, CV_EFORMAT, "not an unencrypted PEM private key");
    expect_load_error("server.pem", "server.key", "server.key", CV_EFORMAT, "tls ca");
    /* An encrypted key is refused, never prompted for. */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "openssl pkey -in '%s' -aes256 -passout pass:x -out '%s'",
             at("server.key"), at("enc.key"));
    assert_int_equal(system(cmd), 0);
    expect_load_error("server.pem", "enc.key", NULL, CV_EFORMAT, "not an unencrypted PEM private key");
    cv_tls_paths none = {NULL, NULL, NULL};
    cv_tls_files *t = NULL;
    cv_error e = {0};
    assert_int_equal(cv_tls_files_load(&none, &t, &e), CV_EINVAL);
}

static void test_reload_on_change(void **state) {
    (void)state;
    copy_file("server.pem", "live.pem");
    copy_file("server.key", "live.key");
    copy_file("ca.pem", "live-ca.pem");
    cv_tls_files *t = load("live.pem", "live.key", "live-ca.pem"), *fresh = (cv_tls_files *)1;
    cv_error e = {0};
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_OK);
    assert_null(fresh);

    /* Touched, same bytes: no reload. */
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    assert_int_equal(utimensat(AT_FDCWD, at("live.pem"), ts, 0), 0);
    replace_file("server.key", "live.key");
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_OK);
    assert_null(fresh);

    /* Half a rotation (new cert, old key) is an error: keep serving the old set. */
    replace_file("client.pem", "live.pem");
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_EINVAL);
    assert_null(fresh);
    assert_non_null(strstr(e.msg, "does not belong"));
    replace_file("client.key", "live.key");
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_OK);
    assert_non_null(fresh);
    assert_string_not_equal(cv_tls_files_cert_pem(fresh), cv_tls_files_cert_pem(t));
    cv_tls_files_free(t);
    t = fresh;

    /* A new CA alone is a change too. */
    replace_file("other-ca.pem", "live-ca.pem");
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_OK);
    assert_non_null(fresh);
    cv_tls_files_free(t);
    t = fresh;

    /* Throttled: within min_interval the files are not even looked at. */
    assert_int_equal(cv_tls_files_check(t, 100, 10, &fresh, &e), CV_OK);
    replace_file("server.pem", "live.pem");
    replace_file("server.key", "live.key");
    assert_int_equal(cv_tls_files_check(t, 105, 10, &fresh, &e), CV_OK);
    assert_null(fresh);
    assert_int_equal(cv_tls_files_check(t, 111, 10, &fresh, &e), CV_OK);
    assert_non_null(fresh);
    cv_tls_files_free(t);
    t = fresh;

    /* A deleted file is an error, not a crash. */
    assert_int_equal(unlink(at("live.key")), 0);
    assert_int_equal(cv_tls_files_check(t, 0, 0, &fresh, &e), CV_EIO);
    cv_tls_files_free(t);
}

static int teardown_dir(void **state) {
    (void)state;
    return cv_test_rmtree(dir);
}

int main(void) {
    if (cv_test_tmpdir(dir, sizeof dir, "tls") != 0) return 1;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "sh tests/data/auth/gen.sh '%s' 30 >/dev/null", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls_files: %s failed (run from the repo root; needs openssl)\n", cmd);
        cv_test_rmtree(dir);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_valid_sets),
        cmocka_unit_test(test_bad_sets),
        cmocka_unit_test(test_reload_on_change),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_dir);
}
