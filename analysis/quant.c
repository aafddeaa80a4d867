/* quant.c: the error of symmetric absmax quantization of activations, from a
 * trace alone (Mamba-PTQ, paper 004: per-tensor absmax W8/W4/W8A8, and the
 * outlier channels that make the per-tensor step coarse for every other
 * channel).  Q_b(x) = step * round(x / step), step = absmax / (2^(b-1) - 1),
 * absmax over the tensor (per tensor) or over the channel (per channel); no
 * value is clamped, since absmax sets the step. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"

double an_quant_step(double absmax, int bits)
{
	return absmax / (double)((1 << (bits - 1)) - 1);
}

void an_quant_samples(const float *rows, int64_t n, int64_t channels, int64_t channel,
                      double step, struct an_quant_error *out)
{
	for (int64_t i = 0; i < n; i++) {
		double x = rows[i * channels + channel];
		if (!isfinite(x))
			continue;
		/* round half to even, as torch.round and numpy.round do */
		double q = step > 0 ? nearbyint(x / step) * step : 0.0;
		out->values++;
		out->signal += x * x;
		out->error += (x - q) * (x - q);
	}
}

/* An estimate from the |x| histogram: a bin's values taken at its geometric
 * middle (bin 1, below 2^AT_HIST_MIN_EXP, at half its upper edge; the last
 * bin at its lower edge); a value that rounds to 0 errs by itself, any other
 * by the uniform rounding error step^2 / 12.  That holds when a channel's
 * values spread over several steps; a channel narrower than a step (an
 * outlier channel with a large mean under its own scale) has errors far from
 * uniform, which bins 19%% of |x| wide cannot resolve: trace-quant(1) states
 * what this costs.  The signal is exact, from the moments. */
/* The value a bin stands for (computed once: the estimate runs over every
 * bin of every channel, once per scale). */
static double bin_value[AT_HIST_BINS];
static pthread_once_t bin_value_once = PTHREAD_ONCE_INIT;

static void bin_value_init(void)
{
	for (int b = 1; b < AT_HIST_BINS; b++) {
		double lo = at_hist_lower_edge(b), hi = at_hist_lower_edge(b + 1);
		bin_value[b] = b == 1 ? 0.5 * hi : isinf(hi) ? lo : sqrt(lo * hi);
	}
}

void an_quant_hist(const struct at_stats *s, int64_t channel, double step,
                   struct an_quant_error *out)
{
	an_quant_hist_steps(s, channel, &step, 1, out);
}

/* The first bin whose value reaches half a step (bin_value rises), or
 * AT_HIST_BINS when no bin rounds to 0 (step 0); without branches on the
 * comparisons, which a channel's steps make unpredictable. */
static int first_rounded_bin(double step)
{
	if (!(step > 0))
		return AT_HIST_BINS;
	double half = 0.5 * step;
	int lo = 1, n = AT_HIST_BINS - 1; /* the answer is in [lo, lo + n] */
	while (n > 0) {
		int mid = lo + n / 2;
		int below = bin_value[mid] < half;
		lo = below ? mid + 1 : lo;
		n = below ? n - n / 2 - 1 : n / 2;
	}
	return lo;
}

/* Steps a pass handles: the per-tensor and per-channel scales of 8 bit widths. */
#define STEPS_A_PASS 16

static void hist_steps_pass(const uint32_t *h, const double *steps, int nsteps,
                            double values_below[], double square_below[])
{
	/* Only the prefix sums at the steps' first rounded bins are needed: one
	 * pass to the last of them, adding in the same order as a prefix array
	 * (so the sums are bit for bit the same), from the first nonempty bin
	 * (before it the sums are exact zeros). */
	int first[STEPS_A_PASS], last_cut = 1;
	for (int k = 0; k < nsteps; k++) {
		first[k] = first_rounded_bin(steps[k]);
		last_cut = first[k] > last_cut ? first[k] : last_cut;
	}
	int start = 1;
	while (start + 4 <= last_cut && (h[start] | h[start + 1] | h[start + 2] | h[start + 3]) == 0)
		start += 4;
	while (start < last_cut && h[start] == 0)
		start++;
	uint64_t values = 0, total = 0;
	double square = 0;
	/* [b]: the sums over the bins before b, for b from start + 1 to last_cut
	 * (up to start, 0) */
	double square_at[AT_HIST_BINS + 1];
	uint64_t values_at[AT_HIST_BINS + 1];
	for (int b = start; b < last_cut; b++) {
		values += h[b];
		square += h[b] * bin_value[b] * bin_value[b];
		values_at[b + 1] = values;
		square_at[b + 1] = square;
	}
	/* four sums (integers: in any order the same), for the vector unit */
	uint64_t part[4] = {0, 0, 0, 0};
	int b4 = 1;
	for (; b4 + 4 <= AT_HIST_BINS; b4 += 4)
		for (int j = 0; j < 4; j++)
			part[j] += h[b4 + j];
	for (; b4 < AT_HIST_BINS; b4++)
		part[0] += h[b4];
	total = part[0] + part[1] + part[2] + part[3];
	for (int k = 0; k < nsteps; k++) {
		int past = first[k] > start;
		values_below[k] = (double)(total - (past ? values_at[first[k]] : 0));
		square_below[k] = past ? square_at[first[k]] : 0.0;
	}
}

void an_quant_hist_steps(const struct at_stats *s, int64_t channel, const double *steps,
                         int nsteps, struct an_quant_error *outs)
{
	pthread_once(&bin_value_once, bin_value_init);
	const uint32_t *h = s->hist + channel * AT_HIST_BINS;
	double n = (double)s->count[channel];
	double signal = s->m2[channel] + n * s->mean[channel] * s->mean[channel];
	for (int k0 = 0; k0 < nsteps; k0 += STEPS_A_PASS) {
		int m = nsteps - k0 < STEPS_A_PASS ? nsteps - k0 : STEPS_A_PASS;
		/* rounded[k]: values in the bins from step k's first rounded bin on;
		 * square[k]: x^2 of the bins before it (bin 0, exact zeros, errs by
		 * nothing), each at its bin's value */
		double rounded[STEPS_A_PASS], square[STEPS_A_PASS];
		hist_steps_pass(h, steps + k0, m, rounded, square);
		for (int k = 0; k < m; k++) {
			double step = steps[k0 + k];
			struct an_quant_error *out = &outs[k0 + k];
			out->values += s->count[channel];
			out->signal += signal;
			out->error += square[k] + rounded[k] * step * step / 12.0;
		}
	}
}

double an_quant_sqnr_db(const struct an_quant_error *e)
{
	return 10.0 * log10(e->signal / e->error);
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* -1 on an empty matrix or out of memory. */
/* Expected squared error of one row: the uniform model, capped (see
 * analysis.h). */
static double row_error(double step, double sumsq, int64_t cols)
{
	double model = (double)cols * step * step / 12.0;
	return model < sumsq ? model : sumsq;
}

static double sqnr_db(double signal, double error)
{
	if (!(signal > 0))
		return NAN;
	return error > 0 ? 10.0 * log10(signal / error) : INFINITY;
}

void an_weight_sqnr(const double *row_absmax, const double *row_sumsq, int64_t rows,
                    int64_t cols, int bits, struct an_weight_sqnr *out)
{
	double absmax = 0, signal = 0, row_err = 0, tensor_err = 0;
	for (int64_t i = 0; i < rows; i++)
		absmax = row_absmax[i] > absmax ? row_absmax[i] : absmax;
	double tensor_step = an_quant_step(absmax, bits);
	for (int64_t i = 0; i < rows; i++) {
		signal += row_sumsq[i];
		row_err += row_error(an_quant_step(row_absmax[i], bits), row_sumsq[i], cols);
		tensor_err += row_error(tensor_step, row_sumsq[i], cols);
	}
	out->tensor_db = sqnr_db(signal, tensor_err);
	out->row_db = sqnr_db(signal, row_err);
}

int an_weight_steps(const double *row_absmax, int64_t rows, int bits,
                    struct an_weight_steps *out)
{
	if (rows <= 0)
		return -1;
	double *sorted = malloc((size_t)rows * sizeof *sorted);
	if (!sorted)
		return -1;
	memcpy(sorted, row_absmax, (size_t)rows * sizeof *sorted);
	qsort(sorted, (size_t)rows, sizeof *sorted, compare_doubles);
	double median = rows % 2 ? sorted[rows / 2] : 0.5 * (sorted[rows / 2 - 1] + sorted[rows / 2]);
	out->tensor = an_quant_step(sorted[rows - 1], bits);
	out->row_min = an_quant_step(sorted[0], bits);
	out->row_max = out->tensor;
	out->row_median = an_quant_step(median, bits);
	out->bits_lost = out->row_median > 0 ? log2(out->tensor / out->row_median) : NAN;
	free(sorted);
	return 0;
}
