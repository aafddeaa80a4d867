#!/bin/sh
# tools-merge.sh: trace-merge run as a user would: usage, a good merge, and
# bad input (points, channels, histogram layout, sampling or weights that
# differ, incomplete, truncated, non-trace and missing inputs, OUT equal to an
# input by any name): each a one-line error naming the file, exit 1, and
# nothing at OUT (an existing OUT untouched, no temporary left).  The numbers
# of a merge are checked by test_merge.py.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
feed="$top_builddir/tests/at-feed"

# Raw float32 data for at-feed: 8 rows of 4 and of 8 channels, two 2 x 2
# weights (zeros, and ones: 1.0f is 00 00 80 3f little-endian).
head -c 128 /dev/zero >"$tmp/rows4"
head -c 256 /dev/zero >"$tmp/rows8"
head -c 16 /dev/zero >"$tmp/w0"
printf '\000\000\200\077\000\000\200\077\000\000\200\077\000\000\200\077' >"$tmp/w1"
trace() { # trace OUT [at-feed options]: 8 rows of 4 channels, weight w0
	out=$1
	shift
	"$feed" --dtype f32 --layout tc --batches 1 --rows 8 --channels 4 \
		--weight "$tmp/w0:2:2" "$@" -o "$out" "$tmp/rows4"
}
trace "$tmp/a.h5"
trace "$tmp/b.h5"

# --- usage
expect_exit 0 trace-merge --help
grep -q '^Usage: trace-merge' "$tmp/out" || fail "--help prints no usage"
test ! -s "$tmp/err" || fail "--help wrote to stderr"
expect_exit 0 trace-merge --version
grep -Eqx 'trace-merge \(acttrace\) [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-merge "$tmp/a.h5" "$tmp/b.h5"
expect_stderr "^trace-merge: -o OUT is required"
expect_exit 2 trace-merge -o "$tmp/m.h5"
expect_stderr "^trace-merge: no traces to merge"
expect_exit 2 trace-merge --bogus -o "$tmp/m.h5" "$tmp/a.h5"
expect_exit 2 trace-merge -o
test ! -e "$tmp/m.h5" || fail "a usage error wrote OUT"

# --- a good merge: quiet, complete, twice the rows of one input
expect_exit 0 trace-merge -o "$tmp/m.h5" "$tmp/a.h5" "$tmp/b.h5"
test ! -s "$tmp/out" && test ! -s "$tmp/err" || fail "a merge printed something"
trace-stats -H "$tmp/m.h5" | cut -f 7 >"$tmp/count"
test "$(cat "$tmp/count")" = 64 || fail "merged count $(cat "$tmp/count"), expected 2 x 8 x 4"
# one input is a merge too
expect_exit 0 trace-merge -o "$tmp/one.h5" "$tmp/a.h5"
echo "ok - usage and a good merge"

# bad MESSAGE-PATTERN FILE...: trace-merge fails on FILE... with one line on
# stderr matching the pattern, exit 1, and nothing new in the directory.
files() {
	ls "$tmp" | grep -Evx 'out|err|before|after'
}
bad() {
	pattern=$1
	shift
	files >"$tmp/before"
	expect_exit 1 trace-merge -o "$tmp/out.h5" "$@"
	expect_stderr "^trace-merge: $pattern"
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line: $(cat "$tmp/err")"
	test ! -e "$tmp/out.h5" || fail "$pattern: OUT was written"
	files >"$tmp/after"
	cmp -s "$tmp/before" "$tmp/after" ||
		fail "$pattern: files left behind: $(diff "$tmp/before" "$tmp/after")"
}

trace "$tmp/other-point.h5" --point layers.0.mlp.up_proj.out
bad ".*other-point\.h5: point 0 is 'layers\.0\.mlp\.up_proj\.out', in .*a\.h5 it is 'layers\.0\.mlp\.down_proj\.in'" \
	"$tmp/a.h5" "$tmp/other-point.h5"
"$feed" --dtype f32 --layout tc --batches 1 --rows 8 --channels 8 --weight "$tmp/w0:2:2" \
	-o "$tmp/channels8.h5" "$tmp/rows8"
bad ".*channels8\.h5: point 'layers\.0\.mlp\.down_proj\.in' has 8 channels, in .*a\.h5 4" \
	"$tmp/a.h5" "$tmp/channels8.h5"
trace "$tmp/nohist.h5" --no-hist
bad ".*nohist\.h5: histogram layout differs: point 'layers\.0\.mlp\.down_proj\.in' has no histogram" \
	"$tmp/a.h5" "$tmp/nohist.h5"
trace "$tmp/sampled.h5" --every 2
bad ".*sampled\.h5: sampling differs: every \(n = 2\), in .*a\.h5 none" "$tmp/a.h5" "$tmp/sampled.h5"
"$feed" --dtype f32 --layout tc --batches 1 --rows 8 --channels 4 --weight "$tmp/w1:2:2" \
	-o "$tmp/weights1.h5" "$tmp/rows4"
bad ".*weights1\.h5: weight 'model\.layers\.0\.mlp\.down_proj' differs from .*a\.h5's \(row_absmax\[0\] = 1, not 0\)" \
	"$tmp/a.h5" "$tmp/weights1.h5"
trace "$tmp/crashed.h5" --abandon
bad ".*crashed\.h5: incomplete trace \(complete=0\)" "$tmp/a.h5" "$tmp/crashed.h5"
head -c 3000 "$tmp/a.h5" >"$tmp/truncated.h5"
bad ".*truncated\.h5: " "$tmp/a.h5" "$tmp/truncated.h5"
echo "not a trace" >"$tmp/text.h5"
bad ".*text\.h5: not an HDF5 file" "$tmp/a.h5" "$tmp/text.h5"
: >"$tmp/empty.h5"
bad ".*empty\.h5: empty file" "$tmp/empty.h5" "$tmp/a.h5"
bad ".*missing\.h5: No such file" "$tmp/a.h5" "$tmp/missing.h5"
echo "ok - bad inputs: one line, exit 1, nothing written"

# --- the ranks of a tensor-parallel capture (at-feed --slice RANK/WORLD:OFFSET:FULL):
# a good assembly, then slices that overlap or leave a gap, /tokens that
# differ, a missing rank and a data-parallel shard among the ranks
slice() { # slice OUT RANK/WORLD:OFFSET:FULL [at-feed options]
	out=$1 spec=$2
	shift 2
	trace "$out" --slice "$spec" "$@"
}
slice "$tmp/tp0.h5" 0/2:0:8
slice "$tmp/tp1.h5" 1/2:4:8
expect_exit 0 trace-merge -o "$tmp/tp.h5" "$tmp/tp1.h5" "$tmp/tp0.h5"
trace-stats -H "$tmp/tp.h5" | cut -f 6,7 >"$tmp/count"
test "$(cat "$tmp/count")" = "$(printf '8\t64')" ||
	fail "assembled channels and count $(cat "$tmp/count"), expected 8 channels of 8 rows"
# a rank's own trace: every tool that opens it says that it holds slices
for tool in "trace-stats" "trace-stats -p layers.0.mlp.down_proj.in" "trace-outliers"; do
	expect_exit 0 $tool "$tmp/tp1.h5"
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "$tool: not one line: $(cat "$tmp/err")"
	expect_stderr "^trace-[a-z]*: .*tp1\.h5: warning: rank 1 of 2 of a tensor-parallel capture: 1 of 1 points hold channel slices, numbered from 0 within the slice and analysed without the other ranks' channels; trace-merge the ranks' traces into whole points$"
done
expect_exit 0 trace-stats "$tmp/tp.h5"
test ! -s "$tmp/err" || fail "the assembled trace warns: $(cat "$tmp/err")"
slice "$tmp/ov0.h5" 0/2:0:6
slice "$tmp/ov1.h5" 1/2:2:6
bad ".*ov1\.h5: point 'layers\.0\.mlp\.down_proj\.in': channels 2 to 5 overlap .*ov0\.h5's, which end at 3$" \
	"$tmp/ov0.h5" "$tmp/ov1.h5"
slice "$tmp/gap0.h5" 0/2:0:10
slice "$tmp/gap1.h5" 1/2:6:10
bad ".*gap1\.h5: point 'layers\.0\.mlp\.down_proj\.in': no input holds channels 4 to 5 of 10 \(a gap before this input's 6 to 9\)$" \
	"$tmp/gap1.h5" "$tmp/gap0.h5"
slice "$tmp/end0.h5" 0/2:0:12
slice "$tmp/end1.h5" 1/2:4:12
bad ".*end1\.h5: point 'layers\.0\.mlp\.down_proj\.in': no input holds channels 8 to 11 of 12 \(a gap after this input's 4 to 7\)$" \
	"$tmp/end0.h5" "$tmp/end1.h5"
slice "$tmp/tok1.h5" 1/2:4:8 --seq-len 4
bad ".*tok1\.h5: token 4 \(seq 1, pos 0, id 28\) differs from .*tp0\.h5's \(seq 0, pos 4, id 28\): tensor-parallel ranks see the same tokens$" \
	"$tmp/tp0.h5" "$tmp/tok1.h5"
slice "$tmp/of3-0.h5" 0/3:0:12
slice "$tmp/of3-1.h5" 1/3:4:12
bad ".*of3-1\.h5: rank 1 of 3: rank 2 of its tensor-parallel capture is not among the inputs$" \
	"$tmp/of3-1.h5" "$tmp/of3-0.h5"
bad ".*a\.h5: not a rank of a tensor-parallel capture \(no channel slices\), while .*tp0\.h5 holds channel slices: data-parallel shards and tensor-parallel ranks are not merged together$" \
	"$tmp/tp0.h5" "$tmp/tp1.h5" "$tmp/a.h5"
bad ".*tp1\.h5: rank 1, like .*tp1\.h5$" "$tmp/tp0.h5" "$tmp/tp1.h5" "$tmp/tp1.h5"
echo "ok - tensor-parallel ranks: assembled, and bad slices, tokens and ranks refused"

# --- OUT equal to an input, by its name, a hard link or a symbolic link:
# refused before anything is touched
cp "$tmp/a.h5" "$tmp/a.copy"
ln "$tmp/a.h5" "$tmp/hard.h5"
ln -s a.h5 "$tmp/soft.h5"
for out in a.h5 hard.h5 soft.h5; do
	expect_exit 1 trace-merge -o "$tmp/$out" "$tmp/a.h5" "$tmp/b.h5"
	expect_stderr "^trace-merge: .*$out: the output is also input 1 \(.*a\.h5\)$"
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line: $(cat "$tmp/err")"
	cmp -s "$tmp/a.h5" "$tmp/a.copy" || fail "-o $out changed the input"
done
echo "ok - OUT equal to an input"

# --- an existing OUT survives a failed merge, and is replaced by a good one
echo "keep me" >"$tmp/keep.h5"
expect_exit 1 trace-merge -o "$tmp/keep.h5" "$tmp/a.h5" "$tmp/nohist.h5"
test "$(cat "$tmp/keep.h5")" = "keep me" || fail "a failed merge touched the existing OUT"
expect_exit 0 trace-merge -o "$tmp/keep.h5" "$tmp/a.h5" "$tmp/b.h5"
trace-stats "$tmp/keep.h5" >/dev/null || fail "the replaced OUT is not a trace"
echo "ok - an existing OUT"

# --- the overrides
expect_exit 0 trace-merge --force -o "$tmp/forced.h5" "$tmp/a.h5" "$tmp/weights1.h5"
expect_exit 0 trace-merge --allow-incomplete -o "$tmp/partial.h5" "$tmp/a.h5" "$tmp/crashed.h5"
trace-stats "$tmp/partial.h5" >/dev/null 2>"$tmp/err"
test ! -s "$tmp/err" || fail "the merge of an incomplete input is not complete: $(cat "$tmp/err")"
if test -n "${PYTHON_TEST:-}"; then
	"$PYTHON_TEST" - "$tmp" <<'EOF' || fail "the overrides are not recorded"
import sys
import h5py
tmp = sys.argv[1]
with h5py.File(f"{tmp}/forced.h5", "r") as f:
    assert f.attrs["merged_weights_differ"] == 1
    assert "merged_incomplete" not in f.attrs
    assert f["weights/model.layers.0.mlp.down_proj/row_absmax"][:].max() == 0  # the first's
with h5py.File(f"{tmp}/partial.h5", "r") as f:
    assert f.attrs["merged_incomplete"] == 1 and f.attrs["complete"] == 1
    assert list(f["provenance"]["complete"]) == [1, 0]
with h5py.File(f"{tmp}/m.h5", "r") as f:
    assert "merged_incomplete" not in f.attrs and "merged_weights_differ" not in f.attrs
EOF
	# a histogram layout that is not version 1's
	cp "$tmp/b.h5" "$tmp/bins.h5"
	"$PYTHON_TEST" -c 'import sys, h5py; h5py.File(sys.argv[1], "r+").attrs["hist_min_exp"] = -20' \
		"$tmp/bins.h5"
	bad ".*bins\.h5: histogram layout differs: hist_min_exp = -20, this acttrace's is -24" \
		"$tmp/a.h5" "$tmp/bins.h5"
	echo "ok - overrides recorded, histogram bins"
fi
echo "ok - trace-merge"
