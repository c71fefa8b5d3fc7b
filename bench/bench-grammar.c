/* bench-grammar: the cost of constrained decoding on a real model's vocabulary, off the
 * decode loop: schema compile time, token-mask time per step (cold: a new automaton;
 * precomputed: a new automaton after cv_gdfa_precompute, as the engine compiles one;
 * warm: a second request of the same grammar, which the engine's cache serves), the
 * precompute's time and masks, and the sampler with and without a mask.
 *
 *   bench-grammar -m MODEL [--runs R] (--schema FILE --text FILE)...
 *
 * Each text (a JSON document valid for its schema, e.g. a model's output) is tokenized
 * with the model's tokenizer and replayed through a matcher: mask, then accept, per
 * token, as the engine does. compile_ms: JSON schema -> GBNF -> grammar -> automaton
 * start, median of R (default 21). Sampler: temperature 1 with the server's defaults
 * over the model's vocabulary, random logits, median of R x 10 draws. One JSON object
 * on stdout.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "grammar.h"
#include "grammar_match.h"
#include "json_schema.h"
#include "sampler.h"
#include "timing.h"
#include "tokenizer.h"

#define MAX_PAIRS 16

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = 0, *len = (size_t)n;
    return s;
}

static void die(const char *what, const cv_error *e) {
    fprintf(stderr, "bench-grammar: %s: %s\n", what, e ? e->msg : "failed");
    exit(1);
}

/* One replay of ids through a new matcher on d: per-token mask times into ms. */
static void replay(cv_gdfa *d, const int32_t *ids, size_t n, double *ms) {
    cv_gmatch *m;
    cv_error e;
    if (cv_gmatch_start(d, &m, &e) != CV_OK) die("matcher", &e);
    for (size_t i = 0; i < n; i++) {
        const uint64_t *mask;
        double t0 = cv_seconds();
        if (cv_gmatch_mask(m, &mask, &e) != CV_OK) die("mask", &e);
        ms[i] = (cv_seconds() - t0) * 1e3;
        if (!(mask[ids[i] >> 6] >> (ids[i] & 63) & 1) || cv_gmatch_accept_token(m, ids[i], &e) != CV_OK)
            die("the text does not match its schema at a token", NULL);
    }
    if (!cv_gmatch_accepting(m)) die("the text is incomplete for its schema", NULL);
    cv_gmatch_free(m);
}

static json_t *stats(double *ms, size_t n) {
    double total = 0, max = 0;
    for (size_t i = 0; i < n; i++) total += ms[i], max = ms[i] > max ? ms[i] : max;
    return json_pack("{s:f,s:f,s:f}", "median", median(ms, n), "max", max, "total", total);
}

static void usage(FILE *out) {
    fprintf(out, "usage: bench-grammar -m MODEL [--runs R] (--schema FILE --text FILE)...\n"
                 "Replays each text through its schema's token masks on MODEL's vocabulary and\n"
                 "prints one JSON object: schema compile time, cold and warm mask cost per token.\n"
                 "  -m MODEL        GGUF file whose vocabulary the masks cover\n"
                 "  --runs R        timed repetitions, medians reported (default 21)\n"
                 "  --schema FILE   a JSON schema, paired with the next --text\n"
                 "  --text FILE     an answer valid for its schema\n"
                 "  -h, --help      this text\n");
}

int main(int argc, char **argv) {
    const char *model = NULL, *schemas[MAX_PAIRS], *texts[MAX_PAIRS];
    int n_schemas = 0, n_texts = 0;
    long runs = 21;
    static const struct option opts[] = {{"runs", required_argument, 0, 'r'}, {"schema", required_argument, 0, 's'},
                                          {"text", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1;) {
        if (c == 'm') model = optarg;
        else if (c == 'h') cv_cli_help(usage);
        else if (c == 'r') {
            if (cv_cli_int("bench-grammar", "--runs", optarg, 1, 10000, &runs)) return CV_CLI_EXIT_USAGE;
        } else if (c == 's' && n_schemas < MAX_PAIRS) schemas[n_schemas++] = optarg;
        else if (c == 't' && n_texts < MAX_PAIRS) texts[n_texts++] = optarg;
        else if (c == 's' || c == 't') cv_cli_usage_error("bench-grammar", usage, "at most %d schema/text pairs", MAX_PAIRS);
        else cv_cli_getopt_error("bench-grammar", usage, c, argv);
    }
    if (optind < argc) cv_cli_usage_error("bench-grammar", usage, "unexpected argument '%s'", argv[optind]);
    if (!model) cv_cli_usage_error("bench-grammar", usage, "-m MODEL is required");
    if (n_schemas != n_texts) cv_cli_usage_error("bench-grammar", usage, "each --schema needs its --text");
    cv_error e;
    cv_gguf *g;
    cv_tok *tok;
    if (cv_gguf_open(model, &g, &e) != CV_OK || cv_tok_load(g, &tok, &e) != CV_OK) die(model, &e);
    int32_t nv = cv_tok_n_vocab(tok);
    const char **pieces = malloc((size_t)nv * sizeof *pieces);
    size_t *lens = malloc((size_t)nv * sizeof *lens);
    uint8_t *ends = malloc((size_t)nv);
    if (!pieces || !lens || !ends) die("out of memory", NULL);
    for (int32_t i = 0; i < nv; i++) {
        if (cv_tok_piece(tok, i, 0, &pieces[i], &lens[i], &e) != CV_OK) die("token piece", &e);
        ends[i] = (uint8_t)(cv_tok_is_eog(tok, i) != 0);
    }
    double t0 = cv_seconds();
    cv_gvocab *v;
    if (cv_gvocab_new(nv, pieces, lens, ends, NULL, NULL, &v, &e) != CV_OK) die("vocabulary", &e);
    double vocab_ms = (cv_seconds() - t0) * 1e3;

    json_t *out = json_pack("{s:s,s:i,s:f,s:[]}", "model", model, "n_vocab", nv, "vocab_build_ms", vocab_ms, "schemas");
    double *times = malloc(sizeof(double) * (size_t)runs * 10);
    for (int k = 0; k < n_schemas; k++) {
        size_t slen, tlen;
        char *schema = slurp(schemas[k], &slen), *text = slurp(texts[k], &tlen);
        if (!schema || !text) die(schema ? texts[k] : schemas[k], NULL);
        while (tlen && strchr(" \t\r\n", text[tlen - 1])) tlen--; /* a file's final newline */
        char *gbnf = NULL;
        cv_gdfa *d = NULL;
        for (int r = 0; r < runs; r++) {
            free(gbnf);
            cv_gdfa_unref(d);
            cv_grammar *gr;
            double c0 = cv_seconds();
            if (cv_json_schema_gbnf_text(schema, slen, NULL, &gbnf, &e) != CV_OK ||
                cv_grammar_parse(gbnf, strlen(gbnf), &gr, &e) != CV_OK || cv_gdfa_new(gr, v, &d, &e) != CV_OK)
                die(schemas[k], &e);
            times[r] = (cv_seconds() - c0) * 1e3;
        }
        double compile_ms = median(times, (size_t)runs);
        size_t n_ids;
        int32_t *ids = malloc(sizeof(int32_t) * CV_TOK_MAX_IDS(tlen));
        if (!ids || cv_tok_encode(tok, text, tlen, 0, ids, CV_TOK_MAX_IDS(tlen), &n_ids, &e) != CV_OK)
            die("tokenize", &e);
        double *cold = malloc(sizeof(double) * n_ids), *warm = malloc(sizeof(double) * n_ids);
        double *pre = malloc(sizeof(double) * n_ids);
        replay(d, ids, n_ids, cold);
        replay(d, ids, n_ids, warm);
        cv_gmatch *m;
        cv_gmatch_stats st, pst;
        if (cv_gmatch_start(d, &m, &e) != CV_OK) die("matcher", &e);
        cv_gmatch_get_stats(m, &st);
        cv_gmatch_free(m);
        /* as the engine builds one: compiled, then precomputed, then replayed */
        cv_gdfa *dp;
        cv_grammar *gr;
        if (cv_grammar_parse(gbnf, strlen(gbnf), &gr, &e) != CV_OK || cv_gdfa_new(gr, v, &dp, &e) != CV_OK)
            die(schemas[k], &e);
        double p0 = cv_seconds();
        if (cv_gdfa_precompute(dp, CV_GDFA_PRECOMPUTE_MASKS, CV_GDFA_PRECOMPUTE_SECONDS, CV_GDFA_PRECOMPUTE_CHEAP,
                               &e) != CV_OK)
            die("precompute", &e);
        double precompute_ms = (cv_seconds() - p0) * 1e3;
        if (cv_gmatch_start(dp, &m, &e) != CV_OK) die("matcher", &e);
        cv_gmatch_get_stats(m, &pst);
        cv_gmatch_free(m);
        replay(dp, ids, n_ids, pre);
        if (cv_gmatch_start(dp, &m, &e) != CV_OK) die("matcher", &e);
        cv_gmatch_stats after;
        cv_gmatch_get_stats(m, &after);
        cv_gmatch_free(m);
        cv_gdfa_unref(dp);
        json_array_append_new(json_object_get(out, "schemas"),
                              json_pack("{s:s,s:f,s:i,s:i,s:o,s:o,s:o,s:i,s:i,s:f,s:i,s:i}", "schema", schemas[k],
                                        "compile_ms", compile_ms, "gbnf_bytes", (int)strlen(gbnf), "tokens",
                                        (int)n_ids, "mask_cold_ms", stats(cold, n_ids), "mask_precomputed_ms",
                                        stats(pre, n_ids), "mask_warm_ms", stats(warm, n_ids), "masks_computed",
                                        (int)st.masks_computed, "configurations", (int)st.configs, "precompute_ms",
                                        precompute_ms, "masks_precomputed", (int)pst.masks_precomputed,
                                        "masks_missed_after_precompute",
                                        (int)(after.masks_computed - pst.masks_computed)));
        free(cold);
        free(warm);
        free(pre);
        free(ids);
        free(gbnf);
        cv_gdfa_unref(d);
        free(schema);
        free(text);
    }

    /* The sampler: a full-vocabulary draw with and without a mask that allows half. */
    float *logits = malloc(sizeof(float) * (size_t)nv);
    uint64_t *half = calloc(((size_t)nv + 63) / 64, sizeof *half);
    for (int32_t i = 0; i < nv; i++) {
        logits[i] = (float)((i * 2654435761u) % 2000) / 100.0f - 10.0f;
        if (i % 2 == 0) half[i >> 6] |= 1ULL << (i & 63);
    }
    cv_sampler_params sp;
    cv_sampler_params_default(&sp);
    sp.temperature = 1.0f;
    cv_sampler *s;
    if (cv_sampler_new(&sp, nv, &s, &e) != CV_OK) die("sampler", &e);
    double plain[2];
    for (int masked = 0; masked < 2; masked++) {
        for (int r = 0; r < runs * 10; r++) {
            double c0 = cv_seconds();
            cv_sampler_sample_masked(s, logits, masked ? half : NULL, NULL);
            times[r] = (cv_seconds() - c0) * 1e3;
        }
        plain[masked] = median(times, (size_t)runs * 10);
    }
    json_object_set_new(out, "sample_ms", json_pack("{s:f,s:f}", "unmasked", plain[0], "masked", plain[1]));
    cv_sampler_free(s);
    char *js = json_dumps(out, JSON_INDENT(2));
    puts(js);
    free(js);
    json_decref(out);
    free(logits);
    free(half);
    free(times);
    free(pieces);
    free(lens);
    free(ends);
    cv_gvocab_free(v);
    cv_tok_free(tok);
    cv_gguf_close(g);
    return 0;
}
