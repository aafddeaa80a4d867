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
echo "ok - trace-quant"
