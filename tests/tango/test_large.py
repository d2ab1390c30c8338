"""A 2048² × 20 acquisition frame by frame through the Tango server, in its own process
(longer than an event subscription can last here: see helpers.py): the result is right
and the server's peak memory is bounded.
"""

import subprocess
import sys
import time

import numpy as np
import tango

import espinnet
from helpers import upload, wait_idle

def c_api_peak_rss_mb(case, tmp_path):
    """Peak RSS of a process that loads the same stacks and calls the C API (the package).
    Its own address space's (VmHWM): ru_maxrss keeps the peak of the forked copy of this
    test's process (1535 MB against 1042 MB)."""
    np.save(tmp_path / "ref.npy", case.reference)
    np.save(tmp_path / "smp.npy", case.sample)
    code = ("import re, sys, numpy as np, espinnet\n"
            "r, s = np.load(sys.argv[1]), np.load(sys.argv[2])\n"
            "espinnet.retrieve(r, s, engine='network')\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ref.npy"), str(tmp_path / "smp.npy")],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def test_a_2048_acquisition_frame_by_frame_in_bounded_memory(server, dev, tmp_path):
    """20 × 2048² frames (335 MB per stack) through the network engine. The server's peak RSS
    stays within 256 MB of a C API caller's holding the same stacks: the frames are stored
    once, and what it adds is the C++ API's copy of the maps (8 × 16 MB) and CORBA buffers."""
    n, size = 20, 2048
    case = espinnet.simulate("mask-diagonal", size=size, n=n, seed=4)
    dev.Engine = "network"
    before = dev.ResultCount
    t0 = time.monotonic()
    upload(dev, case.reference, case.sample, check_counts=False)
    uploaded = time.monotonic()
    dev.Reconstruct()
    while dev.ResultCount == before:  # polled: see helpers.py on events
        assert time.monotonic() - uploaded < 600, dev.status()
        time.sleep(0.02)
    done = time.monotonic()
    assert wait_idle(dev) == tango.DevState.ON, dev.status()
    stacks_mb = 2 * case.reference.nbytes / 2**20
    peak = server.peak_rss_mb()
    print(f"\n2048² x 20: upload {uploaded - t0:.1f} s, frames appended -> result {done - t0:.1f} s "
          f"(reconstruction {dev.LastDurationS:.1f} s); stacks {stacks_mb:.0f} MB, server peak RSS {peak:.0f} MB")
    c_api = c_api_peak_rss_mb(case, tmp_path)
    print(f"C API caller with the same stacks in memory: peak RSS {c_api:.0f} MB")
    assert peak < c_api + 256, (peak, c_api)
    truth = case.truth
    inner = (slice(32, -32),) * 2
    err = np.hypot(dev.Dx[inner] - truth.dx[inner], dev.Dy[inner] - truth.dy[inner])
    assert np.mean(err > 1) < 0.01
    dev.ClearFrames()
