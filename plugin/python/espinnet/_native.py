"""The C ABI of ``libespinnet`` (``include/espinnet.h``, ABI 0.3) through ctypes: the
library shipped inside this package (``$ESPINNET_LIBRARY`` names another, for development),
its structures and prototypes."""

import ctypes
import os
import sys
from ctypes import POINTER, c_char_p, c_double, c_int, c_int32, c_size_t, c_uint64, c_void_p
from pathlib import Path

from .errors import InvalidArgumentError, error_for

LIBRARY_NAME = {"darwin": "libespinnet.dylib", "win32": "espinnet.dll"}.get(sys.platform, "libespinnet.so")

#: The maps of ``esp_outputs``, in its field order.
MAPS = ("dx", "dy", "transmission", "darkfield", "quality", "refraction_x", "refraction_y", "phase")


class Stack(ctypes.Structure):
    """``esp_stack``: n frames of height × width float32, rows ``row_stride`` floats apart."""

    _fields_ = [
        ("data", c_void_p),
        ("len", c_size_t),
        ("n", c_size_t),
        ("height", c_size_t),
        ("width", c_size_t),
        ("row_stride", c_size_t),
    ]


class Outputs(ctypes.Structure):
    """``esp_outputs``: one float32 [H, W] buffer per map and a uint8 one for the per-pixel
    status (NULL to skip any), ``len`` values each."""

    _fields_ = [(name, c_void_p) for name in MAPS] + [("len", c_size_t), ("status", c_void_p)]


#: ``esp_pixel``: what the numbers of the status map mean.
PIXEL = {0: "measured", 1: "search edge", 2: "ill-conditioned", 3: "not measured",
         4: "resolved"}


PROGRESS_FN = ctypes.CFUNCTYPE(c_int32, c_double, c_void_p)


class Report(ctypes.Structure):
    """``esp_report``: what one ``esp_engine_run`` did beyond its maps."""

    _fields_ = [("resolved_pixels", c_size_t)]


class SeriesReport(ctypes.Structure):
    """``esp_series_report``: what one ``esp_series_run`` did."""

    _fields_ = [("projections", c_size_t), ("resumed", c_size_t), ("computed", c_size_t),
                ("written", c_int32)]


def _load():
    # ONNX Runtime's telemetry off (a value the user set stays): set here, before the
    # library loads and while Python holds the environment, not by the library later.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    path = Path(os.environ.get("ESPINNET_LIBRARY") or Path(__file__).with_name(LIBRARY_NAME))
    if not path.is_file():
        raise ImportError(
            f"espinnet's native library is missing ({path}): install the espinnet wheel, or "
            "for a checkout `pip install -e plugin/python` (needs cargo)"
        )
    lib = ctypes.CDLL(str(path))  # CDLL releases the GIL during every call
    status = c_int
    for name, restype, argtypes in [
        ("esp_status_str", c_char_p, [c_int]),
        ("esp_version", c_char_p, []),
        ("esp_last_error", c_char_p, []),
        ("esp_options_new", c_void_p, []),
        ("esp_options_free", None, [c_void_p]),
        ("esp_options_set", status, [c_void_p, c_char_p, c_char_p]),
        ("esp_engine_new", status, [c_void_p, POINTER(c_void_p)]),
        ("esp_engine_provider", c_char_p, [c_void_p]),
        ("esp_engine_free", None, [c_void_p]),
        ("esp_engine_run", status,
         [c_void_p, POINTER(Stack), POINTER(Stack), POINTER(Outputs), PROGRESS_FN, c_void_p,
          POINTER(Report)]),
        ("esp_simulate", status,
         [c_char_p, c_size_t, c_size_t, c_size_t, c_uint64, c_void_p, c_void_p, c_size_t, POINTER(Outputs)]),
        ("esp_available_providers", status, [c_char_p, POINTER(c_char_p)]),
        ("esp_series_spec_new", c_void_p, []),
        ("esp_series_spec_free", None, [c_void_p]),
        ("esp_series_spec_set", status, [c_void_p, c_char_p, c_char_p]),
        ("esp_series_open", status, [c_void_p, POINTER(c_void_p)]),
        ("esp_series_dims", status, [c_void_p, POINTER(c_size_t)]),
        ("esp_series_free", None, [c_void_p]),
        ("esp_series_run", status,
         [c_void_p, c_void_p, c_char_p, c_size_t, c_size_t, c_int32, c_int32, PROGRESS_FN,
          c_void_p, POINTER(SeriesReport)]),
        ("esp_integrate", status,
         [c_void_p, c_void_p, c_size_t, c_size_t, c_size_t, c_char_p, c_void_p]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib, path


lib, library_path = _load()


def version():
    return lib.esp_version().decode()


def last_error():
    """The message of the last failed call on this thread."""
    return (lib.esp_last_error() or b"").decode("utf-8", "replace")


def check(status):
    """Raises the exception for a non-OK status; call on the thread that made the call."""
    if status != 0:
        raise error_for(status, last_error() or lib.esp_status_str(status).decode())


def text(value):
    """An option value or name as the C ABI takes it (NUL-terminated UTF-8)."""
    data = os.fsencode(value) if isinstance(value, os.PathLike) else str(value).encode()
    if b"\0" in data:
        raise InvalidArgumentError(f"{value!r} holds a NUL character")
    return data
