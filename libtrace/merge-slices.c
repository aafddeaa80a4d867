/* merge-slices.c: the traces of the ranks of one tensor-parallel capture
 * assembled into one trace (acttrace-format(5), CHANNEL SLICES): every
 * point's channel slices placed side by side into the whole tensor, points
 * recorded whole by one rank copied; the ranks saw the same tokens, so
 * /tokens and the sampled tokens are each rank's alike and kept once. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "extension.h"
#include "internal.h"
#include "merge-internal.h"

/* ---------------------------------------------------------------- the mode */

static int is_slice(const struct at_point_info *p)
{
	return p->full_channels != p->channels || p->channel_offset != 0 || p->replicated;
}

static int holds_slices(const struct input *in)
{
	for (int32_t i = 0; i < in->info->points; i++)
		if (is_slice(at_reader_point(in->r, i)))
			return 1;
	return 0;
}

int slices_wanted(const struct merge *m)
{
	for (int i = 0; i < m->n; i++)
		if (holds_slices(&m->in[i]))
			return 1;
	return 0;
}

/* ---------------------------------------------------------------- the ranks */

/* Every input a rank of the same world, each rank exactly once; a trace
 * without slices (a data-parallel shard, a whole capture) has no place among
 * them.  by_rank[r] receives the input of rank r. */
static int check_ranks(const struct merge *m, int *by_rank, struct at_error *err)
{
	const struct input *sliced = NULL;
	for (int i = 0; i < m->n && !sliced; i++)
		if (holds_slices(&m->in[i]))
			sliced = &m->in[i];
	for (int i = 0; i < m->n; i++) {
		const struct input *in = &m->in[i];
		if (!holds_slices(in) || in->info->world_size < 2)
			return at_fail(err, AT_EFORMAT,
			               "%s: not a rank of a tensor-parallel capture (no channel slices), "
			               "while %s holds channel slices: data-parallel shards and "
			               "tensor-parallel ranks are not merged together",
			               in->path, sliced->path);
		if (in->info->world_size != sliced->info->world_size)
			return at_fail(err, AT_EFORMAT, "%s: rank %d of %d, but %s is a rank of %d",
			               in->path, (int)in->info->rank, (int)in->info->world_size,
			               sliced->path, (int)sliced->info->world_size);
	}
	int world = sliced->info->world_size;
	for (int r = 0; r < world; r++)
		by_rank[r] = -1;
	for (int i = 0; i < m->n; i++) {
		int r = m->in[i].info->rank;
		if (by_rank[r] >= 0)
			return at_fail(err, AT_EFORMAT, "%s: rank %d, like %s", m->in[i].path, r,
			               m->in[by_rank[r]].path);
		by_rank[r] = i;
	}
	for (int r = 0; r < world; r++)
		if (by_rank[r] < 0)
			return at_fail(err, AT_EFORMAT,
			               "%s: rank %d of %d: rank %d of its tensor-parallel capture is not "
			               "among the inputs",
			               sliced->path, (int)sliced->info->rank, world, r);
	return AT_OK;
}

/* Tensor-parallel ranks see the same tokens: any difference means the traces
 * are not of one capture. */
static int read_all_tokens(const struct input *in, int32_t **cols, struct at_error *err)
{
	int64_t n = in->info->tokens;
	for (int k = 0; k < 3; k++)
		if (!(cols[k] = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t))))
			return at_fail(err, AT_ENOMEM, "%s: out of memory for /tokens", in->path);
	return n > 0 ? at_reader_read_tokens(in->r, 0, n, cols[0], cols[1], cols[2], err) : AT_OK;
}

static int64_t first_token_difference(int32_t *const *a, int32_t *const *b, int64_t n)
{
	for (int64_t t = 0; t < n; t++)
		for (int k = 0; k < 3; k++)
			if (a[k][t] != b[k][t])
				return t;
	return -1;
}

static int check_tokens(const struct input *first, const struct input *in, struct at_error *err)
{
	if (in->info->tokens != first->info->tokens)
		return at_fail(err, AT_EFORMAT,
		               "%s: %lld tokens, %s has %lld: tensor-parallel ranks see the same tokens",
		               in->path, (long long)in->info->tokens, first->path,
		               (long long)first->info->tokens);
	int32_t *a[3] = {0}, *b[3] = {0};
	int status = read_all_tokens(first, a, err);
	if (!status)
		status = read_all_tokens(in, b, err);
	int64_t t = status ? -1 : first_token_difference(a, b, in->info->tokens);
	if (t >= 0)
		status = at_fail(err, AT_EFORMAT,
		                 "%s: token %lld (seq %d, pos %d, id %d) differs from %s's (seq %d, pos "
		                 "%d, id %d): tensor-parallel ranks see the same tokens",
		                 in->path, (long long)t, b[0][t], b[1][t], b[2][t], first->path, a[0][t],
		                 a[1][t], a[2][t]);
	for (int k = 0; k < 3; k++) {
		free(a[k]);
		free(b[k]);
	}
	return status;
}

/* ---------------------------------------------------------------- the plan */

static int by_offset(const void *x, const void *y)
{
	const struct slice_part *a = x, *b = y;
	return (a->offset > b->offset) - (a->offset < b->offset);
}

/* Output point `name`: every input's slice of it, in channel order, which
 * must cover the whole tensor once. */
static int plan_point(struct merge *m, const int *by_rank, const char *name,
                      struct slice_point *sp, struct at_error *err)
{
	if (!(sp->parts = calloc((size_t)m->n, sizeof *sp->parts)))
		return at_fail(err, AT_ENOMEM, "%s: out of memory", m->out);
	const struct input *full_from = NULL;
	for (int r = 0; r < m->n; r++) {
		const struct input *in = &m->in[by_rank[r]];
		int32_t index;
		if (at_reader_find_point(in->r, name, &index) != AT_OK)
			continue;
		const struct at_point_info *p = at_reader_point(in->r, index);
		if (!sp->info) {
			sp->info = p;
			sp->channels = p->full_channels;
			full_from = in;
		}
		if (p->full_channels != sp->channels || p->has_hist != sp->info->has_hist)
			return at_fail(err, AT_EFORMAT,
			               "%s: point '%s' is %lld channels wide%s, in %s %lld%s", in->path,
			               name, (long long)p->full_channels,
			               p->has_hist ? " with a histogram" : " without a histogram",
			               full_from->path, (long long)sp->channels,
			               sp->info->has_hist ? " with a histogram" : " without a histogram");
		sp->parts[sp->n_parts++] = (struct slice_part){by_rank[r], index, p->channel_offset,
		                                               p->channels};
	}
	qsort(sp->parts, (size_t)sp->n_parts, sizeof *sp->parts, by_offset);
	int64_t end = 0;
	for (int k = 0; k < sp->n_parts; k++) {
		const struct slice_part *a = &sp->parts[k];
		if (a->offset > end)
			return at_fail(err, AT_EFORMAT,
			               "%s: point '%s': no input holds channels %lld to %lld of %lld (a "
			               "gap before this input's %lld to %lld)",
			               m->in[a->input].path, name, (long long)end, (long long)a->offset - 1,
			               (long long)sp->channels, (long long)a->offset,
			               (long long)(a->offset + a->channels - 1));
		if (a->offset < end)
			return at_fail(err, AT_EFORMAT,
			               "%s: point '%s': channels %lld to %lld overlap %s's, which end at "
			               "%lld",
			               m->in[a->input].path, name, (long long)a->offset,
			               (long long)(a->offset + a->channels - 1),
			               m->in[sp->parts[k - 1].input].path, (long long)end - 1);
		end = a->offset + a->channels;
	}
	const struct slice_part *last = &sp->parts[sp->n_parts - 1];
	if (end < sp->channels)
		return at_fail(err, AT_EFORMAT,
		               "%s: point '%s': no input holds channels %lld to %lld of %lld (a gap "
		               "after this input's %lld to %lld)",
		               m->in[last->input].path, name, (long long)end, (long long)sp->channels - 1,
		               (long long)sp->channels, (long long)last->offset, (long long)end - 1);
	return AT_OK;
}

/* The output's points: rank 0's in its order, then any other rank's that
 * rank 0 lacks, in theirs. */
static int plan_points(struct merge *m, const int *by_rank, struct at_error *err)
{
	int64_t most = 0;
	for (int i = 0; i < m->n; i++)
		most += m->in[i].info->points;
	if (!(m->slices = calloc((size_t)(most > 0 ? most : 1), sizeof *m->slices)))
		return at_fail(err, AT_ENOMEM, "%s: out of memory", m->out);
	m->points = 0;
	int status = AT_OK;
	for (int r = 0; r < m->n && !status; r++) {
		const struct input *in = &m->in[by_rank[r]];
		for (int32_t i = 0; i < in->info->points && !status; i++) {
			const char *name = at_reader_point(in->r, i)->name;
			int seen = 0;
			for (int q = 0; q < r && !seen; q++) {
				int32_t index;
				seen = at_reader_find_point(m->in[by_rank[q]].r, name, &index) == AT_OK;
			}
			if (!seen)
				status = plan_point(m, by_rank, name, &m->slices[m->points++], err);
		}
	}
	return status;
}

int slices_plan(struct merge *m, struct at_error *err)
{
	int world = m->n; /* every rank lies below its world_size (the reader checks) */
	for (int i = 0; i < m->n; i++)
		world = m->in[i].info->world_size > world ? m->in[i].info->world_size : world;
	int *by_rank = malloc((size_t)world * sizeof *by_rank);
	int status = by_rank ? check_ranks(m, by_rank, err)
	                     : at_fail(err, AT_ENOMEM, "%s: out of memory", m->out);
	for (int i = 1; i < m->n && !status; i++)
		status = merge_check_sampling(&m->in[0], &m->in[i], err);
	for (int i = 1; i < m->n && !status; i++)
		status = check_tokens(&m->in[by_rank[0]], &m->in[by_rank[i]], err);
	if (!status)
		status = plan_points(m, by_rank, err);
	free(by_rank);
	return status;
}

void slices_free(struct merge *m)
{
	for (int32_t p = 0; m->slices && p < m->points; p++)
		free(m->slices[p].parts);
	free(m->slices);
	m->slices = NULL;
}

/* ---------------------------------------------------------------- statistics */

int slices_merge_point(struct merge *m, int32_t p, struct at_error *err)
{
	const struct slice_point *sp = &m->slices[p];
	struct at_stats *dst = writer_point_stats(m->w, p);
	int status = AT_OK;
	for (int k = 0; k < sp->n_parts && !status; k++) {
		const struct slice_part *part = &sp->parts[k];
		struct at_stats s;
		status = at_reader_load_stats(m->in[part->input].r, part->index, &s, err);
		if (status)
			break;
		status = stats_place_slice(dst, &s, part->offset, err);
		at_stats_free(&s);
	}
	return status;
}

/* ---------------------------------------------------------------- samples */

/* Every part sampled the same tokens (the same rows of the same /tokens,
 * under the same policy); rows the cap refused are counted once. */
static int check_sample_counts(const struct merge *m, const struct slice_point *sp,
                               int64_t *rows, int64_t *dropped, struct at_error *err)
{
	const struct slice_part *first = &sp->parts[0];
	const struct at_point_info *a = at_reader_point(m->in[first->input].r, first->index);
	*rows = a->samples;
	*dropped = a->samples_dropped;
	for (int k = 1; k < sp->n_parts; k++) {
		const struct at_point_info *b =
			at_reader_point(m->in[sp->parts[k].input].r, sp->parts[k].index);
		if (b->samples != a->samples)
			return at_fail(err, AT_EFORMAT,
			               "%s: point '%s' has %lld sampled rows, %s %lld: the ranks sampled "
			               "different tokens",
			               m->in[sp->parts[k].input].path, a->name, (long long)b->samples,
			               m->in[first->input].path, (long long)a->samples);
		*dropped = b->samples_dropped > *dropped ? b->samples_dropped : *dropped;
	}
	return AT_OK;
}

struct sample_buffers {
	float *part_rows, *rows;
	void *narrow;
	int64_t *tokens, *part_tokens;
};

static int alloc_buffers(struct sample_buffers *b, int64_t batch, int64_t channels,
                         const char *out, struct at_error *err)
{
	size_t values = (size_t)(batch * channels);
	b->part_rows = malloc(values * sizeof *b->part_rows);
	b->rows = malloc(values * sizeof *b->rows);
	b->narrow = malloc(values * sizeof(uint16_t));
	b->tokens = malloc((size_t)batch * sizeof *b->tokens);
	b->part_tokens = malloc((size_t)batch * sizeof *b->part_tokens);
	if (b->part_rows && b->rows && b->narrow && b->tokens && b->part_tokens)
		return AT_OK;
	return at_fail(err, AT_ENOMEM, "%s: out of memory for samples", out);
}

static void free_buffers(struct sample_buffers *b)
{
	free(b->part_rows);
	free(b->rows);
	free(b->narrow);
	free(b->tokens);
	free(b->part_tokens);
}

/* Rows [first, first + n) of one part placed at its channels of the whole
 * rows; their tokens must be the first part's. */
static int place_part_rows(const struct merge *m, const struct slice_point *sp, int k,
                           int64_t first, int64_t n, struct sample_buffers *b,
                           struct at_error *err)
{
	const struct slice_part *part = &sp->parts[k];
	const struct input *in = &m->in[part->input];
	int64_t *tokens = k == 0 ? b->tokens : b->part_tokens;
	int status = at_reader_read_samples(in->r, part->index, first, n, b->part_rows, tokens, err);
	for (int64_t r = 0; r < n && !status; r++) {
		if (tokens[r] < 0 || tokens[r] >= in->info->tokens)
			return at_fail(err, AT_EFORMAT, "%s: point '%s': sample row names token %lld of %lld",
			               in->path, sp->info->name, (long long)tokens[r],
			               (long long)in->info->tokens);
		if (tokens[r] != b->tokens[r])
			return at_fail(err, AT_EFORMAT,
			               "%s: point '%s': sampled row %lld is of token %lld, in %s of token "
			               "%lld: the ranks sampled different tokens",
			               in->path, sp->info->name, (long long)(first + r), (long long)tokens[r],
			               m->in[sp->parts[0].input].path, (long long)b->tokens[r]);
		memcpy(b->rows + r * sp->channels + part->offset, b->part_rows + r * part->channels,
		       (size_t)part->channels * sizeof *b->rows);
	}
	return status;
}

int slices_merge_point_samples(struct merge *m, int32_t p, struct at_error *err)
{
	const struct slice_point *sp = &m->slices[p];
	int64_t rows, dropped;
	int status = check_sample_counts(m, sp, &rows, &dropped, err);
	if (status)
		return status;
	enum at_dtype dtype = sp->info->sample_dtype; /* float32 unless every part agrees */
	for (int k = 1; k < sp->n_parts; k++)
		if (at_reader_point(m->in[sp->parts[k].input].r, sp->parts[k].index)->sample_dtype != dtype)
			dtype = AT_F32;
	int64_t batch = merge_sample_batch_rows(sp->info, sp->channels);
	struct sample_buffers b = {0};
	status = alloc_buffers(&b, batch, sp->channels, m->out, err);
	for (int64_t first = 0; first < rows && !status; first += batch) {
		int64_t room = writer_sample_room(m->w, p);
		if (room == 0) { /* the rest would be refused: count them without reading */
			dropped += rows - first;
			break;
		}
		int64_t n = rows - first < batch ? rows - first : batch;
		for (int k = 0; k < sp->n_parts && !status; k++)
			status = place_part_rows(m, sp, k, first, n, &b, err);
		const void *data = b.rows;
		if (!status && dtype != AT_F32) { /* back to the dtype the ranks stored (exactly) */
			at_convert_run(b.rows, AT_F32, b.narrow, dtype, (size_t)(n * sp->channels));
			data = b.narrow;
		}
		if (!status)
			status = writer_add_sampled_rows(m->w, p, data, dtype, b.tokens, n, 0, err);
	}
	if (!status)
		status = writer_add_sampled_rows(m->w, p, NULL, AT_F32, NULL, 0, dropped, err);
	free_buffers(&b);
	return status;
}
