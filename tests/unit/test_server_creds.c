#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server_creds.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"

static cv_test_rng rng;
static char dir[256];

static const char *CERT = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
static const char *KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQ==\n-----END EC PRIVATE KEY-----\n";
static const char *CERT2 = "-----BEGIN CERTIFICATE-----\nMIICAA==\n-----END CERTIFICATE-----\n";

static const char *write_file(const char *name, const char *text) {
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A token of random printable characters (no spaces), as a JWT would be. */
static void random_token(char *buf, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for (size_t i = 0; i + 1 < n; i++) buf[i] = alphabet[cv_test_rng_next(&rng) % (sizeof alphabet - 1)];
    buf[n - 1] = 0;
}

/* A new version of dir/name the way an operator's script does it: write aside, rename. */
static void rotate(const char *name, const char *text) {
    char tmp[600], final[600];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    FILE *f = fopen(tmp, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, final), 0);
}

/* A Kubernetes Secret volume: sec/token -> ..data/token, ..data -> ..<version>; a new
 * version is a new directory and an atomic rename of a new ..data link over the old. */
static void secret_version(const char *version, const char *token) {
    char path[600], target[300];
    snprintf(path, sizeof path, "%s/sec/..%s", dir, version);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/sec/..%s/token", dir, version);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(token, f);
    fclose(f);
    snprintf(target, sizeof target, "..%s", version);
    snprintf(path, sizeof path, "%s/sec/..data_tmp", dir);
    assert_int_equal(symlink(target, path), 0);
    char data[600];
    snprintf(data, sizeof data, "%s/sec/..data", dir);
    assert_int_equal(rename(path, data), 0);
}

/* A store over NAME-ca.pem (CERT) and NAME-token (token_text), both written fresh. */
static cv_server_creds_store *open_store(const char *name, const char *token_text, cv_cp_config *cfg) {
    char ca[64], tok[64];
    snprintf(ca, sizeof ca, "%s-ca.pem", name);
    snprintf(tok, sizeof tok, "%s-token", name);
    rotate(ca, CERT);
    rotate(tok, token_text);
    cv_cp_config_defaults(cfg);
    snprintf(cfg->tls_ca, sizeof cfg->tls_ca, "%s/%s", dir, ca);
    snprintf(cfg->token_file, sizeof cfg->token_file, "%s/%s", dir, tok);
    cv_server_creds_store *s;
    cv_error err;
    assert_int_equal(cv_server_creds_store_open(cfg, &s, &err), CV_OK);
    return s;
}

static char moved[128]; /* the config keys the last look() found moved */
static cv_error look_err; /* why the last look() refused */

static cv_server_creds_change look(cv_server_creds_store *s, int64_t now_ms, int64_t interval_ms) {
    return cv_server_creds_store_refresh(s, now_ms, interval_ms, moved, sizeof moved, &look_err);
}

static void expect_token(cv_server_creds_store *s, const char *token) {
    const cv_server_creds *c = cv_server_creds_store_get(s);
    assert_string_equal(c->token, token);
    cv_server_creds_release(c);
}

static void test_tls_and_token_file(void **state) {
    (void)state;
    char token[40 + 1], with_nl[64];
    random_token(token, sizeof token);
    snprintf(with_nl, sizeof with_nl, "%s\r\n", token); /* Secrets often end in a newline */
    cv_cp_config cfg;
    cv_cp_config_defaults(&cfg);
    snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s", write_file("ca.pem", CERT));
    snprintf(cfg.tls_cert, sizeof cfg.tls_cert, "%s", write_file("c.pem", CERT));
    snprintf(cfg.tls_key, sizeof cfg.tls_key, "%s", write_file("c.key", KEY));
    snprintf(cfg.tls_server_name, sizeof cfg.tls_server_name, "corvid.ai.svc");
    snprintf(cfg.token_file, sizeof cfg.token_file, "%s", write_file("token", with_nl));
    cv_server_creds c;
    cv_error err;
    assert_int_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
    assert_string_equal(c.ca_pem, CERT);
    assert_string_equal(c.key_pem, KEY);
    assert_string_equal(c.token, token);
    corvid_client_options opt = {.addr = "10.0.0.1:50051"};
    cv_server_creds_apply(&c, &opt);
    assert_ptr_equal(opt.root_certs_pem, c.ca_pem);
    assert_ptr_equal(opt.client_cert_pem, c.cert_pem);
    assert_ptr_equal(opt.client_key_pem, c.key_pem);
    assert_string_equal(opt.tls_server_name, "corvid.ai.svc");
    assert_string_equal(opt.bearer_token, token);
    cv_server_creds_free(&c);
    assert_null(c.token);
}

static void test_token_env_and_plaintext(void **state) {
    (void)state;
    char token[24];
    random_token(token, sizeof token);
    setenv("CORVID_TEST_CP_TOKEN", token, 1);
    cv_cp_config cfg;
    cv_cp_config_defaults(&cfg);
    snprintf(cfg.token_env, sizeof cfg.token_env, "CORVID_TEST_CP_TOKEN");
    cv_server_creds c;
    cv_error err;
    assert_int_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
    assert_null(c.ca_pem);
    assert_string_equal(c.token, token);
    cv_server_creds_free(&c);
    /* A store has no file to watch: the environment is read once. */
    cv_server_creds_store *s;
    assert_int_equal(cv_server_creds_store_open(&cfg, &s, &err), CV_OK);
    setenv("CORVID_TEST_CP_TOKEN", "changed", 1);
    assert_int_equal(look(s, 5000, 1000), CV_CREDS_UNCHANGED);
    expect_token(s, token);
    cv_server_creds_store_close(s);
    unsetenv("CORVID_TEST_CP_TOKEN");
    assert_int_not_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
    assert_non_null(strstr(err.msg, "$CORVID_TEST_CP_TOKEN is not set"));
    /* Nothing configured: a plaintext client without a token. */
    cv_cp_config_defaults(&cfg);
    assert_int_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
    assert_null(c.ca_pem);
    assert_null(c.token);
    cv_server_creds_free(&c);
}

static void test_refusals_name_the_file_not_the_token(void **state) {
    (void)state;
    char token[32], spaced[80];
    random_token(token, sizeof token);
    snprintf(spaced, sizeof spaced, "%s %s\n", token, token);
    struct {
        const char *ca, *key, *token, *needle;
    } bad[] = {
        {KEY, NULL, NULL, "no PEM CERTIFICATE block"},
        {CERT, CERT, NULL, "no PEM PRIVATE KEY block"},
        {"", NULL, NULL, "no PEM CERTIFICATE block"},
        {NULL, NULL, "\n", "is empty"},
        {NULL, NULL, spaced, "is not a printable character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cv_cp_config cfg;
        cv_cp_config_defaults(&cfg);
        if (bad[i].ca) snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s", write_file("ca-bad.pem", bad[i].ca));
        if (bad[i].key) {
            snprintf(cfg.tls_cert, sizeof cfg.tls_cert, "%s", write_file("c-ok.pem", CERT));
            snprintf(cfg.tls_key, sizeof cfg.tls_key, "%s", write_file("k-bad.pem", bad[i].key));
        }
        if (bad[i].token)
            snprintf(cfg.token_file, sizeof cfg.token_file, "%s", write_file("tok-bad", bad[i].token));
        cv_server_creds c;
        cv_error err;
        assert_int_not_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
        if (!strstr(err.msg, bad[i].needle)) fail_msg("case %zu: got \"%s\"", i, err.msg);
        assert_null(strstr(err.msg, token));
        assert_null(c.ca_pem);
        assert_null(c.token);
    }
    cv_cp_config cfg;
    cv_cp_config_defaults(&cfg);
    snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s/missing.pem", dir);
    cv_server_creds c;
    cv_error err;
    assert_int_not_equal(cv_server_creds_load(&cfg, &c, &err), CV_OK);
    assert_non_null(strstr(err.msg, "server_tls.ca"));
    assert_non_null(strstr(err.msg, "missing.pem"));
}

static void test_store_follows_rename_and_symlink_swap(void **state) {
    (void)state;
    char t1[33], t2[33], link[300];
    random_token(t1, sizeof t1);
    random_token(t2, sizeof t2);
    snprintf(link, sizeof link, "%s/sec", dir);
    assert_int_equal(mkdir(link, 0700), 0);
    secret_version("v1", t1);
    snprintf(link, sizeof link, "%s/sec/token", dir);
    assert_int_equal(symlink("..data/token", link), 0);
    cv_cp_config cfg;
    cv_cp_config_defaults(&cfg);
    rotate("swap-ca.pem", CERT);
    snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s/swap-ca.pem", dir);
    snprintf(cfg.token_file, sizeof cfg.token_file, "%s", link);
    cv_server_creds_store *s;
    cv_error err;
    assert_int_equal(cv_server_creds_store_open(&cfg, &s, &err), CV_OK);
    const cv_server_creds *first = cv_server_creds_store_get(s);
    assert_string_equal(first->token, t1);
    assert_int_equal(look(s, 0, 1000), CV_CREDS_UNCHANGED);

    secret_version("v2", t2);
    /* Not due yet: the last look was at 0. */
    assert_int_equal(look(s, 999, 1000), CV_CREDS_UNCHANGED);
    assert_int_equal(look(s, 1000, 1000), CV_CREDS_RELOADED);
    assert_string_equal(moved, "server_token_file");
    expect_token(s, t2);
    assert_string_equal(first->token, t1); /* a held snapshot stays as it was */
    assert_string_equal(first->ca_pem, CERT);
    cv_server_creds_release(first);

    rotate("swap-ca.pem", CERT2);
    assert_int_equal(look(s, 2000, 1000), CV_CREDS_RELOADED);
    assert_string_equal(moved, "server_tls.ca");
    const cv_server_creds *c = cv_server_creds_store_get(s);
    assert_string_equal(c->ca_pem, CERT2);
    assert_ptr_equal(cv_server_creds_store_get(s), c); /* the same set until a reload */
    cv_server_creds_release(c);
    cv_server_creds_release(c);
    assert_int_equal(look(s, 3000, 1000), CV_CREDS_UNCHANGED);
    cv_server_creds_stats st;
    cv_server_creds_store_stats(s, &st);
    assert_int_equal(st.reloads, 2);
    assert_int_equal(st.errors, 0);
    assert_true(st.last_ok);
    assert_true(st.loaded_unix_ms > 1700000000000LL);
    cv_server_creds_store_close(s);
}

static void test_store_keeps_the_last_good_set(void **state) {
    (void)state;
    char good[40], good_nl[48], next[40], spaced[90];
    random_token(good, sizeof good);
    random_token(next, sizeof next);
    snprintf(good_nl, sizeof good_nl, "%s\n", good);
    snprintf(spaced, sizeof spaced, "%s %s", next, next);
    cv_cp_config cfg;
    cv_server_creds_store *s = open_store("keep", good_nl, &cfg);
    struct {
        const char *file, *text, *needle;
    } bad[] = {
        {"keep-token", "\n", "is empty"},
        {"keep-token", spaced, "is not a printable character"},
        {"keep-token", NULL, "No such file"}, /* removed */
        {"keep-ca.pem", KEY, "no PEM CERTIFICATE block"},
    };
    int64_t now = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, bad[i].file);
        if (bad[i].text) rotate(bad[i].file, bad[i].text);
        else assert_int_equal(unlink(path), 0);
        now += 1000;
        assert_int_equal(look(s, now, 1000), CV_CREDS_REFUSED);
        if (!strstr(look_err.msg, bad[i].needle) || !strstr(look_err.msg, path))
            fail_msg("case %zu: got \"%s\"", i, look_err.msg);
        assert_null(strstr(look_err.msg, next));
        /* The same bad version is refused once, not at every look. */
        now += 1000;
        assert_int_equal(look(s, now, 1000), CV_CREDS_UNCHANGED);
        expect_token(s, good);
        cv_server_creds_stats st;
        cv_server_creds_store_stats(s, &st);
        assert_int_equal(st.errors, i + 1);
        assert_int_equal(st.reloads, 0);
        assert_false(st.last_ok);
    }
    rotate("keep-ca.pem", CERT2);
    now += 1000;
    assert_int_equal(look(s, now, 1000), CV_CREDS_REFUSED);
    assert_non_null(strstr(look_err.msg, "keep-token")); /* the CA is fine now, the token still gone */
    rotate("keep-token", next);
    now += 1000;
    assert_int_equal(look(s, now, 1000), CV_CREDS_RELOADED);
    assert_string_equal(moved, "server_token_file");
    expect_token(s, next);
    cv_server_creds_stats st;
    cv_server_creds_store_stats(s, &st);
    assert_int_equal(st.errors, 5);
    assert_int_equal(st.reloads, 1);
    assert_true(st.last_ok);
    cv_server_creds_store_close(s);
}

#define READERS 4
#define ROTATIONS 200

typedef struct reader {
    cv_server_creds_store *store;
    atomic_int *done;
    long reads;
} reader;

/* Takes and checks snapshots while the main thread rotates: a snapshot read while it is
 * freed, or a half-made one, shows here (and under ASan / TSan). */
static void *read_loop(void *arg) {
    reader *r = arg;
    while (!atomic_load(r->done)) {
        const cv_server_creds *c = cv_server_creds_store_get(r->store);
        if (!c->token || strlen(c->token) != 32 || strcmp(c->ca_pem, CERT) != 0) abort();
        cv_server_creds_release(c);
        r->reads++;
    }
    return NULL;
}

static void test_store_snapshots_across_threads(void **state) {
    (void)state;
    char token[33];
    random_token(token, sizeof token);
    cv_cp_config cfg;
    cv_server_creds_store *s = open_store("mt", token, &cfg);
    atomic_int done = 0;
    reader readers[READERS];
    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++) {
        readers[i] = (reader){s, &done, 0};
        assert_int_equal(pthread_create(&th[i], NULL, read_loop, &readers[i]), 0);
    }
    int reloaded = 0;
    for (int k = 1; k <= ROTATIONS; k++) {
        random_token(token, sizeof token);
        rotate("mt-token", token);
        reloaded += look(s, k, 0) == CV_CREDS_RELOADED;
    }
    atomic_store(&done, 1);
    for (int i = 0; i < READERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(reloaded, ROTATIONS);
    expect_token(s, token);
    cv_server_creds_store_close(s);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_server_creds"));
    if (cv_test_tmpdir(dir, sizeof dir, "server-creds") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_and_token_file),
        cmocka_unit_test(test_token_env_and_plaintext),
        cmocka_unit_test(test_refusals_name_the_file_not_the_token),
        cmocka_unit_test(test_store_follows_rename_and_symlink_swap),
        cmocka_unit_test(test_store_keeps_the_last_good_set),
        cmocka_unit_test(test_store_snapshots_across_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cv_test_rmtree(dir);
    return rc;
}
