"""Simulated measured counts: edge + power-law background, Poisson noise (SPEC section 2).

The paper found Poisson noise dominant in its STEM-EELS data. A measured carbon K edge also sits on
a power-law background that the engine removes before the model sees the spectrum, and the noise of
that background stays in the result. So a training spectrum with noise is made as measured data
are: the noise-free absolute site spectrum is scaled to ``N`` edge counts, a power-law background
``E**-r`` is added at a signal-to-background ratio, Poisson counts are drawn, and then the engine's
own :func:`napari_corefit.spectra.pipeline.preprocess` removes the background, aligns to the first
peak and normalises (in :mod:`napari_corefit.training.dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_corefit.spectra.grids import EnergyGrid

__all__ = ["NoiseModel", "NOISE_AXIS", "simulate_counts", "parse_counts"]

#: A measured-like energy-loss axis: 250-330 eV in 0.1 eV channels (pre-edge window 250-280 eV).
NOISE_AXIS = EnergyGrid(250.0, 0.1, 800)


@dataclass(frozen=True)
class NoiseModel:
    """How simulated counts are drawn.

    Attributes
    ----------
    counts : float or None
        ``N``, the edge's counts (background excluded) in the model's input window (first
        peak - 1 eV to + 15 eV), as the engine measures ``edge_counts`` of a measured spectrum
        so that a noise-matched model can be chosen; None is noise-free.
    signal_to_background : float
        Edge counts over background counts, both summed over that same window.
    background_exponent : float
        ``r`` of the ``E**-r`` background (about 3 below the carbon K edge).
    axis : EnergyGrid
        The simulated spectrometer axis.
    """

    counts: float | None = None
    signal_to_background: float = 1.0
    background_exponent: float = 3.0
    axis: EnergyGrid = NOISE_AXIS

    @property
    def noisy(self) -> bool:
        return self.counts is not None

    def to_dict(self) -> dict:
        return {"counts": None if self.counts is None else float(self.counts),
                "signal_to_background": float(self.signal_to_background),
                "background_exponent": float(self.background_exponent),
                "axis": self.axis.to_dict()}

    @classmethod
    def from_dict(cls, d) -> "NoiseModel":
        if d is None:
            return cls()
        return cls(counts=None if d.get("counts") is None else float(d["counts"]),
                   signal_to_background=float(d.get("signal_to_background", 1.0)),
                   background_exponent=float(d.get("background_exponent", 3.0)),
                   axis=EnergyGrid.from_dict(d["axis"]) if "axis" in d else NOISE_AXIS)


def parse_counts(text) -> float | None:
    """``"1e4"`` -> 10000.0; ``"inf"``, ``"none"``, ``"0"`` -> None (noise-free).

    Examples
    --------
    >>> parse_counts("1e3"), parse_counts("inf")
    (1000.0, None)
    """
    if text is None:
        return None
    s = str(text).strip().lower()
    if s in ("", "inf", "none", "0", "clean"):
        return None
    value = float(s)
    if not np.isfinite(value):
        return None
    if value < 0:
        raise ValueError(f"a noise level is a positive total count, got {text!r}")
    return value


def simulate_counts(edge, peak_energy, model: NoiseModel, rng, window=(-1.0, 15.0)):
    """Poisson counts of edge + power-law background on ``model.axis``.

    Parameters
    ----------
    edge : array_like, shape (m, n_axis)
        Noise-free edge spectra on ``model.axis`` (any positive scale; each row is rescaled so
        that its counts inside ``window`` are ``model.counts``).
    peak_energy : array_like, shape (m,)
        Each row's first peak, eV (found on the noise-free spectrum by the engine's detector).
    model : NoiseModel
        Must have ``counts`` set.
    rng : numpy.random.Generator
    window : (float, float)
        The window of ``N`` and of the signal-to-background ratio, eV relative to
        ``peak_energy`` (the model input grid's range).

    Returns
    -------
    counts : ndarray, shape (m, n_axis), float32

    Examples
    --------
    >>> e = NOISE_AXIS.values
    >>> edge = np.exp(-0.5 * ((e - 285.0) / 0.5) ** 2)[None]
    >>> c = simulate_counts(edge, [285.0], NoiseModel(1e6, 0.5), np.random.default_rng(0))
    >>> inside = (e >= 284) & (e < 300)
    >>> bool(abs(c[0, inside].sum() / 3e6 - 1.0) < 0.01)
    True
    """
    if not model.noisy:
        raise ValueError("simulate_counts needs a NoiseModel with counts set")
    e = model.axis.values
    edge = np.asarray(edge, dtype=np.float64)
    ref = np.asarray(peak_energy, dtype=np.float64)
    if edge.shape[-1] != e.size:
        raise ValueError(f"edge has {edge.shape[-1]} channels, the noise axis {e.size}")
    inside = (e[None, :] >= ref[:, None] + window[0]) & (e[None, :] < ref[:, None] + window[1])
    edge_in = (edge * inside).sum(-1, keepdims=True)
    signal = np.where(edge_in > 0, edge * (model.counts / np.where(edge_in > 0, edge_in, 1)), 0.0)
    shape = e ** -model.background_exponent
    sig_in = (signal * inside).sum(-1)
    shape_in = (shape[None, :] * inside).sum(-1)
    scale = sig_in / model.signal_to_background / np.where(shape_in > 0, shape_in, 1)
    lam = signal + scale[:, None] * shape[None, :]
    return rng.poisson(lam).astype(np.float32)
