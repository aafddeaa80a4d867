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

/* Narrow a float to bfloat16 / IEEE binary16, rounding to nearest even
 * (NaN stays NaN, overflow goes to infinity): samples stored in a narrower
 * type than a row came in (acttrace-format(5), SAMPLES). */
static inline uint16_t at_float_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof x);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40u);
	return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline uint16_t at_float_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof x);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
	uint32_t ax = x & 0x7fffffffu;
	if (ax > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u);
	if (ax >= 0x477ff000u) /* 65520 and above round to infinity */
		return (uint16_t)(sign | 0x7c00u);
	if (ax >= 0x38800000u) { /* normal: rebias 127 -> 15, round 23 -> 10 bits */
		uint32_t r = ax - (112u << 23);
		r += 0xfffu + ((r >> 13) & 1u);
		return (uint16_t)(sign | (r >> 13));
	}
	/* subnormal or zero: round |f| / 2^-24 to an integer */
	uint32_t e = ax >> 23, shift = 126u - e;
	if (shift > 24u)
		return sign;
	uint32_t m = (ax & 0x7fffffu) | 0x800000u;
	uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return (uint16_t)(sign | q);
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

/* n elements src[first + i * stride] of dtype `from` to dst[i] of dtype `to`:
 * a copy when the dtypes are the same (16-bit values keep their bits), a
 * widening, or a narrowing rounded to nearest even.  The sampled rows'
 * one conversion: the writer's pending chunks, the reservoir's slots, the
 * chunks converted before compression. */
static inline void at_convert_strided(const void *src, enum at_dtype from, int64_t first,
                                      int64_t stride, void *dst, enum at_dtype to, int64_t n)
{
	size_t es = at_dtype_size(from);
	if (from == to && stride == 1) {
		memcpy(dst, (const unsigned char *)src + (size_t)first * es, (size_t)n * es);
	} else if (from == to && es == 2) {
		const uint16_t *half = (const uint16_t *)src + first;
		for (int64_t i = 0; i < n; i++)
			((uint16_t *)dst)[i] = half[i * stride];
	} else if (to == AT_F32) {
		at_load_run(src, from, first, stride, n, (float *)dst);
	} else {
		uint16_t *out = (uint16_t *)dst;
		for (int64_t i = 0; i < n; i++) {
			float f = at_load(src, from, first + i * stride);
			out[i] = to == AT_BF16 ? at_float_to_bf16(f) : at_float_to_f16(f);
		}
	}
}

/* n contiguous elements from one dtype to another. */
static inline void at_convert_run(const void *src, enum at_dtype from, void *dst,
                                  enum at_dtype to, size_t n)
{
	at_convert_strided(src, from, 0, 1, dst, to, (int64_t)n);
}

/* Validate a tensor descriptor (dtype, positive sizes, data present). */
int at_tensor_check(const struct at_tensor *t, struct at_error *err);

/* ---- accum.c: channel slices (merge-slices.c) ----
 * src's channels become dst's channels [offset, offset + src->channels):
 * every per-channel array and histogram row copied, src's extremes (channel
 * shifted by offset) ranked with dst's and the top K kept.  dst's channels
 * there must be empty; the slices of one tensor placed one by one give the
 * statistics of the whole tensor exactly. */
int stats_place_slice(struct at_stats *dst, const struct at_stats *src, int64_t offset,
                      struct at_error *err);

/* ---- accum.c: accumulators a reader overwrites ----
 * s sized as at_stats_init would size it, for a caller that then writes
 * every per-channel value and histogram row: s's arrays are kept when s
 * already has that many channels (its values left as they were: no pass
 * over every page of a histogram again), else s is freed and initialised.
 * s must be empty (zeroed) or hold accumulators.  On failure s is left
 * empty. */
int stats_refit(struct at_stats *s, int64_t channels, int with_hist, int32_t max_extremes,
                struct at_error *err);

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
/* The most bytes a chunk of raw_bytes may take in a file: a frame of the
 * worst-case size, with the headroom (a quarter more and a skippable
 * frame's header) that the writer keeps around a chunk it rewrites in
 * place (writer.c, write_chunk).  Readers refuse larger claims before they
 * allocate. */
size_t at_codec_stored_bound(size_t raw_bytes);
int at_codec_decompress(struct at_chunk *chunks, size_t n, size_t elem_size, int threads,
                        struct at_error *err);

/* ---- zstd-filter.c: HDF5 filter 32015 ---- */
/* Register the zstd filter with HDF5 unless one is already available. */
int at_zstd_filter_register(struct at_error *err);

#endif /* AT_INTERNAL_H */
