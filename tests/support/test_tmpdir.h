/* test_tmpdir: a private scratch directory for a test binary (header-only).
 *
 * cv_test_tmpdir(buf, n, name) creates "$TMPDIR/corvid-NAME-XXXXXX" (TMPDIR defaults
 * to /tmp) into buf and returns 0, or -1. cv_test_rmtree(dir) removes it with all it
 * holds (nftw, depth-first, no shell) and returns 0 on success. cv_test_tmpfile(buf, n,
 * name) creates an empty file of that name pattern and returns its open fd, or -1.
 */
#ifndef CV_TEST_TMPDIR_H
#define CV_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

static inline int cv_test_tmpname(char *buf, size_t n, const char *name) {
    const char *base = getenv("TMPDIR");
    int k = snprintf(buf, n, "%s/corvid-%s-XXXXXX", base && *base ? base : "/tmp", name);
    return k > 0 && (size_t)k < n ? 0 : -1;
}

static inline int cv_test_tmpdir(char *buf, size_t n, const char *name) {
    return cv_test_tmpname(buf, n, name) == 0 && mkdtemp(buf) ? 0 : -1;
}

static inline int cv_test_tmpfile(char *buf, size_t n, const char *name) {
    return cv_test_tmpname(buf, n, name) == 0 ? mkstemp(buf) : -1;
}

static inline int cv_test_rmtree_one(const char *path, const struct stat *sb, int flag,
                                     struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static inline int cv_test_rmtree(const char *dir) {
    return nftw(dir, cv_test_rmtree_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
