#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_cache.h"

static cv_kv_config small_cfg(void) {
    return (cv_kv_config){.n_layers = 3, .n_kv_heads = 2, .head_dim = 8, .block_size = 4,
                          .n_blocks = 10, .max_seqs = 4, .max_seq_len = 24,
                          .type = CV_TYPE_F16};
}

static void test_reserve_takes_blocks_and_release_returns_them(void **state) {
    (void)state;
    cv_kv_config cfg = small_cfg();
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_free_blocks(kv), 10);
    assert_int_equal(cv_kv_bytes_per_token(kv), 3 * 2 * 2 * 8 * 2);
    assert_int_equal(cv_kv_bytes(kv), 10 * 4 * cv_kv_bytes_per_token(kv));

    assert_int_equal(cv_kv_reserve(kv, 1, 5, &e), CV_OK);   /* 2 blocks */
    assert_int_equal(cv_kv_capacity(kv, 1), 8);
    assert_int_equal(cv_kv_free_blocks(kv), 8);
    assert_int_equal(cv_kv_reserve(kv, 1, 8, &e), CV_OK);   /* still fits */
    assert_int_equal(cv_kv_free_blocks(kv), 8);
    assert_int_equal(cv_kv_reserve(kv, 1, 9, &e), CV_OK);   /* one more */
    assert_int_equal(cv_kv_free_blocks(kv), 7);
    assert_int_equal(cv_kv_reserve(kv, 0, 0, &e), CV_OK);   /* empty is fine */
    assert_int_equal(cv_kv_capacity(kv, 0), 0);

    cv_kv_release(kv, 1);
    assert_int_equal(cv_kv_free_blocks(kv), 10);
    assert_int_equal(cv_kv_capacity(kv, 1), 0);
    cv_kv_free(kv);
}

static void test_exhaustion_is_busy_and_changes_nothing(void **state) {
    (void)state;
    cv_kv_config cfg = small_cfg();
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 0, 24, &e), CV_OK);  /* 6 blocks */
    assert_int_equal(cv_kv_reserve(kv, 1, 12, &e), CV_OK);  /* 3 blocks */
    assert_int_equal(cv_kv_reserve(kv, 2, 8, &e), CV_EBUSY); /* needs 2, 1 free */
    assert_non_null(strstr(e.msg, "needs 2 more blocks, 1 free"));
    assert_int_equal(cv_kv_capacity(kv, 2), 0);
    assert_int_equal(cv_kv_free_blocks(kv), 1);
    /* Preempting sequence 0 makes room. */
    cv_kv_release(kv, 0);
    assert_int_equal(cv_kv_reserve(kv, 2, 8, &e), CV_OK);
    assert_int_equal(cv_kv_free_blocks(kv), 5);
    cv_kv_free(kv);
}

static void test_limits_are_range_errors(void **state) {
    (void)state;
    cv_kv_config cfg = small_cfg();
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 0, 25, &e), CV_ERANGE);
    assert_non_null(strstr(e.msg, "25 positions exceed the limit of 24"));
    assert_int_equal(cv_kv_reserve(kv, 4, 1, &e), CV_ERANGE);
    assert_int_equal(cv_kv_reserve(kv, -1, 1, &e), CV_ERANGE);
    assert_null(cv_kv_block_table(kv, CV_KV_FULL, 4));
    cv_kv_release(kv, 7); /* out of range: ignored */
    assert_int_equal(cv_kv_free_blocks(kv), 10);
    cv_kv_free(kv);
}

static void test_bad_config_is_rejected(void **state) {
    (void)state;
    cv_kv_cache *kv = (cv_kv_cache *)1;
    cv_error e = {0};
    cv_kv_config cfg = small_cfg();
    cfg.type = CV_TYPE_Q8_0;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_EUNSUPPORTED);
    assert_null(kv);
    cfg = small_cfg();
    cfg.block_size = 0;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "block_size = 0"));
    cfg = small_cfg();
    cfg.n_blocks = 1 << 30;
    cfg.head_dim = 1 << 20;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_ERANGE);
}

/* Random reserve/release traffic: blocks are never shared between live sequences,
 * none is lost, and data written through one sequence's table stays intact. */
static void test_random_traffic_keeps_blocks_disjoint(void **state) {
    (void)state;
    unsigned seed = (unsigned)time(NULL);
    printf("seed %u\n", seed);
    srand(seed);
    cv_kv_config cfg = {.n_layers = 2, .n_kv_heads = 1, .head_dim = 4, .block_size = 2,
                        .n_blocks = 40, .max_seqs = 6, .max_seq_len = 30,
                        .type = CV_TYPE_F32};
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    int32_t len[6] = {0};
    for (int step = 0; step < 2000; step++) {
        int32_t s = rand() % 6;
        if (rand() % 5 == 0) {
            cv_kv_release(kv, s);
            len[s] = 0;
        } else {
            int32_t n = len[s] + 1 + rand() % 5;
            if (n > 30) n = 30;
            cv_status st = cv_kv_reserve(kv, s, n, &e);
            if (st == CV_OK) {
                /* Stamp every position of the new range in layer 1's V pool. */
                float *v = cv_kv_v_pool(kv, 0, 1);
                const int32_t *t = cv_kv_block_table(kv, CV_KV_FULL, s);
                for (int32_t p = len[s]; p < n; p++)
                    v[(t[p / 2] * 2 + p % 2) * 4] = (float)(s * 100 + p);
                len[s] = n;
            } else {
                assert_int_equal(st, CV_EBUSY);
            }
        }
        int used[40] = {0}, total = 0;
        float *v = cv_kv_v_pool(kv, 0, 1);
        for (int32_t q = 0; q < 6; q++) {
            const int32_t *t = cv_kv_block_table(kv, CV_KV_FULL, q);
            assert_true(cv_kv_capacity(kv, q) >= len[q]);
            for (int32_t b = 0; b < cv_kv_capacity(kv, q) / 2; b++) {
                assert_true(t[b] >= 0 && t[b] < 40);
                assert_int_equal(used[t[b]]++, 0);
                total++;
            }
            for (int32_t p = 0; p < len[q]; p++)
                assert_true(v[(t[p / 2] * 2 + p % 2) * 4] == (float)(q * 100 + p));
        }
        assert_int_equal(total + cv_kv_free_blocks(kv), 40);
    }
    /* Pools of different layers and K/V do not overlap. */
    uint8_t *k0 = cv_kv_k_pool(kv, 0, 0), *v0 = cv_kv_v_pool(kv, 0, 0), *k1 = cv_kv_k_pool(kv, 0, 1);
    assert_int_equal(v0 - k0, 40 * 2 * 4 * 4);
    assert_int_equal(k1 - v0, 40 * 2 * 4 * 4);
    cv_kv_free(kv);
}

/* A stand-in for a device backend: its "device memory" is host memory it tracks, and
 * its uploads can be made to fail, so the mirrored block tables are testable here. */
typedef struct fake_dev {
    cv_backend base;
    int n_allocs;
    int fail_uploads;
} fake_dev;

static cv_status fake_alloc(cv_backend *be, size_t bytes, void **out, cv_error *err) {
    (void)err;
    *out = calloc(1, bytes);
    ((fake_dev *)be)->n_allocs++;
    return *out ? CV_OK : CV_ENOMEM;
}

static void fake_free(cv_backend *be, void *p) {
    ((fake_dev *)be)->n_allocs--;
    free(p);
}

static cv_status fake_upload(cv_backend *be, void *dst, const void *src, size_t n, cv_error *err) {
    if (((fake_dev *)be)->fail_uploads) return cv_errorf(err, CV_EIO, "device lost");
    memcpy(dst, src, n);
    return CV_OK;
}

static void test_device_backend_mirrors_block_tables(void **state) {
    (void)state;
    static const cv_backend_ops ops = {.alloc = fake_alloc, .free = fake_free, .upload = fake_upload};
    fake_dev dev = {.base = {.ops = &ops, .device = CV_DEVICE_CUDA, .name = "fake"}};
    cv_kv_config cfg = small_cfg();
    cfg.backends[0] = &dev.base;
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(dev.n_allocs, 2); /* pools, tables */
    assert_int_equal(cv_kv_reserve(kv, 2, 6, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 2, 13, &e), CV_OK);
    const int32_t *host = cv_kv_block_table(kv, CV_KV_FULL, 2), *devt = cv_kv_device_table(kv, 0, CV_KV_FULL, 2);
    assert_ptr_not_equal(host, devt);
    assert_memory_equal(host, devt, 4 * sizeof(int32_t));
    /* A failed upload leaves the sequence and the free list as they were. */
    dev.fail_uploads = 1;
    assert_int_equal(cv_kv_reserve(kv, 1, 8, &e), CV_EIO);
    assert_non_null(strstr(e.msg, "block table of sequence 1 on rank 0: device lost"));
    assert_int_equal(cv_kv_capacity(kv, 1), 0);
    assert_int_equal(cv_kv_free_blocks(kv), 6);
    dev.fail_uploads = 0;
    assert_int_equal(cv_kv_reserve(kv, 1, 8, &e), CV_OK);
    assert_memory_equal(cv_kv_block_table(kv, CV_KV_FULL, 1), cv_kv_device_table(kv, 0, CV_KV_FULL, 1), 2 * sizeof(int32_t));
    cv_kv_free(kv);
    assert_int_equal(dev.n_allocs, 0);
    /* On the host both views are the same table. */
    cfg.backends[0] = NULL;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 0, 1, &e), CV_OK);
    assert_ptr_equal(cv_kv_block_table(kv, CV_KV_FULL, 0), cv_kv_device_table(kv, 0, CV_KV_FULL, 0));
    cv_kv_free(kv);
}

/* Prefix caching: full blocks published by one sequence are mapped into another's
 * table by their tokens (never the partial last block, never past a difference);
 * shared blocks live until their last user, then stay cached, and are evicted (least
 * recently released first, a prefix's tail before its head) only when a reserve needs
 * them. A device rank gets the mapped entries too. */
static void test_prefix_blocks_are_shared_cached_and_evicted(void **state) {
    (void)state;
    static const cv_backend_ops ops = {.alloc = fake_alloc, .free = fake_free, .upload = fake_upload};
    fake_dev dev = {.base = {.ops = &ops, .device = CV_DEVICE_CUDA, .name = "fake"}};
    cv_kv_config cfg = small_cfg(); /* 10 blocks of 4 */
    cfg.prefix_cache = 1;
    cfg.prefix_seed = 42;
    cfg.backends[0] = &dev.base;
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_true(cv_kv_config_of(kv)->prefix_cache);
    int32_t t[24];
    for (int i = 0; i < 24; i++) t[i] = 100 + i;
    int32_t hit = -1;
    assert_int_equal(cv_kv_share_prefix(kv, 0, t, 23, &hit, &e), CV_OK);
    assert_int_equal(hit, 0);
    assert_int_equal(cv_kv_reserve(kv, 0, 10, &e), CV_OK);  /* blocks 0, 1, 2 */
    cv_kv_publish(kv, 0, t, 10);                            /* two full ones */
    assert_int_equal(cv_kv_cached_blocks(kv), 2);
    cv_kv_publish(kv, 0, t, 10);                            /* idempotent */
    assert_int_equal(cv_kv_cached_blocks(kv), 2);

    /* Same 9 tokens: both full blocks. 7 tokens: only the first (whole blocks). */
    assert_int_equal(cv_kv_share_prefix(kv, 1, t, 9, &hit, &e), CV_OK);
    assert_int_equal(hit, 8);
    assert_memory_equal(cv_kv_block_table(kv, CV_KV_FULL, 1), cv_kv_block_table(kv, CV_KV_FULL, 0), 2 * sizeof(int32_t));
    assert_memory_equal(cv_kv_device_table(kv, 0, CV_KV_FULL, 1), cv_kv_block_table(kv, CV_KV_FULL, 0), 2 * sizeof(int32_t));
    assert_int_equal(cv_kv_capacity(kv, 1), 8);
    assert_int_equal(cv_kv_free_blocks(kv), 7);             /* shared: no new memory */
    assert_int_equal(cv_kv_share_prefix(kv, 1, t, 9, &hit, &e), CV_OK);
    assert_int_equal(hit, 0);                               /* not empty: nothing mapped */
    assert_int_equal(cv_kv_share_prefix(kv, 2, t, 7, &hit, &e), CV_OK);
    assert_int_equal(hit, 4);
    int32_t u[24];
    memcpy(u, t, sizeof u);
    u[5] = 7;                                               /* differs in block 1 */
    assert_int_equal(cv_kv_share_prefix(kv, 3, u, 20, &hit, &e), CV_OK);
    assert_int_equal(hit, 4);
    cv_kv_release(kv, 3);
    cv_kv_release(kv, 2);

    /* Sequence 1 grows past its shared blocks into its own and publishes them. */
    assert_int_equal(cv_kv_reserve(kv, 1, 16, &e), CV_OK);
    const int32_t *t1 = cv_kv_block_table(kv, CV_KV_FULL, 1), *t0 = cv_kv_block_table(kv, CV_KV_FULL, 0);
    assert_int_not_equal(t1[2], t0[2]);
    assert_int_equal(cv_kv_free_blocks(kv), 5);
    cv_kv_publish(kv, 1, t, 16);
    assert_int_equal(cv_kv_cached_blocks(kv), 4);           /* blocks 2 and 3 of t */
    /* The owner of the first copy drops it: the shared ones stay with sequence 1. */
    cv_kv_release(kv, 0);
    assert_int_equal(cv_kv_free_blocks(kv), 6);
    cv_kv_release(kv, 1);
    assert_int_equal(cv_kv_free_blocks(kv), 10);            /* cached blocks count as free */
    assert_int_equal(cv_kv_cached_blocks(kv), 4);
    assert_int_equal(cv_kv_share_prefix(kv, 2, t, 23, &hit, &e), CV_OK);
    assert_int_equal(hit, 16);
    cv_kv_release(kv, 2);

    /* 6 free blocks, 4 cached: a sequence of 8 blocks evicts two, the prefix's tail
     * (t's blocks 3 then 2) first; the head is still found. */
    assert_int_equal(cv_kv_reserve(kv, 3, 24, &e), CV_OK);  /* 6 blocks */
    assert_int_equal(cv_kv_evictions(kv), 0);               /* all from the free stack */
    assert_int_equal(cv_kv_reserve(kv, 2, 8, &e), CV_OK);   /* 2 more: evicts 2 */
    assert_int_equal(cv_kv_evictions(kv), 2);
    assert_int_equal(cv_kv_cached_blocks(kv), 2);
    cv_kv_release(kv, 2);
    assert_int_equal(cv_kv_share_prefix(kv, 2, t, 23, &hit, &e), CV_OK);
    assert_int_equal(hit, 8);
    /* A failed device upload maps nothing and drops the references again. */
    cv_kv_release(kv, 2);
    dev.fail_uploads = 1;
    assert_int_equal(cv_kv_share_prefix(kv, 2, t, 23, &hit, &e), CV_EIO);
    assert_int_equal(hit, 0);
    assert_int_equal(cv_kv_capacity(kv, 2), 0);
    assert_int_equal(cv_kv_free_blocks(kv), 4);
    dev.fail_uploads = 0;
    cv_kv_free(kv);

    /* Off: nothing is published or shared. */
    cfg = small_cfg();
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_false(cv_kv_config_of(kv)->prefix_cache);
    assert_int_equal(cv_kv_reserve(kv, 0, 8, &e), CV_OK);
    cv_kv_publish(kv, 0, t, 8);
    cv_kv_release(kv, 0);
    assert_int_equal(cv_kv_cached_blocks(kv), 0);
    assert_int_equal(cv_kv_share_prefix(kv, 1, t, 8, &hit, &e), CV_OK);
    assert_int_equal(hit, 0);
    cv_kv_free(kv);
}

/* Tensor-parallel ranks: a pool set each (here one on the host, one on a device), one
 * set of block tables, mirrored to the device rank; a failed mirror changes nothing. */
static void test_ranks_share_block_tables(void **state) {
    (void)state;
    static const cv_backend_ops ops = {.alloc = fake_alloc, .free = fake_free, .upload = fake_upload};
    fake_dev dev = {.base = {.ops = &ops, .device = CV_DEVICE_CUDA, .name = "fake"}};
    cv_kv_config cfg = small_cfg();
    cv_kv_cache *one, *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &one, &e), CV_OK);
    cfg.n_ranks = 2;
    cfg.backends[1] = &dev.base;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(dev.n_allocs, 2);
    assert_int_equal(cv_kv_bytes(kv), 2 * cv_kv_bytes(one));
    assert_int_equal(cv_kv_bytes_per_token(kv), 2 * cv_kv_bytes_per_token(one));
    assert_ptr_not_equal(cv_kv_k_pool(kv, 0, 1), cv_kv_k_pool(kv, 1, 1));
    assert_int_equal(cv_kv_reserve(kv, 3, 9, &e), CV_OK);
    assert_ptr_equal(cv_kv_device_table(kv, 0, CV_KV_FULL, 3), cv_kv_block_table(kv, CV_KV_FULL, 3));
    assert_memory_equal(cv_kv_device_table(kv, 1, CV_KV_FULL, 3), cv_kv_block_table(kv, CV_KV_FULL, 3), 3 * sizeof(int32_t));
    assert_null(cv_kv_device_table(kv, 2, CV_KV_FULL, 3));
    dev.fail_uploads = 1;
    assert_int_equal(cv_kv_reserve(kv, 0, 4, &e), CV_EIO);
    assert_non_null(strstr(e.msg, "sequence 0 on rank 1: device lost"));
    assert_int_equal(cv_kv_capacity(kv, 0), 0);
    assert_int_equal(cv_kv_free_blocks(kv), cfg.n_blocks - 3);
    cfg.n_ranks = CV_KV_MAX_RANKS + 1;
    cv_kv_cache *bad = NULL;
    assert_int_equal(cv_kv_create(&cfg, &bad, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "n_ranks"));
    cv_kv_free(kv);
    cv_kv_free(one);
    assert_int_equal(dev.n_allocs, 0);
}

/* Layers 0, 1 and 3 slide over 6 positions with steps of up to 3: rings of
 * ceil((6 + 3 - 1) / 2) = 4 blocks of 2 slots; layer 2 keeps every position. A memory
 * block holds one block of the 3 sliding layers or 3 blocks of layer 2. */
static const uint8_t k_sliding[4] = {1, 1, 0, 1};

static cv_kv_config ring_cfg(void) {
    return (cv_kv_config){.n_layers = 4, .n_kv_heads = 1, .head_dim = 4, .block_size = 2,
                          .n_blocks = 60, .max_seqs = 3, .max_seq_len = 40, .type = CV_TYPE_F32,
                          .sliding = k_sliding, .window = 6, .max_step = 3};
}

static void test_sliding_layers_get_a_ring(void **state) {
    (void)state;
    cv_kv_config cfg = ring_cfg();
    assert_int_equal(cv_kv_ring_blocks(&cfg), 4);
    const size_t layer_block = 2 * 2 * 4 * 4; /* K+V x 2 slots x 4 dims x f32 */
    assert_int_equal(cv_kv_block_bytes(&cfg), 3 * layer_block);
    assert_int_equal(cv_kv_blocks_for(&cfg, 5), 3 + 1);
    assert_int_equal(cv_kv_blocks_for(&cfg, 33), 4 + 6); /* ring of 4, 17 blocks of layer 2 */
    cv_kv_cache *kv;
    cv_error e = {0};
    cfg.prefix_cache = 1; /* asked for, but a ring keeps no prefixes (kv_cache.h) */
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_false(cv_kv_config_of(kv)->prefix_cache);
    for (int32_t l = 0; l < 4; l++) assert_int_equal(cv_kv_layer_group(kv, l), k_sliding[l] ? CV_KV_SLIDING : CV_KV_FULL);
    assert_int_equal(cv_kv_bytes(kv), 60 * 3 * layer_block);
    assert_int_equal(cv_kv_bytes_per_token(kv), layer_block / 2);

    /* Short of a ring: a plain table in both groups. Layer 2's blocks are the thirds of
     * memory block 0 (ids in layer-blocks: 0, 2, 4), the sliding ones blocks 1..3. */
    assert_int_equal(cv_kv_reserve(kv, 0, 5, &e), CV_OK);
    assert_int_equal(cv_kv_free_blocks(kv), 60 - 4);
    static const int32_t full3[3] = {0, 2, 4}, ring3[3] = {6, 12, 18};
    assert_memory_equal(cv_kv_block_table(kv, CV_KV_FULL, 0), full3, sizeof full3);
    assert_memory_equal(cv_kv_block_table(kv, CV_KV_SLIDING, 0), ring3, sizeof ring3);
    /* 33 positions: 17 entries; the sliding ones repeat the ring of 4. */
    assert_int_equal(cv_kv_reserve(kv, 0, 33, &e), CV_OK);
    assert_int_equal(cv_kv_capacity(kv, 0), 34);
    assert_int_equal(cv_kv_free_blocks(kv), 60 - 10);
    const int32_t *ring = cv_kv_block_table(kv, CV_KV_SLIDING, 0);
    for (int32_t i = 0; i < 17; i++) assert_int_equal(ring[i], ring[i % 4]);
    assert_int_equal(cv_kv_seq_bytes(kv, 0), 17 * layer_block + 4 * 3 * layer_block);
    /* Each group's layers start at their own offset in memory block 0. */
    uint8_t *k0 = cv_kv_k_pool(kv, 0, 0);
    assert_ptr_equal(cv_kv_k_pool(kv, 0, 2), k0);
    assert_int_equal((uint8_t *)cv_kv_v_pool(kv, 0, 2) - k0, layer_block / 2);
    assert_int_equal((uint8_t *)cv_kv_k_pool(kv, 0, 1) - k0, layer_block);
    assert_int_equal((uint8_t *)cv_kv_v_pool(kv, 0, 3) - k0, 5 * layer_block / 2);
    cv_kv_release(kv, 0);
    assert_int_equal(cv_kv_free_blocks(kv), 60);
    cv_kv_free(kv);

    /* Room for 8 memory blocks: a second sequence is busy, and nothing moves. */
    cfg.n_blocks = 8;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 1, 8, &e), CV_OK); /* 4 ring blocks, 4 thirds of 2 */
    assert_int_equal(cv_kv_free_blocks(kv), 2);
    assert_int_equal(cv_kv_reserve(kv, 2, 9, &e), CV_EBUSY);
    assert_non_null(strstr(e.msg, "sequence 2 needs 5 more blocks, 2 free"));
    assert_int_equal(cv_kv_capacity(kv, 2), 0);
    assert_int_equal(cv_kv_free_blocks(kv), 2);
    assert_int_equal(cv_kv_reserve(kv, 2, 2, &e), CV_OK); /* the free third and one block */
    assert_int_equal(cv_kv_free_blocks(kv), 1);
    cv_kv_release(kv, 1);
    assert_int_equal(cv_kv_reserve(kv, 2, 9, &e), CV_OK);
    cv_kv_release(kv, 2);
    assert_int_equal(cv_kv_free_blocks(kv), 8);
    cv_kv_free(kv);

    /* A ring as long as the context saves nothing: one group, as without a window. */
    cfg = ring_cfg();
    cfg.max_seq_len = 8;
    assert_int_equal(cv_kv_ring_blocks(&cfg), 0);
    assert_int_equal(cv_kv_block_bytes(&cfg), 4 * layer_block);
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_layer_group(kv, 0), CV_KV_FULL);
    assert_int_equal(cv_kv_reserve(kv, 0, 8, &e), CV_OK);
    assert_ptr_equal(cv_kv_block_table(kv, CV_KV_SLIDING, 0), cv_kv_block_table(kv, CV_KV_FULL, 0));
    cv_kv_free(kv);
    cfg = ring_cfg();
    cfg.max_step = 0;
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_EINVAL);
    assert_non_null(strstr(e.msg, "max_step = 0"));
}

/* Both groups' tables are mirrored to a device rank, the ring's repeats included; a
 * failed mirror gives back the blocks of both groups. */
static void test_device_mirrors_ring_tables(void **state) {
    (void)state;
    static const cv_backend_ops ops = {.alloc = fake_alloc, .free = fake_free, .upload = fake_upload};
    fake_dev dev = {.base = {.ops = &ops, .device = CV_DEVICE_CUDA, .name = "fake"}};
    cv_kv_config cfg = ring_cfg();
    cfg.n_ranks = 2;
    cfg.backends[1] = &dev.base;
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 1, 7, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 1, 21, &e), CV_OK);
    for (int g = CV_KV_FULL; g <= CV_KV_SLIDING; g++) {
        assert_ptr_equal(cv_kv_device_table(kv, 0, g, 1), cv_kv_block_table(kv, g, 1));
        assert_memory_equal(cv_kv_device_table(kv, 1, g, 1), cv_kv_block_table(kv, g, 1), 11 * sizeof(int32_t));
    }
    assert_ptr_not_equal(cv_kv_device_table(kv, 1, CV_KV_FULL, 1), cv_kv_device_table(kv, 1, CV_KV_SLIDING, 1));
    assert_int_equal(cv_kv_free_blocks(kv), 60 - 4 - 4); /* ring of 4, 11 thirds */
    dev.fail_uploads = 1;
    assert_int_equal(cv_kv_reserve(kv, 0, 10, &e), CV_EIO);
    assert_int_equal(cv_kv_free_blocks(kv), 60 - 8);
    assert_int_equal(cv_kv_capacity(kv, 0), 0);
    cv_kv_free(kv);
    assert_int_equal(dev.n_allocs, 0);
}

/* Steps of 1..max_step positions per sequence, as a forward pass does them: store the
 * step's positions first (in a sliding layer and in the full layer, whose pools start
 * at the same address), then every one of them must still read its whole window
 * through the sliding table, and every position of every live sequence must still be
 * intact in the full layer. Memory blocks move between the groups as sequences come
 * and go; none is lost. */
static void test_ring_keeps_every_window_a_step_reads(void **state) {
    (void)state;
    unsigned seed = (unsigned)time(NULL);
    printf("seed %u\n", seed);
    srand(seed);
    cv_kv_config cfg = ring_cfg();
    cfg.n_blocks = 14; /* under three long sequences: some reserves are busy */
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    float *ks = cv_kv_k_pool(kv, 0, 0), *kf = cv_kv_k_pool(kv, 0, 2);
    assert_ptr_equal(ks, kf);
#define AT(t, p) (((t)[(p) / 2] * 2 + (p) % 2) * 4)
    int32_t len[3] = {0};
    int busy = 0;
    for (int step = 0; step < 4000; step++) {
        int32_t s = rand() % 3;
        if (rand() % 16 == 0 || len[s] == 40) {
            cv_kv_release(kv, s);
            len[s] = 0;
            continue;
        }
        int32_t n = len[s] + 1 + rand() % 3;
        if (n > 40) n = 40;
        cv_status st = cv_kv_reserve(kv, s, n, &e);
        if (st != CV_OK) {
            assert_int_equal(st, CV_EBUSY);
            busy++;
            continue;
        }
        const int32_t *ts = cv_kv_block_table(kv, CV_KV_SLIDING, s), *tf = cv_kv_block_table(kv, CV_KV_FULL, s);
        for (int32_t p = len[s]; p < n; p++) {
            ks[AT(ts, p)] = (float)(s * 100 + p);
            kf[AT(tf, p)] = (float)(-s * 100 - p);
        }
        for (int32_t p = len[s]; p < n; p++)
            for (int32_t r = p - 5 < 0 ? 0 : p - 5; r <= p; r++) assert_true(ks[AT(ts, r)] == (float)(s * 100 + r));
        len[s] = n;
        for (int32_t q = 0; q < 3; q++) {
            assert_true(cv_kv_capacity(kv, q) >= len[q]);
            const int32_t *t = cv_kv_block_table(kv, CV_KV_FULL, q);
            for (int32_t p = 0; p < len[q]; p++) assert_true(kf[AT(t, p)] == (float)(-q * 100 - p));
        }
    }
#undef AT
    assert_true(busy > 0);
    for (int32_t q = 0; q < 3; q++) cv_kv_release(kv, q);
    assert_int_equal(cv_kv_free_blocks(kv), 14);
    /* All of it is one sequence's again. */
    assert_int_equal(cv_kv_reserve(kv, 0, 40, &e), CV_OK);
    assert_int_equal(cv_kv_free_blocks(kv), 14 - cv_kv_blocks_for(&cfg, 40));
    cv_kv_free(kv);
}

/* Gemma 3 shapes (f16, blocks of 16, steps of 256 rows): K+V bytes one sequence holds
 * with the ring and the memory blocks it takes, against every position in every
 * layer. 270M: 18 layers, 1 kv head of 256, window 512, every 6th layer global. 27B:
 * 62 layers, 16 kv heads of 128, window 1024 (checked without allocating 3 GiB). */
static void test_gemma3_sequences_hold_less(void **state) {
    (void)state;
    static uint8_t sl270[18], sl27[62];
    for (int l = 0; l < 18; l++) sl270[l] = (l + 1) % 6 != 0;
    for (int l = 0; l < 62; l++) sl27[l] = (l + 1) % 6 != 0;
    const size_t kib = 1024;
    const struct { const char *name; cv_kv_config cfg; int32_t ctx; size_t held, taken; } c[] = {
        {"gemma3 270M", {.n_layers = 18, .n_kv_heads = 1, .head_dim = 256, .sliding = sl270, .window = 512},
         4096, (3 * 4096 + 15 * 768) * kib, (48 + 52) * 15 * 16 * kib},
        {"gemma3 270M", {.n_layers = 18, .n_kv_heads = 1, .head_dim = 256, .sliding = sl270, .window = 512},
         32768, (3 * 32768 + 15 * 768) * kib, (48 + 410) * 15 * 16 * kib},
        {"gemma3 27B", {.n_layers = 62, .n_kv_heads = 16, .head_dim = 128, .sliding = sl27, .window = 1024},
         32768, ((size_t)10 * 32768 + 52 * 1280) * 8 * kib, (size_t)(80 + 410) * 52 * 16 * 8 * kib},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        cv_kv_config cfg = c[i].cfg;
        cfg.block_size = 16;
        cfg.max_step = 256;
        cfg.type = CV_TYPE_F16;
        cfg.max_seqs = 1;
        cfg.max_seq_len = c[i].ctx;
        cfg.n_blocks = cv_kv_blocks_for(&cfg, c[i].ctx);
        const size_t taken = (size_t)cfg.n_blocks * cv_kv_block_bytes(&cfg);
        assert_int_equal(taken, c[i].taken);
        if (cfg.n_layers == 18) {
            cv_kv_cache *kv;
            cv_error e = {0};
            assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
            assert_int_equal(cv_kv_bytes(kv), taken);
            assert_int_equal(cv_kv_reserve(kv, 0, c[i].ctx, &e), CV_OK);
            assert_int_equal(cv_kv_free_blocks(kv), 0);
            assert_int_equal(cv_kv_seq_bytes(kv, 0), c[i].held);
            cv_kv_free(kv);
        }
        cfg.window = 0;
        const size_t full = (size_t)cv_kv_blocks_for(&cfg, c[i].ctx) * cv_kv_block_bytes(&cfg);
        assert_int_equal(full, (size_t)c[i].ctx * cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * 2);
        printf("%s, %d positions: %.1f MiB held (%.1f MiB of memory blocks) with the ring, %.1f MiB "
               "without (%.1fx)\n", c[i].name, c[i].ctx, c[i].held / 1048576.0, taken / 1048576.0,
               full / 1048576.0, (double)full / taken);
    }
}

/* Sequences of n_pos positions that fit in cfg's cache, reserved one after the other. */
static int32_t count_fitting(const cv_kv_config *cfg, int32_t n_pos) {
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(cfg, &kv, &e), CV_OK);
    int32_t n = 0;
    while (n < cfg->max_seqs && cv_kv_reserve(kv, n, n_pos, &e) == CV_OK) n++;
    cv_kv_free(kv);
    return n;
}

/* The server's defaults on Gemma 3 270M: 512 MiB for 64 sequences of up to 4096
 * positions. Without rings that is 1820 blocks of all 18 layers: 7 sequences of 4096
 * positions, or 62 of 455. With them, 2184 memory blocks: 22 of the long ones,
 * and (both groups drawing from the same blocks) still as many short ones. */
static void test_gemma3_budget_holds_more_sequences(void **state) {
    (void)state;
    static uint8_t sl[18];
    for (int l = 0; l < 18; l++) sl[l] = (l + 1) % 6 != 0;
    cv_kv_config cfg = {.n_layers = 18, .n_kv_heads = 1, .head_dim = 256, .block_size = 16, .max_seqs = 64,
                        .max_seq_len = 4096, .type = CV_TYPE_F16, .sliding = sl, .window = 512, .max_step = 256};
    const size_t budget = (size_t)512 << 20;
    cfg.n_blocks = (int32_t)(budget / cv_kv_block_bytes(&cfg));
    assert_int_equal(cfg.n_blocks, 2184);
    const int32_t ring_long = count_fitting(&cfg, 4096), ring_short = count_fitting(&cfg, 455);
    cfg.window = 0;
    cfg.n_blocks = (int32_t)(budget / cv_kv_block_bytes(&cfg));
    assert_int_equal(cfg.n_blocks, 1820);
    const int32_t full_long = count_fitting(&cfg, 4096), full_short = count_fitting(&cfg, 455);
    printf("512 MiB, gemma3 270M: %d sequences of 4096 positions with rings, %d without; %d of 455 with, "
           "%d without\n", ring_long, full_long, ring_short, full_short);
    assert_int_equal(full_long, 7);
    assert_int_equal(ring_long, 22);
    assert_int_equal(full_short, 62);
    assert_true(ring_short >= full_short);
}

/* Speculative decoding's rollback: blocks holding only positions past the verified
 * ones go back (newest first, so the next reserve gets them again), the published
 * prefix stays in the index, a ring keeps its blocks while the sequence spans it, and
 * a sequence truncated to nothing holds nothing. */
static void test_truncate_gives_back_rejected_blocks(void **state) {
    (void)state;
    cv_kv_config cfg = small_cfg(); /* 10 blocks of 4 */
    cfg.prefix_cache = 1;
    cfg.prefix_seed = 7;
    cv_kv_cache *kv;
    cv_error e = {0};
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    int32_t t[24];
    for (int i = 0; i < 24; i++) t[i] = 200 + i;
    assert_int_equal(cv_kv_reserve(kv, 0, 6, &e), CV_OK);   /* 2 blocks: 6 positions verified */
    cv_kv_publish(kv, 0, t, 6);                              /* block 0 full and published */
    const int32_t b1 = cv_kv_block_table(kv, CV_KV_FULL, 0)[1];
    assert_int_equal(cv_kv_reserve(kv, 0, 15, &e), CV_OK);  /* 9 drafts: 4 blocks */
    assert_int_equal(cv_kv_free_blocks(kv), 6);
    cv_kv_truncate(kv, 0, 7);                                /* one draft kept */
    assert_int_equal(cv_kv_capacity(kv, 0), 8);
    assert_int_equal(cv_kv_free_blocks(kv), 8);
    assert_int_equal(cv_kv_block_table(kv, CV_KV_FULL, 0)[1], b1); /* the partly verified block stays */
    cv_kv_truncate(kv, 0, 8);                                /* within what it holds: no-op */
    assert_int_equal(cv_kv_capacity(kv, 0), 8);
    cv_kv_publish(kv, 0, t, 8);
    assert_int_equal(cv_kv_cached_blocks(kv), 2);
    cv_kv_truncate(kv, 0, 0);
    assert_int_equal(cv_kv_capacity(kv, 0), 0);
    assert_int_equal(cv_kv_free_blocks(kv), 10);              /* the two cached ones count as free */
    assert_int_equal(cv_kv_cached_blocks(kv), 2);
    int32_t hit;
    cv_kv_release(kv, 0);
    assert_int_equal(cv_kv_share_prefix(kv, 1, t, 23, &hit, &e), CV_OK);
    assert_int_equal(hit, 8);                                /* only verified tokens were published */
    cv_kv_free(kv);

    cfg = ring_cfg(); /* window 6, blocks of 2, a ring of 4 */
    assert_int_equal(cv_kv_create(&cfg, &kv, &e), CV_OK);
    assert_int_equal(cv_kv_reserve(kv, 0, 7, &e), CV_OK);   /* 4 entries: the whole ring */
    const int32_t free_before = cv_kv_free_blocks(kv);
    assert_int_equal(cv_kv_reserve(kv, 0, 10, &e), CV_OK);  /* past the ring: only full-group blocks */
    cv_kv_truncate(kv, 0, 7);
    assert_int_equal(cv_kv_free_blocks(kv), free_before);
    assert_int_equal(cv_kv_capacity(kv, 0), 8);
    cv_kv_truncate(kv, 0, 3);                                /* back inside the ring: ring blocks 2, 3 go */
    assert_int_equal(cv_kv_capacity(kv, 0), 4);
    cv_kv_truncate(kv, 0, 0);
    assert_int_equal(cv_kv_free_blocks(kv), 60);
    cv_kv_free(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_takes_blocks_and_release_returns_them),
        cmocka_unit_test(test_exhaustion_is_busy_and_changes_nothing),
        cmocka_unit_test(test_limits_are_range_errors),
        cmocka_unit_test(test_bad_config_is_rejected),
        cmocka_unit_test(test_random_traffic_keeps_blocks_disjoint),
        cmocka_unit_test(test_device_backend_mirrors_block_tables),
        cmocka_unit_test(test_ranks_share_block_tables),
        cmocka_unit_test(test_prefix_blocks_are_shared_cached_and_evicted),
        cmocka_unit_test(test_sliding_layers_get_a_ring),
        cmocka_unit_test(test_device_mirrors_ring_tables),
        cmocka_unit_test(test_ring_keeps_every_window_a_step_reads),
        cmocka_unit_test(test_gemma3_sequences_hold_less),
        cmocka_unit_test(test_gemma3_budget_holds_more_sequences),
        cmocka_unit_test(test_truncate_gives_back_rejected_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
