#!/bin/sh
# crash.sh: a capture killed with SIGKILL mid-run leaves a trace that the
# tools open: everything up to the last checkpoint, complete=0, a warning.
. "${top_srcdir:-.}/tests/common.sh"
tab=$(printf '\t')

crash="$top_builddir/tests/at-crash"
test -x "$crash" || fail "$crash not built"
status=0
"$crash" "$tmp/killed.h5" 2>"$tmp/crash.err" || status=$?
# a shell reports death by signal N as 128 + N
test "$status" -eq 137 || fail "at-crash exited $status, not killed by SIGKILL: $(cat "$tmp/crash.err")"
test -s "$tmp/killed.h5" || fail "no trace left behind"

# --info: the trace is marked incomplete and holds the checkpointed tokens only
expect_exit 0 trace-stats --info "$tmp/killed.h5"
expect_stderr "killed\.h5: warning: incomplete trace \(complete=0\)"
grep -qx "complete${tab}0" "$tmp/out" || fail "complete is not 0: $(cat "$tmp/out")"
grep -qx "tokens${tab}32" "$tmp/out" || fail "expected 32 checkpointed tokens: $(cat "$tmp/out")"

# per channel: 32 values (two checkpointed calls of 16, not the third), mean
# of (t % 4) + c over t < 32 is 1.5 + c, min c, max 3 + c
expect_exit 0 trace-stats -H -d 17 --point layers.0.mlp.down_proj.out "$tmp/killed.h5"
expect_stderr "warning: incomplete trace"
awk -F'\t' 'NF < 11 { bad = 1 }
	$2 != 32 || $3 != 1.5 + $1 || $7 != $1 || $8 != 3 + $1 || $11 != 0 { bad = 1 }
	END { exit bad || NR != 8 }' "$tmp/out" ||
	fail "channel statistics are not those of the checkpoints: $(cat "$tmp/out")"

# the point row, and its samples: every second of the 32 checkpointed tokens
expect_exit 0 trace-stats -H "$tmp/killed.h5"
awk -F'\t' '$1 == "layers.0.mlp.down_proj.out" && $7 == 256 { ok = 1 } END { exit !ok }' \
	"$tmp/out" || fail "point row: expected count 256 (32 tokens x 8 channels): $(cat "$tmp/out")"
if test -n "$PYTHON_TEST"; then
	"$PYTHON_TEST" - "$tmp/killed.h5" <<'PY' || fail "samples of the killed trace"
import sys, h5py, hdf5plugin, numpy as np
# a killed writer leaves its file marked as open by an SWMR writer
with h5py.File(sys.argv[1], "r", swmr=True) as f:
    g = f["points/layers.0.mlp.down_proj.out"]
    tokens = g["sample_tokens"][:]
    rows = g["samples"][:]
    assert list(tokens) == list(range(0, 32, 2)), tokens
    want = np.array([[t % 4 + c for c in range(8)] for t in tokens], dtype=np.float32)
    assert (rows == want).all(), rows
PY
fi
echo "ok - a SIGKILLed capture reads back as of its last checkpoint, complete=0"
