"""CT from scanned-pattern projections, end to end: ``espinnet simulate-ct`` makes a phantom
scan (DXchange file, N pattern images per angle), ``espinnet.Series`` reconstructs every
projection with each engine, ``espinnet.tomo`` back-projects the phase into a δ volume with
algotom, and the result is scored against the phantom's true δ and shown as PNG slices.

    pip install "espinnet[tomo]"
    python ct_phantom.py --output ct-demo            # --size 128 --angles 180 --scans 3

Writes ``OUTPUT/slices.png`` (the middle slice: truth, then each engine, same grey scale)
and prints the correlation of each reconstructed volume with the truth.
"""

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import espinnet
from espinnet import tomo

GEOMETRY = ("energy_kev", "distance_m", "pixel_size_um", "magnification")
# The network with its guard (the default), and without.
ENGINES = {"tracking": dict(window=1, max_shift=5), "network": {},
           "network-alone": dict(guard=False)}


def slices_png(path, panels, lo, hi):
    """Side-by-side grey images of the same scale, each titled."""
    tiles = []
    for title, image in panels:
        g = np.clip((np.nan_to_num(image) - lo) / (hi - lo), 0, 1)
        tile = Image.fromarray((255 * g).astype(np.uint8)).resize(
            (256, 256), Image.Resampling.NEAREST).convert("RGB")
        canvas = Image.new("RGB", (256, 276), "white")
        canvas.paste(tile, (0, 20))
        ImageDraw.Draw(canvas).text((4, 4), title, fill="black")
        tiles.append(canvas)
    sheet = Image.new("RGB", (260 * len(tiles), 276), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (260 * i, 0))
    sheet.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=Path("ct-demo"))
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--angles", type=int, default=90)
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--cli", default=os.environ.get("ESPINNET_CLI") or shutil.which("espinnet"),
                   help="the espinnet command (default $ESPINNET_CLI, then PATH)")
    a = p.parse_args()
    if not a.cli:
        p.error("the espinnet command line is needed to simulate: pass --cli")
    subprocess.run([a.cli, "simulate-ct", "--output", str(a.output), "--size", str(a.size),
                    "--angles", str(a.angles), "--scans", str(a.scans), "--seed", str(a.seed),
                    "--force"], check=True)
    meta = json.loads((a.output / "ct.json").read_text())
    geometry = {k: meta[k] for k in GEOMETRY}
    import h5py

    with h5py.File(a.output / "truth.h5") as f:
        truth = f["delta"][()]
    panels = [("truth (delta)", truth[a.size // 2])]
    print(f"{'engine':14} {'s/projection':>12} {'corr(delta)':>12}")
    for engine, options in ENGINES.items():
        out = a.output / f"{engine}.h5"
        out.unlink(missing_ok=True)
        with espinnet.Series(a.output / "scan.h5") as scan, \
                espinnet.Engine(engine.split("-")[0], **geometry, **options) as e:
            start = time.perf_counter()
            scan.reconstruct(e, out)
            seconds = (time.perf_counter() - start) / scan.shape[0]
        result = espinnet.read_series(out)
        delta = tomo.delta_from_phase(result["phase"], result["theta"], **geometry)
        corr = tomo.correlation(delta, truth, margin=a.size // 12)
        print(f"{engine:14} {seconds:12.3f} {corr:12.4f}")
        panels.append((f"{engine} (r = {corr:.3f})", delta[a.size // 2]))
    slices_png(a.output / "slices.png", panels, 0.0, float(truth.max()))
    print(f"wrote {a.output / 'slices.png'}")


if __name__ == "__main__":
    main()
