/* corvidctl: command-line client for corvid-server, built on libcorvid_client.
 *
 *   corvidctl generate -a ADDR -p TEXT [sampling flags] [--json]
 *   corvidctl chat -a ADDR -p TEXT [--system TEXT] [--message ROLE=TEXT]... [--json]
 *   (generate and chat: --rag [--kb NAME] [--rag-top-k K] [--min-score S] [--source NAME]...
 *    [--policy refuse|answer] prints the citations, a blank line, then the answer)
 *   corvidctl tokenize -a ADDR -p TEXT [--raw]
 *   corvidctl models -a ADDR
 *   corvidctl health -a ADDR [--service NAME]     exit 0 only when SERVING
 *   corvidctl admin load -a ADDR --version V --uri U [--sha256 H] [--wait]
 *   corvidctl admin traffic -a ADDR V1=90 V2=10
 *   corvidctl admin unload -a ADDR --version V [--wait]
 *   corvidctl admin status -a ADDR [--window SECONDS] [--json]
 *   corvidctl admin fault -a ADDR --version V --rate R     (CORVID_TESTING servers)
 *
 * Errors print the gRPC status and message on stderr and exit 1.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corvid/client.h"

#define MAX_STOP 16
#define MAX_MESSAGES 64

#define MAX_WEIGHTS 8

typedef struct opts {
    const char *cmd, *sub;
    const char *slot_version, *uri, *sha256;
    const char *traffic_v[MAX_WEIGHTS];
    uint32_t traffic_w[MAX_WEIGHTS];
    size_t n_traffic;
    double window, rate;
    int wait;
    corvid_client_options client;
    const char *prompt, *system, *model, *version, *service, *chat_template;
    corvid_sampling sampling;
    const char *stop[MAX_STOP];
    corvid_rag_options rag;
    const char *sources[MAX_STOP];
    corvid_chat_message messages[MAX_MESSAGES];
    size_t n_messages;
    int json, raw;
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: corvidctl COMMAND -a HOST:PORT [options]\n"
            "commands: generate, chat, tokenize, models, health,\n"
            "          admin load|traffic|unload|status|fault\n"
            "  --version V  --uri U  --sha256 H  --wait   (admin load/unload)\n"
            "  V1=W1 V2=W2 ...          traffic weights (admin traffic)\n"
            "  --window SECONDS         status window (admin status)\n"
            "  -p, --prompt TEXT        prompt (generate, tokenize) or user message (chat)\n"
            "  --system TEXT            system message (chat)\n"
            "  --message ROLE=TEXT      a chat turn, repeatable, before the -p turn\n"
            "  -n, --max-tokens N       --temp T  --top-k K  --top-p P  --min-p M\n"
            "  --repeat-penalty R       --seed S  --stop TEXT (repeatable)  --ignore-eos\n"
            "  --logprobs N             --model NAME  --model-version V  --template NAME\n"
            "  --json                   one JSON object at the end instead of streaming text\n"
            "  --raw                    no BOS/EOS (generate, tokenize)\n"
            "  --rag                    ground the answer in the server's knowledge base and\n"
            "                           sources; citations are printed first (generate, chat)\n"
            "  --kb NAME  --rag-top-k K  --min-score S  --source NAME (repeatable)\n"
            "  --policy refuse|answer   RAG options (each implies --rag)\n"
            "  --service NAME           health of one service (health)\n"
            "  --timeout SECONDS        per call deadline\n"
            "  --token TOKEN            bearer token (default: $CORVID_TOKEN)\n"
            "  --tls-ca FILE  --tls-cert FILE  --tls-key FILE\n");
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "corvidctl: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
    } else {
        fprintf(stderr, "corvidctl: cannot read %s\n", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) {
        fprintf(stderr, "corvidctl: %s wants a number in [%g, %g], got \"%s\"\n", flag, lo, hi, v);
        return -1;
    }
    *out = d;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    if (argc < 2) {
        usage(stderr);
        return -1;
    }
    o->cmd = argv[1];
    o->client.bearer_token = getenv("CORVID_TOKEN");
    int first = 2;
    if (!strcmp(o->cmd, "admin")) {
        if (argc < 3) {
            fprintf(stderr, "corvidctl: admin needs load, traffic, unload, status or fault\n");
            return -1;
        }
        o->sub = argv[2];
        first = 3;
    }
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
#define NEED_VALUE()                                                      \
    do {                                                                  \
        if (!v) {                                                         \
            fprintf(stderr, "corvidctl: %s needs a value\n", a);          \
            return -1;                                                    \
        }                                                                 \
        i++;                                                              \
    } while (0)
#define NUM(lo, hi)                                                       \
    do {                                                                  \
        NEED_VALUE();                                                     \
        if (parse_num(a, v, lo, hi, &d) != 0) return -1;                  \
    } while (0)
        if (!strcmp(a, "-a") || !strcmp(a, "--addr")) { NEED_VALUE(); o->client.addr = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (!strcmp(a, "--system")) { NEED_VALUE(); o->system = v; }
        else if (!strcmp(a, "--model")) { NEED_VALUE(); o->model = v; }
        else if (!strcmp(a, "--model-version")) { NEED_VALUE(); o->version = v; }
        else if (!strcmp(a, "--template")) { NEED_VALUE(); o->chat_template = v; }
        else if (!strcmp(a, "--service")) { NEED_VALUE(); o->service = v; }
        else if (!strcmp(a, "--token")) { NEED_VALUE(); o->client.bearer_token = v; }
        else if (!strcmp(a, "--tls-ca")) { NEED_VALUE(); if (!(o->client.root_certs_pem = read_file(v))) return -1; }
        else if (!strcmp(a, "--tls-cert")) { NEED_VALUE(); if (!(o->client.client_cert_pem = read_file(v))) return -1; }
        else if (!strcmp(a, "--tls-key")) { NEED_VALUE(); if (!(o->client.client_key_pem = read_file(v))) return -1; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { NUM(0, 1e9); o->sampling.max_tokens = (uint32_t)d; }
        else if (!strcmp(a, "--temp")) { NUM(0, 100); o->sampling.temperature = (float)d; }
        else if (!strcmp(a, "--top-k")) { NUM(0, 1e9); o->sampling.top_k = (int32_t)d; }
        else if (!strcmp(a, "--top-p")) { NUM(0, 1); o->sampling.top_p = (float)d; }
        else if (!strcmp(a, "--min-p")) { NUM(0, 1); o->sampling.min_p = (float)d; }
        else if (!strcmp(a, "--repeat-penalty")) { NUM(0, 100); o->sampling.repetition_penalty = (float)d; }
        else if (!strcmp(a, "--seed")) { NEED_VALUE(); o->sampling.has_seed = 1; o->sampling.seed = strtoull(v, NULL, 10); }
        else if (!strcmp(a, "--logprobs")) { NUM(0, 20); o->sampling.logprobs = (uint32_t)d; }
        else if (!strcmp(a, "--timeout")) { NUM(0, 1e7); o->client.timeout_s = d; }
        else if (!strcmp(a, "--version")) { NEED_VALUE(); o->slot_version = v; }
        else if (!strcmp(a, "--uri")) { NEED_VALUE(); o->uri = v; }
        else if (!strcmp(a, "--sha256")) { NEED_VALUE(); o->sha256 = v; }
        else if (!strcmp(a, "--window")) { NUM(1, 600); o->window = d; }
        else if (!strcmp(a, "--rate")) { NUM(0, 1); o->rate = d; }
        else if (!strcmp(a, "--wait")) o->wait = 1;
        else if (o->sub && !strcmp(o->sub, "traffic") && strchr(a, '=') && a[0] != '-') {
            if (o->n_traffic == MAX_WEIGHTS) {
                fprintf(stderr, "corvidctl: at most %d VERSION=WEIGHT pairs\n", MAX_WEIGHTS);
                return -1;
            }
            char *end;
            const char *eq = strchr(a, '=');
            errno = 0;
            unsigned long w = strtoul(eq + 1, &end, 10);
            if (errno || end == eq + 1 || *end || w > 1000000) {
                fprintf(stderr, "corvidctl: \"%s\" is not VERSION=WEIGHT (weight 0..1000000)\n", a);
                return -1;
            }
            char *name = strndup(a, (size_t)(eq - a));
            if (!name) return -1;
            o->traffic_v[o->n_traffic] = name;
            o->traffic_w[o->n_traffic++] = (uint32_t)w;
        }
        else if (!strcmp(a, "--ignore-eos")) o->sampling.ignore_eos = 1;
        else if (!strcmp(a, "--rag")) o->rag.enable = 1;
        else if (!strcmp(a, "--kb")) { NEED_VALUE(); o->rag.enable = 1; o->rag.knowledge_base = v; }
        else if (!strcmp(a, "--rag-top-k")) { NUM(1, 1e6); o->rag.enable = 1; o->rag.top_k = (uint32_t)d; }
        else if (!strcmp(a, "--min-score")) { NUM(0, 1e6); o->rag.enable = 1; o->rag.min_score = (float)d; }
        else if (!strcmp(a, "--policy")) { NEED_VALUE(); o->rag.enable = 1; o->rag.policy = v; }
        else if (!strcmp(a, "--source")) {
            NEED_VALUE();
            if (o->rag.n_sources == MAX_STOP) {
                fprintf(stderr, "corvidctl: at most %d --source names\n", MAX_STOP);
                return -1;
            }
            o->rag.enable = 1;
            o->sources[o->rag.n_sources++] = v;
        }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--raw")) o->raw = 1;
        else if (!strcmp(a, "--stop")) {
            NEED_VALUE();
            if (o->sampling.n_stop == MAX_STOP) {
                fprintf(stderr, "corvidctl: at most %d --stop strings\n", MAX_STOP);
                return -1;
            }
            o->stop[o->sampling.n_stop++] = v;
        } else if (!strcmp(a, "--message")) {
            NEED_VALUE();
            const char *eq = strchr(v, '=');
            if (!eq || o->n_messages == MAX_MESSAGES) {
                fprintf(stderr, "corvidctl: --message wants ROLE=TEXT (at most %d)\n", MAX_MESSAGES);
                return -1;
            }
            char *role = strndup(v, (size_t)(eq - v));
            if (!role) return -1;
            o->messages[o->n_messages++] = (corvid_chat_message){role, eq + 1};
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "corvidctl: unknown option %s\n", a);
            return -1;
        }
#undef NUM
#undef NEED_VALUE
    }
    o->sampling.stop = o->stop;
    o->rag.sources = o->sources;
    if (!o->client.addr) {
        fprintf(stderr, "corvidctl: -a HOST:PORT is required\n");
        return -1;
    }
    return 0;
}

static int fail(const char *what, const corvid_error *e) {
    fprintf(stderr, "corvidctl: %s: %s: %s\n", what, corvid_code_name(e->code), e->message);
    return 1;
}

/* Streams a generate/chat response: text as it arrives, or one JSON object at the end. */
static int consume(corvid_stream *s, int json) {
    corvid_event ev;
    corvid_error err = {0};
    json_t *tokens = json_array(), *cites = json_array();
    char *text = NULL;
    size_t text_len = 0;
    int r, rc = 0;
    corvid_final fin = {0};
    char reason[16] = "", version[128] = "", error[512] = "";
    while ((r = corvid_stream_next(s, &ev, &err)) == 1) {
        if (ev.kind == CORVID_EVENT_CHUNK) {
            for (size_t i = 0; i < ev.n_token_ids; i++) json_array_append_new(tokens, json_integer(ev.token_ids[i]));
            if (json) {
                char *t = realloc(text, text_len + ev.text_len + 1);
                if (!t) break;
                text = t;
                memcpy(text + text_len, ev.text, ev.text_len);
                text_len += ev.text_len;
                text[text_len] = 0;
            } else {
                fwrite(ev.text, 1, ev.text_len, stdout);
                fflush(stdout);
            }
        } else if (ev.kind == CORVID_EVENT_CONTEXT) {
            for (size_t i = 0; i < ev.n_citations; i++) {
                const corvid_citation *c = &ev.citations[i];
                if (json) {
                    json_array_append_new(cites, json_pack("{s:s,s:s,s:s,s:s,s:f}", "source", c->source,
                                                           "document_id", c->document_id, "title", c->title,
                                                           "url", c->url, "score", (double)c->score));
                } else {
                    /* The numbers are the [n] tags the answer cites. */
                    printf("[%zu] %s %s \"%s\" score %.3f%s%s\n", i + 1, c->source, c->document_id, c->title,
                           c->score, c->url[0] ? " " : "", c->url);
                }
            }
            if (!json && ev.n_citations) printf("\n");
        } else if (ev.kind == CORVID_EVENT_FINAL) {
            fin = ev.final;
            snprintf(reason, sizeof reason, "%s", fin.finish_reason);
            snprintf(version, sizeof version, "%s", fin.model_version);
            snprintf(error, sizeof error, "%s", fin.error);
        }
    }
    if (r < 0) rc = fail("generate", &err);
    if (json && rc == 0) {
        json_t *o = json_pack("{s:o,s:s,s:s,s:s,s:f,s:i,s:i}", "tokens", tokens, "text", text ? text : "",
                              "finish_reason", reason, "model_version", version, "ttft_ms", (double)fin.ttft_ms,
                              "prompt_tokens", (json_int_t)fin.prompt_tokens, "completion_tokens",
                              (json_int_t)fin.completion_tokens);
        tokens = NULL;
        if (json_array_size(cites)) json_object_set(o, "citations", cites);
        if (fin.context_tokens) json_object_set_new(o, "context_tokens", json_integer(fin.context_tokens));
        if (fin.default_answer) json_object_set_new(o, "default_answer", json_true());
        char *out = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", out);
        free(out);
        json_decref(o);
    } else if (!json && rc == 0) {
        printf("\n");
    }
    if (rc == 0 && !strcmp(reason, "error")) {
        fprintf(stderr, "corvidctl: generation failed: %s\n", error);
        rc = 1;
    }
    json_decref(tokens);
    json_decref(cites);
    free(text);
    return rc;
}

static json_t *codes_json(const uint64_t *counts) {
    json_t *o = json_object();
    for (int c = 0; c < CORVID_CODES; c++)
        if (counts[c]) json_object_set_new(o, corvid_code_name(c), json_integer((json_int_t)counts[c]));
    return o;
}

static uint64_t sum_codes(const uint64_t *counts, int errors_only) {
    uint64_t n = 0;
    for (int c = errors_only ? 1 : 0; c < CORVID_CODES; c++) n += counts[c];
    return n;
}

static void print_status(const corvid_server_status *st, int json) {
    if (json) {
        json_t *slots = json_array();
        for (size_t i = 0; i < st->n_slots; i++) {
            const corvid_slot_status *s = &st->slots[i];
            json_array_append_new(
                slots, json_pack("{s:s,s:s,s:i,s:i,s:o,s:o,s:f,s:f,s:I,s:s,s:s,s:s,s:i,s:f,s:f}", "version",
                                 s->version, "state", s->state, "weight", (json_int_t)s->weight, "in_flight",
                                 (json_int_t)s->in_flight, "requests_total", codes_json(s->requests_total),
                                 "requests_window", codes_json(s->requests_window), "ttft_p99_ms",
                                 corvid_histogram_quantile(&s->ttft_seconds, 0.99) * 1e3, "latency_p99_ms",
                                 corvid_histogram_quantile(&s->latency_seconds, 0.99) * 1e3, "tokens_generated",
                                 (json_int_t)s->tokens_generated, "message", s->message, "uri", s->uri,
                                 "sha256", s->sha256, "window_seconds", (json_int_t)s->window_seconds,
                                 "load_seconds", (double)s->load_seconds, "fault_error_rate",
                                 (double)s->fault_error_rate));
        }
        json_t *o = json_pack("{s:s,s:i,s:i,s:i,s:i,s:o}", "server_id", st->server_id, "kv_blocks_used",
                              (json_int_t)st->kv_blocks_used, "kv_blocks_total", (json_int_t)st->kv_blocks_total,
                              "queue_depth", (json_int_t)st->queue_depth, "running_sequences",
                              (json_int_t)st->running_sequences, "slots", slots);
        char *out = json_dumps(o, JSON_COMPACT);
        printf("%s\n", out);
        free(out);
        json_decref(o);
        return;
    }
    printf("server %s: kv blocks %u/%u, queue %u, running %u\n", st->server_id, st->kv_blocks_used,
           st->kv_blocks_total, st->queue_depth, st->running_sequences);
    printf("%-20s %-9s %6s %8s %9s %9s %10s %10s  %s\n", "VERSION", "STATE", "WEIGHT", "INFLIGHT",
           "REQUESTS", "ERRORS", "TTFT_P99", "TOKENS", "MESSAGE");
    for (size_t i = 0; i < st->n_slots; i++) {
        const corvid_slot_status *s = &st->slots[i];
        printf("%-20s %-9s %6u %8u %9llu %9llu %8.1fms %10llu  %s\n", s->version, s->state, s->weight,
               s->in_flight, (unsigned long long)sum_codes(s->requests_window, 0),
               (unsigned long long)sum_codes(s->requests_window, 1),
               corvid_histogram_quantile(&s->ttft_seconds, 0.99) * 1e3, (unsigned long long)s->tokens_generated,
               s->message);
    }
}

static int admin(corvid_client *c, const opts *o) {
    corvid_error err = {0};
    corvid_slot_status slot;
    if (!strcmp(o->sub, "load") || !strcmp(o->sub, "unload")) {
        int load = !strcmp(o->sub, "load");
        if (!o->slot_version || (load && !o->uri)) {
            fprintf(stderr, "corvidctl: admin %s needs --version%s\n", o->sub, load ? " and --uri" : "");
            return 2;
        }
        int r = load ? corvid_admin_load(c, o->slot_version, o->uri, o->sha256, o->wait, &slot, &err)
                     : corvid_admin_unload(c, o->slot_version, o->wait, &slot, &err);
        if (r != 0) return fail(o->sub, &err);
        printf("%s: %s (%s)\n", slot.version, slot.state, slot.message);
        return strcmp(slot.state, "failed") == 0 ? 1 : 0;
    }
    if (!strcmp(o->sub, "traffic")) {
        if (!o->n_traffic) {
            fprintf(stderr, "corvidctl: admin traffic needs VERSION=WEIGHT pairs\n");
            return 2;
        }
        if (corvid_admin_set_traffic(c, o->traffic_v, o->traffic_w, o->n_traffic, &err) != 0)
            return fail("traffic", &err);
    } else if (!strcmp(o->sub, "fault")) {
        if (!o->slot_version) {
            fprintf(stderr, "corvidctl: admin fault needs --version and --rate\n");
            return 2;
        }
        if (corvid_admin_set_fault(c, o->slot_version, (float)o->rate, &err) != 0) return fail("fault", &err);
    } else if (strcmp(o->sub, "status") != 0) {
        fprintf(stderr, "corvidctl: unknown admin command \"%s\"\n", o->sub);
        return 2;
    }
    corvid_server_status st;
    if (corvid_admin_status(c, (uint32_t)o->window, &st, &err) != 0) return fail("status", &err);
    print_status(&st, o->json);
    corvid_server_status_free(&st);
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse_args(argc, argv, &o) != 0) return 2;
    corvid_client *c;
    corvid_error err = {0};
    if (corvid_client_new(&o.client, &c, &err) != 0) return fail("connect", &err);
    int rc = 0;
    if (!strcmp(o.cmd, "generate") || !strcmp(o.cmd, "chat")) {
        if (!o.prompt) {
            fprintf(stderr, "corvidctl: %s needs -p TEXT\n", o.cmd);
            rc = 2;
            goto out;
        }
        corvid_stream *s;
        int r;
        if (!strcmp(o.cmd, "generate")) {
            corvid_generate_params p = {.prompt = o.prompt, .model = o.model, .model_version = o.version,
                                        .sampling = o.sampling, .raw = o.raw, .rag = o.rag};
            r = corvid_generate(c, &p, &s, &err);
        } else {
            corvid_chat_message msgs[MAX_MESSAGES + 2];
            size_t n = 0;
            if (o.system) msgs[n++] = (corvid_chat_message){"system", o.system};
            for (size_t i = 0; i < o.n_messages; i++) msgs[n++] = o.messages[i];
            msgs[n++] = (corvid_chat_message){"user", o.prompt};
            corvid_chat_params p = {.messages = msgs, .n_messages = n, .model = o.model,
                                    .model_version = o.version, .chat_template = o.chat_template,
                                    .sampling = o.sampling, .rag = o.rag};
            r = corvid_chat(c, &p, &s, &err);
        }
        if (r != 0) {
            rc = fail(o.cmd, &err);
            goto out;
        }
        rc = consume(s, o.json);
        corvid_stream_free(s);
    } else if (!strcmp(o.cmd, "tokenize")) {
        int32_t *ids;
        size_t n;
        if (!o.prompt) {
            fprintf(stderr, "corvidctl: tokenize needs -p TEXT\n");
            rc = 2;
            goto out;
        }
        if (corvid_tokenize(c, o.model, o.prompt, o.raw, &ids, &n, &err) != 0) {
            rc = fail("tokenize", &err);
            goto out;
        }
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
    } else if (!strcmp(o.cmd, "models")) {
        corvid_model_info *m;
        size_t n;
        if (corvid_list_models(c, &m, &n, &err) != 0) {
            rc = fail("models", &err);
            goto out;
        }
        printf("%-24s %-16s %-8s %-8s %8s %8s %6s\n", "NAME", "VERSION", "ARCH", "STATE", "CONTEXT", "VOCAB", "WEIGHT");
        for (size_t i = 0; i < n; i++)
            printf("%-24s %-16s %-8s %-8s %8u %8u %6u\n", m[i].name, m[i].version, m[i].architecture, m[i].state,
                   m[i].context_length, m[i].vocab_size, m[i].traffic_weight);
        free(m);
    } else if (!strcmp(o.cmd, "admin")) {
        rc = admin(c, &o);
    } else if (!strcmp(o.cmd, "health")) {
        int serving = 0;
        if (corvid_health(c, o.service ? o.service : "", &serving, &err) != 0) {
            rc = fail("health", &err);
            goto out;
        }
        printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
        rc = serving ? 0 : 1;
    } else {
        fprintf(stderr, "corvidctl: unknown command \"%s\"\n", o.cmd);
        usage(stderr);
        rc = 2;
    }
out:
    corvid_client_free(c);
    for (size_t i = 0; i < o.n_messages; i++) free((char *)o.messages[i].role);
    for (size_t i = 0; i < o.n_traffic; i++) free((char *)o.traffic_v[i]);
    free((char *)o.client.root_certs_pem);
    free((char *)o.client.client_cert_pem);
    free((char *)o.client.client_key_pem);
    return rc;
}
