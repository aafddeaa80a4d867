/* plot-gnuplot.c: terminals, templates, the generated script, and running
 * gnuplot so that a figure appears whole at OUT or not at all (see
 * plot-gnuplot.h and trace-plot(1)). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "tsv.h"
#include "plot-gnuplot.h"

/* What gnuplot may say before we give up reading it. */
#define MESSAGES_MAX (64 * 1024)

static const struct {
	const char *extension;
	enum plot_term term;
} extensions[] = {
	{".png", PLOT_PNG}, {".svg", PLOT_SVG}, {".pdf", PLOT_PDF}, {".tex", PLOT_TEX},
};

int plot_term_from_path(const char *path, enum plot_term *term)
{
	const char *base = strrchr(path, '/');
	const char *dot = strrchr(base ? base + 1 : path, '.');
	if (!dot)
		return -1;
	for (size_t i = 0; i < sizeof extensions / sizeof extensions[0]; i++)
		if (strcasecmp(dot, extensions[i].extension) == 0) {
			*term = extensions[i].term;
			return 0;
		}
	return -1;
}

const char *plot_term_name(enum plot_term term)
{
	static const char *const names[] = {"png", "svg", "pdf", "tex"};
	return names[term];
}

static char *tex_companion(const char *path);

static char *xstrdup(const char *s)
{
	char *copy = strdup(s);
	if (!copy)
		cli_fail(NULL, "out of memory");
	return copy;
}

static char *join_path(const char *dir, const char *name)
{
	size_t size = strlen(dir) + strlen(name) + 2;
	char *path = malloc(size);
	if (!path)
		cli_fail(NULL, "out of memory");
	snprintf(path, size, "%s/%s", dir, name);
	return path;
}

static int is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---------------------------------------------------------------- finding things */

char *plot_find_template(const char *kind, const char *override)
{
	char name[64];
	snprintf(name, sizeof name, "%s.gp", kind);
	if (override) {
		struct stat st;
		if (stat(override, &st) != 0)
			cli_fail(override, "no such template: %s", strerror(errno));
		if (!S_ISREG(st.st_mode))
			cli_fail(override, "not a template: not a regular file");
		return xstrdup(override);
	}
	const char *env = getenv("ACTTRACE_PLOTS_DIR");
	if (env && *env) {
		char *path = join_path(env, name);
		if (!is_file(path))
			cli_fail(path, "no such template (ACTTRACE_PLOTS_DIR is set)");
		return path;
	}
	char *path = join_path(AT_PLOTS_DIR, name);
	if (is_file(path))
		return path;
	free(path);
#ifdef AT_PLOTS_SRCDIR
	/* not installed yet: the build tree's own templates */
	path = join_path(AT_PLOTS_SRCDIR, name);
	if (is_file(path))
		return path;
	free(path);
#endif
	cli_fail(NULL, "no template %s in %s (set ACTTRACE_PLOTS_DIR or use --template)", name,
	         AT_PLOTS_DIR);
}

char *plot_find_gnuplot(void)
{
	const char *name = getenv("GNUPLOT");
	if (!name || !*name)
		name = "gnuplot";
	if (strchr(name, '/')) {
		if (access(name, X_OK) == 0)
			return xstrdup(name);
		cli_fail(NULL, "gnuplot not found: GNUPLOT=%s: %s", name, strerror(errno));
	}
	const char *path = getenv("PATH");
	for (const char *dir = path ? path : ""; *dir;) {
		size_t len = strcspn(dir, ":");
		char buf[PATH_MAX];
		if (len > 0 && (size_t)snprintf(buf, sizeof buf, "%.*s/%s", (int)len, dir, name) < sizeof buf &&
		    is_file(buf) && access(buf, X_OK) == 0)
			return xstrdup(buf);
		dir += len;
		if (*dir == ':')
			dir++;
	}
	cli_fail(NULL, "%s not found on PATH: install gnuplot 5.4 or later, set GNUPLOT, or write "
	               "the script and data with --script DIR",
	         name);
}

/* ---------------------------------------------------------------- the terminal */

/* One length of --size: a number, and for pdf and tex "in" or "cm" after it. */
static int parse_length(const char **s, double *value, char unit[3])
{
	char *end;
	*value = strtod(*s, &end);
	if (end == *s || !isfinite(*value) || !(*value > 0))
		return -1;
	unit[0] = 0;
	if (strncmp(end, "in", 2) == 0 || strncmp(end, "cm", 2) == 0) {
		memcpy(unit, end, 2);
		unit[2] = 0;
		end += 2;
	}
	*s = end;
	return 0;
}

/* "W,H" or "WxH": whole pixels, or for pdf and tex inches, or centimetres
 * when either number ends in "cm" ("12cm,8cm", "12,8cm"). */
static int parse_size(const char *s, int inches, double *w, double *h, char unit[3])
{
	char unit_w[3], unit_h[3];
	if (parse_length(&s, w, unit_w) || (*s != ',' && *s != 'x'))
		return -1;
	s++;
	if (parse_length(&s, h, unit_h) || *s)
		return -1;
	if (*unit_w && *unit_h && strcmp(unit_w, unit_h) != 0)
		return -1;
	snprintf(unit, 3, "%s", *unit_w ? unit_w : *unit_h ? unit_h : "in");
	if (!inches)
		return !*unit_w && !*unit_h && *w == floor(*w) && *h == floor(*h) && *w <= 20000 &&
		               *h <= 20000
		           ? 0
		           : -1;
	double to_inches = strcmp(unit, "cm") == 0 ? 1 / 2.54 : 1;
	return *w * to_inches <= 200 && *h * to_inches <= 200 ? 0 : -1;
}

void plot_set_terminal(struct plot *p, const char *size, const char *font, int width_px,
                       int height_px)
{
	int inches = p->term == PLOT_PDF || p->term == PLOT_TEX;
	double w = width_px, h = height_px;
	char unit[3] = "in";
	if (size) {
		if (parse_size(size, inches, &w, &h, unit))
			cli_usage_error(inches ? "--size must be W,H in inches (or W,Hcm) up to 200in, not '%s'"
			                       : "--size must be W,H in whole pixels up to 20000, not '%s'",
			                size);
	} else if (p->term == PLOT_PDF) {
		/* 1280 x 800 pixels -> 8 x 5 inches: the same text-to-plot proportions */
		w = width_px / 160.0;
		h = height_px / 160.0;
	} else if (p->term == PLOT_TEX) {
		/* LaTeX sets the text at the document's size (10pt), larger than
		 * the pdf's: 1200 pixels -> 6 inches, a page's text width */
		w = width_px / 200.0;
		h = height_px / 200.0;
	}
	if (font && (strpbrk(font, "'\"\n\\") || !*font))
		cli_usage_error("--font must be NAME[,SIZE] without quotes, not '%s'", font);
	/* the lines under a title are set two points smaller than the rest */
	double font_size = p->term == PLOT_PDF ? 11 : p->term == PLOT_TEX ? 10 : 12;
	const char *comma = font ? strrchr(font, ',') : NULL;
	if (comma && cli_parse_double(comma + 1, &font_size) == 0 && !(font_size > 0))
		cli_usage_error("--font's size must be positive, not '%s'", comma + 1);
	p->small_font_size = font_size > 8 ? font_size - 2 : font_size;
	char font_part[160] = "";
	if (font)
		snprintf(font_part, sizeof font_part, " font '%s'", font);
	else if (p->term == PLOT_PNG || p->term == PLOT_PDF)
		snprintf(font_part, sizeof font_part, " font 'Sans,%d'", p->term == PLOT_PNG ? 12 : 11);
	else if (p->term == PLOT_SVG)
		snprintf(font_part, sizeof font_part, " font 'Sans,12'");
	switch (p->term) {
	case PLOT_PNG:
		snprintf(p->terminal, sizeof p->terminal, "pngcairo enhanced size %.0f,%.0f%s", w, h,
		         font_part);
		break;
	case PLOT_SVG:
		snprintf(p->terminal, sizeof p->terminal, "svg enhanced size %.0f,%.0f fixed%s", w, h,
		         font_part);
		break;
	case PLOT_PDF:
		snprintf(p->terminal, sizeof p->terminal, "pdfcairo enhanced size %g%s,%g%s%s", w, unit,
		         h, unit, font_part);
		break;
	case PLOT_TEX:
		snprintf(p->terminal, sizeof p->terminal, "cairolatex pdf size %g%s,%g%s%s", w, unit,
		         h, unit, font_part);
		break;
	}
}

/* ---------------------------------------------------------------- the work directory */

/* The private directory of a render, removed at exit however we leave: by
 * atexit, and on SIGINT, SIGTERM and SIGHUP by a handler that may only
 * unlink what it finds listed (no opendir, no malloc in a handler). */
static char *private_dir;
#define MAX_PRIVATE_FILES 16
static char *private_files[MAX_PRIVATE_FILES];
static volatile sig_atomic_t private_nfiles;
static volatile pid_t gnuplot_pid;

static void remove_private_dir(void)
{
	if (!private_dir)
		return;
	DIR *d = opendir(private_dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char *path = join_path(private_dir, e->d_name);
			unlink(path);
			free(path);
		}
		closedir(d);
	}
	rmdir(private_dir);
	private_nfiles = 0;
	free(private_dir);
	private_dir = NULL;
}

static void on_signal(int sig)
{
	if (gnuplot_pid > 0)
		kill(gnuplot_pid, SIGTERM);
	for (sig_atomic_t i = 0; i < private_nfiles; i++)
		unlink(private_files[i]);
	if (private_dir)
		rmdir(private_dir);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* A file the handler removes: everything written into the private directory. */
static void note_private_file(const char *dir, const char *name)
{
	if (!private_dir || strcmp(dir, private_dir) != 0 || private_nfiles >= MAX_PRIVATE_FILES)
		return;
	private_files[private_nfiles] = join_path(dir, name);
	private_nfiles++;
}

static void watch_signals(void)
{
	static const int signals[] = {SIGINT, SIGTERM, SIGHUP};
	for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(signals[i], &sa, NULL);
	}
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	char *dir = xstrdup(path);
	dir[slash - path] = 0;
	return dir;
}

static const char *base_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
	char *dir = xstrdup(path);
	int rc = 0;
	for (char *slash = dir + 1; rc == 0; slash++) {
		slash = strchr(slash, '/');
		if (slash)
			*slash = 0;
		if (mkdir(dir, 0777) != 0 && errno != EEXIST)
			rc = -1;
		if (!slash)
			break;
		*slash = '/';
	}
	free(dir);
	return rc;
}

void plot_begin(struct plot *p)
{
	p->vars = open_memstream(&p->vars_text, &p->vars_size);
	if (!p->vars)
		cli_fail(NULL, "out of memory");
	if (p->script_dir) {
		if (make_dirs(p->script_dir) != 0)
			cli_fail(p->script_dir, "cannot create the script directory: %s", strerror(errno));
		struct stat st;
		if (stat(p->script_dir, &st) != 0 || !S_ISDIR(st.st_mode))
			cli_fail(p->script_dir, "not a directory");
		p->dir = xstrdup(p->script_dir);
		return;
	}
	/* beside OUT, so that the finished figure is renamed into place */
	char *out_dir = dir_of(p->output);
	char *pattern = join_path(out_dir, ".trace-plot.XXXXXX");
	free(out_dir);
	if (!mkdtemp(pattern))
		cli_fail(p->output, "cannot write into its directory: %s", strerror(errno));
	private_dir = pattern;
	atexit(remove_private_dir);
	watch_signals();
	p->dir = xstrdup(pattern);
	/* what gnuplot will write there */
	note_private_file(p->dir, base_of(p->output));
	if (p->term == PLOT_TEX) {
		char *pdf = tex_companion(base_of(p->output));
		note_private_file(p->dir, pdf);
		free(pdf);
	}
}

FILE *plot_data(struct plot *p, const char *name)
{
	note_private_file(p->dir, name);
	char *path = join_path(p->dir, name);
	FILE *f = fopen(path, "w");
	if (!f)
		cli_fail(path, "cannot create: %s", strerror(errno));
	free(path);
	return f;
}

void plot_data_close(struct plot *p, FILE *f, const char *name)
{
	int failed = ferror(f);
	if (fclose(f) != 0 || failed) {
		char *path = join_path(p->dir, name);
		cli_fail(path, "write error: %s", strerror(errno));
	}
}

/* ---------------------------------------------------------------- settings */

/* A gnuplot single-quoted string: no escapes inside, '' is a quote. */
static void put_quoted(FILE *out, const char *s)
{
	fputc('\'', out);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("''", out);
		else
			fputc(*s == '\n' || *s == '\r' ? ' ' : *s, out);
	}
	fputc('\'', out);
}


static void put_text(struct plot *p, FILE *out, const char *text)
{
	if (p->term != PLOT_TEX) {
		put_quoted(out, text);
		return;
	}
	char *escaped;
	size_t size;
	FILE *mem = open_memstream(&escaped, &size);
	if (!mem)
		cli_fail(NULL, "out of memory");
	doc_put_latex(mem, text);
	if (fclose(mem) != 0)
		cli_fail(NULL, "out of memory");
	put_quoted(out, escaped);
	free(escaped);
}

void plot_comment(struct plot *p, const char *fmt, ...)
{
	va_list ap;
	char line[1024];
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	for (char *c = line; *c; c++)
		if (*c == '\n')
			*c = ' ';
	fprintf(p->vars, "# %s\n", line);
}

void plot_var_string(struct plot *p, const char *name, const char *value)
{
	fprintf(p->vars, "%s = ", name);
	put_quoted(p->vars, value);
	fputc('\n', p->vars);
}

void plot_var_text(struct plot *p, const char *name, const char *text)
{
	fprintf(p->vars, "%s = ", name);
	put_text(p, p->vars, text);
	fputc('\n', p->vars);
}

void plot_var_number(struct plot *p, const char *name, double value)
{
	if (isfinite(value))
		fprintf(p->vars, "%s = %.9g\n", name, value);
	else
		fprintf(p->vars, "%s = NaN\n", name);
}

void plot_var_int(struct plot *p, const char *name, int64_t value)
{
	fprintf(p->vars, "%s = %lld\n", name, (long long)value);
}

void plot_var_strings(struct plot *p, const char *name, const char *const *values, int n,
                      int as_text)
{
	/* gnuplot has no empty array literal */
	fprintf(p->vars, "array %s[%d]%s", name, n > 0 ? n : 1, n > 0 ? " = [" : "\n");
	for (int i = 0; i < n; i++) {
		if (i)
			fputs(", ", p->vars);
		if (as_text)
			put_text(p, p->vars, values[i]);
		else
			put_quoted(p->vars, values[i]);
	}
	if (n > 0)
		fputs("]\n", p->vars);
}

/* ---------------------------------------------------------------- the script */

static char *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "r");
	if (!f)
		cli_fail(path, "cannot read the template: %s", strerror(errno));
	char *text;
	FILE *mem = open_memstream(&text, size);
	if (!mem)
		cli_fail(NULL, "out of memory");
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		fwrite(buf, 1, n, mem);
	if (ferror(f))
		cli_fail(path, "cannot read the template: %s", strerror(errno));
	fclose(f);
	if (fclose(mem) != 0)
		cli_fail(NULL, "out of memory");
	return text;
}

static int count_lines(const char *s)
{
	int lines = 0;
	for (; *s; s++)
		lines += *s == '\n';
	return lines;
}

/* The script's file name and how many lines come before the template. */
static int write_script(struct plot *p, const char *script_name, const char *output_name)
{
	if (fclose(p->vars) != 0)
		cli_fail(NULL, "out of memory");
	p->vars = NULL;
	size_t template_size;
	char *template_text = read_file(p->template_path, &template_size);
	char *header;
	size_t header_size;
	FILE *h = open_memstream(&header, &header_size);
	if (!h)
		cli_fail(NULL, "out of memory");
	fprintf(h, "# %s: written by %s (acttrace) %s: the settings of one figure, then the\n"
	           "# template %s.\n"
	           "# Run it in this directory: gnuplot %s\n",
	        script_name, cli_prog, at_version(), p->template_path, script_name);
	fputs("if (GPVAL_VERSION < 5.4) { exit error 'trace-plot templates need gnuplot 5.4 or later' }\n",
	      h);
	fprintf(h, "set terminal %s\n", p->terminal);
	fputs("set output ", h);
	put_quoted(h, output_name);
	fputc('\n', h);
	fprintf(h, "term_kind = '%s'\n", plot_term_name(p->term));
	fprintf(h, "small_font = ',%g'\n", p->small_font_size);
	fwrite(p->vars_text, 1, p->vars_size, h);
	fprintf(h, "# ---------------------------------------------------------------- %s\n",
	        base_of(p->template_path));
	if (fclose(h) != 0)
		cli_fail(NULL, "out of memory");
	FILE *f = plot_data(p, script_name);
	fwrite(header, 1, header_size, f);
	fwrite(template_text, 1, template_size, f);
	if (template_size && template_text[template_size - 1] != '\n')
		fputc('\n', f);
	plot_data_close(p, f, script_name);
	int header_lines = count_lines(header);
	free(header);
	free(template_text);
	free(p->vars_text);
	p->vars_text = NULL;
	return header_lines;
}

/* ---------------------------------------------------------------- running gnuplot */

/* Run gnuplot on the script in dir; its stdout and stderr together come
 * back in *messages.  The exit status as waitpid gives it, or -1. */
static int run_gnuplot(const char *gnuplot, const char *dir, const char *script, char **messages)
{
	int fds[2];
	if (pipe(fds) != 0)
		cli_fail(NULL, "cannot run gnuplot: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		cli_fail(NULL, "cannot run gnuplot: %s", strerror(errno));
	gnuplot_pid = pid;
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		close(fds[0]);
		close(fds[1]);
		if (chdir(dir) != 0) {
			fprintf(stderr, "cannot enter %s: %s\n", dir, strerror(errno));
			_exit(127);
		}
		/* -d: no ~/.gnuplot, so a figure looks the same for everyone */
		execl(gnuplot, gnuplot, "-d", script, (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", gnuplot, strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	char *text = malloc(MESSAGES_MAX + 1);
	if (!text)
		cli_fail(NULL, "out of memory");
	size_t used = 0;
	for (;;) {
		char buf[4096];
		ssize_t n = read(fds[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t keep = (size_t)n < MESSAGES_MAX - used ? (size_t)n : MESSAGES_MAX - used;
		memcpy(text + used, buf, keep);
		used += keep;
	}
	text[used] = 0;
	close(fds[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	gnuplot_pid = 0;
	*messages = text;
	return status;
}

/* `"bars3d.gp" line 52: undefined variable: x` -> the line in the template
 * (the script's header is generated: its lines are not the user's), as
 * "gnuplot: ..." in buf. */
static void format_line(const char *line, int header_lines, const char *template_path,
                        int is_error, char *buf, size_t size)
{
	char where[PATH_MAX + 64] = "";
	const char *message = line;
	int n, consumed = 0;
	const char *close = line[0] == '"' ? strchr(line + 1, '"') : NULL;
	if (close && sscanf(close + 1, " line %d:%n", &n, &consumed) == 1 && consumed > 0) {
		message = close + 1 + consumed;
		message += strspn(message, " ");
		if (n > header_lines)
			snprintf(where, sizeof where, "%s line %d: ", template_path, n - header_lines);
		else
			snprintf(where, sizeof where, "generated settings, line %d: ", n);
	}
	int is_warning = !is_error && strncmp(message, "warning", 7) != 0;
	snprintf(buf, size, "gnuplot: %s%s%s", is_warning ? "warning: " : "", where, message);
}

/* The line that says what went wrong: gnuplot ends with it, after an echo
 * of the command and a caret. */
static char *last_line(char *text)
{
	char *last = NULL;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		line += strspn(line, " \t");
		if (*line && *line != '^')
			last = line;
	}
	return last;
}

static void report_warnings(char *text, int header_lines, const char *template_path)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		line += strspn(line, " \t");
		if (*line) {
			char buf[2048];
			format_line(line, header_lines, template_path, 0, buf, sizeof buf);
			cli_warn(NULL, "%s", buf);
		}
	}
}

/* Why a run failed, in one line, into why; "" when gnuplot succeeded. */
static void gnuplot_failure(int status, char *messages, int header_lines,
                            const char *template_path, char *why, size_t size)
{
	why[0] = 0;
	if (status == -1) {
		snprintf(why, size, "gnuplot: cannot wait for it: %s", strerror(errno));
	} else if (WIFSIGNALED(status)) {
		snprintf(why, size, "gnuplot: killed by signal %d", WTERMSIG(status));
	} else if (WEXITSTATUS(status) != 0) {
		const char *line = last_line(messages);
		if (line)
			format_line(line, header_lines, template_path, 1, why, size);
		else
			snprintf(why, size, "gnuplot: failed (exit status %d) without a message",
			         WEXITSTATUS(status));
	}
}

static void move_into_place(const char *from, const char *to)
{
	if (rename(from, to) != 0)
		cli_fail(to, "cannot write: %s", strerror(errno));
}

/* cairolatex writes NAME.tex and, beside it, NAME.pdf that it includes. */
static char *tex_companion(const char *path)
{
	size_t len = strlen(path);
	char *pdf = malloc(len + 1);
	if (!pdf)
		cli_fail(NULL, "out of memory");
	memcpy(pdf, path, len - 4);
	memcpy(pdf + len - 4, ".pdf", 5);
	return pdf;
}

void plot_finish(struct plot *p)
{
	char script_name[80];
	snprintf(script_name, sizeof script_name, "%s.gp", p->kind);
	const char *output_name = base_of(p->output);
	int header_lines = write_script(p, script_name, output_name);
	if (p->script_dir) {
		free(p->dir);
		return;
	}
	char *messages = NULL;
	int status = run_gnuplot(p->gnuplot, p->dir, script_name, &messages);
	char *rendered = join_path(p->dir, output_name);
	char *companion = p->term == PLOT_TEX ? tex_companion(rendered) : NULL;
	char why[2048];
	struct stat st;
	gnuplot_failure(status, messages, header_lines, p->template_path, why, sizeof why);
	if (!*why && (stat(rendered, &st) != 0 || st.st_size == 0))
		snprintf(why, sizeof why, "gnuplot: wrote no figure (does the template plot nothing?)");
	if (!*why && companion && stat(companion, &st) != 0)
		snprintf(why, sizeof why, "gnuplot: wrote no %s beside %s", base_of(companion),
		         output_name);
	if (*why) {
		free(companion);
		free(rendered);
		free(messages);
		free(p->dir);
		cli_fail(NULL, "%s", why);
	}
	if (!p->quiet)
		report_warnings(messages, header_lines, p->template_path);
	if (companion) {
		char *to = tex_companion(p->output);
		move_into_place(companion, to);
		free(to);
	}
	move_into_place(rendered, p->output);
	free(companion);
	free(rendered);
	free(messages);
	free(p->dir);
	remove_private_dir();
}
