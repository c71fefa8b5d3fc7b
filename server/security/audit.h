/* audit: the security audit trail, one JSON object per line.
 *
 * {"ts":"2026-11-28T16:03:35.123Z","event":"auth_failure","subject":"alice",
 *  "peer":"ipv4:10.0.0.7:51234","method":"/corvid.v1.Admin/LoadModel",
 *  "outcome":"PERMISSION_DENIED","detail":"..."}
 * ts is RFC 3339 UTC with milliseconds; fields that are NULL are left out.
 *
 * Each line is written with one write() on an O_APPEND descriptor (under a mutex, so
 * lines from threads never interleave, and appends from several processes neither).
 * Secrets stay out: anything shaped like a JWT (eyJ... . ... . ...) or following
 * "Bearer " in any field is replaced by "[REDACTED]" before writing; the free-text
 * detail also goes through the PII masker when one is set. Fields are cut to 2048
 * bytes. A failed write is reported to the caller and never blocks serving.
 */
#ifndef CV_AUDIT_H
#define CV_AUDIT_H

#include "cv_error.h"
#include "pii.h"

typedef enum cv_audit_event {
    CV_AUDIT_ADMIN_ACTION,
    CV_AUDIT_AUTH_FAILURE,
    CV_AUDIT_MODEL_LOAD,
    CV_AUDIT_EXTERNAL_REQUEST
} cv_audit_event;

typedef struct cv_audit_entry {
    cv_audit_event event;
    const char *subject;  /* JWT sub, or NULL */
    const char *peer;     /* gRPC peer string */
    const char *method;   /* "/corvid.v1.Admin/LoadModel", or a URL for external requests */
    const char *outcome;  /* "ok", a gRPC code name, "failed", ... */
    const char *detail;   /* free text */
} cv_audit_entry;

typedef struct cv_audit cv_audit;

/* path NULL, "" or "-": stderr. A file is created 0640 and appended to. */
cv_status cv_audit_open(const char *path, cv_audit **out, cv_error *err);
void cv_audit_close(cv_audit *a);
/* Reopens the file (after log rotation); a no-op on stderr. */
cv_status cv_audit_reopen(cv_audit *a, cv_error *err);
/* Masks detail with pii from now on (NULL: no masking); pii must outlive a. */
void cv_audit_set_pii(cv_audit *a, const cv_pii *pii);
cv_status cv_audit_write(cv_audit *a, const cv_audit_entry *e, cv_error *err);

const char *cv_audit_event_name(cv_audit_event ev);

#endif
