/* criteria.c: the outlier criteria of the literature over one point's
 * per-channel statistics, and the element-wise ones over extremes and samples.
 * Formulas, defaults and their sources: acttrace-criteria(7). */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis-internal.h"

/* Leys et al. 2013 (after Rousseeuw and Croux 1993): 1.4826 MAD estimates the
 * standard deviation of a normal distribution. */
#define MAD_TO_SIGMA 1.4826

static const char *const method_names[AN_METHOD_COUNT] = {
	[AN_GRAND_MEAN] = "grand-mean", [AN_LAYER_SIGMA] = "layer-sigma",
	[AN_TENSOR_SIGMA] = "tensor-sigma", [AN_RATIO] = "ratio",
	[AN_MASSIVE] = "massive", [AN_MAD] = "mad",
	[AN_KURTOSIS] = "kurtosis", [AN_FREQUENCY] = "frequency",
};

static const char *const stat_names[AN_STAT_COUNT] = {
	[AN_STAT_MEAN] = "mean", [AN_STAT_ABSMEAN] = "absmean", [AN_STAT_ABSMAX] = "absmax",
	[AN_STAT_STD] = "std", [AN_STAT_RMS] = "rms",
};

int an_fail(struct at_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof err->message, fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

/* ---------------------------------------------------------------- names */

/* Index of name in a table of names, or -1. */
static int name_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *an_method_name(enum an_method m)
{
	return (int)m < 0 || m >= AN_METHOD_COUNT ? "unknown" : method_names[m];
}

int an_method_parse(const char *name, enum an_method *out)
{
	int i = name_index(method_names, AN_METHOD_COUNT, name);
	if (i < 0)
		return AT_EINVAL;
	*out = (enum an_method)i;
	return 0;
}

const char *an_stat_name(enum an_stat s)
{
	return (int)s < 0 || s >= AN_STAT_COUNT ? "unknown" : stat_names[s];
}

int an_stat_parse(const char *name, enum an_stat *out)
{
	int i = name_index(stat_names, AN_STAT_COUNT, name);
	if (i < 0)
		return AT_EINVAL;
	*out = (enum an_stat)i;
	return 0;
}

int an_method_is_elementwise(enum an_method m)
{
	return m == AN_RATIO || m == AN_MASSIVE;
}

static int method_uses_stat(enum an_method m)
{
	return m == AN_GRAND_MEAN || m == AN_LAYER_SIGMA || m == AN_MAD;
}

static int method_needs_hist(enum an_method m)
{
	return m == AN_MASSIVE || m == AN_FREQUENCY;
}

/* ---------------------------------------------------------------- parameters */

void an_params_init(struct an_params *p, enum an_method m)
{
	memset(p, 0, sizeof *p);
	p->method = m;
	p->stat = m == AN_LAYER_SIGMA ? AN_STAT_ABSMAX : AN_STAT_MEAN;
	p->k = m == AN_KURTOSIS ? 10.0 : 6.0;
	p->m = 4.0;
	p->beta = 1.0 / 3.0;
	p->two_sided = 0;
	p->tau = 1000.0;
	p->massive_abs = 100.0;
	p->massive_ratio = 1000.0;
	p->freq_t = 6.0;
	p->freq_share = 0.06;
	p->freq_layers = 0.25;
}

static int check_positive(double v, const char *method, const char *what, struct at_error *err)
{
	if (v > 0 && isfinite(v))
		return AT_OK;
	return an_fail(err, AT_EINVAL, "%s: %s must be a positive number, not %g", method, what, v);
}

static int check_share(double v, const char *method, const char *what, struct at_error *err)
{
	if (v > 0 && v <= 1)
		return AT_OK;
	return an_fail(err, AT_EINVAL, "%s: %s must be in (0, 1], not %g", method, what, v);
}

static int check_method_params(const struct an_params *p, const char *name,
                               struct at_error *err)
{
	int rc;
	switch (p->method) {
	case AN_GRAND_MEAN:
	case AN_LAYER_SIGMA:
	case AN_MAD:
		return check_positive(p->k, name, "k", err);
	case AN_KURTOSIS:
		if (isfinite(p->k))
			return AT_OK;
		return an_fail(err, AT_EINVAL, "%s: k must be a finite number, not %g", name, p->k);
	case AN_TENSOR_SIGMA:
		if ((rc = check_positive(p->m, name, "m", err)))
			return rc;
		if (p->beta > 0) /* +inf drops the spread condition */
			return AT_OK;
		return an_fail(err, AT_EINVAL, "%s: beta must be a positive number or inf, not %g",
		            name, p->beta);
	case AN_RATIO:
		return check_positive(p->tau, name, "tau", err);
	case AN_MASSIVE:
		if (!(p->massive_abs >= 0 && isfinite(p->massive_abs)))
			return an_fail(err, AT_EINVAL,
			            "%s: the absolute threshold must be a number >= 0, not %g", name,
			            p->massive_abs);
		return check_positive(p->massive_ratio, name, "the ratio to the median", err);
	case AN_FREQUENCY:
		if ((rc = check_positive(p->freq_t, name, "t", err)) ||
		    (rc = check_share(p->freq_share, name, "the share of values", err)))
			return rc;
		if (p->freq_layers >= 0 && p->freq_layers <= 1)
			return AT_OK;
		return an_fail(err, AT_EINVAL,
		            "%s: the share of layers must be in [0, 1] (0: not required), not %g",
		            name, p->freq_layers);
	default:
		return an_fail(err, AT_EINVAL, "unknown outlier method %d", (int)p->method);
	}
}

static int check_params(const struct an_params *p, struct at_error *err)
{
	if (!p)
		return an_fail(err, AT_EINVAL, "outlier criteria: no parameters");
	if ((int)p->method < 0 || p->method >= AN_METHOD_COUNT)
		return an_fail(err, AT_EINVAL, "unknown outlier method %d", (int)p->method);
	const char *name = method_names[p->method];
	if (method_uses_stat(p->method) && ((int)p->stat < 0 || p->stat >= AN_STAT_COUNT))
		return an_fail(err, AT_EINVAL, "%s: unknown statistic %d", name, (int)p->stat);
	return check_method_params(p, name, err);
}

static int check_stats(const struct at_stats *s, struct at_error *err)
{
	if (!s || s->channels <= 0 || !s->count || !s->mean || !s->m2 || !s->m4 || !s->absmax ||
	    !s->abssum)
		return an_fail(err, AT_EINVAL, "outlier criteria: no statistics loaded");
	if (s->n_extremes < 0 || (s->n_extremes > 0 && !s->extremes))
		return an_fail(err, AT_EINVAL, "outlier criteria: bad extremes (%d)", (int)s->n_extremes);
	return AT_OK;
}

static int check_hist(const struct at_stats *s, enum an_method m, struct at_error *err)
{
	if (s->hist || !method_needs_hist(m))
		return AT_OK;
	return an_fail(err, AT_ENOTFOUND,
	            "%s: trace has no histogram; this criterion needs the per-channel |x| "
	            "histograms (load them with at_reader_load_stats)",
	            method_names[m]);
}

/* ---------------------------------------------------------------- per-channel values */

double an_channel_stat(const struct at_stats *s, int64_t channel, enum an_stat stat)
{
	if (!s || !s->count || channel < 0 || channel >= s->channels || s->count[channel] == 0)
		return NAN;
	struct at_moments m;
	at_stats_channel(s, channel, &m);
	double n = (double)m.count;
	switch (stat) {
	case AN_STAT_MEAN:
		return m.mean;
	case AN_STAT_ABSMEAN:
		return m.abssum / n;
	case AN_STAT_ABSMAX:
		return m.absmax;
	case AN_STAT_STD:
		return at_moments_std(&m); /* n-1; NaN for a single value */
	case AN_STAT_RMS:
		return sqrt(m.mean * m.mean + m.m2 / n); /* E[x^2] = mean^2 + M2/n */
	default:
		return NAN;
	}
}

/* v_c of every channel, NaN where the statistic is undefined. */
static double *channel_values(const struct at_stats *s, enum an_stat stat)
{
	double *v = calloc((size_t)s->channels, sizeof *v);
	for (int64_t c = 0; v && c < s->channels; c++)
		v[c] = an_channel_stat(s, c, stat);
	return v;
}

/* Mean and standard deviation (n-1) of the defined values, two passes. */
static void mean_std(const double *v, int64_t n, double *mean, double *std)
{
	double sum = 0, squares = 0;
	int64_t defined = 0;
	for (int64_t i = 0; i < n; i++)
		if (!isnan(v[i])) {
			sum += v[i];
			defined++;
		}
	*mean = defined ? sum / (double)defined : NAN;
	*std = NAN;
	if (defined < 2)
		return;
	for (int64_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			squares += (v[i] - *mean) * (v[i] - *mean);
	*std = sqrt(squares / (double)(defined - 1));
}

static int compare_doubles(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;
	return (a > b) - (a < b);
}

/* Median of v[0..n) (sorted in place); the mean of the two middle values when
 * n is even, as numpy.median. */
static double median_in_place(double *v, int64_t n)
{
	if (n == 0)
		return NAN;
	qsort(v, (size_t)n, sizeof *v, compare_doubles);
	if (n % 2)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- flags */

static void add_flag(struct an_outliers *o, int64_t channel, double value, double score,
                     double threshold)
{
	struct an_flag *f = &o->flags[o->n++];
	f->channel = channel;
	f->value = value;
	f->score = score;
	f->threshold = threshold;
}

void an_outliers_free(struct an_outliers *o)
{
	if (!o)
		return;
	free(o->flags);
	memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------- channel criteria */

/* Zani, "Exploring the behavior of outlier channels in hybrid-LLM
 * architectures" (RecurrentGemma-2B), section 2.4:
 *   |mu_c - mu_grand| > k_outlier sigma_grand,  sigma_grand with 1/(C-1), k = 6. */
static int grand_mean(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	double *v = channel_values(s, p->stat);
	if (!v)
		return AT_ENOMEM;
	mean_std(v, s->channels, &o->center, &o->spread);
	double mu = o->center, sigma = o->spread;
	for (int64_t c = 0; sigma > 0 && c < s->channels; c++)
		if (fabs(v[c] - mu) > p->k * sigma)
			add_flag(o, c, v[c], fabs(v[c] - mu) / sigma, p->k);
	free(v);
	return AT_OK;
}

/* Mamba-PTQ (Pierro and Abreu 2024; the formula as the RecurrentGemma study
 * writes it, section 1.2):
 *   absmax_c > mean + 6 std over the channels of the layer, one-sided. */
static int layer_sigma(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	double *v = channel_values(s, p->stat);
	if (!v)
		return AT_ENOMEM;
	mean_std(v, s->channels, &o->center, &o->spread);
	double mu = o->center, sigma = o->spread;
	for (int64_t c = 0; sigma > 0 && c < s->channels; c++)
		if (v[c] > mu + p->k * sigma)
			add_flag(o, c, v[c], (v[c] - mu) / sigma, p->k);
	free(v);
	return AT_OK;
}

/* Channel-wise outliers ("Rethinking the outlier distribution in large
 * language models", section 4.1): mean(A_j) exceeds the tensor's
 * mean by more than m sigma_A, sigma_A the std of all elements of A, and
 * std(A_j) < beta; m = 4, beta = 1/3. */
static int tensor_sigma(const struct at_stats *s, const struct an_params *p,
                        struct an_outliers *o)
{
	struct at_moments all;
	at_stats_pool(s, &all);
	o->center = all.count ? all.mean : NAN;
	o->spread = at_moments_std(&all);
	double mu = o->center, sigma = o->spread;
	for (int64_t c = 0; sigma > 0 && c < s->channels; c++) {
		struct at_moments m;
		at_stats_channel(s, c, &m);
		if (m.count == 0)
			continue;
		double excess = p->two_sided ? fabs(m.mean - mu) : m.mean - mu;
		if (excess > p->m * sigma && at_moments_std(&m) < p->beta)
			add_flag(o, c, m.mean, excess / sigma, p->m);
	}
	return AT_OK;
}

/* The robust variant the RecurrentGemma study proposes (section 4.9), after
 * Leys et al. 2013:
 *   |v_c - median(v)| > k 1.4826 MAD(v). */
static int mad(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	double *v = channel_values(s, p->stat);
	double *work = malloc((size_t)s->channels * sizeof *work);
	if (!v || !work) {
		free(v);
		free(work);
		return AT_ENOMEM;
	}
	int64_t n = 0;
	for (int64_t c = 0; c < s->channels; c++)
		if (!isnan(v[c]))
			work[n++] = v[c];
	double median = median_in_place(work, n);
	for (int64_t i = 0; i < n; i++)
		work[i] = fabs(work[i] - median);
	o->center = median;
	o->spread = MAD_TO_SIGMA * median_in_place(work, n);
	for (int64_t c = 0; o->spread > 0 && c < s->channels; c++)
		if (fabs(v[c] - median) > p->k * o->spread)
			add_flag(o, c, v[c], fabs(v[c] - median) / o->spread, p->k);
	free(v);
	free(work);
	return AT_OK;
}

/* Per-channel excess kurtosis n M4 / M2^2 - 3 (the measure of Nrusimha et
 * al. 2024, cited by the RecurrentGemma study, section 1.2); center: the
 * kurtosis of the whole tensor. */
static int kurtosis(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	struct at_moments all;
	at_stats_pool(s, &all);
	o->center = at_moments_kurtosis(&all);
	o->spread = NAN;
	for (int64_t c = 0; c < s->channels; c++) {
		struct at_moments m;
		at_stats_channel(s, c, &m);
		double kurt = at_moments_kurtosis(&m);
		if (kurt > p->k)
			add_flag(o, c, kurt, kurt, p->k);
	}
	return AT_OK;
}

/* The first bin whose lower edge is >= t: counting from there counts
 * |x| >= edge >= t, a lower bound on the count of |x| >= t (exact when t is
 * an edge).  AT_HIST_BINS when no edge is >= t. */
static int first_bin_at_least(double t)
{
	int bin = at_hist_bin(t);
	if (at_hist_lower_edge(bin) < t)
		bin++;
	return bin;
}

static uint64_t hist_count_from(const struct at_stats *s, int64_t channel, int first_bin)
{
	const uint32_t *hist = s->hist + channel * AT_HIST_BINS;
	uint64_t total = 0;
	for (int b = first_bin; b < AT_HIST_BINS; b++)
		total += hist[b];
	return total;
}

/* LLM.int8 (Dettmers et al. 2022, section 4): magnitude >= 6 on at least
 * 6% of the sequence dimensions (tokens); the second condition, 25% of the
 * layers, is an_require_layer_share.  center: the |x| actually counted. */
static int frequency(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	int first = first_bin_at_least(p->freq_t);
	o->center = at_hist_lower_edge(first);
	o->spread = NAN;
	for (int64_t c = 0; c < s->channels; c++) {
		if (s->count[c] == 0)
			continue;
		double share = (double)hist_count_from(s, c, first) / (double)s->count[c];
		if (share >= p->freq_share)
			add_flag(o, c, share, share, p->freq_share);
	}
	return AT_OK;
}

/* mean |x| over every finite element of the point. */
static double pooled_absmean(const struct at_stats *s)
{
	double abssum = 0;
	uint64_t count = 0;
	for (int64_t c = 0; c < s->channels; c++)
		if (s->count[c]) {
			abssum += s->abssum[c];
			count += s->count[c];
		}
	return count ? abssum / (double)count : NAN;
}

/* Systematic outliers (An et al., "Systematic outliers in large language
 * models", definition of activation outliers):
 *   |h_ij| > tau mu_h,  mu_h = mean |h| of the tensor, tau = 1000.
 * A channel holds such an element iff its absmax does: exact. */
static int ratio(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	double reference = pooled_absmean(s);
	o->center = reference;
	o->spread = NAN;
	for (int64_t c = 0; c < s->channels; c++)
		if (s->count[c] && s->absmax[c] > p->tau * reference)
			add_flag(o, c, s->absmax[c], s->absmax[c] / reference, p->tau);
	return AT_OK;
}

/* Massive activations (Sun et al. 2024, as restated in "Rethinking the
 * outlier distribution in large language models", section 3.1):
 *   |x| > 100 and |x| > 1000 median |x|; the median from the histogram. */
static int massive(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	double median = an_hist_median_abs(s);
	o->center = median;
	o->spread = NAN;
	for (int64_t c = 0; c < s->channels; c++) {
		double absmax = s->absmax[c];
		if (s->count[c] && absmax > p->massive_abs && absmax > p->massive_ratio * median)
			add_flag(o, c, absmax, absmax / median, p->massive_ratio);
	}
	return AT_OK;
}

static int run_method(const struct at_stats *s, const struct an_params *p, struct an_outliers *o)
{
	switch (p->method) {
	case AN_GRAND_MEAN:
		return grand_mean(s, p, o);
	case AN_LAYER_SIGMA:
		return layer_sigma(s, p, o);
	case AN_TENSOR_SIGMA:
		return tensor_sigma(s, p, o);
	case AN_RATIO:
		return ratio(s, p, o);
	case AN_MASSIVE:
		return massive(s, p, o);
	case AN_MAD:
		return mad(s, p, o);
	case AN_KURTOSIS:
		return kurtosis(s, p, o);
	case AN_FREQUENCY:
		return frequency(s, p, o);
	default:
		return AT_EINVAL;
	}
}

int an_channel_outliers(const struct at_stats *s, const struct an_params *p,
                        struct an_outliers *out, struct at_error *err)
{
	memset(out, 0, sizeof *out);
	out->center = out->spread = NAN;
	int rc = check_stats(s, err);
	if (!rc)
		rc = check_params(p, err);
	if (!rc)
		rc = check_hist(s, p->method, err);
	if (rc)
		return rc;
	out->channels = s->channels;
	out->flags = malloc((size_t)s->channels * sizeof *out->flags);
	if (!out->flags)
		return an_fail(err, AT_ENOMEM, "%s: out of memory for %lld channels",
		            method_names[p->method], (long long)s->channels);
	rc = run_method(s, p, out);
	if (rc) {
		an_outliers_free(out);
		return an_fail(err, rc, "%s: out of memory for %lld channels", method_names[p->method],
		            (long long)s->channels);
	}
	if (out->n == 0) {
		free(out->flags);
		out->flags = NULL;
	} else {
		struct an_flag *fit = realloc(out->flags, (size_t)out->n * sizeof *fit);
		if (fit)
			out->flags = fit;
	}
	return AT_OK;
}

/* ---------------------------------------------------------------- layer share */

/* A point's place in the grouping: by site, then layer. */
struct site_member {
	const char *site;
	int32_t layer;
	int64_t point;
};

static int compare_members(const void *pa, const void *pb)
{
	const struct site_member *a = pa, *b = pb;
	int by_site = strcmp(a->site, b->site);
	if (by_site)
		return by_site;
	if (a->layer != b->layer)
		return (a->layer > b->layer) - (a->layer < b->layer);
	return (a->point > b->point) - (a->point < b->point);
}

int an_outliers_has(const struct an_outliers *o, int64_t channel)
{
	int64_t lo = 0, hi = o->n;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;
		if (o->flags[mid].channel < channel)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < o->n && o->flags[lo].channel == channel;
}

static const char *site_of(const struct an_point_count *p)
{
	return p->site ? p->site : "";
}

static int check_share_input(const struct an_point_count *points,
                             const struct an_outliers *per_point, int64_t n, double share,
                             struct at_error *err)
{
	if (!(share > 0 && share <= 1))
		return an_fail(err, AT_EINVAL, "layer share must be in (0, 1], not %g", share);
	if (n < 0 || (n > 0 && (!points || !per_point)))
		return an_fail(err, AT_EINVAL, "layer share: no points");
	for (int64_t i = 0; i < n; i++)
		for (int64_t f = 1; f < per_point[i].n; f++)
			if (per_point[i].flags[f - 1].channel >= per_point[i].flags[f].channel)
				return an_fail(err, AT_EINVAL,
				            "layer share: flags of point '%s' are not sorted by channel",
				            points[i].point ? points[i].point : "?");
	return AT_OK;
}

/* Points grouped by site, each group sorted by layer. */
static struct site_member *group_by_site(const struct an_point_count *points, int64_t n)
{
	struct site_member *members = malloc((size_t)(n ? n : 1) * sizeof *members);
	if (!members)
		return NULL;
	for (int64_t i = 0; i < n; i++)
		members[i] = (struct site_member){ site_of(&points[i]), points[i].layer, i };
	qsort(members, (size_t)n, sizeof *members, compare_members);
	return members;
}

/* Distinct layers of members[0..m) (sorted by layer) whose point flags channel. */
static int64_t layers_flagging(const struct site_member *members, int64_t m,
                               const struct an_outliers *per_point, int64_t channel)
{
	int64_t layers = 0;
	int32_t last_counted = 0;
	for (int64_t j = 0; j < m; j++) {
		if (layers && members[j].layer == last_counted)
			continue;
		if (an_outliers_has(&per_point[members[j].point], channel)) {
			layers++;
			last_counted = members[j].layer;
		}
	}
	return layers;
}

static int64_t distinct_layers(const struct site_member *members, int64_t m)
{
	int64_t layers = 0;
	for (int64_t j = 0; j < m; j++)
		layers += j == 0 || members[j].layer != members[j - 1].layer;
	return layers;
}

/* keep[point][flag] for the members of one site. */
static void decide_site(const struct site_member *members, int64_t m,
                        const struct an_outliers *per_point, double share, char **keep)
{
	double layers = (double)distinct_layers(members, m);
	for (int64_t j = 0; j < m; j++) {
		const struct an_outliers *o = &per_point[members[j].point];
		for (int64_t f = 0; f < o->n; f++) {
			int64_t flagged = layers_flagging(members, m, per_point, o->flags[f].channel);
			/* a ratio against share, not a product: 7 of 100 layers pass 0.07 */
			keep[members[j].point][f] = (double)flagged / layers >= share;
		}
	}
}

static void remove_unkept(struct an_outliers *o, const char *keep)
{
	int64_t kept = 0;
	for (int64_t f = 0; f < o->n; f++)
		if (keep[f])
			o->flags[kept++] = o->flags[f];
	o->n = kept;
}

static void free_keep(char **keep, int64_t n)
{
	for (int64_t i = 0; keep && i < n; i++)
		free(keep[i]);
	free(keep);
}

static char **alloc_keep(const struct an_outliers *per_point, int64_t n)
{
	char **keep = calloc((size_t)(n ? n : 1), sizeof *keep);
	for (int64_t i = 0; keep && i < n; i++)
		if (!(keep[i] = malloc((size_t)(per_point[i].n ? per_point[i].n : 1)))) {
			free_keep(keep, n);
			return NULL;
		}
	return keep;
}

/* LLM.int8 (Dettmers et al. 2022, section 4): an outlier feature is one
 * that occurs in at least 25% of the transformer layers.  Decisions are taken
 * on the flags as given and applied afterwards, so removals do not cascade. */
int an_require_layer_share(const struct an_point_count *points, struct an_outliers *per_point,
                           int64_t n, double share, struct at_error *err)
{
	int rc = check_share_input(points, per_point, n, share, err);
	if (rc)
		return rc;
	struct site_member *members = group_by_site(points, n);
	char **keep = alloc_keep(per_point, n);
	if (!members || !keep) {
		free(members);
		free_keep(keep, n);
		return an_fail(err, AT_ENOMEM, "layer share: out of memory for %lld points", (long long)n);
	}
	for (int64_t start = 0, end; start < n; start = end) {
		for (end = start + 1; end < n && !strcmp(members[end].site, members[start].site); end++)
			;
		decide_site(members + start, end - start, per_point, share, keep);
	}
	for (int64_t i = 0; i < n; i++)
		remove_unkept(&per_point[i], keep[i]);
	free(members);
	free_keep(keep, n);
	return AT_OK;
}

/* ---------------------------------------------------------------- histogram median */

/* A representative |x| of a bin: the geometric middle of its edges. */
static double bin_middle(int bin)
{
	if (bin == 0)
		return 0.0;
	if (bin == 1) /* (0, 2^MIN_EXP): half its upper edge */
		return at_hist_lower_edge(2) / 2;
	if (bin == AT_HIST_BINS - 1) /* [2^MAX_EXP, inf): its lower edge */
		return at_hist_lower_edge(bin);
	return sqrt(at_hist_lower_edge(bin) * at_hist_lower_edge(bin + 1));
}

/* The bin holding the value of rank ceil(N/2) (the lower median) of all
 * channels pooled. */
double an_hist_median_abs(const struct at_stats *s)
{
	if (!s || !s->hist || s->channels <= 0)
		return NAN;
	uint64_t pooled[AT_HIST_BINS] = { 0 }, total = 0;
	for (int64_t c = 0; c < s->channels; c++)
		for (int b = 0; b < AT_HIST_BINS; b++)
			pooled[b] += s->hist[c * AT_HIST_BINS + b];
	for (int b = 0; b < AT_HIST_BINS; b++)
		total += pooled[b];
	if (total == 0)
		return NAN;
	uint64_t rank = total / 2 + total % 2, seen = 0;
	for (int b = 0; b < AT_HIST_BINS; b++) {
		seen += pooled[b];
		if (seen >= rank)
			return bin_middle(b);
	}
	return NAN; /* not reached */
}

/* ---------------------------------------------------------------- element-wise */

void an_elements_free(struct an_elements *e)
{
	if (!e)
		return;
	free(e->items);
	memset(e, 0, sizeof *e);
}

/* The reference and the |x| an element must exceed: ratio, tau mean|x|;
 * massive, both 100 and 1000 median|x|. */
static void element_threshold(const struct at_stats *s, const struct an_params *p,
                              double *reference, double *threshold)
{
	if (p->method == AN_RATIO) {
		*reference = pooled_absmean(s);
		*threshold = p->tau * *reference;
		return;
	}
	*reference = an_hist_median_abs(s);
	*threshold = isnan(*reference) ? NAN : fmax(p->massive_abs, p->massive_ratio * *reference);
}

struct candidates {
	struct an_element *items;
	int64_t n, capacity;
};

static int offer(struct candidates *list, int64_t token, int32_t channel, double value,
                 double threshold)
{
	if (!(fabs(value) > threshold) || !isfinite(value))
		return AT_OK;
	if (list->n == list->capacity) {
		int64_t capacity = list->capacity ? 2 * list->capacity : 64;
		struct an_element *grown = realloc(list->items, (size_t)capacity * sizeof *grown);
		if (!grown)
			return AT_ENOMEM;
		list->items = grown;
		list->capacity = capacity;
	}
	list->items[list->n++] = (struct an_element){ token, channel, value, 0.0 };
	return AT_OK;
}

static int compare_position(const void *pa, const void *pb)
{
	const struct an_element *a = pa, *b = pb;
	if (a->token != b->token)
		return (a->token > b->token) - (a->token < b->token);
	return (a->channel > b->channel) - (a->channel < b->channel);
}

/* By |value| descending, then token, then channel. */
static int compare_strength(const void *pa, const void *pb)
{
	const struct an_element *a = pa, *b = pb;
	double abs_a = fabs(a->value), abs_b = fabs(b->value);
	if (abs_a != abs_b)
		return abs_a < abs_b ? 1 : -1;
	return compare_position(pa, pb);
}

static void dedupe_and_rank(struct candidates *list, double reference)
{
	if (list->n == 0)
		return; /* items may be NULL, which qsort must not see */
	qsort(list->items, (size_t)list->n, sizeof *list->items, compare_position);
	int64_t kept = 0;
	for (int64_t i = 0; i < list->n; i++)
		if (kept == 0 || compare_position(&list->items[kept - 1], &list->items[i]) != 0)
			list->items[kept++] = list->items[i];
	list->n = kept;
	qsort(list->items, (size_t)list->n, sizeof *list->items, compare_strength);
	for (int64_t i = 0; i < list->n; i++)
		list->items[i].ratio = fabs(list->items[i].value) / reference;
}

static int gather(const struct at_stats *s, const float *samples, const int64_t *sample_tokens,
                  int64_t nsamples, double threshold, struct candidates *list)
{
	int rc = AT_OK;
	for (int32_t i = 0; !rc && i < s->n_extremes; i++)
		rc = offer(list, s->extremes[i].token, s->extremes[i].channel, s->extremes[i].value,
		           threshold);
	for (int64_t r = 0; !rc && r < nsamples; r++)
		for (int64_t c = 0; !rc && c < s->channels; c++)
			rc = offer(list, sample_tokens[r], (int32_t)c, samples[r * s->channels + c],
			           threshold);
	return rc;
}

/* An upper bound on the elements above threshold: in the channels whose
 * absmax exceeds it, the values from the bin holding the threshold up.
 * -1 when unknown (no histogram and some channel exceeds it). */
static int64_t count_above_bound(const struct at_stats *s, double threshold)
{
	int first = at_hist_bin(threshold);
	uint64_t total = 0;
	for (int64_t c = 0; c < s->channels; c++) {
		if (!s->count[c] || !(s->absmax[c] > threshold))
			continue;
		if (!s->hist)
			return -1;
		total += hist_count_from(s, c, first);
	}
	return (int64_t)total;
}

/* Whether the data prove that no element above threshold was missed. */
static int elements_complete(const struct at_stats *s, double threshold, int64_t listed)
{
	if (s->n_extremes < s->max_extremes)
		return 1; /* fewer values than K were seen: the extremes hold them all */
	if (s->n_extremes > 0 && fabs(s->extremes[s->n_extremes - 1].value) <= threshold)
		return 1; /* everything above threshold ranks above the K-th extreme */
	return count_above_bound(s, threshold) == listed;
}

static int check_element_input(const struct at_stats *s, const float *samples,
                               const int64_t *sample_tokens, int64_t nsamples,
                               const struct an_params *p, struct at_error *err)
{
	int rc = check_stats(s, err);
	if (!rc)
		rc = check_params(p, err);
	if (rc)
		return rc;
	if (!an_method_is_elementwise(p->method))
		return an_fail(err, AT_EINVAL, "%s is not an element-wise criterion (ratio, massive)",
		            method_names[p->method]);
	if (nsamples < 0 || (nsamples > 0 && (!samples || !sample_tokens)))
		return an_fail(err, AT_EINVAL, "%s: bad samples (%lld rows)", method_names[p->method],
		            (long long)nsamples);
	return check_hist(s, p->method, err);
}

int an_element_outliers(const struct at_stats *s, const float *samples,
                        const int64_t *sample_tokens, int64_t nsamples,
                        const struct an_params *p, struct an_elements *out,
                        struct at_error *err)
{
	memset(out, 0, sizeof *out);
	out->reference = out->threshold = NAN;
	int rc = check_element_input(s, samples, sample_tokens, nsamples, p, err);
	if (rc)
		return rc;
	element_threshold(s, p, &out->reference, &out->threshold);
	if (isnan(out->threshold)) {
		out->complete = 1; /* no finite value at all */
		return AT_OK;
	}
	struct candidates list = { NULL, 0, 0 };
	if (gather(s, samples, sample_tokens, nsamples, out->threshold, &list)) {
		free(list.items);
		return an_fail(err, AT_ENOMEM, "%s: out of memory for the flagged elements",
		            method_names[p->method]);
	}
	dedupe_and_rank(&list, out->reference);
	out->items = list.items;
	out->n = list.n;
	out->complete = elements_complete(s, out->threshold, list.n);
	return AT_OK;
}
