/* bench-quant: the quant kernels, AVX2 against the scalar reference.
 *
 *   bench-quant [--runs R] [--kib K]
 *
 * For each weight type: one thread dotting every row of a K KiB weight matrix
 * (default 2048: in the L2/L3, so the kernel and not the memory is measured) with
 * one activation row, on the scalar and on the AVX2 path; and on the AVX2 path with
 * 4 activation rows per pass (cv_vec_dot_rows). Reported as weight GB/s and
 * elements/s with the ratios AVX2/scalar and 4-row/1-row (activation elements per
 * second). Then the activation quantizers (Q8_0, Q8_K) in ns per element. Every
 * figure is the median of R timed passes (default 7) in thread CPU time, so that
 * other load on a shared machine does not count. One JSON object on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "quant.h"

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float g_sink;  /* keeps the dots from being optimised away */

/* Seconds per pass over all rows, median of runs. */
static double time_dots(cv_type t, int64_t n, int64_t rows, const uint8_t *w, const uint8_t *act,
                        size_t act_bytes, int n_act, int runs) {
    const size_t rb = cv_type_row_bytes(t, n);
    double v[64];
    float out[4];
    for (int k = 0; k <= runs; k++) {
        const double t0 = cpu_seconds();
        for (int64_t r = 0; r < rows; r++) {
            cv_vec_dot_rows(t, n, w + (size_t)r * rb, act, act_bytes, n_act, out);
            g_sink += out[0];
        }
        if (k) v[k - 1] = cpu_seconds() - t0;  /* the first pass warms the caches */
    }
    return median(v, runs);
}

static double time_act(cv_type at, int64_t n, const float *x, void *dst, int runs) {
    double v[64];
    for (int k = 0; k < runs; k++) {
        const double t0 = cpu_seconds();
        for (int i = 0; i < 100; i++) cv_quantize_row_act(at, x, dst, n);
        v[k] = (cpu_seconds() - t0) / 100 / (double)n * 1e9;
    }
    return median(v, runs);
}

static void usage(FILE *f) {
    fputs("usage: bench-quant [--runs R] [--kib K]\n"
          "  dot-product throughput of every weight type, AVX2 against the scalar reference, and\n"
          "  the activation quantizers, in thread CPU time; one JSON object on stdout\n"
          "  --runs R             each figure is the median of R passes, 1..63 (default 7)\n"
          "  --kib K              weight matrix size in KiB, 64..4194304 (default 2048: in cache)\n"
          "  -h, --help           this text\n",
          f);
}

int main(int argc, char **argv) {
    int runs = 7;
    long kib = 2048, v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        int is_runs = !strcmp(a, "--runs"), is_kib = !strcmp(a, "--kib");
        if (!is_runs && !is_kib)
            cv_cli_usage_error("bench-quant", usage, a[0] == '-' ? "unknown option %s" : "unexpected argument '%s'", a);
        if (i + 1 >= argc) cv_cli_usage_error("bench-quant", usage, "%s needs a value", a);
        if (cv_cli_int("bench-quant", a, argv[++i], is_runs ? 1 : 64, is_runs ? 63 : 1L << 22, &v))
            return CV_CLI_EXIT_USAGE;
        if (is_runs) runs = (int)v;
        else kib = v;
    }
    const int64_t n = 2048;
    const cv_type types[] = {CV_TYPE_F32, CV_TYPE_F16, CV_TYPE_BF16, CV_TYPE_Q4_0, CV_TYPE_Q5_0,
                             CV_TYPE_Q8_0, CV_TYPE_Q4_K, CV_TYPE_Q5_K, CV_TYPE_Q6_K};
    float *x = malloc((size_t)n * 4 * 4);
    uint8_t *act = malloc((size_t)n * 4 * 4);
    if (!x || !act) return 1;
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < 4 * n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((int64_t)(s % 2001) - 1000) / 1000.f;
    }
    printf("{\"bench\":\"quant\",\"path\":\"%s\",\"row_elems\":%lld,\"matrix_kib\":%ld,\"runs\":%d,\"dots\":[",
           cv_quant_path(), (long long)n, kib, runs);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const cv_type t = types[ti], at = cv_type_vec_dot_type(t);
        const size_t rb = cv_type_row_bytes(t, n), ab = cv_type_row_bytes(at, n);
        const int64_t rows = (int64_t)((size_t)kib * 1024 / rb) + 1;
        uint8_t *w = malloc(rb * (size_t)rows);
        if (!w) return 1;
        for (int64_t r = 0; r < rows; r++) cv_quantize_row(t, x + (r % 4) * n, w + (size_t)r * rb, n);
        for (int k = 0; k < 4; k++) cv_quantize_row(at, x + k * n, act + (size_t)k * ab, n);
        cv_quant_force_scalar(1);
        const double ts = time_dots(t, n, rows, w, act, ab, 1, runs);
        cv_quant_force_scalar(0);
        const double tf = time_dots(t, n, rows, w, act, ab, 1, runs);
        const double t4 = time_dots(t, n, rows, w, act, ab, 4, runs);
        const double bytes = (double)rb * (double)rows, elems = (double)n * (double)rows;
        printf("%s{\"type\":\"%s\",\"scalar_gbps\":%.3f,\"avx2_gbps\":%.3f,\"avx2_melem_s\":%.1f,"
               "\"avx2_over_scalar\":%.2f,\"rows4_act_melem_s\":%.1f,\"rows4_over_rows1\":%.2f}",
               ti ? "," : "", cv_type_get(t)->name, bytes / ts / 1e9, bytes / tf / 1e9, elems / tf / 1e6, ts / tf,
               4 * elems / t4 / 1e6, 4 * tf / t4);
        free(w);
    }
    printf("],\"act_quantize_ns_per_elem\":[");
    const cv_type acts[] = {CV_TYPE_Q8_0, CV_TYPE_Q8_K};
    for (int i = 0; i < 2; i++) {
        cv_quant_force_scalar(1);
        const double ss = time_act(acts[i], n, x, act, runs);
        cv_quant_force_scalar(0);
        const double sf = time_act(acts[i], n, x, act, runs);
        printf("%s{\"type\":\"%s\",\"scalar\":%.3f,\"avx2\":%.3f,\"avx2_over_scalar\":%.2f}", i ? "," : "",
               cv_type_get(acts[i])->name, ss, sf, ss / sf);
    }
    printf("],\"sink\":%g}\n", (double)(g_sink != 0));
    free(x);
    free(act);
    return 0;
}
