/* The tests' base seed and seed mixing, shared by test_util.c (the cmocka suites) and test_mpi.c (which links the
 * shared library, not clnorm_testutil): header-only. */
#ifndef CLNORM_TEST_SEED_H
#define CLNORM_TEST_SEED_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* splitmix64: advances *x and returns the next well-mixed 64-bit value */
static inline uint64_t ts_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* $CLNORM_TEST_SEED (any strtoull base), else a value below 1e9 drawn from the clock */
static inline uint64_t ts_seed_from_env(void) {
    const char *s = getenv("CLNORM_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    return ts_splitmix64(&t) % 1000000000ull;
}

#endif
