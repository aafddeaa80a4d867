/* zstd-filter.c: HDF5 filter 32015 (Zstandard), the registered filter that
 * h5py's hdf5plugin and the HDF5Plugin-Zstandard plugin also implement, so
 * that our compressed datasets decode with stock readers and theirs with us.
 * Built into libacttrace and, with -DAT_PLUGIN, into the loadable plugin. */
#include "config.h"

#include <hdf5.h>
#include <zstd.h>

#include "internal.h"
#include "zstd-frame.h"

#define ZSTD_FILTER_DEFAULT_LEVEL 3

extern const H5Z_class2_t at_zstd_filter_class;

/* cd_values[0], when present, is the compression level (a negative level
 * arrives as its unsigned two's complement). */
static int filter_level(size_t cd_nelmts, const unsigned int cd_values[])
{
	if (cd_nelmts < 1 || !cd_values)
		return ZSTD_FILTER_DEFAULT_LEVEL;
	return (int)cd_values[0];
}

static size_t zstd_compress_buffer(int level, size_t nbytes, size_t *buf_size, void **buf)
{
	size_t bound = ZSTD_compressBound(nbytes);
	void *packed = H5allocate_memory(bound, 0);
	if (!packed)
		return 0;
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	size_t packed_bytes = cctx ? at_zstd_frame(cctx, packed, bound, *buf, nbytes, level)
	                           : (size_t)-1;
	ZSTD_freeCCtx(cctx);
	if (!cctx || ZSTD_isError(packed_bytes)) {
		H5free_memory(packed);
		return 0;
	}
	H5free_memory(*buf);
	*buf = packed;
	*buf_size = bound;
	return packed_bytes;
}

/* The frame must declare its content size, as every writer of filter 32015
 * we know of does (acttrace's always have it, and a checksum). */
static size_t zstd_decompress_buffer(size_t nbytes, size_t *buf_size, void **buf)
{
	unsigned long long content = ZSTD_getFrameContentSize(*buf, nbytes);
	if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN ||
	    content > (unsigned long long)(SIZE_MAX - 1))
		return 0;
	size_t raw_bytes = (size_t)content;
	/* one spare byte: H5allocate_memory(0) may return NULL */
	void *raw = H5allocate_memory(raw_bytes + 1, 0);
	if (!raw)
		return 0;
	size_t got = ZSTD_decompress(raw, raw_bytes, *buf, nbytes);
	if (ZSTD_isError(got) || got != raw_bytes) {
		H5free_memory(raw);
		return 0;
	}
	H5free_memory(*buf);
	*buf = raw;
	*buf_size = raw_bytes + 1;
	return raw_bytes;
}

/* HDF5 filter convention: the number of valid bytes now in *buf, 0 on
 * failure (leaving *buf to the library).  Never prints. */
static size_t zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                          size_t nbytes, size_t *buf_size, void **buf)
{
	if (!buf || !*buf || !buf_size)
		return 0;
	if (flags & H5Z_FLAG_REVERSE)
		return zstd_decompress_buffer(nbytes, buf_size, buf);
	return zstd_compress_buffer(filter_level(cd_nelmts, cd_values), nbytes, buf_size, buf);
}

const H5Z_class2_t at_zstd_filter_class = {
	.version = H5Z_CLASS_T_VERS,
	.id = (H5Z_filter_t)AT_ZSTD_FILTER_ID,
	.encoder_present = 1,
	.decoder_present = 1,
	.name = "Zstandard compression: http://www.zstd.net",
	.can_apply = NULL,
	.set_local = NULL,
	.filter = zstd_filter,
};

#ifndef AT_PLUGIN
int at_zstd_filter_register(struct at_error *err)
{
	htri_t available;
	herr_t registered = 0;
	/* H5Zfilter_avail also finds a plugin on HDF5_PLUGIN_PATH; any
	 * implementation of 32015 decodes our data, so use whichever is there. */
	H5E_BEGIN_TRY
	{
		available = H5Zfilter_avail((H5Z_filter_t)AT_ZSTD_FILTER_ID);
		if (available <= 0)
			registered = H5Zregister(&at_zstd_filter_class);
	}
	H5E_END_TRY;
	if (available > 0)
		return AT_OK;
	if (registered < 0)
		return at_fail(err, AT_EIO, "HDF5: cannot register the zstd filter (id %d)",
		               AT_ZSTD_FILTER_ID);
	return AT_OK;
}
#endif
