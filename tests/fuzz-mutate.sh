#!/bin/sh
# fuzz-mutate.sh: bounded fuzzing of the trace reader in make check (issue 12:
# "CI runs it for a bounded time under ASan and UBSan").  For FUZZ_SECONDS
# (default 20), seeded mutations of a good trace, the v1 fixture and the
# corpus (bytes overwritten, a block overwritten, cut short:
# fuzz-trace --mutate) go through the harness, each in a process of its own.
#
# Every input must be read to the end or refused.  A crash, a sanitizer
# report or undefined behaviour whose first frame outside the sanitizer's
# runtime and libc is in our code fails the test, and the input is kept in
# $top_builddir/fuzz-failures/ with its seed.  One inside libhdf5 is HDF5's
# own (acttrace-format(5), VALIDATION): counted, and contained by the tools.
# Only the sanitizer build can tell where a crash is; the plain build skips.
set -eu
. "${top_srcdir:-.}/tests/common.sh"
if test "${ACTTRACE_SANITIZERS:-}" != 1; then
	echo "SKIP: bounded fuzzing runs in the sanitizer build (./configure --enable-sanitizers)"
	exit 77
fi
replay="$top_builddir/tests/fuzz-trace"
test -x "$replay" || fail "$replay not built"
seconds=${FUZZ_SECONDS:-20}
seed0=${FUZZ_SEED:-$(date +%s)}
keep="$top_builddir/fuzz-failures"

trace-synth --arch tiny --tokens 32 --samples 8 -o "$tmp/good.h5" -q
set -- "$tmp/good.h5" "$top_srcdir/tests/fixtures/v1/tiny.h5" "$top_srcdir"/tests/fuzz/corpus/*
nseeds=$#

# where ASan or UBSan says the fault is: the first frame that is not the
# sanitizer runtime or libc
first_frame() {
	grep -E '^ *#[0-9]+ 0x' "$1" |
		grep -vE 'libasan|libubsan|__asan|__ubsan|__interceptor|__sanitizer|libc\.so|libc-|ld-linux|/libc/|memcpy|memmove|memset|strlen|strcmp' |
		head -n 1
}

runs=0 hdf5=0 hangs=0 bad=0
end=$(($(date +%s) + seconds))
while test "$(date +%s)" -lt "$end"; do
	seed=$((seed0 + runs))
	shift_by=$((seed % nseeds))
	i=0
	for input in "$@"; do
		test "$i" -eq "$shift_by" && break
		i=$((i + 1))
	done
	"$replay" --mutate "$seed" "$input" "$tmp/m.h5" || fail "cannot mutate $input"
	code=0
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 timeout 60 "$replay" "$tmp/m.h5" \
		>"$tmp/out" 2>"$tmp/err" || code=$?
	runs=$((runs + 1))
	if test "$code" -eq 0 && grep -q '^ok ' "$tmp/out"; then
		continue
	fi
	if test "$code" -eq 124; then
		hangs=$((hangs + 1))
		echo "# seed $seed: no answer in 60 s (kept)"
	else
		frame=$(first_frame "$tmp/err")
		case "$frame" in
		*libhdf5*)
			hdf5=$((hdf5 + 1))
			continue
			;;
		esac
		bad=$((bad + 1))
		echo "# seed $seed ($input): exit $code, first frame: ${frame:-none}"
		sed 's/^/#   /' "$tmp/err" | head -n 30
	fi
	mkdir -p "$keep"
	cp "$tmp/m.h5" "$keep/seed-$seed.h5"
done
echo "ok - $runs mutated inputs in $seconds s from seed $seed0: $hdf5 crashes inside libhdf5" \
	"(contained by the tools), $hangs without an answer, $bad in our code"
test "$bad" -eq 0 || fail "$bad inputs crashed or misbehaved in acttrace's code (kept in $keep)"
