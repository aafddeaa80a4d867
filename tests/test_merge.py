"""test_merge.py: trace-merge of shards against the unsharded run and against
numpy (issue 10, acceptance 1).

trace-synth --shard I/N writes shard I of the token stream that trace-synth
without --shard writes whole (the same rows, drawn by their token in the whole
stream).  For tiny, the 2, 3 and 7 shards are merged in their own order, in
reverse and rotated; for recurrent-gemma-2b (1.2 GB of histograms a trace),
2 and 3 in their order and 7 in theirs and in reverse.  Each merged file is
read with h5py only (no acttrace code) and compared

  with the unsharded trace:
    count, nonfinite, hist, min, max, absmax: bit for bit, in every order;
    extremes (value, token, channel) and /tokens: bit for bit in the shards'
      own order; in another order the tokens are numbered differently, so the
      extremes' magnitudes are compared bit for bit (which element of a tie
      at the K-th magnitude is kept follows the tokens, the format's rule);
    mean, m2, m3, m4, abssum: to 1e-12 of their scale, in every order (the
      scales: |mean| + std for the mean, m2, |m3| + n std^3, m4, abssum);

  with numpy's own pooling of the shards' datasets, for the order used (on
  recurrent-gemma-2b every eighth point, to keep the time of make check):
    the moments by the all-at-once formulas of acttrace-format(5), POOLING
    AND MERGING (every input shifted to the grand mean at once: not the
    library's pairwise folding), to the same 1e-12; counts, histograms,
    min/max/absmax by numpy; the extremes as the top K of the union of the
    shards' lists, tokens moved by each shard's offset, sorted by the
    format's order; /tokens as the shards' concatenation with each shard's
    sequence numbers shifted to follow the largest before it; /provenance
    listing every input.

Samples: shards whose first tokens are multiples of the sampling step sample
what the unsharded run samples, so their merge holds the same rows, tokens
and samples_dropped; a trace merged with itself holds its rows twice, the
second copy's tokens moved by its length, cut at max_samples with the rest
counted as dropped.
"""
import os
import subprocess
import sys
import tempfile

import hdf5plugin  # noqa: F401  registers the zstd filter with h5py where it has one
import h5py
import numpy as np

from testlib import Checker, make_zstd_filter_available, text

check = Checker()
RTOL = 1e-12
MOMENTS = ("mean", "m2", "m3", "m4", "abssum")
EXACT = ("count", "nonfinite", "min", "max", "absmax")


def run(*args):
    subprocess.run([str(a) for a in args], check=True)


def synth(path, arch, tokens, seq_len, shard=None, samples=0):
    args = ["trace-synth", "--arch", arch, "--tokens", tokens, "--seq-len", seq_len,
            "--seed", 7, "--samples", samples, "-q", "-o", path]
    if shard:
        args += ["--shard", f"{shard[0]}/{shard[1]}"]
    run(*args)
    return path


def merge(out, inputs):
    run("trace-merge", "-q", "-o", out, *inputs)
    return out


def points_of(f):
    points = f["points"]
    return sorted(points, key=lambda p: (points[p].attrs.get("order", 2**31), p))


# ---------------------------------------------------------------- numpy's references


def moment_scales(g):
    """The scale each moment's 1e-12 is relative to (see the docstring)."""
    n = g["count"].astype(np.float64)
    std = np.sqrt(g["m2"] / np.maximum(n, 1))
    return {"mean": np.abs(g["mean"]) + std, "m2": np.abs(g["m2"]),
            "m3": np.abs(g["m3"]) + n * std**3, "m4": np.abs(g["m4"]),
            "abssum": np.abs(g["abssum"])}


def pooled(groups):
    """The inputs' per-channel datasets combined all at once by numpy."""
    n_i = np.stack([g["count"] for g in groups]).astype(np.float64)
    mean_i = np.stack([g["mean"] for g in groups])
    m2_i, m3_i, m4_i = (np.stack([g[k] for g in groups]) for k in ("m2", "m3", "m4"))
    n = n_i.sum(axis=0)
    mu = (n_i * mean_i).sum(axis=0) / n
    d = mean_i - mu
    ref = {
        "count": np.stack([g["count"] for g in groups]).sum(axis=0),
        "nonfinite": np.stack([g["nonfinite"] for g in groups]).sum(axis=0),
        "min": np.stack([g["min"] for g in groups]).min(axis=0),
        "max": np.stack([g["max"] for g in groups]).max(axis=0),
        "absmax": np.stack([g["absmax"] for g in groups]).max(axis=0),
        "abssum": np.stack([g["abssum"] for g in groups]).sum(axis=0),
        "mean": mu,
        "m2": (m2_i + n_i * d**2).sum(axis=0),
        "m3": (m3_i + 3 * d * m2_i + n_i * d**3).sum(axis=0),
        "m4": (m4_i + 4 * d * m3_i + 6 * d**2 * m2_i + n_i * d**4).sum(axis=0),
    }
    if "hist" in groups[0]:
        ref["hist"] = sum(g["hist"].astype(np.uint64) for g in groups)
    return ref


def top_k(extremes, offsets, k):
    """The first k of the union under acttrace-format(5)'s order of extremes:
    |value| descending, then token, channel, value descending."""
    value = np.concatenate([e["value"] for e in extremes])
    token = np.concatenate([e["token"].astype(np.int64) + off for e, off in zip(extremes, offsets)])
    channel = np.concatenate([e["channel"] for e in extremes])
    order = np.lexsort((-value, channel, token, -np.abs(value)))[:k]
    return value[order], token[order], channel[order]


def renumbered_tokens(files):
    """/tokens of the merge: concatenated, each input's seq shifted so that its
    smallest follows the largest before it (the first input's kept)."""
    seqs, largest = [], None
    for f in files:
        seq = f["tokens/seq"][:].astype(np.int64)
        if largest is not None and seq.size:
            seq = seq + (largest + 1 - seq.min())
        if seq.size:
            largest = seq.max() if largest is None else max(largest, seq.max())
        seqs.append(seq)
    return (np.concatenate(seqs), np.concatenate([f["tokens/pos"][:] for f in files]),
            np.concatenate([f["tokens/id"][:] for f in files]))


# ---------------------------------------------------------------- comparisons


def read_point(g):
    """A point's datasets, each read once."""
    return {k: g[k][:] for k in EXACT + MOMENTS + ("hist", "extremes") if k in g}


def against_full(merged, full, full_points, natural):
    """The merged trace against the unsharded one; returns the merged points read."""
    check.equal_arrays(merged.attrs["complete"], 1, "complete")
    if natural:
        for column in ("seq", "pos", "id"):
            check.equal_arrays(merged["tokens"][column][:], full["tokens"][column][:],
                               f"/tokens/{column}")
    points = {}
    for name in points_of(full):
        g, w = read_point(merged["points"][name]), full_points[name]
        points[name] = g
        for k in EXACT + ("hist",):
            check.equal_arrays(g[k], w[k], f"{name}: {k}")
        scales = moment_scales(w)
        for k in MOMENTS:
            check.close_arrays(g[k], w[k], RTOL * scales[k], f"{name}: {k}")
        ge, we = g["extremes"], w["extremes"]
        if natural:
            for field in ("value", "token", "channel"):
                check.equal_arrays(ge[field], we[field], f"{name}: extremes.{field}")
        else:
            check.equal_arrays(np.abs(ge["value"]), np.abs(we["value"]), f"{name}: |extremes|")
    return points


def against_numpy(merged, points, shards, paths, stride):
    """The merged trace against numpy's pooling of the inputs, in their order,
    on every stride-th point (and the last)."""
    offsets = np.concatenate([[0], np.cumsum([s["tokens/seq"].shape[0] for s in shards])[:-1]])
    k = min(int(s.attrs["extremes_k"]) for s in shards)
    check.equal_arrays(merged.attrs["extremes_k"], k, "extremes_k")
    for column, want in zip(("seq", "pos", "id"), renumbered_tokens(shards)):
        check.equal_arrays(merged["tokens"][column][:], want, f"/tokens/{column} (numpy)")
    prov = merged["provenance"][:]
    check.equal_arrays([p.decode() for p in prov["path"]], [str(p) for p in paths],
                       "provenance path")
    for field, attr in (("model", "model"), ("created", "created")):
        check.equal_arrays([p.decode() for p in prov[field]],
                           [text(s.attrs[attr]) for s in shards], f"provenance {field}")
    check.equal_arrays(prov["tokens"], [s["tokens/seq"].shape[0] for s in shards],
                       "provenance tokens")
    check.equal_arrays(prov["complete"], [1] * len(shards), "provenance complete")
    names = points_of(shards[0])
    for name in names[::stride] + names[-1:]:
        g = points[name]
        groups = [read_point(s["points"][name]) for s in shards]
        ref = pooled(groups)
        for key in EXACT + ("hist",):
            check.equal_arrays(g[key], ref[key], f"{name}: {key} (numpy)")
        scales = moment_scales(g)
        for key in MOMENTS:
            check.close_arrays(g[key], ref[key], RTOL * scales[key], f"{name}: {key} (numpy)")
        value, token, channel = top_k([grp["extremes"] for grp in groups], offsets, k)
        e = g["extremes"]
        check.equal_arrays(e["value"], value, f"{name}: extremes.value (numpy)")
        check.equal_arrays(e["token"], token, f"{name}: extremes.token (numpy)")
        check.equal_arrays(e["channel"], channel, f"{name}: extremes.channel (numpy)")


def orders(n, how_many):
    """The shards' own order, reversed, and a rotation (those that differ)."""
    natural = list(range(n))
    found = [natural, natural[::-1], natural[1:] + natural[:1]]
    return [o for i, o in enumerate(found) if o not in found[:i]][:how_many]


def shards_case(tmp, arch, tokens, seq_len, counts, orders_last, orders_other, stride):
    """counts[-1] shards merged in orders_last orders, the other counts in
    orders_other; numpy's pooling checked on every stride-th point."""
    full_path = synth(f"{tmp}/{arch}.h5", arch, tokens, seq_len)
    with h5py.File(full_path, "r") as full:
        full_points = {name: read_point(full["points"][name]) for name in points_of(full)}
        for n in counts:
            paths = [synth(f"{tmp}/{arch}-{i}of{n}.h5", arch, tokens, seq_len, (i, n))
                     for i in range(n)]
            for order in orders(n, orders_last if n == counts[-1] else orders_other):
                check.context = f"{arch}, {n} shards, order {order}"
                inputs = [paths[i] for i in order]
                out = merge(f"{tmp}/{arch}-merged.h5", inputs)
                files = [h5py.File(p, "r") for p in inputs]
                with h5py.File(out, "r") as merged:
                    points = against_full(merged, full, full_points, order == sorted(order))
                    against_numpy(merged, points, files, inputs, stride)
                for f in files:
                    f.close()
                os.remove(out)
                print(f"ok - {check.context}")
            for p in paths:
                os.remove(p)


# ---------------------------------------------------------------- samples


def samples_case(tmp):
    check.context = "samples"
    full_path = synth(f"{tmp}/s.h5", "tiny", 1000, 100, samples=100)
    for n in (2, 5):  # shards start at multiples of 100: the step, 10, divides them
        paths = [synth(f"{tmp}/s{i}.h5", "tiny", 1000, 100, (i, n), samples=100) for i in range(n)]
        out = merge(f"{tmp}/s-merged.h5", paths)
        with h5py.File(out, "r") as merged, h5py.File(full_path, "r") as full:
            for name in points_of(full):
                g, w = merged["points"][name], full["points"][name]
                check.equal_arrays(g["samples"][:], w["samples"][:], f"{n} shards {name}: samples")
                check.equal_arrays(g["sample_tokens"][:], w["sample_tokens"][:],
                                   f"{n} shards {name}: sample_tokens")
                check.equal_arrays(g.attrs["samples_dropped"], w.attrs["samples_dropped"],
                                   f"{n} shards {name}: samples_dropped")
    # a trace merged with itself: twice the rows, cut at max_samples
    out = merge(f"{tmp}/twice.h5", [full_path, full_path])
    with h5py.File(out, "r") as merged, h5py.File(full_path, "r") as full:
        cap = int(full.attrs["max_samples"])
        n_tokens = full["tokens/seq"].shape[0]
        for name in points_of(full):
            g, w = merged["points"][name], full["points"][name]
            rows = np.concatenate([w["samples"][:], w["samples"][:]])
            tokens = np.concatenate([w["sample_tokens"][:], w["sample_tokens"][:] + n_tokens])
            check.equal_arrays(g["samples"][:], rows[:cap], f"twice {name}: samples")
            check.equal_arrays(g["sample_tokens"][:], tokens[:cap], f"twice {name}: sample_tokens")
            dropped = 2 * int(w.attrs["samples_dropped"]) + max(0, rows.shape[0] - cap)
            check.equal_arrays(g.attrs["samples_dropped"], dropped, f"twice {name}: samples_dropped")
        check.ok(rows.shape[0] > cap, "the cap cuts (the case tests it)")
        want_seq = np.concatenate([full["tokens/seq"][:], full["tokens/seq"][:] + full["tokens/seq"][:].max() + 1])
        check.equal_arrays(merged["tokens/seq"][:], want_seq, "twice: /tokens/seq renumbered")
    print("ok - samples")


def main():
    only = sys.argv[1:]  # arches to run, for a quicker run by hand
    source = make_zstd_filter_available()
    if source is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py")
        return 1
    print(f"# zstd filter 32015: {source}")
    with tempfile.TemporaryDirectory(prefix="acttrace-merge-") as tmp:
        if not only:
            samples_case(tmp)
        if not only or "tiny" in only:
            shards_case(tmp, "tiny", 1000, 50, (2, 3, 7), orders_last=3, orders_other=3, stride=1)
        # 100 MB a trace (1.5 million channels of histograms, 1.2 GB in
        # memory): 2 and 3 shards in their order, 7 in theirs and reversed;
        # every point against the unsharded run, one in 8 against numpy
        if not only or "recurrent-gemma-2b" in only:
            shards_case(tmp, "recurrent-gemma-2b", 70, 10, (2, 3, 7), orders_last=2,
                        orders_other=1, stride=8)
    print(f"{check.checks} checks, {len(check.failures)} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
