#!/bin/sh
# bench-io.sh: writer and reader throughput of sampled rows (tests/bench-io),
# realistic (bf16-representable, outlier channels) and worst-case (random
# float32) data, with OMP_NUM_THREADS=1 and 2 (BENCH_IO_THREADS: other counts)
# in one run.  Prints the machine, a TSV table and the ratios to one thread.
# Run from the build tree:
#   sh bench/bench-io.sh [--mib N] [BENCH_IO_OPTIONS...]
# BENCH_IO (default tests/bench-io under the build tree), BENCH_IO_THREADS
# (default "1 2"), BENCH_IO_CASES (default "realistic random") and TMPDIR are
# honoured.
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
for data_case in ${BENCH_IO_CASES:-realistic random}; do
	for threads in ${BENCH_IO_THREADS:-1 2}; do
		OMP_NUM_THREADS=$threads "$bench" --case "$data_case" --no-header "$@" | tee -a "$results"
	done
done

# Ratios to one thread, per case and thread count, from this run's rows.
printf '\ncase\tthreads\twrite_over_1t\tread_over_1t\n'
awk -F '\t' '
	{ w[$1, $2] = $4; r[$1, $2] = $5; if (!(($1, $2) in seenc)) { seenc[$1, $2] = 1; rows[++n] = $1 SUBSEP $2 } }
	END {
		for (i = 1; i <= n; i++) {
			split(rows[i], k, SUBSEP)
			if (k[2] != 1 && (k[1], 1) in w)
				printf "%s\t%s\t%.2f\t%.2f\n", k[1], k[2], w[k[1], k[2]] / w[k[1], 1], r[k[1], k[2]] / r[k[1], 1]
		}
	}' "$results"
