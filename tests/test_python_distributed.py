"""test_python_distributed.py: data-parallel capture on the CPU.

Two and three processes in a torch.distributed group (gloo, a file
rendezvous; what torchrun sets up) each run the same tiny Llama over their
share of a fixed list of batches inside acttrace.capture(..., merge=True):
every rank writes run.rankN.h5, and rank 0 merges them into run.h5 after
the block.  A single process capturing the same batches in the merged order
(rank 0's, then rank 1's, ...) is the reference: counts, nonfinite,
histograms, min, max, absmax, the extremes (values, channels and tokens) and
/tokens equal bit for bit, moments to 1e-12.  Also: a "{rank}" path
template, merge=PATH, the ranks' traces kept, and a rank that fails leaves
its own incomplete trace and no merged one."""
import os
import subprocess
import sys
import tempfile

from test_python_models import Checker, acttrace, tiny_llama, VOCAB
import torch  # noqa: E402

try:
    import h5py
    import numpy as np
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

check = Checker()
BATCHES = 7


def batches():
    g = torch.Generator().manual_seed(11)
    return [torch.randint(0, VOCAB, (2, 5 + i % 3), generator=g) for i in range(BATCHES)]


def share(rank, world):
    return batches()[rank::world]


def worker(rank, world, tmp, path, merge, fail):
    """One rank: join the group, capture its share, merge at the end."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous-{world}",
                            rank=rank, world_size=world)
    model = tiny_llama()
    status = 0
    try:
        with torch.no_grad(), acttrace.capture(model, path, weights=False, merge=merge):
            for ids in share(rank, world):
                model(ids)
            if fail and rank == world - 1:
                raise RuntimeError("this rank fails")
    except RuntimeError:
        status = 3
    except acttrace.Error as e:
        print(f"rank {rank}: {e}", file=sys.stderr)
        status = 4
    dist.destroy_process_group()
    sys.exit(status)


def run_ranks(world, tmp, path, merge=True, fail=False):
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(r), str(world), tmp,
                               path, str(merge), "1" if fail else ""],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    results = [p.communicate(timeout=300) for p in procs]
    return [p.returncode for p in procs], [err for _, err in results]


def reference(world, path):
    model = tiny_llama()
    with torch.no_grad(), acttrace.capture(model, path, weights=False):
        for rank in range(world):
            for ids in share(rank, world):
                model(ids)


def same_trace(merged, single, what):
    with h5py.File(merged, "r") as a, h5py.File(single, "r") as b:
        for name in ("seq", "pos", "id"):
            check.ok(np.array_equal(a["tokens"][name][()], b["tokens"][name][()]),
                     f"{what}: /tokens/{name}")
        check.ok(list(a["points"]) == list(b["points"]), f"{what}: the same points")
        for p in b["points"]:
            ga, gb = a["points"][p], b["points"][p]
            for stat in ("count", "nonfinite", "hist", "min", "max", "absmax", "extremes"):
                check.ok(np.array_equal(ga[stat][()], gb[stat][()]), f"{what}: {p} {stat}")
            for stat in ("mean", "m2", "m3", "m4", "abssum"):
                x, y = ga[stat][()], gb[stat][()]
                scale = np.maximum(np.abs(y), 1e-300)
                err = float(np.max(np.abs(x - y) / scale)) if y.size else 0.0
                check.ok(err <= 1e-12, f"{what}: {p} {stat} within 1e-12 ({err:.1e})")
        check.ok(len(a["provenance"][()]) if "provenance" in a else False,
                 f"{what}: /provenance lists the inputs")


def main():
    make_zstd_filter_available()
    with tempfile.TemporaryDirectory() as tmp:
        for world in (2, 3):
            check.context = f"{world} ranks"
            path = os.path.join(tmp, f"run{world}.h5")
            codes, errs = run_ranks(world, tmp, path)
            check.ok(codes == [0] * world, f"every rank exits 0: {codes} {errs}")
            ranks = [os.path.join(tmp, f"run{world}.rank{r}.h5") for r in range(world)]
            check.ok(all(os.path.exists(p) for p in ranks), "each rank's trace is kept")
            single = os.path.join(tmp, f"single{world}.h5")
            reference(world, single)
            if check.ok(os.path.exists(path), "rank 0 merged them"):
                same_trace(path, single, f"{world} ranks merged")

        check.context = "template"
        template = os.path.join(tmp, "t-{rank}.h5")
        merged = os.path.join(tmp, "t-all.h5")
        codes, errs = run_ranks(2, tmp, template, merge=merged)
        check.ok(codes == [0, 0] and os.path.exists(os.path.join(tmp, "t-1.h5")) and
                 os.path.exists(merged), f"{{rank}} template and merge=PATH: {errs}")

        check.context = "a failing rank"
        path = os.path.join(tmp, "f.h5")
        codes, errs = run_ranks(2, tmp, path, fail=True)
        with h5py.File(os.path.join(tmp, "f.rank1.h5"), "r") as f:
            check.ok(int(f.attrs["complete"]) == 0, "its own trace is kept, incomplete")
        check.ok(codes == [4, 3] and not os.path.exists(path),
                 f"rank 0 refuses to merge, the failing rank does not hang it: {codes}")
        check.ok("incomplete" in errs[0] or "complete" in errs[0],
                 f"rank 0 says why: {errs[0].strip()[:200]}")

        check.context = "bad use"
        try:
            acttrace.capture(tiny_llama(), template, merge=True)
            check.ok(False, "merge=True with a {rank} template is refused")
        except acttrace.Error as e:
            check.ok("plain path" in str(e), f"merge=True with a template: {e}")
    check.done("test_python_distributed")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        rank, world, tmp, path, merge, fail = sys.argv[2:8]
        worker(int(rank), int(world), tmp, path, {"True": True, "False": False}.get(merge, merge),
               bool(fail))
    else:
        main()
