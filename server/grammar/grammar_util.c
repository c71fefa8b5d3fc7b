#include "grammar_util.h"

#include <stdlib.h>
#include <string.h>

bool cv_gu_grow(void **v, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need) c *= 2;
    void *n = realloc(*v, c * size);
    if (!n) return false;
    *v = n;
    *cap = c;
    return true;
}

uint64_t cv_gu_mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static int cmp_range(const void *a, const void *b) {
    const cv_cprange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

size_t cv_cpranges_normalize(cv_cprange *r, size_t n, bool negated, cv_cprange *out) {
    if (n) qsort(r, n, sizeof *r, cmp_range);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi) r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    if (!negated) {
        if (m) memmove(out, r, m * sizeof *r);
        return m;
    }
    size_t k = 0;
    uint32_t next = 0;
    for (size_t i = 0; i < m; i++) {
        if (r[i].lo > next) out[k++] = (cv_cprange){next, r[i].lo - 1};
        next = r[i].hi + 1;
    }
    if (next <= 0x10FFFF) out[k++] = (cv_cprange){next, 0x10FFFF};
    return k;
}
