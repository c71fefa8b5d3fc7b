/* rpc_client: the one module of the client library that talks to gRPC C core.
 *
 * A channel is thread-safe; a call belongs to one thread. A call sends its single
 * request message at start (server-streaming and unary methods only), then
 * cv_rpcc_next returns response messages until the status arrives.
 */
#ifndef CV_RPC_CLIENT_H
#define CV_RPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "corvid/client.h"

typedef struct cv_rpcc_channel cv_rpcc_channel;
typedef struct cv_rpcc_call cv_rpcc_call;

int cv_rpcc_channel_new(const corvid_client_options *opt, cv_rpcc_channel **out, corvid_error *err);
void cv_rpcc_channel_free(cv_rpcc_channel *ch);

int cv_rpcc_start(cv_rpcc_channel *ch, const char *method, const uint8_t *req, size_t len,
                  cv_rpcc_call **out, corvid_error *err);
/* 1: *msg (malloc'd) is the next message; 0: ended with OK; -1: ended with err. */
int cv_rpcc_next(cv_rpcc_call *c, uint8_t **msg, size_t *len, corvid_error *err);
void cv_rpcc_cancel(cv_rpcc_call *c);
void cv_rpcc_free(cv_rpcc_call *c);

/* One request, exactly one response message. */
int cv_rpcc_unary(cv_rpcc_channel *ch, const char *method, const uint8_t *req, size_t len,
                  uint8_t **resp, size_t *resp_len, corvid_error *err);

/* The channel behind a public client (client.c), for the library's other modules. */
cv_rpcc_channel *cv_client_channel(corvid_client *c);

/* Fills err and returns -1. */
int cv_rpcc_fail(corvid_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
