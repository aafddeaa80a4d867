/* test-criteria.c: every outlier criterion of analysis/criteria.c on hand-built
 * statistics whose answers are worked out in the comments, plus parameter
 * validation, the histogram median, element outliers and the layer share. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"
#include "analysis.h"
#include "tap.h"

/* ---------------------------------------------------------------- helpers */

static void stats_new(struct at_stats *s, int64_t channels, int hist, int32_t k)
{
	struct at_error err = { 0, "" };
	if (at_stats_init(s, channels, hist, k, &err) != AT_OK) {
		TAP_OK(0, "at_stats_init: %s", err.message);
		exit(tap_done());
	}
}

/* Fold rows [rows][channels] of float32 (token_base 0). */
static void stats_add_rows(struct at_stats *s, const float *x, int64_t rows)
{
	struct at_error err = { 0, "" };
	struct at_tensor t = { x, AT_F32, 1, rows, s->channels, rows * s->channels, s->channels, 1 };
	if (at_stats_add(s, &t, 0, &err) != AT_OK)
		TAP_OK(0, "at_stats_add: %s", err.message);
}

/* A channel that saw `count` values with the given moments (no histogram). */
static void set_channel(struct at_stats *s, int64_t c, uint64_t count, double mean, double m2,
                        double absmax, double abssum)
{
	s->count[c] = count;
	s->mean[c] = mean;
	s->m2[c] = m2;
	s->m3[c] = 0;
	s->m4[c] = 0;
	s->min[c] = -absmax;
	s->max[c] = absmax;
	s->absmax[c] = absmax;
	s->abssum[c] = abssum;
}

/* Channels with the given means, 100 values each of variance 1. */
static void stats_of_means(struct at_stats *s, const double *means, int64_t n)
{
	stats_new(s, n, 0, 0);
	for (int64_t c = 0; c < n; c++)
		set_channel(s, c, 100, means[c], 99.0, fabs(means[c]) + 3, 100 * fabs(means[c]));
}

static int run(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	struct at_error err = { 0, "" };
	int rc = an_channel_outliers(s, p, o, &err);
	if (rc)
		printf("# an_channel_outliers: %s\n", err.message);
	return rc;
}

/* The flagged channels as a bit set (channels < 64). */
static uint64_t flagged_set(const struct an_outliers *o)
{
	uint64_t set = 0;
	for (int64_t i = 0; i < o->n; i++)
		set |= 1ull << o->flags[i].channel;
	return set;
}

static int expect_einval(const struct at_stats *s, const struct an_params *p, const char *needle)
{
	struct at_error err = { 0, "" };
	struct an_outliers o;
	int rc = an_channel_outliers(s, p, &o, &err);
	int ok = rc == AT_EINVAL && err.code == AT_EINVAL && strstr(err.message, needle) &&
	         !strchr(err.message, '\n') && o.n == 0 && o.flags == NULL;
	if (!ok)
		printf("# rc %d message '%s', wanted '%s'\n", rc, err.message, needle);
	an_outliers_free(&o);
	return ok;
}

/* ---------------------------------------------------------------- names, params */

static void test_names(void)
{
	static const char *const methods[] = { "grand-mean", "layer-sigma", "tensor-sigma",
		                               "ratio",      "massive",     "mad",
		                               "kurtosis",   "frequency" };
	int ok = 1;
	for (int m = 0; m < AN_METHOD_COUNT; m++) {
		enum an_method parsed = AN_METHOD_COUNT;
		ok &= strcmp(an_method_name((enum an_method)m), methods[m]) == 0;
		ok &= an_method_parse(methods[m], &parsed) == 0 && parsed == (enum an_method)m;
	}
	TAP_OK(ok, "method names round-trip");
	enum an_method m;
	TAP_OK(an_method_parse("Grand-Mean", &m) != 0 && an_method_parse("", &m) != 0 &&
	               an_method_parse(NULL, &m) != 0,
	       "unknown method names are refused");
	TAP_OK(strcmp(an_method_name(AN_METHOD_COUNT), "unknown") == 0, "out-of-range method name");
	static const char *const stats[] = { "mean", "absmean", "absmax", "std", "rms" };
	ok = 1;
	for (int st = 0; st < AN_STAT_COUNT; st++) {
		enum an_stat parsed = AN_STAT_COUNT;
		ok &= strcmp(an_stat_name((enum an_stat)st), stats[st]) == 0;
		ok &= an_stat_parse(stats[st], &parsed) == 0 && parsed == (enum an_stat)st;
	}
	enum an_stat st;
	TAP_OK(ok && an_stat_parse("median", &st) != 0, "statistic names round-trip");
	TAP_OK(an_method_is_elementwise(AN_RATIO) && an_method_is_elementwise(AN_MASSIVE) &&
	               !an_method_is_elementwise(AN_GRAND_MEAN) &&
	               !an_method_is_elementwise(AN_FREQUENCY),
	       "ratio and massive are the element-wise methods");
}

static void test_defaults(void)
{
	struct an_params p;
	an_params_init(&p, AN_GRAND_MEAN);
	TAP_OK(p.method == AN_GRAND_MEAN && p.stat == AN_STAT_MEAN && p.k == 6,
	       "grand-mean: mean, k 6");
	an_params_init(&p, AN_LAYER_SIGMA);
	TAP_OK(p.stat == AN_STAT_ABSMAX && p.k == 6, "layer-sigma: absmax, k 6");
	an_params_init(&p, AN_MAD);
	TAP_OK(p.stat == AN_STAT_MEAN && p.k == 6, "mad: mean, k 6");
	an_params_init(&p, AN_KURTOSIS);
	TAP_OK(p.k == 10, "kurtosis: k 10");
	an_params_init(&p, AN_TENSOR_SIGMA);
	TAP_OK(p.m == 4 && p.beta == 1.0 / 3 && !p.two_sided, "tensor-sigma: m 4, beta 1/3");
	an_params_init(&p, AN_RATIO);
	TAP_OK(p.tau == 1000, "ratio: tau 1000");
	an_params_init(&p, AN_MASSIVE);
	TAP_OK(p.massive_abs == 100 && p.massive_ratio == 1000, "massive: 100 and 1000");
	an_params_init(&p, AN_FREQUENCY);
	TAP_OK(p.freq_t == 6 && p.freq_share == 0.06 && p.freq_layers == 0.25,
	       "frequency: t 6, 6%% of tokens, 25%% of layers");
}

static void test_bad_params(void)
{
	static const double means[3] = { 0, 1, 2 };
	struct at_stats s;
	stats_of_means(&s, means, 3);
	struct an_params p;
	an_params_init(&p, AN_GRAND_MEAN);
	p.k = 0;
	TAP_OK(expect_einval(&s, &p, "grand-mean: k must be a positive number, not 0"), "k = 0");
	p.k = -1;
	TAP_OK(expect_einval(&s, &p, "k must be a positive number, not -1"), "k = -1");
	p.k = NAN;
	TAP_OK(expect_einval(&s, &p, "k must be"), "k = NaN");
	p.k = INFINITY;
	TAP_OK(expect_einval(&s, &p, "k must be"), "k = inf");
	an_params_init(&p, AN_LAYER_SIGMA);
	p.stat = AN_STAT_COUNT;
	TAP_OK(expect_einval(&s, &p, "layer-sigma: unknown statistic"), "bad statistic");
	an_params_init(&p, AN_MAD);
	p.k = -2;
	TAP_OK(expect_einval(&s, &p, "mad: k must be"), "mad k = -2");
	an_params_init(&p, AN_KURTOSIS);
	p.k = NAN;
	TAP_OK(expect_einval(&s, &p, "kurtosis: k must be a finite number"), "kurtosis k = NaN");
	p.k = 0; /* a legitimate threshold: tails heavier than a normal's */
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK, "kurtosis accepts k = 0");
	an_outliers_free(&o);
	an_params_init(&p, AN_TENSOR_SIGMA);
	p.beta = 0;
	TAP_OK(expect_einval(&s, &p, "tensor-sigma: beta must be a positive number"), "beta = 0");
	p.beta = INFINITY;
	TAP_OK(run(&s, &p, &o) == AT_OK, "beta = inf accepted");
	an_outliers_free(&o);
	p.m = 0;
	TAP_OK(expect_einval(&s, &p, "tensor-sigma: m must be"), "m = 0");
	an_params_init(&p, AN_RATIO);
	p.tau = 0;
	TAP_OK(expect_einval(&s, &p, "ratio: tau must be a positive number, not 0"), "tau = 0");
	an_params_init(&p, AN_MASSIVE);
	p.massive_abs = -1;
	TAP_OK(expect_einval(&s, &p, "massive: the absolute threshold must be"), "abs = -1");
	an_params_init(&p, AN_MASSIVE);
	p.massive_ratio = 0;
	TAP_OK(expect_einval(&s, &p, "massive: the ratio to the median must be"), "ratio = 0");
	an_params_init(&p, AN_FREQUENCY);
	p.freq_share = 0;
	TAP_OK(expect_einval(&s, &p, "frequency: the share of values must be in (0, 1], not 0"),
	       "share = 0");
	p.freq_share = 1.5;
	TAP_OK(expect_einval(&s, &p, "in (0, 1], not 1.5"), "share = 1.5");
	an_params_init(&p, AN_FREQUENCY);
	p.freq_t = 0;
	TAP_OK(expect_einval(&s, &p, "frequency: t must be"), "t = 0");
	an_params_init(&p, AN_FREQUENCY);
	p.freq_layers = 1.25;
	TAP_OK(expect_einval(&s, &p, "the share of layers must be in [0, 1]"), "layers = 1.25");
	an_params_init(&p, AN_GRAND_MEAN);
	p.method = AN_METHOD_COUNT;
	TAP_OK(expect_einval(&s, &p, "unknown outlier method"), "unknown method");
	an_params_init(&p, AN_GRAND_MEAN);
	TAP_OK(expect_einval(NULL, &p, "no statistics"), "NULL statistics");
	TAP_OK(expect_einval(&s, NULL, "no parameters"), "NULL parameters");
	at_stats_free(&s);
}

/* ---------------------------------------------------------------- channel stats */

static void test_channel_stat(void)
{
	/* channel 0 sees 1, -3, 2: mean 0, mean|x| 2, absmax 3, std sqrt(14/2), rms sqrt(14/3);
	 * channel 1 sees 5 once (std NaN); channel 2 nothing */
	static const float rows[3][3] = { { 1, 5, NAN }, { -3, NAN, NAN }, { 2, NAN, NAN } };
	struct at_stats s;
	stats_new(&s, 3, 1, 4);
	stats_add_rows(&s, &rows[0][0], 3);
	TAP_CLOSE(an_channel_stat(&s, 0, AN_STAT_MEAN), 0, 0, 1e-15, "mean");
	TAP_CLOSE(an_channel_stat(&s, 0, AN_STAT_ABSMEAN), 2, 1e-15, 0, "absmean");
	TAP_CLOSE(an_channel_stat(&s, 0, AN_STAT_ABSMAX), 3, 0, 0, "absmax");
	TAP_CLOSE(an_channel_stat(&s, 0, AN_STAT_STD), sqrt(7.0), 1e-15, 0, "std (n-1)");
	TAP_CLOSE(an_channel_stat(&s, 0, AN_STAT_RMS), sqrt(14.0 / 3), 1e-15, 0, "rms");
	TAP_CLOSE(an_channel_stat(&s, 1, AN_STAT_RMS), 5, 1e-15, 0, "rms of one value");
	TAP_OK(isnan(an_channel_stat(&s, 1, AN_STAT_STD)), "std of one value is NaN");
	int all_nan = 1;
	for (int st = 0; st < AN_STAT_COUNT; st++)
		all_nan &= isnan(an_channel_stat(&s, 2, (enum an_stat)st));
	TAP_OK(all_nan, "a channel without values has NaN statistics");
	TAP_OK(isnan(an_channel_stat(&s, 3, AN_STAT_MEAN)) &&
	               isnan(an_channel_stat(&s, -1, AN_STAT_MEAN)) &&
	               isnan(an_channel_stat(&s, 0, AN_STAT_COUNT)),
	       "out-of-range channel or statistic is NaN");
	at_stats_free(&s);
}

/* ---------------------------------------------------------------- sigma criteria */

static void test_grand_mean(void)
{
	/* means 0 x 9 and 10: grand mean 1, deviations -1 x 9 and 9, sum of squares 90,
	 * sigma = sqrt(90 / 9) = sqrt(10) = 3.162; 9 > 2 sigma, 9 < 3 sigma.  Channel 10
	 * saw nothing (mean 0 as the accumulators leave it): it must not count. */
	static const double means[11] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0 };
	struct at_stats s;
	stats_of_means(&s, means, 11);
	set_channel(&s, 10, 0, 0, 0, NAN, 0);
	struct an_params p;
	an_params_init(&p, AN_GRAND_MEAN);
	p.k = 2;
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 1 && o.flags[0].channel == 9,
	       "grand-mean k=2 flags channel 9 only");
	TAP_CLOSE(o.center, 1, 1e-15, 0, "grand-mean center");
	TAP_CLOSE(o.spread, sqrt(10.0), 1e-15, 0, "grand-mean spread (n-1, empty channel left out)");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, 9 / sqrt(10.0), 1e-15, 0, "grand-mean score");
	TAP_OK(o.n && o.flags[0].value == 10 && o.flags[0].threshold == 2 && o.channels == 11,
	       "grand-mean value, threshold, channels");
	an_outliers_free(&o);
	TAP_OK(o.flags == NULL && o.n == 0, "an_outliers_free empties");
	an_outliers_free(&o);
	p.k = 3;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0 && o.flags == NULL, "grand-mean k=3 flags none");
	an_outliers_free(&o);
	/* a negative outlier counts too: |.| */
	s.mean[9] = -10;
	p.k = 2;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 9, "grand-mean is two-sided");
	an_outliers_free(&o);
	/* statistic absmax: 3 x 9 and 13 (|mean| + 3) behaves the same */
	p.stat = AN_STAT_ABSMAX;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 9, "grand-mean on absmax");
	an_outliers_free(&o);
	at_stats_free(&s);

	/* all channel means equal: sigma 0, nothing flagged */
	static const double flat[4] = { 2, 2, 2, 2 };
	stats_of_means(&s, flat, 4);
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0 && o.spread == 0, "sigma 0 flags nothing");
	an_outliers_free(&o);
	at_stats_free(&s);
	/* one channel with values: sigma undefined, nothing flagged */
	stats_of_means(&s, flat, 2);
	set_channel(&s, 1, 0, 0, 0, NAN, 0);
	p.stat = AN_STAT_MEAN;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0 && isnan(o.spread), "one channel: nothing");
	an_outliers_free(&o);
	at_stats_free(&s);
}

static void test_layer_sigma(void)
{
	/* absmax 1 x 9 and 10: mean 1.9, sum of squares 9 * 0.81 + 65.61 = 72.9, std
	 * sqrt(8.1) = 2.846; 10 > 1.9 + 2 * 2.846 = 7.59, score 8.1 / sqrt(8.1) = sqrt(8.1) */
	struct at_stats s;
	stats_new(&s, 10, 0, 0);
	for (int c = 0; c < 10; c++)
		set_channel(&s, c, 10, c == 3 ? -9.0 : 0.0, 9, c == 7 ? 10 : 1, 5);
	struct an_params p;
	an_params_init(&p, AN_LAYER_SIGMA);
	p.k = 2;
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 7, "layer-sigma flags channel 7");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, sqrt(8.1), 1e-14, 0, "layer-sigma score");
	TAP_CLOSE(o.center, 1.9, 1e-15, 0, "layer-sigma center");
	TAP_CLOSE(o.spread, sqrt(8.1), 1e-15, 0, "layer-sigma spread");
	an_outliers_free(&o);
	p.k = 3; /* 1.9 + 3 * 2.846 = 10.44 > 10 */
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0, "layer-sigma k=3 flags none");
	an_outliers_free(&o);
	/* one-sided: the mean of channel 3 (-9) is far below, not above */
	p.k = 2;
	p.stat = AN_STAT_MEAN;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0, "layer-sigma is one-sided");
	an_outliers_free(&o);
	an_params_init(&p, AN_GRAND_MEAN);
	p.k = 2;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 3,
	       "while grand-mean flags the low channel");
	an_outliers_free(&o);
	at_stats_free(&s);
}

/* Two-pass long double references over raw rows [rows][channels]. */
static void raw_moments(const float *x, int rows, int channels, int c, long double *mean,
                        long double *std)
{
	long double sum = 0, sq = 0;
	int n = 0;
	for (int r = 0; r < rows; r++)
		for (int j = 0; j < channels; j++)
			if (c < 0 || j == c) {
				sum += x[r * channels + j];
				n++;
			}
	*mean = sum / n;
	for (int r = 0; r < rows; r++)
		for (int j = 0; j < channels; j++)
			if (c < 0 || j == c)
				sq += (x[r * channels + j] - *mean) * (x[r * channels + j] - *mean);
	*std = sqrtl(sq / (n - 1));
}

static void test_tensor_sigma(void)
{
	/* 8 channels x 64 tokens: channels 0-5 alternate +-1 around 0 (std ~1), channel 6
	 * is 5 +- 0.1 (high, tight), channel 7 is -5 +- 0.1 (low, tight) */
	enum { ROWS = 64, CH = 8 };
	static float x[ROWS * CH];
	for (int r = 0; r < ROWS; r++)
		for (int c = 0; c < CH; c++) {
			double sign = ((r + c) % 2) ? 1 : -1;
			x[r * CH + c] = (float)(c < 6 ? sign * (1 + 0.1 * c) : (c == 6 ? 5 : -5) + 0.1 * sign);
		}
	struct at_stats s;
	stats_new(&s, CH, 1, 8);
	stats_add_rows(&s, x, ROWS);
	long double mu, sigma, mean6, std6;
	raw_moments(x, ROWS, CH, -1, &mu, &sigma);
	raw_moments(x, ROWS, CH, 6, &mean6, &std6);
	struct an_params p;
	an_params_init(&p, AN_TENSOR_SIGMA);
	p.m = 1; /* sigma_A is about 2.6 here: (5 - 0) > 1 sigma_A, 5 < 4 sigma_A */
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 6,
	       "tensor-sigma flags the high tight channel (one-sided)");
	TAP_CLOSE(o.center, (double)mu, 1e-14, 1e-14, "tensor-sigma center = mean of all elements");
	TAP_CLOSE(o.spread, (double)sigma, 1e-14, 0, "tensor-sigma spread = std of all elements");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, (double)((mean6 - mu) / sigma), 1e-13, 0,
	          "tensor-sigma score");
	TAP_CLOSE(o.n ? o.flags[0].value : NAN, (double)mean6, 1e-14, 0, "tensor-sigma value");
	TAP_OK(o.n && o.flags[0].threshold == 1, "tensor-sigma threshold m");
	an_outliers_free(&o);
	p.two_sided = 1;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == (1u << 6 | 1u << 7),
	       "two-sided also flags the low tight channel");
	an_outliers_free(&o);
	p.beta = 0.1; /* std of channels 6, 7 is 0.1008 (n-1): above beta */
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0, "std >= beta: not flagged");
	an_outliers_free(&o);
	p.m = 4;
	p.beta = INFINITY;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0, "m = 4: 5 < 4 sigma_A, not flagged");
	an_outliers_free(&o);
	at_stats_free(&s);
}

static void test_mad(void)
{
	/* 1 2 3 4 100: median 3, |deviations| 2 1 0 1 97, MAD 1: 97 > 6 * 1.4826 */
	static const double means[6] = { 1, 2, 3, 4, 100, 0 };
	struct at_stats s;
	stats_of_means(&s, means, 6);
	set_channel(&s, 5, 0, 0, 0, NAN, 0);
	struct an_params p;
	an_params_init(&p, AN_MAD);
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 4, "mad flags 100");
	TAP_CLOSE(o.center, 3, 0, 0, "mad center = median");
	TAP_CLOSE(o.spread, 1.4826, 1e-15, 0, "mad spread = 1.4826 MAD");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, 97 / 1.4826, 1e-15, 0, "mad score");
	an_outliers_free(&o);
	/* even count: 1 2 3 4 -> median 2.5, |dev| 1.5 .5 .5 1.5 -> MAD 1 */
	s.count[4] = 0;
	p.k = 1;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.center == 2.5 && o.spread == 1.4826 &&
	               flagged_set(&o) == (1u << 0 | 1u << 3),
	       "mad with an even count: median 2.5, 1.5 > 1.4826");
	an_outliers_free(&o);
	at_stats_free(&s);
	/* MAD 0: more than half the channels equal, nothing flagged */
	static const double ties[5] = { 5, 5, 5, 5, 100 };
	stats_of_means(&s, ties, 5);
	p.k = 6;
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0 && o.spread == 0, "MAD 0 flags nothing");
	an_outliers_free(&o);
	at_stats_free(&s);
}

static void test_kurtosis(void)
{
	/* n M4 / M2^2 - 3 with n 10, M2 10: M4 200 -> 17, M4 100 -> 7 */
	struct at_stats s;
	stats_new(&s, 4, 0, 0);
	for (int c = 0; c < 4; c++)
		set_channel(&s, c, 10, 0, 10, 3, 5);
	s.m4[0] = 200;
	s.m4[1] = 100;
	s.m4[2] = 130.0001; /* 10.000001 */
	s.count[3] = 1;     /* undefined */
	s.m4[3] = 1e9;
	struct an_params p;
	an_params_init(&p, AN_KURTOSIS);
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == (1u << 0 | 1u << 2),
	       "kurtosis > 10 flagged, a single value never");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, 17, 1e-15, 0, "kurtosis score");
	TAP_OK(o.n && o.flags[0].value == o.flags[0].score && o.flags[0].threshold == 10,
	       "kurtosis value and threshold");
	an_outliers_free(&o);
	at_stats_free(&s);
}

/* ---------------------------------------------------------------- histogram criteria */

static void test_frequency(void)
{
	/* 100 values per channel; t = 6 lies in the bin [2^(5/2), 2^(11/4)) = [5.66, 6.73):
	 * channel 0: 10 values at 8 (above the bin) -> share 0.10
	 * channel 1: 10 values at 6 (inside the bin) -> counted only when t is its edge
	 * channel 2: 6 values at 100 -> share 0.06 exactly, >= 0.06
	 * channel 3: 5 values at 100 -> 0.05 */
	static const int big[4] = { 10, 10, 6, 5 };
	static const double at[4] = { 8, 6, 100, 100 };
	struct at_stats s;
	stats_new(&s, 5, 1, 0);
	for (int c = 0; c < 4; c++) {
		set_channel(&s, c, 100, 0, 99, at[c], 100);
		s.hist[c * AT_HIST_BINS + at_hist_bin(at[c])] = (uint32_t)big[c];
		s.hist[c * AT_HIST_BINS + at_hist_bin(1.0)] = (uint32_t)(100 - big[c]);
	}
	set_channel(&s, 4, 0, 0, 0, NAN, 0);
	struct an_params p;
	an_params_init(&p, AN_FREQUENCY);
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == (1u << 0 | 1u << 2),
	       "frequency t=6 counts from the next edge up (6.73): channels 0 and 2");
	TAP_CLOSE(o.center, pow(2, 2.75), 1e-15, 0, "frequency center: the |x| counted from");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, 0.10, 1e-15, 0, "frequency score = share");
	TAP_OK(o.n == 2 && o.flags[1].score == 0.06 && o.flags[1].threshold == 0.06 &&
	               o.flags[1].value == 0.06,
	       "share equal to the threshold is flagged (>=)");
	an_outliers_free(&o);
	p.freq_t = at_hist_lower_edge(at_hist_bin(6.0)); /* 2^(5/2), an edge: exact */
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == (1u << 0 | 1u << 1 | 1u << 2),
	       "t on an edge (5.66) counts the values at 6");
	an_outliers_free(&o);
	p.freq_t = 1e30; /* above every edge: nothing counted */
	TAP_OK(run(&s, &p, &o) == AT_OK && o.n == 0 && isinf(o.center), "t above every edge");
	an_outliers_free(&o);
	free(s.hist);
	s.hist = NULL;
	struct at_error err = { 0, "" };
	TAP_OK(an_channel_outliers(&s, &p, &o, &err) == AT_ENOTFOUND &&
	               strstr(err.message, "frequency: trace has no histogram") && o.flags == NULL,
	       "frequency without histogram: AT_ENOTFOUND (%s)", err.message);
	at_stats_free(&s);
}

static void test_median(void)
{
	struct at_stats s;
	stats_new(&s, 2, 1, 0);
	TAP_OK(isnan(an_hist_median_abs(&s)), "no values: NaN");
	/* 3 values at 1 in channel 0, 2 values at 100 in channel 1: median in bin of 1 */
	s.hist[at_hist_bin(1.0)] = 3;
	s.hist[AT_HIST_BINS + at_hist_bin(100.0)] = 2;
	TAP_CLOSE(an_hist_median_abs(&s), pow(2, 0.125), 1e-15, 0, "median: geometric middle of [1, 2^(1/4))");
	/* 4 values: 2 and 2: rank ceil(4/2) = 2, the lower bin */
	s.hist[at_hist_bin(1.0)] = 2;
	TAP_CLOSE(an_hist_median_abs(&s), pow(2, 0.125), 1e-15, 0, "even count: lower median");
	s.hist[at_hist_bin(1.0)] = 1;
	int b = at_hist_bin(100.0);
	TAP_CLOSE(an_hist_median_abs(&s), sqrt(at_hist_lower_edge(b) * at_hist_lower_edge(b + 1)),
	          1e-15, 0, "median in the bin of 100");
	memset(s.hist, 0, 2 * AT_HIST_BINS * sizeof *s.hist);
	s.hist[0] = 5;
	s.hist[1] = 4;
	TAP_OK(an_hist_median_abs(&s) == 0, "mostly zeros: median 0");
	s.hist[0] = 1;
	TAP_OK(an_hist_median_abs(&s) == ldexp(1, AT_HIST_MIN_EXP - 1), "underflow bin: 2^-25");
	s.hist[1] = 0;
	s.hist[AT_HIST_BINS - 1] = 4;
	TAP_OK(an_hist_median_abs(&s) == ldexp(1, AT_HIST_MAX_EXP), "overflow bin: its lower edge");
	free(s.hist);
	s.hist = NULL;
	TAP_OK(isnan(an_hist_median_abs(&s)) && isnan(an_hist_median_abs(NULL)), "no histogram: NaN");
	at_stats_free(&s);
}

static void test_ratio_massive(void)
{
	/* ratio: 4 channels x 100 values, mean |x| 1 pooled; tau 100 -> absmax > 100 */
	struct at_stats s;
	stats_new(&s, 5, 1, 0);
	static const double absmax[4] = { 3, 99, 100, 101 };
	for (int c = 0; c < 4; c++) {
		set_channel(&s, c, 100, 0, 99, absmax[c], 100);
		s.hist[c * AT_HIST_BINS + at_hist_bin(1.0)] = 99;
		s.hist[c * AT_HIST_BINS + at_hist_bin(absmax[c])] += 1;
	}
	set_channel(&s, 4, 0, 0, 0, NAN, 0);
	struct an_params p;
	an_params_init(&p, AN_RATIO);
	p.tau = 100;
	struct an_outliers o;
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 3,
	       "ratio: absmax > tau mean|x| (strict)");
	TAP_OK(o.center == 1 && o.n && o.flags[0].score == 101 && o.flags[0].value == 101 &&
	               o.flags[0].threshold == 100,
	       "ratio: reference, score, value, threshold");
	an_outliers_free(&o);
	/* massive: median of 400 values is in the bin of 1 -> 2^(1/8); 1000 x 2^(1/8) = 1090.5 */
	s.absmax[1] = 150;  /* > 100 but < 1090.5 */
	s.absmax[2] = 2000; /* both */
	s.absmax[3] = 99;   /* neither */
	an_params_init(&p, AN_MASSIVE);
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == 1u << 2, "massive: both conditions");
	TAP_CLOSE(o.n ? o.flags[0].score : NAN, 2000 / pow(2, 0.125), 1e-15, 0, "massive score");
	TAP_CLOSE(o.center, pow(2, 0.125), 1e-15, 0, "massive center = median |x|");
	an_outliers_free(&o);
	p.massive_ratio = 100; /* 109: channel 1 (150) now passes both */
	TAP_OK(run(&s, &p, &o) == AT_OK && flagged_set(&o) == (1u << 1 | 1u << 2), "massive ratio 100");
	an_outliers_free(&o);
	free(s.hist);
	s.hist = NULL;
	struct at_error err = { 0, "" };
	TAP_OK(an_channel_outliers(&s, &p, &o, &err) == AT_ENOTFOUND, "massive needs a histogram");
	an_params_init(&p, AN_RATIO);
	TAP_OK(run(&s, &p, &o) == AT_OK, "ratio does not");
	an_outliers_free(&o);
	at_stats_free(&s);
}

/* ---------------------------------------------------------------- elements */

static int element_is(const struct an_elements *e, int64_t i, int64_t token, int channel,
                      double value)
{
	return i < e->n && e->items[i].token == token && e->items[i].channel == channel &&
	       e->items[i].value == value;
}

static void test_elements(void)
{
	/* 4 channels x 16 tokens of |x| = 1, plus big values; K = 4 extremes */
	enum { ROWS = 16, CH = 4 };
	static float x[ROWS * CH];
	for (int i = 0; i < ROWS * CH; i++)
		x[i] = (i % 3) ? 1.0f : -1.0f;
	x[2 * CH + 1] = 500;  /* token 2, channel 1 */
	x[5 * CH + 3] = -500; /* token 5, channel 3: tie in |x|, later token */
	x[7 * CH + 0] = 300;
	x[9 * CH + 2] = 60;
	x[11 * CH + 2] = 40;
	struct at_stats s;
	stats_new(&s, CH, 1, 4);
	stats_add_rows(&s, x, ROWS);
	/* extremes: 500 (2,1), -500 (5,3), 300, 60 */
	/* 59 ones and 500 + 500 + 300 + 60 + 40 */
	double reference = (ROWS * CH - 5 + 1400.0) / (ROWS * CH);
	struct an_params p;
	an_params_init(&p, AN_RATIO);
	p.tau = 50 / reference; /* threshold |x| > 50 */
	struct an_elements e;
	struct at_error err = { 0, "" };
	int rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 4 && element_is(&e, 0, 2, 1, 500) &&
	               element_is(&e, 1, 5, 3, -500) && element_is(&e, 2, 7, 0, 300) &&
	               element_is(&e, 3, 9, 2, 60),
	       "ratio elements from the extremes, ranked by |x| then token");
	TAP_CLOSE(e.reference, reference, 1e-15, 0, "element reference = mean |x|");
	TAP_CLOSE(e.threshold, 50, 1e-14, 0, "element threshold = tau mean|x|");
	TAP_CLOSE(e.n ? e.items[0].ratio : NAN, 500 / reference, 1e-15, 0, "element ratio");
	/* the K-th extreme (60) is above 50, so more could exist; but 50 lies in the bin
	 * [45.3, 53.8) and the channels whose absmax exceeds 50 hold 4 values >= 45.3
	 * (the 40 is below): at most 4 elements above 50, all listed */
	TAP_OK(e.complete == 1, "complete: histogram bound equals the listed count");
	an_elements_free(&e);
	/* threshold 35: the 40 is not in the extremes, nor in any sample: incomplete */
	p.tau = 35 / reference;
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 4 && e.complete == 0, "K-th extreme above threshold: incomplete");
	an_elements_free(&e);
	/* with the sampled rows 9 and 11 (row 9 duplicates an extreme): complete */
	float rows[2 * CH];
	memcpy(rows, x + 9 * CH, CH * sizeof *rows);
	memcpy(rows + CH, x + 11 * CH, CH * sizeof *rows);
	rows[0] = NAN; /* never flagged */
	rows[CH] = INFINITY;
	int64_t tokens[2] = { 9, 11 };
	rc = an_element_outliers(&s, rows, tokens, 2, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 5 && element_is(&e, 3, 9, 2, 60) &&
	               element_is(&e, 4, 11, 2, 40) && e.complete == 1,
	       "samples add the missed element, duplicates dropped, non-finite skipped");
	an_elements_free(&e);
	/* threshold 100: the 4th extreme (60) is below it: complete without a histogram */
	p.tau = 100 / reference;
	uint32_t *hist = s.hist;
	s.hist = NULL;
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 3 && e.complete == 1, "K-th extreme below threshold: complete");
	an_elements_free(&e);
	p.tau = 35 / reference;
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 4 && e.complete == 0, "no histogram, full extremes: incomplete");
	an_elements_free(&e);
	s.hist = hist;
	/* massive: median |x| is 1 (bin [1, 2^(1/4)): 2^(1/8)); |x| > 100 and > 1000 x 1.09 */
	an_params_init(&p, AN_MASSIVE);
	p.massive_ratio = 200; /* 218.1 */
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 3 && element_is(&e, 2, 7, 0, 300) && e.complete == 1,
	       "massive elements");
	TAP_CLOSE(e.threshold, 200 * pow(2, 0.125), 1e-15, 0, "massive element threshold");
	TAP_CLOSE(e.n ? e.items[2].ratio : NAN, 300 / pow(2, 0.125), 1e-15, 0, "massive ratio");
	an_elements_free(&e);
	p.massive_abs = 400; /* now the absolute condition binds */
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 2 && e.threshold == 400, "massive: the absolute threshold binds");
	an_elements_free(&e);
	/* fewer values than K: the extremes hold everything */
	struct at_stats small;
	stats_new(&small, 2, 0, 8);
	static const float three[3 * 2] = { 1, 2, 3, 4, 5, 600 };
	stats_add_rows(&small, three, 3);
	an_params_init(&p, AN_RATIO);
	p.tau = 1.5; /* mean |x| 615/6 = 102.5 -> > 153.75 */
	rc = an_element_outliers(&small, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_OK && e.n == 1 && element_is(&e, 0, 2, 1, 600) && e.complete == 1,
	       "fewer values than K: complete");
	an_elements_free(&e);
	at_stats_free(&small);
	/* bad input */
	an_params_init(&p, AN_GRAND_MEAN);
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_EINVAL && strstr(err.message, "grand-mean is not an element-wise criterion"),
	       "grand-mean is not element-wise");
	an_params_init(&p, AN_RATIO);
	rc = an_element_outliers(&s, NULL, NULL, 3, &p, &e, &err);
	TAP_OK(rc == AT_EINVAL && e.items == NULL, "samples count without rows: EINVAL");
	s.hist = NULL;
	an_params_init(&p, AN_MASSIVE);
	rc = an_element_outliers(&s, NULL, NULL, 0, &p, &e, &err);
	TAP_OK(rc == AT_ENOTFOUND && strstr(err.message, "no histogram"), "massive needs a histogram");
	s.hist = hist;
	at_stats_free(&s);
}

/* ---------------------------------------------------------------- layer share */

static struct an_outliers flags_of(const int64_t *channels, int64_t n)
{
	struct an_outliers o = { 100, n, NULL, 0, 0 };
	o.flags = calloc((size_t)(n ? n : 1), sizeof *o.flags);
	for (int64_t i = 0; o.flags && i < n; i++)
		o.flags[i] = (struct an_flag){ channels[i], 1, 1, 1 };
	return o;
}

static int channels_are(const struct an_outliers *o, const int64_t *want, int64_t n)
{
	if (o->n != n)
		return 0;
	for (int64_t i = 0; i < n; i++)
		if (o->flags[i].channel != want[i])
			return 0;
	return 1;
}

static void test_layer_share(void)
{
	/* site mlp at layers 0, 1, 2, 3 (layer 1 twice, e.g. two captures); site final
	 * (layer -1) once.  Channel 5 at layers 0 and 1 (twice): 2 of 4 layers.
	 * Channel 7 at layer 3: 1 of 4.  Channel 9 at final: 1 of 1. */
	struct an_point_count points[6] = {
		{ "layers.0.mlp", 0, "mlp", "mlp", 100, 0 },  { "layers.1.mlp", 1, "mlp", "mlp", 100, 0 },
		{ "layers.1.mlp'", 1, "mlp", "mlp", 100, 0 }, { "layers.2.mlp", 2, "mlp", "mlp", 100, 0 },
		{ "layers.3.mlp", 3, "mlp", "mlp", 100, 0 },  { "final", -1, "norm", "final", 100, 0 },
	};
	static const int64_t c5[] = { 5 }, c57[] = { 5, 7 }, c7[] = { 7 }, c9[] = { 9 }, c59[] = { 5, 9 };
	struct an_outliers per_point[6];
	per_point[0] = flags_of(c5, 1);
	per_point[1] = flags_of(c5, 1);
	per_point[2] = flags_of(c59, 2); /* 9 at mlp layer 1 only */
	per_point[3] = flags_of(NULL, 0);
	per_point[4] = flags_of(c7, 1);
	per_point[5] = flags_of(c9, 1);
	struct at_error err = { 0, "" };
	TAP_OK(an_require_layer_share(points, per_point, 6, 0.5, &err) == AT_OK, "layer share 0.5");
	TAP_OK(channels_are(&per_point[0], c5, 1) && channels_are(&per_point[1], c5, 1) &&
	               channels_are(&per_point[2], c5, 1) && per_point[3].n == 0 &&
	               per_point[4].n == 0 && channels_are(&per_point[5], c9, 1),
	       "2 of 4 distinct layers pass 0.5, 1 of 4 does not, a lone point passes");
	/* 0.25: 1 of 4 passes; the decisions use the flags before any removal */
	per_point[4].n = 1;
	per_point[2] = (an_outliers_free(&per_point[2]), flags_of(c57, 2));
	TAP_OK(an_require_layer_share(points, per_point, 6, 0.25, &err) == AT_OK &&
	               channels_are(&per_point[2], c57, 2) && channels_are(&per_point[4], c7, 1),
	       "layer share 0.25 keeps 1 of 4");
	TAP_OK(an_require_layer_share(points, per_point, 6, 0.75, &err) == AT_OK &&
	               per_point[0].n == 0 && per_point[2].n == 0 && per_point[4].n == 0 &&
	               per_point[5].n == 1,
	       "layer share 0.75 removes 2 of 4");
	TAP_OK(an_require_layer_share(points, per_point, 6, 0, &err) == AT_EINVAL &&
	               strstr(err.message, "layer share must be in (0, 1], not 0"),
	       "share 0 refused");
	TAP_OK(an_require_layer_share(points, per_point, 6, 1.01, &err) == AT_EINVAL,
	       "share 1.01 refused");
	an_outliers_free(&per_point[1]);
	static const int64_t unsorted[] = { 7, 5 };
	per_point[1] = flags_of(unsorted, 2);
	TAP_OK(an_require_layer_share(points, per_point, 6, 0.5, &err) == AT_EINVAL &&
	               strstr(err.message, "'layers.1.mlp' are not sorted"),
	       "unsorted flags refused");
	TAP_OK(an_require_layer_share(NULL, NULL, 0, 0.5, &err) == AT_OK, "no points");
	/* 7 of 100 layers pass 0.07, which 0.07 * 100 = 7.000000000000001 would not */
	enum { L = 100 };
	static struct an_point_count many[L];
	static struct an_outliers many_flags[L];
	static const int64_t c3[] = { 3 };
	for (int i = 0; i < L; i++) {
		many[i] = (struct an_point_count){ "p", i, "mlp", "mlp", 10, 0 };
		many_flags[i] = flags_of(i < 7 ? c3 : NULL, i < 7);
	}
	TAP_OK(an_require_layer_share(many, many_flags, L, 0.07, &err) == AT_OK &&
	               many_flags[0].n == 1,
	       "7 of 100 layers pass share 0.07");
	for (int i = 0; i < L; i++)
		an_outliers_free(&many_flags[i]);
	for (int i = 0; i < 6; i++)
		an_outliers_free(&per_point[i]);
}

int main(void)
{
	test_names();
	test_defaults();
	test_bad_params();
	test_channel_stat();
	test_grand_mean();
	test_layer_sigma();
	test_tensor_sigma();
	test_mad();
	test_kurtosis();
	test_frequency();
	test_median();
	test_ratio_massive();
	test_elements();
	test_layer_share();
	return tap_done();
}
