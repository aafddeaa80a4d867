/* stats.cu: the device path of libacttrace.  One fused kernel per observed
 * tensor reads each element once and folds it into the point's
 * device-resident per-channel accumulators (count, nonfinite, central moments
 * to the fourth, min/max/absmax, sum |x|, |x| histogram) and top-K extremes,
 * with no host synchronization; they reach the host only when drained (at
 * checkpoints and close), where they merge exactly with the host path's.
 *
 * Work is cut into items: a tile of 64 channels by a split of the rows.  A
 * block takes items in turn (blockIdx.x, + gridDim.x, ...); inside it each
 * warp takes a contiguous share of the item's rows and each lane two of the
 * tile's channels, so a warp reads 64 (vector path: adjacent) channels of a
 * row at once.  A lane keeps power sums of x - shift in double, where the
 * shift is the first finite value it sees, so a large mean costs no digits;
 * the sums become central moments (Chan, Golub & LeVeque 1983) and the warps'
 * and splits' moments combine by Chan et al. 1979 / Pebay 2008, in a fixed
 * order, so a launch's result depends on the data and the launch shape only.
 * The histogram counts in shared memory ([bin][slot]: each lane always hits
 * its own bank) and adds to the device histogram when the item ends.
 * Extremes: each warp keeps a heap of its K best in shared memory; a lane
 * stages an element only when it beats the warp's K-th best (and the point's
 * K-th best from earlier launches), which is rare after the first rows; the
 * last block of a launch merges the blocks' K best into the point's. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef ATC_EMU
#include "emu.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define ATC_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#define ATC_LAUNCH(kernel, grid, block, shared, stream, ...) \
	kernel<<<grid, block, shared, stream>>>(__VA_ARGS__)
#define ATC_NOINLINE __noinline__
#endif

extern "C" {
#include "internal.h"
}
#include "stats.h"

namespace atc_kernels {

constexpr int WARP = 32;
constexpr int LANE_CHANNELS = 2;                  /* channels a lane folds */
constexpr int TILE = WARP * LANE_CHANNELS;        /* channels of one work item */
constexpr int MAX_WARPS = 8;
constexpr int UNROLL = 4;                         /* rows a lane loads before using them */
constexpr int STAGE = WARP * LANE_CHANNELS * UNROLL; /* extremes a warp can stage in one step */
constexpr int MAX_SPLITS = 64;
constexpr int BINS = AT_HIST_BINS;
constexpr uint32_t NO_EXTREMES = 0xffffffffu;     /* a floor no |x| reaches */
constexpr uint32_t FINITE_LIMIT = 0x7f800000u;    /* |x| bits of +inf */

struct dev_extreme {
	float value;
	int32_t channel;
	int64_t token;
};
static_assert(sizeof(dev_extreme) == 16, "dev_extreme is 16 bytes");

/* Count, central moments and order statistics of one channel over some rows. */
struct partial {
	double n, mean, m2, m3, m4, abssum;
	float min, max, absmax;
	uint32_t nonfinite;
};
static_assert(sizeof(partial) == 64, "partial is 64 bytes");
static_assert(STAGE * sizeof(dev_extreme) == TILE * sizeof(partial),
              "a warp's staging area holds its partials once the rows are done");

enum { N_BEST, HAS_FLOOR, N_PENDING, BLOCKS_DONE, N_COUNTERS };

/* A point's device arrays, passed to the kernel by value. */
struct point_arrays {
	uint64_t *count, *nonfinite;
	double *mean, *m2, *m3, *m4, *abssum;
	float *min, *max, *absmax;
	uint32_t *hist;       /* [channels][BINS], NULL when not kept */
	dev_extreme *best;    /* [k]: a heap, worst first */
	dev_extreme *floor;   /* the K-th best, when counters[HAS_FLOOR] */
	dev_extreme *pending; /* [grid_cap * k]: the blocks' K best of one launch */
	uint32_t *counters;   /* N_COUNTERS */
	uint32_t *tile_done;  /* [tiles]: splits folded so far, per tile */
	partial *scratch;     /* [splits][channels] */
	int64_t channels;
	int32_t k;
};

/* One launch: the tensor and how it is cut. */
struct launch_job {
	const void *data;
	int64_t rows, batch_stride, row_stride, channel_stride;
	int64_t token_base, total_rows, split_rows;
	int32_t splits, items, hist_direct;
};

struct block_header {
	dev_extreme global_floor;
	uint32_t has_global_floor, is_last, unused[2];
	uint32_t heap_n[MAX_WARPS];
	uint32_t stage_n[MAX_WARPS];
};
static_assert(sizeof(block_header) % 16 == 0, "block_header keeps 16-byte alignment");

constexpr size_t HIST_SHARED_BYTES = (size_t)BINS * TILE * sizeof(uint32_t);
constexpr size_t WARP_STAGE_BYTES = STAGE * sizeof(dev_extreme);

__host__ __device__ inline size_t shared_bytes(int nwarps, int k, bool hist_shared)
{
	return sizeof(block_header) + (hist_shared ? HIST_SHARED_BYTES : 0) +
	       (size_t)nwarps * WARP_STAGE_BYTES + (size_t)nwarps * (size_t)k * sizeof(dev_extreme);
}

/* ---------------------------------------------------------------- elements */

__host__ __device__ __forceinline__ uint32_t bits_of(float x)
{
#ifdef __CUDA_ARCH__
	return __float_as_uint(x);
#else
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	return b;
#endif
}

__host__ __device__ __forceinline__ float float_of(uint32_t b)
{
#ifdef __CUDA_ARCH__
	return __uint_as_float(b);
#else
	float x;
	memcpy(&x, &b, sizeof x);
	return x;
#endif
}

template <int D> __device__ __forceinline__ float widen(uint32_t half_bits)
{
	if (D == AT_BF16)
		return float_of(half_bits << 16);
#ifdef __CUDA_ARCH__
	return __half2float(__ushort_as_half((unsigned short)half_bits));
#else
	return at_f16_to_float((uint16_t)half_bits);
#endif
}

template <int D> __device__ __forceinline__ float load_one(const void *data, int64_t i)
{
	if (D == AT_F32)
		return static_cast<const float *>(data)[i];
	return widen<D>(static_cast<const uint16_t *>(data)[i]);
}

/* Channels i and i+1 in one load (i even, the address aligned by the host). */
template <int D>
__device__ __forceinline__ void load_pair(const void *data, int64_t i, float &a, float &b)
{
#ifdef __CUDA_ARCH__
	if (D == AT_F32) {
		float2 v = *reinterpret_cast<const float2 *>(static_cast<const float *>(data) + i);
		a = v.x;
		b = v.y;
	} else {
		uint32_t w = *reinterpret_cast<const uint32_t *>(static_cast<const uint16_t *>(data) + i);
		a = widen<D>(w & 0xffffu);
		b = widen<D>(w >> 16);
	}
#else
	a = load_one<D>(data, i);
	b = load_one<D>(data, i + 1);
#endif
}

/* Histogram bin of |x| from its bits, exactly as accum.c's hist_bin_or_skip;
 * BINS for NaN and +-inf. */
__device__ __forceinline__ int hist_bin(uint32_t abs_bits)
{
	int biased = (int)(abs_bits >> 23), octave = biased - (127 + AT_HIST_MIN_EXP);
	uint32_t fraction = abs_bits & 0x7fffffu;
	/* ceil((2^(q/4) - 1) * 2^23), q = 1, 2, 3 */
	int bin = 2 + octave * AT_HIST_BINS_PER_OCTAVE + (fraction >= 1587185u) +
	          (fraction >= 3474676u) + (fraction >= 5719293u);
	bin = octave < 0 ? 1 : bin;
	bin = abs_bits == 0 ? 0 : bin;
	bin = octave >= AT_HIST_MAX_EXP - AT_HIST_MIN_EXP ? BINS - 1 : bin;
	return biased == 255 ? BINS : bin;
}

/* Channel of a tile slot: slot = v * 32 + lane holds channel 2 * lane + v on
 * the vector path (a lane reads two adjacent channels) and the slot itself
 * otherwise (a warp reads 32 adjacent channels at a time). */
__host__ __device__ __forceinline__ int slot_channel(int slot, bool vec)
{
	return vec ? 2 * (slot % WARP) + slot / WARP : slot;
}

/* ---------------------------------------------------------------- moments */

struct lane_sums {
	double shift, s1, s2, s3, s4, abssum;
	float shift_f, min, max, absmax;
	uint32_t nonfinite;
};

__device__ __forceinline__ void sums_init(lane_sums &a)
{
	a.shift = a.s1 = a.s2 = a.s3 = a.s4 = a.abssum = 0.0;
	a.shift_f = 0.0f;
	a.min = a.max = a.absmax = float_of(0x7fffffffu);
	a.nonfinite = 0;
}

/* One element.  A non-finite x is counted and replaced by the shift, which
 * adds nothing to the power sums; its |shift| in abssum is taken back in
 * sums_partial.  min/max/absmax see NaN instead, which fminf/fmaxf skip. */
__device__ __forceinline__ void sums_add(lane_sums &a, float x, uint32_t abs_bits)
{
	bool finite = abs_bits < FINITE_LIMIT;
	float for_order = finite ? x : float_of(0x7fffffffu);
	float for_moments = finite ? x : a.shift_f;
	double d = (double)for_moments - a.shift;
	double d2 = d * d;
	a.s1 += d;
	a.s2 += d2;
	a.s3 += d2 * d;
	a.s4 += d2 * d2;
	a.abssum += fabs((double)for_moments);
	a.min = fminf(a.min, for_order);
	a.max = fmaxf(a.max, for_order);
	a.absmax = fmaxf(a.absmax, fabsf(for_order));
	a.nonfinite += finite ? 0u : 1u;
}

/* Power sums about the shift -> central moments about the mean (the
 * binomial expansion, as accum.c's tile_central). */
__device__ __forceinline__ partial sums_partial(const lane_sums &a, int64_t rows)
{
	partial p;
	p.nonfinite = a.nonfinite;
	p.min = a.min;
	p.max = a.max;
	p.absmax = a.absmax;
	double n = (double)(rows - (int64_t)a.nonfinite);
	p.n = n;
	if (n <= 0) {
		p.n = p.mean = p.m2 = p.m3 = p.m4 = p.abssum = 0.0;
		return p;
	}
	double d = a.s1 / n, d2 = d * d;
	p.mean = a.shift + d;
	p.m2 = a.s2 - a.s1 * d;
	p.m3 = a.s3 - 3.0 * d * a.s2 + 2.0 * n * d2 * d;
	p.m4 = a.s4 - 4.0 * d * a.s3 + 6.0 * d2 * a.s2 - 3.0 * n * d2 * d2;
	if (p.m2 < 0)
		p.m2 = 0;
	p.abssum = a.abssum - (double)a.nonfinite * fabs((double)a.shift_f);
	return p;
}

/* Chan, Golub & LeVeque 1979 (m2) and Pebay 2008, eq. 2.1 and 3.1 (m3, m4),
 * as accum.c's central_combine. */
__device__ __forceinline__ partial combine(partial a, const partial &b)
{
	a.nonfinite += b.nonfinite;
	if (b.n == 0)
		return a;
	if (a.n == 0) {
		uint32_t nonfinite = a.nonfinite;
		a = b;
		a.nonfinite = nonfinite;
		return a;
	}
	double n = a.n + b.n, delta = b.mean - a.mean;
	double delta_n = delta / n, delta_n2 = delta_n * delta_n;
	double term = delta * delta_n * a.n * b.n;
	partial c = a;
	c.n = n;
	c.mean = a.mean + delta_n * b.n;
	c.m2 = a.m2 + b.m2 + term;
	c.m3 = a.m3 + b.m3 + term * delta_n * (a.n - b.n) + 3.0 * delta_n * (a.n * b.m2 - b.n * a.m2);
	c.m4 = a.m4 + b.m4 + term * delta_n2 * (a.n * a.n - a.n * b.n + b.n * b.n) +
	       6.0 * delta_n2 * (a.n * a.n * b.m2 + b.n * b.n * a.m2) +
	       4.0 * delta_n * (a.n * b.m3 - b.n * a.m3);
	c.abssum = a.abssum + b.abssum;
	c.min = fminf(a.min, b.min);
	c.max = fmaxf(a.max, b.max);
	c.absmax = fmaxf(a.absmax, b.absmax);
	return c;
}

/* What other blocks of this launch wrote, past the (incoherent) L1 cache. */
__device__ __forceinline__ partial load_partial(const partial *q)
{
	partial p;
	p.n = __ldcg(&q->n);
	p.mean = __ldcg(&q->mean);
	p.m2 = __ldcg(&q->m2);
	p.m3 = __ldcg(&q->m3);
	p.m4 = __ldcg(&q->m4);
	p.abssum = __ldcg(&q->abssum);
	p.min = __ldcg(&q->min);
	p.max = __ldcg(&q->max);
	p.absmax = __ldcg(&q->absmax);
	p.nonfinite = __ldcg(reinterpret_cast<const unsigned int *>(&q->nonfinite));
	return p;
}

/* The launch's moments of channel c into the point's: only one thread of the
 * launch ever does this for a given channel. */
__device__ void fold_into_point(const point_arrays &p, int64_t c, const partial &call)
{
	partial acc;
	acc.n = (double)p.count[c];
	acc.mean = p.mean[c];
	acc.m2 = p.m2[c];
	acc.m3 = p.m3[c];
	acc.m4 = p.m4[c];
	acc.abssum = p.abssum[c];
	acc.min = p.min[c];
	acc.max = p.max[c];
	acc.absmax = p.absmax[c];
	acc.nonfinite = 0;
	partial sum = combine(acc, call);
	p.count[c] += (uint64_t)call.n;
	p.nonfinite[c] += call.nonfinite;
	p.mean[c] = sum.mean;
	p.m2[c] = sum.m2;
	p.m3[c] = sum.m3;
	p.m4[c] = sum.m4;
	p.abssum[c] = sum.abssum;
	p.min[c] = sum.min;
	p.max[c] = sum.max;
	p.absmax[c] = sum.absmax;
}

/* ---------------------------------------------------------------- extremes */

/* accum.c's ranking: larger |value|, then smaller token, smaller channel,
 * larger value. */
__device__ __forceinline__ bool before(const dev_extreme &a, const dev_extreme &b)
{
	float abs_a = fabsf(a.value), abs_b = fabsf(b.value);
	if (abs_a != abs_b)
		return abs_a > abs_b;
	if (a.token != b.token)
		return a.token < b.token;
	if (a.channel != b.channel)
		return a.channel < b.channel;
	return a.value > b.value;
}

/* A heap of at most k extremes with the worst at the root (one thread). */
__device__ void heap_offer(dev_extreme *heap, uint32_t *n, int k, const dev_extreme &e)
{
	uint32_t i;
	if (*n < (uint32_t)k) {
		i = (*n)++;
		while (i > 0 && before(heap[(i - 1) / 2], e)) {
			heap[i] = heap[(i - 1) / 2];
			i = (i - 1) / 2;
		}
		heap[i] = e;
		return;
	}
	if (!before(e, heap[0]))
		return;
	i = 0;
	for (;;) {
		uint32_t worst = i, left = 2 * i + 1, right = 2 * i + 2;
		const dev_extreme *w = &e;
		if (left < *n && before(*w, heap[left])) {
			worst = left;
			w = &heap[left];
		}
		if (right < *n && before(*w, heap[right]))
			worst = right;
		if (worst == i)
			break;
		heap[i] = heap[worst];
		i = worst;
	}
	heap[i] = e;
}

__device__ __forceinline__ dev_extreme load_extreme(const dev_extreme *q)
{
	dev_extreme e;
	e.value = __ldcg(&q->value);
	e.channel = __ldcg(reinterpret_cast<const int *>(&q->channel));
	e.token = __ldcg(reinterpret_cast<const long long *>(&q->token));
	return e;
}

/* |value| bits an element must reach to be staged by this warp. */
__device__ __forceinline__ uint32_t warp_floor(const block_header *h, const dev_extreme *heap,
                                               int warp, int k)
{
	if (k == 0)
		return NO_EXTREMES;
	uint32_t floor_bits = h->has_global_floor ? bits_of(h->global_floor.value) & 0x7fffffffu : 0u;
	if (h->heap_n[warp] == (uint32_t)k) {
		uint32_t root = bits_of(heap[0].value) & 0x7fffffffu;
		floor_bits = root > floor_bits ? root : floor_bits;
	}
	return floor_bits;
}

/* Rare path: x reached the floor; stage it if it beats the point's and the
 * warp's K-th best. */
__device__ ATC_NOINLINE bool stage_extreme(block_header *h, dev_extreme *stage,
                                           const dev_extreme *heap, int warp, int k, float x,
                                           int64_t channel, int64_t token)
{
	if ((bits_of(x) & 0x7fffffffu) >= FINITE_LIMIT)
		return false;
	dev_extreme e;
	e.value = x;
	e.channel = (int32_t)channel;
	e.token = token;
	if (h->has_global_floor && !before(e, h->global_floor))
		return false;
	if (h->heap_n[warp] == (uint32_t)k && !before(e, heap[0]))
		return false;
	uint32_t i = atomicAdd(&h->stage_n[warp], 1u);
	stage[i] = e;
	return true;
}

/* ---------------------------------------------------------------- the kernel */

/* Element offset of global row g (g = b * rows + r), advanced row by row. */
struct row_cursor {
	int64_t b, r, offset;
};

__device__ __forceinline__ row_cursor cursor_at(const launch_job &job, int64_t g)
{
	row_cursor rc;
	rc.b = g / job.rows;
	rc.r = g - rc.b * job.rows;
	rc.offset = rc.b * job.batch_stride + rc.r * job.row_stride;
	return rc;
}

__device__ __forceinline__ void cursor_next(const launch_job &job, row_cursor &rc)
{
	rc.offset += job.row_stride;
	if (++rc.r == job.rows) {
		rc.r = 0;
		rc.b++;
		rc.offset = rc.b * job.batch_stride;
	}
}

/* Up to UNROLL rows (fewer when `left` is smaller) of a lane's channels. */
template <int D, bool VEC>
__device__ __forceinline__ void load_rows(const launch_job &job, row_cursor &rc,
                                          const int64_t *channel, const bool *valid, int64_t left,
                                          float (&x)[UNROLL][LANE_CHANNELS])
{
	for (int u = 0; u < UNROLL; u++) {
		if (u >= left)
			break;
		if (VEC) {
			if (valid[0])
				load_pair<D>(job.data, rc.offset + channel[0], x[u][0], x[u][1]);
		} else {
			for (int v = 0; v < LANE_CHANNELS; v++)
				if (valid[v])
					x[u][v] = load_one<D>(job.data, rc.offset + channel[v] * job.channel_stride);
		}
		cursor_next(job, rc);
	}
}

/* The shift of a lane's channel: its first finite value in the warp's rows
 * (0 if none), so that the power sums are about a value inside the data. */
template <int D>
__device__ float first_finite(const launch_job &job, int64_t g, int64_t g_end, int64_t channel)
{
	row_cursor rc = cursor_at(job, g);
	for (; g < g_end; g++) {
		float x = load_one<D>(job.data, rc.offset + channel * job.channel_stride);
		if ((bits_of(x) & 0x7fffffffu) < FINITE_LIMIT)
			return x;
		cursor_next(job, rc);
	}
	return 0.0f;
}

template <int D, bool VEC, bool HIST>
__global__ void __launch_bounds__(MAX_WARPS * WARP)
fold_kernel(point_arrays p, launch_job job)
{
	ATC_DYNAMIC_SHARED(shared);
	block_header *h = reinterpret_cast<block_header *>(shared);
	const bool hist_shared = HIST && !job.hist_direct;
	uint32_t *hist = reinterpret_cast<uint32_t *>(shared + sizeof(block_header));
	unsigned char *warp_areas = shared + sizeof(block_header) + (hist_shared ? HIST_SHARED_BYTES : 0);
	const int nwarps = (int)(blockDim.x / WARP), warp = (int)(threadIdx.x / WARP);
	const int lane = (int)(threadIdx.x % WARP), k = p.k;
	dev_extreme *stage = reinterpret_cast<dev_extreme *>(warp_areas + warp * WARP_STAGE_BYTES);
	partial *parts = reinterpret_cast<partial *>(warp_areas); /* [nwarps][TILE], over the stages */
	dev_extreme *heaps = reinterpret_cast<dev_extreme *>(warp_areas + nwarps * WARP_STAGE_BYTES);
	dev_extreme *heap = heaps + warp * k;

	if (threadIdx.x == 0) {
		h->has_global_floor = k > 0 && p.counters[HAS_FLOOR];
		if (h->has_global_floor)
			h->global_floor = *p.floor;
	}
	if (threadIdx.x < (unsigned)nwarps)
		h->heap_n[threadIdx.x] = h->stage_n[threadIdx.x] = 0;
	if (hist_shared)
		for (int i = (int)threadIdx.x; i < BINS * TILE; i += (int)blockDim.x)
			hist[i] = 0;
	__syncthreads();
	uint32_t floor_bits = warp_floor(h, heap, warp, k);

	for (int item = (int)blockIdx.x; item < job.items; item += (int)gridDim.x) {
		const int tile = item / job.splits, split = item % job.splits;
		const int64_t c0 = (int64_t)tile * TILE;
		const int64_t item_begin = split * job.split_rows;
		const int64_t item_end = item_begin + job.split_rows < job.total_rows
		                             ? item_begin + job.split_rows
		                             : job.total_rows;
		const int64_t per_warp = (item_end - item_begin + nwarps - 1) / nwarps;
		const int64_t g_begin = item_begin + warp * per_warp;
		const int64_t g_end = g_begin + per_warp < item_end ? g_begin + per_warp : item_end;

		lane_sums sums[LANE_CHANNELS];
		int64_t channel[LANE_CHANNELS];
		bool valid[LANE_CHANNELS];
		for (int v = 0; v < LANE_CHANNELS; v++) {
			sums_init(sums[v]);
			channel[v] = c0 + slot_channel(v * WARP + lane, VEC);
			valid[v] = channel[v] < p.channels;
			if (valid[v] && g_begin < g_end) {
				sums[v].shift_f = first_finite<D>(job, g_begin, g_end, channel[v]);
				sums[v].shift = (double)sums[v].shift_f;
			}
		}

		/* Software pipelining: the next rows are loaded while these are used,
		 * so that two steps of loads are in flight per lane. */
		row_cursor rc = cursor_at(job, g_begin < g_end ? g_begin : 0);
		float x[UNROLL][LANE_CHANNELS] = {}, next[UNROLL][LANE_CHANNELS] = {};
		load_rows<D, VEC>(job, rc, channel, valid, g_end - g_begin, x);
		for (int64_t g = g_begin; g < g_end; g += UNROLL) {
			const int n = g_end - g < UNROLL ? (int)(g_end - g) : UNROLL;
			if (g + UNROLL < g_end)
				load_rows<D, VEC>(job, rc, channel, valid, g_end - g - UNROLL, next);
			bool staged = false;
			for (int u = 0; u < UNROLL; u++) {
				if (u >= n)
					break;
				for (int v = 0; v < LANE_CHANNELS; v++) {
					if (!valid[v])
						continue;
					uint32_t abs_bits = bits_of(x[u][v]) & 0x7fffffffu;
					sums_add(sums[v], x[u][v], abs_bits);
					if (HIST) {
						int bin = hist_bin(abs_bits);
						if (bin < BINS) {
							if (hist_shared)
								atomicAdd(&hist[bin * TILE + v * WARP + lane], 1u);
							else
								atomicAdd(&p.hist[channel[v] * BINS + bin], 1u);
						}
					}
					if (abs_bits >= floor_bits)
						staged |= stage_extreme(h, stage, heap, warp, k, x[u][v], channel[v],
						                        job.token_base + g + u);
				}
			}
			if (k > 0 && __any_sync(0xffffffffu, staged)) {
				__syncwarp();
				if (lane == 0) {
					for (uint32_t i = 0; i < h->stage_n[warp]; i++)
						heap_offer(heap, &h->heap_n[warp], k, stage[i]);
					h->stage_n[warp] = 0;
				}
				__syncwarp();
				floor_bits = warp_floor(h, heap, warp, k);
			}
			for (int u = 0; u < UNROLL; u++)
				for (int v = 0; v < LANE_CHANNELS; v++)
					x[u][v] = next[u][v];
		}

		/* this warp's partials replace its (empty) staging area */
		int64_t warp_rows = g_end > g_begin ? g_end - g_begin : 0;
		__syncwarp();
		for (int v = 0; v < LANE_CHANNELS; v++)
			parts[warp * TILE + v * WARP + lane] = sums_partial(sums[v], warp_rows);
		__syncthreads();

		if (hist_shared) {
			for (int i = (int)threadIdx.x; i < BINS * TILE; i += (int)blockDim.x) {
				uint32_t seen = hist[i];
				if (!seen)
					continue;
				hist[i] = 0;
				int64_t c = c0 + slot_channel(i % TILE, VEC);
				if (c < p.channels)
					atomicAdd(&p.hist[c * BINS + i / TILE], seen);
			}
		}
		/* a thread per slot (blocks of fewer than 64 threads take several) */
		for (int slot = (int)threadIdx.x; slot < TILE; slot += (int)blockDim.x) {
			int64_t c = c0 + slot_channel(slot, VEC);
			if (c >= p.channels)
				continue;
			partial block = parts[slot];
			for (int w = 1; w < nwarps; w++)
				block = combine(block, parts[w * TILE + slot]);
			if (job.splits == 1)
				fold_into_point(p, c, block);
			else
				p.scratch[split * p.channels + c] = block;
		}
		if (job.splits > 1) {
			__threadfence();
			__syncthreads();
			if (threadIdx.x == 0)
				h->is_last = atomicAdd(&p.tile_done[tile], 1u) == (uint32_t)job.splits - 1;
			__syncthreads();
			if (h->is_last) {
				for (int slot = (int)threadIdx.x; slot < TILE; slot += (int)blockDim.x) {
					int64_t c = c0 + slot_channel(slot, VEC);
					if (c >= p.channels)
						continue;
					partial call = load_partial(&p.scratch[c]);
					for (int s = 1; s < job.splits; s++)
						call = combine(call, load_partial(&p.scratch[s * p.channels + c]));
					fold_into_point(p, c, call);
				}
				if (threadIdx.x == 0)
					p.tile_done[tile] = 0;
			}
		}
		__syncthreads(); /* parts and hist are the next item's */
	}
	if (k == 0)
		return;

	/* The block's K best, to the launch's pending list. */
	if (threadIdx.x == 0) {
		for (int w = 1; w < nwarps; w++)
			for (uint32_t i = 0; i < h->heap_n[w]; i++)
				heap_offer(heaps, &h->heap_n[0], k, heaps[w * k + i]);
		uint32_t n = h->heap_n[0];
		if (n) {
			uint32_t first = atomicAdd(&p.counters[N_PENDING], n);
			for (uint32_t i = 0; i < n; i++)
				p.pending[first + i] = heaps[i];
		}
	}
	__threadfence();
	__syncthreads();
	if (threadIdx.x == 0)
		h->is_last = atomicAdd(&p.counters[BLOCKS_DONE], 1u) == gridDim.x - 1;
	__syncthreads();
	if (!h->is_last || threadIdx.x != 0)
		return;
	/* The last block: the point's K best so far and the launch's, re-ranked. */
	uint32_t n = __ldcg(reinterpret_cast<const unsigned int *>(&p.counters[N_BEST]));
	uint32_t pending = __ldcg(reinterpret_cast<const unsigned int *>(&p.counters[N_PENDING]));
	for (uint32_t i = 0; i < n; i++)
		heaps[i] = p.best[i];
	for (uint32_t i = 0; i < pending; i++)
		heap_offer(heaps, &n, k, load_extreme(&p.pending[i]));
	for (uint32_t i = 0; i < n; i++)
		p.best[i] = heaps[i];
	p.counters[N_BEST] = n;
	if (n == (uint32_t)k) {
		*p.floor = heaps[0];
		p.counters[HAS_FLOOR] = 1;
	}
	p.counters[N_PENDING] = 0;
	p.counters[BLOCKS_DONE] = 0;
}

/* Sampled rows, in the tensor's own dtype, [n][channels] with channels
 * contiguous: one block per row. */
__global__ void gather_kernel(launch_job job, int64_t channels, int esize,
                              const int64_t *row_index, unsigned char *dst)
{
	for (int64_t i = blockIdx.x; i < job.total_rows; i += gridDim.x) {
		row_cursor rc = cursor_at(job, row_index[i]);
		unsigned char *out = dst + (size_t)i * (size_t)channels * (size_t)esize;
		for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
			int64_t at = rc.offset + c * job.channel_stride;
			if (esize == 4)
				reinterpret_cast<float *>(out)[c] = static_cast<const float *>(job.data)[at];
			else
				reinterpret_cast<uint16_t *>(out)[c] = static_cast<const uint16_t *>(job.data)[at];
		}
	}
}

} // namespace atc_kernels

using namespace atc_kernels;

/* ---------------------------------------------------------------- host side */

struct cuda_point {
	int64_t channels;
	int hist;
	int32_t k;
	int grid_cap;       /* most blocks a launch may have (pending is sized for it) */
	int multiprocessors;
	int resident_per_sm; /* blocks_per_multiprocessor(), 0 until asked */
	size_t max_shared;  /* dynamic shared memory a block may have */
	void *arrays;       /* one allocation: see point_layout */
	size_t arrays_bytes, drained_bytes;
	point_arrays dev;
	int32_t scratch_splits;
	cudaStream_t last_stream;
	int64_t rows_pending;
};

static int cuda_fail(struct at_error *err, cudaError_t e, const char *what)
{
	return at_fail(err, e == cudaErrorMemoryAllocation ? AT_ENOMEM : AT_EIO,
	               "CUDA: %s: %s", what, cudaGetErrorString(e));
}

#define CUDA_TRY(call, what)                          \
	do {                                              \
		cudaError_t cuda_status_ = (call);            \
		if (cuda_status_ != cudaSuccess)              \
			return cuda_fail(err, cuda_status_, what); \
	} while (0)

int atc_device_check(struct at_error *err)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess)
		return at_fail(err, AT_ENOSYS, "CUDA: no usable device: %s", cudaGetErrorString(e));
	if (n < 1)
		return at_fail(err, AT_ENOSYS, "CUDA: no device");
	return AT_OK;
}

static size_t align_up(size_t n)
{
	return (n + 255) & ~(size_t)255;
}

/* Carve the point's arrays out of one allocation.  Everything a drain copies
 * to the host comes first (up to drained_bytes). */
static size_t point_layout(cuda_point *p, unsigned char *base)
{
	size_t c = (size_t)p->channels, at = 0;
	point_arrays &d = p->dev;
#define CARVE(field, type, n)                                              \
	do {                                                                    \
		d.field = base ? reinterpret_cast<type *>(base + at) : nullptr;     \
		at += align_up((n) * sizeof(type));                                 \
	} while (0)
	CARVE(count, uint64_t, c);
	CARVE(nonfinite, uint64_t, c);
	CARVE(mean, double, c);
	CARVE(m2, double, c);
	CARVE(m3, double, c);
	CARVE(m4, double, c);
	CARVE(abssum, double, c);
	CARVE(min, float, c);
	CARVE(max, float, c);
	CARVE(absmax, float, c);
	CARVE(hist, uint32_t, p->hist ? c * BINS : 0);
	CARVE(best, dev_extreme, (size_t)p->k);
	CARVE(floor, dev_extreme, 1);
	CARVE(counters, uint32_t, N_COUNTERS);
	p->drained_bytes = at;
	CARVE(pending, dev_extreme, (size_t)p->grid_cap * (size_t)p->k);
	CARVE(tile_done, uint32_t, (c + TILE - 1) / TILE);
#undef CARVE
	if (!p->hist)
		d.hist = nullptr;
	return at;
}

static size_t offset_of(const cuda_point *p, const void *field)
{
	return (size_t)(static_cast<const unsigned char *>(field) -
	                static_cast<const unsigned char *>(p->arrays));
}

/* Empty accumulators: zero, but NaN (all bits set) for min, max, absmax. */
static int point_reset(cuda_point *p, cudaStream_t stream, struct at_error *err)
{
	unsigned char *base = static_cast<unsigned char *>(p->arrays);
	size_t moments = offset_of(p, p->dev.min), orders = offset_of(p, p->dev.hist ? (void *)p->dev.hist : (void *)p->dev.best);
	CUDA_TRY(cudaMemsetAsync(base, 0, moments, stream), "clear statistics");
	CUDA_TRY(cudaMemsetAsync(base + moments, 0xff, orders - moments, stream), "clear statistics");
	if (p->dev.hist)
		CUDA_TRY(cudaMemsetAsync(p->dev.hist, 0, (size_t)p->channels * BINS * sizeof(uint32_t),
		                         stream),
		         "clear histograms");
	CUDA_TRY(cudaMemsetAsync(&p->dev.counters[N_BEST], 0, sizeof(uint32_t), stream),
	         "clear extremes");
	return AT_OK;
}

int atc_point_create(cuda_point **out, int64_t channels, int hist, int32_t max_extremes,
                     struct at_error *err)
{
	*out = nullptr;
	if (channels <= 0 || max_extremes < 0 || max_extremes > ATC_MAX_EXTREMES)
		return at_fail(err, AT_EINVAL,
		               "CUDA: %lld channels, %d extremes: the device path keeps 0 to %d extremes",
		               (long long)channels, (int)max_extremes, ATC_MAX_EXTREMES);
	int device = 0, sms = 0;
	CUDA_TRY(cudaGetDevice(&device), "no current device");
	CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
	         "query the device");
	int max_shared = 48 * 1024;
#ifndef ATC_EMU
	CUDA_TRY(cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
	         "query the device");
#else
	max_shared = 1 << 20;
#endif
	cuda_point *p = static_cast<cuda_point *>(calloc(1, sizeof *p));
	if (!p)
		return at_fail(err, AT_ENOMEM, "CUDA: out of host memory");
	p->channels = channels;
	p->hist = hist != 0;
	p->k = max_extremes;
	p->multiprocessors = sms > 0 ? sms : 1;
	p->grid_cap = 8 * p->multiprocessors;
	p->max_shared = (size_t)max_shared;
	p->dev.channels = channels;
	p->dev.k = max_extremes;
	p->arrays_bytes = point_layout(p, nullptr);
	cudaError_t e = cudaMalloc(&p->arrays, p->arrays_bytes);
	if (e != cudaSuccess) {
		free(p);
		return cuda_fail(err, e, "allocate device statistics");
	}
	point_layout(p, static_cast<unsigned char *>(p->arrays));
	int status = AT_OK;
	e = cudaMemset(p->arrays, 0, p->arrays_bytes);
	if (e != cudaSuccess)
		status = cuda_fail(err, e, "clear device statistics");
	if (status == AT_OK)
		status = point_reset(p, nullptr, err);
	if (status == AT_OK && cudaStreamSynchronize(nullptr) != cudaSuccess)
		status = at_fail(err, AT_EIO, "CUDA: clear device statistics");
	if (status != AT_OK) {
		atc_point_free(p);
		return status;
	}
	*out = p;
	return AT_OK;
}

void atc_point_free(cuda_point *p)
{
	if (!p)
		return;
	if (p->last_stream)
		cudaStreamSynchronize(p->last_stream);
	cudaFree(p->dev.scratch);
	cudaFree(p->arrays);
	free(p);
}

int64_t atc_point_rows_pending(const cuda_point *p)
{
	return p ? p->rows_pending : 0;
}

typedef void (*fold_fn)(point_arrays, launch_job);

template <int D> static fold_fn pick_kernel(bool vec, bool hist)
{
	if (vec)
		return hist ? fold_kernel<D, true, true> : fold_kernel<D, true, false>;
	return hist ? fold_kernel<D, false, true> : fold_kernel<D, false, false>;
}

static fold_fn pick_kernel(enum at_dtype dtype, bool vec, bool hist)
{
	switch (dtype) {
	case AT_F16:
		return pick_kernel<AT_F16>(vec, hist);
	case AT_BF16:
		return pick_kernel<AT_BF16>(vec, hist);
	default:
		return pick_kernel<AT_F32>(vec, hist);
	}
}

/* ---- launch shape */

struct launch_shape {
	int nwarps, grid;
	bool vec;
	size_t shared;
};

static bool vector_path(const struct at_tensor *t)
{
	size_t esize = at_dtype_size(t->dtype);
	return t->channel_stride == 1 && t->channels % 2 == 0 && t->row_stride % 2 == 0 &&
	       (t->batches == 1 || t->batch_stride % 2 == 0) &&
	       reinterpret_cast<uintptr_t>(t->data) % (2 * esize) == 0;
}

/* Blocks of the fold kernel that fit on one multiprocessor at once, for a
 * typical large call (8 warps, histogram in shared memory); asked once. */
static int blocks_per_multiprocessor(cuda_point *p)
{
	if (p->resident_per_sm)
		return p->resident_per_sm;
	int blocks = 2; /* the emulation's guess: splits rows on its 3 "multiprocessors" */
#ifndef ATC_EMU
	size_t bytes = shared_bytes(MAX_WARPS, p->k, p->hist != 0);
	fold_fn kernel = pick_kernel(AT_BF16, true, p->hist != 0);
	if (bytes > p->max_shared ||
	    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) !=
	        cudaSuccess ||
	    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, MAX_WARPS * WARP, bytes) !=
	        cudaSuccess) {
		cudaGetLastError();
		blocks = 1;
	}
#endif
	p->resident_per_sm = blocks > 0 ? blocks : 1;
	return p->resident_per_sm;
}

/* Splits of the rows so that tiles x splits fill the resident blocks once
 * (a second, partial wave would leave most of the device idle), none thinner
 * than 256 rows; few rows take one-warp blocks and count their histogram
 * straight into device memory.  Blocks shrink (fewer warps, then no shared
 * histogram) where the device has less shared memory than they want. */
static launch_shape plan(cuda_point *p, const struct at_tensor *t, launch_job &job)
{
	launch_shape s;
	int64_t tiles = (p->channels + TILE - 1) / TILE, rows = job.total_rows;
	s.vec = vector_path(t);
	int64_t splits = 1;
	if (rows <= 32) {
		s.nwarps = 1;
	} else {
		s.nwarps = rows >= 8 * 16 ? MAX_WARPS : (int)((rows + 15) / 16);
		int64_t resident = (int64_t)blocks_per_multiprocessor(p) * p->multiprocessors;
		int64_t want = resident / tiles > 1 ? resident / tiles : 1;
		int64_t most = rows / 256 > 1 ? rows / 256 : 1;
		splits = want < most ? want : most;
		if (splits > MAX_SPLITS)
			splits = MAX_SPLITS;
	}
	job.split_rows = (rows + splits - 1) / splits;
	splits = (rows + job.split_rows - 1) / job.split_rows;
	job.splits = (int32_t)splits;
	job.hist_direct = !p->hist || job.split_rows < 256;
	while ((s.shared = shared_bytes(s.nwarps, p->k, !job.hist_direct)) > p->max_shared) {
		if (s.nwarps > 1)
			s.nwarps /= 2;
		else if (!job.hist_direct)
			job.hist_direct = 1;
		else
			break; /* the launch will say it does not fit */
	}
	int64_t items = tiles * splits;
	job.items = (int32_t)items;
	s.grid = (int)(items < p->grid_cap ? items : p->grid_cap);
	return s;
}

static int ensure_scratch(cuda_point *p, int32_t splits, struct at_error *err)
{
	if (splits <= 1 || splits <= p->scratch_splits)
		return AT_OK;
	/* cudaFree waits for the device: this happens a few times at most */
	cudaFree(p->dev.scratch);
	p->dev.scratch = nullptr;
	p->scratch_splits = 0;
	void *scratch = nullptr;
	CUDA_TRY(cudaMalloc(&scratch, (size_t)splits * (size_t)p->channels * sizeof(partial)),
	         "allocate device scratch");
	p->dev.scratch = static_cast<partial *>(scratch);
	p->scratch_splits = splits;
	return AT_OK;
}

/* Kernels that need more than 48 KiB of shared memory must say so once. */
static int allow_shared(fold_fn kernel, size_t bytes, struct at_error *err)
{
#ifdef ATC_EMU
	(void)kernel;
	(void)bytes;
	(void)err;
#else
	if (bytes <= 48 * 1024)
		return AT_OK;
	CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
	         "raise the kernel's shared memory");
#endif
	return AT_OK;
}

static launch_job job_of(const struct at_tensor *t, int64_t token_base)
{
	launch_job job;
	memset(&job, 0, sizeof job);
	job.data = t->data;
	job.rows = t->rows;
	job.batch_stride = t->batch_stride;
	job.row_stride = t->row_stride;
	job.channel_stride = t->channel_stride;
	job.token_base = token_base;
	job.total_rows = t->batches * t->rows;
	return job;
}

static int check_device_pointer(const void *data, struct at_error *err)
{
	cudaPointerAttributes a;
	memset(&a, 0, sizeof a);
	cudaError_t e = cudaPointerGetAttributes(&a, data);
	if (e != cudaSuccess) {
		cudaGetLastError(); /* not sticky: clear it */
		return at_fail(err, AT_EINVAL, "CUDA: tensor data %p: %s", data, cudaGetErrorString(e));
	}
	if (a.type != cudaMemoryTypeDevice
#ifndef ATC_EMU
	    && a.type != cudaMemoryTypeManaged
#endif
	)
		return at_fail(err, AT_EINVAL,
		               "CUDA: tensor data %p is not device memory (use at_writer_observe for "
		               "host tensors)",
		               data);
	return AT_OK;
}

int atc_point_observe(cuda_point *p, const struct at_tensor *t, int64_t token_base, void *stream,
                      struct at_error *err)
{
	launch_job job = job_of(t, token_base);
	if (job.total_rows == 0)
		return AT_OK;
	int status = check_device_pointer(t->data, err);
	if (status != AT_OK)
		return status;
	launch_shape s = plan(p, t, job);
	status = ensure_scratch(p, job.splits, err);
	if (status != AT_OK)
		return status;
	size_t bytes = s.shared;
	fold_fn kernel = pick_kernel(t->dtype, s.vec, p->hist != 0);
	status = allow_shared(kernel, bytes, err);
	if (status != AT_OK)
		return status;
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	ATC_LAUNCH(kernel, dim3((unsigned)s.grid), dim3((unsigned)(s.nwarps * WARP)), bytes, st, p->dev,
	           job);
	CUDA_TRY(cudaGetLastError(), "launch the statistics kernel");
	p->last_stream = st;
	p->rows_pending += job.total_rows;
	return AT_OK;
}

/* ---- drain */

static int extreme_rank(const void *pa, const void *pb)
{
	const struct at_extreme *a = static_cast<const struct at_extreme *>(pa);
	const struct at_extreme *b = static_cast<const struct at_extreme *>(pb);
	double abs_a = fabs(a->value), abs_b = fabs(b->value);
	if (abs_a != abs_b)
		return abs_a > abs_b ? -1 : 1;
	if (a->token != b->token)
		return a->token < b->token ? -1 : 1;
	if (a->channel != b->channel)
		return a->channel < b->channel ? -1 : 1;
	return a->value > b->value ? -1 : a->value < b->value;
}

/* The drained bytes (laid out as on the device) as host statistics. */
static void host_stats_of(const cuda_point *p, const unsigned char *copy, struct at_stats *s)
{
	size_t c = (size_t)p->channels;
#define FIELD(type, field) reinterpret_cast<const type *>(copy + offset_of(p, p->dev.field))
	memcpy(s->count, FIELD(uint64_t, count), c * sizeof(uint64_t));
	memcpy(s->nonfinite, FIELD(uint64_t, nonfinite), c * sizeof(uint64_t));
	memcpy(s->mean, FIELD(double, mean), c * sizeof(double));
	memcpy(s->m2, FIELD(double, m2), c * sizeof(double));
	memcpy(s->m3, FIELD(double, m3), c * sizeof(double));
	memcpy(s->m4, FIELD(double, m4), c * sizeof(double));
	memcpy(s->abssum, FIELD(double, abssum), c * sizeof(double));
	const float *mins = FIELD(float, min), *maxs = FIELD(float, max);
	const float *absmaxs = FIELD(float, absmax);
	for (size_t i = 0; i < c; i++) {
		s->min[i] = mins[i];
		s->max[i] = maxs[i];
		s->absmax[i] = absmaxs[i];
	}
	if (p->hist)
		memcpy(s->hist, FIELD(uint32_t, hist), c * BINS * sizeof(uint32_t));
	const uint32_t *counters = FIELD(uint32_t, counters);
	const dev_extreme *best = FIELD(dev_extreme, best);
#undef FIELD
	uint32_t n = counters[N_BEST] < (uint32_t)p->k ? counters[N_BEST] : (uint32_t)p->k;
	for (uint32_t i = 0; i < n; i++) {
		s->extremes[i].value = best[i].value;
		s->extremes[i].token = best[i].token;
		s->extremes[i].channel = best[i].channel;
	}
	s->n_extremes = (int32_t)n;
	qsort(s->extremes, n, sizeof *s->extremes, extreme_rank);
}

int atc_point_drain(cuda_point *p, struct at_stats *into, struct at_error *err)
{
	if (!p || p->rows_pending == 0)
		return AT_OK;
	unsigned char *copy = static_cast<unsigned char *>(malloc(p->drained_bytes));
	if (!copy)
		return at_fail(err, AT_ENOMEM, "CUDA: out of host memory for %zu bytes", p->drained_bytes);
	cudaStream_t st = p->last_stream;
	struct at_stats drained;
	int status = AT_OK;
	cudaError_t e = cudaMemcpyAsync(copy, p->arrays, p->drained_bytes, cudaMemcpyDeviceToHost, st);
	if (e == cudaSuccess)
		e = cudaStreamSynchronize(st);
	if (e != cudaSuccess)
		status = cuda_fail(err, e, "copy statistics to the host");
	if (status == AT_OK)
		status = at_stats_init(&drained, p->channels, p->hist, p->k, err);
	if (status == AT_OK) {
		host_stats_of(p, copy, &drained);
		status = at_stats_merge(into, &drained, err);
		at_stats_free(&drained);
	}
	free(copy);
	if (status == AT_OK)
		status = point_reset(p, st, err);
	if (status == AT_OK) {
		/* the reset must land before the host can queue a launch elsewhere */
		e = cudaStreamSynchronize(st);
		if (e != cudaSuccess)
			status = cuda_fail(err, e, "clear statistics");
	}
	if (status == AT_OK)
		p->rows_pending = 0;
	return status;
}

/* ---- sampling */

int atc_gather_rows(const struct at_tensor *t, const int64_t *row_index_device, int64_t n,
                    void *dst, void *stream, struct at_error *err)
{
	if (n <= 0)
		return AT_OK;
	launch_job job = job_of(t, 0);
	job.total_rows = n;
	int esize = (int)at_dtype_size(t->dtype);
	unsigned grid = (unsigned)(n < 4096 ? n : 4096);
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	ATC_LAUNCH(gather_kernel, dim3(grid), dim3(256), 0, st, job, t->channels, esize,
	           row_index_device, static_cast<unsigned char *>(dst));
	CUDA_TRY(cudaGetLastError(), "launch the sampling kernel");
	return AT_OK;
}

/* ---- runtime wrappers for device.c */

int atc_malloc_device(void **p, size_t bytes, struct at_error *err)
{
	*p = nullptr;
	CUDA_TRY(cudaMalloc(p, bytes), "allocate device memory");
	return AT_OK;
}

int atc_malloc_pinned(void **p, size_t bytes, struct at_error *err)
{
	*p = nullptr;
	CUDA_TRY(cudaMallocHost(p, bytes), "allocate pinned host memory");
	return AT_OK;
}

void atc_free_device(void *p)
{
	cudaFree(p);
}

void atc_free_pinned(void *p)
{
	cudaFreeHost(p);
}

/* One stream of the library's own for copies to the host, so that they
 * overlap the caller's next kernels instead of queueing behind them. */
static cudaStream_t copy_stream;

int atc_copy_to_host_after(void *dst_host, const void *src_device, size_t bytes, void *after,
                           void **done, struct at_error *err)
{
	*done = nullptr;
	if (!copy_stream)
		CUDA_TRY(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking),
		         "create a copy stream");
	cudaEvent_t ready, landed;
	CUDA_TRY(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "create an event");
	cudaError_t e = cudaEventRecord(ready, static_cast<cudaStream_t>(after));
	if (e == cudaSuccess)
		e = cudaStreamWaitEvent(copy_stream, ready, 0);
	cudaEventDestroy(ready); /* released once the wait is over */
	if (e != cudaSuccess)
		return cuda_fail(err, e, "order the sample copy");
	CUDA_TRY(cudaMemcpyAsync(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, copy_stream),
	         "copy samples to the host");
	CUDA_TRY(cudaEventCreateWithFlags(&landed, cudaEventDisableTiming), "create an event");
	e = cudaEventRecord(landed, copy_stream);
	if (e != cudaSuccess) {
		cudaEventDestroy(landed);
		return cuda_fail(err, e, "record the sample copy");
	}
	*done = landed;
	return AT_OK;
}

int atc_copy_to_device(void *dst_device, const void *src_host, size_t bytes, void *stream,
                       struct at_error *err)
{
	CUDA_TRY(cudaMemcpyAsync(dst_device, src_host, bytes, cudaMemcpyHostToDevice,
	                         static_cast<cudaStream_t>(stream)),
	         "copy sample rows to the device");
	return AT_OK;
}

int atc_event_done(void *event, struct at_error *err)
{
	cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
	if (e == cudaSuccess)
		return 1;
	if (e == cudaErrorNotReady)
		return 0;
	return cuda_fail(err, e, "wait for a sample copy");
}

int atc_event_wait(void *event, struct at_error *err)
{
	CUDA_TRY(cudaEventSynchronize(static_cast<cudaEvent_t>(event)), "wait for a sample copy");
	return AT_OK;
}

void atc_event_free(void *event)
{
	if (event)
		cudaEventDestroy(static_cast<cudaEvent_t>(event));
}
