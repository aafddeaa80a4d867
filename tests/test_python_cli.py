"""test_python_cli.py: trace-capture end to end on the CPU, without the real
transformers: a stand-in `transformers` package (written here into a
temporary directory that leads PYTHONPATH) loads the tiny models of
test_python_models.py from a model directory and tokenizes text byte by
byte.  Checked against the same model driven in this process:

- the trace: /tokens (BOS at every sequence start, --seq-len, --batch,
  --tokens, several --text files in order), the catalogue's points, the
  statistics of every point (to 1e-12: only the process differs), samples;
- --perplexity: the baseline and, with --clip, the clipped perplexity, and
  --clip-report's counts; --clip without --perplexity records the clipped
  model; --list-points; errors that need a model (a catalogue the model
  does not have, a directory with no weights) exit 1 and leave no trace;
- progress (tokens/s, ETA) on a terminal only, none with -q."""
import json
import math
import os
import pty
import shutil
import socket
import subprocess
import sys
import tempfile

from test_python_models import Checker, acttrace, tiny_llama, tiny_gpt2
import torch  # noqa: E402

try:
    import h5py
    import numpy as np
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

check = Checker()
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
BOS = 1

FAKE_TRANSFORMERS = '''\
"""A stand-in for transformers in acttrace's tests: tiny torch models, byte tokens."""
import json, os, sys
from types import SimpleNamespace
import torch
sys.path.insert(0, {tests_dir!r})
import test_python_models as tm

__version__ = "4.99.0"
logging = SimpleNamespace(set_verbosity_error=lambda: None)


class ByteTokenizer:
    def __init__(self, bos):
        self.bos_token_id = bos

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (b % 90) for b in text.encode("utf-8")]
        if add_special_tokens and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return {{"input_ids": ids}}


def _config(path):
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path, local_files_only=False):
        assert local_files_only
        return ByteTokenizer(_config(path).get("bos_token_id"))


class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(path, local_files_only=False, dtype=None, torch_dtype=None):
        assert local_files_only
        config = _config(path)
        model = getattr(tm, config["builder"])()
        weights = os.path.join(path, "weights.pt")
        if not os.path.exists(weights):
            raise OSError(f"Error no file named weights.pt found in directory {{path}}.")
        model.load_state_dict(torch.load(weights))
        model.config._name_or_path = path
        return model.to(dtype or torch_dtype)
'''


def text_ids(text):
    return [3 + (b % 90) for b in text.encode("utf-8")]


def sequences_of(texts, seq_len, bos, tokens=None):
    ids = [i for t in texts for i in text_ids(t)]
    body = seq_len - 1 if bos else seq_len
    out, used = [], 0
    for start in range(0, len(ids), body):
        seq = ([BOS] if bos else []) + ids[start:start + body]
        if tokens is not None:
            seq = seq[:tokens - used]
        if len(seq) < (2 if bos else 1):
            break
        out.append(seq)
        used += len(seq)
        if tokens is not None and used >= tokens:
            break
    return out


def batches_of(seqs, batch):
    full = [s for s in seqs if len(s) == len(seqs[0])]
    groups = [full[i:i + batch] for i in range(0, len(full), batch)]
    return groups + [[s] for s in seqs[len(full):]]


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        fake = os.path.join(tmp, "fake")
        os.makedirs(os.path.join(fake, "transformers"))
        with open(os.path.join(fake, "transformers", "__init__.py"), "w") as f:
            f.write(FAKE_TRANSFORMERS.format(tests_dir=TESTS_DIR))
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([fake] + [p for p in [
            os.environ.get("PYTHONPATH")] if p])
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.prog = shutil.which("trace-capture")

    def run(self, *args, stdin=None, tty=False):
        cmd = [sys.executable, self.prog] + [str(a) for a in args]
        if not tty:
            r = subprocess.run(cmd, env=self.env, input=stdin, capture_output=True, text=True)
            return r.returncode, r.stdout, r.stderr
        master, slave = pty.openpty()
        r = subprocess.run(cmd, env=self.env, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
        os.close(master)
        return r.returncode, r.stdout, err.decode("utf-8", "replace")


def make_model_dir(tmp, name, builder, model_type, bos):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    config = {"model_type": model_type, "builder": builder}
    if bos:
        config["bos_token_id"] = BOS
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    model = {"tiny_llama": tiny_llama, "tiny_gpt2": tiny_gpt2}[builder]()
    torch.save(model.state_dict(), os.path.join(d, "weights.pt"))
    return d, model


def reference_trace(model, path, groups, **options):
    """The same batches through acttrace.capture in this process."""
    with torch.no_grad(), acttrace.capture(model, path, **options) as cap:
        for group in groups:
            ids = torch.tensor(group)
            cap.tokens(ids)
            model(input_ids=ids)


def reference_perplexity(model, groups):
    nll, n = 0.0, 0
    with torch.no_grad():
        for group in groups:
            ids = torch.tensor(group)
            logits = model(input_ids=ids)
            for b in range(ids.shape[0]):
                lp = torch.log_softmax(logits[b, :-1].float(), dim=-1)
                nll += -lp.gather(1, ids[b, 1:, None]).sum().item()
                n += ids.shape[1] - 1
    return nll / n, n


def same_trace(got_path, want_path, what):
    with h5py.File(got_path, "r") as got, h5py.File(want_path, "r") as want:
        check.ok(got.attrs["complete"] == 1, f"{what}: complete = 1")
        for col in ("seq", "pos", "id"):
            check.ok(np.array_equal(got["tokens"][col][()], want["tokens"][col][()]),
                     f"{what}: /tokens/{col}")
        check.ok(sorted(got["points"]) == sorted(want["points"]), f"{what}: the same points")
        for name in want["points"]:
            if name not in got["points"]:
                continue
            g, w = got["points"][name], want["points"][name]
            for k in ("count", "min", "max", "absmax", "hist"):
                check.ok(np.array_equal(g[k][()], w[k][()], equal_nan=k != "count" and k != "hist"),
                         f"{what}: {name}/{k}")
            for k in ("mean", "m2", "abssum"):
                a, b = g[k][()], w[k][()]
                check.ok(np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max()),
                         f"{what}: {name}/{k}")
            if "samples" in w:
                check.ok(np.array_equal(g["sample_tokens"][()], w["sample_tokens"][()]),
                         f"{what}: {name}/sample_tokens")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_case(env, tmp, model, model_dir, files, texts):
    out = os.path.join(tmp, "dp.h5")
    port = str(free_port())
    procs = []
    for rank in range(2):
        e = dict(env.env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, env.prog, "--model", model_dir, "--text", *files, "-o", out,
               "--batch", 2, "--seq-len", 8, "--device", "cpu", "--merge", "--perplexity"]
        procs.append(subprocess.Popen([str(c) for c in cmd], env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    check.ok(codes == [0, 0], f"both ranks exit 0: {codes} {[r[1] for r in results]}")
    seqs = sequences_of(texts, 8, bos=True)
    groups = batches_of(seqs[0::2], 2) + batches_of(seqs[1::2], 2)
    want = os.path.join(tmp, "dp-ref.h5")
    reference_trace(model, want, groups)
    check.ok(all(os.path.exists(os.path.join(tmp, f"dp.rank{r}.h5")) for r in range(2)),
             "each rank's trace is kept")
    if check.ok(os.path.exists(out), "rank 0 merged them"):
        same_trace(out, want, "merged")
    nll, n = reference_perplexity(model, groups)
    rows = [line.split("\t") for line in results[0][0].splitlines()]
    check.ok(len(rows) == 2 and rows[1][0] == "baseline" and int(rows[1][1]) == n and
             abs(float(rows[1][2]) - nll) <= 1e-6 * abs(nll),
             f"rank 0 prints the perplexity over both ranks: {rows}, want {nll} over {n}")
    check.ok(results[1][0] == "", f"rank 1 prints nothing: {results[1][0]!r}")


def main():
    if make_zstd_filter_available() is None:
        print("SKIP: no zstd filter (32015) for h5py: set HDF5_PLUGIN_PATH to the build's hdf5-plugins")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="acttrace-cli-") as tmp:
        env = Env(tmp)
        if not check.ok(env.prog is not None, "trace-capture is on PATH"):
            check.done("test_python_cli")
        llama_dir, llama = make_model_dir(tmp, "llama", "tiny_llama", "llama", bos=True)
        gpt2_dir, gpt2 = make_model_dir(tmp, "gpt2", "tiny_gpt2", "gpt2", bos=False)
        texts = ["The quick brown fox jumps over the lazy dog.\n" * 3,
                 "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. ✓\n"]
        files = []
        for i, t in enumerate(texts):
            files.append(os.path.join(tmp, f"text{i}.txt"))
            with open(files[-1], "w", encoding="utf-8") as f:
                f.write(t)

        # --- a trace: Llama-style (BOS), two files, batches of 3, seq-len 16
        check.context = "llama trace"
        out = os.path.join(tmp, "llama.h5")
        rc, stdout, stderr = env.run("--model", llama_dir, "--text", *files, "-o", out,
                                     "--batch", 3, "--seq-len", 16, "--sample", "every:5",
                                     "--device", "cpu")
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        check.ok(stdout == "" and stderr == "", f"quiet off a terminal: {stdout!r} {stderr!r}")
        groups = batches_of(sequences_of(texts, 16, bos=True), 3)
        want = os.path.join(tmp, "llama-ref.h5")
        reference_trace(llama, want, groups, sample="every:5")
        same_trace(out, want, "llama")
        with h5py.File(out, "r") as f:
            ids = f["tokens/id"][()]
            pos = f["tokens/pos"][()]
            check.ok(np.all(ids[pos == 0] == BOS) and np.sum(ids == BOS) == np.sum(pos == 0),
                     "BOS starts every sequence and nowhere else")
            check.ok(pos.max() == 15, f"positions up to {pos.max()}")
            model_attr = f.attrs["model"]
            model_attr = model_attr.decode() if isinstance(model_attr, bytes) else model_attr
            check.ok(model_attr == "llama", f"model attribute {model_attr!r}")

        # --- --overlap: the side stream is a GPU's; on the CPU the same trace
        check.context = "overlap"
        out = os.path.join(tmp, "llama-overlap.h5")
        rc, stdout, stderr = env.run("--model", llama_dir, "--text", *files, "-o", out,
                                     "--batch", 3, "--seq-len", 16, "--sample", "every:5",
                                     "--device", "cpu", "--overlap")
        check.ok(rc == 0 and stderr == "", f"exit {rc}: {stderr}")
        same_trace(out, want, "llama --overlap")

        # --- torchrun's environment, two ranks on the CPU (gloo): each records
        # its share of the sequences, rank 0 merges them and prints the
        # perplexity over both; the same as one process over rank 0's
        # sequences and then rank 1's
        check.context = "torchrun"
        torchrun_case(env, tmp, llama, llama_dir, files, texts)

        # --- GPT-2 (no BOS), --tokens, standard input
        check.context = "gpt2 trace"
        out = os.path.join(tmp, "gpt2.h5")
        rc, _, stderr = env.run("--model", gpt2_dir, "--text", "-", "-o", out, "--tokens", 50,
                                "--seq-len", 12, "--batch", 2, "-q", stdin=texts[0])
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        groups = batches_of(sequences_of(texts[:1], 12, bos=False, tokens=50), 2)
        want = os.path.join(tmp, "gpt2-ref.h5")
        reference_trace(gpt2, want, groups)
        same_trace(out, want, "gpt2")
        with h5py.File(out, "r") as f:
            check.ok(f["tokens/id"].shape == (50,), f"--tokens 50: {f['tokens/id'].shape}")

        # --- --list-points
        check.context = "list-points"
        rc, stdout, stderr = env.run("--model", llama_dir, "--list-points")
        lines = stdout.splitlines()
        check.ok(rc == 0 and lines[0].split("\t")[:6] ==
                 ["point", "layer", "component", "site", "direction", "channels"],
                 f"header {lines[:1]} ({stderr})")
        check.ok([l.split("\t")[0] for l in lines[1:]] == [p.name for p in acttrace.points(llama)],
                 "the catalogue's points")

        # --- perplexity, with and without clipping
        check.context = "perplexity"
        bounds = os.path.join(tmp, "bounds.tsv")
        acttrace.write_bounds(bounds, {"layers.0.mlp.down_proj.in": {3: (-0.0625, 0.0625)},
                                       "final_norm.out": {17: (-0.25, 0.25)}})
        report = os.path.join(tmp, "report.tsv")
        rc, stdout, stderr = env.run("--model", llama_dir, "--text", files[0], "--perplexity",
                                     "--clip", bounds, "--clip-report", report, "--seq-len", 20,
                                     "--batch", 4)
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        rows = [l.split("\t") for l in stdout.splitlines()]
        check.ok(rows[0] == ["run", "tokens", "nll", "perplexity"] and len(rows) == 3 and
                 rows[1][0] == "baseline" and rows[2][0] == "clipped", f"table {rows}")
        groups = batches_of(sequences_of(texts[:1], 20, bos=True), 4)
        mean, n = reference_perplexity(llama, groups)
        if len(rows) == 3:
            check.ok(int(rows[1][1]) == n and math.isclose(float(rows[1][3]), math.exp(mean),
                                                           rel_tol=1e-6),
                     f"baseline {rows[1]}, expected {n} tokens, perplexity {math.exp(mean)}")
            with acttrace.clip(llama, bounds) as clipper:
                cmean, _ = reference_perplexity(llama, groups)
            check.ok(math.isclose(float(rows[2][3]), math.exp(cmean), rel_tol=1e-6),
                     f"clipped {rows[2]}, expected {math.exp(cmean)}")
            check.ok(rows[1][3] != rows[2][3], "clipping changes the perplexity")
            with open(report) as f:
                got = [l.rstrip("\n").split("\t") for l in f]
            want_rows = [[p, "1", str(c), str(t)] for p, (c, t) in clipper.counts().items()]
            check.ok(got[0] == ["point", "channels", "clipped", "total", "clip_rate"] and
                     [r[:4] for r in got[1:]] == want_rows, f"clip report {got} vs {want_rows}")

        # --- trace-clip's bounds and rates, then the clipped model: on one point
        # with nothing clipped upstream, the clamp changes exactly what
        # trace-clip counted on the samples (every row sampled), inside the
        # bracket it estimated from the histograms
        check.context = "trace-clip round trip"
        base = os.path.join(tmp, "base.h5")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o", base,
                                "--seq-len", 20, "--batch", 4, "--sample", "every:1")
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        clip_bounds, rates = os.path.join(tmp, "clip-bounds.tsv"), os.path.join(tmp, "rates.tsv")
        with open(clip_bounds, "w") as f:
            done = subprocess.run(["trace-clip", "-p", "final_norm.out", "--all", "-K", "1",
                                   "-r", rates, base], stdout=f, stderr=subprocess.PIPE,
                                  text=True)
        check.ok(done.returncode == 0, f"trace-clip: exit {done.returncode}: {done.stderr}")
        report = os.path.join(tmp, "clip-report.tsv")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "--perplexity",
                                "--clip", clip_bounds, "--clip-report", report, "--seq-len", 20,
                                "--batch", 4)
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        with open(rates) as f:
            header, *rows = [l.rstrip("\n").split("\t") for l in f]
        est = dict(zip(header, rows[0]))
        with open(report) as f:
            measured = dict(zip(*[l.rstrip("\n").split("\t") for l in f]))
        clipped = int(measured["clipped"])
        check.ok(est["point"] == measured["point"] == "final_norm.out" and clipped > 0,
                 f"rates {est}, report {measured}")
        check.ok(int(est["sample_clipped"]) == clipped,
                 f"trace-clip counted {est['sample_clipped']} on the samples, the clamp {clipped}")
        check.ok(int(est["clipped_low"]) <= clipped <= int(est["clipped_high"]),
                 f"measured {clipped} outside [{est['clipped_low']}, {est['clipped_high']}]")

        # --- --choices: accuracy equal to a plain PyTorch scoring of the same
        # items; every channel of the final norm clipped to [0, 0] lowers it
        check.context = "choices"
        items = [("The quick brown", [" fox", " dog", " cat"]),
                 ("Zwölf Boxkämpfer", [" jagen", " rennen", " springen"]),
                 ("over the lazy", [" dog", " fox", " hen"]),
                 ("a b c d", [" e", " f", " z"]),
                 ("1 2 3 4", [" 5", " 6", " 9"]),
                 ("Sylter", [" Deich", " Strand", " Meer"])]

        def scores(model, context, choices):
            out = []
            for choice in choices:
                ctx, cont = [BOS] + text_ids(context), text_ids(choice)
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ctx + cont]))
                lp = torch.log_softmax(logits[0, len(ctx) - 1:-1].float(), dim=-1)
                out.append(lp.gather(1, torch.tensor(cont)[:, None]).sum().item())
            return out

        def first_best(v):
            return max(range(len(v)), key=lambda k: (v[k], -k))
        # the answers: the unclipped model's choice, so that clipping can only lose
        answers = [first_best(scores(llama, c, ch)) for c, ch in items]
        zero = {"final_norm.out": {c: (0.0, 0.0) for c in range(llama.config.hidden_size)}}
        with acttrace.clip(llama, zero):
            clipped_right = sum(first_best(scores(llama, c, ch)) == a
                                for (c, ch), a in zip(items, answers))
        jsonl = os.path.join(tmp, "items.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for (context, choices), answer in zip(items, answers):
                f.write(json.dumps({"context": context, "choices": choices, "answer": answer}) + "\n")
        zero_bounds = os.path.join(tmp, "zero.tsv")
        acttrace.write_bounds(zero_bounds, zero)
        rc, stdout, stderr = env.run("--model", llama_dir, "--choices", jsonl, "--clip", zero_bounds)
        rows = [l.split("\t") for l in stdout.splitlines()]
        check.ok(rc == 0 and rows[0] == ["run", "items", "correct", "accuracy"] and len(rows) == 3,
                 f"exit {rc}: {rows} {stderr}")
        if len(rows) == 3:
            check.ok(rows[1][:3] == ["baseline", str(len(items)), str(len(items))],
                     f"baseline {rows[1]}: the reference gets all {len(items)}")
            check.ok(rows[2][:3] == ["clipped", str(len(items)), str(clipped_right)] and
                     clipped_right < len(items),
                     f"clipped {rows[2]}: the reference gets {clipped_right} of {len(items)}")
        # bad items: one line naming the file and line, exit 1
        for text, want in (("{not json", "items-bad.jsonl:1: not JSON"),
                           ('{"context": "a", "choices": ["b"], "answer": 0}', "two or more"),
                           ('{"context": "a", "choices": ["b", "c"], "answer": 2}', "not the index"),
                           ('{"context": "a", "choices": ["b", "c"]}', "no answer")):
            bad = os.path.join(tmp, "items-bad.jsonl")
            with open(bad, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            rc, stdout, stderr = env.run("--model", llama_dir, "--choices", bad)
            check.ok(rc == 1 and want in stderr and stderr.count("\n") == 1 and stdout == "",
                     f"{text}: exit {rc}: {stderr!r}")
        rc, _, stderr = env.run("--model", llama_dir, "--choices", jsonl, "--text", files[0])
        check.ok(rc == 2 and "takes no --text" in stderr, f"--choices with --text: {rc} {stderr!r}")

        # --- weight zeroing: the API restores every weight bit for bit, and
        # --zero-weights adds a pass whose perplexity is the reference's
        check.context = "zero weights"
        target = next(p.module for p in acttrace.points(llama) if p.site == "mlp.down_proj.in")
        weight = acttrace.catalogue.module_at(llama, target).weight
        before = weight.detach().clone()
        table = os.path.join(tmp, "zero.tsv")
        threshold = float(before.abs().flatten().sort().values[-5])  # the 4 largest go
        with open(table, "w", encoding="utf-8") as f:
            f.write(f"module\tkind\tvalue\n{target}\trow\t1\n{target}\tcolumn\t2\n"
                    f"{target}\tabove\t{threshold!r}\n")
        with acttrace.zero_weights(llama, table) as z:
            inside = weight.detach().clone()
            zmean, zn = reference_perplexity(llama, batches_of(sequences_of(texts[:1], 20, bos=True), 4))
        want = before.clone()
        want[1, :] = 0
        want[:, 2] = 0
        want[before.abs() > threshold] = 0
        check.ok(torch.equal(inside, want), "row, column and threshold zeroed inside the block")
        check.ok(torch.equal(weight, before), "every weight back, bit for bit, after it")
        check.ok(z.counts()[target] == int(((want == 0) & (before != 0)).sum()),
                 f"counts {z.counts()}")
        rc, stdout, stderr = env.run("--model", llama_dir, "--text", files[0], "--perplexity",
                                     "--zero-weights", table, "--seq-len", 20, "--batch", 4)
        rows = [l.split("\t") for l in stdout.splitlines()]
        check.ok(rc == 0 and [r[0] for r in rows[1:]] == ["baseline", "zeroed"], f"{rows} {stderr}")
        if rc == 0 and len(rows) == 3:
            check.ok(math.isclose(float(rows[2][3]), math.exp(zmean), rel_tol=1e-6),
                     f"zeroed {rows[2]}, expected {math.exp(zmean)}")
        for text, want_err in (("module\tkind\tvalue\nx\tdiagonal\t1\n", "zero.tsv:2: kind"),
                               (f"module\tkind\tvalue\n{target}\trow\t99999\n", "rows"),
                               ("module\tkind\tvalue\nno.such.module\trow\t1\n", "no.such.module")):
            with open(table, "w", encoding="utf-8") as f:
                f.write(text)
            rc, stdout, stderr = env.run("--model", llama_dir, "--text", files[0], "--perplexity",
                                         "--zero-weights", table)
            check.ok(rc == 1 and want_err in stderr and stderr.count("\n") == 1,
                     f"{text!r}: exit {rc}: {stderr!r}")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o",
                                os.path.join(tmp, "z.h5"), "--zero-weights", table)
        check.ok(rc == 2 and "needs --perplexity" in stderr, f"without a measure: {rc} {stderr!r}")

        # --- --clip without --perplexity records the clipped model
        check.context = "clipped trace"
        out = os.path.join(tmp, "clipped.h5")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o", out, "--clip",
                                bounds)
        check.ok(rc == 0, f"exit {rc}: {stderr}")
        with h5py.File(out, "r") as f:
            g = f["points/final_norm.out"]
            check.ok(g["min"][17] >= -0.25 and g["max"][17] <= 0.25,
                     f"channel 17 in [{g['min'][17]}, {g['max'][17]}]")

        # --- failures that need the model: exit 1, one line, no trace
        check.context = "model errors"
        out = os.path.join(tmp, "bad.h5")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o", out,
                                "--catalogue", "mamba")
        check.ok(rc == 1 and stderr.startswith("trace-capture: catalogue 'mamba'") and
                 stderr.count("\n") == 1, f"wrong catalogue: exit {rc}: {stderr!r}")
        check.ok(not os.path.exists(out), "no trace after a catalogue error")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o", out,
                                "--catalogue", "nope")
        check.ok(rc == 2 and "unknown catalogue 'nope'" in stderr, f"unknown catalogue: {stderr!r}")
        check.ok(not os.path.exists(out), "no trace after an unknown catalogue")
        empty_dir = os.path.join(tmp, "noweights")
        os.makedirs(empty_dir)
        shutil.copy(os.path.join(llama_dir, "config.json"), empty_dir)
        rc, _, stderr = env.run("--model", empty_dir, "--text", files[0], "-o", out)
        check.ok(rc == 1 and stderr.startswith(f"trace-capture: {empty_dir}: cannot load the model"),
                 f"no weights: exit {rc}: {stderr!r}")
        check.ok(not os.path.exists(out), "no trace after a load error")
        rc, _, stderr = env.run("--model", llama_dir, "--text", files[0], "-o", out, "--clip",
                                files[0])
        check.ok(rc == 1 and stderr.startswith(f"trace-capture: {files[0]}:"),
                 f"a text as bounds: exit {rc}: {stderr!r}")

        # --- progress on a terminal
        check.context = "progress"
        out = os.path.join(tmp, "tty.h5")
        rc, _, stderr = env.run("--model", llama_dir, "--text", *files, "-o", out, "--seq-len", 8,
                                tty=True)
        check.ok(rc == 0 and "tok/s" in stderr and "ETA" in stderr and "capture" in stderr,
                 f"progress on a terminal: exit {rc}: {stderr[-300:]!r}")
        rc, _, stderr = env.run("--model", llama_dir, "--text", *files, "-o", out, "--seq-len", 8,
                                "-q", tty=True)
        check.ok(rc == 0 and stderr == "", f"-q on a terminal: {stderr[-200:]!r}")
    check.done("test_python_cli")


if __name__ == "__main__":
    main()
