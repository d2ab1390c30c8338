"""Phase projections to a refractive-index volume by filtered back-projection, with an
existing tomography library: algotom (``pip install espinnet[tomo]``; Vo et al., J.
Synchrotron Rad. 29, 1320, 2022) or tomopy (conda; Gürsoy et al., J. Synchrotron Rad. 21,
1188, 2014). Nothing here reconstructs by itself.

Parallel beam, rotation axis along the detector rows. The phase of a projection is
``φ = −k ∫ δ ds`` (``k = 2π/λ``), so the back-projection of φ, in rad per pixel, divided by
``−k·p`` (``p`` the pixel at the sample, m) is δ.
"""

import warnings

import numpy as np

#: hc (eV·m): λ = HC_EV_M / E.
HC_EV_M = 1.23984198e-6


def find_center(sinogram):
    """Rotation centre (px, column) of a 180° sinogram ``[angles, W]``: algotom's
    ``find_center_vo`` (Vo et al., Opt. Express 22, 19078, 2014)."""
    from algotom.prep.calculation import find_center_vo

    return float(find_center_vo(np.nan_to_num(np.asarray(sinogram, dtype=np.float32))))


def delta_from_phase(phase, theta_deg, *, energy_kev, pixel_size_um, magnification=1.0,
                     distance_m=None, center=None, backend="algotom", filter_name="hann",
                     ncore=None):
    """The refractive index decrement δ from phase projections.

    Parameters
    ----------
    phase : array_like, [angles, rows, W]
        Phase (rad) per projection, referenced to air (``espinnet series`` does that);
        NaN (the tracker's border, the network's pixels beyond the field of view) counts
        as 0.
    theta_deg : array_like, [angles]
        Rotation angles (degrees) over 180°.
    energy_kev, pixel_size_um, magnification : float
        Photon energy (keV), detector pixel (µm) and magnification: the pixel at the sample
        is ``pixel_size_um / magnification``.
    distance_m : float, optional
        Not needed (the phase already holds it); accepted so that an engine's geometry can
        be passed whole.
    center : float, optional
        Rotation centre (px); default found from the middle row's sinogram
        (:func:`find_center`).
    backend : {'algotom', 'tomopy'}
        The library that reconstructs. The tests check algotom's result against a phantom;
        tomopy (conda) is passed the same data but is not checked here.
    filter_name : str
        The FBP's smoothing window (algotom's names: ``hann``, ``hamming``, …, or None).
    ncore : int, optional
        CPU cores; default all but one.

    Returns
    -------
    ndarray, float32 [rows, W, W]
        δ per voxel (voxel = pixel at the sample); slice ``[row]`` is the horizontal slice
        at that detector row.
    """
    phase = np.nan_to_num(np.asarray(phase, dtype=np.float32))
    theta = np.deg2rad(np.asarray(theta_deg, dtype=np.float64))
    if phase.ndim != 3 or len(theta) != phase.shape[0]:
        raise ValueError(f"phase must be [angles, rows, W] with one angle each, got "
                         f"{phase.shape} and {len(theta)} angles")
    if center is None:
        center = find_center(phase[:, phase.shape[1] // 2, :])
    wavelength_m = HC_EV_M / (energy_kev * 1e3)
    per_pixel = -2 * np.pi / wavelength_m * pixel_size_um * 1e-6 / magnification
    if backend == "tomopy":
        import tomopy

        rec = tomopy.recon(phase, theta, center=center, algorithm="gridrec",
                           filter_name="parzen", ncore=ncore)
    elif backend == "algotom":
        from algotom.rec.reconstruction import fbp_reconstruction

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no GPU, running on the CPU"
            rec = fbp_reconstruction(phase, center, angles=theta, apply_log=False, gpu=False,
                                     filter_name=filter_name, ncore=ncore)
        rec = np.moveaxis(rec, 1, 0)  # algotom gives [W, rows, W] for a stack of sinograms
    else:
        raise ValueError(f"backend must be algotom or tomopy, got {backend!r}")
    return np.ascontiguousarray(rec / per_pixel, dtype=np.float32)


def correlation(a, b, margin=0):
    """Pearson correlation of two volumes, ``margin`` voxels trimmed from every face."""
    s = tuple(slice(margin, n - margin) for n in np.shape(a))
    x, y = np.ravel(np.asarray(a)[s]), np.ravel(np.asarray(b)[s])
    return float(np.corrcoef(x, y)[0, 1])
