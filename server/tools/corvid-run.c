/* corvid-run: run one model from the command line.
 *
 *   corvid-run -m MODEL --info                 what the file holds
 *   corvid-run -m MODEL --tokenize TEXT [--parse-special]
 *                                              token ids, space-separated
 *
 * Options are parsed into one struct and each mode is one function (see the
 * k_modes table): a new mode adds a flag, a field and a function. Vocabulary-only
 * GGUF files (no tensors) are accepted. Any error prints one line on stderr and
 * exits with status 1.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"

typedef enum run_mode { MODE_NONE = 0, MODE_INFO, MODE_TOKENIZE } run_mode;

typedef struct run_opts {
    const char *model;
    run_mode mode;
    const char *text;   /* --tokenize */
    int parse_special;  /* match control tokens written in TEXT */
} run_opts;

static void usage(FILE *f) {
    fputs("usage:\n"
          "  corvid-run -m MODEL --info\n"
          "  corvid-run -m MODEL --tokenize TEXT [--parse-special]\n"
          "options:\n"
          "  -m, --model PATH     GGUF file (a vocabulary-only file is enough for --tokenize)\n"
          "  --info               architecture, hyperparameters, tensors, tokenizer, template\n"
          "  --tokenize TEXT      print TEXT's token ids on one line (BOS when the model adds it)\n"
          "  --parse-special      treat control-token text in TEXT (<s>, <|im_end|>) as tokens\n",
          f);
}

/* what: context for the message, or NULL when the message names it already. */
static int fail(const char *what, const cv_error *e) {
    if (what) fprintf(stderr, "corvid-run: %s: %s\n", what, e->msg);
    else fprintf(stderr, "corvid-run: %s\n", e->msg);
    return 1;
}

static int set_mode(run_opts *o, run_mode m) {
    if (o->mode != MODE_NONE && o->mode != m) {
        fputs("corvid-run: choose one mode (--info or --tokenize)\n", stderr);
        return -1;
    }
    o->mode = m;
    return 0;
}

static int parse_args(int argc, char **argv, run_opts *o) {
    enum { OPT_INFO = 256, OPT_TOKENIZE, OPT_PARSE_SPECIAL };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"info", no_argument, 0, OPT_INFO},
        {"tokenize", required_argument, 0, OPT_TOKENIZE},
        {"parse-special", no_argument, 0, OPT_PARSE_SPECIAL},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_INFO: if (set_mode(o, MODE_INFO)) return -1; break;
        case OPT_TOKENIZE:
            if (set_mode(o, MODE_TOKENIZE)) return -1;
            o->text = optarg;
            break;
        case OPT_PARSE_SPECIAL: o->parse_special = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "corvid-run: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->model || o->mode == MODE_NONE) {
        usage(stderr);
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
    int32_t *ids = malloc((len + 3) * sizeof *ids);
    if (!ids) {
        cv_tok_free(t);
        fputs("corvid-run: out of memory\n", stderr);
        return 1;
    }
    unsigned flags = CV_TOK_ADD_SPECIAL | (o->parse_special ? CV_TOK_PARSE_SPECIAL : 0);
    st = cv_tok_encode(t, o->text, len, flags, ids, len + 3, &n, &e);
    if (st == CV_OK) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    cv_tok_free(t);
    return st == CV_OK ? 0 : fail("tokenize", &e);
}

static int (*const k_modes[])(const run_opts *) = {
    [MODE_INFO] = run_info,
    [MODE_TOKENIZE] = run_tokenize,
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
