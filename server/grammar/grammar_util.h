/* grammar_util: the small helpers the grammar modules share: array growth, a hash
 * mixer, and code point range sets (sorted, merged, complemented).
 */
#ifndef CV_GRAMMAR_UTIL_H
#define CV_GRAMMAR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Grows *v (elements of size bytes) to hold need, doubling; false when out of memory
 * (*v is kept). */
bool cv_gu_grow(void **v, size_t *cap, size_t need, size_t size);

/* A 64-bit finaliser for open-addressing hashes. */
uint64_t cv_gu_mix(uint64_t h);

/* An inclusive range of code points. */
typedef struct cv_cprange {
    uint32_t lo, hi;
} cv_cprange;

/* r[0..n) sorted and merged into out, or their complement within [0, U+10FFFF] when
 * negated; out needs room for n + 1 ranges (it may be r itself when not negated).
 * Returns the number of ranges written. */
size_t cv_cpranges_normalize(cv_cprange *r, size_t n, bool negated, cv_cprange *out);

#endif
