#include "model_fetch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

cv_status cv_sha256_file(const char *path, char hex[65], cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, CV_ENOTFOUND, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cv_status st = CV_OK;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = cv_errorf(err, CV_ENOMEM, "sha256: cannot initialise OpenSSL's digest");
        goto out;
    }
    static _Thread_local unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = cv_errorf(err, CV_EIO, "%s: read error while hashing", path);
        goto out;
    }
    unsigned char md[32];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}

static int valid_sha256(const char *s) {
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

static int is_remote(const char *uri) {
    return strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0;
}

/* ---- policy: sources and directories ---- */

int cv_fetch_source_allowed(const char *url, const char *sources) {
    if (!sources) return 0;
    const char *p = sources;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && isspace((unsigned char)*p)) p++, n--;
        while (n && isspace((unsigned char)p[n - 1])) n--;
        if (n && strncmp(url, p, n) == 0) {
            char last = p[n - 1], next = url[n];
            if (last == '/' || last == ':' || next == 0 || next == '/' || next == '?' || next == '#') return 1;
        }
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

cv_status cv_fetch_local_path(const char *uri, char *out, size_t cap, cv_error *err) {
    if (strncmp(uri, "file://", 7) != 0) {
        if (!*uri) return cv_errorf(err, CV_EINVAL, "uri: empty path");
        if ((size_t)snprintf(out, cap, "%s", uri) >= cap) return cv_errorf(err, CV_ERANGE, "uri: path too long");
        return CV_OK;
    }
    const char *p = uri + 7;
    if (strncasecmp(p, "localhost/", 10) == 0) p += 9;
    else if (*p != '/') {
        size_t h = strcspn(p, "/");
        return cv_errorf(err, CV_EINVAL,
                         "uri: file:// names the host \"%.*s\": only file:///PATH or file://localhost/PATH "
                         "(this server's files) are accepted", (int)(h > 64 ? 64 : h), p);
    }
    size_t n = 0;
    for (; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            int hi = hexval((unsigned char)p[1]), lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);
            if (lo < 0) return cv_errorf(err, CV_EINVAL, "uri: a %% not followed by two hex digits");
            c = hi * 16 + lo;
            if (c == 0) return cv_errorf(err, CV_EINVAL, "uri: %%00 in a file:// URI");
            p += 2;
        }
        if (n + 1 >= cap) return cv_errorf(err, CV_ERANGE, "uri: path too long");
        out[n++] = (char)c;
    }
    out[n] = 0;
    return CV_OK;
}

/* The absolute form of a path that may not exist, with "." and ".." collapsed. */
static int normalize(const char *in, char *out, size_t cap) {
    char buf[PATH_MAX * 2];
    if (in[0] == '/') snprintf(buf, sizeof buf, "%s", in);
    else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return -1;
        snprintf(buf, sizeof buf, "%s/%s", cwd, in);
    }
    size_t n = 0;
    out[0] = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0) continue;
        if (strcmp(c, "..") == 0) {
            while (n > 0 && out[n - 1] != '/') n--;
            if (n > 0) n--;
            out[n] = 0;
            continue;
        }
        size_t l = strlen(c);
        if (n + 1 + l + 1 > cap) return -1;
        out[n++] = '/';
        memcpy(out + n, c, l + 1);
        n += l;
    }
    if (n == 0) snprintf(out, cap, "/");
    return 0;
}

/* 1 when the absolute path lies under one of the directories (each resolved). */
static int under_dirs(const char *path, const char *dirs) {
    if (!dirs) return 0;
    const char *p = dirs;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char dir[PATH_MAX], real[PATH_MAX];
        if (n && n < sizeof dir) {
            memcpy(dir, p, n);
            dir[n] = 0;
            if (realpath(dir, real)) {
                size_t l = strlen(real);
                if (strcmp(real, "/") == 0) return 1;
                if (strncmp(path, real, l) == 0 && (path[l] == 0 || path[l] == '/')) return 1;
            }
        }
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static cv_status check_sha(const char *path, const char *want, cv_error *err) {
    char got[65];
    cv_status st = cv_sha256_file(path, got, err);
    if (st != CV_OK) return st;
    if (strcasecmp(got, want) != 0)
        return cv_errorf(err, CV_EFORMAT, "%s: sha256 is %s, expected %s", path, got, want);
    return CV_OK;
}

/* A local file: inside model_dirs, regular, GGUF magic; opened without blocking. */
static cv_status local_file(const char *uri, const char *sha256, const cv_fetch_opts *o, char *path, size_t cap,
                            cv_error *err) {
    char want[PATH_MAX], real[PATH_MAX];
    cv_status st = cv_fetch_local_path(uri, want, sizeof want, err);
    if (st != CV_OK) return st;
    const char *dirs = o ? o->model_dirs : NULL;
    if (!realpath(want, real)) {
        int e = errno;
        /* Existence is only told about paths inside model_dirs. */
        char norm[PATH_MAX];
        if (normalize(want, norm, sizeof norm) != 0 || !under_dirs(norm, dirs))
            return cv_errorf(err, CV_EPERM, "uri \"%.200s\": outside model_dirs", uri);
        return cv_errorf(err, e == EACCES ? CV_EPERM : CV_ENOTFOUND, "uri \"%.200s\": %s", uri,
                         e == EACCES ? "not readable" : "not found");
    }
    if (!under_dirs(real, dirs)) return cv_errorf(err, CV_EPERM, "uri \"%.200s\": outside model_dirs", uri);
    int fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return cv_errorf(err, errno == ENOENT ? CV_ENOTFOUND : CV_EPERM, "uri \"%.200s\": %s", uri,
                         errno == ENOENT ? "not found" : "not readable");
    struct stat sb;
    unsigned char magic[4];
    if (fstat(fd, &sb) != 0) st = cv_errorf(err, CV_EPERM, "uri \"%.200s\": not readable", uri);
    else if (!S_ISREG(sb.st_mode)) st = cv_errorf(err, CV_EINVAL, "uri \"%.200s\": not a regular file", uri);
    else if (pread(fd, magic, 4, 0) != 4 || memcmp(magic, "GGUF", 4) != 0)
        st = cv_errorf(err, CV_EFORMAT, "uri \"%.200s\": not a GGUF file", uri);
    close(fd);
    if (st != CV_OK) return st;
    if ((size_t)snprintf(path, cap, "%s", real) >= cap) return cv_errorf(err, CV_ERANGE, "uri: path too long");
    return sha256 && *sha256 ? check_sha(path, sha256, err) : CV_OK;
}

/* ---- downloads ---- */

typedef struct xfer {
    FILE *f;
    uint64_t have;      /* bytes of the .part before this response */
    uint64_t written;   /* bytes of this response's body kept */
    uint64_t max;
    long status;        /* of the response being received */
    int started;        /* its body began */
    int ranges;         /* the origin supports byte ranges */
    int too_big, bad_range, write_failed;
    atomic_int *cancel;
} xfer;

static size_t on_header(char *p, size_t size, size_t n, void *ctx) {
    xfer *x = ctx;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        x->started = 0;
        if (x->status == 206) x->ranges = 1;
    } else if (len > 14 && strncasecmp(p, "accept-ranges:", 14) == 0) {
        char v[64];
        size_t m = len - 14 < sizeof v - 1 ? len - 14 : sizeof v - 1;
        memcpy(v, p + 14, m);
        v[m] = 0;
        if (strstr(v, "bytes")) x->ranges = 1;
    } else if (len > 14 && strncasecmp(p, "content-range:", 14) == 0 && x->status == 206) {
        char v[128];
        size_t m = len - 14 < sizeof v - 1 ? len - 14 : sizeof v - 1;
        memcpy(v, p + 14, m);
        v[m] = 0;
        const char *b = strstr(v, "bytes");
        if (!b || strtoull(b + 5 + strspn(b + 5, " "), NULL, 10) != x->have) x->bad_range = 1;
    }
    return len;
}

static size_t on_data(char *p, size_t size, size_t n, void *ctx) {
    xfer *x = ctx;
    size_t len = size * n;
    if (x->status >= 300 && x->status < 400) return len; /* a redirect's body */
    if (!x->started) {
        x->started = 1;
        if (x->status == 206 && x->bad_range) return 0;
        if (x->status != 206 && x->have) {
            /* The whole body again: start the file over. */
            fflush(x->f);
            if (ftruncate(fileno(x->f), 0) != 0) {
                x->write_failed = 1;
                return 0;
            }
            x->have = 0;
        }
    }
    if (x->max && x->have + x->written + len > x->max) {
        x->too_big = 1;
        return 0;
    }
    if (fwrite(p, 1, len, x->f) != len) {
        x->write_failed = 1;
        return 0;
    }
    x->written += len;
    return len;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    xfer *x = ctx;
    return x->cancel && atomic_load(x->cancel) ? 1 : 0;
}

static const char *short_reason(CURLcode rc, int *interrupted) {
    *interrupted = 0;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: return "cannot resolve the host";
    case CURLE_COULDNT_CONNECT: return "cannot connect";
    case CURLE_HTTP_RETURNED_ERROR: return "the origin refused the request";
    case CURLE_OPERATION_TIMEDOUT: *interrupted = 1; return "timed out";
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING: *interrupted = 1; return "interrupted";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE: return "TLS error";
    default: return "transfer error";
    }
}

#define MAX_REDIRECTS 5

/* Downloads url into part. *keep tells whether a failed download's .part may be resumed. */
static cv_status download(const char *url, const char *part, const cv_fetch_opts *o, int *keep, cv_error *err) {
    *keep = 0;
    struct stat sb;
    double max_age = o->part_max_age_s > 0 ? o->part_max_age_s : CV_FETCH_PART_MAX_AGE_S;
    if (stat(part, &sb) == 0 && difftime(time(NULL), sb.st_mtime) > max_age) remove(part);
    uint64_t have = stat(part, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    FILE *f = fopen(part, "ab");
    if (!f) return cv_errorf(err, CV_EIO, "download failed: cannot write the cache file");
    xfer x = {.f = f, .have = have, .max = o->max_bytes, .cancel = o->cancel};
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(f);
        return cv_errorf(err, CV_ENOMEM, "cannot start libcurl");
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    /* Redirects are followed here, one hop at a time, each checked against model_sources. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    /* A stalled transfer (under 1 kB/s for 30 s) is an error, a slow one is not. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (o->max_bytes) curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_bytes);
    char cur[2048];
    snprintf(cur, sizeof cur, "%s", url);
    const char *refused = NULL;
    CURLcode rc = CURLE_OK;
    for (int hop = 0;; hop++) {
        char range[32];
        snprintf(range, sizeof range, "%llu-", (unsigned long long)x.have);
        curl_easy_setopt(c, CURLOPT_URL, cur);
        curl_easy_setopt(c, CURLOPT_RANGE, x.have ? range : NULL);
        x.status = 0;
        x.bad_range = 0;
        rc = curl_easy_perform(c);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        if (rc != CURLE_OK || code < 300 || code >= 400) break;
        char *to = NULL;
        curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &to);
        if (!to) refused = "a redirect without a location";
        else if (hop >= MAX_REDIRECTS) refused = "too many redirects";
        else if (!is_remote(to) || !cv_fetch_source_allowed(to, o->model_sources))
            refused = "redirected to a URL outside model_sources";
        else if ((size_t)snprintf(cur, sizeof cur, "%s", to) >= sizeof cur) refused = "redirect URL too long";
        if (refused) break;
    }
    curl_easy_cleanup(c);
    int werr = fclose(f) != 0 || x.write_failed;
    int cancelled = o->cancel && atomic_load(o->cancel);
    int interrupted = 0;
    const char *reason = rc != CURLE_OK ? short_reason(rc, &interrupted) : NULL;
    if (x.bad_range) interrupted = 0, reason = "the origin answered another range";
    stat(part, &sb);
    int resumable = x.ranges && sb.st_size > 0;
    if (cancelled) {
        *keep = resumable;
        return cv_errorf(err, CV_ECANCELLED, "download failed: cancelled");
    }
    if (x.too_big || rc == CURLE_FILESIZE_EXCEEDED)
        return cv_errorf(err, CV_ERANGE, "download failed: larger than the limit of %llu bytes",
                         (unsigned long long)o->max_bytes);
    if (refused) return cv_errorf(err, CV_EPERM, "download failed: %s", refused);
    if (werr) return cv_errorf(err, CV_EIO, "download failed: cannot write the cache file");
    if (reason) {
        *keep = interrupted && resumable;
        return cv_errorf(err, CV_EIO, "download failed: %s", reason);
    }
    return CV_OK;
}

/* ---- the entry points ---- */

cv_status cv_model_fetch_check(const char *uri, const char *sha256, const cv_fetch_opts *o, cv_error *err) {
    if (sha256 && *sha256 && !valid_sha256(sha256))
        return cv_errorf(err, CV_EINVAL, "sha256: \"%.80s\" is not 64 hex digits", sha256);
    if (!is_remote(uri)) {
        if (strstr(uri, "://") && strncmp(uri, "file://", 7) != 0)
            return cv_errorf(err, CV_EINVAL, "uri: \"%.200s\" is neither a path nor file/http/https", uri);
        char path[PATH_MAX];
        return cv_fetch_local_path(uri, path, sizeof path, err);
    }
    const char *sources = o ? o->model_sources : NULL;
    if (!sources || !*sources)
        return cv_errorf(err, CV_EPERM,
                         "uri: remote models are refused: set model_sources (--model-sources) to the URL "
                         "prefixes allowed");
    if (!cv_fetch_source_allowed(uri, sources))
        return cv_errorf(err, CV_EPERM, "uri: \"%.200s\" starts with none of model_sources", uri);
    if (!sha256 || !*sha256) return cv_errorf(err, CV_EINVAL, "sha256: required for a download (%.200s)", uri);
    if (!o->cache_dir || !*o->cache_dir)
        return cv_errorf(err, CV_EINVAL, "uri: downloads need a model cache directory (--model-cache-dir)");
    return CV_OK;
}

cv_status cv_model_fetch(const char *uri, const char *sha256, const cv_fetch_opts *o, char *path, size_t cap,
                         cv_error *err) {
    cv_status st = cv_model_fetch_check(uri, sha256, o, err);
    if (st != CV_OK) return st;
    if (!is_remote(uri)) return local_file(uri, sha256, o, path, cap, err);
    if (mkdir(o->cache_dir, 0755) != 0 && errno != EEXIST)
        return cv_errorf(err, CV_EIO, "%s: %s", o->cache_dir, strerror(errno));
    char part[1200];
    if ((size_t)snprintf(path, cap, "%s/%s.gguf", o->cache_dir, sha256) >= cap ||
        (size_t)snprintf(part, sizeof part, "%s.part", path) >= sizeof part)
        return cv_errorf(err, CV_ERANGE, "cache path too long");
    struct stat sb;
    if (stat(path, &sb) == 0 && check_sha(path, sha256, NULL) == CV_OK) return CV_OK;
    int keep = 0;
    if ((st = download(uri, part, o, &keep, err)) != CV_OK) {
        if (!keep) remove(part);
        return st;
    }
    if (check_sha(part, sha256, NULL) != CV_OK) {
        remove(part); /* a wrong body must not be resumed */
        return cv_errorf(err, CV_EFORMAT, "download failed: sha256 mismatch");
    }
    if (rename(part, path) != 0) return cv_errorf(err, CV_EIO, "%s: %s", path, strerror(errno));
    return CV_OK;
}
