"""The shipped network's architecture in PyTorch on the GPU: the reference time for the
ONNX Runtime figures of `scripts/gpu-check.sh`.

Random weights (the time does not depend on them), inputs [B, Nnet, H, W] twice, eager and
`torch.compile`, fp32 and fp16 autocast; CUDA events, median of 10 calls after 3 warm-ups.
Prints one line per case, seconds per pair.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models" / "train"))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="512,2048")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--variant", default="light-nonorm")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch not installed here: no PyTorch reference")
        return
    from espinnet_train.model import VARIANTS, build

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if cuda else 'cpu'}")
    net = build(a.variant).to(device).eval()
    nnet = VARIANTS[a.variant].nnet
    compiled = torch.compile(net) if cuda else None
    # As ONNX Runtime's CUDA provider does (its exhaustive cuDNN search): the fastest
    # convolution algorithm per shape.
    torch.backends.cudnn.benchmark = True

    def seconds(model, b, size, half):
        x = torch.rand(b, nnet, size, size, device=device)
        y = torch.rand(b, nnet, size, size, device=device)
        times = []
        with torch.inference_mode(), torch.autocast(device, torch.float16, enabled=half):
            for i in range(13):
                if cuda:
                    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                    start.record()
                    model(x, y)
                    end.record()
                    torch.cuda.synchronize()
                    t = start.elapsed_time(end) / 1e3
                else:
                    import time

                    t0 = time.perf_counter()
                    model(x, y)
                    t = time.perf_counter() - t0
                if i >= 3:
                    times.append(t)
        return statistics.median(times) / b

    # Every eager figure first: compiling each shape takes minutes, and the run is bounded.
    for name, model in [("eager", net), ("compiled", compiled)]:
        if model is None:
            continue
        for size in map(int, a.sizes.split(",")):
            for b in map(int, a.batches.split(",")):
                for half in (False, True):
                    try:
                        s = seconds(model, b, size, half)
                    except torch.OutOfMemoryError:
                        print(f"{name} {size}² batch {b} {'fp16' if half else 'fp32'}: out of memory")
                        torch.cuda.empty_cache()
                        continue
                    kind = "fp16" if half else "fp32"
                    print(f"{name:<8} {size}²×{nnet} batch {b:>2} {kind}: {s * 1e3:9.2f} ms per pair")


if __name__ == "__main__":
    main()
