#include "jwt.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_error.h"

typedef struct jwt_key {
    char *kid;  /* NULL: no kid */
    cv_jwt_alg alg;
    uint8_t *secret;  /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey;   /* RS256, ES256 */
} jwt_key;

struct cv_jwt_verifier {
    jwt_key *keys;
    size_t n_keys;
    char *issuer;
    char **aud;
    size_t n_aud;
    int64_t leeway;
    int require_exp;
    cv_jwt_clock now;
    void *clock_ctx;
};

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

int cv_jwt_alg_parse(const char *name) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, alg_names[i]) == 0) return i;
    return -1;
}

const char *cv_jwt_alg_name(cv_jwt_alg alg) {
    return (unsigned)alg < 3 ? alg_names[alg] : "?";
}

/* A value taken from a token, made safe to put in a message or a log: at most 64
 * bytes, printable ASCII only (no quotes or backslashes), "..." when cut. */
static const char *quote(const char *s, size_t n, char buf[72]) {
    size_t k = 0;
    for (; k < n && k < 64; k++) {
        unsigned char c = (unsigned char)s[k];
        buf[k] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (k < n) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

static void rfc3339(int64_t t, char buf[32]) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, 32, "(out of range)");
}

static int64_t default_clock(void *ctx) {
    (void)ctx;
    return (int64_t)time(NULL);
}

cv_status cv_jwt_verifier_new(cv_jwt_verifier **out, cv_error *err) {
    cv_jwt_verifier *v = calloc(1, sizeof *v);
    if (!v) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    v->require_exp = 1;
    v->now = default_clock;
    *out = v;
    return CV_OK;
}

void cv_jwt_verifier_free(cv_jwt_verifier *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n_keys; i++) {
        free(v->keys[i].kid);
        if (v->keys[i].secret) OPENSSL_clear_free(v->keys[i].secret, v->keys[i].secret_len);
        EVP_PKEY_free(v->keys[i].pkey);
    }
    free(v->keys);
    free(v->issuer);
    for (size_t i = 0; i < v->n_aud; i++) free(v->aud[i]);
    free(v->aud);
    free(v);
}

static const jwt_key *find_kid(const cv_jwt_verifier *v, const char *kid) {
    for (size_t i = 0; i < v->n_keys; i++)
        if (v->keys[i].kid && strcmp(v->keys[i].kid, kid) == 0) return &v->keys[i];
    return NULL;
}

/* Appends a key; takes secret/pkey over only on success. */
static cv_status add_key(cv_jwt_verifier *v, const char *kid, cv_jwt_alg alg, uint8_t *secret,
                         size_t secret_len, EVP_PKEY *pkey, cv_error *err) {
    if (kid && (!*kid || strlen(kid) > 256))
        return cv_errorf(err, CV_EINVAL, "jwt key: kid must be 1..256 bytes");
    if (kid && find_kid(v, kid))
        return cv_errorf(err, CV_EINVAL, "jwt key: kid '%s' is configured twice", kid);
    jwt_key *k = realloc(v->keys, (v->n_keys + 1) * sizeof *k);
    if (!k) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    v->keys = k;
    char *kid_copy = NULL;
    if (kid && !(kid_copy = strdup(kid))) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    v->keys[v->n_keys++] = (jwt_key){kid_copy, alg, secret, secret_len, pkey};
    return CV_OK;
}

cv_status cv_jwt_add_hmac_key(cv_jwt_verifier *v, const char *kid, const uint8_t *secret,
                              size_t len, cv_error *err) {
    if (len < CV_JWT_MIN_HMAC_KEY)
        return cv_errorf(err, CV_EINVAL,
                         "jwt key %s: HS256 secret is %zu bytes, at least %d are needed",
                         kid ? kid : "(no kid)", len, CV_JWT_MIN_HMAC_KEY);
    if (len >= 10 && memcmp(secret, "-----BEGIN", 10) == 0)
        return cv_errorf(err, CV_EINVAL,
                         "jwt key %s: the HS256 secret is a PEM file; a public key must be "
                         "configured as RS256 or ES256, never as an HMAC secret",
                         kid ? kid : "(no kid)");
    uint8_t *copy = OPENSSL_malloc(len);
    if (!copy) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    memcpy(copy, secret, len);
    cv_status st = add_key(v, kid, CV_JWT_HS256, copy, len, NULL, err);
    if (st != CV_OK) OPENSSL_clear_free(copy, len);
    return st;
}

/* The first OpenSSL error on this thread as text; clears the queue. */
static const char *ssl_reason(char buf[160]) {
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, 160);
    else snprintf(buf, 160, "no detail");
    ERR_clear_error();
    return buf;
}

cv_status cv_jwt_add_pem_key(cv_jwt_verifier *v, const char *kid, cv_jwt_alg alg,
                             const char *pem, size_t len, cv_error *err) {
    const char *who = kid ? kid : "(no kid)";
    char why[160];
    if (alg != CV_JWT_RS256 && alg != CV_JWT_ES256)
        return cv_errorf(err, CV_EINVAL, "jwt key %s: a PEM public key is for RS256 or ES256, not %s",
                         who, cv_jwt_alg_name(alg));
    if (len > 1 << 20) return cv_errorf(err, CV_ERANGE, "jwt key %s: PEM is %zu bytes", who, len);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey)
        return cv_errorf(err, CV_EFORMAT, "jwt key %s: not a PEM public key "
                         "(-----BEGIN PUBLIC KEY-----): %s", who, ssl_reason(why));
    cv_status st = CV_OK;
    if (alg == CV_JWT_RS256) {
        if (!EVP_PKEY_is_a(pkey, "RSA"))
            st = cv_errorf(err, CV_EINVAL, "jwt key %s: RS256 needs an RSA key, this is %s", who,
                           EVP_PKEY_get0_type_name(pkey));
        else if (EVP_PKEY_get_bits(pkey) < CV_JWT_MIN_RSA_BITS)
            st = cv_errorf(err, CV_EINVAL, "jwt key %s: RSA key has %d bits, at least %d are needed",
                           who, EVP_PKEY_get_bits(pkey), CV_JWT_MIN_RSA_BITS);
    } else {
        char group[64] = "";
        if (!EVP_PKEY_is_a(pkey, "EC"))
            st = cv_errorf(err, CV_EINVAL, "jwt key %s: ES256 needs an EC P-256 key, this is %s",
                           who, EVP_PKEY_get0_type_name(pkey));
        else if (!EVP_PKEY_get_group_name(pkey, group, sizeof group, NULL) ||
                 OBJ_sn2nid(group) != NID_X9_62_prime256v1)
            st = cv_errorf(err, CV_EINVAL, "jwt key %s: ES256 needs curve P-256, this key is on %s",
                           who, group[0] ? group : "an unknown curve");
    }
    if (st == CV_OK) st = add_key(v, kid, alg, NULL, 0, pkey, err);
    if (st != CV_OK) EVP_PKEY_free(pkey);
    ERR_clear_error();
    return st;
}

cv_status cv_jwt_set_issuer(cv_jwt_verifier *v, const char *iss, cv_error *err) {
    char *copy = NULL;
    if (iss && !(copy = strdup(iss))) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    free(v->issuer);
    v->issuer = copy;
    return CV_OK;
}

cv_status cv_jwt_add_audience(cv_jwt_verifier *v, const char *aud, cv_error *err) {
    char **a = realloc(v->aud, (v->n_aud + 1) * sizeof *a);
    if (!a) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    v->aud = a;
    if (!(a[v->n_aud] = strdup(aud))) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    v->n_aud++;
    return CV_OK;
}

void cv_jwt_set_leeway(cv_jwt_verifier *v, int64_t seconds) { v->leeway = seconds < 0 ? 0 : seconds; }
void cv_jwt_set_require_exp(cv_jwt_verifier *v, int require) { v->require_exp = require; }
void cv_jwt_set_clock(cv_jwt_verifier *v, cv_jwt_clock now, void *ctx) {
    v->now = now ? now : default_clock;
    v->clock_ctx = ctx;
}
size_t cv_jwt_key_count(const cv_jwt_verifier *v) { return v->n_keys; }

/* ---- compact serialization ---- */

static int b64url_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Strict RFC 7515 base64url: the URL alphabet only, no padding, no whitespace, and the
 * unused low bits of the last character zero (so every byte string has one encoding). */
static cv_status b64url_decode(const char *s, size_t n, const char *part, uint8_t **out,
                               size_t *out_len, cv_error *err) {
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    size_t o = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int d = b64url_value((unsigned char)s[i]);
        if (d < 0) {
            unsigned char c = (unsigned char)s[i];
            free(buf);
            if (c == '=')
                return cv_errorf(err, CV_EFORMAT, "token %s: padding '=' at offset %zu "
                                 "(JWS base64url has no padding)", part, i);
            return cv_errorf(err, CV_EFORMAT, "token %s: byte 0x%02x at offset %zu is not "
                             "base64url", part, c, i);
        }
        acc = acc << 6 | (uint32_t)d;
        if (i % 4 == 3) {
            buf[o++] = (uint8_t)(acc >> 16);
            buf[o++] = (uint8_t)(acc >> 8);
            buf[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    size_t rest = n % 4;
    if (rest == 1) {
        free(buf);
        return cv_errorf(err, CV_EFORMAT, "token %s: base64url length %zu is impossible", part, n);
    }
    uint32_t stray = rest == 2 ? (acc & 0xf) : rest == 3 ? (acc & 0x3) : 0;
    if (stray) {
        free(buf);
        return cv_errorf(err, CV_EFORMAT, "token %s: last base64url character has non-zero "
                         "unused bits (not a canonical encoding)", part);
    }
    if (rest == 2) buf[o++] = (uint8_t)(acc >> 4);
    if (rest == 3) {
        buf[o++] = (uint8_t)(acc >> 10);
        buf[o++] = (uint8_t)(acc >> 2);
    }
    *out = buf;
    *out_len = o;
    return CV_OK;
}

static cv_status decode_json(const char *s, size_t n, const char *part, json_t **out,
                             cv_error *err) {
    uint8_t *raw = NULL;
    size_t len = 0;
    if (n == 0) return cv_errorf(err, CV_EFORMAT, "token %s is empty", part);
    cv_status st = b64url_decode(s, n, part, &raw, &len, err);
    if (st != CV_OK) return st;
    json_error_t je;
    /* Duplicate names are refused: two parsers reading the same token differently is a
     * classic bypass. */
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, &je);
    free(raw);
    if (!j) {
        /* Token content stays out of messages (json_error.h). */
        return cv_errorf(err, CV_EFORMAT, "token %s: not JSON: %s (at byte %d)", part,
                         cv_json_error_text(&je), je.position);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return cv_errorf(err, CV_EFORMAT, "token %s: JSON is not an object", part);
    }
    *out = j;
    return CV_OK;
}

/* ---- signatures ---- */

static cv_status verify_hs256(const jwt_key *k, const char *input, size_t n, const uint8_t *sig,
                              size_t sig_len, cv_error *err) {
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (sig_len != 32)
        return cv_errorf(err, CV_EAUTH, "HS256 signature is %zu bytes, expected 32", sig_len);
    if (!HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)input, n, mac,
              &mac_len) || mac_len != 32) {
        ERR_clear_error();
        return cv_errorf(err, CV_EINTERNAL, "HS256: HMAC computation failed");
    }
    int ok = CRYPTO_memcmp(mac, sig, 32) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok ? CV_OK : cv_errorf(err, CV_EAUTH, "signature does not verify");
}

/* JWS carries ES256 as raw r||s (RFC 7518 3.4); EVP wants a DER ECDSA-Sig-Value. */
static cv_status es256_to_der(const uint8_t *sig, size_t sig_len, uint8_t **der, int *der_len,
                              cv_error *err) {
    if (sig_len != 64)
        return cv_errorf(err, CV_EAUTH, "ES256 signature is %zu bytes, expected 64 (raw r||s)",
                         sig_len);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    }
    *der = NULL;
    *der_len = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    if (*der_len <= 0) return cv_errorf(err, CV_ENOMEM, "jwt: out of memory");
    return CV_OK;
}

static cv_status verify_pkey(const jwt_key *k, const char *input, size_t n, const uint8_t *sig,
                             size_t sig_len, cv_error *err) {
    uint8_t *der = NULL;
    int der_len = 0;
    if (k->alg == CV_JWT_ES256) {
        cv_status st = es256_to_der(sig, sig_len, &der, &der_len, err);
        if (st != CV_OK) return st;
        sig = der;
        sig_len = (size_t)der_len;
    } else if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey)) {
        return cv_errorf(err, CV_EAUTH, "RS256 signature is %zu bytes, the key needs %d", sig_len,
                         EVP_PKEY_get_size(k->pkey));
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, n) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok ? CV_OK : cv_errorf(err, CV_EAUTH, "signature does not verify");
}

static cv_status verify_sig(const jwt_key *k, const char *input, size_t n, const uint8_t *sig,
                            size_t sig_len, cv_error *err) {
    return k->alg == CV_JWT_HS256 ? verify_hs256(k, input, n, sig, sig_len, err)
                                  : verify_pkey(k, input, n, sig, sig_len, err);
}

/* Picks the keys to try (header alg and kid against the pinned keys), then verifies. */
static cv_status check_signature(const cv_jwt_verifier *v, json_t *header, const char *input,
                                 size_t input_len, const uint8_t *sig, size_t sig_len,
                                 cv_error *err) {
    char q[72];
    json_t *jalg = json_object_get(header, "alg");
    if (!json_is_string(jalg))
        return cv_errorf(err, CV_EFORMAT, "token header: alg is missing or not a string");
    const char *alg_s = json_string_value(jalg);
    if (strcasecmp(alg_s, "none") == 0)
        return cv_errorf(err, CV_EAUTH, "alg none is never accepted");
    int alg = cv_jwt_alg_parse(alg_s);
    if (alg < 0)
        return cv_errorf(err, CV_EAUTH, "alg %s is not supported (HS256, RS256, ES256)",
                         quote(alg_s, strlen(alg_s), q));
    /* We implement no header extension, so any "crit" must be refused (RFC 7515 4.1.11). */
    if (json_object_get(header, "crit"))
        return cv_errorf(err, CV_EAUTH, "token header: crit extensions are not supported");
    json_t *jkid = json_object_get(header, "kid");
    if (jkid && !json_is_string(jkid))
        return cv_errorf(err, CV_EFORMAT, "token header: kid is not a string");

    if (jkid) {
        const char *kid = json_string_value(jkid);
        const jwt_key *k = find_kid(v, kid);
        if (!k)
            return cv_errorf(err, CV_EAUTH, "kid '%s' matches no configured key",
                             quote(kid, strlen(kid), q));
        if ((int)k->alg != alg)
            return cv_errorf(err, CV_EAUTH, "alg %s does not match key '%s' alg %s",
                             alg_names[alg], k->kid, cv_jwt_alg_name(k->alg));
        return verify_sig(k, input, input_len, sig, sig_len, err);
    }
    size_t tried = 0;
    cv_status st = CV_OK;
    for (size_t i = 0; i < v->n_keys; i++) {
        if ((int)v->keys[i].alg != alg) continue;
        tried++;
        st = verify_sig(&v->keys[i], input, input_len, sig, sig_len, err);
        if (st == CV_OK || st == CV_ENOMEM || st == CV_EINTERNAL) return st;
    }
    if (tried > 1) return cv_errorf(err, CV_EAUTH, "signature does not verify with any of the %zu %s keys",
                                    tried, alg_names[alg]);
    if (tried == 1) return st;
    if (v->n_keys == 1)
        return cv_errorf(err, CV_EAUTH, "alg %s does not match key alg %s", alg_names[alg],
                         cv_jwt_alg_name(v->keys[0].alg));
    return cv_errorf(err, CV_EAUTH, "alg %s matches none of the %zu configured keys",
                     alg_names[alg], v->n_keys);
}

/* ---- claims ---- */

static cv_status time_claim(json_t *claims, const char *name, int64_t *out, int *present,
                            cv_error *err) {
    json_t *j = json_object_get(claims, name);
    *present = j != NULL;
    if (!j) return CV_OK;
    if (!json_is_number(j))
        return cv_errorf(err, CV_EAUTH, "claim %s is not a number", name);
    double d = json_number_value(j);
    if (!(d > -1e15 && d < 1e15)) return cv_errorf(err, CV_EAUTH, "claim %s is out of range", name);
    *out = (int64_t)d;
    return CV_OK;
}

static cv_status check_times(const cv_jwt_verifier *v, json_t *claims, cv_jwt_claims *out,
                             cv_error *err) {
    int64_t now = v->now(v->clock_ctx), exp = 0, nbf = 0;
    int has_exp, has_nbf;
    char t1[32], t2[32];
    cv_status st = time_claim(claims, "exp", &exp, &has_exp, err);
    if (st == CV_OK) st = time_claim(claims, "nbf", &nbf, &has_nbf, err);
    if (st != CV_OK) return st;
    if (!has_exp && v->require_exp)
        return cv_errorf(err, CV_EAUTH, "claim exp is missing (tokens must expire)");
    if (has_exp && now >= exp + v->leeway) {
        rfc3339(exp, t1);
        rfc3339(now, t2);
        return cv_errorf(err, CV_EAUTH, "token expired at %s (%lld), now %s (%lld), leeway %llds",
                         t1, (long long)exp, t2, (long long)now, (long long)v->leeway);
    }
    if (has_nbf && now + v->leeway < nbf) {
        rfc3339(nbf, t1);
        rfc3339(now, t2);
        return cv_errorf(err, CV_EAUTH,
                         "token not valid before %s (%lld), now %s (%lld), leeway %llds", t1,
                         (long long)nbf, t2, (long long)now, (long long)v->leeway);
    }
    out->exp = has_exp ? exp : 0;
    return CV_OK;
}

static int aud_accepted(const cv_jwt_verifier *v, const char *aud) {
    for (size_t i = 0; i < v->n_aud; i++)
        if (strcmp(v->aud[i], aud) == 0) return 1;
    return 0;
}

static cv_status check_iss_aud(const cv_jwt_verifier *v, json_t *claims, cv_error *err) {
    char q[72];
    if (v->issuer) {
        json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss))
            return cv_errorf(err, CV_EAUTH, "claim iss is %s (expected '%s')",
                             iss ? "not a string" : "missing", v->issuer);
        const char *s = json_string_value(iss);
        if (strcmp(s, v->issuer) != 0)
            return cv_errorf(err, CV_EAUTH, "issuer '%s' not accepted (expected '%s')",
                             quote(s, json_string_length(iss), q), v->issuer);
    }
    if (v->n_aud == 0) return CV_OK;
    json_t *aud = json_object_get(claims, "aud");
    if (!aud) return cv_errorf(err, CV_EAUTH, "claim aud is missing (expected '%s')", v->aud[0]);
    if (json_is_string(aud)) {
        if (aud_accepted(v, json_string_value(aud))) return CV_OK;
        return cv_errorf(err, CV_EAUTH, "audience '%s' not accepted (expected '%s')",
                         quote(json_string_value(aud), json_string_length(aud), q), v->aud[0]);
    }
    if (!json_is_array(aud))
        return cv_errorf(err, CV_EAUTH, "claim aud is neither a string nor an array");
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a) {
        if (!json_is_string(a))
            return cv_errorf(err, CV_EAUTH, "claim aud[%zu] is not a string", i);
        if (aud_accepted(v, json_string_value(a))) return CV_OK;
    }
    return cv_errorf(err, CV_EAUTH, "none of the %zu audiences in the token is accepted "
                     "(expected '%s')", json_array_size(aud), v->aud[0]);
}

static unsigned scope_bit(const char *s, size_t n) {
    if (n == 9 && memcmp(s, "inference", 9) == 0) return CV_SCOPE_INFERENCE;
    if (n == 5 && memcmp(s, "admin", 5) == 0) return CV_SCOPE_ADMIN;
    return 0;
}

static unsigned scopes_of_string(const char *s) {
    unsigned bits = 0;
    while (*s) {
        size_t n = strcspn(s, " ");
        bits |= scope_bit(s, n);
        s += n;
        s += strspn(s, " ");
    }
    return bits;
}

static cv_status check_scopes(json_t *claims, unsigned *bits, cv_error *err) {
    static const char *const names[] = {"scope", "scp", "scopes"};
    *bits = 0;
    for (int n = 0; n < 3; n++) {
        json_t *j = json_object_get(claims, names[n]);
        if (!j) continue;
        if (json_is_string(j)) {
            *bits |= scopes_of_string(json_string_value(j));
        } else if (json_is_array(j) && n > 0) {
            size_t i;
            json_t *s;
            json_array_foreach(j, i, s) {
                if (!json_is_string(s))
                    return cv_errorf(err, CV_EAUTH, "claim %s[%zu] is not a string", names[n], i);
                *bits |= scope_bit(json_string_value(s), json_string_length(s));
            }
        } else {
            return cv_errorf(err, CV_EAUTH, "claim %s is not a %s", names[n],
                             n == 0 ? "string" : "string or array of strings");
        }
    }
    return CV_OK;
}

static cv_status check_claims(const cv_jwt_verifier *v, json_t *claims, cv_jwt_claims *out,
                              cv_error *err) {
    cv_status st = check_times(v, claims, out, err);
    if (st == CV_OK) st = check_iss_aud(v, claims, err);
    if (st != CV_OK) return st;
    json_t *sub = json_object_get(claims, "sub");
    if (!json_is_string(sub))
        return cv_errorf(err, CV_EAUTH, "claim sub is %s", sub ? "not a string" : "missing");
    size_t n = json_string_length(sub);
    /* jansson refuses \u0000 by default, so n is also the C string length. */
    if (n == 0 || n > CV_JWT_MAX_SUBJECT)
        return cv_errorf(err, CV_EAUTH, "claim sub must be 1..%d bytes (it is %zu)",
                         CV_JWT_MAX_SUBJECT, n);
    memcpy(out->subject, json_string_value(sub), n + 1);
    return check_scopes(claims, &out->scopes, err);
}

cv_status cv_jwt_verify(const cv_jwt_verifier *v, const char *token, size_t len,
                        cv_jwt_claims *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    if (len == 0) return cv_errorf(err, CV_EFORMAT, "token is empty");
    if (len > CV_JWT_MAX_TOKEN)
        return cv_errorf(err, CV_EFORMAT, "token is %zu bytes, the limit is %d", len,
                         CV_JWT_MAX_TOKEN);
    size_t dots[2], n_dots = 0;
    for (size_t i = 0; i < len; i++)
        if (token[i] == '.') {
            if (n_dots < 2) dots[n_dots] = i;
            n_dots++;
        }
    if (n_dots != 2)
        return cv_errorf(err, CV_EFORMAT, "token has %zu parts, a compact JWS has 3%s", n_dots + 1,
                         n_dots == 4 ? " (5 parts is an encrypted JWE, not supported)" : "");
    if (v->n_keys == 0) return cv_errorf(err, CV_EAUTH, "no verification key is configured");

    json_t *header = NULL, *claims = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    cv_status st = decode_json(token, dots[0], "header", &header, err);
    if (st != CV_OK) goto done;
    if (dots[1] + 1 == len) {
        st = cv_errorf(err, CV_EAUTH, "token signature is empty");
        goto done;
    }
    st = b64url_decode(token + dots[1] + 1, len - dots[1] - 1, "signature", &sig, &sig_len, err);
    if (st != CV_OK) goto done;
    st = check_signature(v, header, token, dots[1], sig, sig_len, err);
    if (st != CV_OK) goto done;
    st = decode_json(token + dots[0] + 1, dots[1] - dots[0] - 1, "payload", &claims, err);
    if (st != CV_OK) goto done;
    st = check_claims(v, claims, out, err);
done:
    json_decref(header);
    json_decref(claims);
    free(sig);
    if (st != CV_OK) memset(out, 0, sizeof *out);
    return st;
}
