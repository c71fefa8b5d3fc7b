/* model_fetch: turns a model URI into a verified local file.
 *
 * A local path or file:// URI is used in place; http(s) URLs are downloaded with
 * libcurl into cache_dir as <sha256>.gguf (resuming a <sha256>.gguf.part left by an
 * interrupted download, refusing bodies over max_bytes). When sha256 is given, the file
 * is hashed and must match before anyone opens it; a URL without a sha256 is refused.
 */
#ifndef CV_MODEL_FETCH_H
#define CV_MODEL_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

/* What can be checked without I/O: the sha256's form, the scheme, a URL's sha256 and
 * cache directory. cv_model_fetch runs it first too. */
cv_status cv_model_fetch_check(const char *uri, const char *sha256, const char *cache_dir, cv_error *err);
/* path receives the local file (cap bytes). */
cv_status cv_model_fetch(const char *uri, const char *sha256, const char *cache_dir,
                         uint64_t max_bytes, char *path, size_t cap, cv_error *err);
/* Lower-case hex sha256 of a file into hex[65]. */
cv_status cv_sha256_file(const char *path, char hex[65], cv_error *err);

#endif
