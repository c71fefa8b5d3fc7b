/* A binary min-heap over fixed-size elements in caller-provided storage: the
 * merge queues of the SPM and BPE segmenters. */
#include <string.h>

#include "tok_internal.h"

#define AT(h, i) ((h)->v + (i) * (h)->esz)

void tok_heap_push(tok_heap *h, const void *e) {
    size_t i = h->n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!h->before(e, AT(h, up))) break;
        memcpy(AT(h, i), AT(h, up), h->esz);
        i = up;
    }
    memcpy(AT(h, i), e, h->esz);
}

void tok_heap_pop(tok_heap *h, void *out) {
    memcpy(out, AT(h, 0), h->esz);
    size_t n = --h->n, i = 0;
    const char *last = AT(h, n);
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->before(AT(h, c + 1), AT(h, c))) c++;
        if (!h->before(AT(h, c), last)) break;
        memcpy(AT(h, i), AT(h, c), h->esz);
        i = c;
    }
    if (n > 0) memmove(AT(h, i), last, h->esz);
}
