/* an-driver.c: test helper that runs the outlier criteria of analysis/criteria.c
 * on every point of a trace and prints what they found, so that the Python
 * tests can check them against numpy without depending on trace-outliers.
 * Not installed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"
#include "analysis.h"

static const char usage_text[] =
	"usage: an-driver [-c] [-e [-n]] [-M] METHOD [NAME=VALUE ...] FILE\n"
	"NAME: k stat m beta two_sided tau abs ratio t share layers\n"
	"Prints point<TAB>channel<TAB>score per flagged channel (points in trace order);\n"
	"  -e       point<TAB>token<TAB>channel<TAB>value<TAB>ratio per flagged element\n"
	"           (ratio, massive; extremes and every sampled row, -n: no samples);\n"
	"  -c       also, before each point's rows, point<TAB>#<TAB>center<TAB>spread<TAB>flagged\n"
	"           (with -e: point<TAB>#<TAB>reference<TAB>threshold<TAB>complete<TAB>elements);\n"
	"  -M       point<TAB>median_abs (an_hist_median_abs) per point.\n"
	"frequency with layers > 0 (the default 0.25) applies an_require_layer_share.\n"
	"Methods that need no histogram get at_reader_load_moments, as trace-outliers.\n"
	"Exit 0, 1 when the library fails (one line on stderr), 2 on bad usage.\n";

enum mode { CHANNELS, ELEMENTS, MEDIAN };

static _Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void die(int status, const char *fmt, ...)
{
	va_list ap;
	fputs("an-driver: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

static double parse_number(const char *name, const char *text)
{
	char *end;
	double v = strtod(text, &end);
	if (!*text || *end)
		die(2, "%s: not a number: '%s'", name, text);
	return v;
}

static void set_param(struct an_params *p, const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq)
		die(2, "expected NAME=VALUE, not '%s'", arg);
	char name[32];
	snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
	const char *value = eq + 1;
	if (strcmp(name, "stat") == 0) {
		if (an_stat_parse(value, &p->stat))
			die(2, "unknown statistic '%s'", value);
		return;
	}
	double v = parse_number(name, value);
	if (strcmp(name, "k") == 0)
		p->k = v;
	else if (strcmp(name, "m") == 0)
		p->m = v;
	else if (strcmp(name, "beta") == 0)
		p->beta = v;
	else if (strcmp(name, "two_sided") == 0)
		p->two_sided = v != 0;
	else if (strcmp(name, "tau") == 0)
		p->tau = v;
	else if (strcmp(name, "abs") == 0)
		p->massive_abs = v;
	else if (strcmp(name, "ratio") == 0)
		p->massive_ratio = v;
	else if (strcmp(name, "t") == 0)
		p->freq_t = v;
	else if (strcmp(name, "share") == 0)
		p->freq_share = v;
	else if (strcmp(name, "layers") == 0)
		p->freq_layers = v;
	else
		die(2, "unknown parameter '%s'", name);
}

/* Everything, or only the moments (no histogram, no extremes). */
static void load(struct at_reader *r, int32_t i, int whole, struct at_stats *s)
{
	struct at_error err = { 0, "" };
	if ((whole ? at_reader_load_stats : at_reader_load_moments)(r, i, s, &err))
		die(1, "%s", err.message);
}

static void print_elements(struct at_reader *r, int32_t i, const struct at_stats *s,
                           const struct an_params *p, int summary, int use_samples)
{
	const struct at_point_info *info = at_reader_point(r, i);
	struct at_error err = { 0, "" };
	int64_t n = use_samples ? info->samples : 0;
	float *rows = malloc((size_t)(n ? n : 1) * (size_t)info->channels * sizeof *rows);
	int64_t *tokens = malloc((size_t)(n ? n : 1) * sizeof *tokens);
	if (!rows || !tokens)
		die(1, "out of memory");
	if (n && at_reader_read_samples(r, i, 0, n, rows, tokens, &err))
		die(1, "%s", err.message);
	struct an_elements e;
	if (an_element_outliers(s, rows, tokens, n, p, &e, &err))
		die(1, "%s", err.message);
	if (summary)
		printf("%s\t#\t%.17g\t%.17g\t%d\t%lld\n", info->name, e.reference, e.threshold,
		       e.complete, (long long)e.n);
	for (int64_t j = 0; j < e.n; j++)
		printf("%s\t%lld\t%d\t%.17g\t%.17g\n", info->name, (long long)e.items[j].token,
		       (int)e.items[j].channel, e.items[j].value, e.items[j].ratio);
	an_elements_free(&e);
	free(rows);
	free(tokens);
}

static void element_mode(struct at_reader *r, const struct an_params *p, enum mode mode,
                         int summary, int use_samples)
{
	for (int32_t i = 0; i < at_reader_info(r)->points; i++) {
		struct at_stats s;
		load(r, i, 1, &s);
		if (mode == MEDIAN)
			printf("%s\t%.17g\n", at_reader_point(r, i)->name, an_hist_median_abs(&s));
		else
			print_elements(r, i, &s, p, summary, use_samples);
		at_stats_free(&s);
	}
}

static void channel_mode(struct at_reader *r, const struct an_params *p, int summary)
{
	int32_t n = at_reader_info(r)->points;
	struct an_outliers *found = calloc((size_t)(n ? n : 1), sizeof *found);
	struct an_point_count *points = calloc((size_t)(n ? n : 1), sizeof *points);
	struct at_error err = { 0, "" };
	if (!found || !points)
		die(1, "out of memory");
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *info = at_reader_point(r, i);
		struct at_stats s;
		load(r, i, p->method == AN_MASSIVE || p->method == AN_FREQUENCY, &s);
		if (an_channel_outliers(&s, p, &found[i], &err))
			die(1, "%s", err.message);
		at_stats_free(&s);
		points[i] = (struct an_point_count){ info->name, info->layer, info->component,
			                             info->site, info->channels, found[i].n };
	}
	if (p->method == AN_FREQUENCY && p->freq_layers > 0 &&
	    an_require_layer_share(points, found, n, p->freq_layers, &err))
		die(1, "%s", err.message);
	for (int32_t i = 0; i < n; i++) {
		if (summary)
			printf("%s\t#\t%.17g\t%.17g\t%lld\n", points[i].point, found[i].center,
			       found[i].spread, (long long)found[i].n);
		for (int64_t f = 0; f < found[i].n; f++)
			printf("%s\t%lld\t%.17g\n", points[i].point, (long long)found[i].flags[f].channel,
			       found[i].flags[f].score);
		an_outliers_free(&found[i]);
	}
	free(found);
	free(points);
}

int main(int argc, char **argv)
{
	int summary = 0, elements = 0, median = 0, use_samples = 1, a = 1;
	for (; a < argc && argv[a][0] == '-' && argv[a][1]; a++) {
		if (strcmp(argv[a], "-c") == 0)
			summary = 1;
		else if (strcmp(argv[a], "-e") == 0)
			elements = 1;
		else if (strcmp(argv[a], "-M") == 0)
			median = 1;
		else if (strcmp(argv[a], "-n") == 0)
			use_samples = 0;
		else if (strcmp(argv[a], "-h") == 0) {
			fputs(usage_text, stdout);
			return 0;
		} else
			die(2, "unknown option '%s'", argv[a]);
	}
	if (argc - a < 2)
		die(2, "usage: an-driver [-c] [-e [-n]] [-M] METHOD [NAME=VALUE ...] FILE");
	enum an_method method;
	if (an_method_parse(argv[a], &method))
		die(2, "unknown method '%s'", argv[a]);
	struct an_params p;
	an_params_init(&p, method);
	for (a++; a < argc - 1; a++)
		set_param(&p, argv[a]);
	struct at_reader *r;
	struct at_error err = { 0, "" };
	if (at_reader_open(&r, argv[argc - 1], &err))
		die(1, "%s", err.message);
	enum mode mode = median ? MEDIAN : elements ? ELEMENTS : CHANNELS;
	if (mode == CHANNELS)
		channel_mode(r, &p, summary);
	else
		element_mode(r, &p, mode, summary, use_samples);
	at_reader_close(r);
	if (fflush(stdout) || ferror(stdout))
		die(1, "write error on standard output");
	return 0;
}
