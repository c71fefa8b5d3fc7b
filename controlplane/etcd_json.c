#include "etcd_json.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

cv_status cv_etcd_json_set_b64(json_t *obj, const char *field, const void *data, size_t len) {
    if (len > INT_MAX / 2) return CV_ERANGE;
    char *enc = malloc(4 * ((len + 2) / 3) + 1);
    if (!enc) return CV_ENOMEM;
    EVP_EncodeBlock((unsigned char *)enc, data, (int)len);
    int rc = json_object_set_new(obj, field, json_string(enc));
    free(enc);
    return rc ? CV_ENOMEM : CV_OK;
}

cv_status cv_etcd_json_set_i64(json_t *obj, const char *field, int64_t v) {
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, v);
    return json_object_set_new(obj, field, json_string(s)) ? CV_ENOMEM : CV_OK;
}

cv_status cv_etcd_json_set_range(json_t *obj, const char *key, bool prefix) {
    size_t n = strlen(key);
    cv_status st = cv_etcd_json_set_b64(obj, "key", key, n);
    if (st || !prefix) return st;
    char *end = malloc(n + 1);
    if (!end) return CV_ENOMEM;
    memcpy(end, key, n);
    /* Drop trailing 0xff bytes, then increment the last one; none left means the
     * prefix covers the whole keyspace, which etcd spells range_end "\0". */
    size_t m = n;
    while (m > 0 && (unsigned char)end[m - 1] == 0xff) m--;
    if (m == 0) {
        end[0] = 0;
        m = 1;
    } else {
        end[m - 1] = (char)((unsigned char)end[m - 1] + 1);
    }
    st = cv_etcd_json_set_b64(obj, "range_end", end, m);
    free(end);
    return st;
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

cv_status cv_etcd_json_b64(const json_t *obj, const char *field, char **out, size_t *len,
                           cv_error *err) {
    *out = NULL;
    *len = 0;
    const json_t *v = json_object_get(obj, field);
    const char *s = "";
    size_t n = 0;
    if (v) {
        if (!json_is_string(v))
            return cv_errorf(err, CV_EFORMAT, "field \"%s\" is %s, expected a base64 string",
                             field, type_name(v));
        s = json_string_value(v);
        n = json_string_length(v);
    }
    if (n % 4 != 0 || n > INT_MAX)
        return cv_errorf(err, CV_EFORMAT, "field \"%s\": base64 length %zu is not a multiple of 4",
                         field, n);
    char *buf = malloc(n / 4 * 3 + 1);
    if (!buf) return cv_errorf(err, CV_ENOMEM, "field \"%s\": %zu bytes", field, n / 4 * 3 + 1);
    int m = 0;
    if (n > 0) {
        /* EVP_DecodeBlock skips whitespace and misreads '=' inside the text; the
         * gateway sends neither, so the alphabet is checked here first. */
        size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
        for (size_t i = 0; i < n - pad; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (!(ch == '+' || ch == '/' || (ch >= '0' && ch <= '9') ||
                  (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'))) {
                free(buf);
                return cv_errorf(err, CV_EFORMAT, "field \"%s\": byte 0x%02x at %zu is not base64",
                                 field, ch, i);
            }
        }
        m = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)s, (int)n);
        if (m < 0) {
            free(buf);
            return cv_errorf(err, CV_EFORMAT, "field \"%s\": invalid base64 \"%.40s\"", field, s);
        }
        m -= (int)pad; /* EVP_DecodeBlock counts the zero bytes that padding stands for */
    }
    buf[m] = 0;
    *out = buf;
    *len = (size_t)m;
    return CV_OK;
}

cv_status cv_etcd_json_i64(const json_t *obj, const char *field, int64_t *out, cv_error *err) {
    *out = 0;
    const json_t *v = json_object_get(obj, field);
    if (!v) return CV_OK;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return CV_OK;
    }
    if (!json_is_string(v))
        return cv_errorf(err, CV_EFORMAT, "field \"%s\" is %s, expected an int64 string", field,
                         type_name(v));
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || json_string_length(v) != (size_t)(end - s))
        return cv_errorf(err, CV_EFORMAT, "field \"%s\": \"%.40s\" is not an int64", field, s);
    *out = x;
    return CV_OK;
}

/* cluster_id and member_id are uint64 and may exceed INT64_MAX. */
static cv_status json_u64(const json_t *obj, const char *field, uint64_t *out, cv_error *err) {
    *out = 0;
    const json_t *v = json_object_get(obj, field);
    if (!v) return CV_OK;
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return CV_OK;
    }
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    if (!s || *s == '-' || (*out = strtoull(s, &end, 10), errno) || end == s || *end)
        return cv_errorf(err, CV_EFORMAT, "field \"%s\" is not a uint64 string", field);
    return CV_OK;
}

cv_status cv_etcd_json_header(const json_t *obj, cv_etcd_header *h, cv_error *err) {
    memset(h, 0, sizeof *h);
    const json_t *hdr = json_object_get(obj, "header");
    if (!hdr) return CV_OK;
    if (!json_is_object(hdr))
        return cv_errorf(err, CV_EFORMAT, "field \"header\" is %s, expected an object",
                         type_name(hdr));
    cv_status st;
    if ((st = cv_etcd_json_i64(hdr, "revision", &h->revision, err)) ||
        (st = cv_etcd_json_i64(hdr, "raft_term", &h->raft_term, err)) ||
        (st = json_u64(hdr, "cluster_id", &h->cluster_id, err)) ||
        (st = json_u64(hdr, "member_id", &h->member_id, err)))
        return cv_error_wrap(err, "header");
    return CV_OK;
}

cv_status cv_etcd_json_kv(const json_t *obj, cv_etcd_kv *kv, cv_error *err) {
    memset(kv, 0, sizeof *kv);
    if (!json_is_object(obj))
        return cv_errorf(err, CV_EFORMAT, "key-value is %s, expected an object", type_name(obj));
    cv_status st;
    if ((st = cv_etcd_json_b64(obj, "key", &kv->key, &kv->key_len, err)) ||
        (st = cv_etcd_json_b64(obj, "value", &kv->value, &kv->value_len, err)) ||
        (st = cv_etcd_json_i64(obj, "create_revision", &kv->create_revision, err)) ||
        (st = cv_etcd_json_i64(obj, "mod_revision", &kv->mod_revision, err)) ||
        (st = cv_etcd_json_i64(obj, "version", &kv->version, err)) ||
        (st = cv_etcd_json_i64(obj, "lease", &kv->lease, err))) {
        cv_etcd_kv_free(kv);
        return st;
    }
    return CV_OK;
}

cv_status cv_etcd_json_range(const json_t *obj, cv_etcd_range_result *r, cv_error *err) {
    memset(r, 0, sizeof *r);
    cv_status st;
    if ((st = cv_etcd_json_header(obj, &r->header, err)) ||
        (st = cv_etcd_json_i64(obj, "count", &r->count, err)))
        return st;
    r->more = json_is_true(json_object_get(obj, "more"));
    const json_t *kvs = json_object_get(obj, "kvs");
    if (!kvs) return CV_OK;
    if (!json_is_array(kvs))
        return cv_errorf(err, CV_EFORMAT, "field \"kvs\" is %s, expected an array", type_name(kvs));
    size_t n = json_array_size(kvs);
    if (n == 0) return CV_OK;
    r->kvs = calloc(n, sizeof *r->kvs);
    if (!r->kvs) return cv_errorf(err, CV_ENOMEM, "range result: %zu key-values", n);
    for (size_t i = 0; i < n; i++) {
        if ((st = cv_etcd_json_kv(json_array_get(kvs, i), &r->kvs[i], err))) {
            cv_etcd_range_result_free(r);
            return cv_error_wrap(err, "kvs[%zu]", i);
        }
        r->n_kvs = i + 1;
    }
    return CV_OK;
}

bool cv_etcd_json_error(const json_t *obj, int *grpc_code, const char **message) {
    const json_t *e = json_object_get(obj, "error");
    if (!e) return false;
    const json_t *src = json_is_object(e) ? e : obj;
    const json_t *code = json_object_get(src, json_is_object(e) ? "grpc_code" : "code");
    const char *msg = json_string_value(json_object_get(src, "message"));
    if (!msg) msg = json_is_string(e) ? json_string_value(e) : "no message";
    *grpc_code = json_is_integer(code) ? (int)json_integer_value(code) : 2 /* Unknown */;
    *message = msg;
    return true;
}
