#!/usr/bin/env python3
"""bench-kernel.py: the device path's fused statistics kernel against the best
column reductions PyTorch has, on the same tensors in the same run.

For each shape (bf16 unless named, activations with a few outlier channels,
two tensors used in turn so that the L2 cache holds neither), the median over
--repeats of the GPU time per call of:

  sum      x.sum(0, dtype=torch.float32): one pass, one add an element
  aminmax  torch.aminmax(x, dim=0)
  copy     x.clone(): read + write
  acttrace at_writer_observe_device on the current stream, histogram and
           64 extremes (the defaults), through the acttrace package

Each measurement queues --calls calls behind torch.cuda._sleep, so that the
events around them see GPU time alone, not Python's launch cost.  Prints a
TSV table: read GB/s of each, and acttrace's bandwidth over sum's (the
acceptance ratio: >= 0.9 on 8192 x 4096 bf16).  --json FILE keeps the numbers.
Needs a GPU, torch, and ACTTRACE_LIB naming a libacttrace built with CUDA;
exit 77 without them."""
import argparse
import json
import os
import statistics
import sys
import tempfile


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


try:
    import torch
except ImportError:
    skip("no torch")
if not torch.cuda.is_available():
    skip("no CUDA device")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "libtrace", "python"))
import acttrace  # noqa: E402

SHAPES = [
    ("8192x4096", 8192, 4096, torch.bfloat16),
    ("16384x8192", 16384, 8192, torch.bfloat16),
    ("16384x2048", 16384, 2048, torch.bfloat16),
    ("16384x512", 16384, 512, torch.bfloat16),
    ("8192x4096", 8192, 4096, torch.float16),
    ("8192x4096", 8192, 4096, torch.float32),
    ("1x65536", 1, 65536, torch.bfloat16),
]


def activations(rows, channels, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, channels, generator=g, device="cuda", dtype=torch.float32)
    x[:, 7::331] = x[:, 7::331] * 20 + 50   # outlier channels
    x[::2048, 5::997] = -300.0              # a massive activation on the first token
    return x.to(dtype)


def gpu_ms(fn, xs, calls, repeats):
    """Median GPU milliseconds per call of fn(x), x taken from xs in turn."""
    for x in xs:  # warm-up
        fn(x)
    torch.cuda.synchronize()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        torch.cuda._sleep(20_000_000)  # ~10 ms: the host queues the calls meanwhile
        start.record()
        for i in range(calls):
            fn(xs[i % len(xs)])
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / calls)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", help="write the numbers here too")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    rows_out = []
    print("device\tshape\tdtype\tbytes\tsum_us\taminmax_us\tcopy_us\tacttrace_us\t"
          "sum_GBps\tacttrace_GBps\tacttrace_vs_sum")
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows, channels, dtype in SHAPES:
            xs = [activations(rows, channels, dtype, s) for s in (1, 2)]
            nbytes = xs[0].numel() * xs[0].element_size()
            w = acttrace.Writer(os.path.join(tmp, "bench.h5"))
            pid = w.add_point("p", channels=channels)
            tokens = [0]

            def observe(x):
                w.observe(pid, x, tokens[0])
                tokens[0] += rows

            t = {
                "sum": gpu_ms(lambda x: x.sum(0, dtype=torch.float32), xs, args.calls,
                              args.repeats),
                "aminmax": gpu_ms(lambda x: torch.aminmax(x, dim=0), xs, args.calls,
                                  args.repeats),
                "copy": gpu_ms(lambda x: x.clone(), xs, args.calls, args.repeats),
                "acttrace": gpu_ms(observe, xs, args.calls, args.repeats),
            }
            w.close()
            gbps = {k: nbytes / (v * 1e6) for k, v in t.items()}
            dname = str(dtype).replace("torch.", "")
            print(f"{dev}\t{name}\t{dname}\t{nbytes}\t{t['sum'] * 1e3:.1f}\t"
                  f"{t['aminmax'] * 1e3:.1f}\t{t['copy'] * 1e3:.1f}\t{t['acttrace'] * 1e3:.1f}\t"
                  f"{gbps['sum']:.0f}\t{gbps['acttrace']:.0f}\t"
                  f"{gbps['acttrace'] / gbps['sum']:.2f}", flush=True)
            rows_out.append({"shape": name, "dtype": dname, "bytes": nbytes,
                             **{f"{k}_ms": v for k, v in t.items()}})
            del xs
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "rows": rows_out}, f, indent=1)


if __name__ == "__main__":
    main()
