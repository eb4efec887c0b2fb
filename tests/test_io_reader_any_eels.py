"""The napari reader opens every EELS file it claims, carbon K edge or not (no Qt needed)."""

import hyperspy.api as hs
import numpy as np
import pytest

from napari_corefit.io import CorefitIOError, CorefitIOWarning, load_spectrum_image
from napari_corefit.io.napari_reader import get_reader


def _save(path, counts, e0, step):
    s = hs.signals.Signal1D(np.asarray(counts, np.float32))
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.offset, ax.scale = "Energy loss", "eV", e0, step
    s.save(path, overwrite=True)
    return path


def test_spectrum_without_carbon_opens_with_a_warning(tmp_path):
    e = np.arange(360.0, 770.0, 0.5)
    path = _save(tmp_path / "nitrogen.msa", 1e10 * e ** -3.0, 360.0, 0.5)
    with pytest.warns(CorefitIOWarning, match=r"360\.0-769\.5 eV and does not contain the "
                                              r"carbon K edge at 284 eV"):
        layers = get_reader(str(path))(str(path))
    (image, _, _), (cube, kw, _) = layers
    assert image.shape == (1, 1) and cube.shape == (e.size, 1, 1)
    lo, hi = kw["contrast_limits"]
    assert lo < hi
    # the engine's loader still refuses it, with the reason
    with pytest.raises(CorefitIOError, match="does not contain the carbon K edge"):
        load_spectrum_image(path)


def test_lowloss_spectrum_with_negative_channels_opens(tmp_path):
    e = -20.0 + 0.25 * np.arange(400)  # -20 .. 79.75 eV
    rng = np.random.default_rng(1)
    counts = 1e5 * np.exp(-0.5 * (e / 0.4) ** 2) + 50 * np.exp(-0.5 * ((e - 22) / 5) ** 2)
    counts = counts - 40.0 + rng.normal(0, 3, e.size)  # dark-subtracted: tails negative
    counts[e < 0] -= 80.0
    assert (counts < 0).mean() > 0.3
    path = _save(tmp_path / "lowloss.hspy", counts, e[0], 0.25)
    with pytest.warns(CorefitIOWarning):
        layers = get_reader(str(path))(str(path))
    cube, kw, _ = layers[1]
    lo, hi = kw["contrast_limits"]
    assert lo < hi and lo < 0 < hi
    np.testing.assert_allclose(np.asarray(cube)[:, 0, 0], counts.astype(np.float32))


def test_constant_negative_survey_gives_increasing_limits(tmp_path):
    e = np.arange(270.0, 320.0, 0.1)
    path = _save(tmp_path / "neg.hspy", np.full((2, 2, e.size), -4.0), 270.0, 0.1)
    with pytest.warns(CorefitIOWarning):
        layers = get_reader(str(path))(str(path))
    lo, hi = layers[1][1]["contrast_limits"]
    assert lo < hi
