/* criteria-opts.h: the options that choose an outlier criterion and its
 * thresholds (-m, -k, --stat, ...), shared by the tools that run one
 * (trace-outliers, trace-layers) so that they parse and mean the same, and
 * running a criterion over every point of a trace.
 *
 * Use: copts_init; append copts_shortopts() and copts_longopts() to the
 * tool's own options (own long option values below COPT_FIRST); offer every
 * getopt_long result to copts_handle first; copts_finish after the loop;
 * then c.params holds the parameters.  copts_help() goes into --help. */
#ifndef AT_CRITERIA_OPTS_H
#define AT_CRITERIA_OPTS_H

#include <getopt.h>
#include <stddef.h>

#include "acttrace.h"
#include "analysis.h"

/* getopt_long values of the long-only criterion options. */
enum {
	COPT_FIRST = 0x1000,
	COPT_STAT = COPT_FIRST,
	COPT_M,
	COPT_BETA,
	COPT_TAU,
	COPT_T,
	COPT_SHARE,
	COPT_LAYER_SHARE,
	COPT_TWO_SIDED,
	COPT_MIN_ABS,
	COPT_RATIO,
	COPT_K, /* --k, the long spelling of -k */
};

struct copts {
	struct an_params params; /* valid after copts_finish */
	int given;               /* any criterion option was given */
	int method_given;
	enum an_method method;
	/* Thresholds may come before -m: they are kept apart and laid over the
	 * method's defaults by copts_finish. */
	unsigned set;
	double k, m, beta, tau, t, share, layer_share, min_abs, ratio;
	enum an_stat stat;
};

void copts_init(struct copts *c);
/* "m:k:" */
const char *copts_shortopts(void);
/* Copy the criterion options (no terminating entry) into out, at most max
 * of them; returns how many. */
size_t copts_longopts(struct option *out, size_t max);
/* The criterion options, then a tool's own n_own, then the terminating
 * entry, into out (room for max entries); the table getopt_long takes. */
void copts_longopts_with(struct option *out, size_t max, const struct option *own, size_t n_own);
/* The option lines for --help, each ending in a newline. */
const char *copts_help(void);
/* Handle one getopt_long result: 1 when it was a criterion option, 0 when
 * not.  A bad value is a usage error (exit 2). */
int copts_handle(struct copts *c, int opt, const char *arg);
/* Fill c->params: the method's published defaults (an_params_init) with the
 * options laid over them.  An option the method does not read is a usage
 * error, as is a -k that is not positive (any number for kurtosis). */
void copts_finish(struct copts *c);

/* 1 when the method reads the |x| histograms (at_reader_load_stats), 0 when
 * the moments are enough (at_reader_load_moments, a fraction of the I/O). */
int copts_needs_hist(enum an_method m);

/* Run the criterion on every point of the trace, in the reader's order, with
 * progress on the terminal: per_point[i] for point i (free each with
 * an_outliers_free).  points[i] describes point i: the frequency method's
 * layer condition (an_require_layer_share with p->freq_layers > 0) groups
 * by their layer and site.  Errors name the trace and the point; on failure
 * nothing is left to free.  err must not be NULL. */
int copts_run(struct at_reader *r, const struct an_params *p, const struct an_point_count *points,
              struct an_outliers *per_point, struct at_error *err);

/* copts_run over a whole trace for a tool: the per-point outliers (n = the
 * trace's points), or exit 1 with the message; free with copts_outliers_free. */
struct an_outliers *copts_outliers(struct at_reader *r, const struct an_params *p);
void copts_outliers_free(struct an_outliers *per_point, int32_t n);

#endif /* AT_CRITERIA_OPTS_H */
