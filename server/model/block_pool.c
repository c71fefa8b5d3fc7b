#include "block_pool.h"

#include <stdlib.h>
#include <string.h>

struct cv_bpool {
    int32_t n_blocks, block_size;
    int32_t *free_stack, n_free;
    int32_t *ref;
    /* LRU list of cached blocks nobody uses: head is the least recent (-1 ends it). */
    int32_t *lru_prev, *lru_next, lru_head, lru_tail, n_lru;
    /* Index: open addressing over block ids keyed by hash[b], linear probing. */
    uint8_t *cached;
    uint64_t *hash, *parent;
    int32_t *tokens;        /* n_blocks * block_size */
    int32_t *slots;         /* cap entries, -1 empty */
    uint32_t mask;
    int32_t n_cached;
    uint64_t evictions;
};

/* splitmix64's finalizer: every input bit reaches every output bit. */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t cv_bpool_chain(uint64_t parent, const int32_t *tokens, int32_t n) {
    uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ULL);
    for (int32_t i = 0; i < n; i++) h = mix(h + (uint32_t)tokens[i] + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
    return h;
}

uint64_t cv_bpool_hash_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    h = mix(h ^ n);
    for (size_t i = 0; i < n; i++) h = mix(h + p[i] + 0x9e3779b97f4a7c15ULL);
    return h;
}

cv_status cv_bpool_create(int32_t n_blocks, int32_t block_size, cv_bpool **out, cv_error *err) {
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0 || n_blocks > (1 << 29))
        return cv_errorf(err, CV_EINVAL, "block pool: %d blocks of %d tokens", n_blocks, block_size);
    cv_bpool *p = calloc(1, sizeof *p);
    if (!p) return cv_errorf(err, CV_ENOMEM, "block pool: out of memory");
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks) cap *= 2;
    p->mask = cap - 1;
    const size_t nb = (size_t)n_blocks;
    p->free_stack = malloc(nb * sizeof *p->free_stack);
    p->ref = calloc(nb, sizeof *p->ref);
    p->lru_prev = malloc(nb * sizeof *p->lru_prev);
    p->lru_next = malloc(nb * sizeof *p->lru_next);
    p->cached = calloc(nb, 1);
    p->hash = malloc(nb * sizeof *p->hash);
    p->parent = malloc(nb * sizeof *p->parent);
    p->tokens = malloc(nb * (size_t)block_size * sizeof *p->tokens);
    p->slots = malloc(cap * sizeof *p->slots);
    if (!p->free_stack || !p->ref || !p->lru_prev || !p->lru_next || !p->cached || !p->hash ||
        !p->parent || !p->tokens || !p->slots) {
        cv_bpool_free(p);
        return cv_errorf(err, CV_ENOMEM, "block pool: out of memory for %d blocks", n_blocks);
    }
    /* Pop order 0, 1, 2...: low blocks first keeps a short sequence's memory compact. */
    for (int32_t b = 0; b < n_blocks; b++) p->free_stack[b] = n_blocks - 1 - b;
    p->n_free = n_blocks;
    p->lru_head = p->lru_tail = -1;
    memset(p->slots, 0xff, cap * sizeof *p->slots);
    *out = p;
    return CV_OK;
}

void cv_bpool_free(cv_bpool *p) {
    if (!p) return;
    free(p->free_stack);
    free(p->ref);
    free(p->lru_prev);
    free(p->lru_next);
    free(p->cached);
    free(p->hash);
    free(p->parent);
    free(p->tokens);
    free(p->slots);
    free(p);
}

/* ---- LRU list ---- */

static void lru_unlink(cv_bpool *p, int32_t b) {
    if (p->lru_prev[b] >= 0) p->lru_next[p->lru_prev[b]] = p->lru_next[b];
    else p->lru_head = p->lru_next[b];
    if (p->lru_next[b] >= 0) p->lru_prev[p->lru_next[b]] = p->lru_prev[b];
    else p->lru_tail = p->lru_prev[b];
    p->n_lru--;
}

static void lru_push(cv_bpool *p, int32_t b) {
    p->lru_next[b] = -1;
    p->lru_prev[b] = p->lru_tail;
    if (p->lru_tail >= 0) p->lru_next[p->lru_tail] = b;
    else p->lru_head = b;
    p->lru_tail = b;
    p->n_lru++;
}

/* ---- index ---- */

static uint32_t home(const cv_bpool *p, uint64_t h) { return (uint32_t)(h ^ (h >> 32)) & p->mask; }

/* The slot holding block b's hash, or of the first empty slot on its probe path. */
static uint32_t probe(const cv_bpool *p, uint64_t h) {
    uint32_t i = home(p, h);
    while (p->slots[i] >= 0 && p->hash[p->slots[i]] != h) i = (i + 1) & p->mask;
    return i;
}

/* Backward-shift deletion: later entries of the probe run move up, so lookups never
 * need tombstones. */
static void index_remove(cv_bpool *p, int32_t b) {
    uint32_t i = probe(p, p->hash[b]);
    p->slots[i] = -1;
    for (uint32_t j = (i + 1) & p->mask; p->slots[j] >= 0; j = (j + 1) & p->mask) {
        const uint32_t k = home(p, p->hash[p->slots[j]]);
        /* the entry at j may fill the hole at i unless its home lies in (i, j] */
        if (((j - k) & p->mask) >= ((j - i) & p->mask)) {
            p->slots[i] = p->slots[j];
            p->slots[j] = -1;
            i = j;
        }
    }
    p->cached[b] = 0;
    p->n_cached--;
}

int32_t cv_bpool_find(const cv_bpool *p, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    const int32_t b = p->slots[probe(p, hash)];
    if (b < 0 || p->parent[b] != parent ||
        memcmp(p->tokens + (size_t)b * (size_t)p->block_size, tokens, (size_t)p->block_size * sizeof *tokens))
        return -1;
    return b;
}

int cv_bpool_publish(cv_bpool *p, int32_t b, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    if (p->cached[b]) return 0;
    const uint32_t i = probe(p, hash);
    if (p->slots[i] >= 0) return 0;
    p->slots[i] = b;
    p->cached[b] = 1;
    p->hash[b] = hash;
    p->parent[b] = parent;
    memcpy(p->tokens + (size_t)b * (size_t)p->block_size, tokens, (size_t)p->block_size * sizeof *tokens);
    p->n_cached++;
    return 1;
}

/* ---- blocks ---- */

int32_t cv_bpool_available(const cv_bpool *p) { return p->n_free + p->n_lru; }

int32_t cv_bpool_take(cv_bpool *p) {
    int32_t b;
    if (p->n_free > 0) {
        b = p->free_stack[--p->n_free];
    } else if (p->lru_head >= 0) {
        b = p->lru_head;
        lru_unlink(p, b);
        index_remove(p, b);
        p->evictions++;
    } else {
        return -1;
    }
    p->ref[b] = 1;
    return b;
}

void cv_bpool_ref(cv_bpool *p, int32_t b) {
    if (p->ref[b]++ == 0) lru_unlink(p, b);
}

void cv_bpool_unref(cv_bpool *p, int32_t b) {
    if (--p->ref[b] > 0) return;
    if (p->cached[b]) lru_push(p, b);
    else p->free_stack[p->n_free++] = b;
}

int32_t cv_bpool_refs(const cv_bpool *p, int32_t b) { return p->ref[b]; }
int32_t cv_bpool_cached(const cv_bpool *p) { return p->n_cached; }
uint64_t cv_bpool_evictions(const cv_bpool *p) { return p->evictions; }
