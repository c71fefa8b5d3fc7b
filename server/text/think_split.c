#include "think_split.h"

#include <string.h>

static const char OPEN[] = "<think>", CLOSE[] = "</think>";

void cv_think_init(cv_think_split *s, int starts_inside) {
    memset(s, 0, sizeof *s);
    s->inside = starts_inside;
}

static int is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Bytes of text[i..n) matching a prefix of the marker this state looks for. */
static size_t prefix_match(const char *m, const char *t, size_t n) {
    size_t k = 0;
    while (k < n && m[k] && t[k] == m[k]) k++;
    return k;
}

void cv_think_feed(cv_think_split *s, const char *text, size_t len, cv_think_emit emit, void *ctx) {
    /* The held bytes go first: work on held + text without copying text when possible. */
    char buf[sizeof s->hold + 256];
    while (s->n_hold && len) {
        size_t take = len < 256 ? len : 256;
        memcpy(buf, s->hold, s->n_hold);
        memcpy(buf + s->n_hold, text, take);
        size_t n = s->n_hold + take;
        s->n_hold = 0;
        text += take;
        len -= take;
        /* Feed the joined bytes; anything they leave held stays held. */
        cv_think_feed(s, buf, n, emit, ctx);
    }
    size_t start = 0, i = 0;
    while (i < len) {
        if (s->after_close && !s->inside) {
            if (is_space(text[i])) {
                start = ++i;
                continue;
            }
            s->after_close = 0;
        }
        const char *m = s->inside ? CLOSE : OPEN;
        size_t ml = strlen(m);
        if (text[i] != '<') {
            i++;
            continue;
        }
        size_t k = prefix_match(m, text + i, len - i);
        if (k == ml) {
            if (i > start) emit(ctx, s->inside, text + start, i - start);
            s->after_close = s->inside;
            s->inside = !s->inside;
            i += ml;
            start = i;
        } else if (i + k == len) {
            /* The rest may be the start of the marker: hold it. */
            if (i > start) emit(ctx, s->inside, text + start, i - start);
            memcpy(s->hold, text + i, k);
            s->n_hold = k;
            return;
        } else {
            i++;
        }
    }
    if (i > start) emit(ctx, s->inside, text + start, i - start);
}

void cv_think_flush(cv_think_split *s, cv_think_emit emit, void *ctx) {
    if (s->n_hold) emit(ctx, s->inside, s->hold, s->n_hold);
    s->n_hold = 0;
}

int cv_think_prompt_opens(const cv_tok *tok, const int32_t *ids, size_t n) {
    char tail[64];
    size_t len = 0;
    /* The last few tokens' text, back to front until it holds the marker's length. */
    for (size_t k = n; k > 0 && n - k < 8; k--) {
        const char *p;
        size_t pl;
        if (cv_tok_piece(tok, ids[k - 1], CV_TOK_RENDER_SPECIAL, &p, &pl, NULL) != CV_OK) return 0;
        if (pl + len > sizeof tail) break;
        memmove(tail + pl, tail, len);
        memcpy(tail, p, pl);
        len += pl;
    }
    while (len && is_space(tail[len - 1])) len--;
    return len >= sizeof OPEN - 1 && memcmp(tail + len - (sizeof OPEN - 1), OPEN, sizeof OPEN - 1) == 0;
}
