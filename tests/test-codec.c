/* test-codec.c: the shuffle + zstd chunk codec against hand-computed layouts,
 * plain zstd, and itself across thread counts. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "internal.h"
#include "tap.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	/* xorshift64*: deterministic, so failures reproduce */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static double rng_uniform(void)
{
	return (double)(rng_next() >> 11) / 9007199254740992.0;
}

/* The shuffle spelled out from its definition, for comparison: byte b of
 * element i goes to plane b, position i; trailing bytes stay at the end. */
static void reference_unshuffle(const unsigned char *shuffled, unsigned char *raw, size_t bytes,
                                size_t elem_size)
{
	size_t n = bytes / elem_size;
	for (size_t i = 0; i < n; i++)
		for (size_t b = 0; b < elem_size; b++)
			raw[i * elem_size + b] = shuffled[b * n + i];
	for (size_t k = n * elem_size; k < bytes; k++)
		raw[k] = shuffled[k];
}

static unsigned char *iota_bytes(size_t n)
{
	unsigned char *p = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)i;
	return p;
}

static void test_shuffle_layout(void)
{
	static const unsigned char want2[] = { 0, 2, 4, 6, 8, 10, 12, 1, 3, 5, 7, 9, 11, 13 };
	static const unsigned char want4[] = { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 };
	static const unsigned char want8[] = { 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15 };
	static const unsigned char want3[] = { 0, 3, 6, 9, 12, 1, 4, 7, 10, 13, 2, 5, 8, 11, 14 };
	static const struct {
		size_t elem_size, n_elems;
		const unsigned char *want;
	} cases[] = {
		{ 2, 7, want2 }, { 4, 3, want4 }, { 8, 2, want8 }, { 3, 5, want3 },
	};
	unsigned char *src = iota_bytes(64);
	unsigned char dst[64], back[64];

	memset(dst, 0xee, sizeof dst);
	at_shuffle(src, dst, 5, 1);
	TAP_OK(memcmp(dst, src, 5) == 0 && dst[5] == 0xee, "shuffle of 1-byte elements is a copy");

	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		size_t bytes = cases[c].elem_size * cases[c].n_elems;
		memset(dst, 0xee, sizeof dst);
		at_shuffle(src, dst, cases[c].n_elems, cases[c].elem_size);
		TAP_OK(memcmp(dst, cases[c].want, bytes) == 0 && dst[bytes] == 0xee,
		       "shuffle layout, %zu elements of %zu bytes", cases[c].n_elems,
		       cases[c].elem_size);
		memset(back, 0xee, sizeof back);
		at_unshuffle(dst, back, cases[c].n_elems, cases[c].elem_size);
		TAP_OK(memcmp(back, src, bytes) == 0 && back[bytes] == 0xee,
		       "unshuffle inverts it, %zu elements of %zu bytes", cases[c].n_elems,
		       cases[c].elem_size);
	}
	free(src);
}

static void test_shuffle_round_trips(void)
{
	static const size_t elem_sizes[] = { 1, 2, 3, 4, 8, 16 };
	static const size_t lengths[] = { 0, 1, 2, 3, 7, 31, 64, 1000, 4097 };
	int all_ok = 1;
	for (size_t e = 0; e < sizeof elem_sizes / sizeof elem_sizes[0]; e++) {
		for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
			size_t es = elem_sizes[e], n = lengths[l], bytes = es * n;
			unsigned char *src = malloc(bytes + 1), *mid = malloc(bytes + 1),
			              *back = malloc(bytes + 1), *ref = malloc(bytes + 1);
			for (size_t i = 0; i < bytes; i++)
				src[i] = (unsigned char)rng_next();
			at_shuffle(src, mid, n, es);
			reference_unshuffle(mid, ref, bytes, es);
			at_unshuffle(mid, back, n, es);
			if (memcmp(ref, src, bytes) != 0 || memcmp(back, src, bytes) != 0) {
				all_ok = 0;
				printf("# shuffle round trip failed: %zu elements of %zu bytes\n", n, es);
			}
			free(src);
			free(mid);
			free(back);
			free(ref);
		}
	}
	TAP_OK(all_ok, "shuffle/unshuffle round trips, element sizes 1..16, lengths 0..4097");
}

/* at_unshuffle's vector and word loops (16 elements at a time, then a tail)
 * against the byte loop: every length around the vector width, unaligned
 * buffers. */
static void test_unshuffle_against_bytes(void)
{
	static const size_t elem_sizes[] = { 2, 4, 8 };
	int all_ok = 1;
	for (size_t e = 0; e < sizeof elem_sizes / sizeof elem_sizes[0]; e++) {
		size_t es = elem_sizes[e];
		for (size_t n = 0; n <= 70 || n == 4099; n = n == 70 ? 4099 : n + 1) {
			for (size_t misalign = 0; misalign < 3; misalign++) {
				size_t bytes = es * n;
				unsigned char *shuffled = malloc(bytes + 4), *ref = malloc(bytes + 4),
				              *got = malloc(bytes + 4);
				for (size_t i = 0; i < bytes + 4; i++)
					shuffled[i] = (unsigned char)rng_next();
				memset(got, 0xa5, bytes + 4);
				reference_unshuffle(shuffled + misalign, ref, bytes, es);
				at_unshuffle(shuffled + misalign, got + misalign, n, es);
				if (memcmp(ref, got + misalign, bytes) != 0 || got[misalign + bytes] != 0xa5 ||
				    (misalign && got[misalign - 1] != 0xa5)) {
					all_ok = 0;
					printf("# unshuffle differs from the byte loop: %zu elements of %zu bytes, "
					       "offset %zu\n", n, es, misalign);
				}
				free(shuffled);
				free(ref);
				free(got);
			}
		}
	}
	TAP_OK(all_ok, "unshuffle of 2-, 4- and 8-byte elements equals the byte loop, lengths 0..70 "
	               "and 4099, unaligned");
}

enum fill { FILL_RANDOM, FILL_ZEROS, FILL_CONSTANT, FILL_NOISE, FILL_KINDS };
static const char *const fill_names[] = { "random", "zeros", "constant", "incompressible" };

static void fill_chunk(unsigned char *raw, size_t bytes, enum fill kind)
{
	size_t n = bytes / sizeof(float);
	float *values = (float *)raw;
	switch (kind) {
	case FILL_RANDOM: /* roughly normal activations with a few outliers */
		for (size_t i = 0; i < n; i++) {
			double x = rng_uniform() + rng_uniform() + rng_uniform() - 1.5;
			values[i] = (float)(i % 97 == 5 ? 300.0 * x : x);
		}
		break;
	case FILL_ZEROS: memset(raw, 0, bytes); break;
	case FILL_CONSTANT:
		for (size_t i = 0; i < n; i++)
			values[i] = 3.25f;
		break;
	case FILL_NOISE:
	default:
		for (size_t i = 0; i < bytes; i++)
			raw[i] = (unsigned char)(rng_next() >> 56);
		break;
	}
	/* bytes past the last whole float, when a test asks for them */
	for (size_t k = n * sizeof(float); k < bytes; k++)
		raw[k] = (unsigned char)(0xa0 + k);
}

struct chunk_set {
	size_t n;
	struct at_chunk *chunks;
	unsigned char **inputs;
};

static void chunk_set_free(struct chunk_set *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->chunks[i].raw);
		free(s->chunks[i].packed);
		free(s->inputs[i]);
	}
	free(s->chunks);
	free(s->inputs);
}

/* n chunks of float32, sizes varying (the last one short, as at the end of
 * a dataset), the fill kind cycling. */
static void chunk_set_make(struct chunk_set *s, size_t n, size_t floats_per_chunk)
{
	s->n = n;
	s->chunks = calloc(n, sizeof *s->chunks);
	s->inputs = calloc(n, sizeof *s->inputs);
	for (size_t i = 0; i < n; i++) {
		size_t floats = i + 1 == n ? floats_per_chunk / 3 + 1 : floats_per_chunk;
		size_t bytes = floats * sizeof(float);
		s->inputs[i] = malloc(bytes);
		fill_chunk(s->inputs[i], bytes, (enum fill)(i % FILL_KINDS));
		s->chunks[i].raw = malloc(bytes);
		memcpy(s->chunks[i].raw, s->inputs[i], bytes);
		s->chunks[i].raw_bytes = bytes;
	}
}

static int packed_equal(const struct chunk_set *a, const struct chunk_set *b)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->chunks[i].packed_bytes != b->chunks[i].packed_bytes ||
		    memcmp(a->chunks[i].packed, b->chunks[i].packed, a->chunks[i].packed_bytes) != 0)
			return 0;
	return 1;
}

/* Decompress into zeroed raw buffers and compare with the inputs. */
static int decompress_matches(struct chunk_set *s, int threads, struct at_error *err)
{
	for (size_t i = 0; i < s->n; i++)
		memset(s->chunks[i].raw, 0, s->chunks[i].raw_bytes);
	if (at_codec_decompress(s->chunks, s->n, sizeof(float), threads, err) != AT_OK)
		return 0;
	for (size_t i = 0; i < s->n; i++)
		if (memcmp(s->chunks[i].raw, s->inputs[i], s->chunks[i].raw_bytes) != 0)
			return 0;
	return 1;
}

static void test_round_trips(void)
{
	const size_t n = 41, floats = 8192;
	struct chunk_set one, four, dflt;
	struct at_error err = { 0, "" };
	rng_state = 12345;
	chunk_set_make(&one, n, floats);
	rng_state = 12345;
	chunk_set_make(&four, n, floats);
	rng_state = 12345;
	chunk_set_make(&dflt, n, floats);

	TAP_OK(at_codec_compress(one.chunks, n, sizeof(float), 3, 1, &err) == AT_OK,
	       "compress %zu chunks with 1 thread (%s)", n, err.message);
	TAP_OK(at_codec_compress(four.chunks, n, sizeof(float), 3, 4, &err) == AT_OK,
	       "compress %zu chunks with 4 threads (%s)", n, err.message);
	TAP_OK(at_codec_compress(dflt.chunks, n, sizeof(float), 3, 0, &err) == AT_OK,
	       "compress %zu chunks with OpenMP's default (%s)", n, err.message);
	TAP_OK(packed_equal(&one, &four) && packed_equal(&one, &dflt),
	       "packed bytes do not depend on the thread count");

	for (int kind = 0; kind < FILL_KINDS; kind++) {
		const struct at_chunk *c = &one.chunks[kind];
		int small = c->packed_bytes < c->raw_bytes / 4;
		TAP_OK(kind == FILL_RANDOM || (kind == FILL_NOISE) != small,
		       "%s chunk: %zu -> %zu bytes", fill_names[kind], c->raw_bytes, c->packed_bytes);
		TAP_OK(c->packed_capacity >= c->packed_bytes &&
		               c->packed_capacity >= ZSTD_compressBound(c->raw_bytes),
		       "%s chunk: packed grown to the compress bound", fill_names[kind]);
	}

	TAP_OK(decompress_matches(&one, 1, &err), "decompress with 1 thread (%s)", err.message);
	TAP_OK(decompress_matches(&four, 4, &err), "decompress with 4 threads (%s)", err.message);
	TAP_OK(decompress_matches(&dflt, 0, &err), "decompress with OpenMP's default (%s)",
	       err.message);

	/* compressing again reuses the packed buffers */
	void *before = one.chunks[0].packed;
	size_t capacity = one.chunks[0].packed_capacity;
	TAP_OK(at_codec_compress(one.chunks, n, sizeof(float), 3, 2, &err) == AT_OK &&
	               one.chunks[0].packed == before && one.chunks[0].packed_capacity == capacity &&
	               packed_equal(&one, &four),
	       "recompressing reuses packed buffers and gives the same bytes");

	chunk_set_free(&one);
	chunk_set_free(&four);
	chunk_set_free(&dflt);
}

/* Every packed chunk is one plain zstd frame of the shuffled bytes. */
static void test_standard_frame(void)
{
	static const size_t elem_sizes[] = { 1, 2, 4, 8 };
	static const size_t byte_counts[] = { 0, 1, 4, 14, 4096, 40000, 40003 };
	for (size_t e = 0; e < sizeof elem_sizes / sizeof elem_sizes[0]; e++) {
		for (size_t b = 0; b < sizeof byte_counts / sizeof byte_counts[0]; b++) {
			size_t es = elem_sizes[e], bytes = byte_counts[b];
			unsigned char *input = malloc(bytes + 1);
			fill_chunk(input, bytes, FILL_RANDOM);
			struct at_chunk c = { .raw = input, .raw_bytes = bytes };
			/* a short preallocated buffer must grow */
			c.packed = malloc(8);
			c.packed_capacity = 8;
			struct at_error err = { 0, "" };
			int rc = at_codec_compress(&c, 1, es, 5, 1, &err);
			unsigned long long content =
				rc == AT_OK ? ZSTD_getFrameContentSize(c.packed, c.packed_bytes) : 0;
			unsigned char *plain = malloc(bytes + 1), *raw = malloc(bytes + 1);
			size_t got = ZSTD_decompress(plain, bytes, c.packed, c.packed_bytes);
			int same = !ZSTD_isError(got) && got == bytes;
			if (same) {
				reference_unshuffle(plain, raw, bytes, es);
				same = memcmp(raw, input, bytes) == 0;
			}
			TAP_OK(rc == AT_OK && content == bytes && same,
			       "%zu bytes, elements of %zu: a zstd frame with content size %llu whose "
			       "plain decompression unshuffles to the input",
			       bytes, es, content);
			free(plain);
			free(raw);
			free(c.packed);
			free(input);
		}
	}

	/* a hand-computed layout with 2 trailing bytes: they follow the planes */
	static const unsigned char want[] = { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, 12, 13 };
	unsigned char *input = iota_bytes(sizeof want);
	struct at_chunk c = { .raw = input, .raw_bytes = sizeof want };
	unsigned char plain[sizeof want];
	int ok = at_codec_compress(&c, 1, 4, 3, 1, NULL) == AT_OK &&
	         ZSTD_decompress(plain, sizeof plain, c.packed, c.packed_bytes) == sizeof want &&
	         memcmp(plain, want, sizeof want) == 0;
	TAP_OK(ok, "14 bytes of 4-byte elements: 3 shuffled elements, then 2 bytes as they were");
	memset(input, 0, sizeof want);
	ok = at_codec_decompress(&c, 1, 4, 1, NULL) == AT_OK;
	for (size_t i = 0; ok && i < sizeof want; i++)
		ok = input[i] == i;
	TAP_OK(ok, "and decompresses back");
	free(c.packed);
	free(input);
}

/* Bytes before the first block header (RFC 8878, 3.1.1.1). */
static size_t frame_header_bytes(const unsigned char *frame)
{
	static const size_t did_bytes[] = { 0, 1, 2, 4 };
	static const size_t fcs_bytes[] = { 0, 2, 4, 8 };
	unsigned descriptor = frame[4];
	size_t single_segment = (descriptor >> 5) & 1;
	size_t fcs = fcs_bytes[descriptor >> 6];
	if (fcs == 0 && single_segment)
		fcs = 1;
	return 4 + 1 + (1 - single_segment) + did_bytes[descriptor & 3] + fcs;
}

static int contains(const char *haystack, const char *needle)
{
	return strstr(haystack, needle) != NULL;
}

static void test_errors(void)
{
	const size_t n = 24;
	struct chunk_set s;
	struct at_error err = { 0, "" };
	rng_state = 777;
	chunk_set_make(&s, n, 2048);
	if (at_codec_compress(s.chunks, n, sizeof(float), 3, 4, &err) != AT_OK) {
		TAP_OK(0, "compress for the error tests: %s", err.message);
		chunk_set_free(&s);
		return;
	}

	/* wrong raw_bytes, both ways */
	size_t right = s.chunks[3].raw_bytes;
	char expect[128];
	s.chunks[3].raw_bytes = right - 4;
	int rc = at_codec_decompress(s.chunks, n, sizeof(float), 4, &err);
	snprintf(expect, sizeof expect, "decompresses to %zu bytes, expected %zu", right, right - 4);
	TAP_OK(rc == AT_ECODEC && err.code == AT_ECODEC && contains(err.message, expect) &&
	               contains(err.message, "chunk 3"),
	       "raw_bytes too small: %s", err.message);
	s.chunks[3].raw_bytes = right;

	unsigned char *big = malloc(right + 8);
	void *saved_raw = s.chunks[3].raw;
	s.chunks[3].raw = big;
	s.chunks[3].raw_bytes = right + 8;
	rc = at_codec_decompress(s.chunks, n, sizeof(float), 1, &err);
	snprintf(expect, sizeof expect, "decompresses to %zu bytes, expected %zu", right, right + 8);
	TAP_OK(rc == AT_ECODEC && contains(err.message, expect), "raw_bytes too large: %s",
	       err.message);
	s.chunks[3].raw = saved_raw;
	s.chunks[3].raw_bytes = right;
	free(big);

	/* truncated frame */
	s.chunks[7].packed_bytes -= 3;
	rc = at_codec_decompress(s.chunks, n, sizeof(float), 4, &err);
	TAP_OK(rc == AT_ECODEC && contains(err.message, "chunk 7") && contains(err.message, "zstd: "),
	       "truncated frame: %s", err.message);
	s.chunks[7].packed_bytes += 3;

	/* bad magic in two chunks: the lower index is reported, whatever the schedule */
	unsigned char *p5 = s.chunks[5].packed, *p20 = s.chunks[20].packed;
	p5[0] ^= 0xff;
	p20[0] ^= 0xff;
	int stable = 1;
	for (int t = 1; t <= 4; t++) {
		rc = at_codec_decompress(s.chunks, n, sizeof(float), t, &err);
		stable = stable && rc == AT_ECODEC && contains(err.message, "chunk 5 ");
	}
	TAP_OK(stable, "corrupt magic in chunks 5 and 20: %s", err.message);
	p5[0] ^= 0xff;
	p20[0] ^= 0xff;

	/* a frame whose block header is damaged */
	unsigned char *p9 = s.chunks[9].packed;
	size_t header = frame_header_bytes(p9);
	p9[header + 2] = 0xff; /* block type "reserved" / absurd size */
	rc = at_codec_decompress(s.chunks, n, sizeof(float), 2, &err);
	TAP_OK(rc == AT_ECODEC && contains(err.message, "chunk 9"), "corrupt block header: %s",
	       err.message);

	/* garbage that is not a frame at all */
	unsigned char garbage[64];
	for (size_t i = 0; i < sizeof garbage; i++)
		garbage[i] = (unsigned char)(i * 37 + 1);
	float out[16];
	struct at_chunk g = { .raw = out, .raw_bytes = sizeof out, .packed = garbage,
		              .packed_bytes = sizeof garbage };
	rc = at_codec_decompress(&g, 1, sizeof(float), 1, &err);
	TAP_OK(rc == AT_ECODEC && contains(err.message, "not a zstd frame"), "garbage: %s",
	       err.message);

	/* bad arguments */
	TAP_OK(at_codec_compress(s.chunks, n, 0, 3, 1, &err) == AT_EINVAL, "element size 0: %s",
	       err.message);
	TAP_OK(at_codec_compress(NULL, 1, 4, 3, 1, &err) == AT_EINVAL, "NULL chunks: %s",
	       err.message);
	TAP_OK(at_codec_compress(NULL, 0, 4, 3, 1, &err) == AT_OK &&
	               at_codec_decompress(NULL, 0, 4, 1, &err) == AT_OK,
	       "zero chunks is a no-op");
	struct at_chunk empty = { 0 };
	TAP_OK(at_codec_decompress(&empty, 1, 4, 1, &err) == AT_EINVAL, "no packed data: %s",
	       err.message);
	TAP_OK(at_codec_compress(&empty, 1, 4, 3, 1, &err) == AT_OK && empty.packed_bytes > 0 &&
	               ZSTD_getFrameContentSize(empty.packed, empty.packed_bytes) == 0 &&
	               at_codec_decompress(&empty, 1, 4, 1, &err) == AT_OK,
	       "an empty chunk round-trips");
	free(empty.packed);
	empty.packed = NULL;
	TAP_OK(at_codec_decompress(&empty, 1, 4, 1, NULL) == AT_EINVAL, "a NULL error is allowed");

	chunk_set_free(&s);
}

int main(void)
{
	test_shuffle_layout();
	test_shuffle_round_trips();
	test_unshuffle_against_bytes();
	test_round_trips();
	test_standard_frame();
	test_errors();
	return tap_done();
}
