#!/bin/sh
# bench-merge.sh: what trace-merge costs against what reading its inputs
# costs, on RecurrentGemma-2B-sized synthetic traces (trace-synth --arch
# recurrent-gemma-2b --shard I/N: 1.5 million channels, 1.2 GB of histograms
# in memory a trace).  For N = 2 and 8 (BENCH_MERGE_COUNTS) it prints one row:
#   merge_s     trace-merge -o OUT of the N shards
#   stats_s     trace-stats of each shard, one after the other (the moments)
#   massive_s   trace-outliers -m massive of each shard, one after the other
#               (the whole statistics with the histograms and extremes: what
#               the merge reads)
#   merge_over_read  merge_s / massive_s
# Wall-clock seconds (date +%s.%N), best of BENCH_MERGE_REPEAT runs (default
# 3), the files in the page cache.  Run from the build tree:
#   sh bench/bench-merge.sh
# BENCH_MERGE_TOKENS (tokens of the whole stream, default 512) and TMPDIR are
# honoured; OMP_NUM_THREADS sets the threads.
set -e
: "${top_builddir:=.}"
PATH=$top_builddir:$PATH
export PATH
for tool in trace-synth trace-merge trace-stats trace-outliers; do
	command -v "$tool" >/dev/null || { echo "bench-merge.sh: $tool not built" >&2; exit 1; }
done
tokens=${BENCH_MERGE_TOKENS:-512}
repeat=${BENCH_MERGE_REPEAT:-3}
dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-merge.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

now() {
	date +%s.%N
}

# best SECONDS of $repeat runs of a command
best() {
	b=
	i=0
	while test "$i" -lt "$repeat"; do
		t0=$(now)
		"$@" >/dev/null
		t1=$(now)
		b=$(echo "$t0 $t1 ${b:-}" | awk '{ t = $2 - $1; if ($3 != "" && $3 < t) t = $3; printf "%.3f", t }')
		i=$((i + 1))
	done
	echo "$b"
}

each() { # each TOOL-ARGS... -- FILE...: the tool on every file in turn
	args=
	while test "$1" != --; do
		args="$args $1"
		shift
	done
	shift
	for f in "$@"; do
		# shellcheck disable=SC2086 # the tool's arguments, split
		$args "$f" >/dev/null
	done
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "# machine: $(nproc) CPUs, ${cpu:-unknown CPU}; OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}; TMPDIR=${TMPDIR:-/tmp}"
echo "# traces: trace-synth --arch recurrent-gemma-2b --tokens $tokens --seq-len 16 --shard I/N; best of $repeat"
printf 'traces\tinput_mib\tmerge_s\tstats_s\tmassive_s\tmerge_over_read\n'
for n in ${BENCH_MERGE_COUNTS:-2 8}; do
	files=
	i=0
	while test "$i" -lt "$n"; do
		trace-synth --arch recurrent-gemma-2b --tokens "$tokens" --seq-len 16 --shard "$i/$n" \
			-q -o "$dir/shard$i.h5"
		files="$files $dir/shard$i.h5"
		i=$((i + 1))
	done
	# shellcheck disable=SC2086 # the list of files
	mib=$(du -cm $files | tail -n 1 | cut -f 1)
	# shellcheck disable=SC2086
	merge_s=$(best trace-merge -q -o "$dir/merged.h5" $files)
	# shellcheck disable=SC2086
	stats_s=$(best each trace-stats -q -- $files)
	# shellcheck disable=SC2086
	massive_s=$(best each trace-outliers -q -m massive -- $files)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$mib" "$merge_s" "$stats_s" "$massive_s" \
		"$(echo "$merge_s $massive_s" | awk '{ printf "%.2f", $1 / $2 }')"
	rm -f "$dir"/*.h5
done
