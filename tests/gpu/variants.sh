#!/bin/sh
# variants.sh: build the kernel in several configurations and time each with
# bench-kernel, in one device call:  sh tests/gpu/variants.sh NAME=FLAGS ...
# e.g. sh tests/gpu/variants.sh 'lc2mb2=-DATC_LANE_CHANNELS=2 -DATC_MIN_BLOCKS=2'
# Summaries go to $OUT/variants.txt.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
for v in "$@"; do
	name=${v%%=*} flags=${v#*=}
	echo "== $name: $flags" | tee -a "$OUT/variants.txt"
	BUILD=/tmp/acttrace-$name OUT="$OUT/$name" NVCC_EXTRA="$flags" \
		sh tests/gpu/run.sh build kernel >/dev/null 2>&1
	cat "$OUT/$name/summary.txt" >>"$OUT/variants.txt"
done
cat "$OUT/variants.txt"
