"""CT series: every projection of a tomography scan through one engine into one NeXus file,
streamed and resumable (``esp_series_*`` of the C ABI; the same code as ``espinnet series``).

Input follows DXchange: ``/exchange/data`` as ``[angles, N, H, W]`` (N pattern images per
angle, our extension of DXchange's one image per angle), ``/exchange/data_white``
``[N, H, W]`` (the reference stack), ``/exchange/theta`` (degrees) and
``/exchange/data_dark`` when present. Finished projections go to ``OUTPUT.journal/``; the
output file is written from it when every projection is there. Interrupted (Ctrl-C, a
crash, a killed job), the same call resumes.

>>> import espinnet
>>> with espinnet.Series("scan.h5:/exchange/data") as scan:             # doctest: +SKIP
...     engine = espinnet.Engine("tracking", energy_kev=20, distance_m=0.5,
...                              pixel_size_um=6.5, magnification=10)
...     scan.reconstruct(engine, "out.h5")
{'projections': 90, 'resumed': 0, 'computed': 90, 'written': True}
"""

import os
from ctypes import byref, c_size_t, c_void_p

from . import _native

#: The maps of a series file, ``[angles, H, W]`` each (``phase`` with the geometry only;
#: ``status`` uint8, numbered as :data:`espinnet.STATUS`).
SERIES_MAPS = ("dx", "dy", "transmission", "darkfield", "quality", "status", "phase")


class Series:
    """An opened scan: reference stack(s), dark frame and angles read and checked.

    Parameters
    ----------
    projections : str or path-like
        ``scan.h5:/exchange/data`` (``[angles, N, H, W]``; a bare ``scan.h5`` means that
        path), or a directory of one stack file per angle (``.tif``, ``.tiff``, ``.npy``, in
        name order).
    reference, reference_end, dark : str, optional
        Stacks as files or ``file.h5:/dataset``. ``reference`` defaults to
        ``/exchange/data_white`` of the projections' file; ``reference_end``, a second
        reference taken after the scan, is interpolated by angle (against drift); ``dark``
        defaults to ``/exchange/data_dark`` when present.
    angles : str, optional
        Degrees: a dataset or file of one value per projection, or ``"start:stop"`` (end
        excluded); default ``/exchange/theta``.
    air_columns : int, optional
        Columns (px) at each side that the sample never enters, where each projection's
        phase is set to zero (offset and tilt); default a sixteenth of the width, 0 keeps a
        zero-mean phase.
    """

    def __init__(self, projections, *, reference=None, reference_end=None, dark=None,
                 angles=None, air_columns=None):
        projections = os.fspath(projections)
        settings = dict(projections=projections, reference=reference,
                        reference_end=reference_end, dark=dark, angles=angles,
                        air_columns=air_columns)
        spec = _native.lib.esp_series_spec_new()
        if not spec:
            raise MemoryError("esp_series_spec_new")
        self._handle = None
        try:
            for key, value in settings.items():
                if value is not None:
                    _native.check(_native.lib.esp_series_spec_set(
                        spec, _native.text(key), _native.text(os.fspath(value)
                                                               if isinstance(value, os.PathLike)
                                                               else value)))
            handle = c_void_p()
            _native.check(_native.lib.esp_series_open(spec, byref(handle)))
        finally:
            _native.lib.esp_series_spec_free(spec)
        self._handle = handle
        self.settings = {k: v for k, v in settings.items() if v is not None}
        dims = (c_size_t * 4)()
        _native.check(_native.lib.esp_series_dims(handle, dims))
        #: ``(angles, N, H, W)``.
        self.shape = tuple(dims)

    def reconstruct(self, engine, output, *, first=0, count=None, journal_only=False,
                    overwrite=False, progress=None):
        """Reconstructs the scan (or projections ``first .. first + count``) into ``output``.

        Parameters
        ----------
        engine : Engine
            Built once (its model loaded) and used for every projection.
        output : str or path-like
            The NeXus file (``.h5``): maps ``[angles, H, W]`` under ``/entry/result`` and
            linked at the root (``/phase``, ``/dx``, …, ``/theta`` in degrees).
        first, count : int, optional
            Only these projections (a share of the scan, as a cluster's worker does).
        journal_only : bool
            Leave the result in the journal; the call that finds it complete writes the file.
        overwrite : bool
            Replace an existing output that has no journal beside it.
        progress : callable, optional
            ``progress(fraction_done)``; returning True stops after the current projection
            (:class:`CancelledError`); Ctrl-C too. Finished projections are kept.

        Returns
        -------
        dict
            ``projections``, ``resumed`` (found in the journal), ``computed``, ``written``
            (the output holds the whole scan). Run again once finished, the call does
            nothing (``computed`` 0).
        """
        handle = self._live()
        report = _native.SeriesReport()
        count = (1 << 64) - 1 if count is None else int(count)
        path = _native.text(os.fspath(output))
        engine._call(
            lambda engine_handle, fn: _native.lib.esp_series_run(
                handle, engine_handle, path, int(first), count, int(journal_only),
                int(overwrite), fn, None, byref(report)),
            progress, keep=self)
        return {"projections": report.projections, "resumed": report.resumed,
                "computed": report.computed, "written": bool(report.written)}

    def _live(self):
        if self._handle is None:
            raise ValueError("this Series is closed")
        return self._handle

    def close(self):
        if self._handle is not None:
            _native.lib.esp_series_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def __repr__(self):
        return f"<espinnet.Series {self.settings['projections']} {self.shape}>"


def read_series(path, maps=SERIES_MAPS):
    """Reads a series file: ``{name: float32 [angles, H, W]}`` for the ``maps`` it has
    (``status`` uint8, numbered as :data:`espinnet.STATUS`), and ``theta`` (degrees).
    Needs h5py."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        out = {m: np.asarray(f[m]) for m in maps if m in f}
        out["theta"] = np.asarray(f["theta"], dtype=np.float64)
    return out
