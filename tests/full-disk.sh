#!/bin/sh
# full-disk.sh: output that cannot be written (issue 12).  A file size limit
# (ulimit -f, with SIGXFSZ ignored, so that write() fails with EFBIG as on a
# full disk) under the tools that write files, and standard output on
# /dev/full under those that print: each exits 1 with one line that names
# the file and the reason, leaves no partial output and no temporary, and
# does not crash on the way out (HDF5's exit handler used to, after a
# failed close).
set -eu
. "${top_srcdir:-.}/tests/common.sh"

trace-synth --arch tiny --tokens 256 --seed 3 --shard 0/2 -o "$tmp/a.h5" -q
trace-synth --arch tiny --tokens 256 --seed 3 --shard 1/2 -o "$tmp/b.h5" -q
mkdir "$tmp/small"

# run_limited KB CMD...: CMD with files limited to KB KiB, its exit code in $code
run_limited() {
	limit=$1
	shift
	code=0
	(
		trap '' XFSZ
		ulimit -f "$limit"
		exec "$@"
	) >"$tmp/out" 2>"$tmp/err" || code=$?
}

only_line() {
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "$1: not one line on stderr: $(cat "$tmp/err")"
	grep -Eq "$2" "$tmp/err" || fail "$1: stderr is not /$2/: $(cat "$tmp/err")"
}

left() {
	ls -A "$tmp/small"
}

# trace-synth: the trace cannot be finished
run_limited 100 trace-synth --arch tiny --tokens 256 -o "$tmp/small/s.h5" -q
test "$code" -eq 1 || fail "trace-synth on a full disk: exit $code: $(cat "$tmp/err")"
only_line trace-synth "^trace-synth: $tmp/small/s.h5: cannot .*: (File too large|No space left on device)$"
test -z "$(left)" || fail "trace-synth left $(left)"

# trace-merge: the output is a temporary renamed at the end; nothing stays
run_limited 100 trace-merge -q -o "$tmp/small/m.h5" "$tmp/a.h5" "$tmp/b.h5"
test "$code" -eq 1 || fail "trace-merge on a full disk: exit $code: $(cat "$tmp/err")"
only_line trace-merge "^trace-merge: $tmp/small/m.h5: cannot .*: (File too large|No space left on device)$"
test -z "$(left)" || fail "trace-merge left $(left)"

# trace-clip's tables: written through a temporary too
run_limited 1 trace-clip -a -K 3 -r "$tmp/small/rates.tsv" "$tmp/a.h5"
test "$code" -eq 1 || fail "trace-clip -r on a full disk: exit $code: $(cat "$tmp/err")"
grep -q "^trace-clip: $tmp/small/rates.tsv: " "$tmp/err" || fail "trace-clip -r: $(cat "$tmp/err")"
test -z "$(left)" || fail "trace-clip left $(left)"

# a capture that checkpoints until the file size limit stops it: one line,
# exit 1, and the trace of its last completed checkpoint, exactly (the same
# check as kill-checkpoint.sh's), no temporary; under a smaller limit no
# checkpoint completes and nothing is left
if test -n "${PYTHON_TEST:-}"; then
	crash="$top_builddir/tests/at-crash"
	run_limited 15000 "$crash" --digest-loop "$tmp/small/c.h5" "$tmp/c.log"
	test "$code" -eq 1 || fail "a capture on a full disk: exit $code: $(cat "$tmp/err")"
	only_line at-crash "^at-crash: $tmp/small/c.h5: cannot write (the checkpoint|samples of '[^']*'): (File too large|No space left on device)$"
	test "$(left)" = c.h5 || fail "the capture left $(left)"
	expect_exit 0 trace-stats --info "$tmp/small/c.h5"
	grep -qx "complete	0" "$tmp/out" || fail "not complete=0: $(cat "$tmp/out")"
	"$PYTHON_TEST" "$top_srcdir/tests/checkpoint-digest.py" "$tmp/small/c.h5" "$tmp/c.log" \
		>"$tmp/check" 2>&1 || fail "the capture's last checkpoint: $(cat "$tmp/check")"
	grep -Eq '^checkpoint ([0-9]+) of [0-9]+ begun, \1 done' "$tmp/check" ||
		fail "not the last completed checkpoint: $(cat "$tmp/check")"
	rm -f "$tmp/small/c.h5"
	run_limited 1000 "$crash" --digest-loop "$tmp/small/c.h5" "$tmp/c.log"
	test "$code" -eq 1 || fail "a capture on a disk too small: exit $code: $(cat "$tmp/err")"
	test -z "$(left)" || fail "a capture that never checkpointed left $(left)"
fi

# acttrace.capture in Python hitting the limit mid-capture: the capture
# raises one error naming the file and the reason, the interpreter exits
# normally (HDF5 1.10.8's exit handler used to crash on the file a failed
# close kept, CVE-2020-10812; the writer now reserves its space before HDF5
# allocates it), and what is left reads as its last checkpoint
if test -n "${PYTHON_TEST:-}" && test "${ACTTRACE_SANITIZERS:-}" != 1 &&
	"$PYTHON_TEST" -c 'import torch' >/dev/null 2>&1; then
	cat >"$tmp/cap.py" <<'PY'
import sys
import torch
import acttrace
model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
try:
    with torch.no_grad(), acttrace.capture(model.eval(), sys.argv[1], sample="every:1",
                                           points=lambda p: True, checkpoint_every=2):
        for i in range(40):
            model(torch.randn(8, 64, 256, generator=torch.Generator().manual_seed(i)))
except acttrace.Error as e:
    print(f"cap.py: {e}", file=sys.stderr)
    sys.exit(1)
PY
	for limit in 1000 5000 20000; do
		rm -f "$tmp/small/"*
		run_limited "$limit" env PYTHONPATH="$top_srcdir/libtrace/python${PYTHONPATH:+:$PYTHONPATH}" \
			"$PYTHON_TEST" "$tmp/cap.py" "$tmp/small/p.h5"
		test "$code" -eq 1 || fail "acttrace.capture at ${limit} KiB: exit $code (139: a crash at exit): $(cat "$tmp/err")"
		only_line "acttrace.capture" "^cap.py: $tmp/small/p.h5: cannot .*(File too large|No space left on device)"
		echo "# acttrace.capture at $limit KiB: exit $code, left: $(left)"
		case "$(left)" in
		"") ;;
		p.h5)
			expect_exit 0 trace-stats --info "$tmp/small/p.h5"
			grep -qx "complete	0" "$tmp/out" || fail "python capture: not complete=0: $(cat "$tmp/out")" ;;
		*) fail "acttrace.capture at ${limit} KiB left $(left)" ;;
		esac
	done
fi

# standard output that cannot be written
if test -w /dev/full; then
	for tool in "trace-stats" "trace-stats -p layers.0.mlp.down_proj.in" "trace-outliers" \
		"trace-layers -m grand-mean --by component" "trace-clip -K 3" "trace-quant" \
		"trace-diff $tmp/b.h5"; do
		code=0
		# shellcheck disable=SC2086
		$tool "$tmp/a.h5" >/dev/full 2>"$tmp/err" || code=$?
		test "$code" -eq 1 || fail "$tool >/dev/full: exit $code"
		only_line "$tool" "^${tool%% *}: write error on standard output"
	done
fi
echo "ok - a full disk and a full standard output: one line, exit 1, nothing left (a capture: its last checkpoint)"
