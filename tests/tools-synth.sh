#!/bin/sh
# tools-synth.sh: trace-synth run as a user would: usage, errors, determinism,
# the point tables against the outlier study's Table 4.1, the truth file, and
# (with $PYTHON_TEST) that the grand-mean criterion recovers what was planted.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
tab=$(printf '\t')

# One line on stderr (or a first line, for usage errors) starting with the name.
first_line_is() {
	head -n 1 "$tmp/err" | grep -Eq -- "$1" ||
		fail "stderr does not start with '$1': $(head -c 400 "$tmp/err")"
}

# --- usage
expect_exit 0 trace-synth --help
grep -q -- '--arch' "$tmp/out" || fail "--help does not mention --arch"
test ! -s "$tmp/err" || fail "--help wrote to stderr"
expect_exit 0 trace-synth -h
grep -q '^Usage: trace-synth' "$tmp/out" || fail "-h prints no usage"
expect_exit 0 trace-synth --version
grep -Eqx 'trace-synth \(acttrace\) [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" ||
	fail "bad --version: $(cat "$tmp/out")"

for args in "--arch gpt-5 -o $tmp/x.h5" \
	"--arch tiny" \
	"-o $tmp/x.h5" \
	"--arch tiny --tokens 0 -o $tmp/x.h5" \
	"--arch tiny --tokens abc -o $tmp/x.h5" \
	"--arch tiny --tokens -5 -o $tmp/x.h5" \
	"--arch tiny --seq-len 0 -o $tmp/x.h5" \
	"--arch tiny --batch 0 -o $tmp/x.h5" \
	"--arch tiny --samples -1 -o $tmp/x.h5" \
	"--arch tiny --seed x -o $tmp/x.h5" \
	"--arch tiny --bogus -o $tmp/x.h5" \
	"--arch tiny -o $tmp/x.h5 extra" \
	"--arch"; do
	# shellcheck disable=SC2086 # word splitting is the point
	expect_exit 2 trace-synth $args
	first_line_is '^trace-synth: '
	test ! -e "$tmp/x.h5" || fail "'$args' wrote a trace"
done
expect_exit 2 trace-synth --arch gpt-5 -o "$tmp/x.h5"
expect_stderr "unknown architecture 'gpt-5'"
expect_exit 2 trace-synth --arch tiny --tokens abc -o "$tmp/x.h5"
expect_stderr "--tokens"

# --- failures name the file and exit 1
expect_exit 1 trace-synth --arch tiny -q -o /nonexistent/dir/x.h5
first_line_is '^trace-synth: /nonexistent/dir/x\.h5: '
test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line on stderr: $(cat "$tmp/err")"
expect_exit 1 trace-synth --arch tiny -q -o "$tmp/x.h5" --truth /nonexistent/dir/t.tsv
first_line_is '^trace-synth: /nonexistent/dir/t\.tsv: '
test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line on stderr: $(cat "$tmp/err")"

# --- a trace, quietly: nothing on stdout or stderr
expect_exit 0 trace-synth --arch tiny --seed 1 -q -o "$tmp/a.h5" --truth "$tmp/a.tsv"
test ! -s "$tmp/out" && test ! -s "$tmp/err" || fail "-q run printed something"
test -s "$tmp/a.h5" || fail "no trace written"
echo "ok - tiny trace written"

# --- determinism: same seed, same statistics, whatever the thread count;
#     another seed, other statistics
OMP_NUM_THREADS=1 trace-synth --arch tiny --seed 1 -q -o "$tmp/b.h5" --truth "$tmp/b.tsv"
OMP_NUM_THREADS=3 trace-synth --arch tiny --seed 1 -q -o "$tmp/c.h5"
trace-synth --arch tiny --seed 2 -q -o "$tmp/d.h5" --truth "$tmp/d.tsv"
for f in a b c d; do
	trace-stats -d 17 "$tmp/$f.h5" >"$tmp/$f.stats"
	trace-stats -d 17 -p layers.1.mlp.up_proj.out "$tmp/$f.h5" >"$tmp/$f.channels"
done
same_file "$tmp/a.stats" "$tmp/b.stats"
same_file "$tmp/a.stats" "$tmp/c.stats"
same_file "$tmp/a.channels" "$tmp/c.channels"
same_file "$tmp/a.tsv" "$tmp/b.tsv"
! cmp -s "$tmp/a.stats" "$tmp/d.stats" || fail "seeds 1 and 2 give the same statistics"
! cmp -s "$tmp/a.tsv" "$tmp/d.tsv" || fail "seeds 1 and 2 give the same truth file"
echo "ok - deterministic for a seed and a thread count of 1 or 3"

# --- the trace: tokens and points as asked
trace-synth --arch tiny --tokens 300 --seq-len 100 --batch 7 --samples 10 -q -o "$tmp/e.h5"
trace-stats --info "$tmp/e.h5" >"$tmp/e.info"
test "$(awk -F'\t' '$1 == "tokens" { print $2 }' "$tmp/e.info")" = 300 || fail "--tokens 300: $(cat "$tmp/e.info")"
test "$(awk -F'\t' '$1 == "complete" { print $2 }' "$tmp/e.info")" = 1 || fail "trace not complete"
trace-synth --arch tiny --list-points >"$tmp/tiny.points"
npoints=$(awk 'NR > 1' "$tmp/tiny.points" | wc -l)
test "$(awk -F'\t' '$1 == "points" { print $2 }' "$tmp/e.info")" -eq "$npoints" ||
	fail "trace-stats counts another number of points than --list-points ($npoints)"
trace-stats -H "$tmp/e.h5" | cut -f 1,2,3,4,5,6 | sort >"$tmp/e.points"
cut -f 1 "$tmp/e.points" | grep '^layers\.1\.mlp\.' >"$tmp/e.points.mlp"
awk 'NR > 1' "$tmp/tiny.points" | sort | same_file /dev/stdin "$tmp/e.points"
trace-stats -H "$tmp/e.h5" | awk -F'\t' '$7 != 300 * $6 { bad = $1 } END { if (bad) { print bad; exit 1 } }' ||
	fail "a point did not see 300 tokens x channels values"
echo "ok - trace has the points of --list-points and 300 tokens per channel"

# --- --points GLOB: only the matching points, with the whole run's statistics
trace-synth --arch mamba-130m --list-points --points 'layers.1.mixer.x_proj.*' |
	awk 'NR > 1 { print $1 }' >"$tmp/sel.points"
printf 'layers.1.mixer.x_proj.in\nlayers.1.mixer.x_proj.out\n' | same_file /dev/stdin "$tmp/sel.points"
trace-synth --arch tiny --tokens 300 --seq-len 30 --points 'layers.1.mlp.*' -q -o "$tmp/sel.h5"
trace-stats -H "$tmp/sel.h5" | cut -f 1 | sort | same_file "$tmp/e.points.mlp" /dev/stdin
trace-synth --arch tiny --tokens 300 --seq-len 30 -q -o "$tmp/all.h5"
trace-stats -H "$tmp/all.h5" | grep '^layers\.1\.mlp\.' >"$tmp/all.mlp"
trace-stats -H "$tmp/sel.h5" | same_file "$tmp/all.mlp" /dev/stdin
trace-synth --arch tiny --points 'no.such.*' -o "$tmp/none.h5" 2>"$tmp/err" && fail "--points matching nothing succeeded"
test -e "$tmp/none.h5" && fail "--points matching nothing wrote a trace"
grep -q "matches no point" "$tmp/err" || fail "--points matching nothing: $(cat "$tmp/err")"
echo "ok - --points keeps the matching points only"

# --- --list-points: the header, and RecurrentGemma-2B's totals of Table 4.1
trace-synth --arch recurrent-gemma-2b --list-points >"$tmp/rg.points"
head -n 1 "$tmp/rg.points" | grep -qx "point${tab}layer${tab}component${tab}site${tab}direction${tab}channels" ||
	fail "--list-points header: $(head -n 1 "$tmp/rg.points")"
trace-synth --arch recurrent-gemma-2b --list-points |
	awk -F'\t' 'NR > 1 { c[$3] += $6; all += $6; s[$4] = 1 }
	END {
		for (k in s) sites++
		printf "mlp %d\nrecurrent %d\nnorm %d\nlayer %d\nattention %d\ntotal %d\nsites %d\n",
			c["mlp"], c["recurrent"], c["norm"], c["layer"], c["attention"], all, sites
	}' >"$tmp/rg.totals"
printf 'mlp 732160\nrecurrent 322560\nnorm 271360\nlayer 133120\nattention 86016\ntotal 1545216\nsites 26\n' |
	same_file /dev/stdin "$tmp/rg.totals"
# attention at layers 2, 5, ..., 23; recurrent elsewhere; the conv output is named as such
awk -F'\t' '$4 == "attention.q_proj.out" { printf "%s ", $2 } END { print "" }' "$tmp/rg.points" |
	grep -qx '2 5 8 11 14 17 20 23 ' || fail "attention layers of recurrent-gemma-2b"
grep -q "^layers.0.recurrent.conv1d.out${tab}0${tab}recurrent${tab}recurrent.conv1d.out${tab}out${tab}2560\$" \
	"$tmp/rg.points" || fail "no layers.0.recurrent.conv1d.out"
echo "ok - recurrent-gemma-2b: Table 4.1 totals and 26 site types"
for arch in llama-1b:243:2048 mamba-130m:266:768 tiny:33:64; do
	name=${arch%%:*}
	rest=${arch#*:}
	trace-synth --arch "$name" --list-points >"$tmp/p"
	test "$(awk 'NR > 1' "$tmp/p" | wc -l)" -eq "${rest%:*}" || fail "$name: not ${rest%:*} points"
	grep -q "^final_norm.out${tab}-1${tab}norm${tab}final_norm.out${tab}out${tab}${rest#*:}\$" "$tmp/p" ||
		fail "$name: no final_norm.out of ${rest#*:} channels"
done
echo "ok - llama-1b, mamba-130m, tiny point counts"

# --- the truth file: header, known points, channels in range, both kinds of outliers
head -n 1 "$tmp/a.tsv" | grep -qx "point${tab}channel${tab}planted_scale" ||
	fail "truth header: $(head -n 1 "$tmp/a.tsv")"
test "$(wc -l <"$tmp/a.tsv")" -gt 5 || fail "tiny: too few planted channels"
awk -F'\t' 'NR == FNR { if (FNR > 1) width[$1] = $6; next }
	FNR > 1 && (!($1 in width) || $2 < 0 || $2 >= width[$1] || $3 <= 0) { print; bad = 1 }
	END { exit bad }' "$tmp/tiny.points" "$tmp/a.tsv" || fail "truth names unknown points or channels"
awk -F'\t' 'NR > 1 && $3 >= 800 { massive++ } NR > 1 && $3 < 36 { shifted++ }
	END { exit !(massive >= 1 && shifted >= 1) }' "$tmp/a.tsv" ||
	fail "truth lacks massive activations or mean shifts"
grep -q "^layers.1.mlp.up_proj.out${tab}" "$tmp/a.tsv" || fail "no planted channel in the last layer's MLP"
trace-synth --arch mamba-130m --tokens 8 -q -o "$tmp/m.h5" --truth - >"$tmp/m.tsv"
trace-synth --arch mamba-130m --list-points >"$tmp/m.points"
awk -F'\t' 'NR == FNR { known[$1] = 1; next } FNR > 1 && !($1 in known) { bad = 1 } END { exit bad }' \
	"$tmp/m.points" "$tmp/m.tsv" || fail "--truth -: unknown points"
test "$(awk -F'\t' 'NR > 1 && $1 ~ /^layers\.2[0-3]\./' "$tmp/m.tsv" | wc -l)" -gt \
	"$(awk -F'\t' 'NR > 1 && $1 ~ /^layers\.[0-3]\./' "$tmp/m.tsv" | wc -l)" ||
	fail "mamba-130m: deep layers have no more planted channels than shallow ones"
echo "ok - truth file"

# --- the grand-mean criterion recovers exactly what was planted (numpy on the raw datasets)
if test -z "${PYTHON_TEST:-}"; then
	echo "# skipped the recovery check: no Python with h5py, hdf5plugin and numpy"
	exit 0
fi
# The zstd filter comes from HDF5_PLUGIN_PATH, which make check points at the
# build's own plugin directory (Debian's hdf5plugin ships no zstd filter).
trace-synth --arch mamba-130m -q -o "$tmp/m.h5" --truth "$tmp/m.tsv"
cat >"$tmp/recover.py" <<'EOF'
import sys
import hdf5plugin  # noqa: F401  zstd filter 32015
import h5py
import numpy as np

bad = 0
for trace, truth in zip(sys.argv[1::2], sys.argv[2::2]):
    planted = {}
    with open(truth) as f:
        next(f)
        for line in f:
            point, channel, _ = line.rstrip("\n").split("\t")
            planted.setdefault(point, set()).add(int(channel))
    found = missed = extra = 0
    with h5py.File(trace, "r") as h:
        for name, group in h["points"].items():
            mean = group["mean"][...]
            outliers = set(np.nonzero(np.abs(mean - mean.mean()) > 6 * mean.std(ddof=1))[0].tolist())
            want = planted.pop(name, set())
            found += len(want & outliers)
            missed += len(want - outliers)
            extra += len(outliers - want)
    if planted:
        print(f"FAIL {truth}: points not in the trace: {sorted(planted)[:3]}")
        bad = 1
    print(f"{'ok  ' if not (missed or extra) else 'FAIL'} {trace}: {found} planted channels "
          f"recovered, {missed} missed, {extra} false positives")
    bad |= bool(missed or extra)
sys.exit(bad)
EOF
"$PYTHON_TEST" "$tmp/recover.py" "$tmp/a.h5" "$tmp/a.tsv" "$tmp/m.h5" "$tmp/m.tsv" ||
	fail "the grand-mean criterion does not recover the planted channels"
