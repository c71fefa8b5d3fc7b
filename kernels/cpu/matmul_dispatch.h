/* matmul_dispatch: which matmul kernel (and which weight layout) each weight type gets
 * on this CPU, chosen by timing the candidates. Internal to kernels/.
 *
 * A candidate path is a kernel, the weight layout it reads (repack.h) and the CPU
 * features it needs. Every candidate of a type gives bit-identical outputs (the tests
 * check each against the scalar reference), so the choice changes speed, never a token.
 * The choice is per type and per batch class (1 token: decode; 2..31: batched decode;
 * 32 and more: prefill): each available candidate is timed on one thread over a few
 * rows of random weights at a representative batch (candidates interleaved, the
 * minimum of several runs kept, so a noisy host hurts them alike) and the fastest
 * wins. A weight has one layout: the batch-1 winner's (decode is what one user feels);
 * the other classes choose among the candidates that read it.
 *
 * The timing runs once per process, unless the cache file (cv_matmul_cache_path:
 * $CORVID_CACHE_DIR, else $XDG_CACHE_HOME/corvid, else ~/.cache/corvid, file
 * matmul-paths) holds a choice made on a CPU with the same model string and the same
 * candidate table; then it is read from there. CORVID_MATMUL=TYPE:CLASS:PATH,... forces
 * paths (e.g. "Q4_0:1:avx2,Q4_K:*:x16"; CLASS 1, small, large or *), CORVID_MATMUL_TUNE=0
 * skips the timing (and the cache) and takes each class's first listed candidate.
 *
 * To add a kernel (say a prefill tile for F16): write it as a cv_matmul_kernel and add
 * one line to the candidate table in matmul_dispatch.c.
 */
#ifndef CV_MATMUL_DISPATCH_H
#define CV_MATMUL_DISPATCH_H

#include "matmul.h"
#include "quant.h"
#include "repack.h"

enum { CV_MM_B1, CV_MM_SMALL, CV_MM_LARGE, CV_MM_CLASSES };

typedef struct cv_matmul_path {
    const char *name;     /* short, unique per type: "avx2", "avx512", "x16", ... */
    cv_type type;
    int layout;           /* the weight layout it reads (CV_CPU_LAYOUT_*) */
    int isa;              /* CV_MM_ISA_*: what the CPU must have */
    const cv_matmul_kernel *(*kernel)(cv_type t);
} cv_matmul_path;

enum { CV_MM_ISA_NONE, CV_MM_ISA_AVX2, CV_MM_ISA_AVX512VNNI };

/* The options that narrow the candidates: both as cv_cpu_options. repack: layouts other
 * than rows may be chosen (the caller then releases what weight_load hands back). */
typedef struct cv_matmul_limits {
    int force_scalar, no_avx512, repack;
} cv_matmul_limits;

typedef struct cv_matmul_choice {
    int layout;
    const cv_matmul_path *path[CV_MM_CLASSES]; /* NULL: the reference (cv_matmul_ref) */
} cv_matmul_choice;

/* The class of a batch of n tokens. */
int cv_matmul_class(int32_t n);

/* The candidates of type t that this CPU can run under lim, in table order; returns
 * their count (at most max). */
int cv_matmul_candidates(cv_type t, const cv_matmul_limits *lim, const cv_matmul_path **out, int max);

/* Fills out[CV_TYPE_COUNT]: the choice per type (timed, cached or forced, see above).
 * Thread-safe; the timing runs at most once per process and limits. Returns the seconds
 * this call spent timing (0 when cached or forced). */
double cv_matmul_choose(const cv_matmul_limits *lim, cv_matmul_choice *out);

/* The kernel of a choice for a batch of n tokens. */
const cv_matmul_kernel *cv_matmul_pick(const cv_matmul_choice *c, int32_t n);

/* The cache file's path into buf ("" when no directory can be named). */
void cv_matmul_cache_path(char *buf, size_t size);

#endif
