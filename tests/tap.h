/* tap.h: a minimal TAP-style harness for the C unit tests (one program per module). */
#ifndef AT_TAP_H
#define AT_TAP_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_failures;
static int tap_count;

#define TAP_OK(cond, ...)                                                             \
	do {                                                                          \
		tap_count++;                                                          \
		if (cond) {                                                           \
			printf("ok %d - ", tap_count);                                \
		} else {                                                              \
			tap_failures++;                                               \
			printf("not ok %d - %s:%d: ", tap_count, __FILE__, __LINE__); \
		}                                                                     \
		printf(__VA_ARGS__);                                                  \
		printf("\n");                                                         \
	} while (0)

/* |got - want| <= rel * max(|want|, floor): relative error with a floor for values near 0. */
static inline int tap_close(double got, double want, double rel, double floor_abs)
{
	if (isnan(want))
		return isnan(got);
	double scale = fabs(want) > floor_abs ? fabs(want) : floor_abs;
	return fabs(got - want) <= rel * scale;
}

#define TAP_CLOSE(got, want, rel, floor_abs, what)                                        \
	TAP_OK(tap_close((got), (want), (rel), (floor_abs)), "%s: got %.17g want %.17g", \
	       (what), (double)(got), (double)(want))

static inline int tap_done(void)
{
	printf("1..%d\n", tap_count);
	return tap_failures ? 1 : 0;
}

#endif /* AT_TAP_H */
