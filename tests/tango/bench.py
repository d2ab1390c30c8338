"""End-to-end latency through the Tango server against the C API alone, in one run.

For each size: the C API (the espinnet package's retrieve) on stacks already in memory;
then the same acquisition through EspinnetDS in live mode, one frame per write, timed
from the first frame written to the result (ResultCount polled every 5 ms), and from the
last frame written to the result. Usage (scripts/tango-bench.sh runs it):
    python tests/tango/bench.py [--sizes 512 2048] [--scans 20] [--engine network]
"""

import argparse
import time

import espinnet
from helpers import Server, upload, wait_idle


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--scans", type=int, default=20)
    p.add_argument("--engine", default="network")
    args = p.parse_args()
    server = Server()
    try:
        d = server.proxy()
        d.write_attributes([("Engine", args.engine), ("AutoReconstruct", True)])
        print(f"engine {args.engine}, N = {args.scans}; seconds")
        print("size   C API   Tango: first frame -> result   last frame -> result   ratio (first frame)")
        for size in args.sizes:
            case = espinnet.simulate("mask-diagonal", size=size, n=args.scans, seed=1)
            espinnet.retrieve(case.reference[:, :64, :64], case.sample[:, :64, :64], engine=args.engine)
            t0 = time.perf_counter()
            espinnet.retrieve(case.reference, case.sample, engine=args.engine)
            c_api = time.perf_counter() - t0
            d.ClearFrames()
            before = d.ResultCount
            t0 = time.perf_counter()
            upload(d, case.reference, case.sample, check_counts=False)
            last = time.perf_counter()
            while d.ResultCount == before:
                time.sleep(0.005)
            done = time.perf_counter()
            wait_idle(d)
            print(f"{size:5d}  {c_api:6.2f}  {done - t0:29.2f}  {done - last:21.2f}  {(done - t0) / c_api:19.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
