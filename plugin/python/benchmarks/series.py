"""CT series throughput: seconds per projection and projections per hour, serial and on a
two-worker Dask LocalCluster, for each engine, and what a 901-projection scan would take.

    python plugin/python/benchmarks/series.py [--sizes 512,2048] [--scans 3,20] [--angles 4]

Each case is a phantom scan from ``espinnet simulate-ct`` (``$ESPINNET_CLI`` or ``espinnet``
on PATH) of --angles projections. A run is timed whole: opening the scan, every projection
(read, engine, air reference, journal) and writing the NeXus file. The serial run uses
every core for each projection; the cluster runs one projection per worker, one core each.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import espinnet

GEOMETRY = ("energy_kev", "distance_m", "pixel_size_um", "magnification")


def timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--scans", default="3,20")
    p.add_argument("--angles", type=int, default=4)
    p.add_argument("--engines", default="network,tracking")
    p.add_argument("--no-dask", action="store_true")
    a = p.parse_args()
    cli = os.environ.get("ESPINNET_CLI") or shutil.which("espinnet")
    if not a.no_dask:  # the serial runs need neither
        import espinnet.dask as espinnet_dask
        from dask.distributed import Client, LocalCluster

    cores = os.cpu_count()
    print(f"{cores} cores; {a.angles} projections per case; s/projection of the whole run")
    print(f"{'case':>16} {'engine':>9} {'mode':>8} {'s/proj':>8} {'proj/h':>8} {'901 proj':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, a.sizes.split(",")):
            for n in map(int, a.scans.split(",")):
                ct = Path(tmp) / f"ct{size}_{n}"
                subprocess.run([cli, "simulate-ct", "--output", str(ct), "--size", str(size),
                                "--angles", str(a.angles), "--scans", str(n), "--no-delta"],
                               check=True, capture_output=True)
                meta = json.loads((ct / "ct.json").read_text())
                geometry = {k: meta[k] for k in GEOMETRY}
                for engine in a.engines.split(","):
                    options = dict(engine=engine, **geometry)
                    if engine == "tracking":
                        options.update(window=1, max_shift=5)
                    modes = ["serial"] + ([] if a.no_dask else ["dask-2"])
                    for mode in modes:
                        out = ct / f"{engine}-{mode}.h5"
                        if mode == "serial":
                            def run():
                                with espinnet.Series(ct / "scan.h5") as scan, \
                                        espinnet.Engine(**options) as e:
                                    scan.reconstruct(e, out)
                        else:
                            def run():
                                with LocalCluster(n_workers=2, threads_per_worker=1,
                                                  dashboard_address=None) as cluster, \
                                        Client(cluster) as client:
                                    espinnet_dask.reconstruct_series(
                                        client, ct / "scan.h5", out, chunk=1, ncore=1,
                                        **options)
                        each = timed(run) / a.angles
                        print(f"{size}²×{n:<3}{'':>8} {engine:>9} {mode:>8} {each:8.2f} "
                              f"{3600 / each:8.0f} {901 * each / 60:7.1f} min", flush=True)


if __name__ == "__main__":
    main()
