/* Seeded normal generator for the initial scale: splitmix64 seeding, xoshiro256** and Box-Muller. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }

static uint64_t next_u64(cn_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void cn_rng_seed(cn_rng *r, uint64_t seed) {
    uint64_t x = seed ? seed : 0x636c6e6f726d2121ull; /* "clnorm!!": the fixed default */
    for (int i = 0; i < 4; ++i)
        r->s[i] = splitmix64(&x);
}

/* uniform in (0, 1]: never 0, so the logarithm below is finite */
static double uniform(cn_rng *r) { return ((double)(next_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0); }

double cn_rng_normal(cn_rng *r) {
    const double two_pi = 6.283185307179586476925286766559;
    return sqrt(-2.0 * log(uniform(r))) * cos(two_pi * uniform(r));
}
