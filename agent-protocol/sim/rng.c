/* rng: the model's random streams (xoshiro256** seeded through splitmix64) and the triangular
 * draws of stage times. Every device draws from its own stream, so a device's history depends
 * on the seed and on the room (slots, bandwidth), never on the order other devices drew in. */
#include <math.h>

#include "internal.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void gb_sim__rng_seed(gb_sim__rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ gb_sim__mix(stream, 0x5EEDull);
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&x);
    }
}

uint64_t gb_sim__rng_next(gb_sim__rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double gb_sim__rng_unit(gb_sim__rng_t *r)
{
    return (double)(gb_sim__rng_next(r) >> 11) * 0x1.0p-53;
}

uint32_t gb_sim__rng_below(gb_sim__rng_t *r, uint32_t n)
{
    /* Multiply-shift: unbiased enough for n far below 2^32, and one draw always. */
    return (uint32_t)(((gb_sim__rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

int64_t gb_sim__rng_dist_ms(gb_sim__rng_t *r, const gb_sim_dist_t *d)
{
    double u = gb_sim__rng_unit(r);
    double a = d->lo, b = d->hi, c = d->mode;
    double x;

    if (b <= a) {
        x = a;
    } else if (u < (c - a) / (b - a)) {
        x = a + sqrt(u * (b - a) * (c - a));
    } else {
        x = b - sqrt((1.0 - u) * (b - a) * (b - c));
    }
    if (x < 0) {
        x = 0;
    }
    return (int64_t)(x * 1000.0 + 0.5);
}

uint64_t gb_sim__mix(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ull + b;
    return splitmix64(&x);
}
