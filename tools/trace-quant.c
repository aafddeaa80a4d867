/* trace-quant: what symmetric absmax quantization of the activations would
 * cost, from a trace alone (Mamba-PTQ): per point, for each bit width, per
 * tensor and per channel, the SQNR estimated from the histograms and exact
 * on the samples, and the bits that the outlier channels take from every
 * other channel of a per-tensor scale.  The arithmetic lives in
 * analysis/quant.c. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"

struct options {
	struct copts criteria;
	int bits[8];
	int nbits;
	struct cli_selection select;
	struct cli_format_opts out;
	double alphas[8]; /* --smooth */
	int nalphas;
	const char *factors_path;
	int weights; /* --weights */
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "The error of symmetric absmax quantization of each point's activations\n"
	       "(Q_b(x) = step round(x / step), step = absmax / (2^(b-1) - 1), Mamba-PTQ),\n"
	       "per tensor and per channel, from the histograms and, where the trace has\n"
	       "them, exactly on the samples; and the bits the outlier channels cost the\n"
	       "others under a per-tensor scale.\n"
	       "\n"
	       "Outlier channels (default -m layer-sigma, Mamba-PTQ's 6 sigma):\n"
	       "%s"
	       "\n"
	       "  -b, --bits=B,...       bit widths (default 8,4; each 2 to 16)\n"
	       "  -s, --smooth=A,...     SmoothQuant instead: for each point that is a\n"
	       "                         Linear's input with the Linear's weight in the\n"
	       "                         trace, the factors s_j = max|X_j|^A / max|W_j|^(1-A)\n"
	       "                         and the INT8 steps before and after (A in [0, 1])\n"
	       "      --factors=FILE     with --smooth: every channel's factor (TSV)\n"
	       "  -w, --weights          the weight matrices instead: per bit width, the\n"
	       "                         step of a per-tensor scale and of per-row scales\n"
	       "                         (median, smallest, largest), and the bits a\n"
	       "                         per-tensor scale takes from the median row, and\n"
	       "                         the SQNR of both scales where the trace has the\n"
	       "                         rows' sums of squares\n"
	       "%s%s"
	       "See trace-quant(1).\n",
	       cli_prog, copts_help(), cli_selection_help(), cli_format_opts_help());
	exit(CLI_EXIT_OK);
}

static void parse_bits(const char *arg, struct options *o)
{
	double v[8];
	int n = cli_parse_list(arg, v, 8);
	for (int i = 0; i < n; i++)
		if (!(v[i] >= 2 && v[i] <= 16 && v[i] == floor(v[i])))
			n = -1;
	if (n < 0)
		cli_usage_error("--bits wants up to 8 widths from 2 to 16, not '%s'", arg);
	for (int i = 0; i < n; i++)
		o->bits[i] = (int)v[i];
	o->nbits = n;
}

static void parse_alphas(const char *arg, struct options *o)
{
	int n = cli_parse_list(arg, o->alphas, 8);
	for (int i = 0; i < n; i++)
		if (!(o->alphas[i] >= 0 && o->alphas[i] <= 1))
			n = -1;
	if (n < 0)
		cli_usage_error("--smooth wants up to 8 migration strengths in [0, 1], not '%s'", arg);
	o->nalphas = n;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_VERSION = 512, OPT_COMPONENT, OPT_FACTORS };
	static const struct option own[] = {
		{"bits", required_argument, NULL, 'b'},   {"point", required_argument, NULL, 'p'},
		{"smooth", required_argument, NULL, 's'}, {"factors", required_argument, NULL, OPT_FACTORS},
		{"weights", no_argument, NULL, 'w'},
		{"component", required_argument, NULL, OPT_COMPONENT},
		{"layers", required_argument, NULL, 'l'}, {"format", required_argument, NULL, 'f'},
		{"no-header", no_argument, NULL, 'H'},    {"digits", required_argument, NULL, 'd'},
		{"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
	};
	struct option longopts[64];
	copts_longopts_with(longopts, 64, own, sizeof own / sizeof own[0]);
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "%sb:s:p:l:f:Hd:qhw", copts_shortopts());

	*o = (struct options){.bits = {8, 4}, .nbits = 2};
	cli_selection_init(&o->select);
	cli_format_opts_init(&o->out);
	copts_init(&o->criteria);
	o->criteria.method = AN_LAYER_SIGMA; /* Mamba-PTQ's criterion unless -m says otherwise */
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criteria, opt, optarg) ||
		    cli_selection_option(&o->select, opt, optarg, OPT_COMPONENT) ||
		    cli_format_opts_option(&o->out, opt, optarg))
			continue;
		switch (opt) {
		case 'b': parse_bits(optarg, o); break;
		case 's': parse_alphas(optarg, o); break;
		case OPT_FACTORS: o->factors_path = optarg; break;
		case 'w': o->weights = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (argc - optind != 1)
		cli_usage_error(optind == argc ? "no trace file given" : "one trace at a time");
	if (o->factors_path && !o->nalphas)
		cli_usage_error("--factors goes with --smooth");
	if (o->weights && (o->nalphas || o->criteria.given || o->select.component ||
	                   o->select.layer_min != INT32_MIN || o->select.layer_max != INT32_MAX))
		cli_usage_error("--weights takes -b, -p (a module name pattern) and the output "
		                "options only");
	copts_finish(&o->criteria);
	if (an_method_is_elementwise(o->criteria.params.method))
		cli_usage_error("-m %s flags elements, not outlier channels",
		                an_method_name(o->criteria.params.method));
	return optind;
}

/* ---------------------------------------------------------------- one point */

static const char *const columns[] = {
	"point", "layer", "component", "site", "bits", "scope", "step", "sqnr_hist_db",
	"sqnr_samples_db", "mse_hist", "mse_samples", "sample_values", "outliers", "bits_lost"};

/* The point's absmax over all its channels and over its non-outlier ones. */
static void absmax_of(const struct at_stats *s, const struct an_outliers *flags, double *all,
                      double *rest)
{
	*all = *rest = 0;
	for (int64_t c = 0; c < s->channels; c++) {
		double a = s->absmax[c];
		if (!(a >= 0)) /* a channel without values */
			continue;
		*all = fmax(*all, a);
		if (!an_outliers_has(flags, c))
			*rest = fmax(*rest, a);
	}
}

static double mse(const struct an_quant_error *e)
{
	return e->values ? e->error / (double)e->values : NAN;
}

static void quant_row(struct cli_table *t, const struct at_point_info *p, int bits,
                      const char *scope, double step, const struct an_quant_error *h,
                      const struct an_quant_error *smp, int64_t outliers, double bits_lost)
{
	cli_table_str(t, p->name);
	cli_table_int(t, p->layer);
	cli_table_str(t, p->component);
	cli_table_str(t, p->site);
	cli_table_int(t, bits);
	cli_table_str(t, scope);
	cli_table_double(t, step);
	cli_table_double(t, an_quant_sqnr_db(h));
	cli_table_double(t, smp->values ? an_quant_sqnr_db(smp) : NAN);
	cli_table_double(t, mse(h));
	cli_table_double(t, mse(smp));
	cli_table_uint(t, smp->values);
	cli_table_int(t, outliers);
	cli_table_double(t, bits_lost);
	cli_table_end_row(t);
}

static void quant_point(struct cli_table *t, struct at_reader *r, int32_t index,
                        const struct options *o, const struct an_outliers *flags,
                        struct cli_prefetch *pf)
{
	const struct at_point_info *p = at_reader_point(r, index);
	struct at_stats s;
	cli_prefetch_take(pf, index, &s);
	float *samples = cli_load_samples(r, index, NULL);
	double all, rest;
	absmax_of(&s, flags, &all, &rest);
	/* log2 of the step with the outliers over the step without them */
	double bits_lost = all > 0 && rest > 0 ? log2(all / rest) : 0.0;
	/* [k] per tensor and [nbits + k] per channel, for bit width k */
	struct an_quant_error hist[16] = {{0}}, smp[16] = {{0}};
	double tensor_step[8];
	for (int k = 0; k < o->nbits; k++)
		tensor_step[k] = an_quant_step(all, o->bits[k]);
	for (int64_t c = 0; c < p->channels; c++) {
		if (s.count[c] == 0)
			continue;
		double steps[16];
		for (int k = 0; k < o->nbits; k++) {
			steps[k] = tensor_step[k];
			steps[o->nbits + k] = an_quant_step(s.absmax[c], o->bits[k]);
		}
		an_quant_hist_steps(&s, c, steps, 2 * o->nbits, hist);
		for (int k = 0; samples && k < 2 * o->nbits; k++)
			an_quant_samples(samples, p->samples, p->channels, c, steps[k], &smp[k]);
	}
	for (int k = 0; k < o->nbits; k++) {
		quant_row(t, p, o->bits[k], "tensor", tensor_step[k], &hist[k], &smp[k], flags->n,
		          bits_lost);
		quant_row(t, p, o->bits[k], "channel", NAN, &hist[o->nbits + k], &smp[o->nbits + k],
		          flags->n, bits_lost);
	}
	free(samples);
	cli_prefetch_recycle(pf, &s);
}

/* ---------------------------------------------------------------- SmoothQuant */

/* SmoothQuant (Xiao et al. 2023): X W = (X diag(s)^-1) (diag(s) W), with
 * s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) over input channel j, so that
 * the activations' outlier channels hand part of their range to the weights.
 * A channel whose activation or weight absmax is 0 keeps s_j = 1. */
static double smooth_factor(double act, double w, double alpha)
{
	return act > 0 && w > 0 ? pow(act, alpha) / pow(w, 1 - alpha) : 1.0;
}

static const char *const smooth_columns[] = {
	"point", "module", "alpha", "channels", "act_absmax", "act_absmax_smoothed", "w_absmax",
	"w_absmax_smoothed", "act_bits_gained", "w_bits_lost"};

/* The index of the weight of a point's module, or -1. */
static int32_t weight_of_point(struct at_reader *r, const struct at_point_info *p)
{
	for (int32_t i = 0; i < at_reader_info(r)->weights; i++)
		if (!strcmp(at_reader_weight_name(r, i), p->module))
			return i;
	return -1;
}

static void smooth_point(struct cli_table *t, FILE *factors, struct at_reader *r, int32_t index,
                         const struct at_weight_stats *w, const struct options *o)
{
	const struct at_point_info *p = at_reader_point(r, index);
	struct at_stats s;
	cli_load_point(r, index, 0, NULL, &s);
	for (int k = 0; k < o->nalphas; k++) {
		double alpha = o->alphas[k], act = 0, act_s = 0, wmax = 0, wmax_s = 0;
		for (int64_t j = 0; j < p->channels; j++) {
			double a = s.absmax[j] >= 0 ? s.absmax[j] : 0, wj = w->col_absmax[j];
			double f = smooth_factor(a, wj, alpha);
			act = fmax(act, a);
			act_s = fmax(act_s, a / f);
			wmax = fmax(wmax, wj);
			wmax_s = fmax(wmax_s, wj * f);
			if (factors)
				fprintf(factors, "%s\t%lld\t%.17g\t%.17g\t%.17g\t%.17g\n", p->name,
				        (long long)j, alpha, a, wj, f);
		}
		cli_table_str(t, p->name);
		cli_table_str(t, p->module);
		cli_table_double(t, alpha);
		cli_table_int(t, p->channels);
		cli_table_double(t, act);
		cli_table_double(t, act_s);
		cli_table_double(t, wmax);
		cli_table_double(t, wmax_s);
		/* per-tensor INT8 steps scale with the absmax: bits = log2 of the ratio */
		cli_table_double(t, act > 0 && act_s > 0 ? log2(act / act_s) : 0.0);
		cli_table_double(t, wmax > 0 && wmax_s > 0 ? log2(wmax_s / wmax) : 0.0);
		cli_table_end_row(t);
	}
	at_stats_free(&s);
}

static void run_smooth(struct at_reader *r, const struct options *o, const char *path)
{
	struct cli_out_file factors = {0};
	if (o->factors_path) {
		cli_out_open(&factors, o->factors_path);
		if (o->out.header)
			fputs("point\tchannel\talpha\tact_absmax\tw_absmax\tfactor\n", factors.f);
	}
	struct cli_table t;
	cli_table_begin(&t, stdout, o->out.format, o->out.header, smooth_columns,
	                (int)(sizeof smooth_columns / sizeof smooth_columns[0]));
	t.digits = o->out.digits;
	int32_t n = at_reader_info(r)->points, paired = 0, unpaired = 0;
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(r, i);
		if (!cli_selected(&o->select, p))
			continue;
		int32_t widx = strcmp(p->direction, "in") ? -1 : weight_of_point(r, p);
		if (widx < 0) {
			unpaired++;
			continue;
		}
		struct at_weight_stats w;
		struct at_error err = {0};
		if (at_reader_load_weight(r, widx, &w, &err))
			cli_fail_at(&err);
		if (w.rows > 1 && w.cols == p->channels) {
			smooth_point(&t, factors.f, r, i, &w, o);
			paired++;
		} else {
			unpaired++;
		}
		at_weight_stats_free(&w);
	}
	if (!paired && !cli_quiet)
		cli_warn(path, "warning: no selected point is a Linear's input with its weight in the "
		               "trace");
	else if (unpaired && !cli_quiet)
		cli_warn(path, "%d selected points have no weight matrix of their width: skipped",
		         (int)unpaired);
	if (factors.f)
		cli_out_commit(&factors);
	cli_table_end(&t);
}

/* ---------------------------------------------------------------- weights */

static const char *const weight_columns[] = {"module", "class", "rows", "cols", "bits",
                                             "step_tensor", "step_row_median", "step_row_min",
                                             "step_row_max", "bits_lost", "sqnr_tensor_db",
                                             "sqnr_row_db"};

/* Per weight matrix (vectors, such as a norm's gamma, have no rows to
 * scale apart) and bit width: the steps of absmax quantization, and the
 * SQNR where the trace has the rows' sums of squares (nan where not). */
static void run_weights(struct at_reader *r, const struct options *o, const char *path)
{
	struct cli_table t;
	cli_table_begin(&t, stdout, o->out.format, o->out.header, weight_columns,
	                (int)(sizeof weight_columns / sizeof weight_columns[0]));
	t.digits = o->out.digits;
	int32_t n = at_reader_info(r)->weights, shown = 0;
	for (int32_t i = 0; i < n; i++) {
		if (!cli_selected_name(&o->select, at_reader_weight_name(r, i)))
			continue;
		struct at_weight_stats w;
		struct at_error err = {0};
		if (at_reader_load_weight(r, i, &w, &err))
			cli_fail_at(&err);
		for (int b = 0; b < o->nbits && w.rows > 1; b++) {
			struct an_weight_steps st;
			if (an_weight_steps(w.row_absmax, w.rows, o->bits[b], &st))
				cli_fail(path, "out of memory");
			cli_table_str(&t, w.module);
			cli_table_str(&t, w.module_class);
			cli_table_int(&t, w.rows);
			cli_table_int(&t, w.cols);
			cli_table_int(&t, o->bits[b]);
			cli_table_double(&t, st.tensor);
			cli_table_double(&t, st.row_median);
			cli_table_double(&t, st.row_min);
			cli_table_double(&t, st.row_max);
			cli_table_double(&t, st.bits_lost);
			struct an_weight_sqnr q = {NAN, NAN};
			if (w.row_sumsq)
				an_weight_sqnr(w.row_absmax, w.row_sumsq, w.rows, w.cols, o->bits[b], &q);
			cli_table_double(&t, q.tensor_db);
			cli_table_double(&t, q.row_db);
			cli_table_end_row(&t);
			shown++;
		}
		at_weight_stats_free(&w);
	}
	if (!shown && !cli_quiet)
		cli_warn(path, "warning: no selected weight matrix in the trace");
	cli_table_end(&t);
}

int main(int argc, char **argv)
{
	cli_init(argv[0]);
	struct options o;
	int first = parse_args(argc, argv, &o);
	struct at_reader *r = cli_open_trace(argv[first]);
	if (o.nalphas || o.weights) {
		(o.weights ? run_weights : run_smooth)(r, &o, argv[first]);
		cli_close_trace(r);
		return CLI_EXIT_OK;
	}
	struct an_outliers *flags = copts_outliers(r, &o.criteria.params);
	struct cli_table t;
	cli_table_begin(&t, stdout, o.out.format, o.out.header, columns,
	                (int)(sizeof columns / sizeof columns[0]));
	t.digits = o.out.digits;
	int32_t n = at_reader_info(r)->points, chosen = 0;
	int32_t *chosen_points = cli_selected_points(r, &o.select, &chosen);
	struct cli_prefetch *pf = cli_prefetch_start(r, chosen_points, chosen, 1, "trace-quant");
	for (int32_t k = 0; k < chosen; k++) {
		quant_point(&t, r, chosen_points[k], &o, &flags[chosen_points[k]], pf);
		cli_progress("points", chosen_points[k] + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	free(chosen_points);
	if (chosen == 0 && !cli_quiet)
		cli_warn(argv[first], "warning: no point matches the selection");
	cli_table_end(&t);
	copts_outliers_free(flags, n);
	cli_close_trace(r);
	return CLI_EXIT_OK;
}
