#!/bin/sh
# update.sh: regenerate the golden outputs after a deliberate change to
# trace-synth or to trace-stats' formatting.  Run from the build directory:
#   sh $(top_srcdir)/tests/golden/update.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./trace-synth --arch tiny --tokens 256 --seed 7 --samples 16 -o "$tmp/tiny.h5" -q
./trace-stats "$tmp/tiny.h5" >"$here/stats-tiny.tsv"
./trace-stats -p layers.1.mlp.down_proj.in "$tmp/tiny.h5" >"$here/stats-tiny-down_proj.tsv"

./trace-outliers "$tmp/tiny.h5" >"$here/outliers-tiny.tsv"
./trace-outliers --count "$tmp/tiny.h5" >"$here/outliers-tiny-count.tsv"
./trace-outliers --sweep 2:8:1 "$tmp/tiny.h5" >"$here/outliers-tiny-sweep.tsv"
./trace-outliers -m massive "$tmp/tiny.h5" >"$here/outliers-tiny-massive.tsv"
echo "updated $here"
