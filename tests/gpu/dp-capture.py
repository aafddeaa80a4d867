#!/usr/bin/env python3
"""dp-capture.py: data-parallel capture on several GPUs against one GPU.

    torchrun --nproc-per-node 2 tests/gpu/dp-capture.py --out DIR    # the ranks
    python3 tests/gpu/dp-capture.py --single --out DIR               # one GPU
    trace-equal DIR/run.h5 DIR/single.h5 1e-6

A Llama of about 1.1B parameters from a config (transformers, seeded random
weights, bf16, SDPA) runs over a fixed list of batches.  Under torchrun each
rank takes every world-th batch from its rank's and records it inside
acttrace.capture(..., merge=True): DIR/run.rankN.h5, merged by rank 0 into
DIR/run.h5.  --single runs the same batches on one GPU in the merged order
(rank 0's, then rank 1's, ...) into DIR/single.h5.  trace-equal then checks
counts, histograms, min/max/absmax and extremes exactly and means and
standard deviations within 1e-6 of the standard deviation.

Each rank also prints its median forward time without and with capture
(CUDA events around model(ids)), the overhead per rank."""
import argparse
import os
import statistics
import sys

import torch


def build_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


def all_batches(args):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 32000, (args.batch, args.seq_len), generator=g)
            for _ in range(args.batches)]


def forward_times(model, batches):
    times = []
    with torch.no_grad():
        for ids in batches:
            ids = ids.cuda()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids, use_cache=False)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return times


def rank_main(args, acttrace):
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model()
    mine = all_batches(args)[rank::world]
    forward_times(model, mine[:1])  # warm-up
    plain = forward_times(model, mine)
    with acttrace.capture(model, os.path.join(args.out, "run.h5"), merge=True) as cap:
        captured = forward_times(model, mine)
    p, c = statistics.median(plain), statistics.median(captured)
    print(f"rank {rank} of {world} (cuda:{local}): {len(mine)} batches of {args.batch} x "
          f"{args.seq_len}, {len(cap.points)} points; median forward {p:.2f} ms plain, "
          f"{c:.2f} ms under capture: {c / p:.3f}x", flush=True)
    dist.destroy_process_group()


def single_main(args, acttrace):
    model = build_model()
    batches = all_batches(args)
    order = [b for r in range(args.world) for b in batches[r::args.world]]
    forward_times(model, order[:1])
    with acttrace.capture(model, os.path.join(args.out, "single.h5")):
        captured = forward_times(model, order)
    print(f"one GPU: {len(order)} batches, median forward {statistics.median(captured):.2f} ms "
          "under capture", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--single", action="store_true", help="the one-GPU reference")
    ap.add_argument("--world", type=int, default=2, help="--single: the ranks to mimic")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no GPU")
        sys.exit(77)
    os.makedirs(args.out, exist_ok=True)
    import acttrace
    (single_main if args.single else rank_main)(args, acttrace)


if __name__ == "__main__":
    main()
