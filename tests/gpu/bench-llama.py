#!/usr/bin/env python3
"""bench-llama.py: end-to-end cost of capture on a Llama-style model of about
1B parameters (transformers' LlamaForCausalLM from a config, random weights,
bf16, SDPA), batch 8 x 2048 tokens, forward hooks at every recording point
(every Linear but the LM head and every RMSNorm, input and output: 292
points), in four variants measured in one run:

  none          no hooks: the baseline
  torch         a pure-PyTorch per-channel hook, the published studies' method:
                running count, mean and M2 (Chan et al.) and min/max/absmax
                with torch ops, on the GPU, no host sync
  sum           the floor of any one-pass statistic: each point's tensor
                summed over its rows, x.sum(0, dtype=float32), PyTorch's own
                column reduction (the kernel's yardstick), result dropped
  sum-dedup     the same, a point shown the very tensor one of the last four
                points summed skipping it (as acttrace-dedup copies)
  acttrace      at_writer_observe_device on the current stream: statistics
  acttrace-s64  the same with 1-in-64 token sampling (AT_SAMPLE_EVERY 64)
  acttrace-dedup  acttrace where a point is shown the very tensor one of the
                last four points observed (q/k/v_proj.in: the input norm's
                output; gate/up_proj.in: the post-attention norm's) calls
                at_writer_observe_device_same: the GPU copies that point's
                statistics instead of reading the tensor again
  capture       acttrace.capture(model, path): the package's default (llama)
                catalogue, weights recorded, tokens from input_ids
  capture-s64c  the same with sample="every:64", max_samples=4096
  capture-s64c-mem  the same with sample_bytes_in_flight=12 GiB: the rows
                wait in memory for the writer thread instead of the forward
  capture-overlap  capture with overlap=True: the statistics kernels on a
                side stream, their launch tails overlapping the model's work
  capture-nodedup  capture with dedup=False: every point reads its tensor
  capture-trust  capture with dedup="trust": a point shown the very tensor
                another has just observed copies that point's statistics
                (layer.in and input_layernorm.in are the layer before's
                output); the forwards here run under inference_mode, whose
                tensors have no version counter, so capture's default
                (dedup=True, which needs one) cannot use it
  capture-r4096  capture with sample="reservoir:4096"
  capture-s64c-trust  capture-s64c with dedup="trust"
  capture-s64c-trust-l1  the same at zstd level 1
  capture-trust-nohist  capture without histograms (hist=False); -noext:
                without extremes (extremes=0); -pad: 21 KiB more shared
                memory a launch, in a library built with -DATC_EXTREME_COUNTS
                (diagnostics)
  (words combine: capture-s64c-mem-trust-l1, capture-r4096-mem-trust...)

After the timed variants, the traces of capture and capture-nodedup (and
acttrace and acttrace-dedup) are compared when both were run: --trace-equal
names the build's trace-equal, which must find them identical.

For each: warm-up forwards, then the median over --repeats forwards of the
time between CUDA events around model(input_ids) (hook work included, since
it is queued on the same stream; with acttrace, checkpoint and close are
after the timed forwards and reported apart), and the first warm-up
forward's time.  Prints a TSV table and the ratios to `none`; --json FILE
keeps the raw times.  --kernel-times N profiles N more forwards of each
variant: device time by kernel group (and --kernel-trace DIR keeps them as
Chrome traces).

A minimal ctypes binding of its own (the project's Python package has no
device path yet): ACTTRACE_LIB names a libacttrace.so built with CUDA.
Exit 77 without a GPU, torch or transformers."""
import argparse
import ctypes
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


try:
    import torch
except ImportError:
    skip("torch is not importable")
try:
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError:
    skip("transformers is not importable")

AT_BF16, AT_F16, AT_F32 = 2, 1, 0
DTYPES = {torch.bfloat16: AT_BF16, torch.float16: AT_F16, torch.float32: AT_F32}
AT_SAMPLE_NONE, AT_SAMPLE_EVERY = 0, 1


class at_error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class at_tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("batches", ctypes.c_int64),
                ("rows", ctypes.c_int64), ("channels", ctypes.c_int64),
                ("batch_stride", ctypes.c_int64), ("row_stride", ctypes.c_int64),
                ("channel_stride", ctypes.c_int64)]


class at_writer_options(ctypes.Structure):
    _fields_ = [("model", ctypes.c_char_p), ("source_dtype", ctypes.c_char_p),
                ("notes", ctypes.c_char_p), ("producer", ctypes.c_char_p),
                ("hist", ctypes.c_int), ("extremes", ctypes.c_int32),
                ("sample_policy", ctypes.c_int), ("sample_n", ctypes.c_int64),
                ("max_samples", ctypes.c_int64), ("compression_level", ctypes.c_int),
                ("threads", ctypes.c_int), ("sample_bytes_in_flight", ctypes.c_int64),
                ("when_busy", ctypes.c_int), ("rank", ctypes.c_int32),
                ("world_size", ctypes.c_int32), ("sample_seed", ctypes.c_uint64)]


class at_point_desc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("layer", ctypes.c_int32),
                ("component", ctypes.c_char_p), ("site", ctypes.c_char_p),
                ("module", ctypes.c_char_p), ("module_class", ctypes.c_char_p),
                ("direction", ctypes.c_char_p), ("channels", ctypes.c_int64),
                ("channel_offset", ctypes.c_int64), ("full_channels", ctypes.c_int64),
                ("replicated", ctypes.c_int)]


def load_library(path):
    lib = ctypes.CDLL(path)
    P = ctypes.POINTER
    sigs = {
        "at_cuda_available": (ctypes.c_int, []),
        "at_writer_options_init": (None, [P(at_writer_options)]),
        "at_writer_create": (ctypes.c_int, [P(ctypes.c_void_p), ctypes.c_char_p,
                                            P(at_writer_options), P(at_error)]),
        "at_writer_add_point": (ctypes.c_int, [ctypes.c_void_p, P(at_point_desc),
                                               P(ctypes.c_int32), P(at_error)]),
        "at_writer_add_tokens": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p,
                                                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                P(ctypes.c_int64), P(at_error)]),
        "at_writer_observe_device": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                                    P(at_tensor), ctypes.c_int64,
                                                    ctypes.c_void_p, P(at_error)]),
        "at_writer_observe_device_same": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                                         ctypes.c_int32, P(at_tensor),
                                                         ctypes.c_int64, ctypes.c_void_p,
                                                         P(at_error)]),
        "at_writer_checkpoint": (ctypes.c_int, [ctypes.c_void_p, P(at_error)]),
        "at_writer_close": (ctypes.c_int, [ctypes.c_void_p, P(at_error)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


def check(status, err, what):
    if status != 0:
        raise RuntimeError(f"{what}: {err.message.decode(errors='replace')} ({status})")


# ---------------------------------------------------------------- the model

def build_model(args):
    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=4096, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            try:
                model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
            except (TypeError, ValueError):
                config._attn_implementation = "sdpa"
                model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to(device="cuda", dtype=torch.bfloat16).eval()
    return model


def recording_points(model):
    """(name, module, direction, channels) for every Linear but the LM head and
    every RMSNorm, input and output."""
    points = []
    for name, module in model.named_modules():
        if name.endswith("lm_head"):
            continue
        if isinstance(module, torch.nn.Linear):
            points.append((name + ".in", module, "in", module.in_features))
            points.append((name + ".out", module, "out", module.out_features))
        elif type(module).__name__.endswith("RMSNorm"):
            width = module.weight.shape[0]
            points.append((name + ".in", module, "in", width))
            points.append((name + ".out", module, "out", width))
    return points


# ---------------------------------------------------------------- hooks

class Hooks:
    def __init__(self):
        self.handles = []

    def add(self, module, direction, fn):
        if direction == "in":
            self.handles.append(module.register_forward_pre_hook(lambda m, a: fn(a[0])))
        else:
            self.handles.append(module.register_forward_hook(lambda m, a, out: fn(out)))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


class TorchStats:
    """Running per-channel statistics with torch ops (the published method)."""

    def __init__(self, channels):
        self.n = 0
        self.mean = torch.zeros(channels, device="cuda", dtype=torch.float32)
        self.m2 = torch.zeros_like(self.mean)
        self.min = torch.full_like(self.mean, float("inf"))
        self.max = torch.full_like(self.mean, float("-inf"))
        self.absmax = torch.zeros_like(self.mean)

    def add(self, x):
        x = x.reshape(-1, x.shape[-1]).float()
        nb = x.shape[0]
        var, mean = torch.var_mean(x, dim=0, unbiased=False)
        n = self.n + nb
        delta = mean - self.mean
        self.mean += delta * (nb / n)
        self.m2 += var * nb + delta * delta * (self.n * nb / n)
        self.n = n
        lo, hi = torch.aminmax(x, dim=0)
        torch.minimum(self.min, lo, out=self.min)
        torch.maximum(self.max, hi, out=self.max)
        torch.maximum(self.absmax, x.abs().amax(dim=0), out=self.absmax)


class LastFour:
    """The last four tensors a variant read, each with a tag (its point).
    Under inference_mode there is no version to check: this model changes no
    hooked tensor in place, so the same object is the same values."""

    def __init__(self):
        self.seen = []

    def source_of(self, x):
        """The tag of this very tensor among the last four, or None."""
        return next((tag for t, tag in reversed(self.seen) if t is x), None)

    def add(self, x, tag):
        self.seen = self.seen[-3:] + [(x, tag)]


class ColumnSums:
    """x.sum(0) at every point: what reading each observed tensor once costs
    with PyTorch's own column reduction, on the model's stream."""

    def __init__(self, dedup):
        self.dedup = dedup
        self.recent = LastFour()

    def add(self, x):
        if self.dedup:
            if self.recent.source_of(x) is not None:
                return
            self.recent.add(x, True)
        x.reshape(-1, x.shape[-1]).sum(0, dtype=torch.float32)


class Acttrace:
    """at_writer_observe_device at every point, on the current stream."""

    def __init__(self, lib, path, points, sample_every, dedup=False):
        self.lib = lib
        self.dedup = dedup
        self.recent = LastFour()  # the last four observations of this forward, by point
        self.err = at_error()
        opts = at_writer_options()
        lib.at_writer_options_init(ctypes.byref(opts))
        opts.model = b"llama-1b-random"
        opts.source_dtype = b"bfloat16"
        if sample_every:
            opts.sample_policy = AT_SAMPLE_EVERY
            opts.sample_n = sample_every
        self.writer = ctypes.c_void_p()
        check(lib.at_writer_create(ctypes.byref(self.writer), path.encode(), ctypes.byref(opts),
                                   ctypes.byref(self.err)), self.err, "create")
        self.ids = []
        for name, _, direction, channels in points:
            desc = at_point_desc(name.encode(), -1, b"other", name.encode(), name.encode(),
                                 b"", direction.encode(), channels)
            pid = ctypes.c_int32()
            check(lib.at_writer_add_point(self.writer, ctypes.byref(desc), ctypes.byref(pid),
                                          ctypes.byref(self.err)), self.err, "add_point")
            self.ids.append(pid.value)
        self.token_base = 0
        self.tensor = at_tensor()
        self.token_columns = None

    def begin_forward(self, batch, seq_len):
        n = batch * seq_len
        if self.token_columns is None:
            self.token_columns = ((ctypes.c_int32 * n)(*[i // seq_len for i in range(n)]),
                                  (ctypes.c_int32 * n)(*[i % seq_len for i in range(n)]))
        seq, pos = self.token_columns
        base = ctypes.c_int64()
        check(self.lib.at_writer_add_tokens(self.writer, seq, pos, pos, n, ctypes.byref(base),
                                            ctypes.byref(self.err)), self.err, "add_tokens")
        self.token_base = base.value
        self.recent = LastFour()

    def observe(self, pid, x):
        source = None
        if self.dedup:
            source = self.recent.source_of(x)
            self.recent.add(x, pid)
        t = self.tensor
        t.data = x.data_ptr()
        t.dtype = DTYPES[x.dtype]
        if x.dim() == 3:
            t.batches, t.rows, t.channels = x.shape
            t.batch_stride, t.row_stride, t.channel_stride = x.stride()
        else:
            x2 = x.reshape(-1, x.shape[-1])
            t.batches, t.batch_stride = 1, x2.numel()
            t.rows, t.channels = x2.shape
            t.row_stride, t.channel_stride = x2.stride()
        stream = torch.cuda.current_stream().cuda_stream
        if source is None:
            status = self.lib.at_writer_observe_device(self.writer, pid, ctypes.byref(t),
                                                       self.token_base, stream,
                                                       ctypes.byref(self.err))
        else:
            status = self.lib.at_writer_observe_device_same(self.writer, pid, source,
                                                            ctypes.byref(t), self.token_base,
                                                            stream, ctypes.byref(self.err))
        check(status, self.err, "observe")

    def close(self):
        check(self.lib.at_writer_close(self.writer, ctypes.byref(self.err)), self.err, "close")


def package_capture(model, path, options):
    """acttrace.capture(model, path, **options), entered: the Python package of
    this tree over $ACTTRACE_LIB."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "libtrace", "python"))
    import acttrace
    return acttrace.capture(model, path, **options).__enter__()


# ---------------------------------------------------------------- timing

def time_forwards(model, ids, warmup, repeats, before=None):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if before:
                before()
            start.record()
            model(input_ids=ids)
            stop.record()
            stop.synchronize()
            if i >= warmup:
                times.append(start.elapsed_time(stop))
            elif i == 0:
                first = start.elapsed_time(stop)
    return times, first if warmup else None


# What each word of a capture variant's name asks (capture-s64c-mem-trust-l1:
# capped sampling, room for every row, identity trusted, zstd level 1).
CAPTURE_WORDS = {
    "s64c": {"sample": "every:64", "max_samples": 4096},
    "r4096": {"sample": "reservoir:4096"},
    "mem": {"sample_bytes_in_flight": 12 << 30},  # room for every sample: nothing waits
    "overlap": {"overlap": True},  # statistics on a side stream
    "nodedup": {"dedup": False},  # every point reads its tensor
    "trust": {"dedup": "trust"},  # inference tensors: identity trusted
    "l1": {"compression_level": 1},  # the fastest zstd level for the samples
    "nohist": {"hist": False},  # no |x| histograms: moments, min/max, extremes
    "noext": {"extremes": 0},  # no top-K extremes
    "t4": {"threads": 4},  # compression threads: cores left to the model's thread
    "t8": {"threads": 8},
    "pad": {},  # diagnostics: 21 KiB more shared memory a launch (a -DATC_EXTREME_COUNTS build)
}


def kernel_times(lib, model, ids, forwards, before=None, trace=None):
    """Device time a forward, from the CUDA kernels' own records (torch.profiler,
    CUPTI; it sees the library's launches as well as PyTorch's), by group:
    the model's kernels, the library's fold kernels split by template (dtype,
    vector path, histogram kind), its other kernels; the time the GPU ran any
    kernel, and the span from the first kernel to the last.  Where the
    extremes or the histogram cost more than a launch's kernel time, this says
    whether the kernels grew or the gaps between them did.  With a library
    built with -DATC_EXTREME_COUNTS, also its counters a forward."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    counts = extreme_counts(lib)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        for _ in range(forwards):
            if before:
                before()
            model(input_ids=ids)
        torch.cuda.synchronize()
    if trace:
        # every launch with its grid, block and shared memory, for a closer look
        prof.export_chrome_trace(trace)
        with open(trace, "rb") as f, gzip.open(trace + ".gz", "wb") as z:
            shutil.copyfileobj(f, z)
        os.remove(trace)
    groups, spans = {}, []
    for e in prof.events():
        if e.device_type != DeviceType.CUDA or "memcpy" in e.name.lower() \
                or "memset" in e.name.lower():
            continue
        begin, end = e.time_range.start, e.time_range.end
        spans.append((begin, end))
        name = e.name
        if "atc_kernels::fold_kernel" in name:
            group = "fold" + name[name.index("<"):name.index(">") + 1].replace(" ", "")
        elif "atc_kernels::" in name:
            group = name.split("atc_kernels::")[1].split("(")[0].split("<")[0]
        else:
            group = "model"
        total, count, longest = groups.get(group, (0.0, 0, 0.0))
        groups[group] = (total + (end - begin), count + 1, max(longest, end - begin))
    spans.sort()
    busy, reach = 0.0, None
    for begin, end in spans:
        if reach is None or begin > reach:
            busy += end - begin
            reach = end
        elif end > reach:
            busy += end - reach
            reach = end
    span = (spans[-1][1] - spans[0][0]) if spans else 0.0
    ms = lambda us: us / 1000.0 / forwards
    after = extreme_counts(lib)
    out = {"busy_ms": ms(busy), "span_ms": ms(span),
           "groups": {g: {"ms": ms(t), "launches": c / forwards, "longest_us": m}
                      for g, (t, c, m) in sorted(groups.items())}}
    if counts and after:
        out["extreme_counts"] = {name: (b - a) / forwards
                                 for name, a, b in zip(EXTREME_COUNTS, counts, after)}
    return out


# the extremes' counters and cycles of a build with -DATC_EXTREME_COUNTS, in
# stats.cu's order (XC_*)
EXTREME_COUNTS = ("merges", "pending", "blocks_with_best", "stage_steps", "start_cycles",
                  "items_cycles", "stage_cycles", "block_end_cycles", "merge_cycles",
                  "merge_wait_cycles", "merge_gather_cycles", "merge_rank_cycles",
                  "merges_over_64", "merges_over_512")


def extreme_counts(lib):
    """The counters' totals so far, or None from a library built without them."""
    if not hasattr(lib, "atc_debug_extreme_counts"):
        return None
    buf = (ctypes.c_ulonglong * len(EXTREME_COUNTS))()
    torch.cuda.synchronize()
    return list(buf) if lib.atc_debug_extreme_counts(buf) == 0 else None


def print_kernel_times(variant, kt):
    print(f"#   {variant} kernels a forward: GPU busy {kt['busy_ms']:.2f} ms of "
          f"{kt['span_ms']:.2f}", flush=True)
    if "extreme_counts" in kt:
        print("#     extremes a forward: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                     kt["extreme_counts"].items()), flush=True)
    for g, v in kt["groups"].items():
        print(f"#     {g}\t{v['ms']:.3f} ms\t{v['launches']:.0f} launches\t"
              f"longest {v['longest_us']:.0f} us", flush=True)


def capture_options(variant):
    options = {}
    for word in variant.split("-")[1:]:
        if word not in CAPTURE_WORDS:
            raise SystemExit(f"bench-llama: unknown word '{word}' in variant {variant}")
        options.update(CAPTURE_WORDS[word])
    return options


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default=os.environ.get("ACTTRACE_LIB", ".libs/libacttrace.so"))
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for traces")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants",
                    default="none,torch,sum-dedup,acttrace,acttrace-s64,capture,capture-s64c,none")
    ap.add_argument("--kernel-times", type=int, default=0, metavar="N",
                    help="after each variant's timed forwards, N more under torch.profiler: "
                    "device time a forward by kernel group")
    ap.add_argument("--kernel-trace", metavar="DIR",
                    help="with --kernel-times: each variant's profiled forwards as a Chrome trace, "
                    "DIR/VARIANT.json.gz")
    ap.add_argument("--json", help="write the raw times here")
    ap.add_argument("--trace-equal", help="trace-equal program: compare the traces of variants "
                    "with and without dedup")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        skip("no CUDA device")
    lib = load_library(args.lib)
    if not lib.at_cuda_available():
        skip(f"{args.lib} has no usable CUDA device path")
    model = build_model(args)
    params = sum(p.numel() for p in model.parameters())
    points = recording_points(model)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), device="cuda")
    tokens = args.batch * args.seq_len
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "params": params, "points": len(points), "batch": args.batch,
            "seq_len": args.seq_len, "attn": getattr(model.config, "_attn_implementation", "?"),
            "elements_per_forward": tokens * sum(p[3] for p in points), "variants": []}
    print(f"# {info['device']}, {params / 1e9:.2f}B parameters, {len(points)} points, "
          f"{args.batch}x{args.seq_len} tokens, attention {info['attn']}, "
          f"{info['elements_per_forward'] * 2 / 1e9:.1f} GB of bf16 activations observed per "
          f"forward", flush=True)

    for variant in args.variants.split(","):
        hooks = Hooks()
        capture = None
        before = None
        extra = {}
        if variant == "torch":
            stats = [TorchStats(p[3]) for p in points]
            for (name, module, direction, _), s in zip(points, stats):
                hooks.add(module, direction, s.add)
        elif variant in ("sum", "sum-dedup"):
            sums = ColumnSums(dedup=variant == "sum-dedup")
            for name, module, direction, _ in points:
                hooks.add(module, direction, sums.add)
        elif variant.startswith("acttrace"):
            every = 64 if variant.endswith("s64") else 0
            path = os.path.join(args.out, f"bench-llama-{variant}.h5")
            capture = Acttrace(lib, path, points, every, dedup=variant == "acttrace-dedup")
            for pid, (name, module, direction, _) in zip(capture.ids, points):
                hooks.add(module, direction, lambda x, pid=pid: capture.observe(pid, x))
            before = lambda: capture.begin_forward(args.batch, args.seq_len)
        elif variant.startswith("capture"):
            # the user's way: acttrace.capture with the default (llama)
            # catalogue, weights recorded, tokens from input_ids
            options = capture_options(variant)
            if "pad" in variant.split("-"):
                os.environ["ATC_DEBUG_PAD_SHARED"] = str(21 << 10)
            else:
                os.environ.pop("ATC_DEBUG_PAD_SHARED", None)
            path = os.path.join(args.out, f"bench-llama-{variant}.h5")
            t0 = time.perf_counter()
            package = package_capture(model, path, options)
            extra["open_s"] = time.perf_counter() - t0
            extra["points"] = len(package.points)
        elif variant != "none":
            raise SystemExit(f"bench-llama: unknown variant {variant}")
        torch.cuda.reset_accumulated_memory_stats()
        times, extra["first_ms"] = time_forwards(model, ids, args.warmup, args.repeats, before)
        mem = torch.cuda.memory_stats()
        if args.kernel_times:
            trace = os.path.join(args.kernel_trace, f"{variant}.json") if args.kernel_trace else None
            extra["kernel_times"] = kernel_times(lib, model, ids, args.kernel_times, before,
                                                 trace)
        extra["alloc_retries"] = mem.get("num_alloc_retries", 0)
        extra["device_allocs"] = mem.get("num_device_alloc", 0)
        hooks.remove()
        if variant.startswith("capture"):
            t0 = time.perf_counter()
            package.__exit__(None, None, None)
            extra["close_s"] = time.perf_counter() - t0
            extra["trace_bytes"] = os.path.getsize(path)
        if capture:
            t0 = time.perf_counter()
            capture.close()
            extra["close_s"] = time.perf_counter() - t0
            extra["trace_bytes"] = os.path.getsize(path)
        if variant == "torch":
            torch.cuda.synchronize()
            extra["check_count"] = stats[0].n
        info["variants"].append({"variant": variant, "ms": times, "median_ms": statistics.median(times),
                                 **extra})
        print(f"# {variant}: median {statistics.median(times):.2f} ms of {times}"
              + (f", first forward {extra['first_ms']:.1f} ms" if extra["first_ms"] else "")
              + (f", close {extra['close_s']:.2f} s" if "close_s" in extra else "")
              + f", allocator retries {extra['alloc_retries']}, device allocations "
                f"{extra['device_allocs']}", flush=True)
        if "kernel_times" in extra:
            print_kernel_times(variant, extra["kernel_times"])
        del hooks, capture
        torch.cuda.empty_cache()

    baselines = [v["median_ms"] for v in info["variants"] if v["variant"] == "none"]
    base = min(baselines) if baselines else float("nan")  # no ratios without `none`
    info["baseline_ms"] = base
    print("variant\tmedian_ms\tratio_to_none")
    for v in info["variants"]:
        v["ratio"] = v["median_ms"] / base
        print(f"{v['variant']}\t{v['median_ms']:.2f}\t{v['ratio']:.3f}")
    compare_dedup(args, info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


def compare_dedup(args, info):
    """The traces with and without dedup hold the same statistics (the same
    random weights and inputs, the same forwards); trace-equal's tolerance
    1e-12 (of the std) is the issue's bar for the moments; the rest must be
    exact."""
    ran = {v["variant"] for v in info["variants"]}
    for a, b in (("capture-trust", "capture-nodedup"), ("acttrace-dedup", "acttrace")):
        if a not in ran or b not in ran or not args.trace_equal:
            continue
        files = [os.path.join(args.out, f"bench-llama-{v}.h5") for v in (a, b)]
        result = subprocess.run([args.trace_equal, *files, "1e-12"], capture_output=True, text=True)
        info[f"equal_{a}"] = result.returncode == 0
        print(f"# trace-equal {a} {b}: exit {result.returncode}: "
              + " | ".join(result.stdout.strip().splitlines()[-3:]), flush=True)


if __name__ == "__main__":
    main()
