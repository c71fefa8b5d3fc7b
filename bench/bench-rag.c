/* bench-rag: BM25 knowledge-base benchmark on the documentation installed on the
 * machine. Prints one JSON object.
 *
 * Corpus: English man pages (/usr/share/man/man[1-8], roff markup stripped), README /
 * *.txt / *.md files under /usr/share/doc (plain or .gz), Chinese man pages
 * (/usr/share/man/zh_CN) and the Chinese fortunes of Debian's fortunes-zh (each entry a
 * document). Measures: index build throughput (MB/s of text, chunks/s; median of
 * --runs builds), open time (with and without CRC verification), query latency p50/p99
 * (median over passes of a query set: the labeled questions plus queries sampled from
 * the corpus), recall@5 on the labeled questions (English and Chinese), and the
 * speed-up over a peer: a linear scan of all chunk text for the query words; and the
 * latency live sources add to a request: three sources on a local HTTP server
 * (libmicrohttpd, immediate 2 KB answers) fetched with masking, curl multi and JSON
 * extraction, next to the index's own latency.
 *
 *   bench-rag [--questions tests/data/rag/bench-questions.jsonl] [--runs 3]
 *             [--dump-corpus FILE.jsonl] [--keep-index FILE]
 */
#include <dirent.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"
#include "pii.h"
#include "rag_index.h"
#include "rag_sources.h"
#include "timing.h"

typedef struct doc {
    char *id, *title, *text;
    size_t len;
    int zh;
} doc;

typedef struct corpus {
    doc *d;
    size_t n, cap;
    size_t bytes;
} corpus;

/* This thread's CPU time: a query's cost without the time other processes held the
 * core (the wall-clock tail on a shared machine mostly measures the scheduler). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench-rag: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static char *xstrdup(const char *s) {
    char *p = xmalloc(strlen(s) + 1);
    strcpy(p, s);
    return p;
}

/* Reads a file, gunzipping when it is gzip (gzread passes plain files through). */
static char *slurp(const char *path, size_t *len) {
    gzFile g = gzopen(path, "rb");
    if (!g) return NULL;
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (cap - n < 65536) {
            cap *= 2;
            char *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                gzclose(g);
                return NULL;
            }
            buf = p;
        }
        int k = gzread(g, buf + n, 65536);
        if (k <= 0) break;
        n += (size_t)k;
    }
    gzclose(g);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void add_doc(corpus *c, const char *id, const char *title, char *text, size_t len, int zh) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        doc *d = realloc(c->d, c->cap * sizeof *d);
        if (!d) {
            fprintf(stderr, "bench-rag: out of memory\n");
            exit(1);
        }
        c->d = d;
    }
    c->d[c->n++] = (doc){xstrdup(id), xstrdup(title), text, len, zh};
    c->bytes += len;
}

/* Keeps the words of roff source: drops comments and request names, resolves the common
 * escapes (\fB, \-, \(xx, \*x, \&, \e). Good enough for retrieval, not for display. */
static size_t strip_roff(char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        if ((s[i] == '.' || s[i] == '\'') && e - i >= 3 && s[i + 1] == '\\' && s[i + 2] == '"') {
            i = e + 1;
            continue;
        }
        size_t p = i;
        if (s[p] == '.' || s[p] == '\'') { /* request: drop its name, keep its arguments */
            while (p < e && s[p] != ' ') p++;
        }
        for (; p < e; p++) {
            char c = s[p];
            if (c == '"') continue;
            if (c != '\\' || p + 1 >= e) {
                s[w++] = c;
                continue;
            }
            char x = s[++p];
            if (x == 'f' || x == 's' || x == '*' || x == 'n') { /* font, size, string, register */
                if (p + 1 < e && (s[p + 1] == '-' || s[p + 1] == '+')) p++;
                if (p + 1 < e && s[p + 1] == '(') p += 3;
                else if (p + 1 < e && s[p + 1] == '[') {
                    while (p < e && s[p] != ']') p++;
                } else p++;
                if (x == '*') s[w++] = ' ';
            } else if (x == '(') {
                p += 2;
                s[w++] = ' ';
            } else if (x == '[') {
                while (p < e && s[p] != ']') p++;
                s[w++] = ' ';
            } else if (x == 'e') {
                s[w++] = '\\';
            } else if (x != '&' && x != '%' && x != 'c') {
                s[w++] = x;
            }
        }
        s[w++] = '\n';
        i = e + 1;
    }
    return w;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of a directory (so that corpora are identical run to run). */
static char **list_dir(const char *dir, size_t *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    size_t cap = 64;
    char **v = xmalloc(cap * sizeof *v);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (*n == cap) {
            cap *= 2;
            char **g = realloc(v, cap * sizeof *g);
            if (!g) exit(1);
            v = g;
        }
        v[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(v, *n, sizeof *v, cmp_str);
    return v;
}

static void free_list(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int is_regular(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void load_man(corpus *c, const char *root, const char *lang_prefix, int zh) {
    char dir[512], path[1024], id[600], title[320];
    for (int sec = 1; sec <= 8; sec++) {
        snprintf(dir, sizeof dir, "%s/man%d", root, sec);
        size_t n;
        char **names = list_dir(dir, &n);
        for (size_t i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            size_t len;
            char *text = is_regular(path) ? slurp(path, &len) : NULL;
            if (!text) continue;
            if (len < 200 && strncmp(text, ".so ", 4) == 0) { /* a link to another page */
                free(text);
                continue;
            }
            len = strip_roff(text, len);
            char base[300];
            snprintf(base, sizeof base, "%s", names[i]);
            char *gz = strstr(base, ".gz");
            if (gz && gz[3] == 0) *gz = 0;
            snprintf(id, sizeof id, "%sman%d/%s", lang_prefix, sec, base);
            char *dot = strrchr(base, '.');
            if (dot) *dot = 0;
            snprintf(title, sizeof title, "%s(%d)", base, sec);
            add_doc(c, id, title, text, len, zh);
        }
        free_list(names, n);
    }
}

static int wanted_doc_file(const char *name) {
    static const char *const suffixes[] = {".txt", ".md", ".txt.gz", ".md.gz"};
    if (strncmp(name, "README", 6) == 0) return 1;
    size_t l = strlen(name);
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        size_t s = strlen(suffixes[k]);
        if (l > s && strcmp(name + l - s, suffixes[k]) == 0) return 1;
    }
    return 0;
}

static void load_doc_tree(corpus *c, const char *dir, const char *rel, int depth) {
    size_t n;
    char **names = list_dir(dir, &n);
    for (size_t i = 0; i < n; i++) {
        char path[1024], r[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        struct stat sb;
        if (lstat(path, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode) && depth < 6) {
            load_doc_tree(c, path, r, depth + 1);
        } else if (S_ISREG(sb.st_mode) && wanted_doc_file(names[i]) && sb.st_size < (16 << 20)) {
            size_t len;
            char *text = slurp(path, &len);
            if (!text) continue;
            char id[1100], title[1100];
            snprintf(id, sizeof id, "doc/%s", r);
            snprintf(title, sizeof title, "%s", r);
            for (char *p = title; *p; p++)
                if (*p == '/') *p = ' ';
            add_doc(c, id, title, text, len, 0);
        }
    }
    free_list(names, n);
}

/* Removes ANSI colour sequences (ESC [ ... m) in place. */
static size_t strip_ansi(char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0x1b && i + 1 < n && s[i + 1] == '[') {
            i += 2;
            while (i < n && s[i] != 'm') i++;
            continue;
        }
        s[w++] = s[i];
    }
    return w;
}

static void load_fortunes(corpus *c, const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    char *all = slurp(path, &len);
    if (!all) return;
    len = strip_ansi(all, len);
    size_t i = 0, k = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && !(all[e] == '%' && (e == 0 || all[e - 1] == '\n') &&
                            (e + 1 == len || all[e + 1] == '\n')))
            e++;
        k++;
        size_t a = i, b = e;
        while (a < b && (all[a] == '\n' || all[a] == ' ')) a++;
        if (b > a) {
            char *text = xmalloc(b - a + 1);
            memcpy(text, all + a, b - a);
            text[b - a] = 0;
            char id[256], title[256];
            snprintf(id, sizeof id, "fortunes/%s#%zu", name, k);
            size_t tl = 0;
            while (tl < b - a && tl < 120 && text[tl] != '\n') tl++;
            snprintf(title, sizeof title, "%.*s", (int)tl, text);
            add_doc(c, id, title, text, b - a, 1);
        }
        i = e + 2;
    }
    free(all);
}

typedef struct question {
    char *q, *doc;
    int zh;
} question;

static question *load_questions(const char *path, size_t *n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench-rag: cannot open questions %s\n", path);
        exit(1);
    }
    question *v = NULL;
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    *n = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        const char *q = o ? json_string_value(json_object_get(o, "q")) : NULL;
        const char *d = o ? json_string_value(json_object_get(o, "doc")) : NULL;
        const char *lang = o ? json_string_value(json_object_get(o, "lang")) : NULL;
        if (!q || !d || !lang) {
            fprintf(stderr, "bench-rag: %s: bad line %zu (want q, doc, lang)\n", path, *n + 1);
            exit(1);
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, cap * sizeof *v);
            if (!v) exit(1);
        }
        v[(*n)++] = (question){xstrdup(q), xstrdup(d), strcmp(lang, "zh") == 0};
        json_decref(o);
    }
    free(line);
    fclose(f);
    return v;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static double percentile(double *v, size_t n, double p) {
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return n ? v[i] : 0;
}

/* The peer: scans every chunk's text for each query word (case-insensitive). */
static size_t scan_query(const cv_rag_index *ix, const char *q) {
    char words[8][64];
    size_t nw = 0, hits = 0;
    for (const char *p = q; *p && nw < 8;) {
        while (*p == ' ') p++;
        size_t l = 0;
        while (p[l] && p[l] != ' ' && l < 63) l++;
        if (l) {
            memcpy(words[nw], p, l);
            words[nw++][l] = 0;
        }
        p += l;
    }
    cv_rag_index_info info;
    cv_rag_index_info_get(ix, &info);
    for (uint32_t c = 0; c < info.n_chunks; c++) {
        cv_rag_chunk ch;
        cv_rag_index_chunk(ix, c, &ch);
        for (size_t w = 0; w < nw; w++)
            if (memmem(ch.text.ptr, ch.text.len, words[w], strlen(words[w]))) hits++;
    }
    return hits;
}

/* A query of 2-4 words picked from a random chunk (ASCII words of 4+ letters). */
static int sample_query(const cv_rag_index *ix, unsigned *rs, char *out, size_t cap) {
    cv_rag_index_info info;
    cv_rag_index_info_get(ix, &info);
    cv_rag_chunk ch;
    cv_rag_index_chunk(ix, (uint32_t)(rand_r(rs) % info.n_chunks), &ch);
    size_t want = 2 + (size_t)(rand_r(rs) % 3), got = 0, w = 0;
    for (int tries = 0; tries < 40 && got < want && ch.text.len > 0; tries++) {
        size_t at = (size_t)rand_r(rs) % ch.text.len, l = 0;
        while (at < ch.text.len && !((ch.text.ptr[at] | 32) >= 'a' && (ch.text.ptr[at] | 32) <= 'z')) at++;
        while (at + l < ch.text.len && (ch.text.ptr[at + l] | 32) >= 'a' && (ch.text.ptr[at + l] | 32) <= 'z') l++;
        if (l < 4 || w + l + 2 > cap) continue;
        if (w) out[w++] = ' ';
        memcpy(out + w, ch.text.ptr + at, l);
        w += l;
        got++;
    }
    out[w] = 0;
    return got >= 2;
}

static enum MHD_Result serve_json(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)url, (void)method, (void)version, (void)upload, (void)upload_size, (void)con_cls;
    const char *body = cls;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* p50/p99 (ms) of fetching three local sources, 200 times; 0 when no server starts. */
static void measure_sources(double *p50, double *p99, size_t *results) {
    static char body[4096];
    size_t w = (size_t)snprintf(body, sizeof body, "{\"results\":[");
    for (int i = 0; i < 5; i++)
        w += (size_t)snprintf(body + w, sizeof body - w,
                              "%s{\"name\":\"result %d\",\"link\":\"http://example/%d\","
                              "\"snippet\":\"%0300d\"}", i ? "," : "", i, i, i);
    snprintf(body + w, sizeof body - w, "]}");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, serve_json,
                                            body, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    *p50 = *p99 = 0;
    *results = 0;
    if (!d) return;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char cfg[1024];
    int port = info ? info->port : 0;
    snprintf(cfg, sizeof cfg, "{\"budget_ms\":500,\"sources\":["
             "{\"name\":\"a\",\"url\":\"http://127.0.0.1:%d/a?q={query}\",\"items\":\"/results\",\"text\":\"/snippet\",\"title\":\"/name\",\"link\":\"/link\"},"
             "{\"name\":\"b\",\"url\":\"http://127.0.0.1:%d/b?q={query}\",\"items\":\"/results\",\"text\":\"/snippet\"},"
             "{\"name\":\"c\",\"url\":\"http://127.0.0.1:%d/c?q={query}\",\"items\":\"/results\",\"text\":\"/snippet\"}]}",
             port, port, port);
    cv_rag_sources *src = NULL;
    cv_pii *pii = NULL;
    if (cv_rag_sources_parse(cfg, strlen(cfg), &src, NULL) || cv_pii_create(CV_PII_PLACEHOLDER, &pii, NULL)) {
        MHD_stop_daemon(d);
        cv_rag_sources_free(src);
        return;
    }
    double lat[200];
    for (int i = 0; i < 200; i++) {
        cv_rag_source_hits h = {0};
        double t = cv_seconds();
        cv_rag_sources_fetch(src, pii, "退货 refund policy 13812345678", 0, NULL, NULL, NULL, &h, NULL);
        lat[i] = (cv_seconds() - t) * 1e3;
        *results = h.n;
        cv_rag_source_hits_free(&h);
    }
    *p50 = percentile(lat, 200, 0.50);
    *p99 = percentile(lat, 200, 0.99);
    cv_pii_free(pii);
    cv_rag_sources_free(src);
    MHD_stop_daemon(d);
}

static void usage(FILE *f) {
    fputs("usage: bench-rag [--questions FILE.jsonl] [--runs R] [--dump-corpus FILE.jsonl] [--keep-index FILE]\n"
          "  BM25 knowledge base on the man pages, /usr/share/doc and fortunes-zh of this machine: build\n"
          "  throughput, open time, query latency, recall@5, and the latency of live sources; one JSON\n"
          "  object on stdout\n"
          "  --questions FILE     labeled questions (default tests/data/rag/bench-questions.jsonl)\n"
          "  --runs R             index builds, the median reported, 1..100 (default 3)\n"
          "  --dump-corpus FILE   write the corpus as JSON lines (id, title, text)\n"
          "  --keep-index FILE    keep the built index there\n"
          "  -h, --help           this text\n",
          f);
}

int main(int argc, char **argv) {
    const char *qpath = "tests/data/rag/bench-questions.jsonl", *dump = NULL, *keep = NULL;
    int runs = 3;
    long n;
    static const struct option opts[] = {{"questions", required_argument, 0, 'q'},
                                         {"runs", required_argument, 0, 'r'},
                                         {"dump-corpus", required_argument, 0, 'd'},
                                         {"keep-index", required_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'q') qpath = optarg;
        else if (c == 'r' && cv_cli_int("bench-rag", "--runs", optarg, 1, 100, &n)) return CV_CLI_EXIT_USAGE;
        else if (c == 'r') runs = (int)n;
        else if (c == 'd') dump = optarg;
        else if (c == 'k') keep = optarg;
        else if (c == 'h') cv_cli_help(usage);
        else cv_cli_getopt_error("bench-rag", usage, c, argv);
    }
    if (optind != argc) cv_cli_usage_error("bench-rag", usage, "unexpected argument '%s'", argv[optind]);
    size_t nq;
    question *qs = load_questions(qpath, &nq);

    double t0 = cv_seconds();
    corpus co = {0};
    load_man(&co, "/usr/share/man", "", 0);
    load_doc_tree(&co, "/usr/share/doc", "", 0);
    load_man(&co, "/usr/share/man/zh_CN", "zh_CN/", 1);
    static const char *const fortunes[] = {"chinese", "tang300", "song100"};
    for (size_t i = 0; i < 3; i++) load_fortunes(&co, "/usr/share/games/fortunes", fortunes[i]);
    double t_load = cv_seconds() - t0;
    if (dump) {
        FILE *f = fopen(dump, "w");
        for (size_t i = 0; f && i < co.n; i++) {
            json_t *o = json_pack("{s:s,s:s,s:s%}", "id", co.d[i].id, "title", co.d[i].title,
                                  "text", co.d[i].text, co.d[i].len);
            char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            if (s) fprintf(f, "%s\n", s);
            free(s);
            json_decref(o);
        }
        if (f) fclose(f);
    }

    char tmpdir[] = "/tmp/bench-rag-XXXXXX", path[256];
    if (!mkdtemp(tmpdir)) return 1;
    snprintf(path, sizeof path, "%s/kb.idx", tmpdir);
    cv_error e = {0};
    cv_rag_analyzer *an = NULL;
    if (cv_rag_analyzer_create(NULL, 0, &an, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    double *build_s = xmalloc((size_t)runs * sizeof(double));
    size_t n_chunks = 0;
    for (int r = 0; r < runs; r++) {
        cv_rag_builder *b = NULL;
        double t = cv_seconds();
        if (cv_rag_builder_create(NULL, an, &b, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        for (size_t i = 0; i < co.n; i++) {
            /* text is sanitised by the builder; skip documents whose id is not UTF-8 */
            cv_status st = cv_rag_builder_add(b, co.d[i].id, co.d[i].title, NULL, co.d[i].text,
                                              co.d[i].len, &e);
            if (st && st != CV_EINVAL) return fprintf(stderr, "%s\n", e.msg), 1;
        }
        if (cv_rag_builder_write(b, path, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        build_s[r] = cv_seconds() - t;
        n_chunks = cv_rag_builder_n_chunks(b);
        cv_rag_builder_free(b);
    }
    double build_med = median(build_s, (size_t)runs);
    struct stat sb;
    stat(path, &sb);

    double open_plain[5], open_crc[5];
    cv_rag_index *ix = NULL;
    for (int r = 0; r < 5; r++) {
        double t = cv_seconds();
        if (cv_rag_index_open(path, CV_RAG_VERIFY_CRC, &ix, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        open_crc[r] = cv_seconds() - t;
        cv_rag_index_close(ix);
        t = cv_seconds();
        if (cv_rag_index_open(path, 0, &ix, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        open_plain[r] = cv_seconds() - t;
        if (r < 4) cv_rag_index_close(ix);
    }
    cv_rag_index_info info;
    cv_rag_index_info_get(ix, &info);
    cv_rag_searcher *s = NULL;
    if (cv_rag_searcher_create(ix, &s, &e)) return fprintf(stderr, "%s\n", e.msg), 1;

    /* recall@5 at document level (at most one chunk per document in the top 5) */
    cv_rag_search_opts so = {-1, -1, 1};
    size_t found[2] = {0}, total[2] = {0}, missing = 0;
    json_t *misses = json_array();
    for (size_t i = 0; i < nq; i++) {
        cv_rag_hit h[5];
        size_t n = 0, ok = 0;
        cv_rag_search(s, &so, qs[i].q, strlen(qs[i].q), h, 5, &n, &e);
        for (size_t k = 0; k < n; k++) {
            cv_rag_doc d;
            cv_rag_index_doc(ix, h[k].doc, &d);
            ok |= d.id.len == strlen(qs[i].doc) && memcmp(d.id.ptr, qs[i].doc, d.id.len) == 0;
        }
        int exists = 0;
        for (size_t k = 0; k < co.n && !exists; k++) exists = strcmp(co.d[k].id, qs[i].doc) == 0;
        missing += !exists;
        found[qs[i].zh] += ok;
        total[qs[i].zh]++;
        if (!ok) json_array_append_new(misses, json_string(qs[i].q));
    }

    /* latency: labeled questions + sampled queries, several passes */
    size_t n_sampled = 2000, nl = nq + n_sampled;
    char **load = xmalloc(nl * sizeof *load);
    unsigned rs = 12345;
    for (size_t i = 0; i < nq; i++) load[i] = qs[i].q;
    for (size_t i = 0; i < n_sampled; i++) {
        char buf[256];
        while (!sample_query(ix, &rs, buf, sizeof buf)) {}
        load[nq + i] = xstrdup(buf);
    }
    int passes = 5;
    double p50s[5], p99s[5], c50s[5], c99s[5], *lat = xmalloc(nl * sizeof *lat),
           *cpu = xmalloc(nl * sizeof *cpu);
    for (int p = 0; p < passes; p++) {
        for (size_t i = 0; i < nl; i++) {
            cv_rag_hit h[5];
            size_t n;
            double t = cv_seconds(), c = cpu_now();
            cv_rag_search(s, &so, load[i], strlen(load[i]), h, 5, &n, &e);
            cpu[i] = (cpu_now() - c) * 1e3;
            lat[i] = (cv_seconds() - t) * 1e3;
        }
        p50s[p] = percentile(lat, nl, 0.50);
        p99s[p] = percentile(lat, nl, 0.99);
        c50s[p] = percentile(cpu, nl, 0.50);
        c99s[p] = percentile(cpu, nl, 0.99);
    }
    double p50 = median(p50s, (size_t)passes), p99 = median(p99s, (size_t)passes);
    double c50 = median(c50s, (size_t)passes), c99 = median(c99s, (size_t)passes);

    /* peer: linear scan on a few sampled queries vs the index on the same queries */
    double scan_ms[9], idx_ms[9];
    size_t scan_hits = 0;
    for (int i = 0; i < 9; i++) {
        const char *q = load[nq + (size_t)i];
        double t = cv_seconds();
        scan_hits += scan_query(ix, q);
        scan_ms[i] = (cv_seconds() - t) * 1e3;
        cv_rag_hit h[5];
        size_t n;
        t = cv_seconds();
        cv_rag_search(s, &so, q, strlen(q), h, 5, &n, &e);
        idx_ms[i] = (cv_seconds() - t) * 1e3;
    }
    double scan_med = median(scan_ms, 9), idx_med = median(idx_ms, 9);
    size_t zh_docs = 0;
    for (size_t i = 0; i < co.n; i++) zh_docs += co.d[i].zh;
    double src_p50, src_p99;
    size_t src_results;
    measure_sources(&src_p50, &src_p99, &src_results);

    json_t *out = json_pack(
        "{s:s, s:{s:I, s:I, s:f, s:I, s:I, s:f}, s:{s:f, s:f, s:f, s:I, s:f, s:i},"
        " s:{s:f, s:f}, s:{s:f, s:f, s:f, s:f, s:I, s:i, s:f}, s:{s:f, s:f, s:f, s:I, s:I, s:I, s:o},"
        " s:{s:f, s:f, s:f, s:I}, s:{s:f, s:f, s:f, s:f, s:i, s:I}}",
        "bench", "rag",
        "corpus", "documents", (json_int_t)co.n, "chunks", (json_int_t)n_chunks,
        "text_mb", co.bytes / 1e6, "terms", (json_int_t)info.n_terms,
        "chinese_documents", (json_int_t)zh_docs, "load_s", t_load,
        "build", "mb_per_s", co.bytes / 1e6 / build_med, "chunks_per_s", n_chunks / build_med,
        "median_s", build_med, "index_bytes", (json_int_t)sb.st_size,
        "index_vs_text", (double)sb.st_size / (double)co.bytes, "runs", runs,
        "open_ms", "validate_median", median(open_plain, 5) * 1e3,
        "validate_crc_median", median(open_crc, 5) * 1e3,
        "query_ms", "p50", p50, "p99", p99, "cpu_p50", c50, "cpu_p99", c99,
        "queries", (json_int_t)nl, "passes", passes,
        "p99_vs_5ms_target", p99 / 5.0,
        "recall_at_5", "all", (double)(found[0] + found[1]) / (double)(nq ? nq : 1),
        "en", (double)found[0] / (double)(total[0] ? total[0] : 1),
        "zh", (double)found[1] / (double)(total[1] ? total[1] : 1),
        "questions_en", (json_int_t)total[0], "questions_zh", (json_int_t)total[1],
        "labels_missing_from_corpus", (json_int_t)missing, "misses", misses,
        "peer_linear_scan", "scan_ms_median", scan_med, "index_ms_median", idx_med,
        "speedup", idx_med > 0 ? scan_med / idx_med : 0, "scan_matches", (json_int_t)scan_hits,
        "added_latency_ms", "index_p50", p50, "index_p99", p99, "sources_p50", src_p50,
        "sources_p99", src_p99, "sources", 3, "source_results", (json_int_t)src_results);
    char *js = json_dumps(out, JSON_INDENT(1) | JSON_REAL_PRECISION(5));
    puts(js ? js : "{}");
    free(js);
    json_decref(out);

    cv_rag_searcher_free(s);
    cv_rag_index_close(ix);
    if (keep) rename(path, keep);
    else unlink(path);
    rmdir(tmpdir);
    return 0;
}
