/* rng.h: the C tests' deterministic random numbers (splitmix64), so that a
 * failure reproduces.  Define RNG_SEED before including for another stream. */
#ifndef AT_TEST_RNG_H
#define AT_TEST_RNG_H

#include <math.h>
#include <stdint.h>

#ifndef RNG_SEED
#define RNG_SEED 0x9e3779b97f4a7c15ull
#endif

static uint64_t rng_state = RNG_SEED;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1), never 0, so logs and powers are safe. */
static double rng_uniform(void)
{
	return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

/* Box-Muller; the second variate is thrown away for simplicity. */
static double rng_gauss(void)
{
	return sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform());
}

#endif /* AT_TEST_RNG_H */
