#!/bin/sh
# ncu-lines.sh: tests/gpu/ncu-lines.py on a small source view in Nsight
# Compute's CSV form (two source lines, their SASS rows): the shares, the
# instructions per element and the opcodes it prints, and its errors.
. "${top_srcdir:-.}/tests/common.sh"
py=${PYTHON_TEST:-python3}
command -v "$py" >/dev/null 2>&1 || skip "no Python"
script="$top_srcdir/tests/gpu/ncu-lines.py"

# the columns ncu-lines.py reads, in ncu's order: samples 5th, executed 8th
cat >"$tmp/view.csv" <<'CSV'
"File Path","/src/libtrace/cuda/stats.cu"
"Function Name","fold_kernel"
"Line No","Source","Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)","# Samples","Instructions Executed"
"957","float x2 = fabsf(x) * fabsf(x);","-","-","30","10","30","96"
"","","0x10","      FMUL R9, R76, R76","20","5","20","64"
"","","0x20","      @P4   FADD R9, R9, R9","10","5","10","32"
"960","shared_add(w.hist_at[v], 1);","-","-","10","2","10","32"
"","","0x30","      ATOMS.ADD RZ, [R70], R13","10","2","10","32"
CSV
expect_exit 0 "$py" "$script" "$tmp/view.csv" --elements 64
grep -q '^# 128 warp instructions, 40 stall samples, 64.00 instructions an element$' "$tmp/out" ||
	fail "totals: $(head -n 1 "$tmp/out")"
grep -q "$(printf '^75.0\t75.0\t48.00\tstats.cu:957\t')" "$tmp/out" || fail "line 957: $(cat "$tmp/out")"
grep -q "$(printf '^25.0\t25.0\t16.00\tstats.cu:960\t')" "$tmp/out" || fail "line 960: $(cat "$tmp/out")"
grep -q "$(printf '^FMUL\t50.0\t32.00$')" "$tmp/out" || fail "opcode FMUL: $(cat "$tmp/out")"
grep -q "$(printf '^FADD\t25.0\t16.00$')" "$tmp/out" || fail "predicated FADD: $(cat "$tmp/out")"
grep -q "$(printf '^ATOMS.ADD\t25.0\t16.00$')" "$tmp/out" || fail "opcode ATOMS.ADD: $(cat "$tmp/out")"

# compressed, without --elements: shares only
gzip -c "$tmp/view.csv" >"$tmp/view.csv.gz"
expect_exit 0 "$py" "$script" "$tmp/view.csv.gz"
grep -q "$(printf '^75.0\t75.0\tstats.cu:957\t')" "$tmp/out" || fail "gzip: $(cat "$tmp/out")"

# a view without metrics (no -lineinfo), and a file that is not there
head -n 3 "$tmp/view.csv" >"$tmp/bare.csv"
expect_exit 1 "$py" "$script" "$tmp/bare.csv"
expect_stderr 'no source line with metrics'
expect_exit 1 "$py" "$script" "$tmp/missing.csv"
expect_stderr 'missing.csv: No such file'
expect_exit 2 "$py" "$script"
exit 0
