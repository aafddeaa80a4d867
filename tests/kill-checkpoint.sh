#!/bin/sh
# kill-checkpoint.sh: SIGKILL a capture that checkpoints without pause at
# random moments (most of them inside a checkpoint), and check every file
# left behind: the tools open it and say complete=0, and h5py finds in it
# exactly the statistics of the checkpoint its /checkpoint/state names, as
# the writer's process logged them before the checkpoint (at-crash
# --digest-loop, tests/checkpoint-digest.py).  A kill before the first
# checkpoint completed must leave no file.  acttrace-format(5), CRASH-SAFE
# CHECKPOINTS.  make check runs 10 kills; the acceptance measurement is
#   sh tests/kill-checkpoint.sh 100        (KILL_SEED=N to repeat a run)
set -u
. "${top_srcdir:-.}/tests/common.sh"
kills=${1:-10}
seed=${KILL_SEED:-$(date +%s)}
crash="$top_builddir/tests/at-crash"
test -x "$crash" || fail "$crash not built"
test -n "${PYTHON_TEST:-}" || skip "no Python with h5py, hdf5plugin and numpy"
tab=$(printf '\t')

# kill delays in seconds, uniform in [0.01, 1.2)
awk -v n="$kills" -v seed="$seed" \
	'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%.3f\n", 0.01 + 1.19 * rand() }' \
	>"$tmp/delays"
opened=0 matched=0 nofile=0 bad=0 inside=0 i=0
while read -r delay; do
	i=$((i + 1))
	rm -f "$tmp/k.h5" "$tmp/k.h5.part" "$tmp/k.log"
	"$crash" --digest-loop "$tmp/k.h5" "$tmp/k.log" 2>"$tmp/crash.err" &
	pid=$!
	sleep "$delay"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	test -s "$tmp/crash.err" && { bad=$((bad + 1)); echo "kill $i: $(cat "$tmp/crash.err")"; continue; }
	# the log's last line is "begin K": killed inside at_writer_checkpoint
	tail -n 1 "$tmp/k.log" 2>/dev/null | grep -q '^begin' && inside=$((inside + 1))
	if ! test -e "$tmp/k.h5"; then
		if grep -qs '^done' "$tmp/k.log"; then
			bad=$((bad + 1))
			echo "kill $i (${delay}s): no file after a completed checkpoint"
		else
			nofile=$((nofile + 1))
		fi
		continue
	fi
	if ! trace-stats --info "$tmp/k.h5" >"$tmp/info" 2>"$tmp/err"; then
		bad=$((bad + 1))
		echo "kill $i (${delay}s): $(head -n 1 "$tmp/err")"
		cp "$tmp/k.h5" "${KILL_KEEP:-$tmp}/unreadable-$i.h5" 2>/dev/null
		continue
	fi
	opened=$((opened + 1))
	if ! grep -qx "complete${tab}0" "$tmp/info"; then
		bad=$((bad + 1))
		echo "kill $i (${delay}s): not complete=0: $(cat "$tmp/info")"
		continue
	fi
	if ! "$PYTHON_TEST" "$top_srcdir/tests/checkpoint-digest.py" "$tmp/k.h5" "$tmp/k.log" \
		>"$tmp/check" 2>&1; then
		bad=$((bad + 1))
		echo "kill $i (${delay}s): $(tail -n 1 "$tmp/check")"
		continue
	fi
	# the tools read the same checkpoint: its tokens and the valid slot's counts
	want_tokens=$(sed -n 's/^.* tokens=\([0-9]*\) .*$/\1/p' "$tmp/check")
	want_count=$(sed -n 's/^.* count=\([0-9]*\)$/\1/p' "$tmp/check")
	got_tokens=$(awk -F'\t' '$1 == "tokens" { print $2 }' "$tmp/info")
	got_count=$(trace-stats -H -q "$tmp/k.h5" 2>/dev/null | awk -F'\t' '{ s += $7 } END { print s }')
	if test "$got_tokens" != "$want_tokens" || test "$got_count" != "$want_count"; then
		bad=$((bad + 1))
		echo "kill $i (${delay}s): trace-stats reads $got_tokens tokens and count $got_count," \
			"h5py $want_tokens and $want_count"
		continue
	fi
	matched=$((matched + 1))
done <"$tmp/delays"
echo "$kills kills (seed $seed; $inside inside a checkpoint call): $opened files opened with" \
	"complete=0, $matched held exactly the statistics of a logged checkpoint, $nofile killed" \
	"before the first checkpoint (no file), $bad failed"
test "$bad" -eq 0 || fail "$bad of $kills killed captures left a bad trace"
echo "ok - every killed capture left its last completed checkpoint"
