#!/bin/sh
# bench-io.sh: writer and reader throughput of sampled rows (tests/bench-io),
# realistic (bf16-representable, outlier channels) and worst-case (random
# float32) data, with OMP_NUM_THREADS=1 and 2 in one run.  Prints the machine,
# a TSV table and the 2-thread/1-thread ratios.  Run from the build tree:
#   sh bench/bench-io.sh [--mib N] [BENCH_IO_OPTIONS...]
# BENCH_IO (default tests/bench-io under the build tree) and TMPDIR are honoured.
set -e
: "${top_builddir:=.}"
bench=${BENCH_IO:-$top_builddir/tests/bench-io}
if ! test -x "$bench"; then
	echo "bench-io.sh: $bench not built (make tests/bench-io)" >&2
	exit 1
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "# machine: $(nproc) CPUs, ${cpu:-unknown CPU}; TMPDIR=${TMPDIR:-/tmp}"
echo "# command: OMP_NUM_THREADS=T $bench --case CASE $*"

results=$(mktemp "${TMPDIR:-/tmp}/bench-io.XXXXXX.tsv")
trap 'rm -f "$results"' EXIT INT TERM
printf 'case\tthreads\tmib\twrite_gbps\tread_gbps\tratio\tobserve_gbps\n'
for data_case in realistic random; do
	for threads in 1 2; do
		OMP_NUM_THREADS=$threads "$bench" --case "$data_case" --no-header "$@" | tee -a "$results"
	done
done

# Ratios 2-thread / 1-thread, per case, from this run's rows.
printf '\ncase\twrite_2t_over_1t\tread_2t_over_1t\n'
awk -F '\t' '
	{ w[$1, $2] = $4; r[$1, $2] = $5; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
	END {
		for (i = 1; i <= n; i++) {
			c = order[i]
			printf "%s\t%.2f\t%.2f\n", c, w[c, 2] / w[c, 1], r[c, 2] / r[c, 1]
		}
	}' "$results"
