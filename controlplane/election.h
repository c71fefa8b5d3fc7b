/* cv_election: leader election among control planes on one etcd key.
 *
 * A background thread campaigns for `<prefix>/controlplane/leader`: it grants a
 * lease of ttl_s and runs one txn, "if the key's create_revision is 0, put our id
 * with the lease, else read the key". Winning makes this process the leader and
 * the key's create_revision its fence; losing, it retries every poll interval
 * (the key vanishes when the holder's lease expires or is revoked).
 *
 * As leader it renews the lease every ttl_s/3. It steps down when a keepalive
 * finds the lease gone, or when renewals have failed for long enough that the lease
 * may have expired by now (leadership is only believed up to 2/3 of the TTL past
 * the last renewal sent, so a leader gives up before etcd could hand over). A
 * contender that stepped down sits out one TTL before campaigning again.
 *
 * Every write a leader makes must carry the fence: cv_election_fence gives the
 * compare (the leader key's create_revision equals ours) to add to a txn, and
 * cv_election_put is a fenced put. A write whose fence fails is rejected by etcd,
 * whatever this process believes, and makes it step down.
 */
#ifndef CV_ELECTION_H
#define CV_ELECTION_H

#include "etcd.h"

typedef struct cv_election cv_election;

typedef struct cv_election_config {
    const char *prefix; /* default "/corvid" */
    const char *id;     /* this contender's name, stored as the key's value */
    int ttl_s;          /* lease TTL, default 10 */
    int poll_ms;        /* follower's retry interval, default min(1000, ttl/3) */
} cv_election_config;

typedef struct cv_election_status {
    bool leader;
    int64_t fence; /* our key's create_revision while leader */
    int64_t lease;
    char holder[128]; /* the current leader's id as last seen ("" if none) */
    uint64_t terms;   /* times this contender became leader */
} cv_election_status;

/* The client must outlive the election. */
cv_status cv_election_start(cv_etcd *c, const cv_election_config *cfg, cv_election **out,
                            cv_error *err);
void cv_election_get_status(cv_election *e, cv_election_status *out);
/* Waits up to timeout_ms until leadership equals `leader`; CV_ETIMEOUT otherwise. */
cv_status cv_election_wait(cv_election *e, bool leader, int timeout_ms, cv_error *err);
/* The compare to put in every leader txn; CV_EPERM when not leader. */
cv_status cv_election_fence(cv_election *e, cv_etcd_cmp *cmp, cv_error *err);
/* A put fenced on our leadership; CV_EPERM (and a step-down) when the fence fails. */
cv_status cv_election_put(cv_election *e, const char *key, const char *value, size_t value_len,
                          cv_etcd_header *header, cv_error *err);
/* Stops campaigning; a leader resigns (revokes its lease, so the key goes at once). */
void cv_election_stop(cv_election *e);

#endif
