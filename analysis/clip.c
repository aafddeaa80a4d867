/* clip.c: clipping bounds and clip rates from a trace, without the model.
 *
 * The RecurrentGemma study's clipping system (paper 000, section 3): a
 * channel c chosen by the outlier criterion is clamped to [L_c, U_c] with
 * L_c = mu_c - k_clip sigma_c and U_c = mu_c + k_clip sigma_c (its eq. 3.1),
 * sigma_c = sqrt(M2_c / (n - 1)) (its eq. 2.3).  The share of a channel's
 * values that such a clamp changes is known exactly only from the values
 * themselves: the trace's |x| histogram brackets it, its samples give it on
 * the rows they hold. */
#include <math.h>
#include <pthread.h>

#include "analysis.h"

int an_clip_bounds(const struct at_stats *s, int64_t channel, double k, double *lower,
                   double *upper)
{
	if (!(k >= 0) || !isfinite(k))
		return AT_EINVAL;
	uint64_t n = s->count[channel];
	if (n == 0)
		return AT_ENOTFOUND;
	double sigma = n > 1 ? sqrt(s->m2[channel] / (double)(n - 1)) : 0.0;
	*lower = s->mean[channel] - k * sigma;
	*upper = s->mean[channel] + k * sigma;
	return AT_OK;
}

/* Of the values x with lo <= |x| < hi (a bin), which the clamp to
 * [lower, upper] changes: all of them (2), some of them (1) or none (0).
 * The sign of x is not in the histogram, so x may be either +|x| or -|x|. */
static int bin_clipped(double lo, double hi, double lower, double upper)
{
	/* x = +a, a in [lo, hi): outside when a < lower or a > upper */
	int pos_all = lo > upper || hi <= lower;
	int pos_some = hi > upper || lo < lower;
	/* x = -a, -a in (-hi, -lo] */
	int neg_all = -lo < lower || -hi >= upper;
	int neg_some = -hi < lower || -lo > upper;
	if (pos_all && neg_all)
		return 2;
	return pos_some || neg_some ? 1 : 0;
}

/* The bins' edges, computed once: the rates run over every bin of every
 * bounded channel, once per cell of a sweep. */
static double edge[AT_HIST_BINS + 1];
static pthread_once_t edge_once = PTHREAD_ONCE_INIT;

static void edge_init(void)
{
	for (int b = 0; b <= AT_HIST_BINS; b++)
		edge[b] = at_hist_lower_edge(b);
}

void an_clip_rate_hist(const struct at_stats *s, int64_t channel, double lower, double upper,
                       struct an_clip_rate *out)
{
	pthread_once(&edge_once, edge_init);
	const uint32_t *h = s->hist + channel * AT_HIST_BINS;
	out->values = out->low = out->high = 0;
	for (int b = 0; b < AT_HIST_BINS; b++) {
		if (!h[b])
			continue;
		out->values += h[b];
		int clipped;
		if (b == 0) /* exact zeros: clamped only when 0 is outside the bounds */
			clipped = 0.0 < lower || 0.0 > upper ? 2 : 0;
		else
			clipped = bin_clipped(edge[b], edge[b + 1], lower, upper);
		if (clipped == 2)
			out->low += h[b];
		if (clipped)
			out->high += h[b];
	}
}

void an_clip_rate_samples(const float *rows, int64_t n, int64_t channels, int64_t channel,
                          double lower, double upper, struct an_clip_rate *out)
{
	out->values = out->low = 0;
	for (int64_t i = 0; i < n; i++) {
		double x = rows[i * channels + channel];
		if (!isfinite(x))
			continue;
		out->values++;
		out->low += x < lower || x > upper;
	}
	out->high = out->low;
}
