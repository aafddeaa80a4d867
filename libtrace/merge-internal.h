/* merge-internal.h: what merge.c (the merge of data-parallel shards, and the
 * frame of every merge) shares with merge-slices.c (the assembly of
 * tensor-parallel channel slices); not installed. */
#ifndef AT_MERGE_INTERNAL_H
#define AT_MERGE_INTERNAL_H

#include <stdint.h>

#include "acttrace.h"

struct input {
	struct at_reader *r;
	const char *path;
	const struct at_trace_info *info;
	int64_t token_offset; /* its token 0 is this row of the output's /tokens */
	int64_t extremes_k, sample_n, max_samples;
	char sample_policy[16];
};

/* One input's share of an output point in a tensor-parallel merge. */
struct slice_part {
	int input;
	int32_t index;  /* the point's index in that input */
	int64_t offset; /* its channel 0 is this channel of the output's point */
	int64_t channels;
};

/* An output point of a tensor-parallel merge: its parts in channel order,
 * covering [0, channels) without gap or overlap. */
struct slice_point {
	const struct at_point_info *info; /* the first part's */
	int64_t channels;
	int n_parts;
	struct slice_part *parts;
};

struct merge {
	const char *out;
	const struct at_merge_options *o;
	struct input *in;
	int n;
	char *tmp; /* the temporary beside out, once created */
	struct at_writer *w;
	int32_t points;
	int weights_differ, merged_incomplete;
	struct slice_point *slices; /* non-NULL: a tensor-parallel merge */
};

/* ---- merge.c */
int merge_check_sampling(const struct input *first, const struct input *in,
                         struct at_error *err);
int64_t merge_sample_batch_rows(const struct at_point_info *p, int64_t channels);

/* ---- merge-slices.c */
/* Whether any input holds a channel slice or a replicated point: then the
 * inputs are the ranks of one tensor-parallel capture. */
int slices_wanted(const struct merge *m);
/* Check the inputs as the ranks of one tensor-parallel capture (every rank
 * once, the same /tokens and sampling) and plan every output point
 * (m->slices, m->points); the first problem is named. */
int slices_plan(struct merge *m, struct at_error *err);
void slices_free(struct merge *m);
/* The output's point p assembled from its parts into the writer's
 * accumulators, and its sampled rows. */
int slices_merge_point(struct merge *m, int32_t p, struct at_error *err);
int slices_merge_point_samples(struct merge *m, int32_t p, struct at_error *err);

#endif /* AT_MERGE_INTERNAL_H */
