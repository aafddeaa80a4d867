/* cli.h: what every acttrace tool shares: messages and exit codes, number
 * parsing, table output (TSV/CSV/JSON), progress on a terminal. */
#ifndef AT_CLI_H
#define AT_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "acttrace.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_INPUT = 1, CLI_EXIT_USAGE = 2 };

extern const char *cli_prog;
extern int cli_quiet; /* -q: no progress */

void cli_init(const char *prog);
/* "prog (acttrace) X.Y.Z" on stdout, exit 0. */
_Noreturn void cli_version(void);
/* "prog: message" and "Try 'prog --help'." on stderr, exit 2. */
_Noreturn void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For getopt_long's '?': name the offending option in our own words (set
 * opterr = 0 before parsing), exit 2. */
_Noreturn void cli_bad_option(char **argv);
/* "prog: file: message" on stderr (no file part when file is NULL), exit 1. */
_Noreturn void cli_fail(const char *file, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, from a library error (its message already names the file). */
_Noreturn void cli_fail_at(const struct at_error *err);
void cli_warn(const char *file, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Open a trace or exit 1 with the reader's message; warn (unless -q) that an
 * incomplete trace (complete=0) is read as of its last checkpoint, and that
 * one rank's trace of a tensor-parallel capture holds channel slices. */
struct at_reader *cli_open_trace(const char *path);
/* Close a trace opened by cli_open_trace. */
void cli_close_trace(struct at_reader *r);
/* While a tool reads traces, a crash inside HDF5 on a damaged file prints
 * "tool: FILE: damaged trace (...)" and exits 1: cli_open_trace guards its
 * trace until cli_close_trace; cli_guard_all guards traces the library opens
 * itself (trace-merge's inputs), each named when they are few, "one of the
 * N inputs" when not. */
void cli_guard_all(char *const *paths, int n);

/* A point's statistics, whole (with the histogram and extremes) or its
 * moments only, or exit 1 with the reader's message.  hist_for, when not
 * NULL, names what needs the histogram: a point without one is an error
 * ("point 'P' has no histogram, which HIST_FOR needs"). */
void cli_load_point(struct at_reader *r, int32_t index, int whole, const char *hist_for,
                    struct at_stats *s);
/* Points loaded ahead of their use by background threads: a pass over a
 * trace's histograms is mostly HDF5 reads and decompression, which then
 * overlap each other (the reader decompresses outside its lock) and the
 * tool's own work on the point before.  cli_prefetch_start takes the n
 * points, in the order the tool will take them; cli_prefetch_take returns
 * the next one's statistics (index must be that point; whole and hist_for
 * as cli_load_point, exit 1 on a failed load), to be freed with
 * at_stats_free; cli_prefetch_stop waits for the threads and frees what was
 * not taken. */
struct cli_prefetch;
struct cli_prefetch *cli_prefetch_start(struct at_reader *r, const int32_t *points, int32_t n,
                                        int whole, const char *hist_for);
void cli_prefetch_take(struct cli_prefetch *pf, int32_t index, struct at_stats *s);
/* Instead of at_stats_free: hand a taken point's statistics back, for a
 * later load to overwrite (s is left empty). */
void cli_prefetch_recycle(struct cli_prefetch *pf, struct at_stats *s);
void cli_prefetch_stop(struct cli_prefetch *pf);
/* All sampled rows of a point ([samples][channels]), and their tokens when
 * tokens is not NULL; NULL (and no tokens) when it has none; exit 1 on
 * failure. */
float *cli_load_samples(struct at_reader *r, int32_t index, int64_t **tokens);

/* A file written through a temporary beside it and renamed over it by
 * cli_out_commit: until then, an exit (cli_fail included) or a signal
 * (SIGPIPE from a reader that stopped, ^C) removes the temporary, so that
 * FILE is never left half-written.  cli_out_open exits 1 when it cannot
 * create the temporary, cli_out_commit when the writes or the rename fail. */
struct cli_out_file {
	FILE *f;
	char *path, *tmp;
	struct cli_out_file *next;
};
void cli_out_open(struct cli_out_file *o, const char *path);
void cli_out_commit(struct cli_out_file *o);

/* Strict parsers: the whole string must be a number in range; 0 on success. */
int cli_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);
int cli_parse_double(const char *s, double *out);

/* A comma-separated list of numbers ("4,6,8") into out, at most max of them:
 * how many, or -1 for an empty item, a bad number or too many. */
int cli_parse_list(const char *s, double *out, int max);

/* Tables: one header line (unless disabled), one row per thing. */
enum cli_format { CLI_TSV, CLI_CSV, CLI_JSON };
int cli_parse_format(const char *s, enum cli_format *out);
/* The options every table-writing tool takes: -f/--format and -d/--digits;
 * a bad value is a usage error (exit 2). */
enum cli_format cli_format_option(const char *arg);
int cli_digits_option(const char *arg);

struct cli_table {
	FILE *out;
	enum cli_format format;
	int header;
	int digits; /* significant digits of doubles */
	const char *const *columns;
	int ncolumns;
	int column; /* next column in the current row */
	long rows;
};
void cli_table_begin(struct cli_table *t, FILE *out, enum cli_format format, int header,
                     const char *const *columns, int ncolumns);
void cli_table_str(struct cli_table *t, const char *value);
void cli_table_int(struct cli_table *t, int64_t value);
void cli_table_uint(struct cli_table *t, uint64_t value);
void cli_table_double(struct cli_table *t, double value); /* NaN/Inf: "nan"/"inf", JSON null */
void cli_table_end_row(struct cli_table *t);
/* Finish the table and check stdout for write errors (exit 1 on failure). */
void cli_table_end(struct cli_table *t);

/* The point selection of the tools that read many points: -p/--point GLOB
 * (fnmatch; repeated, a point matching any of them), --component C,
 * -l/--layers A-B or A. */
#define CLI_MAX_GLOBS 32
struct cli_selection {
	const char *point_glob[CLI_MAX_GLOBS];
	int globs;
	const char *component;
	int32_t layer_min, layer_max;
};
void cli_selection_init(struct cli_selection *s);
/* -l's argument; a usage error (exit 2) when it is not A-B (A <= B) or A. */
void cli_selection_layers(struct cli_selection *s, const char *arg);
int cli_selected(const struct cli_selection *s, const struct at_point_info *p);
/* Whether a name matches the -p patterns (any of them; all without one). */
int cli_selected_name(const struct cli_selection *s, const char *name);
/* The indices of the points sel selects, in order (*n of them; never NULL). */
int32_t *cli_selected_points(struct at_reader *r, const struct cli_selection *sel, int32_t *n);
/* One getopt_long result: 1 when it was -p, -l or component_opt (the tool's
 * value for --component), handled; 0 when not. */
int cli_selection_option(struct cli_selection *s, int opt, const char *arg, int component_opt);
/* The selection's option lines for --help. */
const char *cli_selection_help(void);

/* The format options of a table tool: -f, -H, -d and -q; 1 when opt was one
 * of them, handled (a bad value is a usage error). */
struct cli_format_opts {
	enum cli_format format;
	int header;
	int digits;
};
void cli_format_opts_init(struct cli_format_opts *f);
int cli_format_opts_option(struct cli_format_opts *f, int opt, const char *arg);
/* Their option lines for --help, with -h and --version. */
const char *cli_format_opts_help(void);

/* Progress on stderr, only when it is a terminal and not -q. */
void cli_progress(const char *what, double done, double total);
void cli_progress_done(void);

#endif /* AT_CLI_H */
