/* reader-internal.h: the HDF5 file behind a reader, for libtrace's own
 * sources that read what the public reader API does not expose (merge.c: the
 * root's sampling and histogram attributes, points' extra attributes); not
 * installed.  Callers hold h5_quiet around every use. */
#ifndef AT_READER_INTERNAL_H
#define AT_READER_INTERNAL_H

#include <hdf5.h>

#include "acttrace.h"

hid_t reader_file(const struct at_reader *r);

#endif /* AT_READER_INTERNAL_H */
