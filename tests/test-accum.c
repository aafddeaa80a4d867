/* test-accum.c: the accumulators against long double two-pass references, and
 * against themselves across splits, merges, layouts, dtypes and thread counts;
 * histogram edges checked in exact integer arithmetic. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"
#define RNG_SEED 0x243f6a8885a308d3ull
#include "rng.h"
#include "tap.h"

/* ---------------------------------------------------------------- helpers */

static void set_threads(int n)
{
#ifdef _OPENMP
	omp_set_num_threads(n);
#else
	(void)n;
#endif
}

static struct at_tensor tensor_tc(const void *data, enum at_dtype dtype, int64_t rows,
                                  int64_t channels)
{
	struct at_tensor t = { data, dtype, 1, rows, channels, rows * channels, channels, 1 };
	return t;
}

static void stats_new(struct at_stats *s, int64_t channels, int hist, int32_t k)
{
	struct at_error err = { 0, "" };
	int rc = at_stats_init(s, channels, hist, k, &err);
	if (rc != AT_OK)
		TAP_OK(0, "at_stats_init: %s", err.message);
}

static void must_add(struct at_stats *s, const struct at_tensor *t, int64_t token_base)
{
	struct at_error err = { 0, "" };
	int rc = at_stats_add(s, t, token_base, &err);
	if (rc != AT_OK)
		TAP_OK(0, "at_stats_add: %s", err.message);
}

static void must_merge(struct at_stats *dst, const struct at_stats *src)
{
	struct at_error err = { 0, "" };
	int rc = at_stats_merge(dst, src, &err);
	if (rc != AT_OK)
		TAP_OK(0, "at_stats_merge: %s", err.message);
}

/* Rows [first, first + n) of a [rows, channels] float array, tokens = rows. */
static void add_rows(struct at_stats *s, const float *x, int64_t channels, int64_t first,
                     int64_t n)
{
	struct at_tensor t = tensor_tc(x + first * channels, AT_F32, n, channels);
	must_add(s, &t, first);
}

static int is_finite_float(float x)
{
	return fabsf(x) <= FLT_MAX;
}

/* ---------------------------------------------------------------- references */

/* Two-pass moments in long double over x[0], x[stride], ... (finite values only),
 * with the second-pass correction of Chan, Golub & LeVeque 1983. */
struct reference {
	uint64_t count, nonfinite;
	long double mean, m2, m3, m4, abssum;
	double min, max, absmax;
};

static struct reference reference_moments(const float *x, int64_t n, int64_t stride)
{
	struct reference r = { 0, 0, 0, 0, 0, 0, 0, NAN, NAN, NAN };
	long double sum = 0;
	for (int64_t i = 0; i < n; i++) {
		float v = x[i * stride];
		if (!is_finite_float(v)) {
			r.nonfinite++;
			continue;
		}
		r.count++;
		sum += v;
		r.abssum += fabsf(v);
		r.min = fmin(r.min, v);
		r.max = fmax(r.max, v);
		r.absmax = fmax(r.absmax, fabsf(v));
	}
	if (r.count == 0)
		return r;
	long double mean0 = sum / r.count, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
	for (int64_t i = 0; i < n; i++) {
		float v = x[i * stride];
		if (!is_finite_float(v))
			continue;
		long double d = v - mean0;
		s1 += d;
		s2 += d * d;
		s3 += d * d * d;
		s4 += d * d * d * d;
	}
	long double nn = r.count, d = s1 / nn;
	r.mean = mean0 + d;
	r.m2 = s2 - s1 * d;
	r.m3 = s3 - 3 * d * s2 + 2 * nn * d * d * d;
	r.m4 = s4 - 4 * d * s3 + 6 * d * d * s2 - 3 * nn * d * d * d * d;
	return r;
}

static double reference_skewness(const struct reference *r)
{
	return (double)(sqrtl((long double)r->count) * r->m3 / powl(r->m2, 1.5L));
}

static double reference_kurtosis(const struct reference *r)
{
	return (double)(r->count * r->m4 / (r->m2 * r->m2) - 3);
}

/* mean and variance within rel_mv (the mean relative to max(|mean|, mean_floor)),
 * skewness and kurtosis within shape_abs, the rest exactly or nearly. */
static void check_against(const struct at_moments *m, const struct reference *r,
                          double rel_mv, double mean_floor, double shape_abs, const char *what)
{
	char label[160];
	TAP_OK(m->count == r->count && m->nonfinite == r->nonfinite,
	       "%s: count %llu/%llu nonfinite %llu/%llu", what, (unsigned long long)m->count,
	       (unsigned long long)r->count, (unsigned long long)m->nonfinite,
	       (unsigned long long)r->nonfinite);
	snprintf(label, sizeof label, "%s: mean", what);
	TAP_CLOSE(m->mean, (double)r->mean, rel_mv, mean_floor, label);
	snprintf(label, sizeof label, "%s: variance", what);
	TAP_CLOSE(at_moments_variance(m), (double)(r->m2 / (r->count - 1)), rel_mv, 0, label);
	snprintf(label, sizeof label, "%s: skewness", what);
	TAP_CLOSE(at_moments_skewness(m), reference_skewness(r), shape_abs, 1.0, label);
	snprintf(label, sizeof label, "%s: kurtosis", what);
	TAP_CLOSE(at_moments_kurtosis(m), reference_kurtosis(r), shape_abs, 1.0, label);
	TAP_OK(m->min == r->min && m->max == r->max && m->absmax == r->absmax,
	       "%s: min %g max %g absmax %g exact", what, m->min, m->max, m->absmax);
	snprintf(label, sizeof label, "%s: abssum", what);
	TAP_CLOSE(m->abssum, (double)r->abssum, 1e-13, 0, label);
}

/* ---------------------------------------------------------------- comparing accumulators */

static char mismatch[256];

static int same_value(double a, double b, double rel, double floor_abs)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b);
	if (rel == 0)
		return a == b;
	double scale = fmax(fmax(fabs(a), fabs(b)), floor_abs);
	return fabs(a - b) <= rel * scale;
}

static int same_channel(const struct at_stats *a, const struct at_stats *b, int64_t c, double rel)
{
	double n = (double)a->count[c], m2 = a->m2[c];
	double sd = n > 0 ? sqrt(m2 / n) : 0;
	double m3_floor = n > 0 ? pow(m2, 1.5) / sqrt(n) : 0, m4_floor = n > 0 ? m2 * m2 / n : 0;
	if (a->count[c] != b->count[c] || a->nonfinite[c] != b->nonfinite[c])
		snprintf(mismatch, sizeof mismatch, "channel %lld: counts", (long long)c);
	else if (!same_value(a->min[c], b->min[c], 0, 0) || !same_value(a->max[c], b->max[c], 0, 0) ||
	         !same_value(a->absmax[c], b->absmax[c], 0, 0))
		snprintf(mismatch, sizeof mismatch, "channel %lld: min/max/absmax", (long long)c);
	else if (!same_value(a->mean[c], b->mean[c], rel, sd))
		snprintf(mismatch, sizeof mismatch, "channel %lld: mean %.17g %.17g", (long long)c,
		         a->mean[c], b->mean[c]);
	else if (!same_value(a->m2[c], b->m2[c], rel, 0))
		snprintf(mismatch, sizeof mismatch, "channel %lld: m2 %.17g %.17g", (long long)c,
		         a->m2[c], b->m2[c]);
	else if (!same_value(a->m3[c], b->m3[c], rel, m3_floor))
		snprintf(mismatch, sizeof mismatch, "channel %lld: m3 %.17g %.17g", (long long)c,
		         a->m3[c], b->m3[c]);
	else if (!same_value(a->m4[c], b->m4[c], rel, m4_floor))
		snprintf(mismatch, sizeof mismatch, "channel %lld: m4 %.17g %.17g", (long long)c,
		         a->m4[c], b->m4[c]);
	else if (!same_value(a->abssum[c], b->abssum[c], rel, 0))
		snprintf(mismatch, sizeof mismatch, "channel %lld: abssum", (long long)c);
	else
		return 1;
	return 0;
}

static int same_extremes(const struct at_stats *a, const struct at_stats *b)
{
	if (a->n_extremes != b->n_extremes) {
		snprintf(mismatch, sizeof mismatch, "n_extremes %d vs %d", a->n_extremes,
		         b->n_extremes);
		return 0;
	}
	for (int32_t i = 0; i < a->n_extremes; i++) {
		const struct at_extreme *x = &a->extremes[i], *y = &b->extremes[i];
		if (x->value != y->value || x->token != y->token || x->channel != y->channel) {
			snprintf(mismatch, sizeof mismatch, "extreme %d: (%g, %lld, %d) vs (%g, %lld, %d)",
			         i, x->value, (long long)x->token, x->channel, y->value,
			         (long long)y->token, y->channel);
			return 0;
		}
	}
	return 1;
}

/* Everything equal: moments within rel (0: bitwise), the rest exactly. */
static int stats_same(const struct at_stats *a, const struct at_stats *b, double rel)
{
	strcpy(mismatch, "ok");
	if (a->channels != b->channels || !a->hist != !b->hist) {
		strcpy(mismatch, "shape");
		return 0;
	}
	for (int64_t c = 0; c < a->channels; c++)
		if (!same_channel(a, b, c, rel))
			return 0;
	if (a->hist &&
	    memcmp(a->hist, b->hist, (size_t)a->channels * AT_HIST_BINS * sizeof *a->hist)) {
		strcpy(mismatch, "histograms");
		return 0;
	}
	return same_extremes(a, b);
}

/* ---------------------------------------------------------------- exact bin reference */

/* |f| >= 2^(MIN_EXP + i/4), decided in integers: |f| = M 2^E with M < 2^24, so
 * the test is M^4 >= 2^(4 MIN_EXP + i - 4E), with M^4 < 2^96 in 128 bits. */
static int float_at_least_edge(float f, int i)
{
	uint32_t bits;
	memcpy(&bits, &f, sizeof bits);
	uint32_t biased = (bits >> 23) & 0xffu, fraction = bits & 0x7fffffu;
	uint64_t mantissa = biased ? fraction | 0x800000u : fraction;
	int exponent = biased ? (int)biased - 150 : -149;
	int p = 4 * AT_HIST_MIN_EXP + i - 4 * exponent;
	if (mantissa == 0)
		return 0;
	if (p < 0)
		return 1;
	if (p >= 127)
		return 0;
	unsigned __int128 m2 = (unsigned __int128)mantissa * mantissa;
	return m2 * m2 >= ((unsigned __int128)1 << p);
}

/* Bin of a finite float by bisection over the exact edge predicate. */
static int reference_bin(float f)
{
	if (f == 0)
		return 0;
	if (!float_at_least_edge(f, 0))
		return 1;
	if (float_at_least_edge(f, AT_HIST_LOG_BINS))
		return AT_HIST_BINS - 1;
	int lo = 0, hi = AT_HIST_LOG_BINS; /* edge lo holds, edge hi does not */
	while (hi - lo > 1) {
		int mid = (lo + hi) / 2;
		if (float_at_least_edge(f, mid))
			lo = mid;
		else
			hi = mid;
	}
	return 2 + lo;
}

/* The smallest positive float >= edge i. */
static float float_edge_up(int i)
{
	float f = (float)exp2(AT_HIST_MIN_EXP + i / 4.0);
	while (float_at_least_edge(nextafterf(f, 0), i))
		f = nextafterf(f, 0);
	while (!float_at_least_edge(f, i))
		f = nextafterf(f, INFINITY);
	return f;
}

/* ---------------------------------------------------------------- tests */

/* Mean 1e4 with std 1 (and std 0.01 in channel 2): catastrophic for the
 * textbook sum-of-squares formulas.  Skewness and kurtosis are compared within
 * 1e-11 of max(|value|, 1): here they are O(1e-2) random quantities, where a
 * relative tolerance means nothing; the errors seen are ~1e-14 (kurtosis
 * ~1e-13), the margin leaves room for other compilers and FMA contraction. */
static void test_hard_data(void)
{
	const int64_t n = 100000, channels = 3;
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	for (int64_t i = 0; i < n; i++)
		for (int64_t c = 0; c < channels; c++)
			x[i * channels + c] = (float)((c == 1 ? -1e4 : 1e4) + rng_gauss() * (c == 2 ? 0.01 : 1));
	struct at_stats s;
	stats_new(&s, channels, 1, 8);
	add_rows(&s, x, channels, 0, n);
	for (int64_t c = 0; c < channels; c++) {
		struct reference r = reference_moments(x + c, n, channels);
		struct at_moments m;
		char what[64];
		at_stats_channel(&s, c, &m);
		snprintf(what, sizeof what, "mean 1e4 channel %lld", (long long)c);
		check_against(&m, &r, 1e-12, 0, 1e-11, what);
	}
	/* One row per call, as when decoding token by token: each call folds into
	 * the stored double mean, whose rounding (~1e-16 |mean|) is the limit;
	 * relative to std 1 that is still well inside 1e-12 (~5e-13 seen). */
	struct at_stats rows;
	stats_new(&rows, channels, 0, 0);
	for (int64_t i = 0; i < n; i++)
		add_rows(&rows, x, channels, i, 1);
	struct reference r = reference_moments(x, n, channels);
	struct at_moments m;
	at_stats_channel(&rows, 0, &m);
	TAP_CLOSE(m.mean, (double)r.mean, 1e-12, 0, "mean 1e4, one row per call: mean");
	TAP_CLOSE(at_moments_variance(&m), (double)(r.m2 / (r.count - 1)), 1e-12, 0,
	          "mean 1e4, one row per call: variance");
	at_stats_free(&rows);
	at_stats_free(&s);
	free(x);
}

static void test_ten_million(void)
{
	const int64_t n = 10000000;
	float *x = malloc((size_t)n * sizeof *x);
	for (int64_t i = 0; i < n; i += 2) {
		double radius = sqrt(-2.0 * log(rng_uniform())), angle = 6.283185307179586 * rng_uniform();
		x[i] = (float)(100 + 3 * radius * cos(angle));
		x[i + 1] = (float)(100 + 3 * radius * sin(angle));
	}
	struct at_stats s;
	stats_new(&s, 1, 1, 16);
	clock_t start = clock();
	add_rows(&s, x, 1, 0, n);
	double ms = 1000.0 * (double)(clock() - start) / CLOCKS_PER_SEC;
	printf("# 1e7 values in one channel: %.0f ms cpu\n", ms);
	struct reference r = reference_moments(x, n, 1);
	struct at_moments m;
	at_stats_channel(&s, 0, &m);
	check_against(&m, &r, 1e-12, 0, 1e-11, "1e7 values");
	at_stats_free(&s);
	free(x);
}

/* Cauchy (symmetric, no mean) and Pareto alpha 1.5 (no variance), plus values
 * near FLT_MAX whose fourth powers dominate m4.  The mean is compared relative
 * to mean |x|, the scale of its rounding error when terms cancel. */
static void test_heavy_tails(void)
{
	const int64_t n = 200000, channels = 2;
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	for (int64_t i = 0; i < n; i++) {
		x[i * channels] = (float)tan(3.141592653589793 * (rng_uniform() - 0.5));
		x[i * channels + 1] = (float)pow(rng_uniform(), -1 / 1.5);
	}
	x[1000 * channels] = 1e25f;
	x[1001 * channels] = -3e25f;
	x[77777 * channels + 1] = 1e30f;
	x[150000 * channels + 1] = 3e38f;
	struct at_stats s;
	stats_new(&s, channels, 1, 8);
	add_rows(&s, x, channels, 0, 70001);
	add_rows(&s, x, channels, 70001, n - 70001);
	for (int64_t c = 0; c < channels; c++) {
		struct reference r = reference_moments(x + c, n, channels);
		struct at_moments m;
		char what[64];
		at_stats_channel(&s, c, &m);
		snprintf(what, sizeof what, "%s tails", c ? "pareto" : "cauchy");
		check_against(&m, &r, 1e-12, (double)(r.abssum / r.count), 1e-11, what);
		TAP_CLOSE(m.m3, (double)r.m3, 1e-12, 0, "heavy tails: m3");
		TAP_CLOSE(m.m4, (double)r.m4, 1e-12, 0, "heavy tails: m4");
	}
	TAP_OK(s.extremes[0].value == 3e38f && s.extremes[0].token == 150000 &&
	       s.extremes[0].channel == 1, "largest extreme is 3e38 at token 150000");
	at_stats_free(&s);
	free(x);
}

/* Skewed data (lognormal per channel, with NaN and inf sprinkled in) for the
 * split and merge tests, so m3 and m4 are far from zero. */
static float *skewed_data(int64_t n, int64_t channels)
{
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	for (int64_t i = 0; i < n; i++)
		for (int64_t c = 0; c < channels; c++) {
			double v = (double)(c % 5 + 1) * exp(0.7 * rng_gauss()) + (double)(c % 3) * 50;
			x[i * channels + c] = (float)(c % 2 ? -v : v);
		}
	for (int64_t k = 0; k < n * channels / 997; k++)
		x[(rng_next() % (uint64_t)(n * channels))] = k % 3 == 0 ? NAN : k % 3 == 1 ? INFINITY : -INFINITY;
	return x;
}

static const int64_t split_points[] = { 0, 1, 8, 1008 }; /* parts of 1, 7, 1000, rest rows */

static void test_partitions(void)
{
	const int64_t n = 3000, channels = 197;
	float *x = skewed_data(n, channels);
	struct at_stats whole, split, merged, tree, parts[4];
	stats_new(&whole, channels, 1, 24);
	stats_new(&split, channels, 1, 24);
	stats_new(&merged, channels, 1, 24);
	add_rows(&whole, x, channels, 0, n);
	for (int p = 0; p < 4; p++) {
		int64_t first = split_points[p], end = p < 3 ? split_points[p + 1] : n;
		add_rows(&split, x, channels, first, end - first);
		stats_new(&parts[p], channels, 1, 24);
		add_rows(&parts[p], x, channels, first, end - first);
		must_merge(&merged, &parts[p]);
	}
	TAP_OK(stats_same(&split, &whole, 1e-12), "splits 1/7/1000/rest == one pass: %s", mismatch);
	TAP_OK(stats_same(&merged, &whole, 1e-12), "merged parts == one pass: %s", mismatch);
	/* ((3 + 2) + (1 + 0)): another order and grouping */
	must_merge(&parts[3], &parts[2]);
	must_merge(&parts[1], &parts[0]);
	must_merge(&parts[3], &parts[1]);
	tree = parts[3];
	TAP_OK(stats_same(&tree, &whole, 1e-12), "tree-merged parts == one pass: %s", mismatch);
	for (int p = 0; p < 4; p++)
		at_stats_free(&parts[p]);
	at_stats_free(&whole);
	at_stats_free(&split);
	at_stats_free(&merged);
	free(x);
}

/* Each channel belongs to one thread, so results are bitwise identical. */
static void test_thread_counts(void)
{
	const int64_t n = 2000, channels = 300;
	float *x = skewed_data(n, channels);
	struct at_stats one, four;
	stats_new(&one, channels, 1, 40);
	stats_new(&four, channels, 1, 40);
	set_threads(1);
	add_rows(&one, x, channels, 0, 999);
	add_rows(&one, x, channels, 999, n - 999);
	set_threads(4);
	add_rows(&four, x, channels, 0, 999);
	add_rows(&four, x, channels, 999, n - 999);
	TAP_OK(stats_same(&one, &four, 0), "1 thread == 4 threads, bitwise: %s", mismatch);
	at_stats_free(&one);
	at_stats_free(&four);
	free(x);
}

static void test_nonfinite(void)
{
	const int64_t n = 1000, channels = 3;
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	static const float specials[] = { NAN, INFINITY, -INFINITY, -NAN };
	for (int64_t i = 0; i < n; i++) {
		x[i * 3] = i % 7 == 3 ? specials[i % 4] : (float)rng_gauss();
		x[i * 3 + 1] = specials[i % 4];
		x[i * 3 + 2] = (float)(rng_gauss() + 2);
	}
	struct at_stats s;
	stats_new(&s, channels, 1, 2000);
	add_rows(&s, x, channels, 0, n);
	struct reference r = reference_moments(x, n, 3);
	struct at_moments m;
	at_stats_channel(&s, 0, &m);
	check_against(&m, &r, 1e-12, 1, 1e-12, "with NaN/inf");
	TAP_OK(r.nonfinite == 143, "reference saw 143 non-finite values (%llu)",
	       (unsigned long long)r.nonfinite);
	at_stats_channel(&s, 1, &m);
	TAP_OK(m.count == 0 && m.nonfinite == (uint64_t)n && m.mean == 0 && m.m2 == 0 &&
	       m.m3 == 0 && m.m4 == 0 && m.abssum == 0,
	       "all-NaN/inf channel: empty moments, %llu non-finite", (unsigned long long)m.nonfinite);
	TAP_OK(isnan(m.min) && isnan(m.max) && isnan(m.absmax), "all-NaN/inf channel: min/max NaN");
	TAP_OK(isnan(at_moments_variance(&m)) && isnan(at_moments_absmean(&m)) &&
	       isnan(at_moments_skewness(&m)), "all-NaN/inf channel: derived statistics NaN");
	uint64_t binned[3] = { 0, 0, 0 };
	for (int64_t c = 0; c < channels; c++)
		for (int b = 0; b < AT_HIST_BINS; b++)
			binned[c] += s.hist[c * AT_HIST_BINS + b];
	TAP_OK(binned[0] == s.count[0] && binned[1] == 0 && binned[2] == (uint64_t)n,
	       "histograms hold only finite values (%llu %llu %llu)", (unsigned long long)binned[0],
	       (unsigned long long)binned[1], (unsigned long long)binned[2]);
	int all_finite = s.n_extremes == (int32_t)(s.count[0] + s.count[2]);
	for (int32_t i = 0; i < s.n_extremes; i++)
		all_finite &= isfinite(s.extremes[i].value) && s.extremes[i].channel != 1;
	TAP_OK(all_finite, "extremes: %d, every finite value and nothing else", s.n_extremes);
	at_stats_free(&s);
	free(x);
}

/* Independent decoders: the value of each bit pattern from its definition. */
static float reference_f16(uint16_t h)
{
	int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
	double v;
	if (exponent == 0)
		v = ldexp(mantissa, -24);
	else if (exponent == 31)
		v = mantissa ? NAN : INFINITY;
	else
		v = ldexp(mantissa + 1024, exponent - 25);
	return (float)(sign ? -v : v);
}

static float reference_bf16(uint16_t h)
{
	int sign = h >> 15, exponent = (h >> 7) & 0xff, mantissa = h & 0x7f;
	double v;
	if (exponent == 0)
		v = ldexp(mantissa, -133);
	else if (exponent == 255)
		v = mantissa ? NAN : INFINITY;
	else
		v = ldexp(mantissa + 128, exponent - 134);
	return (float)(sign ? -v : v);
}

/* Every 16-bit pattern, [4096 rows, 16 channels] and [2, 16, 2048] ([B, C, T]). */
static void check_half(enum at_dtype dtype, float (*decode)(uint16_t), const char *name,
                       uint64_t want_nonfinite)
{
	uint16_t *h = malloc(65536 * sizeof *h);
	float *f = malloc(65536 * sizeof *f);
	for (int i = 0; i < 65536; i++) {
		h[i] = (uint16_t)(i * 40503u); /* a permutation of the patterns */
		f[i] = decode(h[i]);
	}
	struct at_stats from_half, from_float;
	stats_new(&from_half, 16, 1, 100);
	stats_new(&from_float, 16, 1, 100);
	struct at_tensor th = tensor_tc(h, dtype, 4096, 16), tf = tensor_tc(f, AT_F32, 4096, 16);
	must_add(&from_half, &th, 0);
	must_add(&from_float, &tf, 0);
	struct at_tensor bct_h = { h, dtype, 2, 2048, 16, 16 * 2048, 1, 2048 };
	struct at_tensor bct_f = bct_h;
	bct_f.data = f;
	bct_f.dtype = AT_F32;
	must_add(&from_half, &bct_h, 4096);
	must_add(&from_float, &bct_f, 4096);
	TAP_OK(stats_same(&from_half, &from_float, 0), "%s == float32 of the same values: %s", name,
	       mismatch);
	struct at_moments pooled;
	at_stats_pool(&from_half, &pooled);
	TAP_OK(pooled.nonfinite == 2 * want_nonfinite && pooled.count == 2 * (65536 - want_nonfinite),
	       "%s: %llu non-finite patterns, twice", name, (unsigned long long)pooled.nonfinite / 2);
	at_stats_free(&from_half);
	at_stats_free(&from_float);
	free(h);
	free(f);
}

static void test_half_types(void)
{
	TAP_OK(reference_f16(0x0001) == 0x1p-24f && reference_f16(0x7bff) == 65504.0f &&
	       at_f16_to_float(0x0001) == 0x1p-24f && at_f16_to_float(0x03ff) == reference_f16(0x03ff),
	       "f16 decoders agree on subnormals and the largest finite value");
	TAP_OK(reference_bf16(0x0001) == 0x1p-133f && at_bf16_to_float(0x0001) == 0x1p-133f &&
	       signbit(reference_bf16(0x8000)), "bf16 decoders agree on subnormals and -0");
	check_half(AT_F16, reference_f16, "float16", 2 * 1024);
	check_half(AT_BF16, reference_bf16, "bfloat16", 2 * 128);
}

/* Brute-force extremes of a [B, C, T] float array, token = base + b*T + t. */
struct candidate {
	double value;
	int64_t token;
	int32_t channel;
};

static int candidate_order(const void *pa, const void *pb)
{
	const struct candidate *a = pa, *b = pb;
	if (fabs(a->value) != fabs(b->value))
		return fabs(a->value) > fabs(b->value) ? -1 : 1;
	if (a->token != b->token)
		return a->token < b->token ? -1 : 1;
	if (a->channel != b->channel)
		return a->channel < b->channel ? -1 : 1;
	return (a->value < b->value) - (a->value > b->value);
}

static int extremes_match(const struct at_stats *s, struct candidate *all, size_t n, int32_t k)
{
	qsort(all, n, sizeof *all, candidate_order);
	size_t want = n < (size_t)k ? n : (size_t)k;
	if ((size_t)s->n_extremes != want)
		return 0;
	for (size_t i = 0; i < want; i++)
		if (s->extremes[i].value != all[i].value || s->extremes[i].token != all[i].token ||
		    s->extremes[i].channel != all[i].channel)
			return 0;
	return 1;
}

static void test_layouts(void)
{
	const int64_t batches = 3, channels = 19, steps = 300, base = 1000;
	float *bct = malloc((size_t)(batches * channels * steps) * sizeof *bct);
	float *tc = malloc((size_t)(batches * channels * steps) * sizeof *tc);
	struct candidate *all = malloc((size_t)(batches * channels * steps) * sizeof *all);
	for (int64_t b = 0; b < batches; b++)
		for (int64_t c = 0; c < channels; c++)
			for (int64_t t = 0; t < steps; t++) {
				float v = (float)(rng_gauss() * (double)(c + 1));
				bct[(b * channels + c) * steps + t] = v;
				tc[(b * steps + t) * channels + c] = v;
				all[(b * channels + c) * steps + t] =
					(struct candidate){ v, base + b * steps + t, (int32_t)c };
			}
	struct at_stats s_bct, s_tc, s_btc, s_rev;
	stats_new(&s_bct, channels, 1, 30);
	stats_new(&s_tc, channels, 1, 30);
	stats_new(&s_btc, channels, 1, 30);
	stats_new(&s_rev, channels, 1, 0);
	struct at_tensor t_bct = { bct, AT_F32, batches, steps, channels, channels * steps, 1, steps };
	struct at_tensor t_btc = { tc, AT_F32, batches, steps, channels, steps * channels, channels, 1 };
	struct at_tensor t_tc = tensor_tc(tc, AT_F32, batches * steps, channels);
	/* channels reversed by a negative stride */
	struct at_tensor t_rev = { tc + channels - 1, AT_F32, 1, batches * steps, channels,
		                   0, channels, -1 };
	must_add(&s_bct, &t_bct, base);
	must_add(&s_tc, &t_tc, base);
	must_add(&s_btc, &t_btc, base);
	must_add(&s_rev, &t_rev, base);
	TAP_OK(stats_same(&s_bct, &s_tc, 0), "[B,C,T] == transposed [tokens,C], bitwise: %s", mismatch);
	TAP_OK(stats_same(&s_btc, &s_tc, 0), "[B,T,C] == [tokens,C], bitwise: %s", mismatch);
	TAP_OK(extremes_match(&s_bct, all, (size_t)(batches * channels * steps), 30),
	       "[B,C,T] extremes and tokens == brute force (token_base + b*rows + r)");
	int reversed_ok = 1;
	for (int64_t c = 0; c < channels; c++)
		reversed_ok &= s_rev.mean[c] == s_tc.mean[channels - 1 - c] &&
		               s_rev.m4[c] == s_tc.m4[channels - 1 - c] &&
		               !memcmp(s_rev.hist + c * AT_HIST_BINS,
		                       s_tc.hist + (channels - 1 - c) * AT_HIST_BINS,
		                       AT_HIST_BINS * sizeof *s_rev.hist);
	TAP_OK(reversed_ok, "negative channel stride reverses the channels");
	at_stats_free(&s_bct);
	at_stats_free(&s_tc);
	at_stats_free(&s_btc);
	at_stats_free(&s_rev);
	free(bct);
	free(tc);
	free(all);
}

/* High 128 bits of the 256-bit product of two 128-bit numbers (64-bit limbs). */
static unsigned __int128 mul_high128(unsigned __int128 a, unsigned __int128 b)
{
	uint64_t a0 = (uint64_t)a, a1 = (uint64_t)(a >> 64), b0 = (uint64_t)b, b1 = (uint64_t)(b >> 64);
	unsigned __int128 p00 = (unsigned __int128)a0 * b0, p01 = (unsigned __int128)a0 * b1;
	unsigned __int128 p10 = (unsigned __int128)a1 * b0, p11 = (unsigned __int128)a1 * b1;
	unsigned __int128 middle = (p00 >> 64) + (uint64_t)p01 + (uint64_t)p10;
	return p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
}

/* m^4 >= 2^q for a double m in [1, 2) and q in 1..3, exactly: m = M 2^-52 and
 * M^4 >= 2^(208+q) iff the high 128 bits of M^4 reach 2^(80+q). */
static int double_fourth_power_at_least(double m, int q)
{
	unsigned __int128 big = (unsigned __int128)(uint64_t)ldexp(m, 52);
	unsigned __int128 square = big * big;
	return mul_high128(square, square) >= ((unsigned __int128)1 << (80 + q));
}

static void test_hist_edges_double(void)
{
	int lower_ok = 1, exact_ok = 1;
	for (int b = 2; b < AT_HIST_BINS; b++) {
		double edge = at_hist_lower_edge(b);
		double nominal = exp2(AT_HIST_MIN_EXP + (b - 2) / 4.0);
		lower_ok &= at_hist_bin(edge) == b && at_hist_bin(nextafter(edge, 0)) == b - 1 &&
		            fabs(edge - nominal) <= nominal * 0x1p-52;
	}
	for (int q = 1; q <= 3; q++) {
		double m = ldexp(at_hist_lower_edge(2 + q), -AT_HIST_MIN_EXP);
		exact_ok &= double_fourth_power_at_least(m, q) &&
		            !double_fourth_power_at_least(nextafter(m, 0), q);
	}
	TAP_OK(lower_ok, "at_hist_lower_edge(b) is in bin b, the double below in b-1, ~exp2");
	TAP_OK(exact_ok, "quarter-octave edges are the smallest doubles >= 2^(q/4), exactly");
	TAP_OK(at_hist_lower_edge(0) == 0 && at_hist_lower_edge(1) == 4.9406564584124654e-324 &&
	       isinf(at_hist_lower_edge(AT_HIST_BINS)) && at_hist_bin(0x1p24) == AT_HIST_BINS - 1 &&
	       at_hist_bin(INFINITY) == AT_HIST_BINS - 1 && at_hist_bin(0x1p-24) == 2 &&
	       at_hist_bin(nextafter(0x1p-24, 0)) == 1 && at_hist_bin(4.9406564584124654e-324) == 1 &&
	       at_hist_bin(0) == 0 && at_hist_bin(-0.0) == 0,
	       "zero, underflow and overflow bins and their edges");
}

/* Exact count of values in bins >= first_bin, from the reference bin counts. */
static uint64_t count_bins_from(const uint32_t *want, int first_bin)
{
	uint64_t total = 0;
	for (int b = first_bin; b < AT_HIST_BINS; b++)
		total += want[b];
	return total;
}

static void check_count_at_least(const struct at_stats *s, const uint32_t *want)
{
	int ok = 1;
	for (int b = 1; b < AT_HIST_BINS; b++) {
		double edge = at_hist_lower_edge(b), below = nextafter(edge, 0);
		ok &= at_stats_count_at_least(s, 0, edge) == count_bins_from(want, b);
		ok &= at_stats_count_at_least(s, 0, -edge) == count_bins_from(want, 0);
		ok &= at_stats_count_at_least(s, 0, below) == count_bins_from(want, below > 0 ? b - 1 : 0);
	}
	TAP_OK(ok, "count_at_least at every edge and just below == brute force");
	TAP_OK(at_stats_count_at_least(s, 0, 0) == s->count[0] &&
	       at_stats_count_at_least(s, 0, NAN) == 0 && at_stats_count_at_least(s, 2, 1.0) == 0 &&
	       at_stats_count_at_least(s, -1, 1.0) == 0,
	       "count_at_least: t = 0 counts all finite, NaN and bad channels count none");
}

static void test_hist_edges(void)
{
	const int64_t n_random = 60000;
	int64_t n = 0;
	float *x = malloc((size_t)(2 * (AT_HIST_LOG_BINS + 1) + 16 + n_random) * sizeof *x);
	int edges_ok = 1;
	for (int i = 0; i <= AT_HIST_LOG_BINS; i++) {
		float up = float_edge_up(i), below = nextafterf(up, 0);
		int bin_up = i == AT_HIST_LOG_BINS ? AT_HIST_BINS - 1 : 2 + i;
		edges_ok &= at_hist_bin(up) == bin_up && at_hist_bin(below) == 1 + i &&
		            reference_bin(up) == bin_up && reference_bin(below) == 1 + i &&
		            (double)up >= at_hist_lower_edge(bin_up) &&
		            (double)below < at_hist_lower_edge(bin_up);
		x[n++] = up;
		x[n++] = i % 2 ? -below : below;
	}
	TAP_OK(edges_ok, "floats at and just below every edge 2^(-24+i/4) land in the right bins");
	static const float specials[] = { 0.0f, -0.0f, 0x1p-149f, -0x1p-126f, 1e-30f, 0x1p-24f,
		                          FLT_MAX, -FLT_MAX, 0x1p24f, 16777215.0f, 1.0f, -1.0f,
		                          NAN, INFINITY, -INFINITY, 0x1.fffffep-25f };
	for (size_t i = 0; i < sizeof specials / sizeof *specials; i++)
		x[n++] = specials[i];
	for (int64_t i = 0; i < n_random; i++) {
		float v = (float)exp2(-23.9 + 47.8 * rng_uniform());
		x[n++] = rng_next() & 1 ? -v : v;
	}
	int bins_ok = 1;
	uint32_t want[AT_HIST_BINS] = { 0 };
	for (int64_t i = 0; i < n; i++) {
		if (!is_finite_float(x[i]))
			continue;
		bins_ok &= at_hist_bin(fabsf(x[i])) == reference_bin(x[i]);
		want[reference_bin(x[i])]++;
	}
	TAP_OK(bins_ok, "at_hist_bin == exact integer reference on %lld values", (long long)n);
	struct at_stats s;
	stats_new(&s, 2, 1, 0);
	struct at_tensor t = { x, AT_F32, 1, n, 2, 0, 1, 0 }; /* two channels, same data */
	must_add(&s, &t, 0);
	TAP_OK(!memcmp(s.hist, want, sizeof want) && !memcmp(s.hist + AT_HIST_BINS, want, sizeof want),
	       "at_stats_add histogram == brute force");
	TAP_OK(want[0] == 2 && want[1] == 5 && want[AT_HIST_BINS - 1] == 4,
	       "zero/underflow/overflow counts %u %u %u", want[0], want[1], want[AT_HIST_BINS - 1]);
	check_count_at_least(&s, want);
	at_stats_free(&s);
	free(x);
	test_hist_edges_double();
}

/* Small integers: |x| ties everywhere, settled by token then channel. */
static void test_extremes(void)
{
	const int64_t n = 700, channels = 200; /* enough for the parallel path */
	const int32_t k = 50;
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	struct candidate *all = malloc((size_t)(n * channels) * sizeof *all);
	size_t n_all = 0;
	for (int64_t i = 0; i < n; i++)
		for (int64_t c = 0; c < channels; c++) {
			float v = (float)((int)(rng_next() % 13) - 6);
			if (rng_next() % 50 == 0)
				v = rng_next() & 1 ? NAN : -INFINITY;
			x[i * channels + c] = v;
			if (is_finite_float(v))
				all[n_all++] = (struct candidate){ v, 5000 + i, (int32_t)c };
		}
	struct at_stats one, split, merged, part;
	stats_new(&one, channels, 0, k);
	stats_new(&split, channels, 0, k);
	stats_new(&merged, channels, 0, k);
	set_threads(1);
	struct at_tensor t = tensor_tc(x, AT_F32, n, channels);
	must_add(&one, &t, 5000);
	TAP_OK(extremes_match(&one, all, n_all, k), "top-%d with ties == brute force", k);
	set_threads(4);
	static const int64_t cuts[] = { 0, 1, 8, 300, 700 };
	for (int p = 0; p < 4; p++) {
		struct at_tensor piece = tensor_tc(x + cuts[p] * channels, AT_F32, cuts[p + 1] - cuts[p],
		                                   channels);
		must_add(&split, &piece, 5000 + cuts[p]);
		stats_new(&part, channels, 0, k);
		must_add(&part, &piece, 5000 + cuts[p]);
		must_merge(&merged, &part);
		at_stats_free(&part);
	}
	TAP_OK(same_extremes(&split, &one), "4 threads, split 1/7/292/rest == 1 thread: %s", mismatch);
	TAP_OK(same_extremes(&merged, &one), "merged parts == one pass: %s", mismatch);
	struct at_stats few;
	stats_new(&few, 2, 0, 50);
	struct at_tensor small = tensor_tc(x, AT_F32, 5, 2);
	must_add(&few, &small, 0);
	TAP_OK(few.n_extremes == (int32_t)(few.count[0] + few.count[1]),
	       "K above the number of values keeps them all (%d)", few.n_extremes);
	at_stats_free(&few);
	at_stats_free(&one);
	at_stats_free(&split);
	at_stats_free(&merged);
	free(x);
	free(all);
}

/* All channels pooled vs one long double two-pass over every value; channel 5
 * is empty (NaN only) and must not disturb min/max. */
static void test_pool(void)
{
	const int64_t n = 20000, channels = 13;
	float *x = malloc((size_t)(n * channels) * sizeof *x);
	for (int64_t i = 0; i < n; i++)
		for (int64_t c = 0; c < channels; c++)
			x[i * channels + c] = c == 5 ? NAN
			                             : (float)(1e3 * (double)c + (double)(c + 1) * rng_gauss() +
			                                       (c == 7 ? 30 * rng_uniform() : 0));
	struct at_stats s;
	stats_new(&s, channels, 1, 4);
	add_rows(&s, x, channels, 0, 12345);
	add_rows(&s, x, channels, 12345, n - 12345);
	struct at_moments pooled;
	at_stats_pool(&s, &pooled);
	struct reference r = reference_moments(x, n * channels, 1);
	check_against(&pooled, &r, 1e-12, 0, 1e-11, "pooled over channels");
	at_stats_free(&s);
	free(x);
}

/* Values 1 2 3 4 10: mean 4, m2 50, m3 180, m4 1394, worked by hand. */
static void test_moment_functions(void)
{
	static const float values[] = { 1, 2, 3, 4, 10 };
	struct at_stats s;
	stats_new(&s, 1, 1, 2);
	struct at_tensor t = tensor_tc(values, AT_F32, 5, 1);
	must_add(&s, &t, 0);
	struct at_moments m;
	at_stats_channel(&s, 0, &m);
	TAP_OK(m.mean == 4 && m.m2 == 50 && m.m3 == 180 && m.m4 == 1394,
	       "1 2 3 4 10: mean %g m2 %g m3 %g m4 %g", m.mean, m.m2, m.m3, m.m4);
	TAP_CLOSE(at_moments_variance(&m), 12.5, 1e-15, 0, "variance");
	TAP_CLOSE(at_moments_std(&m), sqrt(12.5), 1e-15, 0, "std");
	TAP_CLOSE(at_moments_skewness(&m), sqrt(5.0) * 180 / pow(50, 1.5), 1e-15, 0, "skewness");
	TAP_CLOSE(at_moments_kurtosis(&m), 5.0 * 1394 / 2500 - 3, 1e-15, 0, "kurtosis");
	TAP_CLOSE(at_moments_absmean(&m), 4, 1e-15, 0, "absmean");
	struct at_moments twice = m;
	at_moments_merge(&twice, &twice);
	TAP_OK(twice.count == 10 && twice.mean == 4 && twice.m2 == 100 && twice.m3 == 360 &&
	       twice.m4 == 2788, "merging moments with themselves doubles the sums");
	static const float constant[] = { 3, 3, 3 };
	struct at_tensor tc = tensor_tc(constant, AT_F32, 3, 1);
	at_stats_reset(&s);
	TAP_OK(s.count[0] == 0 && isnan(s.min[0]) && s.n_extremes == 0 && s.hist[2 + 24 * 4] == 0,
	       "reset empties the accumulators");
	must_add(&s, &tc, 0);
	at_stats_channel(&s, 0, &m);
	TAP_OK(m.m2 == 0 && isnan(at_moments_skewness(&m)) && isnan(at_moments_kurtosis(&m)) &&
	       at_moments_variance(&m) == 0, "constant data: m2 0, skewness and kurtosis NaN");
	m.count = 1;
	TAP_OK(isnan(at_moments_variance(&m)) && isnan(at_moments_skewness(&m)),
	       "one value: variance NaN");
	at_stats_channel(&s, 7, &m);
	TAP_OK(m.count == 0 && isnan(m.min) && isnan(at_moments_absmean(&m)),
	       "at_stats_channel out of range gives empty moments");
	at_stats_free(&s);
	at_stats_free(&s); /* freeing twice is safe: free zeroes */
}

static void test_range_errors(void)
{
	static float rows[16 * 4];
	struct at_error err = { 0, "" };
	struct at_stats s;
	stats_new(&s, 4, 1, 3);
	s.count[2] = UINT32_MAX - 5;
	struct at_tensor ten = tensor_tc(rows, AT_F32, 10, 4), five = tensor_tc(rows, AT_F32, 5, 4);
	int rc = at_stats_add(&s, &ten, 0, &err);
	TAP_OK(rc == AT_ERANGE && err.code == AT_ERANGE && err.message[0],
	       "AT_ERANGE when a histogram could overflow: %s", err.message);
	int untouched = s.count[0] == 0 && s.count[2] == UINT32_MAX - 5 && s.n_extremes == 0;
	for (int b = 0; b < 4 * AT_HIST_BINS; b++)
		untouched &= s.hist[b] == 0;
	TAP_OK(untouched, "nothing changed by the refused add");
	TAP_OK(at_stats_add(&s, &five, 0, &err) == AT_OK, "exactly 2^32-1 values fit");
	TAP_OK(at_stats_add(&s, &five, 0, &err) == AT_ERANGE, "one more add is refused");
	struct at_stats other;
	stats_new(&other, 4, 1, 3);
	must_add(&other, &five, 0);
	TAP_OK(at_stats_merge(&s, &other, &err) == AT_ERANGE && s.count[0] == 5,
	       "merge that could overflow a histogram: AT_ERANGE, dst unchanged");
	at_stats_free(&other);
	at_stats_free(&s);
	stats_new(&s, 4, 0, 3);
	s.count[2] = UINT32_MAX;
	TAP_OK(at_stats_add(&s, &ten, 0, &err) == AT_OK && s.count[2] == UINT32_MAX + 10ull,
	       "without histograms counts go past 2^32");
	at_stats_free(&s);
}

static void test_invalid(void)
{
	static float data[8];
	struct at_error err = { 0, "" };
	struct at_stats s, none, other;
	TAP_OK(at_stats_init(&s, 0, 1, 4, &err) == AT_EINVAL && s.count == NULL,
	       "init with 0 channels: %s", err.message);
	TAP_OK(at_stats_init(&s, 4, 1, -1, &err) == AT_EINVAL, "init with K < 0: %s", err.message);
	TAP_OK(at_stats_init(&s, INT64_MAX / 4, 1, 4, &err) == AT_ENOMEM && s.count == NULL &&
	       s.channels == 0, "init with too many channels: %s", err.message);
	memset(&none, 0, sizeof none);
	stats_new(&s, 4, 1, 4);
	struct at_tensor good = tensor_tc(data, AT_F32, 2, 4), bad = good;
	TAP_OK(at_stats_add(&s, NULL, 0, &err) == AT_EINVAL, "NULL tensor: %s", err.message);
	TAP_OK(at_stats_add(&none, &good, 0, &err) == AT_EINVAL, "uninitialised stats: %s",
	       err.message);
	bad.dtype = (enum at_dtype)7;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_EINVAL, "bad dtype: %s", err.message);
	bad = good;
	bad.channels = 3;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_EINVAL, "channel mismatch: %s", err.message);
	bad = good;
	bad.data = NULL;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_EINVAL, "NULL data: %s", err.message);
	bad = good;
	bad.rows = -1;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_EINVAL, "negative rows: %s", err.message);
	bad = good;
	bad.batches = INT64_MAX / 2;
	bad.rows = 4;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_EINVAL, "rows overflow: %s", err.message);
	bad = good;
	bad.rows = 0;
	TAP_OK(at_stats_add(&s, &bad, 0, &err) == AT_OK && s.count[0] == 0, "zero rows: no-op");
	stats_new(&other, 5, 1, 4);
	TAP_OK(at_stats_merge(&s, &other, &err) == AT_EINVAL, "merge, channels differ: %s",
	       err.message);
	at_stats_free(&other);
	stats_new(&other, 4, 0, 4);
	TAP_OK(at_stats_merge(&s, &other, &err) == AT_EINVAL, "merge, histograms differ: %s",
	       err.message);
	TAP_OK(at_stats_count_at_least(&other, 0, 1.0) == 0, "count_at_least without histogram: 0");
	at_stats_free(&other);
	at_stats_free(&s);
}

int main(void)
{
	test_hard_data();
	test_ten_million();
	test_heavy_tails();
	test_partitions();
	test_thread_counts();
	test_nonfinite();
	test_half_types();
	test_layouts();
	test_hist_edges();
	test_extremes();
	test_pool();
	test_moment_functions();
	test_range_errors();
	test_invalid();
	return tap_done();
}
