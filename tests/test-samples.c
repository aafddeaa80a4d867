/* test-samples.c: sampled rows through the writer and its background thread,
 * read back with the reader.  One point is fed bf16, f16 and f32 rows, in
 * [T, C] and strided [C, T] layouts, mixed inside one chunk and across
 * chunk boundaries, with checkpoints in the middle (partial chunks of 16-bit
 * rows); every row must read back as the float32 value of what was fed, with
 * its token.  Rows are stored in the dtype of a point's first rows (format
 * version 2): float32 rows fed after a 16-bit chunk are rounded to nearest
 * even, checked against references independent of the library's.  A writer
 * abandoned with chunks still queued must not leak or
 * crash (ASan). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acttrace.h"
#include "tap.h"

#define C 24

static uint16_t bf16_bits(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	b += 0x7fffu + ((b >> 16) & 1u);
	return (uint16_t)(b >> 16);
}

static float bf16_value(uint16_t h)
{
	uint32_t b = (uint32_t)h << 16;
	float x;
	memcpy(&x, &b, sizeof x);
	return x;
}

/* float -> binary16 for values well inside its normal range (the test's). */
static uint16_t f16_bits(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	uint32_t sign = (b >> 16) & 0x8000u;
	int32_t exp = (int32_t)((b >> 23) & 0xff) - 127 + 15;
	uint32_t mant = (b >> 13) & 0x3ffu; /* truncated: exact for the values below */
	if (x == 0)
		return (uint16_t)sign;
	return (uint16_t)(sign | ((uint32_t)exp << 10) | mant);
}

static float f16_value(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
	float v = exp ? ldexpf(1.0f + mant / 1024.0f, exp - 15) : ldexpf(mant / 1024.0f, -14);
	return h & 0x8000 ? -v : v;
}

/* Row g's values: small multiples of 1/64, exact in every dtype. */
static float value_of(int64_t g, int c)
{
	return (float)((int)((g * 37 + c * 11) % 512) - 256) / 64.0f;
}

/* Observe rows [g0, g0+n) in dtype, layout tc ([n, C]) or ct ([C, n]). */
static int feed(struct at_writer *w, int32_t point, enum at_dtype dtype, int ct, int64_t g0,
                int64_t n, float *expect)
{
	size_t esize = dtype == AT_F32 ? 4 : 2;
	unsigned char *buf = malloc((size_t)(n * C) * esize);
	if (!buf)
		return -1;
	for (int64_t r = 0; r < n; r++) {
		for (int c = 0; c < C; c++) {
			float x = value_of(g0 + r, c);
			size_t at = ct ? (size_t)(c * n + r) : (size_t)(r * C + c);
			if (dtype == AT_F32) {
				((float *)buf)[at] = x;
			} else {
				uint16_t h = dtype == AT_BF16 ? bf16_bits(x) : f16_bits(x);
				((uint16_t *)buf)[at] = h;
				x = dtype == AT_BF16 ? bf16_value(h) : f16_value(h);
			}
			expect[(g0 + r) * C + c] = x;
		}
	}
	struct at_tensor t = {buf, dtype, 1, n, C, n * C, ct ? 1 : C, ct ? n : 1};
	struct at_error err;
	int rc = at_writer_observe(w, point, &t, g0, &err);
	if (rc)
		fprintf(stderr, "observe: %s\n", err.message);
	free(buf);
	return rc;
}

static struct at_writer *sampling_writer_with(const char *path, int32_t *point,
                                             int64_t in_flight, enum at_when_busy when_busy)
{
	struct at_writer_options o;
	at_writer_options_init(&o);
	o.sample_policy = AT_SAMPLE_EVERY;
	o.sample_n = 1;
	o.sample_bytes_in_flight = in_flight;
	o.when_busy = when_busy;
	struct at_writer *w;
	struct at_error err;
	struct at_point_desc d = {"p", 0, "mlp", "p", "m", "Linear", "out", C};
	if (at_writer_create(&w, path, &o, &err) || at_writer_add_point(w, &d, point, &err)) {
		fprintf(stderr, "test-samples: %s\n", err.message);
		exit(99);
	}
	return w;
}

static struct at_writer *sampling_writer(const char *path, int32_t *point)
{
	return sampling_writer_with(path, point, 0, AT_WHEN_BUSY_WAIT);
}

static void mixed_rows(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/mixed.h5", dir);
	int32_t point;
	struct at_writer *w = sampling_writer(path, &point);
	/* a chunk holds 4096 rows of 24 channels: cross two boundaries */
	static const struct {
		enum at_dtype dtype;
		int ct;
		int64_t n;
		int checkpoint;
	} calls[] = {
		{AT_BF16, 0, 100, 0}, {AT_F32, 0, 7, 0},   {AT_F16, 1, 50, 1},   {AT_BF16, 1, 3000, 0},
		{AT_BF16, 0, 2000, 1}, {AT_F16, 0, 1500, 0}, {AT_BF16, 0, 3333, 0}, {AT_F32, 1, 11, 1},
		{AT_BF16, 0, 500, 0},
	};
	int64_t total = 0;
	for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
		total += calls[i].n;
	float *expect = malloc((size_t)(total * C) * sizeof *expect);
	float *got = malloc((size_t)(total * C) * sizeof *got);
	int64_t *tokens = malloc((size_t)total * sizeof *tokens);
	int32_t *seq = calloc((size_t)total, sizeof *seq), *pos = calloc((size_t)total, sizeof *pos);
	int32_t *ids = calloc((size_t)total, sizeof *ids);
	if (!expect || !got || !tokens || !seq || !pos || !ids)
		exit(99);
	struct at_error err;
	int64_t base;
	int ok = at_writer_add_tokens(w, seq, pos, ids, total, &base, &err) == AT_OK;
	int64_t g = 0;
	for (size_t i = 0; ok && i < sizeof calls / sizeof calls[0]; i++) {
		ok = feed(w, point, calls[i].dtype, calls[i].ct, g, calls[i].n, expect) == 0;
		g += calls[i].n;
		if (ok && calls[i].checkpoint)
			ok = at_writer_checkpoint(w, &err) == AT_OK;
	}
	ok = ok && at_writer_close(w, &err) == AT_OK;
	TAP_OK(ok, "bf16, f16 and f32 rows, both layouts, with checkpoints, are written");
	struct at_reader *r = NULL;
	ok = ok && at_reader_open(&r, path, &err) == AT_OK;
	const struct at_point_info *info = ok ? at_reader_point(r, 0) : NULL;
	TAP_OK(info && info->samples == total, "%lld rows sampled, %lld read",
	       (long long)total, info ? (long long)info->samples : -1LL);
	ok = info && info->samples == total &&
	     at_reader_read_samples(r, 0, 0, total, got, tokens, &err) == AT_OK;
	int64_t bad = -1, bad_token = -1;
	for (int64_t i = 0; ok && i < total * C && bad < 0; i++)
		if (got[i] != expect[i])
			bad = i;
	for (int64_t i = 0; ok && i < total && bad_token < 0; i++)
		if (tokens[i] != i)
			bad_token = i;
	TAP_OK(ok && bad < 0, "every sampled value reads back as fed (first difference: %lld)",
	       (long long)bad);
	TAP_OK(ok && bad_token < 0, "every sampled row has its token (first difference: %lld)",
	       (long long)bad_token);
	if (r)
		at_reader_close(r);
	free(expect);
	free(got);
	free(tokens);
	free(seq);
	free(pos);
	free(ids);
	remove(path);
}

/* The float nearest x among two neighbours in a 16-bit type, ties to the one
 * whose last stored bit is even: the reference for bfloat16 rounding. */
static float bf16_nearest(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	uint32_t lo_bits = b & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
	float lo, hi;
	memcpy(&lo, &lo_bits, sizeof lo);
	memcpy(&hi, &hi_bits, sizeof hi);
	double dlo = fabs((double)x - lo), dhi = fabs((double)hi - x);
	if (dlo != dhi)
		return dlo < dhi ? lo : hi;
	return (lo_bits >> 16) & 1u ? hi : lo;
}

/* A full chunk of first_dtype rows, then float32 rows that no 16-bit type
 * holds: the point stays in first_dtype, the float32 rows rounded. */
static void narrowed_rows(const char *dir, enum at_dtype first_dtype)
{
	char path[512];
	snprintf(path, sizeof path, "%s/narrowed.h5", dir);
	int32_t point;
	struct at_writer *w = sampling_writer(path, &point);
	int64_t n16 = 4096, n32 = 5000, total = n16 + n32;
	float *expect = malloc((size_t)(total * C) * sizeof *expect);
	float *got = malloc((size_t)(total * C) * sizeof *got);
	float *rows = malloc((size_t)(n32 * C) * sizeof *rows);
	if (!expect || !got || !rows)
		exit(99);
	int ok = feed(w, point, first_dtype, 0, 0, n16, expect) == 0;
	for (int64_t i = 0; i < n32 * C; i++) {
		float x = value_of(n16 + i / C, (int)(i % C)) + 1.0f / 3.0f + (float)i * 1e-7f;
		rows[i] = x;
		expect[n16 * C + i] = first_dtype == AT_BF16 ? bf16_nearest(x) : (float)(_Float16)x;
	}
	struct at_tensor t = {rows, AT_F32, 1, n32, C, n32 * C, C, 1};
	struct at_error err;
	ok = ok && at_writer_observe(w, point, &t, n16, &err) == AT_OK;
	ok = ok && at_writer_close(w, &err) == AT_OK;
	struct at_reader *r = NULL;
	ok = ok && at_reader_open(&r, path, &err) == AT_OK;
	const struct at_point_info *info = ok ? at_reader_point(r, 0) : NULL;
	ok = info && info->samples == total && info->sample_dtype == first_dtype &&
	     at_reader_read_samples(r, 0, 0, total, got, NULL, &err) == AT_OK;
	int64_t bad = -1;
	for (int64_t i = 0; ok && i < total * C && bad < 0; i++)
		if (memcmp(&got[i], &expect[i], sizeof got[i]) != 0)
			bad = i;
	TAP_OK(ok && bad < 0,
	       "%s first: stored as %s, later float32 rows rounded to nearest even (first "
	       "difference: %lld)",
	       first_dtype == AT_BF16 ? "bf16" : "f16", first_dtype == AT_BF16 ? "bf16" : "f16",
	       (long long)bad);
	if (r)
		at_reader_close(r);
	free(expect);
	free(got);
	free(rows);
	remove(path);
}

/* A point that sampled nothing has an empty float32 `samples` once closed. */
static void nothing_sampled(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/empty.h5", dir);
	int32_t point;
	struct at_writer *w = sampling_writer(path, &point);
	struct at_error err;
	int ok = at_writer_checkpoint(w, &err) == AT_OK && at_writer_close(w, &err) == AT_OK;
	struct at_reader *r = NULL;
	ok = ok && at_reader_open(&r, path, &err) == AT_OK;
	const struct at_point_info *info = ok ? at_reader_point(r, 0) : NULL;
	TAP_OK(info && info->samples == 0 && info->sample_chunk_rows > 0 &&
	           info->sample_dtype == AT_F32,
	       "a point that sampled nothing has an empty float32 samples dataset");
	if (r)
		at_reader_close(r);
	remove(path);
}

/* Chunks still queued for the writer thread when the capture is abandoned:
 * freed, nothing written after, no crash (ASan checks the rest). */
static void abandoned(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/abandoned.h5", dir);
	int32_t point;
	struct at_writer *w = sampling_writer(path, &point);
	int64_t n = 4096 * 6;
	float *expect = malloc((size_t)(n * C) * sizeof *expect);
	if (!expect)
		exit(99);
	int ok = feed(w, point, AT_BF16, 0, 0, n, expect) == 0;
	at_writer_abandon(w);
	TAP_OK(ok, "a writer abandoned with full chunks queued is freed");
	free(expect);
	remove(path);
}

/* A writer's background thread writes chunks while this thread reads
 * another trace: the library serializes its HDF5 calls (the serial HDF5
 * library is not thread-safe), so both come out right.  A smoke test: the
 * overlap it guards against is short (the thread spends most of its time
 * compressing), so a missing lock shows here only now and then, and
 * ThreadSanitizer cannot see into HDF5. */
static void read_while_writing(const char *dir)
{
	char src[512], dst[512];
	snprintf(src, sizeof src, "%s/read-me.h5", dir);
	snprintf(dst, sizeof dst, "%s/written.h5", dir);
	int32_t point;
	int64_t n = 4096 * 4;
	float *expect = malloc((size_t)(n * C) * sizeof *expect);
	float *got = malloc((size_t)(4096 * C) * sizeof *got);
	if (!expect || !got)
		exit(99);
	struct at_writer *w = sampling_writer(src, &point);
	struct at_error err;
	int ok = feed(w, point, AT_BF16, 0, 0, n, expect) == 0 && at_writer_close(w, &err) == AT_OK;
	struct at_reader *r = NULL;
	ok = ok && at_reader_open(&r, src, &err) == AT_OK;
	w = sampling_writer(dst, &point);
	float *scratch = malloc((size_t)(8 * 4096 * C) * sizeof *scratch); /* feed fills it by row */
	int64_t bad = -1;
	for (int round = 0; ok && round < 8; round++) {
		/* full chunks for the writer thread, then reads while it works */
		ok = feed(w, point, AT_BF16, round % 2, (int64_t)round * 4096, 4096, scratch) == 0;
		for (int64_t first = 0; ok && first < n; first += 4096) {
			ok = at_reader_read_samples(r, 0, first, 4096, got, NULL, &err) == AT_OK;
			for (int64_t i = 0; ok && i < 4096 * C && bad < 0; i++)
				if (got[i] != expect[first * C + i])
					bad = first * C + i;
		}
	}
	ok = ok && at_writer_close(w, &err) == AT_OK;
	TAP_OK(ok && bad < 0, "reading one trace while another's writer thread writes (first "
	                      "difference: %lld)", (long long)bad);
	if (r)
		at_reader_close(r);
	free(expect);
	free(got);
	free(scratch);
	remove(src);
	remove(dst);
}

/* With one byte allowed in flight, every full chunk finds the writer busy
 * while it writes the one before: "wait" keeps every row, "drop" drops whole
 * chunks, and the rows it keeps are whole, in token order, each the row fed
 * for its token; kept + dropped = fed. */
static void when_busy(const char *dir, enum at_when_busy mode)
{
	char path[512];
	snprintf(path, sizeof path, "%s/busy-%d.h5", dir, (int)mode);
	int32_t point;
	struct at_writer *w = sampling_writer_with(path, &point, 1, mode);
	int64_t n = 4096 * 12;
	float *expect = malloc((size_t)(n * C) * sizeof *expect);
	float *got = malloc((size_t)(n * C) * sizeof *got);
	int64_t *tokens = malloc((size_t)n * sizeof *tokens);
	if (!expect || !got || !tokens)
		exit(99);
	/* one call: its chunks fill back to back, far faster than one compresses */
	int ok = feed(w, point, AT_BF16, 0, 0, n, expect) == 0;
	struct at_error err;
	ok = ok && at_writer_close(w, &err) == AT_OK;
	struct at_reader *r = NULL;
	ok = ok && at_reader_open(&r, path, &err) == AT_OK;
	const struct at_point_info *info = ok ? at_reader_point(r, 0) : NULL;
	int64_t kept = info ? info->samples : -1, dropped = info ? info->samples_dropped : -1;
	ok = info && kept + dropped == n && kept > 0 &&
	     at_reader_read_samples(r, 0, 0, kept, got, tokens, &err) == AT_OK;
	int64_t bad = -1;
	for (int64_t i = 0; ok && i < kept && bad < 0; i++) {
		if (tokens[i] < 0 || tokens[i] >= n || (i > 0 && tokens[i] <= tokens[i - 1]) ||
		    memcmp(got + i * C, expect + tokens[i] * C, C * sizeof *got) != 0)
			bad = i;
	}
	if (mode == AT_WHEN_BUSY_WAIT)
		TAP_OK(ok && kept == n && dropped == 0 && bad < 0,
		       "busy writer, wait: all %lld rows kept (%lld kept, %lld dropped)", (long long)n,
		       (long long)kept, (long long)dropped);
	else
		TAP_OK(ok && bad < 0 && dropped > 0 && dropped % 4096 == 0,
		       "busy writer, drop: %lld kept + %lld dropped (whole chunks) = %lld fed, kept "
		       "rows whole and in order (first bad row %lld)",
		       (long long)kept, (long long)dropped, (long long)n, (long long)bad);
	if (r)
		at_reader_close(r);
	free(expect);
	free(got);
	free(tokens);
	remove(path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	char buf[512];
	snprintf(buf, sizeof buf, "%s/test-samples.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	char *d = mkdtemp(buf);
	if (!d)
		return 99;
	mixed_rows(d);
	narrowed_rows(d, AT_BF16);
	narrowed_rows(d, AT_F16);
	nothing_sampled(d);
	abandoned(d);
	read_while_writing(d);
	when_busy(d, AT_WHEN_BUSY_WAIT);
	when_busy(d, AT_WHEN_BUSY_DROP);
	rmdir(d);
	return tap_done();
}
