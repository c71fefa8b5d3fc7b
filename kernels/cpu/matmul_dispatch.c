/* matmul_dispatch: the per-host choice of matmul paths (matmul_dispatch.h). */
#include "matmul_dispatch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cpu_features.h"
#include "repack.h"

static const cv_matmul_kernel *avx2_for(cv_type t) { return cv_matmul_avx2_for(t); }
static const cv_matmul_kernel *avx512_for(cv_type t) { return cv_matmul_avx512_for(t); }

/* Every candidate of a type is bit-identical to the others (so the quant row dots,
 * cv_matmul_ref, are not a candidate where a tile exists: they sum in another order).
 * Within a class, ties go to the earlier line. */
static const cv_matmul_path k_paths[] = {
    {"avx2", CV_TYPE_Q4_0, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX2, avx2_for},
    {"avx512", CV_TYPE_Q4_0, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"x16", CV_TYPE_Q4_0, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    /* Q5_0's tiles keep the scalar reference's float steps, as cv_matmul_ref does
     * where they cannot run. */
    {"avx512", CV_TYPE_Q5_0, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"x16", CV_TYPE_Q5_0, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"avx2", CV_TYPE_Q8_0, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX2, avx2_for},
    {"avx512", CV_TYPE_Q8_0, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"x16", CV_TYPE_Q8_0, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"avx2", CV_TYPE_Q4_K, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX2, avx2_for},
    {"avx512", CV_TYPE_Q4_K, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"x16", CV_TYPE_Q4_K, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    /* Q5_K's one tile reads x16 and keeps the scalar reference's float steps (file
     * rows: cv_matmul_ref, quant's row dots, where the tile cannot run) */
    {"x16", CV_TYPE_Q5_K, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"avx2", CV_TYPE_Q6_K, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX2, avx2_for},
    {"avx512", CV_TYPE_Q6_K, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"x16", CV_TYPE_Q6_K, CV_CPU_LAYOUT_X16, CV_MM_ISA_AVX512VNNI, avx512_for},
    /* the float tiles' one token is quant's row dot (cv_matmul_ref), bit for bit */
    {"avx512", CV_TYPE_F16, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
    {"avx512", CV_TYPE_BF16, CV_CPU_LAYOUT_ROWS, CV_MM_ISA_AVX512VNNI, avx512_for},
};
enum { N_PATHS = sizeof k_paths / sizeof k_paths[0], MAX_CAND = 8 };

static const char *const k_class_names[CV_MM_CLASSES] = {"1", "small", "large"};
/* The batch each class is timed at. */
static const int32_t k_class_n[CV_MM_CLASSES] = {1, 8, 64};

int cv_matmul_class(int32_t n) { return n <= 1 ? CV_MM_B1 : n < 32 ? CV_MM_SMALL : CV_MM_LARGE; }

static int isa_ok(int isa, const cv_matmul_limits *lim) {
    static int avx2 = -1, vnni = -1; /* cpuid once; the answers never change */
    if (avx2 < 0) avx2 = cv_cpu_has_avx2(), vnni = cv_cpu_has_avx512vnni();
    if (lim->force_scalar) return 0;
    if (isa == CV_MM_ISA_AVX2) return avx2;
    if (isa == CV_MM_ISA_AVX512VNNI) return vnni && !lim->no_avx512;
    return 1;
}

int cv_matmul_candidates(cv_type t, const cv_matmul_limits *lim, const cv_matmul_path **out, int max) {
    int n = 0;
    for (int i = 0; i < N_PATHS && n < max; i++) {
        const cv_matmul_path *p = &k_paths[i];
        if (p->type != t || !isa_ok(p->isa, lim) || !p->kernel(t)) continue;
        if (p->layout != CV_CPU_LAYOUT_ROWS && !lim->repack) continue;
        out[n++] = p;
    }
    return n;
}

const cv_matmul_kernel *cv_matmul_pick(const cv_matmul_choice *c, int32_t n) {
    const cv_matmul_path *p = c->path[cv_matmul_class(n)];
    return p ? p->kernel(p->type) : &cv_matmul_ref;
}

/* ---- timing -------------------------------------------------------------------- */

enum { T_COLS = 2048 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds per run (the minimum of `reps`) of each candidate over `rows` rows at batch n,
 * one thread, candidates interleaved run by run. */
static void time_class(cv_type t, const cv_matmul_path **cand, int nc, int32_t n, int64_t rows, int reps,
                       double *best) {
    const size_t rb = cv_type_row_bytes(t, T_COLS);
    uint8_t *w = aligned_alloc(64, rb * (size_t)rows), *wx = aligned_alloc(64, rb * (size_t)rows);
    float *x = malloc((size_t)n * T_COLS * sizeof *x), *y = malloc((size_t)n * (size_t)rows * sizeof *y);
    size_t ab = 64 * 1024 + (size_t)n * cv_type_row_bytes(CV_TYPE_Q8_K, T_COLS) * 2;
    void *act = aligned_alloc(64, ab);
    for (int c = 0; c < nc; c++) best[c] = 1e30;
    if (!w || !wx || !x || !y || !act) goto out;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < (int64_t)n * T_COLS; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)(s >> 40) / (float)(1 << 24) - 0.5f;
    }
    /* One quantized row of random values, copied: the kernels' speed does not depend on
     * the values, only on the bytes streaming past. */
    cv_quantize_row(t, x, w, T_COLS);
    for (int64_t r = 1; r < rows; r++) memcpy(w + (size_t)r * rb, w, rb);
    cv_repack_x16(t, rows, T_COLS, w, rb, wx);
    for (int rep = 0; rep < reps; rep++)
        for (int c = 0; c < nc; c++) {
            const cv_matmul_kernel *k = cand[c]->kernel(t);
            cv_tensor wt = {t, rows, T_COLS, rb, cand[c]->layout == CV_CPU_LAYOUT_X16 ? wx : w, CV_DEVICE_CPU,
                            cand[c]->layout};
            size_t a = k->act_row_bytes(t, T_COLS);
            a = (a + 63) & ~(size_t)63;
            double t0 = now();
            for (int32_t i = 0; a && i < n; i++) k->convert(t, x + (int64_t)i * T_COLS, (char *)act + i * a, T_COLS);
            k->rows(&wt, 0, rows, a ? act : (const void *)x, a ? a : T_COLS * sizeof(float), n, y, rows);
            double dt = now() - t0;
            if (dt < best[c]) best[c] = dt;
        }
out:
    free(w);
    free(wx);
    free(x);
    free(y);
    free(act);
}

/* Times the candidates of t: the batch-1 winner fixes the layout; other classes choose
 * among the candidates of that layout. */
static void tune_type(cv_type t, const cv_matmul_path **cand, int nc, cv_matmul_choice *c) {
    double best[CV_MM_CLASSES][MAX_CAND];
    static const int64_t rows[CV_MM_CLASSES] = {256, 128, 64};
    static const int reps[CV_MM_CLASSES] = {25, 9, 5};
    for (int k = 0; k < CV_MM_CLASSES; k++) time_class(t, cand, nc, k_class_n[k], rows[k], reps[k], best[k]);
    int w = 0;
    for (int i = 1; i < nc; i++)
        if (best[CV_MM_B1][i] < best[CV_MM_B1][w]) w = i;
    c->layout = cand[w]->layout;
    c->path[CV_MM_B1] = cand[w];
    for (int k = 1; k < CV_MM_CLASSES; k++) {
        int b = -1;
        for (int i = 0; i < nc; i++)
            if (cand[i]->layout == c->layout && (b < 0 || best[k][i] < best[k][b])) b = i;
        c->path[k] = cand[b];
    }
}

/* ---- cache file ---------------------------------------------------------------- */

void cv_matmul_cache_path(char *buf, size_t size) {
    const char *d = getenv("CORVID_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (d && *d) snprintf(buf, size, "%s/matmul-paths", d);
    else if (x && *x) snprintf(buf, size, "%s/corvid/matmul-paths", x);
    else if (h && *h) snprintf(buf, size, "%s/.cache/corvid/matmul-paths", h);
    else if (size) buf[0] = 0;
}

/* The key of a choice: the CPU's model string, the options and the candidate table. */
static void cache_key(const cv_matmul_limits *lim, char *key, size_t size) {
    char model[128] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (v) snprintf(model, sizeof model, "%.*s", (int)strcspn(v + 2, "\n"), v + 2);
        break;
    }
    if (f) fclose(f);
    size_t o = (size_t)snprintf(key, size, "%s|s%d a%d r%d|", model, lim->force_scalar, lim->no_avx512, lim->repack);
    for (int i = 0; i < N_PATHS && o < size; i++)
        o += (size_t)snprintf(key + o, size - o, "%s.%s,", cv_type_get(k_paths[i].type)->name, k_paths[i].name);
    for (char *p = key; *p; p++)
        if (*p == '\t' || *p == '\n') *p = ' ';
}

static const cv_matmul_path *find_path(cv_type t, const char *name) {
    for (int i = 0; i < N_PATHS; i++)
        if (k_paths[i].type == t && !strcmp(k_paths[i].name, name)) return &k_paths[i];
    return NULL;
}

static int type_by_name(const char *s, cv_type *t) {
    for (int i = 0; i < CV_TYPE_COUNT; i++) {
        const cv_type_info *ti = cv_type_get((cv_type)i);
        if (ti && ti->name && !strcasecmp(ti->name, s)) return *t = (cv_type)i, 1;
    }
    return 0;
}

/* Lines "KEY\tTYPE\tCLASS\tPATH"; fills the types whose three classes are all there. */
static int cache_read(const char *path, const char *key, cv_matmul_choice *out, int want[CV_TYPE_COUNT]) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int got[CV_TYPE_COUNT] = {0};
    cv_matmul_choice c[CV_TYPE_COUNT];
    memset(c, 0, sizeof c);
    char line[4096];
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) || line[kl] != '\t') continue;
        char tn[16], cn[16], pn[32];
        cv_type t;
        if (sscanf(line + kl + 1, "%15s %15s %31s", tn, cn, pn) != 3 || !type_by_name(tn, &t)) continue;
        const cv_matmul_path *p = find_path(t, pn);
        for (int k = 0; k < CV_MM_CLASSES; k++)
            if (p && !strcmp(cn, k_class_names[k])) {
                c[t].path[k] = p;
                if (k == CV_MM_B1) c[t].layout = p->layout;
                got[t] |= 1 << k;
            }
    }
    fclose(f);
    for (int t = 0; t < CV_TYPE_COUNT; t++)
        if (want[t] && got[t] != (1 << CV_MM_CLASSES) - 1) return 0;
    for (int t = 0; t < CV_TYPE_COUNT; t++)
        if (want[t]) out[t] = c[t];
    return 1;
}

/* Rewrites the file with this key's lines replaced (others kept); best effort. */
static void cache_write(const char *path, const char *key, const cv_matmul_choice *c, int want[CV_TYPE_COUNT]) {
    char dir[1024], tmp[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    char *p = dir;
    while ((p = strchr(p + 1, '/'))) { /* mkdir -p */
        *p = 0;
        mkdir(dir, 0755);
        *p = '/';
    }
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *o = fopen(tmp, "w");
    if (!o) return;
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) || line[kl] != '\t') fputs(line, o);
    if (f) fclose(f);
    for (int t = 0; t < CV_TYPE_COUNT; t++)
        for (int k = 0; want[t] && k < CV_MM_CLASSES; k++)
            fprintf(o, "%s\t%s\t%s\t%s\n", key, cv_type_get((cv_type)t)->name, k_class_names[k], c[t].path[k]->name);
    if (fclose(o) == 0) rename(tmp, path);
    else unlink(tmp);
}

/* CORVID_MATMUL=TYPE:CLASS:PATH,... over the choice; a path that does not read the
 * type's layout (forced or chosen at batch 1) is refused with a message. */
static void apply_forced(const cv_matmul_limits *lim, cv_matmul_choice *c) {
    const char *env = getenv("CORVID_MATMUL");
    if (!env || !*env) return;
    char buf[1024];
    for (int pass = 0; pass < 2; pass++) { /* class 1 first: it fixes the layout */
        snprintf(buf, sizeof buf, "%s", env);
        for (char *save = NULL, *it = strtok_r(buf, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
            char tn[16], cn[16], pn[32];
            cv_type t;
            const cv_matmul_path *cand[MAX_CAND], *p = NULL;
            if (sscanf(it, "%15[^:]:%15[^:]:%31s", tn, cn, pn) != 3 || !type_by_name(tn, &t)) {
                if (pass == 0) fprintf(stderr, "corvid: CORVID_MATMUL: '%s' is not TYPE:CLASS:PATH\n", it);
                continue;
            }
            int nc = cv_matmul_candidates(t, lim, cand, MAX_CAND);
            for (int i = 0; i < nc; i++)
                if (!strcmp(cand[i]->name, pn)) p = cand[i];
            if (!p) {
                if (pass == 0) fprintf(stderr, "corvid: CORVID_MATMUL: %s has no path '%s' on this CPU\n", tn, pn);
                continue;
            }
            for (int k = 0; k < CV_MM_CLASSES; k++) {
                int hit = !strcmp(cn, "*") || !strcmp(cn, k_class_names[k]);
                if (!hit || (pass == 0) != (k == CV_MM_B1)) continue;
                if (k == CV_MM_B1) {
                    c[t].layout = p->layout;
                    for (int j = 1; j < CV_MM_CLASSES; j++) /* keep the others on the layout */
                        if (c[t].path[j] && c[t].path[j]->layout != p->layout) c[t].path[j] = p;
                } else if (p->layout != c[t].layout) {
                    fprintf(stderr, "corvid: CORVID_MATMUL: %s:%s:%s reads another layout than %s's batch-1 path\n",
                            tn, cn, pn, tn);
                    continue;
                }
                c[t].path[k] = p;
            }
        }
    }
}

typedef struct memo {
    int done;
    double seconds;
    cv_matmul_choice c[CV_TYPE_COUNT];
} memo;

double cv_matmul_choose(const cv_matmul_limits *lim, cv_matmul_choice *out) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static memo memos[8];
    memo *m = &memos[(lim->force_scalar != 0) | (lim->no_avx512 != 0) << 1 | (lim->repack != 0) << 2];
    double spent = 0;
    pthread_mutex_lock(&mu);
    if (!m->done) {
        const char *tune = getenv("CORVID_MATMUL_TUNE");
        int timed = !(tune && !strcmp(tune, "0"));
        int want[CV_TYPE_COUNT] = {0};
        const cv_matmul_path *cand[CV_TYPE_COUNT][MAX_CAND];
        int nc[CV_TYPE_COUNT];
        memset(m->c, 0, sizeof m->c);
        for (int t = 0; t < CV_TYPE_COUNT; t++) {
            nc[t] = cv_matmul_candidates((cv_type)t, lim, cand[t], MAX_CAND);
            for (int k = 0; k < CV_MM_CLASSES && nc[t]; k++) m->c[t].path[k] = cand[t][0];
            if (nc[t]) m->c[t].layout = cand[t][0]->layout;
            want[t] = nc[t] > 1;
        }
        char path[1024], key[2048];
        cv_matmul_cache_path(path, sizeof path);
        cache_key(lim, key, sizeof key);
        if (timed && !(path[0] && cache_read(path, key, m->c, want))) {
            double t0 = now();
            for (int t = 0; t < CV_TYPE_COUNT; t++)
                if (want[t]) tune_type((cv_type)t, cand[t], nc[t], &m->c[t]);
            spent = m->seconds = now() - t0;
            if (path[0]) cache_write(path, key, m->c, want);
        }
        apply_forced(lim, m->c);
        m->done = 1;
    }
    memcpy(out, m->c, sizeof m->c);
    pthread_mutex_unlock(&mu);
    return spent;
}
