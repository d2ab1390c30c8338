"""What the Tango tests share: the server in no-database mode on loopback, the device in a
known state, frame upload, and event collection.

Event subscriptions in these tests last less than 10 s: with Debian 12's cppTango 9.3.4 and
PyTango 9.3.6, a client of a no-database server misses the server's heartbeat (sent every
9 s), declares the channel dead after 10 s and then crashes while resubscribing
(tango-controls/pytango#371). Tests that run longer poll instead.
"""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import tango

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

    def listening(self):
        """The TCP addresses ("ip:port") the server listens on, from /proc (no ss needed)."""
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ip, port = fields[1].split(":")
                    if len(ip) == 8:  # IPv4, little-endian hex
                        ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                    found.append(f"{ip}:{int(port, 16)}")
        return found

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


def wait_idle(d, timeout=120):
    deadline = time.monotonic() + timeout
    while d.state() == tango.DevState.RUNNING:
        assert time.monotonic() < deadline, "still RUNNING"
        time.sleep(0.02)
    return d.state()


def upload(d, reference, sample, check_counts=True):
    """Writes the frames one by one, reading the count after each unless told not to."""
    for i, frame in enumerate(reference):
        d.write_attribute("ReferenceFrame", frame)
        assert not check_counts or d.ReferenceFrames == i + 1
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


