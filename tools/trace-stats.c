/* trace-stats: what a trace holds: its attributes, one row per recording
 * point (channels pooled), or one row per channel of one point. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct options {
	const char *point;
	int info;
	enum cli_format format;
	int header;
	int digits;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Summarise an acttrace trace: one row per recording point, the statistics\n"
	       "pooled over its channels.\n"
	       "\n"
	       "  -p, --point=NAME     one row per channel of point NAME instead\n"
	       "  -i, --info           the trace's attributes, one row each (key, value)\n"
	       "  -f, --format=FMT     tsv (default), csv or json\n"
	       "  -H, --no-header      omit the header line (tsv, csv)\n"
	       "  -d, --digits=N       significant digits of real numbers (default 9; 17\n"
	       "                       round-trips a double exactly)\n"
	       "  -q, --quiet          no warnings about incomplete traces\n"
	       "  -h, --help           this help\n"
	       "      --version        print the version\n"
	       "\n"
	       "Point columns: point layer component site direction channels count mean std\n"
	       "min max absmax absmean kurtosis nonfinite.  Channel columns: channel count\n"
	       "mean std skewness kurtosis min max absmax absmean nonfinite.  std uses n-1,\n"
	       "kurtosis is excess kurtosis.  See trace-stats(1).\n",
	       cli_prog);
	exit(CLI_EXIT_OK);
}

static void parse_args(int argc, char **argv, struct options *o, const char **path)
{
	enum { OPT_VERSION = 256 };
	static const struct option longopts[] = {
		{"point", required_argument, NULL, 'p'}, {"info", no_argument, NULL, 'i'},
		{"format", required_argument, NULL, 'f'}, {"no-header", no_argument, NULL, 'H'},
		{"digits", required_argument, NULL, 'd'}, {"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){.format = CLI_TSV, .header = 1, .digits = 9};
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "p:if:Hd:qh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p': o->point = optarg; break;
		case 'i': o->info = 1; break;
		case 'f': o->format = cli_format_option(optarg); break;
		case 'H': o->header = 0; break;
		case 'd': o->digits = cli_digits_option(optarg); break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (optind != argc - 1)
		cli_usage_error(optind == argc ? "no trace file given" : "one trace file at a time");
	if (o->info && o->point)
		cli_usage_error("--info and --point do not go together");
	*path = argv[optind];
}

static void begin_table(struct cli_table *t, const struct options *o,
                        const char *const *columns, int n)
{
	cli_table_begin(t, stdout, o->format, o->header, columns, n);
	t->digits = o->digits;
}

static void print_info(const struct at_reader *r, const struct options *o)
{
	static const char *const columns[] = {"key", "value"};
	const struct at_trace_info *info = at_reader_info(r);
	char version[16], complete[4], tokens[32], points[16], weights[16];
	snprintf(version, sizeof version, "%d", info->format_version);
	snprintf(complete, sizeof complete, "%d", info->complete);
	snprintf(tokens, sizeof tokens, "%lld", (long long)info->tokens);
	snprintf(points, sizeof points, "%d", (int)info->points);
	snprintf(weights, sizeof weights, "%d", (int)info->weights);
	const char *rows[][2] = {
		{"file", at_reader_path(r)}, {"format", info->format}, {"format_version", version},
		{"producer", info->producer}, {"created", info->created}, {"model", info->model},
		{"source_dtype", info->source_dtype}, {"complete", complete}, {"tokens", tokens},
		{"points", points}, {"weights", weights}, {"notes", info->notes},
	};
	struct cli_table t;
	begin_table(&t, o, columns, 2);
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		cli_table_str(&t, rows[i][0]);
		cli_table_str(&t, rows[i][1]);
		cli_table_end_row(&t);
	}
	cli_table_end(&t);
}

static void print_moments(struct cli_table *t, const struct at_moments *m, int per_channel)
{
	cli_table_uint(t, m->count);
	cli_table_double(t, m->count ? m->mean : NAN);
	cli_table_double(t, at_moments_std(m));
	if (per_channel)
		cli_table_double(t, at_moments_skewness(m));
	else {
		cli_table_double(t, m->min);
		cli_table_double(t, m->max);
		cli_table_double(t, m->absmax);
		cli_table_double(t, at_moments_absmean(m));
	}
	cli_table_double(t, at_moments_kurtosis(m));
	if (per_channel) {
		cli_table_double(t, m->min);
		cli_table_double(t, m->max);
		cli_table_double(t, m->absmax);
		cli_table_double(t, at_moments_absmean(m));
	}
	cli_table_uint(t, m->nonfinite);
}

static void print_points(struct at_reader *r, const struct options *o)
{
	static const char *const columns[] = {"point", "layer", "component", "site", "direction",
	                                      "channels", "count", "mean", "std", "min", "max",
	                                      "absmax", "absmean", "kurtosis", "nonfinite"};
	struct cli_table t;
	struct at_error err = {0};
	int32_t n = at_reader_info(r)->points;
	begin_table(&t, o, columns, (int)(sizeof columns / sizeof columns[0]));
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *p = at_reader_point(r, i);
		struct at_stats s;
		struct at_moments pooled;
		if (at_reader_load_moments(r, i, &s, &err))
			cli_fail_at(&err);
		at_stats_pool(&s, &pooled);
		at_stats_free(&s);
		cli_table_str(&t, p->name);
		cli_table_int(&t, p->layer);
		cli_table_str(&t, p->component);
		cli_table_str(&t, p->site);
		cli_table_str(&t, p->direction);
		cli_table_int(&t, p->channels);
		print_moments(&t, &pooled, 0);
		cli_table_end_row(&t);
		cli_progress("reading points", i + 1, n);
	}
	cli_progress_done();
	cli_table_end(&t);
}

static void print_channels(struct at_reader *r, const struct options *o)
{
	static const char *const columns[] = {"channel", "count", "mean", "std", "skewness",
	                                      "kurtosis", "min", "max", "absmax", "absmean",
	                                      "nonfinite"};
	int32_t index;
	if (at_reader_find_point(r, o->point, &index))
		cli_fail(at_reader_path(r), "no point '%s' (trace-stats lists the points)", o->point);
	struct at_error err = {0};
	struct at_stats s;
	if (at_reader_load_moments(r, index, &s, &err))
		cli_fail_at(&err);
	struct cli_table t;
	begin_table(&t, o, columns, (int)(sizeof columns / sizeof columns[0]));
	for (int64_t c = 0; c < s.channels; c++) {
		struct at_moments m;
		at_stats_channel(&s, c, &m);
		cli_table_int(&t, c);
		print_moments(&t, &m, 1);
		cli_table_end_row(&t);
	}
	at_stats_free(&s);
	cli_table_end(&t);
}

int main(int argc, char **argv)
{
	struct options o;
	const char *path;
	cli_init(argv[0]);
	parse_args(argc, argv, &o, &path);
	struct at_reader *r = cli_open_trace(path);
	if (o.info)
		print_info(r, &o);
	else if (o.point)
		print_channels(r, &o);
	else
		print_points(r, &o);
	cli_close_trace(r);
	return CLI_EXIT_OK;
}
