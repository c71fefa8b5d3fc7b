/* test_models: the real model files `make models` fetches, for cmocka tests
 * (header-only; include after <cmocka.h>).
 *
 * cv_test_open_model(file) opens $CORVID_MODELS/FILE (default ~/.cache/corvid/models)
 * and returns it, or prints a visible SKIP line naming the file and why, and skips the
 * running test.
 */
#ifndef CV_TEST_MODELS_H
#define CV_TEST_MODELS_H

#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"

static inline cv_gguf *cv_test_open_model(const char *file) {
    const char *dir = getenv("CORVID_MODELS"), *home = getenv("HOME");
    char path[1024];
    if (dir) snprintf(path, sizeof path, "%s/%s", dir, file);
    else snprintf(path, sizeof path, "%s/.cache/corvid/models/%s", home ? home : "", file);
    cv_gguf *g = NULL;
    cv_error e = {0};
    if (cv_gguf_open(path, &g, &e) != CV_OK) {
        printf("SKIP: %s not available (%s); `make models` fetches it\n", file, e.msg);
        skip();
    }
    return g;
}

#endif
