/* libFuzzer target for the stop-string matcher (stop strings come from requests).
 * Input: count byte, that many stop strings each ended by \0, then the text; each
 * piece's length comes from the next byte of a second reading of the input.
 * Checks against a naive reference on the whole text: the matcher's output is the
 * text up to the first stop string to complete, whatever the cuts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t n = data[0] % 5, pos = 1;
    char stops_buf[4][CV_STOP_MAX_LEN + 1];
    const char *stops[4];
    for (size_t i = 0; i < n; i++) {
        const uint8_t *z = memchr(data + pos, 0, size - pos);
        size_t len = z ? (size_t)(z - (data + pos)) : size - pos;
        if (len > CV_STOP_MAX_LEN) len = CV_STOP_MAX_LEN;
        memcpy(stops_buf[i], data + pos, len);
        stops_buf[i][len] = 0;
        stops[i] = stops_buf[i];
        pos = z ? (size_t)(z - data) + 1 : size;
    }
    const char *text = (const char *)data + pos;
    size_t tl = size - pos;

    cv_stop *s;
    cv_error err;
    if (cv_stop_new(stops, n, &s, &err) != CV_OK) return 0;

    size_t best_end = SIZE_MAX, best_len = 0;
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        const char *p = memmem(text, tl, stops[i], l);
        if (!p) continue;
        size_t end = (size_t)(p - text) + l;
        if (end < best_end || (end == best_end && l > best_len)) best_end = end, best_len = l, best = (int)i;
    }
    size_t want = best < 0 ? tl : best_end - best_len;

    char *got = malloc(tl + 1);
    if (!got) abort();
    size_t got_len = 0, off = 0, k = 0;
    int which = -1;
    while (off < tl && which < 0) {
        size_t cut = 1 + data[k++ % size] % 9;
        if (cut > tl - off) cut = tl - off;
        cv_stop_out o;
        if (cv_stop_feed(s, text + off, cut, &o, &err) != CV_OK) abort();
        if (got_len + o.len > tl) abort();
        memcpy(got + got_len, o.text, o.len);
        got_len += o.len;
        if (o.stopped) which = o.which;
        off += cut;
    }
    if (which < 0) {
        cv_stop_out o = cv_stop_flush(s);
        if (got_len + o.len > tl) abort();
        memcpy(got + got_len, o.text, o.len);
        got_len += o.len;
    }
    if (which != best || got_len != want || memcmp(got, text, want) != 0) abort();
    free(got);
    cv_stop_free(s);
    return 0;
}
