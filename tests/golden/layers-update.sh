#!/bin/sh
# layers-update.sh: regenerate the golden outputs of trace-layers
# (tests/golden/layers-*) after a deliberate change to trace-layers'
# formatting or to trace-synth's planted channels.  Run from the build
# directory:
#   sh $(top_srcdir)/tests/golden/layers-update.sh
# The outliers are trace-synth's planted channels (its --truth table), so the
# tables do not depend on any criterion's implementation.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./trace-synth --arch recurrent-gemma-2b --tokens 32 --seed 1 -q -o "$tmp/rg.h5" --truth "$tmp/truth.tsv"
for format in tsv csv json latex markdown; do
	case $format in latex) ext=tex ;; markdown) ext=md ;; *) ext=$format ;; esac
	for by in component layer site; do
		./trace-layers --by "$by" -f "$format" -i "$tmp/truth.tsv" "$tmp/rg.h5" >"$here/layers-$by.$ext"
	done
	./trace-layers --groups 0-8,9-17,18-25 -f "$format" -i "$tmp/truth.tsv" "$tmp/rg.h5" \
		>"$here/layers-groups.$ext"
done
echo "updated $here/layers-*"
