/* internal.h: helpers shared by libacttrace's sources; not installed. */
#ifndef AT_INTERNAL_H
#define AT_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "acttrace.h"

#define AT_ZSTD_FILTER_ID 32015 /* registered HDF5 filter id for Zstandard */

/* Fill err (if non-NULL) with a printf-style message; returns code so that
 * callers can write `return at_fail(err, AT_EINVAL, "...")`. */
int at_fail(struct at_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Widen one element of a tensor to float. */
static inline float at_f16_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	uint32_t bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: renormalise */
			int e = -1;
			do {
				man <<= 1;
				e++;
			} while (!(man & 0x400u));
			bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
		}
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000u | (man << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
	}
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

static inline float at_bf16_to_float(uint16_t b)
{
	uint32_t bits = (uint32_t)b << 16;
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

static inline size_t at_dtype_size(enum at_dtype t)
{
	return t == AT_F32 ? 4 : 2;
}

static inline float at_load(const void *data, enum at_dtype t, int64_t index)
{
	switch (t) {
	case AT_F16:
		return at_f16_to_float(((const uint16_t *)data)[index]);
	case AT_BF16:
		return at_bf16_to_float(((const uint16_t *)data)[index]);
	default:
		return ((const float *)data)[index];
	}
}

/* n elements data[first + i*stride] -> out[i] as float; the dtype switch
 * sits outside the loops so each one is a plain conversion loop (the
 * accumulators' tiles and the writer's sampled rows). */
static inline void at_load_run(const void *data, enum at_dtype dtype, int64_t first,
                               int64_t stride, int64_t n, float *out)
{
	const uint16_t *half = (const uint16_t *)data + first;
	const float *single = (const float *)data + first;
	switch (dtype) {
	case AT_F16:
		for (int64_t i = 0; i < n; i++)
			out[i] = at_f16_to_float(half[i * stride]);
		break;
	case AT_BF16:
		for (int64_t i = 0; i < n; i++)
			out[i] = at_bf16_to_float(half[i * stride]);
		break;
	default:
		if (stride == 1)
			memcpy(out, single, (size_t)n * sizeof *out);
		else
			for (int64_t i = 0; i < n; i++)
				out[i] = single[i * stride];
	}
}

/* Validate a tensor descriptor (dtype, positive sizes, data present). */
int at_tensor_check(const struct at_tensor *t, struct at_error *err);

/* ---- codec.c: the byte shuffle + zstd pipeline of compressed datasets ----
 * A chunk is compressed exactly as HDF5's filter pipeline (shuffle, then
 * filter 32015) would, so H5Dwrite_chunk/H5Dread_chunk can bypass it. */
struct at_chunk {
	void *raw;            /* uncompressed bytes (input to compress, output of decompress) */
	size_t raw_bytes;
	void *packed;         /* compressed bytes */
	size_t packed_bytes;
	size_t packed_capacity;
};

/* Byte shuffle of n elements of elem_size bytes (HDF5's H5Z_FILTER_SHUFFLE). */
void at_shuffle(const void *src, void *dst, size_t n_elems, size_t elem_size);
void at_unshuffle(const void *src, void *dst, size_t n_elems, size_t elem_size);
/* Compress n chunks in parallel: packed is (re)allocated as needed. */
int at_codec_compress(struct at_chunk *chunks, size_t n, size_t elem_size, int level,
                      int threads, struct at_error *err);
/* Decompress n chunks in parallel into raw, which holds raw_bytes each. */
int at_codec_decompress(struct at_chunk *chunks, size_t n, size_t elem_size, int threads,
                        struct at_error *err);

/* ---- zstd-filter.c: HDF5 filter 32015 ---- */
/* Register the zstd filter with HDF5 unless one is already available. */
int at_zstd_filter_register(struct at_error *err);

#endif /* AT_INTERNAL_H */
