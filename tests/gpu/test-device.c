/* test-device.c: the device path (at_writer_observe_device) against the host
 * path and a float64 reference, for every dtype, both layouts ([B, T, C] and
 * [B, C, T]), NaN/Inf, a large offset, outlier channels and zeros: counts,
 * histograms, min/max/absmax and extremes must be equal, moments close
 * (mean and std within 1e-7 of the std, the rest within 1e-6 relative; the
 * largest errors seen are printed), sampled rows equal; a stream captured into
 * a CUDA graph is refused.
 * Three builds of one source: against CUDA (a GPU; exit 77 "SKIP" when there
 * is none), against the CPU emulation of the kernels (-DATC_EMU, make check),
 * and without CUDA, where it checks that the device API says "built without
 * CUDA" and skips.  --quick: fewer, smaller cases (for compute-sanitizer). */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acttrace.h"
#include "internal.h"
#include "../rng.h"
#include "../tap.h"

#if defined(ATC_EMU)
#include "cuda/stats.h"
#define HAVE_DEVICE 1
#elif defined(HAVE_CUDA)
#include <cuda_runtime.h>
#define HAVE_DEVICE 1
#endif

/* ---------------------------------------------------------------- device memory */

#ifdef HAVE_DEVICE
/* A directory of this run's own: parallel test runs must not share files. */
static char test_dir[512];

static const char *private_dir(void)
{
	if (!test_dir[0]) {
		const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
		snprintf(test_dir, sizeof test_dir, "%s/acttrace-device.XXXXXX", tmp);
		if (!mkdtemp(test_dir)) {
			perror("test-device: mkdtemp");
			exit(99);
		}
	}
	return test_dir;
}

static void remove_private_dir(void)
{
	static const char *const names[] = {"host.h5", "device.h5", "bad.h5", "same.h5", "full.h5"};
	char path[600];
	if (!test_dir[0])
		return;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", test_dir, names[i]);
		remove(path);
	}
	rmdir(test_dir);
}

static void *device_copy_of(const void *host, size_t bytes)
{
	void *dev = NULL;
#ifdef ATC_EMU
	struct at_error err;
	if (atc_malloc_device(&dev, bytes, &err) != AT_OK ||
	    atc_copy_to_device(dev, host, bytes, NULL, &err) != AT_OK) {
		fprintf(stderr, "test-device: %s\n", err.message);
		exit(99);
	}
#else
	if (cudaMalloc(&dev, bytes) != cudaSuccess ||
	    cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
		fprintf(stderr, "test-device: cannot copy %zu bytes to the device\n", bytes);
		exit(99);
	}
#endif
	return dev;
}

static void device_free(void *dev)
{
#ifdef ATC_EMU
	atc_free_device(dev);
#else
	cudaFree(dev);
#endif
}
#endif

/* ---------------------------------------------------------------- data */

enum data_kind {
	GAUSS, NONFINITE, OFFSET, OUTLIERS, ZEROS, ZEROS_TINY, REPEATED, SURGE, LADDER, N_KINDS
};
static const char *const kind_names[] = {"gauss",      "nan-inf",  "offset-1e4", "outliers", "zeros",
                                         "zeros-tiny", "repeated", "surge",      "ladder"};
/* SURGE: gaussian, 64 times larger from this token on (the surge case's
 * fourth call: 3 calls of 40 rows before it) */
#define SURGE_TOKEN 120

static float value_of(enum data_kind kind, int64_t token, int64_t c)
{
	double g = rng_gauss();
	switch (kind) {
	case NONFINITE: {
		double u = rng_uniform();
		if (u < 0.01)
			return NAN;
		if (u < 0.015)
			return u < 0.0125 ? INFINITY : -INFINITY;
		return (float)g;
	}
	case OFFSET:
		return (float)(1e4 + 0.5 * g);
	case OUTLIERS:
		if (c % 37 == 5)
			return (float)(60.0 + 5 * g);
		return (float)(token % 97 == 0 && c % 11 == 3 ? 1000.0 * g : g);
	case ZEROS:
		return 0.0f;
	case ZEROS_TINY: { /* +-0 and values whose x^4 is below float's range, side by side */
		double u = rng_uniform();
		if (u < 0.35)
			return u < 0.25 ? 0.0f : -0.0f;
		if (u < 0.5)
			return (float)(g * (u < 0.42 ? 1e-12 : 1e-39));
		return (float)g;
	}
	case REPEATED: { /* the value of (t % 17, c % 13): equal values across tokens,
	                   * channels and calls, where the extremes' ties decide (the
	                   * earlier token, then the smaller channel, first) */
		uint64_t saved = rng_state;
		rng_state = RNG_SEED ^ ((uint64_t)(token % 17) << 32 | (uint64_t)(c % 13));
		float x = (float)rng_gauss();
		rng_state = saved;
		return x;
	}
	case SURGE:
		return (float)(token >= SURGE_TOKEN ? 64.0 * g : g);
	case LADDER: /* below the ladder's values (put_ladder), and no one step
	              * holding most of a channel's variance */
		return (float)(200.0 * rng_uniform() - 100.0);
	default:
		return (float)g;
	}
}

/* float -> the dtype's bits (round to nearest even) and back. */
static uint16_t to_bf16(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	if ((b & 0x7f800000u) == 0x7f800000u)
		return (uint16_t)((b >> 16) | ((b & 0xffffu) ? 0x40u : 0u));
	b += 0x7fffu + ((b >> 16) & 1u);
	return (uint16_t)(b >> 16);
}

static uint16_t to_f16(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	uint32_t sign = (b >> 16) & 0x8000u, ab = b & 0x7fffffffu;
	if (ab >= 0x7f800000u)
		return (uint16_t)(sign | 0x7c00u | (ab > 0x7f800000u ? 0x200u : 0u));
	if (ab >= 0x477ff000u) /* rounds to >= 65520: inf */
		return (uint16_t)(sign | 0x7c00u);
	if (ab < 0x38800000u) { /* subnormal half */
		float f;
		memcpy(&f, &ab, sizeof f);
		return (uint16_t)(sign | (uint32_t)lrintf(f * 16777216.0f));
	}
	uint32_t mant = ab & 0x7fffffu, exp = (ab >> 23) - 112;
	uint32_t h = (exp << 10) | (mant >> 13);
	uint32_t rest = mant & 0x1fffu;
	if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
		h++;
	return (uint16_t)(sign | h);
}

/* ---------------------------------------------------------------- cases */

struct test_case {
	enum at_dtype dtype;
	int bct; /* [B, C, T] instead of [B, T, C] */
	int64_t batches, rows, channels;
	enum data_kind kind;
	int calls;                 /* observe calls (batches split between them) */
	enum at_sample_policy policy;
	int64_t sample_n, max_samples;
	int32_t extremes;
	int reverse; /* the calls in reverse token order: later calls' ties win */
	int twice;   /* each call's tensor observed twice at the same tokens */
};

struct tensor_data {
	void *raw;      /* in the case's layout and dtype */
	float *values;  /* [B][T][C], the dtype's values widened */
	size_t bytes;
};

/* x at (token, c) of the case's layout and dtype; values[] holds what the
 * dtype keeps of it. */
static void put_value(const struct test_case *tc, struct tensor_data *d, int64_t token, int64_t c,
                      float x)
{
	int64_t T = tc->rows, C = tc->channels, b = token / T, t = token % T;
	size_t logical = (size_t)(token * C + c);
	size_t at = tc->bct ? (size_t)((b * C + c) * T + t) : logical;
	if (tc->dtype == AT_F32) {
		((float *)d->raw)[at] = x;
	} else {
		uint16_t h = tc->dtype == AT_BF16 ? to_bf16(x) : to_f16(x);
		((uint16_t *)d->raw)[at] = h;
		x = tc->dtype == AT_BF16 ? at_bf16_to_float(h) : at_f16_to_float(h);
	}
	d->values[logical] = x;
}

/* LADDER: uniform in [-100, 100]; in batch 1 the K values +-130, 132, ...
 * 128 + 2K, and in batch 2 one value of 131, between the K-th best and the
 * one before it (integers below 257: exact in every dtype).  131 belongs in
 * the K best only when the floor that batch 2's launch starts from is
 * exactly the K-th best (batch 0's call ends at a checkpoint, which clears
 * the device's K best, so batch 1 sets the floor). */
static void put_ladder(const struct test_case *tc, struct tensor_data *d)
{
	int64_t T = tc->rows, C = tc->channels;
	if (tc->batches < 2 || tc->extremes > 64 || tc->extremes > T * C)
		return;
	for (int64_t j = 0; j < tc->extremes; j++)
		put_value(tc, d, T + j % T, (j * 7 + j / T) % C,
		          (float)((j % 2 ? -1 : 1) * (130 + 2 * j)));
	if (tc->batches >= 3)
		put_value(tc, d, 2 * T + 3, 5 % C, 131.0f);
}

static void make_data(const struct test_case *tc, struct tensor_data *d)
{
	int64_t B = tc->batches, T = tc->rows, C = tc->channels;
	size_t n = (size_t)(B * T * C), esize = at_dtype_size(tc->dtype);
	d->bytes = n * esize;
	d->raw = malloc(d->bytes);
	d->values = malloc(n * sizeof(float));
	if (!d->raw || !d->values)
		exit(99);
	for (int64_t b = 0; b < B; b++)
		for (int64_t t = 0; t < T; t++)
			for (int64_t c = 0; c < C; c++)
				put_value(tc, d, b * T + t, c, value_of(tc->kind, b * T + t, c));
	if (tc->kind == LADDER)
		put_ladder(tc, d);
}

/* The view of batches [b0, b0+nb) of the data at `base`. */
static struct at_tensor view_of(const struct test_case *tc, const void *base, int64_t b0,
                                int64_t nb)
{
	int64_t T = tc->rows, C = tc->channels;
	size_t esize = at_dtype_size(tc->dtype);
	struct at_tensor t = {(const char *)base + (size_t)(b0 * T * C) * esize, tc->dtype, nb, T, C,
	                      T * C, tc->bct ? 1 : C, tc->bct ? T : 1};
	return t;
}

/* ---------------------------------------------------------------- float64 reference */

struct reference {
	struct at_stats s; /* exact counts, orders, hist, extremes; moments two-pass */
};

static int extreme_cmp(const void *pa, const void *pb)
{
	const struct at_extreme *a = pa, *b = pb;
	double x = fabs(a->value), y = fabs(b->value);
	if (x != y)
		return x > y ? -1 : 1;
	if (a->token != b->token)
		return a->token < b->token ? -1 : 1;
	if (a->channel != b->channel)
		return a->channel < b->channel ? -1 : 1;
	return a->value > b->value ? -1 : a->value < b->value;
}

static void make_reference(const struct test_case *tc, const struct tensor_data *d,
                           struct reference *ref)
{
	int64_t N = tc->batches * tc->rows, C = tc->channels;
	struct at_error err;
	if (at_stats_init(&ref->s, C, 1, tc->extremes, &err))
		exit(99);
	struct at_stats *s = &ref->s;
	size_t n_all = 0;
	const int times = tc->twice ? 2 : 1; /* every element observed this often */
	struct at_extreme *all = malloc((size_t)(N * C * times) * sizeof *all);
	if (!all)
		exit(99);
	for (int64_t c = 0; c < C; c++) {
		long double sum = 0, abssum = 0;
		uint64_t n = 0, bad = 0;
		double lo = NAN, hi = NAN, am = NAN;
		for (int64_t g = 0; g < N; g++) {
			float x = d->values[g * C + c];
			if (!isfinite(x)) {
				bad++;
				continue;
			}
			n++;
			sum += x;
			abssum += fabsl((long double)x);
			lo = fmin(lo, x);
			hi = fmax(hi, x);
			am = fmax(am, fabs(x));
			s->hist[c * AT_HIST_BINS + at_hist_bin(fabs(x))] += (uint32_t)times;
			for (int i = 0; i < times; i++)
				all[n_all++] = (struct at_extreme){x, g, (int32_t)c};
		}
		long double mean = n ? sum / n : 0, m2 = 0, m3 = 0, m4 = 0;
		for (int64_t g = 0; g < N; g++) {
			float x = d->values[g * C + c];
			if (!isfinite(x))
				continue;
			long double e = x - mean;
			m2 += e * e;
			m3 += e * e * e;
			m4 += e * e * e * e;
		}
		s->count[c] = n * (uint64_t)times;
		s->nonfinite[c] = bad * (uint64_t)times;
		s->mean[c] = (double)mean;
		s->m2[c] = (double)(m2 * times);
		s->m3[c] = (double)(m3 * times);
		s->m4[c] = (double)(m4 * times);
		s->abssum[c] = (double)(abssum * times);
		s->min[c] = lo;
		s->max[c] = hi;
		s->absmax[c] = am;
	}
	qsort(all, n_all, sizeof *all, extreme_cmp);
	s->n_extremes = (int32_t)(n_all < (size_t)tc->extremes ? n_all : (size_t)tc->extremes);
	memcpy(s->extremes, all, (size_t)s->n_extremes * sizeof *all);
	free(all);
}

/* ---------------------------------------------------------------- traces */

enum path { HOST_PATH, DEVICE_PATH };

static double worst_mean_err, worst_std_err;

/* Write the case through one path; 0 on success.  The device path also
 * checkpoints between calls, so that drained accumulators merge with later
 * ones. */
static int write_trace(const struct test_case *tc, const struct tensor_data *d, enum path path,
                       const char *file)
{
	struct at_writer_options o;
	at_writer_options_init(&o);
	o.extremes = tc->extremes;
	o.sample_policy = tc->policy;
	o.sample_n = tc->sample_n;
	o.max_samples = tc->max_samples;
	struct at_error err;
	struct at_writer *w;
	if (at_writer_create(&w, file, &o, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		return -1;
	}
	int64_t B = tc->batches, T = tc->rows;
	struct at_point_desc desc = {"layers.0.x", 0, "mlp", "x", "m", "M", "out", tc->channels, 0, 0, 0};
	int32_t id;
	int32_t *seq = malloc((size_t)(B * T) * sizeof *seq), *pos = malloc((size_t)(B * T) * sizeof *pos);
	int status = at_writer_add_point(w, &desc, &id, &err);
	for (int64_t g = 0; g < B * T; g++) {
		seq[g] = (int32_t)(g / T);
		pos[g] = (int32_t)(g % T);
	}
	int64_t base = 0;
	if (!status)
		status = at_writer_add_tokens(w, seq, pos, seq, B * T, &base, &err);
	free(seq);
	free(pos);
	void *source = d->raw;
#ifdef HAVE_DEVICE
	if (path == DEVICE_PATH)
		source = device_copy_of(d->raw, d->bytes);
#endif
	for (int call = 0; call < tc->calls && !status; call++) {
		int part = tc->reverse ? tc->calls - 1 - call : call;
		int64_t b0 = B * part / tc->calls, b1 = B * (part + 1) / tc->calls;
		struct at_tensor t = view_of(tc, source, b0, b1 - b0);
		for (int rep = 0; rep < (tc->twice ? 2 : 1) && !status; rep++) {
			if (path == HOST_PATH)
				status = at_writer_observe(w, id, &t, b0 * T, &err);
			else
				status = at_writer_observe_device(w, id, &t, b0 * T, NULL, &err);
		}
		if (!status && path == DEVICE_PATH && call == 0 && tc->calls > 1)
			status = at_writer_checkpoint(w, &err);
	}
	if (status) {
		fprintf(stderr, "test-device: %s (%s)\n", err.message, at_status_name(status));
		at_writer_abandon(w);
	} else if ((status = at_writer_close(w, &err))) {
		fprintf(stderr, "test-device: close: %s\n", err.message);
	}
#ifdef HAVE_DEVICE
	if (path == DEVICE_PATH)
		device_free(source);
#endif
	return status ? -1 : 0;
}

static int load(const char *file, struct at_stats *s, struct at_reader **r)
{
	struct at_error err;
	if (at_reader_open(r, file, &err) || at_reader_load_stats(*r, 0, s, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		return -1;
	}
	return 0;
}

static int same_double(double a, double b)
{
	return (isnan(a) && isnan(b)) || a == b;
}

/* Exact fields: counts, min/max/absmax, histograms, extremes. */
static int exact_equal(const struct at_stats *a, const struct at_stats *b, char *why, size_t size)
{
	for (int64_t c = 0; c < a->channels; c++) {
		if (a->count[c] != b->count[c] || a->nonfinite[c] != b->nonfinite[c]) {
			snprintf(why, size, "channel %lld: count %llu/%llu nonfinite %llu/%llu",
			         (long long)c, (unsigned long long)a->count[c], (unsigned long long)b->count[c],
			         (unsigned long long)a->nonfinite[c], (unsigned long long)b->nonfinite[c]);
			return 0;
		}
		if (!same_double(a->min[c], b->min[c]) || !same_double(a->max[c], b->max[c]) ||
		    !same_double(a->absmax[c], b->absmax[c])) {
			snprintf(why, size, "channel %lld: min %g/%g max %g/%g absmax %g/%g", (long long)c,
			         a->min[c], b->min[c], a->max[c], b->max[c], a->absmax[c], b->absmax[c]);
			return 0;
		}
		for (int bin = 0; bin < AT_HIST_BINS; bin++)
			if (a->hist[c * AT_HIST_BINS + bin] != b->hist[c * AT_HIST_BINS + bin]) {
				snprintf(why, size, "channel %lld bin %d: %u/%u", (long long)c, bin,
				         a->hist[c * AT_HIST_BINS + bin], b->hist[c * AT_HIST_BINS + bin]);
				return 0;
			}
	}
	if (a->n_extremes != b->n_extremes) {
		snprintf(why, size, "%d/%d extremes", a->n_extremes, b->n_extremes);
		return 0;
	}
	for (int32_t i = 0; i < a->n_extremes; i++) {
		const struct at_extreme *x = &a->extremes[i], *y = &b->extremes[i];
		if (x->value != y->value || x->token != y->token || x->channel != y->channel) {
			snprintf(why, size, "extreme %d: (%g, %lld, %d)/(%g, %lld, %d)", i, x->value,
			         (long long)x->token, x->channel, y->value, (long long)y->token, y->channel);
			return 0;
		}
	}
	return 1;
}

static double relative(double got, double want, double scale)
{
	if (scale == 0)
		return got == want ? 0 : INFINITY;
	return fabs(got - want) / scale;
}

/* Moments within rel of the reference: mean against max(|mean|, std) (a mean
 * near 0 has no relative precision of its own), std, mean |x|, skewness and
 * kurtosis (absolute, scaled by 1 + |value|). */
static int moments_close(const struct at_stats *got, const struct at_stats *ref, double rel,
                         double rel_mean_std, int track, char *why, size_t size)
{
	for (int64_t c = 0; c < ref->channels; c++) {
		struct at_moments g, r;
		at_stats_channel(got, c, &g);
		at_stats_channel(ref, c, &r);
		if (r.count < 2)
			continue;
		double std_ref = at_moments_std(&r), scale = fmax(fabs(r.mean), std_ref);
		double e_mean = relative(g.mean, r.mean, scale);
		double e_std = relative(at_moments_std(&g), std_ref, std_ref);
		double e_abs = relative(g.abssum, r.abssum, fabs(r.abssum));
		double e_skew = 0, e_kurt = 0;
		if (std_ref > 0) {
			double sk = at_moments_skewness(&r), ku = at_moments_kurtosis(&r);
			e_skew = fabs(at_moments_skewness(&g) - sk) / (1 + fabs(sk));
			e_kurt = fabs(at_moments_kurtosis(&g) - ku) / (1 + fabs(ku));
		}
		if (track) {
			worst_mean_err = fmax(worst_mean_err, e_mean);
			worst_std_err = fmax(worst_std_err, e_std);
		}
		if (!(e_mean <= rel_mean_std && e_std <= rel_mean_std && e_abs <= rel &&
		      e_skew <= rel && e_kurt <= rel)) {
			snprintf(why, size,
			         "channel %lld: errors mean %.3g std %.3g abssum %.3g skew %.3g kurt %.3g",
			         (long long)c, e_mean, e_std, e_abs, e_skew, e_kurt);
			return 0;
		}
	}
	return 1;
}

static int same_samples(struct at_reader *a, struct at_reader *b, char *why, size_t size)
{
	const struct at_point_info *pa = at_reader_point(a, 0), *pb = at_reader_point(b, 0);
	if (pa->samples != pb->samples || pa->samples_dropped != pb->samples_dropped) {
		snprintf(why, size, "samples %lld/%lld dropped %lld/%lld", (long long)pa->samples,
		         (long long)pb->samples, (long long)pa->samples_dropped,
		         (long long)pb->samples_dropped);
		return 0;
	}
	int64_t n = pa->samples, c = pa->channels;
	if (n == 0)
		return 1;
	float *ra = malloc((size_t)(n * c) * sizeof *ra), *rb = malloc((size_t)(n * c) * sizeof *rb);
	int64_t *ta = malloc((size_t)n * sizeof *ta), *tb = malloc((size_t)n * sizeof *tb);
	struct at_error err;
	int ok = ra && rb && ta && tb && !at_reader_read_samples(a, 0, 0, n, ra, ta, &err) &&
	         !at_reader_read_samples(b, 0, 0, n, rb, tb, &err);
	if (!ok)
		snprintf(why, size, "cannot read samples");
	else if (memcmp(ta, tb, (size_t)n * sizeof *ta) || memcmp(ra, rb, (size_t)(n * c) * sizeof *ra)) {
		snprintf(why, size, "sampled rows or tokens differ");
		ok = 0;
	}
	free(ra);
	free(rb);
	free(ta);
	free(tb);
	return ok;
}

static const char *dtype_name(enum at_dtype t)
{
	return t == AT_F32 ? "f32" : t == AT_F16 ? "f16" : "bf16";
}

static void run_case(const struct test_case *tc, const char *dir)
{
	char name[160], host_file[512], dev_file[512], why[512] = "";
	snprintf(name, sizeof name, "%s %s %lldx%lldx%lld %s calls=%d%s%s%s", dtype_name(tc->dtype),
	         tc->bct ? "bct" : "btc", (long long)tc->batches, (long long)tc->rows,
	         (long long)tc->channels, kind_names[tc->kind], tc->calls,
	         tc->policy == AT_SAMPLE_EVERY       ? " every"
	         : tc->policy == AT_SAMPLE_FIRST     ? " first"
	         : tc->policy == AT_SAMPLE_RESERVOIR ? " reservoir"
	                                             : "",
	         tc->reverse ? " reversed" : "", tc->twice ? " twice" : "");
	snprintf(host_file, sizeof host_file, "%s/host.h5", dir);
	snprintf(dev_file, sizeof dev_file, "%s/device.h5", dir);
	struct tensor_data d;
	struct reference ref;
	make_data(tc, &d);
	make_reference(tc, &d, &ref);
	struct at_stats hs, ds;
	struct at_reader *hr = NULL, *dr = NULL;
	memset(&hs, 0, sizeof hs);
	memset(&ds, 0, sizeof ds);
	int ok = write_trace(tc, &d, HOST_PATH, host_file) == 0 &&
	         write_trace(tc, &d, DEVICE_PATH, dev_file) == 0 && load(host_file, &hs, &hr) == 0 &&
	         load(dev_file, &ds, &dr) == 0;
	TAP_OK(ok, "%s: both paths write and read back", name);
	if (ok) {
		TAP_OK(exact_equal(&ds, &ref.s, why, sizeof why), "%s: device = reference exactly %s",
		       name, why);
		TAP_OK(exact_equal(&ds, &hs, why, sizeof why), "%s: device = host exactly %s", name, why);
		/* mean and std within 1e-7 of the std (the bar), the rest 1e-6 */
		TAP_OK(moments_close(&ds, &ref.s, 1e-6, 1e-7, 1, why, sizeof why),
		       "%s: device moments = float64 reference %s", name, why);
		TAP_OK(moments_close(&ds, &hs, 1e-6, 2e-7, 0, why, sizeof why), "%s: device moments = host %s",
		       name, why);
		if (tc->policy != AT_SAMPLE_NONE)
			TAP_OK(same_samples(hr, dr, why, sizeof why), "%s: sampled rows = host %s", name, why);
	}
	at_stats_free(&hs);
	at_stats_free(&ds);
	at_stats_free(&ref.s);
	at_reader_close(hr);
	at_reader_close(dr);
	free(d.raw);
	free(d.values);
	remove(host_file);
	remove(dev_file);
}

#ifdef HAVE_DEVICE
/* A trace at file with one point of 4 channels (exit 99 if it cannot be made). */
static struct at_writer *one_point_writer(const char *file, const struct at_writer_options *o,
                                          int32_t *id)
{
	struct at_writer *w;
	struct at_error err;
	struct at_point_desc desc = {"p", -1, "other", "p", "", "", "out", 4, 0, 0, 0};
	if (at_writer_create(&w, file, o, &err) || at_writer_add_point(w, &desc, id, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		exit(99);
	}
	return w;
}

/* Calls the device path must refuse before queueing anything. */
static void bad_calls(const char *dir)
{
	char file[512];
	snprintf(file, sizeof file, "%s/bad.h5", dir);
	struct at_writer_options o;
	at_writer_options_init(&o);
	struct at_error err;
	int32_t id;
	struct at_writer *w = one_point_writer(file, &o, &id);
	float host[8] = {0};
	struct at_tensor t = {host, AT_F32, 1, 2, 4, 8, 4, 1};
	int rc = at_writer_observe_device(w, id, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL && strstr(err.message, "not device memory"),
	       "a host pointer is refused: %s", err.message);
	t.channels = 5;
	rc = at_writer_observe_device(w, id, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL, "a channel count that is not the point's is refused: %s", err.message);
	rc = at_writer_observe_device(w, 7, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL, "an unknown point is refused: %s", err.message);
	at_writer_abandon(w);
	o.extremes = 1000;
	w = one_point_writer(file, &o, &id);
	void *dev = device_copy_of(host, sizeof host);
	t.data = dev;
	t.channels = 4;
	rc = at_writer_observe_device(w, id, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL, "1000 extremes are refused on the device: %s", err.message);
	device_free(dev);
	at_writer_abandon(w);
	remove(file);
}

#ifndef ATC_EMU
/* A forward captured into a CUDA graph would replay our kernel with the
 * tokens of the capture: the library refuses while the stream captures, and
 * the trace stays as it was (the statistics of the calls before). */
static void graph_capture(const char *dir)
{
	char file[512];
	snprintf(file, sizeof file, "%s/graph.h5", dir);
	struct at_writer_options o;
	at_writer_options_init(&o);
	struct at_error err;
	int32_t id;
	struct at_writer *w = one_point_writer(file, &o, &id);
	float host[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	void *dev = device_copy_of(host, sizeof host);
	struct at_tensor t = {dev, AT_F32, 1, 2, 4, 8, 4, 1};
	cudaStream_t stream;
	if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess)
		exit(99);
	int before = at_writer_observe_device(w, id, &t, 0, stream, &err);
	cudaGraph_t graph = NULL;
	int rc = AT_OK;
	if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
		rc = at_writer_observe_device(w, id, &t, 2, stream, &err);
		cudaStreamEndCapture(stream, &graph);
	}
	TAP_OK(before == AT_OK && rc == AT_EINVAL && strstr(err.message, "CUDA graph"),
	       "observing while the stream is captured into a CUDA graph is refused: %s",
	       err.message);
	if (graph)
		cudaGraphDestroy(graph);
	int closed = at_writer_close(w, &err);
	struct at_reader *r = NULL;
	struct at_stats s;
	int ok = closed == AT_OK && at_reader_open(&r, file, &err) == AT_OK &&
	         at_reader_load_stats(r, 0, &s, &err) == AT_OK;
	TAP_OK(ok && s.count[0] == 2 && s.count[3] == 2 && s.max[3] == 8,
	       "the refused call left the trace as the call before made it");
	if (ok)
		at_stats_free(&s);
	if (r)
		at_reader_close(r);
	cudaStreamDestroy(stream);
	device_free(dev);
	remove(file);
}
#endif
#endif

/* ---------------------------------------------------------------- observe_same */

#ifdef HAVE_DEVICE
/* Overwrite device memory behind the library's back (the fast-path tests). */
static void device_overwrite(void *dev, const void *host, size_t bytes)
{
#ifdef ATC_EMU
	struct at_error err;
	if (atc_copy_to_device(dev, host, bytes, NULL, &err) != AT_OK) {
		fprintf(stderr, "test-device: %s\n", err.message);
		exit(99);
	}
#else
	if (cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
		fprintf(stderr, "test-device: cannot copy %zu bytes to the device\n", bytes);
		exit(99);
	}
#endif
}

/* How the pair's second point is observed. */
enum pair_mode { PAIR_FULL, PAIR_SAME };

/* A trace of points "source" (id 0) and "target" (id 1), both observing the
 * case's data call by call (a checkpoint after the first call), target by
 * at_writer_observe_device_same or by a full observation.  Also, with
 * chain, a third point observing the same as target (its source). */
static int write_pair(const struct test_case *tc, const struct tensor_data *d, enum pair_mode mode,
                      int chain, const char *file)
{
	struct at_writer_options o;
	at_writer_options_init(&o);
	o.extremes = tc->extremes;
	o.sample_policy = tc->policy;
	o.sample_n = tc->sample_n;
	o.max_samples = tc->max_samples;
	struct at_error err;
	struct at_writer *w;
	if (at_writer_create(&w, file, &o, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		return -1;
	}
	int64_t B = tc->batches, T = tc->rows;
	static const char *const names[] = {"source", "target", "chained"};
	int32_t ids[3];
	int status = AT_OK;
	for (int i = 0; i < 3 && !status; i++) {
		struct at_point_desc desc = {names[i], 0, "mlp", names[i], "m", "M", "in", tc->channels, 0, 0, 0};
		status = at_writer_add_point(w, &desc, &ids[i], &err);
	}
	int32_t *seq = malloc((size_t)(B * T) * sizeof *seq), *pos = malloc((size_t)(B * T) * sizeof *pos);
	for (int64_t g = 0; g < B * T; g++) {
		seq[g] = (int32_t)(g / T);
		pos[g] = (int32_t)(g % T);
	}
	int64_t base = 0;
	if (!status)
		status = at_writer_add_tokens(w, seq, pos, seq, B * T, &base, &err);
	free(seq);
	free(pos);
	void *dev = device_copy_of(d->raw, d->bytes);
	for (int call = 0; call < tc->calls && !status; call++) {
		int64_t b0 = B * call / tc->calls, b1 = B * (call + 1) / tc->calls;
		struct at_tensor t = view_of(tc, dev, b0, b1 - b0);
		status = at_writer_observe_device(w, ids[0], &t, b0 * T, NULL, &err);
		if (!status && mode == PAIR_SAME)
			status = at_writer_observe_device_same(w, ids[1], ids[0], &t, b0 * T, NULL, &err);
		else if (!status)
			status = at_writer_observe_device(w, ids[1], &t, b0 * T, NULL, &err);
		if (!status && chain && mode == PAIR_SAME)
			status = at_writer_observe_device_same(w, ids[2], ids[1], &t, b0 * T, NULL, &err);
		else if (!status && chain)
			status = at_writer_observe_device(w, ids[2], &t, b0 * T, NULL, &err);
		if (!status && call == 0 && tc->calls > 1)
			status = at_writer_checkpoint(w, &err);
	}
	if (status) {
		fprintf(stderr, "test-device: %s (%s)\n", err.message, at_status_name(status));
		at_writer_abandon(w);
	} else if ((status = at_writer_close(w, &err))) {
		fprintf(stderr, "test-device: close: %s\n", err.message);
	}
	device_free(dev);
	return status ? -1 : 0;
}

static int load_point(struct at_reader *r, int32_t point, struct at_stats *s)
{
	struct at_error err;
	if (at_reader_load_stats(r, point, s, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		return -1;
	}
	return 0;
}

static int within(double a, double b, double rel)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b);
	return a == b || fabs(a - b) <= rel * fmax(fabs(a), fabs(b));
}

/* The moments as stored, within rel of each other (the bar: 1e-12). */
static int moments_within(const struct at_stats *a, const struct at_stats *b, double rel, char *why,
                          size_t size)
{
	for (int64_t c = 0; c < a->channels; c++) {
		const double got[5] = {a->mean[c], a->m2[c], a->m3[c], a->m4[c], a->abssum[c]};
		const double want[5] = {b->mean[c], b->m2[c], b->m3[c], b->m4[c], b->abssum[c]};
		for (int k = 0; k < 5; k++)
			if (!within(got[k], want[k], rel)) {
				snprintf(why, size, "channel %lld moment %d: %.17g/%.17g", (long long)c, k, got[k],
				         want[k]);
				return 0;
			}
	}
	return 1;
}

/* Samples of point i of trace a and point j of trace b. */
static int same_point_samples(struct at_reader *a, int32_t i, struct at_reader *b, int32_t j,
                              char *why, size_t size)
{
	const struct at_point_info *pa = at_reader_point(a, i), *pb = at_reader_point(b, j);
	if (pa->samples != pb->samples || pa->samples_dropped != pb->samples_dropped) {
		snprintf(why, size, "samples %lld/%lld", (long long)pa->samples, (long long)pb->samples);
		return 0;
	}
	int64_t n = pa->samples, c = pa->channels;
	if (n == 0)
		return 1;
	float *ra = malloc((size_t)(n * c) * sizeof *ra), *rb = malloc((size_t)(n * c) * sizeof *rb);
	int64_t *ta = malloc((size_t)n * sizeof *ta), *tb = malloc((size_t)n * sizeof *tb);
	struct at_error err;
	int ok = ra && rb && ta && tb && !at_reader_read_samples(a, i, 0, n, ra, ta, &err) &&
	         !at_reader_read_samples(b, j, 0, n, rb, tb, &err);
	if (ok && (memcmp(ta, tb, (size_t)n * sizeof *ta) || memcmp(ra, rb, (size_t)(n * c) * sizeof *ra))) {
		snprintf(why, size, "sampled rows or tokens differ");
		ok = 0;
	}
	free(ra);
	free(rb);
	free(ta);
	free(tb);
	return ok;
}

/* Every point of trace a as the same point of trace b: exact fields, moments
 * within rel, samples. */
static int points_equal(struct at_reader *a, struct at_reader *b, int32_t npoints, double rel,
                        char *why, size_t size)
{
	int ok = 1;
	for (int32_t i = 0; i < npoints && ok; i++) {
		struct at_stats sa, sb;
		memset(&sa, 0, sizeof sa);
		memset(&sb, 0, sizeof sb);
		ok = load_point(a, i, &sa) == 0 && load_point(b, i, &sb) == 0 &&
		     exact_equal(&sa, &sb, why, size) && moments_within(&sa, &sb, rel, why, size) &&
		     same_point_samples(a, i, b, i, why, size);
		at_stats_free(&sa);
		at_stats_free(&sb);
	}
	return ok;
}

/* observe_same against full observations of every point, over several calls
 * with a checkpoint between them, and along a chain (a point whose source
 * took its own source's result). */
static void same_case(const struct test_case *tc, const char *dir)
{
	char name[160], same_file[512], full_file[512], why[512] = "";
	snprintf(name, sizeof name, "observe_same: %s %s %lldx%lldx%lld %s calls=%d%s",
	         dtype_name(tc->dtype), tc->bct ? "bct" : "btc", (long long)tc->batches,
	         (long long)tc->rows, (long long)tc->channels, kind_names[tc->kind], tc->calls,
	         tc->policy == AT_SAMPLE_EVERY ? " every" : tc->policy == AT_SAMPLE_FIRST ? " first" : "");
	snprintf(same_file, sizeof same_file, "%s/same.h5", dir);
	snprintf(full_file, sizeof full_file, "%s/full.h5", dir);
	struct tensor_data d;
	make_data(tc, &d);
	struct at_reader *rs = NULL, *rf = NULL;
	struct at_error err;
	int ok = write_pair(tc, &d, PAIR_SAME, 1, same_file) == 0 &&
	         write_pair(tc, &d, PAIR_FULL, 1, full_file) == 0 &&
	         at_reader_open(&rs, same_file, &err) == 0 && at_reader_open(&rf, full_file, &err) == 0;
	TAP_OK(ok, "%s: both traces write and read back", name);
	if (ok)
		TAP_OK(points_equal(rs, rf, 3, 1e-12, why, sizeof why),
		       "%s: every point = full observations (exact; moments 1e-12) %s", name, why);
	at_reader_close(rs);
	at_reader_close(rf);
	free(d.raw);
	free(d.values);
	remove(same_file);
	remove(full_file);
}

/* ---- which path a call took */

/* What the target's second call is, in the path tests. */
enum path_case {
	TAKE,             /* the source's tensor, rows and stream: the result is taken */
	OTHER_POINTER,    /* the same values at another address */
	OTHER_TOKENS,     /* the same tensor, other token_base */
	OTHER_SHAPE,      /* the same pointer, fewer rows */
	OTHER_STREAM,     /* the same tensor on another stream (emulation only) */
	DRAINED,          /* a checkpoint between the source's call and the target's */
	DIVERGED,         /* the target saw another tensor before: its history is not the source's */
	SELF,             /* a point named as its own source */
	N_PATH_CASES
};
static const char *const path_case_names[] = {
	"same tensor: taken",        "another pointer: full",    "another token_base: full",
	"another shape: full",       "another stream: full",     "source drained since: full",
	"diverged history: full",    "itself as source: full (a second observation)"};

/* The library cannot see a tensor's contents: overwriting them (x becomes
 * y) between the source's call and the target's shows which path the
 * target took.  Taken, the target holds what the source saw (x); read
 * again, what the call shows it (y).  The expected trace is made of full
 * observations of that. */
static int write_path_case(enum path_case pc, int expected, const struct test_case *tc,
                           const struct tensor_data *x, const struct tensor_data *y,
                           const struct tensor_data *z, const char *file)
{
	struct at_writer_options o;
	at_writer_options_init(&o);
	o.extremes = tc->extremes;
	struct at_error err;
	struct at_writer *w;
	int32_t src, dst;
	int64_t N = tc->batches * tc->rows, base;
	struct at_point_desc ds = {"source", 0, "mlp", "s", "m", "M", "out", tc->channels, 0, 0, 0};
	struct at_point_desc dt = {"target", 0, "mlp", "t", "m", "M", "in", tc->channels, 0, 0, 0};
	int32_t *zeros = calloc((size_t)(3 * N), sizeof *zeros);
	if (!zeros || at_writer_create(&w, file, &o, &err) || at_writer_add_point(w, &ds, &src, &err) ||
	    at_writer_add_point(w, &dt, &dst, &err) ||
	    at_writer_add_tokens(w, zeros, zeros, zeros, 3 * N, &base, &err))
		exit(99);
	free(zeros);
	void *dev = device_copy_of(x->raw, x->bytes), *dev_y = device_copy_of(y->raw, y->bytes);
	void *dev_z = device_copy_of(z->raw, z->bytes);
	struct at_tensor t = view_of(tc, dev, 0, tc->batches), shown = t;
	int64_t shown_base = 0;
	void *stream = NULL;
	int32_t target = pc == SELF ? src : dst;
	switch (pc) {
	case OTHER_POINTER:
		shown.data = dev_y;
		break;
	case OTHER_TOKENS:
		shown_base = N;
		break;
	case OTHER_SHAPE:
		shown.rows = tc->rows / 2;
		break;
	case OTHER_STREAM:
		stream = (void *)(uintptr_t)2; /* the emulation runs every stream in order */
		break;
	default:
		break;
	}
	int s = AT_OK;
	if (pc == DIVERGED) {
		struct at_tensor tz = view_of(tc, dev_z, 0, tc->batches);
		s = at_writer_observe_device(w, target, &tz, 2 * N, NULL, &err);
	}
	if (!s)
		s = at_writer_observe_device(w, src, &t, 0, NULL, &err);
	if (!s && pc == DRAINED)
		s = at_writer_checkpoint(w, &err);
	if (!s && !expected) {
		device_overwrite(dev, y->raw, y->bytes);
		s = at_writer_observe_device_same(w, target, src, &shown, shown_base, stream, &err);
	} else if (!s && pc == TAKE) {
		s = at_writer_observe_device(w, target, &t, 0, NULL, &err); /* x, as the source saw it */
	} else if (!s) {
		device_overwrite(dev, y->raw, y->bytes);
		s = at_writer_observe_device(w, target, &shown, shown_base, NULL, &err);
	}
	if (s) {
		fprintf(stderr, "test-device: %s\n", err.message);
		at_writer_abandon(w);
	} else if ((s = at_writer_close(w, &err))) {
		fprintf(stderr, "test-device: %s\n", err.message);
	}
	device_free(dev);
	device_free(dev_y);
	device_free(dev_z);
	return s ? -1 : 0;
}

static void path_case(enum path_case pc, const char *dir)
{
	struct test_case tc = {AT_BF16, 0, 2, 40, 100, NONFINITE, 1, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0};
	struct test_case other = tc;
	other.kind = OUTLIERS;
	struct tensor_data x, y, z;
	make_data(&tc, &x);
	make_data(&other, &y);
	make_data(&tc, &z);
	char got_file[512], want_file[512], why[512] = "";
	snprintf(got_file, sizeof got_file, "%s/same.h5", dir);
	snprintf(want_file, sizeof want_file, "%s/full.h5", dir);
	struct at_reader *rg = NULL, *rw = NULL;
	struct at_error err;
	int ok = write_path_case(pc, 0, &tc, &x, &y, &z, got_file) == 0 &&
	         write_path_case(pc, 1, &tc, &x, &y, &z, want_file) == 0 &&
	         at_reader_open(&rg, got_file, &err) == 0 && at_reader_open(&rw, want_file, &err) == 0;
	TAP_OK(ok && points_equal(rg, rw, 2, 1e-12, why, sizeof why), "observe_same, %s %s",
	       path_case_names[pc], why);
	at_reader_close(rg);
	at_reader_close(rw);
	remove(got_file);
	remove(want_file);
	free(x.raw);
	free(x.values);
	free(y.raw);
	free(y.values);
	free(z.raw);
	free(z.values);
}

/* A sanity check of the path tests: x and y must not give the same
 * statistics, or "taken" and "read again" could not be told apart. */
static void path_cases(const char *dir)
{
	for (int pc = 0; pc < N_PATH_CASES; pc++) {
#ifndef ATC_EMU
		if (pc == OTHER_STREAM) /* needs a second stream: the emulation's */
			continue;
#endif
		path_case((enum path_case)pc, dir);
	}
}

/* Bad calls: the source is checked on both paths. */
static void same_bad_calls(const char *dir)
{
	char file[512];
	snprintf(file, sizeof file, "%s/bad.h5", dir);
	struct at_writer_options o;
	at_writer_options_init(&o);
	struct at_error err;
	int32_t id;
	struct at_writer *w = one_point_writer(file, &o, &id);
	float host[8] = {0};
	void *dev = device_copy_of(host, sizeof host);
	struct at_tensor t = {dev, AT_F32, 1, 2, 4, 8, 4, 1};
	int rc = at_writer_observe_device_same(w, id, 5, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL && strstr(err.message, "source"), "observe_device_same: an unknown source is refused: %s", err.message);
	rc = at_writer_observe_device_same(w, id, -1, &t, 0, NULL, &err);
	TAP_OK(rc == AT_EINVAL, "observe_device_same: source -1 is refused: %s", err.message);
	t.data = host;
	rc = at_writer_observe_same(w, id, 5, &t, 0, &err);
	TAP_OK(rc == AT_EINVAL && strstr(err.message, "source"), "observe_same (host): an unknown source is refused: %s", err.message);
	at_writer_abandon(w);
	device_free(dev);
	remove(file);
}
#endif

static void add_cases(int quick, int big)
{
	static const enum at_dtype dtypes[] = {AT_F32, AT_F16, AT_BF16};
	for (int di = 0; di < 3; di++) {
		for (int bct = 0; bct < 2; bct++) {
			for (int kind = 0; kind < N_KINDS; kind++) {
				if (quick && kind != NONFINITE && kind != OFFSET)
					continue;
				struct test_case tc = {dtypes[di], bct, 2, quick ? 40 : 150, 100, kind, 2,
				                       AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0};
				if (kind == OUTLIERS) {
					tc.policy = bct ? AT_SAMPLE_FIRST : AT_SAMPLE_EVERY;
					tc.sample_n = bct ? 5 : 7;
					tc.max_samples = 30;
				}
				if (kind == GAUSS) { /* odd channels: the scalar path and a partial tile */
					tc.channels = 101;
				}
				run_case(&tc, private_dir());
			}
		}
	}
	const char *dir = private_dir();
	/* enough rows to split them across blocks with shared-memory histograms */
	struct test_case split = {AT_BF16, 0, 4, quick ? 300 : 400, 130, NONFINITE, 3,
	                          AT_SAMPLE_EVERY, 64, 1 << 20, 64, 0, 0};
	run_case(&split, dir);
	/* exact zeros beside tiny values in a shared histogram: bins 0 and 1 */
	struct test_case tiny[] = {
		{AT_BF16, 0, 2, quick ? 300 : 600, 100, ZEROS_TINY, 1, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0},
		{AT_F16, 1, 2, quick ? 300 : 600, 72, ZEROS_TINY, 2, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0},
		{AT_F32, 0, 2, quick ? 300 : 600, 100, ZEROS_TINY, 1, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0},
	};
	for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
		run_case(&tiny[i], dir);
	/* rows that recur: each later call's values tie the floor that the
	 * earlier calls set, split rows and a shared histogram */
	struct test_case repeated = {AT_BF16, 0, 4, quick ? 300 : 600, 130, REPEATED, 3,
	                             AT_SAMPLE_NONE, 1, 1 << 20, 64, 0, 0};
	run_case(&repeated, dir);
	repeated.reverse = 1;
	run_case(&repeated, dir);
	/* the launches' K best merged with many candidates and with few: after
	 * the checkpoint, every block sends its K best (no floor yet), the next
	 * call only what beats the floor, and the surge (64 times larger) every
	 * block's K best again, displacing all; twice: each tensor observed
	 * again at the same tokens, so that identical candidates (value, token
	 * and channel) meet in the merges */
	struct test_case surge = {AT_BF16, 0, 4, 40, 1100, SURGE, 4, AT_SAMPLE_NONE, 1, 1 << 20, 64, 0, 0};
	run_case(&surge, dir);
	surge.twice = 1;
	run_case(&surge, dir);
	repeated.twice = 1;
	run_case(&repeated, dir);
	/* the floor a launch starts from is the K-th best, not the one before
	 * it: many blocks (K = 64), and one block of one warp (K = 16) */
	struct test_case ladder[] = {
		{AT_BF16, 0, 3, 40, 1100, LADDER, 3, AT_SAMPLE_NONE, 1, 1 << 20, 64, 0, 0},
		{AT_F32, 1, 3, 20, 50, LADDER, 3, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0},
	};
	for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++)
		run_case(&ladder[i], dir);
	/* the vector path (rows 16-byte aligned) with a partial last tile of 8
	 * channels, on data with NaN/Inf and outliers */
	struct test_case partial_tile[] = {
		{AT_BF16, 0, 2, quick ? 90 : 300, 200, NONFINITE, 2, AT_SAMPLE_EVERY, 5, 1 << 20, 64, 0, 0},
		{AT_F16, 0, 3, quick ? 60 : 200, 136, OUTLIERS, 2, AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0},
		/* a reservoir: rows chosen on the host, gathered on the device,
		 * landing late; the same rows as the host path's */
		{AT_BF16, 1, 3, quick ? 90 : 300, 72, OUTLIERS, 3, AT_SAMPLE_RESERVOIR, 40, 1 << 20, 16, 0, 0},
	};
	for (size_t i = 0; i < sizeof partial_tile / sizeof partial_tile[0]; i++)
		run_case(&partial_tile[i], dir);
	/* one token, many channels: the thin shape */
	struct test_case thin = {AT_BF16, 0, 1, 1, quick ? 700 : 4100, GAUSS, 1, AT_SAMPLE_NONE, 1,
	                         1 << 20, 64, 0, 0};
	run_case(&thin, dir);
	if (!big)
		return;
	struct test_case large[] = {
		{AT_BF16, 0, 4, 2048, 2048, OUTLIERS, 4, AT_SAMPLE_EVERY, 64, 1 << 20, 64, 0, 0},
		{AT_F16, 1, 8, 512, 768, NONFINITE, 2, AT_SAMPLE_NONE, 1, 1 << 20, 256, 0, 0},
		{AT_F32, 0, 2, 4096, 1000, OFFSET, 2, AT_SAMPLE_FIRST, 3, 1 << 20, 64, 0, 0},
		{AT_BF16, 0, 1, 8192, 520, ZEROS, 1, AT_SAMPLE_NONE, 1, 1 << 20, 64, 0, 0},
	};
	for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
		run_case(&large[i], dir);
}

#ifdef HAVE_DEVICE
/* observe_same = full observations, in every dtype and layout, on data with
 * NaN/Inf, a large offset, outliers (sampled by both policies) and odd
 * channels, and on enough rows to split them across blocks. */
static void add_same_cases(int quick)
{
	static const enum at_dtype dtypes[] = {AT_F32, AT_F16, AT_BF16};
	static const enum data_kind kinds[] = {NONFINITE, OFFSET, OUTLIERS, GAUSS};
	const char *dir = private_dir();
	for (int di = 0; di < 3; di++)
		for (int bct = 0; bct < 2; bct++)
			for (int ki = 0; ki < 4; ki++) {
				if (quick && ki > 1)
					continue;
				struct test_case tc = {dtypes[di], bct, 3, quick ? 40 : 90, 100, kinds[ki], 3,
				                       AT_SAMPLE_NONE, 1, 1 << 20, 16, 0, 0};
				if (kinds[ki] == OUTLIERS) {
					tc.policy = bct ? AT_SAMPLE_FIRST : AT_SAMPLE_EVERY;
					tc.sample_n = bct ? 5 : 7;
					tc.max_samples = 30;
				}
				if (kinds[ki] == GAUSS)
					tc.channels = 101;
				same_case(&tc, dir);
			}
	struct test_case split = {AT_BF16, 0, 4, quick ? 300 : 400, 130, NONFINITE, 2,
	                          AT_SAMPLE_EVERY, 64, 1 << 20, 64, 0, 0};
	same_case(&split, dir);
}
#endif

int main(int argc, char **argv)
{
	int quick = argc > 1 && !strcmp(argv[1], "--quick");
	int big = argc > 1 && !strcmp(argv[1], "--big");
#ifndef HAVE_DEVICE
	/* Built without CUDA: the device API must say so, clearly. */
	struct at_writer_options o;
	at_writer_options_init(&o);
	struct at_error err;
	struct at_writer *w;
	int32_t id;
	char file[512];
	snprintf(file, sizeof file, "%s/nocuda-%ld.h5", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
	         (long)getpid());
	struct at_point_desc desc = {"p", -1, "other", "p", "", "", "out", 4, 0, 0, 0};
	float dummy[8] = {0};
	struct at_tensor t = {dummy, AT_F32, 1, 2, 4, 8, 4, 1};
	if (at_writer_create(&w, file, &o, &err) || at_writer_add_point(w, &desc, &id, &err)) {
		fprintf(stderr, "test-device: %s\n", err.message);
		return 99;
	}
	int rc = at_writer_observe_device(w, id, &t, 0, NULL, &err);
	at_writer_abandon(w);
	remove(file);
	if (rc != AT_ENOSYS || !strstr(err.message, "built without CUDA")) {
		printf("FAIL: observe_device without CUDA returned %s: %s\n", at_status_name(rc),
		       err.message);
		return 1;
	}
	if (at_cuda_available()) {
		printf("FAIL: at_cuda_available() is 1 in a build without CUDA\n");
		return 1;
	}
	printf("ok - without CUDA, observe_device says: %s\n", err.message);
	printf("SKIP: no CUDA device (libacttrace built without CUDA)\n");
	return 77;
#else
	if (!at_cuda_available()) {
		printf("SKIP: no CUDA device\n");
		return 77;
	}
	const char *dir = private_dir();
	bad_calls(dir);
#ifndef ATC_EMU
	graph_capture(dir);
#endif
	add_cases(quick, big);
	same_bad_calls(dir);
	path_cases(dir);
	add_same_cases(quick);
	printf("# largest relative error against float64: mean %.3g, std %.3g\n", worst_mean_err,
	       worst_std_err);
	remove_private_dir();
	return tap_done();
#endif
}
