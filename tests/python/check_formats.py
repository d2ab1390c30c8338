"""Cross-checks espinnet's files with the reference readers (tifffile, h5py, numpy).

Usage: check_formats.py PATH/TO/espinnet
A reader of our own proves little about our writer; these are what users open files with.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import tifffile


def main(exe: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case"
        subprocess.run([exe, "simulate", "--output", str(case), "--size", "48", "--scans", "4",
                        "--flux", "0"], check=True)
        meta = json.loads((case / "meta.json").read_text())
        ref = tifffile.imread(case / "reference.tif")
        assert ref.dtype == np.float32 and ref.shape == (4, 48, 48), (ref.dtype, ref.shape)
        with tifffile.TiffFile(case / "sample.tif") as t:
            assert len(t.pages) == 4, len(t.pages)
        # noise-free: the mean photon count is the flux, to within the pattern's statistics
        assert abs(ref.mean() / meta["mean_photons"] - 1) < 0.1, ref.mean()
        for name in ["dx", "dy", "transmission", "darkfield", "phase"]:
            a = tifffile.imread(case / "truth" / f"{name}.tif")
            assert a.dtype == np.float32 and a.shape == (48, 48), (name, a.dtype, a.shape)
        t = tifffile.imread(case / "truth" / "transmission.tif")
        assert 0.5 < t.min() <= t.max() <= 1.0 + 1e-6, (t.min(), t.max())

        ds = Path(tmp) / "ds"
        subprocess.run([exe, "dataset", "--output", str(ds), "--count", "3", "--patch", "32",
                        "--nnet", "6"], check=True, stderr=subprocess.DEVNULL)
        with h5py.File(ds / "shard-00000.h5") as f:
            assert f["reference"].shape == (3, 6, 32, 32) and f["reference"].dtype == np.float32
            assert f["dx"].shape == (3, 32, 32)
            assert json.loads(f.attrs["dataset"])["nnet"] == 6
            assert len(json.loads(f.attrs["configs"])) == 3
    print("format cross-checks passed (tifffile, h5py)")


if __name__ == "__main__":
    main(sys.argv[1])
