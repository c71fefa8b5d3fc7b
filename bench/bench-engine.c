/* bench-engine: the engine's own throughput, in process, with no gRPC in the way.
 *
 *   bench-engine -m MODEL [-t THREADS] [--concurrency C] [--requests N] [--max-tokens M] [--runs R]
 *                [--device cpu|cuda] [--tp N]
 *
 * Keeps C requests in flight (greedy, EOS ignored, "Once upon a time") until N have
 * finished, through the same continuous-batching engine corvid-server uses. Prints the
 * median over R runs of output tokens per second: the denominator of the server's
 * overhead ratio (bench/serve-overhead.sh runs bench-load against corvid-server at the
 * same concurrency beside it).
 */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "slot.h"
#include "timing.h"

typedef struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long tokens;
    int in_flight, finished;
} counter;

static void on_chunk(void *ctx, const char *text, size_t len, const int32_t *ids, int32_t n,
                     const cv_sample *samples) {
    (void)text, (void)len, (void)ids, (void)samples;
    counter *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->tokens += n;
    pthread_mutex_unlock(&c->mu);
}

static void on_final(void *ctx, const cv_engine_final *f) {
    (void)f;
    counter *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->in_flight--;
    c->finished++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f) {
    fputs("usage: bench-engine -m MODEL [-t THREADS] [--concurrency C] [--requests N] [--max-tokens M]\n"
          "                    [--runs R] [--device cpu|cuda] [--tp N]\n"
          "  the engine's own output tokens/s in process (no gRPC): C requests in flight until N\n"
          "  have finished; one JSON object on stdout\n"
          "  -m, --model PATH     GGUF model\n"
          "  -t, --threads N      CPU threads (default: one per core)\n"
          "  --concurrency C      requests in flight (default 1)\n"
          "  --requests N         requests in all (default 16)\n"
          "  --max-tokens M       tokens per request (default 100)\n"
          "  --runs R             the median of R runs, 1..64 (default 3)\n"
          "  --device cpu|cuda    where the model runs (default cpu)\n"
          "  --tp N               tensor-parallel ranks (default 1)\n"
          "  -h, --help           this text\n",
          f);
}

/* A whole number in [lo, hi] for flag, or exit 2 naming it. */
static int int_arg(const char *flag, const char *v, int lo, int hi) {
    long n;
    if (cv_cli_int("bench-engine", flag, v, lo, hi, &n)) exit(CV_CLI_EXIT_USAGE);
    return (int)n;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0, conc = 1, requests = 16, max_tokens = 100, runs = 3, tp = 1;
    cv_device device = CV_DEVICE_CPU;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"threads", required_argument, 0, 't'},
                                       {"concurrency", required_argument, 0, 'c'},
                                       {"requests", required_argument, 0, 'n'},
                                       {"max-tokens", required_argument, 0, 'x'},
                                       {"runs", required_argument, 0, 'r'},
                                       {"tp", required_argument, 0, 'p'},
                                       {"device", required_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":m:t:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 't': threads = int_arg("-t", optarg, 0, 512); break;
        case 'c': conc = int_arg("--concurrency", optarg, 1, 4096); break;
        case 'n': requests = int_arg("--requests", optarg, 1, 1000000); break;
        case 'x': max_tokens = int_arg("--max-tokens", optarg, 1, 1 << 20); break;
        case 'r': runs = int_arg("--runs", optarg, 1, 64); break;
        case 'p': tp = int_arg("--tp", optarg, 1, 8); break;
        case 'd':
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "bench-engine: --device wants cpu or cuda, got \"%s\"\n", optarg);
                return CV_CLI_EXIT_USAGE;
            }
            device = strcmp(optarg, "cuda") ? CV_DEVICE_CPU : CV_DEVICE_CUDA;
            break;
        case 'h': cv_cli_help(usage);
        default: cv_cli_getopt_error("bench-engine", usage, o, argv);
        }
    }
    if (optind != argc) cv_cli_usage_error("bench-engine", usage, "unexpected argument '%s'", argv[optind]);
    if (!model) cv_cli_usage_error("bench-engine", usage, "-m MODEL is required");
    cv_slot_options so = {.threads = threads, .device = device, .tp = tp};
    cv_engine_config_default(&so.engine);
    so.engine.max_running = conc;
    so.engine.max_waiting = requests;
    so.engine.max_batch_tokens = conc > 256 ? conc : 256;
    cv_slot *slot;
    cv_error err = {0};
    if (cv_slot_load(model, NULL, &so, NULL, &slot, &err) != CV_OK) {
        fprintf(stderr, "bench-engine: %s\n", err.msg);
        return 1;
    }
    int32_t prompt[64];
    size_t n_prompt;
    if (cv_tok_encode(slot->tok, "Once upon a time", 16, CV_TOK_ADD_SPECIAL, prompt, 64, &n_prompt, &err) != CV_OK) {
        fprintf(stderr, "bench-engine: %s\n", err.msg);
        return 1;
    }
    double tps[64];
    for (int r = 0; r < runs; r++) {
        counter c = {.in_flight = 0};
        pthread_mutex_init(&c.mu, NULL);
        pthread_cond_init(&c.cv, NULL);
        cv_engine_request req = {.prompt = prompt, .n_prompt = (int32_t)n_prompt, .max_tokens = max_tokens,
                                 .ignore_eos = 1};
        req.sampling.top_p = 1;
        req.sampling.repeat_penalty = 1;
        cv_engine_sink sink = {on_chunk, on_final, &c};
        double t0 = cv_seconds();
        int submitted = 0;
        pthread_mutex_lock(&c.mu);
        while (c.finished < requests) {
            while (submitted < requests && c.in_flight < conc) {
                c.in_flight++;
                submitted++;
                pthread_mutex_unlock(&c.mu);
                if (cv_engine_submit(slot->engine, &req, &sink, NULL, &err) != CV_OK) {
                    fprintf(stderr, "bench-engine: %s\n", err.msg);
                    return 1;
                }
                pthread_mutex_lock(&c.mu);
            }
            pthread_cond_wait(&c.cv, &c.mu);
        }
        pthread_mutex_unlock(&c.mu);
        tps[r] = (double)c.tokens / (cv_seconds() - t0);
        pthread_mutex_destroy(&c.mu);
        pthread_cond_destroy(&c.cv);
    }
    qsort(tps, (size_t)runs, sizeof tps[0], cmp);
    json_t *out = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:f}", "model", model, "device",
                            device == CV_DEVICE_CUDA ? "cuda" : "cpu", "tp", tp, "concurrency", conc,
                            "requests", requests, "max_tokens", max_tokens, "runs", runs,
                            "output_tokens_per_s", tps[runs / 2]);
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    cv_slot_free(slot);
    return 0;
}
