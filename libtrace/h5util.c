/* h5util.c: HDF5 helpers shared by the writer and the reader. */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "h5util.h"

static pthread_once_t h5_lock_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t h5_lock;

static void h5_lock_init(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&h5_lock, &a);
	pthread_mutexattr_destroy(&a);
}

void h5_quiet_begin(struct h5_quiet *q)
{
	pthread_once(&h5_lock_once, h5_lock_init);
	pthread_mutex_lock(&h5_lock);
	H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void h5_quiet_end(const struct h5_quiet *q)
{
	H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
	pthread_mutex_unlock(&h5_lock);
}

/* Open the attribute for writing, replacing one of another type or shape. */
static hid_t attr_replace(hid_t obj, const char *name, hid_t type, hid_t space)
{
	if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0)
		return -1;
	return H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
}

static int attr_put(hid_t obj, const char *name, hid_t type, hid_t space, const void *buf)
{
	hid_t attr = attr_replace(obj, name, type, space);
	if (attr < 0)
		return -1;
	herr_t status = H5Awrite(attr, type, buf);
	H5Aclose(attr);
	return status < 0 ? -1 : 0;
}

static hid_t vlen_utf8_type(void)
{
	hid_t type = H5Tcopy(H5T_C_S1);
	if (type < 0)
		return -1;
	if (H5Tset_size(type, H5T_VARIABLE) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
		H5Tclose(type);
		return -1;
	}
	return type;
}

/* Fixed-length strings (format version 2): a damaged file can make HDF5
 * follow a variable-length string's global-heap reference anywhere. */
static hid_t fixed_utf8_type(size_t length)
{
	hid_t type = H5Tcopy(H5T_C_S1);
	if (type < 0)
		return -1;
	if (H5Tset_size(type, length + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0 ||
	    H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
		H5Tclose(type);
		return -1;
	}
	return type;
}

int h5_attr_put_string(hid_t obj, const char *name, const char *value)
{
	hid_t type = fixed_utf8_type(strlen(value));
	hid_t space = H5Screate(H5S_SCALAR);
	int status = -1;
	if (type >= 0 && space >= 0)
		status = attr_put(obj, name, type, space, value);
	if (space >= 0)
		H5Sclose(space);
	if (type >= 0)
		H5Tclose(type);
	return status;
}

/* One scalar attribute of file type `type`, written from *value of mem_type. */
static int attr_put_scalar(hid_t obj, const char *name, hid_t type, hid_t mem_type,
                           const void *value)
{
	hid_t space = H5Screate(H5S_SCALAR);
	if (space < 0)
		return -1;
	hid_t attr = attr_replace(obj, name, type, space);
	int status = -1;
	if (attr >= 0) {
		status = H5Awrite(attr, mem_type, value) < 0 ? -1 : 0;
		H5Aclose(attr);
	}
	H5Sclose(space);
	return status;
}

int h5_attr_put_int(hid_t obj, const char *name, hid_t type, int64_t value)
{
	return attr_put_scalar(obj, name, type, H5T_NATIVE_INT64, &value);
}

int h5_attr_rewrite_int(hid_t obj, const char *name, int64_t value)
{
	hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
	if (attr < 0)
		return -1;
	herr_t status = H5Awrite(attr, H5T_NATIVE_INT64, &value);
	H5Aclose(attr);
	return status < 0 ? -1 : 0;
}

int h5_attr_put_u64(hid_t obj, const char *name, uint64_t value)
{
	return attr_put_scalar(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

int h5_attr_put_doubles(hid_t obj, const char *name, const double *values, hsize_t n)
{
	hid_t space = H5Screate_simple(1, &n, NULL);
	if (space < 0)
		return -1;
	int status = attr_put(obj, name, H5T_IEEE_F64LE, space, values);
	H5Sclose(space);
	return status;
}

/* Read a string attribute, fixed or variable length, into buf (truncated). */
int h5_attr_get_string(hid_t obj, const char *name, char *buf, size_t size)
{
	if (size == 0 || H5Aexists(obj, name) <= 0)
		return -1;
	hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
	if (attr < 0)
		return -1;
	int status = -1;
	hid_t ftype = H5Aget_type(attr);
	hid_t space = H5Aget_space(attr);
	if (ftype >= 0 && space >= 0 && H5Tget_class(ftype) == H5T_STRING &&
	    H5Sget_simple_extent_npoints(space) == 1) {
		if (H5Tis_variable_str(ftype) > 0) {
			char *value = NULL;
			hid_t mtype = vlen_utf8_type();
			if (mtype >= 0 && H5Aread(attr, mtype, &value) >= 0) {
				snprintf(buf, size, "%s", value ? value : "");
				H5free_memory(value);
				status = 0;
			}
			if (mtype >= 0)
				H5Tclose(mtype);
		} else {
			size_t len = H5Tget_size(ftype);
			char *tmp = calloc(len + 1, 1);
			hid_t mtype = H5Tcopy(ftype);
			if (tmp && mtype >= 0 && H5Aread(attr, mtype, tmp) >= 0) {
				snprintf(buf, size, "%s", tmp);
				status = 0;
			}
			if (mtype >= 0)
				H5Tclose(mtype);
			free(tmp);
		}
	}
	if (space >= 0)
		H5Sclose(space);
	if (ftype >= 0)
		H5Tclose(ftype);
	H5Aclose(attr);
	return status;
}

int h5_attr_get_int(hid_t obj, const char *name, int64_t *value)
{
	if (H5Aexists(obj, name) <= 0)
		return -1;
	hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
	if (attr < 0)
		return -1;
	int status = -1;
	hid_t ftype = H5Aget_type(attr);
	hid_t space = H5Aget_space(attr);
	if (ftype >= 0 && space >= 0 && H5Tget_class(ftype) == H5T_INTEGER &&
	    H5Sget_simple_extent_npoints(space) == 1)
		status = H5Aread(attr, H5T_NATIVE_INT64, value) < 0 ? -1 : 0;
	if (space >= 0)
		H5Sclose(space);
	if (ftype >= 0)
		H5Tclose(ftype);
	H5Aclose(attr);
	return status;
}

hid_t h5_create_compressed(hid_t loc, const char *name, hid_t type, int rank,
                           const hsize_t *dims, const hsize_t *maxdims, const hsize_t *chunk,
                           int level)
{
	return h5_create_filled(loc, name, type, rank, dims, maxdims, chunk, level, -1, NULL);
}

hid_t h5_create_filled(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const hsize_t *maxdims, const hsize_t *chunk, int level, hid_t fill_type,
                       const void *fill)
{
	/* cd_values[1] = 1: the frames carry content checksums (format version 2) */
	unsigned int cd_values[2] = {(unsigned int)level, 1};
	hid_t space = H5Screate_simple(rank, dims, maxdims);
	hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
	hid_t dset = -1;
	if (space < 0 || dcpl < 0)
		goto done;
	if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
	    H5Pset_filter(dcpl, AT_ZSTD_FILTER_ID, H5Z_FLAG_MANDATORY, 2, cd_values) < 0)
		goto done;
	/* Chunks are written whole; never spend time filling them. */
	if (H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
		goto done;
	if (fill && H5Pset_fill_value(dcpl, fill_type, fill) < 0)
		goto done;
	dset = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
done:
	if (dcpl >= 0)
		H5Pclose(dcpl);
	if (space >= 0)
		H5Sclose(space);
	return dset;
}

int h5_put_compressed(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                      const hsize_t *dims, const hsize_t *chunk, int level, const void *buf)
{
	hid_t dset;
	if (H5Lexists(loc, name, H5P_DEFAULT) > 0)
		dset = H5Dopen2(loc, name, H5P_DEFAULT);
	else
		dset = h5_create_compressed(loc, name, file_type, rank, dims, NULL, chunk, level);
	if (dset < 0)
		return -1;
	herr_t status = H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
	H5Dclose(dset);
	return status < 0 ? -1 : 0;
}

static const char *class_name(H5T_class_t c)
{
	switch (c) {
	case H5T_INTEGER: return "integer";
	case H5T_FLOAT: return "float";
	case H5T_COMPOUND: return "compound";
	case H5T_STRING: return "string";
	default: return "other";
	}
}

hid_t h5_open_checked(hid_t loc, const char *name, int rank, const int64_t *want,
                      H5T_class_t type_class, hsize_t *dims, const char *where,
                      struct at_error *err)
{
	if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) {
		at_fail(err, AT_EFORMAT, "%s: missing dataset '%s'", where, name);
		return -1;
	}
	hid_t dset = H5Dopen2(loc, name, H5P_DEFAULT);
	if (dset < 0) {
		at_fail(err, AT_EFORMAT, "%s: cannot open dataset '%s'", where, name);
		return -1;
	}
	hid_t type = H5Dget_type(dset);
	hid_t space = H5Dget_space(dset);
	H5T_class_t got_class = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
	int got_rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
	int ok = got_class == type_class && got_rank == rank;
	if (!ok) {
		at_fail(err, AT_EFORMAT, "%s: dataset '%s' is %s of rank %d, expected %s of rank %d",
		        where, name, class_name(got_class), got_rank, class_name(type_class), rank);
	} else {
		H5Sget_simple_extent_dims(space, dims, NULL);
		for (int i = 0; i < rank && ok; i++) {
			if (want && want[i] >= 0 && dims[i] != (hsize_t)want[i]) {
				at_fail(err, AT_EFORMAT,
				        "%s: dataset '%s' has %llu elements in dimension %d, expected %lld",
				        where, name, (unsigned long long)dims[i], i, (long long)want[i]);
				ok = 0;
			}
		}
	}
	if (space >= 0)
		H5Sclose(space);
	if (type >= 0)
		H5Tclose(type);
	if (!ok) {
		H5Dclose(dset);
		return -1;
	}
	return dset;
}

/* The bytes one chunk of dset holds once decoded, or 0 when dset is not
 * chunked behind filter 32015 (then there is nothing of ours to check). */
static size_t zstd_chunk_bytes(hid_t dset, unsigned *zstd_index)
{
	hid_t dcpl = H5Dget_create_plist(dset);
	hid_t type = H5Dget_type(dset);
	size_t bytes = 0;
	hsize_t chunk[8];
	int rank = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED ? H5Pget_chunk(dcpl, 8, chunk) : -1;
	int nfilters = dcpl >= 0 ? H5Pget_nfilters(dcpl) : 0;
	for (int i = 0; i < nfilters; i++) {
		unsigned flags, cd[8];
		size_t ncd = 8;
		if (H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, 0, NULL, NULL) ==
		    AT_ZSTD_FILTER_ID)
			*zstd_index = (unsigned)i, bytes = 1;
	}
	if (bytes && rank > 0 && type >= 0)
		bytes = H5Tget_size(type);
	else
		bytes = 0;
	for (int i = 0; i < rank && bytes; i++)
		bytes = chunk[i] && bytes <= SIZE_MAX / chunk[i] ? bytes * (size_t)chunk[i] : 0;
	if (type >= 0)
		H5Tclose(type);
	if (dcpl >= 0)
		H5Pclose(dcpl);
	return bytes;
}

/* HDF5 1.10.8 copies a whole chunk out of whatever its filter pipeline
 * returns, even when that is shorter: a chunk index damaged to point at
 * another dataset's (valid, checksummed) frame makes it read past the end of
 * the buffer (H5D__select_read, H5VM_memcpyvv).  So before HDF5 decodes a
 * dataset behind filter 32015, each stored chunk must be a frame that
 * declares exactly a chunk's bytes (or, where the filter was skipped for it,
 * be exactly that long). */
static int check_chunk_frames(hid_t dset, const char *name, const char *where,
                              struct at_error *err)
{
	unsigned zstd_index = 0;
	size_t chunk_bytes = zstd_chunk_bytes(dset, &zstd_index);
	if (chunk_bytes == 0)
		return AT_OK;
	hid_t space = H5Dget_space(dset);
	hsize_t nchunks = 0;
	int status = AT_OK;
	if (space < 0 || H5Dget_num_chunks(dset, space, &nchunks) < 0)
		status = at_fail(err, AT_EFORMAT, "%s: dataset '%s': unreadable chunk index", where, name);
	unsigned char *packed = NULL;
	for (hsize_t i = 0; i < nchunks && !status; i++) {
		hsize_t offset[8], stored = 0;
		unsigned mask = 0;
		haddr_t addr;
		if (H5Dget_chunk_info(dset, space, i, offset, &mask, &addr, &stored) < 0 ||
		    stored == 0 || stored > ((hsize_t)1 << 30)) {
			status = at_fail(err, AT_EFORMAT, "%s: dataset '%s': chunk %llu unreadable", where,
			                 name, (unsigned long long)i);
			break;
		}
		unsigned char *grown = realloc(packed, (size_t)stored);
		if (!grown) {
			status = at_fail(err, AT_ENOMEM, "%s: out of memory", where);
			break;
		}
		packed = grown;
		unsigned long long content = stored;
		if (H5Dread_chunk(dset, H5P_DEFAULT, offset, &mask, packed) < 0)
			content = 0;
		else if (!(mask & (1u << zstd_index)))
			content = ZSTD_getFrameContentSize(packed, (size_t)stored);
		if (content != chunk_bytes)
			status = at_fail(err, AT_EFORMAT,
			                 "%s: dataset '%s': chunk %llu does not decode to the chunk's %zu "
			                 "bytes (corrupt?)",
			                 where, name, (unsigned long long)i, chunk_bytes);
	}
	free(packed);
	if (space >= 0)
		H5Sclose(space);
	return status;
}

int h5_read_open_checked(hid_t dset, const char *name, hid_t mem_type, void *buf, hid_t dxpl,
                         const char *where, struct at_error *err)
{
	int checked = check_chunk_frames(dset, name, where, err);
	if (checked)
		return checked;
	if (H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, dxpl, buf) < 0)
		return at_fail(err, AT_EFORMAT, "%s: cannot read dataset '%s' (truncated or corrupt?)",
		               where, name);
	return AT_OK;
}

int h5_read_checked(hid_t loc, const char *name, hid_t mem_type, int rank,
                    const int64_t *want, void *buf, const char *where, struct at_error *err)
{
	hsize_t dims[8];
	hid_t dset = h5_open_checked(loc, name, rank, want, H5Tget_class(mem_type), dims, where, err);
	if (dset < 0)
		return err ? err->code : AT_EFORMAT;
	int status = h5_read_open_checked(dset, name, mem_type, buf, H5P_DEFAULT, where, err);
	H5Dclose(dset);
	return status;
}

hid_t h5_extremes_mem_type(void)
{
	hid_t type = H5Tcreate(H5T_COMPOUND, sizeof(struct at_extreme));
	if (type < 0)
		return -1;
	if (H5Tinsert(type, "value", HOFFSET(struct at_extreme, value), H5T_NATIVE_DOUBLE) < 0 ||
	    H5Tinsert(type, "token", HOFFSET(struct at_extreme, token), H5T_NATIVE_INT64) < 0 ||
	    H5Tinsert(type, "channel", HOFFSET(struct at_extreme, channel), H5T_NATIVE_INT32) < 0) {
		H5Tclose(type);
		return -1;
	}
	return type;
}

struct system_error {
	char *buf;
	size_t size;
	int found;
};

/* HDF5's sec2 driver describes a failed system call as "..., errno = 28,
 * error message = 'No space left on device', ...". */
static herr_t find_system_error(unsigned n, const H5E_error2_t *e, void *arg)
{
	(void)n;
	struct system_error *se = arg;
	const char *tag = "error message = '";
	const char *at = e->desc ? strstr(e->desc, tag) : NULL;
	if (se->found || !at)
		return 0;
	at += strlen(tag);
	size_t len = strcspn(at, "'");
	if (len >= se->size)
		len = se->size - 1;
	memcpy(se->buf, at, len);
	se->buf[len] = '\0';
	se->found = 1;
	return 0;
}

const char *h5_system_error(char *buf, size_t size)
{
	struct system_error se = {buf, size, 0};
	if (size == 0)
		return NULL;
	H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_system_error, &se);
	return se.found ? buf : NULL;
}

void at_tool_init(void)
{
	H5dont_atexit();
}
