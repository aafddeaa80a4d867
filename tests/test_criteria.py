"""test_criteria.py: the outlier criteria of analysis/criteria.c against numpy.

trace-synth writes traces of the synthetic architectures; tests/an-driver runs
the C criteria on every point of a trace and prints what they flag.  This
script reads the same traces with h5py + hdf5plugin only (no acttrace code)
and recomputes every criterion independently in numpy float64 from the
per-channel datasets (count, mean, m2, m3, m4, absmax, abssum, hist,
extremes) and the sampled rows:

  channel criteria  the flagged (point, channel) sets must be equal, exactly;
                    scores, centers and spreads agree to rtol 1e-9 (the C code
                    and numpy sum in different orders, nothing else differs);
  histogram ones    the bin edges are derived here in exact integer
                    arithmetic (and checked against the file's
                    hist_lower_edges); counts come from the hist dataset;
  element ones      the flagged elements (token, channel, value) must be
                    equal, values exactly, ratios to rtol 1e-9, and the
                    `complete` flag must follow its documented rule.

Where every token of a trace is sampled (tiny, mamba-130m here), the sampled
rows are the raw data, so the criteria are also checked against what they
approximate: the frequency share counted is exactly the share of
|x| >= the bin edge used and never above the share of |x| >= t; the histogram
median is within 2^(1/8) of the true lower median; element lists are subsets
of the true set and equal to it when `complete` says so.

Finally the grand-mean criterion at its defaults must recover exactly the
channels planted by trace-synth (its --truth file) on every architecture, and
bad parameters must make the driver fail with one line.
"""
import math
import os
import subprocess
import sys
import tempfile
import time

import hdf5plugin  # registers the zstd filter (id 32015) with h5py
import h5py
import numpy as np

from testlib import (HIST_BINS, HIST_BINS_PER_OCTAVE, HIST_MIN_EXP, TOP_BUILDDIR,
                     Checker, make_zstd_filter_available)

MAD_TO_SIGMA = 1.4826
RTOL = 1e-9
DRIVER = os.path.join(TOP_BUILDDIR, "tests", "an-driver")
AT_FEED = os.path.join(TOP_BUILDDIR, "tests", "at-feed")
SYNTH = os.path.join(TOP_BUILDDIR, "trace-synth")


check = Checker()

# ---------------------------------------------------------------- histogram edges


def quarter_edge(q):
    """The smallest double >= 2^(q/4): m = M / 2^52 with 2^52 <= M < 2^53, and
    m >= 2^(q/4) iff M^4 >= 2^(q + 208), decided in integers."""
    if q == 0:
        return 1.0
    target = 1 << (q + 4 * 52)
    root = math.isqrt(math.isqrt(target))  # floor of the 4th root
    while root ** 4 < target:
        root += 1
    return root / 2.0 ** 52


def lower_edges():
    """Inclusive lower edge of every bin (acttrace-format(5), HISTOGRAM), and +inf."""
    edges = [0.0, 5e-324]
    for i in range(HIST_BINS - 2):
        q, octave = i % HIST_BINS_PER_OCTAVE, i // HIST_BINS_PER_OCTAVE
        edges.append(math.ldexp(quarter_edge(q), HIST_MIN_EXP + octave))
    return np.array(edges + [math.inf])


EDGES = lower_edges()


def bin_of(absx):
    """The bin holding |x| = absx: the last edge <= absx."""
    return int(np.searchsorted(EDGES, absx, side="right")) - 1


def bin_middle(b):
    if b == 0:
        return 0.0
    if b == 1:
        return EDGES[2] / 2
    if b == HIST_BINS - 1:
        return EDGES[b]
    return math.sqrt(EDGES[b] * EDGES[b + 1])


# ---------------------------------------------------------------- traces


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_trace(path, with_hist=True):
    """Every point's datasets as numpy arrays, in trace order."""
    points = []
    with h5py.File(path, "r") as f:
        check.ok(np.array_equal(f.attrs["hist_lower_edges"][...], EDGES[:-1]),
                 f"{path}: hist_lower_edges differ from the exact edges")
        extremes_k = int(f.attrs.get("extremes_k", 0))
        for name, g in f["points"].items():
            p = {"name": name, "order": int(g.attrs["order"]), "layer": int(g.attrs["layer"]),
                 "site": text(g.attrs["site"]), "extremes_k": extremes_k}
            for key in ("count", "mean", "m2", "m3", "m4", "absmax", "abssum"):
                p[key] = g[key][...]
            p["hist"] = g["hist"][...] if with_hist and "hist" in g else None
            p["extremes"] = g["extremes"][...] if "extremes" in g else None
            if with_hist and "samples" in g:
                p["samples"] = g["samples"][...]
                p["sample_tokens"] = g["sample_tokens"][...]
            else:
                p["samples"] = None
            points.append(p)
    points.sort(key=lambda p: p["order"])
    return points


def synth(tmp, arch, tokens, seed, samples):
    path = os.path.join(tmp, f"{arch}-{tokens}-{seed}.h5")
    truth = path.replace(".h5", ".tsv")
    subprocess.run([SYNTH, "--arch", arch, "--tokens", str(tokens), "--seed", str(seed),
                    "--samples", str(samples), "-q", "-o", path, "--truth", truth], check=True)
    return path, truth


def driver(args, path):
    """Rows of the driver's stdout, split at tabs; a failure is a failed check."""
    result = subprocess.run([DRIVER] + args + [path], capture_output=True, text=True)
    check.ok(result.returncode == 0 and not result.stderr,
             f"an-driver {' '.join(args)}: exit {result.returncode}, stderr {result.stderr!r}")
    return [line.split("\t") for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- numpy criteria


def stat_values(p, stat):
    """v_c of every channel, NaN where undefined (no values; std of one value)."""
    count = p["count"]
    n = count.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if stat == "mean":
            v = p["mean"].astype(np.float64)
        elif stat == "absmean":
            v = p["abssum"] / n
        elif stat == "absmax":
            v = p["absmax"].astype(np.float64)
        elif stat == "std":
            v = np.sqrt(p["m2"] / (n - 1))
            v[count < 2] = np.nan
        elif stat == "rms":
            v = np.sqrt(p["mean"] ** 2 + p["m2"] / n)
        else:
            raise ValueError(stat)
    v[count == 0] = np.nan
    return v


def mean_std(v):
    d = v[~np.isnan(v)]
    mu = d.mean() if d.size else math.nan
    sigma = d.std(ddof=1) if d.size >= 2 else math.nan
    return mu, sigma


def flags_where(mask, scores):
    return {int(c): float(scores[c]) for c in np.flatnonzero(mask)}


def grand_mean(p, k=6.0, stat="mean"):
    # RecurrentGemma study, section 2.4
    v = stat_values(p, stat)
    mu, sigma = mean_std(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = (np.abs(v - mu) > k * sigma) if sigma > 0 else np.zeros(v.shape, bool)
        return flags_where(mask, np.abs(v - mu) / sigma), mu, sigma


def layer_sigma(p, k=6.0, stat="absmax"):
    # Mamba-PTQ: absmax_c > mean + k std over channels
    v = stat_values(p, stat)
    mu, sigma = mean_std(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = (v > mu + k * sigma) if sigma > 0 else np.zeros(v.shape, bool)
        return flags_where(mask, (v - mu) / sigma), mu, sigma


def pooled(p):
    """Count, mean, M2, M3, M4 of all channels pooled (exact combination)."""
    n = p["count"].astype(np.float64)
    total = n.sum()
    mu = (n * p["mean"]).sum() / total
    d = p["mean"] - mu
    m2 = (p["m2"] + n * d ** 2).sum()
    m3 = (p["m3"] + 3 * d * p["m2"] + n * d ** 3).sum()
    m4 = (p["m4"] + 4 * d * p["m3"] + 6 * d ** 2 * p["m2"] + n * d ** 4).sum()
    return total, mu, m2, m3, m4


def tensor_sigma(p, m=4.0, beta=1 / 3, two_sided=False):
    # channel-wise outliers, 001 section 4.1
    total, mu, m2, _, _ = pooled(p)
    sigma = math.sqrt(m2 / (total - 1))
    count = p["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        std_c = np.sqrt(p["m2"] / (count - 1.0))
        std_c[count < 2] = np.nan
        excess = p["mean"] - mu
        if two_sided:
            excess = np.abs(excess)
        mask = (count > 0) & (excess > m * sigma) & (std_c < beta)
        return flags_where(mask, excess / sigma), mu, sigma


def mad(p, k=6.0, stat="mean"):
    v = stat_values(p, stat)
    d = v[~np.isnan(v)]
    med = np.median(d)
    spread = MAD_TO_SIGMA * np.median(np.abs(d - med))
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = (np.abs(v - med) > k * spread) if spread > 0 else np.zeros(v.shape, bool)
        return flags_where(mask, np.abs(v - med) / spread), med, spread


def kurtosis(p, k=10.0):
    count, m2, m4 = p["count"], p["m2"], p["m4"]
    with np.errstate(invalid="ignore", divide="ignore"):
        kurt = count * m4 / (m2 * m2) - 3
    kurt[(count < 2) | (m2 == 0)] = np.nan
    total, _, pm2, _, pm4 = pooled(p)
    with np.errstate(invalid="ignore"):
        return flags_where(kurt > k, kurt), total * pm4 / (pm2 * pm2) - 3, math.nan


def frequency_first_bin(t):
    """Conservative: the first bin whose lower edge is >= t."""
    return int(np.searchsorted(EDGES, t, side="left"))


def frequency(p, t=6.0, share=0.06):
    first = frequency_first_bin(t)
    count = p["count"]
    counted = p["hist"][:, first:].sum(axis=1, dtype=np.uint64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counted / count.astype(np.float64)
    return flags_where((count > 0) & (shares >= share), shares), EDGES[first], math.nan


def require_layer_share(points, flags, share):
    """LLM.int8's second condition: keep (point, c) when c is flagged at the
    point's site in >= share of the distinct layers having that site."""
    by_site = {}
    for p in points:
        by_site.setdefault(p["site"], []).append(p)
    kept = {}
    for p in points:
        group = by_site[p["site"]]
        layers = {q["layer"] for q in group}
        for c, score in flags[p["name"]].items():
            flagged = {q["layer"] for q in group if c in flags[q["name"]]}
            if len(flagged) / len(layers) >= share:
                kept[(p["name"], c)] = score
    return kept


def absmean_reference(p):
    return p["abssum"][p["count"] > 0].sum() / p["count"].sum()


def ratio(p, tau=1000.0):
    ref = absmean_reference(p)
    with np.errstate(invalid="ignore"):
        mask = (p["count"] > 0) & (p["absmax"] > tau * ref)
    return flags_where(mask, p["absmax"] / ref), ref, math.nan


def hist_median(p):
    pool = p["hist"].sum(axis=0, dtype=np.uint64)
    total = int(pool.sum())
    if total == 0:
        return math.nan
    rank = (total + 1) // 2
    return bin_middle(int(np.searchsorted(np.cumsum(pool), rank, side="left")))


def massive(p, abs_threshold=100.0, ratio_threshold=1000.0):
    med = hist_median(p)
    absmax = p["absmax"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = (p["count"] > 0) & (absmax > abs_threshold) & (absmax > ratio_threshold * med)
        return flags_where(mask, absmax / med), med, math.nan


METHODS = {
    "grand-mean": (grand_mean, {"k": "k", "stat": "stat"}),
    "layer-sigma": (layer_sigma, {"k": "k", "stat": "stat"}),
    "tensor-sigma": (tensor_sigma, {"m": "m", "beta": "beta", "two_sided": "two_sided"}),
    "mad": (mad, {"k": "k", "stat": "stat"}),
    "kurtosis": (kurtosis, {"k": "k"}),
    "frequency": (frequency, {"t": "t", "share": "share"}),
    "ratio": (ratio, {"tau": "tau"}),
    "massive": (massive, {"abs": "abs_threshold", "ratio": "ratio_threshold"}),
}

# (method, driver parameters): the published defaults and settings that flag more
CASES = [
    ("grand-mean", {}),
    ("grand-mean", {"k": 3}),
    ("grand-mean", {"stat": "absmean", "k": 4}),
    ("grand-mean", {"stat": "absmax"}),
    ("grand-mean", {"stat": "std", "k": 3}),
    ("grand-mean", {"stat": "rms", "k": 3}),
    ("layer-sigma", {}),
    ("layer-sigma", {"k": 3}),
    ("layer-sigma", {"stat": "mean", "k": 3}),
    ("tensor-sigma", {}),
    ("tensor-sigma", {"m": 2, "beta": 2}),
    ("tensor-sigma", {"m": 1, "beta": 1.5, "two_sided": 1}),
    ("mad", {}),
    ("mad", {"k": 3, "stat": "absmax"}),
    ("mad", {"stat": "std"}),
    ("kurtosis", {}),
    ("kurtosis", {"k": 1}),
    ("frequency", {"layers": 0}),
    ("frequency", {"t": 3, "share": 0.01, "layers": 0}),
    ("frequency", {"t": float(EDGES[bin_of(6.0)]), "layers": 0}),  # an edge: exact
    ("frequency", {}),  # with the 25% layer share
    ("frequency", {"t": 2, "share": 0.05, "layers": 0.5}),
    ("ratio", {}),
    ("ratio", {"tau": 10}),
    ("ratio", {"tau": 4}),
    ("massive", {}),
    ("massive", {"abs": 20, "ratio": 50}),
]
# llama-1b is the largest trace: one case per method
LARGE_CASES = [CASES[i] for i in (0, 7, 10, 13, 16, 20, 24, 26)]


def numpy_flags(points, method, params):
    """{(point, channel): score} and {point: (center, spread)} of a criterion."""
    func, names = METHODS[method]
    kwargs = {names[k]: v for k, v in params.items() if k in names}
    flags, refs = {}, {}
    for p in points:
        found, center, spread = func(p, **kwargs)
        flags[p["name"]] = found
        refs[p["name"]] = (center, spread)
    if method == "frequency" and params.get("layers", 0.25) > 0:
        kept = require_layer_share(points, flags, params.get("layers", 0.25))
    else:
        kept = {(name, c): s for name, f in flags.items() for c, s in f.items()}
    return kept, refs


def close(got, want):
    if math.isnan(want) or math.isinf(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return abs(got - want) <= RTOL * abs(want)


def driver_args(method, params):
    return [method] + [f"{k}={v}" for k, v in params.items()]


def compare_case(path, points, method, params, totals):
    label = " ".join(driver_args(method, params))
    check.context = f"{os.path.basename(path)}: {label}"
    want, refs = numpy_flags(points, method, params)
    lines = driver(["-c"] + driver_args(method, params), path)
    rows = [r for r in lines if r[1] != "#"]
    summary = [r[:1] + r[2:] for r in lines if r[1] == "#"]
    got = {(r[0], int(r[1])): float(r[2]) for r in rows}
    check.ok(len(got) == len(rows), "duplicate rows")
    only_c, only_np = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    check.ok(not only_c and not only_np,
             f"channel sets differ: only C {only_c[:4]}, only numpy {only_np[:4]} "
             f"({len(got)} vs {len(want)})")
    bad = [(key, got[key], want[key]) for key in set(got) & set(want) if not close(got[key], want[key])]
    check.ok(not bad, f"{len(bad)} scores off, e.g. {bad[:2]}")
    order = [(r[0], int(r[1])) for r in rows]
    rank = {p["name"]: i for i, p in enumerate(points)}
    check.ok(order == sorted(order, key=lambda key: (rank[key[0]], key[1])),
             "rows not in trace order, channels ascending")
    off = [(r[0], r[1], r[2], refs[r[0]]) for r in summary
           if not (close(float(r[1]), refs[r[0]][0]) and close(float(r[2]), refs[r[0]][1]))]
    check.ok(len(summary) == len(points) and not off, f"center/spread off: {off[:2]}")
    totals[method] = totals.get(method, 0) + len(got)
    return len(got)


# ---------------------------------------------------------------- elements


def element_threshold(p, method, params):
    if method == "ratio":
        ref = absmean_reference(p)
        return ref, params.get("tau", 1000.0) * ref
    med = hist_median(p)
    return med, max(params.get("abs", 100.0), params.get("ratio", 1000.0) * med)


def element_candidates(p, threshold, use_samples):
    """{(token, channel): value} above threshold, from extremes and samples."""
    found = {}
    ext = p["extremes"]
    if ext is not None:
        for value, token, channel in zip(ext["value"], ext["token"], ext["channel"]):
            if abs(value) > threshold:
                found[(int(token), int(channel))] = float(value)
    if use_samples and p["samples"] is not None:
        rows, cols = np.nonzero(np.isfinite(p["samples"]) & (np.abs(p["samples"]) > threshold))
        tokens = p["sample_tokens"][rows].tolist()
        values = p["samples"][rows, cols].astype(np.float64).tolist()
        for key, value in zip(zip(tokens, cols.tolist()), values):
            if found.setdefault(key, value) != value:
                check.ok(False, f"{key}: extreme {found[key]} and sample {value} differ")
    return found


def element_complete(p, threshold, listed):
    """The documented rule: extremes not full; K-th extreme <= threshold; or the
    histogram bound (values from the threshold's bin up, in channels whose
    absmax exceeds it) equals the number listed."""
    ext = p["extremes"]
    n_ext = 0 if ext is None else len(ext)
    if n_ext < max(p["extremes_k"], n_ext):
        return 1
    if n_ext and abs(ext["value"][-1]) <= threshold:
        return 1
    over = (p["count"] > 0) & (p["absmax"] > threshold)
    if p["hist"] is None:
        return int(not over.any() and listed == 0)
    bound = int(p["hist"][over, bin_of(threshold):].sum(dtype=np.uint64))
    return int(bound == listed)


def compare_elements(path, points, method, params, use_samples, raw_complete):
    args = (["-e"] + ([] if use_samples else ["-n"]) + driver_args(method, params))
    check.context = f"{os.path.basename(path)}: {' '.join(args)}"
    got, summary = {}, {}
    for r in driver(["-c"] + args, path):
        if r[1] == "#":
            summary[r[0]] = r[2:]
        else:
            got.setdefault(r[0], []).append((int(r[1]), int(r[2]), float(r[3]), float(r[4])))
    listed_total = complete_total = 0
    for p in points:
        ref, threshold = element_threshold(p, method, params)
        found = element_candidates(p, threshold, use_samples)
        want = sorted(((t, c, v, abs(v) / ref) for (t, c), v in found.items()),
                      key=lambda e: (-abs(e[2]), e[0], e[1]))
        have = got.get(p["name"], [])
        same = [h[:3] for h in have] == [w[:3] for w in want]
        check.ok(same, f"{p['name']}: elements differ: C {have[:3]} numpy {want[:3]} "
                 f"({len(have)} vs {len(want)})")
        check.ok(same and all(close(h[3], w[3]) for h, w in zip(have, want)),
                 f"{p['name']}: ratios off")
        s = summary.get(p["name"], ["nan"] * 4)
        complete = element_complete(p, threshold, len(want))
        check.ok(close(float(s[0]), ref) and close(float(s[1]), threshold)
                 and int(s[2]) == complete and int(s[3]) == len(want),
                 f"{p['name']}: summary {s}, expected {ref} {threshold} {complete} {len(want)}")
        if raw_complete:
            truth = element_candidates(p, threshold, True)  # every token was sampled
            check.ok(set(found) <= set(truth), f"{p['name']}: listed elements not in the data")
            check.ok(not complete or set(found) == set(truth),
                     f"{p['name']}: complete but {len(truth) - len(found)} elements missed")
        listed_total += len(want)
        complete_total += complete
    return listed_total, complete_total


# ---------------------------------------------------------------- raw-data truths


def check_against_raw(path, points):
    """Every token sampled: the histogram criteria against the raw values."""
    check.context = f"{os.path.basename(path)}: raw data"
    medians = {r[0]: float(r[1]) for r in driver(["-M", "massive"], path)}
    worst = 0.0
    for p in points:
        x = np.abs(p["samples"].astype(np.float64))
        check.ok(x.shape[0] == p["count"][0], f"{p['name']}: not every token sampled")
        want = hist_median(p)
        check.ok(close(medians[p["name"]], want), f"{p['name']}: median {medians[p['name']]} vs {want}")
        flat = np.sort(x.reshape(-1))
        true_median = flat[(flat.size + 1) // 2 - 1]  # rank ceil(N/2), the lower median
        if true_median >= EDGES[2]:
            error = abs(math.log2(want / true_median))
            worst = max(worst, error)
            check.ok(error <= 0.125 + 1e-12, f"{p['name']}: median {want} vs true {true_median}")
        for t in (6.0, 3.0, 1.0):
            first = frequency_first_bin(t)
            counted = p["hist"][:, first:].sum(axis=1, dtype=np.uint64)
            check.ok(np.array_equal(counted, (x >= EDGES[first]).sum(axis=0)),
                     f"{p['name']}: hist count from edge {EDGES[first]} differs from the raw count")
            check.ok(np.all(counted <= (x >= t).sum(axis=0)),
                     f"{p['name']}: t={t}: counted more than |x| >= t (not conservative)")
    print(f"# {os.path.basename(path)}: histogram median within 2^{worst:.4f} of the true one")


# ---------------------------------------------------------------- planted channels


def check_planted(path, truth):
    check.context = f"{os.path.basename(path)}: planted"
    planted = set()
    with open(truth) as f:
        next(f)
        for line in f:
            point, channel, _ = line.rstrip("\n").split("\t")
            planted.add((point, int(channel)))
    found = {(r[0], int(r[1])) for r in driver(["grand-mean"], path)}
    missed, extra = planted - found, found - planted
    check.ok(not missed and not extra,
             f"{len(missed)} missed (e.g. {sorted(missed)[:3]}), {len(extra)} extra "
             f"(e.g. {sorted(extra)[:3]})")
    print(f"# {os.path.basename(path)}: grand-mean k=6 recovers {len(planted & found)} of "
          f"{len(planted)} planted channels, {len(extra)} false positives")


# ---------------------------------------------------------------- bad input


BAD_PARAMS = [
    ("grand-mean", "k=0", "grand-mean: k must be a positive number, not 0"),
    ("grand-mean", "k=-1", "k must be a positive number, not -1"),
    ("grand-mean", "k=nan", "k must be a positive number"),
    ("layer-sigma", "k=inf", "layer-sigma: k must be a positive number, not inf"),
    ("mad", "k=-3", "mad: k must be"),
    ("kurtosis", "k=nan", "kurtosis: k must be a finite number"),
    ("tensor-sigma", "beta=0", "tensor-sigma: beta must be a positive number or inf, not 0"),
    ("tensor-sigma", "m=-4", "tensor-sigma: m must be a positive number, not -4"),
    ("ratio", "tau=0", "ratio: tau must be a positive number, not 0"),
    ("massive", "abs=-1", "massive: the absolute threshold must be a number >= 0, not -1"),
    ("massive", "ratio=0", "massive: the ratio to the median must be a positive number"),
    ("frequency", "t=0", "frequency: t must be a positive number, not 0"),
    ("frequency", "share=0", "frequency: the share of values must be in (0, 1], not 0"),
    ("frequency", "share=1.5", "the share of values must be in (0, 1], not 1.5"),
    ("frequency", "layers=2", "the share of layers must be in [0, 1] (0: not required), not 2"),
]


def expect_failure(args, path, status, needle):
    result = subprocess.run([DRIVER] + args + [path], capture_output=True, text=True)
    lines = result.stderr.splitlines()
    check.ok(result.returncode == status and len(lines) == 1 and lines[0].startswith("an-driver: ")
             and needle in lines[0] and not result.stdout,
             f"{' '.join(args)}: exit {result.returncode} (want {status}), stderr {result.stderr!r}")


def check_bad_input(tmp, path):
    check.context = "bad parameters"
    for method, param, needle in BAD_PARAMS:
        expect_failure([method, param], path, 1, needle)
        if method in ("ratio", "massive"):
            expect_failure(["-e", method, param], path, 1, needle)
    expect_failure(["gaussian"], path, 2, "unknown method 'gaussian'")
    expect_failure(["grand-mean", "stat=median"], path, 2, "unknown statistic 'median'")
    check.context = "no histogram"
    raw = os.path.join(tmp, "raw.f32")
    rng = np.random.default_rng(7)
    rng.standard_normal((8, 16)).astype("<f4").tofile(raw)
    nohist = os.path.join(tmp, "nohist.h5")
    subprocess.run([AT_FEED, "--dtype", "f32", "--layout", "tc", "--batches", "1", "--rows", "8",
                    "--channels", "16", "--no-hist", "-o", nohist, raw], check=True)
    for args in (["frequency"], ["massive"], ["-e", "massive"]):
        expect_failure(args, nohist, 1, f"{args[-1]}: trace has no histogram")
    for method in ("grand-mean", "layer-sigma", "tensor-sigma", "mad", "kurtosis", "ratio"):
        driver([method], nohist)
    driver(["-e", "ratio"], nohist)


# ---------------------------------------------------------------- main


ELEMENT_CASES = [("ratio", {}), ("ratio", {"tau": 20}), ("massive", {}),
                 ("massive", {"abs": 10, "ratio": 10})]


def run_trace(tmp, arch, tokens, seed, samples, cases, element_cases, totals, timings):
    start = time.monotonic()
    path, truth = synth(tmp, arch, tokens, seed, samples)
    timings.append((f"trace-synth {arch} --tokens {tokens} --samples {samples}",
                    time.monotonic() - start))
    start = time.monotonic()
    points = read_trace(path)
    timings.append((f"{arch}: read with h5py", time.monotonic() - start))
    start = time.monotonic()
    flagged = [compare_case(path, points, method, params, totals) for method, params in cases]
    print(f"# {arch}: flagged per case: {flagged}")
    all_sampled = samples >= tokens
    for method, params in element_cases:
        for use_samples in ((False, True) if samples else (False,)):
            listed, complete = compare_elements(path, points, method, params, use_samples,
                                                all_sampled)
            totals[f"elements {method}"] = totals.get(f"elements {method}", 0) + listed
            print(f"# {arch}: {method} {params} samples={use_samples}: {listed} elements, "
                  f"{complete} of {len(points)} points complete")
    if all_sampled:
        check_against_raw(path, points)
    timings.append((f"{arch}: {len(cases)} criteria and elements vs numpy",
                    time.monotonic() - start))
    check_planted(path, truth)
    return path


def main():
    for tool in (DRIVER, SYNTH, AT_FEED):
        if not os.access(tool, os.X_OK):
            print(f"FAIL: {tool} not built (top_builddir={TOP_BUILDDIR})")
            return 1
    source = make_zstd_filter_available()
    if source is None:
        print("FAIL: no HDF5 zstd filter (32015) for h5py: neither hdf5plugin nor the build's libh5zstd")
        return 1
    print(f"# zstd filter 32015: {source}")
    totals, timings = {}, []
    with tempfile.TemporaryDirectory(prefix="acttrace-criteria-") as tmp:
        tiny = run_trace(tmp, "tiny", 256, 0, 256, CASES, ELEMENT_CASES, totals, timings)
        run_trace(tmp, "mamba-130m", 64, 1, 64, CASES, ELEMENT_CASES, totals, timings)
        run_trace(tmp, "llama-1b", 32, 2, 4, LARGE_CASES, ELEMENT_CASES[1:3], totals, timings)
        start = time.monotonic()
        path, truth = synth(tmp, "recurrent-gemma-2b", 64, 3, 0)
        check_planted(path, truth)
        timings.append(("recurrent-gemma-2b --tokens 64: synth + grand-mean", time.monotonic() - start))
        check_bad_input(tmp, tiny)
    check.context = "coverage"
    for method in list(METHODS) + ["elements ratio", "elements massive"]:
        check.ok(totals.get(method, 0) > 0, f"{method} flagged nothing in any case: vacuous test")
    print("# flagged in all: " + ", ".join(f"{m} {n}" for m, n in totals.items()))
    for what, seconds in timings:
        print(f"# {seconds:6.2f} s  {what}")
    print(f"{check.checks} checks, {len(check.failures)} failed")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
