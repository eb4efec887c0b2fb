"""Low-loss corrections (drift, resolution, Fourier ratio) on a synthetic low/core-loss pair."""

import numpy as np
import pytest

from napari_corefit.spectra.lowloss import (
    align_energy_drift,
    deconvolve_plural_scattering,
    instrument_fwhm_from_lowloss,
    preprocess_with_lowloss,
    remove_background_signal,
    zlp_fwhm,
)
from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess
from napari_corefit.spectra.resolution import fwhm_to_sigma
from napari_corefit.spectra.synthetic import ck_edge_shape

exspy = pytest.importorskip("exspy")

STEP = 0.05
FWHM = 0.3
T_LAMBDA = 0.4
PLASMON = 22.0


def _gauss(x, c, s):
    return np.exp(-0.5 * ((x - c) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def _pair(shape=(3, 4), seed=0):
    """DualEELS-like pair: drift d shifts both the ZLP and the edge; plural scattering is the
    core loss's single-scattering edge convolved with the (normalised) low loss."""
    rng = np.random.default_rng(seed)
    drift = rng.uniform(-0.4, 0.4, shape)
    e_ll = -10.0 + STEP * np.arange(1600)
    e_cl = 240.0 + STEP * np.arange(2000)
    s_zlp = float(fwhm_to_sigma(FWHM))
    d = drift[..., None]
    # Poisson statistics of plural scattering: ZLP, one plasmon, two plasmons
    ll = (_gauss(e_ll, d, s_zlp) + T_LAMBDA * _gauss(e_ll, PLASMON + d, 2.0)
          + T_LAMBDA ** 2 / 2 * _gauss(e_ll, 2 * PLASMON + d, 2.9)) * STEP
    ssd = 3000.0 * ck_edge_shape(e_cl, 285.0, sigma=0.2)
    cl = np.empty(shape + (e_cl.size,))
    kernel_axis = STEP * np.arange(-800, 800)
    for idx in np.ndindex(shape):
        k = (_gauss(kernel_axis, drift[idx], s_zlp)
             + T_LAMBDA * _gauss(kernel_axis, PLASMON + drift[idx], 2.0)
             + T_LAMBDA ** 2 / 2 * _gauss(kernel_axis, 2 * PLASMON + drift[idx], 2.9)) * STEP
        k /= k.sum()
        cl[idx] = np.convolve(ssd, k, mode="same")
    cl += 3e10 * e_cl ** -3.0 * STEP
    ll *= 1e5

    def sig(data, e):
        s = exspy.signals.EELSSpectrum(data.astype(np.float32))
        ax = s.axes_manager.signal_axes[0]
        ax.offset, ax.scale, ax.units = float(e[0]), STEP, "eV"
        return s

    return sig(cl, e_cl), sig(ll, e_ll), drift


def test_resolution_from_the_zlp_width():
    _, ll, _ = _pair()
    fw = zlp_fwhm(ll)
    assert fw.shape == (3, 4)
    np.testing.assert_allclose(fw, FWHM, atol=0.03)
    assert instrument_fwhm_from_lowloss(ll) == pytest.approx(FWHM, abs=0.03)


def test_drift_alignment_lines_up_the_edges():
    cl, ll, drift = _pair()
    cfg = PreprocessConfig(min_edge_snr=None)
    e = cl.axes_manager.signal_axes[0].axis
    before = preprocess(e, cl.data, cfg).peak_energy
    acl, all_, shifts = align_energy_drift(cl, ll)
    np.testing.assert_allclose(shifts, drift - drift.mean(), atol=STEP)
    after = preprocess(acl.axes_manager.signal_axes[0].axis, acl.data, cfg).peak_energy
    assert np.std(before) > 0.15 and np.std(after) < 0.03
    # calibrate: ZLP at 0 eV, and the core-loss offset moved with it
    zlp = all_.estimate_zero_loss_peak_centre().data
    assert np.abs(zlp).max() < STEP
    assert abs(np.median(after) - 285.0) < 0.1
    assert cl.data.shape == (3, 4, 2000)  # inputs untouched


def test_fourier_ratio_removes_the_plasmon_replica():
    cl, ll, _ = _pair()
    acl, all_, _ = align_energy_drift(cl, ll)
    sub, fit, window = remove_background_signal(acl)
    # the crop of the alignment took a few channels: the window adapts to what is left
    assert 240.0 <= window[0] < 241.0 and window[1] == 280.0 and fit.ok.all()
    ssd = deconvolve_plural_scattering(sub, all_)
    e = ssd.axes_manager.signal_axes[0].axis

    # truth: the single-scattering edge at the ZLP's resolution (ZLP at 0 after calibration)
    sigma = np.hypot(0.2, fwhm_to_sigma(FWHM))
    win = (e > 282) & (e < 320)
    truth = ck_edge_shape(e, 285.0, sigma=float(sigma))[win]

    def shape_error(s):
        y = s.data.mean(axis=(0, 1))[win]
        return np.sqrt(np.mean((y / y.sum() - truth / truth.sum()) ** 2)) / (1 / win.sum())

    # plural scattering adds copies of the edge 22 and 44 eV up; deconvolution removes them
    assert shape_error(ssd) < 0.5 * shape_error(sub)
    with pytest.raises(ValueError, match="same scan"):
        deconvolve_plural_scattering(sub, all_.inav[:2])


def test_preprocess_with_lowloss_end_to_end():
    cl, ll, _ = _pair()
    res, corr = preprocess_with_lowloss(cl, ll)
    assert corr.aligned and corr.deconvolved
    assert corr.instrument_fwhm_ev == pytest.approx(FWHM, abs=0.03)
    assert res.spectra.shape == (3, 4, 160) and res.mask.all()
    assert np.std(res.peak_energy) < 0.03
    assert np.isfinite(res.background.A).all()  # the fit removed before deconvolution
    assert res.extra_sigma_ev == pytest.approx(np.sqrt(0.25 - fwhm_to_sigma(FWHM) ** 2),
                                               rel=0.05)
