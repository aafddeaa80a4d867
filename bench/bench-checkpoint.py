"""bench-checkpoint.py: the time of a checkpoint and of close on a large
trace, through the Python binding, for whichever libacttrace ACTTRACE_LIB
names (docs/BENCHMARKS.md, "Checkpoint cost").  One TSV row:
  points channels stats_mib checkpoint_1_s checkpoint_2_s checkpoint_3_s
  close_s file_mib
Usage: python3 bench-checkpoint.py OUT.h5 [POINTS [CHANNELS]]"""
import os
import sys
import time

import torch

import acttrace


def main(path, points=96, channels=8192):
    w = acttrace.Writer(path, hist=True)
    ids = [w.add_point(f"layers.{i}.mlp.down_proj.in", channels=channels, layer=i,
                       component="mlp") for i in range(points)]
    g = torch.Generator().manual_seed(1)
    rows = 64
    times = []
    for step in range(int(os.environ.get("CHECKPOINTS", 3))):
        base = w.add_tokens(torch.arange(rows), torch.full((rows,), step), torch.arange(rows))
        x = torch.randn(rows, channels, generator=g)
        for p in ids:
            w.observe(p, x * (p + 1), base)
        start = time.monotonic()
        w.checkpoint()
        times.append(time.monotonic() - start)
    start = time.monotonic()
    w.close()
    close = time.monotonic() - start
    stats_mib = points * channels * (10 * 8 + 195 * 4) / 2**20
    size_mib = os.path.getsize(path) / 2**20
    times = times[:3]
    print("\t".join(str(v) for v in [points, channels, f"{stats_mib:.0f}"] +
                    [f"{t:.3f}" for t in times] + [f"{close:.3f}", f"{size_mib:.1f}"]))
    os.unlink(path) if not os.environ.get("KEEP") else None


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
