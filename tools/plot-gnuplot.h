/* plot-gnuplot.h: what trace-plot asks of gnuplot: the terminal an output
 * file's extension picks, a script made of generated settings followed by a
 * template, and a run whose figure appears whole at OUT or not at all. */
#ifndef AT_PLOT_GNUPLOT_H
#define AT_PLOT_GNUPLOT_H

#include <stdint.h>
#include <stdio.h>

/* Where `make install` puts the templates (configure's $(pkgdatadir)/plots). */
#ifndef AT_PLOTS_DIR
#define AT_PLOTS_DIR "/usr/local/share/acttrace/plots"
#endif

enum plot_term { PLOT_PNG, PLOT_SVG, PLOT_PDF, PLOT_TEX };

/* The terminal of OUT's extension (case-insensitive): 0, or -1 when none. */
int plot_term_from_path(const char *path, enum plot_term *term);
/* "png", "svg", "pdf", "tex": the value of the script's term_kind. */
const char *plot_term_name(enum plot_term term);

/* One figure being made.  Usage: plot_begin, then any number of plot_data /
 * plot_data_close and plot_var_* / plot_comment, then plot_finish. */
struct plot {
	const char *kind;          /* names the script (KIND.gp) and the template */
	const char *output;        /* OUT as the user gave it */
	enum plot_term term;
	const char *template_path; /* resolved by plot_find_template */
	const char *script_dir;    /* --script DIR, or NULL to run gnuplot */
	const char *gnuplot;       /* resolved by plot_find_gnuplot when rendering */
	char terminal[512];        /* the `set terminal` line */
	char *dir;                 /* where the script and the data are written */
	FILE *vars;                /* the generated settings, in memory */
	char *vars_text;
	size_t vars_size;
	double small_font_size;    /* of the lines under a title (script variable small_font) */
	int quiet;                 /* no gnuplot warnings */
};

/* The template of a kind: `override` when given (--template), else
 * $ACTTRACE_PLOTS_DIR/KIND.gp, else the installed plots directory, else the
 * source tree's (a build that is not installed).  Exits 1 when none is
 * found.  The result is malloc'ed. */
char *plot_find_template(const char *kind, const char *override);
/* $GNUPLOT or `gnuplot`, searched on PATH; exits 1 with one line when
 * missing.  The result is malloc'ed. */
char *plot_find_gnuplot(void);

/* The terminal line from OUT's terminal, --size (NULL: width_px x height_px,
 * scaled to inches for pdf and tex) and --font (NULL: the terminal's).  A
 * bad size or font is a usage error (exit 2). */
void plot_set_terminal(struct plot *p, const char *size, const char *font, int width_px,
                       int height_px);

/* Make the directory the script and data go to: --script DIR (created if
 * missing), or a private one beside OUT, removed at exit. */
void plot_begin(struct plot *p);

/* A data file in the plot's directory, and closing it with error checks. */
FILE *plot_data(struct plot *p, const char *name);
void plot_data_close(struct plot *p, FILE *f, const char *name);

/* Settings of the script header, as gnuplot variables. */
void plot_comment(struct plot *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void plot_var_string(struct plot *p, const char *name, const char *value); /* verbatim */
void plot_var_text(struct plot *p, const char *name, const char *text); /* a label: escaped for LaTeX on tex */
void plot_var_number(struct plot *p, const char *name, double value);
void plot_var_int(struct plot *p, const char *name, int64_t value);
/* array NAME = ["a", "b"]; labels escaped as plot_var_text when as_text. */
void plot_var_strings(struct plot *p, const char *name, const char *const *values, int n,
                      int as_text);

/* Write the script (settings, then the template).  With --script, stop
 * there; else run gnuplot in the plot's directory and move the figure (and,
 * for tex, its .pdf) to OUT, or exit 1 with gnuplot's error as one line
 * ("trace-plot: gnuplot: ...") leaving nothing at OUT. */
void plot_finish(struct plot *p);

#endif /* AT_PLOT_GNUPLOT_H */
