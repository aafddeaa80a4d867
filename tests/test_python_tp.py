"""test_python_tp.py: tensor-parallel capture on the CPU.

A small Llama (plain PyTorch, test_python_models.py's) is split by hand the
way transformers' tp_plan="auto" splits it: q/k/v/gate/up column-parallel
(each rank holds rows [rank w, (rank+1) w) of the weight, the Linear keeps its
full out_features), o/down row-parallel (the same columns, the output summed
by an all-reduce in a forward hook registered before the capture's, as
transformers registers its own), the attention on the rank's heads; the
model is marked with transformers' attribute, model._tp_plan, so that the
capture's own detection finds the split.  2 and 4 gloo ranks each capture
the same batches with acttrace.capture(..., merge=True); rank 0 merges.  The
reference is one process capturing the unsharded model (same weights, same
batches).  The merged trace is read with h5py and compared:

  everywhere: the same points (names, widths), counts and nonfinite exact,
    /tokens and the sample tokens equal, and no slice or replicated mark;
  up to the first row-parallel output (the embeddings, layer 0's norms and
    q/k/v, o_proj's input): the arithmetic on each rank is the unsharded
    model's (each output channel is the same dot product over the same
    input), so histograms, min/max/absmax, extremes and samples are equal
    bit for bit and the moments to 1e-12 relative;
  from the first row-parallel output on: the all-reduce adds the ranks'
    partial sums, which rounds differently from one matmul's sum over all
    inputs, and the difference travels down the residual stream: the values
    agree to float32 rounding, so min/max/absmax, the means and the
    extremes' values to 1e-4 of the channel's scale, the extremes' channels
    and tokens equal, and a histogram may move a value across a bin edge:
    its per-channel totals are equal and at most 1% of its values move.

Also: layout() finds the same split from config.base_model_tp_plan alone
(the base model's paths); weights gathered whole equal the unsharded ones;
a plan that does not describe the split (a colwise slice of the wrong width)
is refused with a clear error; a one-rank trace warns in trace-stats."""
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

from test_python_models import Checker, LlamaForCausalLM, VOCAB, acttrace, plant_outliers
import torch  # noqa: E402

try:
    import h5py
    import numpy as np
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

check = Checker()
COLWISE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
           "mlp.up_proj")
ROWWISE = ("self_attn.o_proj", "mlp.down_proj")
PLAN = {**{f"layers.*.{m}": "colwise" for m in COLWISE},
        **{f"layers.*.{m}": "rowwise" for m in ROWWISE}}
# Points whose arithmetic is the unsharded model's on every rank.
EXACT_POINTS = ("embed_tokens.out", "layers.0.layer.in", "layers.0.input_layernorm.in",
                "layers.0.input_layernorm.out", "layers.0.self_attn.q_proj.out",
                "layers.0.self_attn.k_proj.out", "layers.0.self_attn.v_proj.out",
                "layers.0.self_attn.o_proj.in")


def model(seed=5):
    """4 heads of 4 key/value heads and 48 MLP channels: splits in 2 and 4."""
    torch.manual_seed(seed)
    c = SimpleNamespace(model_type="llama", hidden_size=32, intermediate_size=48,
                        num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
                        vocab_size=VOCAB)
    m = LlamaForCausalLM(c).eval()
    plant_outliers(m.model.embed_tokens, [5, 17], 30.0)
    return m


def batches():
    g = torch.Generator().manual_seed(13)
    return [torch.randint(0, VOCAB, (2, 6 + i % 3), generator=g) for i in range(4)]


def _all_reduce_output(module, args, output):
    torch.distributed.all_reduce(output)
    return output


def shard(m, rank, world):
    """m split in place as transformers' colwise/rowwise would split it."""
    for layer in m.model.layers:
        for path in COLWISE + ROWWISE:
            parent, name = path.split(".")
            linear = getattr(getattr(layer, parent), name)
            w = linear.weight.detach()
            if path in COLWISE:
                rows = w.shape[0] // world
                part = w[rank * rows:(rank + 1) * rows]
            else:
                cols = w.shape[1] // world
                part = w[:, rank * cols:(rank + 1) * cols]
                linear.register_forward_hook(_all_reduce_output)
            linear.weight = torch.nn.Parameter(part.contiguous().clone())
        layer.self_attn.heads //= world
        layer.self_attn.kv_heads //= world
    m._tp_plan = {f"model.{k}": v for k, v in PLAN.items()}
    return m


def worker(rank, world, tmp, path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous-tp{world}",
                            rank=rank, world_size=world)
    m = shard(model(), rank, world)
    status = 0
    try:
        with torch.no_grad(), acttrace.capture(m, path, merge=True, sample="every:3"):
            for ids in batches():
                m(ids)
    except acttrace.Error as e:
        print(f"rank {rank}: {e}", file=sys.stderr)
        status = 4
    dist.destroy_process_group()
    sys.exit(status)


def run_ranks(world, tmp, path):
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(r), str(world), tmp, path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    results = [p.communicate(timeout=300) for p in procs]
    return [p.returncode for p in procs], [err for _, err in results]


def reference(path):
    m = model()
    with torch.no_grad(), acttrace.capture(m, path, sample="every:3"):
        for ids in batches():
            m(ids)


def scale_of(g):
    """A channel's magnitude: what a float32 rounding is relative to."""
    return np.maximum(g["absmax"][()], 1e-30)


def compare_point(name, a, b, exact):
    what = f"{name}"
    for attr in ("channels", "channel_offset", "full_channels"):
        check.ok(a.attrs[attr] == b.attrs[attr], f"{what}: attribute {attr}")
    check.ok("replicated" not in a.attrs, f"{what}: an assembled point is not marked replicated")
    for key in ("count", "nonfinite", "sample_tokens"):
        check.ok(np.array_equal(a[key][()], b[key][()]), f"{what}: {key} equal")
    if exact:
        for key in ("hist", "min", "max", "absmax", "extremes", "samples"):
            check.ok(a[key][()].tobytes() == b[key][()].tobytes(), f"{what}: {key} bit for bit")
        for key in ("mean", "m2", "m3", "m4", "abssum"):
            x, y = a[key][()], b[key][()]
            err = float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300)))
            check.ok(err <= 1e-12, f"{what}: {key} within 1e-12 relative ({err:.1e})")
        return
    scale = scale_of(b)
    for key in ("min", "max", "absmax", "mean"):
        err = float(np.max(np.abs(a[key][()] - b[key][()]) / scale))
        check.ok(err <= 1e-4, f"{what}: {key} within 1e-4 of the channel's absmax ({err:.1e})")
    ha, hb = a["hist"][()].astype(np.int64), b["hist"][()].astype(np.int64)
    check.ok(np.array_equal(ha.sum(axis=1), hb.sum(axis=1)), f"{what}: histogram totals equal")
    moved = np.abs(ha - hb).sum() / 2
    check.ok(moved <= 0.01 * hb.sum(), f"{what}: {moved:.0f} of {hb.sum()} values change bins")
    ea, eb = a["extremes"][()], b["extremes"][()]
    check.ok(np.array_equal(ea["token"], eb["token"]) and np.array_equal(ea["channel"], eb["channel"]),
             f"{what}: extremes at the same tokens and channels")
    err = float(np.max(np.abs(ea["value"] - eb["value"]) / np.abs(eb["value"]))) if eb.size else 0.0
    check.ok(err <= 1e-4, f"{what}: extreme values within 1e-4 ({err:.1e})")
    sa, sb = a["samples"][()].astype(np.float64), b["samples"][()].astype(np.float64)
    err = float(np.max(np.abs(sa - sb) / scale)) if sb.size else 0.0
    check.ok(sa.shape == sb.shape and err <= 1e-4, f"{what}: samples within 1e-4 ({err:.1e})")


def compare(merged, single):
    with h5py.File(merged, "r") as a, h5py.File(single, "r") as b:
        check.ok(list(a["points"]) == list(b["points"]), "the same points")
        for col in ("seq", "pos", "id"):
            check.ok(np.array_equal(a["tokens"][col][()], b["tokens"][col][()]), f"/tokens/{col}")
        for name in b["points"]:
            if name in a["points"]:
                compare_point(name, a["points"][name], b["points"][name], name in EXACT_POINTS)
        check.ok(sorted(a["weights"]) == sorted(b["weights"]), "the same weights")
        for module in b["weights"]:
            for key in b["weights"][module]:
                check.ok(np.array_equal(a["weights"][module][key][()], b["weights"][module][key][()]),
                         f"weight {module}/{key}: gathered whole, equal")


def check_rank_traces(tmp, world, path):
    stem = os.path.splitext(path)[0]
    with h5py.File(f"{stem}.rank1.h5", "r") as f:
        q = f["points"]["layers.0.self_attn.q_proj.out"]
        check.ok((q.attrs["channel_offset"], q.attrs["channels"], q.attrs["full_channels"]) ==
                 (32 // world, 32 // world, 32), "rank 1's q_proj.out: its slice of the channels")
        check.ok("layers.0.self_attn.o_proj.out" not in f["points"] and
                 "final_norm.out" not in f["points"],
                 "rank 1 does not record what is whole on every rank")
        check.ok(len(f["weights"]) == 0, "rank 1 records no weights")
    with h5py.File(f"{stem}.rank0.h5", "r") as f:
        o = f["points"]["layers.0.self_attn.o_proj.out"]
        check.ok(int(o.attrs.get("replicated", 0)) == 1, "rank 0's o_proj.out is replicated")
        down_in = f["points"]["layers.1.mlp.down_proj.in"]
        check.ok(down_in.attrs["channels"] == 48 // world and down_in.attrs["full_channels"] == 48,
                 "rank 0's down_proj.in: a slice")
    r = subprocess.run(["trace-stats", f"{stem}.rank1.h5"], capture_output=True, text=True)
    check.ok("tensor-parallel capture" in r.stderr and "slices" in r.stderr,
             f"trace-stats warns on one rank's trace: {r.stderr.strip()[:200]}")


def check_layout_rules():
    """The split as layout() finds it, from either of transformers' plans,
    without processes."""
    from acttrace import parallel
    m = shard(model(), 1, 2)
    points = acttrace.points(m)
    slices, sharded = parallel.layout(m, points, 1, 2)
    del m._tp_plan
    m.config.base_model_tp_plan = dict(PLAN)
    m.base_model_prefix = "model"
    check.ok(parallel.layout(m, points, 1, 2) == (slices, sharded),
             "config.base_model_tp_plan gives the split model._tp_plan gives")
    check.ok(slices["layers.0.mlp.up_proj.out"] == parallel.Slice(24, 24, 48, False) and
             slices["layers.0.mlp.down_proj.in"] == parallel.Slice(24, 24, 48, False) and
             slices["layers.0.mlp.down_proj.out"].replicated and
             slices["layers.0.input_layernorm.out"].replicated, "colwise out, rowwise in sliced")
    check.ok(parallel.layout(model(), points, 0, 2) is None,
             "a plan on a model that is not split: not tensor-parallel")
    bad = shard(model(), 0, 2)
    bad.model.layers[0].mlp.up_proj.weight = torch.nn.Parameter(torch.zeros(16, 32))
    try:
        parallel.layout(bad, acttrace.points(bad), 0, 2)
        check.ok(False, "an uneven split is refused")
    except acttrace.Error as e:
        check.ok("16 of 48" in str(e) and "up_proj" in str(e), f"an uneven split: {e}")
    wrong = parallel.Slice(0, 24, 48, False)
    try:
        parallel.check_width(points[0], wrong, 48, "run.rank0.h5")
        check.ok(False, "a tensor wider than its slice is refused")
    except acttrace.Error as e:
        check.ok("48 channels, expected 24 (channels 0 to 23 of 48" in str(e), f"width: {e}")


def main():
    make_zstd_filter_available()
    check.context = "layout"
    check_layout_rules()
    with tempfile.TemporaryDirectory() as tmp:
        single = os.path.join(tmp, "single.h5")
        reference(single)
        for world in (2, 4):
            check.context = f"{world} ranks"
            path = os.path.join(tmp, f"tp{world}.h5")
            codes, errs = run_ranks(world, tmp, path)
            if not check.ok(codes == [0] * world and os.path.exists(path),
                            f"every rank exits 0 and rank 0 merges: {codes} {errs}"):
                continue
            check_rank_traces(tmp, world, path)
            compare(path, single)
    check.done("test_python_tp")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
