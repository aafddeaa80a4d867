#!/bin/sh
# tools-diff.sh: trace-diff run as a user would: usage, a trace against itself
# (no shift, Jaccard 1), two trace-synth traces whose planted sets differ
# (gained and lost are exactly the difference), the numbers against numpy
# on h5py's reading, pipes, and bad input.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
tab=$(printf '\t')

trace-synth --arch tiny --tokens 600 --seed 11 -o "$tmp/a.h5" --truth "$tmp/ta.tsv" -q
trace-synth --arch tiny --tokens 600 --seed 12 -o "$tmp/b.h5" --truth "$tmp/tb.tsv" -q

# --- usage
expect_exit 0 trace-diff --help
grep -q '^Usage: trace-diff' "$tmp/out" || fail "--help prints no usage"
expect_exit 0 trace-diff --version
grep -Eq '^trace-diff \(acttrace\) [0-9]+\.[0-9]+' "$tmp/out" || fail "bad --version"
expect_exit 2 trace-diff "$tmp/a.h5"
expect_stderr "^trace-diff: two traces"
expect_exit 2 trace-diff "$tmp/a.h5" "$tmp/b.h5" "$tmp/b.h5"
expect_exit 2 trace-diff -m massive "$tmp/a.h5" "$tmp/b.h5"
expect_exit 2 trace-diff --bogus "$tmp/a.h5" "$tmp/b.h5"
expect_exit 1 trace-diff "$tmp/a.h5" "$tmp/missing.h5"
expect_stderr "^trace-diff: .*missing.h5: "
# points that differ: the first difference, named
trace-synth --arch llama-1b --tokens 8 -o "$tmp/llama.h5" -q
expect_exit 1 trace-diff "$tmp/a.h5" "$tmp/llama.h5"
expect_stderr "^trace-diff: .*llama.h5: "
test "$(wc -l <"$tmp/err")" -eq 1 || fail "mismatched points: more than one line"

# --- a trace against itself
trace-diff "$tmp/a.h5" "$tmp/a.h5" >"$tmp/self.tsv"
head -n 1 "$tmp/self.tsv" | grep -q "^point${tab}layer${tab}component${tab}site${tab}channels${tab}outliers_a${tab}outliers_b${tab}kept${tab}gained${tab}lost${tab}jaccard" ||
	fail "header: $(head -n 1 "$tmp/self.tsv")"
awk -F'\t' 'NR > 1 && ($9 != 0 || $10 != 0 || $11 != 1 || $12 != 0 || $13 != 0) { bad = 1 }
	END { exit bad }' "$tmp/self.tsv" || fail "a trace against itself differs"
awk -F'\t' 'NR > 1 { kept += $8 } END { exit !(kept > 0) }' "$tmp/self.tsv" ||
	fail "no outlier kept against itself"

# --- gained and lost are exactly the planted difference (the grand-mean
# criterion recovers the planted channels, tools-synth.sh)
trace-diff --channels -H "$tmp/a.h5" "$tmp/b.h5" >"$tmp/channels.tsv"
awk -F'\t' '$3 == "gained" { print $1 "\t" $2 }' "$tmp/channels.tsv" | sort >"$tmp/gained"
awk -F'\t' '$3 == "lost" { print $1 "\t" $2 }' "$tmp/channels.tsv" | sort >"$tmp/lost"
tail -n +2 "$tmp/ta.tsv" | cut -f 1,2 | sort >"$tmp/pa"
tail -n +2 "$tmp/tb.tsv" | cut -f 1,2 | sort >"$tmp/pb"
comm -13 "$tmp/pa" "$tmp/pb" >"$tmp/want-gained"
comm -23 "$tmp/pa" "$tmp/pb" >"$tmp/want-lost"
test -s "$tmp/want-gained" && test -s "$tmp/want-lost" || fail "the seeds plant the same channels"
same_file "$tmp/want-gained" "$tmp/gained"
same_file "$tmp/want-lost" "$tmp/lost"
# components add up to the points' counts
trace-diff --components -H "$tmp/a.h5" "$tmp/b.h5" | awk -F'\t' '{ g += $7 } END { print g }' >"$tmp/g1"
test "$(cat "$tmp/g1")" -eq "$(wc -l <"$tmp/gained")" || fail "--components: gained $(cat "$tmp/g1")"
trace-diff --format=json "$tmp/a.h5" "$tmp/b.h5" | head -c 1 | grep -q '\[' || fail "json"
trace-diff --channels "$tmp/a.h5" "$tmp/b.h5" | head -n 2 >/dev/null || fail "a closed pipe"

# --- numbers, against numpy on h5py's reading of the same files
if test -z "${PYTHON_TEST:-}"; then
	echo "# skipped the numpy checks: no Python with h5py, hdf5plugin and numpy"
	exit 0
fi
trace-diff --channels -d 17 -p 'layers.1.*' "$tmp/a.h5" "$tmp/b.h5" >"$tmp/c17.tsv"
"$PYTHON_TEST" - "$tmp/a.h5" "$tmp/b.h5" "$tmp/c17.tsv" <<'EOF' || fail "numpy checks"
import sys
import h5py
import numpy as np
a, b = h5py.File(sys.argv[1], "r")["points"], h5py.File(sys.argv[2], "r")["points"]
header, *rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[3])]
col = {h: i for i, h in enumerate(header)}
bad = []
for r in rows:
    name, c = r[col["point"]], int(r[col["channel"]])
    ga, gb = a[name], b[name]
    sa = np.sqrt(ga["m2"][c] / (ga["count"][c] - 1.0))
    sb = np.sqrt(gb["m2"][c] / (gb["count"][c] - 1.0))
    shift = (gb["mean"][c] - ga["mean"][c]) / np.sqrt((sa * sa + sb * sb) / 2)
    ha = ga["hist"][c].astype(np.float64)
    hb = gb["hist"][c].astype(np.float64)
    tv = 0.5 * np.abs(ha / ha.sum() - hb / hb.sum()).sum()
    ratio = gb["absmax"][c] / ga["absmax"][c]
    for what, want in (("shift", shift), ("hist_distance", tv), ("absmax_ratio", ratio)):
        got = float(r[col[what]])
        if abs(got - want) > 1e-12 * max(1.0, abs(want)):
            bad.append(f"{name} {c} {what}: {got!r} vs numpy {want!r}")
if not rows:
    bad.append("no rows")
print("\n".join(bad[:10]))
sys.exit(1 if bad else 0)
EOF
echo "ok - trace-diff"
