#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "allowlist.h"
#include "audit_tally.h"
#include "json_error.h"

#define SECRET_FILE_MAX (1 << 20)

struct cv_auth {
    cv_jwt_verifier *jwt;   /* NULL: no token needed */
    cv_allowlist *allow;    /* empty: any address */
    cv_ratelimit *rl;       /* NULL: unlimited */
    double rl_rate, rl_burst;
    cv_audit *audit;        /* NULL: no audit log */
    cv_audit_tally *failures; /* counts auth failures into audit, one line per key an interval */
};

/* ---- configuration ---- */

static cv_status only_keys(const json_t *o, const char *where, const char *const *allowed,
                           cv_error *err) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, k) == 0;
        if (!ok) return cv_errorf(err, CV_EINVAL, "%s: unknown key \"%.64s\"", where, k);
    }
    return CV_OK;
}

static cv_status read_small_file(const char *path, const char *where, char **buf, size_t *len,
                                 cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, CV_EIO, "%s: %s: %s", where, path, strerror(errno));
    char *b = malloc(SECRET_FILE_MAX + 1);
    size_t n = b ? fread(b, 1, SECRET_FILE_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!b) return cv_errorf(err, CV_ENOMEM, "%s: out of memory", where);
    if (bad || n > SECRET_FILE_MAX) {
        free(b);
        return cv_errorf(err, bad ? CV_EIO : CV_ERANGE, "%s: %s: %s", where, path,
                         bad ? "read error" : "larger than 1 MiB");
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return CV_OK;
}

static cv_status add_key(cv_jwt_verifier *v, const json_t *k, size_t idx, cv_error *err) {
    static const char *const keys[] = {"kid", "alg", "secret_file", "secret_env",
                                       "public_key_file", NULL};
    char where[64];
    snprintf(where, sizeof where, "auth.jwt.keys[%zu]", idx);
    if (!json_is_object(k)) return cv_errorf(err, CV_EINVAL, "%s: not an object", where);
    cv_status st = only_keys(k, where, keys, err);
    if (st != CV_OK) return st;
    const json_t *kid = json_object_get(k, "kid"), *alg = json_object_get(k, "alg");
    const json_t *sf = json_object_get(k, "secret_file"), *se = json_object_get(k, "secret_env");
    const json_t *pk = json_object_get(k, "public_key_file");
    if (kid && !json_is_string(kid)) return cv_errorf(err, CV_EINVAL, "%s.kid: not a string", where);
    int a = json_is_string(alg) ? cv_jwt_alg_parse(json_string_value(alg)) : -1;
    if (a < 0)
        return cv_errorf(err, CV_EINVAL, "%s.alg: must be \"HS256\", \"RS256\" or \"ES256\"", where);
    if (!!sf + !!se + !!pk != 1)
        return cv_errorf(err, CV_EINVAL, "%s: exactly one of secret_file, secret_env, "
                         "public_key_file is needed", where);
    const json_t *src = sf ? sf : se ? se : pk;
    if (!json_is_string(src)) return cv_errorf(err, CV_EINVAL, "%s: the key source is not a string", where);
    if ((a == CV_JWT_HS256) != (pk == NULL))
        return cv_errorf(err, CV_EINVAL, "%s: %s takes %s", where, cv_jwt_alg_name((cv_jwt_alg)a),
                         a == CV_JWT_HS256 ? "secret_file or secret_env (a shared secret)"
                                           : "public_key_file (a PEM public key)");
    const char *kid_s = kid ? json_string_value(kid) : NULL;
    if (se) {
        const char *s = getenv(json_string_value(se));
        if (!s) return cv_errorf(err, CV_ENOTFOUND, "%s.secret_env: environment variable %s is not set",
                                 where, json_string_value(se));
        st = cv_jwt_add_hmac_key(v, kid_s, (const uint8_t *)s, strlen(s), err);
        return st == CV_OK ? st : cv_error_wrap(err, "%s", where);
    }
    char *buf = NULL;
    size_t len = 0;
    st = read_small_file(json_string_value(src), where, &buf, &len, err);
    if (st != CV_OK) return st;
    if (a == CV_JWT_HS256) {
        /* `echo secret > file` leaves a newline that is no part of the secret. */
        if (len && buf[len - 1] == '\n') len--;
        if (len && buf[len - 1] == '\r') len--;
        st = cv_jwt_add_hmac_key(v, kid_s, (const uint8_t *)buf, len, err);
        OPENSSL_cleanse(buf, len);
    } else {
        st = cv_jwt_add_pem_key(v, kid_s, (cv_jwt_alg)a, buf, len, err);
    }
    free(buf);
    return st == CV_OK ? st : cv_error_wrap(err, "%s", where);
}

static cv_status parse_jwt(cv_auth *a, const json_t *j, const cv_auth_options *opt, cv_error *err) {
    static const char *const keys[] = {"keys", "issuer", "audience", "leeway_s", "require_exp", NULL};
    if (!json_is_object(j)) return cv_errorf(err, CV_EINVAL, "auth.jwt: not an object");
    cv_status st = only_keys(j, "auth.jwt", keys, err);
    if (st != CV_OK) return st;
    const json_t *ks = json_object_get(j, "keys");
    if (!json_is_array(ks) || json_array_size(ks) == 0)
        return cv_errorf(err, CV_EINVAL, "auth.jwt.keys: an array of at least one key is needed");
    if ((st = cv_jwt_verifier_new(&a->jwt, err)) != CV_OK) return st;
    if (opt && opt->wall) cv_jwt_set_clock(a->jwt, opt->wall, opt->clock_ctx);
    for (size_t i = 0; i < json_array_size(ks); i++)
        if ((st = add_key(a->jwt, json_array_get(ks, i), i, err)) != CV_OK) return st;

    const json_t *iss = json_object_get(j, "issuer"), *aud = json_object_get(j, "audience");
    if (iss) {
        if (!json_is_string(iss)) return cv_errorf(err, CV_EINVAL, "auth.jwt.issuer: not a string");
        if ((st = cv_jwt_set_issuer(a->jwt, json_string_value(iss), err)) != CV_OK) return st;
    }
    if (json_is_string(aud)) {
        st = cv_jwt_add_audience(a->jwt, json_string_value(aud), err);
    } else if (json_is_array(aud)) {
        for (size_t i = 0; i < json_array_size(aud) && st == CV_OK; i++) {
            const json_t *s = json_array_get(aud, i);
            st = json_is_string(s) ? cv_jwt_add_audience(a->jwt, json_string_value(s), err)
                                   : cv_errorf(err, CV_EINVAL, "auth.jwt.audience[%zu]: not a string", i);
        }
    } else if (aud) {
        st = cv_errorf(err, CV_EINVAL, "auth.jwt.audience: not a string or an array of strings");
    }
    if (st != CV_OK) return st;

    const json_t *lw = json_object_get(j, "leeway_s"), *re = json_object_get(j, "require_exp");
    json_int_t leeway = 30;
    if (lw) {
        if (!json_is_integer(lw) || json_integer_value(lw) < 0 || json_integer_value(lw) > 600)
            return cv_errorf(err, CV_ERANGE, "auth.jwt.leeway_s: a whole number of seconds 0..600 is needed");
        leeway = json_integer_value(lw);
    }
    cv_jwt_set_leeway(a->jwt, leeway);
    if (re && !json_is_boolean(re)) return cv_errorf(err, CV_EINVAL, "auth.jwt.require_exp: not a boolean");
    if (re) cv_jwt_set_require_exp(a->jwt, json_is_true(re));
    return CV_OK;
}

static cv_status parse_allowlist(cv_auth *a, const json_t *j, cv_error *err) {
    if (!j) return CV_OK;
    if (!json_is_array(j)) return cv_errorf(err, CV_EINVAL, "auth.allowlist: not an array of CIDR strings");
    for (size_t i = 0; i < json_array_size(j); i++) {
        const json_t *s = json_array_get(j, i);
        if (!json_is_string(s)) return cv_errorf(err, CV_EINVAL, "auth.allowlist[%zu]: not a string", i);
        cv_status st = cv_allowlist_add(a->allow, json_string_value(s), err);
        if (st != CV_OK) return cv_error_wrap(err, "auth.allowlist[%zu]", i);
    }
    return CV_OK;
}

static cv_status parse_rate_limit(cv_auth *a, const json_t *j, const cv_auth_options *opt,
                                  cv_error *err) {
    static const char *const keys[] = {"per_second", "burst", "max_subjects", NULL};
    if (!j) return CV_OK;
    if (!json_is_object(j)) return cv_errorf(err, CV_EINVAL, "auth.rate_limit: not an object");
    cv_status st = only_keys(j, "auth.rate_limit", keys, err);
    if (st != CV_OK) return st;
    const json_t *ps = json_object_get(j, "per_second"), *b = json_object_get(j, "burst");
    const json_t *mx = json_object_get(j, "max_subjects");
    if (!json_is_number(ps)) return cv_errorf(err, CV_EINVAL, "auth.rate_limit.per_second: a number is needed");
    if (b && !json_is_number(b)) return cv_errorf(err, CV_EINVAL, "auth.rate_limit.burst: not a number");
    if (mx && (!json_is_integer(mx) || json_integer_value(mx) < 1))
        return cv_errorf(err, CV_EINVAL, "auth.rate_limit.max_subjects: a positive whole number is needed");
    cv_ratelimit_config c = {0};
    c.per_second = json_number_value(ps);
    c.burst = b ? json_number_value(b) : (c.per_second < 1 ? 1 : c.per_second);
    c.max_keys = mx ? (size_t)json_integer_value(mx) : 0;
    if (opt) {
        c.now = opt->mono;
        c.clock_ctx = opt->clock_ctx;
    }
    a->rl_rate = c.per_second;
    a->rl_burst = c.burst;
    st = cv_ratelimit_new(&c, &a->rl, err);
    return st == CV_OK ? st : cv_error_wrap(err, "auth.rate_limit");
}

/* A number of section[key] in [lo, hi] into *v (left alone when the key is absent). */
static cv_status audit_number(const json_t *section, const char *key, double lo, double hi, int whole,
                              double *v, cv_error *err) {
    const json_t *j = json_object_get(section, key);
    if (!j) return CV_OK;
    if (!json_object_get(section, "audit_log"))
        return cv_errorf(err, CV_EINVAL, "auth.%s: set without audit_log", key);
    double x = json_number_value(j);
    if (!json_is_number(j) || !(x >= lo && x <= hi) || (whole && !json_is_integer(j)))
        return cv_errorf(err, CV_EINVAL, "auth.%s: %s from %.10g to %.10g is needed", key,
                         whole ? "a whole number" : "a number", lo, hi);
    *v = x;
    return CV_OK;
}

/* audit_log with its size bound and the failure tally (defaults in auth.h). */
static cv_status parse_audit(cv_auth *a, const json_t *section, const cv_auth_options *opt, cv_error *err) {
    double max_mb = CV_AUTH_AUDIT_MAX_MB, keep = CV_AUTH_AUDIT_KEEP, interval = CV_AUTH_AUDIT_INTERVAL_S,
           max_keys = CV_AUTH_AUDIT_MAX_KEYS;
    const json_t *log = json_object_get(section, "audit_log");
    cv_status st;
    if ((st = audit_number(section, "audit_max_mb", 0, 1048576, 0, &max_mb, err)) != CV_OK ||
        (st = audit_number(section, "audit_keep", 0, 1000, 1, &keep, err)) != CV_OK ||
        (st = audit_number(section, "audit_interval_s", 0.1, 3600, 0, &interval, err)) != CV_OK ||
        (st = audit_number(section, "audit_max_keys", 1, 1000000, 1, &max_keys, err)) != CV_OK)
        return st;
    if (!log) return CV_OK;
    if (!json_is_string(log))
        return cv_errorf(err, CV_EINVAL, "auth.audit_log: not a string (a path, or \"-\" for stderr)");
    if ((st = cv_audit_open(json_string_value(log), &a->audit, err)) != CV_OK) return st;
    if (opt && opt->pii) cv_audit_set_pii(a->audit, opt->pii);
    cv_audit_set_rotation(a->audit, (unsigned long long)(max_mb * 1048576.0), (unsigned)keep);
    cv_audit_tally_config tc = {interval, (unsigned)max_keys};
    return cv_audit_tally_new(a->audit, &tc, &a->failures, err);
}

cv_status cv_auth_new(const json_t *section, const cv_auth_options *opt, cv_auth **out,
                      cv_error *err) {
    static const char *const keys[] = {"jwt", "allowlist", "rate_limit", "audit_log", "audit_max_mb",
                                       "audit_keep", "audit_interval_s", "audit_max_keys", NULL};
    cv_auth *a = calloc(1, sizeof *a);
    if (!a) return cv_errorf(err, CV_ENOMEM, "auth: out of memory");
    cv_status st = cv_allowlist_new(&a->allow, err);
    if (st != CV_OK || !section) goto done;
    if (!json_is_object(section)) {
        st = cv_errorf(err, CV_EINVAL, "auth: not an object");
        goto done;
    }
    if ((st = only_keys(section, "auth", keys, err)) != CV_OK) goto done;
    const json_t *jwt = json_object_get(section, "jwt");
    if (jwt && (st = parse_jwt(a, jwt, opt, err)) != CV_OK) goto done;
    if ((st = parse_allowlist(a, json_object_get(section, "allowlist"), err)) != CV_OK) goto done;
    if ((st = parse_rate_limit(a, json_object_get(section, "rate_limit"), opt, err)) != CV_OK) goto done;
    st = parse_audit(a, section, opt, err);
done:
    if (st != CV_OK) {
        cv_auth_free(a);
        return st;
    }
    *out = a;
    return CV_OK;
}

cv_status cv_auth_load_file(const char *path, const cv_auth_options *opt, cv_auth **out,
                            cv_error *err) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return cv_errorf(err, CV_EFORMAT, "auth config %s: line %d column %d: %s", path, je.line,
                         je.column, cv_json_error_text(&je));
    cv_status st = cv_auth_new(j, opt, out, err);
    json_decref(j);
    return st == CV_OK ? st : cv_error_wrap(err, "auth config %s", path);
}

void cv_auth_free(cv_auth *a) {
    if (!a) return;
    cv_jwt_verifier_free(a->jwt);
    cv_allowlist_free(a->allow);
    cv_ratelimit_free(a->rl);
    cv_audit_tally_free(a->failures); /* writes the last interval's counts */
    cv_audit_close(a->audit);
    free(a);
}

cv_audit *cv_auth_audit(cv_auth *a) { return a->audit; }
int cv_auth_requires_token(const cv_auth *a) { return a->jwt != NULL; }

/* ---- the per-call check ---- */

/* Audit outcomes keep the names operators already grep for: the gRPC codes. */
static const char *verdict_name(cv_auth_verdict v) {
    switch (v) {
    case CV_AUTH_UNAUTHENTICATED: return "UNAUTHENTICATED";
    case CV_AUTH_DENIED: return "PERMISSION_DENIED";
    case CV_AUTH_RATE_LIMITED: return "RESOURCE_EXHAUSTED";
    default: return "OK";
    }
}

/* The scope a method needs; -1 for the health service (no check at all). */
static int method_scope(const char *m) {
    if (strncmp(m, "/grpc.health.v1.Health/", 23) == 0) return -1;
    if (strncmp(m, "/corvid.v1.Inference/", 21) == 0) return CV_SCOPE_INFERENCE;
    /* The OpenAI-compatible HTTP API (openai_service.h) passes its path as the method. */
    if (strncmp(m, "/v1/", 4) == 0) return CV_SCOPE_INFERENCE;
    return CV_SCOPE_ADMIN;
}

/* The call being checked: what a refusal reports and counts. */
typedef struct call_info {
    const char *method, *peer;
    const char *addr;  /* the client's IP, else the peer string: the tally's key */
} call_info;

/* Fills res; auth failures (not rate-limit refusals, which the rate limit already
 * bounds and the metrics count) go to the tally under reason, a fixed word. */
static cv_auth_verdict refuse(cv_auth *a, const call_info *c, cv_auth_result *res, cv_auth_verdict code,
                              const char *reason, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static cv_auth_verdict refuse(cv_auth *a, const call_info *c, cv_auth_result *res, cv_auth_verdict code,
                              const char *reason, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
    res->verdict = code;
    if (a->failures && code != CV_AUTH_RATE_LIMITED) {
        cv_audit_entry e = {CV_AUDIT_AUTH_FAILURE, res->subject[0] ? res->subject : NULL, c->peer,
                            c->method, verdict_name(code), res->message, NULL};
        cv_audit_tally_add(a->failures, c->addr, reason, &e);
    }
    return code;
}

/* The token after "Bearer " (scheme case-insensitive, RFC 6750), trimmed; *len 0 when
 * the scheme comes without a token; NULL if the scheme is another one. */
static const char *bearer_token(const char *v, size_t *len) {
    while (*v == ' ' || *v == '\t') v++;
    if (strncasecmp(v, "bearer", 6) != 0 || (v[6] && v[6] != ' ' && v[6] != '\t')) return NULL;
    v += 6;
    while (*v == ' ' || *v == '\t') v++;
    size_t n = strlen(v);
    while (n && isspace((unsigned char)v[n - 1])) n--;
    *len = n;
    return v;
}

static void scope_names(unsigned s, char buf[32]) {
    snprintf(buf, 32, "%s%s%s", s & CV_SCOPE_INFERENCE ? "inference" : "",
             (s & CV_SCOPE_INFERENCE) && (s & CV_SCOPE_ADMIN) ? " " : "",
             s & CV_SCOPE_ADMIN ? "admin" : "");
    if (!s) snprintf(buf, 32, "no known scope");
}

cv_auth_verdict cv_auth_check(cv_auth *a, const char *method, const char *authorization,
                          const char *peer, cv_auth_result *res) {
    memset(res, 0, sizeof *res);
    int need = method_scope(method);
    if (need < 0) return CV_AUTH_ALLOW;
    cv_ip ip;
    cv_error e = {0};
    int have_ip = cv_ip_parse_peer(peer, &ip, &e) == CV_OK;
    char ip_text[64] = "";
    if (have_ip) cv_ip_format(&ip, ip_text);
    call_info ci = {method, peer, have_ip ? ip_text : peer};

    if (cv_allowlist_count(a->allow)) {
        if (!have_ip)
            return refuse(a, &ci, res, CV_AUTH_DENIED, "not_ip_client",
                          "the allowlist admits IP clients only: %s", e.msg);
        if (!cv_allowlist_allows(a->allow, &ip))
            return refuse(a, &ci, res, CV_AUTH_DENIED, "not_in_allowlist",
                          "client address %s is not in the allowlist", ip_text);
    }
    if (a->jwt) {
        if (!authorization || !*authorization)
            return refuse(a, &ci, res, CV_AUTH_UNAUTHENTICATED, "no_token",
                          "missing authorization metadata: send 'authorization: Bearer <JWT>'");
        size_t len = 0;
        const char *tok = bearer_token(authorization, &len);
        if (!tok) {
            char scheme[20];
            size_t n = strcspn(authorization, " \t");
            snprintf(scheme, sizeof scheme, "%.*s", (int)(n < 16 ? n : 16), authorization);
            for (char *c = scheme; *c; c++)
                if (!isalnum((unsigned char)*c) && *c != '-') *c = '?';
            return refuse(a, &ci, res, CV_AUTH_UNAUTHENTICATED, "bad_scheme",
                          "authorization scheme '%s' is not supported: use Bearer", scheme);
        }
        if (len == 0)
            return refuse(a, &ci, res, CV_AUTH_UNAUTHENTICATED, "no_token",
                          "the Bearer token is missing: send 'authorization: Bearer <JWT>'");
        cv_jwt_claims c;
        if (cv_jwt_verify(a->jwt, tok, len, &c, &e) != CV_OK)
            return refuse(a, &ci, res, CV_AUTH_UNAUTHENTICATED, "invalid_token", "invalid token: %s", e.msg);
        memcpy(res->subject, c.subject, sizeof res->subject);
        res->scopes = c.scopes;
        if (!(c.scopes & (unsigned)need)) {
            char have[32];
            scope_names(c.scopes, have);
            return refuse(a, &ci, res, CV_AUTH_DENIED, "missing_scope",
                          "%.200s needs scope %s; the token of '%.64s' has %s", method,
                          need == CV_SCOPE_ADMIN ? "admin" : "inference", c.subject, have);
        }
    }
    if (a->rl) {
        char key[CV_RATELIMIT_KEY_MAX + 1];  /* longer peers are cut, like in the table */
        if (res->subject[0]) snprintf(key, sizeof key, "sub:%s", res->subject);
        else if (have_ip) snprintf(key, sizeof key, "ip:%s", ip_text);
        else snprintf(key, sizeof key, "peer:%s", peer);
        double wait = 0;
        if (!cv_ratelimit_take(a->rl, key, &wait)) {
            res->retry_after_s = wait;
            return refuse(a, &ci, res, CV_AUTH_RATE_LIMITED, "rate_limited",
                          "rate limit of %g requests/s (burst %g) reached for %s %.64s; retry in %.2f s",
                          a->rl_rate, a->rl_burst, res->subject[0] ? "subject" : "client",
                          res->subject[0] ? res->subject : have_ip ? ip_text : peer, wait);
        }
    }
    return CV_AUTH_ALLOW;
}
