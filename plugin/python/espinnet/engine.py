"""Reconstruction: :class:`Engine` (built once, for many stacks) and :func:`retrieve` (one
call), numpy in, numpy out, over ``esp_engine_*`` of the C ABI."""

import numbers
import threading
from ctypes import byref, c_void_p
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _native, _runtime
from .errors import InvalidArgumentError, RuntimeLibraryError, ShapeError, error_for

MAPS = _native.MAPS
#: The numbers of :attr:`Result.status` and what they mean.
STATUS = _native.PIXEL
#: Computed by default, and the ones that need the geometry.
CONTRASTS = MAPS[:5]
DERIVED = MAPS[5:]
GEOMETRY = ("energy_kev", "distance_m", "pixel_size_um")

_SIGN = """S(x, y, i) = T · (M + D · (R(x − dx, y − dy, i) − M)): a pattern feature at p in the
    reference appears at p + d in the sample; x is the column, y the row index; M is the
    reference's local mean."""


@dataclass(frozen=True)
class Result:
    """The maps of one reconstruction, each a float32 array ``[H, W]`` like the input frames,
    or None when not computed.

    Attributes
    ----------
    dx, dy : ndarray
        Displacement of the pattern along x (columns) and y (rows), px; NaN where it
        cannot be estimated: the tracker's border, and for the network the pixels that see
        the pattern from beyond the reference's field of view (a displacement pointing out
        of the image at its edge). T and D are NaN there too.
    transmission : ndarray
        T, 1 = transparent.
    darkfield : ndarray
        D, the visibility ratio: 1 = no small-angle scattering, smaller = more.
    quality : ndarray
        RMS residual over the scan of the signal model at the estimate, relative to the
        mean sample intensity (the same definition for both engines; 0 = perfect fit).
    refraction_x, refraction_y : ndarray
        Refraction angles αx = dx·p/z, αy = dy·p/z, rad (p: pixel size at the sample,
        z: sample–detector distance); with the geometry only.
    phase : ndarray
        Phase φ, rad, zero mean, integrated from ∇φ = (2π/λ)·α·p; with the geometry only.
    status : ndarray of uint8
        What happened at each pixel (:data:`STATUS` names the numbers): 0 measured; 1 the
        tracker's best shift lies on the edge of its search (raise ``max_shift``); 2 the
        tracker's fit is degenerate (no pattern contrast in its window); 3 not measured,
        every map NaN (the tracker's border, or the network's pixels that see the pattern
        from beyond the reference's field of view); 4 the network's estimate, solved again
        by its guard.
    resolved_pixels : int
        Pixels of the network's estimate that its guard (option ``guard``, on by default)
        solved again with the tracker because the signal model rejected them or, from five
        frames, they lie in an area dense with such pixels or where the network's bias was
        large (status 4); 0 for the tracker.

    Model: {sign}
    """

    dx: Optional[np.ndarray] = None
    dy: Optional[np.ndarray] = None
    transmission: Optional[np.ndarray] = None
    darkfield: Optional[np.ndarray] = None
    quality: Optional[np.ndarray] = None
    refraction_x: Optional[np.ndarray] = None
    refraction_y: Optional[np.ndarray] = None
    phase: Optional[np.ndarray] = None
    status: Optional[np.ndarray] = None
    resolved_pixels: int = 0

    def items(self):
        """(name, array) of the maps computed, in a fixed order."""
        return [(name, getattr(self, name)) for name in MAPS if getattr(self, name) is not None]

    def __getitem__(self, name):
        """A map by name, as :meth:`items` names them, or ``"status"``."""
        if name not in MAPS and name != "status":
            raise KeyError(name)
        return getattr(self, name)


Result.__doc__ = Result.__doc__.replace("{sign}", _SIGN)


def _option_text(key, value):
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return value


def stack(name, array):
    """``array`` as an ``esp_stack`` and the array that backs it: float32 rows with unit
    column stride are passed as they are (padded rows too), anything else is converted once
    to C-contiguous float32."""
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[np.newaxis]
    if a.ndim != 3:
        raise ShapeError(f"{name} must be [N, H, W] (or one [H, W] frame), got shape {a.shape}")
    n, h, w = a.shape
    item = a.itemsize
    # Bytes from one row to the next; the C ABI puts frames h rows apart.
    rows = a.strides[1] if h > 1 else (a.strides[0] if n > 1 else w * item)
    in_place = (
        a.dtype == np.float32
        and a.size > 0
        and a.flags.aligned
        and (w == 1 or a.strides[2] == item)
        and rows % item == 0
        and rows >= w * item
        and (n == 1 or a.strides[0] == h * rows)
    )
    if not in_place:
        a = np.ascontiguousarray(a, dtype=np.float32)
        rows = w * a.itemsize
    row_stride = rows // a.itemsize
    length = (n * h - 1) * row_stride + w if a.size else 0
    return _native.Stack(a.ctypes.data, length, n, h, w, row_stride), a


def _output(name, array, shape):
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise TypeError(f"out[{name!r}] must be a float32 numpy array")
    if array.shape != shape:
        raise ShapeError(f"out[{name!r}] must have the frames' shape {shape}, got {array.shape}")
    if not (array.flags.c_contiguous and array.flags.writeable and array.flags.aligned):
        raise ValueError(f"out[{name!r}] must be C-contiguous, aligned and writeable")
    return array


class _Call:
    """One C call's progress callback: the caller's ``progress`` and cancellation by Ctrl-C
    (the callback runs on worker threads, so SIGINT, handled on the main thread, sets a flag
    it reads)."""

    def __init__(self, progress):
        self.progress = progress
        self.interrupted = False
        self.error = None
        self.function = _native.PROGRESS_FN(self._report)

    def _report(self, fraction, _user):
        if self.interrupted or self.error is not None:
            return 1
        if self.progress is None:
            return 0
        try:
            return 1 if self.progress(fraction) is True else 0
        except BaseException as e:  # noqa: BLE001 — re-raised by the caller
            self.error = e
            return 1


class Engine:
    """A reconstruction engine with its model loaded, for many stacks: from one or several
    Python threads at once (the GIL is released during the computation).

    Parameters
    ----------
    engine : {'network', 'tracking'}
        ``network``: ESPINNet (Qiao et al., J. Synchrotron Rad. 33, 467–480, 2026) through
        ONNX Runtime; ``tracking``: the correlation tracker (UMPA class).
    energy_kev, distance_m, pixel_size_um, magnification : float, optional
        Geometry: photon energy (keV), sample–detector distance (m), detector pixel size
        (µm) and magnification (default 1). With the first three, refraction and phase are
        computed too.
    window : int, optional
        Tracking: half-width of the matching window, px (default 1).
    max_shift : int, optional
        Tracking: largest displacement searched, px (default 8).
    provider : {'auto', 'cpu', 'cuda', 'tensorrt'}, optional
        Network: where it runs; ``auto`` (default) takes the best available.
    model : str or path-like, optional
        Network: an ONNX export to use instead of the shipped model.
    ort_library : str or path-like, optional
        Network: ``libonnxruntime`` to load; default ``$ESPINNET_ORT_PATH``, then the
        installed ``onnxruntime``/``onnxruntime-gpu`` package.
    ncore : int, optional
        CPU threads for every step; default one per core.
    **options
        Any other option of the C ABI by name (``esp_options_set``): ``scaling``, ``tile``,
        ``overlap``, ``batch``, ``guard`` (default true: the network's smooth bias, measured by
        the tracker on a grid of pixels, is taken off, and pixels the signal model rejects, and
        the areas dense with them or with a large bias, are solved again by the tracker; false
        saves its time), ``image_px`` (``"HxW"``, the
        image size to be run, if known: the network then starts faster), ``device_id``,
        ``fp16``, ``gpu_mem_limit_mib``, ``trt_cache``, ``conv_search`` (``"exhaustive"``,
        ``"heuristic"`` or ``"fixed"``: how CUDA picks convolution algorithms), ``mean_window``, ``dark_field``, ``hamming``, ``reseed``, ``adaptive``, ``integration``.

    Raises
    ------
    InvalidArgumentError
        An unknown option, a bad value, or a geometry given in part.
    RuntimeLibraryError, ModelError, ProviderUnavailableError
        The network engine cannot load ONNX Runtime, the model, or the provider asked for.
    """

    def __init__(self, engine="network", *, energy_kev=None, distance_m=None, pixel_size_um=None,
                 magnification=None, window=None, max_shift=None, provider=None, model=None,
                 ort_library=None, ncore=None, **options):
        named = dict(engine=engine, energy_kev=energy_kev, distance_m=distance_m,
                     pixel_size_um=pixel_size_um, magnification=magnification, window=window,
                     max_shift=max_shift, provider=provider, model=model, threads=ncore)
        named.update(options)
        if engine == "network" and ort_library is None:
            ort_library = _runtime.find_library()
        named["ort_library"] = ort_library
        settings = {k: v for k, v in named.items() if v is not None}
        self._handle = None
        self._lock = threading.Lock()
        self._calls = 0
        self._closing = False
        opts = _native.lib.esp_options_new()
        if not opts:
            raise MemoryError("esp_options_new")
        try:
            for key, value in settings.items():
                status = _native.lib.esp_options_set(
                    opts, _native.text(key), _native.text(_option_text(key, value)))
                _native.check(status)
            handle = c_void_p()
            status = _native.lib.esp_engine_new(opts, byref(handle))
            try:
                _native.check(status)
            except RuntimeLibraryError as e:
                raise _runtime.with_hint(e) from None
        finally:
            _native.lib.esp_options_free(opts)
        self._handle = handle
        self.engine = engine
        self.options = settings
        self.has_geometry = all(k in settings for k in GEOMETRY)

    @property
    def provider(self):
        """What the engine computes on: ``tracking-cpu``, or the network's ``cpu``, ``cuda``
        or ``tensorrt``."""
        return _native.lib.esp_engine_provider(self._live()).decode()

    def _live(self):
        if self._handle is None or self._closing:
            raise InvalidArgumentError("this Engine is closed")
        return self._handle

    def reconstruct(self, reference, sample, *, maps=None, out=None, progress=None):
        """Reconstructs the maps of one projection.

        Parameters
        ----------
        reference, sample : array_like, [N, H, W]
            The pattern scanned without and with the sample (dark- and flat-corrected
            intensities), N positions in the same order; any real dtype and any strides
            (float32 with unit column stride is used in place, anything else converted once).
            A single [H, W] frame counts as N = 1.
        maps : iterable of str, optional
            The maps to compute (see :class:`Result`); default the five contrasts, and
            refraction and phase when the engine has the geometry. Fewer maps cost less.
        out : mapping of str to ndarray, or Result, optional
            Preallocated float32 C-contiguous [H, W] arrays to write into (e.g. the
            :class:`Result` of a previous call); their maps are computed too.
        progress : callable, optional
            ``progress(fraction_done)`` with 0 ≤ fraction ≤ 1, possibly from worker threads;
            returning True cancels the call (:class:`CancelledError`). Ctrl-C cancels it too
            (``KeyboardInterrupt``, when called from the main thread).

        Returns
        -------
        Result
            The maps, float32 [H, W] (those of ``out`` are the very arrays given), and the
            per-pixel ``status``, uint8 [H, W].
        """
        ref, ref_array = stack("reference", reference)
        smp, smp_array = stack("sample", sample)
        if ref_array.shape != smp_array.shape:
            raise ShapeError(
                f"reference {ref_array.shape} and sample {smp_array.shape} must have the same [N, H, W]")
        shape = ref_array.shape[1:]
        given = dict(out.items()) if out is not None else {}
        wanted = list(maps) if maps is not None else list(CONTRASTS) + (
            list(DERIVED) if self.has_geometry else [])
        for name in list(wanted) + list(given):
            if name not in MAPS:
                raise InvalidArgumentError(f"unknown map {name!r}: one of {', '.join(MAPS)}")
        arrays = {name: _output(name, array, shape) for name, array in given.items()}
        for name in wanted:
            arrays.setdefault(name, np.empty(shape, dtype=np.float32))
        status = np.empty(shape, dtype=np.uint8)
        outputs = _native.Outputs(len=shape[0] * shape[1], status=status.ctypes.data,
                                  **{name: a.ctypes.data for name, a in arrays.items()})
        report = _native.Report()
        self._call(
            lambda handle, fn: _native.lib.esp_engine_run(
                handle, byref(ref), byref(smp), byref(outputs), fn, None, byref(report)),
            progress, keep=(ref_array, smp_array, arrays, status))
        return Result(**arrays, status=status, resolved_pixels=report.resolved_pixels)

    def _call(self, invoke, progress, keep=None):
        """Runs ``invoke(handle, progress_fn)``, a C call that returns a status, with Ctrl-C
        and ``progress`` wired to its callback; ``keep`` holds the arrays behind its
        descriptors until it ends."""
        with self._lock:
            handle = self._live()
            self._calls += 1
        on_main = threading.current_thread() is threading.main_thread()
        call = _Call(progress) if (progress is not None or on_main) else None
        result = {}

        done = threading.Event()

        def run(keep=keep):
            try:
                result["status"] = invoke(handle, call.function if call else _native.PROGRESS_FN())
                result["message"] = _native.last_error()
            finally:
                with self._lock:
                    self._calls -= 1
                    if self._closing and self._calls == 0:
                        self._free()
                done.set()

        if on_main:
            # The call runs on a worker so that this thread stays free to take Ctrl-C. The
            # worker is not a daemon and is waited for even after Ctrl-C (Thread.join may not
            # be: it can give up on KeyboardInterrupt), so no call outlives the interpreter.
            threading.Thread(target=run, name="espinnet-call").start()
            try:
                while not done.wait(0.05):  # a signal another thread took is seen within 50 ms
                    pass
            except KeyboardInterrupt:
                call.interrupted = True
                while True:
                    try:
                        done.wait()
                        break
                    except KeyboardInterrupt:
                        pass
                raise
        else:
            run()
        if call is not None and call.error is not None:
            raise call.error
        if result["status"] != 0:
            raise error_for(result["status"], result["message"])

    def close(self):
        """Frees the engine (its model, GPU memory); calls in progress finish first."""
        with self._lock:
            self._closing = True
            if self._calls == 0:
                self._free()

    def _free(self):
        if self._handle is not None:
            _native.lib.esp_engine_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            self.close()

    def __repr__(self):
        state = "closed" if self._handle is None or self._closing else self.provider
        return f"<espinnet.Engine {self.engine} on {state}>"


def retrieve(reference, sample, *, engine="network", energy_kev=None, distance_m=None,
             pixel_size_um=None, magnification=None, window=None, max_shift=None,
             provider="auto", model=None, ncore=None, maps=None, out=None, progress=None,
             **options):
    """Retrieves the multi-contrast maps — displacement, transmission, dark-field, quality
    and, given the geometry, refraction angles and phase — from a reference and a sample
    stack of a scanned modulated pattern (coded mask, sandpaper, grating).

    One call builds an :class:`Engine` (loading the network model) and runs it; for many
    projections build an :class:`Engine` once.

    Parameters
    ----------
    reference, sample : array_like, [N, H, W]
        Pattern images without and with the sample, N scan positions in the same order;
        any real dtype and strides.
    engine : {'network', 'tracking'}
        ESPINNet (Qiao et al., J. Synchrotron Rad. 33, 467–480, 2026) or the correlation
        tracker.
    energy_kev, distance_m, pixel_size_um, magnification : float, optional
        Photon energy (keV), sample–detector distance (m), detector pixel (µm),
        magnification (default 1); the first three give refraction (rad) and phase (rad).
    window, max_shift : int, optional
        Tracking: matching half-window and search range, px.
    provider, model : optional
        Network: execution provider (``auto``, ``cpu``, ``cuda``, ``tensorrt``), ONNX model.
    ncore : int, optional
        CPU threads; default one per core.
    maps, out, progress :
        As :meth:`Engine.reconstruct`.
    **options
        Any other option by its C ABI name (see :class:`Engine`).

    Returns
    -------
    Result
        ``dx, dy`` (px), ``transmission``, ``darkfield``, ``quality`` and, with the geometry,
        ``refraction_x, refraction_y`` (rad) and ``phase`` (rad), float32 [H, W]; the
        per-pixel ``status``, uint8 [H, W].

    Notes
    -----
    {sign}
    """
    # The network's session is then planned for this size: it starts about 3x faster. (Read
    # from the array's shape: np.shape would copy a nested list that reconstruct copies too.)
    shape = getattr(reference, "shape", ())
    if len(shape) == 3:
        options.setdefault("image_px", f"{shape[1]}x{shape[2]}")
    with Engine(engine, energy_kev=energy_kev, distance_m=distance_m, pixel_size_um=pixel_size_um,
                magnification=magnification, window=window, max_shift=max_shift,
                provider=provider, model=model, ncore=ncore,
                **options) as e:
        return e.reconstruct(reference, sample, maps=maps, out=out, progress=progress)


retrieve.__doc__ = retrieve.__doc__.replace("{sign}", _SIGN)
