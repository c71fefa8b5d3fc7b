/* cv_etcd_revmap: key -> mod_revision of what a watcher has applied.
 *
 * An open-addressing hash table over byte-string keys. cv_etcd_revmap_advance is
 * the one question a watcher asks: "is this event newer than what I hold for its
 * key?"; it records the revision when it is. Deleted keys keep their deletion's
 * revision (a tombstone) until the next clear, so a replayed older PUT cannot
 * resurrect them.
 */
#ifndef CV_ETCD_REVMAP_H
#define CV_ETCD_REVMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cv_error.h"

typedef struct cv_etcd_revmap_slot {
    char *key; /* NULL: empty */
    size_t len;
    int64_t rev;
} cv_etcd_revmap_slot;

typedef struct cv_etcd_revmap {
    cv_etcd_revmap_slot *slots;
    size_t cap, n; /* cap is 0 or a power of two */
} cv_etcd_revmap;

/* Records rev for key if it is newer than the held one (or none is held).
 * *applied says whether it was; fails only on allocation. */
cv_status cv_etcd_revmap_advance(cv_etcd_revmap *m, const char *key, size_t len, int64_t rev,
                                 bool *applied, cv_error *err);
/* The held revision, 0 when none. */
int64_t cv_etcd_revmap_get(const cv_etcd_revmap *m, const char *key, size_t len);
void cv_etcd_revmap_clear(cv_etcd_revmap *m);
void cv_etcd_revmap_free(cv_etcd_revmap *m);

#endif
