/* analysis.h: outlier criteria and breakdowns over the statistics that
 * libacttrace keeps.  Internal library of the tools; knows nothing of command
 * lines (no printing, no exiting) and nothing of the HDF5 layout (it sees
 * struct at_stats and friends only).
 *
 * Every criterion takes its thresholds as parameters and cites its source in
 * criteria.c and in trace-outliers(1). */
#ifndef AT_ANALYSIS_H
#define AT_ANALYSIS_H

#include <stdint.h>

#include "acttrace.h"

/* ---------------------------------------------------------------- criteria */

enum an_method {
	AN_GRAND_MEAN,   /* |v_c - mean(v)| > k * std(v), std with n-1 (RecurrentGemma study) */
	AN_LAYER_SIGMA,  /* v_c > mean(v) + k * std(v), v = absmax by default (Mamba-PTQ) */
	AN_TENSOR_SIGMA, /* mean_c - mu_A > m * sigma_A and std_c < beta (channel-wise outliers) */
	AN_RATIO,        /* |x| > tau * mean|x| of the tensor (systematic outliers), element-wise */
	AN_MASSIVE,      /* |x| > 100 and |x| > 1000 * median|x| (massive activations), element-wise */
	AN_MAD,          /* |v_c - median(v)| > k * 1.4826 * MAD(v) (robust 1 and 2) */
	AN_KURTOSIS,     /* excess kurtosis of channel c > k */
	AN_FREQUENCY,    /* |x| >= t on at least a share of the channel's values (LLM.int8) */
	AN_METHOD_COUNT
};

/* The per-channel statistic v_c that AN_GRAND_MEAN, AN_LAYER_SIGMA and AN_MAD compare. */
enum an_stat { AN_STAT_MEAN, AN_STAT_ABSMEAN, AN_STAT_ABSMAX, AN_STAT_STD, AN_STAT_RMS,
	       AN_STAT_COUNT };

const char *an_method_name(enum an_method m); /* "grand-mean", ... */
int an_method_parse(const char *name, enum an_method *out); /* 0 on success */
const char *an_stat_name(enum an_stat s);                   /* "mean", ... */
int an_stat_parse(const char *name, enum an_stat *out);
/* 1 when the method flags elements (ratio, massive) rather than channels. */
int an_method_is_elementwise(enum an_method m);

struct an_params {
	enum an_method method;
	enum an_stat stat;   /* grand-mean: mean; layer-sigma: absmax; mad: mean */
	double k;            /* grand-mean 6, layer-sigma 6, mad 6, kurtosis 10 */
	double m, beta;      /* tensor-sigma: 4, 1/3 */
	int two_sided;       /* tensor-sigma: |mean_c - mu_A| instead of mean_c - mu_A */
	double tau;          /* ratio: 1000 */
	double massive_abs;  /* massive: 100 */
	double massive_ratio; /* massive: 1000 */
	double freq_t;       /* frequency: 6 */
	double freq_share;   /* frequency: share of a channel's values, 0.06 */
	double freq_layers;  /* frequency: share of layers with the site (0.25; 0 = not required) */
};
/* The published defaults of a method. */
void an_params_init(struct an_params *p, enum an_method m);

/* Per-channel value of a statistic (NaN for a channel without values). */
double an_channel_stat(const struct at_stats *s, int64_t channel, enum an_stat stat);

/* One flagged channel.  score is the criterion's deviation in its own units
 * (sigmas, MADs, kurtosis, share of tokens, ratio), threshold the value score
 * is compared with (frequency: score >= threshold; massive also needs
 * absmax > massive_abs): rows sort by strength. */
struct an_flag {
	int64_t channel;
	double value;     /* the statistic the criterion looked at */
	double score;
	double threshold;
};

struct an_outliers {
	int64_t channels;
	int64_t n;           /* flagged channels */
	struct an_flag *flags; /* by channel */
	double center, spread; /* the reference the scores are relative to (e.g. mu_grand, sigma_grand) */
};
void an_outliers_free(struct an_outliers *o);
/* 1 when channel is flagged (flags sorted by channel: binary search). */
int an_outliers_has(const struct an_outliers *o, int64_t channel);

/* Channel criteria over one point's statistics (all methods; ratio and
 * massive flag the channels whose exact absmax passes, massive against a
 * median |x| estimated from the histogram).
 * AT_EINVAL for bad parameters, AT_ENOTFOUND when the trace lacks what the
 * method needs (e.g. no histogram). */
int an_channel_outliers(const struct at_stats *s, const struct an_params *p,
                        struct an_outliers *out, struct at_error *err);

/* A point's outcome, the unit breakdowns count. */
struct an_point_count {
	const char *point;
	int32_t layer;
	const char *component;
	const char *site;
	int64_t channels;
	int64_t outliers;
};

/* LLM.int8's second condition (Dettmers et al. 2022): a channel stays flagged
 * only if it is flagged at the same site in at least `share` of the layers
 * that have that site (flagged layers / layers >= share; points of one site
 * and layer count once; layer -1 always passes).  per_point[i] holds the
 * flags of points[i], sorted by channel; flags that fail are removed in place
 * (and per_point[i].n updated). */
int an_require_layer_share(const struct an_point_count *points, struct an_outliers *per_point,
                           int64_t n, double share, struct at_error *err);

/* ---------------------------------------------------------------- element-wise */

/* A flagged element: value at (token, channel); ratio = |x| / reference. */
struct an_element {
	int64_t token;
	int32_t channel;
	double value;
	double ratio;
};

struct an_elements {
	int64_t n;
	struct an_element *items; /* by |value| descending */
	double reference;         /* mean|x| (ratio) or median|x| (massive) of the tensor */
	double threshold;         /* the |x| an element had to exceed */
	int complete;             /* 1 when the extremes or the histogram prove that
	                             every element above threshold is listed */
};
void an_elements_free(struct an_elements *e);

/* Elements flagged by AN_RATIO or AN_MASSIVE, from a point's extremes and
 * (optionally) its sampled rows, duplicates removed.  complete tells whether
 * the histogram proves no element above the threshold was missed. */
int an_element_outliers(const struct at_stats *s, const float *samples,
                        const int64_t *sample_tokens, int64_t nsamples,
                        const struct an_params *p, struct an_elements *out,
                        struct at_error *err);

/* median |x| of all channels pooled, from the histogram: the geometric middle
 * of the bin holding the median (relative error <= 2^(1/8) - 1, about 9%);
 * NaN without a histogram. */
double an_hist_median_abs(const struct at_stats *s);

/* ---------------------------------------------------------------- breakdowns */

struct an_row {
	char key[128];       /* component, layer number, site or group "0-8" */
	int64_t channels;    /* total channels in the group */
	int64_t outliers;
	int64_t layers;      /* distinct layers in the group (layer -1 is none) */
	/* A ratio whose denominator is 0 is 0, never NaN. */
	double pct_of_group;    /* 100 * outliers / channels */
	double pct_of_outliers; /* 100 * outliers / all outliers */
	double avg_per_layer;   /* outliers / layers (Table 4.2) */
};

enum an_breakdown { AN_BY_COMPONENT, AN_BY_LAYER, AN_BY_SITE };

/* Rows of a breakdown (sorted by key: components by total channels
 * descending as the RecurrentGemma study's Table 4.1, layers numerically,
 * sites by name) plus a final "total" row.  *rows is malloc'ed. */
int an_breakdown(const struct an_point_count *points, int64_t n, enum an_breakdown by,
                 struct an_row **rows, int64_t *nrows, struct at_error *err);

/* Layer groups such as "0-8,9-17,18-25" (Table 4.2): per group the layers,
 * the total outliers and the average per layer. */
struct an_group {
	int32_t first, last;
};
int an_parse_groups(const char *spec, struct an_group **groups, int *ngroups,
                    struct at_error *err);
int an_breakdown_groups(const struct an_point_count *points, int64_t n,
                        const struct an_group *groups, int ngroups, struct an_row **rows,
                        int64_t *nrows, struct at_error *err);

/* ---------------------------------------------------------------- clipping */

/* The RecurrentGemma study's clipping bounds of a channel (its eq. 3.1):
 * mean -+ k * sigma, sigma = sqrt(M2 / (n - 1)) (its eq. 2.3; 0 for one
 * value).  AT_EINVAL for k < 0 or not finite, AT_ENOTFOUND for a channel
 * without values. */
int an_clip_bounds(const struct at_stats *s, int64_t channel, double k, double *lower,
                   double *upper);

/* How many of a channel's finite values the clamp to [lower, upper] changes:
 * at least `low`, at most `high`, of `values`. */
struct an_clip_rate {
	uint64_t values, low, high;
};

/* From the |x| histogram (s->hist must exist): a bin counts in `low` when
 * every value in it, of either sign, is outside the bounds, in `high` when
 * some value in it could be.  The bracket is as wide as the bins that
 * straddle a bound (bins are 2^(1/4) wide) and, where the bounds are not
 * symmetric about 0, the bins between |lower| and |upper|. */
void an_clip_rate_hist(const struct at_stats *s, int64_t channel, double lower, double upper,
                       struct an_clip_rate *out);

/* Exactly, on n sampled rows [n][channels] (low == high). */
void an_clip_rate_samples(const float *rows, int64_t n, int64_t channels, int64_t channel,
                          double lower, double upper, struct an_clip_rate *out);

/* ---------------------------------------------------------------- two traces */

/* One channel of the same point in traces a and b. */
struct an_channel_diff {
	double shift;         /* (mean_b - mean_a) / sqrt((std_a^2 + std_b^2) / 2); NaN without
	                         values, +-inf when both spreads are 0 and the means differ */
	double absmax_ratio;  /* absmax_b / absmax_a */
	double hist_distance; /* total variation between the normalised |x| histograms, 0..1;
	                         NaN without histograms or values */
};
void an_diff_channel(const struct at_stats *a, const struct at_stats *b, int64_t channel,
                     struct an_channel_diff *out);

/* Outlier sets of the same point in a and b (flags sorted by channel). */
struct an_set_diff {
	int64_t kept, gained, lost; /* in both, in b only, in a only */
	double jaccard;             /* kept / (kept + gained + lost); 1 when both are empty */
};
void an_compare_sets(const struct an_outliers *a, const struct an_outliers *b,
                     struct an_set_diff *out);

/* ---------------------------------------------------------------- quantization */

/* Symmetric absmax quantization, Q_b(x) = step round(x / step) (Mamba-PTQ):
 * the step of b bits for an absmax. */
double an_quant_step(double absmax, int bits);

/* Sums over the values of one or more channels: squared signal and squared
 * quantization error (add with several calls). */
struct an_quant_error {
	uint64_t values;
	double signal, error;
};
/* Exactly, over the finite sampled values of a channel. */
void an_quant_samples(const float *rows, int64_t n, int64_t channels, int64_t channel,
                      double step, struct an_quant_error *out);
/* Estimated from the channel's |x| histogram (see quant.c); needs s->hist. */
void an_quant_hist(const struct at_stats *s, int64_t channel, double step,
                   struct an_quant_error *out);
/* The same for several steps at once, outs[k] for steps[k]: one pass over the
 * channel's bins. */
void an_quant_hist_steps(const struct at_stats *s, int64_t channel, const double *steps,
                         int nsteps, struct an_quant_error *outs);
/* 10 log10(signal / error): inf for no error, NaN without values. */
double an_quant_sqnr_db(const struct an_quant_error *e);

/* The steps of absmax quantization of a weight matrix from its row maxima:
 * one scale for the tensor, or one per row (the rows of W[out][in] are the
 * output channels).  bits_lost = log2(tensor step / median row step): what a
 * per-tensor scale takes from the typical row's resolution. */
struct an_weight_steps {
	double tensor, row_median, row_min, row_max, bits_lost;
};
int an_weight_steps(const double *row_absmax, int64_t rows, int bits,
                    struct an_weight_steps *out);

/* The SQNR of absmax quantization of a weight matrix of rows x cols, per
 * tensor and per row, from each row's absmax and sum of w^2 (row_sumsq,
 * acttrace-format(5) WEIGHTS): the uniform rounding model, step^2 / 12 of
 * squared error a weight, capped at a row's sum of w^2 (what rounding every
 * weight of the row to 0 would cost).  In decibels; NaN without a signal. */
struct an_weight_sqnr {
	double tensor_db, row_db;
};
void an_weight_sqnr(const double *row_absmax, const double *row_sumsq, int64_t rows,
                    int64_t cols, int bits, struct an_weight_sqnr *out);

#endif /* AT_ANALYSIS_H */
