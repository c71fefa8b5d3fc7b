/* cv_etcd_watch: a resumable, self-healing watch of one key prefix.
 *
 * A dedicated thread holds a streaming POST /v3/watch and queues events for the
 * caller, who takes them with cv_etcd_watch_next(timeout) or waits for
 * cv_etcd_watch_fd() to turn readable in its own poll/select loop (the fd is
 * readable exactly while the queue is not empty).
 * - Start (start_revision 0) ranges the whole prefix and queues one RESYNC event
 *   carrying the full state, then watches from that range's revision + 1.
 * - After any disconnect (EOF, transport error, stream error, idle timeout) the
 *   thread reconnects, moving to the next endpoint when one fails, with backoff
 *   and jitter, and resumes from the last seen revision + 1: nothing is lost.
 * - A compaction cancel (canceled, compact_revision N) closes the stream, ranges
 *   the prefix again, queues a RESYNC (the caller replaces its whole view) and
 *   watches from the new revision + 1.
 * - It remembers key -> mod_revision of what it delivered and drops any event not
 *   newer than that, so nothing is applied twice.
 * - The queue holds at most max_queue events; a slow caller back-pressures the
 *   stream rather than losing events. Stream objects are bounded by max_object.
 */
#ifndef CV_ETCD_WATCH_H
#define CV_ETCD_WATCH_H

#include "etcd.h"

typedef struct cv_etcd_watch cv_etcd_watch;

typedef enum cv_etcd_watch_kind {
    CV_ETCD_WATCH_PUT,
    CV_ETCD_WATCH_DELETE,
    CV_ETCD_WATCH_RESYNC,
} cv_etcd_watch_kind;

typedef struct cv_etcd_watch_event {
    cv_etcd_watch_kind kind;
    int64_t revision; /* PUT/DELETE: the event's mod_revision; RESYNC: the range's revision */
    cv_etcd_kv kv;    /* PUT/DELETE (a DELETE carries the key only) */
    cv_etcd_kv *kvs;  /* RESYNC: every key under the prefix */
    size_t n_kvs;
} cv_etcd_watch_event;

typedef struct cv_etcd_watch_config {
    const char *prefix;
    int64_t start_revision; /* 0: resync first; N: events from revision N on */
    size_t max_queue;       /* default 4096 */
    size_t max_object;      /* largest stream object, default 32 MiB */
    int idle_timeout_ms;    /* reconnect after this much silence; 0: never */
} cv_etcd_watch_config;

typedef struct cv_etcd_watch_stats {
    uint64_t streams;     /* watch streams created by etcd */
    uint64_t reconnects;  /* streams opened after the first */
    uint64_t resyncs;     /* RESYNC events queued (the initial one included) */
    uint64_t compactions; /* compaction cancels seen */
    uint64_t events;      /* PUT/DELETE events queued */
    uint64_t duplicates;  /* events dropped as not newer than held */
    int64_t next_revision;
    char last_error[512]; /* why the last stream ended or failed */
} cv_etcd_watch_stats;

/* The client must outlive the watch. */
cv_status cv_etcd_watch_start(cv_etcd *c, const cv_etcd_watch_config *cfg, cv_etcd_watch **out,
                              cv_error *err);
/* Next event, waiting up to timeout_ms (0: do not wait); CV_ETIMEOUT when none. */
cv_status cv_etcd_watch_next(cv_etcd_watch *w, int timeout_ms, cv_etcd_watch_event *ev,
                             cv_error *err);
int cv_etcd_watch_fd(const cv_etcd_watch *w);
void cv_etcd_watch_get_stats(cv_etcd_watch *w, cv_etcd_watch_stats *out);
void cv_etcd_watch_event_free(cv_etcd_watch_event *ev);
/* Stops the thread, closes the stream and frees everything still queued. */
void cv_etcd_watch_stop(cv_etcd_watch *w);

#endif
