#!/bin/sh
# run.sh: fuzz the trace reader with libFuzzer for SECONDS (default 60) under
# ASan and UBSan, from the repository root after ./configure && make:
#   sh tests/fuzz/run.sh [SECONDS]
# Needs clang with libFuzzer (Debian: clang).  New inputs go to a scratch
# corpus; a crash leaves crash-* here: copy it into tests/fuzz/corpus so that
# make check replays it (tests/fuzz-replay.sh), and fix what it found.  A
# crash inside HDF5 itself (see issue 12) needs containment, not a fix here.
set -eu
seconds=${1:-60}
CC=${CC_FUZZ:-clang}
command -v "$CC" >/dev/null || { echo "run.sh: $CC not found" >&2; exit 77; }
out=${FUZZ_OUT:-/tmp/acttrace-fuzz}
mkdir -p "$out/corpus"
cp tests/fuzz/corpus/* tests/fixtures/v1/tiny.h5 "$out/corpus/"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
hdf5_cflags=$(pkg-config --cflags hdf5 2>/dev/null || pkg-config --cflags hdf5-serial 2>/dev/null || true)
hdf5_libs=$(pkg-config --libs hdf5 2>/dev/null || pkg-config --libs hdf5-serial 2>/dev/null || echo -lhdf5)
srcs="libtrace/h5util.c libtrace/error.c libtrace/accum.c libtrace/codec.c libtrace/zstd-filter.c
libtrace/reader.c"
# shellcheck disable=SC2086
$CC $flags -DFUZZ_LIBFUZZER -fopenmp -I. -Ilibtrace $hdf5_cflags tests/fuzz/fuzz-trace.c $srcs \
	-o "$out/fuzz-trace" $hdf5_libs -lzstd -lpthread -lm
HDF5_PLUGIN_PATH=$PWD/hdf5-plugins "$out/fuzz-trace" -max_total_time="$seconds" \
	-rss_limit_mb=4096 -timeout=20 "$out/corpus"
