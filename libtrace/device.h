/* device.h: what writer.c and device.c (the device path of the capture API)
 * need of each other; not installed. */
#ifndef AT_DEVICE_H
#define AT_DEVICE_H

#include <stdint.h>

#include "acttrace.h"

/* ---- device.c, for writer.c */

/* Everything observed on the device so far into the host's accumulators and
 * sample queue (waits for the device); called first by every checkpoint. */
int device_checkpoint(struct at_writer *w, struct at_error *err);
/* Release a point's (writer's) device state, waiting for its copies first. */
void device_point_free(void *device);
void device_writer_free(void *device);

/* ---- writer.c, for device.c */

const struct at_writer_options *writer_options(const struct at_writer *w);
const char *writer_path(const struct at_writer *w);
int32_t writer_point_count(const struct at_writer *w);
/* NULL when there is no such point. */
const struct at_point_desc *writer_point_desc(const struct at_writer *w, int32_t point);
struct at_stats *writer_point_stats(struct at_writer *w, int32_t point);
void **writer_point_device(struct at_writer *w, int32_t point);
void **writer_device(struct at_writer *w);
/* Rows of /tokens known so far, and whether the sampling policy takes a token
 * (AT_EINVAL for "first" sampling of a token not in /tokens). */
int64_t writer_tokens(const struct at_writer *w);
int writer_token_selected(const struct at_writer *w, int64_t token, int *selected,
                          struct at_error *err);
/* Rows the point may still sample before max_samples. */
int64_t writer_sample_room(const struct at_writer *w, int32_t point);
/* n rows [n][channels] in dtype, already chosen by the policy, and their
 * tokens, appended to the point's samples; n_dropped more were chosen but
 * not kept. */
int writer_add_sampled_rows(struct at_writer *w, int32_t point, const void *rows,
                            enum at_dtype dtype, const int64_t *tokens, int64_t n,
                            int64_t n_dropped, struct at_error *err);

#endif /* AT_DEVICE_H */
