"""The Python package as a user installs it (scripts/python-tests.sh builds the wheel and
runs these in a fresh virtual environment): results against the simulator's truth and the
command line, every kind of input, out=, threads, progress, cancellation, errors.

Tests marked ``without_onnxruntime`` run before ONNX Runtime is installed; the others need
it. ``ESPINNET_CLI`` names the command-line tool to compare with.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import espinnet
from espinnet import errors
from espinnet.engine import stack

ROOT = Path(__file__).resolve().parents[2]
BORDER = 16
INTERIOR = (slice(BORDER, -BORDER),) * 2

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="ONNX Runtime is not installed")


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_same(a, b):
    for name, x in a.items():
        assert np.array_equal(bits(x), bits(b[name])), name


def clean_env(**extra):
    """The environment of a user who set nothing."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "ESPINNET_ORT_PATH", "ORT_DYLIB_PATH", "ESPINNET_LIBRARY",
                        "ORT_DISABLE_TELEMETRY")}
    env.update(extra)
    return env


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean_env(**env),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def case():
    return espinnet.simulate("mask-diagonal", size=256, n=20, seed=3)


@pytest.fixture(scope="module")
def small():
    return espinnet.simulate("lens", size=96, n=8, seed=1)


@pytest.fixture(scope="module")
def tracker():
    with espinnet.Engine("tracking", max_shift=4) as e:
        yield e


# --- the installed package --------------------------------------------------------------


@pytest.mark.without_onnxruntime
def test_version_is_the_library_and_the_crate():
    crate = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)[1]
    assert espinnet.__version__ == crate == importlib.metadata.version("espinnet")


@pytest.mark.without_onnxruntime
def test_installed_the_way_the_script_asked():
    where = Path(espinnet.__file__).resolve()
    expected = os.environ.get("ESPINNET_EXPECT_INSTALL")
    if expected == "wheel":
        assert "site-packages" in where.parts and ROOT / "plugin" not in where.parents, where
    elif expected == "editable":
        assert (ROOT / "plugin" / "python") in where.parents, where
    assert espinnet._native.library_path.parent == where.parent


@pytest.mark.without_onnxruntime
def test_library_needs_nothing_beyond_glibc():
    out = subprocess.run(["ldd", str(espinnet._native.library_path)], capture_output=True,
                         text=True, check=True).stdout
    assert "not found" not in out, out
    needed = re.findall(r"^\s*(\S+\.so[.\d]*)", out, re.M)
    glibc = ("linux-vdso", "libc.so", "libm.so", "libgcc_s.so", "ld-linux", "libpthread.so",
             "libdl.so", "librt.so")
    assert needed and all(os.path.basename(n).startswith(glibc) for n in needed), needed


@pytest.mark.without_onnxruntime
@pytest.mark.skipif(HAS_ORT, reason="ONNX Runtime is installed")
def test_without_onnxruntime_the_tracker_works_and_the_network_says_what_to_install(small):
    ref, smp, truth, geometry = small
    r = espinnet.retrieve(ref, smp, engine="tracking", max_shift=4, **geometry)
    assert r.phase.shape == ref.shape[1:]
    for call in (lambda: espinnet.Engine(), lambda: espinnet.available_providers()):
        with pytest.raises(espinnet.RuntimeLibraryError, match=r"espinnet\[cpu\]"):
            call()


# --- accuracy and agreement -------------------------------------------------------------


@needs_ort
@pytest.mark.parametrize("engine, rmse_px, gross", [("network", 0.2, 0.02), ("tracking", 0.2, 0.01)])
def test_accuracy_against_the_simulated_truth(case, engine, rmse_px, gross):
    ref, smp, truth, geometry = case
    r = espinnet.retrieve(ref, smp, engine=engine, **geometry)
    assert [name for name, _ in r.items()] == list(espinnet.engine.MAPS)
    error = np.hypot(r.dx - truth.dx, r.dy - truth.dy)[INTERIOR]
    inlier = error[error < 1.0]
    assert np.mean(~(error < 1.0)) < gross
    assert np.sqrt(np.mean(inlier ** 2)) < rmse_px
    for name, tolerance in [("transmission", 0.03), ("darkfield", 0.04)]:
        assert np.sqrt(np.mean((r[name] - truth[name])[INTERIOR] ** 2)) < tolerance, name
    # Refraction in rad, phase in rad (5.5 rad peak to peak here).
    def rad_per_px(maps):
        moved = np.abs(maps.dx) > 0.5
        return np.median(maps.refraction_x[moved] / maps.dx[moved])

    assert rad_per_px(r) == pytest.approx(rad_per_px(truth), rel=1e-4)
    phase = (r.phase - truth.phase)[INTERIOR]
    assert np.sqrt(np.mean((phase - phase.mean()) ** 2)) < 0.15
    assert 0 < np.nanmedian(r.quality) < 0.1


@needs_ort
def test_the_guard_reports_the_pixels_it_solved_again(small):
    ref, smp, truth, _ = small
    guarded = espinnet.retrieve(ref, smp)  # the guard is on by default
    raw = espinnet.retrieve(ref, smp, guard=False)
    tracked = espinnet.retrieve(ref, smp, engine="tracking")
    assert 0 <= guarded.resolved_pixels < guarded.dx.size
    assert raw.resolved_pixels == 0 and tracked.resolved_pixels == 0
    # The pixels it solved again are those of status 4; without it there are none. Every
    # pixel of every engine is measured (finite) unless its status is 3.
    resolved = guarded.status == 4
    assert int(np.count_nonzero(resolved)) == guarded.resolved_pixels
    for r in (guarded, raw, tracked):
        assert r.status.dtype == np.uint8 and r.status.shape == r.dx.shape
        assert r["status"] is r.status
        assert set(np.unique(r.status)) <= set(espinnet.STATUS)
        np.testing.assert_array_equal(np.isnan(r.dx), r.status == 3)
    assert not np.any(raw.status == 4) and not np.any(tracked.status == 4)
    # It takes the network's smooth bias off every pixel, by at most 0.5 px; only the
    # pixels it solved again may move further.
    moved = (np.abs(guarded.dx - raw.dx) > 0.5) | (np.abs(guarded.dy - raw.dy) > 0.5)
    assert not np.any(moved & ~resolved)
    assert np.count_nonzero(guarded.dx != raw.dx) > guarded.resolved_pixels


@needs_ort
@pytest.mark.parametrize("engine", ["tracking", "network"])
def test_equals_the_command_line_bit_for_bit(case, engine, tmp_path):
    cli = os.environ.get("ESPINNET_CLI")
    if not cli:
        pytest.skip("ESPINNET_CLI is not set")
    tifffile = pytest.importorskip("tifffile")
    ref, smp, _, geometry = case
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "smp.npy", smp)
    args = [cli, "reconstruct", "--reference", str(tmp_path / "ref.npy"), "--sample",
            str(tmp_path / "smp.npy"), "--output", str(tmp_path / "out"), "--engine", engine]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in geometry.items()]
    subprocess.run(args, check=True, capture_output=True, env=clean_env())
    r = espinnet.retrieve(ref, smp, engine=engine, **geometry)
    assert_same(dict(r.items()), {name: tifffile.imread(tmp_path / "out" / f"{name}.tif")
                                  for name, _ in r.items()})
    np.testing.assert_array_equal(r.status, tifffile.imread(tmp_path / "out" / "status.tif"))


@needs_ort
def test_a_cli_case_metadata_gives_the_true_phase(tmp_path):
    cli = os.environ.get("ESPINNET_CLI")
    if not cli:
        pytest.skip("ESPINNET_CLI is not set")
    tifffile = pytest.importorskip("tifffile")
    case = tmp_path / "case"
    subprocess.run([cli, "simulate", "--output", str(case), "--preset", "lens", "--size", "96",
                    "--scans", "10"], check=True, capture_output=True)
    meta = json.loads((case / "meta.json").read_text())
    geometry = {k: meta[k] for k in ("energy_kev", "distance_m", "pixel_size_um", "magnification")}
    r = espinnet.retrieve(tifffile.imread(case / "reference.tif"), tifffile.imread(case / "sample.tif"),
                          engine="tracking", **geometry)
    truth = tifffile.imread(case / "truth" / "phase.tif")
    error = (r.phase - truth)[INTERIOR]
    assert np.sqrt(np.mean((error - error.mean()) ** 2)) < 0.05 * np.ptp(truth[INTERIOR])


# --- inputs and outputs -----------------------------------------------------------------


@pytest.mark.without_onnxruntime
def test_every_real_dtype_and_layout_gives_the_same_maps(small, tracker):
    ref, smp, _, _ = small
    counts = (np.rint(ref).astype(np.uint16), np.rint(smp).astype(np.uint16))
    expected = tracker.reconstruct(*(c.astype(np.float32) for c in counts))
    for convert in (lambda a: a, lambda a: a.astype(np.float64), lambda a: np.asfortranarray(a),
                    lambda a: a.astype(">f4"),
                    lambda a: a.astype(np.int32)[:, ::-1, :][:, ::-1, :]):
        assert_same(dict(tracker.reconstruct(*map(convert, counts)).items()), expected)
    # Strided views: every other pixel, and a column crop with padded rows (used in place).
    view = tracker.reconstruct(ref[:, ::2, ::2], smp[:, ::2, ::2])
    assert_same(dict(view.items()), tracker.reconstruct(ref[:, ::2, ::2].copy(), smp[:, ::2, ::2].copy()))
    crop = tracker.reconstruct(ref[:, :, 8:88], smp[:, :, 8:88])
    assert_same(dict(crop.items()), tracker.reconstruct(ref[:, :, 8:88].copy(), smp[:, :, 8:88].copy()))


@pytest.mark.without_onnxruntime
def test_float32_is_used_in_place(small):
    ref = small.reference
    assert np.shares_memory(stack("reference", ref)[1], ref)
    assert np.shares_memory(stack("reference", ref[:, :, 8:88])[1], ref)
    assert np.shares_memory(stack("reference", ref[:, ::2, :])[1], ref)  # rows 2·W apart
    assert not np.shares_memory(stack("reference", ref[:, :, ::2])[1], ref)
    assert stack("reference", ref[0])[1].shape == (1,) + ref.shape[1:]


@pytest.mark.without_onnxruntime
def test_out_and_maps(small, tracker):
    ref, smp, _, _ = small
    full = tracker.reconstruct(ref, smp)
    out = {"dx": np.full(ref.shape[1:], 7, np.float32), "quality": np.zeros(ref.shape[1:], np.float32)}
    r = tracker.reconstruct(ref, smp, maps=["dy"], out=out)
    assert r.dx is out["dx"] and r.quality is out["quality"]
    assert r.transmission is None and r.phase is None
    assert_same({k: v for k, v in r.items()}, {k: full[k] for k in ("dx", "dy", "quality")})
    # A previous Result serves as out=.
    again = tracker.reconstruct(ref, smp, out=r)
    assert again.dx is r.dx and again.dy is r.dy
    with pytest.raises(TypeError, match=r"out\['dx'\]"):
        tracker.reconstruct(ref, smp, out={"dx": np.zeros(ref.shape[1:])})
    with pytest.raises(espinnet.ShapeError, match=r"out\['dy'\]"):
        tracker.reconstruct(ref, smp, out={"dy": np.zeros((3, 3), np.float32)})
    with pytest.raises(espinnet.InvalidArgumentError, match="unknown map"):
        tracker.reconstruct(ref, smp, maps=["phse"])
    with pytest.raises(espinnet.InvalidArgumentError, match="geometry"):
        tracker.reconstruct(ref, smp, maps=["phase"])


@pytest.mark.without_onnxruntime
def test_wrong_inputs_name_the_argument(small, tracker):
    ref, smp, _, _ = small
    with pytest.raises(espinnet.ShapeError, match="reference .* and sample"):
        tracker.reconstruct(ref, smp[:-1])
    with pytest.raises(espinnet.ShapeError, match=r"sample must be \[N, H, W\]"):
        tracker.reconstruct(ref, smp[np.newaxis])
    with pytest.raises(TypeError, match="reference must hold real numbers"):
        tracker.reconstruct(ref.astype(np.complex64), smp)
    bad = smp.copy()
    bad[0, 5, 5] = np.nan
    with pytest.raises(espinnet.NonFiniteError):
        tracker.reconstruct(ref, bad)
    with pytest.raises(espinnet.InvalidArgumentError):
        tracker.reconstruct(ref[:, :0], smp[:, :0])


# --- engines shared, threads, progress, cancellation ------------------------------------


@pytest.mark.parametrize("engine", ["tracking", pytest.param("network", marks=needs_ort)])
def test_threads_share_one_engine_and_the_gil_is_released(small, engine):
    ref, smp, _, geometry = small
    with espinnet.Engine(engine, max_shift=4, **geometry) as e:
        expected = dict(e.reconstruct(ref, smp).items())
        results, ticks, done = [None] * 4, [], threading.Event()

        def work(i):
            results[i] = dict(e.reconstruct(ref, smp).items())

        def tick():  # runs only while the calls leave the GIL free
            while not done.is_set():
                ticks.append(1)
                done.wait(0.001)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        ticker = threading.Thread(target=tick)
        ticker.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done.set()
        ticker.join()
    for r in results:
        assert_same(r, expected)
    assert len(ticks) > 5


@pytest.mark.without_onnxruntime
def test_ncore_changes_no_result(small):
    ref, smp, _, _ = small
    one = espinnet.retrieve(ref, smp, engine="tracking", max_shift=4, ncore=1)
    assert_same(dict(one.items()), dict(espinnet.retrieve(ref, smp, engine="tracking", max_shift=4).items()))


@pytest.mark.without_onnxruntime
def test_progress_reports_and_cancels(small, tracker):
    ref, smp, _, _ = small
    expected = dict(tracker.reconstruct(ref, smp).items())
    seen = []
    tracker.reconstruct(ref, smp, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(espinnet.CancelledError):
        tracker.reconstruct(ref, smp, progress=lambda f: True)

    class Stop(Exception):
        pass

    def fail(fraction):
        raise Stop

    with pytest.raises(Stop):
        tracker.reconstruct(ref, smp, progress=fail)
    assert_same(dict(tracker.reconstruct(ref, smp).items()), expected)


@pytest.mark.without_onnxruntime
def test_ctrl_c_cancels_a_long_call_and_the_engine_stays_usable():
    result = run_python("""
        import os, signal, threading, numpy as np, espinnet
        # As in a terminal: a shell's background job (CI started with `&`) inherits SIGINT
        # ignored, where Python installs no handler and the signal below would be lost.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ref, smp, _, _ = espinnet.simulate("sandpaper-random", size=768, n=20)
        engine = espinnet.Engine("tracking", max_shift=12, window=2)
        seen, sent = [], []
        def progress(fraction):
            # Reports come from two worker threads: both may append before either checks.
            seen.append(fraction)
            if len(seen) >= 2 and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)
        try:
            engine.reconstruct(ref, smp, progress=progress)
            print("completed")
        except KeyboardInterrupt:
            print("interrupted at", max(seen))
        small = engine.reconstruct(ref[:, :64, :64], smp[:, :64, :64])
        print("reused", small.dx.shape)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("interrupted at") and float(lines[0].split()[-1]) < 0.9, lines
    assert lines[1] == "reused (64, 64)"


@pytest.mark.without_onnxruntime
def test_a_closed_engine_is_refused(small):
    ref, smp, _, _ = small
    with espinnet.Engine("tracking") as e:
        assert e.provider == "tracking-cpu"
    with pytest.raises(espinnet.InvalidArgumentError, match="closed"):
        e.reconstruct(ref, smp)
    e.close()


# --- errors -----------------------------------------------------------------------------


@pytest.mark.without_onnxruntime
def test_every_status_has_its_exception():
    classes = [getattr(espinnet, name) for name in errors.__all__ if name != "EspinnetError"]
    assert sorted(c.status for c in classes) == list(range(1, 13))
    for cls in classes:
        e = errors.error_for(cls.status, "why")
        assert type(e) is cls and isinstance(e, espinnet.EspinnetError) and e.message == "why"
    assert isinstance(errors.error_for(99, "x"), espinnet.EspinnetError)
    assert issubclass(espinnet.ShapeError, ValueError) and issubclass(espinnet.OutOfMemoryError, MemoryError)


@pytest.mark.without_onnxruntime
def test_bad_options_are_refused_with_the_library_message():
    for kwargs, message in [({"bogus": 1}, "unknown option 'bogus'"), ({"window": -1}, "window"),
                            ({"energy_kev": 20}, "geometry needs all"),
                            ({"model": "x\0y"}, "NUL")]:
        with pytest.raises(espinnet.InvalidArgumentError, match=message):
            espinnet.Engine("tracking", **kwargs)


@needs_ort
def test_network_failures_have_their_classes(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(espinnet.ModelError, match="bad.onnx"):
        espinnet.Engine(model=tmp_path / "bad.onnx")
    if "cuda" not in espinnet.available_providers():
        with pytest.raises(espinnet.ProviderUnavailableError, match="cuda"):
            espinnet.Engine(provider="cuda")
    with pytest.raises(espinnet.RuntimeLibraryError):
        espinnet.available_providers(tmp_path / "libonnxruntime.so.1.31.0")


# --- ONNX Runtime found with no configuration -------------------------------------------


@needs_ort
def test_network_runs_with_no_environment_variable():
    result = run_python("""
        import espinnet
        r = espinnet.retrieve(*espinnet.simulate('mask-diagonal', size=256)[:2])
        print(r.dx.shape, espinnet.Engine().provider, espinnet.available_providers(), sep="|")
    """)
    assert result.returncode == 0, result.stderr
    shape, provider, providers = result.stdout.strip().split("|")
    assert shape == "(256, 256)"
    assert provider in providers and "'cpu'" in providers


@needs_ort
def test_onnxruntime_keeps_no_telemetry(tmp_path):
    # The wheel keeps a device identifier and events for Microsoft under ~/.cache unless
    # ORT_DISABLE_TELEMETRY is set before it loads, which importing espinnet does.
    result = run_python("""
        import os, espinnet
        espinnet.retrieve(*espinnet.simulate('lens', size=64, n=5)[:2])
        print(os.environ['ORT_DISABLE_TELEMETRY'])
    """, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / ".cache"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert list(tmp_path.rglob("*")) == []


@needs_ort
def test_espinnet_ort_path_is_honoured(tmp_path):
    missing = tmp_path / "libonnxruntime.so.1.99.0"
    result = run_python("""
        import espinnet
        try:
            espinnet.Engine()
        except espinnet.RuntimeLibraryError as e:
            print(e)
    """, ESPINNET_ORT_PATH=str(missing))
    assert str(missing) in result.stdout, result.stdout + result.stderr


@needs_ort
def test_a_truncated_onnxruntime_is_an_error_not_a_signal(tmp_path):
    good = Path(espinnet._runtime.find_library())
    bad = tmp_path / good.name
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = run_python("""
        import os, espinnet
        bad = os.environ["BAD_ORT"]
        for call in (lambda: espinnet.available_providers(bad), lambda: espinnet.Engine(ort_library=bad)):
            try:
                call()
            except espinnet.RuntimeLibraryError as e:
                print("refused:", e)
    """, BAD_ORT=str(bad))
    assert result.returncode == 0, result.stderr  # no SIGBUS
    assert result.stdout.count("truncated or damaged") == 2, result.stdout


@needs_ort
def test_both_onnxruntime_packages_installed_is_an_error(tmp_path):
    fake = tmp_path / "onnxruntime_gpu-1.31.1.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n")
    result = run_python("""
        import espinnet
        espinnet.Engine("tracking")  # the tracker does not need ONNX Runtime
        try:
            espinnet.Engine()
        except espinnet.RuntimeLibraryError as e:
            print(e)
    """, PYTHONPATH=str(tmp_path))
    assert "both onnxruntime and onnxruntime-gpu" in result.stdout, result.stdout + result.stderr


# --- simulation and integration ---------------------------------------------------------


@pytest.mark.without_onnxruntime
def test_simulate_is_reproducible_and_checks_its_preset():
    a = espinnet.simulate("grating-grid", size=(48, 64), n=3, seed=5)
    b = espinnet.simulate("grating-grid", size=(48, 64), n=3, seed=5)
    assert a.reference.shape == (3, 48, 64) and a.truth.quality is None
    assert np.array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, espinnet.simulate("grating-grid", size=(48, 64), n=3, seed=6).sample)
    with pytest.raises(espinnet.InvalidArgumentError, match="preset"):
        espinnet.simulate("speckle", size=32)


@pytest.mark.without_onnxruntime
def test_integrate_recovers_a_known_phase(small):
    truth = small.truth
    gy, gx = np.gradient(truth.phase.astype(np.float64))
    for method in ("frankot-chellappa", "least-squares"):
        phase = espinnet.integrate(gx, gy, method=method)
        error = (phase - truth.phase)[INTERIOR]
        assert np.sqrt(np.mean((error - error.mean()) ** 2)) < 0.02 * np.ptp(truth.phase), method
    with pytest.raises(espinnet.ShapeError):
        espinnet.integrate(gx, gy[:-1])
    with pytest.raises(espinnet.InvalidArgumentError):
        espinnet.integrate(gx, gy, method="poisson")
