/* cli.c: messages, exit codes, parsers, table output and progress shared by the tools. */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

const char *cli_prog = "acttrace";
int cli_quiet;

static void remove_pending(void);

void cli_init(const char *prog)
{
	const char *slash = strrchr(prog, '/');
	cli_prog = slash ? slash + 1 : prog;
	/* libtool wrappers run the real binary as lt-NAME */
	if (strncmp(cli_prog, "lt-", 3) == 0)
		cli_prog += 3;
	at_tool_init();
#ifdef M_MMAP_THRESHOLD
	/* A point's statistics are a few MB, allocated and freed once a point:
	 * from mmap (and the heap trimmed after each), every point paid its
	 * pages again in faults and zeroing (trace-quant: a third of its
	 * system time; 2.0-2.7 s against 1.75-1.86 s on 2 CPUs). */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

_Noreturn void cli_version(void)
{
	printf("%s (acttrace) %s\n", cli_prog, at_version());
	exit(CLI_EXIT_OK);
}

_Noreturn void cli_usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", cli_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", cli_prog);
	exit(CLI_EXIT_USAGE);
}

_Noreturn void cli_bad_option(char **argv)
{
	const char *arg = argv[optind - 1];
	if (strncmp(arg, "--", 2) == 0) {
		size_t len = strcspn(arg, "=");
		cli_usage_error("option '%.*s' is unknown, or lacks or takes no argument", (int)len,
		                arg);
	}
	if (optopt > 0 && optopt < 128)
		cli_usage_error("option '-%c' is unknown or lacks its argument", optopt);
	cli_usage_error("option '%s' is unknown or lacks its argument", arg);
}

static void vmessage(const char *file, const char *fmt, va_list ap)
{
	cli_progress_done();
	if (file)
		fprintf(stderr, "%s: %s: ", cli_prog, file);
	else
		fprintf(stderr, "%s: ", cli_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

_Noreturn void cli_fail(const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage(file, fmt, ap);
	va_end(ap);
	exit(CLI_EXIT_INPUT);
}

_Noreturn void cli_fail_at(const struct at_error *err)
{
	cli_fail(NULL, "%s", err->message[0] ? err->message : at_status_name(err->code));
}

void cli_warn(const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmessage(file, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- damaged traces */

/* HDF5 itself can crash on a damaged file before acttrace's checks see
 * anything: following a damaged global heap while it reads a variable-length
 * string attribute of a version 1 trace (HDF5 1.10.8; about 2 damaged copies
 * in 100), or in its metadata cache.  While a tool has traces open, such a
 * crash becomes "tool: FILE: damaged trace (...)" and exit 1, as any other
 * bad input does.  Not in sanitizer builds, whose own reports must stay
 * visible, nor with ACTTRACE_CRASH_GUARD=0 (for a core dump). */
#if defined(__SANITIZE_ADDRESS__)
#define GUARD_POSSIBLE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define GUARD_POSSIBLE 0
#endif
#endif
#ifndef GUARD_POSSIBLE
#define GUARD_POSSIBLE 1
#endif

#define GUARDED_MAX 4
static const char *guarded[GUARDED_MAX];
static volatile sig_atomic_t n_guarded;

static void put(char *buf, size_t *at, size_t size, const char *s)
{
	while (*s && *at + 1 < size)
		buf[(*at)++] = *s++;
}

static const char *signal_name(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	case SIGILL: return "SIGILL";
	default: return "SIGABRT";
	}
}

/* Only async-signal-safe calls: unlink (the pending temporaries), write, _exit. */
static void damaged_on_signal(int sig)
{
	char msg[2048];
	size_t at = 0;
	remove_pending();
	put(msg, &at, sizeof msg, cli_prog);
	put(msg, &at, sizeof msg, ": ");
	for (int i = 0; i < n_guarded; i++) {
		put(msg, &at, sizeof msg, i ? " or " : "");
		put(msg, &at, sizeof msg, guarded[i]);
	}
	put(msg, &at, sizeof msg, ": damaged trace (the HDF5 library crashed reading it: ");
	put(msg, &at, sizeof msg, signal_name(sig));
	put(msg, &at, sizeof msg, ")\n");
	if (write(STDERR_FILENO, msg, at) < 0)
		_exit(CLI_EXIT_INPUT);
	_exit(CLI_EXIT_INPUT);
}

static void guard(const char *path)
{
	static char altstack[1 << 16]; /* a crash by stack overflow still reports */
	if (!GUARD_POSSIBLE)
		return;
	const char *off = getenv("ACTTRACE_CRASH_GUARD");
	if (off && strcmp(off, "0") == 0)
		return;
	if (n_guarded == 0) {
		stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
		sigaltstack(&ss, NULL);
		struct sigaction sa = {.sa_handler = damaged_on_signal, .sa_flags = SA_ONSTACK};
		sigemptyset(&sa.sa_mask);
		static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
			sigaction(sigs[i], &sa, NULL);
	}
	if (n_guarded < GUARDED_MAX)
		guarded[n_guarded++] = path;
}

void cli_guard_all(char *const *paths, int n)
{
	static char several[64];
	if (n > GUARDED_MAX) {
		snprintf(several, sizeof several, "one of the %d inputs", n);
		guard(several);
		return;
	}
	for (int i = 0; i < n; i++)
		guard(paths[i]);
}

static void unguard(const char *what)
{
	for (int i = 0; i < n_guarded; i++)
		if (guarded[i] == what) {
			guarded[i] = guarded[n_guarded - 1];
			n_guarded--;
			return;
		}
}

void cli_close_trace(struct at_reader *r)
{
	unguard(at_reader_path(r));
	at_reader_close(r);
}

/* One rank's trace of a tensor-parallel capture numbers a slice's channels
 * from 0 and holds a part of each sliced tensor: every per-channel table and
 * every statistic over a point's channels is of the slice alone. */
static void warn_slices(const char *path, const struct at_reader *r)
{
	const struct at_trace_info *info = at_reader_info(r);
	int32_t sliced = 0;
	for (int32_t i = 0; i < info->points; i++) {
		const struct at_point_info *p = at_reader_point(r, i);
		sliced += p->channels != p->full_channels;
	}
	if (sliced)
		cli_warn(path,
		         "warning: rank %d of %d of a tensor-parallel capture: %d of %d points hold "
		         "channel slices, numbered from 0 within the slice and analysed without the "
		         "other ranks' channels; trace-merge the ranks' traces into whole points",
		         (int)info->rank, (int)info->world_size, (int)sliced, (int)info->points);
}

struct at_reader *cli_open_trace(const char *path)
{
	struct at_reader *r;
	struct at_error err = {0};
	guard(path);
	if (at_reader_open(&r, path, &err))
		cli_fail_at(&err);
	unguard(path); /* from here on, under the reader's copy of the name */
	guard(at_reader_path(r));
	if (!at_reader_info(r)->complete && !cli_quiet)
		cli_warn(path, "warning: incomplete trace (complete=0): read as of its last checkpoint");
	if (!cli_quiet)
		warn_slices(path, r);
	return r;
}

int cli_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

int cli_parse_format(const char *s, enum cli_format *out)
{
	static const struct {
		const char *name;
		enum cli_format format;
	} formats[] = {{"tsv", CLI_TSV}, {"csv", CLI_CSV}, {"json", CLI_JSON}};
	for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
		if (strcmp(s, formats[i].name) == 0) {
			*out = formats[i].format;
			return 0;
		}
	}
	return -1;
}

enum cli_format cli_format_option(const char *arg)
{
	enum cli_format format;
	if (cli_parse_format(arg, &format))
		cli_usage_error("unknown format '%s' (tsv, csv or json)", arg);
	return format;
}

int cli_digits_option(const char *arg)
{
	int64_t digits;
	if (cli_parse_int64(arg, 1, 17, &digits))
		cli_usage_error("--digits must be an integer from 1 to 17, not '%s'", arg);
	return (int)digits;
}

/* ---------------------------------------------------------------- tables */

static void put_json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static void put_csv_string(FILE *out, const char *s)
{
	if (!strpbrk(s, ",\"\n\r")) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

/* TSV cannot quote: tabs and newlines inside a value become spaces. */
static void put_tsv_string(FILE *out, const char *s)
{
	for (; *s; s++)
		fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, out);
}

void cli_table_begin(struct cli_table *t, FILE *out, enum cli_format format, int header,
                     const char *const *columns, int ncolumns)
{
	*t = (struct cli_table){.out = out, .format = format, .header = header, .digits = 9,
	                        .columns = columns, .ncolumns = ncolumns};
	if (format == CLI_JSON) {
		fputs("[", out);
		return;
	}
	if (!header)
		return;
	for (int i = 0; i < ncolumns; i++) {
		if (i)
			fputc(format == CLI_CSV ? ',' : '\t', out);
		fputs(columns[i], out);
	}
	fputc('\n', out);
}

/* Separator and, for JSON, the key, before the next value of the row. */
static void begin_cell(struct cli_table *t)
{
	FILE *out = t->out;
	if (t->format == CLI_JSON) {
		if (t->column == 0)
			fputs(t->rows ? ",\n{" : "\n{", out);
		else
			fputs(", ", out);
		put_json_string(out, t->column < t->ncolumns ? t->columns[t->column] : "extra");
		fputs(": ", out);
	} else if (t->column) {
		fputc(t->format == CLI_CSV ? ',' : '\t', out);
	}
	t->column++;
}

void cli_table_str(struct cli_table *t, const char *value)
{
	begin_cell(t);
	if (t->format == CLI_JSON)
		put_json_string(t->out, value);
	else if (t->format == CLI_CSV)
		put_csv_string(t->out, value);
	else
		put_tsv_string(t->out, value);
}

void cli_table_int(struct cli_table *t, int64_t value)
{
	begin_cell(t);
	fprintf(t->out, "%lld", (long long)value);
}

void cli_table_uint(struct cli_table *t, uint64_t value)
{
	begin_cell(t);
	fprintf(t->out, "%llu", (unsigned long long)value);
}

void cli_table_double(struct cli_table *t, double value)
{
	begin_cell(t);
	if (isfinite(value))
		fprintf(t->out, "%.*g", t->digits, value);
	else if (t->format == CLI_JSON)
		fputs("null", t->out);
	else if (isnan(value))
		fputs("nan", t->out);
	else
		fputs(value > 0 ? "inf" : "-inf", t->out);
}

void cli_table_end_row(struct cli_table *t)
{
	fputs(t->format == CLI_JSON ? "}" : "\n", t->out);
	t->column = 0;
	t->rows++;
}

void cli_table_end(struct cli_table *t)
{
	if (t->format == CLI_JSON)
		fputs(t->rows ? "\n]\n" : "]\n", t->out);
	if (fflush(t->out) != 0 || ferror(t->out))
		cli_fail(NULL, "write error on standard output: %s", strerror(errno));
}

/* ---------------------------------------------------------------- progress */

static int progress_shown;

void cli_progress(const char *what, double done, double total)
{
	static double last;
	if (cli_quiet || !isatty(STDERR_FILENO))
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
	if (progress_shown && now - last < 0.1 && done < total)
		return;
	last = now;
	double pct = total > 0 ? 100.0 * done / total : 100.0;
	fprintf(stderr, "\r%s: %s %5.1f%%\033[K", cli_prog, what, pct);
	progress_shown = 1;
}

void cli_progress_done(void)
{
	if (!progress_shown)
		return;
	fputs("\r\033[K", stderr);
	progress_shown = 0;
}

/* ---------------------------------------------------------------- selection */

void cli_selection_init(struct cli_selection *s)
{
	*s = (struct cli_selection){.layer_min = INT32_MIN, .layer_max = INT32_MAX};
}

void cli_selection_layers(struct cli_selection *s, const char *arg)
{
	int64_t a, b;
	const char *dash = strchr(arg, '-');
	char first[32];
	if (!dash) {
		if (cli_parse_int64(arg, 0, INT32_MAX, &a))
			cli_usage_error("--layers wants A-B or A, not '%s'", arg);
		s->layer_min = s->layer_max = (int32_t)a;
		return;
	}
	snprintf(first, sizeof first, "%.*s", (int)(dash - arg), arg);
	if (cli_parse_int64(first, 0, INT32_MAX, &a) || cli_parse_int64(dash + 1, 0, INT32_MAX, &b) ||
	    a > b)
		cli_usage_error("--layers wants A-B with A <= B, not '%s'", arg);
	s->layer_min = (int32_t)a;
	s->layer_max = (int32_t)b;
}

int cli_selected_name(const struct cli_selection *s, const char *name)
{
	for (int i = 0; i < s->globs; i++)
		if (fnmatch(s->point_glob[i], name, 0) == 0)
			return 1;
	return s->globs == 0;
}

int cli_selected(const struct cli_selection *s, const struct at_point_info *p)
{
	if (!cli_selected_name(s, p->name))
		return 0;
	if (s->component && strcmp(s->component, p->component) != 0)
		return 0;
	return p->layer >= s->layer_min && p->layer <= s->layer_max;
}

int cli_selection_option(struct cli_selection *s, int opt, const char *arg, int component_opt)
{
	if (opt == 'p') {
		if (s->globs == CLI_MAX_GLOBS)
			cli_usage_error("at most %d -p/--point patterns", CLI_MAX_GLOBS);
		s->point_glob[s->globs++] = arg;
	} else if (opt == component_opt)
		s->component = arg;
	else if (opt == 'l')
		cli_selection_layers(s, arg);
	else
		return 0;
	return 1;
}

const char *cli_selection_help(void)
{
	return "Selection:\n"
	       "  -p, --point=GLOB       points whose name matches GLOB (fnmatch; repeat for\n"
	       "                         several: a point matching any)\n"
	       "      --component=C      points of component C (mlp, attention, ...)\n"
	       "  -l, --layers=A-B       points of layers A to B (or one layer A)\n";
}

void cli_format_opts_init(struct cli_format_opts *f)
{
	*f = (struct cli_format_opts){.format = CLI_TSV, .header = 1, .digits = 9};
}

int cli_format_opts_option(struct cli_format_opts *f, int opt, const char *arg)
{
	switch (opt) {
	case 'f': f->format = cli_format_option(arg); return 1;
	case 'H': f->header = 0; return 1;
	case 'd': f->digits = cli_digits_option(arg); return 1;
	case 'q': cli_quiet = 1; return 1;
	default: return 0;
	}
}

const char *cli_format_opts_help(void)
{
	return "Format:\n"
	       "  -f, --format=FMT       tsv (default), csv or json\n"
	       "  -H, --no-header        omit the header line\n"
	       "  -d, --digits=N         significant digits of real numbers (default 9)\n"
	       "  -q, --quiet            no progress, no warnings\n"
	       "  -h, --help             this help\n"
	       "      --version          print the version\n";
}

int cli_parse_list(const char *s, double *out, int max)
{
	int n = 0;
	for (const char *item = s;; item++) {
		const char *comma = strchr(item, ',');
		size_t len = comma ? (size_t)(comma - item) : strlen(item);
		char buf[64];
		if (len == 0 || len >= sizeof buf || n == max)
			return -1;
		memcpy(buf, item, len);
		buf[len] = '\0';
		if (cli_parse_double(buf, &out[n++]))
			return -1;
		if (!comma)
			return n;
		item = comma;
	}
}

/* ---------------------------------------------------------------- a point's data */

void cli_load_point(struct at_reader *r, int32_t index, int whole, const char *hist_for,
                    struct at_stats *s)
{
	struct at_error err = {0};
	if (whole ? at_reader_load_stats(r, index, s, &err) : at_reader_load_moments(r, index, s, &err))
		cli_fail_at(&err);
	if (hist_for && !s->hist)
		cli_fail(at_reader_path(r), "point '%s' has no histogram, which %s needs",
		         at_reader_point(r, index)->name, hist_for);
}

/* ---------------------------------------------------------------- prefetch */

/* Slots of loaded points a loader thread may run ahead by: each holds one
 * point's statistics (2 MB of histogram at 2560 channels). */
#define PREFETCH_MAX_THREADS 4

struct prefetch_slot {
	struct at_stats s;
	struct at_error err;
	int status, ready;
};

/* Statistics handed back by cli_prefetch_recycle, whose arrays later loads
 * overwrite (at_reader_reload_stats): a point's histogram is megabytes, and
 * allocating it afresh a point costs page faults and zeroing, in threads
 * whose freed heaps glibc gives back to the kernel.  Enough for the points
 * in flight and those the tool holds, with room for two channel counts. */
#define PREFETCH_SPARES (2 * (PREFETCH_MAX_THREADS + 2))

struct cli_prefetch {
	struct at_reader *r;
	int32_t *points, n;
	int whole;
	const char *hist_for;
	struct prefetch_slot *slots;
	struct at_stats spares[PREFETCH_SPARES];
	int n_spares;
	int depth, nthreads;
	pthread_t threads[PREFETCH_MAX_THREADS];
	pthread_mutex_t lock;
	pthread_cond_t changed;
	int32_t next_load, next_take;
	int stopping;
};

/* A spare of that many channels into s (under pf->lock), or an empty s when
 * there is none: the newest first, whose pages are the likeliest cached. */
static void take_spare(struct cli_prefetch *pf, int64_t channels, struct at_stats *s)
{
	memset(s, 0, sizeof *s);
	for (int i = pf->n_spares - 1; i >= 0; i--) {
		if (pf->spares[i].channels != channels)
			continue;
		*s = pf->spares[i];
		memmove(&pf->spares[i], &pf->spares[i + 1],
		        (size_t)(pf->n_spares - i - 1) * sizeof *pf->spares);
		pf->n_spares--;
		return;
	}
}

void cli_prefetch_recycle(struct cli_prefetch *pf, struct at_stats *s)
{
	pthread_mutex_lock(&pf->lock);
	if (pf->n_spares == PREFETCH_SPARES) { /* the oldest goes */
		at_stats_free(&pf->spares[0]);
		memmove(&pf->spares[0], &pf->spares[1], (PREFETCH_SPARES - 1) * sizeof *pf->spares);
		pf->n_spares--;
	}
	pf->spares[pf->n_spares++] = *s;
	pthread_mutex_unlock(&pf->lock);
	memset(s, 0, sizeof *s);
}

static void *prefetch_loader(void *arg)
{
	struct cli_prefetch *pf = arg;
	pthread_mutex_lock(&pf->lock);
	for (;;) {
		while (!pf->stopping && pf->next_load < pf->n &&
		       pf->next_load >= pf->next_take + pf->depth)
			pthread_cond_wait(&pf->changed, &pf->lock);
		if (pf->stopping || pf->next_load >= pf->n)
			break;
		int32_t at = pf->next_load++;
		struct prefetch_slot *slot = &pf->slots[at % pf->depth];
		int32_t index = pf->points[at];
		take_spare(pf, at_reader_point(pf->r, index)->channels, &slot->s);
		pthread_mutex_unlock(&pf->lock);
		slot->status = pf->whole ? at_reader_reload_stats(pf->r, index, &slot->s, &slot->err)
		                         : at_reader_reload_moments(pf->r, index, &slot->s, &slot->err);
		pthread_mutex_lock(&pf->lock);
		slot->ready = 1;
		pthread_cond_broadcast(&pf->changed);
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

int32_t *cli_selected_points(struct at_reader *r, const struct cli_selection *sel, int32_t *n)
{
	int32_t total = at_reader_info(r)->points;
	int32_t *out = malloc(((size_t)total + 1) * sizeof *out);
	if (!out)
		cli_fail(at_reader_path(r), "out of memory");
	*n = 0;
	for (int32_t i = 0; i < total; i++)
		if (cli_selected(sel, at_reader_point(r, i)))
			out[(*n)++] = i;
	return out;
}

struct cli_prefetch *cli_prefetch_start(struct at_reader *r, const int32_t *points, int32_t n,
                                        int whole, const char *hist_for)
{
	struct cli_prefetch *pf = calloc(1, sizeof *pf);
	if (!pf || !(pf->points = malloc(((size_t)n + 1) * sizeof *pf->points)))
		cli_fail(at_reader_path(r), "out of memory");
	memcpy(pf->points, points, (size_t)n * sizeof *points);
	pf->r = r;
	pf->n = n;
	pf->whole = whole;
	pf->hist_for = hist_for;
	pf->nthreads = online_cpus() < PREFETCH_MAX_THREADS ? online_cpus() : PREFETCH_MAX_THREADS;
	pf->depth = pf->nthreads + 1;
	if (!(pf->slots = calloc((size_t)pf->depth, sizeof *pf->slots)))
		cli_fail(at_reader_path(r), "out of memory");
	pthread_mutex_init(&pf->lock, NULL);
	pthread_cond_init(&pf->changed, NULL);
	for (int i = 0; i < pf->nthreads; i++)
		if (pthread_create(&pf->threads[i], NULL, prefetch_loader, pf) != 0) {
			pf->nthreads = i; /* fewer threads do the same work */
			break;
		}
	if (pf->nthreads == 0)
		cli_fail(at_reader_path(r), "cannot start a thread");
	return pf;
}

void cli_prefetch_take(struct cli_prefetch *pf, int32_t index, struct at_stats *s)
{
	pthread_mutex_lock(&pf->lock);
	int32_t at = pf->next_take;
	if (at >= pf->n || pf->points[at] != index) {
		pthread_mutex_unlock(&pf->lock);
		cli_fail(at_reader_path(pf->r), "internal error: point %d taken out of order", (int)index);
	}
	struct prefetch_slot *slot = &pf->slots[at % pf->depth];
	while (!slot->ready)
		pthread_cond_wait(&pf->changed, &pf->lock);
	pthread_mutex_unlock(&pf->lock);
	if (slot->status)
		cli_fail_at(&slot->err);
	*s = slot->s;
	memset(slot, 0, sizeof *slot);
	pthread_mutex_lock(&pf->lock);
	pf->next_take++;
	pthread_cond_broadcast(&pf->changed);
	pthread_mutex_unlock(&pf->lock);
	if (pf->hist_for && !s->hist)
		cli_fail(at_reader_path(pf->r), "point '%s' has no histogram, which %s needs",
		         at_reader_point(pf->r, index)->name, pf->hist_for);
}

void cli_prefetch_stop(struct cli_prefetch *pf)
{
	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	pf->stopping = 1;
	pthread_cond_broadcast(&pf->changed);
	pthread_mutex_unlock(&pf->lock);
	for (int i = 0; i < pf->nthreads; i++)
		pthread_join(pf->threads[i], NULL);
	for (int i = 0; i < pf->depth; i++)
		if (pf->slots[i].ready && !pf->slots[i].status)
			at_stats_free(&pf->slots[i].s);
	for (int i = 0; i < pf->n_spares; i++)
		at_stats_free(&pf->spares[i]);
	pthread_mutex_destroy(&pf->lock);
	pthread_cond_destroy(&pf->changed);
	free(pf->slots);
	free(pf->points);
	free(pf);
}

float *cli_load_samples(struct at_reader *r, int32_t index, int64_t **tokens)
{
	const struct at_point_info *p = at_reader_point(r, index);
	if (tokens)
		*tokens = NULL;
	if (p->samples == 0)
		return NULL;
	float *rows = malloc((size_t)(p->samples * p->channels) * sizeof *rows);
	int64_t *tok = tokens ? malloc((size_t)p->samples * sizeof *tok) : NULL;
	if (!rows || (tokens && !tok))
		cli_fail(at_reader_path(r), "out of memory for the samples of '%s'", p->name);
	struct at_error err = {0};
	if (at_reader_read_samples(r, index, 0, p->samples, rows, tok, &err))
		cli_fail_at(&err);
	if (tokens)
		*tokens = tok;
	return rows;
}

/* ---------------------------------------------------------------- output files */

/* The temporaries not yet committed, removed at exit and on a signal. */
static struct cli_out_file *volatile pending;

static void remove_pending(void)
{
	for (struct cli_out_file *o = pending; o; o = o->next)
		unlink(o->tmp);
}

static void remove_pending_on_signal(int sig)
{
	remove_pending();
	signal(sig, SIG_DFL);
	raise(sig);
}

void cli_out_open(struct cli_out_file *o, const char *path)
{
	static int armed;
	if (!armed) {
		atexit(remove_pending);
		signal(SIGPIPE, remove_pending_on_signal);
		signal(SIGINT, remove_pending_on_signal);
		signal(SIGTERM, remove_pending_on_signal);
		armed = 1;
	}
	size_t len = strlen(path) + 32;
	o->path = malloc(len);
	o->tmp = malloc(len);
	if (!o->path || !o->tmp)
		cli_fail(path, "out of memory");
	snprintf(o->path, len, "%s", path);
	snprintf(o->tmp, len, "%s.tmp%ld", path, (long)getpid());
	o->f = fopen(o->tmp, "w");
	if (!o->f)
		cli_fail(path, "cannot write: %s", strerror(errno));
	o->next = pending;
	pending = o;
}

void cli_out_commit(struct cli_out_file *o)
{
	int bad = ferror(o->f);
	bad |= fclose(o->f) != 0;
	o->f = NULL;
	if (bad)
		cli_fail(o->path, "write error"); /* the temporary goes at exit */
	if (rename(o->tmp, o->path) != 0)
		cli_fail(o->path, "cannot write: %s", strerror(errno));
	struct cli_out_file *volatile *link = &pending;
	while (*link && *link != o)
		link = &(*link)->next;
	if (*link)
		*link = o->next;
	free(o->path);
	free(o->tmp);
}
