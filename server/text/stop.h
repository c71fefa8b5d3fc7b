/* stop: streaming stop-string matcher for one sequence.
 *
 * Fed the decoded text of each token as it comes, it returns the text that is now
 * final: text that can no longer be the start of a stop string and that does not
 * end inside a UTF-8 character. A pending partial match (and an incomplete UTF-8
 * sequence) is held back until the next piece decides it. When a stop string
 * completes, the matcher returns the text before it and reports which one; the
 * stop string itself and anything after it are dropped.
 *
 * With several stop strings the first to complete wins (earliest end; on a tie the
 * longest), which is what a token-by-token feed would see, so the result does not
 * depend on how the text is cut into pieces. Matching is on bytes.
 *
 * No allocation in the steady state: the hold-back buffer only grows when a piece
 * is longer than any before. One matcher per sequence; no shared state.
 */
#ifndef CV_STOP_H
#define CV_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "cv_error.h"

#define CV_STOP_MAX_STRINGS 16
#define CV_STOP_MAX_LEN 256 /* bytes per stop string */

typedef struct cv_stop cv_stop;

typedef struct cv_stop_out {
    const char *text; /* final text (not NUL-terminated); valid until the next call */
    size_t len;
    bool stopped;     /* a stop string completed: text is what preceded it */
    int which;        /* index of that stop string, -1 when none */
} cv_stop_out;

/* Stop strings must be non-empty, valid UTF-8 and at most CV_STOP_MAX_LEN bytes;
 * n may be 0 (then every piece passes through, UTF-8 completion still applies). */
cv_status cv_stop_new(const char *const *stops, size_t n, cv_stop **out, cv_error *err);
/* cv_stop_new's check alone, for a request checked before any work. Messages name
 * the strings as the APIs do: "stop: 20 strings given, ...", "stop[1] is empty". */
cv_status cv_stop_check(const char *const *stops, size_t n, cv_error *err);
void cv_stop_free(cv_stop *s);

/* Forget held text and a past stop, for a new sequence with the same strings. */
void cv_stop_reset(cv_stop *s);

/* Feed one piece. After a stop, further pieces are ignored (stopped stays true,
 * text empty). CV_ENOMEM if the buffer could not grow (the piece is not taken). */
cv_status cv_stop_feed(cv_stop *s, const char *piece, size_t len, cv_stop_out *out,
                       cv_error *err);

/* End of generation without a stop: returns everything still held back. */
cv_stop_out cv_stop_flush(cv_stop *s);

#endif
