/* SentencePiece-style segmentation as llama.cpp does it for "llama" vocabularies:
 * spaces become U+2581, the text starts as one symbol per character, and the
 * adjacent pair whose concatenation is the highest-scoring piece is merged
 * (ties: leftmost first) until no pair is a piece. A final symbol that is not a
 * piece is emitted as its bytes' <0xNN> tokens (<unk> without them).
 *
 * Only normal and user-defined pieces take part in merging, as in SentencePiece:
 * text never turns into a control or byte token by accident.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "utf8.h"

static const char k_space_mark[] = "\xE2\x96\x81"; /* U+2581 */

typedef struct sym {
    size_t start;
    size_t len;   /* 0: merged into its left neighbour */
    int32_t prev, next;
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    size_t len;
} bigram;

/* Higher score first, then the leftmost. */
static int bigram_before(const void *x, const void *y) {
    const bigram *a = x, *b = y;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

/* A piece that segmentation may produce from text. */
static int32_t find_piece(const cv_tok *t, const char *s, size_t len) {
    int32_t id = tok_lookup(t, s, len);
    if (id < 0) return -1;
    uint8_t ty = t->type[id];
    return ty == CV_TOK_TYPE_NORMAL || ty == CV_TOK_TYPE_USER_DEFINED ? id : -1;
}

static void try_bigram(const cv_tok *t, const char *buf, const sym *s, tok_heap *h, int32_t l,
                       int32_t r) {
    if (l < 0 || r < 0) return;
    size_t len = s[l].len + s[r].len;
    int32_t id = find_piece(t, buf + s[l].start, len);
    if (id < 0) return;
    bigram b = {t->score[id], l, r, len};
    tok_heap_push(h, &b);
}

static cv_status emit_bytes(const cv_tok *t, const uint8_t *p, size_t len, tok_out *o,
                            cv_error *err) {
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->byte_tok[p[i]];
        if (id < 0) id = t->unk;
        if (id < 0)
            return cv_errorf(err, CV_EUNSUPPORTED,
                             "byte 0x%02X has no piece, no <0x%02X> token and the vocabulary "
                             "has no unknown token", p[i], p[i]);
        tok_out_push(o, id);
    }
    return CV_OK;
}

cv_status tok_spm_encode(const cv_tok *t, const char *text, size_t len, int prefix_space,
                         tok_out *o, cv_error *err) {
    size_t n_spaces = prefix_space ? 1 : 0;
    for (size_t i = 0; i < len; i++) n_spaces += text[i] == ' ';
    size_t blen = len + (prefix_space ? 1 : 0) + 2 * n_spaces;
    if (blen == 0) return CV_OK;
    cv_status st = CV_OK;
    char *buf = malloc(blen);
    sym *s = malloc(blen * sizeof *s);
    bigram *bg = malloc(3 * blen * sizeof *bg);
    if (!buf || !s || !bg) {
        st = cv_errorf(err, CV_ENOMEM, "SPM of %zu bytes: out of memory", len);
        goto out;
    }
    size_t w = 0;
    if (prefix_space) {
        memcpy(buf, k_space_mark, 3);
        w = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + w, k_space_mark, 3);
            w += 3;
        } else {
            buf[w++] = text[i];
        }
    }
    /* One symbol per character; an invalid byte is a character of its own. */
    int32_t n = 0;
    for (size_t i = 0; i < blen;) {
        uint32_t cp;
        int l = cv_utf8_decode((const uint8_t *)buf + i, blen - i, &cp);
        if (l == 0) l = 1;
        s[n].start = i;
        s[n].len = (size_t)l;
        s[n].prev = n - 1;
        s[n].next = n + 1;
        n++;
        i += (size_t)l;
    }
    s[n - 1].next = -1;
    tok_heap h = {(char *)bg, 0, sizeof(bigram), bigram_before};
    for (int32_t i = 1; i < n; i++) try_bigram(t, buf, s, &h, i - 1, i);
    while (h.n > 0) {
        bigram b;
        tok_heap_pop(&h, &b);
        sym *l = &s[b.left], *r = &s[b.right];
        /* Stale: one side merged with something else since it was queued. */
        if (l->len == 0 || r->len == 0 || l->len + r->len != b.len) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        try_bigram(t, buf, s, &h, l->prev, b.left);
        try_bigram(t, buf, s, &h, b.left, l->next);
    }
    for (int32_t i = 0; i >= 0 && st == CV_OK; i = s[i].next) {
        int32_t id = find_piece(t, buf + s[i].start, s[i].len);
        if (id >= 0) tok_out_push(o, id);
        else st = emit_bytes(t, (const uint8_t *)buf + s[i].start, s[i].len, o, err);
    }
out:
    free(buf);
    free(s);
    free(bg);
    return st;
}
