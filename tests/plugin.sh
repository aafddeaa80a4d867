#!/bin/sh
# plugin.sh: h5dump decodes a trace's shuffle+zstd datasets through the built
# filter plugin (libh5zstd.so on HDF5_PLUGIN_PATH), and cannot without it.
set -eu

if [ -z "${H5DUMP:-}" ]; then
	echo "SKIP: no h5dump"
	exit 77
fi
builddir=${top_builddir:-.}
plugin_dir=$builddir/hdf5-plugins
if [ ! -f "$plugin_dir/libh5zstd.so" ]; then
	echo "SKIP: no shared filter plugin in $plugin_dir (built with --disable-shared?)"
	exit 77
fi
# HDF5 wants an absolute plugin path: h5dump resolves it from its own cwd.
plugin_dir=$(cd "$plugin_dir" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/acttrace-plugin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
mkdir "$tmp/no-plugins"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# Data lines of h5dump look like "   (0,3): 0.25, -1.5, ...".
prints_numbers() {
	grep -Eq '^ *\([0-9][0-9,]*\): *[-+0-9.naif]' "$1"
}

trace=$tmp/trace.h5
trace-synth --arch tiny --tokens 64 --seed 1 --samples 16 -o "$trace" ||
	fail "trace-synth could not write a trace"

# The listing needs no filter: it reads metadata only.
"$H5DUMP" -n "$trace" >"$tmp/contents" || fail "h5dump -n $trace"
samples=$(sed -n 's|^ *dataset *\(/points/[^/]*/samples\)$|\1|p' "$tmp/contents" | head -n 1)
[ -n "$samples" ] || fail "no /points/<name>/samples dataset in $trace"
point=${samples%/samples}
echo "# point: ${point#/points/}"

HDF5_PLUGIN_PATH=$plugin_dir "$H5DUMP" -p -H -d "$samples" "$trace" >"$tmp/header" ||
	fail "h5dump -p -H -d $samples"
grep -q 'FILTER_ID 32015' "$tmp/header" || fail "$samples is not compressed with filter 32015"

for dataset in "$samples" "$point/mean"; do
	status=0
	HDF5_PLUGIN_PATH=$plugin_dir "$H5DUMP" -d "$dataset" "$trace" \
		>"$tmp/with.out" 2>"$tmp/with.err" || status=$?
	if [ "$status" -ne 0 ] || ! prints_numbers "$tmp/with.out"; then
		cat "$tmp/with.err" >&2
		fail "h5dump with the plugin did not print $dataset (exit $status)"
	fi
	echo "ok - h5dump with HDF5_PLUGIN_PATH=hdf5-plugins reads $dataset"

	# h5dump exits 0 for some failed reads, so judge by what it printed.
	status=0
	HDF5_PLUGIN_PATH=$tmp/no-plugins "$H5DUMP" -d "$dataset" "$trace" \
		>"$tmp/without.out" 2>"$tmp/without.err" || status=$?
	if [ "$status" -eq 0 ] && prints_numbers "$tmp/without.out"; then
		fail "h5dump printed $dataset without the plugin: is something else decoding filter 32015?"
	fi
	echo "ok - h5dump without the plugin cannot read $dataset (exit $status)"
done
