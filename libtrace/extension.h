/* extension.h: how a path that accumulates statistics outside the writer
 * plugs into it; not installed.  The device path (device.c: accumulators on
 * a GPU) is such an extension: it keeps state of its own beside the writer
 * and each point, reads what the writer knows through the accessors below,
 * and hands its results in as merged statistics and sampled rows.  The
 * writer calls it back before every checkpoint and when it frees (first, while
 * its own writer thread still runs), and knows nothing else of it: the arrows
 * run device.c -> writer.c only. */
#ifndef AT_EXTENSION_H
#define AT_EXTENSION_H

#include <stdint.h>

#include "acttrace.h"

struct writer_extension {
	/* Everything accumulated so far into the writer's accumulators
	 * (writer_point_stats) and samples (writer_add_sampled_rows), waiting
	 * for it if need be; called first by every checkpoint. */
	int (*flush)(struct at_writer *w, struct at_error *err);
	/* Release the writer's state (writer_extension_state: its threads stop
	 * first), then each point's (writer_point_state); each may be NULL. */
	void (*free_point)(void *state);
	void (*free_writer)(void *state);
};

/* Attach ext to w: at most one extension a writer (the same one again is a
 * no-op; another is AT_EINVAL). */
int writer_attach(struct at_writer *w, const struct writer_extension *ext, struct at_error *err);
/* The extension's state slots, NULL until it fills them. */
void **writer_point_state(struct at_writer *w, int32_t point);
void **writer_extension_state(struct at_writer *w);

/* ---- what the writer knows */

const struct at_writer_options *writer_options(const struct at_writer *w);
const char *writer_path(const struct at_writer *w);
int32_t writer_point_count(const struct at_writer *w);
/* NULL when there is no such point. */
const struct at_point_desc *writer_point_desc(const struct at_writer *w, int32_t point);
struct at_stats *writer_point_stats(struct at_writer *w, int32_t point);
/* Rows of /tokens known so far, and whether the sampling policy takes a token
 * (AT_EINVAL for "first" sampling of a token not in /tokens). */
int64_t writer_tokens(const struct at_writer *w);
int writer_token_selected(const struct at_writer *w, int64_t token, int *selected,
                          struct at_error *err);
/* The points' sample state may change under the extension's own threads
 * (writer_add_sampled_rows); hold this lock around writer_sample_room and
 * writer_sample_bar, which read it.  writer_add_sampled_rows takes it itself. */
void writer_samples_lock(struct at_writer *w);
void writer_samples_unlock(struct at_writer *w);
/* Rows the point may still sample before max_samples. */
int64_t writer_sample_room(const struct at_writer *w, int32_t point);
/* The reservoir policy's test for many rows at once: the key of a token
 * (the same for every point), and 1 with the bar a point's rows must pass
 * (a key below *key, or equal with a token below *token) when its reservoir
 * is full, 0 when it wants every row (also for the other policies). */
uint64_t writer_sample_key(const struct at_writer *w, int64_t token);
int writer_sample_bar(const struct at_writer *w, int32_t point, uint64_t *key, int64_t *token);
/* n rows [n][channels] in dtype, already chosen by the policy, and their
 * tokens, appended to the point's samples; n_dropped more were chosen but
 * not kept.  Safe from any one thread besides the writer's caller. */
int writer_add_sampled_rows(struct at_writer *w, int32_t point, const void *rows,
                            enum at_dtype dtype, const int64_t *tokens, int64_t n,
                            int64_t n_dropped, struct at_error *err);

#endif /* AT_EXTENSION_H */
