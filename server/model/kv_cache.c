#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "block_pool.h"

#define N_GROUPS 2

/* One layer group's bookkeeping, shared by the ranks. */
typedef struct kv_group {
    int32_t n_layers;
    int32_t ring;           /* blocks a sequence holds at most: its table repeats after */
    int32_t *tables;        /* max_seqs * table_cap block ids */
} kv_group;

/* One tensor-parallel rank's memory. */
typedef struct kv_rank {
    cv_backend *dev;        /* a non-CPU backend holding mem and d_tables, else NULL */
    uint8_t *mem;           /* n_blocks memory blocks (layout: kv_cache.h) */
    int32_t *d_tables;      /* every group's tables in dev's memory (NULL on the host) */
} kv_rank;

struct cv_kv_cache {
    cv_kv_config cfg;
    size_t unit;            /* bytes of one layer's K (or V) for one block: a block id's step */
    size_t gap;             /* from a layer's K pool to its V pool; twice that to the next layer */
    size_t mem_bytes;       /* one rank's memory */
    kv_rank ranks[CV_KV_MAX_RANKS];
    kv_group groups[N_GROUPS];
    int32_t n_groups;       /* 1, or 2 with a sliding ring */
    int32_t wide;           /* the group with a memory block per block (the other packs `pack`) */
    int32_t id_scale;       /* block id of memory block m: m * id_scale */
    int32_t pack;           /* narrow blocks per memory block */
    uint8_t *layer_group;   /* per layer: its cv_kv_group */
    int32_t *layer_index;   /* per layer: its index within its group */
    int32_t table_cap;      /* entries per sequence table */
    int32_t *n_entries;     /* table entries filled per sequence (the same in every group) */
    cv_bpool *pool;         /* the memory blocks: free, in use, cached (block_pool.h) */
    int prefix;             /* prefix caching on (one group only: see kv_cache.h) */
    int32_t *n_published;   /* per sequence: leading full blocks offered to the index */
    uint64_t *chain;        /* per sequence: the chain hash of those blocks */
    /* Narrow blocks: slab s = m * pack + j is block j of memory block m. The free ones
     * of partly used memory blocks form a doubly linked list (-1 ends it). */
    int32_t *slab_next, *slab_prev, slab_head, n_free_slabs;
    int32_t *slabs_used;    /* per memory block */
};

/* Pools per layer: K and V, or K alone when the values are its prefix (k_only). */
static size_t n_pools(const cv_kv_config *c) { return c->k_only ? 1 : 2; }

static size_t slot_bytes(const cv_kv_config *c) {
    return (size_t)c->n_kv_heads * (size_t)c->head_dim * (c->type == CV_TYPE_F32 ? 4 : 2);
}

static int32_t n_sliding(const cv_kv_config *c) {
    int32_t n = 0;
    for (int32_t l = 0; c->sliding && l < c->n_layers; l++) n += c->sliding[l] != 0;
    return n;
}

int32_t cv_kv_ring_blocks(const cv_kv_config *c) {
    const int32_t slides = n_sliding(c);
    if (c->window <= 0 || c->max_step <= 0 || c->block_size <= 0 || slides == 0 || slides == c->n_layers)
        return 0;
    int64_t ring = ((int64_t)c->window + c->max_step - 1 + c->block_size - 1) / c->block_size;
    int64_t cap = ((int64_t)c->max_seq_len + c->block_size - 1) / c->block_size;
    return ring < cap ? (int32_t)ring : 0;
}

/* Layers of each group under c: [CV_KV_FULL], [CV_KV_SLIDING] (0 without a ring). */
static void group_layers(const cv_kv_config *c, int32_t layers[N_GROUPS]) {
    layers[CV_KV_SLIDING] = cv_kv_ring_blocks(c) ? n_sliding(c) : 0;
    layers[CV_KV_FULL] = c->n_layers - layers[CV_KV_SLIDING];
}

size_t cv_kv_block_bytes(const cv_kv_config *c) {
    int32_t layers[N_GROUPS];
    group_layers(c, layers);
    const int32_t wide = layers[0] > layers[1] ? layers[0] : layers[1];
    const size_t ranks = c->n_ranks > 0 ? (size_t)c->n_ranks : 1;
    return n_pools(c) * (size_t)wide * ranks * slot_bytes(c) * (size_t)c->block_size;
}

int32_t cv_kv_blocks_for(const cv_kv_config *c, int32_t n_pos) {
    int32_t layers[N_GROUPS];
    group_layers(c, layers);
    const int32_t entries = (n_pos + c->block_size - 1) / c->block_size;
    if (!layers[CV_KV_SLIDING]) return entries;
    const int32_t ring = cv_kv_ring_blocks(c), slid = entries < ring ? entries : ring;
    const int32_t wide = layers[CV_KV_FULL] >= layers[CV_KV_SLIDING] ? CV_KV_FULL : CV_KV_SLIDING;
    const int32_t pack = layers[wide] / layers[!wide];
    const int32_t n_wide = wide == CV_KV_FULL ? entries : slid, n_narrow = wide == CV_KV_FULL ? slid : entries;
    return n_wide + (n_narrow + pack - 1) / pack;
}

static cv_status check_config(const cv_kv_config *cfg, cv_error *err) {
    if (cfg->type != CV_TYPE_F16 && cfg->type != CV_TYPE_F32)
        return cv_errorf(err, CV_EUNSUPPORTED, "kv cache: type %d is not F16 or F32",
                         (int)cfg->type);
    const struct { const char *name; int32_t v; } f[] = {
        {"n_layers", cfg->n_layers}, {"n_kv_heads", cfg->n_kv_heads},
        {"head_dim", cfg->head_dim}, {"block_size", cfg->block_size},
        {"n_blocks", cfg->n_blocks}, {"max_seqs", cfg->max_seqs},
        {"max_seq_len", cfg->max_seq_len},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0)
            return cv_errorf(err, CV_EINVAL, "kv cache: %s = %d, must be > 0", f[i].name, f[i].v);
    if (cfg->n_ranks < 0 || cfg->n_ranks > CV_KV_MAX_RANKS)
        return cv_errorf(err, CV_EINVAL, "kv cache: n_ranks = %d (need 1..%d)", cfg->n_ranks,
                         CV_KV_MAX_RANKS);
    if (cfg->window < 0 || (cfg->window > 0 && cfg->max_step <= 0))
        return cv_errorf(err, CV_EINVAL, "kv cache: window = %d, max_step = %d (need >= 0, and "
                         "max_step > 0 with a window)", cfg->window, cfg->max_step);
    return CV_OK;
}

/* Splits the layers into groups and lays out the memory; fails past 64 TiB or block
 * ids past int32. */
static cv_status plan_groups(cv_kv_cache *kv, cv_error *err) {
    const cv_kv_config *c = &kv->cfg;
    const int32_t ring = cv_kv_ring_blocks(c);
    kv->n_groups = ring ? 2 : 1;
    for (int32_t l = 0; l < c->n_layers; l++) {
        cv_kv_group g = ring && c->sliding[l] ? CV_KV_SLIDING : CV_KV_FULL;
        kv->layer_group[l] = (uint8_t)g;
        kv->layer_index[l] = kv->groups[g].n_layers++;
    }
    kv->groups[CV_KV_FULL].ring = kv->table_cap;
    kv->groups[CV_KV_SLIDING].ring = ring;
    const kv_group *G = kv->groups;
    kv->wide = G[CV_KV_FULL].n_layers >= G[CV_KV_SLIDING].n_layers ? CV_KV_FULL : CV_KV_SLIDING;
    const int32_t wide_layers = G[kv->wide].n_layers;
    kv->id_scale = ring ? (int32_t)n_pools(c) * wide_layers : 1;
    kv->pack = ring ? wide_layers / G[!kv->wide].n_layers : 1;
    size_t block, total;
    if (__builtin_mul_overflow(slot_bytes(c), (size_t)c->block_size, &kv->unit) ||
        __builtin_mul_overflow(kv->unit, n_pools(c) * (size_t)wide_layers, &block) ||
        __builtin_mul_overflow(block, (size_t)c->n_blocks, &total) || total > ((size_t)1 << 46))
        return cv_errorf(err, CV_ERANGE, "kv cache: %d layers x %d blocks x %d slots x %zu bytes "
                         "exceeds 64 TiB", c->n_layers, c->n_blocks, c->block_size, slot_bytes(c));
    if ((int64_t)c->n_blocks * kv->id_scale > INT32_MAX)
        return cv_errorf(err, CV_ERANGE, "kv cache: %d blocks of %d layer-blocks each exceed the "
                         "int32 block ids", c->n_blocks, kv->id_scale);
    kv->mem_bytes = total;
    kv->gap = ring ? kv->unit : kv->unit * (size_t)c->n_blocks;
    return CV_OK;
}

static cv_status alloc_rank(cv_kv_cache *kv, int32_t r, size_t table_bytes, cv_error *err) {
    kv_rank *kr = &kv->ranks[r];
    cv_backend *be = kv->cfg.backends[r];
    if (be && be->device != CV_DEVICE_CPU) {
        kr->dev = be;
        void *mem, *tables;
        if (be->ops->alloc(be, kv->mem_bytes, &mem, err))
            return cv_error_wrap(err, "kv cache: %zu bytes of pools on rank %d", kv->mem_bytes, r);
        kr->mem = mem;
        if (be->ops->alloc(be, table_bytes, &tables, err))
            return cv_error_wrap(err, "kv cache: block tables on rank %d", r);
        kr->d_tables = tables;
        return CV_OK;
    }
    kr->mem = mmap(NULL, kv->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (kr->mem == MAP_FAILED) {
        kr->mem = NULL;
        return cv_errorf(err, CV_ENOMEM, "kv cache: cannot map %zu bytes", kv->mem_bytes);
    }
    return CV_OK;
}

cv_status cv_kv_create(const cv_kv_config *cfg, cv_kv_cache **out, cv_error *err) {
    *out = NULL;
    cv_status st = check_config(cfg, err);
    if (st) return st;
    cv_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return cv_errorf(err, CV_ENOMEM, "kv cache: out of memory");
    kv->cfg = *cfg;
    if (kv->cfg.n_ranks == 0) kv->cfg.n_ranks = 1;
    kv->cfg.sliding = NULL;
    kv->table_cap = (cfg->max_seq_len + cfg->block_size - 1) / cfg->block_size;
    kv->layer_group = calloc((size_t)cfg->n_layers, 1);
    kv->layer_index = calloc((size_t)cfg->n_layers, sizeof *kv->layer_index);
    kv->n_entries = calloc((size_t)cfg->max_seqs, sizeof *kv->n_entries);
    kv->n_published = calloc((size_t)cfg->max_seqs, sizeof *kv->n_published);
    kv->chain = malloc((size_t)cfg->max_seqs * sizeof *kv->chain);
    if (!kv->layer_group || !kv->layer_index || !kv->n_entries || !kv->n_published || !kv->chain) goto oom;
    if (cfg->sliding && cfg->window > 0) {
        uint8_t *copy = malloc((size_t)cfg->n_layers);
        if (!copy) goto oom;
        memcpy(copy, cfg->sliding, (size_t)cfg->n_layers);
        kv->cfg.sliding = copy;
    }
    if ((st = plan_groups(kv, err))) goto err;
    if ((st = cv_bpool_create(cfg->n_blocks, cfg->block_size, &kv->pool, err))) goto err;
    kv->prefix = cfg->prefix_cache && kv->n_groups == 1;
    kv->cfg.prefix_cache = kv->prefix;
    for (int32_t s = 0; s < cfg->max_seqs; s++) kv->chain[s] = cfg->prefix_seed;
    kv->slab_head = -1;
    if (kv->n_groups == 2) {
        const size_t slabs = (size_t)cfg->n_blocks * (size_t)kv->pack;
        kv->slab_next = malloc(slabs * sizeof *kv->slab_next);
        kv->slab_prev = malloc(slabs * sizeof *kv->slab_prev);
        kv->slabs_used = calloc((size_t)cfg->n_blocks, sizeof *kv->slabs_used);
        if (!kv->slab_next || !kv->slab_prev || !kv->slabs_used) goto oom;
    }
    const size_t table_len = (size_t)cfg->max_seqs * (size_t)kv->table_cap;
    for (int32_t i = 0; i < kv->n_groups; i++)
        if (!(kv->groups[i].tables = malloc(table_len * sizeof(int32_t)))) goto oom;
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++)
        if ((st = alloc_rank(kv, r, (size_t)kv->n_groups * table_len * sizeof(int32_t), err))) goto err;
    *out = kv;
    return CV_OK;
oom:
    st = cv_errorf(err, CV_ENOMEM, "kv cache: out of memory for block tables");
err:
    cv_kv_free(kv);
    return st;
}

void cv_kv_free(cv_kv_cache *kv) {
    if (!kv) return;
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++) {
        kv_rank *kr = &kv->ranks[r];
        if (kr->dev) {
            if (kr->mem) kr->dev->ops->free(kr->dev, kr->mem);
            if (kr->d_tables) kr->dev->ops->free(kr->dev, kr->d_tables);
        } else if (kr->mem) {
            munmap(kr->mem, kv->mem_bytes);
        }
    }
    for (int32_t i = 0; i < N_GROUPS; i++) free(kv->groups[i].tables);
    free((void *)kv->cfg.sliding);
    free(kv->layer_group);
    free(kv->layer_index);
    free(kv->n_entries);
    free(kv->n_published);
    free(kv->chain);
    cv_bpool_free(kv->pool);
    free(kv->slab_next);
    free(kv->slab_prev);
    free(kv->slabs_used);
    free(kv);
}

const cv_kv_config *cv_kv_config_of(const cv_kv_cache *kv) { return &kv->cfg; }
size_t cv_kv_bytes(const cv_kv_cache *kv) { return kv->mem_bytes * (size_t)kv->cfg.n_ranks; }

/* K+V bytes of one block of positions in all layers of group g, all ranks. */
static size_t group_block_bytes(const cv_kv_cache *kv, int32_t g) {
    return n_pools(&kv->cfg) * (size_t)kv->groups[g].n_layers * kv->unit * (size_t)kv->cfg.n_ranks;
}

size_t cv_kv_bytes_per_token(const cv_kv_cache *kv) {
    return group_block_bytes(kv, CV_KV_FULL) / (size_t)kv->cfg.block_size;
}

/* Blocks a sequence with `entries` table entries holds in group g. */
static int32_t held(const kv_group *g, int32_t entries) { return entries < g->ring ? entries : g->ring; }

size_t cv_kv_seq_bytes(const cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return 0;
    size_t sum = 0;
    for (int32_t i = 0; i < kv->n_groups; i++)
        sum += (size_t)held(&kv->groups[i], kv->n_entries[seq]) * group_block_bytes(kv, i);
    return sum;
}

cv_kv_group cv_kv_layer_group(const cv_kv_cache *kv, int32_t layer) {
    return (cv_kv_group)kv->layer_group[layer];
}

static int32_t *host_table(const cv_kv_cache *kv, int32_t group, int32_t seq) {
    return kv->groups[group].tables + (size_t)seq * (size_t)kv->table_cap;
}

/* ---- the narrow group's blocks, packed into memory blocks ---- */

static void slab_link(cv_kv_cache *kv, int32_t s) {
    kv->slab_prev[s] = -1;
    kv->slab_next[s] = kv->slab_head;
    if (kv->slab_head >= 0) kv->slab_prev[kv->slab_head] = s;
    kv->slab_head = s;
    kv->n_free_slabs++;
}

static void slab_unlink(cv_kv_cache *kv, int32_t s) {
    if (kv->slab_prev[s] >= 0) kv->slab_next[kv->slab_prev[s]] = kv->slab_next[s];
    else kv->slab_head = kv->slab_next[s];
    if (kv->slab_next[s] >= 0) kv->slab_prev[kv->slab_next[s]] = kv->slab_prev[s];
    kv->n_free_slabs--;
}

/* A free block of group g (the caller checked there is one), as its block id. */
static int32_t take(cv_kv_cache *kv, int32_t g) {
    if (g == kv->wide) return cv_bpool_take(kv->pool) * kv->id_scale;
    if (kv->slab_head < 0) { /* a fresh memory block: its other slabs become free */
        const int32_t m = cv_bpool_take(kv->pool);
        for (int32_t j = kv->pack; j-- > 0;) slab_link(kv, m * kv->pack + j);
    }
    const int32_t s = kv->slab_head, m = s / kv->pack;
    slab_unlink(kv, s);
    kv->slabs_used[m]++;
    return m * kv->id_scale + (s % kv->pack) * (int32_t)n_pools(&kv->cfg) * kv->groups[g].n_layers;
}

static void put(cv_kv_cache *kv, int32_t g, int32_t id) {
    const int32_t m = id / kv->id_scale;
    if (g == kv->wide) {
        cv_bpool_unref(kv->pool, m);
        return;
    }
    const int32_t s = m * kv->pack + (id % kv->id_scale) / ((int32_t)n_pools(&kv->cfg) * kv->groups[g].n_layers);
    if (--kv->slabs_used[m] > 0) {
        slab_link(kv, s);
        return;
    }
    for (int32_t j = 0; j < kv->pack; j++) /* all its other slabs are free: the block is */
        if (m * kv->pack + j != s) slab_unlink(kv, m * kv->pack + j);
    cv_bpool_unref(kv->pool, m);
}

/* Memory blocks that `more[g]` more blocks of each group would take from the free list. */
static int32_t blocks_needed(const cv_kv_cache *kv, const int32_t more[N_GROUPS]) {
    if (kv->n_groups == 1) return more[0];
    const int32_t narrow = more[!kv->wide] - kv->n_free_slabs;
    return more[kv->wide] + (narrow > 0 ? (narrow + kv->pack - 1) / kv->pack : 0);
}

/* Gives back the blocks that entries [from, to) of seq's tables took, newest first, so
 * the next reserve gets the same blocks back in order. */
static void give_back(cv_kv_cache *kv, int32_t seq, int32_t from, int32_t to) {
    for (int32_t i = kv->n_groups; i-- > 0;) {
        const kv_group *g = &kv->groups[i];
        const int32_t *table = host_table(kv, i, seq);
        for (int32_t e = held(g, to); e-- > held(g, from);) put(kv, i, table[e]);
    }
}

/* Copies entries [from, to) of seq's tables to every device rank and makes them the
 * sequence's; on failure gives their blocks back (the sequence is as it was). */
static cv_status upload_tables(cv_kv_cache *kv, int32_t seq, int32_t from, int32_t to, cv_error *err) {
    const size_t table_len = (size_t)kv->cfg.max_seqs * (size_t)kv->table_cap;
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++) {
        const kv_rank *kr = &kv->ranks[r];
        if (!kr->d_tables || from == to) continue;
        for (int32_t i = 0; i < kv->n_groups; i++) {
            const int32_t *table = host_table(kv, i, seq);
            int32_t *d = kr->d_tables + (size_t)i * table_len + (size_t)seq * (size_t)kv->table_cap;
            cv_status st = kr->dev->ops->upload(kr->dev, d + from, table + from,
                                                (size_t)(to - from) * sizeof *table, err);
            if (st) {
                give_back(kv, seq, from, to);
                return cv_error_wrap(err, "kv cache: block table of sequence %d on rank %d", seq, r);
            }
        }
    }
    kv->n_entries[seq] = to;
    return CV_OK;
}

cv_status cv_kv_reserve(cv_kv_cache *kv, int32_t seq, int32_t n_pos, cv_error *err) {
    if (seq < 0 || seq >= kv->cfg.max_seqs)
        return cv_errorf(err, CV_ERANGE, "kv cache: sequence %d outside 0..%d", seq,
                         kv->cfg.max_seqs - 1);
    if (n_pos < 0 || n_pos > kv->cfg.max_seq_len)
        return cv_errorf(err, CV_ERANGE, "kv cache: %d positions exceed the limit of %d",
                         n_pos, kv->cfg.max_seq_len);
    const int32_t need = (n_pos + kv->cfg.block_size - 1) / kv->cfg.block_size;
    const int32_t have = kv->n_entries[seq];
    if (need <= have) return CV_OK;
    int32_t more[N_GROUPS] = {0, 0};
    for (int32_t i = 0; i < kv->n_groups; i++) more[i] = held(&kv->groups[i], need) - held(&kv->groups[i], have);
    const int32_t blocks = blocks_needed(kv, more), avail = cv_bpool_available(kv->pool);
    if (blocks > avail)
        return cv_errorf(err, CV_EBUSY, "kv cache: sequence %d needs %d more blocks, %d free", seq,
                         blocks, avail);
    for (int32_t i = 0; i < kv->n_groups; i++) {
        const kv_group *g = &kv->groups[i];
        int32_t *table = host_table(kv, i, seq);
        for (int32_t e = have; e < need; e++) table[e] = e < g->ring ? take(kv, i) : table[e % g->ring];
    }
    return upload_tables(kv, seq, have, need, err);
}

cv_status cv_kv_share_prefix(cv_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n,
                             int32_t *matched, cv_error *err) {
    *matched = 0;
    if (!kv->prefix || seq < 0 || seq >= kv->cfg.max_seqs || kv->n_entries[seq]) return CV_OK;
    const int32_t bs = kv->cfg.block_size;
    int32_t *table = host_table(kv, CV_KV_FULL, seq);
    uint64_t h = kv->cfg.prefix_seed;
    int32_t k = 0;
    for (; k < kv->table_cap && (int64_t)(k + 1) * bs <= n; k++) {
        const int32_t *t = tokens + (size_t)k * (size_t)bs;
        const uint64_t next = cv_bpool_chain(h, t, bs);
        const int32_t b = cv_bpool_find(kv->pool, next, h, t);
        if (b < 0) break;
        cv_bpool_ref(kv->pool, b);
        table[k] = b; /* one group: block id = memory block */
        h = next;
    }
    cv_status st = upload_tables(kv, seq, 0, k, err);
    if (st) return st;
    kv->n_published[seq] = k;
    kv->chain[seq] = h;
    *matched = k * bs;
    return CV_OK;
}

void cv_kv_publish(cv_kv_cache *kv, int32_t seq, const int32_t *tokens, int32_t n_pos) {
    if (!kv->prefix || seq < 0 || seq >= kv->cfg.max_seqs) return;
    const int32_t bs = kv->cfg.block_size;
    const int32_t full = n_pos / bs < kv->n_entries[seq] ? n_pos / bs : kv->n_entries[seq];
    const int32_t *table = host_table(kv, CV_KV_FULL, seq);
    for (int32_t k = kv->n_published[seq]; k < full; k++) {
        const int32_t *t = tokens + (size_t)k * (size_t)bs;
        const uint64_t next = cv_bpool_chain(kv->chain[seq], t, bs);
        cv_bpool_publish(kv->pool, table[k], next, kv->chain[seq], t);
        kv->chain[seq] = next;
        kv->n_published[seq] = k + 1;
    }
}

void cv_kv_truncate(cv_kv_cache *kv, int32_t seq, int32_t n_pos) {
    if (seq < 0 || seq >= kv->cfg.max_seqs || n_pos < 0) return;
    const int32_t keep = (n_pos + kv->cfg.block_size - 1) / kv->cfg.block_size;
    if (keep >= kv->n_entries[seq]) return;
    give_back(kv, seq, keep, kv->n_entries[seq]);
    kv->n_entries[seq] = keep;
}

void cv_kv_release(cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return;
    give_back(kv, seq, 0, kv->n_entries[seq]);
    kv->n_entries[seq] = 0;
    kv->n_published[seq] = 0;
    kv->chain[seq] = kv->cfg.prefix_seed;
}

int32_t cv_kv_capacity(const cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return 0;
    return kv->n_entries[seq] * kv->cfg.block_size;
}

/* The group whose table `group` names: the full one when the cache has no ring. */
static int32_t table_group(const cv_kv_cache *kv, cv_kv_group group) {
    return group == CV_KV_SLIDING && kv->n_groups == 2 ? CV_KV_SLIDING : CV_KV_FULL;
}

const int32_t *cv_kv_block_table(const cv_kv_cache *kv, cv_kv_group group, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return NULL;
    return host_table(kv, table_group(kv, group), seq);
}

const int32_t *cv_kv_device_table(const cv_kv_cache *kv, int32_t rank, cv_kv_group group, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs || rank < 0 || rank >= kv->cfg.n_ranks) return NULL;
    const int32_t g = table_group(kv, group);
    const int32_t *d = kv->ranks[rank].d_tables;
    if (!d) return host_table(kv, g, seq);
    return d + ((size_t)g * (size_t)kv->cfg.max_seqs + (size_t)seq) * (size_t)kv->table_cap;
}

int32_t cv_kv_free_blocks(const cv_kv_cache *kv) { return cv_bpool_available(kv->pool); }
int32_t cv_kv_cached_blocks(const cv_kv_cache *kv) { return cv_bpool_cached(kv->pool); }
uint64_t cv_kv_evictions(const cv_kv_cache *kv) { return cv_bpool_evictions(kv->pool); }

static uint8_t *pool(const cv_kv_cache *kv, int32_t rank, int32_t layer, int32_t v) {
    /* k_only: the values are read from the keys' pool */
    return kv->ranks[rank].mem + ((size_t)kv->layer_index[layer] * n_pools(&kv->cfg) + (size_t)(v && !kv->cfg.k_only)) * kv->gap;
}

void *cv_kv_k_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) { return pool(kv, rank, layer, 0); }
void *cv_kv_v_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) { return pool(kv, rank, layer, 1); }
