/* trace-plot: figures of a trace through gnuplot: layer x channel bars with
 * outliers in red, outliers per layer, the largest |x| per layer, channel
 * profiles, |x| histograms and threshold sweeps (see trace-plot(1)). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"
#include "plot-gnuplot.h"
#include "tsv.h"

enum kind { KIND_BARS3D, KIND_LAYERS, KIND_TOP, KIND_CHANNELS, KIND_HIST, KIND_SWEEP, KIND_QUANT,
            KIND_DIFF, KIND_COUNT };

static const char *const kind_names[KIND_COUNT] = {"bars3d", "layers", "top", "channels",
                                                   "hist",   "sweep",  "quant", "diff"};

/* The kinds that draw a table (a file or stdin) rather than a trace. */
static int draws_table(enum kind k)
{
	return k == KIND_SWEEP || k == KIND_QUANT || k == KIND_DIFF;
}

/* At most this many bars per layer by default: more are thinner than a pixel. */
#define BARS3D_MAX_BARS 256
/* The number of largest |x| per layer that `top` draws (Sun et al. 2024, Fig. 1). */
#define TOP_K 3

/* What `top`'s three largest must differ in.  A massive activation sits at one
 * channel of one position in every sequence, so the largest elements are the
 * same element over and over and three lines would coincide. */
enum top_distinct { TOP_ELEMENT, TOP_CHANNEL, TOP_POSITION };

struct options {
	enum kind kind;
	const char *input;
	const char *output;
	const char *site;
	const char *point;
	int64_t channel; /* -1: all */
	enum an_stat stat;
	int64_t bin;     /* channels per bar; 0: automatic */
	const char *metric;
	const char *title;
	const char *size, *font, *logscale, *template_path, *script_dir;
	enum top_distinct distinct;
	struct copts criteria; /* criteria.params: the criterion */
	int criterion_stat_given;
	/* which of the kind-specific options were given, to refuse them elsewhere */
	int given_site, given_point, given_channel, given_stat, given_bin, given_metric,
	    given_distinct;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s KIND [OPTION]... FILE -o OUT\n"
	       "Draw a figure of an acttrace trace (sweep: of a table) with gnuplot.  OUT's\n"
	       "extension picks the format: .png, .svg, .pdf, or .tex (LaTeX text over a PDF\n"
	       "drawing: OUT and OUT's name with .pdf).\n"
	       "\n"
	       "Kinds:\n"
	       "  bars3d     layer x channel 3D bars of one site (--site), outlier channels red\n"
	       "  layers     outlier channels per layer, stacked by component\n"
	       "  top        the 3 largest |x| and the median |x| per layer (--site; layer.out)\n"
	       "  channels   one point's per-channel statistic (--point), outliers red\n"
	       "  hist       the |x| histogram of one point (--point) or channel (--channel)\n"
	       "  sweep      a threshold sweep table (trace-outliers --sweep; FILE or stdin)\n"
	       "  quant      trace-quant's table per layer: SQNR by bits and scale (FILE or stdin)\n"
	       "  diff       trace-diff's table per layer: Jaccard of the outlier sets by\n"
	       "             component (FILE or stdin)\n"
	       "\n"
	       "  -o, --output=OUT     the figure to write\n"
	       "  -s, --site=SITE      bars3d, top: the site, across layers (mlp.up_proj.out)\n"
	       "  -p, --point=NAME     channels, hist: the point (layers.3.mlp.down_proj.in)\n"
	       "  -c, --channel=N      hist: one channel instead of all\n"
	       "      --stat=S         bars3d, channels: the statistic drawn: absmean (default),\n"
	       "                       mean, absmax, std or rms\n"
	       "      --bin=N          bars3d: channels per bar, each the largest value of its\n"
	       "                       channels (default: at most %d bars per layer)\n"
	       "      --distinct=WHAT  top: the 3 largest |x| of distinct elements (element,\n"
	       "                       the default), channels (channel) or positions in the\n"
	       "                       sequence (position)\n"
	       "      --metric=COLUMN  sweep: the column drawn per component (outliers), or pct\n"
	       "                       (100 outliers / channels); quant: sqnr_hist_db (default),\n"
	       "                       sqnr_samples_db, bits_lost, ...; diff: jaccard (default),\n"
	       "                       max_abs_shift, mean_hist_distance, ...\n"
	       "      --title=TEXT     the title instead of the default ('' for none)\n"
	       "      --size=W,H       pixels (png, svg) or inches (pdf, tex; W,Hcm for cm)\n"
	       "      --logscale=AXES  axes on a log scale (x, y, z, xy, ... or none; top: y,\n"
	       "                       hist: xy)\n"
	       "      --font=NAME[,SIZE]  the font, e.g. 'Sans,12'\n"
	       "      --template=FILE  the gnuplot template instead of KIND.gp\n"
	       "      --script=DIR     write DIR/KIND.gp and its data, do not run gnuplot\n"
	       "  -q, --quiet          no warnings\n"
	       "  -h, --help           this help\n"
	       "      --version        print the version\n"
	       "\n"
	       "Criterion of bars3d, layers and channels (see trace-outliers(1)):\n"
	       "  -m, --method=NAME    grand-mean (default), layer-sigma, tensor-sigma, ratio,\n"
	       "                       massive, mad, kurtosis or frequency\n"
	       "  -k K                 threshold in sigmas, MADs or excess kurtosis\n"
	       "                       (6; kurtosis 10)\n"
	       "      --criterion-stat=S  per-channel statistic the criterion compares: mean,\n"
	       "                       absmean, absmax, std, rms (grand-mean, mad: mean;\n"
	       "                       layer-sigma: absmax); trace-outliers calls it --stat\n"
	       "      --m=M, --beta=B  tensor-sigma: mean_c - mu > M sigma and std_c < B\n"
	       "                       (4, 1/3)\n"
	       "      --two-sided      tensor-sigma: |mean_c - mu| instead of mean_c - mu\n"
	       "      --tau=T          ratio: |x| > T mean|x| of the tensor (1000)\n"
	       "      --min-abs=A, --ratio=R  massive: |x| > A and |x| > R median|x|\n"
	       "                       (100, 1000)\n"
	       "      --t=T, --share=S frequency: |x| >= T on at least a share S of the\n"
	       "                       channel's values (6, 0.06)\n"
	       "      --layer-share=S  frequency: keep a channel only if flagged at its site in\n"
	       "                       at least a share S of the layers (0.25)\n"
	       "\n"
	       "Templates: $ACTTRACE_PLOTS_DIR, else %s.\n"
	       "gnuplot: $GNUPLOT, else on PATH.  See trace-plot(1).\n",
	       cli_prog, BARS3D_MAX_BARS, AT_PLOTS_DIR);
	exit(CLI_EXIT_OK);
}

/* ---------------------------------------------------------------- options */

static enum kind parse_kind(const char *name)
{
	for (int k = 0; k < KIND_COUNT; k++)
		if (strcmp(name, kind_names[k]) == 0)
			return (enum kind)k;
	cli_usage_error("unknown kind '%s' (bars3d, layers, top, channels, hist, sweep, quant or "
	                "diff)", name);
}

static enum top_distinct parse_distinct(const char *what)
{
	static const char *const names[] = {"element", "channel", "position"};
	for (int i = 0; i < 3; i++)
		if (strcmp(what, names[i]) == 0)
			return (enum top_distinct)i;
	cli_usage_error("--distinct wants element, channel or position, not '%s'", what);
}

static void check_logscale(const char *axes)
{
	if (strcmp(axes, "none") == 0)
		return;
	if (!*axes || axes[strspn(axes, "xyz")])
		cli_usage_error("--logscale wants axes among x, y and z (e.g. xy), or none, not '%s'",
		                axes);
}

/* An option given to a kind that has no use for it is a mistake worth saying. */
static void refuse(int given, const char *option, const struct options *o)
{
	if (given)
		cli_usage_error("%s does not apply to %s", option, kind_names[o->kind]);
}

static void check_kind_options(struct options *o)
{
	enum kind k = o->kind;
	refuse(o->given_site && k != KIND_BARS3D && k != KIND_TOP && k != KIND_QUANT && k != KIND_DIFF,
	       "--site", o);
	refuse(o->given_point && k != KIND_CHANNELS && k != KIND_HIST, "--point", o);
	refuse(o->given_channel && k != KIND_HIST, "--channel", o);
	refuse(o->given_stat && k != KIND_BARS3D && k != KIND_CHANNELS, "--stat", o);
	refuse(o->given_bin && k != KIND_BARS3D, "--bin", o);
	refuse(o->given_metric && !draws_table(k), "--metric", o);
	refuse(o->given_distinct && k != KIND_TOP, "--distinct", o);
	int judges = k == KIND_BARS3D || k == KIND_LAYERS || k == KIND_CHANNELS;
	refuse(o->criteria.given && !judges, "a criterion option (-m, -k, ...)", o);
	if (k == KIND_BARS3D && !o->site)
		cli_usage_error("bars3d needs --site SITE (e.g. mlp.up_proj.out)");
	if ((k == KIND_CHANNELS || k == KIND_HIST) && !o->point)
		cli_usage_error("%s needs --point NAME", kind_names[k]);
	if (k == KIND_TOP && !o->site)
		o->site = "layer.out";
	if (k == KIND_LAYERS && strchr(o->logscale ? o->logscale : "", 'y'))
		cli_usage_error("layers stacks its bars: no log scale on y");
	if (o->criterion_stat_given && o->criteria.method != AN_GRAND_MEAN &&
	    o->criteria.method != AN_LAYER_SIGMA && o->criteria.method != AN_MAD)
		cli_usage_error("--criterion-stat does not apply to method '%s'",
		                an_method_name(o->criteria.method));
	copts_finish(&o->criteria);
	if (!o->logscale)
		o->logscale = k == KIND_TOP ? "y" : k == KIND_HIST ? "xy" : "none";
}

enum { OPT_VERSION = 256, OPT_STAT, OPT_BIN, OPT_METRIC, OPT_TITLE, OPT_SIZE, OPT_LOGSCALE,
       OPT_FONT, OPT_TEMPLATE, OPT_SCRIPT, OPT_DISTINCT };

/* Our options, then criteria-opts.h's, whose --stat is ours here (the
 * statistic drawn): the criterion's is --criterion-stat. */
static struct option *all_longopts(void)
{
	static const struct option own[] = {
		{"output", required_argument, NULL, 'o'}, {"site", required_argument, NULL, 's'},
		{"point", required_argument, NULL, 'p'}, {"channel", required_argument, NULL, 'c'},
		{"stat", required_argument, NULL, OPT_STAT}, {"bin", required_argument, NULL, OPT_BIN},
		{"metric", required_argument, NULL, OPT_METRIC},
		{"distinct", required_argument, NULL, OPT_DISTINCT},
		{"title", required_argument, NULL, OPT_TITLE}, {"size", required_argument, NULL, OPT_SIZE},
		{"logscale", required_argument, NULL, OPT_LOGSCALE},
		{"font", required_argument, NULL, OPT_FONT},
		{"template", required_argument, NULL, OPT_TEMPLATE},
		{"script", required_argument, NULL, OPT_SCRIPT}, {"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, OPT_VERSION},
	};
	static struct option table[sizeof own / sizeof own[0] + 64];
	size_t n = sizeof own / sizeof own[0];
	memcpy(table, own, sizeof own);
	size_t criteria = copts_longopts(table + n, sizeof table / sizeof table[0] - n - 1);
	for (size_t i = n; i < n + criteria; i++)
		if (table[i].val == COPT_STAT)
			table[i].name = "criterion-stat";
	table[n + criteria] = (struct option){NULL, 0, NULL, 0};
	return table;
}

static void parse_args(int argc, char **argv, struct options *o)
{
	const struct option *longopts = all_longopts();
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "o:s:p:c:qh%s", copts_shortopts());
	*o = (struct options){.channel = -1, .stat = AN_STAT_ABSMEAN};
	copts_init(&o->criteria);
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criteria, opt, optarg)) {
			o->criterion_stat_given |= opt == COPT_STAT;
			continue;
		}
		switch (opt) {
		case 'o': o->output = optarg; break;
		case 's': o->site = optarg; o->given_site = 1; break;
		case 'p': o->point = optarg; o->given_point = 1; break;
		case 'c':
			if (cli_parse_int64(optarg, 0, INT64_MAX, &o->channel))
				cli_usage_error("--channel must be a channel number, not '%s'", optarg);
			o->given_channel = 1;
			break;
		case OPT_STAT:
			if (an_stat_parse(optarg, &o->stat))
				cli_usage_error("unknown statistic '%s' (absmean, mean, absmax, std or rms)",
				                optarg);
			o->given_stat = 1;
			break;
		case OPT_BIN:
			if (cli_parse_int64(optarg, 1, 1 << 30, &o->bin))
				cli_usage_error("--bin must be a positive number of channels, not '%s'", optarg);
			o->given_bin = 1;
			break;
		case OPT_METRIC: o->metric = optarg; o->given_metric = 1; break;
		case OPT_DISTINCT: o->distinct = parse_distinct(optarg); o->given_distinct = 1; break;
		case OPT_TITLE: o->title = optarg; break;
		case OPT_SIZE: o->size = optarg; break;
		case OPT_LOGSCALE: check_logscale(optarg); o->logscale = optarg; break;
		case OPT_FONT: o->font = optarg; break;
		case OPT_TEMPLATE: o->template_path = optarg; break;
		case OPT_SCRIPT: o->script_dir = optarg; break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (optind == argc)
		cli_usage_error("no kind given (bars3d, layers, top, channels, hist, sweep, quant or diff)");
	o->kind = parse_kind(argv[optind++]);
	if (argc - optind > 1)
		cli_usage_error("one input file at a time");
	o->input = optind < argc ? argv[optind] : NULL;
	if (!o->input && !draws_table(o->kind))
		cli_usage_error("no trace file given");
	check_kind_options(o);
}

/* ---------------------------------------------------------------- shared pieces */

static const char *stat_label(enum an_stat s)
{
	switch (s) {
	case AN_STAT_MEAN: return "Mean x";
	case AN_STAT_ABSMEAN: return "Mean |x|";
	case AN_STAT_ABSMAX: return "Max |x|";
	case AN_STAT_STD: return "Std of x";
	default: return "RMS of x";
	}
}

/* The criterion in a few words, for a subtitle. */
static void describe_criterion(const struct an_params *p, char *buf, size_t size)
{
	const char *name = an_method_name(p->method);
	const char *stat = an_stat_name(p->stat);
	switch (p->method) {
	case AN_GRAND_MEAN:
	case AN_LAYER_SIGMA:
	case AN_MAD: snprintf(buf, size, "%s k=%g on the channel %s", name, p->k, stat); break;
	case AN_KURTOSIS: snprintf(buf, size, "%s k=%g", name, p->k); break;
	case AN_TENSOR_SIGMA:
		snprintf(buf, size, "%s m=%g beta=%.3g%s", name, p->m, p->beta,
		         p->two_sided ? " two-sided" : "");
		break;
	case AN_RATIO: snprintf(buf, size, "%s |x| > %g mean|x|", name, p->tau); break;
	case AN_MASSIVE:
		snprintf(buf, size, "%s |x| > %g and > %g median|x|", name, p->massive_abs,
		         p->massive_ratio);
		break;
	case AN_FREQUENCY:
		snprintf(buf, size, "%s |x| >= %g on %g%% of values", name, p->freq_t,
		         100 * p->freq_share);
		if (p->freq_layers > 0) {
			size_t used = strlen(buf);
			snprintf(buf + used, size - used, ", %g%% of layers", 100 * p->freq_layers);
		}
		break;
	default: snprintf(buf, size, "%s", name);
	}
}

static double percent(int64_t part, int64_t whole)
{
	return whole > 0 ? 100.0 * (double)part / (double)whole : 0.0;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p)
		cli_fail(NULL, "out of memory");
	return p;
}

static void load_point(struct at_reader *r, int32_t index, int with_hist, struct at_stats *s)
{
	struct at_error err = {0};
	int rc = with_hist ? at_reader_load_stats(r, index, s, &err)
	                   : at_reader_load_moments(r, index, s, &err);
	if (rc)
		cli_fail_at(&err);
}

struct layer_point {
	int32_t layer, index;
};

static int compare_layer_points(const void *pa, const void *pb)
{
	const struct layer_point *a = pa, *b = pb;
	if (a->layer != b->layer)
		return (a->layer > b->layer) - (a->layer < b->layer);
	return (a->index > b->index) - (a->index < b->index);
}

/* The points of a site, by layer. */
static int32_t *site_points(struct at_reader *r, const char *site, int32_t *n)
{
	int32_t total = at_reader_info(r)->points;
	struct layer_point *found = xcalloc((size_t)total, sizeof *found);
	*n = 0;
	for (int32_t i = 0; i < total; i++) {
		const struct at_point_info *p = at_reader_point(r, i);
		if (strcmp(p->site, site) == 0)
			found[(*n)++] = (struct layer_point){p->layer, i};
	}
	if (*n == 0)
		cli_fail(at_reader_path(r), "no point has site '%s' (trace-stats lists the sites)", site);
	qsort(found, (size_t)*n, sizeof *found, compare_layer_points);
	int32_t *chosen = xcalloc((size_t)*n, sizeof *chosen);
	for (int32_t i = 0; i < *n; i++)
		chosen[i] = found[i].index;
	free(found);
	return chosen;
}

static struct an_point_count count_of(const struct at_point_info *p)
{
	return (struct an_point_count){.point = p->name, .layer = p->layer,
	                               .component = p->component, .site = p->site,
	                               .channels = p->channels};
}

/* The criterion over the given points and, when values is not NULL, the
 * drawn statistic of every channel of each (values[i], malloc'ed). */
static void flag_points(struct at_reader *r, const struct options *o, const int32_t *chosen,
                        int32_t n, struct an_outliers *per_point, double **values)
{
	struct an_point_count *counts = xcalloc((size_t)n, sizeof *counts);
	int with_hist = copts_needs_hist(o->criteria.params.method);
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *info = at_reader_point(r, chosen[i]);
		struct at_stats s;
		struct at_error err = {0};
		load_point(r, chosen[i], with_hist, &s);
		if (an_channel_outliers(&s, &o->criteria.params, &per_point[i], &err))
			cli_fail(at_reader_path(r), "%s: %s", info->name, err.message);
		if (values) {
			values[i] = xcalloc((size_t)s.channels, sizeof **values);
			for (int64_t c = 0; c < s.channels; c++)
				values[i][c] = an_channel_stat(&s, c, o->stat);
		}
		at_stats_free(&s);
		counts[i] = count_of(info);
		cli_progress("reading points", i + 1, n);
	}
	cli_progress_done();
	struct at_error err = {0};
	if (o->criteria.params.method == AN_FREQUENCY && o->criteria.params.freq_layers > 0 &&
	    an_require_layer_share(counts, per_point, n, o->criteria.params.freq_layers, &err))
		cli_fail(at_reader_path(r), "%s", err.message);
	free(counts);
}


/* Settings every template reads. */
static void set_common(struct plot *pl, const struct options *o, const char *title,
                       const char *subtitle, const char *xlabel, const char *ylabel)
{
	if (o->title)
		title = o->title;
	int none = o->title && !*o->title;
	plot_var_text(pl, "title_text", none ? "" : title);
	plot_var_text(pl, "subtitle_text", none ? "" : subtitle);
	plot_var_text(pl, "xlabel_text", xlabel);
	plot_var_text(pl, "ylabel_text", ylabel);
	plot_var_string(pl, "logscale", strcmp(o->logscale, "none") == 0 ? "" : o->logscale);
}

/* ---------------------------------------------------------------- bars3d */

/* One bar: the largest |value| of its channels, signed, and whether any of
 * them is an outlier. */
static int write_bars(FILE *f, int32_t layer, const double *values, int64_t channels, int64_t bin,
                      const struct an_outliers *flags)
{
	int bars = 0;
	for (int64_t first = 0; first < channels; first += bin) {
		int64_t last = first + bin < channels ? first + bin - 1 : channels - 1;
		double height = NAN;
		int red = 0;
		for (int64_t c = first; c <= last; c++) {
			if (!isnan(values[c]) && (isnan(height) || fabs(values[c]) > fabs(height)))
				height = values[c];
			red |= an_outliers_has(flags, c);
		}
		if (isnan(height))
			continue;
		fprintf(f, "%d\t%lld\t%lld\t%.9g\t%d\n", (int)layer, (long long)first, (long long)last,
		        height, red);
		bars++;
	}
	return bars;
}

static void plot_bars3d(struct at_reader *r, const struct options *o, struct plot *pl)
{
	int32_t n;
	int32_t *chosen = site_points(r, o->site, &n);
	struct an_outliers *per_point = xcalloc((size_t)n, sizeof *per_point);
	double **values = xcalloc((size_t)n, sizeof *values);
	flag_points(r, o, chosen, n, per_point, values);
	int64_t max_channels = 0, channels = 0, outliers = 0;
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(r, chosen[i]);
		max_channels = p->channels > max_channels ? p->channels : max_channels;
		channels += p->channels;
		outliers += per_point[i].n;
	}
	int64_t bin = o->bin ? o->bin : (max_channels + BARS3D_MAX_BARS - 1) / BARS3D_MAX_BARS;
	FILE *f = plot_data(pl, "bars3d.dat");
	fprintf(f, "# layer\tfirst_channel\tlast_channel\t%s\toutlier\n", an_stat_name(o->stat));
	int bars = 0;
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(r, chosen[i]);
		bars += write_bars(f, p->layer, values[i], p->channels, bin, &per_point[i]);
		free(values[i]);
		an_outliers_free(&per_point[i]);
	}
	plot_data_close(pl, f, "bars3d.dat");
	if (bars == 0)
		cli_fail(at_reader_path(r), "site '%s': no values recorded (a trace of no tokens?)",
		         o->site);
	char title[256], subtitle[512], legend[512], criterion[160];
	snprintf(title, sizeof title, "Outlier channels: %lld/%lld (%.3f%%)", (long long)outliers,
	         (long long)channels, percent(outliers, channels));
	describe_criterion(&o->criteria.params, criterion, sizeof criterion);
	if (bin > 1) {
		snprintf(subtitle, sizeof subtitle, "%s: %s per channel; a bar: the largest of %lld channels",
		         o->site, an_stat_name(o->stat), (long long)bin);
		snprintf(legend, sizeof legend, "red: one of its %lld channels is an outlier (%s)",
		         (long long)bin, criterion);
	} else {
		snprintf(subtitle, sizeof subtitle, "%s: %s per channel", o->site, an_stat_name(o->stat));
		snprintf(legend, sizeof legend, "red: outlier channel (%s)", criterion);
	}
	plot_comment(pl, "trace-plot bars3d of %s, site %s", at_reader_path(r), o->site);
	set_common(pl, o, title, subtitle, "Channel", "Layer");
	plot_var_text(pl, "legend_text", o->title && !*o->title ? "" : legend);
	/* bars are magnitudes (bars3d.gp) */
	plot_var_text(pl, "zlabel_text", o->stat == AN_STAT_MEAN ? "|Mean x|" : stat_label(o->stat));
	plot_var_string(pl, "data_file", "bars3d.dat");
	plot_var_int(pl, "channels", max_channels);
	plot_var_int(pl, "first_layer", at_reader_point(r, chosen[0])->layer);
	plot_var_int(pl, "last_layer", at_reader_point(r, chosen[n - 1])->layer);
	plot_var_int(pl, "bin_channels", bin);
	free(values);
	free(per_point);
	free(chosen);
}

/* ---------------------------------------------------------------- layers */

/* Components have fixed colours, the same in every figure. */
static const char *component_color(const char *component, int index)
{
	static const struct {
		const char *name, *color;
	} known[] = {
		{"mlp", "#1f77b4"},  {"attention", "#ff7f0e"}, {"recurrent", "#2ca02c"},
		{"ssm", "#9467bd"},  {"norm", "#8c564b"},      {"layer", "#7f7f7f"},
		{"embedding", "#e377c2"}, {"head", "#bcbd22"}, {"other", "#17becf"},
		{"total", "#000000"},
	};
	static const char *const spare[] = {"#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (strcmp(component, known[i].name) == 0)
			return known[i].color;
	return spare[index % (int)(sizeof spare / sizeof spare[0])];
}

static void plot_layers(struct at_reader *r, const struct options *o, struct plot *pl)
{
	int32_t n = at_reader_info(r)->points;
	struct an_point_count *counts = xcalloc((size_t)n, sizeof *counts);
	struct an_outliers *per_point = xcalloc((size_t)n, sizeof *per_point);
	struct at_error err = {0};
	int32_t first_layer = INT32_MAX, last_layer = -1;
	for (int32_t i = 0; i < n; i++) {
		counts[i] = count_of(at_reader_point(r, i));
		if (counts[i].layer >= 0) {
			first_layer = counts[i].layer < first_layer ? counts[i].layer : first_layer;
			last_layer = counts[i].layer > last_layer ? counts[i].layer : last_layer;
		}
	}
	if (last_layer < 0)
		cli_fail(at_reader_path(r), "no point belongs to a layer");
	if (copts_run(r, &o->criteria.params, counts, per_point, &err))
		cli_fail_at(&err);
	/* outside layers: counted in the title, not drawn */
	int64_t in_layers = 0, outside = 0, channels = 0;
	for (int32_t i = 0; i < n; i++) {
		counts[i].outliers = per_point[i].n;
		an_outliers_free(&per_point[i]);
		if (counts[i].layer >= 0) {
			in_layers += counts[i].outliers;
			channels += counts[i].channels;
		} else {
			outside += counts[i].outliers;
		}
	}
	/* components in the order of the breakdown by component (by channels) */
	struct an_row *rows;
	int64_t nrows;
	if (an_breakdown(counts, n, AN_BY_COMPONENT, &rows, &nrows, &err))
		cli_fail_at(&err);
	int ncomponents = (int)nrows - 1; /* the last row is the total */
	const char **names = xcalloc((size_t)ncomponents, sizeof *names);
	const char **colors = xcalloc((size_t)ncomponents, sizeof *colors);
	for (int c = 0; c < ncomponents; c++) {
		names[c] = rows[c].key;
		colors[c] = component_color(rows[c].key, c);
	}
	int32_t nlayers = last_layer - first_layer + 1;
	int64_t *table = xcalloc((size_t)nlayers * (size_t)ncomponents, sizeof *table);
	for (int32_t i = 0; i < n; i++) {
		if (counts[i].layer < 0)
			continue;
		for (int c = 0; c < ncomponents; c++)
			if (strcmp(counts[i].component, names[c]) == 0)
				table[(size_t)(counts[i].layer - first_layer) * (size_t)ncomponents + (size_t)c] +=
					counts[i].outliers;
	}
	FILE *f = plot_data(pl, "layers.dat");
	fputs("# layer", f);
	for (int c = 0; c < ncomponents; c++)
		fprintf(f, "\t%s", names[c]);
	fputc('\n', f);
	for (int32_t l = 0; l < nlayers; l++) {
		fprintf(f, "%d", (int)(first_layer + l));
		for (int c = 0; c < ncomponents; c++)
			fprintf(f, "\t%lld", (long long)table[(size_t)l * (size_t)ncomponents + (size_t)c]);
		fputc('\n', f);
	}
	plot_data_close(pl, f, "layers.dat");
	char title[256], subtitle[512], criterion[160], note[128] = "";
	snprintf(title, sizeof title, "Outlier channels per layer: %lld/%lld (%.3f%%)",
	         (long long)in_layers, (long long)channels, percent(in_layers, channels));
	describe_criterion(&o->criteria.params, criterion, sizeof criterion);
	if (outside)
		snprintf(note, sizeof note, "; %lld more in points outside the layers", (long long)outside);
	snprintf(subtitle, sizeof subtitle, "%s%s", criterion, note);
	plot_comment(pl, "trace-plot layers of %s", at_reader_path(r));
	set_common(pl, o, title, subtitle, "Layer", "Outlier channels (count)");
	plot_var_string(pl, "data_file", "layers.dat");
	plot_var_int(pl, "layers", nlayers);
	plot_var_strings(pl, "series_names", names, ncomponents, 1);
	plot_var_strings(pl, "series_colors", colors, ncomponents, 0);
	free(table);
	free(names);
	free(colors);
	free(rows);
	free(per_point);
	free(counts);
}

/* ---------------------------------------------------------------- top */

/* The TOP_K largest |x| of distinct channels: the channels' own maxima. */
static int top_channels(const struct at_stats *s, double *top, int64_t *which)
{
	int found = 0;
	for (int64_t c = 0; c < s->channels; c++) {
		double v = s->absmax[c];
		if (s->count[c] == 0 || isnan(v) || (found == TOP_K && v <= top[TOP_K - 1]))
			continue;
		int at = found < TOP_K ? found++ : TOP_K - 1;
		for (; at > 0 && top[at - 1] < v; at--) {
			top[at] = top[at - 1];
			which[at] = which[at - 1];
		}
		top[at] = v;
		which[at] = c;
	}
	return found;
}

/* The TOP_K largest |x| at distinct positions, from the extremes (sorted by
 * |x|, so the first at a position is its largest): positions without an
 * extreme are not seen, and fewer than TOP_K may be found. */
static int top_positions(struct at_reader *r, const struct at_stats *s, double *top,
                         int64_t *which)
{
	int found = 0;
	for (int32_t e = 0; e < s->n_extremes && found < TOP_K; e++) {
		int32_t pos;
		struct at_error err;
		if (at_reader_read_tokens(r, s->extremes[e].token, 1, NULL, &pos, NULL, &err))
			cli_fail_at(&err);
		int seen = 0;
		for (int k = 0; k < found; k++)
			seen |= which[k] == pos;
		if (!seen) {
			top[found] = fabs(s->extremes[e].value);
			which[found++] = pos;
		}
	}
	return found;
}

static int top_elements(const struct at_stats *s, double *top, int64_t *which)
{
	int found = s->n_extremes < TOP_K ? s->n_extremes : TOP_K;
	for (int k = 0; k < found; k++) {
		top[k] = fabs(s->extremes[k].value);
		which[k] = s->extremes[k].channel;
	}
	return found;
}

static void plot_top(struct at_reader *r, const struct options *o, struct plot *pl)
{
	static const char *const what[] = {"channel", "channel", "position"};
	int32_t n;
	int32_t *chosen = site_points(r, o->site, &n);
	FILE *f = plot_data(pl, "top.dat");
	fprintf(f, "# layer\ttop1\ttop2\ttop3\tmedian\t%s1\t%s2\t%s3\n", what[o->distinct],
	        what[o->distinct], what[o->distinct]);
	int any = 0;
	for (int32_t i = 0; i < n; i++) {
		struct at_stats s;
		load_point(r, chosen[i], 1, &s);
		double top[TOP_K];
		int64_t which[TOP_K];
		int found = o->distinct == TOP_CHANNEL    ? top_channels(&s, top, which)
		            : o->distinct == TOP_POSITION ? top_positions(r, &s, top, which)
		                                          : top_elements(&s, top, which);
		fprintf(f, "%d", (int)at_reader_point(r, chosen[i])->layer);
		for (int k = 0; k < TOP_K; k++)
			fprintf(f, k < found ? "\t%.9g" : "\tNaN", k < found ? top[k] : 0.0);
		double median = an_hist_median_abs(&s);
		fprintf(f, "\t%.9g", isnan(median) ? NAN : median);
		for (int k = 0; k < TOP_K; k++)
			fprintf(f, k < found ? "\t%lld" : "\t-", k < found ? (long long)which[k] : 0LL);
		fputc('\n', f);
		any |= found > 0;
		at_stats_free(&s);
		cli_progress("reading points", i + 1, n);
	}
	cli_progress_done();
	plot_data_close(pl, f, "top.dat");
	if (!any)
		cli_fail(at_reader_path(r), "site '%s': no %s recorded (a trace of no tokens?)", o->site,
		         o->distinct == TOP_CHANNEL ? "values" : "extremes");
	static const char *const subtitles[] = {
		"the 3 largest |x| over all tokens and channels, and the median |x| (from the "
		"histogram, within 9%)",
		"the largest |x| of the 3 largest channels, and the median |x| (from the histogram, "
		"within 9%)",
		"the largest |x| at the 3 largest positions in the sequence (from the extremes), and "
		"the median |x| (from the histogram, within 9%)"};
	static const char *const series[][4] = {
		{"largest |x|", "2nd largest", "3rd largest", "median |x|"},
		{"largest channel", "2nd channel", "3rd channel", "median |x|"},
		{"largest position", "2nd position", "3rd position", "median |x|"}};
	char title[256];
	snprintf(title, sizeof title, "Largest activations per layer: %s", o->site);
	plot_comment(pl, "trace-plot top of %s, site %s, distinct %s", at_reader_path(r), o->site,
	             o->distinct == TOP_ELEMENT ? "element" : what[o->distinct]);
	set_common(pl, o, title, subtitles[o->distinct], "Layer", "Magnitude |x|");
	plot_var_string(pl, "data_file", "top.dat");
	plot_var_strings(pl, "series_names", series[o->distinct], 4, 1);
	plot_var_int(pl, "first_layer", at_reader_point(r, chosen[0])->layer);
	plot_var_int(pl, "last_layer", at_reader_point(r, chosen[n - 1])->layer);
	free(chosen);
}

/* ---------------------------------------------------------------- channels */

static void plot_channels(struct at_reader *r, const struct options *o, struct plot *pl)
{
	int32_t index;
	if (at_reader_find_point(r, o->point, &index))
		cli_fail(at_reader_path(r), "no point '%s' (trace-stats lists the points)", o->point);
	const struct at_point_info *info = at_reader_point(r, index);
	/* the layer-share condition looks at the site's other layers */
	int32_t n = 1, *chosen = &index, mine = 0;
	if (o->criteria.params.method == AN_FREQUENCY && o->criteria.params.freq_layers > 0) {
		chosen = site_points(r, info->site, &n);
		while (chosen[mine] != index)
			mine++;
	}
	struct an_outliers *per_point = xcalloc((size_t)n, sizeof *per_point);
	double **values = xcalloc((size_t)n, sizeof *values);
	flag_points(r, o, chosen, n, per_point, values);
	FILE *f = plot_data(pl, "channels.dat");
	fprintf(f, "# channel\t%s\toutlier\n", an_stat_name(o->stat));
	int64_t defined = 0;
	for (int64_t c = 0; c < info->channels; c++) {
		double v = values[mine][c];
		if (isnan(v))
			continue;
		fprintf(f, "%lld\t%.9g\t%d\n", (long long)c, v, an_outliers_has(&per_point[mine], c));
		defined++;
	}
	plot_data_close(pl, f, "channels.dat");
	if (defined == 0)
		cli_fail(at_reader_path(r), "%s: no values recorded (a trace of no tokens?)", o->point);
	int64_t outliers = per_point[mine].n;
	char title[256], subtitle[512], criterion[160];
	snprintf(title, sizeof title, "Outlier channels: %lld/%lld (%.3f%%)", (long long)outliers,
	         (long long)info->channels, percent(outliers, info->channels));
	describe_criterion(&o->criteria.params, criterion, sizeof criterion);
	snprintf(subtitle, sizeof subtitle, "%s, %s per channel; red: %s", o->point,
	         an_stat_name(o->stat), criterion);
	plot_comment(pl, "trace-plot channels of %s, point %s", at_reader_path(r), o->point);
	set_common(pl, o, title, subtitle, "Channel", stat_label(o->stat));
	plot_var_string(pl, "data_file", "channels.dat");
	plot_var_int(pl, "channels", info->channels);
	for (int32_t i = 0; i < n; i++) {
		free(values[i]);
		an_outliers_free(&per_point[i]);
	}
	free(values);
	free(per_point);
	if (chosen != &index)
		free(chosen);
}

/* ---------------------------------------------------------------- hist */

static void plot_hist(struct at_reader *r, const struct options *o, struct plot *pl)
{
	int32_t index;
	if (at_reader_find_point(r, o->point, &index))
		cli_fail(at_reader_path(r), "no point '%s' (trace-stats lists the points)", o->point);
	const struct at_point_info *info = at_reader_point(r, index);
	if (!info->has_hist)
		cli_fail(at_reader_path(r), "%s: no |x| histogram in this trace", o->point);
	if (o->channel >= info->channels)
		cli_fail(at_reader_path(r), "%s has %lld channels: no channel %lld", o->point,
		         (long long)info->channels, (long long)o->channel);
	struct at_stats s;
	load_point(r, index, 1, &s);
	uint64_t bins[AT_HIST_BINS] = {0}, total = 0;
	for (int64_t c = o->channel < 0 ? 0 : o->channel;
	     c < (o->channel < 0 ? s.channels : o->channel + 1); c++)
		for (int b = 0; b < AT_HIST_BINS; b++)
			bins[b] += s.hist[c * AT_HIST_BINS + b];
	at_stats_free(&s);
	FILE *f = plot_data(pl, "hist.dat");
	fputs("# lower\tupper\tcount\n", f);
	/* bin 0 holds the zeros and bin 1 the values below 2^MIN_EXP: no log-axis place */
	for (int b = 2; b < AT_HIST_BINS; b++) {
		total += bins[b];
		if (bins[b] == 0)
			continue;
		double lower = at_hist_lower_edge(b);
		double upper = b + 1 < AT_HIST_BINS ? at_hist_lower_edge(b + 1) : lower * exp2(0.25);
		fprintf(f, "%.9g\t%.9g\t%llu\n", lower, upper, (unsigned long long)bins[b]);
	}
	plot_data_close(pl, f, "hist.dat");
	if (total == 0)
		cli_fail(at_reader_path(r), "%s: no nonzero values recorded", o->point);
	char title[512], subtitle[512], hidden[160] = "";
	if (o->channel >= 0)
		snprintf(title, sizeof title, "|x| histogram: %s, channel %lld", o->point,
		         (long long)o->channel);
	else
		snprintf(title, sizeof title, "|x| histogram: %s", o->point);
	if (bins[0] || bins[1])
		snprintf(hidden, sizeof hidden, "; not drawn: %llu zeros, %llu below 2^%d",
		         (unsigned long long)bins[0], (unsigned long long)bins[1], AT_HIST_MIN_EXP);
	snprintf(subtitle, sizeof subtitle, "%llu values in bins 2^(1/4) wide%s",
	         (unsigned long long)(total + bins[0] + bins[1]), hidden);
	plot_comment(pl, "trace-plot hist of %s, point %s", at_reader_path(r), o->point);
	set_common(pl, o, title, subtitle, "Magnitude |x|", "Values per bin (count)");
	plot_var_string(pl, "data_file", "hist.dat");
}

/* ---------------------------------------------------------------- sweep */

struct series {
	char *name;
	FILE *rows; /* threshold, value: in memory (open_memstream holds &text, &size) */
	char *text;
	size_t size;
	double largest; /* orders the key as the lines lie, top down */
};

struct sweep {
	struct series **series; /* each allocated alone: the streams point into them */
	int n;
	const char **names, **colors; /* of the series as written (write_series) */
};

static struct series *series_named(struct sweep *sw, const char *name)
{
	for (int i = 0; i < sw->n; i++)
		if (strcmp(sw->series[i]->name, name) == 0)
			return sw->series[i];
	struct series **grown = realloc(sw->series, (size_t)(sw->n + 1) * sizeof *grown);
	struct series *s = calloc(1, sizeof *s);
	if (!grown || !s)
		cli_fail(NULL, "out of memory");
	sw->series = grown;
	sw->series[sw->n++] = s;
	s->name = strdup(name);
	s->largest = -INFINITY;
	s->rows = open_memstream(&s->text, &s->size);
	if (!s->name || !s->rows)
		cli_fail(NULL, "out of memory");
	return s;
}

static void series_add(struct series *s, double threshold, double value)
{
	fprintf(s->rows, "%.9g\t%.9g\n", threshold, value);
	if (value > s->largest)
		s->largest = value;
}

static int compare_series(const void *pa, const void *pb)
{
	const struct series *a = *(struct series *const *)pa, *b = *(struct series *const *)pb;
	return (a->largest < b->largest) - (a->largest > b->largest);
}

static double field_number(const struct tsv_reader *t, int column)
{
	double v;
	const char *s = t->fields[column];
	if (strcmp(s, "nan") == 0 || strcmp(s, "NaN") == 0)
		return NAN;
	if (cli_parse_double(s, &v))
		cli_fail(t->name, "line %ld: %s is not a number: '%s'", t->line, t->columns[column], s);
	return v;
}

/* Component mode: one series per component (and file, when several). */
static void read_components(struct tsv_reader *t, const char *metric, struct sweep *sw)
{
	int threshold = tsv_column(t, "threshold"), component = tsv_column(t, "component");
	int file = tsv_column(t, "file");
	int pct = strcmp(metric, "pct") == 0 && tsv_column(t, "pct") < 0;
	int value = pct ? tsv_column(t, "outliers") : tsv_column(t, metric);
	int channels = tsv_column(t, "channels");
	if (value < 0 || (pct && channels < 0))
		cli_fail(t->name, "no column '%s'%s", pct ? "outliers" : metric,
		         pct ? " or channels (needed for pct)" : "");
	int need = value > threshold ? value : threshold;
	need = need > component ? need : component;
	need = need > file ? need : file;
	need = need > channels ? need : channels;
	struct at_error err = {0};
	int rc;
	while ((rc = tsv_next(t, need + 1, &err)) == 1) {
		char name[256];
		if (file >= 0)
			snprintf(name, sizeof name, "%s: %s", t->fields[file], t->fields[component]);
		else
			snprintf(name, sizeof name, "%s", t->fields[component]);
		double y = field_number(t, value);
		if (pct) {
			double whole = field_number(t, channels);
			y = whole > 0 ? 100 * y / whole : NAN;
		}
		series_add(series_named(sw, name), field_number(t, threshold), y);
	}
	if (rc < 0)
		cli_fail_at(&err);
}

/* Metric mode: one series per column other than the threshold that holds
 * numbers in the first row (so that a `file` column is left out). */
static void read_metrics(struct tsv_reader *t, struct sweep *sw)
{
	int threshold = tsv_column(t, "threshold");
	struct at_error err = {0};
	char *numeric = xcalloc((size_t)t->ncolumns, 1);
	int rc, first = 1;
	while ((rc = tsv_next(t, t->ncolumns, &err)) == 1) {
		for (int c = 0; first && c < t->ncolumns; c++) {
			double v;
			const char *s = t->fields[c];
			numeric[c] = c != threshold && (cli_parse_double(s, &v) == 0 ||
			                                strcmp(s, "nan") == 0 || strcmp(s, "NaN") == 0);
			if (numeric[c])
				series_named(sw, t->columns[c]);
		}
		first = 0;
		double x = field_number(t, threshold);
		for (int c = 0, s = 0; c < t->ncolumns; c++)
			if (numeric[c])
				series_add(sw->series[s++], x, field_number(t, c));
	}
	if (rc < 0)
		cli_fail_at(&err);
	free(numeric);
}

/* The table to draw, FILE or standard input (none or "-"), its header read. */
static FILE *open_table(const struct options *o, struct tsv_reader *t)
{
	const char *name = o->input && strcmp(o->input, "-") != 0 ? o->input : "-";
	FILE *in = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
	if (!in)
		cli_fail(name, "cannot open: %s", strerror(errno));
	struct at_error err = {0};
	if (tsv_open(t, in, name, &err))
		cli_fail_at(&err);
	return in;
}

/* The series, largest first, as gnuplot `index` blocks (two blank lines
 * apart) in the data file; by component, each in its component's colour. */
static void write_series(struct plot *pl, struct sweep *sw, const char *file, int by_component)
{
	qsort(sw->series, (size_t)sw->n, sizeof *sw->series, compare_series);
	FILE *f = plot_data(pl, file);
	sw->names = xcalloc((size_t)sw->n, sizeof *sw->names);
	sw->colors = xcalloc((size_t)sw->n, sizeof *sw->colors);
	for (int i = 0; i < sw->n; i++) {
		struct series *s = sw->series[i];
		if (fclose(s->rows) != 0)
			cli_fail(NULL, "out of memory");
		fprintf(f, "# %s\n%s\n\n", s->name, s->text);
		sw->names[i] = s->name;
		sw->colors[i] = by_component ? component_color(s->name, i) : component_color("", i);
	}
	plot_data_close(pl, f, file);
}

static void series_variables(struct plot *pl, const struct sweep *sw, const char *file)
{
	plot_var_string(pl, "data_file", file);
	plot_var_strings(pl, "series_names", sw->names, sw->n, 1);
	plot_var_strings(pl, "series_colors", sw->colors, sw->n, 0);
}

static void free_series(struct sweep *sw)
{
	for (int i = 0; i < sw->n; i++) {
		free(sw->series[i]->name);
		free(sw->series[i]->text);
		free(sw->series[i]);
	}
	free(sw->series);
	free(sw->names);
	free(sw->colors);
}

static void plot_sweep(const struct options *o, struct plot *pl)
{
	struct tsv_reader t;
	FILE *in = open_table(o, &t);
	const char *name = t.name;
	if (tsv_column(&t, "threshold") < 0)
		cli_fail(name, "no column 'threshold' (a table from trace-outliers --sweep?)");
	int by_component = tsv_column(&t, "component") >= 0;
	if (!by_component && o->metric)
		cli_usage_error("--metric picks a column of a table with a component column");
	const char *metric = o->metric ? o->metric : "outliers";
	struct sweep sw = {0};
	if (by_component)
		read_components(&t, metric, &sw);
	else
		read_metrics(&t, &sw);
	tsv_close(&t);
	if (in != stdin)
		fclose(in);
	/* series are made by rows: none means no rows */
	if (sw.n == 0)
		cli_fail(name, "no rows to draw");
	write_series(pl, &sw, "sweep.dat", by_component);
	const char *ylabel = !by_component ? "Value"
	                     : strcmp(metric, "outliers") == 0 ? "Outlier channels (count)"
	                     : strcmp(metric, "pct") == 0 ? "Outlier channels (% of channels)"
	                                                    : metric;
	char subtitle[512];
	snprintf(subtitle, sizeof subtitle, "%s", strcmp(name, "-") == 0 ? "" : name);
	plot_comment(pl, "trace-plot sweep of %s", name);
	set_common(pl, o, by_component ? "Outlier channels per threshold" : "Metrics per threshold",
	           subtitle, "Threshold", ylabel);
	series_variables(pl, &sw, "sweep.dat");
	free_series(&sw);
}

/* ---------------------------------------------------------------- quant, diff */

/* A per-point table's metric averaged over each layer's points, one series
 * per group of rows: trace-quant's bits and scope, trace-diff's component. */
struct layer_means {
	char name[96];
	double *sum;
	int64_t *n;
	int layers;
};

static struct layer_means *means_named(struct layer_means **all, int *n, const char *name)
{
	for (int i = 0; i < *n; i++)
		if (strcmp((*all)[i].name, name) == 0)
			return &(*all)[i];
	struct layer_means *grown = realloc(*all, (size_t)(*n + 1) * sizeof *grown);
	if (!grown)
		cli_fail(NULL, "out of memory");
	*all = grown;
	struct layer_means *m = &grown[(*n)++];
	*m = (struct layer_means){0};
	snprintf(m->name, sizeof m->name, "%s", name);
	return m;
}

static void means_add(struct layer_means *m, int layer, double v)
{
	if (layer >= m->layers) {
		int grow = layer + 1;
		double *sum = realloc(m->sum, (size_t)grow * sizeof *sum);
		int64_t *n = realloc(m->n, (size_t)grow * sizeof *n);
		if (!sum || !n)
			cli_fail(NULL, "out of memory");
		for (int i = m->layers; i < grow; i++) {
			sum[i] = 0;
			n[i] = 0;
		}
		m->sum = sum;
		m->n = n;
		m->layers = grow;
	}
	m->sum[layer] += v;
	m->n[layer]++;
}

struct table_kind {
	const char *from;     /* the tool whose table it is */
	const char *metric;   /* the default column */
	const char *ylabel;   /* what the default column is */
	const char *title;
	const char *group[2]; /* the columns whose values name a series */
	const char *group_format;
};

static const struct table_kind quant_table = {
	"trace-quant", "sqnr_hist_db", "SQNR from the histograms (dB)",
	"Quantization error per layer", {"bits", "scope"},
	"INT%s per %s"};
static const struct table_kind diff_table = {
	"trace-diff", "jaccard", "Jaccard index of the outlier sets",
	"Trace comparison per layer", {"component", NULL}, "%s%s"};

static void plot_layer_table(const struct options *o, struct plot *pl,
                             const struct table_kind *tk)
{
	struct tsv_reader t;
	FILE *in = open_table(o, &t);
	const char *name = t.name;
	struct at_error err = {0};
	const char *metric = o->metric ? o->metric : tk->metric;
	int layer = tsv_column(&t, "layer"), value = tsv_column(&t, metric);
	int g0 = tsv_column(&t, tk->group[0]), g1 = tk->group[1] ? tsv_column(&t, tk->group[1]) : -1;
	int site = tsv_column(&t, "site");
	if (layer < 0 || g0 < 0 || (tk->group[1] && g1 < 0))
		cli_fail(name, "no column 'layer' or '%s' (a per-point table from %s?)", tk->group[0],
		         tk->from);
	if (value < 0)
		cli_fail(name, "no column '%s' to draw", metric);
	if (o->site && site < 0)
		cli_fail(name, "no column 'site' for --site");
	int need = layer;
	int cols[] = {value, g0, g1, site};
	for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
		need = cols[i] > need ? cols[i] : need;
	struct layer_means *all = NULL;
	int n = 0, rc;
	while ((rc = tsv_next(&t, need + 1, &err)) == 1) {
		double l = field_number(&t, layer), v = field_number(&t, value);
		if (!(l >= 0) || !isfinite(v) || (o->site && strcmp(t.fields[site], o->site) != 0))
			continue; /* outside the layers, or nothing to average */
		char series[96];
		snprintf(series, sizeof series, tk->group_format, t.fields[g0],
		         g1 >= 0 ? t.fields[g1] : "");
		means_add(means_named(&all, &n, series), (int)l, v);
	}
	if (rc < 0)
		cli_fail_at(&err);
	tsv_close(&t);
	if (in != stdin)
		fclose(in);
	if (n == 0)
		cli_fail(name, "no rows of the layers with a finite '%s'%s%s", metric,
		         o->site ? " at site " : "", o->site ? o->site : "");
	struct sweep sw = {0};
	int *all_layers = xcalloc((size_t)n, sizeof *all_layers);
	for (int i = 0; i < n; i++) {
		all_layers[i] = all[i].layers;
		struct series *s = series_named(&sw, all[i].name);
		for (int l = 0; l < all[i].layers; l++)
			if (all[i].n[l] > 0)
				series_add(s, l, all[i].sum[l] / (double)all[i].n[l]);
		free(all[i].sum);
		free(all[i].n);
	}
	free(all);
	write_series(pl, &sw, "table.dat", tk == &diff_table);
	char subtitle[512];
	snprintf(subtitle, sizeof subtitle, "%s, the mean over %s of each layer%s%s",
	         strcmp(name, "-") == 0 ? tk->from : name, o->site ? "the points" : "its points",
	         o->site ? " at site " : "", o->site ? o->site : "");
	int layers = 0;
	for (int i = 0; i < n; i++)
		layers = all_layers[i] > layers ? all_layers[i] : layers;
	plot_comment(pl, "trace-plot %s of %s", kind_names[o->kind], name);
	set_common(pl, o, tk->title, subtitle, "Layer",
	           strcmp(metric, tk->metric) == 0 ? tk->ylabel : metric);
	plot_var_int(pl, "x_step", layers > 12 ? (layers + 11) / 12 : 1);
	series_variables(pl, &sw, "table.dat");
	free_series(&sw);
	free(all_layers);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	struct options o;
	cli_init(argv[0]);
	parse_args(argc, argv, &o);
	const char *kind = kind_names[o.kind];
	char default_output[32];
	if (!o.output) {
		if (!o.script_dir)
			cli_usage_error("no output file given (-o OUT)");
		snprintf(default_output, sizeof default_output, "%s.png", kind);
		o.output = default_output;
	}
	struct plot pl = {.kind = kind, .output = o.output, .script_dir = o.script_dir,
	                  .quiet = cli_quiet};
	if (plot_term_from_path(o.output, &pl.term)) {
		const char *slash = strrchr(o.output, '/');
		const char *dot = strrchr(slash ? slash + 1 : o.output, '.');
		cli_usage_error("%s: no terminal for %s%s%s (.png, .svg, .pdf or .tex)", o.output,
		                dot ? "extension '" : "a file without an extension", dot ? dot : "",
		                dot ? "'" : "");
	}
	plot_set_terminal(&pl, o.size, o.font, o.kind == KIND_BARS3D ? 1280 : 1200,
	                  o.kind == KIND_BARS3D ? 900 : 750);
	/* quant and diff draw lines as sweep does, with its template */
	char *template_path = plot_find_template(draws_table(o.kind) ? "sweep" : kind,
	                                         o.template_path);
	pl.template_path = template_path;
	char *gnuplot = o.script_dir ? NULL : plot_find_gnuplot();
	pl.gnuplot = gnuplot;
	if (draws_table(o.kind)) {
		plot_begin(&pl);
		if (o.kind == KIND_SWEEP)
			plot_sweep(&o, &pl);
		else
			plot_layer_table(&o, &pl, o.kind == KIND_QUANT ? &quant_table : &diff_table);
	} else {
		struct at_reader *r = cli_open_trace(o.input);
		plot_begin(&pl);
		switch (o.kind) {
		case KIND_BARS3D: plot_bars3d(r, &o, &pl); break;
		case KIND_LAYERS: plot_layers(r, &o, &pl); break;
		case KIND_TOP: plot_top(r, &o, &pl); break;
		case KIND_CHANNELS: plot_channels(r, &o, &pl); break;
		default: plot_hist(r, &o, &pl); break;
		}
		cli_close_trace(r);
	}
	plot_finish(&pl);
	free(template_path);
	free(gnuplot);
	return CLI_EXIT_OK;
}
