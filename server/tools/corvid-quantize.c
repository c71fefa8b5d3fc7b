/* corvid-quantize: convert a GGUF model's weights to another type, or write a
 * random-weight model of a real shape (see server/quantize.h, server/synthetic.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "quantize.h"
#include "synthetic.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: corvid-quantize [--threads N] IN.gguf OUT.gguf TYPE\n"
            "       corvid-quantize --synthetic SHAPE --type TYPE [--vocab-from FILE.gguf] [--seed N]\n"
            "                       [--layers N] [--threads N] OUT.gguf\n"
            "       corvid-quantize --list-shapes\n"
            "TYPE: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, Q4_K_M (llama.cpp's mix); norms, biases and\n"
            "tensors whose rows do not divide into blocks stay F32, with a note\n"
            "  --synthetic SHAPE    write a random-weight model of a real shape (--list-shapes)\n"
            "  --type TYPE          the synthetic model's weight type\n"
            "  --vocab-from FILE    take the synthetic model's tokenizer from a GGUF file\n"
            "  --seed N             the synthetic weights' seed: the same bytes for a seed (default 0)\n"
            "  --layers N           the synthetic model keeps only its first N layers (1..4096)\n"
            "  --threads N          quantizing threads, 0..1024 (default 0: one per core)\n"
            "  --list-shapes        the synthetic shapes and their dimensions\n"
            "  -h, --help           this text\n"
            "Errors print one line on stderr and exit 1; a wrong command line (or TYPE, SHAPE) exits 2.\n");
}

#define USAGE_ERROR(...) cv_cli_usage_error("corvid-quantize", usage, __VA_ARGS__)

static void list_shapes(void) {
    printf("%-16s %-8s %6s %6s %5s %4s %6s %7s %6s\n", "shape", "arch", "dim", "layers", "heads", "kv", "ffn",
           "vocab", "ctx");
    for (int i = 0; cv_synth_at(i); i++) {
        const cv_synth_shape *s = cv_synth_at(i);
        printf("%-16s %-8s %6u %6u %5u %4u %6u %7u %6u%s%s", s->name, s->arch, s->n_embd, s->n_layer, s->n_head,
               s->n_head_kv, s->n_ff, s->n_vocab, s->n_ctx, s->qkv_bias ? " (qkv bias)" : "",
               s->tied ? " (tied embeddings)" : "");
        if (s->head_dim) printf(" (head size %u)", s->head_dim);
        if (s->n_expert) printf(" (%u experts of %u, %u per token)", s->n_expert, s->n_ff_exp, s->n_expert_used);
        putchar('\n');
    }
}

static int parse_u64(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    const unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') {
        fprintf(stderr, "corvid-quantize: %s wants a non-negative integer, got '%s'\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv) {
    const char *shape = NULL, *type = NULL, *vocab = NULL, *pos[3];
    uint64_t seed = 0, threads = 0, layers = 0;
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_value = i + 1 < argc;
        if (cv_cli_is_help(a)) {
            cv_cli_help(usage);
        } else if (!strcmp(a, "--list-shapes")) {
            list_shapes();
            return 0;
        } else if (!strcmp(a, "--synthetic") && has_value) {
            shape = argv[++i];
        } else if (!strcmp(a, "--type") && has_value) {
            type = argv[++i];
        } else if (!strcmp(a, "--vocab-from") && has_value) {
            vocab = argv[++i];
        } else if (!strcmp(a, "--seed") && has_value) {
            if (parse_u64(a, argv[++i], &seed)) return 2;
        } else if (!strcmp(a, "--layers") && has_value) {
            if (parse_u64(a, argv[++i], &layers) || layers < 1 || layers > 4096) {
                fprintf(stderr, "corvid-quantize: --layers wants 1..4096\n");
                return 2;
            }
        } else if (!strcmp(a, "--threads") && has_value) {
            if (parse_u64(a, argv[++i], &threads) || threads > 1024) {
                fprintf(stderr, "corvid-quantize: --threads wants 0..1024\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            static const char *const valued[] = {"--synthetic", "--type", "--vocab-from", "--seed", "--layers", "--threads"};
            for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
                if (!strcmp(a, valued[k])) USAGE_ERROR("%s needs a value", a);
            USAGE_ERROR("unknown option %s", a);
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            USAGE_ERROR("unexpected argument '%s'", a);
        }
    }
    cv_error err = {0};
    cv_qrecipe r;
    if (shape) {
        const cv_synth_shape *s = cv_synth_find(shape);
        if (!s) {
            fprintf(stderr, "corvid-quantize: unknown shape '%s' (--list-shapes lists them)\n", shape);
            return 2;
        }
        if (!type) USAGE_ERROR("--synthetic needs --type TYPE");
        if (n_pos != 1) USAGE_ERROR("--synthetic needs one OUT.gguf");
        if (cv_qrecipe_parse(type, &r, &err)) {
            fprintf(stderr, "corvid-quantize: %s\n", err.msg);
            return 2;
        }
        const cv_synth_opts o = {.recipe = r, .seed = seed, .vocab_from = vocab, .n_threads = (int)threads,
                                 .log = stderr, .n_layers = (uint32_t)layers};
        if (cv_synth_write(s, &o, pos[0], &err)) {
            fprintf(stderr, "corvid-quantize: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (type || vocab || layers) USAGE_ERROR("--type, --vocab-from and --layers go with --synthetic");
    if (n_pos != 3) USAGE_ERROR("IN.gguf, OUT.gguf and TYPE are required");
    if (cv_qrecipe_parse(pos[2], &r, &err)) {
        fprintf(stderr, "corvid-quantize: %s\n", err.msg);
        return 2;
    }
    const cv_quantize_opts o = {(int)threads, stderr};
    if (cv_quantize_model(pos[0], pos[1], r, &o, &err)) {
        fprintf(stderr, "corvid-quantize: %s\n", err.msg);
        return 1;
    }
    return 0;
}
