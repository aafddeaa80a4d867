/* reader.c: opens a trace, validates it (format name and version first), and
 * loads points' statistics, sampled rows (chunks decompressed in parallel),
 * tokens and weight statistics.  Every error names the file. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "h5util.h"
#include "reader-internal.h"

/* Sample chunks decompressed per parallel batch: bounds memory while giving
 * every thread work. */
#define CHUNK_BATCH 64

#define SWMR_READ_ATTEMPTS 4 /* open_swmr says why */

struct at_reader {
	char *path;
	hid_t file;
	hid_t points_group;
	/* the statistics' slot (acttrace-format(5), CRASH-SAFE CHECKPOINTS): 1
	 * when an incomplete trace's /checkpoint/state names /checkpoint/points */
	int slot;
	int64_t checkpoint_tokens; /* N_c, or -1: all of /tokens */
	struct at_trace_info info;
	struct at_point_info *points;
	char **weight_names;
};

hid_t reader_file(const struct at_reader *r)
{
	return r->file;
}

const char *at_reader_path(const struct at_reader *r)
{
	return r->path;
}

const struct at_trace_info *at_reader_info(const struct at_reader *r)
{
	return &r->info;
}

const struct at_point_info *at_reader_point(const struct at_reader *r, int32_t index)
{
	return index >= 0 && index < r->info.points ? &r->points[index] : NULL;
}

const char *at_reader_weight_name(const struct at_reader *r, int32_t index)
{
	return index >= 0 && index < r->info.weights ? r->weight_names[index] : NULL;
}

int at_reader_find_point(const struct at_reader *r, const char *name, int32_t *index)
{
	for (int32_t i = 0; i < r->info.points; i++) {
		if (strcmp(r->points[i].name, name) == 0) {
			*index = i;
			return AT_OK;
		}
	}
	return AT_ENOTFOUND;
}

void at_reader_close(struct at_reader *r)
{
	if (!r)
		return;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	if (r->points_group >= 0)
		H5Gclose(r->points_group);
	if (r->file >= 0)
		H5Fclose(r->file);
	h5_quiet_end(&q);
	for (int32_t i = 0; r->weight_names && i < r->info.weights; i++)
		free(r->weight_names[i]);
	free(r->weight_names);
	free(r->points);
	free(r->path);
	free(r);
}

/* ---------------------------------------------------------------- open */

/* Say why a path is not an HDF5 file in words a user can act on. */
static int check_is_hdf5(const char *path, struct at_error *err)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return at_fail(err, AT_EIO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return at_fail(err, AT_EIO, "%s: is a directory", path);
	if (st.st_size == 0)
		return at_fail(err, AT_EFORMAT, "%s: empty file, not a trace", path);
	htri_t is_hdf5 = H5Fis_hdf5(path);
	if (is_hdf5 < 0)
		return at_fail(err, AT_EIO, "%s: cannot read file", path);
	if (is_hdf5 == 0)
		return at_fail(err, AT_EFORMAT, "%s: not an HDF5 file", path);
	return AT_OK;
}

static int read_format(struct at_reader *r, struct at_error *err)
{
	struct at_trace_info *info = &r->info;
	int64_t version;
	if (h5_attr_get_string(r->file, "format", info->format, sizeof info->format) < 0 ||
	    strcmp(info->format, AT_FORMAT_NAME) != 0)
		return at_fail(err, AT_EFORMAT, "%s: not an acttrace trace (no format=\"%s\" attribute)",
		               r->path, AT_FORMAT_NAME);
	if (h5_attr_get_int(r->file, "format_version", &version) < 0)
		return at_fail(err, AT_EFORMAT, "%s: missing format_version attribute", r->path);
	if (version < AT_FORMAT_VERSION_MIN || version > AT_FORMAT_VERSION)
		return at_fail(err, AT_EFORMAT,
		               "%s: unsupported format_version %lld (this acttrace reads versions "
		               "%d to %d)",
		               r->path, (long long)version, AT_FORMAT_VERSION_MIN, AT_FORMAT_VERSION);
	info->format_version = (int)version;
	return AT_OK;
}

/* Descriptive attributes are optional: absent ones read as empty. */
static void read_descriptive(struct at_reader *r)
{
	struct at_trace_info *info = &r->info;
	int64_t complete = 0;
	h5_attr_get_string(r->file, "producer", info->producer, sizeof info->producer);
	h5_attr_get_string(r->file, "created", info->created, sizeof info->created);
	h5_attr_get_string(r->file, "model", info->model, sizeof info->model);
	h5_attr_get_string(r->file, "source_dtype", info->source_dtype, sizeof info->source_dtype);
	h5_attr_get_string(r->file, "notes", info->notes, sizeof info->notes);
	h5_attr_get_int(r->file, "complete", &complete);
	info->complete = complete == 1;
	int64_t rank = 0, world_size = 1;
	h5_attr_get_int(r->file, "rank", &rank);
	h5_attr_get_int(r->file, "world_size", &world_size);
	if (world_size < 1 || world_size > INT32_MAX || rank < 0 || rank >= world_size)
		rank = 0, world_size = 1; /* descriptive only: nothing is read by them */
	info->rank = (int32_t)rank;
	info->world_size = (int32_t)world_size;
}

static int read_token_count(struct at_reader *r, struct at_error *err)
{
	static const char *const columns[] = {"tokens/seq", "tokens/pos", "tokens/id"};
	hsize_t dims[1];
	for (int i = 0; i < 3; i++) {
		hid_t d = h5_open_checked(r->file, columns[i], 1, NULL, H5T_INTEGER, dims, r->path, err);
		if (d < 0)
			return AT_EFORMAT;
		H5Dclose(d);
		/* past a checkpoint's N_c, a killed writer may have grown one column
		 * and not the next (CRASH-SAFE CHECKPOINTS): only N_c rows count */
		int64_t n = (int64_t)dims[0];
		if (r->checkpoint_tokens > n)
			return at_fail(err, AT_EFORMAT, "%s: /checkpoint/state names %lld tokens, /%s has %lld",
			               r->path, (long long)r->checkpoint_tokens, columns[i], (long long)n);
		if (r->checkpoint_tokens >= 0)
			n = r->checkpoint_tokens;
		if (i > 0 && n != r->info.tokens)
			return at_fail(err, AT_EFORMAT, "%s: /tokens columns differ in length", r->path);
		r->info.tokens = n;
	}
	return AT_OK;
}

/* An incomplete version 3 trace's last completed checkpoint: its slot and
 * its number of tokens.  A complete trace holds its statistics in slot 0. */
static int read_checkpoint_state(struct at_reader *r, struct at_error *err)
{
	r->slot = 0;
	r->checkpoint_tokens = -1;
	if (r->info.complete || H5Lexists(r->file, "checkpoint", H5P_DEFAULT) <= 0 ||
	    H5Lexists(r->file, "checkpoint/state", H5P_DEFAULT) <= 0)
		return AT_OK;
	int64_t want[1] = {3}, state[3];
	int status = h5_read_checked(r->file, "checkpoint/state", H5T_NATIVE_INT64, 1, want, state,
	                             r->path, err);
	if (status)
		return status;
	if (state[1] == 0) /* created, never committed */
		return AT_OK;
	if ((state[0] != 0 && state[0] != 1) || state[1] < 0 || state[2] < 0)
		return at_fail(err, AT_EFORMAT, "%s: /checkpoint/state {%lld, %lld, %lld} is not a "
		               "slot, a count and tokens", r->path, (long long)state[0],
		               (long long)state[1], (long long)state[2]);
	r->slot = (int)state[0];
	r->checkpoint_tokens = state[2];
	return AT_OK;
}

/* The group that holds a point's statistics in the valid slot. */
static hid_t open_stats_group(const struct at_reader *r, const char *name)
{
	if (r->slot == 0)
		return H5Gopen2(r->points_group, name, H5P_DEFAULT);
	char path[1024];
	snprintf(path, sizeof path, "checkpoint/points/%s", name);
	return H5Gopen2(r->file, path, H5P_DEFAULT);
}

struct name_list {
	char **names;
	int32_t n, capacity;
};

static herr_t collect_name(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
	(void)group;
	(void)info;
	struct name_list *list = data;
	if (list->n == list->capacity) {
		int32_t cap = list->capacity ? 2 * list->capacity : 64;
		char **grown = realloc(list->names, (size_t)cap * sizeof *grown);
		if (!grown)
			return -1;
		list->names = grown;
		list->capacity = cap;
	}
	if (!(list->names[list->n] = strdup(name)))
		return -1;
	list->n++;
	return 0;
}

static int list_group(hid_t file, const char *group, struct name_list *list)
{
	hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
	if (g < 0)
		return -1;
	herr_t status = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, list);
	H5Gclose(g);
	return status < 0 ? -1 : 0;
}

static void free_names(struct name_list *list)
{
	for (int32_t i = 0; i < list->n; i++)
		free(list->names[i]);
	free(list->names);
}

static int get_string_attr(hid_t g, const char *name, char *buf, size_t size, const char *where,
                           struct at_error *err)
{
	if (h5_attr_get_string(g, name, buf, size) < 0)
		return at_fail(err, AT_EFORMAT, "%s: missing or malformed attribute '%s'", where, name);
	return AT_OK;
}

static int get_int_attr(hid_t g, const char *name, int64_t *value, const char *where,
                        struct at_error *err)
{
	if (h5_attr_get_int(g, name, value) < 0)
		return at_fail(err, AT_EFORMAT, "%s: missing or malformed attribute '%s'", where, name);
	return AT_OK;
}

/* Sizes a trace may claim, checked before anything is allocated from them:
 * a damaged or crafted file gets a one-line error, never a huge allocation
 * (see "FORMAT VERSION 2" in acttrace-format(5), which makes them normative). */
#define MAX_CHANNELS ((int64_t)1 << 31)
#define MAX_EXTREMES ((int64_t)1 << 20)
#define MAX_SAMPLE_CHUNK_BYTES ((int64_t)1 << 30)

/* The at_dtype of a samples dataset's file type, -1 for any other: float32,
 * IEEE binary16 (5 exponent bits) or bfloat16 (a 2-byte type with float32's
 * 8 exponent bits, acttrace-format(5), SAMPLES). */
static int sample_dtype_of(hid_t type)
{
	if (H5Tget_class(type) != H5T_FLOAT)
		return -1;
	size_t size = H5Tget_size(type), spos, epos, esize, mpos, msize;
	if (size == 4 && H5Tget_precision(type) == 32)
		return AT_F32;
	if (size != 2 || H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0 ||
	    spos != 15 || mpos != 0)
		return -1;
	if (epos == 10 && esize == 5 && msize == 10)
		return AT_F16;
	if (epos == 7 && esize == 8 && msize == 7)
		return AT_BF16;
	return -1;
}

/* Rows of a sampled dataset, its chunk height and dtype, or 0 rows when
 * there is none. */
static int read_sample_layout(hid_t g, struct at_point_info *p, const char *where,
                              struct at_error *err)
{
	if (H5Lexists(g, "samples", H5P_DEFAULT) <= 0)
		return AT_OK;
	hsize_t dims[2], chunk[2];
	int64_t want[2] = {-1, p->channels};
	hid_t d = h5_open_checked(g, "samples", 2, want, H5T_FLOAT, dims, where, err);
	if (d < 0)
		return AT_EFORMAT;
	hid_t dcpl = H5Dget_create_plist(d);
	int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED &&
	              H5Pget_chunk(dcpl, 2, chunk) == 2;
	if (dcpl >= 0)
		H5Pclose(dcpl);
	hid_t type = H5Dget_type(d);
	int dtype = type >= 0 ? sample_dtype_of(type) : -1;
	if (type >= 0)
		H5Tclose(type);
	H5Dclose(d);
	if (!chunked)
		return at_fail(err, AT_EFORMAT, "%s: 'samples' is not chunked", where);
	if (dtype < 0)
		return at_fail(err, AT_EFORMAT,
		               "%s: 'samples' is neither float32, float16 nor bfloat16", where);
	p->sample_dtype = (enum at_dtype)dtype;
	p->samples = (int64_t)dims[0];
	p->sample_chunk_rows = (int64_t)chunk[0];
	int64_t row_bytes = (int64_t)at_dtype_size(p->sample_dtype) * p->channels;
	if (p->sample_chunk_rows < 1 || p->sample_chunk_rows > MAX_SAMPLE_CHUNK_BYTES / row_bytes)
		return at_fail(err, AT_EFORMAT,
		               "%s: 'samples' chunks of %lld rows of %lld channels (at most %lld MiB "
		               "a chunk)",
		               where, (long long)p->sample_chunk_rows, (long long)p->channels,
		               (long long)(MAX_SAMPLE_CHUNK_BYTES >> 20));
	return AT_OK;
}

/* Every dataset a point must have, checked by shape and type at open, so a
 * damaged trace is refused before any tool starts printing. */
static int check_point_datasets(hid_t g, const struct at_point_info *p, int with_samples,
                                const char *where, struct at_error *err)
{
	static const char *const integers[] = {"count", "nonfinite"};
	static const char *const reals[] = {"mean", "m2", "m3", "m4", "min", "max", "absmax",
	                                    "abssum"};
	int64_t vec[1] = {p->channels}, hist[2] = {p->channels, AT_HIST_BINS};
	int64_t tokens[1] = {-1}; /* at least p->samples (read_point_info) */
	hsize_t dims[2];
	hid_t d;
	for (size_t i = 0; i < sizeof integers / sizeof integers[0]; i++) {
		if ((d = h5_open_checked(g, integers[i], 1, vec, H5T_INTEGER, dims, where, err)) < 0)
			return AT_EFORMAT;
		H5Dclose(d);
	}
	for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++) {
		if ((d = h5_open_checked(g, reals[i], 1, vec, H5T_FLOAT, dims, where, err)) < 0)
			return AT_EFORMAT;
		H5Dclose(d);
	}
	if (p->has_hist) {
		if ((d = h5_open_checked(g, "hist", 2, hist, H5T_INTEGER, dims, where, err)) < 0)
			return AT_EFORMAT;
		H5Dclose(d);
	}
	if (with_samples && p->sample_chunk_rows > 0) {
		if ((d = h5_open_checked(g, "sample_tokens", 1, tokens, H5T_INTEGER, dims, where,
		                         err)) < 0)
			return AT_EFORMAT;
		H5Dclose(d);
		if ((int64_t)dims[0] < p->samples)
			return at_fail(err, AT_EFORMAT, "%s: %lld sample_tokens for %lld samples", where,
			               (long long)dims[0], (long long)p->samples);
	}
	return AT_OK;
}

/* Version 2's channel slice of a point (acttrace-format(5), CHANNEL SLICES);
 * absent attributes mean a whole tensor, as in version 1. */
static int read_channel_slice(hid_t g, struct at_point_info *p, int64_t channels,
                              const char *where, struct at_error *err)
{
	int64_t offset = 0, full = channels, replicated = 0;
	h5_attr_get_int(g, "channel_offset", &offset);
	h5_attr_get_int(g, "full_channels", &full);
	h5_attr_get_int(g, "replicated", &replicated);
	if (offset < 0 || full > MAX_CHANNELS || offset > full - channels)
		return at_fail(err, AT_EFORMAT,
		               "%s: channel_offset %lld and %lld channels exceed full_channels %lld",
		               where, (long long)offset, (long long)channels, (long long)full);
	p->channel_offset = offset;
	p->full_channels = full;
	p->replicated = replicated == 1;
	return AT_OK;
}

/* A complete trace has as many sample_tokens as samples.  A killed writer
 * may have grown one of the two and not the other (samples are outside the
 * checkpoint's guarantee, CRASH-SAFE CHECKPOINTS): the rows both have. */
static int settle_sample_rows(const struct at_reader *r, hid_t g, struct at_point_info *p,
                              const char *where, struct at_error *err)
{
	if (p->sample_chunk_rows == 0 || H5Lexists(g, "sample_tokens", H5P_DEFAULT) <= 0)
		return AT_OK;
	hsize_t dims[1];
	hid_t d = h5_open_checked(g, "sample_tokens", 1, NULL, H5T_INTEGER, dims, where, err);
	if (d < 0)
		return AT_EFORMAT;
	H5Dclose(d);
	if ((int64_t)dims[0] == p->samples)
		return AT_OK;
	if (r->info.complete)
		return at_fail(err, AT_EFORMAT, "%s: %llu sample_tokens for %lld samples", where,
		               (unsigned long long)dims[0], (long long)p->samples);
	if ((int64_t)dims[0] < p->samples)
		p->samples = (int64_t)dims[0];
	return AT_OK;
}

static int read_point_info(struct at_reader *r, const char *name, struct at_point_info *p,
                           int64_t *order, struct at_error *err)
{
	char where[512];
	snprintf(where, sizeof where, "%s: point '%s'", r->path, name);
	hid_t g = H5Gopen2(r->points_group, name, H5P_DEFAULT);
	if (g < 0)
		return at_fail(err, AT_EFORMAT, "%s: not a group", where);
	int64_t layer = -1, channels = 0, dropped = 0;
	snprintf(p->name, sizeof p->name, "%s", name);
	int status = get_int_attr(g, "layer", &layer, where, err);
	if (!status)
		status = get_int_attr(g, "channels", &channels, where, err);
	if (!status)
		status = get_string_attr(g, "component", p->component, sizeof p->component, where, err);
	if (!status)
		status = get_string_attr(g, "site", p->site, sizeof p->site, where, err);
	if (!status)
		status = get_string_attr(g, "direction", p->direction, sizeof p->direction, where, err);
	if (!status && (channels <= 0 || channels > MAX_CHANNELS))
		status = at_fail(err, AT_EFORMAT, "%s: %lld channels (1 to 2^31)", where,
		                 (long long)channels);
	h5_attr_get_string(g, "module", p->module, sizeof p->module);
	h5_attr_get_string(g, "module_class", p->module_class, sizeof p->module_class);
	h5_attr_get_int(g, "samples_dropped", &dropped);
	if (!status)
		status = read_channel_slice(g, p, channels, where, err);
	*order = INT64_MAX;
	h5_attr_get_int(g, "order", order);
	p->layer = (int32_t)layer;
	p->channels = channels;
	p->samples_dropped = dropped;
	p->has_hist = H5Lexists(g, "hist", H5P_DEFAULT) > 0;
	hid_t sg = status ? -1 : open_stats_group(r, name);
	if (!status && sg < 0)
		status = at_fail(err, AT_EFORMAT, "%s: no statistics in slot %d", where, r->slot);
	if (!status && H5Lexists(sg, "extremes", H5P_DEFAULT) > 0) {
		hsize_t dims[1];
		hid_t d = h5_open_checked(sg, "extremes", 1, NULL, H5T_COMPOUND, dims, where, err);
		status = d < 0 ? AT_EFORMAT : AT_OK;
		if (d >= 0) {
			if ((int64_t)dims[0] > MAX_EXTREMES)
				status = at_fail(err, AT_EFORMAT, "%s: %llu extremes (at most 2^20)", where,
				                 (unsigned long long)dims[0]);
			else
				p->n_extremes = (int32_t)dims[0];
			H5Dclose(d);
		}
	}
	if (!status)
		status = read_sample_layout(g, p, where, err);
	if (!status)
		status = settle_sample_rows(r, g, p, where, err);
	if (!status)
		status = check_point_datasets(g, p, 1, where, err);
	if (!status && r->slot != 0) /* slot 1 holds the statistics only */
		status = check_point_datasets(sg, p, 0, where, err);
	if (sg >= 0)
		H5Gclose(sg);
	H5Gclose(g);
	return status;
}

struct ordered_point {
	int64_t order;
	struct at_point_info info;
};

static int by_order(const void *a, const void *b)
{
	const struct ordered_point *x = a, *y = b;
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return strcmp(x->info.name, y->info.name);
}

static int read_points(struct at_reader *r, struct at_error *err)
{
	struct name_list names = {0};
	if (H5Lexists(r->file, "points", H5P_DEFAULT) <= 0 ||
	    (r->points_group = H5Gopen2(r->file, "points", H5P_DEFAULT)) < 0)
		return at_fail(err, AT_EFORMAT, "%s: missing group /points", r->path);
	if (list_group(r->file, "points", &names) < 0) {
		free_names(&names);
		return at_fail(err, AT_EFORMAT, "%s: cannot list /points", r->path);
	}
	struct ordered_point *ordered = calloc((size_t)names.n + 1, sizeof *ordered);
	int status = ordered ? AT_OK : at_fail(err, AT_ENOMEM, "%s: out of memory", r->path);
	for (int32_t i = 0; i < names.n && !status; i++)
		status = read_point_info(r, names.names[i], &ordered[i].info, &ordered[i].order, err);
	if (!status) {
		qsort(ordered, (size_t)names.n, sizeof *ordered, by_order);
		r->points = calloc((size_t)names.n + 1, sizeof *r->points);
		if (!r->points)
			status = at_fail(err, AT_ENOMEM, "%s: out of memory", r->path);
	}
	for (int32_t i = 0; i < names.n && !status; i++)
		r->points[i] = ordered[i].info;
	if (!status)
		r->info.points = names.n;
	free(ordered);
	free_names(&names);
	return status;
}

static int read_weight_names(struct at_reader *r, struct at_error *err)
{
	struct name_list names = {0};
	if (H5Lexists(r->file, "weights", H5P_DEFAULT) <= 0)
		return AT_OK;
	if (list_group(r->file, "weights", &names) < 0) {
		free_names(&names);
		return at_fail(err, AT_EFORMAT, "%s: cannot list /weights", r->path);
	}
	r->weight_names = names.names;
	r->info.weights = names.n;
	return AT_OK;
}

/* Root attributes that size allocations, checked at open. */
static int check_root_sizes(struct at_reader *r, struct at_error *err)
{
	int64_t k = 0;
	h5_attr_get_int(r->file, "extremes_k", &k);
	if (k < 0 || k > MAX_EXTREMES)
		return at_fail(err, AT_EFORMAT, "%s: root attribute extremes_k = %lld (0 to 2^20)",
		               r->path, (long long)k);
	return AT_OK;
}

/* SWMR readers retry a metadata read whose checksum fails, 100 times by
 * default with growing sleeps, in case a live writer was half-way through
 * writing it: a damaged file then takes minutes to refuse (tests/damage.sh
 * found one).  A few attempts cover a live writer's torn read; a killed
 * writer's file does not change. */
static hid_t open_swmr(const char *path)
{
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	hid_t file = -1;
	if (fapl >= 0 && H5Pset_metadata_read_attempts(fapl, SWMR_READ_ATTEMPTS) >= 0)
		file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
	if (fapl >= 0)
		H5Pclose(fapl);
	return file;
}

static int open_file(struct at_reader *r, const char *path, struct at_error *err)
{
	int status = check_is_hdf5(path, err);
	if (status)
		return status;
	r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
	if (r->file < 0) /* left by a killed SWMR writer (CRASH-SAFE CHECKPOINTS) */
		r->file = open_swmr(path);
	if (r->file < 0)
		return at_fail(err, AT_EFORMAT, "%s: cannot open HDF5 file (truncated or corrupt?)",
		               path);
	if ((status = read_format(r, err)) || (status = check_root_sizes(r, err)))
		return status;
	read_descriptive(r);
	if ((status = read_checkpoint_state(r, err)) || (status = read_token_count(r, err)) || (status = read_points(r, err)))
		return status;
	return read_weight_names(r, err);
}

int at_reader_open(struct at_reader **out, const char *path, struct at_error *err)
{
	*out = NULL;
	if (!path)
		return at_fail(err, AT_EINVAL, "reader: NULL path");
	int status = at_zstd_filter_register(err);
	if (status)
		return status;
	struct at_reader *r = calloc(1, sizeof *r);
	if (!r || !(r->path = strdup(path))) {
		free(r);
		return at_fail(err, AT_ENOMEM, "%s: out of memory", path);
	}
	r->file = r->points_group = -1;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	status = open_file(r, path, err);
	h5_quiet_end(&q);
	if (status) {
		at_reader_close(r);
		return status;
	}
	*out = r;
	return AT_OK;
}

/* ---------------------------------------------------------------- statistics */

static int check_extremes(const struct at_stats *s, const char *where, struct at_error *err)
{
	for (int32_t i = 0; i < s->n_extremes; i++)
		if (s->extremes[i].channel < 0 || s->extremes[i].channel >= s->channels)
			return at_fail(err, AT_EFORMAT, "%s: extreme %d names channel %d of %lld", where,
			               (int)i, (int)s->extremes[i].channel, (long long)s->channels);
	return AT_OK;
}

/* True when the dataset's pipeline is exactly shuffle then zstd, the one our
 * codec reproduces; anything else is read through HDF5's own pipeline. */
static int pipeline_is_ours(hid_t dcpl)
{
	int ours = H5Pget_nfilters(dcpl) == 2;
	for (unsigned i = 0; ours && i < 2; i++) {
		unsigned flags, cd[8];
		size_t ncd = 8;
		H5Z_filter_t id = H5Pget_filter2(dcpl, i, &flags, &ncd, cd, 0, NULL, NULL);
		ours = id == (i == 0 ? H5Z_FILTER_SHUFFLE : AT_ZSTD_FILTER_ID);
	}
	return ours;
}

/* ---- datasets read as their stored chunks ----
 * Through HDF5's filter pipeline a dataset's chunks are decompressed and
 * unshuffled under the reader's lock, one point at a time whatever the
 * threads (the histogram alone was a fifth of trace-quant's time), and a
 * dataset behind filter 32015 is read twice (h5_read_checked checks every
 * frame first).  A dataset chunked along dimension 0 only, behind our
 * pipeline, with the memory type as its stored type, is instead read raw
 * under the lock and decompressed by our codec after it; the codec refuses
 * a frame that does not decode to exactly a chunk's bytes (AT_ECODEC),
 * which is the check h5_read_checked makes before HDF5 decodes. */

/* The chunk height of such a dataset of dims[0..rank), or 0: any other
 * layout, read through HDF5. */
static int64_t raw_chunk_rows(hid_t d, hid_t mem_type, int rank, const hsize_t *dims)
{
	hid_t type = H5Dget_type(d), dcpl = H5Dget_create_plist(d);
	hsize_t cdims[8] = {0};
	int64_t rows = 0;
	if (type >= 0 && dcpl >= 0 && rank <= 8 && H5Tequal(type, mem_type) > 0 &&
	    H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, rank, cdims) == rank &&
	    cdims[0] >= 1 && pipeline_is_ours(dcpl)) {
		rows = (int64_t)cdims[0];
		for (int i = 1; i < rank; i++)
			if (cdims[i] != dims[i])
				rows = 0;
	}
	if (type >= 0)
		H5Tclose(type);
	if (dcpl >= 0)
		H5Pclose(dcpl);
	return rows;
}

/* The stored chunk at row0 into ch->packed (grown as needed), for a chunk
 * of raw_bytes: 1 when read, 0 when never written, else an error.  Its
 * stored size is capped by what the writer can store for it. */
static int raw_read_chunk(hid_t d, int64_t row0, size_t raw_bytes, struct at_chunk *ch,
                          const char *what, const char *where, struct at_error *err)
{
	hsize_t offset[8] = {(hsize_t)row0}, size = 0;
	haddr_t addr = HADDR_UNDEF;
	unsigned mask = 0;
	/* not H5Dget_chunk_storage_size, which fails alike for a chunk never
	 * written and for a damaged chunk index */
	if (H5Dget_chunk_info_by_coord(d, offset, &mask, &addr, &size) < 0)
		return at_fail(err, AT_EFORMAT, "%s: dataset '%s': unreadable chunk index", where, what);
	if (addr == HADDR_UNDEF || size == 0)
		return 0;
	if (size > at_codec_stored_bound(raw_bytes))
		return at_fail(err, AT_EFORMAT, "%s: dataset '%s': chunk at row %lld claims %llu bytes",
		               where, what, (long long)row0, (unsigned long long)size);
	if (ch->packed_capacity < size || !ch->packed) {
		void *grown = realloc(ch->packed, (size_t)size);
		if (!grown)
			return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
		ch->packed = grown;
		ch->packed_capacity = (size_t)size;
	}
	ch->packed_bytes = (size_t)size;
	ch->raw_bytes = raw_bytes;
	uint32_t read_mask = 0;
	if (H5Dread_chunk(d, H5P_DEFAULT, offset, &read_mask, ch->packed) < 0 || read_mask != 0)
		return at_fail(err, AT_EFORMAT, "%s: dataset '%s': cannot read the chunk at row %lld",
		               where, what, (long long)row0);
	return 1;
}

/* Chunks decompressed by the codec, in this thread (the callers run in the
 * prefetcher's threads or a caller's parallel region), its message prefixed
 * with where and what. */
static int raw_decompress(struct at_chunk *chunks, size_t n, size_t elem_size, int threads,
                          const char *what, const char *where, struct at_error *err)
{
	int status = at_codec_decompress(chunks, n, elem_size, threads, err);
	if (status == AT_ECODEC && err) {
		char reason[sizeof err->message];
		snprintf(reason, sizeof reason, "%s", err->message);
		return at_fail(err, AT_ECODEC,
		               "%s: cannot read dataset '%s' (truncated or corrupt?): %s", where, what,
		               reason);
	}
	return status;
}

/* A whole dataset read raw into out (rows of row_bytes). */
struct raw_dataset {
	const char *name;
	struct at_chunk *chunks;
	void **spill;        /* where a chunk that passes the last row decompresses */
	int64_t n, chunk_rows, rows;
	size_t row_bytes, elem_size;
	unsigned char *out;
	unsigned char fill[16]; /* the fill value, for chunks never written */
	int missing;         /* chunks never written */
};

static void raw_dataset_free(struct raw_dataset *h)
{
	for (int64_t i = 0; h->chunks && h->spill && i < h->n; i++) {
		free(h->chunks[i].packed);
		free(h->spill[i]);
	}
	free(h->chunks);
	free(h->spill);
	h->chunks = NULL;
	h->spill = NULL;
	h->n = 0;
}

/* Rows of the dataset in chunk i (the last chunk may pass its end). */
static int64_t raw_chunk_have(const struct raw_dataset *h, int64_t i)
{
	int64_t first = i * h->chunk_rows;
	return h->rows - first < h->chunk_rows ? h->rows - first : h->chunk_rows;
}

static int raw_dataset_chunk(hid_t d, struct raw_dataset *h, int64_t i, const char *where,
                             struct at_error *err)
{
	int64_t first = i * h->chunk_rows;
	size_t raw_bytes = (size_t)h->chunk_rows * h->row_bytes;
	struct at_chunk *ch = &h->chunks[i];
	int got = raw_read_chunk(d, first, raw_bytes, ch, h->name, where, err);
	if (got != 1) {
		h->missing += got == 0;
		return got == 0 ? AT_OK : got;
	}
	if (raw_chunk_have(h, i) == h->chunk_rows) {
		ch->raw = h->out + (size_t)first * h->row_bytes;
	} else {
		if (!(h->spill[i] = malloc(raw_bytes)))
			return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
		ch->raw = h->spill[i];
	}
	return AT_OK;
}

/* The fill value HDF5 would read for a chunk never written (zeros where it
 * has none). */
static void raw_dataset_fill(hid_t d, hid_t mem_type, struct raw_dataset *h)
{
	memset(h->fill, 0, sizeof h->fill);
	hid_t dcpl = H5Dget_create_plist(d);
	if (dcpl >= 0 && h->elem_size <= sizeof h->fill &&
	    H5Pget_fill_value(dcpl, mem_type, h->fill) < 0)
		memset(h->fill, 0, sizeof h->fill);
	if (dcpl >= 0)
		H5Pclose(dcpl);
}

/* 1: the dataset (open as d, of dims[0..rank)) is in h, raw, for
 * raw_datasets_finish; 0: read it through HDF5 instead (another layout);
 * else an error. */
static int raw_dataset_read(hid_t d, const char *name, hid_t mem_type, int rank,
                            const hsize_t *dims, void *out, struct raw_dataset *h,
                            const char *where, struct at_error *err)
{
	memset(h, 0, sizeof *h);
	h->chunk_rows = raw_chunk_rows(d, mem_type, rank, dims);
	/* chunks taller than the dataset only in a damaged file (HDF5 refuses
	 * them for fixed sizes): not sized by the file, left to HDF5's checks */
	if (h->chunk_rows == 0 || dims[0] == 0 || (hsize_t)h->chunk_rows > dims[0])
		return 0;
	h->name = name;
	h->out = out;
	h->rows = (int64_t)dims[0];
	h->elem_size = H5Tget_size(mem_type);
	h->row_bytes = h->elem_size;
	for (int i = 1; i < rank; i++)
		h->row_bytes *= (size_t)dims[i];
	h->n = (h->rows + h->chunk_rows - 1) / h->chunk_rows;
	h->chunks = calloc((size_t)h->n, sizeof *h->chunks);
	h->spill = calloc((size_t)h->n, sizeof *h->spill);
	int status = h->chunks && h->spill ? AT_OK
	                                   : at_fail(err, AT_ENOMEM, "%s: out of memory", where);
	for (int64_t i = 0; !status && i < h->n; i++)
		status = raw_dataset_chunk(d, h, i, where, err);
	if (!status && h->missing)
		raw_dataset_fill(d, mem_type, h);
	if (status) {
		raw_dataset_free(h);
		return status;
	}
	return 1;
}

/* The present chunks of sets [k0, k1) into one array, for one codec call. */
static size_t raw_present(const struct raw_dataset *sets, int k0, int k1, struct at_chunk *out)
{
	size_t n = 0;
	for (int k = k0; k < k1; k++)
		for (int64_t i = 0; i < sets[k].n; i++)
			if (sets[k].chunks[i].raw)
				out[n++] = sets[k].chunks[i];
	return n;
}

/* Decompress the raw chunks of datasets of one element size into their
 * buffers (outside the reader's lock), in one codec call; on a failure, a
 * dataset at a time, so that the message names the dataset. */
static int raw_decompress_sets(struct raw_dataset *sets, int nsets, const char *where,
                               struct at_error *err)
{
	size_t total = 0, elem_size = 0;
	for (int k = 0; k < nsets; k++) {
		total += (size_t)sets[k].n;
		if (sets[k].n)
			elem_size = sets[k].elem_size;
	}
	if (total == 0)
		return AT_OK;
	struct at_chunk *present = malloc(total * sizeof *present);
	if (!present)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
	size_t n = raw_present(sets, 0, nsets, present);
	int status = at_codec_decompress(present, n, elem_size, 1, err);
	if (status == AT_ECODEC) {
		for (int k = 0; k < nsets; k++) {
			n = raw_present(sets, k, k + 1, present);
			int one = raw_decompress(present, n, elem_size, 1, sets[k].name, where, err);
			if (one) {
				status = one;
				break;
			}
		}
	}
	free(present);
	return status;
}

/* The raw datasets sets[0..nsets) (one element size) into their buffers,
 * then the rows of chunks that passed the end or were never written. */
static int raw_datasets_finish(struct raw_dataset *sets, int nsets, const char *where,
                               struct at_error *err)
{
	int status = raw_decompress_sets(sets, nsets, where, err);
	for (int k = 0; k < nsets && !status; k++) {
		struct raw_dataset *h = &sets[k];
		for (int64_t i = 0; i < h->n; i++) {
			unsigned char *to = h->out + (size_t)(i * h->chunk_rows) * h->row_bytes;
			size_t bytes = (size_t)raw_chunk_have(h, i) * h->row_bytes;
			if (!h->chunks[i].raw) {
				for (size_t b = 0; b < bytes; b += h->elem_size)
					memcpy(to + b, h->fill, h->elem_size);
			} else if (h->spill[i]) {
				memcpy(to, h->spill[i], bytes);
			}
		}
	}
	return status;
}

/* A point's datasets: the ten vectors and the histogram read raw under the
 * lock (load_datasets), decompressed after it (load_stats). */
#define POINT_VECTORS 10

struct point_raw {
	struct raw_dataset vectors[POINT_VECTORS];
	struct raw_dataset hist;
};

static void point_raw_free(struct point_raw *raw)
{
	for (int i = 0; i < POINT_VECTORS; i++)
		raw_dataset_free(&raw->vectors[i]);
	raw_dataset_free(&raw->hist);
}

/* One dataset of a point, of the given rank and shape, raw when it can be
 * (into *h), else through HDF5 (h5_read_open_checked). */
static int load_dataset(hid_t g, const char *name, hid_t mem_type, int rank,
                        const int64_t *want, void *buf, struct raw_dataset *h,
                        const char *where, struct at_error *err)
{
	hsize_t dims[8];
	hid_t d = h5_open_checked(g, name, rank, want, H5Tget_class(mem_type), dims, where, err);
	if (d < 0)
		return err ? err->code : AT_EFORMAT;
	int status = raw_dataset_read(d, name, mem_type, rank, dims, buf, h, where, err);
	if (status == 0)
		status = h5_read_open_checked(d, name, mem_type, buf, H5P_DEFAULT, where, err);
	else if (status == 1)
		status = AT_OK;
	H5Dclose(d);
	return status;
}

/* The extremes (a compound type: HDF5 converts them, through a buffer of 1 MB
 * it allocates and zeroes a read unless told the few bytes they need). */
static int load_extremes(hid_t g, int32_t n, struct at_stats *s, const char *where,
                         struct at_error *err)
{
	int64_t want[1] = {n};
	hsize_t dims[1];
	hid_t type = h5_extremes_mem_type();
	if (type < 0)
		return at_fail(err, AT_EIO, "%s: HDF5 type failure", where);
	hid_t d = h5_open_checked(g, "extremes", 1, want, H5T_COMPOUND, dims, where, err);
	int status = d < 0 ? (err ? err->code : AT_EFORMAT) : AT_OK;
	hid_t file_type = d >= 0 ? H5Dget_type(d) : -1;
	hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
	if (!status) {
		size_t elem = file_type >= 0 && H5Tget_size(file_type) > sizeof *s->extremes
		                  ? H5Tget_size(file_type) : sizeof *s->extremes;
		if (dxpl < 0 || H5Pset_buffer(dxpl, (size_t)n * elem, NULL, NULL) < 0)
			status = at_fail(err, AT_EIO, "%s: HDF5 property failure", where);
	}
	if (!status)
		status = h5_read_open_checked(d, "extremes", type, s->extremes, dxpl, where, err);
	if (dxpl >= 0)
		H5Pclose(dxpl);
	if (file_type >= 0)
		H5Tclose(file_type);
	if (d >= 0)
		H5Dclose(d);
	H5Tclose(type);
	s->n_extremes = status ? 0 : n;
	return status;
}

static int load_datasets(hid_t g, const struct at_point_info *p, int whole, struct at_stats *s,
                         struct point_raw *raw, const char *where, struct at_error *err)
{
	int64_t c = p->channels;
	int64_t vec[1] = {c}, hist[2] = {c, AT_HIST_BINS};
	const struct {
		const char *name;
		hid_t type;
		void *buf;
	} vectors[POINT_VECTORS] = {
		{"count", H5T_NATIVE_UINT64, s->count}, {"nonfinite", H5T_NATIVE_UINT64, s->nonfinite},
		{"mean", H5T_NATIVE_DOUBLE, s->mean},   {"m2", H5T_NATIVE_DOUBLE, s->m2},
		{"m3", H5T_NATIVE_DOUBLE, s->m3},       {"m4", H5T_NATIVE_DOUBLE, s->m4},
		{"min", H5T_NATIVE_DOUBLE, s->min},     {"max", H5T_NATIVE_DOUBLE, s->max},
		{"absmax", H5T_NATIVE_DOUBLE, s->absmax}, {"abssum", H5T_NATIVE_DOUBLE, s->abssum},
	};
	int status = AT_OK;
	for (size_t i = 0; i < POINT_VECTORS && !status; i++)
		status = load_dataset(g, vectors[i].name, vectors[i].type, 1, vec, vectors[i].buf,
		                      &raw->vectors[i], where, err);
	if (!whole)
		return status;
	if (!status && p->has_hist)
		status = load_dataset(g, "hist", H5T_NATIVE_UINT32, 2, hist, s->hist, &raw->hist, where,
		                      err);
	if (!status && p->n_extremes > 0)
		status = load_extremes(g, p->n_extremes, s, where, err);
	return status ? status : check_extremes(s, where, err);
}

/* reuse: s holds accumulators (or is empty) whose arrays the load may
 * overwrite (stats_refit) */
static int load_stats(struct at_reader *r, int32_t point, int whole, int reuse,
                      struct at_stats *s, struct at_error *err)
{
	if (!reuse)
		memset(s, 0, sizeof *s);
	const struct at_point_info *p = at_reader_point(r, point);
	if (!p) {
		at_stats_free(s);
		return at_fail(err, AT_ENOTFOUND, "%s: no point with index %d", r->path, (int)point);
	}
	int64_t k = 0;
	/* under the lock: several threads may load points of one reader (merge.c) */
	struct h5_quiet q;
	h5_quiet_begin(&q);
	h5_attr_get_int(r->file, "extremes_k", &k); /* 0 to 2^20: checked at open */
	h5_quiet_end(&q);
	int32_t capacity = p->n_extremes > k ? p->n_extremes : (int32_t)k;
	int with_hist = whole && p->has_hist;
	int status = reuse ? stats_refit(s, p->channels, with_hist, whole ? capacity : 0, err)
	                   : at_stats_init(s, p->channels, with_hist, whole ? capacity : 0, err);
	if (status)
		return status;
	char where[512];
	snprintf(where, sizeof where, "%s: point '%s'", r->path, p->name);
	struct point_raw raw;
	memset(&raw, 0, sizeof raw);
	h5_quiet_begin(&q);
	hid_t g = open_stats_group(r, p->name);
	if (g < 0)
		status = at_fail(err, AT_EFORMAT, "%s: cannot open group", where);
	else
		status = load_datasets(g, p, whole, s, &raw, where, err);
	if (g >= 0)
		H5Gclose(g);
	h5_quiet_end(&q);
	/* the vectors share an element size (8 bytes): one pass over their chunks */
	if (!status)
		status = raw_datasets_finish(raw.vectors, POINT_VECTORS, where, err);
	if (!status)
		status = raw_datasets_finish(&raw.hist, 1, where, err);
	point_raw_free(&raw);
	if (status)
		at_stats_free(s);
	return status;
}

int at_reader_load_stats(struct at_reader *r, int32_t point, struct at_stats *s,
                         struct at_error *err)
{
	return load_stats(r, point, 1, 0, s, err);
}

int at_reader_load_moments(struct at_reader *r, int32_t point, struct at_stats *s,
                           struct at_error *err)
{
	return load_stats(r, point, 0, 0, s, err);
}

int at_reader_reload_stats(struct at_reader *r, int32_t point, struct at_stats *s,
                           struct at_error *err)
{
	return load_stats(r, point, 1, 1, s, err);
}

int at_reader_reload_moments(struct at_reader *r, int32_t point, struct at_stats *s,
                             struct at_error *err)
{
	return load_stats(r, point, 0, 1, s, err);
}

/* ---------------------------------------------------------------- samples */

static int read_rows_hdf5(hid_t dset, hid_t mem_type, int rank, int64_t first, int64_t n,
                          int64_t width, void *out)
{
	hsize_t start[2] = {(hsize_t)first, 0}, count[2] = {(hsize_t)n, (hsize_t)width};
	hid_t fspace = H5Dget_space(dset);
	hid_t mspace = H5Screate_simple(rank, count, NULL);
	int status = -1;
	if (fspace >= 0 && mspace >= 0 &&
	    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
	    H5Dread(dset, mem_type, mspace, fspace, H5P_DEFAULT, out) >= 0)
		status = 0;
	if (mspace >= 0)
		H5Sclose(mspace);
	if (fspace >= 0)
		H5Sclose(fspace);
	return status;
}

/* Read chunks [k0, k0+n) raw, decompress them in parallel, copy the wanted rows. */
static int read_chunk_batch(hid_t dset, const struct at_point_info *p, int64_t k0, int64_t nk,
                            int64_t first, int64_t last, float *out, struct at_chunk *chunks,
                            const char *where, struct at_error *err)
{
	int64_t rows = p->sample_chunk_rows, c = p->channels;
	size_t elem = at_dtype_size(p->sample_dtype);
	size_t raw_bytes = (size_t)(rows * c) * elem;
	for (int64_t i = 0; i < nk; i++) {
		struct at_chunk *ch = &chunks[i];
		int got = raw_read_chunk(dset, (k0 + i) * rows, raw_bytes, ch, "samples", where, err);
		if (got == 0)
			return at_fail(err, AT_EFORMAT, "%s: sample chunk %lld missing", where,
			               (long long)(k0 + i));
		if (got != 1)
			return got;
		if (!ch->raw && !(ch->raw = malloc(raw_bytes)))
			return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
	}
	int status = raw_decompress(chunks, (size_t)nk, elem, 0, "samples", where, err);
	if (status)
		return status;
	for (int64_t i = 0; i < nk; i++) {
		int64_t row0 = (k0 + i) * rows;
		int64_t lo = row0 > first ? row0 : first;
		int64_t hi = row0 + rows < last ? row0 + rows : last;
		at_load_run(chunks[i].raw, p->sample_dtype, (lo - row0) * c, 1, (hi - lo) * c,
		            out + (lo - first) * c);
	}
	return AT_OK;
}

/* True when the samples' chunks can be read raw: chunks of whole rows
 * (p->sample_chunk_rows of them) behind our pipeline, stored little-endian
 * (at_load_run's byte order). */
static int samples_are_raw(hid_t d, const struct at_point_info *p)
{
	hid_t type = H5Dget_type(d);
	hsize_t dims[2] = {(hsize_t)p->samples, (hsize_t)p->channels};
	int raw = type >= 0 && H5Tget_order(type) == H5T_ORDER_LE &&
	          raw_chunk_rows(d, type, 2, dims) == p->sample_chunk_rows;
	if (type >= 0)
		H5Tclose(type);
	return raw;
}

static int read_samples_parallel(hid_t dset, const struct at_point_info *p, int64_t first,
                                 int64_t n, float *out, const char *where, struct at_error *err)
{
	int64_t rows = p->sample_chunk_rows, last = first + n;
	int64_t k_first = first / rows, k_end = (last + rows - 1) / rows;
	struct at_chunk chunks[CHUNK_BATCH];
	memset(chunks, 0, sizeof chunks);
	int status = AT_OK;
	for (int64_t k = k_first; k < k_end && !status; k += CHUNK_BATCH) {
		int64_t nk = k_end - k < CHUNK_BATCH ? k_end - k : CHUNK_BATCH;
		status = read_chunk_batch(dset, p, k, nk, first, last, out, chunks, where, err);
	}
	for (int i = 0; i < CHUNK_BATCH; i++) {
		free(chunks[i].raw);
		free(chunks[i].packed);
	}
	return status;
}

static int read_samples(hid_t g, const struct at_point_info *p, int64_t first, int64_t n,
                        float *rows, int64_t *tokens, const char *where, struct at_error *err)
{
	int status = AT_OK;
	if (rows) {
		hid_t d = H5Dopen2(g, "samples", H5P_DEFAULT);
		if (d < 0)
			return at_fail(err, AT_EFORMAT, "%s: cannot open 'samples'", where);
		if (samples_are_raw(d, p))
			status = read_samples_parallel(d, p, first, n, rows, where, err);
		else if (read_rows_hdf5(d, H5T_NATIVE_FLOAT, 2, first, n, p->channels, rows) < 0)
			status = at_fail(err, AT_EFORMAT, "%s: cannot read 'samples'", where);
		H5Dclose(d);
	}
	if (!status && tokens) {
		hsize_t dims[1];
		int64_t want[1] = {p->samples};
		hid_t d = h5_open_checked(g, "sample_tokens", 1, want, H5T_INTEGER, dims, where, err);
		if (d < 0)
			return AT_EFORMAT;
		if (read_rows_hdf5(d, H5T_NATIVE_INT64, 1, first, n, 1, tokens) < 0)
			status = at_fail(err, AT_EFORMAT, "%s: cannot read 'sample_tokens'", where);
		H5Dclose(d);
	}
	return status;
}

int at_reader_read_samples(struct at_reader *r, int32_t point, int64_t first, int64_t n,
                           float *rows, int64_t *tokens, struct at_error *err)
{
	const struct at_point_info *p = at_reader_point(r, point);
	if (!p)
		return at_fail(err, AT_ENOTFOUND, "%s: no point with index %d", r->path, (int)point);
	if (first < 0 || n < 0 || first + n > p->samples)
		return at_fail(err, AT_EINVAL, "%s: point '%s' has %lld samples, asked for [%lld, %lld)",
		               r->path, p->name, (long long)p->samples, (long long)first,
		               (long long)(first + n));
	if (n == 0)
		return AT_OK;
	char where[512];
	snprintf(where, sizeof where, "%s: point '%s'", r->path, p->name);
	struct h5_quiet q;
	h5_quiet_begin(&q);
	hid_t g = H5Gopen2(r->points_group, p->name, H5P_DEFAULT);
	int status = g < 0 ? at_fail(err, AT_EFORMAT, "%s: cannot open group", where)
	                   : read_samples(g, p, first, n, rows, tokens, where, err);
	if (g >= 0)
		H5Gclose(g);
	h5_quiet_end(&q);
	return status;
}

/* ---------------------------------------------------------------- tokens */

int at_reader_read_tokens(struct at_reader *r, int64_t first, int64_t n, int32_t *seq,
                          int32_t *pos, int32_t *id, struct at_error *err)
{
	if (first < 0 || n < 0 || first + n > r->info.tokens)
		return at_fail(err, AT_EINVAL, "%s: trace has %lld tokens, asked for [%lld, %lld)",
		               r->path, (long long)r->info.tokens, (long long)first,
		               (long long)(first + n));
	const char *names[3] = {"tokens/seq", "tokens/pos", "tokens/id"};
	int32_t *outs[3] = {seq, pos, id};
	int status = AT_OK;
	struct h5_quiet q;
	h5_quiet_begin(&q);
	for (int i = 0; i < 3 && !status && n > 0; i++) {
		if (!outs[i])
			continue;
		hid_t d = H5Dopen2(r->file, names[i], H5P_DEFAULT);
		if (d < 0 || read_rows_hdf5(d, H5T_NATIVE_INT32, 1, first, n, 1, outs[i]) < 0)
			status = at_fail(err, AT_EFORMAT, "%s: cannot read /%s", r->path, names[i]);
		if (d >= 0)
			H5Dclose(d);
	}
	h5_quiet_end(&q);
	return status;
}

/* ---------------------------------------------------------------- weights */

void at_weight_stats_free(struct at_weight_stats *w)
{
	free(w->row_absmax);
	free(w->row_absmean);
	free(w->col_absmax);
	free(w->col_absmean);
	free(w->values);
	free(w->row_sumsq);
	memset(w, 0, sizeof *w);
}

static int load_weight(hid_t g, struct at_weight_stats *w, const char *where,
                       struct at_error *err)
{
	int64_t rows, cols;
	int status = get_int_attr(g, "rows", &rows, where, err);
	if (!status)
		status = get_int_attr(g, "cols", &cols, where, err);
	if (status)
		return status;
	if (rows < 1 || cols < 1)
		return at_fail(err, AT_EFORMAT, "%s: bad shape %lld x %lld", where, (long long)rows,
		               (long long)cols);
	h5_attr_get_string(g, "module_class", w->module_class, sizeof w->module_class);
	w->rows = rows;
	w->cols = cols;
	w->row_absmax = malloc((size_t)rows * sizeof(double));
	w->row_absmean = malloc((size_t)rows * sizeof(double));
	w->col_absmax = malloc((size_t)cols * sizeof(double));
	w->col_absmean = malloc((size_t)cols * sizeof(double));
	if (!w->row_absmax || !w->row_absmean || !w->col_absmax || !w->col_absmean)
		return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
	int64_t rdim[1] = {rows}, cdim[1] = {cols};
	if ((status = h5_read_checked(g, "row_absmax", H5T_NATIVE_DOUBLE, 1, rdim, w->row_absmax,
	                              where, err)) ||
	    (status = h5_read_checked(g, "row_absmean", H5T_NATIVE_DOUBLE, 1, rdim, w->row_absmean,
	                              where, err)) ||
	    (status = h5_read_checked(g, "col_absmax", H5T_NATIVE_DOUBLE, 1, cdim, w->col_absmax,
	                              where, err)) ||
	    (status = h5_read_checked(g, "col_absmean", H5T_NATIVE_DOUBLE, 1, cdim, w->col_absmean,
	                              where, err)))
		return status;
	/* optional (acttrace-format(5), WEIGHTS): older traces have none */
	if (H5Lexists(g, "row_sumsq", H5P_DEFAULT) > 0) {
		if (!(w->row_sumsq = malloc((size_t)rows * sizeof(double))))
			return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
		status = h5_read_checked(g, "row_sumsq", H5T_NATIVE_DOUBLE, 1, rdim, w->row_sumsq,
		                         where, err);
		if (status)
			return status;
	}
	if (rows != 1 || H5Lexists(g, "values", H5P_DEFAULT) <= 0)
		return AT_OK;
	if (!(w->values = malloc((size_t)cols * sizeof(float))))
		return at_fail(err, AT_ENOMEM, "%s: out of memory", where);
	return h5_read_checked(g, "values", H5T_NATIVE_FLOAT, 1, cdim, w->values, where, err);
}

int at_reader_load_weight(struct at_reader *r, int32_t index, struct at_weight_stats *out,
                          struct at_error *err)
{
	memset(out, 0, sizeof *out);
	const char *name = at_reader_weight_name(r, index);
	if (!name)
		return at_fail(err, AT_ENOTFOUND, "%s: no weight with index %d", r->path, (int)index);
	snprintf(out->module, sizeof out->module, "%s", name);
	char where[512];
	snprintf(where, sizeof where, "%s: weight '%s'", r->path, name);
	struct h5_quiet q;
	h5_quiet_begin(&q);
	hid_t weights = H5Gopen2(r->file, "weights", H5P_DEFAULT);
	hid_t g = weights >= 0 ? H5Gopen2(weights, name, H5P_DEFAULT) : -1;
	int status = g < 0 ? at_fail(err, AT_EFORMAT, "%s: cannot open group", where)
	                   : load_weight(g, out, where, err);
	if (g >= 0)
		H5Gclose(g);
	if (weights >= 0)
		H5Gclose(weights);
	h5_quiet_end(&q);
	if (status)
		at_weight_stats_free(out);
	return status;
}
