"""Engine results as napari layers (layer-data tuples), and adding them to a viewer.

:func:`result_layer_data` turns an :class:`~napari_corefit.engine.EngineResult` into plain
``(data, kwargs, layer_type)`` tuples: the DOS cubes as ``(energy, y, x)`` images with the energy
relative to E_F as first axis (eV), the derived maps as 2-D images, the atom columns as a Points
layer whose ``features`` are the per-atom table. :func:`add_or_replace` puts them into a viewer:
a layer whose name exists already is replaced in place (same position in the layer list), so
that a second run on the same spectrum image replaces the first one's layers and adds no copies.

Every layer's ``metadata["corefit_run"]`` is the :class:`CorefitRun` it came from; the inspector
and the export widget find the result there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CorefitRun", "result_layer_data", "add_or_replace", "find_runs", "map_label",
           "DOS_UNITS", "base_name"]

#: Units of the predicted DOS: each curve is area-normalised over the window (sum * step = 1).
DOS_UNITS = "1/eV"

#: Map name -> (layer label with units, colormap).
_MAP_STYLE = {
    "homo_ev": ("HOMO peak (eV rel. E_F)", "magma"),
    "lumo_ev": ("LUMO peak (eV rel. E_F)", "viridis"),
    "gap_ev": ("HOMO-LUMO gap (eV)", "plasma"),
    "sigma_rel": ("ensemble sigma (relative)", "inferno"),
    "ood": ("out-of-distribution score (1 = threshold)", "inferno"),
    "quality": ("quality flags (0 = good)", "gray"),
    "peak_energy_ev": ("first-peak energy loss (eV)", "cividis"),
    "edge_counts": ("edge counts (counts)", "gray"),
    "reason": ("mask reason code (0 = usable)", "gray"),
}
#: Integer maps: contrast over their code range, not percentiles.
_CODE_LIMITS = {"quality": (0, 7), "reason": (0, 7)}


@dataclass
class CorefitRun:
    """One engine run as the widgets see it.

    Attributes
    ----------
    result : EngineResult
    signal : hyperspy signal
        The core-loss SI the result came from (for the inspector's measured spectra).
    base : str
        Prefix of the layer names (the SI layer's name without its " SI" suffix).
    names : dict
        Role (``"occupied"``, ``"map:homo_ev"``, ``"atoms"``, ...) -> layer name.
    store : tempfile.TemporaryDirectory or None
        Where the DOS cubes of a lazy SI are memory-mapped; removed with the run.
    """

    result: object
    signal: object
    base: str
    names: dict = field(default_factory=dict)
    store: object = None  # keeps memory-mapped cubes of lazy SIs alive (TemporaryDirectory)

    # ---- geometry of the scan (array order y, x)
    @property
    def nav(self):
        from napari_corefit.engine import _nav_axes

        nav = _nav_axes(self.result.occupied)
        while len(nav) < 2:  # a line scan is shown as one row
            nav.insert(0, {"name": "y", "units": "", "size": 1, "offset": 0.0, "scale": 1.0})
        return nav

    @property
    def scan_shape(self):
        return tuple(a["size"] for a in self.nav)

    def world_to_pixel(self, yx):
        """World (y, x) -> fractional pixel (y, x) of the scan."""
        nav = self.nav
        return tuple((float(v) - a["offset"]) / a["scale"] for v, a in zip(yx, nav))

    def pixel_to_world(self, yx):
        nav = self.nav
        return tuple(a["offset"] + a["scale"] * float(v) for v, a in zip(yx, nav))

    # ---- curves
    def _cube(self, name):
        data = np.asarray(getattr(self.result, name).data)
        return data.reshape(self.scan_shape + (data.shape[-1],))

    @property
    def dos_energy(self):
        return np.asarray(self.result.occupied.axes_manager.signal_axes[0].axis, np.float64)

    def pixel_dos(self, iy, ix):
        """Mean and std (2, n) of the predicted DOS at one pixel (occupied, unoccupied)."""
        mean = np.stack([self._cube("occupied")[iy, ix], self._cube("unoccupied")[iy, ix]])
        std = np.stack([self._cube("occupied_std")[iy, ix],
                        self._cube("unoccupied_std")[iy, ix]])
        return mean, std

    def atom_dos(self, i):
        r = self.result
        return r.atoms_mean[i], r.atoms_std[i]

    @property
    def preprocess_config(self):
        from napari_corefit.spectra.pipeline import PreprocessConfig

        cfg = self.result.info.get("preprocess")
        return PreprocessConfig.from_dict(cfg if isinstance(cfg, dict) else None)

    def pixel_input(self, iy, ix):
        """The preprocessed measured spectrum of one pixel: (energy grid, values or None, reason).

        The pixel's raw counts are read from the SI and run through the same preprocessing the
        engine ran (:func:`napari_corefit.spectra.pipeline.preprocess` with the run's config).
        """
        from napari_corefit.spectra.masks import REASON_TEXT
        from napari_corefit.spectra.pipeline import preprocess

        config = self.preprocess_config
        grid = config.grid
        sig = self.signal
        energy = np.asarray(sig.axes_manager.signal_axes[0].axis, np.float64)
        data = sig.data
        counts = data[iy, ix] if data.ndim == 3 else data[ix] if data.ndim == 2 else data
        counts = np.asarray(counts.compute() if hasattr(counts, "compute") else counts,
                            np.float64)
        res = preprocess(energy, counts, config)
        ok = bool(np.asarray(res.mask))
        reason = REASON_TEXT.get(int(np.asarray(res.reason)), str(int(np.asarray(res.reason))))
        return grid.values, (np.asarray(res.spectra, np.float64) if ok else None), reason

    def atom_input(self, i):
        from napari_corefit.spectra.masks import REASON_TEXT

        grid = self.preprocess_config.grid
        row = self.result.atoms_table.iloc[i]
        ok = bool(row["usable"])
        values = np.asarray(self.result.atoms_input[i], np.float64) if ok else None
        return grid.values, values, REASON_TEXT.get(int(row["reason"]), str(row["reason"]))


def base_name(layer_name: str) -> str:
    """``"scan SI"`` -> ``"scan"`` (the reader names spectrum-image layers ``<stem> SI``)."""
    return layer_name[:-3] if layer_name.endswith(" SI") else layer_name


def map_label(name, windows=None):
    """Human label of a map with its units.

    Examples
    --------
    >>> map_label("lumo_ev")
    'LUMO peak (eV rel. E_F)'
    >>> map_label("unoccupied_0_3eV", {"unoccupied_0_3eV": ("unoccupied", 0.0, 3.0)})
    'unoccupied DOS fraction in 0..3 eV (area fraction)'
    """
    if name in _MAP_STYLE:
        return _MAP_STYLE[name][0]
    win = (windows or {}).get(name)
    if win is not None:
        part, lo, hi = win
        return f"{part} DOS fraction in {lo:g}..{hi:g} eV (area fraction)"
    return name


def _limits(data, lo=1.0, hi=99.5, max_samples=1_000_000):
    """Percentile contrast limits of the finite values (a strided sample of big arrays)."""
    flat = np.asarray(data).reshape(-1)
    if flat.size > max_samples:
        flat = flat[:: flat.size // max_samples + 1]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (0.0, 1.0)
    a, b = (float(v) for v in np.percentile(flat, [lo, hi]))
    if not b > a:
        b = a + (abs(a) * 1e-3 or 1.0)
    return (a, b)


def _scan_units(nav):
    from napari_corefit.io.napari_reader import _unit_or

    return tuple(_unit_or(a["units"], "pixel") for a in nav)


def result_layer_data(run: CorefitRun, add_image=False, color_by=None):
    """Layer-data tuples for one engine run (see module docstring).

    Parameters
    ----------
    run : CorefitRun
    add_image : bool
        Also a layer of the image the atom columns were found in (when the viewer does not
        show it already).
    color_by : str, optional
        Atom feature that colours the points (default ``lumo_ev`` when finite somewhere, else
        ``edge_counts``).

    Returns
    -------
    list of (data, kwargs, layer_type)
        Names are recorded in ``run.names`` (role -> name).
    """
    result = run.result
    nav = run.nav
    shape = run.scan_shape
    scale = tuple(a["scale"] for a in nav)
    translate = tuple(a["offset"] for a in nav)
    units = _scan_units(nav)
    eax = result.occupied.axes_manager.signal_axes[0]
    e_label = f"{eax.name} (eV)"
    base = run.base
    windows = result.info.get("windows") or {}
    layers = []

    def meta(kind, **extra):
        return dict({"kind": kind, "corefit_run": run}, **extra)

    if add_image and result.image is not None:
        title = str(result.image.metadata.General.title or "image")
        name = f"{base} {title}" if "counts" in title else f"{base} {title} (counts)"
        img = np.asarray(result.image.data, np.float32).reshape(shape)
        layers.append((img, {"name": name, "scale": scale, "translate": translate,
                             "units": units, "axis_labels": ("y", "x"), "colormap": "gray",
                             "contrast_limits": _limits(img, 0.5, 99.8),
                             "metadata": meta("corefit_image")}, "image"))
        run.names["image"] = name

    cubes = [("occupied", "occupied DOS", "magma", True),
             ("unoccupied", "unoccupied DOS", "viridis", True),
             ("occupied_std", "occupied DOS sigma", "inferno", False),
             ("unoccupied_std", "unoccupied DOS sigma", "inferno", False)]
    for attr, label, cmap, visible in cubes:
        cube = run._cube(attr)
        data = np.moveaxis(cube, -1, 0)  # (energy, y, x), a view
        name = f"{base} {label} ({DOS_UNITS})"
        layers.append((data, {
            "name": name,
            "scale": (float(eax.scale),) + scale,
            "translate": (float(eax.offset),) + translate,
            "units": ("eV",) + units,
            "axis_labels": (e_label, "y", "x"),
            "colormap": cmap,
            "contrast_limits": _limits(cube, 0.0, 99.5) if attr.endswith("std")
            else (0.0, _limits(cube, 0.0, 99.5)[1]),
            "visible": visible and attr == "unoccupied",
            "metadata": meta("corefit_dos", curve=attr, units=DOS_UNITS,
                             energy_axis={"name": str(eax.name), "units": "eV",
                                          "offset": float(eax.offset),
                                          "scale": float(eax.scale), "size": int(eax.size)}),
        }, "image"))
        run.names[attr] = name

    for key, sig in result.maps.items():
        data = np.asarray(sig.data).reshape(shape)
        label = map_label(key, windows)
        cmap = _MAP_STYLE.get(key, (None, "twilight_shifted" if "fraction" in label
                                    else "viridis"))[1]
        if key in _CODE_LIMITS:
            data = data.astype(np.float32)
            limits = _CODE_LIMITS[key]
        else:
            data = data.astype(np.float32)
            limits = _limits(data)
        name = f"{base} {label}"
        layers.append((data, {"name": name, "scale": scale, "translate": translate,
                              "units": units, "axis_labels": ("y", "x"), "colormap": cmap,
                              "contrast_limits": limits, "visible": False,
                              "metadata": meta("corefit_map", map=key)}, "image"))
        run.names[f"map:{key}"] = name

    table = result.atoms_table
    if table is not None:
        coords = np.column_stack([table["y_px"], table["x_px"]]).astype(np.float64)
        if coords.shape[0] == 0:
            coords = np.zeros((0, 2))
        if color_by is None:
            color_by = "lumo_ev" if "lumo_ev" in table and np.isfinite(
                table["lumo_ev"]).any() else "edge_counts"
        features = table.reset_index(drop=True).copy()
        name = f"{base} atom columns"
        kwargs = {"name": name, "scale": scale, "translate": translate, "units": units,
                  "axis_labels": ("y", "x"), "features": features,
                  "size": _point_size(coords), "border_color": "white", "border_width": 0.1,
                  "metadata": meta("corefit_atoms", color_by=color_by)}
        if len(features) and color_by in features:
            values = np.asarray(features[color_by], np.float64)
            finite = values[np.isfinite(values)]
            # NaN (unusable columns) would poison the colour map: they get the lowest colour
            fill = float(finite.min()) if finite.size else 0.0
            features[f"{color_by}_color"] = np.where(np.isfinite(values), values, fill)
            kwargs["face_color"] = f"{color_by}_color"
            kwargs["face_colormap"] = "viridis"
        else:
            kwargs["face_color"] = "orange"
        layers.append((coords, kwargs, "points"))
        run.names["atoms"] = name
    return layers


def _point_size(coords):
    """Marker size (pixels): 0.45 of the median nearest-neighbour distance."""
    if len(coords) < 2:
        return 2.0
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(np.clip(0.45 * np.median(d[:, 1]), 1.0, 50.0))


def add_or_replace(viewer, layer_data):
    """Add layers to ``viewer``; a layer of the same name is replaced at its position.

    All layer objects are built before the viewer is touched, so that a failure leaves the
    viewer as it was.

    Returns
    -------
    list of napari layers
        The layers now in the viewer, in the order of ``layer_data``.
    """
    from napari.layers import Layer

    built = [Layer.create(data, dict(kwargs), ltype) for data, kwargs, ltype in layer_data]
    out = []
    for layer in built:
        if layer.name in viewer.layers:
            index = viewer.layers.index(layer.name)
            viewer.layers.pop(index)
            viewer.layers.insert(index, layer)
        else:
            viewer.layers.append(layer)
        out.append(layer)
    return out


def find_runs(viewer):
    """The runs whose layers are in ``viewer``, newest (topmost layer) first, no repeats."""
    seen = []
    for layer in reversed(list(viewer.layers)):
        run = layer.metadata.get("corefit_run") if hasattr(layer, "metadata") else None
        if run is not None and all(run is not r for r in seen):
            seen.append(run)
    return seen
