#include "tape_cache.h"

#include <stdlib.h>
#include <string.h>

void cv_tape_cache_init(cv_tape_cache *c, int cap, cv_tape_release release, void *ctx) {
    memset(c, 0, sizeof *c);
    c->cap = cap < 1 ? 1 : cap > CV_TAPE_CACHE_MAX ? CV_TAPE_CACHE_MAX : cap;
    c->release = release;
    c->ctx = ctx;
}

void *cv_tape_cache_find(cv_tape_cache *c, const cv_op_tape *t) {
    for (int i = 0; i < c->n; i++)
        if (cv_op_tape_equal(&c->e[i].tape, t)) {
            c->e[i].last_use = ++c->clock;
            return c->e[i].handle;
        }
    return NULL;
}

static void drop(cv_tape_cache *c, int i) {
    c->release(c->ctx, c->e[i].handle);
    cv_op_tape_free(&c->e[i].tape);
    c->e[i] = c->e[--c->n];
}

cv_status cv_tape_cache_put(cv_tape_cache *c, const cv_op_tape *t, void *handle, cv_error *err) {
    cv_op_tape copy = {0};
    if (t->n > 0) {
        copy.ops = malloc((size_t)t->n * sizeof *copy.ops);
        if (!copy.ops) return cv_errorf(err, CV_ENOMEM, "tape cache: out of memory for a tape of %d ops", t->n);
        memcpy(copy.ops, t->ops, (size_t)t->n * sizeof *copy.ops);
    }
    copy.n = copy.cap = t->n;
    copy.hash = t->hash;
    if (c->n == c->cap) {
        int lru = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].last_use < c->e[lru].last_use) lru = i;
        drop(c, lru);
    }
    c->e[c->n++] = (cv_tape_cache_entry){.tape = copy, .handle = handle, .last_use = ++c->clock};
    return CV_OK;
}

void cv_tape_cache_clear(cv_tape_cache *c) {
    while (c->n > 0) drop(c, c->n - 1);
}

int cv_tape_cache_size(const cv_tape_cache *c) { return c->n; }
