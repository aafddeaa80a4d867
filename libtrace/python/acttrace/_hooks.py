"""_hooks.py: forward hooks that see (and may replace) a module's first input
or its output, on every torch from 1.13 on.  torch >= 2.0 also passes
keyword arguments to hooks (with_kwargs=True), so an input given by keyword
is found there; older torch sees positional arguments only."""
import inspect

import torch

_PRE_KWARGS = "with_kwargs" in inspect.signature(torch.nn.Module.register_forward_pre_hook).parameters
_POST_KWARGS = "with_kwargs" in inspect.signature(torch.nn.Module.register_forward_hook).parameters

# Keyword names under which decoder blocks take their hidden states.
_INPUT_KEYWORDS = ("hidden_states", "input", "x", "activations", "input_states", "inputs_embeds")


def find_input(args, kwargs):
    """(where, tensor) of a module's first tensor input: ("arg", i) or
    ("kw", name); (None, None) when there is none."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            return ("arg", i), a
    for name in _INPUT_KEYWORDS:
        if isinstance(kwargs.get(name), torch.Tensor):
            return ("kw", name), kwargs[name]
    return None, None


def find_output(output):
    """(where, tensor) of a module's output: the tensor itself, the first
    tensor of a tuple or list, or a ModelOutput's first tensor."""
    if isinstance(output, torch.Tensor):
        return (), output
    if isinstance(output, (tuple, list)):
        for i, o in enumerate(output):
            if isinstance(o, torch.Tensor):
                return (i,), o
    if isinstance(output, dict):
        for key, o in output.items():
            if isinstance(o, torch.Tensor):
                return (key,), o
    return None, None


def replace_output(output, where, tensor):
    if where == ():
        return tensor
    (key,) = where
    if isinstance(output, (tuple, list)):
        items = list(output)
        items[key] = tensor
        if isinstance(output, list):
            return items
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)
    output[key] = tensor  # ModelOutput: a fresh object per call, safe to update
    return output


def register_pre(module, fn):
    """fn(module, args, kwargs) -> None, or (args, kwargs) to replace them."""
    if _PRE_KWARGS:
        return module.register_forward_pre_hook(fn, with_kwargs=True)

    def positional(m, args):
        result = fn(m, args, {})
        return None if result is None else result[0]
    return module.register_forward_pre_hook(positional)


def register_post(module, fn):
    """fn(module, args, kwargs, output) -> None, or a replacement output."""
    if _POST_KWARGS:
        return module.register_forward_hook(fn, with_kwargs=True)
    return module.register_forward_hook(lambda m, args, output: fn(m, args, {}, output))


def conv_length(args, kwargs):
    """T of a Conv1d's input [B, C, T] (its causal outputs are the first T of
    the T + k - 1 a padded convolution returns), or None."""
    _, x = find_input(args, kwargs)
    return x.shape[-1] if x is not None and x.dim() >= 2 else None


def remove_all(handles):
    """Remove every hook handle, even if one removal fails."""
    error = None
    while handles:
        handle = handles.pop()
        try:
            handle.remove()
        except Exception as e:  # noqa: BLE001 - keep removing the others
            error = error or e
    if error is not None:
        raise error


class _ReferencePath:
    """A module that runs its reference forward (slow_forward) instead of its
    fused CUDA one while hooks are attached.  transformers' Mamba mixers take
    cuda_kernels_forward when mamba-ssm and causal-conv1d are installed, and
    that path never calls their conv1d and dt_proj modules, whose hooks would
    then never fire (nor would a clip on them apply).  remove() puts the
    module's own forward back, like a hook handle."""

    def __init__(self, module):
        self.module = module

        def reference(*args, **kwargs):
            if "hidden_states" in kwargs:  # forward's name for slow_forward's first argument
                args = (kwargs.pop("hidden_states"),) + args
            return module.slow_forward(*args, **kwargs)
        self.forward = reference
        module.forward = reference

    def remove(self):
        if vars(self.module).get("forward") is self.forward:
            del self.module.forward


def force_reference_paths(model):
    """Handles (with remove()) for every submodule of model that has a fused
    path skipping submodules; see _ReferencePath."""
    return [_ReferencePath(m) for m in model.modules()
            if callable(getattr(m, "slow_forward", None))
            and callable(getattr(m, "cuda_kernels_forward", None))
            and "forward" not in vars(m)]
