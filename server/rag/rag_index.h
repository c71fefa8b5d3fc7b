/* rag_index: the on-disk BM25 knowledge base: builder, validated memory-mapped reader,
 * and search.
 *
 * File format (version 1, little-endian, all section offsets 8-byte aligned):
 *   header   64 bytes: magic "CVRAGIDX", u32 version, u32 n_sections, u64 file_size,
 *            u32 flags (bit 0: section CRC-32s are set), zero padding
 *   table    n_sections x 24 bytes: u32 id, u32 crc32, u64 offset, u64 size
 *   sections META (counts, k1, b, average chunk length, chunking parameters),
 *            DOCS (id/title/url string refs, first chunk, chunk count), CHUNKS (doc,
 *            length in terms, text ref), TERMS (sorted; string ref, df, postings ref),
 *            POSTINGS (per term: varint chunk-id deltas and term frequencies),
 *            TEXT (chunk texts), STRINGS (doc strings, terms, stopwords), STOPWORDS.
 * cv_rag_index_open checks everything before returning: header, table (bounds,
 * overlaps, duplicates), every count against its section size, every string and text
 * reference, term order, every posting list decoded in full (ids increasing and in
 * range, exact byte length), doc/chunk cross references, UTF-8 of doc strings, and
 * (when asked) the CRC-32s. A hostile file is a CV_EFORMAT error naming the field,
 * never a crash. Unknown section ids are skipped (newer writers may add sections).
 *
 * The stopwords used to build an index are stored in it and used for its queries.
 * Scores: BM25, idf = ln(1 + (N - df + 0.5) / (df + 0.5)); k1 and b come from the
 * index (chosen at build) and may be overridden per search.
 */
#ifndef CV_RAG_INDEX_H
#define CV_RAG_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"
#include "rag_analyzer.h"

#define CV_RAG_INDEX_VERSION 1

/* Length of text in some unit (tokens of a model's tokenizer, typically). */
typedef size_t (*cv_rag_measure_fn)(void *user, const char *text, size_t len);

typedef struct cv_rag_build_opts {
    uint32_t chunk_chars;   /* code points per chunk (default 800) */
    uint32_t overlap_chars; /* code points shared by neighbouring chunks (default 100) */
    double k1, b;           /* BM25 defaults stored in the index (1.2, 0.75) */
    /* Optional: with measure set, a chunk is also cut shorter until measure() <= max_units
     * (chunks by tokens). Not stored in the index: pass it again to `add`. */
    cv_rag_measure_fn measure;
    void *measure_user;
    uint32_t max_units;
} cv_rag_build_opts;

void cv_rag_build_opts_default(cv_rag_build_opts *o);

typedef struct cv_rag_builder cv_rag_builder;

/* The builder keeps its own copy of everything it is given; `a` must outlive it. */
cv_status cv_rag_builder_create(const cv_rag_build_opts *opts, const cv_rag_analyzer *a,
                                cv_rag_builder **out, cv_error *err);
void cv_rag_builder_free(cv_rag_builder *b);

/* Adds a document, cut into chunks. A document whose id is already present replaces
 * it. id must be non-empty; title and url may be NULL. Strings must be valid UTF-8
 * (CV_EINVAL otherwise); invalid bytes in text become U+FFFD. */
cv_status cv_rag_builder_add(cv_rag_builder *b, const char *id, const char *title,
                             const char *url, const char *text, size_t len, cv_error *err);

/* Adds a document from chunks already cut (re-adding a stored index's documents). */
cv_status cv_rag_builder_add_chunks(cv_rag_builder *b, const char *id, const char *title,
                                    const char *url, const char *const *chunks,
                                    const size_t *lens, size_t n, cv_error *err);

size_t cv_rag_builder_n_docs(const cv_rag_builder *b);
size_t cv_rag_builder_n_chunks(const cv_rag_builder *b);

/* Writes the index atomically: PATH.tmp.PID, fsync, rename over PATH. */
cv_status cv_rag_builder_write(cv_rag_builder *b, const char *path, cv_error *err);

typedef struct cv_rag_index cv_rag_index;

enum { CV_RAG_VERIFY_CRC = 1 };

cv_status cv_rag_index_open(const char *path, unsigned flags, cv_rag_index **out,
                            cv_error *err);
/* The one way an index is opened to be served or queried: the server's knowledge bases
 * and every corvid-index command that reads one (query, add, info). Every structural
 * check and the CRC-32 of every section (cv_rag_index_open with CV_RAG_VERIFY_CRC), so a
 * file the server refuses is refused by the CLI too. */
cv_status cv_rag_index_open_verified(const char *path, cv_rag_index **out, cv_error *err);
/* Same checks on a buffer that stays owned by the caller (fuzzing, tests). */
cv_status cv_rag_index_open_mem(const void *data, size_t size, unsigned flags,
                                cv_rag_index **out, cv_error *err);
void cv_rag_index_close(cv_rag_index *ix);

typedef struct cv_rag_strv {
    const char *ptr; /* into the mapping; not NUL-terminated */
    size_t len;
} cv_rag_strv;

typedef struct cv_rag_index_info {
    uint32_t n_docs, n_chunks, n_terms;
    uint32_t chunk_chars, overlap_chars;
    double k1, b, avg_chunk_terms;
    uint32_t checksum; /* CRC-32 of the header and section table (which hold each
                        * section's CRC-32 when the index has them): its identity */
} cv_rag_index_info;

void cv_rag_index_info_get(const cv_rag_index *ix, cv_rag_index_info *info);
const cv_rag_analyzer *cv_rag_index_analyzer(const cv_rag_index *ix);

typedef struct cv_rag_doc {
    cv_rag_strv id, title, url;
    uint32_t first_chunk, n_chunks;
} cv_rag_doc;

typedef struct cv_rag_chunk {
    uint32_t doc;
    uint32_t ordinal; /* position inside its document */
    cv_rag_strv text;
} cv_rag_chunk;

void cv_rag_index_doc(const cv_rag_index *ix, uint32_t doc, cv_rag_doc *out);
void cv_rag_index_chunk(const cv_rag_index *ix, uint32_t chunk, cv_rag_chunk *out);

/* Re-adds every document of ix to a builder (for incremental updates). */
cv_status cv_rag_index_copy_into(const cv_rag_index *ix, cv_rag_builder *b, cv_error *err);

typedef struct cv_rag_search_opts {
    double k1, b;         /* < 0: the index's values */
    uint32_t max_per_doc; /* 0: no limit on chunks of one document */
} cv_rag_search_opts;

typedef struct cv_rag_hit {
    uint32_t chunk, doc;
    float score;
} cv_rag_hit;

/* Per-thread search state (score scratch sized for the index). */
typedef struct cv_rag_searcher cv_rag_searcher;

cv_status cv_rag_searcher_create(const cv_rag_index *ix, cv_rag_searcher **out, cv_error *err);
void cv_rag_searcher_free(cv_rag_searcher *s);

/* Best hits first (score descending, then chunk id ascending); *n_hits <= k. */
cv_status cv_rag_search(cv_rag_searcher *s, const cv_rag_search_opts *opts, const char *query,
                        size_t len, cv_rag_hit *hits, size_t k, size_t *n_hits, cv_error *err);

#endif
