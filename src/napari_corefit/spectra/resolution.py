"""Resolution matching: broaden a measured spectrum to the model's Gaussian width (SPEC section 2).

The model was trained on spectra broadened with a Gaussian of standard deviation 0.5 eV. A measured
spectrum already carries the instrument's resolution (about the zero-loss peak's width); when that
is sharper than the model's, a further Gaussian of ``sqrt(0.5**2 - sigma_instr**2)`` brings it to
the same width (Gaussian widths add in quadrature). A broader instrument cannot be sharpened here:
then nothing is added and a warning says so.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter1d

from napari_corefit.spectra.grids import BROADENING_EV

__all__ = ["FWHM_PER_SIGMA", "fwhm_to_sigma", "sigma_to_fwhm", "matching_sigma",
           "gaussian_broaden", "match_resolution"]

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def fwhm_to_sigma(fwhm):
    """Gaussian standard deviation of a full width at half maximum.

    Examples
    --------
    >>> round(float(fwhm_to_sigma(1.0)), 4)
    0.4247
    """
    return np.asarray(fwhm, dtype=np.float64) / FWHM_PER_SIGMA


def sigma_to_fwhm(sigma):
    """Full width at half maximum of a Gaussian of standard deviation ``sigma``.

    Examples
    --------
    >>> round(float(sigma_to_fwhm(0.5)), 4)
    1.1774
    """
    return np.asarray(sigma, dtype=np.float64) * FWHM_PER_SIGMA


def matching_sigma(instrument_fwhm_ev, target_sigma_ev=BROADENING_EV):
    """Extra Gaussian sigma that brings an instrument's resolution to ``target_sigma_ev``.

    Parameters
    ----------
    instrument_fwhm_ev : float
        Instrument energy resolution as a FWHM, eV (e.g. the zero-loss peak's width).
    target_sigma_ev : float
        The model's Gaussian standard deviation, eV.

    Returns
    -------
    float
        ``sqrt(target**2 - sigma_instr**2)``, or 0 (with a warning) when the instrument is
        already broader than the target.

    Examples
    --------
    >>> round(matching_sigma(0.3), 3)  # 0.3 eV FWHM = 0.127 eV sigma
    0.483
    """
    fwhm = float(instrument_fwhm_ev)
    if not np.isfinite(fwhm) or fwhm < 0:
        raise ValueError(f"instrument FWHM must be a finite number >= 0 eV, got "
                         f"{instrument_fwhm_ev}")
    if not target_sigma_ev > 0:
        raise ValueError(f"target sigma must be > 0 eV, got {target_sigma_ev}")
    s_instr = float(fwhm_to_sigma(fwhm))
    if s_instr > target_sigma_ev:
        warnings.warn(f"the instrument resolution ({fwhm:.3g} eV FWHM, sigma {s_instr:.3g} eV) is "
                      f"broader than the model's ({target_sigma_ev:.3g} eV sigma); spectra are "
                      f"left as measured", stacklevel=2)
        return 0.0
    return float(np.sqrt(target_sigma_ev ** 2 - s_instr ** 2))


def gaussian_broaden(spectra, sigma_ev, step):
    """Convolve every spectrum with a unit-area Gaussian of standard deviation ``sigma_ev``.

    Parameters
    ----------
    spectra : array_like, shape (..., n)
    sigma_ev : float
        Gaussian standard deviation, eV (0 returns the input as float32).
    step : float
        Channel width, eV.

    Returns
    -------
    ndarray, float32, shape (..., n)
        Edges are extended with the end values (``mode="nearest"``), so areas are kept.

    Examples
    --------
    >>> y = np.zeros(101); y[50] = 1.0
    >>> b = gaussian_broaden(y, 0.5, 0.1)
    >>> width = np.sqrt((b * (np.arange(101) - 50) ** 2).sum()) * 0.1
    >>> round(float(b.sum()), 4), round(float(width), 3)
    (1.0, 0.5)
    """
    y = np.asarray(spectra)
    y = y.astype(np.float32, copy=False) if y.dtype != np.float32 else y
    if sigma_ev < 0 or step <= 0:
        raise ValueError(f"need sigma >= 0 and step > 0, got sigma={sigma_ev}, step={step}")
    if sigma_ev == 0:
        return y
    return gaussian_filter1d(y, sigma_ev / step, axis=-1, mode="nearest", truncate=4.0)


def match_resolution(spectra, step, instrument_fwhm_ev, target_sigma_ev=BROADENING_EV):
    """Broaden spectra measured at ``instrument_fwhm_ev`` to the model's ``target_sigma_ev``.

    Examples
    --------
    >>> e = np.arange(-5, 5, 0.05)
    >>> sharp = np.exp(-0.5 * (e / fwhm_to_sigma(0.3)) ** 2)
    >>> b = match_resolution(sharp, 0.05, 0.3)
    >>> w = b / b.sum()
    >>> round(float(np.sqrt((w * e ** 2).sum())), 3)
    0.5
    """
    return gaussian_broaden(spectra, matching_sigma(instrument_fwhm_ev, target_sigma_ev), step)
