/* writer.c: creates a trace file (format version 3, see acttrace-format(5)),
 * folds host activations into per-point accumulators, samples rows, and
 * writes everything at checkpoints, which a killed process cannot tear
 * (acttrace-format(5), CRASH-SAFE CHECKPOINTS: SWMR, two slots of
 * statistics, a temporary name until the first checkpoint).  Sampled rows go to HDF5 as chunks that
 * were shuffled and zstd-compressed in parallel beforehand (direct chunk
 * write), so HDF5's single-threaded filter pipeline is never the bottleneck.
 *
 * The compression and writing of full sample chunks happen on a background
 * thread, off the caller's (the model's hooks') critical path.  HDF5 is not
 * thread-safe, so the caller's thread drains that thread (waits until it is
 * idle) before every HDF5 call of its own: adding a point or a weight, a
 * checkpoint, close and abandon.  Between those, only the background thread
 * calls HDF5. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "extension.h"
#include "h5util.h"
#include "reservoir.h"

/* Full sample chunks may wait for the background writer up to this much;
 * past it, sampling waits for the writer (samples are never lost to a slow
 * disk).  The writer takes every chunk queued when it wakes, so that all the
 * compression threads have chunks to work on. */
#define QUEUE_WAIT_BYTES ((size_t)512 << 20)
/* Statistics are compressed and written in batches of about this much. */
#define STATS_BATCH_BYTES ((size_t)64 << 20)
/* Target size of one sample chunk (uncompressed). */
#define SAMPLE_CHUNK_BYTES ((int64_t)1 << 20)
#define VECTOR_CHUNK 65536
#define HIST_CHUNK_CHANNELS 4096
#define ISTORE_K 4 /* create_file says why */
#define COMPACT_MAX 65535 /* keep_compact's limit: HDF5's largest */
/* reserve_space's margin for metadata (object headers, chunk indexes) */
#define RESERVE_SLACK_BYTES ((int64_t)1 << 20)
#define CHUNK_INDEX_BYTES 512 /* reserved per chunk written, for its index entry */

struct point {
	struct at_point_desc desc; /* strings owned */
	int32_t order;
	hid_t group;
	hid_t shadow; /* its slot 1, /checkpoint/points/<name>, or -1 before it exists */
	struct at_stats stats;
	/* sampling */
	hid_t samples, sample_tokens;
	/* the samples' stored dtype: that of the first chunk written, decided
	 * (dtype_set) by the thread that writes it, then fixed */
	enum at_dtype sample_dtype;
	int dtype_set;
	int64_t chunk_rows;
	/* the chunk being filled: chunk_rows x channels in pending_dtype, as the rows
	 * came (room for float32); the writer thread converts it to sample_dtype */
	unsigned char *pending;
	enum at_dtype pending_dtype;
	int64_t *pending_tokens;  /* its tokens */
	int64_t pending_rows;
	int64_t chunks_queued;    /* full chunks handed to the queue */
	int64_t samples_taken;    /* rows accepted so far */
	int64_t samples_dropped;
	int64_t samples_dropped_busy; /* of those, dropped because the writer was behind */
	void *ext_state;          /* the extension's state of this point, or NULL */
	struct reservoir *reservoir; /* AT_SAMPLE_RESERVOIR's rows, or NULL */
};

/* A full sample chunk waiting for compression and its write. */
struct queued_chunk {
	int32_t point;
	enum at_dtype dtype; /* of chunk.raw, converted to the samples' dtype before compression */
	int64_t index; /* chunk number along the rows */
	struct at_chunk chunk;
	int64_t *tokens;
};

struct at_writer {
	char *path;
	char *part_path; /* PATH.part: the file's name until it is safe to show */
	hid_t file;
	/* CRASH-SAFE CHECKPOINTS: swmr = the file is PATH and in SWMR mode (no
	 * object may be created); otherwise it is PATH.part, which no reader
	 * sees.  valid_slot is the slot of the last completed checkpoint and
	 * checkpoints their number (0: no /checkpoint/state yet). */
	int swmr;
	int valid_slot;
	int64_t checkpoints;
	int has_state;  /* /checkpoint/state and the points' slot 1 exist */
	int observed;   /* statistics changed since the last checkpoint */
	int io_failed; /* a write failed: PATH.part is not worth keeping */
	struct at_writer_options opts;
	char *model, *source_dtype, *notes, *producer;
	struct point *points;
	int32_t npoints, points_capacity;
	/* tokens: all of them in memory (pos is needed by AT_SAMPLE_FIRST),
	 * rows [tokens_written, ntokens) not yet in the file */
	int32_t *token_seq, *token_pos, *token_id;
	int64_t ntokens, tokens_capacity, tokens_written;
	hid_t tokens_group;
	int32_t weights;
	/* the background sample writer; everything below mu is guarded by it */
	pthread_t bg_thread;
	int bg_started;
	pthread_mutex_t mu;
	pthread_cond_t work, idle; /* work: chunks queued or stop; idle: the writer caught up */
	struct queued_chunk *queue;
	size_t queue_len, queue_capacity, queue_bytes; /* queued, not yet taken */
	size_t bytes_in_flight;   /* queued or being written */
	int bg_busy, bg_stop;
	int bg_status;            /* the first error of the writer thread */
	struct at_error bg_err;
	/* the points' sample state (pending rows, reservoirs, counts), shared with
	 * the extension's thread that hands in sampled rows */
	pthread_mutex_t sample_mu;
	const struct writer_extension *ext; /* accumulates elsewhere (the GPU), or NULL */
	void *ext_state;          /* its state, or NULL */
};

static int leave_swmr(struct at_writer *w);

void at_writer_options_init(struct at_writer_options *o)
{
	*o = (struct at_writer_options){
		.hist = 1,
		.extremes = 64,
		.sample_policy = AT_SAMPLE_NONE,
		.sample_n = 1,
		.max_samples = (int64_t)1 << 20,
		.compression_level = 3,
		.threads = 0,
		.rank = 0,
		.world_size = 1,
	};
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

/* "PATH: cannot WHAT: why".  The system's reason comes from HDF5's error
 * stack when the failed call is the last HDF5 call made; the helpers that
 * close their handles before they return have cleared it by then, and errno
 * still tells a full disk or a file size limit from the write that failed. */
static int io_fail(struct at_writer *w, struct at_error *err, const char *what_fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int io_fail(struct at_writer *w, struct at_error *err, const char *what_fmt, ...)
{
	int e = errno;
	char what[512], why[128];
	w->io_failed = 1;
	va_list ap;
	va_start(ap, what_fmt);
	vsnprintf(what, sizeof what, what_fmt, ap);
	va_end(ap);
	if (h5_system_error(why, sizeof why))
		return at_fail(err, AT_EIO, "%s: cannot %s: %s", w->path, what, why);
	if (e == ENOSPC || e == EFBIG || e == EIO || e == EROFS
#ifdef EDQUOT
	    || e == EDQUOT
#endif
	)
		return at_fail(err, AT_EIO, "%s: cannot %s: %s", w->path, what, strerror(e));
	return at_fail(err, AT_EIO, "%s: cannot %s", w->path, what);
}

/* ---------------------------------------------------------------- space */

/* Room for `bytes` more past HDF5's end of allocation, taken from the file
 * system (posix_fallocate) before HDF5 allocates it.  HDF5 records a new
 * allocation in the superblock before it writes there; were the write to
 * fail (a full disk, a file size limit) the superblock would claim more than
 * the file holds, and HDF5 would refuse the whole file as truncated, last
 * checkpoint and all.  A reservation that fails fails before anything is
 * written.  HDF5 cuts the file back to its allocation when it closes it. */
static int reserve_space(struct at_writer *w, int64_t bytes)
{
	haddr_t eoa;
	int *fd = NULL;
	if (H5Fget_eoa(w->file, &eoa) < 0 ||
	    H5Fget_vfd_handle(w->file, H5P_DEFAULT, (void **)&fd) < 0 || !fd)
		return -1;
	struct stat st;
	off_t want = (off_t)eoa + (off_t)bytes + RESERVE_SLACK_BYTES;
	if (fstat(*fd, &st) != 0)
		return -1;
	if (st.st_size >= want)
		return 0;
	int e = posix_fallocate(*fd, st.st_size, want - st.st_size);
	if (e == EOPNOTSUPP || e == ENOSYS || e == EINVAL) /* no reservation there: try as before */
		return 0;
	errno = e;
	return e ? -1 : 0;
}

/* HDF5 cuts a file back to its allocation when it closes it, but only from
 * the size it believes the file has, which reserve_space changed behind its
 * back: so cut it here, to the end-of-file address of the superblock
 * (version 2 or 3 with 8-byte addresses, as created here: at byte 28). */
static void trim_to_allocation(const char *path)
{
	unsigned char head[36];
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return;
	uint64_t eoa = 0, base = 0;
	if (pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
	    memcmp(head, "\211HDF\r\n\032\n", 8) == 0 && (head[8] == 2 || head[8] == 3) &&
	    head[9] == 8) {
		for (int i = 7; i >= 0; i--) {
			base = base << 8 | head[12 + i];
			eoa = eoa << 8 | head[28 + i];
		}
		struct stat st;
		if (base == 0 && eoa > 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size > eoa &&
		    ftruncate(fd, (off_t)eoa) != 0) {
			/* a longer file is still a good one */
		}
	}
	close(fd);
}

/* Close the HDF5 file (a clean close: SWMR's mark goes) and trim it. */
static int close_file(struct at_writer *w)
{
	if (w->file < 0)
		return 0;
	int bad = H5Fclose(w->file) < 0;
	w->file = -1;
	if (!bad)
		trim_to_allocation(w->swmr ? w->path : w->part_path);
	return bad ? -1 : 0;
}

/* ---------------------------------------------------------------- chunks in place */

/* In SWMR mode HDF5 1.10 never reuses the space of a chunk it frees, and
 * it frees a compressed chunk whenever a rewrite changes its size: every
 * checkpoint would leak the size of its statistics (measured: 9 MiB a
 * checkpoint for 16 points of 8192 channels).  So in SWMR mode a rewritten
 * chunk keeps its stored size: the zstd frame is followed by a skippable
 * frame up to it (magic 0x184D2A50, length, zeros), which every zstd
 * decoder skips (acttrace-format(5), COMPRESSION), and a chunk that
 * outgrows its size moves once to a quarter more. */
#define SKIPPABLE_HEADER_BYTES 8

static int pad_packed(struct at_chunk *c, size_t target)
{
	if (target == c->packed_bytes)
		return 0;
	unsigned char *grown = realloc(c->packed, target);
	if (!grown)
		return -1;
	uint32_t magic = 0x184D2A50u, length = (uint32_t)(target - c->packed_bytes - 8);
	unsigned char *skip = grown + c->packed_bytes;
	for (int i = 0; i < 4; i++) {
		skip[i] = (unsigned char)(magic >> (8 * i));
		skip[4 + i] = (unsigned char)(length >> (8 * i));
	}
	memset(skip + 8, 0, length);
	c->packed = grown;
	c->packed_bytes = target;
	return 0;
}

/* What reserve_space must hold for a chunk of `packed` bytes: moved with
 * its headroom, and its index entry. */
static int64_t chunk_reserve_bytes(size_t packed)
{
	return (int64_t)(packed + packed / 4 + SKIPPABLE_HEADER_BYTES) + CHUNK_INDEX_BYTES;
}

/* H5Dwrite_chunk, keeping a rewritten chunk where it is when `in_place`.
 * The headroom here bounds what a reader accepts (at_codec_stored_bound). */
static int write_chunk(hid_t dset, const hsize_t *offset, struct at_chunk *c, int in_place)
{
	hsize_t stored = 0;
	if (in_place && H5Dget_chunk_storage_size(dset, offset, &stored) < 0)
		stored = 0; /* never written */
	size_t want = c->packed_bytes, target = want;
	if (stored >= want + SKIPPABLE_HEADER_BYTES)
		target = (size_t)stored;
	else if (stored > 0 && stored != want)
		target = want + want / 4 + SKIPPABLE_HEADER_BYTES;
	if (target - want > UINT32_MAX || pad_packed(c, target) < 0)
		return -1;
	return H5Dwrite_chunk(dset, H5P_DEFAULT, 0, offset, c->packed_bytes, c->packed) < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- create */

static void iso8601_now(char *buf, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *policy_name(enum at_sample_policy p)
{
	return p == AT_SAMPLE_EVERY       ? "every"
	       : p == AT_SAMPLE_FIRST     ? "first"
	       : p == AT_SAMPLE_RESERVOIR ? "reservoir"
	                                  : "none";
}

static int write_root_attrs(struct at_writer *w)
{
	char created[32];
	double edges[AT_HIST_BINS];
	for (int b = 0; b < AT_HIST_BINS; b++)
		edges[b] = at_hist_lower_edge(b);
	iso8601_now(created, sizeof created);
	hid_t f = w->file;
	const struct at_writer_options *o = &w->opts;
	int bad = 0;
	bad |= h5_attr_put_string(f, "format", AT_FORMAT_NAME);
	bad |= h5_attr_put_int(f, "format_version", H5T_STD_I32LE, AT_FORMAT_VERSION);
	bad |= h5_attr_put_string(f, "producer", w->producer);
	bad |= h5_attr_put_string(f, "created", created);
	bad |= h5_attr_put_string(f, "model", w->model);
	bad |= h5_attr_put_string(f, "source_dtype", w->source_dtype);
	bad |= h5_attr_put_string(f, "notes", w->notes);
	bad |= h5_attr_put_int(f, "complete", H5T_STD_I32LE, 0);
	bad |= h5_attr_put_int(f, "extremes_k", H5T_STD_I32LE, o->extremes);
	bad |= h5_attr_put_string(f, "sample_policy", policy_name(o->sample_policy));
	bad |= h5_attr_put_int(f, "sample_n", H5T_STD_I64LE, o->sample_n);
	bad |= h5_attr_put_int(f, "max_samples", H5T_STD_I64LE, o->max_samples);
	bad |= h5_attr_put_int(f, "hist_bins_per_octave", H5T_STD_I32LE, AT_HIST_BINS_PER_OCTAVE);
	bad |= h5_attr_put_int(f, "hist_min_exp", H5T_STD_I32LE, AT_HIST_MIN_EXP);
	bad |= h5_attr_put_int(f, "hist_max_exp", H5T_STD_I32LE, AT_HIST_MAX_EXP);
	bad |= h5_attr_put_doubles(f, "hist_lower_edges", edges, AT_HIST_BINS);
	bad |= h5_attr_put_int(f, "rank", H5T_STD_I32LE, o->rank);
	bad |= h5_attr_put_int(f, "world_size", H5T_STD_I32LE, o->world_size);
	bad |= h5_attr_put_u64(f, "sample_seed", o->sample_seed);
	return bad ? -1 : 0;
}

/* Links and attributes kept in the object headers (compact storage), which
 * bounds 1.8 checksum, never in the dense storage of a fractal heap, whose
 * direct blocks carry no checksum: fuzzing found HDF5 1.10.8 crashing in
 * H5G__dense_iterate on a damaged one.  A lookup is then a linear scan of
 * a few hundred links, which costs nothing next to reading the datasets. */
static int keep_compact(hid_t gcpl)
{
	return H5Pset_link_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX) < 0 ||
	               H5Pset_attr_phase_change(gcpl, COMPACT_MAX, COMPACT_MAX) < 0
	           ? -1
	           : 0;
}

/* A group whose links and attributes stay compact (keep_compact). */
static hid_t create_group(hid_t loc, const char *name)
{
	hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
	hid_t g = gcpl >= 0 && keep_compact(gcpl) == 0
	              ? H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT)
	              : H5I_INVALID_HID;
	if (gcpl >= 0)
		H5Pclose(gcpl);
	return g;
}

static int create_tokens(struct at_writer *w)
{
	static const char *const names[] = {"seq", "pos", "id"};
	hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {65536};
	w->tokens_group = create_group(w->file, "tokens");
	if (w->tokens_group < 0)
		return -1;
	for (int i = 0; i < 3; i++) {
		hid_t d = h5_create_compressed(w->tokens_group, names[i], H5T_STD_I32LE, 1, dims,
		                               maxdims, chunk, w->opts.compression_level);
		if (d < 0)
			return -1;
		H5Dclose(d);
	}
	return 0;
}

static int check_options(const struct at_writer_options *o, struct at_error *err)
{
	if (o->extremes < 0 || o->max_samples < 0 || o->sample_n < 1)
		return at_fail(err, AT_EINVAL,
		               "writer options: extremes, max_samples must be >= 0 and sample_n >= 1");
	if (o->sample_policy != AT_SAMPLE_NONE && o->sample_policy != AT_SAMPLE_EVERY &&
	    o->sample_policy != AT_SAMPLE_FIRST && o->sample_policy != AT_SAMPLE_RESERVOIR)
		return at_fail(err, AT_EINVAL, "writer options: unknown sample policy %d",
		               (int)o->sample_policy);
	if (o->sample_bytes_in_flight < 0 ||
	    (o->when_busy != AT_WHEN_BUSY_WAIT && o->when_busy != AT_WHEN_BUSY_DROP))
		return at_fail(err, AT_EINVAL,
		               "writer options: sample_bytes_in_flight must be >= 0 and when_busy "
		               "wait or drop");
	if (o->compression_level < 1 || o->compression_level > 19)
		return at_fail(err, AT_EINVAL, "writer options: zstd level %d not in 1..19",
		               o->compression_level);
	if (o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
		return at_fail(err, AT_EINVAL, "writer options: rank %d of world_size %d",
		               (int)o->rank, (int)o->world_size);
	return AT_OK;
}

/* Close every HDF5 object of the writer except the file itself. */
static void close_handles(struct at_writer *w)
{
	for (int32_t i = 0; i < w->npoints; i++) {
		struct point *p = &w->points[i];
		if (p->samples >= 0)
			H5Dclose(p->samples);
		if (p->sample_tokens >= 0)
			H5Dclose(p->sample_tokens);
		if (p->group >= 0)
			H5Gclose(p->group);
		if (p->shadow >= 0)
			H5Gclose(p->shadow);
		p->samples = p->sample_tokens = p->group = p->shadow = -1;
	}
	if (w->tokens_group >= 0)
		H5Gclose(w->tokens_group);
	w->tokens_group = -1;
}

static void stop_background(struct at_writer *w, int write_queued);
static void free_chunks(struct queued_chunk *q, size_t n);
static int drain(struct at_writer *w, struct at_error *err);

/* What becomes of PATH.part when the writer stops without closing: a trace
 * that was never checkpointed and saw no write error is shown as it is (an
 * incomplete trace, as a version 2 writer left it); otherwise PATH keeps
 * the last checkpoint, or nothing, and the temporary goes. */
static void settle_part(struct at_writer *w)
{
	if (w->swmr || !w->part_path)
		return;
	if (w->checkpoints == 0 && !w->io_failed && rename(w->part_path, w->path) == 0)
		return;
	unlink(w->part_path);
}

static void writer_free(struct at_writer *w)
{
	/* the extension's state first: its thread may still hand in rows, to a
	 * writer thread that must be running to take them */
	if (w->ext)
		w->ext->free_writer(w->ext_state);
	for (int32_t i = 0; w->ext && i < w->npoints; i++)
		w->ext->free_point(w->points[i].ext_state);
	stop_background(w, 0);
	close_handles(w);
	close_file(w);
	settle_part(w);
	for (int32_t i = 0; i < w->npoints; i++) {
		struct point *p = &w->points[i];
		free((char *)p->desc.name);
		free((char *)p->desc.component);
		free((char *)p->desc.site);
		free((char *)p->desc.module);
		free((char *)p->desc.module_class);
		free((char *)p->desc.direction);
		at_stats_free(&p->stats);
		reservoir_free(p->reservoir);
		free(p->pending);
		free(p->pending_tokens);
	}
	free_chunks(w->queue, w->queue_len);
	free(w->queue);
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&w->sample_mu);
	pthread_cond_destroy(&w->work);
	pthread_cond_destroy(&w->idle);
	free(w->points);
	free(w->token_seq);
	free(w->token_pos);
	free(w->token_id);
	free(w->model);
	free(w->source_dtype);
	free(w->notes);
	free(w->producer);
	free(w->path);
	free(w->part_path);
	free(w);
}

/* HDF5 does not say why a create failed; the directory usually does. */
static const char *why_not_creatable(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == path)
		snprintf(dir, sizeof dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	struct stat st;
	if (stat(dir, &st) != 0)
		return strerror(errno);
	if (!S_ISDIR(st.st_mode))
		return "Not a directory";
	if (access(dir, W_OK) != 0)
		return strerror(errno);
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return "Is a directory";
	return "HDF5 refused it (file locked or unwritable?)";
}

/* File-format bounds 1.10, HDF5 1.10's latest, which SWMR needs
 * (acttrace-format(5), COMPRESSION and CRASH-SAFE CHECKPOINTS): superblock 3
 * and object headers 2, whose metadata carry checksums HDF5 verifies on
 * read.
 *
 * Most datasets of a trace hold one chunk or a few, but each chunk index
 * (a version-1 B-tree under these bounds) has nodes allocated for 2K
 * entries (64 with HDF5's default K of 32): 2.5 KiB of a mostly empty node
 * per dataset, the bulk of a small trace.  K = 4 keeps the nodes at 300
 * bytes and the trees of the many-chunk sample datasets shallow. */
static hid_t file_access(void)
{
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
		H5Pclose(fapl);
		return -1;
	}
	return fapl;
}

static hid_t create_file(const char *path)
{
	hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
	hid_t fapl = file_access();
	hid_t file = H5I_INVALID_HID;
	if (fcpl >= 0 && fapl >= 0 && H5Pset_istore_k(fcpl, ISTORE_K) >= 0 &&
	    keep_compact(fcpl) == 0) /* the root group's */
		file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
	if (fapl >= 0)
		H5Pclose(fapl);
	if (fcpl >= 0)
		H5Pclose(fcpl);
	return file;
}

static char *part_path_of(const char *path)
{
	size_t n = strlen(path);
	char *part = malloc(n + sizeof ".part");
	if (part)
		memcpy(part, path, n), memcpy(part + n, ".part", sizeof ".part");
	return part;
}

int at_writer_create(struct at_writer **out, const char *path,
                     const struct at_writer_options *opts, struct at_error *err)
{
	struct at_writer_options defaults;
	*out = NULL;
	if (!path || !*path)
		return at_fail(err, AT_EINVAL, "writer: empty output path");
	if (!opts) {
		at_writer_options_init(&defaults);
		opts = &defaults;
	}
	int status = check_options(opts, err);
	if (status)
		return status;
	struct at_writer *w = calloc(1, sizeof *w);
	if (!w)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", path);
	w->file = w->tokens_group = -1;
	w->opts = *opts;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_init(&w->sample_mu, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->idle, NULL);
	char producer[64];
	snprintf(producer, sizeof producer, "acttrace %s", at_version());
	w->path = strdup(path);
	w->part_path = part_path_of(path);
	w->model = dup_or_empty(opts->model);
	w->source_dtype = dup_or_empty(opts->source_dtype);
	w->notes = dup_or_empty(opts->notes);
	w->producer = strdup(opts->producer ? opts->producer : producer);
	if (!w->path || !w->part_path || !w->model || !w->source_dtype || !w->notes ||
	    !w->producer) {
		writer_free(w);
		return at_fail(err, AT_ENOMEM, "%s: out of memory", path);
	}
	status = at_zstd_filter_register(err);
	if (status) {
		writer_free(w);
		return status;
	}
	struct h5_quiet q;
	h5_quiet_begin(&q);
	/* PATH.part until the first checkpoint (settle_part, switch_to_swmr);
	 * an older trace at PATH goes now, as H5F_ACC_TRUNC would have it */
	w->file = create_file(w->part_path);
	if (w->file >= 0 && unlink(path) != 0 && errno != ENOENT)
		status = at_fail(err, AT_EIO, "%s: cannot replace it: %s", path, strerror(errno));
	else if (w->file < 0)
		status = at_fail(err, AT_EIO, "%s: cannot create file: %s", path,
		                 why_not_creatable(path));
	else if (write_root_attrs(w) < 0 || create_tokens(w) < 0 ||
	         H5Gclose(create_group(w->file, "points")) < 0 ||
	         H5Gclose(create_group(w->file, "weights")) < 0)
		status = io_fail(w, err, "write the trace header");
	h5_quiet_end(&q);
	if (status) {
		w->io_failed = 1; /* nothing worth showing */
		writer_free(w);
		return status;
	}
	*out = w;
	return AT_OK;
}

/* ---------------------------------------------------------------- points */

static int check_point_desc(const struct at_writer *w, const struct at_point_desc *d,
                            struct at_error *err)
{
	if (!d || !d->name || !*d->name)
		return at_fail(err, AT_EINVAL, "%s: point without a name", w->path);
	if (strchr(d->name, '/') || strcmp(d->name, ".") == 0)
		return at_fail(err, AT_EINVAL, "%s: point name '%s' may not contain '/'", w->path,
		               d->name);
	if (d->channels <= 0)
		return at_fail(err, AT_EINVAL, "%s: point '%s' has %lld channels", w->path, d->name,
		               (long long)d->channels);
	if (d->direction && strcmp(d->direction, "in") && strcmp(d->direction, "out"))
		return at_fail(err, AT_EINVAL, "%s: point '%s': direction must be in or out",
		               w->path, d->name);
	if (d->channel_offset < 0 || d->full_channels < 0 ||
	    (d->full_channels > 0 && d->channel_offset > d->full_channels - d->channels) ||
	    (d->full_channels == 0 && d->channel_offset != 0))
		return at_fail(err, AT_EINVAL,
		               "%s: point '%s': channels [%lld, %lld) do not lie in a tensor of "
		               "%lld channels",
		               w->path, d->name, (long long)d->channel_offset,
		               (long long)(d->channel_offset + d->channels),
		               (long long)(d->full_channels ? d->full_channels : d->channels));
	for (int32_t i = 0; i < w->npoints; i++)
		if (strcmp(w->points[i].desc.name, d->name) == 0)
			return at_fail(err, AT_EINVAL, "%s: point '%s' added twice", w->path, d->name);
	return AT_OK;
}

static int copy_desc(struct at_point_desc *dst, const struct at_point_desc *src)
{
	*dst = *src;
	dst->name = strdup(src->name);
	dst->component = dup_or_empty(src->component ? src->component : "other");
	dst->site = dup_or_empty(src->site ? src->site : src->name);
	dst->module = dup_or_empty(src->module);
	dst->module_class = dup_or_empty(src->module_class);
	dst->direction = dup_or_empty(src->direction ? src->direction : "out");
	if (dst->full_channels == 0)
		dst->full_channels = dst->channels;
	dst->replicated = dst->replicated != 0;
	return dst->name && dst->component && dst->site && dst->module && dst->module_class &&
	               dst->direction
	           ? 0
	           : -1;
}

static int write_point_attrs(hid_t g, const struct point *p)
{
	const struct at_point_desc *d = &p->desc;
	int bad = 0;
	bad |= h5_attr_put_int(g, "layer", H5T_STD_I32LE, d->layer);
	bad |= h5_attr_put_string(g, "component", d->component);
	bad |= h5_attr_put_string(g, "site", d->site);
	bad |= h5_attr_put_string(g, "module", d->module);
	bad |= h5_attr_put_string(g, "module_class", d->module_class);
	bad |= h5_attr_put_string(g, "direction", d->direction);
	bad |= h5_attr_put_int(g, "channels", H5T_STD_I64LE, d->channels);
	bad |= h5_attr_put_int(g, "order", H5T_STD_I32LE, p->order);
	bad |= h5_attr_put_int(g, "channel_offset", H5T_STD_I64LE, d->channel_offset);
	bad |= h5_attr_put_int(g, "full_channels", H5T_STD_I64LE, d->full_channels);
	if (d->replicated)
		bad |= h5_attr_put_int(g, "replicated", H5T_STD_I32LE, 1);
	bad |= h5_attr_put_int(g, "samples_dropped", H5T_STD_I64LE, p->samples_dropped);
	bad |= h5_attr_put_int(g, "samples_dropped_busy", H5T_STD_I64LE, p->samples_dropped_busy);
	return bad ? -1 : 0;
}

/* The pending chunk and sample_tokens; `samples` itself waits for the first
 * rows, whose dtype it takes (samples_dataset).  Rows per chunk are fixed
 * now, from float32's size, whatever dtype comes. */
static int create_sample_datasets(struct at_writer *w, struct point *p)
{
	int64_t c = p->desc.channels;
	int64_t rows = SAMPLE_CHUNK_BYTES / (4 * c);
	p->chunk_rows = rows < 1 ? 1 : rows > 4096 ? 4096 : rows;
	if (w->opts.sample_policy == AT_SAMPLE_RESERVOIR) {
		if (reservoir_create(&p->reservoir, w->opts.sample_n, c) < 0)
			return -1;
	} else {
		p->pending = malloc((size_t)(p->chunk_rows * c) * sizeof(float));
		p->pending_tokens = malloc((size_t)p->chunk_rows * sizeof *p->pending_tokens);
		if (!p->pending || !p->pending_tokens)
			return -1;
	}
	hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED};
	hsize_t tchunk[1] = {(hsize_t)(p->chunk_rows < 1024 ? 1024 : p->chunk_rows)};
	p->sample_tokens = h5_create_compressed(p->group, "sample_tokens", H5T_STD_I64LE, 1, dims,
	                                        maxdims, tchunk, w->opts.compression_level);
	return p->sample_tokens < 0 ? -1 : 0;
}

/* bfloat16 as HDF5 describes a floating type: float32's sign, 8-bit
 * exponent (bias 127) and the top 7 bits of its mantissa in 2 bytes; IEEE
 * binary16 the same way (HDF5 1.10 has no predefined one). */
static hid_t half_file_type(enum at_dtype dtype)
{
	int bf = dtype == AT_BF16;
	hid_t t = H5Tcopy(H5T_IEEE_F32LE);
	if (t < 0)
		return -1;
	if (H5Tset_fields(t, 15, bf ? 7 : 10, bf ? 8 : 5, 0, bf ? 7 : 10) < 0 ||
	    H5Tset_precision(t, 16) < 0 || H5Tset_size(t, 2) < 0 ||
	    H5Tset_ebias(t, bf ? 127 : 15) < 0) {
		H5Tclose(t);
		return -1;
	}
	return t;
}

/* p's `samples` dataset in p->sample_dtype, created on first use. */
static int samples_dataset(struct at_writer *w, struct point *p)
{
	if (p->samples >= 0)
		return 0;
	if (leave_swmr(w) < 0) /* a new dataset: not in SWMR mode */
		return -1;
	int64_t c = p->desc.channels;
	hsize_t dims[2] = {0, (hsize_t)c}, maxdims[2] = {H5S_UNLIMITED, (hsize_t)c};
	hsize_t chunk[2] = {(hsize_t)p->chunk_rows, (hsize_t)c};
	hid_t type = p->sample_dtype == AT_F32 ? H5Tcopy(H5T_IEEE_F32LE)
	                                       : half_file_type(p->sample_dtype);
	if (type < 0)
		return -1;
	p->samples = h5_create_compressed(p->group, "samples", type, 2, dims, maxdims, chunk,
	                                  w->opts.compression_level);
	H5Tclose(type);
	return p->samples < 0 ? -1 : 0;
}

/* The dtype p's samples are stored in: the first rows' (called by the thread
 * that writes them, in order). */
static enum at_dtype settle_sample_dtype(struct point *p, enum at_dtype first_rows)
{
	if (!p->dtype_set) {
		p->sample_dtype = first_rows;
		p->dtype_set = 1;
	}
	return p->sample_dtype;
}

static int create_point_stats(struct at_writer *w, struct point *p, hid_t group);

static int add_point(struct at_writer *w, const struct at_point_desc *desc, int32_t *point_id,
                     struct at_error *err);

/* Under the sample lock: an extension's thread (the device path's) reads
 * w->points when it hands in rows, and may queue chunks for the writer
 * thread, which must stay idle while the array moves. */
int at_writer_add_point(struct at_writer *w, const struct at_point_desc *desc,
                        int32_t *point_id, struct at_error *err)
{
	pthread_mutex_lock(&w->sample_mu);
	int status = add_point(w, desc, point_id, err);
	pthread_mutex_unlock(&w->sample_mu);
	return status;
}

static int add_point(struct at_writer *w, const struct at_point_desc *desc, int32_t *point_id,
                     struct at_error *err)
{
	int status = check_point_desc(w, desc, err);
	if (status)
		return status;
	/* the writer thread reads w->points and calls HDF5: it must be idle */
	status = drain(w, err);
	if (status)
		return status;
	if (w->npoints == w->points_capacity) {
		int32_t cap = w->points_capacity ? 2 * w->points_capacity : 64;
		struct point *grown = realloc(w->points, (size_t)cap * sizeof *grown);
		if (!grown)
			return at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
		w->points = grown;
		w->points_capacity = cap;
	}
	struct point *p = &w->points[w->npoints];
	memset(p, 0, sizeof *p);
	p->group = p->samples = p->sample_tokens = p->shadow = -1;
	p->order = w->npoints;
	w->npoints++; /* from here on writer_free releases whatever p holds */
	if (copy_desc(&p->desc, desc) < 0)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	status = at_stats_init(&p->stats, desc->channels, w->opts.hist, w->opts.extremes, err);
	if (status)
		return status;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	if (leave_swmr(w) < 0 || reserve_space(w, 0) < 0) {
		status = io_fail(w, err, "add point '%s'", desc->name);
		h5_quiet_end(&q);
		return status;
	}
	hid_t points = H5Gopen2(w->file, "points", H5P_DEFAULT);
	p->group = points >= 0 ? create_group(points, desc->name) : -1;
	if (points >= 0)
		H5Gclose(points);
	if (p->group < 0 || write_point_attrs(p->group, p) < 0 ||
	    (w->opts.sample_policy != AT_SAMPLE_NONE && create_sample_datasets(w, p) < 0) ||
	    create_point_stats(w, p, p->group) < 0)
		status = at_fail(err, AT_EIO, "%s: cannot create point '%s'", w->path, desc->name);
	h5_quiet_end(&q);
	if (status)
		return status;
	*point_id = p->order;
	return AT_OK;
}

/* ---------------------------------------------------------------- tokens */

static int grow_tokens(struct at_writer *w, int64_t need)
{
	if (need <= w->tokens_capacity)
		return 0;
	int64_t cap = w->tokens_capacity ? w->tokens_capacity : 4096;
	while (cap < need)
		cap *= 2;
	int32_t *arrays[3] = {w->token_seq, w->token_pos, w->token_id};
	for (int i = 0; i < 3; i++) {
		int32_t *grown = realloc(arrays[i], (size_t)cap * sizeof *grown);
		if (!grown)
			return -1;
		arrays[i] = grown;
		/* keep the writer consistent after every successful realloc */
		w->token_seq = arrays[0];
		w->token_pos = arrays[1];
		w->token_id = arrays[2];
	}
	w->tokens_capacity = cap;
	return 0;
}

int at_writer_add_tokens(struct at_writer *w, const int32_t *seq, const int32_t *pos,
                         const int32_t *id, int64_t n, int64_t *token_base,
                         struct at_error *err)
{
	if (n < 0 || (n > 0 && (!seq || !pos || !id)))
		return at_fail(err, AT_EINVAL, "%s: add_tokens: bad arguments", w->path);
	if (grow_tokens(w, w->ntokens + n) < 0)
		return at_fail(err, AT_ENOMEM, "%s: out of memory for %lld tokens", w->path,
		               (long long)(w->ntokens + n));
	size_t bytes = (size_t)n * sizeof(int32_t);
	if (n > 0) {
		memcpy(w->token_seq + w->ntokens, seq, bytes);
		memcpy(w->token_pos + w->ntokens, pos, bytes);
		memcpy(w->token_id + w->ntokens, id, bytes);
	}
	if (token_base)
		*token_base = w->ntokens;
	w->ntokens += n;
	return AT_OK;
}

/* Append rows [first, first+n) of one int32 token column. */
static int append_column(hid_t group, const char *name, const int32_t *values, int64_t first,
                         int64_t n)
{
	hid_t dset = H5Dopen2(group, name, H5P_DEFAULT);
	if (dset < 0)
		return -1;
	hsize_t size[1] = {(hsize_t)(first + n)}, start[1] = {(hsize_t)first}, count[1] = {(hsize_t)n};
	int status = -1;
	hid_t fspace = -1, mspace = -1;
	if (H5Dset_extent(dset, size) < 0)
		goto done;
	fspace = H5Dget_space(dset);
	mspace = H5Screate_simple(1, count, NULL);
	if (fspace < 0 || mspace < 0 ||
	    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
		goto done;
	status = H5Dwrite(dset, H5T_NATIVE_INT32, mspace, fspace, H5P_DEFAULT, values + first) < 0
	             ? -1
	             : 0;
done:
	if (mspace >= 0)
		H5Sclose(mspace);
	if (fspace >= 0)
		H5Sclose(fspace);
	H5Dclose(dset);
	return status;
}

static int write_tokens(struct at_writer *w)
{
	int64_t first = w->tokens_written, n = w->ntokens - first;
	if (n == 0)
		return 0;
	if (append_column(w->tokens_group, "seq", w->token_seq, first, n) < 0 ||
	    append_column(w->tokens_group, "pos", w->token_pos, first, n) < 0 ||
	    append_column(w->tokens_group, "id", w->token_id, first, n) < 0)
		return -1;
	w->tokens_written = w->ntokens;
	return 0;
}

/* ---------------------------------------------------------------- samples */

static void *background_writer(void *arg);
static int write_batch(struct at_writer *w, struct queued_chunk *batch, size_t n,
                       struct at_error *err);

static void free_chunks(struct queued_chunk *q, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(q[i].chunk.raw);
		free(q[i].chunk.packed);
		free(q[i].tokens);
	}
}

/* The writer thread's first error, reported once by the caller's next call. */
static int take_background_error(struct at_writer *w, struct at_error *err)
{
	int status = w->bg_status;
	if (status != AT_OK) {
		*err = w->bg_err;
		w->bg_status = AT_OK;
	}
	return status;
}

/* Wait until the writer thread has written everything queued; its error if
 * it had one.  After this the caller's thread may call HDF5. */
static int drain(struct at_writer *w, struct at_error *err)
{
	if (!w->bg_started)
		return AT_OK;
	pthread_mutex_lock(&w->mu);
	while (w->queue_len > 0 || w->bg_busy)
		pthread_cond_wait(&w->idle, &w->mu);
	int status = take_background_error(w, err);
	pthread_mutex_unlock(&w->mu);
	return status;
}

static int start_background(struct at_writer *w, struct at_error *err)
{
	int e = pthread_create(&w->bg_thread, NULL, background_writer, w);
	if (e)
		return at_fail(err, AT_ENOMEM, "%s: cannot start the sample writer: %s", w->path,
		               strerror(e));
	w->bg_started = 1;
	return AT_OK;
}

/* Stop the writer thread once it has written what is queued (abandon: what
 * is queued is freed unwritten). */
static void stop_background(struct at_writer *w, int write_queued)
{
	if (!w->bg_started)
		return;
	pthread_mutex_lock(&w->mu);
	if (!write_queued) {
		free_chunks(w->queue, w->queue_len);
		w->bytes_in_flight -= w->queue_bytes;
		w->queue_len = 0;
		w->queue_bytes = 0;
	}
	w->bg_stop = 1;
	pthread_cond_broadcast(&w->work);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->bg_thread, NULL);
	w->bg_started = 0;
}

/* A full chunk that cannot be handed on: its rows are lost, and counted so,
 * and the chunk is free for the rows to come (never overrun). */
static void drop_pending(struct point *p)
{
	p->samples_taken -= p->pending_rows;
	p->samples_dropped += p->pending_rows;
	p->pending_rows = 0;
}

/* The full chunk of p to the writer thread, and a fresh one to fill; while
 * the limit of bytes in flight is reached it waits, or with when_busy = drop
 * drops the chunk.  No HDF5 here: hooks call this. */
static int queue_push(struct at_writer *w, int32_t point_id, struct at_error *err)
{
	struct point *p = &w->points[point_id];
	size_t limit = w->opts.sample_bytes_in_flight > 0 ? (size_t)w->opts.sample_bytes_in_flight
	                                                 : QUEUE_WAIT_BYTES;
	if (w->opts.when_busy == AT_WHEN_BUSY_DROP && w->bg_started) {
		pthread_mutex_lock(&w->mu);
		int drop = w->bytes_in_flight >= limit && w->bg_status == AT_OK;
		pthread_mutex_unlock(&w->mu);
		if (drop) { /* the writer is behind: this chunk goes, counted */
			p->samples_dropped_busy += p->pending_rows;
			drop_pending(p);
			return AT_OK;
		}
	}
	size_t cells = (size_t)(p->chunk_rows * p->desc.channels);
	size_t raw_bytes = cells * at_dtype_size(p->pending_dtype);
	unsigned char *fresh = malloc(cells * sizeof(float));
	int64_t *fresh_tokens = malloc((size_t)p->chunk_rows * sizeof *fresh_tokens);
	int status = AT_OK;
	if (!fresh || !fresh_tokens)
		status = at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	else if (!w->bg_started)
		status = start_background(w, err);
	if (status) {
		free(fresh);
		free(fresh_tokens);
		drop_pending(p);
		return status;
	}
	pthread_mutex_lock(&w->mu);
	while (w->bytes_in_flight >= limit && w->bg_status == AT_OK)
		pthread_cond_wait(&w->idle, &w->mu);
	status = take_background_error(w, err);
	if (status == AT_OK && w->queue_len == w->queue_capacity) {
		size_t cap = w->queue_capacity ? 2 * w->queue_capacity : 64;
		struct queued_chunk *grown = realloc(w->queue, cap * sizeof *grown);
		if (grown) {
			w->queue = grown;
			w->queue_capacity = cap;
		} else {
			status = at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
		}
	}
	if (status == AT_OK) {
		w->queue[w->queue_len++] = (struct queued_chunk){
			.point = point_id,
			.dtype = p->pending_dtype,
			.index = p->chunks_queued++,
			.chunk = {.raw = p->pending, .raw_bytes = raw_bytes},
			.tokens = p->pending_tokens,
		};
		w->queue_bytes += raw_bytes;
		w->bytes_in_flight += raw_bytes;
		pthread_cond_signal(&w->work);
	}
	pthread_mutex_unlock(&w->mu);
	if (status) {
		free(fresh);
		free(fresh_tokens);
		drop_pending(p);
		return status;
	}
	p->pending = fresh;
	p->pending_tokens = fresh_tokens;
	p->pending_rows = 0;
	return AT_OK;
}

/* The writer thread: take everything queued, compress it in parallel, write
 * it, report the first error, until stopped. */
static void *background_writer(void *arg)
{
	struct at_writer *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->queue_len == 0 && !w->bg_stop)
			pthread_cond_wait(&w->work, &w->mu);
		if (w->queue_len == 0)
			break; /* stopped, and nothing left */
		struct queued_chunk *batch = w->queue;
		size_t n = w->queue_len, bytes = w->queue_bytes;
		w->queue = NULL;
		w->queue_len = w->queue_capacity = w->queue_bytes = 0;
		w->bg_busy = 1;
		pthread_mutex_unlock(&w->mu);

		struct at_error err;
		int status = write_batch(w, batch, n, &err);
		free_chunks(batch, n);
		free(batch);

		pthread_mutex_lock(&w->mu);
		if (status != AT_OK && w->bg_status == AT_OK) {
			w->bg_status = status;
			w->bg_err = err;
		}
		w->bytes_in_flight -= bytes;
		w->bg_busy = 0;
		pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Rows [row0, row0+n) of the samples of p, and their tokens; grows the extent. */
static int write_sample_rows(struct point *p, int64_t row0, int64_t n, struct at_chunk *c,
                             const int64_t *tokens, int in_place)
{
	hsize_t extent[2] = {(hsize_t)(row0 + n), (hsize_t)p->desc.channels};
	hsize_t cur[2];
	hid_t space = H5Dget_space(p->samples);
	if (space < 0)
		return -1;
	H5Sget_simple_extent_dims(space, cur, NULL);
	H5Sclose(space);
	if (extent[0] < cur[0])
		extent[0] = cur[0];
	hsize_t offset[2] = {(hsize_t)row0, 0};
	if (H5Dset_extent(p->samples, extent) < 0 ||
	    write_chunk(p->samples, offset, c, in_place) < 0 ||
	    H5Dset_extent(p->sample_tokens, extent) < 0)
		return -1;
	hsize_t start[1] = {(hsize_t)row0}, count[1] = {(hsize_t)n};
	hid_t fspace = H5Dget_space(p->sample_tokens);
	hid_t mspace = H5Screate_simple(1, count, NULL);
	int status = -1;
	if (fspace >= 0 && mspace >= 0 &&
	    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
	    H5Dwrite(p->sample_tokens, H5T_NATIVE_INT64, mspace, fspace, H5P_DEFAULT, tokens) >= 0)
		status = 0;
	if (mspace >= 0)
		H5Sclose(mspace);
	if (fspace >= 0)
		H5Sclose(fspace);
	return status;
}

/* Every chunk of a batch in its point's sample dtype (the writer thread's
 * work, so that hooks only copy bytes; over the compression threads).  A
 * chunk converts only when one point was fed several dtypes. */
static int convert_chunks(struct at_writer *w, struct queued_chunk *batch, size_t n,
                          enum at_dtype *target, struct at_error *err)
{
	for (size_t i = 0; i < n; i++)
		target[i] = settle_sample_dtype(&w->points[batch[i].point], batch[i].dtype);
	int failed = 0;
	int threads = w->opts.threads > 0 ? w->opts.threads : 0;
	(void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : omp_get_max_threads()) reduction(| : failed)
#endif
	for (size_t i = 0; i < n; i++) {
		struct queued_chunk *c = &batch[i];
		if (c->dtype == target[i])
			continue;
		size_t cells = c->chunk.raw_bytes / at_dtype_size(c->dtype);
		void *converted = malloc(cells * at_dtype_size(target[i]));
		if (!converted) {
			failed = 1;
			continue;
		}
		at_convert_run(c->chunk.raw, c->dtype, converted, target[i], cells);
		free(c->chunk.raw);
		c->chunk.raw = converted;
		c->chunk.raw_bytes = cells * at_dtype_size(target[i]);
		c->dtype = target[i];
	}
	return failed ? at_fail(err, AT_ENOMEM, "%s: out of memory", w->path) : AT_OK;
}

/* Compress chunks of 2-byte and of 4-byte elements (the byte shuffle works
 * on elements) in two parallel passes. */
static int compress_mixed(struct at_writer *w, struct queued_chunk *batch, size_t n,
                          struct at_error *err)
{
	struct at_chunk *chunks = malloc(n * sizeof *chunks);
	if (!chunks)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	int status = AT_OK;
	for (size_t elem = 2; elem <= 4 && status == AT_OK; elem += 2) {
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (at_dtype_size(batch[i].dtype) == elem)
				chunks[m++] = batch[i].chunk;
		status = m ? at_codec_compress(chunks, m, elem, w->opts.compression_level,
		                               w->opts.threads, err)
		           : AT_OK;
		m = 0;
		for (size_t i = 0; i < n; i++) /* packed buffers now belong to the batch */
			if (at_dtype_size(batch[i].dtype) == elem)
				batch[i].chunk = chunks[m++];
	}
	free(chunks);
	return status;
}

/* Compress a batch of full chunks in parallel, then hand each to HDF5 as is
 * (the writer thread; the caller's thread is kept out of HDF5 meanwhile). */
static int write_batch(struct at_writer *w, struct queued_chunk *batch, size_t n,
                       struct at_error *err)
{
	enum at_dtype *target = malloc(n * sizeof *target);
	if (!target)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	int status = convert_chunks(w, batch, n, target, err);
	free(target);
	if (status == AT_OK)
		status = compress_mixed(w, batch, n, err);
	struct h5_quiet q;
	h5_quiet_begin(&q);
	int64_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += chunk_reserve_bytes(batch[i].chunk.packed_bytes) +
		         w->points[batch[i].point].chunk_rows * (int64_t)sizeof(int64_t);
	if (status == AT_OK && reserve_space(w, bytes) < 0)
		status = io_fail(w, err, "write samples");
	for (size_t i = 0; i < n && status == AT_OK; i++) {
		struct queued_chunk *c = &batch[i];
		struct point *p = &w->points[c->point];
		if (samples_dataset(w, p) < 0 ||
		    write_sample_rows(p, c->index * p->chunk_rows, p->chunk_rows, &c->chunk,
		                      c->tokens, w->swmr) < 0)
			status = at_fail(err, AT_EIO, "%s: cannot write samples of '%s'", w->path,
			                 p->desc.name);
	}
	h5_quiet_end(&q);
	return status;
}

/* The partial chunk of a point, zero-padded, so that a checkpoint holds every
 * row sampled so far; it is rewritten whole once it fills up.  A point that
 * sampled nothing gets no `samples` before the last checkpoint, so that its
 * first rows still choose the dtype, and an empty float32 one there. */
static int write_partial_chunk(struct at_writer *w, struct point *p, int last,
                               struct at_error *err)
{
	if (p->pending_rows == 0 && !p->dtype_set && !last)
		return AT_OK;
	enum at_dtype dtype = settle_sample_dtype(p, p->pending_rows ? p->pending_dtype : AT_F32);
	if (samples_dataset(w, p) < 0)
		return io_fail(w, err, "create the samples of '%s'", p->desc.name);
	if (p->pending_rows == 0)
		return AT_OK;
	size_t elem = at_dtype_size(dtype);
	size_t filled = (size_t)(p->pending_rows * p->desc.channels);
	size_t total = (size_t)(p->chunk_rows * p->desc.channels);
	unsigned char *rows = malloc(total * elem);
	if (!rows)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	at_convert_run(p->pending, p->pending_dtype, rows, dtype, filled);
	memset(rows + filled * elem, 0, (total - filled) * elem);
	struct at_chunk chunk = {.raw = rows, .raw_bytes = total * elem};
	int status = at_codec_compress(&chunk, 1, elem, w->opts.compression_level,
	                               w->opts.threads, err);
	free(rows);
	if (status == AT_OK &&
	    reserve_space(w, chunk_reserve_bytes(chunk.packed_bytes) + p->pending_rows * 8) < 0)
		status = io_fail(w, err, "write samples of '%s'", p->desc.name);
	if (status == AT_OK && write_sample_rows(p, p->chunks_queued * p->chunk_rows,
	                                         p->pending_rows, &chunk, p->pending_tokens,
	                                         w->swmr) < 0)
		status = at_fail(err, AT_EIO, "%s: cannot write samples of '%s'", w->path,
		                 p->desc.name);
	free(chunk.packed);
	return status;
}

/* A reservoir's rows, in token order, over `samples` from row 0: the rows
 * kept only grow in number, so every checkpoint rewrites the dataset whole
 * and its extent never shrinks. */
static int write_reservoir(struct at_writer *w, struct point *p, int last, struct at_error *err)
{
	int64_t n = reservoir_rows(p->reservoir), c = p->desc.channels, R = p->chunk_rows;
	if (n == 0 && !last)
		return AT_OK;
	enum at_dtype dtype = settle_sample_dtype(p, reservoir_dtype(p->reservoir));
	if (samples_dataset(w, p) < 0)
		return io_fail(w, err, "create the samples of '%s'", p->desc.name);
	if (n == 0)
		return AT_OK;
	size_t elem = at_dtype_size(dtype);
	int64_t nchunks = (n + R - 1) / R;
	unsigned char *rows = calloc((size_t)(nchunks * R * c), elem);
	int64_t *tokens = malloc((size_t)n * sizeof *tokens);
	struct at_chunk *chunks = calloc((size_t)nchunks, sizeof *chunks);
	int status = rows && tokens && chunks && reservoir_sorted(p->reservoir, rows, tokens) == 0
	                 ? AT_OK
	                 : at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	for (int64_t i = 0; i < nchunks && status == AT_OK; i++)
		chunks[i] = (struct at_chunk){.raw = rows + (size_t)(i * R * c) * elem,
		                              .raw_bytes = (size_t)(R * c) * elem};
	if (status == AT_OK)
		status = at_codec_compress(chunks, (size_t)nchunks, elem, w->opts.compression_level,
		                           w->opts.threads, err);
	int64_t bytes = n * 8;
	for (int64_t i = 0; i < nchunks && status == AT_OK; i++)
		bytes += chunk_reserve_bytes(chunks[i].packed_bytes);
	if (status == AT_OK && reserve_space(w, bytes) < 0)
		status = io_fail(w, err, "write samples of '%s'", p->desc.name);
	for (int64_t i = 0; i < nchunks && status == AT_OK; i++) {
		int64_t in_chunk = n - i * R < R ? n - i * R : R;
		if (write_sample_rows(p, i * R, in_chunk, &chunks[i], tokens + i * R, w->swmr) < 0)
			status = io_fail(w, err, "write samples of '%s'", p->desc.name);
	}
	for (int64_t i = 0; chunks && i < nchunks; i++)
		free(chunks[i].packed);
	free(chunks);
	free(tokens);
	free(rows);
	return status;
}

static int token_selected(const struct at_writer *w, int64_t token, struct at_error *err,
                          int *selected)
{
	int64_t n = w->opts.sample_n;
	if (w->opts.sample_policy == AT_SAMPLE_EVERY) {
		*selected = token % n == 0;
		return AT_OK;
	}
	if (token < 0 || token >= w->ntokens)
		return at_fail(err, AT_EINVAL,
		               "%s: sampling the first tokens of each sequence needs token %lld in "
		               "/tokens (add tokens before observing)",
		               w->path, (long long)token);
	*selected = w->token_pos[token] < n;
	return AT_OK;
}

/* n values of dtype, in place, as float32, from the last (each float is
 * written over values already read). */
static void widen_in_place(unsigned char *buf, enum at_dtype dtype, int64_t n)
{
	for (int64_t i = n - 1; i >= 0; i--)
		((float *)buf)[i] = at_load(buf, dtype, i);
}

/* Row r of batch b of t onto p's pending chunk as its bytes are: the first
 * row of a chunk sets the chunk's dtype, and the writer thread widens it
 * (hooks only copy).  A row of another dtype (one point fed two dtypes)
 * widens the chunk to float32 here first. */
static void pending_append(struct point *p, const struct at_tensor *t, int64_t b, int64_t r)
{
	int64_t c = t->channels, base = b * t->batch_stride + r * t->row_stride;
	if (p->pending_rows == 0)
		p->pending_dtype = t->dtype;
	if (t->dtype != p->pending_dtype) {
		widen_in_place(p->pending, p->pending_dtype, p->pending_rows * c);
		p->pending_dtype = AT_F32;
	}
	size_t es = at_dtype_size(p->pending_dtype);
	unsigned char *dst = p->pending + (size_t)(p->pending_rows * c) * es;
	at_convert_strided(t->data, t->dtype, base, t->channel_stride, dst, p->pending_dtype, c);
}

/* Offer every row of t to p's reservoir (the policy keeps what it keeps). */
static int offer_rows(struct at_writer *w, struct point *p, const struct at_tensor *t,
                      int64_t token_base, struct at_error *err)
{
	for (int64_t b = 0; b < t->batches; b++) {
		for (int64_t r = 0; r < t->rows; r++) {
			int64_t token = token_base + b * t->rows + r;
			if (reservoir_offer(p->reservoir, reservoir_key(w->opts.sample_seed, token), token,
			                    t->data, t->dtype, b * t->batch_stride + r * t->row_stride,
			                    t->channel_stride) < 0)
				return at_fail(err, AT_ENOMEM, "%s: out of memory for the reservoir of '%s'",
				               w->path, p->desc.name);
		}
	}
	return AT_OK;
}

static int sample_rows(struct at_writer *w, int32_t point_id, const struct at_tensor *t,
                       int64_t token_base, struct at_error *err)
{
	struct point *p = &w->points[point_id];
	if (p->reservoir)
		return offer_rows(w, p, t, token_base, err);
	for (int64_t b = 0; b < t->batches; b++) {
		for (int64_t r = 0; r < t->rows; r++) {
			int64_t token = token_base + b * t->rows + r;
			int selected = 0, status = token_selected(w, token, err, &selected);
			if (status)
				return status;
			if (!selected)
				continue;
			if (p->samples_taken >= w->opts.max_samples) {
				p->samples_dropped++;
				continue;
			}
			pending_append(p, t, b, r);
			p->pending_tokens[p->pending_rows++] = token;
			p->samples_taken++;
			if (p->pending_rows == p->chunk_rows && (status = queue_push(w, point_id, err)))
				return status;
		}
	}
	return AT_OK;
}

int at_writer_observe(struct at_writer *w, int32_t point, const struct at_tensor *t,
                      int64_t token_base, struct at_error *err)
{
	if (point < 0 || point >= w->npoints)
		return at_fail(err, AT_EINVAL, "%s: no point with id %d", w->path, (int)point);
	struct point *p = &w->points[point];
	int status = at_tensor_check(t, err);
	if (status)
		return status;
	if (t->channels != p->desc.channels)
		return at_fail(err, AT_EINVAL, "%s: point '%s' has %lld channels, tensor has %lld",
		               w->path, p->desc.name, (long long)p->desc.channels,
		               (long long)t->channels);
	/* Refuse before touching the statistics, so a failed call changes nothing. */
	if (w->opts.sample_policy == AT_SAMPLE_FIRST &&
	    (token_base < 0 || token_base + t->batches * t->rows > w->ntokens))
		return at_fail(err, AT_EINVAL,
		               "%s: sampling the first tokens of each sequence needs tokens "
		               "[%lld, %lld) in /tokens (add tokens before observing)",
		               w->path, (long long)token_base,
		               (long long)(token_base + t->batches * t->rows));
	w->observed = 1;
	status = at_stats_add(&p->stats, t, token_base, err);
	if (status == AT_OK && w->opts.sample_policy != AT_SAMPLE_NONE) {
		pthread_mutex_lock(&w->sample_mu); /* the device path's thread may hand in rows */
		status = sample_rows(w, point, t, token_base, err); /* no HDF5: the writer thread's */
		pthread_mutex_unlock(&w->sample_mu);
	}
	return status;
}

/* ---------------------------------------------------------------- statistics */

/* The file type is packed little-endian, whatever the host's padding. */
static hid_t extremes_file_type(void)
{
	hid_t type = H5Tcreate(H5T_COMPOUND, 8 + 8 + 4);
	if (type < 0)
		return -1;
	if (H5Tinsert(type, "value", 0, H5T_IEEE_F64LE) < 0 ||
	    H5Tinsert(type, "token", 8, H5T_STD_I64LE) < 0 ||
	    H5Tinsert(type, "channel", 16, H5T_STD_I32LE) < 0) {
		H5Tclose(type);
		return -1;
	}
	return type;
}

static int write_extremes(struct at_writer *w, struct point *p, hid_t group)
{
	const struct at_stats *s = &p->stats;
	hsize_t dims[1] = {(hsize_t)s->n_extremes};
	hid_t mtype = h5_extremes_mem_type(), ftype = extremes_file_type(), dset = -1;
	int status = -1;
	if (mtype < 0 || ftype < 0)
		goto done;
	if (H5Lexists(group, "extremes", H5P_DEFAULT) > 0) {
		dset = H5Dopen2(group, "extremes", H5P_DEFAULT);
		if (dset < 0 || H5Dset_extent(dset, dims) < 0)
			goto done;
	} else {
		hsize_t maxdims[1] = {(hsize_t)w->opts.extremes};
		hsize_t chunk[1] = {(hsize_t)(w->opts.extremes > 0 ? w->opts.extremes : 1)};
		dset = h5_create_compressed(group, "extremes", ftype, 1, dims, maxdims, chunk,
		                            w->opts.compression_level);
		if (dset < 0)
			goto done;
	}
	status = s->n_extremes == 0 ||
	                 H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->extremes) >= 0
	             ? 0
	             : -1;
done:
	if (dset >= 0)
		H5Dclose(dset);
	if (ftype >= 0)
		H5Tclose(ftype);
	if (mtype >= 0)
		H5Tclose(mtype);
	return status;
}

/* The per-channel datasets of a point: name, file type, memory array, and
 * the bytes one channel takes in it. */
struct stat_dataset {
	const char *name;
	hid_t file_type;
	const void *values;
	size_t channel_bytes;
	int is_hist;
};

static int stat_datasets(const struct at_stats *s, struct stat_dataset *out)
{
	const struct stat_dataset all[] = {
		{"count", H5T_STD_U64LE, s->count, 8, 0},
		{"nonfinite", H5T_STD_U64LE, s->nonfinite, 8, 0},
		{"mean", H5T_IEEE_F64LE, s->mean, 8, 0},
		{"m2", H5T_IEEE_F64LE, s->m2, 8, 0},
		{"m3", H5T_IEEE_F64LE, s->m3, 8, 0},
		{"m4", H5T_IEEE_F64LE, s->m4, 8, 0},
		{"min", H5T_IEEE_F64LE, s->min, 8, 0},
		{"max", H5T_IEEE_F64LE, s->max, 8, 0},
		{"absmax", H5T_IEEE_F64LE, s->absmax, 8, 0},
		{"abssum", H5T_IEEE_F64LE, s->abssum, 8, 0},
		{"hist", H5T_STD_U32LE, s->hist, 4 * AT_HIST_BINS, 1},
	};
	int n = 0;
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (all[i].values)
			out[n++] = all[i];
	return n;
}

static int64_t chunk_channels(const struct stat_dataset *d, int64_t channels)
{
	int64_t most = d->is_hist ? HIST_CHUNK_CHANNELS : VECTOR_CHUNK;
	return channels < most ? channels : most;
}

/* Create the datasets empty: chunks never written read as the fill value,
 * which is what an empty accumulator holds (NaN for min, max, absmax). */
static int create_point_stats(struct at_writer *w, struct point *p, hid_t group)
{
	static const double nan_fill = NAN;
	struct stat_dataset sets[16];
	int n = stat_datasets(&p->stats, sets);
	int64_t c = p->desc.channels;
	for (int i = 0; i < n; i++) {
		const struct stat_dataset *d = &sets[i];
		hsize_t dims[2] = {(hsize_t)c, AT_HIST_BINS};
		hsize_t chunk[2] = {(hsize_t)chunk_channels(d, c), AT_HIST_BINS};
		int nan_filled = !strcmp(d->name, "min") || !strcmp(d->name, "max") ||
		                 !strcmp(d->name, "absmax");
		hid_t dset = h5_create_filled(group, d->name, d->file_type, d->is_hist ? 2 : 1, dims,
		                              NULL, chunk, w->opts.compression_level, H5T_NATIVE_DOUBLE,
		                              nan_filled ? &nan_fill : NULL);
		if (dset < 0)
			return -1;
		int status = 0;
		if (d->is_hist) {
			double edges[AT_HIST_BINS];
			for (int b = 0; b < AT_HIST_BINS; b++)
				edges[b] = at_hist_lower_edge(b);
			status = h5_attr_put_doubles(dset, "lower_edges", edges, AT_HIST_BINS);
		}
		H5Dclose(dset);
		if (status < 0)
			return -1;
	}
	return write_extremes(w, p, group);
}

/* One chunk of a statistics dataset on its way to the file. */
struct stat_chunk {
	int32_t point;
	const char *name; /* a string literal of stat_datasets() */
	int is_hist;
	hsize_t offset;
	struct at_chunk chunk;
	int padded; /* raw is a private zero-padded copy (the last, short chunk) */
};

struct stat_batch {
	struct stat_chunk *items;
	size_t n, capacity;
	int slot; /* 0: the point groups' datasets, 1: their shadows' */
};

static hid_t slot_group(const struct point *p, int slot)
{
	return slot ? p->shadow : p->group;
}

static int batch_add(struct stat_batch *b, int32_t point, const struct stat_dataset *d,
                     int64_t channels, int64_t first)
{
	if (b->n == b->capacity) {
		size_t cap = b->capacity ? 2 * b->capacity : 256;
		struct stat_chunk *grown = realloc(b->items, cap * sizeof *grown);
		if (!grown)
			return -1;
		b->items = grown;
		b->capacity = cap;
	}
	int64_t rows = chunk_channels(d, channels);
	int64_t have = channels - first < rows ? channels - first : rows;
	size_t bytes = (size_t)rows * d->channel_bytes;
	struct stat_chunk *sc = &b->items[b->n];
	*sc = (struct stat_chunk){.point = point, .name = d->name, .is_hist = d->is_hist,
	                          .offset = (hsize_t)first};
	const char *src = (const char *)d->values + (size_t)first * d->channel_bytes;
	if (have < rows) { /* direct chunk writes take whole chunks */
		if (!(sc->chunk.raw = calloc(1, bytes)))
			return -1;
		memcpy(sc->chunk.raw, src, (size_t)have * d->channel_bytes);
		sc->padded = 1;
	} else {
		sc->chunk.raw = (void *)src; /* only read by the codec */
	}
	sc->chunk.raw_bytes = bytes;
	b->n++;
	return 0;
}

static void batch_clear(struct stat_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		if (b->items[i].padded)
			free(b->items[i].chunk.raw);
		free(b->items[i].chunk.packed);
	}
	b->n = 0;
}

/* Compress the batch's chunks of one element size in parallel. */
static int batch_compress(struct at_writer *w, struct stat_batch *b, size_t elem_size,
                          int want_hist, struct at_error *err)
{
	struct at_chunk *chunks = malloc((b->n + 1) * sizeof *chunks);
	size_t *where = malloc((b->n + 1) * sizeof *where);
	size_t n = 0;
	int status = AT_OK;
	if (!chunks || !where)
		status = at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	for (size_t i = 0; i < b->n && !status; i++) {
		if (b->items[i].is_hist == want_hist) {
			where[n] = i;
			chunks[n++] = b->items[i].chunk;
		}
	}
	if (!status && n)
		status = at_codec_compress(chunks, n, elem_size, w->opts.compression_level,
		                           w->opts.threads, err);
	for (size_t j = 0; chunks && where && j < n; j++)
		b->items[where[j]].chunk = chunks[j];
	free(chunks);
	free(where);
	return status;
}

static int batch_write(struct at_writer *w, struct stat_batch *b, struct at_error *err)
{
	int status = batch_compress(w, b, 8, 0, err);
	if (!status)
		status = batch_compress(w, b, 4, 1, err);
	int64_t bytes = 0;
	for (size_t i = 0; i < b->n; i++)
		bytes += chunk_reserve_bytes(b->items[i].chunk.packed_bytes);
	if (!status && reserve_space(w, bytes) < 0)
		status = io_fail(w, err, "write the checkpoint");
	for (size_t i = 0; i < b->n && !status; i++) {
		struct stat_chunk *sc = &b->items[i];
		struct point *p = &w->points[sc->point];
		hid_t dset = H5Dopen2(slot_group(p, b->slot), sc->name, H5P_DEFAULT);
		hsize_t offset[2] = {sc->offset, 0};
		if (dset < 0 || write_chunk(dset, offset, &sc->chunk, w->swmr) < 0)
			status = io_fail(w, err, "write statistics of '%s'", p->desc.name);
		if (dset >= 0)
			H5Dclose(dset);
	}
	batch_clear(b);
	return status;
}

/* Every point's statistics into one slot, as chunks compressed in parallel
 * and written directly, in batches of about STATS_BATCH_BYTES. */
static int write_all_stats(struct at_writer *w, int slot, struct at_error *err)
{
	struct stat_batch batch = {.slot = slot};
	size_t batch_bytes = 0;
	int status = AT_OK;
	for (int32_t i = 0; i < w->npoints && !status; i++) {
		struct point *p = &w->points[i];
		struct stat_dataset sets[16];
		int n = stat_datasets(&p->stats, sets);
		for (int d = 0; d < n && !status; d++) {
			int64_t step = chunk_channels(&sets[d], p->desc.channels);
			for (int64_t first = 0; first < p->desc.channels && !status; first += step) {
				if (batch_add(&batch, i, &sets[d], p->desc.channels, first) < 0)
					status = at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
				batch_bytes += (size_t)step * sets[d].channel_bytes;
			}
		}
		if (!status && write_extremes(w, p, slot_group(p, slot)) < 0)
			status = io_fail(w, err, "write statistics of '%s'", p->desc.name);
		if (!status && (batch_bytes >= STATS_BATCH_BYTES || i == w->npoints - 1)) {
			status = batch_write(w, &batch, err);
			batch_bytes = 0;
		}
	}
	batch_clear(&batch);
	free(batch.items);
	return status;
}

/* ---------------------------------------------------------------- weights */

/* absmax and mean |w| along each of n lines of len elements, and the sum
 * of w^2 where sumsq is not NULL: element j of line i is at
 * i * line_step + j * step.  Rows and columns alike. */
static void summarise_lines(const struct at_tensor *t, int64_t n, int64_t line_step,
                            int64_t len, int64_t step, double *absmax, double *absmean,
                            double *sumsq)
{
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < n; i++) {
		double mx = 0, sum = 0, sq = 0;
		for (int64_t j = 0; j < len; j++) {
			double a = fabs((double)at_load(t->data, t->dtype, i * line_step + j * step));
			mx = a > mx ? a : mx;
			sum += a;
			sq += a * a;
		}
		absmax[i] = mx;
		absmean[i] = sum / (double)len;
		if (sumsq)
			sumsq[i] = sq;
	}
}

static int write_weight(struct at_writer *w, hid_t g, const struct at_weight_summary *s)
{
	int level = w->opts.compression_level;
	hsize_t rdims[1] = {(hsize_t)s->rows}, cdims[1] = {(hsize_t)s->cols};
	hsize_t rchunk[1] = {rdims[0] < VECTOR_CHUNK ? rdims[0] : VECTOR_CHUNK};
	hsize_t cchunk[1] = {cdims[0] < VECTOR_CHUNK ? cdims[0] : VECTOR_CHUNK};
	if (h5_put_compressed(g, "row_absmax", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, rdims, rchunk,
	                      level, s->row_absmax) < 0 ||
	    h5_put_compressed(g, "row_absmean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, rdims,
	                      rchunk, level, s->row_absmean) < 0 ||
	    h5_put_compressed(g, "col_absmax", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, cdims, cchunk,
	                      level, s->col_absmax) < 0 ||
	    h5_put_compressed(g, "col_absmean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, cdims,
	                      cchunk, level, s->col_absmean) < 0)
		return -1;
	if (s->row_sumsq && h5_put_compressed(g, "row_sumsq", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1,
	                                      rdims, rchunk, level, s->row_sumsq) < 0)
		return -1;
	if (s->rows != 1)
		return 0;
	return h5_put_compressed(g, "values", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, cdims, cchunk,
	                         level, s->values);
}

int at_writer_add_weight_summary(struct at_writer *w, const char *module,
                                 const char *module_class, const struct at_weight_summary *s,
                                 struct at_error *err)
{
	if (!module || !*module || strchr(module, '/'))
		return at_fail(err, AT_EINVAL, "%s: weight module name '%s' is empty or has '/'",
		               w->path, module ? module : "");
	if (!s || s->rows < 1 || s->cols < 1 || !s->row_absmax || !s->row_absmean ||
	    !s->col_absmax || !s->col_absmean || (s->rows == 1 && !s->values))
		return at_fail(err, AT_EINVAL,
		               "%s: weight '%s': a summary needs rows, cols >= 1, the four line "
		               "statistics, and the values of a vector",
		               w->path, module);
	int status = drain(w, err); /* HDF5 below: the writer thread must be idle */
	if (status)
		return status;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	int64_t weight_bytes = (s->rows + s->cols) * 2 * (int64_t)sizeof(double) * 65 / 64;
	hid_t weights = leave_swmr(w) == 0 && reserve_space(w, weight_bytes) == 0
	                    ? H5Gopen2(w->file, "weights", H5P_DEFAULT)
	                    : -1;
	hid_t g = -1;
	if (weights >= 0 && H5Lexists(weights, module, H5P_DEFAULT) > 0)
		status = at_fail(err, AT_EINVAL, "%s: weight '%s' added twice", w->path, module);
	else if (weights < 0 ||
	         (g = create_group(weights, module)) < 0 ||
	         h5_attr_put_string(g, "module_class", module_class ? module_class : "") < 0 ||
	         h5_attr_put_int(g, "rows", H5T_STD_I64LE, s->rows) < 0 ||
	         h5_attr_put_int(g, "cols", H5T_STD_I64LE, s->cols) < 0 || write_weight(w, g, s) < 0)
		status = at_fail(err, AT_EIO, "%s: cannot write weight '%s'", w->path, module);
	if (g >= 0)
		H5Gclose(g);
	if (weights >= 0)
		H5Gclose(weights);
	h5_quiet_end(&q);
	if (status == AT_OK)
		w->weights++;
	return status;
}

int at_writer_add_weight(struct at_writer *w, const char *module, const char *module_class,
                         const struct at_tensor *t, struct at_error *err)
{
	int status = at_tensor_check(t, err);
	if (status)
		return status;
	if (t->batches != 1 || t->rows < 1)
		return at_fail(err, AT_EINVAL, "%s: weight '%s' must be one matrix (batches=1)",
		               w->path, module ? module : "");
	double *row_absmax = malloc((size_t)t->rows * sizeof(double));
	double *row_absmean = malloc((size_t)t->rows * sizeof(double));
	double *row_sumsq = malloc((size_t)t->rows * sizeof(double));
	double *col_absmax = malloc((size_t)t->channels * sizeof(double));
	double *col_absmean = malloc((size_t)t->channels * sizeof(double));
	float *values = t->rows == 1 ? malloc((size_t)t->channels * sizeof(float)) : NULL;
	if (!row_absmax || !row_absmean || !row_sumsq || !col_absmax || !col_absmean ||
	    (t->rows == 1 && !values)) {
		status = at_fail(err, AT_ENOMEM, "%s: out of memory", w->path);
	} else {
		summarise_lines(t, t->rows, t->row_stride, t->channels, t->channel_stride, row_absmax,
		                row_absmean, row_sumsq);
		summarise_lines(t, t->channels, t->channel_stride, t->rows, t->row_stride, col_absmax,
		                col_absmean, NULL);
		if (values)
			at_load_run(t->data, t->dtype, 0, t->channel_stride, t->channels, values);
		struct at_weight_summary s = {t->rows,   t->channels, row_absmax, row_absmean,
		                              col_absmax, col_absmean, values,    row_sumsq};
		status = at_writer_add_weight_summary(w, module, module_class, &s, err);
	}
	free(row_absmax);
	free(row_absmean);
	free(row_sumsq);
	free(col_absmax);
	free(col_absmean);
	free(values);
	return status;
}

/* ---------------------------------------------------------------- crash safety */

/* Copy a closed file, whole (leave_swmr's; rare, see there). */
static int copy_file(const char *from, const char *to)
{
	enum { BUF_BYTES = 1 << 20 };
	int in = open(from, O_RDONLY);
	int out = in >= 0 ? open(to, O_WRONLY | O_CREAT | O_TRUNC, 0666) : -1;
	char *buf = malloc(BUF_BYTES);
	int status = in >= 0 && out >= 0 && buf ? 0 : -1;
	while (status == 0) {
		ssize_t n = read(in, buf, BUF_BYTES);
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		for (ssize_t done = 0; n > 0 && done < n;) {
			ssize_t m = write(out, buf + done, (size_t)(n - done));
			if (m < 0 && errno != EINTR) {
				status = -1;
				break;
			}
			done += m > 0 ? m : 0;
		}
		if (n < 0)
			status = -1;
	}
	int e = errno;
	free(buf);
	if (out >= 0 && close(out) != 0 && status == 0)
		status = -1, e = errno;
	if (in >= 0)
		close(in);
	errno = e;
	return status;
}

/* The writer's handles on a reopened file; a point not created yet (its
 * add_point is under way) has none. */
static int reopen_handles(struct at_writer *w)
{
	hid_t points = H5Gopen2(w->file, "points", H5P_DEFAULT);
	hid_t shadows = w->has_state ? H5Gopen2(w->file, "checkpoint/points", H5P_DEFAULT) : -1;
	w->tokens_group = H5Gopen2(w->file, "tokens", H5P_DEFAULT);
	int bad = points < 0 || w->tokens_group < 0 || (w->has_state && shadows < 0);
	for (int32_t i = 0; i < w->npoints && !bad; i++) {
		struct point *p = &w->points[i];
		const char *name = p->desc.name;
		if (H5Lexists(points, name, H5P_DEFAULT) <= 0)
			continue;
		bad |= (p->group = H5Gopen2(points, name, H5P_DEFAULT)) < 0;
		if (!bad && shadows >= 0 && H5Lexists(shadows, name, H5P_DEFAULT) > 0)
			bad |= (p->shadow = H5Gopen2(shadows, name, H5P_DEFAULT)) < 0;
		if (!bad && H5Lexists(p->group, "sample_tokens", H5P_DEFAULT) > 0)
			bad |= (p->sample_tokens = H5Dopen2(p->group, "sample_tokens", H5P_DEFAULT)) < 0;
		if (!bad && H5Lexists(p->group, "samples", H5P_DEFAULT) > 0)
			bad |= (p->samples = H5Dopen2(p->group, "samples", H5P_DEFAULT)) < 0;
	}
	if (shadows >= 0)
		H5Gclose(shadows);
	if (points >= 0)
		H5Gclose(points);
	return bad ? -1 : 0;
}

/* Make the file one that objects may be created in.  In SWMR mode they may
 * not be, and the file is PATH, which must keep the last checkpoint: so
 * close it (which clears SWMR's mark), copy it to PATH.part and go on there;
 * the next checkpoint switches the copy to SWMR and renames it over PATH.
 * A capture adds everything before its first checkpoint, so this is rare
 * (acttrace-format(5), CRASH-SAFE CHECKPOINTS, 3). */
static int leave_swmr(struct at_writer *w)
{
	if (!w->swmr)
		return 0;
	close_handles(w);
	int failed = close_file(w) < 0;
	w->swmr = 0; /* from here on the file is PATH.part */
	if (failed || copy_file(w->path, w->part_path) < 0)
		return -1;
	hid_t fapl = file_access();
	w->file = fapl >= 0 ? H5Fopen(w->part_path, H5F_ACC_RDWR, fapl) : -1;
	if (fapl >= 0)
		H5Pclose(fapl);
	return w->file < 0 || reopen_handles(w) < 0 ? -1 : 0;
}

/* /checkpoint/state: int64 [3], contiguous and allocated now, so that
 * committing a checkpoint is one write of 24 bytes at a fixed place. */
static int create_state(hid_t checkpoint)
{
	static const int64_t none[3] = {0, 0, 0};
	hsize_t dims[1] = {3};
	hid_t space = H5Screate_simple(1, dims, NULL);
	hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
	hid_t d = -1;
	if (space >= 0 && dcpl >= 0 && H5Pset_layout(dcpl, H5D_CONTIGUOUS) >= 0 &&
	    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) >= 0)
		d = H5Dcreate2(checkpoint, "state", H5T_STD_I64LE, space, H5P_DEFAULT, dcpl,
		               H5P_DEFAULT);
	int status = d >= 0 && H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, none) >= 0
	                 ? 0
	                 : -1;
	if (d >= 0)
		H5Dclose(d);
	if (dcpl >= 0)
		H5Pclose(dcpl);
	if (space >= 0)
		H5Sclose(space);
	return status;
}

/* /checkpoint, its state and every point's slot 1, where missing: created
 * at the first checkpoint (a trace closed without one never has them), and
 * for points added since, before the file switches to SWMR. */
static int ensure_slots(struct at_writer *w)
{
	hid_t checkpoint = -1, shadows = -1;
	if (!w->has_state) {
		checkpoint = create_group(w->file, "checkpoint");
		shadows = checkpoint >= 0 ? create_group(checkpoint, "points") : -1;
		if (shadows < 0 || create_state(checkpoint) < 0) {
			if (shadows >= 0)
				H5Gclose(shadows);
			if (checkpoint >= 0)
				H5Gclose(checkpoint);
			return -1;
		}
		w->has_state = 1;
	} else {
		shadows = H5Gopen2(w->file, "checkpoint/points", H5P_DEFAULT);
	}
	int bad = shadows < 0;
	for (int32_t i = 0; i < w->npoints && !bad; i++) {
		struct point *p = &w->points[i];
		if (p->shadow >= 0)
			continue;
		p->shadow = create_group(shadows, p->desc.name);
		bad = p->shadow < 0 || create_point_stats(w, p, p->shadow) < 0;
	}
	if (shadows >= 0)
		H5Gclose(shadows);
	if (checkpoint >= 0)
		H5Gclose(checkpoint);
	return bad ? -1 : 0;
}

/* Name `slot` as the valid one, once everything it holds is in the file:
 * flush, one write of the state, flush.  A kill before the second flush
 * completes leaves the state naming the old slot, untouched since its own
 * checkpoint. */
static int commit_slot(struct at_writer *w, int slot, struct at_error *err)
{
	if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
		return io_fail(w, err, "flush the file");
	int64_t state[3] = {slot, w->checkpoints + 1, w->tokens_written};
	hid_t d = H5Dopen2(w->file, "checkpoint/state", H5P_DEFAULT);
	int bad = d < 0 || H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, state) < 0;
	if (d >= 0 && H5Dclose(d) < 0)
		bad = 1;
	if (bad || H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
		return io_fail(w, err, "write the checkpoint's state");
	w->valid_slot = slot;
	w->checkpoints++;
	return AT_OK;
}

/* The statistics into `slot`, then named valid (when the file has slots). */
static int write_slot(struct at_writer *w, int slot, struct at_error *err)
{
	int status = write_all_stats(w, slot, err);
	return status == AT_OK && w->has_state ? commit_slot(w, slot, err) : status;
}

/* Rewritten in place: sample bookkeeping, outside the slots (samples are
 * not part of the guarantee, acttrace-format(5)). */
static int write_samples_dropped(struct at_writer *w, struct at_error *err)
{
	for (int32_t i = 0; i < w->npoints; i++) {
		struct point *p = &w->points[i];
		if (h5_attr_rewrite_int(p->group, "samples_dropped", p->samples_dropped) < 0 ||
		    h5_attr_rewrite_int(p->group, "samples_dropped_busy", p->samples_dropped_busy) < 0)
			return io_fail(w, err, "write statistics of '%s'", p->desc.name);
	}
	return AT_OK;
}

/* PATH.part, checkpointed, becomes PATH in SWMR mode: from here on a kill
 * leaves a readable file. */
static int switch_to_swmr(struct at_writer *w, struct at_error *err)
{
	if (H5Fstart_swmr_write(w->file) < 0)
		return io_fail(w, err, "switch the file to SWMR mode");
	if (rename(w->part_path, w->path) != 0)
		return at_fail(err, AT_EIO, "%s: cannot rename %s to it: %s", w->path, w->part_path,
		               strerror(errno));
	w->swmr = 1;
	return AT_OK;
}

/* ---------------------------------------------------------------- checkpoint, close */

/* The statistics of a checkpoint go to the slot that is not valid; the
 * final ones (last) to slot 0, by way of slot 1 when slot 0 is the valid
 * one in a file that a reader may see. */
static int write_statistics(struct at_writer *w, int last, struct at_error *err)
{
	if (!last)
		return write_slot(w, w->has_state ? 1 - w->valid_slot : 0, err);
	int status = AT_OK;
	if (w->swmr && w->has_state && w->valid_slot == 0)
		status = write_slot(w, 1, err);
	return status == AT_OK ? write_slot(w, 0, err) : status;
}

/* An upper bound of what a checkpoint adds to the file (reserve_space)
 * besides the compressed chunks, which are reserved once compressed: its
 * new tokens as if compression gained nothing, the extremes, and room for
 * the datasets' headers and indexes. */
static int64_t checkpoint_bytes(const struct at_writer *w, int last)
{
	int slots = last && w->swmr && w->has_state && w->valid_slot == 0 ? 2 : 1;
	int64_t bytes = (w->ntokens - w->tokens_written) * 3 * (int64_t)sizeof(int32_t);
	for (int32_t i = 0; i < w->npoints; i++)
		bytes += slots * (int64_t)w->opts.extremes * 20 + 16 * CHUNK_INDEX_BYTES;
	return bytes + bytes / 64;
}

/* Called without h5_quiet: the extension's flush may queue sample chunks,
 * and the writer thread must be drained before this thread calls HDF5. */
static int checkpoint(struct at_writer *w, int last, struct at_error *err)
{
	int status = w->ext ? w->ext->flush(w, err) : AT_OK;
	struct at_error drain_err;
	int drained = drain(w, &drain_err);
	if (status == AT_OK && drained != AT_OK) {
		status = drained;
		*err = drain_err;
	}
	struct h5_quiet q;
	h5_quiet_begin(&q);
	if (status == AT_OK && w->file < 0)
		status = at_fail(err, AT_EIO, "%s: the file was lost to an earlier error", w->path);
	if (status == AT_OK && reserve_space(w, checkpoint_bytes(w, last)) < 0)
		status = io_fail(w, err, "write the checkpoint");
	for (int32_t i = 0; i < w->npoints && status == AT_OK; i++) {
		struct point *p = &w->points[i];
		if (p->reservoir)
			status = write_reservoir(w, p, last, err);
		else if (p->sample_tokens >= 0)
			status = write_partial_chunk(w, p, last, err);
	}
	if (status == AT_OK && write_tokens(w) < 0)
		status = io_fail(w, err, "write /tokens");
	if (status == AT_OK && !last && !w->swmr && ensure_slots(w) < 0)
		status = io_fail(w, err, "create the checkpoint's second slot");
	if (status == AT_OK)
		status = write_statistics(w, last, err);
	if (status == AT_OK)
		status = write_samples_dropped(w, err);
	if (status == AT_OK && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
		status = io_fail(w, err, "flush the file");
	if (status == AT_OK && !last && !w->swmr)
		status = switch_to_swmr(w, err);
	if (status == AT_OK)
		w->observed = 0;
	h5_quiet_end(&q);
	return status;
}

int at_writer_checkpoint(struct at_writer *w, struct at_error *err)
{
	return checkpoint(w, 0, err);
}

/* complete = 1 is rewritten in place, like samples_dropped, so that a file
 * in SWMR mode stays one; a file never switched is renamed to PATH once
 * closed. */
int at_writer_close(struct at_writer *w, struct at_error *err)
{
	if (!w)
		return AT_OK;
	int status = checkpoint(w, 1, err);
	stop_background(w, 1); /* idle since the checkpoint: HDF5 is this thread's now */
	struct h5_quiet q;
	h5_quiet_begin(&q);
	if (status == AT_OK && h5_attr_rewrite_int(w->file, "complete", 1) < 0)
		status = io_fail(w, err, "mark the trace complete");
	close_handles(w);
	if (close_file(w) < 0 && status == AT_OK)
		status = io_fail(w, err, "close the file");
	if (status == AT_OK && !w->swmr) {
		if (rename(w->part_path, w->path) != 0)
			status = at_fail(err, AT_EIO, "%s: cannot rename %s to it: %s", w->path,
			                 w->part_path, strerror(errno));
		else
			w->swmr = 1; /* nothing left for settle_part */
	}
	if (status != AT_OK)
		w->io_failed = 1;
	writer_free(w);
	h5_quiet_end(&q);
	return status;
}

void at_writer_abandon(struct at_writer *w)
{
	if (!w)
		return;
	stop_background(w, 0); /* what was queued is lost, as with a crash */
	struct h5_quiet q;
	h5_quiet_begin(&q);
	struct at_error ignored;
	/* A writer stopped right after a checkpoint (acttrace.capture leaving by
	 * an exception) still holds that checkpoint's statistics: they go to
	 * slot 0 too, where readers that know nothing of slots look. */
	if (w->swmr && w->has_state && w->valid_slot == 1 && !w->observed && !w->io_failed &&
	    reserve_space(w, checkpoint_bytes(w, 0)) == 0)
		write_slot(w, 0, &ignored);
	writer_free(w);
	h5_quiet_end(&q);
}

/* ---------------------------------------------------------------- for device.c */

const struct at_writer_options *writer_options(const struct at_writer *w)
{
	return &w->opts;
}

const char *writer_path(const struct at_writer *w)
{
	return w->path;
}

int32_t writer_point_count(const struct at_writer *w)
{
	return w->npoints;
}

const struct at_point_desc *writer_point_desc(const struct at_writer *w, int32_t point)
{
	return point >= 0 && point < w->npoints ? &w->points[point].desc : NULL;
}

struct at_stats *writer_point_stats(struct at_writer *w, int32_t point)
{
	return &w->points[point].stats;
}

int writer_attach(struct at_writer *w, const struct writer_extension *ext, struct at_error *err)
{
	if (w->ext && w->ext != ext)
		return at_fail(err, AT_EINVAL, "%s: the writer already has another extension", w->path);
	w->ext = ext;
	return AT_OK;
}

void **writer_point_state(struct at_writer *w, int32_t point)
{
	return &w->points[point].ext_state;
}

void **writer_extension_state(struct at_writer *w)
{
	return &w->ext_state;
}

int64_t writer_tokens(const struct at_writer *w)
{
	return w->ntokens;
}

int writer_token_selected(const struct at_writer *w, int64_t token, int *selected,
                          struct at_error *err)
{
	return token_selected(w, token, err, selected);
}

uint64_t writer_sample_key(const struct at_writer *w, int64_t token)
{
	return reservoir_key(w->opts.sample_seed, token);
}

int writer_sample_bar(const struct at_writer *w, int32_t point, uint64_t *key, int64_t *token)
{
	const struct point *p = &w->points[point];
	return p->reservoir ? reservoir_bar(p->reservoir, key, token) : 0;
}

int64_t writer_sample_room(const struct at_writer *w, int32_t point)
{
	if (w->points[point].reservoir) /* no cap: what it keeps is bounded by k */
		return INT64_MAX / 4;
	int64_t room = w->opts.max_samples - w->points[point].samples_taken;
	return room > 0 ? room : 0;
}

static int add_sampled_rows(struct at_writer *w, int32_t point_id, const void *rows,
                            enum at_dtype dtype, const int64_t *tokens, int64_t n,
                            int64_t n_dropped, struct at_error *err)
{
	struct point *p = &w->points[point_id];
	struct at_tensor t = {rows, dtype, 1, n, p->desc.channels, 0, p->desc.channels, 1};
	int status = AT_OK;
	for (int64_t r = 0; p->reservoir && r < n; r++)
		if (reservoir_offer(p->reservoir, reservoir_key(w->opts.sample_seed, tokens[r]),
		                    tokens[r], rows, dtype, r * p->desc.channels, 1) < 0)
			return at_fail(err, AT_ENOMEM, "%s: out of memory for the reservoir of '%s'",
			               w->path, p->desc.name);
	if (p->reservoir)
		return AT_OK;
	p->samples_dropped += n_dropped;
	for (int64_t r = 0; r < n && status == AT_OK; r++) {
		if (p->samples_taken >= w->opts.max_samples) {
			p->samples_dropped++;
			continue;
		}
		pending_append(p, &t, 0, r);
		p->pending_tokens[p->pending_rows++] = tokens[r];
		p->samples_taken++;
		if (p->pending_rows == p->chunk_rows)
			status = queue_push(w, point_id, err);
	}
	return status;
}

int writer_add_sampled_rows(struct at_writer *w, int32_t point_id, const void *rows,
                            enum at_dtype dtype, const int64_t *tokens, int64_t n,
                            int64_t n_dropped, struct at_error *err)
{
	pthread_mutex_lock(&w->sample_mu);
	int status = add_sampled_rows(w, point_id, rows, dtype, tokens, n, n_dropped, err);
	pthread_mutex_unlock(&w->sample_mu);
	return status;
}

void writer_samples_lock(struct at_writer *w)
{
	pthread_mutex_lock(&w->sample_mu);
}

void writer_samples_unlock(struct at_writer *w)
{
	pthread_mutex_unlock(&w->sample_mu);
}
