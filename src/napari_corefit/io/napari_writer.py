"""napari writer contribution: image layers saved as HyperSpy ``.hspy`` files with their axes.

No Qt and no napari import: napari passes plain layer-data tuples ``(data, attributes,
layer_type)``. Each image layer becomes one HyperSpy signal whose axes carry the layer's scale,
translate, units and axis labels, so that ``hs.load`` gives the energy in eV and the scan in
nm. A 3-D layer whose first axis is in eV (the DOS cubes, the spectrum image) is written as a
``Signal1D`` with that axis as its signal axis; 2-D layers become ``Signal2D`` images. The files
carry ``metadata.Corefit.kind`` so that napari-corefit's reader opens them again as layers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_corefit.io.write import write_results

__all__ = ["write_layers", "layer_signal"]


def _units_text(u):
    """A pint unit or string as short text (``nm``, ``eV``); pixels have no units."""
    if u is None:
        return ""
    try:
        text = f"{u:~}"
    except (TypeError, ValueError):
        text = str(u)
    text = text.strip()
    return "" if text in ("", "px", "pixel", "dimensionless") else text


def layer_signal(data, attributes):
    """A HyperSpy signal for one image layer's data and attributes.

    Parameters
    ----------
    data : array_like, shape (y, x) or (energy, y, x) or (n, y, x)
    attributes : dict
        napari layer attributes: ``name``, ``scale``, ``translate``, ``units``,
        ``axis_labels``, ``metadata``.

    Returns
    -------
    hyperspy signal
    """
    import hyperspy.api as hs

    data = np.asarray(data)
    nd = data.ndim
    scale = list(attributes.get("scale") or [1.0] * nd)[-nd:]
    translate = list(attributes.get("translate") or [0.0] * nd)[-nd:]
    units = [_units_text(u) for u in list(attributes.get("units") or [""] * nd)[-nd:]]
    labels = [str(a) for a in list(attributes.get("axis_labels") or [""] * nd)[-nd:]]
    axes = [{"name": labels[i] or f"axis {i}", "units": units[i], "size": int(data.shape[i]),
             "offset": float(translate[i]), "scale": float(scale[i])} for i in range(nd)]
    meta = attributes.get("metadata") or {}
    if nd == 3 and units[0] == "eV":
        # (energy, y, x) -> navigation (y, x), signal energy
        name = str(meta.get("energy_axis", {}).get("name") or labels[0]).removesuffix(" (eV)")
        axes[0]["name"] = name
        sig = hs.signals.Signal1D(np.moveaxis(data, 0, -1),
                                  axes=[dict(a, navigate=True) for a in axes[1:]]
                                  + [dict(axes[0], navigate=False)])
        kind = "dos"
    elif nd >= 2:
        sig = hs.signals.Signal2D(data, axes=[dict(a, navigate=i < nd - 2)
                                              for i, a in enumerate(axes)])
        kind = "map" if nd == 2 else "image"
    else:
        sig = hs.signals.Signal1D(data, axes=axes)
        kind = "curve"
    sig.metadata.General.title = str(attributes.get("name") or "layer")
    layer_kind = str(meta.get("kind", ""))
    if layer_kind.startswith("corefit_") or layer_kind in ("dos", "map"):
        # a corefit result: its reader opens it again as result layers
        sig.metadata.set_item("Corefit.kind", _KINDS.get(layer_kind, kind))
    elif layer_kind == "spectrum_image" and nd == 3:
        sig.set_signal_type("EELS")  # opens again as a spectrum image
    if meta.get("units"):
        sig.metadata.set_item("Signal.quantity", f"{meta.get('curve', 'value')} "
                                                 f"({meta['units']})")
    return sig


_KINDS = {"corefit_dos": "dos", "corefit_map": "map", "corefit_image": "image"}


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name)).strip("_") or "layer"


def write_layers(path, layer_data):
    """npe2 writer: image layers to ``.hspy`` (one file per layer).

    Parameters
    ----------
    path : str
        ``<name>.hspy``. One layer is written to ``path`` itself; several go to
        ``<name>_<layer name>.hspy`` beside it.
    layer_data : list of (data, attributes, layer_type)

    Returns
    -------
    list of str
        The files written.
    """
    path = Path(path)
    if path.suffix.lower() not in (".hspy", ".zspy"):
        path = path.with_suffix(".hspy")
    images = [(d, a) for d, a, t in layer_data if t == "image"]
    if len(images) == 1:
        signals = {"": layer_signal(*images[0])}
    else:
        signals = {}
        for d, a in images:
            key = _safe(a.get("name"))
            while key in signals:
                key += "_"
            signals[key] = layer_signal(d, a)
    return [str(p) for p in write_results(path, signals)]
