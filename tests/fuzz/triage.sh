#!/bin/sh
# triage.sh: after a campaign (tests/fuzz/run.sh), replay each input in a
# process of its own under the campaign's ASan + UBSan build, leak checking
# on, and say where each report is: the first frame outside the sanitizer
# runtime and libc (as tests/fuzz-mutate.sh decides), and the first frame in
# acttrace's code, when any.  TSV on standard output:
#   input  result  where  first_frame  first_acttrace_frame
# result: ok, crash (a sanitizer report or a signal), leak, oom (over 4 GiB),
# or hang (no answer in TIMEOUT seconds, default 60; the frame is where it
# was stuck); where: ours, libhdf5, libzstd or other.
#   sh tests/fuzz/triage.sh FILE...    (FUZZ_OUT as for run.sh)
set -eu
out=${FUZZ_OUT:-/tmp/acttrace-fuzz}
bin="$out/fuzz-trace"
test -x "$bin" || { echo "triage.sh: $bin not built (tests/fuzz/run.sh)" >&2; exit 2; }
HDF5_PLUGIN_PRELOAD=:: # the instrumented filter 32015, as in run.sh
ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:abort_on_error=0
export HDF5_PLUGIN_PRELOAD ASAN_OPTIONS
err=$(mktemp)
trap 'rm -f "$err"' EXIT
frames() {
	grep -E '^ *#[0-9]+ 0x' "$err" |
		grep -vE 'fuzzer::|PrintStackTrace|libasan|libubsan|__asan|__ubsan|__interceptor|__sanitizer|libc\.so|libc-|ld-linux|/libc/|memcpy|memmove|memset|strlen|strcmp|in malloc|in calloc|in realloc|in free|in strdup' || :
}
printf 'input\tresult\twhere\tfirst_frame\tfirst_acttrace_frame\n'
for f in "$@"; do
	rc=0
	# libFuzzer's own timeout prints where the input was stuck
	timeout $((${TIMEOUT:-60} * 2)) "$bin" -timeout="${TIMEOUT:-60}" -rss_limit_mb=4096 -runs=1 "$f" \
		>/dev/null 2>"$err" || rc=$?
	if [ "$rc" -eq 0 ]; then
		printf '%s\tok\t\t\t\n' "$f"
		continue
	fi
	result=crash
	grep -q 'ALARM: working on the last Unit' "$err" && result=hang
	grep -q 'LeakSanitizer: detected memory leaks' "$err" && result=leak
	grep -q 'out-of-memory' "$err" && result=oom
	first=$(frames | head -n 1 | sed 's/^ *#[0-9]* 0x[0-9a-f]* *//; s/^in //; s/ (BuildId.*//')
	ours=$(frames | grep -E '/(libtrace|tools|analysis|tests/fuzz)/' | head -n 1 |
		sed 's/^ *#[0-9]* 0x[0-9a-f]* in //')
	case "$first" in
	*/libtrace/* | */tools/* | */analysis/* | */tests/fuzz/*) where=ours ;;
	*libhdf5* | H5*) where=libhdf5 ;;
	*libzstd* | ZSTD*) where=libzstd ;;
	*) where=other ;;
	esac
	printf '%s\t%s\t%s\t%s\t%s\n' "$f" "$result" "$where" "$first" "$ours"
done
