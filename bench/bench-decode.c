/* bench-decode: prefill and decode speed of a GGUF model on the CPU backend, as a
 * fraction of this machine's memory read bandwidth measured in the same run.
 *
 *   bench-decode -m MODEL [-t THREADS] [--runs R] [--kv-type f16|f32] [--tp N]
 *
 * --tp N shards the model over N ranks (threads of this process, THREADS split
 * between them; tp.h); weight bytes per step are then summed over the ranks.
 * Prefill: one 512-token prompt (random ids) per run. Decode: 128 greedy steps from
 * an empty context at batch 1; batched decode: B = 4 and 16 sequences stepping
 * together. Each figure is the median of R runs (default 3). roofline_fraction =
 * weight bytes read per step x batch-1 decode steps/s / read bandwidth (cv_membw_read
 * over 512 MiB, as bench-roofline measures it, on the same threads): 1.0 means decode
 * streams the weights at the speed of memory. One JSON object on stdout.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "generate.h"
#include "gguf.h"
#include "kv_cache.h"
#include "membw.h"
#include "model.h"
#include "threadpool.h"
#include "tp.h"

#define PREFILL 512
#define DECODE 128
#define BATCH_STEPS 32
#define MAX_RUNS 15

/* ---- model runs ---- */

typedef struct bench {
    cv_tp *tp;
    cv_kv_cache *kv;
    int32_t n_vocab;
    int32_t *tokens, *pos, *seq;
    float *logits;
} bench;

static cv_status step(bench *b, int32_t n, const uint8_t *want, cv_error *err) {
    cv_batch batch = {.n = n, .tokens = b->tokens, .pos = b->pos, .seq = b->seq, .want_logits = want};
    return cv_tp_forward(b->tp, b->kv, &batch, b->logits, err);
}

static cv_status run_prefill(bench *b, double *tps, cv_error *err) {
    for (int32_t i = 0; i < PREFILL; i++) {
        b->tokens[i] = 3 + rand() % (b->n_vocab - 3);
        b->pos[i] = i;
        b->seq[i] = 0;
    }
    cv_status s = cv_kv_reserve(b->kv, 0, PREFILL, err);
    if (s) return s;
    double t0 = cv_seconds();
    s = step(b, PREFILL, NULL, err);
    *tps = PREFILL / (cv_seconds() - t0);
    cv_kv_release(b->kv, 0);
    return s;
}

/* n_seq sequences step together from an empty context, each feeding back its
 * greedy token. Returns generated tokens per second over all sequences. */
static cv_status run_decode(bench *b, int32_t n_seq, int32_t steps, double *tps, cv_error *err) {
    static uint8_t want[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    cv_status s = CV_OK;
    for (int32_t q = 0; q < n_seq; q++) b->tokens[q] = 1 + q;
    double t0 = cv_seconds();
    for (int32_t p = 0; p < steps && !s; p++) {
        for (int32_t q = 0; q < n_seq && !s; q++) {
            s = cv_kv_reserve(b->kv, q, p + 1, err);
            b->pos[q] = p;
            b->seq[q] = q;
        }
        if (!s) s = step(b, n_seq, want, err);
        for (int32_t q = 0; q < n_seq && !s; q++)
            b->tokens[q] = cv_argmax(b->logits + (size_t)q * (size_t)b->n_vocab, b->n_vocab);
    }
    *tps = (double)n_seq * steps / (cv_seconds() - t0);
    for (int32_t q = 0; q < n_seq; q++) cv_kv_release(b->kv, q);
    return s;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench-decode -m MODEL [-t THREADS] [--runs 1..%d] [--kv-type f16|f32] [--tp N]\n"
            "  prefill (512 tokens) and decode (batch 1, 4, 16) speed on the CPU backend, against the\n"
            "  read bandwidth measured in the same run; one JSON object on stdout\n"
            "  -m, --model PATH     GGUF model\n"
            "  -t, --threads N      CPU threads (default: one per core; with --tp, split between ranks)\n"
            "  --runs R             each figure is the median of R runs (default 3)\n"
            "  --kv-type f16|f32    KV cache element type (default f16)\n"
            "  --tp N               shard the model over N ranks, 1..%d (default 1)\n"
            "  -h, --help           this text\n",
            MAX_RUNS, CV_TP_MAX);
}

/* A whole number in [lo, hi] for flag, or exit 2 naming it. */
static int int_arg(const char *flag, const char *v, int lo, int hi) {
    long n;
    if (cv_cli_int("bench-decode", flag, v, lo, hi, &n)) exit(CV_CLI_EXIT_USAGE);
    return (int)n;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int threads = 0, runs = 3, tp = 1;
    cv_type kv_type = CV_TYPE_F16;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"threads", required_argument, 0, 't'},
                                       {"runs", required_argument, 0, 'r'},
                                       {"kv-type", required_argument, 0, 'k'},
                                       {"tp", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:t:h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 't': threads = int_arg("-t", optarg, 0, 512); break;
        case 'r': runs = int_arg("--runs", optarg, 1, MAX_RUNS); break;
        case 'k':
            if (strcmp(optarg, "f16") && strcmp(optarg, "f32")) {
                fprintf(stderr, "bench-decode: --kv-type wants f16 or f32, got \"%s\"\n", optarg);
                return CV_CLI_EXIT_USAGE;
            }
            kv_type = !strcmp(optarg, "f32") ? CV_TYPE_F32 : CV_TYPE_F16;
            break;
        case 'p': tp = int_arg("--tp", optarg, 1, CV_TP_MAX); break;
        case 'h': cv_cli_help(usage);
        default: cv_cli_getopt_error("bench-decode", usage, c, argv);
        }
    }
    if (optind != argc) cv_cli_usage_error("bench-decode", usage, "unexpected argument '%s'", argv[optind]);
    if (!path) cv_cli_usage_error("bench-decode", usage, "-m MODEL is required");
    unsigned seed = (unsigned)time(NULL);
    srand(seed);

    cv_error err = {0};
    cv_gguf *g = NULL;
    cv_threadpool *pool = NULL;
    bench b = {0};
    int rc = 1;
    cv_tp_config tc = {.device = CV_DEVICE_CPU, .tp = tp, .threads = threads};
    cv_model_opts mo = {.max_batch = PREFILL, .max_logits = 16};
    if (cv_gguf_open(path, &g, &err) || cv_tp_load(&tc, g, &mo, &b.tp, &err)) goto out;
    threads = cv_tp_threads(b.tp);
    cv_kv_config kc = cv_tp_kv_config(b.tp, PREFILL, 16, kv_type);
    if (cv_kv_create(&kc, &b.kv, &err)) goto out;
    const cv_hparams *hp = cv_model_hparams(cv_tp_model(b.tp));
    b.n_vocab = hp->n_vocab;
    b.tokens = malloc(PREFILL * sizeof(int32_t));
    b.pos = malloc(PREFILL * sizeof(int32_t));
    b.seq = malloc(PREFILL * sizeof(int32_t));
    b.logits = malloc(16 * (size_t)b.n_vocab * sizeof(float));
    if (!b.tokens || !b.pos || !b.seq || !b.logits) {
        cv_errorf(&err, CV_ENOMEM, "out of memory");
        goto out;
    }

    double pf[MAX_RUNS], d1[MAX_RUNS], d4[MAX_RUNS], d16[MAX_RUNS], bw;
    /* Warm-up: page the weights in, spin the pool up. */
    if (run_decode(&b, 1, 4, &d1[0], &err)) goto out;
    for (int r = 0; r < runs; r++)
        if (run_prefill(&b, &pf[r], &err) || run_decode(&b, 1, DECODE, &d1[r], &err) ||
            run_decode(&b, 4, BATCH_STEPS, &d4[r], &err) || run_decode(&b, 16, BATCH_STEPS, &d16[r], &err))
            goto out;
    /* Peak RSS of the model runs alone, before the bandwidth buffer exists. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* The same probe as bench-roofline, on as many threads as the model ran on. */
    if (cv_threadpool_create(threads, &pool, &err) ||
        cv_membw_read(pool, (size_t)512 << 20, 2 * runs + 1, &bw, &err))
        goto out;

    const double mpf = cv_median(pf, runs), md1 = cv_median(d1, runs), md4 = cv_median(d4, runs),
                 md16 = cv_median(d16, runs);
    const uint64_t wb = cv_tp_weight_bytes(b.tp);
    json_t *o = json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:I, s:I, s:f, s:i, s:f, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I}",
        "model", path, "arch", cv_arch_name(hp->arch), "threads", threads, "tp", cv_tp_size(b.tp),
        "runs", runs, "seed", (int)(seed & 0x7fffffff), "kv_type", kv_type == CV_TYPE_F16 ? "f16" : "f32",
        "file_bytes", (json_int_t)cv_gguf_file_size(g), "weight_bytes_per_token", (json_int_t)wb,
        "read_bandwidth_gbs", bw, "prefill_tokens", PREFILL, "prefill_tokens_per_s", mpf,
        "decode_tokens", DECODE, "decode_tokens_per_s", md1, "batch4_tokens_per_s", md4,
        "batch16_tokens_per_s", md16, "batch16_over_batch1", md16 / md1,
        "decode_gbs", (double)wb * md1 / 1e9,
        "roofline_fraction", bw > 0 ? (double)wb * md1 / 1e9 / bw : 0.0,
        "peak_rss_bytes", (json_int_t)ru.ru_maxrss * 1024,
        /* The prefill run touches the most cache: PREFILL positions of one sequence. */
        "kv_bytes_touched", (json_int_t)(PREFILL * cv_kv_bytes_per_token(b.kv)));
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!js) {
        cv_errorf(&err, CV_ENOMEM, "out of memory for the report");
        goto out;
    }
    puts(js);
    free(js);
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench-decode: %s\n", err.msg);
    cv_threadpool_destroy(pool);
    free(b.tokens);
    free(b.pos);
    free(b.seq);
    free(b.logits);
    cv_kv_free(b.kv);
    cv_tp_free(b.tp);
    cv_gguf_close(g);
    return rc;
}
