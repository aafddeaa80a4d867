"""test_real_demo.py: the massive activation of the shipped real trace
(examples/tiny-llama/tiny-llama.h5, recorded by trace-capture on an H200 from
the byte-level Llama that examples/tiny-llama/train.py trained), read with
h5py and numpy alone, and what the tools say about it.

The phenomenon, as the massive-activations studies describe it (Sun et al.
2024; the outlier-distribution study's section 3.2):
- one channel has the largest |x| of the residual stream (every layer's
  output) in every layer, from the first layer to the last;
- its largest values are at the first position of every sequence (the BOS
  token), all the same value from the layer where it stops growing;
- it is massive: above 100 and 100 times the median |x| in some layer, and
  at least 30 times the median |x| in every layer after the first;
- it arises in the MLP: layer 0's down_proj output carries it, its input
  does not;
- the final norm shrinks it by more than 5x and it stays the largest.
What does not hold for this model, and is checked as it is: a second
channel, negative, also at the first token, reaches 0.5 to 0.9 of it
(LLaMA2-7B has such a pair too), so the largest channel is not 3x the next.

Then the tools: trace-outliers -m massive finds that channel at position 0,
trace-plot top --distinct channel draws it as the largest in every layer,
and trace-clip's mu +- 3 sigma bounds for it agree with numpy's."""
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

TRACE = os.path.join(os.environ.get("top_srcdir", "."), "examples", "tiny-llama", "tiny-llama.h5")
LAYERS = 8
failures = 0


def check(cond, text):
    global failures
    print(("ok   " if cond else "FAIL ") + text)
    failures += not cond


def hist_median(f, point):
    """The median |x| of a point from its histogram (all channels), at the
    geometric middle of the bin that holds it."""
    h = f[f"points/{point}/hist"][...].sum(axis=0).astype(np.float64)
    edges = f.attrs["hist_lower_edges"]
    k = int(np.searchsorted(np.cumsum(h), h.sum() / 2))
    return np.sqrt(edges[k] * edges[k + 1]) if edges[k] > 0 else edges[k + 1] / 2


def main():
    make_zstd_filter_available()
    f = h5py.File(TRACE, "r")
    pos = f["tokens/pos"][...]
    seq = f["tokens/seq"][...]
    sequences = len(np.unique(seq))
    out = [f"layers.{i}.layer.out" for i in range(LAYERS)]
    absmax = [f[f"points/{p}/absmax"][...] for p in out]
    channel = int(np.argmax(absmax[0]))
    print(f"# the channel: {channel}; {sequences} sequences")

    for i, a in enumerate(absmax):
        order = np.argsort(a)[::-1]
        check(order[0] == channel, f"layer {i}: channel {channel} has the largest |x| "
              f"({a[channel]:.1f}; next {order[1]} at {a[order[1]]:.1f})")
        ratio = a[channel] / a[order[1]]
        check(1.05 < ratio < 3, f"layer {i}: {ratio:.2f}x the next channel, a second massive "
              "channel, not 3x")

    for i, p in enumerate(out):
        e = f[f"points/{p}/extremes"][...]
        mine = e[e["channel"] == channel]
        at = pos[mine["token"]]
        check(len(mine) >= sequences and np.all(at == 0),
              f"{p}: its {len(mine)} extremes are all at position 0")
        check(len(np.unique(seq[mine["token"]])) == sequences,
              f"{p}: in every one of the {sequences} sequences")
        if i >= 2:
            check(np.all(mine["value"] == mine["value"][0]),
                  f"{p}: the same value in every sequence ({mine['value'][0]:g})")
        median = hist_median(f, p)
        if i >= 1:
            check(absmax[i][channel] >= 30 * median,
                  f"{p}: {absmax[i][channel] / median:.0f}x the median |x| ({median:.3g})")
    massive = [i for i, (a, p) in enumerate(zip(absmax, out))
               if a[channel] > 100 and a[channel] > 100 * hist_median(f, p)]
    check(len(massive) > 0, f"massive (above 100 and 100x the median |x|) at layers {massive}")
    down_in = f["points/layers.0.mlp.down_proj.in/absmax"][...]
    down_out = f["points/layers.0.mlp.down_proj.out/absmax"][...]
    check(int(np.argmax(down_out)) == channel and down_out[channel] > 10 * np.median(down_out),
          f"it arises in layer 0's MLP: down_proj.out {down_out[channel]:.1f}")
    check(down_in.max() > 20 * np.median(down_in),
          f"from a massive intermediate channel {int(np.argmax(down_in))} of down_proj.in "
          f"({down_in.max():.1f})")
    before = f["points/final_norm.in/absmax"][...]
    after = f["points/final_norm.out/absmax"][...]
    check(int(np.argmax(after)) == channel and before[channel] / after[channel] > 5,
          f"the final norm shrinks it {before[channel] / after[channel]:.1f}x and it stays the largest")

    tool(channel)
    print(f"test_real_demo: {failures} failures")
    sys.exit(1 if failures else 0)


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        check(False, f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def every_tool_reads_it():
    """Each tool, run on the trace as a user would, exits 0 with rows."""
    for args in (["trace-stats", TRACE], ["trace-stats", "-i", TRACE],
                 ["trace-outliers", "--count", TRACE],
                 ["trace-layers", "-m", "grand-mean", "--by", "layer", TRACE],
                 ["trace-clip", "-k", "6", "-K", "3", TRACE],
                 ["trace-quant", TRACE], ["trace-diff", TRACE, TRACE]):
        rows = run(*args)
        check(len(rows) > 1, f"{' '.join(args[:-1])}: {len(rows)} rows")


def weight_steps():
    """trace-quant --weights against numpy on the trace's row maxima."""
    rows = run("trace-quant", "--weights", "-b", "8,4", "-d", "17", TRACE)
    head, body = rows[0], rows[1:]
    col = {c: i for i, c in enumerate(head)}
    f = h5py.File(TRACE, "r")
    matrices = [m for m in f["weights"] if f["weights"][m].attrs["rows"] > 1]
    check(len(body) == 2 * len(matrices), f"trace-quant --weights: {len(body)} rows for "
          f"{len(matrices)} matrices at 2 widths")
    worst = 0.0
    for r in body:
        a = f["weights"][r[col["module"]]]["row_absmax"][...]
        q = 2 ** (int(r[col["bits"]]) - 1) - 1
        want = {"step_tensor": a.max() / q, "step_row_median": np.median(a) / q,
                "step_row_min": a.min() / q, "step_row_max": a.max() / q}
        want["bits_lost"] = np.log2(want["step_tensor"] / want["step_row_median"])
        for k, v in want.items():
            worst = max(worst, abs(float(r[col[k]]) - v) / abs(v))
    check(worst < 1e-12, f"trace-quant --weights: steps and bits lost as numpy's ({worst:.1e})")


def tool(channel):
    every_tool_reads_it()
    weight_steps()
    rows = run("trace-outliers", "-m", "massive", "--ratio", "100", "-p", "*layer.out", TRACE)
    head, body = rows[0], rows[1:]
    c, p = head.index("channel"), head.index("pos")
    check(len(body) > 0 and all(int(r[c]) == channel and r[p] == "0" for r in body),
          f"trace-outliers -m massive: {len(body)} elements, all channel {channel} at position 0")
    with tempfile.TemporaryDirectory() as tmp:
        run("trace-plot", "top", "--distinct", "channel", TRACE, "--script", tmp, "-o", "top.png")
        with open(os.path.join(tmp, "top.dat")) as f:
            lines = [ln.split("\t") for ln in f if not ln.startswith("#")]
    check(len(lines) == LAYERS and all(int(ln[5]) == channel for ln in lines),
          f"trace-plot top --distinct channel: channel {channel} first in all {len(lines)} layers")
    bounds = run("trace-clip", "-a", "-K", "3", "-p", "layers.4.layer.out", TRACE)
    mine = [r for r in bounds[1:] if int(r[1]) == channel]
    f = h5py.File(TRACE, "r")
    g = f["points/layers.4.layer.out"]
    n, mean, m2 = g["count"][channel], g["mean"][channel], g["m2"][channel]
    sigma = np.sqrt(m2 / (n - 1))
    check(len(mine) == 1 and abs(float(mine[0][2]) - (mean - 3 * sigma)) <= 1e-12 * sigma and
          abs(float(mine[0][3]) - (mean + 3 * sigma)) <= 1e-12 * sigma,
          f"trace-clip -K 3: mu +- 3 sigma = {mean - 3 * sigma:.4f}, {mean + 3 * sigma:.4f}")


if __name__ == "__main__":
    main()
