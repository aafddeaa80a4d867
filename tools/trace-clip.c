/* trace-clip: the clipping bounds of a trace's outlier channels (the table
 * that trace-capture --clip and acttrace.clip read), and the share of values
 * the clamp would change, estimated from the trace alone.  The bounds and
 * rates live in analysis/clip.c. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"

struct options {
	struct copts criteria;
	double k_clip;
	int k_clip_given;
	int all_channels; /* every channel of the selected points, not the outliers */
	const char *rates_path;
	struct cli_selection select;
	int header;
	/* --sweep: every k_outlier (the criterion's k) with every k_clip */
	double *sweep_ko, *sweep_kc;
	int n_ko, n_kc;
	const char *tables_dir;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTIONS] --k-clip K FILE\n"
	       "       %s [OPTIONS] --sweep K1,K2,...xC1,C2,... [--tables DIR] FILE\n"
	       "Clipping bounds of a trace's outlier channels, mean -+ K sigma each (the\n"
	       "RecurrentGemma study's eq. 3.1): the table trace-capture --clip reads,\n"
	       "TSV on standard output (point channel lower upper, exact to the bit).\n"
	       "\n"
	       "Channels (the outliers under a criterion, as trace-outliers):\n"
	       "%s"
	       "  -a, --all              every channel of the selected points instead\n"
	       "\n"
	       "Bounds:\n"
	       "  -K, --k-clip=K         mean -+ K sigma, sigma = sqrt(M2 / (n - 1)) (required)\n"
	       "  -r, --rates=FILE       write the share of values the clamp changes, per\n"
	       "                         point and in total (TSV; needs histograms)\n"
	       "  -s, --sweep=KOxKC      the study's grid: every k_outlier in the list KO\n"
	       "                         (the criterion's -k) with every k_clip in KC, the\n"
	       "                         rates per cell and component on standard output\n"
	       "  -t, --tables=DIR       with --sweep: DIR/bounds-kKO-KKC.tsv, each cell's\n"
	       "                         bounds table\n"
	       "%s"
	       "Format:\n"
	       "  -H, --no-header        omit the header lines\n"
	       "  -q, --quiet            no progress, no warnings\n"
	       "  -h, --help             this help\n"
	       "      --version          print the version\n"
	       "\n"
	       "The rates: from the |x| histogram a bracket [rate_low, rate_high] (a bin\n"
	       "straddling a bound counts in rate_high only), and, where the trace has\n"
	       "samples, the exact share on them.  See trace-clip(1).\n",
	       cli_prog, cli_prog, copts_help(), cli_selection_help());
	exit(CLI_EXIT_OK);
}

/* A comma-separated list of numbers >= 0 (at most 64 of them). */
static int parse_list(const char *text, const char *what, double **out)
{
	double *v = malloc(64 * sizeof *v);
	if (!v)
		cli_fail(NULL, "out of memory");
	int n = cli_parse_list(text, v, 64);
	for (int i = 0; i < n; i++)
		if (!(v[i] >= 0) || !isfinite(v[i]))
			n = -1;
	if (n < 0)
		cli_usage_error("--sweep: the %s list '%s' is not numbers >= 0 (64 at most)", what,
		                text);
	*out = v;
	return n;
}

/* KO_LIST x KC_LIST, e.g. 4,6,8x1,2,3 */
static void parse_sweep(const char *arg, struct options *o)
{
	const char *x = strchr(arg, 'x');
	if (!x)
		cli_usage_error("--sweep wants K_OUTLIERSxK_CLIPS (e.g. 4,6x1,2), not '%s'", arg);
	char ko[512];
	snprintf(ko, sizeof ko, "%.*s", (int)(x - arg), arg);
	o->n_ko = parse_list(ko, "k_outlier", &o->sweep_ko);
	o->n_kc = parse_list(x + 1, "k_clip", &o->sweep_kc);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_VERSION = 512, OPT_COMPONENT };
	static const struct option own[] = {
		{"k-clip", required_argument, NULL, 'K'}, {"all", no_argument, NULL, 'a'},
		{"rates", required_argument, NULL, 'r'},  {"point", required_argument, NULL, 'p'},
		{"sweep", required_argument, NULL, 's'},  {"tables", required_argument, NULL, 't'},
		{"component", required_argument, NULL, OPT_COMPONENT},
		{"layers", required_argument, NULL, 'l'}, {"no-header", no_argument, NULL, 'H'},
		{"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
	};
	struct option longopts[64];
	copts_longopts_with(longopts, 64, own, sizeof own / sizeof own[0]);
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "%sK:ar:s:t:p:l:Hqh", copts_shortopts());

	*o = (struct options){.header = 1};
	cli_selection_init(&o->select);
	copts_init(&o->criteria);
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criteria, opt, optarg) ||
		    cli_selection_option(&o->select, opt, optarg, OPT_COMPONENT))
			continue;
		switch (opt) {
		case 'K':
			if (cli_parse_double(optarg, &o->k_clip) || !(o->k_clip >= 0) || !isfinite(o->k_clip))
				cli_usage_error("--k-clip wants a finite number >= 0, not '%s'", optarg);
			o->k_clip_given = 1;
			break;
		case 'a': o->all_channels = 1; break;
		case 'r': o->rates_path = optarg; break;
		case 's': parse_sweep(optarg, o); break;
		case 't': o->tables_dir = optarg; break;
		case 'H': o->header = 0; break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (o->n_ko) {
		if (o->k_clip_given || o->rates_path || o->all_channels)
			cli_usage_error("--sweep sets k_clip and writes the rates: no -K, -r or --all");
	} else if (!o->k_clip_given) {
		cli_usage_error("--k-clip K is required");
	} else if (o->tables_dir) {
		cli_usage_error("--tables goes with --sweep");
	}
	if (o->all_channels && o->criteria.given)
		cli_usage_error("--all takes every channel: it cannot be combined with a criterion");
	if (optind == argc)
		cli_usage_error("no trace file given");
	if (argc - optind > 1)
		cli_usage_error("one trace at a time (the bounds table names points, not traces)");
	copts_finish(&o->criteria);
	if (!o->all_channels && an_method_is_elementwise(o->criteria.params.method))
		cli_usage_error("-m %s flags elements, not channels to clamp",
		                an_method_name(o->criteria.params.method));
	enum an_method m = o->criteria.params.method;
	if (o->n_ko && m != AN_GRAND_MEAN && m != AN_LAYER_SIGMA && m != AN_MAD && m != AN_KURTOSIS)
		cli_usage_error("--sweep varies -k: -m %s has none", an_method_name(m));
	return optind;
}

/* ---------------------------------------------------------------- channels */

/* The criterion's outliers of every point (the frequency method's layer
 * condition looks across points), or NULL with --all. */
static struct an_outliers *find_outliers(struct at_reader *r, const struct options *o)
{
	return o->all_channels ? NULL : copts_outliers(r, &o->criteria.params);
}

/* ---------------------------------------------------------------- rates */

struct rates {
	struct cli_out_file file; /* file.f is NULL without --rates */
	struct cli_table table;
	struct an_clip_rate total_hist, total_samples;
	int64_t total_channels;
};

static const char *const rate_columns[] = {
	"point", "layer", "component", "site", "channels", "values", "clipped_low",
	"clipped_high", "rate_low", "rate_high", "sample_values", "sample_clipped", "sample_rate"};

/* The rates go to a temporary file beside FILE, renamed over it at the end:
 * a failure leaves no half-written table. */
static void rates_begin(struct rates *rt, const struct options *o)
{
	memset(rt, 0, sizeof *rt);
	if (!o->rates_path)
		return;
	cli_out_open(&rt->file, o->rates_path);
	cli_table_begin(&rt->table, rt->file.f, CLI_TSV, o->header, rate_columns,
	                (int)(sizeof rate_columns / sizeof rate_columns[0]));
	rt->table.digits = 9;
}

static double share(uint64_t part, uint64_t whole)
{
	return whole ? (double)part / (double)whole : NAN;
}

static void rates_row(struct rates *rt, const char *name, int32_t layer, const char *component,
                      const char *site, int64_t channels, const struct an_clip_rate *h,
                      const struct an_clip_rate *smp)
{
	struct cli_table *t = &rt->table;
	cli_table_str(t, name);
	cli_table_int(t, layer);
	cli_table_str(t, component);
	cli_table_str(t, site);
	cli_table_int(t, channels);
	cli_table_uint(t, h->values);
	cli_table_uint(t, h->low);
	cli_table_uint(t, h->high);
	cli_table_double(t, share(h->low, h->values));
	cli_table_double(t, share(h->high, h->values));
	cli_table_uint(t, smp->values);
	cli_table_uint(t, smp->low);
	cli_table_double(t, share(smp->low, smp->values));
	cli_table_end_row(t);
}

static void add_rate(struct an_clip_rate *to, const struct an_clip_rate *r)
{
	to->values += r->values;
	to->low += r->low;
	to->high += r->high;
}

static void rates_end(struct rates *rt)
{
	if (!rt->file.f)
		return;
	rates_row(rt, "total", -1, "all", "all", rt->total_channels, &rt->total_hist,
	          &rt->total_samples);
	cli_out_commit(&rt->file);
}

/* ---------------------------------------------------------------- one point */

static void clip_point(struct at_reader *r, int32_t index, const struct options *o,
                       const struct an_outliers *flags, struct cli_table *bounds,
                       struct rates *rt, struct cli_prefetch *pf)
{
	const struct at_point_info *p = at_reader_point(r, index);
	int rates = rt->file.f != NULL;
	struct at_stats s;
	cli_prefetch_take(pf, index, &s);
	float *samples = rates ? cli_load_samples(r, index, NULL) : NULL;
	struct an_clip_rate hist_sum = {0}, sample_sum = {0};
	int64_t n = o->all_channels ? p->channels : flags->n, clamped = 0, empty = 0;
	for (int64_t i = 0; i < n; i++) {
		int64_t c = o->all_channels ? i : flags->flags[i].channel;
		double lower, upper;
		if (an_clip_bounds(&s, c, o->k_clip, &lower, &upper) != AT_OK) {
			empty++; /* no values: nothing to bound */
			continue;
		}
		cli_table_str(bounds, p->name);
		cli_table_int(bounds, c);
		cli_table_double(bounds, lower);
		cli_table_double(bounds, upper);
		cli_table_end_row(bounds);
		clamped++;
		if (!rates)
			continue;
		struct an_clip_rate h, smp = {0};
		an_clip_rate_hist(&s, c, lower, upper, &h);
		add_rate(&hist_sum, &h);
		if (samples) {
			an_clip_rate_samples(samples, p->samples, p->channels, c, lower, upper, &smp);
			add_rate(&sample_sum, &smp);
		}
	}
	if (empty && !cli_quiet)
		cli_warn(at_reader_path(r), "point '%s': %lld chosen channels have no values: no bounds",
		         p->name, (long long)empty);
	if (rates) {
		rates_row(rt, p->name, p->layer, p->component, p->site, clamped, &hist_sum, &sample_sum);
		add_rate(&rt->total_hist, &hist_sum);
		add_rate(&rt->total_samples, &sample_sum);
		rt->total_channels += clamped;
	}
	free(samples);
	cli_prefetch_recycle(pf, &s);
}

/* ---------------------------------------------------------------- the sweep */

/* The RecurrentGemma study's (k_outlier, k_clip) grid: per cell and
 * component, the channels clipped and the clip rate, with each cell's bounds
 * table on request.  Each point is read once: its outliers under every
 * k_outlier, their bounds under every k_clip. */

#define MAX_COMPONENTS 32

struct cell_sum {
	int64_t channels;
	struct an_clip_rate hist, samples;
};

struct sweep {
	const struct options *o;
	const char *components[MAX_COMPONENTS];
	int ncomponents;
	struct cell_sum *sums;         /* [ko][kc][component] */
	struct cli_out_file *tables;   /* [ko][kc], or NULL without --tables */
};

static struct cell_sum *cell(struct sweep *sw, int a, int b, int comp)
{
	return &sw->sums[((size_t)a * (size_t)sw->o->n_kc + (size_t)b) * MAX_COMPONENTS + (size_t)comp];
}

static int component_index(struct sweep *sw, const char *name, const char *path)
{
	for (int i = 0; i < sw->ncomponents; i++)
		if (!strcmp(sw->components[i], name))
			return i;
	if (sw->ncomponents == MAX_COMPONENTS)
		cli_fail(path, "more than %d components", MAX_COMPONENTS);
	sw->components[sw->ncomponents] = name;
	return sw->ncomponents++;
}

/* One table per cell, written to a temporary beside its name and renamed at
 * the end; DIR is created when missing. */
static void open_tables(struct sweep *sw)
{
	const struct options *o = sw->o;
	if (!o->tables_dir)
		return;
	if (mkdir(o->tables_dir, 0777) != 0 && errno != EEXIST)
		cli_fail(o->tables_dir, "cannot create the directory: %s", strerror(errno));
	sw->tables = calloc((size_t)(o->n_ko * o->n_kc), sizeof *sw->tables);
	if (!sw->tables)
		cli_fail(NULL, "out of memory");
	for (int a = 0; a < o->n_ko; a++) {
		for (int b = 0; b < o->n_kc; b++) {
			char path[4096];
			snprintf(path, sizeof path, "%s/bounds-k%g-K%g.tsv", o->tables_dir,
			         o->sweep_ko[a], o->sweep_kc[b]);
			struct cli_out_file *t = &sw->tables[a * o->n_kc + b];
			cli_out_open(t, path);
			if (o->header)
				fputs("point\tchannel\tlower\tupper\n", t->f);
		}
	}
}

static void close_tables(struct sweep *sw)
{
	for (int i = 0; sw->tables && i < sw->o->n_ko * sw->o->n_kc; i++)
		cli_out_commit(&sw->tables[i]);
	free(sw->tables);
}

/* Every cell's outliers, bounds and rates of one point. */
static void sweep_point(struct sweep *sw, struct at_reader *r, int32_t index,
                        struct cli_prefetch *pf)
{
	const struct options *o = sw->o;
	const struct at_point_info *p = at_reader_point(r, index);
	struct at_stats s;
	struct at_error err = {0};
	cli_prefetch_take(pf, index, &s);
	float *samples = cli_load_samples(r, index, NULL);
	int comp = component_index(sw, p->component, at_reader_path(r));
	struct an_params params = o->criteria.params;
	for (int a = 0; a < o->n_ko; a++) {
		params.k = o->sweep_ko[a];
		struct an_outliers out;
		if (an_channel_outliers(&s, &params, &out, &err))
			cli_fail(at_reader_path(r), "point '%s': %s", p->name, err.message);
		for (int b = 0; b < o->n_kc; b++) {
			struct cell_sum *sum = cell(sw, a, b, comp);
			FILE *table = sw->tables ? sw->tables[a * o->n_kc + b].f : NULL;
			for (int64_t i = 0; i < out.n; i++) {
				int64_t c = out.flags[i].channel;
				double lower, upper;
				if (an_clip_bounds(&s, c, o->sweep_kc[b], &lower, &upper) != AT_OK)
					continue;
				if (table)
					fprintf(table, "%s\t%lld\t%.17g\t%.17g\n", p->name, (long long)c, lower,
					        upper);
				struct an_clip_rate h, smp = {0};
				an_clip_rate_hist(&s, c, lower, upper, &h);
				add_rate(&sum->hist, &h);
				if (samples) {
					an_clip_rate_samples(samples, p->samples, p->channels, c, lower, upper,
					                     &smp);
					add_rate(&sum->samples, &smp);
				}
				sum->channels++;
			}
		}
		an_outliers_free(&out);
	}
	free(samples);
	cli_prefetch_recycle(pf, &s);
}

static void sweep_row(struct cli_table *t, double ko, double kc, const char *component,
                      const struct cell_sum *c)
{
	cli_table_double(t, ko);
	cli_table_double(t, kc);
	cli_table_str(t, component);
	cli_table_int(t, c->channels);
	cli_table_uint(t, c->hist.values);
	cli_table_uint(t, c->hist.low);
	cli_table_uint(t, c->hist.high);
	cli_table_double(t, share(c->hist.low, c->hist.values));
	cli_table_double(t, share(c->hist.high, c->hist.values));
	cli_table_uint(t, c->samples.values);
	cli_table_uint(t, c->samples.low);
	cli_table_double(t, share(c->samples.low, c->samples.values));
	cli_table_end_row(t);
}

static void print_sweep(struct sweep *sw)
{
	static const char *const columns[] = {
		"k_outlier", "k_clip", "component", "channels", "values", "clipped_low",
		"clipped_high", "rate_low", "rate_high", "sample_values", "sample_clipped",
		"sample_rate"};
	const struct options *o = sw->o;
	struct cli_table t;
	cli_table_begin(&t, stdout, CLI_TSV, o->header, columns,
	                (int)(sizeof columns / sizeof columns[0]));
	t.digits = 9;
	for (int a = 0; a < o->n_ko; a++) {
		for (int b = 0; b < o->n_kc; b++) {
			struct cell_sum all = {0};
			for (int c = 0; c < sw->ncomponents; c++) {
				const struct cell_sum *one = cell(sw, a, b, c);
				sweep_row(&t, o->sweep_ko[a], o->sweep_kc[b], sw->components[c], one);
				all.channels += one->channels;
				add_rate(&all.hist, &one->hist);
				add_rate(&all.samples, &one->samples);
			}
			sweep_row(&t, o->sweep_ko[a], o->sweep_kc[b], "all", &all);
		}
	}
	cli_table_end(&t);
}

static void run_sweep(struct at_reader *r, const struct options *o)
{
	struct sweep sw = {.o = o};
	sw.sums = calloc((size_t)o->n_ko * (size_t)o->n_kc * MAX_COMPONENTS, sizeof *sw.sums);
	if (!sw.sums)
		cli_fail(NULL, "out of memory");
	open_tables(&sw);
	int32_t n = at_reader_info(r)->points, chosen = 0;
	int32_t *points = cli_selected_points(r, &o->select, &chosen);
	struct cli_prefetch *pf = cli_prefetch_start(r, points, chosen, 1, "--sweep");
	for (int32_t k = 0; k < chosen; k++) {
		sweep_point(&sw, r, points[k], pf);
		cli_progress("points", points[k] + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	free(points);
	if (chosen == 0 && !cli_quiet)
		cli_warn(at_reader_path(r), "warning: no point matches the selection");
	close_tables(&sw);
	print_sweep(&sw);
	free(sw.sums);
}

int main(int argc, char **argv)
{
	cli_init(argv[0]);
	struct options o;
	int first = parse_args(argc, argv, &o);
	const char *path = argv[first];
	struct at_reader *r = cli_open_trace(path);
	if (o.n_ko) {
		run_sweep(r, &o);
		cli_close_trace(r);
		free(o.sweep_ko);
		free(o.sweep_kc);
		return CLI_EXIT_OK;
	}
	struct an_outliers *per_point = find_outliers(r, &o);
	struct rates rt;
	rates_begin(&rt, &o);
	static const char *const columns[] = {"point", "channel", "lower", "upper"};
	struct cli_table bounds;
	cli_table_begin(&bounds, stdout, CLI_TSV, o.header, columns, 4);
	bounds.digits = 17; /* %.17g: every double reads back as itself */
	int32_t n = at_reader_info(r)->points, chosen = 0;
	int32_t *points = cli_selected_points(r, &o.select, &chosen);
	int whole = rt.file.f != NULL; /* the rates need the histograms */
	struct cli_prefetch *pf =
	    cli_prefetch_start(r, points, chosen, whole, whole ? "--rates" : NULL);
	for (int32_t k = 0; k < chosen; k++) {
		int32_t i = points[k];
		clip_point(r, i, &o, per_point ? &per_point[i] : NULL, &bounds, &rt, pf);
		cli_progress("points", i + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	free(points);
	if (chosen == 0 && !cli_quiet)
		cli_warn(path, "warning: no point matches the selection");
	rates_end(&rt);
	cli_table_end(&bounds);
	copts_outliers_free(per_point, n);
	cli_close_trace(r);
	return CLI_EXIT_OK;
}
