"""Export a checkpoint to ONNX and verify the graph against PyTorch in ONNX Runtime.

    python -m espinnet_train.export --checkpoint RUN/last.pt --output models/espinnet-light.onnx

Inputs `reference`, `sample` [B, Nnet, H, W] float32, already divided by the mean of the
reference stack; H, W multiples of `size_multiple`. Outputs `displacement` [B, 2, H, W]
(dx, dy in input pixels, S(r) = R(r - d)), `transmission`, `darkfield` [B, 1, H, W].
B, H and W are dynamic. Scaling, padding, clipping, units and phase stay in the runtime.
"""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .model import build, describe

OPSET = 17


class Exported(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, reference, sample):
        return self.net(reference, sample)


def recipe_commit():
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export(checkpoint, output, verify_size=96, tolerance=1e-4):
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net = build(ck["variant"])
    net.load_state_dict(ck["model"])
    net.eval()
    v = net.variant
    model = Exported(net).eval()
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(1, v.nnet, verify_size, verify_size, generator=gen) + 0.5,
               torch.rand(1, v.nnet, verify_size, verify_size, generator=gen) + 0.5)
    dyn = {0: "batch", 2: "height", 3: "width"}
    tmp = Path(str(output) + ".tmp")
    torch.onnx.export(
        model, example, str(tmp), opset_version=OPSET, dynamo=False,
        input_names=["reference", "sample"],
        output_names=["displacement", "transmission", "darkfield"],
        dynamic_axes={k: dyn for k in ("reference", "sample", "displacement", "transmission",
                                       "darkfield")})
    m = onnx.load(str(tmp))
    meta = {
        "espinnet.nnet": str(v.nnet),
        "espinnet.size_multiple": str(v.size_multiple),
        "espinnet.normalisation": "mean_of_reference_stack",
        "espinnet.variant": v.name,
        "espinnet.architecture": json.dumps(describe(v)),
        # Optimiser steps in all: a fine-tune's own plus those of the weights it started from.
        "espinnet.training_step": str(ck["step"] + ck.get("init_step", 0)),
        "espinnet.recipe_commit": recipe_commit(),
        "espinnet.outputs": "displacement=[dx,dy] px, S(r)=R(r-d); transmission; darkfield",
    }
    for k, val in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, val
    m.producer_name = "espinnet_train"
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp))
    worst = verify(model, str(tmp), v.nnet, v.size_multiple)
    if worst > tolerance:
        tmp.unlink()
        raise SystemExit(f"ONNX Runtime differs from PyTorch by {worst:.2e} (relative) > {tolerance:.0e}")
    tmp.replace(output)
    return meta, worst


@torch.no_grad()
def verify(model, path, nnet, multiple):
    """Largest difference between ONNX Runtime and PyTorch, relative to the output's scale
    (max(1, max |output|): displacements are tens of pixels on random input), over shapes
    that differ from the export example (batch 2, non-square), to prove the dynamic axes
    work."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for b, h, w in ((2, 4 * multiple, 6 * multiple), (1, 8 * multiple, 5 * multiple)):
        r = torch.rand(b, nnet, h, w, generator=gen) + 0.5
        # A smooth shift field so the warp is exercised away from zero flow.
        s = torch.roll(r, shifts=(1, -2), dims=(2, 3)) * 0.9
        ref = [x.numpy() for x in model(r, s)]
        got = sess.run(None, {"reference": r.numpy(), "sample": s.numpy()})
        for a, g in zip(ref, got):
            if a.shape != g.shape:
                raise SystemExit(f"shape {g.shape} from ONNX Runtime, {a.shape} from PyTorch")
            scale = max(1.0, float(np.abs(a).max()))
            worst = max(worst, float(np.abs(a - g).max()) / scale)
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)
    meta, worst = export(args.checkpoint, args.output)
    size = Path(args.output).stat().st_size
    print(json.dumps(dict(output=args.output, bytes=size, max_rel_diff_vs_torch=worst, **meta),
                     indent=1))


if __name__ == "__main__":
    main()
