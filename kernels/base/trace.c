#include "trace.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "otlp_export.h"

/* The ratio as a threshold on 56 bits of the trace id, as OpenTelemetry's samplers
 * compare; all ones = 1.0. */
static _Atomic uint64_t g_threshold = UINT64_MAX;

void cv_trace_set_ratio(double ratio) {
    if (!(ratio > 0)) atomic_store(&g_threshold, 0);
    else if (ratio >= 1) atomic_store(&g_threshold, UINT64_MAX);
    else atomic_store(&g_threshold, (uint64_t)ldexp(ratio, 56));
}

uint64_t cv_trace_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

static int unhex(const char *s, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

int cv_traceparent_parse(const char *s, size_t n, cv_trace_ctx *out) {
    /* Leading and trailing blanks are allowed in an HTTP header value. */
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n < CV_TRACEPARENT_LEN) return -1;
    uint8_t version, flags;
    cv_trace_ctx c = {0};
    if (unhex(s, &version, 1) || version == 0xff) return -1;
    /* Version 00 is exactly this long; a later version may add fields after a '-'. */
    if (version == 0 ? n != CV_TRACEPARENT_LEN : n > CV_TRACEPARENT_LEN && s[CV_TRACEPARENT_LEN] != '-') return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return -1;
    if (unhex(s + 3, c.trace_id, 16) || unhex(s + 36, c.span_id, 8) || unhex(s + 53, &flags, 1)) return -1;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8)) return -1;
    c.sampled = flags & 1;
    *out = c;
    return 0;
}

void cv_trace_hex(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

void cv_traceparent_format(const cv_trace_ctx *c, char *out) {
    memcpy(out, "00-", 3);
    cv_trace_hex(c->trace_id, 16, out + 3);
    out[35] = '-';
    cv_trace_hex(c->span_id, 8, out + 36);
    snprintf(out + 52, 4, "-%02x", c->sampled ? 1 : 0);
}

void cv_trace_id_hex(const cv_trace_ctx *c, char *out) { cv_trace_hex(c->trace_id, 16, out); }

/* Random non-zero ids; getrandom does not fail for these sizes once the pool is ready,
 * and the clock mix keeps ids distinct if it ever did. */
static void random_id(uint8_t *p, size_t n) {
    do {
        if (getrandom(p, n, GRND_NONBLOCK) != (ssize_t)n) {
            uint64_t t = cv_trace_now_ns() ^ (uint64_t)(uintptr_t)p;
            for (size_t i = 0; i < n; i++) p[i] ^= (uint8_t)(t >> (8 * (i % 8))) + (uint8_t)i;
        }
    } while (all_zero(p, n));
}

void cv_trace_begin(const char *traceparent, size_t len, cv_trace_ctx *out) {
    if (traceparent && cv_traceparent_parse(traceparent, len, out) == 0) return;
    memset(out, 0, sizeof *out);
    random_id(out->trace_id, 16);
    uint64_t low = 0;
    for (int i = 9; i < 16; i++) low = low << 8 | out->trace_id[i];
    uint64_t t = atomic_load(&g_threshold);
    out->sampled = t == UINT64_MAX || low < t;
}

static cv_span *new_span(const cv_trace_ctx *c, const uint8_t *parent_id, const char *name, cv_span_kind kind,
                         uint64_t start_ns) {
    cv_span *s = NULL;
    if (c->sampled && cv_otlp_running() && (s = calloc(1, sizeof *s))) {
        memcpy(s->trace_id, c->trace_id, 16);
        memcpy(s->span_id, c->span_id, 8);
        memcpy(s->parent_id, parent_id, 8);
        snprintf(s->name, sizeof s->name, "%s", name);
        s->kind = kind;
        s->start_ns = start_ns ? start_ns : cv_trace_now_ns();
    }
    return s;
}

cv_span *cv_span_start(const cv_trace_ctx *parent, const char *name, cv_span_kind kind, uint64_t start_ns,
                       cv_trace_ctx *child) {
    cv_trace_ctx c = *parent;
    random_id(c.span_id, 8);
    if (child) *child = c;
    return new_span(&c, parent->span_id, name, kind, start_ns);
}

cv_span *cv_span_start_as(const cv_trace_ctx *ctx, const char *name, cv_span_kind kind, uint64_t start_ns) {
    static const uint8_t none[8];
    return new_span(ctx, none, name, kind, start_ns);
}

static cv_span_attr *add_attr(cv_span *s, const char *key, cv_attr_type t) {
    if (!s || s->n_attrs == CV_SPAN_MAX_ATTRS) return NULL;
    cv_span_attr *a = &s->attrs[s->n_attrs++];
    a->key = key;
    a->type = t;
    return a;
}

static void set_string(cv_span *s, const char *key, cv_attr_type t, const char *value) {
    cv_span_attr *a = add_attr(s, key, t);
    if (a && !(a->s = strdup(value ? value : ""))) s->n_attrs--;
}

void cv_span_set_str(cv_span *s, const char *key, const char *value) { set_string(s, key, CV_ATTR_STR, value); }

void cv_span_set_str_array(cv_span *s, const char *key, const char *value) {
    set_string(s, key, CV_ATTR_STR_ARRAY, value);
}

void cv_span_set_int(cv_span *s, const char *key, int64_t value) {
    cv_span_attr *a = add_attr(s, key, CV_ATTR_INT);
    if (a) a->i = value;
}

void cv_span_set_double(cv_span *s, const char *key, double value) {
    cv_span_attr *a = add_attr(s, key, CV_ATTR_DOUBLE);
    if (a) a->d = value;
}

void cv_span_set_error(cv_span *s, const char *message) {
    if (!s) return;
    s->error = 1;
    free(s->status_message);
    s->status_message = strdup(message ? message : "");
}

void cv_span_end(cv_span *s, uint64_t end_ns) {
    if (!s) return;
    s->end_ns = end_ns ? end_ns : cv_trace_now_ns();
    if (s->end_ns < s->start_ns) s->end_ns = s->start_ns;
    cv_otlp_submit(s);
}

void cv_span_free(cv_span *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_attrs; i++) free(s->attrs[i].s);
    free(s->status_message);
    free(s);
}
