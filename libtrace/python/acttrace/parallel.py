"""parallel.py: where a tensor-parallel model's recording points lie on each
rank (acttrace-format(5), CHANNEL SLICES).

transformers marks the modules it shards in a plan: model._tp_plan (paths
from the model, "model.layers.*.self_attn.q_proj": "colwise") and
model.config.base_model_tp_plan (paths from the base model, "layers.*.mlp.
down_proj": "rowwise"); "*" stands for a layer number.  Loaded with
tp_plan="auto", a "colwise" Linear keeps its full out_features but holds rows
[rank w, (rank+1) w) of the weight, so that its output is channels
[rank w, (rank+1) w) of the whole output; a "rowwise" Linear holds the same
columns and takes that slice as its input, and its output is whole after the
all-reduce.  The plan is on every transformers model whether it is sharded
or not: a module counts as sharded when its weight (local part of a DTensor,
or the plain tensor) is 1/world of its full width, whole when it is full
width, and anything else is an error.

Under tensor parallelism each rank records the slices it holds; a tensor
whole on every rank (a row-parallel output, norms, the residual stream, the
embeddings) is recorded by rank 0 alone (replicated); trace-merge puts the
ranks together."""
from dataclasses import dataclass

import torch

from ._lib import Error

COLWISE = "colwise"
ROWWISE = "rowwise"


@dataclass(frozen=True)
class Slice:
    """What one rank records of a point: channels [offset, offset + channels)
    of a tensor full_channels wide; replicated: whole, rank 0's alone."""
    offset: int
    channels: int
    full_channels: int
    replicated: bool


def _plan_entries(model):
    """(pattern, style) of the model's plan, patterns from the model."""
    entries = dict(getattr(model, "_tp_plan", None) or {})
    config = getattr(model, "config", None)
    base_plan = getattr(config, "base_model_tp_plan", None) or {}
    prefix = getattr(model, "base_model_prefix", "")
    base = prefix if prefix and isinstance(getattr(model, prefix, None), torch.nn.Module) else ""
    for pattern, style in base_plan.items():
        entries.setdefault(f"{base}.{pattern}" if base else pattern, style)
    return entries


def _generic(path):
    """A module path with its layer numbers as "*", the plan's spelling."""
    return ".".join("*" if part.isdigit() else part for part in path.split("."))


def _style_name(style):
    """A plan's style as a name: transformers writes strings ("colwise",
    "local_rowwise", ...), later versions objects with a kind, torch's
    parallelize_module plans ColwiseParallel() and RowwiseParallel()."""
    if isinstance(style, str):
        return style
    kind = getattr(style, "kind", None)
    if isinstance(kind, str):
        return kind
    name = type(style).__name__.lower()
    return next((k for k in (COLWISE, ROWWISE) if name.startswith(k)), name)


def style_of(plan, module_path):
    """The plan's style for a module ("colwise", "rowwise", ...), or None."""
    style = plan.get(_generic(module_path)) if module_path else None
    return None if style is None else _style_name(style)


def local(tensor):
    to_local = getattr(tensor, "to_local", None)  # a DTensor's shard on this rank
    return to_local() if callable(to_local) else tensor


def _sharded_width(module, style, full, world, where):
    """The width of this rank's slice of a planned module (full when it is
    not sharded at all), from its weight."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return full
    width = local(weight).shape[0 if style == COLWISE else 1]
    if width == full:
        return full
    if width * world != full:
        raise Error(f"tensor parallel: {where} ({style}) holds {width} of {full} channels on "
                    f"each of {world} ranks: not an even split acttrace can place")
    return width


def layout(model, points, rank, world):
    """({point name: Slice} for this rank, {sharded module path: style}), or
    None when the model is not tensor-parallel (one process, no plan, or no
    planned module at a recording point sharded).
    Other styles (packed, gathered, vocabulary-parallel) are taken as whole:
    where that is wrong, the observed tensor's width says so (check_width)."""
    if world <= 1:
        return None
    plan = _plan_entries(model)
    if not plan:
        return None
    out, sharded = {}, {}
    for p in points:
        whole = Slice(0, p.channels, p.channels, True)
        style = style_of(plan, p.module)
        if style is None:
            out[p.name] = whole
            continue
        base = style.replace("local_", "")
        if base not in (COLWISE, ROWWISE) or p.direction != ("out" if base == COLWISE else "in"):
            out[p.name] = whole  # a colwise input, a rowwise output (all-reduced), ...
            continue
        width = _sharded_width(_module(model, p.module), base, p.channels, world, p.module)
        if width == p.channels:
            out[p.name] = whole
            continue
        sharded[p.module] = base
        out[p.name] = Slice(rank * width, width, p.channels, False)
    return (out, sharded) if sharded else None


def _module(model, path):
    module = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


def check_width(point, slice_, tensor_channels, path):
    """The observed tensor's width must be the slice's: a mismatch means the
    plan or the split is not what layout() took it for."""
    if tensor_channels == slice_.channels:
        return
    held = "the whole tensor" if slice_.channels == slice_.full_channels else \
        f"channels {slice_.offset} to {slice_.offset + slice_.channels - 1} of " \
        f"{slice_.full_channels} on this rank"
    raise Error(f"{path}: point '{point.name}': the tensor has {tensor_channels} channels, "
                f"expected {slice_.channels} ({held}): the tensor-parallel plan does not "
                f"describe how this model is split")


def whole_weight(module, style, world, dist):
    """A sharded weight put back together on every rank (a collective: every
    rank calls it, in the same order), for rank 0 to summarise."""
    weight = module.weight.detach()
    full_tensor = getattr(weight, "full_tensor", None)
    if callable(full_tensor):
        return full_tensor()
    parts = [torch.empty_like(weight) for _ in range(world)]
    dist.all_gather(parts, weight.contiguous())
    return torch.cat(parts, dim=0 if style == COLWISE else 1)
