#!/bin/sh
# damage.sh: issue 12's scripted damage test.  DAMAGE_COPIES (default 1000)
# mutated copies of a format-version-2 trace (bytes flipped, a block
# overwritten, cut short: fuzz-trace --mutate, seeds 1..N) go through the
# harness that does everything the tools do after opening a trace, and the
# first DAMAGE_TOOL_COPIES (default 100) through the reading tools
# themselves.  Crash guard off: a crash must show as a signal, not be
# contained.  No crash and no hang may remain; a tool either reads the copy
# or exits 1 with one line on stderr.  (Measured when it was written, HDF5
# 1.10.8: 0 of 1000 crash; the same trace with its links and attributes in
# HDF5's dense storage, 12 of 1000, and version 1, 7 of 1000.)
set -eu
. "${top_srcdir:-.}/tests/common.sh"
# Under ASan a fault inside HDF5 (not instrumented) is reported like ours;
# fuzz-mutate.sh is the sanitizer build's test and tells the two apart.
if test "${ACTTRACE_SANITIZERS:-}" = 1; then
	skip "the damage test counts crashes of the plain build (fuzz-mutate.sh runs under sanitizers)"
fi
copies=${DAMAGE_COPIES:-1000}
tool_copies=${DAMAGE_TOOL_COPIES:-100}
harness="$top_builddir/tests/fuzz-trace"
test -x "$harness" || fail "$harness not built"
ACTTRACE_CRASH_GUARD=0
export ACTTRACE_CRASH_GUARD

trace-synth --arch tiny --tokens 96 --seed 3 --seq-len 32 --samples 16 -q -o "$tmp/good.h5"
crashed=0 hung=0
i=1
while [ "$i" -le "$copies" ]; do
	"$harness" --mutate "$i" "$tmp/good.h5" "$tmp/m.h5" >/dev/null
	rc=0
	timeout 30 "$harness" "$tmp/m.h5" >/dev/null 2>&1 || rc=$?
	if [ "$rc" -eq 124 ]; then
		hung=$((hung + 1))
		echo "seed $i: the harness hung"
	elif [ "$rc" -gt 128 ]; then
		crashed=$((crashed + 1))
		echo "seed $i: the harness died of signal $((rc - 128))"
	fi
	if [ "$i" -le "$tool_copies" ]; then
		for cmd in "trace-stats" "trace-stats --info" "trace-outliers" "trace-outliers -m massive" \
			"trace-quant" "trace-clip --k-clip 3"; do
			rc=0
			timeout 30 $cmd "$tmp/m.h5" >/dev/null 2>"$tmp/err" || rc=$?
			lines=$(grep -vc 'warning: incomplete trace' "$tmp/err" || :)
			case $rc in
			0) ;;
			1) test "$lines" -eq 1 ||
				fail "seed $i: $cmd exited 1 with $lines lines on stderr: $(head -n 3 "$tmp/err")" ;;
			124) hung=$((hung + 1)); echo "seed $i: $cmd hung" ;;
			*) crashed=$((crashed + 1)); echo "seed $i: $cmd exited $rc: $(head -n 1 "$tmp/err")" ;;
			esac
		done
	fi
	i=$((i + 1))
done
test "$crashed" -eq 0 && test "$hung" -eq 0 ||
	fail "$crashed crashes and $hung hangs in $copies damaged copies"
echo "ok: $copies damaged copies through the harness, $tool_copies through six tool commands: no crash, no hang"
