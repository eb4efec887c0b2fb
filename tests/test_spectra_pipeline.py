"""The preprocessing pipeline on synthetic spectrum images with a known answer."""

import json
import warnings

import numpy as np
import pytest

from napari_corefit.spectra import SPECTRUM_GRID, broaden
from napari_corefit.spectra.masks import Reason
from napari_corefit.spectra.pipeline import (
    Cancelled,
    PreprocessConfig,
    PreprocessResult,
    preprocess,
    preprocess_signal,
)
from napari_corefit.spectra.resolution import fwhm_to_sigma
from napari_corefit.spectra.synthetic import synthetic_si


def test_noise_free_alignment_is_exact():
    e, y, truth = synthetic_si((3, 4), edge_counts=5000, peak=285.5, peak_jitter=0.6,
                               noise=False, seed=1)
    res = preprocess(e, y)
    assert isinstance(res, PreprocessResult)
    assert res.spectra.shape == (3, 4, 160) and res.spectra.dtype == np.float32
    assert res.mask.all() and (res.reason == 0).all()
    np.testing.assert_allclose(res.peak_energy, truth["peak"], atol=0.01)
    np.testing.assert_allclose(res.spectra.sum(-1) * SPECTRUM_GRID.step, 1.0, atol=1e-5)
    # the same shape at different energies: after alignment every pixel looks the same
    flat = res.spectra.reshape(-1, 160)
    assert np.abs(flat - flat[0]).max() < 0.01 * flat.max()
    assert abs(SPECTRUM_GRID.values[np.argmax(flat[0])]) < 0.051
    # N: the edge counts within -1..15 eV of the first peak, background removed
    np.testing.assert_allclose(res.edge_counts, 5000, rtol=0.01)
    np.testing.assert_allclose(res.background.r, 3.0, atol=0.01)


def test_noisy_alignment_and_edge_counts():
    e, y, truth = synthetic_si((20, 20), edge_counts=10000, background_ratio=5, peak=285.2,
                               peak_jitter=0.3, seed=2)
    res = preprocess(e, y)
    assert res.mask.mean() > 0.98
    err = np.abs(res.peak_energy - truth["peak"])[res.mask]
    assert np.median(err) < 0.1 and np.mean(err > 0.3) < 0.02
    # N is estimated to within its Poisson noise (edge + background counts)
    assert abs(np.median(res.edge_counts) - 10000) < 3 * np.sqrt(6 * 10000)


def test_masks_flag_bad_pixels_without_touching_the_rest():
    e, y, _ = synthetic_si((3, 4), edge_counts=4000, seed=3)
    y = y.copy()
    y[0, 0, 500] = np.nan
    y[0, 1, 700] = np.inf
    y[0, 2] = 0.0
    pre = e < 281
    y[0, 3, pre] = 0.0  # no pre-edge counts: the background cannot be fitted
    # a carbon-free pixel: background only, at the level of its neighbours
    bg_only = np.random.default_rng(5).poisson(_bg_like(y[1, 0], e)).astype(np.float32)
    y[1, 1] = bg_only
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = preprocess(e, y)
    assert res.reason[0].tolist() == [Reason.NONFINITE, Reason.NONFINITE,
                                      Reason.NEGATIVE_TOTAL, Reason.BACKGROUND_FAILED]
    assert res.reason[1, 1] == Reason.NO_EDGE
    assert not res.mask[0].any() and not res.mask[1, 1]
    assert np.isfinite(res.spectra).all() and np.isfinite(res.edge_counts).all()
    assert (res.spectra[~res.mask] == 0).all()
    # the usable pixels come out exactly as when processed without the bad ones
    alone = preprocess(e, y[2])
    np.testing.assert_array_equal(res.spectra[2], alone.spectra)
    np.testing.assert_array_equal(res.peak_energy[2], alone.peak_energy)
    assert res.summary() == {"OK": 7, "NONFINITE": 2, "NEGATIVE_TOTAL": 1,
                             "BACKGROUND_FAILED": 1, "NO_EDGE": 1}


def _bg_like(spectrum, e):
    # expected power-law background of a measured spectrum, from its pre-edge only
    from napari_corefit.spectra.background import fit_powerlaw, powerlaw_background

    return powerlaw_background(e, fit_powerlaw(e, spectrum))


def test_low_counts_no_peak_and_out_of_range():
    e, y, _ = synthetic_si((2,), edge_counts=3000, seed=6)
    res = preprocess(e, y, PreprocessConfig(min_edge_counts=5000))
    assert (res.reason == Reason.LOW_COUNTS).all() and not res.mask.any()
    assert np.isfinite(res.peak_energy).all()  # found, only too few counts
    # counts only below the search window: no first peak there
    flat = np.where(e < 281, 1.0, 0.0) * np.ones((2, 1))
    res = preprocess(e, flat, PreprocessConfig(background=False))
    assert (res.reason == Reason.NO_PEAK).all()
    # the axis ends before peak + 15 eV: grid not covered
    short = e < 298.0
    res = preprocess(e[short], y[:, short])
    assert (res.reason == Reason.OUT_OF_RANGE).all()


def test_chunking_and_leading_shapes_do_not_change_results():
    e, y, _ = synthetic_si((2, 3, 5), edge_counts=3000, peak_jitter=0.2, seed=7)
    whole = preprocess(e, y)
    parts = preprocess(e, y, chunk_pixels=7)
    for name in ("spectra", "peak_energy", "mask", "reason", "edge_counts"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(parts, name))
    one = preprocess(e, y[1, 2, 4])
    assert one.spectra.shape == (160,) and one.mask.shape == ()
    np.testing.assert_array_equal(one.spectra, whole.spectra[1, 2, 4])
    # deterministic: training calls this on simulated counts and must get the same answer
    np.testing.assert_array_equal(preprocess(e, y).spectra, whole.spectra)
    ints = preprocess(e, y.astype(np.uint16))
    np.testing.assert_array_equal(ints.reason, whole.reason)
    np.testing.assert_allclose(ints.spectra, whole.spectra, atol=1e-6)


def test_absolute_mode():
    e, y, _ = synthetic_si((2, 2), edge_counts=3000, noise=False)
    res = preprocess(e, y, PreprocessConfig(alignment="absolute"))
    assert res.spectra.shape == (2, 2, 300) and res.grid.start == 280.0
    np.testing.assert_allclose(res.spectra.sum(-1) * 0.1, 1.0, atol=1e-5)
    grid_e = res.grid.values
    assert abs(grid_e[np.argmax(res.spectra[0, 0])] - 285.0) < 0.06
    with pytest.raises(ValueError, match="absolute grid"):
        preprocess(e[e < 300], y[..., e < 300], PreprocessConfig(alignment="absolute"))


def test_resolution_matching_brings_sharp_data_to_the_model_width():
    e = 230.0 + 0.05 * np.arange(2000)
    bkg = 2e10 * e ** -3.0 * 0.05
    sticks = ([285.3, 287.1, 289.0, 292.5, 296.0], [1.0, 0.4, 0.8, 2.0, 1.5])
    sharp = 1000 * broaden(*sticks, e, sigma=float(fwhm_to_sigma(0.3))) + bkg
    model = 1000 * broaden(*sticks, e, sigma=0.5) + bkg
    got = preprocess(e, sharp, PreprocessConfig(instrument_fwhm_ev=0.3))
    ref = preprocess(e, model)
    unmatched = preprocess(e, sharp)
    assert got.extra_sigma_ev == pytest.approx(np.sqrt(0.25 - fwhm_to_sigma(0.3) ** 2))
    d_matched = np.abs(got.spectra - ref.spectra).max()
    d_unmatched = np.abs(unmatched.spectra - ref.spectra).max()
    assert d_matched < 0.3 * d_unmatched
    with pytest.warns(UserWarning, match="broader than the model"):
        preprocess(e, sharp, PreprocessConfig(instrument_fwhm_ev=1.5))


def test_savgol_and_pca_reduce_noise():
    e, y, truth = synthetic_si((16, 16), edge_counts=4000, background_ratio=3, seed=8)
    _, clean, _ = synthetic_si((16, 16), edge_counts=4000, background_ratio=3, seed=8,
                               noise=False)
    ref = preprocess(e, clean)

    def err(cfg):
        res = preprocess(e, y, cfg)
        both = res.mask & ref.mask
        return np.sqrt(np.mean((res.spectra - ref.spectra)[both] ** 2))

    plain = err(PreprocessConfig())
    assert err(PreprocessConfig(savgol_window_ev=0.7)) < 0.8 * plain
    assert err(PreprocessConfig(pca_components=3)) < 0.5 * plain


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(background_window=(250, 279), instrument_fwhm_ev=0.35,
                           savgol_window_ev=0.5, pca_components=4, alignment="absolute",
                           peak_params={"min_fraction": 0.4})
    d = json.loads(json.dumps(cfg.to_dict()))
    back = PreprocessConfig.from_dict(d)
    assert back == cfg and back.background_window == (250.0, 279.0)
    assert back.peak_params["min_fraction"] == 0.4 and "smooth_ev" in back.peak_params
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    with pytest.raises(ValueError, match="unknown PreprocessConfig keys"):
        PreprocessConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="alignment"):
        PreprocessConfig(alignment="zlp")
    with pytest.raises(ValueError, match="background_window"):
        PreprocessConfig(background_window=(280, 250))
    with pytest.raises(ValueError, match="pca_components"):
        PreprocessConfig(pca_components=0)
    with pytest.raises(ValueError, match="peak_params"):
        PreprocessConfig(peak_params={"sharpness": 1})


def test_bad_input_gets_clear_errors():
    e, y, _ = synthetic_si((2,), edge_counts=1000)
    with pytest.raises(ValueError, match="does not cover"):
        preprocess(e[e < 290], y[:, e < 290])
    with pytest.raises(ValueError, match="channels"):
        preprocess(e, y[:, :-1])
    with pytest.raises(ValueError, match="not uniform"):
        preprocess(np.r_[e[:10], e[10:] + 0.03], y)
    with pytest.raises(ValueError, match="real numbers"):
        preprocess(e, y.astype(complex))
    with pytest.raises(ValueError, match="240-280"):
        preprocess(e[e > 275], y[:, e > 275])


def test_preprocess_signal_lazy_progress_and_cancel():
    hs = pytest.importorskip("hyperspy.api")
    e, y, _ = synthetic_si((5, 3), edge_counts=3000, seed=9)
    s = hs.signals.Signal1D(y).as_lazy()
    s.data = s.data.rechunk((2, 3, 1024))
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.units = float(e[0]), 0.1, "eV"
    seen = []
    res = preprocess_signal(s, chunk_pixels=6, progress=lambda f, m: seen.append(f))
    ref = preprocess(e, y)
    np.testing.assert_array_equal(res.spectra, ref.spectra)
    np.testing.assert_array_equal(res.reason, ref.reason)
    assert seen[-1] == 1.0 and len(seen) >= 3 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        preprocess_signal(s, chunk_pixels=6, cancel=lambda: True)
    pca = preprocess_signal(s, PreprocessConfig(pca_components=2), chunk_pixels=6)
    assert pca.spectra.shape == (5, 3, 160) and pca.mask.any()
    one = preprocess_signal(s.inav[1, 2])
    assert one.spectra.shape == (160,) and one.mask.shape == ()
    np.testing.assert_array_equal(one.spectra, ref.spectra[2, 1])
    ax.units = "nm"
    with pytest.warns(UserWarning, match="not 'eV'"):
        preprocess_signal(s)
