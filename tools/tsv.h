/* tsv.h: the tables that cli.h does not do: reading a TSV table with a header
 * line (another tool's output, e.g. trace-outliers'), and writing LaTeX
 * (booktabs) and Markdown tables to paste into papers and READMEs. */
#ifndef AT_TSV_H
#define AT_TSV_H

#include <stdint.h>
#include <stdio.h>

#include "acttrace.h"

/* ---------------------------------------------------------------- reading */

struct tsv_reader {
	FILE *in;
	const char *name; /* in messages: the file name, "-" for stdin */
	long line;        /* line last read, 1 for the header */
	char *buf;
	size_t cap;
	char *header;     /* the header line, split in place into columns */
	char **columns;
	int ncolumns;
	char **fields;    /* the current row, split in place */
	int nfields;
	int cap_fields;
};

/* Read the header line.  Messages name the input: "NAME: line 3: ...". */
int tsv_open(struct tsv_reader *t, FILE *in, const char *name, struct at_error *err);
/* Index of a column, or -1 when the header lacks it. */
int tsv_column(const struct tsv_reader *t, const char *name);
/* The next row, with at least `need` fields: 1, or 0 at the end, or a
 * negative AT_E* code.  Blank lines are skipped; a row's fields stay valid
 * until the next call. */
int tsv_next(struct tsv_reader *t, int need, struct at_error *err);
/* Free what the reader holds (the stream is the caller's). */
void tsv_close(struct tsv_reader *t);

/* ---------------------------------------------------------------- papers */

enum doc_style { DOC_LATEX, DOC_MARKDOWN };

/* A table for a document: LaTeX is a booktabs tabular (\toprule, \midrule,
 * \bottomrule: \usepackage{booktabs}), Markdown a pipe table.  Cells are
 * text, escaped here.  Without a header only the rows are written, to
 * paste into a table of one's own. */
struct doc_table {
	FILE *out;
	enum doc_style style;
	int header;
	const char *const *columns;
	const char *align; /* 'l' or 'r' per column */
	int ncolumns;
	int column;
	int rule; /* a rule goes before the next row */
	long rows;
};
void doc_table_begin(struct doc_table *t, FILE *out, enum doc_style style, int header,
                     const char *const *columns, const char *align, int ncolumns);
void doc_table_cell(struct doc_table *t, const char *text);
void doc_table_end_row(struct doc_table *t);
/* Set off the next row (a total) by a rule: \midrule in LaTeX, nothing in Markdown. */
void doc_table_rule(struct doc_table *t);
/* Close the table and check the output for write errors (exit 1 on failure). */
void doc_table_end(struct doc_table *t);

/* Text escaped for LaTeX: its special characters, and |, < and > in math
 * mode; tabs and line breaks become spaces. */
void doc_put_latex(FILE *out, const char *s);

/* An integer with thousands separators, "1,545,216", as papers print counts. */
void doc_format_count(char *buf, size_t size, int64_t value);

#endif /* AT_TSV_H */
