"""_lib.py: finds and loads libacttrace with ctypes and declares the part of
<acttrace.h> the binding uses.  The structures mirror the header field by
field; keep them in step with libtrace/acttrace.h."""
import ctypes
import ctypes.util
import os

AT_OK = 0
AT_EINVAL = -1
AT_ENOMEM = -2
AT_EIO = -3
AT_EFORMAT = -4
AT_ENOTFOUND = -5
AT_ERANGE = -6
AT_ECODEC = -7
AT_ENOSYS = -8
AT_ECANCELED = -9

AT_F32, AT_F16, AT_BF16 = 0, 1, 2
AT_SAMPLE_NONE, AT_SAMPLE_EVERY, AT_SAMPLE_FIRST, AT_SAMPLE_RESERVOIR = 0, 1, 2, 3


class Error(Exception):
    """A failure reported by libacttrace or detected by the binding.  str() is
    the one-line message (naming the file or argument at fault); .code is the
    library's status (AT_EINVAL, ...) or AT_EINVAL for the binding's own checks."""

    def __init__(self, message, code=AT_EINVAL):
        super().__init__(message)
        self.message = message
        self.code = code


class at_error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class at_tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("batches", ctypes.c_int64),
        ("rows", ctypes.c_int64),
        ("channels", ctypes.c_int64),
        ("batch_stride", ctypes.c_int64),
        ("row_stride", ctypes.c_int64),
        ("channel_stride", ctypes.c_int64),
    ]


class at_writer_options(ctypes.Structure):
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("source_dtype", ctypes.c_char_p),
        ("notes", ctypes.c_char_p),
        ("producer", ctypes.c_char_p),
        ("hist", ctypes.c_int),
        ("extremes", ctypes.c_int32),
        ("sample_policy", ctypes.c_int),
        ("sample_n", ctypes.c_int64),
        ("max_samples", ctypes.c_int64),
        ("compression_level", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("sample_bytes_in_flight", ctypes.c_int64),
        ("when_busy", ctypes.c_int),
        ("rank", ctypes.c_int32),
        ("world_size", ctypes.c_int32),
        ("sample_seed", ctypes.c_uint64),
    ]


class at_weight_summary(ctypes.Structure):
    _fields_ = [
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("row_absmax", ctypes.c_void_p),
        ("row_absmean", ctypes.c_void_p),
        ("col_absmax", ctypes.c_void_p),
        ("col_absmean", ctypes.c_void_p),
        ("values", ctypes.c_void_p),
        ("row_sumsq", ctypes.c_void_p),
    ]


class at_point_desc(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("layer", ctypes.c_int32),
        ("component", ctypes.c_char_p),
        ("site", ctypes.c_char_p),
        ("module", ctypes.c_char_p),
        ("module_class", ctypes.c_char_p),
        ("direction", ctypes.c_char_p),
        ("channels", ctypes.c_int64),
        ("channel_offset", ctypes.c_int64),
        ("full_channels", ctypes.c_int64),
        ("replicated", ctypes.c_int),
    ]


def _build_tree_library():
    """libacttrace.so of the build tree this package sits in (an in-tree build:
    the package is <top>/libtrace/python/acttrace, libtool leaves the library
    in <top>/.libs)."""
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.normpath(os.path.join(here, "..", "..", ".."))
    path = os.path.join(top, ".libs", "libacttrace.so")
    return path if os.path.exists(path) else None


def find_library():
    """Where libacttrace is taken from, in this order: $ACTTRACE_LIB, the
    build tree around this package, the system's library search.  Returns
    (path or name, how it was found) or (None, None)."""
    env = os.environ.get("ACTTRACE_LIB")
    if env:
        return env, "ACTTRACE_LIB"
    built = _build_tree_library()
    if built:
        return built, "build tree"
    name = ctypes.util.find_library("acttrace")
    if name:
        return name, "system"
    return None, None


def needs_sanitizer_runtime(path):
    """True when the shared library at path was linked against ASan: such a
    library cannot be dlopen()ed into a Python that was not started with the
    ASan runtime preloaded (the process aborts, it raises nothing)."""
    try:
        with open(path, "rb") as f:
            image = f.read()
    except OSError:
        return False
    if b"libasan.so" not in image:
        return False
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" not in maps.read()
    except OSError:
        return True


def _declare(lib):
    P = ctypes.POINTER
    err = P(at_error)
    sigs = {
        "at_version": (ctypes.c_char_p, []),
        "at_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "at_writer_options_init": (None, [P(at_writer_options)]),
        "at_writer_create": (ctypes.c_int, [P(ctypes.c_void_p), ctypes.c_char_p,
                                            P(at_writer_options), err]),
        "at_writer_add_point": (ctypes.c_int, [ctypes.c_void_p, P(at_point_desc),
                                               P(ctypes.c_int32), err]),
        "at_writer_add_tokens": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                ctypes.c_void_p, ctypes.c_int64,
                                                P(ctypes.c_int64), err]),
        "at_writer_observe": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32, P(at_tensor),
                                             ctypes.c_int64, err]),
        "at_writer_observe_device": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                                    P(at_tensor), ctypes.c_int64,
                                                    ctypes.c_void_p, err]),
        "at_writer_observe_same": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                                  ctypes.c_int32, P(at_tensor), ctypes.c_int64,
                                                  err]),
        "at_writer_observe_device_same": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                                         ctypes.c_int32, P(at_tensor),
                                                         ctypes.c_int64, ctypes.c_void_p, err]),
        "at_cuda_available": (ctypes.c_int, []),
        "at_writer_add_weight": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                                P(at_tensor), err]),
        "at_writer_add_weight_summary": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p,
                                                        ctypes.c_char_p, P(at_weight_summary),
                                                        err]),
        "at_writer_checkpoint": (ctypes.c_int, [ctypes.c_void_p, err]),
        "at_writer_close": (ctypes.c_int, [ctypes.c_void_p, err]),
        "at_writer_abandon": (None, [ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def load():
    where, how = find_library()
    if where is None:
        raise ImportError(
            "acttrace: cannot find libacttrace: set ACTTRACE_LIB to the path of "
            "libacttrace.so, or install acttrace where the dynamic linker finds it")
    if os.path.sep in where and needs_sanitizer_runtime(where):
        raise ImportError(
            f"acttrace: {where} was built with sanitizers (it needs libasan), which "
            "Python cannot load; use a build configured without --enable-sanitizers")
    try:
        lib = ctypes.CDLL(where)
    except OSError as e:
        raise ImportError(f"acttrace: cannot load libacttrace ({how}: {where}): {e}") from None
    try:
        return _declare(lib), where
    except AttributeError as e:
        raise ImportError(f"acttrace: {where} is not a usable libacttrace: {e}") from None


lib, library_path = load()


def check(status, err):
    """Raise Error with the library's message unless status is AT_OK."""
    if status == AT_OK:
        return
    message = err.message.decode("utf-8", "replace") if err.message else ""
    if not message:
        message = lib.at_status_name(status).decode()
    raise Error(message, status)


def version():
    return lib.at_version().decode()
