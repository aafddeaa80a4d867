/* h5zstd-plugin.c: the entry points that make filter 32015 a dynamically
 * loadable HDF5 plugin (libh5zstd.so on HDF5_PLUGIN_PATH, for h5dump/h5ls). */
#include "config.h"

#include <H5PLextern.h>
#include <hdf5.h>

extern const H5Z_class2_t at_zstd_filter_class;

H5PL_type_t H5PLget_plugin_type(void)
{
	return H5PL_TYPE_FILTER;
}

const void *H5PLget_plugin_info(void)
{
	return &at_zstd_filter_class;
}
