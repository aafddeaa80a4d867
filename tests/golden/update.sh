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
echo "updated $here"
