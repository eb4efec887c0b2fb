"""One training run from a database directory to a checkpoint directory (``corefit train``)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from napari_corefit.model.checkpoint import (database_fingerprint, fit_ood, load_model,
                                             save_model, update_config)
from napari_corefit.model.network import default_arch
from napari_corefit.spectra.grids import BROADENING_EV, DOS_GRID, SPECTRUM_GRID
from napari_corefit.spectra.peaks import PEAK_DEFAULTS
from napari_corefit.training.calibration import calibrate_model
from napari_corefit.training.dataset import (build_curves, default_preprocess_config,
                                             make_inputs)
from napari_corefit.training.evaluate import evaluate_model
from napari_corefit.training.loop import TrainSettings, train_ensemble
from napari_corefit.training.noise import NoiseModel
from napari_corefit.training.splits import make_split, subsample_train

__all__ = ["train_model", "database_recipe"]

#: Subdirectory of a checkpoint directory where finished members wait while an ensemble trains.
MEMBER_DIR = "members-in-progress"


def database_recipe(table):
    """The recipe dict a SiteTable carries (file attributes of its shards), or None."""
    for name in ("recipe", "attrs"):
        r = getattr(table, name, None)
        if r is None:
            continue
        if hasattr(r, "to_dict"):
            return r.to_dict()
        if isinstance(r, dict):
            return r.get("recipe", r) if name == "attrs" else r
    return None


def _recipe_mix(db):
    """``{"recipes": [...]}`` when the database's shards were made with more than one recipe
    (the recipe-2 records of molecules not yet computed with recipe 3, for example)."""
    from napari_corefit.backend.storage import recipe_site_counts

    if db is None:
        return {}
    counts = recipe_site_counts(db)
    return {"recipes": counts} if len(counts) > 1 else {}


def _log(msg, progress):
    if progress:
        print(msg, file=sys.stderr)


def train_model(db, out, level="site", noise=None, n_members=5, arch="paper_mlp",
                arch_options=None, split="random", seed=0, settings=None, progress=True,
                table=None, preprocess_config=None, train_fraction=1.0, member_cache=None,
                only_members=None, continuum="default"):
    """Train an ensemble on a database, evaluate it on its test molecules and save it.

    Parameters
    ----------
    db : path
        Database directory (``napari_corefit.backend.load_database``).
    out : path
        Checkpoint directory to write.
    level : {"site", "molecule"}
    noise : NoiseModel, optional
        Noise-free when None.
    n_members : int
    arch : str
        Architecture name (``napari_corefit.model.network.ARCHITECTURES``).
    arch_options : dict, optional
        Extra settings of the architecture (e.g. ``{"dropout": 0.1}``).
    split : str
        ``random``, ``extrapolation`` or ``extrapolation_18_20``.
    seed : int
        Seed of the split and of the first member (member i uses ``seed + i``).
    settings : TrainSettings, optional
    progress : bool
    table : SiteTable, optional
        Already loaded database (else loaded from ``db``).
    preprocess_config : PreprocessConfig, optional
        The engine's preprocessing the model is trained for (default: its defaults), e.g.
        with Savitzky-Golay smoothing; stored in the checkpoint.
    train_fraction : float
        Train on this share of the split's training molecules (a learning curve); validation
        and test molecules are the same as with 1.
    member_cache : path, optional
        Directory of finished members kept across models (a study's models share it): a member
        trained before from the same architecture, settings, seed and rows is reused. Without
        it, members wait in ``out/members-in-progress`` until the ensemble is saved, so that a
        stopped run resumes at the member it was training.
    continuum : Continuum or None
        How sticks become spectra (``backend.curves``): the realistic recipe (``CONTINUUM``,
        the default) or None for the discrete lines; recorded in the config (``spectra``).
    only_members : list of int, optional
        Train just these members (indices, member i has seed ``settings.seed + i``) into
        ``member_cache`` and return None; nothing is written to ``out``. A later call without
        it assembles the ensemble from the cache: an ensemble's members can train in separate
        processes (``training.study`` with ``jobs`` > 1 does).

    Returns
    -------
    LoadedModel or None
        The saved checkpoint, loaded back (so what is returned is what was written); None with
        ``only_members``.
    """
    from napari_corefit.backend import load_database

    t0 = time.perf_counter()
    settings = settings or TrainSettings(seed=seed)
    noise = noise or NoiseModel()
    if table is None:
        table = load_database(db)
    pp = preprocess_config or default_preprocess_config()
    need_absolute = noise.noisy or pp.savgol_window_ev is not None
    from napari_corefit.backend.curves import CONTINUUM

    if isinstance(continuum, str) and continuum == "default":
        continuum = CONTINUUM
    rows = build_curves(table, level=level, input_grid=SPECTRUM_GRID, output_grid=DOS_GRID,
                        sigma=BROADENING_EV, noise_axis=noise.axis if need_absolute else None,
                        continuum=continuum)
    keys = np.asarray(table.molecules["key"]).astype(str)
    n_atoms = np.asarray(table.molecules["n_atoms"])
    eligible = np.zeros(len(keys), bool)
    eligible[rows.molecule] = True
    sp = make_split(split, keys, n_atoms, seed=seed, eligible=eligible)
    if train_fraction != 1.0:
        sp = subsample_train(sp, keys, train_fraction)
    train, val, test = (rows.in_molecules(getattr(sp, k)) for k in ("train", "val", "test"))
    _log(f"{level}-level rows: {len(rows)} from {eligible.sum()} molecules; split {split}: "
         f"train {len(train)}, validation {len(val)}, test {len(test)} rows", progress)
    if len(train) == 0:
        raise ValueError(f"split {split!r} leaves no training rows in {db}")
    if len(val) == 0:
        # a database of a handful of molecules: early stopping on training rows is all there is
        _log("warning: no validation molecules (database too small); early stopping on the "
             "training rows", progress)
        val = train
    arch_dict = {**default_arch(arch, SPECTRUM_GRID.n, DOS_GRID.n), **(arch_options or {})}
    # finished members wait here until the ensemble is saved: a run stopped part-way (a crash,
    # the end of a session) resumes at the member it was training when started again
    member_dir = Path(out) / MEMBER_DIR if member_cache is None else Path(member_cache)
    if only_members is not None:
        if member_cache is None:
            raise ValueError("only_members needs a member_cache to keep the members in")
        train_ensemble(arch_dict, train, val, settings, n_members, noise=noise,
                       preprocess_config=pp, progress=progress, member_dir=member_dir,
                       only=list(only_members))
        return None
    ensemble, histories = train_ensemble(arch_dict, train, val, settings, n_members, noise=noise,
                                         preprocess_config=pp, progress=progress,
                                         member_dir=member_dir)
    x_train, ok = make_inputs(train, noise, pp, np.random.default_rng(seed))
    ood = fit_ood(x_train[ok])
    config = {
        "arch": arch_dict,
        "level": level,
        "input_grid": SPECTRUM_GRID.to_dict(),
        "output_grid": DOS_GRID.to_dict(),
        "broadening_ev": BROADENING_EV,
        # how sticks became spectra (backend.curves.Continuum; evaluation rebuilds the same)
        "spectra": {"continuum": None if continuum is None else continuum.as_dict()},
        "alignment": "input grid relative to the first peak (napari_corefit.spectra.peaks."
                     "find_first_peak); output grid relative to E_F (HOMO/LUMO midpoint)",
        "normalisation": "inputs and both output curves area-normalised (sum * step == 1)",
        "preprocess": pp.to_dict(),
        "peak": dict(PEAK_DEFAULTS),
        "noise_counts": noise.counts,
        "noise": noise.to_dict(),
        "database": {"path": str(db), "n_molecules": int(eligible.sum()),
                     "n_rows": len(rows), **database_fingerprint(db, n_sites=len(
                         table.sites["ok"]))},
        "recipe": database_recipe(table),
        **_recipe_mix(db),
        "split": sp.settings(),
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "training": {**settings.to_dict(), "n_members": n_members,
                     # per-epoch curves go to history.npz, not into config.json
                     "members": [{k: v for k, v in h.items()
                                  if k not in ("train_loss", "val_loss", "lr")}
                                 for h in histories],
                     "seconds": time.perf_counter() - t0},
        "metrics": {},
    }
    out = Path(out)
    save_model(out, ensemble, config, ood=ood)
    if member_cache is None:
        shutil.rmtree(member_dir, ignore_errors=True)
    # the test metrics are measured on the saved model, as a user would load it
    loaded = load_model(out)
    if n_members > 1 and val is not train:
        # sigma is calibrated on the validation molecules, before the test set is looked at
        config["uncertainty"] = calibrate_model(loaded, table, split="val", rows=val)
        s = config["uncertainty"]["sigma_scale"]
        _log(f"sigma scale (validation molecules): occupied {s['occupied']:.3g}, unoccupied "
             f"{s['unoccupied']:.3g}", progress)
        # only config.json changes: the loaded weights stay valid
        loaded.config = update_config(out, {"uncertainty": config["uncertainty"]})
    if len(test):
        ev = evaluate_model(loaded, table, split="test", noise=noise, rows=test)
        config["metrics"] = {"test": ev.summary}
        _log(f"test: MSE occupied {ev.summary['mse_occupied']:.4g}, unoccupied "
             f"{ev.summary['mse_unoccupied']:.4g}; median cosine occupied "
             f"{ev.summary['cosine_median_occupied']:.3f}, unoccupied "
             f"{ev.summary['cosine_median_unoccupied']:.3f}", progress)
        loaded.config = update_config(out, {"metrics": config["metrics"]})
    # loss curves are kept beside the checkpoint (plots in the model card), not in config.json
    np.savez_compressed(out / "history.npz", **{
        f"member{i}_{k}": np.asarray(h[k]) for i, h in enumerate(histories)
        for k in ("train_loss", "val_loss")})
    return loaded
