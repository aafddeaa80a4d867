/* accum.c: per-channel activation statistics (central moments, |x| histograms,
 * top-K extremes), folded tile by tile so that any split of the data combines
 * to the same result up to rounding. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"

/* A thread owns whole blocks of channels, so no two threads ever write the
 * same accumulator; 32 channels x 256 rows of float (32 KiB) stay in L1/L2. */
#define BLOCK_CHANNELS 32
#define TILE_ROWS 256
/* Below this many elements a parallel region costs more than it saves. */
#define PARALLEL_MIN_ELEMS (1 << 15)

#ifdef _OPENMP
#define AT_SIMD _Pragma("omp simd")
#else
#define AT_SIMD
#endif

_Static_assert(AT_HIST_BINS_PER_OCTAVE == 4, "the bin edges below are quarter octaves");

/* Smallest doubles >= 2^(1/4), 2^(1/2), 2^(3/4) (rounded up from 60-digit
 * expansions).  The edges are irrational, so no double lies between an edge
 * and its upward rounding: `m >= quarter_edges[k]` is exact for every double. */
static const double quarter_edges[3] = {
	0x1.306fe0a31b716p+0, 0x1.6a09e667f3bcdp+0, 0x1.ae89f995ad3aep+0
};
/* The same edges as thresholds on a float's 23-bit fraction field:
 * ceil((edge - 1) * 2^23). */
static const uint32_t quarter_edges_f32[3] = { 1587185u, 3474676u, 5719293u };

/* ---------------------------------------------------------------- histogram */

static int quarter_of_octave(double m)
{
	return (m >= quarter_edges[0]) + (m >= quarter_edges[1]) + (m >= quarter_edges[2]);
}

int at_hist_bin(double absx)
{
	double a = fabs(absx);
	if (a == 0)
		return 0;
	if (!(a < 0x1p24)) /* also +inf; NaN has no bin, put it with the overflow */
		return AT_HIST_BINS - 1;
	if (a < 0x1p-24)
		return 1;
	int e;
	double m = 2 * frexp(a, &e); /* a = m 2^(e-1), 1 <= m < 2 */
	return 2 + (e - 1 - AT_HIST_MIN_EXP) * AT_HIST_BINS_PER_OCTAVE + quarter_of_octave(m);
}

/* The smallest double in the bin, so that at_hist_bin(at_hist_lower_edge(b)) == b
 * and the double just below lands in b - 1. */
double at_hist_lower_edge(int bin)
{
	if (bin < 0)
		return NAN;
	if (bin == 0)
		return 0.0;
	if (bin == 1)
		return 4.9406564584124654e-324; /* DBL_TRUE_MIN */
	if (bin >= AT_HIST_BINS)
		return INFINITY;
	int i = bin - 2;
	int quarter = i % AT_HIST_BINS_PER_OCTAVE;
	double m = quarter == 0 ? 1.0 : quarter_edges[quarter - 1];
	return ldexp(m, AT_HIST_MIN_EXP + i / AT_HIST_BINS_PER_OCTAVE);
}

/* ---------------------------------------------------------------- moments */

/* Count, mean and central moment sums of one sample. */
struct central {
	double n, mean, m2, m3, m4;
};

/* Exact pairwise combination of two samples' central moments: Chan, Golub &
 * LeVeque 1979 ("Updating formulae and a pairwise algorithm for computing
 * sample variances") for m2, Pebay 2008 ("Formulas for robust, one-pass
 * parallel computation of covariances and arbitrary-order statistical
 * moments", eq. 2.1 and 3.1) for m3 and m4. */
static struct central central_combine(struct central a, struct central b)
{
	if (b.n == 0)
		return a;
	if (a.n == 0)
		return b;
	double n = a.n + b.n, delta = b.mean - a.mean;
	double delta_n = delta / n, delta_n2 = delta_n * delta_n;
	double term = delta * delta_n * a.n * b.n; /* delta^2 na nb / n */
	struct central c;
	c.n = n;
	c.mean = a.mean + delta_n * b.n;
	c.m2 = a.m2 + b.m2 + term;
	c.m3 = a.m3 + b.m3 + term * delta_n * (a.n - b.n) +
	       3.0 * delta_n * (a.n * b.m2 - b.n * a.m2);
	c.m4 = a.m4 + b.m4 + term * delta_n2 * (a.n * a.n - a.n * b.n + b.n * b.n) +
	       6.0 * delta_n2 * (a.n * a.n * b.m2 + b.n * b.n * a.m2) +
	       4.0 * delta_n * (a.n * b.m3 - b.n * a.m3);
	return c;
}

static struct central central_of_moments(const struct at_moments *m)
{
	struct central c = { (double)m->count, m->mean, m->m2, m->m3, m->m4 };
	return c;
}

static void empty_moments(struct at_moments *m)
{
	memset(m, 0, sizeof *m);
	m->min = m->max = m->absmax = NAN;
}

void at_moments_merge(struct at_moments *a, const struct at_moments *b)
{
	struct at_moments other = *b; /* a and b may be the same */
	a->nonfinite += other.nonfinite;
	if (other.count == 0)
		return;
	struct central c = central_combine(central_of_moments(a), central_of_moments(&other));
	a->count += other.count;
	a->mean = c.mean;
	a->m2 = c.m2;
	a->m3 = c.m3;
	a->m4 = c.m4;
	/* fmin/fmax skip the NaN of an empty side */
	a->min = fmin(a->min, other.min);
	a->max = fmax(a->max, other.max);
	a->absmax = fmax(a->absmax, other.absmax);
	a->abssum += other.abssum;
}

double at_moments_variance(const struct at_moments *m)
{
	if (m->count < 2)
		return NAN;
	return m->m2 / (double)(m->count - 1);
}

double at_moments_std(const struct at_moments *m)
{
	return sqrt(at_moments_variance(m));
}

double at_moments_skewness(const struct at_moments *m)
{
	if (m->count < 2 || m->m2 == 0)
		return NAN;
	return sqrt((double)m->count) * m->m3 / pow(m->m2, 1.5);
}

double at_moments_kurtosis(const struct at_moments *m)
{
	if (m->count < 2 || m->m2 == 0)
		return NAN;
	return (double)m->count * m->m4 / (m->m2 * m->m2) - 3.0;
}

double at_moments_absmean(const struct at_moments *m)
{
	if (m->count == 0)
		return NAN;
	return m->abssum / (double)m->count;
}

/* ---------------------------------------------------------------- stats life cycle */

void at_stats_free(struct at_stats *s)
{
	if (!s)
		return;
	free(s->count);
	free(s->nonfinite);
	free(s->mean);
	free(s->m2);
	free(s->m3);
	free(s->m4);
	free(s->min);
	free(s->max);
	free(s->absmax);
	free(s->abssum);
	free(s->hist);
	free(s->extremes);
	memset(s, 0, sizeof *s);
}

static void fill_order_stats(struct at_stats *s)
{
	for (int64_t c = 0; c < s->channels; c++)
		s->min[c] = s->max[c] = s->absmax[c] = NAN;
}

void at_stats_reset(struct at_stats *s)
{
	if (!s || !s->count)
		return;
	size_t n = (size_t)s->channels;
	memset(s->count, 0, n * sizeof *s->count);
	memset(s->nonfinite, 0, n * sizeof *s->nonfinite);
	memset(s->mean, 0, n * sizeof *s->mean);
	memset(s->m2, 0, n * sizeof *s->m2);
	memset(s->m3, 0, n * sizeof *s->m3);
	memset(s->m4, 0, n * sizeof *s->m4);
	memset(s->abssum, 0, n * sizeof *s->abssum);
	fill_order_stats(s);
	if (s->hist)
		memset(s->hist, 0, n * AT_HIST_BINS * sizeof *s->hist);
	s->n_extremes = 0;
}

static int stats_alloc(struct at_stats *s, size_t n, int with_hist, int32_t max_extremes)
{
	s->count = calloc(n, sizeof *s->count);
	s->nonfinite = calloc(n, sizeof *s->nonfinite);
	s->mean = calloc(n, sizeof *s->mean);
	s->m2 = calloc(n, sizeof *s->m2);
	s->m3 = calloc(n, sizeof *s->m3);
	s->m4 = calloc(n, sizeof *s->m4);
	s->min = calloc(n, sizeof *s->min);
	s->max = calloc(n, sizeof *s->max);
	s->absmax = calloc(n, sizeof *s->absmax);
	s->abssum = calloc(n, sizeof *s->abssum);
	if (!s->count || !s->nonfinite || !s->mean || !s->m2 || !s->m3 || !s->m4 || !s->min ||
	    !s->max || !s->absmax || !s->abssum)
		return AT_ENOMEM;
	if (with_hist && !(s->hist = calloc(n * AT_HIST_BINS, sizeof *s->hist)))
		return AT_ENOMEM;
	if (max_extremes > 0 &&
	    !(s->extremes = calloc((size_t)max_extremes, sizeof *s->extremes)))
		return AT_ENOMEM;
	return AT_OK;
}

int at_stats_init(struct at_stats *s, int64_t channels, int with_hist, int32_t max_extremes,
                  struct at_error *err)
{
	if (!s)
		return at_fail(err, AT_EINVAL, "statistics: NULL accumulator");
	memset(s, 0, sizeof *s);
	if (channels <= 0 || max_extremes < 0)
		return at_fail(err, AT_EINVAL, "statistics: bad size (channels %lld, extremes %d)",
		               (long long)channels, (int)max_extremes);
	if ((uint64_t)channels > SIZE_MAX / (AT_HIST_BINS * sizeof(uint32_t)))
		return at_fail(err, AT_ENOMEM, "statistics: %lld channels is too many",
		               (long long)channels);
	if (stats_alloc(s, (size_t)channels, with_hist, max_extremes) != AT_OK) {
		at_stats_free(s);
		return at_fail(err, AT_ENOMEM, "statistics: out of memory for %lld channels",
		               (long long)channels);
	}
	s->channels = channels;
	s->max_extremes = max_extremes;
	/* calloc gave zeros: only the order statistics start elsewhere.  Not
	 * at_stats_reset, whose memsets would touch every page of the histogram
	 * (2 MB a point of 2560 channels): opening a capture of 462 points spent
	 * a third of its time in page faults for arrays the device path leaves
	 * untouched until the first drain. */
	fill_order_stats(s);
	return AT_OK;
}

int stats_refit(struct at_stats *s, int64_t channels, int with_hist, int32_t max_extremes,
                struct at_error *err)
{
	if (!s->count || s->channels != channels || max_extremes < 0) {
		at_stats_free(s);
		return at_stats_init(s, channels, with_hist, max_extremes, err);
	}
	if (!with_hist) {
		free(s->hist);
		s->hist = NULL;
	} else if (!s->hist && !(s->hist = malloc((size_t)channels * AT_HIST_BINS * sizeof *s->hist))) {
		at_stats_free(s);
		return at_fail(err, AT_ENOMEM, "statistics: out of memory for %lld channels",
		               (long long)channels);
	}
	if (s->max_extremes != max_extremes) {
		free(s->extremes);
		s->extremes = max_extremes > 0 ? calloc((size_t)max_extremes, sizeof *s->extremes) : NULL;
		if (max_extremes > 0 && !s->extremes) {
			at_stats_free(s);
			return at_fail(err, AT_ENOMEM, "statistics: out of memory for %d extremes",
			               (int)max_extremes);
		}
		s->max_extremes = max_extremes;
	} else if (s->extremes) {
		memset(s->extremes, 0, (size_t)max_extremes * sizeof *s->extremes);
	}
	s->n_extremes = 0;
	return AT_OK;
}

/* ---------------------------------------------------------------- extremes */

/* The ranking of extremes: larger |value| first, then the smaller token, the
 * smaller channel, and (same element seen twice) the larger value, so that the
 * kept set is a function of the data alone, whatever the threads or splits. */
static int extreme_before(const struct at_extreme *a, const struct at_extreme *b)
{
	double abs_a = fabs(a->value), abs_b = fabs(b->value);
	if (abs_a != abs_b)
		return abs_a > abs_b;
	if (a->token != b->token)
		return a->token < b->token;
	if (a->channel != b->channel)
		return a->channel < b->channel;
	return a->value > b->value;
}

static int extreme_compare(const void *pa, const void *pb)
{
	const struct at_extreme *a = pa, *b = pb;
	if (extreme_before(a, b))
		return -1;
	return extreme_before(b, a);
}

/* Heap with the worst kept extreme at the root. */
static void heap_swap(struct at_extreme *heap, int32_t i, int32_t j)
{
	struct at_extreme tmp = heap[i];
	heap[i] = heap[j];
	heap[j] = tmp;
}

static void heap_sift_up(struct at_extreme *heap, int32_t i)
{
	while (i > 0 && extreme_before(&heap[(i - 1) / 2], &heap[i])) {
		heap_swap(heap, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_sift_down(struct at_extreme *heap, int32_t n, int32_t i)
{
	for (;;) {
		int32_t worst = i, left = 2 * i + 1, right = 2 * i + 2;
		if (left < n && extreme_before(&heap[worst], &heap[left]))
			worst = left;
		if (right < n && extreme_before(&heap[worst], &heap[right]))
			worst = right;
		if (worst == i)
			return;
		heap_swap(heap, i, worst);
		i = worst;
	}
}

static void heap_offer(struct at_extreme *heap, int32_t *n, int32_t capacity,
                       const struct at_extreme *e)
{
	if (*n < capacity) {
		heap[*n] = *e;
		heap_sift_up(heap, (*n)++);
	} else if (extreme_before(e, &heap[0])) {
		heap[0] = *e;
		heap_sift_down(heap, *n, 0);
	}
}

/* Sort the union gathered in `all` and keep the best max_extremes in s. */
static void extremes_rerank(struct at_stats *s, struct at_extreme *all, size_t n)
{
	qsort(all, n, sizeof *all, extreme_compare);
	if (n > (size_t)s->max_extremes)
		n = (size_t)s->max_extremes;
	if (n)
		memcpy(s->extremes, all, n * sizeof *all);
	s->n_extremes = (int32_t)n;
}

/* ---------------------------------------------------------------- tiles */

/* A tile of up to TILE_ROWS rows of one channel block, widened to float,
 * [row][channel] with the channels contiguous. */
struct tile {
	float x[TILE_ROWS * BLOCK_CHANNELS];
	uint8_t bin[TILE_ROWS * BLOCK_CHANNELS]; /* histogram bin of each x */
	int64_t row_offset[TILE_ROWS]; /* element offset of (b, r) */
	int rows, channels;
};

/* Per-channel results of the two passes over a tile.  Sums are of x - shift,
 * where shift is the channel's mean before this add (or its first finite
 * value): deviations from the shift are O(spread), not O(|mean|), so neither
 * the tile sums nor the running mean of the call lose digits to a large mean
 * (a mean of 1e4 with std 0.01 costs nothing). */
struct tile_sums {
	double shift[BLOCK_CHANNELS];
	uint32_t count[BLOCK_CHANNELS];
	float min[BLOCK_CHANNELS], max[BLOCK_CHANNELS], absmax[BLOCK_CHANNELS];
	double sum[BLOCK_CHANNELS], abssum[BLOCK_CHANNELS], mean0[BLOCK_CHANNELS];
	double s1[BLOCK_CHANNELS], s2[BLOCK_CHANNELS], s3[BLOCK_CHANNELS], s4[BLOCK_CHANNELS];
};

/* One thread's workspace and its candidate extremes. */
struct worker {
	struct tile tile;
	struct tile_sums sums;
	struct central call[BLOCK_CHANNELS]; /* this add's values so far, mean about shift */
	struct at_extreme *heap;
	int32_t heap_n;
	char pad[64]; /* keeps heap_n off the cache line of the next worker's tile */
};

struct add_job {
	struct at_stats *s;
	const struct at_tensor *t;
	int64_t token_base;
	int64_t total_rows;   /* batches * rows */
	double extreme_floor; /* |value| of the K-th extreme kept before this add */
};

/* Element offsets of global rows g0 .. g0+n, where row g is (g / rows, g % rows). */
static void tile_offsets(struct tile *tile, const struct at_tensor *t, int64_t g0, int n)
{
	int64_t b = g0 / t->rows, r = g0 % t->rows;
	for (int i = 0; i < n; i++) {
		tile->row_offset[i] = b * t->batch_stride + r * t->row_stride;
		if (++r == t->rows) {
			r = 0;
			b++;
		}
	}
	tile->rows = n;
}

static void tile_gather(struct tile *tile, const struct at_tensor *t, int64_t c0, int nb)
{
	int64_t cs = t->channel_stride;
	tile->channels = nb;
	if (llabs(cs) <= llabs(t->row_stride) || nb == 1) {
		/* channels are the shorter stride ([T, C], [B, T, C]): read along rows */
		for (int r = 0; r < tile->rows; r++)
			at_load_run(t->data, t->dtype, tile->row_offset[r] + c0 * cs, cs, nb,
			            tile->x + r * nb);
		return;
	}
	/* rows are the shorter stride ([B, C, T]): read down each channel */
	for (int j = 0; j < nb; j++)
		for (int r = 0; r < tile->rows; r++)
			tile->x[r * nb + j] =
				at_load(t->data, t->dtype, tile->row_offset[r] + (c0 + j) * cs);
}

/* A channel that has seen no finite value yet takes its first one as shift. */
static void tile_shifts(const struct tile *tile, struct tile_sums *a)
{
	int nb = tile->channels;
	for (int j = 0; j < nb; j++) {
		for (int r = 0; r < tile->rows && isnan(a->shift[j]); r++)
			if (fabsf(tile->x[r * nb + j]) <= FLT_MAX)
				a->shift[j] = tile->x[r * nb + j];
	}
}

/* x with NaN and +-inf replaced by 0, and whether it was finite, by bit masks.
 * The passes below then use only selects and multiplications by a 0/1 weight:
 * GCC does not if-convert, hence does not vectorise, a loop where a float
 * comparison or conversion sits behind a branch (it might trap). */
static inline float finite_or_zero(float x, uint32_t *finite)
{
	uint32_t bits;
	memcpy(&bits, &x, sizeof bits);
	*finite = (bits & 0x7f800000u) != 0x7f800000u;
	bits &= 0u - *finite;
	memcpy(&x, &bits, sizeof x);
	return x;
}

/* Pass 1: counts, sums of x - shift, min/max/absmax of the finite values. */
static void tile_pass1(const struct tile *tile, struct tile_sums *a)
{
	int nb = tile->channels;
	for (int j = 0; j < nb; j++) {
		a->count[j] = 0;
		a->min[j] = INFINITY;
		a->max[j] = -INFINITY;
		a->absmax[j] = 0;
		a->sum[j] = a->abssum[j] = 0;
	}
	for (int r = 0; r < tile->rows; r++) {
		const float *row = tile->x + r * nb;
		AT_SIMD
		for (int j = 0; j < nb; j++) {
			uint32_t finite;
			float x = finite_or_zero(row[j], &finite), ax = fabsf(x);
			double weight = finite ? 1.0 : 0.0;
			float low = finite ? x : INFINITY, high = finite ? x : -INFINITY;
			a->count[j] += finite;
			a->sum[j] += weight * ((double)x - a->shift[j]);
			a->abssum[j] += (double)ax;
			a->min[j] = low < a->min[j] ? low : a->min[j];
			a->max[j] = high > a->max[j] ? high : a->max[j];
			a->absmax[j] = ax > a->absmax[j] ? ax : a->absmax[j];
		}
	}
}

/* Pass 2: power sums of the deviations from the pass-1 mean.  s1 is kept too:
 * it is the rounding error of that mean, removed in tile_central. */
static void tile_pass2(const struct tile *tile, struct tile_sums *a)
{
	int nb = tile->channels;
	for (int j = 0; j < nb; j++) {
		a->mean0[j] = a->count[j] ? a->sum[j] / a->count[j] : 0.0;
		a->s1[j] = a->s2[j] = a->s3[j] = a->s4[j] = 0;
	}
	for (int r = 0; r < tile->rows; r++) {
		const float *row = tile->x + r * nb;
		AT_SIMD
		for (int j = 0; j < nb; j++) {
			uint32_t finite;
			float x = finite_or_zero(row[j], &finite);
			double weight = finite ? 1.0 : 0.0;
			double d = weight * (((double)x - a->shift[j]) - a->mean0[j]);
			double d2 = d * d;
			a->s1[j] += d;
			a->s2[j] += d2;
			a->s3[j] += d2 * d;
			a->s4[j] += d2 * d2;
		}
	}
}

/* Central moments of channel j of a tile, mean about the shift.  Corrected
 * two-pass algorithm (Chan, Golub & LeVeque 1983, "Algorithms for computing
 * the sample variance: analysis and recommendations"): the power sums about
 * mean0 are moved exactly (binomial expansion) to the corrected mean
 * mean0 + s1/n. */
static struct central tile_central(const struct tile_sums *a, int j)
{
	double n = a->count[j], d = a->s1[j] / n, d2 = d * d;
	struct central c;
	c.n = n;
	c.mean = a->mean0[j] + d;
	c.m2 = a->s2[j] - a->s1[j] * d;
	c.m3 = a->s3[j] - 3.0 * d * a->s2[j] + 2.0 * n * d2 * d;
	c.m4 = a->s4[j] - 4.0 * d * a->s3[j] + 6.0 * d2 * a->s2[j] - 3.0 * n * d2 * d2;
	if (c.m2 < 0)
		c.m2 = 0;
	return c;
}

/* at_hist_bin of a float, from its bits (the fraction against the edges as
 * integers), without branches so that a whole tile's bins are computed in one
 * vectorised loop; AT_HIST_BINS for NaN and +-inf. */
static inline uint8_t hist_bin_or_skip(float x)
{
	uint32_t bits;
	memcpy(&bits, &x, sizeof bits);
	bits &= 0x7fffffffu;
	int biased = (int)(bits >> 23), octave = biased - (127 + AT_HIST_MIN_EXP);
	uint32_t fraction = bits & 0x7fffffu;
	int bin = 2 + octave * AT_HIST_BINS_PER_OCTAVE + (fraction >= quarter_edges_f32[0]) +
	          (fraction >= quarter_edges_f32[1]) + (fraction >= quarter_edges_f32[2]);
	bin = octave < 0 ? 1 : bin;
	bin = bits == 0 ? 0 : bin;
	bin = octave >= AT_HIST_MAX_EXP - AT_HIST_MIN_EXP ? AT_HIST_BINS - 1 : bin;
	bin = biased == 255 ? AT_HIST_BINS : bin;
	return (uint8_t)bin;
}

_Static_assert(AT_HIST_BINS < 256, "bins of a tile are kept as uint8_t");

static void tile_hist(struct tile *tile, uint32_t *block_hist)
{
	int nb = tile->channels, n = tile->rows * nb;
	AT_SIMD
	for (int i = 0; i < n; i++)
		tile->bin[i] = hist_bin_or_skip(tile->x[i]);
	for (int r = 0; r < tile->rows; r++) {
		const uint8_t *row = tile->bin + r * nb;
		for (int j = 0; j < nb; j++)
			if (row[j] < AT_HIST_BINS)
				block_hist[j * AT_HIST_BINS + row[j]]++;
	}
}

/* Fold a tile into the call's moments of each channel (Chan / Pebay) and its
 * order statistics and counts straight into the accumulators. */
static void tile_fold(struct worker *w, struct at_stats *s, int64_t c0)
{
	const struct tile_sums *a = &w->sums;
	for (int j = 0; j < w->tile.channels; j++) {
		int64_t c = c0 + j;
		s->nonfinite[c] += (uint64_t)(w->tile.rows - (int)a->count[j]);
		if (a->count[j] == 0)
			continue;
		w->call[j] = central_combine(w->call[j], tile_central(a, j));
		s->min[c] = fmin(s->min[c], a->min[j]);
		s->max[c] = fmax(s->max[c], a->max[j]);
		s->absmax[c] = fmax(s->absmax[c], a->absmax[j]);
		s->abssum[c] += a->abssum[j];
	}
}

static void block_begin(struct worker *w, const struct at_stats *s, int64_t c0, int nb)
{
	for (int j = 0; j < nb; j++) {
		w->sums.shift[j] = s->count[c0 + j] ? s->mean[c0 + j] : NAN;
		w->call[j] = (struct central){ 0, 0, 0, 0, 0 };
	}
}

/* Fold the call's moments into the accumulators.  With the shift equal to the
 * stored mean, the difference of means in Pebay's formulas is exactly the
 * call's mean about the shift. */
static void block_end(struct worker *w, struct at_stats *s, int64_t c0, int nb)
{
	for (int j = 0; j < nb; j++) {
		int64_t c = c0 + j;
		if (w->call[j].n == 0)
			continue;
		struct central before = { (double)s->count[c], 0.0, s->m2[c], s->m3[c], s->m4[c] };
		struct central after = central_combine(before, w->call[j]);
		s->count[c] += (uint64_t)w->call[j].n;
		s->mean[c] = w->sums.shift[j] + after.mean;
		s->m2[c] = after.m2;
		s->m3[c] = after.m3;
		s->m4[c] = after.m4;
	}
}

/* |value| a new candidate must reach to enter this worker's heap (ties are
 * let through and settled by extreme_before). */
static double worker_floor(const struct worker *w, const struct add_job *job)
{
	if (w->heap_n == job->s->max_extremes)
		return fabs(w->heap[0].value);
	return job->extreme_floor;
}

/* Offer a tile's large values as extremes; a channel whose tile absmax is
 * below the floor is skipped whole, which is the common case. */
static void tile_extremes(struct worker *w, const struct add_job *job, int64_t c0, int64_t g0)
{
	const struct tile *tile = &w->tile;
	int nb = tile->channels;
	for (int j = 0; j < nb; j++) {
		if (w->sums.count[j] == 0 || w->sums.absmax[j] < worker_floor(w, job))
			continue;
		for (int r = 0; r < tile->rows; r++) {
			float x = tile->x[r * nb + j];
			if (!(fabsf(x) <= FLT_MAX) || fabsf(x) < worker_floor(w, job))
				continue;
			struct at_extreme e = { x, job->token_base + g0 + r, (int32_t)(c0 + j) };
			heap_offer(w->heap, &w->heap_n, job->s->max_extremes, &e);
		}
	}
}

static void add_block(const struct add_job *job, struct worker *w, int64_t c0)
{
	struct at_stats *s = job->s;
	int64_t left = s->channels - c0;
	int nb = left < BLOCK_CHANNELS ? (int)left : BLOCK_CHANNELS;
	block_begin(w, s, c0, nb);
	for (int64_t g0 = 0; g0 < job->total_rows; g0 += TILE_ROWS) {
		int64_t rows_left = job->total_rows - g0;
		tile_offsets(&w->tile, job->t, g0, rows_left < TILE_ROWS ? (int)rows_left : TILE_ROWS);
		tile_gather(&w->tile, job->t, c0, nb);
		tile_shifts(&w->tile, &w->sums);
		tile_pass1(&w->tile, &w->sums);
		tile_pass2(&w->tile, &w->sums);
		tile_fold(w, s, c0);
		if (s->hist)
			tile_hist(&w->tile, s->hist + c0 * AT_HIST_BINS);
		if (s->max_extremes > 0)
			tile_extremes(w, job, c0, g0);
	}
	block_end(w, s, c0, nb);
}

/* ---------------------------------------------------------------- at_stats_add */

static int stats_check(const struct at_stats *s, const char *what, struct at_error *err)
{
	if (!s || s->channels <= 0 || !s->count)
		return at_fail(err, AT_EINVAL, "statistics: %s is not initialised", what);
	return AT_OK;
}

/* Histogram bins are uint32: refuse, before touching anything, an add after
 * which some channel could hold more than 2^32-1 values (all in one bin). */
static int check_hist_room(const struct at_stats *s, uint64_t rows, struct at_error *err)
{
	if (!s->hist)
		return AT_OK;
	for (int64_t c = 0; c < s->channels; c++) {
		uint64_t seen = s->count[c] + s->nonfinite[c];
		if (rows > UINT32_MAX || seen > UINT32_MAX - rows)
			return at_fail(err, AT_ERANGE,
			               "statistics: channel %lld would hold %llu values, more than "
			               "a 32-bit histogram bin can count",
			               (long long)c, (unsigned long long)(seen + rows));
	}
	return AT_OK;
}

static int tensor_rows(const struct at_stats *s, const struct at_tensor *t, int64_t *rows,
                       struct at_error *err)
{
	int rc = at_tensor_check(t, err);
	if (rc != AT_OK)
		return rc;
	if (t->channels != s->channels)
		return at_fail(err, AT_EINVAL, "tensor: %lld channels, statistics have %lld",
		               (long long)t->channels, (long long)s->channels);
	if (t->rows > 0 && t->batches > INT64_MAX / t->rows)
		return at_fail(err, AT_EINVAL, "tensor: %lld x %lld rows overflow",
		               (long long)t->batches, (long long)t->rows);
	*rows = t->batches * t->rows;
	return AT_OK;
}

static int max_threads(void)
{
#ifdef _OPENMP
	return omp_get_max_threads();
#else
	return 1;
#endif
}

static int thread_id(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

/* Workers and the buffer that gathers their extremes for re-ranking. */
struct workspace {
	struct worker *workers;
	int n_workers;
	struct at_extreme *heaps, *all;
};

static void workspace_free(struct workspace *ws)
{
	free(ws->workers);
	free(ws->heaps);
	free(ws->all);
}

static int workspace_alloc(struct workspace *ws, const struct at_stats *s, int64_t n_blocks,
                           int64_t total_rows)
{
	int64_t n = max_threads();
	if (n > n_blocks)
		n = n_blocks;
	if ((double)total_rows * (double)s->channels < PARALLEL_MIN_ELEMS || n < 1)
		n = 1;
	size_t k = (size_t)s->max_extremes;
	memset(ws, 0, sizeof *ws);
	ws->n_workers = (int)n;
	ws->workers = malloc((size_t)n * sizeof *ws->workers);
	if (k) {
		ws->heaps = malloc((size_t)n * k * sizeof *ws->heaps);
		ws->all = malloc(((size_t)n + 1) * k * sizeof *ws->all);
	}
	if (!ws->workers || (k && (!ws->heaps || !ws->all))) {
		workspace_free(ws);
		return AT_ENOMEM;
	}
	for (int i = 0; i < ws->n_workers; i++) {
		ws->workers[i].heap = ws->heaps ? ws->heaps + (size_t)i * k : NULL;
		ws->workers[i].heap_n = 0;
	}
	return AT_OK;
}

static void run_blocks(const struct add_job *job, struct workspace *ws, int64_t n_blocks)
{
#ifdef _OPENMP
#pragma omp parallel for num_threads(ws->n_workers) schedule(dynamic, 1) if (ws->n_workers > 1)
#endif
	for (int64_t block = 0; block < n_blocks; block++)
		add_block(job, &ws->workers[thread_id()], block * BLOCK_CHANNELS);
}

static void workspace_extremes(struct at_stats *s, struct workspace *ws)
{
	size_t n = (size_t)s->n_extremes;
	memcpy(ws->all, s->extremes, n * sizeof *ws->all);
	for (int i = 0; i < ws->n_workers; i++) {
		memcpy(ws->all + n, ws->workers[i].heap,
		       (size_t)ws->workers[i].heap_n * sizeof *ws->all);
		n += (size_t)ws->workers[i].heap_n;
	}
	extremes_rerank(s, ws->all, n);
}

int at_stats_add(struct at_stats *s, const struct at_tensor *t, int64_t token_base,
                 struct at_error *err)
{
	int64_t total_rows = 0;
	int rc = stats_check(s, "accumulator", err);
	if (rc == AT_OK)
		rc = tensor_rows(s, t, &total_rows, err);
	if (rc == AT_OK)
		rc = check_hist_room(s, (uint64_t)total_rows, err);
	if (rc != AT_OK || total_rows == 0)
		return rc;
	int64_t n_blocks = (s->channels + BLOCK_CHANNELS - 1) / BLOCK_CHANNELS;
	struct workspace ws;
	if (workspace_alloc(&ws, s, n_blocks, total_rows) != AT_OK)
		return at_fail(err, AT_ENOMEM, "statistics: out of memory for %d workers",
		               max_threads());
	struct add_job job = { s, t, token_base, total_rows, 0.0 };
	if (s->max_extremes > 0 && s->n_extremes == s->max_extremes)
		job.extreme_floor = fabs(s->extremes[s->n_extremes - 1].value);
	run_blocks(&job, &ws, n_blocks);
	if (s->max_extremes > 0)
		workspace_extremes(s, &ws);
	workspace_free(&ws);
	return AT_OK;
}

/* ---------------------------------------------------------------- merge and queries */

void at_stats_channel(const struct at_stats *s, int64_t channel, struct at_moments *out)
{
	empty_moments(out);
	if (!s || !s->count || channel < 0 || channel >= s->channels)
		return;
	out->count = s->count[channel];
	out->nonfinite = s->nonfinite[channel];
	out->mean = s->mean[channel];
	out->m2 = s->m2[channel];
	out->m3 = s->m3[channel];
	out->m4 = s->m4[channel];
	out->min = s->min[channel];
	out->max = s->max[channel];
	out->absmax = s->absmax[channel];
	out->abssum = s->abssum[channel];
}

static void stats_store_channel(struct at_stats *s, int64_t channel, const struct at_moments *m)
{
	s->count[channel] = m->count;
	s->nonfinite[channel] = m->nonfinite;
	s->mean[channel] = m->mean;
	s->m2[channel] = m->m2;
	s->m3[channel] = m->m3;
	s->m4[channel] = m->m4;
	s->min[channel] = m->min;
	s->max[channel] = m->max;
	s->absmax[channel] = m->absmax;
	s->abssum[channel] = m->abssum;
}

void at_stats_pool(const struct at_stats *s, struct at_moments *out)
{
	empty_moments(out);
	if (!s || !s->count)
		return;
	for (int64_t c = 0; c < s->channels; c++) {
		struct at_moments m;
		at_stats_channel(s, c, &m);
		at_moments_merge(out, &m);
	}
}

static int merge_check(const struct at_stats *dst, const struct at_stats *src,
                       struct at_error *err)
{
	int rc = stats_check(dst, "merge destination", err);
	if (rc == AT_OK)
		rc = stats_check(src, "merge source", err);
	if (rc != AT_OK)
		return rc;
	if (dst->channels != src->channels)
		return at_fail(err, AT_EINVAL, "statistics: cannot merge %lld channels into %lld",
		               (long long)src->channels, (long long)dst->channels);
	if (!dst->hist != !src->hist)
		return at_fail(err, AT_EINVAL, "statistics: cannot merge %s histograms into %s",
		               src->hist ? "kept" : "missing", dst->hist ? "kept" : "missing");
	if (!dst->hist)
		return AT_OK;
	for (int64_t c = 0; c < dst->channels; c++) {
		uint64_t seen = dst->count[c] + dst->nonfinite[c] + src->count[c] + src->nonfinite[c];
		if (seen > UINT32_MAX)
			return at_fail(err, AT_ERANGE,
			               "statistics: merged channel %lld would hold %llu values, more "
			               "than a 32-bit histogram bin can count",
			               (long long)c, (unsigned long long)seen);
	}
	return AT_OK;
}

static void merge_hist(struct at_stats *dst, const struct at_stats *src)
{
	size_t n = (size_t)dst->channels * AT_HIST_BINS;
	for (size_t i = 0; i < n; i++)
		dst->hist[i] += src->hist[i];
}

int at_stats_merge(struct at_stats *dst, const struct at_stats *src, struct at_error *err)
{
	int rc = merge_check(dst, src, err);
	if (rc != AT_OK)
		return rc;
	size_t n_all = (size_t)dst->n_extremes + (size_t)src->n_extremes;
	struct at_extreme *all = NULL;
	if (dst->max_extremes > 0 && n_all > 0) {
		if (!(all = malloc(n_all * sizeof *all)))
			return at_fail(err, AT_ENOMEM, "statistics: out of memory merging extremes");
		memcpy(all, dst->extremes, (size_t)dst->n_extremes * sizeof *all);
		memcpy(all + dst->n_extremes, src->extremes, (size_t)src->n_extremes * sizeof *all);
	}
	for (int64_t c = 0; c < dst->channels; c++) {
		struct at_moments a, b;
		at_stats_channel(dst, c, &a);
		at_stats_channel(src, c, &b);
		at_moments_merge(&a, &b);
		stats_store_channel(dst, c, &a);
	}
	if (dst->hist)
		merge_hist(dst, src);
	if (all)
		extremes_rerank(dst, all, n_all);
	free(all);
	return AT_OK;
}

int stats_place_slice(struct at_stats *dst, const struct at_stats *src, int64_t offset,
                      struct at_error *err)
{
	if (offset < 0 || src->channels > dst->channels - offset || !src->hist != !dst->hist)
		return at_fail(err, AT_EINVAL,
		               "statistics: cannot place %lld channels at %lld of %lld (%s histograms)",
		               (long long)src->channels, (long long)offset, (long long)dst->channels,
		               !src->hist != !dst->hist ? "different" : "the same");
	size_t n = (size_t)src->channels, at = (size_t)offset;
	memcpy(dst->count + at, src->count, n * sizeof *dst->count);
	memcpy(dst->nonfinite + at, src->nonfinite, n * sizeof *dst->nonfinite);
	memcpy(dst->mean + at, src->mean, n * sizeof *dst->mean);
	memcpy(dst->m2 + at, src->m2, n * sizeof *dst->m2);
	memcpy(dst->m3 + at, src->m3, n * sizeof *dst->m3);
	memcpy(dst->m4 + at, src->m4, n * sizeof *dst->m4);
	memcpy(dst->min + at, src->min, n * sizeof *dst->min);
	memcpy(dst->max + at, src->max, n * sizeof *dst->max);
	memcpy(dst->absmax + at, src->absmax, n * sizeof *dst->absmax);
	memcpy(dst->abssum + at, src->abssum, n * sizeof *dst->abssum);
	if (dst->hist)
		memcpy(dst->hist + at * AT_HIST_BINS, src->hist, n * AT_HIST_BINS * sizeof *dst->hist);
	size_t n_all = (size_t)dst->n_extremes + (size_t)src->n_extremes;
	if (dst->max_extremes == 0 || n_all == 0)
		return AT_OK;
	struct at_extreme *all = malloc(n_all * sizeof *all);
	if (!all)
		return at_fail(err, AT_ENOMEM, "statistics: out of memory placing extremes");
	memcpy(all, dst->extremes, (size_t)dst->n_extremes * sizeof *all);
	for (int32_t k = 0; k < src->n_extremes; k++) {
		all[dst->n_extremes + k] = src->extremes[k];
		all[dst->n_extremes + k].channel = (int32_t)(src->extremes[k].channel + offset);
	}
	extremes_rerank(dst, all, n_all);
	free(all);
	return AT_OK;
}

uint64_t at_stats_count_at_least(const struct at_stats *s, int64_t channel, double t)
{
	if (!s || !s->hist || channel < 0 || channel >= s->channels || isnan(t))
		return 0;
	const uint32_t *hist = s->hist + channel * AT_HIST_BINS;
	uint64_t total = 0;
	for (int b = t > 0 ? at_hist_bin(t) : 0; b < AT_HIST_BINS; b++)
		total += hist[b];
	return total;
}
