/* etcd_json: the etcd JSON gateway's encodings, shared by the client and the watch
 * stream decoder.
 *
 * The gateway writes keys and values as base64, int64 fields as JSON strings, and
 * omits every zero/false/empty field, so an absent field reads as 0 or "". Readers
 * accept a JSON integer where a string is expected, reject anything else with a
 * cv_error naming the field and the value, and never trust a length they did not
 * measure. Writers set int64 fields as strings, as the gateway expects.
 */
#ifndef CV_ETCD_JSON_H
#define CV_ETCD_JSON_H

#include <jansson.h>

#include "etcd.h"

cv_status cv_etcd_json_set_b64(json_t *obj, const char *field, const void *data, size_t len);
cv_status cv_etcd_json_set_i64(json_t *obj, const char *field, int64_t v);
/* Sets "key" and, for a prefix, "range_end" (the prefix with its last byte
 * incremented; "\0" meaning "every key" when no such byte exists). */
cv_status cv_etcd_json_set_range(json_t *obj, const char *key, bool prefix);

/* A base64 field decoded into a malloc'd NUL-terminated buffer (absent: ""). */
cv_status cv_etcd_json_b64(const json_t *obj, const char *field, char **out, size_t *len,
                           cv_error *err);
cv_status cv_etcd_json_i64(const json_t *obj, const char *field, int64_t *out, cv_error *err);
cv_status cv_etcd_json_header(const json_t *obj, cv_etcd_header *h, cv_error *err);
cv_status cv_etcd_json_kv(const json_t *obj, cv_etcd_kv *kv, cv_error *err);
cv_status cv_etcd_json_range(const json_t *obj, cv_etcd_range_result *r, cv_error *err);

/* A gateway error body: {"error":"..","code":N,"message":".."} or, inside a stream,
 * {"error":{"grpc_code":N,"message":".."}}. Returns false when obj is no error. */
bool cv_etcd_json_error(const json_t *obj, int *grpc_code, const char **message);

#endif
