"""CT series on a Dask cluster: the projections of a scan shared out as tasks of a few
projections each, one :class:`~espinnet.Engine` and one opened :class:`~espinnet.Series`
per worker process (built on its first task, reused by the next), every finished projection
written to the output's journal by the worker that computed it. The client writes the
output file from the journal at the end. Resumable like the serial path: a run that was
stopped (a lost worker, a cancelled job, a killed client) skips what the journal has.

On one machine::

    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=4, threads_per_worker=1) as cluster, Client(cluster) as client:
        espinnet.dask.reconstruct_series(client, "scan.h5", "out.h5", engine="tracking", ...)

On a beamline's SLURM cluster, the same call with a dask-jobqueue cluster::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=16, processes=4, memory="64GB", walltime="02:00:00")
    cluster.scale(jobs=8)
    with Client(cluster) as client:
        espinnet.dask.reconstruct_series(client, "/data/scan.h5", "/data/out.h5", ...)

The workers must see the input and output paths (a shared file system) and have the same
espinnet and ONNX Runtime installed (the journal refuses entries from different settings).
"""

import os

from .engine import Engine
from .series import Series

# One engine and one opened scan per worker process, keyed by their settings.
_CACHE = {}


def _cached(kind, key, make):
    entry = _CACHE.get((kind, key))
    if entry is None:
        entry = _CACHE[(kind, key)] = make()
    return entry


def _run_share(series_options, engine_options, output, first, count):
    """A task: projections ``first .. first + count`` into the journal."""
    key_s = tuple(sorted(series_options.items()))
    key_e = tuple(sorted(engine_options.items()))
    scan = _cached("series", key_s, lambda: Series(**series_options))
    engine = _cached("engine", key_e, lambda: Engine(**engine_options))
    return scan.reconstruct(engine, output, first=first, count=count, journal_only=True)


def reconstruct_series(client, projections, output, *, chunk=4, reference=None,
                       reference_end=None, dark=None, angles=None, air_columns=None,
                       overwrite=False, **engine_options):
    """Reconstructs a scan over a Dask cluster into the NeXus file ``output``.

    Parameters
    ----------
    client : dask.distributed.Client
    projections, reference, reference_end, dark, angles, air_columns :
        As :class:`~espinnet.Series`.
    output : str or path-like
        As :meth:`Series.reconstruct`; the same file the serial path writes.
    chunk : int
        Projections per task.
    overwrite : bool
        Replace an existing output that has no journal beside it.
    **engine_options
        As :class:`~espinnet.Engine` (``engine``, the geometry, ``window``, ``ncore``, …).

    Returns
    -------
    dict
        ``projections``, ``computed`` (by the workers in this call), ``resumed`` (found in
        the journal), ``written``.
    """
    series_options = dict(projections=os.fspath(projections), reference=reference,
                          reference_end=reference_end, dark=dark, angles=angles,
                          air_columns=air_columns)
    series_options = {k: v for k, v in series_options.items() if v is not None}
    output = os.path.abspath(os.fspath(output))
    with Series(**series_options) as scan, Engine(**engine_options) as engine:
        count = scan.shape[0]
        if os.path.exists(output) and not os.path.exists(output + ".journal") and not overwrite:
            # Before any worker starts: another run's file is refused, this run's, finished,
            # is left as it is.
            scan.reconstruct(engine, output, count=0)
            return {"projections": count, "computed": 0, "resumed": count, "written": True}
        futures = [
            client.submit(_run_share, series_options, engine_options, output, first,
                          min(chunk, count - first), pure=False)
            for first in range(0, count, chunk)
        ]
        shares = client.gather(futures)
        final = scan.reconstruct(engine, output, overwrite=overwrite)
    return {
        "projections": count,
        "computed": sum(s["computed"] for s in shares) + final["computed"],
        "resumed": sum(s["resumed"] for s in shares),
        "written": final["written"],
    }
