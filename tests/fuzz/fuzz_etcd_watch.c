/* Fuzzes the etcd watch stream parser. The first byte picks a chunk size; the rest
 * is the stream, fed once whole and once in chunks: framing must not depend on
 * where the network splits the bytes, so both runs must see the same messages
 * and end in the same status. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_stream.h"

typedef struct digest {
    uint64_t h;
    size_t n;
} digest;

static void mix(digest *d, uint64_t v) { d->h = (d->h ^ v) * 1099511628211ull; }

static cv_status on_msg(void *ud, cv_etcd_watch_msg *m, cv_error *err) {
    (void)err;
    digest *d = ud;
    d->n++;
    mix(d, (uint64_t)m->header.revision);
    mix(d, (uint64_t)m->compact_revision);
    mix(d, (uint64_t)(m->created | m->canceled << 1));
    for (size_t i = 0; i < m->n_events; i++) {
        const cv_etcd_kv *kv = &m->events[i].kv;
        mix(d, (uint64_t)kv->mod_revision);
        mix(d, kv->key_len);
        mix(d, kv->value_len);
        if (kv->key[kv->key_len] || kv->value[kv->value_len]) abort(); /* NUL-terminated copies */
    }
    return CV_OK;
}

static cv_status run(const char *s, size_t n, size_t chunk, digest *d) {
    cv_etcd_stream st;
    cv_error e = {0};
    cv_etcd_stream_init(&st, 4096, on_msg, d);
    cv_status rc = CV_OK;
    for (size_t i = 0; i < n && !rc; i += chunk) rc = cv_etcd_stream_feed(&st, s + i, n - i < chunk ? n - i : chunk, &e);
    cv_etcd_stream_free(&st);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t chunk = (size_t)data[0] % 17 + 1;
    const char *s = (const char *)data + 1;
    digest whole = {1469598103934665603ull, 0}, split = whole;
    cv_status a = run(s, size - 1, size, &whole);
    cv_status b = run(s, size - 1, chunk, &split);
    if (a != b || whole.h != split.h || whole.n != split.n) abort();
    return 0;
}
