#include "kv_cache.h"

#include <stdlib.h>
#include <sys/mman.h>

/* One tensor-parallel rank's memory. */
typedef struct kv_rank {
    cv_backend *dev;        /* a non-CPU backend holding mem and d_tables, else NULL */
    uint8_t *mem;           /* 2 * n_layers pools: K0 V0 K1 V1 ... */
    int32_t *d_tables;      /* the block tables in dev's memory (NULL on the host) */
} kv_rank;

struct cv_kv_cache {
    cv_kv_config cfg;
    size_t pool_bytes;      /* one layer's K (or V) pool */
    size_t mem_bytes;       /* one rank's pools */
    kv_rank ranks[CV_KV_MAX_RANKS];
    int32_t *free_ids;      /* stack of free block ids */
    int32_t n_free;
    int32_t table_cap;      /* blocks per sequence table */
    int32_t *tables;        /* max_seqs * table_cap, shared by the ranks */
    int32_t *n_seq_blocks;  /* blocks held by each sequence */
};

cv_status cv_kv_create(const cv_kv_config *cfg, cv_kv_cache **out, cv_error *err) {
    *out = NULL;
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

    size_t elem = cfg->type == CV_TYPE_F16 ? 2 : 4;
    size_t slot = (size_t)cfg->n_kv_heads * (size_t)cfg->head_dim * elem;
    size_t pool, total;
    if (__builtin_mul_overflow(slot, (size_t)cfg->block_size, &pool) ||
        __builtin_mul_overflow(pool, (size_t)cfg->n_blocks, &pool) ||
        __builtin_mul_overflow(pool, 2 * (size_t)cfg->n_layers, &total) ||
        total > ((size_t)1 << 46))
        return cv_errorf(err, CV_ERANGE, "kv cache: %d layers x %d blocks x %d slots x %zu bytes "
                         "exceeds 64 TiB", cfg->n_layers, cfg->n_blocks, cfg->block_size, slot);

    cv_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return cv_errorf(err, CV_ENOMEM, "kv cache: out of memory");
    kv->cfg = *cfg;
    if (kv->cfg.n_ranks == 0) kv->cfg.n_ranks = 1;
    kv->pool_bytes = pool;
    kv->mem_bytes = total;
    kv->table_cap = (cfg->max_seq_len + cfg->block_size - 1) / cfg->block_size;
    const size_t table_bytes = (size_t)cfg->max_seqs * (size_t)kv->table_cap * sizeof(int32_t);
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++) {
        kv_rank *kr = &kv->ranks[r];
        cv_backend *be = cfg->backends[r];
        if (be && be->device != CV_DEVICE_CPU) {
            kr->dev = be;
            void *mem, *tables;
            if (be->ops->alloc(be, kv->mem_bytes, &mem, err)) {
                cv_error_wrap(err, "kv cache: %zu bytes of pools on rank %d", kv->mem_bytes, r);
                goto err;
            }
            kr->mem = mem;
            if (be->ops->alloc(be, table_bytes, &tables, err)) {
                cv_error_wrap(err, "kv cache: block tables on rank %d", r);
                goto err;
            }
            kr->d_tables = tables;
        } else {
            kr->mem = mmap(NULL, kv->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (kr->mem == MAP_FAILED) {
                kr->mem = NULL;
                cv_errorf(err, CV_ENOMEM, "kv cache: cannot map %zu bytes", kv->mem_bytes);
                goto err;
            }
        }
    }
    kv->free_ids = malloc((size_t)cfg->n_blocks * sizeof *kv->free_ids);
    kv->tables = malloc(table_bytes);
    kv->n_seq_blocks = calloc((size_t)cfg->max_seqs, sizeof *kv->n_seq_blocks);
    if (!kv->free_ids || !kv->tables || !kv->n_seq_blocks) {
        cv_errorf(err, CV_ENOMEM, "kv cache: out of memory for block tables");
        goto err;
    }
    /* Pop order 0, 1, 2...: low blocks first keeps a short sequence's memory compact. */
    for (int32_t i = 0; i < cfg->n_blocks; i++) kv->free_ids[i] = cfg->n_blocks - 1 - i;
    kv->n_free = cfg->n_blocks;
    *out = kv;
    return CV_OK;
err:
    cv_kv_free(kv);
    return err ? err->code : CV_ENOMEM;
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
    free(kv->free_ids);
    free(kv->tables);
    free(kv->n_seq_blocks);
    free(kv);
}

const cv_kv_config *cv_kv_config_of(const cv_kv_cache *kv) { return &kv->cfg; }
size_t cv_kv_bytes(const cv_kv_cache *kv) { return kv->mem_bytes * (size_t)kv->cfg.n_ranks; }

size_t cv_kv_bytes_per_token(const cv_kv_cache *kv) {
    return cv_kv_bytes(kv) / ((size_t)kv->cfg.n_blocks * (size_t)kv->cfg.block_size);
}

cv_status cv_kv_reserve(cv_kv_cache *kv, int32_t seq, int32_t n_pos, cv_error *err) {
    if (seq < 0 || seq >= kv->cfg.max_seqs)
        return cv_errorf(err, CV_ERANGE, "kv cache: sequence %d outside 0..%d", seq,
                         kv->cfg.max_seqs - 1);
    if (n_pos < 0 || n_pos > kv->cfg.max_seq_len)
        return cv_errorf(err, CV_ERANGE, "kv cache: %d positions exceed the limit of %d",
                         n_pos, kv->cfg.max_seq_len);
    int32_t need = (n_pos + kv->cfg.block_size - 1) / kv->cfg.block_size;
    int32_t have = kv->n_seq_blocks[seq];
    if (need <= have) return CV_OK;
    if (need - have > kv->n_free)
        return cv_errorf(err, CV_EBUSY, "kv cache: sequence %d needs %d more blocks, %d free",
                         seq, need - have, kv->n_free);
    int32_t *table = kv->tables + (size_t)seq * (size_t)kv->table_cap;
    const int32_t first = have;
    while (have < need) table[have++] = kv->free_ids[--kv->n_free];
    for (int32_t r = 0; r < kv->cfg.n_ranks; r++) {
        const kv_rank *kr = &kv->ranks[r];
        if (!kr->d_tables) continue;
        cv_status st = kr->dev->ops->upload(kr->dev, kr->d_tables + (table - kv->tables) + first,
                                            table + first, (size_t)(need - first) * sizeof *table, err);
        if (st) { /* give the blocks back: the sequence is as it was */
            while (have > first) kv->free_ids[kv->n_free++] = table[--have];
            return cv_error_wrap(err, "kv cache: block table of sequence %d on rank %d", seq, r);
        }
    }
    kv->n_seq_blocks[seq] = have;
    return CV_OK;
}

void cv_kv_release(cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return;
    const int32_t *table = kv->tables + (size_t)seq * (size_t)kv->table_cap;
    /* Push in reverse so the next reserve gets the same blocks back in order. */
    for (int32_t i = kv->n_seq_blocks[seq]; i-- > 0;) kv->free_ids[kv->n_free++] = table[i];
    kv->n_seq_blocks[seq] = 0;
}

int32_t cv_kv_capacity(const cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return 0;
    return kv->n_seq_blocks[seq] * kv->cfg.block_size;
}

const int32_t *cv_kv_block_table(const cv_kv_cache *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs) return NULL;
    return kv->tables + (size_t)seq * (size_t)kv->table_cap;
}

const int32_t *cv_kv_device_table(const cv_kv_cache *kv, int32_t rank, int32_t seq) {
    if (seq < 0 || seq >= kv->cfg.max_seqs || rank < 0 || rank >= kv->cfg.n_ranks) return NULL;
    const int32_t *d = kv->ranks[rank].d_tables;
    return (d ? d : kv->tables) + (size_t)seq * (size_t)kv->table_cap;
}

int32_t cv_kv_free_blocks(const cv_kv_cache *kv) { return kv->n_free; }

void *cv_kv_k_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) {
    return kv->ranks[rank].mem + (size_t)layer * 2 * kv->pool_bytes;
}

void *cv_kv_v_pool(const cv_kv_cache *kv, int32_t rank, int32_t layer) {
    return kv->ranks[rank].mem + ((size_t)layer * 2 + 1) * kv->pool_bytes;
}
