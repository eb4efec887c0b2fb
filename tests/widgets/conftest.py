"""Fixtures of the widget tests: a tiny model on disk and a small synthetic spectrum image."""

from __future__ import annotations

import pytest
from widget_helpers import write_si


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
