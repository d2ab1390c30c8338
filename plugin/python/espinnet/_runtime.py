"""Finds ONNX Runtime, which the network engine loads at run time: the library inside the
installed ``onnxruntime`` or ``onnxruntime-gpu`` package (the ``cpu`` and ``gpu`` extras),
unless ``ESPINNET_ORT_PATH`` or ``ORT_DYLIB_PATH`` names one."""

import importlib.metadata
import importlib.util
import os
import re
from ctypes import byref, c_char_p
from pathlib import Path

from . import _native
from .errors import RuntimeLibraryError

HINT = "in Python: pip install 'espinnet[cpu]' (or 'espinnet[gpu]' for CUDA and TensorRT)"


def _installed(distribution):
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def find_library():
    """The path of ``libonnxruntime`` to load, or None to leave the choice to the library:
    when an environment variable names one, or when no ``onnxruntime`` package is installed."""
    if os.environ.get("ESPINNET_ORT_PATH") or os.environ.get("ORT_DYLIB_PATH"):
        return None
    spec = importlib.util.find_spec("onnxruntime")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        return None
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        raise RuntimeLibraryError(
            "both onnxruntime and onnxruntime-gpu are installed; they share one module, so "
            "neither is reliable: uninstall both, then install one ('espinnet[cpu]' or 'espinnet[gpu]')"
        )
    candidates = []
    for location in spec.submodule_search_locations:
        for path in (Path(location) / "capi").glob("libonnxruntime.so.1*"):
            version = tuple(int(v) for v in re.findall(r"\d+", path.name.split(".so.", 1)[1]))
            candidates.append((version, path))
    return str(max(candidates)[1]) if candidates else None


def with_hint(error):
    """A runtime-library error with what the user can do about it."""
    return RuntimeLibraryError(f"{error.message}; {HINT}")


def available_providers(ort_library=None):
    """The execution providers the network can run on here, best first, e.g.
    ``['tensorrt', 'cuda', 'cpu']``.

    Parameters
    ----------
    ort_library : str or path-like, optional
        ``libonnxruntime`` to load; default: as the network engine finds it.

    Raises
    ------
    RuntimeLibraryError
        ONNX Runtime is not installed or cannot be loaded.
    """
    path = ort_library if ort_library is not None else find_library()
    providers = c_char_p()
    status = _native.lib.esp_available_providers(
        None if path is None else _native.text(path), byref(providers)
    )
    try:
        _native.check(status)
    except RuntimeLibraryError as e:
        raise with_hint(e) from None
    return providers.value.decode().split(",")
