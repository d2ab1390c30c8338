"""What the Python layer costs on top of the C ABI, as ratios measured in one run.

    python plugin/python/benchmarks/overhead.py [--sizes 512,2048] [--scans 20] [--repeat 3]

For each engine and size, the same simulated case is timed (median of --repeat, calls
interleaved) through:
  c-abi     esp_engine_reconstruct_with_progress called directly (ctypes, preallocated
            outputs, no callback): the library's own time;
  engine    Engine.reconstruct(float32 stacks): outputs allocated, the call on a worker
            thread so that Ctrl-C works, progress callback installed;
  uint16    Engine.reconstruct on uint16 stacks (converted once to float32);
  retrieve  espinnet.retrieve, which builds the engine (loads the model) each call.
"""

import argparse
import statistics
import time
from ctypes import byref

import numpy as np

import espinnet
from espinnet import _native
from espinnet.engine import CONTRASTS, stack


def c_abi(engine, reference, sample):
    ref, ref_array = stack("reference", reference)
    smp, smp_array = stack("sample", sample)
    h, w = reference.shape[1:]
    maps = {name: np.empty((h, w), np.float32) for name in CONTRASTS}
    out = _native.Outputs(len=h * w, **{k: a.ctypes.data for k, a in maps.items()})
    _native.check(_native.lib.esp_engine_reconstruct_with_progress(
        engine._handle, byref(ref), byref(smp), byref(out), _native.PROGRESS_FN(), None))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--scans", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engines", default="network,tracking")
    a = p.parse_args()
    print(f"espinnet {espinnet.__version__}, median of {a.repeat}; seconds, and ratio to c-abi")
    for size in map(int, a.sizes.split(",")):
        ref, smp, _, _ = espinnet.simulate("mask-diagonal", size=size, n=a.scans, seed=1)
        ref16, smp16 = np.rint(ref).astype(np.uint16), np.rint(smp).astype(np.uint16)
        for name in a.engines.split(","):
            engine = espinnet.Engine(name)
            ways = {
                "c-abi": lambda: c_abi(engine, ref, smp),
                "engine": lambda: engine.reconstruct(ref, smp),
                "uint16": lambda: engine.reconstruct(ref16, smp16),
                "retrieve": lambda: espinnet.retrieve(ref, smp, engine=name),
            }
            ways["c-abi"]()  # warm-up (first inference, page faults)
            times = {k: [] for k in ways}
            for _ in range(a.repeat):
                for k, f in ways.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
            base = statistics.median(times["c-abi"])
            cells = "  ".join(f"{k} {statistics.median(v):7.3f} s ({statistics.median(v) / base:.3f}×)"
                              for k, v in times.items())
            print(f"{size}²×{a.scans} {name:8s} {cells}", flush=True)
            engine.close()


if __name__ == "__main__":
    main()
