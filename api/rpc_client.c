#include "rpc_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target.h"

struct cv_rpcc_channel {
    grpc_channel *channel;
    char *auth;              /* "Bearer ..." or NULL */
    double timeout_s;
};

enum { TAG_START = 1, TAG_STATUS, TAG_RECV };

struct cv_rpcc_call {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    int status_done;         /* the status batch completed */
    grpc_byte_buffer *recv_bb;
};

/* Round-robin over every address of the target (one address: the same as pick_first),
 * so a name with several replicas behind it spreads calls over all of them. A server
 * that is draining answers new calls UNAVAILABLE before doing any work: such a call is
 * safe to send again, and round-robin sends it to the next replica. */
static const char k_service_config[] =
    "{\"loadBalancingConfig\":[{\"round_robin\":{}}],"
    "\"methodConfig\":[{\"name\":[{\"service\":\"corvid.v1.Inference\"},{\"service\":\"grpc.health.v1.Health\"}],"
    "\"retryPolicy\":{\"maxAttempts\":3,\"initialBackoff\":\"0.05s\",\"maxBackoff\":\"0.5s\","
    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}}]}";

/* The W3C traceparent this thread's calls carry (corvid_trace_context); "" for none. */
static _Thread_local char t_traceparent[64];

void corvid_trace_context(const char *traceparent) {
    snprintf(t_traceparent, sizeof t_traceparent, "%s",
             traceparent && strlen(traceparent) < sizeof t_traceparent ? traceparent : "");
}

int cv_rpcc_fail(corvid_error *err, int code, const char *fmt, ...) {
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int cv_rpcc_channel_new(const corvid_client_options *opt, cv_rpcc_channel **out, corvid_error *err) {
    if (!opt || !opt->addr || !*opt->addr)
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "no server address given");
    if ((opt->client_cert_pem == NULL) != (opt->client_key_pem == NULL))
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "a client certificate needs its key, and a key its certificate");
    char target[4096];
    if (cv_target_resolve(opt->addr, target, sizeof target, err) != 0) return -1;
    cv_rpcc_channel *ch = calloc(1, sizeof *ch);
    if (!ch) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    grpc_init();
    grpc_channel_credentials *creds;
    if (opt->root_certs_pem) {
        grpc_ssl_pem_key_cert_pair pair = {opt->client_key_pem, opt->client_cert_pem};
        creds = grpc_ssl_credentials_create(opt->root_certs_pem, opt->client_cert_pem ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_arg args[3] = {
        {.type = GRPC_ARG_STRING, .key = GRPC_ARG_SERVICE_CONFIG, .value.string = (char *)k_service_config},
        /* Our service config, not one from a DNS TXT record (a query less per resolution). */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, .value.integer = 1},
        {.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
         .value.string = (char *)opt->tls_server_name},
    };
    bool override = opt->root_certs_pem && opt->tls_server_name && *opt->tls_server_name;
    grpc_channel_args chargs = {.num_args = override ? 3 : 2, .args = args};
    ch->channel = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    ch->timeout_s = opt->timeout_s;
    if (opt->bearer_token) {
        size_t n = strlen(opt->bearer_token) + 8;
        ch->auth = malloc(n);
        if (ch->auth) snprintf(ch->auth, n, "Bearer %s", opt->bearer_token);
    }
    if (!ch->channel || (opt->bearer_token && !ch->auth)) {
        cv_rpcc_channel_free(ch);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "cannot create a channel to %s", opt->addr);
    }
    *out = ch;
    return 0;
}

void cv_rpcc_channel_free(cv_rpcc_channel *ch) {
    if (!ch) return;
    if (ch->channel) grpc_channel_destroy(ch->channel);
    if (ch->auth) explicit_bzero(ch->auth, strlen(ch->auth)); /* it holds the bearer token */
    free(ch->auth);
    free(ch);
    grpc_shutdown();
}

/* Waits for `want`, noting the status batch if it completes first. */
static int wait_tag(cv_rpcc_call *c, intptr_t want) {
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE) return 0;
        intptr_t t = (intptr_t)ev.tag;
        if (t == TAG_STATUS) c->status_done = 1;
        if (t == want) return ev.success;
    }
}

static int status_to_err(cv_rpcc_call *c, corvid_error *err) {
    if (!c->status_done) wait_tag(c, TAG_STATUS);
    if (c->status == GRPC_STATUS_OK) return 0;
    size_t n = GRPC_SLICE_LENGTH(c->details);
    return cv_rpcc_fail(err, (int)c->status, "%.*s", (int)(n > 500 ? 500 : n),
                        (const char *)GRPC_SLICE_START_PTR(c->details));
}

int cv_rpcc_start(cv_rpcc_channel *ch, const char *method, const uint8_t *req, size_t len,
                  cv_rpcc_call **out, corvid_error *err) {
    cv_rpcc_call *c = calloc(1, sizeof *c);
    if (!c) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    c->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_metadata_array_init(&c->initial_md);
    grpc_metadata_array_init(&c->trailing_md);
    c->details = grpc_empty_slice();
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (ch->timeout_s > 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                gpr_time_from_micros((int64_t)(ch->timeout_s * 1e6), GPR_TIMESPAN));
    c->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                       grpc_slice_from_static_string(method), NULL, deadline, NULL);
    if (!c->call) {
        cv_rpcc_free(c);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "cannot create a call for %s", method);
    }
    grpc_metadata md[2];
    size_t n_md = 0;
    memset(md, 0, sizeof md);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)req, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (ch->auth) {
        md[n_md].key = grpc_slice_from_static_string("authorization");
        md[n_md++].value = grpc_slice_from_copied_string(ch->auth);
    }
    if (t_traceparent[0]) {
        md[n_md].key = grpc_slice_from_static_string("traceparent");
        md[n_md++].value = grpc_slice_from_copied_string(t_traceparent);
    }
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
    grpc_call_error e1 = grpc_call_start_batch(c->call, ops, 4, (void *)(intptr_t)TAG_START, NULL);
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    st.data.recv_status_on_client.status = &c->status;
    st.data.recv_status_on_client.status_details = &c->details;
    grpc_call_error e2 = grpc_call_start_batch(c->call, &st, 1, (void *)(intptr_t)TAG_STATUS, NULL);
    if (e1 == GRPC_CALL_OK) wait_tag(c, TAG_START);
    grpc_byte_buffer_destroy(bb);
    for (size_t i = 0; i < n_md; i++) grpc_slice_unref(md[i].value);
    if (e1 != GRPC_CALL_OK || e2 != GRPC_CALL_OK) {
        cv_rpcc_free(c);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "cannot start %s (gRPC error %d/%d)", method, e1, e2);
    }
    *out = c;
    return 0;
}

int cv_rpcc_next(cv_rpcc_call *c, uint8_t **msg, size_t *len, corvid_error *err) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    c->recv_bb = NULL;
    if (grpc_call_start_batch(c->call, &op, 1, (void *)(intptr_t)TAG_RECV, NULL) != GRPC_CALL_OK)
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "cannot read from the call");
    wait_tag(c, TAG_RECV);
    if (!c->recv_bb) return status_to_err(c, err);
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, c->recv_bb)) {
        grpc_byte_buffer_destroy(c->recv_bb);
        c->recv_bb = NULL;
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "cannot read a response message");
    }
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(c->recv_bb);
    c->recv_bb = NULL;
    *len = GRPC_SLICE_LENGTH(s);
    *msg = malloc(*len ? *len : 1);
    if (*msg) memcpy(*msg, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    if (!*msg) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    return 1;
}

void cv_rpcc_cancel(cv_rpcc_call *c) {
    if (c && c->call) grpc_call_cancel(c->call, NULL);
}

void cv_rpcc_free(cv_rpcc_call *c) {
    if (!c) return;
    if (c->call) {
        if (!c->status_done) {
            grpc_call_cancel(c->call, NULL);
            wait_tag(c, TAG_STATUS);
        }
        grpc_call_unref(c->call);
    }
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    grpc_metadata_array_destroy(&c->initial_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_slice_unref(c->details);
    free(c);
}

int cv_rpcc_unary(cv_rpcc_channel *ch, const char *method, const uint8_t *req, size_t len,
                  uint8_t **resp, size_t *resp_len, corvid_error *err) {
    cv_rpcc_call *c;
    if (cv_rpcc_start(ch, method, req, len, &c, err) != 0) return -1;
    int r = cv_rpcc_next(c, resp, resp_len, err);
    if (r == 1) {
        uint8_t *extra = NULL;
        size_t n;
        int end = cv_rpcc_next(c, &extra, &n, err);
        free(extra);
        if (end != 0) {
            free(*resp);
            *resp = NULL;
            r = end == 1 ? cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "%s sent more than one response", method) : -1;
        }
    } else if (r == 0) {
        r = cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "%s ended without a response", method);
    }
    cv_rpcc_free(c);
    return r == 1 ? 0 : -1;
}
