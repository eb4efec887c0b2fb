"""Savitzky-Golay smoothing with its window given in eV (SPEC section 2)."""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

__all__ = ["savgol_points", "savgol_smooth"]


def savgol_points(window_ev, step):
    """Number of points of a ``window_ev`` window: rounded to an odd number, at least 5.

    Examples
    --------
    >>> savgol_points(1.0, 0.1), savgol_points(0.2, 0.1), savgol_points(0.8, 0.1)
    (11, 5, 9)
    """
    if not (np.isfinite(window_ev) and window_ev > 0) or not step > 0:
        raise ValueError(f"Savitzky-Golay window must be > 0 eV and step > 0, got window="
                         f"{window_ev}, step={step}")
    n = int(np.floor(window_ev / step + 0.5))
    if n % 2 == 0:
        n += 1
    return max(n, 5)


def savgol_smooth(spectra, step, window_ev, polyorder=2):
    """Savitzky-Golay smoothing of every spectrum along the last axis.

    Parameters
    ----------
    spectra : array_like, shape (..., n)
    step : float
        Channel width, eV.
    window_ev : float
        Window width, eV (see :func:`savgol_points`).
    polyorder : int
        Polynomial order, below the number of window points.

    Returns
    -------
    ndarray, float32, shape (..., n)

    Examples
    --------
    >>> x = np.arange(50) * 0.1
    >>> y = 2 * x ** 2 - x
    >>> bool(np.allclose(savgol_smooth(y, 0.1, 0.9), y, atol=1e-4))  # a parabola is kept
    True
    """
    y = np.asarray(spectra, dtype=np.float32)
    n = savgol_points(window_ev, step)
    if not 0 <= polyorder < n:
        raise ValueError(f"polyorder must be in [0, {n}) for a {n}-point window, got {polyorder}")
    if y.shape[-1] < n:
        raise ValueError(f"spectra have {y.shape[-1]} channels, fewer than the {n}-point "
                         f"Savitzky-Golay window ({window_ev} eV)")
    return savgol_filter(y, n, polyorder, axis=-1, mode="interp").astype(np.float32, copy=False)
