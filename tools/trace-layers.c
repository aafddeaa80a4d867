/* trace-layers: outlier channels broken down by component, layer, site or
 * layer group, the tables of the RecurrentGemma outlier study (Tables 4.1 and
 * 4.2, Figure 4.1), from a criterion run on a trace or from trace-outliers'
 * rows counted against the trace's channels. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis.h"
#include "cli.h"
#include "criteria-opts.h"
#include "tsv.h"

enum format { FMT_TSV, FMT_CSV, FMT_JSON, FMT_LATEX, FMT_MARKDOWN };

struct options {
	int by_given;
	enum an_breakdown by;
	struct an_group *groups;
	int ngroups;
	const char *input; /* a table of outliers, "-" for stdin; NULL: run the criterion */
	struct copts criterion;
	enum format format;
	int header;
	int total;
	int digits;   /* tsv, csv, json */
	int decimals; /* latex, markdown */
};

_Noreturn static void usage(void)
{
	printf("Usage: %s --by component|layer|site [OPTIONS] FILE\n"
	       "       %s --groups LIST [OPTIONS] FILE\n"
	       "Break outlier channels down by component, layer, site or layer group, as the\n"
	       "RecurrentGemma outlier study's tables do.  The outliers come from a criterion\n"
	       "run on the trace FILE, or from trace-outliers' rows counted against FILE's\n"
	       "channels.\n"
	       "\n"
	       "Breakdown:\n"
	       "  -b, --by=KIND          component, layer or site\n"
	       "  -g, --groups=LIST      layer groups such as 0-8,9-17,18-25: layers, average\n"
	       "                         outliers per layer and total outliers of each\n"
	       "Outliers:\n"
	       "  -i, --input=TABLE      count the outliers of TABLE ('-': standard input):\n"
	       "                         TSV with columns point and channel (trace-outliers)\n"
	       "                         or point and outliers (trace-outliers --count)\n"
	       "%s"
	       "Format:\n"
	       "  -f, --format=FMT       tsv (default), csv, json, latex (booktabs) or markdown\n"
	       "  -H, --no-header        omit the header line (latex, markdown: only the rows)\n"
	       "      --no-total         omit the total row\n"
	       "  -d, --digits=N         significant digits of real numbers in tsv, csv and\n"
	       "                         json (default 9)\n"
	       "      --decimals=N       decimals of percentages and averages in latex and\n"
	       "                         markdown (default 2)\n"
	       "  -q, --quiet            no progress, no warnings\n"
	       "  -h, --help             this help\n"
	       "      --version          print the version\n"
	       "\n"
	       "The outliers are read from TABLE with -i; else from standard input when it\n"
	       "is not a terminal and no criterion option is given (trace-outliers ... |\n"
	       "trace-layers ...); else the criterion (grand-mean with k 6 unless told) runs\n"
	       "on FILE.\n"
	       "\n"
	       "Columns: --by component: component total_channels outlier_channels\n"
	       "pct_of_component pct_of_outliers; --by layer: layer channels outliers; --by\n"
	       "site: site channels outliers; --groups: group layers avg_outliers_per_layer\n"
	       "total_outliers.  A total row ends each table.  See trace-layers(1).\n",
	       cli_prog, cli_prog, copts_help());
	exit(CLI_EXIT_OK);
}

static void parse_by(const char *arg, struct options *o)
{
	static const struct {
		const char *name;
		enum an_breakdown by;
	} kinds[] = {{"component", AN_BY_COMPONENT}, {"layer", AN_BY_LAYER}, {"site", AN_BY_SITE}};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		if (strcmp(arg, kinds[i].name) == 0) {
			o->by = kinds[i].by;
			o->by_given = 1;
			return;
		}
	}
	cli_usage_error("unknown breakdown '%s' (component, layer or site)", arg);
}

static void parse_format(const char *arg, struct options *o)
{
	enum cli_format table;
	if (strcmp(arg, "latex") == 0)
		o->format = FMT_LATEX;
	else if (strcmp(arg, "markdown") == 0)
		o->format = FMT_MARKDOWN;
	else if (cli_parse_format(arg, &table) == 0)
		o->format = table == CLI_CSV ? FMT_CSV : table == CLI_JSON ? FMT_JSON : FMT_TSV;
	else
		cli_usage_error("unknown format '%s' (tsv, csv, json, latex or markdown)", arg);
}

static int parse_count(const char *option, const char *arg, int64_t min, int64_t max)
{
	int64_t v;
	if (cli_parse_int64(arg, min, max, &v))
		cli_usage_error("%s must be an integer from %lld to %lld, not '%s'", option,
		                (long long)min, (long long)max, arg);
	return (int)v;
}

static void parse_groups(const char *arg, struct options *o)
{
	struct at_error err = {0};
	free(o->groups);
	if (an_parse_groups(arg, &o->groups, &o->ngroups, &err))
		cli_usage_error("--groups: %s", err.message);
}

/* The outliers come from -i, else from a stdin that is not a terminal
 * unless a criterion option asks for the criterion, else from the criterion. */
static void choose_input(struct options *o)
{
	if (o->input && o->criterion.given)
		cli_usage_error("criterion options do not apply to a table read with --input");
	if (!o->input && !o->criterion.given && !isatty(STDIN_FILENO))
		o->input = "-";
}

static void parse_args(int argc, char **argv, struct options *o, const char **path)
{
	enum { OPT_VERSION = 256, OPT_NO_TOTAL, OPT_DECIMALS };
	static const struct option own[] = {
		{"by", required_argument, NULL, 'b'},        {"groups", required_argument, NULL, 'g'},
		{"input", required_argument, NULL, 'i'},     {"format", required_argument, NULL, 'f'},
		{"no-header", no_argument, NULL, 'H'},       {"no-total", no_argument, NULL, OPT_NO_TOTAL},
		{"digits", required_argument, NULL, 'd'},    {"decimals", required_argument, NULL, OPT_DECIMALS},
		{"quiet", no_argument, NULL, 'q'},           {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
	};
	enum { NOWN = sizeof own / sizeof own[0], MAX_LONG = 48 };
	struct option longopts[MAX_LONG];
	copts_longopts_with(longopts, MAX_LONG, own, NOWN);
	char shortopts[64];
	snprintf(shortopts, sizeof shortopts, "b:g:i:f:Hd:qh%s", copts_shortopts());
	*o = (struct options){.format = FMT_TSV, .header = 1, .total = 1, .digits = 9, .decimals = 2};
	copts_init(&o->criterion);
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (copts_handle(&o->criterion, opt, optarg))
			continue;
		switch (opt) {
		case 'b': parse_by(optarg, o); break;
		case 'g': parse_groups(optarg, o); break;
		case 'i': o->input = optarg; break;
		case 'f': parse_format(optarg, o); break;
		case 'H': o->header = 0; break;
		case OPT_NO_TOTAL: o->total = 0; break;
		case 'd': o->digits = parse_count("--digits", optarg, 1, 17); break;
		case OPT_DECIMALS: o->decimals = parse_count("--decimals", optarg, 0, 12); break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (o->groups && o->by_given && o->by != AN_BY_LAYER)
		cli_usage_error("--groups breaks down by layer, not by %s",
		                o->by == AN_BY_COMPONENT ? "component" : "site");
	if (!o->groups && !o->by_given)
		cli_usage_error("no breakdown given (--by component, layer or site, or --groups LIST)");
	if (optind != argc - 1)
		cli_usage_error(optind == argc ? "no trace file given" : "one trace file at a time");
	*path = argv[optind];
	copts_finish(&o->criterion);
	choose_input(o);
}

/* ---------------------------------------------------------------- counting */

/* The trace's points, named and ordered as at_reader_point gives them. */
static struct an_point_count *trace_points(const struct at_reader *r, int32_t n)
{
	struct an_point_count *points = calloc((size_t)(n ? n : 1), sizeof *points);
	if (!points)
		cli_fail(NULL, "out of memory");
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *info = at_reader_point(r, i);
		points[i] = (struct an_point_count){info->name, info->layer, info->component,
		                                    info->site, info->channels, 0};
	}
	return points;
}

static void count_criterion(struct at_reader *r, const struct an_params *p,
                            struct an_point_count *points, int32_t n)
{
	struct an_outliers *per_point = calloc((size_t)(n ? n : 1), sizeof *per_point);
	struct at_error err = {0};
	if (!per_point)
		cli_fail(NULL, "out of memory");
	if (copts_run(r, p, points, per_point, &err))
		cli_fail_at(&err);
	for (int32_t i = 0; i < n; i++) {
		points[i].outliers = per_point[i].n;
		an_outliers_free(&per_point[i]);
	}
	free(per_point);
}

/* Finding the point of a row: rows come grouped by point, so the last one
 * found is tried first, then a binary search over the sorted names. */
struct point_index {
	const struct an_point_count *points;
	int32_t *by_name;
	int32_t n;
	int32_t last;
};

static const struct an_point_count *sort_base;

static int cmp_name(const void *a, const void *b)
{
	return strcmp(sort_base[*(const int32_t *)a].point, sort_base[*(const int32_t *)b].point);
}

static void index_points(struct point_index *x, const struct an_point_count *points, int32_t n)
{
	*x = (struct point_index){.points = points, .n = n, .last = -1};
	x->by_name = malloc((size_t)(n ? n : 1) * sizeof *x->by_name);
	if (!x->by_name)
		cli_fail(NULL, "out of memory");
	for (int32_t i = 0; i < n; i++)
		x->by_name[i] = i;
	sort_base = points;
	qsort(x->by_name, (size_t)n, sizeof *x->by_name, cmp_name);
}

static int32_t find_point(struct point_index *x, const char *name)
{
	if (x->last >= 0 && strcmp(x->points[x->last].point, name) == 0)
		return x->last;
	int32_t lo = 0, hi = x->n;
	while (lo < hi) {
		int32_t mid = lo + (hi - lo) / 2;
		int c = strcmp(x->points[x->by_name[mid]].point, name);
		if (c == 0)
			return x->last = x->by_name[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

struct table_state {
	const char *name;  /* of the table, for messages */
	const char *trace;
	struct tsv_reader tsv;
	struct point_index index;
	uint8_t **seen;    /* per point, a bit per channel (rows of channels) */
	uint8_t *counted;  /* per point (rows of counts) */
};

static int32_t row_point(struct table_state *s, const char *name)
{
	int32_t i = find_point(&s->index, name);
	if (i < 0)
		cli_fail(s->name, "line %ld: no point '%s' in %s", s->tsv.line, name, s->trace);
	return i;
}

/* A (point, channel) pair counts once, however many rows name it. */
static void count_channel(struct table_state *s, struct an_point_count *points, const char *point,
                          const char *channel)
{
	int32_t i = row_point(s, point);
	int64_t c, channels = points[i].channels;
	if (cli_parse_int64(channel, 0, channels - 1, &c))
		cli_fail(s->name, "line %ld: point %s has channels 0 to %lld, not '%s'", s->tsv.line,
		         point, (long long)channels - 1, channel);
	if (!s->seen[i] && !(s->seen[i] = calloc((size_t)channels / 8 + 1, 1)))
		cli_fail(NULL, "out of memory");
	uint8_t bit = (uint8_t)(1u << (c % 8));
	if (s->seen[i][c / 8] & bit)
		return;
	s->seen[i][c / 8] |= bit;
	points[i].outliers++;
}

static void count_point(struct table_state *s, struct an_point_count *points, const char *point,
                        const char *outliers)
{
	int32_t i = row_point(s, point);
	int64_t count;
	if (cli_parse_int64(outliers, 0, points[i].channels, &count))
		cli_fail(s->name, "line %ld: point %s has 0 to %lld outliers, not '%s'", s->tsv.line,
		         point, (long long)points[i].channels, outliers);
	if (s->counted[i])
		cli_fail(s->name, "line %ld: point %s counted twice", s->tsv.line, point);
	s->counted[i] = 1;
	points[i].outliers = count;
}

static void count_table(const char *input, const char *trace, struct an_point_count *points,
                        int32_t n)
{
	int from_stdin = strcmp(input, "-") == 0;
	FILE *in = from_stdin ? stdin : fopen(input, "r");
	if (!in)
		cli_fail(input, "%s", strerror(errno));
	struct table_state s = {.name = input, .trace = trace};
	struct at_error err = {0};
	if (tsv_open(&s.tsv, in, input, &err)) {
		if (from_stdin && s.tsv.line == 0 && err.code == AT_EFORMAT)
			cli_fail(input, "no table on standard input (to run a criterion on %s, give -m)",
			         trace);
		cli_fail_at(&err);
	}
	int point_col = tsv_column(&s.tsv, "point");
	int channel_col = tsv_column(&s.tsv, "channel");
	int count_col = channel_col < 0 ? tsv_column(&s.tsv, "outliers") : -1;
	if (point_col < 0)
		cli_fail(input, "missing column 'point'");
	if (channel_col < 0 && count_col < 0)
		cli_fail(input, "missing column 'channel' (or 'outliers', as in trace-outliers --count)");
	int value_col = channel_col >= 0 ? channel_col : count_col;
	/* trace-outliers with several traces names each row's trace: keep FILE's */
	int trace_col = tsv_column(&s.tsv, "trace");
	int need = (point_col > value_col ? point_col : value_col) + 1;
	if (trace_col >= need)
		need = trace_col + 1;
	long kept = 0, skipped = 0;
	index_points(&s.index, points, n);
	s.seen = calloc((size_t)(n ? n : 1), sizeof *s.seen);
	s.counted = calloc((size_t)(n ? n : 1), 1);
	if (!s.seen || !s.counted)
		cli_fail(NULL, "out of memory");
	int rc;
	while ((rc = tsv_next(&s.tsv, need, &err)) > 0) {
		const char *point = s.tsv.fields[point_col], *value = s.tsv.fields[value_col];
		if (trace_col >= 0 && strcmp(s.tsv.fields[trace_col], trace) != 0) {
			skipped++;
			continue;
		}
		kept++;
		if (channel_col >= 0)
			count_channel(&s, points, point, value);
		else
			count_point(&s, points, point, value);
	}
	if (rc < 0)
		cli_fail_at(&err);
	if (skipped && !kept)
		cli_fail(input, "no row is about %s (column 'trace' names other traces)", trace);
	for (int32_t i = 0; i < n; i++)
		free(s.seen[i]);
	free(s.seen);
	free(s.counted);
	free(s.index.by_name);
	tsv_close(&s.tsv);
	if (!from_stdin && fclose(in) != 0)
		cli_fail(input, "%s", strerror(errno));
}

/* ---------------------------------------------------------------- output */

struct out {
	enum format format;
	int decimals;
	struct cli_table table;
	struct doc_table doc;
};

static int is_doc(const struct out *o)
{
	return o->format == FMT_LATEX || o->format == FMT_MARKDOWN;
}

static void out_begin(struct out *o, const struct options *opt, const char *const *columns,
                      const char *align, int ncolumns)
{
	static const enum cli_format table_format[] = {[FMT_TSV] = CLI_TSV, [FMT_CSV] = CLI_CSV,
	                                              [FMT_JSON] = CLI_JSON};
	*o = (struct out){.format = opt->format, .decimals = opt->decimals};
	if (is_doc(o)) {
		doc_table_begin(&o->doc, stdout, o->format == FMT_LATEX ? DOC_LATEX : DOC_MARKDOWN,
		                opt->header, columns, align, ncolumns);
		return;
	}
	cli_table_begin(&o->table, stdout, table_format[o->format], opt->header, columns, ncolumns);
	o->table.digits = opt->digits;
}

enum key_kind { KEY_NAME, KEY_LAYER, KEY_GROUP };

/* A row's key; layer numbers are numbers in JSON, ranges of layers take an
 * en dash in LaTeX ("0--8"). */
static void out_key(struct out *o, const char *key, enum key_kind kind)
{
	char range[2 * sizeof ((struct an_row *)0)->key];
	const char *dash = strchr(key, '-');
	if (o->format == FMT_LATEX && kind == KEY_GROUP && dash) {
		snprintf(range, sizeof range, "%.*s--%s", (int)(dash - key), key, dash + 1);
		doc_table_cell(&o->doc, range);
	} else if (is_doc(o))
		doc_table_cell(&o->doc, key);
	else if (kind == KEY_LAYER && o->format == FMT_JSON && strcmp(key, "none") && strcmp(key, "total"))
		cli_table_int(&o->table, strtoll(key, NULL, 10));
	else
		cli_table_str(&o->table, key);
}

static void out_count(struct out *o, int64_t value)
{
	char text[32];
	if (!is_doc(o)) {
		cli_table_int(&o->table, value);
		return;
	}
	doc_format_count(text, sizeof text, value);
	doc_table_cell(&o->doc, text);
}

/* Percentages and averages: full precision for programs, rounded for readers. */
static void out_real(struct out *o, double value, const char *suffix)
{
	char text[64];
	if (!is_doc(o)) {
		cli_table_double(&o->table, value);
		return;
	}
	snprintf(text, sizeof text, "%.*f%s", o->decimals, value, suffix);
	doc_table_cell(&o->doc, text);
}

static void out_end_row(struct out *o)
{
	if (is_doc(o))
		doc_table_end_row(&o->doc);
	else
		cli_table_end_row(&o->table);
}

static void out_end(struct out *o)
{
	if (is_doc(o))
		doc_table_end(&o->doc);
	else
		cli_table_end(&o->table);
}

static void print_rows(const struct an_row *rows, int64_t nrows, const struct options *opt)
{
	static const char *const by_component[] = {"component", "total_channels", "outlier_channels",
	                                           "pct_of_component", "pct_of_outliers"};
	static const char *const by_layer[] = {"layer", "channels", "outliers"};
	static const char *const by_site[] = {"site", "channels", "outliers"};
	static const char *const by_group[] = {"group", "layers", "avg_outliers_per_layer",
	                                       "total_outliers"};
	int groups = opt->groups != NULL;
	const char *const *columns = groups ? by_group
	                             : opt->by == AN_BY_COMPONENT ? by_component
	                             : opt->by == AN_BY_LAYER     ? by_layer
	                                                          : by_site;
	int ncolumns = groups ? 4 : opt->by == AN_BY_COMPONENT ? 5 : 3;
	struct out o;
	out_begin(&o, opt, columns, "lrrrr", ncolumns);
	for (int64_t i = 0; i < nrows; i++) {
		const struct an_row *row = &rows[i];
		if (i == nrows - 1) {
			if (!opt->total)
				break;
			if (is_doc(&o))
				doc_table_rule(&o.doc);
		}
		out_key(&o, row->key, groups ? KEY_GROUP : opt->by == AN_BY_LAYER ? KEY_LAYER : KEY_NAME);
		if (groups) {
			out_count(&o, row->layers);
			out_real(&o, row->avg_per_layer, "");
			out_count(&o, row->outliers);
		} else {
			out_count(&o, row->channels);
			out_count(&o, row->outliers);
			if (opt->by == AN_BY_COMPONENT) {
				out_real(&o, row->pct_of_group, "%");
				out_real(&o, row->pct_of_outliers, "%");
			}
		}
		out_end_row(&o);
	}
	out_end(&o);
}

static void warn_empty_groups(const struct an_row *rows, int ngroups, const char *path)
{
	for (int g = 0; g < ngroups && !cli_quiet; g++)
		if (rows[g].layers == 0)
			cli_warn(path, "warning: no layer of group %s is in the trace", rows[g].key);
}

int main(int argc, char **argv)
{
	struct options o;
	const char *path;
	cli_init(argv[0]);
	parse_args(argc, argv, &o, &path);
	struct at_reader *r = cli_open_trace(path);
	struct at_error err = {0};
	int32_t n = at_reader_info(r)->points;
	struct an_point_count *points = trace_points(r, n);
	if (o.input)
		count_table(o.input, path, points, n);
	else
		count_criterion(r, &o.criterion.params, points, n);
	struct an_row *rows;
	int64_t nrows;
	int rc = o.groups ? an_breakdown_groups(points, n, o.groups, o.ngroups, &rows, &nrows, &err)
	                  : an_breakdown(points, n, o.by, &rows, &nrows, &err);
	if (rc)
		cli_fail(path, "%s", err.message);
	if (o.groups)
		warn_empty_groups(rows, o.ngroups, path);
	print_rows(rows, nrows, &o);
	free(rows);
	free(points);
	free(o.groups);
	cli_close_trace(r);
	return CLI_EXIT_OK;
}
