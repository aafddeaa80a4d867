#!/usr/bin/env python3
"""capture-hf.py: acttrace.capture on real Hugging Face architectures, on a GPU.

Builds, with transformers and random weights (nothing is downloaded), the
RecurrentGemma-2B configuration (hidden 2560, intermediate 15360, 10 heads
with 1 KV head, 26 layers, recurrent, recurrent, attention) and the
Mamba-130m configuration, and for each:

  1. acttrace.points: the catalogue chosen by config.model_type; 26 site
     types for RecurrentGemma; the same names, layers, components, sites,
     directions and widths as `trace-synth --arch ... --list-points`;
  2. captures a few batches of random tokens end to end (every point must
     see data: the slow paths, use_cache=False, call every hooked module);
  3. outputs before and after the capture are bit-identical and no hook
     remains;
  4. trace-stats reads the trace: one row per point, counts = tokens;
  5. trace-capture end to end on a small RecurrentGemma saved to a model
     directory with a byte-level tokenizer built here: a trace, and the
     perplexity with and without --clip.

Run from a built tree (./configure && make), e.g.
    python3 tests/gpu/capture-hf.py [--device cuda] [--out DIR]
It finds the package (libtrace/python), the library (.libs) and the tools
of that tree by itself.  Exit 0: all checks passed; 1: a check failed;
77: no GPU (without --device cpu), or no torch or transformers.
Outputs (traces, trace-stats tables, a summary) go to --out or $OUT."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RG_SITE_TYPES = 26
TEXT = (
    "The recurrent layers of Griffin mix a gated linear recurrence with a short "
    "convolution, while every third layer attends locally over a window of "
    "tokens. Outlier channels appear in the residual stream early and persist. "
    "Clipping a handful of them changes the perplexity far more than clipping "
    "thousands of ordinary channels, which is why they are worth finding.\n")


def skip(message):
    print(f"SKIP: {message}")
    sys.exit(77)


try:
    import torch
except ImportError:
    skip("torch is not importable")
try:
    import transformers
except ImportError:
    skip("transformers is not importable")
sys.path.insert(0, os.path.join(ROOT, "libtrace", "python"))
os.environ.setdefault("ACTTRACE_LIB", os.path.join(ROOT, ".libs", "libacttrace.so"))
os.environ.setdefault("HDF5_PLUGIN_PATH", os.path.join(ROOT, "hdf5-plugins"))
import acttrace  # noqa: E402

failures = []
summary = []


def ok(cond, message):
    print(("ok   " if cond else "FAIL ") + message, flush=True)
    if not cond:
        failures.append(message)
    return cond


def note(message):
    print(f"#    {message}", flush=True)
    summary.append(message)


def tool(name):
    built = os.path.join(ROOT, name)
    return built if os.access(built, os.X_OK) else shutil.which(name)


# ---------------------------------------------------------------- models

def recurrent_gemma_2b(layers=26):
    from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM
    config = RecurrentGemmaConfig(
        num_hidden_layers=layers, vocab_size=256000, hidden_size=2560, intermediate_size=15360,
        num_attention_heads=10, num_key_value_heads=1, lru_width=2560,
        attention_window_size=2048, conv1d_width=4, logits_soft_cap=30.0, rms_norm_eps=1e-6,
        block_types=["recurrent", "recurrent", "attention"], pad_token_id=0, eos_token_id=1,
        bos_token_id=2)
    return RecurrentGemmaForCausalLM(config)


def mamba_130m(layers=24):
    from transformers import MambaConfig, MambaForCausalLM
    config = MambaConfig(hidden_size=768, num_hidden_layers=layers, vocab_size=50280,
                         state_size=16, expand=2, conv_kernel=4, use_mambapy=False)
    return MambaForCausalLM(config)


def build(factory, device, dtype):
    torch.manual_seed(0)
    started = time.time()
    if hasattr(torch.device, "__enter__"):  # torch >= 2.0: parameters made on the device
        with torch.device(device):
            model = factory()
    else:
        model = factory().to(device)
    model = model.to(dtype).eval()
    note(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B "
         f"parameters, built in {time.time() - started:.1f} s")
    return model


# ---------------------------------------------------------------- checks

def check_points(model, arch, catalogue):
    pts = acttrace.points(model)
    ok(acttrace.catalogue.resolve_name(model) == catalogue,
       f"{arch}: model_type {model.config.model_type!r} picks the '{catalogue}' catalogue")
    sites = sorted({p.site for p in pts})
    note(f"{arch}: {len(pts)} points, {len(sites)} site types")
    if catalogue == "recurrent_gemma":
        ok(len(sites) == RG_SITE_TYPES, f"{arch}: {len(sites)} site types, expected "
           f"{RG_SITE_TYPES}: {', '.join(sites)}")
    synth = tool("trace-synth")
    if synth is None:
        note("trace-synth not found: point tables not compared")
        return pts
    out = subprocess.run([synth, "--arch", arch, "--list-points"], capture_output=True, text=True)
    want = [tuple(line.split("\t")) for line in out.stdout.splitlines()[1:]]
    got = [(p.name, str(p.layer), p.component, p.site, p.direction, str(p.channels)) for p in pts]
    diff = [(g, w) for g, w in zip(got, want) if g != w]
    ok(out.returncode == 0 and len(got) == len(want) and not diff,
       f"{arch}: points equal trace-synth --arch {arch} --list-points "
       f"({len(got)} vs {len(want)}; first differences {diff[:3]})")
    return pts


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.int16 if a.element_size() == 2 else torch.int32),
        b.contiguous().view(torch.int16 if b.element_size() == 2 else torch.int32))


def capture_run(model, arch, out_dir, device, batches, batch, seq_len, overlap=False):
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(1)
    inputs = [torch.randint(3, vocab, (batch, seq_len), generator=g).to(device)
              for _ in range(batches)]
    before_hooks = hooks(model)
    with torch.no_grad():
        reference = model(input_ids=inputs[0], use_cache=False).logits
        deterministic = same_bits(model(input_ids=inputs[0], use_cache=False).logits, reference)
        torch.cuda.synchronize() if device.startswith("cuda") else None
        started = time.time()
        for ids in inputs:
            model(input_ids=ids, use_cache=False)
        torch.cuda.synchronize() if device.startswith("cuda") else None
        plain = time.time() - started
        path = os.path.join(out_dir, f"{arch}{'-overlap' if overlap else ''}.h5")
        started = time.time()
        with warnings.catch_warnings(record=True) as caught, \
                acttrace.capture(model, path, sample="every:97", overlap=overlap) as cap:
            warnings.simplefilter("always")
            opened = time.time()
            for ids in inputs:
                model(input_ids=ids, use_cache=False)
            torch.cuda.synchronize() if device.startswith("cuda") else None
            forwards = time.time() - opened
            closing = time.time()
        closed = time.time() - closing
        setup = opened - started
        after = model(input_ids=inputs[0], use_cache=False).logits
    tokens = batches * batch * seq_len
    if overlap:
        changed = [str(w.message) for w in caught if "changed in place" in str(w.message)]
        ok(not changed, f"{arch}: overlap: no recorded tensor changed in place {changed[:1]}")
        arch = f"{arch} (overlap)"
    note(f"{arch}: {tokens} tokens: {tokens / plain:,.0f} tok/s plain, {tokens / forwards:,.0f} "
         f"tok/s under capture; points and weights {setup:.1f} s, close "
         f"{closed:.1f} s; trace {os.path.getsize(path) / 2**20:.1f} MiB")
    silent = [p.name for p, n in zip(cap.points, cap.observations) if n == 0]
    ok(not silent, f"{arch}: every point saw data (silent: {silent[:5]})")
    ok(cap.tokens_seen == tokens, f"{arch}: {cap.tokens_seen} tokens recorded, expected {tokens}")
    ok(hooks(model) == before_hooks, f"{arch}: no hook left after the capture")
    if deterministic:
        ok(same_bits(after, reference), f"{arch}: logits after the capture are bit-identical")
    else:
        note(f"{arch}: two plain forwards differ (nondeterministic kernels): bit-identity not checked")
    return path, tokens


def same_statistics(path, other, arch):
    """The side stream changes where the kernels run, not what they compute:
    trace-stats prints the same rows for both traces."""
    stats = tool("trace-stats")
    if not ok(stats is not None, "trace-stats found"):
        return
    rows = [subprocess.run([stats, f], capture_output=True, text=True).stdout for f in (path, other)]
    ok(rows[0] == rows[1] and rows[0].count("\n") > 1,
       f"{arch}: overlap: the same statistics as without "
       f"({sum(a != b for a, b in zip(rows[0].splitlines(), rows[1].splitlines()))} rows differ)")


def trace_stats(path, arch, out_dir, n_points, tokens):
    stats = tool("trace-stats")
    if not ok(stats is not None, "trace-stats found"):
        return
    r = subprocess.run([stats, path], capture_output=True, text=True)
    with open(os.path.join(out_dir, f"{arch}.stats.tsv"), "w") as f:
        f.write(r.stdout)
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    ok(r.returncode == 0 and r.stderr == "", f"{arch}: trace-stats exit {r.returncode} {r.stderr.strip()}")
    if not rows:
        return
    header = rows[0]
    ok(len(rows) == n_points + 1, f"{arch}: trace-stats: {len(rows) - 1} rows, expected {n_points}")
    if "count" in header and "channels" in header:
        ci, hi = header.index("count"), header.index("channels")
        bad = [r[0] for r in rows[1:] if int(r[ci]) != tokens * int(r[hi])]
        ok(not bad, f"{arch}: every point counts tokens x channels values (not: {bad[:3]})")
    for r in rows[1:4]:
        note(f"{arch}: " + " ".join(r[:9]))


# ---------------------------------------------------------------- trace-capture

def byte_tokenizer(bos=2, eos=1, pad=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": pad, "<eos>": eos, "<bos>": bos}
    vocab.update({ch: 3 + i for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


def trace_capture_run(out_dir, device):
    prog = tool("trace-capture")
    if not ok(prog is not None, "trace-capture found (make builds it)"):
        return
    model_dir = os.path.join(out_dir, "rg-small")
    model = build(lambda: recurrent_gemma_2b(layers=3), "cpu", torch.float32)
    model.save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    text = os.path.join(out_dir, "text.txt")
    with open(text, "w") as f:
        f.write(TEXT * 40)
    bounds = os.path.join(out_dir, "bounds.tsv")
    with open(bounds, "w") as f:
        f.write("point\tchannel\tlower\tupper\n")
        for c in range(64):
            f.write(f"layers.1.mlp.down_proj.in\t{c}\t-0.001\t0.001\n")
    trace = os.path.join(out_dir, "cli.h5")
    cmd = [sys.executable, prog, "--model", model_dir, "--text", text, "-o", trace,
           "--seq-len", "256", "--batch", "4", "--device", device, "--dtype", "bf16",
           "--sample", "every:101", "--perplexity", "-q"]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "libtrace", "python"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    ok(r.returncode == 0, f"trace-capture: exit {r.returncode} {r.stderr.strip()[-500:]}")
    note("trace-capture --perplexity: " + r.stdout.replace("\n", " | "))
    r2 = subprocess.run(cmd[:cmd.index("-o")] + ["--perplexity", "--clip", bounds, "--clip-report",
                        os.path.join(out_dir, "clip-report.tsv"), "--seq-len", "256", "--device",
                        device, "--dtype", "bf16", "-q"], capture_output=True, text=True, env=env)
    rows = [line.split("\t") for line in r2.stdout.splitlines()]
    ok(r2.returncode == 0 and len(rows) == 3 and rows[1][0] == "baseline" and rows[2][0] == "clipped",
       f"trace-capture --clip: exit {r2.returncode} {r2.stderr.strip()[-300:]} {rows}")
    note("trace-capture --perplexity --clip: " + r2.stdout.replace("\n", " | "))
    if r.returncode == 0:
        stats = subprocess.run([tool("trace-stats"), trace], capture_output=True, text=True)
        ok(stats.returncode == 0, f"trace-stats on the trace-capture trace: {stats.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--skip-cli", action="store_true", help="no trace-capture run")
    parser.add_argument("--overlap", action="store_true",
                        help="capture again with overlap=True: no in-place change seen, and "
                             "the same statistics as without")
    a = parser.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        skip("no CUDA device (use --device cpu to run on the host)")
    out_dir = a.out or tempfile.mkdtemp(prefix="capture-hf-")
    os.makedirs(out_dir, exist_ok=True)
    note(f"torch {torch.__version__}, transformers {transformers.__version__}, acttrace "
         f"{acttrace.version()} ({acttrace.library_path}), device {a.device}"
         + (f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""))
    dtype = getattr(torch, a.dtype)
    for arch, factory, catalogue, seq_len in (
            ("recurrent-gemma-2b", recurrent_gemma_2b, "recurrent_gemma", a.seq_len),
            ("mamba-130m", mamba_130m, "mamba", min(a.seq_len, 256))):
        try:
            model = build(factory, a.device, dtype)
            pts = check_points(model, arch, catalogue)
            path, tokens = capture_run(model, arch, out_dir, a.device, a.batches, a.batch, seq_len)
            trace_stats(path, arch, out_dir, len(pts), tokens)
            if a.overlap:
                other, _ = capture_run(model, arch, out_dir, a.device, a.batches, a.batch,
                                       seq_len, overlap=True)
                same_statistics(path, other, arch)
        except Exception as e:  # noqa: BLE001 - report and go on with the next model
            ok(False, f"{arch}: {type(e).__name__}: {e}")
        finally:
            model = None
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if not a.skip_cli:
        try:
            trace_capture_run(out_dir, a.device)
        except Exception as e:  # noqa: BLE001
            ok(False, f"trace-capture: {type(e).__name__}: {e}")
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write("\n".join(summary + [f"FAIL {m}" for m in failures]) + "\n")
    print(f"{len(failures)} failed, outputs in {out_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
