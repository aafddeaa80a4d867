"""test_python_capture.py: acttrace.capture on tiny models in the shape of each
catalogue (Llama-style, GPT-2, Mamba-like, RecurrentGemma-like with its conv1d
output in [B, C, T]) against numpy, and hooks that leave no trace.

1. Statistics.  Plain torch hooks, registered by this test on the modules
   the catalogue specification names (not through acttrace), keep every
   recorded tensor as float64.  After three forwards of different shapes
   (positional input_ids, keyword input_ids, tokens named with
   acttrace.tokens), the trace read with h5py must hold, per point:
   count, nonfinite, min, max, absmax, hist, extremes: exact;
   mean, m2..m4: rel. 1e-9 of their scales (see test_accum_numpy.py);
   abssum: rel. 1e-9; sampled rows and their tokens: exactly the rows the
   policy names (every:3, and first:2 with explicit positions), bit for bit;
   /tokens: the ids, sequence numbers and positions of the forwards;
   /weights: row/column absmax exact, absmean rel. 1e-12, vectors whole.
   Also in bfloat16 (Llama), and float16, float64 and strided tensors
   through acttrace.Writer directly.
2. Hooks leave no trace: outputs after a capture (left normally or by an
   exception) and after clipping are bit-identical to those of a copy that
   was never hooked; no hook remains on any module.
3. Clipping: acttrace.clip with a bounds table equals a plain clamp hook
   bit for bit, counts what falls outside the bounds, and composes with a
   capture (which then sees clipped values).
"""
import copy
import math
import os
import sys
import tempfile
import time

from test_python_models import (MODELS, VOCAB, Checker, acttrace, expected_points, module_at,
                                tiny_llama, tiny_mamba, tiny_recurrent_gemma)

import torch  # noqa: E402

try:
    import h5py
    import numpy as np
    from testlib import HIST_BINS, make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

check = Checker()


# ---------------------------------------------------------------- references

class Recorder:
    """Plain torch hooks at the specified modules: every tensor as float64
    rows [tokens, C] in token order (conv outputs trimmed to the input's T
    and transposed)."""

    def __init__(self, model, expected):
        self.rows = {}
        self.handles = []
        for name, _, _, _, path, direction, channels, layout in expected:
            self.rows[name] = []
            module = module_at(model, path)
            if direction == "in":
                self.handles.append(module.register_forward_pre_hook(self._pre(name, channels)))
            else:
                self.handles.append(module.register_forward_hook(self._post(name, channels, layout)))

    def _keep(self, name, x, channels):
        self.rows[name].append(x.detach().to(torch.float64).reshape(-1, channels).numpy().copy())

    def _pre(self, name, channels):
        def hook(module, args):
            self._keep(name, args[0], channels)
        return hook

    def _post(self, name, channels, layout):
        def hook(module, args, output):
            y = output[0] if isinstance(output, tuple) else output
            if layout == "conv":
                y = y[..., :args[0].shape[-1]].transpose(1, 2)
            self._keep(name, y, channels)
        return hook

    def data(self, name):
        return np.concatenate(self.rows[name], axis=0)

    def remove(self):
        for h in self.handles:
            h.remove()


def hist_reference(x):
    edges = np.power(2.0, -24 + np.arange(193, dtype=np.float64) / 4)
    a = np.abs(x)
    finite = np.isfinite(a)
    bins = np.full(a.shape, -1, dtype=np.int64)
    bins[finite & (a == 0)] = 0
    bins[finite & (a > 0) & (a < edges[0])] = 1
    logged = finite & (a >= edges[0])
    bins[logged] = 2 + np.searchsorted(edges, a[logged], side="right") - 1
    return np.stack([np.bincount(bins[:, c][bins[:, c] >= 0], minlength=HIST_BINS)
                     for c in range(x.shape[1])])


def channel_reference(x):
    ref = {"count": np.isfinite(x).sum(axis=0).astype(np.uint64)}
    ref["nonfinite"] = (x.shape[0] - ref["count"]).astype(np.uint64)
    keys = ("mean", "m2", "m3", "m4", "s2", "s3", "s4", "abssum", "min", "max", "absmax")
    for k in keys:
        ref[k] = np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        v = x[:, c][np.isfinite(x[:, c])]
        if v.size == 0:
            ref["min"][c] = ref["max"][c] = ref["absmax"][c] = np.nan
            continue
        mean = math.fsum(v) / v.size
        d = v - mean
        ref["mean"][c] = mean
        for k in (2, 3, 4):
            ref[f"m{k}"][c] = math.fsum(d ** k)
            ref[f"s{k}"][c] = math.fsum(np.abs(d) ** k)
        ref["abssum"][c] = math.fsum(np.abs(v))
        ref["min"][c], ref["max"][c], ref["absmax"][c] = v.min(), v.max(), np.abs(v).max()
    return ref


def moment_tolerances(ref, rtol=1e-9):
    """rtol of each moment's scale S_k = sum |x - mean|^k, plus what an error
    of 1e-12 max|x| in the mean does to it (test_accum_numpy.py explains)."""
    dmu = 1e-12 * np.nan_to_num(ref["absmax"], nan=0.0)
    n = ref["count"].astype(np.float64)
    s1 = np.sqrt(n * ref["s2"])
    return {"mean": rtol * np.abs(ref["mean"]) + dmu,
            "m2": rtol * ref["s2"] + n * dmu ** 2,
            "m3": rtol * ref["s3"] + 3 * np.abs(ref["m2"]) * dmu + 3 * s1 * dmu ** 2,
            "m4": rtol * ref["s4"] + 4 * np.abs(ref["m3"]) * dmu + 6 * ref["s2"] * dmu ** 2}


def extremes_reference(x, k):
    tokens, channels = np.nonzero(np.isfinite(x))
    values = x[tokens, channels]
    order = np.lexsort((channels, tokens, -np.abs(values)))[:k]
    return values[order], tokens[order], channels[order]


def equal(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    if not check.ok(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"):
        return
    same = (got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else got == want
    bad = np.flatnonzero(~np.asarray(same).reshape(-1))
    check.ok(bad.size == 0, f"{what}: {bad.size} differ, first [{bad[:1].tolist()}]: got "
             f"{got.reshape(-1)[bad[:2]].tolist()} want {want.reshape(-1)[bad[:2]].tolist()}")


def close(got, want, tol, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if not check.ok(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"):
        return
    with np.errstate(invalid="ignore"):
        good = (np.abs(got - want) <= tol) | (np.isnan(got) & np.isnan(want)) | (got == want)
    bad = np.flatnonzero(~good.reshape(-1))
    check.ok(bad.size == 0, f"{what}: {bad.size} off, first [{bad[:1].tolist()}]: got "
             f"{got.reshape(-1)[bad[:1]].tolist()} want {want.reshape(-1)[bad[:1]].tolist()}")


def float32_bits(a):
    a = np.asarray(a, dtype=np.float32).copy()
    a[np.isnan(a)] = np.float32("nan")
    return a.view(np.uint32)


# ---------------------------------------------------------------- the forwards

FORWARDS = [
    # (B, T, how the ids reach the model)
    (2, 5, "positional"),
    (3, 4, "keyword"),
    (1, 7, "tokens"),  # acttrace.tokens(ids, seq=50, pos=3..9), then model(ids)
]
EXPLICIT_SEQ, EXPLICIT_POS0 = 50, 3


def run_forwards(model, seed):
    """Run FORWARDS under whatever hooks are on; returns the expected /tokens
    columns (seq, pos, id)."""
    g = torch.Generator().manual_seed(seed)
    seqs, poss, idss = [], [], []
    next_seq = 0
    for batches, length, how in FORWARDS:
        ids = torch.randint(0, VOCAB, (batches, length), generator=g)
        with torch.no_grad():
            if how == "positional":
                model(ids)
            elif how == "keyword":
                model(input_ids=ids)
            else:
                pos = torch.arange(EXPLICIT_POS0, EXPLICIT_POS0 + length)
                acttrace.tokens(ids, seq=EXPLICIT_SEQ, pos=pos)
                model(ids)
        if how == "tokens":
            seq = np.repeat(np.arange(EXPLICIT_SEQ, EXPLICIT_SEQ + batches), length)
            pos = np.tile(np.arange(EXPLICIT_POS0, EXPLICIT_POS0 + length), batches)
            next_seq = max(next_seq, EXPLICIT_SEQ + batches)
        else:
            seq = np.repeat(np.arange(next_seq, next_seq + batches), length)
            pos = np.tile(np.arange(length), batches)
            next_seq += batches
        seqs.append(seq)
        poss.append(pos)
        idss.append(ids.numpy().reshape(-1))
    return np.concatenate(seqs), np.concatenate(poss), np.concatenate(idss)


def selected(policy, n, seq, pos):
    g = np.arange(seq.size)
    return g[g % n == 0] if policy == "every" else g[pos < n]


# ---------------------------------------------------------------- checks

def check_point(g, point, x, policy, n, seq, pos):
    name = point[0]
    for attr, want in (("layer", point[1]), ("component", point[2]), ("site", point[3]),
                       ("module", point[4]), ("direction", point[5]), ("channels", point[6])):
        got = g.attrs.get(attr)
        got = got.decode() if isinstance(got, bytes) else got
        check.ok(got == want, f"{name}: attribute {attr} = {got!r}, expected {want!r}")
    ref = channel_reference(x)
    for k in ("count", "nonfinite"):
        equal(g[k][()], ref[k], f"{name}/{k}")
    for k in ("min", "max", "absmax"):
        equal(g[k][()], ref[k], f"{name}/{k}")
    tol = moment_tolerances(ref)
    for k in ("mean", "m2", "m3", "m4"):
        close(g[k][()], ref[k], tol[k], f"{name}/{k}")
    close(g["abssum"][()], ref["abssum"], 1e-9 * ref["abssum"], f"{name}/abssum")
    equal(g["hist"][()], hist_reference(x), f"{name}/hist")
    ext = g["extremes"][()]
    values, tokens, channels = extremes_reference(x, 64)
    equal(ext["value"], values, f"{name}/extremes.value")
    equal(ext["token"], tokens, f"{name}/extremes.token")
    equal(ext["channel"], channels, f"{name}/extremes.channel")
    rows = selected(policy, n, seq, pos)
    equal(g["sample_tokens"][()], rows, f"{name}/sample_tokens")
    equal(float32_bits(g["samples"][()]), float32_bits(x[rows]), f"{name}/samples")


def check_weights(f, model, expected):
    seen = set()
    for point in expected:
        path = point[4]
        if not path or path in seen:
            continue
        seen.add(path)
        module = module_at(model, path)
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor):
            check.ok(path not in f["weights"], f"/weights/{path}: a module without weight")
            continue
        w = w.detach().to(torch.float64).numpy()
        if type(module).__name__ == "Conv1D":
            w = w.T
        w = w.reshape(1, -1) if w.ndim == 1 else w.reshape(w.shape[0], -1)
        g = f.get(f"weights/{path}")
        if not check.ok(g is not None, f"/weights/{path} exists"):
            continue
        a = np.abs(w)
        equal(g["row_absmax"][()], a.max(axis=1), f"/weights/{path}/row_absmax")
        equal(g["col_absmax"][()], a.max(axis=0), f"/weights/{path}/col_absmax")
        close(g["row_absmean"][()], a.mean(axis=1), 1e-12 * a.mean(axis=1), f"/weights/{path}/row_absmean")
        close(g["col_absmean"][()], a.mean(axis=0), 1e-12 * a.mean(axis=0), f"/weights/{path}/col_absmean")
        sumsq = (w * w).sum(axis=1)
        close(g["row_sumsq"][()], sumsq, 1e-12 * sumsq, f"/weights/{path}/row_sumsq")
        if w.shape[0] == 1:
            equal(g["values"][()], w.reshape(-1).astype(np.float32), f"/weights/{path}/values")


def capture_case(tmp, label, model, expected_fn, policy, n, dtype=None):
    check.context = label
    if dtype is not None:
        model = model.to(dtype)
    expected = expected_points(model, expected_fn)
    recorder = Recorder(model, expected)
    path = os.path.join(tmp, f"{label}.h5")
    with acttrace.capture(model, path, sample=f"{policy}:{n}") as cap:
        seq, pos, ids = run_forwards(model, seed=len(label))
    recorder.remove()
    check.ok(cap.forwards == len(FORWARDS), f"{cap.forwards} forwards seen")
    with h5py.File(path, "r") as f:
        check.ok(f.attrs["complete"] == 1, "complete = 1")
        check.ok(f.attrs["sample_policy"] == policy.encode() or f.attrs["sample_policy"] == policy,
                 f"sample_policy {f.attrs['sample_policy']!r}")
        if dtype is not None:
            got = f.attrs["source_dtype"]
            got = got.decode() if isinstance(got, bytes) else got
            check.ok(got == str(dtype).replace("torch.", ""), f"source_dtype {got}")
        equal(f["tokens/seq"][()], seq, "/tokens/seq")
        equal(f["tokens/pos"][()], pos, "/tokens/pos")
        equal(f["tokens/id"][()], ids, "/tokens/id")
        names = sorted(f["points"], key=lambda p: f["points"][p].attrs["order"])
        check.ok(names == [p[0] for p in expected], f"points in the trace: {names[:4]}...")
        for point in expected:
            x = recorder.data(point[0])
            check.ok(x.shape[0] == seq.size, f"{point[0]}: reference has {x.shape[0]} rows")
            check_point(f["points"][point[0]], point, x, policy, n, seq, pos)
        check_weights(f, model, expected)


def writer_case(tmp):
    """float16, float64 (rounded to float32), a [B, C, T] view and a 4-D
    non-contiguous tensor through acttrace.Writer."""
    check.context = "writer"
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 6, 10, generator=g) * 3
    cases = [
        ("f16", base.half(), acttrace.ROWS),                               # [3, 6, 10]
        ("f64", base.double()[:, ::2, :], acttrace.ROWS),                  # strided rows
        ("conv", base.bfloat16().transpose(1, 2)[:, :, :4], acttrace.CONV),  # [3, 10, 4] as [B, C, T]
        ("4d", base.reshape(3, 6, 2, 5).transpose(0, 1), acttrace.ROWS),   # [6, 3, 2, 5]
    ]
    path = os.path.join(tmp, "writer.h5")
    refs = {}
    with acttrace.Writer(path, sample="every:1") as w:
        for name, t, layout in cases:
            if layout == acttrace.CONV:
                x = t.transpose(1, 2).reshape(-1, t.shape[1])
            else:
                x = t.reshape(-1, t.shape[-1])
            x64 = x.float().double().numpy() if t.dtype == torch.float64 else x.double().numpy()
            pid = w.add_point(name, channels=x.shape[1])
            base_token = w.add_tokens(torch.arange(x.shape[0]), torch.zeros(x.shape[0]),
                                      torch.arange(x.shape[0]))
            w.observe(pid, t, base_token, layout)
            refs[name] = (x64, base_token)
    with h5py.File(path, "r") as f:
        for name, (x, base_token) in refs.items():
            g = f["points"][name]
            ref = channel_reference(x)
            equal(g["min"][()], ref["min"], f"{name}/min")
            equal(g["max"][()], ref["max"], f"{name}/max")
            close(g["mean"][()], ref["mean"], moment_tolerances(ref)["mean"], f"{name}/mean")
            close(g["m2"][()], ref["m2"], moment_tolerances(ref)["m2"], f"{name}/m2")
            equal(g["hist"][()], hist_reference(x), f"{name}/hist")
            equal(g["sample_tokens"][()], base_token + np.arange(x.shape[0]), f"{name}/sample_tokens")
            equal(float32_bits(g["samples"][()]), float32_bits(x), f"{name}/samples")


# ---------------------------------------------------------------- no trace left

def hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def same_bits(a, b):
    """Equal bit for bit (so -0.0 differs from 0.0 and NaN equals itself)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = _INT_OF_SIZE[a.element_size()]
    return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))


def no_trace_case(tmp, name, build):
    check.context = f"no trace: {name}"
    model = build()
    pristine = copy.deepcopy(model)  # never hooked
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = hook_counts(model)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = pristine(ids)
        with acttrace.capture(model, os.path.join(tmp, f"nt-{name}.h5"), sample="every:2"):
            inside = model(ids)
        check.ok(same_bits(inside, want), "output under capture is bit-identical")
        check.ok(same_bits(model(ids), want), "output after a capture is bit-identical")
        check.ok(hook_counts(model) == hooks_before, "no hook left after a capture")
        path = os.path.join(tmp, f"nt-{name}-boom.h5")
        try:
            with acttrace.capture(model, path):
                model(ids)
                raise KeyboardInterrupt  # the harshest way out of the block
        except KeyboardInterrupt:
            pass
        check.ok(hook_counts(model) == hooks_before, "no hook left after an exception")
        check.ok(same_bits(model(ids), want), "output after an exception is bit-identical")
        with h5py.File(path, "r") as f:
            check.ok(f.attrs["complete"] == 0, "a capture left by an exception is incomplete")
        point = acttrace.points(model)[-1]
        with acttrace.clip(model, {point.name: {0: (-1e-3, 1e-3)}}) as clipper:
            clipped = model(ids)
        check.ok(not same_bits(clipped, want), "clipping changes the output")
        check.ok(hook_counts(model) == hooks_before, "no hook left after clipping")
        check.ok(same_bits(model(ids), want), "output after clipping is bit-identical")
        check.ok(clipper.counts()[point.name][0] > 0, "clipping counted something")
    check.ok(all(torch.equal(state[k], v) for k, v in model.state_dict().items()),
             "parameters and buffers unchanged")


# ---------------------------------------------------------------- weights on the device

def device_summary_case(tmp):
    """Weights summarised by torch where they live (what a GPU model gets, run
    here on the CPU: add_weight(where="device")) equal numpy's float64."""
    check.context = "weights summarised where they live"
    original = acttrace.Writer.add_weight

    def on_device(self, module, module_class, weight, transposed=False, where=None):
        return original(self, module, module_class, weight, transposed, where="device")
    acttrace.Writer.add_weight = on_device
    try:
        for name, (build, expected_fn) in MODELS.items():
            model = build()
            expected = expected_points(model, expected_fn)
            path = os.path.join(tmp, f"weights-device-{name}.h5")
            with torch.no_grad(), acttrace.capture(model, path):
                model(torch.randint(0, VOCAB, (1, 4), generator=torch.Generator().manual_seed(1)))
            with h5py.File(path, "r") as f:
                check_weights(f, model, expected)
    finally:
        acttrace.Writer.add_weight = original


def overlap_case(tmp):
    """overlap=True: the version watch names tensors changed in place after
    their observation while they live, forgets freed ones, and reports each
    change once (the side stream itself needs a GPU: bench-llama's
    capture-overlap); a capture with overlap on the CPU equals one without."""
    check.context = "overlap"
    from acttrace.writer import Overlap
    o = Overlap()
    a, b = torch.zeros(3), torch.zeros(3)
    o.watch(a, 1)
    o.watch(b, 2)
    a.add_(1)  # changed while alive
    c = torch.zeros(2)
    o.watch(c, 3)  # a later observation looks at a and b
    del c  # freed unchanged: forgotten
    check.ok(o.changed() == [1], "an in-place change after observation is named")
    b.mul_(2)
    check.ok(o.changed() == [2] and o.changed() == [], "each change once")
    with torch.inference_mode():
        d = torch.zeros(2)
        o.watch(d, 4)  # no version to watch: not an error
        d.add_(1)
    check.ok(o.changed() == [], "inference tensors are not watched")
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))
    paths = [os.path.join(tmp, f"overlap-{flag}.h5") for flag in (False, True)]
    for flag, path in zip((False, True), paths):
        with torch.no_grad(), acttrace.capture(model, path, overlap=flag, weights=False):
            model(ids)
    with h5py.File(paths[0], "r") as f0, h5py.File(paths[1], "r") as f1:
        for name in ("layers.0.mlp.down_proj.in", "final_norm.out"):
            for stat in ("count", "mean", "m2", "max"):
                check.ok(np.array_equal(f0["points"][name][stat][()], f1["points"][name][stat][()]),
                         f"{name} {stat}: the same with and without overlap")


# ---------------------------------------------------------------- dedup

# (point, the point before it that saw the very same tensor) in the tiny
# Llama's default catalogue; same_tensor_pairs_case checks it by identity
SAME_TENSOR_PAIRS = {("layers.0.layer.in", "embed_tokens.out"),
                     ("layers.0.input_layernorm.in", "layers.0.layer.in"),
                     ("layers.1.layer.in", "layers.0.layer.out"),
                     ("layers.1.input_layernorm.in", "layers.1.layer.in"),
                     ("final_norm.in", "layers.1.layer.out")}


def recent_case():
    """Recent (capture's dedup): the same object, alive and unchanged, with
    the same layout and token_base, names its point; anything else does not."""
    check.context = "dedup: Recent"
    from acttrace.capture import Recent
    r = Recent()
    a = torch.zeros(2, 3)
    r.note(a, "rows", 0, 7)
    check.ok(r.source_of(a, "rows", 0) == 7, "the same tensor names its point")
    check.ok(r.source_of(a.view(2, 3), "rows", 0) is None, "another object (a view) does not")
    check.ok(r.source_of(a.clone(), "rows", 0) is None, "a copy does not")
    check.ok(r.source_of(a, "rows", 6) is None, "another token_base does not")
    check.ok(r.source_of(a, "conv", 0) is None, "another layout does not")
    r.note(a, "rows", 0, 8)
    check.ok(r.source_of(a, "rows", 0) == 8, "the latest observation of it is named")
    a.add_(1)
    check.ok(r.source_of(a, "rows", 0) is None, "changed in place since: not named")
    b = torch.ones(4)
    r.note(b, "rows", 0, 9)
    for i in range(Recent.SIZE):
        r.note(torch.ones(1), "rows", 0, 10 + i)
    check.ok(r.source_of(b, "rows", 0) is None, f"forgotten after {Recent.SIZE} others")
    c = torch.ones(3)
    r.note(c, "rows", 0, 20)
    ref_id = id(c)
    del c
    d = torch.ones(3)
    check.ok(id(d) != ref_id or r.source_of(d, "rows", 0) is None,
             "a freed tensor is never named, even for one at its address")
    with torch.inference_mode():
        e = torch.ones(3)
        r.note(e, "rows", 0, 21)
        check.ok(r.source_of(e, "rows", 0) is None,
                 "an inference tensor (no version to show it unchanged) is not named")
        trusting = Recent(trust=True)
        trusting.note(e, "rows", 0, 22)
        check.ok(trusting.source_of(e, "rows", 0) == 22,
                 "an inference tensor is named by identity when trusted")
    r.clear()
    check.ok(r.source_of(a, "rows", 0) is None, "cleared")


class SourceLog:
    """Wraps a capture's writer.observe_view to log (point name, source name)."""

    def __init__(self, cap):
        self.calls = []
        names = {pid: p.name for pid, p in zip(cap._point_ids, cap.points)}
        original = cap.writer.observe_view

        def observe_view(point_id, path, view, token_base, same_as=None):
            self.calls.append((names[point_id], names.get(same_as)))
            return original(point_id, path, view, token_base, same_as)
        cap.writer.observe_view = observe_view


READ_STATE = """
import sys, h5py, hdf5plugin
with h5py.File(sys.argv[1], "r", swmr=True) as f:
    print(int(f.attrs["complete"]), *(int(v) for v in f["checkpoint/state"][:]),
          f["tokens/seq"].shape[0])
"""


def read_state(path):
    """complete, /checkpoint/state and len(/tokens) of a trace that this
    process still writes, read by another process (as SWMR allows)."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", READ_STATE, path], capture_output=True,
                         text=True)
    return [int(v) for v in out.stdout.split()] if out.returncode == 0 else out.stderr


def checkpoint_seconds_case(tmp):
    """checkpoint_seconds (trace-capture --checkpoint-every): a capture with
    a tiny interval checkpoints after every forward, so that another process
    reads the trace while it is written, as of the last forward; with a long
    one nothing is checkpointed and the trace exists only as PATH.part until
    it is closed."""
    check.context = "checkpoint_seconds"
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(7))
    path = os.path.join(tmp, "seconds.h5")
    with torch.no_grad(), acttrace.capture(model, path, weights=False,
                                           checkpoint_seconds=1e-6):
        for forward in range(1, 4):
            model(ids)
            state = read_state(path)
            check.ok(isinstance(state, list) and state[0] == 0 and
                     state[2:] == [forward, 10 * forward, 10 * forward],
                     f"after forward {forward}: complete, slot, checkpoint, tokens: {state}")
    with h5py.File(path, "r") as f:
        check.ok(int(f.attrs["complete"]) == 1 and f["checkpoint/state"][0] == 0,
                 "closed: complete, statistics in slot 0")
    slow = os.path.join(tmp, "slow.h5")
    with torch.no_grad(), acttrace.capture(model, slow, weights=False, checkpoint_seconds=3600):
        model(ids)
        check.ok(not os.path.exists(slow) and os.path.exists(slow + ".part"),
                 "no checkpoint yet: only PATH.part")
    check.ok(os.path.exists(slow) and not os.path.exists(slow + ".part"), "closed: PATH")
    try:
        acttrace.capture(model, slow, checkpoint_seconds=-1)
        check.ok(False, "checkpoint_seconds=-1 accepted")
    except acttrace.Error:
        check.ok(True, "checkpoint_seconds=-1 refused")


def dedup_case(tmp):
    """capture(dedup=True) against dedup=False on the tiny Llama, under
    no_grad and inference_mode, sampling every:2: identical statistics and
    samples (read with h5py), and the sources it names are exactly the
    points that saw the same tensor just before (checked by the tensors'
    identity, with hooks of this test)."""
    check.context = "dedup"
    model = tiny_llama()
    ids = [torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(s))
           for s in (11, 12)]
    for mode in ("no_grad", "inference_mode"):
        on = True if mode == "no_grad" else "trust"  # inference tensors: identity trusted
        paths = {flag: os.path.join(tmp, f"dedup-{mode}-{flag}.h5") for flag in (False, on)}
        logs = {}
        for flag, path in paths.items():
            context = torch.no_grad if mode == "no_grad" else torch.inference_mode
            with context(), acttrace.capture(model, path, dedup=flag, weights=False,
                                             sample="every:2") as cap:
                logs[flag] = SourceLog(cap)
                for x in ids:
                    model(x)
        named = [(p, s) for p, s in logs[on].calls if s is not None]
        check.ok(all(s is None for _, s in logs[False].calls), f"{mode}: dedup=False names no source")
        check.ok(set(named) == SAME_TENSOR_PAIRS, f"{mode}: the pairs named: {sorted(set(named))}")
        check.ok(len(named) == len(SAME_TENSOR_PAIRS) * len(ids),
                 f"{mode}: {len(named)} named calls, {len(SAME_TENSOR_PAIRS)} a forward")
        with h5py.File(paths[False], "r") as f0, h5py.File(paths[on], "r") as f1:
            differ = []
            for name in f0["points"]:
                g0, g1 = f0["points"][name], f1["points"][name]
                for stat in g0:
                    a, b = g0[stat][()], g1[stat][()]
                    if a.dtype.names:
                        same = a.tobytes() == b.tobytes()
                    else:
                        same = np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
                    if not same:
                        differ.append(f"{name}/{stat}")
            check.ok(not differ, f"{mode}: every statistic and sample identical with and without "
                     f"dedup {differ[:3]}")


def same_tensor_pairs_case():
    """The pairs dedup_case expects are those where the model hands the very
    same tensor object to two recording points in a row (plain hooks of this
    test, no acttrace): so the expectation is not the code's own output."""
    check.context = "dedup: pairs by identity"
    model = tiny_llama()
    from acttrace.catalogue import points as catalogue_points
    points = catalogue_points(model, "llama")
    seen = []  # (name, tensor) in hook order
    handles = []
    for p in points:
        module = module_at(model, p.module)
        if p.direction == "in":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=p.name: seen.append((name, args[0]))))
        else:
            handles.append(module.register_forward_hook(
                lambda m, args, out, name=p.name: seen.append(
                    (name, out if isinstance(out, torch.Tensor) else out[0]))))
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1)))
    for h in handles:
        h.remove()
    pairs = {(seen[i][0], seen[i - 1][0]) for i in range(1, len(seen))
             if seen[i][1] is seen[i - 1][1]}
    check.ok(pairs == SAME_TENSOR_PAIRS, f"the tiny Llama hands these tensors on: {sorted(pairs)}")


# ---------------------------------------------------------------- fused paths

def fused_path_case(tmp):
    """A mixer with a fused path that skips its submodules (transformers'
    Mamba with mamba-ssm installed: cuda_kernels_forward never calls conv1d
    or dt_proj) runs its reference path (slow_forward) under capture and
    clip, so that every point sees data; its own forward is back after."""
    check.context = "fused path"
    model, fused = tiny_mamba(), tiny_mamba()
    for layer in fused.backbone.layers:
        mixer = layer.mixer
        own = type(mixer)

        def skipping(self, *args, **kwargs):
            raise AssertionError("the fused path ran under capture")
        mixer.__class__ = type("FusedMixer", (own,), {
            "cuda_kernels_forward": skipping, "slow_forward": own.forward,
            "forward": lambda self, *a, **k: self.cuda_kernels_forward(*a, **k)})
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(5))
    plain, patched = os.path.join(tmp, "fused-plain.h5"), os.path.join(tmp, "fused.h5")
    with torch.no_grad():
        with acttrace.capture(model, plain) as cap_plain:
            want = model(ids)
        try:
            with acttrace.capture(fused, patched) as cap:
                got = fused(ids)
        except AssertionError as e:
            check.ok(False, f"capture ran the fused path: {e}")
            return
        check.ok(same_bits(got, want), "the reference path under capture gives the plain output")
        check.ok(all(n > 0 for n in cap.observations), "every point saw data")
        check.ok(list(cap.observations) == list(cap_plain.observations),
                 "as many observations as without a fused path")
        name = "layers.0.mixer.conv1d.out"
        with acttrace.clip(fused, {name: {0: (-1e-3, 1e-3)}}) as clipper:
            fused(ids)
        check.ok(clipper.counts()[name][0] > 0, "clipping applies to a point the fused path skips")
        failed = False
        try:
            fused(ids)
        except AssertionError:
            failed = True
        check.ok(failed, "the mixer's own (fused) forward is back after capture and clip")


# ---------------------------------------------------------------- clipping

def clip_case(tmp, name, build, bounds):
    """acttrace.clip against a plain clamp hook on a copy of the model.  The
    bounds are binary fractions, exact in every dtype, so that both clamp to
    the same numbers (clip_rounding_case covers the others)."""
    check.context = f"clip: {name}"
    model = build()
    plain = copy.deepcopy(model)
    points = {p.name: p for p in acttrace.points(model)}
    table = os.path.join(tmp, f"bounds-{name}.tsv")
    with open(table, "w") as f:
        f.write("point\tchannel\tlower\tupper\tnote\n# a comment line\n")
        for point, channels in bounds.items():
            for c, (lo, hi) in channels.items():
                f.write(f"{point}\t{c}\t{lo}\t{hi}\tx\n")
    want_counts = {p: [0, 0] for p in bounds}
    handles = []
    for pname, channels in bounds.items():
        p = points[pname]
        module = module_at(plain, p.module)
        conv = p.layout == "conv"

        def clamp(x, channels=channels, pname=pname, conv=conv, length=None):
            y = x.clone()
            counted = x[..., :length] if length is not None else x
            want_counts[pname][1] += counted.numel()
            for c, (lo, hi) in channels.items():
                col = (slice(None), c) if conv else (Ellipsis, c)
                v = counted[col]
                want_counts[pname][0] += int(((v < lo) | (v > hi)).sum())
                y[col] = y[col].clamp(lo, hi)
            return y
        if p.direction == "in":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, clamp=clamp: (clamp(args[0]),) + tuple(args[1:])))
        else:
            def post(m, args, out, clamp=clamp, conv=conv):
                length = args[0].shape[-1] if conv else None
                if isinstance(out, tuple):
                    return (clamp(out[0], length=length),) + out[1:]
                return clamp(out, length=length)
            handles.append(module.register_forward_hook(post))
    ids = torch.randint(0, VOCAB, (3, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        unclipped = model(ids)
        want = plain(ids)
        with acttrace.clip(model, table) as clipper:
            got = model(ids)
        for h in handles:
            h.remove()
    check.ok(same_bits(got, want), "clipped output equals a plain clamp, bit for bit")
    check.ok(not same_bits(got, unclipped), "the bounds change the output")
    counts = clipper.counts()
    for pname, (clipped, total) in want_counts.items():
        check.ok(counts[pname] == (clipped, total),
                 f"{pname}: counted {counts[pname]}, expected {(clipped, total)}")
        check.ok(clipped > 0, f"{pname}: the test bounds clip something")

    # Under a capture (registered after the clip), the point sees clipped values.
    pname, channels = next(iter(bounds.items()))
    c, (lo, hi) = next(iter(channels.items()))
    path = os.path.join(tmp, f"clip-{name}.h5")
    with torch.no_grad(), acttrace.clip(model, table), acttrace.capture(model, path):
        model(ids)
    with h5py.File(path, "r") as f:
        g = f["points"][pname]
        check.ok(lo <= g["min"][c] and g["max"][c] <= hi,
                 f"captured channel {c} in [{g['min'][c]}, {g['max'][c]}], bounds [{lo}, {hi}]")


def clip_rounding_case():
    """Bounds not representable in bfloat16 are rounded inward."""
    check.context = "clip: rounding"
    from acttrace.clip import round_inward
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for v in (0.1, -0.1, 1 / 3, -7.3, 1e-30, 0.0, 5.0):
            up = round_inward(v, dtype, up=True)
            down = round_inward(v, dtype, up=False)
            as_dtype = lambda u: float(torch.tensor([u], dtype=torch.float64).to(dtype).item())
            check.ok(up >= v and down <= v and as_dtype(up) == up and as_dtype(down) == down,
                     f"{dtype} {v}: inward {down} .. {up}")
            check.ok(up - down <= abs(v) * 2 ** -6 + 1e-7 or up == down,
                     f"{dtype} {v}: neighbours {down} .. {up}")


def main():
    if make_zstd_filter_available() is None:
        print("SKIP: no zstd filter (32015) for h5py: set HDF5_PLUGIN_PATH to the build's hdf5-plugins")
        sys.exit(77)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="acttrace-py-") as tmp:
        for name, (build, expected) in MODELS.items():
            capture_case(tmp, f"{name}-every", build(), expected, "every", 3)
            capture_case(tmp, f"{name}-first", build(), expected, "first", 2)
        capture_case(tmp, "llama-bf16", tiny_llama(), MODELS["llama"][1], "every", 2, torch.bfloat16)
        writer_case(tmp)
        for name, (build, _) in MODELS.items():
            no_trace_case(tmp, name, build)
        clip_case(tmp, "llama", tiny_llama, {
            "layers.0.mlp.down_proj.in": {3: (-0.0625, 0.0625), 10: (-0.015625, 0.09375)},
            "layers.1.layer.out": {5: (-2.0, 2.0)},
            "final_norm.out": {17: (-0.5, 0.25)},
        })
        clip_case(tmp, "mamba", tiny_mamba, {
            "layers.0.mixer.conv1d.out": {1: (-0.125, 0.125), 30: (-0.1875, 0.0625)},
            "layers.1.mixer.out_proj.in": {2: (-0.0078125, 0.0078125)},
        })
        clip_case(tmp, "recurrent_gemma", tiny_recurrent_gemma, {
            "layers.1.recurrent.conv1d.out": {4: (-0.125, 0.125)},
            "layers.2.attention.o_proj.in": {0: (-0.0625, 0.0625)},
            "layers.0.mlp.in": {9: (-0.5, 0.5)},
        })
        clip_rounding_case()
        fused_path_case(tmp)
        device_summary_case(tmp)
        overlap_case(tmp)
        recent_case()
        same_tensor_pairs_case()
        dedup_case(tmp)
        checkpoint_seconds_case(tmp)
    print(f"# {time.time() - start:.1f} s")
    check.done("test_python_capture")


if __name__ == "__main__":
    main()
