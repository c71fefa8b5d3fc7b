#include "etcd_revmap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *k, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static cv_etcd_revmap_slot *find(const cv_etcd_revmap *m, const char *key, size_t len) {
    size_t i = hash(key, len) & (m->cap - 1);
    for (;;) {
        cv_etcd_revmap_slot *s = &m->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0)) return s;
        i = (i + 1) & (m->cap - 1);
    }
}

static cv_status grow(cv_etcd_revmap *m, cv_error *err) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    cv_etcd_revmap bigger = {.slots = calloc(cap, sizeof *m->slots), .cap = cap, .n = m->n};
    if (!bigger.slots) return cv_errorf(err, CV_ENOMEM, "revision map: %zu slots", cap);
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key) *find(&bigger, m->slots[i].key, m->slots[i].len) = m->slots[i];
    free(m->slots);
    *m = bigger;
    return CV_OK;
}

cv_status cv_etcd_revmap_advance(cv_etcd_revmap *m, const char *key, size_t len, int64_t rev,
                                 bool *applied, cv_error *err) {
    *applied = false;
    if ((m->n + 1) * 10 > m->cap * 7) {
        cv_status st = grow(m, err);
        if (st) return st;
    }
    cv_etcd_revmap_slot *s = find(m, key, len);
    if (s->key) {
        if (rev <= s->rev) return CV_OK;
        s->rev = rev;
        *applied = true;
        return CV_OK;
    }
    char *copy = malloc(len + 1);
    if (!copy) return cv_errorf(err, CV_ENOMEM, "revision map: key of %zu bytes", len);
    memcpy(copy, key, len);
    copy[len] = 0;
    *s = (cv_etcd_revmap_slot){copy, len, rev};
    m->n++;
    *applied = true;
    return CV_OK;
}

int64_t cv_etcd_revmap_get(const cv_etcd_revmap *m, const char *key, size_t len) {
    if (!m->cap) return 0;
    const cv_etcd_revmap_slot *s = find(m, key, len);
    return s->key ? s->rev : 0;
}

void cv_etcd_revmap_clear(cv_etcd_revmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    if (m->cap) memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = 0;
}

void cv_etcd_revmap_free(cv_etcd_revmap *m) {
    cv_etcd_revmap_clear(m);
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
}
