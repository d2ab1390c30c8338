"""Simulated cases with known truth (the library's forward model), for trying espinnet and
for tests, and phase integration of a gradient field."""

from typing import NamedTuple

import numpy as np

from . import _native
from .engine import MAPS, Result
from .errors import ShapeError

#: The presets' geometry (what their truth's refraction and phase assume).
PRESET_GEOMETRY = {"energy_kev": 20.0, "distance_m": 0.5, "pixel_size_um": 6.5, "magnification": 10.0}


class Simulation(NamedTuple):
    """A simulated scan: ``reference, sample, truth, geometry = simulate(...)``."""

    #: Photon counts without the sample, float32 [N, H, W].
    reference: np.ndarray
    #: Photon counts with the sample, float32 [N, H, W].
    sample: np.ndarray
    #: The true maps (its ``quality`` is None).
    truth: Result
    #: The keyword arguments of :func:`espinnet.retrieve` for this case's geometry.
    geometry: dict


def _shape(size):
    h, w = (size, size) if np.ndim(size) == 0 else size
    return int(h), int(w)


def simulate(preset="mask-diagonal", size=256, *, n=20, seed=0):
    """Simulates a reference and a sample stack with known truth.

    Parameters
    ----------
    preset : {'mask-diagonal', 'sandpaper-random', 'grating-grid', 'lens'}
        ``mask-diagonal`` is the set-up of Qiao et al. (J. Synchrotron Rad. 33, 467–480,
        2026): a coded mask scanned along a diagonal; ``lens`` a parabolic lens.
    size : int or (int, int)
        Frame size, px: H = W = size, or (H, W).
    n : int
        Scan positions N.
    seed : int
        The same arguments give the same case.

    Returns
    -------
    Simulation
        ``reference``, ``sample`` (photon counts, float32 [N, H, W]), ``truth`` (a
        :class:`Result`: dx, dy in px, T, D, refraction in rad, phase in rad) and
        ``geometry`` (:data:`PRESET_GEOMETRY`, to pass to :func:`espinnet.retrieve`).
    """
    h, w = _shape(size)
    n = int(n)
    reference = np.empty((n, h, w), dtype=np.float32)
    sample = np.empty_like(reference)
    truth = {name: np.empty((h, w), dtype=np.float32) for name in MAPS if name != "quality"}
    outputs = _native.Outputs(len=h * w, **{k: a.ctypes.data for k, a in truth.items()})
    _native.check(_native.lib.esp_simulate(
        _native.text(preset), h, w, n, int(seed), reference.ctypes.data, sample.ctypes.data,
        reference.size, outputs))
    return Simulation(reference, sample, Result(**truth), dict(PRESET_GEOMETRY))


def integrate(gx, gy, method="frankot-chellappa"):
    """Integrates a gradient field into a phase map.

    Parameters
    ----------
    gx, gy : array_like, [H, W]
        ∂φ/∂x (along columns) and ∂φ/∂y (along rows), in units of φ per pixel (rad/px for
        a phase).
    method : {'frankot-chellappa', 'least-squares'}
        Frankot–Chellappa by FFT with mirror extension, or the least-squares solution with
        Neumann boundaries (DCT), for fields that are not periodic.

    Returns
    -------
    ndarray, float32 [H, W]
        φ with zero mean.
    """
    gx = np.ascontiguousarray(gx, dtype=np.float32)
    gy = np.ascontiguousarray(gy, dtype=np.float32)
    if gx.ndim != 2 or gx.shape != gy.shape:
        raise ShapeError(f"gx {gx.shape} and gy {gy.shape} must be [H, W] of the same shape")
    phase = np.empty_like(gx)
    h, w = gx.shape
    _native.check(_native.lib.esp_integrate(
        gx.ctypes.data, gy.ctypes.data, gx.size, h, w, _native.text(method),
        phase.ctypes.data))
    return phase
