/* reservoir.c: sample policy "reservoir" (acttrace-format(5), SAMPLES): a
 * uniform sample without replacement of k of the rows a point saw, kept in
 * memory and written whole at checkpoints.
 *
 * Bottom-k sampling: every token gets a key from a hash of its index, and a
 * point keeps the k rows of smallest key.  Keys of distinct tokens are
 * independent uniform draws, so the k smallest are a uniform k-subset of
 * what was seen (the classic priority-sampling argument), and which rows
 * are kept does not depend on the order rows arrive in: the GPU path may
 * land its gathered rows late and out of order, and every point keeps the
 * same tokens among those it saw. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "reservoir.h"

struct reservoir {
	int64_t k, channels;
	int64_t filled;
	enum at_dtype dtype;    /* of the stored rows: the first row's */
	unsigned char *rows;    /* [k][channels], allocated with the first row */
	int64_t *tokens;        /* [k] */
	uint64_t *keys;         /* [k] */
	int64_t *heap;          /* slots, a max-heap by (key, token) */
};

/* SplitMix64's output function (Steele, Lea, Flood 2014), the key of token t. */
uint64_t reservoir_key(uint64_t seed, int64_t token)
{
	uint64_t z = seed + (uint64_t)token * 0x9e3779b97f4a7c15u + 0x9e3779b97f4a7c15u;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

int reservoir_create(struct reservoir **out, int64_t k, int64_t channels)
{
	struct reservoir *r = calloc(1, sizeof *r);
	if (r) {
		r->k = k;
		r->channels = channels;
		r->tokens = malloc((size_t)k * sizeof *r->tokens);
		r->keys = malloc((size_t)k * sizeof *r->keys);
		r->heap = malloc((size_t)k * sizeof *r->heap);
	}
	if (!r || !r->tokens || !r->keys || !r->heap) {
		reservoir_free(r);
		*out = NULL;
		return -1;
	}
	*out = r;
	return 0;
}

void reservoir_free(struct reservoir *r)
{
	if (!r)
		return;
	free(r->rows);
	free(r->tokens);
	free(r->keys);
	free(r->heap);
	free(r);
}

int64_t reservoir_rows(const struct reservoir *r)
{
	return r->filled;
}

enum at_dtype reservoir_dtype(const struct reservoir *r)
{
	return r->filled ? r->dtype : AT_F32;
}

/* Slot a sorts after slot b: larger key, ties by larger token. */
static int after(const struct reservoir *r, int64_t a, int64_t b)
{
	return r->keys[a] != r->keys[b] ? r->keys[a] > r->keys[b] : r->tokens[a] > r->tokens[b];
}

static void swap(int64_t *a, int64_t *b)
{
	int64_t t = *a;
	*a = *b;
	*b = t;
}

static void sift_up(struct reservoir *r, int64_t i)
{
	while (i > 0 && after(r, r->heap[i], r->heap[(i - 1) / 2])) {
		swap(&r->heap[i], &r->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
}

static void sift_down(struct reservoir *r, int64_t i)
{
	for (;;) {
		int64_t big = i, left = 2 * i + 1, right = left + 1;
		if (left < r->filled && after(r, r->heap[left], r->heap[big]))
			big = left;
		if (right < r->filled && after(r, r->heap[right], r->heap[big]))
			big = right;
		if (big == i)
			return;
		swap(&r->heap[i], &r->heap[big]);
		i = big;
	}
}

int reservoir_wants(const struct reservoir *r, uint64_t key, int64_t token)
{
	if (r->filled < r->k)
		return 1;
	int64_t top = r->heap[0];
	return reservoir_before(key, token, r->keys[top], r->tokens[top]);
}

int reservoir_bar(const struct reservoir *r, uint64_t *key, int64_t *token)
{
	if (r->filled < r->k)
		return 0;
	*key = r->keys[r->heap[0]];
	*token = r->tokens[r->heap[0]];
	return 1;
}

int reservoir_offer(struct reservoir *r, uint64_t key, int64_t token, const void *data,
                    enum at_dtype dtype, int64_t first, int64_t stride)
{
	if (!reservoir_wants(r, key, token))
		return 0;
	if (!r->rows) {
		r->dtype = dtype;
		r->rows = malloc((size_t)(r->k * r->channels) * at_dtype_size(dtype));
		if (!r->rows)
			return -1;
	}
	int growing = r->filled < r->k;
	int64_t slot = growing ? r->filled : r->heap[0]; /* a free slot, or the largest key's */
	size_t row_bytes = (size_t)r->channels * at_dtype_size(r->dtype);
	at_convert_strided(data, dtype, first, stride, r->rows + (size_t)slot * row_bytes, r->dtype,
	                   r->channels);
	r->keys[slot] = key;
	r->tokens[slot] = token;
	if (growing) {
		r->heap[r->filled++] = slot;
		sift_up(r, r->filled - 1);
	} else {
		sift_down(r, 0);
	}
	return 0;
}

struct by_token {
	int64_t token, slot;
};

static int token_order(const void *a, const void *b)
{
	int64_t ta = ((const struct by_token *)a)->token, tb = ((const struct by_token *)b)->token;
	return (ta > tb) - (ta < tb);
}

int reservoir_sorted(const struct reservoir *r, void *rows, int64_t *tokens)
{
	struct by_token *order = malloc((size_t)(r->filled ? r->filled : 1) * sizeof *order);
	if (!order)
		return -1;
	for (int64_t i = 0; i < r->filled; i++)
		order[i] = (struct by_token){r->tokens[i], i};
	qsort(order, (size_t)r->filled, sizeof *order, token_order);
	size_t row_bytes = (size_t)r->channels * at_dtype_size(r->dtype);
	for (int64_t i = 0; i < r->filled; i++) {
		memcpy((unsigned char *)rows + (size_t)i * row_bytes,
		       r->rows + (size_t)order[i].slot * row_bytes, row_bytes);
		tokens[i] = order[i].token;
	}
	free(order);
	return 0;
}
