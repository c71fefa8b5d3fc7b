/* kv_cache: paged key/value cache shared by all sequences of one model.
 *
 * Positions live in blocks of block_size token slots. Layout of a pool (what the
 * backend's attention and kv_store ops read and write): element (block b, slot s, kv
 * head h, dim d) is at
 *   pool + ((b * block_size + s) * n_kv_heads + h) * head_dim + d
 * with elements of type F16 (default) or F32. Position p of a sequence lives in block
 * table[p / block_size], slot p % block_size.
 *
 * Layers form one or two groups, each with a block table per sequence; a block id
 * names the same slots in every pool of its group.
 *  - CV_KV_FULL: layers that attend to every earlier position. Its table grows with
 *    the sequence (one block per block_size positions). Without sliding layers this
 *    is every layer and the cache is exactly a plain paged cache: each layer's K and V
 *    pools of n_blocks blocks one after the other, block ids 0..n_blocks-1.
 *  - CV_KV_SLIDING: layers that only read the last `window` positions (Gemma 3's local
 *    layers). A sequence holds at most a ring of R = cv_kv_ring_blocks() blocks here;
 *    its table is virtual, entry i = ring[i % R], filled for every reserved position,
 *    so position p lands in ring slot p mod (R * block_size) and the attention ops read
 *    it through the table unchanged. A forward step first stores the K/V of all its
 *    rows, then reads positions pos-window+1..pos for each: the ring holds window +
 *    max_step - 1 positions, so the rows of one step (at most max_step per sequence)
 *    never overwrite a position that a row of the same step still reads.
 *  The sliding group exists only when some but not all layers slide and the ring is
 *  shorter than max_seq_len; otherwise every layer is in the full group.
 *
 * Memory: n_blocks memory blocks and one free list for both groups, so memory follows
 * the mix of sequences (short ones use both groups alike, long ones mostly the full
 * group). A memory block holds one block of every layer of the group with more layers
 * (the wide group), or pack = wide layers / narrow layers blocks of the other: memory
 * block m is K0 V0 K1 V1 ... of the wide group's layers, or pack runs of the narrow
 * group's; ids count layer-blocks, so a layer's pool starts at its own offset in block 0
 * and block m's id is m * 2 * wide layers (+ j * 2 * narrow layers for the narrow
 * group's j-th). A memory block partly used by narrow blocks counts as used.
 *
 * The memory lives where the model's backend computes: anonymous host mappings for the
 * CPU (untouched blocks cost no resident memory), backend allocations otherwise, with
 * a device copy of every block table kept up to date by cv_kv_reserve (the ops read
 * block tables from device memory: cv_kv_device_table).
 *
 * A tensor-parallel model (n_ranks > 1) keeps one copy of the memory per rank, each
 * holding that rank's n_kv_heads heads in its own backend's memory, under one set of
 * block tables and one free list: every rank's sequence s uses the same blocks.
 *
 * Sequences are numbered 0..max_seqs-1. cv_kv_reserve grows a sequence to hold n
 * positions, taking blocks from the free list; it fails with CV_EBUSY (and changes
 * nothing) when the free list runs short, so the caller can preempt another sequence.
 * All memory is allocated by cv_kv_create: reserving and releasing never allocate.
 * Not thread-safe: one engine thread owns a cache.
 *
 * Prefix caching (prefix_cache != 0; block_pool.h): once a block of a sequence is full
 * and its K/V computed, cv_kv_publish names it by the hash chain of every token up to
 * its end, seeded with prefix_seed (what else decides its K/V: the model version, KV
 * type, rope settings, block size). A new sequence's cv_kv_share_prefix maps the
 * longest run of such blocks matching its tokens into its table (one more reference
 * each) and the caller feeds only the rest. Shared blocks are full, so nobody writes
 * them again: a sequence writes only positions past what it shared, into blocks of its
 * own. Released blocks that are in the index stay cached until cv_kv_reserve needs
 * their memory (least recently released first; a sequence gives its blocks back last
 * first, so a prefix's head outlives its tail); cv_kv_free_blocks counts them as free.
 * With a sliding ring the cache keeps no prefixes: a ring block holds only the last
 * window of positions and is overwritten as the sequence grows, so the sliding layers'
 * K/V of a prefix are gone by the time it could be shared. Every layer in the full
 * group (window 0, kv_swa_full_cache in the engine) makes such a model cacheable.
 */
#ifndef CV_KV_CACHE_H
#define CV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cv_error.h"
#include "quant.h"

#define CV_KV_MAX_RANKS 8

typedef enum cv_kv_group {
    CV_KV_FULL = 0,       /* layers that read every earlier position */
    CV_KV_SLIDING = 1     /* sliding-window layers: a ring of blocks per sequence */
} cv_kv_group;

typedef struct cv_kv_config {
    int32_t n_layers;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t block_size;   /* token slots per block */
    int32_t n_blocks;     /* memory blocks in the whole cache (see above) */
    int32_t max_seqs;     /* sequence ids 0..max_seqs-1 */
    int32_t max_seq_len;  /* positions one sequence may hold (its table's capacity) */
    cv_type type;         /* CV_TYPE_F16 or CV_TYPE_F32 */
    int32_t n_ranks;      /* tensor-parallel ranks, 1..CV_KV_MAX_RANKS (0: 1) */
    /* Whose memory holds rank r's pools; NULL or a CPU backend: host. */
    cv_backend *backends[CV_KV_MAX_RANKS];
    /* Sliding-window layers (window 0 or sliding NULL: none, every layer in the full
     * group). sliding[l] != 0 for each of the n_layers layers that only reads positions
     * pos-window+1..pos; the array is copied by cv_kv_create. */
    const uint8_t *sliding;
    int32_t window;
    int32_t max_step;     /* most positions one forward step adds to one sequence */
    int prefix_cache;     /* keep and share full blocks (above); cv_kv_config_of says
                             whether it is on: never with a sliding ring */
    uint64_t prefix_seed; /* the hash chain's start */
    int k_only;           /* one pool per layer: the values are the first v_dim elements
                             of each key slot (multi-head latent attention), and
                             cv_kv_v_pool returns the K pool */
    int32_t v_dim;        /* the values' width when k_only (kv_layer's v_dim); else 0 */
} cv_kv_config;

typedef struct cv_kv_cache cv_kv_cache;

cv_status cv_kv_create(const cv_kv_config *cfg, cv_kv_cache **out, cv_error *err);
void cv_kv_free(cv_kv_cache *kv);

/* Blocks in a sequence's sliding ring under this config: ceil((window + max_step - 1)
 * / block_size), or 0 when it has no sliding group (see above). */
int32_t cv_kv_ring_blocks(const cv_kv_config *cfg);
/* Bytes of one memory block under this config, all ranks. */
size_t cv_kv_block_bytes(const cv_kv_config *cfg);
/* Memory blocks one sequence of n_pos positions takes on its own (narrow blocks
 * rounded up to whole memory blocks). */
int32_t cv_kv_blocks_for(const cv_kv_config *cfg, int32_t n_pos);

/* The config as created (sliding points to the cache's copy). */
const cv_kv_config *cv_kv_config_of(const cv_kv_cache *kv);
/* Bytes of K+V memory for all layers and ranks (whether touched or not). */
size_t cv_kv_bytes(const cv_kv_cache *kv);
/* Bytes of K+V memory that one more token position takes in the full group, across
 * its layers and all ranks (every layer when nothing slides). */
size_t cv_kv_bytes_per_token(const cv_kv_cache *kv);
/* Bytes of K+V memory held by the blocks of sequence `seq`, both groups, all ranks. */
size_t cv_kv_seq_bytes(const cv_kv_cache *kv, int32_t seq);
/* The group that holds layer `layer`'s K and V. */
cv_kv_group cv_kv_layer_group(const cv_kv_cache *kv, int32_t layer);

/* Make sequence `seq` able to hold positions 0..n_pos-1. CV_EBUSY when not enough
 * free memory blocks, CV_ERANGE when n_pos exceeds max_seq_len or seq is out of
 * range, or the backend's error when the device copy of the table cannot be updated. */
cv_status cv_kv_reserve(cv_kv_cache *kv, int32_t seq, int32_t n_pos, cv_error *err);
/* Speculative decoding's rollback: sequence `seq` keeps positions 0..n_pos-1 (what was
 * verified) and gives back the blocks that hold only later positions (rejected drafts),
 * newest first; later positions of a block it keeps are simply written again by the
 * next step. Its published prefix blocks lie within n_pos (publish only what was
 * verified), so the index never names a rejected token. A sliding ring keeps its
 * blocks while the sequence still spans them. No-op when it holds no more than that. */
void cv_kv_truncate(cv_kv_cache *kv, int32_t seq, int32_t n_pos);
/* Give all blocks of `seq` back to the free list; the sequence is empty again. */
void cv_kv_release(cv_kv_cache *kv, int32_t seq);

/* For an empty sequence: maps the longest run of cached blocks that holds tokens
 * 0..k-1 (k <= n, whole blocks) into its table, and sets *matched = k: its positions
 * 0..k-1 are there, the caller feeds from k. 0 when prefix caching is off or seq
 * already holds blocks. Fails only when the device copy of the table cannot be
 * updated (nothing changes). */
cv_status cv_kv_share_prefix(cv_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n,
                             int32_t *matched, cv_error *err);
/* Positions 0..n_pos-1 of seq hold the K/V of tokens[0..n_pos-1]: its full blocks among
 * them become cached (shareable). Call after each forward step; no-op when off. */
void cv_kv_publish(cv_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n_pos);
/* Blocks in the prefix index (held by sequences or not) and blocks evicted from it. */
int32_t cv_kv_cached_blocks(const cv_kv_cache *kv);
uint64_t cv_kv_evictions(const cv_kv_cache *kv);

/* Positions sequence `seq` can hold now (a multiple of block_size). */
int32_t cv_kv_capacity(const cv_kv_cache *kv, int32_t seq);
/* Its block table in `group`, capacity / block_size entries (valid until the next
 * reserve/release of that sequence). A cache without a sliding group answers
 * CV_KV_SLIDING with the full table: every layer reads that one. */
const int32_t *cv_kv_block_table(const cv_kv_cache *kv, cv_kv_group group, int32_t seq);
/* The same table in rank `rank`'s backend memory, for cv_attn_row.block_table. */
const int32_t *cv_kv_device_table(const cv_kv_cache *kv, int32_t rank, cv_kv_group group, int32_t seq);
/* Memory blocks free (of cv_kv_config_of(kv)->n_blocks), cached ones nobody holds
 * included. */
int32_t cv_kv_free_blocks(const cv_kv_cache *kv);

/* The K and V pools of one layer on one rank (block ids of the layer's group). */
void *cv_kv_k_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer);
void *cv_kv_v_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer);

#endif
