"""CT series from Python: the phantom of ``espinnet simulate-ct`` through ``espinnet.Series``
and ``espinnet.tomo`` (algotom's FBP) back to its δ volume; a stopped run resumed; the same
scan on a two-worker Dask cluster, equal to the serial run. Needs the package's ``tomo``
and ``dask`` extras and ``ESPINNET_CLI`` (the command line, to simulate the scan)."""

import json
import os
import subprocess

import numpy as np
import pytest

import espinnet
from espinnet import tomo

h5py = pytest.importorskip("h5py")
GEOMETRY = ("energy_kev", "distance_m", "pixel_size_um", "magnification")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 96² phantom scan, 90 angles of N = 3: its directory and geometry."""
    cli = os.environ.get("ESPINNET_CLI")
    if not cli:
        pytest.skip("ESPINNET_CLI is not set")
    ct = tmp_path_factory.mktemp("ct")
    subprocess.run([cli, "simulate-ct", "--output", str(ct), "--size", "96", "--angles", "90",
                    "--scans", "3", "--seed", "2", "--force"], check=True)
    meta = json.loads((ct / "ct.json").read_text())
    return ct, {k: meta[k] for k in GEOMETRY}


def delta_correlation(path, ct, geometry):
    result = espinnet.read_series(path)
    delta = tomo.delta_from_phase(result["phase"], result["theta"], **geometry)
    with h5py.File(ct / "truth.h5") as f:
        truth = f["delta"][()]
    assert delta.shape == truth.shape == (96, 96, 96)
    return tomo.correlation(delta, truth, margin=8)


@pytest.mark.parametrize("engine, options, bound", [
    # The target (0.95) for both engines at N = 3. The tracker meets it (0.981
    # measured), and the network with its guard, the default (0.969; 0.9549 before the
    # guard took off the network's smooth bias); without the guard
    # the network does not (0.939: its smooth refraction is biased low, the fault of issue
    # 15), so that bound only guards what it reaches.
    ("tracking", dict(window=1, max_shift=5), 0.95),
    ("network", {}, 0.95),
    ("network", dict(guard=False), 0.92),
])
def test_the_phantom_delta_volume_is_recovered(phantom, tmp_path, engine, options, bound):
    ct, geometry = phantom
    out = tmp_path / f"{engine}.h5"
    with espinnet.Series(ct / "scan.h5") as scan, espinnet.Engine(engine, **geometry,
                                                                   **options) as e:
        assert scan.shape == (90, 3, 96, 96)
        report = scan.reconstruct(e, out)
    assert report == {"projections": 90, "resumed": 0, "computed": 90, "written": True}
    # Each projection's status: NaN exactly where not measured, and re-solved pixels only
    # where the network's guard ran.
    maps = espinnet.read_series(out, maps=("dx", "status"))
    status = maps["status"]
    assert status.dtype == np.uint8 and status.shape == maps["dx"].shape
    np.testing.assert_array_equal(np.isnan(maps["dx"]), status == 3)
    assert np.any(status == 4) == (engine == "network" and options.get("guard", True))
    corr = delta_correlation(out, ct, geometry)
    name = engine + (" without its guard" if options.get("guard") is False else "")
    print(f"{name}: correlation of the reconstructed delta with the truth {corr:.4f}")
    assert corr >= bound


def test_the_rotation_centre_is_found(phantom):
    ct, _ = phantom
    with h5py.File(ct / "truth.h5") as f:
        sinogram = f["phase"][:, 48, :]
    assert abs(tomo.find_center(sinogram) - 47.5) <= 0.5


def test_a_stopped_run_resumes_to_the_same_result(phantom, tmp_path):
    ct, geometry = phantom
    options = dict(window=1, max_shift=5, **geometry)
    whole, stopped = tmp_path / "whole.h5", tmp_path / "stopped.h5"
    with espinnet.Series(ct / "scan.h5") as scan, espinnet.Engine("tracking", **options) as e:
        scan.reconstruct(e, whole)
        with pytest.raises(espinnet.CancelledError):
            scan.reconstruct(e, stopped, progress=lambda f: f > 0.3)
        assert not stopped.exists()
        kept = len(list((tmp_path / "stopped.h5.journal").glob("p*.npy")))
        assert kept >= 27
        report = scan.reconstruct(e, stopped)
        assert report["resumed"] == kept and report["computed"] == 90 - kept
        # Finished: the same call again does nothing.
        again = scan.reconstruct(e, stopped)
    assert again == {"projections": 90, "resumed": 90, "computed": 0, "written": True}
    a, b = espinnet.read_series(whole), espinnet.read_series(stopped)
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


def test_a_dask_cluster_resumes_a_stopped_run_to_the_serial_result(phantom, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    import espinnet.dask

    ct, geometry = phantom
    options = dict(engine="tracking", window=1, max_shift=5, ncore=1, **geometry)
    serial, shared = tmp_path / "serial.h5", tmp_path / "dask.h5"
    with espinnet.Series(ct / "scan.h5") as scan, espinnet.Engine(**options) as e:
        scan.reconstruct(e, serial)
        # A serial run of the same scan, stopped: the cluster resumes from its journal.
        with pytest.raises(espinnet.CancelledError):
            scan.reconstruct(e, shared, progress=lambda f: f > 0.2)
    kept = len(list((tmp_path / "dask.h5.journal").glob("p*.npy")))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = espinnet.dask.reconstruct_series(client, ct / "scan.h5", shared, chunk=8,
                                                  **options)
        # Finished: the same call again does nothing.
        again = espinnet.dask.reconstruct_series(client, ct / "scan.h5", shared, **options)
        # Each worker built its engine once and reused it.
        engines = client.run(lambda: len([k for k in espinnet.dask._CACHE if k[0] == "engine"]))
    assert kept >= 18
    assert report == {"projections": 90, "computed": 90 - kept, "resumed": kept, "written": True}
    assert again == {"projections": 90, "computed": 0, "resumed": 90, "written": True}
    assert sorted(engines.values()) == [1, 1]
    a, b = espinnet.read_series(serial), espinnet.read_series(shared)
    for name in a:
        # The tracker is deterministic: bit for bit.
        assert np.array_equal(a[name], b[name], equal_nan=True), name
