/* trace-merge: one trace from several traces of the same points, as if one
 * run had seen all their tokens (at_merge in libacttrace does the work). */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct options {
	const char *output;
	struct at_merge_options merge;
};

_Noreturn static void usage(void)
{
	printf("Usage: %s [OPTION]... -o OUT FILE...\n"
	       "Merge traces of the same points into OUT, as one run over all their tokens:\n"
	       "counts and histograms add, moments combine exactly, extremes re-rank, tokens\n"
	       "and samples concatenate.  The ranks' traces of one tensor-parallel capture\n"
	       "(points holding channel slices) are instead assembled into whole points.\n"
	       "OUT is written whole or not at all.\n"
	       "\n"
	       "  -o, --output=OUT       the merged trace (replaced; may not be an input)\n"
	       "      --force            keep the first file's weights when the inputs' differ\n"
	       "      --allow-incomplete merge incomplete traces (complete=0) too\n"
	       "  -q, --quiet            no progress\n"
	       "  -h, --help             this help\n"
	       "      --version          print the version\n"
	       "\n"
	       "See trace-merge(1).\n",
	       cli_prog);
	exit(CLI_EXIT_OK);
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_VERSION = 256, OPT_FORCE, OPT_ALLOW_INCOMPLETE };
	static const struct option longopts[] = {
		{"output", required_argument, NULL, 'o'},
		{"force", no_argument, NULL, OPT_FORCE},
		{"allow-incomplete", no_argument, NULL, OPT_ALLOW_INCOMPLETE},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	o->output = NULL;
	at_merge_options_init(&o->merge);
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "o:qh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'o': o->output = optarg; break;
		case OPT_FORCE: o->merge.force = 1; break;
		case OPT_ALLOW_INCOMPLETE: o->merge.allow_incomplete = 1; break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		default: cli_bad_option(argv);
		}
	}
	if (!o->output)
		cli_usage_error("-o OUT is required");
	if (optind == argc)
		cli_usage_error("no traces to merge");
	return optind;
}

/* ^C and kill stop the merge through its progress callback, so that the
 * library removes its temporary before the signal ends the process. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static int progress(void *arg, const char *stage, double done, double total)
{
	(void)arg;
	cli_progress(stage, done, total);
	return stop_signal != 0;
}

int main(int argc, char **argv)
{
	struct options o;
	cli_init(argv[0]);
	int first = parse_args(argc, argv, &o);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	o.merge.progress = progress;
	/* at_merge opens every input before it creates its temporary, so a
	 * crash inside HDF5 on a damaged input's attributes leaves nothing */
	cli_guard_all(argv + first, argc - first);
	struct at_error err = {0};
	int status = at_merge(o.output, (const char *const *)argv + first, argc - first, &o.merge,
	                      &err);
	cli_progress_done();
	if (status == AT_ECANCELED && stop_signal) {
		signal(stop_signal, SIG_DFL);
		raise(stop_signal);
	}
	if (status)
		cli_fail_at(&err);
	return CLI_EXIT_OK;
}
