#include "etcd_stream.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_json.h"

void cv_etcd_stream_init(cv_etcd_stream *s, size_t max_object, cv_etcd_stream_cb cb, void *ud) {
    memset(s, 0, sizeof *s);
    s->max_object = max_object ? max_object : (size_t)32 << 20;
    s->cb = cb;
    s->ud = ud;
}

void cv_etcd_stream_reset(cv_etcd_stream *s) {
    s->len = 0;
    s->depth = 0;
    s->in_string = s->escaped = false;
    s->offset = 0;
    s->failed = CV_OK;
}

void cv_etcd_stream_free(cv_etcd_stream *s) {
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static cv_status fail(cv_etcd_stream *s, cv_status st) {
    s->failed = st;
    return st;
}

static cv_status append(cv_etcd_stream *s, const char *d, size_t n, cv_error *err) {
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n) cap *= 2;
        if (cap > s->max_object) cap = s->max_object;
        char *p = realloc(s->buf, cap);
        if (!p) return cv_errorf(err, CV_ENOMEM, "watch stream: buffer of %zu bytes", cap);
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, d, n);
    s->len += n;
    return CV_OK;
}

/* Bytes of d that belong to the current object; *done when its closing brace is among them. */
static size_t scan(cv_etcd_stream *s, const char *d, size_t n, bool *done, bool *too_deep) {
    *done = *too_deep = false;
    for (size_t i = 0; i < n; i++) {
        char ch = d[i];
        if (s->in_string) {
            if (s->escaped) s->escaped = false;
            else if (ch == '\\') s->escaped = true;
            else if (ch == '"') s->in_string = false;
        } else if (ch == '"') {
            s->in_string = true;
        } else if (ch == '{' || ch == '[') {
            if (++s->depth > CV_ETCD_STREAM_MAX_DEPTH) {
                *too_deep = true;
                return i + 1;
            }
        } else if (ch == '}' || ch == ']') {
            if (--s->depth == 0) {
                *done = true;
                return i + 1;
            }
        }
    }
    return n;
}

static cv_status deliver(cv_etcd_stream *s, cv_error *err) {
    cv_etcd_watch_msg m;
    cv_status st = cv_etcd_watch_msg_decode(s->buf, s->len, &m, err);
    if (st) return cv_error_wrap(err, "watch stream object ending at offset %llu",
                                 (unsigned long long)s->offset);
    st = s->cb(s->ud, &m, err);
    cv_etcd_watch_msg_free(&m);
    return st;
}

cv_status cv_etcd_stream_feed(cv_etcd_stream *s, const char *data, size_t n, cv_error *err) {
    if (s->failed)
        return cv_errorf(err, s->failed, "watch stream: fed again after failing at offset %llu",
                         (unsigned long long)s->offset);
    size_t i = 0;
    while (i < n) {
        if (s->depth == 0) {
            char ch = data[i];
            if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
                i++;
                s->offset++;
                continue;
            }
            if (ch != '{')
                return fail(s, cv_errorf(err, CV_EFORMAT,
                                         "watch stream: byte 0x%02x at offset %llu where an object should start",
                                         (unsigned char)ch, (unsigned long long)s->offset));
            s->len = 0;
        }
        bool done, too_deep;
        size_t take = scan(s, data + i, n - i, &done, &too_deep);
        if (too_deep)
            return fail(s, cv_errorf(err, CV_ERANGE, "watch stream: nesting deeper than %d at offset %llu",
                                     CV_ETCD_STREAM_MAX_DEPTH, (unsigned long long)(s->offset + take)));
        if (take > s->max_object - s->len)
            return fail(s, cv_errorf(err, CV_ERANGE,
                                     "watch stream: object at offset %llu exceeds the %zu byte limit",
                                     (unsigned long long)(s->offset - s->len), s->max_object));
        cv_status st = append(s, data + i, take, err);
        if (st) return fail(s, st);
        i += take;
        s->offset += take;
        if (done) {
            if ((st = deliver(s, err))) return fail(s, st);
            s->len = 0;
        }
    }
    return CV_OK;
}

static cv_status decode_event(const json_t *ev, cv_etcd_event *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(ev)) return cv_errorf(err, CV_EFORMAT, "event is not an object");
    const json_t *type = json_object_get(ev, "type");
    const char *t = type ? json_string_value(type) : "PUT"; /* PUT is 0, so omitted */
    if (!t || (strcmp(t, "PUT") != 0 && strcmp(t, "DELETE") != 0))
        return cv_errorf(err, CV_EFORMAT, "event type is not \"PUT\" or \"DELETE\"");
    out->type = strcmp(t, "PUT") == 0 ? CV_ETCD_EVENT_PUT : CV_ETCD_EVENT_DELETE;
    const json_t *kv = json_object_get(ev, "kv");
    if (!kv) return cv_errorf(err, CV_EFORMAT, "event has no \"kv\"");
    cv_status st = cv_etcd_json_kv(kv, &out->kv, err);
    if (st) return st;
    if (out->kv.mod_revision <= 0) {
        st = cv_errorf(err, CV_EFORMAT, "event for key \"%.100s\" has mod_revision %lld", out->kv.key,
                       (long long)out->kv.mod_revision);
        cv_etcd_kv_free(&out->kv);
    }
    return st;
}

cv_status cv_etcd_watch_msg_decode(const char *json, size_t len, cv_etcd_watch_msg *m, cv_error *err) {
    memset(m, 0, sizeof *m);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root)
        return cv_errorf(err, CV_EFORMAT, "invalid JSON at line %d col %d: %s", jerr.line, jerr.column,
                         jerr.text);
    cv_status st = CV_OK;
    int code;
    const char *msg;
    const json_t *r = json_object_get(root, "result");
    if (cv_etcd_json_error(root, &code, &msg)) {
        st = cv_etcd_grpc_status(code);
        st = cv_errorf(err, st ? st : CV_EIO, "gateway error: %s (gRPC code %d)", msg, code);
        goto out;
    }
    if (!json_is_object(r)) {
        st = cv_errorf(err, CV_EFORMAT, "object has neither a \"result\" object nor an \"error\"");
        goto out;
    }
    if ((st = cv_etcd_json_header(r, &m->header, err)) ||
        (st = cv_etcd_json_i64(r, "watch_id", &m->watch_id, err)) ||
        (st = cv_etcd_json_i64(r, "compact_revision", &m->compact_revision, err)))
        goto out;
    m->created = json_is_true(json_object_get(r, "created"));
    m->canceled = json_is_true(json_object_get(r, "canceled"));
    const char *reason = json_string_value(json_object_get(r, "cancel_reason"));
    if (reason && !(m->cancel_reason = strdup(reason))) {
        st = cv_errorf(err, CV_ENOMEM, "cancel_reason");
        goto out;
    }
    const json_t *evs = json_object_get(r, "events");
    if (evs && !json_is_array(evs)) {
        st = cv_errorf(err, CV_EFORMAT, "field \"events\" is not an array");
        goto out;
    }
    size_t n = json_array_size(evs);
    if (n && !(m->events = calloc(n, sizeof *m->events))) {
        st = cv_errorf(err, CV_ENOMEM, "%zu events", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((st = decode_event(json_array_get(evs, i), &m->events[i], err))) {
            cv_error_wrap(err, "events[%zu]", i);
            goto out;
        }
        m->n_events = i + 1;
    }
out:
    json_decref(root);
    if (st) cv_etcd_watch_msg_free(m);
    return st;
}

void cv_etcd_watch_msg_free(cv_etcd_watch_msg *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_events; i++) cv_etcd_kv_free(&m->events[i].kv);
    free(m->events);
    free(m->cancel_reason);
    memset(m, 0, sizeof *m);
}
