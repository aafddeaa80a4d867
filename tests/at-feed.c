/* at-feed.c: test helper that writes a trace from raw little-endian activations
 * through the public writer API, so that the Python tests can check our files
 * against numpy on the very same raw data.  Not installed. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"

#define MAX_WEIGHTS 16
#define TOKEN_ID_VOCAB 50257

static const char usage_text[] =
	"usage: at-feed --dtype f32|f16|bf16 --layout tc|bct --batches B --rows T --channels C\n"
	"               [--split N] [--every N | --first N | --reservoir N [--seed S]] [--max-samples N] [--seq-len L]\n"
	"               [--extremes K] [--no-hist] [--point NAME] [--layer N] [--threads N]\n"
	"               [--level N] [--checkpoint] [--abandon] [--weight FILE:ROWS:COLS[:MODULE]]...\n"
	"               [--slice RANK/WORLD:OFFSET:FULL] -o OUT.h5 RAW\n"
	"Layout tc: RAW is [B*T, C] row-major; bct: RAW is [B, C, T] row-major.\n"
	"Token (b, t) is row b*T+t of /tokens with seq b, pos t (or seq g/L, pos g%L\n"
	"for --seq-len L and global index g) and id g*7 %% 50257.  --checkpoint calls\n"
	"at_writer_checkpoint after every observe (with --split, between the parts);\n"
	"--abandon also does, then abandons the writer as a crash would (complete=0).\n"
	"--slice: the file is rank RANK of WORLD and the point holds channels OFFSET to\n"
	"OFFSET + C - 1 of a tensor FULL wide (FULL = C: whole, marked replicated).\n";

struct weight_arg {
	const char *path;
	int64_t rows, cols;
	const char *module;
};

struct feed_args {
	enum at_dtype dtype;
	int bct; /* layout [B, C, T] instead of [B, T, C] */
	int64_t batches, rows, channels;
	int64_t split_rows; /* 0: one call for the whole tensor */
	int64_t seq_len;    /* 0: one sequence per batch */
	int checkpoint;     /* checkpoint after every observe call */
	int abandon;        /* end like a crash: abandon the writer instead of closing it */
	struct at_writer_options opts;
	const char *point_name;
	int32_t layer;
	int64_t channel_offset, full_channels; /* --slice */
	struct weight_arg weights[MAX_WEIGHTS];
	int n_weights;
	const char *out_path;
	const char *raw_path;
};

static _Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;
	fputs("at-feed: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static _Noreturn void die_at(const struct at_error *err)
{
	die("%s (%s)", err->message, at_status_name(err->code));
}

static int64_t parse_int(const char *option, const char *s, int64_t min)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min)
		die("--%s: '%s' is not an integer >= %lld", option, s, (long long)min);
	return (int64_t)v;
}

static enum at_dtype parse_dtype(const char *s)
{
	if (!strcmp(s, "f32"))
		return AT_F32;
	if (!strcmp(s, "f16"))
		return AT_F16;
	if (!strcmp(s, "bf16"))
		return AT_BF16;
	die("--dtype: '%s' is not f32, f16 or bf16", s);
}

/* FILE:ROWS:COLS[:MODULE]; the file name may not contain ':'. */
static struct weight_arg parse_weight(char *s)
{
	struct weight_arg w = {.module = "model.layers.0.mlp.down_proj"};
	char *fields[4] = {0};
	int n = 0;
	for (char *tok = strtok(s, ":"); tok && n < 4; tok = strtok(NULL, ":"))
		fields[n++] = tok;
	if (n < 3)
		die("--weight: expected FILE:ROWS:COLS[:MODULE]");
	w.path = fields[0];
	w.rows = parse_int("weight", fields[1], 1);
	w.cols = parse_int("weight", fields[2], 1);
	if (n == 4)
		w.module = fields[3];
	return w;
}

static void parse_args(int argc, char **argv, struct feed_args *a)
{
	enum { OPT_SPLIT = 256, OPT_EVERY, OPT_FIRST, OPT_MAX_SAMPLES, OPT_SEQ_LEN,
	       OPT_EXTREMES, OPT_NO_HIST, OPT_POINT, OPT_LAYER, OPT_THREADS, OPT_LEVEL,
	       OPT_WEIGHT, OPT_CHECKPOINT, OPT_ABANDON, OPT_DTYPE, OPT_LAYOUT, OPT_BATCHES, OPT_ROWS, OPT_CHANNELS,
	       OPT_RESERVOIR, OPT_SEED, OPT_SLICE };
	static const struct option longopts[] = {
		{"dtype", required_argument, NULL, OPT_DTYPE},
		{"layout", required_argument, NULL, OPT_LAYOUT},
		{"batches", required_argument, NULL, OPT_BATCHES},
		{"rows", required_argument, NULL, OPT_ROWS},
		{"channels", required_argument, NULL, OPT_CHANNELS},
		{"split", required_argument, NULL, OPT_SPLIT},
		{"every", required_argument, NULL, OPT_EVERY},
		{"first", required_argument, NULL, OPT_FIRST},
		{"reservoir", required_argument, NULL, OPT_RESERVOIR},
		{"seed", required_argument, NULL, OPT_SEED},
		{"max-samples", required_argument, NULL, OPT_MAX_SAMPLES},
		{"seq-len", required_argument, NULL, OPT_SEQ_LEN},
		{"extremes", required_argument, NULL, OPT_EXTREMES},
		{"no-hist", no_argument, NULL, OPT_NO_HIST},
		{"point", required_argument, NULL, OPT_POINT},
		{"layer", required_argument, NULL, OPT_LAYER},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"level", required_argument, NULL, OPT_LEVEL},
		{"weight", required_argument, NULL, OPT_WEIGHT},
		{"checkpoint", no_argument, NULL, OPT_CHECKPOINT},
		{"abandon", no_argument, NULL, OPT_ABANDON},
		{"slice", required_argument, NULL, OPT_SLICE},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int have_dtype = 0, have_layout = 0;
	int c;

	memset(a, 0, sizeof *a);
	at_writer_options_init(&a->opts);
	a->opts.model = "at-feed";
	a->opts.notes = "written by tests/at-feed";
	a->point_name = "layers.0.mlp.down_proj.in";
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DTYPE:
			a->dtype = parse_dtype(optarg);
			have_dtype = 1;
			break;
		case OPT_LAYOUT:
			if (strcmp(optarg, "tc") && strcmp(optarg, "bct"))
				die("--layout: '%s' is not tc or bct", optarg);
			a->bct = !strcmp(optarg, "bct");
			have_layout = 1;
			break;
		case OPT_BATCHES: a->batches = parse_int("batches", optarg, 1); break;
		case OPT_ROWS: a->rows = parse_int("rows", optarg, 1); break;
		case OPT_CHANNELS: a->channels = parse_int("channels", optarg, 1); break;
		case OPT_SPLIT: a->split_rows = parse_int("split", optarg, 1); break;
		case OPT_EVERY:
			a->opts.sample_policy = AT_SAMPLE_EVERY;
			a->opts.sample_n = parse_int("every", optarg, 1);
			break;
		case OPT_FIRST:
			a->opts.sample_policy = AT_SAMPLE_FIRST;
			a->opts.sample_n = parse_int("first", optarg, 1);
			break;
		case OPT_RESERVOIR:
			a->opts.sample_policy = AT_SAMPLE_RESERVOIR;
			a->opts.sample_n = parse_int("reservoir", optarg, 1);
			break;
		case OPT_SEED: {
			char *end;
			errno = 0;
			a->opts.sample_seed = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || *optarg == '-')
				die("--seed: '%s' is not an unsigned 64-bit integer", optarg);
			break;
		}
		case OPT_MAX_SAMPLES:
			a->opts.max_samples = parse_int("max-samples", optarg, 0);
			break;
		case OPT_SEQ_LEN: a->seq_len = parse_int("seq-len", optarg, 1); break;
		case OPT_EXTREMES:
			a->opts.extremes = (int32_t)parse_int("extremes", optarg, 0);
			break;
		case OPT_NO_HIST: a->opts.hist = 0; break;
		case OPT_POINT: a->point_name = optarg; break;
		case OPT_LAYER: a->layer = (int32_t)parse_int("layer", optarg, -1); break;
		case OPT_THREADS: a->opts.threads = (int)parse_int("threads", optarg, 0); break;
		case OPT_LEVEL:
			a->opts.compression_level = (int)parse_int("level", optarg, -131072);
			break;
		case OPT_WEIGHT:
			if (a->n_weights == MAX_WEIGHTS)
				die("--weight: at most %d weights", MAX_WEIGHTS);
			a->weights[a->n_weights++] = parse_weight(optarg);
			break;
		case OPT_SLICE: {
			long long rank, world, offset, full;
			char end;
			if (sscanf(optarg, "%lld/%lld:%lld:%lld%c", &rank, &world, &offset, &full, &end) != 4)
				die("--slice: '%s' is not RANK/WORLD:OFFSET:FULL", optarg);
			a->opts.rank = (int32_t)rank;
			a->opts.world_size = (int32_t)world;
			a->channel_offset = offset;
			a->full_channels = full;
			break;
		}
		case OPT_CHECKPOINT: a->checkpoint = 1; break;
		case OPT_ABANDON: a->abandon = a->checkpoint = 1; break;
		case 'o': a->out_path = optarg; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		default: fputs(usage_text, stderr); exit(1);
		}
	}
	if (!have_dtype || !have_layout || !a->batches || !a->rows || !a->channels || !a->out_path)
		die("--dtype, --layout, --batches, --rows, --channels and -o are required");
	if (optind != argc - 1)
		die("expected exactly one RAW input file");
	a->raw_path = argv[optind];
}

static int host_is_little_endian(void)
{
	const uint16_t one = 1;
	unsigned char first;
	memcpy(&first, &one, 1);
	return first == 1;
}

static void swap_bytes(unsigned char *p, size_t n_elems, size_t elem_size)
{
	for (size_t i = 0; i < n_elems; i++, p += elem_size)
		for (size_t b = 0; b < elem_size / 2; b++) {
			unsigned char t = p[b];
			p[b] = p[elem_size - 1 - b];
			p[elem_size - 1 - b] = t;
		}
}

/* The whole file, which must hold exactly n_elems little-endian elements. */
static void *read_raw(const char *path, size_t n_elems, size_t elem_size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("%s: %s", path, strerror(errno));
	size_t bytes = n_elems * elem_size;
	unsigned char *buf = malloc(bytes ? bytes : 1);
	if (!buf)
		die("%s: out of memory for %zu bytes", path, bytes);
	size_t got = fread(buf, 1, bytes, f);
	int extra = fgetc(f);
	if (ferror(f))
		die("%s: read error", path);
	fclose(f);
	if (got != bytes || extra != EOF)
		die("%s: expected exactly %zu bytes (%zu elements of %zu bytes)", path, bytes, n_elems,
		    elem_size);
	if (!host_is_little_endian())
		swap_bytes(buf, n_elems, elem_size);
	return buf;
}

static void add_tokens(struct at_writer *w, const struct feed_args *a, int64_t *token_base)
{
	int64_t n = a->batches * a->rows;
	int32_t *seq = malloc((size_t)n * sizeof *seq);
	int32_t *pos = malloc((size_t)n * sizeof *pos);
	int32_t *id = malloc((size_t)n * sizeof *id);
	struct at_error err = {0};
	if (!seq || !pos || !id)
		die("out of memory for %lld tokens", (long long)n);
	for (int64_t g = 0; g < n; g++) {
		seq[g] = (int32_t)(a->seq_len ? g / a->seq_len : g / a->rows);
		pos[g] = (int32_t)(a->seq_len ? g % a->seq_len : g % a->rows);
		id[g] = (int32_t)(g * 7 % TOKEN_ID_VOCAB);
	}
	if (at_writer_add_tokens(w, seq, pos, id, n, token_base, &err))
		die_at(&err);
	free(seq);
	free(pos);
	free(id);
}

static struct at_tensor tensor_view(const struct feed_args *a, const void *data)
{
	struct at_tensor t = {
		.data = data,
		.dtype = a->dtype,
		.batches = a->batches,
		.rows = a->rows,
		.channels = a->channels,
		.batch_stride = a->rows * a->channels,
		.row_stride = a->bct ? 1 : a->channels,
		.channel_stride = a->bct ? a->rows : 1,
	};
	return t;
}

static void observe_part(struct at_writer *w, int32_t point, const struct feed_args *a,
                         const struct at_tensor *t, int64_t token_base)
{
	struct at_error err = {0};
	if (at_writer_observe(w, point, t, token_base, &err))
		die_at(&err);
	if (a->checkpoint && at_writer_checkpoint(w, &err))
		die_at(&err);
}

/* One call, or per batch in calls of split_rows rows, each with its own token
 * base: the statistics must not depend on how the data was cut. */
static void observe(struct at_writer *w, int32_t point, const struct feed_args *a,
                    const void *data, int64_t token_base)
{
	struct at_tensor whole = tensor_view(a, data);
	size_t elem_size = a->dtype == AT_F32 ? 4 : 2;

	if (!a->split_rows) {
		observe_part(w, point, a, &whole, token_base);
		return;
	}
	for (int64_t b = 0; b < a->batches; b++) {
		for (int64_t r0 = 0; r0 < a->rows; r0 += a->split_rows) {
			struct at_tensor part = whole;
			int64_t offset = b * whole.batch_stride + r0 * whole.row_stride;
			part.data = (const unsigned char *)data + (size_t)offset * elem_size;
			part.batches = 1;
			part.rows = a->rows - r0 < a->split_rows ? a->rows - r0 : a->split_rows;
			observe_part(w, point, a, &part, token_base + b * a->rows + r0);
		}
	}
}

static void add_weight(struct at_writer *w, const struct weight_arg *wa)
{
	float *values = read_raw(wa->path, (size_t)(wa->rows * wa->cols), sizeof(float));
	struct at_tensor t = {
		.data = values,
		.dtype = AT_F32,
		.batches = 1,
		.rows = wa->rows,
		.channels = wa->cols,
		.batch_stride = wa->rows * wa->cols,
		.row_stride = wa->cols,
		.channel_stride = 1,
	};
	struct at_error err = {0};
	if (at_writer_add_weight(w, wa->module, "Linear", &t, &err))
		die_at(&err);
	free(values);
}

int main(int argc, char **argv)
{
	struct feed_args a;
	struct at_writer *w = NULL;
	struct at_error err = {0};
	int32_t point;
	int64_t token_base;

	parse_args(argc, argv, &a);
	size_t elem_size = a.dtype == AT_F32 ? 4 : 2;
	void *data = read_raw(a.raw_path, (size_t)(a.batches * a.rows * a.channels), elem_size);

	a.opts.source_dtype = a.dtype == AT_F32 ? "float32" : a.dtype == AT_F16 ? "float16" : "bfloat16";
	if (at_writer_create(&w, a.out_path, &a.opts, &err))
		die_at(&err);

	char module[300];
	snprintf(module, sizeof module, "model.layers.%d.mlp.down_proj", (int)a.layer);
	struct at_point_desc desc = {
		.name = a.point_name,
		.layer = a.layer,
		.component = "mlp",
		.site = "mlp.down_proj.in",
		.module = module,
		.module_class = "Linear",
		.direction = "in",
		.channels = a.channels,
		.channel_offset = a.channel_offset,
		.full_channels = a.full_channels,
		.replicated = a.full_channels > 0 && a.full_channels == a.channels,
	};
	if (at_writer_add_point(w, &desc, &point, &err)) {
		at_writer_abandon(w);
		die_at(&err);
	}
	/* weights first, as a capture adds them: with --abandon, what was added
	 * after the last checkpoint is not in the file (acttrace-format(5)) */
	for (int i = 0; i < a.n_weights; i++)
		add_weight(w, &a.weights[i]);
	add_tokens(w, &a, &token_base);
	observe(w, point, &a, data, token_base);
	if (a.abandon) {
		at_writer_abandon(w); /* the file keeps its last checkpoint, complete=0 */
		free(data);
		return 0;
	}
	if (at_writer_close(w, &err))
		die_at(&err);
	free(data);
	return 0;
}
