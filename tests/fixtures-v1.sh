#!/bin/sh
# fixtures-v1.sh: a trace written by the version-1 writer, kept frozen in
# tests/fixtures/v1, read by every reading tool.  Its outputs were recorded
# once, when the file was written, and are never regenerated: a change in
# them means a reader no longer reads version 1 as it did (see "CHANGES IN
# VERSION 2" in acttrace-format(5): version 1 stays readable).  The same
# trace-synth command written by the version-2 writer (tests/fixtures/v2,
# also frozen: bfloat16 samples, fixed-length strings, superblock 2) holds
# the same values, so every tool must print the same for it; so must the
# version-3 twin (tests/fixtures/v3, frozen: superblock 3, and the second
# slot of statistics of its checkpoint half way, acttrace-format(5)).
set -eu
. "${top_srcdir:-.}/tests/common.sh"
v1=$top_srcdir/tests/fixtures/v1

# read_fixture TRACE VERSION: every reading tool on TRACE prints what was
# recorded from the version-1 fixture
read_fixture() {
	trace=$1 version=$2
	expect_exit 0 trace-stats --info "$trace"
	grep -Eq "^format_version	$version\$" "$tmp/out" ||
		fail "$trace is not version $version: $(cat "$tmp/out")"

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
		rm -rf "$tmp/plot-$kind"
		expect_exit 0 trace-plot "$kind" $args "$trace" --script "$tmp/plot-$kind"
		test -s "$tmp/plot-$kind/$kind.gp" || fail "trace-plot $kind wrote no script for $trace"
	done
}

read_fixture "$v1/tiny.h5" 1
read_fixture "$top_srcdir/tests/fixtures/v2/tiny.h5" 2
read_fixture "$top_srcdir/tests/fixtures/v3/tiny.h5" 3
echo "ok: the version-1 fixture reads with every tool, and its version-2 and 3 twins the same"
