"""Energy grids, stick broadening and row-wise resampling (SPEC section 2).

Every grid in the project is an :class:`EnergyGrid`: ``start + step * arange(n)``, endpoint
excluded. The defaults of the science contract live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "EnergyGrid",
    "SPECTRUM_GRID",
    "DOS_GRID",
    "ABSOLUTE_GRID",
    "BROADENING_EV",
    "broaden",
    "broaden_ragged",
    "interpolate_rows",
    "area_normalise",
]


@dataclass(frozen=True)
class EnergyGrid:
    """A uniform energy grid ``start + step * arange(n)`` in eV (endpoint excluded).

    Examples
    --------
    >>> g = EnergyGrid(-1.0, 0.1, 160)
    >>> g.values[:3]
    array([-1. , -0.9, -0.8])
    >>> round(g.stop, 6)
    15.0
    """

    start: float
    step: float
    n: int

    def __post_init__(self):
        if self.n <= 0:
            raise ValueError(f"an energy grid needs n > 0 points, got {self.n}")
        if not self.step > 0:
            raise ValueError(f"an energy grid needs a positive step, got {self.step}")

    @property
    def values(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n, dtype=np.float64)

    @property
    def stop(self) -> float:
        """First energy past the grid (``start + step * n``)."""
        return self.start + self.step * self.n

    def shifted(self, delta: float) -> "EnergyGrid":
        return EnergyGrid(self.start + delta, self.step, self.n)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyGrid":
        return cls(float(d["start"]), float(d["step"]), int(d["n"]))


#: Model input: relative to the first peak of the spectrum (SPEC section 2).
SPECTRUM_GRID = EnergyGrid(-1.0, 0.1, 160)
#: Model output: relative to the Fermi level (midpoint of HOMO and LUMO).
DOS_GRID = EnergyGrid(-15.0, 0.1, 300)
#: Absolute energy-loss grid for calibrated data.
ABSOLUTE_GRID = EnergyGrid(280.0, 0.1, 300)
#: Gaussian standard deviation for spectra and DOS, eV.
BROADENING_EV = 0.5

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def broaden(positions, weights, energies, sigma=BROADENING_EV):
    """Broaden sticks with unit-area Gaussians of standard deviation ``sigma``.

    Parameters
    ----------
    positions, weights : array_like, shape (k,)
        Stick energies (eV) and weights.
    energies : array_like, shape (n,)
        Energies at which the curve is evaluated.
    sigma : float
        Gaussian standard deviation in eV.

    Returns
    -------
    curve : ndarray, shape (n,)

    Examples
    --------
    >>> e = np.linspace(-3, 3, 601)
    >>> y = broaden([0.0], [2.0], e, sigma=0.5)
    >>> round(float(y.sum() * (e[1] - e[0])), 3)
    2.0
    """
    positions = np.asarray(positions, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if positions.size == 0:
        return np.zeros_like(energies)
    z = (energies[None, :] - positions[:, None]) / sigma
    return weights @ np.exp(-0.5 * z * z) / (sigma * _SQRT_2PI)


def broaden_ragged(offsets, positions, weights, energies, sigma=BROADENING_EV, shifts=None,
                   chunk=200_000):
    """Broaden many ragged stick lists at once.

    Row ``r`` uses sticks ``offsets[r]:offsets[r+1]``. With ``shifts``, row ``r`` is evaluated at
    ``energies + shifts[r]`` (each row on its own grid, e.g. relative to its own first peak).

    Parameters
    ----------
    offsets : array_like of int, shape (m + 1,)
    positions, weights : array_like, shape (offsets[-1],)
    energies : array_like, shape (n,)
    sigma : float or array_like, shape (offsets[-1],)
        Gaussian standard deviation (eV), one for all sticks or one per stick (energy-dependent
        widths, e.g. lifetime broadening above an ionisation threshold).
    shifts : array_like, shape (m,), optional
    chunk : int
        Number of sticks evaluated per block (bounds memory to ``chunk * n`` floats).

    Returns
    -------
    curves : ndarray, shape (m, n), float64
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    m = len(offsets) - 1
    out = np.zeros((m, energies.size))
    counts = np.diff(offsets)
    row_of_stick = np.repeat(np.arange(m), counts)
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), positions.shape)
    for s0 in range(0, positions.size, chunk):
        s1 = min(s0 + chunk, positions.size)
        rows = row_of_stick[s0:s1]
        grid = energies[None, :]
        if shifts is not None:
            grid = grid + shifts[rows][:, None]
        sig = sigma[s0:s1, None]
        z = (grid - positions[s0:s1, None]) / sig
        contrib = np.exp(-0.5 * z * z) * (weights[s0:s1, None] / (sig * _SQRT_2PI))
        _add_rows(out, rows, contrib)
    return out


def _add_rows(out, rows, contrib):
    # rows are sorted (ragged layout), so a segmented sum is exact and much faster than add.at
    if rows.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    out[rows[starts]] += np.add.reduceat(contrib, starts, axis=0)


def interpolate_rows(x, y, x_new):
    """Linear interpolation of many rows sampled on one uniform axis.

    Parameters
    ----------
    x : array_like, shape (n,)
        Uniform, increasing sample positions shared by all rows.
    y : array_like, shape (..., n)
    x_new : array_like, shape (k,) or (..., k)
        Where to evaluate; a per-row array gives each row its own positions (alignment).
        Positions outside ``x`` (or NaN) get 0 (nothing was measured there).

    Returns
    -------
    ndarray, shape (..., k)

    Examples
    --------
    >>> interpolate_rows(np.arange(4.0), np.array([[0., 1, 2, 3]]), np.array([0.5, 2.25]))
    array([[0.5 , 2.25]])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    x_new = np.asarray(x_new, dtype=np.float64)
    dx = (x[-1] - x[0]) / (x.size - 1)
    t = (x_new - x[0]) / dx
    lead = y.shape[:-1]
    t = np.broadcast_to(t, lead + t.shape[-1:])
    # NaN positions (a row whose alignment peak was not found) give 0 like positions outside,
    # without casting NaN to an integer
    finite = np.isfinite(t)
    t = np.where(finite, t, -1.0)
    i0 = np.floor(t).astype(np.int64)
    frac = (t - i0).astype(y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64)
    inside = finite & (i0 >= 0) & (i0 <= x.size - 1) & (t <= x.size - 1)
    i0c = np.clip(i0, 0, x.size - 1)
    i1c = np.clip(i0 + 1, 0, x.size - 1)
    y0 = np.take_along_axis(y, i0c, axis=-1)
    y1 = np.take_along_axis(y, i1c, axis=-1)
    out = y0 + frac * (y1 - y0)
    return np.where(inside, out, 0)


def area_normalise(y, step, axis=-1):
    """Scale curves so that ``sum(y) * step == 1`` along ``axis``; all-zero rows stay zero.

    Examples
    --------
    >>> area_normalise(np.array([1.0, 3.0]), 0.5)
    array([0.5, 1.5])
    """
    y = np.asarray(y, dtype=np.float64) if not np.issubdtype(np.asarray(y).dtype, np.floating) \
        else np.asarray(y)
    area = y.sum(axis=axis, keepdims=True) * step
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, y / np.where(area > 0, area, 1), 0)
