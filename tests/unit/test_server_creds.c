#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_creds.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"

static cv_test_rng rng;
static char dir[256];

static const char *CERT = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
static const char *KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQ==\n-----END EC PRIVATE KEY-----\n";

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

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_server_creds"));
    if (cv_test_tmpdir(dir, sizeof dir, "server-creds") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_and_token_file),
        cmocka_unit_test(test_token_env_and_plaintext),
        cmocka_unit_test(test_refusals_name_the_file_not_the_token),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cv_test_rmtree(dir);
    return rc;
}
