#!/bin/sh
# tools-stats.sh: trace-stats run as a user would: options, golden output,
# formats, pipes, and agreement between its two tables.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
golden=$top_srcdir/tests/golden
tab=$(printf '\t')

trace-synth --arch tiny --tokens 256 --seed 7 --samples 16 -o "$tmp/tiny.h5" \
	--truth "$tmp/truth.tsv" -q

# --- usage
expect_exit 0 trace-stats --help
grep -q '^Usage: trace-stats' "$tmp/out" || fail "--help prints no usage"
expect_exit 0 trace-stats --version
grep -Eq '^trace-stats \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version: $(cat "$tmp/out")"
expect_exit 2 trace-stats
expect_stderr "^trace-stats: no trace file given"
expect_exit 2 trace-stats --bogus "$tmp/tiny.h5"
expect_stderr "^trace-stats: option '--bogus' is unknown"
expect_exit 2 trace-stats --help=3
expect_stderr "^trace-stats: option '--help' is unknown, or lacks or takes no argument"
test "$(wc -l <"$tmp/err")" -eq 2 || fail "unknown option: not one message plus the --help hint"
expect_exit 2 trace-stats --format=xml "$tmp/tiny.h5"
expect_stderr "unknown format 'xml'"
expect_exit 2 trace-stats --digits 0 "$tmp/tiny.h5"
expect_exit 2 trace-stats "$tmp/tiny.h5" "$tmp/tiny.h5"
expect_exit 2 trace-stats --info -p x "$tmp/tiny.h5"
expect_exit 1 trace-stats -p no.such.point "$tmp/tiny.h5"
expect_stderr "^trace-stats: .*tiny.h5: no point 'no.such.point'"
test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line on stderr"

# --- golden output (regenerate with tests/golden/update.sh when trace-synth changes on purpose)
trace-stats "$tmp/tiny.h5" >"$tmp/points.tsv"
same_file "$golden/stats-tiny.tsv" "$tmp/points.tsv"
trace-stats -p layers.1.mlp.down_proj.in "$tmp/tiny.h5" >"$tmp/channels.tsv"
same_file "$golden/stats-tiny-down_proj.tsv" "$tmp/channels.tsv"

# --- the per-point table: one row per point, the header names the columns
head -n 1 "$tmp/points.tsv" | grep -qx "point${tab}layer${tab}component${tab}site${tab}direction${tab}channels${tab}count${tab}mean${tab}std${tab}min${tab}max${tab}absmax${tab}absmean${tab}kurtosis${tab}nonfinite" ||
	fail "per-point header: $(head -n 1 "$tmp/points.tsv")"
points=$(trace-stats --info "$tmp/tiny.h5" | awk -F'\t' '$1 == "points" { print $2 }')
test "$(trace-stats -H "$tmp/tiny.h5" | wc -l)" -eq "$points" || fail "-H: not one row per point"

# --- per channel: counts add up to the pooled count of the point
pooled=$(awk -F'\t' '$1 == "layers.1.mlp.down_proj.in" { print $7 }' "$tmp/points.tsv")
summed=$(awk -F'\t' 'NR > 1 { n += $2 } END { print n }' "$tmp/channels.tsv")
test "$pooled" = "$summed" || fail "pooled count $pooled != summed channel counts $summed"

# --- a planted outlier channel is the one with the largest |mean| (a pipe a user would write)
point=$(awk -F'\t' 'NR > 1 && $1 ~ /mlp/ { print $1; exit }' "$tmp/truth.tsv")
test -n "$point" || fail "no planted MLP outlier in the truth file"
top=$(trace-stats -H -p "$point" "$tmp/tiny.h5" |
	awk -F'\t' '{ m = $3 < 0 ? -$3 : $3; print m "\t" $1 }' | sort -g -r | head -n 1 | cut -f 2)
awk -F'\t' -v p="$point" -v c="$top" '$1 == p && $2 == c { found = 1 } END { exit !found }' \
	"$tmp/truth.tsv" || fail "channel $top of $point is not a planted outlier"

# --- formats
trace-stats --format=csv "$tmp/tiny.h5" >"$tmp/points.csv"
test "$(wc -l <"$tmp/points.csv")" -eq "$(wc -l <"$tmp/points.tsv")" || fail "csv row count"
tr ',' '\t' <"$tmp/points.csv" | same_file "$tmp/points.tsv" /dev/stdin
trace-stats --format=json "$tmp/tiny.h5" >"$tmp/points.json"
test "$(grep -c '"point": ' "$tmp/points.json")" -eq "$points" || fail "json: not one object per point"
head -c 1 "$tmp/points.json" | grep -q '\[' || fail "json is not an array"
if test -n "${PYTHON_TEST:-}"; then
	"$PYTHON_TEST" -c 'import json, sys; rows = json.load(open(sys.argv[1])); assert len(rows) == int(sys.argv[2])' \
		"$tmp/points.json" "$points" || fail "json does not parse"
fi

# --- --info
trace-stats --info "$tmp/tiny.h5" >"$tmp/info.tsv"
for key in format format_version producer created model complete tokens points; do
	grep -q "^$key$tab" "$tmp/info.tsv" || fail "--info lacks $key"
done
grep -qx "format${tab}acttrace" "$tmp/info.tsv" || fail "--info format"
grep -qx "complete${tab}1" "$tmp/info.tsv" || fail "--info complete"
grep -qx "tokens${tab}256" "$tmp/info.tsv" || fail "--info tokens"

# --- an incomplete trace (the writer died after a checkpoint): read, with a warning
head -c 128 /dev/zero >"$tmp/zeros.raw"
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 8 --channels 4 \
	--abandon -o "$tmp/crashed.h5" "$tmp/zeros.raw"
expect_exit 0 trace-stats "$tmp/crashed.h5"
expect_stderr "^trace-stats: .*crashed.h5: warning: incomplete trace \(complete=0\)"
awk -F'\t' 'NR == 2 && $7 == 32 && $8 == 0 { ok = 1 } END { exit !ok }' "$tmp/out" ||
	fail "incomplete trace: expected count 32, mean 0: $(cat "$tmp/out")"
expect_exit 0 trace-stats -q "$tmp/crashed.h5"
test ! -s "$tmp/err" || fail "-q still warns"

# --- stdout closed early (head) must not turn into an error message
trace-stats "$tmp/tiny.h5" | head -n 1 >/dev/null
echo "ok - trace-stats"
