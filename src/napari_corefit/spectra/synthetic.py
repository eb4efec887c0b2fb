"""Synthetic carbon K-edge spectrum images for tests, benchmarks and training with noise.

A C K-edge-like shape (a pi* peak, a broad sigma* band and the ionisation step) on a power-law
background, optionally with Poisson noise. The shapes are only plausible, not physical: they exist
to exercise the preprocessing on data of the right form with a known answer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ck_edge_shape", "synthetic_si"]


def ck_edge_shape(energy, first_peak=285.0, sigma=0.5):
    """A carbon K-edge-like curve, peak height 1 at ``first_peak``, zero well below it.

    Parameters
    ----------
    energy : array_like, shape (n,) or (..., n)
        Energy loss, eV.
    first_peak : float or array_like, shape (...)
        Position of the pi* peak, eV (broadcast against the leading shape of ``energy``).
    sigma : float
        Gaussian width of the pi* peak and of the step's rise, eV.

    Returns
    -------
    ndarray, float64, same shape as ``np.broadcast(energy, first_peak[..., None])``

    Examples
    --------
    >>> e = np.arange(270.0, 320.0, 0.1)
    >>> y = ck_edge_shape(e)
    >>> round(float(e[np.argmax(y)]), 1), float(y[e < 280].max()) < 1e-6
    (285.0, True)
    """
    e = np.asarray(energy, dtype=np.float64)
    p = np.asarray(first_peak, dtype=np.float64)[..., None]
    d = e - p
    pi = np.exp(-0.5 * (d / sigma) ** 2)
    # ionisation step ~3.5 eV above pi*, an error-function rise, with a slow decay above it
    z = (d - 3.5) / (np.sqrt(2.0) * max(sigma, 0.3))
    from scipy.special import erf

    step = 0.25 * (1.0 + erf(z)) * np.exp(-np.clip(d - 3.5, 0, None) / 40.0)
    sig = 0.4 * np.exp(-0.5 * ((d - 8.0) / 2.2) ** 2)
    return pi + step + sig


def synthetic_si(shape=(8, 8), energy=None, edge_counts=2000.0, background_ratio=5.0, r=3.0,
                 peak=285.0, peak_jitter=0.0, noise=True, seed=0, dtype=np.float32):
    """A synthetic C K-edge spectrum image: edge + power-law background, Poisson counts.

    Parameters
    ----------
    shape : tuple of int
        Leading (navigation) shape.
    energy : array_like, shape (n,), optional
        Energy axis, eV (default 230 eV + 0.1 eV * arange(1024)).
    edge_counts : float or array_like, shape ``shape``
        Total edge counts N of each pixel within -1..15 eV of its first peak (0: no carbon).
    background_ratio : float
        Background counts / edge counts in the same window (the signal-to-background ratio is
        its inverse).
    r : float
        Power-law exponent of the background.
    peak : float
        First-peak energy, eV.
    peak_jitter : float
        Standard deviation of a random per-pixel shift of the edge, eV (energy drift).
    noise : bool
        Draw Poisson counts (True) or return the expected counts.
    seed : int
    dtype : numpy dtype

    Returns
    -------
    energy : ndarray, shape (n,)
    counts : ndarray, shape ``shape + (n,)``
    truth : dict
        ``peak`` (per-pixel first-peak energy), ``edge`` (expected edge counts per channel),
        ``background`` (expected background per channel).

    Examples
    --------
    >>> e, y, truth = synthetic_si((2, 3), noise=False)
    >>> y.shape, y.dtype
    ((2, 3, 1024), dtype('float32'))
    >>> win = (e >= 284.0) & (e < 300.0)
    >>> round(float(truth["edge"][0, 0, win].sum()))
    2000
    """
    rng = np.random.default_rng(seed)
    if energy is None:
        energy = 230.0 + 0.1 * np.arange(1024)
    energy = np.asarray(energy, dtype=np.float64)
    shape = tuple(shape)
    peaks = peak + peak_jitter * rng.standard_normal(shape)
    edge = ck_edge_shape(energy, peaks)
    win = (energy[None, :] >= (peaks.reshape(-1, 1) - 1.0)) & \
          (energy[None, :] < (peaks.reshape(-1, 1) + 15.0))
    edge_in = (edge.reshape(-1, energy.size) * win).sum(-1).reshape(shape)
    n_edge = np.broadcast_to(np.asarray(edge_counts, dtype=np.float64), shape)
    edge = edge * (n_edge / edge_in)[..., None]
    bkg_shape = energy ** -r
    bkg_in = (bkg_shape[None, :] * win).sum(-1).reshape(shape)
    # background level from the mean edge count, so a carbon-free pixel still has background
    level = background_ratio * max(float(np.mean(n_edge)), 1.0)
    background = (level / bkg_in)[..., None] * bkg_shape
    expected = edge + background
    counts = rng.poisson(expected).astype(dtype) if noise else expected.astype(dtype)
    return energy, counts, {"peak": peaks, "edge": edge, "background": background}
