/* at-crash.c: test helper that dies the hard way.  It writes a trace through
 * the public writer API, checkpoints twice, observes more, and then SIGKILLs
 * itself, so that nothing after the last checkpoint reaches the file and the
 * file is never closed.  tests/crash.sh checks what the tools make of it.
 *   at-crash OUT.h5
 * Point "layers.0.mlp.down_proj.out", 8 channels, float32; token t, channel c
 * holds (t % 4) + c; every second token is sampled.  Three calls of 16 tokens:
 * checkpoint, checkpoint, and the third is observed but never checkpointed.
 * Not installed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"

#define CHANNELS 8
#define TOKENS_PER_CALL 16

static void check(int status, const struct at_error *err)
{
	if (status == AT_OK)
		return;
	fprintf(stderr, "at-crash: %s (%s)\n", err->message, at_status_name(status));
	exit(1);
}

/* at-crash --loop OUT.h5: observe and checkpoint until killed, 16 points
 * of 512 channels so that a checkpoint takes a while, for crash.sh to kill
 * it at random moments, most of them inside a checkpoint. */
_Noreturn static void loop(const char *path)
{
	enum { POINTS = 16, WIDE = 512, ROWS = 64 };
	struct at_writer_options opts;
	at_writer_options_init(&opts);
	opts.sample_policy = AT_SAMPLE_EVERY;
	opts.sample_n = 4;
	struct at_error err;
	struct at_writer *w;
	check(at_writer_create(&w, path, &opts, &err), &err);
	int32_t ids[POINTS];
	char names[POINTS][64];
	for (int p = 0; p < POINTS; p++) {
		snprintf(names[p], sizeof names[p], "layers.%d.mlp.down_proj.out", p);
		struct at_point_desc desc = {names[p], p, "mlp", "mlp.down_proj.out",
		                             "model.mlp.down_proj", "Linear", "out", WIDE};
		check(at_writer_add_point(w, &desc, &ids[p], &err), &err);
	}
	static float x[ROWS][WIDE];
	int32_t seq[ROWS], pos[ROWS], id[ROWS];
	for (long call = 0;; call++) {
		for (int t = 0; t < ROWS; t++) {
			seq[t] = (int32_t)call;
			pos[t] = t;
			id[t] = t;
			for (int c = 0; c < WIDE; c++)
				x[t][c] = (float)((call * ROWS + t) % 7 + c);
		}
		int64_t base;
		check(at_writer_add_tokens(w, seq, pos, id, ROWS, &base, &err), &err);
		struct at_tensor t = {x, AT_F32, 1, ROWS, WIDE, ROWS * WIDE, WIDE, 1};
		for (int p = 0; p < POINTS; p++)
			check(at_writer_observe(w, ids[p], &t, base, &err), &err);
		check(at_writer_checkpoint(w, &err), &err);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--loop") == 0)
		loop(argv[2]);
	if (argc != 2) {
		fprintf(stderr, "usage: at-crash OUT.h5 | at-crash --loop OUT.h5\n");
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
