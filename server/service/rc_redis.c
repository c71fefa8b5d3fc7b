#include "rc_redis.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "timing.h"

#define MAX_IDLE 8

struct cv_rc_redis {
    char host[256];
    int port;
    double timeout_s;
    pthread_mutex_t mu;
    redisContext *idle[MAX_IDLE];
    int n_idle;
};

cv_status cv_rc_redis_new(const char *addr, unsigned timeout_ms, cv_rc_redis **out, cv_error *err) {
    const char *colon = strrchr(addr, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof((cv_rc_redis *)0)->host || !end || *end ||
        port < 1 || port > 65535)
        return cv_errorf(err, CV_EINVAL, "response_cache_redis: \"%s\" is not HOST:PORT", addr);
    cv_rc_redis *r = calloc(1, sizeof *r);
    if (!r) return cv_errorf(err, CV_ENOMEM, "response cache: out of memory");
    memcpy(r->host, addr, (size_t)(colon - addr));
    r->port = (int)port;
    r->timeout_s = timeout_ms / 1e3;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return CV_OK;
}

static struct timeval tv_of(double s) {
    if (s < 0.001) s = 0.001;
    return (struct timeval){.tv_sec = (time_t)s, .tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6)};
}

/* An idle connection, else a new one connected before the deadline; NULL with err. */
static redisContext *take(cv_rc_redis *r, double deadline, cv_error *err) {
    redisContext *c = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->n_idle) c = r->idle[--r->n_idle];
    pthread_mutex_unlock(&r->mu);
    if (c) return c;
    c = redisConnectWithTimeout(r->host, r->port, tv_of(deadline - cv_seconds()));
    if (!c || c->err) {
        cv_errorf(err, c && c->err == REDIS_ERR_IO && errno == EINPROGRESS ? CV_ETIMEOUT : CV_EUNAVAILABLE,
                  "redis %s:%d: connect: %s", r->host, r->port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    return c;
}

static void give_back(cv_rc_redis *r, redisContext *c) {
    pthread_mutex_lock(&r->mu);
    if (r->n_idle < MAX_IDLE) {
        r->idle[r->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (c) redisFree(c);
}

/* One command and its reply, all before now + timeout. */
static cv_status command(cv_rc_redis *r, int argc, const char **argv, const size_t *argvlen, redisReply **reply,
                         cv_error *err) {
    double deadline = cv_seconds() + r->timeout_s;
    *reply = NULL;
    redisContext *c = take(r, deadline, err);
    if (!c) return err->code;
    cv_status st = CV_EIO;
    int done = 0;
    /* Writes block at most what is left (SO_SNDTIMEO); reads are polled below. */
    if (redisSetTimeout(c, tv_of(deadline - cv_seconds())) != REDIS_OK ||
        redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK)
        goto io;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK) goto io;
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(c, &rep) != REDIS_OK) goto io;
        if (rep) {
            *reply = rep;
            break;
        }
        double left = deadline - cv_seconds();
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int n = left > 0 ? poll(&pfd, 1, (int)(left * 1e3) + 1) : 0;
        if (n == 0 || (n < 0 && errno != EINTR)) {
            st = n == 0 ? CV_ETIMEOUT : CV_EIO;
            cv_errorf(err, st, "redis %s:%d: %s: %s", r->host, r->port, argv[0],
                      n == 0 ? "no reply within the deadline" : strerror(errno));
            redisFree(c);
            return st;
        }
        if (n > 0 && redisBufferRead(c) != REDIS_OK) goto io;
    }
    if ((*reply)->type == REDIS_REPLY_ERROR) {
        cv_errorf(err, CV_EIO, "redis %s:%d: %s: %.200s", r->host, r->port, argv[0], (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        give_back(r, c);
        return CV_EIO;
    }
    give_back(r, c);
    return CV_OK;
io:
    /* A send timeout shows as EAGAIN. */
    st = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK) ? CV_ETIMEOUT : CV_EIO;
    cv_errorf(err, st, "redis %s:%d: %s: %s", r->host, r->port, argv[0], c->errstr[0] ? c->errstr : "I/O error");
    redisFree(c);
    return st;
}

cv_status cv_rc_redis_get(cv_rc_redis *r, const char *key, uint8_t **val, size_t *len, cv_error *err) {
    const char *argv[] = {"GET", key};
    const size_t argvlen[] = {3, strlen(key)};
    redisReply *rep;
    *val = NULL;
    *len = 0;
    cv_status st = command(r, 2, argv, argvlen, &rep, err);
    if (st != CV_OK) return st;
    if (rep->type == REDIS_REPLY_STRING) {
        *val = malloc(rep->len ? rep->len : 1);
        if (!*val) st = cv_errorf(err, CV_ENOMEM, "redis: out of memory");
        else {
            memcpy(*val, rep->str, rep->len);
            *len = rep->len;
        }
    } else if (rep->type != REDIS_REPLY_NIL) {
        st = cv_errorf(err, CV_EIO, "redis %s:%d: GET answered reply type %d", r->host, r->port, rep->type);
    }
    freeReplyObject(rep);
    return st;
}

cv_status cv_rc_redis_set(cv_rc_redis *r, const char *key, const uint8_t *val, size_t len, unsigned ttl_s,
                          cv_error *err) {
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%u", ttl_s);
    const char *argv[] = {"SET", key, (const char *)val, "EX", ttl};
    const size_t argvlen[] = {3, strlen(key), len, 2, strlen(ttl)};
    redisReply *rep;
    cv_status st = command(r, ttl_s ? 5 : 3, argv, argvlen, &rep, err);
    if (st == CV_OK) freeReplyObject(rep);
    return st;
}

void cv_rc_redis_free(cv_rc_redis *r) {
    if (!r) return;
    for (int i = 0; i < r->n_idle; i++) redisFree(r->idle[i]);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
