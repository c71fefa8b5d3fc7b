/* block_pool: the memory blocks of a KV cache, their reference counts, and an index of
 * the full blocks whose contents are known (automatic prefix caching).
 *
 * A block is free, in use (ref > 0: some sequence's table holds it), or cached and
 * unused (ref 0, still in the index, on the LRU list). Taking a block pops the free
 * stack first (ids 0, 1, 2... while nothing was given back: compact memory), and only
 * when that is empty evicts the least recently unused cached block (it leaves the
 * index). Dropping the last reference puts a cached block at the most recent end of
 * the LRU list, any other block on the free stack.
 *
 * The index: a full block of block_size tokens is named by a hash chain,
 *   h_i = cv_bpool_chain(h_{i-1}, tokens of block i),  h_{-1} = the cache's seed
 * (the seed stands for what else changes the block's K/V: model version, KV type,
 * rope settings). A block's entry keeps its hash, its parent hash and its tokens, and
 * a lookup must match all three, so two prefixes share a block only if their tokens
 * are equal and their parents' 64-bit chain hashes are (a false match needs a 64-bit
 * collision of two earlier prefixes). At most one block per hash: publishing a second
 * block with a known hash leaves it private (it goes back to the free stack when its
 * users drop it).
 *
 * No allocation after cv_bpool_create; not thread-safe (the cache's owner locks).
 */
#ifndef CV_BLOCK_POOL_H
#define CV_BLOCK_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_bpool cv_bpool;

cv_status cv_bpool_create(int32_t n_blocks, int32_t block_size, cv_bpool **out, cv_error *err);
void cv_bpool_free(cv_bpool *p);

/* One link of the chain: the hash of a block of n tokens after a prefix hashed to parent. */
uint64_t cv_bpool_chain(uint64_t parent, const int32_t *tokens, int32_t n);
/* The same mixing over bytes (seeds: a model version's name, its settings). */
uint64_t cv_bpool_hash_bytes(uint64_t h, const void *data, size_t n);

/* Blocks that cv_bpool_take can hand out: free plus cached and unused. */
int32_t cv_bpool_available(const cv_bpool *p);
/* A block with one reference, or -1 when none is available (see above). */
int32_t cv_bpool_take(cv_bpool *p);
/* One more user of block b (which is in use or cached). */
void cv_bpool_ref(cv_bpool *p, int32_t b);
/* One user fewer; at 0 the block goes to the LRU list (cached) or the free stack. */
void cv_bpool_unref(cv_bpool *p, int32_t b);
int32_t cv_bpool_refs(const cv_bpool *p, int32_t b);

/* The cached block with this hash, parent and block_size tokens, or -1. */
int32_t cv_bpool_find(const cv_bpool *p, uint64_t hash, uint64_t parent, const int32_t *tokens);
/* Enters block b (in use, its K/V complete) into the index; 0 when b or another block
 * already holds that hash (nothing changes), 1 when entered. */
int cv_bpool_publish(cv_bpool *p, int32_t b, uint64_t hash, uint64_t parent, const int32_t *tokens);

/* Blocks in the index (in use or not) and evictions so far. */
int32_t cv_bpool_cached(const cv_bpool *p);
uint64_t cv_bpool_evictions(const cv_bpool *p);

#endif
