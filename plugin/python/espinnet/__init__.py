"""espinnet: X-ray multi-contrast imaging from scanned modulated patterns, tomopy style —
numpy in, numpy out.

From a reference stack (N images of a scanned coded mask, sandpaper or grating, no sample)
and a sample stack (the same scan with the sample), espinnet recovers the pattern
displacement (dx, dy, px), the transmission, the dark-field and, with the beam geometry,
the refraction angles (rad) and the phase (rad). Two engines: ESPINNet (Qiao et al.,
J. Synchrotron Rad. 33, 467–480, 2026) through ONNX Runtime, and a correlation tracker of
the UMPA class.

>>> import espinnet
>>> reference, sample, truth, geometry = espinnet.simulate("mask-diagonal", size=128)
>>> result = espinnet.retrieve(reference, sample, engine="tracking", **geometry)
>>> result.phase.shape
(128, 128)

This package calls the library's C ABI (``libespinnet``, shipped inside it) through
ctypes; it implements nothing twice.
"""

from . import _native
from ._runtime import available_providers
from .engine import STATUS, Engine, Result, retrieve
from .errors import (
    CancelledError,
    EspinnetError,
    FormatError,
    InvalidArgumentError,
    IoError,
    ModelError,
    NonFiniteError,
    NullArgumentError,
    OutOfMemoryError,
    PanicError,
    ProviderUnavailableError,
    RuntimeLibraryError,
    ShapeError,
)
from .series import Series, read_series
from .simulation import PRESET_GEOMETRY, Simulation, integrate, simulate

#: The library's version (``esp_version()``), which is the package's.
__version__ = _native.version()

__all__ = [
    "Engine", "Result", "STATUS", "retrieve", "simulate", "Simulation", "PRESET_GEOMETRY", "integrate",
    "Series", "read_series",
    "available_providers", "__version__",
    "EspinnetError", "NullArgumentError", "InvalidArgumentError", "ShapeError",
    "NonFiniteError", "IoError", "FormatError", "ModelError", "RuntimeLibraryError",
    "ProviderUnavailableError", "OutOfMemoryError", "CancelledError", "PanicError",
]
