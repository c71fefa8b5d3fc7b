/* rag_index_format: the on-disk records of a RAG index (version 1), shared by the
 * writer (rag_index_build.c) and the reader (rag_index.c). Private to those two.
 * Layout and validation rules are described in rag_index.h. Little-endian hosts only:
 * records are read in place from the mapping.
 */
#ifndef CV_RAG_INDEX_FORMAT_H
#define CV_RAG_INDEX_FORMAT_H

#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rag index records are read in place: little-endian hosts only"
#endif

#define RAG_MAGIC "CVRAGIDX"
#define RAG_FLAG_CRC 1u
#define RAG_MAX_SECTIONS 32u

enum {
    RAG_SEC_META = 1,
    RAG_SEC_DOCS,
    RAG_SEC_CHUNKS,
    RAG_SEC_TERMS,
    RAG_SEC_POSTINGS,
    RAG_SEC_TEXT,
    RAG_SEC_STRINGS,
    RAG_SEC_STOPWORDS,
    RAG_SEC_COUNT = RAG_SEC_STOPWORDS /* known ids are 1..RAG_SEC_COUNT */
};

typedef struct rag_header {
    char magic[8];
    uint32_t version;
    uint32_t n_sections;
    uint64_t file_size;
    uint32_t flags;
    uint8_t pad[36];
} rag_header;

typedef struct rag_section {
    uint32_t id;
    uint32_t crc; /* CRC-32 (zlib) of the section bytes, when RAG_FLAG_CRC */
    uint64_t offset, size;
} rag_section;

typedef struct rag_meta {
    uint32_t n_docs, n_chunks, n_terms, n_stop;
    double k1, b, avg_len;
    uint32_t chunk_chars, overlap_chars;
    uint64_t total_terms;
} rag_meta;

typedef struct rag_doc_rec {
    uint32_t id_off, id_len, title_off, title_len, url_off, url_len;
    uint32_t first_chunk, n_chunks;
} rag_doc_rec;

typedef struct rag_chunk_rec {
    uint32_t doc, n_terms, ordinal, text_len;
    uint64_t text_off;
} rag_chunk_rec;

typedef struct rag_term_rec {
    uint32_t str_off, str_len, df, pad;
    uint64_t post_off, post_len;
} rag_term_rec;

typedef struct rag_str_ref {
    uint32_t off, len;
} rag_str_ref;

_Static_assert(sizeof(rag_header) == 64, "header is 64 bytes");
_Static_assert(sizeof(rag_section) == 24, "section entry is 24 bytes");
_Static_assert(sizeof(rag_meta) == 56, "meta is 56 bytes");
_Static_assert(sizeof(rag_doc_rec) == 32, "doc record is 32 bytes");
_Static_assert(sizeof(rag_chunk_rec) == 24, "chunk record is 24 bytes");
_Static_assert(sizeof(rag_term_rec) == 32, "term record is 32 bytes");

#endif
