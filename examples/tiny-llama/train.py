#!/usr/bin/env python3
"""train.py: train a small byte-level Llama on text every Debian machine has,
and save it as a Hugging Face model directory that trace-capture loads.

The corpus is the Python standard library's sources and the packages'
copyright files (/usr/share/doc/*/copyright), sorted by path; one file in
twenty (by the CRC-32 of its path relative to its root) is held out and
never trained on.  Every training sequence is BOS and then a random window
of the training text.  Seeded: the same seed, sizes and steps on the same
machine give the same model.

  python3 train.py --out DIR [--layers 8 --hidden 512 --steps 6000] [--heldout FILE]

Prints the loss curve (also written to DIR/loss.tsv), the training time, the
held-out loss, and, per layer, the largest |x| of the residual stream: the
massive activation the studies describe shows as one channel, at position 0,
far above the median.  Needs torch; a GPU for the default sizes."""
import argparse
import glob
import json
import math
import os
import sys
import sysconfig
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as tl  # noqa: E402


def corpus_files():
    """(root, path) of every corpus file, in a fixed order."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if "site-packages" not in path and "dist-packages" not in path:
            files.append((stdlib, path))
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        files.append(("/usr/share/doc", path))
    return files


def held_out(root, path):
    return zlib.crc32(os.path.relpath(path, root).encode()) % 20 == 0


def read_corpus(limit=None):
    """The training and held-out texts as bytes, each file followed by a
    blank line."""
    train, test = bytearray(), bytearray()
    for root, path in corpus_files():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        (test if held_out(root, path) else train).extend(data + b"\n\n")
        if limit and len(train) >= limit:
            break
    return bytes(train), bytes(test)


def batches(data, batch, seq, generator, device):
    """Endless batches [batch, seq]: BOS, then seq-1 bytes from a random
    offset of data (kept on the device, so a batch is one gather)."""
    text = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    span = torch.arange(seq - 1, device=device)
    bos = torch.full((batch, 1), tl.BOS, dtype=torch.long, device=device)
    while True:
        start = torch.randint(0, len(data) - seq, (batch,), generator=generator)
        rows = text[start.to(device)[:, None] + span].long()
        yield torch.cat((bos, rows), dim=1)


def lr_at(step, steps, peak, warmup):
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))


def optimizer(model, lr, weight_decay, device):
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay},
              {"params": vectors, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), **fused)


def loss_of(model, ids, autocast):
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def fixed_windows(data, seq, n, device):
    """n sequences [n, seq]: BOS and seq-1 bytes at n evenly spaced offsets."""
    step = max(1, (len(data) - seq) // n)
    rows = [[tl.BOS] + list(data[i * step:i * step + seq - 1]) for i in range(n)]
    return torch.tensor(rows, dtype=torch.long, device=device)


@torch.no_grad()
def evaluate(model, data, seq, device, autocast, n=16):
    """Mean loss (nats per byte) over n fixed windows of data."""
    ids = fixed_windows(data, seq, n, device)
    return loss_of(model, ids, autocast).item()


@torch.no_grad()
def residual_report(model, data, seq, device, autocast):
    """Per layer output (the residual stream) and after the final norm: the
    largest |x|, its channel and position, the next channel's largest |x|,
    and the median |x|, over 8 held-out sequences."""
    ids = fixed_windows(data, seq, 8, device)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append(o.float()))
             for layer in model.model.layers]
    hooks.append(model.model.norm.register_forward_hook(lambda m, i, o: seen.append(o.float())))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        model(ids)
    for h in hooks:
        h.remove()
    report = []
    for index, x in enumerate(seen):
        a = x.abs()
        per_channel = a.amax(dim=(0, 1))
        top2 = per_channel.topk(2)
        channel = int(top2.indices[0])
        where = int(a[..., channel].amax(dim=0).argmax())
        report.append({"layer": index if index < len(model.model.layers) else "norm",
                       "channel": channel, "position": where,
                       "value": float(x[..., channel].flatten()[a[..., channel].argmax()]),
                       "absmax": float(top2.values[0]), "next": float(top2.values[1]),
                       "median": float(a.median())})
    return report


def print_report(report):
    print("layer\tchannel\tposition\tvalue\t|x|max\tnext channel\tmedian |x|")
    for r in report:
        print(f"{r['layer']}\t{r['channel']}\t{r['position']}\t{r['value']:.1f}\t"
              f"{r['absmax']:.1f}\t{r['next']:.1f}\t{r['median']:.3f}")


def check_transformers(model, directory, device):
    """Whether transformers loads the directory and computes the same logits,
    and its tokenizer gives BOS and the bytes.  Skipped without transformers."""
    try:
        import transformers
    except ImportError:
        print("# transformers not importable: the directory was not loaded back")
        return True
    tok = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    text = "déjà vu\n\tx = 1"
    got = tok(text)["input_ids"]
    ok = got == tl.encode(text)
    print(f"# tokenizer: {'ok' if ok else 'MISMATCH'} ({got[:8]}...)")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, dtype=torch.float32).to(device).eval()
    ours = tl.load(directory, torch.float32).to(device)
    ids = torch.tensor([tl.encode("def main():\n    return 0\n" * 8)], device=device)
    with torch.no_grad():
        a, b = hf(ids).logits.float(), ours(ids).float()
    err = float((a - b).abs().max() / b.abs().max())
    print(f"# transformers logits vs model.py: max relative difference {err:.2e}")
    return ok and err < 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-seconds", type=float, default=540,
                    help="stop early (and say so) past this training time")
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--corpus-limit", type=int, default=0,
                    help="read at most this many training bytes (for quick tries)")
    ap.add_argument("--heldout", help="also write the held-out text to this file")
    o = ap.parse_args()

    torch.manual_seed(o.seed)
    device = torch.device(o.device)
    autocast = device.type == "cuda"
    t0 = time.time()
    train, test = read_corpus(o.corpus_limit or None)
    print(f"# corpus: {len(train)} training bytes, {len(test)} held out, "
          f"read in {time.time() - t0:.1f} s")
    if len(test) < o.seq or len(train) < o.seq:
        sys.exit(f"train.py: the corpus holds too little text for sequences of {o.seq} bytes "
                 "(a larger --corpus-limit?)")
    if o.heldout:  # as UTF-8 text, which trace-capture reads
        with open(o.heldout, "w", encoding="utf-8") as f:
            f.write(test.decode("utf-8", errors="replace"))

    model = tl.LlamaForCausalLM(tl.config(o.layers, o.hidden, o.heads)).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"# model: {o.layers} layers, hidden {o.hidden}, {params / 1e6:.2f} M parameters; "
          f"{o.steps} steps of {o.batch} x {o.seq} on {device}")
    opt = optimizer(model, o.lr, o.weight_decay, device)
    gen = torch.Generator().manual_seed(o.seed)
    data = batches(train, o.batch, o.seq, gen, device)
    os.makedirs(o.out, exist_ok=True)
    curve = open(os.path.join(o.out, "loss.tsv"), "w")
    curve.write("step\tloss\tseconds\n")
    print("step\tloss\tbits/byte\tseconds")
    start, step, stopped = time.time(), 0, False
    for step in range(o.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o.steps, o.lr, o.warmup)
        loss = loss_of(model, next(data), autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % o.log_every == 0 or step == o.steps - 1:
            value, elapsed = loss.item(), time.time() - start
            print(f"{step}\t{value:.4f}\t{value / math.log(2):.3f}\t{elapsed:.1f}", flush=True)
            curve.write(f"{step}\t{value:.6f}\t{elapsed:.2f}\n")
            if elapsed > o.max_seconds:
                stopped = True
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - start
    curve.close()
    print(f"# trained {step + 1} steps in {seconds:.1f} s" +
          (f" (stopped early by --max-seconds {o.max_seconds:g})" if stopped else ""))
    model.eval()
    heldout_loss = evaluate(model, test, o.seq, device, autocast)
    print(f"# held-out loss {heldout_loss:.4f} nats/byte ({heldout_loss / math.log(2):.3f} bits)")
    report = residual_report(model, test, o.seq, device, autocast)
    print_report(report)
    tl.save(model, o.out)
    with open(os.path.join(o.out, "training.json"), "w") as f:
        json.dump({"args": vars(o), "steps": step + 1, "seconds": round(seconds, 1),
                   "parameters": params, "heldout_loss": heldout_loss,
                   "residual": report, "torch": torch.__version__}, f, indent=1)
    print(f"# saved {o.out}")
    if not check_transformers(model.float(), o.out, device):
        print("train.py: the saved directory does not load back the same", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
