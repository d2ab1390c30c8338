"""Fixtures of the Tango tests: one server per test module, the device reset before each test."""

import pytest
import tango

import espinnet
from helpers import GEOMETRY, Server, wait_idle


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
