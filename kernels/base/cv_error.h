/* cv_error: the one error type every corvid module reports through.
 *
 * A function that can fail returns a cv_status (CV_OK == 0) and, when it fails,
 * fills the caller's cv_error (which may be NULL) with the same code and a
 * human-readable message naming what was wrong and where. cv_errorf returns the
 * code it was given so that `return cv_errorf(err, CV_EFORMAT, "...")` reads well.
 */
#ifndef CV_ERROR_H
#define CV_ERROR_H

typedef enum cv_status {
    CV_OK = 0,
    CV_EINVAL,       /* bad argument or request */
    CV_ENOMEM,       /* allocation failed */
    CV_EIO,          /* read/write/mmap/socket failure */
    CV_EFORMAT,      /* malformed or hostile input file or message */
    CV_EUNSUPPORTED, /* valid but not handled (type, architecture, ...) */
    CV_ENOTFOUND,    /* missing key, tensor, model, file */
    CV_ERANGE,       /* value out of its allowed range (lengths, limits) */
    CV_EBUSY,        /* queue or resource exhausted */
    CV_ETIMEOUT,     /* a deadline passed */
    CV_EUNAVAILABLE, /* service shutting down or unreachable */
    CV_EAUTH,        /* authentication failed */
    CV_EPERM,        /* authenticated but not allowed */
    CV_ECANCELLED,   /* cancelled by the caller */
    CV_EINTERNAL     /* a broken invariant: a bug, never bad input */
} cv_status;

typedef struct cv_error {
    cv_status code;
    char msg[512];
} cv_error;

cv_status cv_errorf(cv_error *err, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with context ("loading model: " + old message). */
cv_status cv_error_wrap(cv_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *cv_status_name(cv_status code);

#endif
