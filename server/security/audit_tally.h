/* audit_tally: auth failures counted per key and interval, written as one audit line
 * per key when the interval ends (and by cv_audit_tally_free), instead of one line per
 * attempt: a client hammering the server with bad tokens costs one line an interval.
 *
 * Key: the client address (IP without the port, which changes with every
 * connection), the reason (a short fixed word from the caller, e.g. "invalid_token")
 * and the subject (set only once a token verified, so a client cannot invent keys
 * with it). The line is the first attempt of the interval (its method, outcome,
 * detail, peer) with "reason", "count", "first" and "last" added, "peer" being the
 * address:
 *   {"ts":...,"event":"auth_failure","peer":"10.0.0.7","method":"/corvid.v1.Admin/GetStatus",
 *    "outcome":"UNAUTHENTICATED","reason":"invalid_token","detail":"invalid token: ...",
 *    "count":412,"first":...,"last":...}
 *
 * Bounded: at most max_keys keys an interval, in two tables allocated once (one
 * counting, one being written). Attempts for keys beyond max_keys are counted
 * together and written as one line with peer "(other clients)" and reason
 * "table_full". A flood of distinct addresses neither grows memory nor writes more
 * than max_keys + 1 lines an interval.
 *
 * Cost of an attempt: one hash lookup (seeded at random) under a mutex, no I/O. The
 * writes happen on the tally's own thread, after the tables are swapped, so callers
 * on the completion-queue thread never wait for the disk.
 */
#ifndef CV_AUDIT_TALLY_H
#define CV_AUDIT_TALLY_H

#include "audit.h"
#include "cv_error.h"

typedef struct cv_audit_tally_config {
    double interval_s;  /* > 0 */
    unsigned max_keys;  /* >= 1 */
} cv_audit_tally_config;

typedef struct cv_audit_tally cv_audit_tally;

/* Starts the thread that writes to audit every interval_s; audit must outlive it. */
cv_status cv_audit_tally_new(cv_audit *audit, const cv_audit_tally_config *c, cv_audit_tally **out,
                             cv_error *err);
/* Counts one attempt. addr and reason: the key's parts (cut to 63 and 31 bytes);
 * first: the attempt, whose subject is part of the key and whose other fields are
 * kept when it is the key's first of the interval. Thread-safe. */
void cv_audit_tally_add(cv_audit_tally *t, const char *addr, const char *reason,
                        const cv_audit_entry *first);
/* Writes the counts so far and starts a new interval (also done by the thread). */
void cv_audit_tally_flush(cv_audit_tally *t);
/* Stops the thread and writes what is left. */
void cv_audit_tally_free(cv_audit_tally *t);

#endif
