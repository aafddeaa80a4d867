"""catalogue.py: where the recording points of a model are.

A catalogue names the tensors to record in one architecture family: for each
decoder layer a list of sites (a submodule, its input or output), plus sites
before and after the layers.  Point names follow trace-synth and the trace
format: "layers.N.<site>" inside layer N ("layers.3.mlp.up_proj.out"), the
bare site outside the layers ("final_norm.in").  Sites whose module a layer
does not have are skipped (RecurrentGemma's attention sites in its recurrent
layers, Gemma 2's extra norms in Llama).  The generic catalogue takes every
Linear and every normalisation layer instead."""
import inspect
import re
from dataclasses import dataclass

import torch

from ._lib import Error
from .writer import CONV, ROWS

COMPONENTS = ("mlp", "attention", "recurrent", "ssm", "norm", "layer", "embedding", "head",
              "other")


@dataclass(frozen=True)
class Point:
    """One recording point: a tensor at a fixed place of the model."""
    name: str          # stable dotted name, e.g. "layers.3.mlp.up_proj.out"
    layer: int         # -1 outside the layers
    component: str     # one of COMPONENTS
    site: str          # the point's type within a layer, e.g. "mlp.up_proj.out"
    module: str        # module path in the model ("" for the model itself)
    module_class: str
    direction: str     # "in": the module's first input; "out": its output
    channels: int
    layout: str = ROWS  # ROWS ([..., C]) or CONV ([B, C, T], trimmed to the input's T)


@dataclass(frozen=True)
class Site:
    site: str        # name within the layer, e.g. "mlp.up_proj.out"
    module: str      # path relative to the layer ("" = the layer itself)
    component: str
    direction: str
    width: str       # how to know the channels: "in:<path>", "out:<path>" or "hidden"
    requires: str = ""  # a module path that must exist (e.g. attention vs recurrent blocks)
    layout: str = ROWS
    called: bool = False  # kept only if the parent's forward calls the module itself


def _s(site, module, component, direction, width, requires="", layout=ROWS, called=False):
    return Site(site, module, component, direction, width, requires, layout, called)


def _parent_calls(scope, path):
    """Whether the forward of the module holding `path` calls it as a module
    ("self.conv1d(" in its source), rather than using only its weights (as
    transformers 5's Mamba mixer does with conv1d and dt_proj, whose hooks
    then never fire).  True when the source cannot be read."""
    parent_path, _, name = path.rpartition(".")
    parent = _get(scope, parent_path) if parent_path else scope
    if parent is None:
        return True
    sources = []
    for method in ("forward", "slow_forward"):
        fn = getattr(type(parent), method, None)
        try:
            sources.append(inspect.getsource(fn)) if fn else None
        except (OSError, TypeError):
            return True
    return not sources or any(f"self.{name}(" in src for src in sources)


@dataclass(frozen=True)
class Catalogue:
    name: str
    description: str
    layer_lists: tuple     # candidate paths of the ModuleList of layers
    before: tuple          # sites relative to the layers' parent, before the layers
    per_layer: tuple
    after: tuple
    embedding: str = ""    # path (relative to the parent) of the token embedding
    marker: str = ""       # a module every layer of this family has (relative to the layer)


# ---------------------------------------------------------------- Llama-style decoders
# Llama, Mistral, Qwen2/3, Gemma: pre-norm attention and gated MLP; Gemma 2's
# extra pre/post feed-forward norms are taken where they exist.
_LLAMA = Catalogue(
    name="llama",
    description="Llama-style decoders (llama, mistral, qwen2, gemma)",
    layer_lists=("model.layers", "layers", "model.model.layers"),
    embedding="embed_tokens",
    marker="self_attn",
    before=(_s("embed_tokens.out", "embed_tokens", "embedding", "out", "out:embed_tokens"),),
    per_layer=(
        _s("layer.in", "", "layer", "in", "hidden"),
        _s("input_layernorm.in", "input_layernorm", "norm", "in", "in:input_layernorm"),
        _s("input_layernorm.out", "input_layernorm", "norm", "out", "out:input_layernorm"),
        _s("self_attn.q_proj.out", "self_attn.q_proj", "attention", "out", "out:self_attn.q_proj"),
        _s("self_attn.k_proj.out", "self_attn.k_proj", "attention", "out", "out:self_attn.k_proj"),
        _s("self_attn.v_proj.out", "self_attn.v_proj", "attention", "out", "out:self_attn.v_proj"),
        _s("self_attn.o_proj.in", "self_attn.o_proj", "attention", "in", "in:self_attn.o_proj"),
        _s("self_attn.o_proj.out", "self_attn.o_proj", "attention", "out", "out:self_attn.o_proj"),
        _s("post_attention_layernorm.in", "post_attention_layernorm", "norm", "in",
           "in:post_attention_layernorm"),
        _s("post_attention_layernorm.out", "post_attention_layernorm", "norm", "out",
           "out:post_attention_layernorm"),
        _s("pre_feedforward_layernorm.in", "pre_feedforward_layernorm", "norm", "in",
           "in:pre_feedforward_layernorm"),
        _s("pre_feedforward_layernorm.out", "pre_feedforward_layernorm", "norm", "out",
           "out:pre_feedforward_layernorm"),
        _s("mlp.gate_proj.out", "mlp.gate_proj", "mlp", "out", "out:mlp.gate_proj"),
        _s("mlp.up_proj.out", "mlp.up_proj", "mlp", "out", "out:mlp.up_proj"),
        _s("mlp.down_proj.in", "mlp.down_proj", "mlp", "in", "in:mlp.down_proj"),
        _s("mlp.down_proj.out", "mlp.down_proj", "mlp", "out", "out:mlp.down_proj"),
        _s("post_feedforward_layernorm.in", "post_feedforward_layernorm", "norm", "in",
           "in:post_feedforward_layernorm"),
        _s("post_feedforward_layernorm.out", "post_feedforward_layernorm", "norm", "out",
           "out:post_feedforward_layernorm"),
        _s("layer.out", "", "layer", "out", "hidden"),
    ),
    after=(
        _s("final_norm.in", "norm", "norm", "in", "in:norm"),
        _s("final_norm.out", "norm", "norm", "out", "out:norm"),
    ),
)

# ---------------------------------------------------------------- GPT-2
# transformer.h[i]: ln_1, attn (c_attn: fused q/k/v, c_proj), ln_2, mlp (c_fc,
# c_proj); Hugging Face's Conv1D stores its weight as [in, out].
_GPT2 = Catalogue(
    name="gpt2",
    description="GPT-2",
    layer_lists=("transformer.h", "h"),
    embedding="wte",
    marker="attn",
    before=(_s("embed_tokens.out", "wte", "embedding", "out", "out:wte"),),
    per_layer=(
        _s("layer.in", "", "layer", "in", "hidden"),
        _s("ln_1.in", "ln_1", "norm", "in", "in:ln_1"),
        _s("ln_1.out", "ln_1", "norm", "out", "out:ln_1"),
        _s("attn.c_attn.out", "attn.c_attn", "attention", "out", "out:attn.c_attn"),
        _s("attn.c_proj.in", "attn.c_proj", "attention", "in", "in:attn.c_proj"),
        _s("attn.c_proj.out", "attn.c_proj", "attention", "out", "out:attn.c_proj"),
        _s("ln_2.in", "ln_2", "norm", "in", "in:ln_2"),
        _s("ln_2.out", "ln_2", "norm", "out", "out:ln_2"),
        _s("mlp.c_fc.out", "mlp.c_fc", "mlp", "out", "out:mlp.c_fc"),
        _s("mlp.c_proj.in", "mlp.c_proj", "mlp", "in", "in:mlp.c_proj"),
        _s("mlp.c_proj.out", "mlp.c_proj", "mlp", "out", "out:mlp.c_proj"),
        _s("layer.out", "", "layer", "out", "hidden"),
    ),
    after=(
        _s("final_norm.in", "ln_f", "norm", "in", "in:ln_f"),
        _s("final_norm.out", "ln_f", "norm", "out", "out:ln_f"),
    ),
)

# ---------------------------------------------------------------- Mamba
# backbone.layers[i]: norm, mixer (in_proj, conv1d [B, C, T], x_proj, dt_proj,
# out_proj).  The fused CUDA path (mamba-ssm) bypasses conv1d and dt_proj, and
# so does every path of transformers 5's mixer (it uses their weights):
# their sites are kept only where the mixer calls them, and x_proj's input
# (the convolution's output after its activation) is recorded in any case.
_MAMBA = Catalogue(
    name="mamba",
    description="Mamba",
    layer_lists=("backbone.layers", "layers", "model.layers"),
    embedding="embeddings",
    marker="mixer",
    before=(),
    per_layer=(
        _s("layer.in", "", "layer", "in", "hidden"),
        _s("norm.in", "norm", "norm", "in", "in:norm"),
        _s("norm.out", "norm", "norm", "out", "out:norm"),
        _s("mixer.in_proj.out", "mixer.in_proj", "ssm", "out", "out:mixer.in_proj"),
        _s("mixer.conv1d.out", "mixer.conv1d", "ssm", "out", "out:mixer.conv1d", layout=CONV,
           called=True),
        _s("mixer.x_proj.in", "mixer.x_proj", "ssm", "in", "in:mixer.x_proj"),
        _s("mixer.x_proj.out", "mixer.x_proj", "ssm", "out", "out:mixer.x_proj"),
        _s("mixer.dt_proj.out", "mixer.dt_proj", "ssm", "out", "out:mixer.dt_proj", called=True),
        _s("mixer.out_proj.in", "mixer.out_proj", "ssm", "in", "in:mixer.out_proj"),
        _s("mixer.out_proj.out", "mixer.out_proj", "ssm", "out", "out:mixer.out_proj"),
        _s("layer.out", "", "layer", "out", "hidden"),
    ),
    after=(
        _s("final_norm.in", "norm_f", "norm", "in", "in:norm_f"),
        _s("final_norm.out", "norm_f", "norm", "out", "out:norm_f"),
    ),
)

# ---------------------------------------------------------------- RecurrentGemma
# The outlier study's 26 site types (section 2.2): 24 per layer, of which the
# attention layers have 6 and the recurrent layers 7 of their own, and the
# final norm's input and output.
_ATT = "temporal_block.q_proj"
_REC = "temporal_block.linear_x"
_RECURRENT_GEMMA = Catalogue(
    name="recurrent_gemma",
    description="RecurrentGemma (Griffin): the outlier study's 26 site types",
    layer_lists=("model.layers", "layers"),
    embedding="embed_tokens",
    marker="temporal_block",
    before=(),
    per_layer=(
        _s("layer.in", "", "layer", "in", "hidden"),
        _s("temporal_pre_norm.in", "temporal_pre_norm", "norm", "in", "in:temporal_pre_norm"),
        _s("temporal_pre_norm.out", "temporal_pre_norm", "norm", "out", "out:temporal_pre_norm"),
        _s("attention.in", "temporal_block", "attention", "in", "in:" + _ATT, _ATT),
        _s("attention.q_proj.out", _ATT, "attention", "out", "out:" + _ATT, _ATT),
        _s("attention.k_proj.out", "temporal_block.k_proj", "attention", "out",
           "out:temporal_block.k_proj", _ATT),
        _s("attention.v_proj.out", "temporal_block.v_proj", "attention", "out",
           "out:temporal_block.v_proj", _ATT),
        _s("attention.o_proj.in", "temporal_block.o_proj", "attention", "in",
           "in:temporal_block.o_proj", _ATT),
        _s("attention.out", "temporal_block", "attention", "out", "out:temporal_block.o_proj", _ATT),
        _s("recurrent.in", "temporal_block", "recurrent", "in", "in:" + _REC, _REC),
        _s("recurrent.linear_y.out", "temporal_block.linear_y", "recurrent", "out",
           "out:temporal_block.linear_y", _REC),
        _s("recurrent.linear_x.out", _REC, "recurrent", "out", "out:" + _REC, _REC),
        _s("recurrent.conv1d.out", "temporal_block.conv_1d", "recurrent", "out",
           "out:temporal_block.conv_1d", _REC, CONV),
        _s("recurrent.rg_lru.out", "temporal_block.rg_lru", "recurrent", "out", "out:" + _REC, _REC),
        _s("recurrent.linear_out.in", "temporal_block.linear_out", "recurrent", "in",
           "in:temporal_block.linear_out", _REC),
        _s("recurrent.linear_out.out", "temporal_block.linear_out", "recurrent", "out",
           "out:temporal_block.linear_out", _REC),
        _s("channel_pre_norm.in", "channel_pre_norm", "norm", "in", "in:channel_pre_norm"),
        _s("channel_pre_norm.out", "channel_pre_norm", "norm", "out", "out:channel_pre_norm"),
        _s("mlp.in", "mlp_block", "mlp", "in", "in:mlp_block.gate_proj"),
        _s("mlp.gate_proj.out", "mlp_block.gate_proj", "mlp", "out", "out:mlp_block.gate_proj"),
        _s("mlp.up_proj.out", "mlp_block.up_proj", "mlp", "out", "out:mlp_block.up_proj"),
        _s("mlp.down_proj.in", "mlp_block.down_proj", "mlp", "in", "in:mlp_block.down_proj"),
        _s("mlp.out", "mlp_block", "mlp", "out", "out:mlp_block.down_proj"),
        _s("layer.out", "", "layer", "out", "hidden"),
    ),
    after=(
        _s("final_norm.in", "final_norm", "norm", "in", "in:final_norm"),
        _s("final_norm.out", "final_norm", "norm", "out", "out:final_norm"),
    ),
)

CATALOGUES = {c.name: c for c in (_LLAMA, _GPT2, _MAMBA, _RECURRENT_GEMMA)}
GENERIC = "generic"
ALIASES = {
    "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama", "gemma2": "llama",
    "recurrent-gemma": "recurrent_gemma", "recurrentgemma": "recurrent_gemma",
}
# model.config.model_type -> catalogue, for catalogue="auto".
MODEL_TYPES = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama",
    "gemma2": "llama", "gpt2": "gpt2", "mamba": "mamba", "recurrent_gemma": "recurrent_gemma",
}


def names():
    """Catalogue names accepted by points(), capture() and clip()."""
    return ["auto"] + list(CATALOGUES) + [GENERIC]


def resolve_name(model, catalogue="auto"):
    """The catalogue a model gets: by model.config.model_type for "auto"
    (the generic one for unknown or missing types)."""
    if not isinstance(catalogue, str):
        raise Error(f"catalogue: expected a name, got {type(catalogue).__name__}")
    name = ALIASES.get(catalogue, catalogue)
    if name == "auto":
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return MODEL_TYPES.get(model_type, GENERIC)
    if name != GENERIC and name not in CATALOGUES:
        raise Error(f"catalogue: unknown catalogue '{catalogue}' (known: {', '.join(names())})")
    return name


# ---------------------------------------------------------------- widths

def _is_hf_conv1d(module):
    # transformers.pytorch_utils.Conv1D: a linear layer with weight [in, out].
    w = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2


def _is_norm(module):
    if isinstance(module, torch.nn.LayerNorm):
        return True
    w = getattr(module, "weight", None)
    name = type(module).__name__
    return (name.endswith("Norm") and "Group" not in name and "Batch" not in name and
            isinstance(w, torch.Tensor) and w.dim() == 1)


def features(module, direction):
    """Channels of a module's input ("in") or output ("out"), or None."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features if direction == "in" else module.out_features
    if _is_hf_conv1d(module):
        return module.weight.shape[0] if direction == "in" else module.weight.shape[1]
    if isinstance(module, torch.nn.Conv1d):
        return module.in_channels if direction == "in" else module.out_channels
    if isinstance(module, torch.nn.Embedding):
        return module.embedding_dim if direction == "out" else None
    if isinstance(module, torch.nn.LayerNorm):
        return module.normalized_shape[-1]
    if _is_norm(module):
        return module.weight.shape[0]
    return None


def _hidden_size(model):
    config = getattr(model, "config", None)
    for attr in ("hidden_size", "d_model", "n_embd"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _get(root, path):
    """The submodule at a dotted path, or None."""
    module = root
    for part in path.split(".") if path else ():
        module = getattr(module, part, None)  # ModuleList children are attributes "0", "1", ...
        if not isinstance(module, torch.nn.Module):
            return None
    return module


def _join(*parts):
    return ".".join(p for p in parts if p)


def _width(site, scope, model, where):
    if site.width == "hidden":
        width = _hidden_size(model)
    else:
        direction, _, path = site.width.partition(":")
        sub = _get(scope, path)
        width = features(sub, direction) if sub is not None else None
    if not width:
        raise Error(f"catalogue: cannot tell the channels of {where} (site {site.site})")
    return int(width)


# ---------------------------------------------------------------- points

def _find_layers(model, catalogue):
    """(path, ModuleList) of the first layer list whose layers all have the
    catalogue's marker module."""
    for path in catalogue.layer_lists:
        layers = _get(model, path)
        if (isinstance(layers, torch.nn.ModuleList) and len(layers) and
                all(_get(layer, catalogue.marker) is not None for layer in layers)):
            return path, layers
    return None, None


def _site_points(site, scope, scope_path, layer, model, prefix):
    if site.requires and _get(scope, site.requires) is None:
        return None
    module = _get(scope, site.module)
    if module is None or (site.called and not _parent_calls(scope, site.module)):
        return None
    path = _join(scope_path, site.module)
    return Point(name=prefix + site.site, layer=layer, component=site.component, site=site.site,
                 module=path, module_class=type(module).__name__, direction=site.direction,
                 channels=_width(site, scope, model, path or "the model"), layout=site.layout)


def _catalogue_points(model, catalogue):
    layers_path, layers = _find_layers(model, catalogue)
    if layers is None:
        raise Error(f"catalogue '{catalogue.name}': the model ({type(model).__name__}) has no "
                    f"layer list ({', '.join(catalogue.layer_lists)}) whose layers all have "
                    f"a '{catalogue.marker}' module: not a {catalogue.description} model")
    parent_path = layers_path.rpartition(".")[0]
    parent = _get(model, parent_path)
    points = []
    for site in catalogue.before:
        p = _site_points(site, parent, parent_path, -1, model, "")
        if p:
            points.append(p)
    for i, layer in enumerate(layers):
        for site in catalogue.per_layer:
            p = _site_points(site, layer, f"{layers_path}.{i}", i, model, f"layers.{i}.")
            if p:
                points.append(p)
    for site in catalogue.after:
        p = _site_points(site, parent, parent_path, -1, model, "")
        if p:
            points.append(p)
    return points


_LAYER_PATH = re.compile(r"^(?:.*\.)?(?:layers|layer|h|blocks|block)\.(\d+)(?:\.(.+))?$")


def _generic_component(path, module):
    if _is_norm(module):
        return "norm"
    parts = set(re.split(r"[._]", path.lower()))
    for component, words in (("attention", {"attn", "attention", "q", "k", "v", "o", "qkv"}),
                             ("mlp", {"mlp", "ffn", "feed", "forward", "fc1", "fc2"}),
                             ("ssm", {"mixer", "ssm"}),
                             ("recurrent", {"recurrent", "rg", "lru"}),
                             ("head", {"lm", "head"}),
                             ("embedding", {"embed", "embeddings", "wte"})):
        if parts & words:
            return component
    return "other"


def _generic_points(model):
    points = []
    for path, module in model.named_modules():
        linear = isinstance(module, torch.nn.Linear) or _is_hf_conv1d(module)
        if not (linear or _is_norm(module)) or not path:
            continue
        m = _LAYER_PATH.match(path)
        layer, rest = (int(m.group(1)), m.group(2) or "layer") if m else (-1, path)
        for direction in ("in", "out"):
            site = f"{rest}.{direction}"
            points.append(Point(
                name=f"layers.{layer}.{site}" if layer >= 0 else site, layer=layer,
                component=_generic_component(path, module), site=site, module=path,
                module_class=type(module).__name__, direction=direction,
                channels=int(features(module, direction))))
    return points


def points(model, catalogue="auto"):
    """The recording points a catalogue finds in a model, in forward order,
    without running or changing anything.  Raises Error for an unknown
    catalogue or when nothing matches."""
    name = resolve_name(model, catalogue)
    found = _generic_points(model) if name == GENERIC else _catalogue_points(model, CATALOGUES[name])
    if not found:
        raise Error(f"catalogue '{name}': no recording points in this model "
                    f"({type(model).__name__})")
    seen = set()
    for p in found:
        if p.name in seen:
            raise Error(f"catalogue '{name}': two recording points named '{p.name}'")
        seen.add(p.name)
    return found


def embedding_module(model, catalogue="auto"):
    """The token embedding (whose input is the token ids), or None."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            module = getter()
        except (NotImplementedError, AttributeError):
            module = None
        if isinstance(module, torch.nn.Embedding):
            return module
    name = resolve_name(model, catalogue)
    if name in CATALOGUES:
        path, _ = _find_layers(model, CATALOGUES[name])
        if path is not None:
            module = _get(model, _join(path.rpartition(".")[0], CATALOGUES[name].embedding))
            if isinstance(module, torch.nn.Embedding):
                return module
    return next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)


def module_at(model, path):
    """The module at a dotted path (as Point.module names it)."""
    module = _get(model, path)
    if module is None:
        raise Error(f"model: no module '{path}'")
    return module


def weight_of(module):
    """(weight tensor, transposed) for modules whose weight acttrace
    summarises (linear, convolution, embedding, norm gamma), else None."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() == 0 or not w.is_floating_point():
        return None
    return w, _is_hf_conv1d(module)
