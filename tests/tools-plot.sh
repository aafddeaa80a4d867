#!/bin/sh
# tools-plot.sh: trace-plot run as a user would: every kind in every format
# (type and size of the files), --script output run by gnuplot alone, the
# title's count against trace-outliers, LaTeX escaping, and bad input (one
# line, exit 1 or 2, nothing left at OUT).  Skips without gnuplot.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
need_prog "${GNUPLOT:-gnuplot}"
# the templates of this tree, not an installed copy
ACTTRACE_PLOTS_DIR=$top_srcdir/plots
export ACTTRACE_PLOTS_DIR

trace-synth --arch tiny --tokens 256 --seed 7 -o "$tmp/tiny.h5" -q
trace=$tmp/tiny.h5
point=layers.1.mlp.down_proj.in
tab=$(printf '\t')

# A sweep table as trace-outliers --sweep writes it.
{
	printf 'threshold\tcomponent\tpoints\tchannels\toutliers\n'
	for k in 2 3 4 5 6; do
		printf '%s\tmlp\t8\t768\t%d\n' "$k" $((40 / k))
		printf '%s\tattention\t10\t512\t%d\n' "$k" $((12 / k))
		printf '%s\ttotal\t18\t1280\t%d\n' "$k" $((40 / k + 12 / k))
	done
} >"$tmp/sweep.tsv"

# The arguments of each kind, before FILE.
args_of() {
	case $1 in
	bars3d) echo "--site mlp.up_proj.out" ;;
	channels | hist) echo "-p $point" ;;
	*) echo "" ;;
	esac
}
input_of() {
	case $1 in
	sweep | quant | diff) echo "$tmp/$1.tsv" ;;
	*) echo "$trace" ;;
	esac
}
kinds="bars3d layers top channels hist sweep quant diff"

# trace-quant's and trace-diff's tables, which quant and diff draw
trace-synth --arch tiny --tokens 256 --seed 8 -o "$tmp/other.h5" -q
trace-quant "$trace" >"$tmp/quant.tsv"
trace-diff "$trace" "$tmp/other.h5" >"$tmp/diff.tsv"

# Bytes 16-23 of a PNG: width and height, big-endian.
png_size() {
	od -An -tu1 -j16 -N8 "$1" |
		awk '{ printf "%dx%d\n", (($1 * 256 + $2) * 256 + $3) * 256 + $4, (($5 * 256 + $6) * 256 + $7) * 256 + $8 }'
}

# One rendered file: right type, right size, non-empty.
check_png() { # FILE WxH
	test -s "$1" || fail "$1: empty or missing"
	head -c 8 "$1" | od -An -c | grep -q 'P   N   G' || fail "$1: not a PNG"
	test "$(png_size "$1")" = "$2" || fail "$1: $(png_size "$1"), expected $2"
}
check_svg() { # FILE W H
	test -s "$1" || fail "$1: empty or missing"
	grep -q '<svg' "$1" || fail "$1: not an SVG"
	grep -q "width=\"$2\" height=\"$3\"" "$1" || fail "$1: not $2 x $3: $(grep -m 1 width= "$1")"
	grep -q '</svg>' "$1" || fail "$1: SVG not finished"
}
check_pdf() { # FILE W_PT H_PT
	test -s "$1" || fail "$1: empty or missing"
	head -c 5 "$1" | grep -q '%PDF-' || fail "$1: not a PDF"
	grep -a -q "MediaBox \[ 0 0 $2 $3 \]" "$1" ||
		fail "$1: page not $2 x $3 pt: $(grep -a -o 'MediaBox[^]]*' "$1" | head -n 1)"
}
check_tex() { # FILE.tex W_PT H_PT: LaTeX text beside a PDF drawing
	test -s "$1" || fail "$1: empty or missing"
	grep -q 'begin{picture}' "$1" || fail "$1: not a LaTeX picture"
	stem=${1%.tex}
	grep -q "includegraphics.*{$(basename "$stem")}" "$1" || fail "$1: does not include its drawing"
	check_pdf "$stem.pdf" "$2" "$3"
}

# --- usage
expect_exit 0 trace-plot --help
grep -q '^Usage: trace-plot KIND' "$tmp/out" || fail "--help prints no usage"
expect_exit 0 trace-plot --version
grep -Eq '^trace-plot \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-plot
expect_stderr '^trace-plot: no kind given'
expect_exit 2 trace-plot --bogus top "$trace" -o "$tmp/x.png"
expect_stderr "^trace-plot: option '--bogus' is unknown"

# --- every kind in every format, default sizes and --size
mkdir "$tmp/fig"
for kind in $kinds; do
	# shellcheck disable=SC2046 # the kind's arguments are words
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" -o "$tmp/fig/$kind.png"
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" -o "$tmp/fig/$kind.svg"
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" -o "$tmp/fig/$kind.pdf"
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" -o "$tmp/fig/$kind-tex.tex"
	if test "$kind" = bars3d; then
		check_png "$tmp/fig/$kind.png" 1280x900
		check_svg "$tmp/fig/$kind.svg" 1280 900
		check_pdf "$tmp/fig/$kind.pdf" 576 405 # 8 x 5.625 in
		check_tex "$tmp/fig/$kind-tex.tex" 460 324 # 6.4 x 4.5 in (cairo truncates to whole points)
	else
		check_png "$tmp/fig/$kind.png" 1200x750
		check_svg "$tmp/fig/$kind.svg" 1200 750
		check_pdf "$tmp/fig/$kind.pdf" 540 337 # 7.5 x 4.6875 in
		check_tex "$tmp/fig/$kind-tex.tex" 432 270
	fi
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" --size 640,400 -o "$tmp/fig/small-$kind.png"
	check_png "$tmp/fig/small-$kind.png" 640x400
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" --size 800x500 -o "$tmp/fig/small-$kind.svg"
	check_svg "$tmp/fig/small-$kind.svg" 800 500
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" --size 6,4 -o "$tmp/fig/small-$kind.pdf"
	check_pdf "$tmp/fig/small-$kind.pdf" 432 288
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" --size 10cm,5cm -o "$tmp/fig/cm-$kind.tex"
	check_tex "$tmp/fig/cm-$kind.tex" 283 141
done
# nothing but the figures: no work directories left behind
leftover=$(find "$tmp/fig" -name '.trace-plot*' | head -n 1)
test -z "$leftover" || fail "left behind: $leftover"
# upper-case extensions pick the same terminals
trace-plot top "$trace" -o "$tmp/fig/upper.PNG"
check_png "$tmp/fig/upper.PNG" 1200x750

# --- --script: the script and its data, and gnuplot alone draws the figure
for kind in $kinds; do
	trace-plot "$kind" $(args_of "$kind") "$(input_of "$kind")" --script "$tmp/script/$kind" \
		-o "$kind.svg"
	test -s "$tmp/script/$kind/$kind.gp" || fail "--script wrote no $kind.gp"
	test ! -e "$tmp/script/$kind/$kind.svg" || fail "--script ran gnuplot"
	(cd "$tmp/script/$kind" && "${GNUPLOT:-gnuplot}" "$kind.gp") >"$tmp/out" 2>"$tmp/err" ||
		fail "gnuplot $kind.gp failed: $(cat "$tmp/err")"
	test ! -s "$tmp/err" || fail "gnuplot $kind.gp said: $(cat "$tmp/err")"
	if test "$kind" = bars3d; then
		check_svg "$tmp/script/$kind/$kind.svg" 1280 900
	else
		check_svg "$tmp/script/$kind/$kind.svg" 1200 750
	fi
done
# without -o the script writes KIND.png
trace-plot top "$trace" --script "$tmp/script/default"
grep -q "^set output 'top.png'" "$tmp/script/default/top.gp" || fail "--script without -o: not top.png"

# --- what the figures say: bars3d's title counts what trace-outliers counts
trace-plot bars3d --site mlp.up_proj.out "$trace" --script "$tmp/count" -o x.png
title=$(sed -n "s/^title_text = '\(.*\)'$/\1/p" "$tmp/count/bars3d.gp")
if command -v trace-outliers >/dev/null 2>&1; then
	counted=$(trace-outliers --count "$trace" |
		awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
			$col["site"] == "mlp.up_proj.out" { n += $col["outliers"]; c += $col["channels"] }
			END { printf "Outlier channels: %d/%d (%.3f%%)\n", n, c, 100 * n / c }')
	test "$title" = "$counted" || fail "bars3d title '$title', trace-outliers says '$counted'"
fi
echo "$title" | grep -Eq '^Outlier channels: [1-9][0-9]*/256 \([0-9.]+%\)$' ||
	fail "bars3d title: '$title'"
# every layer's bars, and one red bar per planted up_proj channel at least
test "$(cut -f 1 "$tmp/count/bars3d.dat" | grep -v '^#' | sort -u | wc -l)" -eq 2 ||
	fail "bars3d: not one row of bars per layer"
awk -F'\t' '!/^#/ && $5 == 1 { red++ } END { exit !(red >= 1) }' "$tmp/count/bars3d.dat" ||
	fail "bars3d: no red bar"
# top --distinct channel: per layer, the 3 channels of largest absmax, as
# trace-stats -p lists them; --distinct position: distinct positions
trace-plot top --distinct channel "$trace" --script "$tmp/topc" -o x.png
grep -v '^#' "$tmp/topc/top.dat" | while IFS="$(printf '\t')" read -r layer t1 t2 t3 median c1 c2 c3; do
	want=$(trace-stats -H -p "layers.$layer.layer.out" "$trace" |
		sort -t "$(printf '\t')" -k9,9gr -k1,1n | head -n 3 | awk -F'\t' '{ printf "%s:%.9g ", $1, $9 }')
	got="$c1:$t1 $c2:$t2 $c3:$t3 "
	test "$got" = "$want" || fail "top --distinct channel, layer $layer: $got, trace-stats: $want"
done
trace-plot top --distinct position "$trace" --script "$tmp/topp" -o x.png
awk -F'\t' '!/^#/ && (($6 == $7 && $6 != "-") || ($7 == $8 && $7 != "-")) { bad = 1 } END { exit bad }' \
	"$tmp/topp/top.dat" || fail "top --distinct position repeats a position"
expect_exit 2 trace-plot top --distinct cell "$trace" -o x.png
expect_exit 2 trace-plot bars3d --site layer.out --distinct channel "$trace" -o x.png
# quant and diff: each line, per layer, the mean of the table's rows of that
# layer and series (awk's, from the same table)
check_layer_means() { # KIND SERIES-AWK-EXPR COLUMN
	trace-plot "$1" "$tmp/$1.tsv" --script "$tmp/$1-means" -o x.png
	awk -F'\t' -v col="$3" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
		$c["layer"] >= 0 && $c[col] != "nan" { k = '"$2"' SUBSEP $c["layer"]; s[k] += $c[col]; n[k]++ }
		END { for (k in s) { split(k, p, SUBSEP); printf "%s\t%s\t%.6g\n", p[1], p[2], s[k] / n[k] } }' \
		"$tmp/$1.tsv" | sort >"$tmp/$1-want"
	awk -F'\t' '/^# / { name = substr($0, 3); next } NF == 2 { printf "%s\t%s\t%.6g\n", name, $1, $2 }' \
		"$tmp/$1-means/table.dat" | sort >"$tmp/$1-got"
	cmp -s "$tmp/$1-want" "$tmp/$1-got" ||
		fail "$1: the lines are not the per-layer means: $(diff "$tmp/$1-want" "$tmp/$1-got" | head -n 5)"
}
check_layer_means quant '"INT" $c["bits"] " per " $c["scope"]' sqnr_hist_db
check_layer_means diff '$c["component"]' jaccard
trace-plot quant --metric bits_lost --site mlp.down_proj.in "$tmp/quant.tsv" --script "$tmp/qs" -o x.png
grep -q "at site mlp.down_proj.in" "$tmp/qs/quant.gp" || fail "quant --site: not in the subtitle"
expect_exit 1 trace-plot quant --metric nosuch "$tmp/quant.tsv" -o x.png
expect_stderr "no column 'nosuch'"
expect_exit 1 trace-plot diff "$tmp/quant.tsv" -o x.png
expect_stderr "no column 'jaccard' to draw"
expect_exit 2 trace-plot quant --stat mean "$tmp/quant.tsv" -o x.png
# the criterion options reach the criterion: a lower k flags more
trace-plot bars3d --site mlp.up_proj.out -k 2 "$trace" --script "$tmp/count2" -o x.png
more=$(sed -n "s|^title_text = 'Outlier channels: \([0-9]*\)/.*|\1|p" "$tmp/count2/bars3d.gp")
fewer=$(echo "$title" | sed 's|^Outlier channels: \([0-9]*\)/.*|\1|')
test "$more" -gt "$fewer" || fail "-k 2 flags $more, not more than k=6's $fewer"
# --bin groups channels: 128 channels by 10 are 13 bars a layer
trace-plot bars3d --site mlp.up_proj.out --bin 10 "$trace" --script "$tmp/bin" -o x.png
test "$(grep -vc '^#' "$tmp/bin/bars3d.dat")" -eq 26 || fail "--bin 10: not 13 bars per layer"
# hist of one channel holds that channel's values only
trace-plot hist -p "$point" -c 3 "$trace" --script "$tmp/hist" -o x.png
total=$(awk -F'\t' '!/^#/ { n += $3 } END { print n }' "$tmp/hist/hist.dat")
test "$total" -le 256 || fail "hist -c 3: $total values, more than the 256 tokens"
# --title replaces the title; '' removes title and subtitle
trace-plot top --title 'My figure' "$trace" --script "$tmp/title" -o x.png
grep -q "^title_text = 'My figure'$" "$tmp/title/top.gp" || fail "--title not used"
trace-plot top --title '' "$trace" --script "$tmp/notitle" -o x.png
grep -q "^subtitle_text = ''$" "$tmp/notitle/top.gp" || fail "--title '' keeps the subtitle"
# LaTeX's special characters are escaped for .tex (%, _, |)
trace-plot bars3d --site mlp.up_proj.out "$trace" -o "$tmp/fig/escape.tex"
grep -q '0\.[0-9]*\\%' "$tmp/fig/escape.tex" || fail "tex: % not escaped"
grep -q 'mlp.up\\_proj.out' "$tmp/fig/escape.tex" || fail "tex: _ not escaped"
grep -q 'Mean \$|\$x\$|\$' "$tmp/fig/escape.tex" || fail "tex: |x| not in math mode"
# sweep reads standard input, and any table with a threshold column
trace-plot sweep -o "$tmp/fig/stdin.png" <"$tmp/sweep.tsv"
check_png "$tmp/fig/stdin.png" 1200x750
printf 'threshold\tarc_easy\tgsm8k\n2\t0.48\t0.017\n4\t0.72\t0.039\n6\t0.71\t0.052\n' |
	trace-plot sweep --script "$tmp/metrics" -o x.png -
grep -q "^array series_names\[2\] = \['arc_easy', 'gsm8k'\]$" "$tmp/metrics/sweep.gp" ||
	fail "sweep of metrics: $(grep series_names "$tmp/metrics/sweep.gp")"
if command -v trace-outliers >/dev/null 2>&1; then
	trace-outliers --sweep 2:8:1 "$trace" | trace-plot sweep -o "$tmp/fig/real-sweep.png"
	check_png "$tmp/fig/real-sweep.png" 1200x750
fi

# --- bad input: one line (usage errors: and the --help hint), exit 1 or 2,
# nothing at OUT, an existing OUT untouched
one_line() {
	test "$(wc -l <"$tmp/err")" -eq "$1" || fail "not $1 line(s) on stderr: $(cat "$tmp/err")"
}
out=$tmp/bad/out.png
mkdir "$tmp/bad"
nothing_left() {
	test ! -e "$out" || fail "$out was written"
	test -z "$(ls -A "$tmp/bad")" || fail "left in OUT's directory: $(ls -A "$tmp/bad")"
}
expect_exit 2 trace-plot pie "$trace" -o "$out"
expect_stderr "^trace-plot: unknown kind 'pie'"
one_line 2
nothing_left
expect_exit 1 trace-plot bars3d --site no.such.site "$trace" -o "$out"
expect_stderr "^trace-plot: $trace: no point has site 'no.such.site'"
one_line 1
nothing_left
expect_exit 1 trace-plot channels -p no.such.point "$trace" -o "$out"
expect_stderr "^trace-plot: $trace: no point 'no.such.point'"
one_line 1
expect_exit 2 trace-plot top "$trace" -o "$tmp/bad/out.jpg"
expect_stderr "no terminal for extension '.jpg'"
one_line 2
nothing_left
expect_exit 2 trace-plot top "$trace" -o "$tmp/bad/out"
one_line 2
expect_exit 2 trace-plot bars3d "$trace" -o "$out"
expect_stderr "bars3d needs --site"
expect_exit 2 trace-plot top --bin 4 "$trace" -o "$out"
expect_stderr "^trace-plot: --bin does not apply to top"
expect_exit 2 trace-plot top -k 3 "$trace" -o "$out"
expect_exit 2 trace-plot bars3d --site mlp.up_proj.out -m kurtosis --criterion-stat mean "$trace" -o "$out"
expect_stderr "criterion-stat does not apply to method 'kurtosis'"
expect_exit 2 trace-plot top --size 0,300 "$trace" -o "$out"
expect_exit 2 trace-plot top --size 10cm,5cm "$trace" -o "$out"
expect_exit 2 trace-plot top --logscale w "$trace" -o "$out"
expect_exit 2 trace-plot top "$trace" # no -o
expect_exit 1 trace-plot hist -p "$point" -c 128 "$trace" -o "$out"
expect_stderr "has 128 channels: no channel 128"
one_line 1
expect_exit 1 trace-plot top "$tmp/missing.h5" -o "$out"
one_line 1
nothing_left
# empty data: a table with no rows, no table at all, no threshold column
printf 'threshold\tcomponent\tpoints\tchannels\toutliers\n' >"$tmp/header-only.tsv"
expect_exit 1 trace-plot sweep "$tmp/header-only.tsv" -o "$out"
expect_stderr "^trace-plot: .*header-only.tsv: no rows"
one_line 1
nothing_left
: >"$tmp/empty.tsv"
expect_exit 1 trace-plot sweep "$tmp/empty.tsv" -o "$out"
one_line 1
printf 'k\tn\n1\t2\n' >"$tmp/nothreshold.tsv"
expect_exit 1 trace-plot sweep "$tmp/nothreshold.tsv" -o "$out"
expect_stderr "no column 'threshold'"
one_line 1
printf 'threshold\tcomponent\tpoints\tchannels\toutliers\n2\tmlp\t1\t10\tmany\n' >"$tmp/nan.tsv"
expect_exit 1 trace-plot sweep "$tmp/nan.tsv" -o "$out"
expect_stderr "line 2: outliers is not a number: 'many'"
nothing_left
# gnuplot missing: one clear line, exit 1, before any work
expect_exit 1 env GNUPLOT=no-such-gnuplot-here trace-plot top "$trace" -o "$out"
expect_stderr "^trace-plot: no-such-gnuplot-here not found on PATH"
one_line 1
nothing_left
# ... but --script needs no gnuplot
env GNUPLOT=no-such-gnuplot-here trace-plot top "$trace" --script "$tmp/nognuplot" -o x.png
test -s "$tmp/nognuplot/top.gp" || fail "--script needs gnuplot"
# a template gnuplot refuses: its error as ours, in the template's lines
printf 'set xlabel xlabel_text\nplot no_such_function(x)\n' >"$tmp/broken.gp"
expect_exit 1 trace-plot top --template "$tmp/broken.gp" "$trace" -o "$out"
expect_stderr "^trace-plot: gnuplot: .*broken.gp line 2: undefined function: no_such_function"
one_line 1
nothing_left
# an existing OUT survives a failed render
echo old >"$out"
expect_exit 1 trace-plot top --template "$tmp/broken.gp" "$trace" -o "$out"
test "$(cat "$out")" = old || fail "a failed render changed the existing OUT"
rm -f "$out"
expect_exit 1 trace-plot top --template "$tmp/no-such.gp" "$trace" -o "$out"
one_line 1
expect_exit 1 env ACTTRACE_PLOTS_DIR="$tmp/nowhere" trace-plot top "$trace" -o "$out"
expect_stderr "no such template"
one_line 1
expect_exit 1 trace-plot top "$trace" -o "$tmp/no/such/dir/out.png"
expect_stderr "^trace-plot: $tmp/no/such/dir/out.png: "
one_line 1
nothing_left
exit 0
