#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define N_GROUPS 2

/* One layer group's bookkeeping, shared by the ranks. */
typedef struct kv_group {
    int32_t n_layers;
    int32_t n_blocks;
    int32_t ring;           /* blocks a sequence holds at most: its table repeats after */
    size_t pool_bytes;      /* one layer's K (or V) pool */
    size_t offset;          /* of the group's pools in a rank's memory */
    int32_t *free_ids;      /* stack of free block ids */
    int32_t n_free;
    int32_t *tables;        /* max_seqs * table_cap */
} kv_group;

/* One tensor-parallel rank's memory. */
typedef struct kv_rank {
    cv_backend *dev;        /* a non-CPU backend holding mem and d_tables, else NULL */
    uint8_t *mem;           /* per group: 2 * n_layers pools, K0 V0 K1 V1 ... */
    int32_t *d_tables;      /* every group's tables in dev's memory (NULL on the host) */
} kv_rank;

struct cv_kv_cache {
    cv_kv_config cfg;
    size_t mem_bytes;       /* one rank's pools */
    kv_rank ranks[CV_KV_MAX_RANKS];
    kv_group groups[N_GROUPS];
    int32_t n_groups;       /* 1, or 2 with a sliding ring */
    uint8_t *layer_group;   /* per layer: its cv_kv_group */
    int32_t *layer_index;   /* per layer: its index within its group */
    int32_t table_cap;      /* entries per sequence table */
    int32_t *n_entries;     /* table entries filled per sequence (the same in every group) */
};

static size_t slot_bytes(const cv_kv_config *c) {
    return (size_t)c->n_kv_heads * (size_t)c->head_dim * (c->type == CV_TYPE_F32 ? 4 : 2);
}

static int32_t n_sliding(const cv_kv_config *c) {
    int32_t n = 0;
    for (int32_t l = 0; c->sliding && l < c->n_layers; l++) n += c->sliding[l] != 0;
    return n;
}

int32_t cv_kv_ring_blocks(const cv_kv_config *c) {
    if (c->window <= 0 || c->max_step <= 0 || c->block_size <= 0 || !n_sliding(c)) return 0;
    int64_t ring = ((int64_t)c->window + c->max_step - 1 + c->block_size - 1) / c->block_size;
    int64_t cap = ((int64_t)c->max_seq_len + c->block_size - 1) / c->block_size;
    return ring < cap ? (int32_t)ring : 0;
}

size_t cv_kv_block_bytes(const cv_kv_config *c, cv_kv_group group) {
    const int32_t slides = cv_kv_ring_blocks(c) ? n_sliding(c) : 0;
    const int32_t layers = group == CV_KV_SLIDING ? slides : c->n_layers - slides;
    const size_t ranks = c->n_ranks > 0 ? (size_t)c->n_ranks : 1;
    return 2 * (size_t)layers * ranks * slot_bytes(c) * (size_t)c->block_size;
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
    if (cfg->window < 0 || cfg->n_ring_blocks < 0 || (cfg->window > 0 && cfg->max_step <= 0))
        return cv_errorf(err, CV_EINVAL,
                         "kv cache: window = %d, max_step = %d, n_ring_blocks = %d (need >= 0, "
                         "and max_step > 0 with a window)",
                         cfg->window, cfg->max_step, cfg->n_ring_blocks);
    return CV_OK;
}

/* Splits the layers into groups and sizes their pools; fails on sizes past 64 TiB. */
static cv_status plan_groups(cv_kv_cache *kv, cv_error *err) {
    const cv_kv_config *c = &kv->cfg;
    const int32_t ring = cv_kv_ring_blocks(c);
    kv->n_groups = ring ? 2 : 1;
    for (int32_t l = 0; l < c->n_layers; l++) {
        cv_kv_group g = ring && c->sliding[l] ? CV_KV_SLIDING : CV_KV_FULL;
        kv->layer_group[l] = (uint8_t)g;
        kv->layer_index[l] = kv->groups[g].n_layers++;
    }
    kv->groups[CV_KV_FULL].n_blocks = c->n_blocks;
    kv->groups[CV_KV_FULL].ring = kv->table_cap;
    if (ring) {
        kv->groups[CV_KV_SLIDING].n_blocks = c->n_ring_blocks ? c->n_ring_blocks : ring * c->max_seqs;
        kv->groups[CV_KV_SLIDING].ring = ring;
    }
    kv->cfg.n_ring_blocks = kv->groups[CV_KV_SLIDING].n_blocks;
    size_t total = 0;
    for (int32_t i = 0; i < kv->n_groups; i++) {
        kv_group *g = &kv->groups[i];
        size_t pool, pools;
        if (__builtin_mul_overflow(slot_bytes(c), (size_t)c->block_size, &pool) ||
            __builtin_mul_overflow(pool, (size_t)g->n_blocks, &pool) ||
            __builtin_mul_overflow(pool, 2 * (size_t)g->n_layers, &pools) ||
            __builtin_add_overflow(total, pools, &total) || total > ((size_t)1 << 46))
            return cv_errorf(err, CV_ERANGE, "kv cache: %d layers x %d blocks x %d slots x %zu bytes "
                             "exceeds 64 TiB", g->n_layers, g->n_blocks, c->block_size, slot_bytes(c));
        g->pool_bytes = pool;
        g->offset = total - pools;
    }
    kv->mem_bytes = total;
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
    if (!kv->layer_group || !kv->layer_index || !kv->n_entries) goto oom;
    if (cfg->sliding && cfg->window > 0) {
        uint8_t *copy = malloc((size_t)cfg->n_layers);
        if (!copy) goto oom;
        memcpy(copy, cfg->sliding, (size_t)cfg->n_layers);
        kv->cfg.sliding = copy;
    }
    if ((st = plan_groups(kv, err))) goto err;
    const size_t table_len = (size_t)cfg->max_seqs * (size_t)kv->table_cap;
    for (int32_t i = 0; i < kv->n_groups; i++) {
        kv_group *g = &kv->groups[i];
        g->free_ids = malloc((size_t)g->n_blocks * sizeof *g->free_ids);
        g->tables = malloc(table_len * sizeof *g->tables);
        if (!g->free_ids || !g->tables) goto oom;
        /* Pop order 0, 1, 2...: low blocks first keeps a short sequence's memory compact. */
        for (int32_t b = 0; b < g->n_blocks; b++) g->free_ids[b] = g->n_blocks - 1 - b;
        g->n_free = g->n_blocks;
    }
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
    for (int32_t i = 0; i < N_GROUPS; i++) {
        free(kv->groups[i].free_ids);
        free(kv->groups[i].tables);
    }
    free((void *)kv->cfg.sliding);
    free(kv->layer_group);
    free(kv->layer_index);
    free(kv->n_entries);
    free(kv);
}

const cv_kv_config *cv_kv_config_of(const cv_kv_cache *kv) { return &kv->cfg; }
size_t cv_kv_bytes(const cv_kv_cache *kv) { return kv->mem_bytes * (size_t)kv->cfg.n_ranks; }

size_t cv_kv_bytes_per_token(const cv_kv_cache *kv) {
    return cv_kv_block_bytes(&kv->cfg, CV_KV_FULL) / (size_t)kv->cfg.block_size;
}

/* Blocks a sequence with `entries` table entries holds in group g. */
static int32_t held(const kv_group *g, int32_t entries) { return entries < g->ring ? entries : g->ring; }

size_t cv_kv_seq_bytes(const cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return 0;
    size_t sum = 0;
    for (int32_t i = 0; i < kv->n_groups; i++)
        sum += (size_t)held(&kv->groups[i], kv->n_entries[seq]) * cv_kv_block_bytes(&kv->cfg, (cv_kv_group)i);
    return sum;
}

cv_kv_group cv_kv_layer_group(const cv_kv_cache *kv, int32_t layer) {
    return (cv_kv_group)kv->layer_group[layer];
}

static int32_t *host_table(const cv_kv_cache *kv, int32_t group, int32_t seq) {
    return kv->groups[group].tables + (size_t)seq * (size_t)kv->table_cap;
}

/* Gives back the blocks that entries [from, to) of seq's tables took from the free
 * lists (pushed in reverse, so the next reserve gets the same blocks back in order). */
static void give_back(cv_kv_cache *kv, int32_t seq, int32_t from, int32_t to) {
    for (int32_t i = 0; i < kv->n_groups; i++) {
        kv_group *g = &kv->groups[i];
        const int32_t *table = host_table(kv, i, seq);
        for (int32_t e = held(g, to); e-- > held(g, from);) g->free_ids[g->n_free++] = table[e];
    }
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
    for (int32_t i = 0; i < kv->n_groups; i++) {
        const kv_group *g = &kv->groups[i];
        const int32_t more = held(g, need) - held(g, have);
        if (more > g->n_free)
            return cv_errorf(err, CV_EBUSY, "kv cache: sequence %d needs %d more %sblocks, %d free",
                             seq, more, i == CV_KV_SLIDING ? "sliding-window " : "", g->n_free);
    }
    for (int32_t i = 0; i < kv->n_groups; i++) {
        kv_group *g = &kv->groups[i];
        int32_t *table = host_table(kv, i, seq);
        for (int32_t e = have; e < need; e++)
            table[e] = e < g->ring ? g->free_ids[--g->n_free] : table[e % g->ring];
    }
    const size_t table_len = (size_t)kv->cfg.max_seqs * (size_t)kv->table_cap;
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++) {
        const kv_rank *kr = &kv->ranks[r];
        if (!kr->d_tables) continue;
        for (int32_t i = 0; i < kv->n_groups; i++) {
            const int32_t *table = host_table(kv, i, seq);
            int32_t *d = kr->d_tables + (size_t)i * table_len + (size_t)seq * (size_t)kv->table_cap;
            cv_status st = kr->dev->ops->upload(kr->dev, d + have, table + have,
                                                (size_t)(need - have) * sizeof *table, err);
            if (st) { /* give the blocks back: the sequence is as it was */
                give_back(kv, seq, have, need);
                return cv_error_wrap(err, "kv cache: block table of sequence %d on rank %d", seq, r);
            }
        }
    }
    kv->n_entries[seq] = need;
    return CV_OK;
}

void cv_kv_release(cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return;
    give_back(kv, seq, 0, kv->n_entries[seq]);
    kv->n_entries[seq] = 0;
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

int32_t cv_kv_free_blocks(const cv_kv_cache *kv, cv_kv_group group) {
    return (int32_t)group < kv->n_groups ? kv->groups[group].n_free : 0;
}

int32_t cv_kv_total_blocks(const cv_kv_cache *kv, cv_kv_group group) {
    return (int32_t)group < kv->n_groups ? kv->groups[group].n_blocks : 0;
}

static uint8_t *pool(const cv_kv_cache *kv, int32_t rank, int32_t layer, int32_t v) {
    const kv_group *g = &kv->groups[kv->layer_group[layer]];
    return kv->ranks[rank].mem + g->offset + ((size_t)kv->layer_index[layer] * 2 + (size_t)v) * g->pool_bytes;
}

void *cv_kv_k_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) { return pool(kv, rank, layer, 0); }
void *cv_kv_v_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) { return pool(kv, rank, layer, 1); }
