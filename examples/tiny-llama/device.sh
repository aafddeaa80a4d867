#!/bin/sh
# device.sh: the GPU side of the tiny-llama study in one call, after
# `sh tests/gpu/run.sh build` (which builds the library, the C tools and
# trace-capture into $BUILD):
#   1. train the model of the real demo (8 layers, hidden 512) and, beside
#      it, two small candidates for make check (4 x 128 and 6 x 192);
#   2. study.sh on the big one: the shipped trace and the clipping experiment.
# What comes back in $OUT: results.tar (the logs, the study's files and the
# models' configs, loss curves and reports), small.tar (the small models),
# and, only when the study failed, the big model in pieces (model.tar.a?) to
# carry back for another try.  Run from the repository root.
set -u
OUT=${OUT:-$PWD/tiny-out}
B=${BUILD:-/tmp/acttrace-gpu}
W=${WORK:-/tmp/tiny-llama}
E=examples/tiny-llama
STEPS=${STEPS:-5000}
L=$W/logs
mkdir -p "$OUT" "$L"
export PATH="$B:$PATH" ACTTRACE_LIB="$B/libacttrace.so" HDF5_PLUGIN_PATH="$B/plugins" \
	PYTHONUNBUFFERED=1

python3 "$E/train.py" --out "$W/small-4x128" --layers 4 --hidden 128 --heads 4 --lr 2e-3 \
	--steps "$STEPS" --max-seconds 280 >"$L/train-4x128.log" 2>&1 &
python3 "$E/train.py" --out "$W/small-6x192" --layers 6 --hidden 192 --heads 6 --lr 2e-3 \
	--steps "$STEPS" --max-seconds 280 >"$L/train-6x192.log" 2>&1 &
python3 "$E/train.py" --out "$W/model" --heldout "$W/heldout.txt" --steps "$STEPS" \
	--max-seconds 300 >"$L/train.log" 2>&1
echo "train: exit $?"
wait
tail -n 14 "$L/train.log"
for s in 4x128 6x192; do
	echo "== $s"
	tail -n 9 "$L/train-$s.log"
done

sh "$E/study.sh" "$W/model" "$W/heldout.txt" "$W/study" >"$L/study.log" 2>&1
study=$?
echo "study: exit $study"
tail -n 30 "$L/study.log"

for d in model small-4x128 small-6x192; do
	cp "$W/$d/training.json" "$W/study/training-$d.json" 2>/dev/null
	cp "$W/$d/loss.tsv" "$W/study/loss-$d.tsv" 2>/dev/null
done
cp "$W/model/config.json" "$W/study/config.json" 2>/dev/null
cp "$L"/*.log "$W/study/" 2>/dev/null
(cd "$W/study" && tar -cf "$OUT/results.tar" --exclude='*.txt' .)
tar -C "$W" -cf "$OUT/small.tar" small-4x128 small-6x192
if [ "$study" -ne 0 ]; then
	tar -C "$W" -cf - model | split -b 15m - "$OUT/model.tar."
fi
ls -l "$OUT"
