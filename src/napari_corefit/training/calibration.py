"""Calibration of the ensemble spread: one factor per curve, fitted on validation molecules.

An ensemble of networks trained from different seeds disagrees less than it errs: its raw
standard deviation is too small (the bundled model of 2026-11-24 had only 25 % of the test truth
values inside mean +- 2 sigma, against the 95.4 % a calibrated Gaussian would have). The cheapest
honest fix is a scale factor ``s`` per curve (occupied, unoccupied): ``s`` is the value that puts
the nominal share of the *validation* truth values inside ``mean +- 2 s sigma``. Test molecules
never take part, so the test-set coverage stays a measurement.

The factor lives in the checkpoint's config (``uncertainty.sigma_scale``); the engine
(:func:`napari_corefit.model.inference.predict_spectra`) and ``corefit evaluate`` apply it, so
every sigma a user sees is the calibrated one.
"""

from __future__ import annotations

import math

import numpy as np

from napari_corefit.training.metrics import CHANNELS, coverage

__all__ = ["TWO_SIGMA_COVERAGE", "fit_sigma_scale", "coverage", "calibrate_model"]

#: Probability mass of a Gaussian inside +-2 sigma.
TWO_SIGMA_COVERAGE = math.erf(2.0 / math.sqrt(2.0))


def fit_sigma_scale(mean, std, truth, target=TWO_SIGMA_COVERAGE, k=2.0) -> np.ndarray:
    """Per-curve factor ``s`` such that a share ``target`` of truth values lies in mean +- k s std.

    It is the ``target`` quantile of ``|truth - mean| / (k std)`` over every energy point of
    every curve (the smallest factor that covers at least ``target`` of them). Points where the ensemble has no spread at all (std == 0) count as inside only
    when the error is 0 too.

    Parameters
    ----------
    mean, std, truth : array_like, shape (m, 2, n)
        Raw ensemble mean and standard deviation, and the truth, of validation rows.
    target : float
        Wanted coverage (default: a Gaussian's, 0.9545).
    k : float
        The interval's half-width in sigmas.

    Returns
    -------
    ndarray, shape (2,)
        Factor for the occupied and the unoccupied sigma.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(2000, 2, 10))
    >>> s = fit_sigma_scale(np.zeros_like(truth), np.full_like(truth, 0.5), truth)
    >>> np.round(s, 1).tolist()  # the spread was half the true error: scale by 2
    [2.0, 2.0]
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target coverage must be in (0, 1), got {target}")
    mean, std, truth = (np.asarray(a, dtype=np.float64) for a in (mean, std, truth))
    if mean.ndim != 3 or mean.shape[1] != 2 or not (mean.shape == std.shape == truth.shape):
        raise ValueError(f"mean, std and truth must all have shape (m, 2, n); got {mean.shape}, "
                         f"{std.shape}, {truth.shape}")
    if mean.shape[0] == 0:
        raise ValueError("no rows to calibrate on")
    err = np.abs(truth - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(std > 0, err / (k * std), np.where(err > 0, np.inf, 0.0))
    # the smallest factor that covers the target share (not an interpolated one below it)
    scale = np.quantile(ratio.transpose(1, 0, 2).reshape(2, -1), target, axis=1,
                        method="inverted_cdf")
    if not np.all(np.isfinite(scale)):
        raise ValueError("the ensemble has no spread at the required share of points (one member,"
                         " or identical members?); sigma cannot be calibrated")
    return scale


def calibrate_model(loaded, table, split="val", target=TWO_SIGMA_COVERAGE, rows=None) -> dict:
    """Fit :func:`fit_sigma_scale` for a loaded ensemble on a split of a database.

    Parameters
    ----------
    loaded : LoadedModel
        Ensemble of >= 2 members. Its current ``sigma_scale`` is ignored (the fit is on the raw
        spread).
    table : SiteTable
    split : str
        Rows to fit on (:func:`~napari_corefit.training.evaluate.select_rows`); ``val`` is the
        one that leaves the test molecules untouched.
    target : float
    rows : CurveSet, optional
        Already-built rows of that split.

    Returns
    -------
    dict
        The checkpoint's ``uncertainty`` block: ``sigma_scale`` per curve, how and on what it
        was fitted, the coverage before and after on those rows, and the quantiles of the
        calibrated relative spread ``sigma_rel`` there; its 95th percentile is
        ``high_sigma_threshold``, the engine's default for flagging a pixel as uncertain.
    """
    from napari_corefit.training.evaluate import evaluate_model

    if loaded.n_members < 2:
        raise ValueError("a one-member model has no ensemble spread to calibrate")
    ev = evaluate_model(loaded, table, split=split, rows=rows, raw_sigma=True)
    scale = fit_sigma_scale(ev.mean, ev.std, ev.truth, target=target)
    before = coverage(ev.mean, ev.std, ev.truth)
    std = ev.std * scale[None, :, None]
    after = coverage(ev.mean, std, ev.truth)
    # the engine's sigma_rel (napari_corefit.engine.dos_features) with the calibrated spread:
    # its high quantile on clean validation spectra is the default "high sigma" flag threshold
    sigma_rel = std.sum((-2, -1)) / np.abs(ev.mean.sum((-2, -1)))
    q = {f"p{p}": float(np.percentile(sigma_rel, p)) for p in (50, 95, 99)}
    return {
        "sigma_scale": {c: float(s) for c, s in zip(CHANNELS, scale)},
        "method": "per-curve factor: the target quantile of |truth - mean| / (2 sigma) "
                  "(napari_corefit.training.calibration.fit_sigma_scale)",
        "target_coverage_2sigma": float(target),
        "fitted_on": {"split": split, "n_rows": int(ev.summary["n_rows"]),
                      "n_molecules": int(ev.summary["n_molecules"]),
                      "noise_counts": ev.summary["noise_counts"]},
        "coverage_2sigma_before": {c: float(v) for c, v in zip(CHANNELS, before)},
        "coverage_2sigma_after": {c: float(v) for c, v in zip(CHANNELS, after)},
        "sigma_rel_quantiles": q,
        "high_sigma_threshold": q["p95"],
    }
