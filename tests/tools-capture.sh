#!/bin/sh
# tools-capture.sh: trace-capture as a user runs it, for what needs no model
# and no transformers: usage, --help, --version, and bad input (a missing
# model directory, a directory that is no model, a missing, empty or
# non-UTF-8 text, an unwritable output), each one line on stderr naming the
# file, exit 1, and no trace left behind.  With no transformers importable,
# a valid-looking run must say so.  (test_python_cli.py runs it end to end.)
set -eu
. "${top_srcdir:-.}/tests/common.sh"

if test "${ACTTRACE_SANITIZERS:-0}" = 1; then
	skip "libacttrace is built with sanitizers; Python cannot load an ASan library"
fi
if test -z "${PYTHON_TEST:-}" || ! "$PYTHON_TEST" -c 'import torch' >/dev/null 2>&1; then
	skip "torch is not importable by '${PYTHON_TEST:-}' (on Debian: apt-get install python3-torch)"
fi
need_prog trace-capture

first_line_is() {
	head -n 1 "$tmp/err" | grep -Eq -- "$1" ||
		fail "stderr does not start with '$1': $(head -c 400 "$tmp/err")"
}
one_line() {
	test "$(wc -l <"$tmp/err")" -eq 1 || fail "more than one line on stderr: $(cat "$tmp/err")"
}

# --- usage
expect_exit 0 trace-capture --help
grep -q '^Usage: trace-capture' "$tmp/out" || fail "--help prints no usage"
grep -q -- '--perplexity' "$tmp/out" || fail "--help does not mention --perplexity"
test ! -s "$tmp/err" || fail "--help wrote to stderr"
expect_exit 0 trace-capture -h
grep -q '^Usage: trace-capture' "$tmp/out" || fail "-h prints no usage"
expect_exit 0 trace-capture --version
grep -Eqx 'trace-capture \(acttrace\) [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" ||
	fail "bad --version: $(cat "$tmp/out")"
echo "ok - usage"

mkdir "$tmp/model"
echo '{"model_type": "llama"}' >"$tmp/model/config.json"
printf 'Some text to run through the model.\n' >"$tmp/text.txt"
out="$tmp/run.h5"
for args in "" \
	"--model $tmp/model" \
	"--model $tmp/model --text $tmp/text.txt" \
	"--text $tmp/text.txt -o $out" \
	"--model $tmp/model --text -o $out" \
	"--model $tmp/model --text $tmp/text.txt -o $out --tokens 0" \
	"--model $tmp/model --text $tmp/text.txt -o $out --tokens x" \
	"--model $tmp/model --text $tmp/text.txt -o $out --batch -1" \
	"--model $tmp/model --text $tmp/text.txt -o $out --seq-len 1.5" \
	"--model $tmp/model --text $tmp/text.txt -o $out --dtype f8" \
	"--model $tmp/model --text $tmp/text.txt -o $out --device tpu" \
	"--model $tmp/model --text $tmp/text.txt -o $out --sample often" \
	"--model $tmp/model --text $tmp/text.txt -o $out --sample every:0" \
	"--model $tmp/model --text $tmp/text.txt -o $out --clip-report $tmp/r.tsv" \
	"--model $tmp/model --text $tmp/text.txt -o $out --bogus" \
	"--model $tmp/model --text $tmp/text.txt -o $out --checkpoint-every -1" \
	"--model $tmp/model --text $tmp/text.txt -o $out --checkpoint-every nan" \
	"--model $tmp/model --text $tmp/text.txt -o $out --checkpoint-every" \
	"--model $tmp/model --text $tmp/text.txt -o $out --perplexity=yes" \
	"--model $tmp/model --text - - -o $out" \
	"--model $tmp/model --text $tmp/text.txt -o $out -- extra" \
	"--model"; do
	# shellcheck disable=SC2086 # word splitting is the point
	expect_exit 2 trace-capture $args
	first_line_is '^trace-capture: '
	grep -q "^Try 'trace-capture --help'" "$tmp/err" || fail "'$args': no --help hint"
	test ! -e "$out" || fail "'$args' wrote a trace"
done
expect_exit 2 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$out" --tokens x
expect_stderr "^trace-capture: --tokens: 'x' is not an integer"
expect_exit 2 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$out" --bogus
expect_stderr "unknown option '--bogus'"
expect_exit 2 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$out" --checkpoint-every=1m
expect_stderr "^trace-capture: --checkpoint-every: '1m' is not a number of seconds >= 0"
echo "ok - usage errors exit 2"

# --- bad input: exit 1, one line naming the file, no trace
expect_exit 1 trace-capture --model "$tmp/nomodel" --text "$tmp/text.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/nomodel: no such model directory$"
one_line
expect_exit 1 trace-capture --model "$tmp/text.txt" --text "$tmp/text.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/text.txt: not a directory"
mkdir "$tmp/notmodel"
expect_exit 1 trace-capture --model "$tmp/notmodel" --text "$tmp/text.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/notmodel: not a Hugging Face model directory \(no config.json\)$"
one_line

expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/none.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/none.txt: No such file or directory$"
: >"$tmp/empty.txt"
expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" "$tmp/empty.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/empty.txt: empty text$"
one_line
printf '  \n\t\n' >"$tmp/blank.txt"
expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/blank.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/blank.txt: empty text$"
printf 'caf\351 cr\350me\n' >"$tmp/latin1.txt"
expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/latin1.txt" -o "$out" -q
first_line_is "^trace-capture: $tmp/latin1.txt: not UTF-8 text \(byte 0xe9 at offset 3\)$"
one_line
expect_exit 1 trace-capture --model "$tmp/model" --text - -o "$out" -q </dev/null
first_line_is "^trace-capture: standard input: empty text$"
test ! -e "$out" || fail "a bad text left a trace"

expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$tmp/no/dir/run.h5" -q
first_line_is "^trace-capture: $tmp/no/dir/run.h5: no such directory$"
one_line
expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$tmp" -q
first_line_is "^trace-capture: $tmp: is a directory$"
if test "$(id -u)" -ne 0; then
	mkdir "$tmp/ro" && chmod 500 "$tmp/ro"
	expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$tmp/ro/run.h5" -q
	first_line_is "^trace-capture: $tmp/ro/run.h5: cannot write the trace: permission denied$"
fi
expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$out" --clip "$tmp/none.tsv" -q
first_line_is "^trace-capture: $tmp/none.tsv: no such bounds table$"
test ! -e "$out" || fail "bad input left a trace"
echo "ok - bad input exits 1 with one line naming the file"

# --- no transformers: said so, before anything is written
if ! "$PYTHON_TEST" -c 'import transformers' >/dev/null 2>&1; then
	expect_exit 1 trace-capture --model "$tmp/model" --text "$tmp/text.txt" -o "$out" -q --device cpu
	first_line_is '^trace-capture: transformers is not installed$'
	one_line
	test ! -e "$out" || fail "a run without transformers left a trace"
	echo "ok - no transformers: a clear error"
fi
