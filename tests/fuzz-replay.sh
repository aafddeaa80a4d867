#!/bin/sh
# fuzz-replay.sh: the fuzzing harness's replay driver (tests/fuzz/fuzz-trace.c)
# over every saved input in tests/fuzz/corpus (seeds and, once found, the
# inputs that crashed it: each stays here as a regression test) and over
# damaged copies of a good trace: every input must be read to the end
# without a crash, under the sanitizers when the build has them.
# (tests/fuzz/run.sh fuzzes with libFuzzer for a while.)
set -eu
. "${top_srcdir:-.}/tests/common.sh"
replay="$top_builddir/tests/fuzz-trace"
test -x "$replay" || fail "$replay not built"

set -- "$top_srcdir"/tests/fuzz/corpus/*
test -e "$1" || fail "tests/fuzz/corpus is empty"
trace-synth --arch tiny --tokens 32 --samples 8 -o "$tmp/good.h5" -q
if test -n "${PYTHON_TEST:-}"; then
	"$PYTHON_TEST" "$top_srcdir/tests/make-bad-traces.py" "$tmp/good.h5" "$tmp" >"$tmp/made"
else
	: >"$tmp/made"
fi
# and the good trace cut short at a few lengths
size=$(wc -c <"$tmp/good.h5")
for cut in 512 4096 $((size / 3)) $((size / 2)) $((size - 1)); do
	head -c "$cut" "$tmp/good.h5" >"$tmp/cut-$cut.h5"
	echo "$tmp/cut-$cut.h5" >>"$tmp/made"
done
n=0
for f in "$@" "$top_srcdir/tests/fixtures/v1/tiny.h5" "$tmp/good.h5" $(cat "$tmp/made"); do
	"$replay" "$f" >"$tmp/out" 2>"$tmp/err" || {
		cat "$tmp/err" >&2
		fail "the harness failed on $f"
	}
	grep -q "^ok " "$tmp/out" || fail "the harness did not finish $f"
	n=$((n + 1))
done
echo "ok - $n inputs read to the end without a crash"

# Inputs on which the fuzzer crashed HDF5 itself, before any check of ours
# can see the damage (tests/fuzz/hdf5-crashes, named after the HDF5 1.10.8
# function; acttrace-format(5), VALIDATION).  The harness has no crash guard,
# but the tools do: each must make them exit 1 with one line, crashed or not.
# A sanitizer build has no guard and reports the fault inside libhdf5.
if test "${ACTTRACE_SANITIZERS:-}" = 1; then
	echo "# the HDF5 crash inputs are for the plain build (the tools' crash guard)"
	exit 0
fi
n=0
for f in "$top_srcdir"/tests/fuzz/hdf5-crashes/*; do
	for tool in "trace-stats" "trace-outliers"; do
		code=0
		$tool "$f" >/dev/null 2>"$tmp/err" || code=$?
		test "$code" -eq 1 || fail "$tool $f: exit $code: $(head -n 3 "$tmp/err")"
		lines=$(grep -vc 'warning: incomplete trace' "$tmp/err" || :)
		test "$lines" -eq 1 || fail "$tool $f: $lines lines on stderr: $(head -n 3 "$tmp/err")"
	done
	n=$((n + 1))
done
echo "ok - $n inputs that crash HDF5 1.10.8: the tools exit 1 with one line"
