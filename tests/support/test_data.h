/* test_data: the fixtures committed under tests/data (header-only).
 *
 * cv_test_data_dir() is $CORVID_DATA, or "tests/data" (relative to the repository root,
 * where the tests run) when it is unset; `make test` sets it to that folder's absolute
 * path. cv_test_data(buf, n, rel) writes DIR/REL into buf and returns buf.
 * tests/data/models/README.md and tests/data/vocab/README.md say what each file is.
 */
#ifndef CV_TEST_DATA_H
#define CV_TEST_DATA_H

#include <stdio.h>
#include <stdlib.h>

static inline const char *cv_test_data_dir(void) {
    const char *d = getenv("CORVID_DATA");
    return d && *d ? d : "tests/data";
}

static inline char *cv_test_data(char *buf, size_t n, const char *rel) {
    int k = snprintf(buf, n, "%s/%s", cv_test_data_dir(), rel);
    if (k < 0 || (size_t)k >= n) {
        fprintf(stderr, "cv_test_data: path too long for %s\n", rel);
        abort();
    }
    return buf;
}

#endif
