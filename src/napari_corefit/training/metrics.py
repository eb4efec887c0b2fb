"""Scores of predicted DOS curves against the truth (issue 11; SPEC section 3).

All scores are computed on area-normalised curves (``sum * step == 1`` per curve on the output
grid). Predictions are clipped at zero and area-normalised first, as a DOS is never negative and
the targets are normalised that way. "MSE" is the mean over energy points of the squared error,
averaged over curves; the paper's MSE scale is not fully specified (SPEC section 3), so the
scale-free cosine similarity and peak-position scores stand beside it.
"""

from __future__ import annotations

import numpy as np

from napari_corefit.spectra.grids import DOS_GRID, area_normalise

__all__ = ["normalise_prediction", "per_curve_scores", "summarise", "score", "median_interval",
           "coverage"]

CHANNELS = ("occupied", "unoccupied")


def normalise_prediction(pred, step=DOS_GRID.step):
    """Clip at zero and area-normalise each curve, shape (..., n)."""
    return area_normalise(np.clip(np.asarray(pred, dtype=np.float64), 0.0, None), step)


def _cosine(a, b):
    num = (a * b).sum(-1)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def per_curve_scores(pred, truth, grid=DOS_GRID):
    """Per-row scores for each channel.

    Parameters
    ----------
    pred, truth : array_like, shape (m, 2, n)
        Occupied and unoccupied curves on ``grid`` (pred is normalised here, truth is used as is).
    grid : EnergyGrid

    Returns
    -------
    dict of ndarray
        ``mse`` (m, 3): occupied, unoccupied, total (the mean of the two area-normalised curves);
        ``cosine`` (m, 3); ``peak_error_ev`` (m, 2): distance between the maxima of predicted and
        true curve.

    Examples
    --------
    >>> t = np.zeros((1, 2, 300)); t[0, 0, 100] = t[0, 1, 200] = 10.0
    >>> s = per_curve_scores(t, t)
    >>> s["mse"].tolist(), s["cosine"].tolist(), s["peak_error_ev"].tolist()
    ([[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], [[0.0, 0.0]])
    """
    p = normalise_prediction(pred, grid.step)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3 or p.shape[1] != 2:
        raise ValueError(f"pred and truth must both be (m, 2, n), got {p.shape} and {t.shape}")
    p_all = np.concatenate([p, p.mean(1, keepdims=True)], axis=1)
    t_all = np.concatenate([t, t.mean(1, keepdims=True)], axis=1)
    mse = ((p_all - t_all) ** 2).mean(-1)
    cos = _cosine(p_all, t_all)
    peak = np.abs(p.argmax(-1) - t.argmax(-1)) * grid.step
    return {"mse": mse, "cosine": cos, "peak_error_ev": peak}


def summarise(scores, std=None, pred=None, truth=None, peak_tolerance_ev=0.5):
    """Summary numbers of :func:`per_curve_scores` (and of the ensemble spread, when given).

    Parameters
    ----------
    scores : dict
        From :func:`per_curve_scores`.
    std, pred, truth : array_like, shape (m, 2, n), optional
        Ensemble standard deviation, raw mean prediction and truth, for the calibration: the
        fraction of truth values inside ``pred +- 2 std``. Calibration is computed on the raw
        (un-normalised) mean, the curve the ensemble spread belongs to.
    peak_tolerance_ev : float

    Returns
    -------
    dict of float
    """
    out = {"n_curves": int(scores["mse"].shape[0])}
    names = CHANNELS + ("total",)
    for j, name in enumerate(names):
        c = scores["cosine"][:, j]
        out[f"mse_{name}"] = float(np.mean(scores["mse"][:, j]))
        out[f"cosine_median_{name}"] = float(np.nanmedian(c))
        out[f"cosine_p10_{name}"] = float(np.nanpercentile(c, 10))
    within = scores["peak_error_ev"] <= peak_tolerance_ev + 1e-9
    for j, name in enumerate(CHANNELS):
        out[f"peak_within_0p5ev_fraction_{name}"] = float(within[:, j].mean())
    out["peak_within_0p5ev_fraction"] = float(within.mean())
    if std is not None and pred is not None and truth is not None:
        std, pred, truth = (np.asarray(a, dtype=np.float64) for a in (std, pred, truth))
        inside = np.abs(truth - pred) <= 2.0 * std
        out["calibration_2sigma"] = float(inside.mean())
        for j, name in enumerate(CHANNELS):
            out[f"calibration_2sigma_{name}"] = float(inside[:, j].mean())
        # where the DOS is not negligible, the fraction that matters for reading a curve
        big = truth > 0.05 * truth.max(-1, keepdims=True)
        out["calibration_2sigma_signal"] = float(inside[big].mean()) if big.any() else float("nan")
        out["mean_sigma"] = float(std.mean())
    return out


def score(pred, truth, grid=DOS_GRID, std=None):
    """Per-curve scores and their summary in one call: ``(summary, per_curve)``."""
    per = per_curve_scores(pred, truth, grid)
    return summarise(per, std=std, pred=pred, truth=truth), per


def median_interval(values, groups, level=0.95, n_boot=2000, seed=0):
    """Bootstrap confidence interval of a median, resampling whole groups.

    A molecule's sites are near-copies of each other, so the test sites are not independent
    draws: resampling sites would make the interval too narrow. The groups (molecules) are drawn
    with replacement, each bringing all its values.

    Parameters
    ----------
    values : array_like, shape (m,)
        Per-row scores (NaN rows are ignored).
    groups : array_like, shape (m,)
        Group label of each row (e.g. the molecule index).
    level : float
        Coverage of the interval.
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling, so that a card is reproducible.

    Returns
    -------
    (float, float)
        Lower and upper percentile bounds of the bootstrapped median.

    Examples
    --------
    >>> lo, hi = median_interval([0.9, 0.9, 0.9, 0.9], [0, 0, 1, 1])
    >>> float(lo), float(hi)
    (0.9, 0.9)
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if v.shape != g.shape or v.ndim != 1:
        raise ValueError(f"values and groups must be 1-D of one length, got {v.shape}, {g.shape}")
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    if v.size == 0:
        return float("nan"), float("nan")
    # rows sorted by group: each group is one slice, and a resample is a list of slices
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    v = v[order]
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    medians = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, counts.size, counts.size)
        idx = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[pick], counts[pick])])
        medians[b] = np.median(v[idx])
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(medians, [tail, 100.0 - tail])
    return float(lo), float(hi)


def coverage(mean, std, truth, k=2.0) -> np.ndarray:
    """Fraction of truth values inside ``mean +- k std``, per curve (occupied, unoccupied).

    Parameters
    ----------
    mean, std, truth : array_like, shape (m, 2, n)
    k : float

    Returns
    -------
    ndarray, shape (2,)

    Examples
    --------
    >>> z = np.zeros((1, 2, 3))
    >>> coverage(z, z + 1, z + 1.5).tolist()
    [1.0, 1.0]
    """
    mean, std, truth = (np.asarray(a, dtype=np.float64) for a in (mean, std, truth))
    inside = np.abs(truth - mean) <= k * std
    return inside.mean(axis=(0, 2))
