"""napari reader contribution: a spectrum-image file becomes an image layer and an SI layer.

No Qt and no napari import here: napari calls :func:`get_reader` and takes plain layer-data
tuples ``(data, kwargs, layer_type)`` back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_corefit.io.load import SUPPORTED_EXTENSIONS, load_spectrum_image
from napari_corefit.io.write import RESULT_EXTENSIONS


def get_reader(path):
    """Return a reader for ``path`` when it is a spectrum-image file this plugin reads.

    Parameters
    ----------
    path : str or list of str
        What napari asks about. A list is accepted when it holds one path.

    Returns
    -------
    callable or None
        ``read_spectrum_image`` for a supported extension, else ``None`` (napari then asks the
        next plugin).
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    if Path(path).suffix.lower() not in SUPPORTED_EXTENSIONS:
        return None
    return read_spectrum_image


def read_spectrum_image(path) -> list[tuple]:
    """Read a spectrum-image file as napari layer-data tuples.

    Parameters
    ----------
    path : str or os.PathLike or list of one of them

    Returns
    -------
    list of tuple
        ``[(image, kwargs, "image"), (cube, kwargs, "image")]``: first the ADF image (or the
        survey image, total counts per pixel, when the file has no ADF) with shape ``(y, x)``,
        then the spectrum image as ``(energy, y, x)`` (a line scan gives ``(energy, 1, x)``).
        Both carry ``scale`` and ``translate`` from the file's calibration. The cube's
        ``metadata`` holds ``signal`` (the HyperSpy signal, lazy for big files, for the
        engine), ``spectrum_image`` (:class:`~napari_corefit.io.SpectrumImage`),
        ``energy_axis`` (dict: offset, scale, size, units) and ``path``.

        A result file that corefit wrote (signals with ``metadata.Corefit.kind``) gives
        :func:`result_layers` instead.

    Warns
    -----
    CorefitIOWarning
        For an EELS file without the carbon K edge (it opens, for viewing; the process widget
        refuses it with the reason), and what :func:`~napari_corefit.io.load_spectrum_image`
        warns about.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    results = _corefit_results(path)
    if results is not None:
        return result_layers(results, Path(path).stem)
    si = load_spectrum_image(path, require_edge=False)
    return spectrum_image_layers(si)


def spectrum_image_layers(si) -> list[tuple]:
    """Layer-data tuples for a loaded :class:`~napari_corefit.io.SpectrumImage`.

    Parameters
    ----------
    si : SpectrumImage

    Returns
    -------
    list of tuple
        See :func:`read_spectrum_image`.
    """
    name = Path(si.path).stem if si.path is not None else "spectrum image"
    nav = si.navigation_axes()
    scan_scale = tuple(a["scale"] for a in nav)
    scan_translate = tuple(a["offset"] for a in nav)
    scan_units = tuple(_unit_or(a["units"], "pixel") for a in nav)
    common = {
        "path": str(si.path) if si.path is not None else None,
        "energy_axis": si.energy.to_dict(),
        "navigation_axes": nav,
    }

    if si.adf is not None:
        image_name = f"{name} {si.adf.metadata.General.title or 'ADF'}"
        kind = "adf"
    else:
        image_name = f"{name} survey"
        kind = "survey"
    image = np.asarray(si.image, dtype=np.float32)
    image_layer = (
        image,
        {
            "name": image_name,
            "scale": scan_scale,
            "translate": scan_translate,
            "colormap": "gray",
            "metadata": dict(common, kind=kind),
            "axis_labels": ("y", "x"),
            "units": scan_units,
        },
        "image",
    )

    data = si.signal.data
    # (..., energy) -> (energy, ...): napari slides along the first axis and shows the scan
    cube = data.reshape(si.survey.shape + (data.shape[-1],))
    cube = _moveaxis(cube)
    energy = si.energy
    cube_layer = (
        cube,
        {
            "name": f"{name} SI",
            "scale": (energy.scale,) + scan_scale,
            "translate": (energy.offset,) + scan_translate,
            "metadata": dict(
                common, kind="spectrum_image", signal=si.signal, spectrum_image=si
            ),
            "axis_labels": ("energy loss", "y", "x"),
            "units": ("eV",) + scan_units,
            "visible": False,
            "contrast_limits": _contrast_limits(si),
        },
        "image",
    )
    return [image_layer, cube_layer]


def _moveaxis(cube):
    # dask arrays stay lazy; numpy gives a view
    if hasattr(cube, "dask"):
        import dask.array as da

        return da.moveaxis(cube, -1, 0)
    return np.moveaxis(np.asarray(cube), -1, 0)


def _contrast_limits(si) -> tuple[float, float]:
    """Contrast from the survey (mean counts per channel), so napari need not scan a lazy cube.

    A single spectrum or a short line scan (few pixels, in memory) takes its channel values
    instead: one pixel's mean says nothing about the range its channels span. The limits always
    increase, also for data whose counts are negative (a low-loss spectrum after dark
    subtraction).
    """
    data = si.signal.data
    if not si.lazy and np.prod(si.survey.shape) <= 64:
        values = np.asarray(data, dtype=np.float64).ravel()
    else:
        values = np.asarray(si.survey, dtype=np.float64).ravel() / max(si.energy.size, 1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, [1, 99.5]))
    low = min(low, 0.0)
    high = 2.0 * high if high > 0 else high
    if not high > low:
        high = low + max(1.0, abs(low))
    return (low, high)


def _corefit_results(path) -> list | None:
    """The signals of a result file corefit wrote (``metadata.Corefit.kind``), else None."""
    if Path(path).suffix.lower() not in RESULT_EXTENSIONS:
        return None
    import hyperspy.api as hs

    try:
        loaded = hs.load(path, lazy=True)
    except Exception:  # noqa: BLE001 - load_spectrum_image reports unreadable files properly
        return None
    signals = loaded if isinstance(loaded, list) else [loaded]
    if any(s.metadata.has_item("Corefit.kind") for s in signals):
        return signals
    return None


def result_layers(signals, name: str) -> list[tuple]:
    """Image layers for corefit result signals (DOS cubes, maps, the column image).

    Parameters
    ----------
    signals : list of hyperspy signals
        As written by the engine: a DOS stack ``(curve, y, x | energy)`` with the curve names in
        ``metadata.Corefit.curves``, a map stack ``(map | y, x)`` with ``metadata.Corefit.maps``,
        or single images. Signals without scan axes (the per-atom table) give no layer.
    name : str
        Prefix of the layer names (the file's stem).

    Returns
    -------
    list of tuple
        One ``(data, kwargs, "image")`` per curve or map: DOS cubes as ``(energy, y, x)`` with
        the energy relative to E_F as first axis, maps as ``(y, x)``; each layer's metadata has
        ``kind``, ``signal`` (the whole signal) and ``index`` (its place in the stack).
    """
    layers = []
    pad = {"name": "", "units": "pixel", "scale": 1.0, "offset": 0.0}
    for signal in signals:
        am = signal.axes_manager
        kind = str(signal.metadata.get_item("Corefit.kind", ""))
        labels = list(
            signal.metadata.get_item("Corefit.curves", None)
            or signal.metadata.get_item("Corefit.maps", None)
            or []
        )
        if kind == "atoms" or any(a.name == "atom" for a in am.navigation_axes):
            continue  # per-atom curves have no scan axes: no image
        if am.signal_dimension not in (1, 2):
            continue
        axes = sorted(am._axes, key=lambda a: a.index_in_array)  # array order
        energy = None
        if am.signal_dimension == 1 and kind != "maps" and \
                str(am.signal_axes[0].name) not in _STACK_NAMES:
            energy = am.signal_axes[0]
        rest = [a for a in axes if a is not energy]
        stack = [a for a in rest if str(a.name) in _STACK_NAMES]
        if not stack:
            if am.signal_dimension == 2:
                stack = [a for a in rest if a.navigate]
            elif len(rest) > 2:
                stack = rest[: len(rest) - 2]
        spatial = [a for a in rest if all(a is not b for b in stack)]
        if len(stack) > 1 or len(spatial) > 2:
            continue
        # (stack, y, x[, energy]); a line scan is one row, a single spectrum one pixel
        order = [a.index_in_array for a in stack + spatial]
        if energy is not None:
            order.append(energy.index_in_array)
        data = signal.data.transpose(order)
        sizes = tuple(a.size for a in spatial)
        padded = (1,) * (2 - len(sizes)) + sizes
        data = data.reshape(data.shape[: len(stack)] + padded
                            + data.shape[len(stack) + len(sizes):])
        spatial_info = [pad] * (2 - len(spatial)) + [
            {"name": str(a.name), "units": a.units, "scale": _step(a), "offset": _start(a)}
            for a in spatial]
        count = stack[0].size if stack else 1
        scale = tuple(a["scale"] for a in spatial_info)
        translate = tuple(a["offset"] for a in spatial_info)
        units = tuple(_unit_or(a["units"], "pixel") for a in spatial_info)
        for index in range(count):
            part = data[index] if stack else data
            label = labels[index] if index < len(labels) else (str(index) if stack else "")
            title = " ".join(t for t in (name, kind or signal.metadata.General.title, label) if t)
            kwargs = {
                "name": title,
                "metadata": {"kind": kind, "signal": signal, "index": index, "label": label},
            }
            if energy is not None:
                part = _moveaxis(part)
                kwargs.update(
                    scale=(_step(energy),) + scale,
                    translate=(_start(energy),) + translate,
                    units=(_unit_or(energy.units, "eV"),) + units,
                    axis_labels=(str(energy.name), "y", "x"),
                )
            else:
                part = np.asarray(part, dtype=np.float32)
                kwargs.update(scale=scale, translate=translate, units=units,
                              axis_labels=("y", "x"))
            layers.append((part, kwargs, "image"))
    return layers


#: names of the axes along which corefit stacks curves and maps
_STACK_NAMES = ("curve", "map")


def _step(axis) -> float:
    return float(axis.scale) if getattr(axis, "is_uniform", True) else 1.0


def _start(axis) -> float:
    return float(axis.offset) if getattr(axis, "is_uniform", True) else float(axis.axis[0])


def _unit_or(units, default: str) -> str:
    """Units napari accepts (pint-parsable), else ``default``: odd file units must not stop
    the layer from opening."""
    text = "" if units is None else str(units).strip()
    if text in ("", "<undefined>", "None"):
        return default
    try:
        import pint

        pint.get_application_registry().parse_units(text)
    except Exception:  # noqa: BLE001 - pint raises several kinds for unknown units
        return default
    return text
