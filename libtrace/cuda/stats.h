/* stats.h: the C interface of the CUDA code (stats.cu) for device.c; not
 * installed.  A cuda_point holds one recording point's device-resident
 * accumulators; every call that takes a stream only queues work on it. */
#ifndef AT_CUDA_STATS_H
#define AT_CUDA_STATS_H

#include <stdint.h>

#include "acttrace.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_point;

/* AT_OK when a CUDA device can be used, else AT_ENOSYS and why. */
int atc_device_check(struct at_error *err);

/* Device accumulators for `channels` channels, empty; hist and max_extremes
 * as in at_stats_init (max_extremes <= ATC_MAX_EXTREMES). */
#define ATC_MAX_EXTREMES 256
int atc_point_create(struct cuda_point **out, int64_t channels, int hist,
                     int32_t max_extremes, struct at_error *err);
void atc_point_free(struct cuda_point *p);

/* Queue the fused reduction of t (t->data in device memory) on stream. */
int atc_point_observe(struct cuda_point *p, const struct at_tensor *t, int64_t token_base,
                      void *stream, struct at_error *err);

/* Queue on stream a copy of src's accumulators into dst's (the same
 * channels, histograms and K): dst then holds exactly what src holds, the
 * extremes' floor included, as if it had made src's observations itself. */
int atc_point_copy(struct cuda_point *dst, const struct cuda_point *src, void *stream,
                   struct at_error *err);

/* Wait for the point's queued work, fold its accumulators into `into`
 * (at_stats_merge: exact) and empty them.  Values observed since the last
 * drain, per channel (what a 32-bit histogram bin must still be able to
 * count), are in *rows_pending before the call. */
int atc_point_drain(struct cuda_point *p, struct at_stats *into, struct at_error *err);
int64_t atc_point_rows_pending(const struct cuda_point *p);

/* Sampled rows: copy rows rows[0..n) (global rows b*rows+r of t, the
 * indices in host memory, passed with the launches) in t's own dtype as
 * [n][channels] into dst, a device buffer, on stream. */
int atc_gather_rows(const struct at_tensor *t, const int64_t *rows, int64_t n, void *dst,
                    void *stream, struct at_error *err);

/* Thin wrappers of the runtime for device.c, which is C and has no CUDA
 * headers.  Each returns AT_OK or fills err with the CUDA error. */
int atc_malloc_device(void **p, size_t bytes, struct at_error *err);
int atc_malloc_pinned(void **p, size_t bytes, struct at_error *err);
void atc_free_device(void *p);
void atc_free_pinned(void *p);
int atc_copy_to_device(void *dst_device, const void *src_host, size_t bytes, void *stream,
                       struct at_error *err);
/* A stream-ordered pool of device memory that keeps what is freed; its
 * allocations are usable on `stream` in order, and freed in order on
 * another stream. */
int atc_pool_create(void **pool, int device, struct at_error *err);
void atc_pool_destroy(void *pool);
int atc_pool_alloc(void *pool, void **p, size_t bytes, void *stream, struct at_error *err);
void atc_free_async(void *p, void *stream);
int atc_stream_create(void **stream, struct at_error *err);
void atc_stream_destroy(void *stream);
void atc_stream_sync(void *stream);
/* A new event, recorded on stream: it completes when the work queued so far
 * has. */
int atc_event_record(void **event, void *stream, struct at_error *err);
/* dst_host <- src_device on `stream`, after `after` has completed; returns
 * when the bytes have landed. */
int atc_copy_to_host_wait(void *dst_host, const void *src_device, size_t bytes, void *stream,
                          void *after, struct at_error *err);
/* The calling thread's current device, and another thread's made the same
 * (the library's own threads work on the device their caller used). */
int atc_current_device(int *device, struct at_error *err);
int atc_set_device(int device, struct at_error *err);
int atc_event_wait(void *event, struct at_error *err);
void atc_event_free(void *event);

#ifdef __cplusplus
}
#endif
#endif /* AT_CUDA_STATS_H */
