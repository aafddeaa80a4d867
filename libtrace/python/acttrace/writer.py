"""writer.py: a trace writer over libacttrace's at_writer_* calls, fed with
torch tensors by pointer (no copies on the host path).

A tensor reaches the library through a *path* (choose_path): the host path
(CPU tensors by pointer; CUDA tensors copied to the host first, in their own
dtype), or, when libacttrace was built with CUDA, the device path (by device
pointer on torch.cuda.current_stream(), reduced on the GPU)."""
import ctypes
import os
import threading
import warnings
import weakref

import torch

from . import _lib
from ._lib import Error

_DTYPES = {torch.float32: _lib.AT_F32, torch.float16: _lib.AT_F16, torch.bfloat16: _lib.AT_BF16}

# Tensor layouts of a recording point: where the channels are.
ROWS = "rows"  # [..., C]: channels last, every leading index a token (or a batch of them)
CONV = "conv"  # [B, C, T]: convolution output, channels in the middle


def _row_sumsq(w, block_bytes=64 << 20):
    """The sum of w^2 over each row of a matrix, in float64: squares of
    16- and 32-bit floats are exact there.  A block of rows at a time, so
    that no float64 copy of a large matrix is ever whole."""
    rows, cols = w.shape
    step = max(1, block_bytes // (8 * max(cols, 1)))
    return torch.cat([w[i:i + step].to(torch.float64).square().sum(dim=1)
                      for i in range(0, rows, step)])


def parse_sample(sample):
    """None, "none", "every:N", "first:N", "reservoir:N", or a (policy, N)
    pair -> (AT_SAMPLE_*, N)."""
    if sample is None:
        return _lib.AT_SAMPLE_NONE, 1
    if isinstance(sample, str):
        if sample == "none":
            return _lib.AT_SAMPLE_NONE, 1
        policy, sep, n = sample.partition(":")
    else:
        try:
            policy, n = sample
        except (TypeError, ValueError):
            raise Error(f"sample: expected 'every:N', 'first:N' or 'reservoir:N', "
                        f"got {sample!r}") from None
        sep = ":"
    policies = {"every": _lib.AT_SAMPLE_EVERY, "first": _lib.AT_SAMPLE_FIRST,
                "reservoir": _lib.AT_SAMPLE_RESERVOIR}
    try:
        n = int(n)
    except (TypeError, ValueError):
        n = 0
    if not sep or policy not in policies or n < 1:
        raise Error(f"sample: expected 'every:N', 'first:N' or 'reservoir:N' with N >= 1, "
                    f"got {sample!r}")
    return policies[policy], n


class TensorView:
    """A tensor as libacttrace sees it: (batches, rows, channels) and element
    strides.  Keeps the tensor alive as long as the view."""

    __slots__ = ("tensor", "batches", "rows", "channels", "batch_stride", "row_stride",
                 "channel_stride")

    def __init__(self, tensor, layout=ROWS):
        t = tensor
        if layout == CONV:
            if t.dim() == 2:
                t = t.unsqueeze(0)
            if t.dim() != 3:
                raise Error(f"tensor: a convolution output must be [B, C, T], got {list(t.shape)}")
            self.tensor = t
            self.batches, self.channels, self.rows = t.shape
            self.batch_stride, self.channel_stride, self.row_stride = t.stride()
            return
        if t.dim() == 0:
            raise Error("tensor: a scalar has no channels")
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() > 3:
            # Flatten the leading dims into batches: a view when the strides
            # allow it, a copy otherwise (reshape's rule).
            t = t.reshape(-1, t.shape[-2], t.shape[-1])
        if t.dim() == 2:
            self.tensor = t
            self.batches = 1
            self.rows, self.channels = t.shape
            self.batch_stride = t.shape[0] * t.stride(0)
            self.row_stride, self.channel_stride = t.stride()
            return
        self.tensor = t
        self.batches, self.rows, self.channels = t.shape
        self.batch_stride, self.row_stride, self.channel_stride = t.stride()

    @property
    def tokens(self):
        return self.batches * self.rows

    def at_tensor(self):
        t = self.tensor
        return _lib.at_tensor(
            data=t.data_ptr() if t.numel() else None, dtype=_DTYPES[t.dtype],
            batches=self.batches, rows=self.rows, channels=self.channels,
            batch_stride=self.batch_stride, row_stride=self.row_stride,
            channel_stride=self.channel_stride)


def _supported(t):
    """The tensor in a dtype the library reads: float64 is rounded to float32
    (documented), other non-float dtypes are refused."""
    if t.dtype in _DTYPES:
        return t
    if t.dtype == torch.float64:
        return t.float()
    raise Error(f"tensor: dtype {t.dtype} is not float32, float16, bfloat16 or float64")


class Overlap:
    """Statistics kernels on a side stream per device, so that their launch
    tails overlap the model's next kernels instead of delaying them (the
    writer option overlap=True).  The side stream waits for the model's
    stream at each observation, and the tensor is recorded on it
    (Tensor.record_stream), so its memory is not reused before the kernel
    has read it.  What the side stream cannot know is an in-place change of
    the tensor queued after the observation (transformers' models make none
    on the tensors the catalogues record): the tensor's version is noted and
    looked at again at every later observation while the tensor lives and at
    the end of each forward; changed() names those seen changed, whose
    statistics may hold the new values.  A tensor changed and freed between
    two observations goes unseen, and so does any change under
    torch.inference_mode(), whose tensors keep no version."""

    def __init__(self):
        self.streams = {}
        self.watched = []  # (weak reference, version, what) of tensors alive when last looked at
        self.seen_changed = []

    def stream_for(self, tensor, what):
        device = tensor.device
        side = self.streams.get(device.index)
        if side is None:
            side = self.streams[device.index] = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        tensor.record_stream(side)
        self.watch(tensor, what)
        return side

    def join(self):
        """The model's streams wait for the side streams (at the end of each
        forward): the side stream never lags more than a forward behind, so
        the memory record_stream holds for it is freed a forward later at
        most, not when the allocator runs dry."""
        for index, side in self.streams.items():
            torch.cuda.current_stream(index).wait_stream(side)

    def look(self):
        """Note the watched tensors changed since their observation; forget
        those changed or freed."""
        alive = []
        for ref, version, what in self.watched:
            t = ref()
            if t is None:
                continue
            if t._version != version:
                self.seen_changed.append(what)
            else:
                alive.append((ref, version, what))
        self.watched = alive

    def watch(self, tensor, what):
        self.look()
        if not tensor.is_inference():  # inference tensors keep no version
            self.watched.append((weakref.ref(tensor), tensor._version, what))

    def changed(self):
        """What was seen changed in place after its observation, since the
        last call (the tensors alive now included)."""
        self.look()
        out, self.seen_changed = self.seen_changed, []
        return out


class HostPath:
    """Host memory by pointer; CUDA (and other device) tensors are copied to the
    host in their own dtype first, the rows to observe only."""
    name = "host"

    @staticmethod
    def prepare(t):
        t = _supported(t.detach())
        if t.device.type != "cpu":
            t = t.to("cpu")
        return t

    @staticmethod
    def observe(handle, point_id, view, token_base, overlap=None, source=None):
        err = _lib.at_error()
        desc = view.at_tensor()
        if source is None:
            status = _lib.lib.at_writer_observe(handle, point_id, ctypes.byref(desc), token_base,
                                                ctypes.byref(err))
        else:
            status = _lib.lib.at_writer_observe_same(handle, point_id, source, ctypes.byref(desc),
                                                     token_base, ctypes.byref(err))
        _lib.check(status, err)


class DevicePath:
    """CUDA memory by pointer, reduced on the GPU by libacttrace's fused kernel
    on the current stream (at_writer_observe_device): no copy, no wait.  The
    caching allocator only hands a freed block to work queued after ours on
    the same stream, so the tensor may die once the hook returns."""
    name = "device"

    @staticmethod
    def prepare(t):
        return _supported(t.detach())

    @staticmethod
    def observe(handle, point_id, view, token_base, overlap=None, source=None):
        err = _lib.at_error()
        desc = view.at_tensor()
        if overlap is None:
            stream = torch.cuda.current_stream(view.tensor.device).cuda_stream
        else:
            stream = overlap.stream_for(view.tensor, point_id).cuda_stream
        if source is None:
            status = _lib.lib.at_writer_observe_device(handle, point_id, ctypes.byref(desc),
                                                       token_base, ctypes.c_void_p(stream),
                                                       ctypes.byref(err))
        else:
            status = _lib.lib.at_writer_observe_device_same(handle, point_id, source,
                                                            ctypes.byref(desc), token_base,
                                                            ctypes.c_void_p(stream),
                                                            ctypes.byref(err))
        _lib.check(status, err)


_cuda_in_library = None


def choose_path(tensor):
    """The path a tensor takes into the library: CUDA tensors stay on the GPU
    when libacttrace was built with CUDA and sees a device, everything else
    goes through host memory."""
    global _cuda_in_library
    if tensor.device.type != "cuda":
        return HostPath
    if _cuda_in_library is None:
        _cuda_in_library = bool(_lib.lib.at_cuda_available())
    return DevicePath if _cuda_in_library else HostPath


class Writer:
    """An open trace.  Use as a context manager: closed (complete=1) on normal
    exit, abandoned (complete=0) when an exception leaves the block.

    Options are those of struct at_writer_options: model, source_dtype, notes,
    producer (strings), hist (bool), extremes (K), sample ("every:N",
    "first:N", "reservoir:N" or None), sample_seed (the reservoir's, an
    unsigned 64-bit integer), max_samples, compression_level (1..19), threads,
    sample_bytes_in_flight (bytes of full sample chunks that may wait for the
    background writer; None: 512 MiB), when_busy ("wait", the default, or
    "drop": chunks beyond that are dropped and counted), rank and world_size
    (which process of a distributed capture writes the file) and overlap
    (bool: CUDA tensors are reduced on a side stream; see Overlap)."""

    def __init__(self, path, *, model=None, source_dtype=None, notes=None, producer=None,
                 hist=True, extremes=None, sample=None, max_samples=None,
                 compression_level=None, threads=None, sample_bytes_in_flight=None,
                 when_busy=None, rank=0, world_size=1, sample_seed=0, overlap=False):
        self.path = os.fspath(path)
        self.overlap = Overlap() if overlap else None
        opts = _lib.at_writer_options()
        _lib.lib.at_writer_options_init(ctypes.byref(opts))
        for field, value in (("model", model), ("source_dtype", source_dtype), ("notes", notes),
                             ("producer", producer)):
            if value is not None:
                setattr(opts, field, str(value).encode())
        opts.hist = 1 if hist else 0
        opts.sample_policy, opts.sample_n = parse_sample(sample)
        for field, value in (("extremes", extremes), ("max_samples", max_samples),
                             ("compression_level", compression_level), ("threads", threads),
                             ("sample_bytes_in_flight", sample_bytes_in_flight)):
            if value is not None:
                setattr(opts, field, int(value))
        if when_busy is not None:
            if when_busy not in ("wait", "drop"):
                raise Error(f"{self.path}: when_busy must be 'wait' or 'drop', not {when_busy!r}")
            opts.when_busy = 1 if when_busy == "drop" else 0
        opts.rank, opts.world_size = int(rank), int(world_size)
        opts.sample_seed = int(sample_seed) & (2**64 - 1)
        handle = ctypes.c_void_p()
        err = _lib.at_error()
        _lib.check(_lib.lib.at_writer_create(ctypes.byref(handle), self.path.encode(),
                                             ctypes.byref(opts), ctypes.byref(err)), err)
        self._handle = handle
        # ctypes drops the GIL during a call and a writer is not thread-safe:
        # hooks of a model run from several threads take turns here.
        self._lock = threading.Lock()
        self.sample_policy = opts.sample_policy
        self.sample_n = opts.sample_n

    # ------------------------------------------------------------ state
    @property
    def closed(self):
        return self._handle is None

    def _live(self):
        if self._handle is None:
            raise Error(f"{self.path}: the trace is already closed")
        return self._handle

    # ------------------------------------------------------------ writing
    def add_point(self, name, *, channels, layer=-1, component="other", site=None, module="",
                  module_class="", direction="out", channel_offset=0, full_channels=0,
                  replicated=False):
        """Add a recording point; returns its id for observe().  A point of a
        tensor-parallel rank holds channels [channel_offset, channel_offset +
        channels) of a tensor full_channels wide (0: channels)."""
        desc = _lib.at_point_desc(
            name=name.encode(), layer=int(layer), component=component.encode(),
            site=(site if site is not None else name).encode(), module=module.encode(),
            module_class=module_class.encode(), direction=direction.encode(),
            channels=int(channels), channel_offset=int(channel_offset),
            full_channels=int(full_channels), replicated=1 if replicated else 0)
        point_id = ctypes.c_int32()
        err = _lib.at_error()
        with self._lock:
            status = _lib.lib.at_writer_add_point(self._live(), ctypes.byref(desc),
                                                  ctypes.byref(point_id), ctypes.byref(err))
        _lib.check(status, err)
        return point_id.value

    def add_tokens(self, ids, seq, pos):
        """Append tokens (three equally long 1-D integer sequences or tensors);
        returns the index of the first in /tokens."""
        columns = [torch.as_tensor(c).reshape(-1).to(device="cpu", dtype=torch.int32).contiguous()
                   for c in (seq, pos, ids)]
        n = columns[0].numel()
        if any(c.numel() != n for c in columns):
            raise Error(f"{self.path}: add_tokens: seq, pos and id differ in length")
        base = ctypes.c_int64()
        err = _lib.at_error()
        ptrs = [c.data_ptr() if n else None for c in columns]
        with self._lock:
            status = _lib.lib.at_writer_add_tokens(self._live(), ptrs[0], ptrs[1], ptrs[2], n,
                                                   ctypes.byref(base), ctypes.byref(err))
        _lib.check(status, err)
        return base.value

    def observe(self, point_id, tensor, token_base, layout=ROWS, same_as=None):
        """Fold a tensor into a point: row (b, r) is token token_base + b*rows + r.
        same_as: the id of a point whose last observation was this very
        tensor, unchanged since, with this token_base (the caller's promise:
        see at_writer_observe_device_same); the GPU then takes that point's
        result instead of reading the tensor again when it can prove it is
        this point's too.  The statistics are the same either way."""
        path, view = self.view(tensor, layout)
        self.observe_view(point_id, path, view, token_base, same_as)

    @staticmethod
    def view(tensor, layout=ROWS):
        """(path, TensorView) of a tensor, ready for observe_view()."""
        path = choose_path(tensor)
        return path, TensorView(path.prepare(tensor), layout)

    def observe_view(self, point_id, path, view, token_base, same_as=None):
        with self._lock:
            path.observe(self._live(), point_id, view, token_base, self.overlap, same_as)

    def overlap_join(self):
        """The end of a forward with overlap=True: see Overlap.join."""
        if self.overlap is not None:
            self.overlap.join()

    def overlap_changed(self):
        """Point ids whose observed tensors were changed in place after their
        observation on the side stream (overlap=True), since the last call;
        a warning says so.  [] without overlap."""
        if self.overlap is None:
            return []
        with self._lock:
            changed = self.overlap.changed()
        if changed:
            warnings.warn(f"acttrace: {self.path}: overlap=True: {len(changed)} observed "
                          f"tensor(s) were changed in place after their observation (point ids "
                          f"{sorted(set(changed))[:5]}); their statistics may include the new "
                          f"values: capture without overlap", RuntimeWarning, stacklevel=2)
        return changed

    def add_weight(self, module, module_class, weight, transposed=False, where=None):
        """Weight statistics of a module: a matrix [out, in] (transposed=True
        for [in, out] storage such as GPT-2's Conv1D), a vector (a norm's
        gamma), or a convolution kernel [out, in, k] seen as [out, in*k].

        where: "device" summarises with torch where the tensor lives (in
        float64), so that a GPU's weights never cross to the host; "host"
        copies the tensor to the host and lets libacttrace summarise it;
        None (the default) takes "device" for tensors not in host memory."""
        w = weight.detach()
        if transposed:
            w = w.t()
        if w.dim() == 1:
            w = w.unsqueeze(0)
        elif w.dim() > 2:
            w = w.reshape(w.shape[0], -1)
        if where is None:
            where = "host" if w.device.type == "cpu" else "device"
        if where == "device":
            self._add_weight_summary(module, module_class, w)
            return
        w = HostPath.prepare(w)
        view = TensorView(w, ROWS)
        desc = view.at_tensor()
        err = _lib.at_error()
        with self._lock:
            status = _lib.lib.at_writer_add_weight(self._live(), module.encode(),
                                                   module_class.encode(), ctypes.byref(desc),
                                                   ctypes.byref(err))
        _lib.check(status, err)

    def _add_weight_summary(self, module, module_class, w):
        """Row and column absmax and mean |w|, and each row's sum of w^2,
        computed by torch where w lives, in float64 (as libacttrace does on
        the host); only the five vectors come to the host."""
        a = w.abs()  # exact in any dtype; sums are taken in float64 without a float64 copy
        rows, cols = w.shape
        lines = [a.amax(dim=1).to(torch.float64), a.sum(dim=1, dtype=torch.float64) / cols,
                 a.amax(dim=0).to(torch.float64), a.sum(dim=0, dtype=torch.float64) / rows,
                 _row_sumsq(w)]
        lines = [x.cpu().contiguous() for x in lines]
        values = w.reshape(-1).to(torch.float32).cpu().contiguous() if w.shape[0] == 1 else None
        s = _lib.at_weight_summary(
            rows=rows, cols=cols,
            row_absmax=lines[0].data_ptr(), row_absmean=lines[1].data_ptr(),
            col_absmax=lines[2].data_ptr(), col_absmean=lines[3].data_ptr(),
            values=values.data_ptr() if values is not None else None,
            row_sumsq=lines[4].data_ptr())
        err = _lib.at_error()
        with self._lock:
            status = _lib.lib.at_writer_add_weight_summary(self._live(), module.encode(),
                                                           module_class.encode(),
                                                           ctypes.byref(s), ctypes.byref(err))
        _lib.check(status, err)

    def checkpoint(self):
        self.overlap_changed()
        err = _lib.at_error()
        with self._lock:
            status = _lib.lib.at_writer_checkpoint(self._live(), ctypes.byref(err))
        _lib.check(status, err)

    def close(self):
        """Checkpoint, mark the trace complete and close it (the handle is gone
        afterwards, also on failure)."""
        self.overlap_changed()
        err = _lib.at_error()
        with self._lock:
            handle, self._handle = self._live(), None
            status = _lib.lib.at_writer_close(handle, ctypes.byref(err))
        _lib.check(status, err)

    def abandon(self):
        """Close without marking the trace complete; a no-op once closed."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                _lib.lib.at_writer_abandon(handle)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abandon()
        return False

    def __del__(self):
        # A writer dropped without close() leaves an incomplete trace, never a
        # complete one.
        if getattr(self, "_handle", None) is not None and hasattr(self, "_lock"):
            self.abandon()
