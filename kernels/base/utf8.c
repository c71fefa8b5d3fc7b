#include "utf8.h"

#include <stdlib.h>

#include <string.h>

/* Total length of a sequence starting with lead byte b; 0 for a byte that can
 * never start one (continuation bytes, C0/C1 overlong leads, F5..FF). */
static int seq_len(uint8_t b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* The allowed range of the second byte depends on the lead: this is what rules
 * out overlong forms, surrogates and values above U+10FFFF. */
static void second_range(uint8_t lead, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (lead == 0xE0) *lo = 0xA0;
    else if (lead == 0xED) *hi = 0x9F;
    else if (lead == 0xF0) *lo = 0x90;
    else if (lead == 0xF4) *hi = 0x8F;
}

int cv_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    int len = seq_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    if (len == 1) {
        *cp = s[0];
        return 1;
    }
    uint8_t lo, hi;
    second_range(s[0], &lo, &hi);
    if (s[1] < lo || s[1] > hi) return 0;
    uint32_t v = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

int cv_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The offset of the first character that does not decode (or, with stop_at_nul, is
 * U+0000), or n: the one scan behind cv_utf8_check and cv_utf8_valid. */
static size_t scan(const uint8_t *p, size_t n, int stop_at_nul, cv_utf8_verdict *v) {
    size_t i = 0;
    *v = CV_UTF8_OK;
    while (i < n) {
        /* ASCII runs 8 bytes at a time (no high bit; no zero byte where NUL stops): a
         * multi-megabyte prompt is checked on the gRPC thread, in about 1 ms. */
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            if (stop_at_nul && ((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull)) break; /* a zero byte */
        }
        if (i == n) break;
        uint32_t cp;
        int len = cv_utf8_decode(p + i, n - i, &cp);
        if (len == 0) {
            *v = CV_UTF8_INVALID;
            break;
        }
        if (cp == 0 && stop_at_nul) {
            *v = CV_UTF8_NUL;
            break;
        }
        i += (size_t)len;
    }
    return i;
}

cv_utf8_verdict cv_utf8_check(const char *s, size_t n, size_t *bad_offset) {
    cv_utf8_verdict v;
    size_t i = scan((const uint8_t *)s, n, 1, &v);
    if (bad_offset) *bad_offset = i;
    return v;
}

int cv_utf8_valid(const char *s, size_t n) {
    cv_utf8_verdict v;
    scan((const uint8_t *)s, n, 0, &v);
    return v == CV_UTF8_OK;
}

void cv_utf8_stream_init(cv_utf8_stream *s) { memset(s, 0, sizeof *s); }

static size_t put_replacement(char *out) { return (size_t)cv_utf8_encode(CV_UTF8_REPLACEMENT, out); }

size_t cv_utf8_stream_feed(cv_utf8_stream *s, const char *in, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)in[i];
        if (s->n_pend > 0) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (s->n_pend == 1) second_range(s->pend[0], &lo, &hi);
            if (b >= lo && b <= hi) {
                s->pend[s->n_pend++] = b;
                if (s->n_pend == seq_len(s->pend[0])) {
                    memcpy(out + w, s->pend, s->n_pend);
                    w += s->n_pend;
                    s->n_pend = 0;
                }
                continue;
            }
            /* The held bytes are a maximal invalid subpart; b starts afresh. */
            w += put_replacement(out + w);
            s->n_pend = 0;
        }
        int len = seq_len(b);
        if (len == 1) {
            out[w++] = (char)b;
        } else if (len == 0) {
            w += put_replacement(out + w);
        } else {
            s->pend[0] = b;
            s->n_pend = 1;
        }
    }
    return w;
}

size_t cv_utf8_stream_flush(cv_utf8_stream *s, char *out) {
    if (s->n_pend == 0) return 0;
    s->n_pend = 0;
    return put_replacement(out);
}

char *cv_utf8_repaired(const char *s, size_t n, size_t *len) {
    char *out = malloc(CV_UTF8_STREAM_BOUND(n) + 4);
    if (!out) return NULL;
    cv_utf8_stream us;
    cv_utf8_stream_init(&us);
    size_t m = cv_utf8_stream_feed(&us, s, n, out);
    m += cv_utf8_stream_flush(&us, out + m);
    out[m] = 0;
    *len = m;
    return out;
}
