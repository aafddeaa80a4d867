#!/bin/sh
# tools-quant.sh: trace-quant run as a user would: usage, the exact sample
# errors against numpy's quantize-dequantize on h5py's reading of the same
# samples, the histogram estimate within trace-quant(1)'s stated bounds,
# bits_lost against numpy, and bad input.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
tab=$(printf '\t')

trace-synth --arch tiny --tokens 600 --seed 11 --samples 600 -o "$tmp/q.h5" -q

# --- usage
expect_exit 0 trace-quant --help
grep -q '^Usage: trace-quant' "$tmp/out" || fail "--help prints no usage"
expect_exit 0 trace-quant --version
grep -Eq '^trace-quant \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-quant
expect_stderr "^trace-quant: no trace file given"
expect_exit 2 trace-quant "$tmp/q.h5" "$tmp/q.h5"
expect_exit 2 trace-quant -b 1 "$tmp/q.h5"
expect_exit 2 trace-quant --weights -m grand-mean "$tmp/q.h5"
expect_exit 2 trace-quant --weights --smooth 0.5 "$tmp/q.h5"
# --weights on a trace whose weights are vectors only: a header, a warning
expect_exit 0 trace-quant --weights "$tmp/q.h5"
test "$(wc -l <"$tmp/out")" -eq 1 || fail "--weights without matrices printed rows"
expect_stderr "no selected weight matrix"
expect_exit 2 trace-quant -b 8,,4 "$tmp/q.h5"
expect_exit 2 trace-quant -b 17 "$tmp/q.h5"
expect_exit 2 trace-quant -m ratio "$tmp/q.h5"
expect_exit 1 trace-quant "$tmp/missing.h5"
expect_stderr "^trace-quant: .*missing.h5: "
head -c 4096 /dev/zero >"$tmp/zeros.raw"
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 16 --channels 64 \
	--no-hist -o "$tmp/nohist.h5" "$tmp/zeros.raw" || fail "at-feed"
expect_exit 1 trace-quant "$tmp/nohist.h5"
expect_stderr "no histogram"

# --- the table
trace-quant "$tmp/q.h5" >"$tmp/quant.tsv"
head -n 1 "$tmp/quant.tsv" | grep -qx "point${tab}layer${tab}component${tab}site${tab}bits${tab}scope${tab}step${tab}sqnr_hist_db${tab}sqnr_samples_db${tab}mse_hist${tab}mse_samples${tab}sample_values${tab}outliers${tab}bits_lost" ||
	fail "header: $(head -n 1 "$tmp/quant.tsv")"
test "$(tail -n +2 "$tmp/quant.tsv" | wc -l)" -eq $((33 * 4)) || fail "not 4 rows a point"
# more bits, less noise
awk -F'\t' 'NR > 1 { s[$1, $6, $5] = $9 } END {
	for (k in s) { split(k, p, SUBSEP); if (p[3] == 8 && !(s[p[1], p[2], 8] > s[p[1], p[2], 4])) bad = 1 }
	exit bad }' "$tmp/quant.tsv" || fail "8 bits no better than 4"
trace-quant -b 8 -p 'layers.1.*' "$tmp/q.h5" | head -n 1 >/dev/null || fail "a closed pipe"

# --- SmoothQuant: usage, and a trace without weight matrices
expect_exit 2 trace-quant --smooth 1.5 "$tmp/q.h5"
expect_exit 2 trace-quant --smooth 0.5,x "$tmp/q.h5"
expect_exit 2 trace-quant --factors "$tmp/f.tsv" "$tmp/q.h5"
expect_exit 0 trace-quant --smooth 0.5 "$tmp/q.h5"
expect_stderr "no selected point is a Linear's input"
test "$(wc -l <"$tmp/out")" -eq 1 || fail "--smooth without weights: rows $(cat "$tmp/out")"

# --- numbers, against numpy on h5py's reading of the same file
if test -z "${PYTHON_TEST:-}"; then
	echo "# skipped the numpy checks: no Python with h5py, hdf5plugin and numpy"
	exit 0
fi
trace-quant -d 17 -b 8,4 "$tmp/q.h5" >"$tmp/q17.tsv"
"$PYTHON_TEST" - "$tmp/q.h5" "$tmp/q17.tsv" <<'EOF' || fail "numpy checks"
import sys
import h5py
import numpy as np
f = h5py.File(sys.argv[1], "r")["points"]
header, *rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
col = {h: i for i, h in enumerate(header)}
bad = []
for r in rows:
    g = f[r[col["point"]]]
    x = g["samples"][()].astype(np.float64)
    absmax = g["absmax"][()]
    bits, scope = int(r[col["bits"]]), r[col["scope"]]
    qmax = 2 ** (bits - 1) - 1
    step = absmax.max() / qmax if scope == "tensor" else absmax / qmax
    q = np.round(x / step) * step
    mse = np.mean((x - q) ** 2)
    sqnr = 10 * np.log10(np.sum(x * x) / np.sum((x - q) ** 2))
    for what, want in (("mse_samples", mse), ("sqnr_samples_db", sqnr)):
        got = float(r[col[what]])
        if abs(got - want) > 1e-12 * max(1.0, abs(want)):
            bad.append(f"{r[0]} {bits} {scope} {what}: {got!r} vs numpy {want!r}")
    # bits_lost: the layer-sigma outliers (absmax > mean + 6 std over channels, n-1)
    out = absmax > absmax.mean() + 6 * absmax.std(ddof=1)
    lost = np.log2(absmax.max() / absmax[~out].max()) if out.any() else 0.0
    if abs(float(r[col["bits_lost"]]) - lost) > 1e-12 or int(r[col["outliers"]]) != out.sum():
        bad.append(f"{r[0]}: bits_lost {r[col['bits_lost']]} ({r[col['outliers']]} outliers) "
                   f"vs numpy {lost} ({out.sum()})")
    # the histogram estimate, within trace-quant(1)'s stated bounds
    gap = abs(float(r[col["sqnr_hist_db"]]) - sqnr)
    limit = 0.5 if int(r[col["outliers"]]) == 0 else {("tensor", 8): 0.5, ("tensor", 4): 3.0,
                                                      ("channel", 8): 2.0}.get((scope, bits))
    if limit is not None and not gap <= limit:
        bad.append(f"{r[0]} {bits} {scope}: histogram {r[col['sqnr_hist_db']]} dB, samples "
                   f"{sqnr:.3f} dB: more than {limit} dB apart")
if not any(int(r[col["outliers"]]) for r in rows):
    bad.append("no point with outliers: bits_lost untested")
print("\n".join(bad[:10]))
sys.exit(1 if bad else 0)
EOF
# SmoothQuant's factors against numpy on the raw activations and weight that
# at-feed recorded (nothing read back from the trace)
"$PYTHON_TEST" - "$tmp" <<'EOF' || fail "writing the raw inputs"
import sys
import numpy as np
rng = np.random.default_rng(1)
x = rng.normal(0, 1, (64, 32)).astype(np.float32)
x[:, 5] *= 40  # an outlier channel
x[:, 9] += 25
w = rng.normal(0, 0.05, (16, 32)).astype(np.float32)
w[:, 3] *= 10
x.tofile(sys.argv[1] + "/x.raw")
w.tofile(sys.argv[1] + "/w.raw")
EOF
"$top_builddir/tests/at-feed" --dtype f32 --layout tc --batches 1 --rows 64 --channels 32 \
	--weight "$tmp/w.raw:16:32" -o "$tmp/sq.h5" "$tmp/x.raw" || fail "at-feed"
trace-quant -d 17 --smooth 0,0.5,1 --factors "$tmp/factors.tsv" "$tmp/sq.h5" >"$tmp/smooth.tsv"
"$PYTHON_TEST" - "$tmp" <<'EOF' || fail "SmoothQuant against numpy"
import sys
import numpy as np
d = sys.argv[1]
x = np.fromfile(d + "/x.raw", dtype=np.float32).reshape(64, 32).astype(np.float64)
w = np.fromfile(d + "/w.raw", dtype=np.float32).reshape(16, 32).astype(np.float64)
a, wc = np.abs(x).max(axis=0), np.abs(w).max(axis=0)
bad = []
header, *rows = [l.rstrip("\n").split("\t") for l in open(d + "/factors.tsv")]
if len(rows) != 3 * 32:
    bad.append(f"{len(rows)} factor rows, expected {3 * 32}")
for r in rows:
    j, alpha, f = int(r[1]), float(r[2]), float(r[5])
    want = a[j] ** alpha / wc[j] ** (1 - alpha)
    if abs(f - want) > 1e-12 * want:
        bad.append(f"channel {j} alpha {alpha}: {f!r} vs numpy {want!r}")
header, *rows = [l.rstrip("\n").split("\t") for l in open(d + "/smooth.tsv")]
col = {h: i for i, h in enumerate(header)}
for r in rows:
    alpha = float(r[col["alpha"]])
    s = a ** alpha / wc ** (1 - alpha)
    for what, want in (("act_absmax_smoothed", (a / s).max()), ("w_absmax_smoothed", (wc * s).max()),
                       ("act_bits_gained", np.log2(a.max() / (a / s).max())),
                       ("w_bits_lost", np.log2((wc * s).max() / wc.max()))):
        got = float(r[col[what]])
        if abs(got - want) > 1e-12 * max(1.0, abs(want)):
            bad.append(f"alpha {alpha} {what}: {got!r} vs numpy {want!r}")
print("\n".join(bad[:10]))
sys.exit(1 if bad else 0)
EOF
echo "ok - trace-quant"
