"""test_merge_slices.py: trace-merge of the ranks of a tensor-parallel capture
against the whole capture and against numpy (issue 10, channel slices).

trace-synth --tp-slice I/N writes rank I of N of the stream that trace-synth
writes whole: every point cut into channel slices floor(C i / N) to
floor(C (i+1) / N) (uneven where N does not divide C), norms, the residual
stream and the embeddings whole on rank 0 alone (replicated=1), the norms'
weights on rank 0 alone.  A channel's statistics depend on that channel's
values only, so the merge of the ranks, read with h5py only, must equal the
whole trace bit for bit in every dataset, moments included (they are placed,
not combined), samples and /tokens too, whatever the order of the inputs.

Independently of the whole trace, numpy assembles each point from the ranks'
own datasets: per-channel datasets and sample rows concatenated along
channels in offset order, the extremes the top K of the union with channels
shifted by the offsets under acttrace-format(5)'s order.

tiny (2, 3 and 4 ranks, in reverse order and in order) and mamba-130m (3
ranks in reverse: a [B, C, T] convolution point and bf16-fed points)."""
import itertools
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

from testlib import Checker, make_zstd_filter_available

check = Checker()
PER_CHANNEL = ("count", "nonfinite", "mean", "m2", "m3", "m4", "min", "max", "absmax", "abssum")


def synth(path, arch, tokens, seq_len, tp=None):
    args = ["trace-synth", "--arch", arch, "--tokens", tokens, "--seq-len", seq_len, "--seed", 11,
            "--samples", 16, "-q", "-o", path]
    if tp:
        args += ["--tp-slice", f"{tp[0]}/{tp[1]}"]
    subprocess.run([str(a) for a in args], check=True)
    return path


def merge(out, inputs):
    subprocess.run(["trace-merge", "-q", "-o", out, *inputs], check=True)
    return out


def same_dataset(got, want, what):
    if got.dtype.names:  # compound (extremes): byte for byte
        return check.ok(got.shape == want.shape and got.tobytes() == want.tobytes(),
                        f"{what}: differs")
    return check.equal_arrays(got, want, what)


def compare_with_whole(merged, whole):
    check.ok(sorted(merged["points"]) == sorted(whole["points"]), "the same points")
    for name in whole["points"]:
        a, b = merged["points"][name], whole["points"][name]
        check.ok(sorted(a) == sorted(b), f"{name}: the same datasets")
        for key in b:
            same_dataset(a[key][()], b[key][()], f"{name}/{key}")
        for attr in ("channels", "channel_offset", "full_channels", "samples_dropped"):
            check.ok(a.attrs[attr] == b.attrs[attr], f"{name}: attribute {attr}")
        check.ok("replicated" not in a.attrs, f"{name}: an assembled point is not replicated")
    for col in ("seq", "pos", "id"):
        check.equal_arrays(merged["tokens"][col][:], whole["tokens"][col][:], f"/tokens/{col}")
    check.ok(sorted(merged["weights"]) == sorted(whole["weights"]), "the same weights")
    for module in whole["weights"]:
        for key in whole["weights"][module]:
            check.equal_arrays(merged["weights"][module][key][()],
                               whole["weights"][module][key][()], f"weight {module}/{key}")


def numpy_assembly(ranks, name, k):
    """The point assembled by numpy from the ranks that hold it."""
    parts = sorted((f["points"][name] for f in ranks if name in f["points"]),
                   key=lambda g: int(g.attrs["channel_offset"]))
    ref = {key: np.concatenate([g[key][:] for g in parts]) for key in PER_CHANNEL}
    if "hist" in parts[0]:
        ref["hist"] = np.concatenate([g["hist"][:] for g in parts])
    if "samples" in parts[0]:
        ref["samples"] = np.concatenate([g["samples"][:] for g in parts], axis=1)
    value = np.concatenate([g["extremes"]["value"] for g in parts])
    token = np.concatenate([g["extremes"]["token"] for g in parts]).astype(np.int64)
    channel = np.concatenate([g["extremes"]["channel"].astype(np.int64) + g.attrs["channel_offset"]
                              for g in parts])
    order = np.lexsort((-value, channel, token, -np.abs(value)))[:k]
    ref["extremes"] = (value[order], token[order], channel[order])
    return parts, ref


def compare_with_numpy(merged, ranks):
    k = int(merged.attrs["extremes_k"])
    for name in merged["points"]:
        g = merged["points"][name]
        parts, ref = numpy_assembly(ranks, name, k)
        for key, want in ref.items():
            if key == "extremes":
                e = g["extremes"][:]
                for field, w in zip(("value", "token", "channel"), want):
                    check.equal_arrays(e[field], w, f"{name}: numpy's extremes, {field}")
            else:
                check.equal_arrays(g[key][()], want, f"{name}: numpy's {key}")
        if "samples" in g:
            for p in parts:  # every rank sampled the same tokens
                check.equal_arrays(p["sample_tokens"][:], g["sample_tokens"][:],
                                   f"{name}: a rank's sample_tokens")
        check.ok(len(parts) in (1, len(ranks)),
                 f"{name}: {len(parts)} parts: whole on one rank or sliced on all")


def case(tmp, arch, tokens, seq_len, worlds, orders):
    whole_path = synth(os.path.join(tmp, f"{arch}.h5"), arch, tokens, seq_len)
    with h5py.File(whole_path, "r") as whole:
        for n in worlds:
            paths = [synth(os.path.join(tmp, f"{arch}.tp{i}of{n}.h5"), arch, tokens, seq_len, (i, n))
                     for i in range(n)]
            perms = list(itertools.permutations(paths))
            for order in ([perms[-1], perms[0]] + perms[1:])[:orders]:
                check.context = f"{arch}, {n} ranks, inputs {[os.path.basename(p) for p in order]}"
                out = merge(os.path.join(tmp, f"{arch}.merged.h5"), order)
                with h5py.File(out, "r") as merged:
                    compare_with_whole(merged, whole)
                    ranks = [h5py.File(p, "r") for p in paths]
                    try:
                        compare_with_numpy(merged, ranks)
                        sliced = [n for n in ranks[0]["points"]
                                  if ranks[0]["points"][n].attrs["channels"] !=
                                  ranks[0]["points"][n].attrs["full_channels"]]
                        check.ok(len(sliced) > 0 and all(
                            "replicated" in ranks[0]["points"][p].attrs
                            for p in ranks[0]["points"] if p not in sliced),
                            "rank 0 holds slices and replicated points (the case tests both)")
                    finally:
                        for f in ranks:
                            f.close()
                os.unlink(out)
            print(f"ok - {arch}: {n} ranks merged equal the whole trace and numpy's assembly")


def main():
    source = make_zstd_filter_available()
    if source is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py")
        return 1
    with tempfile.TemporaryDirectory(prefix="acttrace-slices-") as tmp:
        case(tmp, "tiny", 400, 50, (2, 3, 4), orders=2)
        case(tmp, "mamba-130m", 40, 20, (3,), orders=1)
    print(f"{check.checks} checks, {len(check.failures)} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
