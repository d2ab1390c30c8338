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
        # One NeXus file per run: what h5py, silx and h5web expect of it, and the same maps
        # as the directory of TIFFs of the same run.
        geometry = ["--energy-kev", "20", "--distance-m", "0.5", "--pixel-size-um", "6.5",
                    "--magnification", "10"]
        for out in ["run", "run.h5"]:
            subprocess.run([exe, "reconstruct", "--case", str(case), "--output", str(Path(tmp) / out),
                            "--engine", "tracking", "--max-shift", "4", *geometry],
                           check=True, stderr=subprocess.DEVNULL)
        with h5py.File(Path(tmp) / "run.h5") as f:
            assert f.attrs["default"] == "entry" and f["entry"].attrs["NX_class"] == "NXentry"
            data = f["entry"][f["entry"].attrs["default"]]
            assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "phase"
            assert set(data.attrs["auxiliary_signals"]) == {
                "dx", "dy", "transmission", "darkfield", "quality", "refraction_x", "refraction_y"}
            assert list(data.attrs["axes"]) == [".", "."]
            assert data["phase"].attrs["units"] == "rad" and data["dx"].attrs["units"] == "pixel"
            assert data["status"].dtype == np.uint8
            for name in ["dx", "transmission", "phase"]:
                tif = tifffile.imread(Path(tmp) / "run" / f"{name}.tif")
                assert np.array_equal(data[name][()], tif, equal_nan=True), name
            note = f["entry/process/settings"]
            assert note.attrs["NX_class"] == "NXnote" and note["type"][0].decode() == "application/json"
            settings = json.loads(note["data"][0])
            assert settings["geometry"]["pixel_size_um"] == 6.5 and settings["engine"] == "tracking"
            assert f["entry/process"].attrs["NX_class"] == "NXprocess"
        again = subprocess.run([exe, "reconstruct", "--case", str(case), "--output", str(Path(tmp) / "run.h5"),
                                "--engine", "tracking"], capture_output=True, text=True)
        assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    print("format cross-checks passed (tifffile, h5py, NeXus result)")


if __name__ == "__main__":
    main(sys.argv[1])
