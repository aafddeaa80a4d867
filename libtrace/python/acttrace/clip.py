"""clip.py: clamp chosen channels at chosen recording points in the forward
pass, and count what was clipped (the clipping study's clip rate).

Bounds come from a table, one row per (point, channel):

    point<TAB>channel<TAB>lower<TAB>upper
    layers.3.mlp.down_proj.in<TAB>1187<TAB>-4.25<TAB>6.5

Channel c of the point's tensor is replaced by min(max(x, lower), upper)
(NaN stays NaN); every other channel and every other tensor is left bit for
bit as it was.  Bounds are applied in the tensor's own dtype, rounded inward
(lower up, upper down), so a clipped value never leaves [lower, upper] and a
value is clipped exactly when it lies outside [lower, upper].

Clip rate (per point): clipped elements / all elements the point's tensors
had, over every forward while the hooks were on."""
import math
import os
from dataclasses import dataclass

import torch

from . import _hooks
from ._lib import Error
from ._tables import read_table
from .catalogue import module_at, points as catalogue_points, resolve_name
from .writer import CONV

BOUNDS_COLUMNS = ("point", "channel", "lower", "upper")
REPORT_COLUMNS = ("point", "channels", "clipped", "total", "clip_rate")


def _parse_bound(text, what, where):
    try:
        value = float(text)
    except ValueError:
        raise Error(f"{where}: {what} '{text}' is not a number") from None
    if math.isnan(value):
        raise Error(f"{where}: {what} is NaN")
    return value


def read_bounds(path):
    """Read a bounds table (TSV with the header point, channel, lower, upper;
    other columns are ignored, '#' lines and blank lines skipped) into
    {point: {channel: (lower, upper)}}.  Errors name the file and line."""
    path, rows = read_table(path, BOUNDS_COLUMNS, "bounds table")
    bounds = {}
    for n, row in rows:
        where = f"{path}:{n}"
        point = row["point"].strip()
        try:
            channel = int(row["channel"])
        except ValueError:
            raise Error(f"{where}: channel '{row['channel']}' is not an integer") from None
        lower = _parse_bound(row["lower"], "lower", where)
        upper = _parse_bound(row["upper"], "upper", where)
        if not point:
            raise Error(f"{where}: empty point name")
        if channel < 0:
            raise Error(f"{where}: negative channel {channel}")
        if lower > upper:
            raise Error(f"{where}: lower {lower!r} > upper {upper!r}")
        per_point = bounds.setdefault(point, {})
        if channel in per_point:
            raise Error(f"{where}: point '{point}' channel {channel} given twice")
        per_point[channel] = (lower, upper)
    return bounds


def write_bounds(path, bounds):
    """Write {point: {channel: (lower, upper)}} as a bounds table."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(BOUNDS_COLUMNS) + "\n")
        for point, channels in bounds.items():
            for channel, (lower, upper) in sorted(channels.items()):
                f.write(f"{point}\t{channel}\t{lower!r}\t{upper!r}\n")


# ---------------------------------------------------------------- rounding inward

def _next_toward(t, up):
    """The neighbour of a one-element float tensor in its own dtype."""
    if t.dtype in (torch.float32, torch.float64):
        return torch.nextafter(t, torch.full_like(t, math.inf if up else -math.inf))
    # float16, bfloat16: sign-magnitude bit patterns, one step of the magnitude.
    bits = int(t.view(torch.int16).item()) & 0xFFFF
    negative, magnitude = bits >> 15, bits & 0x7FFF
    if magnitude == 0:
        bits = 0x0001 if up else 0x8001
    elif (negative == 0) == up:
        bits = bits + 1
    else:
        bits = bits - 1
    signed = bits - 0x10000 if bits >= 0x8000 else bits
    return torch.tensor([signed], dtype=torch.int16).view(t.dtype)


def round_inward(value, dtype, up):
    """value rounded to dtype toward +inf (up) or -inf: the bound a tensor of
    that dtype is compared and clamped with."""
    t = torch.tensor([value], dtype=torch.float64).to(dtype)
    rounded = float(t.item())
    if (up and rounded < value) or (not up and rounded > value):
        t = _next_toward(t, up)
    return float(t.item())


@dataclass
class _ClipPoint:
    name: str
    module: str
    direction: str
    layout: str
    channels: list
    lower: list
    upper: list
    clipped: object = 0  # a device tensor while counting, summed lazily
    total: int = 0


class Clip:
    """Clipping hooks in place; see clip()."""

    def __init__(self, model, bounds, catalogue="auto"):
        if isinstance(bounds, (str, os.PathLike)):
            bounds = read_bounds(bounds)
        if not isinstance(bounds, dict) or not bounds:
            raise Error("clip: no bounds")
        self.model = model
        self.catalogue = resolve_name(model, catalogue)
        known = {p.name: p for p in catalogue_points(model, self.catalogue)}
        self.points = []
        for name, per_channel in bounds.items():
            p = known.get(name)
            if p is None:
                raise Error(f"clip: the '{self.catalogue}' catalogue has no point '{name}' "
                            "in this model")
            channels = sorted(per_channel)
            bad = [c for c in channels if not 0 <= c < p.channels]
            if bad:
                raise Error(f"clip: point '{name}' has {p.channels} channels, bounds name "
                            f"channel {bad[0]}")
            for c in channels:
                lo, hi = per_channel[c]
                if not lo <= hi:
                    raise Error(f"clip: point '{name}' channel {c}: lower {lo!r} > upper {hi!r}")
            self.points.append(_ClipPoint(
                name=name, module=p.module, direction=p.direction, layout=p.layout,
                channels=channels, lower=[float(per_channel[c][0]) for c in channels],
                upper=[float(per_channel[c][1]) for c in channels]))
        self._cache = {}
        self._handles = []

    def __enter__(self):
        try:
            self._handles.extend(_hooks.force_reference_paths(self.model))
            for cp in self.points:
                module = module_at(self.model, cp.module)
                if cp.direction == "in":
                    self._handles.append(_hooks.register_pre(module, self._in_hook(cp)))
                else:
                    self._handles.append(_hooks.register_post(module, self._out_hook(cp)))
        except BaseException:
            _hooks.remove_all(self._handles)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        _hooks.remove_all(self._handles)
        return False

    # ------------------------------------------------------------ clamping
    def _tables(self, cp, x):
        """Channel index, lower and upper bounds for x's device and dtype,
        shaped to broadcast against x's selected channels."""
        key = (cp.name, x.device, x.dtype, cp.layout)
        found = self._cache.get(key)
        if found is None:
            index = torch.tensor(cp.channels, dtype=torch.long, device=x.device)
            lower = [round_inward(v, x.dtype, up=True) for v in cp.lower]
            upper = [round_inward(v, x.dtype, up=False) for v in cp.upper]
            lower = torch.tensor(lower, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
            upper = torch.tensor(upper, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
            if cp.layout == CONV:
                lower, upper = lower.reshape(-1, 1), upper.reshape(-1, 1)
            found = self._cache[key] = (index, lower, upper)
        return found

    def _clamp(self, cp, x, length=None):
        if not x.is_floating_point():
            raise Error(f"clip: point '{cp.name}': tensor of dtype {x.dtype}")
        dim = 1 if cp.layout == CONV else x.dim() - 1
        index, lower, upper = self._tables(cp, x)
        with torch.no_grad():
            chosen = x.index_select(dim, index)
            counted = chosen[..., :length] if length is not None else chosen
            outside = (counted < lower) | (counted > upper)
            cp.clipped = cp.clipped + outside.sum()
            cp.total += (x[..., :length] if length is not None else x).numel()
            clamped = torch.minimum(torch.maximum(chosen, lower), upper)
            y = x.clone()
            y.index_copy_(dim, index, clamped)
        return y

    def _in_hook(self, cp):
        def hook(module, args, kwargs):
            where, x = _hooks.find_input(args, kwargs)
            if x is None:
                raise Error(f"clip: point '{cp.name}': {cp.module} got no tensor input")
            y = self._clamp(cp, x)
            kind, key = where
            if kind == "arg":
                args = args[:key] + (y,) + args[key + 1:]
            else:
                kwargs = dict(kwargs)
                kwargs[key] = y
            return args, kwargs
        return hook

    def _out_hook(self, cp):
        def hook(module, args, kwargs, output):
            where, y = _hooks.find_output(output)
            if y is None:
                raise Error(f"clip: point '{cp.name}': {cp.module} returned no tensor")
            length = _hooks.conv_length(args, kwargs) if cp.layout == CONV else None
            return _hooks.replace_output(output, where, self._clamp(cp, y, length))
        return hook

    # ------------------------------------------------------------ report
    def counts(self):
        """{point: (clipped elements, all elements)} so far."""
        return {cp.name: (int(cp.clipped), cp.total) for cp in self.points}

    def rates(self):
        """{point: clipped / all elements} (NaN before any forward)."""
        return {name: (c / n if n else math.nan) for name, (c, n) in self.counts().items()}

    def report(self, out):
        """Write the counts as a table (TSV, columns REPORT_COLUMNS) to a file
        object."""
        out.write("\t".join(REPORT_COLUMNS) + "\n")
        for cp in self.points:
            clipped, total = int(cp.clipped), cp.total
            rate = f"{clipped / total:.9g}" if total else "nan"
            out.write(f"{cp.name}\t{len(cp.channels)}\t{clipped}\t{total}\t{rate}\n")


def clip(model, bounds, catalogue="auto"):
    """Clamp channels in the forward pass, inside a with block:

        with acttrace.clip(model, "bounds.tsv") as clipper:
            model(input_ids)
        clipper.rates()

    bounds: a bounds table's path, or {point: {channel: (lower, upper)}}.
    Points are named as the catalogue names them (acttrace.points); an
    unknown point or an out-of-range channel is an Error before any hook."""
    return Clip(model, bounds, catalogue)
