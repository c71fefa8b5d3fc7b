/* bench-gpu: a model's decode and prefill speed on the CUDA backend, against the
 * device's own ceilings measured in the same run.
 *
 *   bench-gpu [-m MODEL]... [--device N] [--runs R] [--steps S] [--prefill P]
 *             [--copy-mib M] [--gemm N]
 *
 * Ceilings: device-to-device copy bandwidth (bytes read + written per second) over
 * M MiB (default 2048), and cuBLAS FP16 GEMM throughput at N x N x N (default 8192).
 * Per model: decode at B = 1, 8, 32 sequences stepping together for S steps (default
 * 64) from an empty context, with CUDA graphs and op by op (graphs off), and one
 * prefill of P random tokens (default 512). Each figure is the median of R runs
 * (default 3).
 *   decode roofline_fraction = weight bytes x steps/s / copy bandwidth (with graphs)
 *   decode graph_speedup     = tokens/s with graphs / tokens/s op by op
 *   decode tokens_equal      = both modes generated the same greedy tokens
 *   prefill gemm_fraction    = 2 x matmul parameters x tokens/s / GEMM throughput
 * The backend's graph counters (captures, replays, steps op by op) close the output.
 * One JSON object on stdout; without CUDA or a GPU, {"error": ...} and exit 2.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cuda_backend.h"
#include "generate.h"
#include "gguf.h"
#include "kv_cache.h"
#include "membw.h"
#include "model.h"

#define MAX_RUNS 15
#define MAX_MODELS 8
static const int32_t DECODE_BATCHES[] = {1, 8, 32};
#define N_BATCHES (int)(sizeof DECODE_BATCHES / sizeof *DECODE_BATCHES)
#define MAX_SEQS 32

typedef struct cfg {
    const char *models[MAX_MODELS];
    int n_models, device, runs;
    int32_t steps, prefill, gemm;
    size_t copy_bytes;
} cfg;

/* What one timed forward pass needs: the model, its cache and the batch arrays. */
typedef struct run {
    cv_model *m;
    cv_kv_cache *kv;
    int32_t *tok, *pos, *seq;
    uint8_t *want;
    float *logits;
} run;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* Multiply-adds per token of every matmul but the output projection (which only the
 * rows that want logits pay): what prefill's FLOP count is made of. */
static double matmul_params(const cv_hparams *hp) {
    const double qd = (double)hp->n_heads * hp->head_dim, kvd = (double)hp->n_kv_heads * hp->head_dim;
    return hp->n_layers * (hp->dim * (qd + 2 * kvd) + qd * hp->dim + 3.0 * hp->dim * hp->ffn_dim);
}

/* Tokens per second of b sequences decoding `steps` greedy tokens together; *digest
 * folds in every token generated. */
static cv_status time_decode(run *r, int32_t b, int32_t steps, double *tps, uint64_t *digest, cv_error *err) {
    const int32_t nv = cv_model_hparams(r->m)->n_vocab;
    cv_status s = CV_OK;
    for (int32_t i = 0; i < b; i++) {
        r->tok[i] = 1 + i;
        r->seq[i] = i;
        r->want[i] = 1;
    }
    const double t0 = cv_seconds();
    for (int32_t p = 0; p < steps && !s; p++) {
        for (int32_t i = 0; i < b && !s; i++) {
            r->pos[i] = p;
            s = cv_kv_reserve(r->kv, i, p + 1, err);
        }
        cv_batch batch = {.n = b, .tokens = r->tok, .pos = r->pos, .seq = r->seq, .want_logits = r->want};
        if (!s) s = cv_model_forward(r->m, r->kv, &batch, r->logits, err);
        for (int32_t i = 0; i < b && !s; i++) {
            r->tok[i] = cv_argmax(r->logits + (size_t)i * nv, nv);
            *digest = (*digest ^ (uint64_t)r->tok[i]) * 0x100000001b3ULL;
        }
    }
    *tps = (double)b * steps / (cv_seconds() - t0);
    for (int32_t i = 0; i < b; i++) cv_kv_release(r->kv, i);
    return s;
}

static cv_status time_prefill(run *r, int32_t n, double *tps, cv_error *err) {
    const int32_t nv = cv_model_hparams(r->m)->n_vocab;
    for (int32_t i = 0; i < n; i++) {
        r->tok[i] = 3 + rand() % (nv - 3);
        r->pos[i] = i;
        r->seq[i] = 0;
        r->want[i] = i == n - 1;
    }
    cv_status s = cv_kv_reserve(r->kv, 0, n, err);
    if (s) return s;
    cv_batch batch = {.n = n, .tokens = r->tok, .pos = r->pos, .seq = r->seq, .want_logits = r->want};
    const double t0 = cv_seconds();
    s = cv_model_forward(r->m, r->kv, &batch, r->logits, err);
    *tps = n / (cv_seconds() - t0);
    cv_kv_release(r->kv, 0);
    return s;
}

/* The figures of one model, added to out. */
static cv_status bench_model(const cfg *c, cv_backend *be, const char *path, double copy_gbps, double tflops,
                             json_t *out, cv_error *err) {
    cv_gguf *g = NULL;
    run r = {0};
    const int32_t rows = c->prefill > MAX_SEQS ? c->prefill : MAX_SEQS;
    cv_model_opts mo = {.max_batch = rows, .max_logits = MAX_SEQS};
    cv_status s;
    double t0 = cv_seconds();
    if ((s = cv_gguf_open(path, &g, err)) || (s = cv_model_load(be, g, &mo, &r.m, err))) goto out;
    const double load_s = cv_seconds() - t0;
    const int32_t ctx = c->prefill > c->steps ? c->prefill : c->steps;
    cv_kv_config kc = cv_model_kv_config(r.m, ctx, MAX_SEQS, CV_TYPE_F16);
    if ((s = cv_kv_create(&kc, &r.kv, err))) goto out;
    const cv_hparams *hp = cv_model_hparams(r.m);
    r.tok = malloc(sizeof *r.tok * rows);
    r.pos = malloc(sizeof *r.pos * rows);
    r.seq = malloc(sizeof *r.seq * rows);
    r.want = malloc((size_t)rows);
    r.logits = malloc(sizeof *r.logits * (size_t)MAX_SEQS * (size_t)hp->n_vocab);
    if (!r.tok || !r.pos || !r.seq || !r.want || !r.logits) {
        s = cv_errorf(err, CV_ENOMEM, "bench-gpu: out of memory");
        goto out;
    }
    const double wbytes = (double)cv_model_weight_bytes(r.m);
    json_t *dec = json_array();
    json_t *m = json_pack("{s:s, s:s, s:f, s:f, s:o}", "model", path, "arch", cv_arch_name(hp->arch),
                          "weight_gb", wbytes / 1e9, "load_s", load_s, "decode", dec);
    json_array_append_new(out, m);
    double tps[MAX_RUNS], b1 = 0;
    for (int bi = 0; bi < N_BATCHES; bi++) {
        const int32_t b = DECODE_BATCHES[bi];
        double t[2];
        uint64_t digest[2];
        for (int graphs = 1; graphs >= 0; graphs--) {
            if ((s = cv_cuda_graphs_enable(be, graphs, err))) goto out;
            for (int i = 0; i < c->runs; i++) {
                digest[graphs] = 0xcbf29ce484222325ULL;
                if ((s = time_decode(&r, b, c->steps, &tps[i], &digest[graphs], err))) goto out;
            }
            t[graphs] = median(tps, c->runs);
        }
        if (b == 1) b1 = t[1];
        json_array_append_new(dec, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:b}", "batch", b, "tokens_per_s", t[1],
                                             "eager_tokens_per_s", t[0], "graph_speedup", t[1] / t[0],
                                             "roofline_fraction", wbytes * (t[1] / b) / (copy_gbps * 1e9),
                                             "aggregate_over_b1", b1 > 0 ? t[1] / b1 : 0.0, "tokens_equal",
                                             digest[0] == digest[1]));
    }
    if ((s = cv_cuda_graphs_enable(be, 1, err))) goto out;
    for (int i = 0; i < c->runs; i++)
        if ((s = time_prefill(&r, c->prefill, &tps[i], err))) goto out;
    const double pt = median(tps, c->runs), pflops = 2 * matmul_params(hp) * pt / 1e12;
    json_object_set_new(m, "prefill", json_pack("{s:i, s:f, s:f, s:f}", "tokens", c->prefill, "tokens_per_s", pt,
                                                "tflops", pflops, "gemm_fraction", pflops / tflops));
out:
    free(r.tok), free(r.pos), free(r.seq), free(r.want), free(r.logits);
    cv_kv_free(r.kv);
    cv_model_free(r.m);
    cv_gguf_close(g);
    return s;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench-gpu [-m MODEL]... [--device N] [--runs 1..%d] [--steps S] [--prefill P]\n"
            "                 [--copy-mib M] [--gemm N]\n"
            "  decode and prefill on the CUDA backend against the device's copy bandwidth and cuBLAS\n"
            "  GEMM measured in the same run; one JSON object on stdout (without CUDA or a GPU:\n"
            "  {\"error\": ...}, exit 2)\n"
            "  -m, --model PATH     a GGUF model, repeatable (at most %d; none: the ceilings only)\n"
            "  --device N           the GPU (default 0)\n"
            "  --runs R             each figure is the median of R runs (default 3)\n"
            "  --steps S            decode steps per batch size (default 64)\n"
            "  --prefill P          prefill tokens (default 512)\n"
            "  --copy-mib M         copy bandwidth buffer (default 2048)\n"
            "  --gemm N             GEMM size N x N x N, at least 256 (default 8192)\n"
            "  -h, --help           this text\n",
            MAX_RUNS, MAX_MODELS);
}

#define USAGE_ERROR(...) cv_cli_usage_error("bench-gpu", usage, __VA_ARGS__)

/* A whole number in [lo, hi] for flag, or exit 2 naming it. */
static int int_arg(const char *flag, const char *v, int lo, int hi) {
    long n;
    if (cv_cli_int("bench-gpu", flag, v, lo, hi, &n)) exit(CV_CLI_EXIT_USAGE);
    return (int)n;
}

static void parse(int argc, char **argv, cfg *c) {
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'}, {"device", required_argument, 0, 'd'},
        {"runs", required_argument, 0, 'r'},  {"steps", required_argument, 0, 's'},
        {"prefill", required_argument, 0, 'p'}, {"copy-mib", required_argument, 0, 'c'},
        {"gemm", required_argument, 0, 'g'},  {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    *c = (cfg){.runs = 3, .steps = 64, .prefill = 512, .gemm = 8192, .copy_bytes = (size_t)2048 << 20};
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm':
            if (c->n_models == MAX_MODELS) USAGE_ERROR("at most %d models", MAX_MODELS);
            c->models[c->n_models++] = optarg;
            break;
        case 'd': c->device = int_arg("--device", optarg, 0, 1023); break;
        case 'r': c->runs = int_arg("--runs", optarg, 1, MAX_RUNS); break;
        case 's': c->steps = int_arg("--steps", optarg, 1, 1 << 20); break;
        case 'p': c->prefill = int_arg("--prefill", optarg, 1, 1 << 20); break;
        case 'c': c->copy_bytes = (size_t)int_arg("--copy-mib", optarg, 1, 1 << 20) << 20; break;
        case 'g': c->gemm = int_arg("--gemm", optarg, 256, 1 << 16); break;
        case 'h': cv_cli_help(usage);
        default: cv_cli_getopt_error("bench-gpu", usage, o, argv);
        }
    }
    if (optind != argc) USAGE_ERROR("unexpected argument '%s'", argv[optind]);
}

int main(int argc, char **argv) {
    cfg c;
    parse(argc, argv, &c);
    srand(1);
    cv_error err = {0};
    cv_backend *be = NULL;
    double gbps = 0, tflops = 0;
    json_t *models = json_array();
    int rc = 1;
    cv_cuda_options co = {.device = c.device};
    if (cv_cuda_backend_create(&co, &be, &err)) {
        json_t *e = json_pack("{s:s}", "error", err.msg);
        json_dumpf(e, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(e);
        json_decref(models);
        return 2;
    }
    if (cv_cuda_copy_bandwidth(c.device, c.copy_bytes, 10, &gbps, &err) ||
        cv_cuda_gemm_tflops(c.device, c.gemm, c.gemm, c.gemm, 10, &tflops, &err))
        goto out;
    for (int i = 0; i < c.n_models; i++)
        if (bench_model(&c, be, c.models[i], gbps, tflops, models, &err)) {
            cv_error_wrap(&err, "%s", c.models[i]);
            goto out;
        }
    rc = 0;
out:;
    json_t *j = json_pack("{s:i, s:f, s:f, s:i, s:O}", "device", c.device, "copy_gbps", gbps, "gemm_fp16_tflops",
                          tflops, "runs", c.runs, "models", models);
    cv_cuda_graph_stats gs;
    if (!cv_cuda_graph_stats_get(be, &gs, &err))
        json_object_set_new(j, "graphs", json_pack("{s:b, s:I, s:I, s:I, s:i, s:s}", "enabled", gs.enabled, "captures",
                                                   (json_int_t)gs.captures, "replays", (json_int_t)gs.replays, "eager",
                                                   (json_int_t)gs.eager, "cached", gs.cached, "off_reason",
                                                   gs.off_reason));
    if (rc) json_object_set_new(j, "error", json_string(err.msg));
    json_dumpf(j, stdout, JSON_COMPACT);
    putchar('\n');
    json_decref(j);
    json_decref(models);
    cv_backend_destroy(be);
    return rc;
}
