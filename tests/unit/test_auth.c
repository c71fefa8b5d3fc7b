#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "../support/jwt_sign.h"
#include "../support/test_rng.h"
#include "../support/test_tmpdir.h"

#define NOW 1800000000LL

static cv_test_rng rng;
static char dir[200], secret_path[320], rsa_path[320], audit_path[320];
static unsigned char secret[40];
static EVP_PKEY *rsa;
static char *rsa_pem;
static int64_t wall_now = NOW;
static uint64_t mono_now = 5000000000ULL;

static int64_t wall(void *ctx) { (void)ctx; return wall_now; }
static uint64_t mono(void *ctx) { (void)ctx; return mono_now; }
static const cv_auth_options opts = {wall, mono, NULL, NULL};

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static cv_auth *auth_from(const char *json_text) {
    json_error_t je;
    json_t *j = json_loads(json_text, 0, &je);
    if (!j) fail_msg("test config: %s", je.text);
    cv_auth *a = NULL;
    cv_error e = {0};
    if (cv_auth_new(j, &opts, &a, &e) != CV_OK) fail_msg("%s", e.msg);
    json_decref(j);
    return a;
}

static char *full_config(void) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"jwt\": {\"keys\": [{\"kid\": \"k1\", \"alg\": \"HS256\", \"secret_file\": \"%s\"},"
             "                     {\"kid\": \"idp\", \"alg\": \"RS256\", \"public_key_file\": \"%s\"}],"
             "          \"issuer\": \"https://idp.test\", \"audience\": [\"corvid\"], \"leeway_s\": 5},"
             " \"allowlist\": [\"10.0.0.0/8\", \"::1/128\"],"
             " \"rate_limit\": {\"per_second\": 1, \"burst\": 3},"
             " \"audit_log\": \"%s\"}",
             secret_path, rsa_path, audit_path);
    return buf;
}

/* "Bearer <token>" for sub with scope, signed by HS256 k1 (or RS256 idp). */
static char *bearer(const char *alg, const char *sub, const char *scope, int64_t exp) {
    char header[96], payload[512];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"kid\":\"%s\"}", alg, alg[0] == 'H' ? "k1" : "idp");
    snprintf(payload, sizeof payload,
             "{\"iss\":\"https://idp.test\",\"aud\":\"corvid\",\"sub\":\"%s\",\"exp\":%lld,\"scope\":\"%s\"}",
             sub, (long long)exp, scope);
    char *t = tjwt_make(alg, rsa, secret, sizeof secret, header, payload);
    char *b = malloc(strlen(t) + 8);
    sprintf(b, "Bearer %s", t);
    free(t);
    return b;
}

#define ADMIN "/corvid.v1.Admin/LoadModel"
#define GEN "/corvid.v1.Inference/Generate"
#define HEALTH "/grpc.health.v1.Health/Check"
#define OKPEER "ipv4:10.1.2.3:40000"

static void expect(cv_auth *a, const char *method, const char *authz, const char *peer,
                   cv_auth_verdict code, const char *want) {
    cv_auth_result r;
    cv_auth_verdict got = cv_auth_check(a, method, authz, peer, &r);
    if (got != code || r.verdict != code || (want && !strstr(r.message, want)))
        fail_msg("%s from %s: got %d '%s', want %d containing '%s'", method, peer, got, r.message,
                 code, want ? want : "");
    if (authz && strlen(authz) > 20) assert_null(strstr(r.message, authz + 7));
}

static void test_disabled_allows_everything(void **state) {
    (void)state;
    cv_auth *a = NULL;
    cv_error e = {0};
    assert_int_equal(cv_auth_new(NULL, NULL, &a, &e), CV_OK);
    assert_false(cv_auth_requires_token(a));
    assert_null(cv_auth_audit(a));
    expect(a, ADMIN, NULL, "ipv4:8.8.8.8:1", CV_AUTH_ALLOW, NULL);
    expect(a, GEN, "garbage", "unix:/x", CV_AUTH_ALLOW, NULL);
    cv_auth_free(a);
    a = auth_from("{}");
    expect(a, ADMIN, NULL, "ipv4:8.8.8.8:1", CV_AUTH_ALLOW, NULL);
    cv_auth_free(a);
}

static void test_full_policy(void **state) {
    (void)state;
    unlink(audit_path);
    cv_auth *a = auth_from(full_config());
    assert_true(cv_auth_requires_token(a));
    assert_non_null(cv_auth_audit(a));
    char *adm = bearer("HS256", "ops", "admin", NOW + 300);
    char *inf = bearer("RS256", "app", "inference", NOW + 300);
    char *old = bearer("HS256", "ops", "admin", NOW - 10);

    /* Probes need nothing, from anywhere. */
    expect(a, HEALTH, NULL, "ipv4:8.8.8.8:1", CV_AUTH_ALLOW, NULL);
    /* Allowlist first. */
    expect(a, ADMIN, adm, "ipv4:8.8.8.8:1", CV_AUTH_DENIED,
           "client address 8.8.8.8 is not in the allowlist");
    expect(a, ADMIN, adm, "ipv6:%5B::2%5D:1", CV_AUTH_DENIED, "client address ::2 is not");
    expect(a, ADMIN, adm, "unix:/tmp/s", CV_AUTH_DENIED, "the allowlist admits IP clients only");
    /* Then the token. */
    expect(a, ADMIN, NULL, OKPEER, CV_AUTH_UNAUTHENTICATED, "missing authorization metadata");
    expect(a, ADMIN, "Basic b3BzOnB3", OKPEER, CV_AUTH_UNAUTHENTICATED,
           "authorization scheme 'Basic' is not supported: use Bearer");
    expect(a, ADMIN, "Bearer", OKPEER, CV_AUTH_UNAUTHENTICATED, "the Bearer token is missing");
    expect(a, ADMIN, "  bearer \t ", OKPEER, CV_AUTH_UNAUTHENTICATED, "the Bearer token is missing");
    expect(a, ADMIN, "Bearerx", OKPEER, CV_AUTH_UNAUTHENTICATED, "scheme 'Bearerx' is not supported");
    expect(a, ADMIN, old, OKPEER, CV_AUTH_UNAUTHENTICATED, "invalid token: token expired at");
    expect(a, ADMIN, "Bearer a.b", OKPEER, CV_AUTH_UNAUTHENTICATED, "invalid token: token has 2 parts");
    /* Then the scope. */
    expect(a, ADMIN, inf, "ipv6:%5B::1%5D:9", CV_AUTH_DENIED,
           "/corvid.v1.Admin/LoadModel needs scope admin; the token of 'app' has inference");
    expect(a, "/corvid.v1.Secret/Do", inf, OKPEER, CV_AUTH_DENIED, "needs scope admin");
    expect(a, GEN, adm, OKPEER, CV_AUTH_DENIED, "needs scope inference; the token of 'ops' has admin");

    cv_auth_result r;
    assert_int_equal(cv_auth_check(a, GEN, inf, OKPEER, &r), CV_AUTH_ALLOW);
    assert_string_equal(r.subject, "app");
    assert_int_equal(r.scopes, CV_SCOPE_INFERENCE);
    /* Scheme case and surrounding blanks do not matter. */
    char *loose = malloc(strlen(adm) + 8);
    sprintf(loose, " bEaReR \t%s \r\n", adm + 7);
    assert_int_equal(cv_auth_check(a, ADMIN, loose, "ipv6:[::ffff:10.9.9.9]:1", &r), CV_AUTH_ALLOW);
    assert_string_equal(r.subject, "ops");
    free(loose);

    /* The classic confusion: HS256 signed with the RS256 key's PEM, naming the RSA kid. */
    char payload[256];
    snprintf(payload, sizeof payload, "{\"iss\":\"https://idp.test\",\"aud\":\"corvid\",\"sub\":\"x\",\"exp\":%lld,\"scope\":\"admin\"}", NOW + 60);
    char *forged = tjwt_make("HS256", NULL, (unsigned char *)rsa_pem, strlen(rsa_pem),
                             "{\"alg\":\"HS256\",\"kid\":\"idp\"}", payload);
    char *fb = malloc(strlen(forged) + 8);
    sprintf(fb, "Bearer %s", forged);
    expect(a, ADMIN, fb, OKPEER, CV_AUTH_UNAUTHENTICATED, "alg HS256 does not match key 'idp' alg RS256");

    cv_auth_free(a);

    /* The audit log, written when the tally is freed: one line per client address,
     * reason and verified subject with the count, none with the token. */
    FILE *f = fopen(audit_path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0, perm = 0, unauth = 0, total = 0;
    struct { const char *peer, *reason, *subject, *detail; int count; } want[] = {
        {"8.8.8.8", "not_in_allowlist", NULL, "client address 8.8.8.8 is not in the allowlist", 1},
        {"::2", "not_in_allowlist", NULL, "client address ::2 is not", 1},
        {"unix:/tmp/s", "not_ip_client", NULL, "the allowlist admits IP clients only", 1},
        {"10.1.2.3", "no_token", NULL, "missing authorization metadata", 3},
        {"10.1.2.3", "bad_scheme", NULL, "scheme 'Basic' is not supported", 2},
        {"10.1.2.3", "invalid_token", NULL, "invalid token: token expired at", 3},
        {"::1", "missing_scope", "app", "needs scope admin", 1},
        {"10.1.2.3", "missing_scope", "app", "/corvid.v1.Secret/Do needs scope admin", 1},
        {"10.1.2.3", "missing_scope", "ops", "needs scope inference", 1},
    };
    while (fgets(line, sizeof line, f)) {
        const char *toks[] = {adm + 7, inf + 7, old + 7, forged};
        for (int i = 0; i < 4; i++) {
            const char *sig = strrchr(toks[i], '.') + 1;
            assert_null(strstr(line, sig));
        }
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "event")), "auth_failure");
        const char *outcome = json_string_value(json_object_get(j, "outcome"));
        int count = (int)json_integer_value(json_object_get(j, "count"));
        perm += strcmp(outcome, "PERMISSION_DENIED") == 0 ? count : 0;
        unauth += strcmp(outcome, "UNAUTHENTICATED") == 0 ? count : 0;
        total += count;
        assert_non_null(json_object_get(j, "method"));
        assert_true(strcmp(json_string_value(json_object_get(j, "first")),
                           json_string_value(json_object_get(j, "last"))) <= 0);
        /* Lines come in the order the keys were first seen. */
        assert_true(n < (int)(sizeof want / sizeof want[0]));
        const char *subject = json_string_value(json_object_get(j, "subject"));
        assert_string_equal(json_string_value(json_object_get(j, "peer")), want[n].peer);
        assert_string_equal(json_string_value(json_object_get(j, "reason")), want[n].reason);
        assert_non_null(strstr(json_string_value(json_object_get(j, "detail")), want[n].detail));
        assert_int_equal(count, want[n].count);
        if (want[n].subject) assert_string_equal(subject, want[n].subject);
        else assert_null(subject);
        json_decref(j);
        n++;
    }
    fclose(f);
    assert_int_equal(n, 9);
    assert_int_equal(perm, 6);
    assert_int_equal(unauth, 8);
    assert_int_equal(total, 14);
    free(adm);
    free(inf);
    free(old);
    free(forged);
    free(fb);
}

static void test_rate_limit_per_subject_and_ip(void **state) {
    (void)state;
    cv_auth *a = auth_from(full_config());
    char *alice = bearer("HS256", "alice", "inference", NOW + 300);
    char *bob = bearer("HS256", "bob", "inference", NOW + 300);
    for (int i = 0; i < 3; i++) expect(a, GEN, alice, OKPEER, CV_AUTH_ALLOW, NULL);
    expect(a, GEN, alice, "ipv4:10.7.7.7:1", CV_AUTH_RATE_LIMITED,
           "rate limit of 1 requests/s (burst 3) reached for subject alice; retry in 1.00 s");
    expect(a, GEN, bob, OKPEER, CV_AUTH_ALLOW, NULL);
    mono_now += 400000000; /* 0.4 s */
    expect(a, GEN, alice, OKPEER, CV_AUTH_RATE_LIMITED, "retry in 0.60 s");
    mono_now += 600000000;
    expect(a, GEN, alice, OKPEER, CV_AUTH_ALLOW, NULL);
    free(alice);
    free(bob);
    cv_auth_free(a);

    /* Without JWT the client IP is the key: ports do not matter, addresses do. */
    a = auth_from("{\"rate_limit\": {\"per_second\": 0.5}}");
    expect(a, GEN, NULL, "ipv4:10.0.0.1:1000", CV_AUTH_ALLOW, NULL);
    expect(a, GEN, NULL, "ipv4:10.0.0.1:1001", CV_AUTH_RATE_LIMITED,
           "(burst 1) reached for client 10.0.0.1; retry in 2.00 s");
    expect(a, GEN, NULL, "ipv6:[::ffff:10.0.0.1]:7", CV_AUTH_RATE_LIMITED, "client 10.0.0.1");
    expect(a, GEN, NULL, "ipv4:10.0.0.2:1000", CV_AUTH_ALLOW, NULL);
    expect(a, HEALTH, NULL, "ipv4:10.0.0.2:1000", CV_AUTH_ALLOW, NULL);
    expect(a, HEALTH, NULL, "ipv4:10.0.0.2:1000", CV_AUTH_ALLOW, NULL);
    cv_auth_free(a);
}

static void test_secret_sources(void **state) {
    (void)state;
    /* A secret file written by `echo` ends in a newline that is not part of the key. */
    char with_nl[sizeof secret + 1];
    memcpy(with_nl, secret, sizeof secret);
    with_nl[sizeof secret] = '\n';
    char p2[320];
    snprintf(p2, sizeof p2, "%s/secret_nl", dir);
    write_file(p2, with_nl, sizeof with_nl);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"jwt\":{\"keys\":[{\"kid\":\"k1\",\"alg\":\"HS256\",\"secret_file\":\"%s\"}],"
             "\"issuer\":\"https://idp.test\",\"audience\":\"corvid\"}}", p2);
    cv_auth *a = auth_from(cfg);
    char *t = bearer("HS256", "s", "inference", NOW + 60);
    expect(a, GEN, t, OKPEER, CV_AUTH_ALLOW, NULL);
    cv_auth_free(a);

    /* The same secret from the environment (printable, so it fits a variable). */
    char envsecret[64];
    for (int i = 0; i < 40; i++) envsecret[i] = (char)('a' + cv_test_rng_next(&rng) % 26);
    envsecret[40] = 0;
    setenv("CORVID_TEST_JWT_SECRET", envsecret, 1);
    a = auth_from("{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_JWT_SECRET\"}]}}");
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sub\":\"e\",\"exp\":%lld,\"scp\":[\"admin\"]}", NOW + 60);
    char *tok = tjwt_make("HS256", NULL, (unsigned char *)envsecret, 40, "{\"alg\":\"HS256\"}", payload);
    char *b = malloc(strlen(tok) + 8);
    sprintf(b, "Bearer %s", tok);
    expect(a, ADMIN, b, "ipv4:1.2.3.4:5", CV_AUTH_ALLOW, NULL);
    /* Leeway defaults to 30 s. */
    wall_now = NOW + 60 + 29;
    expect(a, ADMIN, b, "ipv4:1.2.3.4:5", CV_AUTH_ALLOW, NULL);
    wall_now = NOW + 60 + 30;
    expect(a, ADMIN, b, "ipv4:1.2.3.4:5", CV_AUTH_UNAUTHENTICATED, "expired");
    wall_now = NOW;
    cv_auth_free(a);
    free(t);
    free(tok);
    free(b);

    /* From a file on disk. */
    char cpath[320];
    snprintf(cpath, sizeof cpath, "%s/auth.json", dir);
    write_file(cpath, full_config(), strlen(full_config()));
    cv_error e = {0};
    assert_int_equal(cv_auth_load_file(cpath, &opts, &a, &e), CV_OK);
    cv_auth_free(a);
    write_file(cpath, "{\"jwt\": 1,}", 11);
    assert_int_equal(cv_auth_load_file(cpath, &opts, &a, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "line 1 column"));
    /* The HS256 secret file named as the policy by mistake: not one of its bytes. */
    write_file(cpath, "s3cr3t-hmac-key-0123456789abcdef", 32);
    assert_int_equal(cv_auth_load_file(cpath, &opts, &a, &e), CV_EFORMAT);
    assert_null(strstr(e.msg, "s3cr"));
    assert_non_null(strstr(e.msg, "line 1 column 1"));
}

static void test_config_errors(void **state) {
    (void)state;
    char bad[4][1024];
    snprintf(bad[0], sizeof bad[0], "{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_file\":\"%s\",\"secret_env\":\"X\"}]}}", secret_path);
    snprintf(bad[1], sizeof bad[1], "{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"public_key_file\":\"%s\"}]}}", rsa_path);
    snprintf(bad[2], sizeof bad[2], "{\"jwt\":{\"keys\":[{\"alg\":\"RS256\",\"secret_file\":\"%s\"}]}}", secret_path);
    snprintf(bad[3], sizeof bad[3], "{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_file\":\"%s\"}]}}", rsa_path);
    struct { const char *cfg; const char *want; } cases[] = {
        {"[]", "auth: not an object"},
        {"{\"jwt\":{}, \"alowlist\":[]}", "auth: unknown key \"alowlist\""},
        {"{\"jwt\":{\"keys\":[]}}", "auth.jwt.keys: an array of at least one key"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"none\",\"secret_env\":\"HOME\"}]}}", "auth.jwt.keys[0].alg: must be"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\"}]}}", "auth.jwt.keys[0]: exactly one of"},
        {bad[0], "auth.jwt.keys[0]: exactly one of"},
        {bad[1], "auth.jwt.keys[0]: HS256 takes secret_file or secret_env"},
        {bad[2], "auth.jwt.keys[0]: RS256 takes public_key_file"},
        {bad[3], "auth.jwt.keys[0]: jwt key (no kid): the HS256 secret is a PEM file"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_UNSET_VAR\"}]}}",
         "auth.jwt.keys[0].secret_env: environment variable CORVID_TEST_UNSET_VAR is not set"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"ES256\",\"public_key_file\":\"/nonexistent/k.pem\"}]}}",
         "auth.jwt.keys[0]: /nonexistent/k.pem: No such file"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_SHORT\",\"colour\":1}]}}",
         "auth.jwt.keys[0]: unknown key \"colour\""},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_SHORT\"}]}}",
         "auth.jwt.keys[0]: jwt key (no kid): HS256 secret is 5 bytes, at least 32"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_JWT_SECRET\"}],\"leeway_s\":601}}",
         "auth.jwt.leeway_s: a whole number of seconds 0..600"},
        {"{\"jwt\":{\"keys\":[{\"alg\":\"HS256\",\"secret_env\":\"CORVID_TEST_JWT_SECRET\"}],\"audience\":[\"a\",2]}}",
         "auth.jwt.audience[1]: not a string"},
        {"{\"allowlist\":[\"10.0.0.0/8\",\"10.1.1.1/8\"]}", "auth.allowlist[1]: allowlist rule '10.1.1.1/8' has host bits set"},
        {"{\"allowlist\":\"10.0.0.0/8\"}", "auth.allowlist: not an array"},
        {"{\"rate_limit\":{\"per_second\":0}}", "auth.rate_limit: rate limit: per_second 0 must be"},
        {"{\"rate_limit\":{\"burst\":5}}", "auth.rate_limit.per_second: a number is needed"},
        {"{\"rate_limit\":{\"per_second\":5,\"max_subjects\":0}}", "auth.rate_limit.max_subjects"},
        {"{\"audit_log\":7}", "auth.audit_log: not a string"},
        {"{\"audit_log\":\"/nonexistent/dir/audit.log\"}", "audit log /nonexistent/dir/audit.log: No such file"},
        {"{\"audit_keep\":2}", "auth.audit_keep: set without audit_log"},
        {"{\"audit_log\":\"-\",\"audit_max_mb\":-1}", "auth.audit_max_mb: a number from 0 to 1048576"},
        {"{\"audit_log\":\"-\",\"audit_max_mb\":\"64\"}", "auth.audit_max_mb: a number from"},
        {"{\"audit_log\":\"-\",\"audit_keep\":1.5}", "auth.audit_keep: a whole number from 0 to 1000"},
        {"{\"audit_log\":\"-\",\"audit_keep\":1001}", "auth.audit_keep: a whole number from 0 to 1000"},
        {"{\"audit_log\":\"-\",\"audit_interval_s\":0}", "auth.audit_interval_s: a number from 0.1 to 3600"},
        {"{\"audit_log\":\"-\",\"audit_max_keys\":0}", "auth.audit_max_keys: a whole number from 1 to 1000000"},
        {"{\"audit_log\":\"-\",\"audit_max_kb\":1}", "auth: unknown key \"audit_max_kb\""},
    };
    setenv("CORVID_TEST_SHORT", "short", 1);
    setenv("CORVID_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    unsetenv("CORVID_TEST_UNSET_VAR");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = json_loads(cases[i].cfg, 0, NULL);
        assert_non_null(j);
        cv_auth *a = NULL;
        cv_error e = {0};
        if (cv_auth_new(j, &opts, &a, &e) == CV_OK || !strstr(e.msg, cases[i].want))
            fail_msg("config %s: got '%s', want '%s'", cases[i].cfg, e.msg, cases[i].want);
        assert_null(a);
        json_decref(j);
    }
}

static int teardown_dir(void **state) {
    (void)state;
    return cv_test_rmtree(dir);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_auth"));
    if (cv_test_tmpdir(dir, sizeof dir, "auth") != 0) return 1;
    for (size_t i = 0; i < sizeof secret; i++) secret[i] = (unsigned char)cv_test_rng_next(&rng);
    secret[sizeof secret - 1] = 'x'; /* not a newline: the file keeps every byte */
    rsa = tjwt_keygen_rsa(2048);
    rsa_pem = tjwt_public_pem(rsa);
    snprintf(secret_path, sizeof secret_path, "%s/hs.key", dir);
    snprintf(rsa_path, sizeof rsa_path, "%s/rsa.pem", dir);
    snprintf(audit_path, sizeof audit_path, "%s/audit.jsonl", dir);
    write_file(secret_path, secret, sizeof secret);
    write_file(rsa_path, rsa_pem, strlen(rsa_pem));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disabled_allows_everything),
        cmocka_unit_test(test_full_policy),
        cmocka_unit_test(test_rate_limit_per_subject_and_ip),
        cmocka_unit_test(test_secret_sources),
        cmocka_unit_test(test_config_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, teardown_dir);
    free(rsa_pem);
    EVP_PKEY_free(rsa);
    return rc;
}
