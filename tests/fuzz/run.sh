#!/bin/sh
# run.sh: fuzz the trace reader with libFuzzer for SECONDS (default 60) under
# ASan and UBSan, from the repository root after ./configure && make:
#   sh tests/fuzz/run.sh [SECONDS [LIBFUZZER_OPTION]...]
# e.g. the campaign of docs/BENCHMARKS.md, one process that survives crashes
# inside libhdf5 (each is kept and the campaign goes on):
#   FUZZ_V1=0 FUZZ_FIXTURES=0 sh tests/fuzz/run.sh 2700 -fork=1 -ignore_crashes=1 \
#     -ignore_timeouts=1 -ignore_ooms=1 -entropic_scale_per_exec_time=1
# Needs clang with libFuzzer (Debian: clang).  The seeds are tests/fuzz/corpus
# and both fixtures; new inputs go to $FUZZ_OUT/corpus, crashes, leaks and
# hangs to $FUZZ_OUT/artifacts.  Leak checking is off while fuzzing (HDF5
# 1.10 leaks on many of its own error paths, and every leak would end a run);
# tests/fuzz/triage.sh afterwards replays every input with it on.  Copy an
# input that crashed our code into tests/fuzz/corpus so that make check
# replays it (tests/fuzz-replay.sh), and fix what it found; one that crashes
# inside HDF5 itself needs containment (acttrace-format(5), VALIDATION).
set -eu
seconds=${1:-60}
test $# -gt 0 && shift
CC=${CC_FUZZ:-clang}
command -v "$CC" >/dev/null || { echo "run.sh: $CC not found" >&2; exit 77; }
out=${FUZZ_OUT:-/tmp/acttrace-fuzz}
mkdir -p "$out/corpus" "$out/seeds" "$out/artifacts"
cp tests/fuzz/corpus/* "$out/seeds/"
# FUZZ_FIXTURES=0: not the fixtures (1.6 MB and 0.7 MB, thirty points):
# libFuzzer then mutates mostly their copies, at a tenth of the rate.
if test "${FUZZ_FIXTURES:-1}" != 0; then
	cp tests/fixtures/v1/tiny.h5 "$out/seeds/fixture-v1-tiny.h5"
	cp tests/fixtures/v2/tiny.h5 "$out/seeds/fixture-v2-tiny.h5"
fi
# FUZZ_V1=0: no version 1 seeds (superblock version 0).  HDF5 1.10.8 crashes
# on their mutations every few hundred runs (H5HG_read, acttrace-format(5)),
# and in fork mode each crash restarts a job: a campaign over the current
# format alone runs several times faster.
if test "${FUZZ_V1:-1}" = 0; then
	for f in "$out"/seeds/*; do
		test "$(od -An -tu1 -j8 -N1 "$f" | tr -d ' ')" != 0 || rm "$f"
	done
fi
max_len=$(wc -c "$out"/seeds/* | sort -n | tail -n 2 | head -n 1 | awk '{print $1}')
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
hdf5_cflags=$(pkg-config --cflags hdf5 2>/dev/null || pkg-config --cflags hdf5-serial 2>/dev/null || true)
hdf5_libs=$(pkg-config --libs hdf5 2>/dev/null || pkg-config --libs hdf5-serial 2>/dev/null || echo -lhdf5)
srcs="libtrace/h5util.c libtrace/error.c libtrace/accum.c libtrace/codec.c libtrace/zstd-filter.c
libtrace/reader.c"
# shellcheck disable=SC2086
$CC $flags -DFUZZ_LIBFUZZER -fopenmp -I. -Ilibtrace $hdf5_cflags tests/fuzz/fuzz-trace.c $srcs \
	-o "$out/fuzz-trace" $hdf5_libs -lzstd -lpthread -lm
# No HDF5 plugins: filter 32015 is then the reader's own, built in above under
# the sanitizers, not the plain build's plugin (or the system's).
HDF5_PLUGIN_PRELOAD=::
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
export HDF5_PLUGIN_PRELOAD ASAN_OPTIONS
"$out/fuzz-trace" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=4096 \
	-timeout=20 -detect_leaks=0 -artifact_prefix="$out/artifacts/" "$@" \
	"$out/corpus" "$out/seeds"
