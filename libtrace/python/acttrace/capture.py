"""capture.py: record a model's activations into a trace while it runs.

    with acttrace.capture(model, "run.h5", sample="every:64"):
        model(input_ids)

Hooks go on the catalogue's recording points (pre-hooks for inputs, forward
hooks for outputs), on the model itself and on its token embedding, which
is where the token stream is taken from; all of them are removed when the
block is left, normally or by an exception.

Token bookkeeping: each forward of a batch [B, T] appends B*T tokens to
/tokens (seq: a running sequence counter, pos: t, id: the input id) and
every point observes that forward's tensors with the batch's token_base, so
row (b, t) is token token_base + b*T + t.  The ids come from
acttrace.tokens(ids) when it was called before the forward, else from the
model's input_ids, else from the embedding's input; a forward with none of
these (inputs_embeds) gets id -1 and its shape from the first tensor seen.

Data parallelism: under torch.distributed (torchrun) with several ranks,
every rank records its own trace (run.h5 -> run.rank0.h5, run.rank1.h5, ...,
or a path with "{rank}" in it), and merge=True (or merge=PATH) has rank 0
merge them after a barrier at the end of the block, as if one process had
seen every rank's tokens (acttrace.merge).

Tensor parallelism: when the model's tensor-parallel plan (transformers'
tp_plan="auto") has sharded modules at recording points, every rank sees the
same tokens and records the channel slices it holds, rank 0 alone records
the tensors that are whole on every rank (acttrace.parallel), and the merge
(the same merge=True) assembles the slices into whole points."""
import os
import time
import warnings
import weakref

import torch

from . import _hooks, parallel
from ._lib import Error, version
from .catalogue import module_at, points as catalogue_points, resolve_name, weight_of
from .catalogue import embedding_module
from .merge import merge as merge_traces
from .writer import CONV, Writer, parse_sample

_active = []  # open captures, innermost last


def tokens(input_ids, seq=None, pos=None):
    """Name the tokens of the next forward for every open capture: input_ids
    [B, T] (or [T]); seq: the first sequence number, or [B] or [B, T] numbers
    (default: the capture's running counter); pos: [T] or [B, T] (default
    0..T-1)."""
    if not _active:
        raise Error("acttrace.tokens: no capture is open")
    for c in _active:
        c.tokens(input_ids, seq, pos)


def _select_points(found, wanted):
    if wanted is None:
        return found
    if callable(wanted):
        return [p for p in found if wanted(p)]
    wanted = list(wanted)
    by_name = {p.name: p for p in found}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise Error(f"points: no recording point named '{unknown[0]}' in this model")
    keep = set(wanted)
    return [p for p in found if p.name in keep]


def _world():
    """(rank, world size, torch.distributed) of the process group, or (0, 1,
    None) outside one."""
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def rank_path(path, rank):
    """The trace one rank writes: "{rank}" in path replaced by the rank, or
    ".rankN" put before the extension (run.h5 -> run.rank3.h5)."""
    if "{rank}" in path:
        return path.replace("{rank}", str(rank))
    stem, ext = os.path.splitext(path)
    return f"{stem}.rank{rank}{ext}"


def _merged_path(path, merge):
    """Where merge= puts the merged trace: True means path itself, which then
    may not be a "{rank}" template."""
    if merge is True:
        if "{rank}" in path:
            raise Error(f"{path}: merge=True needs a plain path for the merged trace "
                        "(or merge=PATH)")
        return path
    return os.fspath(merge)


class Recent:
    """The last few observations of a forward, so that a point shown the very
    tensor another point has just observed (q_proj's input is the norm's
    output; a layer's input is the one before's output) can name it as its
    source (Writer.observe's same_as).  A tensor is the same when it is the
    same object, still alive (held by a weak reference: its memory cannot
    have been reused) and unchanged: its version counter is where it was.
    Tensors made under torch.inference_mode() keep no version, so nothing
    can show that they are unchanged: they are named only when trusted
    (dedup="trust"), which takes the object's identity as enough, as
    overlap=True does (transformers' models change no recorded tensor in
    place between two hooks).  Forgotten at the end of each forward."""

    SIZE = 4  # the 290-point benchmark's q.in, k.in, v.in see the norm's output 2 to 4 back

    def __init__(self, trust=False):
        self.trust = trust
        self.entries = []  # (weak reference, version or None, layout, token_base, point id)

    @staticmethod
    def _version(tensor):
        return None if tensor.is_inference() else tensor._version

    def source_of(self, tensor, layout, token_base):
        """The id of the point that observed this tensor last, or None."""
        for ref, version, seen_layout, seen_base, point_id in reversed(self.entries):
            if ref() is tensor:
                if seen_layout == layout and seen_base == token_base and \
                        version == self._version(tensor) and (version is not None or self.trust):
                    return point_id
                return None
        return None

    def note(self, tensor, layout, token_base, point_id):
        try:
            ref = weakref.ref(tensor)
        except TypeError:
            return
        if len(self.entries) == self.SIZE:
            del self.entries[0]
        self.entries.append((ref, self._version(tensor), layout, token_base, point_id))

    def clear(self):
        self.entries = []


def _model_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).replace("torch.", "")
    return ""


class Capture:
    """A capture in progress; see capture()."""

    def __init__(self, model, path, catalogue="auto", *, sample=None, hist=True, extremes=None,
                 max_samples=None, compression_level=None, threads=None, weights=True,
                 points=None, model_name=None, notes=None, checkpoint_every=0,
                 checkpoint_seconds=0,
                 sample_bytes_in_flight=None, when_busy=None, overlap=False, merge=False,
                 sample_seed=0, dedup=True):
        if not isinstance(model, torch.nn.Module):
            raise Error(f"capture: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.rank, self.world_size, self._dist = _world()
        path = os.fspath(path)
        self._given_path = path
        self.merged_path = _merged_path(path, merge) if merge else None
        self.path = rank_path(path, self.rank) if self.world_size > 1 or "{rank}" in path else path
        if self.merged_path is not None and self.world_size > 1 and \
                os.path.abspath(self.merged_path) in {
                    os.path.abspath(rank_path(path, r)) for r in range(self.world_size)}:
            raise Error(f"{self.merged_path}: the merged trace would overwrite a rank's trace")
        self.catalogue = resolve_name(model, catalogue)
        self.points = _select_points(catalogue_points(model, self.catalogue), points)
        if not self.points:
            raise Error("capture: no recording points selected")
        self._weight_points = self.points  # every rank walks them: gathering weights is collective
        self.slices, self._sharded = parallel.layout(model, self.points, self.rank,
                                                     self.world_size) or (None, {})
        if self.slices is not None:  # what is whole on every rank, rank 0 records
            self.points = [p for p in self.points
                           if self.rank == 0 or not self.slices[p.name].replicated]
        parse_sample(sample)  # refuse a bad policy before anything is created
        config = getattr(model, "config", None)
        self._writer_options = dict(
            model=model_name or getattr(config, "_name_or_path", "") or type(model).__name__,
            source_dtype=_model_dtype(model), notes=notes,
            producer=f"acttrace {version()} (python, torch {torch.__version__})",
            hist=hist, extremes=extremes, sample=sample, max_samples=max_samples,
            compression_level=compression_level, threads=threads,
            sample_bytes_in_flight=sample_bytes_in_flight, when_busy=when_busy,
            rank=self.rank, world_size=self.world_size, sample_seed=sample_seed, overlap=overlap)
        self.record_weights = weights
        self.checkpoint_every = int(checkpoint_every)
        self.checkpoint_seconds = float(checkpoint_seconds)
        if not self.checkpoint_seconds >= 0 or self.checkpoint_every < 0:
            raise Error(f"capture: checkpoint_every {checkpoint_every} and checkpoint_seconds "
                        f"{checkpoint_seconds} must be >= 0")
        self._last_checkpoint = time.monotonic()
        if dedup not in (True, False, "trust"):
            raise Error(f"capture: dedup must be True, False or 'trust', not {dedup!r}")
        self._recent = Recent(trust=dedup == "trust") if dedup else None
        self.writer = None
        self.observations = [0] * len(self.points)
        self.forwards = 0
        self.tokens_seen = 0
        self._point_ids = []
        self._handles = []
        self._next_seq = 0
        self._pending = None   # (token_base, B, T) named by tokens() for the next forward
        self._current = None   # the same for the forward in progress
        self._claimed = False  # the embedding has seen the current batch

    # ------------------------------------------------------------ lifecycle
    def __enter__(self):
        if self.writer is not None:
            raise Error(f"{self.path}: a capture can be entered only once")
        created = False
        try:
            self.writer = Writer(self.path, **self._writer_options)
            created = True
            for p in self.points:
                s = self.slices[p.name] if self.slices else parallel.Slice(0, p.channels, 0, False)
                self._point_ids.append(self.writer.add_point(
                    p.name, channels=s.channels, layer=p.layer, component=p.component,
                    site=p.site, module=p.module, module_class=p.module_class,
                    direction=p.direction, channel_offset=s.offset,
                    full_channels=s.full_channels, replicated=s.replicated))
            if self.record_weights:
                self._add_weights()
            self._attach()
        except BaseException:
            _hooks.remove_all(self._handles)
            if self.writer is not None:
                self.writer.abandon()
            if created:
                # Nothing was recorded: leave no file behind.
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            raise
        _active.append(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            _hooks.remove_all(self._handles)
        finally:
            if self in _active:
                _active.remove(self)
            if exc_type is None:
                try:
                    self.writer.close()
                except BaseException:
                    self._skip_merge()  # the other ranks must not wait for this one
                    raise
                self._warn_unobserved()
                if self.merged_path is not None:
                    self._merge_ranks()
            else:
                # Keep what was seen (complete=0 says the trace is partial).
                try:
                    self.writer.checkpoint()
                except Error:
                    pass
                self.writer.abandon()
                self._skip_merge()
        return False

    def rank_paths(self):
        """The traces of every rank (this one's alone outside a process group)."""
        if self.world_size == 1:
            return [self.path]
        return [rank_path(self._given_path, r) for r in range(self.world_size)]

    def _merge_ranks(self):
        """After every rank has closed its trace (a barrier), rank 0 merges
        them into merged_path; the others wait for it (a second barrier), so
        that the merged trace exists when the block ends on any rank.  A
        failed merge raises on rank 0 and leaves the ranks' traces."""
        if self._dist is not None:
            self._dist.barrier()
        try:
            if self.rank == 0 and (self.world_size > 1 or self.merged_path != self.path):
                merge_traces(self.merged_path, self.rank_paths())
        finally:
            if self._dist is not None:
                self._dist.barrier()

    def _skip_merge(self):
        """A rank leaving by an exception still meets the others at the merge's
        two barriers, so that they do not wait for it forever; rank 0 then
        refuses to merge its incomplete trace."""
        if self.merged_path is not None and self._dist is not None:
            self._dist.barrier()
            self._dist.barrier()

    def checkpoint(self):
        """Write everything seen so far; a crash later leaves this state."""
        self.writer.checkpoint()

    def _warn_unobserved(self):
        silent = [p.name for p, n in zip(self.points, self.observations) if n == 0]
        if silent and self.tokens_seen:
            more = f" and {len(silent) - 3} more" if len(silent) > 3 else ""
            warnings.warn(f"acttrace: {self.path}: {len(silent)} recording points saw no data "
                          f"({', '.join(silent[:3])}{more}); the model may bypass these modules "
                          f"(fused kernels, a cache path)", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------ weights
    def _add_weights(self):
        """Under tensor parallelism a sharded weight is gathered whole (every
        rank takes part) and rank 0 records every weight."""
        done = set()
        for p in self._weight_points:
            if not p.module or p.module in done:
                continue
            done.add(p.module)
            module = module_at(self.model, p.module)
            found = weight_of(module)
            if found is None:
                continue
            w, transposed = found
            with torch.no_grad():
                if p.module in self._sharded:
                    w = parallel.whole_weight(module, self._sharded[p.module], self.world_size,
                                              self._dist)
                if self.slices is None or self.rank == 0:
                    self.writer.add_weight(p.module, p.module_class, parallel.local(w),
                                           transposed)

    # ------------------------------------------------------------ hooks
    def _attach(self):
        self._handles.extend(_hooks.force_reference_paths(self.model))
        self._handles.append(_hooks.register_pre(self.model, self._root_pre))
        self._handles.append(_hooks.register_post(self.model, self._root_post))
        embedding = embedding_module(self.model, self.catalogue)
        if embedding is not None:
            self._handles.append(_hooks.register_pre(embedding, self._embedding_pre))
        for index, p in enumerate(self.points):
            module = module_at(self.model, p.module)
            if p.direction == "in":
                self._handles.append(_hooks.register_pre(module, self._in_hook(index)))
            else:
                self._handles.append(_hooks.register_post(module, self._out_hook(index)))

    def _in_hook(self, index):
        point = self.points[index]

        def hook(module, args, kwargs):
            _, x = _hooks.find_input(args, kwargs)
            if x is None:
                raise Error(f"{self.path}: point '{point.name}': {point.module} got no tensor input")
            self._observe(index, x)
        return hook

    def _out_hook(self, index):
        point = self.points[index]

        def hook(module, args, kwargs, output):
            _, y = _hooks.find_output(output)
            if y is None:
                raise Error(f"{self.path}: point '{point.name}': {point.module} returned no tensor")
            if point.layout == CONV:
                t = _hooks.conv_length(args, kwargs)
                if t is not None:
                    y = y[..., :t]
            self._observe(index, y)
        return hook

    @staticmethod
    def _ids_of(args, kwargs):
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input_ids")
        if isinstance(x, torch.Tensor) and not x.is_floating_point() and 1 <= x.dim() <= 2:
            return x
        return None

    def _root_pre(self, module, args, kwargs):
        self._current, self._claimed = None, False
        if self._recent is not None:
            self._recent.clear()
        if self._pending is not None:
            self._current, self._pending = self._pending, None
            return
        ids = self._ids_of(args, kwargs)
        if ids is not None:
            self._current = self._add_batch(ids)

    def _root_post(self, module, args, kwargs, output):
        self._current = None
        if self._recent is not None:
            self._recent.clear()
        self.forwards += 1
        self.writer.overlap_join()
        self.writer.overlap_changed()
        if self._checkpoint_due():
            self.writer.checkpoint()
            self._last_checkpoint = time.monotonic()

    def _checkpoint_due(self):
        """After a forward: every checkpoint_every forwards, or once
        checkpoint_seconds have passed since the last checkpoint (measured
        from its end, so that slow checkpoints cannot take all the time)."""
        if self.checkpoint_every > 0 and self.forwards % self.checkpoint_every == 0:
            return True
        return self.checkpoint_seconds > 0 and \
            time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds

    def _embedding_pre(self, module, args, kwargs):
        ids = self._ids_of(args, kwargs)
        if ids is None:
            return
        if self._current is not None and not self._claimed:
            self._claimed = True
            return
        if self._pending is not None:
            self._current, self._pending = self._pending, None
        else:
            self._current = self._add_batch(ids)
        self._claimed = True

    # ------------------------------------------------------------ tokens
    def _add_batch(self, ids, seq=None, pos=None):
        ids = ids.detach().to("cpu")
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise Error(f"{self.path}: token ids must be [B, T], got {list(ids.shape)}")
        batches, length = ids.shape
        if seq is None:
            seq = self._next_seq
        seq = torch.as_tensor(seq, dtype=torch.int64)
        if seq.dim() == 0:
            seq = seq + torch.arange(batches, dtype=torch.int64)
        if seq.dim() == 1:
            seq = seq.reshape(batches, 1).expand(batches, length)
        pos = torch.arange(length, dtype=torch.int64) if pos is None else \
            torch.as_tensor(pos, dtype=torch.int64)
        if pos.dim() == 1:
            pos = pos.reshape(1, length).expand(batches, length)
        if tuple(seq.shape) != (batches, length) or tuple(pos.shape) != (batches, length):
            raise Error(f"{self.path}: tokens: seq and pos must match ids {list(ids.shape)}")
        base = self.writer.add_tokens(ids, seq, pos)
        if seq.numel():
            self._next_seq = max(self._next_seq, int(seq.max()) + 1)
        self.tokens_seen += batches * length
        return base, batches, length

    def tokens(self, input_ids, seq=None, pos=None):
        """Name the tokens of this capture's next forward (see acttrace.tokens)."""
        self._pending = self._add_batch(torch.as_tensor(input_ids), seq, pos)

    def _batch_for(self, view, layout):
        """The (token_base, B, T) a tensor belongs to, making one up (ids -1)
        when the forward named no tokens."""
        if self._current is None and self._pending is not None:
            self._current, self._pending = self._pending, None
        if self._current is None:
            shape = (view.batches, view.rows)
            self._current = self._add_batch(torch.full(shape, -1, dtype=torch.int32))
        return self._current

    def _observe(self, index, tensor):
        point = self.points[index]
        tensor = parallel.local(tensor)  # a DTensor seen between tensor-parallel hooks
        with torch.no_grad():
            path, view = self.writer.view(tensor, point.layout)
        if self.slices is not None:
            parallel.check_width(point, self.slices[point.name], view.channels, self.path)
        base, batches, length = self._batch_for(view, point.layout)
        if view.tokens != batches * length:
            raise Error(f"{self.path}: point '{point.name}': tensor {list(tensor.shape)} has "
                        f"{view.tokens} rows, the forward has {batches}x{length} tokens")
        point_id = self._point_ids[index]
        recent = self._recent
        if recent is None:
            self.writer.observe_view(point_id, path, view, base)
        else:
            source = recent.source_of(tensor, point.layout, base)
            self.writer.observe_view(point_id, path, view, base, source)
            recent.note(tensor, point.layout, base, point_id)
        self.observations[index] += 1


def capture(model, path, catalogue="auto", **options):
    """Record the activations of every forward of model, inside a with block,
    into the trace at path.

    catalogue: "auto" (by model.config.model_type), "llama", "gpt2", "mamba",
    "recurrent_gemma" or "generic".  Options: sample ("every:N", "first:N",
    "reservoir:N": a uniform sample of N rows a point, held in memory until
    the checkpoints), sample_seed (the reservoir's), hist (bool), extremes (K), max_samples, compression_level, threads,
    weights (record weight statistics, default True), points (names or a
    predicate on Point: a subset), model_name, notes, checkpoint_every
    (forwards between checkpoints, 0: only at the end), checkpoint_seconds
    (a checkpoint after the first forward that ends at least this long after
    the last checkpoint, 0: none; a killed capture keeps its last
    checkpoint, acttrace-format(5)), sample_bytes_in_flight,
    when_busy ("wait" or "drop", when the sample writer is behind), overlap
    (reduce CUDA tensors on a side stream; writer.Overlap says what it
    assumes), merge (under torch.distributed: True, or the merged trace's
    path; see the module's doc) and dedup (default True: a point shown the
    very tensor another point has just observed in the same forward takes
    that point's result on the GPU instead of reading the tensor again, with
    the same statistics; Recent says how "the same" is decided; "trust":
    also for tensors made under torch.inference_mode(), whose in-place
    changes no one can see).

    Leaving the block normally closes the trace (complete=1); leaving it by
    an exception keeps what was seen in an incomplete trace (complete=0).
    Errors (Error) come before any hook or file when the catalogue is
    unknown, matches nothing, or the file cannot be created."""
    return Capture(model, path, catalogue, **options)
