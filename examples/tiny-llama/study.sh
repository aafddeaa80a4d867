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
#                      of every point, on the first 16 Ki held-out tokens
#   massive.tsv        trace-outliers -m massive --ratio 100 at the residual
#                      stream (every layer's output)
#   bounds-*.tsv       clipping tables at every layer's output: the massive
#                      channels, and as many rows of random ordinary channels
#                      (3 draws); clamped to mu +- 3 sigma (-k3) or to mu (-k0)
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

trace-capture --model "$model" --text "$out/record.txt" --tokens 16384 --seq-len 512 \
	--batch 16 --sample every:509 --max-samples 4 -q -o "$out/tiny-llama.h5"
ls -l "$out/tiny-llama.h5"

# The massive activations of the residual stream: elements above 100 and
# above 100x the point's median |x| (the massive-activations definition,
# with its ratio of 1000 lowered to what a narrow model shows).
trace-outliers -m massive --ratio 100 -p '*layer.out' "$out/tiny-llama.h5" >"$out/massive.tsv"
# The massive channels: every channel a massive element falls in
# ($CHANNELS, comma-separated, overrides).
channels=${CHANNELS:-$(tail -n +2 "$out/massive.tsv" | cut -f 3 | sort -n | uniq | paste -s -d ,)}
[ -n "$channels" ] || { echo "study.sh: no massive activation found" >&2; exit 1; }
echo "massive channels: $channels"

# Bounds for every channel of every layer's output: mu +- 3 sigma (the
# RecurrentGemma study's equation 3.1 with its k_clip = 3), and mu +- 0,
# which sets a channel to its mean (the outlier-distribution study's
# intervention, its Table 2).  Then the massive channels' rows, and as many
# rows drawn at random from the other channels, three times.
for k in 3 0; do
	trace-clip -a -K $k -p '*layer.out' "$out/tiny-llama.h5" >"$out/bounds-all-k$k.tsv"
	awk -F "$tab" -v list="$channels" 'BEGIN { n = split(list, c, ","); for (i = 1; i <= n; i++) m[c[i]] = 1 }
		NR == 1 || ($2 in m)' "$out/bounds-all-k$k.tsv" >"$out/bounds-massive-k$k.tsv"
	rows=$(($(wc -l <"$out/bounds-massive-k$k.tsv") - 1))
	for seed in 1 2 3; do
		awk -F "$tab" -v list="$channels" -v n="$rows" -v seed="$seed" '
			BEGIN { k = split(list, c, ","); for (i = 1; i <= k; i++) skip[c[i]] = 1 }
			NR == 1 { print; next }
			!($2 in skip) { line[++m] = $0 }
			END {
				srand(seed)
				for (i = 1; i <= n && m > 0; i++) {
					j = 1 + int(rand() * m); print line[j]; line[j] = line[m--]
				}
			}' "$out/bounds-all-k$k.tsv" >"$out/bounds-random$seed-k$k.tsv"
	done
done

printf 'clipped\tk_clip\trows\tchannels\tbaseline\tperplexity\n' >"$out/perplexity.tsv"
for k in 3 0; do
	for t in massive random1 random2 random3; do
		b=$out/bounds-$t-k$k.tsv
		trace-capture --model "$model" --text "$out/measure.txt" --tokens 32768 --seq-len 512 \
			--batch 16 -q --perplexity --clip "$b" --clip-report "$out/clipped-$t-k$k.tsv" \
			>"$out/ppl-$t-k$k.tsv"
		used=$(tail -n +2 "$b" | cut -f 2 | sort -n | uniq | paste -s -d ,)
		awk -F "$tab" -v OFS="$tab" -v t="$t" -v k="$k" -v c="$used" -v n="$(($(wc -l <"$b") - 1))" '
			$1 == "baseline" { b = $4 } $1 == "clipped" { p = $4 }
			END { print t, k, n, c, b, p }' "$out/ppl-$t-k$k.tsv" >>"$out/perplexity.tsv"
	done
done
cat "$out/perplexity.tsv"
