/* rag_guard: watches a RAG answer as it streams, ends it when it degenerates, and
 * drops citation markers that name no passage given.
 *
 * Small models answering from passages fall into loops (issue 21): "[1] [2] [3] ...
 * [11] [1" until max_tokens, or the same phrase again and again. The guard is fed the
 * generated text in order and trips on:
 *   - a marker run: CV_RAG_GUARD_MARKER_RUN citation markers ("[12]") in a row with
 *     only spaces and punctuation between them; the text is cut after the run's first
 *     marker (what follows a marker is held back while it may become a run);
 *   - an n-gram loop: the same CV_RAG_GUARD_NGRAM words (ASCII letters and digits), or
 *     CV_RAG_GUARD_NGRAM_CJK characters when the n-gram has a CJK character, seen for the
 *     CV_RAG_GUARD_REPEATS-th time (overlapping occurrences count: "1. 1. 1. 1. 1. 1."
 *     trips at the sixth "1"); the text is cut where its second occurrence starts,
 *     or, when part of that went out already, at what went out;
 *   - with line_end (the Generate frame, whose answer is one line): a line break after
 *     some text; the text is cut there.
 * After a trip the caller ends the generation with finish reason "stop" and feeds no
 * more. A marker [n] with n = 0 or n > n_passages is removed from the text (counted);
 * it still counts towards a marker run.
 *
 * With a support check (cv_rag_guard_set_support) the answer is held back whole and
 * judged at the end: a short RAG answer comes out at once when it is complete.
 *
 * Text that may be the start of a marker ("... [1"), or of a run, is held back until it is decided;
 * cv_rag_guard_take returns what may go out now, cv_rag_guard_finish the rest at the
 * end. The counters are process-wide, for the metrics. Not thread-safe: one guard per
 * stream, fed from one thread at a time.
 */
#ifndef CV_RAG_GUARD_H
#define CV_RAG_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "rag_support.h"

#define CV_RAG_GUARD_MARKER_RUN 3
#define CV_RAG_GUARD_NGRAM 4
#define CV_RAG_GUARD_NGRAM_CJK 8
#define CV_RAG_GUARD_REPEATS 3

typedef enum cv_rag_guard_trip {
    CV_RAG_GUARD_NOMEM = -1,
    CV_RAG_GUARD_OK = 0,
    CV_RAG_GUARD_TRIP_MARKERS,
    CV_RAG_GUARD_TRIP_LOOP,
    CV_RAG_GUARD_TRIP_LINE,
    CV_RAG_GUARD_N_TRIPS
} cv_rag_guard_trip;

typedef struct cv_rag_guard cv_rag_guard;

/* NULL when out of memory. */
cv_rag_guard *cv_rag_guard_new(size_t n_passages, int line_end);
void cv_rag_guard_free(cv_rag_guard *g);

/* Feeds text; returns the trip (CV_RAG_GUARD_OK while the answer is fine). Once
 * tripped, further text is ignored and the trip is returned again. CV_RAG_GUARD_NOMEM:
 * the text could not be taken (the caller ends the stream as out of memory). */
cv_rag_guard_trip cv_rag_guard_feed(cv_rag_guard *g, const char *text, size_t len);
/* The text that may go out now (valid until the next call on g). */
void cv_rag_guard_take(cv_rag_guard *g, const char **text, size_t *len);
/* At the end of the stream: the held-back rest (valid until the next call on g). */
void cv_rag_guard_finish(cv_rag_guard *g, const char **text, size_t *len);

/* Holds the whole answer back until cv_rag_guard_finish, which judges it with s
 * (rag_support.h, counted with cv_rag_support_count) and, when it is not supported,
 * gives cv_rag_support_refusal instead; a passage handed back gives only its
 * sentences that answer (CV_RAG_TRIMMED). The guard owns s from here. */
void cv_rag_guard_set_support(cv_rag_guard *g, cv_rag_support *s);

/* Process-wide counts since start: trips by kind ([0]: unused) and markers removed. */
void cv_rag_guard_counts(uint64_t trips[CV_RAG_GUARD_N_TRIPS], uint64_t *markers_removed);
/* "markers", "loop", "line" (label values of the metric). */
const char *cv_rag_guard_trip_name(cv_rag_guard_trip t);

#endif
