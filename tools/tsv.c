/* tsv.c: reading TSV tables with a header line, and writing LaTeX and
 * Markdown tables for documents (see tsv.h). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tsv.h"

static int tsv_error(const struct tsv_reader *t, struct at_error *err, int code, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

static int tsv_error(const struct tsv_reader *t, struct at_error *err, int code, const char *fmt,
                     ...)
{
	if (!err)
		return code;
	int len = snprintf(err->message, sizeof err->message, "%s: ", t->name);
	if (len < 0 || (size_t)len >= sizeof err->message)
		len = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message + len, sizeof err->message - (size_t)len, fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}

/* One line without its end (\n or \r\n): its length, or -1 at the end of the input. */
static int read_line(struct tsv_reader *t, struct at_error *err, ssize_t *length)
{
	errno = 0;
	ssize_t n = getline(&t->buf, &t->cap, t->in);
	if (n < 0) {
		if (ferror(t->in))
			return tsv_error(t, err, AT_EIO, "read error: %s", strerror(errno ? errno : EIO));
		*length = -1;
		return AT_OK;
	}
	t->line++;
	if ((size_t)n != strlen(t->buf))
		return tsv_error(t, err, AT_EFORMAT, "line %ld: binary data, not a table", t->line);
	while (n > 0 && (t->buf[n - 1] == '\n' || t->buf[n - 1] == '\r'))
		t->buf[--n] = 0;
	*length = n;
	return AT_OK;
}

/* Split s at tabs, in place, into *fields (grown as needed). */
static int split(char *s, char ***fields, int *nfields, int *cap)
{
	int n = 0;
	for (;;) {
		if (n == *cap) {
			int grown = *cap ? 2 * *cap : 16;
			char **f = realloc(*fields, (size_t)grown * sizeof *f);
			if (!f)
				return AT_ENOMEM;
			*fields = f;
			*cap = grown;
		}
		(*fields)[n++] = s;
		char *tab = strchr(s, '\t');
		if (!tab)
			break;
		*tab = 0;
		s = tab + 1;
	}
	*nfields = n;
	return AT_OK;
}

int tsv_open(struct tsv_reader *t, FILE *in, const char *name, struct at_error *err)
{
	*t = (struct tsv_reader){.in = in, .name = name};
	ssize_t n;
	int rc = read_line(t, err, &n);
	if (rc)
		return rc;
	if (n < 0)
		return tsv_error(t, err, AT_EFORMAT, "no table: the input is empty");
	if (t->buf[0] == '[' || t->buf[0] == '{')
		return tsv_error(t, err, AT_EFORMAT, "JSON, not a TSV table with a header line");
	if (!strchr(t->buf, '\t') && strchr(t->buf, ','))
		return tsv_error(t, err, AT_EFORMAT, "CSV, not a TSV table (tab-separated) with a header line");
	t->header = strdup(t->buf);
	int cap = 0;
	if (!t->header || split(t->header, &t->columns, &t->ncolumns, &cap))
		return tsv_error(t, err, AT_ENOMEM, "out of memory");
	return AT_OK;
}

int tsv_column(const struct tsv_reader *t, const char *name)
{
	for (int i = 0; i < t->ncolumns; i++)
		if (strcmp(t->columns[i], name) == 0)
			return i;
	return -1;
}

int tsv_next(struct tsv_reader *t, int need, struct at_error *err)
{
	ssize_t n;
	do {
		int rc = read_line(t, err, &n);
		if (rc)
			return rc;
		if (n < 0)
			return 0;
	} while (n == 0);
	if (split(t->buf, &t->fields, &t->nfields, &t->cap_fields))
		return tsv_error(t, err, AT_ENOMEM, "out of memory");
	if (t->nfields < need)
		return tsv_error(t, err, AT_EFORMAT, "line %ld: %d field%s where the header has %d",
		                 t->line, t->nfields, t->nfields == 1 ? "" : "s", t->ncolumns);
	return 1;
}

void tsv_close(struct tsv_reader *t)
{
	free(t->buf);
	free(t->header);
	free(t->columns);
	free(t->fields);
	*t = (struct tsv_reader){0};
}

/* ---------------------------------------------------------------- papers */

void doc_put_latex(FILE *out, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '\\': fputs("\\textbackslash{}", out); break;
		case '~': fputs("\\textasciitilde{}", out); break;
		case '^': fputs("\\textasciicircum{}", out); break;
		case '&': case '%': case '$': case '#': case '_': case '{': case '}':
			fputc('\\', out);
			fputc(*s, out);
			break;
		/* text fonts draw these as other glyphs: math mode draws them */
		case '|': case '<': case '>':
			fputc('$', out);
			fputc(*s, out);
			fputc('$', out);
			break;
		case '\t': case '\n': case '\r': fputc(' ', out); break;
		default: fputc(*s, out);
		}
	}
}

static int is_word_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* CommonMark: '|' would end the cell, '*' and '`' start emphasis and code
 * anywhere, '_' only at a word's edge ("up_proj" stays as it is). */
static void put_markdown(FILE *out, const char *s)
{
	for (const char *p = s; *p; p++) {
		int edge = *p == '_' && (p == s || !is_word_char(p[-1]) || !is_word_char(p[1]));
		if (*p == '|' || *p == '\\' || *p == '*' || *p == '`' || *p == '<' || edge)
			fputc('\\', out);
		fputc(*p == '\t' || *p == '\n' || *p == '\r' ? ' ' : *p, out);
	}
}

static void put_text(const struct doc_table *t, const char *s)
{
	if (t->style == DOC_LATEX)
		doc_put_latex(t->out, s);
	else
		put_markdown(t->out, s);
}

void doc_table_begin(struct doc_table *t, FILE *out, enum doc_style style, int header,
                     const char *const *columns, const char *align, int ncolumns)
{
	*t = (struct doc_table){.out = out, .style = style, .header = header, .columns = columns,
	                        .align = align, .ncolumns = ncolumns};
	if (!header)
		return;
	if (style == DOC_LATEX) {
		fprintf(out, "\\begin{tabular}{%.*s}\n\\toprule\n", ncolumns, align);
		for (int i = 0; i < ncolumns; i++) {
			if (i)
				fputs(" & ", out);
			doc_put_latex(out, columns[i]);
		}
		fputs(" \\\\\n\\midrule\n", out);
		return;
	}
	fputc('|', out);
	for (int i = 0; i < ncolumns; i++) {
		fputc(' ', out);
		put_markdown(out, columns[i]);
		fputs(" |", out);
	}
	fputs("\n|", out);
	for (int i = 0; i < ncolumns; i++)
		fputs(align[i] == 'r' ? " --: |" : " :-- |", out);
	fputc('\n', out);
}

void doc_table_cell(struct doc_table *t, const char *text)
{
	if (t->column == 0 && t->rule && t->style == DOC_LATEX)
		fputs("\\midrule\n", t->out);
	if (t->column == 0)
		t->rule = 0;
	if (t->style == DOC_LATEX)
		fputs(t->column ? " & " : "", t->out);
	else
		fputs(t->column ? " " : "| ", t->out);
	put_text(t, text);
	if (t->style == DOC_MARKDOWN)
		fputs(" |", t->out);
	t->column++;
}

void doc_table_end_row(struct doc_table *t)
{
	fputs(t->style == DOC_LATEX ? " \\\\\n" : "\n", t->out);
	t->column = 0;
	t->rows++;
}

void doc_table_rule(struct doc_table *t)
{
	t->rule = 1;
}

void doc_table_end(struct doc_table *t)
{
	if (t->header && t->style == DOC_LATEX)
		fputs("\\bottomrule\n\\end{tabular}\n", t->out);
	if (fflush(t->out) != 0 || ferror(t->out))
		cli_fail(NULL, "write error on standard output: %s", strerror(errno));
}

void doc_format_count(char *buf, size_t size, int64_t value)
{
	char digits[32];
	int n = snprintf(digits, sizeof digits, "%lld", (long long)value);
	int sign = value < 0;
	size_t at = 0;
	for (int i = 0; i < n && at + 1 < size; i++) {
		int left = n - i; /* digits from here to the end, the sign aside */
		if (i > sign && left % 3 == 0 && at + 2 < size)
			buf[at++] = ',';
		buf[at++] = digits[i];
	}
	if (size)
		buf[at < size ? at : size - 1] = 0;
}
