/* reservoir.h: the "reservoir" sample policy's per-point store (reservoir.c);
 * not installed. */
#ifndef AT_RESERVOIR_H
#define AT_RESERVOIR_H

#include <stdint.h>

#include "internal.h"

struct reservoir;

/* The key of token index `token` under the trace's sample_seed. */
uint64_t reservoir_key(uint64_t seed, int64_t token);
/* k rows of `channels` channels; -1 when out of memory. */
int reservoir_create(struct reservoir **out, int64_t k, int64_t channels);
void reservoir_free(struct reservoir *r);
/* 1 when a row of key and token comes before the bar (bar_key, bar_token):
 * a smaller key, or the same key and a smaller token. */
static inline int reservoir_before(uint64_t key, int64_t token, uint64_t bar_key,
                                   int64_t bar_token)
{
	return key != bar_key ? key < bar_key : token < bar_token;
}
/* 1 when a row of this key and token would be kept now (rows wanted now may
 * still be pushed out by rows of smaller key later). */
int reservoir_wants(const struct reservoir *r, uint64_t key, int64_t token);
/* 0 while the reservoir is not full (every row is wanted); else 1, and the
 * key and token a row must come before (smaller key, or the same key and a
 * smaller token) to be wanted: reservoir_wants in one comparison a row. */
int reservoir_bar(const struct reservoir *r, uint64_t *key, int64_t *token);
/* Offer a row: channels elements data[first + i * stride] of dtype.  Kept,
 * converted to the dtype of the first row kept, when its key is among the k
 * smallest so far; -1 when out of memory. */
int reservoir_offer(struct reservoir *r, uint64_t key, int64_t token, const void *data,
                    enum at_dtype dtype, int64_t first, int64_t stride);
int64_t reservoir_rows(const struct reservoir *r);
/* The stored rows' dtype (float32 while empty). */
enum at_dtype reservoir_dtype(const struct reservoir *r);
/* The kept rows in token order: rows [rows][channels] in reservoir_dtype,
 * tokens [rows]; -1 when out of memory. */
int reservoir_sorted(const struct reservoir *r, void *rows, int64_t *tokens);

#endif /* AT_RESERVOIR_H */
