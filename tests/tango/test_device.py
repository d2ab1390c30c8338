"""The Tango device server (plugin/tango) as a beamline uses it, through PyTango: the server
runs without a database on loopback (scripts/tango-tests.sh builds it; ``ESPINNET_DS``
names it), frames go in one at a time, results come back as attributes and events, and
are compared with the C API's (the espinnet Python package) on the same data.
"""

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tango

import espinnet

SERVER = os.environ.get("ESPINNET_DS", str(Path(__file__).resolve().parents[2] / "target/tango/EspinnetDS"))
MAPS = {"Dx": "dx", "Dy": "dy", "Transmission": "transmission", "DarkField": "darkfield",
        "Quality": "quality", "RefractionX": "refraction_x", "RefractionY": "refraction_y", "Phase": "phase"}
GEOMETRY = {"EnergyKeV": "energy_kev", "DistanceM": "distance_m", "PixelSizeUm": "pixel_size_um",
            "Magnification": "magnification"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """EspinnetDS started in no-database mode on loopback, stopped by its PID."""

    def __init__(self):
        self.port = free_port()
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"EspinnetDS-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [SERVER, "test", "-nodb", "-dlist", "test/espinnet/1",
             "-ORBendPoint", f"giop:tcp:127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "Ready to accept request" not in self.output():
            assert self.proc.poll() is None, f"EspinnetDS exited: {self.output()}"
            assert time.monotonic() < deadline, f"EspinnetDS did not start: {self.output()}"
            time.sleep(0.1)
        self.name = f"tango://127.0.0.1:{self.port}/test/espinnet/1#dbase=no"

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def proxy(self):
        d = tango.DeviceProxy(self.name)
        d.set_timeout_millis(30000)
        return d

    def peak_rss_mb(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def dev(server):
    """The device, idle and empty, with the settings of a fresh start."""
    d = server.proxy()
    wait_idle(d)
    if d.state() == tango.DevState.FAULT:
        d.Reset()
    d.ClearFrames()
    d.write_attributes([("Engine", "tracking"), ("Window", 1), ("MaxShift", 8), ("AutoReconstruct", False),
                        ("QualityLimit", 0.25), ("AlarmShare", 0.05)] + [(a, 0.0) for a in GEOMETRY
                                                                           if a != "Magnification"])
    return d


@pytest.fixture(scope="module")
def case():
    return espinnet.simulate("lens", size=96, n=10, seed=2)


def wait_idle(d, timeout=120):
    deadline = time.monotonic() + timeout
    while d.state() == tango.DevState.RUNNING:
        assert time.monotonic() < deadline, "still RUNNING"
        time.sleep(0.02)
    return d.state()


def upload(d, reference, sample):
    for i, frame in enumerate(reference):
        d.write_attribute("ReferenceFrame", frame)
        assert d.ReferenceFrames == i + 1
    for frame in sample:
        d.write_attribute("SampleFrame", frame)


def set_geometry(d, geometry):
    d.write_attributes([(attr, geometry[key]) for attr, key in GEOMETRY.items()])


def reason(excinfo):
    return excinfo.value.args[0].reason


class Events:
    """Data-ready and change events of the maps, collected by callback. The callbacks only
    append to lists and the test polls them: PyTango 9.3's callback thread crashes the
    client when a callback blocks on a lock the main thread waits on."""

    def __init__(self, d, attributes=("Dx", "Phase")):
        self.d, self.ids, self.ready, self.changes = d, [], [], []
        for a in attributes:
            self.ids.append(d.subscribe_event(a, tango.EventType.DATA_READY_EVENT, self.on_ready))
            self.ids.append(d.subscribe_event(a, tango.EventType.CHANGE_EVENT, self.on_change))

    @staticmethod
    def attribute(full_name):
        return full_name.split("#")[0].rsplit("/", 1)[-1].lower()

    def on_ready(self, e):
        if not e.err:
            self.ready.append((self.attribute(e.attr_name), e.ctr, time.monotonic()))

    def on_change(self, e):
        if not e.err and e.attr_value is not None and e.attr_value.value is not None:
            self.changes.append((self.attribute(e.attr_name), np.array(e.attr_value.value)))

    def wait_ready(self, name, counter, timeout=120):
        """When the data-ready event numbered `counter` (or later) arrived on `name`."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [t for n, c, t in list(self.ready) if n == name and c >= counter]
            if hits:
                return hits[0]
            assert time.monotonic() < deadline, f"no data-ready event #{counter} on {name}: {self.ready}"
            time.sleep(0.005)

    def pushed(self, name):
        return [v for n, v in list(self.changes) if n == name]

    def close(self):
        for i in self.ids:
            self.d.unsubscribe_event(i)


def assert_maps_equal(d, expected, names=MAPS):
    for attr, key in names.items():
        got = d.read_attribute(attr).value
        want = getattr(expected, key)
        assert got is not None, attr
        assert np.array_equal(np.asarray(got, np.float32), want, equal_nan=True), attr


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
    # The request port listens on loopback only.
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    mine = [l.split()[3] for l in listening.splitlines() if f"pid={server.proc.pid}," in l]
    assert f"127.0.0.1:{server.port}" in mine, mine


@pytest.mark.parametrize("engine", ["tracking", "network"])
def test_acquisition_frame_by_frame_equals_the_c_api(dev, case, engine):
    dev.Engine = engine
    set_geometry(dev, case.geometry)
    events = Events(dev)
    try:
        before = dev.ResultCount
        upload(dev, case.reference, case.sample)
        assert (dev.ReferenceFrames, dev.SampleFrames) == (10, 10)
        t0 = time.monotonic()
        dev.Reconstruct()
        assert time.monotonic() - t0 < 2, "Reconstruct must return at once"
        events.wait_ready("dx", before + 1)
        events.wait_ready("phase", before + 1)
        assert wait_idle(dev) == tango.DevState.ON, dev.status()
        expected = espinnet.retrieve(case.reference, case.sample, engine=engine, **case.geometry)
        assert_maps_equal(dev, expected)
        assert dev.ResultCount == before + 1
        assert dev.ProviderInUse == ("tracking-cpu" if engine == "tracking" else "cpu")
        assert dev.Progress == 1.0 and dev.LastDurationS > 0
        assert 0 <= dev.SuspectShare <= 0.05
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
    """A reconstruction that takes seconds: 384² × 20, window 3, max shift 12."""
    big = espinnet.simulate("mask-diagonal", size=384, n=20, seed=1)
    dev.write_attributes([("Window", 3), ("MaxShift", 12)])
    upload(dev, big.reference, big.sample)
    return big


def test_abort_stops_a_running_reconstruction(dev, case):
    upload(dev, case.reference, case.sample)
    dev.Reconstruct()
    wait_idle(dev)
    before, dx_before = dev.ResultCount, dev.Dx
    dev.ClearFrames()
    slow_case(dev)
    dev.Reconstruct()
    assert dev.state() == tango.DevState.RUNNING
    time.sleep(0.3)
    t0 = time.monotonic()
    dev.Abort()
    assert wait_idle(dev, timeout=10) == tango.DevState.ON
    assert time.monotonic() - t0 < 5
    assert "Aborted" in dev.status()
    assert dev.ResultCount == before
    assert np.array_equal(dev.Dx, dx_before, equal_nan=True)
    dev.Abort()  # nothing runs: a no-op


def test_two_clients_read_while_it_runs(server, dev):
    slow_case(dev)
    dev.Reconstruct()
    seen, errors = [], []

    def client():
        d = server.proxy()
        try:
            while True:
                t0 = time.monotonic()
                state, progress = d.state(), d.Progress
                d.read_attribute("SampleFrames")
                seen.append((state, progress, time.monotonic() - t0))
                if state != tango.DevState.RUNNING:
                    return
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    running = [p for s, p, _ in seen if s == tango.DevState.RUNNING]
    assert len(running) >= 4, seen
    assert all(0 <= p <= 1 for _, p, _ in seen)
    assert max(dt for _, _, dt in seen) < 1.0, "reads must not wait for the reconstruction"
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


def test_a_2048_acquisition_frame_by_frame_in_bounded_memory(server, dev):
    """20 × 2048² frames (335 MB per stack) through the network engine; the server's peak RSS
    stays within the two stacks plus the engine's working memory."""
    n, size = 20, 2048
    case = espinnet.simulate("mask-diagonal", size=size, n=n, seed=4)
    dev.Engine = "network"
    events = Events(dev, ("Dx",))
    try:
        before = dev.ResultCount
        upload(dev, case.reference, case.sample)
        dev.Reconstruct()
        events.wait_ready("dx", before + 1, timeout=600)
        assert wait_idle(dev) == tango.DevState.ON, dev.status()
    finally:
        events.close()
    stacks_mb = 2 * case.reference.nbytes / 2**20
    peak = server.peak_rss_mb()
    print(f"2048² x 20: stacks {stacks_mb:.0f} MB, server peak RSS {peak:.0f} MB, "
          f"reconstruction {dev.LastDurationS:.1f} s")
    assert peak < stacks_mb + 1800, peak
    truth = case.truth
    inner = (slice(32, -32),) * 2
    err = np.hypot(dev.Dx[inner] - truth.dx[inner], dev.Dy[inner] - truth.dy[inner])
    assert np.mean(err > 1) < 0.01
    dev.ClearFrames()
