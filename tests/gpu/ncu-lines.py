#!/usr/bin/env python3
"""ncu-lines.py: where a kernel's instructions and stalls go, by source line.

Reads what `ncu --import REPORT --page source --csv --print-source cuda,sass`
prints for one profiled kernel (plain or gzip-compressed; the kernel built
with -lineinfo) and prints, for the source lines that hold the most warp
stall samples and the most executed instructions, their share of each, and
the instructions per element when --elements gives the tensor's elements
(warp instructions x 32 / elements: what a lane executes for one value).
Then the executed SASS opcodes, the same way.

    ncu-lines.py ncu-cuda.csv.gz --elements 33554432 --top 25

Exit status 1 when the file holds no source line with metrics (a report
without source counters, or a kernel built without -lineinfo)."""
import argparse
import collections
import csv
import gzip
import sys


def number(text):
    try:
        return int(text.replace(",", ""))
    except ValueError:
        return 0


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.reader(f))


def parse(rows):
    """{(file, line, source): [samples, instructions]} and {opcode: instructions}
    from the source view's rows: a header row ("Line No", ...), then each
    source line followed by its SASS rows (first column empty)."""
    lines = collections.defaultdict(lambda: [0, 0])
    opcodes = collections.Counter()
    path, header = "?", None
    for row in rows:
        if len(row) == 2:
            if row[0] in ("File Path", "File Name"):
                path = row[1].rsplit("/", 1)[-1]
            continue
        if row and row[0] == "Line No":
            header = {}
            for i, name in enumerate(row):
                header.setdefault(name, i)  # "Source" appears twice: the first is the line's
            continue
        if header is None or len(row) < len(header):
            continue
        samples = number(row[header.get("Warp Stall Sampling (All Samples)", 4)])
        executed = number(row[header.get("Instructions Executed", 7)])
        if row[0]:
            entry = lines[(path, int(row[0]), row[1].strip())]
            entry[0] += samples
            entry[1] += executed
        else:
            words = row[3].split()
            if words:
                opcodes[words[1] if words[0].startswith("@") and len(words) > 1 else words[0]] += executed
    return lines, opcodes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="ncu's source page as CSV (cuda,sass), .gz allowed")
    ap.add_argument("--elements", type=int, help="the tensor's elements: instructions per element")
    ap.add_argument("--top", type=int, default=20, help="lines and opcodes to print (default 20)")
    args = ap.parse_args()
    try:
        lines, opcodes = parse(read_rows(args.csv))
    except OSError as e:
        print(f"ncu-lines.py: {args.csv}: {e.strerror}", file=sys.stderr)
        return 1
    samples = sum(v[0] for v in lines.values())
    executed = sum(v[1] for v in lines.values())
    if not executed:
        print(f"ncu-lines.py: {args.csv}: no source line with metrics (built without -lineinfo?)",
              file=sys.stderr)
        return 1
    def per_element(n):
        """The per-element column, tab first, when --elements is given."""
        return f"\t{n * 32 / args.elements:.2f}" if args.elements else ""

    head = "\tper_element" if args.elements else ""
    print(f"# {executed} warp instructions, {samples} stall samples"
          + (f", {executed * 32 / args.elements:.2f} instructions an element" if args.elements else ""))
    print(f"samples_pct\tinstructions_pct{head}\tline\tsource")
    by_samples = sorted(lines.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))[:args.top]
    by_instructions = sorted(lines.items(), key=lambda kv: -kv[1][1])[:args.top]
    ranked = by_samples + [kv for kv in by_instructions if kv not in by_samples]
    for (path, line, source), (s, n) in ranked:
        print(f"{100 * s / max(samples, 1):.1f}\t{100 * n / executed:.1f}{per_element(n)}"
              f"\t{path}:{line}\t{source[:90]}")
    print(f"opcode\tinstructions_pct{head}")
    for op, n in opcodes.most_common(args.top):
        print(f"{op}\t{100 * n / executed:.1f}{per_element(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
