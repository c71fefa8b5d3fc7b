/* rag_ingest: reads knowledge-base input files into an index builder.
 *
 * By extension: .txt (id = the path as given, title = the file name), .md (title = the
 * first "# " heading, else the file name), .jsonl (one JSON object per line with "text"
 * (string, required), "id" (string or integer; default PATH:LINE), "title" and "url"
 * (strings, optional); blank lines skipped). Anything else is CV_EUNSUPPORTED. A
 * malformed line is a CV_EFORMAT error naming the file, line and field; documents
 * added before it stay in the builder.
 */
#ifndef CV_RAG_INGEST_H
#define CV_RAG_INGEST_H

#include <stddef.h>

#include "cv_error.h"
#include "rag_index.h"

/* Adds the documents of one file; *n_docs (may be NULL) receives how many. */
cv_status cv_rag_ingest_file(cv_rag_builder *b, const char *path, size_t *n_docs, cv_error *err);

#endif
