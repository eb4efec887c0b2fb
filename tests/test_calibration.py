"""Calibration of the ensemble sigma: the fit, where it is stored and where it is applied."""

import json

import numpy as np
import pytest

from napari_corefit.cli import main as corefit
from napari_corefit.model import load_model
from napari_corefit.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from napari_corefit.model.inference import predict_spectra
from napari_corefit.training.calibration import (TWO_SIGMA_COVERAGE, coverage,
                                                 fit_sigma_scale)
from napari_corefit.training.evaluate import evaluate_model
from napari_corefit.training.loop import TrainSettings


def test_fit_recovers_a_known_miscalibration_per_curve():
    rng = np.random.default_rng(1)
    truth = rng.normal(scale=1.0, size=(4000, 2, 20))
    mean = np.zeros_like(truth)
    std = np.empty_like(truth)
    std[:, 0], std[:, 1] = 0.25, 2.0  # occupied 4x too confident, unoccupied 2x too cautious
    s = fit_sigma_scale(mean, std, truth)
    np.testing.assert_allclose(s, [4.0, 0.5], rtol=0.03)
    after = coverage(mean, std * s[None, :, None], truth)
    np.testing.assert_allclose(after, TWO_SIGMA_COVERAGE, atol=0.002)
    assert coverage(mean, std, truth)[0] < 0.5


def test_fit_handles_zero_spread_and_rejects_bad_input():
    truth = np.zeros((3, 2, 4))
    std = np.zeros_like(truth)
    std[..., :2] = 1.0
    # exact predictions where the spread is zero count as inside: the scale comes from the rest
    truth[..., :2] = 1.0
    np.testing.assert_allclose(fit_sigma_scale(np.zeros_like(truth), std, truth, target=0.75),
                               [0.5, 0.5])
    truth[..., 3] = 1.0  # errors with no spread at all: no factor can cover them
    with pytest.raises(ValueError, match="no spread"):
        fit_sigma_scale(np.zeros_like(truth), std, truth, target=0.9)
    with pytest.raises(ValueError, match="shape"):
        fit_sigma_scale(np.zeros((3, 4)), np.ones((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="coverage"):
        fit_sigma_scale(truth, std, truth, target=1.0)


@pytest.fixture(scope="module")
def calibrated(tiny_db, tiny_table, tmp_path_factory):
    from napari_corefit.training.train import train_model

    out = tmp_path_factory.mktemp("cal") / "m"
    return train_model(tiny_db, out, n_members=3, table=tiny_table, progress=False,
                       settings=TrainSettings(epochs=20, patience=20, lr=1e-3, device="cpu"))


def test_training_calibrates_on_the_validation_molecules_only(calibrated, tiny_table):
    unc = calibrated.config["uncertainty"]
    sizes = calibrated.config["split"]["sizes"]
    assert unc["fitted_on"]["split"] == "val"
    assert unc["fitted_on"]["n_molecules"] == sizes["val"] > 0
    scale = calibrated.sigma_scale
    assert scale.shape == (2,) and np.all(scale > 0)
    assert scale.tolist() == pytest.approx([unc["sigma_scale"]["occupied"],
                                            unc["sigma_scale"]["unoccupied"]])
    # on the rows it was fitted on, the calibrated coverage is the target (to the row count)
    val = evaluate_model(calibrated, tiny_table, split="val")
    assert val.summary["calibration_2sigma"] == pytest.approx(TWO_SIGMA_COVERAGE, abs=0.02)
    raw = evaluate_model(calibrated, tiny_table, split="val", raw_sigma=True)
    np.testing.assert_allclose(val.std, raw.std * scale[None, :, None], rtol=1e-5)
    assert raw.summary["calibration_2sigma"] == pytest.approx(
        val.summary["calibration_2sigma_raw"])
    # the test metrics stored in the checkpoint are those of the calibrated sigma
    test = calibrated.config["metrics"]["test"]
    assert test["sigma_scale"] == pytest.approx(scale.tolist())


def test_the_engine_shows_the_calibrated_sigma(calibrated):
    x = evaluate_model(calibrated, None, split="all", rows=_rows(calibrated)).inputs
    m1, s1 = predict_spectra(calibrated, x, device="cpu")
    m0, s0 = predict_spectra(calibrated, x, device="cpu", calibrated=False)
    np.testing.assert_array_equal(m1, m0)
    np.testing.assert_allclose(s1, s0 * calibrated.sigma_scale[None, :, None], rtol=1e-5,
                               atol=1e-8)
    # a bare ensemble carries no calibration
    _, s2 = predict_spectra(calibrated.ensemble, x, device="cpu")
    np.testing.assert_allclose(s2, s0, rtol=1e-6, atol=1e-9)


def _rows(loaded):
    from napari_corefit.backend import load_database
    from napari_corefit.training.dataset import build_curves

    return build_curves(load_database(loaded.config["database"]["path"]), level="site")


def test_corefit_calibrate_rewrites_the_config_and_leaves_the_weights(calibrated, tiny_db,
                                                                      tmp_path, capsys):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(calibrated.directory, d)
    weights = (d / WEIGHTS_FILE).read_bytes()
    config = (d / CONFIG_FILE).read_text()
    assert corefit(["calibrate", "--model", str(d), "--db", str(tiny_db), "--split", "all",
                    "--dry-run"]) == 0
    assert "sigma x" in capsys.readouterr().out
    assert (d / CONFIG_FILE).read_text() == config
    assert corefit(["calibrate", "--model", str(d), "--db", str(tiny_db), "--split", "all"]) == 0
    unc = json.loads((d / CONFIG_FILE).read_text())["uncertainty"]
    assert unc["fitted_on"]["split"] == "all" and unc["fitted_on"]["database"] == str(tiny_db)
    assert (d / WEIGHTS_FILE).read_bytes() == weights
    m = load_model(d)
    assert m.sigma_scale.tolist() == pytest.approx([unc["sigma_scale"]["occupied"],
                                                    unc["sigma_scale"]["unoccupied"]])


def test_high_sigma_threshold_is_the_engines_sigma_rel_on_validation(calibrated, tiny_table):
    from napari_corefit.engine import dos_features

    unc = calibrated.config["uncertainty"]
    assert calibrated.high_sigma_threshold == unc["sigma_rel_quantiles"]["p95"]
    val = evaluate_model(calibrated, tiny_table, split="val")
    sigma_rel = dos_features(val.mean, val.std)["sigma_rel"]
    assert np.percentile(sigma_rel, 95) == pytest.approx(calibrated.high_sigma_threshold,
                                                         rel=1e-5)
