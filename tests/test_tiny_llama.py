"""test_tiny_llama.py: capture from real trained weights on the CPU.

examples/tiny-llama/model-8x128 is a byte-level Llama (8 layers, hidden 128,
1.65 M parameters, 3.3 MB in bf16) that examples/tiny-llama/train.py trained
on an H200.  It grew the phenomenon of the massive-activations studies at a
small scale: one channel of the residual stream, at the first token, far
above every other channel.  Here, with torch alone (model.py loads the
directory without transformers):

- a plain forward with hooks, in float64, on text from this repository:
  the channel with the largest |x| of every layer's output is one fixed
  channel, at position 0 of every sequence, and at least 3x the next
  channel's largest |x| in the layers between the first and the last; it is
  the channel the GPU run reported when training ended (training.json);
- acttrace.capture of the same forward (float32): the trace's per-channel
  absmax of every layer output equals the float64 reference to float32
  precision, and trace-outliers -m massive (with thresholds for a model this
  small: |x| > 10 and 20x the median) finds that channel at position 0 in
  every layer, and nowhere else."""
import glob
import json
import os
import subprocess
import sys
import tempfile

from test_python_models import Checker, acttrace
import torch  # noqa: E402

try:
    import h5py  # noqa: F401
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

SRC = os.environ.get("top_srcdir", ".")
EXAMPLE = os.path.join(SRC, "examples", "tiny-llama")
sys.path.insert(0, EXAMPLE)
import model as tl  # noqa: E402

check = Checker()
SEQ = 256


def repository_text():
    """Sequences of BOS and SEQ-1 bytes from this repository's man pages."""
    data = b"".join(open(p, "rb").read() for p in sorted(glob.glob(os.path.join(SRC, "man", "*.[0-9]"))))
    rows = [[tl.BOS] + list(data[i:i + SEQ - 1]) for i in range(0, 4 * (SEQ - 1), SEQ - 1)]
    return torch.tensor(rows)


def reference(model, ids):
    """Every layer's output in float64."""
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o.detach().double()))
             for layer in model.model.layers]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    return outs


def main():
    make_zstd_filter_available()
    directory = os.path.join(EXAMPLE, "model-8x128")
    with open(os.path.join(directory, "training.json")) as f:
        gpu_channel = json.load(f)["residual"][0]["channel"]
    ids = repository_text()
    model = tl.load(directory, torch.float64)
    outs = reference(model, ids)
    per_layer = [o.abs().amax(dim=(0, 1)) for o in outs]
    channel = int(per_layer[0].argmax())
    check.ok(channel == gpu_channel, f"the channel, {channel}, is the GPU run's ({gpu_channel})")
    for i, (o, a) in enumerate(zip(outs, per_layer)):
        top2 = a.topk(2)
        check.ok(int(top2.indices[0]) == channel,
                 f"layer {i}: channel {channel} has the largest |x| ({float(top2.values[0]):.1f})")
        where = o[..., channel].abs().argmax(dim=1)
        check.ok(bool((where == 0).all()), f"layer {i}: at position 0 of every sequence")
        ratio = float(top2.values[0] / top2.values[1])
        if 0 < i < len(outs) - 1:
            check.ok(ratio >= 3, f"layer {i}: {ratio:.1f}x the next channel")

    model = tl.load(directory, torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "real.h5")
        with acttrace.capture(model, path, model_name="tiny-llama-8x128"):
            with torch.no_grad():
                model(ids)
        with h5py.File(path, "r") as f:
            for i, a in enumerate(per_layer):
                got = torch.from_numpy(f[f"points/layers.{i}.layer.out/absmax"][...])
                err = float(((got - a) / a.clamp_min(1e-3)).abs().max())
                check.ok(err < 1e-5, f"layers.{i}.layer.out: absmax as float64's, {err:.1e}")
        r = subprocess.run(["trace-outliers", "-m", "massive", "--min-abs", "10", "--ratio", "20",
                            "-p", "*layer.out", path], capture_output=True, text=True)
        rows = [line.split("\t") for line in r.stdout.splitlines()]
        check.ok(r.returncode == 0 and len(rows) > 1, f"trace-outliers: exit {r.returncode} "
                 f"{r.stderr.strip()}")
        if rows:
            head, body = rows[0], rows[1:]
            c, p, n = head.index("channel"), head.index("pos"), head.index("point")
            check.ok(all(int(x[c]) == channel and x[p] == "0" for x in body),
                     f"trace-outliers -m massive: {len(body)} elements, all channel {channel} "
                     "at position 0")
            check.ok(len({x[n] for x in body}) == len(per_layer),
                     f"... in every layer ({len({x[n] for x in body})})")
    check.done("test_tiny_llama")


if __name__ == "__main__":
    main()
