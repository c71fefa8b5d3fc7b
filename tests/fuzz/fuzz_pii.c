/* Fuzzes PII masking on arbitrary bytes in both styles, with one extra pattern. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pii.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cv_pii *styles[2];
    if (!styles[0]) {
        if (cv_pii_create(CV_PII_PLACEHOLDER, &styles[0], NULL) ||
            cv_pii_create(CV_PII_PARTIAL, &styles[1], NULL) ||
            cv_pii_add_pattern(styles[0], "EMP", "EMP-[0-9]{6}", NULL))
            abort();
    }
    /* regexec stops at NUL: give the pattern style NUL-free input as the API requires */
    size_t len = strnlen((const char *)data, size);
    for (int s = 0; s < 2; s++) {
        char *out = NULL;
        size_t n = 0;
        if (cv_pii_mask(styles[s], (const char *)data, s ? size : len, &out, &n, NULL) == CV_OK) {
            /* partial masks keep the length: a cheap invariant the fuzzer can break */
            if (s == 1 && strlen(out) != strnlen((const char *)data, size)) abort();
            free(out);
        }
    }
    return 0;
}
