/* Byte-level BPE: every byte of a pre-tokenized word starts as the token of its
 * printable alias, then the adjacent pair with the lowest merge rank is merged
 * (ties: leftmost first) until no pair has a rank, as llama.cpp and Hugging Face
 * tokenizers do. Merges are looked up by id pair: tokenizer.c keeps only merges
 * whose two halves and result are tokens.
 */
#include <stdlib.h>

#include "tok_internal.h"
#include "utf8.h"

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand
 * for themselves; the 68 others get U+0100 onwards in byte order: 0x00-0x20,
 * 0x7F-0xA0, 0xAD. */
static int is_self_alias(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_bpe_byte_to_cp(uint8_t b) {
    if (is_self_alias(b)) return b;
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    return 0x100u + 67; /* 0xAD */
}

static int cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return is_self_alias(cp) ? (int)cp : -1;
    if (cp < 0x100 + 33) return (int)(cp - 0x100);
    if (cp < 0x100 + 67) return (int)(cp - 0x100 - 33 + 0x7F);
    if (cp == 0x100 + 67) return 0xAD;
    return -1;
}

size_t tok_bpe_unalias(const char *s, size_t len, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = cv_utf8_decode((const uint8_t *)s + i, len - i, &cp);
        int b = l ? cp_to_byte(cp) : -1;
        if (b >= 0) {
            out[w++] = (char)b;
        } else {
            if (l == 0) l = 1;
            for (int k = 0; k < l; k++) out[w++] = s[i + (size_t)k];
        }
        i += (size_t)l;
    }
    return w;
}

static const tok_merge *merge_find(const cv_tok *t, int32_t left, int32_t right) {
    if (!t->merges || left < 0 || right < 0) return NULL;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (uint64_t i = (h >> 17) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge *m = &t->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
    }
}

typedef struct sym {
    int32_t id;     /* -1: the byte has no token */
    int32_t prev, next;
} sym;

typedef struct pair {
    int32_t rank, left, right, left_id, right_id, result;
} pair;

/* Lower rank first, then the leftmost pair. */
static int pair_before(const void *x, const void *y) {
    const pair *a = x, *b = y;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void try_pair(const cv_tok *t, const sym *s, tok_heap *h, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const tok_merge *m = merge_find(t, s[l].id, s[r].id);
    if (!m) return;
    pair p = {m->rank, l, r, s[l].id, s[r].id, m->result};
    tok_heap_push(h, &p);
}

typedef struct scratch {
    sym *syms;
    pair *pairs;
    char *alias;
} scratch;

static void bpe_word(const cv_tok *t, const uint8_t *w, size_t n, scratch *sc, tok_out *o) {
    if (t->ignore_merges) {
        /* Llama 3: a word that is a token as a whole is taken as is. */
        size_t al = 0;
        for (size_t i = 0; i < n; i++)
            al += (size_t)cv_utf8_encode(tok_bpe_byte_to_cp(w[i]), sc->alias + al);
        int32_t id = tok_lookup(t, sc->alias, al);
        if (id >= 0) {
            tok_out_push(o, id);
            return;
        }
    }
    sym *s = sc->syms;
    for (size_t i = 0; i < n; i++) {
        s[i].id = t->byte_tok[w[i]];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    tok_heap h = {(char *)sc->pairs, 0, sizeof(pair), pair_before};
    for (size_t i = 1; i < n; i++) try_pair(t, s, &h, (int32_t)i - 1, (int32_t)i);
    while (h.n > 0) {
        pair p;
        tok_heap_pop(&h, &p);
        /* Stale when either side has merged since the pair was queued: a merge
         * changes the left symbol's id and retires the right one (id -1). */
        if (s[p.left].id != p.left_id || s[p.right].id != p.right_id || s[p.left].next != p.right)
            continue;
        s[p.left].id = p.result;
        s[p.left].next = s[p.right].next;
        if (s[p.right].next >= 0) s[s[p.right].next].prev = p.left;
        s[p.right].id = -1;
        s[p.right].prev = s[p.right].next = -1;
        try_pair(t, s, &h, s[p.left].prev, p.left);
        try_pair(t, s, &h, p.left, s[p.left].next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        /* A byte without a token (a broken vocabulary) becomes <unk> if there is
         * one; llama.cpp drops it. */
        if (s[i].id >= 0) tok_out_push(o, s[i].id);
        else if (t->unk >= 0) tok_out_push(o, t->unk);
    }
}

cv_status tok_bpe_encode(const cv_tok *t, const char *text, size_t len, tok_out *o,
                         cv_error *err) {
    if (len == 0) return CV_OK;
    tok_words w;
    cv_status st = tok_pretok_split(t->pre, text, len, &w, err);
    if (st != CV_OK) return st;
    size_t longest = 0;
    for (size_t i = 0; i < w.n_words; i++)
        if (w.bounds[i + 1] - w.bounds[i] > longest) longest = w.bounds[i + 1] - w.bounds[i];
    scratch sc;
    sc.syms = malloc(longest * sizeof *sc.syms);
    sc.pairs = malloc(3 * longest * sizeof *sc.pairs);
    sc.alias = malloc(2 * longest);
    if (!sc.syms || !sc.pairs || !sc.alias) {
        st = cv_errorf(err, CV_ENOMEM, "BPE of a %zu-byte word: out of memory", longest);
        goto out;
    }
    for (size_t i = 0; i < w.n_words; i++)
        bpe_word(t, (const uint8_t *)text + w.bounds[i], w.bounds[i + 1] - w.bounds[i], &sc, o);
out:
    free(sc.syms);
    free(sc.pairs);
    free(sc.alias);
    free(w.bounds);
    return st;
}
