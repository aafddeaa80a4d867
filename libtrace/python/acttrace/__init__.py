"""acttrace: record per-channel activation statistics of PyTorch models into
acttrace trace files (acttrace-format(5)), through libacttrace (ctypes).

    import acttrace
    with acttrace.capture(model, "run.h5", sample="every:64"):
        model(input_ids)

    acttrace.points(model)                 # what would be recorded
    with acttrace.clip(model, "bounds.tsv") as clipper:
        model(input_ids)                   # chosen channels clamped
    clipper.rates()

The library is found through $ACTTRACE_LIB, the build tree this package sits
in, or the system's library path.  See acttrace-python(7)."""
from ._lib import Error, library_path, version
from .capture import Capture, capture, tokens
from .catalogue import COMPONENTS, Point, names as catalogues, points
from .clip import Clip, clip, read_bounds, write_bounds
from .merge import merge
from .writer import CONV, ROWS, Writer
from .zero import ZeroWeights, read_zero_table, zero_weights

__version__ = version()
__all__ = [
    "COMPONENTS", "CONV", "Capture", "Clip", "Error", "Point", "ROWS", "Writer", "capture",
    "catalogues", "clip", "library_path", "merge", "points", "read_bounds", "read_zero_table",
    "tokens",
    "version", "write_bounds", "ZeroWeights", "zero_weights",
]
