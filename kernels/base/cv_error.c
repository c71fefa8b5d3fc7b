#include "cv_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

cv_status cv_errorf(cv_error *err, cv_status code, const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

cv_status cv_error_wrap(cv_error *err, const char *fmt, ...) {
    if (!err) return CV_EINTERNAL;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is intended: the message keeps as much of both parts as fits. */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = 0;
    return err->code;
}

const char *cv_status_name(cv_status code) {
    static const char *const names[] = {
        "ok", "invalid argument", "out of memory", "i/o error", "bad format",
        "unsupported", "not found", "out of range", "busy", "timeout",
        "unavailable", "unauthenticated", "permission denied", "cancelled",
        "internal error",
    };
    if ((unsigned)code < sizeof names / sizeof names[0]) return names[code];
    return "unknown error";
}
