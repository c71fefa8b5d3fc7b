/* The Admin half of the client library: corvid.v1.Admin messages to and from the
 * plain structs of corvid/client.h. */
#include <stdlib.h>
#include <string.h>

#include "corvid/client.h"
#include "corvid/v1/admin.pb-c.h"
#include "rpc_client.h"

static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) n = cap - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

static const char *state_name(Corvid__V1__SlotState s) {
    switch (s) {
    case CORVID__V1__SLOT_STATE__SLOT_STATE_LOADING: return "loading";
    case CORVID__V1__SLOT_STATE__SLOT_STATE_READY: return "ready";
    case CORVID__V1__SLOT_STATE__SLOT_STATE_FAILED: return "failed";
    case CORVID__V1__SLOT_STATE__SLOT_STATE_DRAINING: return "draining";
    default: return "unloaded";
    }
}

static void hist_from(corvid_histogram *h, const Corvid__V1__Histogram *p) {
    memset(h, 0, sizeof *h);
    if (!p) return;
    h->n_bounds = p->n_bounds < CORVID_MAX_BUCKETS ? p->n_bounds : CORVID_MAX_BUCKETS;
    memcpy(h->bounds, p->bounds, sizeof(double) * h->n_bounds);
    size_t nc = p->n_counts < h->n_bounds + 1 ? p->n_counts : h->n_bounds + 1;
    memcpy(h->counts, p->counts, sizeof(uint64_t) * nc);
    h->count = p->count;
    h->sum = p->sum;
}

static void codes_from(uint64_t *out, Corvid__V1__CodeCount **cc, size_t n) {
    memset(out, 0, sizeof(uint64_t) * CORVID_CODES);
    for (size_t i = 0; i < n; i++)
        if (cc[i]->code >= 0 && cc[i]->code < CORVID_CODES) out[cc[i]->code] = cc[i]->count;
}

static void slot_from(corvid_slot_status *o, const Corvid__V1__SlotStatus *s) {
    memset(o, 0, sizeof *o);
    copy_str(o->version, sizeof o->version, s->version);
    copy_str(o->state, sizeof o->state, state_name(s->state));
    copy_str(o->message, sizeof o->message, s->message);
    copy_str(o->uri, sizeof o->uri, s->uri);
    copy_str(o->sha256, sizeof o->sha256, s->sha256);
    o->weight = s->weight;
    o->in_flight = s->in_flight;
    o->window_seconds = s->window_seconds;
    codes_from(o->requests_total, s->requests_total, s->n_requests_total);
    codes_from(o->requests_window, s->requests_window, s->n_requests_window);
    hist_from(&o->ttft_seconds, s->ttft_seconds);
    hist_from(&o->latency_seconds, s->latency_seconds);
    o->tokens_generated = s->tokens_generated;
    o->load_seconds = s->load_seconds;
    o->fault_error_rate = s->fault_error_rate;
}

double corvid_histogram_quantile(const corvid_histogram *h, double q) {
    if (!h->count) return 0;
    double rank = q * (double)h->count;
    uint64_t prev = 0;
    for (size_t b = 0; b <= h->n_bounds; b++) {
        if ((double)h->counts[b] >= rank && h->counts[b] > prev) {
            if (b == h->n_bounds) return h->n_bounds ? h->bounds[h->n_bounds - 1] : 0;
            double lo = b ? h->bounds[b - 1] : 0, hi = h->bounds[b];
            double into = (rank - (double)prev) / (double)(h->counts[b] - prev);
            return lo + (hi - lo) * (into < 0 ? 0 : into);
        }
        prev = h->counts[b];
    }
    return h->n_bounds ? h->bounds[h->n_bounds - 1] : 0;
}

/* Packs m, calls method, returns the response bytes. */
static int call(corvid_client *c, const char *method, const ProtobufCMessage *m, uint8_t **resp,
                size_t *len, corvid_error *err) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    protobuf_c_message_pack(m, buf);
    int r = cv_rpcc_unary(cv_client_channel(c), method, buf, n, resp, len, err);
    free(buf);
    return r;
}

static int slot_reply(corvid_client *c, const char *method, const ProtobufCMessage *m,
                      corvid_slot_status *out, corvid_error *err) {
    uint8_t *resp;
    size_t len;
    if (call(c, method, m, &resp, &len, err) != 0) return -1;
    Corvid__V1__SlotStatus *s = corvid__v1__slot_status__unpack(NULL, len, resp);
    free(resp);
    if (!s) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed SlotStatus from the server");
    if (out) slot_from(out, s);
    corvid__v1__slot_status__free_unpacked(s, NULL);
    return 0;
}

int corvid_admin_load(corvid_client *c, const char *version, const char *uri, const char *sha256,
                      int wait, corvid_slot_status *out, corvid_error *err) {
    Corvid__V1__LoadModelRequest r = CORVID__V1__LOAD_MODEL_REQUEST__INIT;
    r.version = (char *)(version ? version : "");
    r.uri = (char *)(uri ? uri : "");
    r.sha256 = (char *)(sha256 ? sha256 : "");
    r.wait = wait;
    return slot_reply(c, "/corvid.v1.Admin/LoadModel", &r.base, out, err);
}

int corvid_admin_unload(corvid_client *c, const char *version, int wait, corvid_slot_status *out,
                        corvid_error *err) {
    Corvid__V1__UnloadModelRequest r = CORVID__V1__UNLOAD_MODEL_REQUEST__INIT;
    r.version = (char *)(version ? version : "");
    r.wait = wait;
    return slot_reply(c, "/corvid.v1.Admin/UnloadModel", &r.base, out, err);
}

int corvid_admin_set_fault(corvid_client *c, const char *version, float error_rate, corvid_error *err) {
    Corvid__V1__SetFaultInjectionRequest r = CORVID__V1__SET_FAULT_INJECTION_REQUEST__INIT;
    r.version = (char *)(version ? version : "");
    r.error_rate = error_rate;
    return slot_reply(c, "/corvid.v1.Admin/SetFaultInjection", &r.base, NULL, err);
}

static int status_from(const uint8_t *resp, size_t len, corvid_server_status *out, corvid_error *err) {
    Corvid__V1__GetStatusResponse *s = corvid__v1__get_status_response__unpack(NULL, len, resp);
    if (!s) return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "malformed GetStatusResponse from the server");
    memset(out, 0, sizeof *out);
    out->slots = calloc(s->n_slots ? s->n_slots : 1, sizeof *out->slots);
    if (!out->slots) {
        corvid__v1__get_status_response__free_unpacked(s, NULL);
        return cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
    }
    copy_str(out->server_id, sizeof out->server_id, s->server_id);
    out->kv_blocks_used = s->kv_blocks_used;
    out->kv_blocks_total = s->kv_blocks_total;
    out->queue_depth = s->queue_depth;
    out->running_sequences = s->running_sequences;
    out->n_slots = s->n_slots;
    for (size_t i = 0; i < s->n_slots; i++) slot_from(&out->slots[i], s->slots[i]);
    corvid__v1__get_status_response__free_unpacked(s, NULL);
    return 0;
}

int corvid_admin_set_traffic(corvid_client *c, const char *const *versions, const uint32_t *weights,
                             size_t n, corvid_error *err) {
    Corvid__V1__TrafficWeight *tw = calloc(n ? n : 1, sizeof *tw);
    Corvid__V1__TrafficWeight **pp = calloc(n ? n : 1, sizeof *pp);
    int rc = -1;
    if (!tw || !pp) {
        cv_rpcc_fail(err, CORVID_CLIENT_ERROR, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        corvid__v1__traffic_weight__init(&tw[i]);
        tw[i].version = (char *)versions[i];
        tw[i].weight = weights[i];
        pp[i] = &tw[i];
    }
    Corvid__V1__SetTrafficRequest r = CORVID__V1__SET_TRAFFIC_REQUEST__INIT;
    r.n_weights = n;
    r.weights = pp;
    uint8_t *resp;
    size_t len;
    if (call(c, "/corvid.v1.Admin/SetTraffic", &r.base, &resp, &len, err) != 0) goto out;
    corvid_server_status st;
    rc = status_from(resp, len, &st, err);
    free(resp);
    if (rc == 0) corvid_server_status_free(&st);
out:
    free(tw);
    free(pp);
    return rc;
}

int corvid_admin_status(corvid_client *c, uint32_t window_seconds, corvid_server_status *out,
                        corvid_error *err) {
    Corvid__V1__GetStatusRequest r = CORVID__V1__GET_STATUS_REQUEST__INIT;
    r.window_seconds = window_seconds;
    uint8_t *resp;
    size_t len;
    if (call(c, "/corvid.v1.Admin/GetStatus", &r.base, &resp, &len, err) != 0) return -1;
    int rc = status_from(resp, len, out, err);
    free(resp);
    return rc;
}

void corvid_server_status_free(corvid_server_status *s) {
    if (!s) return;
    free(s->slots);
    s->slots = NULL;
    s->n_slots = 0;
}
