"""Writes the fuzz targets' seed corpora into corpus/<target>/ (committed; rerun to
regenerate): small stacks in every format and dtype the readers take, as numpy, tifffile
and h5py write them, the hostile files of tests/data/readers, option lines, pixel values
and gradients. Each reader seed starts with the byte that picks its format (0 TIFF,
1 NPY, 2 HDF5). Needs numpy, tifffile and h5py (the set-up's .venv)."""
import io
import tempfile
from pathlib import Path

import h5py
import numpy as np
import tifffile

HERE = Path(__file__).parent / "corpus"
READERS = Path(__file__).parent.parent / "data" / "readers"
rng = np.random.default_rng(1)


def put(target, name, data):
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def speckle(n, h, w, dtype):
    a = 1000 + 200 * rng.standard_normal((n, h, w))
    return a.astype(dtype)


for dtype in [np.float32, np.float64, np.uint16, np.uint8, np.int16, np.int32]:
    a = speckle(3, 6, 5, dtype)
    name = np.dtype(dtype).name
    b = io.BytesIO()
    tifffile.imwrite(b, a, photometric="minisblack")
    put("read_stack", f"tif-{name}", b"\0" + b.getvalue())
    b = io.BytesIO()
    np.save(b, a)
    put("read_stack", f"npy-{name}", b"\1" + b.getvalue())
    with tempfile.NamedTemporaryFile(suffix=".h5") as f:
        with h5py.File(f.name, "w") as h5:
            h5["data"] = a
        put("read_stack", f"h5-{name}", b"\2" + Path(f.name).read_bytes())
for extra, kwargs in [("zlib", {"compression": "zlib"}), ("tiled", {"tile": (16, 16)}),
                      ("planar", {}), ("big", {"bigtiff": True})]:
    b = io.BytesIO()
    shape = (3, 32, 32) if extra != "planar" else (3, 6, 5)
    tifffile.imwrite(b, speckle(*shape, np.uint16), **({"photometric": "minisblack"} | kwargs)
                     if extra != "planar" else {})
    put("read_stack", f"tif-{extra}", b"\0" + b.getvalue())
for f in sorted(READERS.iterdir()):
    kind = {".tif": b"\0", ".npy": b"\1"}[f.suffix]
    if f.stat().st_size < 1 << 16:
        put("read_stack", f"hostile-{f.name}", kind + f.read_bytes())

for i, text in enumerate([
    "window=1\nmax_shift=8\nthreads=2",
    "window=3\nmax_shift=2\ndark_field=false\nhamming=0",
    "engine=network\ntile=512\noverlap=64\nbatch=4\nscaling=linear",
    "energy_kev=20\ndistance_m=0.5\npixel_size_um=6.5\nmagnification=10\nintegration=least-squares",
    "memory_limit_mib=64\nreseed=true\nadaptive=1\nmean_window=6",
    "max_shift=18446744073709551615\nwindow=9223372036854775807\nthreads=4096",
]):
    put("options", f"seed-{i}", text.encode())

for i, (n, h, w, values) in enumerate([
    (3, 16, 16, 1000 + 100 * rng.standard_normal(64)),
    (1, 20, 12, rng.uniform(0, 2, 64)),
    (2, 10, 10, np.zeros(8)),
    (3, 12, 12, np.full(8, 1e-40)),
    (3, 12, 12, 1e30 * rng.uniform(0.5, 1.5, 64)),
    (2, 9, 9, np.array([np.nan, np.inf, -np.inf, 1.0])),
]):
    put("reconstruct", f"seed-{i}", bytes([n - 1, h - 8, w - 8]) + np.asarray(values, "<f4").tobytes())

for i, (h, w, m) in enumerate([(8, 8, 0), (16, 5, 1), (1, 1, 0), (2, 64, 1)]):
    g = rng.standard_normal(2 * h * w).astype("<f4")
    put("integrate", f"seed-{i}", bytes([h - 1, w - 1, m]) + g.tobytes())
