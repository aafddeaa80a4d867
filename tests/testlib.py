"""testlib.py: what the Python tests share: the histogram layout of
acttrace.h, where the build tree is, getting h5py a zstd filter, and a
checker that counts checks and keeps going after a failure."""
import os

import hdf5plugin
import h5py
import numpy as np

HIST_BINS_PER_OCTAVE = 4
HIST_MIN_EXP = -24
HIST_MAX_EXP = 24
HIST_LOG_BINS = (HIST_MAX_EXP - HIST_MIN_EXP) * HIST_BINS_PER_OCTAVE
HIST_BINS = HIST_LOG_BINS + 3
ZSTD_FILTER_ID = 32015

TOP_BUILDDIR = os.environ.get("top_builddir", ".")


def make_zstd_filter_available():
    """Filter 32015 for h5py: hdf5plugin's when it has one (PyPI wheels do), or
    a plugin on HDF5_PLUGIN_PATH (make check points it at the build's copy of
    acttrace's standalone libh5zstd); Debian's python3-hdf5plugin ships no zstd
    filter, so for a run by hand fall back to the build tree's plugin, loaded
    by stock HDF5 like any plugin.  Prepended, not appended: HDF5 1.10 stops its
    plugin search at a directory of its default path that does not exist.
    Returns where the filter came from, or None."""
    origin = hdf5plugin.get_config().registered_filters.get("zstd")
    if origin not in (None, "unknown"):  # "unknown": registered, but not by hdf5plugin
        return f"hdf5plugin ({origin})"
    if h5py.h5z.filter_avail(ZSTD_FILTER_ID):
        return f"plugin on HDF5_PLUGIN_PATH={os.environ.get('HDF5_PLUGIN_PATH', '')}"
    for sub in ("hdf5-plugins", ".libs"):
        plugin_dir = os.path.abspath(os.path.join(TOP_BUILDDIR, sub))
        if os.path.isdir(plugin_dir):
            h5py.h5pl.prepend(plugin_dir.encode())
            if h5py.h5z.filter_avail(ZSTD_FILTER_ID):
                return f"acttrace's libh5zstd plugin from {plugin_dir} (this hdf5plugin has no zstd filter)"
    return None


class Checker:
    """Counts checks, remembers failures with context, never stops early."""

    def __init__(self):
        self.checks = 0
        self.failures = []
        self.context = ""

    def ok(self, cond, message):
        self.checks += 1
        if not cond:
            self.failures.append(f"{self.context}: {message}")
            print(f"FAIL {self.context}: {message}")
        return bool(cond)

    def equal_arrays(self, got, want, what):
        got, want = np.asarray(got), np.asarray(want)
        if not self.ok(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"):
            return False
        same = (got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else got == want
        bad = np.flatnonzero(~np.asarray(same).reshape(-1))
        return self.ok(bad.size == 0, f"{what}: {bad.size} elements differ, first at flat index "
                       f"{bad[:1].tolist()}: got {got.reshape(-1)[bad[:3]].tolist()} "
                       f"want {want.reshape(-1)[bad[:3]].tolist()}")

    def close_arrays(self, got, want, tol, what):
        """|got - want| <= tol elementwise (tol an array or scalar); NaN matches NaN."""
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if not self.ok(got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"):
            return False
        tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), want.shape)
        with np.errstate(invalid="ignore"):
            good = (np.abs(got - want) <= tol) | (np.isnan(got) & np.isnan(want)) | (got == want)
        bad = np.flatnonzero(~good.reshape(-1))
        if bad.size:
            i = bad[0]
            return self.ok(False, f"{what}: {bad.size} elements off, first [{i}]: got "
                           f"{got.reshape(-1)[i]!r} want {want.reshape(-1)[i]!r} tol {tol.reshape(-1)[i]!r}")
        return self.ok(True, what)


def text(value):
    """A string attribute as str: format version 2's fixed-length strings
    come back from h5py as bytes, version 1's variable-length ones as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_bfloat16(type_id):
    """A file type of format version 2's bfloat16 samples: 2 bytes, float32's
    8 exponent bits (acttrace-format(5), SAMPLES)."""
    return (isinstance(type_id, h5py.h5t.TypeFloatID) and type_id.get_size() == 2
            and type_id.get_fields() == (15, 7, 8, 0, 7) and type_id.get_ebias() == 127)


def stored_elements(raw, type_id):
    """Elements of an HDF5 file type from their stored little-endian bytes, as
    numpy decodes them; bfloat16, which numpy lacks, widened to float32
    exactly (its bits are a float32's top half)."""
    if is_bfloat16(type_id):
        return (np.frombuffer(raw, dtype="<u2").astype("<u4") << 16).view("<f4")
    return np.frombuffer(raw, dtype=type_id.dtype)


def is_fixed_utf8(obj, name):
    """Format version 2 writes every string attribute as a fixed-length,
    NUL-terminated UTF-8 string, never a variable-length one."""
    t = obj.attrs.get_id(name).get_type()
    return (isinstance(t, h5py.h5t.TypeStringID) and not t.is_variable_str()
            and t.get_cset() == h5py.h5t.CSET_UTF8 and t.get_strpad() == h5py.h5t.STR_NULLTERM)
