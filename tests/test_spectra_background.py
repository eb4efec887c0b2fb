"""Power-law background removal: equal to exSpy's fast two-area estimate, vectorised."""

import warnings

import numpy as np
import pytest

from napari_corefit.spectra.background import (
    PowerLawFit,
    background_indices,
    default_background_window,
    fit_powerlaw,
    powerlaw_background,
    remove_powerlaw_background,
)
from napari_corefit.spectra.synthetic import synthetic_si


def _exspy_signal(energy, counts):
    exspy = pytest.importorskip("exspy")
    s = exspy.signals.EELSSpectrum(counts)
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.units = float(energy[0]), float(energy[1] - energy[0]), "eV"
    return s


@pytest.mark.parametrize("window", [(245.0, 280.0), (244.93, 279.31), (250.0, 270.0)])
def test_equals_exspy_fast_powerlaw(window):
    e, y, truth = synthetic_si((4, 5), edge_counts=3000, background_ratio=8, peak_jitter=0.2)
    s = _exspy_signal(e, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = s.remove_background(signal_range=window, background_type="PowerLaw", fast=True,
                                  show_progressbar=False)
    ours, fit = remove_powerlaw_background(e, y, window)
    assert ours.dtype == np.float32 and ours.shape == y.shape
    edge_height = truth["edge"].max(-1, keepdims=True)
    # the contract is 1 % of the edge intensity; the implementation reaches float32 rounding
    assert np.abs(ours - ref.data).max() < 1e-4 * edge_height.min()

    from hyperspy.components1d import PowerLaw

    A_ref, r_ref = PowerLaw().estimate_parameters(s, window[0], window[1], out=True)
    np.testing.assert_allclose(fit.r, r_ref, rtol=1e-9)
    np.testing.assert_allclose(fit.A, A_ref, rtol=1e-7)


def test_background_is_removed_and_edge_kept():
    e, y, truth = synthetic_si((3, 3), edge_counts=5000, background_ratio=4, noise=False)
    sub, fit = remove_powerlaw_background(e, y)
    assert np.allclose(fit.r, 3.0, atol=0.01)
    edge = truth["edge"]
    # noise-free power law: what remains is the edge, to well within 1 % of its height
    assert np.abs(sub - edge).max() < 0.01 * edge.max()


def test_default_window_follows_the_data():
    assert default_background_window(np.arange(200.0, 320.0, 0.05)) == (240.0, 280.0)
    assert default_background_window(np.arange(255.0, 320.0, 0.1)) == (255.0, 280.0)
    lo, hi = default_background_window(np.arange(230.0, 320.0, 0.1), edge_onset=282.0)
    assert (lo, hi) == (240.0, 279.0)
    with pytest.raises(ValueError, match="240-280 eV"):
        default_background_window(np.arange(275.0, 330.0, 0.1))
    with pytest.raises(ValueError, match="no power-law background window"):
        default_background_window(np.arange(100.0, 200.0, 0.1))


def test_indices_split_like_hyperspy():
    e = np.arange(200.0, 300.0, 1.0)
    i1, i2, i3, i4 = background_indices(e, (240.0, 281.0))
    assert (i1, i4) == (40, 80) and i2 == i3 == 60  # odd index sum shortened by one channel
    with pytest.raises(ValueError, match="outside the data"):
        background_indices(e, (310.0, 330.0))
    with pytest.raises(ValueError, match="above its start"):
        background_indices(e, (280.0, 240.0))


def test_failed_fits_are_nan_and_do_not_touch_other_pixels():
    e, y, _ = synthetic_si((2, 3), edge_counts=2000)
    y = y.copy()
    y[0, 0] = 0.0  # no counts at all
    y[0, 1] = -5.0  # negative (over-subtracted dark reference)
    good, _ = remove_powerlaw_background(e, y[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or log warnings leak out
        sub, fit = remove_powerlaw_background(e, y)
    assert isinstance(fit, PowerLawFit)
    assert fit.ok.tolist() == [[False, False, True], [True, True, True]]
    assert np.isnan(fit.A[0, :2]).all() and np.isnan(fit.r[0, :2]).all()
    np.testing.assert_array_equal(sub[0, :2], y[0, :2])  # nothing subtracted there
    np.testing.assert_array_equal(sub[1:], good)
    assert np.isfinite(sub).all()


def test_any_leading_shape_and_one_spectrum():
    e, y, _ = synthetic_si((2, 2, 3), edge_counts=1000)
    sub, fit = remove_powerlaw_background(e, y)
    assert sub.shape == y.shape and fit.A.shape == (2, 2, 3)
    one, fit1 = remove_powerlaw_background(e, y[1, 0, 2])
    assert one.shape == (e.size,) and fit1.r.shape == ()
    np.testing.assert_allclose(one, sub[1, 0, 2], rtol=1e-6, atol=1e-3)


def test_powerlaw_background_evaluates_the_fit():
    e, y, truth = synthetic_si((2,), noise=False, edge_counts=100, background_ratio=50)
    fit = fit_powerlaw(e, y)
    bkg = powerlaw_background(e, fit)
    pre = e < 280
    np.testing.assert_allclose(bkg[:, pre], truth["background"][:, pre], rtol=2e-3)


def test_bad_input_is_named():
    e = np.arange(230.0, 330.0, 0.1)
    with pytest.raises(ValueError, match="channels"):
        remove_powerlaw_background(e, np.ones((3, e.size + 1)))
    with pytest.raises(ValueError, match="increase"):
        remove_powerlaw_background(e[::-1], np.ones((3, e.size)), (245, 280))


def test_torch_gives_the_same_result():
    torch = pytest.importorskip("torch")
    e, y, _ = synthetic_si((3, 4), edge_counts=2000)
    ref, fit = remove_powerlaw_background(e, y)
    got, tfit = remove_powerlaw_background(e, torch.from_numpy(y))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(tfit.r.numpy(), fit.r, rtol=1e-12)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-3)


def test_out_in_place_and_input_dtypes():
    e, y, _ = synthetic_si((3, 50), edge_counts=2000)  # several cache blocks and threads
    ref, _ = remove_powerlaw_background(e, y)
    np.testing.assert_allclose(remove_powerlaw_background(e, y.astype(np.float64))[0], ref,
                               rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(remove_powerlaw_background(e, y.astype(np.uint16))[0], ref,
                               rtol=1e-6, atol=1e-3)
    buf = y.copy()
    got, _ = remove_powerlaw_background(e, buf, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        remove_powerlaw_background(e, y, out=np.empty(y.shape, np.float64))
