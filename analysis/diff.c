/* diff.c: two traces of the same points compared channel by channel (base
 * against fine-tuned, unclipped against clipped, two runs): how far a
 * channel's mean moved in units of its spread, how its absmax changed, how
 * different its |x| distributions are, and which outlier sets were kept,
 * gained and lost. */
#include <math.h>

#include "analysis.h"

void an_diff_channel(const struct at_stats *a, const struct at_stats *b, int64_t channel,
                     struct an_channel_diff *out)
{
	double sa = an_channel_stat(a, channel, AN_STAT_STD);
	double sb = an_channel_stat(b, channel, AN_STAT_STD);
	double spread = sqrt(0.5 * (sa * sa + sb * sb)); /* pooled: symmetric in a and b */
	double moved = b->mean[channel] - a->mean[channel];
	out->shift = moved == 0 ? 0.0 : moved / spread; /* NaN without values */
	if (a->count[channel] == 0 || b->count[channel] == 0)
		out->shift = NAN;
	out->absmax_ratio = b->absmax[channel] / a->absmax[channel];
	out->hist_distance = NAN;
	if (!a->hist || !b->hist)
		return;
	const uint32_t *ha = a->hist + channel * AT_HIST_BINS, *hb = b->hist + channel * AT_HIST_BINS;
	double na = 0, nb = 0, tv = 0;
	for (int i = 0; i < AT_HIST_BINS; i++) {
		na += ha[i];
		nb += hb[i];
	}
	if (na == 0 || nb == 0)
		return;
	for (int i = 0; i < AT_HIST_BINS; i++)
		tv += fabs(ha[i] / na - hb[i] / nb);
	out->hist_distance = 0.5 * tv;
}

void an_compare_sets(const struct an_outliers *a, const struct an_outliers *b,
                     struct an_set_diff *out)
{
	int64_t i = 0, j = 0;
	out->kept = out->gained = out->lost = 0;
	while (i < a->n || j < b->n) {
		if (j == b->n || (i < a->n && a->flags[i].channel < b->flags[j].channel)) {
			out->lost++;
			i++;
		} else if (i == a->n || b->flags[j].channel < a->flags[i].channel) {
			out->gained++;
			j++;
		} else {
			out->kept++;
			i++;
			j++;
		}
	}
	int64_t either = out->kept + out->gained + out->lost;
	out->jaccard = either ? (double)out->kept / (double)either : 1.0;
}
