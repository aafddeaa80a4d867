/* acttrace.h: the public interface of libacttrace, which captures per-channel
 * activation statistics into HDF5 trace files and reads them back.
 *
 * Conventions: every function that can fail returns an int status (AT_OK or a
 * negative AT_E* code) and, when given a non-NULL struct at_error, fills it
 * with a one-line message naming the file or argument at fault.  The library
 * never prints and never exits.  Types ending in _desc are filled by the
 * caller; opaque handles are created and destroyed by the library.
 * The trace layout itself is specified in acttrace-format(5). */
#ifndef ACTTRACE_H
#define ACTTRACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AT_FORMAT_NAME "acttrace"
#define AT_FORMAT_VERSION 3
/* The oldest version this library still reads. */
#define AT_FORMAT_VERSION_MIN 1

/* ---------------------------------------------------------------- errors */

enum at_status {
	AT_OK = 0,
	AT_EINVAL = -1,    /* bad argument from the caller */
	AT_ENOMEM = -2,    /* allocation failed */
	AT_EIO = -3,       /* the file system or HDF5 failed */
	AT_EFORMAT = -4,   /* not a trace, unsupported version, malformed content */
	AT_ENOTFOUND = -5, /* no such point, dataset or weight */
	AT_ERANGE = -6,    /* a count would overflow its storage */
	AT_ECODEC = -7,    /* zstd failed to compress or decompress */
	AT_ENOSYS = -8,    /* feature not built into this library */
	AT_ECANCELED = -9  /* the caller's callback asked to stop */
};

struct at_error {
	int code;
	char message[512];
};

/* "AT_EFORMAT" etc.; never NULL. */
const char *at_status_name(int code);
/* Package version, e.g. "0.1.0". */
const char *at_version(void);
/* For programs that exit as soon as their work is done (acttrace's tools):
 * HDF5 is told not to close files from its exit handler (H5dont_atexit),
 * because a file whose close failed (a full disk) makes that handler loop
 * and crash (HDF5 1.10.8).  Call it before any other acttrace or HDF5 call;
 * the program must then close or abandon every writer and reader itself.
 * Not for a process that shares HDF5 with others (Python with h5py). */
void at_tool_init(void);

/* ---------------------------------------------------------------- tensors */

enum at_dtype { AT_F32 = 0, AT_F16 = 1, AT_BF16 = 2 };

/* A strided view of activations.  Element (b, r, c) lives at
 *   data + (b * batch_stride + r * row_stride + c * channel_stride) elements.
 * Rows are tokens: row (b, r) is token  token_base + b * rows + r.
 *   [tokens, C]  : batches=1, rows=N, row_stride=C, channel_stride=1
 *   [B, T, C]    : batches=B, rows=T, batch_stride=T*C, row_stride=C, channel_stride=1
 *   [B, C, T]    : batches=B, rows=T, batch_stride=C*T, row_stride=1, channel_stride=T */
struct at_tensor {
	const void *data;
	enum at_dtype dtype;
	int64_t batches;
	int64_t rows;
	int64_t channels;
	int64_t batch_stride;
	int64_t row_stride;
	int64_t channel_stride;
};

/* ---------------------------------------------------------------- histogram */

/* |x| histogram on fixed log-spaced bins, AT_HIST_BINS_PER_OCTAVE per power of
 * two (relative width 2^(1/4)) from 2^AT_HIST_MIN_EXP to 2^AT_HIST_MAX_EXP:
 *   bin 0                      |x| == 0
 *   bin 1                      0 < |x| < 2^MIN_EXP            (underflow)
 *   bin 2+i, i < LOG_BINS      2^(MIN_EXP + i/4) <= |x| < 2^(MIN_EXP + (i+1)/4)
 *   bin AT_HIST_BINS-1         |x| >= 2^MAX_EXP                (overflow)
 * Non-finite values are never binned (they are counted in `nonfinite`). */
#define AT_HIST_BINS_PER_OCTAVE 4
#define AT_HIST_MIN_EXP (-24)
#define AT_HIST_MAX_EXP 24
#define AT_HIST_LOG_BINS ((AT_HIST_MAX_EXP - AT_HIST_MIN_EXP) * AT_HIST_BINS_PER_OCTAVE)
#define AT_HIST_BINS (AT_HIST_LOG_BINS + 3)

/* Bin of a finite |x| (absx >= 0). */
int at_hist_bin(double absx);
/* Inclusive lower edge of a bin: 0 for bin 0, the smallest positive double
 * for bin 1, 2^(MIN_EXP + (bin-2)/4) above.  Edge of AT_HIST_BINS is +inf. */
double at_hist_lower_edge(int bin);

/* ---------------------------------------------------------------- statistics */

/* One of the K largest |x| seen at a point. */
struct at_extreme {
	double value;    /* signed value */
	int64_t token;   /* row of /tokens (token_base + b*rows + r) */
	int32_t channel;
};

/* Per-channel accumulators of one recording point, structure of arrays, all
 * of length `channels`.  The moments are central moments of the finite values
 * (Welford 1962; Chan et al. 1979; Pebay 2008): m2 = sum (x-mean)^2, etc.
 * min/max/absmax are NaN and mean 0 for a channel that saw no finite value. */
struct at_stats {
	int64_t channels;
	uint64_t *count;     /* finite values */
	uint64_t *nonfinite; /* NaN and +-Inf, never in the moments */
	double *mean, *m2, *m3, *m4;
	double *min, *max, *absmax, *abssum;
	uint32_t *hist;      /* [channels][AT_HIST_BINS], or NULL when not kept */
	struct at_extreme *extremes; /* sorted by |value| descending */
	int32_t n_extremes;
	int32_t max_extremes;
};

/* Empty accumulators for `channels` channels; with_hist keeps histograms,
 * max_extremes >= 0 is K.  On failure *s is left empty and safe to free. */
int at_stats_init(struct at_stats *s, int64_t channels, int with_hist,
                  int32_t max_extremes, struct at_error *err);
void at_stats_free(struct at_stats *s);
void at_stats_reset(struct at_stats *s);

/* Fold a tensor into the accumulators (OpenMP over channel blocks).  Exact
 * combination: the result does not depend on how the data was split.
 * AT_ERANGE when a histogram bin could exceed 2^32-1. */
int at_stats_add(struct at_stats *s, const struct at_tensor *t, int64_t token_base,
                 struct at_error *err);
/* dst += src, exactly (moments by Pebay's pairwise formulas, histograms
 * added, extremes re-ranked).  Channel counts and hist presence must match. */
int at_stats_merge(struct at_stats *dst, const struct at_stats *src, struct at_error *err);

/* Moments of one channel, or of all channels pooled into one distribution. */
struct at_moments {
	uint64_t count, nonfinite;
	double mean, m2, m3, m4;
	double min, max, absmax, abssum;
};
void at_stats_channel(const struct at_stats *s, int64_t channel, struct at_moments *out);
void at_stats_pool(const struct at_stats *s, struct at_moments *out);
/* Fold b into a (Chan / Pebay pairwise combination). */
void at_moments_merge(struct at_moments *a, const struct at_moments *b);

double at_moments_variance(const struct at_moments *m); /* m2/(n-1); NaN if n < 2 */
double at_moments_std(const struct at_moments *m);
double at_moments_skewness(const struct at_moments *m); /* sqrt(n) m3 / m2^1.5 */
double at_moments_kurtosis(const struct at_moments *m); /* excess: n m4 / m2^2 - 3 */
double at_moments_absmean(const struct at_moments *m);  /* abssum / n */

/* Values counted in bins whose lower edge is >= the edge of at_hist_bin(t):
 * |x| >= t up to one bin of resolution.  0 when no histogram is kept. */
uint64_t at_stats_count_at_least(const struct at_stats *s, int64_t channel, double t);

/* ---------------------------------------------------------------- writer */

enum at_sample_policy {
	AT_SAMPLE_NONE = 0,
	AT_SAMPLE_EVERY = 1, /* tokens whose index is a multiple of sample_n */
	AT_SAMPLE_FIRST = 2, /* tokens with pos < sample_n in their sequence */
	/* a uniform sample of sample_n of the rows each point saw (bottom-k by
	 * a hash of the token index under sample_seed), held in memory (sample_n
	 * rows a point) and written at checkpoints; max_samples does not apply */
	AT_SAMPLE_RESERVOIR = 3
};

struct at_writer_options {
	const char *model;        /* free text for the file attribute, may be NULL */
	const char *source_dtype; /* dtype the model ran in, e.g. "bfloat16" */
	const char *notes;
	const char *producer;     /* NULL: "acttrace <version>" */
	int hist;                 /* keep |x| histograms (default 1) */
	int32_t extremes;         /* top-K |x| per point (default 64) */
	enum at_sample_policy sample_policy; /* default AT_SAMPLE_NONE */
	int64_t sample_n;
	int64_t max_samples;      /* per point; later rows are counted as dropped (default 1<<20) */
	int compression_level;    /* zstd level (default 3) */
	int threads;              /* 0: OpenMP's default */
	/* Full sample chunks wait for the writer's background thread up to
	 * sample_bytes_in_flight bytes (0: 512 MiB); past it, sampling waits
	 * (AT_WHEN_BUSY_WAIT, the default: nothing is lost) or drops the chunk
	 * (AT_WHEN_BUSY_DROP: counted in the point's samples_dropped and
	 * samples_dropped_busy).  Rows sampled on a GPU wait in device memory
	 * for the library's sample thread, up to as many bytes again (at least
	 * 1 GiB); past it, the observing call waits.  Room for a capture's
	 * samples keeps the hooks from waiting on the writer at all. */
	int64_t sample_bytes_in_flight;
	enum at_when_busy { AT_WHEN_BUSY_WAIT = 0, AT_WHEN_BUSY_DROP = 1 } when_busy;
	/* Which process of a distributed run wrote the file (default 0 of 1). */
	int32_t rank;
	int32_t world_size;
	uint64_t sample_seed;     /* AT_SAMPLE_RESERVOIR's seed (default 0) */
};
void at_writer_options_init(struct at_writer_options *o);

/* A recording point.  Strings are copied. */
struct at_point_desc {
	const char *name;         /* stable dotted name, unique, e.g. "layers.3.mlp.up_proj.out" */
	int32_t layer;            /* -1 when the point belongs to no layer */
	const char *component;    /* mlp|attention|recurrent|ssm|norm|layer|embedding|head|other */
	const char *site;         /* the point's type within a layer, e.g. "mlp.up_proj.out" */
	const char *module;       /* module path in the model, may be "" */
	const char *module_class; /* may be "" */
	const char *direction;    /* "in" or "out" */
	int64_t channels;
	/* Tensor parallelism (acttrace-format(5), CHANNEL SLICES): the point
	 * holds tensor channels [channel_offset, channel_offset + channels) of
	 * a tensor full_channels wide (0: channels, a whole tensor); replicated
	 * marks a tensor that is whole on every rank, recorded by rank 0. */
	int64_t channel_offset;
	int64_t full_channels;
	int replicated;
};

struct at_writer;

/* Create a trace at path (truncating).  complete=0 until at_writer_close. */
int at_writer_create(struct at_writer **out, const char *path,
                     const struct at_writer_options *opts, struct at_error *err);
int at_writer_add_point(struct at_writer *w, const struct at_point_desc *p,
                        int32_t *point_id, struct at_error *err);
/* Append n tokens to /tokens; *token_base receives the index of the first. */
int at_writer_add_tokens(struct at_writer *w, const int32_t *seq, const int32_t *pos,
                         const int32_t *id, int64_t n, int64_t *token_base,
                         struct at_error *err);
/* Fold host activations into a point and sample rows by the policy. */
int at_writer_observe(struct at_writer *w, int32_t point, const struct at_tensor *t,
                      int64_t token_base, struct at_error *err);
/* Device path: the same for a tensor in CUDA device memory (t->data is a
 * device pointer), reduced by one fused kernel queued on cuda_stream (a
 * cudaStream_t; NULL is the legacy default stream).  Returns once the work is
 * queued, without waiting for the GPU: t->data must stay valid until the
 * stream has run it, and one point's calls must be ordered (one stream, or
 * synchronized).  The point's accumulators live on the device and reach the
 * host at checkpoints and close (the only waits), where they combine exactly
 * with the host path's.  Sampled rows are gathered on the device and copied
 * to the host asynchronously.  At most 256 extremes per point.
 * AT_ENOSYS ("built without CUDA") when libacttrace has no CUDA support or
 * no usable device. */
int at_writer_observe_device(struct at_writer *w, int32_t point, const struct at_tensor *t,
                             int64_t token_base, void *cuda_stream, struct at_error *err);
/* A point that sees the very tensor another point (source_point) observed
 * last, in the same forward: q_proj's, k_proj's and v_proj's inputs are the
 * output of the norm before them.  The call means "observe t at point", and
 * the result is always what that would give; on the device path it takes
 * the source's result instead of reading t again when the library can prove
 * that result is point's too: the source's last call (observe or
 * observe_same) was for the same t (data, dtype, sizes, strides), token_base
 * and stream, and point's device accumulators hold what the source's held
 * before that call (they have seen the same observations since the last
 * checkpoint, as when the pair has always been observed this way).  Then the
 * source's accumulators are copied into point's on the stream (about 2 MB
 * for 2048 channels with histograms: no pass over t), and the statistics
 * written are bit for bit those of a full observation.  Otherwise it is a
 * full observation.  Either way sampling takes point's own rows of t.
 * The library cannot see t's contents: the caller promises they have not
 * changed since the source observed them (no in-place change in between,
 * the memory not freed and reused), which the Python binding checks with
 * the tensor's identity and version.  The host path (at_writer_observe_same)
 * reads t again; both check source_point. */
int at_writer_observe_same(struct at_writer *w, int32_t point, int32_t source_point,
                           const struct at_tensor *t, int64_t token_base, struct at_error *err);
int at_writer_observe_device_same(struct at_writer *w, int32_t point, int32_t source_point,
                                  const struct at_tensor *t, int64_t token_base,
                                  void *cuda_stream, struct at_error *err);
/* 1 when libacttrace was built with CUDA and a CUDA device can be used. */
int at_cuda_available(void);
/* Weight statistics of a module: for a matrix [rows=out, channels=in], row
 * and column absmax and mean |w|; a vector (rows == 1, e.g. a norm's gamma)
 * is also stored whole. */
int at_writer_add_weight(struct at_writer *w, const char *module, const char *module_class,
                         const struct at_tensor *weight, struct at_error *err);
/* The same for a weight summarised elsewhere (on the GPU, so that its
 * elements never cross to the host): absmax and mean |w| of each of the
 * rows rows and cols columns, for a vector (rows == 1) its values, and the
 * sum of w^2 over each row where known (quantization error; NULL: not
 * recorded). */
struct at_weight_summary {
	int64_t rows, cols;
	const double *row_absmax, *row_absmean; /* [rows] */
	const double *col_absmax, *col_absmean; /* [cols] */
	const float *values;                     /* [cols] when rows == 1, else NULL */
	const double *row_sumsq;                 /* [rows], or NULL */
};
int at_writer_add_weight_summary(struct at_writer *w, const char *module,
                                 const char *module_class, const struct at_weight_summary *s,
                                 struct at_error *err);
/* Write everything observed so far and flush the file: after a crash, a
 * reader sees the trace as of the last checkpoint (complete=0). */
int at_writer_checkpoint(struct at_writer *w, struct at_error *err);
/* Checkpoint, mark complete=1 and close.  Frees w, also on failure. */
int at_writer_close(struct at_writer *w, struct at_error *err);
/* Close without marking the trace complete (after an error upstream). */
void at_writer_abandon(struct at_writer *w);

/* ---------------------------------------------------------------- reader */

struct at_trace_info {
	char format[32];
	int format_version;
	char producer[128];
	char created[64];
	char model[256];
	char source_dtype[32];
	char notes[1024];
	int complete;
	int64_t tokens; /* rows of /tokens */
	int32_t points;
	int32_t weights;
	int32_t rank, world_size; /* 0 and 1 before format version 2 */
};

/* What a reader knows of a point without loading its statistics. */
struct at_point_info {
	char name[256];
	int32_t layer;
	char component[32];
	char site[128];
	char module[256];
	char module_class[128];
	char direction[8];
	int64_t channels;
	int has_hist;
	int32_t n_extremes;
	int64_t samples;         /* rows in `samples` */
	int64_t samples_dropped; /* rows the policy chose but max_samples refused */
	int64_t sample_chunk_rows;
	enum at_dtype sample_dtype; /* as stored; at_reader_read_samples widens to float32 */
	int64_t channel_offset;     /* tensor channel of channel 0 (0 before version 2) */
	int64_t full_channels;      /* the tensor's width (channels before version 2) */
	int replicated;             /* whole on every rank, recorded by rank 0 alone */
};

struct at_reader;

/* Open and validate: format name and version first, then every point's
 * attributes.  Errors name the file. */
int at_reader_open(struct at_reader **out, const char *path, struct at_error *err);
void at_reader_close(struct at_reader *r);
const char *at_reader_path(const struct at_reader *r);
const struct at_trace_info *at_reader_info(const struct at_reader *r);
/* Points in the order they were added (attribute `order`); NULL when out of range. */
const struct at_point_info *at_reader_point(const struct at_reader *r, int32_t index);
int at_reader_find_point(const struct at_reader *r, const char *name, int32_t *index);
/* Load a point's accumulators into s (initialised here; free with at_stats_free).
 * Every dataset's presence, type and shape is checked. */
int at_reader_load_stats(struct at_reader *r, int32_t point, struct at_stats *s,
                         struct at_error *err);
/* The same without the histogram and the extremes (s->hist is NULL,
 * n_extremes 0): what per-channel moment criteria need, at a fraction of
 * the I/O. */
int at_reader_load_moments(struct at_reader *r, int32_t point, struct at_stats *s,
                           struct at_error *err);
/* The same two into accumulators s already holds, from an earlier load or
 * at_stats_init (or an empty, zeroed s): when s has the point's channels
 * its arrays are overwritten, not allocated and zeroed again, which spares
 * a pass over a point's histogram (what a loop over a trace's points
 * otherwise spends in page faults and memset); else s is reallocated.  The
 * result is the same as the plain loads'; on failure s is left empty. */
int at_reader_reload_stats(struct at_reader *r, int32_t point, struct at_stats *s,
                           struct at_error *err);
int at_reader_reload_moments(struct at_reader *r, int32_t point, struct at_stats *s,
                             struct at_error *err);
/* Sampled rows [first, first+n) of a point as float32 [n][channels], and the
 * /tokens row of each (tokens may be NULL).  Chunks are decompressed in
 * parallel; iterate in multiples of sample_chunk_rows for best speed. */
int at_reader_read_samples(struct at_reader *r, int32_t point, int64_t first, int64_t n,
                           float *rows, int64_t *tokens, struct at_error *err);
/* Rows [first, first+n) of /tokens; any output pointer may be NULL. */
int at_reader_read_tokens(struct at_reader *r, int64_t first, int64_t n, int32_t *seq,
                          int32_t *pos, int32_t *id, struct at_error *err);

/* Weight statistics of one module. */
struct at_weight_stats {
	char module[256];
	char module_class[128];
	int64_t rows, cols;
	double *row_absmax, *row_absmean; /* [rows] */
	double *col_absmax, *col_absmean; /* [cols] */
	float *values;                    /* [cols] for vectors (rows == 1), else NULL */
	double *row_sumsq;                /* [rows]; NULL in traces written without it */
};
const char *at_reader_weight_name(const struct at_reader *r, int32_t index);
int at_reader_load_weight(struct at_reader *r, int32_t index, struct at_weight_stats *out,
                          struct at_error *err);
void at_weight_stats_free(struct at_weight_stats *w);

/* ---------------------------------------------------------------- merge */

/* One trace from several of the same points (trace-merge(1)): counts,
 * nonfinite counts, histograms and abssum add, min/max/absmax combine, the
 * moments combine by Chan / Pebay (at_stats_merge), the extremes are the top
 * K of the union (K the smallest extremes_k of the inputs) under the order of
 * acttrace-format(5), /tokens is the inputs' concatenation (each input's
 * sequence numbers shifted so that its smallest follows the largest before
 * it; the first input's kept), and the samples are concatenated, their
 * tokens remapped, up to the largest max_samples of the inputs.  The inputs
 * must have the same points (names, widths, histograms) in the same order and
 * the same sampling policy; their weight statistics must agree.  The root
 * dataset /provenance lists every input (path, model, created, tokens,
 * complete).
 *
 * The ranks of one tensor-parallel capture (any input holding a channel slice
 * or a replicated point, acttrace-format(5) CHANNEL SLICES) are assembled
 * instead: every rank once, the same /tokens and sampling; each point's
 * slices, which must tile its full width, placed side by side (extremes
 * re-ranked with channels moved by the offsets, sampled rows put side by
 * side), a point one rank holds whole copied, /tokens kept once, the
 * weights the union of the ranks'.
 *
 * The output is written to a temporary file beside `out` and renamed over it
 * at the end; on any failure nothing is left at `out` (an existing file there
 * is untouched).  `out` may not be one of the inputs (compared by device and
 * inode).  Errors name the input at fault and the first difference. */
struct at_merge_options {
	int force;            /* weights that differ: keep the first input's (recorded:
	                         root attribute merged_weights_differ = 1) instead of failing */
	int allow_incomplete; /* merge inputs with complete=0 too (recorded:
	                         merged_incomplete = 1) instead of failing */
	int threads;          /* over points and compression; 0: OpenMP's default */
	int compression_level; /* zstd level of the output, 1..19 (default 3) */
	/* Called on the calling thread as the merge goes (stage "statistics" or
	 * "samples", done of total); a non-zero return stops it: AT_ECANCELED,
	 * the temporary removed.  May be NULL. */
	int (*progress)(void *arg, const char *stage, double done, double total);
	void *progress_arg;
};
void at_merge_options_init(struct at_merge_options *o);
int at_merge(const char *out, const char *const *inputs, int n_inputs,
             const struct at_merge_options *o, struct at_error *err);

#ifdef __cplusplus
}
#endif
#endif /* ACTTRACE_H */
