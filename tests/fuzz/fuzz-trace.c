/* fuzz-trace.c: everything the tools do with a trace after opening it, on
 * one input: the points' moments and whole statistics, a few sampled rows,
 * tokens and every weight.  Errors are fine; a crash, a leak or undefined
 * behaviour is what it looks for (under ASan and UBSan).
 *
 * Two builds of the same code:
 *   - a replay driver (default): fuzz-trace FILE... runs each file and
 *     prints "ok FILE"; tests/fuzz-replay.sh runs it in make check over
 *     tests/fuzz/corpus and damaged copies of a good trace, and
 *     fuzz-trace --mutate SEED IN OUT makes the inputs of the bounded
 *     fuzzing that tests/fuzz-mutate.sh runs in make check;
 *   - a libFuzzer target (-DFUZZ_LIBFUZZER, clang -fsanitize=fuzzer): each
 *     input is written to a file in /dev/shm and opened by its name;
 *     tests/fuzz/run.sh builds and runs it. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acttrace.h"

/* The most values one read may ask for: a damaged trace may claim sizes the
 * reader accepts (up to 2^31 channels) that no test machine can hold. */
#define MAX_READ_VALUES ((int64_t)1 << 24)

static void traverse(struct at_reader *r)
{
	const struct at_trace_info *info = at_reader_info(r);
	struct at_error err;
	for (int32_t i = 0; i < info->points; i++) {
		const struct at_point_info *p = at_reader_point(r, i);
		struct at_stats s;
		if (at_reader_load_moments(r, i, &s, &err) == AT_OK)
			at_stats_free(&s);
		if (p->channels * 256 <= MAX_READ_VALUES && at_reader_load_stats(r, i, &s, &err) == AT_OK)
			at_stats_free(&s);
		int64_t rows = p->samples < 64 ? p->samples : 64;
		if (rows > 0 && rows * p->channels <= MAX_READ_VALUES) {
			float *values = malloc((size_t)(rows * p->channels) * sizeof *values);
			int64_t *tokens = malloc((size_t)rows * sizeof *tokens);
			if (values && tokens)
				at_reader_read_samples(r, i, 0, rows, values, tokens, &err);
			free(values);
			free(tokens);
		}
	}
	int64_t n = info->tokens < 64 ? info->tokens : 64;
	if (n > 0) {
		int32_t seq[64], pos[64], id[64];
		at_reader_read_tokens(r, 0, n, seq, pos, id, &err);
	}
	for (int32_t i = 0; i < info->weights; i++) {
		struct at_weight_stats w;
		if (at_reader_load_weight(r, i, &w, &err) == AT_OK)
			at_weight_stats_free(&w);
	}
}

static void fuzz_path(const char *path)
{
	struct at_reader *r = NULL;
	struct at_error err;
	if (at_reader_open(&r, path, &err) == AT_OK) {
		traverse(r);
		at_reader_close(r);
	}
}

#ifdef FUZZ_LIBFUZZER
/* Each input is written to a file of its own under /dev/shm (or TMPDIR) and
 * opened by name, as the tools open a trace.  Not a memfd's /proc/self/fd
 * path: HDF5 resolves that link to "/memfd:... (deleted)" and refuses it, so
 * nothing past the open was ever fuzzed that way. */
static char input_path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!input_path[0]) {
		const char *dir = getenv("FUZZ_TMPDIR") ? getenv("FUZZ_TMPDIR") : "/dev/shm";
		snprintf(input_path, sizeof input_path, "%s/fuzz-trace-%ld.h5", dir, (long)getpid());
	}
	FILE *f = fopen(input_path, "wb");
	if (!f)
		abort(); /* the harness cannot work: stop, do not fuzz nothing */
	int written = fwrite(data, 1, size, f) == size;
	if (fclose(f) != 0 || !written)
		abort();
	fuzz_path(input_path);
	unlink(input_path);
	return 0;
}
#else
/* xorshift64*: the mutations of a seed are the same on every machine. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545F4914F6CDD1DULL;
}

/* fuzz-trace --mutate SEED IN OUT: OUT is IN with a few random bytes
 * overwritten, a random block overwritten, or cut short (tests/fuzz-mutate.sh
 * runs the harness on it in a process of its own). */
static int mutate(const char *seed_text, const char *in, const char *out)
{
	uint64_t state = strtoull(seed_text, NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
	FILE *f = fopen(in, "rb");
	if (!f)
		return 2;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	rewind(f);
	unsigned char *b = size > 0 ? malloc((size_t)size) : NULL;
	if (!b || fread(b, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		free(b);
		return 2;
	}
	fclose(f);
	switch (next_random(&state) % 4) {
	case 0: /* a block of random bytes */
	{
		long at = (long)(next_random(&state) % (uint64_t)size);
		long n = 1 + (long)(next_random(&state) % 256);
		for (long i = at; i < at + n && i < size; i++)
			b[i] = (unsigned char)next_random(&state);
		break;
	}
	case 1: /* cut short */
		size = (long)(next_random(&state) % (uint64_t)size);
		break;
	default: /* a few bytes anywhere */
		for (int k = 1 + (int)(next_random(&state) % 20); k > 0; k--)
			b[next_random(&state) % (uint64_t)size] = (unsigned char)next_random(&state);
	}
	f = fopen(out, "wb");
	int bad = !f || fwrite(b, 1, (size_t)size, f) != (size_t)size;
	if (f)
		bad |= fclose(f) != 0;
	free(b);
	return bad ? 2 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "--mutate") == 0)
		return mutate(argv[2], argv[3], argv[4]);
	for (int i = 1; i < argc; i++) {
		fuzz_path(argv[i]);
		printf("ok %s\n", argv[i]);
		fflush(stdout);
	}
	return 0;
}
#endif
