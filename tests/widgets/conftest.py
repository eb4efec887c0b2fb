"""Fixtures of the widget tests: a tiny model on disk and small synthetic spectrum images."""

from __future__ import annotations

import os
import sys

import hyperspy.api as hs
import numpy as np
import pytest

#: every test here needs a display with OpenGL (Xvfb + Mesa), as the napari smoke test
GUI_MARKS = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
        reason="needs an X display: run under xvfb-run (bash scripts/test.sh does)",
    ),
]

SHAPE = (16, 16)
SEP = 4.0  # column spacing, pixels: a 4 x 4 lattice
NM = 0.05  # pixel size


def lattice(shape=SHAPE, sep=SEP):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for cy in np.arange(1.5, shape[0], sep):
        for cx in np.arange(1.5, shape[1], sep):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    return img


def write_si(path, shape=SHAPE, edge=True, seed=0):
    """A calibrated C K-edge SI whose edge strength follows a lattice of columns."""
    from napari_corefit.spectra.synthetic import synthetic_si

    img = lattice(shape)
    counts_n = (600 + 3000 * img) if edge else 0.0
    e, counts, _ = synthetic_si(shape, edge_counts=counts_n, peak_jitter=0.2, seed=seed)
    s = hs.signals.Signal1D(counts)
    for ax, name, off in zip(s.axes_manager.navigation_axes, ("x", "y"), (1.0, -2.0)):
        ax.name, ax.units, ax.offset, ax.scale = name, "nm", off, NM
    sig = s.axes_manager.signal_axes[0]
    sig.name, sig.units, sig.offset, sig.scale = "Energy loss", "eV", e[0], e[1] - e[0]
    s.set_signal_type("EELS")
    s.save(path, overwrite=True)
    return path, counts


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 3-member ensemble of small untrained PaperMLPs, saved as a corefit checkpoint."""
    import torch

    from napari_corefit.model import save_model
    from napari_corefit.model.checkpoint import fit_ood
    from napari_corefit.model.network import Ensemble, PaperMLP, default_arch
    from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
    from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess
    from napari_corefit.spectra.synthetic import synthetic_si

    torch.manual_seed(0)
    ens = Ensemble([PaperMLP() for _ in range(3)]).eval()
    e, counts, _ = synthetic_si((30,), edge_counts=5000, peak_jitter=0.3, seed=5)
    train = preprocess(e, counts).spectra
    cfg = {"arch": default_arch(), "input_grid": SPECTRUM_GRID, "output_grid": DOS_GRID,
           "preprocess": PreprocessConfig().to_dict(), "commit": "test"}
    return save_model(tmp_path_factory.mktemp("model") / "tiny", ens, cfg,
                      ood=fit_ood(train, n_components=4))


@pytest.fixture
def si_path(tmp_path):
    path, _ = write_si(tmp_path / "scan.hspy")
    return path
