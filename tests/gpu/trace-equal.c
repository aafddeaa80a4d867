/* trace-equal.c: whether two traces hold the same statistics, for the GPU
 * tests where h5py cannot load the build's zstd filter (its wheel bundles
 * another HDF5).  Exact: counts, nonfinite, min, max, absmax, histograms,
 * and the extremes (value, token, channel); within TOL of the channel's
 * standard deviation: mean and std.  Prints one summary line per quantity
 * and exits 0 when everything agrees, 1 when not, 2 on bad usage.
 *
 *   trace-equal A.h5 B.h5 [TOL]      (TOL default 1e-6) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"

struct tally {
	long long exact_bad, points;
	double worst_mean, worst_std; /* in units of the channel's std */
};

static int same_u64(const uint64_t *a, const uint64_t *b, int64_t n)
{
	return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* Bitwise, so that NaN (a channel without finite values) equals NaN. */
static int same_f64(const double *a, const double *b, int64_t n)
{
	return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static int same_extremes(const struct at_stats *a, const struct at_stats *b)
{
	if (a->n_extremes != b->n_extremes)
		return 0;
	for (int32_t i = 0; i < a->n_extremes; i++)
		if (a->extremes[i].value != b->extremes[i].value ||
		    a->extremes[i].token != b->extremes[i].token ||
		    a->extremes[i].channel != b->extremes[i].channel)
			return 0;
	return 1;
}

static void compare_point(const char *name, const struct at_stats *a, const struct at_stats *b,
                          struct tally *t)
{
	int64_t n = a->channels;
	const char *bad = NULL;
	if (!same_u64(a->count, b->count, n))
		bad = "count";
	else if (!same_u64(a->nonfinite, b->nonfinite, n))
		bad = "nonfinite";
	else if (!same_f64(a->min, b->min, n) || !same_f64(a->max, b->max, n) ||
	         !same_f64(a->absmax, b->absmax, n))
		bad = "min/max/absmax";
	else if ((a->hist == NULL) != (b->hist == NULL) ||
	         (a->hist && memcmp(a->hist, b->hist, (size_t)n * AT_HIST_BINS * sizeof *a->hist)))
		bad = "hist";
	else if (!same_extremes(a, b))
		bad = "extremes";
	if (bad) {
		printf("DIFFER %s: %s\n", name, bad);
		t->exact_bad++;
	}
	for (int64_t c = 0; c < n; c++) {
		struct at_moments ma, mb;
		at_stats_channel(a, c, &ma);
		at_stats_channel(b, c, &mb);
		double sa = at_moments_std(&ma), sb = at_moments_std(&mb);
		if (!(sb > 0))
			continue;
		double dm = fabs(ma.mean - mb.mean) / sb, ds = fabs(sa - sb) / sb;
		if (dm > t->worst_mean)
			t->worst_mean = dm;
		if (ds > t->worst_std)
			t->worst_std = ds;
	}
	t->points++;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: trace-equal A.h5 B.h5 [TOL]\n");
		return 2;
	}
	double tol = argc == 4 ? atof(argv[3]) : 1e-6;
	struct at_reader *ra, *rb;
	struct at_error err;
	if (at_reader_open(&ra, argv[1], &err) || at_reader_open(&rb, argv[2], &err)) {
		fprintf(stderr, "trace-equal: %s\n", err.message);
		return 1;
	}
	const struct at_trace_info *ia = at_reader_info(ra), *ib = at_reader_info(rb);
	if (ia->points != ib->points || ia->tokens != ib->tokens) {
		printf("DIFFER: %d points and %lld tokens against %d and %lld\n", ia->points,
		       (long long)ia->tokens, ib->points, (long long)ib->tokens);
		return 1;
	}
	struct tally t = {0};
	for (int32_t p = 0; p < ia->points; p++) {
		const char *name = at_reader_point(ra, p)->name;
		int32_t q;
		struct at_stats a, b;
		if (at_reader_find_point(rb, name, &q)) {
			printf("DIFFER %s: not in %s\n", name, argv[2]);
			t.exact_bad++;
			continue;
		}
		if (at_reader_load_stats(ra, p, &a, &err) || at_reader_load_stats(rb, q, &b, &err)) {
			fprintf(stderr, "trace-equal: %s\n", err.message);
			return 1;
		}
		compare_point(name, &a, &b, &t);
		at_stats_free(&a);
		at_stats_free(&b);
	}
	printf("points %lld, tokens %lld: exact quantities differ at %lld points; largest "
	       "difference of mean %.3g and of std %.3g std (tolerance %g)\n",
	       t.points, (long long)ia->tokens, t.exact_bad, t.worst_mean, t.worst_std, tol);
	at_reader_close(ra);
	at_reader_close(rb);
	return t.exact_bad == 0 && t.worst_mean <= tol && t.worst_std <= tol ? 0 : 1;
}
