"""The single preprocessing steps: resolution, smoothing, PCA, alignment, masks."""

import warnings

import numpy as np
import pytest

from napari_corefit.spectra import SPECTRUM_GRID
from napari_corefit.spectra.align import align_to_first_peak, first_peak, resample_absolute
from napari_corefit.spectra.denoise import pca_basis, pca_denoise
from napari_corefit.spectra.masks import Reason, first_reason, raw_reasons, reason_summary
from napari_corefit.spectra.pipeline import PreprocessConfig, _convolve_rows, _smoothing_kernel
from napari_corefit.spectra.resolution import (
    fwhm_to_sigma,
    gaussian_broaden,
    match_resolution,
    matching_sigma,
    sigma_to_fwhm,
)
from napari_corefit.spectra.smoothing import savgol_points, savgol_smooth


def _width(y, step):
    x = np.arange(y.shape[-1]) * step
    w = y / y.sum(-1, keepdims=True)
    mu = (w * x).sum(-1, keepdims=True)
    return np.sqrt((w * (x - mu) ** 2).sum(-1))


def test_gaussian_widths_add_in_quadrature():
    step = 0.02
    x = np.arange(-10, 10, step)
    sharp = np.exp(-0.5 * (x / 0.2) ** 2)
    out = gaussian_broaden(np.stack([sharp, 2 * sharp]), 0.3, step)
    assert out.dtype == np.float32
    np.testing.assert_allclose(_width(out, step), np.hypot(0.2, 0.3), rtol=1e-3)
    np.testing.assert_allclose(out.sum(-1), [sharp.sum(), 2 * sharp.sum()], rtol=1e-5)
    assert fwhm_to_sigma(sigma_to_fwhm(0.37)) == pytest.approx(0.37)


def test_matching_sigma_and_broad_instruments():
    assert matching_sigma(0.0) == pytest.approx(0.5)
    assert matching_sigma(sigma_to_fwhm(0.5)) == pytest.approx(0.0, abs=1e-7)
    with pytest.warns(UserWarning, match="broader than the model"):
        assert matching_sigma(1.5) == 0.0
    with pytest.raises(ValueError, match="FWHM"):
        matching_sigma(float("nan"))
    step = 0.05
    x = np.arange(-10, 10, step)
    measured = np.exp(-0.5 * (x / float(fwhm_to_sigma(0.35))) ** 2)
    assert _width(match_resolution(measured, step, 0.35), step) == pytest.approx(0.5, rel=2e-3)


def test_savgol_window_in_ev():
    assert [savgol_points(w, 0.1) for w in (0.1, 0.5, 0.6, 0.7, 1.0)] == [5, 5, 7, 7, 11]
    assert savgol_points(0.7, 0.05) == 15
    rng = np.random.default_rng(0)
    x = np.arange(200) * 0.1
    clean = np.exp(-0.5 * ((x - 10) / 1.0) ** 2)
    noisy = clean + 0.05 * rng.standard_normal((50, 200))
    sm = savgol_smooth(noisy, 0.1, 0.9)
    assert sm.dtype == np.float32
    assert np.std(sm - clean) < 0.6 * np.std(noisy - clean)
    with pytest.raises(ValueError, match="polyorder"):
        savgol_smooth(noisy, 0.1, 0.5, polyorder=5)
    with pytest.raises(ValueError, match="fewer than"):
        savgol_smooth(noisy[:, :4], 0.1, 0.5)
    with pytest.raises(ValueError, match="window"):
        savgol_points(-1.0, 0.1)


def test_fused_kernel_equals_broaden_then_smooth_inside():
    rng = np.random.default_rng(1)
    y = rng.random((4, 300)).astype(np.float32)
    cfg = PreprocessConfig(savgol_window_ev=0.7, savgol_polyorder=3)
    from scipy.ndimage import convolve1d

    kernel = _smoothing_kernel(0.4, 0.1, cfg)
    fused = _convolve_rows(y, kernel)
    assert fused.dtype == np.float32 and fused.shape == y.shape
    # the FFT path equals direct convolution with the ends extended, everywhere
    np.testing.assert_allclose(fused, convolve1d(y, kernel, axis=-1, mode="nearest"),
                               atol=2e-6)
    steps = savgol_smooth(gaussian_broaden(y, 0.4, 0.1), 0.1, 0.7, 3)
    inner = slice(30, -30)
    np.testing.assert_allclose(fused[:, inner], steps[:, inner], atol=1e-5)
    assert _smoothing_kernel(0.0, 0.1, PreprocessConfig()) is None


def test_pca_denoise_keeps_the_signal_and_masked_rows():
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 80)
    clean = (np.outer(rng.random(300), np.exp(-((x - 0.3) / 0.05) ** 2))
             + np.outer(rng.random(300), np.exp(-((x - 0.6) / 0.1) ** 2)))
    noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    mask = np.ones(300, bool)
    mask[:5] = False
    noisy[:5] = 1e6  # outliers kept out of the fit by the mask
    den = pca_denoise(noisy, 2, mask=mask)
    np.testing.assert_array_equal(den[:5], noisy[:5].astype(np.float32))
    assert np.std(den[5:] - clean[5:]) < 0.3 * np.std(noisy[5:] - clean[5:])
    mean, comps, explained = pca_basis(noisy, 2, mask=mask)
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-10)
    assert explained[0] >= explained[1] > 0
    with pytest.raises(ValueError, match="n_components"):
        pca_denoise(noisy, 0)


def test_first_peak_and_alignment():
    e = np.arange(270.0, 320.0, 0.1)
    peaks_true = np.array([284.6, 285.25, 287.9])
    y = np.exp(-0.5 * ((e - peaks_true[:, None]) / 0.5) ** 2) \
        + 1.5 * np.exp(-0.5 * ((e - peaks_true[:, None] - 7) / 2) ** 2)
    pk = first_peak(e, y)
    np.testing.assert_allclose(pk, peaks_true, atol=0.01)
    a = align_to_first_peak(e, y, pk)
    assert a.shape == (3, 160) and a.dtype == np.float32
    np.testing.assert_allclose(a.sum(-1) * SPECTRUM_GRID.step, 1.0, atol=1e-5)
    assert np.abs(a - a[0]).max() < 0.01 * a.max()
    nan_row = align_to_first_peak(e, y[:1], np.array([np.nan]))
    assert (nan_row == 0).all()
    # grid points past the data are zeros, not extrapolated
    late = align_to_first_peak(e, y[:1], np.array([310.0]), normalise=False)
    assert (late[0, SPECTRUM_GRID.values + 310 > e[-1]] == 0).all()
    with pytest.raises(ValueError, match="outside the data"):
        first_peak(e, y, search_window=(330.0, 340.0))
    ab = resample_absolute(e, y)
    assert ab.shape == (3, 300)


def test_reason_codes():
    assert [int(r) for r in Reason] == list(range(8))
    counts = np.array([[1.0, 2.0], [np.inf, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, total = raw_reasons(counts)
    assert code.tolist() == [0, Reason.NONFINITE, Reason.NEGATIVE_TOTAL, Reason.NEGATIVE_TOTAL]
    assert total.tolist() == [3.0, 0.0, -2.0, 0.0]
    assert first_reason((Reason.NO_PEAK, [False, True]),
                        (Reason.NO_EDGE, [True, True])).tolist() == [6, 4]
    assert reason_summary(code) == {"OK": 1, "NONFINITE": 1, "NEGATIVE_TOTAL": 2}


@pytest.mark.parametrize("step", [0.1, 0.05, 0.07])
def test_alignment_fast_path_equals_interpolate_rows(step):
    from napari_corefit.spectra.grids import interpolate_rows

    rng = np.random.default_rng(3)
    e = 275.0 + step * np.arange(int(45 / step))
    y = rng.random((400, e.size)).astype(np.float32)
    pk = rng.uniform(270.0, 310.0, 400)  # some grids run past either end of the data
    pk[:3] = np.nan
    pk[3], pk[4] = e[0] + 1.0, e[-1] - 14.9  # grids that end exactly on the data's ends
    got = align_to_first_peak(e, y, pk, normalise=False)
    found = np.isfinite(pk)
    at = np.where(found, pk, e[0])[:, None] + SPECTRUM_GRID.values
    ref = np.where(found[:, None], interpolate_rows(e, y, at), 0)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_spectra_imports_no_qt_napari_torch_or_hyperspy():
    import subprocess
    import sys

    code = ("import sys, napari_corefit.spectra; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'torch', 'hyperspy', "
            "'exspy'}); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_interpolate_rows_gives_zero_for_nan_positions_without_warning():
    import warnings

    from napari_corefit.spectra.grids import interpolate_rows

    y = np.array([[0.0, 1, 2, 3], [0, 1, 2, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = interpolate_rows(np.arange(4.0), y, np.array([[0.5, 2.25], [np.nan, 1.0]]))
    np.testing.assert_array_equal(out, [[0.5, 2.25], [0.0, 1.0]])
