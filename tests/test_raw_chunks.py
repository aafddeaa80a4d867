"""test_raw_chunks.py: the reader reads a point's statistics as their stored
chunks (raw, decompressed by acttrace's codec) whenever a dataset is chunked
along its first dimension behind shuffle + zstd: the tools must print the
same as from the writer's own layout when h5py rewrites the datasets with
other chunk heights (a last chunk past the end), with chunks never written
(which read as the dataset's fill value: NaN for min, 0 for the histogram),
and with a pipeline the codec does not reproduce (zstd without shuffle: read
through HDF5)."""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import hdf5plugin  # noqa: F401  (filter 32015)
import numpy as np

from testlib import Checker, ZSTD_FILTER_ID, make_zstd_filter_available



def tool(*args):
    out = subprocess.run(list(args), capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def rewrite(path, point, name, rows, shuffle=True, skip=None):
    """Dataset `name` of `point` again with chunks of `rows` rows; the rows of
    chunk `skip` are never written."""
    with h5py.File(path, "r+") as f:
        g = f["points"][point]
        old = g[name]
        data, fill = old[...], old.fillvalue
        attrs = dict(old.attrs)
        del g[name]
        chunks = (rows,) + data.shape[1:]
        new = g.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                               shuffle=shuffle, compression=ZSTD_FILTER_ID,
                               compression_opts=(3, 1), fillvalue=fill)
        for start in range(0, data.shape[0], rows):
            if skip is not None and start == skip * rows:
                continue
            new[start:start + rows] = data[start:start + rows]
        for k, v in attrs.items():
            new.attrs[k] = v


def main():
    if make_zstd_filter_available() is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py")
        return 1
    check = Checker()
    tmp = tempfile.mkdtemp(prefix="tmp.raw", dir="tests")
    try:
        base = os.path.join(tmp, "base.h5")
        rc, _, err = tool("trace-synth", "--arch", "llama-1b", "--tokens", "64",
                          "--points", "layers.0.mlp.*", "-o", base)
        check.ok(rc == 0, f"trace-synth: {err}")
        with h5py.File(base, "r") as f:
            point = max(f["points"], key=lambda p: f["points"][p]["count"].shape[0])
            channels = f["points"][point]["count"].shape[0]
        check.ok(channels > 3000, f"point {point} has {channels} channels")
        want_stats = tool("trace-stats", "-p", point, "--digits", "17", base)[1]
        want_quant = tool("trace-quant", "--digits", "17", base)[1]

        other = os.path.join(tmp, "rechunked.h5")
        shutil.copy(base, other)
        for name in ("count", "mean", "m2", "min", "absmax"):
            rewrite(other, point, name, 1000)
        rewrite(other, point, "max", 700, shuffle=False)
        rewrite(other, point, "hist", 1000)
        rc, got, err = tool("trace-stats", "-p", point, "--digits", "17", other)
        check.ok(rc == 0 and got == want_stats,
                 f"trace-stats -p: chunks of 1000 rows and a pipeline without shuffle read "
                 f"as the writer's layout ({err.strip()})")
        rc, got, err = tool("trace-quant", "--digits", "17", other)
        check.ok(rc == 0 and got == want_quant,
                 f"trace-quant: a histogram in chunks of 1000 channels reads the same ({err.strip()})")

        holes = os.path.join(tmp, "holes.h5")
        shutil.copy(base, holes)
        rewrite(holes, point, "min", 1000, skip=1)
        rewrite(holes, point, "hist", 1000, skip=2)
        with h5py.File(holes, "r") as f:
            want_min = f["points"][point]["min"][...]
            hist_zero = not f["points"][point]["hist"][2000:3000].any()
        check.ok(np.isnan(want_min[1000:2000]).all() and hist_zero,
                 "h5py reads the chunks never written as NaN (min) and 0 (hist)")
        rc, got, err = tool("trace-stats", "-p", point, "--digits", "17", holes)
        rows = [line.split("\t") for line in got.splitlines()]
        col = rows[0].index("min") if rows else -1
        got_min = np.array([float(r[col]) for r in rows[1:]]) if col >= 0 else np.array([])
        check.ok(rc == 0 and got_min.shape == want_min.shape and
                 np.array_equal(got_min, want_min, equal_nan=True),
                 f"trace-stats -p: a 'min' chunk never written reads as its fill value NaN "
                 f"({err.strip()})")
        rc, got, err = tool("trace-quant", "--digits", "17", holes)
        check.ok(rc == 0 and got != want_quant,
                 f"trace-quant reads a trace with a histogram chunk never written ({err.strip()})")

        # frames that do not decode to a chunk's bytes (valid zstd, checksummed):
        # a clean error naming the dataset, never a read past a buffer
        if shutil.which("zstd") is None:
            print("# no zstd command: the lying-frame cases are skipped")
        else:
            for label, factor in (("shorter", 0.5), ("longer", 2)):
                bad = os.path.join(tmp, f"{label}.h5")
                shutil.copy(base, bad)
                with h5py.File(bad, "r+") as f:
                    d = f["points"][point]["mean"]
                    chunk_bytes = d.chunks[0] * d.dtype.itemsize
                    payload = bytes(int(chunk_bytes * factor))  # compressible: under the stored cap
                    frame = subprocess.run(["zstd", "-q", "-c", "--content-size", "-"],
                                           input=payload, capture_output=True, check=True).stdout
                    d.id.write_direct_chunk((0,), frame, filter_mask=0)
                rc, _, err = tool("trace-stats", "-p", point, bad)
                print(f"# {label}: {err.strip()}")
                check.ok(rc == 1 and len(err.strip().splitlines()) == 1 and "'mean'" in err,
                         f"a 'mean' frame {label} than its chunk: exit {rc}, {err.strip()}")
    finally:
        shutil.rmtree(tmp)
    if check.failures:
        return 1
    print(f"ok - {check.checks} checks: chunk layouts, holes and pipelines read as h5py reads them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
