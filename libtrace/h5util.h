/* h5util.h: small HDF5 helpers for the writer and the reader: a silenced error
 * stack, typed attributes, compressed datasets, shape-checked reads. */
#ifndef AT_H5UTIL_H
#define AT_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "internal.h"

/* The library must not print: HDF5's automatic error report is switched off
 * for the duration of each public call and restored afterwards.  The same
 * section holds a process-wide (recursive) lock, because the serial HDF5
 * library is not thread-safe and a writer's background thread calls HDF5
 * while the caller's thread may call it too (another writer, a reader).
 * Every HDF5 call of the library is inside such a section; none waits for
 * the background thread while holding it. */
struct h5_quiet {
	H5E_auto2_t func;
	void *data;
};
void h5_quiet_begin(struct h5_quiet *q);
void h5_quiet_end(const struct h5_quiet *q);
/* The operating system's reason in the current HDF5 error stack (e.g. "File
 * too large", "No space left on device"), copied into buf; NULL if none. */
const char *h5_system_error(char *buf, size_t size);

/* Attributes (created or overwritten). */
int h5_attr_put_string(hid_t obj, const char *name, const char *value);
int h5_attr_put_int(hid_t obj, const char *name, hid_t type, int64_t value);
int h5_attr_put_u64(hid_t obj, const char *name, uint64_t value);
/* An existing integer attribute's value, rewritten in place (no delete and
 * create: what an SWMR writer may do, see writer.c). */
int h5_attr_rewrite_int(hid_t obj, const char *name, int64_t value);
int h5_attr_put_doubles(hid_t obj, const char *name, const double *values, hsize_t n);
/* Reads: -1 when absent or of the wrong class. */
int h5_attr_get_string(hid_t obj, const char *name, char *buf, size_t size);
int h5_attr_get_int(hid_t obj, const char *name, int64_t *value);

/* A chunked dataset behind shuffle + zstd (filter 32015, cd_values = {level}).
 * maxdims may be NULL (fixed size). */
hid_t h5_create_compressed(hid_t loc, const char *name, hid_t type, int rank,
                           const hsize_t *dims, const hsize_t *maxdims, const hsize_t *chunk,
                           int level);
/* The same with a fill value (fill_type describes *fill), which is what a
 * reader sees in chunks never written. */
hid_t h5_create_filled(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const hsize_t *maxdims, const hsize_t *chunk, int level, hid_t fill_type,
                       const void *fill);
/* Write a whole dataset, creating it first if needed. */
int h5_put_compressed(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                      const hsize_t *dims, const hsize_t *chunk, int level, const void *buf);

/* The memory type of struct at_extreme (value, token, channel). */
hid_t h5_extremes_mem_type(void);

/* Open a dataset and check its rank, its dims (want[i] < 0: any) and that its
 * type converts to mem_class; fills dims.  Negative and err filled on mismatch. */
hid_t h5_open_checked(hid_t loc, const char *name, int rank, const int64_t *want,
                      H5T_class_t type_class, hsize_t *dims, const char *where,
                      struct at_error *err);
/* Read a whole dataset of the given rank/shape into buf as mem_type. */
int h5_read_checked(hid_t loc, const char *name, hid_t mem_type, int rank,
                    const int64_t *want, void *buf, const char *where, struct at_error *err);
/* The same for a dataset already open (and checked) as dset, with a
 * transfer property list (H5P_DEFAULT). */
int h5_read_open_checked(hid_t dset, const char *name, hid_t mem_type, void *buf, hid_t dxpl,
                         const char *where, struct at_error *err);

#endif /* AT_H5UTIL_H */
