#include "etcd.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd_json.h"

#define POOL_MAX 8
#define ENDPOINT_ERR 200

struct cv_etcd {
    cv_etcd_config cfg;
    char *urls[CV_ETCD_MAX_ENDPOINTS];
    size_t n_urls;
    atomic_size_t preferred;
    pthread_mutex_t mu; /* guards pool */
    CURL *pool[POOL_MAX];
    size_t n_pool;
    atomic_uint_fast64_t failed_calls;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static uint64_t rng_next(uint64_t *s) {
    /* xorshift64*: jitter only needs to decorrelate clients, not be secure. */
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

int cv_etcd_backoff_ms(const cv_etcd_config *cfg, unsigned round, uint64_t *rng) {
    int64_t cap = cfg->backoff_base_ms;
    for (unsigned i = 0; i < round && cap < cfg->backoff_max_ms; i++) cap *= 2;
    if (cap > cfg->backoff_max_ms) cap = cfg->backoff_max_ms;
    if (cap <= 0) return 0;
    return (int)(rng_next(rng) % (uint64_t)(cap + 1));
}

cv_status cv_etcd_grpc_status(int code) {
    switch (code) {
    case 0: return CV_OK;
    case 1: return CV_ECANCELLED;
    case 3: case 6: case 9: return CV_EINVAL;
    case 4: return CV_ETIMEOUT;
    case 5: return CV_ENOTFOUND;
    case 7: return CV_EPERM;
    case 8: case 10: return CV_EBUSY;
    case 11: return CV_ERANGE;
    case 12: return CV_EUNSUPPORTED;
    case 14: return CV_EUNAVAILABLE;
    case 16: return CV_EAUTH;
    default: return CV_EIO; /* Unknown, Internal, DataLoss */
    }
}

static cv_status parse_endpoints(cv_etcd *c, const char *list, cv_error *err) {
    if (!list || !*list) return cv_errorf(err, CV_EINVAL, "etcd: no endpoints given");
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p;
        p += n + (p[n] == ',');
        while (n && (*s == ' ')) s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '/')) n--;
        if (!n) continue;
        if (c->n_urls == CV_ETCD_MAX_ENDPOINTS)
            return cv_errorf(err, CV_ERANGE, "etcd: more than %d endpoints in \"%.200s\"",
                             CV_ETCD_MAX_ENDPOINTS, list);
        if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
            return cv_errorf(err, CV_EINVAL, "etcd: endpoint \"%.*s\" is not an http:// or https:// URL",
                             (int)(n > 200 ? 200 : n), s);
        if (!(c->urls[c->n_urls] = strndup(s, n)))
            return cv_errorf(err, CV_ENOMEM, "etcd: endpoint copy");
        c->n_urls++;
    }
    if (!c->n_urls) return cv_errorf(err, CV_EINVAL, "etcd: no endpoint in \"%.200s\"", list);
    return CV_OK;
}

cv_status cv_etcd_open(const cv_etcd_config *cfg, cv_etcd **out, cv_error *err) {
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return cv_errorf(err, CV_EIO, "etcd: curl_global_init: %s", curl_easy_strerror(curl_init_rc));
    cv_etcd *c = calloc(1, sizeof *c);
    if (!c) return cv_errorf(err, CV_ENOMEM, "etcd: client");
    c->cfg = *cfg;
    c->cfg.endpoints = NULL; /* the caller's string is not kept */
    if (c->cfg.timeout_ms <= 0) c->cfg.timeout_ms = 5000;
    if (c->cfg.attempt_timeout_ms <= 0) c->cfg.attempt_timeout_ms = 2000;
    if (c->cfg.connect_timeout_ms <= 0) c->cfg.connect_timeout_ms = 500;
    if (c->cfg.backoff_base_ms <= 0) c->cfg.backoff_base_ms = 25;
    if (c->cfg.backoff_max_ms <= 0) c->cfg.backoff_max_ms = 1000;
    if (c->cfg.max_response == 0) c->cfg.max_response = (size_t)64 << 20;
    pthread_mutex_init(&c->mu, NULL);
    cv_status st = parse_endpoints(c, cfg->endpoints, err);
    if (st) {
        cv_etcd_close(c);
        return st;
    }
    *out = c;
    return CV_OK;
}

void cv_etcd_close(cv_etcd *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_pool; i++) curl_easy_cleanup(c->pool[i]);
    for (size_t i = 0; i < c->n_urls; i++) free(c->urls[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

uint64_t cv_etcd_failed_calls(cv_etcd *c) { return atomic_load(&c->failed_calls); }

size_t cv_etcd_endpoint_count(const cv_etcd *c) { return c->n_urls; }
const char *cv_etcd_endpoint(const cv_etcd *c, size_t i) { return c->urls[i % c->n_urls]; }
size_t cv_etcd_preferred(const cv_etcd *c) { return atomic_load(&c->preferred) % c->n_urls; }
void cv_etcd_set_preferred(cv_etcd *c, size_t i) { atomic_store(&c->preferred, i % c->n_urls); }
const cv_etcd_config *cv_etcd_get_config(const cv_etcd *c) { return &c->cfg; }

/* Curl handles are pooled so that each keeps its connection alive between calls. */
static CURL *borrow(cv_etcd *c) {
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->n_pool) h = c->pool[--c->n_pool];
    pthread_mutex_unlock(&c->mu);
    return h ? h : curl_easy_init();
}

static void give_back(cv_etcd *c, CURL *h) {
    pthread_mutex_lock(&c->mu);
    if (c->n_pool < POOL_MAX) {
        c->pool[c->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h) curl_easy_cleanup(h);
}

typedef struct body_buf {
    char *p;
    size_t n, cap, max;
    bool overflow;
} body_buf;

static size_t body_write(char *d, size_t sz, size_t nm, void *ud) {
    body_buf *b = ud;
    size_t len = sz * nm;
    if (len > b->max - b->n) {
        b->overflow = true;
        return 0;
    }
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, len);
    b->n += len;
    b->p[b->n] = 0;
    return len;
}

typedef enum { ATT_OK, ATT_FATAL, ATT_NOT_SENT, ATT_AMBIGUOUS } att_outcome;

/* One HTTP exchange with one endpoint, classified for the retry loop. */
static att_outcome attempt(cv_etcd *c, CURL *h, const char *base, const char *path, const char *body,
                           int64_t timeout_ms, json_t **resp, cv_error *e) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    body_buf b = {.max = c->cfg.max_response};
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!hdrs) {
        cv_errorf(e, CV_ENOMEM, "%s: header list", base);
        return ATT_FATAL;
    }
    curl_easy_reset(h); /* keeps the live connection */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(timeout_ms < c->cfg.connect_timeout_ms ? timeout_ms : c->cfg.connect_timeout_ms));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    att_outcome out = ATT_OK;
    json_t *j = NULL;
    if (rc != CURLE_OK) {
        const char *why = curl_err[0] ? curl_err : curl_easy_strerror(rc);
        if (b.overflow) {
            cv_errorf(e, CV_ERANGE, "%s: response larger than %zu bytes", base, b.max);
            out = ATT_FATAL;
        } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
            cv_errorf(e, CV_EUNAVAILABLE, "%s: %s", base, why);
            out = ATT_NOT_SENT;
        } else {
            /* A reused connection has no connect time of its own, hence both checks. */
            curl_off_t connect_us = 0;
            long sent = 0;
            curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
            curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent);
            cv_errorf(e, rc == CURLE_OPERATION_TIMEDOUT ? CV_ETIMEOUT : CV_EUNAVAILABLE, "%s: %s",
                      base, why);
            out = connect_us == 0 && sent == 0 ? ATT_NOT_SENT : ATT_AMBIGUOUS;
        }
        goto done;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_error_t jerr;
    j = json_loadb(b.p ? b.p : "", b.n, 0, &jerr);
    int code;
    const char *msg;
    if (j && cv_etcd_json_error(j, &code, &msg)) {
        cv_status st = cv_etcd_grpc_status(code);
        cv_errorf(e, st ? st : CV_EIO, "%s: HTTP %ld: %s (gRPC code %d)", base, status, msg, code);
        out = (code == 14 || code == 4) ? ATT_AMBIGUOUS : ATT_FATAL;
    } else if (status != 200) {
        cv_errorf(e, status >= 500 ? CV_EUNAVAILABLE : CV_EIO, "%s: HTTP %ld: %.120s", base, status,
                  b.p ? b.p : "(empty body)");
        out = status >= 500 ? ATT_AMBIGUOUS : ATT_FATAL;
    } else if (!j || !json_is_object(j)) {
        cv_errorf(e, CV_EFORMAT, "%s: response is not a JSON object (line %d col %d: %s)", base,
                  jerr.line, jerr.column, j ? "not an object" : jerr.text);
        out = ATT_FATAL;
    }
done:
    free(b.p);
    if (out == ATT_OK) *resp = j;
    else json_decref(j);
    return out;
}

/* Sends req to the endpoints in turn until one answers or the deadline passes.
 * `what` names the call in error messages. */
static cv_status call(cv_etcd *c, const char *what, const char *path, json_t *req, bool idempotent,
                      json_t **resp, cv_error *err) {
    *resp = NULL;
    char *body = json_dumps(req, JSON_COMPACT);
    if (!body) return cv_errorf(err, CV_ENOMEM, "etcd %s: request encoding", what);
    CURL *h = borrow(c);
    if (!h) {
        free(body);
        return cv_errorf(err, CV_ENOMEM, "etcd %s: curl_easy_init failed", what);
    }
    char seen[CV_ETCD_MAX_ENDPOINTS][ENDPOINT_ERR] = {{0}};
    int64_t start = now_ms(), deadline = start + c->cfg.timeout_ms;
    uint64_t rng = (uint64_t)start * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&rng;
    size_t idx = cv_etcd_preferred(c), tried = 0;
    unsigned round = 0, attempts = 0;
    cv_status st = CV_ETIMEOUT;
    cv_error e = {0};
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) break;
        int64_t t = left < c->cfg.attempt_timeout_ms ? left : c->cfg.attempt_timeout_ms;
        att_outcome o = attempt(c, h, c->urls[idx], path, body, t, resp, &e);
        attempts++;
        if (o == ATT_OK) {
            cv_etcd_set_preferred(c, idx);
            st = CV_OK;
            goto out;
        }
        if (o == ATT_FATAL || (o == ATT_AMBIGUOUS && !idempotent)) {
            st = cv_errorf(err, e.code, "etcd %s: %s", what, e.msg);
            goto out;
        }
        snprintf(seen[idx], ENDPOINT_ERR, "%.*s", ENDPOINT_ERR - 1, e.msg);
        st = e.code;
        idx = (idx + 1) % c->n_urls;
        if (++tried % c->n_urls == 0) {
            int d = cv_etcd_backoff_ms(&c->cfg, round++, &rng);
            if (now_ms() + d >= deadline) break;
            sleep_ms(d);
        }
    }
    /* Out of time: say what every endpoint answered last. */
    {
        char list[sizeof err->msg] = "";
        size_t used = 0;
        for (size_t i = 0; i < c->n_urls && used < sizeof list; i++) {
            if (!seen[i][0]) continue;
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? "; " : "", seen[i]);
        }
        cv_errorf(err, st, "etcd %s: no endpoint answered within %d ms (%u attempts): %s", what,
                  c->cfg.timeout_ms, attempts, list[0] ? list : e.msg);
    }
out:
    if (st) atomic_fetch_add(&c->failed_calls, 1);
    give_back(c, h);
    free(body);
    return st;
}

static cv_status check(cv_status st, cv_error *err, const char *what) {
    return st ? cv_error_wrap(err, "etcd %s: response", what) : CV_OK;
}

cv_status cv_etcd_range(cv_etcd *c, const cv_etcd_range_req *req, cv_etcd_range_result *out,
                        cv_error *err) {
    memset(out, 0, sizeof *out);
    char what[300];
    snprintf(what, sizeof what, "range \"%.200s\"%s", req->key, req->prefix ? " (prefix)" : "");
    json_t *j = json_object(), *resp = NULL;
    cv_status st = CV_ENOMEM;
    if (!j || cv_etcd_json_set_range(j, req->key, req->prefix) ||
        (req->limit && cv_etcd_json_set_i64(j, "limit", req->limit)) ||
        (req->revision && cv_etcd_json_set_i64(j, "revision", req->revision))) {
        cv_errorf(err, st, "etcd %s: request", what);
        goto out;
    }
    if ((st = call(c, what, "/v3/kv/range", j, true, &resp, err))) goto out;
    st = check(cv_etcd_json_range(resp, out, err), err, what);
out:
    json_decref(j);
    json_decref(resp);
    return st;
}

cv_status cv_etcd_get(cv_etcd *c, const char *key, cv_etcd_kv *out, cv_etcd_header *header,
                      cv_error *err) {
    memset(out, 0, sizeof *out);
    cv_etcd_range_req req = {.key = key};
    cv_etcd_range_result r;
    cv_status st = cv_etcd_range(c, &req, &r, err);
    if (st) return st;
    if (header) *header = r.header;
    if (r.n_kvs == 0) {
        st = cv_errorf(err, CV_ENOTFOUND, "etcd get \"%.200s\": no such key at revision %" PRId64,
                       key, r.header.revision);
    } else {
        *out = r.kvs[0];
        memset(&r.kvs[0], 0, sizeof r.kvs[0]);
    }
    cv_etcd_range_result_free(&r);
    return st;
}

static cv_status set_put(json_t *j, const char *key, const char *value, size_t value_len, int64_t lease) {
    cv_status st;
    if ((st = cv_etcd_json_set_b64(j, "key", key, strlen(key))) ||
        (st = cv_etcd_json_set_b64(j, "value", value, value_len)))
        return st;
    return lease ? cv_etcd_json_set_i64(j, "lease", lease) : CV_OK;
}

/* Runs a request whose only result of interest is the header (and a count). */
static cv_status simple_call(cv_etcd *c, const char *what, const char *path, json_t *j, bool idempotent,
                             cv_etcd_header *header, const char *count_field, int64_t *count,
                             cv_error *err) {
    json_t *resp = NULL;
    cv_etcd_header h;
    cv_status st = call(c, what, path, j, idempotent, &resp, err);
    if (!st) st = check(cv_etcd_json_header(resp, &h, err), err, what);
    if (!st && count) st = check(cv_etcd_json_i64(resp, count_field, count, err), err, what);
    if (!st && header) *header = h;
    json_decref(resp);
    return st;
}

cv_status cv_etcd_put(cv_etcd *c, const char *key, const char *value, size_t value_len,
                      int64_t lease, cv_etcd_header *header, cv_error *err) {
    char what[300];
    snprintf(what, sizeof what, "put \"%.200s\"", key);
    json_t *j = json_object();
    cv_status st;
    if (!j || set_put(j, key, value, value_len, lease)) st = cv_errorf(err, CV_ENOMEM, "etcd %s: request", what);
    else st = simple_call(c, what, "/v3/kv/put", j, false, header, NULL, NULL, err);
    json_decref(j);
    return st;
}

cv_status cv_etcd_delete(cv_etcd *c, const char *key, bool prefix, int64_t *deleted,
                         cv_etcd_header *header, cv_error *err) {
    char what[300];
    snprintf(what, sizeof what, "delete \"%.200s\"%s", key, prefix ? " (prefix)" : "");
    int64_t n = 0;
    json_t *j = json_object();
    cv_status st;
    if (!j || cv_etcd_json_set_range(j, key, prefix)) st = cv_errorf(err, CV_ENOMEM, "etcd %s: request", what);
    else st = simple_call(c, what, "/v3/kv/deleterange", j, false, header, "deleted", &n, err);
    json_decref(j);
    if (deleted) *deleted = n;
    return st;
}

cv_status cv_etcd_compact(cv_etcd *c, int64_t revision, cv_error *err) {
    json_t *j = json_object();
    cv_status st;
    if (!j || cv_etcd_json_set_i64(j, "revision", revision) ||
        json_object_set_new(j, "physical", json_true()))
        st = cv_errorf(err, CV_ENOMEM, "etcd compact: request");
    else st = simple_call(c, "compact", "/v3/kv/compaction", j, false, NULL, NULL, NULL, err);
    json_decref(j);
    return st;
}

static const char *const CMP_TARGETS[] = {"VERSION", "CREATE", "MOD", "VALUE"};
static const char *const CMP_FIELDS[] = {"version", "create_revision", "mod_revision", "value"};
static const char *const CMP_RESULTS[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
static const char *const OP_REQ[] = {"request_range", "request_put", "request_delete_range"};
static const char *const OP_RESP[] = {"response_range", "response_put", "response_delete_range"};

static json_t *encode_cmp(const cv_etcd_cmp *m) {
    json_t *o = json_object();
    if (!o || (unsigned)m->target > CV_ETCD_CMP_VALUE || (unsigned)m->result > CV_ETCD_NOT_EQUAL ||
        cv_etcd_json_set_b64(o, "key", m->key, strlen(m->key)) ||
        json_object_set_new(o, "target", json_string(CMP_TARGETS[m->target])) ||
        json_object_set_new(o, "result", json_string(CMP_RESULTS[m->result])) ||
        (m->target == CV_ETCD_CMP_VALUE
             ? cv_etcd_json_set_b64(o, "value", m->value, m->value_len)
             : cv_etcd_json_set_i64(o, CMP_FIELDS[m->target], m->number))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *encode_op(const cv_etcd_op *op) {
    json_t *o = json_object(), *inner = json_object();
    if (!o || !inner || (unsigned)op->type > CV_ETCD_OP_DELETE) goto fail;
    cv_status st = op->type == CV_ETCD_OP_PUT
                       ? set_put(inner, op->key, op->value, op->value_len, op->lease)
                       : cv_etcd_json_set_range(inner, op->key, op->prefix);
    if (st || json_object_set(o, OP_REQ[op->type], inner)) goto fail;
    json_decref(inner);
    return o;
fail:
    json_decref(o);
    json_decref(inner);
    return NULL;
}

static json_t *encode_list(const void *items, size_t n, size_t size, json_t *(*enc)(const void *)) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, enc((const char *)items + i * size))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *enc_cmp(const void *p) { return encode_cmp(p); }
static json_t *enc_op(const void *p) { return encode_op(p); }

static cv_status decode_txn(const json_t *resp, const cv_etcd_op *ops, size_t n_ops,
                            cv_etcd_txn_result *out, cv_error *err) {
    cv_status st = cv_etcd_json_header(resp, &out->header, err);
    if (st) return st;
    out->succeeded = json_is_true(json_object_get(resp, "succeeded"));
    const json_t *rs = json_object_get(resp, "responses");
    size_t n = json_array_size(rs);
    if (n != n_ops)
        return cv_errorf(err, CV_EFORMAT, "%zu responses for the %zu ops of the %s branch", n,
                         n_ops, out->succeeded ? "success" : "failure");
    if (!n) return CV_OK;
    if (!(out->results = calloc(n, sizeof *out->results)))
        return cv_errorf(err, CV_ENOMEM, "txn: %zu results", n);
    out->n_results = n;
    for (size_t i = 0; i < n; i++) {
        cv_etcd_op_result *r = &out->results[i];
        r->type = ops[i].type;
        const json_t *body = json_object_get(json_array_get(rs, i), OP_RESP[r->type]);
        if (!json_is_object(body))
            return cv_errorf(err, CV_EFORMAT, "responses[%zu]: no \"%s\" object", i, OP_RESP[r->type]);
        if (r->type == CV_ETCD_OP_RANGE) st = cv_etcd_json_range(body, &r->range, err);
        else if (r->type == CV_ETCD_OP_DELETE) st = cv_etcd_json_i64(body, "deleted", &r->deleted, err);
        if (st) return cv_error_wrap(err, "responses[%zu]", i);
    }
    return CV_OK;
}

cv_status cv_etcd_txn(cv_etcd *c, const cv_etcd_cmp *cmps, size_t n_cmps,
                      const cv_etcd_op *success, size_t n_success, const cv_etcd_op *failure,
                      size_t n_failure, cv_etcd_txn_result *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    char what[300];
    snprintf(what, sizeof what, "txn (%zu compares, first key \"%.200s\")", n_cmps,
             n_cmps ? cmps[0].key : n_success ? success[0].key : "");
    json_t *j = json_object(), *resp = NULL;
    cv_status st = CV_ENOMEM;
    if (!j || json_object_set_new(j, "compare", encode_list(cmps, n_cmps, sizeof *cmps, enc_cmp)) ||
        json_object_set_new(j, "success", encode_list(success, n_success, sizeof *success, enc_op)) ||
        json_object_set_new(j, "failure", encode_list(failure, n_failure, sizeof *failure, enc_op))) {
        cv_errorf(err, CV_EINVAL, "etcd %s: cannot encode the request (bad target, result or op type, or out of memory)", what);
        st = CV_EINVAL;
        goto out;
    }
    if ((st = call(c, what, "/v3/kv/txn", j, false, &resp, err))) goto out;
    bool ok = json_is_true(json_object_get(resp, "succeeded"));
    st = decode_txn(resp, ok ? success : failure, ok ? n_success : n_failure, out, err);
    if (st) {
        cv_etcd_txn_result_free(out);
        check(st, err, what);
    }
out:
    json_decref(j);
    json_decref(resp);
    return st;
}

static cv_status lease_call(cv_etcd *c, const char *what, const char *path, const char *field,
                            int64_t v, bool idempotent, json_t **resp, cv_error *err) {
    json_t *j = json_object();
    cv_status st;
    if (!j || cv_etcd_json_set_i64(j, field, v)) st = cv_errorf(err, CV_ENOMEM, "etcd %s: request", what);
    else st = call(c, what, path, j, idempotent, resp, err);
    json_decref(j);
    return st;
}

cv_status cv_etcd_lease_grant(cv_etcd *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                              cv_error *err) {
    char what[64];
    snprintf(what, sizeof what, "lease grant (TTL %" PRId64 " s)", ttl_s);
    json_t *resp = NULL;
    int64_t ttl = 0;
    cv_status st = lease_call(c, what, "/v3/lease/grant", "TTL", ttl_s, false, &resp, err);
    if (!st && !(st = cv_etcd_json_i64(resp, "ID", id, err)))
        st = cv_etcd_json_i64(resp, "TTL", &ttl, err);
    if (!st && (*id == 0 || ttl <= 0))
        st = cv_errorf(err, CV_EFORMAT, "lease grant answered ID %" PRId64 ", TTL %" PRId64, *id, ttl);
    if (granted_ttl) *granted_ttl = ttl;
    json_decref(resp);
    return check(st, err, what);
}

cv_status cv_etcd_lease_keepalive(cv_etcd *c, int64_t id, int64_t *ttl, cv_error *err) {
    char what[64];
    snprintf(what, sizeof what, "lease keepalive %" PRId64, id);
    json_t *resp = NULL;
    *ttl = 0;
    /* The gateway answers the keepalive stream with one {"result":{...}} per request. */
    cv_status st = lease_call(c, what, "/v3/lease/keepalive", "ID", id, true, &resp, err);
    const json_t *result = json_object_get(resp, "result");
    if (!st && !json_is_object(result)) {
        st = cv_errorf(err, CV_EFORMAT, "etcd %s: response has no \"result\" object", what);
    } else if (!st) {
        st = cv_etcd_json_i64(result, "TTL", ttl, err);
        if (st) check(st, err, what);
        else if (*ttl <= 0)
            st = cv_errorf(err, CV_ENOTFOUND, "etcd %s: lease not found (expired or revoked)", what);
    }
    json_decref(resp);
    return st;
}

cv_status cv_etcd_lease_revoke(cv_etcd *c, int64_t id, cv_error *err) {
    char what[64];
    snprintf(what, sizeof what, "lease revoke %" PRId64, id);
    json_t *resp = NULL;
    cv_status st = lease_call(c, what, "/v3/lease/revoke", "ID", id, false, &resp, err);
    json_decref(resp);
    return st;
}

void cv_etcd_kv_free(cv_etcd_kv *kv) {
    if (!kv) return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

void cv_etcd_range_result_free(cv_etcd_range_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_kvs; i++) cv_etcd_kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof *r);
}

void cv_etcd_txn_result_free(cv_etcd_txn_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_results; i++) cv_etcd_range_result_free(&r->results[i].range);
    free(r->results);
    memset(r, 0, sizeof *r);
}
