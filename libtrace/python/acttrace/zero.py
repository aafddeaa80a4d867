"""zero.py: set chosen weights to zero for the duration of a with block, and
put them back (the hands-on note's experiment, paper 003: zero the weights
above a threshold and compare what the model does).

A table names what to zero, one row each:

    module<TAB>kind<TAB>value
    model.layers.3.mlp.down_proj<TAB>row<TAB>17
    model.layers.3.mlp.down_proj<TAB>column<TAB>1187
    model.layers.5.self_attn.o_proj<TAB>above<TAB>0.5

module is a module path of the model whose `weight` is a matrix [out, in]
(a Linear's); kind is `row` (output feature `value`), `column` (input
feature `value`) or `above` (every element with |w| > value).  The weights
are changed in place and restored bit for bit when the block ends."""
import math
import os

import torch

from ._lib import Error
from ._tables import read_table
from .catalogue import module_at

ZERO_COLUMNS = ("module", "kind", "value")
KINDS = ("row", "column", "above")


def read_zero_table(path):
    """[(module, kind, value)] from a TSV table (header module, kind, value;
    other columns ignored, '#' and blank lines skipped); errors name the
    file and line."""
    path, rows = read_table(path, ZERO_COLUMNS, "table")
    out = []
    for n, row in rows:
        where = f"{path}:{n}"
        module, kind, text = (row[c].strip() for c in ZERO_COLUMNS)
        if not module:
            raise Error(f"{where}: empty module")
        if kind not in KINDS:
            raise Error(f"{where}: kind '{kind}' is not row, column or above")
        try:
            value = int(text) if kind != "above" else float(text)
        except ValueError:
            raise Error(f"{where}: value '{text}' is not "
                        f"{'a number' if kind == 'above' else 'an integer'}") from None
        if kind == "above" and (math.isnan(value) or value < 0):
            raise Error(f"{where}: threshold {text} is not a number >= 0")
        if kind != "above" and value < 0:
            raise Error(f"{where}: negative index {value}")
        out.append((module, kind, value))
    return out


class ZeroWeights:
    """Weights zeroed while the with block runs; see zero_weights()."""

    def __init__(self, model, table):
        if isinstance(table, (str, os.PathLike)):
            table = read_zero_table(table)
        self.model = model
        self.rows = list(table)
        self.saved = {}      # module path -> the weight as it was
        self.zeroed = {}     # module path -> elements set to zero (nonzero before)
        # refuse before anything changes
        self.targets = []
        for module, kind, value in self.rows:
            m = module_at(model, module)
            w = getattr(m, "weight", None) if m is not None else None
            if not isinstance(w, torch.Tensor) or w.dim() != 2:
                raise Error(f"zero_weights: '{module}' has no weight matrix")
            limit = w.shape[0] if kind == "row" else w.shape[1] if kind == "column" else None
            if limit is not None and value >= limit:
                raise Error(f"zero_weights: '{module}' has {limit} {kind}s, not {value + 1}")
            self.targets.append((module, w, kind, value))

    def __enter__(self):
        with torch.no_grad():
            for module, w, kind, value in self.targets:
                if module not in self.saved:
                    self.saved[module] = w.detach().clone()
                mask = torch.zeros_like(w, dtype=torch.bool)
                if kind == "row":
                    mask[value, :] = True
                elif kind == "column":
                    mask[:, value] = True
                else:
                    mask = w.abs() > value
                self.zeroed[module] = self.zeroed.get(module, 0) + int((mask & (w != 0)).sum())
                w.masked_fill_(mask, 0)
        return self

    def __exit__(self, exc_type, exc, tb):
        with torch.no_grad():
            for module, w, _, _ in self.targets:
                if module in self.saved:
                    w.copy_(self.saved[module])
        self.saved = {}
        return False

    def counts(self):
        """{module: elements zeroed that were not zero}."""
        return dict(self.zeroed)


def zero_weights(model, table):
    """A context manager: the weights the table names (a path or a list of
    (module, kind, value)) are zero inside the with block, as they were
    after it.  Errors (Error) come before any weight changes."""
    return ZeroWeights(model, table)
