#!/bin/sh
# gpu-skip.sh: the GPU test in make check.  tests/gpu/test-device checks the
# device path against the host path and a float64 reference on this machine's
# GPU; where there is none it is skipped, visibly ("SKIP: no CUDA device"), and
# in a build without CUDA it first checks that the device API says so.
. "${top_srcdir:-.}/tests/common.sh"

prog="$top_builddir/tests/gpu/test-device"
test -x "$prog" || fail "$prog not built"
status=0
TMPDIR="$tmp" "$prog" --quick >"$tmp/out" 2>"$tmp/err" || status=$?
cat "$tmp/out"
cat "$tmp/err" >&2
case $status in
0) echo "ok - device path = host path = float64 reference on this GPU" ;;
77) skip "$(sed -n 's/^SKIP: //p' "$tmp/out" | head -n 1)" ;;
*) fail "tests/gpu/test-device exited $status" ;;
esac
