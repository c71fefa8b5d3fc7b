/* kv_cache: paged key/value cache shared by all sequences of one model.
 *
 * Memory is split into n_blocks fixed-size blocks of block_size token slots. A block
 * id names the same slots in every layer's K and V pools, so one block table per
 * sequence covers all layers. Layout of a pool (what the backend's attention and
 * kv_store ops read and write): element (block b, slot s, kv head h, dim d) is at
 *   pool + ((b * block_size + s) * n_kv_heads + h) * head_dim + d
 * with elements of type F16 (default) or F32. Position p of a sequence lives in block
 * table[p / block_size], slot p % block_size.
 *
 * The pools live where the model's backend computes: anonymous host mappings for the
 * CPU (untouched blocks cost no resident memory), backend allocations otherwise, with
 * a device copy of every block table kept up to date by cv_kv_reserve (the ops read
 * block tables from device memory: cv_kv_device_table).
 *
 * A tensor-parallel model (n_ranks > 1) keeps one set of pools per rank, each holding
 * that rank's n_kv_heads heads in its own backend's memory, under one set of block
 * tables and one free list: every rank's sequence s uses the same blocks.
 *
 * Sequences are numbered 0..max_seqs-1. cv_kv_reserve grows a sequence to hold n
 * positions, taking blocks from a free list; it fails with CV_EBUSY (and changes
 * nothing) when the free list runs short, so the caller can preempt another sequence.
 * All memory is allocated by cv_kv_create: reserving and releasing never allocate.
 * Not thread-safe: one engine thread owns a cache.
 */
#ifndef CV_KV_CACHE_H
#define CV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cv_error.h"
#include "quant.h"

#define CV_KV_MAX_RANKS 8

typedef struct cv_kv_config {
    int32_t n_layers;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t block_size;   /* token slots per block */
    int32_t n_blocks;     /* blocks in the whole cache */
    int32_t max_seqs;     /* sequence ids 0..max_seqs-1 */
    int32_t max_seq_len;  /* positions one sequence may hold (its table's capacity) */
    cv_type type;         /* CV_TYPE_F16 or CV_TYPE_F32 */
    int32_t n_ranks;      /* tensor-parallel ranks, 1..CV_KV_MAX_RANKS (0: 1) */
    /* Whose memory holds rank r's pools; NULL or a CPU backend: host. */
    cv_backend *backends[CV_KV_MAX_RANKS];
} cv_kv_config;

typedef struct cv_kv_cache cv_kv_cache;

cv_status cv_kv_create(const cv_kv_config *cfg, cv_kv_cache **out, cv_error *err);
void cv_kv_free(cv_kv_cache *kv);

const cv_kv_config *cv_kv_config_of(const cv_kv_cache *kv);
/* Bytes of K+V memory for all layers and ranks (whether touched or not). */
size_t cv_kv_bytes(const cv_kv_cache *kv);
/* Bytes of K+V memory that one token position takes across all layers and ranks. */
size_t cv_kv_bytes_per_token(const cv_kv_cache *kv);

/* Make sequence `seq` able to hold positions 0..n_pos-1. CV_EBUSY when not enough
 * free blocks, CV_ERANGE when n_pos exceeds max_seq_len or seq is out of range, or the
 * backend's error when the device copy of the table cannot be updated. */
cv_status cv_kv_reserve(cv_kv_cache *kv, int32_t seq, int32_t n_pos, cv_error *err);
/* Give all blocks of `seq` back to the free list; the sequence is empty again. */
void cv_kv_release(cv_kv_cache *kv, int32_t seq);

/* Positions sequence `seq` can hold now (a multiple of block_size). */
int32_t cv_kv_capacity(const cv_kv_cache *kv, int32_t seq);
/* Its block table (valid until the next reserve/release of that sequence). */
const int32_t *cv_kv_block_table(const cv_kv_cache *kv, int32_t seq);
/* The same table in rank `rank`'s backend memory, for cv_attn_row.block_table. */
const int32_t *cv_kv_device_table(const cv_kv_cache *kv, int32_t rank, int32_t seq);
int32_t cv_kv_free_blocks(const cv_kv_cache *kv);

/* The K and V pools of one layer on one rank. */
void *cv_kv_k_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer);
void *cv_kv_v_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer);

#endif
