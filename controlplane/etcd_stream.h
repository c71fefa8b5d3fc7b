/* cv_etcd_stream: incremental parser of the etcd gateway's watch stream.
 *
 * The stream is a sequence of JSON objects ({"result":{...}} or {"error":...}),
 * normally one per line. Bytes are fed in whatever chunks the network delivers:
 * objects are delimited by brace matching outside strings, not by newlines, so a
 * chunk may end anywhere inside an object or hold several. Each complete object is
 * decoded into a cv_etcd_watch_msg and handed to the callback, in stream order.
 *
 * Memory is bounded: an object longer than max_object bytes, nesting deeper than
 * CV_ETCD_STREAM_MAX_DEPTH, or bytes other than whitespace between objects fail
 * the stream (CV_ERANGE / CV_EFORMAT), and every later feed fails the same way.
 * A gateway error object decodes to a failure with the gRPC code mapped onto
 * cv_status and the gateway's message.
 */
#ifndef CV_ETCD_STREAM_H
#define CV_ETCD_STREAM_H

#include "etcd.h"

#define CV_ETCD_STREAM_MAX_DEPTH 64

typedef enum cv_etcd_event_type { CV_ETCD_EVENT_PUT, CV_ETCD_EVENT_DELETE } cv_etcd_event_type;

typedef struct cv_etcd_event {
    cv_etcd_event_type type;
    cv_etcd_kv kv; /* for a DELETE: key and mod_revision (the deletion's revision) */
} cv_etcd_event;

typedef struct cv_etcd_watch_msg {
    cv_etcd_header header;
    int64_t watch_id;
    bool created;
    bool canceled;
    int64_t compact_revision; /* > 0 with canceled: history below it is gone */
    char *cancel_reason;      /* NULL when absent */
    cv_etcd_event *events;
    size_t n_events;
} cv_etcd_watch_msg;

/* Called once per object. The callback may take events out of msg (zeroing
 * n_events); whatever is left is freed after it returns. A non-OK return stops
 * the feed and is returned by cv_etcd_stream_feed. */
typedef cv_status (*cv_etcd_stream_cb)(void *ud, cv_etcd_watch_msg *msg, cv_error *err);

typedef struct cv_etcd_stream {
    char *buf;
    size_t len, cap;
    size_t max_object;
    int depth;
    bool in_string, escaped;
    uint64_t offset;  /* bytes consumed so far, for messages */
    cv_status failed; /* sticky */
    cv_etcd_stream_cb cb;
    void *ud;
} cv_etcd_stream;

void cv_etcd_stream_init(cv_etcd_stream *s, size_t max_object, cv_etcd_stream_cb cb, void *ud);
cv_status cv_etcd_stream_feed(cv_etcd_stream *s, const char *data, size_t n, cv_error *err);
/* Forgets any partial object (a new connection starts a new stream). */
void cv_etcd_stream_reset(cv_etcd_stream *s);
void cv_etcd_stream_free(cv_etcd_stream *s);

/* Decodes one complete object. */
cv_status cv_etcd_watch_msg_decode(const char *json, size_t len, cv_etcd_watch_msg *msg,
                                   cv_error *err);
void cv_etcd_watch_msg_free(cv_etcd_watch_msg *msg);

#endif
