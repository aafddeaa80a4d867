#!/bin/sh
# run.sh: everything GPU-side in one call, on a machine with a GPU and no
# autotools: build libacttrace with CUDA by plain gcc and nvcc commands, then
#   1. test-device: device path = host path = float64 reference (and --big);
#   2. compute-sanitizer memcheck and racecheck on test-device --quick;
#   3. bench-kernel: fused kernel vs device-to-device copy bandwidth;
#   4. bench-llama.py: end-to-end overhead on a ~1B Llama (needs torch and
#      transformers).
# Logs, TSV and JSON go to $OUT (default ./gpu-out); the summary is printed
# last.  Run from the repository root:  sh tests/gpu/run.sh [STEP...]
# (steps: build test sanitize kernel variants profile timeline io hf dp tp
# llama llama-profile; default build test sanitize kernel llama).
# NVCC_EXTRA adds flags to the kernel's compilation (e.g. -DATC_MIN_BLOCKS=2),
# STATS_CU names another version of stats.cu to build (an A/B in one call:
# git show BRANCH:libtrace/cuda/stats.cu >stats-b.cu, then a second run.sh
# with BUILD=/tmp/b STATS_CU=stats-b.cu OUT=$OUT/b);
# LLAMA_VARIANTS replaces bench-llama.py's list of variants (e.g.
# none,capture-nodedup,capture-trust,acttrace,acttrace-dedup,none) and
# LLAMA_REPEATS its number of timed forwards, LLAMA_KERNEL_TIMES the forwards
# profiled after them for device time by kernel group (LLAMA_KERNEL_TRACE=1:
# and their launches as Chrome traces in $OUT).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${BUILD:-/tmp/acttrace-gpu}
STEPS=${*:-build test sanitize kernel llama}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_HOME=$(dirname "$(dirname "$NVCC")")
summary="$OUT/summary.txt"
: >"$summary"

note() {
	echo "$*" | tee -a "$summary"
}

step() {
	case " $STEPS " in *" $1 "*) return 0 ;; esac
	return 1
}

# run NAME LIMIT CMD...: CMD with a time limit, output to $OUT/NAME.log
run() {
	name=$1 limit=$2
	shift 2
	t0=$(date +%s)
	timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
	rc=$?
	note "$name: exit $rc in $(($(date +%s) - t0)) s"
	return $rc
}

hdf5_flags() {
	for pc in hdf5 hdf5-serial; do
		if pkg-config --exists "$pc" 2>/dev/null; then
			HDF5_CFLAGS=$(pkg-config --cflags "$pc")
			HDF5_LIBS=$(pkg-config --libs "$pc")
			return
		fi
	done
	show=$(h5cc -show 2>/dev/null)
	HDF5_CFLAGS=$(echo "$show" | tr ' ' '\n' | grep '^-I' | tr '\n' ' ')
	HDF5_LIBS=$(echo "$show" | tr ' ' '\n' | grep '^-L' | tr '\n' ' ')
	for lib in $(echo "$show" | tr ' ' '\n' | grep -E 'libhdf5\.(so|a)$'); do
		HDF5_LIBS="$HDF5_LIBS -L$(dirname "$lib")"
	done
	HDF5_LIBS="$HDF5_LIBS -lhdf5"
}

if step build; then
	{
		nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
		"$NVCC" --version | tail -n 2
		python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
		command -v compute-sanitizer
	} >"$OUT/env.log" 2>&1
	head -n 3 "$OUT/env.log" | tee -a "$summary"
	rm -rf "$B" && mkdir -p "$B/obj"
	hdf5_flags
	printf '#define PACKAGE_VERSION "0.1.0-gpu"\n#define HAVE_CUDA 1\n' >"$B/config.h"
	CFLAGS="-O2 -g -fopenmp -fPIC -Wall -Wextra -I$B -Ilibtrace -Itools $HDF5_CFLAGS"
	t0=$(date +%s)
	# not an if's condition: there, set -e is off and a failed step went on
	(
		set -ex
		for f in h5util error accum codec zstd-filter writer reservoir reader merge merge-slices device; do
			gcc $CFLAGS -c "libtrace/$f.c" -o "$B/obj/$f.o"
		done
		"$NVCC" -std=c++17 -O3 -lineinfo ${NVCC_EXTRA:-} -gencode arch=compute_90,code=sm_90 \
			-gencode arch=compute_75,code=compute_75 -Xptxas -v -Xcompiler -fPIC \
			-Ilibtrace -Ilibtrace/cuda -c "${STATS_CU:-libtrace/cuda/stats.cu}" -o "$B/obj/stats.o"
		gcc -shared -fopenmp -o "$B/libacttrace.so" "$B"/obj/*.o $HDF5_LIBS -lzstd \
			-L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcudart -lstdc++ -lm
		mkdir -p "$B/plugins"
		gcc $CFLAGS -shared -DAT_PLUGIN libtrace/zstd-filter.c libtrace/h5zstd-plugin.c \
			-o "$B/plugins/libh5zstd.so" $HDF5_LIBS -lzstd
		gcc $CFLAGS tests/bench-io.c -o "$B/bench-io" -L"$B" -Wl,-rpath,"$B" -lacttrace -lm
		for prog in test-device bench-kernel; do
			gcc $CFLAGS -I"$CUDA_HOME/include" "tests/gpu/$prog.c" -o "$B/$prog" \
				-L"$B" -Wl,-rpath,"$B" -lacttrace -L"$CUDA_HOME/lib64" \
				-Wl,-rpath,"$CUDA_HOME/lib64" -lcudart -lm
		done
		gcc $CFLAGS tests/gpu/trace-equal.c -o "$B/trace-equal" -L"$B" -Wl,-rpath,"$B" -lacttrace -lm
		gcc $CFLAGS tools/trace-stats.c tools/cli.c -o "$B/trace-stats" \
			-L"$B" -Wl,-rpath,"$B" -lacttrace -lm
		for tool in trace-outliers trace-clip trace-layers; do
			gcc $CFLAGS -Ianalysis "tools/$tool.c" tools/cli.c tools/criteria-opts.c \
				tools/tsv.c analysis/*.c -o "$B/$tool" -L"$B" -Wl,-rpath,"$B" -lacttrace -lm
		done
		sed -e "s|@PYTHON_CAPTURE@|/usr/bin/env python3|" -e "s|@PACKAGE_VERSION@|0.1.0-gpu|" \
			-e "s|@pythondir@|$PWD/libtrace/python|" -e "s|@libdir@|$B|" \
			tools/trace-capture.in >"$B/trace-capture"
		chmod +x "$B/trace-capture"
		ln -sf libacttrace.so "$B/libacttrace.so.0"
	) >"$OUT/build.log" 2>&1
	if [ $? -eq 0 ]; then
		note "build: ok in $(($(date +%s) - t0)) s"
	else
		note "build: FAILED"
		tail -n 30 "$OUT/build.log"
		exit 1
	fi
	grep -E 'registers|spill' "$OUT/build.log" | sort | uniq -c | sort -rn | head -n 4 >>"$summary"
fi

export TMPDIR=${TMPDIR:-/tmp}
if step test; then
	run test-device 240 "$B/test-device" || true
	run test-device-big 300 "$B/test-device" --big || true
	grep -E '^not ok|^# largest|^1\.\.' "$OUT/test-device.log" "$OUT/test-device-big.log" |
		tee -a "$summary"
fi

if step sanitize; then
	if command -v compute-sanitizer >/dev/null; then
		run memcheck 240 compute-sanitizer --tool memcheck --leak-check full \
			--error-exitcode 3 "$B/test-device" --quick || true
		run racecheck 300 compute-sanitizer --tool racecheck --racecheck-report hazard \
			--error-exitcode 3 "$B/test-device" --quick || true
		run synccheck 240 compute-sanitizer --tool synccheck --error-exitcode 3 \
			"$B/test-device" --quick || true
		for t in memcheck racecheck synccheck; do
			grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^not ok' "$OUT/$t.log" | head -n 3 |
				sed "s/^/$t: /" | tee -a "$summary"
		done
	else
		note "sanitize: compute-sanitizer not found"
	fi
fi

if step kernel; then
	run bench-kernel 300 "$B/bench-kernel" --json "$OUT/bench-kernel.json" || true
	cat "$OUT/bench-kernel.log" | tee -a "$summary"
	ACTTRACE_LIB="$B/libacttrace.so" PYTHONUNBUFFERED=1 \
		run bench-kernel-py 300 python3 tests/gpu/bench-kernel.py \
		--json "$OUT/bench-kernel-py.json" || true
	cat "$OUT/bench-kernel-py.log" | tee -a "$summary"
fi

# variants of the kernel side by side: VARIANTS="name=flags;name=flags..."
# (e.g. "base=;steps2=-DATC_FOLD_STEPS=2"), each kernel built with its flags
# (in parallel), then bench-kernel --quick run for every variant in turn,
# VARIANT_ROUNDS times (default 2), so that the machine's drift falls on all
# of them alike.  One TSV row per shape, variant and round.
if step variants; then
	V="$B/variants" && rm -rf "$V" && mkdir -p "$V"
	names=""
	old_ifs=$IFS
	IFS=';'
	for spec in ${VARIANTS:-base=}; do
		IFS=$old_ifs
		name=${spec%%=*} flags=${spec#*=}
		names="$names $name"
		mkdir -p "$V/$name"
		(
			set -e
			# shellcheck disable=SC2086
			"$NVCC" -std=c++17 -O3 $flags -gencode arch=compute_90,code=sm_90 -Xptxas -v \
				-Xcompiler -fPIC -Ilibtrace -Ilibtrace/cuda -c libtrace/cuda/stats.cu \
				-o "$V/$name/stats.o"
			gcc -shared -fopenmp -o "$V/$name/libacttrace.so" \
				$(ls "$B"/obj/*.o | grep -v '/stats.o$') "$V/$name/stats.o" $HDF5_LIBS -lzstd \
				-L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcudart -lstdc++ -lm
			gcc $CFLAGS -I"$CUDA_HOME/include" tests/gpu/bench-kernel.c -o "$V/$name/bench-kernel" \
				-L"$V/$name" -Wl,-rpath,"$V/$name" -lacttrace -L"$CUDA_HOME/lib64" \
				-Wl,-rpath,"$CUDA_HOME/lib64" -lcudart -lm
		) >"$V/$name/build.log" 2>&1 &
		IFS=';'
	done
	IFS=$old_ifs
	wait
	for name in $names; do
		if test -x "$V/$name/bench-kernel"; then
			note "variant $name: $(grep -E 'registers|spill' "$V/$name/build.log" |
				grep -o '[0-9]* bytes spill stores\|Used [0-9]* registers' | sort | uniq -c |
				tr '\n' ' ')"
		else
			note "variant $name: build FAILED"
			tail -n 5 "$V/$name/build.log" | tee -a "$summary"
		fi
	done
	printf 'variant\tround\tshape\tkernel_gpu_us\tread_GBps\n' | tee -a "$summary"
	round=1
	while [ "$round" -le "${VARIANT_ROUNDS:-2}" ]; do
		for name in $names; do
			test -x "$V/$name/bench-kernel" || continue
			"$V/$name/bench-kernel" --quick 2>&1 | awk -F '\t' -v n="$name" -v r="$round" \
				'NR > 1 && NF > 10 { printf "%s\t%s\t%s\t%s\t%s\n", n, r, $2, $7, $11 }' |
				tee -a "$summary"
		done
		round=$((round + 1))
	done
fi

# ncu: the fold kernel of one large bf16 call, and its machine code, at the
# clocks it runs at outside ncu (which locks them to base by default)
if step profile; then
	CUOBJDUMP=$(dirname "$NVCC")/cuobjdump
	"$CUOBJDUMP" -sass "$B/obj/stats.o" >"$OUT/stats.sass" 2>&1 || true
	run ncu 300 ncu --kernel-name regex:fold_kernel --launch-skip 3 --launch-count 1 --clock-control none \
		--section SpeedOfLight --section Occupancy --section WarpStateStats \
		--section InstructionStats --section MemoryWorkloadAnalysis --section LaunchStats \
		--section SourceCounters --import-source no -f -o "$OUT/fold" \
		"$B/bench-kernel" || true
	ncu --import "$OUT/fold.ncu-rep" >"$OUT/ncu.log" 2>&1 || true
	ncu --import "$OUT/fold.ncu-rep" --page source --csv --print-source cuda,sass \
		>"$OUT/ncu-source.csv" 2>&1 || true
	grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Issued Ipc|Stall|Block Limit|Executed Ipc|Local|Executed Instructions " \
		"$OUT/ncu.log" | head -n 40 | tee -a "$summary"
	# by source line (the build has -lineinfo): 8192 x 4096 values
	python3 tests/gpu/ncu-lines.py "$OUT/ncu-source.csv" --elements 33554432 --top 25 \
		2>&1 | tee -a "$summary"
fi

# ncu on the capture itself: one fold launch of bench-llama's capture-trust
# (LLAMA_PROFILE_LAUNCH, ncu's count of fold launches from the first; default
# 1005, past the weights' and the warm-up forwards' launches), by source line
if step llama-profile; then
	mkdir -p "$TMPDIR/llama-profile"
	ACTTRACE_LIB="$B/libacttrace.so" \
		run llama-profile 420 ncu --clock-control none --kernel-name regex:fold_kernel \
		--launch-skip "${LLAMA_PROFILE_LAUNCH:-1005}" --launch-count 1 \
		--section SpeedOfLight --section WarpStateStats --section LaunchStats \
		--section InstructionStats --section SourceCounters --import-source no \
		-f -o "$OUT/llama-fold" python3 tests/gpu/bench-llama.py --variants capture-trust \
		--repeats 3 --warmup 2 --out "$TMPDIR/llama-profile" || true
	ncu --import "$OUT/llama-fold.ncu-rep" >"$OUT/llama-ncu.log" 2>&1 || true
	ncu --import "$OUT/llama-fold.ncu-rep" --page source --csv --print-source cuda,sass \
		>"$OUT/llama-source.csv" 2>&1 || true
	grep -E "fold_kernel|Duration|SM Active Cycles|Elapsed Cycles|Grid Size|Warp Cycles Per Issued" \
		"$OUT/llama-ncu.log" | tee -a "$summary"
	python3 tests/gpu/ncu-lines.py "$OUT/llama-source.csv" --top 25 2>&1 | tee -a "$summary"
fi

# where a launch's time goes, block by block: the kernel built again with
# -DATC_TIMELINE (per-block global-timer marks) and tests/gpu/timeline.c
if step timeline; then
	T="$B/timeline" && mkdir -p "$T"
	if (
		set -ex
		"$NVCC" -std=c++17 -O3 ${NVCC_EXTRA:-} -DATC_TIMELINE -gencode arch=compute_90,code=sm_90 \
			-Xcompiler -fPIC -Ilibtrace -Ilibtrace/cuda -c libtrace/cuda/stats.cu -o "$T/stats.o"
		gcc -shared -fopenmp -o "$T/libacttrace.so" $(ls "$B"/obj/*.o | grep -v '/stats.o$') \
			"$T/stats.o" $HDF5_LIBS -lzstd -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" \
			-lcudart -lstdc++ -lm
		gcc $CFLAGS -I"$CUDA_HOME/include" tests/gpu/timeline.c -o "$T/timeline" -L"$T" \
			-Wl,-rpath,"$T" -lacttrace -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcudart
	) >"$OUT/timeline-build.log" 2>&1; then
		for shape in "8192 4096" "16384 8192" "16384 2048"; do
			# shellcheck disable=SC2086
			"$T/timeline" $shape 2>&1 | tee -a "$OUT/timeline.log" "$summary"
		done
	else
		note "timeline: build FAILED"
		tail -n 20 "$OUT/timeline-build.log"
	fi
fi

# the sample writer's sustained rate (compression and writing, no GPU) with
# 1, 4 and 16 compression threads, on this machine's CPUs and disk
if step io; then
	BENCH_IO="$B/bench-io" BENCH_IO_THREADS="1 4 16" BENCH_IO_CASES=realistic \
		run bench-io 300 sh bench/bench-io.sh --mib 2048 || true
	cat "$OUT/bench-io.log" | tee -a "$summary"
fi

# acttrace.capture on RecurrentGemma-2B's and Mamba-130m's configurations
if step hf; then
	PATH="$B:$PATH" ACTTRACE_LIB="$B/libacttrace.so" HDF5_PLUGIN_PATH="$B/plugins" \
		PYTHONUNBUFFERED=1 run capture-hf 420 python3 tests/gpu/capture-hf.py --skip-cli \
		--out "$OUT/hf" || true
	grep -E "^(not ok|FAIL|#)|passed|failed" "$OUT/capture-hf.log" | tail -n 20 | tee -a "$summary"
fi

# data-parallel capture on 2 GPUs (torchrun), merged, against one GPU
if step dp; then
	gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
	if [ "$gpus" -lt 2 ]; then
		note "dp: needs 2 GPUs, this machine has $gpus"
	else
		rm -rf "$TMPDIR/dp"
		PYTHONPATH="$PWD/libtrace/python" ACTTRACE_LIB="$B/libacttrace.so" PYTHONUNBUFFERED=1 \
			run dp-ranks 400 python3 -m torch.distributed.run --nproc-per-node 2 \
			tests/gpu/dp-capture.py --out "$TMPDIR/dp" || true
		PYTHONPATH="$PWD/libtrace/python" ACTTRACE_LIB="$B/libacttrace.so" PYTHONUNBUFFERED=1 \
			run dp-single 300 python3 tests/gpu/dp-capture.py --single --out "$TMPDIR/dp" || true
		run dp-equal 120 "$B/trace-equal" "$TMPDIR/dp/run.h5" "$TMPDIR/dp/single.h5" 1e-6 || true
		grep -hE '^rank|^one GPU|^points|^DIFFER|Error|error' "$OUT/dp-ranks.log" \
			"$OUT/dp-single.log" "$OUT/dp-equal.log" | head -n 20 | tee -a "$summary"
	fi
fi

# tensor-parallel capture on 2 GPUs (torchrun, transformers' tp_plan="auto"),
# assembled, against one GPU on the same saved model and batches
if step tp; then
	gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
	if [ "$gpus" -lt 2 ]; then
		note "tp: needs 2 GPUs, this machine has $gpus"
	else
		rm -rf "$TMPDIR/tp"
		export PYTHONPATH="$PWD/libtrace/python" ACTTRACE_LIB="$B/libacttrace.so" \
			HDF5_PLUGIN_PATH="$B/plugins" PYTHONUNBUFFERED=1
		run tp-save 300 python3 tests/gpu/tp-capture.py --save --out "$TMPDIR/tp" &&
			run tp-ranks 400 python3 -m torch.distributed.run --nproc-per-node 2 \
				tests/gpu/tp-capture.py --out "$TMPDIR/tp" &&
			run tp-single 300 python3 tests/gpu/tp-capture.py --single --out "$TMPDIR/tp" &&
			run tp-compare 120 python3 tests/gpu/tp-capture.py --compare --out "$TMPDIR/tp"
		grep -hE '^saved|^rank|^one GPU|^points|^compare|FAIL|Error|error' "$OUT/tp-save.log" \
			"$OUT/tp-ranks.log" "$OUT/tp-single.log" "$OUT/tp-compare.log" 2>/dev/null |
			head -n 40 | tee -a "$summary"
		unset PYTHONPATH ACTTRACE_LIB HDF5_PLUGIN_PATH PYTHONUNBUFFERED
	fi
fi

if step llama; then
	ACTTRACE_LIB="$B/libacttrace.so" PYTHONUNBUFFERED=1 \
		run bench-llama 420 python3 tests/gpu/bench-llama.py --out "$TMPDIR" \
		--trace-equal "$B/trace-equal" ${LLAMA_VARIANTS:+--variants "$LLAMA_VARIANTS"} \
		${LLAMA_REPEATS:+--repeats "$LLAMA_REPEATS"} \
		${LLAMA_KERNEL_TIMES:+--kernel-times "$LLAMA_KERNEL_TIMES"} \
		${LLAMA_KERNEL_TRACE:+--kernel-trace "$OUT"} \
		--json "$OUT/bench-llama.json" || true
	grep -E '^#|^variant|^none|^torch|^acttrace|^capture|^sum|Error|error' "$OUT/bench-llama.log" |
		tail -n 120 | tee -a "$summary"
fi
echo "---- summary ($summary)"
cat "$summary"
