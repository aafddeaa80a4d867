/* at-crash.c: test helper that dies the hard way.  It writes a trace through
 * the public writer API, checkpoints twice, observes more, and then SIGKILLs
 * itself, so that nothing after the last checkpoint reaches the file and the
 * file is never closed.  tests/crash.sh checks what the tools make of it.
 *   at-crash OUT.h5
 * Point "layers.0.mlp.down_proj.out", 8 channels, float32; token t, channel c
 * holds (t % 4) + c; every second token is sampled.  Three calls of 16 tokens:
 * checkpoint, checkpoint, and the third is observed but never checkpointed.
 *   at-crash --digest-loop OUT.h5 LOG   observe and checkpoint until killed,
 *                                   logging each checkpoint's statistics
 *                                   (tests/kill-checkpoint.sh)
 * Not installed. */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acttrace.h"

#define CHANNELS 8
#define TOKENS_PER_CALL 16

/* The writer to abandon when a call fails, as a tool would (full-disk.sh:
 * nothing may be left behind). */
static struct at_writer *live;

static void check(int status, const struct at_error *err)
{
	if (status == AT_OK)
		return;
	at_writer_abandon(live);
	fprintf(stderr, "at-crash: %s (%s)\n", err->message, at_status_name(status));
	exit(1);
}

/* The digest of checkpoint-digest.py: the bytes of every point's statistics,
 * in the file's little-endian types and order (count nonfinite mean m2 m3 m4
 * min max absmax abssum hist, then extremes packed as f64 i64 i32), each
 * array zero-padded to 8 bytes, read as uint64 words w_i, summed as
 * w_i * (i * 0x9E3779B97F4A7C15 | 1) mod 2^64.  Little-endian hosts only. */
struct digest {
	uint64_t sum, index;
};

static void digest_bytes(struct digest *d, const void *data, size_t n)
{
	const unsigned char *b = data;
	for (size_t at = 0; at < n; at += 8) {
		uint64_t word = 0;
		memcpy(&word, b + at, n - at < 8 ? n - at : 8);
		d->sum += word * ((d->index++ * 0x9E3779B97F4A7C15ull) | 1);
	}
}

static void digest_stats(struct digest *d, const struct at_stats *s)
{
	size_t c = (size_t)s->channels;
	const void *vectors[] = {s->count, s->nonfinite, s->mean, s->m2, s->m3,
	                         s->m4, s->min, s->max, s->absmax, s->abssum};
	for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
		digest_bytes(d, vectors[i], c * 8);
	digest_bytes(d, s->hist, c * AT_HIST_BINS * 4);
	unsigned char *packed = calloc((size_t)s->n_extremes + 1, 20);
	if (!packed) {
		fprintf(stderr, "at-crash: out of memory\n");
		exit(1);
	}
	for (int32_t i = 0; i < s->n_extremes; i++) {
		memcpy(packed + 20 * i, &s->extremes[i].value, 8);
		memcpy(packed + 20 * i + 8, &s->extremes[i].token, 8);
		memcpy(packed + 20 * i + 16, &s->extremes[i].channel, 4);
	}
	digest_bytes(d, packed, (size_t)s->n_extremes * 20);
	free(packed);
}

/* One line, one write(): a kill leaves whole lines. */
static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int fd, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (write(fd, line, (size_t)n) != n) {
		fprintf(stderr, "at-crash: cannot write the log\n");
		exit(1);
	}
}

/* at-crash --digest-loop OUT.h5 LOG: observe and checkpoint until killed.
 * Beside the writer, the same observations go into at_stats of our own (the
 * writer's are not public), so the log holds the statistics each checkpoint
 * writes: "begin K TOKENS DIGEST" before checkpoint K, "done K" once it has
 * returned.  A kill between the two leaves checkpoint K-1 or K in the file.
 * A checkpoint that fails (a full disk) is reported, the writer abandoned,
 * and the exit status 1. */
_Noreturn static void digest_loop(const char *path, const char *log_path)
{
	enum { POINTS = 12, WIDE = 384, ROWS = 48 };
	int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (log_fd < 0) {
		perror(log_path);
		exit(1);
	}
	struct at_writer_options opts;
	at_writer_options_init(&opts);
	opts.sample_policy = AT_SAMPLE_EVERY;
	opts.sample_n = 4;
	struct at_error err;
	struct at_writer *w;
	check(at_writer_create(&w, path, &opts, &err), &err);
	live = w;
	int32_t ids[POINTS];
	static struct at_stats mirror[POINTS];
	char names[POINTS][64];
	for (int p = 0; p < POINTS; p++) {
		snprintf(names[p], sizeof names[p], "layers.%d.mlp.down_proj.out", p);
		struct at_point_desc desc = {names[p], p, "mlp", "mlp.down_proj.out",
		                             "model.mlp.down_proj", "Linear", "out", WIDE};
		check(at_writer_add_point(w, &desc, &ids[p], &err), &err);
		check(at_stats_init(&mirror[p], WIDE, opts.hist, opts.extremes, &err), &err);
	}
	static float x[ROWS][WIDE];
	int32_t seq[ROWS], pos[ROWS], id[ROWS];
	uint64_t lcg = 12345;
	int64_t tokens = 0;
	for (long call = 1;; call++) {
		for (int t = 0; t < ROWS; t++) {
			seq[t] = (int32_t)call;
			pos[t] = t;
			id[t] = t;
			for (int c = 0; c < WIDE; c++) {
				lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
				double u = (double)(lcg >> 11) / 9007199254740992.0;
				x[t][c] = (float)((u - 0.5) * (c % 17 == 3 ? 400.0 : 4.0));
			}
		}
		int64_t base;
		check(at_writer_add_tokens(w, seq, pos, id, ROWS, &base, &err), &err);
		tokens += ROWS;
		struct at_tensor t = {x, AT_F32, 1, ROWS, WIDE, ROWS * WIDE, WIDE, 1};
		struct digest d = {0, 0};
		for (int p = 0; p < POINTS; p++) {
			/* point p sees the rows scaled by p + 1, so the points differ */
			struct at_tensor tp = t;
			static float scaled[ROWS][WIDE];
			for (int r = 0; r < ROWS; r++)
				for (int c = 0; c < WIDE; c++)
					scaled[r][c] = x[r][c] * (float)(p + 1);
			tp.data = scaled;
			check(at_writer_observe(w, ids[p], &tp, base, &err), &err);
			check(at_stats_add(&mirror[p], &tp, base, &err), &err);
			digest_stats(&d, &mirror[p]);
		}
		log_line(log_fd, "begin %ld %lld %llu\n", call, (long long)tokens,
		         (unsigned long long)d.sum);
		int status = at_writer_checkpoint(w, &err);
		if (status != AT_OK) { /* a full disk (tests/full-disk.sh): as a tool would */
			at_writer_abandon(w);
			fprintf(stderr, "at-crash: %s\n", err.message);
			exit(1);
		}
		log_line(log_fd, "done %ld\n", call);
	}
}

int main(int argc, char **argv)
{
	at_tool_init(); /* as the tools: no HDF5 exit handler after a failed close */
	if (argc == 4 && strcmp(argv[1], "--digest-loop") == 0)
		digest_loop(argv[2], argv[3]);
	if (argc != 2) {
		fprintf(stderr, "usage: at-crash OUT.h5 | at-crash --digest-loop OUT.h5 LOG\n");
		return 2;
	}
	struct at_writer_options opts;
	at_writer_options_init(&opts);
	opts.sample_policy = AT_SAMPLE_EVERY;
	opts.sample_n = 2;
	struct at_error err;
	struct at_writer *w;
	check(at_writer_create(&w, argv[1], &opts, &err), &err);
	struct at_point_desc desc = {"layers.0.mlp.down_proj.out", 0, "mlp", "mlp.down_proj.out",
	                             "model.layers.0.mlp.down_proj", "Linear", "out", CHANNELS};
	int32_t point;
	check(at_writer_add_point(w, &desc, &point, &err), &err);
	for (int call = 0; call < 3; call++) {
		float x[TOKENS_PER_CALL][CHANNELS];
		int32_t seq[TOKENS_PER_CALL], pos[TOKENS_PER_CALL], id[TOKENS_PER_CALL];
		for (int t = 0; t < TOKENS_PER_CALL; t++) {
			int token = call * TOKENS_PER_CALL + t;
			seq[t] = 0;
			pos[t] = token;
			id[t] = 100 + token;
			for (int c = 0; c < CHANNELS; c++)
				x[t][c] = (float)(token % 4 + c);
		}
		int64_t base;
		check(at_writer_add_tokens(w, seq, pos, id, TOKENS_PER_CALL, &base, &err), &err);
		struct at_tensor t = {x, AT_F32, 1, TOKENS_PER_CALL, CHANNELS,
		                      TOKENS_PER_CALL * CHANNELS, CHANNELS, 1};
		check(at_writer_observe(w, point, &t, base, &err), &err);
		if (call < 2)
			check(at_writer_checkpoint(w, &err), &err);
	}
	fflush(stdout);
	raise(SIGKILL);
	return 1; /* not reached */
}
