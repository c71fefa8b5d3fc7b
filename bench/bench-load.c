/* bench-load: a load generator for corvid-server on libcorvid_client, or (--http) for
 * any OpenAI-compatible server's /v1/completions with SSE (corvid's HTTP API, llama.cpp's
 * llama-server), over plain HTTP/1.1 keep-alive connections of its own.
 *
 *   bench-load --addr HOST:PORT [--http [--model NAME]] [--concurrency C] (--requests N | --duration S)
 *              [--prompts FILE] [--max-tokens M] [--temp T] [--ignore-eos] [--timeout S]
 *
 * HTTP figures: the first SSE event with text is the first token; tokens are the final
 * usage chunk's completion_tokens (stream_options.include_usage), and each text event's
 * gap to the previous one counts as the gap of the tokens it carries (usage tokens over
 * text events, 1 when the server sends one event a token). ignore_eos goes as corvid's
 * extension and as llama-server's field; by_status keys are HTTP statuses ("0": the
 * connection failed).
 *
 * C threads each run requests back to back (prompts taken round-robin from FILE, one
 * per line) until N requests in all have been started or S seconds have passed. Prints
 * one JSON object: requests ok and failed by status code, TTFT, inter-token and
 * end-to-end latency percentiles (client-side, milliseconds), output tokens per second
 * over the whole run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
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
#define MAX_CODES 600 /* gRPC codes, or HTTP statuses */

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

typedef struct run {
    corvid_client *client;     /* gRPC; NULL with --http */
    struct sockaddr_in http;   /* --http: the server */
    const char *model;         /* --http: the request's model ("" when not given) */
    double timeout;
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

/* ---- --http: a small HTTP/1.1 client for one SSE completion per request ---- */

typedef struct conn {
    int fd;
    char buf[65536];
    size_t len, at;   /* unread bytes are buf[at..len) */
} conn;

static int conn_open(run *r, conn *c) {
    c->len = c->at = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (r->timeout > 0) {
        struct timeval tv = {(time_t)r->timeout, (suseconds_t)((r->timeout - (double)(time_t)r->timeout) * 1e6)};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    if (connect(c->fd, (struct sockaddr *)&r->http, sizeof r->http) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void conn_close(conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* One line (CRLF or LF cut) into out; -1 at EOF or error. */
static int read_line(conn *c, char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        while (c->at < c->len) {
            char ch = c->buf[c->at++];
            if (ch == '\n') {
                if (n && out[n - 1] == '\r') n--;
                out[n] = 0;
                return 0;
            }
            if (n + 1 < cap) out[n++] = ch;
        }
        ssize_t k = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (k <= 0) return -1;
        c->len = (size_t)k;
        c->at = 0;
    }
}

/* n bytes of body into out (NUL-terminated); -1 at EOF or error. */
static int read_bytes(conn *c, char *out, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (c->at == c->len) {
            ssize_t k = recv(c->fd, c->buf, sizeof c->buf, 0);
            if (k <= 0) return -1;
            c->len = (size_t)k;
            c->at = 0;
        }
        size_t take = c->len - c->at < n - got ? c->len - c->at : n - got;
        memcpy(out + got, c->buf + c->at, take);
        c->at += take;
        got += take;
    }
    out[n] = 0;
    return 0;
}

typedef struct sse {
    double t0, first, last;
    long text_events, usage_tokens;
    samples gaps;     /* per text event, seconds since the previous one */
    char *pending;    /* an event split across chunks */
    size_t pending_len;
    int done, error;
} sse;

/* The data lines of complete events in text (SSE: events end with a blank line). */
static void sse_feed(sse *e, const char *text, size_t n) {
    char *all = realloc(e->pending, e->pending_len + n + 1);
    if (!all) {
        e->error = 1;
        return;
    }
    memcpy(all + e->pending_len, text, n);
    size_t len = e->pending_len + n;
    all[len] = 0;
    char *p = all, *end;
    while ((end = strstr(p, "\n\n"))) {
        *end = 0;
        if (strncmp(p, "data: ", 6) == 0) {
            const char *d = p + 6;
            if (strcmp(d, "[DONE]") == 0) {
                e->done = 1;
            } else {
                json_t *o = json_loads(d, 0, NULL);
                json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
                const char *t = json_string_value(json_object_get(ch, "text"));
                json_t *u = json_object_get(json_object_get(o, "usage"), "completion_tokens");
                if (!o || json_object_get(o, "error")) e->error = 1;
                if (t && *t) {
                    double now = cv_seconds();
                    if (!e->first) e->first = now;
                    else push(&e->gaps, now - e->last);
                    e->last = now;
                    e->text_events++;
                }
                if (json_is_integer(u)) e->usage_tokens = (long)json_integer_value(u);
                json_decref(o);
            }
        }
        p = end + 2;
    }
    e->pending_len = len - (size_t)(p - all);
    memmove(all, p, e->pending_len);
    e->pending = all;
}

/* One streamed completion on c (reconnecting when the server closed it); the HTTP
 * status, 0 when the connection failed. */
static int http_completion(run *r, conn *c, const char *prompt, sse *e) {
    json_t *body = json_pack("{s:s,s:s,s:i,s:f,s:b,s:{s:b},s:b,s:{s:b}}", "model", r->model, "prompt", prompt,
                             "max_tokens", (json_int_t)r->max_tokens, "temperature", (double)r->temperature,
                             "stream", 1, "stream_options", "include_usage", 1, "ignore_eos", r->ignore_eos,
                             "corvid", "ignore_eos", r->ignore_eos);
    char *b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!b) return 0;
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                      "Accept: text/event-stream\r\nContent-Length: %zu\r\n\r\n", strlen(b));
    int status = 0;
    for (int attempt = 0; attempt < 2 && !status; attempt++) {
        if (c->fd < 0 && conn_open(r, c) != 0) break;
        char line[8192];
        if (send(c->fd, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
            send(c->fd, b, strlen(b), MSG_NOSIGNAL) != (ssize_t)strlen(b) || read_line(c, line, sizeof line) != 0) {
            conn_close(c); /* a kept-alive connection the server had closed: once more */
            continue;
        }
        status = atoi(strchr(line, ' ') ? strchr(line, ' ') + 1 : "0");
    }
    free(b);
    if (!status) return 0;
    long content_length = -1;
    int chunked = 0, close_after = 0;
    char line[8192];
    while (read_line(c, line, sizeof line) == 0 && line[0]) {
        if (!strncasecmp(line, "Content-Length:", 15)) content_length = atol(line + 15);
        if (!strncasecmp(line, "Transfer-Encoding:", 18) && strstr(line, "chunked")) chunked = 1;
        if (!strncasecmp(line, "Connection:", 11) && strstr(line, "close")) close_after = 1;
    }
    char *data = malloc(1 << 20);
    int ok = data != NULL;
    if (ok && chunked) {
        for (;;) {
            if (read_line(c, line, sizeof line) != 0) { ok = 0; break; }
            size_t n = strtoul(line, NULL, 16);
            if (n == 0) { read_line(c, line, sizeof line); break; }
            if (n >= (1 << 20) || read_bytes(c, data, n) != 0 || read_line(c, line, sizeof line) != 0) { ok = 0; break; }
            sse_feed(e, data, n);
        }
    } else if (ok && content_length >= 0 && content_length < (1 << 20)) {
        ok = read_bytes(c, data, (size_t)content_length) == 0;
        if (ok) sse_feed(e, data, (size_t)content_length);
    } else if (ok) {
        ssize_t k; /* until the server closes */
        while ((k = recv(c->fd, data, 1 << 20, 0)) > 0) sse_feed(e, data, (size_t)k);
        close_after = 1;
    }
    free(data);
    if (!ok || close_after) conn_close(c);
    if (!ok) return 0;
    if (status == 200 && (!e->done || e->error)) status = 500; /* the stream broke off or reported an error */
    return status;
}

static void one_http_request(run *r, conn *c, const char *prompt) {
    sse e = {.t0 = cv_seconds()};
    int status = http_completion(r, c, prompt, &e);
    double t1 = cv_seconds();
    long tokens = e.usage_tokens ? e.usage_tokens : e.text_events;
    double per_event = e.text_events ? (double)tokens / (double)e.text_events : 1;
    pthread_mutex_lock(&r->mu);
    r->codes[status >= 0 && status < MAX_CODES ? status : MAX_CODES - 1]++;
    if (status == 200) {
        r->tokens += tokens;
        if (e.first) push(&r->ttft, (e.first - e.t0) * 1e3);
        push(&r->e2e, (t1 - e.t0) * 1e3);
        for (size_t i = 0; i < e.gaps.n; i++) push(&r->itl, e.gaps.v[i] / per_event * 1e3);
    } else if (!r->first_error[0]) {
        snprintf(r->first_error, sizeof r->first_error, "HTTP status %d%s", status,
                 status ? "" : " (the connection failed)");
    }
    pthread_mutex_unlock(&r->mu);
    free(e.gaps.v);
    free(e.pending);
}

static void *worker(void *arg) {
    run *r = arg;
    conn c = {.fd = -1};
    for (;;) {
        long i = atomic_fetch_add(&r->started, 1);
        if (r->max_requests >= 0 ? i >= r->max_requests : cv_seconds() >= r->end_time) break;
        const char *prompt = r->prompts[(size_t)i % r->n_prompts];
        if (r->client) one_request(r, prompt);
        else one_http_request(r, &c, prompt);
    }
    conn_close(&c);
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
    fputs("usage: bench-load --addr HOST:PORT [--http [--model NAME]] [--concurrency C] (--requests N | --duration S)\n"
          "                  [--prompts FILE] [--max-tokens M] [--temp T] [--ignore-eos] [--timeout S]\n"
          "  C client threads run generate requests back to back against corvid-server; one JSON\n"
          "  object on stdout: requests by status, TTFT, inter-token and end-to-end latency, tokens/s\n"
          "  --addr HOST:PORT     the server (gRPC; with --http its OpenAI-compatible HTTP API)\n"
          "  --http               stream POST /v1/completions (SSE) instead of gRPC Generate: corvid's\n"
          "                       --http-listen, or any OpenAI-compatible server (llama-server)\n"
          "  --model NAME         --http: the request's model (default: none, the server's choice)\n"
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
    int conc = 1, http = 0;
    double duration = 0, timeout = 0;
    run r = {.max_requests = -1, .max_tokens = 64, .model = ""};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        if (!strcmp(a, "--ignore-eos") || !strcmp(a, "--http")) {
            if (a[2] == 'i') r.ignore_eos = 1;
            else http = 1;
            continue;
        }
        static const char *const valued[] = {"--addr", "--concurrency", "--requests", "--duration",
                                             "--prompts", "--max-tokens", "--temp", "--timeout", "--model"};
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
        else if (!strcmp(a, "--model")) r.model = v;
        else timeout = num_arg(a, v, 0, 1e7);
    }
    if (!addr) USAGE_ERROR("--addr HOST:PORT is required");
    if (r.max_requests < 0 && duration <= 0) USAGE_ERROR("--requests N or --duration S is required");
    if (r.model[0] && !http) USAGE_ERROR("--model goes with --http");
    if (load_prompts(prompts, &r) != 0) return 1;
    r.timeout = timeout;
    if (http) {
        const char *colon = strrchr(addr, ':');
        char host[64];
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - addr) : 0, addr);
        r.http.sin_family = AF_INET;
        r.http.sin_port = htons((uint16_t)(colon ? atoi(colon + 1) : 0));
        if (!colon || inet_pton(AF_INET, host, &r.http.sin_addr) != 1)
            USAGE_ERROR("--addr %s: --http needs IPv4:PORT", addr);
    } else {
        corvid_client_options co = {.addr = addr, .timeout_s = timeout};
        corvid_error err = {0};
        if (corvid_client_new(&co, &r.client, &err) != 0) {
            fprintf(stderr, "bench-load: %s\n", err.message);
            return 1;
        }
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
        char name[16];
        snprintf(name, sizeof name, "%d", c);
        json_object_set_new(codes, http ? name : corvid_code_name(c), json_integer(r.codes[c]));
        if (c != (http ? 200 : CORVID_OK)) failed += r.codes[c];
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:f,s:i,s:i,s:o,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:f}", "addr", addr,
                          "protocol", http ? "http" : "grpc", "concurrency", conc, "elapsed_s", elapsed,
                          "requests_ok", (json_int_t)r.codes[http ? 200 : 0],
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
    if (r.client) corvid_client_free(r.client);
    return failed ? 3 : 0;
}
