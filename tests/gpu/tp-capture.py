#!/usr/bin/env python3
"""tp-capture.py: tensor-parallel capture on several GPUs against one GPU.

    python3 tests/gpu/tp-capture.py --save --out DIR                   # the model
    torchrun --nproc-per-node 2 tests/gpu/tp-capture.py --out DIR      # TP=2
    python3 tests/gpu/tp-capture.py --single --out DIR                 # TP=1
    python3 tests/gpu/tp-capture.py --compare --out DIR                # the check

--save builds a Llama-style model from a config (transformers, seeded
random weights, bf16) and saves it to DIR/model, so that both runs load the
same weights from a local directory (nothing is downloaded).  Under torchrun
every rank loads it with tp_plan="auto" (q/k/v/gate/up column-parallel,
o/down row-parallel), runs the same fixed batches and records its slices
inside acttrace.capture(..., merge=True): DIR/tp.rankN.h5, assembled by
rank 0 into DIR/tp.h5.  --single loads the same directory on one GPU and
records DIR/single.h5.  --compare reads both with h5py and checks:

  the same points with the same widths, /tokens equal, counts and nonfinite
  counts exact (every rank sees every token);
  per-channel means within bf16 noise: |mean_tp - mean_1| <= 2^-5 (|mean_1|
  + std_1).  Why: every activation is bf16 (8 significant bits, a relative
  rounding of up to 2^-9); a row-parallel output is the all-reduce of the
  ranks' bf16 partial sums, each rounded to bf16 before the sum, where one
  GPU rounds the whole sum once: a few bf16 roundings of the output's size
  per element, which the residual stream carries into every later layer.
  Means over many tokens average that noise down, so 2^-5 (4 bf16 rounding
  steps of 2^-7 at the scale of the channel's values) bounds it with margin
  while still failing a misplaced slice (a wrong channel order moves means
  by about a std).

It prints, per point kind, the largest error in units of (|mean| + std), and
exits 1 on any failure."""
import argparse
import os
import statistics
import sys

import torch

VOCAB = 32000
MEAN_TOL = 2.0 ** -5


def save_model(out):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=8, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.save_pretrained(os.path.join(out, "model"))
    print(f"saved {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters to "
          f"{os.path.join(out, 'model')}; base_model_tp_plan: {config.base_model_tp_plan}")


def load(out, **kwargs):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"), dtype=torch.bfloat16,
                                                **kwargs).eval()


def all_batches(args):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (args.batch, args.seq_len), generator=g)
            for _ in range(args.batches)]


def run_batches(model, batches, device):
    times = []
    with torch.no_grad():
        for ids in batches:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids.to(device), use_cache=False)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return times


def rank_main(args, acttrace):
    model = load(args.out, tp_plan="auto")  # sets up the process group and the device
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    device = model.device
    batches = all_batches(args)
    run_batches(model, batches[:1], device)  # warm-up
    with acttrace.capture(model, os.path.join(args.out, "tp.h5"), merge=True) as cap:
        times = run_batches(model, batches, device)
    sliced = sum(1 for s in (cap.slices or {}).values() if not s.replicated)
    print(f"rank {rank} of {world} ({device}): {len(batches)} batches of {args.batch} x "
          f"{args.seq_len}, {len(cap.points)} points recorded, {sliced} of them slices; "
          f"median forward {statistics.median(times):.2f} ms under capture", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    if cap.slices is None:
        print(f"rank {rank}: FAIL: the model is not tensor-parallel by its plan", flush=True)
        sys.exit(1)


def single_main(args, acttrace):
    model = load(args.out).cuda()
    batches = all_batches(args)
    run_batches(model, batches[:1], "cuda")
    with acttrace.capture(model, os.path.join(args.out, "single.h5")):
        times = run_batches(model, batches, "cuda")
    print(f"one GPU: {len(batches)} batches, median forward {statistics.median(times):.2f} ms "
          "under capture", flush=True)


def compare_main(args):
    try:
        import hdf5plugin  # noqa: F401  zstd for h5py, where it has it
    except ImportError:
        pass  # HDF5_PLUGIN_PATH then points at acttrace's libh5zstd
    import h5py
    import numpy as np
    failures = []

    def fail(message):
        failures.append(message)
        print(f"FAIL {message}")

    with h5py.File(os.path.join(args.out, "tp.h5"), "r") as tp, \
            h5py.File(os.path.join(args.out, "single.h5"), "r") as one:
        if sorted(tp["points"]) != sorted(one["points"]):
            fail(f"points differ: {sorted(set(tp['points']) ^ set(one['points']))[:5]}")
        for col in ("seq", "pos", "id"):
            if not np.array_equal(tp["tokens"][col][()], one["tokens"][col][()]):
                fail(f"/tokens/{col} differs")
        worst = {}
        for name in sorted(set(tp["points"]) & set(one["points"])):
            a, b = tp["points"][name], one["points"][name]
            if a.attrs["channels"] != b.attrs["channels"] or "replicated" in a.attrs:
                fail(f"{name}: {a.attrs['channels']} channels, one GPU {b.attrs['channels']}")
                continue
            for key in ("count", "nonfinite"):
                if not np.array_equal(a[key][()], b[key][()]):
                    fail(f"{name}: {key} differs")
            n = np.maximum(b["count"][()].astype(np.float64), 1)
            scale = np.abs(b["mean"][()]) + np.sqrt(b["m2"][()] / n)
            err = np.abs(a["mean"][()] - b["mean"][()]) / np.maximum(scale, 1e-30)
            site = a.attrs["site"]
            site = site.decode() if isinstance(site, bytes) else str(site)
            worst[site] = max(worst.get(site, 0.0), float(err.max()))
            if err.max() > MEAN_TOL:
                c = int(err.argmax())
                fail(f"{name}: channel {c}: mean {a['mean'][c]:.6g}, one GPU {b['mean'][c]:.6g} "
                     f"({err.max():.3g} of |mean| + std > {MEAN_TOL})")
        for site, e in sorted(worst.items()):
            print(f"points {site}: largest mean error {e:.3g} of |mean| + std")
    print(f"compare: {len(failures)} failures; tolerance {MEAN_TOL} of |mean| + std")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--save", action="store_true", help="build and save the model")
    mode.add_argument("--single", action="store_true", help="the one-GPU reference")
    mode.add_argument("--compare", action="store_true", help="tp.h5 against single.h5")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare_main(args))
    if not torch.cuda.is_available():
        print("SKIP: no GPU")
        sys.exit(77)
    os.makedirs(args.out, exist_ok=True)
    if args.save:
        save_model(args.out)
        return
    import acttrace
    (single_main if args.single else rank_main)(args, acttrace)


if __name__ == "__main__":
    main()
