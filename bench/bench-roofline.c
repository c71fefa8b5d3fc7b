/* bench-roofline: this machine's memory bandwidth, the roofline decode is judged by.
 *
 *   bench-roofline [-t N] [--mib M] [--runs R] [--matmul]
 *
 * read: a read-only sum over a buffer of M MiB (default 1024, far larger than any L3);
 * triad: a[i] = b[i] + s * c[i] over three arrays of M/3 MiB (membw.h). Each figure is
 * the median of R runs (default 7), for 1 thread and for N (default: all CPUs).
 * --matmul also times the CPU backend's matmul on the weights of a TinyLlama-1.1B-shaped
 * model (22 layers of random weights, all resident, one model each of Q4_0, Q8_0, Q4_K
 * and Q6_K): a decode token at B = 1 (reported as weight bytes / time and as a
 * fraction of the N-thread read bandwidth) and a 512-token prefill at B = 512
 * (matmuls only, tokens/s), with the weights in the layout the backend chose, and
 * the per-host choice of matmul paths itself (matmul_paths, and what choosing cost).
 * One JSON object on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cli.h"
#include "cpu_backend.h"
#include "matmul_dispatch.h"
#include "membw.h"
#include "threadpool.h"

/* ---- matmul on a TinyLlama-1.1B-shaped model ---------------------------------------- */

typedef struct shape {
    int64_t rows, cols;
} shape;

/* One layer: wq, wk, wv, wo, ffn gate, up, down; then the output head once. */
static const shape k_layer[] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048},
                                {5632, 2048}, {5632, 2048}, {2048, 5632}};
static const shape k_head = {32000, 2048};
enum { N_LAYERS = 22, N_MATS = N_LAYERS * 7 + 1 };

typedef struct model {
    cv_tensor w[N_MATS];
    void *mem;
    size_t bytes;
} model;

static int model_make(cv_backend *be, cv_type type, model *m) {
    m->bytes = 0;
    for (int i = 0; i < N_MATS; i++) {
        shape s = i == N_MATS - 1 ? k_head : k_layer[i % 7];
        m->bytes += cv_type_row_bytes(type, s.cols) * (size_t)s.rows;
    }
    m->mem = aligned_alloc(64, (m->bytes + 63) & ~(size_t)63);
    if (!m->mem) return -1;
    /* Random bytes make valid blocks except for the F16 scales: keep those small and
     * finite so the arithmetic is that of a real model. */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    uint8_t *p = m->mem;
    for (size_t i = 0; i < m->bytes; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    size_t blk = cv_type_get(type)->block_bytes, off = 0;
    /* Q6_K keeps its scale last; Q4_K has a second one (dmin) after d. */
    size_t d_at = type == CV_TYPE_Q6_K ? blk - 2 : 0, n_d = type == CV_TYPE_Q4_K ? 2 : 1;
    for (size_t i = 0; i + blk <= m->bytes; i += blk) {
        uint16_t d = cv_fp32_to_fp16(0.01f);
        for (size_t k = 0; k < n_d; k++) memcpy(p + i + d_at + 2 * k, &d, 2);
    }
    for (int i = 0; i < N_MATS; i++) {
        shape s = i == N_MATS - 1 ? k_head : k_layer[i % 7];
        size_t rb = cv_type_row_bytes(type, s.cols);
        cv_tensor host = {type, s.rows, s.cols, rb, p + off, CV_DEVICE_CPU, 0};
        if (be->ops->weight_load(be, &host, &m->w[i], NULL) != CV_OK) return -1;
        off += rb * (size_t)s.rows;
    }
    return 0;
}

/* Seconds for one pass over every matrix at batch n (x, y big enough for any shape). */
static double model_pass(cv_backend *be, model *m, const float *x, float *y, int32_t n) {
    double t0 = cv_seconds();
    for (int i = 0; i < N_MATS; i++) be->ops->matmul(be, &m->w[i], x, y, n);
    return cv_seconds() - t0;
}

static void bench_matmul(cv_backend *be, cv_type type, int runs, double read_bw, int first) {
    model m;
    float *x = malloc(sizeof(float) * 512 * 5632), *y = malloc(sizeof(float) * 512 * 32000);
    if (!x || !y || model_make(be, type, &m) != 0) {
        fprintf(stderr, "bench-roofline: out of memory for the %s model\n", cv_type_get(type)->name);
        exit(1);
    }
    for (int64_t i = 0; i < 512 * 5632; i++) x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    double v[CV_MEMBW_MAX_RUNS];
    model_pass(be, &m, x, y, 1);
    for (int r = 0; r < runs; r++) v[r] = model_pass(be, &m, x, y, 1);
    double t1 = cv_median(v, runs);
    int pruns = runs < 3 ? runs : 3;
    model_pass(be, &m, x, y, 512);
    for (int r = 0; r < pruns; r++) v[r] = model_pass(be, &m, x, y, 512);
    double t512 = cv_median(v, pruns);
    double gbps = m.bytes / t1 / 1e9;
    printf("%s\"%s\":{\"weight_bytes\":%zu,\"decode_b1_ms\":%.3f,\"decode_b1_gbps\":%.3f,"
           "\"roofline_fraction\":%.3f,\"prefill_b512_tokens_per_s\":%.2f}",
           first ? "" : ",", cv_type_get(type)->name, m.bytes, t1 * 1e3, gbps, gbps / read_bw, 512 / t512);
    for (int i = 0; i < N_MATS; i++) be->ops->weight_release(be, &m.w[i]);
    free(m.mem);
    free(x);
    free(y);
}

/* The per-host matmul choice (matmul_dispatch.h): per type, the weight layout and the
 * path of each batch class, and what choosing cost this process (0: from the cache). */
static void print_paths(const cv_cpu_options *o) {
    cv_matmul_limits lim = {o->force_scalar, o->no_avx512, o->repack_weights};
    cv_matmul_choice c[CV_TYPE_COUNT];
    double spent = cv_matmul_choose(&lim, c);
    char path[1024];
    cv_matmul_cache_path(path, sizeof path);
    printf(",\"matmul_choice_ms\":%.1f,\"matmul_choice_cache\":\"%s\",\"matmul_paths\":{", spent * 1e3, path);
    int first = 1;
    for (int t = 0; t < CV_TYPE_COUNT; t++) {
        if (!c[t].path[CV_MM_B1]) continue;
        printf("%s\"%s\":{\"layout\":\"%s\",\"b1\":\"%s\",\"small\":\"%s\",\"large\":\"%s\"}", first ? "" : ",",
               cv_type_get((cv_type)t)->name, c[t].layout == CV_CPU_LAYOUT_X16 ? "x16" : "rows",
               c[t].path[CV_MM_B1]->name, c[t].path[CV_MM_SMALL]->name, c[t].path[CV_MM_LARGE]->name);
        first = 0;
    }
    printf("}");
}

static void usage(FILE *f) {
    fputs("usage: bench-roofline [-t N] [--mib M] [--runs R] [--matmul]\n"
          "  this machine's memory read and triad bandwidth, for 1 thread and N; one JSON object on\n"
          "  stdout\n"
          "  -t N                 threads (default: all CPUs)\n"
          "  --mib M              buffer size in MiB, at least 16 (default 1024)\n"
          "  --runs R             each figure is the median of R runs, 1..64 (default 7)\n"
          "  --matmul             also time the CPU matmul on a TinyLlama-1.1B-shaped model (Q4_0,\n"
          "                       Q8_0, Q4_K, Q6_K): a decode token and a 512-token prefill\n"
          "  -h, --help           this text\n",
          f);
}

int main(int argc, char **argv) {
    int threads = 0, runs = 7, do_matmul = 0;
    long mib = 1024, v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        if (!strcmp(a, "--matmul")) {
            do_matmul = 1;
            continue;
        }
        int which = !strcmp(a, "-t") ? 1 : !strcmp(a, "--mib") ? 2 : !strcmp(a, "--runs") ? 3 : 0;
        if (!which)
            cv_cli_usage_error("bench-roofline", usage, a[0] == '-' ? "unknown option %s" : "unexpected argument '%s'", a);
        if (i + 1 >= argc) cv_cli_usage_error("bench-roofline", usage, "%s needs a value", a);
        const long lo = which == 1 ? 0 : which == 2 ? 16 : 1, hi = which == 1 ? 4096 : which == 2 ? 1L << 30 : CV_MEMBW_MAX_RUNS;
        if (cv_cli_int("bench-roofline", a, argv[++i], lo, hi, &v)) return CV_CLI_EXIT_USAGE;
        if (which == 1) threads = (int)v;
        else if (which == 2) mib = v;
        else runs = (int)v;
    }
    cv_error err = {0};
    cv_threadpool *one = NULL, *all = NULL;
    if (cv_threadpool_create(1, &one, &err) != CV_OK || cv_threadpool_create(threads, &all, &err) != CV_OK) {
        fprintf(stderr, "bench-roofline: %s\n", err.msg);
        return 1;
    }
    int n = cv_threadpool_size(all);
    size_t bytes = (size_t)mib << 20;
    double read1, readn, triad1, triadn;
    if (cv_membw_read(one, bytes, runs, &read1, &err) != CV_OK || cv_membw_read(all, bytes, runs, &readn, &err) != CV_OK ||
        cv_membw_triad(one, bytes, runs, &triad1, &err) != CV_OK ||
        cv_membw_triad(all, bytes, runs, &triadn, &err) != CV_OK) {
        fprintf(stderr, "bench-roofline: %s\n", err.msg);
        return 1;
    }
    printf("{\"bench\":\"roofline\",\"buffer_mib\":%ld,\"runs\":%d,\"threads\":%d,"
           "\"read_gbps_1t\":%.3f,\"read_gbps\":%.3f,\"triad_gbps_1t\":%.3f,\"triad_gbps\":%.3f",
           mib, runs, n, read1, readn, triad1, triadn);
    if (do_matmul) {
        cv_backend *be = NULL;
        cv_cpu_options o = {.n_threads = n, .repack_weights = 1};
        print_paths(&o);
        if (cv_cpu_backend_create(&o, &be, &err) != CV_OK) {
            fprintf(stderr, "bench-roofline: %s\n", err.msg);
            return 1;
        }
        printf(",\"matmul_backend\":\"%s\",\"matmul\":{", be->name);
        bench_matmul(be, CV_TYPE_Q4_0, runs, readn, 1);
        bench_matmul(be, CV_TYPE_Q8_0, runs, readn, 0);
        bench_matmul(be, CV_TYPE_Q4_K, runs, readn, 0);
        bench_matmul(be, CV_TYPE_Q6_K, runs, readn, 0);
        printf("}");
        cv_backend_destroy(be);
    }
    printf("}\n");
    cv_threadpool_destroy(one);
    cv_threadpool_destroy(all);
    return 0;
}
