/* corvidctl: command-line client for corvid-server, built on libcorvid_client.
 *
 *   corvidctl generate -a ADDR -p TEXT [sampling flags] [--json]
 *   corvidctl chat -a ADDR -p TEXT [--system TEXT] [--message ROLE=TEXT]... [--json]
 *   (generate and chat: --rag [--kb NAME] [--rag-top-k K] [--min-score S] [--source NAME]...
 *    [--policy refuse|answer] prints the citations, a blank line, then the answer)
 *   corvidctl tokenize -a ADDR -p TEXT [--raw] [--model-version V]
 *   corvidctl models -a ADDR
 *   corvidctl health -a ADDR [--service NAME]     exit 0 only when SERVING
 *   corvidctl admin load -a ADDR --version V --uri U [--sha256 H] [--wait]
 *   corvidctl admin traffic -a ADDR V1=90 V2=10
 *   corvidctl admin unload -a ADDR --version V [--wait]
 *   corvidctl admin status -a ADDR [--window SECONDS] [--json]
 *   corvidctl admin fault -a ADDR --version V --rate R     (CORVID_TESTING servers)
 *   corvidctl help [COMMAND], corvidctl [COMMAND] --help
 *
 * Each command takes only its own options (k_commands, option_scope). Errors print the
 * gRPC status and message on stderr and exit 1; a wrong command line exits 2 (cli.h).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
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

/* The commands, the options each takes (a bit per command) and their usage texts. */
enum { C_GENERATE = 1, C_CHAT = 2, C_TOKENIZE = 4, C_MODELS = 8, C_HEALTH = 16, C_ADMIN = 32, C_ALL = 63 };

static const char k_sampling_usage[] =
    "  -n, --max-tokens N       generate at most N tokens (default: the server's)\n"
    "  --temp T                 temperature, 0 = greedy (default)\n"
    "  --top-k K  --top-p P  --min-p M  --repeat-penalty R\n"
    "                           sampling filters (default: off)\n"
    "  --seed S                 the same seed and prompt give the same tokens\n"
    "  --stop TEXT              stop string, repeatable (at most 16)\n"
    "  --ignore-eos             keep generating after an end-of-generation token\n"
    "  --logprobs N             ask for N alternatives per token (0..20)\n"
    "  --model NAME             refused unless the server serves NAME\n"
    "  --model-version V        pin version V (default: routed by traffic weight)\n"
    "  --json                   one JSON object at the end instead of streaming text:\n"
    "                           tokens, text, finish_reason, model_version, ttft_ms, ...\n"
    "  --rag                    ground the answer in the server's knowledge base and live\n"
    "                           sources; the citations are printed first, then a blank line\n"
    "  --kb NAME                knowledge base (default: the server's first)\n"
    "  --rag-top-k K            chunks retrieved (server limit 20)\n"
    "  --min-score S            BM25 score a chunk must reach\n"
    "  --source NAME            live source, repeatable (default: all configured)\n"
    "  --policy refuse|answer   nothing relevant found: the default answer, or the model\n"
    "                           (--kb, --rag-top-k, --min-score, --source, --policy imply --rag)\n";

static const struct command {
    const char *name;
    unsigned bit;
    const char *synopsis; /* the usage's first lines and what the command does */
    const char *options;  /* its own options; NULL: none beyond the connection's */
} k_commands[] = {
    {"generate", C_GENERATE,
     "usage: corvidctl generate -a HOST:PORT -p TEXT [options]\n"
     "  streams the continuation of TEXT\n"
     "  -p, --prompt TEXT        the prompt\n"
     "  --raw                    no BOS/EOS added to the prompt\n",
     k_sampling_usage},
    {"chat", C_CHAT,
     "usage: corvidctl chat -a HOST:PORT -p TEXT [--system TEXT] [--message ROLE=TEXT]... [options]\n"
     "  streams the answer to a conversation, formatted by the model's chat template\n"
     "  -p, --prompt TEXT        the last user message\n"
     "  --system TEXT            a system message, first\n"
     "  --message ROLE=TEXT      a turn before -p (role system, user or assistant), repeatable\n"
     "  --template NAME          force a template: llama2, llama3, chatml, qwen2, deepseek-r1, gemma\n",
     k_sampling_usage},
    {"tokenize", C_TOKENIZE,
     "usage: corvidctl tokenize -a HOST:PORT -p TEXT [--raw] [--model NAME] [--model-version V]\n"
     "  prints the token ids of TEXT on one line\n"
     "  -p, --prompt TEXT        the text\n"
     "  --raw                    no BOS/EOS added\n"
     "  --model NAME             refused unless the server serves NAME\n"
     "  --model-version V        the tokenizer of version V (default: routed by traffic weight;\n"
     "                           a version the server does not hold: NOT_FOUND)\n",
     NULL},
    {"models", C_MODELS,
     "usage: corvidctl models -a HOST:PORT\n"
     "  lists the model versions the server holds: name, version, architecture, state,\n"
     "  context, vocabulary and traffic weight\n",
     NULL},
    {"health", C_HEALTH,
     "usage: corvidctl health -a HOST:PORT [--service NAME]\n"
     "  prints SERVING or NOT_SERVING; exit 0 only when SERVING\n"
     "  --service NAME           \"\" (the server, default), corvid.v1.Inference (a version takes\n"
     "                           traffic) or corvid.v1.Admin\n",
     NULL},
    {"admin", C_ADMIN,
     "usage: corvidctl admin load -a HOST:PORT --version V --uri URI [--sha256 HEX] [--wait]\n"
     "       corvidctl admin unload -a HOST:PORT --version V [--wait]\n"
     "       corvidctl admin traffic -a HOST:PORT V1=W1 [V2=W2]...\n"
     "       corvidctl admin status -a HOST:PORT [--window SECONDS] [--json]\n"
     "       corvidctl admin fault -a HOST:PORT --version V --rate R   (CORVID_TESTING servers)\n"
     "  model versions: load one beside the serving ones, route traffic by weight, drain and\n"
     "  unload; traffic and fault print the status afterwards\n"
     "  --version V              the model version\n"
     "  --uri URI                a path, file://, http:// or https:// (a download needs --sha256)\n"
     "  --sha256 HEX             the file's digest, checked before it is loaded\n"
     "  --wait                   return once the load or unload is done\n"
     "  V=W                      a version's traffic weight, 0..1000000 (at most 8 pairs)\n"
     "  --window SECONDS         the status window, 1..600\n"
     "  --rate R                 fail this share of the version's requests on purpose, 0..1\n"
     "  --json                   the status as one JSON object\n",
     NULL},
};
#define N_COMMANDS (sizeof k_commands / sizeof k_commands[0])

static const char k_connection_usage[] =
    "connection (every command):\n"
    "  -a, --addr HOST:PORT     the server (required); dns:///NAME:PORT or a list A:PORT,B:PORT\n"
    "                           spreads calls round-robin over every address (a name is\n"
    "                           re-resolved when connections drop)\n"
    "  --timeout SECONDS        deadline of each call (default: none)\n"
    "  --token TOKEN            bearer token (default: $CORVID_TOKEN)\n"
    "  --traceparent TP         W3C trace context the calls carry (00-TRACEID-SPANID-01)\n"
    "  --tls-ca FILE            TLS: the CA of the server's certificate\n"
    "  --tls-cert FILE  --tls-key FILE\n"
    "                           mTLS: this client's certificate and key\n"
    "  -h, --help               this text\n";

/* The command whose usage is printed; NULL: all of them. */
static const struct command *g_command;

static void usage(FILE *f) {
    if (g_command) {
        fputs(g_command->synopsis, f);
        if (g_command->options) fputs(g_command->options, f);
        fputs(k_connection_usage, f);
        return;
    }
    fputs("usage: corvidctl COMMAND -a HOST:PORT [options]\n"
          "       corvidctl help [COMMAND]        (or corvidctl [COMMAND] --help)\n"
          "commands: generate, chat, tokenize, models, health, admin load|unload|traffic|status|fault\n"
          "Errors print the gRPC status and message on stderr and exit 1; a wrong command line\n"
          "exits 2.\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fputc('\n', f);
        fputs(k_commands[i].synopsis, f);
        if (k_commands[i].options && (i == 0 || k_commands[i].options != k_commands[i - 1].options))
            fputs(k_commands[i].options, f);
        else if (k_commands[i].options)
            fputs("  sampling, --json and RAG options as for generate\n", f);
    }
    fputc('\n', f);
    fputs(k_connection_usage, f);
}

static const struct command *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(k_commands[i].name, name)) return &k_commands[i];
    return NULL;
}

/* The commands an option belongs to; 0: no such option. */
static unsigned option_scope(const char *a) {
    static const struct {
        const char *name;
        unsigned scope;
    } k[] = {
        {"-a", C_ALL}, {"--addr", C_ALL}, {"--timeout", C_ALL}, {"--token", C_ALL}, {"--traceparent", C_ALL},
        {"--tls-ca", C_ALL}, {"--tls-cert", C_ALL}, {"--tls-key", C_ALL},
        {"-p", C_GENERATE | C_CHAT | C_TOKENIZE}, {"--prompt", C_GENERATE | C_CHAT | C_TOKENIZE},
        {"--model", C_GENERATE | C_CHAT | C_TOKENIZE}, {"--model-version", C_GENERATE | C_CHAT | C_TOKENIZE},
        {"--raw", C_GENERATE | C_TOKENIZE},
        {"--system", C_CHAT}, {"--message", C_CHAT}, {"--template", C_CHAT},
        {"-n", C_GENERATE | C_CHAT}, {"--max-tokens", C_GENERATE | C_CHAT}, {"--temp", C_GENERATE | C_CHAT},
        {"--top-k", C_GENERATE | C_CHAT}, {"--top-p", C_GENERATE | C_CHAT}, {"--min-p", C_GENERATE | C_CHAT},
        {"--repeat-penalty", C_GENERATE | C_CHAT}, {"--seed", C_GENERATE | C_CHAT},
        {"--stop", C_GENERATE | C_CHAT}, {"--ignore-eos", C_GENERATE | C_CHAT},
        {"--logprobs", C_GENERATE | C_CHAT}, {"--rag", C_GENERATE | C_CHAT}, {"--kb", C_GENERATE | C_CHAT},
        {"--rag-top-k", C_GENERATE | C_CHAT}, {"--min-score", C_GENERATE | C_CHAT},
        {"--source", C_GENERATE | C_CHAT}, {"--policy", C_GENERATE | C_CHAT},
        {"--json", C_GENERATE | C_CHAT | C_ADMIN},
        {"--service", C_HEALTH},
        {"--version", C_ADMIN}, {"--uri", C_ADMIN}, {"--sha256", C_ADMIN}, {"--wait", C_ADMIN},
        {"--window", C_ADMIN}, {"--rate", C_ADMIN},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(k[i].name, a)) return k[i].scope;
    return 0;
}

#define USAGE_ERROR(...) cv_cli_usage_error("corvidctl", usage, __VA_ARGS__)

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

static int parse_args(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    if (argc < 2) USAGE_ERROR("a command is required");
    o->cmd = argv[1];
    if (cv_cli_is_help(o->cmd)) cv_cli_help(usage);
    if (!strcmp(o->cmd, "help")) {
        if (argc > 3) USAGE_ERROR("help takes at most one command");
        if (argc == 3 && !(g_command = find_command(argv[2]))) USAGE_ERROR("unknown command \"%s\"", argv[2]);
        cv_cli_help(usage);
    }
    if (o->cmd[0] == '-') USAGE_ERROR("unknown option %s (the command comes first)", o->cmd);
    if (!(g_command = find_command(o->cmd))) USAGE_ERROR("unknown command \"%s\"", o->cmd);
    o->client.bearer_token = getenv("CORVID_TOKEN");
    int first = 2;
    if (!strcmp(o->cmd, "admin")) {
        if (argc >= 3 && cv_cli_is_help(argv[2])) cv_cli_help(usage);
        if (argc >= 3 && argv[2][0] == '-' && !option_scope(argv[2])) USAGE_ERROR("unknown option %s", argv[2]);
        if (argc < 3 || argv[2][0] == '-') USAGE_ERROR("admin needs load, unload, traffic, status or fault first");
        o->sub = argv[2];
        static const char *const subs[] = {"load", "unload", "traffic", "status", "fault"};
        size_t k = 0;
        while (k < sizeof subs / sizeof subs[0] && strcmp(subs[k], o->sub) != 0) k++;
        if (k == sizeof subs / sizeof subs[0]) USAGE_ERROR("unknown admin command \"%s\"", o->sub);
        first = 3;
    }
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        if (cv_cli_is_help(a)) cv_cli_help(usage);
        unsigned scope = option_scope(a);
        if (scope && !(scope & g_command->bit)) USAGE_ERROR("%s is not an option of %s", a, o->cmd);
#define NEED_VALUE()                                                      \
    do {                                                                  \
        if (!v) USAGE_ERROR("%s needs a value", a);                       \
        i++;                                                              \
    } while (0)
#define NUM(lo, hi)                                                       \
    do {                                                                  \
        NEED_VALUE();                                                     \
        if (cv_cli_number("corvidctl", a, v, lo, hi, &d) != 0) return -1; \
    } while (0)
        if (!strcmp(a, "-a") || !strcmp(a, "--addr")) { NEED_VALUE(); o->client.addr = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (!strcmp(a, "--system")) { NEED_VALUE(); o->system = v; }
        else if (!strcmp(a, "--model")) { NEED_VALUE(); o->model = v; }
        else if (!strcmp(a, "--model-version")) { NEED_VALUE(); o->version = v; }
        else if (!strcmp(a, "--template")) { NEED_VALUE(); o->chat_template = v; }
        else if (!strcmp(a, "--service")) { NEED_VALUE(); o->service = v; }
        else if (!strcmp(a, "--token")) { NEED_VALUE(); o->client.bearer_token = v; }
        else if (!strcmp(a, "--traceparent")) { NEED_VALUE(); corvid_trace_context(v); }
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
        } else if (o->sub && !strcmp(o->sub, "traffic") && a[0] != '-') {
            USAGE_ERROR("\"%s\" is not VERSION=WEIGHT", a);
        } else {
            USAGE_ERROR("unknown option %s", a);
        }
#undef NUM
#undef NEED_VALUE
    }
    o->sampling.stop = o->stop;
    o->rag.sources = o->sources;
    if (!o->client.addr) USAGE_ERROR("-a HOST:PORT is required");
    if ((g_command->bit & (C_GENERATE | C_CHAT | C_TOKENIZE)) && !o->prompt) USAGE_ERROR("%s needs -p TEXT", o->cmd);
    if (o->sub && (!strcmp(o->sub, "load") || !strcmp(o->sub, "unload") || !strcmp(o->sub, "fault")) &&
        !o->slot_version)
        USAGE_ERROR("admin %s needs --version", o->sub);
    if (o->sub && !strcmp(o->sub, "load") && !o->uri) USAGE_ERROR("admin load needs --uri");
    if (o->sub && !strcmp(o->sub, "traffic") && !o->n_traffic) USAGE_ERROR("admin traffic needs VERSION=WEIGHT pairs");
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
        int r = load ? corvid_admin_load(c, o->slot_version, o->uri, o->sha256, o->wait, &slot, &err)
                     : corvid_admin_unload(c, o->slot_version, o->wait, &slot, &err);
        if (r != 0) return fail(o->sub, &err);
        printf("%s: %s (%s)\n", slot.version, slot.state, slot.message);
        return strcmp(slot.state, "failed") == 0 ? 1 : 0;
    }
    if (!strcmp(o->sub, "traffic")) {
        if (corvid_admin_set_traffic(c, o->traffic_v, o->traffic_w, o->n_traffic, &err) != 0)
            return fail("traffic", &err);
    } else if (!strcmp(o->sub, "fault")) {
        if (corvid_admin_set_fault(c, o->slot_version, (float)o->rate, &err) != 0) return fail("fault", &err);
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
        corvid_tokenize_params p = {.text = o.prompt, .model = o.model, .model_version = o.version, .raw = o.raw};
        if (corvid_tokenize_with(c, &p, &ids, &n, &err) != 0) {
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
