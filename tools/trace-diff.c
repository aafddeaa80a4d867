/* trace-diff: two traces of the same points compared (base against
 * fine-tuned, unclipped against clipped, two runs): per point, per channel or
 * per component, how the channels moved and which outliers were kept, gained
 * and lost under a criterion.  The comparisons live in analysis/diff.c. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"

enum mode { MODE_POINTS, MODE_CHANNELS, MODE_COMPONENTS };

struct options {
	struct copts criteria;
	enum mode mode;
	struct cli_selection select;
	struct cli_format_opts out;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTIONS] A B\n"
	       "Two traces of the same points compared: how each channel moved from A to B,\n"
	       "and which outlier channels were kept, gained and lost under a criterion.\n"
	       "\n"
	       "Criterion (as trace-outliers; run on A and on B):\n"
	       "%s"
	       "\n"
	       "Output (one row per point by default):\n"
	       "      --channels         one row per channel\n"
	       "      --components       one row per component\n"
	       "%s%s"
	       "\n"
	       "shift = (mean_B - mean_A) / sqrt((std_A^2 + std_B^2) / 2); absmax_ratio =\n"
	       "absmax_B / absmax_A; hist_distance = total variation between the two\n"
	       "normalised |x| histograms (0: the same, 1: disjoint).  See trace-diff(1).\n",
	       cli_prog, copts_help(), cli_selection_help(), cli_format_opts_help());
	exit(CLI_EXIT_OK);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_VERSION = 512, OPT_COMPONENT, OPT_CHANNELS, OPT_COMPONENTS };
	static const struct option own[] = {
		{"channels", no_argument, NULL, OPT_CHANNELS},
		{"components", no_argument, NULL, OPT_COMPONENTS},
		{"point", required_argument, NULL, 'p'},  {"component", required_argument, NULL, OPT_COMPONENT},
		{"layers", required_argument, NULL, 'l'}, {"format", required_argument, NULL, 'f'},
		{"no-header", no_argument, NULL, 'H'},    {"digits", required_argument, NULL, 'd'},
		{"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
	};
	struct option longopts[64];
	copts_longopts_with(longopts, 64, own, sizeof own / sizeof own[0]);
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "%sp:l:f:Hd:qh", copts_shortopts());

	*o = (struct options){.mode = MODE_POINTS};
	cli_selection_init(&o->select);
	cli_format_opts_init(&o->out);
	copts_init(&o->criteria);
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criteria, opt, optarg) ||
		    cli_selection_option(&o->select, opt, optarg, OPT_COMPONENT) ||
		    cli_format_opts_option(&o->out, opt, optarg))
			continue;
		switch (opt) {
		case OPT_CHANNELS: o->mode = MODE_CHANNELS; break;
		case OPT_COMPONENTS: o->mode = MODE_COMPONENTS; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (argc - optind != 2)
		cli_usage_error("two traces, A and B, are compared (%d given)", argc - optind);
	copts_finish(&o->criteria);
	if (an_method_is_elementwise(o->criteria.params.method))
		cli_usage_error("-m %s flags elements; trace-diff compares outlier channels",
		                an_method_name(o->criteria.params.method));
	return optind;
}

/* ---------------------------------------------------------------- the pair */

/* Refuse two traces whose points differ, naming the first difference. */
static void check_same_points(struct at_reader *a, struct at_reader *b)
{
	int32_t na = at_reader_info(a)->points, nb = at_reader_info(b)->points;
	for (int32_t i = 0; i < na && i < nb; i++) {
		const struct at_point_info *pa = at_reader_point(a, i), *pb = at_reader_point(b, i);
		if (strcmp(pa->name, pb->name) != 0)
			cli_fail(at_reader_path(b), "point %d is '%s', in %s it is '%s'", (int)i, pb->name,
			         at_reader_path(a), pa->name);
		if (pa->channels != pb->channels)
			cli_fail(at_reader_path(b), "point '%s' has %lld channels, in %s %lld", pb->name,
			         (long long)pb->channels, at_reader_path(a), (long long)pa->channels);
	}
	if (na != nb)
		cli_fail(at_reader_path(b), "%d points, %s has %d", (int)nb, at_reader_path(a), (int)na);
}

/* ---------------------------------------------------------------- rows */

static const char *const point_columns[] = {
	"point", "layer", "component", "site", "channels", "outliers_a", "outliers_b", "kept",
	"gained", "lost", "jaccard", "max_abs_shift", "mean_hist_distance"};
static const char *const channel_columns[] = {
	"point", "channel", "status", "mean_a", "mean_b", "shift", "absmax_a", "absmax_b",
	"absmax_ratio", "hist_distance"};
static const char *const component_columns[] = {
	"component", "points", "channels", "outliers_a", "outliers_b", "kept", "gained", "lost",
	"jaccard"};

/* kept, gained, lost or - for a channel of neither set */
static const char *status_of(const struct an_outliers *a, const struct an_outliers *b, int64_t c)
{
	int in_a = an_outliers_has(a, c), in_b = an_outliers_has(b, c);
	return in_a && in_b ? "kept" : in_b ? "gained" : in_a ? "lost" : "-";
}

static void channel_rows(struct cli_table *t, const struct at_point_info *p,
                         const struct at_stats *sa, const struct at_stats *sb,
                         const struct an_outliers *oa, const struct an_outliers *ob)
{
	for (int64_t c = 0; c < p->channels; c++) {
		struct an_channel_diff d;
		an_diff_channel(sa, sb, c, &d);
		cli_table_str(t, p->name);
		cli_table_int(t, c);
		cli_table_str(t, status_of(oa, ob, c));
		cli_table_double(t, sa->mean[c]);
		cli_table_double(t, sb->mean[c]);
		cli_table_double(t, d.shift);
		cli_table_double(t, sa->absmax[c]);
		cli_table_double(t, sb->absmax[c]);
		cli_table_double(t, d.absmax_ratio);
		cli_table_double(t, d.hist_distance);
		cli_table_end_row(t);
	}
}

static void point_row(struct cli_table *t, const struct at_point_info *p,
                      const struct at_stats *sa, const struct at_stats *sb,
                      const struct an_outliers *oa, const struct an_outliers *ob)
{
	double max_shift = 0, distance = 0;
	int64_t with_hist = 0;
	for (int64_t c = 0; c < p->channels; c++) {
		struct an_channel_diff d;
		an_diff_channel(sa, sb, c, &d);
		if (fabs(d.shift) > max_shift)
			max_shift = fabs(d.shift);
		if (!isnan(d.hist_distance)) {
			distance += d.hist_distance;
			with_hist++;
		}
	}
	struct an_set_diff sd;
	an_compare_sets(oa, ob, &sd);
	cli_table_str(t, p->name);
	cli_table_int(t, p->layer);
	cli_table_str(t, p->component);
	cli_table_str(t, p->site);
	cli_table_int(t, p->channels);
	cli_table_int(t, oa->n);
	cli_table_int(t, ob->n);
	cli_table_int(t, sd.kept);
	cli_table_int(t, sd.gained);
	cli_table_int(t, sd.lost);
	cli_table_double(t, sd.jaccard);
	cli_table_double(t, max_shift);
	cli_table_double(t, with_hist ? distance / (double)with_hist : NAN);
	cli_table_end_row(t);
}

/* ---------------------------------------------------------------- components */

#define MAX_COMPONENTS 32

struct component_sum {
	const char *name;
	int64_t points, channels, outliers_a, outliers_b, kept, gained, lost;
};

static void add_component(struct component_sum *sums, int *n, const struct at_point_info *p,
                          const struct an_outliers *oa, const struct an_outliers *ob,
                          const char *path)
{
	int i = 0;
	while (i < *n && strcmp(sums[i].name, p->component) != 0)
		i++;
	if (i == *n) {
		if (*n == MAX_COMPONENTS)
			cli_fail(path, "more than %d components", MAX_COMPONENTS);
		sums[(*n)++] = (struct component_sum){.name = p->component};
	}
	struct an_set_diff sd;
	an_compare_sets(oa, ob, &sd);
	sums[i].points++;
	sums[i].channels += p->channels;
	sums[i].outliers_a += oa->n;
	sums[i].outliers_b += ob->n;
	sums[i].kept += sd.kept;
	sums[i].gained += sd.gained;
	sums[i].lost += sd.lost;
}

static void component_rows(struct cli_table *t, const struct component_sum *sums, int n)
{
	for (int i = 0; i < n; i++) {
		const struct component_sum *c = &sums[i];
		int64_t either = c->kept + c->gained + c->lost;
		cli_table_str(t, c->name);
		cli_table_int(t, c->points);
		cli_table_int(t, c->channels);
		cli_table_int(t, c->outliers_a);
		cli_table_int(t, c->outliers_b);
		cli_table_int(t, c->kept);
		cli_table_int(t, c->gained);
		cli_table_int(t, c->lost);
		cli_table_double(t, either ? (double)c->kept / (double)either : 1.0);
		cli_table_end_row(t);
	}
}

int main(int argc, char **argv)
{
	cli_init(argv[0]);
	struct options o;
	int first = parse_args(argc, argv, &o);
	struct at_reader *a = cli_open_trace(argv[first]);
	struct at_reader *b = cli_open_trace(argv[first + 1]);
	check_same_points(a, b);
	struct an_outliers *oa = copts_outliers(a, &o.criteria.params);
	struct an_outliers *ob = copts_outliers(b, &o.criteria.params);

	struct cli_table t;
	const char *const *columns = o.mode == MODE_CHANNELS     ? channel_columns
	                             : o.mode == MODE_COMPONENTS ? component_columns
	                                                         : point_columns;
	int ncolumns = o.mode == MODE_CHANNELS     ? (int)(sizeof channel_columns / sizeof *columns)
	               : o.mode == MODE_COMPONENTS ? (int)(sizeof component_columns / sizeof *columns)
	                                           : (int)(sizeof point_columns / sizeof *columns);
	cli_table_begin(&t, stdout, o.out.format, o.out.header, columns, ncolumns);
	t.digits = o.out.digits;
	struct component_sum sums[MAX_COMPONENTS];
	int ncomponents = 0, chosen = 0;
	int32_t n = at_reader_info(a)->points;
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(a, i);
		if (!cli_selected(&o.select, p))
			continue;
		chosen++;
		if (o.mode == MODE_COMPONENTS) {
			add_component(sums, &ncomponents, p, &oa[i], &ob[i], at_reader_path(a));
			continue;
		}
		struct at_stats sa, sb;
		cli_load_point(a, i, 1, NULL, &sa);
		cli_load_point(b, i, 1, NULL, &sb);
		if (o.mode == MODE_CHANNELS)
			channel_rows(&t, p, &sa, &sb, &oa[i], &ob[i]);
		else
			point_row(&t, p, &sa, &sb, &oa[i], &ob[i]);
		at_stats_free(&sa);
		at_stats_free(&sb);
		cli_progress("points", i + 1, n);
	}
	cli_progress_done();
	if (o.mode == MODE_COMPONENTS)
		component_rows(&t, sums, ncomponents);
	if (chosen == 0 && !cli_quiet)
		cli_warn(argv[first], "warning: no point matches the selection");
	cli_table_end(&t);
	copts_outliers_free(oa, n);
	copts_outliers_free(ob, n);
	cli_close_trace(a);
	cli_close_trace(b);
	return CLI_EXIT_OK;
}
