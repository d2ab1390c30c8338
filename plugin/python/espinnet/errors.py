"""Exceptions: one class per status of the C ABI (``include/espinnet.h``), each carrying the
library's message (``esp_last_error``) and the status number. Those about arguments are
also ``ValueError``\\ s, so code that catches the built-in kinds keeps working."""

__all__ = [
    "EspinnetError",
    "NullArgumentError",
    "InvalidArgumentError",
    "ShapeError",
    "NonFiniteError",
    "IoError",
    "FormatError",
    "ModelError",
    "RuntimeLibraryError",
    "ProviderUnavailableError",
    "OutOfMemoryError",
    "CancelledError",
    "PanicError",
]


class EspinnetError(Exception):
    """A call into espinnet failed; ``status`` is the C ABI's number (``esp_status``)."""

    status = None

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class NullArgumentError(EspinnetError):
    """A required pointer was NULL (a bug of this package if it ever happens)."""

    status = 1


class InvalidArgumentError(EspinnetError, ValueError):
    """An option or argument is out of range or malformed."""

    status = 2


class ShapeError(EspinnetError, ValueError):
    """Arrays that must agree in shape do not, or one has the wrong number of dimensions."""

    status = 3


class NonFiniteError(EspinnetError, ValueError):
    """An input holds NaN or infinite values."""

    status = 4


class IoError(EspinnetError, OSError):
    """Reading or writing a file (a model, a cache) failed."""

    status = 5


class FormatError(EspinnetError, ValueError):
    """A file's content cannot be used."""

    status = 6


class ModelError(EspinnetError):
    """The network model is missing or invalid."""

    status = 7


class RuntimeLibraryError(EspinnetError):
    """ONNX Runtime cannot be found or loaded: install ``espinnet[cpu]`` or ``espinnet[gpu]``."""

    status = 8


class ProviderUnavailableError(EspinnetError):
    """The requested execution provider (CUDA, TensorRT) is not available here."""

    status = 9


class OutOfMemoryError(EspinnetError, MemoryError):
    """Memory could not be allocated."""

    status = 10


class CancelledError(EspinnetError):
    """The call was cancelled by its progress callback."""

    status = 11


class PanicError(EspinnetError):
    """A bug in espinnet (the library panicked and contained it); please report it."""

    status = 12


_BY_STATUS = {cls.status: cls for cls in map(globals().get, __all__) if cls.status is not None}


def error_for(status, message):
    """The exception for a non-OK status of the C ABI."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return EspinnetError(f"unknown status {status}: {message}")
    return cls(message)
