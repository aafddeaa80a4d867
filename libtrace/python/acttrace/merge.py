"""merge.py: acttrace.merge, one trace from several traces of the same
points (at_merge; trace-merge(1) is the same from the shell)."""
import ctypes
import os

from . import _lib
from ._lib import Error

_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_double,
                             ctypes.c_double)


class at_merge_options(ctypes.Structure):
    _fields_ = [
        ("force", ctypes.c_int),
        ("allow_incomplete", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("compression_level", ctypes.c_int),
        ("progress", _PROGRESS),
        ("progress_arg", ctypes.c_void_p),
    ]


def _declared():
    lib = _lib.lib
    try:
        init, run = lib.at_merge_options_init, lib.at_merge
    except AttributeError:
        raise Error(f"merge: {_lib.library_path} has no at_merge (an older libacttrace)") from None
    init.restype, init.argtypes = None, [ctypes.POINTER(at_merge_options)]
    run.restype = ctypes.c_int
    run.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                    ctypes.POINTER(at_merge_options), ctypes.POINTER(_lib.at_error)]
    return init, run


def merge(out, inputs, *, force=False, allow_incomplete=False, threads=0,
          compression_level=None):
    """Write to `out` one trace of the traces `inputs` (paths, in order):
    what a single run over all their tokens would have recorded (counts,
    histograms, extremes exactly; moments by Chan/Pebay).  force: keep the
    first input's weight statistics where they differ; allow_incomplete:
    merge traces with complete=0 too.  Atomic: on an Error nothing is left at
    `out`.  acttrace-format(5), POOLING AND MERGING, says what is combined
    how."""
    paths = [os.fspath(p) for p in inputs]
    if not paths:
        raise Error("merge: no input traces")
    init, run = _declared()
    opts = at_merge_options()
    init(ctypes.byref(opts))
    opts.force = 1 if force else 0
    opts.allow_incomplete = 1 if allow_incomplete else 0
    opts.threads = int(threads)
    if compression_level is not None:
        opts.compression_level = int(compression_level)
    names = (ctypes.c_char_p * len(paths))(*(p.encode() for p in paths))
    err = _lib.at_error()
    _lib.check(run(os.fspath(out).encode(), names, len(paths), ctypes.byref(opts),
                   ctypes.byref(err)), err)
