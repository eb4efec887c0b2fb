"""napari reader contribution: a spectrum-image file becomes an image layer and an SI layer.

No Qt and no napari import here: napari calls :func:`get_reader` and takes plain layer-data
tuples ``(data, kwargs, layer_type)`` back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_corefit.io.load import SUPPORTED_EXTENSIONS, load_spectrum_image


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
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    si = load_spectrum_image(path)
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
    scan_units = tuple(a["units"] or "pixel" for a in nav)
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
    """Contrast from the survey (mean counts per channel), so napari need not scan a lazy cube."""
    mean = si.survey / max(si.energy.size, 1)
    low, high = (float(v) for v in np.percentile(mean, [1, 99.5]))
    if not high > low:
        high = low + 1.0
    return (min(low, 0.0), 2.0 * high)
