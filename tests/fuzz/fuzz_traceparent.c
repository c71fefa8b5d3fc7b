/* Fuzzes the traceparent parser (an untrusted header from any client): no crash, no read
 * past the input, and whatever it accepts formats back to a header it accepts again
 * with the same ids and flag. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A copy of exactly size bytes, so ASan sees any read past the end. */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    cv_trace_ctx c, again;
    if (cv_traceparent_parse(s, size, &c) == 0) {
        char out[CV_TRACEPARENT_LEN + 1];
        cv_traceparent_format(&c, out);
        if (strlen(out) != CV_TRACEPARENT_LEN || cv_traceparent_parse(out, strlen(out), &again) != 0 ||
            memcmp(&c, &again, sizeof c) != 0)
            abort();
    }
    free(s);
    return 0;
}
