#!/bin/sh
# make-seeds.sh: the format-version-2 seeds of tests/fuzz/corpus, a few
# points of each architecture trace-synth knows (a few tens of KB each, so
# that the fuzzer runs hundreds of inputs a second), from the repository root
# after make:  sh tests/fuzz/make-seeds.sh [DIR]   (default tests/fuzz/corpus)
set -eu
dir=${1:-tests/fuzz/corpus}
synth() { name=$1; shift; ./trace-synth -q -o "$dir/$name.h5" "$@"; }
synth v2-tiny --arch tiny --tokens 16 --seq-len 8 --points 'layers.0.mlp.down_proj.*'
synth v2-tiny-samples --arch tiny --tokens 16 --seq-len 8 --samples 4 \
	--points 'layers.1.self_attn.[kv]_proj.out'
synth v2-tiny-tp0of2 --arch tiny --tokens 16 --seq-len 8 --samples 4 --tp-slice 0/2 \
	--points '*.mlp.up_proj.out'
synth v2-tiny-norm-shard1of2 --arch tiny --tokens 32 --seq-len 8 --shard 1/2 \
	--points 'layers.0.input_layernorm.out'
synth v2-tiny-final_norm --arch tiny --tokens 16 --seq-len 8 --points 'final_norm.*'
synth v2-mamba-x_proj --arch mamba-130m --tokens 16 --points 'layers.0.mixer.x_proj.out'
synth v2-mamba-x_proj-samples --arch mamba-130m --tokens 16 --samples 2 \
	--points 'layers.0.mixer.x_proj.out'
synth v2-rgemma-k_proj --arch recurrent-gemma-2b --tokens 8 --points 'layers.2.attention.k_proj.out'
synth v2-llama-v_proj-samples --arch llama-1b --tokens 8 --samples 2 \
	--points 'layers.0.self_attn.v_proj.out'
