"""test_accum_numpy.py: the statistics in our trace files against numpy.

Each case generates raw activations with numpy (fixed seeds), writes them
with tests/at-feed through the public writer API, reads the trace back with
h5py + hdf5plugin only (no acttrace code) and compares every per-channel
dataset with float64 references computed independently from the raw data.

Tolerances (float64 accumulators, inputs of at most a few thousand values per
channel, so n * eps < 1e-12):
  count, nonfinite, min, max, absmax, hist, extremes, samples, tokens: exact.
  mean:   |got - want| <= 1e-9 |want| + DMU, where DMU = 1e-12 max|x| bounds
          the mean's rounding error of any sane summation (<= n eps max|x|),
          which matters when a channel's mean is near zero but |x| is not.
  m2..m4: the central moment sums M_k = sum (x - mean)^k.  Per-term rounding
          is bounded by 1e-9 S_k with S_k = sum |x - mean|^k (M_3 of symmetric
          data is a cancellation, so its own size is no scale), and an error
          DMU in the mean moves M_k by k |M_{k-1}| DMU + C(k,2) S_{k-2} DMU^2.
          M_2 has no first-order term (M_1 = 0): rtol 1e-9 on M_2 is what
          catches sum-of-squares formulas on offset data (mean 1e4, std 1,
          where they lose 8 digits).
  abssum: rtol 1e-9 (positive terms, no cancellation).
  --split N (also with --checkpoint between the parts, or --threads N)
          against one call: 1e-12 of the same scales (both exact in theory;
          only the rounding order differs); everything else bit-identical.
"""
import math
import os
import subprocess
import sys
import tempfile

import hdf5plugin  # registers the zstd filter (id 32015) with h5py
import h5py
import numpy as np

from testlib import (HIST_BINS, HIST_BINS_PER_OCTAVE, HIST_LOG_BINS, HIST_MIN_EXP,
                     TOP_BUILDDIR, Checker, is_bfloat16, is_fixed_utf8, make_zstd_filter_available,
                     text)

TOKEN_ID_VOCAB = 50257
AT_FEED = os.path.join(TOP_BUILDDIR, "tests", "at-feed")

POINT_ATTRS = {
    "component": "mlp",
    "site": "mlp.down_proj.in",
    "module": "model.layers.0.mlp.down_proj",
    "module_class": "Linear",
    "direction": "in",
}


check = Checker()

# ---------------------------------------------------------------- raw data


def bf16_bits(x32):
    """float32 -> bfloat16 bits, round to nearest even (what torch does); NaN stays NaN."""
    bits = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x32)
    rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # quiet NaN, keep the sign
    return rounded


def bf16_to_f32(bits16):
    return (bits16.astype(np.uint32) << 16).view(np.float32)


def encode(values32, dtype):
    """Values (float32 [B, T, C]) -> (raw little-endian bytes of that dtype,
    the exact float32 the library must see after widening)."""
    if dtype == "f32":
        v = values32.astype("<f4")
        return v, v.astype(np.float32)
    if dtype == "f16":
        with np.errstate(over="ignore"):  # overflow to +-inf is intended
            v = values32.astype("<f2")
        return v, v.astype(np.float32)
    if dtype == "bf16":
        bits = bf16_bits(values32).astype("<u2")
        return bits, bf16_to_f32(bits)
    raise ValueError(dtype)


# ---------------------------------------------------------------- references


def hist_edges():
    """Lower edges of the log bins 2..AT_HIST_BINS-2 plus 2^MAX_EXP (193 values), float64."""
    i = np.arange(HIST_LOG_BINS + 1, dtype=np.float64)
    return np.power(2.0, HIST_MIN_EXP + i / HIST_BINS_PER_OCTAVE)


def hist_reference(x):
    """[N, C] float64 -> [C, HIST_BINS] counts by the bin definition in acttrace.h."""
    a = np.abs(x)
    finite = np.isfinite(a)
    edges = hist_edges()
    bins = np.full(a.shape, -1, dtype=np.int64)
    bins[finite & (a == 0)] = 0
    bins[finite & (a > 0) & (a < edges[0])] = 1
    logged = finite & (a >= edges[0])
    # searchsorted(side="right") - 1: the last edge <= |x|; edge index 192 is the overflow bin.
    bins[logged] = 2 + np.searchsorted(edges, a[logged], side="right") - 1
    hist = np.zeros((x.shape[1], HIST_BINS), dtype=np.uint64)
    for c in range(x.shape[1]):
        b = bins[:, c]
        hist[c] = np.bincount(b[b >= 0], minlength=HIST_BINS)
    return hist


def channel_reference(x):
    """Per-channel float64 statistics of the finite values of [N, C]."""
    n_channels = x.shape[1]
    ref = {k: np.zeros(n_channels) for k in
           ("mean", "m2", "m3", "m4", "abssum", "min", "max", "absmax", "s2", "s3", "s4", "maxabs_any")}
    ref["count"] = np.zeros(n_channels, dtype=np.uint64)
    ref["nonfinite"] = np.zeros(n_channels, dtype=np.uint64)
    for c in range(n_channels):
        col = x[:, c]
        v = col[np.isfinite(col)]
        n = v.size
        ref["count"][c] = n
        ref["nonfinite"][c] = col.size - n
        if n == 0:
            for k in ("min", "max", "absmax"):
                ref[k][c] = np.nan
            continue
        mean = math.fsum(v) / n
        d = v - mean
        ref["mean"][c] = mean
        for k in (2, 3, 4):
            ref[f"m{k}"][c] = math.fsum(d ** k)
            ref[f"s{k}"][c] = math.fsum(np.abs(d) ** k)
        ref["abssum"][c] = math.fsum(np.abs(v))
        ref["min"][c] = v.min()
        ref["max"][c] = v.max()
        ref["absmax"][c] = np.abs(v).max()
    return ref


def moment_tolerances(ref, rtol):
    """Per-channel tolerances for mean, m2, m3, m4 (see the module docstring)."""
    absmax = np.nan_to_num(ref["absmax"], nan=0.0)
    dmu = 1e-12 * absmax
    n = ref["count"].astype(np.float64)
    s1 = np.sqrt(n * ref["s2"])  # >= sum |x - mean| (Cauchy-Schwarz)
    return {
        "mean": rtol * np.abs(ref["mean"]) + dmu,
        "m2": rtol * ref["s2"] + 1 * n * dmu ** 2,
        "m3": rtol * ref["s3"] + 3 * np.abs(ref["m2"]) * dmu + 3 * s1 * dmu ** 2,
        "m4": rtol * ref["s4"] + 4 * np.abs(ref["m3"]) * dmu + 6 * ref["s2"] * dmu ** 2,
    }


def extremes_reference(x, k):
    """The k largest finite |x| of [N, C]: (value, token, channel), ranked by
    |value| descending, then smaller token, then smaller channel."""
    tokens, channels = np.nonzero(np.isfinite(x))
    values = x[tokens, channels]
    order = np.lexsort((channels, tokens, -np.abs(values)))[:k]
    return values[order], tokens[order].astype(np.int64), channels[order].astype(np.int32)


def splitmix64(seed, tokens):
    """acttrace-format(5), SAMPLES: the reservoir key of each token index,
    SplitMix64's output function of seed + (t + 1) * golden, in numpy's
    wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        golden = np.uint64(0x9e3779b97f4a7c15)
        z = np.uint64(seed) + (tokens.astype(np.uint64) + np.uint64(1)) * golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        return z ^ (z >> np.uint64(31))


def selected_tokens(n_tokens, rows, seq_len, policy, n, seed=0):
    g = np.arange(n_tokens)
    if policy == "reservoir":  # the n smallest keys (ties by token), in token order
        keys = splitmix64(seed, g)
        return np.sort(g[np.lexsort((g, keys))[:n]])
    if policy == "every":
        return g[g % n == 0]
    if policy == "first":
        pos = g % seq_len if seq_len else g % rows
        return g[pos < n]
    return g[:0]


# ---------------------------------------------------------------- running at-feed


def run_feed(tmp, name, raw, case, extra_args=(), suffix=""):
    raw_path = os.path.join(tmp, f"{name}.raw")
    out_path = os.path.join(tmp, f"{name}{suffix}.h5")
    raw.tofile(raw_path)
    args = [AT_FEED, "--dtype", case["dtype"], "--layout", case["layout"],
            "--batches", str(case["B"]), "--rows", str(case["T"]), "--channels", str(case["C"]),
            *case.get("args", []), *extra_args, "-o", out_path, raw_path]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        check.ok(False, f"at-feed exited {proc.returncode}: {proc.stderr.strip()}\n  {' '.join(args)}")
        return None
    return out_path


def canonical_bits(a):
    """float32 bits with every NaN made the same, for exact comparison."""
    a = np.array(a, dtype=np.float32)
    a[np.isnan(a)] = np.float32("nan")
    return a.view(np.uint32)


def check_file_attrs(f, case):
    a = f.attrs
    check.ok(text(a.get("format")) == "acttrace", f"format attr is {a.get('format')!r}")
    check.ok(a.get("format_version") == 3, f"format_version is {a.get('format_version')!r}")
    check.ok(a.get("complete") == 1, f"complete is {a.get('complete')!r}")
    check.ok(text(a.get("model")) == "at-feed", f"model attr is {a.get('model')!r}")
    want_dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[case["dtype"]]
    check.ok(text(a.get("source_dtype")) == want_dtype,
             f"source_dtype attr is {a.get('source_dtype')!r}")
    for name in ("format", "model", "source_dtype", "producer", "created", "notes",
                 "sample_policy"):
        check.ok(is_fixed_utf8(f, name), f"attr {name} is a fixed-length UTF-8 string")
    check.ok(a.get("rank") == 0 and a.get("world_size") == 1,
             f"rank {a.get('rank')!r} of world_size {a.get('world_size')!r}, expected 0 of 1")


def check_tokens(f, case):
    n = case["B"] * case["T"]
    g = np.arange(n)
    seq_len = case.get("seq_len")
    want = {
        "seq": g // seq_len if seq_len else g // case["T"],
        "pos": g % seq_len if seq_len else g % case["T"],
        "id": g * 7 % TOKEN_ID_VOCAB,
    }
    for name, values in want.items():
        ds = f.get(f"tokens/{name}")
        if not check.ok(ds is not None, f"/tokens/{name} exists"):
            continue
        check.ok(ds.dtype == np.int32, f"/tokens/{name} dtype {ds.dtype}")
        check.equal_arrays(ds[()], values.astype(np.int32), f"/tokens/{name}")


def check_point_attrs(g, case):
    a = g.attrs
    for name, want in POINT_ATTRS.items():
        got = a.get(name)
        check.ok(text(got) == want and is_fixed_utf8(g, name),
                 f"point attr {name} = {got!r}, expected the fixed-length string {want!r}")
    check.ok(a.get("channel_offset") == 0 and a.get("full_channels") == case["C"],
             f"channel_offset {a.get('channel_offset')!r}, full_channels {a.get('full_channels')!r}: "
             f"expected a whole tensor of {case['C']}")
    check.ok(a.get("layer") == 0, f"point attr layer = {a.get('layer')!r}")
    check.ok(a.get("channels") == case["C"], f"point attr channels = {a.get('channels')!r}")
    # order: the position in which the writer added the point; at-feed adds one.
    check.ok("order" in a and np.issubdtype(np.asarray(a["order"]).dtype, np.integer) and a["order"] == 0,
             f"point attr order = {a.get('order')!r}, expected 0")


def check_stats(g, x, case):
    """Every per-channel dataset of point group g against references from x [N, C]."""
    C = case["C"]
    ref = channel_reference(x)
    for name, dtype in (("count", np.uint64), ("nonfinite", np.uint64)):
        ds = g[name]
        check.ok(ds.dtype == dtype and ds.shape == (C,), f"{name}: {ds.dtype} {ds.shape}")
        check.equal_arrays(ds[()], ref[name], name)
    for name in ("mean", "m2", "m3", "m4", "min", "max", "absmax", "abssum"):
        ds = g[name]
        check.ok(ds.dtype == np.float64 and ds.shape == (C,), f"{name}: {ds.dtype} {ds.shape}")
    tol = moment_tolerances(ref, 1e-9)
    for name in ("mean", "m2", "m3", "m4"):
        check.close_arrays(g[name][()], ref[name], tol[name], name)
    check.close_arrays(g["abssum"][()], ref["abssum"], 1e-9 * ref["abssum"], "abssum")
    for name in ("min", "max", "absmax"):
        check.equal_arrays(g[name][()], ref[name], name)
    return ref


def check_hist(g, x, case):
    if case.get("no_hist"):
        check.ok("hist" not in g, "--no-hist: no hist dataset")
        return
    ds = g.get("hist")
    if not check.ok(ds is not None, "hist exists"):
        return
    check.ok(ds.dtype == np.uint32 and ds.shape == (case["C"], HIST_BINS),
             f"hist: {ds.dtype} {ds.shape}, expected uint32 {(case['C'], HIST_BINS)}")
    check.equal_arrays(ds[()].astype(np.uint64), hist_reference(x), "hist")
    edges = ds.attrs.get("lower_edges")
    if check.ok(edges is not None and np.shape(edges) == (HIST_BINS,), "hist attr lower_edges"):
        edges = np.asarray(edges, dtype=np.float64)
        check.ok(edges[0] == 0.0, f"lower_edges[0] = {edges[0]!r}")
        check.ok(edges[1] == np.nextafter(0.0, 1.0), f"lower_edges[1] = {edges[1]!r}")
        # Bins 2.. start at 2^(MIN_EXP + i/4) (the overflow bin at 2^MAX_EXP): exact
        # at powers of two, the others within 2 ulp of numpy's 2**x.
        check.close_arrays(edges[2:], hist_edges(), 4.5e-16 * hist_edges(), "lower_edges[2:]")
        check.equal_arrays(edges[2::4], hist_edges()[::4], "lower_edges at powers of two")


def check_extremes(g, x, case):
    k = case.get("extremes", 64)
    ds = g.get("extremes")
    if not check.ok(ds is not None, "extremes exists"):
        return
    names = ds.dtype.names or ()
    check.ok(names == ("value", "token", "channel"), f"extremes fields {names}")
    if names != ("value", "token", "channel"):
        return
    check.ok(ds.dtype["value"] == np.float64 and ds.dtype["token"] == np.int64 and
             ds.dtype["channel"] == np.int32, f"extremes field types {ds.dtype}")
    values, tokens, channels = extremes_reference(x, k)
    got = ds[()]
    check.ok(got.shape == values.shape, f"extremes: {got.shape[0]} kept, expected {values.size}")
    if got.shape == values.shape:
        check.equal_arrays(got["value"], values, "extremes.value")
        check.equal_arrays(got["token"], tokens, "extremes.token")
        check.equal_arrays(got["channel"], channels, "extremes.channel")


def check_samples(g, x32, case):
    n_tokens = case["B"] * case["T"]
    policy, n = case.get("policy", "none"), case.get("sample_n", 1)
    chosen = selected_tokens(n_tokens, case["T"], case.get("seq_len"), policy, n,
                             case.get("sample_seed", 0))
    max_samples = case.get("max_samples", 1 << 20)
    kept = chosen[:max_samples]
    dropped = chosen.size - kept.size
    check.ok(g.attrs.get("samples_dropped") == dropped,
             f"samples_dropped = {g.attrs.get('samples_dropped')!r}, expected {dropped}")
    if policy == "none" and "samples" not in g:
        return
    ds, ts = g.get("samples"), g.get("sample_tokens")
    if not check.ok(ds is not None and ts is not None, "samples and sample_tokens exist"):
        return
    # format version 2: stored at the model's precision, not widened
    t = ds.id.get_type()
    stored = ("bf16" if is_bfloat16(t) else
              "f16" if t.get_size() == 2 and t.get_fields() == (15, 10, 5, 0, 10) else
              "f32" if t.get_size() == 4 else f"{t.get_size()}-byte")
    check.ok(stored == case["dtype"] and ds.shape == (kept.size, case["C"]),
             f"samples: stored {stored} {ds.shape}, expected {case['dtype']} {(kept.size, case['C'])}")
    check.ok(ts.dtype == np.int64 and ts.shape == (kept.size,), f"sample_tokens: {ts.dtype} {ts.shape}")
    check.equal_arrays(ts[()], kept, "sample_tokens")
    if ds.shape == (kept.size, case["C"]):
        check.equal_arrays(canonical_bits(ds.astype("float32")[()]), canonical_bits(x32[kept]),
                           "samples (float32 bits)")


def check_weights(f, weights):
    for module, w in weights.items():
        g = f.get(f"weights/{module}")
        if not check.ok(g is not None, f"/weights/{module} exists"):
            continue
        a = np.abs(w.astype(np.float64))
        want = {
            "row_absmax": a.max(axis=1), "row_absmean": a.mean(axis=1),
            "col_absmax": a.max(axis=0), "col_absmean": a.mean(axis=0),
            "row_sumsq": (a * a).sum(axis=1),
        }
        for name, values in want.items():
            ds = g.get(name)
            if not check.ok(ds is not None, f"/weights/{module}/{name} exists"):
                continue
            check.ok(ds.dtype == np.float64, f"/weights/{module}/{name} dtype {ds.dtype}")
            if name.endswith("absmax"):
                check.equal_arrays(ds[()], values, f"/weights/{module}/{name}")
            else:
                check.close_arrays(ds[()], values, 1e-12 * values, f"/weights/{module}/{name}")
        if w.shape[0] == 1:
            ds = g.get("values")
            if check.ok(ds is not None, f"/weights/{module}/values (a vector is stored whole)"):
                check.equal_arrays(ds[()], w.reshape(-1).astype(np.float32), f"/weights/{module}/values")


def check_split_same(path_one, path_split, ref, case):
    """A feed split into parts (or checkpointed between them, or run on another
    number of threads) must agree with a one-call feed: exactly where exactness
    is possible, to 1e-12 of the moment scales elsewhere."""
    with h5py.File(path_one, "r") as f1, h5py.File(path_split, "r") as f2:
        # Both within DMU of the true mean, so within 2 DMU of each other.
        p = f"points/{case['point']}"
        g1, g2 = f1[p], f2[p]
        tol = {k: 2 * v for k, v in moment_tolerances(ref, 1e-12).items()}
        for name in ("mean", "m2", "m3", "m4"):
            check.close_arrays(g2[name][()], g1[name][()], tol[name], f"split vs one call: {name}")
        check.close_arrays(g2["abssum"][()], g1["abssum"][()], 1e-12 * ref["abssum"], "split vs one call: abssum")
        for name in ("count", "nonfinite", "min", "max", "absmax", "hist", "extremes", "sample_tokens"):
            if name in g1 or name in g2:
                check.ok(name in g1 and name in g2 and g1[name][()].tobytes() == g2[name][()].tobytes(),
                         f"split vs one call: {name} identical")
        if "samples" in g1:
            check.equal_arrays(canonical_bits(g2["samples"][()]), canonical_bits(g1["samples"][()]),
                               "split vs one call: samples")
        check.ok(g1.attrs["samples_dropped"] == g2.attrs["samples_dropped"], "split vs one call: samples_dropped")


def run_case(tmp, case):
    check.context = case["name"]
    rng = np.random.default_rng(case["seed"])
    B, T, C = case["B"], case["T"], case["C"]
    values32 = case["make"](rng, B, T, C).astype(np.float32)  # [B, T, C]
    raw, x32 = encode(values32, case["dtype"])
    if case["layout"] == "bct":
        raw = np.ascontiguousarray(raw.transpose(0, 2, 1))
    x32 = x32.reshape(B * T, C)
    x = x32.astype(np.float64)

    weight_args = []
    for module, w in case.get("weights", {}).items():
        wpath = os.path.join(tmp, f"{case['name']}.{module}.w")
        w.astype("<f4").tofile(wpath)
        weight_args += ["--weight", f"{wpath}:{w.shape[0]}:{w.shape[1]}:{module}"]

    path = run_feed(tmp, case["name"], raw, case, weight_args)
    if path is None:
        return
    with h5py.File(path, "r") as f:
        check_file_attrs(f, case)
        check_tokens(f, case)
        g = f.get(f"points/{case['point']}")
        if not check.ok(g is not None, f"/points/{case['point']} exists"):
            return
        check_point_attrs(g, case)
        ref = check_stats(g, x, case)
        check_hist(g, x, case)
        check_extremes(g, x, case)
        check_samples(g, x32, case)
        check_weights(f, case.get("weights", {}))
    for i, variant in enumerate(case.get("variants", ())):
        path_variant = run_feed(tmp, case["name"], raw, case, variant, suffix=f".variant{i}")
        if path_variant:
            check.context = f"{case['name']} {' '.join(variant)}"
            check_split_same(path, path_variant, ref, case)
            check.context = case["name"]
    print(f"{'ok  ' if not any(s.startswith(case['name'] + ' ') or s.startswith(case['name'] + ':') for s in check.failures) else 'FAIL'} "
          f"{case['name']}: {case['dtype']} {case['layout']} B={B} T={T} C={C}")


# ---------------------------------------------------------------- cases


def make_offset(rng, B, T, C):
    return rng.normal(1e4, 1.0, size=(B, T, C))


def make_cauchy(rng, B, T, C):
    return rng.standard_cauchy(size=(B, T, C))


def make_nonfinite(rng, B, T, C):
    v = rng.normal(0.0, 3.0, size=(B, T, C))
    pick = rng.random(size=v.shape)
    v[pick < 0.03] = np.nan
    v[(pick >= 0.03) & (pick < 0.05)] = np.inf
    v[(pick >= 0.05) & (pick < 0.07)] = -np.inf
    v[:, :, 1] = np.nan  # a channel with no finite value: count 0
    v[:, :, 2] = np.inf
    v[0, 0, 3] = 7.0     # a channel with exactly one finite value
    v[:, 1:, 3] = np.nan
    return v


def make_zeros(rng, B, T, C):
    v = rng.normal(0.0, 1.0, size=(B, T, C))
    v[rng.random(size=v.shape) < 0.7] = 0.0
    v[rng.random(size=v.shape) < 0.1] = -0.0
    v[:, :, 0] = 0.0  # an all-zero channel: m2 = 0, min = max = absmax = 0
    v[:, ::3, 4] = 2.5  # ties in |x| (with the sign flipped below), settled by token and channel
    v[:, 1::3, 4] = -2.5
    v[:, ::2, 3] = -2.5
    return v


def make_tiny_huge(rng, B, T, C):
    exponents = rng.uniform(-40.0, 40.0, size=(B, T, C))
    v = np.exp2(exponents) * rng.choice([-1.0, 1.0], size=(B, T, C))
    f32 = np.float32
    edge_values = [
        2.0 ** -24, 2.0 ** 24, np.nextafter(f32(2.0 ** -24), f32(0)), np.nextafter(f32(2.0 ** 24), f32(0)),
        np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).smallest_subnormal,
        np.finfo(np.float32).tiny, 1e-30, -1e30, 0.0,
    ]
    for q in range(-24 * 4, 24 * 4 + 1):  # float32 values on both sides of every bin edge
        e = f32(2.0 ** (q / 4))
        edge_values += [e, np.nextafter(e, f32(0)), np.nextafter(e, f32(np.inf))]
    flat = v.reshape(-1)
    idx = rng.choice(flat.size, size=len(edge_values), replace=False)
    flat[idx] = np.array(edge_values, dtype=np.float64) * rng.choice([-1.0, 1.0], size=len(edge_values))
    return v


def make_fp16(rng, B, T, C):
    v = rng.normal(0.0, 4.0, size=(B, T, C))
    v[:, :, 0] *= 2000.0  # overflows to +-inf in fp16 now and then
    v[:, :, 1] *= 1e-6    # fp16 subnormals (>= 2^-24, so bin 2 and up) and zeros
    v[0, 0, 2], v[0, 1, 2], v[0, 2, 2] = 65504.0, -65504.0, 2.0 ** -24
    return v


def make_bf16(rng, B, T, C):
    v = rng.normal(0.0, 2.0, size=(B, T, C))
    v[:, :, 3] *= 100.0  # outlier channels, as in a transformer's residual stream
    v[:, :, 7] += 60.0
    v[1, 5, 9] = 3.0e38  # rounds to bf16's largest finite value or beyond
    return v


def make_normal(rng, B, T, C):
    return rng.normal(0.5, 1.5, size=(B, T, C)) * np.linspace(0.1, 10.0, C)


def make_wide(rng, B, T, C):
    v = rng.normal(0.0, 1.0, size=(B, T, C)) * rng.lognormal(0.0, 0.5, size=C)
    v[:, :, 5] = 40.0 + rng.normal(0.0, 3.0, size=(B, T))  # an offset outlier channel
    v[:, 3, 200] = -900.0  # a massive activation on one token
    return v


POINT = "layers.0.mlp.down_proj.in"


def cases():
    wrng = np.random.default_rng(99)
    matrix = wrng.normal(0.0, 0.02, size=(24, 13))
    matrix[:, 5] *= 40.0
    matrix[3, :] = 0.0
    gamma = wrng.normal(1.0, 0.1, size=(1, 13))
    gamma[0, 2] = -8.5
    common = {"point": POINT}
    return [
        dict(common, name="f32-offset", seed=1, dtype="f32", layout="tc", B=2, T=300, C=13,
             make=make_offset, extremes=32, policy="every", sample_n=4,
             args=["--every", "4", "--extremes", "32"], variants=(["--split", "37"], ["--split", "1"],),
             weights={"model.layers.0.mlp.down_proj": matrix.astype(np.float32),
                      "model.layers.0.post_attention_layernorm": gamma.astype(np.float32)}),
        dict(common, name="cauchy", seed=2, dtype="f32", layout="tc", B=1, T=777, C=9,
             make=make_cauchy, extremes=50, policy="first", sample_n=10, seq_len=100, max_samples=50,
             args=["--first", "10", "--seq-len", "100", "--max-samples", "50", "--extremes", "50"],
             variants=(["--split", "64"],)),
        dict(common, name="nonfinite", seed=3, dtype="f32", layout="tc", B=2, T=64, C=11,
             make=make_nonfinite, extremes=40, policy="every", sample_n=1,
             args=["--every", "1", "--extremes", "40"], variants=(["--split", "5"],)),
        dict(common, name="zeros", seed=4, dtype="f32", layout="tc", B=1, T=40, C=6,
             make=make_zeros, extremes=150, args=["--extremes", "150"], variants=(["--split", "3"],)),
        dict(common, name="tiny-huge", seed=5, dtype="f32", layout="tc", B=2, T=400, C=8,
             make=make_tiny_huge, extremes=64, policy="every", sample_n=97,
             args=["--every", "97"], variants=(["--split", "33"],)),
        dict(common, name="fp16", seed=6, dtype="f16", layout="tc", B=2, T=50, C=16,
             make=make_fp16, extremes=64, policy="every", sample_n=3, max_samples=20,
             args=["--every", "3", "--max-samples", "20"], variants=(["--split", "7"],)),
        dict(common, name="bf16-bct", seed=7, dtype="bf16", layout="bct", B=3, T=40, C=12,
             make=make_bf16, extremes=64, policy="first", sample_n=4,
             args=["--first", "4"], variants=(["--split", "9"],)),
        dict(common, name="f32-bct", seed=8, dtype="f32", layout="bct", B=3, T=33, C=7,
             make=make_normal, extremes=20, policy="every", sample_n=2,
             args=["--every", "2", "--extremes", "20"], variants=(["--split", "5"], ["--split", "33"],)),
        # More channels than one block and more rows than one tile, enough elements
        # for the parallel path, and samples that cross a chunk of `samples`.
        dict(common, name="wide", seed=10, dtype="f32", layout="tc", B=2, T=700, C=300,
             make=make_wide, extremes=64, policy="every", sample_n=1,
             args=["--every", "1"],
             variants=(["--split", "300"], ["--split", "97", "--checkpoint"], ["--checkpoint"],
                       ["--threads", "1"], ["--threads", "3", "--split", "256"])),
        dict(common, name="wide-bf16-bct", seed=11, dtype="bf16", layout="bct", B=3, T=300, C=257,
             make=make_wide, extremes=100, policy="every", sample_n=2, max_samples=400,
             args=["--every", "2", "--max-samples", "400", "--extremes", "100"],
             variants=(["--split", "128", "--checkpoint"], ["--threads", "1"])),
        # A uniform sample of 100 of 1200 rows, kept in memory, the same rows
        # whatever the split and the checkpoints (keys hash token indices).
        dict(common, name="reservoir", seed=12, dtype="f32", layout="tc", B=3, T=400, C=19,
             make=make_normal, extremes=16, policy="reservoir", sample_n=100,
             sample_seed=2**63 + 12345,
             args=["--reservoir", "100", "--seed", str(2**63 + 12345), "--extremes", "16"],
             variants=(["--split", "77", "--checkpoint"], ["--split", "1"])),
        dict(common, name="reservoir-bf16-bct", seed=13, dtype="bf16", layout="bct", B=2, T=300,
             C=33, make=make_bf16, extremes=64, policy="reservoir", sample_n=1000,
             args=["--reservoir", "1000"], variants=(["--split", "50", "--checkpoint"],)),
        dict(common, name="no-hist", seed=9, dtype="f32", layout="tc", B=1, T=50, C=5,
             make=make_normal, extremes=8, no_hist=True, args=["--no-hist", "--extremes", "8"]),
    ]


def main():
    if not os.access(AT_FEED, os.X_OK):
        print(f"FAIL: {AT_FEED} not built (top_builddir={TOP_BUILDDIR})")
        return 1
    source = make_zstd_filter_available()
    if source is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py: neither hdf5plugin nor the build's libh5zstd")
        return 1
    print(f"# zstd filter 32015: {source}")
    with tempfile.TemporaryDirectory(prefix="acttrace-accum-") as tmp:
        for case in cases():
            run_case(tmp, case)
    print(f"{check.checks} checks, {len(check.failures)} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
