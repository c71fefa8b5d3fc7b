#include "rag_sources.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_error.h"
#include "timing.h"
#include "trace.h"

#define SRC_MAX 32
#define SRC_MAX_HEADERS 32
#define SRC_MAX_BODY (64u << 20)

typedef struct source {
    char name[65];
    char *url;
    struct curl_slist *headers;
    char *items, *text, *title, *link; /* JSON pointers; items/title/link may be NULL */
    unsigned timeout_ms, max_results;
    size_t max_bytes;
} source;

struct cv_rag_sources {
    source src[SRC_MAX];
    size_t n;
    unsigned budget_ms;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

void cv_rag_sources_free(cv_rag_sources *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        source *c = &s->src[i];
        free(c->url), free(c->items), free(c->text), free(c->title), free(c->link);
        curl_slist_free_all(c->headers);
    }
    free(s);
}

size_t cv_rag_sources_count(const cv_rag_sources *s) { return s->n; }
unsigned cv_rag_sources_budget_ms(const cv_rag_sources *s) { return s->budget_ms; }

static int has_crlf(const char *s) { return strchr(s, '\r') || strchr(s, '\n'); }

/* Reads an optional integer member into *v within [lo, hi]. */
static cv_status get_uint(json_t *o, const char *key, const char *where, unsigned long lo,
                          unsigned long hi, unsigned long *v, cv_error *err) {
    json_t *j = json_object_get(o, key);
    if (!j) return CV_OK;
    if (!json_is_integer(j) || json_integer_value(j) < (json_int_t)lo ||
        json_integer_value(j) > (json_int_t)hi)
        return cv_errorf(err, CV_EINVAL, "%s: \"%s\" must be an integer in [%lu, %lu]", where, key, lo, hi);
    *v = (unsigned long)json_integer_value(j);
    return CV_OK;
}

static cv_status get_pointer(json_t *o, const char *key, const char *where, int required,
                             char **out, cv_error *err) {
    json_t *j = json_object_get(o, key);
    if (!j) return required ? cv_errorf(err, CV_EINVAL, "%s: \"%s\" (a JSON pointer) is required", where, key)
                            : CV_OK;
    const char *p = json_string_value(j);
    if (!p || (*p && *p != '/'))
        return cv_errorf(err, CV_EINVAL, "%s: \"%s\" must be a JSON pointer (\"\" or starting with '/')",
                         where, key);
    if (!(*out = strdup(p))) return cv_errorf(err, CV_ENOMEM, "out of memory");
    return CV_OK;
}

static cv_status parse_source(json_t *o, size_t i, unsigned budget, source *c, cv_error *err) {
    char where[96];
    snprintf(where, sizeof where, "sources[%zu]", i);
    if (!json_is_object(o)) return cv_errorf(err, CV_EINVAL, "%s: must be an object", where);
    static const char *const keys[] = {"name", "url", "headers", "items", "text", "title",
                                       "link", "timeout_ms", "max_bytes", "max_results"};
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        size_t n = 0;
        while (n < sizeof keys / sizeof keys[0] && strcmp(keys[n], k) != 0) n++;
        if (n == sizeof keys / sizeof keys[0])
            return cv_errorf(err, CV_EINVAL, "%s: unknown key \"%s\"", where, k);
    }
    const char *name = json_string_value(json_object_get(o, "name"));
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != nl)
        return cv_errorf(err, CV_EINVAL, "%s: \"name\" must be 1..64 characters of [A-Za-z0-9_.-]", where);
    memcpy(c->name, name, nl + 1);
    snprintf(where, sizeof where, "source %s", c->name);
    const char *url = json_string_value(json_object_get(o, "url"));
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
        !strstr(url, "{query}") || has_crlf(url))
        return cv_errorf(err, CV_EINVAL, "%s: \"url\" must be an http(s) URL containing {query}", where);
    if (!(c->url = strdup(url))) return cv_errorf(err, CV_ENOMEM, "out of memory");
    json_t *h = json_object_get(o, "headers");
    if (h) {
        if (!json_is_object(h) || json_object_size(h) > SRC_MAX_HEADERS)
            return cv_errorf(err, CV_EINVAL, "%s: \"headers\" must be an object of at most %d strings",
                             where, SRC_MAX_HEADERS);
        json_object_foreach(h, k, v) {
            const char *val = json_string_value(v);
            if (!val || !*k || has_crlf(k) || has_crlf(val) || strchr(k, ':'))
                return cv_errorf(err, CV_EINVAL, "%s: header \"%.64s\": name and value must be "
                                 "strings without CR, LF (and ':' in the name)", where, k);
            char line[4096];
            if ((size_t)snprintf(line, sizeof line, "%s: %s", k, val) >= sizeof line)
                return cv_errorf(err, CV_EINVAL, "%s: header \"%.64s\" longer than 4 KiB", where, k);
            struct curl_slist *l = curl_slist_append(c->headers, line);
            if (!l) return cv_errorf(err, CV_ENOMEM, "out of memory");
            c->headers = l;
        }
    }
    cv_status st;
    if ((st = get_pointer(o, "items", where, 0, &c->items, err)) ||
        (st = get_pointer(o, "text", where, 1, &c->text, err)) ||
        (st = get_pointer(o, "title", where, 0, &c->title, err)) ||
        (st = get_pointer(o, "link", where, 0, &c->link, err)))
        return st;
    unsigned long timeout = budget, max_bytes = 1u << 20, max_results = 5;
    if ((st = get_uint(o, "timeout_ms", where, 1, 60000, &timeout, err)) ||
        (st = get_uint(o, "max_bytes", where, 1, SRC_MAX_BODY, &max_bytes, err)) ||
        (st = get_uint(o, "max_results", where, 1, 100, &max_results, err)))
        return st;
    c->timeout_ms = (unsigned)timeout;
    c->max_bytes = max_bytes;
    c->max_results = (unsigned)max_results;
    return CV_OK;
}

cv_status cv_rag_sources_parse(const char *text, size_t len, cv_rag_sources **out, cv_error *err) {
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return cv_errorf(err, CV_EINVAL, "sources config: invalid JSON at line %d column %d: %s",
                                je.line, je.column, cv_json_error_text(&je));
    cv_rag_sources *s = calloc(1, sizeof *s);
    cv_status st = CV_OK;
    if (!s) {
        st = cv_errorf(err, CV_ENOMEM, "out of memory");
        goto done;
    }
    const char *k;
    json_t *v;
    if (!json_is_object(root)) {
        st = cv_errorf(err, CV_EINVAL, "sources config: must be a JSON object");
        goto done;
    }
    json_object_foreach(root, k, v) {
        if (strcmp(k, "budget_ms") != 0 && strcmp(k, "sources") != 0) {
            st = cv_errorf(err, CV_EINVAL, "sources config: unknown key \"%s\"", k);
            goto done;
        }
    }
    unsigned long budget = 500;
    if ((st = get_uint(root, "budget_ms", "sources config", 1, 60000, &budget, err))) goto done;
    s->budget_ms = (unsigned)budget;
    json_t *arr = json_object_get(root, "sources");
    if (!json_is_array(arr) || json_array_size(arr) > SRC_MAX) {
        st = cv_errorf(err, CV_EINVAL, "sources config: \"sources\" must be an array of at most %d", SRC_MAX);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        st = parse_source(json_array_get(arr, i), i, s->budget_ms, &s->src[i], err);
        s->n = i + 1; /* so that free() releases what the failed entry allocated */
        if (st) goto done;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->src[j].name, s->src[i].name) == 0) {
                st = cv_errorf(err, CV_EINVAL, "sources config: name \"%s\" used twice", s->src[i].name);
                goto done;
            }
    }
done:
    json_decref(root);
    if (st) cv_rag_sources_free(s);
    else *out = s;
    return st;
}

void cv_rag_source_hits_free(cv_rag_source_hits *h) {
    for (size_t i = 0; i < h->n; i++) free(h->v[i].title), free(h->v[i].link), free(h->v[i].text);
    free(h->v);
    *h = (cv_rag_source_hits){0};
}

/* RFC 6901: "" is the whole document; "~1" is '/', "~0" is '~'. */
static json_t *json_pointer(json_t *root, const char *ptr) {
    json_t *cur = root;
    const char *p = ptr;
    while (cur && *p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0') c = '~';
                else if (*p == '1') c = '/';
                else return NULL;
                p++;
            }
            if (n + 1 >= sizeof tok) return NULL;
            tok[n++] = c;
        }
        tok[n] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            if (n == 0 || (n > 1 && tok[0] == '0') || strspn(tok, "0123456789") != n) return NULL;
            unsigned long idx = strtoul(tok, &end, 10);
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return *p ? NULL : cur;
}

static char *dup_string_at(json_t *item, const char *ptr) {
    json_t *j = ptr ? json_pointer(item, ptr) : NULL;
    const char *s = json_string_value(j);
    return s ? strndup(s, json_string_length(j)) : NULL;
}

static cv_status add_hit(cv_rag_source_hits *h, const source *c, json_t *item, int *added) {
    json_t *t = json_pointer(item, c->text);
    if (!json_is_string(t)) return CV_OK;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        cv_rag_source_hit *v = realloc(h->v, cap * sizeof *v);
        if (!v) return CV_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    cv_rag_source_hit *x = &h->v[h->n];
    *x = (cv_rag_source_hit){c->name, dup_string_at(item, c->title), dup_string_at(item, c->link),
                             strndup(json_string_value(t), json_string_length(t))};
    if (!x->text) {
        free(x->title), free(x->link);
        return CV_ENOMEM;
    }
    h->n++;
    (*added)++;
    return CV_OK;
}

cv_status cv_rag_sources_parse_body(const cv_rag_sources *s, size_t index, const char *body,
                                    size_t len, cv_rag_source_hits *out, cv_error *err) {
    if (index >= s->n) return cv_errorf(err, CV_EINVAL, "source index %zu of %zu", index, s->n);
    const source *c = &s->src[index];
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root) return cv_errorf(err, CV_EFORMAT, "body is not JSON (line %d column %d: %s)", je.line,
                                je.column, je.text);
    json_t *items = c->items ? json_pointer(root, c->items) : root;
    int added = 0;
    cv_status st = CV_OK;
    if (json_is_array(items)) {
        for (size_t i = 0; i < json_array_size(items) && added < (int)c->max_results && !st; i++)
            st = add_hit(out, c, json_array_get(items, i), &added);
    } else if (json_is_object(items)) {
        st = add_hit(out, c, items, &added);
    }
    json_decref(root);
    if (st) return cv_errorf(err, st, "out of memory");
    if (!added) return cv_errorf(err, CV_EFORMAT, "no result with a string at \"%s\"%s%s", c->text,
                                 c->items ? " under " : "", c->items ? c->items : "");
    return CV_OK;
}

typedef struct request {
    const source *c;
    CURL *easy;
    char *url, *audit_url;
    char *body;
    size_t len, cap;
    int too_large, done;
    CURLcode rc;
    double start, end;
    char errbuf[CURL_ERROR_SIZE];
    cv_span *span;                /* this fetch in the request's trace; NULL: not recorded */
    uint64_t end_ns;
    struct curl_slist *headers;   /* the source's, and the traceparent that continues the trace */
    const char *trace_id;         /* for the audit line; NULL: no trace */
} request;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    request *r = user;
    size_t n = size * nmemb;
    if (r->len + n > r->c->max_bytes) {
        r->too_large = 1;
        return 0; /* aborts the transfer */
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return n;
}

/* The URL with every {query} replaced by the escaped text. */
static char *expand_url(const char *tmpl, const char *escaped) {
    size_t n = 0, el = strlen(escaped);
    for (const char *p = tmpl; (p = strstr(p, "{query}")); p += 7) n++;
    char *out = malloc(strlen(tmpl) + n * el + 1), *w = out;
    if (!out) return NULL;
    for (const char *p = tmpl;;) {
        const char *q = strstr(p, "{query}");
        size_t k = q ? (size_t)(q - p) : strlen(p);
        memcpy(w, p, k);
        w += k;
        if (!q) break;
        memcpy(w, escaped, el);
        w += el;
        p = q + 7;
    }
    *w = 0;
    return out;
}

/* The fetch's end: its span and its audit line. */
static void audit_request(request *r, const char *outcome, long status, int results,
                          const char *error, cv_rag_audit_fn audit, void *user) {
    cv_span *sp = r->span;
    r->span = NULL;
    cv_span_set_str(sp, "url.full", r->audit_url ? r->audit_url : "");
    cv_span_set_int(sp, "http.response.status_code", status);
    cv_span_set_str(sp, "corvid.rag.outcome", outcome);
    cv_span_set_int(sp, "corvid.rag.results", results);
    if (strcmp(outcome, "ok")) cv_span_set_error(sp, error ? error : outcome);
    cv_span_end(sp, r->end_ns);
    if (!audit) return;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:f, s:i}", "type", "rag_source",
                          "source", r->c->name, "url", r->audit_url ? r->audit_url : "",
                          "status", (json_int_t)status, "outcome", outcome,
                          "bytes", (json_int_t)r->len, "latency_ms", r->end - r->start,
                          "results", results);
    if (o && error) json_object_set_new(o, "error", json_string(error));
    if (o && r->trace_id) json_object_set_new(o, "trace_id", json_string(r->trace_id));
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line) audit(user, line);
    free(line);
    json_decref(o);
}

static void finish_request(const cv_rag_sources *s, size_t index, request *r, unsigned budget_ms,
                           cv_rag_audit_fn audit, void *user, cv_rag_source_hits *out, int *oom) {
    long status = 0;
    if (r->done) curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    /* curl's timeout is min(source timeout, budget): when the budget was the smaller,
     * a curl timeout is the budget running out */
    if (!r->done || (r->rc == CURLE_OPERATION_TIMEDOUT && r->c->timeout_ms >= budget_ms)) {
        audit_request(r, "budget", 0, 0, "overall budget exhausted", audit, user);
    } else if (r->too_large) {
        audit_request(r, "too_large", status, 0, "body over max_bytes", audit, user);
    } else if (r->rc == CURLE_OPERATION_TIMEDOUT) {
        audit_request(r, "timeout", status, 0, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc),
                      audit, user);
    } else if (r->rc != CURLE_OK) {
        audit_request(r, "error", status, 0, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc),
                      audit, user);
    } else if (status < 200 || status > 299) {
        audit_request(r, "http_status", status, 0, NULL, audit, user);
    } else {
        size_t before = out->n;
        cv_error e = {0};
        cv_status st = cv_rag_sources_parse_body(s, index, r->body ? r->body : "", r->len, out, &e);
        if (st == CV_ENOMEM) *oom = 1;
        audit_request(r, st ? "bad_body" : "ok", status, (int)(out->n - before), st ? e.msg : NULL,
                      audit, user);
    }
}

/* The source's headers and a traceparent naming the fetch's span, so that a source that
 * traces continues the request's trace; NULL when out of memory. */
static struct curl_slist *headers_with_trace(const struct curl_slist *h, const cv_trace_ctx *fetch) {
    char line[16 + CV_TRACEPARENT_LEN] = "traceparent: ";
    cv_traceparent_format(fetch, line + strlen(line));
    struct curl_slist *out = curl_slist_append(NULL, line);
    for (; h && out; h = h->next) {
        struct curl_slist *n = curl_slist_append(out, h->data);
        if (!n) curl_slist_free_all(out);
        out = n;
    }
    return out;
}

cv_status cv_rag_sources_fetch(const cv_rag_sources *s, const cv_pii *pii, const char *query,
                               unsigned budget_ms, cv_rag_audit_fn audit, void *audit_user,
                               const cv_trace_ctx *trace, cv_rag_source_hits *out, cv_error *err) {
    if (!pii) return cv_errorf(err, CV_EINVAL, "sources: a PII masker is required");
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return cv_errorf(err, CV_EUNAVAILABLE, "libcurl init: %s", curl_easy_strerror(curl_init_rc));
    if (!budget_ms) budget_ms = s->budget_ms;
    char *masked = NULL, *escaped = NULL;
    request req[SRC_MAX] = {{0}};
    CURLM *m = curl_multi_init();
    cv_status st = CV_OK;
    int oom = 0;
    if (!m || cv_pii_mask(pii, query, strlen(query), &masked, NULL, err) ||
        !(escaped = curl_easy_escape(NULL, masked, 0))) {
        st = cv_errorf(err, CV_ENOMEM, "sources: out of memory preparing the query");
        goto done;
    }
    double start = cv_seconds() * 1e3, deadline = start + budget_ms;
    char trace_id[33];
    if (trace) cv_trace_id_hex(trace, trace_id);
    for (size_t i = 0; i < s->n; i++) {
        request *r = &req[i];
        r->c = &s->src[i];
        r->start = start;
        r->url = expand_url(r->c->url, escaped);
        if (trace) {
            char name[80];
            cv_trace_ctx fetch;
            snprintf(name, sizeof name, "rag.source %s", r->c->name);
            r->span = cv_span_start(trace, name, CV_SPAN_CLIENT, 0, &fetch);
            r->trace_id = trace_id;
            r->headers = headers_with_trace(r->c->headers, &fetch);
        }
        if (!r->url || cv_pii_mask(pii, r->url, strlen(r->url), &r->audit_url, NULL, err) ||
            (trace && !r->headers) || !(r->easy = curl_easy_init())) {
            st = cv_errorf(err, CV_ENOMEM, "sources: out of memory preparing %s", r->c->name);
            goto done;
        }
        long timeout = (long)(r->c->timeout_ms < budget_ms ? r->c->timeout_ms : budget_ms);
        CURL *e = r->easy;
        curl_easy_setopt(e, CURLOPT_URL, r->url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers ? r->headers : r->c->headers);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->c->max_bytes);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
        curl_easy_setopt(e, CURLOPT_PRIVATE, r);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "corvid-rag/1");
        if (curl_multi_add_handle(m, e) != CURLM_OK) {
            st = cv_errorf(err, CV_ENOMEM, "sources: cannot add %s to the transfer set", r->c->name);
            goto done;
        }
    }
    for (int running = 1; running;) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            request *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            r->done = 1;
            r->rc = msg->data.result;
            r->end = cv_seconds() * 1e3;
            r->end_ns = cv_trace_now_ns();
        }
        double left_ms = deadline - cv_seconds() * 1e3;
        if (!running || left_ms <= 0) break;
        curl_multi_poll(m, NULL, 0, left_ms < 50 ? (int)left_ms + 1 : 50, NULL);
    }
    double end = cv_seconds() * 1e3;
    uint64_t end_ns = cv_trace_now_ns();
    for (size_t i = 0; i < s->n; i++) {
        if (!req[i].done) req[i].end = end, req[i].end_ns = end_ns;
        finish_request(s, i, &req[i], budget_ms, audit, audit_user, out, &oom);
    }
    if (oom) st = cv_errorf(err, CV_ENOMEM, "sources: out of memory storing results");
done:
    for (size_t i = 0; i < s->n; i++) {
        request *r = &req[i];
        if (r->easy) {
            curl_multi_remove_handle(m, r->easy);
            curl_easy_cleanup(r->easy);
        }
        free(r->url), free(r->audit_url), free(r->body);
        curl_slist_free_all(r->headers);
        if (r->span) { /* not audited: the fetch never ran (out of memory) */
            cv_span_set_error(r->span, "not sent");
            cv_span_end(r->span, 0);
        }
    }
    if (m) curl_multi_cleanup(m);
    curl_free(escaped);
    free(masked);
    return st;
}
