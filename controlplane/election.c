#include "election.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cv_election {
    cv_etcd *c;
    char *key, *id;
    int ttl_s, poll_ms;
    pthread_t thread;
    bool started;
    atomic_bool stop;

    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t changed;
    cv_election_status st;
    int64_t valid_until_ms; /* leadership is believed until then */
    char last_error[512];
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec abs_in(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

/* Sleeps up to ms (woken early by stop or a step-down); false once stopped. */
static bool nap(cv_election *e, int ms) {
    struct timespec dl = abs_in(ms);
    pthread_mutex_lock(&e->mu);
    bool was_leader = e->st.leader;
    while (!atomic_load(&e->stop) && e->st.leader == was_leader)
        if (pthread_cond_timedwait(&e->changed, &e->mu, &dl) == ETIMEDOUT) break;
    pthread_mutex_unlock(&e->mu);
    return !atomic_load(&e->stop);
}

static void set_holder(cv_election *e, const char *holder, const char *why) {
    pthread_mutex_lock(&e->mu);
    snprintf(e->st.holder, sizeof e->st.holder, "%s", holder);
    if (why) snprintf(e->last_error, sizeof e->last_error, "%s", why);
    pthread_mutex_unlock(&e->mu);
}

static void become_leader(cv_election *e, int64_t fence, int64_t renewed_ms) {
    pthread_mutex_lock(&e->mu);
    e->st.leader = true;
    e->st.fence = fence;
    e->st.terms++;
    snprintf(e->st.holder, sizeof e->st.holder, "%s", e->id);
    e->valid_until_ms = renewed_ms + (int64_t)e->ttl_s * 2000 / 3;
    pthread_cond_broadcast(&e->changed);
    pthread_mutex_unlock(&e->mu);
}

static void step_down(cv_election *e, const char *why) {
    pthread_mutex_lock(&e->mu);
    if (e->st.leader) {
        e->st.leader = false;
        e->st.fence = 0;
        snprintf(e->last_error, sizeof e->last_error, "stepped down: %.400s", why);
        pthread_cond_broadcast(&e->changed);
    }
    pthread_mutex_unlock(&e->mu);
}

static bool leading(cv_election *e, int64_t *fence) {
    pthread_mutex_lock(&e->mu);
    bool l = e->st.leader && now_ms() < e->valid_until_ms;
    if (fence) *fence = e->st.fence;
    pthread_mutex_unlock(&e->mu);
    return l;
}

/* One campaign txn with our lease, last renewed at `renewed` (the lease may run
 * out TTL after that, so leadership is counted from then). */
static void campaign(cv_election *e, int64_t lease, int64_t renewed) {
    cv_etcd_cmp absent = {.key = e->key, .target = CV_ETCD_CMP_CREATE, .result = CV_ETCD_EQUAL};
    cv_etcd_op put = {.type = CV_ETCD_OP_PUT, .key = e->key, .value = e->id,
                      .value_len = strlen(e->id), .lease = lease};
    cv_etcd_op get = {.type = CV_ETCD_OP_RANGE, .key = e->key};
    cv_etcd_txn_result r;
    cv_error err = {0};
    if (cv_etcd_txn(e->c, &absent, 1, &put, 1, &get, 1, &r, &err)) {
        set_holder(e, "", err.msg);
        return;
    }
    const cv_etcd_range_result *cur = r.succeeded ? NULL : &r.results[0].range;
    if (r.succeeded) {
        become_leader(e, r.header.revision, renewed);
    } else if (cur->n_kvs && cur->kvs[0].lease == lease) {
        /* An earlier campaign of ours landed although its answer was lost. */
        become_leader(e, cur->kvs[0].create_revision, renewed);
    } else {
        set_holder(e, cur->n_kvs ? cur->kvs[0].value : "", NULL);
    }
    cv_etcd_txn_result_free(&r);
}

/* Renews the lease every ttl/3 while leader; returns when no longer leader. */
static void lead(cv_election *e, int64_t lease) {
    int period = e->ttl_s * 1000 / 3;
    while (nap(e, period) && leading(e, NULL)) {
        cv_error err = {0};
        int64_t ttl, sent = now_ms();
        cv_status st = cv_etcd_lease_keepalive(e->c, lease, &ttl, &err);
        if (st == CV_ENOTFOUND) {
            step_down(e, err.msg);
            return;
        }
        pthread_mutex_lock(&e->mu);
        if (st == CV_OK) e->valid_until_ms = sent + ttl * 2000 / 3;
        else snprintf(e->last_error, sizeof e->last_error, "%s", err.msg);
        bool expired = now_ms() >= e->valid_until_ms;
        pthread_mutex_unlock(&e->mu);
        if (expired) step_down(e, "the lease could not be renewed in time");
    }
    if (!atomic_load(&e->stop)) step_down(e, "leadership expired");
}

static void *election_main(void *arg) {
    cv_election *e = arg;
    int64_t lease = 0, renewed = 0; /* when the lease's last renewal was sent */
    while (!atomic_load(&e->stop)) {
        cv_error err = {0};
        int64_t ttl, sent = now_ms();
        /* A follower's lease is renewed before each try; a lost one is replaced. */
        if (lease) {
            cv_status st = cv_etcd_lease_keepalive(e->c, lease, &ttl, &err);
            if (st == CV_OK) renewed = sent;
            else if (st == CV_ENOTFOUND) lease = 0;
        }
        if (!lease) {
            if (cv_etcd_lease_grant(e->c, e->ttl_s, &lease, &ttl, &err)) {
                lease = 0;
                set_holder(e, "", err.msg);
                nap(e, e->poll_ms);
                continue;
            }
            renewed = sent;
        }
        pthread_mutex_lock(&e->mu);
        e->st.lease = lease;
        pthread_mutex_unlock(&e->mu);
        campaign(e, lease, renewed);
        if (leading(e, NULL)) {
            lead(e, lease);
            /* Whatever ended the term, that lease is done with: drop it, and sit
             * out one TTL so that a healthier peer takes over rather than racing
             * this one (which just failed to hold its lease) back in. */
            cv_etcd_lease_revoke(e->c, lease, &err);
            lease = 0;
            nap(e, e->ttl_s * 1000);
        } else {
            nap(e, e->poll_ms);
        }
    }
    if (lease) {
        cv_error err = {0};
        cv_etcd_lease_revoke(e->c, lease, &err); /* resign: the key goes with the lease */
    }
    return NULL;
}

cv_status cv_election_start(cv_etcd *c, const cv_election_config *cfg, cv_election **out,
                            cv_error *err) {
    *out = NULL;
    if (!cfg->id || !*cfg->id) return cv_errorf(err, CV_EINVAL, "election: no contender id");
    cv_election *e = calloc(1, sizeof *e);
    if (!e) return cv_errorf(err, CV_ENOMEM, "election");
    e->c = c;
    e->ttl_s = cfg->ttl_s > 0 ? cfg->ttl_s : 10;
    e->poll_ms = cfg->poll_ms > 0 ? cfg->poll_ms : (e->ttl_s * 1000 / 3 < 1000 ? e->ttl_s * 1000 / 3 : 1000);
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->changed, &ca);
    pthread_condattr_destroy(&ca);
    const char *prefix = cfg->prefix ? cfg->prefix : "/corvid";
    size_t n = strlen(prefix) + sizeof "/controlplane/leader";
    cv_status st;
    if (!(e->key = malloc(n)) || !(e->id = strdup(cfg->id))) {
        st = cv_errorf(err, CV_ENOMEM, "election: key");
        goto fail;
    }
    snprintf(e->key, n, "%s/controlplane/leader", prefix);
    int rc = pthread_create(&e->thread, NULL, election_main, e);
    if (rc) {
        st = cv_errorf(err, CV_EIO, "election for %s: thread: %s", e->key, strerror(rc));
        goto fail;
    }
    e->started = true;
    *out = e;
    return CV_OK;
fail:
    cv_election_stop(e);
    return st;
}

void cv_election_get_status(cv_election *e, cv_election_status *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->leader = e->st.leader && now_ms() < e->valid_until_ms;
    pthread_mutex_unlock(&e->mu);
}

cv_status cv_election_wait(cv_election *e, bool leader, int timeout_ms, cv_error *err) {
    struct timespec dl = abs_in(timeout_ms);
    pthread_mutex_lock(&e->mu);
    while (e->st.leader != leader)
        if (pthread_cond_timedwait(&e->changed, &e->mu, &dl) == ETIMEDOUT) break;
    bool ok = e->st.leader == leader;
    char holder[sizeof e->st.holder], why[sizeof e->last_error];
    memcpy(holder, e->st.holder, sizeof holder);
    memcpy(why, e->last_error, sizeof why);
    pthread_mutex_unlock(&e->mu);
    if (ok) return CV_OK;
    return cv_errorf(err, CV_ETIMEOUT, "election %s: %s is %s after %d ms (holder \"%.100s\"; last: %.250s)",
                     e->key, e->id, leader ? "still not leader" : "still leader", timeout_ms, holder,
                     why[0] ? why : "-");
}

cv_status cv_election_fence(cv_election *e, cv_etcd_cmp *cmp, cv_error *err) {
    int64_t fence;
    if (!leading(e, &fence))
        return cv_errorf(err, CV_EPERM, "election %s: %s is not the leader", e->key, e->id);
    *cmp = (cv_etcd_cmp){.key = e->key, .target = CV_ETCD_CMP_CREATE, .result = CV_ETCD_EQUAL,
                         .number = fence};
    return CV_OK;
}

cv_status cv_election_put(cv_election *e, const char *key, const char *value, size_t value_len,
                          cv_etcd_header *header, cv_error *err) {
    cv_etcd_cmp fence;
    cv_status st = cv_election_fence(e, &fence, err);
    if (st) return st;
    cv_etcd_op put = {.type = CV_ETCD_OP_PUT, .key = key, .value = value, .value_len = value_len};
    cv_etcd_op get = {.type = CV_ETCD_OP_RANGE, .key = e->key};
    cv_etcd_txn_result r;
    if ((st = cv_etcd_txn(e->c, &fence, 1, &put, 1, &get, 1, &r, err))) return st;
    if (header) *header = r.header;
    if (!r.succeeded) {
        const cv_etcd_range_result *cur = &r.results[0].range;
        char why[300];
        snprintf(why, sizeof why, "fenced put of \"%.100s\" refused: %s holds create_revision %" PRId64
                 ", ours was %" PRId64, key, cur->n_kvs ? cur->kvs[0].value : "nobody",
                 cur->n_kvs ? cur->kvs[0].create_revision : 0, fence.number);
        step_down(e, why);
        st = cv_errorf(err, CV_EPERM, "election %s: %s", e->key, why);
    }
    cv_etcd_txn_result_free(&r);
    return st;
}

void cv_election_stop(cv_election *e) {
    if (!e) return;
    atomic_store(&e->stop, true);
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        pthread_cond_broadcast(&e->changed);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    pthread_cond_destroy(&e->changed);
    pthread_mutex_destroy(&e->mu);
    free(e->key);
    free(e->id);
    free(e);
}
