# common.sh: helpers for the shell tests, sourced as
#   . "${top_srcdir:-.}/tests/common.sh"
# It sets $tmp (a private directory, removed on exit) and provides
#   fail MESSAGE...          print "FAIL: ..." to stderr and exit 1
#   skip MESSAGE...          print "SKIP: ..." and exit 77 (automake's skip code)
#   expect_exit CODE CMD...  run CMD, stdout to $tmp/out and stderr to $tmp/err;
#                            fail unless it exits with CODE
#   expect_stderr PATTERN    fail unless $tmp/err matches the grep -E PATTERN
#   need_prog PROG           skip unless PROG is on PATH
#   same_file WANT GOT       fail, showing a diff, unless the files are equal
# Tests run from the build tree with $top_srcdir, $top_builddir and PATH set
# by AM_TESTS_ENVIRONMENT; the defaults let a test also run by hand.

: "${top_srcdir:=.}"
: "${top_builddir:=.}"
export top_srcdir top_builddir

# tests/tmp.* under the build tree is what `make clean` removes if a test is
# killed before its trap runs; fall back to $TMPDIR when that is not writable.
tmp=$(mktemp -d "$top_builddir/tests/tmp.XXXXXX" 2>/dev/null) ||
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/acttrace-test.XXXXXX") || {
	echo "FAIL: cannot create a temporary directory" >&2
	exit 99
}
cleanup() {
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM HUP

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

skip() {
	echo "SKIP: $*"
	exit 77
}

expect_exit() {
	want_code=$1
	shift
	got_code=0
	"$@" >"$tmp/out" 2>"$tmp/err" || got_code=$?
	if test "$got_code" -ne "$want_code"; then
		echo "stderr of '$*':" >&2
		sed 's/^/  /' "$tmp/err" >&2
		fail "'$*' exited $got_code, expected $want_code"
	fi
}

expect_stderr() {
	grep -E -- "$1" "$tmp/err" >/dev/null ||
		fail "stderr does not match '$1': $(head -c 400 "$tmp/err")"
}

need_prog() {
	command -v "$1" >/dev/null 2>&1 || skip "$1 not found on PATH"
}

same_file() {
	if ! cmp -s "$1" "$2"; then
		diff -u "$1" "$2" >&2 || :
		fail "$2 differs from $1"
	fi
}
