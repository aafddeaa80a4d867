"""checkpoint-digest.py TRACE LOG: does a trace left by a killed
`at-crash --digest-loop` hold exactly the statistics of the checkpoint its
/checkpoint/state names, as the writer's process logged them?  Reads the
file with h5py (not with acttrace) and recomputes at-crash.c's digest with
numpy.  Prints "checkpoint K of B begun, D done"; exits 1 on a mismatch."""
import sys

import h5py
import hdf5plugin  # noqa: F401  (filter 32015)
import numpy as np

VECTORS = ["count", "nonfinite", "mean", "m2", "m3", "m4", "min", "max", "absmax", "abssum"]
TYPES = {"count": "<u8", "nonfinite": "<u8"}
MASK = (1 << 64) - 1


class Digest:
    """at-crash.c's digest_bytes, over numpy uint64 words."""

    def __init__(self):
        self.sum = 0
        self.index = 0

    def add(self, data):
        raw = data.tobytes()
        raw += b"\0" * (-len(raw) % 8)
        words = np.frombuffer(raw, dtype="<u8")
        idx = np.arange(self.index, self.index + len(words), dtype=np.uint64)
        with np.errstate(over="ignore"):
            keys = (idx * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
            self.sum = (self.sum + int((words * keys).sum(dtype=np.uint64))) & MASK
        self.index += len(words)


def file_digest(f, slot):
    root = f["points"] if slot == 0 else f["checkpoint/points"]
    names = sorted(f["points"], key=lambda n: int(f["points"][n].attrs["order"]))
    d = Digest()
    for name in names:
        g = root[name]
        for v in VECTORS:
            d.add(np.ascontiguousarray(g[v][:], dtype=TYPES.get(v, "<f8")))
        d.add(np.ascontiguousarray(g["hist"][:], dtype="<u4"))
        ext = g["extremes"][:]
        packed = np.zeros(len(ext), dtype=[("value", "<f8"), ("token", "<i8"),
                                           ("channel", "<i4")])
        for field in ("value", "token", "channel"):
            packed[field] = ext[field]
        d.add(packed)
    return d.sum


def read_log(path):
    begun, done = {}, 0
    with open(path) as log:
        for line in log:
            words = line.split()
            if words[0] == "begin":
                begun[int(words[1])] = (int(words[2]), int(words[3]))
            elif words[0] == "done":
                done = int(words[1])
    return begun, done


def main(trace, log_path):
    begun, done = read_log(log_path)
    # a killed SWMR writer leaves the file marked as open by it
    with h5py.File(trace, "r", swmr=True) as f:
        complete = int(f.attrs["complete"])
        slot, k, tokens = (int(v) for v in f["checkpoint/state"][:])
        got = file_digest(f, slot)
        extent = f["tokens/seq"].shape[0]
        root = f["points"] if slot == 0 else f["checkpoint/points"]
        count = sum(int(root[n]["count"][:].sum()) for n in f["points"])
    if complete != 0:
        sys.exit(f"{trace}: complete={complete}, not 0")
    if k not in begun or not done <= k <= done + 1:
        sys.exit(f"{trace}: state names checkpoint {k}; {len(begun)} begun, {done} done")
    want_tokens, want = begun[k]
    if tokens != want_tokens or extent < tokens:
        sys.exit(f"{trace}: checkpoint {k}: {tokens} tokens ({extent} in /tokens), "
                 f"logged {want_tokens}")
    if got != want:
        others = [j for j, (_, dg) in begun.items() if dg == got]
        sys.exit(f"{trace}: checkpoint {k} (slot {slot}): statistics differ from the log"
                 f" (they are those of checkpoints {others})")
    print(f"checkpoint {k} of {len(begun)} begun, {done} done: tokens={tokens} count={count}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
