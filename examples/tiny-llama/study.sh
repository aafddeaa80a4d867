#!/bin/sh
# study.sh: the real demo, recorded from a trained model, and the clipping
# experiment, on a machine with the model (a GPU makes it a minute):
#
#   sh examples/tiny-llama/study.sh MODEL_DIR HELD_OUT.txt OUT_DIR
#
# MODEL_DIR is what train.py saved; HELD_OUT.txt is its --heldout text (never
# trained on).  trace-capture, trace-outliers and trace-clip must be on PATH.
# Writes to OUT_DIR:
#   tiny-llama.h5      the trace: statistics, extremes and a few sampled rows
#                      of every point, on the first 64 Ki held-out tokens
#   massive.tsv        trace-outliers -m massive --ratio 100 at the residual
#                      stream (layer.out) and the final norm
#   bounds-*.tsv       clipping tables: the massive channel at every layer's
#                      output, and as many random ordinary channels (3 draws)
#   perplexity.tsv     the perplexity on the next 32 Ki held-out tokens, as the
#                      model is and under each table
# The commands are the method: docs/REAL-STUDY.md quotes them.
set -eu
[ $# -eq 3 ] || { echo "usage: study.sh MODEL_DIR HELD_OUT.txt OUT_DIR" >&2; exit 2; }
model=$1 text=$2 out=$3
mkdir -p "$out"
tab=$(printf '\t')

# The recorded and the measured text are different held-out characters.
python3 - "$text" "$out" <<'EOF'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2] + "/record.txt", "w", encoding="utf-8").write(text[:400000])
open(sys.argv[2] + "/measure.txt", "w", encoding="utf-8").write(text[400000:600000])
EOF

trace-capture --model "$model" --text "$out/record.txt" --tokens 65536 --seq-len 512 \
	--batch 16 --sample every:509 --max-samples 12 -q -o "$out/tiny-llama.h5"
ls -l "$out/tiny-llama.h5"

# The massive activations of the residual stream: elements above 100 and
# above 100x the point's median |x| (the massive-activations study's test,
# with its ratio of 1000 lowered to what a 512-wide model shows).
trace-outliers -m massive --ratio 100 -p '*layer.out' -p 'final_norm.*' "$out/tiny-llama.h5" \
	>"$out/massive.tsv"
# The channel: the one most massive elements fall in ($CHANNEL overrides).
channel=${CHANNEL:-$(tail -n +2 "$out/massive.tsv" | cut -f 3 | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')}
[ -n "$channel" ] || { echo "study.sh: no massive activation found" >&2; exit 1; }
echo "massive channel: $channel"

# mu +- 3 sigma (the RecurrentGemma study's equation 3.1, k_clip = 3) for
# every channel of every layer's output; then the massive channel alone, and
# the same number of rows drawn at random from the other channels.
trace-clip -a -K 3 -p '*layer.out' "$out/tiny-llama.h5" >"$out/bounds-all.tsv"
awk -F "$tab" -v c="$channel" 'NR == 1 || $2 == c' "$out/bounds-all.tsv" >"$out/bounds-massive.tsv"
rows=$(($(wc -l <"$out/bounds-massive.tsv") - 1))
for seed in 1 2 3; do
	awk -F "$tab" -v c="$channel" -v n="$rows" -v seed="$seed" '
		NR == 1 { print; next }
		$2 != c { line[++m] = $0 }
		END {
			srand(seed)
			for (i = 1; i <= n && m > 0; i++) {
				j = 1 + int(rand() * m); print line[j]; line[j] = line[m--]
			}
		}' "$out/bounds-all.tsv" >"$out/bounds-random$seed.tsv"
done

printf 'clipped\tchannels\tpoints\tbaseline\tperplexity\n' >"$out/perplexity.tsv"
for t in massive random1 random2 random3; do
	trace-capture --model "$model" --text "$out/measure.txt" --tokens 32768 --seq-len 512 \
		--batch 16 -q --perplexity --clip "$out/bounds-$t.tsv" \
		--clip-report "$out/clipped-$t.tsv" >"$out/ppl-$t.tsv"
	channels=$(tail -n +2 "$out/bounds-$t.tsv" | cut -f 2 | sort -n | uniq | paste -s -d ,)
	awk -F "$tab" -v OFS="$tab" -v t="$t" -v c="$channels" -v n="$rows" '
		$1 == "baseline" { b = $4 } $1 == "clipped" { p = $4 }
		END { print t, c, n, b, p }' "$out/ppl-$t.tsv" >>"$out/perplexity.tsv"
done
cat "$out/perplexity.tsv"
