/* tok_internal: the loaded tokenizer's layout and the parts shared by the
 * tokenizer modules (tokenizer.c: loading, special tokens, decoding;
 * tok_spm.c and tok_bpe.c: the two segmenters; tok_pretok.c: the BPE
 * pre-tokenizers; tok_heap.c: their merge queue). Not a public header.
 */
#ifndef CV_TOK_INTERNAL_H
#define CV_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef enum tok_pre {
    TOK_PRE_NONE = 0,       /* SPM: no pre-tokenizer */
    TOK_PRE_GPT2,           /* gpt-2, default */
    TOK_PRE_LLAMA3,         /* llama3, llama-bpe, ... */
    TOK_PRE_QWEN2,          /* qwen2 (Qwen2, 2.5, 3), deepseek-r1-qwen, ... */
    TOK_PRE_QWEN35,         /* qwen35 */
    TOK_PRE_DEEPSEEK_LLM,   /* deepseek-llm */
    TOK_PRE_DEEPSEEK_CODER, /* deepseek-coder */
    TOK_PRE_DEEPSEEK_V3,    /* deepseek-v3 */
    TOK_PRE_FALCON,         /* falcon */
    TOK_PRE_SMOLLM,         /* smollm, starcoder, refact, command-r, ... */
    TOK_PRE_TEKKEN          /* tekken */
} tok_pre;

typedef struct tok_merge {
    uint64_t key;   /* left id << 32 | right id */
    int32_t rank;   /* -1: empty slot */
    int32_t result; /* id of the concatenation */
} tok_merge;

#define TOK_MAX_EOG 16

struct cv_tok {
    cv_tok_kind kind;
    tok_pre pre;
    const char *pre_name; /* the tokenizer.ggml.pre value (static), "" for SPM */
    int32_t n;

    char *text;          /* every token's vocabulary text, NUL-terminated */
    uint64_t *text_off;
    uint32_t *text_len;
    char *piece;         /* what each token decodes to (see tokenizer.c) */
    uint64_t *piece_off;
    uint32_t *piece_len;
    size_t max_piece;    /* longest piece or text */
    float *score;
    uint8_t *type;       /* cv_tok_type */

    int32_t *map;        /* open-addressing hash: text -> id, -1 empty */
    uint64_t map_mask;
    tok_merge *merges;   /* BPE: (left, right) -> rank, result */
    uint64_t merge_mask;

    int32_t byte_tok[256]; /* SPM: <0xNN>; BPE: the byte's mapped code point */

    /* Special-token matching: candidate lengths (descending) and first bytes. */
    uint32_t *special_lens;
    size_t n_special_lens;
    uint8_t special_first[32];

    int32_t bos, eos, unk;
    int32_t eog[TOK_MAX_EOG];
    int n_eog;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
};

/* Ids collected by an encoder: written while there is room, always counted. */
typedef struct tok_out {
    int32_t *ids;
    size_t cap;
    size_t n;
} tok_out;

static inline void tok_out_push(tok_out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

int32_t tok_lookup(const cv_tok *t, const char *s, size_t len);

/* Min-heap of esz-byte elements in v (room for every push), ordered by before. */
typedef struct tok_heap {
    char *v;
    size_t n, esz;
    int (*before)(const void *a, const void *b);
} tok_heap;

void tok_heap_push(tok_heap *h, const void *e);
void tok_heap_pop(tok_heap *h, void *out); /* h->n > 0 */

/* Segments text[0..len) (one fragment between special tokens) with SPM and
 * appends the ids. prefix_space: prepend the SentencePiece leading space. */
cv_status tok_spm_encode(const cv_tok *t, const char *text, size_t len, int prefix_space,
                         tok_out *o, cv_error *err);

/* Pre-tokenizes and BPE-merges text[0..len) (one fragment), appending the ids. */
cv_status tok_bpe_encode(const cv_tok *t, const char *text, size_t len, tok_out *o,
                         cv_error *err);

/* Byte-level BPE's printable alias of each byte (GPT-2's bytes_to_unicode). */
uint32_t tok_bpe_byte_to_cp(uint8_t b);
/* Reverses the aliasing of a byte-level vocabulary text into out (room for len
 * bytes); code points that are no byte alias are copied unchanged. Returns the
 * length written. */
size_t tok_bpe_unalias(const char *s, size_t len, char *out);

/* Word boundaries of a pre-tokenized fragment, as byte offsets: word i is
 * [bounds[i], bounds[i+1]). */
typedef struct tok_words {
    size_t *bounds;
    size_t n_words;
} tok_words;

/* Splits text[0..len) into words with the pre-tokenizer's rules. On success
 * w->bounds is allocated (free() it). */
cv_status tok_pretok_split(tok_pre pre, const char *text, size_t len, tok_words *w,
                           cv_error *err);

#endif
