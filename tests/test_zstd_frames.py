"""test_zstd_frames.py: every compressed chunk of a trace is a standard HDF5
shuffle + zstd chunk.  Each chunk is read raw (h5py read_direct_chunk),
decoded by an independent zstd implementation (python3-zstandard) and
unshuffled with numpy, and must equal what HDF5 itself decodes through the
filter plugin: no acttrace code on the checking side."""
import os
import subprocess
import sys
import tempfile

import h5py
import hdf5plugin  # noqa: F401  (the stock way to get filters into h5py)
import numpy as np

from testlib import stored_elements

try:
    import zstandard
except ImportError:
    print("SKIP: python3-zstandard is not installed")
    sys.exit(77)

SHUFFLE, ZSTD = 2, 32015


def unshuffle(raw, itemsize, nbytes):
    """Inverse of HDF5's byte shuffle; trailing bytes that do not make a whole
    element stay in place, as H5Zshuffle.c leaves them."""
    n = nbytes // itemsize
    planes = np.frombuffer(raw[: n * itemsize], dtype=np.uint8).reshape(itemsize, n)
    return planes.T.tobytes() + raw[n * itemsize:]


def chunk_slices(offset, chunk, shape):
    return tuple(slice(o, min(o + c, s)) for o, c, s in zip(offset, chunk, shape))


def check_dataset(dset, stats):
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if not filters:
        return
    assert filters == [SHUFFLE, ZSTD], f"{dset.name}: pipeline {filters}, want shuffle+zstd"
    ftype = dset.id.get_type()
    itemsize = ftype.get_size()  # as stored: h5py shows bfloat16 as float32
    chunk = dset.chunks
    for i in range(dset.id.get_num_chunks()):
        info = dset.id.get_chunk_info(i)
        mask, packed = dset.id.read_direct_chunk(info.chunk_offset)
        assert mask == 0, f"{dset.name}: chunk {i} skipped filters (mask {mask})"
        params = zstandard.get_frame_parameters(packed)
        assert params.has_checksum, f"{dset.name}: chunk {i} has no content checksum"
        assert params.content_size == int(np.prod(chunk)) * itemsize, \
            f"{dset.name}: chunk {i} declares {params.content_size} bytes"
        if stats["chunks"] == 0:  # one damaged copy: zstd must refuse it
            damaged = bytearray(packed)
            damaged[len(damaged) // 2] ^= 0x5A
            try:
                zstandard.ZstdDecompressor().decompress(bytes(damaged))
                refused = False
            except zstandard.ZstdError:
                refused = True
            assert refused, f"{dset.name}: a damaged chunk {i} decodes without error"
        frame = zstandard.ZstdDecompressor().decompress(packed)
        full = int(np.prod(chunk)) * itemsize
        assert len(frame) == full, f"{dset.name}: chunk {i} decodes to {len(frame)} bytes, want {full}"
        data = stored_elements(unshuffle(frame, itemsize, len(frame)), ftype).reshape(chunk)
        sl = chunk_slices(info.chunk_offset, chunk, dset.shape)
        want = dset[sl]
        got = data[tuple(slice(0, s.stop - s.start) for s in sl)]
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), f"{dset.name}: chunk {i} differs"
        stats["chunks"] += 1
        stats["bytes"] += len(frame)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.h5")
        subprocess.run(["trace-synth", "--arch", "tiny", "--tokens", "300", "--seed", "5",
                        "--samples", "40", "-q", "-o", path], check=True)
        stats = {"chunks": 0, "bytes": 0, "datasets": 0}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.chunks:
                    check_dataset(obj, stats)
                    stats["datasets"] += 1
            f.visititems(visit)
        assert stats["chunks"] > 300, stats
        print(f"ok - {stats['chunks']} chunks of {stats['datasets']} datasets "
              f"({stats['bytes']} bytes) decode independently")


if __name__ == "__main__":
    main()
