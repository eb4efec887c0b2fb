"""Evaluate a checkpoint on a database: predictions, per-curve scores and their summary."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from napari_corefit.spectra.grids import EnergyGrid
from napari_corefit.training.dataset import CurveSet, build_curves, make_inputs
from napari_corefit.training.loop import predict
from napari_corefit.training.metrics import coverage, per_curve_scores, summarise
from napari_corefit.training.noise import NoiseModel
from napari_corefit.training.splits import split_from_dict

__all__ = ["Evaluation", "evaluate_model", "select_rows", "split_molecules",
           "preprocess_config_of", "reuse_rows", "EVALUATION_SEED"]

#: Noisy test inputs are drawn with this seed, so that evaluations are repeatable.
EVALUATION_SEED = 7


@dataclass
class Evaluation:
    """What :func:`evaluate_model` measured.

    ``summary`` is the JSON-able dict (``n_sites``, ``n_molecules``, ``mse_occupied``, ...);
    the arrays are per row: ``truth``, ``mean`` (raw ensemble mean), ``std`` (m, 2, n),
    ``scores`` (from :func:`~napari_corefit.training.metrics.per_curve_scores`), ``rows``
    (the evaluated :class:`CurveSet`) and ``inputs`` (m, n_in).
    """

    summary: dict
    truth: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    scores: dict
    rows: CurveSet
    inputs: np.ndarray


def preprocess_config_of(config):
    """The PreprocessConfig a checkpoint was trained with (None when it stores none)."""
    d = config.get("preprocess")
    if d is None:
        return None
    from napari_corefit.spectra.pipeline import PreprocessConfig

    return PreprocessConfig.from_dict(d)


def split_molecules(table, split, config):
    """Molecule indices (into ``table.molecules``) of a split name, or None for ``all``.

    ``test``, ``val`` and ``train`` recompute the checkpoint's own split settings on this
    database; ``extrapolation`` is every molecule with 21-26 atoms (H counted).
    """
    if split == "all":
        return None
    keys = np.asarray(table.molecules["key"]).astype(str)
    n_atoms = np.asarray(table.molecules["n_atoms"])
    if split == "extrapolation":
        return np.flatnonzero((n_atoms >= 21) & (n_atoms <= 26))
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; use all, test, val, train or extrapolation")
    settings = config.get("split")
    if not settings:
        raise ValueError("this model records no split settings; use --split all")
    return np.asarray(getattr(split_from_dict(settings, keys, n_atoms), split))


def select_rows(cs: CurveSet, table, split, config):
    """Rows of ``cs`` for a split name: ``all``, ``test``, ``val``, ``train`` (the checkpoint's
    own split settings recomputed on this database) or ``extrapolation`` (21-26 atoms)."""
    molecules = split_molecules(table, split, config)
    return cs if molecules is None else cs.in_molecules(molecules)


#: rows built by evaluate_model inside :func:`reuse_rows` (None outside it)
_ROWS_CACHE: dict | None = None


@contextmanager
def reuse_rows():
    """Within this block, evaluations of the same rows broaden them once.

    A model card scores some forty checkpoints on one test split; they share grids, broadening
    and split, so the rows (and the noise axis' absolute spectra) are built once and reused.
    Rows are keyed by table identity, level, grids, broadening and molecules; the cache is
    dropped when the block ends.
    """
    global _ROWS_CACHE
    outer, _ROWS_CACHE = _ROWS_CACHE, ({} if _ROWS_CACHE is None else _ROWS_CACHE)
    try:
        yield
    finally:
        _ROWS_CACHE = outer


def spectra_recipe(cfg):
    """The :class:`~napari_corefit.backend.curves.Continuum` a model was trained on (its
    config's ``spectra``); None (discrete lines) for models trained before the continuum."""
    from napari_corefit.backend.curves import Continuum

    c = (cfg.get("spectra") or {}).get("continuum")
    return None if c is None else Continuum(**c)


def _cached_rows(table, level, in_grid, out_grid, sigma, noise_axis, molecules, continuum=None):
    def build():
        return build_curves(table, level=level, input_grid=in_grid, output_grid=out_grid,
                            sigma=sigma, noise_axis=noise_axis, molecules=molecules,
                            allow_empty=True, continuum=continuum)

    if _ROWS_CACHE is None:
        return build()
    mol_key = None if molecules is None else np.asarray(molecules, np.int64).tobytes()
    key = (id(table), level, in_grid, out_grid, sigma, mol_key,
           None if continuum is None else tuple(sorted(continuum.as_dict().items())))
    if noise_axis is not None:
        axes = [noise_axis]
    else:  # rows that also hold absolute spectra serve a noise-free request as well
        axes = [None] + [k[-1] for k in _ROWS_CACHE if k[:-1] == key and k[-1] is not None]
    for axis in axes:
        table_then, rows = _ROWS_CACHE.get((*key, axis), (None, None))
        if table_then is table:
            return rows
    rows = build()
    # the table is kept beside its rows, so that its id cannot pass to another table
    _ROWS_CACHE[(*key, noise_axis)] = (table, rows)
    return rows


def evaluate_model(loaded, table, split="test", level=None, noise=None, device=None,
                   seed=EVALUATION_SEED, rows: CurveSet | None = None,
                   raw_sigma=False) -> Evaluation:
    """Predict every selected row of a database with a loaded model and score it.

    Parameters
    ----------
    loaded : LoadedModel
    table : SiteTable
    split : str
        See :func:`select_rows`.
    level : {"site", "molecule"}, optional
        Default: the level the model was trained at.
    noise : NoiseModel, optional
        Default: the noise the model was trained at (noise-free models see noise-free inputs).
    device : str, optional
        Default: the model's device.
    seed : int
        Seed of the noise draw.
    rows : CurveSet, optional
        Already-built rows (skips broadening; must match ``level`` and the model's grids).
    raw_sigma : bool
        Return and score the raw ensemble spread instead of the calibrated one (the model's
        ``sigma_scale``; see :mod:`napari_corefit.training.calibration`). The summary always
        gives the raw coverage as ``calibration_2sigma_raw``.

    Returns
    -------
    Evaluation
    """
    cfg = loaded.config
    level = level or cfg.get("level", "site")
    if noise is None:
        noise = NoiseModel.from_dict(cfg.get("noise"))
    in_grid = EnergyGrid.from_dict(cfg["input_grid"])
    out_grid = EnergyGrid.from_dict(cfg["output_grid"])
    sigma = float(cfg.get("broadening_ev", 0.5))
    pp = preprocess_config_of(cfg)
    molecules = split_molecules(table, split, cfg)
    if rows is None:
        need_absolute = noise.noisy or (pp is not None and pp.savgol_window_ev is not None)
        # broaden only the split's molecules: a test split is a tenth of the database, and a
        # model card evaluates dozens of models on it
        rows = _cached_rows(table, level, in_grid, out_grid, sigma,
                            noise.axis if need_absolute else None, molecules,
                            spectra_recipe(cfg))
    if molecules is not None:
        rows = rows.in_molecules(molecules)
    if len(rows) == 0:
        raise ValueError(f"no {level}-level rows in split {split!r} of this database")
    x, usable = make_inputs(rows, noise, pp, np.random.default_rng(seed), input_grid=in_grid)
    rows, x = rows.subset(usable), x[usable]
    dev = device or loaded.device
    ens = loaded.ensemble.to(dev)
    y = predict(ens, x, dev)  # (M, m, 2, n)
    mean = y.mean(0)
    std = y.std(0, ddof=1) if y.shape[0] > 1 else np.zeros_like(mean)
    raw_coverage = None
    scale = getattr(loaded, "sigma_scale", None)
    if y.shape[0] > 1:
        raw_coverage = float(coverage(mean, std, rows.targets).mean())
        if scale is not None and not raw_sigma:
            std = std * np.asarray(scale, std.dtype)[None, :, None]
    scores = per_curve_scores(mean, rows.targets, out_grid)
    # one member has no spread: calibration would be meaningless, so it is not reported
    summary = summarise(scores, std=std if y.shape[0] > 1 else None, pred=mean,
                        truth=rows.targets)
    if raw_coverage is not None:
        summary["calibration_2sigma_raw"] = raw_coverage
        summary["sigma_scale"] = [float(v) for v in (np.ones(2) if raw_sigma or scale is None
                                                     else scale)]
    n_sites = len(rows) if level == "site" else int(
        np.isin(np.asarray(table.sites["molecule"]), rows.molecule).sum())
    summary = {"level": level, "split": split, "n_rows": len(rows), "n_sites": int(n_sites),
               "n_molecules": int(np.unique(rows.molecule).size),
               "n_unusable": int((~usable).sum()),
               "noise_counts": noise.counts, "n_members": int(y.shape[0]), **summary}
    return Evaluation(summary, rows.targets, mean, std, scores, rows, x)
