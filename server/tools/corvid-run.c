/* corvid-run: run one model from the command line.
 *
 *   corvid-run -m MODEL --info                 what the file holds
 *   corvid-run -m MODEL --tokenize TEXT [--parse-special]
 *                                              token ids, space-separated
 *   corvid-run -m MODEL -p PROMPT [-n N] [sampling] [-t THREADS] [--json]
 *                                              generate, streaming text to stdout
 *   corvid-run -m MODEL --ppl FILE             perplexity of a text file
 *
 * Options are parsed into one struct and each mode is one function (see the
 * k_modes table): a new mode adds a flag, a field and a function. Vocabulary-only
 * GGUF files (no tensors) are accepted. Any error prints one line on stderr and
 * exits with status 1; a wrong command line exits 2 with the usage (cli.h).
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_format.h"
#include "cli.h"
#include "generate.h"
#include "gguf.h"
#include "kv_cache.h"
#include "membw.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "tokenizer.h"
#include "tp.h"

typedef enum run_mode { MODE_NONE = 0, MODE_INFO, MODE_TOKENIZE, MODE_GENERATE, MODE_PPL } run_mode;

typedef struct run_opts {
    const char *model;
    run_mode mode;
    const char *text;        /* --tokenize, -p */
    int parse_special;       /* match control tokens written in TEXT */
    const char *prompt_ids;  /* --prompt-ids: comma-separated ids instead of -p */
    const char *ppl_file;
    const char *dump_logits; /* raw float32 logits of every row (tests) */
    int chat;                /* -p is a user message, formatted by the chat template */
    const char *chat_template; /* force a template family by name */
    const char *system;      /* --system: a system message for --chat */
    int32_t n_predict;
    int32_t n_ctx;           /* 0: the model's training context */
    int threads;             /* 0: one per CPU (split between the tp ranks) */
    int cuda;                /* --device cuda */
    int tp;                  /* --tp: tensor-parallel ranks */
    int json;
    int ignore_eos;
    cv_type kv_type;
    int swa_full;            /* --swa-full-cache: sliding-window layers keep every position */
    cv_sampler_params sp;
} run_opts;

static void usage(FILE *f) {
    fputs("usage: corvid-run -m MODEL --info\n"
          "       corvid-run -m MODEL --tokenize TEXT [--parse-special]\n"
          "       corvid-run -m MODEL (-p PROMPT | --prompt-ids IDS) [-n N] [--temp T] [--top-k K]\n"
          "                  [--top-p P] [--min-p M] [--repeat-penalty R] [--seed S] [-t THREADS]\n"
          "                  [--ctx N] [--kv-type f16|f32] [--swa-full-cache] [--ignore-eos] [--json]\n"
          "                  [--dump-logits FILE] [--device cpu|cuda] [--tp N]\n"
          "                  [--chat [--chat-template NAME] [--system TEXT]]\n"
          "       corvid-run -m MODEL --ppl FILE [-t THREADS] [--ctx N] [--json] [--device D] [--tp N]\n"
          "modes (one of):\n"
          "  --info               architecture, hyperparameters, tensors, tokenizer, template\n"
          "  --tokenize TEXT      print TEXT's token ids on one line (BOS when the model adds it)\n"
          "  -p, --prompt TEXT    generate from TEXT, streaming text to stdout (special-token text\n"
          "                       is recognised, except with --chat: then only the template's own)\n"
          "  --prompt-ids IDS     generate from comma-separated token ids\n"
          "  --ppl FILE           perplexity of FILE in windows of the context length\n"
          "options:\n"
          "  -m, --model PATH     GGUF file (a vocabulary-only file is enough for --tokenize)\n"
          "  --parse-special      treat control-token text in TEXT (<s>, <|im_end|>) as tokens\n"
          "  -n, --n-predict N    generate at most N tokens (default 128)\n"
          "  --temp T             temperature, 0 = greedy (default " CV_SAMPLER_STR(CV_SAMPLER_DEFAULT_TEMPERATURE)
          "); --top-k (" CV_SAMPLER_STR(CV_SAMPLER_DEFAULT_TOP_K) "),\n"
          "                       --top-p (" CV_SAMPLER_STR(CV_SAMPLER_DEFAULT_TOP_P) "), --min-p ("
          CV_SAMPLER_STR(CV_SAMPLER_DEFAULT_MIN_P) "), --repeat-penalty (1 = off),\n"
          "                       --seed (0): same seed and prompt, same tokens\n"
          "  -t, --threads N      CPU threads (default: one per core)\n"
          "  --device cpu|cuda    where the model runs (default cpu; cuda needs make CUDA=1)\n"
          "  --tp N               tensor parallelism: shard heads and ffn over N ranks, 1..8\n"
          "                       (cpu: threads of this process, -t split between them;\n"
          "                       cuda: GPUs 0..N-1 with NCCL); default 1\n"
          "  --ctx N              context length (default: the model's)\n"
          "  --kv-type f16|f32    KV cache element type (default f16)\n"
          "  --swa-full-cache     sliding-window layers keep every position in the KV cache\n"
          "                       (default: a ring of window + 255 positions); for comparisons\n"
          "  --ignore-eos         keep generating after an end-of-generation token\n"
          "  --json               print one JSON object instead of streaming text\n"
          "  --dump-logits FILE   write every logits row (float32) to FILE\n"
          "  --chat               -p is a user message, formatted by the model's chat template\n"
          "  --chat-template NAME force a template: llama2, llama3, chatml, qwen2, deepseek-r1, gemma\n"
          "  --system TEXT        a system message for --chat\n"
          "  -h, --help           this text\n"
          "Errors print one line on stderr and exit 1; a wrong command line exits 2.\n",
          f);
}

#define USAGE_ERROR(...) cv_cli_usage_error("corvid-run", usage, __VA_ARGS__)

/* what: context for the message, or NULL when the message names it already. */
static int fail(const char *what, const cv_error *e) {
    if (what) fprintf(stderr, "corvid-run: %s: %s\n", what, e->msg);
    else fprintf(stderr, "corvid-run: %s\n", e->msg);
    return 1;
}

static void set_mode(run_opts *o, run_mode m) {
    if (o->mode != MODE_NONE && o->mode != m) USAGE_ERROR("choose one mode: --info, --tokenize, -p/--prompt-ids or --ppl");
    o->mode = m;
}

/* A number in [lo, hi], or a message naming the option. */
static int parse_num(const char *name, const char *v, double lo, double hi, double *out) {
    return cv_cli_number("corvid-run", name, v, lo, hi, out);
}

static int parse_args(int argc, char **argv, run_opts *o) {
    enum { OPT_INFO = 256, OPT_TOKENIZE, OPT_PARSE_SPECIAL, OPT_TEMP, OPT_TOPK, OPT_TOPP,
           OPT_MINP, OPT_REPEAT, OPT_SEED, OPT_KV, OPT_JSON, OPT_PPL, OPT_IDS, OPT_DUMP,
           OPT_NOEOS, OPT_CTX, OPT_CHAT, OPT_CHAT_TEMPLATE, OPT_SYSTEM, OPT_DEVICE, OPT_TP, OPT_SWA_FULL };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"info", no_argument, 0, OPT_INFO},
        {"tokenize", required_argument, 0, OPT_TOKENIZE},
        {"parse-special", no_argument, 0, OPT_PARSE_SPECIAL},
        {"prompt", required_argument, 0, 'p'},
        {"prompt-ids", required_argument, 0, OPT_IDS},
        {"n-predict", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"tp", required_argument, 0, OPT_TP},
        {"temp", required_argument, 0, OPT_TEMP},
        {"top-k", required_argument, 0, OPT_TOPK},
        {"top-p", required_argument, 0, OPT_TOPP},
        {"min-p", required_argument, 0, OPT_MINP},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT},
        {"seed", required_argument, 0, OPT_SEED},
        {"ctx", required_argument, 0, OPT_CTX},
        {"kv-type", required_argument, 0, OPT_KV},
        {"swa-full-cache", no_argument, 0, OPT_SWA_FULL},
        {"ignore-eos", no_argument, 0, OPT_NOEOS},
        {"json", no_argument, 0, OPT_JSON},
        {"dump-logits", required_argument, 0, OPT_DUMP},
        {"ppl", required_argument, 0, OPT_PPL},
        {"chat", no_argument, 0, OPT_CHAT},
        {"chat-template", required_argument, 0, OPT_CHAT_TEMPLATE},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"device", required_argument, 0, OPT_DEVICE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->kv_type = CV_TYPE_F16;
    cv_sampler_params_default(&o->sp);
    int c;
    double d;
    /* Range checks of sampling values are the sampler's (cv_sampler_params_validate). */
    const double any = 1e30;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_INFO: set_mode(o, MODE_INFO); break;
        case OPT_TOKENIZE:
            set_mode(o, MODE_TOKENIZE);
            o->text = optarg;
            break;
        case OPT_PARSE_SPECIAL: o->parse_special = 1; break;
        case 'p':
            set_mode(o, MODE_GENERATE);
            o->text = optarg;
            break;
        case OPT_IDS:
            set_mode(o, MODE_GENERATE);
            o->prompt_ids = optarg;
            break;
        case OPT_PPL:
            set_mode(o, MODE_PPL);
            o->ppl_file = optarg;
            break;
        case 'n': if (parse_num("-n", optarg, 0, 1 << 24, &d)) return -1; o->n_predict = (int32_t)d; break;
        case 't': if (parse_num("-t", optarg, 1, 512, &d)) return -1; o->threads = (int)d; break;
        case OPT_TP: if (parse_num("--tp", optarg, 1, CV_TP_MAX, &d)) return -1; o->tp = (int)d; break;
        case OPT_CTX: if (parse_num("--ctx", optarg, 1, 1 << 24, &d)) return -1; o->n_ctx = (int32_t)d; break;
        case OPT_TEMP: if (parse_num("--temp", optarg, -any, any, &d)) return -1; o->sp.temperature = (float)d; break;
        case OPT_TOPK: if (parse_num("--top-k", optarg, INT32_MIN, INT32_MAX, &d)) return -1; o->sp.top_k = (int32_t)d; break;
        case OPT_TOPP: if (parse_num("--top-p", optarg, -any, any, &d)) return -1; o->sp.top_p = (float)d; break;
        case OPT_MINP: if (parse_num("--min-p", optarg, -any, any, &d)) return -1; o->sp.min_p = (float)d; break;
        case OPT_REPEAT: if (parse_num("--repeat-penalty", optarg, -any, any, &d)) return -1; o->sp.repeat_penalty = (float)d; break;
        case OPT_SEED: if (parse_num("--seed", optarg, 0, 18446744073709549568.0, &d)) return -1; o->sp.seed = (uint64_t)d; break;
        case OPT_KV:
            if (!strcmp(optarg, "f16")) o->kv_type = CV_TYPE_F16;
            else if (!strcmp(optarg, "f32")) o->kv_type = CV_TYPE_F32;
            else {
                fprintf(stderr, "corvid-run: --kv-type '%s' is not f16 or f32\n", optarg);
                return -1;
            }
            break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "corvid-run: --device '%s' is not cpu or cuda\n", optarg);
                return -1;
            }
            o->cuda = !strcmp(optarg, "cuda");
            break;
        case OPT_NOEOS: o->ignore_eos = 1; break;
        case OPT_SWA_FULL: o->swa_full = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_DUMP: o->dump_logits = optarg; break;
        case OPT_CHAT: o->chat = 1; break;
        case OPT_CHAT_TEMPLATE: o->chat = 1; o->chat_template = optarg; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case 'h': cv_cli_help(usage);
        default: cv_cli_getopt_error("corvid-run", usage, c, argv);
        }
    }
    if (optind < argc) USAGE_ERROR("unexpected argument '%s'", argv[optind]);
    if (!o->model) USAGE_ERROR("-m MODEL is required");
    if (o->mode == MODE_NONE) USAGE_ERROR("a mode is required: --info, --tokenize, -p/--prompt-ids or --ppl");
    if ((o->chat || o->system) && !(o->mode == MODE_GENERATE && o->text))
        USAGE_ERROR("--chat, --chat-template and --system need -p");
    cv_error e;
    if (o->mode == MODE_GENERATE && cv_sampler_params_validate(&o->sp, &e) != CV_OK) {
        fail(NULL, &e);
        return -1;
    }
    return 0;
}

/* ---- --info ---- */

static void print_arch_u32(const cv_gguf *g, const char *arch, const char *label, const char *suffix) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (cv_gguf_find_key(g, key) < 0) {
        printf("%-18s absent\n", label);
        return;
    }
    uint64_t v = cv_gguf_get_u64(g, key, UINT64_MAX);
    if (v == UINT64_MAX) printf("%-18s per layer (%s is an array)\n", label, key);
    else printf("%-18s %llu\n", label, (unsigned long long)v);
}

static void print_tensors(const cv_gguf *g) {
    uint64_t counts[CV_TYPE_COUNT] = {0}, unknown = 0, bytes = 0;
    int64_t n = cv_gguf_n_tensors(g);
    for (int64_t i = 0; i < n; i++) {
        const cv_gguf_tensor *t = cv_gguf_tensor_at(g, i);
        bytes += t->nbytes;
        if ((unsigned)t->type < CV_TYPE_COUNT) counts[t->type]++;
        else unknown++;
    }
    printf("%-18s %lld, %llu bytes\n", "tensors", (long long)n, (unsigned long long)bytes);
    printf("%-18s", "tensor types");
    if (n == 0) printf(" none (vocabulary only)");
    for (unsigned t = 0; t < CV_TYPE_COUNT; t++) {
        if (!counts[t]) continue;
        const cv_type_info *ti = cv_type_get(t);
        if (ti && ti->name) printf(" %s %llu", ti->name, (unsigned long long)counts[t]);
        else printf(" type%u %llu", t, (unsigned long long)counts[t]);
    }
    if (unknown) printf(" unknown %llu", (unsigned long long)unknown);
    printf("\n");
}

static void print_template(const cv_gguf *g) {
    cv_str tpl = cv_gguf_get_str(g, "tokenizer.chat_template");
    if (!tpl.ptr || tpl.len == 0) {
        printf("%-18s none\n", "chat template");
        return;
    }
    size_t first = 0;
    while (first < tpl.len && tpl.ptr[first] != '\n' && first < 100) first++;
    printf("%-18s %.*s%s (%llu bytes)\n", "chat template", (int)first, tpl.ptr,
           first < tpl.len ? " ..." : "", (unsigned long long)tpl.len);
}

static int run_info(const run_opts *o) {
    cv_error e = {0};
    cv_gguf *g;
    if (cv_gguf_open(o->model, &g, &e) != CV_OK) return fail(NULL, &e);
    cv_str arch_s = cv_gguf_get_str(g, "general.architecture");
    char arch[128] = "";
    if (arch_s.ptr) snprintf(arch, sizeof arch, "%.*s", (int)(arch_s.len < 127 ? arch_s.len : 127), arch_s.ptr);
    cv_str name = cv_gguf_get_str(g, "general.name");
    printf("%-18s %s\n", "file", o->model);
    printf("%-18s %llu bytes, GGUF v%u, %lld keys\n", "file size",
           (unsigned long long)cv_gguf_file_size(g), cv_gguf_version(g), (long long)cv_gguf_n_kv(g));
    printf("%-18s %s\n", "architecture", arch[0] ? arch : "absent");
    if (name.ptr) printf("%-18s %.*s\n", "name", (int)(name.len < 200 ? name.len : 200), name.ptr);
    print_arch_u32(g, arch, "context length", "context_length");
    print_arch_u32(g, arch, "embedding length", "embedding_length");
    print_arch_u32(g, arch, "layers", "block_count");
    print_arch_u32(g, arch, "heads", "attention.head_count");
    print_arch_u32(g, arch, "kv heads", "attention.head_count_kv");
    print_arch_u32(g, arch, "ffn length", "feed_forward_length");
    char key[256];
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if (cv_gguf_find_key(g, key) >= 0) printf("%-18s %g\n", "rope base", cv_gguf_get_f32(g, key, 0));
    else printf("%-18s 10000 (default: no %s)\n", "rope base", key);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if (cv_gguf_find_key(g, key) >= 0) printf("%-18s %g\n", "rms eps", cv_gguf_get_f32(g, key, 0));
    else printf("%-18s absent\n", "rms eps");
    print_tensors(g);
    cv_tok *t;
    if (cv_tok_load(g, &t, &e) == CV_OK) {
        printf("%-18s %d\n", "vocab size", cv_tok_n_vocab(t));
        printf("%-18s %s%s%s, bos %d, eos %d%s\n", "tokenizer", cv_tok_kind_name(t),
               cv_tok_get_kind(t) == CV_TOK_BPE ? " pre " : "", cv_tok_pre_name(t), cv_tok_bos(t),
               cv_tok_eos(t), cv_tok_adds_bos(t) ? ", adds BOS" : "");
        cv_tok_free(t);
    } else {
        printf("%-18s unusable: %s\n", "tokenizer", e.msg);
    }
    print_template(g);
    cv_gguf_close(g);
    return 0;
}

/* ---- --tokenize ---- */

static int run_tokenize(const run_opts *o) {
    cv_error e = {0};
    cv_gguf *g;
    cv_tok *t;
    if (cv_gguf_open(o->model, &g, &e) != CV_OK) return fail(NULL, &e);
    cv_status st = cv_tok_load(g, &t, &e);
    cv_gguf_close(g);
    if (st != CV_OK) return fail(o->model, &e);
    size_t len = strlen(o->text), n;
    int32_t *ids = malloc(CV_TOK_MAX_IDS(len) * sizeof *ids);
    if (!ids) {
        cv_tok_free(t);
        fputs("corvid-run: out of memory\n", stderr);
        return 1;
    }
    unsigned flags = CV_TOK_ADD_SPECIAL | (o->parse_special ? CV_TOK_PARSE_SPECIAL : 0);
    st = cv_tok_encode(t, o->text, len, flags, ids, CV_TOK_MAX_IDS(len), &n, &e);
    if (st == CV_OK) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    cv_tok_free(t);
    return st == CV_OK ? 0 : fail("tokenize", &e);
}

/* ---- model runtime shared by generation and perplexity ---- */

/* What a run holds open: file, tokenizer, the model's runner (backends and shards),
 * rank 0's model and the KV cache. */
typedef struct runtime {
    cv_gguf *g;
    cv_tok *tok;
    cv_tp *tp;
    cv_model *m;
    cv_kv_cache *kv;
} runtime;

static void runtime_close(runtime *rt) {
    cv_kv_free(rt->kv);
    cv_tp_free(rt->tp);
    cv_tok_free(rt->tok);
    cv_gguf_close(rt->g);
}

static cv_status open_runner(const run_opts *o, const cv_gguf *g, const cv_model_opts *mo, cv_tp **tp,
                             cv_error *e) {
    cv_tp_config tc = {.device = o->cuda ? CV_DEVICE_CUDA : CV_DEVICE_CPU, .tp = o->tp,
                       .threads = o->threads};
    cv_status st = cv_tp_load(&tc, g, mo, tp, e);
    if (st && o->cuda) return cv_error_wrap(e, "--device cuda");
    return st;
}

static cv_status runtime_open(const run_opts *o, int32_t max_batch, int32_t max_logits,
                              runtime *rt, cv_error *e) {
    memset(rt, 0, sizeof *rt);
    cv_model_opts mo = {.max_batch = max_batch, .max_logits = max_logits};
    cv_status st;
    if ((st = cv_gguf_open(o->model, &rt->g, e)) || (st = cv_tok_load(rt->g, &rt->tok, e)) ||
        (st = open_runner(o, rt->g, &mo, &rt->tp, e)))
        goto err;
    rt->m = cv_tp_model(rt->tp);
    if (o->n_ctx > cv_model_hparams(rt->m)->n_ctx_train) {
        st = cv_errorf(e, CV_ERANGE, "--ctx %d exceeds the model's context of %d", o->n_ctx,
                       cv_model_hparams(rt->m)->n_ctx_train);
        goto err;
    }
    cv_kv_config kc = cv_tp_kv_config(rt->tp, o->n_ctx, 1, o->kv_type);
    if (o->swa_full) {
        kc.window = 0;
        kc.n_blocks = cv_kv_blocks_for(&kc, kc.max_seq_len);
    }
    if ((st = cv_kv_create(&kc, &rt->kv, e))) goto err;
    return CV_OK;
err:
    runtime_close(rt);
    memset(rt, 0, sizeof *rt);
    return st;
}

static cv_status parse_ids(const char *s, int32_t n_vocab, int32_t **ids, int32_t *n, cv_error *e) {
    *ids = malloc((strlen(s) / 2 + 1) * sizeof **ids);
    if (!*ids) return cv_errorf(e, CV_ENOMEM, "out of memory");
    *n = 0;
    for (const char *p = s;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= n_vocab || (*end && *end != ','))
            return cv_errorf(e, CV_EINVAL,
                             "--prompt-ids: '%s' is not a comma-separated list of ids below %d", s, n_vocab);
        (*ids)[(*n)++] = (int32_t)v;
        if (!*end) return CV_OK;
        p = end + 1;
    }
}

static cv_status tokenize(const cv_tok *tok, const char *text, size_t len, unsigned flags,
                          int32_t **ids, int32_t *n, cv_error *e) {
    size_t got;
    *ids = malloc(CV_TOK_MAX_IDS(len) * sizeof **ids);
    if (!*ids) return cv_errorf(e, CV_ENOMEM, "out of memory");
    cv_status st = cv_tok_encode(tok, text, len, flags, *ids, CV_TOK_MAX_IDS(len), &got, e);
    *n = (int32_t)got;
    return st;
}

/* The prompt ids for --chat: the model's (or the forced) template around a user
 * message and an optional system message, neither of which can hold a control
 * token (see cv_chat_encode). *ids is malloc'd. */
static cv_status chat_prompt(const run_opts *o, const cv_gguf *g, const cv_tok *tok, int32_t **ids,
                             int32_t *n_ids, cv_error *e) {
    cv_chat_family fam;
    cv_chat_format *own = NULL;
    const cv_chat_format *fmt = NULL;
    cv_status st;
    if (o->chat_template) {
        if ((st = cv_chat_family_from_name(o->chat_template, &fam, e)) == CV_OK) fmt = cv_chat_format_family(fam);
    } else {
        char note[320];
        if ((st = cv_chat_format_load(g, tok, &own, note, sizeof note, e)) == CV_OK && note[0])
            fprintf(stderr, "corvid-run: %s\n", note);
        fmt = own;
    }
    if (st) return cv_error_wrap(e, "--chat");
    cv_chat_msg msgs[2];
    size_t n = 0;
    if (o->system) msgs[n++] = (cv_chat_msg){.role = "system", .content = o->system};
    msgs[n++] = (cv_chat_msg){.role = "user", .content = o->text};
    size_t got;
    const cv_chat_opts opts = {.add_generation_prompt = true};
    st = cv_chat_format_encode(tok, fmt, msgs, n, &opts, CV_TOK_ADD_SPECIAL, ids, &got, e);
    *n_ids = (int32_t)got;
    cv_chat_format_free(own);
    return st;
}

/* ---- -p / --prompt-ids: generation ---- */

typedef struct gen_out {
    const run_opts *o;
    const cv_tok *tok;
    cv_sampler *sampler;
    cv_tok_stream *stream;
    FILE *dump;
    int32_t *ids;          /* generated ids, room for n_predict */
    int32_t n_ids;
    char *text;            /* the streamed text (valid UTF-8), for --json */
    size_t text_len, text_cap;
    int failed;            /* an output error (disk full, closed pipe, out of memory) */
} gen_out;

static int32_t gen_sample(void *ctx, float *logits, int32_t n_vocab) {
    (void)n_vocab;
    return cv_sampler_sample(((gen_out *)ctx)->sampler, logits, NULL);
}

static void gen_logits(void *ctx, const float *logits, int32_t n_vocab) {
    gen_out *g = ctx;
    if (g->dump && fwrite(logits, sizeof *logits, (size_t)n_vocab, g->dump) != (size_t)n_vocab)
        g->failed = 1;
}

static void gen_emit(gen_out *g, const char *s, size_t n) {
    if (!g->o->json) {
        if (fwrite(s, 1, n, stdout) != n || fflush(stdout)) g->failed = 1;
        return;
    }
    if (g->text_len + n > g->text_cap) {
        size_t cap = 2 * (g->text_len + n);
        char *t = realloc(g->text, cap);
        if (!t) {
            g->failed = 1;
            return;
        }
        g->text = t;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, s, n);
    g->text_len += n;
}

static int gen_token(void *ctx, int32_t id) {
    gen_out *g = ctx;
    if (!g->o->ignore_eos && cv_tok_is_eog(g->tok, id)) return 1;
    g->ids[g->n_ids++] = id;
    const char *s;
    size_t n;
    cv_error e;
    if (cv_tok_stream_feed(g->stream, id, &s, &n, &e) != CV_OK) g->failed = 1;
    else if (n) gen_emit(g, s, n);
    return g->failed;
}

static double per_s(double n, double s) { return s > 0 ? n / s : 0; }

static int print_json(const int32_t *prompt, int32_t n_prompt, const gen_out *g,
                      const cv_gen_stats *st, const cv_kv_cache *kv) {
    json_t *o = json_object(), *pt = json_array(), *tk = json_array();
    if (!o || !pt || !tk) goto oom;
    for (int32_t i = 0; i < n_prompt; i++) json_array_append_new(pt, json_integer(prompt[i]));
    for (int32_t i = 0; i < g->n_ids; i++) json_array_append_new(tk, json_integer(g->ids[i]));
    json_object_set_new(o, "prompt_tokens", pt);
    json_object_set_new(o, "tokens", tk);
    pt = tk = NULL;
    json_object_set_new(o, "text", json_stringn(g->text ? g->text : "", g->text_len));
    json_object_set_new(o, "prefill_tokens_per_s", json_real(per_s(st->n_prompt, st->prefill_s)));
    /* The first token comes from the prefill: decode steps are the ones after it. */
    json_object_set_new(o, "decode_tokens_per_s",
                        json_real(per_s(st->n_generated > 1 ? st->n_generated - 1 : 0, st->decode_s)));
    /* The cache holds one sequence of the whole context: its K+V bytes. */
    json_object_set_new(o, "kv_bytes", json_integer((json_int_t)cv_kv_bytes(kv)));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return 1;
    puts(s);
    free(s);
    return 0;
oom:
    json_decref(o);
    json_decref(pt);
    json_decref(tk);
    return 1;
}

static int run_generate(const run_opts *o) {
    cv_error e = {0};
    runtime rt;
    int32_t *prompt = NULL, n_prompt = 0;
    gen_out g = {.o = o};
    cv_status st = runtime_open(o, 256, o->dump_logits ? 256 : 1, &rt, &e);
    if (st) return fail(NULL, &e);
    g.tok = rt.tok;
    const int32_t n_vocab = cv_model_hparams(rt.m)->n_vocab;
    if (o->prompt_ids) st = parse_ids(o->prompt_ids, n_vocab, &prompt, &n_prompt, &e);
    else if (o->chat) st = chat_prompt(o, rt.g, rt.tok, &prompt, &n_prompt, &e);
    else /* a prompt typed on the command line is the operator's: its control tokens count */
        st = tokenize(rt.tok, o->text, strlen(o->text), CV_TOK_ADD_SPECIAL | CV_TOK_PARSE_SPECIAL,
                      &prompt, &n_prompt, &e);
    if (st) goto out;
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] >= n_vocab) {
            st = cv_errorf(&e, CV_EINVAL, "prompt token %d is outside the model's vocabulary of %d",
                           prompt[i], n_vocab);
            goto out;
        }
    g.ids = malloc(((size_t)o->n_predict + 1) * sizeof *g.ids);
    if (!g.ids) {
        st = cv_errorf(&e, CV_ENOMEM, "out of memory");
        goto out;
    }
    /* Only ids the tokenizer can print are sampled: a padded embedding has more rows. */
    if ((st = cv_sampler_new(&o->sp, cv_tok_n_vocab(rt.tok), &g.sampler, &e)) ||
        (st = cv_sampler_accept(g.sampler, prompt, (size_t)n_prompt, &e)) ||
        (st = cv_tok_stream_new(rt.tok, 0, &g.stream, &e)))
        goto out;
    if (o->dump_logits && !(g.dump = fopen(o->dump_logits, "wb"))) {
        st = cv_errorf(&e, CV_EIO, "cannot write %s", o->dump_logits);
        goto out;
    }
    cv_gen_params gp = {.n_predict = o->n_predict, .seq = 0, .all_logits = o->dump_logits != NULL};
    cv_gen_callbacks cb = {.sample = gen_sample, .on_logits = gen_logits, .on_token = gen_token, .ctx = &g};
    cv_gen_stats gs;
    if ((st = cv_generate(rt.tp, rt.kv, prompt, n_prompt, &gp, &cb, &gs, &e))) goto out;
    const char *tail;
    size_t tail_len;
    cv_tok_stream_flush(g.stream, &tail, &tail_len);
    gen_emit(&g, tail, tail_len);
    if (g.dump && fclose(g.dump)) g.failed = 1;
    g.dump = NULL;
    if (g.failed) {
        st = cv_errorf(&e, CV_EIO, "writing the output failed");
        goto out;
    }
    if (o->json) {
        if (print_json(prompt, n_prompt, &g, &gs, rt.kv)) st = cv_errorf(&e, CV_ENOMEM, "out of memory");
    } else {
        putchar('\n');
        fflush(stdout);
        fprintf(stderr, "prompt %d tokens, %.1f tok/s; generated %d tokens, %.1f tok/s\n",
                gs.n_prompt, per_s(gs.n_prompt, gs.prefill_s), gs.n_generated,
                per_s(gs.n_generated > 1 ? gs.n_generated - 1 : 0, gs.decode_s));
    }
out:
    if (g.dump) fclose(g.dump);
    cv_tok_stream_free(g.stream);
    cv_sampler_free(g.sampler);
    free(g.ids);
    free(g.text);
    free(prompt);
    runtime_close(&rt);
    return st ? fail(NULL, &e) : 0;
}

/* ---- --ppl ---- */

typedef struct ppl_acc {
    const int32_t *next;  /* the token that follows each observed row */
    int32_t at;
    double nll;
    int64_t n;
} ppl_acc;

static void ppl_logits(void *ctx, const float *x, int32_t n_vocab) {
    ppl_acc *a = ctx;
    const float mx = x[cv_argmax(x, n_vocab)];
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)x[i] - mx);
    a->nll += log(sum) + mx - x[a->next[a->at++]];
    a->n++;
}

static char *read_file(const char *path, size_t *len, cv_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cv_errorf(e, CV_EIO, "cannot open %s", path);
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap) {
            char *b = realloc(buf, cap = cap ? 2 * cap : 65536);
            if (!b) {
                cv_errorf(e, CV_ENOMEM, "out of memory reading %s", path);
                goto err;
            }
            buf = b;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r);
    if (ferror(f)) {
        cv_errorf(e, CV_EIO, "reading %s failed", path);
        goto err;
    }
    fclose(f);
    *len = n;
    return buf;
err:
    free(buf);
    fclose(f);
    return NULL;
}

/* Perplexity over consecutive windows of the context length; in each window every
 * token after the first is predicted from the ones before it. */
static int run_ppl(const run_opts *o) {
    cv_error e = {0};
    runtime rt;
    int32_t *ids = NULL, n_ids = 0;
    size_t len;
    char *text = read_file(o->ppl_file, &len, &e);
    if (!text) return fail(NULL, &e);
    cv_status st = runtime_open(o, 64, 64, &rt, &e);
    if (st) {
        free(text);
        return fail(NULL, &e);
    }
    if ((st = tokenize(rt.tok, text, len, CV_TOK_ADD_SPECIAL, &ids, &n_ids, &e))) goto out;
    if (n_ids < 2) {
        st = cv_errorf(&e, CV_EINVAL, "%s: fewer than 2 tokens", o->ppl_file);
        goto out;
    }
    const int32_t n_ctx = cv_kv_config_of(rt.kv)->max_seq_len;
    ppl_acc acc = {0};
    double t0 = cv_seconds();
    for (int32_t at = 0; n_ids - at >= 2; at += n_ctx) {
        const int32_t n = n_ids - at < n_ctx ? n_ids - at : n_ctx;
        acc.next = ids + at + 1;
        acc.at = 0;
        /* Rows 0..n-2 of the window each predict the next token. */
        cv_gen_params gp = {.n_predict = 0, .seq = 0, .all_logits = 1};
        cv_gen_callbacks cb = {.on_logits = ppl_logits, .ctx = &acc};
        cv_gen_stats gs;
        if ((st = cv_generate(rt.tp, rt.kv, ids + at, n - 1, &gp, &cb, &gs, &e))) goto out;
    }
    const double ppl = exp(acc.nll / (double)acc.n), dt = cv_seconds() - t0;
    if (o->json)
        printf("{\"perplexity\":%.6f,\"tokens\":%lld,\"tokens_per_s\":%.2f}\n", ppl,
               (long long)acc.n, per_s((double)acc.n, dt));
    else
        printf("perplexity %.4f over %lld tokens (%.1f tok/s)\n", ppl, (long long)acc.n,
               per_s((double)acc.n, dt));
out:
    free(ids);
    free(text);
    runtime_close(&rt);
    return st ? fail(NULL, &e) : 0;
}

static int (*const k_modes[])(const run_opts *) = {
    [MODE_INFO] = run_info,
    [MODE_TOKENIZE] = run_tokenize,
    [MODE_GENERATE] = run_generate,
    [MODE_PPL] = run_ppl,
};

int main(int argc, char **argv) {
    run_opts o;
    if (parse_args(argc, argv, &o) != 0) return 1;
    int rc = k_modes[o.mode](&o);
    if (fflush(stdout) != 0) {
        perror("corvid-run: stdout");
        return 1;
    }
    return rc;
}
