/* codec.c: the byte-shuffle + zstd pipeline of compressed datasets, run over
 * many chunks in parallel so that the writer and reader can move whole chunks
 * with H5Dwrite_chunk/H5Dread_chunk instead of HDF5's serial filter pipeline. */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"
#include "zstd-frame.h"

/* The loops are written for one fixed element size at a time so that the
 * compiler unrolls the inner loop for the common 2-, 4- and 8-byte types. */
static inline void shuffle_bytes(const unsigned char *src, unsigned char *dst, size_t n_elems,
                                 size_t elem_size)
{
	for (size_t i = 0; i < n_elems; i++)
		for (size_t b = 0; b < elem_size; b++)
			dst[b * n_elems + i] = src[i * elem_size + b];
}

static inline void unshuffle_bytes(const unsigned char *src, unsigned char *dst, size_t n_elems,
                                   size_t elem_size)
{
	for (size_t i = 0; i < n_elems; i++)
		for (size_t b = 0; b < elem_size; b++)
			dst[i * elem_size + b] = src[b * n_elems + i];
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The same for 2, 4 and 8 bytes, an element at a time: byte plane b is
 * byte b of a little-endian word, so each element is one shift-or of its
 * planes and one store, with a pointer a plane (2 MB of histogram: 0.29 ms
 * against 0.55 for the byte loop at -O2). */
static void unshuffle_words2_from(const unsigned char *restrict src, unsigned char *restrict dst,
                                  size_t n, size_t i0)
{
	const unsigned char *s0 = src, *s1 = src + n;
	for (size_t i = i0; i < n; i++) {
		uint16_t v = (uint16_t)(s0[i] | s1[i] << 8);
		memcpy(dst + 2 * i, &v, sizeof v);
	}
}

static void unshuffle_words4_from(const unsigned char *restrict src, unsigned char *restrict dst,
                                  size_t n, size_t i0)
{
	const unsigned char *s0 = src, *s1 = src + n, *s2 = src + 2 * n, *s3 = src + 3 * n;
	for (size_t i = i0; i < n; i++) {
		uint32_t v = (uint32_t)s0[i] | (uint32_t)s1[i] << 8 | (uint32_t)s2[i] << 16 |
		             (uint32_t)s3[i] << 24;
		memcpy(dst + 4 * i, &v, sizeof v);
	}
}

static void unshuffle_words8_from(const unsigned char *restrict src, unsigned char *restrict dst,
                                  size_t n, size_t i0)
{
	const unsigned char *s[8];
	for (int b = 0; b < 8; b++)
		s[b] = src + (size_t)b * n;
	for (size_t i = i0; i < n; i++) {
		uint64_t v = (uint64_t)s[0][i] | (uint64_t)s[1][i] << 8 | (uint64_t)s[2][i] << 16 |
		             (uint64_t)s[3][i] << 24 | (uint64_t)s[4][i] << 32 |
		             (uint64_t)s[5][i] << 40 | (uint64_t)s[6][i] << 48 | (uint64_t)s[7][i] << 56;
		memcpy(dst + 8 * i, &v, sizeof v);
	}
}
#define AT_WORD_UNSHUFFLE 1

#ifdef __SSE2__
/* SSE2 (baseline on x86-64): 16 elements at a time, each byte plane's 16
 * bytes interleaved with the others' by the unpack instructions (bytes,
 * then pairs, then quads), the tail by the word loops above.  A 2 MB
 * histogram unshuffles several times faster than a word at a time. */
static void unshuffle_sse2_2(const unsigned char *restrict src, unsigned char *restrict dst,
                             size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m128i p0 = _mm_loadu_si128((const __m128i *)(src + i));
		__m128i p1 = _mm_loadu_si128((const __m128i *)(src + n + i));
		_mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_unpacklo_epi8(p0, p1));
		_mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_unpackhi_epi8(p0, p1));
	}
	unshuffle_words2_from(src, dst, n, i);
}

static void unshuffle_sse2_4(const unsigned char *restrict src, unsigned char *restrict dst,
                             size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m128i p0 = _mm_loadu_si128((const __m128i *)(src + i));
		__m128i p1 = _mm_loadu_si128((const __m128i *)(src + n + i));
		__m128i p2 = _mm_loadu_si128((const __m128i *)(src + 2 * n + i));
		__m128i p3 = _mm_loadu_si128((const __m128i *)(src + 3 * n + i));
		__m128i b01_lo = _mm_unpacklo_epi8(p0, p1), b01_hi = _mm_unpackhi_epi8(p0, p1);
		__m128i b23_lo = _mm_unpacklo_epi8(p2, p3), b23_hi = _mm_unpackhi_epi8(p2, p3);
		unsigned char *out = dst + 4 * i;
		_mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi16(b01_lo, b23_lo));
		_mm_storeu_si128((__m128i *)(out + 16), _mm_unpackhi_epi16(b01_lo, b23_lo));
		_mm_storeu_si128((__m128i *)(out + 32), _mm_unpacklo_epi16(b01_hi, b23_hi));
		_mm_storeu_si128((__m128i *)(out + 48), _mm_unpackhi_epi16(b01_hi, b23_hi));
	}
	unshuffle_words4_from(src, dst, n, i);
}

static void unshuffle_sse2_8(const unsigned char *restrict src, unsigned char *restrict dst,
                             size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m128i p[8], pairs[8], quads[8];
		for (int b = 0; b < 8; b++)
			p[b] = _mm_loadu_si128((const __m128i *)(src + (size_t)b * n + i));
		/* pairs[2j]: bytes 2j, 2j+1 of elements 0-7; pairs[2j+1]: of 8-15 */
		for (int j = 0; j < 4; j++) {
			pairs[2 * j] = _mm_unpacklo_epi8(p[2 * j], p[2 * j + 1]);
			pairs[2 * j + 1] = _mm_unpackhi_epi8(p[2 * j], p[2 * j + 1]);
		}
		/* quads[4h + q]: bytes 4h..4h+3 of elements 4q..4q+3 */
		for (int h = 0; h < 2; h++) {
			__m128i lo_a = pairs[4 * h], hi_a = pairs[4 * h + 1];
			__m128i lo_b = pairs[4 * h + 2], hi_b = pairs[4 * h + 3];
			quads[4 * h + 0] = _mm_unpacklo_epi16(lo_a, lo_b);
			quads[4 * h + 1] = _mm_unpackhi_epi16(lo_a, lo_b);
			quads[4 * h + 2] = _mm_unpacklo_epi16(hi_a, hi_b);
			quads[4 * h + 3] = _mm_unpackhi_epi16(hi_a, hi_b);
		}
		unsigned char *out = dst + 8 * i;
		for (int q = 0; q < 4; q++) {
			_mm_storeu_si128((__m128i *)(out + 32 * q), _mm_unpacklo_epi32(quads[q], quads[4 + q]));
			_mm_storeu_si128((__m128i *)(out + 32 * q + 16),
			                 _mm_unpackhi_epi32(quads[q], quads[4 + q]));
		}
	}
	unshuffle_words8_from(src, dst, n, i);
}
#endif
#endif

void at_shuffle(const void *src, void *dst, size_t n_elems, size_t elem_size)
{
	switch (elem_size) {
	case 2: shuffle_bytes(src, dst, n_elems, 2); break;
	case 4: shuffle_bytes(src, dst, n_elems, 4); break;
	case 8: shuffle_bytes(src, dst, n_elems, 8); break;
	default: shuffle_bytes(src, dst, n_elems, elem_size); break;
	}
}

void at_unshuffle(const void *src, void *dst, size_t n_elems, size_t elem_size)
{
#if defined(AT_WORD_UNSHUFFLE) && defined(__SSE2__)
	switch (elem_size) {
	case 2: unshuffle_sse2_2(src, dst, n_elems); return;
	case 4: unshuffle_sse2_4(src, dst, n_elems); return;
	case 8: unshuffle_sse2_8(src, dst, n_elems); return;
	}
#elif defined(AT_WORD_UNSHUFFLE)
	switch (elem_size) {
	case 2: unshuffle_words2_from(src, dst, n_elems, 0); return;
	case 4: unshuffle_words4_from(src, dst, n_elems, 0); return;
	case 8: unshuffle_words8_from(src, dst, n_elems, 0); return;
	}
#endif
	switch (elem_size) {
	case 2: unshuffle_bytes(src, dst, n_elems, 2); break;
	case 4: unshuffle_bytes(src, dst, n_elems, 4); break;
	case 8: unshuffle_bytes(src, dst, n_elems, 8); break;
	default: unshuffle_bytes(src, dst, n_elems, elem_size); break;
	}
}

/* HDF5's shuffle filter (H5Zshuffle.c) leaves a chunk alone when its
 * elements are single bytes or when it holds fewer than two elements; then
 * the shuffled bytes are the raw bytes and the scratch copy can be skipped. */
static int shuffle_is_identity(size_t raw_bytes, size_t elem_size)
{
	return elem_size <= 1 || raw_bytes / elem_size <= 1;
}

/* Shuffle a whole chunk as H5Zshuffle.c does: trailing bytes that do not
 * make a whole element are copied unchanged after the byte planes. */
static void shuffle_chunk(const void *raw, void *shuffled, size_t raw_bytes, size_t elem_size)
{
	size_t n_elems = raw_bytes / elem_size;
	size_t whole = n_elems * elem_size;
	at_shuffle(raw, shuffled, n_elems, elem_size);
	memcpy((unsigned char *)shuffled + whole, (const unsigned char *)raw + whole,
	       raw_bytes - whole);
}

static void unshuffle_chunk(const void *shuffled, void *raw, size_t raw_bytes, size_t elem_size)
{
	size_t n_elems = raw_bytes / elem_size;
	size_t whole = n_elems * elem_size;
	at_unshuffle(shuffled, raw, n_elems, elem_size);
	memcpy((unsigned char *)raw + whole, (const unsigned char *)shuffled + whole,
	       raw_bytes - whole);
}

/* The first failure by chunk index, so that the message does not depend on
 * how the chunks were scheduled over threads.  Threads record failures
 * here and the caller reports after the parallel region. */
struct codec_failure {
	int code;
	size_t chunk;
	char message[sizeof ((struct at_error *)0)->message];
};

static void record_failure(struct codec_failure *f, size_t chunk, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void record_failure(struct codec_failure *f, size_t chunk, int code, const char *fmt, ...)
{
	char message[sizeof f->message];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
#ifdef _OPENMP
#pragma omp critical(at_codec_failure)
#endif
	{
		if (f->code == AT_OK || chunk < f->chunk) {
			f->code = code;
			f->chunk = chunk;
			memcpy(f->message, message, sizeof message);
		}
	}
}

/* A per-thread buffer that only grows. */
struct scratch {
	void *data;
	size_t capacity;
};

static int scratch_reserve(struct scratch *s, size_t bytes)
{
	if (bytes <= s->capacity)
		return 1;
	void *grown = realloc(s->data, bytes);
	if (!grown)
		return 0;
	s->data = grown;
	s->capacity = bytes;
	return 1;
}

static int thread_count(int threads, size_t n)
{
	int want = threads;
#ifdef _OPENMP
	if (want <= 0)
		want = omp_get_max_threads();
#endif
	if (want <= 0)
		want = 1;
	if ((size_t)want > n)
		want = n > 0 ? (int)n : 1;
	return want;
}

static int check_chunks(const struct at_chunk *chunks, size_t n, size_t elem_size,
                        int decompressing, struct at_error *err)
{
	if (n > 0 && !chunks)
		return at_fail(err, AT_EINVAL, "codec: NULL chunk array");
	if (elem_size == 0)
		return at_fail(err, AT_EINVAL, "codec: element size 0");
	for (size_t i = 0; i < n; i++) {
		if (!chunks[i].raw && chunks[i].raw_bytes > 0)
			return at_fail(err, AT_EINVAL, "codec: chunk %zu has no raw buffer", i);
		if (decompressing && !chunks[i].packed)
			return at_fail(err, AT_EINVAL, "codec: chunk %zu has no packed data", i);
	}
	return AT_OK;
}

static void compress_one(struct at_chunk *c, size_t index, size_t elem_size, int level,
                         ZSTD_CCtx *cctx, struct scratch *shuffled, struct codec_failure *f)
{
	size_t bound = ZSTD_compressBound(c->raw_bytes);
	if (c->packed_capacity < bound || !c->packed) {
		void *grown = realloc(c->packed, bound);
		if (!grown) {
			record_failure(f, index, AT_ENOMEM,
			               "codec: out of memory for %zu compressed bytes of chunk %zu",
			               bound, index);
			return;
		}
		c->packed = grown;
		c->packed_capacity = bound;
	}

	const void *src = c->raw;
	if (!shuffle_is_identity(c->raw_bytes, elem_size)) {
		if (!scratch_reserve(shuffled, c->raw_bytes)) {
			record_failure(f, index, AT_ENOMEM,
			               "codec: out of memory for a %zu-byte chunk", c->raw_bytes);
			return;
		}
		shuffle_chunk(c->raw, shuffled->data, c->raw_bytes, elem_size);
		src = shuffled->data;
	}

	size_t packed = at_zstd_frame(cctx, c->packed, c->packed_capacity, src, c->raw_bytes, level);
	if (ZSTD_isError(packed)) {
		record_failure(f, index, AT_ECODEC, "codec: chunk %zu: zstd: %s", index,
		               ZSTD_getErrorName(packed));
		return;
	}
	c->packed_bytes = packed;
}

int at_codec_compress(struct at_chunk *chunks, size_t n, size_t elem_size, int level,
                      int threads, struct at_error *err)
{
	int rc = check_chunks(chunks, n, elem_size, 0, err);
	if (rc != AT_OK || n == 0)
		return rc;

	struct codec_failure failure = { .code = AT_OK };
	int n_threads = thread_count(threads, n);
	(void)n_threads;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
	{
		ZSTD_CCtx *cctx = ZSTD_createCCtx();
		struct scratch shuffled = { NULL, 0 };
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
		for (size_t i = 0; i < n; i++) {
			if (!cctx) {
				record_failure(&failure, i, AT_ENOMEM,
				               "codec: out of memory for a zstd context");
				continue;
			}
			compress_one(&chunks[i], i, elem_size, level, cctx, &shuffled, &failure);
		}
		ZSTD_freeCCtx(cctx);
		free(shuffled.data);
	}
	if (failure.code != AT_OK)
		return at_fail(err, failure.code, "%s", failure.message);
	return AT_OK;
}

static void decompress_one(struct at_chunk *c, size_t index, size_t elem_size, ZSTD_DCtx *dctx,
                           struct scratch *shuffled, struct codec_failure *f)
{
	unsigned long long content = ZSTD_getFrameContentSize(c->packed, c->packed_bytes);
	if (content == ZSTD_CONTENTSIZE_ERROR) {
		record_failure(f, index, AT_ECODEC, "codec: chunk %zu is not a zstd frame", index);
		return;
	}
	/* A frame that declares more bytes than the chunk holds would only fail
	 * below as "destination buffer too small"; say what is wrong instead. */
	if (content != ZSTD_CONTENTSIZE_UNKNOWN && content > c->raw_bytes) {
		record_failure(f, index, AT_ECODEC,
		               "codec: chunk %zu decompresses to %llu bytes, expected %zu", index,
		               content, c->raw_bytes);
		return;
	}

	int identity = shuffle_is_identity(c->raw_bytes, elem_size);
	void *dst = c->raw;
	if (!identity) {
		if (!scratch_reserve(shuffled, c->raw_bytes)) {
			record_failure(f, index, AT_ENOMEM,
			               "codec: out of memory for a %zu-byte chunk", c->raw_bytes);
			return;
		}
		dst = shuffled->data;
	}
	size_t got = ZSTD_decompressDCtx(dctx, dst, c->raw_bytes, c->packed, c->packed_bytes);
	if (ZSTD_isError(got)) {
		record_failure(f, index, AT_ECODEC, "codec: chunk %zu: zstd: %s", index,
		               ZSTD_getErrorName(got));
		return;
	}
	if (got != c->raw_bytes) {
		record_failure(f, index, AT_ECODEC,
		               "codec: chunk %zu decompresses to %zu bytes, expected %zu", index, got,
		               c->raw_bytes);
		return;
	}
	if (!identity)
		unshuffle_chunk(dst, c->raw, c->raw_bytes, elem_size);
}

/* Chunks [0, n) in turn; a parallel region's threads each take chunks
 * (the worksharing loop must not be reached outside one: called from a
 * caller's own parallel region, an orphaned `omp for` binds to that team
 * and waits for threads that never come). */
static void decompress_range(struct at_chunk *chunks, size_t n, size_t elem_size,
                             struct codec_failure *failure, int shared)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	struct scratch shuffled = { NULL, 0 };
	if (!dctx) {
		record_failure(failure, 0, AT_ENOMEM, "codec: out of memory for a zstd context");
	} else if (shared) {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
		for (size_t i = 0; i < n; i++)
			decompress_one(&chunks[i], i, elem_size, dctx, &shuffled, failure);
	} else {
		for (size_t i = 0; i < n; i++)
			decompress_one(&chunks[i], i, elem_size, dctx, &shuffled, failure);
	}
	ZSTD_freeDCtx(dctx);
	free(shuffled.data);
}

size_t at_codec_stored_bound(size_t raw_bytes)
{
	size_t frame = ZSTD_compressBound(raw_bytes);
	return frame + frame / 4 + 64;
}

int at_codec_decompress(struct at_chunk *chunks, size_t n, size_t elem_size, int threads,
                        struct at_error *err)
{
	int rc = check_chunks(chunks, n, elem_size, 1, err);
	if (rc != AT_OK || n == 0)
		return rc;

	struct codec_failure failure = { .code = AT_OK };
	int n_threads = thread_count(threads, n);
	if (n_threads <= 1) {
		/* No parallel region at all: with one chunk a point, a team of one
		 * still left libgomp spinning for a quarter of a histogram pass */
		decompress_range(chunks, n, elem_size, &failure, 0);
	} else {
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
		decompress_range(chunks, n, elem_size, &failure, 1);
	}
	if (failure.code != AT_OK)
		return at_fail(err, failure.code, "%s", failure.message);
	return AT_OK;
}
