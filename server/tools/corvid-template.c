/* corvid-template: renders a chat template (a .jinja file, or a GGUF's
 * tokenizer.chat_template) with the interpreter the server uses, for checking a
 * model's template and for the reference tests against Python's jinja2.
 *
 *   corvid-template [--now EPOCH] [--spans] [--var NAME=JSON]... [--data NAME=JSON]... TEMPLATE
 *
 * TEMPLATE ending in .gguf: the file's tokenizer.chat_template. --var sets a variable
 * (JSON=@FILE reads it from FILE); --data sets one that is client data (its strings can
 * never be control tokens). The rendered text goes to stdout; with --spans, the data
 * spans go to stderr as "start len" lines. Exit 1 with the error on stderr when the
 * template fails or is refused, 2 for bad usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "jinja.h"

#define PROG "corvid-template"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *p = realloc(buf, cap);
            if (!p) break;
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: " PROG " [--now EPOCH] [--spans] [--var NAME=JSON]... [--data NAME=JSON]... TEMPLATE\n"
            "  TEMPLATE         a Jinja chat template file, or a .gguf (its tokenizer.chat_template)\n"
            "  --var NAME=JSON  a template variable (JSON=@FILE: read from FILE)\n"
            "  --data NAME=JSON a variable holding client data (messages, tools): its text\n"
            "                   is never read as control tokens\n"
            "  --now EPOCH      the time strftime_now formats (default: now)\n"
            "  --spans          print the data spans of the output on stderr (\"start len\")\n");
}

int main(int argc, char **argv) {
    cv_jinja_limits lim = cv_jinja_default_limits();
    bool spans = false;
    cv_jinja_var *vars = calloc((size_t)argc, sizeof *vars);
    char **owned = calloc((size_t)argc, sizeof *owned);
    size_t n = 0;
    int rc = 1;
    char *src = NULL;
    cv_gguf *g = NULL;
    cv_jinja *t = NULL;
    cv_jinja_out out = {0};
    cv_error err = {0};
    if (!vars || !owned) return 1;
    for (int i = 1; i < argc; i++)
        if (cv_cli_is_help(argv[i])) cv_cli_help(usage);
    static const struct option opts[] = {{"now", required_argument, NULL, 'n'},
                                         {"spans", no_argument, NULL, 's'},
                                         {"var", required_argument, NULL, 'v'},
                                         {"data", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        long now;
        char *eq;
        switch (c) {
        case 'n':
            if (cv_cli_int(PROG, "--now", optarg, 0, 1L << 40, &now) != 0) return CV_CLI_EXIT_USAGE;
            lim.now = (time_t)now;
            break;
        case 's': spans = true; break;
        case 'v':
        case 'd':
            if (!(eq = strchr(optarg, '=')) || eq == optarg)
                cv_cli_usage_error(PROG, usage, "--%s wants NAME=JSON, got \"%s\"", c == 'v' ? "var" : "data", optarg);
            *eq = 0;
            const char *json = eq + 1;
            if (*json == '@') {
                size_t len;
                if (!(owned[n] = read_file(json + 1, &len))) {
                    fprintf(stderr, PROG ": cannot read %s\n", json + 1);
                    goto done;
                }
                json = owned[n];
            }
            vars[n++] = (cv_jinja_var){optarg, json, c == 'd'};
            break;
        default: cv_cli_getopt_error(PROG, usage, c, argv);
        }
    }
    if (optind != argc - 1)
        cv_cli_usage_error(PROG, usage, optind >= argc ? "the template file is missing" : "one template file, not %d", argc - optind);
    const char *tpath = argv[optind];
    size_t len = strlen(tpath), slen = 0;
    const char *text;
    if (len > 5 && strcmp(tpath + len - 5, ".gguf") == 0) {
        if (cv_gguf_open(tpath, &g, &err) != CV_OK) goto fail;
        cv_str s = cv_gguf_get_str(g, "tokenizer.chat_template");
        if (!s.ptr) {
            fprintf(stderr, PROG ": %s has no tokenizer.chat_template\n", tpath);
            goto done;
        }
        text = s.ptr;
        slen = s.len;
    } else {
        if (!(src = read_file(tpath, &slen))) {
            fprintf(stderr, PROG ": cannot read %s\n", tpath);
            goto done;
        }
        text = src;
    }
    if (cv_jinja_parse(text, slen, &t, &err) != CV_OK) goto fail;
    if (cv_jinja_render(t, vars, n, &lim, &out, &err) != CV_OK) goto fail;
    fwrite(out.text, 1, out.len, stdout);
    if (spans)
        for (size_t i = 0; i < out.n_data; i++) fprintf(stderr, "%zu %zu\n", out.data[i].start, out.data[i].len);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, PROG ": %s\n", err.msg);
done:
    cv_jinja_out_free(&out);
    cv_jinja_free(t);
    if (g) cv_gguf_close(g);
    free(src);
    for (size_t i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(vars);
    return rc;
}
