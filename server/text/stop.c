#include "stop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

struct cv_stop {
    size_t n;
    char *str[CV_STOP_MAX_STRINGS]; /* copies, one allocation each */
    size_t len[CV_STOP_MAX_STRINGS];
    size_t max_len;
    char *buf;      /* held text in buf[0..used) */
    size_t cap, used;
    size_t emitted; /* buf[0..emitted) was handed out by the last call */
    bool stopped;
    int which;
};

/* Bytes a UTF-8 sequence starting with b should have; 0 for a continuation or a
 * byte that never starts one. */
static size_t utf8_seq_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* The largest end <= len that does not cut a UTF-8 sequence which is still
 * incomplete at len. Invalid bytes are not held (they will never complete). */
static size_t utf8_safe_end(const char *s, size_t len) {
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char b = (unsigned char)s[len - back];
        if ((b & 0xC0) == 0x80) continue;
        size_t need = utf8_seq_len(b);
        return need > back ? len - back : len;
    }
    return len;
}

cv_status cv_stop_check(const char *const *stops, size_t n, cv_error *err) {
    if (n > CV_STOP_MAX_STRINGS)
        return cv_errorf(err, CV_EINVAL, "stop: %zu strings given, at most %d allowed", n, CV_STOP_MAX_STRINGS);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        if (l == 0) return cv_errorf(err, CV_EINVAL, "stop[%zu] is empty", i);
        if (l > CV_STOP_MAX_LEN)
            return cv_errorf(err, CV_EINVAL, "stop[%zu] is %zu bytes long, at most %d allowed", i, l,
                             CV_STOP_MAX_LEN);
        size_t bad;
        if (cv_utf8_check(stops[i], l, &bad) != CV_UTF8_OK)
            return cv_errorf(err, CV_EINVAL, "stop[%zu] is not valid UTF-8 (byte %zu)", i, bad);
    }
    return CV_OK;
}

cv_status cv_stop_new(const char *const *stops, size_t n, cv_stop **out, cv_error *err) {
    *out = NULL;
    cv_status st = cv_stop_check(stops, n, err);
    if (st != CV_OK) return st;
    cv_stop *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        s->len[i] = strlen(stops[i]);
        s->str[i] = malloc(s->len[i]);
        if (!s->str[i]) goto oom;
        memcpy(s->str[i], stops[i], s->len[i]);
        if (s->len[i] > s->max_len) s->max_len = s->len[i];
    }
    /* Room for a held prefix plus a typical piece: growth is then rare. */
    s->cap = s->max_len + 64;
    s->buf = malloc(s->cap);
    if (!s->buf) goto oom;
    cv_stop_reset(s);
    *out = s;
    return CV_OK;
oom:
    cv_stop_free(s);
    return cv_errorf(err, CV_ENOMEM, "allocating a stop matcher for %zu strings", n);
}

void cv_stop_free(cv_stop *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->str[i]);
    free(s->buf);
    free(s);
}

void cv_stop_reset(cv_stop *s) {
    s->used = 0;
    s->emitted = 0;
    s->stopped = false;
    s->which = -1;
}

static void drop_emitted(cv_stop *s) {
    memmove(s->buf, s->buf + s->emitted, s->used - s->emitted);
    s->used -= s->emitted;
    s->emitted = 0;
}

static cv_stop_out emit(cv_stop *s, size_t len) {
    s->emitted = len;
    return (cv_stop_out){.text = s->buf, .len = len, .stopped = s->stopped, .which = s->which};
}

/* Length of the longest suffix of the held text that is a proper prefix of some
 * stop string: the part that the next piece may still turn into a stop. */
static size_t pending_prefix(const cv_stop *s) {
    if (s->n == 0) return 0;
    size_t most = s->max_len - 1 < s->used ? s->max_len - 1 : s->used;
    for (size_t k = most; k > 0; k--) {
        const char *tail = s->buf + s->used - k;
        for (size_t i = 0; i < s->n; i++)
            if (s->len[i] > k && memcmp(s->str[i], tail, k) == 0) return k;
    }
    return 0;
}

cv_status cv_stop_feed(cv_stop *s, const char *piece, size_t len, cv_stop_out *out,
                       cv_error *err) {
    drop_emitted(s);
    if (s->stopped) {
        *out = emit(s, 0);
        return CV_OK;
    }
    if (len > SIZE_MAX - s->used) return cv_errorf(err, CV_EINVAL, "stop matcher: piece too long");
    if (s->used + len > s->cap) {
        size_t cap = s->cap * 2 > s->used + len ? s->cap * 2 : s->used + len;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return cv_errorf(err, CV_ENOMEM, "stop matcher: growing to %zu bytes for a %zu-byte piece",
                             cap, len);
        s->buf = nb;
        s->cap = cap;
    }
    if (len) memcpy(s->buf + s->used, piece, len);
    s->used += len;

    /* Held text never contains a whole stop string, so any match ends in this piece;
     * the first occurrence of each string is its earliest end. */
    size_t best_end = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        const char *p = memmem(s->buf, s->used, s->str[i], s->len[i]);
        if (!p) continue;
        size_t end = (size_t)(p - s->buf) + s->len[i];
        if (end < best_end || (end == best_end && s->len[i] > s->len[s->which])) {
            best_end = end;
            s->which = (int)i;
        }
    }
    if (s->which >= 0) {
        s->stopped = true;
        cv_stop_out o = emit(s, best_end - s->len[s->which]);
        s->used = o.len; /* drop the stop string and whatever followed it */
        *out = o;
        return CV_OK;
    }
    *out = emit(s, utf8_safe_end(s->buf, s->used - pending_prefix(s)));
    return CV_OK;
}

cv_stop_out cv_stop_flush(cv_stop *s) {
    drop_emitted(s);
    return emit(s, s->used);
}
