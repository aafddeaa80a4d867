"""make-bad-traces.py GOOD.h5 OUTDIR: write damaged copies of a good trace,
one defect each, for tests/bad-input.sh.  Uses h5py only (plus the zstd
plugin on HDF5_PLUGIN_PATH to copy compressed datasets)."""
import shutil
import sys

import h5py
import numpy as np


def variant(good, outdir, name, damage):
    path = f"{outdir}/{name}.h5"
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as f:
        damage(f)
    print(path)


def first_point(f):
    return f["points"][sorted(f["points"].keys())[0]]


def replace(group, name, data):
    del group[name]
    group.create_dataset(name, data=data)


def claim_huge_channels(f):
    """Every per-channel dataset of the first point 2^40 long, unwritten (the
    file stays small), and channels = 2^40: consistent shapes, absurd size."""
    g = first_point(f)
    n = 2 ** 40
    for name in ("count", "nonfinite", "mean", "m2", "m3", "m4", "min", "max", "absmax",
                 "abssum"):
        dtype = g[name].dtype
        del g[name]
        g.create_dataset(name, shape=(n,), chunks=(1024,), dtype=dtype)
    if "hist" in g:
        del g["hist"]
        g.create_dataset("hist", shape=(n, 195), chunks=(16, 195), dtype=np.uint32)
    for name in ("samples", "sample_tokens"):
        if name in g:
            del g[name]
    g.attrs.modify("channels", np.int64(n))


def damage_chunk(f):
    """The content checksum (the frame's last 4 bytes) of the first point's
    'mean' chunk altered, the data left intact: only a reader that checks
    checksums notices."""
    d = first_point(f)["mean"]
    offset = d.id.get_chunk_info(0).chunk_offset
    mask, packed = d.id.read_direct_chunk(offset)
    packed = bytearray(packed)
    packed[-1] ^= 0x01
    d.id.write_direct_chunk(offset, bytes(packed), mask)


def main():
    good, outdir = sys.argv[1], sys.argv[2]
    with h5py.File(f"{outdir}/not-a-trace.h5", "w") as f:
        f.create_dataset("x", data=np.arange(10))
    print(f"{outdir}/not-a-trace.h5")
    cases = {
        "wrong-version": lambda f: f.attrs.modify("format_version", np.int32(4)),
        "wrong-format": lambda f: f.attrs.modify("format", "something-else"),
        "no-version": lambda f: f.attrs.__delitem__("format_version"),
        "missing-dataset": lambda f: first_point(f).__delitem__("m2"),
        "misshaped-dataset": lambda f: replace(
            first_point(f), "mean", np.zeros(first_point(f)["mean"].shape[0] + 1)),
        "rank-dataset": lambda f: replace(
            first_point(f), "count", np.zeros((2, 2), dtype=np.uint64)),
        "wrong-type": lambda f: replace(
            first_point(f), "mean", np.zeros(first_point(f)["mean"].shape[0], dtype=np.int32)),
        "misshaped-hist": lambda f: replace(
            first_point(f), "hist", np.zeros((first_point(f)["hist"].shape[0], 7), dtype=np.uint32)),
        "missing-attribute": lambda f: first_point(f).attrs.__delitem__("channels"),
        "missing-tokens": lambda f: f.__delitem__("tokens"),
        "missing-points": lambda f: f.__delitem__("points"),
        "huge-channels": claim_huge_channels,
        "damaged-chunk": damage_chunk,
        "huge-extremes-k": lambda f: f.attrs.create("extremes_k", np.int64(2 ** 40)),
    }
    for name, damage in cases.items():
        variant(good, outdir, name, damage)


if __name__ == "__main__":
    main()
