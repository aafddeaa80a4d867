#!/bin/sh
# tools-outliers.sh: trace-outliers run as a user would: usage, golden rows,
# counts and sweeps, element rows, selections, several traces, pipes into
# trace-layers, and bad input.  (The numbers themselves are checked against
# numpy in test_criteria.py.)
set -eu
. "${top_srcdir:-.}/tests/common.sh"
golden=$top_srcdir/tests/golden
tab=$(printf '\t')

trace-synth --arch tiny --tokens 256 --seed 7 --samples 16 -o "$tmp/tiny.h5" \
	--truth "$tmp/truth.tsv" -q

# --- usage
expect_exit 0 trace-outliers --help
grep -q '^Usage: trace-outliers' "$tmp/out" || fail "--help prints no usage"
grep -q -- '--sweep' "$tmp/out" || fail "--help does not mention --sweep"
expect_exit 0 trace-outliers --version
grep -Eq '^trace-outliers \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-outliers
expect_stderr "^trace-outliers: no trace file given"
expect_exit 2 trace-outliers -m nonsense "$tmp/tiny.h5"
expect_stderr "^trace-outliers: unknown method 'nonsense'"
expect_exit 2 trace-outliers -k abc "$tmp/tiny.h5"
expect_exit 2 trace-outliers -k -1 "$tmp/tiny.h5"
expect_exit 2 trace-outliers -m ratio -k 3 "$tmp/tiny.h5"
expect_exit 2 trace-outliers --sweep 6:4:1 "$tmp/tiny.h5"
expect_exit 2 trace-outliers --sweep 1:2 "$tmp/tiny.h5"
expect_exit 2 trace-outliers --layers 3-1 "$tmp/tiny.h5"
expect_exit 2 trace-outliers --stat median "$tmp/tiny.h5"
test "$(head -n 1 "$tmp/err" | wc -l)" -eq 1 || fail "usage errors: no message"

# --- golden outputs (tests/golden/update.sh regenerates them)
trace-outliers "$tmp/tiny.h5" >"$tmp/rows.tsv"
same_file "$golden/outliers-tiny.tsv" "$tmp/rows.tsv"
trace-outliers --count "$tmp/tiny.h5" >"$tmp/count.tsv"
same_file "$golden/outliers-tiny-count.tsv" "$tmp/count.tsv"
trace-outliers --sweep 2:8:1 "$tmp/tiny.h5" >"$tmp/sweep.tsv"
same_file "$golden/outliers-tiny-sweep.tsv" "$tmp/sweep.tsv"
trace-outliers -m massive "$tmp/tiny.h5" >"$tmp/massive.tsv"
same_file "$golden/outliers-tiny-massive.tsv" "$tmp/massive.tsv"

head -n 1 "$tmp/rows.tsv" | grep -qx "point${tab}layer${tab}component${tab}site${tab}channel${tab}stat${tab}value${tab}score${tab}threshold${tab}method" ||
	fail "row header: $(head -n 1 "$tmp/rows.tsv")"
head -n 1 "$tmp/massive.tsv" | grep -qx "point${tab}layer${tab}channel${tab}token${tab}seq${tab}pos${tab}value${tab}ratio" ||
	fail "element header: $(head -n 1 "$tmp/massive.tsv")"

# --- every row is an outlier: score > threshold
awk -F'\t' 'NR > 1 && !($8 > $9) { bad = 1 } END { exit bad }' "$tmp/rows.tsv" ||
	fail "a row with score <= threshold"
# --- the default criterion finds exactly the planted channels (the massive
# activations shift their channel means far enough to count too)
tail -n +2 "$tmp/rows.tsv" | cut -f 1,5 | sort >"$tmp/found"
awk -F'\t' 'NR > 1 { print $1 "\t" $2 }' "$tmp/truth.tsv" | sort -u >"$tmp/planted"
same_file "$tmp/planted" "$tmp/found"
# --- planted channels are steady (std 0.2 sigma_c): the channel-wise criterion,
# two-sided since half are shifted down, finds exactly the channel-mean plants
trace-outliers -H -m tensor-sigma --two-sided "$tmp/tiny.h5" | cut -f 1,5 | sort >"$tmp/found"
awk -F'\t' 'NR > 1 && $3 < 100 { print $1 "\t" $2 }' "$tmp/truth.tsv" | sort -u >"$tmp/planted"
same_file "$tmp/planted" "$tmp/found"

# --- the massive activations land on the first token of each sequence
awk -F'\t' 'NR > 1 && $6 != 0 { bad = 1 } NR > 1 { n++ } END { exit bad || !n }' "$tmp/massive.tsv" ||
	fail "massive activations off position 0, or none"

# --- counts agree with rows; the sweep's default-threshold row agrees with the count
rows=$(tail -n +2 "$tmp/rows.tsv" | wc -l)
counted=$(awk -F'\t' 'NR > 1 { n += $6 } END { print n }' "$tmp/count.tsv")
test "$rows" -eq "$counted" || fail "rows $rows != counted $counted"
swept=$(awk -F'\t' '$1 == 6 && $2 == "total" { print $5 }' "$tmp/sweep.tsv")
test "$swept" -eq "$rows" || fail "sweep at k=6 says $swept, rows $rows"
# a sweep never gains outliers as the threshold rises
awk -F'\t' 'NR > 1 && $2 == "total" { if (seen && $5 > last) bad = 1; last = $5; seen = 1 } END { exit bad }' \
	"$tmp/sweep.tsv" || fail "sweep is not monotone"

# --- selections
trace-outliers -H -p '*mlp*' "$tmp/tiny.h5" | awk -F'\t' '$1 !~ /mlp/ { bad = 1 } END { exit bad }' ||
	fail "--point selected a non-mlp point"
trace-outliers -H --component norm "$tmp/tiny.h5" | awk -F'\t' '$3 != "norm" { bad = 1 } END { exit bad }' ||
	fail "--component"
trace-outliers -H --count -l 1 "$tmp/tiny.h5" | awk -F'\t' '$2 != 1 { bad = 1 } END { exit bad }' ||
	fail "--layers"
expect_exit 0 trace-outliers -p 'no.such.*' "$tmp/tiny.h5"
expect_stderr "no point matches"
# repeated -p: the union of what each selects, in trace order
trace-outliers -H -p '*mlp*' "$tmp/tiny.h5" >"$tmp/p1"
trace-outliers -H -p '*norm*' "$tmp/tiny.h5" >"$tmp/p2"
[ -s "$tmp/p1" ] && [ -s "$tmp/p2" ] || fail "no mlp or norm outliers to select"
trace-outliers -H -p '*mlp*' -p '*norm*' "$tmp/tiny.h5" >"$tmp/p12"
sort "$tmp/p1" "$tmp/p2" | cmp -s - "$(sort "$tmp/p12" >"$tmp/p12s"; echo "$tmp/p12s")" ||
	fail "-p A -p B is not the union of -p A and -p B"

# --- several traces: a trace column, one block each
cp "$tmp/tiny.h5" "$tmp/again.h5"
trace-outliers --count "$tmp/tiny.h5" "$tmp/again.h5" >"$tmp/two.tsv"
head -n 1 "$tmp/two.tsv" | grep -q "^trace${tab}point" || fail "no trace column"
test "$(grep -c "^$tmp/again.h5$tab" "$tmp/two.tsv")" -eq "$(tail -n +2 "$tmp/count.tsv" | wc -l)" ||
	fail "second trace's block"

# --- formats
trace-outliers --format=json "$tmp/tiny.h5" >"$tmp/rows.json"
test "$(grep -c '"method": ' "$tmp/rows.json")" -eq "$rows" || fail "json rows"
trace-outliers -H --format=csv "$tmp/tiny.h5" | wc -l | grep -qx " *$rows" || fail "csv rows"

# --- pipes: into trace-layers, equal to trace-layers running the criterion itself
trace-outliers -m grand-mean -k 6 "$tmp/tiny.h5" | trace-layers --by component "$tmp/tiny.h5" >"$tmp/piped.tsv"
trace-layers --by component -m grand-mean -k 6 "$tmp/tiny.h5" </dev/null >"$tmp/alone.tsv"
same_file "$tmp/alone.tsv" "$tmp/piped.tsv"
trace-outliers -m layer-sigma "$tmp/tiny.h5" | trace-layers --by layer "$tmp/tiny.h5" >"$tmp/piped.tsv"
trace-layers --by layer -m layer-sigma "$tmp/tiny.h5" </dev/null >"$tmp/alone.tsv"
same_file "$tmp/alone.tsv" "$tmp/piped.tsv"

# --- bad input: a trace without the statistic a method needs, damaged files
head -c 256 /dev/zero >"$tmp/zeros.raw"
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 16 --channels 4 \
	--no-hist -o "$tmp/nohist.h5" "$tmp/zeros.raw"
expect_exit 1 trace-outliers -m frequency "$tmp/nohist.h5"
expect_stderr "^trace-outliers: $tmp/nohist.h5: .*histogram"
test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line: $(cat "$tmp/err")"
expect_exit 0 trace-outliers -m grand-mean "$tmp/nohist.h5"
printf 'not a trace\n' >"$tmp/text.h5"
expect_exit 1 trace-outliers "$tmp/text.h5"
expect_stderr "^trace-outliers: $tmp/text.h5: not an HDF5 file"
expect_exit 1 trace-outliers "$tmp/tiny.h5" "$tmp/missing.h5"
expect_stderr "^trace-outliers: $tmp/missing.h5: "
echo "ok - trace-outliers"
