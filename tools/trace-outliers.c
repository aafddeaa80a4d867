/* trace-outliers: outlier channels (or elements) of traces under a chosen
 * criterion and threshold, per channel, counted per point, or swept over
 * thresholds.  The criteria live in analysis/criteria.c. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"

enum mode { MODE_ROWS, MODE_COUNT, MODE_SWEEP };

struct options {
	struct copts criteria;
	enum mode mode;
	int elements; /* element rows for ratio/massive (default for those methods) */
	double sweep_from, sweep_to, sweep_step;
	struct cli_selection select;
	enum cli_format format;
	int header;
	int digits;
};

/* One selected point of one trace with its criterion outcome. */
struct point_result {
	int32_t index;
	struct an_outliers outliers;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE...\n"
	       "Outlier channels of traces under a criterion: one row per outlier channel\n"
	       "(per element for ratio and massive), or counts per point, or a sweep.\n"
	       "\n"
	       "Criterion:\n"
	       "%s"
	       "\n"
	       "Output:\n"
	       "  -c, --count            one row per point: channels and outliers\n"
	       "  -s, --sweep=K1:K2:STEP outliers per threshold and component\n"
	       "      --channels         channel rows for ratio and massive too\n"
	       "%s"
	       "Format:\n"
	       "  -f, --format=FMT       tsv (default), csv or json\n"
	       "  -H, --no-header        omit the header line\n"
	       "  -d, --digits=N         significant digits of real numbers (default 9)\n"
	       "  -q, --quiet            no progress, no warnings\n"
	       "  -h, --help             this help\n"
	       "      --version          print the version\n"
	       "\n"
	       "Rows: point layer component site channel stat value score threshold method;\n"
	       "score is the criterion's deviation in its own units, an outlier has\n"
	       "score > threshold.  Element rows: point layer channel token seq pos value\n"
	       "ratio.  With several FILEs a first column `trace` names the file.\n"
	       "See trace-outliers(1) and acttrace-criteria(7).\n",
	       cli_prog, copts_help(), cli_selection_help());
	exit(CLI_EXIT_OK);
}

static void parse_sweep(const char *arg, struct options *o)
{
	char buf[128];
	snprintf(buf, sizeof buf, "%s", arg);
	char *colon1 = strchr(buf, ':');
	char *colon2 = colon1 ? strchr(colon1 + 1, ':') : NULL;
	if (!colon2)
		cli_usage_error("--sweep wants K1:K2:STEP, not '%s'", arg);
	*colon1 = *colon2 = '\0';
	if (cli_parse_double(buf, &o->sweep_from) || cli_parse_double(colon1 + 1, &o->sweep_to) ||
	    cli_parse_double(colon2 + 1, &o->sweep_step) || o->sweep_step <= 0 ||
	    o->sweep_to < o->sweep_from)
		cli_usage_error("--sweep wants K1:K2:STEP with K1 <= K2 and STEP > 0, not '%s'", arg);
	if ((o->sweep_to - o->sweep_from) / o->sweep_step > 100000)
		cli_usage_error("--sweep '%s' has more than 100000 steps", arg);
	o->mode = MODE_SWEEP;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_VERSION = 512, OPT_COMPONENT, OPT_CHANNELS };
	static const struct option own[] = {
		{"count", no_argument, NULL, 'c'},      {"sweep", required_argument, NULL, 's'},
		{"channels", no_argument, NULL, OPT_CHANNELS},
		{"point", required_argument, NULL, 'p'}, {"component", required_argument, NULL, OPT_COMPONENT},
		{"layers", required_argument, NULL, 'l'}, {"format", required_argument, NULL, 'f'},
		{"no-header", no_argument, NULL, 'H'},  {"digits", required_argument, NULL, 'd'},
		{"quiet", no_argument, NULL, 'q'},      {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
	};
	struct option longopts[64];
	copts_longopts_with(longopts, 64, own, sizeof own / sizeof own[0]);
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "%scs:p:l:f:Hd:qh", copts_shortopts());

	*o = (struct options){.format = CLI_TSV, .header = 1, .digits = 9, .elements = -1};
	cli_selection_init(&o->select);
	copts_init(&o->criteria);
	int opt, channels_only = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criteria, opt, optarg) ||
		    cli_selection_option(&o->select, opt, optarg, OPT_COMPONENT))
			continue;
		switch (opt) {
		case 'c': o->mode = MODE_COUNT; break;
		case 's': parse_sweep(optarg, o); break;
		case OPT_CHANNELS: channels_only = 1; break;
		case 'f': o->format = cli_format_option(optarg); break;
		case 'H': o->header = 0; break;
		case 'd': o->digits = cli_digits_option(optarg); break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (optind == argc)
		cli_usage_error("no trace file given");
	copts_finish(&o->criteria);
	o->elements = an_method_is_elementwise(o->criteria.params.method) && !channels_only &&
	              o->mode == MODE_ROWS;
	return optind;
}

/* ---------------------------------------------------------------- selection */

/* The chosen points loaded ahead of their use, whole where the criterion
 * needs the histograms (ratio reads the whole statistics for its extremes
 * only). */
static struct cli_prefetch *prefetch_points(struct at_reader *r, const int32_t *chosen,
                                            int32_t n, enum an_method m)
{
	static char needs[64];
	snprintf(needs, sizeof needs, "-m %s", an_method_name(m));
	int whole = copts_needs_hist(m);
	return cli_prefetch_start(r, chosen, n, whole, whole && m != AN_RATIO ? needs : NULL);
}

static void run_criterion(struct at_reader *r, const struct at_stats *s, int32_t index,
                          const struct an_params *p, struct an_outliers *out)
{
	struct at_error err = {0};
	if (an_channel_outliers(s, p, out, &err))
		cli_fail(at_reader_path(r), "point '%s': %s", at_reader_point(r, index)->name,
		         err.message);
}

/* ---------------------------------------------------------------- output */

struct output {
	struct cli_table table;
	int multi; /* several traces: a first `trace` column */
};

static void begin_output(struct output *out, const struct options *o, int multi,
                         const char *const *columns, int n)
{
	const char *with_trace[24];
	static const char *kept[24];
	out->multi = multi;
	if (multi) {
		with_trace[0] = "trace";
		memcpy(with_trace + 1, columns, (size_t)n * sizeof *columns);
		memcpy(kept, with_trace, (size_t)(n + 1) * sizeof *kept);
		columns = kept;
		n++;
	}
	cli_table_begin(&out->table, stdout, o->format, o->header, columns, n);
	out->table.digits = o->digits;
}

static void row_start(struct output *out, const struct at_reader *r)
{
	if (out->multi)
		cli_table_str(&out->table, at_reader_path(r));
}

static void print_channel_rows(struct output *out, const struct at_reader *r,
                               const struct at_point_info *p, const struct an_outliers *res,
                               const struct an_params *params)
{
	struct cli_table *t = &out->table;
	const char *stat = params->method == AN_TENSOR_SIGMA ? "mean"
	                   : params->method == AN_KURTOSIS  ? "kurtosis"
	                   : params->method == AN_FREQUENCY ? "share"
	                   : an_method_is_elementwise(params->method) ? "absmax"
	                                                                : an_stat_name(params->stat);
	for (int64_t i = 0; i < res->n; i++) {
		const struct an_flag *f = &res->flags[i];
		row_start(out, r);
		cli_table_str(t, p->name);
		cli_table_int(t, p->layer);
		cli_table_str(t, p->component);
		cli_table_str(t, p->site);
		cli_table_int(t, f->channel);
		cli_table_str(t, stat);
		cli_table_double(t, f->value);
		cli_table_double(t, f->score);
		cli_table_double(t, f->threshold);
		cli_table_str(t, an_method_name(params->method));
		cli_table_end_row(t);
	}
}

static void print_count_row(struct output *out, const struct at_reader *r,
                            const struct at_point_info *p, int64_t outliers)
{
	struct cli_table *t = &out->table;
	row_start(out, r);
	cli_table_str(t, p->name);
	cli_table_int(t, p->layer);
	cli_table_str(t, p->component);
	cli_table_str(t, p->site);
	cli_table_int(t, p->channels);
	cli_table_int(t, outliers);
	cli_table_end_row(t);
}

/* ---------------------------------------------------------------- element rows */

static void print_element_rows(struct output *out, struct at_reader *r, int32_t index,
                               const struct an_elements *e)
{
	const struct at_point_info *p = at_reader_point(r, index);
	struct cli_table *t = &out->table;
	int64_t ntokens = at_reader_info(r)->tokens;
	struct at_error err = {0};
	for (int64_t i = 0; i < e->n; i++) {
		const struct an_element *el = &e->items[i];
		int32_t seq = -1, pos = -1;
		if (el->token >= 0 && el->token < ntokens &&
		    at_reader_read_tokens(r, el->token, 1, &seq, &pos, NULL, &err))
			cli_fail_at(&err);
		row_start(out, r);
		cli_table_str(t, p->name);
		cli_table_int(t, p->layer);
		cli_table_int(t, el->channel);
		cli_table_int(t, el->token);
		cli_table_int(t, seq);
		cli_table_int(t, pos);
		cli_table_double(t, el->value);
		cli_table_double(t, el->ratio);
		cli_table_end_row(t);
	}
	if (!e->complete && !cli_quiet && e->n > 0)
		cli_warn(at_reader_path(r),
		         "point '%s': more elements may pass than the extremes and samples hold",
		         p->name);
}

static void elements_of_point(struct output *out, struct at_reader *r, int32_t index,
                              const struct at_stats *s, const struct an_params *params)
{
	int64_t *tokens;
	float *rows = cli_load_samples(r, index, &tokens);
	struct an_elements e;
	struct at_error err = {0};
	if (an_element_outliers(s, rows, tokens, at_reader_point(r, index)->samples, params, &e,
	                        &err))
		cli_fail(at_reader_path(r), "point '%s': %s", at_reader_point(r, index)->name,
		         err.message);
	print_element_rows(out, r, index, &e);
	an_elements_free(&e);
	free(rows);
	free(tokens);
}

/* ---------------------------------------------------------------- one trace */

/* Every selected point's outcome, computed before printing because the
 * frequency criterion's layer condition looks across points. */
static struct point_result *evaluate(struct at_reader *r, const struct options *o,
                                     const int32_t *chosen, int32_t n,
                                     struct output *elements_out)
{
	const struct an_params *params = &o->criteria.params;
	struct point_result *results = calloc((size_t)n + 1, sizeof *results);
	if (!results)
		cli_fail(at_reader_path(r), "out of memory");
	struct cli_prefetch *pf = prefetch_points(r, chosen, n, params->method);
	for (int32_t i = 0; i < n; i++) {
		struct at_stats s;
		cli_prefetch_take(pf, chosen[i], &s);
		results[i].index = chosen[i];
		if (elements_out)
			elements_of_point(elements_out, r, chosen[i], &s, params);
		else
			run_criterion(r, &s, chosen[i], params, &results[i].outliers);
		cli_prefetch_recycle(pf, &s);
		cli_progress("points", i + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	return results;
}

static void apply_layer_share(struct at_reader *r, const struct an_params *params,
                              struct point_result *results, int32_t n)
{
	if (params->method != AN_FREQUENCY || params->freq_layers <= 0 || n == 0)
		return;
	struct an_point_count *counts = calloc((size_t)n, sizeof *counts);
	struct an_outliers *per_point = calloc((size_t)n, sizeof *per_point);
	struct at_error err = {0};
	if (!counts || !per_point)
		cli_fail(at_reader_path(r), "out of memory");
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(r, results[i].index);
		counts[i] = (struct an_point_count){p->name, p->layer, p->component, p->site,
		                                    p->channels, results[i].outliers.n};
		per_point[i] = results[i].outliers;
	}
	if (an_require_layer_share(counts, per_point, n, params->freq_layers, &err))
		cli_fail(at_reader_path(r), "%s", err.message);
	for (int32_t i = 0; i < n; i++)
		results[i].outliers = per_point[i];
	free(counts);
	free(per_point);
}

static void free_results(struct point_result *results, int32_t n)
{
	for (int32_t i = 0; i < n; i++)
		an_outliers_free(&results[i].outliers);
	free(results);
}

static void report_trace(const char *path, const struct options *o, struct output *out)
{
	struct at_reader *r = cli_open_trace(path);
	int32_t n;
	int32_t *chosen = cli_selected_points(r, &o->select, &n);
	if (n == 0 && !cli_quiet)
		cli_warn(path, "warning: no point matches the selection");
	struct point_result *results = evaluate(r, o, chosen, n, o->elements ? out : NULL);
	if (!o->elements) {
		apply_layer_share(r, &o->criteria.params, results, n);
		for (int32_t i = 0; i < n; i++) {
			const struct at_point_info *p = at_reader_point(r, results[i].index);
			if (o->mode == MODE_COUNT)
				print_count_row(out, r, p, results[i].outliers.n);
			else
				print_channel_rows(out, r, p, &results[i].outliers, &o->criteria.params);
		}
	}
	free_results(results, n);
	free(chosen);
	cli_close_trace(r);
}

/* ---------------------------------------------------------------- sweep */

/* The threshold a sweep varies: the method's main one (trace-outliers(1)). */
static double *swept_parameter(struct an_params *p)
{
	switch (p->method) {
	case AN_TENSOR_SIGMA: return &p->m;
	case AN_RATIO: return &p->tau;
	case AN_MASSIVE: return &p->massive_ratio;
	case AN_FREQUENCY: return &p->freq_t;
	default: return &p->k;
	}
}

struct sweep_cell {
	char component[32];
	int64_t points, channels;
	int64_t *outliers; /* per threshold */
};

struct sweep {
	double *thresholds;
	int64_t nthresholds;
	struct sweep_cell *cells; /* per component, then a total */
	int ncells;
};

/* Index of a component's cell, created on first sight (cell 0 is the total). */
static int sweep_cell(struct sweep *sw, const char *component)
{
	for (int i = 0; i < sw->ncells; i++)
		if (strcmp(sw->cells[i].component, component) == 0)
			return i;
	struct sweep_cell *grown = realloc(sw->cells, (size_t)(sw->ncells + 1) * sizeof *grown);
	int64_t *counts = calloc((size_t)sw->nthresholds, sizeof *counts);
	if (!grown || !counts)
		cli_fail(NULL, "out of memory");
	sw->cells = grown;
	struct sweep_cell *c = &sw->cells[sw->ncells];
	*c = (struct sweep_cell){.outliers = counts};
	snprintf(c->component, sizeof c->component, "%s", component);
	return sw->ncells++;
}

static void sweep_trace(struct at_reader *r, const struct options *o, struct sweep *sw)
{
	int32_t n;
	int32_t *chosen = cli_selected_points(r, &o->select, &n);
	struct an_params params = o->criteria.params;
	double *swept = swept_parameter(&params);
	struct point_result *per_threshold = calloc((size_t)n + 1, sizeof *per_threshold);
	if (!per_threshold)
		cli_fail(at_reader_path(r), "out of memory");
	struct at_stats *stats = calloc((size_t)n + 1, sizeof *stats);
	if (!stats)
		cli_fail(at_reader_path(r), "out of memory");
	struct cli_prefetch *pf = prefetch_points(r, chosen, n, params.method);
	for (int32_t i = 0; i < n; i++) {
		cli_prefetch_take(pf, chosen[i], &stats[i]);
		cli_progress("loading points", i + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	for (int64_t k = 0; k < sw->nthresholds; k++) {
		*swept = sw->thresholds[k];
		for (int32_t i = 0; i < n; i++) {
			per_threshold[i].index = chosen[i];
			run_criterion(r, &stats[i], chosen[i], &params, &per_threshold[i].outliers);
		}
		apply_layer_share(r, &params, per_threshold, n);
		for (int32_t i = 0; i < n; i++) {
			const struct at_point_info *p = at_reader_point(r, chosen[i]);
			int cells[2] = {0, sweep_cell(sw, p->component)};
			for (int j = 0; j < 2; j++) {
				struct sweep_cell *c = &sw->cells[cells[j]];
				c->outliers[k] += per_threshold[i].outliers.n;
				if (k == 0) {
					c->points++;
					c->channels += p->channels;
				}
			}
			an_outliers_free(&per_threshold[i].outliers);
		}
		cli_progress("thresholds", (double)(k + 1), (double)sw->nthresholds);
	}
	cli_progress_done();
	for (int32_t i = 0; i < n; i++)
		at_stats_free(&stats[i]);
	free(stats);
	free(per_threshold);
	free(chosen);
}

static void sweep_init(struct sweep *sw, const struct options *o)
{
	*sw = (struct sweep){0};
	int64_t steps = (int64_t)floor((o->sweep_to - o->sweep_from) / o->sweep_step + 1e-9) + 1;
	sw->thresholds = malloc((size_t)steps * sizeof *sw->thresholds);
	if (!sw->thresholds)
		cli_fail(NULL, "out of memory");
	for (int64_t k = 0; k < steps; k++)
		sw->thresholds[k] = o->sweep_from + (double)k * o->sweep_step;
	sw->nthresholds = steps;
	sweep_cell(sw, "total");
}

static void print_sweep(struct output *out, const struct at_reader *r, const struct sweep *sw)
{
	struct cli_table *t = &out->table;
	for (int64_t k = 0; k < sw->nthresholds; k++) {
		for (int i = 1; i <= sw->ncells; i++) { /* components, then the total */
			const struct sweep_cell *c = &sw->cells[i % sw->ncells];
			row_start(out, r);
			cli_table_double(t, sw->thresholds[k]);
			cli_table_str(t, c->component);
			cli_table_int(t, c->points);
			cli_table_int(t, c->channels);
			cli_table_int(t, c->outliers[k]);
			cli_table_end_row(t);
		}
	}
}

static void sweep_free(struct sweep *sw)
{
	for (int i = 0; i < sw->ncells; i++)
		free(sw->cells[i].outliers);
	free(sw->cells);
	free(sw->thresholds);
}

static void sweep_file(const char *path, const struct options *o, struct output *out)
{
	struct at_reader *r = cli_open_trace(path);
	struct sweep sw;
	sweep_init(&sw, o);
	sweep_trace(r, o, &sw);
	print_sweep(out, r, &sw);
	sweep_free(&sw);
	cli_close_trace(r);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	static const char *const rows[] = {"point", "layer", "component", "site", "channel",
	                                   "stat", "value", "score", "threshold", "method"};
	static const char *const elements[] = {"point", "layer", "channel", "token",
	                                       "seq", "pos", "value", "ratio"};
	static const char *const counts[] = {"point", "layer", "component", "site", "channels",
	                                     "outliers"};
	static const char *const sweeps[] = {"threshold", "component", "points", "channels",
	                                     "outliers"};
	struct options o;
	cli_init(argv[0]);
	int first = parse_args(argc, argv, &o);
	int multi = argc - first > 1;
	struct output out;
	if (o.mode == MODE_SWEEP)
		begin_output(&out, &o, multi, sweeps, 5);
	else if (o.mode == MODE_COUNT)
		begin_output(&out, &o, multi, counts, 6);
	else if (o.elements)
		begin_output(&out, &o, multi, elements, 8);
	else
		begin_output(&out, &o, multi, rows, 10);
	for (int i = first; i < argc; i++) {
		if (o.mode == MODE_SWEEP)
			sweep_file(argv[i], &o, &out);
		else
			report_trace(argv[i], &o, &out);
	}
	cli_table_end(&out.table);
	return CLI_EXIT_OK;
}
