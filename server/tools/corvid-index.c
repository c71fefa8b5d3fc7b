/* corvid-index: builds, updates and queries a corvid RAG knowledge base (BM25).
 *
 *   corvid-index build INPUT... -o INDEX [--chunk-chars N] [--overlap N] [--k1 X] [--b X]
 *                      [--stopwords FILE | --no-stopwords] [--tokenizer MODEL.gguf --chunk-tokens N]
 *   corvid-index add INDEX INPUT... [--tokenizer MODEL.gguf --chunk-tokens N]
 *   corvid-index query INDEX "question" [-k 5] [--json] [--chunks] [--k1 X] [--b X]
 *   corvid-index info INDEX
 *   corvid-index sources CONFIG "question" [--budget-ms N] [--audit FILE]
 *
 * Errors print one line and exit 1; a wrong command line exits 2 with the usage (cli.h).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "pii.h"
#include "rag_index.h"
#include "rag_ingest.h"
#include "rag_sources.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fputs("usage: corvid-index build INPUT... -o INDEX [--chunk-chars N] [--overlap N] [--k1 X] [--b X]\n"
          "                          [--stopwords FILE | --no-stopwords]\n"
          "                          [--tokenizer MODEL.gguf --chunk-tokens N]\n"
          "       corvid-index add INDEX INPUT... [--tokenizer MODEL.gguf --chunk-tokens N]\n"
          "       corvid-index query INDEX \"question\" [-k 5] [--json] [--chunks] [--k1 X] [--b X]\n"
          "       corvid-index info INDEX\n"
          "       corvid-index sources CONFIG \"question\" [--budget-ms N] [--audit FILE]\n"
          "inputs: .txt, .md, .jsonl (fields id, title, text, url)\n"
          "  -o, --output INDEX   the index file build writes\n"
          "  --chunk-chars N      characters per chunk (16..1000000)\n"
          "  --overlap N          characters shared by neighbouring chunks\n"
          "  --k1 X  --b X        BM25 parameters (build: stored in the index; query: override)\n"
          "  --stopwords FILE     one stopword per line ('#' comments); --no-stopwords: none\n"
          "  --tokenizer MODEL.gguf --chunk-tokens N\n"
          "                       also limit chunks to N tokens of that model's tokenizer\n"
          "  -k N                 hits returned by query (default 5)\n"
          "  --json               query: one JSON object\n"
          "  --chunks             query: rank chunks and print their text, not documents\n"
          "  --budget-ms N        sources: time budget of the live fetches\n"
          "  --audit FILE         sources: append the audit lines to FILE (default stderr)\n"
          "  -h, --help           this text\n"
          "Errors print one line on stderr and exit 1; a wrong command line exits 2.\n",
          f);
}

#define USAGE_ERROR(...) cv_cli_usage_error("corvid-index", usage, __VA_ARGS__)

static int fail(const cv_error *e) {
    fprintf(stderr, "corvid-index: %s\n", e->msg);
    return 1;
}

typedef struct args {
    const char *output, *stopwords, *audit, *tokenizer;
    uint32_t chunk_tokens;
    unsigned budget_ms;
    int no_stopwords, json, chunks;
    long k;
    cv_rag_build_opts build;
    double k1, b;
    char **pos;
    int n_pos;
} args;

static int parse_num(const char *s, double lo, double hi, const char *name, double *out) {
    return cv_cli_number("corvid-index", name, s, lo, hi, out);
}

static int parse_args(int argc, char **argv, args *a) {
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"chunk-chars", required_argument, 0, 'c'},
        {"overlap", required_argument, 0, 'O'}, {"k1", required_argument, 0, '1'},
        {"b", required_argument, 0, 'b'},       {"stopwords", required_argument, 0, 's'},
        {"no-stopwords", no_argument, 0, 'S'},   {"json", no_argument, 0, 'j'},
        {"chunks", no_argument, 0, 'C'},         {"help", no_argument, 0, 'h'},
        {"budget-ms", required_argument, 0, 'B'}, {"audit", required_argument, 0, 'A'},
        {"tokenizer", required_argument, 0, 'T'}, {"chunk-tokens", required_argument, 0, 't'},
        {0, 0, 0, 0}};
    cv_rag_build_opts_default(&a->build);
    a->k = 5;
    a->k1 = a->b = -1;
    int c;
    double v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': a->output = optarg; break;
        case 'c': if (parse_num(optarg, 16, 1000000, "--chunk-chars", &v)) return -1;
                  a->build.chunk_chars = (uint32_t)v; break;
        case 'O': if (parse_num(optarg, 0, 500000, "--overlap", &v)) return -1;
                  a->build.overlap_chars = (uint32_t)v; break;
        case '1': if (parse_num(optarg, 0, 10, "--k1", &a->k1)) return -1;
                  a->build.k1 = a->k1; break;
        case 'b': if (parse_num(optarg, 0, 1, "--b", &a->b)) return -1;
                  a->build.b = a->b; break;
        case 'k': if (parse_num(optarg, 1, 1000, "-k", &v)) return -1;
                  a->k = (long)v; break;
        case 's': a->stopwords = optarg; break;
        case 'S': a->no_stopwords = 1; break;
        case 'j': a->json = 1; break;
        case 'C': a->chunks = 1; break;
        case 'B': if (parse_num(optarg, 1, 60000, "--budget-ms", &v)) return -1;
                  a->budget_ms = (unsigned)v; break;
        case 'A': a->audit = optarg; break;
        case 'T': a->tokenizer = optarg; break;
        case 't': if (parse_num(optarg, 8, 1000000, "--chunk-tokens", &v)) return -1;
                  a->chunk_tokens = (uint32_t)v; break;
        case 'h': cv_cli_help(usage);
        default: cv_cli_getopt_error("corvid-index", usage, c, argv);
        }
    }
    a->pos = argv + optind;
    a->n_pos = argc - optind;
    return 0;
}

/* One stopword per line; '#' starts a comment line. */
static cv_status load_stopwords(const char *path, cv_rag_analyzer **out, cv_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return cv_errorf(err, CV_ENOTFOUND, "stopword file %s: cannot open", path);
    char **words = NULL, *line = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    ssize_t len;
    cv_status st = CV_OK;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **w = realloc(words, cap * sizeof *w);
            if (!w) { st = cv_errorf(err, CV_ENOMEM, "out of memory"); break; }
            words = w;
        }
        if (!(words[n] = strdup(line))) { st = cv_errorf(err, CV_ENOMEM, "out of memory"); break; }
        n++;
    }
    fclose(f);
    free(line);
    if (!st) st = cv_rag_analyzer_create((const char *const *)(words ? words : (char *[]){0}), n,
                                         out, err);
    for (size_t i = 0; i < n; i++) free(words[i]);
    free(words);
    return st;
}

static size_t count_tokens(void *user, const char *text, size_t len) {
    size_t n = 0;
    cv_tok_encode(user, text, len, 0, NULL, 0, &n, NULL); /* CV_ERANGE: n is the count */
    return n;
}

/* With --tokenizer and --chunk-tokens, chunks are also limited in that model's tokens. */
static int setup_tokens(args *a, cv_rag_build_opts *o, cv_tok **tok, cv_error *e) {
    if (!a->tokenizer != !a->chunk_tokens) {
        cv_errorf(e, CV_EINVAL, "--tokenizer and --chunk-tokens go together");
        return -1;
    }
    if (!a->tokenizer) return 0;
    cv_gguf *g = NULL;
    cv_status st = cv_gguf_open(a->tokenizer, &g, e);
    if (!st) st = cv_tok_load(g, tok, e);
    cv_gguf_close(g);
    if (st) return -1;
    o->measure = count_tokens;
    o->measure_user = *tok;
    o->max_units = a->chunk_tokens;
    return 0;
}

static int ingest_all(cv_rag_builder *b, char **paths, int n, cv_error *e) {
    for (int i = 0; i < n; i++) {
        if (cv_rag_ingest_file(b, paths[i], NULL, e)) return -1;
    }
    return 0;
}

static int cmd_build(args *a) {
    cv_error e = {0};
    cv_rag_analyzer *an = NULL;
    cv_rag_builder *b = NULL;
    cv_tok *tok = NULL;
    int rc = 1;
    if (!a->output) USAGE_ERROR("build needs -o INDEX");
    if (a->n_pos < 1) USAGE_ERROR("build needs at least one INPUT");
    if (a->stopwords ? load_stopwords(a->stopwords, &an, &e)
                     : cv_rag_analyzer_create(a->no_stopwords ? (const char *[]){""} : NULL, 0, &an, &e))
        return fail(&e);
    if (setup_tokens(a, &a->build, &tok, &e) || cv_rag_builder_create(&a->build, an, &b, &e) ||
        ingest_all(b, a->pos, a->n_pos, &e) ||
        cv_rag_builder_write(b, a->output, &e)) {
        fail(&e);
        goto done;
    }
    fprintf(stderr, "corvid-index: %s: %zu documents, %zu chunks\n", a->output,
            cv_rag_builder_n_docs(b), cv_rag_builder_n_chunks(b));
    rc = 0;
done:
    cv_rag_builder_free(b);
    cv_rag_analyzer_free(an);
    cv_tok_free(tok);
    return rc;
}

static int cmd_add(args *a) {
    cv_error e = {0};
    cv_rag_index *ix = NULL;
    cv_rag_builder *b = NULL;
    if (a->n_pos < 2) USAGE_ERROR("add needs INDEX and at least one INPUT");
    if (cv_rag_index_open_verified(a->pos[0], &ix, &e)) return fail(&e);
    cv_rag_index_info info;
    cv_rag_index_info_get(ix, &info);
    cv_rag_build_opts o;
    cv_rag_build_opts_default(&o);
    o.chunk_chars = info.chunk_chars;
    o.overlap_chars = info.overlap_chars;
    o.k1 = info.k1;
    o.b = info.b;
    cv_tok *tok = NULL;
    int rc = 1;
    if (setup_tokens(a, &o, &tok, &e) || cv_rag_builder_create(&o, cv_rag_index_analyzer(ix), &b, &e) ||
        cv_rag_index_copy_into(ix, b, &e) || ingest_all(b, a->pos + 1, a->n_pos - 1, &e) ||
        cv_rag_builder_write(b, a->pos[0], &e)) {
        fail(&e);
    } else {
        fprintf(stderr, "corvid-index: %s: %zu documents, %zu chunks\n", a->pos[0],
                cv_rag_builder_n_docs(b), cv_rag_builder_n_chunks(b));
        rc = 0;
    }
    cv_rag_builder_free(b);
    cv_rag_index_close(ix);
    cv_tok_free(tok);
    return rc;
}

static int print_json(const cv_rag_index *ix, const cv_rag_hit *hits, size_t n, int chunks) {
    json_t *root = json_object(), *arr = json_array();
    int rc = 1;
    if (!root || !arr || json_object_set_new(root, "hits", arr)) goto done;
    for (size_t i = 0; i < n; i++) {
        cv_rag_doc d;
        cv_rag_index_doc(ix, hits[i].doc, &d);
        json_t *h = json_object();
        if (!h || json_array_append_new(arr, h) ||
            json_object_set_new(h, "id", json_stringn(d.id.ptr, d.id.len)) ||
            json_object_set_new(h, "title", json_stringn(d.title.ptr, d.title.len)) ||
            json_object_set_new(h, "url", json_stringn(d.url.ptr, d.url.len)) ||
            json_object_set_new(h, "score", json_real(hits[i].score)))
            goto done;
        if (chunks) {
            cv_rag_chunk c;
            cv_rag_index_chunk(ix, hits[i].chunk, &c);
            if (json_object_set_new(h, "chunk", json_integer(c.ordinal)) ||
                json_object_set_new(h, "text", json_stringn(c.text.ptr, c.text.len)))
                goto done;
        }
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (s) {
        puts(s);
        free(s);
        rc = 0;
    }
done:
    json_decref(root ? root : arr);
    if (rc) fputs("corvid-index: cannot encode the hits as JSON (out of memory or invalid UTF-8 in the index)\n", stderr);
    return rc;
}

static int cmd_query(args *a) {
    cv_error e = {0};
    cv_rag_index *ix = NULL;
    cv_rag_searcher *s = NULL;
    cv_rag_hit hits[1000];
    size_t n = 0;
    if (a->n_pos != 2) USAGE_ERROR("query needs INDEX and one question");
    if (cv_rag_index_open_verified(a->pos[0], &ix, &e)) return fail(&e);
    cv_rag_search_opts so = {a->k1, a->b, a->chunks ? 0 : 1};
    int rc = 1;
    if (cv_rag_searcher_create(ix, &s, &e) ||
        cv_rag_search(s, &so, a->pos[1], strlen(a->pos[1]), hits, (size_t)a->k, &n, &e)) {
        fail(&e);
    } else if (a->json) {
        rc = print_json(ix, hits, n, a->chunks);
    } else {
        for (size_t i = 0; i < n; i++) {
            cv_rag_doc d;
            cv_rag_chunk c;
            cv_rag_index_doc(ix, hits[i].doc, &d);
            cv_rag_index_chunk(ix, hits[i].chunk, &c);
            printf("%zu. %.4f  %.*s  %.*s  (chunk %u)\n", i + 1, hits[i].score, (int)d.id.len,
                   d.id.ptr, (int)d.title.len, d.title.ptr, c.ordinal);
            if (a->chunks) printf("   %.*s\n", (int)(c.text.len > 300 ? 300 : c.text.len), c.text.ptr);
        }
        rc = 0;
    }
    cv_rag_searcher_free(s);
    cv_rag_index_close(ix);
    return rc;
}

static int cmd_info(args *a) {
    cv_error e = {0};
    cv_rag_index *ix = NULL;
    if (a->n_pos != 1) USAGE_ERROR("info needs one INDEX");
    if (cv_rag_index_open_verified(a->pos[0], &ix, &e)) return fail(&e);
    cv_rag_index_info i;
    cv_rag_index_info_get(ix, &i);
    printf("documents %u\nchunks %u\nterms %u\nchunk_chars %u\noverlap_chars %u\nk1 %g\nb %g\n"
           "avg_chunk_terms %.1f\n",
           i.n_docs, i.n_chunks, i.n_terms, i.chunk_chars, i.overlap_chars, i.k1, i.b,
           i.avg_chunk_terms);
    cv_rag_index_close(ix);
    return 0;
}

static void audit_line(void *user, const char *line) {
    fprintf(user, "%s\n", line);
    fflush(user);
}

static int cmd_sources(args *a) {
    cv_error e = {0};
    if (a->n_pos != 2) USAGE_ERROR("sources needs CONFIG and one question");
    FILE *f = fopen(a->pos[0], "rb"), *audit = NULL;
    char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    if (!f || n == sizeof buf) {
        fprintf(stderr, "corvid-index: %s: cannot read (or larger than 64 KiB)\n", a->pos[0]);
        return 1;
    }
    if (a->audit && !(audit = fopen(a->audit, "a"))) {
        fprintf(stderr, "corvid-index: cannot open audit file %s\n", a->audit);
        return 1;
    }
    cv_rag_sources *src = NULL;
    cv_pii *pii = NULL;
    cv_rag_source_hits hits = {0};
    int rc = 1;
    if (cv_rag_sources_parse(buf, n, &src, &e) || cv_pii_create(CV_PII_PLACEHOLDER, &pii, &e) ||
        cv_rag_sources_fetch(src, pii, a->pos[1], a->budget_ms, audit_line, audit ? audit : stderr, NULL,
                             &hits, &e)) {
        fail(&e);
        goto done;
    }
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "results", arr);
    for (size_t i = 0; i < hits.n; i++) {
        const cv_rag_source_hit *h = &hits.v[i];
        json_t *o = json_pack("{s:s, s:s?, s:s?, s:s}", "source", h->source, "title", h->title,
                              "url", h->link, "text", h->text);
        if (o) json_array_append_new(arr, o); /* jansson rejects invalid UTF-8: dropped */
    }
    char *s = json_dumps(root, JSON_COMPACT);
    if (s) puts(s);
    free(s);
    json_decref(root);
    rc = 0;
done:
    cv_rag_source_hits_free(&hits);
    cv_rag_sources_free(src);
    cv_pii_free(pii);
    if (audit) fclose(audit);
    return rc;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*run)(args *);
    } cmds[] = {{"build", cmd_build}, {"add", cmd_add}, {"query", cmd_query}, {"info", cmd_info},
                {"sources", cmd_sources}};
    if (argc < 2) USAGE_ERROR("a command is required");
    const char *cmd = argv[1];
    if (cv_cli_is_help(cmd) || strcmp(cmd, "help") == 0) cv_cli_help(usage);
    if (cmd[0] == '-') USAGE_ERROR("unknown option %s (the command comes first)", cmd);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(cmd, cmds[i].name) != 0) continue;
        args a = {0};
        if (parse_args(argc - 1, argv + 1, &a)) return 2;
        return cmds[i].run(&a);
    }
    USAGE_ERROR("unknown command '%s'", cmd);
}
