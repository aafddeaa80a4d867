/* bench-io.c: writer and reader throughput of sampled rows.  Writes one point
 * that samples every row of a synthetic float32 matrix (statistics included),
 * reads all samples back, and prints one TSV row:
 *   case threads mib write_gbps read_gbps ratio
 * Run by bench/bench-io.sh; see docs/BENCHMARKS.md. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "acttrace.h"

static const char usage_text[] =
	"usage: bench-io [--case realistic|random] [--mib N] [--channels C]\n"
	"                [--rows-per-call N] [--level N] [--threads N] [--no-header]\n"
	"realistic: normal values rounded to bf16 precision, per-channel scales and a few\n"
	"           outlier channels (activations captured from a bf16 model);\n"
	"random:    normal values with full float32 mantissas (worst case for zstd).\n"
	"The trace is written to $TMPDIR (default /tmp) and deleted.\n";

enum data_case { CASE_REALISTIC, CASE_RANDOM };

/* The temporary trace, removed at exit also when a step fails. */
static char trace_path[4096];

static void remove_trace(void)
{
	if (trace_path[0])
		unlink(trace_path);
}

struct bench_args {
	enum data_case data_case;
	int64_t mib;
	int64_t channels;
	int64_t rows_per_call;
	int level;
	int threads;
	int header;
};

static void die(const char *what, const struct at_error *err)
{
	fprintf(stderr, "bench-io: %s: %s\n", what, err ? err->message : strerror(errno));
	exit(1);
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64 (Steele, Lea and Flood 2014): small, fast, and good enough to
 * seed one stream per row so the data does not depend on the thread count. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double uniform_open(uint64_t *state)
{
	return ((double)(splitmix64(state) >> 11) + 0.5) * 0x1p-53;
}

/* Box-Muller; one normal per call is plenty for a benchmark's setup. */
static double normal(uint64_t *state)
{
	double u1 = uniform_open(state), u2 = uniform_open(state);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* float32 rounded to the nearest bfloat16 (ties to even), kept as float32. */
static float round_to_bf16(float x)
{
	uint32_t bits;
	memcpy(&bits, &x, sizeof bits);
	bits += 0x7fffu + ((bits >> 16) & 1u);
	bits &= 0xffff0000u;
	memcpy(&x, &bits, sizeof x);
	return x;
}

/* Per-channel means and scales like a transformer's residual stream: most
 * channels of order 1, a handful (about 1 in 700) 20-100x larger. */
static void channel_profile(int64_t channels, double *mean, double *scale)
{
	uint64_t state = 42;
	for (int64_t c = 0; c < channels; c++) {
		scale[c] = exp(0.5 * normal(&state));
		mean[c] = 0.1 * normal(&state);
		if (splitmix64(&state) % 700 == 0) {
			scale[c] *= 20.0 + 80.0 * uniform_open(&state);
			mean[c] = scale[c] * (uniform_open(&state) < 0.5 ? -1.0 : 1.0);
		}
	}
}

static void fill_data(float *data, int64_t rows, int64_t channels, enum data_case data_case)
{
	double *mean = malloc((size_t)channels * sizeof *mean);
	double *scale = malloc((size_t)channels * sizeof *scale);
	if (!mean || !scale)
		die("channel profile", NULL);
	channel_profile(channels, mean, scale);
#pragma omp parallel for schedule(static)
	for (int64_t r = 0; r < rows; r++) {
		uint64_t state = 0x5eed0000ull ^ (uint64_t)r * 0x2545f4914f6cdd1dull;
		float *row = data + r * channels;
		for (int64_t c = 0; c < channels; c++) {
			float x = (float)(mean[c] + scale[c] * normal(&state));
			row[c] = data_case == CASE_REALISTIC ? round_to_bf16(x) : x;
		}
	}
	free(mean);
	free(scale);
}

static int64_t parse_positive(const char *option, const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < 1) {
		fprintf(stderr, "bench-io: --%s: '%s' is not a positive integer\n", option, s);
		exit(2);
	}
	return (int64_t)v;
}

static void parse_args(int argc, char **argv, struct bench_args *a)
{
	static const struct option longopts[] = {
		{"case", required_argument, NULL, 'c'},
		{"mib", required_argument, NULL, 'm'},
		{"channels", required_argument, NULL, 'C'},
		{"rows-per-call", required_argument, NULL, 'r'},
		{"level", required_argument, NULL, 'l'},
		{"threads", required_argument, NULL, 't'},
		{"no-header", no_argument, NULL, 'H'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	*a = (struct bench_args){CASE_REALISTIC, 1024, 4096, 2048, 3, 0, 1};
	while ((c = getopt_long(argc, argv, "Hh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (!strcmp(optarg, "realistic"))
				a->data_case = CASE_REALISTIC;
			else if (!strcmp(optarg, "random"))
				a->data_case = CASE_RANDOM;
			else {
				fprintf(stderr, "bench-io: --case: '%s' is not realistic or random\n", optarg);
				exit(2);
			}
			break;
		case 'm': a->mib = parse_positive("mib", optarg); break;
		case 'C': a->channels = parse_positive("channels", optarg); break;
		case 'r': a->rows_per_call = parse_positive("rows-per-call", optarg); break;
		case 'l': a->level = (int)parse_positive("level", optarg); break;
		case 't': a->threads = (int)parse_positive("threads", optarg); break;
		case 'H': a->header = 0; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		default: fputs(usage_text, stderr); exit(2);
		}
	}
	if (optind != argc) {
		fputs(usage_text, stderr);
		exit(2);
	}
}

/* Observe all rows in calls of rows_per_call, then close; returns seconds,
 * and in *observe_s the part spent inside at_writer_observe (what a model's
 * hooks wait for; the rest is close, which waits for the sample writer). */
static double write_trace(const char *path, const struct bench_args *a, const float *data,
                          int64_t rows, double *observe_s)
{
	struct at_writer_options opts;
	struct at_writer *w;
	struct at_error err = {0};
	int32_t point;
	int64_t token_base;

	at_writer_options_init(&opts);
	opts.model = "bench-io";
	opts.source_dtype = a->data_case == CASE_REALISTIC ? "bfloat16" : "float32";
	opts.sample_policy = AT_SAMPLE_EVERY;
	opts.sample_n = 1;
	opts.max_samples = rows;
	opts.compression_level = a->level;
	opts.threads = a->threads;
	if (at_writer_create(&w, path, &opts, &err))
		die("create", &err);
	struct at_point_desc desc = {"layers.0.mlp.down_proj.in", 0, "mlp", "mlp.down_proj.in",
	                             "model.layers.0.mlp.down_proj", "Linear", "in", a->channels};
	if (at_writer_add_point(w, &desc, &point, &err))
		die("add point", &err);

	int32_t *seq = malloc((size_t)rows * sizeof *seq);
	int32_t *pos = malloc((size_t)rows * sizeof *pos);
	int32_t *id = malloc((size_t)rows * sizeof *id);
	if (!seq || !pos || !id)
		die("tokens", NULL);
	for (int64_t r = 0; r < rows; r++) {
		seq[r] = (int32_t)(r / 2048);
		pos[r] = (int32_t)(r % 2048);
		id[r] = (int32_t)(r * 7 % 50257);
	}
	if (at_writer_add_tokens(w, seq, pos, id, rows, &token_base, &err))
		die("add tokens", &err);
	free(seq);
	free(pos);
	free(id);

	double start = now_seconds();
	for (int64_t r0 = 0; r0 < rows; r0 += a->rows_per_call) {
		int64_t n = rows - r0 < a->rows_per_call ? rows - r0 : a->rows_per_call;
		struct at_tensor t = {data + r0 * a->channels, AT_F32, 1, n, a->channels,
		                      n * a->channels, a->channels, 1};
		if (at_writer_observe(w, point, &t, token_base + r0, &err))
			die("observe", &err);
	}
	*observe_s = now_seconds() - start;
	if (at_writer_close(w, &err))
		die("close", &err);
	return now_seconds() - start;
}

/* Read every sample in blocks of whole chunks (about 64 MiB), checking each
 * block against the input outside the timed region; returns seconds. */
static double read_trace(const char *path, const struct bench_args *a, const float *data,
                         int64_t rows)
{
	struct at_reader *r;
	struct at_error err = {0};
	double seconds = 0;

	double start = now_seconds();
	if (at_reader_open(&r, path, &err))
		die("open", &err);
	const struct at_point_info *info = at_reader_point(r, 0);
	seconds += now_seconds() - start;
	if (!info || info->samples != rows) {
		fprintf(stderr, "bench-io: %s: expected %lld samples, found %lld\n", path,
		        (long long)rows, info ? (long long)info->samples : -1LL);
		exit(1);
	}
	int64_t chunk_rows = info->sample_chunk_rows > 0 ? info->sample_chunk_rows : 1;
	int64_t row_bytes = a->channels * (int64_t)sizeof(float);
	int64_t block_rows = (64 << 20) / (chunk_rows * row_bytes) * chunk_rows;
	if (block_rows < chunk_rows)
		block_rows = chunk_rows;
	float *block = malloc((size_t)(block_rows * row_bytes));
	if (!block)
		die("read buffer", NULL);

	for (int64_t first = 0; first < rows; first += block_rows) {
		int64_t n = rows - first < block_rows ? rows - first : block_rows;
		start = now_seconds();
		if (at_reader_read_samples(r, 0, first, n, block, NULL, &err))
			die("read samples", &err);
		seconds += now_seconds() - start;
		if (memcmp(block, data + first * a->channels, (size_t)(n * row_bytes))) {
			fprintf(stderr, "bench-io: %s: samples %lld..%lld differ from the input\n", path,
			        (long long)first, (long long)(first + n - 1));
			exit(1);
		}
	}
	start = now_seconds();
	at_reader_close(r);
	seconds += now_seconds() - start;
	free(block);
	return seconds;
}

int main(int argc, char **argv)
{
	struct bench_args a;
	parse_args(argc, argv, &a);

	int64_t row_bytes = a.channels * (int64_t)sizeof(float);
	int64_t rows = (a.mib << 20) / row_bytes;
	if (rows < 1)
		rows = 1;
	double raw_bytes = (double)rows * (double)row_bytes;
	float *data = malloc((size_t)(rows * row_bytes));
	if (!data)
		die("input matrix", NULL);
	fill_data(data, rows, a.channels, a.data_case);

	const char *dir = getenv("TMPDIR");
	char *path = trace_path;
	snprintf(path, sizeof trace_path, "%s/bench-io.XXXXXX.h5", dir && *dir ? dir : "/tmp");
	int fd = mkstemps(path, 3);
	if (fd < 0) {
		path[0] = 0;
		die("cannot create a trace in $TMPDIR", NULL);
	}
	close(fd);
	atexit(remove_trace);

	double observe_s;
	double write_s = write_trace(path, &a, data, rows, &observe_s);
	struct stat st;
	if (stat(path, &st))
		die(path, NULL);
	double read_s = read_trace(path, &a, data, rows);
	free(data);

	int threads = a.threads;
#ifdef _OPENMP
	if (!threads)
		threads = omp_get_max_threads();
#endif
	if (!threads)
		threads = 1;
	if (a.header)
		printf("case\tthreads\tmib\twrite_gbps\tread_gbps\tratio\tobserve_gbps\n");
	printf("%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\n",
	       a.data_case == CASE_REALISTIC ? "realistic" : "random", threads, raw_bytes / (1 << 20),
	       raw_bytes / write_s * 1e-9, raw_bytes / read_s * 1e-9, raw_bytes / (double)st.st_size,
	       raw_bytes / observe_s * 1e-9);
	return 0;
}
