#!/bin/sh
# tools-clip.sh: trace-clip run as a user would: usage, the bounds against
# numpy (mean -+ k sigma, sigma with n - 1, from h5py's datasets), the
# channels against trace-outliers, the rates against numpy on the samples
# and the histogram bracket around them, the table read back by
# acttrace.read_bounds, pipes, and bad input.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
tab=$(printf '\t')

# every row sampled: the samples' exact rate is the rate of all values
trace-synth --arch tiny --tokens 600 --seed 11 --samples 600 -o "$tmp/tiny.h5" -q

# --- usage
expect_exit 0 trace-clip --help
grep -q '^Usage: trace-clip' "$tmp/out" || fail "--help prints no usage"
grep -q -- '--k-clip' "$tmp/out" || fail "--help does not mention --k-clip"
expect_exit 0 trace-clip --version
grep -Eq '^trace-clip \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-clip "$tmp/tiny.h5"
expect_stderr "^trace-clip: --k-clip K is required"
expect_exit 2 trace-clip -K 3
expect_stderr "^trace-clip: no trace file given"
expect_exit 2 trace-clip -K -1 "$tmp/tiny.h5"
expect_exit 2 trace-clip -K nan "$tmp/tiny.h5"
expect_exit 2 trace-clip -K 3 -m ratio "$tmp/tiny.h5"
expect_stderr "flags elements"
expect_exit 2 trace-clip -K 3 --all -m grand-mean "$tmp/tiny.h5"
expect_exit 2 trace-clip -K 3 "$tmp/tiny.h5" "$tmp/tiny.h5"
expect_exit 2 trace-clip -K 3 --bogus "$tmp/tiny.h5"
expect_exit 1 trace-clip -K 3 "$tmp/missing.h5"
expect_stderr "^trace-clip: .*missing.h5: "

# --- the outliers' bounds: the same channels as trace-outliers
trace-clip -K 3 "$tmp/tiny.h5" >"$tmp/bounds.tsv"
head -n 1 "$tmp/bounds.tsv" | grep -qx "point${tab}channel${tab}lower${tab}upper" ||
	fail "header: $(head -n 1 "$tmp/bounds.tsv")"
test "$(wc -l <"$tmp/bounds.tsv")" -gt 1 || fail "no bounds for the planted outliers"
trace-outliers "$tmp/tiny.h5" | awk -F'\t' 'NR > 1 { print $1 "\t" $5 }' >"$tmp/want-channels"
awk -F'\t' 'NR > 1 { print $1 "\t" $2 }' "$tmp/bounds.tsv" >"$tmp/got-channels"
same_file "$tmp/want-channels" "$tmp/got-channels"
trace-clip -K 3 -m grand-mean -k 4 "$tmp/tiny.h5" | tail -n +2 | wc -l >"$tmp/n4"
trace-outliers -m grand-mean -k 4 --count "$tmp/tiny.h5" |
	awk -F'\t' 'NR > 1 { n += $6 } END { print n }' >"$tmp/want4"
test "$(cat "$tmp/n4")" -eq "$(cat "$tmp/want4")" || fail "-k 4: $(cat "$tmp/n4") bounds, $(cat "$tmp/want4") outliers"

# --- --all and the selection; -H and pipes
trace-clip -K 2 --all -p 'layers.1.mlp.*' -H "$tmp/tiny.h5" >"$tmp/all.tsv"
want=$(trace-stats -H "$tmp/tiny.h5" | awk -F'\t' '$1 ~ /^layers\.1\.mlp\./ { n += $6 } END { print n + 0 }')
got=$(wc -l <"$tmp/all.tsv")
test "$got" -eq "$want" || fail "--all -p: $got bounds for $want channels"
awk -F'\t' '$1 !~ /^layers\.1\.mlp\./ { bad = 1 } END { exit bad }' "$tmp/all.tsv" ||
	fail "--all -p: a point outside the glob"
trace-clip -K 3 "$tmp/tiny.h5" | head -n 1 >/dev/null || fail "a closed pipe"
# a reader that stops early (130 KB of bounds, more than a pipe holds) leaves
# neither the rates file nor its temporary behind
trace-clip -K 3 --all -r "$tmp/piped.tsv" "$tmp/tiny.h5" | head -n 1 >/dev/null
test -z "$(ls "$tmp" | grep '^piped')" || fail "a closed pipe left $(ls "$tmp" | grep '^piped')"

# --- rates: a bracket per point and a total row; nothing half-written
trace-clip -K 1 -r "$tmp/rates.tsv" "$tmp/tiny.h5" >"$tmp/bounds1.tsv"
trace-clip -K 2 --all -p 'layers.0.*' -r "$tmp/rates2.tsv" "$tmp/tiny.h5" >"$tmp/bounds2.tsv"
head -n 1 "$tmp/rates.tsv" | grep -q "^point${tab}layer${tab}component${tab}site${tab}channels${tab}values${tab}clipped_low${tab}clipped_high" ||
	fail "rates header: $(head -n 1 "$tmp/rates.tsv")"
tail -n 1 "$tmp/rates.tsv" | grep -q "^total${tab}-1${tab}all${tab}all${tab}" || fail "no total row"
awk -F'\t' 'NR > 1 && !($7 <= $8) { bad = 1 } END { exit bad }' "$tmp/rates.tsv" ||
	fail "a bracket with low > high"
mkdir "$tmp/ro" && chmod a-w "$tmp/ro"
if ! touch "$tmp/ro/probe" 2>/dev/null; then
	expect_exit 1 trace-clip -K 1 -r "$tmp/ro/rates.tsv" "$tmp/tiny.h5"
	test -z "$(ls "$tmp/ro")" || fail "an unwritable rates file left something behind"
fi
chmod u+w "$tmp/ro"
head -c 4096 /dev/zero >"$tmp/zeros.raw"
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 16 --channels 64 \
	--no-hist -o "$tmp/nohist.h5" "$tmp/zeros.raw" || fail "at-feed"
echo keep >"$tmp/kept.tsv"
expect_exit 1 trace-clip -K 1 -r "$tmp/kept.tsv" "$tmp/nohist.h5"
expect_stderr "no histogram"
test "$(cat "$tmp/kept.tsv")" = keep || fail "a failed run changed the rates file"
trace-clip -K 1 "$tmp/nohist.h5" >/dev/null || fail "bounds need no histogram"

# --- the sweep: the study's (k_outlier, k_clip) grid
expect_exit 2 trace-clip --sweep 4,6x1 -K 3 "$tmp/tiny.h5"
expect_exit 2 trace-clip --sweep 4,6x1 --all "$tmp/tiny.h5"
expect_exit 2 trace-clip --sweep 4,6 "$tmp/tiny.h5"
expect_stderr "K_OUTLIERSxK_CLIPS"
expect_exit 2 trace-clip --sweep 4,-1x1 "$tmp/tiny.h5"
expect_exit 2 trace-clip --sweep 4,,6x1 "$tmp/tiny.h5"
expect_exit 2 trace-clip --sweep 4x1 -m tensor-sigma "$tmp/tiny.h5"
expect_exit 2 trace-clip -K 3 --tables "$tmp/t" "$tmp/tiny.h5"
# on recurrent-gemma-2b's points: the channels of each cell are trace-outliers'
# count at its k_outlier, whatever k_clip; each cell's table is what a single
# run prints
trace-synth --arch recurrent-gemma-2b --tokens 8 --seed 5 -o "$tmp/rg.h5" -q
trace-clip --sweep 2,4,6x1,3 --tables "$tmp/cells" "$tmp/rg.h5" >"$tmp/sweep.tsv"
head -n 1 "$tmp/sweep.tsv" | grep -q "^k_outlier${tab}k_clip${tab}component${tab}channels${tab}" ||
	fail "sweep header: $(head -n 1 "$tmp/sweep.tsv")"
for k in 2 4 6; do
	want=$(trace-outliers -k $k --count "$tmp/rg.h5" | awk -F'\t' 'NR > 1 { n += $6 } END { print n }')
	for c in 1 3; do
		got=$(awk -F'\t' -v k=$k -v c=$c '$1 == k && $2 == c && $3 == "all" { print $4 }' "$tmp/sweep.tsv")
		test "$got" = "$want" || fail "sweep k_outlier $k, k_clip $c: $got channels, trace-outliers $want"
	done
	# the components add up to all
	awk -F'\t' -v k=$k 'NR > 1 && $1 == k && $2 == 1 { if ($3 == "all") all = $4; else sum += $4 }
		END { exit !(all == sum) }' "$tmp/sweep.tsv" || fail "sweep k_outlier $k: components do not add up"
done
trace-clip -k 4 -K 3 "$tmp/rg.h5" >"$tmp/single.tsv"
same_file "$tmp/single.tsv" "$tmp/cells/bounds-k4-K3.tsv"
test "$(ls "$tmp/cells" | wc -l)" -eq 6 || fail "sweep tables: $(ls "$tmp/cells")"

# --- numbers, against numpy on h5py's reading of the same file
if test -z "${PYTHON_TEST:-}"; then
	echo "# skipped the numpy checks: no Python with h5py, hdf5plugin and numpy"
	exit 0
fi
"$PYTHON_TEST" - "$tmp/tiny.h5" "$tmp/bounds.tsv:3" "$tmp/bounds1.tsv:1:$tmp/rates.tsv" \
	"$tmp/bounds2.tsv:2:$tmp/rates2.tsv" <<'EOF' || fail "numpy checks"
import sys
import h5py
import numpy as np

def table(path):
    header, *rows = [l.rstrip("\n").split("\t") for l in open(path)]
    return {h: i for i, h in enumerate(header)}, rows

bad = []
with h5py.File(sys.argv[1], "r") as f:
    pts = f["points"]
    for arg in sys.argv[2:]:
        bounds_path, k, *rates_path = arg.split(":")
        k = float(k)
        _, rows = table(bounds_path)
        chosen = {}
        for name, ch, lo, hi in rows:
            g, c = pts[name], int(ch)
            n, mean, m2 = float(g["count"][c]), g["mean"][c], g["m2"][c]
            sigma = np.sqrt(m2 / (n - 1))  # the study's eq. 2.3
            for got, want in ((float(lo), mean - k * sigma), (float(hi), mean + k * sigma)):
                if abs(got - want) > 1e-12 * max(1.0, abs(want)):
                    bad.append(f"{name} {c}: {got!r} vs numpy {want!r}")
            chosen.setdefault(name, []).append((c, float(lo), float(hi)))
        if not rates_path:
            continue
        # the rates: exact on every sampled row (all rows here), inside the bracket
        col, rates = table(rates_path[0])
        for r in rates:
            if r[0] == "total" or r[0] not in chosen:
                continue
            x = pts[r[0]]["samples"][()].astype(np.float64)
            clipped = values = 0
            for c, lo, hi in chosen[r[0]]:
                v = x[:, c][np.isfinite(x[:, c])]
                clipped += int(np.sum((v < lo) | (v > hi)))
                values += v.size
            got = (int(r[col["sample_values"]]), int(r[col["sample_clipped"]]))
            if got != (values, clipped):
                bad.append(f"{r[0]}: samples {got} vs numpy {(values, clipped)}")
            low, high = int(r[col["clipped_low"]]), int(r[col["clipped_high"]])
            if int(r[col["values"]]) != values:
                bad.append(f"{r[0]}: {r[col['values']]} values, {values} sampled: not every row")
            elif not low <= clipped <= high:
                bad.append(f"{r[0]}: exact {clipped} outside the bracket [{low}, {high}]")
        total = rates[-1]
        if k == 2 and not float(total[col["rate_high"]]) - float(total[col["rate_low"]]) < 0.1:
            bad.append(f"k = 2, every channel: an uninformative bracket {total}")
print("\n".join(bad[:10]))
sys.exit(1 if bad else 0)
EOF
echo "ok - trace-clip"
