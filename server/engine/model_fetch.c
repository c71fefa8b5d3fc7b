#include "model_fetch.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

cv_status cv_sha256_file(const char *path, char hex[65], cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, CV_ENOTFOUND, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cv_status st = CV_OK;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = cv_errorf(err, CV_ENOMEM, "sha256: cannot initialise OpenSSL's digest");
        goto out;
    }
    static unsigned char buf[1 << 16];
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

static cv_status check_sha(const char *path, const char *want, cv_error *err) {
    char got[65];
    cv_status st = cv_sha256_file(path, got, err);
    if (st != CV_OK) return st;
    if (strcasecmp(got, want) != 0)
        return cv_errorf(err, CV_EFORMAT, "%s: sha256 is %s, expected %s", path, got, want);
    return CV_OK;
}

typedef struct sink {
    FILE *f;
    uint64_t written, max;
    int too_big;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *ctx) {
    sink *s = ctx;
    size_t len = size * n;
    if (s->max && s->written + len > s->max) {
        s->too_big = 1;
        return 0;
    }
    s->written += len;
    return fwrite(p, 1, len, s->f);
}

static cv_status download(const char *url, const char *part, uint64_t max_bytes, cv_error *err) {
    struct stat sb;
    uint64_t have = stat(part, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    FILE *f = fopen(part, "ab");
    if (!f) return cv_errorf(err, CV_EIO, "%s: %s", part, strerror(errno));
    sink s = {f, have, max_bytes, 0};
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(f);
        return cv_errorf(err, CV_ENOMEM, "cannot start libcurl");
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    /* A stalled transfer (under 1 kB/s for 30 s) is an error, a slow one is not. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (have) curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)have);
    if (max_bytes) curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
    CURLcode rc = curl_easy_perform(c);
    long http = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
    curl_easy_cleanup(c);
    int werr = fclose(f) != 0;
    if (s.too_big || rc == CURLE_FILESIZE_EXCEEDED)
        return cv_errorf(err, CV_ERANGE, "%s: larger than the limit of %llu bytes", url,
                         (unsigned long long)max_bytes);
    if (rc != CURLE_OK)
        return cv_errorf(err, CV_EIO, "%s: %s (HTTP %ld)", url, cerr[0] ? cerr : curl_easy_strerror(rc), http);
    if (werr) return cv_errorf(err, CV_EIO, "%s: write failed", part);
    return CV_OK;
}

static int is_remote(const char *uri) {
    return strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0;
}

cv_status cv_model_fetch_check(const char *uri, const char *sha256, const char *cache_dir, cv_error *err) {
    if (sha256 && *sha256 && !valid_sha256(sha256))
        return cv_errorf(err, CV_EINVAL, "sha256: \"%.80s\" is not 64 hex digits", sha256);
    if (!is_remote(uri)) {
        if (strstr(uri, "://") && strncmp(uri, "file://", 7) != 0)
            return cv_errorf(err, CV_EINVAL, "uri: \"%.200s\" is neither a path nor file/http/https", uri);
        return CV_OK;
    }
    if (!sha256 || !*sha256) return cv_errorf(err, CV_EINVAL, "sha256: required for a download (%.200s)", uri);
    if (!cache_dir || !*cache_dir)
        return cv_errorf(err, CV_EINVAL, "uri: downloads need a model cache directory (--model-cache-dir)");
    return CV_OK;
}

cv_status cv_model_fetch(const char *uri, const char *sha256, const char *cache_dir,
                         uint64_t max_bytes, char *path, size_t cap, cv_error *err) {
    cv_status st = cv_model_fetch_check(uri, sha256, cache_dir, err);
    if (st != CV_OK) return st;
    if (!is_remote(uri)) {
        const char *p = strncmp(uri, "file://", 7) == 0 ? uri + 7 : uri;
        if ((size_t)snprintf(path, cap, "%s", p) >= cap) return cv_errorf(err, CV_ERANGE, "uri: path too long");
        return sha256 && *sha256 ? check_sha(path, sha256, err) : CV_OK;
    }
    if (mkdir(cache_dir, 0755) != 0 && errno != EEXIST)
        return cv_errorf(err, CV_EIO, "%s: %s", cache_dir, strerror(errno));
    char part[1200];
    if ((size_t)snprintf(path, cap, "%s/%s.gguf", cache_dir, sha256) >= cap ||
        (size_t)snprintf(part, sizeof part, "%s.part", path) >= sizeof part)
        return cv_errorf(err, CV_ERANGE, "cache path too long");
    struct stat sb;
    if (stat(path, &sb) == 0 && check_sha(path, sha256, NULL) == CV_OK) return CV_OK;
    if ((st = download(uri, part, max_bytes, err)) != CV_OK) return st;
    if ((st = check_sha(part, sha256, err)) != CV_OK) {
        remove(part); /* a wrong body must not be resumed */
        return st;
    }
    if (rename(part, path) != 0) return cv_errorf(err, CV_EIO, "%s: %s", path, strerror(errno));
    return CV_OK;
}
