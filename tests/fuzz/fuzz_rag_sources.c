/* Fuzzes the live-source parsers: the input is a sources config and a response body
 * separated by the first NUL byte; a config that loads is used to parse the body with
 * every source. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rag_sources.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    size_t cfg_len = strnlen(in, size);
    const char *body = cfg_len < size ? in + cfg_len + 1 : "";
    size_t body_len = cfg_len < size ? size - cfg_len - 1 : 0;
    cv_rag_sources *s = NULL;
    if (cv_rag_sources_parse(in, cfg_len, &s, NULL) != CV_OK) return 0;
    for (size_t i = 0; i < cv_rag_sources_count(s); i++) {
        cv_rag_source_hits h = {0};
        if (cv_rag_sources_parse_body(s, i, body, body_len, &h, NULL) == CV_OK && h.n == 0) abort();
        for (size_t k = 0; k < h.n; k++)
            if (!h.v[k].text || !h.v[k].source) abort();
        cv_rag_source_hits_free(&h);
    }
    cv_rag_sources_free(s);
    return 0;
}
