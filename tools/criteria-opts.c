/* criteria-opts.c: the criterion options that trace-outliers and trace-layers
 * share, and running a criterion over a whole trace (see criteria-opts.h). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "criteria-opts.h"

/* A bit of copts.set per threshold option. */
#define SET(opt) (1u << ((opt) - COPT_FIRST))

static const struct option longopts[] = {
	{"method", required_argument, NULL, 'm'},
	{"k", required_argument, NULL, COPT_K},
	{"stat", required_argument, NULL, COPT_STAT},
	{"m", required_argument, NULL, COPT_M},
	{"beta", required_argument, NULL, COPT_BETA},
	{"tau", required_argument, NULL, COPT_TAU},
	{"t", required_argument, NULL, COPT_T},
	{"share", required_argument, NULL, COPT_SHARE},
	{"layer-share", required_argument, NULL, COPT_LAYER_SHARE},
	{"two-sided", no_argument, NULL, COPT_TWO_SIDED},
	{"min-abs", required_argument, NULL, COPT_MIN_ABS},
	{"ratio", required_argument, NULL, COPT_RATIO},
};

void copts_init(struct copts *c)
{
	*c = (struct copts){.method = AN_GRAND_MEAN};
	an_params_init(&c->params, AN_GRAND_MEAN);
}

const char *copts_shortopts(void)
{
	return "m:k:";
}

size_t copts_longopts(struct option *out, size_t max)
{
	size_t n = sizeof longopts / sizeof longopts[0];
	if (n > max)
		n = max;
	memcpy(out, longopts, n * sizeof *out);
	return n;
}

void copts_longopts_with(struct option *out, size_t max, const struct option *own, size_t n_own)
{
	size_t n = copts_longopts(out, max - n_own - 1);
	memcpy(out + n, own, n_own * sizeof *own);
	memset(&out[n + n_own], 0, sizeof *out);
}

const char *copts_help(void)
{
	return "  -m, --method=NAME      grand-mean (default), layer-sigma, tensor-sigma,\n"
	       "                         ratio, massive, mad, kurtosis or frequency\n"
	       "  -k K                   threshold of grand-mean, layer-sigma and mad in\n"
	       "                         sigmas or MADs (6), of kurtosis in excess kurtosis (10)\n"
	       "      --stat=S           the per-channel statistic they compare: mean,\n"
	       "                         absmean, absmax, std or rms (default mean;\n"
	       "                         layer-sigma: absmax)\n"
	       "      --m=M, --beta=B    tensor-sigma: mean_c - mu > M sigma and std_c < B\n"
	       "                         (4, 1/3)\n"
	       "      --two-sided        tensor-sigma: |mean_c - mu| > M sigma\n"
	       "      --min-abs=A, --ratio=R  massive: |x| > A and |x| > R median|x|\n"
	       "                         (100, 1000)\n"
	       "      --tau=T            ratio: |x| > T mean|x| of the tensor (1000)\n"
	       "      --t=T, --share=S   frequency: |x| >= T on at least a share S of the\n"
	       "                         channel's values (6, 0.06)\n"
	       "      --layer-share=S    frequency: and at its site in at least a share S of\n"
	       "                         the layers that have the site (0.25; 0: no such\n"
	       "                         condition)\n";
}

static void list_names(char *buf, size_t size, int count, const char *(*name)(int))
{
	size_t at = 0;
	buf[0] = 0;
	for (int i = 0; i < count && at < size; i++) {
		int n = snprintf(buf + at, size - at, "%s%s", i ? ", " : "", name(i));
		if (n < 0)
			break;
		at += (size_t)n;
	}
}

static const char *method_name(int m)
{
	return an_method_name((enum an_method)m);
}

static const char *stat_name(int s)
{
	return an_stat_name((enum an_stat)s);
}

/* A number >= low (> low when low_open) and <= high. */
static double parse_in(const char *option, const char *arg, double low, int low_open, double high,
                       const char *range)
{
	double v;
	if (cli_parse_double(arg, &v) || v < low || (low_open && v == low) || v > high)
		cli_usage_error("%s must be %s, not '%s'", option, range, arg);
	return v;
}

int copts_handle(struct copts *c, int opt, const char *arg)
{
	char names[256];
	switch (opt) {
	case 'm':
		if (an_method_parse(arg, &c->method)) {
			list_names(names, sizeof names, AN_METHOD_COUNT, method_name);
			cli_usage_error("unknown method '%s' (%s)", arg, names);
		}
		c->method_given = 1;
		c->given = 1;
		return 1;
	case 'k':
	case COPT_K:
		if (cli_parse_double(arg, &c->k))
			cli_usage_error("-k must be a number, not '%s'", arg);
		opt = COPT_K;
		break;
	case COPT_STAT:
		if (an_stat_parse(arg, &c->stat)) {
			list_names(names, sizeof names, AN_STAT_COUNT, stat_name);
			cli_usage_error("unknown statistic '%s' (%s)", arg, names);
		}
		break;
	case COPT_M: c->m = parse_in("--m", arg, 0, 1, INFINITY, "a positive number"); break;
	case COPT_BETA: c->beta = parse_in("--beta", arg, 0, 1, INFINITY, "a positive number"); break;
	case COPT_TAU: c->tau = parse_in("--tau", arg, 0, 1, INFINITY, "a positive number"); break;
	case COPT_T: c->t = parse_in("--t", arg, 0, 1, INFINITY, "a positive number"); break;
	case COPT_SHARE: c->share = parse_in("--share", arg, 0, 1, 1, "a share in (0, 1]"); break;
	case COPT_LAYER_SHARE:
		c->layer_share = parse_in("--layer-share", arg, 0, 0, 1, "a share in [0, 1]");
		break;
	case COPT_TWO_SIDED: break;
	case COPT_MIN_ABS: c->min_abs = parse_in("--min-abs", arg, 0, 1, INFINITY, "a positive number"); break;
	case COPT_RATIO: c->ratio = parse_in("--ratio", arg, 0, 1, INFINITY, "a positive number"); break;
	default: return 0;
	}
	c->set |= SET(opt);
	c->given = 1;
	return 1;
}

/* Which methods read an option. */
static int uses(enum an_method m, int opt)
{
	switch (opt) {
	case COPT_K: return m == AN_GRAND_MEAN || m == AN_LAYER_SIGMA || m == AN_MAD || m == AN_KURTOSIS;
	case COPT_STAT: return m == AN_GRAND_MEAN || m == AN_LAYER_SIGMA || m == AN_MAD;
	case COPT_M: case COPT_BETA: case COPT_TWO_SIDED: return m == AN_TENSOR_SIGMA;
	case COPT_TAU: return m == AN_RATIO;
	case COPT_MIN_ABS: case COPT_RATIO: return m == AN_MASSIVE;
	default: return m == AN_FREQUENCY; /* --t, --share, --layer-share */
	}
}

static const char *option_name(int opt)
{
	if (opt == COPT_K)
		return "-k";
	for (size_t i = 0; i < sizeof longopts / sizeof longopts[0]; i++)
		if (longopts[i].val == opt)
			return longopts[i].name;
	return "?";
}

void copts_finish(struct copts *c)
{
	for (int opt = COPT_FIRST; opt <= COPT_K; opt++)
		if ((c->set & SET(opt)) && !uses(c->method, opt))
			cli_usage_error("%s%s does not apply to method '%s'", opt == COPT_K ? "" : "--",
			                option_name(opt), an_method_name(c->method));
	struct an_params *p = &c->params;
	an_params_init(p, c->method);
	if (c->set & SET(COPT_K)) {
		/* excess kurtosis may be 0 or below; sigmas and MADs may not */
		if (c->method != AN_KURTOSIS && !(c->k > 0))
			cli_usage_error("-k must be a positive number, not '%g'", c->k);
		p->k = c->k;
	}
	if (c->set & SET(COPT_STAT))
		p->stat = c->stat;
	if (c->set & SET(COPT_M))
		p->m = c->m;
	if (c->set & SET(COPT_BETA))
		p->beta = c->beta;
	if (c->set & SET(COPT_TWO_SIDED))
		p->two_sided = 1;
	if (c->set & SET(COPT_TAU))
		p->tau = c->tau;
	if (c->set & SET(COPT_T))
		p->freq_t = c->t;
	if (c->set & SET(COPT_SHARE))
		p->freq_share = c->share;
	if (c->set & SET(COPT_LAYER_SHARE))
		p->freq_layers = c->layer_share;
	if (c->set & SET(COPT_MIN_ABS))
		p->massive_abs = c->min_abs;
	if (c->set & SET(COPT_RATIO))
		p->massive_ratio = c->ratio;
}

int copts_needs_hist(enum an_method m)
{
	return m == AN_FREQUENCY || m == AN_MASSIVE || m == AN_RATIO;
}

static void free_outliers(struct an_outliers *per_point, int32_t n)
{
	for (int32_t i = 0; i < n; i++)
		an_outliers_free(&per_point[i]);
}

/* The criterion sees statistics only: say which trace and point they were. */
static void name_point(const struct at_reader *r, int32_t i, struct at_error *err)
{
	char message[sizeof err->message];
	snprintf(message, sizeof message, "%s", err->message);
	snprintf(err->message, sizeof err->message, "%.160s: point '%.160s': %.160s",
	         at_reader_path(r), at_reader_point(r, i)->name, message);
}

int copts_run(struct at_reader *r, const struct an_params *p, const struct an_point_count *points,
              struct an_outliers *per_point, struct at_error *err)
{
	int32_t n = at_reader_info(r)->points;
	int hist = copts_needs_hist(p->method);
	memset(per_point, 0, (size_t)n * sizeof *per_point);
	int32_t *all = malloc(((size_t)n + 1) * sizeof *all);
	if (!all)
		cli_fail(at_reader_path(r), "out of memory");
	for (int32_t i = 0; i < n; i++)
		all[i] = i;
	/* a load that fails exits 1 with the reader's message, as the callers did */
	struct cli_prefetch *pf = cli_prefetch_start(r, all, n, hist, NULL);
	free(all);
	for (int32_t i = 0; i < n; i++) {
		struct at_stats s;
		cli_prefetch_take(pf, i, &s);
		int rc = an_channel_outliers(&s, p, &per_point[i], err);
		cli_prefetch_recycle(pf, &s);
		if (rc) {
			cli_prefetch_stop(pf);
			name_point(r, i, err);
			free_outliers(per_point, i + 1);
			return rc;
		}
		cli_progress("finding outliers", i + 1, n);
	}
	cli_progress_done();
	cli_prefetch_stop(pf);
	/* LLM.int8's second condition belongs to the frequency method (as in trace-outliers) */
	if (p->method == AN_FREQUENCY && p->freq_layers > 0 && n > 0) {
		int rc = an_require_layer_share(points, per_point, n, p->freq_layers, err);
		if (rc) {
			free_outliers(per_point, n);
			return rc;
		}
	}
	return AT_OK;
}

struct an_outliers *copts_outliers(struct at_reader *r, const struct an_params *p)
{
	int32_t n = at_reader_info(r)->points;
	struct an_point_count *points = calloc((size_t)n + 1, sizeof *points);
	struct an_outliers *per_point = calloc((size_t)n + 1, sizeof *per_point);
	if (!points || !per_point)
		cli_fail(at_reader_path(r), "out of memory");
	for (int32_t i = 0; i < n; i++) {
		const struct at_point_info *info = at_reader_point(r, i);
		points[i] = (struct an_point_count){info->name, info->layer, info->component,
		                                    info->site, info->channels, 0};
	}
	struct at_error err = {0};
	if (copts_run(r, p, points, per_point, &err))
		cli_fail_at(&err);
	free(points);
	return per_point;
}

void copts_outliers_free(struct an_outliers *per_point, int32_t n)
{
	for (int32_t i = 0; per_point && i < n; i++)
		an_outliers_free(&per_point[i]);
	free(per_point);
}
