"""Awkward but usable data (issue 38 part 4): dead channels, an edge window that starts
just below the first peak. Each test makes its own small file or array."""

import warnings

import hyperspy.api as hs
import numpy as np
import pytest
import torch

from eels_files import save_eels
from napari_corefit.cli import main
from napari_corefit.io import CorefitIOWarning, load_spectrum_image
from napari_corefit.model.checkpoint import save_model
from napari_corefit.model.network import Ensemble, build_network, default_arch
from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
from napari_corefit.spectra.masks import Reason
from napari_corefit.spectra.pipeline import PreprocessConfig, find_dead_channels, preprocess
from napari_corefit.spectra.synthetic import synthetic_si


def _save(path, counts, e0, step=0.1):
    return save_eels(path, counts, e0, step, scale=0.2, dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("awkward")
    torch.manual_seed(0)
    arch = default_arch("paper_mlp")
    return save_model(d / "model", Ensemble([build_network(arch) for _ in range(2)]),
                      {"arch": arch, "input_grid": SPECTRUM_GRID, "output_grid": DOS_GRID,
                       "preprocess": PreprocessConfig().to_dict()})


def _predict(model, src, out):
    return main(["predict", str(src), "--model", str(model), "--device", "cpu", "-q",
                 "-o", str(out)])


def test_dead_channels_outside_the_window_are_interpolated():
    e, y, _ = synthetic_si((3, 4), edge_counts=4000, seed=3)
    clean = preprocess(e, y)
    y = y.copy()
    dead = [100, 101, 900]  # 240.0, 240.1 eV (background window), 320 eV (past every window)
    y[..., dead] = np.nan
    y[..., 102] = np.inf
    assert find_dead_channels(y).tolist() == [100, 101, 102, 900]
    res = preprocess(e, y)
    assert res.mask.all()
    np.testing.assert_allclose(res.peak_energy, clean.peak_energy, atol=0.02)
    assert np.abs(res.spectra - clean.spectra).max() < 0.02 * clean.spectra.max()
    # blocks of one pixel see the same dead channels as the whole image
    one = preprocess(e, y, chunk_pixels=1)
    np.testing.assert_array_equal(one.spectra, res.spectra)


def test_dead_channel_inside_a_spectrums_window_masks_only_that_spectrum():
    e, y, _ = synthetic_si((6,), edge_counts=4000, seed=4)
    y = y.copy()
    y[3:] = np.roll(y[3:], 80, axis=-1)  # pixels 3-5: edge 8 eV higher (peak 293 eV)
    y[..., 580] = np.nan  # 288 eV: inside pixels 0-2's window (284-300), below 3-5's (292-)
    res = preprocess(e, y)
    assert res.reason[:3].tolist() == [Reason.NONFINITE] * 3
    assert res.mask[3:].all()
    # a NaN in one pixel only is not a dead channel: that pixel is masked as before
    y2 = synthetic_si((3,), edge_counts=4000, seed=4)[1].copy()
    y2[1, 100] = np.nan
    assert preprocess(e, y2).reason.tolist() == [0, Reason.NONFINITE, 0]


def test_dead_channels_file_runs_with_a_warning(model, tmp_path, capsys):
    e, y, _ = synthetic_si((3, 4), edge_counts=4000, seed=3)
    y = y.copy()
    y[..., [100, 900]] = np.nan
    src = _save(tmp_path / "dead.hspy", y, e[0])
    with pytest.warns(CorefitIOWarning, match=r"2 channel\(s\) are NaN or Inf in every "
                                              r"spectrum \(at 240\.00, 320\.00 eV"):
        si = load_spectrum_image(src)
    assert si.dead_channels.tolist() == [100, 900]
    assert _predict(model, src, tmp_path / "out.hspy") == 0
    assert "12 pixels (" in capsys.readouterr().err
    maps = hs.load(tmp_path / "out_maps.hspy")
    reason = maps.data[list(maps.metadata.Corefit.maps).index("reason")]
    assert (reason == 0).all()
    # a dead channel where every spectrum's window lies: refused, with the reason
    y[..., 600] = np.inf  # 290 eV
    src = _save(tmp_path / "dead_edge.hspy", y, e[0])
    assert _predict(model, src, tmp_path / "o2" / "out.hspy") == 2
    err = capsys.readouterr().err
    assert "no usable pixel: 12 x NaN or Inf in the spectrum (or a dead channel" in err
    assert not (tmp_path / "o2").exists() or not list((tmp_path / "o2").iterdir())


def test_window_starting_3_ev_below_the_first_peak_is_used(model, tmp_path, capsys):
    e, y, _ = synthetic_si((4,), edge_counts=5000, peak=285.1, background_ratio=1e-3, seed=2)
    keep = e >= 282.05  # 282.1 eV: 3 eV below the first peak, no pre-edge at all
    with pytest.warns(UserWarning, match="without background subtraction"):
        res = preprocess(e[keep], y[:, keep])
    assert res.mask.all()
    np.testing.assert_allclose(res.peak_energy, 285.1, atol=0.1)
    src = _save(tmp_path / "edge_only.msa", y[0, keep], e[keep][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _predict(model, src, tmp_path / "edge.hspy") == 0
    assert "1 pixels (" in capsys.readouterr().err


def test_spectrum_whose_own_window_is_not_covered_is_masked_not_the_file():
    e, y, _ = synthetic_si((4,), edge_counts=5000, peak=285.1, background_ratio=1e-3, seed=2)
    y = y.copy()
    y[2] = np.roll(y[2], -12, axis=-1)  # pixel 2: first peak at 283.9 eV
    keep = e >= 283.45  # pixel 2 would need 282.9 eV
    with pytest.warns(UserWarning, match="without background subtraction"):
        res = preprocess(e[keep], y[:, keep])
    assert res.reason.tolist() == [0, 0, Reason.OUT_OF_RANGE, 0]
