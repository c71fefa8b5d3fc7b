/* test_rng: fresh random test data each run, replayable.
 *
 * cv_test_seed(name) takes CORVID_TEST_SEED when set, else a new seed from the
 * clock and the pid, prints it ("NAME: seed N (set CORVID_TEST_SEED to replay)")
 * and returns it. cv_test_rng is a small xorshift64 generator for test data only.
 */
#ifndef CV_TEST_RNG_H
#define CV_TEST_RNG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t cv_test_seed(const char *name) {
    const char *env = getenv("CORVID_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10)
                        : ((uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)getpid() << 32);
    printf("%s: seed %llu (set CORVID_TEST_SEED to replay)\n", name, (unsigned long long)seed);
    return seed;
}

typedef struct cv_test_rng {
    uint64_t s;
} cv_test_rng;

static inline uint64_t cv_test_rng_next(cv_test_rng *r) {
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

/* Nearby seeds give unrelated streams. */
static inline cv_test_rng cv_test_rng_new(uint64_t seed) {
    cv_test_rng r = {seed ? seed : 1};
    for (int i = 0; i < 16; i++) cv_test_rng_next(&r);
    return r;
}

#endif
