/* Every candidate matmul path of the per-host dispatch (matmul_dispatch.h), in the
 * weight layout it reads (repack.h), against a scalar reference on fresh random data,
 * bit for bit: batch size and kernel choice must never change a token. Also the x16
 * layout's round trip, get_rows and weight_release on repacked weights, matmul_multi
 * against single matmuls, the cache file and CORVID_MATMUL. The seed is printed; CORVID_TEST_SEED=N replays a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_backend.h"
#include "matmul.h"
#include "matmul_dispatch.h"
#include "quant.h"
#include "quant_blocks.h"
#include "repack.h"
#include "threadpool.h"
#include "../support/test_rng.h"

static cv_test_rng g_rng;
static char g_cache_dir[64];

static uint64_t rnd(void) { return cv_test_rng_next(&g_rng); }
static float frand(float a) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2 - 1) * a; }

static const cv_type k_types[] = {CV_TYPE_Q4_0, CV_TYPE_Q5_0, CV_TYPE_Q8_0, CV_TYPE_Q4_K,
                                  CV_TYPE_Q5_K, CV_TYPE_Q6_K, CV_TYPE_F16,  CV_TYPE_BF16};

/* Weights quantized from random values, every 7th row from values 100x larger and the
 * 5th from a row with one spike; K-quant rows every 3rd of random bytes with extreme
 * half scales (every level, scale and min the format can hold). */
static void *make_weight(cv_type t, int64_t rows, int64_t cols) {
    size_t rb = cv_type_row_bytes(t, cols), bb = cv_type_get(t)->block_bytes;
    uint8_t *w = malloc(rb * (size_t)rows);
    float *x = malloc((size_t)cols * sizeof *x);
    assert_true(w && x);
    static const uint16_t halves[] = {0x7BFF, 0x0001, 0x0000, 0x8400, 0x3C00, 0x1A3F};
    int k = t == CV_TYPE_Q4_K || t == CV_TYPE_Q5_K || t == CV_TYPE_Q6_K;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w + (size_t)r * rb;
        for (int64_t c = 0; c < cols; c++) x[c] = frand(r % 7 == 3 ? 100.0f : 1.0f);
        if (r % 7 == 5) x[cols / 2] = 5000.0f;
        cv_quantize_row(t, x, row, cols);
        if (k && r % 3 == 1)
            for (int64_t b = 0; b < cols / CV_QK_K; b++) {
                uint8_t *blk = row + (size_t)b * bb;
                for (size_t i = 0; i < bb; i++) blk[i] = (uint8_t)rnd();
                size_t d_at = t == CV_TYPE_Q6_K ? offsetof(cv_block_q6_K, d) : 0;
                for (int h = 0; h < (t == CV_TYPE_Q6_K ? 1 : 2); h++)
                    memcpy(blk + d_at + 2 * h, &halves[rnd() % 6], 2);
            }
        if (t == CV_TYPE_Q8_0 && r % 5 == 0) memset(row + 2, 0x80, 7); /* quants of -128 */
    }
    free(x);
    return w;
}

/* The scalar reference of the Q4_0/Q8_0 tiles' contract: per block the exact integer
 * sum, then acc = fma(sum, d_w * d_a, acc), blocks in order. */
static float ref_q32(cv_type t, int64_t cols, const uint8_t *w, const cv_block_q8_0 *a) {
    float acc = 0;
    for (int64_t b = 0; b < cols / 32; b++) {
        int32_t sum = 0;
        uint16_t dh;
        if (t == CV_TYPE_Q4_0) {
            const cv_block_q4_0 *q = (const cv_block_q4_0 *)w + b;
            for (int i = 0; i < 16; i++)
                sum += ((q->qs[i] & 15) - 8) * a[b].qs[i] + ((q->qs[i] >> 4) - 8) * a[b].qs[i + 16];
            dh = q->d;
        } else {
            const cv_block_q8_0 *q = (const cv_block_q8_0 *)w + b;
            for (int i = 0; i < 32; i++) sum += q->qs[i] * a[b].qs[i];
            dh = q->d;
        }
        acc = fmaf((float)sum, cv_fp16_to_fp32(dh) * cv_fp16_to_fp32(a[b].d), acc);
    }
    return acc;
}

/* y[t][r] by the reference: the tiles' contract above for Q4_0/Q8_0, quant's scalar dot
 * for Q5_0 and the K-quants, quant's AVX2 float dot (the F16/BF16 tiles' contract) for
 * F16 and BF16. */
static void reference(cv_type t, int64_t rows, int64_t cols, const uint8_t *w, const float *x, int32_t n, float *y) {
    cv_type vt = cv_type_vec_dot_type(t);
    size_t rb = cv_type_row_bytes(t, cols), ab = cv_type_row_bytes(vt, cols);
    uint8_t *a = malloc(ab * (size_t)n);
    assert_non_null(a);
    for (int32_t i = 0; i < n; i++) cv_quantize_row(vt, x + (int64_t)i * cols, a + (size_t)i * ab, cols);
    int floats = t == CV_TYPE_F16 || t == CV_TYPE_BF16;
    cv_quant_force_scalar(!floats);
    for (int32_t i = 0; i < n; i++)
        for (int64_t r = 0; r < rows; r++) {
            const uint8_t *wr = w + (size_t)r * rb, *ar = a + (size_t)i * ab;
            y[(int64_t)i * rows + r] = t == CV_TYPE_Q4_0 || t == CV_TYPE_Q8_0
                                           ? ref_q32(t, cols, wr, (const cv_block_q8_0 *)ar)
                                           : cv_vec_dot(t, cols, wr, ar);
        }
    cv_quant_force_scalar(0);
    free(a);
}

static void test_every_candidate_bit_identical_to_reference(void **state) {
    (void)state;
    cv_threadpool *pool = NULL;
    assert_int_equal(cv_threadpool_create(2, &pool, NULL), CV_OK);
    size_t scratch_bytes = (size_t)8 << 20;
    void *scratch = aligned_alloc(64, scratch_bytes);
    assert_non_null(scratch);
    const cv_matmul_limits lim = {0, 0, 1};
    const int64_t shapes[][2] = {{16, 256}, {53, 512}, {130, 2048}, {35, 768}};
    const int32_t ns[] = {1, 2, 3, 8, 16, 17, 33};
    int checked = 0;
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ti++) {
        cv_type t = k_types[ti];
        const cv_matmul_path *cand[8];
        int nc = cv_matmul_candidates(t, &lim, cand, 8);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            if (cols % cv_type_get(t)->block_elems) continue;
            size_t rb = cv_type_row_bytes(t, cols);
            uint8_t *w = make_weight(t, rows, cols), *wx = malloc(rb * (size_t)rows);
            assert_non_null(wx);
            cv_repack_x16(t, rows, cols, w, rb, wx);
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
                int32_t n = ns[j];
                if (rows * n > 40000 && n != 17) continue; /* the big shape: one batch is enough */
                float *x = malloc((size_t)n * cols * sizeof *x);
                float *yr = malloc((size_t)n * rows * sizeof *yr), *yf = malloc((size_t)n * rows * sizeof *yf);
                assert_true(x && yr && yf);
                for (int64_t i = 0; i < (int64_t)n * cols; i++) x[i] = frand(1.5f);
                if (n > 2) { /* an all-zero token and spikes */
                    memset(x + cols, 0, (size_t)cols * sizeof *x);
                    x[2 * cols + 5] = 900.0f;
                    x[2 * cols + cols - 1] = -3000.0f;
                }
                reference(t, rows, cols, w, x, n, yr);
                for (int c = 0; c < nc; c++) {
                    cv_tensor wt = {t, rows, cols, rb, cand[c]->layout == CV_CPU_LAYOUT_X16 ? wx : w, CV_DEVICE_CPU,
                                    cand[c]->layout};
                    memset(yf, 0xAB, (size_t)n * rows * sizeof *yf);
                    cv_matmul_run(pool, cand[c]->kernel(t), scratch, scratch_bytes, &wt, x, yf, n);
                    for (int64_t k = 0; k < (int64_t)n * rows; k++)
                        if (memcmp(&yf[k], &yr[k], sizeof(float)))
                            fail_msg("%s path %s %lldx%lld n=%d: y[%lld] = %.9g, reference %.9g",
                                     cv_type_get(t)->name, cand[c]->name, (long long)rows, (long long)cols, n,
                                     (long long)k, yf[k], yr[k]);
                    checked++;
                }
                free(x);
                free(yr);
                free(yf);
            }
            free(w);
            free(wx);
        }
    }
    printf("%d path x shape x batch combinations bit-identical\n", checked);
    if (cv_cpu_has_avx512vnni()) assert_true(checked > 4 * 3 * 20 + 20);
    free(scratch);
    cv_threadpool_destroy(pool);
}

/* Every row of an x16 weight comes back as the file's bytes (tails included), for
 * every type the layout takes; the layout keeps the tensor's size. */
static void test_x16_round_trip(void **state) {
    (void)state;
    const cv_type types[] = {CV_TYPE_Q4_0, CV_TYPE_Q5_0, CV_TYPE_Q8_0, CV_TYPE_Q4_K, CV_TYPE_Q5_K, CV_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        cv_type t = types[i];
        assert_true(cv_repack_x16_supported(t));
        const int64_t rows = 37, cols = 512;
        size_t rb = cv_type_row_bytes(t, cols);
        uint8_t *w = malloc(rb * rows), *wx = malloc(rb * rows), *row = malloc(rb);
        assert_true(w && wx && row);
        for (size_t k = 0; k < rb * rows; k++) w[k] = (uint8_t)rnd();
        cv_repack_x16(t, rows, cols, w, rb, wx);
        assert_memory_not_equal(w, wx, rb * 32);
        for (int64_t r = 0; r < rows; r++) {
            cv_repack_x16_row(t, rows, cols, wx, r, row);
            if (memcmp(row, w + (size_t)r * rb, rb)) fail_msg("%s row %lld differs after the round trip", cv_type_get(t)->name, (long long)r);
        }
        free(w);
        free(wx);
        free(row);
    }
    assert_false(cv_repack_x16_supported(CV_TYPE_F16));
}

/* A backend that may repack: get_rows on its weights gives the file's rows, matmul the
 * scalar reference's bits, weight_release frees (ASan's leak check would see it). */
static void test_backend_repacked_weights(void **state) {
    (void)state;
    cv_backend *plain = NULL, *rp = NULL;
    cv_cpu_options o1 = {.n_threads = 2}, o2 = {.n_threads = 2, .repack_weights = 1};
    assert_int_equal(cv_cpu_backend_create(&o1, &plain, NULL), CV_OK);
    assert_int_equal(cv_cpu_backend_create(&o2, &rp, NULL), CV_OK);
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ti++) {
        cv_type t = k_types[ti];
        const int64_t rows = 70, cols = 1024;
        size_t rb = cv_type_row_bytes(t, cols);
        uint8_t *w = make_weight(t, rows, cols);
        cv_tensor host = {t, rows, cols, rb, w, CV_DEVICE_CPU, 0}, a, b, keep;
        assert_int_equal(plain->ops->weight_load(plain, &host, &a, NULL), CV_OK);
        assert_int_equal(rp->ops->weight_load(rp, &host, &b, NULL), CV_OK);
        cv_tensor hk = host;
        hk.layout = CV_LAYOUT_KEEP_ROWS;
        assert_int_equal(rp->ops->weight_load(rp, &hk, &keep, NULL), CV_OK);
        assert_int_equal(keep.layout, CV_CPU_LAYOUT_ROWS);
        assert_ptr_equal(keep.data, w);
        printf("%s: layout %d\n", cv_type_get(t)->name, b.layout);
        int32_t ids[3] = {0, 33, 69};
        float ga[3 * 1024], gb[3 * 1024];
        plain->ops->get_rows(plain, &a, ids, 3, ga);
        rp->ops->get_rows(rp, &b, ids, 3, gb);
        assert_memory_equal(ga, gb, sizeof ga);
        const int32_t n = 5;
        float *x = malloc(n * cols * sizeof *x), ya[5 * 70], yb[5 * 70];
        assert_non_null(x);
        for (int64_t i = 0; i < n * cols; i++) x[i] = frand(1.0f);
        for (int32_t m = 1; m <= n; m += n - 1) {
            reference(t, rows, cols, w, x, m, ya);
            rp->ops->matmul(rp, &b, x, yb, m);
            if (cv_cpu_has_avx2()) assert_memory_equal(ya, yb, (size_t)m * rows * sizeof(float));
        }
        plain->ops->weight_release(plain, &a);
        rp->ops->weight_release(rp, &b);
        rp->ops->weight_release(rp, &keep);
        free(x);
        free(w);
    }
    cv_tensor bad = {CV_TYPE_Q4_0, 16, 32, 18, NULL, CV_DEVICE_CPU, CV_CPU_LAYOUT_X16}, out;
    cv_error err = {0};
    assert_int_equal(rp->ops->weight_load(rp, &bad, &out, &err), CV_EINVAL);
    cv_backend_destroy(plain);
    cv_backend_destroy(rp);
}

/* matmul_multi: groups of weights read one input (one activation format: Q, K, V of one
 * type; two types that share quant's Q8_K rows; three types with formats of their own;
 * F16 and BF16; a group small enough to run on the caller), each output bit-identical
 * to its own matmul, at every decode batch and at 5 (one weight at a time), on a
 * repacking backend and a plain one. Outputs start as NaN: a row left unwritten shows. */
static void test_matmul_multi_same_bits(void **state) {
    (void)state;
    static const struct {
        int count, cols;
        cv_type t[3];
        int rows[3];
    } groups[] = {
        {3, 1024, {CV_TYPE_Q4_0, CV_TYPE_Q4_0, CV_TYPE_Q4_0}, {272, 48, 64}},
        {2, 1024, {CV_TYPE_Q4_K, CV_TYPE_Q6_K}, {160, 48}},
        {3, 512, {CV_TYPE_Q4_0, CV_TYPE_Q8_0, CV_TYPE_Q5_0}, {96, 32, 200}},
        {2, 512, {CV_TYPE_F16, CV_TYPE_BF16}, {64, 144}},
        {2, 256, {CV_TYPE_Q4_0, CV_TYPE_Q4_0}, {16, 32}},
    };
    for (int repack = 0; repack < 2; repack++) {
        cv_backend *be = NULL;
        cv_cpu_options o = {.n_threads = 2, .repack_weights = repack};
        assert_int_equal(cv_cpu_backend_create(&o, &be, NULL), CV_OK);
        for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
            const int count = groups[gi].count, cols = groups[gi].cols;
            void *host[3];
            cv_tensor w[3];
            const cv_tensor *wp[3];
            float *ya[3], *yb[3];
            for (int i = 0; i < count; i++) {
                cv_type t = groups[gi].t[i];
                int rows = groups[gi].rows[i];
                host[i] = make_weight(t, rows, cols);
                cv_tensor h = {t, rows, cols, cv_type_row_bytes(t, cols), host[i], CV_DEVICE_CPU, 0};
                assert_int_equal(be->ops->weight_load(be, &h, &w[i], NULL), CV_OK);
                wp[i] = &w[i];
                ya[i] = malloc(5 * (size_t)rows * sizeof(float));
                yb[i] = malloc(5 * (size_t)rows * sizeof(float));
                assert_true(ya[i] && yb[i]);
            }
            float *x = malloc(5 * (size_t)cols * sizeof *x);
            assert_non_null(x);
            for (int64_t i = 0; i < 5 * (int64_t)cols; i++) x[i] = frand(2.0f);
            for (int32_t n = 1; n <= 5; n++) {
                for (int i = 0; i < count; i++) {
                    size_t bytes = (size_t)n * (size_t)groups[gi].rows[i] * sizeof(float);
                    memset(yb[i], 0xFF, bytes); /* NaN */
                    be->ops->matmul(be, &w[i], x, ya[i], n);
                }
                be->ops->matmul_multi(be, count, wp, x, yb, n);
                for (int i = 0; i < count; i++)
                    assert_memory_equal(ya[i], yb[i], (size_t)n * (size_t)groups[gi].rows[i] * sizeof(float));
            }
            for (int i = 0; i < count; i++) {
                be->ops->weight_release(be, &w[i]);
                free(host[i]);
                free(ya[i]);
                free(yb[i]);
            }
            free(x);
        }
        cv_backend_destroy(be);
    }
}

/* The choice: every class's path is a candidate that reads the batch-1 path's layout;
 * the timing wrote the cache file, and a second process-wide call reads the same. */
static void test_choice_is_consistent_and_cached(void **state) {
    (void)state;
    const cv_matmul_limits lim = {0, 0, 1};
    cv_matmul_choice c[CV_TYPE_COUNT];
    double spent = cv_matmul_choose(&lim, c);
    printf("choice took %.1f ms\n", spent * 1e3);
    for (size_t ti = 0; ti < sizeof k_types / sizeof k_types[0]; ti++) {
        cv_type t = k_types[ti];
        const cv_matmul_path *cand[8];
        int nc = cv_matmul_candidates(t, &lim, cand, 8);
        for (int k = 0; k < CV_MM_CLASSES; k++) {
            if (!nc) {
                assert_null(c[t].path[k]);
                continue;
            }
            int found = 0;
            for (int i = 0; i < nc; i++) found |= cand[i] == c[t].path[k];
            assert_true(found);
            assert_int_equal(c[t].path[k]->layout, c[t].layout);
            printf("%s class %d: %s\n", cv_type_get(t)->name, k, c[t].path[k]->name);
        }
    }
    if (cv_cpu_has_avx2()) {
        char path[256];
        cv_matmul_cache_path(path, sizeof path);
        assert_string_equal(path, strcat(strcpy((char[128]){0}, g_cache_dir), "/matmul-paths"));
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char line[4096];
        int lines = 0;
        while (fgets(line, sizeof line, f)) lines += strstr(line, "\tQ4_0\t") != NULL;
        fclose(f);
        assert_int_equal(lines, CV_MM_CLASSES);
        assert_true(spent > 0 && spent < 5.0);
    }
    assert_int_equal(cv_matmul_class(1), CV_MM_B1);
    assert_int_equal(cv_matmul_class(16), CV_MM_SMALL);
    assert_int_equal(cv_matmul_class(512), CV_MM_LARGE);
}

int main(void) {
    g_rng = cv_test_rng_new(cv_test_seed("test_matmul_paths"));
    snprintf(g_cache_dir, sizeof g_cache_dir, "/tmp/corvid-test-mm-%ld", (long)getpid());
    setenv("CORVID_CACHE_DIR", g_cache_dir, 1);
    unsetenv("CORVID_MATMUL");
    unsetenv("CORVID_MATMUL_TUNE");
    const struct CMUnitTest tests[] = {
        /* first: the process's first choice under these options is timed here */
        cmocka_unit_test(test_choice_is_consistent_and_cached),
        cmocka_unit_test(test_every_candidate_bit_identical_to_reference),
        cmocka_unit_test(test_x16_round_trip),
        cmocka_unit_test(test_backend_repacked_weights),
        cmocka_unit_test(test_matmul_multi_same_bits),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_cache_dir);
    if (system(cmd)) rc = rc ? rc : 1;
    return rc;
}
