#!/bin/sh
# tools-layers.sh: trace-layers run as a user would: usage, golden tables of a
# synthetic RecurrentGemma-2B in every format, the ways of giving it the
# outliers (a table on stdin or with -i, the criterion run by itself, the
# pipeline from trace-outliers) agreeing, sums and totals against the
# outlier study's Table 4.1, and bad input.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
golden=$top_srcdir/tests/golden

# One line on stderr (exit 1) or a first line and the --help hint (exit 2).
first_line_is() {
	head -n 1 "$tmp/err" | grep -Eq -- "$1" ||
		fail "stderr does not start with '$1': $(head -c 400 "$tmp/err")"
}
one_line() {
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "not one line on stderr: $(head -c 400 "$tmp/err")"
}

# The planted channels of trace-synth are the outliers of the golden tables:
# they do not depend on any criterion's implementation.
trace-synth --arch recurrent-gemma-2b --tokens 32 --seed 1 -q -o "$tmp/rg.h5" --truth "$tmp/truth.tsv"
rg=$tmp/rg.h5
planted=$tmp/truth.tsv

# --- usage
expect_exit 0 trace-layers --help
grep -q '^Usage: trace-layers' "$tmp/out" || fail "--help prints no usage"
grep -q -- '--groups' "$tmp/out" || fail "--help does not mention --groups"
grep -q -- '--layer-share' "$tmp/out" || fail "--help lacks the criterion options"
test ! -s "$tmp/err" || fail "--help wrote to stderr"
expect_exit 0 trace-layers --version
grep -Eqx 'trace-layers \(acttrace\) [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" ||
	fail "bad --version: $(cat "$tmp/out")"
echo "ok - usage"

# --- golden tables: every breakdown in every format (tests/golden/layers-update.sh)
for format in tsv csv json latex markdown; do
	case $format in latex) ext=tex ;; markdown) ext=md ;; *) ext=$format ;; esac
	for by in component layer site; do
		trace-layers --by "$by" -f "$format" -i "$planted" "$rg" >"$tmp/got"
		same_file "$golden/layers-$by.$ext" "$tmp/got"
	done
	trace-layers --groups 0-8,9-17,18-25 -f "$format" -i "$planted" "$rg" >"$tmp/got"
	same_file "$golden/layers-groups.$ext" "$tmp/got"
done
echo "ok - golden tables, four breakdowns in five formats"

# --- Table 4.1's shape: the header, components by total channels, RecurrentGemma-2B's
#     1,545,216 channels, and a total row that is the sum of the rows
t41=$golden/layers-component.tsv
head -n 1 "$t41" | grep -qx 'component	total_channels	outlier_channels	pct_of_component	pct_of_outliers' ||
	fail "component header: $(head -n 1 "$t41")"
cut -f 1,2 "$t41" | tr '\t' ' ' | tr '\n' ' ' |
	grep -qx 'component total_channels mlp 732160 recurrent 322560 norm 271360 layer 133120 attention 86016 total 1545216 ' ||
	fail "components and their channels are not Table 4.1's: $(cut -f 1,2 "$t41" | tr '\n' ' ')"
awk -F'\t' 'NR > 1 && $1 != "total" { c += $2; o += $3; p += $5 }
	$1 == "total" { tc = $2; to = $3; tp = $5; tg = $4 }
	END {
		if (c != tc || o != to || tc != 1545216 || to != 2484) exit 1
		if (tp != 100 || p < 99.999 || p > 100.001 || (tg - 100 * to / tc)^2 > 1e-12) exit 1
	}' "$t41" || fail "the total row of --by component is not the sum of its rows: $(tail -n 1 "$t41")"
test "$(awk 'NR > 1' "$planted" | wc -l)" -eq 2484 || fail "trace-synth planted another number of channels"
for by in layer site; do
	awk -F'\t' 'NR > 1 && $1 != "total" { c += $2; o += $3 } $1 == "total" { tc = $2; to = $3 }
		END { exit !(c == tc && o == to && tc == 1545216 && to == 2484) }' "$golden/layers-$by.tsv" ||
		fail "--by $by: the rows do not add up to the total"
done
test "$(awk -F'\t' 'NR > 1 && $1 ~ /^[0-9]+$/' "$golden/layers-layer.tsv" | wc -l)" -eq 26 ||
	fail "--by layer: not one row per layer"
awk -F'\t' 'NR == 28 && $1 == "none" && $2 == 5120 { ok = 1 } END { exit !ok }' "$golden/layers-layer.tsv" ||
	fail "--by layer: the final norm (layer -1) is not the row 'none' before the total"
test "$(awk -F'\t' 'NR > 1 && $1 != "total"' "$golden/layers-site.tsv" | wc -l)" -eq 26 ||
	fail "--by site: not RecurrentGemma-2B's 26 site types"
# Table 4.2: three groups of 9, 9 and 8 layers; average = total / layers
awk -F'\t' 'NR == 1 { ok = $0 == "group\tlayers\tavg_outliers_per_layer\ttotal_outliers"; next }
	$1 != "total" { l += $2; o += $4; if (($3 - $4 / $2)^2 > 1e-6) ok = 0; keys = keys $1 "/" $2 " " }
	$1 == "total" { if ($2 != l || $4 != o || ($3 - o / l)^2 > 1e-6) ok = 0 }
	END { exit !(ok && keys == "0-8/9 9-17/9 18-25/8 ") }' "$golden/layers-groups.tsv" ||
	fail "--groups: $(tr '\n' ' ' <"$golden/layers-groups.tsv")"
echo "ok - totals: 1,545,216 channels, rows add up, groups average per layer"

# --- formats: LaTeX booktabs with escapes, Markdown pipes, JSON that parses
tex=$golden/layers-component.tex
head -n 2 "$tex" | tr '\n' ' ' | grep -qxF '\begin{tabular}{lrrrr} \toprule ' || fail "latex: no booktabs tabular"
tail -n 2 "$tex" | tr '\n' ' ' | grep -qxF '\bottomrule \end{tabular} ' || fail "latex: not closed"
grep -qF 'total\_channels' "$tex" || fail "latex: underscores not escaped"
grep -qF '1,545,216' "$tex" || fail "latex: no thousands separators"
if grep -q '[^\\][_%]' "$tex"; then fail "latex: an unescaped _ or %"; fi
grep -qF '0--8 & 9 &' "$golden/layers-groups.tex" || fail "latex: no en dash in a range of layers"
if grep -v '^| .* |$' "$golden/layers-component.md"; then fail "markdown: a line that is not a table row"; fi
sed -n 2p "$golden/layers-component.md" | grep -qxF '| :-- | --: | --: | --: | --: |' ||
	fail "markdown: alignment row"
trace-layers --by component -f latex -H -i "$planted" "$rg" >"$tmp/rows.tex"
if grep -q 'tabular\|toprule' "$tmp/rows.tex"; then fail "latex -H: more than the rows"; fi
test "$(grep -c '\\\\$' "$tmp/rows.tex")" -eq 6 || fail "latex -H: not 6 rows"
trace-layers --by layer -f markdown -H --no-total -i "$planted" "$rg" >"$tmp/rows.md"
test "$(wc -l <"$tmp/rows.md")" -eq 27 || fail "markdown -H --no-total: not 27 rows"
trace-layers --by site --no-total -H -i "$planted" "$rg" >"$tmp/sites"
test "$(wc -l <"$tmp/sites")" -eq 26 || fail "-H --no-total: not 26 rows"
if grep -q '^total' "$tmp/sites"; then fail "--no-total printed the total"; fi
trace-layers --by component -d 3 -i "$planted" "$rg" | awk -F'\t' '$1 == "mlp" { exit !($4 == "0.187") }' ||
	fail "--digits 3"
trace-layers --by component -f markdown --decimals 1 -i "$planted" "$rg" | grep -qF '| mlp | 732,160 | 1,369 | 0.2% | 55.1% |' ||
	fail "--decimals 1"
if test -n "${PYTHON_TEST:-}"; then
	for by in component layer site groups; do
		"$PYTHON_TEST" -c 'import json, sys; rows = json.load(open(sys.argv[1])); assert rows[-1][sys.argv[2]] == "total"' \
			"$golden/layers-$by.json" "$(test $by = groups && echo group || echo $by)" ||
			fail "layers-$by.json does not parse"
	done
fi
echo "ok - latex, markdown, json"

# --- the outliers from stdin, -i -, -i FILE agree; duplicates count once;
#     a count table (point, outliers) and columns in any order do too
trace-layers --by component "$rg" <"$planted" >"$tmp/stdin"
same_file "$t41" "$tmp/stdin"
cat "$planted" | trace-layers --by component "$rg" >"$tmp/pipe"
same_file "$t41" "$tmp/pipe"
trace-layers --by component -i - "$rg" <"$planted" >"$tmp/dash"
same_file "$t41" "$tmp/dash"
{ cat "$planted"; awk 'NR > 1' "$planted"; } | trace-layers --by component "$rg" >"$tmp/twice"
same_file "$t41" "$tmp/twice"
awk -F'\t' 'NR == 1 { print "point\tlayer\toutliers"; next } { n[$1]++ } END { for (p in n) print p "\t0\t" n[p] }' \
	"$planted" | trace-layers --by component "$rg" >"$tmp/counts"
same_file "$t41" "$tmp/counts"
awk -F'\t' '{ print $3 "\tx\t" $2 "\t" $1 }' "$planted" | trace-layers --by component "$rg" >"$tmp/reordered"
same_file "$t41" "$tmp/reordered"
echo "ok - stdin, -i -, duplicates, count tables, any column order"

# --- running the criterion: grand-mean with k 6 finds exactly the planted channels
#     here; a criterion option makes trace-layers run it, whatever stdin holds
trace-layers --by component -m grand-mean -k 6 "$rg" </dev/null >"$tmp/alone"
same_file "$t41" "$tmp/alone"
echo 'not a table' | trace-layers --by component -k 6 "$rg" >"$tmp/default"
same_file "$t41" "$tmp/default"
trace-layers --groups 0-8,9-17,18-25 --method grand-mean "$rg" </dev/null >"$tmp/alone"
same_file "$golden/layers-groups.tsv" "$tmp/alone"
echo "ok - the criterion run on the trace"

# --- the pipeline from trace-outliers equals trace-layers alone
if command -v trace-outliers >/dev/null 2>&1; then
	trace-synth --arch tiny --tokens 64 --seed 3 -q -o "$tmp/tiny.h5"
	# grand-mean with k 6 alone gave the golden tables above
	trace-outliers -m grand-mean -k 6 "$rg" >"$tmp/rows.tsv"
	for by in component layer site; do
		trace-layers --by $by "$rg" <"$tmp/rows.tsv" >"$tmp/piped"
		same_file "$golden/layers-$by.tsv" "$tmp/piped"
	done
	trace-layers --groups 0-8,9-17,18-25 "$rg" <"$tmp/rows.tsv" >"$tmp/piped"
	same_file "$golden/layers-groups.tsv" "$tmp/piped"
	for criterion in "-m grand-mean -k 6" "-m layer-sigma -k 4" "-m grand-mean -k 3 --stat absmean"; do
		# shellcheck disable=SC2086 # word splitting is the point
		trace-layers --by layer $criterion "$rg" </dev/null >"$tmp/alone"
		# shellcheck disable=SC2086
		trace-outliers $criterion "$rg" | trace-layers --by layer "$rg" >"$tmp/piped"
		same_file "$tmp/alone" "$tmp/piped"
		# shellcheck disable=SC2086
		trace-outliers --count $criterion "$rg" | trace-layers --by layer "$rg" >"$tmp/piped"
		same_file "$tmp/alone" "$tmp/piped"
	done
	# several traces: the rows of the others (column trace) are left out
	trace-outliers -m grand-mean -k 6 "$tmp/tiny.h5" "$rg" | trace-layers --by component "$rg" >"$tmp/piped"
	same_file "$t41" "$tmp/piped"
	echo "ok - trace-outliers | trace-layers equals trace-layers alone"
else
	echo "# skipped the pipeline checks: no trace-outliers on PATH"
fi

# --- bad usage: exit 2, the first line says what is wrong
usage_error() {
	pattern=$1
	shift
	expect_exit 2 "$@"
	first_line_is "^trace-layers: $pattern"
	test "$(wc -l <"$tmp/err")" -eq 2 || fail "'$*': not one message and the --help hint"
}
usage_error "no trace file given" trace-layers --by component
usage_error "no breakdown given" trace-layers -m grand-mean "$rg"
usage_error "unknown breakdown 'channel' \(component, layer or site\)" trace-layers --by channel "$rg"
usage_error "option '--bogus' is unknown" trace-layers --by layer --bogus "$rg"
usage_error "unknown format 'xml'" trace-layers --by layer -f xml "$rg"
usage_error "one trace file at a time" trace-layers --by layer "$rg" "$rg"
usage_error "--groups: .*'0-8,5-9': 5-9 overlaps 0-8" trace-layers --groups 0-8,5-9 "$rg"
usage_error "--groups: .*range 8-0 runs backwards" trace-layers --groups 8-0 "$rg"
usage_error "--groups: .*9-17 .*comes before 18-25" trace-layers --groups 18-25,9-17 "$rg"
usage_error "--groups: .*'early' is not a layer" trace-layers --groups early "$rg"
usage_error "--groups: .*empty" trace-layers --groups '' "$rg"
usage_error "--groups breaks down by layer, not by component" trace-layers --by component --groups 0-8 "$rg"
usage_error "unknown method 'sigma' \(grand-mean, layer-sigma, " trace-layers --by layer -m sigma "$rg"
usage_error "-k must be a number, not 'six'" trace-layers --by layer -k six "$rg"
usage_error "-k must be a positive number, not '0'" trace-layers --by layer -k 0 "$rg"
usage_error "-k must be a positive number, not '-6'" trace-layers --by layer -m layer-sigma -k -6 "$rg"
usage_error "-k does not apply to method 'ratio'" trace-layers --by layer -m ratio -k 6 "$rg"
usage_error "--beta does not apply to method 'grand-mean'" trace-layers --by layer --beta 0.5 "$rg"
usage_error "--share must be a share in .0, 1., not '2'" trace-layers --by layer -m frequency --share 2 "$rg"
usage_error "unknown statistic 'median'" trace-layers --by layer --stat median "$rg"
usage_error "criterion options do not apply to a table read with --input" \
	trace-layers --by layer -i "$planted" -k 6 "$rg"
usage_error "--decimals must be an integer" trace-layers --by layer --decimals x "$rg"
echo "ok - usage errors"

# --- bad input: exit 1, one line naming the input
table() {
	printf "$@" >"$tmp/table"
}
bad_table() {
	expect_exit 1 trace-layers --by layer "$rg" <"$tmp/table"
	first_line_is "^trace-layers: -: $1"
	one_line
}
table 'name\tchannel\nlayers.0.mlp.in\t3\n'
bad_table "missing column 'point'$"
expect_exit 1 trace-layers --by component -i "$tmp/table" "$rg"
first_line_is "^trace-layers: $tmp/table: missing column 'point'$"
one_line
table 'point\tlayer\nlayers.0.mlp.in\t0\n'
bad_table "missing column 'channel'"
table 'point\tchannel\nlayers.0.mlp.in\t3\nlayers.99.mlp.in\t3\n'
bad_table "line 3: no point 'layers\\.99\\.mlp\\.in' in .*rg\\.h5$"
table 'point\tchannel\nlayers.0.mlp.in\t2560\n'
bad_table "line 2: point layers\\.0\\.mlp\\.in has channels 0 to 2559, not '2560'$"
table 'point\tchannel\nlayers.0.mlp.in\t-1\n'
bad_table "line 2: point layers\\.0\\.mlp\\.in has channels 0 to 2559, not '-1'$"
table 'point\tchannel\nlayers.0.mlp.in\n'
bad_table "line 2: 1 field where the header has 2$"
table 'point,channel\nlayers.0.mlp.in,3\n'
bad_table "CSV, not a TSV table"
table '[{"point": "layers.0.mlp.in", "channel": 3}]\n'
bad_table "JSON, not a TSV table"
table 'point\toutliers\nlayers.0.mlp.in\t3\nlayers.0.mlp.in\t3\n'
bad_table "line 3: point layers\\.0\\.mlp\\.in counted twice$"
table 'point\toutliers\nlayers.0.mlp.in\t2561\n'
bad_table "line 2: point layers\\.0\\.mlp\\.in has 0 to 2560 outliers, not '2561'$"
table 'trace\tpoint\tchannel\nother.h5\tlayers.0.mlp.in\t3\n'
bad_table "no row is about .*rg\\.h5"
expect_exit 1 trace-layers --by layer "$rg" </dev/null
first_line_is "^trace-layers: -: no table on standard input \(to run a criterion on .*rg\.h5, give -m\)$"
one_line
expect_exit 1 trace-layers --by layer -i "$tmp/missing.tsv" "$rg"
first_line_is "^trace-layers: $tmp/missing.tsv: "
one_line
expect_exit 1 trace-layers --by layer -i "$planted" "$planted"
first_line_is "^trace-layers: .*truth\.tsv: "
one_line
expect_exit 1 trace-layers --by layer -m grand-mean "$tmp/missing.h5"
first_line_is "^trace-layers: .*missing\.h5: "
one_line
echo "ok - bad input"

# --- an incomplete trace (the writer died after a checkpoint): counted, with a warning
head -c 128 /dev/zero >"$tmp/zeros.raw"
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 8 --channels 4 \
	--abandon -o "$tmp/crashed.h5" "$tmp/zeros.raw"
expect_exit 0 trace-layers --by layer -m grand-mean "$tmp/crashed.h5"
first_line_is "^trace-layers: .*crashed\.h5: warning: incomplete trace \(complete=0\)"
one_line
expect_exit 0 trace-layers --by layer -q -m grand-mean "$tmp/crashed.h5"
test ! -s "$tmp/err" || fail "-q still warns"
expect_exit 0 trace-layers --groups 0-1,5 -i "$planted" "$rg"
test ! -s "$tmp/err" || fail "groups of layers in the trace warned about: $(cat "$tmp/err")"
expect_exit 0 trace-layers --groups 30-40 -i "$planted" "$rg"
first_line_is "warning: no layer of group 30-40 is in the trace"
echo "ok - incomplete traces and empty groups warned about"

# --- stdout closed early (head) must not turn into an error message
trace-layers --by site -i "$planted" "$rg" | head -n 1 >/dev/null
echo "ok - trace-layers"
