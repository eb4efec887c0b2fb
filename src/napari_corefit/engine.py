"""The engine: a spectrum image in, DOS maps and a per-atom table out (no Qt, no napari).

``predict(source, model)`` reads the SI (:func:`napari_corefit.io.load_spectrum_image`), finds
the atom columns in its ADF (or survey) image when asked, preprocesses and predicts every pixel
block by block (:func:`napari_corefit.model.inference.predict_signal`, which also sums the
columns' raw spectra from the same reads), derives maps from the predicted DOS, predicts the
columns' summed spectra, and returns an :class:`EngineResult` of HyperSpy signals that carry the
SI's navigation axes.

Derived maps (each a 2-D array over the scan):

``homo_ev``, ``lumo_ev``, ``gap_ev``
    Highest peak of the occupied DOS, lowest peak of the unoccupied DOS (eV relative to E_F;
    :func:`napari_corefit.spectra.peaks.find_first_peak`, run downwards for the occupied part),
    and their difference.
window integrals
    Fraction of a curve's area inside a user-chosen window, e.g. ``("unoccupied", 0, 3)``.
``sigma_rel``
    Ensemble spread (calibrated, see the model card) over both curves relative to their area:
    sum(std) / sum(mean).
``ood``
    Out-of-distribution score (1 = the training inputs' 99th percentile).
``quality``
    Bit flags, 0 = good: 1 masked by preprocessing, 2 ``sigma_rel > sigma_max``,
    4 ``ood > ood_max``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_corefit.model.inference import CURVES
from napari_corefit.spectra.grids import DOS_GRID, EnergyGrid
from napari_corefit.spectra.peaks import find_first_peak

__all__ = [
    "EngineResult",
    "predict",
    "dos_features",
    "quality_flags",
    "parse_window",
    "DEFAULT_WINDOWS",
    "DEFAULT_SIGMA_MAX",
    "QUALITY_BITS",
    "CURVES",
]

#: Default energy windows for integrated-DOS maps: name -> (curve, low eV, high eV).
DEFAULT_WINDOWS = {
    "occupied_-3_0eV": ("occupied", -3.0, 0.0),
    "unoccupied_0_3eV": ("unoccupied", 0.0, 3.0),
}
QUALITY_BITS = {"masked": 1, "high_sigma": 2, "out_of_distribution": 4}
_ENERGY_NAME = "Energy relative to E_F"
_MAP_UNITS = {"homo_ev": "eV", "lumo_ev": "eV", "gap_ev": "eV", "peak_energy_ev": "eV",
              "edge_counts": "counts"}


# --------------------------------------------------------------------------------------------
# derived features (plain functions over arrays)


def parse_window(text):
    """``"unoccupied:0:3"`` -> ``("unoccupied_0_3eV", ("unoccupied", 0.0, 3.0))``.

    Examples
    --------
    >>> parse_window("occupied:-5:-1")
    ('occupied_-5_-1eV', ('occupied', -5.0, -1.0))
    """
    try:
        part, lo, hi = text.split(":")
        lo, hi = float(lo), float(hi)
    except ValueError:
        raise ValueError(f"window {text!r}: expected CURVE:LOW:HIGH, e.g. unoccupied:0:3") from None
    if part not in ("occupied", "unoccupied") or not hi > lo:
        raise ValueError(f"window {text!r}: CURVE is occupied or unoccupied and LOW < HIGH")
    return f"{part}_{lo:g}_{hi:g}eV", (part, lo, hi)


def dos_features(mean, std, grid=DOS_GRID, windows=None, min_fraction=0.3):
    """Features of predicted DOS curves.

    Parameters
    ----------
    mean, std : array_like, shape (..., 2, n)
        Occupied (0) and unoccupied (1) DOS on ``grid`` and their ensemble spread; NaN rows
        give NaN features.
    grid : EnergyGrid
    windows : dict, optional
        name -> (curve, low, high) in eV (default :data:`DEFAULT_WINDOWS`).
    min_fraction : float
        A peak must reach this fraction of its curve's maximum.

    Returns
    -------
    dict of ndarray, shape (...)
        ``homo_ev``, ``lumo_ev``, ``gap_ev``, one entry per window (fraction of the curve's area
        in it), ``sigma_rel``.

    Examples
    --------
    >>> g = EnergyGrid(-15, 0.1, 300)
    >>> e = g.values
    >>> dos = np.stack([np.exp(-(e + 2) ** 2), np.exp(-(e - 1.5) ** 2)])
    >>> f = dos_features(dos, 0.1 * dos, g)
    >>> [round(float(f[k]), 2) for k in ("homo_ev", "lumo_ev", "sigma_rel")]
    [-2.0, 1.5, 0.1]
    """
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    windows = DEFAULT_WINDOWS if windows is None else windows
    e = grid.values
    occ, unocc = mean[..., 0, :], mean[..., 1, :]
    out = {}
    # the highest occupied peak is the first peak met coming down from above
    out["homo_ev"] = -find_first_peak(-e[::-1], occ[..., ::-1], min_fraction=min_fraction)
    out["lumo_ev"] = find_first_peak(e, unocc, min_fraction=min_fraction)
    out["gap_ev"] = out["lumo_ev"] - out["homo_ev"]
    for name, (part, lo, hi) in windows.items():
        curve = occ if part == "occupied" else unocc
        inside = (e >= lo - 1e-9) & (e < hi - 1e-9)
        area = np.nansum(curve, axis=-1) * grid.step
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = curve[..., inside].sum(-1) * grid.step / area
        out[name] = np.where(np.isfinite(curve).all(-1), frac, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sigma_rel"] = std.sum((-2, -1)) / np.abs(mean.sum((-2, -1)))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


#: ``sigma_rel`` flag threshold for models without a calibrated threshold of their own (raw
#: ensemble spread, which is several times smaller than the calibrated one).
DEFAULT_SIGMA_MAX = 0.5


def quality_flags(mask, sigma_rel, ood, sigma_max=DEFAULT_SIGMA_MAX, ood_max=1.0):
    """Per-pixel quality bits (see :data:`QUALITY_BITS`; 0 = usable and trustworthy).

    Examples
    --------
    >>> quality_flags(np.array([True, False, True]), np.array([0.1, np.nan, 0.9]),
    ...               np.array([2.0, np.nan, 0.5]))
    array([4, 1, 2], dtype=uint8)
    """
    mask = np.asarray(mask, bool)
    q = np.where(mask, 0, QUALITY_BITS["masked"]).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        q |= np.where(mask & (np.asarray(sigma_rel) > sigma_max), QUALITY_BITS["high_sigma"],
                      0).astype(np.uint8)
        q |= np.where(mask & (np.asarray(ood) > ood_max), QUALITY_BITS["out_of_distribution"],
                      0).astype(np.uint8)
    return q


# --------------------------------------------------------------------------------------------
# result


def _default_min_distance(image, nav, smooth):
    """Minimum column separation (px) when the user gave none.

    Half the lattice spacing from the image's autocorrelation, but never more than
    :data:`MIN_COLUMN_DISTANCE_NM` in the scan's calibration (at least 2 px): a sparse layout of
    molecules can fake a coarse "lattice" and the estimate would then merge real columns.
    """
    from napari_corefit.atoms.find import MIN_COLUMN_DISTANCE_NM, estimate_separation

    try:
        lattice = max(1, int(round(0.5 * estimate_separation(image, smooth))))
    except ValueError:
        lattice = None
    scale = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "µm": 1e3, "um": 1e3}
    factors = [scale.get(a["units"]) for a in nav[:2]]
    physical = None
    if len(nav) >= 2 and all(f is not None for f in factors):
        px_nm = min(abs(a["scale"]) * f for a, f in zip(nav[:2], factors))
        physical = max(2, int(round(MIN_COLUMN_DISTANCE_NM / px_nm)))
    if lattice is None and physical is None:
        warnings.warn("no periodic columns and no calibration in nm: columns at least 2 px apart")
        return 2
    return min(d for d in (lattice, physical) if d is not None)


def _nav_axes(signal):
    """The signal's navigation axes in array order, as axis dicts (name, units, offset, scale)."""
    axes = []
    for a in signal.axes_manager.navigation_axes[::-1]:
        uniform = getattr(a, "is_uniform", True)
        axes.append({"name": str(a.name), "units": _units(a.units), "size": int(a.size),
                     "offset": float(a.offset) if uniform else float(a.axis[0]),
                     "scale": float(a.scale) if uniform else 1.0})
    return axes


def _units(units):
    text = "" if units is None else str(units).strip()
    return "" if text in ("<undefined>", "None") else text


def _energy_axis(grid):
    return {"name": _ENERGY_NAME, "units": "eV", "offset": float(grid.start),
            "scale": float(grid.step), "size": int(grid.n)}


def _signal(data, nav, sig, title, kind=None):
    import hyperspy.api as hs

    axes = [dict(a, navigate=True) for a in nav] + [dict(a, navigate=False) for a in sig]
    cls = {1: hs.signals.Signal1D, 2: hs.signals.Signal2D}.get(len(sig), hs.signals.BaseSignal)
    s = cls(data, axes=axes)
    s.metadata.General.title = title
    if kind:
        s.metadata.set_item("Corefit.kind", kind)
    return s


_NM_PER_UNIT = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "µm": 1e3, "um": 1e3,
                "m": 1e9}


def _to_nm(px, axis):
    f = _NM_PER_UNIT.get(axis["units"])
    if f is None:
        return np.full(np.shape(px), np.nan)
    return (axis["offset"] + axis["scale"] * np.asarray(px, dtype=np.float64)) * f


@dataclass
class EngineResult:
    """Everything the engine predicted for one spectrum image.

    Attributes
    ----------
    occupied, unoccupied : hyperspy Signal1D
        Ensemble-mean DOS cubes, navigation = the SI's, signal axis "Energy relative to E_F" (eV).
    occupied_std, unoccupied_std : hyperspy Signal1D
        Ensemble standard deviation, same axes.
    maps : dict of str -> hyperspy Signal2D
        Derived maps (see module docstring) and ``peak_energy_ev``, ``edge_counts``, ``reason``.
    image : hyperspy Signal2D or None
        The image the columns were found in (ADF, else the survey).
    atoms_table : pandas.DataFrame or None
        One row per column (``--atoms``).
    atoms_mean, atoms_std : ndarray, shape (n_atoms, 2, n), or None
        The columns' predicted DOS.
    atoms_input : ndarray, shape (n_atoms, n_in), or None
        The columns' preprocessed spectra (model inputs).
    info : dict
        Provenance: model directory/commit, device, windows, thresholds, preprocessing config.
    dos : ndarray, shape (4, ..., n), or None
        The four cubes stacked in :data:`CURVES` order when they are views of one array (the
        engine's output); :meth:`save` then writes it without a copy.
    """

    occupied: object
    unoccupied: object
    occupied_std: object
    unoccupied_std: object
    maps: dict
    image: object = None
    atoms_table: object = None
    atoms_mean: np.ndarray | None = None
    atoms_std: np.ndarray | None = None
    atoms_input: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    dos: np.ndarray | None = None

    def curves(self):
        return [getattr(self, c) for c in CURVES]

    def save(self, path, overwrite=True, compression=None):
        """Write ``path`` (the four DOS cubes stacked along a first navigation axis "curve",
        order :data:`CURVES`), ``<stem>_maps.hspy`` (the maps stacked along "map", names in
        ``metadata.Corefit.maps``), with atoms ``<stem>_atoms.csv`` and ``<stem>_atoms.hspy``.

        ``compression`` is HyperSpy's (``None``, ``"gzip"``, ...). The default ``None`` because
        the DOS cubes barely compress (float32 noise) and gzip made saving 10x slower than
        computing them (25 s for a 256 x 256 result on 2 cores).

        Returns
        -------
        list of Path
        """
        from napari_corefit.io import CorefitIOError, write_results
        from napari_corefit.io.write import RESULT_EXTENSIONS

        path = Path(path)
        if path.suffix.lower() not in RESULT_EXTENSIONS:
            raise CorefitIOError(f"{path}: results are written as "
                                 f"{' or '.join(RESULT_EXTENSIONS)}")
        first = self.occupied
        nav = _nav_axes(first)
        energy = first.axes_manager.signal_axes[0]
        eax = {"name": str(energy.name), "units": _units(energy.units), "size": int(energy.size),
               "offset": float(energy.offset), "scale": float(energy.scale)}
        curve_ax = {"name": "curve", "units": "", "size": len(CURVES), "offset": 0.0,
                    "scale": 1.0}
        stacked = self.dos if self.dos is not None else np.stack(
            [np.asarray(c.data) for c in self.curves()])
        dos = _signal(stacked, [curve_ax] + nav, [eax], "corefit DOS", "dos")
        dos.metadata.set_item("Corefit.curves", list(CURVES))
        dos.metadata.set_item("Corefit.info", json.dumps(self.info, default=str))
        names = list(self.maps)
        map_ax = {"name": "map", "units": "", "size": len(names), "offset": 0.0, "scale": 1.0}
        scan = tuple(a["size"] for a in nav)
        stacked_maps = np.stack([np.asarray(self.maps[n].data, np.float32).reshape(scan)
                                 for n in names])
        if nav:
            maps = _signal(stacked_maps, [map_ax], nav, "corefit maps", "maps")
        else:  # a single spectrum: one value per map, along a signal axis "map"
            maps = _signal(stacked_maps, [], [map_ax], "corefit maps", "maps")
        maps.metadata.set_item("Corefit.maps", names)
        signals = {"": dos, "maps": maps}
        if self.image is not None:
            signals["image"] = self.image
        if self.atoms_mean is not None and len(self.atoms_mean):
            n = len(self.atoms_mean)
            atom_ax = {"name": "atom", "units": "", "size": n, "offset": 0.0, "scale": 1.0}
            data = np.stack([self.atoms_mean[:, 0], self.atoms_mean[:, 1],
                             self.atoms_std[:, 0], self.atoms_std[:, 1]])
            signals["atoms"] = _signal(data, [curve_ax, atom_ax], [eax], "corefit atoms DOS",
                                       "atoms")
            signals["atoms"].metadata.set_item("Corefit.curves", list(CURVES))
        if compression == "gzip" or path.suffix.lower() != ".hspy":
            written = write_results(path, signals, overwrite=overwrite)
        else:
            # io.write_results' naming (<stem>_<name>), with the compression passed through
            written = []
            for name, sig in signals.items():
                target = path if not name else path.with_name(f"{path.stem}_{name}{path.suffix}")
                if target.exists() and not overwrite:
                    raise CorefitIOError(f"{target} exists already (overwrite=False)")
                target.parent.mkdir(parents=True, exist_ok=True)
                sig.save(target, overwrite=True, compression=compression)
                written.append(target)
        if self.atoms_table is not None:
            csv = path.with_name(f"{path.stem}_atoms.csv")
            self.atoms_table.to_csv(csv, index=False)
            written.append(csv)
        return written

    @classmethod
    def load(cls, path):
        """Read back what :meth:`save` wrote."""
        import hyperspy.api as hs
        import pandas as pd

        path = Path(path)
        dos = hs.load(path)
        curves = list(dos.metadata.Corefit.curves)
        parts = {c: dos.inav[..., i] for i, c in enumerate(curves)}
        for c, s in parts.items():
            s.metadata.General.title = c
        maps_file = path.with_name(f"{path.stem}_maps{path.suffix}")
        maps = {}
        if maps_file.exists():
            ms = hs.load(maps_file)
            single = ms.axes_manager.navigation_dimension == 0
            for i, name in enumerate(ms.metadata.Corefit.maps):
                if single:  # a single spectrum's maps: one value each
                    m = _signal(np.asarray(ms.data[i]), [], [], name, "map")
                else:
                    m = ms.inav[i]
                    m.metadata.General.title = name
                maps[name] = m
        image_file = path.with_name(f"{path.stem}_image{path.suffix}")
        image = hs.load(image_file) if image_file.exists() else None
        csv = path.with_name(f"{path.stem}_atoms.csv")
        table = pd.read_csv(csv) if csv.exists() else None
        atoms_file = path.with_name(f"{path.stem}_atoms{path.suffix}")
        am = ast = None
        if atoms_file.exists():
            a = np.asarray(hs.load(atoms_file).data)
            am, ast = np.stack([a[0], a[1]], 1), np.stack([a[2], a[3]], 1)
        info = json.loads(dos.metadata.Corefit.info) if dos.metadata.has_item(
            "Corefit.info") else {}
        return cls(parts["occupied"], parts["unoccupied"], parts["occupied_std"],
                   parts["unoccupied_std"], maps, image, table, am, ast, None, info)


# --------------------------------------------------------------------------------------------
# orchestration


def _load_model(model, device):
    from napari_corefit.model import checkpoint

    if model is None:
        return checkpoint.load_default(device=device)
    if isinstance(model, (str, Path)):
        return checkpoint.load_model(model, device=device)
    return model


def _spectrum_image(source, adf, lowloss, lazy):
    """A SpectrumImage from a path, a SpectrumImage, or a bare HyperSpy signal."""
    from napari_corefit.io import SpectrumImage, load_spectrum_image

    if isinstance(source, SpectrumImage):
        return source
    if isinstance(source, (str, Path)):
        return load_spectrum_image(source, adf=adf, lowloss=lowloss, lazy=lazy)
    return _SignalOnly(source, adf, lowloss)


class _SignalOnly:
    """Stand-in with the attributes the engine uses, for a bare signal (tests, notebooks)."""

    def __init__(self, signal, adf=None, lowloss=None):
        self.signal, self.adf, self.lowloss, self.path = signal, adf, lowloss, None

    @property
    def image(self):
        if self.adf is not None:
            return np.asarray(getattr(self.adf, "data", self.adf), dtype=np.float64)
        data = self.signal.data
        s = data.sum(-1)
        return np.asarray(s.compute() if hasattr(s, "compute") else s, dtype=np.float64)


def _image_signal(si, nav):
    img = np.asarray(si.image, dtype=np.float32)
    if len(nav) != 2 or img.shape != (nav[0]["size"], nav[1]["size"]):
        return None
    title = "ADF" if si.adf is not None else "survey (total counts)"
    return _signal(img, [], nav, title, "image")


def predict(source, model=None, *, adf=None, lowloss=None, lazy=None, device="auto",
            batch_size=None, amp=False, chunk_pixels=32768, atoms=False, atom_options=None,
            windows=None, sigma_max=None, ood_max=1.0, config=None, preprocess=None,
            progress=None, cancel=None, store=None, lowloss_options=None):
    """Predict the site DOS of every pixel (and every atom column) of a spectrum image.

    Parameters
    ----------
    source : path, SpectrumImage or hyperspy Signal1D
        The core-loss SI (raw counts, energy loss in eV).
    model : LoadedModel, Ensemble, path or None
        None loads the bundled model (:func:`napari_corefit.model.checkpoint.load_default`).
    adf, lowloss, lazy
        Passed to :func:`napari_corefit.io.load_spectrum_image` (``adf`` may also be an array
        when ``source`` is a signal).
    device, batch_size, amp, chunk_pixels, store, progress, cancel
        See :func:`napari_corefit.model.inference.predict_signal`.
    atoms : bool
        Find the atom columns and predict their summed spectra.
    atom_options : dict, optional
        ``min_distance``, ``threshold_rel``, ``smooth``, ``refine`` (for
        :func:`napari_corefit.atoms.find.find_atoms`) and ``sum_radius`` (pixels summed per
        column: within this radius of it, inside its Voronoi cell; None = the whole cell).
    windows : dict, optional
        Integration windows, name -> (curve, low, high) eV (default :data:`DEFAULT_WINDOWS`).
    sigma_max, ood_max : float
        Thresholds of the quality flags. ``sigma_max`` None: the model's own
        ``high_sigma_threshold`` (the 95th percentile of its calibrated ``sigma_rel`` on clean
        validation spectra), or :data:`DEFAULT_SIGMA_MAX` for an uncalibrated model.
    config : PreprocessConfig, optional
        Default: the checkpoint's.
    preprocess : callable, optional
        Replaces :func:`napari_corefit.spectra.pipeline.preprocess` (tests).
    lowloss_options : dict, optional
        ``align``, ``deconvolve``, ``zlp_range`` for
        :func:`napari_corefit.spectra.lowloss.preprocess_with_lowloss`, used when the SI comes
        with a low-loss SI (pixels and the columns' summed spectra alike).

    Returns
    -------
    EngineResult

    Raises
    ------
    napari_corefit.model.inference.Cancelled
        When ``cancel()`` returned true; nothing is returned or written.
    """
    from napari_corefit.atoms.table import atom_table
    from napari_corefit.model.inference import (_default_preprocess, _preprocess_config,
                                                predict_signal, predict_spectra)
    from napari_corefit.model.ood import ood_score

    windows = DEFAULT_WINDOWS if windows is None else dict(windows)
    si = _spectrum_image(source, adf, lowloss, lazy)
    model = _load_model(model, device)
    preprocess = preprocess or _default_preprocess()
    config = _preprocess_config(model, config)
    cfg = getattr(model, "config", None) or {}
    grid = EnergyGrid.from_dict(cfg["output_grid"]) if "output_grid" in cfg else DOS_GRID
    nav = _nav_axes(si.signal)
    image = _image_signal(si, nav)

    acc = positions = None
    if atoms:
        from napari_corefit.atoms.find import find_atoms
        from napari_corefit.atoms.spectra import AtomSums, assign_pixels

        if image is None:
            raise ValueError("atom columns need a 2-D scan with an image of the same shape")
        opts = dict(atom_options or {})
        sum_radius = opts.pop("sum_radius", None)
        if opts.get("min_distance") is None:
            opts["min_distance"] = _default_min_distance(np.asarray(image.data), nav,
                                                         opts.get("smooth", 1.0))
        positions = find_atoms(np.asarray(image.data), **opts)
        labels = assign_pixels(image.data.shape, positions["y"], positions["x"], sum_radius)
        acc = AtomSums(labels, len(positions))

    def pixel_progress(fraction, message):
        if progress is not None:
            progress(0.95 * fraction if atoms else fraction, message)

    pred = predict_signal(model, si.signal, config, device=device, batch_size=batch_size, amp=amp,
                          chunk_pixels=chunk_pixels, progress=pixel_progress, cancel=cancel,
                          store=store, preprocess=preprocess,
                          block_hook=acc.add if acc is not None else None,
                          lowloss=getattr(si, "lowloss", None), lowloss_options=lowloss_options,
                          dead_channels=getattr(si, "dead_channels", None))

    if sigma_max is None:
        sigma_max = getattr(model, "high_sigma_threshold", None) or DEFAULT_SIGMA_MAX
    feats = _features_blockwise(pred, grid, windows, max(1, chunk_pixels // _row_size(nav)))
    quality = quality_flags(pred.mask, feats["sigma_rel"], pred.ood, sigma_max, ood_max)
    map_arrays = dict(feats)
    map_arrays.update(ood=pred.ood, quality=quality, peak_energy_ev=pred.peak_energy,
                      edge_counts=pred.edge_counts, reason=pred.reason)
    maps = {}
    for name, arr in map_arrays.items():
        s = _signal(np.asarray(arr), [], nav, name, "map")
        if name in _MAP_UNITS:
            s.metadata.set_item("Signal.quantity", f"{name} ({_MAP_UNITS[name]})")
        maps[name] = s
    eax = _energy_axis(grid)
    cubes = [_signal(pred.dos[i], nav, [eax], title, "dos") for i, title in
             enumerate(["occupied DOS", "unoccupied DOS", "occupied DOS std",
                        "unoccupied DOS std"])]

    table = am = ast = ain = None
    if atoms:
        if cancel is not None and cancel():
            from napari_corefit.model.inference import Cancelled

            raise Cancelled("cancelled before the atom columns")
        energy = np.asarray(si.signal.axes_manager.signal_axes[0].axis, dtype=np.float64)
        n_ch = energy.size
        counts = acc.counts if acc.counts is not None else np.zeros((len(positions), n_ch))
        if getattr(si, "lowloss", None) is not None:
            res = _atoms_with_lowloss(si, labels, len(positions), counts, config,
                                      lowloss_options)
        else:
            dead = getattr(si, "dead_channels", None)
            res = preprocess(energy, counts, config) if dead is None or not len(dead) or \
                preprocess is not _default_preprocess() else \
                preprocess(energy, counts, config, dead_channels=dead)
        mask = np.asarray(res.mask, bool)
        ain = np.asarray(res.spectra, np.float32)
        n_out = grid.n
        am = np.full((len(positions), 2, n_out), np.nan, np.float32)
        ast = np.full_like(am, np.nan)
        ood = np.full(len(positions), np.nan, np.float32)
        good = np.flatnonzero(mask)
        if good.size:
            am[good], ast[good] = predict_spectra(model, ain[good], device=device,
                                                  batch_size=batch_size, amp=amp)
            ood[good] = ood_score(getattr(model, "ood", None), ain[good])
        afeats = dos_features(am, ast, grid, windows)
        aq = quality_flags(mask, afeats["sigma_rel"], ood, sigma_max, ood_max)
        table = atom_table(positions, nav, acc.n_pixels, counts.sum(-1), res.edge_counts,
                           res.peak_energy,
                           mask, res.reason, afeats, ood, aq, _to_nm)
    if progress is not None:
        progress(1.0, "done")
    info = {"model": str(getattr(model, "directory", "") or ""),
            "model_commit": cfg.get("commit"), "device": str(device), "amp": str(amp),
            "windows": windows, "sigma_max": sigma_max, "ood_max": ood_max,
            "quality_bits": QUALITY_BITS,
            "preprocess": config.to_dict() if hasattr(config, "to_dict") else str(config),
            "lowloss": None if pred.lowloss is None else {
                k: v for k, v in vars(pred.lowloss).items() if k != "shifts"},
            "source": str(getattr(si, "path", "") or "")}
    return EngineResult(*cubes, maps=maps, image=image, atoms_table=table, atoms_mean=am,
                        atoms_std=ast, atoms_input=ain, info=info, dos=pred.dos)


def _atoms_with_lowloss(si, labels, n_atoms, counts, config, lowloss_options):
    """Preprocess the columns' summed spectra with their summed low-loss spectra.

    The low loss is summed over the same pixels, and both sums go through the same exSpy
    corrections as the pixels (drift within one column's cell is not corrected first).
    """
    import hyperspy.api as hs

    from napari_corefit.atoms.spectra import AtomSums
    from napari_corefit.spectra.lowloss import preprocess_with_lowloss

    ll = si.lowloss
    ll_data = ll.data.compute() if hasattr(ll.data, "compute") else np.asarray(ll.data)
    ll_sums = AtomSums(labels, n_atoms)
    ll_sums.add(0, ll_data.shape[0], ll_data)

    def as_signal(data, like):
        src = like.axes_manager.signal_axes[0]
        s = hs.signals.Signal1D(np.asarray(data, np.float64))
        ax = s.axes_manager.signal_axes[0]
        ax.name, ax.units, ax.offset, ax.scale = src.name, src.units, src.offset, src.scale
        return s

    res, _ = preprocess_with_lowloss(as_signal(counts, si.signal), as_signal(ll_sums.counts, ll),
                                     config, **(lowloss_options or {}))
    return res


def _row_size(nav):
    return int(np.prod([a["size"] for a in nav[1:]], dtype=np.int64)) if len(nav) > 1 else 1


def _features_blockwise(pred, grid, windows, rows):
    """:func:`dos_features` over blocks of rows, so that its float64 temporaries stay small."""
    if pred.mask.ndim == 0:
        return dos_features(pred.mean, pred.std, grid, windows)
    n = pred.mask.shape[0]
    out = {}
    for r0 in range(0, n, rows):
        f = dos_features(pred.mean[r0:r0 + rows], pred.std[r0:r0 + rows], grid, windows)
        for k, v in f.items():
            out.setdefault(k, np.empty(pred.mask.shape, np.float32))[r0:r0 + rows] = v
    return out

