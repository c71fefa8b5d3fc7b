/* audit: the security audit trail, one JSON object per line.
 *
 * {"ts":"2026-11-28T16:03:35.123Z","event":"auth_failure","subject":"alice",
 *  "peer":"ipv4:10.0.0.7:51234","method":"/corvid.v1.Admin/LoadModel",
 *  "outcome":"PERMISSION_DENIED","detail":"...","trace_id":"4bf9..."}
 * ts is RFC 3339 UTC with milliseconds; fields that are NULL are left out. A line that
 * stands for many events (auth failures, counted by audit_tally.h) also carries
 * "reason", "count" and the "first" and "last" event times.
 *
 * Each line is written with one write() on an O_APPEND descriptor (under a mutex, so
 * lines from threads never interleave, and appends from several processes neither).
 * Secrets stay out: anything shaped like a JWT (eyJ... . ... . ...) or following
 * "Bearer " in any field is replaced by "[REDACTED]" before writing; subject and detail
 * also go through the PII masker when one is set. Fields are cut to 2048 bytes. A
 * failed write is reported to the caller and never blocks serving.
 *
 * Subject masking, decided: the subject is masked like every other personal datum
 * (pii.h, partial style in corvid-server: an e-mail "alice@corp.example" becomes
 * "a****@corp.example"), not replaced by a keyed hash. The same person then reads the
 * same in subject and detail, service accounts ("ci-deploy") stay readable, and there
 * is no key to keep, rotate and lose; a hash would make the log useless without a
 * tool and still be guessable for the few subjects an attacker would try.
 *
 * Size bound (cv_audit_set_rotation): before a line would take the file past
 * max_bytes, the file is renamed PATH.1 (PATH.1 to PATH.2, ..., PATH.keep is
 * dropped) and a new PATH is started; with keep 0 the old lines are dropped. Disk use
 * is then at most (keep + 1) x max_bytes, a file passing max_bytes only by a single
 * line longer than max_bytes. One process per file: the size is counted in memory
 * (from fstat at open and reopen). If the rename fails the line is not written and
 * the error is returned: the bound holds.
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
    const char *trace_id; /* the W3C trace id of the request behind the event, or NULL */
} cv_audit_entry;

/* What a line that stands for several events adds. */
typedef struct cv_audit_count {
    const char *reason;        /* a fixed word */
    unsigned long long count;  /* >= 1 */
    double first, last;        /* CLOCK_REALTIME seconds of the first and last event */
} cv_audit_count;

typedef struct cv_audit cv_audit;

/* path NULL, "" or "-": stderr. A file is created 0640 and appended to. */
cv_status cv_audit_open(const char *path, cv_audit **out, cv_error *err);
void cv_audit_close(cv_audit *a);
/* Reopens the file (after log rotation); a no-op on stderr. */
cv_status cv_audit_reopen(cv_audit *a, cv_error *err);
/* Rotates by size from now on (see the top); max_bytes 0: never (external rotation
 * with cv_audit_reopen). A no-op on stderr. Call before the log is shared. */
void cv_audit_set_rotation(cv_audit *a, unsigned long long max_bytes, unsigned keep);
/* Masks subject and detail with pii from now on (NULL: no masking); pii must outlive a. */
void cv_audit_set_pii(cv_audit *a, const cv_pii *pii);
cv_status cv_audit_write(cv_audit *a, const cv_audit_entry *e, cv_error *err);
/* The same with "reason", "count", "first" and "last" (c NULL: cv_audit_write). */
cv_status cv_audit_write_count(cv_audit *a, const cv_audit_entry *e, const cv_audit_count *c, cv_error *err);

const char *cv_audit_event_name(cv_audit_event ev);

#endif
