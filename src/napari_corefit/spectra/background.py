"""Power-law pre-edge background, fitted and removed for every pixel at once (SPEC section 2).

The estimate is the two-area method that exSpy's ``remove_background(background_type="PowerLaw",
fast=True)`` uses (HyperSpy's ``PowerLaw.estimate_parameters`` on a binned EELS axis): the window
is split into two halves at the same channel indices exSpy picks, the counts of each half are
summed, and ``A`` and ``r`` of ``A * E**-r`` follow in closed form. The result equals exSpy's to
float32 rounding, but it is computed as a few array operations over all pixels instead of a model
evaluation, and the subtraction ``counts - A * scale * E**-r`` runs block by block in cache
(numpy's SIMD float32 exp, on a few threads) without full-size temporaries.

Counts are per channel (a binned axis, as exSpy's ``EELSSpectrum`` has): the model value of a
channel is the power-law density times the channel width.

Arrays may also be ``torch`` tensors; then everything runs with torch on the tensor's device.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np


__all__ = [
    "PowerLawFit",
    "BACKGROUND_SEARCH_EV",
    "C_K_ONSET_EV",
    "default_background_window",
    "background_indices",
    "fit_powerlaw",
    "powerlaw_background",
    "subtract_powerlaw",
    "remove_powerlaw_background",
]

#: Where the default pre-edge window is looked for, eV (SPEC section 2).
BACKGROUND_SEARCH_EV = (240.0, 280.0)
#: Nominal carbon K-edge onset, eV; the default window ends at least 3 eV below it.
C_K_ONSET_EV = 284.0


class PowerLawFit(NamedTuple):
    """Per-pixel power-law parameters, background density ``A * E**-r`` in counts per eV.

    ``A`` has exSpy's meaning (the model value of a channel is ``A * E**-r * channel_width``).
    Pixels whose fit failed (a half-window with no positive counts, non-finite data) hold NaN.
    """

    A: np.ndarray
    r: np.ndarray

    @property
    def ok(self):
        """True where the fit succeeded."""
        return _isfinite(self.A) & _isfinite(self.r)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _isfinite(x):
    if _is_torch(x):
        import torch

        return torch.isfinite(x)
    return np.isfinite(x)


def _axis_step(energy):
    energy = np.asarray(energy, dtype=np.float64)
    if energy.ndim != 1 or energy.size < 2:
        raise ValueError(f"energy must be a 1-D axis with at least 2 channels, got shape "
                         f"{energy.shape}")
    step = (energy[-1] - energy[0]) / (energy.size - 1)
    if not step > 0:
        raise ValueError("energy must increase along the axis")
    return energy, step


def default_background_window(energy, edge_onset=C_K_ONSET_EV, search=BACKGROUND_SEARCH_EV,
                              gap=3.0, min_width=10.0):
    """The default pre-edge window: the widest part of ``search`` that the data covers.

    The window also ends at least ``gap`` eV below ``edge_onset`` and must be at least
    ``min_width`` eV wide (SPEC section 2).

    Parameters
    ----------
    energy : array_like, shape (n,)
        Energy-loss axis, eV.
    edge_onset : float
        Edge onset, eV (carbon K: 284 eV).
    search : (float, float)
        Range in which the window is placed, eV.
    gap, min_width : float
        Distance below the onset and smallest accepted width, eV.

    Returns
    -------
    (float, float)
        Window start and end, eV.

    Raises
    ------
    ValueError
        When the data do not cover a wide enough part of the range, naming the range.

    Examples
    --------
    >>> default_background_window(np.arange(230.0, 330.0, 0.1))
    (240.0, 280.0)
    >>> default_background_window(np.arange(262.0, 330.0, 0.1))
    (262.0, 280.0)
    """
    energy, _ = _axis_step(energy)
    lo = max(float(search[0]), float(energy[0]))
    hi = min(float(search[1]), float(edge_onset) - gap, float(energy[-1]))
    if hi - lo < min_width:
        raise ValueError(
            f"no power-law background window: the data cover {energy[0]:.1f}-{energy[-1]:.1f} "
            f"eV, but a window of at least {min_width:g} eV inside {search[0]:g}-{search[1]:g} "
            f"eV ending {gap:g} eV below the edge onset ({edge_onset:g} eV) is needed; the "
            f"usable part is {lo:.1f}-{hi:.1f} eV. Pass a window explicitly or acquire a wider "
            f"pre-edge range.")
    return (lo, hi)


def _closest(energy, value):
    # HyperSpy's value2index: the channel whose energy is closest to the value
    return int(np.abs(energy - value).argmin())


def background_indices(energy, window):
    """Channel indices ``(i1, i2, i3, i4)`` of exSpy's two-area estimate for ``window``.

    The first area sums channels ``i1:i2``, the second ``i3:i4``; the window is split in the
    middle exactly as HyperSpy's ``PowerLaw.estimate_parameters`` splits it.

    Examples
    --------
    >>> background_indices(np.arange(200.0, 300.0, 1.0), (240, 280))
    (40, 60, 60, 80)
    """
    energy, _ = _axis_step(energy)
    x1, x2 = float(window[0]), float(window[1])
    if not x2 > x1:
        raise ValueError(f"background window end must be above its start, got {window}")
    if x1 >= energy[-1] or x2 <= energy[0]:
        raise ValueError(f"background window {x1:g}-{x2:g} eV lies outside the data "
                         f"({energy[0]:.1f}-{energy[-1]:.1f} eV)")
    i1, i4 = 0, energy.size - 1
    if energy[0] < x1 <= energy[-1]:
        i1 = _closest(energy, x1)
    if energy[-1] > x2 >= energy[0]:
        i4 = _closest(energy, x2)
    if (i4 + i1) % 2:
        i4 -= 1
    if i4 == i1:
        i4 += 2
    if i4 >= energy.size or i4 - i1 < 4:
        raise ValueError(f"background window {x1:g}-{x2:g} eV holds fewer than 4 channels")
    i2 = i3 = (i1 + i4) // 2
    return i1, i2, i3, i4


def fit_powerlaw(energy, counts, window=None):
    """Fit ``A * E**-r`` to the pre-edge window of every spectrum (exSpy's two-area method).

    Parameters
    ----------
    energy : array_like, shape (n,)
        Uniform energy-loss axis, eV.
    counts : array_like or torch.Tensor, shape (..., n)
        Counts per channel.
    window : (float, float), optional
        Fit window, eV; default :func:`default_background_window`.

    Returns
    -------
    PowerLawFit
        ``A`` and ``r``, shape (...), float64; NaN where the fit failed.

    Examples
    --------
    >>> e = np.arange(230.0, 300.0, 0.1)
    >>> fit = fit_powerlaw(e, 1e9 * e ** -3.0 * 0.1)
    >>> round(float(fit.r), 2), round(float(fit.A) / 1e9, 2)
    (3.0, 1.01)
    """
    energy, _ = _axis_step(energy)
    if counts.shape[-1] != energy.size:
        raise ValueError(f"counts have {counts.shape[-1]} channels but the energy axis has "
                         f"{energy.size}")
    if window is None:
        window = default_background_window(energy)
    i1, i2, i3, i4 = background_indices(energy, window)
    x1, x2, x3, x4 = (float(energy[i]) for i in (i1, i2, i3, i4))
    if _is_torch(counts):
        import torch

        I1 = counts[..., i1:i2].sum(-1, dtype=torch.float64)
        I2 = counts[..., i3:i4].sum(-1, dtype=torch.float64)
        log = torch.log
    else:
        counts = np.asarray(counts)
        I1 = counts[..., i1:i2].sum(-1, dtype=np.float64)
        I2 = counts[..., i3:i4].sum(-1, dtype=np.float64)
        log = np.log
    good = (I1 > 0) & (I2 > 0) & _isfinite(I1) & _isfinite(I2)
    # failed pixels get neutral values here and NaN at the end, so no warnings are raised
    I1s = I1 * good + (~good) * 1.0
    I2s = I2 * good + (~good) * 1.0
    r = 2.0 * log(I1s / I2s * ((x4 - x3) / (x2 - x1))) / np.log(x4 * x3 / x2 / x1)
    k = 1.0 - r
    # k == 0 (r == 1) is a removable singularity of (x2**k - x1**k) / k: use log(x2 / x1) there
    small = abs(k) < 1e-9
    ks = k + small * 1e-9
    A1 = ks * I1s / (x2 ** ks - x1 ** ks)
    A2 = ks * I2s / (x4 ** ks - x3 ** ks)
    A = (A1 * I1s + A2 * I2s) / (I1s + I2s)
    nan = float("nan")
    if _is_torch(counts):
        import torch

        good = good & torch.isfinite(A) & torch.isfinite(r)
        A = torch.where(good, A, nan)
        r = torch.where(good, r, nan)
    else:
        good = good & np.isfinite(A) & np.isfinite(r)
        A = np.where(good, A, nan)
        r = np.where(good, r, nan)
    return PowerLawFit(A, r)


def powerlaw_background(energy, fit):
    """Background counts per channel of a fit, shape ``fit.A.shape + (n,)`` (0 where it failed).

    Examples
    --------
    >>> e = np.arange(230.0, 300.0, 0.1)
    >>> y = 1e9 * e ** -3.0 * 0.1
    >>> bool(np.allclose(powerlaw_background(e, fit_powerlaw(e, y)), y, rtol=2e-3))
    True
    """
    energy, step = _axis_step(energy)
    A = np.nan_to_num(np.asarray(fit.A, dtype=np.float64))
    r = np.nan_to_num(np.asarray(fit.r, dtype=np.float64))
    return A[..., None] * step * energy ** -r[..., None]


def subtract_powerlaw(energy, counts, fit, out=None, step=None):
    """``counts - background`` in float32, in one pass; rows whose fit failed are left as they are.

    Parameters
    ----------
    energy : array_like, shape (n,)
        Energies of the channels in ``counts`` (may be a crop of the fitted axis).
    counts : array_like or torch.Tensor, shape (..., n)
    fit : PowerLawFit
        Parameters with shape (...).
    out : ndarray, optional
        float32 array of the same shape to write into (may be ``counts`` itself).
    step : float, optional
        Channel width, eV (default: from ``energy``; give it when ``energy`` has one channel).

    Returns
    -------
    ndarray or torch.Tensor, float32, shape (..., n)
    """
    energy = np.asarray(energy, dtype=np.float64)
    if step is None:
        _, step = _axis_step(energy)
    # B * exp(-r * (ln E - ln E_ref)) keeps the exponent small, so float32 loses nothing
    lref = float(np.log(energy[energy.size // 2]))
    d = np.log(energy) - lref
    if _is_torch(counts):
        import torch

        A = torch.nan_to_num(torch.as_tensor(fit.A, dtype=torch.float64, device=counts.device))
        r = torch.nan_to_num(torch.as_tensor(fit.r, dtype=torch.float64, device=counts.device))
        B = (A * step * torch.exp(-r * lref)).to(torch.float32)[..., None]
        dt = torch.as_tensor(d, dtype=torch.float32, device=counts.device)
        res = counts.to(torch.float32) - B * torch.exp(-r.to(torch.float32)[..., None] * dt)
        if out is not None:
            out.copy_(res)
            return out
        return res
    counts = np.asarray(counts)
    A = np.nan_to_num(np.asarray(fit.A, dtype=np.float64))
    r = np.nan_to_num(np.asarray(fit.r, dtype=np.float64))
    # log of the reference level; a failed fit (A = 0) gives -inf, i.e. a zero background
    with np.errstate(divide="ignore"):
        lB = np.where(A > 0, np.log(np.where(A > 0, A, 1.0) * step) - r * lref, -np.inf)
    if out is None:
        out = np.empty(counts.shape, dtype=np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32
              and out.shape == counts.shape and out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 array of shape {counts.shape}")
    n = counts.shape[-1]
    c2 = counts.reshape(-1, n)
    o2 = out.reshape(-1, n)
    _subtract_rows(c2, o2, lB.astype(np.float32).reshape(-1, 1),
                   r.astype(np.float32).reshape(-1, 1), d.astype(np.float32))
    return out


#: Rows per block: a block and its temporary stay in the per-core cache (~256 kB each).
_BLOCK_BYTES = 1 << 18


def _subtract_rows(c, out, lB, r, d, threads=None):
    """out = c - exp(lB - r * d), in cache-sized blocks of rows, on a few threads.

    numpy's float32 exp is SIMD-vectorised; done block by block the four passes stay in cache,
    so the whole array is read and written once, with no full-size temporaries. numpy releases
    the GIL, so the blocks run in parallel on threads.
    """
    m, n = c.shape
    rows = max(1, _BLOCK_BYTES // (4 * max(n, 1)))
    starts = list(range(0, m, rows))
    threads = min(len(starts), threads or _THREADS)

    def work(k):
        tmp = np.empty((rows, n), np.float32)
        for i0 in starts[k::threads]:
            i1 = min(i0 + rows, m)
            t = tmp[:i1 - i0]
            np.multiply(r[i0:i1], d, out=t)
            np.subtract(lB[i0:i1], t, out=t)
            np.exp(t, out=t)
            np.subtract(c[i0:i1], t, out=out[i0:i1], casting="same_kind")

    if threads <= 1:
        work(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))


_THREADS = max(1, min(os.cpu_count() or 1, 8))


def remove_powerlaw_background(energy, counts, window=None, out=None):
    """Fit and subtract a power-law background from every spectrum.

    Equal to exSpy's ``remove_background(signal_range=window, background_type="PowerLaw",
    fast=True)`` on an ``EELSSpectrum`` with the same data (to float32 rounding).

    Parameters
    ----------
    energy : array_like, shape (n,)
        Uniform energy-loss axis, eV.
    counts : array_like or torch.Tensor, shape (..., n)
        Counts per channel; any leading shape.
    window : (float, float), optional
        Pre-edge fit window, eV; default :func:`default_background_window` (SPEC section 2).
    out : ndarray, optional
        float32 output array (may be ``counts`` itself when that is float32).

    Returns
    -------
    subtracted : ndarray or torch.Tensor, float32, shape (..., n)
        Background-subtracted counts; rows whose fit failed are returned unchanged.
    fit : PowerLawFit
        ``A``, ``r`` per pixel (NaN where the fit failed).

    Examples
    --------
    >>> e = np.arange(230.0, 320.0, 0.1)
    >>> bkg = 1e10 * e ** -3.0 * 0.1
    >>> edge = 50.0 * (e > 285)
    >>> y, fit = remove_powerlaw_background(e, np.stack([bkg + edge, bkg]))
    >>> y.dtype, round(float(fit.r[0]), 2)
    (dtype('float32'), 3.0)
    >>> round(float(y[0, e > 290].mean()), 1), bool(abs(y[1]).max() < 1e-3 * bkg.max())
    (50.0, True)
    """
    if window is None:
        window = default_background_window(energy)
    fit = fit_powerlaw(energy, counts, window)
    return subtract_powerlaw(energy, counts, fit, out=out), fit
