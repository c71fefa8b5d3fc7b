/* Fuzzes the JWT verifier, the peer-address / CIDR parsers and the auth config.
 *
 * The first byte picks the mode:
 *   0: the rest is a compact token, verified as received (structure, base64url, header
 *      JSON, key choice, HS256 and ES256 signature checks);
 *   1: the rest is "HEADER\nPAYLOAD" JSON text, signed here with the verifier's HS256
 *      key so that the claims checks (times, iss, aud, sub, scopes) are reached;
 *   2: the rest is a gRPC peer string and an allowlist rule;
 *   3: the rest is an "auth" JSON section (its audit_log dropped: no files are made;
 *      inputs naming /dev, /proc or /sys skipped: a key file there could block),
 *      then one check of an Admin call with a bearer token.
 * A verified token must have a non-empty subject; nothing may crash or leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "allowlist.h"
#include "auth.h"
#include "jwt.h"
#include "../support/jwt_sign.h"

static const unsigned char key[32] = "fuzz-secret-0123456789abcdefghij";
static cv_jwt_verifier *v;
static cv_allowlist *al;

static int64_t fixed_now(void *ctx) {
    (void)ctx;
    return 1800000000;
}

static void setup(void) {
    cv_jwt_verifier_new(&v, NULL);
    cv_jwt_set_clock(v, fixed_now, NULL);
    cv_jwt_set_leeway(v, 30);
    cv_jwt_set_issuer(v, "iss", NULL);
    cv_jwt_add_audience(v, "corvid", NULL);
    cv_jwt_add_hmac_key(v, "h", key, sizeof key, NULL);
    EVP_PKEY *ec = tjwt_keygen_ec(NULL);
    char *pem = tjwt_public_pem(ec);
    cv_jwt_add_pem_key(v, "e", CV_JWT_ES256, pem, strlen(pem), NULL);
    free(pem);
    EVP_PKEY_free(ec);
    cv_allowlist_new(&al, NULL);
    cv_allowlist_add(al, "10.0.0.0/8", NULL);
    cv_allowlist_add(al, "2001:db8::/32", NULL);
}

static void check(const char *tok, size_t n) {
    cv_jwt_claims c;
    cv_error e;
    if (cv_jwt_verify(v, tok, n, &c, &e) == CV_OK && c.subject[0] == 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!v) setup();
    if (size < 1 || size > 16384) return 0;
    char *s = malloc(size);
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    switch (data[0] % 4) {
    case 0:
        check(s, size - 1);
        break;
    case 1: {
        char *nl = strchr(s, '\n');
        const char *payload = nl ? nl + 1 : s;
        if (nl) *nl = 0;
        char *tok = tjwt_make("HS256", NULL, key, sizeof key, nl ? s : "{\"alg\":\"HS256\"}", payload);
        if (tok) check(tok, strlen(tok));
        free(tok);
        break;
    }
    case 3: {
        if (strstr(s, "/dev") || strstr(s, "/proc") || strstr(s, "/sys")) break;
        json_t *j = json_loadb(s, size - 1, 0, NULL);
        cv_auth *a = NULL;
        if (json_is_object(j)) json_object_del(j, "audit_log");
        if (j && cv_auth_new(j, NULL, &a, NULL) == CV_OK) {
            cv_auth_result r;
            cv_auth_check(a, "/corvid.v1.Admin/GetStatus", "Bearer a.b.c", "ipv4:10.0.0.1:1", &r);
            cv_auth_free(a);
        }
        json_decref(j);
        break;
    }
    default: {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        cv_ip ip;
        if (cv_ip_parse_peer(s, &ip, NULL) == CV_OK) {
            char text[64];
            cv_ip_format(&ip, text);
            cv_allowlist_allows(al, &ip);
        }
        if (nl) {
            cv_allowlist *one = NULL;
            if (cv_allowlist_new(&one, NULL) == CV_OK && cv_allowlist_add(one, nl + 1, NULL) == CV_OK &&
                cv_ip_parse_peer(s, &ip, NULL) == CV_OK)
                cv_allowlist_allows(one, &ip);
            cv_allowlist_free(one);
        }
        break;
    }
    }
    free(s);
    return 0;
}
