/* jwt_sign: makes signed JWTs for tests (header-only, OpenSSL), independently of the
 * verifier in server/jwt.c: its own base64url encoder, HMAC and EVP signing, and the
 * DER -> raw r||s conversion that ES256 in JWS needs.
 *
 * tjwt_make(alg, key, hmac, hmac_len, header_json, payload_json) returns a malloc'd
 * compact token; alg is "HS256" (hmac secret), "RS256" or "ES256" (key, a private
 * EVP_PKEY), or anything else for an unsigned token with an empty signature part.
 */
#ifndef CV_TEST_JWT_SIGN_H
#define CV_TEST_JWT_SIGN_H

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

static inline char *tjwt_b64url(const unsigned char *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = a[v >> 18]; *o++ = a[v >> 12 & 63]; *o++ = a[v >> 6 & 63]; *o++ = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *o++ = a[v >> 18]; *o++ = a[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *o++ = a[v >> 18]; *o++ = a[v >> 12 & 63]; *o++ = a[v >> 6 & 63];
    }
    *o = 0;
    return out;
}

/* Signature bytes over input into sig (at least 512 bytes); returns the length, 0 on failure. */
static inline size_t tjwt_sign(const char *alg, EVP_PKEY *key, const unsigned char *hmac,
                               size_t hmac_len, const char *input, unsigned char *sig) {
    if (strcmp(alg, "HS256") == 0) {
        unsigned len = 0;
        return HMAC(EVP_sha256(), hmac, (int)hmac_len, (const unsigned char *)input,
                    strlen(input), sig, &len) ? len : 0;
    }
    if (strcmp(alg, "RS256") != 0 && strcmp(alg, "ES256") != 0) return 0;
    unsigned char der[512];
    size_t der_len = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)input, strlen(input)) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return 0;
    if (alg[0] == 'R') {
        memcpy(sig, der, der_len);
        return der_len;
    }
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!es) return 0;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
    ECDSA_SIG_free(es);
    return ok ? 64 : 0;
}

static inline char *tjwt_make(const char *alg, EVP_PKEY *key, const unsigned char *hmac,
                              size_t hmac_len, const char *header, const char *payload) {
    char *h = tjwt_b64url((const unsigned char *)header, strlen(header));
    char *p = tjwt_b64url((const unsigned char *)payload, strlen(payload));
    char *input = malloc(strlen(h) + strlen(p) + 2);
    strcpy(input, h);
    strcat(input, ".");
    strcat(input, p);
    unsigned char sig[512];
    size_t sig_len = tjwt_sign(alg, key, hmac, hmac_len, input, sig);
    char *s = tjwt_b64url(sig, sig_len);
    char *tok = malloc(strlen(input) + strlen(s) + 2);
    strcpy(tok, input);
    strcat(tok, ".");
    strcat(tok, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return tok;
}

/* Fresh private keys: RSA of the given size, EC on curve (NULL: P-256). */
static inline EVP_PKEY *tjwt_keygen_rsa(unsigned bits) { return EVP_RSA_gen(bits); }
static inline EVP_PKEY *tjwt_keygen_ec(const char *curve) {
    return EVP_EC_gen(curve ? curve : "P-256");
}

/* The public half as PEM ("-----BEGIN PUBLIC KEY-----"), malloc'd, NUL-terminated. */
static inline char *tjwt_public_pem(EVP_PKEY *key) {
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b && PEM_write_bio_PUBKEY(b, key) == 1) {
        char *data;
        long n = BIO_get_mem_data(b, &data);
        out = malloc((size_t)n + 1);
        if (out) {
            memcpy(out, data, (size_t)n);
            out[n] = 0;
        }
    }
    BIO_free(b);
    return out;
}

#endif
