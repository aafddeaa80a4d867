#!/bin/sh
# device.sh: the GPU side of the tiny-llama study in one call, after
# `sh tests/gpu/run.sh build` (which builds the library, the C tools and
# trace-capture into $BUILD):
#   1. train the model of the real demo ($MAIN: 8 layers, hidden 384) and,
#      beside it, small candidates for make check ($SMALL: 8 x 128, 8 x 160);
#   2. study.sh on the big one: the shipped trace and the clipping experiment.
# What comes back in $OUT: results.tar (the logs, the study's files and the
# models' configs, loss curves and reports), small.tar (the small models),
# and the big model in pieces (model.tar.a?), to carry back for another
# study without training again.  Run from the repository root.
set -u
OUT=${OUT:-$PWD/tiny-out}
B=${BUILD:-/tmp/acttrace-gpu}
W=${WORK:-/tmp/tiny-llama}
E=examples/tiny-llama
STEPS=${STEPS:-5000}
MAIN=${MAIN:-8x384}
SMALL=${SMALL:-8x128 8x160}
L=$W/logs
mkdir -p "$OUT" "$L"
export PATH="$B:$PATH" ACTTRACE_LIB="$B/libacttrace.so" HDF5_PLUGIN_PATH="$B/plugins" \
	PYTHONUNBUFFERED=1

# train NAME LAYERSxHIDDEN [ARGS...]: heads of 32 or 64 dimensions
train() {
	name=$1 layers=${2%x*} hidden=${2#*x}
	shift 2
	heads=$((hidden / 64))
	[ $((hidden % 64)) -eq 0 ] || heads=$((hidden / 32))
	python3 "$E/train.py" --out "$W/$name" --layers "$layers" --hidden "$hidden" \
		--heads "$heads" --steps "$STEPS" "$@" >"$L/train-$name.log" 2>&1
	echo "train $name ($layers x $hidden): exit $?"
}
for s in $SMALL; do
	train "small-$s" "$s" --lr 2e-3 --max-seconds 280 &
done
train model "$MAIN" --heldout "$W/heldout.txt" --max-seconds 280
wait
for s in model $(for s in $SMALL; do echo "small-$s"; done); do
	echo "== $s"
	grep '^#' "$L/train-$s.log"
	sed -n '/^layer/,/^norm/p' "$L/train-$s.log"
done

sh "$E/study.sh" "$W/model" "$W/heldout.txt" "$W/study" >"$L/study.log" 2>&1
study=$?
echo "study: exit $study"
tail -n 30 "$L/study.log"

for d in model $(for s in $SMALL; do echo "small-$s"; done); do
	cp "$W/$d/training.json" "$W/study/training-$d.json" 2>/dev/null
	cp "$W/$d/loss.tsv" "$W/study/loss-$d.tsv" 2>/dev/null
done
cp "$W/model/config.json" "$W/study/config.json" 2>/dev/null
cp "$L"/*.log "$W/study/" 2>/dev/null
(cd "$W/study" && tar -cf "$OUT/results.tar" --exclude='*.txt' .)
(cd "$W" && tar -cf "$OUT/small.tar" small-*)
tar -C "$W" -cf - model | split -b 15m - "$OUT/model.tar."
ls -l "$OUT"
