#include "rag_ingest.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INGEST_MAX_FILE (1ull << 30)

static cv_status read_file(const char *path, char **out, size_t *len, cv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cv_errorf(err, errno == ENOENT ? CV_ENOTFOUND : CV_EIO, "reading %s: %s", path,
                             strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    cv_status st = CV_OK;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 131072;
            char *p = cap <= INGEST_MAX_FILE + 65537 ? realloc(buf, cap) : NULL;
            if (!p) {
                st = cap > INGEST_MAX_FILE + 65537
                         ? cv_errorf(err, CV_ERANGE, "%s: larger than the 1 GiB input limit", path)
                         : cv_errorf(err, CV_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, 65536, f);
        n += k;
        if (k < 65536) {
            if (ferror(f)) st = cv_errorf(err, CV_EIO, "reading %s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st) {
        free(buf);
        return st;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return CV_OK;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The first ATX level-1..6 heading's text, or NULL; a new string. */
static char *md_title(const char *text, size_t len) {
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        if (text[i] == '#') {
            size_t p = i;
            while (p < e && text[p] == '#') p++;
            if (p < e && text[p] == ' ') {
                while (p < e && text[p] == ' ') p++;
                size_t q = e;
                while (q > p && (text[q - 1] == ' ' || text[q - 1] == '\r' || text[q - 1] == '#')) q--;
                if (q > p) return strndup(text + p, q - p);
            }
        }
        i = e + 1;
    }
    return NULL;
}

static cv_status jsonl_line(cv_rag_builder *b, const char *path, size_t line, const char *s,
                            size_t n, cv_error *err) {
    json_error_t je;
    json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!o) return cv_errorf(err, CV_EFORMAT, "%s:%zu: invalid JSON at column %d: %s", path, line,
                             je.column, je.text);
    cv_status st = CV_OK;
    const char *names[4] = {"id", "title", "url", "text"};
    const char *vals[4] = {0};
    char idbuf[32], defid[64];
    if (!json_is_object(o)) {
        st = cv_errorf(err, CV_EFORMAT, "%s:%zu: expected a JSON object", path, line);
        goto done;
    }
    for (int k = 0; k < 4; k++) {
        json_t *v = json_object_get(o, names[k]);
        if (!v || json_is_null(v)) continue;
        if (k == 0 && json_is_integer(v)) {
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(v));
            vals[k] = idbuf;
        } else if (json_is_string(v)) {
            vals[k] = json_string_value(v);
        } else {
            st = cv_errorf(err, CV_EFORMAT, "%s:%zu: field \"%s\" must be a string%s", path, line,
                           names[k], k == 0 ? " or an integer" : "");
            goto done;
        }
    }
    if (!vals[3]) {
        st = cv_errorf(err, CV_EFORMAT, "%s:%zu: field \"text\" is missing", path, line);
        goto done;
    }
    if (!vals[0] || !*vals[0]) {
        snprintf(defid, sizeof defid, "%.40s:%zu", base_name(path), line);
        vals[0] = defid;
    }
    st = cv_rag_builder_add(b, vals[0], vals[1], vals[2], vals[3], strlen(vals[3]), err);
    if (st) cv_error_wrap(err, "%s:%zu", path, line);
done:
    json_decref(o);
    return st;
}

cv_status cv_rag_ingest_file(cv_rag_builder *b, const char *path, size_t *n_docs, cv_error *err) {
    int kind = ends_with(path, ".txt") ? 1 : ends_with(path, ".md") ? 2 : ends_with(path, ".jsonl") ? 3 : 0;
    if (!kind)
        return cv_errorf(err, CV_EUNSUPPORTED, "%s: unknown input type (expected .txt, .md or .jsonl)",
                         path);
    char *text = NULL;
    size_t len = 0, added = 0;
    cv_status st = read_file(path, &text, &len, err);
    if (st) return st;
    if (kind == 3) {
        size_t line = 0;
        for (size_t i = 0; i < len && !st;) {
            size_t e = i;
            while (e < len && text[e] != '\n') e++;
            line++;
            size_t k = i;
            while (k < e && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
            if (k < e) {
                st = jsonl_line(b, path, line, text + i, e - i, err);
                added += !st;
            }
            i = e + 1;
        }
    } else {
        char *title = kind == 2 ? md_title(text, len) : NULL;
        st = cv_rag_builder_add(b, path, title ? title : base_name(path), NULL, text, len, err);
        added += !st;
        free(title);
    }
    free(text);
    if (n_docs) *n_docs = added;
    return st;
}
