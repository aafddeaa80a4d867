/* zstd-frame.h: how acttrace writes one zstd frame, shared by the codec
 * (parallel direct chunk writes) and the HDF5 filter (filter 32015); not
 * installed. */
#ifndef AT_ZSTD_FRAME_H
#define AT_ZSTD_FRAME_H

#include <zstd.h>

/* One zstd frame of src with its content size in the header (the stock
 * HDF5 zstd plugins size their output from it) and a content checksum,
 * which every zstd decoder verifies: a damaged chunk is reported, never
 * decoded into wrong numbers.  Returns the frame's size or a zstd error. */
static inline size_t at_zstd_frame(ZSTD_CCtx *cctx, void *dst, size_t capacity, const void *src,
                                   size_t bytes, int level)
{
	size_t e = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (!ZSTD_isError(e))
		e = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(e))
		e = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
	if (!ZSTD_isError(e))
		e = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	return ZSTD_isError(e) ? e : ZSTD_compress2(cctx, dst, capacity, src, bytes);
}

#endif /* AT_ZSTD_FRAME_H */
