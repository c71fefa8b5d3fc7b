/* model_fetch: turns a model URI into a verified local file, within the server's policy.
 *
 * A local path (or file:///PATH, file://localhost/PATH; any other host is refused) is
 * used in place, but only when, after resolving symlinks and "..", it lies under one of
 * model_dirs, names a regular file (opened with O_NONBLOCK and fstat'ed before anything
 * is read: FIFOs, devices and directories are refused) and starts with the GGUF magic.
 * Errors about local files say no more than "not found", "not readable", "not a regular
 * file", "not a GGUF file" or "outside model_dirs": never the file's bytes, and never
 * whether a file outside model_dirs exists.
 *
 * http(s) URLs must start with one of model_sources (none by default: remote loads
 * need configuration); redirects are followed only to URLs that match too. The body is
 * downloaded with libcurl into cache_dir as <sha256>.gguf, refusing bodies over
 * max_bytes. A <sha256>.gguf.part is kept for resuming only when the origin supports
 * ranges (Accept-Ranges: bytes, or a 206 answer) and the transfer was interrupted; it
 * is restarted from zero when older than part_max_age_s or when the origin answers a
 * range request with the whole body; any other failure (an HTTP error, the size cap,
 * a sha256 mismatch, a refused redirect) removes it. Download errors read
 * "download failed: <short reason>", without the origin's status, timing or body hash.
 * A URL without a sha256 is refused. Setting *cancel non-zero stops a running download
 * within about a second.
 */
#ifndef CV_MODEL_FETCH_H
#define CV_MODEL_FETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

#define CV_FETCH_PART_MAX_AGE_S (24.0 * 3600)

typedef struct cv_fetch_opts {
    const char *cache_dir;      /* downloads land here; NULL/"": downloads refused */
    const char *model_dirs;     /* comma-separated directories local paths must lie under */
    const char *model_sources;  /* comma-separated URL prefixes downloads may come from */
    uint64_t max_bytes;         /* 0: no limit */
    double part_max_age_s;      /* 0: CV_FETCH_PART_MAX_AGE_S */
    atomic_int *cancel;         /* NULL: not cancellable */
} cv_fetch_opts;

/* What can be checked without I/O: the sha256's form, the scheme, a file:// URI's host,
 * a URL's sha256, model_sources and the cache directory. cv_model_fetch runs it first. */
cv_status cv_model_fetch_check(const char *uri, const char *sha256, const cv_fetch_opts *o, cv_error *err);
/* path receives the local file (cap bytes): the resolved path for local files. */
cv_status cv_model_fetch(const char *uri, const char *sha256, const cv_fetch_opts *o, char *path, size_t cap,
                         cv_error *err);
/* 1 when url starts with one of the comma-separated prefixes at a boundary: the
 * prefix ends with '/' or ':', or the URL goes on with '/', '?', '#' or ends there. */
int cv_fetch_source_allowed(const char *url, const char *sources);
/* The local path a non-URL uri names (file:// parsed, %XX decoded) into out; CV_EINVAL
 * for a file:// URI with another host. */
cv_status cv_fetch_local_path(const char *uri, char *out, size_t cap, cv_error *err);
/* Lower-case hex sha256 of a file into hex[65]. */
cv_status cv_sha256_file(const char *path, char hex[65], cv_error *err);

#endif
