#!/bin/sh
# variants.sh: build the kernel in several configurations and time each with
# bench-kernel --quick, in one device call (run.sh's `variants` step: the
# kernels built in parallel, then timed in turn, VARIANT_ROUNDS rounds):
#   sh tests/gpu/variants.sh NAME=FLAGS ...
# e.g. sh tests/gpu/variants.sh 'base=' 'steps2=-DATC_FOLD_STEPS=2'
# Logs and the summary go to $OUT (default ./gpu-out).
set -u
specs=""
for v in "$@"; do
	specs="${specs:+$specs;}$v"
done
VARIANTS=${specs:-base=} exec sh tests/gpu/run.sh build variants
