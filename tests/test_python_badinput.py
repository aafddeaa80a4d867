"""test_python_badinput.py: bad input to the Python binding is a clear
acttrace.Error (one line, naming what is wrong), raised before any hook is
attached or any file is written, and never leaves a trace that claims to be
complete.

- catalogues: an unknown name; a model with no matching modules (nothing
  for the generic catalogue; a GPT-2 asked for as Llama or Mamba);
- output: a missing directory, a directory, an unwritable file;
- options: a bad sample policy, points that do not exist;
- a failure inside the with block (a hook that cannot map its rows to the
  forward's tokens, a plain exception): the trace is incomplete (complete=0)
  and every hook is gone; points that saw nothing are a RuntimeWarning;
- bounds tables: missing, empty, no header, bad numbers, lower > upper,
  channels given twice, not UTF-8, unknown points, channels out of range;
- acttrace.tokens with no capture open; a library that is not there
  (ACTTRACE_LIB): a clear ImportError."""
import os
import subprocess
import sys
import tempfile
import warnings

from test_python_models import Checker, acttrace, tiny_gpt2, tiny_llama
import torch  # noqa: E402

try:
    import h5py
    from testlib import make_zstd_filter_available
except ImportError as e:
    print(f"SKIP: {e.name} is not importable (apt-get install python3-h5py python3-hdf5plugin)")
    sys.exit(77)

check = Checker()


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def expect_error(what, fn, *pieces):
    """fn() must raise acttrace.Error with one line containing every piece."""
    try:
        fn()
    except acttrace.Error as e:
        message = str(e)
        check.ok("\n" not in message and all(p in message for p in pieces),
                 f"{what}: message {message!r} lacks {pieces}")
        return e
    except Exception as e:  # noqa: BLE001
        check.ok(False, f"{what}: raised {type(e).__name__}: {e}")
        return None
    check.ok(False, f"{what}: no error")
    return None


def capture_with(model, path, **options):
    def run():
        with acttrace.capture(model, path, **options):
            model(torch.zeros(1, 3, dtype=torch.long))
    return run


def main():
    if make_zstd_filter_available() is None:
        print("SKIP: no zstd filter (32015) for h5py: set HDF5_PLUGIN_PATH to the build's hdf5-plugins")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="acttrace-bad-") as tmp:
        out = os.path.join(tmp, "out.h5")
        llama = tiny_llama()
        gpt2 = tiny_gpt2()

        check.context = "catalogues"
        expect_error("unknown catalogue (points)", lambda: acttrace.points(llama, "nope"),
                     "unknown catalogue 'nope'", "llama", "generic")
        expect_error("unknown catalogue (capture)", lambda: acttrace.capture(llama, out, "nope"),
                     "unknown catalogue 'nope'")
        check.ok(not os.path.exists(out), "no file after an unknown catalogue")
        nothing = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh())
        expect_error("no matching modules", lambda: acttrace.capture(nothing, out),
                     "generic", "no recording points")
        expect_error("GPT-2 as Llama", lambda: acttrace.capture(gpt2, out, "llama"),
                     "catalogue 'llama'", "self_attn")
        expect_error("GPT-2 as Mamba", lambda: acttrace.points(gpt2, "mamba"), "catalogue 'mamba'")
        expect_error("not a module", lambda: acttrace.capture("model.bin", out), "torch.nn.Module")
        check.ok(not os.path.exists(out), "no file after catalogue errors")
        check.ok(hook_count(llama) == 0 and hook_count(gpt2) == 0, "no hooks after catalogue errors")

        check.context = "output"
        missing = os.path.join(tmp, "no", "such", "dir", "run.h5")
        e = expect_error("missing directory", capture_with(llama, missing), missing)
        check.ok(e is not None and e.code == -3, f"AT_EIO for a missing directory ({e and e.code})")
        expect_error("a directory", capture_with(llama, tmp), tmp)
        if os.geteuid() != 0:  # root writes anywhere
            ro = os.path.join(tmp, "ro")
            os.mkdir(ro, 0o500)
            expect_error("read-only directory", capture_with(llama, os.path.join(ro, "x.h5")), ro)
        check.ok(not os.path.exists(missing), "no file in a missing directory")
        check.ok(hook_count(llama) == 0, "no hooks after output errors")

        check.context = "options"
        for bad in ("every:0", "sometimes:3", "every", "first:x", ("every",), 7):
            expect_error(f"sample={bad!r}", lambda bad=bad: acttrace.capture(llama, out, sample=bad),
                         "sample")
        expect_error("unknown point", lambda: acttrace.capture(llama, out, points=["layers.9.x"]),
                     "layers.9.x")
        expect_error("no point selected", lambda: acttrace.capture(llama, out, points=lambda p: False),
                     "no recording points selected")
        expect_error("zstd level", capture_with(llama, out, compression_level=42), "42")
        expect_error("when_busy", capture_with(llama, out, when_busy="later"), "when_busy")
        expect_error("sample_bytes_in_flight", capture_with(llama, out, sample_bytes_in_flight=-1),
                     "sample_bytes_in_flight")
        check.ok(not os.path.exists(out), "no file after option errors")

        check.context = "failure inside the block"
        ids = torch.randint(0, 90, (2, 5))
        path = os.path.join(tmp, "mismatch.h5")

        def mismatch():
            with acttrace.capture(llama, path):
                acttrace.tokens(torch.zeros(1, 3, dtype=torch.long))  # 3 tokens named ...
                llama(ids)                                             # ... 10 run
        expect_error("rows that are not the forward's tokens", mismatch, "1x3", "rows")
        check.ok(hook_count(llama) == 0, "no hooks after a failing hook")
        with h5py.File(path, "r") as f:
            check.ok(f.attrs["complete"] == 0, "complete = 0 after a failing hook")
        path = os.path.join(tmp, "raised.h5")
        try:
            with acttrace.capture(llama, path):
                llama(ids)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        with h5py.File(path, "r") as f:
            check.ok(f.attrs["complete"] == 0, "complete = 0 after an exception in the block")
            check.ok(f["points/final_norm.out/count"][0] == 10,
                     "what was seen before the exception is kept")
        check.ok(hook_count(llama) == 0, "no hooks after an exception in the block")
        expect_error("tokens with no capture", lambda: acttrace.tokens(ids), "no capture is open")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad(), acttrace.capture(llama, os.path.join(tmp, "part.h5")):
                llama.model.embed_tokens(ids)  # only the embedding runs
        messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
        check.ok(len(messages) == 1 and "recording points saw no data" in messages[0] and
                 "layers.0.layer.in" in messages[0], f"points that saw nothing: {messages}")

        check.context = "bounds"
        cases = [
            ("missing.tsv", None, "No such file"),
            ("empty.tsv", "", "empty bounds table"),
            ("header.tsv", "point\tchannel\tlow\thigh\n", "header lacks column 'lower'"),
            ("channel.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\tx\t0\t1\n",
             ":2: channel 'x' is not an integer"),
            ("negative.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\t-1\t0\t1\n",
             ":2: negative channel"),
            ("number.tsv", "point\tchannel\tlower\tupper\n\n# c\nfinal_norm.out\t1\tlow\t1\n",
             ":4: lower 'low' is not a number"),
            ("nan.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\t1\t0\tnan\n", ":2: upper is NaN"),
            ("order.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\t1\t2\t1\n", ":2: lower 2.0 > upper 1.0"),
            ("twice.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\t1\t0\t1\nfinal_norm.out\t1\t0\t2\n",
             ":3: point 'final_norm.out' channel 1 given twice"),
            ("short.tsv", "point\tchannel\tlower\tupper\nfinal_norm.out\t1\t0\n", ":2: 3 fields"),
        ]
        for name, content, piece in cases:
            path = os.path.join(tmp, name)
            if content is not None:
                with open(path, "w") as f:
                    f.write(content)
            expect_error(name, lambda path=path: acttrace.read_bounds(path), path, piece)
        latin1 = os.path.join(tmp, "latin1.tsv")
        with open(latin1, "wb") as f:
            f.write("point\tchannel\tlower\tupper\nfinal_norm.out\t1\t0\t1 # \xe9t\xe9\n".encode("latin-1"))
        expect_error("latin-1", lambda: acttrace.read_bounds(latin1), latin1, "not UTF-8")
        expect_error("unknown point", lambda: acttrace.clip(llama, {"layers.7.mlp.in": {0: (0, 1)}}),
                     "no point 'layers.7.mlp.in'")
        expect_error("channel out of range", lambda: acttrace.clip(llama, {"final_norm.out": {32: (0, 1)}}),
                     "32 channels", "channel 32")
        expect_error("no bounds", lambda: acttrace.clip(llama, {}), "no bounds")
        check.ok(hook_count(llama) == 0, "no hooks after bounds errors")

        check.context = "library"
        env = dict(os.environ, ACTTRACE_LIB=os.path.join(tmp, "libnothere.so"))
        r = subprocess.run([sys.executable, "-c", "import acttrace"], env=env, capture_output=True,
                           text=True)
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check.ok(r.returncode != 0 and last.startswith("ImportError: acttrace: cannot load libacttrace")
                 and "libnothere.so" in last, f"a missing library: {last!r}")
    check.done("test_python_badinput")


if __name__ == "__main__":
    main()
