"""Alignment onto the model grid: relative to each spectrum's first peak, or absolute (SPEC 2).

The model's input grid starts 1 eV below the spectrum's first peak. The peak is found with
:func:`napari_corefit.spectra.peaks.find_first_peak`, the one detector that training uses too,
inside a search window (the carbon K edge's first peak lies at about 284-290 eV). Each spectrum is
then sampled, by linear interpolation, at its own peak + grid energies. Calibrated data can use an
absolute grid instead (e.g. 280-310 eV), the same for every pixel.
"""

from __future__ import annotations

import numpy as np

from napari_corefit.spectra.grids import ABSOLUTE_GRID, SPECTRUM_GRID, \
    area_normalise, interpolate_rows
from napari_corefit.spectra.peaks import PEAK_DEFAULTS, find_first_peak

__all__ = ["PEAK_SEARCH_EV", "first_peak", "align_to_first_peak", "resample_absolute"]

#: Where the carbon K edge's first peak is looked for, eV.
PEAK_SEARCH_EV = (282.0, 300.0)


def _axis(energy):
    energy = np.asarray(energy, dtype=np.float64)
    if energy.ndim != 1 or energy.size < 3:
        raise ValueError(f"energy must be a 1-D axis of at least 3 channels, got {energy.shape}")
    step = (energy[-1] - energy[0]) / (energy.size - 1)
    if not step > 0:
        raise ValueError("energy must increase along the axis")
    return energy, step


def first_peak(energy, spectra, search_window=PEAK_SEARCH_EV, peak_params=None):
    """First-peak energy of every spectrum inside ``search_window`` (NaN where none).

    Only the channels around the window are handed to the detector (the rest cannot change its
    answer), which keeps it fast on long spectra.

    Parameters
    ----------
    energy : array_like, shape (n,)
    spectra : array_like, shape (..., n)
        Background-subtracted spectra.
    search_window : (float, float)
        eV.
    peak_params : dict, optional
        Detector parameters (default :data:`~napari_corefit.spectra.peaks.PEAK_DEFAULTS`).

    Returns
    -------
    ndarray, float64, shape (...)

    Examples
    --------
    >>> e = np.arange(270.0, 320.0, 0.1)
    >>> y = np.exp(-0.5 * ((e - 285.3) / 0.5) ** 2) + 2 * np.exp(-0.5 * ((e - 293) / 2) ** 2)
    >>> round(float(first_peak(e, y)), 2)
    285.3
    """
    energy, step = _axis(energy)
    params = dict(PEAK_DEFAULTS if peak_params is None else peak_params)
    lo, hi = float(search_window[0]), float(search_window[1])
    if not hi > lo:
        raise ValueError(f"peak search window must increase, got {search_window}")
    if lo > energy[-1] or hi < energy[0]:
        raise ValueError(f"peak search window {lo:g}-{hi:g} eV lies outside the data "
                         f"({energy[0]:.1f}-{energy[-1]:.1f} eV)")
    pad = params.get("half_width_ev", 0.4) + params.get("smooth_ev", 0.3) + 3 * step
    i0 = max(0, int(np.floor((lo - pad - energy[0]) / step)))
    i1 = min(energy.size, int(np.ceil((hi + pad - energy[0]) / step)) + 1)
    y = np.asarray(spectra)[..., i0:i1]
    return find_first_peak(energy[i0:i1], y, window=(lo, hi), **params)


def align_to_first_peak(energy, spectra, peaks, grid=SPECTRUM_GRID, normalise=True):
    """Sample every spectrum at its own ``peak + grid`` energies.

    Parameters
    ----------
    energy : array_like, shape (n,)
    spectra : array_like, shape (..., n)
    peaks : array_like, shape (...)
        First-peak energies, eV (NaN rows give zeros).
    grid : EnergyGrid
        Grid relative to the first peak.
    normalise : bool
        Area-normalise on the grid (``sum * grid.step == 1``).

    Returns
    -------
    ndarray, float32, shape (..., grid.n)
        Points outside the measured range are 0.

    Examples
    --------
    >>> e = np.arange(280.0, 310.0, 0.05)
    >>> y = np.exp(-0.5 * ((e - 286.0) / 0.5) ** 2)
    >>> a = align_to_first_peak(e, y[None], np.array([286.0]))
    >>> a.shape, round(float(SPECTRUM_GRID.values[np.argmax(a[0])]), 2)
    ((1, 160), 0.0)
    """
    energy, step = _axis(energy)
    peaks = np.asarray(peaks, dtype=np.float64)
    spectra = np.asarray(spectra)
    found = np.isfinite(peaks)
    out = _shifted_windows(energy, step, spectra, peaks, grid)
    if out is None:
        at = np.where(found, peaks, energy[0])[..., None] + grid.values
        out = interpolate_rows(energy, spectra, at)
    out = np.where(found[..., None], out, 0)
    if normalise:
        out = area_normalise(out, grid.step)
    return out.astype(np.float32, copy=False)


def _shifted_windows(energy, step, spectra, peaks, grid):
    """Fast path of the per-row interpolation when the grid step is a whole number of channels.

    Then every grid point of a row has the same fractional channel position, and a row's grid
    is a strided window of the spectrum that starts at one channel: a copy of contiguous
    windows and one linear blend, instead of a gather per point. Equal to
    :func:`~napari_corefit.spectra.grids.interpolate_rows` to float rounding. Rows whose grid
    leaves the measured range (or has no peak) go through ``interpolate_rows`` as before.
    Returns None when the steps do not fit.
    """
    ratio = grid.step / step
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) * grid.n > 1e-6 or spectra.ndim < 1:
        return None
    n = energy.size
    span = k * (grid.n - 1) + 2  # channels a row's grid touches
    if span > n:
        return None
    lead = spectra.shape[:-1]
    y = spectra.reshape(-1, n)
    pk = np.broadcast_to(peaks, lead).reshape(-1)
    t0 = (np.where(np.isfinite(pk), pk, energy[0]) + grid.start - energy[0]) / step
    i0 = np.floor(t0)
    frac = t0 - i0
    inside = np.isfinite(pk) & (i0 >= 0) & (i0 + span - 1 <= n - 1)
    ftype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64
    out = np.zeros((y.shape[0], grid.n), dtype=np.result_type(ftype, y.dtype))
    rows = np.flatnonzero(inside)
    if rows.size:
        windows = np.lib.stride_tricks.sliding_window_view(y, span, axis=-1)
        w = windows[rows, i0[rows].astype(np.intp)]  # (r, span) copies of contiguous runs
        lo, hi = w[:, 0:span - 1:k], w[:, 1:span:k]
        f = frac[rows, None].astype(ftype)
        out[rows] = lo + f * (hi - lo)
    rest = np.flatnonzero(~inside & np.isfinite(pk))
    if rest.size:
        out[rest] = interpolate_rows(energy, y[rest], pk[rest, None] + grid.values)
    return out.reshape(lead + (grid.n,))


def resample_absolute(energy, spectra, grid=ABSOLUTE_GRID, normalise=True):
    """Sample every spectrum on one absolute energy grid (calibrated data).

    Examples
    --------
    >>> e = np.arange(270.0, 320.0, 0.2)
    >>> r = resample_absolute(e, np.ones((2, e.size)))
    >>> r.shape, round(float(r[0].sum() * 0.1), 6)
    ((2, 300), 1.0)
    """
    energy, _ = _axis(energy)
    out = interpolate_rows(energy, np.asarray(spectra), grid.values)
    if normalise:
        out = area_normalise(out, grid.step)
    return out.astype(np.float32, copy=False)
