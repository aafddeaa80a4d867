/* trace-synth: write a synthetic trace with a real architecture's recording
 * points and planted outlier channels, plus the list of what was planted.
 * The data model is specified in trace-synth(1), section DATA MODEL. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acttrace.h"
#include "cli.h"
#include "synth-arch.h"

/* ---------------------------------------------------------------- counter-based RNG
 * Every random number is a pure function of (seed, what it is for), so the
 * values do not depend on the order they are drawn in or on the thread count. */

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t hash4(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
	return mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}

/* Uniform in [0, 1) from the top 53 bits. */
static double unit_open1(uint64_t h)
{
	return (double)(h >> 11) * 0x1.0p-53;
}

/* Marsaglia's polar method: two independent N(0,1) from the hashes h+0,
 * h+1, h+2, ... taken in pairs until a point falls inside the unit disc
 * (78.5% of first tries).  Twice as fast as Box-Muller's sin/cos. */
static void normal_pair(uint64_t h, double *z0, double *z1)
{
	for (uint64_t k = 0;; k += 2) {
		double x = 2.0 * unit_open1(mix64(h + k)) - 1.0;
		double y = 2.0 * unit_open1(mix64(h + k + 1)) - 1.0;
		double s = x * x + y * y;
		if (s > 0.0 && s < 1.0) {
			double f = sqrt(-2.0 * log(s) / s);
			*z0 = x * f;
			*z1 = y * f;
			return;
		}
	}
}

static double normal_at(uint64_t h)
{
	double z0, z1;
	normal_pair(h, &z0, &z1);
	return z0;
}

/* Streams of per-point and per-model constants; token indices (< 2^62) use
 * the same slot for the per-token noise, so these sit above them. */
#define STREAM(n) ((1ull << 63) | (uint64_t)(n))
enum {
	S_MU = 1,
	S_SIGMA,
	S_COUNT,
	S_CHANNEL,
	S_SCALE,
	S_SIGN,
	S_MASSIVE_CHANNEL,
	S_MASSIVE_SIZE,
	S_POOL,
	S_GAMMA,
	S_TOKEN_ID
};
#define MODEL_KEY 0x6d6f64656cull /* "model": constants that belong to no point */

/* FNV-1a: a point's key is its name, so adding a point changes no other point. */
static uint64_t name_key(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
	return h;
}

/* ---------------------------------------------------------------- data model
 * Constants documented in trace-synth(1), DATA MODEL; keep the two in step. */

#define MU_SPREAD 0.1        /* mu_c ~ N(0, MU_SPREAD^2) */
#define LOG_SIGMA_SPREAD 0.2 /* sigma_c = exp(N(0, LOG_SIGMA_SPREAD^2)) */
#define PLANTED_SPREAD 0.2   /* a planted channel's sigma_c is scaled by this */
#define SCALE_FIRST 8.0      /* planted scale band at the first layer ... */
#define SCALE_LAST 24.0      /* ... and at the last; a point's scales lie in [b, 1.5 b) */
#define MASSIVE_MIN 800.0    /* massive activation magnitudes in [800, 1600) */
#define MASSIVE_SPAN 800.0
#define MIN_PLANT_WIDTH 64   /* narrower points get no planted channel: k = 6 cannot
                                separate one outlier among fewer than ~38 channels */
#define PLANT_CAP_DIV 256    /* at most max(1, C / 256) planted channels per point */

/* Planted outlier channels per channel at the first layer, by component: MLP
 * most, attention fewest, as in the outlier study's Table 4.1. */
static double base_rate(const char *component)
{
	static const struct {
		const char *component;
		double rate;
	} rates[] = {
		{"mlp", 0.0012},       {"recurrent", 0.0010}, {"ssm", 0.0010},
		{"norm", 0.0008},      {"layer", 0.0008},     {"attention", 0.0008},
		{"embedding", 0.0005},
	};
	for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++)
		if (strcmp(rates[i].component, component) == 0)
			return rates[i].rate;
	return 0.0005;
}

struct planted {
	int64_t channel;
	double scale;  /* planted_scale: mean shift in base-std units, or massive magnitude */
	int sign;      /* +1 or -1 */
	int massive;   /* added at pos 0 only */
};

struct model_plan {
	int n_massive;
	int64_t massive_channel[2];
	double massive_size[2];
	int massive_first, massive_last; /* layers whose layer.out carries them */
	int n_pool;
	int64_t *pool;                   /* residual-stream outlier channels */
};

struct point_plan {
	uint64_t key;
	struct planted *planted; /* sorted by channel */
	int n_planted;
};

/* Scales are rounded to 1/100 so that the truth file states them exactly. */
static double round_cents(double x)
{
	return floor(x * 100.0 + 0.5) / 100.0;
}

static int contains(const int64_t *list, int n, int64_t v)
{
	for (int i = 0; i < n; i++)
		if (list[i] == v)
			return 1;
	return 0;
}

static int already_planted(const struct planted *planted, int n, int64_t channel)
{
	for (int i = 0; i < n; i++)
		if (planted[i].channel == channel)
			return 1;
	return 0;
}

static int is_residual(const struct synth_arch *a, const struct synth_point *p)
{
	const char *comp = p->site->component;
	return p->site->channels == a->hidden &&
	       (!strcmp(comp, "layer") || !strcmp(comp, "norm") || !strcmp(comp, "embedding"));
}

static int carries_massive(const struct model_plan *m, const struct synth_point *p)
{
	return p->layer >= m->massive_first && p->layer <= m->massive_last &&
	       !strcmp(p->site->site, "layer.out");
}

static int plan_model(const struct synth_arch *a, uint64_t seed, struct model_plan *m)
{
	int32_t L = a->layers;
	memset(m, 0, sizeof *m);
	m->n_massive = a->hidden >= 256 ? 2 : 1;
	m->massive_first = L / 4 > 1 ? L / 4 : 1;
	m->massive_last = L - 2 > 1 ? L - 2 : 1;
	for (int j = 0, attempt = 0; j < m->n_massive; attempt++) {
		int64_t c = (int64_t)(hash4(seed, MODEL_KEY, STREAM(S_MASSIVE_CHANNEL), (uint64_t)attempt) %
		                      (uint64_t)a->hidden);
		if (contains(m->massive_channel, j, c))
			continue;
		double u = unit_open1(hash4(seed, MODEL_KEY, STREAM(S_MASSIVE_SIZE), (uint64_t)j));
		m->massive_channel[j] = c;
		m->massive_size[j] = floor(MASSIVE_MIN + MASSIVE_SPAN * u);
		j++;
	}
	m->n_pool = (int)(a->hidden / 128 > 4 ? a->hidden / 128 : 4);
	m->pool = malloc((size_t)m->n_pool * sizeof *m->pool);
	if (!m->pool)
		return -1;
	for (int j = 0, attempt = 0; j < m->n_pool; attempt++) {
		int64_t c = (int64_t)(hash4(seed, MODEL_KEY, STREAM(S_POOL), (uint64_t)attempt) %
		                      (uint64_t)a->hidden);
		if (contains(m->pool, j, c) || contains(m->massive_channel, m->n_massive, c))
			continue;
		m->pool[j++] = c;
	}
	return 0;
}

/* How many channels to plant at a point: C x rate x depth factor, the depth
 * factor rising from 1 at the first layer to 2 at the last and doubled again
 * there (the last-layer spike), rounded stochastically, capped. */
static int planted_count(const struct synth_arch *a, const struct synth_point *p,
                         uint64_t seed, uint64_t key)
{
	int64_t C = p->site->channels;
	if (C < MIN_PLANT_WIDTH)
		return 0;
	int32_t last = a->layers - 1;
	double depth = last > 0 ? (double)p->depth / last : 1.0;
	double expected = (double)C * base_rate(p->site->component) * (1.0 + depth);
	if (p->depth == last)
		expected *= 2.0;
	double u = unit_open1(hash4(seed, key, STREAM(S_COUNT), 0));
	int64_t n = (int64_t)floor(expected + u);
	if (p->depth == last && n < 1)
		n = 1;
	int64_t cap = C / PLANT_CAP_DIV > 1 ? C / PLANT_CAP_DIV : 1;
	return (int)(n < cap ? n : cap);
}

static int by_channel(const void *x, const void *y)
{
	const struct planted *a = x, *b = y;
	return (a->channel > b->channel) - (a->channel < b->channel);
}

static int plan_point(const struct synth_arch *a, const struct model_plan *m,
                      const struct synth_point *p, uint64_t seed, struct point_plan *pp)
{
	pp->key = name_key(p->name);
	pp->n_planted = 0;
	pp->planted = NULL;
	int massive = carries_massive(m, p);
	int n = massive ? m->n_massive : planted_count(a, p, seed, pp->key);
	if (n == 0)
		return 0;
	pp->planted = calloc((size_t)n, sizeof *pp->planted);
	if (!pp->planted)
		return -1;
	if (massive) {
		for (int j = 0; j < n; j++)
			pp->planted[j] = (struct planted){m->massive_channel[j], m->massive_size[j],
			                                  j % 2 ? -1 : 1, 1};
	} else {
		int32_t last = a->layers - 1;
		double depth = last > 0 ? (double)p->depth / last : 1.0;
		double band = SCALE_FIRST + (SCALE_LAST - SCALE_FIRST) * depth;
		int residual = is_residual(a, p);
		if (residual && n > m->n_pool)
			n = m->n_pool;
		for (int j = 0, attempt = 0; j < n; attempt++) {
			uint64_t h = hash4(seed, pp->key, STREAM(S_CHANNEL), (uint64_t)attempt);
			int64_t c = residual ? m->pool[h % (uint64_t)m->n_pool]
			                     : (int64_t)(h % (uint64_t)p->site->channels);
			if (already_planted(pp->planted, j, c))
				continue;
			double u = unit_open1(hash4(seed, pp->key, STREAM(S_SCALE), (uint64_t)c));
			/* residual channels keep their sign through the stack, as in real models */
			uint64_t sign_key = residual ? MODEL_KEY : pp->key;
			int sign = (hash4(seed, sign_key, STREAM(S_SIGN), (uint64_t)c) >> 63) ? -1 : 1;
			pp->planted[j] = (struct planted){c, round_cents(band * (1.0 + 0.5 * u)), sign, 0};
			j++;
		}
	}
	pp->n_planted = n;
	qsort(pp->planted, (size_t)n, sizeof *pp->planted, by_channel);
	return 0;
}

/* Per-channel constants of a point: mu_c with the planted shifts, sigma_c. */
static void channel_constants(const struct synth_point *p, const struct point_plan *pp,
                              uint64_t seed, double *mu, double *sigma)
{
	int64_t C = p->site->channels;
	for (int64_t c = 0; c < C; c++) {
		mu[c] = MU_SPREAD * normal_at(hash4(seed, pp->key, STREAM(S_MU), (uint64_t)c));
		sigma[c] = exp(LOG_SIGMA_SPREAD *
		               normal_at(hash4(seed, pp->key, STREAM(S_SIGMA), (uint64_t)c)));
	}
	/* Outlier channels are shifted and steady: their values keep a similar
	 * magnitude (the channel-wise outliers of the outlier-distribution
	 * study, whose criterion asks std_c < 1/3). */
	for (int j = 0; j < pp->n_planted; j++) {
		if (pp->planted[j].massive)
			continue;
		mu[pp->planted[j].channel] += pp->planted[j].sign * pp->planted[j].scale;
		sigma[pp->planted[j].channel] *= PLANTED_SPREAD;
	}
}

/* ---------------------------------------------------------------- generation */

/* Norm outputs are fed as bfloat16, to exercise the 16-bit path of the
 * writer the way a bf16 model would; see DATA MODEL in trace-synth(1). */
static int fed_as_bf16(const struct synth_point *p)
{
	return !strcmp(p->site->component, "norm") && !strcmp(p->site->direction, "out");
}

/* float32 -> bfloat16, round to nearest even (values are finite here). */
static uint16_t to_bf16(float f)
{
	uint32_t bits;
	memcpy(&bits, &f, sizeof bits);
	bits += 0x7fffu + ((bits >> 16) & 1u);
	return (uint16_t)(bits >> 16);
}

struct batch {
	int64_t rows;       /* capacity */
	float *values;      /* [rows][C] */
	float *transposed;  /* [C][rows] for conv layouts */
	uint16_t *bf16;     /* [rows][C] */
};

/* Rows [first, first + n) of a point into b->values, [n][C]. */
static void generate_rows(const struct synth_point *p, const struct point_plan *pp,
                          uint64_t seed, const double *mu, const double *sigma, int64_t first,
                          int64_t n, int64_t seq_len, float *values)
{
	int64_t C = p->site->channels;
	uint64_t point_key = mix64(mix64(seed) ^ pp->key);
#pragma omp parallel for schedule(static)
	for (int64_t r = 0; r < n; r++) {
		int64_t token = first + r;
		uint64_t row_key = mix64(point_key ^ (uint64_t)token);
		float *row = values + r * C;
		for (int64_t c = 0; c < C; c += 2) {
			double z0, z1;
			normal_pair(mix64(row_key ^ (uint64_t)(c / 2)), &z0, &z1);
			row[c] = (float)(mu[c] + sigma[c] * z0);
			if (c + 1 < C)
				row[c + 1] = (float)(mu[c + 1] + sigma[c + 1] * z1);
		}
		if (token % seq_len != 0)
			continue;
		for (int j = 0; j < pp->n_planted; j++) {
			const struct planted *pl = &pp->planted[j];
			if (pl->massive)
				row[pl->channel] = (float)((double)row[pl->channel] + pl->sign * pl->scale);
		}
	}
}

/* Hand rows [first, first + n) to the writer in the point's dtype and layout. */
static int feed_rows(struct at_writer *w, int32_t id, const struct synth_point *p,
                     struct batch *b, int64_t first, int64_t n, int64_t offset, int64_t width,
                     struct at_error *err)
{
	int64_t C = p->site->channels;
	/* channels [offset, offset + width) of the rows: a strided view */
	struct at_tensor t = {.data = b->values + offset, .dtype = AT_F32, .batches = 1,
	                      .rows = n, .channels = width, .batch_stride = n * C,
	                      .row_stride = C, .channel_stride = 1};
	if (p->site->layout == SYNTH_CONV) {
#pragma omp parallel for schedule(static)
		for (int64_t c = 0; c < C; c++)
			for (int64_t r = 0; r < n; r++)
				b->transposed[c * n + r] = b->values[r * C + c];
		t.data = b->transposed + offset * n;
		t.row_stride = 1;
		t.channel_stride = n;
	} else if (fed_as_bf16(p)) {
		int64_t total = n * C;
#pragma omp parallel for schedule(static)
		for (int64_t i = 0; i < total; i++)
			b->bf16[i] = to_bf16(b->values[i]);
		t.data = b->bf16 + offset;
		t.dtype = AT_BF16;
	}
	return at_writer_observe(w, id, &t, first, err);
}

/* ---------------------------------------------------------------- the tool */

struct options {
	const struct synth_arch *arch;
	int64_t tokens;
	uint64_t seed;
	int64_t samples;
	int64_t seq_len;
	int64_t batch;
	const char *output;
	const char *truth;
	int list_points;
	const char *points_glob; /* --points GLOB: only the points whose name matches */
	int64_t shard, shards; /* --shard I/N: this run writes shard I of N (0 <= I < N) */
	int64_t tp_rank, tp_size; /* --tp-slice I/N: rank I's channel slices of N */
};

/* Under --tp-slice, norms, the residual stream, embeddings and the head are
 * whole on every rank and recorded by rank 0 alone (as under tensor
 * parallelism), and so is a point narrower than the ranks; every other point
 * is cut into N slices of floor(C i / N) to floor(C (i+1) / N), uneven when N
 * does not divide C, as a test wants. */
static int tp_replicated(const struct options *o, const struct synth_point *p)
{
	static const char *const whole[] = {"norm", "layer", "embedding", "head"};
	for (size_t k = 0; k < sizeof whole / sizeof whole[0]; k++)
		if (!strcmp(p->site->component, whole[k]))
			return 1;
	return p->site->channels < o->tp_size;
}

/* The channels [*offset, *offset + *width) this run records of a point;
 * 0 when it records none (a replicated point on a rank other than 0). */
static int64_t tp_slice(const struct options *o, const struct synth_point *p, int64_t *offset)
{
	int64_t C = p->site->channels;
	*offset = 0;
	if (o->tp_size == 1)
		return C;
	if (tp_replicated(o, p))
		return o->tp_rank == 0 ? C : 0;
	*offset = C * o->tp_rank / o->tp_size;
	return C * (o->tp_rank + 1) / o->tp_size - *offset;
}

/* Tokens [first, end) of the stream that --shard I/N writes: shard I's
 * contiguous share of whole sequences, sequence s going to shard
 * floor(s N / S) of S sequences, so that the shards' concatenation is the
 * unsharded stream. */
static void shard_tokens(const struct options *o, int64_t *first, int64_t *end)
{
	int64_t sequences = (o->tokens + o->seq_len - 1) / o->seq_len;
	int64_t seq0 = sequences * o->shard / o->shards;
	int64_t seq1 = sequences * (o->shard + 1) / o->shards;
	*first = seq0 * o->seq_len < o->tokens ? seq0 * o->seq_len : o->tokens;
	*end = seq1 * o->seq_len < o->tokens ? seq1 * o->seq_len : o->tokens;
}

_Noreturn static void usage(void)
{
	printf("Usage: %s --arch ARCH -o FILE [OPTION]...\n"
	       "Write a synthetic activation trace with ARCH's recording points and planted\n"
	       "outlier channels, and optionally the list of what was planted.\n"
	       "\n"
	       "  --arch ARCH      tiny, llama-1b, mamba-130m or recurrent-gemma-2b\n"
	       "  -o, --output FILE  the trace to write (truncated)\n"
	       "  --tokens N       tokens to synthesize (default 256)\n"
	       "  --seed S         random seed (default 0); same seed, same statistics\n"
	       "  --seq-len T      tokens per sequence (default 128)\n"
	       "  --batch N        rows per observe call (default 64)\n"
	       "  --samples N      keep about N sampled rows per point (default 0: none)\n"
	       "  --shard I/N      write only shard I (0 to N-1) of the N shards the token\n"
	       "                   stream is cut into, by whole sequences; trace-merge of\n"
	       "                   all N shards equals the unsharded trace\n"
	       "  --tp-slice I/N   write rank I (0 to N-1) of a tensor-parallel capture over\n"
	       "                   N ranks: slices of the channels, whole points on rank 0\n"
	       "                   only; trace-merge of all N ranks equals the whole trace\n"
	       "  --points GLOB    only the recording points whose name matches GLOB\n"
	       "                   (fnmatch(3), e.g. 'layers.0.mlp.*'): a small trace of\n"
	       "                   a large architecture\n"
	       "  --truth FILE     write the planted channels as TSV (point, channel,\n"
	       "                   planted_scale); '-' for standard output\n"
	       "  -q, --quiet      no progress\n"
	       "  -h, --help       show this help and exit\n"
	       "      --version    show the version and exit\n"
	       "\n"
	       "The data model and the planted layout are described in trace-synth(1).\n",
	       cli_prog);
	exit(CLI_EXIT_OK);
}

static int64_t parse_count(const char *opt, const char *s, int64_t min, int64_t max)
{
	int64_t v;
	if (cli_parse_int64(s, min, max, &v) != 0)
		cli_usage_error("%s: '%s' is not an integer in [%lld, %lld]", opt, s, (long long)min,
		                (long long)max);
	return v;
}

/* "I/N" with 0 <= I < N. */
static void parse_part(const char *opt, const char *s, int64_t *i, int64_t *n)
{
	char index[32];
	const char *slash = strchr(s, '/');
	if (slash && (size_t)(slash - s) < sizeof index) {
		snprintf(index, sizeof index, "%.*s", (int)(slash - s), s);
		if (cli_parse_int64(slash + 1, 1, INT32_MAX, n) == 0 &&
		    cli_parse_int64(index, 0, *n - 1, i) == 0)
			return;
	}
	cli_usage_error("%s wants I/N with 0 <= I < N, not '%s'", opt, s);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_ARCH = 256, OPT_TOKENS, OPT_SEED, OPT_SAMPLES, OPT_SEQ_LEN, OPT_BATCH,
	       OPT_TRUTH, OPT_VERSION, OPT_LIST_POINTS, OPT_SHARD, OPT_TP_SLICE,
	       OPT_POINTS };
	static const struct option longopts[] = {
		{"arch", required_argument, NULL, OPT_ARCH},
		{"tokens", required_argument, NULL, OPT_TOKENS},
		{"seed", required_argument, NULL, OPT_SEED},
		{"samples", required_argument, NULL, OPT_SAMPLES},
		{"seq-len", required_argument, NULL, OPT_SEQ_LEN},
		{"batch", required_argument, NULL, OPT_BATCH},
		{"output", required_argument, NULL, 'o'},
		{"truth", required_argument, NULL, OPT_TRUTH},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{"list-points", no_argument, NULL, OPT_LIST_POINTS},
		{"shard", required_argument, NULL, OPT_SHARD},
		{"tp-slice", required_argument, NULL, OPT_TP_SLICE},
		{"points", required_argument, NULL, OPT_POINTS},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){.tokens = 256, .seq_len = 128, .batch = 64, .shard = 0, .shards = 1,
	                      .tp_rank = 0, .tp_size = 1};
	const char *arch = NULL;
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_ARCH: arch = optarg; break;
		case OPT_TOKENS: o->tokens = parse_count("--tokens", optarg, 1, INT32_MAX); break;
		case OPT_SEED: o->seed = (uint64_t)parse_count("--seed", optarg, 0, INT64_MAX); break;
		case OPT_SAMPLES: o->samples = parse_count("--samples", optarg, 0, INT32_MAX); break;
		case OPT_SEQ_LEN: o->seq_len = parse_count("--seq-len", optarg, 1, INT32_MAX); break;
		case OPT_BATCH: o->batch = parse_count("--batch", optarg, 1, 1 << 20); break;
		case 'o': o->output = optarg; break;
		case OPT_TRUTH: o->truth = optarg; break;
		case 'q': cli_quiet = 1; break;
		case 'h': usage();
		case OPT_VERSION: cli_version();
		case OPT_LIST_POINTS: o->list_points = 1; break;
		case OPT_SHARD: parse_part("--shard", optarg, &o->shard, &o->shards); break;
		case OPT_TP_SLICE: parse_part("--tp-slice", optarg, &o->tp_rank, &o->tp_size); break;
		case OPT_POINTS: o->points_glob = optarg; break;
		case ':': cli_usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: /* optopt: a short option, or the value of a long one given an argument */
			if (!optopt)
				cli_usage_error("unknown option '%s'", argv[optind - 1]);
			if (optopt >= 256 || !strncmp(argv[optind - 1], "--", 2))
				cli_usage_error("option '%.*s' takes no argument",
				                (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
			cli_usage_error("unknown option '-%c'", optopt);
		}
	}
	if (optind < argc)
		cli_usage_error("unexpected argument '%s'", argv[optind]);
	if (!arch)
		cli_usage_error("--arch is required (%s)", synth_arch_names());
	o->arch = synth_arch_find(arch);
	if (!o->arch)
		cli_usage_error("unknown architecture '%s' (%s)", arch, synth_arch_names());
	if (!o->list_points && !o->output)
		cli_usage_error("-o FILE is required");
	if (o->shards > 1 && o->tp_size > 1)
		cli_usage_error("--shard and --tp-slice do not go together");
}

static void list_points(const struct synth_arch *a, const struct synth_point *points, size_t n)
{
	static const char *const columns[] = {"point", "layer", "component", "site", "direction",
	                                      "channels"};
	struct cli_table t;
	cli_table_begin(&t, stdout, CLI_TSV, 1, columns, 6);
	for (size_t i = 0; i < n; i++) {
		const struct synth_point *p = &points[i];
		cli_table_str(&t, p->name);
		cli_table_int(&t, p->layer);
		cli_table_str(&t, p->site->component);
		cli_table_str(&t, p->site->site);
		cli_table_str(&t, p->site->direction);
		cli_table_int(&t, p->site->channels);
		cli_table_end_row(&t);
	}
	(void)a;
	cli_table_end(&t);
}

static void write_truth(FILE *out, const char *path, const struct synth_point *points,
                        const struct point_plan *plans, size_t n)
{
	fputs("point\tchannel\tplanted_scale\n", out);
	for (size_t i = 0; i < n; i++)
		for (int j = 0; j < plans[i].n_planted; j++)
			fprintf(out, "%s\t%lld\t%.2f\n", points[i].name,
			        (long long)plans[i].planted[j].channel, plans[i].planted[j].scale);
	if (fflush(out) != 0 || ferror(out))
		cli_fail(path, "write error: %s", strerror(errno));
}

/* The synthetic token stream: sequences of seq_len tokens, a BOS id at pos 0;
 * a shard's rows carry the numbers of the whole stream. */
static int add_tokens(struct at_writer *w, const struct options *o, struct at_error *err)
{
	int64_t first, end;
	shard_tokens(o, &first, &end);
	int64_t n = end - first;
	int32_t *seq = malloc((size_t)(n ? n : 1) * sizeof *seq);
	int32_t *pos = malloc((size_t)(n ? n : 1) * sizeof *pos);
	int32_t *id = malloc((size_t)(n ? n : 1) * sizeof *id);
	int rc = AT_ENOMEM;
	if (seq && pos && id) {
		uint64_t vocab = (uint64_t)o->arch->vocab;
		for (int64_t i = 0; i < n; i++) {
			int64_t t = first + i;
			seq[i] = (int32_t)(t / o->seq_len);
			pos[i] = (int32_t)(t % o->seq_len);
			id[i] = pos[i] == 0 ? 1
			                    : (int32_t)(2 + hash4(o->seed, MODEL_KEY, STREAM(S_TOKEN_ID),
			                                          (uint64_t)t) % (vocab - 2));
		}
		int64_t base;
		rc = at_writer_add_tokens(w, seq, pos, id, n, &base, err);
	} else if (err) {
		snprintf(err->message, sizeof err->message, "out of memory for %lld tokens",
		         (long long)n);
		err->code = AT_ENOMEM;
	}
	free(seq);
	free(pos);
	free(id);
	return rc;
}

/* Norm gammas: 1 + N(0, 0.05^2), plus planted_scale / 4 at the channels
 * planted at the norm's output, as paper 001 finds outlier channels where
 * the rescaling gamma is large. */
static int add_norm_weights(struct at_writer *w, const struct options *o,
                            const struct synth_point *points, const struct point_plan *plans,
                            size_t n, uint64_t seed, struct at_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const struct synth_point *p = &points[i];
		if (!fed_as_bf16(p)) /* norm outputs: one per norm module */
			continue;
		if (o->tp_rank != 0) /* whole on every rank: rank 0 records them */
			continue;
		int64_t C = p->site->channels;
		float *gamma = malloc((size_t)C * sizeof *gamma);
		if (!gamma) {
			snprintf(err->message, sizeof err->message, "out of memory");
			return err->code = AT_ENOMEM;
		}
		uint64_t key = name_key(p->module);
		for (int64_t c = 0; c < C; c++)
			gamma[c] = (float)(1.0 + 0.05 * normal_at(hash4(seed, key, STREAM(S_GAMMA),
			                                                 (uint64_t)c)));
		for (int j = 0; j < plans[i].n_planted; j++)
			gamma[plans[i].planted[j].channel] += (float)(plans[i].planted[j].scale / 4.0);
		struct at_tensor t = {.data = gamma, .dtype = AT_F32, .batches = 1, .rows = 1,
		                      .channels = C, .batch_stride = C, .row_stride = C,
		                      .channel_stride = 1};
		int rc = at_writer_add_weight(w, p->module, p->site->module_class, &t, err);
		free(gamma);
		if (rc != AT_OK)
			return rc;
	}
	return AT_OK;
}

static int feed_point(struct at_writer *w, int32_t id, const struct synth_point *p,
                      const struct point_plan *pp, const struct options *o, struct batch *b,
                      double *mu, double *sigma, struct at_error *err)
{
	int64_t shard_first, shard_end, offset;
	int64_t width = tp_slice(o, p, &offset);
	shard_tokens(o, &shard_first, &shard_end);
	channel_constants(p, pp, o->seed, mu, sigma);
	/* rows are drawn by their token in the whole stream, and observed as the
	 * rows of this shard's /tokens */
	for (int64_t first = shard_first; first < shard_end; first += o->batch) {
		int64_t n = shard_end - first < o->batch ? shard_end - first : o->batch;
		generate_rows(p, pp, o->seed, mu, sigma, first, n, o->seq_len, b->values);
		int rc = feed_rows(w, id, p, b, first - shard_first, n, offset, width, err);
		if (rc != AT_OK)
			return rc;
	}
	return AT_OK;
}

static int64_t max_width(const struct synth_point *points, size_t n)
{
	int64_t widest = 0;
	for (size_t i = 0; i < n; i++)
		if (points[i].site->channels > widest)
			widest = points[i].site->channels;
	return widest;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p)
		cli_fail(NULL, "out of memory");
	return p;
}

static void describe(const struct options *o, char *notes, size_t size)
{
	char shard[64] = "";
	if (o->shards > 1)
		snprintf(shard, sizeof shard, " --shard %lld/%lld", (long long)o->shard,
		         (long long)o->shards);
	if (o->tp_size > 1)
		snprintf(shard, sizeof shard, " --tp-slice %lld/%lld", (long long)o->tp_rank,
		         (long long)o->tp_size);
	snprintf(notes, size,
	         "synthetic trace: trace-synth --arch %s --tokens %lld --seed %llu --seq-len %lld"
	         " --batch %lld --samples %lld%s",
	         o->arch->name, (long long)o->tokens, (unsigned long long)o->seed,
	         (long long)o->seq_len, (long long)o->batch, (long long)o->samples, shard);
}

static int synthesize(const struct options *o, const struct synth_point *points,
                      const struct point_plan *plans, size_t n, struct at_error *err)
{
	struct at_writer_options wo;
	char notes[256];
	at_writer_options_init(&wo);
	describe(o, notes, sizeof notes);
	wo.model = o->arch->model;
	wo.source_dtype = "float32";
	wo.notes = notes;
	wo.rank = (int32_t)o->tp_rank;
	wo.world_size = (int32_t)o->tp_size;
	if (o->samples > 0) {
		/* of the whole stream, so that every shard samples alike */
		wo.sample_policy = AT_SAMPLE_EVERY;
		wo.sample_n = o->tokens / o->samples > 1 ? o->tokens / o->samples : 1;
		wo.max_samples = o->samples;
	}
	struct at_writer *w;
	int rc = at_writer_create(&w, o->output, &wo, err);
	if (rc != AT_OK)
		return rc;

	int32_t *ids = xcalloc(n, sizeof *ids);
	int64_t C = max_width(points, n);
	struct batch b = {.rows = o->batch};
	b.values = xcalloc((size_t)(o->batch * C), sizeof *b.values);
	b.transposed = xcalloc((size_t)(o->batch * C), sizeof *b.transposed);
	b.bf16 = xcalloc((size_t)(o->batch * C), sizeof *b.bf16);
	double *mu = xcalloc((size_t)C, sizeof *mu);
	double *sigma = xcalloc((size_t)C, sizeof *sigma);

	for (size_t i = 0; i < n && rc == AT_OK; i++) {
		const struct synth_point *p = &points[i];
		int64_t offset, width = tp_slice(o, p, &offset);
		struct at_point_desc d = {.name = p->name, .layer = p->layer,
		                          .component = p->site->component, .site = p->site->site,
		                          .module = p->module, .module_class = p->site->module_class,
		                          .direction = p->site->direction, .channels = width,
		                          .channel_offset = offset};
		if (o->tp_size > 1) {
			d.full_channels = p->site->channels;
			d.replicated = tp_replicated(o, p);
		}
		ids[i] = -1;
		if (width > 0)
			rc = at_writer_add_point(w, &d, &ids[i], err);
	}
	if (rc == AT_OK)
		rc = add_tokens(w, o, err);
	if (rc == AT_OK)
		rc = add_norm_weights(w, o, points, plans, n, o->seed, err);
	for (size_t i = 0; i < n && rc == AT_OK; i++) {
		cli_progress(points[i].name, (double)i, (double)n);
		if (ids[i] < 0) /* not this rank's */
			continue;
		rc = feed_point(w, ids[i], &points[i], &plans[i], o, &b, mu, sigma, err);
		/* a capture checkpoints as it goes; once is enough to exercise it */
		if (rc == AT_OK && i == n / 2)
			rc = at_writer_checkpoint(w, err);
	}
	cli_progress_done();
	if (rc == AT_OK)
		rc = at_writer_close(w, err);
	else
		at_writer_abandon(w);

	free(ids);
	free(b.values);
	free(b.transposed);
	free(b.bf16);
	free(mu);
	free(sigma);
	return rc;
}

/* Moves the points whose name matches glob to the front, in order; their count. */
static size_t keep_matching(struct synth_point *points, size_t n, const char *glob)
{
	size_t kept = 0;
	for (size_t i = 0; i < n; i++)
		if (fnmatch(glob, points[i].name, 0) == 0)
			points[kept++] = points[i];
	return kept;
}

int main(int argc, char **argv)
{
	struct options o;
	cli_init(argv[0]);
	parse_args(argc, argv, &o);

	size_t n = synth_arch_count_points(o.arch);
	struct synth_point *points = xcalloc(n, sizeof *points);
	synth_arch_points(o.arch, points);
	if (o.points_glob) {
		n = keep_matching(points, n, o.points_glob);
		if (n == 0)
			cli_usage_error("--points '%s' matches no point of %s (see --list-points)",
			                o.points_glob, o.arch->name);
	}
	if (o.list_points) {
		list_points(o.arch, points, n);
		free(points);
		return CLI_EXIT_OK;
	}

	struct model_plan model;
	if (plan_model(o.arch, o.seed, &model) != 0)
		cli_fail(NULL, "out of memory");
	struct point_plan *plans = xcalloc(n, sizeof *plans);
	for (size_t i = 0; i < n; i++)
		if (plan_point(o.arch, &model, &points[i], o.seed, &plans[i]) != 0)
			cli_fail(NULL, "out of memory");

	/* Open the truth file first, so that a bad path fails before the work. */
	FILE *truth = NULL;
	int truth_to_stdout = o.truth && !strcmp(o.truth, "-");
	if (o.truth) {
		truth = truth_to_stdout ? stdout : fopen(o.truth, "w");
		if (!truth)
			cli_fail(o.truth, "%s", strerror(errno));
	}
	struct at_error err = {0};
	if (synthesize(&o, points, plans, n, &err) != AT_OK) {
		if (truth && !truth_to_stdout) {
			fclose(truth);
			remove(o.truth);
		}
		/* A capture keeps what it wrote (its last checkpoint reads); a
		 * synthetic trace cut short by a full disk is of no use. */
		if (err.code == AT_EIO)
			remove(o.output);
		cli_fail_at(&err);
	}
	if (truth) {
		write_truth(truth, o.truth, points, plans, n);
		if (!truth_to_stdout && fclose(truth) != 0)
			cli_fail(o.truth, "write error: %s", strerror(errno));
	}

	for (size_t i = 0; i < n; i++)
		free(plans[i].planted);
	free(plans);
	free(model.pool);
	free(points);
	return CLI_EXIT_OK;
}
