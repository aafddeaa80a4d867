/* stats.cu: the device path of libacttrace.  One fused kernel per observed
 * tensor reads each element once and folds it into the point's
 * device-resident per-channel accumulators (count, nonfinite, central moments
 * to the fourth, min/max/absmax, sum |x|, |x| histogram) and top-K extremes,
 * with no host synchronization; they reach the host only when drained (at
 * checkpoints and close), where they merge exactly with the host path's.
 *
 * The kernel's cost is not bytes: moments, min/max and counts alone read at
 * the copy's rate (8192 x 4096 bf16: 34.2 us, the copy 34.7); the shared
 * histogram adds about 10 us and the extremes 2 (16 warps an SM, one block,
 * 128 registers a thread).  Nsight counts 28.6 instructions an element, 8 of
 * them the histogram's, issued at 0.65 a cycle a scheduler: the time is about
 * the larger of the copy's and the instructions' at that rate.  A bin read
 * from a table in shared memory (5 % fewer instructions) was slower, its
 * loads meeting in banks; docs/BENCHMARKS-gpu.md has what else was tried.
 *
 * Work is cut into items: a tile of 64 channels by a split of the rows.  A
 * block (16 warps) takes items in turn; inside it each warp takes a contiguous
 * share of the item's rows and each lane two adjacent channels, so a warp
 * folds a 128-byte row of bf16 at once.  On the vector path (adjacent
 * channels, rows 16-byte aligned) each warp copies its next RING_STEPS steps
 * of 8 rows into a ring in shared memory with 16-byte cp.async chunks, so
 * that the bytes in flight do not depend on registers; other layouts load
 * element by element.  (docs/BENCHMARKS-gpu.md has the versions tried, and
 * what each one measured.)
 *
 * Moments: per step, a lane sums (x - F)^k, k = 1..4, and |x| in float, where
 * F is a shift near the channel's mean (the median of the lane's first 8 rows,
 * moved to the running mean whenever the mean drifts from it by more than half
 * a standard deviation), then adds the step's sums to power sums in double.
 * With |mean - F| small against the spread, the float sums over 8 terms lose
 * nothing the tests can see (mean and std within 1e-7 of the std against
 * float64); when the item's rows are done, the warps' power sums move to one
 * shift (the binomial expansion) and add up, become central moments (Chan,
 * Golub & LeVeque 1983), and the splits' moments combine by Chan et al. 1979 /
 * Pebay 2008, all in a fixed order.  A step whose float sums
 * are not finite (NaN/Inf in the data, or |x - F|^4 beyond float) or underflow
 * is folded again in double, element by element, reading the step again, with
 * the non-finite values counted apart; it costs nothing when the data are
 * clean.
 *
 * Histogram: the bin of |x| is the exponent of |x|^4 (the bins are quarter
 * octaves; for bf16 and f16 inputs x^2 is exact and x^4 rounds once, never
 * across a power of two), so a bin costs two multiplies and a multiply-high;
 * exact zeros have a row of their own; f32
 * inputs take the exact bit rule of accum.c.  Counts go to 16-bit counters in
 * shared memory, one row per exponent ([row][lane] words: each lane always
 * hits its own bank), and reach the device histogram when the item ends.
 *
 * Extremes: each warp keeps a heap of its K best in shared memory; a step is
 * looked at again only when its min or max reaches the warp's floor (its K-th
 * best, or the point's from earlier launches), which is rare after the first
 * rows; the last
 * block of a launch merges the blocks' K best into the point's. */
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
#ifdef __CUDACC__
#define ATC_UNROLL _Pragma("unroll")
#else
#define ATC_UNROLL
#endif

extern "C" {
#include "internal.h"
}
#include "stats.h"

namespace atc_kernels {

constexpr int WARP = 32;
#ifndef ATC_LANE_CHANNELS
#define ATC_LANE_CHANNELS 2
#endif
/* One block of 16 warps an SM rather than two of 8: the same registers and
 * warps, one shared histogram and one epilogue an SM instead of two, and no
 * pair of blocks sharing an SM unevenly (8192 x 4096 bf16: 48.8 against
 * 52.4 us; 16384 x 8192: 142.8 against 152.3 us, one run). */
#ifndef ATC_MIN_BLOCKS
#define ATC_MIN_BLOCKS 1
#endif
constexpr int LANE_CHANNELS = ATC_LANE_CHANNELS;  /* channels a lane folds */
constexpr int TILE = WARP * LANE_CHANNELS;        /* channels of one work item */
#ifndef ATC_MAX_WARPS
#define ATC_MAX_WARPS 16
#endif
constexpr int MAX_WARPS = ATC_MAX_WARPS;          /* a block's warps */
static_assert(MAX_WARPS % 4 == 0 && MAX_WARPS <= 16, "the block header keeps 16-byte alignment");
constexpr int STEP = 8;                           /* rows a lane loads before using them */
constexpr int STAGE = WARP * LANE_CHANNELS;       /* extremes a warp can stage at once */
constexpr int BINS = AT_HIST_BINS;
constexpr float NO_FLOOR = INFINITY;              /* no finite |x| reaches it */

/* Shared histogram rows: the biased exponent of |x|^4 (0..255), and a row for
 * exact zeros.  Row 255 also holds NaN and Inf until a step's second pass takes
 * them back out. */
constexpr int HIST_ROWS = 257;
constexpr int ZERO_ROW = 256;
constexpr int NONFINITE_ROW = 255;
constexpr int HIST_WORDS = TILE / 2;              /* two 16-bit counters a word */
/* exponent of |x|^4 for the first log bin, |x| = 2^AT_HIST_MIN_EXP */
constexpr int FIRST_LOG_ROW = 127 + AT_HIST_BINS_PER_OCTAVE * AT_HIST_MIN_EXP;
static_assert(AT_HIST_BINS_PER_OCTAVE == 4, "the |x|^4 exponent gives quarter octaves");
static_assert(FIRST_LOG_ROW > 0 && FIRST_LOG_ROW + AT_HIST_LOG_BINS < 255,
              "the histogram's range fits the exponents of |x|^4");
/* An item's rows per channel: what a 16-bit counter can count. */
constexpr int64_t MAX_ITEM_ROWS = 65535;

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

enum { N_BEST, HAS_FLOOR, N_PENDING, BLOCKS_DONE, N_COUNTERS };

/* A point's device arrays, passed to the kernel by value. */
struct point_arrays {
	uint64_t *count, *nonfinite;
	double *mean, *m2, *m3, *m4, *abssum;
	float *min, *max, *absmax;
	uint32_t *hist;       /* [channels][BINS], NULL when not kept */
	dev_extreme *best;    /* [k]: the point's K best so far, best first */
	dev_extreme *floor;   /* the K-th best, when counters[HAS_FLOOR] */
	dev_extreme *pending; /* [grid_cap * k]: the blocks' K best of one launch */
	uint32_t *counters;   /* N_COUNTERS */
	uint32_t *tile_done;  /* [tiles]: splits folded so far, per tile */
	partial *scratch;     /* [splits][channels] */
	int64_t channels;
	int32_t k;
};

/* One launch: rows g = 0 .. total_rows-1 at data + g * row_stride (the host
 * folds batches into rows, or launches once per batch). */
struct launch_job {
	const void *data;
	int64_t row_stride, channel_stride;
	int64_t token_base, total_rows, split_rows;
	int32_t splits, items;
	int32_t prefetch; /* the tile's point_state is read at the item's start */
};

struct block_header {
	dev_extreme global_floor;
	uint32_t has_global_floor, is_last, merge_n[2];
	uint32_t heap_n[MAX_WARPS];
	uint32_t stage_n[MAX_WARPS];
};
static_assert(sizeof(block_header) % 16 == 0, "block_header keeps 16-byte alignment");

#ifdef ATC_TIMELINE
/* Diagnostics only (nvcc -DATC_TIMELINE): per block of the last launch, the
 * global timer at its start (0), when its rows are folded (1), its warps'
 * power sums stored (6), combined (4), its splits merged (5), its items done
 * (2), when it leaves (3), and its multiprocessor (7); per warp, when its rows are
 * folded.  Read by tests/gpu/timeline.c. */
constexpr int TIMELINE_BLOCKS = 4096;
__device__ unsigned long long timeline[TIMELINE_BLOCKS][8];
constexpr int TIMELINE_WARPS = 16;
__device__ unsigned long long timeline_warps[TIMELINE_BLOCKS][TIMELINE_WARPS];
__device__ __forceinline__ unsigned long long global_timer()
{
	unsigned long long t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}
__device__ __forceinline__ void timeline_mark(int what)
{
	if (threadIdx.x == 0 && blockIdx.x < TIMELINE_BLOCKS) {
		timeline[blockIdx.x][what] = global_timer();
		if (what == 0) {
			unsigned sm;
			asm("mov.u32 %0, %%smid;" : "=r"(sm));
			timeline[blockIdx.x][7] = sm;
		}
	}
}
__device__ __forceinline__ void timeline_warp_done(int warp)
{
	if (threadIdx.x % WARP == 0 && blockIdx.x < TIMELINE_BLOCKS)
		timeline_warps[blockIdx.x][warp] = global_timer();
}
#define ATC_MARK(what) timeline_mark(what)
#define ATC_MARK_WARP(warp) timeline_warp_done(warp)
#else
#define ATC_MARK(what) ((void)0)
#define ATC_MARK_WARP(warp) ((void)0)
#endif

#ifdef ATC_EXTREME_COUNTS
/* Diagnostics only (nvcc -DATC_EXTREME_COUNTS): what the extremes' rare
 * paths did, summed over launches; read by atc_debug_extreme_counts. */
enum {
	XC_MERGES, XC_PENDING, XC_BLOCKS_WITH_BEST, XC_STAGE_STEPS,
	/* SM cycles, summed: blocks' start (to the first barrier), their items,
	 * the rare path's steps (a warp's), blocks' K best sent, the last merge,
	 * and of that merge: the wait for its first read (the counters), and
	 * for the candidates' (to the barrier after them) */
	XC_START_CYCLES, XC_ITEMS_CYCLES, XC_STAGE_CYCLES, XC_BLOCK_END_CYCLES, XC_MERGE_CYCLES,
	XC_MERGE_WAIT_CYCLES, XC_MERGE_GATHER_CYCLES, XC_MERGE_RANK_CYCLES,
	XC_MERGES_OVER_64, XC_MERGES_OVER_512, /* merges with more pending than that */
	XC_N
};
__device__ unsigned long long extreme_counts[XC_N];
#define ATC_COUNT(what, n) atomicAdd(&extreme_counts[what], (unsigned long long)(n))
#define ATC_CLOCK() clock64()
#else
#define ATC_COUNT(what, n) ((void)(n))
#define ATC_CLOCK() 0LL
#endif

constexpr size_t HIST_SHARED_BYTES = (size_t)HIST_ROWS * HIST_WORDS * sizeof(uint32_t);
constexpr size_t WARP_STAGE_BYTES = STAGE * sizeof(dev_extreme);
constexpr size_t POINT_STATE_BYTES = TILE * 80; /* the tile's point_state, read early */

/* The area after the header holds the item's histogram (HIST_SHARED); the
 * warps' rings come after the heaps, and hold the warps' power sums (and
 * then the splits' partials) once the rows are read, so that the histogram is emptied as it is flushed and needs
 * no second pass. */
__host__ __device__ inline size_t area_bytes(bool hist_shared)
{
	return hist_shared ? HIST_SHARED_BYTES : 0;
}

/* Rows in flight: on the vector path each warp copies its next steps into a
 * ring of RING_STEPS steps in shared memory (cp.async), so that the bytes in
 * flight do not depend on registers. */
#ifndef ATC_RING_STEPS
#define ATC_RING_STEPS 4
#endif
constexpr int RING_STEPS = ATC_RING_STEPS;

__host__ __device__ inline size_t ring_bytes(int esize)
{
	return (size_t)RING_STEPS * STEP * TILE * (size_t)esize;
}

/* A warp's share of the last area: its ring, then its power sums of the item
 * (WARP_SUMS_BYTES), then a share of the splits' partials. */
__host__ __device__ inline size_t warp_work_bytes(size_t ring)
{
	size_t parts = (size_t)TILE * sizeof(partial);
	return ring > parts ? ring : parts;
}

/* The warps' stages, heaps and work areas: the end of a block's shared
 * memory, which the last block's merge of the extremes takes whole. */
__host__ __device__ inline size_t warp_areas_bytes(int nwarps, int k, size_t ring)
{
	return (size_t)nwarps * (WARP_STAGE_BYTES + (size_t)k * sizeof(dev_extreme) +
	                         warp_work_bytes(ring));
}

/* The warps' rings start on a 128-byte boundary of shared memory: there
 * cp.async's 16-byte chunks fill them at the ideal one wavefront per 128
 * bytes, where 32 bytes off they took twice as many (Nsight; 47.3 against
 * 47.0 us on 8192 x 4096 bf16, 143.3 against 141.6 on 16384 x 8192).  A block
 * asks for RING_ALIGN bytes more, the most the boundary can take. */
constexpr size_t RING_ALIGN = 128;

__host__ __device__ inline size_t shared_bytes(int nwarps, int k, bool hist_shared, size_t ring,
                                               bool prefetch)
{
	return sizeof(block_header) + (prefetch ? POINT_STATE_BYTES : 0) + area_bytes(hist_shared) +
	       RING_ALIGN + warp_areas_bytes(nwarps, k, ring);
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

__device__ __forceinline__ bool is_finite(float x)
{
	return (bits_of(x) & 0x7fffffffu) < 0x7f800000u;
}

/* A lane's channels of one row, as loaded: words of two 16-bit values, or
 * floats. */
static_assert(LANE_CHANNELS % 2 == 0, "16-bit values come in pairs");
template <int D> struct lane_row {
	uint32_t w[LANE_CHANNELS / 2];
};
template <> struct lane_row<AT_F32> {
	float f[LANE_CHANNELS];
};

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

/* Channel v of a loaded row. */
template <int D> __device__ __forceinline__ float element(const lane_row<D> &r, int v)
{
	if (D == AT_BF16) /* the high half needs no shift: mask it */
		return float_of(v & 1 ? r.w[v >> 1] & 0xffff0000u : r.w[v >> 1] << 16);
	return widen<D>(v & 1 ? r.w[v >> 1] >> 16 : r.w[v >> 1] & 0xffffu);
}
template <> __device__ __forceinline__ float element<AT_F32>(const lane_row<AT_F32> &r, int v)
{
	return r.f[v];
}

template <int D> __device__ __forceinline__ void clear_row(lane_row<D> &r)
{
	memset(&r, 0, sizeof r);
}


/* A lane's channels of the row at p on the scalar path (the vector path
 * reads rows through the ring): channel v of the lane is channel_stride *
 * WARP * v away. */
template <int D>
__device__ __forceinline__ void load_row(const void *p, int64_t channel_stride, int valid,
                                         lane_row<D> &r)
{
	for (int v = 0; v < LANE_CHANNELS; v++) {
		if (!(valid & (1 << v)))
			continue;
		int64_t at = (int64_t)v * WARP * channel_stride;
		if (D == AT_F32) {
			reinterpret_cast<float *>(&r)[v] = static_cast<const float *>(p)[at];
		} else {
			uint32_t h = static_cast<const uint16_t *>(p)[at];
			uint32_t &w = reinterpret_cast<uint32_t *>(&r)[v >> 1];
			w = v & 1 ? (w & 0xffffu) | (h << 16) : (w & 0xffff0000u) | h;
		}
	}
}

/* cp.async groups: commit what this thread issued, wait for all but the
 * latest PENDING groups. */
__device__ __forceinline__ void copy_async_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int PENDING> __device__ __forceinline__ void copy_async_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
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

/* The shared-histogram row of x.  For bf16 and f16 values the exponent of
 * |x|^4 is floor(4 log2 |x|) + 127 exactly: x^2 is exact in float and x^4
 * rounds once, and no such value is within 2^-24 of a quarter-octave edge
 * 2^(q/4) (they are irrational but for q = 0, where x^4 is exact).  f32
 * values could be, so they take the bit rule. */
template <int D> __device__ __forceinline__ int hist_row(float x)
{
	if (D == AT_F32) {
		int bin = hist_bin(bits_of(x) & 0x7fffffffu);
		if (bin == 0)
			return ZERO_ROW;
		if (bin == BINS)
			return NONFINITE_ROW;
		return bin == 1 ? FIRST_LOG_ROW - 1 : bin - 2 + FIRST_LOG_ROW;
	}
	float x2 = fabsf(x) * fabsf(x), x4 = x2 * x2;
	return x == 0.0f ? ZERO_ROW : (int)(bits_of(x4) >> 23);
}

/* The histogram bin that a shared row counts into. */
__device__ __forceinline__ int row_bin(int row)
{
	if (row == ZERO_ROW)
		return 0;
	if (row < FIRST_LOG_ROW)
		return 1;
	int bin = row - FIRST_LOG_ROW + 2;
	return bin < BINS - 1 ? bin : BINS - 1;
}

/* Where a lane's channel v counts in a shared histogram row, and by how much:
 * word v/2 * 32 + lane (bank = lane), the low or high half. */
__device__ __forceinline__ int hist_word(int lane, int v)
{
	return (v >> 1) * WARP + lane;
}
__device__ __forceinline__ uint32_t hist_one(int v)
{
	return 1u << (16 * (v & 1));
}

/* Channel of a tile slot: slot = v * 32 + lane holds channel 4 * lane + v on
 * the vector path (a lane reads four adjacent channels) and the slot itself
 * otherwise (a warp reads 32 adjacent channels at a time). */
__host__ __device__ __forceinline__ int slot_channel(int slot, bool vec)
{
	return vec ? LANE_CHANNELS * (slot % WARP) + slot / WARP : slot;
}

/* ---------------------------------------------------------------- moments */

/* A lane's running sums for one channel: power sums of x - shift in double
 * over its finite values, and their order statistics. */
struct lane_sums {
	double s1, s2, s3, s4, abssum;
	float shift, min, max;
	uint32_t nonfinite;
};

__device__ __forceinline__ void sums_init(lane_sums &a, float shift)
{
	a.s1 = a.s2 = a.s3 = a.s4 = a.abssum = 0.0;
	a.shift = shift;
	a.min = a.max = float_of(0x7fffffffu); /* NaN: fminf/fmaxf take the other */
	a.nonfinite = 0;
}

/* Move the power sums of n values from about the shift to about the running
 * mean (rounded to float), by the binomial expansion in double: done when the
 * mean has drifted from the shift, so that the next steps' float sums keep
 * their digits. */
__device__ __forceinline__ void sums_move(double &s1, double &s2, double &s3, double &s4, double n,
                                          double e)
{
	double e2 = e * e;
	s4 = s4 - 4.0 * e * s3 + 6.0 * e2 * s2 - 4.0 * e2 * e * s1 + n * e2 * e2;
	s3 = s3 - 3.0 * e * s2 + 3.0 * e2 * s1 - n * e2 * e;
	s2 = s2 - 2.0 * e * s1 + n * e2;
	s1 = s1 - n * e;
}

__device__ __forceinline__ void sums_recenter(lane_sums &a, double n)
{
	float shift = (float)((double)a.shift + a.s1 / n);
	sums_move(a.s1, a.s2, a.s3, a.s4, n, (double)shift - (double)a.shift);
	a.shift = shift;
}

/* Power sums about the shift -> central moments about the mean (the
 * binomial expansion, as accum.c's tile_central). */
__device__ __forceinline__ partial sums_partial(const lane_sums &a, int64_t rows)
{
	partial p;
	p.nonfinite = a.nonfinite;
	p.min = a.min;
	p.max = a.max;
	p.absmax = fmaxf(fabsf(a.min), fabsf(a.max));
	double n = (double)(rows - (int64_t)a.nonfinite);
	p.n = n;
	if (n <= 0) {
		p.n = p.mean = p.m2 = p.m3 = p.m4 = p.abssum = 0.0;
		return p;
	}
	double d = a.s1 / n, d2 = d * d;
	p.mean = (double)a.shift + d;
	p.m2 = a.s2 - a.s1 * d;
	p.m3 = a.s3 - 3.0 * d * a.s2 + 2.0 * n * d2 * d;
	p.m4 = a.s4 - 4.0 * d * a.s3 + 6.0 * d2 * a.s2 - 3.0 * n * d2 * d2;
	if (p.m2 < 0)
		p.m2 = 0;
	if (p.m4 < 0)
		p.m4 = 0;
	p.abssum = a.abssum;
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

/* A channel's accumulators as they were when the launch began.  Only the
 * thread that folds the launch's moments into them (one a channel, at the
 * very end) writes them, so every block may read them early, at its item's
 * start, and the end of the launch waits for no load. */
struct point_state {
	partial acc;
	uint64_t count, nonfinite;
};
static_assert(sizeof(point_state) * TILE == POINT_STATE_BYTES, "point_state is 80 bytes");

__device__ __forceinline__ point_state load_point(const point_arrays &p, int64_t c)
{
	point_state s;
	s.count = p.count[c];
	s.nonfinite = p.nonfinite[c];
	s.acc.n = (double)s.count;
	s.acc.mean = p.mean[c];
	s.acc.m2 = p.m2[c];
	s.acc.m3 = p.m3[c];
	s.acc.m4 = p.m4[c];
	s.acc.abssum = p.abssum[c];
	s.acc.min = p.min[c];
	s.acc.max = p.max[c];
	s.acc.absmax = p.absmax[c];
	s.acc.nonfinite = 0;
	return s;
}

/* The launch's moments of channel c into the point's (was: load_point's at
 * the launch's start): only one thread of the launch ever does this for a
 * given channel. */
__device__ void fold_into_point(const point_arrays &p, int64_t c, const point_state &was,
                                const partial &call)
{
	partial sum = combine(was.acc, call);
	p.count[c] = was.count + (uint64_t)call.n;
	p.nonfinite[c] = was.nonfinite + call.nonfinite;
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

/* One 16-byte load from L2 (what other blocks of the launch wrote). */
__device__ __forceinline__ dev_extreme load_extreme(const dev_extreme *q)
{
	uint4 bits = __ldcg(reinterpret_cast<const uint4 *>(q));
	dev_extreme e;
	memcpy(&e, &bits, sizeof e);
	return e;
}

/* An extreme as a 128-bit key whose unsigned order is before()'s: |value|'s
 * bits, then the token and the channel (order-preserving as unsigned, then
 * complemented: smaller first), then whether the sign bit is clear.  It keeps
 * every bit, and equal keys are identical extremes (the sign breaks no tie
 * that before() keeps: a token and channel hold one value).  Ranking compares
 * two words where before() took a chain of branches: 170 cycles a comparison
 * (ATC_EXTREME_COUNTS), the whole of the last block's merge. */
struct alignas(16) rank_key {
	unsigned long long hi, lo;
};
static_assert(sizeof(rank_key) == sizeof(dev_extreme), "a key takes an extreme's place");

__device__ __forceinline__ rank_key key_of(const dev_extreme &e)
{
	const uint32_t bits = bits_of(e.value);
	const unsigned long long token = ~((unsigned long long)e.token ^ (1ull << 63));
	const uint32_t channel = ~((uint32_t)e.channel ^ (1u << 31));
	rank_key key;
	key.hi = (unsigned long long)(bits & 0x7fffffffu) << 33 | token >> 31;
	key.lo = token << 33 | (unsigned long long)channel << 1 | (bits >> 31 ^ 1u);
	return key;
}

__device__ __forceinline__ dev_extreme extreme_of(const rank_key &key)
{
	const unsigned long long token = key.hi << 31 | key.lo >> 33;
	dev_extreme e;
	e.value = float_of((uint32_t)(key.hi >> 33) | (uint32_t)(~key.lo & 1u) << 31);
	e.token = (int64_t)(~token ^ (1ull << 63));
	e.channel = (int32_t)(~(uint32_t)(key.lo >> 1) ^ (1u << 31));
	return e;
}

__device__ __forceinline__ bool key_before(const rank_key &a, const rank_key &b)
{
	return a.hi > b.hi || (a.hi == b.hi && a.lo > b.lo);
}

__device__ __forceinline__ uint32_t warp_sum(uint32_t x)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800 /* the PTX for older devices */
	for (int d = WARP / 2; d > 0; d /= 2)
		x += __shfl_xor_sync(0xffffffffu, x, d);
	return x;
#else
	return __reduce_add_sync(0xffffffffu, x);
#endif
}

/* Rank of c[i] among c[0..n) (0: the best), by a whole warp, each lane
 * comparing a share: how many rank before it, identical ones (the same
 * element seen twice) by index, so that ranks are 0..n-1.  A thread a
 * candidate, each comparing all, was latency-bound (11,700 cycles a merge
 * for some 70 candidates, ATC_EXTREME_COUNTS). */
__device__ __forceinline__ uint32_t warp_rank_of(const rank_key *c, uint32_t n, uint32_t i,
                                                 uint32_t lane)
{
	const rank_key e = c[i];
	uint32_t r = 0;
	for (uint32_t j = lane; j < n; j += WARP) {
		const rank_key o = c[j];
		r += key_before(o, e) || (j < i && o.hi == e.hi && o.lo == e.lo);
	}
	return warp_sum(r);
}

/* |x| an element must reach to be looked at by this warp: the larger of the
 * point's K-th best and the warp's, 0 while neither exists. */
__device__ __forceinline__ float warp_floor(const block_header *h, const dev_extreme *heap,
                                            int warp, int k)
{
	if (k == 0)
		return NO_FLOOR;
	float floor = h->has_global_floor ? fabsf(h->global_floor.value) : 0.0f;
	if (h->heap_n[warp] == (uint32_t)k)
		floor = fmaxf(floor, fabsf(heap[0].value));
	return floor;
}

/* Rare path: x reached the floor; stage it if it beats the point's and the
 * warp's K-th best. */
__device__ __forceinline__ void stage_extreme(block_header *h, dev_extreme *stage,
                                              const dev_extreme *heap, int warp, int k, float x,
                                              int64_t channel, int64_t token)
{
	dev_extreme e;
	e.value = x;
	e.channel = (int32_t)channel;
	e.token = token;
	if (h->has_global_floor && !before(e, h->global_floor))
		return;
	if (h->heap_n[warp] == (uint32_t)k && !before(e, heap[0]))
		return;
	uint32_t i = atomicAdd(&h->stage_n[warp], 1u);
	stage[i] = e;
}

/* Lane 0 moves what the warp staged into its heap; the new floor for all. */
__device__ __forceinline__ float warp_take_staged(block_header *h, dev_extreme *stage,
                                                  dev_extreme *heap, int warp, int lane, int k)
{
	__syncwarp();
	if (lane == 0) {
		for (uint32_t i = 0; i < h->stage_n[warp]; i++)
			heap_offer(heap, &h->heap_n[warp], k, stage[i]);
		h->stage_n[warp] = 0;
	}
	__syncwarp();
	return warp_floor(h, heap, warp, k);
}

/* The biased exponent of a non-negative float (bits >> 23) as a multiply-high,
 * which runs on the FMA pipe rather than the busier integer one. */
__device__ __forceinline__ unsigned exponent_of(float nonnegative)
{
#if defined(__CUDA_ARCH__)
	return __umulhi(bits_of(nonnegative), 512u);
#else
	return bits_of(nonnegative) >> 23;
#endif
}

/* Add to a 32-bit word of shared memory by its shared-space address: one
 * reduction instruction, no 64-bit address arithmetic. */
__device__ __forceinline__ void shared_add(unsigned addr, uint32_t value)
{
#if defined(__CUDA_ARCH__)
	asm volatile("red.shared.add.u32 [%0], %1;\n" ::"r"(addr), "r"(value) : "memory");
#elif defined(ATC_EMU)
	*reinterpret_cast<uint32_t *>(emu::dynamic_shared.data() + addr) += value;
#else
	(void)addr, (void)value;
#endif
}

__device__ __forceinline__ unsigned shared_address(const void *p)
{
#if defined(__CUDA_ARCH__)
	return (unsigned)__cvta_generic_to_shared(p);
#elif defined(ATC_EMU)
	return (unsigned)(static_cast<const unsigned char *>(p) - emu::dynamic_shared.data());
#else
	(void)p;
	return 0;
#endif
}

/* Two 16-bit values at once: the smaller (larger) of each pair, NaN losing
 * to a number as with fminf. */
template <int D, bool MAX> __device__ __forceinline__ uint32_t pair_order(uint32_t a, uint32_t b)
{
	uint32_t r;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	if (D == AT_BF16 && MAX)
		asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
	else if (D == AT_BF16)
		asm("min.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
	else if (MAX)
		asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
	else
		asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
#else
	r = 0;
	for (int half = 0; half < 2; half++) {
		uint32_t ha = a >> (16 * half) & 0xffffu, hb = b >> (16 * half) & 0xffffu;
		float fa = widen<D>(ha), fb = widen<D>(hb);
		uint32_t pick = fa != fa ? hb : fb != fb ? ha : (MAX ? fb > fa : fb < fa) ? hb : ha;
		r |= pick << (16 * half);
	}
#endif
	return r;
}

/* ---------------------------------------------------------------- the kernel */

enum hist_mode { HIST_NONE, HIST_SHARED, HIST_DIRECT };

/* What a warp needs while it folds its rows of an item. */
struct warp_ctx {
	block_header *h;
	uint32_t *hist;      /* the shared histogram (HIST_SHARED) */
	dev_extreme *stage, *heap;
	int warp, lane, k, valid; /* valid: bit v set when the lane's channel v exists */
	int64_t channel[LANE_CHANNELS];
	unsigned hist_at[LANE_CHANNELS]; /* shared address of the lane's counter of v in row 0 */
	float floor;
};

/* Median of eight values (Batcher's 19-comparator network): a shift that one
 * outlier among the first rows cannot drag away from the bulk. */
__device__ __forceinline__ float median8(float (&a)[STEP])
{
	static_assert(STEP == 8, "median8 sorts one step");
#define ATC_CX(i, j)                              \
	do {                                          \
		float lo_ = fminf(a[i], a[j]), hi_ = fmaxf(a[i], a[j]); \
		a[i] = lo_;                               \
		a[j] = hi_;                               \
	} while (0)
	ATC_CX(0, 1); ATC_CX(2, 3); ATC_CX(4, 5); ATC_CX(6, 7);
	ATC_CX(0, 2); ATC_CX(1, 3); ATC_CX(4, 6); ATC_CX(5, 7);
	ATC_CX(1, 2); ATC_CX(5, 6); ATC_CX(0, 4); ATC_CX(3, 7);
	ATC_CX(1, 5); ATC_CX(2, 6);
	ATC_CX(1, 4); ATC_CX(3, 6);
	ATC_CX(2, 4); ATC_CX(3, 5);
	ATC_CX(3, 4);
#undef ATC_CX
	return a[4];
}

/* The shift of channel v: the median of the first step's finite values (NaN
 * and Inf count as 0), or the first row's value when the step is short. */
template <int D>
__device__ __forceinline__ float first_shift(const lane_row<D> (&rows)[STEP], int n, int v)
{
	float a[STEP];
	for (int u = 0; u < STEP; u++) {
		float x = element<D>(rows[u], v);
		a[u] = is_finite(x) ? x : 0.0f;
	}
	return n == STEP ? median8(a) : a[0];
}

template <int D>
__device__ __forceinline__ void load_step(const unsigned char *row0, int64_t row_bytes,
                                          int64_t channel_stride, int valid, int n,
                                          lane_row<D> (&rows)[STEP])
{
	for (int u = 0; u < STEP; u++) {
		clear_row<D>(rows[u]);
		if (u < n && valid)
			load_row<D>(row0 + u * row_bytes, channel_stride, valid, rows[u]);
	}
}

/* Where channel v of row u is, from the step's first row of the lane's first
 * channel (the rare paths read the step again: it is in the caches, and the
 * hot loop's rows stay in registers). */
template <int D, bool VEC>
__device__ __forceinline__ float reload(const unsigned char *row0, int64_t row_bytes,
                                        int64_t channel_stride, int u, int v)
{
	int64_t at = VEC ? v : (int64_t)v * WARP * channel_stride;
	const unsigned char *row = row0 + u * row_bytes;
	if (D == AT_F32)
		return reinterpret_cast<const float *>(row)[at];
	return widen<D>(reinterpret_cast<const uint16_t *>(row)[at]);
}

/* A step of one channel folded in double, element by element. */
struct refold_sums {
	double s1, s2, s3, s4, abssum;
	float min, max;
	uint32_t nonfinite;
};

/* Rare path: a step's float sums of channel v were not finite (NaN or Inf in
 * the data, or |x - shift|^4 beyond float) or underflowed: fold its values
 * again in double, counting the non-finite ones apart and taking them back
 * out of the histogram's row 255 (or last bin), where the fast path counted
 * them.  Not inlined, so that the hot loop keeps its registers. */
template <int D, bool VEC, int H>
__device__ ATC_NOINLINE refold_sums refold_step(uint32_t *hist_word_at, uint32_t *hist_bin_at,
                                                const unsigned char *row0, int64_t row_bytes,
                                                int64_t channel_stride, int n, int v, float shift)
{
	refold_sums r;
	r.s1 = r.s2 = r.s3 = r.s4 = r.abssum = 0.0;
	r.min = r.max = float_of(0x7fffffffu);
	r.nonfinite = 0;
	for (int u = 0; u < n; u++) {
		float x = reload<D, VEC>(row0, row_bytes, channel_stride, u, v);
		if (!is_finite(x)) {
			r.nonfinite++;
			if (H == HIST_SHARED)
				atomicAdd(hist_word_at, 0u - hist_one(v));
			else if (H == HIST_DIRECT && hist_bin_at)
				atomicAdd(hist_bin_at, 0xffffffffu);
			continue;
		}
		double d = (double)x - (double)shift, d2 = d * d;
		r.s1 += d;
		r.s2 += d2;
		r.s3 += d2 * d;
		r.s4 += d2 * d2;
		r.abssum += fabs((double)x);
		r.min = fminf(r.min, x);
		r.max = fmaxf(r.max, x);
	}
	return r;
}

/* Rare path: some element of the step reached the warp's floor.  Row by row,
 * lanes stage what beats the K-th bests and lane 0 takes them into the heap
 * (a row stages at most STAGE elements).  Returns the new floor. */
template <int D, bool VEC>
__device__ ATC_NOINLINE float stage_step(block_header *h, dev_extreme *stage, dev_extreme *heap,
                                         int warp, int lane, int k, int valid, int64_t channel0,
                                         int64_t channel_step, const unsigned char *row0,
                                         int64_t row_bytes, int64_t channel_stride, int n,
                                         int64_t token, float floor)
{
	const long long t0 = ATC_CLOCK();
	if (lane == 0)
		ATC_COUNT(XC_STAGE_STEPS, 1);
	for (int u = 0; u < n; u++) {
		for (int v = 0; v < LANE_CHANNELS; v++) {
			if (!(valid >> v & 1))
				continue;
			float x = reload<D, VEC>(row0, row_bytes, channel_stride, u, v);
			if (is_finite(x) && fabsf(x) >= floor)
				stage_extreme(h, stage, heap, warp, k, x, channel0 + v * channel_step,
				              token + u);
		}
		floor = warp_take_staged(h, stage, heap, warp, lane, k);
	}
	if (lane == 0)
		ATC_COUNT(XC_STAGE_CYCLES, ATC_CLOCK() - t0);
	return floor;
}

/* A lane's float sums over a group of FOLD_STEPS steps (power sums of
 * x - shift, |x|, min and max), added to its double sums when the group ends,
 * where the conversions, the checks and the votes are paid.  One step by
 * default: two (16 rows) were no faster on the H200 (61.2 against 59.2 us
 * on 8192 x 4096 bf16) and took one test case past the 1e-7 bar (std
 * 1.12e-7 of the std); four were slower (65.6 us). */
#ifndef ATC_FOLD_STEPS
#define ATC_FOLD_STEPS 1
#endif
constexpr int FOLD_STEPS = ATC_FOLD_STEPS;
static_assert(FOLD_STEPS == 1 || FOLD_STEPS == 2 || FOLD_STEPS == 4,
              "a group of steps ends where the drift of the mean is checked");

template <int D> struct group_sums {
	float t1[LANE_CHANNELS], t2[LANE_CHANNELS], t3[LANE_CHANNELS], t4[LANE_CHANNELS];
	float ta[LANE_CHANNELS], tmin[LANE_CHANNELS], tmax[LANE_CHANNELS];
	uint32_t pmin[LANE_CHANNELS / 2], pmax[LANE_CHANNELS / 2];
};

template <int D> __device__ __forceinline__ void group_clear(group_sums<D> &t)
{
	for (int v = 0; v < LANE_CHANNELS; v++) {
		t.t1[v] = t.t2[v] = t.t3[v] = t.t4[v] = t.ta[v] = 0.0f;
		t.tmin[v] = t.tmax[v] = float_of(0x7fffffffu);
	}
	for (int q = 0; q < LANE_CHANNELS / 2; q++)
		t.pmin[q] = t.pmax[q] = 0x7fff7fffu; /* NaN pairs */
}

/* One step of n rows (FULL: n == STEP, no row checks) into the group's sums
 * and the histogram.  This is the loop that must run at memory speed. */
template <int D, bool FULL, int H>
__device__ __forceinline__ void step_add(const point_arrays &p, const warp_ctx &w,
                                         const lane_row<D> (&rows)[STEP], int n,
                                         const lane_sums (&s)[LANE_CHANNELS], group_sums<D> &t)
{
	constexpr bool PACKED = D != AT_F32; /* min/max on pairs of 16-bit values */
	constexpr int PAIRS = LANE_CHANNELS / 2;
ATC_UNROLL
	for (int u = 0; u < STEP; u++) {
		if (!FULL && u >= n)
			break;
		if (PACKED) {
			const uint32_t *words = reinterpret_cast<const uint32_t *>(&rows[u]);
			for (int q = 0; q < PAIRS; q++) {
				t.pmin[q] = pair_order<D, false>(t.pmin[q], words[q]);
				t.pmax[q] = pair_order<D, true>(t.pmax[q], words[q]);
			}
		}
ATC_UNROLL
		for (int v = 0; v < LANE_CHANNELS; v++) {
			float x = element<D>(rows[u], v);
			float d = x - s[v].shift, d2 = d * d;
			t.t1[v] += d;
			t.t2[v] += d2;
			t.t3[v] = fmaf(d2, d, t.t3[v]);
			t.t4[v] = fmaf(d2, d2, t.t4[v]);
			t.ta[v] += fabsf(x);
			if (!PACKED) {
				t.tmin[v] = fminf(t.tmin[v], x);
				t.tmax[v] = fmaxf(t.tmax[v], x);
			}
			if (H == HIST_SHARED) {
				unsigned row;
				if (D == AT_F32) {
					row = (unsigned)hist_row<D>(x);
				} else { /* the exponent of |x|^4 (see hist_row) */
					float x2 = fabsf(x) * fabsf(x), x4 = x2 * x2;
					row = x == 0.0f ? (unsigned)ZERO_ROW : exponent_of(x4);
				}
				shared_add(w.hist_at[v] + row * (unsigned)(HIST_WORDS * sizeof(uint32_t)),
				           hist_one(v));
			} else if (H == HIST_DIRECT && (w.valid >> v & 1)) {
				atomicAdd(&p.hist[w.channel[v] * BINS + row_bin(hist_row<D>(x))], 1u);
			}
		}
	}
}

/* The group's n rows, from row g, into the lane's double sums; the rare
 * paths (non-finite or underflowing float sums, elements that reach the
 * extremes' floor) read the group's rows again. */
template <int D, bool VEC, int H>
__device__ __forceinline__ void group_fold(const point_arrays &p, warp_ctx &w, group_sums<D> &t,
                                           int n, lane_sums (&s)[LANE_CHANNELS], int64_t g,
                                           const unsigned char *lane_base, int64_t token_base,
                                           int64_t row_bytes, int64_t channel_stride)
{
	if (D != AT_F32) {
		for (int q = 0; q < LANE_CHANNELS / 2; q++) {
			t.tmin[2 * q] = widen<D>(t.pmin[q] & 0xffffu);
			t.tmin[2 * q + 1] = widen<D>(t.pmin[q] >> 16);
			t.tmax[2 * q] = widen<D>(t.pmax[q] & 0xffffu);
			t.tmax[2 * q + 1] = widen<D>(t.pmax[q] >> 16);
		}
	}
	/* not finite (NaN/Inf, or beyond float), or underflowing: fold again */
	bool bad[LANE_CHANNELS], any_bad = false;
	for (int v = 0; v < LANE_CHANNELS; v++) {
		bad[v] = (!(t.t4[v] <= FLT_MAX)) | ((t.t2[v] > 0.0f) & (t.t2[v] < 0x1p-60f));
		any_bad |= bad[v];
	}
	if (__any_sync(0xffffffffu, any_bad)) {
		for (int v = 0; v < LANE_CHANNELS; v++) {
			if (!bad[v])
				continue;
			uint32_t *word = H == HIST_SHARED
			                     ? &w.hist[NONFINITE_ROW * HIST_WORDS + hist_word(w.lane, v)]
			                     : nullptr;
			uint32_t *bin = H == HIST_DIRECT && (w.valid >> v & 1)
			                    ? &p.hist[w.channel[v] * BINS + BINS - 1]
			                    : nullptr;
			refold_sums r = refold_step<D, VEC, H>(word, bin, lane_base + g * row_bytes, row_bytes,
			                                       channel_stride, n, v, s[v].shift);
			t.t1[v] = t.t2[v] = t.t3[v] = t.t4[v] = t.ta[v] = 0.0f;
			t.tmin[v] = r.min;
			t.tmax[v] = r.max;
			s[v].s1 += r.s1;
			s[v].s2 += r.s2;
			s[v].s3 += r.s3;
			s[v].s4 += r.s4;
			s[v].abssum += r.abssum;
			s[v].nonfinite += r.nonfinite;
		}
	}
	for (int v = 0; v < LANE_CHANNELS; v++) {
		s[v].s1 += (double)t.t1[v];
		s[v].s2 += (double)t.t2[v];
		s[v].s3 += (double)t.t3[v];
		s[v].s4 += (double)t.t4[v];
		s[v].abssum += (double)t.ta[v];
		s[v].min = fminf(s[v].min, t.tmin[v]);
		s[v].max = fmaxf(s[v].max, t.tmax[v]);
	}
	/* an element reached the floor exactly when the group's min or max did */
	bool hit = false;
	for (int v = 0; v < LANE_CHANNELS; v++)
		hit |= fmaxf(fabsf(t.tmin[v]), fabsf(t.tmax[v])) >= w.floor;
	if (w.k > 0 && __any_sync(0xffffffffu, hit))
		w.floor = stage_step<D, VEC>(w.h, w.stage, w.heap, w.warp, w.lane, w.k, w.valid,
		                             w.channel[0], w.channel[1] - w.channel[0],
		                             lane_base + g * row_bytes, row_bytes, channel_stride, n,
		                             token_base + g, w.floor);
}

/* The ring is filled with 16-byte copies: a row of the tile (TILE channels)
 * is ROW_CHUNKS chunks, so each copy instruction of the warp moves
 * WARP / ROW_CHUNKS rows and a step takes STEP_COPIES of them per lane. */
template <int D> struct ring_shape {
	static constexpr int ROW_BYTES = TILE * (D == AT_F32 ? 4 : 2);
	static constexpr int ROW_CHUNKS = ROW_BYTES / 16;
	static constexpr int ROWS_PER_COPY = WARP / ROW_CHUNKS;
	static constexpr int STEP_COPIES = STEP / ROWS_PER_COPY;
};
static_assert(ring_shape<AT_BF16>::STEP_COPIES * ring_shape<AT_BF16>::ROWS_PER_COPY == STEP &&
                  ring_shape<AT_F32>::STEP_COPIES * ring_shape<AT_F32>::ROWS_PER_COPY == STEP,
              "a step of the tile is whole 16-byte chunks");

/* What a lane copies into the ring: chunk (lane % ROW_CHUNKS) of rows
 * lane / ROW_CHUNKS + k * ROWS_PER_COPY of each step, advanced step by step. */
struct ring_lane {
	const unsigned char *src; /* the chunk in the next step's first row of this lane */
	const void *safe;         /* an address to name when nothing is copied */
	int64_t copy_bytes;       /* ROWS_PER_COPY rows apart */
	int64_t step_bytes;       /* STEP rows apart */
	int rows_left;            /* rows from src to the warp's end (an item has < 2^16) */
	int chunk_bytes;          /* 16, fewer in the tile's last chunk, 0 past the channels */
	unsigned dst;             /* the chunk in slot 0, as a shared-space address */
	int next;                 /* the step the next fill copies */
};

template <int D>
__device__ __forceinline__ ring_lane ring_lane_of(const launch_job &job, int64_t c0,
                                                  int64_t channels, int64_t g_begin,
                                                  int64_t g_end, lane_row<D> *ring, int lane)
{
	typedef ring_shape<D> R;
	const int esize = D == AT_F32 ? 4 : 2, chunk = lane % R::ROW_CHUNKS;
	const int row = lane / R::ROW_CHUNKS;
	const int64_t row_bytes = job.row_stride * esize;
	ring_lane r;
	r.src = static_cast<const unsigned char *>(job.data) + c0 * esize + (g_begin + row) * row_bytes +
	        chunk * 16;
	r.safe = job.data;
	r.copy_bytes = R::ROWS_PER_COPY * row_bytes;
	r.step_bytes = STEP * row_bytes;
	r.rows_left = (int)(g_end - g_begin) - row;
	int64_t left = (channels - c0) * esize - chunk * 16;
	r.chunk_bytes = left >= 16 ? 16 : left > 0 ? (int)left : 0;
	r.dst = shared_address(reinterpret_cast<unsigned char *>(ring) + row * R::ROW_BYTES + chunk * 16);
	r.next = 0;
	return r;
}

/* The next step of the warp's rows into its slot of the ring (rows past the
 * end are zero-filled, reading nothing). */
template <int D> __device__ __forceinline__ void ring_fill(ring_lane &r)
{
	typedef ring_shape<D> R;
	unsigned dst = r.dst + (unsigned)((r.next % RING_STEPS) * STEP * R::ROW_BYTES);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	if (r.rows_left >= STEP && r.chunk_bytes == 16) { /* the usual case: whole chunks */
		for (int k = 0; k < R::STEP_COPIES; k++)
			asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
			                 dst + (unsigned)(k * R::ROWS_PER_COPY * R::ROW_BYTES)),
			             "l"(r.src + k * r.copy_bytes));
		r.src += r.step_bytes;
		r.rows_left -= STEP;
		r.next++;
		return;
	}
#endif
	for (int k = 0; k < R::STEP_COPIES; k++) {
		const int u = k * R::ROWS_PER_COPY;
		bool real = u < r.rows_left && r.chunk_bytes > 0;
		const void *from = real ? static_cast<const void *>(r.src + k * r.copy_bytes) : r.safe;
		int bytes = real ? r.chunk_bytes : 0;
		unsigned to = dst + (unsigned)(u * R::ROW_BYTES);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from),
		             "r"(bytes));
#elif defined(__CUDA_ARCH__) /* before Ampere: a plain copy, in order */
		uint4 chunk = make_uint4(0, 0, 0, 0);
		if (bytes == 16)
			chunk = *static_cast<const uint4 *>(from);
		else
			for (int b = 0; b < bytes; b++)
				reinterpret_cast<unsigned char *>(&chunk)[b] = static_cast<const unsigned char *>(from)[b];
		asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(to), "r"(chunk.x),
		             "r"(chunk.y), "r"(chunk.z), "r"(chunk.w)
		             : "memory");
#elif defined(ATC_EMU)
		unsigned char *at = emu::dynamic_shared.data() + to;
		memset(at, 0, 16);
		memcpy(at, from, (size_t)bytes);
#else
		(void)to, (void)from, (void)bytes;
#endif
	}
	r.src += r.step_bytes;
	r.rows_left -= STEP;
	r.next++;
}

/* A warp's rows [g_begin, g_end) of the item into its lanes' sums.  Counts
 * within the item are ints (an item has < 2^16 rows): the loop's bookkeeping
 * costs a few instructions a step, not 64-bit arithmetic. */
template <int D, bool VEC, int H>
__device__ __forceinline__ void fold_rows(const point_arrays &p, const launch_job &job,
                                          warp_ctx &w, const unsigned char *lane_base,
                                          int64_t g_begin, int64_t g_end,
                                          lane_sums (&s)[LANE_CHANNELS], lane_row<D> *ring)
{
	const int64_t row_bytes = job.row_stride * (int64_t)(D == AT_F32 ? 4 : 2);
	const int rows = (int)(g_end - g_begin);
	const int steps = (rows + STEP - 1) / STEP;
	ring_lane rl;
	if (VEC) {
		rl = ring_lane_of<D>(job, w.channel[0] - slot_channel(w.lane, true), p.channels, g_begin,
		                     g_end, ring, w.lane);
		for (int j = 0; j < RING_STEPS; j++) {
			if (j < steps)
				ring_fill<D>(rl);
			copy_async_commit();
		}
	}
	const lane_row<D> *slot = ring + w.lane;
	group_sums<D> t;
	for (int i = 0; i < steps; i++) {
		const int n = rows - i * STEP < STEP ? rows - i * STEP : STEP;
		const int64_t g = g_begin + i * STEP;
		lane_row<D> cur[STEP];
		if (VEC) {
			copy_async_wait<RING_STEPS - 1>();
			__syncwarp(); /* lanes read rows that other lanes copied */
			for (int u = 0; u < STEP; u++)
				cur[u] = slot[u * WARP];
			slot = (i + 1) % RING_STEPS ? slot + STEP * WARP : ring + w.lane;
		} else {
			load_step<D>(lane_base + g * row_bytes, row_bytes, job.channel_stride, w.valid, n,
			             cur);
		}
		if (i == 0)
			for (int v = 0; v < LANE_CHANNELS; v++)
				sums_init(s[v], first_shift<D>(cur, n, v));
		if (i % FOLD_STEPS == 0)
			group_clear<D>(t);
		if (n == STEP)
			step_add<D, true, H>(p, w, cur, n, s, t);
		else
			step_add<D, false, H>(p, w, cur, n, s, t);
		if (i % FOLD_STEPS == FOLD_STEPS - 1 || i == steps - 1) {
			const int first = i - i % FOLD_STEPS;
			group_fold<D, VEC, H>(p, w, t, (i - first) * STEP + n, s, g_begin + first * STEP,
			                      lane_base, job.token_base, row_bytes, job.channel_stride);
		}
		if (i % 4 == 3) {
			const int done = i * STEP + n;
			for (int v = 0; v < LANE_CHANNELS; v++) {
				double nf = (double)(done - (int)s[v].nonfinite);
				if (nf > 0 && s[v].s1 * s[v].s1 > 0.25 * nf * s[v].s2)
					sums_recenter(s[v], nf);
			}
		}
		if (VEC) { /* this step's slot is read: refill it RING_STEPS ahead */
			__syncwarp();
			if (i + RING_STEPS < steps)
				ring_fill<D>(rl);
			copy_async_commit();
		}
	}
	if (VEC)
		copy_async_wait<0>();
}

/* The item's shared histogram into the point's, emptied on the way for the
 * next item.  Most counters are zero (an item's values fill a few dozen of
 * the 257 rows), so the scan is what costs: each thread reads FLUSH_LOADS
 * 16-byte quads at once, so that their latencies overlap. */
constexpr int HIST_QUADS = HIST_ROWS * HIST_WORDS / 4;
constexpr int FLUSH_LOADS = 4;
static_assert(HIST_WORDS % 4 == 0, "a quad of counters never straddles two rows");

__device__ void flush_quad(const point_arrays &p, uint4 *quads, int i, uint4 q, int64_t c0, bool vec)
{
	const uint32_t words[4] = {q.x, q.y, q.z, q.w};
	quads[i] = make_uint4(0, 0, 0, 0);
	const int row = 4 * i / HIST_WORDS, bin = row_bin(row);
	for (int j = 0; j < 4; j++) {
		const int word = (4 * i + j) % HIST_WORDS;
		for (int half = 0; half < 2; half++) {
			uint32_t seen = half ? words[j] >> 16 : words[j] & 0xffffu;
			int v = 2 * (word / WARP) + half;
			int64_t c = c0 + slot_channel(v * WARP + word % WARP, vec);
			if (seen && c < p.channels)
				atomicAdd(&p.hist[c * BINS + bin], seen);
		}
	}
}

/* By `threads` threads of the block, this one being `thread` of them. */
__device__ void flush_hist(const point_arrays &p, uint32_t *hist, int64_t c0, bool vec, int thread,
                           int threads)
{
	uint4 *quads = reinterpret_cast<uint4 *>(hist);
	const int stride = threads;
	for (int first = thread; first < HIST_QUADS; first += FLUSH_LOADS * stride) {
		uint4 q[FLUSH_LOADS];
		for (int u = 0; u < FLUSH_LOADS; u++) {
			int i = first + u * stride;
			q[u] = i < HIST_QUADS ? quads[i] : make_uint4(0, 0, 0, 0);
		}
		for (int u = 0; u < FLUSH_LOADS; u++)
			if (q[u].x | q[u].y | q[u].z | q[u].w)
				flush_quad(p, quads, first + u * stride, q[u], c0, vec);
	}
}

/* The warps' power sums of an item, kept in the work area as arrays
 * [field][warp][slot]: a warp's 32 consecutive slots fall in distinct banks
 * (as 64-byte partials, every field's load or store was a 16-way bank
 * conflict, and the timeline put 6.5 us of a block's epilogue there). */
struct warp_sums {
	double *s1, *s2, *s3, *s4, *abssum;
	float *shift, *min, *max;
	uint32_t *n, *nonfinite;
};
constexpr size_t WARP_SUMS_BYTES = TILE * (5 * sizeof(double) + 5 * sizeof(float));
static_assert(WARP_SUMS_BYTES <= TILE * sizeof(partial),
              "a warp's power sums fit its share of the work area");

__device__ __forceinline__ warp_sums warp_sums_at(unsigned char *work, int nwarps)
{
	const size_t cells = (size_t)nwarps * TILE;
	double *d = reinterpret_cast<double *>(work);
	float *f = reinterpret_cast<float *>(d + 5 * cells);
	uint32_t *u = reinterpret_cast<uint32_t *>(f + 3 * cells);
	warp_sums ws = {d, d + cells, d + 2 * cells, d + 3 * cells, d + 4 * cells,
	                f, f + cells, f + 2 * cells, u, u + cells};
	return ws;
}

__device__ __forceinline__ void store_warp_sums(const warp_sums &ws, int i, const lane_sums &a,
                                                int rows)
{
	ws.s1[i] = a.s1;
	ws.s2[i] = a.s2;
	ws.s3[i] = a.s3;
	ws.s4[i] = a.s4;
	ws.abssum[i] = a.abssum;
	ws.shift[i] = a.shift;
	ws.min[i] = a.min;
	ws.max[i] = a.max;
	ws.n[i] = (uint32_t)rows - a.nonfinite;
	ws.nonfinite[i] = a.nonfinite;
}

/* One slot's moments over the item's rows: the warps' power sums moved to
 * one shift (the item's mean, rounded to float) and added in warp order.
 * Moving sums is the binomial expansion, exact up to rounding, and costs no
 * division; the one division comes in sums_partial.  Chan's pairwise
 * combine, which the warps used before, divides at every step. */
__device__ partial combine_warp_sums(const warp_sums &ws, int slot, int nwarps)
{
	double n = 0.0, sum = 0.0;
	for (int w = 0; w < nwarps; w++) {
		const int i = w * TILE + slot;
		const double nw = (double)ws.n[i];
		n += nw;
		sum += nw * (double)ws.shift[i] + ws.s1[i];
	}
	lane_sums t;
	sums_init(t, n > 0 ? (float)(sum / n) : 0.0f);
	for (int w = 0; w < nwarps; w++) {
		const int i = w * TILE + slot;
		double s1 = ws.s1[i], s2 = ws.s2[i], s3 = ws.s3[i], s4 = ws.s4[i];
		sums_move(s1, s2, s3, s4, (double)ws.n[i], (double)t.shift - (double)ws.shift[i]);
		t.s1 += s1;
		t.s2 += s2;
		t.s3 += s3;
		t.s4 += s4;
		t.abssum += ws.abssum[i];
		t.min = fminf(t.min, ws.min[i]);
		t.max = fmaxf(t.max, ws.max[i]);
		t.nonfinite += ws.nonfinite[i];
	}
	return sums_partial(t, (int64_t)n + (int64_t)t.nonfinite);
}

/* The shares' partials of each slot combined in a tree (parts[w * TILE + slot]
 * ends in w = 0): log2(shares) combines deep rather than shares - 1. */
__device__ void combine_shares(partial *parts, int shares)
{
	for (int gap = 1; gap < shares; gap *= 2) {
		const int pairs = (shares + 2 * gap - 1) / (2 * gap);
		for (int t = (int)threadIdx.x; t < pairs * TILE; t += (int)blockDim.x) {
			const int slot = t % TILE, w = (t / TILE) * 2 * gap;
			if (w + gap < shares)
				parts[w * TILE + slot] =
				    combine(parts[w * TILE + slot], parts[(w + gap) * TILE + slot]);
		}
		__syncthreads();
	}
}

/* The last block of a tile: the splits' partials of its channels, each
 * thread combining a strided share of the splits, then the shares in a tree
 * (parts as scratch). */
__device__ void combine_splits(const point_arrays &p, partial *parts, int64_t c0, int splits,
                               int nwarps, bool vec)
{
	const int shares = nwarps < splits ? nwarps : splits;
	for (int t = (int)threadIdx.x; t < shares * TILE; t += (int)blockDim.x) {
		const int slot = t % TILE, share = t / TILE;
		const int64_t c = c0 + slot_channel(slot, vec);
		partial acc;
		memset(&acc, 0, sizeof acc); /* no channel: an empty partial */
		if (c < p.channels) {
			acc = load_partial(&p.scratch[share * p.channels + c]);
			for (int i = share + shares; i < splits; i += shares)
				acc = combine(acc, load_partial(&p.scratch[i * p.channels + c]));
		}
		parts[share * TILE + slot] = acc;
	}
	__syncthreads();
	combine_shares(parts, shares);
}

/* ATC_EPILOGUE_OVERLAP=1: once the rows are folded, the threads past the
 * TILE that combine the warps' sums (the other 14 warps of 16) flush the
 * shared histogram meanwhile, instead of waiting for the combine and the
 * splits' merge and flushing after them.  The histogram area is no one
 * else's until the item's last barrier, only the threads that wrote scratch
 * fence (a fence waits for the thread's own reductions, and the flush's are
 * not theirs), and the last split still merges with all threads after a
 * barrier.  Blocks of TILE threads or fewer flush after, as before.  The
 * default: 8192 x 4096 bf16 47.6 against 48.6 us, 16384 x 2048 49.3 against
 * 51.0 (docs/BENCHMARKS-gpu.md, fifth session). */
#ifndef ATC_EPILOGUE_OVERLAP
#define ATC_EPILOGUE_OVERLAP 1
#endif
constexpr bool EPILOGUE_OVERLAP = ATC_EPILOGUE_OVERLAP != 0;

/* Pending extremes the last block ranks at once, beside the point's K best:
 * as many as its threads, or as fit twice in the shared memory it no longer
 * needs.  The smallest block (one warp, vector path off) frees
 * STAGE + k + TILE * sizeof(partial) / 16 extremes, so a chunk is never
 * empty. */
__host__ __device__ inline uint32_t merge_chunk(size_t free_bytes, int k, int threads)
{
	size_t fit = free_bytes / (2 * sizeof(dev_extreme)) - (size_t)k;
	return (uint32_t)(fit < (size_t)threads ? fit : (size_t)threads);
}
static_assert((STAGE + ATC_MAX_EXTREMES + TILE * sizeof(partial) / sizeof(dev_extreme)) / 2 >
                  ATC_MAX_EXTREMES + WARP - 1,
              "the last block ranks at least a warp of pending extremes at a time");

/* The last block of a launch: the point's K best so far and the blocks' K
 * best (the pending list), ranked by all its threads, each candidate against
 * every other, in shared memory.  After a point's first launches only a
 * handful are pending (7 a launch in the Llama benchmark), so this is two
 * reads from memory (some 2,500 cycles) and one pass.  One thread sifting
 * them into a heap took 23,000 cycles a launch with every other block done,
 * 2.5 ms of a forward, nearly all of it in before()'s comparisons
 * (ATC_EXTREME_COUNTS).  A point's first launches pend thousands: they come
 * a chunk at a time, the later chunks filtered by the K-th best so far. */
__device__ void merge_launch_best(const point_arrays &p, block_header *h, dev_extreme *area,
                                  uint32_t chunk)
{
	const long long t_merge = ATC_CLOCK();
	const uint32_t k = (uint32_t)p.k, tid = threadIdx.x, threads = blockDim.x;
	const uint32_t lane = tid % WARP, warp = tid / WARP, nwarps = threads / WARP;
	const uint32_t pending = __ldcg(&p.counters[N_PENDING]);
	uint32_t total = __ldcg(&p.counters[N_BEST]);
	long long t_read = 0;
	if (tid == 0) {
		ATC_COUNT(XC_PENDING, pending); /* waits for the read; the clock after it */
		t_read = ATC_CLOCK();
		ATC_COUNT(XC_MERGES, 1);
		ATC_COUNT(XC_MERGE_WAIT_CYCLES, t_read - t_merge);
		ATC_COUNT(XC_MERGES_OVER_64, pending > 64);
		ATC_COUNT(XC_MERGES_OVER_512, pending > 512);
	}
	if (pending == 0) { /* the usual case once the K best are good */
		if (tid == 0) {
			p.counters[BLOCKS_DONE] = 0;
			ATC_COUNT(XC_MERGE_CYCLES, ATC_CLOCK() - t_merge);
		}
		return;
	}
	rank_key *cur = reinterpret_cast<rank_key *>(area), *next = cur + k + chunk;
	uint32_t taken = pending < chunk ? pending : chunk;
	/* the first chunk unfiltered: each beat the floor the launch began with */
	for (uint32_t i = tid; i < total + taken; i += threads)
		cur[i] = key_of(load_extreme(i < total ? &p.best[i] : &p.pending[i - total]));
	total += taken;
	__syncthreads();
	const long long t_gathered = ATC_CLOCK();
	if (tid == 0)
		ATC_COUNT(XC_MERGE_GATHER_CYCLES, t_gathered - t_read);
	/* each round counts in the other slot: a thread may still read this
	 * round's after thread 0 set the next one's */
	for (int round = 0; taken < pending; round ^= 1) {
		const uint32_t m = total < k ? total : k;
		for (uint32_t i = warp; i < total; i += nwarps) {
			uint32_t r = warp_rank_of(cur, total, i, lane);
			if (r < m && lane == 0)
				next[r] = cur[i];
		}
		if (tid == 0)
			h->merge_n[round] = m;
		__syncthreads(); /* next is whole; nobody reads cur */
		rank_key *t = cur;
		cur = next;
		next = t;
		const uint32_t c = pending - taken < chunk ? pending - taken : chunk;
		for (uint32_t i = tid; i < c; i += threads) {
			const rank_key e = key_of(load_extreme(&p.pending[taken + i]));
			if (m < k || key_before(e, cur[m - 1]))
				cur[atomicAdd(&h->merge_n[round], 1u)] = e;
		}
		taken += c;
		__syncthreads();
		total = h->merge_n[round];
	}
	const uint32_t n = total < k ? total : k;
	for (uint32_t i = warp; i < total; i += nwarps) {
		uint32_t r = warp_rank_of(cur, total, i, lane);
		if (r < n && lane == 0)
			p.best[r] = extreme_of(cur[i]);
		if (r == k - 1 && lane == 0)
			*p.floor = extreme_of(cur[i]);
	}
	if (tid == 0) {
		ATC_COUNT(XC_MERGE_RANK_CYCLES, ATC_CLOCK() - t_gathered);
		p.counters[N_BEST] = n;
		if (n == k)
			p.counters[HAS_FLOOR] = 1;
		p.counters[N_PENDING] = 0;
		p.counters[BLOCKS_DONE] = 0;
		ATC_COUNT(XC_MERGE_CYCLES, ATC_CLOCK() - t_merge);
	}
}

template <int D, bool VEC, int H>
__global__ void __launch_bounds__(MAX_WARPS * WARP, ATC_MIN_BLOCKS)
fold_kernel(point_arrays p, launch_job job)
{
	ATC_DYNAMIC_SHARED(shared);
	block_header *h = reinterpret_cast<block_header *>(shared);
	point_state *was = reinterpret_cast<point_state *>(shared + sizeof(block_header));
	unsigned char *area = shared + sizeof(block_header) + (job.prefetch ? POINT_STATE_BYTES : 0);
	const int nwarps = (int)(blockDim.x / WARP), warp = (int)(threadIdx.x / WARP);
	const int lane = (int)(threadIdx.x % WARP), k = p.k;
	const int esize = D == AT_F32 ? 4 : 2;
	unsigned char *warp_areas = area + area_bytes(H == HIST_SHARED);
	dev_extreme *heaps = reinterpret_cast<dev_extreme *>(warp_areas + nwarps * WARP_STAGE_BYTES);
	const size_t heaps_end = (size_t)(reinterpret_cast<unsigned char *>(heaps + nwarps * k) - shared);
	unsigned char *work = shared + (heaps_end + RING_ALIGN - 1) / RING_ALIGN * RING_ALIGN;
	/* once the rows are read: the warps' sums, then the splits' partials */
	const warp_sums ws = warp_sums_at(work, nwarps);
	partial *parts = reinterpret_cast<partial *>(work); /* [nwarps][TILE] */
	lane_row<D> *ring = reinterpret_cast<lane_row<D> *>(
	    work + (size_t)warp * warp_work_bytes(VEC ? ring_bytes(esize) : 0));
	warp_ctx w;
	w.h = h;
	w.hist = reinterpret_cast<uint32_t *>(area);
	w.stage = reinterpret_cast<dev_extreme *>(warp_areas + warp * WARP_STAGE_BYTES);
	w.heap = heaps + warp * k;
	w.warp = warp;
	w.lane = lane;
	w.k = k;
	ATC_MARK(0);
	const long long t_start = ATC_CLOCK();

	if (threadIdx.x == 0) { /* the floor read beside its flag: one wait, not two */
		const uint32_t has_floor = k > 0 ? p.counters[HAS_FLOOR] : 0;
		const dev_extreme floor = k > 0 ? *p.floor : dev_extreme{};
		h->has_global_floor = has_floor;
		h->global_floor = floor;
	}
	if (threadIdx.x < (unsigned)nwarps)
		h->heap_n[threadIdx.x] = h->stage_n[threadIdx.x] = 0;
	if (H == HIST_SHARED)
		for (int i = (int)threadIdx.x; i < HIST_QUADS; i += (int)blockDim.x)
			reinterpret_cast<uint4 *>(w.hist)[i] = make_uint4(0, 0, 0, 0);
	__syncthreads();
	w.floor = warp_floor(h, w.heap, warp, k);
	for (int v = 0; v < LANE_CHANNELS; v++)
		w.hist_at[v] = shared_address(&w.hist[hist_word(lane, v)]);
	const long long t_items = ATC_CLOCK();
	if (threadIdx.x == 0)
		ATC_COUNT(XC_START_CYCLES, t_items - t_start);

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

		for (int slot = (int)threadIdx.x; job.prefetch && slot < TILE; slot += (int)blockDim.x) {
			int64_t c = c0 + slot_channel(slot, VEC);
			if (c < p.channels)
				was[slot] = load_point(p, c);
		}
		w.valid = 0;
		for (int v = 0; v < LANE_CHANNELS; v++) {
			w.channel[v] = c0 + slot_channel(v * WARP + lane, VEC);
			if (w.channel[v] < p.channels)
				w.valid |= 1 << v;
		}
		const unsigned char *lane_base = static_cast<const unsigned char *>(job.data) +
		                                 w.channel[0] * job.channel_stride * esize;
		lane_sums s[LANE_CHANNELS];
		for (int v = 0; v < LANE_CHANNELS; v++)
			sums_init(s[v], 0.0f);
		if (g_begin < g_end)
			fold_rows<D, VEC, H>(p, job, w, lane_base, g_begin, g_end, s, ring);
		ATC_MARK_WARP(warp);

		__syncthreads(); /* every warp's counts are in, and the rings are read */
		ATC_MARK(1);
		const int warp_rows = g_end > g_begin ? (int)(g_end - g_begin) : 0;
		for (int v = 0; v < LANE_CHANNELS; v++)
			store_warp_sums(ws, warp * TILE + v * WARP + lane, s[v], warp_rows);
		__syncthreads();
		ATC_MARK(6);
		/* a thread a slot; the other warps go on to the histogram's flush */
		const bool flush_beside = EPILOGUE_OVERLAP && H == HIST_SHARED && (int)blockDim.x > TILE;
		if (flush_beside && (int)threadIdx.x >= TILE)
			flush_hist(p, w.hist, c0, VEC, (int)threadIdx.x - TILE, (int)blockDim.x - TILE);
		for (int slot = (int)threadIdx.x; slot < TILE; slot += (int)blockDim.x) {
			const int64_t c = c0 + slot_channel(slot, VEC);
			if (c >= p.channels)
				continue;
			const partial item = combine_warp_sums(ws, slot, nwarps);
			if (job.splits == 1)
				fold_into_point(p, c, job.prefetch ? was[slot] : load_point(p, c), item);
			else
				p.scratch[split * p.channels + c] = item;
		}
		ATC_MARK(4);

		if (job.splits > 1) {
			if (!EPILOGUE_OVERLAP || (int)threadIdx.x < TILE) /* the threads that wrote */
				__threadfence();
			__syncthreads();
			if (threadIdx.x == 0)
				h->is_last = atomicAdd(&p.tile_done[tile], 1u) == (uint32_t)job.splits - 1;
			__syncthreads();
			if (h->is_last) {
				combine_splits(p, parts, c0, job.splits, nwarps, VEC);
				for (int slot = (int)threadIdx.x; slot < TILE; slot += (int)blockDim.x) {
					int64_t c = c0 + slot_channel(slot, VEC);
					if (c < p.channels)
						fold_into_point(p, c, job.prefetch ? was[slot] : load_point(p, c), parts[slot]);
				}
				if (threadIdx.x == 0)
					p.tile_done[tile] = 0;
			}
		}
		/* The histogram last: its thousands of reductions need no order
		 * within the launch, and a fence issued after them (above) would
		 * wait for every one (Nsight: 6% of the samples at that fence). */
		ATC_MARK(5);
		if (H == HIST_SHARED && !flush_beside)
			flush_hist(p, w.hist, c0, VEC, (int)threadIdx.x, (int)blockDim.x);
		__syncthreads(); /* the partials are read: the area is the next item's rings */
	}
	ATC_MARK(2);
	ATC_MARK(3);
	if (k == 0)
		return;

	/* The block's K best (the heaps are complete: the item loop ended at a
	 * barrier), to the launch's pending list.  Only thread 0 writes what the
	 * last block reads, so only it fences, and only when it wrote something
	 * (once the heap is full, usually nothing): a fence waits for the
	 * histogram's reductions too. */
	if (threadIdx.x == 0) {
		const long long t_end = ATC_CLOCK();
		ATC_COUNT(XC_ITEMS_CYCLES, t_end - t_items);
		for (int i = 1; i < nwarps; i++)
			for (uint32_t j = 0; j < h->heap_n[i]; j++)
				heap_offer(heaps, &h->heap_n[0], k, heaps[i * k + j]);
		uint32_t n = h->heap_n[0];
		if (n) {
			ATC_COUNT(XC_BLOCKS_WITH_BEST, 1);
			uint32_t first = atomicAdd(&p.counters[N_PENDING], n);
			for (uint32_t i = 0; i < n; i++)
				p.pending[first + i] = heaps[i];
			__threadfence();
		}
		h->is_last = atomicAdd(&p.counters[BLOCKS_DONE], 1u) == gridDim.x - 1;
		ATC_COUNT(XC_BLOCK_END_CYCLES, ATC_CLOCK() - t_end);
	}
	__syncthreads();
	ATC_MARK(3);
	if (!h->is_last)
		return;
	/* the heaps are in the pending list: all after the histogram is free */
	const size_t free_bytes = warp_areas_bytes(nwarps, k, VEC ? ring_bytes(esize) : 0);
	merge_launch_best(p, h, reinterpret_cast<dev_extreme *>(warp_areas),
	                  merge_chunk(free_bytes, k, (int)blockDim.x));
}

/* Sampled rows, in the tensor's own dtype, [n][channels] with channels
 * contiguous: one block per row.  The row indices travel in the launch's
 * parameters, so that the hooks need no pinned memory and no copy for them. */
constexpr int GATHER_ROWS = 256;
struct gather_list {
	int64_t row[GATHER_ROWS];
};

__global__ void gather_kernel(const void *data, int64_t rows, int64_t batch_stride,
                              int64_t row_stride, int64_t channel_stride, int64_t channels,
                              int esize, gather_list list, int n, unsigned char *dst)
{
	for (int i = (int)blockIdx.x; i < n; i += (int)gridDim.x) {
		int64_t g = list.row[i], b = g / rows, r = g - b * rows;
		int64_t offset = b * batch_stride + r * row_stride;
		unsigned char *out = dst + (size_t)i * (size_t)channels * (size_t)esize;
		for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
			int64_t at = offset + c * channel_stride;
			if (esize == 4)
				reinterpret_cast<float *>(out)[c] = static_cast<const float *>(data)[at];
			else
				reinterpret_cast<uint16_t *>(out)[c] = static_cast<const uint16_t *>(data)[at];
		}
	}
}

} // namespace atc_kernels


using namespace atc_kernels;

/* ---------------------------------------------------------------- host side */

typedef void (*fold_fn)(point_arrays, launch_job);

struct cuda_point {
	int64_t channels;
	int hist;
	int32_t k;
	int grid_cap;       /* most blocks a launch may have (pending is sized for it) */
#ifdef ATC_EXTREME_COUNTS
	size_t debug_pad; /* $ATC_DEBUG_PAD_SHARED bytes of shared memory more a launch */
#endif
	int multiprocessors;
	int resident_per_sm; /* blocks_per_multiprocessor(), 0 until asked */
	size_t max_shared;  /* dynamic shared memory a block may have */
	size_t sm_shared;   /* shared memory of a multiprocessor */
	void *arrays;       /* one allocation: see point_layout */
	size_t arrays_bytes, drained_bytes;
	point_arrays dev;
	int32_t scratch_splits;
	cudaStream_t last_stream;
	int64_t rows_pending;
	fold_fn shared_kernel; /* the kernel last allowed shared_allowed bytes */
	size_t shared_allowed;
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

#ifdef ATC_EXTREME_COUNTS
/* launches merged, pending extremes, blocks that sent any, rare-path steps,
 * and the cycles of each part (XC_*): totals since the library was loaded */
extern "C" int atc_debug_extreme_counts(unsigned long long *out)
{
	return cudaMemcpyFromSymbol(out, atc_kernels::extreme_counts, sizeof atc_kernels::extreme_counts) ==
	               cudaSuccess
	           ? 0
	           : -1;
}
#endif

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
	int sm_shared = 0;
	CUDA_TRY(cudaDeviceGetAttribute(&sm_shared, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
	         "query the device");
#else
	max_shared = 1 << 20;
	int sm_shared = 228 * 1024;
#endif
	cuda_point *p = static_cast<cuda_point *>(calloc(1, sizeof *p));
	if (!p)
		return at_fail(err, AT_ENOMEM, "CUDA: out of host memory");
	p->channels = channels;
	p->hist = hist != 0;
	p->k = max_extremes;
	p->multiprocessors = sms > 0 ? sms : 1;
	p->grid_cap = 8 * p->multiprocessors;
#ifdef ATC_EXTREME_COUNTS
	const char *pad = getenv("ATC_DEBUG_PAD_SHARED");
	p->debug_pad = pad ? (size_t)atol(pad) : 0;
#endif
	p->max_shared = (size_t)max_shared;
	p->sm_shared = (size_t)sm_shared;
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


template <int D, bool VEC> static fold_fn pick_kernel(int hist)
{
	if (hist == HIST_SHARED)
		return fold_kernel<D, VEC, HIST_SHARED>;
	return hist == HIST_DIRECT ? fold_kernel<D, VEC, HIST_DIRECT> : fold_kernel<D, VEC, HIST_NONE>;
}

template <int D> static fold_fn pick_kernel(bool vec, int hist)
{
	return vec ? pick_kernel<D, true>(hist) : pick_kernel<D, false>(hist);
}

static fold_fn pick_kernel(enum at_dtype dtype, bool vec, int hist)
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
	int nwarps, grid, hist;
	bool vec;
	size_t shared;
};

/* A launch reads rows g = 0 .. total_rows-1 at data + g * row_stride.  Batches
 * fold into rows when they follow each other (or hold one row each);
 * otherwise each batch is a launch of its own (batches() says how many). */
static bool batches_fold(const struct at_tensor *t)
{
	return t->batches == 1 || t->rows == 1 || t->batch_stride == t->rows * t->row_stride;
}

static launch_job job_of(const struct at_tensor *t, int64_t batch, int64_t token_base)
{
	launch_job job;
	memset(&job, 0, sizeof job);
	size_t esize = at_dtype_size(t->dtype);
	job.channel_stride = t->channel_stride;
	if (batches_fold(t)) {
		job.data = t->data;
		job.total_rows = t->batches * t->rows;
		job.row_stride = t->rows == 1 && t->batches > 1 ? t->batch_stride : t->row_stride;
		job.token_base = token_base;
	} else {
		job.data = static_cast<const unsigned char *>(t->data) + batch * t->batch_stride * esize;
		job.total_rows = t->rows;
		job.row_stride = t->row_stride;
		job.token_base = token_base + batch * t->rows;
	}
	return job;
}

/* The vector path copies rows into shared memory in 16-byte chunks and gives
 * each lane two adjacent channels: channels adjacent, pairs whole, every
 * row's start 16-byte aligned.  Other layouts load element by element. */
static bool vector_path(const launch_job &job, enum at_dtype dtype, int64_t channels)
{
	size_t esize = at_dtype_size(dtype);
	return job.channel_stride == 1 && channels % LANE_CHANNELS == 0 &&
	       (job.row_stride * (int64_t)esize) % 16 == 0 &&
	       reinterpret_cast<uintptr_t>(job.data) % 16 == 0;
}

/* Blocks of the fold kernel that fit on one multiprocessor at once, for a
 * typical large call (MAX_WARPS warps, histogram in shared memory); asked once. */
static int blocks_per_multiprocessor(cuda_point *p)
{
	if (p->resident_per_sm)
		return p->resident_per_sm;
	int blocks = 2; /* the emulation's guess: splits rows on its 3 "multiprocessors" */
#ifndef ATC_EMU
	int hist = p->hist ? HIST_SHARED : HIST_NONE;
	size_t bytes = shared_bytes(MAX_WARPS, p->k, hist == HIST_SHARED, ring_bytes(2), true);
	fold_fn kernel = pick_kernel(AT_BF16, true, hist);
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

#ifndef ATC_MIN_SPLIT_ROWS
#define ATC_MIN_SPLIT_ROWS 1024
#endif
constexpr int64_t MIN_SPLIT_ROWS = ATC_MIN_SPLIT_ROWS;
/* Waves of items a launch aims for: with more than one, the hardware hands
 * each block that finishes the next item, so blocks that end their rows
 * early (the timeline: equal shares end 26 to 49 us apart) take more.  Each
 * item is still folded the same way whoever takes it: deterministic. */
#ifndef ATC_WAVES
#define ATC_WAVES 1
#endif
constexpr int64_t WAVES = ATC_WAVES;

/* Splits of the rows so that tiles x splits fill the resident blocks once
 * (a second, partial wave would leave most of the device idle), none thinner
 * than MIN_SPLIT_ROWS rows (an item's epilogue is a fixed cost: 1024 took
 * 16384 x 512 bf16 from 48 to 35 us on the H200, 2048 was slower) and none
 * thicker than a 16-bit counter counts; few rows take
 * one-warp blocks and count their histogram straight into device memory.
 * Blocks shrink (fewer warps, then no shared histogram) where the device has
 * less shared memory than they want. */
/* Blocks of `bytes` dynamic shared memory a multiprocessor holds (the
 * driver reserves 1 KiB a block). */
static size_t blocks_fitting(const cuda_point *p, size_t bytes)
{
	return p->sm_shared / (bytes + 1024);
}

static launch_shape plan(cuda_point *p, launch_job &job, enum at_dtype dtype)
{
	launch_shape s;
	int64_t tiles = (p->channels + TILE - 1) / TILE, rows = job.total_rows;
	s.vec = vector_path(job, dtype, p->channels);
	int64_t splits = 1;
	if (rows <= 32) {
		s.nwarps = 1;
	} else {
		s.nwarps = rows >= MAX_WARPS * 16 ? MAX_WARPS : (int)((rows + 15) / 16);
		int64_t resident = (int64_t)blocks_per_multiprocessor(p) * p->multiprocessors;
		int64_t want = WAVES * resident / tiles > 1 ? WAVES * resident / tiles : 1;
		int64_t most = rows / MIN_SPLIT_ROWS > 1 ? rows / MIN_SPLIT_ROWS : 1;
		splits = want < most ? want : most;
	}
	int64_t fewest = (rows + MAX_ITEM_ROWS - 1) / MAX_ITEM_ROWS;
	if (splits < fewest)
		splits = fewest;
	job.split_rows = (rows + splits - 1) / splits;
	splits = (rows + job.split_rows - 1) / job.split_rows;
	job.splits = (int32_t)splits;
	s.hist = !p->hist ? HIST_NONE : job.split_rows < 256 ? HIST_DIRECT : HIST_SHARED;
	size_t ring = s.vec ? ring_bytes((int)at_dtype_size(dtype)) : 0;
	while ((s.shared = shared_bytes(s.nwarps, p->k, s.hist == HIST_SHARED, ring, false)) >
	       p->max_shared) {
		if (s.nwarps > 1)
			s.nwarps /= 2;
		else if (s.hist == HIST_SHARED)
			s.hist = HIST_DIRECT;
		else
			break; /* the launch will say it does not fit */
	}
	/* the early read of the accumulators, where it costs no resident block
	 * (f32's rings leave no room for it on an H200) */
	size_t with = shared_bytes(s.nwarps, p->k, s.hist == HIST_SHARED, ring, true);
	job.prefetch = with <= p->max_shared && blocks_fitting(p, with) >= blocks_fitting(p, s.shared);
	if (job.prefetch)
		s.shared = with;
	int64_t items = tiles * splits;
	job.items = (int32_t)items;
	s.grid = (int)(items < p->grid_cap ? items : p->grid_cap);
#ifdef ATC_EXTREME_COUNTS
	if (s.shared + p->debug_pad <= p->max_shared)
		s.shared += p->debug_pad;
#endif
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

/* Kernels that need more than 48 KiB of shared memory must say so (a driver
 * call: once per point and kernel, not per launch). */
static int allow_shared(cuda_point *p, fold_fn kernel, size_t bytes, struct at_error *err)
{
	if (bytes <= 48 * 1024 || (kernel == p->shared_kernel && bytes <= p->shared_allowed))
		return AT_OK;
#ifndef ATC_EMU
	CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
	         "raise the kernel's shared memory");
#endif
	p->shared_kernel = kernel;
	p->shared_allowed = bytes;
	return AT_OK;
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

/* CUDA graphs: a kernel captured into a graph would fold the same tokens at
 * every replay, with the token coordinates of the capture; refuse instead. */
static int check_not_capturing(cudaStream_t st, struct at_error *err)
{
#ifndef ATC_EMU
	cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
	CUDA_TRY(cudaStreamIsCapturing(st, &capture), "query the stream's capture status");
	if (capture != cudaStreamCaptureStatusNone)
		return at_fail(err, AT_EINVAL,
		               "CUDA: the stream is being captured into a CUDA graph: acttrace records "
		               "each forward as it runs and cannot record graph replays (capture "
		               "without CUDA graphs, e.g. torch.compile mode other than "
		               "\"reduce-overhead\")");
#else
	(void)st;
	(void)err;
#endif
	return AT_OK;
}

static int launch_fold(cuda_point *p, launch_job &job, enum at_dtype dtype, cudaStream_t st,
                       struct at_error *err)
{
	launch_shape s = plan(p, job, dtype);
	int status = ensure_scratch(p, job.splits, err);
	if (status != AT_OK)
		return status;
	fold_fn kernel = pick_kernel(dtype, s.vec, s.hist);
	status = allow_shared(p, kernel, s.shared, err);
	if (status != AT_OK)
		return status;
	ATC_LAUNCH(kernel, dim3((unsigned)s.grid), dim3((unsigned)(s.nwarps * WARP)), s.shared, st,
	           p->dev, job);
	CUDA_TRY(cudaGetLastError(), "launch the statistics kernel");
	return AT_OK;
}

int atc_point_observe(cuda_point *p, const struct at_tensor *t, int64_t token_base, void *stream,
                      struct at_error *err)
{
	if (t->batches * t->rows == 0)
		return AT_OK;
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	int status = check_not_capturing(st, err);
	if (status == AT_OK)
		status = check_device_pointer(t->data, err);
	int64_t launches = batches_fold(t) ? 1 : t->batches;
	for (int64_t b = 0; status == AT_OK && b < launches; b++) {
		launch_job job = job_of(t, b, token_base);
		status = launch_fold(p, job, t->dtype, st, err);
	}
	if (status != AT_OK)
		return status;
	p->last_stream = st;
	p->rows_pending += t->batches * t->rows;
	return AT_OK;
}

/* ---- another point's accumulators */

int atc_point_copy(cuda_point *dst, const cuda_point *src, void *stream, struct at_error *err)
{
	if (dst->channels != src->channels || dst->hist != src->hist || dst->k != src->k ||
	    dst->drained_bytes != src->drained_bytes)
		return at_fail(err, AT_EINVAL,
		               "CUDA: copy statistics: %lld channels (histogram %d, %d extremes) into "
		               "%lld (%d, %d)",
		               (long long)src->channels, src->hist, (int)src->k, (long long)dst->channels,
		               dst->hist, (int)dst->k);
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	int status = check_not_capturing(st, err);
	if (status != AT_OK)
		return status;
	/* Everything a drain reads, the extremes' floor and counters included; the
	 * launch's scratch beyond it is empty between launches. */
	CUDA_TRY(cudaMemcpyAsync(dst->arrays, src->arrays, src->drained_bytes,
	                         cudaMemcpyDeviceToDevice, st),
	         "copy statistics between points");
	dst->last_stream = st;
	dst->rows_pending = src->rows_pending;
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

int atc_gather_rows(const struct at_tensor *t, const int64_t *rows, int64_t n, void *dst,
                    void *stream, struct at_error *err)
{
	const int esize = (int)at_dtype_size(t->dtype);
	const size_t row_bytes = (size_t)t->channels * (size_t)esize;
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	for (int64_t first = 0; first < n; first += GATHER_ROWS) {
		const int m = (int)(n - first < GATHER_ROWS ? n - first : GATHER_ROWS);
		gather_list list;
		memcpy(list.row, rows + first, (size_t)m * sizeof *rows);
		unsigned char *out = static_cast<unsigned char *>(dst) + (size_t)first * row_bytes;
		ATC_LAUNCH(gather_kernel, dim3((unsigned)m), dim3(256), 0, st, t->data, t->rows,
		           t->batch_stride, t->row_stride, t->channel_stride, t->channels, esize, list, m,
		           out);
		CUDA_TRY(cudaGetLastError(), "launch the sampling kernel");
	}
	return AT_OK;
}

int atc_pool_create(void **pool, int device, struct at_error *err)
{
	cudaMemPoolProps props;
	memset(&props, 0, sizeof props);
	props.allocType = cudaMemAllocationTypePinned;
	props.location.type = cudaMemLocationTypeDevice;
	props.location.id = device;
	cudaMemPool_t p;
	*pool = nullptr;
	CUDA_TRY(cudaMemPoolCreate(&p, &props), "create a memory pool for samples");
	uint64_t keep = UINT64_MAX; /* what is freed stays for the next rows */
	cudaError_t e = cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep);
	if (e != cudaSuccess) {
		cudaMemPoolDestroy(p);
		return cuda_fail(err, e, "configure the samples' memory pool");
	}
	*pool = p;
	return AT_OK;
}

void atc_pool_destroy(void *pool)
{
	if (pool)
		cudaMemPoolDestroy(static_cast<cudaMemPool_t>(pool));
}

int atc_pool_alloc(void *pool, void **p, size_t bytes, void *stream, struct at_error *err)
{
	*p = nullptr;
	CUDA_TRY(cudaMallocFromPoolAsync(p, bytes, static_cast<cudaMemPool_t>(pool),
	                                 static_cast<cudaStream_t>(stream)),
	         "allocate device memory for samples");
	return AT_OK;
}

void atc_free_async(void *p, void *stream)
{
	if (p)
		cudaFreeAsync(p, static_cast<cudaStream_t>(stream));
}

int atc_stream_create(void **stream, struct at_error *err)
{
	cudaStream_t s;
	*stream = nullptr;
	CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "create a stream");
	*stream = s;
	return AT_OK;
}

void atc_stream_destroy(void *stream)
{
	if (stream)
		cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

void atc_stream_sync(void *stream)
{
	cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
}

int atc_event_record(void **event, void *stream, struct at_error *err)
{
	cudaEvent_t e;
	*event = nullptr;
	CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "create an event");
	cudaError_t status = cudaEventRecord(e, static_cast<cudaStream_t>(stream));
	if (status != cudaSuccess) {
		cudaEventDestroy(e);
		return cuda_fail(err, status, "record an event");
	}
	*event = e;
	return AT_OK;
}

int atc_copy_to_host_wait(void *dst_host, const void *src_device, size_t bytes, void *stream,
                          void *after, struct at_error *err)
{
	cudaStream_t st = static_cast<cudaStream_t>(stream);
	CUDA_TRY(cudaStreamWaitEvent(st, static_cast<cudaEvent_t>(after), 0), "order the sample copy");
	CUDA_TRY(cudaMemcpyAsync(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, st),
	         "copy samples to the host");
	CUDA_TRY(cudaStreamSynchronize(st), "wait for the sample copy");
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

int atc_copy_to_device(void *dst_device, const void *src_host, size_t bytes, void *stream,
                       struct at_error *err)
{
	CUDA_TRY(cudaMemcpyAsync(dst_device, src_host, bytes, cudaMemcpyHostToDevice,
	                         static_cast<cudaStream_t>(stream)),
	         "copy sample rows to the device");
	return AT_OK;
}

int atc_current_device(int *device, struct at_error *err)
{
	CUDA_TRY(cudaGetDevice(device), "find the current device");
	return AT_OK;
}

int atc_set_device(int device, struct at_error *err)
{
	CUDA_TRY(cudaSetDevice(device), "select the device");
	return AT_OK;
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

#ifdef ATC_TIMELINE
extern "C" int atc_timeline_read(unsigned long long *out, unsigned long long *warps, int blocks)
{
	size_t n = (size_t)(blocks < TIMELINE_BLOCKS ? blocks : TIMELINE_BLOCKS);
	if (cudaMemcpyFromSymbol(out, timeline, n * 8 * sizeof *out) != cudaSuccess)
		return -1;
	return cudaMemcpyFromSymbol(warps, timeline_warps, n * TIMELINE_WARPS * sizeof *warps) ==
	               cudaSuccess
	           ? 0
	           : -1;
}
#endif
