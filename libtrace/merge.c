/* merge.c: one trace from several traces of the same points (at_merge,
 * trace-merge(1)): the statistics combined exactly through the writer's own
 * accumulators, /tokens and the samples concatenated, the weights checked,
 * the inputs listed in /provenance; written to a temporary beside the output
 * and renamed over it only once everything succeeded.  The ranks of a
 * tensor-parallel capture are assembled instead (merge-slices.c). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "extension.h"
#include "h5util.h"
#include "merge-internal.h"
#include "reader-internal.h"

/* Points merged between two progress reports: enough to keep every thread
 * busy, few enough that a cancel is seen soon. */
#define POINTS_PER_ROUND 32
/* Sampled rows are copied in batches of about this many bytes. */
#define SAMPLE_BATCH_BYTES ((int64_t)64 << 20)
/* Weight statistics compared: the absmax and the values exactly (a maximum
 * or a copy of the same numbers cannot differ), the means of |w| to this
 * relative difference (a sum in another order rounds otherwise). */
#define WEIGHT_MEAN_RTOL 1e-9

void at_merge_options_init(struct at_merge_options *o)
{
	*o = (struct at_merge_options){.compression_level = 3};
}

static int report(const struct merge *m, const char *stage, double done, double total,
                  struct at_error *err)
{
	if (m->o->progress && m->o->progress(m->o->progress_arg, stage, done, total))
		return at_fail(err, AT_ECANCELED, "%s: merge cancelled", m->out);
	return AT_OK;
}

/* ---------------------------------------------------------------- the output path */

/* An output that is one of the inputs would be truncated before it is read. */
static int check_output(const char *out, const char *const *inputs, int n, struct at_error *err)
{
	struct stat so, si;
	if (stat(out, &so) != 0)
		return AT_OK; /* not there yet: it cannot be an input */
	if (S_ISDIR(so.st_mode))
		return at_fail(err, AT_EINVAL, "%s: is a directory", out);
	for (int i = 0; i < n; i++)
		if (stat(inputs[i], &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
			return at_fail(err, AT_EINVAL, "%s: the output is also input %d (%s)", out, i + 1,
			               inputs[i]);
	return AT_OK;
}

/* OUT.merge-PID-K, created exclusively with the umask's permissions (mkstemp's
 * 0600 would stay with the renamed trace). */
static int create_temporary(struct merge *m, struct at_error *err)
{
	size_t size = strlen(m->out) + 64;
	if (!(m->tmp = malloc(size)))
		return at_fail(err, AT_ENOMEM, "%s: out of memory", m->out);
	for (int attempt = 0; attempt < 100; attempt++) {
		snprintf(m->tmp, size, "%s.merge-%ld-%d", m->out, (long)getpid(), attempt);
		int fd = open(m->tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
		if (fd >= 0) {
			close(fd);
			return AT_OK;
		}
		if (errno != EEXIST)
			break;
	}
	int e = errno;
	free(m->tmp);
	m->tmp = NULL;
	return at_fail(err, AT_EIO, "%s: cannot create a temporary file beside it: %s", m->out,
	               strerror(e));
}

/* ---------------------------------------------------------------- inputs */

static void read_root_sampling(struct input *in)
{
	struct h5_quiet q;
	h5_quiet_begin(&q);
	hid_t f = reader_file(in->r);
	in->extremes_k = 0;
	in->sample_n = 1;
	in->max_samples = (int64_t)1 << 20;
	snprintf(in->sample_policy, sizeof in->sample_policy, "none");
	h5_attr_get_int(f, "extremes_k", &in->extremes_k);
	h5_attr_get_int(f, "sample_n", &in->sample_n);
	h5_attr_get_int(f, "max_samples", &in->max_samples);
	h5_attr_get_string(f, "sample_policy", in->sample_policy, sizeof in->sample_policy);
	h5_quiet_end(&q);
}

/* The histogram's bins are fixed in version 1; a trace that says otherwise
 * cannot be added bin by bin to one that does not. */
static int check_hist_layout(const struct input *in, struct at_error *err)
{
	static const struct {
		const char *name;
		int64_t value;
	} layout[] = {{"hist_bins_per_octave", AT_HIST_BINS_PER_OCTAVE},
	              {"hist_min_exp", AT_HIST_MIN_EXP},
	              {"hist_max_exp", AT_HIST_MAX_EXP}};
	int status = AT_OK;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	for (size_t i = 0; i < sizeof layout / sizeof layout[0] && !status; i++) {
		int64_t value = layout[i].value; /* missing: the version's value */
		h5_attr_get_int(reader_file(in->r), layout[i].name, &value);
		if (value != layout[i].value)
			status = at_fail(err, AT_EFORMAT,
			                 "%s: histogram layout differs: %s = %lld, this acttrace's is %lld",
			                 in->path, layout[i].name, (long long)value,
			                 (long long)layout[i].value);
	}
	h5_quiet_end(&q);
	return status;
}

static int open_input(struct merge *m, int i, const char *path, struct at_error *err)
{
	struct input *in = &m->in[i];
	in->path = path;
	int status = at_reader_open(&in->r, path, err);
	if (status)
		return status;
	in->info = at_reader_info(in->r);
	if (!in->info->complete && !m->o->allow_incomplete)
		return at_fail(err, AT_EFORMAT,
		               "%s: incomplete trace (complete=0): not merged unless incomplete "
		               "inputs are allowed (trace-merge --allow-incomplete)",
		               path);
	m->merged_incomplete |= !in->info->complete;
	read_root_sampling(in);
	return check_hist_layout(in, err);
}

/* Same points, widths and histograms, in the same order, as the first input;
 * the first difference is named. */
static int check_points(const struct input *first, const struct input *in, struct at_error *err)
{
	int32_t n0 = first->info->points, n = in->info->points;
	for (int32_t i = 0; i < n0 && i < n; i++) {
		const struct at_point_info *a = at_reader_point(first->r, i), *b = at_reader_point(in->r, i);
		if (strcmp(a->name, b->name) != 0)
			return at_fail(err, AT_EFORMAT, "%s: point %d is '%s', in %s it is '%s'", in->path,
			               (int)i, b->name, first->path, a->name);
		if (a->channels != b->channels)
			return at_fail(err, AT_EFORMAT, "%s: point '%s' has %lld channels, in %s %lld",
			               in->path, b->name, (long long)b->channels, first->path,
			               (long long)a->channels);
		if (a->has_hist != b->has_hist)
			return at_fail(err, AT_EFORMAT,
			               "%s: histogram layout differs: point '%s' has %s histogram, in %s "
			               "%s",
			               in->path, b->name, b->has_hist ? "a" : "no", first->path,
			               a->has_hist ? "it has one" : "it has none");
	}
	if (n0 != n)
		return at_fail(err, AT_EFORMAT, "%s: %d points, %s has %d", in->path, (int)n,
		               first->path, (int)n0);
	return AT_OK;
}

/* Samples of different policies would be a mixture no policy describes. */
int merge_check_sampling(const struct input *first, const struct input *in, struct at_error *err)
{
	/* a reservoir keeps the rows of smallest key, a hash of the token index,
	 * and the merge renumbers tokens: the union would be no uniform sample */
	if (strcmp(in->sample_policy, "reservoir") == 0)
		return at_fail(err, AT_EFORMAT,
		               "%s: reservoir samples cannot be merged (capture with every:N or "
		               "first:N to merge samples)",
		               in->path);
	if (strcmp(first->sample_policy, in->sample_policy) != 0 ||
	    (strcmp(in->sample_policy, "none") != 0 && first->sample_n != in->sample_n))
		return at_fail(err, AT_EFORMAT, "%s: sampling differs: %s (n = %lld), in %s %s (n = %lld)",
		               in->path, in->sample_policy, (long long)in->sample_n, first->path,
		               first->sample_policy, (long long)first->sample_n);
	return AT_OK;
}

/* A writer can hold one histogram setting for all points: points either all
 * have histograms or none does (acttrace never writes otherwise). */
static int check_uniform_hist(const struct input *first, struct at_error *err)
{
	for (int32_t i = 1; i < first->info->points; i++)
		if (at_reader_point(first->r, i)->has_hist != at_reader_point(first->r, 0)->has_hist)
			return at_fail(err, AT_EFORMAT,
			               "%s: histogram layout: point '%s' %s a histogram, point '%s' %s",
			               first->path, at_reader_point(first->r, i)->name,
			               at_reader_point(first->r, i)->has_hist ? "has" : "has no",
			               at_reader_point(first->r, 0)->name,
			               at_reader_point(first->r, 0)->has_hist ? "does" : "does not");
	return AT_OK;
}

static int open_inputs(struct merge *m, const char *const *paths, struct at_error *err)
{
	int status = AT_OK;
	for (int i = 0; i < m->n && !status; i++)
		status = open_input(m, i, paths[i], err);
	if (!status)
		status = check_uniform_hist(&m->in[0], err);
	if (!status && slices_wanted(m))
		return slices_plan(m, err);
	for (int i = 1; i < m->n && !status; i++) {
		status = check_points(&m->in[0], &m->in[i], err);
		if (!status)
			status = merge_check_sampling(&m->in[0], &m->in[i], err);
	}
	if (!status)
		m->points = m->in[0].info->points;
	return status;
}

/* ---------------------------------------------------------------- the writer */

static enum at_sample_policy policy_of(const char *name)
{
	return !strcmp(name, "every") ? AT_SAMPLE_EVERY
	       : !strcmp(name, "first") ? AT_SAMPLE_FIRST
	                                : AT_SAMPLE_NONE;
}

/* Output point i as the first input that has it describes it. */
static const struct at_point_info *point_info(const struct merge *m, int32_t i)
{
	return m->slices ? m->slices[i].info : at_reader_point(m->in[0].r, i);
}

static int create_writer(struct merge *m, struct at_error *err)
{
	const struct input *first = &m->in[0];
	struct at_writer_options wo;
	at_writer_options_init(&wo);
	char notes[128];
	snprintf(notes, sizeof notes, "trace-merge of %d traces (listed in /provenance)", m->n);
	wo.model = first->info->model;
	wo.source_dtype = first->info->source_dtype;
	wo.notes = notes;
	wo.hist = m->points > 0 ? point_info(m, 0)->has_hist : 1;
	/* the union's top K is exact only for K up to every input's */
	wo.extremes = (int32_t)first->extremes_k;
	wo.sample_policy = policy_of(first->sample_policy);
	wo.sample_n = first->sample_n > 0 ? first->sample_n : 1;
	wo.max_samples = 0;
	for (int i = 0; i < m->n; i++) {
		if (m->in[i].extremes_k < wo.extremes)
			wo.extremes = (int32_t)m->in[i].extremes_k;
		if (m->in[i].max_samples > wo.max_samples)
			wo.max_samples = m->in[i].max_samples;
	}
	wo.compression_level = m->o->compression_level;
	wo.threads = m->o->threads;
	int status = at_writer_create(&m->w, m->tmp, &wo, err);
	for (int32_t i = 0; i < m->points && !status; i++) {
		const struct at_point_info *p = point_info(m, i);
		struct at_point_desc d = {p->name,   p->layer,        p->component, p->site,
		                          p->module, p->module_class, p->direction, p->channels,
		                          p->channel_offset, p->full_channels, p->replicated};
		if (m->slices) /* assembled: the whole tensor */
			d = (struct at_point_desc){p->name,   p->layer,        p->component,
			                           p->site,   p->module,       p->module_class,
			                           p->direction, m->slices[i].channels, 0, 0, 0};
		int32_t id;
		status = at_writer_add_point(m->w, &d, &id, err);
	}
	return status;
}

/* ---------------------------------------------------------------- tokens */

/* Sequence numbers of input i are shifted by shift so that its smallest
 * follows the largest of the inputs before it (those of the first are kept):
 * shards cut from one stream keep their numbers, independent captures that
 * each count from 0 get distinct ones. */
static int seq_shift(const int32_t *seq, int64_t n, int64_t *largest, int first_input,
                     int64_t *shift, const char *path, struct at_error *err)
{
	int64_t lo = INT64_MAX, hi = INT64_MIN;
	for (int64_t t = 0; t < n; t++) {
		lo = seq[t] < lo ? seq[t] : lo;
		hi = seq[t] > hi ? seq[t] : hi;
	}
	*shift = 0;
	if (n == 0)
		return AT_OK;
	if (!first_input)
		*shift = *largest + 1 - lo;
	if (hi + *shift > INT32_MAX || lo + *shift < INT32_MIN)
		return at_fail(err, AT_ERANGE, "%s: sequence numbers beyond 32 bits once renumbered",
		               path);
	if (first_input || hi + *shift > *largest)
		*largest = hi + *shift;
	return AT_OK;
}

static int add_input_tokens(struct merge *m, int i, int64_t *largest_seq, struct at_error *err)
{
	struct input *in = &m->in[i];
	int64_t n = in->info->tokens;
	size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(int32_t);
	int32_t *seq = malloc(bytes), *pos = malloc(bytes), *id = malloc(bytes);
	int64_t shift = 0;
	int status = seq && pos && id ? AT_OK : at_fail(err, AT_ENOMEM, "%s: out of memory", in->path);
	if (!status && n > 0)
		status = at_reader_read_tokens(in->r, 0, n, seq, pos, id, err);
	if (!status)
		status = seq_shift(seq, n, largest_seq, i == 0, &shift, in->path, err);
	for (int64_t t = 0; t < n && !status; t++)
		seq[t] = (int32_t)(seq[t] + shift);
	if (!status)
		status = at_writer_add_tokens(m->w, seq, pos, id, n, &in->token_offset, err);
	free(seq);
	free(pos);
	free(id);
	return status;
}

/* The ranks of a tensor-parallel capture saw the same tokens (slices_plan
 * checked): the first input's stand for all, every token_offset 0. */
static int add_tokens(struct merge *m, struct at_error *err)
{
	int64_t largest_seq = INT64_MIN;
	int status = AT_OK;
	for (int i = 0; i < (m->slices ? 1 : m->n) && !status; i++)
		status = add_input_tokens(m, i, &largest_seq, err);
	return status;
}

/* ---------------------------------------------------------------- weights */

/* First difference of two arrays, or -1; means of |w| to a relative tolerance. */
static int64_t first_difference(const double *a, const double *b, int64_t n, double rtol)
{
	for (int64_t i = 0; i < n; i++)
		if (!(a[i] == b[i] || fabs(a[i] - b[i]) <= rtol * fmax(fabs(a[i]), fabs(b[i]))))
			return i;
	return -1;
}

static int weights_differ(const struct at_weight_stats *a, const struct at_weight_stats *b,
                          char *why, size_t size)
{
	if (a->rows != b->rows || a->cols != b->cols) {
		snprintf(why, size, "%lld x %lld, not %lld x %lld", (long long)b->rows,
		         (long long)b->cols, (long long)a->rows, (long long)a->cols);
		return 1;
	}
	const struct {
		const char *name;
		const double *a, *b;
		int64_t n;
		double rtol;
	} lines[] = {
		{"row_absmax", a->row_absmax, b->row_absmax, a->rows, 0},
		{"col_absmax", a->col_absmax, b->col_absmax, a->cols, 0},
		{"row_absmean", a->row_absmean, b->row_absmean, a->rows, WEIGHT_MEAN_RTOL},
		{"col_absmean", a->col_absmean, b->col_absmean, a->cols, WEIGHT_MEAN_RTOL},
		/* optional: compared where both traces have it */
		{"row_sumsq", a->row_sumsq, b->row_sumsq, a->rows, WEIGHT_MEAN_RTOL},
	};
	for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++) {
		if (!lines[k].a || !lines[k].b)
			continue;
		int64_t i = first_difference(lines[k].a, lines[k].b, lines[k].n, lines[k].rtol);
		if (i >= 0) {
			snprintf(why, size, "%s[%lld] = %.17g, not %.17g", lines[k].name, (long long)i,
			         lines[k].b[i], lines[k].a[i]);
			return 1;
		}
	}
	if (!a->values != !b->values) {
		snprintf(why, size, "values %s", b->values ? "present" : "missing");
		return 1;
	}
	for (int64_t i = 0; a->values && i < a->cols; i++) {
		if (memcmp(&a->values[i], &b->values[i], sizeof(float)) != 0) {
			snprintf(why, size, "values[%lld] = %.9g, not %.9g", (long long)i,
			         (double)b->values[i], (double)a->values[i]);
			return 1;
		}
	}
	return 0;
}

/* Weight ref of input `from` against input i's weight of the same name:
 * AT_OK when they agree, or when they differ and force keeps the first's.
 * The ranks of a tensor-parallel capture record only the weights they hold
 * whole: there, a weight one lacks is no difference. */
static int compare_weight(struct merge *m, int from, int i, const struct at_weight_stats *ref,
                          struct at_error *err)
{
	struct input *in = &m->in[i];
	int32_t index = -1;
	for (int32_t k = 0; k < in->info->weights; k++)
		if (strcmp(at_reader_weight_name(in->r, k), ref->module) == 0)
			index = k;
	char why[256] = "";
	struct at_weight_stats other;
	int status = AT_OK;
	if (index < 0 && m->slices)
		return AT_OK;
	if (index < 0) {
		snprintf(why, sizeof why, "missing");
	} else {
		status = at_reader_load_weight(in->r, index, &other, err);
		if (status)
			return status;
		weights_differ(ref, &other, why, sizeof why);
		at_weight_stats_free(&other);
	}
	if (!why[0])
		return AT_OK;
	m->weights_differ = 1;
	if (m->o->force)
		return AT_OK;
	return at_fail(err, AT_EFORMAT,
	               "%s: weight '%s' differs from %s's (%s): not the same model? (trace-merge "
	               "--force keeps the first file's weights)",
	               in->path, ref->module, m->in[from].path, why);
}

/* Weights in input i that the first input lacks differ too. */
static int check_extra_weights(struct merge *m, int i, struct at_error *err)
{
	const struct input *first = &m->in[0], *in = &m->in[i];
	for (int32_t k = 0; k < in->info->weights; k++) {
		const char *name = at_reader_weight_name(in->r, k);
		int found = 0;
		for (int32_t j = 0; j < first->info->weights && !found; j++)
			found = strcmp(at_reader_weight_name(first->r, j), name) == 0;
		if (found)
			continue;
		m->weights_differ = 1;
		if (!m->o->force)
			return at_fail(err, AT_EFORMAT,
			               "%s: weight '%s' is missing in %s: not the same model? (trace-merge "
			               "--force keeps the first file's weights)",
			               in->path, name, first->path);
	}
	return AT_OK;
}

/* Whether an input before `before` has a weight of this name. */
static int weight_seen(const struct merge *m, int before, const char *name)
{
	for (int i = 0; i < before; i++)
		for (int32_t k = 0; k < m->in[i].info->weights; k++)
			if (strcmp(at_reader_weight_name(m->in[i].r, k), name) == 0)
				return 1;
	return 0;
}

/* Tensor-parallel ranks: every weight any rank holds, from the first input
 * that has it, checked against the others that have it too. */
static int add_weights_union(struct merge *m, struct at_error *err)
{
	int status = AT_OK;
	for (int i = 0; i < m->n && !status; i++) {
		for (int32_t k = 0; k < m->in[i].info->weights && !status; k++) {
			if (weight_seen(m, i, at_reader_weight_name(m->in[i].r, k)))
				continue;
			struct at_weight_stats ws;
			if ((status = at_reader_load_weight(m->in[i].r, k, &ws, err)))
				break;
			for (int j = i + 1; j < m->n && !status; j++)
				status = compare_weight(m, i, j, &ws, err);
			struct at_weight_summary sum = {ws.rows,       ws.cols,        ws.row_absmax,
			                                ws.row_absmean, ws.col_absmax, ws.col_absmean,
			                                ws.values,      ws.row_sumsq};
			if (!status)
				status = at_writer_add_weight_summary(m->w, ws.module, ws.module_class, &sum,
				                                      err);
			at_weight_stats_free(&ws);
		}
	}
	return status;
}

/* The first input's weights, checked against every other input's. */
static int add_weights(struct merge *m, struct at_error *err)
{
	if (m->slices)
		return add_weights_union(m, err);
	const struct input *first = &m->in[0];
	int status = AT_OK;
	for (int i = 1; i < m->n && !status; i++)
		status = check_extra_weights(m, i, err);
	for (int32_t j = 0; j < first->info->weights && !status; j++) {
		struct at_weight_stats ws;
		status = at_reader_load_weight(first->r, j, &ws, err);
		if (status)
			break;
		for (int i = 1; i < m->n && !status; i++)
			status = compare_weight(m, 0, i, &ws, err);
		struct at_weight_summary s = {ws.rows,       ws.cols,        ws.row_absmax,
		                              ws.row_absmean, ws.col_absmax, ws.col_absmean,
		                              ws.values,      ws.row_sumsq};
		if (!status)
			status = at_writer_add_weight_summary(m->w, ws.module, ws.module_class, &s, err);
		at_weight_stats_free(&ws);
	}
	return status;
}

/* ---------------------------------------------------------------- statistics */

/* Extremes name rows of the input's own /tokens: move them to the output's. */
static int remap_extremes(const struct input *in, int32_t point, struct at_stats *s,
                          struct at_error *err)
{
	for (int32_t k = 0; k < s->n_extremes; k++) {
		struct at_extreme *e = &s->extremes[k];
		if (e->token < 0 || e->token >= in->info->tokens)
			return at_fail(err, AT_EFORMAT, "%s: point '%s': extreme %d names token %lld of %lld",
			               in->path, at_reader_point(in->r, point)->name, (int)k,
			               (long long)e->token, (long long)in->info->tokens);
		e->token += in->token_offset;
	}
	return AT_OK;
}

/* Every input's accumulators of one point folded, in input order, into the
 * writer's, which start empty. */
static int merge_point(struct merge *m, int32_t point, struct at_error *err)
{
	struct at_stats *dst = writer_point_stats(m->w, point);
	int status = AT_OK;
	for (int i = 0; i < m->n && !status; i++) {
		struct at_stats s;
		status = at_reader_load_stats(m->in[i].r, point, &s, err);
		if (status)
			break;
		status = remap_extremes(&m->in[i], point, &s, err);
		if (!status)
			status = at_stats_merge(dst, &s, err);
		if (status == AT_ERANGE && err) {
			char reason[sizeof err->message];
			snprintf(reason, sizeof reason, "%s", err->message);
			status = at_fail(err, AT_ERANGE, "%s: point '%s': %s", m->in[i].path,
			                 at_reader_point(m->in[i].r, point)->name, reason);
		}
		at_stats_free(&s);
	}
	return status;
}

/* Points in parallel (reads take HDF5's lock in turn; the merging does not),
 * in rounds, with a progress report after each on the calling thread. */
static int merge_stats(struct merge *m, struct at_error *err)
{
	int status = AT_OK;
	for (int32_t round = 0; round < m->points && !status; round += POINTS_PER_ROUND) {
		int32_t end = round + POINTS_PER_ROUND < m->points ? round + POINTS_PER_ROUND : m->points;
		int failed_at = -1;
		struct at_error first_err = {0};
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(m->o->threads > 0 ? m->o->threads : omp_get_max_threads())
#endif
		for (int32_t p = round; p < end; p++) {
			struct at_error e = {0};
			if ((m->slices ? slices_merge_point(m, p, &e) : merge_point(m, p, &e)) == AT_OK)
				continue;
#ifdef _OPENMP
#pragma omp critical(at_merge_error)
#endif
			if (failed_at < 0 || p < failed_at) { /* the first point's error, whatever the threads */
				failed_at = p;
				first_err = e;
			}
		}
		if (failed_at >= 0) {
			if (err)
				*err = first_err;
			return first_err.code ? first_err.code : AT_EIO;
		}
		status = report(m, "statistics", end, m->points, err);
	}
	return status;
}

/* ---------------------------------------------------------------- samples */

/* Rows whose token lies beyond the input's /tokens were written after its last
 * checkpoint (acttrace-format(5), INCOMPLETE TRACES): dropped from an
 * incomplete input, an error in a complete one.  The rest are remapped and
 * moved to the front; returns how many are kept. */
static int64_t remap_sample_tokens(const struct input *in, const char *point, float *rows,
                                   int64_t channels, int64_t *tokens, int64_t n,
                                   struct at_error *err)
{
	int64_t kept = 0;
	for (int64_t r = 0; r < n; r++) {
		if (tokens[r] < 0 || tokens[r] >= in->info->tokens) {
			if (in->info->complete) {
				at_fail(err, AT_EFORMAT, "%s: point '%s': sample row names token %lld of %lld",
				        in->path, point, (long long)tokens[r], (long long)in->info->tokens);
				return -1;
			}
			continue;
		}
		if (kept != r)
			memmove(rows + kept * channels, rows + r * channels,
			        (size_t)channels * sizeof *rows);
		tokens[kept++] = tokens[r] + in->token_offset;
	}
	return kept;
}

/* Rows per batch of rows `channels` wide: whole chunks of p, about
 * SAMPLE_BATCH_BYTES. */
int64_t merge_sample_batch_rows(const struct at_point_info *p, int64_t channels)
{
	int64_t chunk = p->sample_chunk_rows > 0 ? p->sample_chunk_rows : 1;
	int64_t rows = SAMPLE_BATCH_BYTES / ((int64_t)sizeof(float) * channels) / chunk * chunk;
	return rows > chunk ? rows : chunk;
}

/* One input's rows of one point appended, until the output's cap; what the
 * cap refuses is counted as dropped, with what the input had dropped. */
static int append_samples(struct merge *m, int i, int32_t point, enum at_dtype dtype,
                          float *rows, void *narrow, int64_t *tokens, int64_t batch,
                          struct at_error *err)
{
	const struct input *in = &m->in[i];
	const struct at_point_info *p = at_reader_point(in->r, point);
	int64_t dropped = p->samples_dropped;
	int status = AT_OK;
	for (int64_t first = 0; first < p->samples && !status; first += batch) {
		int64_t room = writer_sample_room(m->w, point);
		if (room == 0) { /* the rest would be refused: count them without reading */
			dropped += p->samples - first;
			break;
		}
		int64_t n = p->samples - first < batch ? p->samples - first : batch;
		status = at_reader_read_samples(in->r, point, first, n, rows, tokens, err);
		int64_t kept = status ? -1 : remap_sample_tokens(in, p->name, rows, p->channels, tokens, n, err);
		if (kept < 0)
			return status ? status : err ? err->code : AT_EFORMAT;
		/* back to the dtype every input stored them in (exactly: they came
		 * from it), so that the output keeps it */
		const void *data = rows;
		if (dtype != AT_F32) {
			at_convert_run(rows, AT_F32, narrow, dtype, (size_t)(kept * p->channels));
			data = narrow;
		}
		status = writer_add_sampled_rows(m->w, point, data, dtype, tokens, kept, 0, err);
	}
	if (!status)
		status = writer_add_sampled_rows(m->w, point, NULL, AT_F32, NULL, 0, dropped, err);
	return status;
}

static int merge_point_samples(struct merge *m, int32_t point, struct at_error *err)
{
	const struct at_point_info *p = at_reader_point(m->in[0].r, point);
	int64_t batch = merge_sample_batch_rows(p, p->channels);
	float *rows = malloc((size_t)(batch * p->channels) * sizeof *rows);
	void *narrow = malloc((size_t)(batch * p->channels) * sizeof(uint16_t));
	int64_t *tokens = malloc((size_t)batch * sizeof *tokens);
	int status = rows && narrow && tokens
	                 ? AT_OK
	                 : at_fail(err, AT_ENOMEM, "%s: out of memory for samples", m->out);
	enum at_dtype dtype = p->sample_dtype; /* float32 unless every input agrees */
	for (int i = 1; i < m->n; i++)
		if (at_reader_point(m->in[i].r, point)->sample_dtype != dtype)
			dtype = AT_F32;
	for (int i = 0; i < m->n && !status; i++)
		status = append_samples(m, i, point, dtype, rows, narrow, tokens, batch, err);
	free(rows);
	free(narrow);
	free(tokens);
	return status;
}

/* Sample rows go through the writer's queue, one point at a time: the writer
 * compresses them on its own threads. */
static int merge_samples(struct merge *m, struct at_error *err)
{
	if (policy_of(m->in[0].sample_policy) == AT_SAMPLE_NONE)
		return AT_OK;
	int status = AT_OK;
	for (int32_t p = 0; p < m->points && !status; p++) {
		status = m->slices ? slices_merge_point_samples(m, p, err) : merge_point_samples(m, p, err);
		if (!status)
			status = report(m, "samples", p + 1, m->points, err);
	}
	return status;
}

/* ---------------------------------------------------------------- provenance */

/* The longest of one string field of the inputs, +1: fixed-length strings
 * (acttrace-format(5)), as short as they can be. */
static size_t field_size(const struct merge *m, int field)
{
	size_t longest = 1;
	for (int i = 0; i < m->n; i++) {
		const struct input *in = &m->in[i];
		const char *s = field == 0 ? in->path : field == 1 ? in->info->model : in->info->created;
		longest = strlen(s) + 1 > longest ? strlen(s) + 1 : longest;
	}
	return longest;
}

static hid_t string_type(size_t size)
{
	hid_t t = H5Tcopy(H5T_C_S1);
	if (t >= 0 && (H5Tset_size(t, size) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
	               H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
		H5Tclose(t);
		return -1;
	}
	return t;
}

/* compound {path, model, created, tokens, complete}, packed; the same layout
 * serves the file and memory (integers in native order: HDF5 converts). */
static hid_t provenance_type(const size_t sizes[3], int native, size_t *record)
{
	static const char *const names[3] = {"path", "model", "created"};
	*record = sizes[0] + sizes[1] + sizes[2] + 8 + 4;
	hid_t type = H5Tcreate(H5T_COMPOUND, *record);
	size_t offset = 0;
	int bad = type < 0;
	for (int k = 0; k < 3 && !bad; k++) {
		hid_t s = string_type(sizes[k]);
		bad = s < 0 || H5Tinsert(type, names[k], offset, s) < 0;
		if (s >= 0)
			H5Tclose(s);
		offset += sizes[k];
	}
	bad = bad || H5Tinsert(type, "tokens", offset, native ? H5T_NATIVE_INT64 : H5T_STD_I64LE) < 0;
	bad = bad || H5Tinsert(type, "complete", offset + 8,
	                       native ? H5T_NATIVE_INT32 : H5T_STD_I32LE) < 0;
	if (bad && type >= 0) {
		H5Tclose(type);
		return -1;
	}
	return type;
}

static void provenance_records(const struct merge *m, const size_t sizes[3], size_t record,
                               unsigned char *buf)
{
	for (int i = 0; i < m->n; i++) {
		const struct input *in = &m->in[i];
		unsigned char *r = buf + (size_t)i * record;
		const char *fields[3] = {in->path, in->info->model, in->info->created};
		size_t offset = 0;
		for (int k = 0; k < 3; k++) {
			memset(r + offset, 0, sizes[k]);
			memcpy(r + offset, fields[k], strlen(fields[k]));
			offset += sizes[k];
		}
		int64_t tokens = in->info->tokens;
		int32_t complete = in->info->complete;
		memcpy(r + offset, &tokens, sizeof tokens);
		memcpy(r + offset + 8, &complete, sizeof complete);
	}
}

static int write_provenance(const struct merge *m, hid_t file)
{
	size_t sizes[3] = {field_size(m, 0), field_size(m, 1), field_size(m, 2)}, record;
	hid_t ftype = provenance_type(sizes, 0, &record), mtype = provenance_type(sizes, 1, &record);
	unsigned char *buf = calloc((size_t)m->n, record);
	int status = -1;
	if (ftype >= 0 && mtype >= 0 && buf) {
		provenance_records(m, sizes, record, buf);
		hsize_t dims[1] = {(hsize_t)m->n};
		status = h5_put_compressed(file, "provenance", ftype, mtype, 1, dims, dims,
		                           m->o->compression_level, buf);
	}
	free(buf);
	if (ftype >= 0)
		H5Tclose(ftype);
	if (mtype >= 0)
		H5Tclose(mtype);
	return status;
}

/* Rows the inputs' writers dropped because they were behind, summed per point
 * (the writer knows only its own); the slices of one tensor-parallel point
 * are of the same rows, so there the largest counts. */
static int write_dropped_busy(const struct merge *m, hid_t file)
{
	int status = 0;
	for (int32_t p = 0; p < m->points && !status; p++) {
		char path[300];
		int64_t sum = 0;
		snprintf(path, sizeof path, "points/%s", point_info(m, p)->name);
		for (int i = 0; i < m->n; i++) {
			int64_t busy = 0;
			hid_t g = H5Gopen2(reader_file(m->in[i].r), path, H5P_DEFAULT);
			if (g >= 0) {
				h5_attr_get_int(g, "samples_dropped_busy", &busy);
				H5Gclose(g);
			}
			sum = m->slices ? (busy > sum ? busy : sum) : sum + busy;
		}
		if (sum == 0)
			continue;
		hid_t g = H5Gopen2(file, path, H5P_DEFAULT);
		status = g < 0 || h5_attr_put_int(g, "samples_dropped_busy", H5T_STD_I64LE, sum) < 0;
		if (g >= 0)
			H5Gclose(g);
	}
	return status ? -1 : 0;
}

/* What only the merge knows, added to the closed temporary. */
static int annotate(const struct merge *m, struct at_error *err)
{
	struct h5_quiet q;
	h5_quiet_begin(&q);
	hid_t file = H5Fopen(m->tmp, H5F_ACC_RDWR, H5P_DEFAULT);
	int bad = file < 0 || write_provenance(m, file) < 0 || write_dropped_busy(m, file) < 0;
	if (!bad && m->merged_incomplete)
		bad = h5_attr_put_int(file, "merged_incomplete", H5T_STD_I32LE, 1) < 0;
	if (!bad && m->weights_differ)
		bad = h5_attr_put_int(file, "merged_weights_differ", H5T_STD_I32LE, 1) < 0;
	if (file >= 0 && H5Fclose(file) < 0)
		bad = 1;
	h5_quiet_end(&q);
	return bad ? at_fail(err, AT_EIO, "%s: cannot write the provenance", m->tmp) : AT_OK;
}

/* ---------------------------------------------------------------- at_merge */

static int check_arguments(const char *out, const char *const *inputs, int n,
                           const struct at_merge_options *o, struct at_error *err)
{
	if (!out || !*out)
		return at_fail(err, AT_EINVAL, "merge: empty output path");
	if (!inputs || n < 1)
		return at_fail(err, AT_EINVAL, "%s: nothing to merge", out);
	for (int i = 0; i < n; i++)
		if (!inputs[i] || !*inputs[i])
			return at_fail(err, AT_EINVAL, "%s: input %d has an empty path", out, i + 1);
	if (o->compression_level < 1 || o->compression_level > 19)
		return at_fail(err, AT_EINVAL, "merge options: zstd level %d not in 1..19",
		               o->compression_level);
	return check_output(out, inputs, n, err);
}

static int run(struct merge *m, const char *const *inputs, struct at_error *err)
{
	int status = open_inputs(m, inputs, err);
	if (!status)
		status = create_temporary(m, err);
	if (!status)
		status = create_writer(m, err);
	if (!status)
		status = add_tokens(m, err);
	if (!status)
		status = add_weights(m, err);
	if (!status)
		status = merge_stats(m, err);
	if (!status)
		status = merge_samples(m, err);
	if (status)
		return status;
	struct at_writer *w = m->w;
	m->w = NULL;
	if ((status = at_writer_close(w, err)) || (status = annotate(m, err)))
		return status;
	if (rename(m->tmp, m->out) != 0)
		return at_fail(err, AT_EIO, "%s: cannot rename %s over it: %s", m->out, m->tmp,
		               strerror(errno));
	free(m->tmp);
	m->tmp = NULL; /* committed */
	return AT_OK;
}

/* The writer's messages name the file it writes, the temporary: the user
 * knows the output by its own name. */
static void name_the_output(struct at_error *err, const char *tmp, const char *out)
{
	size_t n = strlen(tmp);
	if (!err || strncmp(err->message, tmp, n) != 0)
		return;
	char rest[sizeof err->message];
	snprintf(rest, sizeof rest, "%s", err->message + n);
	snprintf(err->message, sizeof err->message, "%s%s", out, rest);
}

int at_merge(const char *out, const char *const *inputs, int n_inputs,
             const struct at_merge_options *opts, struct at_error *err)
{
	struct at_merge_options defaults;
	if (!opts) {
		at_merge_options_init(&defaults);
		opts = &defaults;
	}
	int status = check_arguments(out, inputs, n_inputs, opts, err);
	if (status)
		return status;
	struct merge m = {.out = out, .o = opts, .n = n_inputs};
	if (!(m.in = calloc((size_t)n_inputs, sizeof *m.in)))
		return at_fail(err, AT_ENOMEM, "%s: out of memory", out);
	status = run(&m, inputs, err);
	if (status && m.tmp)
		name_the_output(err, m.tmp, out);
	at_writer_abandon(m.w);
	if (m.tmp)
		unlink(m.tmp);
	free(m.tmp);
	slices_free(&m);
	for (int i = 0; i < n_inputs; i++)
		at_reader_close(m.in[i].r);
	free(m.in);
	return status;
}
