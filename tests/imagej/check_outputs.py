"""Checks what the ImageJ macros left (scripts/imagej-tests.sh): the plugin's maps against
the command line's on the same saved inputs, the bad-input messages, cancellation.
ImageJ's -batch exits 0 even when a macro failed, so only the outputs count.

Usage: check_outputs.py WORK_DIR ESPINNET_CLI
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

MAPS = ["dx", "dy", "transmission", "darkfield", "quality", "phase"]
GEOMETRY = ["--energy-kev", "20", "--distance-m", "0.5", "--pixel-size-um", "6.5", "--magnification", "10"]


def log(work, name):
    text = (work / f"{name}.log").read_text()
    assert f"macro done: {name}" in text, f"the {name} macro did not finish:\n{text}"
    return text


def main(work, cli):
    out = work / "out"
    text = log(work, "reconstruct")
    for engine in ["tracking", "network"]:
        cli_out = work / f"cli-{engine}"
        subprocess.run([cli, "reconstruct", "--reference", str(out / "reference.tif"), "--sample",
                        str(out / "sample.tif"), "--output", str(cli_out), "--engine", engine, *GEOMETRY],
                       check=True, capture_output=True)
        for name in MAPS:
            plugin = tifffile.imread(out / f"{engine}-{name}.tif")
            expected = tifffile.imread(cli_out / f"{name}.tif")
            assert plugin.dtype == np.float32 and plugin.shape == expected.shape == (128, 128)
            # bit for bit: the same library on the same float32 input
            assert np.array_equal(plugin.view(np.uint32), expected.view(np.uint32)), (engine, name)
        assert f"output {engine} dx 128x128 bits=32 label=dx (px)" in text, text
        assert f"output {engine} phase 128x128 bits=32 label=phase (rad)" in text, text
        # The status, 8-bit: the same numbers (the command line writes them as float32).
        status = tifffile.imread(out / f"{engine}-status.tif")
        assert status.dtype == np.uint8, status.dtype
        assert np.array_equal(status, tifffile.imread(cli_out / "status.tif")), engine
        assert f"output {engine} status 128x128 bits=8 label=status (0 measured" in text, text

    assert "virtual: 1" in text, text
    assert np.array_equal(tifffile.imread(out / "virtual-dx.tif").view(np.uint32),
                          tifffile.imread(out / "tracking-dx.tif").view(np.uint32))
    # The rectangle's work equals the command line's on the same crop.
    assert "roi dx 96x80" in text, text
    crop = work / "crop"
    crop.mkdir()
    for name in ["reference", "sample"]:
        tifffile.imwrite(crop / f"{name}.tif", tifffile.imread(out / f"{name}.tif")[:, 8:88, 16:112])
    subprocess.run([cli, "reconstruct", "--reference", str(crop / "reference.tif"), "--sample",
                    str(crop / "sample.tif"), "--output", str(crop / "out"), "--engine", "tracking"],
                   check=True, capture_output=True)
    assert np.array_equal(tifffile.imread(out / "roi-dx.tif").view(np.uint32),
                          tifffile.imread(crop / "out" / "dx.tif").view(np.uint32))

    text = log(work, "bad-inputs")
    for message in ["The stacks differ: 'reference' is 64×64×5, 'small' is 32×32×5",
                    "'rgb' is RGB: convert it to 8, 16 or 32-bit",
                    "Unknown output 'phse'",
                    "too small for max shift 40",
                    "option 'window' needs an integer"]:
        assert any(line.startswith("ESPINNet error: ") and message in line
                   for line in text.splitlines()), (message, text)
    assert text.count(": aborted") == 5 and "unchanged: images=1 pixels=1" in text, text
    assert "Exception" not in text, text  # messages, never a stack trace

    text = log(work, "headless")
    assert "simulate: ok" in text and "reconstruct: ok" in text, text
    assert "bad: reference= and sample= must name open images" in text, text
    assert np.array_equal(tifffile.imread(out / "headless-dx.tif").view(np.uint32),
                          tifffile.imread(out / "tracking-dx.tif").view(np.uint32))

    text = log(work, "cancel")
    assert "dx_open=0" in text, text
    print("imagej: plugin maps and status equal the CLI's bit for bit (tracking, network, a rectangle, virtual stacks); "
          "bad inputs, true headless and cancellation: ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
