/* bench-load: a load generator for corvid-server on libcorvid_client.
 *
 *   bench-load --addr HOST:PORT [--concurrency C] (--requests N | --duration S)
 *              [--prompts FILE] [--max-tokens M] [--temp T] [--ignore-eos] [--timeout S]
 *
 * C threads each run requests back to back (prompts taken round-robin from FILE, one
 * per line) until N requests in all have been started or S seconds have passed. Prints
 * one JSON object: requests ok and failed by status code, TTFT, inter-token and
 * end-to-end latency percentiles (client-side, milliseconds), output tokens per second
 * over the whole run.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "corvid/client.h"
#include "timing.h"

#define MAX_PROMPTS 4096
#define MAX_CODES 128

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

typedef struct run {
    corvid_client *client;
    char **prompts;
    size_t n_prompts;
    long max_requests;         /* < 0: until the duration ends */
    double end_time;
    uint32_t max_tokens;
    float temperature;
    int ignore_eos;
    atomic_long started;
    pthread_mutex_t mu;        /* guards everything below */
    samples ttft, itl, e2e;
    long codes[MAX_CODES];
    long tokens;
    char first_error[600];
} run;

static int push(samples *s, double v) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *p = realloc(s->v, cap * sizeof *p);
        if (!p) return -1;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(samples *s, double q) {
    if (!s->n) return 0;
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

/* One request; records its figures under the run's lock. */
static void one_request(run *r, const char *prompt) {
    corvid_generate_params p = {.prompt = prompt};
    p.sampling.max_tokens = r->max_tokens;
    p.sampling.temperature = r->temperature;
    p.sampling.ignore_eos = r->ignore_eos;
    corvid_stream *s;
    corvid_error err = {0};
    double t0 = cv_seconds(), first = 0, last = 0;
    long tokens = 0;
    samples gaps = {0};
    int code = CORVID_OK;
    if (corvid_generate(r->client, &p, &s, &err) != 0) {
        code = err.code;
    } else {
        corvid_event ev;
        int rc;
        while ((rc = corvid_stream_next(s, &ev, &err)) == 1) {
            if (ev.kind != CORVID_EVENT_CHUNK || ev.n_token_ids == 0) continue;
            double t = cv_seconds();
            if (!first) first = t;
            else push(&gaps, (t - last) / (double)ev.n_token_ids);
            last = t;
            tokens += (long)ev.n_token_ids;
        }
        if (rc < 0) code = err.code;
        corvid_stream_free(s);
    }
    double t1 = cv_seconds();
    pthread_mutex_lock(&r->mu);
    r->codes[code >= 0 && code < MAX_CODES ? code : MAX_CODES - 1]++;
    if (code == CORVID_OK) {
        r->tokens += tokens;
        if (first) push(&r->ttft, (first - t0) * 1e3);
        push(&r->e2e, (t1 - t0) * 1e3);
        for (size_t i = 0; i < gaps.n; i++) push(&r->itl, gaps.v[i] * 1e3);
    } else if (!r->first_error[0]) {
        snprintf(r->first_error, sizeof r->first_error, "%s: %s", corvid_code_name(code), err.message);
    }
    pthread_mutex_unlock(&r->mu);
    free(gaps.v);
}

static void *worker(void *arg) {
    run *r = arg;
    for (;;) {
        long i = atomic_fetch_add(&r->started, 1);
        if (r->max_requests >= 0 ? i >= r->max_requests : cv_seconds() >= r->end_time) break;
        one_request(r, r->prompts[(size_t)i % r->n_prompts]);
    }
    return NULL;
}

static int load_prompts(const char *path, run *r) {
    static char *defaults[] = {"Once upon a time", "The little dog", "Lily and Ben went to the park",
                               "One day, a bird"};
    if (!path) {
        r->prompts = defaults;
        r->n_prompts = sizeof defaults / sizeof defaults[0];
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench-load: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    r->prompts = calloc(MAX_PROMPTS, sizeof *r->prompts);
    char line[8192];
    while (r->prompts && r->n_prompts < MAX_PROMPTS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] && !(r->prompts[r->n_prompts++] = strdup(line))) break;
    }
    fclose(f);
    if (!r->n_prompts) {
        fprintf(stderr, "bench-load: %s has no prompts\n", path);
        return -1;
    }
    return 0;
}

static void usage(FILE *f) {
    fputs("usage: bench-load --addr HOST:PORT [--concurrency C] (--requests N | --duration S)\n"
          "                  [--prompts FILE] [--max-tokens M] [--temp T] [--ignore-eos] [--timeout S]\n"
          "  C client threads run generate requests back to back against corvid-server; one JSON\n"
          "  object on stdout: requests by status, TTFT, inter-token and end-to-end latency, tokens/s\n"
          "  --addr HOST:PORT     the server\n"
          "  --concurrency C      client threads, 1..4096 (default 1)\n"
          "  --requests N         stop after N requests in all\n"
          "  --duration S         or after S seconds\n"
          "  --prompts FILE       prompts, one a line, taken round-robin (default: built in)\n"
          "  --max-tokens M       tokens per request (default 64)\n"
          "  --temp T             temperature (default 0: greedy)\n"
          "  --ignore-eos         generate all M tokens\n"
          "  --timeout S          deadline of each request (default none)\n"
          "  -h, --help           this text\n",
          f);
}

#define USAGE_ERROR(...) cv_cli_usage_error("bench-load", usage, __VA_ARGS__)

/* A number in [lo, hi] for flag, or exit 2 naming it. */
static double num_arg(const char *flag, const char *v, double lo, double hi) {
    double d;
    if (cv_cli_number("bench-load", flag, v, lo, hi, &d)) exit(CV_CLI_EXIT_USAGE);
    return d;
}

int main(int argc, char **argv) {
    const char *addr = NULL, *prompts = NULL;
    int conc = 1;
    double duration = 0, timeout = 0;
    run r = {.max_requests = -1, .max_tokens = 64};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        if (!strcmp(a, "--ignore-eos")) {
            r.ignore_eos = 1;
            continue;
        }
        static const char *const valued[] = {"--addr", "--concurrency", "--requests", "--duration",
                                             "--prompts", "--max-tokens", "--temp", "--timeout"};
        size_t k = 0;
        while (k < sizeof valued / sizeof valued[0] && strcmp(valued[k], a) != 0) k++;
        if (k == sizeof valued / sizeof valued[0])
            USAGE_ERROR(a[0] == '-' ? "unknown option %s" : "unexpected argument '%s'", a);
        if (!v) USAGE_ERROR("%s needs a value", a);
        i++;
        if (!strcmp(a, "--addr")) addr = v;
        else if (!strcmp(a, "--concurrency")) conc = (int)num_arg(a, v, 1, 4096);
        else if (!strcmp(a, "--requests")) r.max_requests = (long)num_arg(a, v, 0, 1e12);
        else if (!strcmp(a, "--duration")) duration = num_arg(a, v, 0.001, 1e7);
        else if (!strcmp(a, "--prompts")) prompts = v;
        else if (!strcmp(a, "--max-tokens")) r.max_tokens = (uint32_t)num_arg(a, v, 1, 1 << 24);
        else if (!strcmp(a, "--temp")) r.temperature = (float)num_arg(a, v, 0, 100);
        else timeout = num_arg(a, v, 0, 1e7);
    }
    if (!addr) USAGE_ERROR("--addr HOST:PORT is required");
    if (r.max_requests < 0 && duration <= 0) USAGE_ERROR("--requests N or --duration S is required");
    if (load_prompts(prompts, &r) != 0) return 1;
    corvid_client_options co = {.addr = addr, .timeout_s = timeout};
    corvid_error err = {0};
    if (corvid_client_new(&co, &r.client, &err) != 0) {
        fprintf(stderr, "bench-load: %s\n", err.message);
        return 1;
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    double t0 = cv_seconds();
    r.end_time = t0 + duration;
    int n_started = 0;
    for (; th && n_started < conc; n_started++)
        if (pthread_create(&th[n_started], NULL, worker, &r) != 0) break;
    for (int i = 0; i < n_started; i++) pthread_join(th[i], NULL);
    double elapsed = cv_seconds() - t0;

    qsort(r.ttft.v, r.ttft.n, sizeof(double), cmp_double);
    qsort(r.itl.v, r.itl.n, sizeof(double), cmp_double);
    qsort(r.e2e.v, r.e2e.n, sizeof(double), cmp_double);
    json_t *codes = json_object();
    long failed = 0;
    for (int c = 0; c < MAX_CODES; c++) {
        if (!r.codes[c]) continue;
        json_object_set_new(codes, corvid_code_name(c), json_integer(r.codes[c]));
        if (c != CORVID_OK) failed += r.codes[c];
    }
    json_t *o = json_pack("{s:s,s:i,s:f,s:i,s:i,s:o,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:f}", "addr", addr,
                          "concurrency", conc, "elapsed_s", elapsed, "requests_ok", (json_int_t)r.codes[0],
                          "requests_failed", (json_int_t)failed, "by_status", codes, "ttft_ms_p50",
                          pct(&r.ttft, 0.5), "ttft_ms_p90", pct(&r.ttft, 0.9), "ttft_ms_p99", pct(&r.ttft, 0.99),
                          "inter_token_ms_p50", pct(&r.itl, 0.5), "inter_token_ms_p99", pct(&r.itl, 0.99),
                          "e2e_ms_p50", pct(&r.e2e, 0.5), "e2e_ms_p99", pct(&r.e2e, 0.99), "output_tokens",
                          (json_int_t)r.tokens, "output_tokens_per_s", elapsed > 0 ? (double)r.tokens / elapsed : 0);
    if (r.first_error[0]) json_object_set_new(o, "first_error", json_string(r.first_error));
    char *out = json_dumps(o, JSON_COMPACT);
    printf("%s\n", out);
    free(out);
    json_decref(o);
    free(th);
    free(r.ttft.v);
    free(r.itl.v);
    free(r.e2e.v);
    corvid_client_free(r.client);
    return failed ? 3 : 0;
}
