#include "audit.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

#define FIELD_MAX 2048

struct cv_audit {
    pthread_mutex_t mu;
    char *path;  /* NULL: stderr */
    int fd;
    const cv_pii *pii;
    unsigned long long max_bytes;  /* 0: no rotation */
    unsigned keep;                 /* rotated files kept: PATH.1 .. PATH.keep */
    unsigned long long size;       /* bytes in the current file */
};

static const char *const event_names[] = {"admin_action", "auth_failure", "model_load",
                                          "external_request"};

const char *cv_audit_event_name(cv_audit_event ev) {
    return (unsigned)ev < 4 ? event_names[ev] : "unknown";
}

static cv_status open_fd(const char *path, int *fd, unsigned long long *size, cv_error *err) {
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (*fd < 0) return cv_errorf(err, CV_EIO, "audit log %s: %s", path, strerror(errno));
    struct stat sb;
    *size = fstat(*fd, &sb) == 0 ? (unsigned long long)sb.st_size : 0;
    return CV_OK;
}

cv_status cv_audit_open(const char *path, cv_audit **out, cv_error *err) {
    cv_audit *a = calloc(1, sizeof *a);
    if (!a) return cv_errorf(err, CV_ENOMEM, "audit: out of memory");
    a->fd = STDERR_FILENO;
    if (path && *path && strcmp(path, "-") != 0) {
        cv_status st = (a->path = strdup(path)) ? open_fd(path, &a->fd, &a->size, err)
                                                : cv_errorf(err, CV_ENOMEM, "audit: out of memory");
        if (st != CV_OK) {
            free(a->path);
            free(a);
            return st;
        }
    }
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return CV_OK;
}

void cv_audit_close(cv_audit *a) {
    if (!a) return;
    if (a->path) close(a->fd);
    pthread_mutex_destroy(&a->mu);
    free(a->path);
    free(a);
}

cv_status cv_audit_reopen(cv_audit *a, cv_error *err) {
    if (!a->path) return CV_OK;
    int fd;
    unsigned long long size;
    cv_status st = open_fd(a->path, &fd, &size, err);
    if (st != CV_OK) return st;
    pthread_mutex_lock(&a->mu);
    close(a->fd);
    a->fd = fd;
    a->size = size;
    pthread_mutex_unlock(&a->mu);
    return CV_OK;
}

void cv_audit_set_pii(cv_audit *a, const cv_pii *pii) { a->pii = pii; }

void cv_audit_set_rotation(cv_audit *a, unsigned long long max_bytes, unsigned keep) {
    if (!a->path) return;
    a->max_bytes = max_bytes;
    a->keep = keep;
}

/* PATH.i, or PATH for i == 0 (into buf, which holds strlen(path) + 12). */
static void numbered(const char *path, unsigned i, char *buf, size_t cap) {
    if (i) snprintf(buf, cap, "%s.%u", path, i);
    else snprintf(buf, cap, "%s", path);
}

/* PATH.keep-1 -> PATH.keep, ..., PATH -> PATH.1, then a new PATH. Under a->mu. */
static cv_status rotate(cv_audit *a, cv_error *err) {
    size_t cap = strlen(a->path) + 12;
    char *from = malloc(cap), *to = malloc(cap);
    cv_status st = CV_OK;
    if (!from || !to) {
        st = cv_errorf(err, CV_ENOMEM, "audit: out of memory");
        goto out;
    }
    if (a->keep == 0 && unlink(a->path) != 0 && errno != ENOENT) {
        st = cv_errorf(err, CV_EIO, "audit log %s: cannot start it anew: %s", a->path, strerror(errno));
        goto out;
    }
    for (unsigned i = a->keep; i >= 1; i--) {
        numbered(a->path, i - 1, from, cap);
        numbered(a->path, i, to, cap);
        if (rename(from, to) != 0 && errno != ENOENT) {
            st = cv_errorf(err, CV_EIO, "audit log %s: cannot rotate it to %s: %s", a->path, to,
                           strerror(errno));
            goto out;
        }
    }
    int fd;
    unsigned long long size;
    if ((st = open_fd(a->path, &fd, &size, err)) != CV_OK) goto out;
    close(a->fd);
    a->fd = fd;
    a->size = size;
out:
    free(from);
    free(to);
    return st;
}

static int b64url_char(char c) {
    return isalnum((unsigned char)c) || c == '-' || c == '_';
}

static size_t b64url_run(const char *s, size_t i, size_t n) {
    size_t j = i;
    while (j < n && b64url_char(s[j])) j++;
    return j - i;
}

/* Length of a JWT-shaped span at s[i] ("eyJ" base64url "." base64url ["." base64url]),
 * or 0. Header and payload alone already carry the claims, so they count too. */
static size_t jwt_span(const char *s, size_t i, size_t n) {
    if (n - i < 4 || memcmp(s + i, "eyJ", 3) != 0) return 0;
    size_t j = i + b64url_run(s, i, n);
    if (j >= n || s[j] != '.' || b64url_run(s, j + 1, n) == 0) return 0;
    j += 1 + b64url_run(s, j + 1, n);
    if (j < n && s[j] == '.') j += 1 + b64url_run(s, j + 1, n);
    return j - i;
}

/* Copy of s[0..n) with credentials replaced by [REDACTED]. */
static char *redact(const char *s, size_t n, size_t *out_len) {
    static const char mark[] = "[REDACTED]";
    /* Each replaced span is at least 4 bytes and becomes 10: 3x covers the worst case. */
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        size_t span = jwt_span(s, i, n);
        if (span) {
            memcpy(o, mark, sizeof mark - 1);
            o += sizeof mark - 1;
            i += span;
            continue;
        }
        if (n - i > 7 && strncasecmp(s + i, "bearer ", 7) == 0) {
            size_t j = i + 7;
            while (j < n && s[j] == ' ') j++;
            size_t k = j;
            while (k < n && !isspace((unsigned char)s[k]) && s[k] != '"' && s[k] != '\'') k++;
            if (k > j) {
                memcpy(o, s + i, j - i);
                o += j - i;
                memcpy(o, mark, sizeof mark - 1);
                o += sizeof mark - 1;
                i = k;
                continue;
            }
        }
        *o++ = s[i++];
    }
    *o = 0;
    *out_len = (size_t)(o - out);
    return out;
}

/* The field as a JSON string: cut, redacted, PII-masked (when pii), valid UTF-8. */
static json_t *clean_field(const char *s, const cv_pii *pii) {
    size_t n = strnlen(s, FIELD_MAX), len = 0;
    char *red = redact(s, n, &len), *masked = NULL;
    if (!red) return NULL;
    if (pii && cv_pii_mask(pii, red, len, &masked, NULL, NULL) == CV_OK) {
        free(red);
        red = masked;
        len = strlen(masked);
    }
    size_t m;
    char *fixed = cv_utf8_repaired(red, len, &m);
    json_t *j = fixed ? json_stringn(fixed, m) : NULL;
    free(fixed);
    free(red);
    return j;
}

/* RFC 3339 UTC with milliseconds of a CLOCK_REALTIME time in seconds. */
static json_t *timestamp(double t) {
    char buf[40];
    struct tm tm;
    time_t sec = (time_t)t;
    long ms = (long)((t - (double)sec) * 1000);
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03ldZ", ms < 0 ? 0 : ms > 999 ? 999 : ms);
    return json_string(buf);
}

static double now_realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

cv_status cv_audit_write(cv_audit *a, const cv_audit_entry *e, cv_error *err) {
    return cv_audit_write_count(a, e, NULL, err);
}

cv_status cv_audit_write_count(cv_audit *a, const cv_audit_entry *e, const cv_audit_count *c, cv_error *err) {
    const char *names[] = {"subject", "peer", "method", "outcome", "reason", "detail", "trace_id"};
    const char *vals[] = {e->subject, e->peer, e->method, e->outcome, c ? c->reason : NULL, e->detail, e->trace_id};
    json_t *o = json_object();
    int bad = !o || json_object_set_new(o, "ts", timestamp(now_realtime())) ||
              json_object_set_new(o, "event", json_string(cv_audit_event_name(e->event)));
    /* Personal data can be in the subject (an e-mail) and in the free text. */
    for (int i = 0; i < 7 && !bad; i++)
        if (vals[i])
            bad = json_object_set_new(o, names[i], clean_field(vals[i], i == 0 || i == 5 ? a->pii : NULL));
    if (c && !bad)
        bad = json_object_set_new(o, "count", json_integer((json_int_t)c->count)) ||
              json_object_set_new(o, "first", timestamp(c->first)) ||
              json_object_set_new(o, "last", timestamp(c->last));
    char *line = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return cv_errorf(err, CV_ENOMEM, "audit: out of memory");
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps's NUL: the line goes out in one write() */
    cv_status st = CV_OK;
    pthread_mutex_lock(&a->mu);
    size_t done = 0;
    if (a->max_bytes && a->size > 0 && a->size + n + 1 > a->max_bytes) st = rotate(a, err);
    while (st == CV_OK && done < n + 1) {
        ssize_t w = write(a->fd, line + done, n + 1 - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            st = cv_errorf(err, CV_EIO, "audit log %s: %s", a->path ? a->path : "stderr",
                           w < 0 ? strerror(errno) : "short write");
            break;
        }
        done += (size_t)w;
    }
    a->size += done;
    pthread_mutex_unlock(&a->mu);
    free(line);
    return st;
}
