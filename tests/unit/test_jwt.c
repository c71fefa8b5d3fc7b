#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "../support/jwt_sign.h"
#include "../support/test_rng.h"

#define NOW 1800000000LL /* 2027-01-15T08:00:00Z */

static int64_t fake_now = NOW;
static int64_t clock_fn(void *ctx) {
    (void)ctx;
    return fake_now;
}

static cv_test_rng rng;
static unsigned char secret[48];
static EVP_PKEY *rsa, *ec;
static char *rsa_pem, *ec_pem;

static cv_jwt_verifier *verifier(const char *which) {
    cv_jwt_verifier *v = NULL;
    cv_error e = {0};
    assert_int_equal(cv_jwt_verifier_new(&v, &e), CV_OK);
    cv_jwt_set_clock(v, clock_fn, NULL);
    cv_jwt_set_leeway(v, 30);
    assert_int_equal(cv_jwt_set_issuer(v, "https://issuer.test", &e), CV_OK);
    assert_int_equal(cv_jwt_add_audience(v, "corvid", &e), CV_OK);
    if (strchr(which, 'H'))
        assert_int_equal(cv_jwt_add_hmac_key(v, NULL, secret, sizeof secret, &e), CV_OK);
    if (strchr(which, 'R'))
        assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_RS256, rsa_pem, strlen(rsa_pem), &e), CV_OK);
    if (strchr(which, 'E'))
        assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_ES256, ec_pem, strlen(ec_pem), &e), CV_OK);
    return v;
}

/* A payload with the standard claims; extra is spliced in (",\"k\":v" or ""). */
static char *payload(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"sub\":\"alice\","
             "\"exp\":%lld,\"nbf\":%lld,\"scope\":\"inference\"%s}",
             NOW + 600, NOW - 10, extra);
    return buf;
}

static char *sign(const char *alg, const char *pl) {
    char header[128];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    EVP_PKEY *k = alg[0] == 'R' ? rsa : alg[0] == 'E' ? ec : NULL;
    return tjwt_make(alg, k, secret, sizeof secret, header, pl);
}

/* Verification must fail with code and a message containing want, which must never
 * contain the token or any of its parts. */
static void expect_fail(const cv_jwt_verifier *v, const char *tok, cv_status code, const char *want) {
    cv_jwt_claims c;
    cv_error e = {0};
    cv_status st = cv_jwt_verify(v, tok, strlen(tok), &c, &e);
    if (st != code || !strstr(e.msg, want))
        fail_msg("got %s '%s', want %s containing '%s'", cv_status_name(st), e.msg,
                 cv_status_name(code), want);
    assert_string_equal(c.subject, "");
    const char *d1 = strchr(tok, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (*tok) assert_null(strstr(e.msg, tok));
    if (d1 && d2 && d2 > d1 + 8) {
        char part[2048];
        size_t n = (size_t)(d2 - d1 - 1) < sizeof part - 1 ? (size_t)(d2 - d1 - 1) : sizeof part - 1;
        memcpy(part, d1 + 1, n);
        part[n] = 0;
        assert_null(strstr(e.msg, part));
    }
    if (d2 && strlen(d2 + 1) > 8) assert_null(strstr(e.msg, d2 + 1));
}

static cv_jwt_claims expect_ok(const cv_jwt_verifier *v, const char *tok) {
    cv_jwt_claims c;
    cv_error e = {0};
    cv_status st = cv_jwt_verify(v, tok, strlen(tok), &c, &e);
    if (st != CV_OK) fail_msg("verify failed: %s", e.msg);
    return c;
}

static void test_valid_tokens_each_alg(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("HRE");
    const char *algs[] = {"HS256", "RS256", "ES256"};
    for (int i = 0; i < 3; i++) {
        char *t = sign(algs[i], payload(",\"scp\":[\"admin\",\"other\"]"));
        cv_jwt_claims c = expect_ok(v, t);
        assert_string_equal(c.subject, "alice");
        assert_int_equal(c.scopes, CV_SCOPE_INFERENCE | CV_SCOPE_ADMIN);
        assert_int_equal(c.exp, NOW + 600);
        free(t);
    }
    cv_jwt_verifier_free(v);
}

static void test_scope_forms(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("H");
    struct { const char *pl; unsigned want; } cases[] = {
        {"{\"sub\":\"s\",\"exp\":1900000000,\"iss\":\"https://issuer.test\",\"aud\":\"corvid\"}", 0},
        {"{\"sub\":\"s\",\"exp\":1900000000,\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"scope\":\"  admin   read \"}", CV_SCOPE_ADMIN},
        {"{\"sub\":\"s\",\"exp\":1900000000,\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"scopes\":[\"inference\"]}", CV_SCOPE_INFERENCE},
        {"{\"sub\":\"s\",\"exp\":1900000000,\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"scp\":\"inference admin\"}", CV_SCOPE_INFERENCE | CV_SCOPE_ADMIN},
        /* A prefix or a case variant of a scope is not the scope. */
        {"{\"sub\":\"s\",\"exp\":1900000000,\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"scope\":\"Admin admins inferenc\"}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = sign("HS256", cases[i].pl);
        assert_int_equal(expect_ok(v, t).scopes, cases[i].want);
        free(t);
    }
    char *t = sign("HS256", payload(",\"scopes\":\"x\",\"scp\":7"));
    expect_fail(v, t, CV_EAUTH, "claim scp is not a string or array");
    free(t);
    t = sign("HS256", payload(",\"scopes\":[\"admin\",3]"));
    expect_fail(v, t, CV_EAUTH, "claim scopes[1] is not a string");
    free(t);
    cv_jwt_verifier_free(v);
}

static void test_expiry_and_not_before(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("H");
    char buf[512];
    /* exp 10 s ago is inside the 30 s leeway; 31 s ago is not. */
    snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":%lld}", NOW - 10);
    char *t = sign("HS256", buf);
    expect_ok(v, t);
    free(t);
    snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":%lld}", NOW - 30);
    t = sign("HS256", buf);
    expect_fail(v, t, CV_EAUTH, "token expired at 2027-01-15T07:59:30Z (1799999970), now 2027-01-15T08:00:00Z (1800000000)");
    free(t);
    cv_jwt_set_leeway(v, 0);
    snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":%lld}", NOW);
    t = sign("HS256", buf);
    expect_fail(v, t, CV_EAUTH, "token expired at");
    fake_now = NOW - 1;
    expect_ok(v, t);
    fake_now = NOW;
    free(t);
    cv_jwt_set_leeway(v, 30);

    snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":%lld,\"nbf\":%lld}", NOW + 900, NOW + 31);
    t = sign("HS256", buf);
    expect_fail(v, t, CV_EAUTH, "token not valid before 2027-01-15T08:00:31Z (1800000031)");
    fake_now = NOW + 1;
    expect_ok(v, t);
    fake_now = NOW;
    free(t);

    t = sign("HS256", "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\"}");
    expect_fail(v, t, CV_EAUTH, "claim exp is missing");
    cv_jwt_set_require_exp(v, 0);
    expect_ok(v, t);
    free(t);
    t = sign("HS256", "{\"sub\":\"a\",\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":\"soon\"}");
    expect_fail(v, t, CV_EAUTH, "claim exp is not a number");
    free(t);
    cv_jwt_verifier_free(v);
}

static void test_issuer_and_audience(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("H");
    struct { const char *iss_aud; const char *want; } bad[] = {
        {"\"iss\":\"https://evil.test\",\"aud\":\"corvid\"", "issuer 'https://evil.test' not accepted (expected 'https://issuer.test')"},
        {"\"aud\":\"corvid\"", "claim iss is missing"},
        {"\"iss\":\"https://issuer.test\",\"aud\":\"other\"", "audience 'other' not accepted"},
        {"\"iss\":\"https://issuer.test\",\"aud\":[\"a\",\"b\"]", "none of the 2 audiences in the token is accepted"},
        {"\"iss\":\"https://issuer.test\"", "claim aud is missing"},
        {"\"iss\":\"https://issuer.test\",\"aud\":5", "claim aud is neither"},
        {"\"iss\":\"https://issuer.test\",\"aud\":\"corv\\u0001id\"", "audience 'corv?id' not accepted"},
    };
    char buf[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"exp\":%lld,%s}", NOW + 60, bad[i].iss_aud);
        char *t = sign("HS256", buf);
        expect_fail(v, t, CV_EAUTH, bad[i].want);
        free(t);
    }
    snprintf(buf, sizeof buf, "{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://issuer.test\",\"aud\":[\"x\",\"corvid\"]}", NOW + 60);
    char *t = sign("HS256", buf);
    expect_ok(v, t);
    free(t);
    cv_jwt_verifier_free(v);
}

static void test_alg_none_and_unknown(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("HRE");
    const char *hdrs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\",\"typ\":\"JWT\"}", "{\"alg\":\"NONE\"}"};
    for (int i = 0; i < 3; i++) {
        char *t = tjwt_make("none", NULL, NULL, 0, hdrs[i], payload(""));
        expect_fail(v, t, CV_EAUTH, "token signature is empty");
        /* Even with some signature bytes appended, none stays refused. */
        char *t2 = malloc(strlen(t) + 8);
        sprintf(t2, "%sAAAA", t);
        expect_fail(v, t2, CV_EAUTH, "alg none is never accepted");
        free(t);
        free(t2);
    }
    char *t = tjwt_make("HS256", NULL, secret, sizeof secret, "{\"alg\":\"HS512\"}", payload(""));
    expect_fail(v, t, CV_EAUTH, "alg HS512 is not supported");
    free(t);
    t = tjwt_make("HS256", NULL, secret, sizeof secret, "{\"typ\":\"JWT\"}", payload(""));
    expect_fail(v, t, CV_EFORMAT, "alg is missing");
    free(t);
    t = tjwt_make("HS256", NULL, secret, sizeof secret, "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", payload(""));
    expect_fail(v, t, CV_EAUTH, "crit");
    free(t);
    cv_jwt_verifier_free(v);
}

/* The classic confusion: the verifier holds an RSA public key; the attacker signs an
 * HS256 token with that public key's PEM text as the HMAC secret. */
static void test_key_confusion_refused(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("R");
    char *t = tjwt_make("HS256", NULL, (const unsigned char *)rsa_pem, strlen(rsa_pem),
                        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload(",\"scope\":\"admin\""));
    expect_fail(v, t, CV_EAUTH, "alg HS256 does not match key alg RS256");
    free(t);
    /* And a PEM can never be configured as an HMAC secret in the first place. */
    cv_error e = {0};
    assert_int_equal(cv_jwt_add_hmac_key(v, "k", (const uint8_t *)rsa_pem, strlen(rsa_pem), &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "PEM"));
    /* An RS256 token against an HS256-only verifier: pinned the other way round. */
    cv_jwt_verifier *h = verifier("H");
    t = sign("RS256", payload(""));
    expect_fail(h, t, CV_EAUTH, "alg RS256 does not match key alg HS256");
    free(t);
    cv_jwt_verifier_free(h);
    cv_jwt_verifier_free(v);
}

static void test_bad_signature_and_tampering(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("HRE");
    const char *algs[] = {"HS256", "RS256", "ES256"};
    for (int i = 0; i < 3; i++) {
        char *t = sign(algs[i], payload(""));
        /* Flip the first signature character to another valid one. */
        char *s = strrchr(t, '.') + 1;
        s[0] = s[0] == 'A' ? 'B' : 'A';
        expect_fail(v, t, CV_EAUTH, "signature does not verify");
        free(t);
        /* Swap the payload for one with more scope, keep the old signature. */
        t = sign(algs[i], payload(""));
        char *forged = sign(algs[i], payload(",\"scp\":[\"admin\"]"));
        char *d1 = strchr(t, '.'), *d2 = strrchr(t, '.'), *f1 = strchr(forged, '.'), *f2 = strrchr(forged, '.');
        char *mix = malloc(strlen(t) + strlen(forged));
        sprintf(mix, "%.*s%.*s%s", (int)(d1 - t), t, (int)(f2 - f1), f1, d2);
        expect_fail(v, mix, CV_EAUTH, "signature does not verify");
        free(mix);
        free(forged);
        free(t);
    }
    /* ES256 with a DER signature (a common client bug) has the wrong length. */
    unsigned char der[128];
    size_t der_len = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *hp = sign("ES256", payload(""));
    *strrchr(hp, '.') = 0;
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (unsigned char *)hp, strlen(hp)), 1);
    EVP_MD_CTX_free(ctx);
    char *ds = tjwt_b64url(der, der_len);
    char *t = malloc(strlen(hp) + strlen(ds) + 2);
    sprintf(t, "%s.%s", hp, ds);
    expect_fail(v, t, CV_EAUTH, "expected 64 (raw r||s)");
    free(t);
    free(ds);
    free(hp);
    cv_jwt_verifier_free(v);
}

/* Any single-character change anywhere in a valid token must make it fail. */
static void test_random_mutations_never_verify(void **state) {
    (void)state;
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    cv_jwt_verifier *v = verifier("HE");
    const char *algs[] = {"HS256", "ES256"};
    for (int a = 0; a < 2; a++) {
        char *t = sign(algs[a], payload(""));
        size_t n = strlen(t);
        for (int it = 0; it < 300; it++) {
            size_t pos = cv_test_rng_next(&rng) % n;
            char old = t[pos], c;
            do c = alpha[cv_test_rng_next(&rng) % (sizeof alpha - 1)]; while (c == old);
            t[pos] = c;
            cv_jwt_claims cl;
            cv_error e = {0};
            if (cv_jwt_verify(v, t, n, &cl, &e) == CV_OK)
                fail_msg("%s token verified after byte %zu changed to '%c'", algs[a], pos, c);
            assert_null(strstr(e.msg, t));
            t[pos] = old;
        }
        expect_ok(v, t);
        free(t);
    }
    cv_jwt_verifier_free(v);
}

static void test_malformed_encoding(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("H");
    char *good = sign("HS256", payload(""));
    char *d1 = strchr(good, '.');
    size_t hlen = (size_t)(d1 - good);
    char buf[4096];

    snprintf(buf, sizeof buf, "%.*s=%s", (int)hlen, good, d1); /* padding on the header */
    expect_fail(v, buf, CV_EFORMAT, "padding '=' at offset");
    snprintf(buf, sizeof buf, "%s", good);
    buf[3] = '+';
    expect_fail(v, buf, CV_EFORMAT, "byte 0x2b at offset 3 is not base64url");
    buf[3] = '/';
    expect_fail(v, buf, CV_EFORMAT, "is not base64url");
    buf[3] = ' ';
    expect_fail(v, buf, CV_EFORMAT, "is not base64url");
    snprintf(buf, sizeof buf, "%.*sA%s", (int)hlen, good, d1); /* one char too many */
    expect_fail(v, buf, CV_EFORMAT, "token header");
    /* "eyJ" + "9" -> last char with stray low bits: "e30" is "{}", "e31" is not canonical. */
    snprintf(buf, sizeof buf, "e31%s", d1);
    expect_fail(v, buf, CV_EFORMAT, "non-zero unused bits");
    snprintf(buf, sizeof buf, "e30%s", d1);
    expect_fail(v, buf, CV_EFORMAT, "alg is missing");
    snprintf(buf, sizeof buf, "W10%s", d1); /* "[]" */
    expect_fail(v, buf, CV_EFORMAT, "JSON is not an object");
    snprintf(buf, sizeof buf, "e2E%s", d1); /* "{a" */
    expect_fail(v, buf, CV_EFORMAT, "token header: not JSON");

    expect_fail(v, "abc.def", CV_EFORMAT, "token has 2 parts");
    expect_fail(v, "a.b.c.d.e", CV_EFORMAT, "encrypted JWE");
    expect_fail(v, "", CV_EFORMAT, "token is empty");
    snprintf(buf, sizeof buf, "%s.", good);
    expect_fail(v, buf, CV_EFORMAT, "token has 4 parts");
    snprintf(buf, sizeof buf, "%s", good);
    *strrchr(buf, '.') = 0;
    strcat(buf, ".");
    expect_fail(v, buf, CV_EAUTH, "token signature is empty");
    snprintf(buf, sizeof buf, "%.*s..sig", (int)hlen, good);
    expect_fail(v, buf, CV_EAUTH, "HS256 signature is 2 bytes, expected 32");

    /* Duplicate claims: a parser that kept the first "sub" and one that kept the last
     * would disagree about who this is. */
    char *dup = sign("HS256", payload(",\"sub\":\"root\""));
    expect_fail(v, dup, CV_EFORMAT, "duplicate");
    free(dup);
    char *nosub = sign("HS256", "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":1900000000}");
    expect_fail(v, nosub, CV_EAUTH, "claim sub is missing");
    free(nosub);
    char *nul = sign("HS256", "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":1900000000,\"sub\":\"a\\u0000b\"}");
    expect_fail(v, nul, CV_EFORMAT, "token payload: not JSON: \\u0000 is not allowed");
    cv_jwt_claims c;
    cv_error e = {0};
    cv_jwt_verify(v, nul, strlen(nul), &c, &e);
    assert_null(strstr(e.msg, "a\\u0000b")); /* no payload text quoted */
    free(nul);
    free(good);
    cv_jwt_verifier_free(v);
}

static void test_size_limit(void **state) {
    (void)state;
    cv_jwt_verifier *v = verifier("H");
    char big[6300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char *pl = malloc(sizeof big + 256);
    sprintf(pl, "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"sub\":\"a\",\"exp\":1900000000,\"pad\":\"%.*s\"}", 5000, big);
    char *t = sign("HS256", pl); /* about 6.8 kB: under the limit */
    expect_ok(v, t);
    free(t);
    sprintf(pl, "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"sub\":\"a\",\"exp\":1900000000,\"pad\":\"%s\"}", big);
    t = sign("HS256", pl);
    char want[64];
    snprintf(want, sizeof want, "token is %zu bytes, the limit is 8192", strlen(t));
    expect_fail(v, t, CV_EFORMAT, want);
    free(t);
    free(pl);
    char sub[300];
    memset(sub, 's', 256);
    sub[256] = 0;
    char p2[512];
    snprintf(p2, sizeof p2, "{\"iss\":\"https://issuer.test\",\"aud\":\"corvid\",\"exp\":1900000000,\"sub\":\"%s\"}", sub);
    t = sign("HS256", p2);
    expect_fail(v, t, CV_EAUTH, "(it is 256)");
    free(t);
    cv_jwt_verifier_free(v);
}

static void test_kid_selection(void **state) {
    (void)state;
    cv_jwt_verifier *v = NULL;
    cv_error e = {0};
    assert_int_equal(cv_jwt_verifier_new(&v, &e), CV_OK);
    cv_jwt_set_clock(v, clock_fn, NULL);
    unsigned char other[32];
    for (size_t i = 0; i < sizeof other; i++) other[i] = (unsigned char)cv_test_rng_next(&rng);
    assert_int_equal(cv_jwt_add_hmac_key(v, "h1", secret, sizeof secret, &e), CV_OK);
    assert_int_equal(cv_jwt_add_hmac_key(v, "h2", other, sizeof other, &e), CV_OK);
    assert_int_equal(cv_jwt_add_pem_key(v, "r1", CV_JWT_RS256, rsa_pem, strlen(rsa_pem), &e), CV_OK);
    assert_int_equal(cv_jwt_add_hmac_key(v, "h1", other, sizeof other, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "kid 'h1' is configured twice"));
    assert_int_equal(cv_jwt_key_count(v), 3);

    const char *pl = "{\"sub\":\"k\",\"exp\":1900000000}";
    char *t = tjwt_make("HS256", NULL, other, sizeof other, "{\"alg\":\"HS256\",\"kid\":\"h2\"}", pl);
    expect_ok(v, t);
    free(t);
    /* Signed with h2's secret but naming h1: only h1 is tried. */
    t = tjwt_make("HS256", NULL, other, sizeof other, "{\"alg\":\"HS256\",\"kid\":\"h1\"}", pl);
    expect_fail(v, t, CV_EAUTH, "signature does not verify");
    free(t);
    t = tjwt_make("HS256", NULL, other, sizeof other, "{\"alg\":\"HS256\",\"kid\":\"r1\"}", pl);
    expect_fail(v, t, CV_EAUTH, "alg HS256 does not match key 'r1' alg RS256");
    free(t);
    t = tjwt_make("HS256", NULL, other, sizeof other, "{\"alg\":\"HS256\",\"kid\":\"zz\\n\"}", pl);
    expect_fail(v, t, CV_EAUTH, "kid 'zz?' matches no configured key");
    free(t);
    /* No kid: every HS256 key is tried. */
    t = tjwt_make("HS256", NULL, other, sizeof other, "{\"alg\":\"HS256\"}", pl);
    expect_ok(v, t);
    free(t);
    unsigned char third[32] = {1};
    t = tjwt_make("HS256", NULL, third, sizeof third, "{\"alg\":\"HS256\"}", pl);
    expect_fail(v, t, CV_EAUTH, "signature does not verify with any of the 2 HS256 keys");
    free(t);
    t = tjwt_make("ES256", ec, NULL, 0, "{\"alg\":\"ES256\"}", pl);
    expect_fail(v, t, CV_EAUTH, "alg ES256 matches none of the 3 configured keys");
    free(t);
    cv_jwt_verifier_free(v);
}

static void test_key_checks(void **state) {
    (void)state;
    cv_jwt_verifier *v = NULL;
    cv_error e = {0};
    assert_int_equal(cv_jwt_verifier_new(&v, &e), CV_OK);
    assert_int_equal(cv_jwt_add_hmac_key(v, NULL, secret, 31, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "HS256 secret is 31 bytes, at least 32"));
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_ES256, rsa_pem, strlen(rsa_pem), &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "ES256 needs an EC P-256 key, this is RSA"));
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_RS256, ec_pem, strlen(ec_pem), &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "RS256 needs an RSA key"));
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_HS256, ec_pem, strlen(ec_pem), &e), CV_EINVAL);
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_RS256, "garbage", 7, &e), CV_EFORMAT);
    assert_non_null(strstr(e.msg, "not a PEM public key"));
    EVP_PKEY *p384 = tjwt_keygen_ec("P-384");
    char *pem = tjwt_public_pem(p384);
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_ES256, pem, strlen(pem), &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "needs curve P-256, this key is on secp384r1"));
    free(pem);
    EVP_PKEY_free(p384);
    EVP_PKEY *small = tjwt_keygen_rsa(1024);
    pem = tjwt_public_pem(small);
    assert_int_equal(cv_jwt_add_pem_key(v, NULL, CV_JWT_RS256, pem, strlen(pem), &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "RSA key has 1024 bits, at least 2048"));
    free(pem);
    EVP_PKEY_free(small);
    assert_int_equal(cv_jwt_key_count(v), 0);
    /* No key at all: nothing verifies. */
    char *t = sign("HS256", payload(""));
    expect_fail(v, t, CV_EAUTH, "no verification key is configured");
    free(t);
    assert_int_equal(cv_jwt_alg_parse("none"), -1);
    assert_int_equal(cv_jwt_alg_parse("ES256"), CV_JWT_ES256);
    assert_string_equal(cv_jwt_alg_name(CV_JWT_RS256), "RS256");
    cv_jwt_verifier_free(v);
}

int main(void) {
    rng = cv_test_rng_new(cv_test_seed("test_jwt"));
    for (size_t i = 0; i < sizeof secret; i++) secret[i] = (unsigned char)cv_test_rng_next(&rng);
    rsa = tjwt_keygen_rsa(2048);
    ec = tjwt_keygen_ec(NULL);
    if (!rsa || !ec) return 1;
    rsa_pem = tjwt_public_pem(rsa);
    ec_pem = tjwt_public_pem(ec);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_tokens_each_alg),
        cmocka_unit_test(test_scope_forms),
        cmocka_unit_test(test_expiry_and_not_before),
        cmocka_unit_test(test_issuer_and_audience),
        cmocka_unit_test(test_alg_none_and_unknown),
        cmocka_unit_test(test_key_confusion_refused),
        cmocka_unit_test(test_bad_signature_and_tampering),
        cmocka_unit_test(test_random_mutations_never_verify),
        cmocka_unit_test(test_malformed_encoding),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_kid_selection),
        cmocka_unit_test(test_key_checks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(rsa_pem);
    free(ec_pem);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    return rc;
}
