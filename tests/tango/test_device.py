"""The Tango device server (plugin/tango) as a beamline uses it, through PyTango: the server
runs without a database on loopback (scripts/tango-tests.sh builds it; ``ESPINNET_DS``
names it), frames go in one at a time, results come back as attributes and events, and
are compared with the C API's (the espinnet Python package) on the same data.
"""

import threading
import time

import numpy as np
import pytest
import tango

import espinnet
from helpers import Events, assert_maps_equal, reason, set_geometry, upload, wait_idle

def test_interface_names_units_and_descriptions(server):
    d = server.proxy()
    units = {"Dx": "px", "Dy": "px", "RefractionX": "rad", "Phase": "rad", "EnergyKeV": "keV",
             "DistanceM": "m", "PixelSizeUm": "um", "LastDurationS": "s", "Window": "px"}
    for name in d.get_attribute_list():
        info = d.get_attribute_config(name)
        if name not in ("State", "Status"):
            assert info.description and "No description" not in info.description, name
        if name in units:
            assert info.unit == units[name], (name, info.unit)
    commands = set(d.get_command_list())
    assert {"Reconstruct", "Abort", "Reset", "ClearFrames", "ClearSampleFrames"} <= commands
    assert d.read_attribute("Engine").value == "network"  # the property's default
    assert d.Window == 1 and d.MaxShift == 8 and d.Magnification == 1.0
    assert d.state() == tango.DevState.ON
    # Every port it listens on (requests, event channels) is on loopback.
    listening = server.listening()
    assert f"127.0.0.1:{server.port}" in listening, listening
    assert all(a.startswith("127.0.0.1:") for a in listening), listening


@pytest.mark.parametrize("engine", ["tracking", "network"])
def test_acquisition_frame_by_frame_equals_the_c_api(dev, case, engine):
    dev.Engine = engine
    set_geometry(dev, case.geometry)
    events = Events(dev, ("Dx", "Phase", "PixelStatus"))
    try:
        before = dev.ResultCount
        upload(dev, case.reference, case.sample)
        assert (dev.ReferenceFrames, dev.SampleFrames) == (10, 10)
        dev.Reconstruct()
        events.wait_ready("dx", before + 1)
        events.wait_ready("phase", before + 1)
        assert wait_idle(dev) == tango.DevState.ON, dev.status()
        expected = espinnet.retrieve(case.reference, case.sample, engine=engine, **case.geometry)
        assert_maps_equal(dev, expected)
        assert dev.ResultCount == before + 1
        assert dev.ProviderInUse == ("tracking-cpu" if engine == "tracking" else "cpu")
        assert dev.Progress == 1.0 and dev.LastDurationS > 0
        assert 0 <= dev.SuspectShare <= 0.05
        # What happened at each pixel, as the C API says.
        status = dev.read_attribute("PixelStatus").value
        assert status.dtype == np.uint8 and np.array_equal(status, expected.status)
        assert np.any(status == 4) == (engine == "network")
        events.wait_ready("pixelstatus", before + 1)
        assert np.array_equal(events.pushed("pixelstatus")[-1], expected.status)
        # The change event carries the map itself.
        pushed = events.pushed("dx")
        assert pushed and np.array_equal(pushed[-1], expected.dx, equal_nan=True)
        # The stacks stay for another Reconstruct (here without the geometry: no phase).
        assert (dev.ReferenceFrames, dev.SampleFrames) == (10, 10)
        set_geometry(dev, {"energy_kev": 0, "distance_m": 0, "pixel_size_um": 0, "magnification": 1})
        dev.Reconstruct()
        wait_idle(dev)
        assert dev.read_attribute("Phase").quality == tango.AttrQuality.ATTR_INVALID
        assert dev.read_attribute("Phase").value is None
    finally:
        events.close()


def test_live_mode_reconstructs_each_sample_stack(dev, case):
    other = (case.sample * 0.8).astype(np.float32)  # the next projection: 80 % transmission
    events = Events(dev, ("Dx",))
    try:
        before = dev.ResultCount
        dev.AutoReconstruct = True
        upload(dev, case.reference, case.sample)
        events.wait_ready("dx", before + 1)
        # The complete sample stack was taken: the next projection's frames go in at once.
        for frame in other:
            dev.write_attribute("SampleFrame", frame)
        events.wait_ready("dx", before + 2)
        assert wait_idle(dev) == tango.DevState.ON, dev.status()
        assert dev.ResultCount == before + 2 and dev.SampleFrames == 0 and dev.ReferenceFrames == 10
        expected = espinnet.retrieve(case.reference, other, engine="tracking")
        assert_maps_equal(dev, expected, {"Dx": "dx", "Transmission": "transmission"})
        first = events.pushed("dx")[-2]  # [-3] is the value sent at subscription
        assert np.array_equal(first, espinnet.retrieve(case.reference, case.sample, engine="tracking").dx,
                              equal_nan=True)
    finally:
        events.close()


def slow_case(dev):
    """Stacks whose reconstruction takes seconds: 384² × 20, window 3, max shift 12."""
    big = espinnet.simulate("mask-diagonal", size=384, n=20, seed=1)
    dev.write_attributes([("Window", 3), ("MaxShift", 12)])
    upload(dev, big.reference, big.sample)


def test_abort_stops_a_running_reconstruction(dev, case):
    upload(dev, case.reference, case.sample)
    dev.Reconstruct()
    wait_idle(dev)
    before, dx_before = dev.ResultCount, dev.Dx
    dev.ClearFrames()
    slow_case(dev)
    dev.Reconstruct()
    assert dev.state() == tango.DevState.RUNNING  # Reconstruct returned while it runs
    time.sleep(0.3)
    dev.Abort()
    assert wait_idle(dev) == tango.DevState.ON
    assert "Aborted" in dev.status()
    assert dev.ResultCount == before
    assert np.array_equal(dev.Dx, dx_before, equal_nan=True)
    dev.Abort()  # nothing runs: a no-op


def test_two_clients_read_while_it_runs(server, dev):
    slow_case(dev)
    dev.Reconstruct()
    seen, errors = ([], []), []

    def client(mine):
        d = server.proxy()
        try:
            while True:
                state, progress = d.state(), d.Progress
                d.read_attribute("SampleFrames")
                mine.append((state, progress))
                if state != tango.DevState.RUNNING:
                    return
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    # Each client's reads were answered while it ran, not queued behind it, and saw the
    # progress grow.
    for mine in seen:
        running = [p for s, p in mine if s == tango.DevState.RUNNING]
        assert len(running) >= 2, mine
        assert all(0 <= p <= 1 for _, p in mine) and running == sorted(running), mine
    assert wait_idle(dev) == tango.DevState.ON


def test_wrong_requests_are_refused_with_a_reason(dev, case):
    ref = case.reference
    with pytest.raises(tango.DevFailed) as e:
        dev.Reconstruct()
    assert reason(e) == "ESPINNET_NoFrames"
    dev.write_attribute("ReferenceFrame", ref[0])
    with pytest.raises(tango.DevFailed) as e:
        dev.write_attribute("SampleFrame", ref[0][:-1])
    assert reason(e) == "ESPINNET_FrameSize" and "ClearFrames" in e.value.args[0].desc
    bad = ref[1].copy()
    bad[5, 7] = np.nan
    with pytest.raises(tango.DevFailed) as e:
        dev.write_attribute("ReferenceFrame", bad)
    assert reason(e) == "API_WAttrOutsideLimit"  # Tango refuses NaN itself
    assert dev.ReferenceFrames == 1
    dev.write_attribute("SampleFrame", case.sample[0])
    dev.write_attribute("SampleFrame", case.sample[1])
    with pytest.raises(tango.DevFailed) as e:
        dev.Reconstruct()
    assert reason(e) == "ESPINNET_FrameCount"
    assert (dev.ReferenceFrames, dev.SampleFrames) == (1, 2)
    dev.EnergyKeV = 20.0
    dev.ClearSampleFrames()
    dev.write_attribute("SampleFrame", case.sample[0])
    with pytest.raises(tango.DevFailed) as e:
        dev.Reconstruct()
    assert reason(e) == "ESPINNET_Geometry"
    dev.EnergyKeV = 0.0
    for attr, value in [("Window", -1), ("MaxShift", 1 << 20), ("Engine", "magic"), ("AlarmShare", 2.0),
                        ("DistanceM", -1.0), ("QualityLimit", 0.0)]:
        with pytest.raises(tango.DevFailed) as e:
            dev.write_attribute(attr, value)
        assert reason(e) == "ESPINNET_InvalidValue", attr
    assert dev.Window == 1 and dev.Engine == "tracking" and dev.AlarmShare == 0.05
    with pytest.raises(tango.DevFailed) as e:
        dev.ReferencePath = "/nonexistent/ref.tif"
    assert reason(e) == "ESPINNET_ReadFailed" and "no such file" in e.value.args[0].desc
    assert dev.ReferenceFrames == 1


def test_busy_and_fault_states(dev, case):
    slow_case(dev)
    dev.Reconstruct()
    with pytest.raises(tango.DevFailed) as e:
        dev.Reconstruct()
    assert reason(e) == "ESPINNET_Busy"
    with pytest.raises(tango.DevFailed) as e:
        dev.write_attribute("SampleFrame", np.ones((384, 384), np.float32))
    assert reason(e) == "ESPINNET_Busy"
    dev.Abort()
    wait_idle(dev)
    # A failing reconstruction (a constant stack: nothing to track) is FAULT with its cause.
    dev.ClearFrames()
    flat = np.full((3, 64, 64), 100.0, np.float32)
    upload(dev, flat, flat)
    dev.Reconstruct()
    assert wait_idle(dev) == tango.DevState.FAULT
    assert "constant" in dev.status()
    with pytest.raises(tango.DevFailed) as e:
        dev.Reconstruct()
    assert reason(e) == "ESPINNET_Fault"
    assert dev.ReferenceFrames == 3  # still responsive
    dev.Reset()
    assert dev.state() == tango.DevState.ON


def test_alarm_when_too_many_pixels_are_suspect(dev, case):
    upload(dev, case.reference, case.sample)
    dev.QualityLimit = 1e-6
    dev.Reconstruct()
    assert wait_idle(dev) == tango.DevState.ALARM
    assert dev.SuspectShare > 0.99 and "AlarmShare" in dev.status()
    dev.QualityLimit = 0.25
    dev.Reconstruct()
    assert wait_idle(dev) == tango.DevState.ON


def test_stacks_from_files(dev, case, tmp_path):
    import tifffile
    import h5py

    tifffile.imwrite(tmp_path / "ref.tif", case.reference, photometric="minisblack")
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/sample"] = case.sample
    dev.ReferencePath = str(tmp_path / "ref.tif")
    dev.SamplePath = f"{tmp_path / 'scan.h5'}:/entry/sample"
    assert (dev.ReferenceFrames, dev.SampleFrames) == (10, 10)
    assert dev.SamplePath.endswith(":/entry/sample")
    dev.Reconstruct()
    assert wait_idle(dev) == tango.DevState.ON, dev.status()
    assert_maps_equal(dev, espinnet.retrieve(case.reference, case.sample, engine="tracking"),
                      {"Dx": "dx", "Dy": "dy", "DarkField": "darkfield"})
    # A file that cannot be used leaves the stack as it was.
    bad = case.sample.copy()
    bad[3, 5, 7] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(tango.DevFailed) as e:
        dev.SamplePath = str(tmp_path / "bad.npy")
    assert reason(e) == "ESPINNET_NonFinite" and "frame 3 holds a non-finite value at row 5, column 7" in \
        e.value.args[0].desc
    np.save(tmp_path / "small.npy", case.sample[:, :64, :64])
    with pytest.raises(tango.DevFailed) as e:
        dev.SamplePath = str(tmp_path / "small.npy")
    assert reason(e) == "ESPINNET_FrameSize"
    assert dev.SampleFrames == 10 and dev.SamplePath.endswith(":/entry/sample")
