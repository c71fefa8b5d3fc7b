#include "rc_entry.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static const uint8_t magic[4] = {'C', 'V', 'R', 'C'};

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int reserve(cv_rc_writer *w, size_t more) {
    if (w->failed) return -1;
    if (more > CV_RC_MAX_ENTRY - w->len) {
        w->failed = 1;
        return -1;
    }
    if (w->len + more <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 1024;
    while (cap < w->len + more) cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b) {
        w->failed = 1;
        return -1;
    }
    w->buf = b;
    w->cap = cap;
    return 0;
}

void cv_rc_writer_chunk(cv_rc_writer *w, const char *text, size_t len, const int32_t *ids, int32_t n_ids) {
    size_t n = n_ids > 0 ? (size_t)n_ids : 0;
    if (len > CV_RC_MAX_ENTRY || reserve(w, 8 + len + 4 * n)) return;
    uint8_t *p = w->buf + w->len;
    put32(p, (uint32_t)len);
    if (len) memcpy(p + 4, text, len);
    p += 4 + len;
    put32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++) put32(p + 4 + 4 * i, (uint32_t)ids[i]);
    w->len += 8 + len + 4 * n;
    w->n_chunks++;
}

uint8_t *cv_rc_writer_finish(cv_rc_writer *w, const uint8_t digest[CV_RC_DIGEST], const cv_engine_final *f,
                             size_t *len) {
    uint8_t *out = NULL;
    size_t stop_len = f->stop_string ? strlen(f->stop_string) : 0;
    if (w->failed || stop_len > 255 || (f->reason != CV_FINISH_STOP && f->reason != CV_FINISH_LENGTH)) goto out;
    *len = CV_RC_HEADER_BYTES + stop_len + 4 + w->len;
    if (*len > CV_RC_MAX_ENTRY || !(out = malloc(*len))) goto out;
    uint8_t *p = out;
    memcpy(p, magic, 4);
    p[4] = CV_RC_FORMAT;
    p[5] = p[6] = p[7] = 0;
    memcpy(p + 8, digest, CV_RC_DIGEST);
    p += 8 + CV_RC_DIGEST;
    p[0] = (uint8_t)f->reason;
    put32(p + 1, (uint32_t)f->prompt_tokens);
    put32(p + 5, (uint32_t)f->completion_tokens);
    p[9] = (uint8_t)stop_len;
    p[10] = 0;
    p += 11;
    if (stop_len) memcpy(p, f->stop_string, stop_len);
    p += stop_len;
    put32(p, w->n_chunks);
    if (w->len) memcpy(p + 4, w->buf, w->len);
out:
    cv_rc_writer_free(w);
    return out;
}

void cv_rc_writer_free(cv_rc_writer *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

/* The text is what a client will be sent as a string: valid UTF-8, no NUL. */
static int text_ok(const uint8_t *s, size_t n) { return !memchr(s, 0, n) && cv_utf8_valid((const char *)s, n); }

cv_status cv_rc_entry_decode(const uint8_t *buf, size_t len, const uint8_t digest[CV_RC_DIGEST], int32_t n_prompt,
                             int32_t n_vocab, cv_rc_entry *out, cv_error *err) {
    memset(out, 0, sizeof *out);
    if (len < CV_RC_HEADER_BYTES || len > CV_RC_MAX_ENTRY)
        return cv_errorf(err, CV_EFORMAT, "response cache entry: %zu bytes is outside [%d, %u]", len,
                         CV_RC_HEADER_BYTES, CV_RC_MAX_ENTRY);
    if (memcmp(buf, magic, 4) || buf[4] != CV_RC_FORMAT || buf[5] || buf[6] || buf[7])
        return cv_errorf(err, CV_EFORMAT, "response cache entry: not format %d (bad magic or version)", CV_RC_FORMAT);
    if (memcmp(buf + 8, digest, CV_RC_DIGEST))
        return cv_errorf(err, CV_EFORMAT, "response cache entry: stored for another request (digest differs)");
    const uint8_t *p = buf + 8 + CV_RC_DIGEST, *end = buf + len;
    uint32_t reason = p[0], prompt = get32(p + 1), completion = get32(p + 5), stop_len = p[9];
    if (reason != CV_FINISH_STOP && reason != CV_FINISH_LENGTH)
        return cv_errorf(err, CV_EFORMAT, "response cache entry: finish reason %u is neither stop nor length", reason);
    if (prompt != (uint32_t)n_prompt)
        return cv_errorf(err, CV_EFORMAT, "response cache entry: %u prompt tokens, the request has %d", prompt,
                         (int)n_prompt);
    if (completion > CV_RC_MAX_ENTRY / 4 || p[10])
        return cv_errorf(err, CV_EFORMAT, "response cache entry: %u completion tokens or bad padding", completion);
    p += 11;
    if ((size_t)(end - p) < stop_len + 4u || !text_ok(p, stop_len))
        return cv_errorf(err, CV_EFORMAT, "response cache entry: stop string truncated, not UTF-8 or with NUL");
    memcpy(out->stop_string, p, stop_len);
    out->stop_string[stop_len] = 0;
    p += stop_len;
    uint32_t n_chunks = get32(p);
    p += 4;
    if (n_chunks > (size_t)(end - p) / 8)
        return cv_errorf(err, CV_EFORMAT, "response cache entry: %u chunks cannot fit in %zu bytes", n_chunks,
                         (size_t)(end - p));
    /* One allocation: the chunk table, every id (aligned), every text. */
    size_t body = (size_t)(end - p);
    uint8_t *mem = malloc(n_chunks * sizeof(cv_rc_chunk) + body + 1);
    if (!mem) return cv_errorf(err, CV_ENOMEM, "response cache entry: out of memory");
    cv_rc_chunk *chunks = (cv_rc_chunk *)mem;
    int32_t *ids = (int32_t *)(mem + n_chunks * sizeof(cv_rc_chunk));
    size_t n_ids_all = 0;
    /* First pass: check; second: copy (the ids, then the texts, fit in the body's size). */
    const uint8_t *q = p;
    for (uint32_t i = 0; i < n_chunks; i++) {
        if ((size_t)(end - q) < 4) goto bad;
        uint32_t tl = get32(q);
        q += 4;
        if (tl > (size_t)(end - q) || (size_t)(end - q) - tl < 4 || !text_ok(q, tl)) goto bad;
        q += tl;
        uint32_t ni = get32(q);
        q += 4;
        if (ni > (size_t)(end - q) / 4) goto bad;
        for (uint32_t k = 0; k < ni; k++) {
            int32_t id = (int32_t)get32(q + 4 * k);
            if (id < 0 || id >= n_vocab) {
                free(mem);
                return cv_errorf(err, CV_EFORMAT, "response cache entry: token id %d outside the vocabulary (%d)",
                                 (int)id, (int)n_vocab);
            }
        }
        q += 4 * (size_t)ni;
        n_ids_all += ni;
    }
    if (q != end) goto bad;
    if (n_ids_all > completion) {
        free(mem);
        return cv_errorf(err, CV_EFORMAT, "response cache entry: %zu token ids for %u completion tokens", n_ids_all,
                         completion);
    }
    char *texts = (char *)(ids + n_ids_all);
    q = p;
    for (uint32_t i = 0; i < n_chunks; i++) {
        uint32_t tl = get32(q);
        memcpy(texts, q + 4, tl);
        chunks[i].text = texts;
        chunks[i].len = tl;
        texts += tl;
        q += 4 + tl;
        uint32_t ni = get32(q);
        q += 4;
        for (uint32_t k = 0; k < ni; k++) ids[k] = (int32_t)get32(q + 4 * k);
        chunks[i].ids = ids;
        chunks[i].n_ids = (int32_t)ni;
        ids += ni;
        q += 4 * (size_t)ni;
    }
    out->reason = (cv_finish)reason;
    out->prompt_tokens = (int32_t)prompt;
    out->completion_tokens = (int32_t)completion;
    out->chunks = chunks;
    out->n_chunks = n_chunks;
    out->mem = mem;
    return CV_OK;
bad:
    free(mem);
    return cv_errorf(err, CV_EFORMAT, "response cache entry: a chunk runs past the end, has text that is not UTF-8 "
                                      "or holds NUL, or bytes trail the last one");
}

void cv_rc_entry_free(cv_rc_entry *e) {
    free(e->mem);
    memset(e, 0, sizeof *e);
}
