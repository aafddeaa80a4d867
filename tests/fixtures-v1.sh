#!/bin/sh
# fixtures-v1.sh: a trace written by the version-1 writer, kept frozen in
# tests/fixtures/v1, read by every reading tool.  Its outputs were recorded
# once, when the file was written, and are never regenerated: a change in
# them means a reader no longer reads version 1 as it did (see "CHANGES IN
# VERSION 2" in acttrace-format(5): version 1 stays readable).  The same
# trace-synth command written by the version-2 writer (tests/fixtures/v2,
# also frozen: bfloat16 samples, fixed-length strings, superblock 2) holds
# the same values, so every tool must print the same for it.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
v1=$top_srcdir/tests/fixtures/v1
trace=$v1/tiny.h5

expect_exit 0 trace-stats --info "$trace"
grep -Eq '^format_version	1$' "$tmp/out" || fail "the fixture is not version 1: $(cat "$tmp/out")"

trace-stats "$trace" >"$tmp/stats.tsv"
same_file "$v1/stats.tsv" "$tmp/stats.tsv"
trace-stats -p layers.1.mlp.down_proj.in "$trace" >"$tmp/down.tsv"
same_file "$v1/stats-down_proj.tsv" "$tmp/down.tsv"
trace-outliers "$trace" >"$tmp/outliers.tsv"
same_file "$v1/outliers.tsv" "$tmp/outliers.tsv"
trace-outliers -m massive "$trace" >"$tmp/massive.tsv"
same_file "$v1/outliers-massive.tsv" "$tmp/massive.tsv"
trace-outliers "$trace" | trace-layers --by component "$trace" >"$tmp/layers.tsv"
same_file "$v1/layers-component.tsv" "$tmp/layers.tsv"

# figures: the script and its data (gnuplot itself is tools-plot.sh's)
for kind in bars3d layers top hist; do
	case $kind in
	bars3d) args="--site mlp.up_proj.out" ;;
	hist) args="-p layers.1.mlp.down_proj.in" ;;
	*) args= ;;
	esac
	expect_exit 0 trace-plot "$kind" $args "$trace" --script "$tmp/plot-$kind"
	test -s "$tmp/plot-$kind/$kind.gp" || fail "trace-plot $kind wrote no script for the fixture"
done
v2=$top_srcdir/tests/fixtures/v2/tiny.h5
expect_exit 0 trace-stats --info "$v2"
grep -Eq '^format_version	2$' "$tmp/out" || fail "the v2 fixture is not version 2: $(cat "$tmp/out")"
trace-stats "$v2" >"$tmp/stats2.tsv"
same_file "$v1/stats.tsv" "$tmp/stats2.tsv"
trace-stats -p layers.1.mlp.down_proj.in "$v2" >"$tmp/down2.tsv"
same_file "$v1/stats-down_proj.tsv" "$tmp/down2.tsv"
trace-outliers -m massive "$v2" >"$tmp/massive2.tsv"
same_file "$v1/outliers-massive.tsv" "$tmp/massive2.tsv"
trace-outliers "$v2" | trace-layers --by component "$v2" >"$tmp/layers2.tsv"
same_file "$v1/layers-component.tsv" "$tmp/layers2.tsv"
echo "ok: the version-1 fixture reads with every tool, and its version-2 twin the same"
