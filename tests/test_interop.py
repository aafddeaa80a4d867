"""test_interop.py: traces written by trace-synth are readable by stock tools,
and trace-stats prints what numpy computes from the same files.

1. Every dataset of two synthetic traces (a tiny transformer with samples, a
   Mamba) is read in full with h5py + hdf5plugin: stock HDF5 runs the filter
   pipeline.  Where hdf5plugin has no zstd filter (Debian's), filter 32015
   comes from acttrace's standalone plugin, so every zstd chunk is also
   decoded independently: raw chunk bytes (H5Dread_chunk) through the zstd
   command-line tool and a numpy unshuffle must give what h5py returned, and
   each chunk must be one zstd frame that records its content size, which the
   reference HDF5 zstd plugin (the one hdf5plugin wheels ship) needs to size
   its output buffer.
2. trace-stats (per point) and trace-stats -p POINT (per channel) are
   recomputed in numpy float64 from the per-channel datasets: --digits 17 to
   rtol 1e-12 (both sides are float64; only the order of operations differs),
   the default 9 significant digits to rtol 1e-8.  TSV, CSV, JSON and -H must
   carry the same table.
"""
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import hdf5plugin  # registers the zstd filter (id 32015) with h5py
import h5py
import numpy as np

from testlib import (TOP_BUILDDIR, ZSTD_FILTER_ID, make_zstd_filter_available, stored_elements,
                     text)

SHUFFLE_FILTER_ID = 2

POINT_COLUMNS = ["point", "layer", "component", "site", "direction", "channels", "count", "mean",
                 "std", "min", "max", "absmax", "absmean", "kurtosis", "nonfinite"]
CHANNEL_COLUMNS = ["channel", "count", "mean", "std", "skewness", "kurtosis", "min", "max",
                   "absmax", "absmean", "nonfinite"]
STRING_COLUMNS = {"point", "component", "site", "direction"}
INT_COLUMNS = {"layer", "channels", "count", "nonfinite", "channel"}


failures = []
checks = 0


def ok(cond, message):
    global checks
    checks += 1
    if not cond:
        failures.append(message)
        print(f"FAIL {message}")
    return bool(cond)


def tool(name):
    return shutil.which(name) or os.path.join(TOP_BUILDDIR, name)


def run(args):
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        ok(False, f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return None
    return proc.stdout


# ---------------------------------------------------------------- stock reading


def filters_of(ds):
    dcpl = ds.id.get_create_plist()
    return [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]


def zstd_frame_content_size(frame):
    """Frame_Content_Size from a zstd frame header (RFC 8878, 3.1.1.1), -1 when
    the header does not record it, None when this is no zstd frame."""
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    fcs_bytes = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_bytes == 0:
        return -1
    value = int.from_bytes(frame[pos:pos + fcs_bytes], "little")
    return value + 256 if fcs_bytes == 2 else value


def unshuffle(raw, elem_size):
    """Inverse of HDF5's byte shuffle filter (H5Z_FILTER_SHUFFLE)."""
    n = len(raw) // elem_size
    body = np.frombuffer(raw, dtype=np.uint8, count=n * elem_size).reshape(elem_size, n).T
    return body.tobytes() + raw[n * elem_size:]


def decode_chunks_independently(path, zstd_datasets):
    """Every chunk of the zstd datasets through `zstd -d` and numpy, against h5py."""
    zstd_cli = shutil.which("zstd")
    if not zstd_cli:
        print(f"# {path}: no zstd command: chunks not decoded independently")
        return 0
    chunks = []  # (dataset, chunk offset, compressed bytes, shuffled, declared size)
    with h5py.File(path, "r") as f:
        for name in zstd_datasets:
            ds = f[name]
            filters = filters_of(ds)
            elem_size = ds.id.get_type().get_size()
            chunk_bytes = int(np.prod(ds.chunks)) * elem_size
            for i in range(ds.id.get_num_chunks()):
                offset = ds.id.get_chunk_info(i).chunk_offset
                mask, frame = ds.id.read_direct_chunk(offset)
                size = zstd_frame_content_size(frame)
                ok(mask == 0, f"{path}: /{name} chunk {offset}: filter mask {mask}")
                ok(size == chunk_bytes, f"{path}: /{name} chunk {offset}: zstd frame content size "
                   f"{size}, expected {chunk_bytes} (-1: not recorded, None: not a zstd frame)")
                chunks.append((name, offset, frame, SHUFFLE_FILTER_ID in filters, chunk_bytes))
    if not chunks:
        return 0
    proc = subprocess.run([zstd_cli, "-d", "-q", "-c"], input=b"".join(c[2] for c in chunks),
                          capture_output=True)
    if not ok(proc.returncode == 0, f"{path}: zstd -d failed: {proc.stderr.decode(errors='replace')}"):
        return 0
    out = proc.stdout
    if not ok(len(out) == sum(c[4] for c in chunks),
              f"{path}: zstd -d gave {len(out)} bytes, the chunks hold {sum(c[4] for c in chunks)}"):
        return 0
    at = 0
    with h5py.File(path, "r") as f:
        for name, offset, frame, shuffled, chunk_bytes in chunks:
            raw = out[at:at + chunk_bytes]
            at += chunk_bytes
            ds = f[name]
            type_id = ds.id.get_type()
            if shuffled:
                raw = unshuffle(raw, type_id.get_size())
            decoded = stored_elements(raw, type_id).reshape(ds.chunks)
            ftype = decoded.dtype
            region = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, ds.chunks, ds.shape))
            decoded = decoded[tuple(slice(0, r.stop - r.start) for r in region)]
            want = ds[region]
            fields = ftype.names or (None,)
            same = all(np.ascontiguousarray(decoded[k] if k else decoded).tobytes() ==
                       np.ascontiguousarray((want[k] if k else want).astype(
                           ftype[k] if k else ftype)).tobytes() for k in fields)
            ok(same, f"{path}: /{name} chunk {offset}: zstd -d + unshuffle differs from h5py")
    return len(chunks)


def read_everything(path):
    """Read every dataset in full; counts datasets, compressed ones, values and chunks."""
    found = {"datasets": 0, "zstd": 0, "values": 0, "chunks": 0}
    zstd_datasets = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        found["datasets"] += 1
        try:
            data = obj[()]
        except Exception as e:  # any decode failure is the finding
            ok(False, f"{path}: /{name}: stock h5py cannot read it: {e}")
            return
        found["values"] += int(np.size(data))
        filters = filters_of(obj)
        if ZSTD_FILTER_ID in filters:
            found["zstd"] += 1
            zstd_datasets.append(name)
            dcpl = obj.id.get_create_plist()
            cd = dcpl.get_filter(filters.index(ZSTD_FILTER_ID))[2]
            ok(len(cd) == 2 and 1 <= cd[0] <= 19 and cd[1] == 1,
               f"{path}: /{name}: zstd cd_values {cd}, expected (level, 1): checksummed frames")
            ok(SHUFFLE_FILTER_ID in filters and
               filters.index(SHUFFLE_FILTER_ID) < filters.index(ZSTD_FILTER_ID),
               f"{path}: /{name}: filters {filters}: zstd should come after shuffle")

    # format version 3: file-format bounds 1.10, superblock 3 with its checksum
    # (version 2's was superblock 2; SWMR needs 3, acttrace-format(5))
    with open(path, "rb") as raw:
        head = raw.read(9)
    ok(head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 3,
       f"{path}: superblock version {head[8] if len(head) > 8 else None}, expected 3")
    with h5py.File(path, "r") as f:
        f.visititems(visit)
        ok(text(f.attrs.get("format")) == "acttrace" and f.attrs.get("format_version") == 3,
           f"{path}: format {f.attrs.get('format')!r} version {f.attrs.get('format_version')!r}")
        ok(f.attrs.get("complete") == 1, f"{path}: complete = {f.attrs.get('complete')!r}")
    found["chunks"] = decode_chunks_independently(path, zstd_datasets)
    return found


# ---------------------------------------------------------------- references


def load_point(f, name):
    g = f["points"][name]
    p = {k: g[k][()].astype(np.float64) for k in
         ("count", "nonfinite", "mean", "m2", "m3", "m4", "min", "max", "absmax", "abssum")}
    p["count_int"] = g["count"][()].astype(np.uint64)
    p["nonfinite_int"] = g["nonfinite"][()].astype(np.uint64)
    p["attrs"] = {k: text(v) if isinstance(v, bytes) else v for k, v in g.attrs.items()}
    return p


def nan_reduce(fn, values):
    finite = values[~np.isnan(values)]
    return fn(finite) if finite.size else math.nan


def pooled_reference(p):
    """The tensor-level statistics: all channels pooled into one distribution,
    central moments expanded around the pooled mean (Pebay 2008)."""
    counts = p["count"]
    n = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (counts * p["mean"]).sum() / n if n else 0.0
        d = p["mean"] - mean
        m2 = (p["m2"] + counts * d ** 2).sum()
        m4 = (p["m4"] + 4 * d * p["m3"] + 6 * d ** 2 * p["m2"] + counts * d ** 4).sum()
        std = math.sqrt(m2 / (n - 1)) if n >= 2 else math.nan
        kurtosis = n * m4 / m2 ** 2 - 3 if m2 > 0 else math.nan
        absmean = p["abssum"].sum() / n if n else math.nan
    mean_scale = (counts * np.abs(p["mean"])).sum() / n if n else 0.0
    a = p["attrs"]
    return {
        "layer": int(a["layer"]), "component": a["component"], "site": a["site"],
        "direction": a["direction"], "channels": int(a["channels"]),
        "count": int(p["count_int"].sum()), "nonfinite": int(p["nonfinite_int"].sum()),
        "mean": mean, "std": std, "kurtosis": kurtosis, "absmean": absmean,
        "min": nan_reduce(np.min, p["min"]), "max": nan_reduce(np.max, p["max"]),
        "absmax": nan_reduce(np.max, p["absmax"]),
        # absolute floors for values that are differences of larger numbers
        "_atol": {"mean": mean_scale + (std if std == std else 0.0), "kurtosis": 3.0},
    }


def channel_reference(p, c):
    n = p["count"][c]
    m2, m3, m4 = p["m2"][c], p["m3"][c], p["m4"][c]
    with np.errstate(invalid="ignore", divide="ignore"):
        std = math.sqrt(m2 / (n - 1)) if n >= 2 else math.nan
        skewness = float(np.sqrt(n) * m3 / m2 ** 1.5) if m2 > 0 else math.nan
        kurtosis = float(n * m4 / m2 ** 2 - 3) if m2 > 0 else math.nan
        absmean = p["abssum"][c] / n if n else math.nan
    return {
        "channel": c, "count": int(p["count_int"][c]), "nonfinite": int(p["nonfinite_int"][c]),
        "mean": p["mean"][c], "std": std, "skewness": skewness, "kurtosis": kurtosis,
        "min": p["min"][c], "max": p["max"][c], "absmax": p["absmax"][c], "absmean": absmean,
        "_atol": {"mean": abs(p["mean"][c]) + (std if std == std else 0.0), "skewness": 1.0,
                  "kurtosis": 3.0},
    }


# ---------------------------------------------------------------- parsing output


def parse_tsv(text, columns, what):
    lines = text.splitlines()
    if not ok(lines and lines[0].split("\t") == columns,
              f"{what}: header {lines[0] if lines else None!r}, expected {chr(9).join(columns)!r}"):
        return []
    rows = []
    for line in lines[1:]:
        cells = line.split("\t")
        if ok(len(cells) == len(columns), f"{what}: {len(cells)} cells in {line!r}"):
            rows.append(dict(zip(columns, cells)))
    return rows


def number(cell):
    """A printed number: 'nan'/'inf' as floats, JSON null as NaN."""
    if cell is None:
        return math.nan
    return float(cell)


def close(got, want, rtol, atol):
    if isinstance(want, float) and math.isnan(want):
        return math.isnan(got)
    return got == want or abs(got - want) <= rtol * abs(want) + atol


def compare_row(row, ref, rtol, what):
    for col, cell in row.items():
        want = ref[col]
        if col in STRING_COLUMNS:
            ok(cell == want, f"{what}: {col} = {cell!r}, expected {want!r}")
        elif col in INT_COLUMNS:
            ok(str(cell) == str(want), f"{what}: {col} = {cell!r}, expected {want}")
        else:
            try:
                got = number(cell)
            except ValueError:
                ok(False, f"{what}: {col} = {cell!r} is not a number")
                continue
            atol = 1e-12 * ref["_atol"].get(col, 0.0)
            ok(close(got, float(want), rtol, atol),
               f"{what}: {col} = {cell!r}, expected {float(want)!r} (rtol {rtol:g})")


# ---------------------------------------------------------------- the checks


def check_points_table(x_path, f):
    names = sorted(f["points"].keys())
    refs = {name: pooled_reference(load_point(f, name)) for name in names}
    for digits, rtol in (("17", 1e-12), (None, 1e-8)):
        args = [tool("trace-stats")] + (["--digits", digits] if digits else []) + [x_path]
        out = run(args)
        if out is None:
            continue
        rows = parse_tsv(out, POINT_COLUMNS, " ".join(args[1:]))
        ok(sorted(r["point"] for r in rows) == names,
           f"trace-stats lists {len(rows)} points, the file holds {len(names)}")
        for row in rows:
            if row["point"] in refs:
                compare_row(row, dict(refs[row["point"]], point=row["point"]), rtol,
                            f"trace-stats {'--digits ' + digits if digits else ''} {row['point']}")
    return names


def check_channel_table(x_path, f, point):
    p = load_point(f, point)
    C = int(p["attrs"]["channels"])
    for digits, rtol in (("17", 1e-12), (None, 1e-8)):
        args = [tool("trace-stats")] + (["--digits", digits] if digits else []) + ["-p", point, x_path]
        out = run(args)
        if out is None:
            continue
        rows = parse_tsv(out, CHANNEL_COLUMNS, " ".join(args[1:]))
        ok(len(rows) == C, f"trace-stats -p {point}: {len(rows)} rows, expected {C}")
        for c, row in enumerate(rows):
            compare_row(row, channel_reference(p, c), rtol, f"trace-stats -p {point} channel {c}")


def check_formats(x_path, point):
    """csv, json and -H carry the very table the TSV does."""
    for extra, columns in (([], POINT_COLUMNS), (["-p", point], CHANNEL_COLUMNS)):
        base = [tool("trace-stats")] + extra
        tsv = run(base + [x_path])
        csv_text = run(base + ["--format=csv", x_path])
        json_text = run(base + ["--format=json", x_path])
        bare = run(base + ["-H", x_path])
        if None in (tsv, csv_text, json_text, bare):
            continue
        what = " ".join(["trace-stats"] + extra)
        tsv_rows = [line.split("\t") for line in tsv.splitlines()]
        csv_rows = list(csv.reader(io.StringIO(csv_text)))
        ok(csv_rows == tsv_rows, f"{what} --format=csv differs from the TSV")
        ok(bare.splitlines() == tsv.splitlines()[1:], f"{what} -H is not the TSV without its header")
        try:
            objects = json.loads(json_text)
        except ValueError as e:
            ok(False, f"{what} --format=json does not parse: {e}")
            continue
        ok(isinstance(objects, list) and len(objects) == len(tsv_rows) - 1,
           f"{what} --format=json: {type(objects).__name__} of {len(objects)}, expected {len(tsv_rows) - 1} rows")
        for obj, cells in zip(objects, tsv_rows[1:]):
            if not ok(isinstance(obj, dict) and list(obj.keys()) == columns,
                      f"{what} --format=json: keys {list(obj)}"):
                break
            for col, cell in zip(columns, cells):
                got = obj[col]
                if col in STRING_COLUMNS:
                    same = got == cell
                elif col in INT_COLUMNS:
                    same = isinstance(got, int) and str(got) == cell
                else:  # same %.9g digits; NaN/inf are null in JSON
                    same = (got is None and not math.isfinite(float(cell))) or \
                        (got is not None and float(got) == float(cell))
                ok(same, f"{what} --format=json: {col} = {got!r}, TSV has {cell!r}")


def main():
    source = make_zstd_filter_available()
    if source is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py: neither hdf5plugin nor the build's libh5zstd")
        return 1
    print(f"# zstd filter 32015: {source}")
    with tempfile.TemporaryDirectory(prefix="acttrace-interop-") as tmp:
        x_path = os.path.join(tmp, "X.h5")
        y_path = os.path.join(tmp, "Y.h5")
        made_x = run([tool("trace-synth"), "--arch", "tiny", "--tokens", "256", "--seed", "3",
                      "--samples", "32", "-o", x_path])
        made_y = run([tool("trace-synth"), "--arch", "mamba-130m", "--tokens", "64", "--seed", "1",
                      "-o", y_path])
        if made_x is None or made_y is None:
            print(f"{checks} checks, {len(failures)} failed (trace-synth failed)")
            return 1
        for path in (x_path, y_path):
            found = read_everything(path)
            ok(found["datasets"] > 0 and found["zstd"] > 0,
               f"{os.path.basename(path)}: {found['datasets']} datasets, {found['zstd']} zstd-compressed")
            print(f"ok   {os.path.basename(path)}: read {found['datasets']} datasets "
                  f"({found['zstd']} zstd-compressed, {found['values']} values) with h5py + hdf5plugin; "
                  f"{found['chunks']} chunks decoded independently")
        with h5py.File(x_path, "r") as f:
            ok(any(f["points"][n]["samples"].shape[0] > 0 for n in f["points"] if "samples" in f["points"][n]),
               "X.h5 (--samples 32) holds sampled rows")
            names = check_points_table(x_path, f)
            print(f"ok   trace-stats: {len(names)} points checked" if not failures else "FAIL trace-stats")
            for point in dict.fromkeys([names[0], names[-1]]):
                check_channel_table(x_path, f, point)
            print(f"{'ok  ' if not failures else 'FAIL'} trace-stats -p: {names[0]}, {names[-1]}")
        check_formats(x_path, names[0])
    print(f"{checks} checks, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
