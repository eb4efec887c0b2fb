"""The bundled synthetic sample: a carbon K-edge spectrum image with its ADF image and truth.

One ``.hspy`` file holds both signals (the spectrum image and, as a second experiment, the ADF
image titled "ADF", which :func:`napari_corefit.io.load_spectrum_image` pairs with it) and the
per-atom ground truth in the spectrum image's ``metadata.Corefit.truth``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["SAMPLES", "sample_path", "load_sample", "napari_sample", "napari_sample_small",
           "write_sample",
           "read_truth", "truth_from_signal", "truth_table"]

#: names of the shipped samples (files ``<name>.hspy``)
SAMPLES = ("corefit_sample", "corefit_sample_small")

_HERE = Path(__file__).resolve().parent


def sample_path(name="corefit_sample"):
    """Path of a shipped sample file, in a source checkout or an installed wheel.

    A checkout keeps the files in the top-level ``sample_data/``; the wheel force-includes that
    folder as ``napari_corefit/sample_data_files/``.

    Raises
    ------
    FileNotFoundError
        When neither place has the file.
    """
    fname = name if name.endswith(".hspy") else f"{name}.hspy"
    places = [_HERE.parent / "sample_data_files" / fname,
              _HERE.parents[2] / "sample_data" / fname]
    for p in places:
        if p.is_file():
            return p
    raise FileNotFoundError(f"sample {name!r} not found (looked in "
                            f"{', '.join(str(p.parent) for p in places)}); regenerate it with "
                            "`corefit sample make`")


def write_sample(path, si, adf, truth_csv=True):
    """Write the spectrum image and its ADF image into one ``.hspy`` file.

    The ADF goes in as a second experiment of the same HDF5 file, so that ``hs.load`` returns
    both and the corefit reader pairs them without ``--adf``. With ``truth_csv`` the atoms of
    the truth also go to ``<stem>_truth.csv`` beside it (for reading without HyperSpy; the
    spectra and DOS stay in the ``.hspy`` metadata).
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    si.save(path, overwrite=True)
    # HyperSpy writes one signal per file: write the ADF with its own writer, then copy its
    # experiment group over (the HDF5 layout HyperSpy reads back as a list of signals)
    tmp = path.with_name(f".{path.stem}_adf.tmp.hspy")
    try:
        adf.save(tmp, overwrite=True)
        with h5py.File(tmp, "r") as src, h5py.File(path, "a") as dst:
            for name in src["Experiments"]:
                dst.copy(src[f"Experiments/{name}"], dst["Experiments"], name=name)
    finally:
        tmp.unlink(missing_ok=True)
    if truth_csv:
        truth_table(truth_from_signal(si)).to_csv(path.with_name(f"{path.stem}_truth.csv"),
                                                  index=False)
    return path


def truth_table(truth):
    """The truth's atoms as a pandas DataFrame (one row per atom, H included)."""
    import pandas as pd

    n = truth["z"].size
    carbon_row = np.full(n, -1)
    carbon_row[truth["carbon"]] = np.arange(truth["carbon"].size)
    return pd.DataFrame({
        "atom": np.arange(n), "element": truth["symbol"], "y_px": truth["y_px"],
        "x_px": truth["x_px"], "y_nm": truth["y_nm"], "x_nm": truth["x_nm"],
        "molecule_key": truth["molecule_key"], "smiles": truth["smiles"],
        "atom_index": truth["atom_index"], "site": truth["site"], "placement": truth["copy"],
        "carbon_row": carbon_row})


def truth_from_signal(signal):
    """The ground truth stored in a sample's ``metadata.Corefit.truth`` as a plain dict.

    Keys: per atom (H included) ``y_px``, ``x_px``, ``y_nm``, ``x_nm``, ``z``, ``symbol``,
    ``molecule``, ``atom_index``, ``site``, ``copy``, ``molecule_key``, ``smiles``; per carbon
    ``carbon`` (atom rows), ``spectra`` (site spectra on the SI axis), ``dos`` (n_carbon, 2, n on
    ``dos_grid``); ``sample`` (generation settings and database).
    """
    md = signal.metadata
    if not md.has_item("Corefit.truth"):
        raise ValueError("this signal carries no corefit ground truth (metadata.Corefit.truth)")
    t = md.Corefit.truth.as_dictionary()
    out = {k: np.asarray(v) for k, v in t.items() if k not in ("symbol", "molecule_key",
                                                                "smiles", "dos_grid")}
    out["symbol"] = np.array(str(t["symbol"]).split(","))
    out["molecule_key"] = np.array(str(t["molecule_key"]).split(","))
    out["smiles"] = np.array(str(t["smiles"]).split(" "))
    out["dos_grid"] = json.loads(t["dos_grid"])
    out["sample"] = json.loads(md.Corefit.sample) if md.has_item("Corefit.sample") else {}
    return out


def read_truth(path):
    """Ground truth of a sample file (see :func:`truth_from_signal`)."""
    import hyperspy.api as hs

    loaded = hs.load(path)
    for s in loaded if isinstance(loaded, list) else [loaded]:
        if s.metadata.has_item("Corefit.truth"):
            return truth_from_signal(s)
    raise ValueError(f"{path}: no corefit ground truth in this file")


def load_sample(name="corefit_sample", lazy=False):
    """The shipped sample as a :class:`napari_corefit.io.SpectrumImage` (SI + ADF).

    Its truth: ``read_truth(sample_path(name))``.
    """
    from napari_corefit.io import load_spectrum_image

    return load_spectrum_image(sample_path(name), lazy=lazy)


def napari_sample(name="corefit_sample"):
    """napari sample-data contribution: the sample's layers plus the true heavy-atom positions.

    Returns
    -------
    list of napari LayerData tuples ``(data, kwargs, layer_type)``: the ADF image, the spectrum
    image (energy, y, x) and a hidden points layer "true atoms" (C, N, O, F).
    """
    from napari_corefit.io.napari_reader import read_spectrum_image

    path = sample_path(name)
    layers = list(read_spectrum_image(str(path)))
    truth = read_truth(path)
    heavy = truth["z"] > 1
    scale = truth["sample"].get("settings", {}).get("pixel_nm", 1.0)
    pts = np.c_[truth["y_px"][heavy], truth["x_px"][heavy]]
    layers.append((pts, {"name": "true atoms", "scale": (scale, scale), "size": 4,
                         "face_color": "transparent", "border_color": "yellow",
                         "properties": {"element": truth["symbol"][heavy]},
                         "visible": False}, "points"))
    return layers


def napari_sample_small():
    """napari sample-data contribution: the small sample (64 x 64 pixels, a few molecules)."""
    return napari_sample("corefit_sample_small")
