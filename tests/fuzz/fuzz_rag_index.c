/* Fuzzes the RAG index reader: any bytes must open cleanly or fail with an error;
 * an index that opens must answer searches and give in-range documents and chunks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rag_index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_rag_index *ix = NULL;
    if (cv_rag_index_open_mem(data, size, 0, &ix, NULL) != CV_OK) return 0;
    cv_rag_index_info info;
    cv_rag_index_info_get(ix, &info);
    cv_rag_searcher *s = NULL;
    if (cv_rag_searcher_create(ix, &s, NULL) == CV_OK) {
        static const char *const queries[] = {"archive gzip", "明月 故乡", "a b c d e f", "知识库"};
        cv_rag_search_opts o = {-1, -1, 1};
        for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
            cv_rag_hit h[8];
            size_t n = 0;
            o.max_per_doc = (uint32_t)q % 2;
            if (cv_rag_search(s, &o, queries[q], strlen(queries[q]), h, 8, &n, NULL) != CV_OK) abort();
            for (size_t i = 0; i < n; i++)
                if (h[i].chunk >= info.n_chunks || h[i].doc >= info.n_docs) abort();
        }
        cv_rag_searcher_free(s);
    }
    size_t sum = 0;
    for (uint32_t d = 0; d < info.n_docs; d++) {
        cv_rag_doc doc;
        cv_rag_index_doc(ix, d, &doc);
        for (uint32_t k = 0; k < doc.n_chunks; k++) {
            cv_rag_chunk c;
            cv_rag_index_chunk(ix, doc.first_chunk + k, &c);
            if (c.text.len) sum += (uint8_t)c.text.ptr[c.text.len - 1];
        }
        if (doc.id.len) sum += (uint8_t)doc.id.ptr[doc.id.len - 1];
    }
    cv_rag_index_close(ix);
    return (int)(sum & 0); /* touch the bytes so ASan checks every reference */
}
