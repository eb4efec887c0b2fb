"""Training rows from a database: input spectra and target DOS, per site or per molecule.

Curves are broadened on the fly from the database's sticks onto the grids of the model config
(``backend.curves``), so a new grid never needs a new quantum-chemistry run.

Inputs are made as the engine will make them from measured data:

* noise-free: ``curves.site_spectra`` (broadened, aligned with ``find_first_peak``, normalised);
* with noise: the absolute spectrum on a measured-like axis, plus a power-law background, Poisson
  counts (:mod:`napari_corefit.training.noise`), then the engine's own
  :func:`napari_corefit.spectra.pipeline.preprocess` (background removal, optional
  Savitzky-Golay smoothing, alignment, normalisation). A fresh draw per epoch keeps the network
  from learning one noise realisation.

Molecule-level rows are the multiplicity-weighted sums over a molecule's carbon sites (SPEC
section 2); a molecule with a failed site has no molecule-level row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from napari_corefit.spectra.grids import BROADENING_EV, DOS_GRID, SPECTRUM_GRID, EnergyGrid
from napari_corefit.training.noise import NoiseModel, simulate_counts

__all__ = ["CurveSet", "build_curves", "make_inputs", "default_preprocess_config"]


@dataclass
class CurveSet:
    """Rows of one level (sites or molecules) with what is needed to make their inputs.

    Attributes
    ----------
    level : str
        ``"site"`` or ``"molecule"``.
    molecule : ndarray of int, shape (m,)
        Row's molecule (index into ``SiteTable.molecules``).
    row_id : ndarray of int, shape (m,)
        Site index into ``SiteTable.sites`` (site level) or the molecule index (molecule level).
    targets : ndarray, shape (m, 2, n_out), float32
        Occupied and unoccupied DOS, each area-normalised.
    clean : ndarray, shape (m, n_in), float32
        Noise-free inputs on the input grid.
    absolute : ndarray, shape (m, n_axis), float32, or None
        Noise-free absolute spectra on the noise axis (only when built for noise).
    reference : ndarray, shape (m,)
        First-transition energy (E_exc of the site; the lowest of the molecule's sites), eV.
    peak : ndarray, shape (m,)
        First peak of the noise-free absolute spectrum as the engine's detector finds it, eV
        (NaN when built without a noise axis); the window of the noise level ``N`` starts 1 eV
        below it, as the engine's ``edge_counts`` does.
    weight : ndarray, shape (m,)
        Site multiplicity (site level) or 1.
    """

    level: str
    molecule: np.ndarray
    row_id: np.ndarray
    targets: np.ndarray
    clean: np.ndarray
    absolute: np.ndarray | None
    reference: np.ndarray
    weight: np.ndarray
    peak: np.ndarray | None = None

    def __len__(self):
        return int(self.targets.shape[0])

    def subset(self, mask) -> "CurveSet":
        """Rows where ``mask`` is true (a boolean mask or an index array)."""
        mask = np.asarray(mask)
        pick = (lambda a: None if a is None else a[mask])
        return replace(self, molecule=self.molecule[mask], row_id=self.row_id[mask],
                       targets=self.targets[mask], clean=self.clean[mask],
                       absolute=pick(self.absolute), reference=self.reference[mask],
                       weight=self.weight[mask], peak=pick(self.peak))

    def in_molecules(self, molecules) -> "CurveSet":
        """Rows whose molecule is in ``molecules`` (e.g. one part of a split)."""
        return self.subset(np.isin(self.molecule, np.asarray(molecules)))


def default_preprocess_config():
    """The engine's default :class:`~napari_corefit.spectra.pipeline.PreprocessConfig`."""
    from napari_corefit.spectra.pipeline import PreprocessConfig

    return PreprocessConfig()


def _group_sum(values, groups, n_groups, weights):
    out = np.zeros((n_groups,) + values.shape[1:])
    np.add.at(out, groups, values * weights.reshape((-1,) + (1,) * (values.ndim - 1)))
    return out


def build_curves(table, level="site", input_grid=SPECTRUM_GRID, output_grid=DOS_GRID,
                 sigma=BROADENING_EV, noise_axis: EnergyGrid | None = None,
                 molecules=None, allow_empty=False, continuum="default") -> CurveSet:
    """Broaden a database's usable sites into model rows.

    Parameters
    ----------
    table : SiteTable
        From :func:`napari_corefit.backend.load_database`.
    level : {"site", "molecule"}
    input_grid, output_grid : EnergyGrid
    sigma : float
        Gaussian broadening, eV.
    continuum : Continuum or None
        How sticks become spectra (``backend.curves``): the realistic recipe (``CONTINUUM``,
        the default) or None for the discrete lines; the same for clean and noised inputs.
    noise_axis : EnergyGrid, optional
        Also keep absolute spectra on this axis (needed to draw noisy inputs).
    molecules : array of int, optional
        Broaden only the sites of these molecules (indices into ``table.molecules``); row
        indices stay those of the whole table.
    allow_empty : bool
        Return an empty CurveSet instead of raising when no usable site is selected.

    Returns
    -------
    CurveSet
    """
    from napari_corefit.backend import curves

    if isinstance(continuum, str) and continuum == "default":
        continuum = curves.CONTINUUM
    if level not in ("site", "molecule"):
        raise ValueError(f"level must be 'site' or 'molecule', got {level!r}")
    ok = np.asarray(table.sites["ok"], bool)
    if not ok.any():
        raise ValueError("the database has no usable (ok) site")
    if molecules is not None:
        ok = ok & np.isin(np.asarray(table.sites["molecule"]),
                          np.asarray(molecules, dtype=np.int64))
        if not ok.any():
            if not allow_empty:
                raise ValueError("none of the given molecules has a usable (ok) site")
            return _empty_curves(level, input_grid, output_grid, noise_axis)
    sites = table.select(ok)
    site_ids = np.flatnonzero(ok)
    mol = np.asarray(sites.sites["molecule"], dtype=np.int64)
    mult = np.asarray(sites.sites["multiplicity"], dtype=np.float64)
    e_exc = np.asarray(sites.sites["excitation_energy"], dtype=np.float64)
    dos = curves.site_dos(sites, grid=output_grid, sigma=sigma)
    absolute = None
    if level == "site":
        clean = curves.site_spectra(sites, grid=input_grid, sigma=sigma, continuum=continuum)
        if noise_axis is not None:
            absolute = curves.absolute_site_spectra(sites, noise_axis.values, sigma=sigma,
                                                    continuum=continuum)
        cs = CurveSet("site", mol, site_ids, dos, clean, absolute, e_exc, mult)
    else:
        cs = _molecule_rows(table, sites, mol, mult, e_exc, input_grid, output_grid, sigma,
                            noise_axis, continuum)
    cs.targets = np.asarray(cs.targets, dtype=np.float32)
    cs.clean = np.asarray(cs.clean, dtype=np.float32)
    cs.peak = np.full(len(cs), np.nan)
    if cs.absolute is not None:
        from napari_corefit.spectra.align import first_peak

        cs.absolute = np.asarray(cs.absolute, dtype=np.float32)
        pp = default_preprocess_config()
        cs.peak = first_peak(noise_axis.values, cs.absolute, pp.peak_search_ev, pp.peak_params)
    # a row whose curves are all zero (no sticks in a window) teaches nothing and breaks metrics
    good = (cs.clean.sum(-1) > 0) & (cs.targets.sum(-1) > 0).all(-1)
    return cs.subset(good)


def _empty_curves(level, input_grid, output_grid, noise_axis):
    z = np.zeros(0)
    return CurveSet(level, z.astype(np.int64), z.astype(np.int64),
                    np.zeros((0, 2, output_grid.n), np.float32),
                    np.zeros((0, input_grid.n), np.float32),
                    None if noise_axis is None else np.zeros((0, noise_axis.n), np.float32),
                    z, z, z)


def _molecule_rows(table, sites, mol, mult, e_exc, input_grid, output_grid, sigma, noise_axis,
                   continuum):
    from napari_corefit.backend import curves

    n_mol = len(table.molecules["key"])
    all_mol = np.asarray(table.sites["molecule"], dtype=np.int64)
    failed = np.zeros(n_mol, bool)
    failed[all_mol[~np.asarray(table.sites["ok"], bool)]] = True
    present = np.zeros(n_mol, bool)
    present[mol] = True
    keep = np.flatnonzero(present & ~failed)
    ms = _by_molecule(curves.molecule_spectra(sites, grid=input_grid, sigma=sigma,
                                              continuum=continuum), n_mol)
    md = _by_molecule(curves.molecule_dos(sites, grid=output_grid, sigma=sigma), n_mol)
    ref = np.full(n_mol, np.inf)
    np.minimum.at(ref, mol, e_exc)
    absolute = None
    if noise_axis is not None:
        a = curves.absolute_site_spectra(sites, noise_axis.values, sigma=sigma,
                                         continuum=continuum)
        absolute = _group_sum(a, mol, n_mol, mult)[keep]
    return CurveSet("molecule", keep, keep, md[keep], ms[keep], absolute, ref[keep],
                    np.ones(keep.size))


def _by_molecule(ids_and_curves, n_mol):
    # backend.curves.molecule_* return (molecule ids, rows): put each row at its molecule index
    ids, rows = ids_and_curves
    rows = np.asarray(rows)
    out = np.zeros((n_mol,) + rows.shape[1:], dtype=rows.dtype)
    out[np.asarray(ids, dtype=np.int64)] = rows
    return out


def make_inputs(cs: CurveSet, noise: NoiseModel | None = None, preprocess_config=None,
                rng=None, input_grid=SPECTRUM_GRID):
    """Model inputs for every row: noise-free, or one fresh noisy draw through the engine.

    Parameters
    ----------
    cs : CurveSet
    noise : NoiseModel, optional
        None or ``counts=None``: the noise-free inputs.
    preprocess_config : PreprocessConfig, optional
        The engine's preprocessing (default: its defaults). With Savitzky-Golay smoothing on,
        noise-free inputs are made by the pipeline too (needs the absolute spectra).
    rng : numpy.random.Generator, optional
    input_grid : EnergyGrid
        Must equal the preprocessing's output grid.

    Returns
    -------
    inputs : ndarray, shape (m, n_in), float32
    usable : ndarray of bool, shape (m,)
        False where the engine masked the pixel (e.g. no peak found in noise); such rows are
        zero and should be left out of that epoch.
    """
    smoothing = preprocess_config is not None and \
        getattr(preprocess_config, "savgol_window_ev", None) is not None
    if (noise is None or not noise.noisy) and not smoothing:
        return cs.clean, np.ones(len(cs), bool)
    if cs.absolute is None:
        raise ValueError("this CurveSet was built without a noise axis; pass noise_axis to "
                         "build_curves to train or evaluate with noise")
    from napari_corefit.spectra.pipeline import preprocess

    if preprocess_config is None:
        preprocess_config = default_preprocess_config()
    # the engine's usability thresholds (low counts, no significant edge) decide whether a
    # measured pixel is worth predicting; a simulated spectrum is known to hold its edge, and
    # dropping the rows that fluctuate low would bias training and tests at small N
    config = replace(preprocess_config, min_edge_counts=0.0, min_edge_snr=None)
    if noise is None or not noise.noisy:
        # noise-free but smoothed: the engine's smoothing changes peak shapes, so the clean
        # spectra go through the same pipeline (nothing to subtract)
        from napari_corefit.training.noise import NOISE_AXIS

        axis = noise.axis if noise is not None else NOISE_AXIS
        res = preprocess(axis.values, cs.absolute, replace(config, background=False))
    else:
        rng = np.random.default_rng() if rng is None else rng
        peak = np.where(np.isfinite(cs.peak), cs.peak, cs.reference)
        counts = simulate_counts(cs.absolute, peak, noise, rng,
                                 window=(input_grid.start, input_grid.stop))
        res = preprocess(noise.axis.values, counts, config)
    x = np.asarray(res.spectra, dtype=np.float32)
    if x.shape[-1] != input_grid.n:
        raise ValueError(f"preprocess gives {x.shape[-1]} points, the model input grid has "
                         f"{input_grid.n}")
    usable = np.asarray(res.mask, bool) & np.isfinite(x).all(-1)
    x = np.where(usable[:, None], np.nan_to_num(x), 0.0).astype(np.float32)
    return x, usable
